//! What a cache holds: the current state, the refresher, the settings, the counters, and the
//! ordered hand-off of new pairs to the `on_refresh` hook.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::{
    Refresh, RefreshError, TokenPair,
    replica::StoreLink,
    settings::Settings,
    state::{Origin, State},
};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `Refresh` made object safe, so that `TokenCache` needs no type parameter.
pub(crate) trait DynRefresh: Send + Sync + 'static {
    fn refresh_boxed<'a>(
        &'a self,
        current: &'a TokenPair,
    ) -> BoxFuture<'a, Result<TokenPair, RefreshError>>;

    fn can_mint(&self) -> bool;

    fn mint_boxed(&self) -> BoxFuture<'_, Result<TokenPair, RefreshError>>;
}

impl<R: Refresh> DynRefresh for R {
    fn refresh_boxed<'a>(
        &'a self,
        current: &'a TokenPair,
    ) -> BoxFuture<'a, Result<TokenPair, RefreshError>> {
        Box::pin(self.refresh(current))
    }

    fn can_mint(&self) -> bool {
        Refresh::can_mint(self)
    }

    fn mint_boxed(&self) -> BoxFuture<'_, Result<TokenPair, RefreshError>> {
        Box::pin(self.mint())
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) attempts: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) replays: AtomicU64,
}

/// Keeps what every request reads on a cache line of its own, away from the reference counts
/// that request futures write: shared, a written line costs every other core a miss.
#[repr(align(128))]
pub(crate) struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The locks here are never held across a point that could leave their data half-written, so
/// a poisoned one is still sound.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cache's data, below the flight that refreshes it.
pub(crate) struct Core {
    pub(crate) current: Padded<ArcSwap<State>>,
    pub(crate) refresher: Option<Arc<dyn DynRefresh>>,
    pub(crate) settings: Settings,
    pub(crate) counters: Counters,
    /// The store replicas share the pair through, if any. Boxed: most caches have none, and
    /// a pool holds many caches.
    pub(crate) link: Option<Box<StoreLink>>,
    generations: AtomicU64,
    /// Wakes waiters when a pair is installed by hand, so they need not wait out a refresh of
    /// the pair it replaced.
    pub(crate) installed: Notify,
    hooks: Mutex<HookQueue>,
    /// A pool's bookkeeping, when the cache is one of its entries.
    #[cfg(feature = "pool")]
    pub(crate) pooled: PoolMark,
}

/// What a [`TokenPool`](crate::TokenPool) notes on each of its entries. Kept on the cache, not
/// in the pool's index, so that a pooled service that remembers the entry it last used
/// (`pool::recent`) reaches it without the index.
#[cfg(feature = "pool")]
#[derive(Default)]
pub(crate) struct PoolMark {
    /// The sweep epoch of the last request that used the entry (`pool::sweep`).
    pub(crate) used: std::sync::atomic::AtomicU32,
    /// Set once the pool has let go of the entry: services that remember it look it up
    /// again, and its timer no longer refreshes ahead of requests.
    pub(crate) evicted: std::sync::atomic::AtomicBool,
}

#[cfg(feature = "pool")]
impl PoolMark {
    #[inline]
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }
}

/// Pairs waiting for the hook, in install order, and whether a task is calling it now.
#[derive(Default)]
struct HookQueue {
    pending: VecDeque<TokenPair>,
    calling: bool,
}

impl Core {
    pub(crate) fn new(
        pair: TokenPair,
        refresher: Option<Arc<dyn DynRefresh>>,
        settings: Settings,
        link: Option<StoreLink>,
    ) -> Self {
        let margins = refresher.as_ref().map(|_| settings.margins);
        Self {
            current: Padded(ArcSwap::from_pointee(State::new(
                pair,
                0,
                margins,
                Origin::Given,
            ))),
            refresher,
            settings,
            counters: Counters::default(),
            link: link.map(Box::new),
            generations: AtomicU64::new(1),
            installed: Notify::new(),
            hooks: Mutex::default(),
            #[cfg(feature = "pool")]
            pooled: PoolMark::default(),
        }
    }

    /// A new state for `pair`, with the next generation number.
    pub(crate) fn state_for(&self, pair: TokenPair, origin: Origin) -> State {
        let margins = self.refresher.as_ref().map(|_| self.settings.margins);
        State::new(
            pair,
            self.generations.fetch_add(1, Ordering::Relaxed),
            margins,
            origin,
        )
    }

    /// Installs `pair` by hand and wakes everyone waiting for a newer pair.
    pub(crate) fn install(&self, pair: TokenPair) -> Arc<State> {
        let state = Arc::new(self.state_for(pair, Origin::Given));
        self.current.store(Arc::clone(&state));
        self.installed.notify_waiters();
        state
    }

    /// Queues `pair` for the hook. Called in install order (under the flight lock), so the hook
    /// sees pairs in that order however the tasks that installed them are scheduled.
    pub(crate) fn queue_for_hook(&self, pair: &TokenPair) {
        if self.settings.on_refresh.is_some() {
            lock(&self.hooks).pending.push_back(pair.clone());
        }
    }

    /// Calls the hook with every queued pair, oldest first, unless another task is already
    /// doing so (it will take the pairs queued meanwhile).
    pub(crate) fn call_hooks(&self) {
        let Some(hook) = &self.settings.on_refresh else {
            return;
        };
        {
            let mut queue = lock(&self.hooks);
            if queue.calling || queue.pending.is_empty() {
                return;
            }
            queue.calling = true;
        }
        let mut calling = Calling(Some(&self.hooks));
        loop {
            let pair = {
                let mut queue = lock(&self.hooks);
                match queue.pending.pop_front() {
                    Some(pair) => pair,
                    None => {
                        // Under the same lock as the last look, so a pair queued now is
                        // called by its own task.
                        queue.calling = false;
                        calling.0 = None;
                        return;
                    }
                }
            };
            hook(&pair);
        }
    }
}

/// Lets another task call the hook once this one is done, even if the hook panicked.
struct Calling<'a>(Option<&'a Mutex<HookQueue>>);

impl Drop for Calling<'_> {
    fn drop(&mut self) {
        if let Some(hooks) = self.0 {
            lock(hooks).calling = false;
        }
    }
}
