//! Replicas sharing one subscriber through a real `redis-server`, against `MockSpace`, on
//! the running clock (real sockets; lifetimes of seconds) (issue 11):
//!
//! - four caches with their own Redis connections over many short lifetimes with concurrent
//!   traffic: no refresh token presented twice, no request failed;
//! - the same across separate OS processes (this test binary re-executes itself);
//! - a lease holder killed mid-refresh: another replica completes within the lease TTL and
//!   one attempt, without presenting the token the holder presented;
//! - `redis-server` stopped and restarted mid-run: no request fails, sharing resumes;
//! - a process restart resumes from the store without a mint.
#![cfg(feature = "redis")]

mod common;

use std::{
    process::{Command, Stdio},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use common::redis::{
    ACCESS_LIFETIME, LEASE_TTL, RedisServer, Tally, credentials, one_request, replica, setup,
    traffic,
};
use signalwire_auth::{
    MockSpace, Space, TokenCache,
    mock::{Fault, MockEndpoint},
};

/// The child process's settings, from its parent.
const CHILD_MODE: &str = "SWA_REPLICA_CHILD";
const CHILD_SPACE: &str = "SWA_REPLICA_SPACE";
const CHILD_REDIS: &str = "SWA_REPLICA_REDIS";
const CHILD_SECONDS: &str = "SWA_REPLICA_SECONDS";

async fn replicas(mock: &MockSpace, server: &RedisServer, n: usize) -> Vec<TokenCache> {
    let mut caches = Vec::new();
    for _ in 0..n {
        caches.push(
            replica(&mock.space(), credentials(), &server.url())
                .start()
                .await
                .unwrap(),
        );
    }
    caches
}

/// Traffic from every cache until `stop` is set.
fn run_traffic(
    space: &Space,
    caches: &[TokenCache],
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinSet<Tally> {
    let mut runs = tokio::task::JoinSet::new();
    for cache in caches {
        let (space, cache, stop) = (space.clone(), cache.clone(), Arc::clone(stop));
        runs.spawn(async move { traffic(&space, &cache, 2, stop).await });
    }
    runs
}

async fn total(mut runs: tokio::task::JoinSet<Tally>) -> Tally {
    let mut sum = Tally::default();
    while let Some(tally) = runs.join_next().await {
        let tally = tally.unwrap();
        sum.ok += tally.ok;
        sum.failed += tally.failed;
    }
    sum
}

fn stop_after(stop: &Arc<AtomicBool>) {
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_share_one_chain_over_many_lifetimes() {
    let Some((server, mock)) = setup("four_replicas_share_one_chain").await else {
        return;
    };
    let caches = replicas(&mock, &server, 4).await;
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let runs = run_traffic(&mock.space(), &caches, &stop);
    // Five lifetimes.
    tokio::time::sleep(5 * ACCESS_LIFETIME).await;
    stop_after(&stop);
    let tally = total(runs).await;
    let refreshes = mock.calls(MockEndpoint::RefreshSubscriberToken);
    eprintln!("{tally:?}, {refreshes} refreshes");
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(tally.ok > 100, "{tally:?}");
    assert_eq!(
        mock.reused_refresh_tokens(),
        0,
        "every refresh token presented once"
    );
    assert!(
        refreshes >= 5,
        "one chain, rotated every lifetime: {refreshes}"
    );
    assert!(
        refreshes <= 20,
        "shared, not one chain per replica: {refreshes}"
    );
    let adopted: u64 = caches
        .iter()
        .map(|c| c.store_stats().unwrap().adopted())
        .sum();
    assert!(adopted >= 10, "{adopted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_mid_run_fails_no_request_and_sharing_resumes() {
    let Some((mut server, mock)) = setup("redis_stopped_and_restarted").await else {
        return;
    };
    let caches = replicas(&mock, &server, 4).await;
    let stop = Arc::new(AtomicBool::new(false));
    let runs = run_traffic(&mock.space(), &caches, &stop);
    tokio::time::sleep(ACCESS_LIFETIME).await;

    server.stop();
    // Longer than a lifetime: every replica needs a new token while Redis is gone.
    tokio::time::sleep(ACCESS_LIFETIME + ACCESS_LIFETIME / 2).await;
    let mints_in_outage = mock.calls(MockEndpoint::CreateSubscriberToken) - 1;
    let adopted_before: u64 = caches
        .iter()
        .map(|c| c.store_stats().unwrap().adopted())
        .sum();

    server.restart().await;
    tokio::time::sleep(3 * ACCESS_LIFETIME).await;
    stop_after(&stop);
    let tally = total(runs).await;
    let adopted_after: u64 = caches
        .iter()
        .map(|c| c.store_stats().unwrap().adopted())
        .sum();
    eprintln!(
        "{tally:?}, {mints_in_outage} mints in the outage, adopted {adopted_before} → {adopted_after}"
    );
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert_eq!(mock.reused_refresh_tokens(), 0);
    assert!(
        mints_in_outage >= 1,
        "a replica that needed a token minted its own"
    );
    assert!(
        adopted_after >= adopted_before + 3,
        "sharing resumed: {adopted_before} → {adopted_after}"
    );
}

/// Runs this test binary again as a child replica, in `mode`.
fn child(mode: &str, mock: &MockSpace, server: &RedisServer, seconds: u64) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_replica",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .env(CHILD_SPACE, mock.space().url())
        .env(CHILD_REDIS, server.url())
        .env(CHILD_SECONDS, seconds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// The child's report: `tally ok=N failed=M` on a line of its own.
fn report(output: &std::process::Output) -> Tally {
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|line| line.split_once("tally ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no report from the child: {text}"));
    let field = |name: &str| -> usize {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    Tally {
        ok: field("ok="),
        failed: field("failed="),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_in_separate_processes_share_one_chain() {
    let Some((server, mock)) = setup("replicas_in_separate_processes").await else {
        return;
    };
    let caches = replicas(&mock, &server, 1).await;
    let seconds = 4 * ACCESS_LIFETIME.as_secs();
    let children: Vec<_> = (0..3)
        .map(|_| child("traffic", &mock, &server, seconds).spawn().unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let runs = run_traffic(&mock.space(), &caches, &stop);
    let outputs: Vec<_> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap();
    stop_after(&stop);
    let mut tally = total(runs).await;
    for output in &outputs {
        assert!(output.status.success(), "{output:?}");
        let theirs = report(output);
        tally.ok += theirs.ok;
        tally.failed += theirs.failed;
    }
    let refreshes = mock.calls(MockEndpoint::RefreshSubscriberToken);
    eprintln!("{tally:?}, {refreshes} refreshes across 4 processes");
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(tally.ok > 100, "{tally:?}");
    assert_eq!(mock.reused_refresh_tokens(), 0);
    assert_eq!(
        mock.calls(MockEndpoint::CreateSubscriberToken),
        1,
        "the children started from the store"
    );
    assert!(
        (3..=16).contains(&refreshes),
        "shared, not one chain per process: {refreshes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_killed_mid_refresh_is_taken_over_within_the_ttl_and_one_attempt() {
    let Some((server, mock)) = setup("a_lease_holder_killed").await else {
        return;
    };
    let survivor = replicas(&mock, &server, 1).await.remove(0);
    // The child's refresh reaches the mock, which spends the refresh token and never answers.
    mock.inject(
        MockEndpoint::RefreshSubscriberToken,
        Fault::Stall(Duration::from_secs(600)),
        1,
    );
    let mut holder = child("refresh", &mock, &server, 0).spawn().unwrap();
    while mock.calls(MockEndpoint::RefreshSubscriberToken) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    holder.kill().unwrap();
    let _ = holder.wait();

    let bound = LEASE_TTL + LEASE_TTL / 2 + Duration::from_secs(1);
    let pair = tokio::time::timeout(bound, survivor.refresh_now())
        .await
        .expect("taken over within the lease TTL and one attempt")
        .unwrap();
    assert_eq!(
        mock.reused_refresh_tokens(),
        0,
        "the presented token is never presented again"
    );
    assert_eq!(
        mock.calls(MockEndpoint::CreateSubscriberToken),
        2,
        "the survivor minted"
    );
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
    let newcomer = replicas(&mock, &server, 1).await.remove(0);
    assert_eq!(
        newcomer.current().access_token(),
        pair.access_token(),
        "stored for all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_resumes_from_the_store_without_a_mint() {
    let Some((server, mock)) = setup("a_restarted_process_resumes").await else {
        return;
    };
    for run in 0..2 {
        let output = child("start", &mock, &server, 0).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(report(&output), Tally { ok: 1, failed: 0 }, "run {run}");
        assert_eq!(
            mock.calls(MockEndpoint::CreateSubscriberToken),
            1,
            "run {run}"
        );
    }
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 0);
}

/// The child replica: does nothing unless a parent test started it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the tests above in a process of its own"]
async fn child_replica() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let space = Space::from_url(&std::env::var(CHILD_SPACE).unwrap()).unwrap();
    let url = std::env::var(CHILD_REDIS).unwrap();
    let seconds: u64 = std::env::var(CHILD_SECONDS).unwrap().parse().unwrap();
    let cache = replica(&space, credentials(), &url).start().await.unwrap();
    let tally = match mode.as_str() {
        "traffic" => {
            let stop = Arc::new(AtomicBool::new(false));
            let run = {
                let (space, cache, stop) = (space.clone(), cache.clone(), Arc::clone(&stop));
                tokio::spawn(async move { traffic(&space, &cache, 2, stop).await })
            };
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop_after(&stop);
            run.await.unwrap()
        }
        // Takes the lease and presents the refresh token; the parent kills it meanwhile.
        "refresh" => {
            let _ = cache.refresh_now().await;
            Tally::default()
        }
        // Starts (from the store, or by minting) and sends one request.
        "start" => one_request(&space, &cache).await,
        other => panic!("unknown child mode {other}"),
    };
    println!("tally ok={} failed={}", tally.ok, tally.failed);
}
