//! The per-request cost of the auth layers, against tower-http's `AddAuthorization` and against
//! the floor (inserting the header by hand), each in front of a no-op inner service, with the
//! request built in every iteration. Then the Bearer fast path on one and two threads.
//!
//! Short settings by default, so that `cargo bench` stays within a few minutes; set
//! `SW_BENCH_FULL=1` for criterion's defaults (see BENCHMARKS.md).

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use support::{bearer_value, floor, request, request_1k, sat, send, split, valid_cache, variants};
use tower::Service;

/// Requests per measured iteration of the thread-scaling benchmarks, split across the threads.
const BATCH: u64 = 20_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

/// Benchmarks `service` on a request built per iteration by `make`.
fn bench_service<S, B>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut service: S,
    make: fn() -> Request<B>,
) where
    S: Service<Request<B>>,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| b.iter(|| send(&mut service, make())));
}

fn single_request(c: &mut Criterion) {
    let rt = runtime();
    // A refreshing cache arms its deadline timer on first use, which needs a runtime.
    let _guard = rt.enter();
    let token = sat("bench");
    let mut group = c.benchmark_group("request");

    let value = bearer_value(&token);
    group.bench_function("floor", |b| b.iter(|| floor(request(), &value)));
    group.bench_function("floor_1kib_body", |b| {
        b.iter(|| floor(request_1k(), &value))
    });

    let service = variants::add_authorization_basic();
    bench_service(&mut group, "add_authorization_basic", service, request);
    let service = variants::add_authorization_bearer(&token);
    bench_service(&mut group, "add_authorization_bearer", service, request);
    let service = variants::wrap_body_only(&token);
    bench_service(&mut group, "wrap_body_only", service, request);
    bench_service(&mut group, "basic_auth", variants::basic_auth(), request);

    let (cache, refreshes) = valid_cache(&token);
    let service = variants::bearer_replay_off(&cache);
    bench_service(&mut group, "bearer_cache_replay_off", service, request);
    let service = variants::bearer_no_replay(&cache);
    bench_service(&mut group, "bearer_cache_no_replay", service, request);
    let service = variants::bearer_replay_on(&cache);
    bench_service(&mut group, "bearer_cache_replay_on", service, request);
    let service = variants::bearer_replay_on(&cache);
    bench_service(
        &mut group,
        "bearer_cache_replay_on_1kib_body",
        service,
        request_1k,
    );
    let service = variants::bearer_fixed_token(&token);
    bench_service(&mut group, "bearer_fixed_token", service, request);

    let service = variants::naive_std_rwlock(&token);
    bench_service(&mut group, "naive_std_rwlock", service, request);
    let service = variants::naive_tokio_rwlock(&token);
    bench_service(&mut group, "naive_tokio_rwlock", service, request);
    group.finish();

    assert_eq!(
        refreshes.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a valid token was refreshed"
    );
}

fn threads(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let token = sat("bench");
    let (cache, _) = valid_cache(&token);
    let bearer = variants::bearer_replay_off(&cache);
    // Arm the cache's timer here, where a runtime is entered; the threads then never need one.
    send(&mut bearer.clone(), request());
    // No refresh, so no cache handle per request: isolates what that handle costs.
    let fixed = variants::bearer_fixed_token(&token);
    let anchor = variants::add_authorization_bearer(&token);
    let naive = variants::naive_std_rwlock(&token);

    let mut group = c.benchmark_group("threads");
    group.throughput(Throughput::Elements(BATCH));
    for threads in [1, 2] {
        group.bench_function(format!("bearer_cache_replay_off/{threads}"), |b| {
            b.iter_custom(|iters| split(&bearer, request, threads, BATCH * iters))
        });
        group.bench_function(format!("bearer_fixed_token/{threads}"), |b| {
            b.iter_custom(|iters| split(&fixed, request, threads, BATCH * iters))
        });
        group.bench_function(format!("add_authorization_bearer/{threads}"), |b| {
            b.iter_custom(|iters| split(&anchor, request, threads, BATCH * iters))
        });
        group.bench_function(format!("naive_std_rwlock/{threads}"), |b| {
            b.iter_custom(|iters| split(&naive, request, threads, BATCH * iters))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = single_request, threads
}
criterion_main!(benches);
