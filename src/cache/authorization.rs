//! The credential to send: [`TokenCache::authorization`] and [`TokenCache::reauthorize`], the
//! two calls every adapter (the tower layer, the reqwest middleware, a client of your own) is
//! built on, so that the refresh rules live in one place.

use std::{fmt, future, sync::Arc};

use http::HeaderValue;
use tokio::time::Instant;

use super::{State, Ticket, TokenCache, flight::WaitFuture};
use crate::{Error, error::Kind};

/// The `Authorization` header value to send now, and the generation of the token it carries.
///
/// From [`TokenCache::authorization`] (or [`try_authorization`](TokenCache::try_authorization)).
/// Keep it with the request: after a 401, [`TokenCache::reauthorize`] needs it to tell a 401
/// for the current token (refresh once) from one for a token already replaced (replay with the
/// current one). Cheap to clone (a reference count). Its `Debug` never shows the token, and the
/// header value is marked sensitive.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use signalwire_auth::{TokenCache, TokenPair};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), signalwire_auth::Error> {
/// let cache = TokenCache::fixed("my-token")?;
/// let auth = cache.authorization().await?;
/// assert_eq!(auth.header_value(), "Bearer my-token");
/// assert!(auth.header_value().is_sensitive());
/// assert!(!format!("{auth:?}").contains("my-token"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Authorization {
    state: Arc<State>,
}

impl Authorization {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// `Bearer <token>`, marked sensitive: set it as the request's `Authorization` header.
    pub fn header_value(&self) -> &HeaderValue {
        &self.state.header
    }

    /// The generation of the token (see [`CacheStats::generation`](crate::CacheStats::generation)).
    pub fn generation(&self) -> u64 {
        self.state.generation
    }

    /// The access token, for cutting out of error text the server echoes back.
    pub(crate) fn token(&self) -> &str {
        self.state.pair.access_token()
    }

    /// When the access token expires, as tracked by the cache.
    pub fn expires_at(&self) -> Instant {
        self.state.pair.expires_at()
    }
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("generation", &self.state.generation)
            .field("header", &"Bearer <redacted>")
            .finish()
    }
}

impl TokenCache {
    /// The credential to send now, under the rules of [`BearerAuthLayer`](crate::BearerAuthLayer):
    ///
    /// - a fresh token is returned at once;
    /// - past the advisory deadline, the first caller starts one background refresh, and every
    ///   caller gets the still-valid token at once;
    /// - past the hard deadline, callers wait for the one refresh in flight (a transient failure
    ///   still hands out the old token while it is valid);
    /// - a broken chain fails at once with [`Error::is_reauthentication_needed`], a failed
    ///   refresh of an expired token with [`Error::is_refresh_failed`].
    ///
    /// Cancelling the call cancels nothing shared: the refresh runs in a task of its own.
    ///
    /// # Example
    ///
    /// A client of your own, over any HTTP library:
    ///
    /// ```
    /// use std::time::Duration;
    /// use signalwire_auth::{RefreshError, TokenCache, TokenPair};
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), signalwire_auth::Error> {
    /// let pair = TokenPair::new("first", Instant::now(), Duration::from_secs(3600))?;
    /// let cache = TokenCache::new(pair, |_old: TokenPair| async move {
    ///     TokenPair::new("second", Instant::now(), Duration::from_secs(3600))
    ///         .map_err(RefreshError::terminal)
    /// });
    ///
    /// let auth = cache.authorization().await?;
    /// assert_eq!(auth.header_value(), "Bearer first");
    /// // ... the server answers 401 to `auth`: one refresh, shared by every caller.
    /// let again = cache.reauthorize(&auth).await?;
    /// assert_eq!(again.header_value(), "Bearer second");
    /// assert_eq!(cache.stats().refreshes(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn authorization(&self) -> Result<Authorization, Error> {
        let state = self.local().load().clone();
        match self.ticket(&state) {
            Ticket::Ready => Ok(Authorization::new(state)),
            Ticket::Wait(wait) => wait.await.map(Authorization::new),
            Ticket::Failed(error) => Err(error),
        }
    }

    /// The credential to send now, if that needs no waiting: `Some` for a fresh token and in
    /// the advisory window (where it starts the background refresh, as
    /// [`authorization`](Self::authorization) does), `None` when the caller must await
    /// [`authorization`](Self::authorization) instead. Never blocks and allocates nothing.
    ///
    /// # Example
    ///
    /// ```
    /// # fn main() -> Result<(), signalwire_auth::Error> {
    /// let cache = signalwire_auth::TokenCache::fixed("my-token")?;
    /// let auth = cache.try_authorization().expect("a fixed token is always fresh");
    /// assert_eq!(auth.header_value(), "Bearer my-token");
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_authorization(&self) -> Option<Authorization> {
        let state = self.local().load().clone();
        match self.ticket(&state) {
            Ticket::Ready => Some(Authorization::new(state)),
            Ticket::Wait(_) | Ticket::Failed(_) => None,
        }
    }

    /// After the server answered 401 to `rejected`: the credential to send the request again
    /// with. If the cache has moved on since `rejected`, the current one, at once; otherwise
    /// after one refresh shared with every other caller (10,000 callers with the same
    /// `rejected` cost one refresh). Send the request again at most once.
    ///
    /// Fails with [`Error::is_unauthorized`] where a new token cannot help: `rejected` was
    /// itself obtained because of a 401 less than 30 s ago (the server refuses something else,
    /// such as a missing scope; an endpoint that always answers 401 costs at most one refresh),
    /// or the cache holds a [fixed](Self::fixed) token. Fails like
    /// [`authorization`](Self::authorization) when the refresh fails.
    ///
    /// See [`authorization`](Self::authorization) for an example.
    pub async fn reauthorize(&self, rejected: &Authorization) -> Result<Authorization, Error> {
        match self.reauthorization(rejected.generation()) {
            Some(wait) => wait.await.map(Authorization::new),
            None => Err(cannot_help()),
        }
    }

    /// After a 401 to `rejected` for a request that will not be sent again (its body cannot be
    /// replayed): starts the refresh that [`reauthorize`](Self::reauthorize) would, in the
    /// background, so the next request gets a new token. Under the same rules: nothing happens
    /// if the cache has moved on, the token is fixed, or it was refreshed because of a 401
    /// moments ago.
    pub fn unauthorized(&self, rejected: &Authorization) {
        self.refresh_in_background(rejected.generation());
    }

    /// The wait behind [`reauthorize`](Self::reauthorize), for a request sent with
    /// `generation`; `None` where a new token cannot help. Shared with the tower future.
    pub(crate) fn reauthorization(&self, generation: u64) -> Option<WaitFuture> {
        let current = self.local().load().clone();
        if current.generation != generation && self.is_refreshable() {
            // Someone already replaced the rejected token: replay with the current one.
            return Some(Box::pin(future::ready(Ok(current))));
        }
        self.after_unauthorized(generation)
    }
}

fn cannot_help() -> Error {
    Error::new(Kind::Unauthorized).with_detail(
        "the server refused a token obtained because of a 401 moments ago (a missing scope?), \
         or a fixed token; sending the request again would not help",
    )
}
