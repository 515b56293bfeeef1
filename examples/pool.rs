//! One `TokenPool` serving four subscribers through one `BearerAuthLayer::pooled` client,
//! across several token lifetimes: each subscriber's first request mints its SAT, its cache
//! refreshes it ahead of expiry, a subscriber arriving at a full pool evicts the least recently
//! used, an idle one is evicted, and a returning one is minted again. Then the pool's stats.
//!
//! By default it runs against an embedded `MockSpace` whose SATs live 4 seconds, with
//! `max_subscribers(3)` and `idle_timeout(2 s)`. With `SIGNALWIRE_SPACE`,
//! `SIGNALWIRE_PROJECT_ID` and `SIGNALWIRE_API_TOKEN` set it talks to that space instead, with
//! refreshable SATs (`scope: "sat:refresh"`); the schedule is the same, so the evictions show,
//! but the SATs outlive the run.
//!
//! ```text
//! cargo run --example pool --features test-util
//! ```

use std::{
    collections::HashMap,
    io::IsTerminal,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, header::AUTHORIZATION};
use http_body_util::Full;
use signalwire_auth::{
    BearerAuthLayer, CreateSubscriberToken, Credentials, HttpsClient, ReplayBody,
    SAT_REFRESH_SCOPE, Space, Subscriber, TokenPool, https_client,
    mock::{MockEndpoint, MockSpace},
};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// How long SATs live on the embedded mock.
const MOCK_LIFETIME: Duration = Duration::from_secs(4);
/// Time between rounds of requests.
const ROUND: Duration = Duration::from_millis(500);
const ROUNDS: usize = 24;

/// Who sends a request in round `round` (every `ROUND`, so round 6 is t = 3 s):
/// alice and bob always; carol until t = 1.5 s, then again from t = 9 s; dave from t = 3 s
/// (the pool is full: carol, the least recently used, makes room) to t = 5.5 s, then idle.
fn active(name: &str, round: usize) -> bool {
    match name {
        "alice" | "bob" => true,
        "carol" => round <= 3 || round >= 18,
        "dave" => (6..=11).contains(&round),
        _ => false,
    }
}

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Where the example runs: a real space, or the embedded mock (kept alive while in use).
struct Target {
    space: Space,
    mock: Option<MockSpace>,
    pool: TokenPool,
}

impl Target {
    async fn from_env() -> Result<Self, BoxError> {
        let vars = [
            "SIGNALWIRE_SPACE",
            "SIGNALWIRE_PROJECT_ID",
            "SIGNALWIRE_API_TOKEN",
        ];
        let (space, mock, builder) = if vars.iter().all(|v| std::env::var_os(v).is_some()) {
            let space = Space::from_env()?;
            let template = CreateSubscriberToken::new("").with_scope(SAT_REFRESH_SCOPE);
            let builder = TokenPool::builder(space.clone(), Credentials::from_env()?);
            (space, None, builder.template(template))
        } else {
            let mock = MockSpace::builder()
                .access_lifetime(MOCK_LIFETIME)
                .refreshed_access_lifetime(MOCK_LIFETIME)
                .start()
                .await?;
            // The mock's token client knows its lifetimes (the refresh endpoint's answer does
            // not say how long a SAT lives).
            let builder = TokenPool::with_client(mock.token_client());
            (mock.space(), Some(mock), builder)
        };
        let pool = builder
            .max_subscribers(3)
            .idle_timeout(Duration::from_secs(2))
            .build();
        Ok(Self { space, mock, pool })
    }

    fn client<B>(&self) -> HttpsClient<B>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        match &self.mock {
            Some(mock) => mock.client(),
            None => https_client(),
        }
    }

    /// What the space did for `reference` (mock only): mints and refreshes.
    fn space_counts(&self, reference: &str) -> Option<(usize, usize)> {
        let mock = self.mock.as_ref()?;
        Some((
            mock.subscriber_mints(reference),
            mock.subscriber_refreshes(reference),
        ))
    }
}

fn reference(name: &str) -> String {
    format!("{name}@example.com")
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The pool's eviction events name the subscriber and the cause (`Size`: the bound).
    let filter = "warn,signalwire_auth::pool::handle=debug";
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| filter.into()))
        .with_target(false)
        .without_time()
        // Colour codes only for a terminal, not for a file or a pipe.
        .with_ansi(std::io::stdout().is_terminal())
        .init();

    let target = Target::from_env().await?;
    let (space, pool) = (target.space.clone(), target.pool.clone());
    match &target.mock {
        Some(_) => println!(
            "pool example against an embedded MockSpace at {space}, SATs living {MOCK_LIFETIME:?} \
             (set SIGNALWIRE_SPACE, SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN for a real space)"
        ),
        None => println!("pool example against {space}"),
    }
    println!(
        "max_subscribers {}, idle_timeout {:?}; a request every {ROUND:?} per active subscriber\n",
        pool.max_subscribers(),
        pool.idle_timeout(),
    );

    // A layer below the auth layer notes the token each request went out with.
    let sent_with: Arc<Mutex<Option<String>>> = Arc::default();
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::pooled(pool.clone()).for_space(&space))
        .map_request({
            let sent_with = Arc::clone(&sent_with);
            move |request: Request<ReplayBody<Full<Bytes>>>| {
                *sent_with.lock().unwrap() = request
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                request
            }
        })
        .service(target.client::<ReplayBody<Full<Bytes>>>());

    let subscribers: HashMap<&str, Subscriber> = NAMES
        .iter()
        .map(|&name| (name, Subscriber::new(reference(name))))
        .collect();
    // Every SAT each subscriber's requests carried, in order of first use.
    let mut sats: HashMap<&str, Vec<String>> = HashMap::new();
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    let uri = space.endpoint("/api/fabric/addresses?page_size=5")?;
    let start = Instant::now();
    let mut failures = 0;
    let mut last = pool.stats();

    for round in 0..ROUNDS {
        let mut line = Vec::new();
        for name in NAMES.into_iter().filter(|name| active(name, round)) {
            let mut request = Request::get(uri.clone()).body(Full::default())?;
            request.extensions_mut().insert(subscribers[name].clone());
            let status = match client.ready().await?.call(request).await {
                Ok(response) => response.status(),
                Err(error) => {
                    failures += 1;
                    line.push(format!("{name} failed: {error}"));
                    continue;
                }
            };
            if status != StatusCode::OK {
                failures += 1;
            }
            let token = sent_with.lock().unwrap().take().unwrap_or_default();
            let seen = sats.entry(name).or_default();
            let n = seen.iter().position(|t| *t == token).unwrap_or_else(|| {
                seen.push(token);
                seen.len() - 1
            });
            // What the space did for this subscriber since its last request.
            let note = match target.space_counts(&reference(name)) {
                Some(now) => {
                    let before = counts.insert(name, now).unwrap_or_default();
                    if now.0 > before.0 {
                        " (minted)"
                    } else if now.1 > before.1 {
                        " (refreshed)"
                    } else {
                        ""
                    }
                }
                None => "",
            };
            line.push(format!("{name} {} SAT #{n}{note}", status.as_u16()));
        }
        let stats = pool.stats();
        let mut events = Vec::new();
        if stats.mints() > last.mints() {
            events.push(format!("+{} minted", stats.mints() - last.mints()));
        }
        if stats.evictions() > last.evictions() {
            events.push(format!("+{} evicted", stats.evictions() - last.evictions()));
        }
        let events = if events.is_empty() {
            String::new()
        } else {
            format!("   [pool: {}, {} live]", events.join(", "), stats.live())
        };
        last = stats;
        println!(
            "t={:>4.1}s {}{events}",
            start.elapsed().as_secs_f64(),
            line.join(" | ")
        );
        tokio::time::sleep(ROUND).await;
    }

    let stats = pool.stats();
    println!();
    println!("pool stats:");
    println!(
        "  hits (requests served from a live entry): {}",
        stats.hits()
    );
    println!(
        "  misses (requests that waited for a mint): {}",
        stats.misses()
    );
    println!(
        "  mints:                                    {}",
        stats.mints()
    );
    println!(
        "  mint failures:                            {}",
        stats.mint_failures()
    );
    println!(
        "  evictions (full pool or idle):            {}",
        stats.evictions()
    );
    println!(
        "  live entries:                             {}",
        stats.live()
    );
    if let Some(mock) = &target.mock {
        println!(
            "the space saw {} Create Subscriber Token and {} refresh calls",
            mock.calls(MockEndpoint::CreateSubscriberToken),
            mock.calls(MockEndpoint::RefreshSubscriberToken),
        );
    }
    if failures > 0 {
        return Err(format!("{failures} requests failed").into());
    }
    Ok(())
}
