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
