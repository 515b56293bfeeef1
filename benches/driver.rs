//! Three tools beside the criterion benchmarks, for a machine shared with other work:
//!
//! - `best` (what `cargo bench` runs): every variant of `hot_path` timed in rounds, the variants
//!   interleaved within each round, keeping each one's fastest run. A burst of other work then
//!   slows one run of every variant rather than all the samples of one, and the minimum ignores
//!   it. Prints the ratios to `AddAuthorization` and to the floor, and the 2-thread scaling.
//! - `count-all`: the instruction table, `cargo bench --bench driver -- count-all`. Runs this
//!   binary under callgrind (`valgrind` must be on the `PATH`) twice per variant, with `count`,
//!   and prints every variant's instructions per request with its ratios to `AddAuthorization`
//!   and to the floor, all from the one run, and what the pooled variants add over one cache.
//! - `count <variant> <requests>`: sends the requests through one variant and exits, to be
//!   counted with callgrind; two counts give the instructions per request:
//!
//! ```text
//! cargo bench --bench driver --no-run
//! B=$(ls -t target/release/deps/driver-* | grep -v '\.d$' | head -1)
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B count bearer_cache_replay_off 1000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B count bearer_cache_replay_off 21000
//! ```
//!
//! (the difference of the two "Collected" totals, divided by 20,000).
//!
//! The pooled variants (`bearer_pooled_*`) send requests carrying a `Subscriber` extension
//! through `BearerAuthLayer::pooled`, over a pool filled beforehand (in-process mints); compare
//! them with `bearer_cache_replay_off_subscriber`, the single cache with the same requests (the
//! extension costs the request's builder an allocation or two, whatever the layer). The
//! `_rotating` pair names each of 10,000 subscribers in turn, so that every pooled request goes
//! through the pool's index rather than the service's memo of its last subscriber.

mod support;

use std::{
    hint::black_box,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use signalwire_auth::{BearerAuth, BearerAuthLayer, Subscriber, TokenPool};
use support::{
    Mint, Noop, bearer_value, floor, noop, poll_now, request, request_1k, sat, send, split,
    split_with, valid_cache, variants,
};
use tower::{Layer, Service};

/// Requests per timed run; a run takes tens of milliseconds.
const REQUESTS: u64 = 200_000;

/// A variant as the driver runs it: `(threads, requests)` to the wall time they took.
type Run = Box<dyn FnMut(u64, u64) -> Duration>;

fn timed<S, B: 'static>(service: S, make: fn() -> Request<B>) -> Run
where
    S: Service<Request<B>> + Clone + Send + Sync + 'static,
    S::Error: std::fmt::Debug,
{
    Box::new(move |threads, requests| split(&service, make, threads, requests))
}

/// The request of the pooled variants: `request()` with the one subscriber they send for.
fn request_with_subscriber() -> Request<Empty<Bytes>> {
    static SUBSCRIBER: OnceLock<Subscriber> = OnceLock::new();
    let mut request = request();
    request
        .extensions_mut()
        .insert(SUBSCRIBER.get_or_init(|| pool_subscriber(0)).clone());
    request
}

/// Subscribers of the pooled variants that rotate: one more than the pool holds would evict.
const ROTATING: usize = 10_000;

/// `request()` for each of the `ROTATING` subscribers in turn, so that no two requests in a
/// row name the same one: the pooled service's memo of its last subscriber never serves, and
/// every request goes through the index.
fn request_rotating() -> Request<Empty<Bytes>> {
    static SUBSCRIBERS: OnceLock<Vec<Subscriber>> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let subscribers = SUBSCRIBERS.get_or_init(|| (0..ROTATING).map(pool_subscriber).collect());
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % ROTATING;
    let mut request = request();
    request.extensions_mut().insert(subscribers[n].clone());
    request
}

fn pool_subscriber(n: usize) -> Subscriber {
    Subscriber::new(format!("subscriber-{n}@example.com"))
}

/// A pooled layer (replay off) over the no-op service, its pool holding `live` subscribers,
/// minted in-process (no sockets, so that callgrind counts the same work every time).
fn pooled(live: usize, make: fn() -> Request<Empty<Bytes>>) -> Run {
    let mint = Mint::default();
    let pool = TokenPool::with_client(mint.client())
        .max_subscribers(live as u64)
        .build();
    for n in 0..live {
        poll_now(pool.cache(pool_subscriber(n).reference())).expect("a mint");
    }
    assert_eq!((pool.stats().live(), mint.calls()), (live as u64, live));
    let service: BearerAuth<Noop> = BearerAuthLayer::pooled(pool.clone())
        .replay_limit(0)
        .layer(noop());
    // Arms the timers of the entries `make` names on this thread's runtime, as for the single
    // cache (the threads have none).
    for _ in 0..live {
        send(&mut service.clone(), make());
    }
    Box::new(move |threads, requests| {
        let hits = pool.stats().hits();
        let took = split(&service, make, threads, requests);
        // Every request found its subscriber in the index: nothing was minted meanwhile.
        assert_eq!(pool.stats().hits() - hits, requests / threads * threads);
        assert_eq!(pool.stats().mints(), live as u64);
        took
    })
}

/// A variant not built yet: building some (a pool of 10,000) costs more than timing them.
type Build<'a> = Box<dyn FnOnce() -> Run + 'a>;

/// Every variant, by the name `hot_path` gives it; only those `wanted` are built.
fn variants(token: &str, wanted: impl Fn(&str) -> bool) -> Vec<(&'static str, Option<Run>)> {
    let (cache, _) = valid_cache(token);
    // Arm the cache's timer now, inside the runtime; the threads then never need one.
    send(&mut variants::bearer_replay_off(&cache), request());
    let value = bearer_value(token);
    let cache = &cache;
    let all: Vec<(&'static str, Build<'_>)> = vec![
        ("floor", Box::new(|| floor_run(value.clone(), request))),
        (
            "floor_1kib_body",
            Box::new(|| floor_run(value.clone(), request_1k)),
        ),
        (
            "add_authorization_basic",
            Box::new(|| timed(variants::add_authorization_basic(), request)),
        ),
        (
            "add_authorization_bearer",
            Box::new(|| timed(variants::add_authorization_bearer(token), request)),
        ),
        (
            "wrap_body_only",
            Box::new(|| timed(variants::wrap_body_only(token), request)),
        ),
        (
            "basic_auth",
            Box::new(|| timed(variants::basic_auth(), request)),
        ),
        (
            "bearer_cache_replay_off",
            Box::new(|| timed(variants::bearer_replay_off(cache), request)),
        ),
        (
            "bearer_cache_no_replay",
            Box::new(|| timed(variants::bearer_no_replay(cache), request)),
        ),
        (
            "bearer_cache_replay_on",
            Box::new(|| timed(variants::bearer_replay_on(cache), request)),
        ),
        (
            "bearer_cache_replay_on_1kib_body",
            Box::new(|| timed(variants::bearer_replay_on(cache), request_1k)),
        ),
        (
            "bearer_fixed_token",
            Box::new(|| timed(variants::bearer_fixed_token(token), request)),
        ),
        (
            "naive_std_rwlock",
            Box::new(|| timed(variants::naive_std_rwlock(token), request)),
        ),
        (
            "naive_tokio_rwlock",
            Box::new(|| timed(variants::naive_tokio_rwlock(token), request)),
        ),
        (
            "bearer_cache_replay_off_subscriber",
            Box::new(|| timed(variants::bearer_replay_off(cache), request_with_subscriber)),
        ),
        (
            "bearer_cache_replay_off_rotating",
            Box::new(|| timed(variants::bearer_replay_off(cache), request_rotating)),
        ),
        (
            "bearer_pooled_1",
            Box::new(|| pooled(1, request_with_subscriber)),
        ),
        (
            "bearer_pooled_10k",
            Box::new(|| pooled(10_000, request_with_subscriber)),
        ),
        (
            "bearer_pooled_10k_rotating",
            Box::new(|| pooled(ROTATING, request_rotating)),
        ),
    ];
    all.into_iter()
        .map(|(name, build)| (name, wanted(name).then(build)))
        .collect()
}

/// What a variant's ratios are taken to: the `AddAuthorization` of its scheme (`None` for the
/// floors themselves), and the floor.
fn anchors(name: &str) -> (Option<&'static str>, &'static str) {
    match name {
        "floor" => (None, "floor"),
        "floor_1kib_body" => (None, "floor_1kib_body"),
        "add_authorization_basic" | "basic_auth" => (Some("add_authorization_basic"), "floor"),
        n if n.ends_with("1kib_body") => (Some("add_authorization_bearer"), "floor_1kib_body"),
        _ => (Some("add_authorization_bearer"), "floor"),
    }
}

/// The floor, as `hot_path` times it: the header inserted by hand, then the no-op service.
fn floor_run<B>(value: http::HeaderValue, make: fn() -> Request<B>) -> Run
where
    B: http_body::Body + 'static,
    B::Error: std::fmt::Debug,
{
    Box::new(move |threads, requests| {
        split_with(threads, requests, || {
            let value = value.clone();
            move || {
                black_box(floor(make(), &value));
            }
        })
    })
}

/// The variants timed on two threads as well.
const SCALED: &[&str] = &[
    "add_authorization_bearer",
    "bearer_cache_replay_off",
    "bearer_cache_no_replay",
    "bearer_fixed_token",
    "naive_std_rwlock",
    "bearer_pooled_10k",
];

fn best(rounds: usize) {
    let token = sat("bench");
    let mut variants: Vec<(&str, Run)> = variants(&token, |_| true)
        .into_iter()
        .filter_map(|(name, run)| Some((name, run?)))
        .collect();
    let mut one = vec![Duration::MAX; variants.len()];
    let mut two = vec![Duration::MAX; variants.len()];
    for _ in 0..rounds {
        for (i, (name, run)) in variants.iter_mut().enumerate() {
            one[i] = one[i].min(run(1, REQUESTS));
            if SCALED.contains(name) {
                two[i] = two[i].min(run(2, REQUESTS));
            }
        }
    }
    let ns = |d: Duration| d.as_secs_f64() * 1e9 / REQUESTS as f64;
    let of = |name: &str| {
        let i = variants
            .iter()
            .position(|(n, _)| *n == name)
            .expect("a variant");
        ns(one[i])
    };
    println!("driver: best of {rounds} runs of {REQUESTS} requests, variants interleaved");
    println!("| variant | ns per request | ÷ AddAuthorization | ÷ floor |");
    println!("| --- | ---: | ---: | ---: |");
    for (i, (name, _)) in variants.iter().enumerate() {
        let (anchor, floor) = anchors(name);
        let t = ns(one[i]);
        let anchor = anchor.map_or("—".to_owned(), |a| format!("{:.3}", t / of(a)));
        println!("| {name} | {t:.1} | {anchor} | {:.3} |", t / of(floor));
    }
    println!("| variant | 1 thread, M req/s | 2 threads, M req/s | 2 ÷ 1 |");
    println!("| --- | ---: | ---: | ---: |");
    for (i, (name, _)) in variants.iter().enumerate() {
        if SCALED.contains(name) {
            let rate = |d: Duration| REQUESTS as f64 / d.as_secs_f64() / 1e6;
            let (r1, r2) = (rate(one[i]), rate(two[i]));
            println!("| {name} | {r1:.2} | {r2:.2} | {:.2}× |", r2 / r1);
        }
    }
}

/// `requests` requests through one variant, on this thread.
fn count(variant: &str, requests: u64) {
    let token = sat("bench");
    let mut variants = variants(&token, |name| name == variant);
    let Some(run) = variants.iter_mut().find_map(|(_, run)| run.as_mut()) else {
        let names: Vec<_> = variants.iter().map(|(name, _)| *name).collect();
        panic!("unknown variant {variant:?}; one of {}", names.join(", "));
    };
    black_box(run(1, requests));
}

/// Requests in the shorter and the longer of the two counted runs of `count-all`.
const COUNTED: (u64, u64) = (1_000, 21_000);

/// Every variant counted under callgrind, two runs each (this binary, `count`): the difference
/// of the two totals, over the difference in requests, leaves out the setup and is exact.
fn count_all() {
    let exe = std::env::current_exe().expect("the driver's own path");
    let token = sat("bench");
    let names: Vec<&str> = variants(&token, |_| false)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut counts = Vec::new();
    for name in &names {
        let [short, long] = [COUNTED.0, COUNTED.1].map(|requests| collected(&exe, name, requests));
        let per = (long - short) as f64 / (COUNTED.1 - COUNTED.0) as f64;
        eprintln!("counted {name}: {per:.1} instructions per request");
        counts.push((*name, per));
    }
    let of = |name: &str| counts.iter().find(|(n, _)| *n == name).expect("counted").1;
    println!(
        "callgrind: instructions per request ((Ir for {} requests - Ir for {}) / {})",
        COUNTED.1,
        COUNTED.0,
        COUNTED.1 - COUNTED.0
    );
    println!("| variant | instructions | ÷ AddAuthorization | ÷ floor |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, per) in &counts {
        let (anchor, floor) = anchors(name);
        let anchor = anchor.map_or("—".to_owned(), |a| format!("{:.3}", per / of(a)));
        println!("| {name} | {per:.0} | {anchor} | {:.3} |", per / of(floor));
    }
    for (pooled, single) in [
        ("bearer_pooled_1", "bearer_cache_replay_off_subscriber"),
        ("bearer_pooled_10k", "bearer_cache_replay_off_subscriber"),
        (
            "bearer_pooled_10k_rotating",
            "bearer_cache_replay_off_rotating",
        ),
    ] {
        println!(
            "{pooled}: {:+.0} instructions over one TokenCache ({single})",
            of(pooled) - of(single)
        );
    }
}

/// Callgrind's total of instructions ("Collected") for `requests` requests through `variant`.
fn collected(exe: &std::path::Path, variant: &str, requests: u64) -> u64 {
    let output = std::process::Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["count", variant, &requests.to_string()])
        .output()
        .expect("valgrind (callgrind) on the PATH");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "callgrind failed on {variant}:\n{stderr}"
    );
    stderr
        .lines()
        .find_map(|line| line.split_once("Collected :"))
        .and_then(|(_, total)| total.trim().parse().ok())
        .unwrap_or_else(|| panic!("no \"Collected\" total from callgrind:\n{stderr}"))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    // A refreshing cache arms its deadline timer on first use, which needs a runtime.
    let _guard = rt.enter();
    // `cargo bench` passes flags such as `--bench`: only plain words are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    match args.as_slice() {
        [mode, variant, requests] if mode == "count" => {
            count(variant, requests.parse().expect("a number of requests"));
        }
        [mode] if mode == "count-all" => count_all(),
        _ => best(if support::full() { 20 } else { 5 }),
    }
}
