//! One list of scenarios, run through every adapter over `TokenCache::authorization` /
//! `reauthorize`: the tower `BearerAuthLayer` (over the crate's hyper-util client) and the
//! reqwest `BearerAuthMiddleware` (over a real `reqwest::Client`), each against `MockSpace`
//! over plain HTTP and over TLS. The assertions are the same for every adapter.

#![cfg(all(feature = "test-util", feature = "reqwest"))]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Captured;
use http::{Method, StatusCode};
use http_body_util::Full;
use signalwire_auth::{
    BearerAuth, BearerAuthLayer, Credentials, Error, HttpsClient, MockSpace, ReplayBody,
    ReplaySkipped, TokenCache, TokenPair,
    mock::{Fault, MockEndpoint},
    reqwest::BearerAuthMiddleware,
};
use tokio::{task::JoinSet, time::Instant};
use tower::{BoxError, Layer, ServiceExt};

const HOUR: Duration = Duration::from_secs(60 * 60);
/// Past the 64 KiB replay limit, and not something `reqwest::Request::try_clone` can copy.
const LARGE: usize = 100 * 1024;

#[derive(Clone, Copy, Debug)]
enum Adapter {
    Tower,
    Reqwest,
}

/// One adapter, set up over one cache and one mock.
#[derive(Clone)]
enum Client {
    Tower(Box<BearerAuth<HttpsClient<ReplayBody<Full<Bytes>>>>>),
    Reqwest(reqwest_middleware::ClientWithMiddleware),
}

/// What a request came back with, in the same terms for every adapter.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    replay_skipped: bool,
}

/// A body for a request: empty (replayable everywhere) or too large / streaming to replay.
#[derive(Clone, Copy, Debug)]
enum Payload {
    Empty,
    Unreplayable,
}

struct Setup {
    mock: MockSpace,
    cache: TokenCache,
    client: Client,
}

impl Setup {
    async fn new(adapter: Adapter, tls: bool, pair: impl FnOnce(&MockSpace) -> TokenPair) -> Self {
        let mock = MockSpace::builder().tls(tls).start().await.unwrap();
        let cache = TokenCache::builder(pair(&mock), mock.refresher())
            .jitter(false)
            .build();
        let client = build(adapter, &mock, &cache);
        Self {
            mock,
            cache,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        self.mock.space().endpoint(path).unwrap().to_string()
    }

    async fn list(&self, payload: Payload) -> Result<Reply, Error> {
        self.client
            .send(&self.url(MockEndpoint::ListAddresses.path()), payload)
            .await
    }

    /// `n` concurrent listings, each in a task of its own; every one must get an answer.
    async fn storm(&self, n: usize) -> Vec<Reply> {
        let mut tasks = JoinSet::new();
        for _ in 0..n {
            let client = self.client.clone();
            let url = self.url(MockEndpoint::ListAddresses.path());
            tasks.spawn(async move { client.send(&url, Payload::Empty).await });
        }
        let mut replies = Vec::with_capacity(n);
        while let Some(outcome) = tasks.join_next().await {
            replies.push(outcome.unwrap().unwrap());
        }
        replies
    }

    fn list_calls(&self) -> usize {
        self.mock.calls(MockEndpoint::ListAddresses)
    }

    fn refresh_calls(&self) -> usize {
        self.mock.calls(MockEndpoint::RefreshSubscriberToken)
    }
}

fn build(adapter: Adapter, mock: &MockSpace, cache: &TokenCache) -> Client {
    match adapter {
        Adapter::Tower => Client::Tower(Box::new(
            BearerAuthLayer::new(cache.clone())
                .for_space(&mock.space())
                .layer(mock.client()),
        )),
        Adapter::Reqwest => {
            let client = mock.reqwest_client();
            Client::Reqwest(
                reqwest_middleware::ClientBuilder::new(client)
                    .with(BearerAuthMiddleware::new(cache.clone()).for_space(&mock.space()))
                    .build(),
            )
        }
    }
}

impl Client {
    async fn send(&self, url: &str, payload: Payload) -> Result<Reply, Error> {
        let body = match payload {
            Payload::Empty => Bytes::new(),
            Payload::Unreplayable => Bytes::from(vec![b'x'; LARGE]),
        };
        match self {
            Client::Tower(service) => {
                let request = http::Request::builder()
                    .method(Method::GET)
                    .uri(url)
                    .body(Full::new(body))
                    .unwrap();
                let response = (**service)
                    .clone()
                    .oneshot(request)
                    .await
                    .map_err(tower_error)?;
                Ok(Reply {
                    status: response.status(),
                    replay_skipped: response.extensions().get::<ReplaySkipped>().is_some(),
                })
            }
            Client::Reqwest(client) => {
                let mut request = client.get(url);
                request = match payload {
                    Payload::Empty => request,
                    // A body reqwest cannot clone, as a stream would be.
                    Payload::Unreplayable => request.body(reqwest::Body::wrap(Full::new(body))),
                };
                let response = request.send().await.map_err(reqwest_error)?;
                let reply = Reply {
                    status: response.status(),
                    replay_skipped: response.extensions().get::<ReplaySkipped>().is_some(),
                };
                // Read to the end, as a caller would.
                response.bytes().await.unwrap();
                Ok(reply)
            }
        }
    }
}

/// The crate's error out of the tower adapter's `BoxError`.
fn tower_error(error: BoxError) -> Error {
    match error.downcast::<Error>() {
        Ok(error) => *error,
        Err(other) => panic!("not a signalwire_auth::Error: {other:?}"),
    }
}

/// The crate's error out of reqwest-middleware's error.
fn reqwest_error(error: reqwest_middleware::Error) -> Error {
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("a transport error, not the middleware's: {error:?}");
    };
    // An `anyhow::Error`, whose own `downcast` finds the error it wraps.
    match error.downcast::<Error>() {
        Ok(error) => error,
        Err(other) => panic!("not a signalwire_auth::Error: {other:?}"),
    }
}

/// A pair minted by the mock (valid there for 2 hours), tracked as issued `age` ago.
fn aged(mock: &MockSpace, age: Duration) -> TokenPair {
    let minted = mock.mint("conformance@example.com");
    TokenPair::new(
        minted.access_token(),
        Instant::now().checked_sub(age).unwrap(),
        HOUR * 2,
    )
    .and_then(|pair| pair.with_refresh_token(minted.refresh_token().unwrap(), HOUR * 2))
    .unwrap()
}

fn fresh(mock: &MockSpace) -> TokenPair {
    mock.mint("conformance@example.com")
}

async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

// ---- the scenarios ----

async fn fresh_token(adapter: Adapter, tls: bool) {
    let s = Setup::new(adapter, tls, fresh).await;
    let first = s.cache.current();
    let reply = s.list(Payload::Empty).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.replay_skipped);
    assert_eq!(s.list_calls(), 1);
    assert_eq!(s.refresh_calls(), 0);
    assert_eq!(s.cache.stats().refreshes(), 0);
    assert_eq!(s.cache.current().access_token(), first.access_token());
}

async fn advisory_refresh(adapter: Adapter, tls: bool) {
    // Three minutes left: past the 5-minute advisory deadline, before the 30 s hard one.
    let s = Setup::new(adapter, tls, |mock| {
        aged(mock, HOUR * 2 - Duration::from_secs(180))
    })
    .await;
    let old = s.cache.current();
    let reply = s.list(Payload::Empty).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    // The request went on with the still-valid token; one refresh runs in the background.
    until("the background refresh", || {
        s.cache.stats().refreshes() == 1
    })
    .await;
    assert_eq!(s.refresh_calls(), 1);
    assert_ne!(s.cache.current().access_token(), old.access_token());
    for _ in 0..5 {
        assert_eq!(s.list(Payload::Empty).await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(
        s.refresh_calls(),
        1,
        "the new token is fresh: no more refreshes"
    );
    assert_eq!(s.list_calls(), 6);
}

async fn expired_storm(adapter: Adapter, tls: bool) {
    let s = Setup::new(adapter, tls, |mock| aged(mock, HOUR * 3)).await;
    for reply in s.storm(1_000).await {
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(
        s.refresh_calls(),
        1,
        "1,000 requests on an expired token: one refresh"
    );
    assert_eq!(s.cache.stats().refreshes(), 1);
    assert_eq!(
        s.list_calls(),
        1_000,
        "no request was sent with the expired token twice"
    );
    assert_eq!(s.mock.reused_refresh_tokens(), 0);
}

async fn revocation_storm(adapter: Adapter, tls: bool) {
    let s = Setup::new(adapter, tls, fresh).await;
    s.mock.revoke_access_tokens();
    for reply in s.storm(200).await {
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(s.refresh_calls(), 1, "one refresh for the whole storm");
    assert!(
        s.list_calls() <= 400,
        "each request sent at most twice: {} sends",
        s.list_calls()
    );
    assert_eq!(s.cache.stats().replays() as usize, s.list_calls() - 200);
    assert_eq!(s.mock.reused_refresh_tokens(), 0);
}

async fn always_401(adapter: Adapter, tls: bool) {
    let s = Setup::new(adapter, tls, fresh).await;
    s.mock.inject(
        MockEndpoint::ListAddresses,
        Fault::Status(StatusCode::UNAUTHORIZED),
        usize::MAX,
    );
    for _ in 0..10 {
        let reply = s.list(Payload::Empty).await.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    assert!(s.refresh_calls() <= 1, "{} refreshes", s.refresh_calls());
    assert!(s.list_calls() <= 11, "{} sends", s.list_calls());
}

async fn unreplayable_body(adapter: Adapter, tls: bool) {
    let s = Setup::new(adapter, tls, fresh).await;
    s.mock.revoke_access_tokens();
    let reply = s.list(Payload::Unreplayable).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.replay_skipped, "the 401 is marked ReplaySkipped");
    assert_eq!(s.list_calls(), 1, "not sent again");
    // The refresh still runs, so the next request succeeds.
    until("the refresh after the 401", || {
        s.cache.stats().refreshes() == 1
    })
    .await;
    let reply = s.list(Payload::Unreplayable).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(s.refresh_calls(), 1);
}

async fn transport_rule_refusals(adapter: Adapter, tls: bool) {
    let s = Setup::new(adapter, tls, fresh).await;
    let port = s.mock.addr().port();
    let (scheme, other_scheme) = if tls {
        ("https", "http")
    } else {
        ("http", "https")
    };
    for url in [
        // Another port on the same host: not the space.
        format!("{scheme}://localhost:{}/api/fabric/addresses", port + 1),
        // The space's port, the other scheme: a space pins its scheme.
        format!("{other_scheme}://localhost:{port}/api/fabric/addresses"),
        "https://example.signalwire.com/api/fabric/addresses".to_owned(),
        "http://example.com/api/fabric/addresses".to_owned(),
    ] {
        let error = s.client.send(&url, Payload::Empty).await.unwrap_err();
        assert!(error.is_refused(), "{url}: {error:?}");
    }
    assert_eq!(s.list_calls(), 0, "nothing was sent");
    assert_eq!(s.cache.stats().refreshes(), 0);
}

async fn secrets_stay_out_of_debug_and_traces(adapter: Adapter, tls: bool) {
    // The test runs on one thread (current-thread runtime), the mock's and clients' tasks too.
    let (logs, _guard) = Captured::install();

    // Known credentials, so the test can look for the API token.
    const API_TOKEN: &str = "PTconformanceSecretApiToken0123456789";
    let mock = MockSpace::builder()
        .tls(tls)
        .credentials(Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", API_TOKEN).unwrap())
        .start()
        .await
        .unwrap();
    let cache = TokenCache::new(fresh(&mock), mock.refresher());
    let client = build(adapter, &mock, &cache);
    let s = Setup {
        mock,
        cache,
        client,
    };
    let mut secrets = vec![API_TOKEN.to_owned()];
    let mut outputs = vec![format!("{:?}", s.cache), format!("{:?}", s.mock)];
    let pair = s.cache.current();
    secrets.push(pair.access_token().to_owned());
    secrets.extend(pair.refresh_token().map(str::to_owned));
    outputs.push(format!("{:?}", s.cache.authorization().await.unwrap()));
    outputs.push(format!("{pair:?}"));
    match &s.client {
        Client::Tower(service) => outputs.push(format!("{service:?}")),
        Client::Reqwest(_) => {
            outputs.push(format!("{:?}", BearerAuthMiddleware::new(s.cache.clone())))
        }
    }

    // A revocation: a refresh, a replay, a new pair.
    s.mock.revoke_access_tokens();
    assert_eq!(s.list(Payload::Empty).await.unwrap().status, StatusCode::OK);
    let pair = s.cache.current();
    secrets.push(pair.access_token().to_owned());
    secrets.extend(pair.refresh_token().map(str::to_owned));
    outputs.push(format!("{pair:?}"));
    outputs.push(format!("{:?}", s.cache.authorization().await.unwrap()));
    // A refusal and its error.
    let error = s
        .client
        .send("http://example.com/api", Payload::Empty)
        .await
        .unwrap_err();
    outputs.push(format!("{error} / {error:?}"));

    let logs = logs.text();
    assert!(
        logs.contains("replaying once"),
        "the replay was traced at all: {logs}"
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret in the traces");
        for output in &outputs {
            assert!(!output.contains(secret.as_str()), "a secret in {output}");
        }
    }
}

/// Each scenario, through each adapter, over plain HTTP and TLS.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                use super::Adapter;

                #[tokio::test]
                async fn tower_http() {
                    super::$scenario(Adapter::Tower, false).await;
                }

                #[tokio::test]
                async fn tower_tls() {
                    super::$scenario(Adapter::Tower, true).await;
                }

                #[tokio::test]
                async fn reqwest_http() {
                    super::$scenario(Adapter::Reqwest, false).await;
                }

                #[tokio::test]
                async fn reqwest_tls() {
                    super::$scenario(Adapter::Reqwest, true).await;
                }
            }
        )*
    };
}

conformance! {
    fresh_token,
    advisory_refresh,
    expired_storm,
    revocation_storm,
    always_401,
    unreplayable_body,
    transport_rule_refusals,
    secrets_stay_out_of_debug_and_traces,
}

/// reqwest's own timeout bounds a send through the middleware, and a timed-out request costs
/// no refresh.
#[tokio::test]
async fn reqwest_timeouts_apply_through_the_bearer_middleware() {
    let mock = MockSpace::start().await.unwrap();
    let cache = TokenCache::new(fresh(&mock), mock.refresher());
    let client = reqwest_middleware::ClientBuilder::new(mock.reqwest_client())
        .with(BearerAuthMiddleware::new(cache.clone()).for_space(&mock.space()))
        .build();
    mock.inject(
        MockEndpoint::ListAddresses,
        Fault::Delay(Duration::from_secs(30)),
        1,
    );
    let url = mock
        .space()
        .endpoint(MockEndpoint::ListAddresses.path())
        .unwrap()
        .to_string();
    let error = client
        .get(&url)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, reqwest_middleware::Error::Reqwest(e) if e.is_timeout()),
        "{error:?}"
    );
    assert_eq!(cache.stats().refreshes(), 0);
    // The next request goes through.
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
}
