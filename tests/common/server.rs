//! A tiny hyper server on 127.0.0.1 that accepts one bearer token at a time.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{
    Request, Response, StatusCode,
    header::{AUTHORIZATION, WWW_AUTHENTICATE},
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

use super::{Gate, REQUEST_ID};

/// Answers 200 (echoing the request body) to `Authorization: Bearer <accepted>` and 401 to
/// anything else. Can hold the first rejections until a whole batch has arrived, so a test
/// knows every request of the batch was sent with the revoked token.
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<State>,
    accept_loop: JoinHandle<()>,
}

struct State {
    accepted: Mutex<String>,
    sends: Mutex<HashMap<String, usize>>,
    rejected: AtomicUsize,
    hold_first: AtomicUsize,
    held: Gate,
}

impl TokenServer {
    pub async fn start(accepted: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            accepted: Mutex::new(accepted.to_owned()),
            sends: Mutex::default(),
            rejected: AtomicUsize::new(0),
            hold_first: AtomicUsize::new(0),
            held: Gate::default(),
        });
        let accept_loop = tokio::spawn(accept(listener, Arc::clone(&state)));
        Self {
            addr,
            state,
            accept_loop,
        }
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Revokes every token but `token`.
    pub fn accept_only(&self, token: &str) {
        *self.state.accepted.lock().unwrap() = token.to_owned();
    }

    /// Holds the next `count` rejections until all of them have arrived.
    pub fn hold_rejections(&self, count: usize) {
        self.state
            .hold_first
            .store(self.rejected() + count, Ordering::SeqCst);
    }

    /// 401s answered so far.
    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::SeqCst)
    }

    /// How many times each `x-request-id` arrived.
    pub fn sends_per_id(&self) -> HashMap<String, usize> {
        self.state.sends.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::task::yield_now().await;
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| answer(Arc::clone(&state), request));
            // A client that hangs up early is not the server's problem.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let authorization = request.headers().get(AUTHORIZATION).cloned();
    let Ok(body) = request.into_body().collect().await else {
        return Ok(status(StatusCode::BAD_REQUEST, Bytes::new()));
    };
    *state.sends.lock().unwrap().entry(id).or_default() += 1;

    let expected = format!("Bearer {}", state.accepted.lock().unwrap());
    if authorization.is_some_and(|value| value == expected.as_str()) {
        return Ok(status(StatusCode::OK, body.to_bytes()));
    }
    let rejected = state.rejected.fetch_add(1, Ordering::SeqCst) + 1;
    let hold = state.hold_first.load(Ordering::SeqCst);
    if rejected <= hold {
        if rejected == hold {
            state.held.open();
        }
        state.held.wait().await;
    }
    let mut response = status(StatusCode::UNAUTHORIZED, Bytes::new());
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        "Bearer error=\"invalid_token\"".parse().unwrap(),
    );
    Ok(response)
}

fn status(code: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = code;
    response
}
