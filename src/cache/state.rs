//! One installed token pair, where it came from, and the deadlines that govern it.

use std::sync::{
    Arc, Weak,
    atomic::{AtomicBool, AtomicU8, Ordering},
};

use http::HeaderValue;
use tokio::time::Instant;

use super::{
    TokenPair,
    settings::{Margins, NEAR_EXPIRY_SPACING, REFRESH_AFTER_401_COOLDOWN, deadlines},
};

/// Where a state stands relative to its deadlines. Only ever moves forward; the timer task (or
/// the first request, when it arms the timer) moves it, so requests never read the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Phase {
    /// No timer yet marks this state's deadlines: the next request arms one.
    Unarmed = 0,
    /// Well before expiry: use the token, nothing else.
    Fresh = 1,
    /// Past the advisory deadline: a background refresh starts.
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

/// How a pair came to be installed. Kept on the state it produced, so that what a 401 or a
/// near-expiry result means is decided by the pair itself, never by a side record that a later
/// pair could outlive or overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Given to the builder, or to `install`.
    Given,
    /// Installed by a refresh, at `at`; `after_401` when a 401 for the pair it replaced asked for
    /// it.
    Refreshed { at: Instant, after_401: bool },
}

/// Called once, when the timer marks a state's advisory deadline.
pub(crate) type OnAdvisory = Box<dyn FnOnce(&Arc<State>) + Send>;

/// What every request reads, through one `ArcSwap` load: the pair, its ready-made header, its
/// generation and its phase.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) pair: TokenPair,
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    pub(crate) origin: Origin,
    advisory_at: Instant,
    hard_at: Instant,
    phase: AtomicU8,
    /// Set once a refresh of this state has been started, so that only the first request past
    /// the advisory deadline takes the refresh lock.
    refresh_requested: AtomicBool,
}

impl State {
    pub(crate) fn new(
        pair: TokenPair,
        generation: u64,
        margins: Option<Margins>,
        origin: Origin,
    ) -> Self {
        let header =
            crate::header::shared_sensitive(format!("Bearer {}", pair.access_token()).into_bytes())
                .expect("TokenPair only holds RFC 6750 tokens, which are valid header values");
        let (advisory_at, hard_at, phase) = match margins {
            // Without a refresher nothing can replace the token: it stays fresh for ever.
            None => (pair.expires_at(), pair.expires_at(), Phase::Fresh),
            Some(margins) => {
                let spaced_from = match origin {
                    Origin::Refreshed { at, .. } => Some(at),
                    Origin::Given => None,
                };
                let (advisory_at, hard_at) = deadlines(&pair, &margins, spaced_from);
                (advisory_at, hard_at, Phase::Unarmed)
            }
        };
        Self {
            pair,
            header,
            generation,
            origin,
            advisory_at,
            hard_at,
            phase: AtomicU8::new(phase as u8),
            refresh_requested: AtomicBool::new(false),
        }
    }

    /// When requests start waiting for a new pair.
    pub(crate) fn hard_at(&self) -> Instant {
        self.hard_at
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

    /// Whether a 401 for this pair should be answered without another refresh: the pair is
    /// itself the answer to a 401 a moment ago, so the server refuses something other than the
    /// token's age (a missing scope), and refreshing again would only rotate the chain.
    pub(crate) fn is_recent_answer_to_401(&self) -> bool {
        matches!(self.origin, Origin::Refreshed { at, after_401: true }
            if at.elapsed() < REFRESH_AFTER_401_COOLDOWN)
    }

    /// Until when an expired pair that a refresh just handed back is not refreshed again.
    pub(crate) fn spaced_until(&self) -> Option<Instant> {
        match self.origin {
            Origin::Refreshed { at, .. } => at.checked_add(NEAR_EXPIRY_SPACING),
            Origin::Given => None,
        }
    }

    /// Returns `true` the first time it is called for this state.
    pub(crate) fn claim_refresh(&self) -> bool {
        !self.refresh_requested.load(Ordering::Relaxed)
            && !self.refresh_requested.swap(true, Ordering::AcqRel)
    }

    /// Moves an unarmed state to its phase by the clock and, if this call won the race, spawns
    /// the task that marks the later deadlines and calls `on_advisory` at the advisory one.
    /// Must run inside a Tokio runtime.
    pub(crate) fn arm(self: &Arc<Self>, on_advisory: Option<OnAdvisory>) -> Phase {
        let now = self.phase_at(Instant::now());
        match self.phase.compare_exchange(
            Phase::Unarmed as u8,
            now as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                if now != Phase::Expired {
                    let on_advisory = on_advisory.filter(|_| now < Phase::Advisory);
                    tokio::spawn(mark_deadlines(
                        RearmOnDrop {
                            state: Arc::downgrade(self),
                            done: false,
                        },
                        on_advisory,
                    ));
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
async fn mark_deadlines(mut guard: RearmOnDrop, mut on_advisory: Option<OnAdvisory>) {
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
                if phase == Phase::Advisory {
                    if let Some(start) = on_advisory.take() {
                        start(&state);
                    }
                }
            }
            None => return,
        }
    }
    guard.done = true;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn margins() -> Option<Margins> {
        Some(Margins {
            refresh_ahead: Duration::from_secs(600),
            hard_margin: Duration::from_secs(60),
            jitter: 0.0,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_pair_refreshed_for_a_401_is_cooled_down_and_only_for_a_while() {
        let pair = TokenPair::new("t", Instant::now(), Duration::from_secs(3600)).unwrap();
        let at = Instant::now();
        let by_401 = State::new(
            pair.clone(),
            1,
            margins(),
            Origin::Refreshed {
                at,
                after_401: true,
            },
        );
        let by_hand = State::new(
            pair.clone(),
            2,
            margins(),
            Origin::Refreshed {
                at,
                after_401: false,
            },
        );
        let given = State::new(pair, 3, margins(), Origin::Given);
        assert!(by_401.is_recent_answer_to_401());
        assert!(!by_hand.is_recent_answer_to_401());
        assert!(!given.is_recent_answer_to_401());
        tokio::time::advance(REFRESH_AFTER_401_COOLDOWN).await;
        assert!(!by_401.is_recent_answer_to_401());
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_marks_each_deadline_and_calls_the_advisory_hook_once() {
        let pair = TokenPair::new("t", Instant::now(), Duration::from_secs(3600)).unwrap();
        let state = Arc::new(State::new(pair, 0, margins(), Origin::Given));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let phase = state.arm(Some(Box::new(move |s: &Arc<State>| {
            tx.send(s.generation).unwrap();
        })));
        assert_eq!(phase, Phase::Fresh);
        tokio::time::advance(Duration::from_secs(3000)).await;
        tokio::task::yield_now().await;
        assert_eq!(state.phase(), Phase::Advisory);
        assert_eq!(rx.recv().await, Some(0));
        tokio::time::advance(Duration::from_secs(540)).await;
        tokio::task::yield_now().await;
        assert_eq!(state.phase(), Phase::Hard);
        tokio::time::advance(Duration::from_secs(60)).await;
        tokio::task::yield_now().await;
        assert_eq!(state.phase(), Phase::Expired);
        assert_eq!(rx.recv().await, None, "called once, then dropped");
    }
}
