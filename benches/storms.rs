//! Storms: many requests needing the same refresh at once, timed until all complete.
//!
//! - `expired_token`: 10,000 requests on an expired token wait for one refresh;
//! - `unauthorized`: 10,000 in-flight requests all get a 401 for the old token: one refresh,
//!   and each request is replayed once;
//! - `valid_token`: the same 10,000 requests on a valid token, for the cost of the requests
//!   themselves (one task each);
//! - `pool_first_requests`: 1,000 subscribers × 10 requests, interleaved, through
//!   `BearerAuthLayer::pooled` over a new, empty `TokenPool`: one mint per subscriber (from an
//!   in-process Create Subscriber Token endpoint answering SAT-sized tokens, so no sockets).
//!
//! Every request is called before any is polled, so all carry the token the cache held then;
//! each response future runs in a task of its own on a two-worker runtime. Every timed storm
//! checks that it ran exactly one refresh (and one replay per request), or one mint per
//! subscriber; a storm that did not fails the benchmark.

mod support;

use std::{
    fmt::Debug,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use signalwire_auth::{BearerAuthLayer, Subscriber, TokenPair, TokenPool};
use support::{
    Accept, Mint, expired_cache, noop, refreshing_cache, request, sat, valid_cache, variants,
};
use tokio::{task::JoinSet, time::Instant};
use tower::{Layer, Service, ServiceExt};

const STORM: usize = 10_000;
/// The pooled storm's subscribers; each sends `STORM / SUBSCRIBERS` requests.
const SUBSCRIBERS: usize = 1_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a runtime")
}

/// Request `n` of a storm: the same for all, or one per subscriber.
type Make = fn(usize) -> Request<Empty<Bytes>>;

fn plain(_: usize) -> Request<Empty<Bytes>> {
    request()
}

/// `request()` for subscriber `n % SUBSCRIBERS`: each one's requests are spread over the storm,
/// racing each other and everyone else's.
fn for_subscriber(n: usize) -> Request<Empty<Bytes>> {
    static ALL: OnceLock<Vec<Subscriber>> = OnceLock::new();
    let subscribers = ALL.get_or_init(|| {
        (0..SUBSCRIBERS)
            .map(|n| Subscriber::new(format!("subscriber-{n}@example.com")))
            .collect()
    });
    let mut request = request();
    request
        .extensions_mut()
        .insert(subscribers[n % SUBSCRIBERS].clone());
    request
}

/// Calls `service` `STORM` times, then runs every response future in a task of its own and
/// waits for all; every response must be a 200.
async fn storm<S>(service: &mut S, make: Make)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Empty<Bytes>>>,
    S::Future: Send + 'static,
    S::Error: Debug + Send + 'static,
{
    let mut futures = Vec::with_capacity(STORM);
    for n in 0..STORM {
        let ready = service.ready().await.expect("the service is ready");
        futures.push(ready.call(make(n)));
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
            "{what}: a storm ran other refresh or mint counts than expected"
        );
    }
}

/// Times storms through services built by `setup`; `right` checks each storm's counts.
fn bench_storm<S, C>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    make: Make,
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
                    storm(&mut service, make).await;
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
    bench_storm(c, rt, "storm/valid_token", plain, setup, |refreshes| {
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
    rt.block_on(storm(&mut service, plain));
    let refreshes = refreshes.load(Ordering::Relaxed);
    println!(
        "storm/expired_token: {STORM} requests on an expired token ran {refreshes} refresh(es)"
    );
    assert_eq!(refreshes, 1);

    bench_storm(c, rt, "storm/expired_token", plain, setup, |refreshes| {
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
    rt.block_on(storm(&mut service, plain));
    println!(
        "storm/unauthorized: {STORM} requests answered 401 ran {} refresh(es); the server saw {} \
         requests, {} refused",
        counts.0.load(Ordering::Relaxed),
        counts.1.calls.load(Ordering::Relaxed),
        counts.1.refused.load(Ordering::Relaxed),
    );
    assert!(right(&counts), "one refresh, and one replay per request");

    bench_storm(c, rt, "storm/unauthorized", plain, setup, right);
}

fn pool_first_requests(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let setup = || {
        let mint = Mint::default();
        let pool = TokenPool::with_client(mint.client()).build();
        let layer = BearerAuthLayer::pooled(pool.clone()).layer(noop());
        (layer, (pool, mint))
    };
    let right = |(pool, mint): &(TokenPool, Mint)| {
        let stats = pool.stats();
        mint.calls() == SUBSCRIBERS
            && stats.mints() == SUBSCRIBERS as u64
            && stats.live() == SUBSCRIBERS as u64
            && stats.hits() + stats.misses() == STORM as u64
    };

    let (mut service, counts) = setup();
    rt.block_on(storm(&mut service, for_subscriber));
    let stats = counts.0.stats();
    println!(
        "storm/pool_first_requests: {SUBSCRIBERS} subscribers x {} requests ran {} mint(s) \
         ({} endpoint calls); {} hits, {} misses, {} live",
        STORM / SUBSCRIBERS,
        stats.mints(),
        counts.1.calls(),
        stats.hits(),
        stats.misses(),
        stats.live(),
    );
    assert!(right(&counts), "one mint per subscriber");

    bench_storm(
        c,
        rt,
        "storm/pool_first_requests",
        for_subscriber,
        setup,
        right,
    );
}

fn storms(c: &mut Criterion) {
    let rt = runtime();
    valid_token(c, &rt);
    expired_token(c, &rt);
    unauthorized(c, &rt);
    pool_first_requests(c, &rt);
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
