//! `BearerAuth`.

use std::{
    fmt,
    marker::PhantomData,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response, header::AUTHORIZATION};
use http_body::Body;
use tower::BoxError;
use tower_service::Service;

#[cfg(feature = "pool")]
use super::Lookup;
use super::{
    NoReplay, NoReplayFuture, ResponseFuture, WithReplay,
    body::ReplayBody,
    future::Wait,
    replay::{Replay, Saved, authorize, record},
};
#[cfg(feature = "pool")]
use crate::{Error, Subscriber, TokenPool, error::Kind, pool::recent::Recent};
use crate::{
    TokenCache,
    cache::{LocalCache, State, Ticket},
    transport::TransportRule,
};

/// The service built by [`BearerAuthLayer`](crate::BearerAuthLayer).
///
/// `M` is the layer's mode: [`WithReplay`] (the default), whose inner service receives
/// [`ReplayBody`] bodies so that a request can be sent again after a 401, or [`NoReplay`]
/// ([`BearerAuthLayer::without_replay`](crate::BearerAuthLayer::without_replay)), whose inner
/// service receives the request as the caller built it.
pub struct BearerAuth<S, M = WithReplay> {
    inner: S,
    source: Source,
    target: TransportRule,
    /// `replay_limit`, or 0 for a token that cannot be refreshed (a replay could not help).
    replay_limit: usize,
    mode: PhantomData<M>,
}

/// Where a request's token comes from: one cache, or the cache of the request's
/// [`Subscriber`] in a pool, which may first have to be minted.
enum Source {
    One {
        cache: TokenCache,
        /// This clone's view of the current state: revalidated with one relaxed pointer load.
        local: LocalCache,
        /// Handles for this service's clones to share out; present exactly when the cache is
        /// refreshable (each request's future then holds a handle, for a 401). Kept here so
        /// that a request does not read the shared cache to learn it.
        forks: Option<Arc<Forks>>,
    },
    #[cfg(feature = "pool")]
    Pool {
        pool: TokenPool,
        /// The entry of the subscriber this clone last sent for, if it sent for it twice.
        recent: Recent,
    },
}

impl Clone for Source {
    fn clone(&self) -> Self {
        match self {
            Source::One {
                cache,
                local,
                forks,
            } => Source::One {
                cache: match forks {
                    Some(forks) => forks.next(),
                    None => cache.clone(),
                },
                local: local.clone(),
                forks: forks.clone(),
            },
            #[cfg(feature = "pool")]
            Source::Pool { pool, recent } => Source::Pool {
                pool: pool.clone(),
                recent: recent.clone(),
            },
        }
    }
}

impl<S, M> BearerAuth<S, M> {
    pub(crate) fn new(
        inner: S,
        cache: TokenCache,
        target: TransportRule,
        replay_limit: usize,
    ) -> Self {
        let refreshable = cache.is_refreshable();
        let forks = refreshable.then(|| Arc::new(Forks::new(&cache)));
        Self {
            inner,
            source: Source::One {
                local: cache.local(),
                cache: forks.as_ref().map_or(cache, |forks| forks.next()),
                forks,
            },
            target,
            replay_limit: if refreshable { replay_limit } else { 0 },
            mode: PhantomData,
        }
    }

    #[cfg(feature = "pool")]
    pub(crate) fn pooled(
        inner: S,
        pool: TokenPool,
        target: TransportRule,
        replay_limit: usize,
    ) -> Self {
        Self {
            inner,
            source: Source::Pool {
                pool,
                recent: Recent::default(),
            },
            target,
            replay_limit,
            mode: PhantomData,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The cache the tokens come from; `None` for a [pooled](crate::BearerAuthLayer::pooled)
    /// service, whose caches are its pool's.
    pub fn token_cache(&self) -> Option<&TokenCache> {
        match &self.source {
            Source::One { cache, .. } => Some(cache),
            #[cfg(feature = "pool")]
            Source::Pool { .. } => None,
        }
    }

    /// The pool the tokens come from, for a [pooled](crate::BearerAuthLayer::pooled) service.
    #[cfg(feature = "pool")]
    pub fn token_pool(&self) -> Option<&TokenPool> {
        match &self.source {
            Source::One { .. } => None,
            Source::Pool { pool, .. } => Some(pool),
        }
    }
}

impl<S: Clone, M> Clone for BearerAuth<S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            source: self.source.clone(),
            target: self.target.clone(),
            replay_limit: self.replay_limit,
            mode: PhantomData,
        }
    }
}

impl<S: fmt::Debug, M> fmt::Debug for BearerAuth<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("BearerAuth");
        d.field("inner", &self.inner);
        match &self.source {
            Source::One { cache, .. } => d.field("cache", cache),
            #[cfg(feature = "pool")]
            Source::Pool { pool, .. } => d.field("pool", pool),
        };
        d.field("target", &self.target)
            .field("replay_limit", &self.replay_limit)
            .finish()
    }
}

impl<S, B, ResB> Service<Request<B>> for BearerAuth<S, WithReplay>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    ResB: Body,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        let replay_limit = self.replay_limit;
        match route(&mut self.source, &self.target, &request) {
            Route::Send {
                header,
                generation,
                keep,
            } => {
                if replay_limit == 0 {
                    let future = self.inner.call(authorize(request, header));
                    return ResponseFuture::sent(future, generation, None, None, keep);
                }
                // As `replay::prepare`, written out: each move of the request is a copy.
                let mut replay = Replay::Unavailable;
                let mut request = record(request, replay_limit, &mut replay);
                let saved = Saved::keep(&request, replay);
                request.headers_mut().insert(AUTHORIZATION, header);
                // Only a replayable request needs a service of its own for the second send.
                let spare = saved.as_ref().map(|_| self.inner.clone());
                let future = self.inner.call(request);
                ResponseFuture::sent(future, generation, saved, spare, keep)
            }
            Route::Wait { wait, cache } => {
                let ready = take_ready(&mut self.inner);
                ResponseFuture::waiting(wait, request, ready, cache, replay_limit)
            }
            #[cfg(feature = "pool")]
            Route::Lookup(lookup) => {
                let ready = take_ready(&mut self.inner);
                ResponseFuture::looking_up(lookup, request, ready, replay_limit)
            }
            Route::Fail(error) => ResponseFuture::failed(error),
        }
    }
}

impl<S, B, ResB> Service<Request<B>> for BearerAuth<S, NoReplay>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = NoReplayFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match route(&mut self.source, &self.target, &request) {
            Route::Send {
                header,
                generation,
                keep,
            } => {
                request.headers_mut().insert(AUTHORIZATION, header);
                NoReplayFuture::sent(self.inner.call(request), generation, keep)
            }
            Route::Wait { wait, cache } => {
                NoReplayFuture::waiting(wait, request, take_ready(&mut self.inner), cache)
            }
            #[cfg(feature = "pool")]
            Route::Lookup(lookup) => {
                NoReplayFuture::looking_up(lookup, request, take_ready(&mut self.inner))
            }
            Route::Fail(error) => NoReplayFuture::failed(error),
        }
    }
}

/// What `call` does with a request, decided without moving it: each move of a request through
/// a function's arguments is a copy of its 200-odd bytes that LLVM does not remove.
enum Route {
    /// Send now with this header. `keep` is the cache the future holds for a 401 (`None` for a
    /// fixed token).
    Send {
        header: HeaderValue,
        generation: u64,
        keep: Option<TokenCache>,
    },
    /// The token is about to expire or has: wait for the refresh in flight.
    Wait {
        wait: Wait,
        cache: TokenCache,
    },
    /// The subscriber is not in the pool's index: look it up (and mint it) first.
    #[cfg(feature = "pool")]
    Lookup(Lookup),
    Fail(BoxError),
}

/// Where the request's token comes from, under the rules of `TokenCache::authorization` (its
/// synchronous half: no future for a token that can be sent now).
// Always: out of line, it would build the route in its own frame and copy it out.
#[inline(always)]
fn route<B>(source: &mut Source, target: &TransportRule, request: &Request<B>) -> Route {
    if let Err(error) = target.check(request.uri()) {
        return Route::Fail(error.into());
    }
    match source {
        Source::One {
            cache,
            local,
            forks,
        } => {
            let keep = forks.is_some().then(|| cache.clone());
            ready(cache, local.load(), keep)
        }
        #[cfg(feature = "pool")]
        Source::Pool { pool, recent } => {
            let Some(subscriber) = request.extensions().get::<Subscriber>() else {
                return Route::Fail(Error::new(Kind::MissingSubscriber).into());
            };
            if let Some((cache, state)) = recent.get(pool, subscriber) {
                let keep = Some(cache.clone());
                return ready(cache, state, keep);
            }
            match pool.find(subscriber) {
                Some(cache) => {
                    recent.found(subscriber, &cache);
                    let state = cache.load();
                    let keep = Some(cache.clone());
                    ready(&cache, &state, keep)
                }
                None => {
                    recent.missed();
                    Route::Lookup(pool.lookup(subscriber))
                }
            }
        }
    }
}

/// The route for the token `state` of `cache`.
#[inline(always)]
fn ready(cache: &TokenCache, state: &Arc<State>, keep: Option<TokenCache>) -> Route {
    match cache.ticket(state) {
        Ticket::Ready => Route::Send {
            header: state.header.clone(),
            generation: state.generation,
            keep,
        },
        Ticket::Wait(wait) => Route::Wait {
            wait,
            cache: cache.clone(),
        },
        Ticket::Failed(error) => Route::Fail(error.into()),
    }
}

/// How many handles onto one cache the clones of a service share out.
const FORKS: usize = 8;

/// Handles onto one cache, each with its own count, taken by a service's clones in turn.
///
/// Every request's future holds a handle to the cache (a 401 refreshes through it): with one
/// handle for all, each request on every thread would increment and decrement one count, and
/// two threads sending at once would spend their time passing its cache line between cores.
/// Clones spread over several handles keep that traffic to the threads that share one.
struct Forks {
    next: AtomicUsize,
    each: [TokenCache; FORKS],
}

impl Forks {
    fn new(cache: &TokenCache) -> Self {
        Self {
            next: AtomicUsize::new(0),
            each: std::array::from_fn(|_| cache.fork()),
        }
    }

    fn next(&self) -> TokenCache {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.each[n % FORKS].clone()
    }
}

/// `self.inner` was driven ready for this request: it goes with the request, and a clone stays
/// behind for the next `poll_ready`.
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, time::Duration};

    use tokio::time::Instant;

    use super::*;
    use crate::{RefreshError, TokenPair};

    fn handle(service: &BearerAuth<()>) -> usize {
        match &service.source {
            Source::One { cache, .. } => cache.handle_address(),
            #[cfg(feature = "pool")]
            Source::Pool { .. } => unreachable!("built on one cache"),
        }
    }

    #[test]
    fn clones_take_the_forks_in_turn_each_with_a_count_on_a_line_of_its_own() {
        let pair = TokenPair::new("first", Instant::now(), Duration::from_secs(3600)).unwrap();
        let cache = TokenCache::new(pair, |_old: TokenPair| async move {
            Err::<TokenPair, _>(RefreshError::terminal(std::io::Error::other("unused")))
        });
        let first = BearerAuth::<()>::new((), cache.clone(), TransportRule::default(), 0);
        let clones: Vec<_> = (0..2 * FORKS).map(|_| first.clone()).collect();
        let handles: Vec<_> = std::iter::once(&first).chain(&clones).map(handle).collect();

        // The service and its first FORKS - 1 clones hold FORKS distinct handles, and then the
        // turn comes round again; none is the caller's own.
        let distinct: HashSet<_> = handles.iter().collect();
        assert_eq!(distinct.len(), FORKS);
        assert_eq!(handles[0], handles[FORKS]);
        assert!(!distinct.contains(&cache.handle_address()));
        assert!(handles.iter().all(|address| address % 64 == 0));
        #[cfg(feature = "pool")]
        for service in &clones {
            assert!(service.token_cache().unwrap().same_as(&cache));
        }

        // A fixed token is never held by a request's future: its clones share one handle.
        let fixed = TokenCache::fixed("static").unwrap();
        let service = BearerAuth::<()>::new((), fixed.clone(), TransportRule::default(), 0);
        assert_eq!(handle(&service.clone()), fixed.handle_address());
    }
}
