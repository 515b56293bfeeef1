//! Memory per idle subscriber in a `TokenPool`, counted by a global allocator.
//!
//! Fills a pool with `SUBSCRIBERS` subscribers (default 100,000; a number on the command line
//! overrides it), each minted in-process with a pair of SAT-sized tokens (about 700 bytes
//! each, as MockSpace and SignalWire mint them) and sent one request through
//! `BearerAuthLayer::pooled`, so that its cache has armed its refresh timer like any subscriber
//! that made a request and went idle. Prints the heap bytes the pool holds per subscriber:
//! bytes requested from the allocator and still held, so the allocator's own per-block
//! overhead (8–16 bytes a block with glibc) comes on top; the blocks are counted too.
//!
//! ```text
//! cargo bench --bench pool_memory
//! ```

mod support;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
};

use signalwire_auth::{BearerAuthLayer, Subscriber, TokenPool};
use support::{Mint, noop, request};
use tower::{Layer, Service, ServiceExt};

const SUBSCRIBERS: usize = 100_000;

/// Bytes and blocks currently allocated, process-wide.
static BYTES: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);
/// Blocks currently allocated, by size (the last slot: every size from `LARGE` up), to say
/// where the bytes go.
const LARGE: usize = 4096;
static BY_SIZE: [AtomicIsize; LARGE + 1] = [const { AtomicIsize::new(0) }; LARGE + 1];

/// Bytes in blocks of `LARGE` bytes or more.
static LARGE_BYTES: AtomicIsize = AtomicIsize::new(0);

fn note(size: usize, blocks: isize) {
    BY_SIZE[size.min(LARGE)].fetch_add(blocks, Ordering::Relaxed);
    if size >= LARGE {
        LARGE_BYTES.fetch_add(size as isize * blocks, Ordering::Relaxed);
    }
}

struct Counting;

// SAFETY: every method forwards to `System` unchanged; counting touches only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            BLOCKS.fetch_add(1, Ordering::Relaxed);
            note(layout.size(), 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            BLOCKS.fetch_add(1, Ordering::Relaxed);
            note(layout.size(), 1);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            note(layout.size(), -1);
            note(new_size, 1);
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        note(layout.size(), -1);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn by_size() -> Vec<isize> {
    BY_SIZE.iter().map(|n| n.load(Ordering::Relaxed)).collect()
}

fn held() -> (isize, isize) {
    (
        BYTES.load(Ordering::Relaxed),
        BLOCKS.load(Ordering::Relaxed),
    )
}

fn main() {
    // `cargo bench` passes flags such as `--bench`: only a plain number is ours.
    let subscribers = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .map_or(SUBSCRIBERS, |n| n.parse().expect("a number of subscribers"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mint = Mint::default();
        let pool = TokenPool::with_client(mint.client())
            .max_subscribers(subscribers as u64 + 1)
            .build();
        let service = BearerAuthLayer::pooled(pool.clone())
            .replay_limit(0)
            .layer(noop());
        // What the runtime and the pool's first use allocate once, whatever the count: the
        // sweep task, the runtime's timer wheel, the hasher's keys.
        send_for(&service, &Subscriber::new("warm-up@example.com")).await;
        let sizes_before = by_size();
        // Allocated now, so that the count below does not see it.
        let mut sizes_after = Vec::with_capacity(LARGE + 1);
        let before = held();
        let large_before = LARGE_BYTES.load(Ordering::Relaxed);

        for n in 0..subscribers {
            let subscriber = Subscriber::new(format!("subscriber-{n}@example.com"));
            send_for(&service, &subscriber).await;
        }
        // Pending moka bookkeeping applied, as it is within a few lookups in a running pool.
        pool.run_pending_tasks().await;
        let after = held();
        sizes_after.extend(BY_SIZE.iter().map(|n| n.load(Ordering::Relaxed)));

        let stats = pool.stats();
        assert_eq!(stats.live(), subscribers as u64 + 1, "{stats:?}");
        assert_eq!(stats.mints(), subscribers as u64 + 1);
        assert_eq!(mint.calls(), subscribers + 1);
        let (bytes, blocks) = (after.0 - before.0, after.1 - before.1);
        let per = |total: isize| total as f64 / subscribers as f64;
        println!(
            "pool_memory: {subscribers} idle subscribers hold {bytes} heap bytes in {blocks} \
             blocks: {:.0} bytes and {:.1} blocks per subscriber (SAT-sized tokens, {} bytes each)",
            per(bytes),
            per(blocks),
            support::sat("a0").len(),
        );
        let large = LARGE_BYTES.load(Ordering::Relaxed) - large_before;
        where_the_bytes_go(&sizes_before, &sizes_after, subscribers, large);
        drop((service, pool));
    });
}

/// The block sizes that hold most of the bytes, per subscriber.
fn where_the_bytes_go(before: &[isize], after: &[isize], subscribers: usize, large: isize) {
    let mut sizes: Vec<(usize, f64)> = (0..LARGE)
        .map(|size| {
            (
                size,
                (after[size] - before[size]) as f64 / subscribers as f64,
            )
        })
        .filter(|(_, per)| per.abs() >= 0.01)
        .collect();
    sizes.sort_by(|a, b| (b.0 as f64 * b.1).total_cmp(&(a.0 as f64 * a.1)));
    println!("block size: blocks per subscriber (bytes per subscriber), largest totals first");
    println!(
        "  >= {LARGE} B (tables): {:.4} ({:.0} B)",
        (after[LARGE] - before[LARGE]) as f64 / subscribers as f64,
        large as f64 / subscribers as f64,
    );
    for (size, per) in sizes.iter().take(16) {
        println!("  {size:>7} B: {per:.2} ({:.0} B)", *size as f64 * per);
    }
}

/// One request for `subscriber` through the pooled layer: its first mints its entry.
async fn send_for<S>(service: &S, subscriber: &Subscriber)
where
    S: Service<http::Request<http_body_util::Empty<bytes::Bytes>>> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut request = request();
    request.extensions_mut().insert(subscriber.clone());
    service
        .clone()
        .oneshot(request)
        .await
        .expect("the request succeeds");
}
