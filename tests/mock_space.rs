//! End-to-end tests of the mock: real requests over loopback, through `MockSpace::client`.
#![cfg(feature = "test-util")]

mod common;

use std::{
    collections::VecDeque,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, StatusCode, Version,
    header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER},
};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::{Instant, advance},
};

use common::Streaming;
use signalwire_auth::{
    Credentials, MockSpace, TokenHeader, TokenPair,
    mock::{Fault, MockEndpoint, MockSpaceBuilder},
};

const DOCS: &str = "https://developer.signalwire.com/rest/overview/error-codes";
const ADDRESS: &str = "c22d24f6-5a26-4f53-8008-b29530339efa";

/// A UUID in its canonical 8-4-4-4-12 hex form, as SignalWire writes ids.
fn is_uuid(id: &str) -> bool {
    id.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// What came back, read in full.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    /// The body as JSON, after checking the content type says so.
    fn json(&self) -> Value {
        assert_eq!(
            self.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes),
            Some(&b"application/json"[..]),
            "{self:?}"
        );
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn str(&self, field: &str) -> String {
        self.json()[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field} in {self:?}"))
            .to_owned()
    }

    /// Asserts a one-entry error body of SignalWire's documented shape.
    fn assert_error(&self, status: StatusCode, kind: &str, code: &str, attribute: Option<&str>) {
        assert_eq!(self.status, status, "{self:?}");
        let json = self.json();
        let entry = &json["errors"][0];
        assert_eq!(entry["type"], kind, "{json}");
        assert_eq!(entry["code"], code, "{json}");
        assert_eq!(entry["attribute"], json!(attribute), "{json}");
        assert_eq!(entry["url"], DOCS, "{json}");
        assert!(entry["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    /// Asserts the refresh endpoint's refusal of the presented token, with `code`.
    fn assert_refresh_refused(&self, code: &str) {
        self.assert_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            code,
            Some("refresh_token"),
        );
    }

    fn assert_invalid(&self, attribute: &str) {
        assert_eq!(self.status, StatusCode::UNPROCESSABLE_ENTITY, "{self:?}");
        let json = self.json();
        let errors = json["errors"].as_array().expect("errors[]");
        assert!(
            errors
                .iter()
                .any(|e| e["type"] == "validation_error" && e["attribute"] == attribute),
            "no error about {attribute} in {json}"
        );
    }

    fn assert_unauthorized(&self) {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "{self:?}");
        assert_eq!(
            self.json(),
            json!({"errors":[{
                "type": "authentication_error",
                "code": "unauthorized",
                "message": "Unauthorized",
                "attribute": null,
                "url": DOCS,
            }]})
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Auth<'a> {
    None,
    Basic,
    Bearer(&'a str),
    Header(&'a str),
}

fn build(mock: &MockSpace, method: Method, path: &str, auth: Auth<'_>) -> http::request::Builder {
    let mut builder = Request::builder()
        .method(method)
        .uri(mock.space().endpoint(path).expect("a valid path"));
    match auth {
        Auth::None => {}
        Auth::Basic => builder = builder.header(AUTHORIZATION, mock.credentials().basic_header()),
        Auth::Bearer(token) => builder = builder.header(AUTHORIZATION, format!("Bearer {token}")),
        Auth::Header(value) => builder = builder.header(AUTHORIZATION, value),
    }
    builder
}

async fn send(mock: &MockSpace, request: Request<Full<Bytes>>) -> Answer {
    let response = mock
        .client()
        .request(request)
        .await
        .expect("the mock answers");
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: body.collect().await.expect("a whole body").to_bytes(),
    }
}

async fn post(mock: &MockSpace, endpoint: MockEndpoint, auth: Auth<'_>, body: Value) -> Answer {
    let request = build(mock, Method::POST, endpoint.path(), auth)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    send(mock, request).await
}

async fn get(mock: &MockSpace, path: &str, auth: Auth<'_>) -> Answer {
    let request = build(mock, Method::GET, path, auth)
        .body(Full::default())
        .unwrap();
    send(mock, request).await
}

async fn addresses(mock: &MockSpace, token: &str) -> StatusCode {
    get(mock, "/api/fabric/addresses", Auth::Bearer(token))
        .await
        .status
}

/// `(subscriber_id, token, refresh_token)` from Create Subscriber Token.
async fn mint(mock: &MockSpace, body: Value) -> (String, String, String) {
    let answer = post(mock, MockEndpoint::CreateSubscriberToken, Auth::Basic, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    (
        answer.str("subscriber_id"),
        answer.str("token"),
        answer.str("refresh_token"),
    )
}

async fn refresh(mock: &MockSpace, refresh_token: &str) -> Answer {
    post(
        mock,
        MockEndpoint::RefreshSubscriberToken,
        Auth::Basic,
        json!({ "refresh_token": refresh_token }),
    )
    .await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn typ(token: &str) -> Option<String> {
    TokenHeader::parse(token).and_then(|h| h.typ().map(str::to_owned))
}

// ---------------------------------------------------------------------------------------------
// Create Subscriber Token

#[tokio::test]
async fn subscriber_token_is_a_sat_pair_with_a_stable_subscriber_id() {
    let mock = MockSpace::start().await.unwrap();
    let (id, token, refresh_token) = mint(&mock, json!({"reference": "alice@example.com"})).await;
    assert!(is_uuid(&id), "{id}");
    let header = TokenHeader::parse(&token).unwrap();
    assert_eq!(header.typ(), Some("SAT"));
    assert_eq!(header.alg(), Some("dir"));
    assert_eq!(header.enc(), Some("A256GCM"));
    assert_eq!(header.channel(), Some("127.0.0.1"));
    assert_eq!(typ(&refresh_token).as_deref(), Some("Refresh"));

    let (again, token2, _) = mint(&mock, json!({"reference": "alice@example.com"})).await;
    assert_eq!(again, id);
    assert_ne!(token2, token);
    let (other, _, _) = mint(&mock, json!({"reference": "bob@example.com"})).await;
    assert_ne!(other, id);
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 3);
}

#[tokio::test]
async fn subscriber_token_needs_the_project_credentials() {
    let mock = MockSpace::start().await.unwrap();
    let body = json!({"reference": "alice"});
    let ep = MockEndpoint::CreateSubscriberToken;
    post(&mock, ep, Auth::None, body.clone())
        .await
        .assert_unauthorized();
    let wrong = Credentials::new(mock.credentials().project_id(), "not-the-token").unwrap();
    let wrong = wrong.basic_header();
    post(
        &mock,
        ep,
        Auth::Header(wrong.to_str().unwrap()),
        body.clone(),
    )
    .await
    .assert_unauthorized();
    post(&mock, ep, Auth::Header("Basic %%%"), body.clone())
        .await
        .assert_unauthorized();
    post(&mock, ep, Auth::Header("Basic"), body.clone())
        .await
        .assert_unauthorized();
    let (_, sat, _) = mint(&mock, body.clone()).await;
    post(&mock, ep, Auth::Bearer(&sat), body.clone())
        .await
        .assert_unauthorized();
    // The scheme is case-insensitive.
    let basic = mock.credentials().basic_header();
    let lower = basic.to_str().unwrap().replacen("Basic", "basic", 1);
    assert_eq!(
        post(&mock, ep, Auth::Header(&lower), body).await.status,
        StatusCode::OK
    );
    assert_eq!(mock.calls(ep), 7);
}

#[tokio::test]
async fn builder_credentials_are_the_ones_accepted() {
    let creds = Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "PTsecret").unwrap();
    let mock = MockSpace::builder()
        .credentials(creds.clone())
        .start()
        .await
        .unwrap();
    assert_eq!(mock.credentials().basic_header(), creds.basic_header());
    mint(&mock, json!({"reference": "alice"})).await;
}

#[tokio::test]
async fn subscriber_token_validates_its_fields() {
    let mock = MockSpace::start().await.unwrap();
    let ep = MockEndpoint::CreateSubscriberToken;
    for (body, attribute) in [
        (json!({}), "reference"),
        (json!({"reference": null}), "reference"),
        (json!({"reference": "  "}), "reference"),
        (json!({"reference": 42}), "reference"),
        (json!({"reference": "a", "expire_at": 1}), "expire_at"),
        (json!({"reference": "a", "expire_at": "soon"}), "expire_at"),
        (json!({"reference": "a", "expire_at": -5}), "expire_at"),
        (json!({"reference": "a", "expire_at": 1e300}), "expire_at"),
        (
            json!({"reference": "a", "expire_at": u64::MAX}),
            "expire_at",
        ),
        (json!({"reference": "a", "scope": "admin"}), "scope"),
        (json!({"reference": "a", "first_name": 7}), "first_name"),
    ] {
        post(&mock, ep, Auth::Basic, body)
            .await
            .assert_invalid(attribute);
    }

    // Every problem is listed, each with its attribute.
    let answer = post(&mock, ep, Auth::Basic, json!({"expire_at": 1})).await;
    answer.assert_invalid("reference");
    answer.assert_invalid("expire_at");
    assert_eq!(answer.json()["errors"].as_array().unwrap().len(), 2);
    let entry = &answer.json()["errors"][0];
    assert_eq!(entry["code"], "missing_required_parameter");
    assert_eq!(entry["url"], DOCS);

    // Refused requests mint nothing.
    let list = get(&mock, "/api/fabric/subscribers", Auth::Basic).await;
    assert_eq!(list.json()["data"], json!([]));
}

#[tokio::test]
async fn subscriber_token_accepts_every_documented_field() {
    let mock = MockSpace::start().await.unwrap();
    mint(
        &mock,
        json!({
            "reference": "alice@example.com",
            "expire_at": unix_now() + 3600,
            "application_id": ADDRESS,
            "password": "hunter2",
            "fingerprint": "device-1",
            "scope": "sat:refresh",
            "first_name": "Alice",
            "last_name": "Liddell",
            "display_name": "Alice L.",
            "job_title": "Explorer",
            "time_zone": "Europe/London",
            "country": "GB",
            "company_name": "Wonderland",
            "region": "eu",
            "not_documented": {"ignored": true},
        }),
    )
    .await;
    let list = get(&mock, "/api/fabric/subscribers", Auth::Basic).await;
    let subscriber = &list.json()["data"][0];
    assert_eq!(subscriber["email"], "alice@example.com");
    assert_eq!(subscriber["first_name"], "Alice");
    assert_eq!(subscriber["timezone"], "Europe/London");
    assert_eq!(subscriber["company_name"], "Wonderland");
    assert!(!list.body.windows(7).any(|w| w == b"hunter2"));
}

#[tokio::test(start_paused = true)]
async fn expire_at_sets_the_sat_lifetime() {
    let mock = MockSpace::start().await.unwrap();
    let (_, sat, _) = mint(
        &mock,
        json!({"reference": "alice", "expire_at": unix_now() + 600}),
    )
    .await;
    // The wall clock moved a fraction of a second since `unix_now`: keep clear of the edge.
    advance(Duration::from_secs(597)).await;
    assert_eq!(addresses(&mock, &sat).await, StatusCode::OK);
    advance(Duration::from_secs(4)).await;
    assert_eq!(addresses(&mock, &sat).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(start_paused = true)]
async fn refresh_scope_without_fingerprint_lives_sixty_seconds() {
    let mock = MockSpace::start().await.unwrap();
    let (_, short, _) = mint(&mock, json!({"reference": "a", "scope": "sat:refresh"})).await;
    let (_, bound, _) = mint(
        &mock,
        json!({"reference": "a", "scope": "sat:refresh", "fingerprint": "fp"}),
    )
    .await;
    advance(Duration::from_secs(59)).await;
    assert_eq!(addresses(&mock, &short).await, StatusCode::OK);
    advance(Duration::from_secs(1)).await;
    assert_eq!(addresses(&mock, &short).await, StatusCode::UNAUTHORIZED);
    assert_eq!(addresses(&mock, &bound).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn default_sat_lifetime_comes_from_the_builder() {
    let lifetime = Duration::from_secs(5 * 60);
    let mock = MockSpace::builder()
        .access_lifetime(lifetime)
        .start()
        .await
        .unwrap();
    let (_, sat, _) = mint(&mock, json!({"reference": "a"})).await;
    let pair = mock.mint("b");
    assert_eq!(pair.lifetime(), lifetime);
    advance(lifetime - Duration::from_secs(1)).await;
    assert_eq!(addresses(&mock, &sat).await, StatusCode::OK);
    assert_eq!(addresses(&mock, pair.access_token()).await, StatusCode::OK);
    advance(Duration::from_secs(1)).await;
    assert_eq!(addresses(&mock, &sat).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        addresses(&mock, pair.access_token()).await,
        StatusCode::UNAUTHORIZED
    );
}

// ---------------------------------------------------------------------------------------------
// Refresh Subscriber Token

#[tokio::test]
async fn refresh_rotates_and_spends_the_old_token() {
    let mock = MockSpace::start().await.unwrap();
    let (_, sat, first) = mint(&mock, json!({"reference": "alice"})).await;

    let answer = refresh(&mock, &first).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert_eq!(answer.json().as_object().unwrap().len(), 2);
    let (new_sat, second) = (answer.str("token"), answer.str("refresh_token"));
    assert_ne!(new_sat, sat);
    assert_ne!(second, first);
    assert_eq!(typ(&new_sat).as_deref(), Some("SAT"));
    assert_eq!(typ(&second).as_deref(), Some("Refresh"));
    assert_eq!(addresses(&mock, &new_sat).await, StatusCode::OK);
    // The old access token lives on until it expires: only the refresh token is spent.
    assert_eq!(addresses(&mock, &sat).await, StatusCode::OK);

    refresh(&mock, &first)
        .await
        .assert_refresh_refused("token_expired");
    assert_eq!(mock.reused_refresh_tokens(), 1);
    assert_eq!(refresh(&mock, &second).await.status, StatusCode::CREATED);
    refresh(&mock, &second).await;
    refresh(&mock, &first).await;
    assert_eq!(mock.reused_refresh_tokens(), 3);
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 5);
}

#[tokio::test]
async fn refresh_refuses_unknown_and_access_tokens() {
    let mock = MockSpace::start().await.unwrap();
    let (_, sat, refresh_token) = mint(&mock, json!({"reference": "alice"})).await;
    refresh(&mock, "eyJ0eXAiOiJSZWZyZXNoIn0..a.b.c")
        .await
        .assert_refresh_refused("token_expired");
    refresh(&mock, &sat)
        .await
        .assert_refresh_refused("not_a_refresh_token");
    let ep = MockEndpoint::RefreshSubscriberToken;
    post(&mock, ep, Auth::Basic, json!({}))
        .await
        .assert_invalid("refresh_token");
    post(&mock, ep, Auth::Basic, json!({"refresh_token": ["x"]}))
        .await
        .assert_invalid("refresh_token");
    // The refresh endpoint takes the project credentials, not the SAT.
    post(
        &mock,
        ep,
        Auth::Bearer(&sat),
        json!({ "refresh_token": refresh_token }),
    )
    .await
    .assert_unauthorized();
    assert_eq!(mock.reused_refresh_tokens(), 0);
    // None of the refused calls spent the token.
    assert_eq!(
        refresh(&mock, &refresh_token).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_token_expires_after_the_refresh_lifetime() {
    let mock = MockSpace::builder()
        .refresh_lifetime(Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    let (_, _, first) = mint(&mock, json!({"reference": "a"})).await;
    let (_, _, second) = mint(&mock, json!({"reference": "a"})).await;
    advance(Duration::from_secs(599)).await;
    assert_eq!(refresh(&mock, &first).await.status, StatusCode::CREATED);
    advance(Duration::from_secs(1)).await;
    refresh(&mock, &second)
        .await
        .assert_refresh_refused("token_expired");
    assert_eq!(mock.reused_refresh_tokens(), 0);
}

#[tokio::test(start_paused = true)]
async fn refreshed_sat_lives_the_refreshed_access_lifetime() {
    let mock = MockSpace::builder()
        .access_lifetime(Duration::from_secs(3600))
        .refreshed_access_lifetime(Duration::from_secs(180))
        .refresh_lifetime(Duration::from_secs(200))
        .start()
        .await
        .unwrap();
    let pair = mock.mint("alice");
    assert_eq!(
        pair.refresh_expires_at(),
        Some(pair.issued_at() + Duration::from_secs(200))
    );
    let answer = refresh(&mock, pair.refresh_token().unwrap()).await;
    let (sat, next) = (answer.str("token"), answer.str("refresh_token"));
    advance(Duration::from_secs(179)).await;
    assert_eq!(addresses(&mock, &sat).await, StatusCode::OK);
    advance(Duration::from_secs(1)).await;
    assert_eq!(addresses(&mock, &sat).await, StatusCode::UNAUTHORIZED);
    // The rotated refresh token got the refresh lifetime from the refresh instant.
    advance(Duration::from_secs(19)).await;
    assert_eq!(refresh(&mock, &next).await.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_one_token_let_exactly_one_win() {
    let mock = std::sync::Arc::new(MockSpace::start().await.unwrap());
    let pair = mock.mint("alice");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mock = mock.clone();
        let token = pair.refresh_token().unwrap().to_owned();
        tasks.spawn(async move { refresh(&mock, &token).await.status });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    let won = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(won, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY].contains(s))
    );
    assert_eq!(mock.reused_refresh_tokens(), 19);
}

// ---------------------------------------------------------------------------------------------
// Guest, invite and embed tokens

#[tokio::test]
async fn guest_token_takes_basic_or_a_subscriber_sat() {
    let mock = MockSpace::start().await.unwrap();
    let ep = MockEndpoint::CreateGuestToken;
    let body = json!({ "allowed_addresses": [ADDRESS] });

    let by_project = post(&mock, ep, Auth::Basic, body.clone()).await;
    assert_eq!(by_project.status, StatusCode::CREATED, "{by_project:?}");
    let guest = by_project.str("token");
    assert_eq!(typ(&guest).as_deref(), Some("SAT"));
    assert_eq!(
        typ(&by_project.str("refresh_token")).as_deref(),
        Some("Refresh")
    );

    let pair = mock.mint("alice");
    let by_sat = post(&mock, ep, Auth::Bearer(pair.access_token()), body.clone()).await;
    assert_eq!(by_sat.status, StatusCode::CREATED, "{by_sat:?}");

    // A guest token reads addresses, but cannot mint more guests.
    assert_eq!(addresses(&mock, &guest).await, StatusCode::OK);
    post(&mock, ep, Auth::Bearer(&guest), body.clone())
        .await
        .assert_error(
            StatusCode::FORBIDDEN,
            "authorization_error",
            "forbidden",
            None,
        );
    post(&mock, ep, Auth::None, body.clone())
        .await
        .assert_unauthorized();
    post(&mock, ep, Auth::Bearer("eyJ9..a.b.c"), body)
        .await
        .assert_unauthorized();

    // Guest refresh tokens rotate like subscribers' do.
    let again = refresh(&mock, &by_project.str("refresh_token")).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(addresses(&mock, &again.str("token")).await, StatusCode::OK);
}

#[tokio::test]
async fn guest_token_validates_allowed_addresses() {
    let mock = MockSpace::start().await.unwrap();
    let ep = MockEndpoint::CreateGuestToken;
    let ten: Vec<_> = (0..10).map(|_| ADDRESS).collect();
    let eleven: Vec<_> = (0..11).map(|_| ADDRESS).collect();
    for body in [
        json!({}),
        json!({"allowed_addresses": []}),
        json!({"allowed_addresses": eleven}),
        json!({"allowed_addresses": ["not-a-uuid"]}),
        json!({"allowed_addresses": [ADDRESS, 7]}),
        json!({"allowed_addresses": ADDRESS}),
    ] {
        post(&mock, ep, Auth::Basic, body)
            .await
            .assert_invalid("allowed_addresses");
    }
    post(
        &mock,
        ep,
        Auth::Basic,
        json!({"allowed_addresses": [ADDRESS], "expire_at": 10}),
    )
    .await
    .assert_invalid("expire_at");
    let answer = post(
        &mock,
        ep,
        Auth::Basic,
        json!({
            "allowed_addresses": ten,
            "expire_at": unix_now() + 60,
            "region": "us",
            "ch": "example.signalwire.com",
        }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
}

#[tokio::test(start_paused = true)]
async fn guest_expire_at_sets_its_lifetime() {
    let mock = MockSpace::start().await.unwrap();
    let answer = post(
        &mock,
        MockEndpoint::CreateGuestToken,
        Auth::Basic,
        json!({"allowed_addresses": [ADDRESS], "expire_at": unix_now() + 120}),
    )
    .await;
    let guest = answer.str("token");
    advance(Duration::from_secs(117)).await;
    assert_eq!(addresses(&mock, &guest).await, StatusCode::OK);
    advance(Duration::from_secs(4)).await;
    assert_eq!(addresses(&mock, &guest).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn invite_token_needs_a_subscriber_sat_and_an_address() {
    let mock = MockSpace::start().await.unwrap();
    let ep = MockEndpoint::CreateInviteToken;
    let pair = mock.mint("alice");
    let sat = Auth::Bearer(pair.access_token());

    let answer = post(&mock, ep, sat, json!({"address_id": ADDRESS})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert_eq!(answer.json().as_object().unwrap().len(), 1);
    assert_eq!(typ(&answer.str("token")).as_deref(), Some("SAT"));

    // `expires_at` is this endpoint's spelling; `expire_at` is not one of its fields.
    let answer = post(
        &mock,
        ep,
        sat,
        json!({"address_id": ADDRESS, "expires_at": unix_now() + 60, "expire_at": 1}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    post(
        &mock,
        ep,
        sat,
        json!({"address_id": ADDRESS, "expires_at": 1}),
    )
    .await
    .assert_invalid("expires_at");
    post(&mock, ep, sat, json!({}))
        .await
        .assert_invalid("address_id");
    post(&mock, ep, sat, json!({"address_id": "lobby"}))
        .await
        .assert_invalid("address_id");

    post(&mock, ep, Auth::Basic, json!({"address_id": ADDRESS}))
        .await
        .assert_unauthorized();
    post(&mock, ep, Auth::None, json!({"address_id": ADDRESS}))
        .await
        .assert_unauthorized();
    let invite = answer.str("token");
    post(
        &mock,
        ep,
        Auth::Bearer(&invite),
        json!({"address_id": ADDRESS}),
    )
    .await
    .assert_error(
        StatusCode::FORBIDDEN,
        "authorization_error",
        "forbidden",
        None,
    );
}

#[tokio::test]
async fn embed_token_needs_a_c2c_token_and_no_auth() {
    let mock = MockSpace::start().await.unwrap();
    let ep = MockEndpoint::CreateEmbedToken;
    let answer = post(&mock, ep, Auth::None, json!({"token": "c2c_7acc0e5e"})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let token = answer.str("token");
    assert_eq!(typ(&token).as_deref(), Some("SAT"));
    assert_eq!(addresses(&mock, &token).await, StatusCode::OK);
    // Credentials, even wrong ones, are not looked at.
    let answer = post(
        &mock,
        ep,
        Auth::Header("Basic Zm9vOmJhcg=="),
        json!({"token": "c2c_x"}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    for body in [
        json!({}),
        json!({"token": "c2c_"}),
        json!({"token": "pt_7acc0e5e"}),
        json!({"token": 5}),
    ] {
        post(&mock, ep, Auth::None, body)
            .await
            .assert_invalid("token");
    }
}

// ---------------------------------------------------------------------------------------------
// Listings

#[tokio::test]
async fn addresses_are_paged_and_need_a_valid_access_token() {
    let mock = MockSpace::start().await.unwrap();
    let pair = mock.mint("alice");
    mock.mint("bob");
    let sat = pair.access_token();

    let mut link = "/api/fabric/addresses?page_size=2".to_owned();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let answer = get(&mock, &link, Auth::Bearer(sat)).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        let json = answer.json();
        assert_eq!(json["links"]["self"], link.as_str());
        assert_eq!(json["links"]["first"], "/api/fabric/addresses?page_size=2");
        let data = json["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        for address in data {
            for field in ["id", "name", "display_name", "type"] {
                assert!(address[field].is_string(), "{field} in {address}");
            }
            assert!(address.get("cover_url").is_some());
            assert!(address.get("preview_url").is_some());
            assert!(address["channels"]["video"].is_string());
            seen.push(address["id"].as_str().unwrap().to_owned());
        }
        pages += 1;
        match json["links"]["next"].as_str() {
            Some(next) => link = next.to_owned(),
            None => break,
        }
    }
    // Three public addresses and one per subscriber, each once.
    assert_eq!(seen.len(), 5);
    assert_eq!(pages, 3);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);

    let bad = get(
        &mock,
        "/api/fabric/addresses?page_size=0",
        Auth::Bearer(sat),
    )
    .await;
    bad.assert_invalid("page_size");
    get(&mock, "/api/fabric/addresses", Auth::None)
        .await
        .assert_unauthorized();
    get(&mock, "/api/fabric/addresses", Auth::Basic)
        .await
        .assert_unauthorized();
    get(
        &mock,
        "/api/fabric/addresses",
        Auth::Bearer(pair.refresh_token().unwrap()),
    )
    .await
    .assert_unauthorized();
    get(&mock, "/api/fabric/addresses", Auth::Bearer("garbage"))
        .await
        .assert_unauthorized();
    get(&mock, "/api/fabric/addresses", Auth::Header("Bearer"))
        .await
        .assert_unauthorized();
    assert_eq!(mock.calls(MockEndpoint::ListAddresses), pages + 6);
}

#[tokio::test]
async fn subscribers_list_every_reference_behind_basic() {
    let mock = MockSpace::start().await.unwrap();
    mint(&mock, json!({"reference": "alice@example.com"})).await;
    mint(&mock, json!({"reference": "alice@example.com"})).await;
    let (bob, _, _) = mint(&mock, json!({"reference": "bob@example.com"})).await;
    let pair = mock.mint("carol@example.com");

    let answer = get(&mock, "/api/fabric/subscribers?page_size=10", Auth::Basic).await;
    assert_eq!(answer.status, StatusCode::OK);
    let json = answer.json();
    let emails: Vec<_> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );
    assert_eq!(json["data"][1]["id"], bob.as_str());
    assert!(json["links"].get("next").is_none());

    // This endpoint answers 401 with the short `{"error": ...}` shape.
    for auth in [Auth::None, Auth::Bearer(pair.access_token())] {
        let answer = get(&mock, "/api/fabric/subscribers", auth).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.json(), json!({"error": "Unauthorized"}));
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP edges

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let mock = MockSpace::start().await.unwrap();
    for path in [
        "/",
        "/api/fabric/subscribers/invites",
        "/api/fabric/addresses/",
        "/api/fabric/subscriber/tokens",
    ] {
        get(&mock, path, Auth::Basic).await.assert_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            None,
        );
    }
    let answer = get(
        &mock,
        MockEndpoint::CreateSubscriberToken.path(),
        Auth::Basic,
    )
    .await;
    answer.assert_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        None,
    );
    assert_eq!(answer.headers[ALLOW], "POST");
    let answer = post(&mock, MockEndpoint::ListAddresses, Auth::Basic, json!({})).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers[ALLOW], "GET");
    for endpoint in MockEndpoint::ALL {
        assert_eq!(mock.calls(endpoint), 0, "{endpoint:?}");
    }
}

#[tokio::test]
async fn bodies_must_be_json_objects() {
    let mock = MockSpace::start().await.unwrap();
    let path = MockEndpoint::CreateSubscriberToken.path();
    let raw = |content_type: Option<&str>, body: &'static str| {
        let mut builder = build(&mock, Method::POST, path, Auth::Basic);
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        builder
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    for body in [
        "{\"reference\":",
        "",
        "[]",
        "\"alice\"",
        "null",
        "\u{feff}{}",
    ] {
        send(&mock, raw(Some("application/json"), body))
            .await
            .assert_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
                None,
            );
    }
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        send(&mock, raw(content_type, "{\"reference\":\"a\"}"))
            .await
            .assert_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "unsupported_media_type",
                None,
            );
    }
    let answer = send(
        &mock,
        raw(
            Some("application/json; charset=utf-8"),
            "{\"reference\":\"a\"}",
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn bodies_over_64_kib_get_413() {
    let mock = MockSpace::start().await.unwrap();
    let path = MockEndpoint::CreateSubscriberToken.path();
    // Exactly 64 KiB of valid JSON is read.
    let prefix = "{\"reference\":\"alice\",\"pad\":\"";
    let pad = "x".repeat(64 * 1024 - prefix.len() - 2);
    let exact = format!("{prefix}{pad}\"}}");
    assert_eq!(exact.len(), 64 * 1024);
    let request = |body: String| {
        build(&mock, Method::POST, path, Auth::Basic)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    assert_eq!(
        send(&mock, request(exact.clone())).await.status,
        StatusCode::OK
    );
    let over = format!("{prefix}x{pad}\"}}");
    send(&mock, request(over)).await.assert_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "payload_too_large",
        None,
    );

    // The same without a content-length: the limit holds on what arrives.
    let chunks: VecDeque<Bytes> = (0..40).map(|_| Bytes::from(vec![b' '; 2048])).collect();
    let request = build(&mock, Method::POST, path, Auth::Basic)
        .header(CONTENT_TYPE, "application/json")
        .body(Streaming::new(chunks))
        .unwrap();
    let response = mock.client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A body far too large to drain is refused on its declared length alone, before it is sent.
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {}\r\n\
         content-type: application/json\r\ncontent-length: 10000000\r\n\r\n",
        mock.credentials().basic_header().to_str().unwrap()
    );
    let mut stream = TcpStream::connect(mock.addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 413 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 4);
}

#[tokio::test]
async fn odd_json_gets_4xx_and_the_server_carries_on() {
    let mock = MockSpace::start().await.unwrap();
    let pair = mock.mint("alice");
    let odd = [
        json!({"reference": {"nested": [1, 2, {"deep": null}]}}),
        json!({"reference": "\u{0}\u{fffd}💥", "expire_at": 0}),
        json!({"refresh_token": "a".repeat(10_000)}),
        json!({"refresh_token": ""}),
        json!({"allowed_addresses": [null]}),
        json!({"allowed_addresses": [[ADDRESS]]}),
        json!({"address_id": true, "expires_at": -1}),
        json!({"token": {"c2c_": 1}}),
        json!({"expire_at": 18_446_744_073_709_551_615u64}),
        json!({"expire_at": 1.5}),
    ];
    for endpoint in MockEndpoint::ALL
        .into_iter()
        .filter(|e| e.method() == Method::POST)
    {
        for body in &odd {
            for auth in [Auth::Basic, Auth::Bearer(pair.access_token())] {
                let answer = post(&mock, endpoint, auth, body.clone()).await;
                assert!(
                    answer.status.is_client_error() || answer.status.is_success(),
                    "{endpoint:?} {body}: {answer:?}"
                );
                answer.json();
            }
        }
    }
    assert_eq!(addresses(&mock, pair.access_token()).await, StatusCode::OK);
}

#[tokio::test]
async fn clients_that_vanish_mid_request_do_not_stop_the_server() {
    for mock in [
        MockSpace::start().await.unwrap(),
        MockSpace::start_tls().await.unwrap(),
    ] {
        let basic = mock.credentials().basic_header();
        let partial_body = format!(
            "POST /api/fabric/subscribers/tokens HTTP/1.1\r\nhost: localhost\r\n\
             authorization: {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n\
             {{\"reference\":",
            basic.to_str().unwrap()
        );
        let junk: [&[u8]; 4] = [
            partial_body.as_bytes(),
            b"POST /api/fabric/subscribers/tokens HTTP/1.1\r\nhost: loc",
            b"\x16\x03\x01\x00\xffnot really tls",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
        ];
        for bytes in junk {
            let mut stream = TcpStream::connect(mock.addr()).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            drop(stream);
        }
        mint(&mock, json!({"reference": "alice"})).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Revocation, faults, counters

#[tokio::test]
async fn revoked_access_tokens_get_401_until_refreshed() {
    let mock = MockSpace::start().await.unwrap();
    let (_, sat, refresh_token) = mint(&mock, json!({"reference": "alice"})).await;
    let pair = mock.mint("bob");
    let guest = post(
        &mock,
        MockEndpoint::CreateGuestToken,
        Auth::Basic,
        json!({"allowed_addresses": [ADDRESS]}),
    )
    .await
    .str("token");
    mock.revoke_access_tokens();
    for token in [sat.as_str(), pair.access_token(), guest.as_str()] {
        get(&mock, "/api/fabric/addresses", Auth::Bearer(token))
            .await
            .assert_unauthorized();
    }
    // Refresh tokens survive revocation, and new access tokens are not revoked.
    let answer = refresh(&mock, &refresh_token).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(addresses(&mock, &answer.str("token")).await, StatusCode::OK);
    assert_eq!(
        addresses(&mock, mock.mint("carol").access_token()).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn status_fault_answers_the_documented_shape_then_recovers() {
    let mock = MockSpace::start().await.unwrap();
    let ep = MockEndpoint::CreateSubscriberToken;
    mock.inject(ep, Fault::Status(StatusCode::INTERNAL_SERVER_ERROR), 2);
    mock.inject(ep, Fault::Status(StatusCode::TOO_MANY_REQUESTS), 1);
    let body = json!({"reference": "alice"});
    for _ in 0..2 {
        let answer = post(&mock, ep, Auth::Basic, body.clone()).await;
        answer.assert_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "server_error",
            None,
        );
    }
    // Faults replace the answer before credentials are even looked at.
    let answer = post(&mock, ep, Auth::None, body.clone()).await;
    answer.assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "too_many_requests",
        None,
    );
    assert_eq!(answer.headers[RETRY_AFTER], "1");
    mint(&mock, body).await;
    assert_eq!(mock.calls(ep), 4);
    // Faulted calls minted nothing.
    let list = get(&mock, "/api/fabric/subscribers", Auth::Basic).await;
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn delay_fault_answers_normally_after_the_delay() {
    let mock = MockSpace::start().await.unwrap();
    let pair = mock.mint("alice");
    mock.inject(
        MockEndpoint::RefreshSubscriberToken,
        Fault::Delay(Duration::from_secs(30)),
        1,
    );
    let started = Instant::now();
    let answer = refresh(&mock, pair.refresh_token().unwrap()).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert!(started.elapsed() >= Duration::from_secs(30));
    // The new token's lifetime counts from the end of the delay.
    let sat = answer.str("token");
    advance(TokenPair::DEFAULT_LIFETIME - Duration::from_secs(1)).await;
    assert_eq!(addresses(&mock, &sat).await, StatusCode::OK);
}

#[tokio::test]
async fn garbage_fault_is_a_2xx_without_json_and_changes_nothing() {
    let mock = MockSpace::start().await.unwrap();
    let pair = mock.mint("alice");
    let refresh_token = pair.refresh_token().unwrap();
    mock.inject(MockEndpoint::RefreshSubscriberToken, Fault::Garbage, 1);
    mock.inject(MockEndpoint::ListAddresses, Fault::Garbage, 1);
    let answer = refresh(&mock, refresh_token).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_ne!(answer.headers[CONTENT_TYPE], "application/json");
    assert!(serde_json::from_slice::<Value>(&answer.body).is_err());
    let answer = get(&mock, "/api/fabric/addresses", Auth::None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&answer.body).is_err());
    // The refresh token was not spent.
    assert_eq!(
        refresh(&mock, refresh_token).await.status,
        StatusCode::CREATED
    );
    assert_eq!(mock.reused_refresh_tokens(), 0);
}

async fn drop_fault_closes_the_connection_unanswered(mock: MockSpace, version: Version) {
    let ep = MockEndpoint::CreateSubscriberToken;
    mock.inject(ep, Fault::Drop, 1);
    let client = mock.client::<Full<Bytes>>();
    let request = build(&mock, Method::POST, ep.path(), Auth::Basic)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(b"{\"reference\":\"alice\"}")))
        .unwrap();
    assert!(client.request(request).await.is_err());
    assert_eq!(mock.calls(ep), 1);
    let list = get(&mock, "/api/fabric/subscribers", Auth::Basic).await;
    assert_eq!(list.version, version);
    assert_eq!(list.json()["data"], json!([]));
    mint(&mock, json!({"reference": "alice"})).await;
}

#[tokio::test]
async fn drop_fault_closes_an_http1_connection_unanswered() {
    let mock = MockSpace::start().await.unwrap();
    drop_fault_closes_the_connection_unanswered(mock, Version::HTTP_11).await;
}

#[tokio::test]
async fn drop_fault_closes_an_http2_connection_unanswered() {
    let mock = MockSpace::start_tls().await.unwrap();
    drop_fault_closes_the_connection_unanswered(mock, Version::HTTP_2).await;
}

#[tokio::test]
async fn lose_answer_fault_spends_the_refresh_token_but_says_nothing() {
    let mock = MockSpace::start().await.unwrap();
    let pair = mock.mint("alice");
    let refresh_token = pair.refresh_token().unwrap();
    mock.inject(MockEndpoint::RefreshSubscriberToken, Fault::LoseAnswer, 1);
    let request = build(
        &mock,
        Method::POST,
        MockEndpoint::RefreshSubscriberToken.path(),
        Auth::Basic,
    )
    .header(CONTENT_TYPE, "application/json")
    .body(Full::new(Bytes::from(
        json!({ "refresh_token": refresh_token }).to_string(),
    )))
    .unwrap();
    assert!(mock.client().request(request).await.is_err());
    // The retry a client would make finds the chain already moved on.
    refresh(&mock, refresh_token)
        .await
        .assert_refresh_refused("token_expired");
    assert_eq!(mock.reused_refresh_tokens(), 1);
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 2);
}

#[tokio::test]
async fn faults_apply_in_order_to_their_endpoint_only() {
    let mock = MockSpace::start().await.unwrap();
    let pair = mock.mint("alice");
    let sat = pair.access_token();
    mock.inject(
        MockEndpoint::ListAddresses,
        Fault::Status(StatusCode::BAD_GATEWAY),
        1,
    );
    mock.inject(MockEndpoint::ListAddresses, Fault::Garbage, 1);
    mock.inject(MockEndpoint::ListAddresses, Fault::Drop, 0);
    assert_eq!(
        get(&mock, "/api/fabric/subscribers", Auth::Basic)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(addresses(&mock, sat).await, StatusCode::BAD_GATEWAY);
    let garbage = get(&mock, "/api/fabric/addresses", Auth::Bearer(sat)).await;
    assert_eq!(garbage.headers[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(addresses(&mock, sat).await, StatusCode::OK);
    assert_eq!(mock.calls(MockEndpoint::ListAddresses), 3);
    assert_eq!(mock.calls(MockEndpoint::ListSubscribers), 1);
}

#[tokio::test]
async fn calls_count_each_endpoint_separately() {
    let mock = MockSpace::start().await.unwrap();
    let pair = mock.mint("alice");
    let sat = Auth::Bearer(pair.access_token());
    refresh(&mock, pair.refresh_token().unwrap()).await;
    for (endpoint, auth, body) in [
        (MockEndpoint::CreateSubscriberToken, Auth::None, json!({})),
        (MockEndpoint::CreateGuestToken, Auth::Basic, json!({})),
        (MockEndpoint::CreateGuestToken, Auth::Basic, json!({})),
        (
            MockEndpoint::CreateInviteToken,
            sat,
            json!({"address_id": ADDRESS}),
        ),
        (MockEndpoint::CreateEmbedToken, Auth::None, json!({})),
    ] {
        post(&mock, endpoint, auth, body).await;
    }
    get(&mock, "/api/fabric/addresses?page_size=1", sat).await;
    get(&mock, "/api/fabric/subscribers", Auth::None).await;
    get(&mock, "/api/fabric/nothing", Auth::None).await;
    let counts: Vec<_> = MockEndpoint::ALL.iter().map(|e| mock.calls(*e)).collect();
    assert_eq!(counts, [1, 1, 2, 1, 1, 1, 1]);
}

// ---------------------------------------------------------------------------------------------
// TLS, HTTP/2, the handle

#[tokio::test]
async fn tls_serves_every_endpoint_over_http2() {
    let mock = MockSpace::start_tls().await.unwrap();
    assert_eq!(
        mock.space().url(),
        format!("https://localhost:{}", mock.addr().port())
    );
    assert!(mock.space().is_https());

    let created = post(
        &mock,
        MockEndpoint::CreateSubscriberToken,
        Auth::Basic,
        json!({"reference": "alice"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(created.version, Version::HTTP_2);
    let sat = created.str("token");
    assert_eq!(
        TokenHeader::parse(&sat).unwrap().channel(),
        Some("localhost")
    );

    let refreshed = refresh(&mock, &created.str("refresh_token")).await;
    assert_eq!(
        (refreshed.status, refreshed.version),
        (StatusCode::CREATED, Version::HTTP_2)
    );
    let sat = refreshed.str("token");

    for (endpoint, auth, body) in [
        (
            MockEndpoint::CreateGuestToken,
            Auth::Bearer(&sat),
            json!({"allowed_addresses": [ADDRESS]}),
        ),
        (
            MockEndpoint::CreateInviteToken,
            Auth::Bearer(&sat),
            json!({"address_id": ADDRESS}),
        ),
        (
            MockEndpoint::CreateEmbedToken,
            Auth::None,
            json!({"token": "c2c_abc"}),
        ),
    ] {
        let answer = post(&mock, endpoint, auth, body).await;
        assert_eq!(
            (answer.status, answer.version),
            (StatusCode::CREATED, Version::HTTP_2),
            "{endpoint:?}"
        );
        answer.str("token");
    }
    for (path, auth) in [
        ("/api/fabric/addresses", Auth::Bearer(&sat)),
        ("/api/fabric/subscribers", Auth::Basic),
    ] {
        let answer = get(&mock, path, auth).await;
        assert_eq!(
            (answer.status, answer.version),
            (StatusCode::OK, Version::HTTP_2)
        );
        assert!(!answer.json()["data"].as_array().unwrap().is_empty());
    }
    // Errors over TLS keep their shape.
    get(&mock, "/api/fabric/addresses", Auth::None)
        .await
        .assert_unauthorized();
    for endpoint in MockEndpoint::ALL {
        assert!(mock.calls(endpoint) >= 1, "{endpoint:?}");
    }
}

#[tokio::test]
async fn tls_client_of_another_mock_does_not_trust_this_one() {
    let mock = MockSpace::start_tls().await.unwrap();
    let other = MockSpace::start_tls().await.unwrap();
    let request = build(&mock, Method::GET, "/api/fabric/subscribers", Auth::Basic)
        .body(Full::<Bytes>::default())
        .unwrap();
    assert!(other.client().request(request).await.is_err());
    assert!(
        signalwire_auth::https_client::<Full<Bytes>>()
            .request(
                build(&mock, Method::GET, "/api/fabric/subscribers", Auth::Basic)
                    .body(Full::default())
                    .unwrap()
            )
            .await
            .is_err()
    );
}

#[tokio::test]
async fn plain_http_speaks_http1() {
    let mock = MockSpace::start().await.unwrap();
    assert_eq!(mock.space().url(), format!("http://{}", mock.addr()));
    let answer = get(&mock, "/api/fabric/subscribers", Auth::Basic).await;
    assert_eq!(
        (answer.status, answer.version),
        (StatusCode::OK, Version::HTTP_11)
    );
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<MockSpace>();
    assert_send_sync::<MockSpaceBuilder>();
    assert_send_sync::<MockEndpoint>();
    assert_send_sync::<Fault>();
}

#[tokio::test]
async fn debug_shows_no_secret() {
    let mock = MockSpace::start().await.unwrap();
    let pair = mock.mint("alice");
    let debug = format!("{mock:?}");
    let basic = mock.credentials().basic_header();
    let decoded = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &basic.as_bytes()["Basic ".len()..],
    )
    .unwrap();
    let api_token = String::from_utf8(decoded).unwrap();
    let api_token = api_token.split_once(':').unwrap().1;
    assert!(debug.contains(mock.credentials().project_id()), "{debug}");
    assert!(debug.contains(&mock.addr().port().to_string()), "{debug}");
    for secret in [
        api_token,
        pair.access_token(),
        pair.refresh_token().unwrap(),
    ] {
        assert!(!debug.contains(secret), "{debug}");
    }
    let builder = format!("{:?}", MockSpace::builder().credentials(mock.credentials()));
    assert!(!builder.contains(api_token), "{builder}");
}

#[tokio::test]
async fn dropping_the_mock_stops_the_server() {
    let mock = MockSpace::start().await.unwrap();
    let client = mock.client::<Full<Bytes>>();
    let uri = mock.space().endpoint("/api/fabric/subscribers").unwrap();
    let basic = mock.credentials().basic_header();
    let request = || {
        Request::get(uri.clone())
            .header(AUTHORIZATION, basic.clone())
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(
        client.request(request()).await.unwrap().status(),
        StatusCode::OK
    );

    // A request still being handled when the mock goes is cut, not left hanging.
    mock.inject(
        MockEndpoint::ListSubscribers,
        Fault::Delay(Duration::from_secs(3600)),
        1,
    );
    let in_flight = tokio::spawn({
        let client = client.clone();
        let request = request();
        async move { client.request(request).await }
    });
    let mut spins = 0;
    while mock.calls(MockEndpoint::ListSubscribers) < 2 {
        spins += 1;
        assert!(spins < 100_000, "the request never arrived");
        tokio::task::yield_now().await;
    }
    drop(mock);
    assert!(in_flight.await.unwrap().is_err());
    assert!(client.request(request()).await.is_err());
}
