//! Bearer authentication from a [`TokenCache`](crate::TokenCache), with refresh and replay:
//! [`BearerAuthLayer`], [`BearerAuth`], its [`ResponseFuture`], and the [`ReplayBody`] its inner
//! service receives; without replay, [`NoReplayFuture`] and the caller's own body.

mod body;
mod future;
mod layer;
mod no_replay;
pub(crate) mod replay;
mod service;

pub use body::ReplayBody;
#[cfg(feature = "pool")]
pub(crate) use future::Lookup;
// The examples of the items defined beside the service sit on their re-exports here, which
// rustdoc shows (and tests) on each item's page.

/// # Example
///
/// The future is what a call returns; name it where a future is stored:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use bytes::Bytes;
/// use http::{Request, StatusCode};
/// use http_body_util::Full;
/// use signalwire_auth::{BearerAuthLayer, HttpsClient, MockSpace, ReplayBody, bearer::ResponseFuture};
/// use tower::{Layer, Service, ServiceExt};
///
/// let mock = MockSpace::start().await?;
/// let pair = mock.mint("alice@example.com");
/// let mut client = BearerAuthLayer::from_token(pair.access_token())?
///     .layer(mock.client::<ReplayBody<Full<Bytes>>>());
/// let request = Request::get(mock.space().endpoint("/api/fabric/addresses")?).body(Full::default())?;
/// let future: ResponseFuture<HttpsClient<ReplayBody<Full<Bytes>>>, Full<Bytes>> =
///     client.ready().await?.call(request);
/// assert_eq!(future.await?.status(), StatusCode::OK);
/// # Ok(())
/// # }
/// ```
pub use future::ResponseFuture;
/// # Example
///
/// ```
/// use signalwire_auth::{BearerAuthLayer, bearer::DEFAULT_REPLAY_LIMIT};
///
/// assert_eq!(DEFAULT_REPLAY_LIMIT, 64 * 1024);
/// // Keep bodies up to 1 MiB for a replay instead.
/// let layer = BearerAuthLayer::from_token("guest-token")?.replay_limit(16 * DEFAULT_REPLAY_LIMIT);
/// # drop(layer);
/// # Ok::<(), signalwire_auth::Error>(())
/// ```
pub use layer::DEFAULT_REPLAY_LIMIT;
pub use layer::{BearerAuthLayer, NoReplay, WithReplay};
pub use no_replay::NoReplayFuture;
/// # Example
///
/// With replay off, a 401 comes back marked, and the refresh it started serves the next
/// request:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use bytes::Bytes;
/// use http::{Request, StatusCode};
/// use http_body_util::Full;
/// use signalwire_auth::{
///     BearerAuthLayer, MockSpace, ReplayBody, ReplaySkipped, SubscriberRefresher, TokenCache,
///     TokenClient, mock::MockEndpoint,
/// };
/// use tower::{Layer, ServiceExt};
///
/// let mock = MockSpace::start().await?;
/// let tokens = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
/// let cache = TokenCache::new(mock.mint("alice@example.com"), SubscriberRefresher::with_client(tokens));
/// let client = BearerAuthLayer::new(cache.clone())
///     .replay_limit(0)
///     .layer(mock.client::<ReplayBody<Full<Bytes>>>());
/// let addresses = mock.space().endpoint("/api/fabric/addresses")?;
///
/// mock.revoke_access_tokens();
/// let request = Request::get(addresses.clone()).body(Full::default())?;
/// let response = client.clone().oneshot(request).await?;
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// assert!(response.extensions().get::<ReplaySkipped>().is_some());
///
/// // The refresh runs in the background; once it is in, requests succeed again.
/// while cache.stats().refreshes() == 0 {
///     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
/// }
/// let request = Request::get(addresses).body(Full::default())?;
/// assert_eq!(client.oneshot(request).await?.status(), StatusCode::OK);
/// assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
/// # Ok(())
/// # }
/// ```
pub use replay::ReplaySkipped;
/// # Example
///
/// A `BearerAuth` over the mock's client, with a token the cache refreshes:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use bytes::Bytes;
/// use http::{Request, StatusCode};
/// use http_body_util::Full;
/// use signalwire_auth::{
///     BearerAuth, BearerAuthLayer, HttpsClient, MockSpace, ReplayBody, SubscriberRefresher,
///     TokenCache, TokenClient,
/// };
/// use tower::{Layer, ServiceExt};
///
/// let mock = MockSpace::start().await?;
/// let tokens = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
/// let cache = TokenCache::new(mock.mint("alice@example.com"), SubscriberRefresher::with_client(tokens));
/// let client: BearerAuth<HttpsClient<ReplayBody<Full<Bytes>>>> =
///     BearerAuthLayer::new(cache.clone()).for_space(&mock.space()).layer(mock.client());
///
/// let request = Request::get(mock.space().endpoint("/api/fabric/addresses")?).body(Full::default())?;
/// let response = client.clone().oneshot(request).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// // The service and the layer share one cache.
/// assert_eq!(client.token_cache().map(|c| c.stats()), Some(cache.stats()));
/// // Debug shows no token.
/// assert!(!format!("{client:?}").contains(cache.current().access_token()));
/// # Ok(())
/// # }
/// ```
pub use service::BearerAuth;
