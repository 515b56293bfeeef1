//! Helpers shared by the token cache and bearer test binaries: scripted refreshers, an
//! in-process upstream that records what it receives, gates, and bodies of unknown length.
//!
//! Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    future::Future,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use signalwire_auth::{
    BearerAuth, BearerAuthLayer, RefreshError, ReplayBody, TokenCache, TokenPair,
};
use tokio::{sync::Notify, task::JoinSet, time::Instant};
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

impl<B> Service<Request<ReplayBody<B>>> for Upstream
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReplayBody<B>>) -> Self::Future {
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
pub async fn send_batch(
    service: &BearerAuth<Upstream>,
    ids: std::ops::Range<usize>,
) -> JoinSet<Outcome> {
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
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
