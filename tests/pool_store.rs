//! `TokenPoolBuilder::store` through the public API: pools in several replicas share each
//! subscriber's refresh chain (one mint per subscriber, every refresh token presented once),
//! a restarted pool and an evicted entry start from the store without a mint; against a real
//! `redis-server`, two pools with their own connections do the same.

mod common;

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use common::advance;
use http::{Request, StatusCode};
use http_body_util::Full;
use signalwire_auth::{
    BearerAuth, BearerAuthLayer, HttpsClient, MemoryStore, MockSpace, ReplayBody, Subscriber,
    TokenPool, TokenStore,
    mock::{Fault, MockEndpoint},
};
use tokio::task::JoinSet;
use tower::{Layer, ServiceExt};

const LIFETIME: Duration = Duration::from_secs(10 * 60);

type Client = BearerAuth<HttpsClient<ReplayBody<Full<Bytes>>>>;

fn subscriber(n: usize) -> Subscriber {
    Subscriber::new(format!("subscriber-{n}@example.com"))
}

async fn mock() -> MockSpace {
    MockSpace::builder()
        .access_lifetime(LIFETIME)
        .refreshed_access_lifetime(LIFETIME)
        .start()
        .await
        .unwrap()
}

fn pool(mock: &MockSpace, store: impl TokenStore) -> TokenPool {
    TokenPool::with_client(mock.token_client())
        .store(store)
        .build()
}

fn client(pool: &TokenPool, mock: &MockSpace) -> Client {
    BearerAuthLayer::pooled(pool.clone())
        .for_space(&mock.space())
        .layer(mock.client())
}

/// One `GET /api/fabric/addresses` per client and subscriber, all at once: the statuses.
async fn round(clients: &[Client], mock: &MockSpace, who: &[Subscriber]) -> Vec<StatusCode> {
    let uri = mock.space().endpoint("/api/fabric/addresses").unwrap();
    let mut tasks = JoinSet::new();
    for client in clients {
        for subscriber in who {
            let mut request = Request::get(uri.clone()).body(Full::default()).unwrap();
            request.extensions_mut().insert(subscriber.clone());
            let client = client.clone();
            tasks.spawn(async move { client.oneshot(request).await.map(|r| r.status()) });
        }
    }
    let mut statuses = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        statuses.push(joined.unwrap().unwrap_or_else(|error| panic!("{error}")));
    }
    statuses
}

/// Waits until no entry of `pools` has a refresh in flight.
async fn settle_all(pools: &[TokenPool], who: &[Subscriber]) {
    for pool in pools {
        for subscriber in who {
            common::settle(&pool.cache(subscriber.reference()).await.unwrap()).await;
        }
    }
}

#[tokio::test]
async fn pools_sharing_a_store_mint_each_subscriber_once_and_spend_each_refresh_token_once() {
    let mock = mock().await;
    let store = MemoryStore::new();
    let pools: Vec<_> = (0..3).map(|_| pool(&mock, store.clone())).collect();
    let clients: Vec<_> = pools.iter().map(|pool| client(pool, &mock)).collect();
    let who: Vec<_> = (0..8).map(subscriber).collect();

    // Every replica's first request for every subscriber at once, then traffic every two
    // minutes for five lifetimes: each pair is refreshed by its timer at its advisory deadline,
    // by whichever replica takes the lease first.
    let mut sent = 0;
    for minute in 0..50 {
        if minute % 2 == 0 {
            let statuses = round(&clients, &mock, &who).await;
            sent += statuses.len();
            assert!(
                statuses.iter().all(|s| *s == StatusCode::OK),
                "{statuses:?}"
            );
        }
        settle_all(&pools, &who).await;
        advance(Duration::from_secs(60)).await;
    }
    settle_all(&pools, &who).await;
    // A stored pair keeps its instants in whole seconds, so a replica that adopted it has a
    // deadline up to a second before its writer's: the last minute's step may fall between
    // the two. A replica past the step has refreshed; one short of it adopts at its own
    // deadline, within two seconds.
    advance(Duration::from_secs(2)).await;
    settle_all(&pools, &who).await;

    assert_eq!(sent, 25 * 3 * 8);
    assert_eq!(
        mock.calls(MockEndpoint::CreateSubscriberToken),
        who.len(),
        "one mint per subscriber across the replicas"
    );
    assert_eq!(mock.reused_refresh_tokens(), 0);
    let total = |stat: fn(&TokenPool) -> u64| pools.iter().map(stat).sum::<u64>();
    assert_eq!(total(|p| p.stats().mints()), 8);
    assert_eq!(total(|p| p.stats().loaded()), 16);
    let mut refreshes_by_replicas = HashMap::new();
    for subscriber in &who {
        let mut tokens = Vec::new();
        for pool in &pools {
            let cache = pool.cache(subscriber.reference()).await.unwrap();
            tokens.push(cache.current().access_token().to_owned());
            *refreshes_by_replicas
                .entry(subscriber.reference())
                .or_insert(0) += cache.stats().refreshes();
        }
        assert!(
            tokens.iter().all(|token| *token == tokens[0]),
            "the replicas hold one chain for {}",
            subscriber.reference()
        );
        let refreshed = mock.subscriber_refreshes(subscriber.reference());
        // Fifty minutes over 10-minute tokens refreshed 5 minutes ahead: about ten refreshes,
        // and one chain, not one per replica.
        assert!((7..=12).contains(&refreshed), "{refreshed} refreshes");
    }
}

#[tokio::test]
async fn a_restarted_pool_and_an_evicted_entry_start_from_the_store_without_a_mint() {
    let mock = mock().await;
    let store = MemoryStore::new();
    let first = pool(&mock, store.clone());
    let alice = first.cache("alice@example.com").await.unwrap();
    assert_eq!((first.stats().mints(), first.stats().loaded()), (1, 0));
    drop((first, alice));

    // The process restarts: its new pool finds alice's pair in the store.
    let restarted = TokenPool::with_client(mock.token_client())
        .store(store.clone())
        .idle_timeout(Duration::from_secs(60))
        .build();
    let again = restarted.cache("alice@example.com").await.unwrap();
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    assert_eq!(
        (restarted.stats().mints(), restarted.stats().loaded()),
        (0, 1)
    );
    let token = again.current().access_token().to_owned();
    drop(again);

    // Idle past the timeout: evicted, then looked up again, from the store.
    // (In steps, so the sweep's ticks come on time: idle for 75 s at most.)
    for _ in 0..16 {
        advance(Duration::from_secs(5)).await;
    }
    common::yields(100).await;
    restarted.run_pending_tasks().await;
    assert_eq!(restarted.stats().evictions(), 1);
    let back = restarted.cache("alice@example.com").await.unwrap();
    assert_eq!(back.current().access_token(), token);
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    assert_eq!(
        (restarted.stats().mints(), restarted.stats().loaded()),
        (0, 2)
    );
}

#[tokio::test]
async fn a_failed_mint_with_a_store_is_a_mint_failure_and_the_next_lookup_mints() {
    let mock = mock().await;
    let pool = pool(&mock, MemoryStore::new());
    mock.inject(
        MockEndpoint::CreateSubscriberToken,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
        1,
    );
    let error = pool.cache("alice@example.com").await.unwrap_err();
    assert!(error.is_mint_failed(), "{error:?}");
    assert_eq!((pool.stats().mints(), pool.stats().mint_failures()), (1, 1));
    let alice = pool.cache("alice@example.com").await.unwrap();
    assert!(alice.current().refresh_token().is_some());
    assert_eq!((pool.stats().mints(), pool.stats().mint_failures()), (2, 1));
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_with_their_own_redis_connections_share_each_subscribers_chain() {
    use signalwire_auth::RedisStore;

    let Some(server) = common::redis::RedisServer::start("pools_share_through_redis").await else {
        return;
    };
    let mock = mock().await;
    let pools: Vec<_> = (0..2)
        .map(|_| pool(&mock, RedisStore::new(&server.url()).unwrap()))
        .collect();
    let clients: Vec<_> = pools.iter().map(|pool| client(pool, &mock)).collect();
    let who: Vec<_> = (0..5).map(subscriber).collect();

    let statuses = round(&clients, &mock, &who).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 5);

    // Each subscriber's chain is refreshed once, by one pool; the other adopts the result.
    for subscriber in &who {
        let first = pools[0].cache(subscriber.reference()).await.unwrap();
        let second = pools[1].cache(subscriber.reference()).await.unwrap();
        first.refresh_now().await.unwrap();
        second.refresh_now().await.unwrap();
        assert_eq!(mock.subscriber_refreshes(subscriber.reference()), 1);
        assert_eq!(
            first.current().access_token(),
            second.current().access_token()
        );
        assert_eq!(second.store_stats().unwrap().adopted(), 1);
    }
    let statuses = round(&clients, &mock, &who).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(mock.reused_refresh_tokens(), 0);
}
