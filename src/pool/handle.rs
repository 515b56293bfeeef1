//! The public handle to a pool: `TokenPool`.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use moka::{future::Cache, notification::RemovalCause, policy::EvictionPolicy};

use super::{
    PoolStats, Subscriber, TokenPoolBuilder,
    builder::Mint,
    index::Index,
    retry::{Failures, MINT_WAIT},
    stats::Counters,
    sweep,
};
#[cfg(feature = "https")]
use crate::{Credentials, Space};
use crate::{Error, TokenCache, TokenClient, bearer::Lookup, error::Kind};

/// One [`TokenCache`] per subscriber, made on first use by minting a Subscriber Access Token,
/// bounded in count and evicted when idle: for a backend that calls SignalWire on behalf of
/// many subscribers.
///
/// Each entry is a full `TokenCache` refreshed by a
/// [`SubscriberRefresher`](crate::SubscriberRefresher) that re-mints when its chain breaks
/// ([`with_remint`](crate::SubscriberRefresher::with_remint), with the pool's
/// [template](TokenPoolBuilder::template)), so every guarantee of the cache holds per
/// subscriber: refresh ahead of expiry, one refresh however many requests need it, one
/// refresh and one replay on a 401.
///
/// - [`cache`](Self::cache) returns the subscriber's cache, minting it first if needed. However
///   many lookups race for a new subscriber, one mint goes out; if it fails, every lookup that
///   waited for it fails with [`Error::is_mint_failed`], no entry is kept, and a later lookup
///   mints again, after a backoff ([`mint_backoff`](TokenPoolBuilder::mint_backoff)) so that a
///   failing subscriber's traffic does not become a flood of mints.
/// - [`BearerAuthLayer::pooled`](crate::BearerAuthLayer::pooled) sends, per request, the token
///   of the [`Subscriber`] in the request's extensions.
/// - At most [`max_subscribers`](TokenPoolBuilder::max_subscribers) entries are kept (the least
///   recently used go first), and an entry unused for
///   [`idle_timeout`](TokenPoolBuilder::idle_timeout) is evicted. Requests holding an evicted
///   entry's cache finish with it; the next lookup mints a new one.
///
/// Cheap to clone (one `Arc`); clones share the pool. Mint, refresh and failure events carry
/// `subscriber` (the reference) and `space` (the host) fields, never a token. The bound and
/// the evictions are [moka](https://docs.rs/moka)'s future cache; lookups go through a
/// sharded index in front of it, so a request costs about what a single `TokenCache` costs
/// (README, "Many subscribers").
///
/// Must be used inside a Tokio runtime with its time driver on, like `TokenCache`.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use signalwire_auth::{MockSpace, TokenPool, mock::MockEndpoint};
///
/// let mock = MockSpace::start().await?;
/// let pool = TokenPool::with_client(mock.token_client()).max_subscribers(1_000).build();
///
/// let alice = pool.cache("alice@example.com").await?;
/// let again = pool.cache("alice@example.com").await?;
/// assert_eq!(alice.current().access_token(), again.current().access_token());
/// pool.cache("bob@example.com").await?;
/// assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 2);
/// assert_eq!(pool.stats().live(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenPool {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) entries: Cache<Arc<str>, TokenCache>,
    pub(crate) book: Arc<Book>,
    minter: Arc<dyn Mint>,
    failures: Failures,
    space: Arc<str>,
    max_subscribers: u64,
    pub(crate) idle_timeout: Duration,
    sweeping: AtomicBool,
}

/// What the eviction listener needs, apart from the moka cache that calls it.
pub(crate) struct Book {
    pub(crate) index: Index,
    pub(crate) counters: Counters,
}

impl TokenPool {
    /// A pool minting through `space`'s Create Subscriber Token endpoint with `credentials`,
    /// over the crate's HTTPS client.
    #[cfg(feature = "https")]
    pub fn builder(space: Space, credentials: Credentials) -> TokenPoolBuilder {
        TokenPoolBuilder::new(TokenClient::new(space, credentials))
    }

    /// A pool minting and refreshing through `client`, which must have project credentials.
    pub fn with_client<S>(client: TokenClient<S>) -> TokenPoolBuilder<S> {
        TokenPoolBuilder::new(client)
    }

    pub(crate) fn new(
        minter: Arc<dyn Mint>,
        space: Arc<str>,
        max_subscribers: u64,
        idle_timeout: Duration,
        (backoff_base, backoff_cap): (Duration, Duration),
    ) -> Self {
        let book = Arc::new(Book {
            index: Index::new(),
            counters: Counters::default(),
        });
        let listener = Arc::clone(&book);
        let entries = Cache::builder()
            .max_capacity(max_subscribers)
            // Plain LRU: a new subscriber is always admitted (TinyLFU could turn it away and
            // make every request for it mint again).
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |reference: Arc<Arc<str>>, cache: TokenCache, cause| {
                if cause != RemovalCause::Replaced {
                    Counters::add(&listener.counters.evictions);
                    tracing::debug!(subscriber = %reference, ?cause, "pool entry evicted");
                }
                cache.pool_mark().evicted.store(true, Ordering::Relaxed);
                listener.index.remove(&reference, &cache);
            })
            .build();
        Self {
            inner: Arc::new(Inner {
                entries,
                book,
                minter,
                failures: Failures::new(backoff_base, backoff_cap, max_subscribers),
                space,
                max_subscribers,
                idle_timeout,
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// The cache of the subscriber `reference`, minting its first token if the pool has none.
    ///
    /// Fails with [`Error::is_mint_failed`] (the cause, an
    /// [`ApiError`](crate::ApiError) or a transport error, is its
    /// [`source`](std::error::Error::source)), also without minting while the subscriber's
    /// last mint failed and the next is not yet due
    /// ([`mint_backoff`](TokenPoolBuilder::mint_backoff)), and with
    /// [`Error::is_invalid_input`] for an empty reference.
    pub async fn cache(&self, reference: &str) -> Result<TokenCache, Error> {
        self.cache_for(&Subscriber::new(reference)).await
    }

    /// The front index alone: the subscriber's cache if it is there now.
    #[inline]
    pub(crate) fn find(&self, subscriber: &Subscriber) -> Option<TokenCache> {
        self.inner.book.index.get(subscriber)
    }

    /// Counts a request served by `cache` without the index (`recent`).
    #[inline]
    pub(crate) fn note_hit(&self, hash: u64, cache: &TokenCache) {
        self.inner.book.index.note_hit(hash, cache);
    }

    pub(crate) async fn cache_for(&self, subscriber: &Subscriber) -> Result<TokenCache, Error> {
        if let Some(cache) = self.find(subscriber) {
            return Ok(cache);
        }
        if subscriber.reference().is_empty() {
            return Err(Error::invalid_input("subscriber reference is empty"));
        }
        sweep::start(&self.inner);
        let inner = &self.inner;
        Counters::add(&inner.book.counters.misses);
        let reference = subscriber.shared_reference();
        if let Some(failed) = inner.failures.pending(reference).await {
            let wait = failed.retry_at - tokio::time::Instant::now();
            if wait > MINT_WAIT {
                return Err(Error::new(Kind::MintFailed)
                    .with_detail(format!(
                        "subscriber {:?}: its last mint failed; the next in {} s",
                        subscriber.reference(),
                        wait.as_secs()
                    ))
                    .with_source(failed.error));
            }
            tokio::time::sleep_until(failed.retry_at).await;
        }
        let mut minted = false;
        let init = async {
            minted = true;
            let counters = &inner.book.counters;
            match inner.minter.mint(reference, counters).await {
                Ok(cache) => {
                    inner
                        .book
                        .index
                        .insert(Arc::clone(reference), cache.clone());
                    inner.failures.succeeded(reference).await;
                    Ok(cache)
                }
                Err(error) => {
                    Counters::add(&counters.mint_failures);
                    // Recorded before the waiters hear of it, so that no lookup arriving after
                    // them mints before the backoff.
                    let error = Arc::new(error);
                    let delay = inner.failures.failed(reference, Arc::clone(&error)).await;
                    tracing::debug!(subscriber = %reference, retry_in_ms = delay.as_millis() as u64, "next mint after a backoff");
                    Err(error)
                }
            }
        };
        let result = inner
            .entries
            .try_get_with(Arc::clone(reference), init)
            .await;
        if minted {
            // Applies the bound now: moka otherwise evicts on its own schedule, and the pool
            // could hold more than `max_subscribers` in between.
            inner.entries.run_pending_tasks().await;
        }
        result.map_err(|shared| {
            Error::new(Kind::MintFailed)
                .with_detail(format!("subscriber {:?}", subscriber.reference()))
                .with_source(shared)
        })
    }

    /// [`cache_for`](Self::cache_for) in a task of its own, so that a request dropped while
    /// waiting cancels no mint, and so that the future is `Sync`.
    pub(crate) fn lookup(&self, subscriber: &Subscriber) -> Lookup {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Box::pin(std::future::ready(Err(Error::new(Kind::NoRuntime)
                .with_detail("a TokenPool must be used inside a Tokio runtime"))));
        };
        let pool = self.clone();
        let subscriber = subscriber.clone();
        let task = runtime.spawn(async move { pool.cache_for(&subscriber).await });
        Box::pin(async move {
            task.await.unwrap_or_else(|_| {
                Err(Error::new(Kind::MintFailed)
                    .with_detail("the mint task ended without a result (runtime shut down?)"))
            })
        })
    }

    /// Counters since the pool was built.
    pub fn stats(&self) -> PoolStats {
        let book = &self.inner.book;
        PoolStats {
            hits: book.index.hits(),
            misses: Counters::get(&book.counters.misses),
            mints: Counters::get(&book.counters.mints),
            loaded: Counters::get(&book.counters.loaded),
            mint_failures: Counters::get(&book.counters.mint_failures),
            evictions: Counters::get(&book.counters.evictions),
            live: book.index.len(),
        }
    }

    /// Applies pending evictions now (moka applies them on its own schedule, within a few
    /// lookups); [`stats`](Self::stats) then counts them.
    pub async fn run_pending_tasks(&self) {
        self.inner.entries.run_pending_tasks().await;
    }

    /// The bound on live entries.
    pub fn max_subscribers(&self) -> u64 {
        self.inner.max_subscribers
    }

    /// The time after its last use at which an entry is evicted.
    pub fn idle_timeout(&self) -> Duration {
        self.inner.idle_timeout
    }
}

impl Inner {
    pub(crate) fn start_sweeping(&self) -> bool {
        !self.sweeping.swap(true, Ordering::AcqRel)
    }
}

impl fmt::Debug for TokenPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPool")
            .field("space", &self.inner.space)
            .field("max_subscribers", &self.inner.max_subscribers)
            .field("idle_timeout", &self.inner.idle_timeout)
            .field("stats", &self.stats())
            .finish()
    }
}
