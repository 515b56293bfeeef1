//! Tower middleware that authenticates requests to the [SignalWire] REST API.
//!
//! Two layers, for the two ways SignalWire authenticates a caller:
//!
//! - [`BasicAuthLayer`]: a backend holding a Project ID and API token adds
//!   `Authorization: Basic base64(project_id:api_token)`, computed once.
//! - [`BearerAuthLayer`]: a service acting for a subscriber adds `Authorization: Bearer <SAT>`
//!   from a [`TokenCache`] that refreshes the Subscriber Access Token ahead of expiry, in the
//!   background, exactly once however many requests need it, and on a 401 refreshes once and
//!   replays the request once. No request goes out with a token the cache knows has expired;
//!   a request fails only when the refresh itself fails, with an error that says why.
//!
//! Both wrap any tower `Service<http::Request<B>>` — hyper-util's client, a `Buffer`, a
//! `Retry` — and compose with tower's timeout, retry, buffer and concurrency-limit layers and
//! tower-http's trace and follow-redirect layers. On the fast path they cost about what a
//! static header costs: no lock and no clock read, and no allocation when 401-replay is off
//! (README's performance table has the measurements).
//!
//! [`TokenClient`] calls SignalWire's five token endpoints, [`SubscriberRefresher`] keeps a SAT
//! alive through the refresh endpoint, and [`MockSpace`] (feature `test-util`) is an
//! in-process server that behaves like a space, for tests and examples.
//!
//! Pairs survive restarts and are shared by replicas through a [`TokenStore`]
//! ([`MemoryStore`], or [`RedisStore`] with feature `redis`): a cache made with
//! [`TokenCache::from_store`] starts from the stored pair, and refreshes only while it holds
//! the subscriber's lease, so no two replicas ever present the same refresh token.
//!
//! # Example
//!
//! A backend lists its subscribers' addresses with a SAT that never goes stale:
//!
//! ```no_run
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
//! use signalwire_auth::{
//!     BearerAuthLayer, CreateSubscriberToken, Credentials, ReplayBody, Space, SubscriberRefresher,
//!     TokenCache, TokenClient, https_client,
//! };
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let space = Space::new("example")?;
//! let credentials = Credentials::from_env()?;
//!
//! // Mint a SAT with the project credentials (Basic auth).
//! let tokens = TokenClient::new(space.clone(), credentials.clone());
//! let minted = tokens
//!     .create_subscriber_token(&CreateSubscriberToken::new("alice@example.com"))
//!     .await?;
//!
//! // Keep it fresh through the refresh endpoint, and send it with every request.
//! let cache = TokenCache::new(minted.into_pair(), SubscriberRefresher::new(space.clone(), credentials));
//! let client = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(cache).for_space(&space))
//!     .service(https_client::<ReplayBody<Full<Bytes>>>());
//!
//! let request = Request::get(space.endpoint("/api/fabric/addresses")?).body(Full::default())?;
//! let response = client.oneshot(request).await?;
//! println!("{}", String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes()));
//! # Ok(())
//! # }
//! ```
//!
//! # Layer order
//!
//! Put the auth layers *outside* `tower_http::follow_redirect::FollowRedirectLayer`: the redirect
//! layer then sees the `Authorization` header and drops it when a redirect leaves the origin.
//! Inside it, the auth layer would add the credentials again to every hop, wherever it points.
//! Put them *inside* retry and timeout layers, so each attempt is authenticated and timed.
//!
//! # Security
//!
//! Every `Authorization` value is marked sensitive. No `Debug` or `Display` of a type of this
//! crate, and no `tracing` event it emits, contains a token or an API token. Credentials are only
//! attached to requests for SignalWire's hosts over `https` and for loopback (plain `http` there,
//! for tests), or for the space and hosts the layer is told; anything else fails with
//! [`Error::is_refused`] and is not sent.
//!
//! # Feature flags
//!
//! - `https` (default): [`https_client`], the pooled hyper-util client over rustls with bundled
//!   web PKI roots (HTTP/1.1 and HTTP/2), and the constructors that use it
//!   ([`TokenClient::new`], [`SubscriberRefresher::new`]).
//! - `test-util`: [`MockSpace`], a real HTTP/HTTPS server on 127.0.0.1 that behaves like a
//!   space's token endpoints, with fault injection and call counters.
//! - `reqwest`: [`reqwest::BasicAuthMiddleware`] and [`reqwest::BearerAuthMiddleware`] for
//!   reqwest-middleware's `ClientWithMiddleware`, under the tower layers' rules.
//! - `pool`: [`TokenPool`], one self-refreshing `TokenCache` per subscriber, minted on first
//!   use, bounded and evicted when idle (over moka), and [`Subscriber`], the request extension
//!   that [`BearerAuthLayer::pooled`] reads.
//! - `redis`: [`RedisStore`], a [`TokenStore`] in Redis, so that replicas share each
//!   subscriber's refresh chain ([`MemoryStore`] is always there).
//!
//! [SignalWire]: https://signalwire.com
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod api;
pub mod basic;
pub mod bearer;
mod cache;
mod credentials;
mod error;
mod header;
#[cfg(feature = "https")]
mod https;
#[cfg(feature = "test-util")]
pub mod mock;
#[cfg(feature = "pool")]
pub mod pool;
#[cfg(feature = "reqwest")]
pub mod reqwest;
mod secret;
mod space;
mod store;
mod transport;

pub use api::{
    ApiError, ApiErrorEntry, CreateGuestToken, CreateInviteToken, CreateSubscriberToken,
    EmbedToken, GuestAuth, InviteToken, SAT_REFRESH_SCOPE, SubscriberRefresher, SubscriberToken,
    TokenClient, TokenService,
};
pub use basic::{BasicAuth, BasicAuthLayer};
pub use bearer::{BearerAuth, BearerAuthLayer, ReplayBody, ReplaySkipped};
pub use cache::{
    Authorization, CacheStats, Refresh, RefreshError, StoreStats, TokenCache, TokenCacheBuilder,
    TokenHeader, TokenPair,
};
pub use credentials::{API_TOKEN_ENV, Credentials, PROJECT_ID_ENV};
pub use error::Error;
#[cfg(feature = "https")]
pub use https::{HttpsClient, https_client};
#[cfg(feature = "test-util")]
pub use mock::MockSpace;
#[cfg(feature = "pool")]
pub use pool::{PoolStats, Subscriber, TokenPool, TokenPoolBuilder};
pub use space::{SPACE_ENV, Space};
pub use store::{MemoryStore, StoreFuture, StoreKey, StoredPair, TokenStore};
#[cfg(feature = "redis")]
pub use store::{RedisStore, RedisStoreBuilder};
pub use transport::TransportRule;

/// Compiles the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
