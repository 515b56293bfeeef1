//! Helpers shared by the integration tests: the seed credentials, a real hyper server on
//! 127.0.0.1 that records what it receives, hyper-util clients, and an in-memory echo service.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header::AUTHORIZATION};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use signalwire_auth::{Credentials, Error, Space};
use tokio::{net::TcpListener, task::JoinHandle};
use tower::{BoxError, Service, ServiceExt};

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
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
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
pub struct Seen {
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

type Answer = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
type Handler = dyn Fn(Seen) -> Answer + Send + Sync;

/// A hyper server (HTTP/1.1 and HTTP/2) on 127.0.0.1, on a port of its own, that records every
/// request and answers with a handler. Stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server that answers every request with `handler(&seen)`.
    pub async fn start<H>(handler: H) -> Self
    where
        H: Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static,
    {
        Self::start_async(move |seen| ready(handler(&seen))).await
    }

    /// Starts a server that answers every request with what `handler(seen)` resolves to, so an
    /// answer can be held back.
    pub async fn start_async<H, F>(handler: H) -> Self
    where
        H: Fn(Seen) -> F + Send + Sync + 'static,
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
        let handler: Arc<Handler> = Arc::new(move |seen| Box::pin(handler(seen)) as Answer);
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
    pub fn seen(&self) -> Vec<Seen> {
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
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    handler: Arc<Handler>,
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
                    let record = Seen {
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
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future was expected to be ready at once"),
    }
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
