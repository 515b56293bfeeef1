//! A 401's body is read to its end before the replay, so the replay reuses the connection
//! (HTTP/1) or the stream ends cleanly (HTTP/2), against a real hyper server on 127.0.0.1.

mod common;

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use common::{TestServer, get, respond};
use http::StatusCode;
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use signalwire_auth::{BearerAuthLayer, RefreshError, ReplayBody, TokenCache, TokenPair};
use tokio::{task::JoinSet, time::Instant};
use tower::{Layer, Service, ServiceExt};

/// SignalWire-sized: a JSON error body of a few hundred bytes.
const UNAUTHORIZED: &str = r#"{"errors":[{"type":"authentication_error","code":"unauthorized","message":"The access token is invalid, expired or revoked; obtain a new one and try again.","attribute":null,"url":"https://developer.signalwire.com/rest/overview/error-codes/#unauthorized"}]}"#;

/// A 401 body larger than one read of the client's buffer (but under the 64 KiB it drains), so
/// that it has not all arrived when the head has.
static LARGE_UNAUTHORIZED: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"{{"errors":[{{"code":"unauthorized","message":"{}"}}]}}"#,
        "x".repeat(32 * 1024)
    )
});

/// A server that refuses every token starting with `revoked` with `body`, and accepts the rest.
async fn server(body: &'static str) -> TestServer {
    TestServer::start(move |seen| {
        let token = seen
            .authorization
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if token.starts_with("Bearer revoked") {
            respond(401, body)
        } else {
            respond(200, "ok")
        }
    })
    .await
}

type Http = Client<HttpConnector, ReplayBody<Full<Bytes>>>;

/// hyper-util's pooled client, HTTP/1.1 only: a connection serves one request at a time.
fn client() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// HTTP/2 with prior knowledge: one multiplexed connection.
fn h2_client() -> Http {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn pair(token: &str) -> TokenPair {
    TokenPair::new(token, Instant::now(), Duration::from_secs(3600)).unwrap()
}

/// A cache whose refresher hands out `fresh-1`, `fresh-2`, ...
fn cache(first: &str) -> TokenCache {
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    TokenCache::new(pair(first), move |_old: TokenPair| {
        let n = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        async move { Ok::<_, RefreshError>(pair(&format!("fresh-{n}"))) }
    })
}

#[tokio::test]
async fn http1_replays_reuse_the_connection_of_the_401() {
    let server = server(&LARGE_UNAUTHORIZED).await;
    let cache = cache("revoked-0");
    let service = BearerAuthLayer::new(cache.clone()).layer(client());

    for round in 1..=10u64 {
        // A token the server refuses, installed by hand: every round is a 401 for the current
        // token, one refresh, and one replay.
        cache.install(pair(&format!("revoked-{round}")));
        let response = service
            .clone()
            .oneshot(get(server.url("/api/fabric/addresses")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "round {round}");
        assert_eq!(cache.stats().replays(), round);
    }
    assert_eq!(cache.stats().refreshes(), 10);
    assert_eq!(server.seen().len(), 20);
    // Each 401 was read to its end, so its connection went back to the pool for the replay.
    assert_eq!(
        server.connections(),
        1,
        "a replay opened a new connection: the 401's body was dropped unread"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_revoked_requests_on_one_h2_connection_all_succeed() {
    let server = server(UNAUTHORIZED).await;
    let cache = cache("revoked-0");
    let service = BearerAuthLayer::new(cache.clone()).layer(h2_client());
    // The connection is up before the storm, so every request shares it.
    cache.install(pair("warm"));
    let warm = service
        .clone()
        .oneshot(get(server.url("/warm")))
        .await
        .unwrap();
    assert_eq!(warm.status(), StatusCode::OK);
    cache.install(pair("revoked-1"));

    // Every request is called (and so takes the revoked token) before any is polled.
    let mut service = service;
    let mut calls = Vec::new();
    for i in 0..2_000 {
        let request = get(server.url(&format!("/api/fabric/addresses?i={i}")));
        calls.push(service.ready().await.unwrap().call(request));
    }
    let mut tasks = JoinSet::new();
    for call in calls {
        tasks.spawn(call);
    }
    let mut ok = 0;
    while let Some(outcome) = tasks.join_next().await {
        let response = outcome.unwrap().expect("no request fails");
        assert_eq!(response.status(), StatusCode::OK);
        ok += 1;
    }
    assert_eq!(ok, 2_000);
    assert_eq!(
        cache.stats().refreshes(),
        1,
        "one refresh for the whole storm"
    );
    assert_eq!(cache.stats().replays(), 2_000);
    assert_eq!(
        server.seen().len(),
        1 + 4_000,
        "each request sent twice, no more"
    );
    assert_eq!(
        server.connections(),
        1,
        "the storm stayed on one h2 connection"
    );
}
