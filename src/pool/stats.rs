//! `PoolStats` and the counters behind it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a [`TokenPool`](crate::TokenPool), from [`TokenPool::stats`](crate::TokenPool::stats).
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use signalwire_auth::{MockSpace, TokenPool};
///
/// let mock = MockSpace::start().await?;
/// let pool = TokenPool::with_client(mock.token_client()).build();
/// pool.cache("alice@example.com").await?; // minted
/// pool.cache("alice@example.com").await?; // found
/// let stats = pool.stats();
/// assert_eq!((stats.misses(), stats.mints(), stats.hits()), (1, 1, 1));
/// assert_eq!((stats.mint_failures(), stats.evictions(), stats.live()), (0, 0, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) mints: u64,
    pub(crate) loaded: u64,
    pub(crate) mint_failures: u64,
    pub(crate) evictions: u64,
    pub(crate) live: u64,
}

impl PoolStats {
    /// Lookups that found the subscriber's cache at once (requests and
    /// [`cache`](crate::TokenPool::cache) calls).
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that did not, and waited for a mint (their own or one already in flight), or
    /// were refused at once during a failed mint's backoff.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Create Subscriber Token calls the pool made for new entries (the entries' own re-mints,
    /// when a refresh chain breaks, are counted by their caches).
    pub fn mints(&self) -> u64 {
        self.mints
    }

    /// New entries that started from a usable pair in the pool's
    /// [store](crate::TokenPoolBuilder::store), without a mint.
    pub fn loaded(&self) -> u64 {
        self.loaded
    }

    /// New entries that could not be made: a failed mint, or, with a store, nothing usable
    /// stored (or the store unreachable) and a failed mint. Each failure is shared by the
    /// lookups that waited for it.
    pub fn mint_failures(&self) -> u64 {
        self.mint_failures
    }

    /// Entries removed for the size bound or for being idle.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Entries in the pool now.
    pub fn live(&self) -> u64 {
        self.live
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) misses: AtomicU64,
    pub(crate) mints: AtomicU64,
    pub(crate) loaded: AtomicU64,
    pub(crate) mint_failures: AtomicU64,
    pub(crate) evictions: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
