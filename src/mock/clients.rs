//! Clients for a [`MockSpace`]: a [`TokenClient`] and a [`SubscriberRefresher`] that know the
//! mock's lifetimes, and the mock's CA for clients other than the crate's (reqwest, say).

use bytes::Bytes;
use http_body_util::Full;

use super::MockSpace;
use crate::{HttpsClient, SubscriberRefresher, TokenClient};

impl MockSpace {
    /// A [`TokenClient`] for this mock: its space, its credentials, a client that trusts its
    /// certificate, and the lifetimes it was built with, so that minted and refreshed SATs are
    /// tracked as living as long as the mock lets them (the endpoints' answers do not say).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use signalwire_auth::{CreateSubscriberToken, MockSpace};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mock = MockSpace::builder()
    ///     .access_lifetime(Duration::from_secs(4))
    ///     .start()
    ///     .await?;
    /// let minted = mock
    ///     .token_client()
    ///     .create_subscriber_token(&CreateSubscriberToken::new("alice@example.com"))
    ///     .await?;
    /// assert_eq!(minted.pair().lifetime(), Duration::from_secs(4));
    /// # Ok(())
    /// # }
    /// ```
    pub fn token_client(&self) -> TokenClient<HttpsClient<Full<Bytes>>> {
        let lifetimes = self.shared.lifetimes;
        TokenClient::with_service(self.space(), Some(self.credentials()), self.client())
            .with_minted_lifetimes(lifetimes.access, lifetimes.refresh)
            .with_refreshed_lifetimes(lifetimes.refreshed_access, lifetimes.refresh)
    }

    /// A [`SubscriberRefresher`] over [`token_client`](Self::token_client): put it in a
    /// [`TokenCache`](crate::TokenCache) with a pair from [`mint`](Self::mint) or the client.
    ///
    /// # Example
    ///
    /// ```
    /// use signalwire_auth::{MockSpace, TokenCache};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mock = MockSpace::start().await?;
    /// let cache = TokenCache::new(mock.mint("alice@example.com"), mock.refresher());
    /// let next = cache.refresh_now().await?;
    /// assert_ne!(next.access_token(), "");
    /// # Ok(())
    /// # }
    /// ```
    pub fn refresher(&self) -> SubscriberRefresher<HttpsClient<Full<Bytes>>> {
        SubscriberRefresher::with_client(self.token_client())
    }

    /// The certificate of the CA that signed this mock's certificate, PEM-encoded; `None` for a
    /// plain-HTTP mock. Trust it in any client to reach [`start_tls`](Self::start_tls) mocks.
    ///
    /// # Example
    ///
    /// ```
    /// use signalwire_auth::MockSpace;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let mock = MockSpace::start_tls().await?;
    /// let pem = mock.ca_certificate_pem().expect("a TLS mock has a CA");
    /// assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    /// assert!(MockSpace::start().await?.ca_certificate_pem().is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn ca_certificate_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// [`ca_certificate_pem`](Self::ca_certificate_pem) as a `reqwest::Certificate`, for
    /// `reqwest::ClientBuilder::add_root_certificate` in a client of your own (feature
    /// `reqwest`); [`reqwest_client`](Self::reqwest_client) is a ready one.
    ///
    /// # Example
    ///
    /// ```
    /// use signalwire_auth::MockSpace;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let mock = MockSpace::start_tls().await?;
    /// let builder = reqwest::Client::builder()
    ///     .add_root_certificate(mock.reqwest_certificate().expect("a TLS mock"));
    /// # drop(builder);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "reqwest")]
    pub fn reqwest_certificate(&self) -> Option<::reqwest::Certificate> {
        let pem = self.ca_pem.as_deref()?;
        Some(
            ::reqwest::Certificate::from_pem(pem.as_bytes())
                .expect("rcgen's PEM is a valid certificate"),
        )
    }

    /// A `reqwest::Client` that trusts this mock's certificate (and nothing else) and speaks
    /// HTTP/1.1 and HTTP/2, over rustls with the ring provider this crate uses, so no process
    /// default provider is needed (feature `reqwest`).
    ///
    /// # Example
    ///
    /// ```
    /// use signalwire_auth::MockSpace;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mock = MockSpace::start_tls().await?;
    /// let response = mock
    ///     .reqwest_client()
    ///     .post(mock.space().endpoint("/api/fabric/subscribers/tokens")?.to_string())
    ///     .send()
    ///     .await?;
    /// assert_eq!(response.status(), 401, "no credentials");
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "reqwest")]
    pub fn reqwest_client(&self) -> ::reqwest::Client {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        ::reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .expect("a preconfigured rustls client builds")
    }
}
