//! `TokenPool` through its public API against `MockSpace`: one mint per new subscriber however
//! many requests race for it, per-subscriber refresh, the bound and idle eviction, failed
//! mints, and requests without a `Subscriber`.

mod common;

use std::{
    collections::{HashMap, HashSet},
    error::Error as StdError,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant as WallClock},
};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use signalwire_auth::{
    BearerAuth, BearerAuthLayer, HttpsClient, MockSpace, ReplayBody, Subscriber, TokenPool,
    mock::{Fault, MockEndpoint},
    reqwest::BearerAuthMiddleware,
};
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};

/// A request for `subscriber`, with `x-request-id: id`.
fn request_for(subscriber: &Subscriber, id: usize) -> Request<Full<Bytes>> {
    let mut request = request(id);
    request.extensions_mut().insert(subscriber.clone());
    request
}

fn subscriber(n: usize) -> Subscriber {
    Subscriber::new(format!("subscriber-{n}@example.com"))
}

/// `BearerAuth` from `pool` over an in-process upstream that accepts every token.
fn pooled(pool: &TokenPool) -> (BearerAuth<Upstream>, Upstream) {
    let upstream = Upstream::accepting(|_| true);
    (
        BearerAuthLayer::pooled(pool.clone()).layer(upstream.clone()),
        upstream,
    )
}

/// `BearerAuth` from `pool` over real HTTP to the mock.
fn pooled_to_mock(
    pool: &TokenPool,
    mock: &MockSpace,
) -> BearerAuth<HttpsClient<ReplayBody<Full<Bytes>>>> {
    BearerAuthLayer::pooled(pool.clone())
        .for_space(&mock.space())
        .layer(mock.client())
}

/// The reqwest middleware from `pool` over the mock's reqwest client, and the URL it serves.
fn reqwest_pooled(
    pool: &TokenPool,
    mock: &MockSpace,
) -> (reqwest_middleware::ClientWithMiddleware, String) {
    let client = reqwest_middleware::ClientBuilder::new(mock.reqwest_client())
        .with(BearerAuthMiddleware::pooled(pool.clone()).for_space(&mock.space()))
        .build();
    let url = mock.space().endpoint("/api/fabric/addresses").unwrap();
    (client, url.to_string())
}

async fn list_addresses(
    client: &BearerAuth<HttpsClient<ReplayBody<Full<Bytes>>>>,
    mock: &MockSpace,
    who: &Subscriber,
) -> Result<StatusCode, tower::BoxError> {
    let uri = mock.space().endpoint("/api/fabric/addresses")?;
    let mut request = Request::get(uri).body(Full::default())?;
    request.extensions_mut().insert(who.clone());
    Ok(client.clone().oneshot(request).await?.status())
}

/// Spawns every `(subscriber, id)` request at once through `client`, and waits for all.
async fn storm(client: &BearerAuth<Upstream>, requests: Vec<(Subscriber, usize)>) -> Vec<Outcome> {
    let mut tasks = JoinSet::new();
    for (who, id) in requests {
        tasks.spawn(client.clone().oneshot(request_for(&who, id)));
    }
    join_batch(tasks).await
}

#[tokio::test]
async fn ten_thousand_first_requests_for_one_subscriber_cost_one_mint() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client()).build();
    let (client, upstream) = pooled(&pool);
    let alice = subscriber(0);

    let outcomes = storm(&client, (0..10_000).map(|id| (alice.clone(), id)).collect()).await;

    assert!(
        outcomes
            .iter()
            .all(|o| o.as_ref().unwrap().status() == StatusCode::OK)
    );
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    assert_eq!(mock.subscriber_mints(alice.reference()), 1);
    let stats = pool.stats();
    assert_eq!(
        (stats.mints(), stats.mint_failures(), stats.live()),
        (1, 0, 1)
    );
    assert_eq!(stats.hits() + stats.misses(), 10_000);
    let tokens: HashSet<_> = upstream.seen().into_iter().map(|s| s.token).collect();
    assert_eq!(
        tokens.len(),
        1,
        "every request carried the one minted token"
    );
    assert_eq!(upstream.calls(), 10_000);
}

#[tokio::test]
async fn a_thousand_subscribers_with_ten_requests_each_cost_a_thousand_mints() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client()).build();
    let (client, upstream) = pooled(&pool);
    let subscribers: Vec<_> = (0..1_000).map(subscriber).collect();
    // Interleaved, so that each subscriber's ten requests race each other and everyone else's.
    let requests = (0..10)
        .flat_map(|round| {
            subscribers
                .iter()
                .enumerate()
                .map(move |(n, who)| (who.clone(), round * 1_000 + n))
        })
        .collect();

    let started = WallClock::now();
    let outcomes = storm(&client, requests).await;
    let elapsed = started.elapsed();
    println!("storm of 1,000 subscribers x 10 requests: {elapsed:?}");

    let ok = outcomes
        .iter()
        .filter(|o| o.as_ref().is_ok_and(|r| r.status() == StatusCode::OK))
        .count();
    assert_eq!(ok, 10_000);
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1_000);
    assert_eq!(pool.stats().mints(), 1_000);
    assert_eq!(pool.stats().live(), 1_000);
    // Each subscriber's ten requests carried one token, its own.
    let mut per_subscriber: HashMap<usize, HashSet<Option<String>>> = HashMap::new();
    for seen in upstream.seen() {
        let id: usize = seen.id.parse().unwrap();
        per_subscriber
            .entry(id % 1_000)
            .or_default()
            .insert(seen.token);
    }
    assert!(per_subscriber.values().all(|tokens| tokens.len() == 1));
    let all: HashSet<_> = per_subscriber.into_values().flatten().collect();
    assert_eq!(all.len(), 1_000);
}

/// Three subscribers served through `send` (one request for a subscriber, to the mock's list
/// endpoint, answering its status); then the first one's tokens are revoked and each sends
/// three more: only the first refreshes, once, and its refused request is replayed once.
async fn revoking_one_of_three_refreshes_only_that_one<F, R>(
    mock: &MockSpace,
    pool: &TokenPool,
    send: F,
) where
    F: Fn(Subscriber) -> R,
    R: Future<Output = StatusCode>,
{
    let who: Vec<_> = (0..3).map(subscriber).collect();
    for s in &who {
        assert_eq!(send(s.clone()).await, StatusCode::OK);
    }

    assert!(mock.revoke_subscriber_access_tokens(who[0].reference()));
    for _ in 0..3 {
        for s in &who {
            assert_eq!(send(s.clone()).await, StatusCode::OK);
        }
    }

    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
    assert_eq!(mock.subscriber_refreshes(who[0].reference()), 1);
    for s in &who[1..] {
        assert_eq!(mock.subscriber_refreshes(s.reference()), 0);
        let cache = pool.cache(s.reference()).await.unwrap();
        assert_eq!(cache.stats().refreshes(), 0);
    }
    let first = pool.cache(who[0].reference()).await.unwrap();
    assert_eq!((first.stats().refreshes(), first.stats().replays()), (1, 1));
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 3);
    // 3 first requests, then 9 more, one of which was refused and replayed.
    assert_eq!(mock.calls(MockEndpoint::ListAddresses), 13);
}

#[tokio::test]
async fn revoking_one_subscribers_tokens_refreshes_only_that_subscriber() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client()).build();
    let client = pooled_to_mock(&pool, &mock);
    revoking_one_of_three_refreshes_only_that_one(&mock, &pool, |who| {
        let (client, mock) = (&client, &mock);
        async move { list_addresses(client, mock, &who).await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn the_reqwest_middleware_refreshes_only_the_revoked_subscriber() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client()).build();
    let (client, url) = reqwest_pooled(&pool, &mock);
    revoking_one_of_three_refreshes_only_that_one(&mock, &pool, |who| {
        let request = client.get(&url).with_extension(who);
        async move { request.send().await.unwrap().status() }
    })
    .await;
}

#[tokio::test]
async fn an_idle_subscriber_is_evicted_after_the_idle_timeout_and_minted_again() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client())
        .idle_timeout(Duration::from_secs(60))
        .build();
    let (busy, idle) = (subscriber(0), subscriber(1));
    pool.cache(busy.reference()).await.unwrap();
    pool.cache(idle.reference()).await.unwrap();

    // Every 5 s for 55 s: `busy` is looked up, `idle` is not; nothing is evicted yet.
    for _ in 0..11 {
        advance(Duration::from_secs(5)).await;
        pool.cache(busy.reference()).await.unwrap();
    }
    assert_eq!((pool.stats().live(), pool.stats().evictions()), (2, 0));

    // Idle for at least 60 s and at most 75 s (four sweeps per timeout).
    for _ in 0..4 {
        advance(Duration::from_secs(5)).await;
        pool.cache(busy.reference()).await.unwrap();
    }
    yields(100).await;
    pool.run_pending_tasks().await;
    let stats = pool.stats();
    assert_eq!((stats.live(), stats.evictions()), (1, 1), "{stats:?}");
    assert_eq!(
        mock.subscriber_mints(busy.reference()),
        1,
        "in use, never evicted"
    );

    // Its next lookup mints again.
    pool.cache(idle.reference()).await.unwrap();
    assert_eq!(mock.subscriber_mints(idle.reference()), 2);
    assert_eq!(pool.stats().live(), 2);
}

#[tokio::test]
async fn a_long_pause_ages_every_entry_at_the_next_sweep() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client())
        .idle_timeout(Duration::from_secs(60))
        .build();
    pool.cache(subscriber(0).reference()).await.unwrap();
    pool.cache(subscriber(1).reference()).await.unwrap();

    // One jump past the timeout and its last quarter: one sweep runs, and it sees 76 s.
    advance(Duration::from_secs(76)).await;
    yields(100).await;
    pool.run_pending_tasks().await;
    let stats = pool.stats();
    assert_eq!((stats.live(), stats.evictions()), (0, 2), "{stats:?}");
}

#[tokio::test]
async fn max_subscribers_holds_under_churn() {
    const MAX: u64 = 20;
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client())
        .max_subscribers(MAX)
        .build();

    // One at a time: the bound holds after every lookup that minted.
    for n in 0..100 {
        pool.cache(subscriber(n).reference()).await.unwrap();
        assert!(pool.stats().live() <= MAX, "{n}: {:?}", pool.stats());
    }
    // Concurrently, in waves of new and returning subscribers.
    for wave in 0..5 {
        let mut tasks = JoinSet::new();
        for n in 0..60 {
            let pool = pool.clone();
            let who = subscriber((wave * 37 + n) % 150);
            tasks.spawn(async move { pool.cache(who.reference()).await.map(drop) });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        pool.run_pending_tasks().await;
        assert!(
            pool.stats().live() <= MAX,
            "wave {wave}: {:?}",
            pool.stats()
        );
    }
    let stats = pool.stats();
    assert_eq!(
        stats.mints(),
        mock.calls(MockEndpoint::CreateSubscriberToken) as u64
    );
    assert_eq!(stats.evictions(), stats.mints() - stats.live());
    assert!(stats.evictions() >= 80, "{stats:?}");
}

/// A failed mint is an error for every request that waited for it; the next one mints again.
async fn a_failed_mint_is_shared_and_not_kept(status: StatusCode) {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client()).build();
    let (client, upstream) = pooled(&pool);
    let alice = subscriber(0);
    mock.inject(
        MockEndpoint::CreateSubscriberToken,
        Fault::Status(status),
        1,
    );

    let outcomes = storm(&client, (0..100).map(|id| (alice.clone(), id)).collect()).await;
    for outcome in &outcomes {
        let error = outcome.as_ref().unwrap_err();
        let error = auth_error(error);
        assert!(error.is_mint_failed(), "{error:?}");
        let api = error.api_error().expect("the cause is the API's answer");
        assert_eq!(api.status(), status);
        assert!(error.source().is_some());
    }
    assert_eq!(upstream.calls(), 0, "nothing was sent without a token");
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    let stats = pool.stats();
    assert_eq!(
        (stats.mints(), stats.mint_failures(), stats.live()),
        (1, 1, 0)
    );

    let response = client
        .clone()
        .oneshot(request_for(&alice, 100))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 2);
    assert_eq!(pool.stats().live(), 1);
}

#[tokio::test]
async fn a_mint_answered_500_fails_its_waiters_and_the_next_request_mints_again() {
    a_failed_mint_is_shared_and_not_kept(StatusCode::INTERNAL_SERVER_ERROR).await;
}

#[tokio::test]
async fn a_mint_answered_422_fails_its_waiters_and_the_next_request_mints_again() {
    a_failed_mint_is_shared_and_not_kept(StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn a_request_without_a_subscriber_is_refused_and_not_sent() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client()).build();
    let (client, upstream) = pooled(&pool);

    let error = client.clone().oneshot(request(1)).await.unwrap_err();
    assert!(auth_error(&error).is_missing_subscriber(), "{error:?}");
    assert_eq!(upstream.calls(), 0);
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 0);
    assert_eq!(
        pool.stats(),
        TokenPool::with_client(mock.token_client()).build().stats()
    );

    // The reqwest middleware refuses it too.
    let (reqwest, url) = reqwest_pooled(&pool, &mock);
    let error = reqwest.get(&url).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("not the middleware's error: {error:?}");
    };
    let error = error.downcast_ref::<signalwire_auth::Error>().unwrap();
    assert!(error.is_missing_subscriber());
    assert_eq!(mock.calls(MockEndpoint::ListAddresses), 0);
}

#[tokio::test]
async fn a_request_holding_an_evicted_entry_finishes_with_it() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client())
        .max_subscribers(1)
        .build();
    let held = Gate::default();
    let arrived = Arc::new(AtomicUsize::new(0));
    let (gate, count) = (held.clone(), Arc::clone(&arrived));
    let upstream = Upstream::new(move |_| {
        let gate = gate.clone();
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            gate.wait().await;
            response(StatusCode::OK)
        }
    });
    let client = BearerAuthLayer::pooled(pool.clone()).layer(upstream.clone());
    let alice = subscriber(0);
    let in_flight = tokio::spawn(client.clone().oneshot(request_for(&alice, 0)));
    until("alice's request reaches the upstream", || {
        arrived.load(Ordering::SeqCst) == 1
    })
    .await;

    // Bob takes the only place: alice's entry is evicted while her request is out.
    pool.cache(subscriber(1).reference()).await.unwrap();
    assert_eq!((pool.stats().live(), pool.stats().evictions()), (1, 1));

    held.open();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn an_empty_reference_is_invalid_input_and_mints_nothing() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client()).build();
    let error = pool.cache("").await.unwrap_err();
    assert!(error.is_invalid_input(), "{error:?}");
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 0);
}

#[test]
fn pool_types_are_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<TokenPool>();
    assert_send_sync::<Subscriber>();
    assert_send_sync::<BearerAuthLayer>();
    assert_send_sync::<BearerAuth<Upstream>>();
    fn assert_future_send<F: Send>(_: &F) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mock = MockSpace::start().await.unwrap();
        let pool = TokenPool::with_client(mock.token_client()).build();
        let (client, _) = pooled(&pool);
        let future = client.oneshot(request_for(&subscriber(0), 0));
        assert_future_send(&future);
        future.await.unwrap();
    });
}

/// Sends a request for `who` through `client` itself (not a clone), as a long-lived service
/// does, and answers the token the upstream saw.
async fn send_through(
    client: &mut BearerAuth<Upstream>,
    upstream: &Upstream,
    who: &Subscriber,
    id: usize,
) -> String {
    let ready = ServiceExt::<Request<Full<Bytes>>>::ready(client)
        .await
        .unwrap();
    let response = ready.call(request_for(who, id)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    upstream.last_token().expect("the upstream saw a token")
}

/// Sends the requests `ids` for `who` through `client` itself; each must carry `token`.
async fn assert_each_sends(
    client: &mut BearerAuth<Upstream>,
    upstream: &Upstream,
    who: &Subscriber,
    ids: std::ops::Range<usize>,
    token: &str,
) {
    for id in ids {
        assert_eq!(
            send_through(client, upstream, who, id).await,
            token,
            "request {id}"
        );
    }
}

#[tokio::test]
async fn a_service_sending_for_one_subscriber_moves_to_the_new_entry_after_an_eviction() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client())
        .max_subscribers(1)
        .build();
    let (mut client, upstream) = pooled(&pool);
    let alice = subscriber(0);
    // The first request mints; from the third on, the service serves alice from its memo.
    let first = send_through(&mut client, &upstream, &alice, 0).await;
    assert_each_sends(&mut client, &upstream, &alice, 1..4, &first).await;
    let stats = pool.stats();
    assert_eq!((stats.misses(), stats.hits()), (1, 3), "{stats:?}");

    // Bob takes the only place.
    pool.cache(subscriber(1).reference()).await.unwrap();
    assert_eq!((pool.stats().live(), pool.stats().evictions()), (1, 1));

    // The service lets alice's evicted entry go: her next request mints a new one.
    let second = send_through(&mut client, &upstream, &alice, 4).await;
    assert_ne!(second, first);
    assert_eq!(mock.subscriber_mints(alice.reference()), 2);
    assert_each_sends(&mut client, &upstream, &alice, 5..8, &second).await;
    let stats = pool.stats();
    assert_eq!((stats.misses(), stats.hits()), (3, 6), "{stats:?}");
    assert_eq!(upstream.calls(), 8);
}

#[tokio::test]
async fn requests_a_service_serves_from_its_memo_keep_their_entry_from_idling_out() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client())
        .idle_timeout(Duration::from_secs(60))
        .build();
    let (mut client, upstream) = pooled(&pool);
    let (busy, idle) = (subscriber(0), subscriber(1));
    pool.cache(idle.reference()).await.unwrap();

    // Every 5 s for 80 s, `busy` is sent for through the same service (from its memo after
    // the second request); `idle` is not.
    for id in 0..16 {
        send_through(&mut client, &upstream, &busy, id).await;
        advance(Duration::from_secs(5)).await;
    }
    yields(100).await;
    pool.run_pending_tasks().await;
    let stats = pool.stats();
    assert_eq!((stats.live(), stats.evictions()), (1, 1), "{stats:?}");
    assert_eq!(
        mock.subscriber_mints(busy.reference()),
        1,
        "in use, never evicted"
    );
    assert_eq!(stats.hits(), 15, "{stats:?}");
}

#[tokio::test]
async fn an_evicted_entry_a_service_still_holds_is_not_refreshed_ahead_of_requests() {
    let mock = MockSpace::start().await.unwrap();
    let pool = TokenPool::with_client(mock.token_client())
        .max_subscribers(1)
        .idle_timeout(Duration::from_secs(24 * 3600))
        .build();
    let (mut alice_client, upstream) = pooled(&pool);
    let mut bob_client = alice_client.clone();
    let (alice, bob) = (subscriber(0), subscriber(1));
    for id in 0..3 {
        send_through(&mut alice_client, &upstream, &alice, id).await;
    }
    let lifetime = pool
        .cache(alice.reference())
        .await
        .unwrap()
        .current()
        .lifetime();
    // Bob evicts alice, whose entry alice's service still holds.
    for id in 3..6 {
        send_through(&mut bob_client, &upstream, &bob, id).await;
    }
    assert_eq!(pool.stats().evictions(), 1);

    // Both pairs were used: past the advisory deadline, bob's timer refreshes his; alice's
    // entry, evicted, waits for a request that never comes.
    let mut waited = Duration::ZERO;
    while waited + Duration::from_secs(30) < lifetime {
        advance(Duration::from_secs(10)).await;
        waited += Duration::from_secs(10);
    }
    yields(100).await;
    assert_eq!(
        pool.stats().evictions(),
        1,
        "bob is not idle for long enough"
    );
    assert_eq!(mock.subscriber_refreshes(bob.reference()), 1);
    assert_eq!(mock.subscriber_refreshes(alice.reference()), 0);
    drop(alice_client);
}
