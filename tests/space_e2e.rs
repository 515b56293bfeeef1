//! The whole stack against `MockSpace`: a SAT minted with Basic auth, kept alive by a
//! `TokenCache` over `SubscriberRefresher`, sent by `BearerAuthLayer` over the crate's client.
//!
//! Real sockets and paused time do not mix (the paused clock jumps while a socket is awaited), so
//! the clock runs while requests are in flight and is only moved, paused, between them.
#![cfg(feature = "test-util")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{advance, settle};
use http::{Request, StatusCode};
use http_body_util::Full;
use signalwire_auth::{
    BearerAuth, BearerAuthLayer, CreateSubscriberToken, Error, HttpsClient, MockSpace, ReplayBody,
    SubscriberRefresher, TokenCache, TokenClient, mock::MockEndpoint,
};
use tower::{BoxError, Layer, ServiceExt};

const MINUTE: Duration = Duration::from_secs(60);

struct Stack {
    mock: MockSpace,
    cache: TokenCache,
    client: BearerAuth<HttpsClient<ReplayBody<Full<Bytes>>>>,
}

async fn stack(tls: bool, remint: bool) -> Stack {
    let mock = MockSpace::builder().tls(tls).start().await.unwrap();
    let tokens = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
    let request = CreateSubscriberToken::new("chain@example.com");
    let minted = tokens.create_subscriber_token(&request).await.unwrap();
    let mut refresher = SubscriberRefresher::with_client(tokens);
    if remint {
        refresher = refresher.with_remint(request);
    }
    let cache = TokenCache::builder(minted.into_pair(), refresher)
        .jitter(false)
        .build();
    let client = BearerAuthLayer::new(cache.clone())
        .for_space(&mock.space())
        .layer(mock.client());
    Stack {
        mock,
        cache,
        client,
    }
}

impl Stack {
    async fn list_addresses(&self) -> Result<StatusCode, BoxError> {
        let uri = self.mock.space().endpoint("/api/fabric/addresses").unwrap();
        let request = Request::get(uri).body(Full::default()).unwrap();
        let response = self.client.clone().oneshot(request).await?;
        settle(&self.cache).await;
        Ok(response.status())
    }
}

#[tokio::test]
async fn a_refresh_chain_over_many_lifetimes_never_reuses_a_refresh_token() {
    for tls in [false, true] {
        let stack = stack(tls, false).await;
        // A request every 29 minutes for ten hours: each 2-hour SAT sees requests in its fresh
        // window, one in its advisory window (116 minutes in), and then the next SAT takes over.
        for _ in 0..21 {
            assert_eq!(stack.list_addresses().await.unwrap(), StatusCode::OK);
            advance(29 * MINUTE).await;
        }
        let stats = stack.cache.stats();
        assert!(stats.refreshes() >= 4, "{stats:?}");
        assert_eq!(stats.failures(), 0, "{stats:?}");
        assert_eq!(
            stats.replays(),
            0,
            "refreshed ahead of expiry, never after a 401"
        );
        assert_eq!(
            stack.mock.reused_refresh_tokens(),
            0,
            "no refresh token was presented twice"
        );
        assert_eq!(
            stack.mock.calls(MockEndpoint::RefreshSubscriberToken),
            stats.refreshes() as usize
        );
        assert_eq!(stack.mock.calls(MockEndpoint::ListAddresses), 21);
    }
}

#[tokio::test]
async fn an_idle_chain_is_re_minted_when_configured() {
    let stack = stack(false, true).await;
    assert_eq!(stack.list_addresses().await.unwrap(), StatusCode::OK);
    // Idle past the refresh token's 2 h 5 min: the next request finds the chain broken, and
    // the refresher mints a new pair with the project credentials.
    advance(130 * MINUTE).await;
    assert_eq!(stack.list_addresses().await.unwrap(), StatusCode::OK);
    assert_eq!(stack.mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
    assert_eq!(stack.mock.calls(MockEndpoint::CreateSubscriberToken), 2);
    assert_eq!(stack.cache.stats().refreshes(), 1);
}

#[tokio::test]
async fn an_idle_chain_without_re_mint_asks_for_re_authentication() {
    let stack = stack(true, false).await;
    assert_eq!(stack.list_addresses().await.unwrap(), StatusCode::OK);
    advance(130 * MINUTE).await;
    let error = stack.list_addresses().await.unwrap_err();
    let error = error
        .downcast_ref::<Error>()
        .expect("a signalwire_auth::Error");
    assert!(error.is_reauthentication_needed(), "{error}");
    // Later requests get the same answer at once, without another refresh.
    let again = stack.list_addresses().await.unwrap_err();
    assert!(
        again
            .downcast_ref::<Error>()
            .unwrap()
            .is_reauthentication_needed()
    );
    assert_eq!(stack.mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
    assert_eq!(stack.mock.calls(MockEndpoint::ListAddresses), 1);
}
