//! The crate's HTTPS client: hyper-util's pooled client over rustls with bundled web PKI roots.

use bytes::Bytes;
use http_body::Body;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls::{ClientConfig, RootCertStore};

/// A pooled hyper-util client that speaks HTTPS (HTTP/1.1 and HTTP/2, chosen by ALPN) and plain
/// HTTP. The auth layers, not the connector, decide where credentials may go.
///
/// Name it where a client is stored; the body type defaults to `Full<Bytes>`:
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use signalwire_auth::{BasicAuth, BasicAuthLayer, Credentials, HttpsClient, https_client};
/// use tower::Layer;
///
/// struct Backend {
///     client: BasicAuth<HttpsClient>,
/// }
///
/// let creds = Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "PTsecret")?;
/// let backend = Backend {
///     client: BasicAuthLayer::new(creds).layer(https_client::<Full<Bytes>>()),
/// };
/// # drop(backend);
/// # Ok::<(), signalwire_auth::Error>(())
/// ```
pub type HttpsClient<B = Full<Bytes>> = Client<HttpsConnector<HttpConnector>, B>;

/// An [`HttpsClient`] that trusts the web PKI roots bundled with the crate (Mozilla's), so it
/// works against a real space on any machine, with no system certificate store.
///
/// Needs a Tokio runtime when used, not when built. It also speaks plain HTTP, which the auth
/// layers allow only to loopback, so it can reach a [`MockSpace`](crate::MockSpace):
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use bytes::Bytes;
/// use http::{Request, StatusCode};
/// use http_body_util::Full;
/// use signalwire_auth::{BasicAuthLayer, MockSpace, https_client};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// let mock = MockSpace::start().await?; // plain HTTP on 127.0.0.1
/// let client = ServiceBuilder::new()
///     .layer(BasicAuthLayer::new(mock.credentials()))
///     .service(https_client::<Full<Bytes>>());
/// let request = Request::get(mock.space().endpoint("/api/fabric/subscribers")?)
///     .body(Full::default())?;
/// assert_eq!(client.oneshot(request).await?.status(), StatusCode::OK);
/// # Ok(())
/// # }
/// ```
pub fn https_client<B>() -> HttpsClient<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    https_client_with_roots(roots)
}

/// An [`HttpsClient`] that trusts exactly `roots`.
pub(crate) fn https_client_with_roots<B>(roots: RootCertStore) -> HttpsClient<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    // Pin the ring provider so the choice does not depend on which rustls features other crates
    // in the build happen to enable.
    let config =
        ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}
