//! Mints a Subscriber Access Token with Basic auth, then lists the subscriber's addresses
//! through `BearerAuthLayer` across several token lifetimes, and prints what happened.
//!
//! By default it runs against an embedded `MockSpace` with SATs that live 4 seconds, so a few
//! seconds show refreshes ahead of expiry, and a revocation recovered by one refresh and a
//! replay. With
//! `SIGNALWIRE_SPACE`, `SIGNALWIRE_PROJECT_ID` and `SIGNALWIRE_API_TOKEN` set it talks to that
//! space instead, with a 60 s SAT (`scope: "sat:refresh"`), refreshing it once by hand.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Every line it prints says what happened: refreshes are recorded by the cache's `on_refresh`
//! hook as they are installed, and a replay is read from the cache's counters.

use std::{
    io::IsTerminal,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, header::AUTHORIZATION};
use http_body_util::{BodyExt, Full};
use signalwire_auth::{
    BearerAuthLayer, CreateSubscriberToken, Credentials, HttpsClient, ReplayBody,
    SAT_REFRESH_SCOPE, Space, SubscriberRefresher, TokenCache, TokenClient, TokenPair,
    https_client,
    mock::{MockEndpoint, MockSpace},
};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// How long SATs live on the embedded mock.
const MOCK_LIFETIME: Duration = Duration::from_secs(4);

/// Where the example runs: a real space, or the embedded mock (kept alive while in use).
struct Target {
    space: Space,
    credentials: Credentials,
    mock: Option<MockSpace>,
}

impl Target {
    async fn from_env() -> Result<Self, BoxError> {
        let vars = [
            "SIGNALWIRE_SPACE",
            "SIGNALWIRE_PROJECT_ID",
            "SIGNALWIRE_API_TOKEN",
        ];
        if vars.iter().all(|v| std::env::var_os(v).is_some()) {
            return Ok(Self {
                space: Space::from_env()?,
                credentials: Credentials::from_env()?,
                mock: None,
            });
        }
        let mock = MockSpace::builder()
            .refreshed_access_lifetime(MOCK_LIFETIME)
            .start()
            .await?;
        Ok(Self {
            space: mock.space(),
            credentials: mock.credentials(),
            mock: Some(mock),
        })
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
}

/// Which SAT `token` is (0 for the minted one). The hook runs on the refresh task and may note
/// a SAT just after a replay used it, so wait a little for it to show up.
async fn sat_number(sats: &Mutex<Vec<String>>, token: &str) -> Option<usize> {
    for _ in 0..1000 {
        if let Some(n) = sats.lock().unwrap().iter().position(|sat| sat == token) {
            return Some(n);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "signalwire_auth=info".into()),
        )
        .with_target(false)
        .without_time()
        // Colour codes only for a terminal, not for a file or a pipe.
        .with_ansi(std::io::stdout().is_terminal())
        .init();

    let target = Target::from_env().await?;
    let space = target.space.clone();
    match &target.mock {
        Some(_) => println!(
            "quickstart against an embedded MockSpace at {space} (set SIGNALWIRE_SPACE, SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN for a real space)"
        ),
        None => println!("quickstart against {space}"),
    }

    // 1. Mint a SAT with the project credentials (Basic auth).
    let mut tokens = TokenClient::with_service(
        space.clone(),
        Some(target.credentials.clone()),
        target.client::<Full<Bytes>>(),
    );
    let reference = "quickstart@example.com";
    let mint = if target.mock.is_some() {
        // The mock's refreshed SATs live MOCK_LIFETIME too; tell the client, since the refresh
        // endpoint's answer does not say.
        tokens = tokens.with_refreshed_lifetimes(MOCK_LIFETIME, TokenPair::REFRESH_TOKEN_LIFETIME);
        CreateSubscriberToken::new(reference).with_expire_at(unix_now() + MOCK_LIFETIME.as_secs())
    } else {
        // A short-lived SAT on a real space: 60 s, refreshable.
        CreateSubscriberToken::new(reference).with_scope(SAT_REFRESH_SCOPE)
    };
    let minted = tokens.create_subscriber_token(&mint).await?;
    let header = minted.pair().access_header();
    println!(
        "minted a SAT for subscriber {} (typ {:?}, valid {:.1?})",
        minted.subscriber_id(),
        header.as_ref().and_then(|h| h.typ()),
        minted.pair().lifetime(),
    );

    // 2. Keep it fresh through the refresh endpoint, re-minting if the chain ever breaks.
    let refresher = SubscriberRefresher::with_client(tokens.clone())
        .with_remint(CreateSubscriberToken::new(reference));
    // The narration below says what happened, from two records rather than from counters
    // read at the wrong moment: the `on_refresh` hook notes each SAT as it is installed, and a
    // layer below the auth layer notes which SAT each request actually went out with.
    let sats = Arc::new(Mutex::new(vec![minted.pair().access_token().to_owned()]));
    let installed: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let cache = TokenCache::builder(minted.into_pair(), refresher)
        .on_refresh({
            let (sats, installed) = (Arc::clone(&sats), Arc::clone(&installed));
            move |pair| {
                sats.lock().unwrap().push(pair.access_token().to_owned());
                installed.lock().unwrap().push(Instant::now());
            }
        })
        .build();
    let installed_since = |seen: &mut usize| -> Vec<Instant> {
        let all = installed.lock().unwrap();
        let new = all[*seen..].to_vec();
        *seen = all.len();
        new
    };
    let mut seen = 0;
    let sent_with: Arc<Mutex<Option<String>>> = Arc::default();
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(cache.clone()).for_space(&space))
        .map_request({
            let sent_with = Arc::clone(&sent_with);
            move |request: Request<ReplayBody<Full<Bytes>>>| {
                // The last send wins: for a replayed request, the replay's token.
                *sent_with.lock().unwrap() = request
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("Bearer "))
                    .map(str::to_owned);
                request
            }
        })
        .service(target.client::<ReplayBody<Full<Bytes>>>());

    // 3. List addresses across several token lifetimes.
    let start = Instant::now();
    let rounds = if target.mock.is_some() { 16 } else { 3 };
    let mut failures = 0;
    for round in 0..rounds {
        if round == 8 {
            if let Some(mock) = &target.mock {
                mock.revoke_access_tokens();
                println!("        the space revokes every access token");
            }
        }
        if round == 1 && target.mock.is_none() {
            cache.refresh_now().await?;
            installed_since(&mut seen);
            println!("        refreshed the SAT by hand");
        }
        // Refreshes that ran between requests: ahead of expiry, in the background (started by
        // an earlier request inside the refresh-ahead window, or by the cache's own timer).
        for at in installed_since(&mut seen) {
            println!(
                "t={:>4.1}s         the cache refreshed ahead of expiry, in the background",
                at.duration_since(start).as_secs_f64(),
            );
        }
        let request = Request::get(space.endpoint("/api/fabric/addresses?page_size=5")?)
            .body(Full::default())?;
        let before = cache.stats();
        match client.ready().await?.call(request).await {
            Ok(response) => {
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                let count = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["data"].as_array().map(Vec::len));
                let after = cache.stats();
                let token = sent_with.lock().unwrap().take();
                let sent = match token {
                    Some(token) => sat_number(&sats, &token).await,
                    None => None,
                };
                let newest = sats.lock().unwrap().len() - 1;
                let refreshed_during = installed_since(&mut seen);
                let note = if after.replays() > before.replays() {
                    "  <- 401: refreshed once, replayed with the new SAT".to_owned()
                } else if let Some(at) = refreshed_during.last() {
                    let at = at.duration_since(start).as_secs_f64();
                    if sent == Some(newest) {
                        format!(
                            "  <- the SAT was about to expire: waited for its refresh (t={at:.1}s)"
                        )
                    } else {
                        format!(
                            "  <- inside the refresh-ahead window: sent with the current SAT while \
                             SAT #{newest} was fetched in the background (installed t={at:.1}s)"
                        )
                    }
                } else {
                    String::new()
                };
                println!(
                    "t={:>4.1}s GET /api/fabric/addresses -> {} ({} addresses) with SAT #{}{note}",
                    start.elapsed().as_secs_f64(),
                    status.as_u16(),
                    count.map_or_else(|| "?".into(), |n| n.to_string()),
                    sent.map_or_else(|| "?".into(), |n| n.to_string()),
                );
                if status != StatusCode::OK {
                    failures += 1;
                }
            }
            Err(error) => {
                failures += 1;
                println!(
                    "t={:>5.1}s request failed: {error}",
                    start.elapsed().as_secs_f64()
                );
            }
        }
        if target.mock.is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let stats = cache.stats();
    println!();
    println!("requests made:          {rounds}");
    println!("SATs used:              {}", sats.lock().unwrap().len());
    if let Some(mock) = &target.mock {
        println!(
            "requests the space saw: {}",
            mock.calls(MockEndpoint::ListAddresses)
        );
        println!(
            "refresh calls it saw:   {}",
            mock.calls(MockEndpoint::RefreshSubscriberToken)
        );
    }
    println!("refreshes installed:    {}", stats.refreshes());
    println!("replays after a 401:    {}", stats.replays());
    println!("failed requests:        {failures}");
    if failures > 0 {
        return Err(format!("{failures} requests failed").into());
    }
    Ok(())
}
