//! `BearerAuthLayer` over the crate's hyper-util client, against a real hyper server on
//! 127.0.0.1 that accepts only the current token.
#![cfg(feature = "test-util")]

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode, header::WWW_AUTHENTICATE};
use http_body_util::{BodyExt, Full};
use signalwire_auth::{BearerAuthLayer, ReplayBody, Space, TokenCache, https_client};
use tokio::task::JoinSet;
use tower::{ServiceBuilder, ServiceExt};

/// A server on 127.0.0.1 that answers 200 (echoing the body) to `Bearer <accepted>` and 401 to
/// anything else. It can hold the first rejections until a whole batch has arrived, so a test
/// knows every request of the batch was sent with the revoked token.
struct TokenServer {
    server: TestServer,
    state: Arc<Acceptance>,
}

struct Acceptance {
    accepted: Mutex<String>,
    rejected: AtomicUsize,
    hold_first: AtomicUsize,
    held: Gate,
}

impl TokenServer {
    async fn start(accepted: &str) -> Self {
        let state = Arc::new(Acceptance {
            accepted: Mutex::new(accepted.to_owned()),
            rejected: AtomicUsize::new(0),
            hold_first: AtomicUsize::new(0),
            held: Gate::default(),
        });
        let answering = Arc::clone(&state);
        let server =
            TestServer::start_async(move |seen| answer(Arc::clone(&answering), seen)).await;
        Self { server, state }
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    fn base_url(&self) -> String {
        self.server.url("")
    }

    /// Revokes every token but `token`.
    fn accept_only(&self, token: &str) {
        *self.state.accepted.lock().unwrap() = token.to_owned();
    }

    /// Holds the next `count` rejections until all of them have arrived.
    fn hold_rejections(&self, count: usize) {
        self.state
            .hold_first
            .store(self.rejected() + count, Ordering::SeqCst);
    }

    /// 401s answered so far.
    fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::SeqCst)
    }

    /// How many times each `x-request-id` arrived.
    fn sends_per_id(&self) -> HashMap<String, usize> {
        let mut sends = HashMap::new();
        for seen in self.server.seen() {
            let id = seen.headers.get(REQUEST_ID).and_then(|v| v.to_str().ok());
            *sends.entry(id.unwrap_or_default().to_owned()).or_default() += 1;
        }
        sends
    }
}

async fn answer(state: Arc<Acceptance>, seen: Received) -> Response<Full<Bytes>> {
    let expected = format!("Bearer {}", state.accepted.lock().unwrap());
    if seen
        .authorization
        .is_some_and(|value| value == expected.as_str())
    {
        return Response::new(Full::new(seen.body));
    }
    let rejected = state.rejected.fetch_add(1, Ordering::SeqCst) + 1;
    let hold = state.hold_first.load(Ordering::SeqCst);
    if rejected <= hold {
        if rejected == hold {
            state.held.open();
        }
        state.held.wait().await;
    }
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        "Bearer error=\"invalid_token\"".parse().unwrap(),
    );
    response
}

fn post(url: String, id: usize, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header(REQUEST_ID, id)
        .body(Full::from(body))
        .unwrap()
}

#[tokio::test]
async fn a_static_token_is_sent_over_real_http() {
    let server = TokenServer::start("static-token").await;
    let space = Space::from_url(&server.base_url()).unwrap();
    let client = ServiceBuilder::new()
        .layer(
            BearerAuthLayer::from_token("static-token")
                .unwrap()
                .for_space(&space),
        )
        .service(https_client::<ReplayBody<Full<Bytes>>>());
    let url = format!("{}/api/fabric/addresses", server.base_url());

    let response = client
        .clone()
        .oneshot(post(url.clone(), 1, "hello"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed, "hello");

    // A fixed token has nothing to refresh: the server's 401 comes back as is, sent once.
    server.accept_only("some-other-token");
    let response = client.clone().oneshot(post(url, 2, "again")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.sends_per_id()["2"], 1);

    // Another port on the same host is not the space: refused before anything is sent.
    let elsewhere = "http://127.0.0.1:1/api/fabric/addresses".to_owned();
    let error = client.oneshot(post(elsewhere, 3, "")).await.unwrap_err();
    assert!(auth_error(&error).is_refused(), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_replaced_by_one_refresh_for_hundreds_of_requests() {
    const N: usize = 300;
    let server = TokenServer::start(&access(0)).await;
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(cache.clone()))
        .service(https_client::<ReplayBody<Full<Bytes>>>());
    let url = format!("{}/api/fabric/addresses", server.base_url());

    for id in 0..10 {
        let response = client
            .clone()
            .oneshot(post(url.clone(), id, "{}"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    // The server revokes the token; it holds the 401s until all N requests have arrived, so
    // every one of them was sent with the revoked token.
    server.accept_only(&access(1));
    server.hold_rejections(N);
    let mut tasks = JoinSet::new();
    for id in 1000..1000 + N {
        let request = post(url.clone(), id, "{\"to\":\"replay\"}");
        let client = client.clone();
        tasks.spawn(async move {
            let response = client.oneshot(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, tower::BoxError>((status, body))
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (status, body) = joined.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "{\"to\":\"replay\"}", "the replay carried the body");
    }

    assert_eq!(refresher.calls(), 1, "one refresh, no storm");
    assert_eq!(server.rejected(), N);
    let sends = server.sends_per_id();
    assert!(
        (1000..1000 + N).all(|id| sends[&id.to_string()] == 2),
        "sent, replayed once"
    );
    assert_eq!(cache.current().access_token(), access(1));
}
