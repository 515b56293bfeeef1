//! `TokenPoolBuilder`, and the one place where a pool entry's `TokenCache` is made.

use std::{fmt, sync::Arc, time::Duration};

use tracing::Instrument;

use super::TokenPool;
use crate::{
    CreateSubscriberToken, Error, Refresh, RefreshError, SubscriberRefresher, TokenCache,
    TokenCacheBuilder, TokenClient, TokenPair,
    api::{DefaultService, TokenService},
    cache::BoxFuture,
};

/// The default bound on live entries.
pub const DEFAULT_MAX_SUBSCRIBERS: u64 = 10_000;

/// The default time after its last use at which an entry is evicted: well inside a refresh
/// token's 2 h 5 min, so an idle entry goes before its timer would spend a refresh token.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub(crate) type CacheSettings = Arc<dyn Fn(TokenCacheBuilder) -> TokenCacheBuilder + Send + Sync>;

/// Settings of a [`TokenPool`]; from [`TokenPool::builder`] or [`TokenPool::with_client`].
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use std::time::Duration;
/// use signalwire_auth::{CreateSubscriberToken, MockSpace, TokenPool};
///
/// let mock = MockSpace::start().await?;
/// let pool = TokenPool::with_client(mock.token_client())
///     // Every entry's mint and re-mint asks for this; the reference is filled per subscriber.
///     .template(CreateSubscriberToken::new("").with_application_id("my-app"))
///     .cache_settings(|cache| cache.refresh_ahead(Duration::from_secs(10 * 60)))
///     .max_subscribers(50_000)
///     .idle_timeout(Duration::from_secs(15 * 60))
///     .build();
/// let alice = pool.cache("alice@example.com").await?;
/// assert!(alice.current().refresh_token().is_some());
/// # Ok(())
/// # }
/// ```
#[must_use = "call .build() to get the pool"]
pub struct TokenPoolBuilder<S = DefaultService> {
    client: TokenClient<S>,
    template: CreateSubscriberToken,
    settings: Option<CacheSettings>,
    max_subscribers: u64,
    idle_timeout: Duration,
}

impl<S> TokenPoolBuilder<S> {
    pub(crate) fn new(client: TokenClient<S>) -> Self {
        Self {
            client,
            template: CreateSubscriberToken::new(""),
            settings: None,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// What every entry's Create Subscriber Token asks for (scope, application, region, …),
    /// for its first mint and for its re-mints when a refresh chain breaks. Its reference is
    /// replaced by each subscriber's (see [`CreateSubscriberToken::for_reference`]). Default:
    /// nothing but the reference.
    ///
    /// An `expire_at` here is absolute, so it would apply to every entry alike: leave it unset.
    pub fn template(mut self, template: CreateSubscriberToken) -> Self {
        self.template = template;
        self
    }

    /// The [`TokenCache`] settings applied to every entry, as a function of its builder:
    /// `|cache| cache.refresh_ahead(..).keep_alive(false)`.
    pub fn cache_settings(
        mut self,
        settings: impl Fn(TokenCacheBuilder) -> TokenCacheBuilder + Send + Sync + 'static,
    ) -> Self {
        self.settings = Some(Arc::new(settings));
        self
    }

    /// The most entries kept (default [`DEFAULT_MAX_SUBSCRIBERS`]); beyond it the least
    /// recently used go. At least 1.
    pub fn max_subscribers(mut self, max: u64) -> Self {
        self.max_subscribers = max.max(1);
        self
    }

    /// How long after its last use an entry is evicted (default [`DEFAULT_IDLE_TIMEOUT`]):
    /// between this and 1.25 times this, as idleness is checked four times per timeout.
    /// At least 4 ms.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.max(Duration::from_millis(4));
        self
    }
}

impl<S: TokenService> TokenPoolBuilder<S> {
    /// Builds the pool. Nothing is minted or spawned until the first lookup.
    pub fn build(self) -> TokenPool {
        let space: Arc<str> = self.client.space().host().into();
        let minter = Minter {
            client: self.client,
            template: Arc::new(self.template),
            settings: self.settings,
            space: Arc::clone(&space),
        };
        TokenPool::new(
            Arc::new(minter),
            space,
            self.max_subscribers,
            self.idle_timeout,
        )
    }
}

impl<S> fmt::Debug for TokenPoolBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPoolBuilder")
            .field("client", &self.client)
            .field("template", &self.template)
            .field("max_subscribers", &self.max_subscribers)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// Mints a new entry: `TokenPool` without the client's type parameter.
pub(crate) trait Mint: Send + Sync + 'static {
    fn mint<'a>(&'a self, reference: &'a Arc<str>) -> BoxFuture<'a, Result<TokenCache, Error>>;
}

struct Minter<S> {
    client: TokenClient<S>,
    /// Shared by every entry's refresher for its re-mints.
    template: Arc<CreateSubscriberToken>,
    settings: Option<CacheSettings>,
    /// The space host, for tracing.
    space: Arc<str>,
}

impl<S: TokenService> Minter<S> {
    /// The entry for `reference`, from its first pair: the only place an entry's cache is
    /// built, from the template and the pool's cache settings.
    fn entry(&self, reference: &Arc<str>, pair: TokenPair) -> TokenCache {
        // Per entry: the client's clone and reference counts, never a copy of the template
        // (a pool of 100,000 keeps one).
        let refresher = Traced(
            SubscriberRefresher::with_client(self.client.clone())
                .with_remint_template(Arc::clone(&self.template), Arc::clone(reference)),
        );
        let builder = TokenCache::builder(pair, refresher);
        match &self.settings {
            Some(apply) => apply(builder),
            None => builder,
        }
        .build()
    }
}

impl<S: TokenService> Mint for Minter<S> {
    fn mint<'a>(&'a self, reference: &'a Arc<str>) -> BoxFuture<'a, Result<TokenCache, Error>> {
        let span =
            tracing::debug_span!("subscriber_mint", subscriber = %reference, space = %self.space);
        Box::pin(
            async move {
                let request = CreateSubscriberToken::clone(&self.template).for_reference(&**reference);
                tracing::debug!("minting a token for a new pool entry");
                match self.client.create_subscriber_token(&request).await {
                    Ok(minted) => {
                        tracing::debug!(
                            expires_in_s = minted.pair().lifetime().as_secs(),
                            "pool entry minted"
                        );
                        Ok(self.entry(reference, minted.into_pair()))
                    }
                    Err(error) => {
                        tracing::warn!(error = %crate::error::Chain(&error), "pool entry mint failed");
                        Err(error)
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// An entry's refresher, whose events carry the subscriber and the space (both read from the
/// refresher, so an entry keeps no copy of either).
struct Traced<S>(SubscriberRefresher<S>);

impl<S: TokenService> Refresh for Traced<S> {
    fn refresh(
        &self,
        current: &TokenPair,
    ) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        let span = tracing::debug_span!(
            "subscriber_refresh",
            subscriber = %self.0.remint_reference().unwrap_or_default(),
            space = %self.0.client().space().host()
        );
        self.0.refresh(current).instrument(span)
    }
}
