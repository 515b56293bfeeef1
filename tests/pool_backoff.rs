//! The backoff between failed mints of one subscriber, through the public API against
//! `MockSpace`: a lookup soon after a failure waits for the next mint, one long before it
//! fails at once and mints nothing, a mint that succeeds clears the count, and other
//! subscribers are not held back.

mod common;

use std::time::Duration;

use common::{advance, yields};
use http::StatusCode;
use signalwire_auth::{
    MockSpace, TokenPool,
    mock::{Fault, MockEndpoint},
};

fn pool(mock: &MockSpace, base: Duration, cap: Duration) -> TokenPool {
    TokenPool::with_client(mock.token_client())
        .mint_backoff(base, cap)
        .build()
}

/// The next `times` Create Subscriber Token calls are answered `status`.
fn fail_mints(mock: &MockSpace, status: StatusCode, times: usize) {
    mock.inject(
        MockEndpoint::CreateSubscriberToken,
        Fault::Status(status),
        times,
    );
}

fn mints(mock: &MockSpace) -> usize {
    mock.calls(MockEndpoint::CreateSubscriberToken)
}

#[tokio::test]
async fn a_lookup_long_before_the_next_mint_fails_at_once_and_mints_nothing() {
    let mock = MockSpace::start().await.unwrap();
    // The first retry comes 10 to 20 s after a failure: later than a lookup waits.
    let pool = pool(&mock, Duration::from_secs(20), Duration::from_secs(60));
    fail_mints(&mock, StatusCode::INTERNAL_SERVER_ERROR, 1);
    let first = pool.cache("alice@example.com").await.unwrap_err();
    assert!(first.is_mint_failed(), "{first:?}");
    assert_eq!(mints(&mock), 1);

    // A storm of lookups during the backoff: every one fails with the last failure, none mints.
    let lookups: Vec<_> = (0..100)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.cache("alice@example.com").await })
        })
        .collect();
    for lookup in lookups {
        let error = lookup.await.unwrap().unwrap_err();
        assert!(error.is_mint_failed(), "{error:?}");
        let api = error.api_error().expect("the last failure is the source");
        assert_eq!(api.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(mints(&mock), 1);
    assert_eq!(pool.stats().mints(), 1);

    // Another subscriber is not held back.
    pool.cache("bob@example.com").await.unwrap();
    assert_eq!(mints(&mock), 2);

    // Once the backoff has passed, the next lookup mints again.
    advance(Duration::from_secs(20)).await;
    let alice = pool.cache("alice@example.com").await.unwrap();
    assert!(alice.current().refresh_token().is_some());
    assert_eq!(mints(&mock), 3);
    assert_eq!(pool.stats().mint_failures(), 1);
}

#[tokio::test]
async fn a_lookup_soon_before_the_next_mint_waits_for_it() {
    let mock = MockSpace::start().await.unwrap();
    // The first retry comes 1 to 2 s after a failure: a lookup waits for it.
    let pool = pool(&mock, Duration::from_secs(2), Duration::from_secs(60));
    fail_mints(&mock, StatusCode::UNPROCESSABLE_ENTITY, 1);
    assert!(
        pool.cache("alice@example.com")
            .await
            .unwrap_err()
            .is_mint_failed()
    );

    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.cache("alice@example.com").await })
    };
    yields(100).await;
    assert!(!waiting.is_finished(), "it waits for the backoff");
    assert_eq!(mints(&mock), 1, "and mints nothing before it");
    advance(Duration::from_secs(2)).await;
    let alice = waiting.await.unwrap().unwrap();
    assert!(alice.current().refresh_token().is_some());
    assert_eq!(mints(&mock), 2);
}

#[tokio::test]
async fn failures_in_a_row_back_off_longer() {
    let mock = MockSpace::start().await.unwrap();
    let pool = pool(&mock, Duration::from_secs(20), Duration::from_secs(160));
    fail_mints(&mock, StatusCode::SERVICE_UNAVAILABLE, 2);
    // Failure 1: next mint 10-20 s later. Failure 2: 20-40 s later.
    assert!(pool.cache("alice@example.com").await.is_err());
    advance(Duration::from_secs(20)).await;
    assert!(pool.cache("alice@example.com").await.is_err());
    assert_eq!(mints(&mock), 2);
    // 15 s on, the second backoff (at least 20 s) is still at least 5 s away: no mint.
    advance(Duration::from_secs(14)).await;
    let error = pool.cache("alice@example.com").await.unwrap_err();
    assert!(error.is_mint_failed());
    assert_eq!(mints(&mock), 2);
    // Past it: minted, and the count starts over.
    advance(Duration::from_secs(26)).await;
    pool.cache("alice@example.com").await.unwrap();
    assert_eq!(mints(&mock), 3);
    assert_eq!(pool.stats().mint_failures(), 2);
}

#[tokio::test]
async fn a_429_retry_after_holds_the_next_mint_back_at_least_that_long() {
    let mock = MockSpace::start().await.unwrap();
    // The pool's own backoff is 50-100 ms; the mock's 429 says `retry-after: 1`.
    let pool = pool(
        &mock,
        Duration::from_millis(100),
        Duration::from_millis(100),
    );
    fail_mints(&mock, StatusCode::TOO_MANY_REQUESTS, 1);
    let error = pool.cache("alice@example.com").await.unwrap_err();
    assert_eq!(
        error.api_error().map(|api| api.status()),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );

    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.cache("alice@example.com").await })
    };
    yields(100).await;
    advance(Duration::from_millis(500)).await;
    yields(100).await;
    assert!(
        !waiting.is_finished(),
        "past its own backoff, within Retry-After"
    );
    assert_eq!(mints(&mock), 1);
    advance(Duration::from_millis(600)).await;
    waiting.await.unwrap().unwrap();
    assert_eq!(mints(&mock), 2);
}

#[tokio::test]
async fn a_mint_that_succeeds_starts_the_backoff_over() {
    let mock = MockSpace::start().await.unwrap();
    // One entry at most, so that looking up bob evicts alice.
    let pool = TokenPool::with_client(mock.token_client())
        .mint_backoff(Duration::from_secs(20), Duration::from_secs(160))
        .max_subscribers(1)
        .build();
    fail_mints(&mock, StatusCode::SERVICE_UNAVAILABLE, 2);
    // Two failures in a row: the next mint comes 20-40 s after the second.
    assert!(pool.cache("alice@example.com").await.is_err());
    advance(Duration::from_secs(20)).await;
    assert!(pool.cache("alice@example.com").await.is_err());
    advance(Duration::from_secs(40)).await;
    pool.cache("alice@example.com").await.unwrap();
    pool.cache("bob@example.com").await.unwrap();
    pool.run_pending_tasks().await;
    assert_eq!(pool.stats().evictions(), 1);

    // Alice fails again: a first failure (next mint 10-20 s later), not a third (40-80 s).
    fail_mints(&mock, StatusCode::SERVICE_UNAVAILABLE, 1);
    assert!(pool.cache("alice@example.com").await.is_err());
    advance(Duration::from_secs(20)).await;
    pool.cache("alice@example.com").await.unwrap();
    assert_eq!(mints(&mock), 6);
}
