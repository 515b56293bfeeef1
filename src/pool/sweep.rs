//! The idle sweep: evicts entries nobody looked up for the idle timeout, and tells moka which
//! entries are in use.
//!
//! Requests find entries in the front index without touching moka, so moka cannot see idleness
//! or recency by itself. Instead, each lookup stamps its slot with the current epoch (the
//! number of quarters of the idle timeout since the sweep started), and a task renews the
//! epoch every quarter: a slot whose stamp is more than four epochs old has not been used for
//! at least the idle timeout (at most 1.25 times it) and is invalidated; a slot used since the
//! last sweep is read through moka once, which keeps moka's least-recently-used order true to
//! the requests. Epochs count time, not sweeps, so a sweep delayed by a busy runtime still
//! ages every slot by the time that passed. The sweep runs on Tokio's clock, so paused-time
//! tests see it.

use std::{
    sync::{Arc, Weak, atomic::Ordering},
    time::Duration,
};

use tokio::time::{Instant, MissedTickBehavior};

use super::handle::Inner;

/// Epochs per idle timeout.
const EPOCHS_PER_TIMEOUT: u32 = 4;

/// Spawns the sweep of `inner` unless it runs already (or there is no runtime to run it on).
pub(crate) fn start(inner: &Arc<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if inner.start_sweeping() {
        let period = inner.idle_timeout / EPOCHS_PER_TIMEOUT;
        runtime.spawn(run(Arc::downgrade(inner), period));
    }
}

/// Until the pool is dropped.
async fn run(inner: Weak<Inner>, period: Duration) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(started + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let epochs = started.elapsed().as_nanos() / period.as_nanos().max(1);
        // Wraps after 2^32 quarters (over a century at a 4 ms timeout); ages are differences.
        sweep(&inner, epochs as u32).await;
    }
}

async fn sweep(inner: &Inner, epoch: u32) {
    let index = &inner.book.index;
    let previous = index.set_epoch(epoch);
    let (mut idle, mut used) = (Vec::new(), Vec::new());
    index.for_each(|slot| {
        let stamp = slot.cache.pool_mark().used.load(Ordering::Relaxed);
        if epoch.wrapping_sub(stamp) > EPOCHS_PER_TIMEOUT {
            idle.push(Arc::clone(&slot.reference));
        } else if stamp == previous {
            used.push(Arc::clone(&slot.reference));
        }
    });
    for reference in &used {
        inner.entries.get(reference).await;
    }
    for reference in &idle {
        tracing::debug!(subscriber = %reference, "pool entry idle; evicting");
        inner.entries.invalidate(reference).await;
    }
    inner.entries.run_pending_tasks().await;
}
