//! `BearerAuthMiddleware`.

use std::fmt;

use ::reqwest::{Request, Response};
use http::{Extensions, StatusCode, header::AUTHORIZATION};
use reqwest_middleware::{Middleware, Next};

use crate::{
    Authorization, TokenCache,
    bearer::replay::{DRAIN_LIMIT, DRAIN_TIME, ReplaySkipped},
    transport::TransportRule,
};
#[cfg(feature = "pool")]
use crate::{Error, Subscriber, TokenPool, error::Kind};

/// [`BearerAuthLayer`](crate::BearerAuthLayer) for reqwest: adds `Authorization: Bearer <token>`
/// from a [`TokenCache`], through [`TokenCache::authorization`] and
/// [`TokenCache::reauthorize`], under the same rules as the tower layer.
///
/// On a 401 for the current token it refreshes once (shared with every other request) and
/// sends the request once more, if [`reqwest::Request::try_clone`] could copy it; a request
/// with a streaming body gets its 401 back with the [`ReplaySkipped`] extension, and the
/// refresh still starts. A 401 for a token that was itself the answer to a 401 moments ago is
/// returned as is, also marked `ReplaySkipped`, without a refresh. Failures of the cache
/// ([`Error::is_reauthentication_needed`](crate::Error::is_reauthentication_needed),
/// [`Error::is_refresh_failed`](crate::Error::is_refresh_failed)) and refusals of the
/// [transport rule](crate::TransportRule) fail the call, and nothing is sent.
///
/// See [the module](super) for an example and the order with `reqwest-retry`.
#[derive(Clone)]
pub struct BearerAuthMiddleware {
    tokens: Tokens,
    target: TransportRule,
}

#[derive(Clone, Debug)]
enum Tokens {
    Cache(TokenCache),
    #[cfg(feature = "pool")]
    Pool(TokenPool),
}

impl BearerAuthMiddleware {
    /// Authenticates with the token of `cache`, refreshing it as needed.
    pub fn new(cache: TokenCache) -> Self {
        Self {
            tokens: Tokens::Cache(cache),
            target: TransportRule::default(),
        }
    }

    /// Authenticates each request with the token of the [`Subscriber`] in its extensions
    /// (`RequestBuilder::with_extension`), from `pool` (feature `pool`), under the rules of
    /// [`BearerAuthLayer::pooled`](crate::BearerAuthLayer::pooled): a request without one
    /// fails with [`Error::is_missing_subscriber`] and is not sent.
    ///
    /// ```
    /// use reqwest_middleware::ClientBuilder;
    /// use signalwire_auth::{MockSpace, Subscriber, TokenPool, reqwest::BearerAuthMiddleware};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mock = MockSpace::start().await?;
    /// let pool = TokenPool::with_client(mock.token_client()).build();
    /// let client = ClientBuilder::new(mock.reqwest_client())
    ///     .with(BearerAuthMiddleware::pooled(pool.clone()))
    ///     .build();
    /// let response = client
    ///     .get(mock.space().endpoint("/api/fabric/addresses")?.to_string())
    ///     .with_extension(Subscriber::new("alice@example.com"))
    ///     .send()
    ///     .await?;
    /// assert_eq!(response.status(), 200);
    /// assert_eq!(pool.stats().mints(), 1);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "pool")]
    pub fn pooled(pool: TokenPool) -> Self {
        Self {
            tokens: Tokens::Pool(pool),
            target: TransportRule::default(),
        }
    }

    /// The cache the tokens come from; `None` for a [pooled](Self::pooled) middleware.
    pub fn token_cache(&self) -> Option<&TokenCache> {
        match &self.tokens {
            Tokens::Cache(cache) => Some(cache),
            #[cfg(feature = "pool")]
            Tokens::Pool(_) => None,
        }
    }

    crate::transport::transport_rule_methods!();

    /// The cache for this request: the one cache, or the request's subscriber's.
    #[cfg_attr(not(feature = "pool"), allow(unused_variables))]
    async fn cache(&self, extensions: &Extensions) -> reqwest_middleware::Result<TokenCache> {
        match &self.tokens {
            Tokens::Cache(cache) => Ok(cache.clone()),
            #[cfg(feature = "pool")]
            Tokens::Pool(pool) => {
                let Some(subscriber) = extensions.get::<Subscriber>() else {
                    return Err(reqwest_middleware::Error::middleware(Error::new(
                        Kind::MissingSubscriber,
                    )));
                };
                match pool.find(subscriber) {
                    Some(cache) => Ok(cache),
                    None => pool
                        .cache_for(subscriber)
                        .await
                        .map_err(reqwest_middleware::Error::middleware),
                }
            }
        }
    }
}

async fn authorization(cache: &TokenCache) -> reqwest_middleware::Result<Authorization> {
    match cache.try_authorization() {
        Some(authorization) => Ok(authorization),
        None => cache
            .authorization()
            .await
            .map_err(reqwest_middleware::Error::middleware),
    }
}

impl fmt::Debug for BearerAuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("BearerAuthMiddleware");
        match &self.tokens {
            Tokens::Cache(cache) => d.field("cache", cache),
            #[cfg(feature = "pool")]
            Tokens::Pool(pool) => d.field("pool", pool),
        };
        d.field("target", &self.target).finish()
    }
}

#[async_trait::async_trait]
impl Middleware for BearerAuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        super::check(&self.target, request.url())?;
        let cache = self.cache(extensions).await?;
        let authorization = authorization(&cache).await?;
        // Copied before the header goes on: the replay sets its own.
        let replay = cache
            .is_refreshable()
            .then(|| request.try_clone())
            .flatten();
        request
            .headers_mut()
            .insert(AUTHORIZATION, authorization.header_value().clone());
        let mut response = next.clone().run(request, extensions).await?;
        if response.status() != StatusCode::UNAUTHORIZED || !cache.is_refreshable() {
            return Ok(response);
        }
        let generation = authorization.generation();
        let (Some(mut replay), Some(wait)) = (replay, cache.reauthorization(generation)) else {
            cache.unauthorized(&authorization);
            response.extensions_mut().insert(ReplaySkipped);
            return Ok(response);
        };
        tracing::debug!(
            generation,
            "401 for the current token; replaying once after a refresh"
        );
        // Read the 401 to its end while the refresh runs, so its connection can carry the replay.
        let ((), fresh) = tokio::join!(drain(response), wait);
        let fresh = fresh.map_err(reqwest_middleware::Error::middleware)?;
        replay
            .headers_mut()
            .insert(AUTHORIZATION, fresh.header.clone());
        cache.note_replay();
        next.run(replay, extensions).await
    }
}

/// Reads a 401's body to its end, up to [`DRAIN_LIMIT`] bytes and [`DRAIN_TIME`]; beyond that
/// the response is dropped (and its connection closed), as the tower layer does.
async fn drain(mut response: Response) {
    let read = async {
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}
