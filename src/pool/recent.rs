//! What a pooled service remembers of the subscriber it last sent for, so that a run of
//! requests for one subscriber costs about what a single `TokenCache` costs.
//!
//! A service over one cache keeps a `LocalCache` (`arc_swap::Cache`): the last state it saw,
//! revalidated with one relaxed pointer load. A pooled service cannot keep one per subscriber,
//! but it can keep one for the subscriber it saw twice in a row: then a request skips the
//! index (its shard lock, its map) and the `ArcSwap` guard. Traffic that alternates between
//! subscribers never builds one, and pays one comparison over the index path.
//!
//! The memo holds the entry's cache: once the pool evicts the entry (`PoolMark::evicted`), the
//! next request drops the memo and asks the index, which has the new entry or mints one. Until
//! then an idle service keeps one evicted cache alive, which no longer refreshes ahead of
//! requests (`Shared::arm`).

use std::sync::Arc;

use super::{Subscriber, TokenPool};
use crate::{
    TokenCache,
    cache::{LocalCache, State},
};

/// Starts empty, and a clone starts empty too: a clone per request (`oneshot` on a clone) would
/// otherwise pay for copying a memo it never uses.
#[derive(Default)]
pub(crate) struct Recent {
    seen: Seen,
}

#[derive(Default)]
enum Seen {
    #[default]
    Nothing,
    /// The hash of the subscriber the last request found in the index.
    Once(u64),
    /// The subscriber of the last two requests or more, and its entry.
    Held(Held),
}

struct Held {
    reference: Arc<str>,
    hash: u64,
    cache: TokenCache,
    local: LocalCache,
}

impl Clone for Recent {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Recent {
    /// The subscriber's cache and its current state, if this service holds them and the pool
    /// still does. Counts the hit and marks the entry used, as the index would.
    #[inline]
    pub(crate) fn get(
        &mut self,
        pool: &TokenPool,
        subscriber: &Subscriber,
    ) -> Option<(&TokenCache, &Arc<State>)> {
        let Seen::Held(held) = &mut self.seen else {
            return None;
        };
        let reference = subscriber.shared_reference();
        if held.hash != subscriber.hash()
            || !(Arc::ptr_eq(&held.reference, reference) || *held.reference == **reference)
            // The index then has the new entry, and `found` or `missed` lets this one go.
            || held.cache.pool_mark().is_evicted()
        {
            return None;
        }
        pool.note_hit(held.hash, &held.cache);
        Some((&held.cache, held.local.load()))
    }

    /// Notes that the index gave `cache` for `subscriber`: held from the second request in a
    /// row for the same subscriber.
    #[inline]
    pub(crate) fn found(&mut self, subscriber: &Subscriber, cache: &TokenCache) {
        let hash = subscriber.hash();
        match &mut self.seen {
            // Traffic that moves from subscriber to subscriber only writes the hash.
            Seen::Once(last) if *last != hash => *last = hash,
            Seen::Once(_) => self.hold(subscriber, cache),
            _ => self.seen = Seen::Once(hash),
        }
    }

    #[cold]
    #[inline(never)]
    fn hold(&mut self, subscriber: &Subscriber, cache: &TokenCache) {
        self.seen = Seen::Held(Held {
            reference: Arc::clone(subscriber.shared_reference()),
            hash: subscriber.hash(),
            cache: cache.clone(),
            local: cache.local(),
        });
    }

    /// Notes that the index did not have the subscriber.
    pub(crate) fn missed(&mut self) {
        self.seen = Seen::Nothing;
    }
}
