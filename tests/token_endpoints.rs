//! The token endpoints through `TokenClient` and `SubscriberRefresher`, against `MockSpace`:
//! a real hyper server on 127.0.0.1, over plain HTTP and over TLS.
//!
//! Time is paused only while no socket I/O is pending: a paused clock jumps to the next timer
//! whenever the runtime parks, and a park that is waiting for a loopback read would then fire
//! the client's timeout spuriously (it does, reliably, over TLS with HTTP/2). So a test pauses
//! to expire tokens (`pause`, `advance`, `resume`), and to run a call past its timeout once the
//! request is parked in the mock's injected delay.
#![cfg(feature = "test-util")]

use std::{future::Future, pin::pin, time::Duration};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use signalwire_auth::{
    CreateGuestToken, CreateInviteToken, CreateSubscriberToken, Credentials, Error, GuestAuth,
    HttpsClient, MockSpace, Refresh, RefreshError, SubscriberRefresher, TokenClient, TokenHeader,
    TokenPair,
    mock::{Fault, MockEndpoint},
};
use tokio::time::Instant;

const ADDRESS: &str = "c22d24f6-5a26-4f53-8008-b29530339efa";
const REFERENCE: &str = "alice@example.com";

async fn mock(tls: bool) -> MockSpace {
    MockSpace::builder().tls(tls).start().await.unwrap()
}

fn client(mock: &MockSpace) -> TokenClient<HttpsClient> {
    TokenClient::with_service(
        mock.space(),
        Some(mock.credentials()),
        mock.client::<Full<Bytes>>(),
    )
}

fn refresher(mock: &MockSpace) -> SubscriberRefresher<HttpsClient> {
    SubscriberRefresher::with_client(client(mock))
}

fn api_status(err: &Error) -> StatusCode {
    assert!(err.is_api(), "{err:?}");
    err.api_error().unwrap().status()
}

/// Jumps the clock by `by`, with no I/O in flight.
async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// Drives `call` until `endpoint` has received its request, then pauses the clock so that the
/// timers alone decide what happens next (the mock is sleeping on an injected delay).
async fn with_request_parked<F: Future>(
    mock: &MockSpace,
    endpoint: MockEndpoint,
    call: F,
) -> F::Output {
    let before = mock.calls(endpoint);
    let mut call = pin!(call);
    while mock.calls(endpoint) == before {
        tokio::select! {
            biased;
            out = &mut call => return out,
            () = tokio::task::yield_now() => {}
        }
    }
    tokio::time::pause();
    let out = call.await;
    tokio::time::resume();
    out
}

fn typ(token: &str) -> Option<String> {
    TokenHeader::parse(token).and_then(|h| h.typ().map(str::to_owned))
}

#[tokio::test]
async fn every_endpoint_succeeds_over_http_and_tls() {
    for tls in [false, true] {
        let mock = mock(tls).await;
        let client = client(&mock);
        assert_eq!(client.space().is_https(), tls);

        let sent = Instant::now();
        let minted = client
            .create_subscriber_token(&CreateSubscriberToken::new(REFERENCE).with_first_name("Al"))
            .await
            .unwrap();
        let again = client
            .create_subscriber_token(&CreateSubscriberToken::new(REFERENCE))
            .await
            .unwrap();
        assert_eq!(minted.subscriber_id(), again.subscriber_id());
        let sat = minted.pair().access_token();
        assert_eq!(typ(sat).as_deref(), Some("SAT"));
        assert_eq!(
            typ(minted.pair().refresh_token().unwrap()).as_deref(),
            Some("Refresh")
        );
        assert!(minted.pair().issued_at() >= sent);
        assert_eq!(minted.pair().lifetime(), TokenPair::DEFAULT_LIFETIME);

        let refreshed = client
            .refresh_subscriber_token(minted.pair().refresh_token().unwrap())
            .await
            .unwrap();
        assert_ne!(refreshed.access_token(), sat);
        assert_eq!(
            refreshed.refresh_expires_at(),
            Some(refreshed.issued_at() + TokenPair::REFRESH_TOKEN_LIFETIME)
        );

        let request = CreateGuestToken::new([ADDRESS]);
        let by_project = client
            .create_guest_token(&request, GuestAuth::Basic)
            .await
            .unwrap();
        let by_subscriber = client
            .create_guest_token(&request, GuestAuth::Bearer(refreshed.access_token()))
            .await
            .unwrap();
        assert_ne!(by_project.access_token(), by_subscriber.access_token());

        let invite = client
            .create_invite_token(
                &CreateInviteToken::new(ADDRESS).with_expires_at(unix_now() + 600),
                refreshed.access_token(),
            )
            .await
            .unwrap();
        assert_eq!(typ(&invite).as_deref(), Some("SAT"));

        let anonymous = TokenClient::with_service(mock.space(), None, mock.client());
        let embed = anonymous
            .create_embed_token("c2c_0123456789")
            .await
            .unwrap();
        assert!(!embed.is_empty());

        for (endpoint, calls) in [
            (MockEndpoint::CreateSubscriberToken, 2),
            (MockEndpoint::RefreshSubscriberToken, 1),
            (MockEndpoint::CreateGuestToken, 2),
            (MockEndpoint::CreateInviteToken, 1),
            (MockEndpoint::CreateEmbedToken, 1),
        ] {
            assert_eq!(mock.calls(endpoint), calls, "{endpoint:?}, tls {tls}");
        }
    }
}

#[tokio::test]
async fn documented_errors_over_http_and_tls() {
    for tls in [false, true] {
        let mock = mock(tls).await;
        let client = client(&mock);
        let pair = mock.mint(REFERENCE);
        let sat = pair.access_token();

        // Wrong project credentials: 401 from the Basic endpoints.
        let wrong = Credentials::new(mock.credentials().project_id(), "PTwrong").unwrap();
        let stranger = TokenClient::with_service(mock.space(), Some(wrong), mock.client());
        let err = stranger
            .create_subscriber_token(&CreateSubscriberToken::new(REFERENCE))
            .await
            .unwrap_err();
        assert_eq!(api_status(&err), StatusCode::UNAUTHORIZED);
        assert!(err.api_error().unwrap().is_unauthorized());
        let err = stranger
            .refresh_subscriber_token(pair.refresh_token().unwrap())
            .await
            .unwrap_err();
        assert!(err.api_error().unwrap().is_unauthorized(), "{err}");
        assert!(!format!("{err} {err:?}").contains(pair.refresh_token().unwrap()));

        // An access token where a refresh token belongs.
        let err = client.refresh_subscriber_token(sat).await.unwrap_err();
        let api = err.api_error().unwrap();
        assert!(api.is_validation() && api.is_not_a_refresh_token(), "{api}");
        assert_eq!(api.errors()[0].attribute(), Some("refresh_token"));
        assert!(!format!("{err:?}").contains(sat));

        // A spent refresh token.
        client
            .refresh_subscriber_token(pair.refresh_token().unwrap())
            .await
            .unwrap();
        let err = client
            .refresh_subscriber_token(pair.refresh_token().unwrap())
            .await
            .unwrap_err();
        assert!(err.api_error().unwrap().is_token_expired(), "{err}");
        assert_eq!(mock.reused_refresh_tokens(), 1);

        // A guest token is not a subscriber's: 403 where a SAT is needed.
        let guest = client
            .create_guest_token(&CreateGuestToken::new([ADDRESS]), GuestAuth::Basic)
            .await
            .unwrap();
        let err = client
            .create_invite_token(&CreateInviteToken::new(ADDRESS), guest.access_token())
            .await
            .unwrap_err();
        assert!(err.api_error().unwrap().is_forbidden(), "{err}");

        // A revoked SAT: 401.
        mock.revoke_access_tokens();
        let err = client
            .create_invite_token(&CreateInviteToken::new(ADDRESS), sat)
            .await
            .unwrap_err();
        assert!(err.api_error().unwrap().is_unauthorized(), "{err}");

        // Validation errors name their attribute.
        let err = client.create_embed_token("not-c2c").await.unwrap_err();
        let api = err.api_error().unwrap();
        assert!(api.is_validation(), "{api}");
        assert_eq!(api.errors()[0].attribute(), Some("token"));
        let err = client
            .create_subscriber_token(&CreateSubscriberToken::new(REFERENCE).with_expire_at(1))
            .await
            .unwrap_err();
        assert_eq!(
            err.api_error().unwrap().errors()[0].attribute(),
            Some("expire_at")
        );

        // Too many guest addresses never leave the client.
        let before = mock.calls(MockEndpoint::CreateGuestToken);
        let err = client
            .create_guest_token(&CreateGuestToken::new([ADDRESS; 11]), GuestAuth::Basic)
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{err:?}");
        assert_eq!(mock.calls(MockEndpoint::CreateGuestToken), before);
    }
}

/// What an error must be.
type Check = fn(&Error) -> bool;

#[tokio::test]
async fn injected_faults_give_typed_errors_and_then_clear() {
    for tls in [false, true] {
        let mock = mock(tls).await;
        let client = client(&mock).with_timeout(Duration::from_secs(5));
        let endpoint = MockEndpoint::CreateSubscriberToken;
        let request = CreateSubscriberToken::new(REFERENCE);
        let cases: [(Fault, Check); 5] = [
            (Fault::Status(StatusCode::INTERNAL_SERVER_ERROR), |e| {
                e.api_error().is_some_and(|a| a.is_server_error())
            }),
            (Fault::Status(StatusCode::TOO_MANY_REQUESTS), |e| {
                e.api_error().is_some_and(|a| {
                    a.is_rate_limited() && a.retry_after() == Some(Duration::from_secs(1))
                })
            }),
            (Fault::Status(StatusCode::UNAUTHORIZED), |e| {
                e.api_error().is_some_and(|a| a.is_unauthorized())
            }),
            (Fault::Garbage, Error::is_decode),
            (Fault::Drop, Error::is_transport),
        ];
        for (fault, expected) in cases {
            mock.inject(endpoint, fault.clone(), 1);
            let err = client.create_subscriber_token(&request).await.unwrap_err();
            assert!(expected(&err), "{fault:?}, tls {tls}: {err:?}");
            // The fault was used up: the next call goes through.
            client.create_subscriber_token(&request).await.unwrap();
        }
        // An answer slower than the client's timeout.
        mock.inject(endpoint, Fault::Delay(Duration::from_secs(30)), 1);
        let started = Instant::now();
        let call = client.create_subscriber_token(&request);
        let err = with_request_parked(&mock, endpoint, call)
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "tls {tls}: {err:?}");
        assert!(started.elapsed() >= Duration::from_secs(5));
        client.create_subscriber_token(&request).await.unwrap();
    }
}

fn classify(
    result: Result<TokenPair, RefreshError>,
) -> Result<TokenPair, (bool, Option<Duration>)> {
    result.map_err(|e| (e.is_terminal(), e.retry_after()))
}

#[tokio::test]
async fn refresher_classifies_each_fault_and_the_chain_goes_on() {
    for tls in [false, true] {
        let mock = mock(tls).await;
        let refresher = refresher(&mock).with_timeout(Duration::from_secs(5));
        let endpoint = MockEndpoint::RefreshSubscriberToken;
        let transient = (false, None);
        let terminal = (true, None);
        let cases = [
            (Fault::Status(StatusCode::INTERNAL_SERVER_ERROR), transient),
            (Fault::Status(StatusCode::BAD_GATEWAY), transient),
            (
                Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
                (false, Some(Duration::from_secs(1))),
            ),
            (
                Fault::Status(StatusCode::TOO_MANY_REQUESTS),
                (false, Some(Duration::from_secs(1))),
            ),
            (Fault::Garbage, transient),
            (Fault::Drop, transient),
            (Fault::Status(StatusCode::UNAUTHORIZED), terminal),
            (Fault::Status(StatusCode::FORBIDDEN), terminal),
            (Fault::Status(StatusCode::UNPROCESSABLE_ENTITY), terminal),
        ];
        let mut current = mock.mint(REFERENCE);
        for (fault, expected) in cases {
            mock.inject(endpoint, fault.clone(), 1);
            let outcome = classify(refresher.refresh(&current).await);
            assert_eq!(outcome.err(), Some(expected), "{fault:?}, tls {tls}");
            // These faults answer without reading the request: the refresh token is not
            // spent, so the same pair refreshes once the fault has cleared.
            current = refresher.refresh(&current).await.unwrap();
        }
        assert_eq!(mock.reused_refresh_tokens(), 0);
        assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 0);
    }
}

#[tokio::test]
async fn a_refresh_past_the_timeout_is_transient() {
    for tls in [false, true] {
        let mock = mock(tls).await;
        let refresher = refresher(&mock).with_timeout(Duration::from_secs(5));
        let endpoint = MockEndpoint::RefreshSubscriberToken;
        let current = mock.mint(REFERENCE);
        mock.inject(endpoint, Fault::Delay(Duration::from_secs(30)), 1);
        let err = with_request_parked(&mock, endpoint, refresher.refresh(&current))
            .await
            .unwrap_err();
        assert!(err.is_transient(), "tls {tls}: {err:?}");
        let source = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<Error>())
            .unwrap();
        assert!(source.is_timeout(), "{source:?}");
        // The delayed request has not been handled yet, so its refresh token is still good
        // and the chain goes on.
        let next = refresher.refresh(&current).await.unwrap();
        refresher.refresh(&next).await.unwrap();
        assert_eq!(mock.calls(endpoint), 3);
    }
}

#[tokio::test]
async fn a_lost_answer_breaks_the_chain_and_re_mint_mends_it() {
    let mock = mock(false).await;
    let current = mock.mint(REFERENCE);
    mock.inject(MockEndpoint::RefreshSubscriberToken, Fault::LoseAnswer, 1);
    let plain = refresher(&mock);
    let err = plain.refresh(&current).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // The server spent the refresh token before the answer was lost.
    let err = plain.refresh(&current).await.unwrap_err();
    assert!(err.is_terminal(), "{err:?}");
    assert_eq!(mock.reused_refresh_tokens(), 1);

    let remint = refresher(&mock).with_remint(CreateSubscriberToken::new(REFERENCE));
    let minted = remint.refresh(&current).await.unwrap();
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    remint.refresh(&minted).await.unwrap();
}

#[tokio::test]
async fn an_expired_refresh_token_is_terminal_without_re_mint() {
    let mock = mock(false).await;
    let current = mock.mint(REFERENCE);
    advance(TokenPair::REFRESH_TOKEN_LIFETIME + Duration::from_secs(1)).await;
    let err = refresher(&mock).refresh(&current).await.unwrap_err();
    assert!(err.is_terminal(), "{err:?}");
    let source = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<Error>())
        .unwrap();
    assert!(source.api_error().unwrap().is_token_expired(), "{source}");
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 0);
}

#[tokio::test]
async fn an_expired_refresh_token_is_re_minted_when_configured() {
    let mock = mock(true).await;
    let current = mock.mint(REFERENCE);
    advance(TokenPair::REFRESH_TOKEN_LIFETIME + Duration::from_secs(1)).await;
    let refresher = refresher(&mock).with_remint(CreateSubscriberToken::new(REFERENCE));
    let minted = refresher.refresh(&current).await.unwrap();
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    assert_eq!(minted.lifetime(), TokenPair::DEFAULT_LIFETIME);
    // The re-minted pair starts a new chain.
    let next = refresher.refresh(&minted).await.unwrap();
    assert_eq!(typ(next.access_token()).as_deref(), Some("SAT"));
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 2);

    // A re-mint that fails is classified like a refresh.
    advance(TokenPair::REFRESH_TOKEN_LIFETIME + Duration::from_secs(1)).await;
    mock.inject(
        MockEndpoint::CreateSubscriberToken,
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        1,
    );
    let err = refresher.refresh(&next).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn refreshed_lifetimes_follow_the_client_setting() {
    let short = Duration::from_secs(4);
    let mock = MockSpace::builder()
        .refreshed_access_lifetime(short)
        .refresh_lifetime(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    let current = mock.mint(REFERENCE);
    let documented = client(&mock)
        .refresh_subscriber_token(current.refresh_token().unwrap())
        .await
        .unwrap();
    assert_eq!(documented.lifetime(), TokenPair::DEFAULT_LIFETIME);

    let tuned = client(&mock).with_refreshed_lifetimes(short, Duration::from_secs(10));
    let next = tuned
        .refresh_subscriber_token(documented.refresh_token().unwrap())
        .await
        .unwrap();
    assert_eq!(next.lifetime(), short);
    assert_eq!(
        next.refresh_expires_at().unwrap() - next.issued_at(),
        Duration::from_secs(10)
    );
    // The server agrees: past the tuned lifetime the SAT is refused.
    advance(short + Duration::from_secs(1)).await;
    let err = tuned
        .create_invite_token(&CreateInviteToken::new(ADDRESS), next.access_token())
        .await
        .unwrap_err();
    assert_eq!(api_status(&err), StatusCode::UNAUTHORIZED);
}
