//! Helpers for the store tests: an in-memory refresh chain that counts every refresh token
//! presented twice (for paused-time tests, where real sockets cannot be used), a store
//! wrapper that can fail on demand, and caches built on both.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use signalwire_auth::{
    Error, MemoryStore, Refresh, RefreshError, Space, StoreFuture, StoreKey, StoredPair,
    TokenCache, TokenCacheBuilder, TokenPair, TokenStore,
};
use tokio::{sync::broadcast, time::Instant};

pub const LIFETIME: Duration = Duration::from_secs(2 * 60 * 60);
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60 + 5 * 60);

/// The key every store test shares.
pub fn key() -> StoreKey {
    StoreKey::new(&Space::new("example").unwrap(), "alice@example.com")
}

/// A refresh chain as SignalWire keeps it: each refresh token can be spent once; a second
/// presentation is counted and refused (terminal, like a 422).
#[derive(Default)]
pub struct Chain {
    issued: AtomicUsize,
    /// Refresh token → spent.
    tokens: Mutex<HashMap<String, bool>>,
    pub refreshes: AtomicUsize,
    pub mints: AtomicUsize,
    pub reused: AtomicUsize,
}

impl Chain {
    fn issue(&self) -> TokenPair {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let refresh = format!("refresh-{n}");
        self.tokens.lock().unwrap().insert(refresh.clone(), false);
        TokenPair::new(format!("access-{n}"), Instant::now(), LIFETIME)
            .and_then(|pair| pair.with_refresh_token(refresh, REFRESH_LIFETIME))
            .unwrap()
    }

    /// A pair minted outside any cache, for a builder.
    pub fn first(&self) -> TokenPair {
        self.issue()
    }

    pub fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }

    pub fn mints(&self) -> usize {
        self.mints.load(Ordering::SeqCst)
    }

    pub fn reused(&self) -> usize {
        self.reused.load(Ordering::SeqCst)
    }
}

/// [`Refresh`] over a [`Chain`]; `hang` makes refreshes never answer after spending the token
/// (a holder that stalls or dies mid-refresh).
#[derive(Clone)]
pub struct ChainRefresher {
    pub chain: Arc<Chain>,
    pub hang: Arc<AtomicBool>,
}

impl ChainRefresher {
    pub fn new(chain: &Arc<Chain>) -> Self {
        Self {
            chain: Arc::clone(chain),
            hang: Arc::default(),
        }
    }
}

impl Refresh for ChainRefresher {
    fn refresh(
        &self,
        current: &TokenPair,
    ) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        let chain = Arc::clone(&self.chain);
        let hang = self.hang.load(Ordering::SeqCst);
        let token = current.refresh_token().map(str::to_owned);
        async move {
            let token = token.ok_or_else(|| RefreshError::terminal("no refresh token"))?;
            {
                let mut tokens = chain.tokens.lock().unwrap();
                match tokens.get_mut(&token) {
                    Some(spent @ false) => *spent = true,
                    Some(true) => {
                        chain.reused.fetch_add(1, Ordering::SeqCst);
                        return Err(RefreshError::terminal("refresh token already spent"));
                    }
                    None => return Err(RefreshError::terminal("unknown refresh token")),
                }
            }
            if hang {
                std::future::pending::<()>().await;
            }
            chain.refreshes.fetch_add(1, Ordering::SeqCst);
            Ok(chain.issue())
        }
    }

    fn can_mint(&self) -> bool {
        true
    }

    fn mint(&self) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        let chain = Arc::clone(&self.chain);
        async move {
            chain.mints.fetch_add(1, Ordering::SeqCst);
            Ok(chain.issue())
        }
    }
}

/// A [`MemoryStore`] that can be taken down (every call fails with [`Error::is_store`]) and
/// whose lease releases can be lost (a holder that dies keeps its lease until the TTL).
#[derive(Clone, Default)]
pub struct Flaky {
    pub inner: MemoryStore,
    pub down: Arc<AtomicBool>,
    pub no_release: Arc<AtomicBool>,
    pub calls: Arc<AtomicUsize>,
}

impl Flaky {
    /// A handle on the same store and switches, whose releases are lost independently.
    pub fn sibling(&self) -> Self {
        Self {
            no_release: Arc::default(),
            ..self.clone()
        }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(Error::store(
                "connection refused (the test took the store down)",
            ))
        } else {
            Ok(())
        }
    }
}

impl TokenStore for Flaky {
    fn load<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredPair>> {
        match self.check() {
            Ok(()) => self.inner.load(key),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a StoreKey,
        expected_version: u64,
        pair: &'a StoredPair,
    ) -> StoreFuture<'a, bool> {
        match self.check() {
            Ok(()) => self.inner.compare_and_set(key, expected_version, pair),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a StoreKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        match self.check() {
            Ok(()) => self.inner.acquire_lease(key, owner, ttl),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn release_lease<'a>(&'a self, key: &'a StoreKey, owner: &'a str) -> StoreFuture<'a, bool> {
        if self.no_release.load(Ordering::SeqCst) {
            return Box::pin(async { Err(Error::store("the holder died before releasing")) });
        }
        match self.check() {
            Ok(()) => self.inner.release_lease(key, owner),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn changes(&self) -> broadcast::Receiver<StoreKey> {
        self.inner.changes()
    }
}

/// A replica's cache over `store`, refreshing through `refresher`, with exact deadlines.
pub fn replica(refresher: ChainRefresher, store: impl TokenStore) -> TokenCacheBuilder {
    TokenCache::from_store(refresher, store, key()).jitter(false)
}
