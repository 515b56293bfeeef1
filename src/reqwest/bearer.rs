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
    cache: TokenCache,
    target: TransportRule,
}

impl BearerAuthMiddleware {
    /// Authenticates with the token of `cache`, refreshing it as needed.
    pub fn new(cache: TokenCache) -> Self {
        Self {
            cache,
            target: TransportRule::default(),
        }
    }

    /// The cache the tokens come from.
    pub fn token_cache(&self) -> &TokenCache {
        &self.cache
    }

    crate::transport::transport_rule_methods!();

    async fn authorization(&self) -> reqwest_middleware::Result<Authorization> {
        match self.cache.try_authorization() {
            Some(authorization) => Ok(authorization),
            None => self
                .cache
                .authorization()
                .await
                .map_err(reqwest_middleware::Error::middleware),
        }
    }
}

impl fmt::Debug for BearerAuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthMiddleware")
            .field("cache", &self.cache)
            .field("target", &self.target)
            .finish()
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
        let authorization = self.authorization().await?;
        // Copied before the header goes on: the replay sets its own.
        let replay = self
            .cache
            .is_refreshable()
            .then(|| request.try_clone())
            .flatten();
        request
            .headers_mut()
            .insert(AUTHORIZATION, authorization.header_value().clone());
        let mut response = next.clone().run(request, extensions).await?;
        if response.status() != StatusCode::UNAUTHORIZED || !self.cache.is_refreshable() {
            return Ok(response);
        }
        let generation = authorization.generation();
        let (Some(mut replay), Some(wait)) = (replay, self.cache.reauthorization(generation))
        else {
            self.cache.unauthorized(&authorization);
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
        self.cache.note_replay();
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
