//! Basic auth only: a backend lists the space's subscribers with its project credentials.
//!
//! Runs against an embedded `MockSpace` unless `SIGNALWIRE_SPACE`, `SIGNALWIRE_PROJECT_ID` and
//! `SIGNALWIRE_API_TOKEN` are set.
//!
//! ```text
//! cargo run --example basic
//! ```

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use signalwire_auth::{
    BasicAuthLayer, CreateSubscriberToken, Credentials, Space, TokenClient, https_client,
    mock::MockSpace,
};
use tower::{BoxError, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let real = [
        "SIGNALWIRE_SPACE",
        "SIGNALWIRE_PROJECT_ID",
        "SIGNALWIRE_API_TOKEN",
    ]
    .iter()
    .all(|v| std::env::var_os(v).is_some());
    let mock = if real {
        None
    } else {
        Some(MockSpace::start().await?)
    };
    let (space, credentials, client) = match &mock {
        Some(mock) => (
            mock.space(),
            mock.credentials(),
            mock.client::<Full<Bytes>>(),
        ),
        None => (
            Space::from_env()?,
            Credentials::from_env()?,
            https_client::<Full<Bytes>>(),
        ),
    };
    println!("space: {space}, project: {}", credentials.project_id());

    if let Some(mock) = &mock {
        // Give the mock a subscriber to list.
        let tokens =
            TokenClient::with_service(space.clone(), Some(credentials.clone()), mock.client());
        tokens
            .create_subscriber_token(&CreateSubscriberToken::new("basic@example.com"))
            .await?;
    }

    let client = ServiceBuilder::new()
        .layer(BasicAuthLayer::new(credentials).for_space(&space))
        .service(client);
    let request = Request::get(space.endpoint("/api/fabric/subscribers?page_size=10")?)
        .body(Full::default())?;
    let response = client.oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let listed = serde_json::from_slice::<serde_json::Value>(&body)?;
    println!(
        "GET /api/fabric/subscribers -> {} with {} subscribers",
        status,
        listed["data"].as_array().map_or(0, Vec::len)
    );
    if !status.is_success() {
        return Err(format!("unexpected status {status}").into());
    }
    Ok(())
}
