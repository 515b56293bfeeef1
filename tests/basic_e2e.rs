//! `BasicAuthLayer` around a real hyper-util client, talking to a real hyper server on 127.0.0.1.

mod common;

use common::{API_TOKEN, PROJECT_ID, SEED_HEADER, TestServer};
use http::{Request, StatusCode, Version, header::AUTHORIZATION};
use signalwire_auth::BasicAuthLayer;
use tower::Layer;

fn ok() -> (StatusCode, String) {
    (StatusCode::OK, "ok".to_owned())
}

#[tokio::test]
async fn http2_requests_carry_the_seed_header_over_one_reused_connection() {
    let server = TestServer::ok().await;
    let client = BasicAuthLayer::new(common::seed_credentials()).layer(common::h2_client());

    for path in [
        "/api/fabric/addresses",
        "/api/fabric/subscribers",
        "/api/x?y=1",
    ] {
        assert_eq!(
            common::fetch(&client, common::get(server.url(path))).await,
            ok()
        );
    }

    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|s| s.version == Version::HTTP_2),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|s| s.peer == seen[0].peer),
        "all requests should share one connection: {seen:?}"
    );
    assert_eq!(server.connections(), 1);
    assert_eq!(
        server.authorizations(),
        vec![Some(SEED_HEADER.to_owned()); 3]
    );
}

#[tokio::test]
async fn http1_requests_in_sequence_all_carry_the_seed_header() {
    let server = TestServer::ok().await;
    let client = BasicAuthLayer::new(common::seed_credentials()).layer(common::http_client());

    for page in 0..4 {
        let req = common::get(server.url(&format!("/api/fabric/addresses?page={page}")));
        assert_eq!(common::fetch(&client, req).await, ok());
    }

    let seen = server.seen();
    assert!(
        seen.iter().all(|s| s.version == Version::HTTP_11),
        "{seen:?}"
    );
    assert_eq!(
        server.authorizations(),
        vec![Some(SEED_HEADER.to_owned()); 4]
    );
}

#[tokio::test]
async fn an_authorization_header_already_on_the_request_is_replaced() {
    let server = TestServer::ok().await;
    let client = BasicAuthLayer::new(common::seed_credentials()).layer(common::http_client());

    for stale in ["Bearer stale-sat", "Basic Zm9vOmJhcg==", "Basic"] {
        let req = Request::post(server.url("/api/fabric/subscribers/tokens"))
            .header(AUTHORIZATION, stale)
            // A second value must not survive either: `insert` drops every previous one.
            .header(AUTHORIZATION, "Bearer another")
            .body(r#"{"reference":"alice"}"#.into())
            .unwrap();
        assert_eq!(common::fetch(&client, req).await, ok());
    }

    assert_eq!(
        server.authorizations(),
        vec![Some(SEED_HEADER.to_owned()); 3]
    );
    for seen in server.seen() {
        assert_eq!(&seen.body[..], br#"{"reference":"alice"}"#);
    }
}

#[tokio::test]
async fn the_server_decodes_exactly_project_id_colon_api_token() {
    use base64::Engine as _;

    let server = TestServer::ok().await;
    let client = BasicAuthLayer::new(common::seed_credentials())
        .for_space(&server.space())
        .layer(common::http_client());
    assert_eq!(
        common::fetch(&client, common::get(server.url("/api"))).await,
        ok()
    );

    let header = server.authorizations().remove(0).unwrap();
    let encoded = header.strip_prefix("Basic ").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(decoded, format!("{PROJECT_ID}:{API_TOKEN}").as_bytes());
}

/// The crate's own HTTPS client also speaks plain HTTP to loopback, where the layer allows it.
#[cfg(feature = "https")]
#[tokio::test]
async fn the_crate_https_client_carries_the_header_to_loopback_http() {
    let server = TestServer::ok().await;
    let client = BasicAuthLayer::new(common::seed_credentials())
        .for_space(&server.space())
        .layer(signalwire_auth::https_client::<
            http_body_util::Full<bytes::Bytes>,
        >());

    for _ in 0..2 {
        let req = common::get(server.url("/api/fabric/addresses"));
        assert_eq!(common::fetch(&client, req).await, ok());
    }
    assert_eq!(
        server.authorizations(),
        vec![Some(SEED_HEADER.to_owned()); 2]
    );
}
