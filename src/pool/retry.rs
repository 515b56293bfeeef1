//! Backoff between failed mints of one subscriber: the next lookup mints again, but not
//! sooner than the cache's backoff rules allow (capped exponential, with jitter, at least a
//! server's `Retry-After`).

use std::{collections::hash_map::RandomState, hash::BuildHasher, sync::Arc, time::Duration};

use moka::future::Cache;
use tokio::time::Instant;

use crate::{
    Error,
    cache::{MAX_RETRY_AFTER, backoff},
};

/// A lookup that finds the next mint due within this waits for it; one that finds it later
/// fails at once with the last failure.
pub(crate) const MINT_WAIT: Duration = Duration::from_secs(5);

/// The failed mints of subscribers whose last mint failed.
pub(crate) struct Failures {
    recent: Cache<Arc<str>, Failed>,
    base: Duration,
    cap: Duration,
}

#[derive(Clone)]
pub(crate) struct Failed {
    /// Failed mints in a row.
    count: u32,
    /// When the next mint may go out.
    pub(crate) retry_at: Instant,
    /// The last failure, shared by the lookups that waited for it.
    pub(crate) error: Arc<Error>,
}

impl Failures {
    /// At most `max` subscribers are remembered; a failure is forgotten once its backoff
    /// (at most `cap`, or a server's `Retry-After`) has passed twice over.
    pub(crate) fn new(base: Duration, cap: Duration, max: u64) -> Self {
        Self {
            recent: Cache::builder()
                .max_capacity(max)
                .time_to_idle(cap.max(MAX_RETRY_AFTER).saturating_mul(2))
                .build(),
            base,
            cap,
        }
    }

    /// The last failure of `reference`, if its next mint is not due yet.
    pub(crate) async fn pending(&self, reference: &Arc<str>) -> Option<Failed> {
        let failed = self.recent.get(reference).await?;
        (Instant::now() < failed.retry_at).then_some(failed)
    }

    /// Records a failed mint of `reference`: its next mint waits for the backoff.
    pub(crate) async fn failed(&self, reference: &Arc<str>, error: Arc<Error>) -> Duration {
        let count = self.recent.get(reference).await.map_or(0, |f| f.count) + 1;
        let retry_after = error.api_error().and_then(|api| api.retry_after());
        // Fresh per failure, so that subscribers failing together do not retry together.
        let seed = RandomState::new().hash_one(reference);
        let delay = backoff(self.base, self.cap, count, Some(seed), retry_after);
        let failed = Failed {
            count,
            retry_at: Instant::now() + delay,
            error,
        };
        self.recent.insert(Arc::clone(reference), failed).await;
        delay
    }

    /// Forgets the failures of `reference`: it minted.
    pub(crate) async fn succeeded(&self, reference: &Arc<str>) {
        self.recent.invalidate(reference).await;
    }
}
