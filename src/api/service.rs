//! `TokenService`: the bounds on a token client's service, written once.

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::BoxError;
use tower_service::Service;

/// A service that [`SubscriberRefresher`](crate::SubscriberRefresher) and `TokenPool` can
/// call from tasks of their own: a `Service<Request<Full<Bytes>>>` answering `Response<B>`
/// (the bounds [`TokenClient`](crate::TokenClient) needs), `Clone + Send + Sync + 'static`,
/// with a `Send` future and a `Send` body.
///
/// Implemented for every such service (`HttpsClient`, `MockSpace::client`, a tower stack
/// around either, …): there is nothing to implement.
pub trait TokenService:
    Service<
        Request<Full<Bytes>>,
        Response = Response<Self::ResponseBody>,
        Future: Send,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// The body of the service's responses.
    type ResponseBody: Body<Data: Send, Error: Into<BoxError>> + Send;
}

impl<S, B> TokenService for S
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type ResponseBody = B;
}

/// A token service behind one `Arc`, so that its clones share one copy: a pool's entries each
/// hold a refresher, and a client such as `HttpsClient` is hundreds of bytes. Each call clones
/// the service inside (the client's own clone, as for any call) and waits for its readiness
/// there; calls are rare (mints and refreshes), so their one allocation is nothing.
#[cfg(feature = "pool")]
pub(crate) struct SharedService<S>(std::sync::Arc<S>);

#[cfg(feature = "pool")]
impl<S> SharedService<S> {
    pub(crate) fn new(service: S) -> Self {
        Self(std::sync::Arc::new(service))
    }
}

#[cfg(feature = "pool")]
impl<S> Clone for SharedService<S> {
    fn clone(&self) -> Self {
        Self(std::sync::Arc::clone(&self.0))
    }
}

#[cfg(feature = "pool")]
impl<S: TokenService> Service<Request<Full<Bytes>>> for SharedService<S> {
    type Response = Response<S::ResponseBody>;
    type Error = S::Error;
    type Future = crate::cache::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Readiness belongs to the clone each call makes.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        use tower::ServiceExt;
        Box::pin(S::clone(&self.0).oneshot(request))
    }
}
