//! The token cache: the current pair, and the single-flight refresh that replaces it.
//!
//! Each module imports only from the ones before it in this order (below, in `mod` lines, the
//! order is rustfmt's):
//! `pair` (a token pair) → `refresh` (how to get the next one) → `settings` (deadlines,
//! backoff, jitter) → `state` (one installed pair and its phase) → `core` (the current state,
//! counters, hook queue) → `replica` (the lease protocol with a store) → `flight` (the one
//! refresh in flight) → `handle` (`TokenCache`).

mod authorization;
mod core;
mod flight;
mod handle;
mod pair;
mod refresh;
mod replica;
mod settings;
mod state;

pub use authorization::Authorization;
#[cfg(feature = "pool")]
pub(crate) use core::BoxFuture;
pub use handle::{CacheStats, TokenCache, TokenCacheBuilder};
pub(crate) use handle::{LocalCache, Ticket};
pub(crate) use pair::check_token;
pub use pair::{TokenHeader, TokenPair};
pub use refresh::{Refresh, RefreshError};
pub use replica::StoreStats;
#[cfg(feature = "pool")]
pub(crate) use settings::{MAX_RETRY_AFTER, backoff};
pub(crate) use state::State;
