//! Heap allocations per request, counted by a global allocator.
//!
//! The performance contract: on the fast path (Basic, Bearer with a valid token, replay off) the
//! middleware adds no heap allocation to what a request costs anyway — building it and
//! inserting one header (the "floor"). With 401-replay on, what it keeps for a replay is
//! counted and bounded here.
//!
//! The counter is thread-local, so tests running in parallel on other threads (and the
//! runtime's own threads) do not disturb each other's counts.

#[path = "../benches/support/mod.rs"]
mod support;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    hint::black_box,
};

use bytes::Bytes;
use http::{Request, header::AUTHORIZATION};
use http_body_util::Empty;
use signalwire_auth::{BearerAuth, BearerAuthLayer, Subscriber, TokenPool};
use support::{
    Mint, Noop, bearer_value, drain, floor, noop, poll_now, request, request_1k, sat, send,
    valid_cache, variants,
};
use tower::{Layer, Service};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the allocator also runs while a thread's locals are being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to `System` unchanged; counting touches only a const-initialised
// thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growth is a trip to the allocator like any other.
        count_one();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: u64 = 1_000;
const ROUNDS: u64 = 10_000;

/// Allocations made by `ROUNDS` runs of `round`, after `WARM_UP` runs that pay for anything
/// lazily built once (a header's first clone, the cache's deadline timer).
fn count(mut round: impl FnMut()) -> u64 {
    for _ in 0..WARM_UP {
        round();
    }
    let before = allocations();
    for _ in 0..ROUNDS {
        round();
    }
    allocations() - before
}

/// The floor: build the request, insert one header, send it to the no-op service.
fn floor_count() -> u64 {
    floor_count_of(request)
}

/// The floor for the requests `make` builds.
fn floor_count_of(make: impl Fn() -> Request<Empty<Bytes>>) -> u64 {
    let value = bearer_value(&sat("bench"));
    let base = count(|| {
        black_box(floor(make(), &value));
    });
    assert!(
        base >= ROUNDS,
        "building a request allocates (its URI at least); a count of {base} means the \
         counting allocator is not in use"
    );
    base
}

/// Allocations made by the floor and by `service` over `ROUNDS` requests each.
fn floor_and<S>(service: S) -> (u64, u64)
where
    S: Service<Request<Empty<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    floor_and_of(service, request)
}

/// `floor_and` for the requests `make` builds.
fn floor_and_of<S>(mut service: S, make: impl Fn() -> Request<Empty<Bytes>>) -> (u64, u64)
where
    S: Service<Request<Empty<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let base = floor_count_of(&make);
    let total = count(|| {
        black_box(send(&mut service, make()));
    });
    (base, total)
}

/// Asserts that `service` allocates nothing per request beyond the floor.
fn assert_adds_nothing<S>(name: &str, service: S)
where
    S: Service<Request<Empty<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    assert_adds_nothing_for(name, service, request);
}

/// `assert_adds_nothing` for the requests `make` builds.
fn assert_adds_nothing_for<S>(name: &str, service: S, make: impl Fn() -> Request<Empty<Bytes>>)
where
    S: Service<Request<Empty<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let (base, total) = floor_and_of(service, make);
    println!(
        "floor: {:.2} allocations per request; {name}: {:.2}",
        base as f64 / ROUNDS as f64,
        total as f64 / ROUNDS as f64
    );
    assert_eq!(
        total, base,
        "{name} allocates on its fast path: {total} allocations for {ROUNDS} requests, the \
         floor makes {base}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

#[test]
fn basic_fast_path_allocates_nothing_beyond_the_request() {
    assert_adds_nothing("BasicAuth", variants::basic_auth());
}

#[test]
fn bearer_fast_path_allocates_nothing_beyond_the_request() {
    let rt = runtime();
    // The cache arms its deadline timer on first use, which needs a runtime.
    let _guard = rt.enter();
    let (cache, refreshes) = valid_cache(&sat("bench"));
    assert_adds_nothing(
        "BearerAuth (cache, replay off)",
        variants::bearer_replay_off(&cache),
    );
    assert_adds_nothing(
        "BearerAuth (cache, without_replay)",
        variants::bearer_no_replay(&cache),
    );
    assert_eq!(refreshes.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn bearer_from_a_fixed_token_allocates_nothing_beyond_the_request() {
    assert_adds_nothing(
        "BearerAuth (fixed token)",
        variants::bearer_fixed_token(&sat("bench")),
    );
}

/// A pooled service adds nothing either, on the memo of its last subscriber (a run of requests
/// for one) and on the pool's index (a different subscriber each time); the request's own
/// `Subscriber` extension is part of the floor.
#[test]
fn bearer_pooled_fast_path_allocates_nothing_beyond_the_request() {
    let rt = runtime();
    let _guard = rt.enter();
    let subscribers: Vec<Subscriber> = (0..3)
        .map(|n| Subscriber::new(format!("subscriber-{n}@example.com")))
        .collect();
    let mint = Mint::default();
    let pool = TokenPool::with_client(mint.client()).build();
    for subscriber in &subscribers {
        poll_now(pool.cache(subscriber.reference())).expect("a mint");
    }
    let service: BearerAuth<Noop> = BearerAuthLayer::pooled(pool.clone())
        .replay_limit(0)
        .layer(noop());
    let with = |subscriber: &Subscriber| {
        let mut request = request();
        request.extensions_mut().insert(subscriber.clone());
        request
    };

    assert_adds_nothing_for(
        "BearerAuth::pooled (one subscriber)",
        service.clone(),
        || with(&subscribers[0]),
    );
    let next = std::cell::Cell::new(0);
    assert_adds_nothing_for(
        "BearerAuth::pooled (each subscriber in turn)",
        service,
        || {
            let n = next.get();
            next.set((n + 1) % subscribers.len());
            with(&subscribers[n])
        },
    );

    // Every request was served from the pool: nothing minted after the first three.
    assert_eq!(mint.calls(), subscribers.len());
    assert!(pool.stats().hits() >= 2 * (WARM_UP + ROUNDS));
}

/// Replay on keeps the request's parts, and for a body that is not empty records it: that
/// costs a few allocations, counted here and bounded by what was measured when this test was
/// written, so a regression shows.
#[test]
fn bearer_with_replay_on_allocates_a_bounded_amount() {
    // Empty: the parts kept for a replay share the request's buffers (reference counts).
    const EMPTY_BODY_BOUND: f64 = 0.0;
    // The shared recording (`Arc<Mutex<Tee>>`) and the boxed original body.
    const KIB_BODY_BOUND: f64 = 2.0;
    // The same, plus the list of recorded chunks once the inner service reads the body.
    const KIB_READ_BOUND: f64 = 3.0;

    let rt = runtime();
    let _guard = rt.enter();
    let (cache, _) = valid_cache(&sat("bench"));
    let mut service = variants::bearer_replay_on(&cache);

    let base = floor_count();
    let empty = count(|| {
        black_box(send(&mut service, request()));
    });
    let value = bearer_value(&sat("bench"));
    let kib_floor = count(|| {
        black_box(floor(request_1k(), &value));
    });
    let kib = count(|| {
        black_box(send(&mut service, request_1k()));
    });
    let kib_read_floor = count(|| {
        let mut req = request_1k();
        req.headers_mut().insert(AUTHORIZATION, value.clone());
        black_box(send(&mut drain(), req));
    });
    let mut reading = BearerAuthLayer::new(cache).layer(drain());
    let kib_read = count(|| {
        black_box(send(&mut reading, request_1k()));
    });

    let per = |n: u64, base: u64| (n as f64 - base as f64) / ROUNDS as f64;
    let (empty_added, kib_added, kib_read_added) = (
        per(empty, base),
        per(kib, kib_floor),
        per(kib_read, kib_read_floor),
    );
    println!(
        "replay on, allocations added per request: empty body {empty_added:.2}, \
         1 KiB Full<Bytes> body {kib_added:.2} (read by the inner service: {kib_read_added:.2})"
    );
    assert!(
        empty_added <= EMPTY_BODY_BOUND,
        "replay on, empty body: {empty_added:.2} allocations per request, more than the \
         {EMPTY_BODY_BOUND} measured"
    );
    assert!(
        kib_added <= KIB_BODY_BOUND,
        "replay on, 1 KiB body: {kib_added:.2} allocations per request, more than the \
         {KIB_BODY_BOUND} measured"
    );
    assert!(
        kib_read_added <= KIB_READ_BOUND,
        "replay on, 1 KiB body read: {kib_read_added:.2} allocations per request, more than the \
         {KIB_READ_BOUND} measured"
    );
}

/// The designs written by hand, for the comparison in BENCHMARKS.md: formatting the header per
/// request allocates the `String` (and grows it) and the header's copy of it; the Tokio one
/// also boxes its future.
#[test]
fn hand_written_designs_allocate_per_request() {
    let token = sat("bench");
    let added = |(base, total): (u64, u64)| (total - base) / ROUNDS;
    let std_lock = added(floor_and(variants::naive_std_rwlock(&token)));
    let tokio_lock = added(floor_and(variants::naive_tokio_rwlock(&token)));
    println!(
        "hand-written, allocations added per request: std RwLock {std_lock}, tokio RwLock {tokio_lock}"
    );
    assert!(std_lock >= 2, "the String and the header's copy");
    assert_eq!(tokio_lock, std_lock + 1, "the same, and the boxed future");
}
