//! `BasicAuthLayer` composed with tower's own middleware, over a real client and server, and its
//! service contract checked against `tower-test`'s strict mock.

mod common;

use std::{
    convert::Infallible,
    future::{Ready, ready},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{SEED_HEADER, TestServer};
use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use signalwire_auth::{BasicAuth, BasicAuthLayer, Error};
use tower::{
    BoxError, Service, ServiceBuilder, ServiceExt, buffer::BufferLayer,
    limit::ConcurrencyLimitLayer, retry::RetryLayer, timeout::TimeoutLayer,
};
use tower_test::mock;

/// Retries a request once when it gets 503, cloning the request (a `Full` body clones cheaply).
#[derive(Clone, Debug)]
struct RetryOnce503 {
    retries_left: usize,
    retried: Arc<AtomicUsize>,
}

impl RetryOnce503 {
    fn new(retried: Arc<AtomicUsize>) -> Self {
        Self {
            retries_left: 1,
            retried,
        }
    }
}

impl<E> tower::retry::Policy<Request<Full<Bytes>>, Response<Incoming>, E> for RetryOnce503 {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<Incoming>, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response)
                if response.status() == StatusCode::SERVICE_UNAVAILABLE
                    && self.retries_left > 0 =>
            {
                self.retries_left -= 1;
                self.retried.fetch_add(1, Ordering::SeqCst);
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

/// Buffer → concurrency limit → timeout → retry → Basic auth → hyper-util client.
///
/// Auth sits inside the retry, so every attempt, first or retried, goes through it.
fn stack(
    retried: Arc<AtomicUsize>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Incoming>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    ServiceBuilder::new()
        .layer(BufferLayer::new(16))
        .layer(ConcurrencyLimitLayer::new(2))
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .layer(RetryLayer::new(RetryOnce503::new(retried)))
        .layer(BasicAuthLayer::new(common::seed_credentials()))
        .service(common::http_client())
}

fn seed() -> Option<String> {
    Some(SEED_HEADER.to_owned())
}

#[tokio::test]
async fn a_retried_request_carries_the_header_on_both_attempts() {
    // The first request to reach the server gets 503, the rest 200.
    let server = TestServer::start(|seen| match seen.index {
        0 => common::respond(503, "busy"),
        _ => common::respond(200, "ok"),
    })
    .await;
    let retried = Arc::new(AtomicUsize::new(0));
    let client = stack(Arc::clone(&retried));

    let req = Request::post(server.url("/api/fabric/subscribers/tokens"))
        .body(Full::from(r#"{"reference":"alice"}"#))
        .unwrap();
    let answer = common::fetch(&client, req).await;
    assert_eq!(answer, (StatusCode::OK, "ok".to_owned()));

    assert_eq!(retried.load(Ordering::SeqCst), 1);
    assert_eq!(server.authorizations(), [seed(), seed()]);
    for attempt in server.seen() {
        assert_eq!(attempt.target, "/api/fabric/subscribers/tokens");
        assert_eq!(&attempt.body[..], br#"{"reference":"alice"}"#);
    }
}

#[tokio::test]
async fn a_second_503_goes_back_to_the_caller() {
    let server = TestServer::start(|_| common::respond(503, "busy")).await;
    let retried = Arc::new(AtomicUsize::new(0));
    let client = stack(Arc::clone(&retried));

    let answer = common::fetch(&client, common::get(server.url("/api"))).await;
    assert_eq!(answer.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retried.load(Ordering::SeqCst), 1);
    assert_eq!(server.authorizations(), [seed(), seed()]);
}

#[tokio::test]
async fn concurrent_requests_through_the_buffer_all_carry_the_header() {
    let server = TestServer::ok().await;
    let client = stack(Arc::new(AtomicUsize::new(0)));
    let uris: Vec<_> = (0..8)
        .map(|i| server.url(&format!("/api/fabric/addresses?page={i}")))
        .collect();

    let mut tasks = tokio::task::JoinSet::new();
    for uri in &uris {
        let client = client.clone();
        let req = common::get(uri);
        tasks.spawn(async move { common::fetch(&client, req).await });
    }
    while let Some(answer) = tasks.join_next().await {
        assert_eq!(answer.unwrap(), (StatusCode::OK, "ok".to_owned()));
    }

    assert_eq!(server.authorizations(), vec![seed(); uris.len()]);
    let mut received: Vec<_> = server
        .seen()
        .into_iter()
        .map(|s| server.url(&s.target))
        .collect();
    received.sort();
    let mut sent = uris;
    sent.sort();
    assert_eq!(received, sent);
}

#[tokio::test]
async fn a_refused_request_keeps_its_type_through_the_whole_stack() {
    let server = TestServer::ok().await;
    let err = stack(Arc::new(AtomicUsize::new(0)))
        .oneshot(common::get("http://example.com/api"))
        .await
        .unwrap_err();
    common::assert_refused(&err);
    assert!(server.seen().is_empty());
}

// ---- the service contract, against tower-test's strict mock ----

type MockHttp = mock::Mock<Request<()>, Response<()>>;
type MockHandle = mock::Handle<Request<()>, Response<()>>;

/// `BasicAuth` over a mock that panics when `call` comes without a ready `poll_ready`.
fn basic_auth_over_mock() -> (mock::Spawn<BasicAuth<MockHttp>>, MockHandle) {
    mock::spawn_layer(BasicAuthLayer::new(common::seed_credentials()))
}

fn api_request() -> Request<()> {
    Request::get("https://example.signalwire.com/api")
        .body(())
        .unwrap()
}

/// The timeout wraps the auth layer: a stalled inner call times out, on tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn the_timeout_outside_basic_auth_fires_when_the_inner_service_stalls() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<()>>();
    handle.allow(1);
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .layer(BasicAuthLayer::new(common::seed_credentials()))
        .service(inner);

    let call = tokio::spawn(service.oneshot(api_request()));
    // The request reached the mock with the header; it is never answered.
    let (req, _pending_response) = handle.next_request().await.unwrap();
    assert_eq!(req.headers()[AUTHORIZATION], SEED_HEADER);

    let err = call.await.unwrap().unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err:?}");
}

#[tokio::test]
async fn poll_ready_is_driven_before_call_and_pending_readiness_propagates() {
    let (mut service, mut handle) = basic_auth_over_mock();

    // The inner mock has no capacity: BasicAuth must report Pending, not Ready.
    handle.allow(0);
    assert!(service.poll_ready().is_pending());
    assert!(!service.is_woken());

    // Capacity arrives: the waker BasicAuth passed down is woken and readiness goes through.
    handle.allow(1);
    assert!(service.is_woken());
    assert!(service.poll_ready().is_ready());

    // `call` after that ready poll must reach the mock, which panics on a call without one.
    let response = service.call(api_request());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.headers()[AUTHORIZATION], SEED_HEADER);
    send.send_response(Response::new(()));
    response.await.unwrap();

    // The mock's capacity was used up by that one call.
    assert!(service.poll_ready().is_pending());
}

#[tokio::test]
async fn inner_readiness_errors_propagate_as_box_errors() {
    let (mut service, mut handle) = basic_auth_over_mock();
    handle.send_error("inner service closed");
    let err: BoxError = match service.poll_ready() {
        std::task::Poll::Ready(Err(err)) => err,
        other => panic!("expected a readiness error, got {other:?}"),
    };
    assert_eq!(err.to_string(), "inner service closed");
    assert!(
        err.downcast_ref::<Error>().is_none(),
        "the inner error is passed through as is"
    );
}

#[tokio::test]
async fn inner_response_errors_propagate_as_box_errors() {
    let (mut service, mut handle) = basic_auth_over_mock();
    handle.allow(1);
    assert!(service.poll_ready().is_ready());
    let response = service.call(api_request());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    let err = response.await.unwrap_err();
    let io = err
        .downcast_ref::<std::io::Error>()
        .expect("the inner io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn a_refused_request_never_reaches_the_inner_mock() {
    let (mut service, mut handle) = basic_auth_over_mock();
    handle.allow(1);
    assert!(service.poll_ready().is_ready());
    let err = service
        .call(Request::get("http://example.com/api").body(()).unwrap())
        .await
        .unwrap_err();
    common::assert_refused(&err);
    assert!(
        handle.poll_request().is_pending(),
        "the refused request reached the mock"
    );
}

// ---- static guarantees ----

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_clone<T: Clone>() {}
fn assert_unpin<T: Unpin>() {}

type Http = Client<HttpConnector, Full<Bytes>>;
type EchoFn = tower::util::ServiceFn<fn(Request<()>) -> Ready<Result<Response<()>, Infallible>>>;
type FutureOf<S, B> = <S as Service<Request<B>>>::Future;

#[test]
fn layer_service_and_future_are_send_sync_and_clone_where_they_should_be() {
    assert_send::<BasicAuthLayer>();
    assert_sync::<BasicAuthLayer>();
    assert_clone::<BasicAuthLayer>();

    assert_send::<BasicAuth<Http>>();
    assert_sync::<BasicAuth<Http>>();
    assert_clone::<BasicAuth<Http>>();
    assert_send::<BasicAuth<EchoFn>>();
    assert_sync::<BasicAuth<EchoFn>>();
    assert_clone::<BasicAuth<EchoFn>>();

    // The future is Send when the inner one is (hyper's is Send, not Sync) ...
    assert_send::<FutureOf<BasicAuth<Http>, Full<Bytes>>>();
    assert_send::<FutureOf<BasicAuth<MockHttp>, ()>>();
    // ... and Send + Sync when the inner one is both: BasicAuth adds nothing that is not.
    assert_send::<FutureOf<BasicAuth<EchoFn>, ()>>();
    assert_sync::<FutureOf<BasicAuth<EchoFn>, ()>>();
    // It is a plain state machine, movable when the inner future is.
    assert_unpin::<FutureOf<BasicAuth<EchoFn>, ()>>();
}
