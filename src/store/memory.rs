//! `MemoryStore`: a `TokenStore` in this process.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::broadcast, time::Instant};

use super::{StoreFuture, StoreKey, StoredPair, TokenStore};

/// A [`TokenStore`] in this process: caches that share one (clones share it) share their
/// subscribers' pairs and leases as replicas sharing a [`RedisStore`](crate::RedisStore)
/// would, without a server. A cache built without a store keeps its pair to itself, which is
/// the same as a `MemoryStore` of its own.
///
/// Leases expire by Tokio's clock, so paused test time applies.
///
/// ```
/// use std::time::Duration;
/// use signalwire_auth::{MemoryStore, Space, StoreKey, StoredPair, TokenPair, TokenStore};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), signalwire_auth::Error> {
/// let store = MemoryStore::new();
/// let key = StoreKey::new(&Space::new("example")?, "alice@example.com");
/// let pair = TokenPair::new("sat", Instant::now(), Duration::from_secs(3600))?;
///
/// assert!(store.acquire_lease(&key, "replica-a", Duration::from_secs(10)).await?);
/// assert!(!store.acquire_lease(&key, "replica-b", Duration::from_secs(10)).await?);
/// assert!(store.compare_and_set(&key, 0, &StoredPair::from_pair(&pair, 1)).await?);
/// assert!(!store.compare_and_set(&key, 0, &StoredPair::from_pair(&pair, 1)).await?, "stale");
/// assert!(store.release_lease(&key, "replica-a").await?);
/// assert_eq!(store.load(&key).await?.map(|p| p.version()), Some(1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    entries: Mutex<HashMap<StoreKey, Entry>>,
    changes: broadcast::Sender<StoreKey>,
}

#[derive(Default)]
struct Entry {
    pair: Option<StoredPair>,
    lease: Option<(Box<str>, Instant)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: Mutex::default(),
                changes: broadcast::channel(64).0,
            }),
        }
    }

    fn with<T>(&self, key: &StoreKey, f: impl FnOnce(&mut Entry) -> T) -> T {
        // Plain data, never left half-written: a poisoned lock is still sound.
        let mut entries = self
            .inner
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(entries.entry(key.clone()).or_default())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenStore for MemoryStore {
    fn load<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredPair>> {
        let pair = self.with(key, |entry| entry.pair.clone());
        Box::pin(async move { Ok(pair) })
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a StoreKey,
        expected_version: u64,
        pair: &'a StoredPair,
    ) -> StoreFuture<'a, bool> {
        let written = self.with(key, |entry| {
            let version = entry.pair.as_ref().map_or(0, StoredPair::version);
            let written = version == expected_version;
            if written {
                entry.pair = Some(pair.clone());
            }
            written
        });
        if written {
            // Nobody listening is no error.
            let _ = self.inner.changes.send(key.clone());
        }
        Box::pin(async move { Ok(written) })
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a StoreKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let now = Instant::now();
        let acquired = self.with(key, |entry| match &entry.lease {
            Some((_, until)) if *until > now => false,
            _ => {
                entry.lease = Some((owner.into(), now + ttl));
                true
            }
        });
        Box::pin(async move { Ok(acquired) })
    }

    fn release_lease<'a>(&'a self, key: &'a StoreKey, owner: &'a str) -> StoreFuture<'a, bool> {
        let now = Instant::now();
        let released = self.with(key, |entry| match &entry.lease {
            Some((holder, until)) if &**holder == owner && *until > now => {
                entry.lease = None;
                true
            }
            _ => false,
        });
        Box::pin(async move { Ok(released) })
    }

    fn changes(&self) -> broadcast::Receiver<StoreKey> {
        self.inner.changes.subscribe()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self
            .inner
            .entries
            .lock()
            .map(|entries| entries.len())
            .unwrap_or_default();
        f.debug_struct("MemoryStore")
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}
