//! One installed token pair and the deadlines that govern it.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::Duration,
};

use http::HeaderValue;
use tokio::time::Instant;

use super::TokenPair;

/// Where a state stands relative to its deadlines. Only ever moves forward; the timer task (or
/// the first request, when it arms the timer) moves it, so requests never read the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Phase {
    /// No timer yet marks this state's deadlines: the next request arms one.
    Unarmed = 0,
    /// Well before expiry: use the token, nothing else.
    Fresh = 1,
    /// Past the advisory deadline: the first request starts a background refresh.
    Advisory = 2,
    /// Close to expiry: requests wait for the refresh in flight.
    Hard = 3,
    /// Expired: requests wait for the refresh, and fail if it fails.
    Expired = 4,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Phase::Unarmed,
            1 => Phase::Fresh,
            2 => Phase::Advisory,
            3 => Phase::Hard,
            _ => Phase::Expired,
        }
    }
}

/// When the advisory and hard phases begin, from the settings of the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Margins {
    pub(crate) refresh_ahead: Duration,
    pub(crate) hard_margin: Duration,
    /// Stable per cache, in `[0, 1)`: spreads the refreshes of many caches minted together.
    pub(crate) jitter: f64,
}

/// What every request reads, through one `ArcSwap` load: the pair, its ready-made header, its
/// generation and its phase.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) pair: TokenPair,
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    advisory_at: Instant,
    hard_at: Instant,
    phase: AtomicU8,
    /// Set once a refresh of this state has been started, so that only the first request past
    /// the advisory deadline takes the refresh lock.
    refresh_requested: AtomicBool,
}

impl State {
    pub(crate) fn new(pair: TokenPair, generation: u64, margins: Option<Margins>) -> Self {
        let mut header = HeaderValue::try_from(format!("Bearer {}", pair.access_token()))
            .expect("TokenPair only holds RFC 6750 tokens, which are valid header values");
        header.set_sensitive(true);
        let expires_at = pair.expires_at();
        let (advisory_at, hard_at, phase) = match margins {
            // Without a refresher nothing can replace the token: it stays fresh for ever.
            None => (expires_at, expires_at, Phase::Fresh),
            Some(m) => {
                let half = pair.lifetime() / 2;
                let ahead = m.refresh_ahead.min(half).mul_f64(1.0 - 0.1 * m.jitter);
                let hard = m.hard_margin.min(ahead / 2);
                (
                    expires_at.checked_sub(ahead).unwrap_or(pair.issued_at()),
                    expires_at.checked_sub(hard).unwrap_or(pair.issued_at()),
                    Phase::Unarmed,
                )
            }
        };
        Self {
            pair,
            header,
            generation,
            advisory_at,
            hard_at,
            phase: AtomicU8::new(phase as u8),
            refresh_requested: AtomicBool::new(false),
        }
    }

    /// The phase the timer last marked. `Relaxed` is enough: the state itself was published by
    /// the `ArcSwap`, and a phase seen a moment late only delays a refresh by one request.
    #[inline]
    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    fn phase_at(&self, now: Instant) -> Phase {
        if now >= self.pair.expires_at() {
            Phase::Expired
        } else if now >= self.hard_at {
            Phase::Hard
        } else if now >= self.advisory_at {
            Phase::Advisory
        } else {
            Phase::Fresh
        }
    }

    /// Whether the access token is past its expiry, by the clock (slow paths only).
    pub(crate) fn is_expired(&self) -> bool {
        Instant::now() >= self.pair.expires_at()
    }

    /// Returns `true` the first time it is called for this state.
    pub(crate) fn claim_refresh(&self) -> bool {
        !self.refresh_requested.load(Ordering::Relaxed)
            && !self.refresh_requested.swap(true, Ordering::AcqRel)
    }

    /// Lets the next request past the advisory deadline try again.
    pub(crate) fn release_refresh(&self) {
        self.refresh_requested.store(false, Ordering::Release);
    }

    /// Moves an unarmed state to its phase by the clock and, if this call won the race, spawns
    /// the task that marks the later deadlines. Must run inside a Tokio runtime.
    pub(crate) fn arm(self: &Arc<Self>) -> Phase {
        let now = self.phase_at(Instant::now());
        match self.phase.compare_exchange(
            Phase::Unarmed as u8,
            now as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                if now != Phase::Expired {
                    tokio::spawn(mark_deadlines(RearmOnDrop {
                        state: Arc::downgrade(self),
                        done: false,
                    }));
                }
                now
            }
            Err(current) => Phase::from_u8(current),
        }
    }
}

/// Puts a state back to `Unarmed` if its timer task ends before marking every deadline (its
/// runtime shut down, say), so that the next request arms a new timer instead of trusting a
/// phase nobody will move again.
struct RearmOnDrop {
    state: Weak<State>,
    done: bool,
}

impl Drop for RearmOnDrop {
    fn drop(&mut self) {
        if !self.done {
            if let Some(state) = self.state.upgrade() {
                state.phase.store(Phase::Unarmed as u8, Ordering::Release);
            }
        }
    }
}

/// Sleeps to each deadline in turn and marks it; gives up once the state is gone. The guard is
/// an argument, so it is dropped with the task even if the task never ran.
async fn mark_deadlines(mut guard: RearmOnDrop) {
    let state = guard.state.clone();
    for phase in [Phase::Advisory, Phase::Hard, Phase::Expired] {
        let at = match state.upgrade() {
            Some(state) => match phase {
                Phase::Advisory => state.advisory_at,
                Phase::Hard => state.hard_at,
                _ => state.pair.expires_at(),
            },
            None => return,
        };
        tokio::time::sleep_until(at).await;
        match state.upgrade() {
            Some(state) => {
                state.phase.fetch_max(phase as u8, Ordering::AcqRel);
            }
            None => return,
        }
    }
    guard.done = true;
}
