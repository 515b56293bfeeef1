//! Storms: many requests needing the same refresh at once, timed until all complete.
//!
//! - `expired_token`: 10,000 requests on an expired token wait for one refresh;
//! - `unauthorized`: 10,000 in-flight requests all get a 401 for the old token: one refresh,
//!   and each request is replayed once;
//! - `valid_token`: the same 10,000 requests on a valid token, for the cost of the requests
//!   themselves (one task each).
//!
//! Every request is called before any is polled, so all carry the token the cache held then;
//! each response future runs in a task of its own on a two-worker runtime. Every timed storm
//! checks that it ran exactly one refresh (and one replay per request); a storm that did not
//! fails the benchmark.

mod support;

use std::{
    fmt::Debug,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use signalwire_auth::{BearerAuthLayer, TokenPair};
use support::{Accept, expired_cache, refreshing_cache, request, sat, valid_cache, variants};
use tokio::{task::JoinSet, time::Instant};
use tower::{Layer, Service, ServiceExt};

const STORM: usize = 10_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a runtime")
}

/// Calls `service` `STORM` times, then runs every response future in a task of its own and
/// waits for all; every response must be a 200.
async fn storm<S>(service: &mut S)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Empty<Bytes>>>,
    S::Future: Send + 'static,
    S::Error: Debug + Send + 'static,
{
    let mut futures = Vec::with_capacity(STORM);
    for _ in 0..STORM {
        let ready = service.ready().await.expect("the service is ready");
        futures.push(ready.call(request()));
    }
    let mut tasks = JoinSet::new();
    for future in futures {
        tasks.spawn(future);
    }
    while let Some(done) = tasks.join_next().await {
        let response = done
            .expect("no request panics")
            .expect("the request succeeds");
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// Storms timed, and storms whose counts were not the expected ones.
#[derive(Default)]
struct Tally {
    storms: AtomicUsize,
    wrong: AtomicUsize,
}

impl Tally {
    fn record(&self, right: bool) {
        self.storms.fetch_add(1, Ordering::Relaxed);
        if !right {
            self.wrong.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn check(&self, what: &str) {
        let (storms, wrong) = (
            self.storms.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
        );
        println!(
            "{what}: {storms} storms of {STORM} requests, {wrong} with counts other than expected"
        );
        assert_eq!(
            wrong, 0,
            "{what}: a storm ran more or fewer refreshes than one"
        );
    }
}

/// Times storms through services built by `setup`; `right` checks each storm's counts.
fn bench_storm<S, C>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    setup: impl Fn() -> (S, C),
    right: impl Fn(&C) -> bool,
) where
    S: Service<Request<Empty<Bytes>>, Response = Response<Empty<Bytes>>>,
    S::Future: Send + 'static,
    S::Error: Debug + Send + 'static,
{
    let tally = Tally::default();
    c.bench_function(name, |b| {
        b.to_async(rt).iter_batched(
            &setup,
            |(mut service, counts)| {
                let (tally, right) = (&tally, &right);
                async move {
                    storm(&mut service).await;
                    tally.record(right(&counts));
                    // Dropped outside the timed part.
                    (service, counts)
                }
            },
            BatchSize::PerIteration,
        )
    });
    tally.check(name);
}

fn valid_token(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let setup = || {
        let (cache, refreshes) = valid_cache(&sat("bench"));
        (variants::bearer_replay_on(&cache), refreshes)
    };
    bench_storm(c, rt, "storm/valid_token", setup, |refreshes| {
        refreshes.load(Ordering::Relaxed) == 0
    });
}

fn expired_token(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let setup = || {
        let (cache, refreshes) = expired_cache(&sat("old"), &sat("new"));
        (variants::bearer_replay_on(&cache), refreshes)
    };

    // Once, in plain sight, outside the timed loop.
    let (mut service, refreshes) = setup();
    rt.block_on(storm(&mut service));
    let refreshes = refreshes.load(Ordering::Relaxed);
    println!(
        "storm/expired_token: {STORM} requests on an expired token ran {refreshes} refresh(es)"
    );
    assert_eq!(refreshes, 1);

    bench_storm(c, rt, "storm/expired_token", setup, |refreshes| {
        refreshes.load(Ordering::Relaxed) == 1
    });
}

fn unauthorized(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let new = sat("new");
    let setup = || {
        // Valid by the clock, but the server only takes the new token.
        let pair = TokenPair::new(sat("old"), Instant::now(), Duration::from_secs(3600))
            .expect("a valid token");
        let (cache, refreshes) = refreshing_cache(pair, &new);
        let gate = Accept::gate(&new);
        let counts = gate.0.clone();
        (BearerAuthLayer::new(cache).layer(gate), (refreshes, counts))
    };
    let right = |(refreshes, counts): &(Arc<AtomicUsize>, Accept)| {
        refreshes.load(Ordering::Relaxed) == 1
            && counts.calls.load(Ordering::Relaxed) == 2 * STORM
            && counts.refused.load(Ordering::Relaxed) == STORM
    };

    let (mut service, counts) = setup();
    rt.block_on(storm(&mut service));
    println!(
        "storm/unauthorized: {STORM} requests answered 401 ran {} refresh(es); the server saw {} \
         requests, {} refused",
        counts.0.load(Ordering::Relaxed),
        counts.1.calls.load(Ordering::Relaxed),
        counts.1.refused.load(Ordering::Relaxed),
    );
    assert!(right(&counts), "one refresh, and one replay per request");

    bench_storm(c, rt, "storm/unauthorized", setup, right);
}

fn storms(c: &mut Criterion) {
    let rt = runtime();
    valid_token(c, &rt);
    expired_token(c, &rt);
    unauthorized(c, &rt);
}

fn config() -> Criterion {
    // Each storm takes milliseconds: ten samples are enough by default.
    let samples = if support::full() { 50 } else { 10 };
    support::config().sample_size(samples)
}

criterion_group! {
    name = benches;
    config = config();
    targets = storms
}
criterion_main!(benches);
