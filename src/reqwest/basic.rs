//! `BasicAuthMiddleware`.

use std::fmt;

use ::reqwest::{Request, Response};
use http::{Extensions, HeaderValue, header::AUTHORIZATION};
use reqwest_middleware::{Middleware, Next};

use crate::{Credentials, transport::TransportRule};

/// [`BasicAuthLayer`](crate::BasicAuthLayer) for reqwest: adds
/// `Authorization: Basic base64(project_id:api_token)`, computed once and marked sensitive, to
/// every request the [transport rule](crate::TransportRule) allows; any other request fails
/// with [`Error::is_refused`](crate::Error::is_refused) and is not sent.
///
/// # Example
///
/// ```
/// use reqwest_middleware::ClientBuilder;
/// use signalwire_auth::{MockSpace, reqwest::BasicAuthMiddleware};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mock = MockSpace::start().await?;
/// let client = ClientBuilder::new(mock.reqwest_client())
///     .with(BasicAuthMiddleware::new(mock.credentials()).for_space(&mock.space()))
///     .build();
/// let response = client
///     .post(mock.space().endpoint("/api/fabric/subscribers/tokens")?.to_string())
///     .header("content-type", "application/json")
///     .body(r#"{"reference":"alice@example.com"}"#)
///     .send()
///     .await?;
/// assert_eq!(response.status(), 200);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BasicAuthMiddleware {
    header: HeaderValue,
    target: TransportRule,
}

impl BasicAuthMiddleware {
    /// Authenticates with `credentials`, computing the header once.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            header: credentials.basic_header(),
            target: TransportRule::default(),
        }
    }

    crate::transport::transport_rule_methods!();
}

impl fmt::Debug for BasicAuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuthMiddleware")
            .field("header", &"Basic <redacted>")
            .field("target", &self.target)
            .finish()
    }
}

#[async_trait::async_trait]
impl Middleware for BasicAuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        super::check(&self.target, request.url())?;
        request
            .headers_mut()
            .insert(AUTHORIZATION, self.header.clone());
        next.run(request, extensions).await
    }
}
