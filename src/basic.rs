//! Basic authentication with a Project ID and API token: [`BasicAuthLayer`], [`BasicAuth`] and
//! its [`ResponseFuture`].

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Request, header::AUTHORIZATION};
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::{Credentials, Error, transport::TransportRule};

/// Adds `Authorization: Basic base64(project_id:api_token)` to every request.
///
/// The header value is computed once, here, and marked sensitive so that tracing and HTTP/2
/// header compression leave it alone. An `Authorization` header already on the request is
/// replaced.
///
/// Credentials only go to SignalWire's hosts (`signalwire.com` and its subdomains) over
/// `https`, and to loopback (plain `http` allowed there, for tests).
/// [`for_space`](Self::for_space) pins them to one space and [`allow_host`](Self::allow_host)
/// names other hosts (a proxy, a custom domain). A request that breaks the rule is not sent: the
/// service answers it with an [`Error`] for which [`Error::is_refused`] is true.
///
/// Put this layer *outside* `tower_http::follow_redirect::FollowRedirectLayer`, so that the
/// redirect layer sees the credentials and strips them when a redirect leaves the origin.
///
/// # Example
///
/// ```
/// use http::{Request, Response, header::AUTHORIZATION};
/// use signalwire_auth::{BasicAuthLayer, Credentials};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let creds = Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "PTsecret")?;
/// let client = ServiceBuilder::new()
///     .layer(BasicAuthLayer::new(creds))
///     .service(service_fn(|req: Request<String>| async move {
///         let auth = req.headers()[AUTHORIZATION].clone();
///         Ok::<_, std::convert::Infallible>(Response::new(auth))
///     }));
///
/// let req = Request::get("https://example.signalwire.com/api/fabric/addresses")
///     .body(String::new())?;
/// let response = client.oneshot(req).await?;
/// assert!(response.body().to_str()?.starts_with("Basic "));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BasicAuthLayer {
    header: HeaderValue,
    target: TransportRule,
}

impl BasicAuthLayer {
    /// Authenticates with `credentials`, computing the header once.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            header: credentials.basic_header(),
            target: TransportRule::default(),
        }
    }

    crate::transport::transport_rule_methods!();
}

impl<S> Layer<S> for BasicAuthLayer {
    type Service = BasicAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BasicAuth {
            inner,
            header: self.header.clone(),
            target: self.target.clone(),
        }
    }
}

impl fmt::Debug for BasicAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuthLayer")
            .field("header", &"Basic [redacted]")
            .field("target", &self.target)
            .finish()
    }
}

/// The service built by [`BasicAuthLayer`].
///
/// ```
/// use http::{Request, Response, header::AUTHORIZATION};
/// use signalwire_auth::{BasicAuth, BasicAuthLayer, Credentials};
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let creds = Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "PTsecret")?;
/// let echo = service_fn(|req: Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(Response::new(req.headers().get(AUTHORIZATION).cloned()))
/// });
/// let mut client: BasicAuth<_> = BasicAuthLayer::new(creds).layer(echo);
///
/// let request = Request::get("https://example.signalwire.com/api/fabric/addresses").body(())?;
/// let sent = client.ready().await?.call(request).await?.into_body().expect("a header");
/// assert!(sent.is_sensitive());
/// assert!(!format!("{client:?}").contains("PTsecret"));
/// # Ok(())
/// # }
/// ```
pub struct BasicAuth<S> {
    inner: S,
    header: HeaderValue,
    target: TransportRule,
}

impl<S> BasicAuth<S> {
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
}

impl<S: Clone> Clone for BasicAuth<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            header: self.header.clone(),
            target: self.target.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for BasicAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("inner", &self.inner)
            .field("header", &"Basic [redacted]")
            .field("target", &self.target)
            .finish()
    }
}

impl<S, B> Service<Request<B>> for BasicAuth<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Err(error) = self.target.check(req.uri()) {
            return ResponseFuture::refused(error);
        }
        req.headers_mut().insert(AUTHORIZATION, self.header.clone());
        ResponseFuture {
            state: State::Called {
                future: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// The response future of [`BasicAuth`]: the inner service's future, or the refusal of a
    /// request that would have sent credentials where they may not go.
    ///
    /// ```
    /// use std::future::Future;
    ///
    /// use http::{Request, Response};
    /// use signalwire_auth::{BasicAuthLayer, Credentials, basic::ResponseFuture};
    /// use tower::{Layer, Service, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// let creds = Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "PTsecret")?;
    /// let mut client = BasicAuthLayer::new(creds).layer(service_fn(|_: Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(()))
    /// }));
    /// let future: ResponseFuture<_> = client.call(Request::get("https://evil.example/").body(())?);
    /// let error = future.await.unwrap_err();
    /// assert!(error.downcast_ref::<signalwire_auth::Error>().is_some_and(|e| e.is_refused()));
    /// # Ok(())
    /// # }
    /// ```
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        Refused { error: Option<Error> },
    }
}

impl<F> ResponseFuture<F> {
    fn refused(error: Error) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    // Inline: lets the caller take the response without a copy through this frame.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future } => {
                Poll::Ready(ready!(future.poll(cx)).map_err(Into::into))
            }
            StateProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::Response;
    use tower::{ServiceExt, service_fn};

    use super::*;

    const TOKEN: &str = "4tjCGnmAeQ0hwFmFDhwfgww880X2lsnuR60VMyasGR3hFpSyvu";

    fn layer() -> BasicAuthLayer {
        BasicAuthLayer::new(
            Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", TOKEN).unwrap(),
        )
    }

    fn echo()
    -> impl Service<Request<()>, Response = Response<Option<HeaderValue>>, Error = Infallible> + Clone
    {
        service_fn(|req: Request<()>| async move {
            Ok(Response::new(req.headers().get(AUTHORIZATION).cloned()))
        })
    }

    #[tokio::test]
    async fn inserts_the_seed_header_marked_sensitive_replacing_any_other() {
        let req = Request::get("https://example.signalwire.com/api")
            .header(AUTHORIZATION, "Bearer stale")
            .body(())
            .unwrap();
        let res = layer().layer(echo()).oneshot(req).await.unwrap();
        let value = res.into_body().unwrap();
        assert_eq!(
            value,
            "Basic YTFiMmMzZDQtZTVmNi03ODkwLWFiY2QtZWYxMjM0NTY3ODkwOjR0akNHbm1BZVEwaHdGbUZEaHdmZ3d3ODgwWDJsc251UjYwVk15YXNHUjNoRnBTeXZ1"
        );
        assert!(value.is_sensitive());
    }

    #[tokio::test]
    async fn refused_request_is_not_sent() {
        let req = Request::get("http://example.com/api").body(()).unwrap();
        let err = layer().layer(echo()).oneshot(req).await.unwrap_err();
        let err = err.downcast::<Error>().unwrap();
        assert!(err.is_refused());
        assert!(!err.to_string().contains(TOKEN));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let layer = layer();
        let svc = layer.layer(());
        for dbg in [format!("{layer:?}"), format!("{svc:?}")] {
            assert!(!dbg.contains(TOKEN), "{dbg}");
            assert!(!dbg.contains("YTFiMmMz"), "{dbg}");
        }
    }
}
