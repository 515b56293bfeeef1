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
//! cargo run --example quickstart --features test-util
//! ```

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
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
    let cache = TokenCache::new(minted.into_pair(), refresher);
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(cache.clone()).for_space(&space))
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
            println!("        refreshed the SAT by hand");
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
                let note = if after.replays() > before.replays() {
                    "  <- 401, refreshed once, replayed"
                } else if after.generation() != before.generation() {
                    "  <- refreshed ahead of expiry"
                } else {
                    ""
                };
                println!(
                    "t={:>4.1}s GET /api/fabric/addresses -> {} ({} addresses) with SAT #{}{note}",
                    start.elapsed().as_secs_f64(),
                    status.as_u16(),
                    count.map_or_else(|| "?".into(), |n| n.to_string()),
                    after.generation(),
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
    println!("SATs used:              {}", stats.generation() + 1);
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
