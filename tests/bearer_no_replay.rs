//! `BearerAuthLayer::without_replay`: the caller's request goes to the inner service as it was
//! built (no `ReplayBody`), with the same refresh rules as the layer with replay, and a 401
//! comes back marked `ReplaySkipped` after starting one refresh.

mod common;

use std::{convert::Infallible, marker::PhantomData, time::Duration};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use signalwire_auth::{
    BearerAuth, BearerAuthLayer, MockSpace, ReplaySkipped, Subscriber, SubscriberRefresher,
    TokenCache, TokenPool,
    bearer::{NoReplay, NoReplayFuture},
    mock::MockEndpoint,
};
use tower::{BoxError, Layer, Service, ServiceExt};

fn plain(cache: &TokenCache, upstream: &Upstream) -> BearerAuth<Upstream, NoReplay> {
    BearerAuthLayer::new(cache.clone())
        .without_replay()
        .layer(upstream.clone())
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_gets_the_callers_own_request_with_the_token() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    // The inner service names the caller's body type: no `ReplayBody` in between.
    let inner = tower::service_fn(|request: Request<Full<Bytes>>| async move {
        let token = request.headers()[http::header::AUTHORIZATION].clone();
        let body = request.into_body().collect().await?.to_bytes();
        let mut response = response(StatusCode::OK);
        response.headers_mut().insert("x-token", token);
        *response.body_mut() = Full::new(body);
        Ok::<_, BoxError>(response)
    });
    let service = BearerAuthLayer::new(cache).without_replay().layer(inner);

    let request = Request::post(URI).body(Full::from("{\"a\":1}")).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let token = &response.headers()["x-token"];
    assert_eq!(token, &format!("Bearer {}", access(0)));
    assert!(token.is_sensitive());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"{\"a\":1}");
    assert_eq!(refresher.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_401_comes_back_marked_and_its_one_refresh_serves_the_next_request() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::accepting(|token| token != access(0));
    let service = plain(&cache, &upstream);

    let response = service.clone().oneshot(request(0)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.extensions().get::<ReplaySkipped>().is_some());
    assert_eq!(upstream.calls(), 1, "not sent twice");
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1);
    assert_eq!(refresher.given(), [Some(refresh(0))]);

    let response = service.oneshot(request(1)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.token(1), Some(access(1)));
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_401s_in_flight_cost_one_refresh_and_no_replay() {
    const N: usize = 10_000;
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::holding_first(N, |token| token == access(1));
    let service = plain(&cache, &upstream);

    let outcomes = join_batch(send_batch(&service, 0..N).await).await;
    for outcome in &outcomes {
        let response = outcome.as_ref().unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.extensions().get::<ReplaySkipped>().is_some());
    }
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1);
    assert_eq!(cache.stats().refreshes(), 1);
    assert_eq!(upstream.calls(), N);
    assert!(upstream.sends_per_id().values().all(|&n| n == 1));
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_on_an_expired_token_wait_for_one_refresh() {
    const N: usize = 10_000;
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::accepting(|token| token == access(1));
    let service = plain(&cache, &upstream);
    tokio::time::advance(HOUR + Duration::from_secs(1)).await;

    let tasks = send_batch(&service, 0..N).await;
    assert_eq!(
        upstream.calls(),
        0,
        "nothing goes out with the expired token"
    );
    gate.open();
    for outcome in join_batch(tasks).await {
        assert_eq!(outcome.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(refresher.calls(), 1);
    assert_eq!(upstream.calls(), N);
    assert!(upstream.seen().iter().all(|s| s.token == Some(access(1))));
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_fails_fails_the_waiting_request_with_a_typed_error() {
    let refresher = Refresher::new(Mode::Terminal);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::accepting(|_| true);
    let service = plain(&cache, &upstream);
    tokio::time::advance(HOUR + Duration::from_secs(1)).await;

    let error = service.clone().oneshot(request(0)).await.unwrap_err();
    assert!(auth_error(&error).is_reauthentication_needed());
    let error = service.oneshot(request(1)).await.unwrap_err();
    assert!(auth_error(&error).is_reauthentication_needed());
    assert_eq!(refresher.calls(), 1, "a broken chain is not retried");
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn a_fixed_token_gets_its_401_back_unmarked_and_plain_http_is_refused() {
    let upstream = Upstream::accepting(|_| false);
    let service = BearerAuthLayer::from_token("guest")
        .unwrap()
        .without_replay()
        .layer(upstream.clone());

    let response = service.clone().oneshot(request(0)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.extensions().get::<ReplaySkipped>().is_none());
    assert_eq!(upstream.last_token().as_deref(), Some("guest"));

    let request = Request::get("http://example.signalwire.com/api/fabric/addresses")
        .body(Full::<Bytes>::default())
        .unwrap();
    let error = service.oneshot(request).await.unwrap_err();
    assert_refused(&error);
    assert_eq!(upstream.calls(), 1, "the refused request was not sent");
}

type Mocked = tower_test::mock::Mock<Request<Full<Bytes>>, Response<Full<Bytes>>>;

#[tokio::test(start_paused = true)]
async fn sends_and_delayed_sends_each_go_through_a_ready_service() {
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let (mock, mut handle) = tower_test::mock::pair();
    let mut service: BearerAuth<Mocked, NoReplay> =
        BearerAuthLayer::new(cache).without_replay().layer(mock);

    // The inner service's readiness is the layer's; the mock panics on a call without it.
    handle.allow(0);
    assert!(now_or_never(std::future::poll_fn(|cx| service.poll_ready(cx))).is_none());
    handle.allow(1);
    service.ready().await.unwrap();
    let now = tokio::spawn(service.call(request(0)));
    let (sent, reply) = handle.next_request().await.unwrap();
    assert_eq!(
        sent.headers()[http::header::AUTHORIZATION],
        format!("Bearer {}", access(0))
    );
    reply.send_response(response(StatusCode::OK));
    assert_eq!(now.await.unwrap().unwrap().status(), StatusCode::OK);

    // In the hard window the request waits with the service that was ready for it.
    tokio::time::advance(HOUR + Duration::from_secs(1)).await;
    // The cache's timer marks the window once it runs.
    run_until_idle().await;
    handle.allow(1);
    service.ready().await.unwrap();
    let waiting = tokio::spawn(service.call(request(1)));
    handle.allow(0);
    assert!(
        now_or_never(std::future::poll_fn(|cx| service.poll_ready(cx))).is_none(),
        "the service left behind is not ready by inheritance"
    );
    until("the refresh has started", || refresher.calls() == 1).await;
    assert!(
        handle.poll_request().is_pending(),
        "nothing sent before the refresh"
    );
    gate.open();
    let (sent, reply) = handle.next_request().await.unwrap();
    assert_eq!(
        sent.headers()[http::header::AUTHORIZATION],
        format!("Bearer {}", access(1))
    );
    reply.send_response(response(StatusCode::OK));
    assert_eq!(waiting.await.unwrap().unwrap().status(), StatusCode::OK);
}

/// Over HTTPS to the mock space: a revoked token gets its 401 back, one refresh token is
/// spent, and the next request goes through with the new token.
#[tokio::test]
async fn over_https_a_revoked_token_costs_one_refresh_and_no_resend() {
    let mock = MockSpace::start().await.unwrap();
    let cache = TokenCache::new(
        mock.mint("alice@example.com"),
        SubscriberRefresher::with_client(mock.token_client()),
    );
    let client = BearerAuthLayer::new(cache.clone())
        .without_replay()
        .for_space(&mock.space())
        .layer(mock.client::<Full<Bytes>>());
    let addresses = mock.space().endpoint("/api/fabric/addresses").unwrap();
    let get = || {
        Request::get(addresses.clone())
            .body(Full::default())
            .unwrap()
    };

    assert_eq!(
        client.clone().oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );
    mock.revoke_access_tokens();
    let response = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.extensions().get::<ReplaySkipped>().is_some());
    until("the refresh is in", || cache.stats().refreshes() == 1).await;
    assert_eq!(
        client.oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
}

#[tokio::test]
async fn a_pool_without_replay_mints_once_per_subscriber_and_refuses_a_request_without_one() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client()).build();
    let client = BearerAuthLayer::pooled(pool.clone())
        .without_replay()
        .for_space(&mock.space())
        .layer(mock.client::<Full<Bytes>>());
    let addresses = mock.space().endpoint("/api/fabric/addresses").unwrap();

    // The first request for a subscriber waits for its mint; the next ones find it.
    for who in [
        "alice@example.com",
        "bob@example.com",
        "alice@example.com",
        "alice@example.com",
    ] {
        let mut request = Request::get(addresses.clone())
            .body(Full::default())
            .unwrap();
        request.extensions_mut().insert(Subscriber::new(who));
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{who}");
    }
    assert_eq!(pool.stats().mints(), 2);
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 2);

    let request = Request::get(addresses).body(Full::default()).unwrap();
    let error = client.oneshot(request).await.unwrap_err();
    assert!(auth_error(&error).is_missing_subscriber());
}

#[test]
fn debug_shows_no_token() {
    let layer = BearerAuthLayer::from_token("sekrit-guest-token")
        .unwrap()
        .without_replay();
    let service = layer.clone().layer(Upstream::accepting(|_| true));
    for shown in [format!("{layer:?}"), format!("{service:?}")] {
        assert!(!shown.contains("sekrit"), "{shown}");
    }
}

fn assert_send_sync<T: Send + Sync>() {}
fn assert_clone<T: Clone>() {}

#[test]
fn layer_service_and_future_are_send_sync_and_clone() {
    assert_send_sync::<BearerAuthLayer<NoReplay>>();
    assert_clone::<BearerAuthLayer<NoReplay>>();
    assert_send_sync::<BearerAuth<Upstream, NoReplay>>();
    assert_clone::<BearerAuth<Upstream, NoReplay>>();

    let ready = tower::service_fn(|_: Request<Full<Bytes>>| {
        std::future::ready(Ok::<_, Infallible>(response(StatusCode::OK)))
    });
    let service = BearerAuthLayer::from_token("static")
        .unwrap()
        .without_replay()
        .layer(ready);
    fn future_of<S: Service<R>, R>(_: &S) -> PhantomData<S::Future> {
        PhantomData
    }
    fn is_send_sync<T: Send + Sync>(_: T) {}
    let future: PhantomData<NoReplayFuture<_, Full<Bytes>>> =
        future_of::<_, Request<Full<Bytes>>>(&service);
    is_send_sync(future);
}
