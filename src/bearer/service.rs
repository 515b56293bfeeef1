//! `BearerAuth`.

use std::{
    fmt,
    task::{Context, Poll},
};

use http::{Extensions, HeaderMap, Method, Request, Response, Uri, Version, header::AUTHORIZATION};
use http_body::Body;
use tower::BoxError;
use tower_service::Service;

use super::{
    ResponseFuture,
    body::{Replay, ReplayBody},
};
use crate::{
    TokenCache,
    cache::{LocalCache, State, Ticket},
    transport::TransportRule,
};

/// The service built by [`BearerAuthLayer`](crate::BearerAuthLayer).
pub struct BearerAuth<S> {
    inner: S,
    cache: TokenCache,
    /// This clone's view of the current state: revalidated with one relaxed pointer load.
    local: LocalCache,
    target: TransportRule,
    /// `replay_limit`, or 0 for a token that cannot be refreshed (a replay could not help).
    replay_limit: usize,
    /// Kept here so that a request does not read the shared cache to learn it.
    refreshable: bool,
}

/// Marks a 401 response that [`BearerAuth`] passed back without replaying its request:
///
/// - the request body could not be replayed (it streamed past the replay limit, or replay is
///   off): a refresh was started (unless one was already failing), so sending the request again
///   will use a new token;
/// - or the token was itself obtained because of a 401 moments ago: no refresh was started, as
///   the server is refusing something other than the token's age (a missing scope, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplaySkipped;

impl<S> BearerAuth<S> {
    pub(crate) fn new(inner: S, cache: TokenCache, target: TransportRule, replay_limit: usize) -> Self {
        let refreshable = cache.is_refreshable();
        Self {
            inner,
            local: cache.local(),
            cache,
            target,
            replay_limit: if refreshable { replay_limit } else { 0 },
            refreshable,
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
        &self.cache
    }
}

impl<S: Clone> Clone for BearerAuth<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            local: self.local.clone(),
            target: self.target.clone(),
            replay_limit: self.replay_limit,
            refreshable: self.refreshable,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for BearerAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
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
        let state = self.local.load();
        match self.cache.ticket(state) {
            Ticket::Ready => {
                let generation = state.generation;
                let cache = self.refreshable.then(|| self.cache.clone());
                if replay_limit == 0 {
                    let future = self.inner.call(authorize(request, state));
                    return ResponseFuture::sent(future, generation, None, None, cache);
                }
                let (request, saved) = save(request, state, replay_limit);
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
                ResponseFuture::waiting(wait, request, ready, self.cache.clone(), replay_limit)
            }
            Ticket::Failed(error) => ResponseFuture::failed(error.into()),
        }
    }
}

/// A request's parts, kept so it can be sent again after a 401.
pub(crate) struct Saved<B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    replay: Replay<B>,
}

impl<B> Saved<B> {
    /// The request to send again, without its `Authorization`; `None` if the body was not
    /// recorded in full.
    pub(crate) fn request(&self) -> Option<Request<ReplayBody<B>>> {
        let mut request = Request::new(self.replay.body()?);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        *request.extensions_mut() = self.extensions.clone();
        Some(request)
    }
}

/// Sets the header, wraps the body and keeps what a replay needs (when `replay_limit` allows).
pub(crate) fn prepare<B: Body>(
    request: Request<B>,
    state: &State,
    replay_limit: usize,
) -> (Request<ReplayBody<B>>, Option<Saved<B>>) {
    if replay_limit == 0 {
        (authorize(request, state), None)
    } else {
        save(request, state, replay_limit)
    }
}

/// The fast path: sets the header, then wraps the body, so that the request is moved once.
#[inline]
fn authorize<B: Body>(mut request: Request<B>, state: &State) -> Request<ReplayBody<B>> {
    request
        .headers_mut()
        .insert(AUTHORIZATION, state.header.clone());
    request.map(ReplayBody::new)
}

/// Wraps the body to record it, keeps the parts a replay needs, and sets the header.
fn save<B: Body>(
    request: Request<B>,
    state: &State,
    replay_limit: usize,
) -> (Request<ReplayBody<B>>, Option<Saved<B>>) {
    let (mut parts, body) = request.into_parts();
    let (body, replay) = ReplayBody::recording(body, replay_limit);
    // Kept without the `Authorization` header: the replay sets its own.
    let saved = match replay {
        Replay::Unavailable => None,
        replay => Some(Saved {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: parts.extensions.clone(),
            replay,
        }),
    };
    parts.headers.insert(AUTHORIZATION, state.header.clone());
    (Request::from_parts(parts, body), saved)
}
