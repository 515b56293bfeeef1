//! The idle sweep: evicts entries nobody looked up for the idle timeout, and tells moka which
//! entries are in use.
//!
//! Requests find entries in the front index without touching moka, so moka cannot see idleness
//! or recency by itself. Instead, each lookup stamps its slot with the current epoch, and a
//! task advances the epoch every quarter of the idle timeout: a slot whose stamp is more than
//! four epochs old has not been used for at least the idle timeout (at most 1.25 times it)
//! and is invalidated; a slot used in the last epoch is read through moka once, which keeps
//! moka's least-recently-used order true to the requests. The sweep runs on Tokio's clock, so
//! paused-time tests see it.

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
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        sweep(&inner).await;
    }
}

async fn sweep(inner: &Inner) {
    let index = &inner.book.index;
    let epoch = index.advance_epoch();
    let (mut idle, mut used) = (Vec::new(), Vec::new());
    index.for_each(
        |slot| match epoch.wrapping_sub(slot.used.load(Ordering::Relaxed)) {
            age if age > EPOCHS_PER_TIMEOUT => idle.push(Arc::clone(&slot.reference)),
            1 => used.push(Arc::clone(&slot.reference)),
            _ => {}
        },
    );
    for reference in &used {
        inner.entries.get(reference).await;
    }
    for reference in &idle {
        tracing::debug!(subscriber = %reference, "pool entry idle; evicting");
        inner.entries.invalidate(reference).await;
    }
    inner.entries.run_pending_tasks().await;
}
