//! `BearerAuth`.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use tower::BoxError;
use tower_service::Service;

use super::{
    ResponseFuture,
    body::ReplayBody,
    replay::{authorize, save},
};
#[cfg(feature = "pool")]
use crate::{Error, Subscriber, TokenPool, error::Kind, pool::recent::Recent};
use crate::{
    TokenCache,
    cache::{LocalCache, State, Ticket},
    transport::TransportRule,
};

/// The service built by [`BearerAuthLayer`](crate::BearerAuthLayer).
pub struct BearerAuth<S> {
    inner: S,
    source: Source,
    target: TransportRule,
    /// `replay_limit`, or 0 for a token that cannot be refreshed (a replay could not help).
    replay_limit: usize,
}

/// Where a request's token comes from: one cache, or the cache of the request's
/// [`Subscriber`] in a pool, which may first have to be minted.
enum Source {
    One {
        cache: TokenCache,
        /// This clone's view of the current state: revalidated with one relaxed pointer load.
        local: LocalCache,
        /// Kept here so that a request does not read the shared cache to learn it.
        refreshable: bool,
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
                refreshable,
            } => Source::One {
                cache: cache.clone(),
                local: local.clone(),
                refreshable: *refreshable,
            },
            #[cfg(feature = "pool")]
            Source::Pool { pool, recent } => Source::Pool {
                pool: pool.clone(),
                recent: recent.clone(),
            },
        }
    }
}

impl<S> BearerAuth<S> {
    pub(crate) fn new(
        inner: S,
        cache: TokenCache,
        target: TransportRule,
        replay_limit: usize,
    ) -> Self {
        let refreshable = cache.is_refreshable();
        Self {
            inner,
            source: Source::One {
                local: cache.local(),
                cache,
                refreshable,
            },
            target,
            replay_limit: if refreshable { replay_limit } else { 0 },
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

impl<S: Clone> Clone for BearerAuth<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            source: self.source.clone(),
            target: self.target.clone(),
            replay_limit: self.replay_limit,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for BearerAuth<S> {
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

impl<S, B, ResB> Service<Request<B>> for BearerAuth<S>
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
        if let Err(error) = self.target.check(request.uri()) {
            return ResponseFuture::failed(error.into());
        }
        let replay_limit = self.replay_limit;
        match &mut self.source {
            Source::One {
                cache,
                local,
                refreshable,
            } => {
                let keep = refreshable.then(|| cache.clone());
                send(
                    &mut self.inner,
                    request,
                    cache,
                    keep,
                    local.load(),
                    replay_limit,
                )
            }
            #[cfg(feature = "pool")]
            Source::Pool { pool, recent } => {
                let Some(subscriber) = request.extensions().get::<Subscriber>() else {
                    return ResponseFuture::failed(Error::new(Kind::MissingSubscriber).into());
                };
                if let Some((cache, state)) = recent.get(pool, subscriber) {
                    let keep = Some(cache.clone());
                    return send(&mut self.inner, request, cache, keep, state, replay_limit);
                }
                match pool.find(subscriber) {
                    Some(cache) => {
                        recent.found(subscriber, &cache);
                        let state = cache.load();
                        let keep = Some(cache.clone());
                        send(&mut self.inner, request, &cache, keep, &state, replay_limit)
                    }
                    None => {
                        recent.missed();
                        let lookup = pool.lookup(subscriber);
                        let ready = take_ready(&mut self.inner);
                        ResponseFuture::looking_up(lookup, request, ready, replay_limit)
                    }
                }
            }
        }
    }
}

/// `self.inner` was driven ready for this request: it goes with the request, and a clone stays
/// behind for the next `poll_ready`.
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// The synchronous half of `TokenCache::authorization`: the same rules, without a future for a
/// token that can be sent now. `keep` is the cache the future holds for a 401 (`None` for a
/// fixed token).
// Always: a call left out of line builds the future in its own frame and copies it out.
#[inline(always)]
fn send<S, B, ResB>(
    inner: &mut S,
    request: Request<B>,
    cache: &TokenCache,
    keep: Option<TokenCache>,
    state: &Arc<State>,
    replay_limit: usize,
) -> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>> + Clone,
    B: Body,
{
    match cache.ticket(state) {
        Ticket::Ready => {
            let generation = state.generation;
            if replay_limit == 0 {
                let future = inner.call(authorize(request, &state.header));
                return ResponseFuture::sent(future, generation, None, None, keep);
            }
            let (request, saved) = save(request, &state.header, replay_limit);
            // Only a replayable request needs a service of its own for the second send.
            let spare = saved.as_ref().map(|_| inner.clone());
            let future = inner.call(request);
            ResponseFuture::sent(future, generation, saved, spare, keep)
        }
        Ticket::Wait(wait) => {
            let ready = take_ready(inner);
            ResponseFuture::waiting(wait, request, ready, cache.clone(), replay_limit)
        }
        Ticket::Failed(error) => ResponseFuture::failed(error.into()),
    }
}
