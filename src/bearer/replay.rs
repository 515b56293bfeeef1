//! What a replay after a 401 needs: the request's parts kept before the first send, the mark on
//! a 401 that was not replayed, and the bounded read of a 401's body before the replay.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Buf;
use http::{
    Extensions, HeaderMap, HeaderValue, Method, Request, Uri, Version, header::AUTHORIZATION,
};
use http_body::Body;
use tokio::time::Sleep;

pub(crate) use super::body::Replay;
use super::body::ReplayBody;

/// Marks a 401 response that [`BearerAuth`](crate::BearerAuth) (or
/// [`BearerAuthMiddleware`](crate::reqwest::BearerAuthMiddleware), with feature `reqwest`)
/// passed back without replaying its request:
///
/// - the request body could not be replayed (it streamed past the replay limit, or replay is
///   off): a refresh was started (unless one was already failing), so sending the request again
///   will use a new token;
/// - or the token was itself obtained because of a 401 moments ago: no refresh was started, as
///   the server is refusing something other than the token's age (a missing scope, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplaySkipped;

/// A request's parts, kept so it can be sent again after a 401.
pub(crate) struct Saved<B> {
    method: Method,
    uri: Uri,
    version: Version,
    /// `None` for a request with no header of its own (most API calls): an empty map would
    /// cost its size in the future and its drop on every request.
    headers: Option<Box<HeaderMap>>,
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
        if let Some(headers) = &self.headers {
            *request.headers_mut() = HeaderMap::clone(headers);
        }
        *request.extensions_mut() = self.extensions.clone();
        Some(request)
    }
}

/// Sets the header, wraps the body and keeps what a replay needs (when `replay_limit` allows):
/// for a request that had to wait for its token.
pub(crate) fn prepare<B: Body>(
    request: Request<B>,
    header: &HeaderValue,
    replay_limit: usize,
) -> (Request<ReplayBody<B>>, Option<Saved<B>>) {
    if replay_limit == 0 {
        return (authorize(request, header.clone()), None);
    }
    let mut replay = Replay::Unavailable;
    let mut request = record(request, replay_limit, &mut replay);
    let saved = Saved::keep(&request, replay);
    request.headers_mut().insert(AUTHORIZATION, header.clone());
    (request, saved)
}

/// The fast path: sets the header, then wraps the body, so that the request is moved once.
#[inline]
pub(crate) fn authorize<B: Body>(
    mut request: Request<B>,
    header: HeaderValue,
) -> Request<ReplayBody<B>> {
    request.headers_mut().insert(AUTHORIZATION, header);
    request.map(ReplayBody::new)
}

/// Wraps the body to record up to `replay_limit` bytes of it; `replay` says how to have it
/// again. An out-parameter, not a returned pair: the pair's request would be one more copy.
#[inline(always)]
pub(crate) fn record<B: Body>(
    request: Request<B>,
    replay_limit: usize,
    replay: &mut Replay<B>,
) -> Request<ReplayBody<B>> {
    request.map(|body| {
        let (body, recorded) = ReplayBody::recording(body, replay_limit);
        *replay = recorded;
        body
    })
}

impl<B> Saved<B> {
    /// The parts of `request` a replay needs, cloned in place (`into_parts` and back would move
    /// its head twice), before the `Authorization` header goes in: the replay sets its own.
    /// `None` for a body that cannot be replayed.
    #[inline(always)]
    pub(crate) fn keep(request: &Request<ReplayBody<B>>, replay: Replay<B>) -> Option<Self> {
        if let Replay::Unavailable = replay {
            return None;
        }
        Some(Saved {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: if request.headers().is_empty() {
                None
            } else {
                Some(Box::new(request.headers().clone()))
            },
            extensions: request.extensions().clone(),
            replay,
        })
    }
}

/// The most of a 401's body read before the replay (a SignalWire error body is well under 1 KiB).
pub(crate) const DRAIN_LIMIT: usize = 64 * 1024;
/// The longest a 401's body is read for before the replay.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads a 401's body to its end, so that HTTP/2 ends its stream cleanly instead of resetting
/// it and HTTP/1 puts the connection back in the pool for the replay. A body longer than
/// [`DRAIN_LIMIT`], slower than [`DRAIN_TIME`], or failing, is dropped instead (closing an
/// HTTP/1 connection, resetting an HTTP/2 stream), as waiting longer would cost more than a new
/// connection. Only a replay pays for it, so it is boxed. `B` is the whole response (http-body
/// implements `Body` for `Response<B>`), which the response future can name.
pub(crate) struct Drain<B> {
    body: Pin<Box<B>>,
    timer: Option<Pin<Box<Sleep>>>,
    read: usize,
}

impl<B> Drain<B> {
    pub(crate) fn new(body: B) -> Self {
        Self {
            body: Box::pin(body),
            timer: None,
            read: 0,
        }
    }
}

impl<B: Body> Future for Drain<B> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if this.body.is_end_stream() {
                return Poll::Ready(());
            }
            match this.body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.read += frame.data_ref().map_or(0, Buf::remaining);
                    if this.read > DRAIN_LIMIT {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(None | Some(Err(_))) => return Poll::Ready(()),
                Poll::Pending => {
                    // The timer starts at the first wait: most 401 bodies arrive with their head.
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(DRAIN_TIME)));
                    return timer.as_mut().poll(cx);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        pin::Pin,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Context, Poll},
    };

    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::Full;

    use super::*;

    /// A body that never ends: 16 KiB chunks, counted, or (`stalled`) nothing at all.
    struct Endless {
        chunks: Arc<AtomicUsize>,
        stalled: bool,
    }

    impl Body for Endless {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.stalled {
                return Poll::Pending;
            }
            self.chunks.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0; 16 * 1024])))))
        }
    }

    #[tokio::test]
    async fn a_small_body_is_read_to_its_end() {
        Drain::new(Full::new(Bytes::from_static(b"{\"errors\":[]}"))).await;
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_left_after_the_limit() {
        let chunks = Arc::new(AtomicUsize::new(0));
        let body = Endless {
            chunks: Arc::clone(&chunks),
            stalled: false,
        };
        Drain::new(body).await;
        // 64 KiB in 16 KiB chunks: the fifth chunk crosses the limit.
        assert_eq!(chunks.load(Ordering::SeqCst), DRAIN_LIMIT / (16 * 1024) + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_left_after_the_time_limit() {
        let started = tokio::time::Instant::now();
        let body = Endless {
            chunks: Arc::default(),
            stalled: true,
        };
        Drain::new(body).await;
        assert_eq!(started.elapsed(), DRAIN_TIME);
    }
}
