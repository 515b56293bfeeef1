//! Not a timed benchmark: sends N requests through one variant, for an instruction count that
//! does not depend on how busy the machine is.
//!
//! ```text
//! cargo bench --bench instructions --no-run
//! B=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -1)
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B bearer_cache_replay_off 1000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B bearer_cache_replay_off 21000
//! ```
//!
//! The difference of the two totals, divided by 20,000, is the count per request. Run by
//! `cargo bench` without a variant, it prints this usage and exits.

mod support;

use std::hint::black_box;

use support::{bearer_value, floor, request, sat, send, valid_cache, variants};
use tower::Service;

const VARIANTS: &[&str] = &[
    "floor",
    "add_authorization_basic",
    "add_authorization_bearer",
    "wrap_body_only",
    "basic_auth",
    "bearer_cache_replay_off",
    "bearer_cache_replay_on",
    "bearer_fixed_token",
    "naive_std_rwlock",
    "naive_tokio_rwlock",
];

#[inline(never)]
fn run<S>(mut service: S, n: u64)
where
    S: Service<http::Request<http_body_util::Empty<bytes::Bytes>>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        black_box(send(&mut service, request()));
    }
}

fn main() {
    // `cargo bench` passes flags such as `--bench`: only plain words are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let (Some(variant), Some(n)) = (args.first(), args.get(1).and_then(|n| n.parse().ok())) else {
        println!(
            "instructions: not a timed benchmark; run it under callgrind as \
             `instructions <variant> <requests>` (see BENCHMARKS.md), variants: {}",
            VARIANTS.join(", ")
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _guard = rt.enter();
    let token = sat("bench");
    let (cache, _) = valid_cache(&token);
    match variant.as_str() {
        "floor" => {
            let value = bearer_value(&token);
            for _ in 0..n {
                black_box(floor(request(), &value));
            }
        }
        "add_authorization_basic" => run(variants::add_authorization_basic(), n),
        "add_authorization_bearer" => run(variants::add_authorization_bearer(&token), n),
        "wrap_body_only" => run(variants::wrap_body_only(&token), n),
        "basic_auth" => run(variants::basic_auth(), n),
        "bearer_cache_replay_off" => run(variants::bearer_replay_off(&cache), n),
        "bearer_cache_replay_on" => run(variants::bearer_replay_on(&cache), n),
        "bearer_fixed_token" => run(variants::bearer_fixed_token(&token), n),
        "naive_std_rwlock" => run(variants::naive_std_rwlock(&token), n),
        "naive_tokio_rwlock" => run(variants::naive_tokio_rwlock(&token), n),
        other => panic!("unknown variant {other:?}; one of {}", VARIANTS.join(", ")),
    }
}
