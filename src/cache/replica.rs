//! A cache's link to a [`TokenStore`]: the lease protocol around each refresh.
//!
//! # One attempt, with a store
//!
//! | step | outcome | next |
//! | --- | --- | --- |
//! | take the lease (`acquire_lease`) | taken | read the stored pair (below) |
//! | | held by another replica | read: a newer pair is adopted; else wait for a change or a poll interval, and try again, for at most the lease TTL plus the attempt timeout |
//! | | the store fails | [without the store](#without-the-store) |
//! | read, holding the lease | a newer pair, still fresh | adopt it; no refresh |
//! | | ours, or a newer one near expiry | mark it *presented* (compare-and-set), refresh it, write the result (compare-and-set) |
//! | | marked presented (its holder vanished mid-refresh), garbage, or gone while others may hold ours | mint instead (no refresh token presented), write it |
//! | write | written | install; release the lease |
//! | | someone else wrote first | adopt theirs, discard ours (it spent nothing anyone else holds) |
//! | | the store fails until the lease ends | install ours unshared |
//!
//! # Without the store
//!
//! Never refresh without the lease. While the current token does not yet need replacing, the
//! attempt fails transiently (the token keeps serving; the next attempt comes no later than
//! the hard deadline); once it does (hard deadline, or a 401), mint on this replica.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::broadcast, time::Instant};

use super::{RefreshError, TokenPair, core::DynRefresh, core::lock, settings::Settings};
use crate::{
    Error, StoreKey, StoredPair, TokenStore,
    error::{Chain, Kind},
};

/// See [`StoreLink::lease_guard`].
pub(crate) struct LeaseGuard {
    held: Option<(Arc<dyn TokenStore>, StoreKey, Box<str>)>,
}

impl LeaseGuard {
    /// The lease is released the ordinary way.
    pub(crate) fn disarm(&mut self) {
        self.held = None;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some((store, key, owner)) = self.held.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // If this fails too, the lease ends with its TTL.
                let _ = store.release_lease(&key, &owner).await;
            });
        }
    }
}

/// How a cache starting with nothing usable stored gets its first pair.
pub(crate) enum FirstMint {
    /// It holds the lease: it mints.
    Leased,
    /// Another replica stored this meanwhile.
    Stored(StoredPair),
    /// The store failed, or the lease holder stored nothing in time: it mints alone.
    Alone,
}

/// What this cache knows of the store: the version of the last pair it read or wrote, and
/// whether its installed pair is that stored pair (so other replicas may hold it).
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Known {
    pub(crate) version: u64,
    pub(crate) shared: bool,
}

/// How a pair was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum How {
    Refreshed,
    Minted,
    Adopted,
}

/// A pair to install, and the version at which the store holds exactly it, if it does.
pub(crate) struct Fetched {
    pub(crate) pair: TokenPair,
    pub(crate) stored: Option<u64>,
    pub(crate) how: How,
}

impl Fetched {
    pub(crate) fn unstored(pair: TokenPair) -> Self {
        Self {
            pair,
            stored: None,
            how: How::Refreshed,
        }
    }
}

#[derive(Default)]
struct Counters {
    leases: AtomicU64,
    lease_waits: AtomicU64,
    adopted: AtomicU64,
    written: AtomicU64,
    conflicts: AtomicU64,
    mints: AtomicU64,
    store_errors: AtomicU64,
    corrupt: AtomicU64,
    unwritten: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The store a cache reads through, its key, and this replica's lease owner id.
pub(crate) struct StoreLink {
    store: Arc<dyn TokenStore>,
    key: StoreKey,
    owner: Box<str>,
    lease_ttl: Duration,
    known: Mutex<Known>,
    counters: Counters,
    /// Hand-installed pairs are written one at a time, in install order.
    writes: tokio::sync::Mutex<()>,
}

impl StoreLink {
    pub(crate) fn new(store: Arc<dyn TokenStore>, key: StoreKey, lease_ttl: Duration) -> Self {
        Self {
            store,
            key,
            owner: owner_id().into(),
            lease_ttl,
            known: Mutex::default(),
            counters: Counters::default(),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn key(&self) -> &StoreKey {
        &self.key
    }

    pub(crate) fn known(&self) -> Known {
        *lock(&self.known)
    }

    /// Records what the store holds of the pair just installed: `Some(version)` if exactly
    /// it, `None` if it is this replica's alone.
    pub(crate) fn set_known(&self, stored: Option<u64>) {
        let mut known = lock(&self.known);
        match stored {
            Some(version) => {
                *known = Known {
                    version: version.max(known.version),
                    shared: true,
                }
            }
            None => known.shared = false,
        }
    }

    pub(crate) fn note_adopted(&self) {
        bump(&self.counters.adopted);
    }

    /// One store call, its failure counted.
    async fn call<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        let result = call.await;
        if let Err(error) = &result {
            if error.is_store_corrupt() {
                bump(&self.counters.corrupt);
            } else {
                bump(&self.counters.store_errors);
            }
        }
        result
    }

    /// The stored pair, for a cache starting: `Ok(None)` if there is none worth using.
    pub(crate) async fn load(&self) -> Result<Option<StoredPair>, Error> {
        self.call(self.store.load(&self.key)).await
    }

    /// One refresh attempt under the lease protocol (the table at the top of this file).
    /// `urgent` says whether the current token needs replacing now.
    pub(crate) async fn attempt(
        &self,
        refresher: &dyn DynRefresh,
        settings: &Settings,
        current: &TokenPair,
        urgent: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Fetched, RefreshError> {
        let give_up = Instant::now() + self.lease_ttl + settings.attempt_timeout;
        // Subscribed before the first look, so a write after it is not missed.
        let mut changes = self.store.changes();
        let mut waited = false;
        loop {
            let lease_from = Instant::now();
            let acquired = match self
                .call(
                    self.store
                        .acquire_lease(&self.key, &self.owner, self.lease_ttl),
                )
                .await
            {
                Ok(acquired) => acquired,
                Err(error) => return self.without_store(refresher, settings, error, urgent).await,
            };
            if acquired {
                bump(&self.counters.leases);
                let result = self
                    .as_holder(refresher, settings, current, lease_from, urgent)
                    .await;
                self.release().await;
                return result;
            }
            if !waited {
                bump(&self.counters.lease_waits);
                waited = true;
            }
            match self.call(self.store.load(&self.key)).await {
                Ok(Some(stored)) if self.is_newer(&stored, current) => {
                    if let Ok(pair) = stored.to_pair() {
                        return Ok(self.adopt(pair, stored.version()));
                    }
                }
                Ok(_) => {}
                // The lease holder overwrites it.
                Err(error) if error.is_store_corrupt() => {}
                Err(error) => return self.without_store(refresher, settings, error, urgent).await,
            }
            if Instant::now() >= give_up {
                return Err(RefreshError::transient(
                    Error::new(Kind::Timeout).with_detail(
                        "the replica holding the refresh lease stored no new pair in time",
                    ),
                ));
            }
            self.pause(&mut changes, give_up).await;
        }
    }

    /// Releases the key's lease, which this cache holds.
    pub(crate) async fn release(&self) {
        match self
            .call(self.store.release_lease(&self.key, &self.owner))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(key = %self.key, "refresh lease had expired before its release")
            }
            Err(error) => {
                tracing::debug!(key = %self.key, error = %Chain(&error), "could not release the refresh lease; it expires on its own")
            }
        }
    }

    /// At start, with nothing usable stored and a mint ahead: takes the key's lease for the
    /// mint, or waits for the replica holding it to store its pair, for at most the lease TTL
    /// plus `attempt_timeout`.
    pub(crate) async fn first_mint(&self, attempt_timeout: Duration) -> FirstMint {
        let give_up = Instant::now() + self.lease_ttl + attempt_timeout;
        let mut changes = self.store.changes();
        let mut waited = false;
        loop {
            match self
                .call(
                    self.store
                        .acquire_lease(&self.key, &self.owner, self.lease_ttl),
                )
                .await
            {
                Ok(true) => {
                    bump(&self.counters.leases);
                    return FirstMint::Leased;
                }
                Ok(false) if !waited => {
                    bump(&self.counters.lease_waits);
                    waited = true;
                }
                Ok(false) => {}
                Err(_) => return FirstMint::Alone,
            }
            match self.call(self.store.load(&self.key)).await {
                Ok(Some(stored)) if stored.is_usable() => return FirstMint::Stored(stored),
                Ok(_) => {}
                Err(error) if error.is_store_corrupt() => {}
                Err(_) => return FirstMint::Alone,
            }
            if Instant::now() >= give_up {
                tracing::debug!(key = %self.key, "no replica stored a first pair in time; minting alone");
                return FirstMint::Alone;
            }
            self.pause(&mut changes, give_up).await;
        }
    }

    /// Waits for a change of the key, or a poll interval, but not past `give_up`.
    async fn pause(&self, changes: &mut broadcast::Receiver<StoreKey>, give_up: Instant) {
        let poll =
            (self.lease_ttl / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
        let poll = poll.min(give_up.saturating_duration_since(Instant::now()));
        tokio::select! {
            () = changed(changes, &self.key) => {}
            () = tokio::time::sleep(poll) => {}
        }
    }

    /// The deadline of a call made while holding the lease: half the lease at most, so that
    /// its result is stored before another replica may take over.
    pub(crate) fn holder_deadline(&self, attempt_timeout: Duration) -> Duration {
        attempt_timeout.min(self.lease_ttl / 2)
    }

    /// Releases the key's lease if dropped before [`LeaseGuard::disarm`]: a start cancelled
    /// while it holds the lease does not leave the other replicas waiting out its TTL.
    pub(crate) fn lease_guard(&self) -> LeaseGuard {
        LeaseGuard {
            held: Some((
                Arc::clone(&self.store),
                self.key.clone(),
                self.owner.clone(),
            )),
        }
    }

    /// Whether `stored` is a pair from another replica worth taking over ours.
    fn is_newer(&self, stored: &StoredPair, current: &TokenPair) -> bool {
        stored.version() > self.known().version
            && !stored.same_access_token(current)
            && stored.is_usable()
            && !stored.is_presented()
    }

    fn adopt(&self, pair: TokenPair, version: u64) -> Fetched {
        tracing::debug!(key = %self.key, version, "adopting the pair another replica stored");
        Fetched {
            pair,
            stored: Some(version),
            how: How::Adopted,
        }
    }

    async fn as_holder(
        &self,
        refresher: &dyn DynRefresh,
        settings: &Settings,
        current: &TokenPair,
        lease_from: Instant,
        urgent: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Fetched, RefreshError> {
        let lease_end = lease_from + self.lease_ttl;
        let known = self.known();
        // What to do: refresh `base` after marking `mark` presented, or mint; write over
        // `expected`.
        let (expected, base, mark, mint) = match self.call(self.store.load(&self.key)).await {
            Err(error) if error.is_store_corrupt() => {
                tracing::warn!(key = %self.key, error = %Chain(&error), "the stored pair is garbage; minting a new one to overwrite it");
                (0, None, None, true)
            }
            Err(error) => return self.without_store(refresher, settings, error, urgent).await,
            Ok(Some(stored)) if stored.same_access_token(current) => {
                let presented = stored.is_presented();
                (
                    stored.version(),
                    Some(current.clone()),
                    Some(stored),
                    presented,
                )
            }
            Ok(Some(stored))
                if self.is_newer(&stored, current)
                    || (stored.version() > known.version && stored.is_presented()) =>
            {
                let presented = stored.is_presented();
                match stored.to_pair() {
                    Ok(pair) if !presented && is_fresh(&pair, settings) => {
                        return Ok(self.adopt(pair, stored.version()));
                    }
                    Ok(pair) => (stored.version(), Some(pair), Some(stored), presented),
                    Err(_) => (stored.version(), None, None, true),
                }
            }
            // Absent, older, or not ours: the store lost our pair. If other replicas may
            // hold it, one of them may have spent its refresh token: never present it.
            Ok(found) => (
                found.as_ref().map_or(0, StoredPair::version),
                Some(current.clone()),
                None,
                known.shared,
            ),
        };
        let deadline = self.holder_deadline(settings.attempt_timeout);
        let mint = mint && refresher.can_mint();
        let (pair, expected, how) = if mint {
            bump(&self.counters.mints);
            tracing::debug!(key = %self.key, "minting a new pair under the refresh lease");
            (
                bounded(deadline, refresher.mint_boxed()).await?,
                expected,
                How::Minted,
            )
        } else {
            let base = base.unwrap_or_else(|| current.clone());
            let expected = match mark {
                Some(stored) => self.mark_presented(stored).await?,
                None => expected,
            };
            (
                bounded(deadline, refresher.refresh_boxed(&base)).await?,
                expected,
                How::Refreshed,
            )
        };
        Ok(self
            .write(expected, known.version, pair, how, lease_end)
            .await)
    }

    /// Marks the stored pair as presented before its refresh token is: should this replica
    /// vanish now, the next lease holder knows the token may be spent. The new expected
    /// version.
    async fn mark_presented(&self, stored: StoredPair) -> Result<u64, RefreshError> {
        let expected = stored.version();
        let marked = stored.presented().with_version(expected + 1);
        match self
            .call(self.store.compare_and_set(&self.key, expected, &marked))
            .await
        {
            Ok(true) => Ok(expected + 1),
            Ok(false) => Err(RefreshError::transient(
                Error::new(Kind::Store).with_detail(
                    "the stored pair changed under the refresh lease (the lease expired?)",
                ),
            )),
            Err(error) => Err(RefreshError::transient(error)),
        }
    }

    /// Writes `pair` by version while the lease lasts (the table at the top of this file).
    async fn write(
        &self,
        mut expected: u64,
        floor: u64,
        pair: TokenPair,
        how: How,
        lease_end: Instant,
    ) -> Fetched {
        let mut version = expected.max(floor) + 1;
        let mut pause = Duration::from_millis(20);
        loop {
            let stored = StoredPair::from_pair(&pair, version);
            match self
                .call(self.store.compare_and_set(&self.key, expected, &stored))
                .await
            {
                Ok(true) => {
                    bump(&self.counters.written);
                    return Fetched {
                        pair,
                        stored: Some(version),
                        how,
                    };
                }
                Ok(false) => match self.call(self.store.load(&self.key)).await {
                    Ok(Some(theirs))
                        if theirs.version() > expected
                            && theirs.is_usable()
                            && !theirs.is_presented() =>
                    {
                        if let Ok(adopted) = theirs.to_pair() {
                            // A stale writer: ours spent nothing anyone else holds.
                            bump(&self.counters.conflicts);
                            tracing::debug!(key = %self.key, "another replica stored a pair first; discarding ours");
                            return self.adopt(adopted, theirs.version());
                        }
                        expected = theirs.version();
                    }
                    Ok(found) => expected = found.as_ref().map_or(0, StoredPair::version),
                    Err(error) if error.is_store_corrupt() => expected = 0,
                    Err(_) => {}
                },
                Err(_) => {}
            }
            version = version.max(expected + 1);
            if Instant::now() + pause >= lease_end {
                bump(&self.counters.unwritten);
                tracing::warn!(key = %self.key, "could not store the new pair while the lease lasted; it serves this replica only");
                return Fetched {
                    pair,
                    stored: None,
                    how,
                };
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The store failed: mint if the token needs replacing now, else fail transiently.
    async fn without_store(
        &self,
        refresher: &dyn DynRefresh,
        settings: &Settings,
        error: Error,
        urgent: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Fetched, RefreshError> {
        if urgent() && refresher.can_mint() {
            tracing::warn!(key = %self.key, error = %Chain(&error), "token store unreachable and a new token is needed: minting on this replica");
            bump(&self.counters.mints);
            let pair = bounded(settings.attempt_timeout, refresher.mint_boxed()).await?;
            return Ok(Fetched {
                pair,
                stored: None,
                how: How::Minted,
            });
        }
        tracing::warn!(key = %self.key, error = %Chain(&error), "token store unreachable; the current token serves while it is valid");
        Err(RefreshError::transient(error))
    }

    /// Writes a pair installed by hand (or at start) over whatever is stored: the version it
    /// is stored at, or `None` if the store failed.
    pub(crate) async fn publish(&self, pair: &TokenPair) -> Option<u64> {
        let _order = self.writes.lock().await;
        for _ in 0..3 {
            let expected = match self.call(self.store.load(&self.key)).await {
                Ok(found) => found.as_ref().map_or(0, StoredPair::version),
                Err(error) if error.is_store_corrupt() => 0,
                Err(_) => return None,
            };
            let version = expected.max(self.known().version) + 1;
            let stored = StoredPair::from_pair(pair, version);
            match self
                .call(self.store.compare_and_set(&self.key, expected, &stored))
                .await
            {
                Ok(true) => {
                    bump(&self.counters.written);
                    return Some(version);
                }
                Ok(false) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// Writes a pair this replica starts with, unless another replica stored one first:
    /// `Ok(Some(theirs))` then.
    pub(crate) async fn publish_first(
        &self,
        pair: &TokenPair,
        expected: u64,
    ) -> Result<Result<u64, StoredPair>, Error> {
        let stored = StoredPair::from_pair(pair, expected + 1);
        if self
            .call(self.store.compare_and_set(&self.key, expected, &stored))
            .await?
        {
            bump(&self.counters.written);
            return Ok(Ok(expected + 1));
        }
        match self.call(self.store.load(&self.key)).await {
            Ok(Some(theirs)) if theirs.is_usable() => Ok(Err(theirs)),
            Ok(_) => Ok(Ok(0)),
            Err(error) => Err(error),
        }
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StoreStats {
            leases: get(&c.leases),
            lease_waits: get(&c.lease_waits),
            adopted: get(&c.adopted),
            written: get(&c.written),
            conflicts: get(&c.conflicts),
            mints: get(&c.mints),
            store_errors: get(&c.store_errors),
            corrupt: get(&c.corrupt),
            unwritten: get(&c.unwritten),
            version: self.known().version,
        }
    }
}

impl fmt::Debug for StoreLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLink")
            .field("key", &self.key)
            .field("lease_ttl", &self.lease_ttl)
            .field("known", &self.known())
            .finish_non_exhaustive()
    }
}

/// A pair another replica just stored is used as it is unless it is already in its refresh
/// window.
fn is_fresh(pair: &TokenPair, settings: &Settings) -> bool {
    let (advisory_at, _) = super::settings::deadlines(pair, &settings.margins, None);
    Instant::now() < advisory_at
}

/// Resolves once `key` was written, or when notifications were lost (look again then).
async fn changed(changes: &mut broadcast::Receiver<StoreKey>, key: &StoreKey) {
    loop {
        match changes.recv().await {
            Ok(written) if &written == key => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            // A store without notifications: the poll interval does the work.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// A refresher call bounded by `deadline`.
pub(crate) async fn bounded(
    deadline: Duration,
    call: impl Future<Output = Result<TokenPair, RefreshError>>,
) -> Result<TokenPair, RefreshError> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| {
            Err(RefreshError::transient(
                Error::new(Kind::Timeout).with_detail(
                    "the refresh ran past its deadline (the lease's half, or the attempt timeout)",
                ),
            ))
        })
}

/// An owner id unique to this cache: the process id and 64 random bits.
fn owner_id() -> String {
    use std::{collections::hash_map::RandomState, hash::BuildHasher};
    let random = RandomState::new().hash_one(std::time::SystemTime::now());
    format!("{}-{random:016x}", std::process::id())
}

/// Counters of a cache's use of its [`TokenStore`], from
/// [`TokenCache::store_stats`](crate::TokenCache::store_stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    leases: u64,
    lease_waits: u64,
    adopted: u64,
    written: u64,
    conflicts: u64,
    mints: u64,
    store_errors: u64,
    corrupt: u64,
    unwritten: u64,
    version: u64,
}

impl StoreStats {
    /// Leases this cache took: to refresh, or at start to mint the first pair.
    pub fn leases(&self) -> u64 {
        self.leases
    }

    /// Refresh attempts that found the lease held by another replica and waited.
    pub fn lease_waits(&self) -> u64 {
        self.lease_waits
    }

    /// Pairs another replica stored that this cache installed instead of refreshing.
    pub fn adopted(&self) -> u64 {
        self.adopted
    }

    /// Pairs this cache wrote to the store.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes that found another replica's newer pair and were discarded for it.
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// New pairs minted instead of refreshed (store unreachable when a token was needed,
    /// garbage stored, a refresh token possibly spent by a vanished lease holder).
    pub fn mints(&self) -> u64 {
        self.mints
    }

    /// Store calls that failed (unreachable, timed out).
    pub fn store_errors(&self) -> u64 {
        self.store_errors
    }

    /// Loads that found garbage under the key.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Pairs installed although they could not be stored while the lease lasted.
    pub fn unwritten(&self) -> u64 {
        self.unwritten
    }

    /// The store version of the last pair this cache read or wrote (0: none yet).
    pub fn version(&self) -> u64 {
        self.version
    }
}
