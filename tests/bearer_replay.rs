//! `BearerAuth` on 401: one refresh shared by every request that needs it, one replay per
//! request, bodies replayed byte for byte or the 401 handed back, and the statuses a refresh
//! cannot fix left alone. Also the service discipline (`poll_ready` before every `call`) and
//! the auto traits.

mod common;

use std::{convert::Infallible, marker::PhantomData, time::Duration};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode, header::WWW_AUTHENTICATE};
use http_body_util::{BodyExt, Empty, Full};
use signalwire_auth::{BearerAuth, BearerAuthLayer, ReplayBody, ReplaySkipped, TokenCache};
use tower::{Layer, Service, ServiceExt};

/// A cache at `access-0` with a refresher that succeeds, and an upstream that refuses
/// `access-0`.
fn revoked_first_token() -> (TokenCache, Refresher, Upstream) {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::accepting(|token| token != access(0));
    (cache, refresher, upstream)
}

fn with_body<B>(id: usize, body: B) -> Request<B> {
    Request::post(URI)
        .header(REQUEST_ID, id)
        .body(body)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_401s_cause_one_refresh_and_one_replay_each() {
    const N: usize = 10_000;
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    // Every first send is held until all of them have arrived, then refused.
    let upstream = Upstream::holding_first(N, |token| token == access(1));
    let service = client(&cache, &upstream);

    let outcomes = join_batch(send_batch(&service, 0..N).await).await;
    for outcome in &outcomes {
        assert_eq!(outcome.as_ref().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(refresher.calls(), 1);
    assert_eq!(cache.stats().refreshes(), 1);

    let sends = upstream.sends_per_id();
    assert_eq!(sends.len(), N);
    assert!(
        sends.values().all(|&n| n == 2),
        "each request sent exactly twice"
    );
    let seen = upstream.seen();
    let (first, second) = seen.split_at(N);
    assert!(
        first
            .iter()
            .all(|s| s.token.as_deref() == Some(access(0).as_str()))
    );
    assert!(
        second
            .iter()
            .all(|s| s.token.as_deref() == Some(access(1).as_str()))
    );
    for replay in second {
        let original = first.iter().find(|s| s.id == replay.id).unwrap();
        assert_eq!(original.body, replay.body, "request {}", replay.id);
    }
}

#[tokio::test(start_paused = true)]
async fn a_401_that_persists_is_sent_exactly_twice_then_returned() {
    const N: usize = 50;
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::holding_first(N, |_| false);
    let service = client(&cache, &upstream);

    let outcomes = join_batch(send_batch(&service, 0..N).await).await;
    for outcome in &outcomes {
        let response = outcome.as_ref().unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.extensions().get::<ReplaySkipped>().is_none());
    }
    assert!(upstream.sends_per_id().values().all(|&n| n == 2));
    assert_eq!(upstream.calls(), 2 * N);
    assert_eq!(
        refresher.calls(),
        1,
        "the replay's 401 starts no second refresh"
    );
}

#[tokio::test(start_paused = true)]
async fn a_terminal_refresh_after_a_401_fails_the_request_with_a_typed_error() {
    let refresher = Refresher::new(Mode::Terminal);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::accepting(|_| false);
    let service = client(&cache, &upstream);

    let error = service.clone().oneshot(request(0)).await.unwrap_err();
    assert!(auth_error(&error).is_reauthentication_needed());
    // The next 401 finds the chain broken: no second attempt.
    let error = service.oneshot(request(1)).await.unwrap_err();
    assert!(auth_error(&error).is_reauthentication_needed());
    assert_eq!(refresher.calls(), 1);
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_over_the_limit_gets_its_401_back_and_still_refreshes() {
    let (cache, refresher, upstream) = revoked_first_token();
    let service = BearerAuthLayer::new(cache.clone())
        .replay_limit(1024)
        .layer(upstream.clone());

    let chunks = (0..4u8).map(|i| Bytes::from(vec![i; 256]));
    let over = Streaming::new(chunks.chain([Bytes::from_static(b"!")]));
    let response = service.clone().oneshot(with_body(0, over)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.extensions().get::<ReplaySkipped>().is_some());
    assert_eq!(upstream.calls(), 1, "not replayed");
    assert_eq!(
        upstream.seen()[0].body.len(),
        1025,
        "sent in full all the same"
    );

    // The refresh ran anyway: sending again succeeds.
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1);
    let again = Streaming::new((0..5u8).map(|i| Bytes::from(vec![i; 256])));
    let response = service.oneshot(with_body(1, again)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.token(1), Some(access(1)));
    assert_eq!(refresher.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_known_to_be_over_the_limit_gets_its_401_back() {
    let (cache, refresher, upstream) = revoked_first_token();
    let service = BearerAuthLayer::new(cache)
        .replay_limit(1024)
        .layer(upstream.clone());
    let body = Full::new(Bytes::from(vec![b'x'; 1025]));
    let response = service.clone().oneshot(with_body(0, body)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.extensions().get::<ReplaySkipped>().is_some());
    assert_eq!(upstream.calls(), 1);
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1);
}

/// Sends `body` through a fresh cache whose first token is refused; returns what the upstream
/// received on both sends.
async fn replayed<B>(body: B) -> (Bytes, Bytes)
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<tower::BoxError>,
{
    let (cache, refresher, upstream) = revoked_first_token();
    let service = BearerAuthLayer::new(cache)
        .replay_limit(1024)
        .layer(upstream.clone());
    let response = service.oneshot(with_body(0, body)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(refresher.calls(), 1);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "sent, refused, replayed");
    assert_eq!(seen[0].token.as_deref(), Some(access(0).as_str()));
    assert_eq!(seen[1].token.as_deref(), Some(access(1).as_str()));
    (seen[0].body.clone(), seen[1].body.clone())
}

#[tokio::test(start_paused = true)]
async fn bodies_within_the_limit_are_replayed_byte_for_byte() {
    let binary: Bytes = (0..=255u8).cycle().take(1000).collect::<Vec<_>>().into();
    let (first, second) = replayed(Full::new(binary.clone())).await;
    assert_eq!(first, binary);
    assert_eq!(second, binary);

    // Streamed, of unknown length, exactly at the limit.
    let chunks: Vec<Bytes> = (0..8u8).map(|i| Bytes::from(vec![i; 128])).collect();
    let expected: Bytes = chunks.concat().into();
    assert_eq!(expected.len(), 1024);
    let (first, second) = replayed(Streaming::new(chunks)).await;
    assert_eq!(first, expected);
    assert_eq!(second, expected);

    let (first, second) = replayed(Empty::<Bytes>::new()).await;
    assert!(first.is_empty() && second.is_empty());
}

#[tokio::test(start_paused = true)]
async fn replay_limit_zero_never_replays_but_still_refreshes() {
    let (cache, refresher, upstream) = revoked_first_token();
    let service = BearerAuthLayer::new(cache)
        .replay_limit(0)
        .layer(upstream.clone());

    let response = service.clone().oneshot(request(0)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.extensions().get::<ReplaySkipped>().is_some());
    assert_eq!(upstream.calls(), 1);
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1);

    let response = service.clone().oneshot(request(1)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.token(1), Some(access(1)));
    assert_eq!(upstream.calls(), 2);
}

#[derive(Clone, Copy, Debug)]
enum MovedOn {
    Refreshed,
    Installed,
}

#[tokio::test(start_paused = true)]
async fn a_401_for_a_replaced_token_is_replayed_at_once_without_another_refresh() {
    for how in [MovedOn::Refreshed, MovedOn::Installed] {
        let refresher = Refresher::new(Mode::Succeed);
        let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
        // The first send is held until the test lets it answer 401.
        let release = Gate::default();
        let held = release.clone();
        let upstream = Upstream::new(move |seen: Seen| {
            let held = held.clone();
            async move {
                if seen.token.as_deref() == Some(access(0).as_str()) {
                    held.wait().await;
                    response(StatusCode::UNAUTHORIZED)
                } else {
                    response(StatusCode::OK)
                }
            }
        });
        let service = client(&cache, &upstream);

        let in_flight = tokio::spawn(service.oneshot(request(0)));
        until("the first send arrived", || upstream.calls() == 1).await;
        let (token, refreshes) = match how {
            MovedOn::Refreshed => {
                cache.refresh_now().await.unwrap();
                (access(1), 1)
            }
            MovedOn::Installed => {
                cache.install(pair(9, HOUR));
                (access(9), 0)
            }
        };
        release.open();
        let response = in_flight.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{how:?}");
        let seen = upstream.seen();
        assert_eq!(seen.len(), 2, "{how:?}");
        assert_eq!(seen[1].token, Some(token), "{how:?}");
        assert_eq!(
            refresher.calls(),
            refreshes,
            "{how:?}: no refresh for a stale 401"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_403_is_never_fixed_by_a_refresh() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::new(|_: Seen| async move {
        let mut response = Response::new(Full::from("missing scope"));
        *response.status_mut() = StatusCode::FORBIDDEN;
        response
    });
    let forbidden = client(&cache, &upstream).oneshot(request(0)).await.unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert!(forbidden.extensions().get::<ReplaySkipped>().is_none());
    let body = forbidden.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "missing scope", "returned as is");

    run_until_idle().await;
    assert_eq!(upstream.calls(), 1, "not replayed");
    assert_eq!(refresher.calls(), 0, "no refresh started");
    assert_eq!(cache.current().access_token(), access(0));
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_always_answers_401_costs_one_refresh_not_one_per_request() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::accepting(|_| false);
    let service = client(&cache, &upstream);

    // The first 401 is the token's, as far as anyone can tell: one refresh, one replay.
    let first = service.clone().oneshot(request(0)).await.unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    assert_eq!((refresher.calls(), upstream.calls()), (1, 2));

    // The new token is refused at once too: not a matter of age. No more refreshes.
    for id in 1..=5 {
        let response = service.clone().oneshot(request(id)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.extensions().get::<ReplaySkipped>().is_some());
    }
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1, "no refresh per request");
    assert_eq!(upstream.calls(), 7, "each later request sent once");

    // Later, a 401 counts again.
    tokio::time::advance(Duration::from_secs(31)).await;
    service.clone().oneshot(request(6)).await.unwrap();
    assert_eq!(refresher.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_401_is_refreshed_and_replayed_whatever_it_challenges() {
    // SignalWire takes Basic and Bearer: a 401 to a Bearer request may challenge either.
    for challenge in [
        "Basic realm=\"SignalWire\"",
        "Bearer error=\"invalid_token\"",
        "Basic realm=\"SignalWire\", Bearer realm=\"SignalWire\"",
    ] {
        let refresher = Refresher::new(Mode::Succeed);
        let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
        let upstream = Upstream::new(move |seen: Seen| async move {
            let mut response = response(StatusCode::OK);
            if seen.token.as_deref() == Some(access(0).as_str()) {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, challenge.parse().unwrap());
            }
            response
        });
        let response = client(&cache, &upstream).oneshot(request(0)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{challenge}");
        assert_eq!(refresher.calls(), 1, "{challenge}");
        assert_eq!(upstream.calls(), 2, "{challenge}");
    }
}

type Mocked = tower_test::mock::Mock<Request<ReplayBody<Full<Bytes>>>, Response<Full<Bytes>>>;

fn bearer_of<B>(request: &Request<B>) -> Option<&str> {
    request
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

#[tokio::test(start_paused = true)]
async fn first_send_and_replay_each_go_through_a_ready_service() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let (mock, mut handle) = tower_test::mock::pair();
    let mut service: BearerAuth<Mocked> = BearerAuthLayer::new(cache).layer(mock);

    // The inner service's Pending readiness is the layer's.
    handle.allow(0);
    assert!(now_or_never(std::future::poll_fn(|cx| service.poll_ready(cx))).is_none());
    handle.allow(1);
    service.ready().await.unwrap();
    // The mock panics on a `call` that was not preceded by a ready `poll_ready`.
    let call = tokio::spawn(service.call(request(0)));

    let (sent, reply) = handle.next_request().await.unwrap();
    assert_eq!(bearer_of(&sent), Some(access(0).as_str()));
    let first_body = sent.into_body().collect().await.unwrap().to_bytes();
    reply.send_response(response(StatusCode::UNAUTHORIZED));

    // The refresh runs, but the mock allows no more calls: the replay waits for readiness.
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1);
    assert!(
        handle.poll_request().is_pending(),
        "no replay before the service is ready"
    );
    assert!(!call.is_finished());

    handle.allow(1);
    let (replayed, reply) = handle.next_request().await.unwrap();
    assert_eq!(bearer_of(&replayed), Some(access(1).as_str()));
    assert_eq!(
        replayed.into_body().collect().await.unwrap().to_bytes(),
        first_body
    );
    reply.send_response(response(StatusCode::OK));
    let response = call.await.expect("no call without poll_ready").unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn requests_waiting_for_a_refresh_keep_the_service_that_was_ready() {
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let (mock, mut handle) = tower_test::mock::pair();
    let mut service: BearerAuth<Mocked> = BearerAuthLayer::new(cache).layer(mock);
    tokio::time::advance(HOUR + Duration::from_secs(1)).await;

    // Two calls in a row on one handle, each after its own `poll_ready`, both waiting.
    service.ready().await.unwrap();
    let first = tokio::spawn(service.call(request(0)));
    handle.allow(0);
    assert!(
        now_or_never(std::future::poll_fn(|cx| service.poll_ready(cx))).is_none(),
        "the service left behind is not ready by inheritance"
    );
    handle.allow(1);
    service.ready().await.unwrap();
    let second = tokio::spawn(service.call(request(1)));

    until("the refresh has started", || refresher.calls() == 1).await;
    assert!(
        handle.poll_request().is_pending(),
        "nothing is sent before the refresh"
    );
    gate.open();
    for _ in 0..2 {
        let (sent, reply) = handle.next_request().await.unwrap();
        assert_eq!(bearer_of(&sent), Some(access(1).as_str()));
        reply.send_response(response(StatusCode::OK));
    }
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(second.await.unwrap().unwrap().status(), StatusCode::OK);
}

fn assert_send_sync<T: Send + Sync>() {}
fn assert_clone<T: Clone>() {}
fn future_of<S: Service<R>, R>(_: &S) -> PhantomData<S::Future> {
    PhantomData
}

#[test]
fn layers_services_and_futures_are_send_sync_and_clone() {
    assert_send_sync::<TokenCache>();
    assert_send_sync::<BearerAuthLayer>();
    assert_send_sync::<BearerAuth<Upstream>>();
    assert_clone::<TokenCache>();
    assert_clone::<BearerAuthLayer>();
    assert_clone::<BearerAuth<Upstream>>();

    // Over an inner service whose future is `Send + Sync`, ours is too.
    let ready = tower::service_fn(|_: Request<ReplayBody<Full<Bytes>>>| {
        std::future::ready(Ok::<_, Infallible>(response(StatusCode::OK)))
    });
    let service = BearerAuthLayer::from_token("static").unwrap().layer(ready);
    fn is_send_sync<T: Send + Sync>(_: T) {}
    is_send_sync(future_of::<_, Request<Full<Bytes>>>(&service));
    is_send_sync(service.clone());
}

#[cfg(feature = "https")]
#[test]
fn the_layer_over_the_crate_client_is_send_sync_and_clone() {
    type Client = signalwire_auth::HttpsClient<ReplayBody<Full<Bytes>>>;
    type ClientFuture = <BearerAuth<Client> as Service<Request<Full<Bytes>>>>::Future;
    fn assert_send<T: Send>() {}

    assert_send_sync::<BearerAuth<Client>>();
    assert_clone::<BearerAuth<Client>>();
    // hyper-util's own response future is `Send` but not `Sync`, so ours over it is `Send`.
    assert_send::<ClientFuture>();
}
