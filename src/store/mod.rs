//! Persistence and replicas: where token pairs are kept so that they survive a restart and
//! many replicas share one refresh chain per subscriber.
//!
//! `pair` (a stored pair and its key) → `token_store` (the trait) → `memory`, `redis` (the
//! two stores). The cache's side, the lease protocol, is `cache::replica`.

mod memory;
mod pair;
#[cfg(feature = "redis")]
mod redis;
mod token_store;

pub use memory::MemoryStore;
pub use pair::{StoreKey, StoredPair};
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};
pub use token_store::{StoreFuture, TokenStore};
