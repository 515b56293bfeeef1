//! The refresh core's rules that every rotation counts (issue 8), through the public API: each
//! test names the behaviour it proves and failed before the rule was kept.
//!
//! Time is paused and moved with `advance`; behaviour is measured with counters.

mod common;

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use signalwire_auth::{BearerAuthLayer, RefreshError, ReplayBody, TokenCache, TokenPair};
use tokio::time::{Instant, advance};
use tower::{BoxError, Layer, ServiceExt, service_fn};

const SECOND: Duration = Duration::from_secs(1);

/// A refresher closure that counts its calls and answers with `answer(call number)`.
fn counting<F>(
    answer: F,
) -> (
    Arc<AtomicUsize>,
    impl Fn(TokenPair) -> BoxFuture<Result<TokenPair, RefreshError>> + Send + Sync + 'static,
)
where
    F: Fn(usize) -> Result<TokenPair, RefreshError> + Send + Sync + 'static,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let answer = Arc::new(answer);
    let refresher = move |_: TokenPair| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = Arc::clone(&answer);
        Box::pin(async move { answer(n) }) as BoxFuture<_>
    };
    (calls, refresher)
}

// Item 1: an endpoint that answers 401 to every token costs one refresh, however the 401 came.

async fn always_401_costs_one_refresh(replay_limit: usize, streaming: bool) {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let upstream = Upstream::accepting(|_| false);
    let service = BearerAuthLayer::new(cache.clone())
        .replay_limit(replay_limit)
        .layer(upstream.clone());
    for id in 0..6 {
        let response = if streaming {
            let body = Streaming::new([Bytes::from(vec![b'x'; 100]), Bytes::from(vec![b'y'; 100])]);
            let request = Request::post(URI)
                .header(REQUEST_ID, id)
                .body(body)
                .unwrap();
            let service = BearerAuthLayer::new(cache.clone())
                .replay_limit(replay_limit)
                .layer(upstream.clone());
            service.oneshot(request).await.unwrap()
        } else {
            service.clone().oneshot(request(id)).await.unwrap()
        };
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        run_until_idle().await;
    }
    assert_eq!(refresher.calls(), 1, "6 requests, 6 × 401: one refresh");
    assert_eq!(cache.stats().refreshes(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_always_401_endpoint_costs_one_refresh_with_replay_off() {
    always_401_costs_one_refresh(0, false).await;
}

#[tokio::test(start_paused = true)]
async fn an_always_401_endpoint_costs_one_refresh_for_bodies_past_the_replay_limit() {
    always_401_costs_one_refresh(64, true).await;
}

// Item 2: hooks see pairs in install order, and the last one seen is `current()`.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_refresh_hooks_see_pairs_in_install_order() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (second_installed, wait_second) = mpsc::channel::<()>();
    let wait_second = Mutex::new(Some(wait_second));
    let record = Arc::clone(&seen);
    let (_, refresher) = counting(|n| Ok(pair(n, HOUR)));
    let cache = TokenCache::builder(pair(0, HOUR), refresher)
        .on_refresh(move |pair: &TokenPair| {
            // The first hook is slow: it returns only once the second pair is installed.
            if pair.access_token() == access(1) {
                if let Some(wait) = wait_second.lock().unwrap().take() {
                    let _ = wait.recv_timeout(Duration::from_secs(10));
                }
            }
            record.lock().unwrap().push(pair.access_token().to_owned());
        })
        .build();
    let first = cache.refresh_now().await.unwrap();
    assert_eq!(first.access_token(), access(1));
    let second = cache.refresh_now().await.unwrap();
    assert_eq!(second.access_token(), access(2));
    second_installed.send(()).unwrap();
    for _ in 0..10_000 {
        if seen.lock().unwrap().len() == 2 {
            break;
        }
        tokio::task::yield_now().await;
        std::thread::yield_now();
    }
    assert_eq!(*seen.lock().unwrap(), vec![access(1), access(2)]);
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        cache.current().access_token()
    );
}

// Item 3: a refresher that hands back a pair already in its hard window is spaced.

#[tokio::test(start_paused = true)]
async fn a_refresher_handing_back_near_expiry_pairs_is_called_once_per_spacing() {
    let issued = Instant::now();
    // An app backend handing out its cached SAT: the same expiry, whatever the call.
    let (calls, refresher) =
        counting(move |n| Ok(TokenPair::new(format!("cached-{n}"), issued, HOUR).unwrap()));
    let cache = TokenCache::new(pair(0, HOUR), refresher);
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);
    // 20 s before expiry: inside the hard window (30 s).
    advance(HOUR - 20 * SECOND).await;
    for id in 0..20 {
        let response = service.clone().oneshot(request(id)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        advance(Duration::from_millis(100)).await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "20 requests in 2 s: one refresh"
    );
    assert!(
        upstream.seen()[1..]
            .iter()
            .all(|s| s.token.as_deref() == Some("cached-1"))
    );
    // 10 s after that refresh, the next request in the hard window may try again.
    advance(9 * SECOND).await;
    run_until_idle().await;
    service.clone().oneshot(request(99)).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(upstream.last_token().as_deref(), Some("cached-2"));
}

// Item 4: `refresh_now` is not a 401 refresh.

#[tokio::test(start_paused = true)]
async fn a_pair_from_refresh_now_is_refreshed_and_replayed_on_its_first_401() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    // The server refuses pair 1 (revoked) and accepts pair 2.
    let upstream = Upstream::accepting(|token| token == access(2));
    let service = client(&cache, &upstream);
    let fresh = cache.refresh_now().await.unwrap();
    assert_eq!(fresh.access_token(), access(1));
    let response = service.oneshot(request(0)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "refreshed and replayed");
    assert_eq!(refresher.calls(), 2);
    assert_eq!(cache.stats().replays(), 1);
}

// Item 6: past the hard deadline, a request waits for the next attempt when it is due soon.

#[tokio::test(start_paused = true)]
async fn a_request_past_expiry_waits_for_the_next_attempt_due_soon() {
    let (calls, refresher) = counting(|n| match n {
        1 => Err(RefreshError::transient("503 Service Unavailable")),
        n => Ok(pair(n, HOUR)),
    });
    let cache = TokenCache::builder(pair(0, HOUR), refresher)
        .jitter(false)
        .build();
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);
    advance(HOUR + SECOND).await;
    let started = Instant::now();
    let response = service
        .oneshot(request(0))
        .await
        .expect("no failure for one 503");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.last_token(), Some(access(2)));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(started.elapsed(), SECOND, "it waited exactly for the retry");
}

#[tokio::test(start_paused = true)]
async fn a_request_past_expiry_fails_when_the_next_attempt_is_further_than_the_attempt_timeout() {
    let (calls, refresher) = counting(|_| Err(RefreshError::transient("503 Service Unavailable")));
    let cache = TokenCache::builder(pair(0, HOUR), refresher)
        .jitter(false)
        .backoff(10 * SECOND, 60 * SECOND)
        .attempt_timeout(5 * SECOND)
        .build();
    let upstream = Upstream::accepting(|_| true);
    let service = client(&cache, &upstream);
    advance(HOUR + SECOND).await;
    let error = service.oneshot(request(0)).await.unwrap_err();
    assert!(auth_error(&error).is_refresh_failed());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.calls(), 0);
}

// Item 7: trailers survive a replay when the consumer drops the body right after them.

/// One data frame, then trailers; never says it has ended (like a stream-backed body).
struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

#[tokio::test(start_paused = true)]
async fn trailers_read_before_a_401_are_replayed_after_the_data() {
    let refresher = Refresher::new(Mode::Succeed);
    let cache = TokenCache::new(pair(0, HOUR), refresher.closure());
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&received);
    let inner = service_fn(move |request: Request<ReplayBody<WithTrailers>>| {
        let record = Arc::clone(&record);
        async move {
            let token = request.headers()[http::header::AUTHORIZATION].clone();
            let mut body = request.into_body();
            if token == HeaderValue::from_str(&format!("Bearer {}", access(0))).unwrap() {
                // Read up to the trailers frame, then drop the body and refuse the token.
                while let Some(frame) = body.frame().await {
                    if frame.unwrap().is_trailers() {
                        break;
                    }
                }
                drop(body);
                let mut response = Response::new(Full::<Bytes>::default());
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                return Ok::<_, BoxError>(response);
            }
            let collected = body.collect().await.unwrap();
            let trailers = collected.trailers().cloned();
            record
                .lock()
                .unwrap()
                .push((collected.to_bytes(), trailers));
            Ok(Response::new(Full::default()))
        }
    });
    let service = BearerAuthLayer::new(cache.clone()).layer(inner);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let body = WithTrailers {
        data: Some(Bytes::from_static(b"payload")),
        trailers: Some(trailers.clone()),
    };
    let response = service
        .oneshot(Request::post(URI).body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].0, Bytes::from_static(b"payload"));
    assert_eq!(received[0].1.as_ref(), Some(&trailers), "trailers replayed");
}

// Item 8: counters are written before waiters are woken.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_read_right_after_refresh_now_count_that_refresh() {
    let (_, refresher) = counting(|n| Ok(pair(n, HOUR)));
    let cache = TokenCache::new(pair(0, HOUR), refresher);
    for n in 1..=2_000 {
        cache.refresh_now().await.unwrap();
        let stats = cache.stats();
        assert_eq!((stats.attempts(), stats.refreshes()), (n, n), "{stats:?}");
    }

    let (_, refresher) = counting(|_| Err(RefreshError::terminal("refresh token expired")));
    let cache = TokenCache::new(pair(0, HOUR), refresher);
    for n in 1..=2_000 {
        // A new pair forgets the broken chain, so each call makes one attempt.
        cache.install(pair(0, HOUR));
        assert!(
            cache
                .refresh_now()
                .await
                .unwrap_err()
                .is_reauthentication_needed()
        );
        assert_eq!(cache.stats().failures(), n, "{:?}", cache.stats());
    }
}
