//! The crate's error type.

use std::{error::Error as StdError, fmt};

/// The error type of everything in this crate that can fail: configuration, a refused request,
/// a token endpoint's answer, or a refresh that could not produce a usable token.
///
/// It is opaque: ask what happened with the `is_*` predicates, and find the cause with
/// [`source`](StdError::source). Services in this crate return it boxed in a [`tower::BoxError`];
/// recover it with `err.downcast_ref::<signalwire_auth::Error>()`.
///
/// Neither `Display` nor `Debug` ever contains a token or an API token.
///
/// # Example
///
/// ```
/// use http::Request;
/// use signalwire_auth::{BasicAuthLayer, Credentials, Error, Space};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Bad input is a typed error that says what is wrong.
/// let error = Space::new("https://example.signalwire.com").unwrap_err();
/// assert!(error.is_invalid_input());
/// assert!(error.to_string().contains("Space::from_url"), "{error}");
///
/// // A service of this crate returns it boxed: downcast to ask what happened.
/// let creds = Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "PTsecret").unwrap();
/// let client = BasicAuthLayer::new(creds).layer(service_fn(|_: Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// }));
/// // Plain http to a host that is not loopback: refused, not sent.
/// let request = Request::get("http://example.signalwire.com/api").body(String::new()).unwrap();
/// let boxed: tower::BoxError = client.oneshot(request).await.unwrap_err();
/// let error = boxed.downcast_ref::<Error>().expect("the crate's error");
/// assert!(error.is_refused());
/// assert!(!format!("{error} {error:?}").contains("PTsecret"));
/// # }
/// ```
pub struct Error {
    kind: Kind,
    detail: Option<Box<str>>,
    source: Option<tower::BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A constructor got input it cannot use (empty credentials, a token that is not a header
    /// value, a space name that is not a DNS label, a missing environment variable).
    InvalidInput,
    /// A request was not sent because attaching credentials to it would break the transport rule.
    Refused,
    /// A token endpoint answered with a non-2xx status.
    Api,
    /// Connecting, sending or receiving failed below HTTP.
    Transport,
    /// A call or a refresh took longer than its timeout.
    Timeout,
    /// A 2xx answer whose body is not what the endpoint documents.
    Decode,
    /// A new token was needed and refreshing failed for a transient reason.
    RefreshFailed,
    /// The refresh chain is broken (the refresh token expired or was refused): new tokens are needed.
    ReauthenticationNeeded,
    /// A refresh needs a Tokio runtime to run on and none was found.
    NoRuntime,
    /// The server refused a credential that a refresh cannot improve on.
    Unauthorized,
    /// A pooled layer got a request without a `Subscriber` extension.
    MissingSubscriber,
    /// A pool could not mint the first token of a subscriber.
    MintFailed,
    /// A [`TokenStore`](crate::TokenStore) could not be reached or failed to answer.
    Store,
    /// A [`TokenStore`](crate::TokenStore) holds a value that is not a readable stored pair.
    StoreCorrupt,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            kind,
            detail: None,
            source: None,
        }
    }

    pub(crate) fn with_detail(mut self, detail: impl Into<Box<str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<tower::BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn invalid_input(detail: impl Into<Box<str>>) -> Self {
        Self::new(Kind::InvalidInput).with_detail(detail)
    }

    pub(crate) fn refused(detail: impl Into<Box<str>>) -> Self {
        Self::new(Kind::Refused).with_detail(detail)
    }

    /// The error a [`TokenStore`](crate::TokenStore) returns when it cannot be reached or
    /// fails to answer (`source`: the client library's error).
    pub fn store(source: impl Into<tower::BoxError>) -> Self {
        Self::new(Kind::Store).with_source(source)
    }

    /// The error a [`TokenStore`](crate::TokenStore) returns when the value stored under a
    /// key is not a readable [`StoredPair`](crate::StoredPair) (`source`: why not).
    pub fn store_corrupt(source: impl Into<tower::BoxError>) -> Self {
        Self::new(Kind::StoreCorrupt).with_source(source)
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// A constructor or builder was given input it cannot use; the message says which and why.
    pub fn is_invalid_input(&self) -> bool {
        self.kind == Kind::InvalidInput
    }

    /// The request was not sent: credentials may only go over HTTPS (or plain HTTP to loopback, or
    /// where plain HTTP was explicitly allowed), and only to the allowed hosts.
    pub fn is_refused(&self) -> bool {
        self.kind == Kind::Refused
    }

    /// SignalWire answered with a non-2xx status; [`Error::api_error`] has the details.
    pub fn is_api(&self) -> bool {
        self.kind == Kind::Api
    }

    /// Connecting, sending or receiving failed below HTTP. Worth retrying.
    pub fn is_transport(&self) -> bool {
        self.kind == Kind::Transport
    }

    /// A call or a refresh attempt timed out. Worth retrying.
    pub fn is_timeout(&self) -> bool {
        self.kind == Kind::Timeout
    }

    /// A success answer whose body could not be read as the endpoint documents.
    pub fn is_decode(&self) -> bool {
        self.kind == Kind::Decode
    }

    /// A new token was needed (the old one expired, or the server refused it with a 401) and
    /// the refresh failed for a transient reason (the refresh endpoint is unreachable, slow, rate
    /// limited or answering 5xx). The cache keeps retrying with backoff; a later request may
    /// succeed.
    pub fn is_refresh_failed(&self) -> bool {
        self.kind == Kind::RefreshFailed
    }

    /// The refresh chain is broken: the refresh token expired, was already spent, or the
    /// refresher said so. Requests that need a new token fail with this error, at once and
    /// without another refresh, until new tokens are installed with
    /// [`TokenCache::install`](crate::TokenCache::install).
    pub fn is_reauthentication_needed(&self) -> bool {
        self.kind == Kind::ReauthenticationNeeded
    }

    /// A refresh had to start outside a Tokio runtime.
    pub fn is_no_runtime(&self) -> bool {
        self.kind == Kind::NoRuntime
    }

    /// The server answered 401 to a credential that a new token would not fix: the token was
    /// itself refreshed because of a 401 moments ago (the server refuses something else, such
    /// as a missing scope), or it is a fixed token. From
    /// [`TokenCache::reauthorize`](crate::TokenCache::reauthorize); send nothing again.
    pub fn is_unauthorized(&self) -> bool {
        self.kind == Kind::Unauthorized
    }

    /// A request reached a pooled layer ([`BearerAuthLayer::pooled`](crate::BearerAuthLayer::pooled))
    /// without a [`Subscriber`](crate::Subscriber) extension, so the layer could not tell whose
    /// token to send; it was not sent.
    pub fn is_missing_subscriber(&self) -> bool {
        self.kind == Kind::MissingSubscriber
    }

    /// A [`TokenPool`](crate::TokenPool) could not mint a new subscriber's first token. The
    /// cause (an [`ApiError`](crate::ApiError), see [`Error::api_error`], or a transport
    /// failure) is the [`source`](StdError::source). Every lookup that waited for that mint
    /// fails with it; the next lookup mints again.
    pub fn is_mint_failed(&self) -> bool {
        self.kind == Kind::MintFailed
    }

    /// The token store could not be reached or failed to answer. A cache keeps serving its
    /// valid token meanwhile and re-mints on this replica when a new one is needed.
    pub fn is_store(&self) -> bool {
        self.kind == Kind::Store
    }

    /// The token store holds a value that is not a readable stored pair. A cache re-mints
    /// and overwrites it.
    pub fn is_store_corrupt(&self) -> bool {
        self.kind == Kind::StoreCorrupt
    }

    fn describe(&self) -> &'static str {
        match self.kind {
            Kind::InvalidInput => "invalid input",
            Kind::Refused => "request refused before sending",
            Kind::Api => "signalwire answered with an error",
            Kind::Transport => "transport error",
            Kind::Timeout => "timed out",
            Kind::Decode => "unexpected response body",
            Kind::RefreshFailed => "a new token was needed and refreshing failed",
            Kind::ReauthenticationNeeded => {
                "re-authentication needed: the refresh token can no longer be used"
            }
            Kind::NoRuntime => "no tokio runtime to run the token refresh on",
            Kind::Unauthorized => "unauthorized, and a new token would not help",
            Kind::MissingSubscriber => {
                "request has no Subscriber extension, so the pool cannot tell whose token to send"
            }
            Kind::MintFailed => "could not mint the first token of a pool entry",
            Kind::Store => "the token store failed",
            Kind::StoreCorrupt => "the stored token pair cannot be read",
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("signalwire_auth::Error");
        d.field("kind", &self.kind);
        if let Some(detail) = &self.detail {
            d.field("detail", detail);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// An error and its sources, `: `-separated: each level's `Display` says only what it adds, so
/// this prints every fact once (for `tracing` events, which show one string).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(error) = next {
            write!(f, ": {error}")?;
            next = error.source();
        }
        Ok(())
    }
}

/// The deepest cause of a transport failure, in words a user can act on ("certificate not
/// trusted (unknown issuer)", "connection closed before the answer"). The library errors it
/// was read from stay in `Debug`; when none of them is recognised, it is transparent: their
/// own words and chain are shown.
pub(crate) struct TransportCause {
    words: Option<&'static str>,
    inner: tower::BoxError,
}

impl TransportCause {
    pub(crate) fn new(inner: tower::BoxError) -> Self {
        Self {
            words: recognise(&*inner),
            inner,
        }
    }
}

/// The first cause in `error`'s chain that says what went wrong in plain words.
fn recognise(error: &(dyn StdError + 'static)) -> Option<&'static str> {
    let mut next = Some(error);
    let mut connect = false;
    while let Some(error) = next {
        if let Some(words) = words_for(error) {
            return Some(words);
        }
        if let Some(client) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= client.is_connect();
        }
        // `io::Error` hides the error it wraps from `source()` (it skips to that error's own
        // source): step into it instead, as rustls's certificate errors sit there.
        next = match error.downcast_ref::<std::io::Error>() {
            Some(io) if io.get_ref().is_some() => io.get_ref().map(|inner| inner as _),
            _ => error.source(),
        };
    }
    connect.then_some("could not connect")
}

fn words_for(error: &(dyn StdError + 'static)) -> Option<&'static str> {
    #[cfg(feature = "https")]
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        use rustls::{CertificateError, Error as Tls};
        return Some(match tls {
            Tls::InvalidCertificate(CertificateError::UnknownIssuer) => {
                "certificate not trusted (unknown issuer)"
            }
            Tls::InvalidCertificate(CertificateError::NotValidForName)
            | Tls::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
                "certificate not valid for this host name"
            }
            Tls::InvalidCertificate(CertificateError::Expired)
            | Tls::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
                "certificate expired"
            }
            Tls::InvalidCertificate(_) => "certificate not accepted",
            _ => "TLS handshake failed",
        });
    }
    if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
        if hyper.is_incomplete_message() || hyper.is_canceled() {
            return Some("connection closed before the answer");
        }
        if hyper.is_timeout() {
            return Some("timed out waiting for the server");
        }
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind;
        return match io.kind() {
            ErrorKind::ConnectionRefused => Some("connection refused (nothing listens there)"),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                Some("connection reset by the server")
            }
            ErrorKind::UnexpectedEof => Some("connection closed before the answer"),
            ErrorKind::TimedOut => Some("timed out connecting"),
            _ => None,
        };
    }
    None
}

impl fmt::Debug for TransportCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportCause")
            .field("words", &self.words)
            .field("inner", &self.inner)
            .finish()
    }
}

impl fmt::Display for TransportCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.words {
            Some(words) => f.write_str(words),
            None => self.inner.fmt(f),
        }
    }
}

impl StdError for TransportCause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self.words {
            // The deepest level: the library errors below say the same in their own words.
            Some(_) => None,
            None => self.inner.source(),
        }
    }
}
