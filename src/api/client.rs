//! `TokenClient`: typed calls to SignalWire's five token endpoints.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::{Buf, Bytes};
use http::{
    HeaderValue, Request, Response,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT},
};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde::{Serialize, de::DeserializeOwned};
use tokio::time::Instant;
use tower::{BoxError, ServiceExt};
use tower_service::Service;
use zeroize::Zeroizing;

use crate::TokenCache;
use crate::{
    Credentials, Error, Space, TokenPair,
    api::{
        ApiError, DefaultService,
        types::{
            CreateGuestToken, CreateInviteToken, CreateSubscriberToken, EmbedRequest, EmbedToken,
            InviteToken, PairResponse, RefreshRequest, SubscriberToken, SubscriberTokenResponse,
            TokenResponse,
        },
    },
    cache::check_token,
    error::Kind,
};

use super::types::GuestAuth;

/// The largest response body read; bigger answers are not what a token endpoint sends.
const MAX_BODY: usize = 64 * 1024;
/// Lifetime of a SAT minted with `scope: "sat:refresh"` and no `fingerprint`.
const SHORT_LIFETIME: Duration = Duration::from_secs(60);
/// How much longer than its SAT a freshly minted refresh token lives. SignalWire documents this
/// only for the refresh endpoint (2 h and 2 h 5 min); minting is assumed to follow the same rule.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

const USER_AGENT_VALUE: &str = concat!("signalwire-auth/", env!("CARGO_PKG_VERSION"));

/// One token endpoint: its name in errors and its path.
#[derive(Clone, Copy)]
struct Endpoint {
    name: &'static str,
    path: &'static str,
}

const CREATE_SUBSCRIBER: Endpoint = Endpoint {
    name: "create subscriber token",
    path: "/api/fabric/subscribers/tokens",
};
const REFRESH_SUBSCRIBER: Endpoint = Endpoint {
    name: "refresh subscriber token",
    path: "/api/fabric/subscribers/tokens/refresh",
};
const CREATE_GUEST: Endpoint = Endpoint {
    name: "create guest token",
    path: "/api/fabric/guests/tokens",
};
const CREATE_INVITE: Endpoint = Endpoint {
    name: "create invite token",
    path: "/api/fabric/subscriber/invites",
};
const CREATE_EMBED: Endpoint = Endpoint {
    name: "create embed token",
    path: "/api/fabric/embeds/tokens",
};

/// Typed calls to SignalWire's token endpoints, over any tower HTTP service.
///
/// | method | endpoint | auth |
/// | --- | --- | --- |
/// | [`create_subscriber_token`](Self::create_subscriber_token) | `POST /api/fabric/subscribers/tokens` | project credentials |
/// | [`refresh_subscriber_token`](Self::refresh_subscriber_token) | `POST /api/fabric/subscribers/tokens/refresh` | project credentials |
/// | [`create_guest_token`](Self::create_guest_token) | `POST /api/fabric/guests/tokens` | project credentials or a SAT |
/// | [`create_invite_token`](Self::create_invite_token) | `POST /api/fabric/subscriber/invites` | a SAT |
/// | [`create_embed_token`](Self::create_embed_token) | `POST /api/fabric/embeds/tokens` | none |
///
/// Each call is bounded by a timeout (10 s unless [`with_timeout`](Self::with_timeout)) and
/// reads at most 64 KiB of response. Any 2xx is success. A non-2xx answer is an [`Error`] for
/// which [`Error::is_api`] is true, carrying the parsed [`ApiError`]; a failure below HTTP is
/// [`Error::is_transport`], a slow answer [`Error::is_timeout`], and a 2xx whose body is not what
/// the endpoint documents [`Error::is_decode`]. Redirects are not followed.
///
/// Tokens come back as [`TokenPair`]s whose expiry is tracked locally (a SAT is encrypted, so
/// its expiry cannot be read): from the instant the request was sent, for the `expire_at` asked
/// for or SignalWire's default of 2 hours.
///
/// Credentials and tokens only travel to the [`Space`], which is `https` or loopback.
/// Neither `Debug` nor any error shows a secret.
///
/// # Example
///
/// ```no_run
/// use signalwire_auth::{CreateSubscriberToken, Credentials, Space, TokenClient};
///
/// # async fn run() -> Result<(), signalwire_auth::Error> {
/// let client = TokenClient::new(Space::new("example")?, Credentials::from_env()?);
/// let minted = client
///     .create_subscriber_token(&CreateSubscriberToken::new("alice@example.com"))
///     .await?;
/// println!("subscriber {}", minted.subscriber_id());
/// let next = client
///     .refresh_subscriber_token(minted.pair().refresh_token().unwrap_or_default())
///     .await?;
/// # drop(next);
/// # Ok(())
/// # }
/// ```
///
/// Without the `https` feature, name the service: `TokenClient<MyService>`.
pub struct TokenClient<S = DefaultService> {
    service: S,
    shared: Arc<Shared>,
}

/// How long the pair from the refresh endpoint lives, which its answer does not say.
#[derive(Debug, Clone, Copy)]
struct RefreshedLifetimes {
    access: Duration,
    refresh: Duration,
    /// A SAT minted without `expire_at`, and its refresh token (`None`: the SAT's + 5 min).
    minted: Duration,
    minted_refresh: Option<Duration>,
}

/// What every clone shares: where to call, as whom, and the settings (shared too, so that a
/// clone per pool entry costs a reference count, not a copy).
#[derive(Clone)]
struct Shared {
    space: Space,
    credentials: Option<Credentials>,
    /// Computed once; sensitive.
    basic: Option<HeaderValue>,
    timeout: Duration,
    refreshed: RefreshedLifetimes,
}

#[cfg(feature = "https")]
impl TokenClient {
    /// A client for `space` that authenticates with `credentials`, over the crate's HTTPS client
    /// ([`https_client`](crate::https_client)).
    ///
    /// Needs a Tokio runtime when called, not when built.
    pub fn new(space: Space, credentials: Credentials) -> Self {
        Self::with_service(space, Some(credentials), crate::https_client())
    }
}

impl<S> TokenClient<S> {
    /// A client that sends its requests through `service`: a hyper-util client, a
    /// `tower::service_fn`, or a stack of tower layers over either.
    ///
    /// Without `credentials`, only the endpoints that do not need them work (invite and embed
    /// tokens, and guest tokens with a SAT); the others fail with [`Error::is_invalid_input`]
    /// before sending anything.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use std::time::Duration;
    ///
    /// use signalwire_auth::{CreateSubscriberToken, MockSpace, TokenClient};
    /// use tower::ServiceBuilder;
    ///
    /// let mock = MockSpace::start().await?;
    /// // Any tower service that sends `Request<Full<Bytes>>`: here the mock's client behind a
    /// // concurrency limit.
    /// let service = ServiceBuilder::new().concurrency_limit(4).service(mock.client());
    /// let client = TokenClient::with_service(mock.space(), Some(mock.credentials()), service)
    ///     .with_timeout(Duration::from_secs(5));
    /// let minted = client
    ///     .create_subscriber_token(&CreateSubscriberToken::new("alice@example.com"))
    ///     .await?;
    /// assert!(minted.pair().refresh_token().is_some());
    ///
    /// // Without credentials, the endpoints that need them fail before sending.
    /// let anonymous = TokenClient::with_service(mock.space(), None, mock.client());
    /// let error = anonymous
    ///     .create_subscriber_token(&CreateSubscriberToken::new("bob@example.com"))
    ///     .await
    ///     .unwrap_err();
    /// assert!(error.is_invalid_input());
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_service(space: Space, credentials: Option<Credentials>, service: S) -> Self {
        let basic = credentials.as_ref().map(Credentials::basic_header);
        Self {
            service,
            shared: Arc::new(Shared {
                space,
                credentials,
                basic,
                timeout: Duration::from_secs(10),
                refreshed: RefreshedLifetimes {
                    access: TokenPair::DEFAULT_LIFETIME,
                    refresh: TokenPair::REFRESH_TOKEN_LIFETIME,
                    minted: TokenPair::DEFAULT_LIFETIME,
                    minted_refresh: None,
                },
            }),
        }
    }

    /// The lifetimes the refresh endpoint gives the new SAT and refresh token, which its answer
    /// does not state: by default the documented 2 hours and 2 hours 5 minutes. Change them only
    /// for a server that differs, such as a [`MockSpace`](crate::MockSpace) built with shorter
    /// lifetimes.
    pub fn with_refreshed_lifetimes(mut self, access: Duration, refresh_token: Duration) -> Self {
        let refreshed = &mut Arc::make_mut(&mut self.shared).refreshed;
        refreshed.access = access;
        refreshed.refresh = refresh_token;
        self
    }

    /// The lifetimes a SAT minted without `expire_at`, and its refresh token, are tracked with
    /// (default SignalWire's 2 hours, and 5 minutes more). Only for a server that differs, such
    /// as a [`MockSpace`](crate::MockSpace) built with shorter lifetimes
    /// ([`MockSpace::token_client`](crate::MockSpace::token_client) sets them).
    pub fn with_minted_lifetimes(mut self, access: Duration, refresh_token: Duration) -> Self {
        let refreshed = &mut Arc::make_mut(&mut self.shared).refreshed;
        refreshed.minted = access;
        refreshed.minted_refresh = Some(refresh_token);
        self
    }

    /// Bounds each call, from sending the request to reading the whole answer (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.shared).timeout = timeout;
        self
    }

    /// The space called.
    pub fn space(&self) -> &Space {
        &self.shared.space
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The same client over `map(service)`.
    #[cfg(feature = "pool")]
    pub(crate) fn map_service<T>(self, map: impl FnOnce(S) -> T) -> TokenClient<T> {
        TokenClient {
            service: map(self.service),
            shared: self.shared,
        }
    }

    /// Everything secret a request may carry, for cutting out of an echoed error: `token`, the
    /// API token and its Basic form.
    fn secrets_besides<'a>(&'a self, token: Option<&'a str>) -> Vec<&'a str> {
        let basic = self.shared.basic.as_ref().and_then(|value| {
            let value = value.to_str().ok()?;
            value.strip_prefix("Basic ")
        });
        let api_token = self.shared.credentials.as_ref().map(Credentials::api_token);
        [token, api_token, basic].into_iter().flatten().collect()
    }

    fn basic(&self, endpoint: Endpoint) -> Result<HeaderValue, Error> {
        self.shared.basic.clone().ok_or_else(|| {
            Error::invalid_input(format!(
                "{} needs project credentials and this client has none",
                endpoint.name
            ))
        })
    }
}

impl<S, B> TokenClient<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    /// Mints a Subscriber Access Token and its refresh token (project credentials).
    ///
    /// The SAT is tracked as living until the request's `expire_at`, or 2 hours without one, or
    /// 60 seconds with `scope: "sat:refresh"` and no `fingerprint`, counted from the instant the
    /// request was sent. SignalWire does not document a minted refresh token's lifetime; it is
    /// assumed to be the SAT's plus 5 minutes, as for refreshed pairs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// # let mock = signalwire_auth::MockSpace::start().await?;
    /// # let client = signalwire_auth::TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
    /// use signalwire_auth::{CreateSubscriberToken, TokenHeader};
    ///
    /// let minted = client
    ///     .create_subscriber_token(&CreateSubscriberToken::new("alice@example.com"))
    ///     .await?;
    /// assert_eq!(minted.subscriber_id().len(), 36); // a UUID
    /// let sat = TokenHeader::parse(minted.pair().access_token()).expect("a SAT's header");
    /// assert_eq!(sat.typ(), Some("SAT"));
    /// assert!(minted.pair().refresh_token().is_some());
    /// assert_eq!(minted.pair().lifetime().as_secs(), 2 * 60 * 60);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_subscriber_token(
        &self,
        request: &CreateSubscriberToken,
    ) -> Result<SubscriberToken, Error> {
        request.check()?;
        let auth = self.basic(CREATE_SUBSCRIBER)?;
        let (sent, sent_wall) = (Instant::now(), SystemTime::now());
        let answer: SubscriberTokenResponse = self
            .post(CREATE_SUBSCRIBER, request, Some(auth), None)
            .await?;
        let mut lifetime = request
            .expire_at()
            .map_or(self.shared.refreshed.minted, |at| {
                TokenPair::lifetime_until(at, sent_wall)
            });
        if request.is_short_lived() {
            lifetime = lifetime.min(SHORT_LIFETIME);
        }
        let refresh_lifetime = match (request.expire_at(), self.shared.refreshed.minted_refresh) {
            (None, Some(refresh)) => refresh,
            _ => lifetime + REFRESH_MARGIN,
        };
        let pair = make_pair(
            CREATE_SUBSCRIBER,
            answer.token,
            answer.refresh_token,
            sent,
            lifetime,
            refresh_lifetime,
        )?;
        Ok(SubscriberToken::new(answer.subscriber_id, pair))
    }

    /// Exchanges a refresh token for a new SAT (2 hours) and a new refresh token (2 hours
    /// 5 minutes), with project credentials. The old refresh token is spent either way.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// # let mock = signalwire_auth::MockSpace::start().await?;
    /// # let client = signalwire_auth::TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
    /// let pair = mock.mint("alice@example.com");
    /// let spent = pair.refresh_token().expect("minted with a refresh token");
    /// let next = client.refresh_subscriber_token(spent).await?;
    /// assert_ne!(next.access_token(), pair.access_token());
    ///
    /// // A refresh token works once: the second use is refused, and says why.
    /// let error = client.refresh_subscriber_token(spent).await.unwrap_err();
    /// assert!(error.api_error().is_some_and(|answer| answer.is_token_expired()));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn refresh_subscriber_token(&self, refresh_token: &str) -> Result<TokenPair, Error> {
        check_token("refresh token", refresh_token)?;
        let auth = self.basic(REFRESH_SUBSCRIBER)?;
        let sent = Instant::now();
        let body = RefreshRequest { refresh_token };
        let answer: PairResponse = self
            .post(REFRESH_SUBSCRIBER, &body, Some(auth), Some(refresh_token))
            .await?;
        let Some(refresh) = answer.refresh_token else {
            return Err(Error::new(Kind::Decode).with_detail(format!(
                "{}: the answer has no refresh_token",
                REFRESH_SUBSCRIBER.name
            )));
        };
        make_pair(
            REFRESH_SUBSCRIBER,
            answer.token,
            Some(refresh),
            sent,
            self.shared.refreshed.access,
            self.shared.refreshed.refresh,
        )
    }

    /// Mints a guest token restricted to the request's addresses, authenticated with the
    /// project credentials or a SAT.
    ///
    /// The addresses are checked first (1 to 10 UUIDs); a bad list fails with
    /// [`Error::is_invalid_input`] and nothing is sent. Lifetimes are tracked as for
    /// [`create_subscriber_token`](Self::create_subscriber_token).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// # let mock = signalwire_auth::MockSpace::start().await?;
    /// # let client = signalwire_auth::TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
    /// use signalwire_auth::{CreateGuestToken, GuestAuth};
    ///
    /// let request = CreateGuestToken::new(["c22d24f6-5a26-4f53-8008-b29530339efa"]);
    /// // With the project credentials…
    /// let guest = client.create_guest_token(&request, GuestAuth::Basic).await?;
    /// assert!(guest.refresh_token().is_some());
    /// // …or with a subscriber's SAT.
    /// let alice = mock.mint("alice@example.com");
    /// let guest = client
    ///     .create_guest_token(&request, GuestAuth::Bearer(alice.access_token()))
    ///     .await?;
    /// assert!(!guest.access_token().is_empty());
    ///
    /// // More than 10 addresses fail before anything is sent.
    /// let too_many = CreateGuestToken::new(vec!["c22d24f6-5a26-4f53-8008-b29530339efa"; 11]);
    /// let error = client.create_guest_token(&too_many, GuestAuth::Basic).await.unwrap_err();
    /// assert!(error.is_invalid_input());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_guest_token(
        &self,
        request: &CreateGuestToken,
        auth: GuestAuth<'_>,
    ) -> Result<TokenPair, Error> {
        request.check()?;
        let (auth, secret) = match auth {
            GuestAuth::Basic => (self.basic(CREATE_GUEST)?, None),
            GuestAuth::Bearer(sat) => (bearer(sat)?, Some(sat)),
        };
        let (sent, sent_wall) = (Instant::now(), SystemTime::now());
        let answer: PairResponse = self.post(CREATE_GUEST, request, Some(auth), secret).await?;
        guest_pair(request, answer, sent, sent_wall)
    }

    /// Creates an invite to a Fabric address, authenticated with the subscriber's SAT.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// # let mock = signalwire_auth::MockSpace::start().await?;
    /// # let client = signalwire_auth::TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
    /// use signalwire_auth::CreateInviteToken;
    ///
    /// let alice = mock.mint("alice@example.com");
    /// let invite = client
    ///     .create_invite_token(
    ///         &CreateInviteToken::new("c22d24f6-5a26-4f53-8008-b29530339efa"),
    ///         alice.access_token(),
    ///     )
    ///     .await?;
    /// assert!(!invite.is_empty());
    /// assert!(!format!("{invite:?}").contains(invite.as_str())); // Debug redacts it
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_invite_token(
        &self,
        request: &CreateInviteToken,
        sat: &str,
    ) -> Result<InviteToken, Error> {
        request.check()?;
        let auth = bearer(sat)?;
        let answer: TokenResponse = self
            .post(CREATE_INVITE, request, Some(auth), Some(sat))
            .await?;
        Ok(InviteToken::new(non_empty(CREATE_INVITE, answer.token)?))
    }

    /// [`create_guest_token`](Self::create_guest_token) with the subscriber's SAT from `cache`:
    /// refreshed ahead of expiry like any request's, and on a 401 refreshed once (shared with
    /// every other request, as [`TokenCache::reauthorize`] rules) and sent once more.
    pub async fn create_guest_token_with_cache(
        &self,
        request: &CreateGuestToken,
        cache: &TokenCache,
    ) -> Result<TokenPair, Error> {
        request.check()?;
        let (sent, sent_wall) = (Instant::now(), SystemTime::now());
        let answer: PairResponse = self.post_with_cache(CREATE_GUEST, request, cache).await?;
        guest_pair(request, answer, sent, sent_wall)
    }

    /// [`create_invite_token`](Self::create_invite_token) with the subscriber's SAT from
    /// `cache`, recovering from a 401 like
    /// [`create_guest_token_with_cache`](Self::create_guest_token_with_cache).
    pub async fn create_invite_token_with_cache(
        &self,
        request: &CreateInviteToken,
        cache: &TokenCache,
    ) -> Result<InviteToken, Error> {
        request.check()?;
        let answer: TokenResponse = self.post_with_cache(CREATE_INVITE, request, cache).await?;
        Ok(InviteToken::new(non_empty(CREATE_INVITE, answer.token)?))
    }

    /// [`post`](Self::post) with a SAT from `cache`; a 401 for it costs one shared refresh and
    /// one more send. Where a new token cannot help, the 401's own error is returned.
    async fn post_with_cache<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: &impl Serialize,
        cache: &TokenCache,
    ) -> Result<T, Error> {
        let auth = cache.authorization().await?;
        let header = Some(auth.header_value().clone());
        let error = match self.post(endpoint, body, header, Some(auth.token())).await {
            Err(error) if error.api_error().is_some_and(ApiError::is_unauthorized) => error,
            other => return other,
        };
        let again = match cache.reauthorize(&auth).await {
            Ok(again) => again,
            Err(cannot) if cannot.is_unauthorized() => return Err(error),
            Err(failed) => return Err(failed),
        };
        cache.note_replay();
        let header = Some(again.header_value().clone());
        self.post(endpoint, body, header, Some(again.token())).await
    }

    /// Exchanges a click-to-call token (`c2c_…`) for a guest embed token. No authentication.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use signalwire_auth::{MockSpace, TokenClient};
    ///
    /// let mock = MockSpace::start().await?;
    /// // No credentials needed for this endpoint.
    /// let client = TokenClient::with_service(mock.space(), None, mock.client());
    /// let embed = client.create_embed_token("c2c_7acc0b5bd1ab4b4b8e6e1a3b1a2d3c4e").await?;
    /// assert!(!embed.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_embed_token(&self, c2c_token: &str) -> Result<EmbedToken, Error> {
        if c2c_token.is_empty() {
            return Err(Error::invalid_input("click-to-call token is empty"));
        }
        let body = EmbedRequest { token: c2c_token };
        let answer: TokenResponse = self
            .post(CREATE_EMBED, &body, None, Some(c2c_token))
            .await?;
        Ok(EmbedToken::new(non_empty(CREATE_EMBED, answer.token)?))
    }

    /// Sends `body` as JSON to `endpoint` and reads a 2xx answer as `T`. `secret` is the token
    /// the request carries, cut out of any error text the server sends back.
    async fn post<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: &impl Serialize,
        auth: Option<HeaderValue>,
        secret: Option<&str>,
    ) -> Result<T, Error> {
        let uri = self.shared.space.endpoint(endpoint.path)?;
        let json = serde_json::to_vec(body).map_err(|e| {
            Error::invalid_input(format!("{}: request cannot be encoded", endpoint.name))
                .with_source(e)
        })?;
        let mut request = Request::post(uri)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| {
                Error::invalid_input(format!("{}: request cannot be built", endpoint.name))
                    .with_source(e)
            })?;
        if let Some(auth) = auth {
            request.headers_mut().insert(AUTHORIZATION, auth);
        }

        let exchange = async {
            let response = self
                .service
                .clone()
                .oneshot(request)
                .await
                .map_err(|e| transport(endpoint, e.into()))?;
            let (parts, body) = response.into_parts();
            let (bytes, truncated) = read_capped(body, MAX_BODY)
                .await
                .map_err(|e| transport(endpoint, e))?;
            Ok::<_, Error>((parts, bytes, truncated))
        };
        let (parts, bytes, truncated) = tokio::time::timeout(self.shared.timeout, exchange)
            .await
            .map_err(|_| {
                Error::new(Kind::Timeout).with_detail(format!(
                    "{} got no complete answer within {:?}",
                    endpoint.name, self.shared.timeout
                ))
            })??;

        if !parts.status.is_success() {
            let api = ApiError::from_response(
                parts.status,
                &parts.headers,
                &bytes,
                &self.secrets_besides(secret),
            );
            // The status and the server's words come from the source: said once.
            return Err(Error::api(api).with_detail(endpoint.name));
        }
        if truncated {
            return Err(Error::new(Kind::Decode).with_detail(format!(
                "{}: the answer is larger than {} KiB",
                endpoint.name,
                MAX_BODY / 1024
            )));
        }
        // serde_json's messages may quote the input, which holds tokens: keep only where it
        // failed.
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(Kind::Decode).with_detail(format!(
                "{}: the answer is not the documented JSON ({:?} error at line {}, column {})",
                endpoint.name,
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

/// A guest token's pair, its lifetime tracked from when the request was sent.
fn guest_pair(
    request: &CreateGuestToken,
    answer: PairResponse,
    sent: Instant,
    sent_wall: SystemTime,
) -> Result<TokenPair, Error> {
    let lifetime = request
        .expire_at()
        .map_or(TokenPair::DEFAULT_LIFETIME, |at| {
            TokenPair::lifetime_until(at, sent_wall)
        });
    make_pair(
        CREATE_GUEST,
        answer.token,
        answer.refresh_token,
        sent,
        lifetime,
        lifetime + REFRESH_MARGIN,
    )
}

impl<S: Clone> Clone for TokenClient<S> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for TokenClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("space", &self.shared.space)
            .field(
                "project_id",
                &self
                    .shared
                    .credentials
                    .as_ref()
                    .map(Credentials::project_id),
            )
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

/// `Bearer <sat>`, checked and marked sensitive.
fn bearer(sat: &str) -> Result<HeaderValue, Error> {
    check_token("subscriber access token", sat)?;
    let value = Zeroizing::new(format!("Bearer {sat}"));
    let mut header = HeaderValue::from_str(&value)
        .map_err(|_| Error::invalid_input("subscriber access token is not a header value"))?;
    header.set_sensitive(true);
    Ok(header)
}

fn transport(endpoint: Endpoint, source: BoxError) -> Error {
    Error::new(Kind::Transport)
        .with_detail(endpoint.name)
        .with_source(crate::error::TransportCause::new(source))
}

/// A pair from a 2xx answer; a token that cannot be sent as a bearer value is a decode error.
fn make_pair(
    endpoint: Endpoint,
    access: String,
    refresh: Option<String>,
    sent: Instant,
    lifetime: Duration,
    refresh_lifetime: Duration,
) -> Result<TokenPair, Error> {
    let invalid = |e: Error| {
        Error::new(Kind::Decode)
            .with_detail(format!(
                "{}: the answer holds an unusable token",
                endpoint.name
            ))
            .with_source(e)
    };
    let pair = TokenPair::new(access, sent, lifetime).map_err(invalid)?;
    match refresh {
        Some(refresh) => pair
            .with_refresh_token(refresh, refresh_lifetime)
            .map_err(invalid),
        None => Ok(pair),
    }
}

fn non_empty(endpoint: Endpoint, token: String) -> Result<String, Error> {
    if token.is_empty() {
        return Err(Error::new(Kind::Decode)
            .with_detail(format!("{}: the answer's token is empty", endpoint.name)));
    }
    Ok(token)
}

/// Reads at most `cap` bytes of `body`; the flag says whether there was more. The buffer is
/// wiped on drop, since it holds tokens.
async fn read_capped<B>(body: B, cap: usize) -> Result<(Zeroizing<Vec<u8>>, bool), BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let hint = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    let mut buf = Zeroizing::new(Vec::with_capacity(hint.min(cap)));
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame.map_err(Into::into)?.into_data() else {
            continue;
        };
        while data.has_remaining() {
            let chunk = data.chunk();
            let take = chunk.len().min(cap - buf.len());
            buf.extend_from_slice(&chunk[..take]);
            if take < chunk.len() {
                return Ok((buf, true));
            }
            data.advance(take);
        }
    }
    Ok((buf, false))
}

#[cfg(test)]
mod tests {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use http::Method;
    use http_body::Frame;
    use serde_json::json;

    use super::*;
    use crate::api::{
        GuestAuth,
        testing::{
            API_TOKEN, Fake, NEXT_REFRESH, NEXT_SAT, REFRESH, Reply, SAT, client, credentials,
            space,
        },
    };

    const ADDRESS: &str = "c22d24f6-5a26-4f53-8008-b29530339efa";
    const SUBSCRIBER: &str = "d7c5a2e1-0b8f-4a3c-9e6d-1f2a3b4c5d6e";
    const BASIC: &str = "Basic YTFiMmMzZDQtZTVmNi03ODkwLWFiY2QtZWYxMjM0NTY3ODkwOlBUNHRqQ0dubUFlUTBod0ZtRkRod2Znd3c4ODBYMmxzbnVSNjBWTXlhcw==";

    fn minted() -> Reply {
        Reply::json(
            200,
            json!({"subscriber_id": SUBSCRIBER, "token": SAT, "refresh_token": REFRESH}),
        )
    }

    fn pair_reply(status: u16) -> Reply {
        Reply::json(
            status,
            json!({"token": NEXT_SAT, "refresh_token": NEXT_REFRESH}),
        )
    }

    fn assert_json_post(fake: &Fake, path: &str, auth: Option<&str>) -> serde_json::Value {
        let seen = fake.seen(fake.calls() - 1);
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.path, path);
        assert_eq!(seen.headers[ACCEPT], "application/json");
        assert_eq!(seen.headers[CONTENT_TYPE], "application/json");
        match auth {
            Some(auth) => {
                assert_eq!(seen.headers[AUTHORIZATION], auth);
                assert!(seen.headers[AUTHORIZATION].is_sensitive());
            }
            None => assert!(!seen.headers.contains_key(AUTHORIZATION)),
        }
        seen.body
    }

    #[tokio::test(start_paused = true)]
    async fn create_subscriber_token_posts_basic_json_and_tracks_default_lifetime() {
        let fake = Fake::new([minted()]);
        let sent = Instant::now();
        let minted = client(&fake)
            .create_subscriber_token(&CreateSubscriberToken::new("alice@example.com"))
            .await
            .unwrap();
        let body = assert_json_post(&fake, "/api/fabric/subscribers/tokens", Some(BASIC));
        assert_eq!(body, json!({"reference": "alice@example.com"}));
        assert_eq!(minted.subscriber_id(), SUBSCRIBER);
        let pair = minted.pair();
        assert_eq!(pair.access_token(), SAT);
        assert_eq!(pair.refresh_token(), Some(REFRESH));
        assert_eq!(pair.issued_at(), sent);
        assert_eq!(pair.expires_at(), sent + TokenPair::DEFAULT_LIFETIME);
        assert_eq!(
            pair.refresh_expires_at(),
            Some(sent + TokenPair::DEFAULT_LIFETIME + REFRESH_MARGIN)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn create_subscriber_token_lifetime_follows_expire_at_and_short_scope() {
        let fake = Fake::new([minted(), minted(), minted()]);
        let client = client(&fake);
        let now_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let asked = CreateSubscriberToken::new("a").with_expire_at(now_unix + 600);
        let pair = client
            .create_subscriber_token(&asked)
            .await
            .unwrap()
            .into_pair();
        // expire_at is whole seconds; the send instant is not.
        assert!(
            pair.lifetime() > Duration::from_secs(598),
            "{:?}",
            pair.lifetime()
        );
        assert!(
            pair.lifetime() <= Duration::from_secs(600),
            "{:?}",
            pair.lifetime()
        );
        assert_eq!(
            pair.refresh_expires_at(),
            Some(pair.expires_at() + REFRESH_MARGIN)
        );

        let short = CreateSubscriberToken::new("a").with_scope("sat:refresh");
        let pair = client
            .create_subscriber_token(&short)
            .await
            .unwrap()
            .into_pair();
        assert_eq!(pair.lifetime(), SHORT_LIFETIME);

        let fingerprinted = short.with_fingerprint("device-1");
        let pair = client
            .create_subscriber_token(&fingerprinted)
            .await
            .unwrap()
            .into_pair();
        assert_eq!(pair.lifetime(), TokenPair::DEFAULT_LIFETIME);
        assert_eq!(
            fake.seen(2).body,
            json!({"reference": "a", "scope": "sat:refresh", "fingerprint": "device-1"})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_posts_the_refresh_token_and_gives_documented_lifetimes() {
        let fake = Fake::new([pair_reply(201)]);
        let sent = Instant::now();
        let pair = client(&fake)
            .refresh_subscriber_token(REFRESH)
            .await
            .unwrap();
        let body = assert_json_post(&fake, "/api/fabric/subscribers/tokens/refresh", Some(BASIC));
        assert_eq!(body, json!({"refresh_token": REFRESH}));
        assert_eq!(pair.access_token(), NEXT_SAT);
        assert_eq!(pair.refresh_token(), Some(NEXT_REFRESH));
        assert_eq!(pair.expires_at(), sent + Duration::from_secs(2 * 3600));
        assert_eq!(
            pair.refresh_expires_at(),
            Some(sent + Duration::from_secs(2 * 3600 + 300))
        );
    }

    #[tokio::test]
    async fn any_2xx_is_success() {
        for status in [200, 201, 202, 299] {
            let fake = Fake::new([pair_reply(status)]);
            assert!(
                client(&fake)
                    .refresh_subscriber_token(REFRESH)
                    .await
                    .is_ok()
            );
        }
    }

    #[tokio::test]
    async fn refresh_answer_without_refresh_token_is_a_decode_error() {
        let fake = Fake::new([Reply::json(201, json!({"token": NEXT_SAT}))]);
        let err = client(&fake)
            .refresh_subscriber_token(REFRESH)
            .await
            .unwrap_err();
        assert!(err.is_decode(), "{err:?}");
    }

    #[tokio::test]
    async fn guest_token_with_basic_or_bearer() {
        let fake = Fake::new([pair_reply(201), pair_reply(201)]);
        let client = client(&fake);
        let request = CreateGuestToken::new([ADDRESS]).with_region("us");
        let pair = client
            .create_guest_token(&request, GuestAuth::Basic)
            .await
            .unwrap();
        let body = assert_json_post(&fake, "/api/fabric/guests/tokens", Some(BASIC));
        assert_eq!(
            body,
            json!({"allowed_addresses": [ADDRESS], "region": "us"})
        );
        assert_eq!(pair.access_token(), NEXT_SAT);
        assert_eq!(pair.lifetime(), TokenPair::DEFAULT_LIFETIME);

        client
            .create_guest_token(&request, GuestAuth::Bearer(SAT))
            .await
            .unwrap();
        assert_json_post(
            &fake,
            "/api/fabric/guests/tokens",
            Some(&format!("Bearer {SAT}")),
        );
    }

    #[tokio::test]
    async fn guest_token_with_too_many_addresses_sends_nothing() {
        let fake = Fake::new([pair_reply(201)]);
        let err = client(&fake)
            .create_guest_token(&CreateGuestToken::new([ADDRESS; 11]), GuestAuth::Basic)
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{err:?}");
        assert_eq!(fake.calls(), 0);
    }

    #[tokio::test]
    async fn invite_token_uses_bearer_and_the_singular_path() {
        let fake = Fake::new([Reply::json(201, json!({"token": "eyJinvite"}))]);
        let invite = client(&fake)
            .create_invite_token(&CreateInviteToken::new(ADDRESS).with_expires_at(9), SAT)
            .await
            .unwrap();
        let body = assert_json_post(
            &fake,
            "/api/fabric/subscriber/invites",
            Some(&format!("Bearer {SAT}")),
        );
        assert_eq!(body, json!({"address_id": ADDRESS, "expires_at": 9}));
        assert_eq!(invite, "eyJinvite");
    }

    #[tokio::test]
    async fn embed_token_sends_no_authorization() {
        let fake = Fake::new([Reply::json(201, json!({"token": "eyJembed"}))]);
        let client = TokenClient::with_service(space(), None, fake.clone());
        let embed = client.create_embed_token("c2c_abc").await.unwrap();
        let body = assert_json_post(&fake, "/api/fabric/embeds/tokens", None);
        assert_eq!(body, json!({"token": "c2c_abc"}));
        assert_eq!(embed.as_str(), "eyJembed");
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_sending() {
        let fake = Fake::new([]);
        let without_credentials = TokenClient::with_service(space(), None, fake.clone());
        let errors = [
            without_credentials
                .create_subscriber_token(&CreateSubscriberToken::new("a"))
                .await
                .unwrap_err(),
            without_credentials
                .refresh_subscriber_token(REFRESH)
                .await
                .unwrap_err(),
            without_credentials
                .create_guest_token(&CreateGuestToken::new([ADDRESS]), GuestAuth::Basic)
                .await
                .unwrap_err(),
            client(&fake)
                .create_subscriber_token(&CreateSubscriberToken::new(""))
                .await
                .unwrap_err(),
            client(&fake)
                .refresh_subscriber_token("not a token")
                .await
                .unwrap_err(),
            client(&fake)
                .create_invite_token(&CreateInviteToken::new(ADDRESS), "bad sat\n")
                .await
                .unwrap_err(),
            client(&fake)
                .create_invite_token(&CreateInviteToken::new(""), SAT)
                .await
                .unwrap_err(),
            client(&fake)
                .create_guest_token(&CreateGuestToken::new([ADDRESS]), GuestAuth::Bearer(""))
                .await
                .unwrap_err(),
            client(&fake).create_embed_token("").await.unwrap_err(),
        ];
        for err in errors {
            assert!(err.is_invalid_input(), "{err:?}");
            assert!(!err.to_string().contains("bad sat"), "{err}");
        }
        assert!(
            without_credentials
                .create_subscriber_token(&CreateSubscriberToken::new("a"))
                .await
                .unwrap_err()
                .to_string()
                .contains("needs project credentials")
        );
        assert_eq!(fake.calls(), 0);
    }

    #[tokio::test]
    async fn non_2xx_is_an_api_error_with_echoed_tokens_cut_out() {
        let fake = Fake::new([Reply::json(
            422,
            json!({"errors": [{"type": "validation_error", "code": "token_expired",
                "message": format!("refresh token {REFRESH} has expired"),
                "attribute": "refresh_token", "url": "https://developer.signalwire.com"}]}),
        )]);
        let err = client(&fake)
            .refresh_subscriber_token(REFRESH)
            .await
            .unwrap_err();
        assert!(err.is_api());
        let api = err.api_error().unwrap();
        assert!(api.is_validation());
        assert!(api.is_token_expired());
        assert_eq!(api.errors()[0].attribute(), Some("refresh_token"));
        let shown = format!("{err} {err:?} {api}");
        assert!(shown.contains("refresh subscriber token"), "{shown}");
        assert!(shown.contains("token_expired"), "{shown}");
        for secret in [REFRESH, API_TOKEN, "refresh-cipher"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[tokio::test]
    async fn undecodable_2xx_is_a_decode_error_that_quotes_nothing() {
        let bodies: [Bytes; 5] = [
            Bytes::from_static(b"<html>ok</html>"),
            Bytes::from(format!("\"{NEXT_SAT}\"")),
            Bytes::from(json!({"token": 5}).to_string()),
            Bytes::from(json!({"token": "bad token", "refresh_token": NEXT_REFRESH}).to_string()),
            Bytes::from(vec![b' '; MAX_BODY + 1]),
        ];
        for body in bodies {
            let fake = Fake::new([Reply::raw(201, body)]);
            let err = client(&fake)
                .refresh_subscriber_token(REFRESH)
                .await
                .unwrap_err();
            assert!(err.is_decode(), "{err:?}");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("next-sat"), "{shown}");
            assert!(!shown.contains("next-refresh"), "{shown}");
        }
    }

    #[tokio::test]
    async fn oversized_error_body_is_kept_bounded() {
        let fake = Fake::new([Reply::raw(502, vec![b'x'; MAX_BODY * 2])]);
        let err = client(&fake)
            .refresh_subscriber_token(REFRESH)
            .await
            .unwrap_err();
        let api = err.api_error().unwrap();
        assert!(api.is_server_error());
        assert!(api.body_text().unwrap().len() <= 4096);
    }

    #[tokio::test]
    async fn transport_failure_is_a_transport_error() {
        let fake = Fake::new([Reply::Fail]);
        let err = client(&fake)
            .refresh_subscriber_token(REFRESH)
            .await
            .unwrap_err();
        assert!(err.is_transport(), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_hangs_times_out() {
        let fake = Fake::new([Reply::Hang]);
        let started = Instant::now();
        let err = client(&fake)
            .with_timeout(Duration::from_secs(3))
            .refresh_subscriber_token(REFRESH)
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    /// A body that sends one frame and then never ends.
    struct Stalled(Option<Bytes>);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_covers_reading_the_body() {
        let service = tower::service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, BoxError>(Response::new(Stalled(Some(Bytes::from_static(b"{\"to")))))
        });
        let client = TokenClient::with_service(space(), Some(credentials()), service);
        let err = client.refresh_subscriber_token(REFRESH).await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
    }

    /// A body of ready data frames.
    struct Chunks(std::collections::VecDeque<&'static [u8]>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|c| Ok(Frame::data(Bytes::from_static(c)))),
            )
        }
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_the_cap_across_frames() {
        let body = Chunks([b"abc".as_slice(), b"def", b"gh"].into());
        let (bytes, truncated) = read_capped(body, 8).await.unwrap();
        assert_eq!(&bytes[..], b"abcdefgh");
        assert!(!truncated);
        let body = Chunks([b"abc".as_slice(), b"defgh", b"i"].into());
        let (bytes, truncated) = read_capped(body, 8).await.unwrap();
        assert_eq!(&bytes[..], b"abcdefgh");
        assert!(truncated);
    }

    #[test]
    fn debug_shows_no_secret_and_clone_shares_the_config() {
        let fake = Fake::new([]);
        let client = client(&fake).with_timeout(Duration::from_secs(4));
        let copy = client.clone();
        assert_eq!(copy.timeout(), Duration::from_secs(4));
        assert_eq!(copy.space(), client.space());
        let shown = format!("{copy:?}");
        assert!(shown.contains("a1b2c3d4"), "{shown}");
        assert!(!shown.contains(API_TOKEN), "{shown}");
        assert!(!shown.contains("YTFiMmMz"), "{shown}");
    }

    #[test]
    fn client_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let fake = Fake::new([]);
        let client = client(&fake);
        assert_send(&client.refresh_subscriber_token(REFRESH));
        assert_send(&client.create_subscriber_token(&CreateSubscriberToken::new("a")));
    }
}
