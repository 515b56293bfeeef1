//! The response future of `BearerAuth`.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::{BoxError, util::Oneshot};
use tower_service::Service;

use super::{
    ReplayBody,
    replay::{Drain, ReplaySkipped, Saved, prepare},
};
#[cfg(feature = "pool")]
use crate::cache::Ticket;
use crate::{Error, TokenCache, cache::State as TokenState};

pub(crate) type Wait = Pin<Box<dyn Future<Output = Result<Arc<TokenState>, Error>> + Send + Sync>>;

/// A pool's lookup of the request's subscriber (feature `pool`), which may mint.
#[cfg(feature = "pool")]
pub(crate) type Lookup = Pin<Box<dyn Future<Output = Result<TokenCache, Error>> + Send + Sync>>;

pin_project! {
    /// The response future of [`BearerAuth`](crate::BearerAuth).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S, B>,
        // Present when a 401 can lead to a refresh (the token is refreshable).
        cache: Option<TokenCache>,
        // Present when the request can be replayed.
        saved: Option<Saved<B>>,
        // The service for a delayed first send or for the replay.
        service: Option<S>,
        replay_limit: usize,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        Sent { #[pin] future: S::Future, generation: u64 },
        // One boxed variant for the rest, off the fast path: the future stays small, and its
        // drop has one case to test besides `Sent`.
        Off { off: OffBox<Off<S, B>> },
    }
}

/// The states of a request off the fast path, boxed whole in `State::Off`.
// Boxed: its variants' sizes cost nothing on the fast path.
#[allow(clippy::large_enum_variant)]
enum Off<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    /// A pooled request whose subscriber is not in the pool's index: waiting for the lookup
    /// (and the mint, for a new subscriber).
    #[cfg(feature = "pool")]
    LookingUp {
        lookup: Lookup,
        request: Option<Request<B>>,
    },
    /// The token is about to expire or has: waiting for the refresh in flight.
    Waiting {
        wait: Wait,
        request: Option<Request<B>>,
    },
    /// A 401 came back: reading its body to the end (bounded) while waiting for the token to
    /// replay with (`TokenCache::reauthorize`).
    Reauthorizing {
        wait: Wait,
        drain: Option<Drain<S::Response>>,
        token: Option<Arc<TokenState>>,
        request: Option<Request<ReplayBody<B>>>,
    },
    Replaying {
        future: Pin<Box<Oneshot<S, Request<ReplayBody<B>>>>>,
    },
    Failed(Option<BoxError>),
}

/// A boxed off-path state, dropped out of line: the future's drop glue is then small enough
/// for LLVM to inline into the caller (4 instructions a request fewer than a plain `Box`).
/// `None` only while it is dropped.
pub(crate) struct OffBox<T>(Option<Box<T>>);

impl<T> OffBox<T> {
    pub(crate) fn new(off: T) -> Self {
        Self(Some(Box::new(off)))
    }

    pub(crate) fn get(&mut self) -> &mut T {
        self.0.as_deref_mut().expect("present until dropped")
    }
}

impl<T> Drop for OffBox<T> {
    #[inline]
    fn drop(&mut self) {
        drop_off(self.0.take());
    }
}

#[inline(never)]
fn drop_off<T>(off: Option<Box<T>>) {
    drop(off);
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    pub(crate) fn sent(
        future: S::Future,
        generation: u64,
        saved: Option<Saved<B>>,
        service: Option<S>,
        cache: Option<TokenCache>,
    ) -> Self {
        Self {
            state: State::Sent { future, generation },
            cache,
            saved,
            service,
            replay_limit: 0,
        }
    }

    pub(crate) fn waiting(
        wait: Wait,
        request: Request<B>,
        service: S,
        cache: TokenCache,
        replay_limit: usize,
    ) -> Self {
        Self {
            state: State::off(Off::Waiting {
                wait,
                request: Some(request),
            }),
            cache: Some(cache),
            saved: None,
            service: Some(service),
            replay_limit,
        }
    }

    #[cfg(feature = "pool")]
    pub(crate) fn looking_up(
        lookup: Lookup,
        request: Request<B>,
        service: S,
        replay_limit: usize,
    ) -> Self {
        Self {
            state: State::off(Off::LookingUp {
                lookup,
                request: Some(request),
            }),
            cache: None,
            saved: None,
            service: Some(service),
            replay_limit,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::off(Off::Failed(Some(error))),
            cache: None,
            saved: None,
            service: None,
            replay_limit: 0,
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: Body,
    ResB: Body,
{
    type Output = Result<Response<ResB>, BoxError>;

    // Inline: lets the caller take the response without a copy through this frame.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let off = match this.state.as_mut().project() {
                StateProj::Sent { future, generation } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let generation = *generation;
                    if response.status() != StatusCode::UNAUTHORIZED {
                        return Poll::Ready(Ok(response));
                    }
                    let Some(cache) = this.cache.as_ref() else {
                        return Poll::Ready(Ok(response));
                    };
                    let replay = this.saved.take().and_then(|saved| saved.request());
                    // `TokenCache::reauthorize`, unboxed: the current token if the cache has
                    // moved on, else one shared refresh; `None` where a new token cannot help.
                    let (Some(request), Some(wait)) = (replay, cache.reauthorization(generation))
                    else {
                        cache.refresh_in_background(generation);
                        let mut response = response;
                        response.extensions_mut().insert(ReplaySkipped);
                        return Poll::Ready(Ok(response));
                    };
                    tracing::debug!(
                        generation,
                        "401 for the current token; replaying once after a refresh"
                    );
                    // The 401's body is read to its end (bounded) before the replay: dropped
                    // unread, it would reset an HTTP/2 stream or close an HTTP/1 connection.
                    this.state.set(State::off(Off::Reauthorizing {
                        wait,
                        drain: Some(Drain::new(response)),
                        token: None,
                        request: Some(request),
                    }));
                    continue;
                }
                StateProj::Off { off } => off.get(),
            };
            match off {
                #[cfg(feature = "pool")]
                Off::LookingUp { lookup, request } => {
                    let cache = ready!(lookup.as_mut().poll(cx))?;
                    let state = cache.load();
                    let wait: Wait = match cache.ticket(&state) {
                        Ticket::Ready => Box::pin(std::future::ready(Ok(Arc::clone(&state)))),
                        Ticket::Wait(wait) => wait,
                        Ticket::Failed(error) => return Poll::Ready(Err(error.into())),
                    };
                    let request = request.take().expect("polled after completion");
                    *this.cache = Some(cache);
                    *off = Off::Waiting {
                        wait,
                        request: Some(request),
                    };
                }
                Off::Waiting { wait, request } => {
                    let state = ready!(wait.as_mut().poll(cx))?;
                    let request = request.take().expect("polled after completion");
                    let (request, saved) = prepare(request, &state.header, *this.replay_limit);
                    let service = this.service.as_mut().expect("the ready service is kept");
                    let future = service.call(request);
                    *this.saved = saved;
                    this.state.set(State::Sent {
                        future,
                        generation: state.generation,
                    });
                }
                Off::Reauthorizing {
                    wait,
                    drain,
                    token,
                    request,
                } => {
                    // Both make progress at once: the refresh need not wait for the drain.
                    if let Some(d) = drain.as_mut() {
                        if Pin::new(d).poll(cx).is_ready() {
                            *drain = None;
                        }
                    }
                    if token.is_none() {
                        *token = Some(ready!(wait.as_mut().poll(cx))?);
                    }
                    if drain.is_some() {
                        return Poll::Pending;
                    }
                    let state = token.take().expect("set above");
                    let mut request = request.take().expect("polled after completion");
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, state.header.clone());
                    let service = this.service.take().expect("the replay service is kept");
                    if let Some(cache) = this.cache.as_ref() {
                        cache.note_replay();
                    }
                    // `Oneshot` drives the clone ready before calling it.
                    *off = Off::Replaying {
                        future: Box::pin(Oneshot::new(service, request)),
                    };
                }
                Off::Replaying { future } => {
                    return Poll::Ready(ready!(future.as_mut().poll(cx)).map_err(Into::into));
                }
                Off::Failed(error) => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")));
                }
            }
        }
    }
}

impl<S, B> State<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn off(off: Off<S, B>) -> Self {
        State::Off {
            off: OffBox::new(off),
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
