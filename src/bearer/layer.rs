//! `BearerAuthLayer`.

use std::{fmt, marker::PhantomData};

use tower_layer::Layer;

use super::BearerAuth;
#[cfg(feature = "pool")]
use crate::TokenPool;
use crate::{Error, TokenCache, transport::TransportRule};

/// The default size up to which a request body is kept for a replay after a 401: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// Adds `Authorization: Bearer <token>` to every request, from a [`TokenCache`] that keeps the
/// token fresh, or from a fixed token.
///
/// Per request it costs a pointer comparison and an atomic load to see that the token is
/// current, a reference-count bump to copy its ready-made, sensitive header value, and one more
/// to keep the cache at hand in case of a 401: no lock and no clock read. With replay off ([`replay_limit(0)`](Self::replay_limit)) it allocates nothing; with
/// replay on it keeps what a replay needs (see README's performance table). When the token
/// nears expiry the cache refreshes it (see [`TokenCache`]).
///
/// When the server answers 401 to a request sent with the current token, the layer refreshes
/// the token once, shared with every other request that got a 401 at the same time, and sends
/// the request once more with the new token; a second 401 is returned to the caller. A 401 for
/// a token the cache has already replaced is replayed at once with the current one. The
/// rules are those of [`TokenCache::authorization`] and [`TokenCache::reauthorize`], which
/// this layer is built on. While the refresh runs, the 401's body is read to its end (up to
/// 64 KiB and 1 s; a larger or slower one is dropped), so that the replay can reuse an HTTP/1
/// connection and an HTTP/2 stream ends cleanly rather than being reset. Bodies are
/// replayed if they were empty or fit in the [replay limit](Self::replay_limit); a request
/// whose body cannot be replayed gets its 401 back unchanged, marked with the
/// [`ReplaySkipped`](crate::ReplaySkipped) extension, and a refresh starts so the next request
/// can succeed. A 401 for a token that was itself obtained because of a 401 less than 30 s ago
/// starts no refresh and is not replayed (also marked `ReplaySkipped`): the server is refusing
/// something else, such as a missing scope, and an endpoint that always answers 401 must not
/// cost a refresh per request. 403s and other statuses are never retried. If the refresh itself
/// fails, the call fails with an [`Error`] that says why
/// ([`is_reauthentication_needed`](Error::is_reauthentication_needed) or
/// [`is_refresh_failed`](Error::is_refresh_failed)).
///
/// The inner service receives [`ReplayBody<B>`](crate::ReplayBody) bodies and must be `Clone`
/// (hyper-util's client, `Buffer` and most tower services are). Credentials only go to
/// SignalWire's hosts over `https` and to loopback, unless [`for_space`](Self::for_space) or
/// [`allow_host`](Self::allow_host) say otherwise. Put this layer outside `FollowRedirectLayer` so that
/// cross-origin redirects lose the token.
///
/// # Example
///
/// ```
/// use std::{convert::Infallible, time::Duration};
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode, header::AUTHORIZATION};
/// use http_body_util::Full;
/// use signalwire_auth::{BearerAuthLayer, RefreshError, ReplayBody, TokenCache, TokenPair};
/// use tokio::time::Instant;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let first = TokenPair::new("first", Instant::now(), Duration::from_secs(3600))?;
/// let cache = TokenCache::new(first, |_old: TokenPair| async move {
///     TokenPair::new("second", Instant::now(), Duration::from_secs(3600))
///         .map_err(RefreshError::terminal)
/// });
///
/// // A server that only accepts the second token.
/// let server = service_fn(|req: Request<ReplayBody<Full<Bytes>>>| async move {
///     let status = if req.headers()[AUTHORIZATION] == "Bearer second" {
///         StatusCode::OK
///     } else {
///         StatusCode::UNAUTHORIZED
///     };
///     Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap())
/// });
/// let client = ServiceBuilder::new()
///     .layer(BearerAuthLayer::new(cache.clone()))
///     .service(server);
///
/// let req = Request::post("https://example.signalwire.com/api/fabric/addresses")
///     .body(Full::new(Bytes::from_static(b"{}")))?;
/// // Sent with "first", refused, refreshed once, replayed with "second".
/// let response = client.oneshot(req).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(cache.stats().refreshes(), 1);
/// # Ok(())
/// # }
/// ```
pub struct BearerAuthLayer<M = WithReplay> {
    tokens: Tokens,
    target: TransportRule,
    replay_limit: usize,
    mode: PhantomData<M>,
}

/// The default mode of [`BearerAuthLayer`]: a request answered 401 is sent again with a new
/// token. The inner service receives [`ReplayBody<B>`](crate::ReplayBody) bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WithReplay;

/// The mode of [`BearerAuthLayer::without_replay`]: no request is sent twice, and the inner
/// service receives the caller's request as it was built, with the header added. A 401 starts
/// a refresh for the requests that follow and comes back marked
/// [`ReplaySkipped`](crate::ReplaySkipped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NoReplay;

impl<M> Clone for BearerAuthLayer<M> {
    fn clone(&self) -> Self {
        Self {
            tokens: self.tokens.clone(),
            target: self.target.clone(),
            replay_limit: self.replay_limit,
            mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for BearerAuthLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("tokens", &self.tokens)
            .field("target", &self.target)
            .field("replay_limit", &self.replay_limit)
            .finish()
    }
}

#[derive(Clone, Debug)]
enum Tokens {
    Cache(TokenCache),
    #[cfg(feature = "pool")]
    Pool(TokenPool),
}

impl BearerAuthLayer {
    /// Authenticates with the token of `cache`, refreshing it as needed.
    pub fn new(cache: TokenCache) -> Self {
        Self {
            tokens: Tokens::Cache(cache),
            target: TransportRule::default(),
            replay_limit: DEFAULT_REPLAY_LIMIT,
            mode: PhantomData,
        }
    }

    /// Authenticates each request with the token of the [`Subscriber`](crate::Subscriber) in
    /// its extensions, from `pool` (feature `pool`): minted on the subscriber's first request,
    /// refreshed and replayed after a 401 per subscriber under the rules above. A request
    /// without a `Subscriber` fails with [`Error::is_missing_subscriber`] and is not sent; a
    /// failed mint fails the requests that waited for it with [`Error::is_mint_failed`].
    ///
    /// A request whose subscriber is in the pool costs about what one with a single cache
    /// costs (README, "Many subscribers").
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use bytes::Bytes;
    /// use http::{Request, StatusCode};
    /// use http_body_util::Full;
    /// use signalwire_auth::{BearerAuthLayer, MockSpace, ReplayBody, Subscriber, TokenPool};
    /// use tower::{Layer, ServiceExt};
    ///
    /// let mock = MockSpace::start().await?;
    /// let pool = TokenPool::with_client(mock.token_client()).build();
    /// let client = BearerAuthLayer::pooled(pool.clone()).layer(mock.client::<ReplayBody<Full<Bytes>>>());
    /// let addresses = mock.space().endpoint("/api/fabric/addresses")?;
    ///
    /// for who in ["alice@example.com", "bob@example.com", "alice@example.com"] {
    ///     let mut request = Request::get(addresses.clone()).body(Full::default())?;
    ///     request.extensions_mut().insert(Subscriber::new(who));
    ///     assert_eq!(client.clone().oneshot(request).await?.status(), StatusCode::OK);
    /// }
    /// assert_eq!(pool.stats().mints(), 2);
    ///
    /// // No subscriber: refused, not sent.
    /// let request = Request::get(addresses).body(Full::default())?;
    /// let error = client.oneshot(request).await.unwrap_err();
    /// assert!(error.downcast_ref::<signalwire_auth::Error>().unwrap().is_missing_subscriber());
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "pool")]
    pub fn pooled(pool: TokenPool) -> Self {
        Self {
            tokens: Tokens::Pool(pool),
            target: TransportRule::default(),
            replay_limit: DEFAULT_REPLAY_LIMIT,
            mode: PhantomData,
        }
    }

    /// Authenticates with a token that is never refreshed (a guest token, any bearer).
    ///
    /// Fails with [`Error::is_invalid_input`] if `token` is not an RFC 6750 bearer token.
    pub fn from_token(token: impl Into<String>) -> Result<Self, Error> {
        Ok(Self::new(TokenCache::fixed(token)?))
    }

    /// Keeps request bodies up to `bytes` long for a replay after a 401 (default
    /// [`DEFAULT_REPLAY_LIMIT`]). `0` turns replay off: the layer then copies nothing per
    /// request, and a 401 only starts a refresh for the requests that follow.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// Turns replay off at the type level: the inner service receives the caller's
    /// `Request<B>` itself (no [`ReplayBody`](crate::ReplayBody)), and each request costs about 5 % more than a
    /// static header (the transport rule and the token's check; README's performance table). A 401 is
    /// passed back marked [`ReplaySkipped`](crate::ReplaySkipped), and the refresh it starts
    /// serves the requests that follow. Everything else (refresh ahead of expiry, waiting for
    /// a refresh in the hard window, pools, the transport rule) is as with replay.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use bytes::Bytes;
    /// use http::{Request, StatusCode};
    /// use http_body_util::Full;
    /// use signalwire_auth::{
    ///     BearerAuth, BearerAuthLayer, HttpsClient, MockSpace, SubscriberRefresher, TokenCache,
    ///     bearer::NoReplay,
    /// };
    /// use tower::{Layer, ServiceExt};
    ///
    /// let mock = MockSpace::start().await?;
    /// let cache = TokenCache::new(
    ///     mock.mint("alice@example.com"),
    ///     SubscriberRefresher::with_client(mock.token_client()),
    /// );
    /// // The client takes the caller's own body type.
    /// let client: BearerAuth<HttpsClient<Full<Bytes>>, NoReplay> =
    ///     BearerAuthLayer::new(cache).without_replay().layer(mock.client());
    /// let request = Request::get(mock.space().endpoint("/api/fabric/addresses")?).body(Full::default())?;
    /// assert_eq!(client.oneshot(request).await?.status(), StatusCode::OK);
    /// # Ok(())
    /// # }
    /// ```
    pub fn without_replay(self) -> BearerAuthLayer<NoReplay> {
        BearerAuthLayer {
            tokens: self.tokens,
            target: self.target,
            replay_limit: 0,
            mode: PhantomData,
        }
    }
}

impl<M> BearerAuthLayer<M> {
    crate::transport::transport_rule_methods!();
}

impl<S, M> Layer<S> for BearerAuthLayer<M> {
    type Service = BearerAuth<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        let target = self.target.clone();
        match &self.tokens {
            Tokens::Cache(cache) => {
                BearerAuth::new(inner, cache.clone(), target, self.replay_limit)
            }
            #[cfg(feature = "pool")]
            Tokens::Pool(pool) => {
                BearerAuth::pooled(inner, pool.clone(), target, self.replay_limit)
            }
        }
    }
}
