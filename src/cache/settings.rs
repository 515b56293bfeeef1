//! A cache's settings and the pure arithmetic on them: deadlines, backoff and jitter.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::TokenPair;

/// Called with every pair a refresh installs.
pub(crate) type Hook = Arc<dyn Fn(&TokenPair) + Send + Sync>;

/// How long a pair obtained because of a 401 is trusted: a 401 for it within this time does not
/// start another refresh.
pub(crate) const REFRESH_AFTER_401_COOLDOWN: Duration = Duration::from_secs(30);

/// The longest `Retry-After` the cache honours: beyond it, a refresh token (2 h 5 min) could
/// expire while the cache sleeps.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

/// How long a refreshed pair that is already inside its refresh window is used before it is
/// refreshed again (google-cloud-rust waits as long): a refresher that keeps handing back
/// near-expiry pairs costs one refresh per spacing, not one per request.
pub(crate) const NEAR_EXPIRY_SPACING: Duration = Duration::from_secs(10);

/// When the advisory and hard phases begin, from the settings of the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Margins {
    pub(crate) refresh_ahead: Duration,
    pub(crate) hard_margin: Duration,
    /// Stable per cache, in `[0, 1)`: spreads the refreshes of many caches minted together.
    pub(crate) jitter: f64,
}

/// The advisory and hard deadlines of `pair`.
///
/// The advisory margin is at most half the lifetime (a 60 s SAT refreshes after 30 s) and is
/// shortened by up to 10 % of jitter; the hard margin is at most half the advisory one. With
/// `spaced_from` (a refresh result installed at that instant), neither deadline comes sooner
/// than [`NEAR_EXPIRY_SPACING`] after it, nor after expiry.
pub(crate) fn deadlines(
    pair: &TokenPair,
    margins: &Margins,
    spaced_from: Option<Instant>,
) -> (Instant, Instant) {
    let expires_at = pair.expires_at();
    let ahead = margins
        .refresh_ahead
        .min(pair.lifetime() / 2)
        .mul_f64(1.0 - 0.1 * margins.jitter);
    let hard = margins.hard_margin.min(ahead / 2);
    let mut advisory_at = expires_at.checked_sub(ahead).unwrap_or(pair.issued_at());
    let mut hard_at = expires_at.checked_sub(hard).unwrap_or(pair.issued_at());
    if let Some(from) = spaced_from {
        let earliest = from
            .checked_add(NEAR_EXPIRY_SPACING)
            .unwrap_or(expires_at)
            .min(expires_at);
        advisory_at = advisory_at.max(earliest);
        hard_at = hard_at.max(earliest);
    }
    (advisory_at, hard_at)
}

/// Everything a cache was built with.
pub(crate) struct Settings {
    pub(crate) margins: Margins,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) attempt_timeout: Duration,
    pub(crate) jitter: bool,
    pub(crate) seed: u64,
    pub(crate) on_refresh: Option<Hook>,
    /// Whether a refreshed pair arms its own timer, so an idle cache keeps its chain alive.
    pub(crate) keep_alive: bool,
    /// Whether the timer starts the advisory refresh of a pair that requests have used.
    pub(crate) timer_refresh: bool,
}

impl Settings {
    /// The settings of a cache that never refreshes.
    pub(crate) fn fixed() -> Self {
        Self {
            margins: Margins {
                refresh_ahead: Duration::ZERO,
                hard_margin: Duration::ZERO,
                jitter: 0.0,
            },
            backoff_base: Duration::ZERO,
            backoff_cap: Duration::ZERO,
            attempt_timeout: Duration::ZERO,
            jitter: false,
            seed: 0,
            on_refresh: None,
            keep_alive: false,
            timer_refresh: false,
        }
    }

    /// [`backoff`] with this cache's settings.
    pub(crate) fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let seed = self.jitter.then_some(self.seed);
        backoff(
            self.backoff_base,
            self.backoff_cap,
            failures,
            seed,
            retry_after,
        )
    }
}

/// The delay before the next attempt after `failures` failures in a row: capped exponential
/// backoff with "equal jitter" (with a `seed`): half the step is fixed so retries never come
/// too soon, half is random so that callers failing together do not retry together. At least
/// a server's `retry_after`, within reason.
pub(crate) fn backoff(
    base: Duration,
    cap: Duration,
    failures: u32,
    seed: Option<u64>,
    retry_after: Option<Duration>,
) -> Duration {
    let step = base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(cap);
    let delay = match seed {
        Some(seed) => step / 2 + (step / 2).mul_f64(unit(seed ^ u64::from(failures))),
        None => step,
    };
    // A server may ask for a long pause, but not for one that outlives the chain.
    retry_after.map_or(delay, |at_least| delay.max(at_least.min(MAX_RETRY_AFTER)))
}

/// A number in `[0, 1)` from a seed (splitmix64's finaliser), for jitter that needs no RNG crate.
pub(crate) fn unit(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn settings(jitter: bool, seed: u64) -> Settings {
        Settings {
            backoff_base: SECOND,
            backoff_cap: 30 * SECOND,
            jitter,
            seed,
            ..Settings::fixed()
        }
    }

    fn margins(ahead: u64, hard: u64, jitter: f64) -> Margins {
        Margins {
            refresh_ahead: Duration::from_secs(ahead),
            hard_margin: Duration::from_secs(hard),
            jitter,
        }
    }

    fn pair(issued_at: Instant, lifetime: u64) -> TokenPair {
        TokenPair::new("t", issued_at, Duration::from_secs(lifetime)).unwrap()
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let s = settings(false, 0);
        let delays: Vec<u64> = (1..=8).map(|n| s.backoff(n, None).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        // Far past the cap, the shift saturates instead of overflowing.
        assert_eq!(s.backoff(u32::MAX, None), 30 * SECOND);
    }

    #[test]
    fn retry_after_lengthens_a_delay_but_only_up_to_five_minutes() {
        let s = settings(false, 0);
        assert_eq!(s.backoff(1, Some(7 * SECOND)), 7 * SECOND);
        assert_eq!(s.backoff(3, Some(SECOND)), 4 * SECOND, "never shortens");
        assert_eq!(s.backoff(1, Some(Duration::MAX)), MAX_RETRY_AFTER);
    }

    #[test]
    fn jittered_backoff_stays_between_half_and_all_of_the_step() {
        for seed in 0..200 {
            let s = settings(true, seed);
            for failures in 1..8 {
                let step = settings(false, 0).backoff(failures, None);
                let delay = s.backoff(failures, None);
                assert!(
                    delay >= step / 2 && delay <= step,
                    "{seed} {failures}: {delay:?}"
                );
            }
        }
    }

    #[test]
    fn unit_is_in_the_unit_interval_and_spread() {
        let values: Vec<f64> = (0..1000).map(unit).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let low = values.iter().filter(|v| **v < 0.5).count();
        assert!((400..600).contains(&low), "{low} of 1000 below one half");
    }

    #[test]
    fn margins_are_capped_by_half_the_lifetime_and_half_the_advisory_margin() {
        let now = Instant::now();
        // One hour, 10 min ahead, 1 min hard: the settings as given.
        let (advisory, hard) = deadlines(&pair(now, 3600), &margins(600, 60, 0.0), None);
        assert_eq!(advisory, now + Duration::from_secs(3000));
        assert_eq!(hard, now + Duration::from_secs(3540));
        // A 60 s SAT: ahead is capped at 30 s, hard at 15 s.
        let (advisory, hard) = deadlines(&pair(now, 60), &margins(300, 30, 0.0), None);
        assert_eq!(advisory, now + Duration::from_secs(30));
        assert_eq!(hard, now + Duration::from_secs(45));
    }

    #[test]
    fn jitter_shortens_the_advisory_margin_by_at_most_a_tenth() {
        let now = Instant::now();
        let (advisory, _) = deadlines(&pair(now, 3600), &margins(600, 60, 0.999), None);
        let ahead = (now + Duration::from_secs(3600)) - advisory;
        assert!(ahead > Duration::from_secs(540) && ahead <= Duration::from_secs(600));
    }

    #[test]
    fn a_near_expiry_refresh_result_is_spaced_but_never_past_its_expiry() {
        let now = Instant::now();
        let m = margins(300, 30, 0.0);
        // 20 s left: advisory at 10 s (half), hard at 15 s; spacing moves neither.
        let (advisory, hard) = deadlines(&pair(now, 20), &m, Some(now));
        assert_eq!((advisory, hard), (now + 10 * SECOND, now + 15 * SECOND));
        // Issued 5 min ago with 40 s left: both would be due now; spaced to 10 s from now.
        let old = now.checked_sub(Duration::from_secs(300)).unwrap();
        let (advisory, hard) = deadlines(&pair(old, 340), &m, Some(now));
        assert_eq!((advisory, hard), (now + 10 * SECOND, now + 10 * SECOND));
        // 4 s left: no later than expiry.
        let (advisory, hard) = deadlines(&pair(now, 4), &m, Some(now));
        assert_eq!((advisory, hard), (now + 4 * SECOND, now + 4 * SECOND));
        // A fresh pair is not affected.
        assert_eq!(
            deadlines(&pair(now, 3600), &m, Some(now)),
            deadlines(&pair(now, 3600), &m, None)
        );
    }
}
