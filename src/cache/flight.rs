//! Single flight: at most one refresh per cache, run in a task of its own, shared by all waiters.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use super::{Refresh, RefreshError, TokenPair, state::Margins, state::State};
use crate::{Error, error::Kind};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a request waits on for its token. `Sync` as well, so that `BearerAuth`'s response
/// future is `Sync` whenever the inner service's future is.
pub(crate) type WaitFuture = Pin<Box<dyn Future<Output = Result<Arc<State>, Error>> + Send + Sync>>;

/// `Refresh` made object safe, so that `TokenCache` needs no type parameter.
pub(crate) trait DynRefresh: Send + Sync + 'static {
    fn refresh_boxed<'a>(
        &'a self,
        current: &'a TokenPair,
    ) -> BoxFuture<'a, Result<TokenPair, RefreshError>>;
}

impl<R: Refresh> DynRefresh for R {
    fn refresh_boxed<'a>(
        &'a self,
        current: &'a TokenPair,
    ) -> BoxFuture<'a, Result<TokenPair, RefreshError>> {
        Box::pin(self.refresh(current))
    }
}

pub(crate) type Hook = Arc<dyn Fn(&TokenPair) + Send + Sync>;

pub(crate) struct Settings {
    pub(crate) margins: Margins,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) attempt_timeout: Duration,
    pub(crate) jitter: bool,
    pub(crate) seed: u64,
    pub(crate) on_refresh: Option<Hook>,
}

/// How long a pair obtained because of a 401 is trusted: a 401 for it within this time does not
/// start another refresh.
pub(crate) const REFRESH_AFTER_401_COOLDOWN: Duration = Duration::from_secs(30);

/// The longest `Retry-After` the cache honours: beyond it, a refresh token (2 h 5 min) could
/// expire while the cache sleeps.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

impl Settings {
    /// Capped exponential backoff with "equal jitter": half the step is fixed so retries never
    /// come too soon, half is random so that caches failing together do not retry together.
    pub(crate) fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let step = self
            .backoff_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.backoff_cap);
        let delay = if self.jitter {
            step / 2 + (step / 2).mul_f64(unit(self.seed ^ u64::from(failures)))
        } else {
            step
        };
        // A server may ask for a long pause, but not for one that outlives the chain.
        retry_after.map_or(delay, |at_least| delay.max(at_least.min(MAX_RETRY_AFTER)))
    }
}

/// A number in `[0, 1)` from a seed (splitmix64's finaliser), for jitter that needs no RNG crate.
pub(crate) fn unit(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// How one refresh attempt ended, as every waiter sees it.
#[derive(Clone)]
enum Outcome {
    /// A pair was installed, or the attempt was overtaken by a newer pair: reload and look.
    Done,
    Failed(Arc<RefreshError>),
}

type Waiter = watch::Receiver<Option<Outcome>>;

/// What the one refresh of a cache is doing.
enum Flight {
    Idle,
    Running {
        id: u64,
        generation: u64,
        done: Waiter,
    },
    /// The last attempt failed transiently; the task sleeps before the next one.
    Backoff {
        id: u64,
        generation: u64,
        error: Arc<RefreshError>,
    },
    /// The refresh chain of `generation` is broken until a newer pair is installed.
    Failed {
        generation: u64,
        error: Arc<RefreshError>,
    },
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

/// Everything a cache handle points to.
pub(crate) struct Shared {
    pub(crate) current: Padded<ArcSwap<State>>,
    pub(crate) refresher: Option<Arc<dyn DynRefresh>>,
    pub(crate) settings: Settings,
    pub(crate) counters: Counters,
    flight: Mutex<Flight>,
    generations: AtomicU64,
    flight_ids: AtomicU64,
    /// Wakes waiters when a pair is installed by hand, so they need not wait out a refresh of
    /// the pair it replaced.
    installed: Notify,
    /// The pair the last refresh asked for by a 401 produced, and when: a 401 for that same pair
    /// soon after is not the token's fault (a missing scope, say), and refreshing again would
    /// only rotate the chain for nothing.
    after_401: Mutex<Option<(u64, Instant)>>,
}

/// Whether a waiter can live with the current token after a transient failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Near expiry: the current token will do while it has not expired.
    Valid,
    /// The server refused the current token: only a newer one will do.
    Newer,
}

impl Shared {
    pub(crate) fn new(
        pair: TokenPair,
        refresher: Option<Arc<dyn DynRefresh>>,
        settings: Settings,
    ) -> Self {
        let margins = refresher.as_ref().map(|_| settings.margins);
        Self {
            current: Padded(ArcSwap::from_pointee(State::new(pair, 0, margins))),
            refresher,
            settings,
            counters: Counters::default(),
            flight: Mutex::new(Flight::Idle),
            installed: Notify::new(),
            after_401: Mutex::new(None),
            generations: AtomicU64::new(1),
            flight_ids: AtomicU64::new(0),
        }
    }

    /// Whether `generation` came from a refresh asked for by a 401 less than
    /// [`REFRESH_AFTER_401_COOLDOWN`] ago.
    pub(crate) fn refreshed_after_401(&self, generation: u64) -> bool {
        lock(&self.after_401).is_some_and(|(produced, at)| {
            produced == generation && at.elapsed() < REFRESH_AFTER_401_COOLDOWN
        })
    }

    /// Installs `pair` by hand and wakes everyone waiting for a newer pair.
    pub(crate) fn install(&self, pair: TokenPair) {
        self.current.store(Arc::new(self.state_for(pair)));
        self.installed.notify_waiters();
    }

    pub(crate) fn state_for(&self, pair: TokenPair) -> State {
        let margins = self.refresher.as_ref().map(|_| self.settings.margins);
        State::new(
            pair,
            self.generations.fetch_add(1, Ordering::Relaxed),
            margins,
        )
    }

    fn flight(&self) -> MutexGuard<'_, Flight> {
        // The lock is never held across a panic point that leaves `Flight` half-written.
        self.flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the flight status, but only while it still belongs to the task `id`.
    fn settle(&self, id: u64, next: Flight) {
        let mut flight = self.flight();
        if matches!(&*flight, Flight::Running { id: own, .. } | Flight::Backoff { id: own, .. } if *own == id)
        {
            *flight = next;
        }
    }

    /// Starts a background refresh of `base` unless one is already under way or the chain of
    /// `base` is known to be broken. For the first request past the advisory deadline.
    pub(crate) fn kick(self: &Arc<Self>, base: &Arc<State>) {
        let mut flight = self.flight();
        match &*flight {
            Flight::Running { generation, .. } => {
                if *generation != base.generation {
                    // A refresh of a pair installed before this one is finishing: let a later
                    // request start this pair's refresh once it is done.
                    base.release_refresh();
                }
            }
            Flight::Backoff { generation, .. } | Flight::Failed { generation, .. }
                if *generation == base.generation => {}
            _ => {
                if let Err(error) = self.start(base, &mut flight, false) {
                    base.release_refresh();
                    tracing::debug!(%error, "could not start a background token refresh");
                }
            }
        }
    }

    fn start(
        self: &Arc<Self>,
        base: &Arc<State>,
        flight: &mut Flight,
        for_401: bool,
    ) -> Result<Waiter, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::new(Kind::NoRuntime).with_source(e))?;
        let id = self.flight_ids.fetch_add(1, Ordering::Relaxed);
        let (done_tx, done) = watch::channel(None);
        *flight = Flight::Running {
            id,
            generation: base.generation,
            done: done.clone(),
        };
        base.claim_refresh();
        // Detached: a caller that gives up must not cancel a refresh that rotates the refresh
        // token, or the new refresh token would be lost with it.
        runtime.spawn(run(
            Arc::downgrade(self),
            Arc::clone(base),
            id,
            for_401,
            done_tx,
        ));
        Ok(done)
    }

    /// Waits until the cache holds a state newer than `generation` or, with `Need::Valid`, a
    /// transient failure leaves the current token usable. All callers share one refresh.
    pub(crate) async fn await_token(
        self: Arc<Self>,
        generation: u64,
        need: Need,
    ) -> Result<Arc<State>, Error> {
        loop {
            // Registered before looking, so an install between the look and the wait is seen.
            let installed = self.installed.notified();
            let current = self.current.load_full();
            if current.generation != generation {
                return Ok(current);
            }
            let mut done = {
                let mut flight = self.flight();
                match &*flight {
                    Flight::Running { done, .. } => done.clone(),
                    Flight::Backoff {
                        generation: g,
                        error,
                        ..
                    } if *g == generation => return settle_failure(error, current, need),
                    Flight::Failed {
                        generation: g,
                        error,
                    } if *g == generation => return settle_failure(error, current, need),
                    _ => self.start(&current, &mut flight, need == Need::Newer)?,
                }
            };
            let outcome = tokio::select! {
                seen = done.wait_for(Option::is_some) => match seen {
                    Ok(seen) => seen.clone(),
                    Err(_) => Some(Outcome::Failed(Arc::new(RefreshError::transient(
                        "the refresh task ended without a result (it panicked or its runtime shut down)",
                    )))),
                },
                () = installed => continue,
            };
            if let Some(Outcome::Failed(error)) = outcome {
                let current = self.current.load_full();
                if current.generation == generation {
                    return settle_failure(&error, current, need);
                }
            }
            // Done, or failed after a newer pair arrived: look again.
        }
    }
}

/// The locks here are never held across a point that could leave their data half-written, so
/// a poisoned one is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn settle_failure(
    error: &Arc<RefreshError>,
    current: Arc<State>,
    need: Need,
) -> Result<Arc<State>, Error> {
    if error.is_terminal() {
        Err(Error::new(Kind::ReauthenticationNeeded).with_source(Arc::clone(error)))
    } else if need == Need::Valid && !current.is_expired() {
        Ok(current)
    } else {
        Err(Error::new(Kind::RefreshFailed).with_source(Arc::clone(error)))
    }
}

/// Puts the flight back to idle if the task dies without settling it (a panicking refresher, a
/// runtime shutting down), so the next request can start a new refresh.
struct SettleOnDrop {
    shared: Weak<Shared>,
    id: u64,
}

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.settle(self.id, Flight::Idle);
        }
    }
}

/// The refresh task: attempts until a pair is installed, the chain breaks, a newer pair
/// overtakes it, or the cache is dropped; sleeps with backoff between transient failures.
async fn run(
    shared: Weak<Shared>,
    base: Arc<State>,
    id: u64,
    for_401: bool,
    mut done: watch::Sender<Option<Outcome>>,
) {
    let _guard = SettleOnDrop {
        shared: shared.clone(),
        id,
    };
    let mut failures = 0u32;
    loop {
        let Some(cache) = shared.upgrade() else {
            return;
        };
        if cache.current.load().generation != base.generation {
            cache.settle(id, Flight::Idle);
            done.send_replace(Some(Outcome::Done));
            return;
        }
        let Some(refresher) = cache.refresher.clone() else {
            return;
        };
        cache.counters.attempts.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            generation = base.generation,
            attempt = failures + 1,
            "token refresh started"
        );
        let result = match tokio::time::timeout(
            cache.settings.attempt_timeout,
            refresher.refresh_boxed(&base.pair),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(RefreshError::transient(
                Error::new(Kind::Timeout).with_detail("refresh attempt timed out"),
            )),
        };
        match result {
            Ok(pair) => {
                let next = Arc::new(cache.state_for(pair));
                let previous = cache.current.compare_and_swap(&base, Arc::clone(&next));
                let installed = Arc::ptr_eq(&previous, &base);
                drop(previous);
                cache.settle(id, Flight::Idle);
                // Waiters go first: a slow hook must not hold up requests.
                done.send_replace(Some(Outcome::Done));
                if installed {
                    if for_401 {
                        *lock(&cache.after_401) = Some((next.generation, Instant::now()));
                    }
                    cache.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(generation = next.generation, "token refreshed");
                    if let Some(hook) = &cache.settings.on_refresh {
                        hook(&next.pair);
                    }
                } else {
                    tracing::debug!(
                        generation = base.generation,
                        "refresh result dropped: a newer pair was installed meanwhile"
                    );
                }
                return;
            }
            Err(error) => {
                failures += 1;
                cache.counters.failures.fetch_add(1, Ordering::Relaxed);
                let error = Arc::new(error);
                if error.is_terminal() {
                    tracing::warn!(
                        generation = base.generation,
                        %error,
                        "token refresh failed for good; re-authentication needed"
                    );
                    cache.settle(
                        id,
                        Flight::Failed {
                            generation: base.generation,
                            error: Arc::clone(&error),
                        },
                    );
                    done.send_replace(Some(Outcome::Failed(error)));
                    return;
                }
                let delay = cache.settings.backoff(failures, error.retry_after());
                tracing::warn!(
                    generation = base.generation,
                    attempt = failures,
                    retry_in = ?delay,
                    %error,
                    "token refresh failed; will retry"
                );
                cache.settle(
                    id,
                    Flight::Backoff {
                        id,
                        generation: base.generation,
                        error: Arc::clone(&error),
                    },
                );
                done.send_replace(Some(Outcome::Failed(error)));
                drop(cache);
                tokio::time::sleep(delay).await;

                // A fresh channel, so that requests arriving from now on wait for this attempt
                // and not for the failure they would otherwise see at once.
                let Some(cache) = shared.upgrade() else {
                    return;
                };
                let (next_tx, next_rx) = watch::channel(None);
                {
                    let mut flight = cache.flight();
                    match &*flight {
                        Flight::Backoff { id: own, .. } if *own == id => {
                            *flight = Flight::Running {
                                id,
                                generation: base.generation,
                                done: next_rx,
                            };
                        }
                        _ => return,
                    }
                }
                done = next_tx;
            }
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("TokenCache")
            .field("generation", &current.generation)
            .field("expires_at", &current.pair.expires_at())
            .field("refreshable", &self.refresher.is_some())
            .field(
                "refreshes",
                &self.counters.refreshes.load(Ordering::Relaxed),
            )
            .field("failures", &self.counters.failures.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
