//! `SubscriberRefresher`: [`Refresh`](crate::Refresh) over SignalWire's refresh endpoint.

use std::{
    borrow::Cow,
    collections::hash_map::RandomState,
    error::Error as StdError,
    fmt,
    hash::BuildHasher,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower::BoxError;
use tower_service::Service;

use crate::{
    CreateSubscriberToken, Error, Refresh, RefreshError, SubscriberToken, TokenClient, TokenPair,
    api::{DefaultService, TokenService},
    error::Kind,
};
#[cfg(feature = "https")]
use crate::{Credentials, Space};

/// [`Refresh`] over SignalWire's refresh endpoint
/// (`POST /api/fabric/subscribers/tokens/refresh`, with project credentials), with an optional
/// re-mint when the refresh chain breaks.
///
/// Each refresh spends the current pair's refresh token and returns a new pair (SAT 2 hours,
/// refresh token 2 hours 5 minutes). Failures are classified for the cache:
///
/// - **transient** (the cache retries with backoff): a transport error, the per-call timeout,
///   429 (with its `Retry-After`), 408, any 5xx, and a 2xx answer that cannot be read;
/// - **terminal** (new tokens are needed): 401, 403, 422 (`token_expired`,
///   `not_a_refresh_token` or any other), other 4xx, and a current pair without a refresh
///   token.
///
/// With [`with_remint`](Self::with_remint), a terminal failure is followed by a Create
/// Subscriber Token call, whose own failure is classified the same way.
///
/// Refreshes log `tracing` events at debug level (start, success, failure, re-mint); no event
/// carries a token.
///
/// # Example
///
/// ```no_run
/// use signalwire_auth::{CreateSubscriberToken, Credentials, Space, SubscriberRefresher};
///
/// # fn main() -> Result<(), signalwire_auth::Error> {
/// let refresher = SubscriberRefresher::new(Space::new("example")?, Credentials::from_env()?)
///     .with_remint(CreateSubscriberToken::new("alice@example.com"));
/// # drop(refresher);
/// # Ok(())
/// # }
/// ```
///
/// Without the `https` feature, name the service: `SubscriberRefresher<MyService>`.
pub struct SubscriberRefresher<S = DefaultService> {
    client: TokenClient<S>,
    remint: Option<Remint>,
    unknown: Arc<UnknownOutcome>,
}

/// What a re-mint asks for: a request of its own, or a template shared by many refreshers
/// (a pool's entries) with this one's reference, so that each keeps a reference count rather
/// than a copy of the template.
#[derive(Clone)]
enum Remint {
    Request(Arc<CreateSubscriberToken>),
    #[cfg(feature = "pool")]
    Template {
        template: Arc<CreateSubscriberToken>,
        reference: Arc<str>,
    },
}

impl Remint {
    fn reference(&self) -> &str {
        match self {
            Self::Request(request) => request.reference(),
            #[cfg(feature = "pool")]
            Self::Template { reference, .. } => reference,
        }
    }

    /// The request to send; a template's copy is made per re-mint, which is rare.
    fn request(&self) -> Cow<'_, CreateSubscriberToken> {
        match self {
            Self::Request(request) => Cow::Borrowed(request),
            #[cfg(feature = "pool")]
            Self::Template {
                template,
                reference,
            } => Cow::Owned(CreateSubscriberToken::clone(template).for_reference(&**reference)),
        }
    }
}

/// The refresh token whose last presentation ended with an unknown outcome (timed out, or cut
/// off after it was sent), by a keyed hash so that no copy of the token is kept: the server
/// may have spent it, so a 422 for it next is no surprise, and presenting it a third time is
/// not worth a try when re-mint can start over.
#[derive(Default)]
struct UnknownOutcome {
    hasher: RandomState,
    last: Mutex<Option<Presented>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Presented {
    key: u64,
    /// How many presentations in a row ended unknown.
    times: u32,
}

impl UnknownOutcome {
    fn key(&self, token: &str) -> u64 {
        self.hasher.hash_one(token)
    }

    /// How many presentations of `key` in a row ended unknown.
    fn unknown_times(&self, key: u64) -> u32 {
        match *lock(&self.last) {
            Some(presented) if presented.key == key => presented.times,
            _ => 0,
        }
    }

    fn set(&self, key: u64, unknown: bool) {
        let mut last = lock(&self.last);
        if unknown {
            let times = match *last {
                Some(presented) if presented.key == key => presented.times + 1,
                _ => 1,
            };
            *last = Some(Presented { key, times });
        } else if last.is_some_and(|presented| presented.key == key) {
            *last = None;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only plain data behind it: a panic cannot leave it half-written.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks a presentation as unknown unless it finished: the cache's attempt timeout drops the
/// future while the request may already be at the server.
struct PresentationGuard<'a> {
    unknown: &'a UnknownOutcome,
    key: u64,
    finished: bool,
}

impl Drop for PresentationGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.unknown.set(self.key, true);
        }
    }
}

/// Whether a failed call may have reached the server and been acted on: a timeout, or a
/// transport failure other than failing to connect.
fn outcome_unknown(error: &Error) -> bool {
    match error.kind() {
        Kind::Timeout => true,
        Kind::Transport => !failed_to_connect(error),
        _ => false,
    }
}

fn failed_to_connect(error: &Error) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(cause) = next {
        if let Some(client) = cause.downcast_ref::<hyper_util::client::legacy::Error>() {
            return client.is_connect();
        }
        next = cause.source();
    }
    false
}

#[cfg(feature = "https")]
impl SubscriberRefresher {
    /// Refreshes through `space`'s refresh endpoint with `credentials`, over the crate's HTTPS
    /// client.
    pub fn new(space: Space, credentials: Credentials) -> Self {
        Self::with_client(TokenClient::new(space, credentials))
    }
}

impl<S> SubscriberRefresher<S> {
    /// Refreshes through `client`, which must have project credentials.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use signalwire_auth::{
    ///     CreateSubscriberToken, MockSpace, SubscriberRefresher, TokenCache, TokenClient,
    ///     mock::MockEndpoint,
    /// };
    ///
    /// let mock = MockSpace::start().await?;
    /// let client = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
    /// let refresher = SubscriberRefresher::with_client(client)
    ///     .with_remint(CreateSubscriberToken::new("alice@example.com"));
    /// let cache = TokenCache::new(mock.mint("alice@example.com"), refresher);
    ///
    /// let first = cache.refresh_now().await?;
    /// assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
    ///
    /// // The chain breaks (here: a refresh token that was spent elsewhere); the refresher
    /// // mints a new pair instead of failing.
    /// let elsewhere = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
    /// elsewhere.refresh_subscriber_token(first.refresh_token().unwrap_or_default()).await?;
    /// let reminted = cache.refresh_now().await?;
    /// assert_ne!(reminted.access_token(), first.access_token());
    /// assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_client(client: TokenClient<S>) -> Self {
        Self {
            client,
            remint: None,
            unknown: Arc::default(),
        }
    }

    /// On a terminal refresh failure (an expired or refused refresh token), mints a fresh pair
    /// with `request` instead of failing.
    ///
    /// An `expire_at` in `request` is absolute, so every re-mint would ask for that same
    /// instant; leave it unset to get SignalWire's 2-hour default each time.
    pub fn with_remint(mut self, request: CreateSubscriberToken) -> Self {
        self.remint = Some(Remint::Request(Arc::new(request)));
        self
    }

    /// [`with_remint`](Self::with_remint) with `template` for `reference`, the template shared.
    #[cfg(feature = "pool")]
    pub(crate) fn with_remint_template(
        mut self,
        template: Arc<CreateSubscriberToken>,
        reference: Arc<str>,
    ) -> Self {
        self.remint = Some(Remint::Template {
            template,
            reference,
        });
        self
    }

    /// The reference a re-mint asks for, if re-mint is on.
    #[cfg(feature = "pool")]
    pub(crate) fn remint_reference(&self) -> Option<&str> {
        self.remint.as_ref().map(Remint::reference)
    }

    /// Bounds each refresh (and re-mint) call (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.with_timeout(timeout);
        self
    }

    /// The client the refresher calls through.
    pub fn client(&self) -> &TokenClient<S> {
        &self.client
    }
}

impl<S, B> SubscriberRefresher<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    async fn refresh_or_remint(&self, current: &TokenPair) -> Result<TokenPair, RefreshError> {
        let key = current.refresh_token().map(|token| self.unknown.key(token));
        let unknown_before = key.map_or(0, |key| self.unknown.unknown_times(key));
        if unknown_before >= 2 && self.remint.is_some() {
            // Presented twice already, both times with no answer: the server has most likely
            // spent it, and re-minting costs no more than a third try.
            tracing::debug!(
                space = %self.client.space(),
                "refresh token presented twice without an answer; re-minting instead"
            );
            return self.remint(None).await;
        }
        tracing::debug!(space = %self.client.space(), "refreshing subscriber token");
        let refreshed = match (current.refresh_token(), key) {
            (Some(token), Some(key)) => {
                let mut guard = PresentationGuard {
                    unknown: &self.unknown,
                    key,
                    finished: false,
                };
                let result = self.client.refresh_subscriber_token(token).await;
                guard.finished = true;
                self.unknown
                    .set(key, result.as_ref().err().is_some_and(outcome_unknown));
                result
            }
            _ => Err(Error::new(Kind::ReauthenticationNeeded)
                .with_detail("the current token pair has no refresh token")),
        };
        let refreshed = refreshed.map_err(|error| {
            if unknown_before > 0 && error.is_api() {
                // The answer to a token the previous attempt may have spent.
                Error::new(Kind::Api)
                    .with_detail(
                        "the previous refresh attempt's outcome is unknown (timed out or cut \
                         off after it was sent), so it may have spent the refresh token: \
                         configure SubscriberRefresher::with_remint, or install a new pair",
                    )
                    .with_source(error)
            } else {
                error
            }
        });
        let error = match refreshed.map_err(classify) {
            Ok(pair) => {
                tracing::debug!(
                    expires_in_s = pair.lifetime().as_secs(),
                    "subscriber token refreshed"
                );
                return Ok(pair);
            }
            Err(error) => error,
        };
        tracing::debug!(
            error = %crate::error::Chain(&error),
            terminal = error.is_terminal(),
            "subscriber token refresh failed"
        );
        if self.remint.is_none() || !error.is_terminal() {
            return Err(error);
        }
        self.remint(Some(error)).await
    }

    /// Mints a fresh pair with the configured request, after `refresh_failure` if any.
    async fn remint(
        &self,
        refresh_failure: Option<RefreshError>,
    ) -> Result<TokenPair, RefreshError> {
        let Some(remint) = self.remint.as_ref() else {
            return Err(
                refresh_failure.unwrap_or_else(|| RefreshError::terminal("no re-mint configured"))
            );
        };
        tracing::debug!(space = %self.client.space(), "re-minting subscriber token");
        match self.client.create_subscriber_token(&remint.request()).await {
            Ok(minted) => {
                tracing::debug!(
                    expires_in_s = minted.pair().lifetime().as_secs(),
                    "subscriber token re-minted"
                );
                Ok(SubscriberToken::into_pair(minted))
            }
            Err(e) => {
                let error = classify(e);
                tracing::debug!(
                    error = %crate::error::Chain(&error),
                    terminal = error.is_terminal(),
                    "subscriber token re-mint failed"
                );
                Err(error)
            }
        }
    }
}

impl<S: TokenService> Refresh for SubscriberRefresher<S> {
    fn refresh(
        &self,
        current: &TokenPair,
    ) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        self.refresh_or_remint(current)
    }

    /// With [`with_remint`](Self::with_remint).
    fn can_mint(&self) -> bool {
        self.remint.is_some()
    }

    /// Create Subscriber Token with the re-mint request.
    fn mint(&self) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        self.remint(None)
    }
}

/// Whether trying the same call again can help.
fn classify(error: Error) -> RefreshError {
    match error.kind() {
        Kind::Transport | Kind::Timeout | Kind::Decode => RefreshError::transient(error),
        Kind::Api => {
            let (status, retry_after) = match error.api_error() {
                Some(api) => (api.status(), api.retry_after()),
                None => return RefreshError::terminal(error),
            };
            let transient = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
                || status.is_server_error();
            match (transient, retry_after) {
                (true, Some(delay)) => RefreshError::transient(error).with_retry_after(delay),
                (true, None) => RefreshError::transient(error),
                (false, _) => RefreshError::terminal(error),
            }
        }
        _ => RefreshError::terminal(error),
    }
}

impl<S: Clone> Clone for SubscriberRefresher<S> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            remint: self.remint.clone(),
            unknown: Arc::clone(&self.unknown),
        }
    }
}

impl<S> fmt::Debug for SubscriberRefresher<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberRefresher")
            .field("client", &self.client)
            .field(
                "remint_reference",
                &self.remint.as_ref().map(Remint::reference),
            )
            .finish()
    }
}

#[cfg(feature = "https")]
const _: () = {
    const fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
    const fn assert_refresh<T: Refresh>() {}
    assert_shareable::<TokenClient>();
    assert_shareable::<SubscriberRefresher>();
    assert_refresh::<SubscriberRefresher>();
};

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use serde_json::json;
    use tokio::time::Instant;

    use super::*;
    use crate::api::testing::{
        API_TOKEN, Fake, NEXT_REFRESH, NEXT_SAT, REFRESH, Reply, SAT, client,
    };

    const SUBSCRIBER: &str = "d7c5a2e1-0b8f-4a3c-9e6d-1f2a3b4c5d6e";
    const MINTED_SAT: &str = "eyJ0eXAiOiJTQVQifQ..iv.minted-sat.tag";
    const MINTED_REFRESH: &str = "eyJ0eXAiOiJSZWZyZXNoIn0..iv.minted-refresh.tag";

    fn refresher(fake: &Fake) -> SubscriberRefresher<Fake> {
        SubscriberRefresher::with_client(client(fake))
    }

    fn current() -> TokenPair {
        TokenPair::new(SAT, Instant::now(), TokenPair::DEFAULT_LIFETIME)
            .unwrap()
            .with_refresh_token(REFRESH, TokenPair::REFRESH_TOKEN_LIFETIME)
            .unwrap()
    }

    fn refreshed() -> Reply {
        Reply::json(
            201,
            json!({"token": NEXT_SAT, "refresh_token": NEXT_REFRESH}),
        )
    }

    fn minted() -> Reply {
        Reply::json(
            200,
            json!({"subscriber_id": SUBSCRIBER, "token": MINTED_SAT, "refresh_token": MINTED_REFRESH}),
        )
    }

    fn validation(code: &str) -> Reply {
        Reply::json(
            422,
            json!({"errors": [{"type": "validation_error", "code": code,
                "message": "refresh token refused", "attribute": "refresh_token", "url": null}]}),
        )
    }

    #[derive(Debug, PartialEq)]
    enum Expect {
        Transient(Option<Duration>),
        Terminal,
    }

    /// Every failure the refresh endpoint can produce, and how it must be classified.
    fn failures() -> Vec<(&'static str, Reply, Expect)> {
        vec![
            ("transport", Reply::Fail, Expect::Transient(None)),
            ("timeout", Reply::Hang, Expect::Transient(None)),
            (
                "429",
                Reply::json(429, json!({"error": "Too Many Requests"})).with_retry_after("7"),
                Expect::Transient(Some(Duration::from_secs(7))),
            ),
            ("408", Reply::raw(408, ""), Expect::Transient(None)),
            ("500", Reply::raw(500, "oops"), Expect::Transient(None)),
            (
                "503",
                Reply::raw(503, "").with_retry_after("2"),
                Expect::Transient(Some(Duration::from_secs(2))),
            ),
            (
                "garbage 2xx",
                Reply::raw(201, "{\"tok"),
                Expect::Transient(None),
            ),
            (
                "401",
                Reply::json(401, json!({"error": "Unauthorized"})),
                Expect::Terminal,
            ),
            (
                "403",
                Reply::json(
                    403,
                    json!({"errors": [{"detail": "missing scope", "status": "403"}]}),
                ),
                Expect::Terminal,
            ),
            (
                "422 token_expired",
                validation("token_expired"),
                Expect::Terminal,
            ),
            (
                "422 not_a_refresh_token",
                validation("not_a_refresh_token"),
                Expect::Terminal,
            ),
            ("422 other", validation("invalid"), Expect::Terminal),
            ("404", Reply::raw(404, "not here"), Expect::Terminal),
        ]
    }

    fn expectation(error: &RefreshError) -> Expect {
        if error.is_terminal() {
            Expect::Terminal
        } else {
            Expect::Transient(error.retry_after())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_failure_is_classified() {
        for (name, reply, expect) in failures() {
            let fake = Fake::new([reply]);
            let error = refresher(&fake).refresh(&current()).await.unwrap_err();
            assert_eq!(expectation(&error), expect, "{name}: {error}");
            assert_eq!(fake.calls(), 1, "{name}");
            let source = std::error::Error::source(&error).unwrap();
            assert!(source.downcast_ref::<Error>().is_some(), "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_spends_the_refresh_token_for_a_new_pair() {
        let fake = Fake::new([refreshed()]);
        let sent = Instant::now();
        let pair = refresher(&fake).refresh(&current()).await.unwrap();
        assert_eq!(pair.access_token(), NEXT_SAT);
        assert_eq!(pair.refresh_token(), Some(NEXT_REFRESH));
        assert_eq!(pair.expires_at(), sent + TokenPair::DEFAULT_LIFETIME);
        let seen = fake.seen(0);
        assert_eq!(seen.path, "/api/fabric/subscribers/tokens/refresh");
        assert_eq!(seen.body, json!({"refresh_token": REFRESH}));
    }

    #[tokio::test]
    async fn a_pair_without_refresh_token_is_terminal_without_a_call() {
        let fake = Fake::new([refreshed()]);
        let bare = TokenPair::new(SAT, Instant::now(), Duration::from_secs(60)).unwrap();
        let error = refresher(&fake).refresh(&bare).await.unwrap_err();
        assert!(error.is_terminal());
        // The cause is the source: the chain says it once.
        let chain = crate::error::Chain(&error).to_string();
        assert!(chain.contains("no refresh token"), "{chain}");
        assert_eq!(fake.calls(), 0);
    }

    #[tokio::test]
    async fn terminal_failures_re_mint_when_configured() {
        let terminal = failures()
            .into_iter()
            .filter(|(_, _, expect)| *expect == Expect::Terminal);
        for (name, reply, _) in terminal {
            let fake = Fake::new([reply, minted()]);
            let refresher = refresher(&fake)
                .with_remint(CreateSubscriberToken::new("alice@example.com").with_region("eu"));
            let pair = refresher.refresh(&current()).await.unwrap();
            assert_eq!(pair.access_token(), MINTED_SAT, "{name}");
            assert_eq!(pair.refresh_token(), Some(MINTED_REFRESH), "{name}");
            assert_eq!(fake.calls(), 2, "{name}");
            let mint = fake.seen(1);
            assert_eq!(mint.path, "/api/fabric/subscribers/tokens");
            assert_eq!(
                mint.body,
                json!({"reference": "alice@example.com", "region": "eu"})
            );
        }

        let fake = Fake::new([minted()]);
        let bare = TokenPair::new(SAT, Instant::now(), Duration::from_secs(60)).unwrap();
        let pair = refresher(&fake)
            .with_remint(CreateSubscriberToken::new("alice@example.com"))
            .refresh(&bare)
            .await
            .unwrap();
        assert_eq!(pair.access_token(), MINTED_SAT);
        assert_eq!(fake.calls(), 1);
    }

    /// Refreshes once with re-mint configured; the outcome and how many calls were made.
    async fn refresh_with_remint(replies: [Reply; 2]) -> (RefreshError, usize) {
        let fake = Fake::new(replies);
        let refresher = refresher(&fake).with_remint(CreateSubscriberToken::new("a"));
        let error = refresher.refresh(&current()).await.unwrap_err();
        (error, fake.calls())
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_never_re_mint() {
        let transient = failures()
            .into_iter()
            .filter(|(_, _, expect)| *expect != Expect::Terminal);
        for (name, reply, expect) in transient {
            let (error, calls) = refresh_with_remint([reply, minted()]).await;
            assert_eq!(expectation(&error), expect, "{name}");
            assert_eq!(calls, 1, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_re_mint_is_classified_the_same_way() {
        for (name, reply, expect) in failures() {
            let (error, calls) = refresh_with_remint([validation("token_expired"), reply]).await;
            assert_eq!(expectation(&error), expect, "{name}: {error}");
            assert_eq!(calls, 2, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_applies_to_each_call() {
        let fake = Fake::new([Reply::Hang]);
        let started = Instant::now();
        let error = refresher(&fake)
            .with_timeout(Duration::from_secs(2))
            .refresh(&current())
            .await
            .unwrap_err();
        assert!(error.is_transient());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn events_and_debug_carry_no_token() {
        // Tracing caches each callsite's interest, process-wide, when it is first hit; with at
        // most one dispatcher alive it asks only the hitting thread's default, so another test's
        // thread could cache "never". A second, inert dispatcher makes every registration ask
        // all live dispatchers, this test's included.
        let _anchor = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();

        // The error echoes the refresh token back; it must be cut out before it is logged.
        let echo = Reply::json(
            422,
            json!({"errors": [{"code": "token_expired", "message": format!("{REFRESH} expired")}]}),
        );
        let fake = Fake::new([echo, minted()]);
        let refresher = refresher(&fake).with_remint(
            CreateSubscriberToken::new("alice@example.com").with_password("pw-secret"),
        );
        let pair = refresher.refresh(&current()).await.unwrap();

        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        for event in [
            "refreshing subscriber token",
            "subscriber token refresh failed",
            "re-minting subscriber token",
            "subscriber token re-minted",
        ] {
            assert!(log.contains(event), "{event} missing from {log}");
        }
        let shown = format!("{log} {refresher:?} {pair:?}");
        for secret in [
            SAT,
            REFRESH,
            MINTED_SAT,
            MINTED_REFRESH,
            API_TOKEN,
            "pw-secret",
            "refresh-cipher",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    /// The same classification through the crate's hyper client and a real hyper server.
    ///
    /// The clock runs, since pausing it while a socket read is pending would let it jump to the
    /// client's timeout; so the call that hangs is left to the tests over `service_fn` and to
    /// `tests/token_endpoints.rs`.
    #[cfg(feature = "test-util")]
    #[tokio::test]
    async fn each_failure_is_classified_over_real_http() {
        let (replies, cases): (Vec<_>, Vec<_>) = failures()
            .into_iter()
            .filter(|(_, reply, _)| !matches!(reply, Reply::Hang))
            .map(|(name, reply, expect)| (reply, (name, expect)))
            .unzip();
        let fake = Fake::new(replies.into_iter().chain([refreshed()]));
        let space = fake.serve().await;
        let refresher = SubscriberRefresher::with_client(TokenClient::with_service(
            space,
            Some(crate::api::testing::credentials()),
            crate::https_client(),
        ));
        for (name, expect) in &cases {
            let error = refresher.refresh(&current()).await.unwrap_err();
            assert_eq!(expectation(&error), *expect, "{name}: {error}");
        }
        // The endpoint recovered: the chain goes on.
        let pair = refresher.refresh(&current()).await.unwrap();
        assert_eq!(pair.access_token(), NEXT_SAT);
        assert_eq!(fake.calls(), cases.len() + 1);
    }
}
