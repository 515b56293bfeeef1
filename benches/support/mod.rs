//! What the benchmarks and `tests/alloc.rs` share: the no-op inner service, the request every
//! iteration builds, the hand-written designs the crate is compared with, and a poll loop
//! without a runtime.
//!
//! Included by path from both, so each uses only part of it.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header::AUTHORIZATION};
use http_body::Body;
use http_body_util::{Empty, Full};
use signalwire_auth::{Credentials, RefreshError, ReplayBody, TokenCache, TokenPair};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

pub const URI: &str = "https://example.signalwire.com/api/fabric/addresses";
pub const PROJECT_ID: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
pub const API_TOKEN: &str = "4tjCGnmAeQ0hwFmFDhwfgww880X2lsnuR60VMyasGR3hFpSyvu";
/// Size of the body in the "replay on, 1 KiB" cases.
pub const BODY_LEN: usize = 1024;
static BODY: [u8; BODY_LEN] = [b'x'; BODY_LEN];

/// A token shaped and sized like a real SAT (a compact JWE of about 700 bytes), so that the
/// hand-written designs copy as much per request as they would in production.
pub fn sat(tag: &str) -> String {
    // {"alg":"dir","enc":"A256GCM","typ":"SAT","ch":"puc.signalwire.com"}
    let header = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwidHlwIjoiU0FUIiwiY2giOiJwdWMuc2lnbmFsd2lyZS5jb20ifQ";
    let ciphertext: String = (0..560)
        .map(|i| {
            char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i % 64])
        })
        .collect();
    format!("{header}..{tag}-iv-0123456.{ciphertext}.tag-0123456789abcdef")
}

/// `Authorization: Bearer <token>`, marked sensitive: what the floor inserts.
pub fn bearer_value(token: &str) -> HeaderValue {
    let mut value = HeaderValue::try_from(format!("Bearer {token}")).expect("a valid header");
    value.set_sensitive(true);
    value
}

/// The floor: the request built, one header inserted by hand, sent to the no-op service.
#[inline]
pub fn floor<B>(request: Request<B>, value: &HeaderValue) -> Response<Empty<Bytes>>
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let mut request = request;
    request.headers_mut().insert(AUTHORIZATION, value.clone());
    send(&mut noop(), request)
}

pub fn credentials() -> Credentials {
    Credentials::new(PROJECT_ID, API_TOKEN).expect("the seed credentials are valid")
}

/// The request every iteration builds: `GET` with an empty body.
pub fn request() -> Request<Empty<Bytes>> {
    Request::get(URI)
        .body(Empty::new())
        .expect("a valid request")
}

/// The same request with a 1 KiB body held in static memory, so building it does not allocate.
pub fn request_1k() -> Request<Full<Bytes>> {
    Request::post(URI)
        .body(Full::new(Bytes::from_static(&BODY)))
        .expect("a valid request")
}

/// What an inner service does with a request; [`Inner`] turns it into a `Service` whose
/// future is `std::future::Ready`, so that only the middleware in front of it is measured.
pub trait Respond {
    fn respond<B: Body>(&mut self, request: Request<B>) -> Response<Empty<Bytes>>
    where
        B::Error: std::fmt::Debug;
}

/// A hand-written inner service, answering at once with what `R` says.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inner<R>(pub R);

impl<R: Respond, B: Body> Service<Request<B>> for Inner<R>
where
    B::Error: std::fmt::Debug,
{
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Empty<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.0.respond(request)))
    }
}

/// Does nothing with the request: the no-op inner service.
pub type Noop = Inner<Nothing>;
pub fn noop() -> Noop {
    Inner(Nothing)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Nothing;

impl Respond for Nothing {
    fn respond<B: Body>(&mut self, request: Request<B>) -> Response<Empty<Bytes>> {
        drop(request);
        Response::new(Empty::new())
    }
}

/// Reads the whole request body (ready at once) before answering, as a client sending it would.
pub type Drain = Inner<ReadBody>;
pub fn drain() -> Drain {
    Inner(ReadBody)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ReadBody;

impl Respond for ReadBody {
    fn respond<B: Body>(&mut self, request: Request<B>) -> Response<Empty<Bytes>>
    where
        B::Error: std::fmt::Debug,
    {
        let mut body = pin!(request.into_body());
        let mut cx = Context::from_waker(Waker::noop());
        while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
            drop(frame.expect("an in-memory body does not fail"));
        }
        Response::new(Empty::new())
    }
}

/// Answers 401 unless the request carries `accepted`, counting calls and refusals.
pub type Gate = Inner<Accept>;

#[derive(Clone, Debug)]
pub struct Accept {
    pub accepted: HeaderValue,
    pub calls: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
}

impl Accept {
    pub fn gate(accepted_token: &str) -> Gate {
        Inner(Self {
            accepted: HeaderValue::try_from(format!("Bearer {accepted_token}"))
                .expect("a valid header"),
            calls: Arc::default(),
            refused: Arc::default(),
        })
    }
}

impl Respond for Accept {
    fn respond<B: Body>(&mut self, request: Request<B>) -> Response<Empty<Bytes>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(Empty::new());
        if request.headers().get(AUTHORIZATION) != Some(&self.accepted) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            *response.status_mut() = StatusCode::UNAUTHORIZED;
        }
        response
    }
}

/// The variants measured, each in front of the no-op service.
pub mod variants {
    use signalwire_auth::{
        BasicAuth, BasicAuthLayer, BearerAuth, BearerAuthLayer, TokenCache, bearer::NoReplay,
    };
    use tower::Layer;
    use tower_http::auth::{AddAuthorization, AddAuthorizationLayer};

    use super::{
        API_TOKEN, NaiveStd, NaiveTokio, Noop, PROJECT_ID, WrapBody, bearer_value, credentials,
        noop,
    };

    /// tower-http's, with the value marked sensitive like ours.
    pub fn add_authorization_basic() -> AddAuthorization<Noop> {
        AddAuthorizationLayer::basic(PROJECT_ID, API_TOKEN)
            .as_sensitive(true)
            .layer(noop())
    }

    pub fn add_authorization_bearer(token: &str) -> AddAuthorization<Noop> {
        AddAuthorizationLayer::bearer(token)
            .as_sensitive(true)
            .layer(noop())
    }

    pub fn wrap_body_only(token: &str) -> WrapBody<Noop> {
        WrapBody {
            inner: noop(),
            value: bearer_value(token),
        }
    }

    pub fn basic_auth() -> BasicAuth<Noop> {
        BasicAuthLayer::new(credentials()).layer(noop())
    }

    pub fn bearer_replay_off(cache: &TokenCache) -> BearerAuth<Noop> {
        BearerAuthLayer::new(cache.clone())
            .replay_limit(0)
            .layer(noop())
    }

    /// Replay off in the type: the inner service gets the caller's request (no `ReplayBody`).
    pub fn bearer_no_replay(cache: &TokenCache) -> BearerAuth<Noop, NoReplay> {
        BearerAuthLayer::new(cache.clone())
            .without_replay()
            .layer(noop())
    }

    /// With the default replay limit (64 KiB).
    pub fn bearer_replay_on(cache: &TokenCache) -> BearerAuth<Noop> {
        BearerAuthLayer::new(cache.clone()).layer(noop())
    }

    pub fn bearer_fixed_token(token: &str) -> BearerAuth<Noop> {
        BearerAuthLayer::from_token(token)
            .expect("a valid token")
            .layer(noop())
    }

    pub fn naive_std_rwlock(token: &str) -> NaiveStd<Noop> {
        NaiveStd {
            inner: noop(),
            token: std::sync::RwLock::new(token.to_owned()).into(),
        }
    }

    pub fn naive_tokio_rwlock(token: &str) -> NaiveTokio<Noop> {
        NaiveTokio {
            inner: noop(),
            token: tokio::sync::RwLock::new(token.to_owned()).into(),
        }
    }
}

/// Polls a future once with a no-op waker; for futures that are ready at once (the hot path).
/// Cheaper and steadier than a runtime's `block_on`.
#[inline]
pub fn poll_now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a hot-path future was not ready at once"),
    }
}

/// `ready` + `call` + poll, with no runtime: one request through `service`.
#[inline]
pub fn send<S, R>(service: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let service = poll_now(service.ready()).expect("the service is ready");
    poll_now(service.call(request)).expect("the request succeeds")
}

/// `requests` requests built by `make`, split across `threads` threads, each with its own clone
/// of `service` (as each task of a client has); returns the wall time of the whole.
pub fn split<S, B>(service: &S, make: fn() -> Request<B>, threads: u64, requests: u64) -> Duration
where
    S: Service<Request<B>> + Clone + Send + Sync,
    S::Error: std::fmt::Debug,
{
    split_with(threads, requests, || {
        let mut service = service.clone();
        move || {
            std::hint::black_box(send(&mut service, make()));
        }
    })
}

/// `requests` calls split across `threads` threads, each calling the closure `worker` made
/// for it; returns the wall time of the whole.
pub fn split_with<W, F>(threads: u64, requests: u64, worker: W) -> Duration
where
    W: Fn() -> F + Sync,
    F: FnMut() + Send,
{
    let per_thread = requests / threads;
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let mut one = worker();
            scope.spawn(move || {
                for _ in 0..per_thread {
                    one();
                }
            });
        }
    });
    start.elapsed()
}

/// A cache holding a token valid for an hour, with a refresher that must never run; returns
/// the counter of refresher calls alongside.
pub fn valid_cache(token: &str) -> (TokenCache, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let pair =
        TokenPair::new(token, Instant::now(), Duration::from_secs(3600)).expect("a valid token");
    let counter = Arc::clone(&calls);
    let cache = TokenCache::new(pair, move |_old: TokenPair| {
        counter.fetch_add(1, Ordering::Relaxed);
        async {
            Err(RefreshError::terminal(
                "the benchmark token is never refreshed",
            ))
        }
    });
    (cache, calls)
}

/// A cache whose token expired the moment it was issued; its refresher counts its calls and
/// returns a token `next` valid for an hour.
pub fn expired_cache(old: &str, next: &str) -> (TokenCache, Arc<AtomicUsize>) {
    let pair = TokenPair::new(old, Instant::now(), Duration::ZERO).expect("a valid token");
    refreshing_cache(pair, next)
}

/// A cache holding `pair`, whose refresher counts its calls and returns `next`, valid an hour.
pub fn refreshing_cache(pair: TokenPair, next: &str) -> (TokenCache, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let next = next.to_owned();
    let cache = TokenCache::new(pair, move |_old: TokenPair| {
        counter.fetch_add(1, Ordering::Relaxed);
        let next = next.clone();
        async move {
            TokenPair::new(next, Instant::now(), Duration::from_secs(3600))
                .map_err(RefreshError::terminal)
        }
    });
    (cache, calls)
}

/// What the hand-written designs do per request: format the header, then parse it back.
#[inline]
fn naive_header(token: &str) -> HeaderValue {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).expect("a valid header");
    value.set_sensitive(true);
    value
}

/// The middleware people write by hand: the token in a `std::sync::RwLock<String>`, the
/// header formatted and parsed on every request.
#[derive(Clone, Debug)]
pub struct NaiveStd<S> {
    pub inner: S,
    pub token: Arc<std::sync::RwLock<String>>,
}

impl<S, B> Service<Request<B>> for NaiveStd<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let value = naive_header(&self.token.read().expect("not poisoned"));
        request.headers_mut().insert(AUTHORIZATION, value);
        self.inner.call(request)
    }
}

/// What any layer that hands its inner service a `ReplayBody` pays at least: the header
/// inserted and the body wrapped, nothing else. Tells the cost of `BearerAuth`'s body type
/// apart from the cost of its logic.
#[derive(Clone, Debug)]
pub struct WrapBody<S> {
    pub inner: S,
    pub value: HeaderValue,
}

impl<S, B> Service<Request<B>> for WrapBody<S>
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request
            .headers_mut()
            .insert(AUTHORIZATION, self.value.clone());
        self.inner.call(request.map(ReplayBody::new))
    }
}

/// The same with a `tokio::sync::RwLock<String>`: reading it is `async`, so the future is boxed,
/// as hand-written async middleware does.
#[derive(Clone, Debug)]
pub struct NaiveTokio<S> {
    pub inner: S,
    pub token: Arc<tokio::sync::RwLock<String>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for NaiveTokio<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let token = Arc::clone(&self.token);
        Box::pin(async move {
            let value = naive_header(&token.read().await);
            request.headers_mut().insert(AUTHORIZATION, value);
            inner.call(request).await
        })
    }
}

/// Short runs by default, so that `cargo bench` stays within a few minutes on two cores;
/// criterion's own defaults with `SW_BENCH_FULL=1`. Command-line flags (`--warm-up-time`,
/// `--measurement-time`, `--sample-size`) override either.
pub fn config() -> criterion::Criterion {
    if full() {
        criterion::Criterion::default()
    } else {
        criterion::Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
    }
}

/// Whether `SW_BENCH_FULL` asks for the full sweep.
pub fn full() -> bool {
    std::env::var_os("SW_BENCH_FULL").is_some_and(|v| v != "0")
}

/// An in-process Create Subscriber Token endpoint, for filling a pool without sockets: every
/// call answers 200 with a new pair of SAT-sized tokens, and is counted.
#[derive(Clone, Default)]
pub struct Mint(Arc<AtomicUsize>);

impl Mint {
    pub fn calls(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// A token client whose calls this endpoint answers.
    pub fn client(&self) -> signalwire_auth::TokenClient<Mint> {
        let space = signalwire_auth::Space::from_url("https://example.signalwire.com")
            .expect("a valid space");
        signalwire_auth::TokenClient::with_service(space, Some(credentials()), self.clone())
    }
}

impl Service<Request<Full<Bytes>>> for Mint {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "subscriber_id": format!("00000000-0000-4000-8000-{n:012}"),
            "token": sat(&format!("a{n}")),
            "refresh_token": sat(&format!("r{n}")),
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        ready(Ok(response))
    }
}
