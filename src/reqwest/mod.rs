//! Feature `reqwest`: the two auth layers as [`reqwest_middleware::Middleware`], for a
//! [`reqwest_middleware::ClientWithMiddleware`].
//!
//! [`BasicAuthMiddleware`] and [`BearerAuthMiddleware`] follow the tower layers' rules exactly:
//! the same [`TransportRule`] (a refused request fails and is not sent),
//! the same precomputed, sensitive Basic header, and for Bearer the same
//! [`TokenCache::authorization`](crate::TokenCache::authorization) /
//! [`TokenCache::reauthorize`](crate::TokenCache::reauthorize) calls the tower layer is built
//! on: refresh ahead of expiry, one refresh however many requests need it, and on a 401 one
//! refresh and one replay, when [`reqwest::Request::try_clone`] can copy the request. A request
//! whose body cannot be copied (a stream) gets its 401 back with the
//! [`ReplaySkipped`](crate::ReplaySkipped) extension, and the refresh still starts.
//!
//! Errors of this crate reach the caller as [`reqwest_middleware::Error::Middleware`]; find
//! them with `anyhow::Error::downcast_ref::<signalwire_auth::Error>()`.
//!
//! # Order
//!
//! Add the auth middleware *after* (inside) `reqwest-retry`'s `RetryTransientMiddleware`, so
//! each attempt is authenticated with the token current at that moment. reqwest's own timeouts
//! (`ClientBuilder::timeout`, `RequestBuilder::timeout`) apply to each send, the replay
//! included; a refresh waited for is bounded by the cache's attempt timeout. reqwest follows
//! redirects inside the client, below every middleware, and drops `Authorization` itself when a
//! redirect leaves the origin.
//!
//! # Example
//!
//! ```
//! use reqwest_middleware::ClientBuilder;
//! use signalwire_auth::{MockSpace, TokenCache, reqwest::BearerAuthMiddleware};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = MockSpace::start().await?;
//! let cache = TokenCache::new(mock.mint("alice@example.com"), mock.refresher());
//! let client = ClientBuilder::new(mock.reqwest_client())
//!     .with(BearerAuthMiddleware::new(cache.clone()).for_space(&mock.space()))
//!     .build();
//!
//! let response = client
//!     .get(mock.space().endpoint("/api/fabric/addresses")?.to_string())
//!     .send()
//!     .await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```

mod basic;
mod bearer;

pub use basic::BasicAuthMiddleware;
pub use bearer::BearerAuthMiddleware;

use http::Uri;

use crate::{Error, transport::TransportRule};

/// The transport rule on a reqwest URL: the rule is written for `http::Uri`.
fn check(rule: &TransportRule, url: &::reqwest::Url) -> Result<(), reqwest_middleware::Error> {
    let uri: Uri = url.as_str().parse().map_err(|_| {
        reqwest_middleware::Error::middleware(Error::refused(
            "request URL cannot be read as an http URI",
        ))
    })?;
    rule.check(&uri)
        .map_err(reqwest_middleware::Error::middleware)
}
