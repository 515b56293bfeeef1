//! The refresh core against `MockSpace` (issue 8): idle sessions, unknown outcomes, error
//! chains that read once, and a randomized fault schedule with re-mint configured.
//!
//! Real sockets and paused time do not mix (the paused clock jumps while a socket is awaited),
//! so the clock runs while requests are in flight and is only moved, paused, between them.
#![cfg(feature = "test-util")]

mod common;

use std::{
    error::Error as StdError,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{advance, settle};
use http::{Request, StatusCode};
use http_body_util::Full;
use signalwire_auth::{
    BearerAuth, BearerAuthLayer, CreateSubscriberToken, HttpsClient, MockSpace, Refresh,
    RefreshError, ReplayBody, SubscriberRefresher, TokenCache, TokenCacheBuilder, TokenClient,
    TokenPair,
    mock::{Fault, MockEndpoint},
};
use tower::{BoxError, Layer, ServiceExt};

const MINUTE: Duration = Duration::from_secs(60);
const REFERENCE: &str = "idle@example.com";

/// An error and every source, `: `-separated, as anyhow's `{:#}` shows it.
fn levels(error: &(dyn StdError + 'static)) -> Vec<String> {
    let mut shown = vec![error.to_string()];
    let mut next = error.source();
    while let Some(cause) = next {
        shown.push(cause.to_string());
        next = cause.source();
    }
    shown
}

fn tokens(mock: &MockSpace) -> TokenClient<HttpsClient<Full<Bytes>>> {
    TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client())
}

type Client = BearerAuth<HttpsClient<ReplayBody<Full<Bytes>>>>;

fn client(mock: &MockSpace, cache: &TokenCache) -> Client {
    BearerAuthLayer::new(cache.clone())
        .for_space(&mock.space())
        .layer(mock.client())
}

async fn list_addresses(mock: &MockSpace, client: &Client) -> Result<StatusCode, BoxError> {
    get(
        &mock.space().endpoint("/api/fabric/addresses").unwrap(),
        client,
    )
    .await
}

async fn get(uri: &http::Uri, client: &Client) -> Result<StatusCode, BoxError> {
    let request = Request::get(uri.clone()).body(Full::default()).unwrap();
    Ok(client.clone().oneshot(request).await?.status())
}

/// Builds the cache and sends one request with it, so its pair counts as used.
async fn used(mock: &MockSpace, builder: TokenCacheBuilder) -> (TokenCache, Client) {
    let cache = builder.build();
    let client = client(mock, &cache);
    assert_eq!(list_addresses(mock, &client).await.unwrap(), StatusCode::OK);
    (cache, client)
}

/// Waits (on the running clock) until no refresh is in flight by the `Watched` count.
async fn none_in_flight(in_flight: &AtomicUsize) {
    for _ in 0..5_000 {
        if in_flight.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("a refresh never ended");
}

fn idle_cache(mock: &MockSpace) -> TokenCacheBuilder {
    TokenCache::builder(
        mock.mint(REFERENCE),
        SubscriberRefresher::with_client(tokens(mock)),
    )
    .jitter(false)
}

// Item 9: idle sessions.

#[tokio::test]
async fn a_used_cache_refreshes_on_its_timer_and_survives_going_idle() {
    let mock = MockSpace::start().await.unwrap();
    let (cache, client) = used(&mock, idle_cache(&mock)).await;
    // Idle past the advisory deadline (1 h 55 min): the timer refreshes without a request.
    advance(115 * MINUTE + Duration::from_secs(1)).await;
    settle(&cache).await;
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
    // Past the first refresh token's expiry (2 h 5 min): the chain is intact.
    advance(11 * MINUTE).await;
    assert_eq!(
        list_addresses(&mock, &client).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(cache.stats().failures(), 0);
}

#[tokio::test]
async fn keep_alive_keeps_an_idle_chain_alive_for_hours() {
    let mock = MockSpace::start().await.unwrap();
    let (kept, _) = used(&mock, idle_cache(&mock).keep_alive(true)).await;
    let (lapsing, _) = used(&mock, idle_cache(&mock)).await;
    // Ten idle hours, in half-hour steps so each timer fires near its deadline.
    for _ in 0..20 {
        advance(30 * MINUTE).await;
        settle(&kept).await;
        settle(&lapsing).await;
    }
    assert_eq!(kept.stats().refreshes(), 5, "one refresh per 1 h 55 min");
    let status = list_addresses(&mock, &client(&mock, &kept)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // Without keep-alive, the pair nobody used after the first refresh let its chain lapse.
    assert_eq!(lapsing.stats().refreshes(), 1);
    let error = list_addresses(&mock, &client(&mock, &lapsing))
        .await
        .unwrap_err();
    let error = error.downcast_ref::<signalwire_auth::Error>().unwrap();
    assert!(error.is_reauthentication_needed(), "{error}");
}

#[tokio::test]
async fn keep_alive_false_refreshes_only_when_requests_come() {
    let mock = MockSpace::start().await.unwrap();
    let (cache, client) = used(&mock, idle_cache(&mock).keep_alive(false)).await;
    advance(115 * MINUTE + Duration::from_secs(1)).await;
    settle(&cache).await;
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 0);
    // The first request past the advisory deadline starts it, and goes on with the old token.
    assert_eq!(
        list_addresses(&mock, &client).await.unwrap(),
        StatusCode::OK
    );
    settle(&cache).await;
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
}

// Item 5: unknown outcomes.

fn stalling_refresher(
    mock: &MockSpace,
    remint: bool,
) -> SubscriberRefresher<HttpsClient<Full<Bytes>>> {
    let refresher =
        SubscriberRefresher::with_client(tokens(mock)).with_timeout(Duration::from_millis(300));
    if remint {
        refresher.with_remint(CreateSubscriberToken::new(REFERENCE))
    } else {
        refresher
    }
}

#[tokio::test]
async fn a_422_after_an_unknown_outcome_re_mints_and_the_waiting_request_succeeds() {
    let mock = MockSpace::start().await.unwrap();
    let builder = TokenCache::builder(mock.mint(REFERENCE), stalling_refresher(&mock, true));
    let (_cache, client) = used(&mock, builder.jitter(false)).await;
    // The refresh rotates the token on the server, but its answer comes too late.
    mock.inject(
        MockEndpoint::RefreshSubscriberToken,
        Fault::Stall(Duration::from_secs(1)),
        1,
    );
    advance(2 * 60 * MINUTE + Duration::from_secs(1)).await;
    // Expired: the request waits through the lost answer, the 422 and the re-mint.
    assert_eq!(
        list_addresses(&mock, &client).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 2);
    assert_eq!(mock.reused_refresh_tokens(), 1, "presented again once");
    assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
}

#[tokio::test]
async fn without_re_mint_a_422_after_an_unknown_outcome_says_the_chain_may_be_spent() {
    let mock = MockSpace::start().await.unwrap();
    let cache = TokenCache::builder(mock.mint(REFERENCE), stalling_refresher(&mock, false))
        .jitter(false)
        .build();
    mock.inject(
        MockEndpoint::RefreshSubscriberToken,
        Fault::Stall(Duration::from_secs(1)),
        1,
    );
    // The first attempt times out after rotating; `refresh_now` waits for the retry (due in
    // 1 s), which presents the spent token and gets 422.
    let error = cache.refresh_now().await.unwrap_err();
    assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 2);
    assert!(error.is_reauthentication_needed(), "{error}");
    let shown = levels(&error).join(": ");
    assert!(
        shown.contains("may have spent the refresh token"),
        "{shown}"
    );
    assert!(shown.contains("with_remint"), "{shown}");
    assert!(
        error.api_error().is_some_and(|api| api.is_token_expired()),
        "{shown}"
    );
}

// Item 10: error chains read once, and the deepest level names the cause.

#[tokio::test]
async fn a_refresh_failure_chain_says_each_fact_once() {
    let mock = MockSpace::start().await.unwrap();
    mock.inject(
        MockEndpoint::RefreshSubscriberToken,
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        1,
    );
    let cache = idle_cache(&mock).backoff(10 * MINUTE, 10 * MINUTE).build();
    let error = cache.refresh_now().await.unwrap_err();
    let shown = levels(&error);
    let all = shown.join(": ");
    assert_eq!(all.matches("503").count(), 1, "{all}");
    assert_eq!(
        all.matches("status 503 Service Unavailable").count(),
        1,
        "{all}"
    );
    assert_eq!(all.matches("server_error").count(), 1, "{all}");
    // No level repeats the one below it.
    for pair in shown.windows(2) {
        assert!(!pair[0].contains(&pair[1]), "{all}");
    }
    assert!(error.is_refresh_failed());
}

/// Mints through `tokens`, which must fail below HTTP, and checks the deepest cause's words.
async fn assert_deepest_transport_cause(
    tokens: TokenClient<HttpsClient<Full<Bytes>>>,
    words: &str,
) {
    let error = tokens
        .create_subscriber_token(&CreateSubscriberToken::new(REFERENCE))
        .await
        .unwrap_err();
    assert!(error.is_transport());
    let shown = levels(&error);
    assert_eq!(shown.last().map(String::as_str), Some(words), "{shown:?}");
    assert!(
        !shown.join(": ").contains("could not be reached"),
        "{shown:?}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_named_as_the_deepest_cause() {
    let mock = MockSpace::start_tls().await.unwrap();
    // The crate's own client trusts the web PKI, not the mock's self-signed certificate.
    let tokens = TokenClient::new(mock.space(), mock.credentials());
    assert_deepest_transport_cause(tokens, "certificate not trusted (unknown issuer)").await;
}

#[tokio::test]
async fn a_closed_connection_is_named_as_the_deepest_cause() {
    let mock = MockSpace::start().await.unwrap();
    mock.inject(MockEndpoint::CreateSubscriberToken, Fault::Drop, 1);
    assert_deepest_transport_cause(tokens(&mock), "connection closed before the answer").await;
}

// The randomized fault schedule.

/// Wraps a refresher to count the refreshes in flight at once.
struct Watched<R> {
    inner: R,
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

struct Leaving(Arc<AtomicUsize>);

impl Drop for Leaving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<R: Refresh> Refresh for Watched<R> {
    async fn refresh(&self, current: &TokenPair) -> Result<TokenPair, RefreshError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let _leaving = Leaving(Arc::clone(&self.in_flight));
        self.inner.refresh(current).await
    }
}

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

const STALL: Duration = Duration::from_millis(600);
const ROUNDS: usize = 100;

async fn faults_never_fail_a_request_or_lose_the_chain(seed: u64) {
    let lifetime = 10 * MINUTE;
    // Every SAT lives 10 minutes. The client is told so for refreshed ones; a re-minted one
    // it believes lives SignalWire's default 2 hours, so its end comes as a 401 (refresh and
    // replay) rather than by the timer: both paths run.
    let mock = MockSpace::builder()
        .access_lifetime(lifetime)
        .refreshed_access_lifetime(lifetime)
        .refresh_lifetime(lifetime + 5 * MINUTE)
        .start()
        .await
        .unwrap();
    let mut schedule = Schedule(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);

    // Start from a refreshed pair, so the first lifetime is a short one too.
    let minted = mock.mint(REFERENCE);
    let first = tokens(&mock)
        .with_refreshed_lifetimes(lifetime, lifetime + 5 * MINUTE)
        .refresh_subscriber_token(minted.refresh_token().unwrap())
        .await
        .unwrap();

    // The refresh endpoint's answers, in order; never more than two failures in a row, so a
    // refresh started in the advisory window ends well before its pair's hard deadline.
    let mut faults = Vec::new();
    let mut failing = 0;
    for _ in 0..80 {
        let pick = if failing == 2 { 0 } else { schedule.next(10) };
        let fault = match pick {
            0..=3 => Fault::Delay(Duration::ZERO),
            4 => Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
            5 => Fault::Status(StatusCode::TOO_MANY_REQUESTS),
            6 => Fault::Garbage,
            7 => Fault::Drop,
            8 => Fault::Stall(STALL),
            _ => Fault::Status(StatusCode::UNPROCESSABLE_ENTITY),
        };
        failing = if pick <= 3 { 0 } else { failing + 1 };
        mock.inject(MockEndpoint::RefreshSubscriberToken, fault.clone(), 1);
        faults.push(fault);
    }

    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let refresher = Watched {
        inner: SubscriberRefresher::with_client(
            tokens(&mock).with_refreshed_lifetimes(lifetime, lifetime + 5 * MINUTE),
        )
        .with_timeout(Duration::from_millis(300))
        .with_remint(CreateSubscriberToken::new(REFERENCE)),
        in_flight: Arc::clone(&in_flight),
        most: Arc::clone(&most),
    };
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let hook = Arc::clone(&hooked);
    let cache = TokenCache::builder(first, refresher)
        .attempt_timeout(Duration::from_secs(5))
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .keep_alive(true)
        .on_refresh(move |pair: &TokenPair| {
            hook.lock().unwrap().push(pair.access_token().to_owned());
        })
        .build();
    let client = client(&mock, &cache);

    let uri = mock.space().endpoint("/api/fabric/addresses").unwrap();
    let mut advanced = Duration::ZERO;
    for round in 0..ROUNDS {
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (uri, client) = (uri.clone(), client.clone());
            requests.spawn(async move { get(&uri, &client).await });
        }
        while let Some(done) = requests.join_next().await {
            let status = done
                .unwrap()
                .unwrap_or_else(|e| panic!("seed {seed}, round {round}: a request failed: {e:?}"));
            assert_eq!(status, StatusCode::OK, "seed {seed}, round {round}");
        }
        // Nothing in flight while the clock jumps, so no answer is cut off by the jump.
        none_in_flight(&in_flight).await;
        let step = Duration::from_secs(schedule.next(300));
        advanced += step;
        advance(step).await;
    }
    none_in_flight(&in_flight).await;

    let used = mock
        .calls(MockEndpoint::RefreshSubscriberToken)
        .min(faults.len());
    let stalls = faults[..used]
        .iter()
        .filter(|f| matches!(f, Fault::Stall(_)))
        .count();
    assert!(
        mock.reused_refresh_tokens() <= stalls,
        "seed {seed}: {} spent tokens presented again, after {stalls} unknown outcomes",
        mock.reused_refresh_tokens()
    );
    assert!(
        cache.stats().refreshes() >= 10,
        "seed {seed}: {:?}",
        cache.stats()
    );
    assert_eq!(
        hooked.lock().unwrap().last().map(String::as_str),
        Some(cache.current().access_token()),
        "seed {seed}: the last pair the hook saw is the current one"
    );
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "seed {seed}: one refresh at a time"
    );
    eprintln!(
        "seed {seed}: {advanced:?} in {ROUNDS} rounds, {:?}; {used} refresh calls, {stalls} stalled after rotating, {} spent \
         tokens presented again, {} re-mints",
        cache.stats(),
        mock.reused_refresh_tokens(),
        mock.calls(MockEndpoint::CreateSubscriberToken),
    );
}

#[tokio::test]
async fn random_faults_never_fail_a_request_or_lose_the_chain() {
    // `FAULT_SEEDS=n` runs seeds 1 to n (default 3); a failure names its seed.
    let seeds = std::env::var("FAULT_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    for seed in 1..=seeds {
        faults_never_fail_a_request_or_lose_the_chain(seed).await;
    }
}
