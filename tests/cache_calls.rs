//! Guest and invite tokens minted with the SAT of a `TokenCache`: refreshed ahead of expiry,
//! and a 401 recovered from with one refresh and one more call, against `MockSpace`.

#![cfg(feature = "test-util")]

use std::time::Duration;

use signalwire_auth::{
    CreateGuestToken, CreateInviteToken, MockSpace, TokenCache, TokenPair, mock::MockEndpoint,
};
use tokio::time::Instant;

const ADDRESS: &str = "c22d24f6-5a26-4f53-8008-b29530339efa";

async fn setup() -> (MockSpace, TokenCache) {
    let mock = MockSpace::start().await.unwrap();
    let cache = TokenCache::builder(mock.mint("guest-host@example.com"), mock.refresher())
        .jitter(false)
        .build();
    (mock, cache)
}

#[tokio::test]
async fn a_guest_token_with_a_revoked_sat_costs_one_refresh_and_one_more_call() {
    let (mock, cache) = setup().await;
    let client = mock.token_client();
    mock.revoke_access_tokens();
    let guest = client
        .create_guest_token_with_cache(&CreateGuestToken::new([ADDRESS]), &cache)
        .await
        .unwrap();
    assert!(!guest.access_token().is_empty());
    assert_eq!(mock.calls(MockEndpoint::CreateGuestToken), 2);
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
    assert_eq!(cache.stats().replays(), 1);
}

#[tokio::test]
async fn an_invite_with_a_revoked_sat_costs_one_refresh_and_one_more_call() {
    let (mock, cache) = setup().await;
    let client = mock.token_client();
    mock.revoke_access_tokens();
    let invite = client
        .create_invite_token_with_cache(&CreateInviteToken::new(ADDRESS), &cache)
        .await
        .unwrap();
    assert!(!invite.as_str().is_empty());
    assert_eq!(mock.calls(MockEndpoint::CreateInviteToken), 2);
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
}

#[tokio::test]
async fn an_expired_sat_is_refreshed_before_the_call() {
    let mock = MockSpace::start().await.unwrap();
    let minted = mock.mint("guest-host@example.com");
    // Tracked as expired; the call must not go out with it.
    let stale = TokenPair::new(
        minted.access_token(),
        Instant::now()
            .checked_sub(Duration::from_secs(3 * 3600))
            .unwrap(),
        Duration::from_secs(2 * 3600),
    )
    .and_then(|p| p.with_refresh_token(minted.refresh_token().unwrap(), Duration::from_secs(7500)))
    .unwrap();
    let cache = TokenCache::new(stale, mock.refresher());
    mock.token_client()
        .create_invite_token_with_cache(&CreateInviteToken::new(ADDRESS), &cache)
        .await
        .unwrap();
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
    assert_eq!(
        mock.calls(MockEndpoint::CreateInviteToken),
        1,
        "sent once, fresh"
    );
}

#[tokio::test]
async fn a_401_that_a_new_token_cannot_fix_returns_the_401() {
    let (mock, cache) = setup().await;
    mock.inject(
        MockEndpoint::CreateInviteToken,
        signalwire_auth::mock::Fault::Status(http::StatusCode::UNAUTHORIZED),
        usize::MAX,
    );
    let client = mock.token_client();
    for _ in 0..3 {
        let error = client
            .create_invite_token_with_cache(&CreateInviteToken::new(ADDRESS), &cache)
            .await
            .unwrap_err();
        assert!(error.is_api(), "{error:?}");
        assert_eq!(error.api_error().unwrap().status(), 401);
    }
    assert_eq!(
        mock.calls(MockEndpoint::RefreshSubscriberToken),
        1,
        "an always-401 endpoint costs one refresh"
    );
    assert!(mock.calls(MockEndpoint::CreateInviteToken) <= 4);
}

#[tokio::test]
async fn the_mock_token_client_tracks_the_mock_lifetimes() {
    let mock = MockSpace::builder()
        .access_lifetime(Duration::from_secs(4))
        .refreshed_access_lifetime(Duration::from_secs(6))
        .start()
        .await
        .unwrap();
    let client = mock.token_client();
    let minted = client
        .create_subscriber_token(&signalwire_auth::CreateSubscriberToken::new(
            "a@example.com",
        ))
        .await
        .unwrap();
    assert_eq!(minted.pair().lifetime(), Duration::from_secs(4));
    let next = client
        .refresh_subscriber_token(minted.pair().refresh_token().unwrap())
        .await
        .unwrap();
    assert_eq!(next.lifetime(), Duration::from_secs(6));
    // The refresher carries the lifetimes too (the minted pair's refresh token is spent).
    let cache = TokenCache::new(next, mock.refresher());
    assert_eq!(
        cache.refresh_now().await.unwrap().lifetime(),
        Duration::from_secs(6)
    );
}
