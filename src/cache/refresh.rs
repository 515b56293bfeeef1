//! How a cache gets its next token pair.

use std::{error::Error as StdError, fmt, future::Future, time::Duration};

use tower::BoxError;

use crate::TokenPair;

/// Produces the next [`TokenPair`] from the current one.
///
/// [`TokenCache`](crate::TokenCache) calls it from a task of its own, at most once at a time, so
/// an implementation never has to guard against concurrent calls for the same pair. It is
/// implemented by [`SubscriberRefresher`](crate::SubscriberRefresher) (SignalWire's refresh
/// endpoint) and by closures `Fn(TokenPair) -> impl Future<Output = Result<TokenPair, RefreshError>>`,
/// for apps that get their SATs from their own backend:
///
/// ```
/// use std::time::Duration;
/// use signalwire_auth::{RefreshError, TokenCache, TokenPair};
/// use tokio::time::Instant;
///
/// # async fn ask_my_backend() -> Result<String, std::io::Error> { Ok("fresh".into()) }
/// # fn main() -> Result<(), signalwire_auth::Error> {
/// let first = TokenPair::new("first", Instant::now(), Duration::from_secs(3600))?;
/// let cache = TokenCache::new(first, |_current: TokenPair| async move {
///     let sent = Instant::now();
///     let token = ask_my_backend().await.map_err(RefreshError::transient)?;
///     TokenPair::new(token, sent, Duration::from_secs(3600)).map_err(RefreshError::terminal)
/// });
/// # drop(cache);
/// # Ok(())
/// # }
/// ```
pub trait Refresh: Send + Sync + 'static {
    /// Returns the pair that replaces `current`.
    fn refresh(
        &self,
        current: &TokenPair,
    ) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send;

    /// Whether [`mint`](Self::mint) can start a new chain without a refresh token (default
    /// `false`). A cache that shares its pair through a [`TokenStore`](crate::TokenStore)
    /// mints when it must not present the refresh token it holds: the store is unreachable
    /// (no lease, so no refresh), the stored value is garbage, or the replica that held the
    /// lease vanished mid-refresh and may have spent it.
    fn can_mint(&self) -> bool {
        false
    }

    /// A new pair that spends no refresh token. The default fails: it cannot.
    fn mint(&self) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        std::future::ready(Err(RefreshError::terminal(
            "this refresher cannot mint a new pair",
        )))
    }
}

impl<F, Fut> Refresh for F
where
    F: Fn(TokenPair) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<TokenPair, RefreshError>> + Send,
{
    fn refresh(
        &self,
        current: &TokenPair,
    ) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        self(current.clone())
    }
}

/// Why a refresh did not produce a pair, and whether trying again can help.
///
/// - *Transient* (unreachable, timed out, rate limited, 5xx): the cache keeps serving the current
///   token while it is valid and retries with capped, jittered exponential backoff.
/// - *Terminal* (the refresh token expired or was refused, credentials rejected): retrying
///   cannot help; requests that need a new token fail with
///   [`Error::is_reauthentication_needed`](crate::Error::is_reauthentication_needed) until a new
///   pair is installed.
///
/// Its `Display` says only which of the two it is; the cause is its
/// [`source`](std::error::Error::source), so a chain walk prints each fact once.
///
/// ```
/// use std::{error::Error as _, time::Duration};
/// use signalwire_auth::RefreshError;
///
/// let busy = RefreshError::transient("backend busy").with_retry_after(Duration::from_secs(5));
/// assert!(busy.is_transient());
/// assert_eq!(busy.retry_after(), Some(Duration::from_secs(5)));
///
/// let spent = RefreshError::terminal("refresh token already used");
/// assert!(spent.is_terminal());
/// assert_eq!(spent.source().unwrap().to_string(), "refresh token already used");
/// assert!(!spent.to_string().contains("already used"), "said once, by the source");
/// ```
pub struct RefreshError {
    terminal: bool,
    retry_after: Option<Duration>,
    source: BoxError,
}

impl RefreshError {
    /// A failure that may clear by itself; the cache will try again.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self {
            terminal: false,
            retry_after: None,
            source: source.into(),
        }
    }

    /// A failure that trying again cannot fix: new tokens are needed.
    pub fn terminal(source: impl Into<BoxError>) -> Self {
        Self {
            terminal: true,
            retry_after: None,
            source: source.into(),
        }
    }

    /// Asks the cache to wait at least `delay` before the next attempt (a `Retry-After`).
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        !self.terminal
    }

    /// Whether new tokens are needed.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// The smallest delay before the next attempt the source asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Debug for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshError")
            .field("terminal", &self.terminal)
            .field("retry_after", &self.retry_after)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // What this level adds; the cause is the source, printed by whoever walks the chain.
        f.write_str(if self.terminal {
            "the refresher gave up (retrying cannot help)"
        } else {
            "the refresher failed (the cache retries with backoff)"
        })
    }
}

impl StdError for RefreshError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}
