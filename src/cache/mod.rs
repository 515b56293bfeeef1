//! The token cache: the current pair, and the single-flight refresh that replaces it.

mod pair;
mod refresh;

pub(crate) use pair::check_token;
pub use pair::{TokenHeader, TokenPair};
pub use refresh::{Refresh, RefreshError};
