//! Three replicas share one subscriber's refresh chain through a `TokenStore`: one mint for
//! all of them, one refresh per rotation, and a restart that costs no mint.
//!
//! With `REDIS_URL` set (`redis://127.0.0.1:6379/`) the replicas share a `RedisStore`, each
//! with its own connections, as processes on different machines would; without it, a
//! `MemoryStore`. The SignalWire side is an embedded `MockSpace`.
//!
//! ```text
//! cargo run --example replicas
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example replicas
//! ```

use signalwire_auth::{
    CreateSubscriberToken, MemoryStore, RedisStore, StoreKey, SubscriberRefresher, TokenCache,
    TokenClient, TokenStore,
    mock::{MockEndpoint, MockSpace},
};
use tower::BoxError;

const REFERENCE: &str = "alice@example.com";

/// One replica's cache: its refresher (which can re-mint) and its handle on the store.
async fn replica(
    mock: &MockSpace,
    store: impl TokenStore,
    key: &StoreKey,
) -> Result<TokenCache, BoxError> {
    let client = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
    let refresher =
        SubscriberRefresher::with_client(client).with_remint(CreateSubscriberToken::new(REFERENCE));
    Ok(TokenCache::from_store(refresher, store, key.clone())
        .start()
        .await?)
}

async fn replicas(
    mock: &MockSpace,
    key: &StoreKey,
    redis: Option<&str>,
    memory: &MemoryStore,
) -> Result<Vec<TokenCache>, BoxError> {
    let mut caches = Vec::new();
    for _ in 0..3 {
        caches.push(match redis {
            Some(url) => replica(mock, RedisStore::new(url)?, key).await?,
            None => replica(mock, memory.clone(), key).await?,
        });
    }
    Ok(caches)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mock = MockSpace::start().await?;
    let key = StoreKey::new(&mock.space(), REFERENCE);
    let redis = std::env::var("REDIS_URL").ok();
    let memory = MemoryStore::new();
    println!(
        "store: {}",
        if redis.is_some() {
            "redis"
        } else {
            "memory (set REDIS_URL for redis)"
        }
    );

    let caches = replicas(&mock, &key, redis.as_deref(), &memory).await?;
    println!(
        "3 replicas started: {} mint(s)",
        mock.calls(MockEndpoint::CreateSubscriberToken)
    );

    // Each asks for a new token; one refreshes under the lease, the others adopt its pair.
    for cache in &caches {
        cache.refresh_now().await?;
    }
    let same = caches
        .windows(2)
        .all(|w| w[0].current().access_token() == w[1].current().access_token());
    println!(
        "after a refresh on each: {} refresh call(s), same token everywhere: {same}, \
         refresh tokens presented twice: {}",
        mock.calls(MockEndpoint::RefreshSubscriberToken),
        mock.reused_refresh_tokens()
    );
    for (n, cache) in caches.iter().enumerate() {
        let stats = cache.store_stats().expect("a cache with a store");
        println!(
            "  replica {n}: leases {}, adopted {}, written {}",
            stats.leases(),
            stats.adopted(),
            stats.written()
        );
    }

    // Restart every replica: they start from the stored pair.
    drop(caches);
    let restarted = replicas(&mock, &key, redis.as_deref(), &memory).await?;
    println!(
        "restarted: {} mint(s) in all, token kept: {}",
        mock.calls(MockEndpoint::CreateSubscriberToken),
        restarted[0].current().access_token() == restarted[2].current().access_token()
    );
    Ok(())
}
