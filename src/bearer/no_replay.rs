//! The response future of `BearerAuth` in the [`NoReplay`](super::NoReplay) mode.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_service::Service;

#[cfg(feature = "pool")]
use super::future::Lookup;
use super::{
    ReplaySkipped,
    future::{OffBox, Wait},
};
use crate::TokenCache;
#[cfg(feature = "pool")]
use crate::cache::Ticket;

pin_project! {
    /// The response future of a [`BearerAuth`](crate::BearerAuth) built by
    /// [`BearerAuthLayer::without_replay`](crate::BearerAuthLayer::without_replay).
    ///
    /// It is the inner service's future and what a 401 needs: the generation of the token
    /// sent and the cache to refresh. A request that had to wait for its token (or for its
    /// subscriber's mint) keeps what it waits with in one allocation, off the fast path.
    pub struct NoReplayFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        // Present when a 401 can lead to a refresh (the token is refreshable).
        cache: Option<TokenCache>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Sent { #[pin] future: S::Future, generation: u64 },
        // One boxed variant for the rest: the future's drop then has one case to test
        // besides `Sent` (14 instructions a request fewer than two).
        Off { off: OffBox<Off<S, B>> },
    }
}

// Boxed whole in `State::Off`: its variants' sizes cost nothing on the fast path.
#[allow(clippy::large_enum_variant)]
enum Off<S, B> {
    /// A request that cannot be sent yet, with the service that was driven ready for it.
    Delayed {
        step: Step,
        request: Option<Request<B>>,
        service: S,
    },
    Failed(Option<BoxError>),
}

enum Step {
    /// A pooled request whose subscriber is not in the pool's index: waiting for the lookup
    /// (and the mint, for a new subscriber).
    #[cfg(feature = "pool")]
    LookingUp(Lookup),
    /// The token is about to expire or has: waiting for the refresh in flight.
    Waiting(Wait),
}

impl<S, B> NoReplayFuture<S, B>
where
    S: Service<Request<B>>,
{
    #[inline]
    pub(crate) fn sent(future: S::Future, generation: u64, cache: Option<TokenCache>) -> Self {
        Self {
            state: State::Sent { future, generation },
            cache,
        }
    }

    pub(crate) fn waiting(wait: Wait, request: Request<B>, service: S, cache: TokenCache) -> Self {
        Self::delayed(Step::Waiting(wait), request, service, Some(cache))
    }

    #[cfg(feature = "pool")]
    pub(crate) fn looking_up(lookup: Lookup, request: Request<B>, service: S) -> Self {
        Self::delayed(Step::LookingUp(lookup), request, service, None)
    }

    fn delayed(step: Step, request: Request<B>, service: S, cache: Option<TokenCache>) -> Self {
        Self {
            state: State::Off {
                off: OffBox::new(Off::Delayed {
                    step,
                    request: Some(request),
                    service,
                }),
            },
            cache,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Off {
                off: OffBox::new(Off::Failed(Some(error))),
            },
            cache: None,
        }
    }
}

impl<S, B, ResB> Future for NoReplayFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    // Inline: lets the caller take the response without a copy through this frame.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Sent { future, generation } => {
                    let mut response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if response.status() == StatusCode::UNAUTHORIZED {
                        if let Some(cache) = this.cache.as_ref() {
                            // No replay: the refresh serves the requests that follow.
                            cache.refresh_in_background(*generation);
                            response.extensions_mut().insert(ReplaySkipped);
                        }
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Off { off } => {
                    let (step, request, service) = match off.get() {
                        Off::Delayed {
                            step,
                            request,
                            service,
                        } => (step, request, service),
                        Off::Failed(error) => {
                            let error = error.take().expect("polled after completion");
                            return Poll::Ready(Err(error));
                        }
                    };
                    let state = match step {
                        #[cfg(feature = "pool")]
                        Step::LookingUp(lookup) => {
                            let cache = ready!(lookup.as_mut().poll(cx))?;
                            let state = cache.load();
                            let ticket = cache.ticket(&state);
                            *this.cache = Some(cache);
                            match ticket {
                                Ticket::Ready => std::sync::Arc::clone(&state),
                                Ticket::Wait(wait) => {
                                    *step = Step::Waiting(wait);
                                    continue;
                                }
                                Ticket::Failed(error) => return Poll::Ready(Err(error.into())),
                            }
                        }
                        Step::Waiting(wait) => ready!(wait.as_mut().poll(cx))?,
                    };
                    let mut request = request.take().expect("polled after completion");
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, state.header.clone());
                    let future = service.call(request);
                    this.state.set(State::Sent {
                        future,
                        generation: state.generation,
                    });
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for NoReplayFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoReplayFuture").finish_non_exhaustive()
    }
}
