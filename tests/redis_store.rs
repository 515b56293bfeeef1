//! `RedisStore` against a real `redis-server` (issue 11): compare-and-set by version, the
//! lease, change notifications, garbage under the key, an unreachable server at start, and
//! no secret in `Debug`.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::redis::{REFERENCE, RedisServer, credentials, replica, setup};
use signalwire_auth::{
    RedisStore, StoreKey, StoredPair, TokenPair, TokenStore, mock::MockEndpoint,
};
use tokio::time::Instant;

fn pair(token: &str) -> StoredPair {
    let pair = TokenPair::new(token, Instant::now(), Duration::from_secs(3600))
        .and_then(|pair| pair.with_refresh_token("refresh-token", Duration::from_secs(3900)))
        .unwrap();
    StoredPair::from_pair(&pair, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_goes_by_version_and_announces_each_write() {
    let Some(server) = RedisServer::start("compare_and_set_goes_by_version").await else {
        return;
    };
    let store = RedisStore::new(&server.url()).unwrap();
    let other = RedisStore::new(&server.url()).unwrap();
    let key = StoreKey::new(&signalwire_auth::Space::new("example").unwrap(), "alice");
    let mut changes = other.changes();
    // The subscription is made in the background: write until it is seen.
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert!(
        store
            .compare_and_set(&key, 0, &pair("first").with_version(1))
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_set(&key, 0, &pair("stale").with_version(1))
            .await
            .unwrap(),
        "a stale writer loses"
    );
    let mut version = 1;
    let seen = loop {
        let next = pair("next").with_version(version + 1);
        assert!(store.compare_and_set(&key, version, &next).await.unwrap());
        version += 1;
        match tokio::time::timeout(Duration::from_millis(200), changes.recv()).await {
            Ok(seen) => break seen.unwrap(),
            Err(_) if version < 50 => continue,
            Err(_) => panic!("no change notification arrived"),
        }
    };
    assert_eq!(seen, key);
    let loaded = other.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.version(), version);
    assert!(loaded.same_access_token(&pair("next").to_pair().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_exclusive_expires_and_is_released_only_by_its_owner() {
    let Some(server) = RedisServer::start("the_lease_is_exclusive").await else {
        return;
    };
    let store = RedisStore::new(&server.url()).unwrap();
    let key = StoreKey::new(&signalwire_auth::Space::new("example").unwrap(), "bob");
    let ttl = Duration::from_secs(30);
    assert!(store.acquire_lease(&key, "a", ttl).await.unwrap());
    assert!(!store.acquire_lease(&key, "b", ttl).await.unwrap());
    assert!(
        !store.release_lease(&key, "b").await.unwrap(),
        "not b's to release"
    );
    // SET … NX PX: it expires on its own.
    let pttl = server
        .command(&["PTTL", "signalwire-auth:lease:example.signalwire.com/bob"])
        .await
        .unwrap();
    let left: u64 = pttl.trim_start_matches(':').parse().unwrap();
    assert!(left > 0 && left <= 30_000, "{pttl}");
    assert!(store.release_lease(&key, "a").await.unwrap());
    assert!(store.acquire_lease(&key, "b", ttl).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_the_key_is_a_typed_error_then_reminted_and_overwritten() {
    let Some((server, mock)) = setup("garbage_under_the_key").await else {
        return;
    };
    let cache = replica(&mock.space(), credentials(), &server.url())
        .start()
        .await
        .unwrap();
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    let key = StoreKey::new(&mock.space(), REFERENCE);
    let name = format!("signalwire-auth:pair:{key}");
    for junk in ["garbage", "{\"version\":\"x\"}", "[1,2]"] {
        assert_eq!(server.command(&["SET", &name, junk]).await.unwrap(), "+OK");
        let store = RedisStore::new(&server.url()).unwrap();
        let error = store.load(&key).await.unwrap_err();
        assert!(error.is_store_corrupt(), "{error:?}");
        assert!(!error.is_store());

        let before = mock.calls(MockEndpoint::CreateSubscriberToken);
        cache.refresh_now().await.unwrap();
        assert_eq!(
            mock.calls(MockEndpoint::CreateSubscriberToken),
            before + 1,
            "re-minted"
        );
        let stored = store.load(&key).await.unwrap().unwrap();
        assert!(stored.same_access_token(&cache.current()), "overwritten");
    }
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 0);
    assert_eq!(mock.reused_refresh_tokens(), 0);
    assert!(cache.store_stats().unwrap().corrupt() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_starts_alone_while_redis_is_down_and_shares_once_it_is_back() {
    let Some((mut server, mock)) = setup("a_cache_starts_alone").await else {
        return;
    };
    server.stop();
    let alone = replica(&mock.space(), credentials(), &server.url())
        .start()
        .await
        .unwrap();
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    assert!(alone.store_stats().unwrap().store_errors() >= 1);

    server.restart().await;
    // Its next refresh takes the lease, refreshes its own pair and stores the result.
    let refreshed = alone.refresh_now().await.unwrap();
    let other = replica(&mock.space(), credentials(), &server.url())
        .start()
        .await
        .unwrap();
    assert_eq!(other.current().access_token(), refreshed.access_token());
    assert_eq!(
        mock.calls(MockEndpoint::CreateSubscriberToken),
        1,
        "no mint: shared"
    );
    assert_eq!(mock.reused_refresh_tokens(), 0);
}

#[tokio::test]
async fn debug_never_shows_the_url_or_its_password() {
    let store = RedisStore::builder("redis://:hunter2@127.0.0.1:1/")
        .prefix("app")
        .build()
        .unwrap();
    let shown = format!(
        "{store:?} {:?}",
        RedisStore::builder("redis://:hunter2@127.0.0.1:1/")
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("app"), "{shown}");
    let error = RedisStore::new("not a url").unwrap_err();
    assert!(error.is_invalid_input(), "{error:?}");
    assert!(error.to_string().contains("redis url"), "{error}");
}
