//! The request body `BearerAuth` sends: the caller's body, recorded so it can be replayed once.

use std::{
    collections::VecDeque,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The request body [`BearerAuth`](crate::BearerAuth) hands to its inner service.
    ///
    /// It streams the caller's body unchanged and, when 401-replay is on, keeps the chunks it
    /// sends (reference-counted `Bytes`, so a `Full<Bytes>` or `String` body is kept without a
    /// copy) up to the replay limit, so that a request answered 401 can be sent again with a
    /// fresh token. If the inner service drops the body before reading all of it (a server that
    /// answers 401 at once), the replay sends what was read and then the rest of the original.
    /// A body that ends before it starts (`Empty`) needs no recording at all.
    ///
    /// Build the inner client for this body type, for example
    /// `https_client::<ReplayBody<Full<Bytes>>>()`. [`ReplayBody::new`] wraps a body that is not
    /// recorded, for sending through the same client without the layer.
    ///
    /// Trailers are recorded with the data and replayed after it.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use signalwire_auth::ReplayBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), std::convert::Infallible> {
    /// // Outside the layer, a `ReplayBody` is the body it wraps.
    /// let body = ReplayBody::new(Full::new(Bytes::from_static(b"{\"page_size\":10}")));
    /// let bytes = body.collect().await?.to_bytes();
    /// assert_eq!(&bytes[..], b"{\"page_size\":10}");
    /// # Ok(())
    /// # }
    /// ```
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Plain {
            #[pin]
            body: B,
        },
        Recording {
            lease: Lease<B>,
        },
        // Boxed: only a replay needs it, and inline it would triple the size of every body
        // (and of every request) on the fast path.
        Replayed {
            replayed: Box<Replayed<B>>,
        },
    }
}

/// What a replay sends: the recorded chunks and trailers, then what the first send left unread.
struct Replayed<B> {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    // What the first send left unread, if it stopped early.
    rest: Option<Pin<Box<B>>>,
}

/// The original body, on loan to the first send; returned to the [`Tee`] if dropped unfinished.
struct Lease<B> {
    body: Option<Pin<Box<B>>>,
    tee: Arc<Mutex<Tee<B>>>,
}

impl<B> Drop for Lease<B> {
    fn drop(&mut self) {
        if let Some(body) = self.body.take() {
            let mut tee = lock(&self.tee);
            if tee.status == TeeStatus::Recording {
                tee.rest = Some(body);
            }
        }
    }
}

/// What was recorded of a body while it streamed.
pub(crate) struct Tee<B> {
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
    trailers: Option<HeaderMap>,
    status: TeeStatus,
    rest: Option<Pin<Box<B>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TeeStatus {
    Recording,
    Complete,
    /// Over the limit, or the body failed: the request cannot be replayed.
    Abandoned,
}

impl<B> Tee<B> {
    fn record(&mut self, data: &Bytes) {
        if self.status != TeeStatus::Recording {
            return;
        }
        self.len = self.len.saturating_add(data.len());
        if self.len > self.limit {
            self.abandon();
        } else if !data.is_empty() {
            self.chunks.push(data.clone());
        }
    }

    fn abandon(&mut self) {
        self.status = TeeStatus::Abandoned;
        self.chunks = Vec::new();
        self.trailers = None;
    }

    fn complete(&mut self) {
        if self.status == TeeStatus::Recording {
            self.status = TeeStatus::Complete;
        }
    }
}

/// How a request's body can be had again after a 401.
pub(crate) enum Replay<B> {
    /// The body was empty: replay with an empty body.
    Empty,
    /// The body is being recorded.
    Recorded(Arc<Mutex<Tee<B>>>),
    /// Too large, or replay is off.
    Unavailable,
}

impl<B> Replay<B> {
    /// The body to send again: all of it was recorded, or what was not is still unread in the
    /// original. `None` otherwise, and for a second call.
    pub(crate) fn body(&self) -> Option<ReplayBody<B>> {
        let (chunks, trailers, rest) = match self {
            Replay::Empty => (VecDeque::new(), None, None),
            Replay::Recorded(tee) => {
                let mut tee = lock(tee);
                match tee.status {
                    TeeStatus::Complete => {}
                    TeeStatus::Recording if tee.rest.is_some() => {}
                    _ => return None,
                }
                let rest = tee.rest.take();
                // The replay is the last use of the recording.
                tee.status = TeeStatus::Abandoned;
                (
                    std::mem::take(&mut tee.chunks).into(),
                    tee.trailers.take(),
                    rest,
                )
            }
            Replay::Unavailable => return None,
        };
        Some(ReplayBody {
            kind: Kind::Replayed {
                replayed: Box::new(Replayed {
                    chunks,
                    trailers,
                    rest,
                }),
            },
        })
    }
}

fn lock<B>(tee: &Mutex<Tee<B>>) -> MutexGuard<'_, Tee<B>> {
    // A panic while holding the lock leaves at worst a half-recorded body, which `status`
    // already describes.
    tee.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body` without recording it.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Plain { body },
        }
    }

    /// Wraps `body`, recording up to `limit` bytes of it for a replay.
    pub(crate) fn recording(body: B, limit: usize) -> (Self, Replay<B>) {
        if body.is_end_stream() {
            return (Self::new(body), Replay::Empty);
        }
        if limit == 0 || body.size_hint().lower() > limit as u64 {
            return (Self::new(body), Replay::Unavailable);
        }
        let tee = Arc::new(Mutex::new(Tee {
            chunks: Vec::new(),
            len: 0,
            limit,
            trailers: None,
            status: TeeStatus::Recording,
            rest: None,
        }));
        let replay = Replay::Recorded(Arc::clone(&tee));
        let lease = Lease {
            body: Some(Box::pin(body)),
            tee,
        };
        let body = Self {
            kind: Kind::Recording { lease },
        };
        (body, replay)
    }
}

impl<B: Body + Default> Default for ReplayBody<B> {
    fn default() -> Self {
        Self::new(B::default())
    }
}

impl<B: Body> From<B> for ReplayBody<B> {
    fn from(body: B) -> Self {
        Self::new(body)
    }
}

impl<B: Body> Body for ReplayBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Plain { body } => {
                Poll::Ready(ready!(body.poll_frame(cx)).map(|frame| frame.map(to_bytes)))
            }
            KindProj::Recording { lease } => {
                let Some(body) = lease.body.as_mut() else {
                    return Poll::Ready(None);
                };
                let frame = ready!(body.as_mut().poll_frame(cx));
                let mut tee = lock(&lease.tee);
                let frame = match frame {
                    None => {
                        tee.complete();
                        None
                    }
                    Some(Ok(frame)) => {
                        let frame = to_bytes(frame);
                        if let Some(data) = frame.data_ref() {
                            tee.record(data);
                        } else if let Some(trailers) = frame.trailers_ref() {
                            tee.trailers = Some(trailers.clone());
                            // Trailers are the last frame of a body, whatever `is_end_stream`
                            // says: a consumer may drop the body right after them.
                            tee.complete();
                        }
                        // Clients such as hyper stop polling once the body says it has ended,
                        // so the end is noted here rather than on a final `None`.
                        if body.is_end_stream() {
                            tee.complete();
                        }
                        Some(Ok(frame))
                    }
                    Some(Err(error)) => {
                        tee.abandon();
                        Some(Err(error))
                    }
                };
                if tee.status != TeeStatus::Recording {
                    drop(tee);
                    // Finished or abandoned: nothing to hand back on drop.
                    if frame.is_none() {
                        lease.body = None;
                    }
                }
                Poll::Ready(frame)
            }
            KindProj::Replayed { replayed } => {
                let Replayed {
                    chunks,
                    trailers,
                    rest,
                } = &mut **replayed;
                if let Some(chunk) = chunks.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if let Some(body) = rest.as_mut() {
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(frame) => return Poll::Ready(Some(frame.map(to_bytes))),
                        // The rest has ended: recorded trailers, if any, still come last.
                        None => *rest = None,
                    }
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { body } => body.is_end_stream(),
            Kind::Recording { lease } => lease.body.as_ref().is_none_or(|b| b.is_end_stream()),
            Kind::Replayed { replayed } => {
                let Replayed {
                    chunks,
                    trailers,
                    rest,
                } = &**replayed;
                chunks.is_empty()
                    && trailers.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { body } => body.size_hint(),
            Kind::Recording { lease } => lease
                .body
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint()),
            Kind::Replayed { replayed } => {
                let Replayed { chunks, rest, .. } = &**replayed;
                let buffered: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                match rest {
                    None => SizeHint::with_exact(buffered),
                    Some(rest) => {
                        let rest = rest.size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(buffered.saturating_add(rest.lower()));
                        if let Some(upper) = rest.upper() {
                            hint.set_upper(buffered.saturating_add(upper));
                        }
                        hint
                    }
                }
            }
        }
    }
}

/// `Bytes` pass through untouched: `copy_to_bytes` on `Bytes` only bumps a reference count.
fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Plain { .. } => "plain",
            Kind::Recording { .. } => "recording",
            Kind::Replayed { .. } => "replay",
        };
        f.debug_struct("ReplayBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty, Full};

    use super::*;

    #[tokio::test]
    async fn full_body_is_replayed_byte_for_byte_without_copying() {
        let data = Bytes::from_static(b"hello replay");
        let (body, replay) = ReplayBody::recording(Full::new(data.clone()), 64);
        assert!(
            replay.body().is_none(),
            "nothing is replayable before it is sent"
        );
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent, data);
        let again = replay.body().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(again, data);
        assert_eq!(
            again.as_ptr(),
            data.as_ptr(),
            "the replay shares the original buffer"
        );
    }

    #[tokio::test]
    async fn empty_body_needs_no_recording() {
        let (_body, replay) = ReplayBody::recording(Empty::<Bytes>::new(), 64);
        assert!(matches!(replay, Replay::Empty));
        assert!(replay.body().unwrap().is_end_stream());
    }

    #[tokio::test]
    async fn streaming_body_over_the_limit_is_not_replayable() {
        let chunked = Chunked::new((0..4).map(|_| Frame::data(Bytes::from(vec![7u8; 40]))));
        let (body, replay) = ReplayBody::recording(chunked, 100);
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent.len(), 160);
        assert!(replay.body().is_none());
    }

    #[tokio::test]
    async fn streaming_body_under_the_limit_keeps_chunks_and_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-check", "1".parse().unwrap());
        let chunked = Chunked::new([
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
            Frame::trailers(trailers.clone()),
        ]);
        let (body, replay) = ReplayBody::recording(chunked, 100);
        body.collect().await.unwrap();
        let again = replay.body().unwrap().collect().await.unwrap();
        assert_eq!(again.trailers(), Some(&trailers));
        assert_eq!(again.to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn body_dropped_unread_is_replayed_from_the_original() {
        let (body, replay) = ReplayBody::recording(ab_cd(), 100);
        let mut body = Box::pin(body);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ab");
        drop(body);
        let again = replay.body().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(again, "abcd");
        assert!(replay.body().is_none(), "a body is replayed once");
    }

    #[tokio::test]
    async fn body_still_in_use_is_not_replayable() {
        let (body, replay) = ReplayBody::recording(ab_cd(), 100);
        let mut body = Box::pin(body);
        body.frame().await.unwrap().unwrap();
        assert!(replay.body().is_none());
    }

    #[test]
    fn known_size_over_the_limit_is_not_recorded() {
        let (body, replay) = ReplayBody::recording(Full::new(Bytes::from(vec![0u8; 10])), 9);
        assert!(matches!(replay, Replay::Unavailable));
        assert!(format!("{body:?}").contains("plain"));
    }

    /// "ab" then "cd", streamed.
    fn ab_cd() -> Chunked {
        Chunked::new([
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
        ])
    }

    /// A body of unknown length that yields the given frames, like a streaming upload.
    pub(crate) struct Chunked(VecDeque<Frame<Bytes>>);

    impl Chunked {
        pub(crate) fn new(frames: impl IntoIterator<Item = Frame<Bytes>>) -> Self {
            Self(frames.into_iter().collect())
        }
    }

    impl Body for Chunked {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }
}
