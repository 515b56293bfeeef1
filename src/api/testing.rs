//! A scripted token endpoint for unit tests: as a `tower::service_fn`, or behind a real hyper
//! server on 127.0.0.1 (feature `test-util`).

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header::RETRY_AFTER};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::BoxError;
use tower_service::Service;

/// What the fake does with the next request.
pub(crate) enum Reply {
    Answer {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<&'static str>,
    },
    /// Fails below HTTP: the service errors, the server closes the connection unanswered.
    Fail,
    /// Never answers.
    Hang,
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self::raw(status, body.to_string())
    }

    pub(crate) fn raw(status: u16, body: impl Into<Bytes>) -> Self {
        Self::Answer {
            status: StatusCode::from_u16(status).expect("test status"),
            body: body.into(),
            retry_after: None,
        }
    }

    pub(crate) fn with_retry_after(mut self, value: &'static str) -> Self {
        if let Self::Answer { retry_after, .. } = &mut self {
            *retry_after = Some(value);
        }
        self
    }
}

/// One request the fake saw.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

#[derive(Clone, Default)]
pub(crate) struct Fake {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    pub(crate) fn new(replies: impl IntoIterator<Item = Reply>) -> Self {
        Self {
            replies: Arc::new(Mutex::new(replies.into_iter().collect())),
            seen: Arc::default(),
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub(crate) fn seen(&self, index: usize) -> Seen {
        self.seen.lock().unwrap()[index].clone()
    }

    async fn answer(&self, request: Request<Bytes>) -> Result<Response<Full<Bytes>>, BoxError> {
        let (parts, body) = request.into_parts();
        self.seen.lock().unwrap().push(Seen {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let reply = self.replies.lock().unwrap().pop_front();
        match reply {
            Some(Reply::Answer {
                status,
                body,
                retry_after,
            }) => {
                let mut response = Response::new(Full::new(body));
                *response.status_mut() = status;
                if let Some(value) = retry_after {
                    response
                        .headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from_static(value));
                }
                Ok(response)
            }
            Some(Reply::Fail) => Err("connection reset by the fake".into()),
            Some(Reply::Hang) => std::future::pending().await,
            None => Err("no reply scripted".into()),
        }
    }

    #[cfg(feature = "test-util")]
    async fn answer_incoming(
        self,
        request: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, BoxError> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        self.answer(Request::from_parts(parts, body)).await
    }

    /// Serves the fake over plain HTTP/1.1 on 127.0.0.1 and returns its space.
    #[cfg(feature = "test-util")]
    pub(crate) async fn serve(&self) -> crate::Space {
        use hyper::body::Incoming;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let fake = fake.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        fake.clone().answer_incoming(request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        crate::Space::from_url(&format!("http://{addr}")).unwrap()
    }
}

/// A client with credentials over `fake`.
pub(crate) fn client(fake: &Fake) -> crate::TokenClient<Fake> {
    crate::TokenClient::with_service(space(), Some(credentials()), fake.clone())
}

/// The fake as a tower service, like a `service_fn`.
impl Service<Request<Full<Bytes>>> for Fake {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let fake = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            fake.answer(Request::from_parts(parts, body)).await
        })
    }
}

/// A space the fake service pretends to be.
pub(crate) fn space() -> crate::Space {
    crate::Space::from_url("http://127.0.0.1:1").unwrap()
}

pub(crate) fn credentials() -> crate::Credentials {
    crate::Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", API_TOKEN).unwrap()
}

pub(crate) const API_TOKEN: &str = "PT4tjCGnmAeQ0hwFmFDhwfgww880X2lsnuR60VMyas";
/// A SAT-looking access token and refresh token.
pub(crate) const SAT: &str = "eyJ0eXAiOiJTQVQifQ..iv.sat-cipher.tag";
pub(crate) const REFRESH: &str = "eyJ0eXAiOiJSZWZyZXNoIn0..iv.refresh-cipher.tag";
pub(crate) const NEXT_SAT: &str = "eyJ0eXAiOiJTQVQifQ..iv.next-sat.tag";
pub(crate) const NEXT_REFRESH: &str = "eyJ0eXAiOiJSZWZyZXNoIn0..iv.next-refresh.tag";
