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
pub type HttpsClient<B = Full<Bytes>> = Client<HttpsConnector<HttpConnector>, B>;

/// An [`HttpsClient`] that trusts the web PKI roots bundled with the crate (Mozilla's), so it
/// works against a real space on any machine, with no system certificate store.
///
/// Needs a Tokio runtime when used, not when built.
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
    let config = ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
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
