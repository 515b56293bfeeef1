//! The quickstart's story through reqwest: a SAT minted, kept fresh and sent with every request
//! by `BearerAuthMiddleware` on a `reqwest_middleware::ClientWithMiddleware`, against an
//! embedded `MockSpace` whose SATs live 4 seconds, with one revocation on the way.
//!
//! ```sh
//! cargo run --example reqwest --features test-util,reqwest
//! ```
//!
//! Prints each request, then how many refreshes and replays it took; exits non-zero if any
//! request failed.

use std::time::Duration;

use signalwire_auth::{
    CreateSubscriberToken, MockSpace, TokenCache, mock::MockEndpoint, reqwest::BearerAuthMiddleware,
};
use tokio::time::Instant;

/// How long the mock's SATs live, minted or refreshed: a few token lifetimes in 8 seconds.
const MOCK_LIFETIME: Duration = Duration::from_secs(4);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockSpace::builder()
        .access_lifetime(MOCK_LIFETIME)
        .refreshed_access_lifetime(MOCK_LIFETIME)
        .tls(true)
        .start()
        .await?;
    let space = mock.space();
    println!("reqwest against an embedded MockSpace at {space}");

    // 1. Mint a SAT with the project credentials. The mock's client knows its lifetimes.
    let reference = "reqwest@example.com";
    let minted = mock
        .token_client()
        .create_subscriber_token(&CreateSubscriberToken::new(reference))
        .await?;
    println!(
        "minted a SAT for subscriber {} (valid {:.1?})",
        minted.subscriber_id(),
        minted.pair().lifetime()
    );

    // 2. Keep it fresh through the refresh endpoint (re-minting if the chain breaks), and send
    //    it with every request the client makes to this space.
    let cache = TokenCache::new(
        minted.into_pair(),
        mock.refresher()
            .with_remint(CreateSubscriberToken::new(reference)),
    );
    let client = reqwest_middleware::ClientBuilder::new(mock.reqwest_client())
        .with(BearerAuthMiddleware::new(cache.clone()).for_space(&space))
        .build();

    // 3. List addresses across several token lifetimes.
    let url = space
        .endpoint("/api/fabric/addresses?page_size=5")?
        .to_string();
    let start = Instant::now();
    let rounds = 16;
    let mut failures = 0;
    for round in 0..rounds {
        if round == 8 {
            mock.revoke_access_tokens();
            println!("        the space revokes every access token");
        }
        let before = cache.stats();
        match client.get(&url).send().await {
            Ok(response) => {
                let status = response.status();
                let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
                let count = body["data"].as_array().map_or(0, Vec::len);
                let after = cache.stats();
                let note = if after.replays() > before.replays() {
                    "  <- 401, refreshed once, replayed"
                } else if after.generation() != before.generation() {
                    "  <- refreshed ahead of expiry"
                } else {
                    ""
                };
                println!(
                    "t={:>4.1}s GET /api/fabric/addresses -> {} ({count} addresses) with SAT #{}{note}",
                    start.elapsed().as_secs_f64(),
                    status.as_u16(),
                    after.generation(),
                );
                if !status.is_success() {
                    failures += 1;
                }
            }
            Err(error) => {
                failures += 1;
                println!(
                    "t={:>4.1}s request failed: {error}",
                    start.elapsed().as_secs_f64()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let stats = cache.stats();
    println!();
    println!("requests made:          {rounds}");
    println!(
        "requests the space saw: {}",
        mock.calls(MockEndpoint::ListAddresses)
    );
    println!(
        "refresh calls it saw:   {}",
        mock.calls(MockEndpoint::RefreshSubscriberToken)
    );
    println!("refreshes installed:    {}", stats.refreshes());
    println!("replays after a 401:    {}", stats.replays());
    println!("failed requests:        {failures}");
    if failures > 0 {
        return Err(format!("{failures} requests failed").into());
    }
    if stats.refreshes() == 0 || stats.replays() != 1 {
        return Err("expected refreshes ahead of expiry and one replay".into());
    }
    Ok(())
}
