//! The refresh core through the public API: single flight, the advisory and hard windows,
//! detached refreshes, compare-and-swap install, and how failures are shared and retried.
//!
//! Time is paused (`start_paused`) and moved with `tokio::time::advance`; behaviour is measured
//! with counters, never with clocks.

mod common;

use std::{
    error::Error as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::*;
use http::StatusCode;
use signalwire_auth::{TokenCache, TokenCacheBuilder, TokenPair};
use tokio::time::{Instant, advance};
use tower::ServiceExt;

const MINUTE: Duration = Duration::from_secs(60);

/// A one-hour pair whose advisory window opens 50 minutes in and whose hard window opens 59
/// minutes in, without jitter.
fn windowed(refresher: &Refresher) -> TokenCacheBuilder {
    TokenCache::builder(pair(0, HOUR), refresher.closure())
        .refresh_ahead(10 * MINUTE)
        .hard_margin(MINUTE)
        .jitter(false)
}

/// An error and its sources, as `{:#}` in anyhow prints them: each level says only what it
/// adds, so the refresher's words are one level down.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut shown = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        shown.push_str(": ");
        shown.push_str(&cause.to_string());
        next = cause.source();
    }
    shown
}

/// Asserts that every outcome is a 200 for a request the upstream saw with `token`.
fn assert_all_ok(outcomes: &[Outcome], upstream: &Upstream, token: &str) {
    for outcome in outcomes {
        let response = outcome.as_ref().expect("request failed");
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert!(
        upstream
            .seen()
            .iter()
            .all(|seen| seen.token.as_deref() == Some(token)),
        "every request carried {token}"
    );
}

/// 10,000 requests on an expired token: none goes out with it, one refresh runs, all succeed
/// with the new token. `expire_after` is paused time to skip (zero for a token born expired).
async fn ten_thousand_waiters_share_one_refresh(lifetime: Duration, expire_after: Duration) {
    const N: usize = 10_000;
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let cache = TokenCache::new(pair(0, lifetime), refresher.closure());
    let upstream = Upstream::accepting(|token| token == access(1));
    let service = client(&cache, &upstream);
    if !expire_after.is_zero() {
        advance(expire_after).await;
    }
    assert!(Instant::now() >= cache.current().expires_at());

    let tasks = send_batch(&service, 0..N).await;
    assert_eq!(
        upstream.calls(),
        0,
        "no request went out with the expired token"
    );
    until("the refresh has started", || refresher.calls() == 1).await;
    gate.open();
    let outcomes = join_batch(tasks).await;

    assert_eq!(outcomes.len(), N);
    assert_all_ok(&outcomes, &upstream, &access(1));
    assert_eq!(upstream.calls(), N, "each request was sent once");
    assert_eq!(refresher.calls(), 1);
    assert_eq!(cache.stats().attempts(), 1);
    assert_eq!(cache.stats().refreshes(), 1);
}

#[tokio::test(start_paused = true)]
async fn refresh_runs_once_for_ten_thousand_waiters() {
    ten_thousand_waiters_share_one_refresh(HOUR, HOUR + Duration::from_secs(1)).await;
}

/// Real threads cannot pause time: the token is born expired, and the refresher is held on a
/// gate until every request is queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_runs_once_for_ten_thousand_waiters_on_many_threads() {
    ten_thousand_waiters_share_one_refresh(Duration::ZERO, Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn refresh_now_callers_join_the_refresh_in_flight() {
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.refresh_now().await })
        })
        .collect();
    until("the refresh has started", || refresher.calls() == 1).await;
    yields(10).await;
    gate.open();
    for caller in callers {
        let fresh = caller.await.unwrap().expect("refresh failed");
        assert_eq!(fresh.access_token(), access(1));
    }
    assert_eq!(refresher.calls(), 1);
    assert_eq!(cache.current().access_token(), access(1));
    assert_eq!(cache.stats().generation(), 1);
}

#[tokio::test(start_paused = true)]
async fn advisory_window_refreshes_in_the_background() {
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let hook = Arc::clone(&hooked);
    let cache = windowed(&refresher)
        .on_refresh(move |pair: &TokenPair| {
            hook.lock()
                .unwrap()
                .push(pair.refresh_token().map(str::to_owned))
        })
        .build();
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);

    // Fresh: nothing to do.
    service.clone().oneshot(request(0)).await.unwrap();
    run_until_idle().await;
    assert_eq!(refresher.calls(), 0);

    advance(50 * MINUTE + Duration::from_secs(1)).await;
    run_until_idle().await;
    // The request that starts the refresh is answered at once, with the old token: it never
    // waits for the refresh, which cannot finish before the gate opens.
    let response = now_or_never(service.clone().oneshot(request(1)))
        .expect("the request past the advisory deadline did not wait")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1, "the request started one refresh");
    assert_eq!(refresher.finished(), 0);

    // While it runs, requests keep using the old token and start nothing more.
    for id in 2..20 {
        now_or_never(service.clone().oneshot(request(id)))
            .expect("requests in the advisory window do not wait")
            .unwrap();
    }
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1);
    assert!(
        upstream
            .seen()
            .iter()
            .all(|seen| seen.token.as_deref() == Some(access(0).as_str()))
    );

    gate.open();
    run_until_idle().await;
    service.clone().oneshot(request(20)).await.unwrap();
    assert_eq!(upstream.last_token(), Some(access(1)));
    assert_eq!(refresher.calls(), 1);
    assert_eq!(*hooked.lock().unwrap(), vec![Some(refresh(1))]);
    assert_eq!(cache.stats().refreshes(), 1);
}

#[tokio::test(start_paused = true)]
async fn hard_window_requests_wait_for_the_refresh() {
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    // Request-driven, so that the advisory deadline passes without a refresh.
    let cache = windowed(&refresher).keep_alive(false).build();
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);

    // The first request arms the timer that marks the deadlines.
    service.clone().oneshot(request(0)).await.unwrap();
    // Past the advisory deadline with no request, into the hard window.
    advance(HOUR - Duration::from_secs(30)).await;
    run_until_idle().await;
    assert_eq!(refresher.calls(), 0);

    let tasks = send_batch(&service, 1..21).await;
    until("the refresh has started", || refresher.calls() == 1).await;
    assert_eq!(upstream.calls(), 1, "requests in the hard window wait");
    gate.open();
    let outcomes = join_batch(tasks).await;
    assert!(
        outcomes
            .iter()
            .all(|o| o.as_ref().unwrap().status() == StatusCode::OK)
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 21);
    assert!(
        seen[1..]
            .iter()
            .all(|s| s.token.as_deref() == Some(access(1).as_str())),
        "every waiting request carried the new token"
    );
    assert_eq!(refresher.calls(), 1);
}

#[derive(Clone, Copy, Debug)]
enum GiveUp {
    AbortTask,
    Timeout,
    DropFuture,
}

#[tokio::test(start_paused = true)]
async fn dropping_the_request_that_started_a_refresh_does_not_cancel_it() {
    for how in [GiveUp::AbortTask, GiveUp::Timeout, GiveUp::DropFuture] {
        let (refresher, gate) = Refresher::gated(Mode::Succeed);
        let persisted = Arc::new(Mutex::new(Vec::new()));
        let hook = Arc::clone(&persisted);
        let cache = TokenCache::builder(pair(0, HOUR), refresher.closure())
            .on_refresh(move |pair: &TokenPair| {
                hook.lock()
                    .unwrap()
                    .push(pair.refresh_token().map(str::to_owned))
            })
            .build();
        let upstream = Upstream::accepting(|token| token != access(0));
        let service = client(&cache, &upstream);
        advance(HOUR + Duration::from_secs(1)).await;

        let starter = service.clone().oneshot(request(0));
        match how {
            GiveUp::AbortTask => {
                let task = tokio::spawn(starter);
                until("the refresh has started", || refresher.calls() == 1).await;
                task.abort();
                assert!(task.await.unwrap_err().is_cancelled());
            }
            GiveUp::Timeout => {
                let timed = tokio::time::timeout(Duration::from_secs(1), starter).await;
                assert!(
                    timed.is_err(),
                    "{how:?}: the starter should still be waiting"
                );
            }
            GiveUp::DropFuture => {
                assert!(now_or_never(starter).is_none(), "{how:?}: it should wait");
            }
        }
        until("the refresh has started", || refresher.calls() == 1).await;

        let tasks = send_batch(&service, 1..11).await;
        gate.open();
        let outcomes = join_batch(tasks).await;
        assert_all_ok(&outcomes, &upstream, &access(1));
        assert_eq!(
            upstream.calls(),
            10,
            "{how:?}: the dropped request was never sent"
        );
        assert_eq!(refresher.calls(), 1, "{how:?}");
        assert_eq!(refresher.given(), vec![Some(refresh(0))], "{how:?}");
        // The rotated refresh token was kept, and handed to the hook.
        assert_eq!(
            cache.current().refresh_token(),
            Some(refresh(1).as_str()),
            "{how:?}"
        );
        assert_eq!(
            *persisted.lock().unwrap(),
            vec![Some(refresh(1))],
            "{how:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_stale_refresh_never_overwrites_a_newer_pair() {
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let hooked = Arc::new(AtomicUsize::new(0));
    let hook = Arc::clone(&hooked);
    let cache = TokenCache::builder(pair(0, HOUR), refresher.closure())
        .on_refresh(move |_: &TokenPair| {
            hook.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let upstream = Upstream::accepting(|token| token != access(0));
    let service = client(&cache, &upstream);
    advance(HOUR + Duration::from_secs(1)).await;

    let waiting = send_batch(&service, 0..5).await;
    let joined_before_install = Arc::new(AtomicUsize::new(0));
    let joining = {
        let cache = cache.clone();
        let polled = Arc::clone(&joined_before_install);
        tokio::spawn(async move { count_first_poll(polled, cache.refresh_now()).await })
    };
    until("refresh_now has joined", || {
        joined_before_install.load(Ordering::SeqCst) == 1
    })
    .await;
    until("the refresh has started", || refresher.calls() == 1).await;

    let installed = TokenPair::new("installed", Instant::now(), HOUR)
        .unwrap()
        .with_refresh_token("installed-refresh", HOUR)
        .unwrap();
    cache.install(installed);
    gate.open();

    let outcomes = join_batch(waiting).await;
    assert_all_ok(&outcomes, &upstream, "installed");
    let joined = joining.await.unwrap().expect("refresh_now failed");
    assert_eq!(joined.access_token(), "installed");
    run_until_idle().await;

    assert_eq!(refresher.finished(), 1, "the stale refresh did complete");
    let current = cache.current();
    assert_eq!(current.access_token(), "installed");
    assert_eq!(current.refresh_token(), Some("installed-refresh"));
    assert_eq!(
        hooked.load(Ordering::SeqCst),
        0,
        "a discarded pair is not handed to the hook"
    );
    assert_eq!(cache.stats().refreshes(), 0);

    service.clone().oneshot(request(9)).await.unwrap();
    assert_eq!(upstream.last_token().as_deref(), Some("installed"));
    assert_eq!(refresher.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_keep_the_valid_token_back_off_and_recover() {
    let refresher = Refresher::new(Mode::Transient);
    let cache = windowed(&refresher).build();
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);
    let tolerance = Duration::from_millis(100);

    advance(50 * MINUTE + Duration::from_secs(1)).await;
    let first = now_or_never(service.clone().oneshot(request(0)))
        .expect("the advisory window never waits")
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    yields(20).await;
    assert_eq!(refresher.calls(), 1);

    // 1 s, 2 s, 4 s, 8 s, 16 s, then capped at 30 s: two minutes of outage.
    let delays = [1, 2, 4, 8, 16, 30, 30, 30].map(Duration::from_secs);
    for (i, delay) in delays.into_iter().enumerate() {
        let attempts = i + 1;
        advance(delay - tolerance).await;
        yields(20).await;
        assert_eq!(refresher.calls(), attempts, "no attempt before {delay:?}");
        // The still-valid token keeps serving, at once.
        let response = now_or_never(service.clone().oneshot(request(100 + i)))
            .expect("a valid token serves without waiting")
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        advance(2 * tolerance).await;
        yields(20).await;
        assert_eq!(
            refresher.calls(),
            attempts + 1,
            "one attempt after {delay:?}"
        );
    }
    assert_eq!(cache.stats().failures(), delays.len() as u64 + 1);
    assert!(
        upstream
            .seen()
            .iter()
            .all(|seen| seen.token.as_deref() == Some(access(0).as_str()))
    );

    // The endpoint comes back: the next attempt, 30 s on, succeeds.
    refresher.set_mode(Mode::Succeed);
    advance(Duration::from_secs(30) + tolerance).await;
    yields(20).await;
    let attempts = refresher.calls();
    assert_eq!(attempts, delays.len() + 2);
    assert_eq!(cache.stats().refreshes(), 1);
    service.clone().oneshot(request(999)).await.unwrap();
    assert_eq!(upstream.last_token(), Some(access(attempts)));
    // Recovered: no more attempts.
    advance(10 * MINUTE).await;
    yields(20).await;
    assert_eq!(refresher.calls(), attempts);
}

#[tokio::test(start_paused = true)]
async fn an_outage_past_expiry_fails_fast_with_refresh_failed() {
    let refresher = Refresher::new(Mode::Transient);
    // An attempt timeout shorter than the backoff: a request past expiry does not wait for
    // the next attempt (`a_request_past_expiry_waits_for_the_next_attempt_due_soon` does).
    let cache = windowed(&refresher)
        .attempt_timeout(Duration::from_millis(500))
        .build();
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);

    // In the hard window the request waits for the attempt; it fails, and the token is still
    // valid, so the request goes out with it.
    advance(HOUR - Duration::from_secs(30)).await;
    let response = service.clone().oneshot(request(0)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(refresher.calls(), 1);
    assert_eq!(upstream.token(0), Some(access(0)));

    // Expired, with the refresh endpoint still down: fail at once, say why, send nothing.
    advance(Duration::from_secs(31)).await;
    yields(20).await;
    for id in 1..50 {
        let error = now_or_never(service.clone().oneshot(request(id)))
            .expect("an expired token with a failing refresh must not hang the request")
            .unwrap_err();
        let error = auth_error(&error);
        assert!(error.is_refresh_failed(), "{error}");
        assert!(!error.is_reauthentication_needed());
        let cause = chain(error.source().expect("the refresh error is the source"));
        assert!(cause.contains("refresh endpoint unavailable"), "{cause}");
    }
    let refresh_now = now_or_never(cache.refresh_now())
        .expect("refresh_now fails at once during backoff")
        .unwrap_err();
    assert!(refresh_now.is_refresh_failed());
    assert_eq!(upstream.calls(), 1);
    let attempts = refresher.calls();
    assert!(attempts >= 2, "the cache kept retrying: {attempts}");

    // It goes on retrying in the background, and recovers by itself.
    refresher.set_mode(Mode::Succeed);
    advance(Duration::from_secs(31)).await;
    yields(20).await;
    assert_eq!(cache.stats().refreshes(), 1);
    let response = service.clone().oneshot(request(50)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.last_token(), Some(access(refresher.calls())));
}

#[tokio::test(start_paused = true)]
async fn a_hung_refresher_cannot_hang_requests() {
    let refresher = Refresher::new(Mode::Hang);
    let cache = TokenCache::builder(pair(0, HOUR), refresher.closure())
        .attempt_timeout(Duration::from_secs(5))
        .build();
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);
    advance(HOUR + Duration::from_secs(1)).await;

    // The runtime idles while the refresher hangs, so paused time jumps to the attempt timeout.
    let error = service.oneshot(request(0)).await.unwrap_err();
    let error = auth_error(&error);
    assert!(error.is_refresh_failed(), "{error}");
    assert_eq!(refresher.calls(), 1);
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_terminal_failure_is_shared_final_and_cleared_by_install() {
    let (refresher, gate) = Refresher::gated(Mode::Terminal);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);
    advance(HOUR + Duration::from_secs(1)).await;

    let tasks = send_batch(&service, 0..100).await;
    until("the refresh has started", || refresher.calls() == 1).await;
    gate.open();
    let outcomes = join_batch(tasks).await;
    let mut causes = Vec::new();
    for outcome in &outcomes {
        let error = auth_error(outcome.as_ref().unwrap_err());
        assert!(error.is_reauthentication_needed(), "{error}");
        assert!(!error.is_refresh_failed());
        causes.push(chain(error.source().expect("source")));
    }
    // One refresh, one result: every waiter got the error of call 1.
    assert!(
        causes
            .iter()
            .all(|c| c.contains("refresh token expired (call 1)")),
        "{causes:?}"
    );

    // No storm: later requests fail at once without another attempt, however long we wait.
    for round in 0..3 {
        for id in 0..20 {
            let error = now_or_never(service.clone().oneshot(request(1000 + id)))
                .expect("a broken chain fails at once")
                .unwrap_err();
            assert!(auth_error(&error).is_reauthentication_needed());
        }
        let error = now_or_never(cache.refresh_now())
            .expect("at once")
            .unwrap_err();
        assert!(error.is_reauthentication_needed(), "round {round}");
        advance(10 * MINUTE).await;
        yields(20).await;
    }
    assert_eq!(refresher.calls(), 1);
    assert_eq!(cache.stats().attempts(), 1);
    assert_eq!(upstream.calls(), 0);

    // New tokens by hand: everything works again.
    cache.install(pair(7, HOUR));
    let response = service.clone().oneshot(request(2000)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.token(0), Some(access(7)));
    assert_eq!(refresher.calls(), 1);

    // The broken chain was forgotten: the installed pair is refreshed when it expires.
    refresher.set_mode(Mode::Succeed);
    advance(HOUR + Duration::from_secs(1)).await;
    yields(20).await;
    service.clone().oneshot(request(2001)).await.unwrap();
    assert_eq!(refresher.calls(), 2);
    assert_eq!(refresher.given()[1], Some(refresh(7)));
    assert_eq!(upstream.last_token(), Some(access(2)));
}

#[tokio::test(start_paused = true)]
async fn install_during_backoff_stops_the_retries_of_the_old_pair() {
    let refresher = Refresher::new(Mode::Transient);
    let cache = windowed(&refresher).build();
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);

    advance(50 * MINUTE + Duration::from_secs(1)).await;
    service.clone().oneshot(request(0)).await.unwrap();
    yields(20).await;
    advance(Duration::from_secs(2)).await;
    yields(20).await;
    assert_eq!(refresher.calls(), 2, "failing and backing off");

    cache.install(pair(5, HOUR));
    advance(10 * MINUTE).await;
    yields(20).await;
    assert_eq!(refresher.calls(), 2, "nothing retries the replaced pair");
    service.clone().oneshot(request(1)).await.unwrap();
    assert_eq!(upstream.last_token(), Some(access(5)));
    assert_eq!(refresher.given(), vec![Some(refresh(0)); 2]);
}

#[tokio::test]
async fn a_fixed_token_cache_cannot_refresh() {
    let cache = TokenCache::fixed("guest-token").unwrap();
    assert_eq!(cache.current().access_token(), "guest-token");
    assert!(cache.refresh_now().await.unwrap_err().is_invalid_input());
    assert!(
        TokenCache::fixed("not a token")
            .unwrap_err()
            .is_invalid_input()
    );
}

#[tokio::test(start_paused = true)]
async fn install_releases_requests_waiting_on_a_refresh_at_once() {
    // The refresher never answers: only the install can release the waiters.
    let (refresher, _gate) = Refresher::gated(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::accepting(|token| token == "installed");
    let service = client(&cache, &upstream);
    advance(HOUR + Duration::from_secs(1)).await;

    let waiting = send_batch(&service, 0..5).await;
    until("the refresh has started", || refresher.calls() == 1).await;
    let started = Instant::now();
    cache.install(TokenPair::new("installed", Instant::now(), HOUR).unwrap());

    let outcomes = join_batch(waiting).await;
    assert_all_ok(&outcomes, &upstream, "installed");
    assert_eq!(
        Instant::now(),
        started,
        "no waiter sat out the hung refresh's attempt timeout"
    );
    assert_eq!(refresher.finished(), 0);
}

#[test]
fn a_timer_lost_with_its_runtime_is_armed_again_by_the_next_request() {
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let refresher = Refresher::new(Mode::Succeed);
    let cache = windowed(&refresher).build();
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);

    // The first request arms the deadline timer on a runtime that then goes away.
    let first = paused();
    first.block_on(service.clone().oneshot(request(0))).unwrap();
    drop(first);

    // On another runtime, past expiry: the request must not go out with the expired token.
    let second = paused();
    second.block_on(async {
        advance(HOUR + MINUTE).await;
        service.clone().oneshot(request(1)).await.unwrap();
    });
    assert_eq!(refresher.calls(), 1, "the expired token was refreshed");
    assert_eq!(upstream.last_token(), Some(access(1)));
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_cannot_stop_the_retries() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let cache = TokenCache::builder(pair(0, HOUR), move |_: TokenPair| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<TokenPair, _>(
                signalwire_auth::RefreshError::transient("rate limited")
                    .with_retry_after(Duration::from_secs(365 * 86_400)),
            )
        }
    })
    .jitter(false)
    .build();
    let _ = cache.refresh_now().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The pause asked for is capped (at five minutes): retries go on.
    for _ in 0..20 {
        advance(MINUTE).await;
        run_until_idle().await;
    }
    assert!(
        calls.load(Ordering::SeqCst) >= 4,
        "retries continued: {} attempts",
        calls.load(Ordering::SeqCst)
    );
}

#[tokio::test(start_paused = true)]
async fn an_advisory_refresh_skipped_behind_an_older_pairs_refresh_is_retried() {
    let (refresher, gate) = Refresher::gated(Mode::Succeed);
    let cache = windowed(&refresher).attempt_timeout(2 * HOUR).build();
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);
    service.clone().oneshot(request(0)).await.unwrap();

    // The first pair's refresh starts in its hard window and hangs at the gate…
    advance(HOUR - Duration::from_secs(30)).await;
    let waiting = send_batch(&service, 1..2).await;
    until("the first refresh has started", || refresher.calls() == 1).await;
    // …while a new pair is installed by hand and reaches its own advisory window.
    cache.install(TokenPair::new("installed", Instant::now(), HOUR).unwrap());
    let outcomes = join_batch(waiting).await;
    assert_eq!(outcomes[0].as_ref().unwrap().status(), StatusCode::OK);
    assert_eq!(upstream.last_token().as_deref(), Some("installed"));
    advance(50 * MINUTE + Duration::from_secs(1)).await;
    run_until_idle().await;

    // A request past the new pair's advisory deadline finds the old refresh still running: it
    // cannot start one, and must not use up the new pair's one chance to.
    service.clone().oneshot(request(2)).await.unwrap();
    run_until_idle().await;
    assert_eq!(refresher.calls(), 1);

    gate.open();
    // The old refresh's end starts the new pair's refresh at once (the gate is open, so it may
    // finish in the same turn).
    until("the old refresh has finished", || refresher.finished() >= 1).await;
    run_until_idle().await;
    service.clone().oneshot(request(3)).await.unwrap();
    run_until_idle().await;
    assert_eq!(
        refresher.calls(),
        2,
        "the next request started the new pair's refresh"
    );
    assert_eq!(cache.current().access_token(), access(2));
}
