//! A real `redis-server` per test, on a free loopback port, stopped when dropped.
//!
//! Where `redis-server` is not installed the tests that need it print loudly that they are
//! skipped; under `CI=true` they fail instead, so CI always runs them.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/bin".into(),
            "/usr/sbin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

impl RedisServer {
    /// Starts a server, or returns `None` (after saying so on stderr) where `redis-server` is
    /// not installed. Under `CI=true` a missing server is a failure.
    pub async fn start(test: &str) -> Option<Self> {
        let Some(binary) = binary() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: redis-server is not installed, and CI must run the Redis tests");
            }
            eprintln!(
                "\n*** SKIPPED {test}: redis-server is not installed \
                 (apt-get install redis-server); CI=true makes this a failure ***\n"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = Self {
            binary,
            port,
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (its data goes with it: nothing is saved).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..500 {
            if let Ok(reply) = self.command(&["PING"]).await {
                if reply == "+PONG" {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `$5`, `:1`, …).
    pub async fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        Ok(line.trim_end().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// Replicas over a `RedisStore`, against a `MockSpace` (or, in a child process, its URL).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use signalwire_auth::{
    BearerAuthLayer, CreateSubscriberToken, Credentials, MockSpace, RedisStore, Refresh,
    RefreshError, ReplayBody, Space, StoreKey, SubscriberRefresher, TokenCache, TokenCacheBuilder,
    TokenClient, TokenPair, https_client,
};
use tower::{Layer, ServiceExt};

pub const REFERENCE: &str = "replica@example.com";
/// The mock's access lifetime in the replica tests: short, so a run covers many.
pub const ACCESS_LIFETIME: Duration = Duration::from_secs(8);
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// The mock's refresh-token lifetime in the replica tests.
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(120);

/// `SubscriberRefresher` as the client of a mock whose tokens live seconds: the client
/// assumes SignalWire's 2 h, so the pairs it returns are given the mock's lifetimes, counted
/// from the same instant the request was sent.
pub struct ShortLived(SubscriberRefresher);

fn short(pair: TokenPair) -> Result<TokenPair, RefreshError> {
    TokenPair::new(pair.access_token(), pair.issued_at(), ACCESS_LIFETIME)
        .and_then(|short| match pair.refresh_token() {
            Some(token) => short.with_refresh_token(token, REFRESH_LIFETIME),
            None => Ok(short),
        })
        .map_err(RefreshError::terminal)
}

impl Refresh for ShortLived {
    fn refresh(
        &self,
        current: &TokenPair,
    ) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        let refreshed = self.0.refresh(current);
        async move { refreshed.await.and_then(short) }
    }

    fn can_mint(&self) -> bool {
        self.0.can_mint()
    }

    fn mint(&self) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        let minted = self.0.mint();
        async move { minted.await.and_then(short) }
    }
}

/// The project credentials of the Redis tests' mocks (known, so a child process can use them).
pub fn credentials() -> Credentials {
    Credentials::new(super::PROJECT_ID, super::API_TOKEN).unwrap()
}

/// A mock whose tokens live [`ACCESS_LIFETIME`] (refresh tokens [`REFRESH_LIFETIME`]).
pub async fn short_lived_mock() -> MockSpace {
    MockSpace::builder()
        .credentials(credentials())
        .access_lifetime(ACCESS_LIFETIME)
        .refreshed_access_lifetime(ACCESS_LIFETIME)
        .refresh_lifetime(REFRESH_LIFETIME)
        .start()
        .await
        .unwrap()
}

/// A `redis-server` and a short-lived mock for `test`; `None` when the test is skipped.
pub async fn setup(test: &str) -> Option<(RedisServer, MockSpace)> {
    let server = RedisServer::start(test).await?;
    Some((server, short_lived_mock().await))
}

/// A replica: its own `RedisStore` (its own connections) at `url`, refreshing through
/// `space` with re-mint.
pub fn replica(space: &Space, credentials: Credentials, url: &str) -> TokenCacheBuilder {
    let client = TokenClient::with_service(space.clone(), Some(credentials), https_client());
    let refresher = ShortLived(
        SubscriberRefresher::with_client(client)
            .with_remint(CreateSubscriberToken::new(REFERENCE))
            .with_timeout(Duration::from_secs(2)),
    );
    let store = RedisStore::builder(url)
        .timeout(Duration::from_millis(500))
        .build()
        .expect("a redis url");
    TokenCache::from_store(refresher, store, StoreKey::new(space, REFERENCE)).lease_ttl(LEASE_TTL)
}

/// What a stretch of traffic came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub ok: usize,
    pub failed: usize,
}

/// `concurrency` loops sending `GET /api/fabric/addresses` through the cache's bearer layer
/// until `stop` is set; every answer but 200 and every error counts as failed.
pub async fn traffic(
    space: &Space,
    cache: &TokenCache,
    concurrency: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Tally {
    let client = BearerAuthLayer::new(cache.clone())
        .for_space(space)
        .layer(https_client::<ReplayBody<Full<Bytes>>>());
    let uri = space.endpoint("/api/fabric/addresses").unwrap();
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, uri, ok, failed, stop) = (
            client.clone(),
            uri.clone(),
            Arc::clone(&ok),
            Arc::clone(&failed),
            Arc::clone(&stop),
        );
        loops.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let request = Request::get(uri.clone()).body(Full::default()).unwrap();
                match client.clone().oneshot(request).await {
                    Ok(response) if response.status() == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    outcome => {
                        eprintln!("request failed: {outcome:?}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    while loops.join_next().await.is_some() {}
    Tally {
        ok: ok.load(Ordering::SeqCst),
        failed: failed.load(Ordering::SeqCst),
    }
}

/// One request through the cache's bearer layer.
pub async fn one_request(space: &Space, cache: &TokenCache) -> Tally {
    let client = BearerAuthLayer::new(cache.clone())
        .for_space(space)
        .layer(https_client::<ReplayBody<Full<Bytes>>>());
    let request = Request::get(space.endpoint("/api/fabric/addresses").unwrap())
        .body(Full::default())
        .unwrap();
    match client.oneshot(request).await {
        Ok(response) if response.status() == StatusCode::OK => Tally { ok: 1, failed: 0 },
        _ => Tally { ok: 0, failed: 1 },
    }
}
