//! No token in any `Debug` or `Display` output, nor in anything the crate traces, through
//! refreshes, replays, failures and installs.

mod common;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use signalwire_auth::{BearerAuthLayer, ReplayBody, ReplaySkipped, TokenCache, TokenPair};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn tokens_never_reach_debug_output_or_traces() {
    let (logs, _guard) = Captured::install();

    let mut outputs: Vec<String> = Vec::new();
    let refresher = Refresher::new(Mode::Succeed);
    let builder = TokenCache::builder(pair(0, HOUR), refresher.closure())
        .refresh_ahead(Duration::from_secs(600))
        .jitter(false);
    outputs.push(format!("{builder:?}"));
    let cache = builder.build();
    let revoked: Arc<Mutex<HashSet<String>>> = Arc::default();
    revoked.lock().unwrap().insert(access(0));
    let refused = Arc::clone(&revoked);
    let upstream = Upstream::accepting(move |token| !refused.lock().unwrap().contains(token));
    let layer = BearerAuthLayer::new(cache.clone());
    let mut service = layer.layer(upstream.clone());
    outputs.push(format!(
        "{layer:?} {service:?} {cache:?} {:?}",
        cache.current()
    ));

    // A 401, one refresh, a replay.
    let response = service.clone().oneshot(request(0)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    outputs.push(format!("{response:?} {:?}", cache.stats()));

    // A 401 that cannot be replayed, and its background refresh (past the cool-down that
    // keeps a token obtained by a 401 from being refreshed again at once).
    advance(Duration::from_secs(31)).await;
    revoked.lock().unwrap().insert(access(1));
    let no_replay = BearerAuthLayer::new(cache.clone())
        .replay_limit(0)
        .layer(upstream.clone());
    let response = no_replay.oneshot(request(1)).await.unwrap();
    assert!(response.extensions().get::<ReplaySkipped>().is_some());
    run_until_idle().await;
    assert_eq!(refresher.calls(), 2);

    // Transient failures in the advisory window, with backoff.
    refresher.set_mode(Mode::Transient);
    advance(Duration::from_secs(51 * 60)).await;
    service.clone().oneshot(request(2)).await.unwrap();
    for _ in 0..3 {
        advance(Duration::from_secs(5)).await;
        yields(20).await;
    }
    // Then a terminal one, and the expired token's requests fail with it.
    refresher.set_mode(Mode::Terminal);
    advance(Duration::from_secs(9 * 60)).await;
    yields(20).await;
    let error = service.clone().oneshot(request(3)).await.unwrap_err();
    assert!(auth_error(&error).is_reauthentication_needed(), "{error}");
    outputs.push(describe(&*error));
    outputs.push(describe(&cache.refresh_now().await.unwrap_err()));

    // New tokens by hand.
    let installed = TokenPair::new("installed-secret", Instant::now(), HOUR)
        .unwrap()
        .with_refresh_token("installed-refresh-secret", HOUR)
        .unwrap();
    outputs.push(format!("{installed:?}"));
    cache.install(installed);
    service.clone().oneshot(request(4)).await.unwrap();

    // A response future, a replay body, refused and invalid input.
    std::future::poll_fn(|cx| Service::<Request<Full<Bytes>>>::poll_ready(&mut service, cx))
        .await
        .unwrap();
    let future = service.call(request(5));
    outputs.push(format!(
        "{future:?} {:?}",
        ReplayBody::new(Full::new(Bytes::new()))
    ));
    drop(future);
    let plain = Request::get("http://example.com/api")
        .body(Full::<Bytes>::default())
        .unwrap();
    let error = service.clone().oneshot(plain).await.unwrap_err();
    assert!(auth_error(&error).is_refused());
    outputs.push(describe(&*error));
    let error = TokenPair::new("not a valid secret", Instant::now(), HOUR).unwrap_err();
    outputs.push(describe(&error));
    let fixed = BearerAuthLayer::from_token("static-secret-token").unwrap();
    outputs.push(format!("{fixed:?} {:?}", fixed.layer(upstream.clone())));
    let error = BearerAuthLayer::from_token("static secret token").unwrap_err();
    outputs.push(describe(&error));

    drop(_guard);
    let traced = logs.text();
    // The capture works, and saw every path above.
    for event in [
        "replaying once",
        "token refreshed",
        "will retry",
        "failed for good",
        "installed by hand",
    ] {
        assert!(traced.contains(event), "no {event:?} event in:\n{traced}");
    }
    assert!(upstream.seen().iter().all(|seen| seen.sensitive));

    let mut secrets: Vec<String> = (0..=refresher.calls())
        .flat_map(|n| [access(n), refresh(n)])
        .collect();
    secrets.extend(
        [
            "installed-secret",
            "installed-refresh-secret",
            "static-secret-token",
            "static secret token",
            "not a valid secret",
        ]
        .map(str::to_owned),
    );
    let everything = format!("{traced}\n{}", outputs.join("\n"));
    for secret in &secrets {
        assert!(
            !everything.contains(secret.as_str()),
            "{secret:?} leaked into:\n{everything}"
        );
    }
}
