//! The `TokenStore` trait: what a cache needs from a store shared by replicas.

use std::{future::Future, pin::Pin, time::Duration};

use tokio::sync::broadcast;

use super::{StoreKey, StoredPair};
use crate::Error;

/// The future a [`TokenStore`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Where replicas keep the token pair they share, and the lease that lets one of them at a
/// time refresh it.
///
/// A [`TokenCache`](crate::TokenCache) given a store (with
/// [`TokenCacheBuilder::store`](crate::TokenCacheBuilder::store)) reads the pair through it
/// at start and before every refresh, and refreshes only while it holds the key's lease:
/// take the lease, read the pair again (another replica may have refreshed it already: use
/// theirs), refresh with a deadline shorter than the lease, write the result by version,
/// release the lease. Replicas that do not get the lease wait for the change notification
/// and read the new pair; they never present the refresh token the holder presented.
///
/// The trait is object safe, with boxed futures, so that a cache holds any store without a
/// type parameter (`TokenCache` has none); one allocation per call is nothing beside a round
/// trip to the store.
///
/// Errors: [`Error::store`] when the store cannot be reached or fails to answer,
/// [`Error::store_corrupt`] from [`load`](Self::load) when the value under the key is not a
/// readable pair. Implementations are [`MemoryStore`](crate::MemoryStore) and
/// [`RedisStore`](crate::RedisStore) (feature `redis`).
pub trait TokenStore: Send + Sync + 'static {
    /// The pair stored under `key`, if any.
    fn load<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredPair>>;

    /// Writes `pair` under `key` if the stored pair's version is `expected_version`, and then
    /// notifies [`changes`](Self::changes) subscribers (of every replica) of `key`.
    /// `Ok(false)` if the version differs: someone else wrote first.
    ///
    /// A key with nothing under it, or with a value that is not a readable pair, has version
    /// 0, so the first write expects 0 and garbage can be overwritten.
    /// `pair.version()` must be greater than `expected_version`.
    fn compare_and_set<'a>(
        &'a self,
        key: &'a StoreKey,
        expected_version: u64,
        pair: &'a StoredPair,
    ) -> StoreFuture<'a, bool>;

    /// Takes the refresh lease of `key` for `owner` for `ttl`, unless someone holds it:
    /// `Ok(true)` if `owner` holds it now. A lease nobody releases ends after its `ttl`.
    fn acquire_lease<'a>(
        &'a self,
        key: &'a StoreKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool>;

    /// Releases the lease of `key` if `owner` still holds it (compare and delete):
    /// `Ok(false)` if it had expired or another owner holds it.
    fn release_lease<'a>(&'a self, key: &'a StoreKey, owner: &'a str) -> StoreFuture<'a, bool>;

    /// Keys whose pair was written, by any replica. A hint that may come late or not at all
    /// (a store that lost its connection): caches also re-read the store on their own.
    fn changes(&self) -> broadcast::Receiver<StoreKey>;
}
