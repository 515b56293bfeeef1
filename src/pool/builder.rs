//! `TokenPoolBuilder`, and the one place where a pool entry's `TokenCache` is made.

use std::{fmt, sync::Arc, time::Duration};

use tracing::Instrument;

use super::{TokenPool, stats::Counters};
use crate::{
    CreateSubscriberToken, Error, Refresh, RefreshError, StoreKey, SubscriberRefresher, TokenCache,
    TokenCacheBuilder, TokenClient, TokenPair, TokenStore,
    api::{DefaultService, SharedService, TokenService},
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
    store: Option<Arc<dyn TokenStore>>,
    max_subscribers: u64,
    idle_timeout: Duration,
    mint_backoff: (Duration, Duration),
}

impl<S> TokenPoolBuilder<S> {
    pub(crate) fn new(client: TokenClient<S>) -> Self {
        Self {
            client,
            template: CreateSubscriberToken::new(""),
            settings: None,
            store: None,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            mint_backoff: (Duration::from_secs(1), Duration::from_secs(30)),
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

    /// Shares every entry's pair through `store`, under
    /// [`StoreKey::new(space, reference)`](StoreKey::new): pools in other replicas (or this
    /// process after a restart) with the same store and space share each subscriber's refresh
    /// chain instead of minting their own, and an entry minted again after an eviction starts
    /// from its stored pair. A new entry reads the store first and mints only when nothing
    /// usable is stored ([`PoolStats::loaded`](crate::PoolStats::loaded) counts the others);
    /// each entry then refreshes only while it holds its subscriber's lease, as
    /// [`TokenCacheBuilder::store`] describes. The lease TTL is a cache setting
    /// ([`cache_settings`](Self::cache_settings) with
    /// [`lease_ttl`](TokenCacheBuilder::lease_ttl)). Default: no store, each entry keeps its
    /// pair to itself.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use signalwire_auth::{MemoryStore, MockSpace, TokenPool, mock::MockEndpoint};
    ///
    /// let mock = MockSpace::start().await?;
    /// let store = MemoryStore::new();
    /// let first = TokenPool::with_client(mock.token_client()).store(store.clone()).build();
    /// let second = TokenPool::with_client(mock.token_client()).store(store).build();
    ///
    /// let alice = first.cache("alice@example.com").await?; // minted, and stored
    /// let again = second.cache("alice@example.com").await?; // read from the store
    /// assert_eq!(alice.current().access_token(), again.current().access_token());
    /// assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    /// assert_eq!((second.stats().mints(), second.stats().loaded()), (0, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The most entries kept (default [`DEFAULT_MAX_SUBSCRIBERS`]); beyond it the least
    /// recently used go. At least 1.
    pub fn max_subscribers(mut self, max: u64) -> Self {
        self.max_subscribers = max.max(1);
        self
    }

    /// The backoff between failed mints of one subscriber (default 1 s, doubling up to 30 s,
    /// with jitter, and at least a 429's `Retry-After`): the next lookup after a failed mint
    /// mints again, but not sooner. A lookup that finds the next mint due within 5 s waits
    /// for it; one that finds it later fails at once with [`Error::is_mint_failed`] and the
    /// last failure as its source, and sends nothing. A mint that succeeds clears the count.
    /// Each is at most a day.
    pub fn mint_backoff(mut self, base: Duration, cap: Duration) -> Self {
        const DAY: Duration = Duration::from_secs(24 * 60 * 60);
        self.mint_backoff = (base.min(DAY), cap.max(base).min(DAY));
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
            // Every entry's refresher holds the client: one copy of its service for them all.
            client: self.client.map_service(SharedService::new),
            template: Arc::new(self.template),
            settings: self.settings,
            store: self.store,
            space: Arc::clone(&space),
        };
        TokenPool::new(
            Arc::new(minter),
            space,
            self.max_subscribers,
            self.idle_timeout,
            self.mint_backoff,
        )
    }
}

impl<S> fmt::Debug for TokenPoolBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPoolBuilder")
            .field("client", &self.client)
            .field("template", &self.template)
            .field("store", &self.store.is_some())
            .field("max_subscribers", &self.max_subscribers)
            .field("idle_timeout", &self.idle_timeout)
            .field("mint_backoff", &self.mint_backoff)
            .finish_non_exhaustive()
    }
}

/// Makes a new entry: `TokenPool` without the client's type parameter.
pub(crate) trait Mint: Send + Sync + 'static {
    /// The entry for `reference`, counting in `counters` the mints it made and whether it
    /// came from the store.
    fn mint<'a>(
        &'a self,
        reference: &'a Arc<str>,
        counters: &'a Counters,
    ) -> BoxFuture<'a, Result<TokenCache, Error>>;
}

struct Minter<S> {
    client: TokenClient<S>,
    /// Shared by every entry's refresher for its re-mints.
    template: Arc<CreateSubscriberToken>,
    settings: Option<CacheSettings>,
    store: Option<Arc<dyn TokenStore>>,
    /// The space host, for tracing.
    space: Arc<str>,
}

impl<S: TokenService> Minter<S> {
    /// The refresher of `reference`'s entry: it re-mints with the template when its chain
    /// breaks. Per entry: the client's clone and reference counts, never a copy of the
    /// template (a pool of 100,000 keeps one).
    fn refresher(&self, reference: &Arc<str>) -> Traced<S> {
        Traced(
            SubscriberRefresher::with_client(self.client.clone())
                .with_remint_template(Arc::clone(&self.template), Arc::clone(reference)),
        )
    }

    /// The pool's cache settings on an entry's builder: the only place they are applied.
    fn configure(&self, builder: TokenCacheBuilder) -> TokenCacheBuilder {
        match &self.settings {
            Some(apply) => apply(builder),
            None => builder,
        }
    }

    /// Without a store: mints the entry's first pair.
    async fn mint_alone(
        &self,
        reference: &Arc<str>,
        counters: &Counters,
    ) -> Result<TokenCache, Error> {
        let request = CreateSubscriberToken::clone(&self.template).for_reference(&**reference);
        tracing::debug!("minting a token for a new pool entry");
        Counters::add(&counters.mints);
        let minted = self.client.create_subscriber_token(&request).await?;
        tracing::debug!(
            expires_in_s = minted.pair().lifetime().as_secs(),
            "pool entry minted"
        );
        let builder = TokenCache::builder(minted.into_pair(), self.refresher(reference));
        Ok(self.configure(builder).build())
    }

    /// With a store: starts from the stored pair, minting only when none is usable.
    async fn start_shared(
        &self,
        store: &Arc<dyn TokenStore>,
        reference: &Arc<str>,
        counters: &Counters,
    ) -> Result<TokenCache, Error> {
        let key = StoreKey::new(self.client.space(), reference);
        let builder = self
            .configure(TokenCache::unstarted(self.refresher(reference)))
            .shared_store(Arc::clone(store), key);
        let mut mints = 0;
        let result = builder.start_counting(&mut mints).await;
        counters
            .mints
            .fetch_add(mints, std::sync::atomic::Ordering::Relaxed);
        if result.is_ok() && mints == 0 {
            tracing::debug!("pool entry started from the stored pair");
            Counters::add(&counters.loaded);
        }
        result
    }
}

impl<S: TokenService> Mint for Minter<S> {
    fn mint<'a>(
        &'a self,
        reference: &'a Arc<str>,
        counters: &'a Counters,
    ) -> BoxFuture<'a, Result<TokenCache, Error>> {
        let span =
            tracing::debug_span!("subscriber_mint", subscriber = %reference, space = %self.space);
        Box::pin(
            async move {
                let result = match &self.store {
                    None => self.mint_alone(reference, counters).await,
                    Some(store) => self.start_shared(store, reference, counters).await,
                };
                if let Err(error) = &result {
                    tracing::warn!(error = %crate::error::Chain(error), "pool entry mint failed");
                }
                result
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

    fn can_mint(&self) -> bool {
        self.0.can_mint()
    }

    fn mint(&self) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        let span = tracing::debug_span!(
            "subscriber_remint",
            subscriber = %self.0.remint_reference().unwrap_or_default(),
            space = %self.0.client().space().host()
        );
        self.0.mint().instrument(span)
    }
}
