//! A pool's mint, refresh and failure events carry the subscriber and the space host, and
//! nothing a pool, its builder, its stats, its errors or its events show contains a secret.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use signalwire_auth::{
    BearerAuthLayer, CreateSubscriberToken, MockSpace, ReplayBody, Subscriber, TokenPool,
    mock::{Fault, MockEndpoint},
};
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn pool_events_name_the_subscriber_and_space_and_nothing_shows_a_secret() {
    let (logs, _guard) = Captured::install();

    let mock = MockSpace::builder()
        .credentials(seed_credentials())
        .start()
        .await
        .unwrap();
    let builder = TokenPool::with_client(mock.token_client())
        .template(CreateSubscriberToken::new("").with_password("pw-secret"));
    let mut outputs = vec![format!("{builder:?}")];
    let pool = builder.build();
    let client = BearerAuthLayer::pooled(pool.clone())
        .for_space(&mock.space())
        .layer(mock.client::<ReplayBody<Full<Bytes>>>());
    let addresses = mock.space().endpoint("/api/fabric/addresses").unwrap();
    let send = |who: &Subscriber| {
        let mut request = Request::get(addresses.clone())
            .body(Full::default())
            .unwrap();
        request.extensions_mut().insert(who.clone());
        client.clone().oneshot(request)
    };
    let (alice, bob, carol) = (
        Subscriber::new("alice@example.com"),
        Subscriber::new("bob@example.com"),
        Subscriber::new("carol@example.com"),
    );

    // Mints, then a 401 for alice's revoked token: one refresh, one replay.
    let mut secrets = Vec::new();
    for who in [&alice, &bob] {
        assert_eq!(send(who).await.unwrap().status(), StatusCode::OK);
        let pair = pool.cache(who.reference()).await.unwrap().current();
        secrets.push(pair.access_token().to_owned());
        secrets.push(pair.refresh_token().unwrap().to_owned());
    }
    mock.revoke_subscriber_access_tokens(alice.reference());
    assert_eq!(send(&alice).await.unwrap().status(), StatusCode::OK);
    let alice_cache = pool.cache(alice.reference()).await.unwrap();
    let pair = alice_cache.current();
    secrets.push(pair.access_token().to_owned());
    secrets.push(pair.refresh_token().unwrap().to_owned());
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);

    // A failed mint.
    mock.inject(
        MockEndpoint::CreateSubscriberToken,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
        1,
    );
    let error = send(&carol).await.unwrap_err();
    let error = auth_error(&error);
    assert!(error.is_mint_failed());
    outputs.push(describe(error));
    let error = pool.cache("").await.unwrap_err();
    outputs.push(describe(&error));
    outputs.push(format!(
        "{pool:?} {:?} {alice_cache:?} {client:?} {alice:?}",
        pool.stats()
    ));

    let log = logs.text();
    for expected in [
        "subscriber_mint",
        "subscriber_refresh",
        "pool entry minted",
        "pool entry mint failed",
        "subscriber token refreshed",
        "subscriber=alice@example.com",
        "subscriber=bob@example.com",
        "subscriber=carol@example.com",
    ] {
        assert!(
            log.contains(expected),
            "{expected:?} missing from the log:\n{log}"
        );
    }
    // The refresh of alice, not bob's, and the space host on it.
    let refresh_line = log
        .lines()
        .find(|line| line.contains("subscriber token refreshed"))
        .unwrap();
    assert!(
        refresh_line.contains("subscriber=alice@example.com"),
        "{refresh_line}"
    );
    assert!(
        refresh_line.contains(&format!("space={}", mock.space().host())),
        "{refresh_line}"
    );

    secrets.extend([API_TOKEN.to_owned(), "pw-secret".to_owned()]);
    secrets.push(SEED_HEADER.trim_start_matches("Basic ").to_owned());
    let shown = format!("{log}\n{}", outputs.join("\n"));
    for secret in &secrets {
        assert!(
            !shown.contains(secret.as_str()),
            "a secret ({} bytes) was shown",
            secret.len()
        );
    }
}
