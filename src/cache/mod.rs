//! The token cache: the current pair, and the single-flight refresh that replaces it.

mod pair;
mod refresh;

pub use pair::{TokenHeader, TokenPair};
pub use refresh::{Refresh, RefreshError};
