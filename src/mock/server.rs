//! The [`MockSpace`] handle, its builder, and the accept loop behind it.

use std::{
    fmt,
    future::Future,
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http_body::Body;
use hyper::service::service_fn;
use hyper_util::{rt::TokioIo, server::conn::auto};
use rustls::RootCertStore;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{Notify, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_rustls::TlsAcceptor;

use super::{
    Fault, MockEndpoint,
    conn::ConnLink,
    handlers,
    shared::{Lifetimes, Shared},
    tls,
    tokens::{Entropy, Profile},
};
use crate::{Credentials, HttpsClient, Space, TokenPair};

/// How many connections may wait to be accepted (the kernel may cap it lower).
const LISTEN_BACKLOG: u32 = 4096;

/// The longest lifetime the builder keeps; longer ones are cut to it, so that no deadline can
/// overflow an `Instant`.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A SignalWire-like space on `127.0.0.1`, for tests: a real hyper server (HTTP/1.1 and
/// HTTP/2, plain or TLS) serving the token endpoints, with counters and fault injection.
///
/// See the [module documentation](super) for what it serves and an example. Dropping the
/// handle stops the server: the listener closes and open connections are cut.
///
/// Token lifetimes run on [`tokio::time::Instant`], so a test with paused time
/// (`#[tokio::test(start_paused = true)]`) expires tokens with `tokio::time::advance`.
///
/// # Example
///
/// The whole Bearer stack against the mock: a minted pair, refreshed through the refresh
/// endpoint after the server revokes the access token.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use bytes::Bytes;
/// use http::{Request, StatusCode};
/// use http_body_util::Full;
/// use signalwire_auth::{
///     BearerAuthLayer, MockSpace, ReplayBody, SubscriberRefresher, TokenCache, TokenClient,
///     mock::MockEndpoint,
/// };
/// use tower::{Layer, ServiceExt};
///
/// let mock = MockSpace::start().await?;
/// let tokens = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
/// let cache = TokenCache::new(mock.mint("alice@example.com"), SubscriberRefresher::with_client(tokens));
/// let client = BearerAuthLayer::new(cache).layer(mock.client::<ReplayBody<Full<Bytes>>>());
/// let addresses = mock.space().endpoint("/api/fabric/addresses")?;
///
/// let request = Request::get(addresses.clone()).body(Full::default())?;
/// assert_eq!(client.clone().oneshot(request).await?.status(), StatusCode::OK);
///
/// mock.revoke_access_tokens(); // the next request gets a 401, refreshes once, replays
/// let request = Request::get(addresses).body(Full::default())?;
/// assert_eq!(client.oneshot(request).await?.status(), StatusCode::OK);
/// assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
/// assert_eq!(mock.calls(MockEndpoint::ListAddresses), 3);
/// # Ok(())
/// # }
/// ```
pub struct MockSpace {
    pub(super) shared: Arc<Shared>,
    addr: SocketAddr,
    /// What [`client`](Self::client) trusts: the generated CA for TLS, nothing for plain HTTP.
    pub(super) roots: RootCertStore,
    /// The generated CA, PEM-encoded (TLS only), for `clients.rs`.
    pub(super) ca_pem: Option<String>,
    tls: bool,
    accept: JoinHandle<()>,
    /// Dropped with the handle, which stops every task the server spawned.
    _stop: watch::Sender<()>,
}

impl MockSpace {
    /// Starts a plain-HTTP mock with the default lifetimes and fresh credentials.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like [`tokio::net::TcpSocket::listen`].
    pub async fn start() -> io::Result<MockSpace> {
        Self::builder().start().await
    }

    /// Starts an HTTPS mock, with a certificate for `localhost` and `127.0.0.1` made now and
    /// trusted by [`client`](Self::client) only.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use signalwire_auth::{CreateSubscriberToken, MockSpace, TokenClient, https_client};
    ///
    /// let mock = MockSpace::start_tls().await?;
    /// assert!(mock.space().is_https());
    /// let request = CreateSubscriberToken::new("alice@example.com");
    ///
    /// // The mock's own client trusts its certificate…
    /// let client = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
    /// client.create_subscriber_token(&request).await?;
    ///
    /// // …a client with the web PKI roots does not, and says so.
    /// let strict = TokenClient::with_service(mock.space(), Some(mock.credentials()), https_client());
    /// let error = strict.create_subscriber_token(&request).await.unwrap_err();
    /// assert!(error.is_transport(), "{error:?}");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like [`tokio::net::TcpSocket::listen`].
    pub async fn start_tls() -> io::Result<MockSpace> {
        Self::builder().tls(true).start().await
    }

    /// A builder to choose lifetimes, credentials and TLS.
    pub fn builder() -> MockSpaceBuilder {
        MockSpaceBuilder::default()
    }

    /// The space to point clients at: `http://127.0.0.1:PORT`, or `https://localhost:PORT` with
    /// TLS (the certificate names both).
    pub fn space(&self) -> Space {
        self.shared.space.clone()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The project credentials the server accepts for Basic authentication.
    pub fn credentials(&self) -> Credentials {
        self.shared.credentials.clone()
    }

    /// A client that trusts this server's certificate (and nothing else), and also speaks
    /// plain HTTP.
    pub fn client<B>(&self) -> HttpsClient<B>
    where
        B: Body + Send + 'static,
        B::Data: Send,
    {
        crate::https::https_client_with_roots(self.roots.clone())
    }

    /// How many requests `endpoint` has received (right path and method), faulted and refused
    /// ones included.
    pub fn calls(&self, endpoint: MockEndpoint) -> usize {
        self.shared.lock().calls[endpoint.index()]
    }

    /// Makes the next `times` calls to `endpoint` get `fault`. Faults injected for the same
    /// endpoint apply one after the other, in the order injected.
    pub fn inject(&self, endpoint: MockEndpoint, fault: Fault, times: usize) {
        self.shared.lock().faults.push(endpoint, fault, times);
    }

    /// Revokes every access token issued so far: they now get 401. Refresh tokens stay valid,
    /// and tokens issued later are not affected.
    pub fn revoke_access_tokens(&self) {
        self.shared.lock().store.revoke_access_tokens();
    }

    /// Revokes every access token issued so far to the subscriber `reference` (they now get
    /// 401), and no one else's. Its refresh tokens stay valid, and its tokens issued later are
    /// not affected. Returns `false` if no token was ever minted for `reference`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use signalwire_auth::MockSpace;
    ///
    /// let mock = MockSpace::start().await?;
    /// mock.mint("alice@example.com");
    /// mock.mint("bob@example.com");
    /// assert!(mock.revoke_subscriber_access_tokens("alice@example.com"));
    /// assert!(!mock.revoke_subscriber_access_tokens("nobody@example.com"));
    /// assert_eq!(mock.subscriber_mints("alice@example.com"), 1);
    /// assert_eq!(mock.subscriber_refreshes("bob@example.com"), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn revoke_subscriber_access_tokens(&self, reference: &str) -> bool {
        self.shared
            .lock()
            .store
            .revoke_subscriber_access_tokens(reference)
    }

    /// How many pairs were minted for the subscriber `reference` (by Create Subscriber Token
    /// or [`mint`](Self::mint)).
    pub fn subscriber_mints(&self, reference: &str) -> usize {
        let state = self.shared.lock();
        state
            .store
            .subscriber_by_reference(reference)
            .map_or(0, |subscriber| subscriber.mints)
    }

    /// How many times the refresh endpoint refreshed a pair of the subscriber `reference`.
    pub fn subscriber_refreshes(&self, reference: &str) -> usize {
        let state = self.shared.lock();
        state
            .store
            .subscriber_by_reference(reference)
            .map_or(0, |subscriber| subscriber.refreshes)
    }

    /// How many refresh calls presented a refresh token that had already been spent.
    pub fn reused_refresh_tokens(&self) -> usize {
        self.shared.lock().store.reused_refresh_tokens()
    }

    /// Mints a subscriber's token pair without HTTP, as Create Subscriber Token would: issued
    /// now, with the configured access lifetime and refresh lifetime. For test setup.
    pub fn mint(&self, reference: &str) -> TokenPair {
        let now = Instant::now();
        let lifetimes = self.shared.lifetimes;
        let (_, issued) = self.shared.lock().store.mint_subscriber(
            reference,
            Profile::default(),
            now + lifetimes.access,
            now + lifetimes.refresh,
        );
        TokenPair::new(issued.access, now, lifetimes.access)
            .and_then(|pair| pair.with_refresh_token(issued.refresh, lifetimes.refresh))
            .expect("the mock issues base64url tokens, which are valid bearer tokens")
    }
}

impl Drop for MockSpace {
    fn drop(&mut self) {
        // Closes the listener at once; `_stop`, dropped next, ends the connection tasks.
        self.accept.abort();
    }
}

impl fmt::Debug for MockSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockSpace")
            .field("space", &self.shared.space)
            .field("tls", &self.tls)
            .field("project_id", &self.shared.credentials.project_id())
            .finish_non_exhaustive()
    }
}

/// Settings for a [`MockSpace`]; start it with [`start`](Self::start).
///
/// ```
/// use std::time::Duration;
/// use signalwire_auth::MockSpace;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let mock = MockSpace::builder()
///     .access_lifetime(Duration::from_secs(10 * 60))
///     .tls(true)
///     .start()
///     .await?;
/// assert!(mock.space().is_https());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MockSpaceBuilder {
    lifetimes: Lifetimes,
    credentials: Option<Credentials>,
    tls: bool,
}

impl Default for MockSpaceBuilder {
    fn default() -> Self {
        Self {
            lifetimes: Lifetimes {
                access: TokenPair::DEFAULT_LIFETIME,
                refreshed_access: TokenPair::DEFAULT_LIFETIME,
                refresh: TokenPair::REFRESH_TOKEN_LIFETIME,
            },
            credentials: None,
            tls: false,
        }
    }
}

impl MockSpaceBuilder {
    /// Lifetime of a SAT minted without `expire_at` (by Create Subscriber Token, the guest,
    /// invite and embed endpoints, and [`MockSpace::mint`]). Default 2 h. Lifetimes over 100
    /// years are cut to 100 years.
    pub fn access_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetimes.access = lifetime.min(MAX_LIFETIME);
        self
    }

    /// Lifetime of a SAT returned by the refresh endpoint. Default 2 h.
    pub fn refreshed_access_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetimes.refreshed_access = lifetime.min(MAX_LIFETIME);
        self
    }

    /// Lifetime of every refresh token, minted or refreshed. Default 2 h 5 min.
    pub fn refresh_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetimes.refresh = lifetime.min(MAX_LIFETIME);
        self
    }

    /// The project credentials to accept. Default: a fresh Project ID and API token, read
    /// them with [`MockSpace::credentials`].
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Whether to serve HTTPS (`https://localhost:PORT`). Default `false`.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Binds `127.0.0.1` on a free port and starts serving on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like [`tokio::net::TcpSocket::listen`].
    pub async fn start(self) -> io::Result<MockSpace> {
        // A deep backlog, so that a storm of new connections from a test waits in the kernel
        // rather than failing to connect.
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let addr = listener.local_addr()?;
        let (url, acceptor, roots, ca_pem) = if self.tls {
            let tls = tls::generate()?;
            (
                format!("https://localhost:{}", addr.port()),
                Some(tls.acceptor),
                tls.roots,
                Some(tls.ca_pem),
            )
        } else {
            (format!("http://{addr}"), None, RootCertStore::empty(), None)
        };
        let space = Space::from_url(&url).map_err(io::Error::other)?;
        let credentials = match self.credentials {
            Some(credentials) => credentials,
            None => fresh_credentials()?,
        };
        let shared = Arc::new(Shared::new(space, credentials, self.lifetimes));
        let (stop, stopped) = watch::channel(());
        let exec = StopExec { stop: stopped };
        let accept = exec.spawn(accept_loop(
            listener,
            acceptor,
            shared.clone(),
            exec.clone(),
        ));
        Ok(MockSpace {
            shared,
            addr,
            roots,
            ca_pem,
            tls: self.tls,
            accept,
            _stop: stop,
        })
    }
}

/// A Project ID and API token nobody can guess, so tests must ask the mock for them.
fn fresh_credentials() -> io::Result<Credentials> {
    let mut entropy = Entropy::new();
    let project_id = entropy.uuid();
    let api_token = format!("PT{}", entropy.base64url(24));
    Credentials::new(project_id, api_token).map_err(io::Error::other)
}

/// Spawns tasks that end when the [`MockSpace`] is dropped, including hyper's HTTP/2 stream
/// tasks, so that no handler outlives the server.
#[derive(Clone, Debug)]
struct StopExec {
    stop: watch::Receiver<()>,
}

impl StopExec {
    fn spawn<F>(&self, future: F) -> JoinHandle<()>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = future => {}
                // Never sent to: this resolves when the sender, held by the handle, drops.
                _ = stop.changed() => {}
            }
        })
    }
}

impl<F> hyper::rt::Executor<F> for StopExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.spawn(future);
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    exec: StopExec,
) {
    let builder = auto::Builder::new(exec.clone());
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                exec.spawn(serve_tcp(
                    tcp,
                    acceptor.clone(),
                    shared.clone(),
                    builder.clone(),
                ));
            }
            Err(e) => {
                tracing::debug!(error = %e, "mock space: accept failed");
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) {
                    // Out of file descriptors or similar: give the system a moment rather
                    // than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

async fn serve_tcp(
    tcp: TcpStream,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    builder: auto::Builder<StopExec>,
) {
    let _ = tcp.set_nodelay(true);
    match acceptor {
        None => serve(tcp, shared, &builder).await,
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => serve(stream, shared, &builder).await,
            Err(e) => tracing::debug!(error = %e, "mock space: TLS handshake failed"),
        },
    }
}

/// Serves one connection until the client closes it, or a fault closes it.
async fn serve<I>(io: I, shared: Arc<Shared>, builder: &auto::Builder<StopExec>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let close = Arc::new(Notify::new());
    let (gone, gone_rx) = watch::channel(());
    let link = ConnLink::new(close.clone(), gone_rx);
    let service =
        service_fn(move |request| handlers::answer(shared.clone(), link.clone(), request));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "mock space: connection ended with an error");
            }
        }
        // Dropping the connection closes the socket with nothing more written.
        () = close.notified() => {}
    }
    drop(gone);
}
