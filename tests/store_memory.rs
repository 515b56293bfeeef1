//! Replicas sharing a `MemoryStore` (issue 11), on paused time with an in-memory refresh
//! chain that counts every refresh token presented twice: restart, many lifetimes with
//! concurrent traffic, a lease holder that dies mid-refresh, the store going down and coming
//! back, pairs installed by hand, and no secret in `Debug` or traces.

mod common;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use common::{
    Captured,
    store::{Chain, ChainRefresher, Flaky, LIFETIME, key, replica},
};
use signalwire_auth::{
    MemoryStore, Refresh, RefreshError, StoredPair, TokenCache, TokenPair, TokenStore,
};
use tokio::{task::JoinSet, time::Instant};

const MINUTE: Duration = Duration::from_secs(60);
/// Past the advisory deadline (5 min before expiry), before the hard one (30 s before).
const TO_ADVISORY: Duration = Duration::from_secs(2 * 60 * 60 - 4 * 60);
const LEASE_TTL: Duration = Duration::from_secs(10);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Lets every task that can run, run (refreshes, timers, lease waits) on the paused clock.
async fn settle_all(caches: &[TokenCache]) {
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if caches.iter().all(|cache| {
            let stats = cache.stats();
            stats.attempts() == stats.refreshes() + stats.failures()
        }) {
            return;
        }
    }
    panic!("a refresh never finished");
}

/// `per_cache` concurrent authorizations from every cache; all must succeed.
async fn traffic(caches: &[TokenCache], per_cache: usize) -> usize {
    let mut requests = JoinSet::new();
    for cache in caches {
        for _ in 0..per_cache {
            let cache = cache.clone();
            requests.spawn(async move { cache.authorization().await });
        }
    }
    let mut sent = 0;
    while let Some(outcome) = requests.join_next().await {
        let authorization = outcome.unwrap();
        assert!(authorization.is_ok(), "{authorization:?}");
        sent += 1;
    }
    sent
}

async fn replicas(chain: &Arc<Chain>, store: &impl Clone2, n: usize) -> Vec<TokenCache> {
    let mut caches = Vec::new();
    for _ in 0..n {
        caches.push(
            replica(ChainRefresher::new(chain), store.clone2())
                .lease_ttl(LEASE_TTL)
                .start()
                .await
                .unwrap(),
        );
    }
    caches
}

/// `Clone` for the two store types used here (`impl TokenStore + Clone` in one bound).
trait Clone2 {
    type Store: TokenStore;
    fn clone2(&self) -> Self::Store;
}

impl Clone2 for MemoryStore {
    type Store = MemoryStore;
    fn clone2(&self) -> MemoryStore {
        self.clone()
    }
}

impl Clone2 for Flaky {
    type Store = Flaky;
    fn clone2(&self) -> Flaky {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarted_cache_resumes_from_the_store_without_a_mint() {
    let chain = Arc::new(Chain::default());
    let store = MemoryStore::new();
    let first = replica(ChainRefresher::new(&chain), store.clone())
        .start()
        .await
        .unwrap();
    assert_eq!(chain.mints(), 1, "nothing stored yet: one mint");
    let token = first.current().access_token().to_owned();
    let expires_at = first.current().expires_at();
    drop(first);

    // Restarted within the lifetime: the stored pair, with what is left of it.
    tokio::time::advance(30 * MINUTE).await;
    let second = replica(ChainRefresher::new(&chain), store.clone())
        .start()
        .await
        .unwrap();
    assert_eq!(chain.mints(), 1, "a valid stored pair costs no mint");
    assert_eq!(second.current().access_token(), token);
    let drift = expires_at.max(second.current().expires_at())
        - expires_at.min(second.current().expires_at());
    assert!(drift <= Duration::from_secs(1), "{drift:?}");
    drop(second);

    // Restarted after the access token expired (2 h), with its refresh token still valid
    // (2 h 5 min): no mint either; the first request refreshes it once, under the lease.
    tokio::time::advance(LIFETIME - 29 * MINUTE).await;
    let third = replica(ChainRefresher::new(&chain), store.clone())
        .start()
        .await
        .unwrap();
    assert_eq!(chain.mints(), 1);
    third.authorization().await.unwrap();
    assert_eq!(
        (chain.refreshes(), chain.mints(), chain.reused()),
        (1, 1, 0)
    );
    assert_ne!(third.current().access_token(), token);
    let stored = store.load(&key()).await.unwrap().unwrap();
    assert!(stored.same_access_token(&third.current()));
}

#[tokio::test(start_paused = true)]
async fn four_replicas_share_one_chain_over_many_lifetimes() {
    let chain = Arc::new(Chain::default());
    let store = MemoryStore::new();
    let caches = replicas(&chain, &store, 4).await;
    assert_eq!(
        chain.mints(),
        1,
        "the first replica mints, the others start from its pair"
    );
    traffic(&caches, 25).await;

    const ROUNDS: usize = 20;
    let mut sent = 0;
    for round in 1..=ROUNDS {
        tokio::time::advance(TO_ADVISORY).await;
        sent += traffic(&caches, 25).await;
        settle_all(&caches).await;
        assert_eq!(
            chain.refreshes(),
            round,
            "one refresh per lifetime, for all four"
        );
        let current = caches[0].current();
        for cache in &caches[1..] {
            assert_eq!(cache.current().access_token(), current.access_token());
        }
    }
    assert_eq!(sent, ROUNDS * 4 * 25);
    assert_eq!(chain.reused(), 0, "no refresh token presented twice");
    assert_eq!(chain.mints(), 1);
    let adopted: u64 = caches
        .iter()
        .map(|c| c.store_stats().unwrap().adopted())
        .sum();
    let leases: u64 = caches
        .iter()
        .map(|c| c.store_stats().unwrap().leases())
        .sum();
    assert_eq!(
        adopted as usize,
        ROUNDS * 3,
        "the other three adopt each refresh"
    );
    assert!(leases as usize >= ROUNDS, "{leases}");
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_dies_mid_refresh_is_taken_over_within_the_ttl_and_one_attempt() {
    let chain = Arc::new(Chain::default());
    let store = Flaky::default();
    // The holder: its refresh spends the token and never answers, and its lease is never
    // released (it died), so the lease only ends with its TTL.
    let dying_store = store.sibling();
    dying_store.no_release.store(true, Ordering::SeqCst);
    let dying_refresher = ChainRefresher::new(&chain);
    dying_refresher.hang.store(true, Ordering::SeqCst);
    let dying = replica(dying_refresher, dying_store)
        .lease_ttl(LEASE_TTL)
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .start()
        .await
        .unwrap();
    let survivor = replica(ChainRefresher::new(&chain), store.clone())
        .lease_ttl(LEASE_TTL)
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .start()
        .await
        .unwrap();
    tokio::time::advance(TO_ADVISORY).await;

    // (Its start took the lease once, to mint the first pair.)
    let leased_at_start = dying.store_stats().unwrap().leases();
    let holder = dying.clone();
    let hung = tokio::spawn(async move { holder.refresh_now().await });
    while dying.store_stats().unwrap().leases() == leased_at_start {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    let taken_over = survivor.refresh_now().await.unwrap();
    let took = started.elapsed();
    assert!(took <= LEASE_TTL + ATTEMPT_TIMEOUT, "{took:?}");
    assert!(
        took >= LEASE_TTL / 2,
        "waited for the holder first: {took:?}"
    );
    assert_eq!(
        chain.reused(),
        0,
        "the token the holder presented is never presented again"
    );
    assert_eq!(
        chain.mints(),
        2,
        "the survivor minted rather than present it"
    );
    let stored = store.inner.load(&key()).await.unwrap().unwrap();
    assert!(stored.same_access_token(&taken_over));
    hung.abort();
}

#[tokio::test(start_paused = true)]
async fn with_the_store_down_a_valid_token_serves_then_each_replica_mints_and_sharing_resumes() {
    let chain = Arc::new(Chain::default());
    let store = Flaky::default();
    let caches = replicas(&chain, &store, 2).await;
    traffic(&caches, 5).await;
    let first = caches[0].current().access_token().to_owned();

    store.set_down(true);
    tokio::time::advance(TO_ADVISORY).await;
    traffic(&caches, 10).await;
    settle_all(&caches).await;
    for cache in &caches {
        assert_eq!(
            cache.current().access_token(),
            first,
            "still valid: still served"
        );
    }
    assert_eq!(chain.refreshes(), 0, "never a refresh without the lease");

    // Past the hard deadline a new token is needed: each replica mints its own.
    tokio::time::advance(4 * MINUTE - Duration::from_secs(20)).await;
    traffic(&caches, 10).await;
    settle_all(&caches).await;
    assert_eq!(
        (chain.refreshes(), chain.mints(), chain.reused()),
        (0, 3, 0)
    );
    assert_ne!(
        caches[0].current().access_token(),
        caches[1].current().access_token()
    );

    // The store comes back: the next refresh is shared again.
    store.set_down(false);
    tokio::time::advance(TO_ADVISORY).await;
    traffic(&caches, 10).await;
    settle_all(&caches).await;
    assert_eq!(chain.reused(), 0);
    assert_eq!(chain.mints(), 3);
    assert_eq!(
        caches[0].current().access_token(),
        caches[1].current().access_token(),
        "one replica refreshed, the other adopted its pair"
    );
    assert_eq!(chain.refreshes(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_pair_installed_by_hand_is_stored_for_the_other_replicas() {
    let chain = Arc::new(Chain::default());
    let store = MemoryStore::new();
    let caches = replicas(&chain, &store, 2).await;
    let fresh = chain.first();
    caches[0].install(fresh.clone());
    while store.load(&key()).await.unwrap().unwrap().version() < 2 {
        tokio::task::yield_now().await;
    }
    caches[1].refresh_now().await.unwrap();
    assert_eq!(caches[1].current().access_token(), fresh.access_token());
    assert_eq!(chain.refreshes(), 0, "adopted, not refreshed");
    assert_eq!(caches[1].store_stats().unwrap().adopted(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cache_without_a_store_has_no_store_stats_and_never_mints() {
    let chain = Arc::new(Chain::default());
    let cache = TokenCache::builder(chain.first(), ChainRefresher::new(&chain)).build();
    assert!(cache.store_stats().is_none());
    cache.refresh_now().await.unwrap();
    assert_eq!((chain.refreshes(), chain.mints()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn secrets_never_reach_debug_output_or_traces() {
    let (logs, _guard) = Captured::install();

    let chain = Arc::new(Chain::default());
    let store = Flaky::default();
    let caches = replicas(&chain, &store, 2).await;
    tokio::time::advance(TO_ADVISORY).await;
    traffic(&caches, 3).await;
    settle_all(&caches).await;
    store.set_down(true);
    tokio::time::advance(LIFETIME - Duration::from_secs(20)).await;
    traffic(&caches, 3).await;
    settle_all(&caches).await;
    assert!(chain.refreshes() >= 1 && chain.mints() >= 2);

    let stored = StoredPair::from_pair(&caches[0].current(), 3);
    let shown = format!(
        "{stored:?} {:?} {:?} {:?} {:?} {:?}",
        caches[0],
        caches[0].store_stats(),
        store.inner,
        key(),
        replica(ChainRefresher::new(&chain), store.clone()),
    );
    let traces = logs.text();
    assert!(traces.contains("minting"), "{traces}");
    for text in [&shown, &traces] {
        assert!(!text.contains("access-"), "{text}");
        assert!(!text.contains("refresh-"), "{text}");
    }
}

/// A refresher whose mint never answers.
struct HangingMint;

impl Refresh for HangingMint {
    fn refresh(
        &self,
        _: &TokenPair,
    ) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        std::future::ready(Err(RefreshError::terminal("this refresher only mints")))
    }

    fn can_mint(&self) -> bool {
        true
    }

    fn mint(&self) -> impl Future<Output = Result<TokenPair, RefreshError>> + Send {
        std::future::pending()
    }
}

#[tokio::test(start_paused = true)]
async fn a_start_cancelled_while_it_holds_the_lease_releases_it() {
    let chain = Arc::new(Chain::default());
    let store = MemoryStore::new();
    // Nothing stored: this start takes the lease to mint, and is dropped mid-mint.
    let start = TokenCache::from_store(HangingMint, store.clone(), key())
        .lease_ttl(LEASE_TTL)
        .start();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), start)
            .await
            .is_err()
    );
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }

    // The next replica takes the lease at once instead of waiting out its TTL.
    let started = Instant::now();
    let cache = replica(ChainRefresher::new(&chain), store.clone())
        .lease_ttl(LEASE_TTL)
        .start()
        .await
        .unwrap();
    assert!(started.elapsed() < LEASE_TTL / 2, "{:?}", started.elapsed());
    let stats = cache.store_stats().unwrap();
    assert_eq!((stats.leases(), stats.lease_waits()), (1, 0));
    assert_eq!(chain.mints(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_start_waiting_for_a_first_mint_that_never_comes_mints_within_its_bound() {
    let chain = Arc::new(Chain::default());
    let store = Flaky::default();
    // The first replica takes the lease to mint, its mint never answers, and its lease is
    // never released (it died): the lease ends only with its TTL.
    let dying_store = store.sibling();
    dying_store.no_release.store(true, Ordering::SeqCst);
    let dying = tokio::spawn(
        TokenCache::from_store(HangingMint, dying_store, key())
            .lease_ttl(LEASE_TTL)
            .attempt_timeout(ATTEMPT_TIMEOUT)
            .start(),
    );
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }

    let started = Instant::now();
    let cache = replica(ChainRefresher::new(&chain), store.clone())
        .lease_ttl(LEASE_TTL)
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .start()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= LEASE_TTL / 2,
        "it waited for the holder first: {took:?}"
    );
    assert!(took <= LEASE_TTL + ATTEMPT_TIMEOUT, "{took:?}");
    assert_eq!(chain.mints(), 1);
    assert_eq!(cache.store_stats().unwrap().lease_waits(), 1);
    // The holder's mint was cut off at half its lease.
    let error = dying.await.unwrap().unwrap_err();
    assert!(error.is_refresh_failed(), "{error:?}");
}
