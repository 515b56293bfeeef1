//! The front index: what every pooled request reads, without touching moka.
//!
//! moka's lookup costs a few hundred instructions (hashing the key, its read-op channel, its
//! frequency sketch); a pooled request must cost about what a single cache costs. So the
//! entries moka holds are also kept here, in shards of a map keyed by the hash
//! [`Subscriber::new`] computed once: a request takes one shard's read lock, finds its slot by
//! that hash, and compares the reference. moka stays the owner: an entry enters here when it is
//! minted and leaves when moka's eviction listener says so. Two references whose 64-bit keyed
//! hashes collide are served correctly, the second one through moka.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::{
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use super::Subscriber;
use crate::TokenCache;

/// A power of two, enough that two cores rarely meet on one shard's lock.
const SHARDS: usize = 64;

pub(crate) struct Index {
    shards: Box<[Shard]>,
    /// Advanced by each sweep; a lookup stamps its slot with it.
    epoch: AtomicU32,
}

/// One lock and its hit counter on a cache line of their own.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    map: RwLock<HashMap<u64, Slot, BuildHasherDefault<Prehashed>>>,
    hits: AtomicU64,
}

pub(crate) struct Slot {
    pub(crate) reference: Arc<str>,
    /// Its pool mark holds the sweep epoch of the last request that used it (`sweep.rs`).
    pub(crate) cache: TokenCache,
}

/// The keys are already keyed SipHash values: hashing them again would only cost time.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; this keeps the hasher total anyway.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Nothing is left half-written under these locks: a panic elsewhere does not taint them.
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Index {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            epoch: AtomicU32::new(0),
        }
    }

    /// Bits of the hash the maps themselves do not use (hashbrown takes the low bits for the
    /// bucket and the top seven for its tags), so every shard's map stays well spread.
    #[inline]
    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// The subscriber's cache, if it is here; marks it used in this epoch.
    #[inline]
    pub(crate) fn get(&self, subscriber: &Subscriber) -> Option<TokenCache> {
        let shard = self.shard(subscriber.hash());
        let map = read(&shard.map);
        let slot = map.get(&subscriber.hash())?;
        let reference = subscriber.shared_reference();
        if !Arc::ptr_eq(&slot.reference, reference) && *slot.reference != **reference {
            return None;
        }
        self.note_hit(subscriber.hash(), &slot.cache);
        Some(slot.cache.clone())
    }

    /// Counts a request that found `cache`, the entry for the subscriber whose hash is
    /// `hash`, and marks the entry used in this epoch.
    #[inline]
    pub(crate) fn note_hit(&self, hash: u64, cache: &TokenCache) {
        // Written once per epoch, not per request: a shared line written by every request
        // would cost the other core a miss each time.
        let epoch = self.epoch.load(Ordering::Relaxed);
        let used = &cache.pool_mark().used;
        if used.load(Ordering::Relaxed) != epoch {
            used.store(epoch, Ordering::Relaxed);
        }
        self.shard(hash).hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a freshly minted entry, replacing an older one for the same reference (whose
    /// eviction has not been reported yet). A slot held by another reference with the same
    /// hash is left alone.
    pub(crate) fn insert(&self, reference: Arc<str>, cache: TokenCache) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        let hash = super::subscriber::hash_reference(&reference);
        let mut map = write(&self.shard(hash).map);
        cache.pool_mark().used.store(epoch, Ordering::Relaxed);
        let slot = Slot { reference, cache };
        match map.get_mut(&hash) {
            Some(old) if old.reference != slot.reference => {}
            Some(old) => *old = slot,
            None => {
                map.insert(hash, slot);
            }
        }
    }

    /// Removes `reference`'s slot if it still holds `cache` (a newer entry stays).
    pub(crate) fn remove(&self, reference: &str, cache: &TokenCache) {
        let hash = super::subscriber::hash_reference(reference);
        let mut map = write(&self.shard(hash).map);
        if map.get(&hash).is_some_and(|slot| slot.cache.same_as(cache)) {
            map.remove(&hash);
        }
    }

    /// Calls `f` with every slot, one shard at a time (under its read lock: keep `f` short).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Slot)) {
        for shard in self.shards.iter() {
            read(&shard.map).values().for_each(&mut f);
        }
    }

    /// Starts `epoch`, and returns the one it ends.
    pub(crate) fn set_epoch(&self, epoch: u32) -> u32 {
        self.epoch.swap(epoch, Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> u64 {
        self.shards.iter().map(|s| read(&s.map).len() as u64).sum()
    }

    pub(crate) fn hits(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.hits.load(Ordering::Relaxed))
            .sum()
    }
}
