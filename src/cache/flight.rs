//! Single flight: at most one refresh per cache, run in a task of its own, shared by all waiters.
//!
//! # States and moves
//!
//! The flight of a cache is one [`Flight`] behind a mutex; each refresh task owns it while
//! its `id` is in it, and only the owner moves it on (`settle`). A request, the advisory
//! timer or `refresh_now` start a task; every waiter watches the task's channel.
//!
//! | from | event | to | waiters |
//! | --- | --- | --- | --- |
//! | `Idle`, or anything of an older pair | a newer pair is needed | `Running` | wait on its channel |
//! | `Running` | the attempt returns a pair; it is installed over the pair it refreshed, or a newer pair overtook it | `Idle` | `Done`: reload |
//! | `Running` | transient failure | `Backoff` until `retry_at` | `Failed`: a valid token still serves; else wait for `retry_at` if it is due within the attempt timeout of when they began waiting, else fail |
//! | `Running` | terminal failure | `Failed` | fail with "re-authentication needed" |
//! | `Backoff` | `retry_at` comes, the pair is still current | `Running`, a fresh channel | newcomers wait for the new attempt |
//! | `Backoff` | a newer pair was installed | `Idle` (the task ends) | — |
//! | `Failed` | a newer pair is installed | (stays; it names an older pair) | — |
//! | any owned | the task dies (panic, runtime shut down) | `Idle` | "ended without a result" |
//!
//! A task's life is attempt → install, or attempt → back off → attempt …: [`attempt`],
//! [`Shared::install_refreshed`] and [`Shared::back_off`] below.

use std::{
    fmt,
    future::Future,
    ops::Deref,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{sync::watch, time::Instant};

use super::{
    RefreshError, TokenPair,
    core::{Core, DynRefresh},
    replica::{Fetched, How, StoreLink},
    settings::Settings,
    state::{Origin, Phase, State},
};
use crate::{Error, error::Kind};

/// What a request waits on for its token. `Sync` as well, so that `BearerAuth`'s response
/// future is `Sync` whenever the inner service's future is.
pub(crate) type WaitFuture = Pin<Box<dyn Future<Output = Result<Arc<State>, Error>> + Send + Sync>>;

/// How one refresh attempt ended, as every waiter sees it.
#[derive(Clone)]
enum Outcome {
    /// A pair was installed, or the attempt was overtaken by a newer pair: reload and look.
    Done,
    /// The attempt failed; `retry_at` is when the next one starts, if one will.
    Failed {
        error: Arc<RefreshError>,
        retry_at: Option<Instant>,
    },
}

type Waiter = watch::Receiver<Option<Outcome>>;

/// What the one refresh of a cache is doing.
enum Flight {
    Idle,
    Running {
        id: u64,
        generation: u64,
        /// A 401 for the pair asked for this refresh: the new pair is marked as its answer.
        after_401: bool,
        done: Waiter,
    },
    /// The last attempt failed transiently; the task sleeps until `retry_at`.
    Backoff {
        id: u64,
        generation: u64,
        after_401: bool,
        error: Arc<RefreshError>,
        retry_at: Instant,
    },
    /// The refresh chain of `generation` is broken until a newer pair is installed.
    Failed {
        generation: u64,
        error: Arc<RefreshError>,
    },
}

impl Flight {
    fn owner(&self) -> Option<u64> {
        match self {
            Flight::Running { id, .. } | Flight::Backoff { id, .. } => Some(*id),
            Flight::Idle | Flight::Failed { .. } => None,
        }
    }
}

/// Why a waiter wants a token, which decides what it can live with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Need {
    /// Near expiry: the current token will do while it has not expired.
    Valid,
    /// The server refused the current token with a 401: only a newer one will do, and it is
    /// the answer to that 401.
    After401,
    /// `refresh_now`: only a newer one will do.
    Newer,
}

/// Everything a cache handle points to: the data, and the flight that refreshes it.
pub(crate) struct Shared {
    core: Core,
    flight: Mutex<Flight>,
    flight_ids: AtomicU64,
}

impl Deref for Shared {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// What a waiter does next, decided under the flight lock.
enum Step {
    Wait(Waiter),
    Settle(Arc<RefreshError>, Option<Instant>),
}

impl Shared {
    pub(crate) fn new(
        pair: TokenPair,
        refresher: Option<Arc<dyn DynRefresh>>,
        settings: Settings,
        link: Option<StoreLink>,
    ) -> Self {
        Self {
            core: Core::new(pair, refresher, settings, link),
            flight: Mutex::new(Flight::Idle),
            flight_ids: AtomicU64::new(0),
        }
    }

    fn flight(&self) -> MutexGuard<'_, Flight> {
        super::core::lock(&self.flight)
    }

    /// Replaces the flight status, but only while it still belongs to the task `id`.
    fn settle(&self, id: u64, next: Flight) {
        let mut flight = self.flight();
        if flight.owner() == Some(id) {
            *flight = next;
        }
    }

    /// Arms `state`'s timer; in the default mode the timer starts its advisory refresh.
    pub(crate) fn arm(self: &Arc<Self>, state: &Arc<State>) -> Phase {
        let on_advisory = self.settings.timer_refresh.then(|| {
            let cache = Arc::downgrade(self);
            Box::new(move |state: &Arc<State>| {
                if let Some(cache) = cache.upgrade() {
                    // An entry its pool let go of refreshes only for the requests that still
                    // hold it, not ahead of them: nobody may use it again.
                    #[cfg(feature = "pool")]
                    if cache.pooled.is_evicted() {
                        return;
                    }
                    if state.claim_refresh() {
                        cache.kick(state);
                    }
                }
            }) as _
        });
        state.arm(on_advisory)
    }

    /// Starts a background refresh of `base` unless one is already under way or the chain of
    /// `base` is known to be broken. `after_401` marks the result as the answer to a 401.
    pub(crate) fn kick(self: &Arc<Self>, base: &Arc<State>) {
        self.kick_for(base, false);
    }

    pub(crate) fn kick_for(self: &Arc<Self>, base: &Arc<State>, for_401: bool) {
        let mut flight = self.flight();
        match &mut *flight {
            // An older pair's refresh finishing kicks the current pair when it ends.
            Flight::Running {
                generation,
                after_401,
                ..
            }
            | Flight::Backoff {
                generation,
                after_401,
                ..
            } if *generation == base.generation => *after_401 |= for_401,
            Flight::Running { .. } => {}
            Flight::Failed { generation, .. } if *generation == base.generation => {}
            _ => {
                if let Err(error) = self.start(base, &mut flight, for_401) {
                    tracing::debug!(%error, "could not start a background token refresh");
                }
            }
        }
    }

    fn start(
        self: &Arc<Self>,
        base: &Arc<State>,
        flight: &mut Flight,
        after_401: bool,
    ) -> Result<Waiter, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::new(Kind::NoRuntime).with_source(e))?;
        let id = self.flight_ids.fetch_add(1, Ordering::Relaxed);
        let (done_tx, done) = watch::channel(None);
        *flight = Flight::Running {
            id,
            generation: base.generation,
            after_401,
            done: done.clone(),
        };
        base.claim_refresh();
        // Detached: a caller that gives up must not cancel a refresh that rotates the refresh
        // token, or the new refresh token would be lost with it.
        runtime.spawn(run(Arc::downgrade(self), Arc::clone(base), id, done_tx));
        Ok(done)
    }

    /// Waits until the cache holds a state newer than `generation` or, with `Need::Valid`, a
    /// transient failure leaves the current token usable. All callers share one refresh.
    ///
    /// Past the hard deadline a transient failure does not fail the waiter at once: it waits
    /// for the next attempt while that is due within the attempt timeout of when it began
    /// waiting, so one 503 a second before the retry costs no request.
    pub(crate) async fn await_token(
        self: Arc<Self>,
        generation: u64,
        need: Need,
    ) -> Result<Arc<State>, Error> {
        let patience = Instant::now() + self.settings.attempt_timeout;
        loop {
            // Registered before looking, so an install between the look and the wait is seen.
            let installed = self.installed.notified();
            let current = self.current.load_full();
            if current.generation != generation {
                return Ok(current);
            }
            if need == Need::Valid && current.is_expired() {
                // A refresh just handed back an expired pair: wait out the spacing rather than
                // spend another refresh token at once.
                if let Some(until) = current.spaced_until().filter(|u| *u > Instant::now()) {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {},
                        () = installed => {},
                    }
                    continue;
                }
            }
            let step = {
                let mut flight = self.flight();
                match &mut *flight {
                    Flight::Running {
                        generation: g,
                        after_401,
                        done,
                        ..
                    } => {
                        if *g == generation {
                            *after_401 |= need == Need::After401;
                        }
                        Step::Wait(done.clone())
                    }
                    Flight::Backoff {
                        generation: g,
                        after_401,
                        error,
                        retry_at,
                        ..
                    } if *g == generation => {
                        *after_401 |= need == Need::After401;
                        Step::Settle(Arc::clone(error), Some(*retry_at))
                    }
                    Flight::Failed {
                        generation: g,
                        error,
                    } if *g == generation => Step::Settle(Arc::clone(error), None),
                    _ => Step::Wait(self.start(&current, &mut flight, need == Need::After401)?),
                }
            };
            let (error, retry_at) = match step {
                Step::Settle(error, retry_at) => (error, retry_at),
                Step::Wait(mut done) => {
                    let outcome = tokio::select! {
                        seen = done.wait_for(Option::is_some) => match seen {
                            Ok(seen) => seen.clone(),
                            Err(_) => Some(Outcome::Failed {
                                error: Arc::new(RefreshError::transient(
                                    "the refresh task ended without a result (it panicked or its runtime shut down)",
                                )),
                                retry_at: None,
                            }),
                        },
                        () = installed => continue,
                    };
                    match outcome {
                        Some(Outcome::Failed { error, retry_at }) => (error, retry_at),
                        _ => continue,
                    }
                }
            };
            let current = self.current.load_full();
            if current.generation != generation {
                // Failed after a newer pair arrived: look again.
                continue;
            }
            match settle_failure(&error, current, need) {
                Ok(state) => return Ok(state),
                Err(failed) => match retry_at {
                    Some(at) if at <= patience => {
                        let installed = self.installed.notified();
                        tokio::select! {
                            () = tokio::time::sleep_until(at) => {},
                            () = installed => continue,
                        }
                        // The task wakes at the same instant: let it take the flight first.
                        tokio::task::yield_now().await;
                    }
                    _ => return Err(failed),
                },
            }
        }
    }

    /// Installs a refresh result over `base`, if `base` is still current; hands it to the hook
    /// in install order; wakes the waiters. Counters are written before anyone is woken, so a
    /// caller woken by this refresh sees them.
    fn install_refreshed(
        self: &Arc<Self>,
        base: &Arc<State>,
        fetched: Fetched,
        id: u64,
        done: &watch::Sender<Option<Outcome>>,
    ) {
        let Fetched { pair, stored, how } = fetched;
        let installed = {
            let mut flight = self.flight();
            let after_401 =
                matches!(&*flight, Flight::Running { id: own, after_401: true, .. } if *own == id);
            let next = Arc::new(self.state_for(
                pair,
                Origin::Refreshed {
                    at: Instant::now(),
                    after_401,
                },
            ));
            let previous = self.current.compare_and_swap(base, Arc::clone(&next));
            let installed = Arc::ptr_eq(&previous, base).then_some(next);
            drop(previous);
            if let Some(next) = &installed {
                self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                if let Some(link) = &self.link {
                    if how == How::Adopted {
                        link.note_adopted();
                    }
                    // Under the flight lock, in install order.
                    link.set_known(stored);
                }
                self.queue_for_hook(&next.pair);
            }
            if flight.owner() == Some(id) {
                *flight = Flight::Idle;
            }
            installed
        };
        done.send_replace(Some(Outcome::Done));
        match installed {
            Some(next) => {
                match how {
                    How::Refreshed => {
                        tracing::info!(generation = next.generation, "token refreshed")
                    }
                    How::Minted => tracing::info!(generation = next.generation, "token minted"),
                    How::Adopted => tracing::info!(
                        generation = next.generation,
                        "token refreshed by another replica adopted"
                    ),
                }
                if self.settings.keep_alive {
                    // Nobody may use this pair before it needs refreshing: its own timer
                    // keeps the chain alive.
                    self.arm(&next);
                }
                self.call_hooks();
            }
            None => {
                tracing::debug!(
                    generation = base.generation,
                    "refresh result dropped: a newer pair was installed meanwhile"
                );
                self.overtaken();
            }
        }
    }

    /// A newer pair overtook this task's; if that pair reached its advisory deadline while
    /// this refresh held the flight, its own refresh starts now.
    fn overtaken(self: &Arc<Self>) {
        let current = self.current.load_full();
        if current.phase() == Phase::Advisory {
            self.kick(&current);
        }
    }

    /// Records a failed attempt. `None` if the chain is broken (the task ends), else when to
    /// try again.
    fn back_off(
        &self,
        base: &Arc<State>,
        id: u64,
        error: RefreshError,
        failures: u32,
        latest: Option<Instant>,
        done: &watch::Sender<Option<Outcome>>,
    ) -> Option<Instant> {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let error = Arc::new(error);
        if error.is_terminal() {
            tracing::warn!(
                generation = base.generation,
                error = %crate::error::Chain(&*error),
                "token refresh failed for good; re-authentication needed"
            );
            self.settle(
                id,
                Flight::Failed {
                    generation: base.generation,
                    error: Arc::clone(&error),
                },
            );
            done.send_replace(Some(Outcome::Failed {
                error,
                retry_at: None,
            }));
            return None;
        }
        let now = Instant::now();
        let mut delay = self.settings.backoff(failures, error.retry_after());
        if let Some(latest) = latest.filter(|latest| *latest > now) {
            delay = delay.min(latest - now);
        }
        let retry_at = now + delay;
        tracing::warn!(
            generation = base.generation,
            attempt = failures,
            retry_in = ?delay,
            error = %crate::error::Chain(&*error),
            "token refresh failed; will retry"
        );
        {
            let mut flight = self.flight();
            if let Flight::Running {
                id: own, after_401, ..
            } = &*flight
            {
                if *own == id {
                    *flight = Flight::Backoff {
                        id,
                        generation: base.generation,
                        after_401: *after_401,
                        error: Arc::clone(&error),
                        retry_at,
                    };
                }
            }
        }
        done.send_replace(Some(Outcome::Failed {
            error,
            retry_at: Some(retry_at),
        }));
        Some(retry_at)
    }

    /// After the backoff: back to `Running` with a fresh channel, so that requests arriving
    /// from now on wait for this attempt and not for the failure they would otherwise see at
    /// once. `None` if the flight moved on meanwhile.
    fn resume(&self, id: u64, generation: u64) -> Option<watch::Sender<Option<Outcome>>> {
        let mut flight = self.flight();
        let Flight::Backoff {
            id: own, after_401, ..
        } = &*flight
        else {
            return None;
        };
        if *own != id {
            return None;
        }
        let (next_tx, next_rx) = watch::channel(None);
        *flight = Flight::Running {
            id,
            generation,
            after_401: *after_401,
            done: next_rx,
        };
        Some(next_tx)
    }
}

impl Shared {
    /// Writes a hand-installed pair to the store; records its version if it is still the
    /// current pair then.
    pub(crate) async fn publish_installed(self: Arc<Self>, state: Arc<State>) {
        let Some(link) = &self.link else {
            return;
        };
        let stored = link.publish(&state.pair).await;
        let _flight = self.flight();
        if Arc::ptr_eq(&self.current.load(), &state) {
            link.set_known(stored);
        }
    }

    /// Whether the token of `base` needs replacing now: past its hard deadline, or refused
    /// with a 401.
    fn is_urgent(&self, id: u64, base: &State) -> bool {
        Instant::now() >= base.hard_at()
            || matches!(&*self.flight(), Flight::Running { id: own, after_401: true, .. } if *own == id)
    }
}

fn is_store_failure(error: &RefreshError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<Error>())
        .is_some_and(Error::is_store)
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

/// One call of the refresher, bounded by the attempt timeout.
async fn attempt(
    refresher: &dyn DynRefresh,
    settings: &Settings,
    base: &State,
) -> Result<TokenPair, RefreshError> {
    match tokio::time::timeout(
        settings.attempt_timeout,
        refresher.refresh_boxed(&base.pair),
    )
    .await
    {
        Ok(result) => result,
        // The refresher's future is dropped: the request may already have reached the server.
        Err(_) => Err(RefreshError::transient(
            Error::new(Kind::Timeout).with_detail("the refresh attempt ran past its timeout"),
        )),
    }
}

/// The refresh task: attempts until a pair is installed, the chain breaks, a newer pair
/// overtakes it, or the cache is dropped; sleeps with backoff between transient failures.
async fn run(
    shared: Weak<Shared>,
    base: Arc<State>,
    id: u64,
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
            cache.overtaken();
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
        let fetched = match &cache.link {
            None => attempt(&*refresher, &cache.settings, &base)
                .await
                .map(Fetched::unstored),
            Some(link) => {
                let urgent = || cache.is_urgent(id, &base);
                link.attempt(&*refresher, &cache.settings, &base.pair, &urgent)
                    .await
            }
        };
        let error = match fetched {
            Ok(fetched) => return cache.install_refreshed(&base, fetched, id, &done),
            Err(error) => error,
        };
        failures += 1;
        // The store failed and the token does not need replacing yet: the next attempt, which
        // mints if the store is still down, comes no later than the hard deadline.
        let latest = (cache.link.is_some() && is_store_failure(&error)).then(|| base.hard_at());
        let Some(retry_at) = cache.back_off(&base, id, error, failures, latest, &done) else {
            return;
        };
        drop(cache);
        tokio::time::sleep_until(retry_at).await;
        let Some(cache) = shared.upgrade() else {
            return;
        };
        match cache.resume(id, base.generation) {
            Some(next) => done = next,
            None => return,
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("TokenCache")
            .field("generation", &current.generation)
            .field("pair", &current.pair)
            .field("refreshable", &self.refresher.is_some())
            .field(
                "refreshes",
                &self.counters.refreshes.load(Ordering::Relaxed),
            )
            .field("failures", &self.counters.failures.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
