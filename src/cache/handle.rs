//! The public handle to a cache.

use std::{
    collections::hash_map::RandomState,
    fmt,
    hash::BuildHasher,
    ops::Deref,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::{
    Refresh, TokenPair,
    core::DynRefresh,
    flight::{Need, Shared, WaitFuture},
    replica::{FirstMint, LeaseGuard, StoreLink, StoreStats, bounded},
    settings::{Hook, Margins, Settings, unit},
    state::{Phase, State},
};
use crate::{Error, StoreKey, StoredPair, TokenStore, error::Kind};

/// The current [`TokenPair`] of one subscriber, and the single-flight refresh that replaces it.
///
/// A `TokenCache` is a handle: clones share one cache. [`BearerAuthLayer`](crate::BearerAuthLayer)
/// reads it on every request without a lock or a clock read, and:
///
/// - past the *advisory* deadline (default 5 minutes before expiry, never more than half the
///   lifetime, with a small stable per-cache jitter), the first request starts a background
///   refresh and goes on with the still-valid token;
/// - past the *hard* deadline (default 30 s before expiry), requests wait for that refresh;
/// - on a 401 for the current token, one refresh runs and the request is replayed.
///
/// However many requests need a refresh at once, one refresh runs, in a task of its own: a
/// caller that is dropped or times out cancels nothing, and every waiter gets the same result.
/// A result is installed only over the pair it refreshed, so a slow refresh never overwrites a
/// newer pair. Transient failures are retried with capped, jittered exponential backoff (1 s
/// doubling to 30 s) while the current token keeps serving; a terminal failure makes every
/// request that needs a new token — past the hard deadline, or after a 401 — fail at once with
/// [`Error::is_reauthentication_needed`] until [`install`](Self::install) is called. (It does
/// not wait out the last seconds of the old token: the app should re-authenticate now.)
///
/// Deadlines are marked by a Tokio timer and refreshes run as Tokio tasks, so the cache must
/// be used inside a Tokio runtime with its time driver on (`Runtime::new`, `#[tokio::main]`,
/// or a builder with `enable_all()` / `enable_time()`). A timer or refresh lost because its
/// runtime shut down is re-armed by the next request.
///
/// # Idle sessions
///
/// By default a pair that requests have used is refreshed by its timer at the advisory
/// deadline, without waiting for a request; a pair nobody used since it was installed waits
/// for one. So a session that goes idle keeps its chain for one more lifetime (2 h 5 min for
/// SignalWire's refresh tokens) and then finds it broken, unless the refresher can start over
/// ([`SubscriberRefresher::with_remint`](crate::SubscriberRefresher::with_remint)).
/// [`keep_alive(true)`](TokenCacheBuilder::keep_alive) keeps an idle chain alive indefinitely;
/// `keep_alive(false)` refreshes only when requests come.
///
/// # What costs a refresh
///
/// - A refresher that hands back a pair already inside its refresh window is not called again
///   at once: the pair serves while it is valid, and the next attempt comes 10 s later (the
///   spacing google-cloud-rust uses). A pair handed back already expired is likewise not
///   refreshed again for 10 s; requests that need a token wait that long.
/// - A 401 for the current pair starts one refresh; the pair it produces is marked as the
///   answer to a 401, and a 401 for it within 30 s is passed back without another refresh,
///   replayable or not. Only a 401 marks a pair: [`refresh_now`](Self::refresh_now) does not.
/// - Past the hard deadline, a request that meets a transient failure waits for the next
///   backoff attempt if it is due within the attempt timeout of when the request began
///   waiting; otherwise it fails with [`Error::is_refresh_failed`].
/// - [`on_refresh`](TokenCacheBuilder::on_refresh) sees pairs in install order, one call at
///   a time: the last pair it saw is [`current`](Self::current) (unless one was installed by
///   hand).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use signalwire_auth::{RefreshError, TokenCache, TokenPair};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), signalwire_auth::Error> {
/// let pair = TokenPair::new("first", Instant::now(), Duration::from_secs(3600))?;
/// let cache = TokenCache::builder(pair, |_old: TokenPair| async move {
///     TokenPair::new("second", Instant::now(), Duration::from_secs(3600)).map_err(RefreshError::terminal)
/// })
/// .refresh_ahead(Duration::from_secs(600))
/// .on_refresh(|pair| println!("persist the new pair, valid until {:?}", pair.expires_at()))
/// .build();
///
/// let fresh = cache.refresh_now().await?;
/// assert_eq!(fresh.access_token(), "second");
/// assert_eq!(cache.stats().refreshes(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenCache {
    handle: Arc<Handle>,
}

/// What a `TokenCache` points at: the shared cache, one pointer away. Clones of one
/// `TokenCache` count on its handle; [`fork`](TokenCache::fork) makes another handle onto the
/// same cache, with a count of its own on a cache line of its own, so that threads cloning
/// and dropping per request do not all bounce one counter between their cores.
#[repr(align(64))]
struct Handle {
    shared: Arc<Shared>,
}

/// What a request must do before it is sent.
pub(crate) enum Ticket {
    /// Use the state that was loaded.
    Ready,
    /// Wait for this state instead.
    Wait(WaitFuture),
    Failed(Error),
}

/// Lets `arc_swap::Cache` hold a cache handle: each service clone keeps the last state it saw
/// and revalidates it with one relaxed pointer load.
#[derive(Clone)]
pub(crate) struct Current(Arc<Shared>);

impl Deref for Current {
    type Target = ArcSwap<State>;

    fn deref(&self) -> &Self::Target {
        &self.0.current
    }
}

pub(crate) type LocalCache = arc_swap::Cache<Current, Arc<State>>;

impl TokenCache {
    /// A cache that starts with `pair` and refreshes it with `refresher`, with default settings.
    pub fn new(pair: TokenPair, refresher: impl Refresh) -> Self {
        Self::builder(pair, refresher).build()
    }

    /// A cache with settings other than the defaults.
    pub fn builder(pair: TokenPair, refresher: impl Refresh) -> TokenCacheBuilder {
        TokenCacheBuilder::new(Some(pair), Arc::new(refresher))
    }

    /// A cache that starts from the pair stored under `key` and shares it with every replica
    /// using the same store (DESIGN.md, "Persistence and replicas"). Start it with
    /// [`TokenCacheBuilder::start`]: it adopts the stored pair if there is a usable one (no
    /// mint), and otherwise mints one with `refresher` ([`Refresh::mint`]) and stores it.
    ///
    /// ```
    /// use signalwire_auth::{
    ///     CreateSubscriberToken, MemoryStore, MockSpace, StoreKey, SubscriberRefresher,
    ///     TokenCache, TokenClient, mock::MockEndpoint,
    /// };
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// let mock = MockSpace::start().await?;
    /// let refresher = || {
    ///     let client = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
    ///     SubscriberRefresher::with_client(client).with_remint(CreateSubscriberToken::new("alice"))
    /// };
    /// let store = MemoryStore::new();
    /// let key = StoreKey::new(&mock.space(), "alice");
    ///
    /// // The first replica finds nothing stored: it mints, and stores the pair.
    /// let first = TokenCache::from_store(refresher(), store.clone(), key.clone()).start().await?;
    /// // The second (or the first, restarted) starts from the stored pair: no mint.
    /// let second = TokenCache::from_store(refresher(), store.clone(), key).start().await?;
    /// assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
    /// assert_eq!(first.current().access_token(), second.current().access_token());
    ///
    /// // Only one of them refreshes; the other adopts the result.
    /// first.refresh_now().await?;
    /// second.refresh_now().await?;
    /// assert_eq!(mock.calls(MockEndpoint::RefreshSubscriberToken), 1);
    /// assert_eq!(first.current().access_token(), second.current().access_token());
    /// assert_eq!(second.store_stats().unwrap().adopted(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_store(
        refresher: impl Refresh,
        store: impl TokenStore,
        key: StoreKey,
    ) -> TokenCacheBuilder {
        Self::unstarted(refresher).store(store, key)
    }

    /// A builder with no pair: it must get one from its store, or mint, in
    /// [`start`](TokenCacheBuilder::start).
    pub(crate) fn unstarted(refresher: impl Refresh) -> TokenCacheBuilder {
        TokenCacheBuilder::new(None, Arc::new(refresher))
    }

    /// A cache for a token that is never refreshed: a guest token, an API key, any bearer.
    ///
    /// Fails with [`Error::is_invalid_input`] if `token` is not an RFC 6750 bearer token.
    pub fn fixed(token: impl Into<String>) -> Result<Self, Error> {
        // Thirty years: far enough to mean "never", near enough not to overflow an Instant.
        let pair = TokenPair::new(
            token,
            Instant::now(),
            Duration::from_secs(30 * 365 * 86_400),
        )?;
        Ok(Self::from_shared(Shared::new(
            pair,
            None,
            Settings::fixed(),
            None,
        )))
    }

    /// A copy of the current pair (a refresh may replace it at any moment).
    pub fn current(&self) -> TokenPair {
        self.shared().current.load().pair.clone()
    }

    /// Installs `pair` by hand, for example after re-authenticating. Requests waiting for a
    /// refresh go on with it at once, a refresh still in flight for the previous pair is
    /// discarded when it completes, and a broken refresh chain is forgotten. `on_refresh` is not called: the caller already has the pair.
    /// With a [store](TokenCacheBuilder::store), the pair is written over the stored one
    /// from a task (inside a Tokio runtime), hand-installed pairs in install order.
    pub fn install(&self, pair: TokenPair) {
        let state = self.shared().install(pair);
        tracing::info!("token pair installed by hand");
        if self.shared().link.is_some() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(Arc::clone(self.shared()).publish_installed(Arc::clone(&state)));
            }
        }
        if self.shared().settings.keep_alive && tokio::runtime::Handle::try_current().is_ok() {
            self.shared().arm(&state);
        }
    }

    /// Refreshes now (joining a refresh already in flight) and returns the new pair.
    ///
    /// Fails with [`Error::is_reauthentication_needed`] when the chain is broken,
    /// [`Error::is_refresh_failed`] when the attempt failed transiently (the cache retries in the
    /// background), and [`Error::is_invalid_input`] for a cache made with
    /// [`fixed`](Self::fixed).
    pub async fn refresh_now(&self) -> Result<TokenPair, Error> {
        if self.shared().refresher.is_none() {
            return Err(Error::invalid_input("a fixed-token cache cannot refresh"));
        }
        let generation = self.shared().current.load().generation;
        let state = Arc::clone(self.shared())
            .await_token(generation, Need::Newer)
            .await?;
        Ok(state.pair.clone())
    }

    /// Counters since the cache was built.
    pub fn stats(&self) -> CacheStats {
        let counters = &self.shared().counters;
        CacheStats {
            attempts: counters.attempts.load(Ordering::Relaxed),
            refreshes: counters.refreshes.load(Ordering::Relaxed),
            failures: counters.failures.load(Ordering::Relaxed),
            replays: counters.replays.load(Ordering::Relaxed),
            generation: self.shared().current.load().generation,
        }
    }

    #[inline]
    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    fn from_shared(shared: Shared) -> Self {
        Self {
            handle: Arc::new(Handle {
                shared: Arc::new(shared),
            }),
        }
    }

    /// Another handle onto this same cache, whose clones count apart from this one's.
    pub(crate) fn fork(&self) -> Self {
        Self {
            handle: Arc::new(Handle {
                shared: Arc::clone(self.shared()),
            }),
        }
    }

    /// Where this handle's count is, for tests of [`fork`](Self::fork).
    #[cfg(test)]
    pub(crate) fn handle_address(&self) -> usize {
        Arc::as_ptr(&self.handle) as usize
    }

    /// Whether `other` is a handle to this same cache.
    #[cfg(feature = "pool")]
    pub(crate) fn same_as(&self, other: &TokenCache) -> bool {
        Arc::ptr_eq(self.shared(), other.shared())
    }

    /// The pool's bookkeeping on this cache, when it is a pool's entry.
    #[cfg(feature = "pool")]
    #[inline]
    pub(crate) fn pool_mark(&self) -> &super::core::PoolMark {
        &self.shared().pooled
    }

    /// The current state, for a caller without a [`LocalCache`] of its own (a pool's entry).
    #[cfg(feature = "pool")]
    #[inline]
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<State>> {
        self.shared().current.load()
    }

    /// Counters of the cache's use of its [store](TokenCacheBuilder::store); `None` without
    /// one.
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.shared().link.as_deref().map(StoreLink::stats)
    }

    pub(crate) fn local(&self) -> LocalCache {
        arc_swap::Cache::new(Current(Arc::clone(self.shared())))
    }

    pub(crate) fn is_refreshable(&self) -> bool {
        self.shared().refresher.is_some()
    }

    /// The fast path: one relaxed load and a comparison.
    #[inline]
    pub(crate) fn ticket(&self, state: &Arc<State>) -> Ticket {
        if state.phase() == Phase::Fresh {
            Ticket::Ready
        } else {
            self.slow_ticket(state)
        }
    }

    #[cold]
    fn slow_ticket(&self, state: &Arc<State>) -> Ticket {
        let phase = match state.phase() {
            Phase::Unarmed => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Ticket::Failed(Error::new(Kind::NoRuntime).with_detail(
                        "a refreshing TokenCache must be used inside a Tokio runtime",
                    ));
                }
                self.shared().arm(state)
            }
            phase => phase,
        };
        match phase {
            Phase::Unarmed | Phase::Fresh => Ticket::Ready,
            Phase::Advisory => {
                if state.claim_refresh() {
                    self.shared().kick(state);
                }
                Ticket::Ready
            }
            Phase::Hard | Phase::Expired => Ticket::Wait(Box::pin(
                Arc::clone(self.shared()).await_token(state.generation, Need::Valid),
            )),
        }
    }

    /// After a 401 for a request sent with `generation`: the state to replay with, once one
    /// refresh (shared with every other such request) has run. `None` for a fixed token.
    pub(crate) fn after_unauthorized(&self, generation: u64) -> Option<WaitFuture> {
        self.may_refresh_after_401(generation).then(|| {
            Box::pin(Arc::clone(self.shared()).await_token(generation, Need::After401)) as _
        })
    }

    /// A 401 starts a refresh unless the token cannot be refreshed, or the pair it was sent
    /// with is itself the answer to a 401 a moment ago: then the server refuses something other
    /// than the token's age (a missing scope), and an endpoint that always answers 401 must not
    /// cost one refresh per request. A 401 for a pair the cache has moved past costs nothing:
    /// the replay uses the current one.
    fn may_refresh_after_401(&self, generation: u64) -> bool {
        if !self.is_refreshable() {
            return false;
        }
        let current = self.shared().current.load();
        current.generation != generation || !current.is_recent_answer_to_401()
    }

    pub(crate) fn note_replay(&self) {
        self.handle
            .shared
            .counters
            .replays
            .fetch_add(1, Ordering::Relaxed);
    }

    /// After a 401 that cannot be replayed: start the refresh so the next request succeeds.
    pub(crate) fn refresh_in_background(&self, generation: u64) {
        let state = self.shared().current.load_full();
        if state.generation == generation && self.may_refresh_after_401(generation) {
            // Marked as a 401's answer like a replayed one, so the cool-down applies however
            // the 401 arrived.
            self.shared().kick_for(&state, true);
        }
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared().fmt(f)
    }
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Settings of a [`TokenCache`]; from [`TokenCache::builder`].
///
/// ```
/// use std::time::Duration;
/// use signalwire_auth::{RefreshError, TokenCache, TokenPair};
/// use tokio::time::Instant;
///
/// let pair = TokenPair::new("first", Instant::now(), Duration::from_secs(3600))?;
/// let cache = TokenCache::builder(pair, |_old: TokenPair| async {
///     Err::<TokenPair, _>(RefreshError::terminal("this example never refreshes"))
/// })
/// .refresh_ahead(Duration::from_secs(10 * 60))
/// .hard_margin(Duration::from_secs(60))
/// .backoff(Duration::from_millis(500), Duration::from_secs(20))
/// .attempt_timeout(Duration::from_secs(10))
/// .keep_alive(true)
/// .on_refresh(|pair| println!("persist: valid until {:?}", pair.expires_at()))
/// .build();
/// assert_eq!(cache.current().access_token(), "first");
/// # Ok::<(), signalwire_auth::Error>(())
/// ```
#[must_use = "call .build() to get the cache"]
pub struct TokenCacheBuilder {
    pair: Option<TokenPair>,
    refresher: Arc<dyn DynRefresh>,
    refresh_ahead: Duration,
    hard_margin: Duration,
    backoff_base: Duration,
    backoff_cap: Duration,
    attempt_timeout: Duration,
    jitter: bool,
    on_refresh: Option<Hook>,
    keep_alive: Option<bool>,
    store: Option<(Arc<dyn TokenStore>, StoreKey)>,
    lease_ttl: Duration,
}

impl TokenCacheBuilder {
    fn new(pair: Option<TokenPair>, refresher: Arc<dyn DynRefresh>) -> Self {
        TokenCacheBuilder {
            pair,
            refresher,
            refresh_ahead: Duration::from_secs(5 * 60),
            hard_margin: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(30),
            jitter: true,
            on_refresh: None,
            keep_alive: None,
            store: None,
            lease_ttl: Duration::from_secs(10),
        }
    }

    /// How long before expiry a request starts a background refresh (default 5 minutes). Capped
    /// at half the token's lifetime, so a 60 s SAT refreshes after 30 s.
    pub fn refresh_ahead(mut self, before_expiry: Duration) -> Self {
        self.refresh_ahead = before_expiry;
        self
    }

    /// How long before expiry requests stop using the token and wait for the refresh (default
    /// 30 s; at most half the refresh-ahead margin). Covers clock skew and time in flight.
    pub fn hard_margin(mut self, before_expiry: Duration) -> Self {
        self.hard_margin = before_expiry;
        self
    }

    /// The first delay after a transient failure and the most it grows to, doubling per failure
    /// (default 1 s and 30 s). A `Retry-After` from the server lengthens a delay, up to five
    /// minutes. A zero base retries at once, without pause: only for tests.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap.max(base);
        self
    }

    /// How long one refresh attempt may take before it counts as a transient failure (default
    /// 30 s). A refresher with a shorter timeout of its own fails first. Zero makes every attempt
    /// time out: don't.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Whether deadlines and backoff delays are jittered (default `true`). Jitter keeps many
    /// caches minted together from refreshing in lockstep; turn it off for exact schedules.
    pub fn jitter(mut self, enabled: bool) -> Self {
        self.jitter = enabled;
        self
    }

    /// Called with every pair a refresh installs, for example to persist rotated refresh
    /// tokens. Runs on the refresh task: keep it short, and do not block.
    pub fn on_refresh(mut self, hook: impl Fn(&TokenPair) + Send + Sync + 'static) -> Self {
        self.on_refresh = Some(Arc::new(hook));
        self
    }

    /// What the cache does when no request comes (DESIGN.md, "Idle sessions").
    ///
    /// - not set (the default): a pair that requests have used is refreshed by its timer at
    ///   the advisory deadline, without waiting for a request; a pair nobody used since it was
    ///   installed waits for a request. An app that stops sending requests lets its chain
    ///   lapse one lifetime later (2 h 5 min for SignalWire's refresh tokens), not before.
    /// - `keep_alive(true)`: every refreshed pair arms its own timer, so an idle cache keeps its
    ///   chain alive indefinitely (one refresh per lifetime, about every 1 h 55 min).
    /// - `keep_alive(false)`: refreshes only when requests come: the first request past the
    ///   advisory deadline starts one. An idle cache finds its chain broken once the refresh
    ///   token expires, unless the refresher can start over
    ///   ([`SubscriberRefresher::with_remint`](crate::SubscriberRefresher::with_remint)).
    pub fn keep_alive(mut self, enabled: bool) -> Self {
        self.keep_alive = Some(enabled);
        self
    }

    /// Shares the pair through `store` under `key`, with every cache (in this process or
    /// another) that uses the same store and key: the cache reads the stored pair before each
    /// refresh and refreshes only while it holds the key's lease (DESIGN.md, "Persistence
    /// and replicas"; [`TokenStore`] has the protocol). Without a store (the default) the
    /// cache keeps its pair to itself.
    ///
    /// With [`build`](Self::build) the cache starts from the builder's pair and meets the
    /// store at its first refresh; [`start`](Self::start) reads the store first.
    pub fn store(self, store: impl TokenStore, key: StoreKey) -> Self {
        self.shared_store(Arc::new(store), key)
    }

    /// [`store`](Self::store) with a store other caches hold too (a pool's entries).
    pub(crate) fn shared_store(mut self, store: Arc<dyn TokenStore>, key: StoreKey) -> Self {
        self.store = Some((store, key));
        self
    }

    /// How long a refresh lease lasts (default 10 s). A refresh under it gets half of it at
    /// most (and no more than the attempt timeout), so that its result is stored before the
    /// lease ends and another replica takes over.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(10));
        self
    }

    /// Builds the cache. Nothing is spawned until the first request.
    ///
    /// # Panics
    ///
    /// If the builder has no pair to start from (it came from [`TokenCache::from_store`]):
    /// use [`start`](Self::start) for those.
    pub fn build(mut self) -> TokenCache {
        let pair = self
            .pair
            .take()
            .expect("TokenCache::from_store builders start with .start().await, not .build()");
        let link = self
            .store
            .take()
            .map(|(store, key)| StoreLink::new(store, key, self.lease_ttl));
        self.assemble(pair, link)
    }

    /// Builds the cache from what its store holds: the stored pair if it is usable (no
    /// mint), else the builder's pair or, without one, a pair minted with
    /// [`Refresh::mint`]; either is stored for the other replicas. If another replica stores
    /// one first, that one is used. Replicas starting at once with nothing stored mint one
    /// pair between them: the one that takes the key's lease mints, and the others wait for
    /// its pair (for at most the lease TTL plus the attempt timeout, then they mint their own). If the store cannot be reached, the cache starts alone
    /// with the builder's or a minted pair, and shares once the store is back.
    ///
    /// Without a store this is [`build`](Self::build). Fails with the store's error when it
    /// cannot be reached and there is nothing else to start from, with
    /// [`Error::is_invalid_input`] when nothing usable is stored and the refresher cannot
    /// mint, and with the mint's failure
    /// ([`is_refresh_failed`](Error::is_refresh_failed) or
    /// [`is_reauthentication_needed`](Error::is_reauthentication_needed)).
    pub async fn start(self) -> Result<TokenCache, Error> {
        self.start_counting(&mut 0).await
    }

    /// [`start`](Self::start), adding to `mints` each [`Refresh::mint`] it calls (a pool counts
    /// the mints of its new entries).
    pub(crate) async fn start_counting(mut self, mints: &mut u64) -> Result<TokenCache, Error> {
        let Some((store, key)) = self.store.take() else {
            return Ok(self.build());
        };
        let link = StoreLink::new(store, key, self.lease_ttl);
        // Dropped with this future, it releases the lease from a task of its own.
        let mut lease = None;
        let started = self.first_shared_pair(&link, mints, &mut lease).await;
        if let Some(mut lease) = lease {
            lease.disarm();
            link.release().await;
        }
        Ok(self.assemble(started?, Some(link)))
    }

    /// The pair a cache with a store starts from (see [`start`](Self::start)). Sets `lease`
    /// when it took the key's lease, which the caller releases.
    async fn first_shared_pair(
        &mut self,
        link: &StoreLink,
        mints: &mut u64,
        lease: &mut Option<LeaseGuard>,
    ) -> Result<TokenPair, Error> {
        let adopt = |stored: &StoredPair| {
            let pair = stored.to_pair().ok()?;
            tracing::debug!(key = %link.key(), version = stored.version(), "cache starts from the stored pair");
            link.set_known(Some(stored.version()));
            Some(pair)
        };
        let mut asked = false;
        for _ in 0..3 {
            let expected = match link.load().await {
                Ok(Some(stored)) if stored.is_usable() => match adopt(&stored) {
                    Some(pair) => return Ok(pair),
                    None => 0,
                },
                Ok(found) => found.map_or(0, |stored| stored.version()),
                Err(error) if error.is_store_corrupt() => 0,
                Err(error) => {
                    tracing::warn!(key = %link.key(), error = %crate::error::Chain(&error), "token store unreachable at start; starting alone");
                    return self.first_pair(mints, None).await.map_err(|_| error);
                }
            };
            // Nothing usable is stored and this cache would mint: replicas starting at once
            // mint one pair between them, the one holding the lease, and the others wait for
            // it (and mint their own only if it does not come in time).
            if self.pair.is_none() && !asked {
                asked = true;
                match link.first_mint(self.attempt_timeout).await {
                    // Read again under the lease: a pair may have been stored meanwhile.
                    FirstMint::Leased => {
                        *lease = Some(link.lease_guard());
                        continue;
                    }
                    FirstMint::Stored(stored) => match adopt(&stored) {
                        Some(pair) => return Ok(pair),
                        None => continue,
                    },
                    FirstMint::Alone => {}
                }
            }
            // Under the lease, the mint must be stored before the lease may pass on.
            let deadline = lease
                .as_ref()
                .map(|_| link.holder_deadline(self.attempt_timeout));
            let pair = self.first_pair(mints, deadline).await?;
            match link.publish_first(&pair, expected).await {
                Ok(Ok(version)) => {
                    if version > 0 {
                        link.set_known(Some(version));
                    }
                    return Ok(pair);
                }
                // Another replica stored one first: the next round starts from it.
                Ok(Err(_theirs)) => continue,
                Err(_) => return Ok(pair),
            }
        }
        self.first_pair(mints, None).await
    }

    /// The builder's pair, or a minted one (within `deadline`, if any).
    async fn first_pair(
        &mut self,
        mints: &mut u64,
        deadline: Option<Duration>,
    ) -> Result<TokenPair, Error> {
        if let Some(pair) = self.pair.take() {
            return Ok(pair);
        }
        if !self.refresher.can_mint() {
            return Err(Error::invalid_input(
                "nothing usable is stored and the refresher cannot mint (Refresh::can_mint)",
            ));
        }
        *mints += 1;
        let minted = match deadline {
            Some(deadline) => bounded(deadline, self.refresher.mint_boxed()).await,
            None => self.refresher.mint_boxed().await,
        };
        minted.map_err(|error| {
            let kind = if error.is_terminal() {
                Kind::ReauthenticationNeeded
            } else {
                Kind::RefreshFailed
            };
            Error::new(kind).with_source(error)
        })
    }

    fn assemble(self, pair: TokenPair, link: Option<StoreLink>) -> TokenCache {
        let seed = RandomState::new().hash_one(0u8);
        let settings = Settings {
            margins: Margins {
                refresh_ahead: self.refresh_ahead,
                hard_margin: self.hard_margin,
                jitter: if self.jitter { unit(seed) } else { 0.0 },
            },
            backoff_base: self.backoff_base,
            backoff_cap: self.backoff_cap,
            attempt_timeout: self.attempt_timeout,
            jitter: self.jitter,
            seed,
            on_refresh: self.on_refresh,
            keep_alive: self.keep_alive == Some(true),
            timer_refresh: self.keep_alive != Some(false),
        };
        TokenCache::from_shared(Shared::new(pair, Some(self.refresher), settings, link))
    }
}

impl fmt::Debug for TokenCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCacheBuilder")
            .field("pair", &self.pair)
            .field("refresh_ahead", &self.refresh_ahead)
            .field("hard_margin", &self.hard_margin)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_cap", &self.backoff_cap)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("jitter", &self.jitter)
            .field("keep_alive", &self.keep_alive)
            .field("store_key", &self.store.as_ref().map(|(_, key)| key))
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

/// Counters of a [`TokenCache`], from [`TokenCache::stats`]. They are written before the
/// refresh they count wakes anyone, so a caller woken by it already sees them.
///
/// ```
/// use std::time::Duration;
/// use signalwire_auth::{RefreshError, TokenCache, TokenPair};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), signalwire_auth::Error> {
/// let pair = TokenPair::new("first", Instant::now(), Duration::from_secs(3600))?;
/// let cache = TokenCache::new(pair, |_old: TokenPair| async {
///     TokenPair::new("next", Instant::now(), Duration::from_secs(3600)).map_err(RefreshError::terminal)
/// });
/// assert_eq!(cache.stats().generation(), 0);
/// cache.refresh_now().await?;
/// let stats = cache.stats();
/// assert_eq!((stats.attempts(), stats.refreshes(), stats.failures()), (1, 1, 0));
/// assert_ne!(stats.generation(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    attempts: u64,
    refreshes: u64,
    failures: u64,
    replays: u64,
    generation: u64,
}

impl CacheStats {
    /// Refresh attempts started (each call of the refresher).
    pub fn attempts(&self) -> u64 {
        self.attempts
    }

    /// Refreshes whose pair was installed (with a [store](TokenCacheBuilder::store), pairs
    /// adopted from another replica and minted ones count too).
    pub fn refreshes(&self) -> u64 {
        self.refreshes
    }

    /// Attempts that failed, transiently or for good.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Requests that [`BearerAuth`](crate::BearerAuth) sent a second time after a 401.
    pub fn replays(&self) -> u64 {
        self.replays
    }

    /// The generation of the current pair: 0 for the first, and a different number for every
    /// pair installed after it. Compare generations for equality only: a refresh racing a
    /// hand-installed pair may make the numbers arrive out of order.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}
