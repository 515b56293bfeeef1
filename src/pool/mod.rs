//! Feature `pool`: many subscribers in one process. [`TokenPool`] keeps one
//! [`TokenCache`](crate::TokenCache) per subscriber, minted on first use, bounded and evicted
//! when idle; [`Subscriber`] names, per request, whose token
//! [`BearerAuthLayer::pooled`](crate::BearerAuthLayer::pooled) sends.
//!
//! Files: `subscriber` (the request extension), `stats`, `index` (the lookup every request
//! makes, in front of moka), `builder` (settings, and the one place an entry's cache is made),
//! `handle` (`TokenPool`, over moka's future cache), `sweep` (idle eviction), `retry` (backoff between failed mints), `recent` (what a pooled
//! service remembers of the subscriber it last sent for).

mod builder;
mod handle;
mod index;
pub(crate) mod recent;
mod retry;
mod stats;
mod subscriber;
mod sweep;

pub use builder::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SUBSCRIBERS, TokenPoolBuilder};
pub use handle::TokenPool;
pub use stats::PoolStats;
pub use subscriber::Subscriber;
