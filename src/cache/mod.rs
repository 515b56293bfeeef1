//! The token cache: the current pair, and the single-flight refresh that replaces it.

mod authorization;
mod flight;
mod pair;
mod refresh;
mod state;
mod token_cache;

pub use authorization::Authorization;
pub(crate) use pair::check_token;
pub use pair::{TokenHeader, TokenPair};
pub use refresh::{Refresh, RefreshError};
pub(crate) use state::State;
pub use token_cache::{CacheStats, TokenCache, TokenCacheBuilder};
pub(crate) use token_cache::{LocalCache, Ticket};
