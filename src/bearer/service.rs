//! `BearerAuth`.

use std::{
    fmt,
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
use crate::{
    TokenCache,
    cache::{LocalCache, Ticket},
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

/// Where a request's token comes from. One cache today; a per-request lookup (a pool of caches
/// keyed by a request extension) is another variant, whose ticket may first await its cache.
enum Source {
    One {
        cache: TokenCache,
        /// This clone's view of the current state: revalidated with one relaxed pointer load.
        local: LocalCache,
        /// Kept here so that a request does not read the shared cache to learn it.
        refreshable: bool,
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

    /// The cache the tokens come from.
    pub fn token_cache(&self) -> &TokenCache {
        match &self.source {
            Source::One { cache, .. } => cache,
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
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("cache", self.token_cache())
            .field("target", &self.target)
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
        let Source::One {
            cache,
            local,
            refreshable,
        } = &mut self.source;
        let state = local.load();
        // The synchronous half of `TokenCache::authorization`: the same rules, without a future
        // for a token that can be sent now.
        match cache.ticket(state) {
            Ticket::Ready => {
                let generation = state.generation;
                let cache = refreshable.then(|| cache.clone());
                if replay_limit == 0 {
                    let future = self.inner.call(authorize(request, &state.header));
                    return ResponseFuture::sent(future, generation, None, None, cache);
                }
                let (request, saved) = save(request, &state.header, replay_limit);
                // Only a replayable request needs a service of its own for the second send.
                let spare = saved.as_ref().map(|_| self.inner.clone());
                let future = self.inner.call(request);
                ResponseFuture::sent(future, generation, saved, spare, cache)
            }
            Ticket::Wait(wait) => {
                // `self.inner` was driven ready for this request: it goes with the request, and
                // a clone stays behind for the next `poll_ready`.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(wait, request, ready, cache.clone(), replay_limit)
            }
            Ticket::Failed(error) => ResponseFuture::failed(error.into()),
        }
    }
}
