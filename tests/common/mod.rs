//! Helpers shared by every integration test binary:
//!
//! - the seed credentials of DESIGN.md, and [`TestServer`], a real hyper server on 127.0.0.1
//!   that records what it receives ([`Received`]), with hyper-util clients to reach it;
//! - for the token cache and bearer tests: scripted refreshers, [`Upstream`], an in-process
//!   upstream that records what it receives ([`Seen`]), gates, and [`Streaming`], a body of
//!   unknown length;
//! - [`Echo`], an in-memory service, and [`now`] / [`call_now`] to drive ready futures
//!   without a runtime.
//!
//! - [`store`]: an in-memory refresh chain and a store that fails on demand; [`redis`]: a
//!   real `redis-server` per test.
//!
//! Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod redis;
pub mod store;

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    future::{Future, Ready, ready},
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header::AUTHORIZATION};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use signalwire_auth::{
    BearerAuth, BearerAuthLayer, Credentials, Error, RefreshError, Space, TokenCache, TokenPair,
};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle, task::JoinSet, time::Instant};
use tower::{BoxError, Layer, Service, ServiceExt};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pub const HOUR: Duration = Duration::from_secs(60 * 60);
pub const URI: &str = "https://example.signalwire.com/api/fabric/addresses";
pub const REQUEST_ID: &str = "x-request-id";

/// The access token of the `n`th pair: the first is `access-0`, refresh `k` returns `access-k`.
pub fn access(n: usize) -> String {
    format!("access-{n}")
}

/// The refresh token issued with [`access`]`(n)`.
pub fn refresh(n: usize) -> String {
    format!("refresh-{n}")
}

/// The `n`th pair, issued now, with a refresh token.
pub fn pair(n: usize, lifetime: Duration) -> TokenPair {
    TokenPair::new(access(n), Instant::now(), lifetime)
        .unwrap()
        .with_refresh_token(refresh(n), lifetime + Duration::from_secs(5 * 60))
        .unwrap()
}

/// A POST to the space carrying `x-request-id: id` and a small body.
pub fn request(id: usize) -> Request<Full<Bytes>> {
    Request::post(URI)
        .header(REQUEST_ID, id)
        .body(Full::new(Bytes::from(format!("{{\"request\":{id}}}"))))
        .unwrap()
}

pub fn response(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}

/// Lets every task that can run, run, then moves the paused clock on by 1 ms: with paused
/// time the clock only auto-advances once the runtime is idle. Only for paused-time tests.
pub async fn run_until_idle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Gives other tasks `rounds` turns without moving the clock.
pub async fn yields(rounds: usize) {
    for _ in 0..rounds {
        tokio::task::yield_now().await;
    }
}

/// Yields until `done()` holds, without moving the clock; panics if it never does.
pub async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1_000_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("gave up waiting until {what}");
}

/// Polls `future` once: `Some` if it finished at once, `None` if it would have waited (the
/// future is then dropped).
pub fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let future = pin!(future);
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Unwraps the crate's error from a service error.
pub fn auth_error(error: &BoxError) -> &signalwire_auth::Error {
    error
        .downcast_ref::<signalwire_auth::Error>()
        .unwrap_or_else(|| panic!("not a signalwire_auth::Error: {error:?}"))
}

/// A latch built on `Notify`: closed until `open`, then open for ever.
#[derive(Clone, Default)]
pub struct Gate(Arc<(AtomicBool, Notify)>);

impl Gate {
    pub fn opened() -> Self {
        let gate = Self::default();
        gate.open();
        gate
    }

    pub fn open(&self) {
        self.0.0.store(true, Ordering::SeqCst);
        self.0.1.notify_waiters();
    }

    pub fn is_open(&self) -> bool {
        self.0.0.load(Ordering::SeqCst)
    }

    pub async fn wait(&self) {
        loop {
            let mut notified = pin!(self.0.1.notified());
            // Registered before the flag is read, so an `open` in between is not missed.
            notified.as_mut().enable();
            if self.is_open() {
                return;
            }
            notified.await;
        }
    }
}

/// What the scripted refresher does on its next calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Returns pair `n` for call `n`.
    Succeed,
    /// Fails with a transient error naming the call.
    Transient,
    /// Fails with a terminal error naming the call.
    Terminal,
    /// Never returns.
    Hang,
}

/// A refresher to script: counts its calls, records the refresh token it was given, waits for
/// its gate (open by default) and then does what `mode` says.
#[derive(Clone)]
pub struct Refresher {
    calls: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    given: Arc<Mutex<Vec<Option<String>>>>,
    mode: Arc<Mutex<Mode>>,
    pub gate: Gate,
    lifetime: Duration,
}

impl Refresher {
    pub fn new(mode: Mode) -> Self {
        Self {
            calls: Arc::default(),
            finished: Arc::default(),
            given: Arc::default(),
            mode: Arc::new(Mutex::new(mode)),
            gate: Gate::opened(),
            lifetime: HOUR,
        }
    }

    /// Calls wait until `gate` opens.
    pub fn gated(mode: Mode) -> (Self, Gate) {
        let gate = Gate::default();
        let refresher = Self {
            gate: gate.clone(),
            ..Self::new(mode)
        };
        (refresher, gate)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Calls started.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls that got past the gate and returned.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// The refresh token of the pair each call was given.
    pub fn given(&self) -> Vec<Option<String>> {
        self.given.lock().unwrap().clone()
    }

    /// The refresher as the closure form of `Refresh`: `Fn(TokenPair) -> impl Future`.
    pub fn closure(
        &self,
    ) -> impl Fn(TokenPair) -> BoxFuture<Result<TokenPair, RefreshError>> + Send + Sync + 'static
    {
        let this = self.clone();
        move |current: TokenPair| {
            let this = this.clone();
            Box::pin(async move {
                let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                this.given
                    .lock()
                    .unwrap()
                    .push(current.refresh_token().map(str::to_owned));
                this.gate.wait().await;
                let mode = *this.mode.lock().unwrap();
                let result = match mode {
                    Mode::Succeed => Ok(pair(n, this.lifetime)),
                    Mode::Transient => Err(RefreshError::transient(format!(
                        "refresh endpoint unavailable (call {n})"
                    ))),
                    Mode::Terminal => Err(RefreshError::terminal(format!(
                        "refresh token expired (call {n})"
                    ))),
                    Mode::Hang => std::future::pending().await,
                };
                this.finished.fetch_add(1, Ordering::SeqCst);
                result
            })
        }
    }
}

/// What the upstream received in one call.
#[derive(Clone, Debug)]
pub struct Seen {
    pub id: String,
    /// The bearer token, without `Bearer `.
    pub token: Option<String>,
    pub sensitive: bool,
    pub body: Bytes,
}

type Handler = Arc<dyn Fn(Seen) -> BoxFuture<Response<Full<Bytes>>> + Send + Sync>;

/// An in-process upstream for `BearerAuth`: reads each request's body in full, records it, and
/// answers with its handler.
#[derive(Clone)]
pub struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    handler: Handler,
}

impl Upstream {
    pub fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        Self {
            seen: Arc::default(),
            handler: Arc::new(move |seen| Box::pin(handler(seen))),
        }
    }

    /// 200 for the tokens `accept` likes, 401 for the others.
    pub fn accepting(accept: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self::new(move |seen: Seen| {
            let ok = seen.token.as_deref().is_some_and(&accept);
            std::future::ready(response(if ok {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            }))
        })
    }

    /// Like [`accepting`](Self::accepting), but the first `count` calls are held until all
    /// of them have arrived: a batch is then known to be in flight at once.
    pub fn holding_first(
        count: usize,
        accept: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        let arrived = Arc::new(AtomicUsize::new(0));
        let all_in = Gate::default();
        let accept = Arc::new(accept);
        Self::new(move |seen: Seen| {
            let arrived = Arc::clone(&arrived);
            let all_in = all_in.clone();
            let accept = Arc::clone(&accept);
            async move {
                let n = arrived.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= count {
                    if n == count {
                        all_in.open();
                    }
                    all_in.wait().await;
                }
                let ok = seen.token.as_deref().is_some_and(|t| accept(t));
                response(if ok {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                })
            }
        })
    }

    /// Every call so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The bearer token of call `index` (0-based).
    pub fn token(&self, index: usize) -> Option<String> {
        self.seen.lock().unwrap()[index].token.clone()
    }

    /// The bearer token of the last call.
    pub fn last_token(&self) -> Option<String> {
        self.seen.lock().unwrap().last()?.token.clone()
    }

    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// How many times each request id was sent.
    pub fn sends_per_id(&self) -> HashMap<String, usize> {
        let mut sends = HashMap::new();
        for seen in self.seen.lock().unwrap().iter() {
            *sends.entry(seen.id.clone()).or_default() += 1;
        }
        sends
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

/// Any body: a `ReplayBody` from a layer with replay, the caller's own from one without.
impl<B> Service<Request<B>> for Upstream
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let seen = Arc::clone(&self.seen);
        let handler = Arc::clone(&self.handler);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let header = parts.headers.get(AUTHORIZATION);
            let token = header
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            let sensitive = header.is_some_and(|v| v.is_sensitive());
            let id = parts
                .headers
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = body.collect().await.map_err(Into::into)?.to_bytes();
            let call = Seen {
                id,
                token,
                sensitive,
                body,
            };
            seen.lock().unwrap().push(call.clone());
            Ok(handler(call).await)
        })
    }
}

/// A body of unknown length, like a streaming upload: one frame per poll, no size hint.
pub struct Streaming(VecDeque<Bytes>);

impl Streaming {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        Self(chunks.into_iter().collect())
    }
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// Wraps `future` so that `polled` counts it once its first poll has returned: once every
/// request of a batch is counted, each has either finished or is queued where it waits.
pub async fn count_first_poll<F: Future>(polled: Arc<AtomicUsize>, future: F) -> F::Output {
    let mut future = pin!(future);
    let mut first = true;
    std::future::poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if std::mem::take(&mut first) {
            polled.fetch_add(1, Ordering::SeqCst);
        }
        poll
    })
    .await
}

pub type Outcome = Result<Response<Full<Bytes>>, BoxError>;

/// `BearerAuth` over `upstream` with the tokens of `cache` and default settings.
pub fn client(cache: &TokenCache, upstream: &Upstream) -> BearerAuth<Upstream> {
    BearerAuthLayer::new(cache.clone()).layer(upstream.clone())
}

/// Spawns one request per id and returns once each has been polled, so every one of them is
/// under way (sent, or queued behind a refresh).
pub async fn send_batch<S>(service: &S, ids: std::ops::Range<usize>) -> JoinSet<Outcome>
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError>,
    S: Clone + Send + 'static,
    S::Future: Send,
{
    let polled = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for id in ids.clone() {
        let call = service.clone().oneshot(request(id));
        tasks.spawn(count_first_poll(Arc::clone(&polled), call));
    }
    until("every request of the batch is under way", || {
        polled.load(Ordering::SeqCst) == ids.len()
    })
    .await;
    tasks
}

/// Every outcome of a batch; panics if a task panicked.
pub async fn join_batch(mut tasks: JoinSet<Outcome>) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.expect("request task panicked"));
    }
    outcomes
}

// The seed credentials and a real server on loopback.

/// The Project ID of the seed vector in DESIGN.md.
pub const PROJECT_ID: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
/// The API token of the seed vector.
pub const API_TOKEN: &str = "4tjCGnmAeQ0hwFmFDhwfgww880X2lsnuR60VMyasGR3hFpSyvu";
/// The header the seed credentials must produce, byte for byte.
pub const SEED_HEADER: &str = "Basic YTFiMmMzZDQtZTVmNi03ODkwLWFiY2QtZWYxMjM0NTY3ODkwOjR0akNHbm1BZVEwaHdGbUZEaHdmZ3d3ODgwWDJsc251UjYwVk15YXNHUjNoRnBTeXZ1";

pub fn seed_credentials() -> Credentials {
    Credentials::new(PROJECT_ID, API_TOKEN).expect("the seed credentials are valid")
}

/// hyper-util's pooled legacy client over plain TCP, HTTP/1.1.
pub fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The same client speaking HTTP/2 with prior knowledge: one multiplexed connection per origin,
/// shared as soon as it is up, so connection reuse is deterministic.
pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A GET with an empty body.
pub fn get(uri: impl AsRef<str>) -> Request<Full<Bytes>> {
    Request::get(uri.as_ref())
        .body(Full::default())
        .expect("test URIs are valid")
}

/// Reads a whole response body as UTF-8.
pub async fn body_text(response: Response<Incoming>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the test server sends a complete body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("the test server answers UTF-8")
}

/// Sends `req` through a clone of `service`, which must answer, and reads the whole answer.
pub async fn fetch<S>(service: &S, req: Request<Full<Bytes>>) -> (StatusCode, String)
where
    S: Service<Request<Full<Bytes>>, Response = Response<Incoming>> + Clone,
    S::Error: std::fmt::Debug,
{
    let response = service
        .clone()
        .oneshot(req)
        .await
        .expect("the request gets an answer");
    let status = response.status();
    (status, body_text(response).await)
}

/// Asserts that `err` is this crate's error for a request the transport rule refused.
#[track_caller]
pub fn assert_refused(err: &BoxError) {
    let typed = err
        .downcast_ref::<Error>()
        .unwrap_or_else(|| panic!("not a signalwire_auth::Error: {err:?}"));
    assert!(typed.is_refused(), "{typed:?}");
}

/// A response with `status` and a small body.
pub fn respond(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::from_u16(status).expect("test statuses are valid");
    response
}

/// A redirect with `status` to `location`.
pub fn redirect(status: u16, location: &str) -> Response<Full<Bytes>> {
    let mut response = respond(status, "");
    response.headers_mut().insert(
        http::header::LOCATION,
        HeaderValue::from_str(location).expect("test locations are valid"),
    );
    response
}

/// One request as the test server received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Position of this request among all the server received, from 0.
    pub index: usize,
    pub method: http::Method,
    /// Path and query.
    pub target: String,
    pub version: Version,
    /// The `Host` header (HTTP/1.1) or the `:authority` (HTTP/2).
    pub host: Option<String>,
    pub authorization: Option<HeaderValue>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
}

type ServerAnswer = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
type ServerHandler = dyn Fn(Received) -> ServerAnswer + Send + Sync;

/// A hyper server (HTTP/1.1 and HTTP/2) on 127.0.0.1, on a port of its own, that records every
/// request and answers with a handler. Stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server that answers every request with `handler(&seen)`.
    pub async fn start<H>(handler: H) -> Self
    where
        H: Fn(&Received) -> Response<Full<Bytes>> + Send + Sync + 'static,
    {
        Self::start_async(move |seen| ready(handler(&seen))).await
    }

    /// Starts a server that answers every request with what `handler(seen)` resolves to, so an
    /// answer can be held back.
    pub async fn start_async<H, F>(handler: H) -> Self
    where
        H: Fn(Received) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<ServerHandler> =
            Arc::new(move |seen| Box::pin(handler(seen)) as ServerAnswer);
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&seen),
            Arc::clone(&connections),
            handler,
        ));
        Self {
            addr,
            seen,
            connections,
            accept,
        }
    }

    /// Starts a server that answers every request `200 ok`.
    pub async fn ok() -> Self {
        Self::start(|_| respond(200, "ok")).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server as a [`Space`] (plain http is allowed because it is loopback).
    pub fn space(&self) -> Space {
        Space::from_url(&self.url("")).expect("a loopback URL is a valid space")
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Received> {
        self.seen.lock().expect("not poisoned").clone()
    }

    /// The `Authorization` header of every request received so far, as text.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.seen()
            .into_iter()
            .map(|seen| {
                seen.authorization
                    .map(|value| value.to_str().expect("ASCII header").to_owned())
            })
            .collect()
    }

    /// How many TCP connections the server accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    seen: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    handler: Arc<ServerHandler>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let seen = Arc::clone(&seen);
        let handler = Arc::clone(&handler);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let seen = Arc::clone(&seen);
            let handler = Arc::clone(&handler);
            async move {
                let (parts, body) = req.into_parts();
                // Read the body so the connection stays usable for the next request.
                let body = body.collect().await?.to_bytes();
                let record = {
                    let mut log = seen.lock().expect("not poisoned");
                    let record = Received {
                        index: log.len(),
                        method: parts.method,
                        target: parts
                            .uri
                            .path_and_query()
                            .map_or_else(|| "/".to_owned(), ToString::to_string),
                        version: parts.version,
                        host: parts
                            .headers
                            .get(http::header::HOST)
                            .and_then(|host| host.to_str().ok())
                            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
                            .map(str::to_owned),
                        authorization: parts.headers.get(AUTHORIZATION).cloned(),
                        headers: parts.headers,
                        body,
                        peer,
                    };
                    log.push(record.clone());
                    record
                };
                Ok::<_, hyper::Error>(handler(record).await)
            }
        });
        tokio::spawn(async move {
            // A client that goes away mid-request is not the server's failure.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An in-memory service that counts its calls and answers with the `Authorization` header it
/// was given. Its futures are ready at once, so [`now`] can drive it without a runtime.
#[derive(Clone, Debug, Default)]
pub struct Echo {
    calls: Arc<AtomicUsize>,
}

impl Echo {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<B> Service<Request<B>> for Echo {
    type Response = Response<Option<HeaderValue>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ready(Ok(Response::new(req.headers().get(AUTHORIZATION).cloned())))
    }
}

/// Polls a future that must already be complete (a refusal, or a call to [`Echo`]) once.
pub fn now<F: Future>(future: F) -> F::Output {
    now_or_never(future).expect("the future was expected to be ready at once")
}

/// Calls `service` once with `req`, through `poll_ready`, with no runtime: for services whose
/// readiness and futures are immediate.
pub fn call_now<S, R>(service: &mut S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    now(std::future::poll_fn(|cx| service.poll_ready(cx)))?;
    now(service.call(req))
}
/// Everything a `tracing` subscriber writes (`.with_writer(move || captured.clone())`), shared
/// with the test that looks for secrets in it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures every `tracing` event and span (trace level) on this thread until the guard
    /// is dropped: run the test on a current-thread runtime so every task's events land here.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // Callsites first hit under another test's subscriber cached their interest.
        tracing::callsite::rebuild_interest_cache();
        (logs, guard)
    }

    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Moving the clock across real sockets.

/// Moves the clock by `by` with nothing in flight, then lets the timers that came due fire (as
/// they would have, one by one, had the time really passed).
pub async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Waits (on the running clock) until no refresh of `cache` is in flight.
pub async fn settle(cache: &TokenCache) {
    // A refresh started in the background counts once its task has run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    for _ in 0..5_000 {
        let stats = cache.stats();
        if stats.attempts() == stats.refreshes() + stats.failures() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("a refresh never finished");
}

/// `Display`, `Debug` and the whole `source` chain of an error.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error} / {error:?}");
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(&format!(" / {cause} / {cause:?}"));
        next = cause.source();
    }
    text
}
