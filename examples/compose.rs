//! The auth layer in a full client stack: tower-http's trace layer, a timeout per attempt, a
//! retry of transient failures, a concurrency limit, and a redirect layer *inside* the auth
//! layer so that cross-origin redirects lose the token.
//!
//! Runs against an embedded `MockSpace` that fails the first request with a 503, to show the
//! retry at work.
//!
//! ```text
//! cargo run --example compose
//! ```

use std::{future, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use signalwire_auth::{
    BearerAuthLayer, CreateSubscriberToken, ReplayBody, SubscriberRefresher, TokenCache,
    TokenClient,
    mock::{Fault, MockEndpoint, MockSpace},
};
use tower::{BoxError, ServiceBuilder, ServiceExt, retry::Policy};
use tower_http::{follow_redirect::FollowRedirectLayer, trace::TraceLayer};

/// Retries a request once when the space answers 5xx or the attempt failed below HTTP.
#[derive(Clone)]
struct RetryTransient {
    left: usize,
}

impl<B, E> Policy<Request<Full<Bytes>>, Response<B>, E> for RetryTransient {
    type Future = future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<B>, E>,
    ) -> Option<Self::Future> {
        let transient = match result {
            Ok(response) => response.status().is_server_error(),
            Err(_) => true,
        };
        (transient && self.left > 0).then(|| {
            self.left -= 1;
            future::ready(())
        })
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.headers_mut() = request.headers().clone();
        Some(clone)
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "tower_http=debug,signalwire_auth=info".into()),
        )
        .init();

    let mock = MockSpace::start().await?;
    let space = mock.space();
    let tokens = TokenClient::with_service(space.clone(), Some(mock.credentials()), mock.client());
    let minted = tokens
        .create_subscriber_token(&CreateSubscriberToken::new("compose@example.com"))
        .await?;
    let cache = TokenCache::new(minted.into_pair(), SubscriberRefresher::with_client(tokens));

    let client = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .retry(RetryTransient { left: 1 })
        .timeout(Duration::from_secs(10))
        .concurrency_limit(16)
        // Outside the redirect layer: a redirect to another origin drops the Authorization header.
        .layer(BearerAuthLayer::new(cache.clone()).for_space(&space))
        .layer(FollowRedirectLayer::new())
        .service(mock.client::<ReplayBody<Full<Bytes>>>());

    mock.inject(
        MockEndpoint::ListAddresses,
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        1,
    );
    let request = Request::get(space.endpoint("/api/fabric/addresses")?).body(Full::default())?;
    let response = client.oneshot(request).await?;
    println!(
        "GET /api/fabric/addresses -> {} after {} attempts (one 503 retried)",
        response.status(),
        mock.calls(MockEndpoint::ListAddresses)
    );
    if response.status() != StatusCode::OK {
        return Err(format!("unexpected status {}", response.status()).into());
    }
    Ok(())
}
