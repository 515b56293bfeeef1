//! `TokenCache::authorization` / `try_authorization` / `reauthorize` / `unauthorized`: the
//! rules every adapter is built on, through the public API, on paused time with counters.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use signalwire_auth::{Authorization, TokenCache};
use tokio::{task::JoinSet, time::advance};

fn cache_with(refresher: &Refresher, lifetime: Duration) -> TokenCache {
    TokenCache::builder(pair(0, lifetime), refresher.closure())
        .jitter(false)
        .build()
}

fn token_of(authorization: &Authorization) -> String {
    authorization.header_value().to_str().unwrap()["Bearer ".len()..].to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_fresh_token_is_handed_out_at_once_without_a_refresh() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = cache_with(&refresher, HOUR);
    let auth = cache.authorization().await.unwrap();
    assert_eq!(token_of(&auth), access(0));
    assert!(auth.header_value().is_sensitive());
    assert_eq!(auth.generation(), cache.stats().generation());
    let sync = cache.try_authorization().expect("fresh: no waiting");
    assert_eq!(sync.generation(), auth.generation());
    run_until_idle().await;
    assert_eq!(refresher.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn past_the_advisory_deadline_one_background_refresh_starts_and_callers_go_on() {
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let cache = cache_with(&refresher, HOUR);
    // Arms the timer, then into the advisory window (5 minutes before expiry).
    cache.authorization().await.unwrap();
    advance(HOUR - Duration::from_secs(4 * 60)).await;
    run_until_idle().await;
    for _ in 0..100 {
        let auth = cache
            .try_authorization()
            .expect("advisory: the old token still goes");
        assert_eq!(token_of(&auth), access(0));
        assert_eq!(token_of(&cache.authorization().await.unwrap()), access(0));
    }
    run_until_idle().await;
    assert_eq!(
        refresher.calls(),
        1,
        "one background refresh for 200 callers"
    );
    gate.open();
    until("the refresh", || cache.stats().refreshes() == 1).await;
    assert_eq!(token_of(&cache.authorization().await.unwrap()), access(1));
}

#[tokio::test(start_paused = true)]
async fn past_the_hard_deadline_callers_wait_for_the_one_refresh() {
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let cache = cache_with(&refresher, HOUR);
    cache.authorization().await.unwrap();
    advance(HOUR - Duration::from_secs(10)).await;
    run_until_idle().await;
    assert!(
        cache.try_authorization().is_none(),
        "hard window: the caller must wait"
    );
    let mut waiters = JoinSet::new();
    for _ in 0..1_000 {
        let cache = cache.clone();
        waiters.spawn(async move { cache.authorization().await });
    }
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1);
    gate.open();
    while let Some(outcome) = waiters.join_next().await {
        assert_eq!(token_of(&outcome.unwrap().unwrap()), access(1));
    }
    assert_eq!(refresher.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_broken_chain_is_a_typed_error() {
    let refresher = Refresher::new(Mode::Terminal);
    let cache = cache_with(&refresher, HOUR);
    advance(HOUR * 2).await;
    let error = cache.authorization().await.unwrap_err();
    assert!(error.is_reauthentication_needed(), "{error:?}");
    assert!(cache.try_authorization().is_none());
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_reauthorizations_of_one_generation_cost_one_refresh() {
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let cache = cache_with(&refresher, HOUR);
    let rejected = Arc::new(cache.authorization().await.unwrap());
    let mut tasks = JoinSet::new();
    for _ in 0..10_000 {
        let (cache, rejected) = (cache.clone(), Arc::clone(&rejected));
        tasks.spawn(async move { cache.reauthorize(&rejected).await });
    }
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1);
    gate.open();
    while let Some(outcome) = tasks.join_next().await {
        let again = outcome.unwrap().unwrap();
        assert_eq!(token_of(&again), access(1));
        assert_ne!(again.generation(), rejected.generation());
    }
    assert_eq!(refresher.calls(), 1, "exactly one refresh");
    assert_eq!(cache.stats().refreshes(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_late_reauthorization_gets_the_current_token_without_a_refresh() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = cache_with(&refresher, HOUR);
    let rejected = cache.authorization().await.unwrap();
    let first = cache.reauthorize(&rejected).await.unwrap();
    assert_eq!(refresher.calls(), 1);
    // A request that was sent with the old token comes back 401 after the refresh.
    let late = cache.reauthorize(&rejected).await.unwrap();
    assert_eq!(late.generation(), first.generation());
    assert_eq!(
        refresher.calls(),
        1,
        "the cache had moved on: no second refresh"
    );
}

#[tokio::test(start_paused = true)]
async fn a_401_for_a_token_refreshed_because_of_a_401_is_not_refreshed_again() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = cache_with(&refresher, HOUR);
    let rejected = cache.authorization().await.unwrap();
    let again = cache.reauthorize(&rejected).await.unwrap();
    // The server refuses the new token too (a missing scope, say).
    let error = cache.reauthorize(&again).await.unwrap_err();
    assert!(error.is_unauthorized(), "{error:?}");
    cache.unauthorized(&again);
    run_until_idle().await;
    assert_eq!(
        refresher.calls(),
        1,
        "an always-401 endpoint costs one refresh"
    );
    // After the cool-down, a 401 is worth a refresh again.
    advance(Duration::from_secs(31)).await;
    let third = cache.reauthorize(&again).await.unwrap();
    assert_eq!(token_of(&third), access(2));
}

#[tokio::test(start_paused = true)]
async fn a_401_that_will_not_be_replayed_still_starts_the_refresh() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = cache_with(&refresher, HOUR);
    let rejected = cache.authorization().await.unwrap();
    cache.unauthorized(&rejected);
    cache.unauthorized(&rejected);
    until("the refresh", || cache.stats().refreshes() == 1).await;
    assert_eq!(refresher.calls(), 1);
    assert_eq!(
        token_of(&cache.try_authorization().unwrap()),
        access(1),
        "the next request gets the new token"
    );
}

#[tokio::test]
async fn a_fixed_token_cannot_be_reauthorized() {
    let cache = TokenCache::fixed("static-token").unwrap();
    let auth = cache.try_authorization().unwrap();
    assert_eq!(token_of(&auth), "static-token");
    assert!(
        cache
            .reauthorize(&auth)
            .await
            .unwrap_err()
            .is_unauthorized()
    );
    let debug = format!("{auth:?}");
    assert!(!debug.contains("static-token"), "{debug}");
    assert!(debug.contains("generation"), "{debug}");
}
