//! Guest and invite tokens: a subscriber lets someone without an account reach one of its
//! Fabric addresses.
//!
//! A backend mints a SAT for a subscriber, then, with that SAT, creates an invite to one of the
//! subscriber's addresses; it also mints a guest token for the address with its project
//! credentials (and once more with the SAT), and sends a request with the guest token, a fixed
//! bearer that is never refreshed.
//!
//! Runs against an embedded `MockSpace` unless `SIGNALWIRE_SPACE`, `SIGNALWIRE_PROJECT_ID` and
//! `SIGNALWIRE_API_TOKEN` are set.
//!
//! ```text
//! cargo run --example guest_invite
//! ```

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use signalwire_auth::{
    BearerAuthLayer, CreateGuestToken, CreateInviteToken, CreateSubscriberToken, Credentials,
    GuestAuth, ReplayBody, Space, TokenClient, https_client, mock::MockSpace,
};
use tower::{BoxError, Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A real space when all three variables are set, else the embedded mock.
    let from_env = Space::from_env().and_then(|space| Ok((space, Credentials::from_env()?)));
    let mock = match from_env {
        Ok(_) => None,
        Err(_) => Some(MockSpace::start().await?),
    };
    let (space, credentials) = match (&mock, from_env) {
        (Some(mock), _) => (mock.space(), mock.credentials()),
        (None, from_env) => from_env?,
    };
    let tokens = match &mock {
        Some(mock) => TokenClient::with_service(space.clone(), Some(credentials), mock.client()),
        None => TokenClient::with_service(space.clone(), Some(credentials), https_client()),
    };
    println!("guest and invite tokens on {space}");

    // 1. A subscriber, and one of its addresses.
    let alice = tokens
        .create_subscriber_token(&CreateSubscriberToken::new("alice@example.com"))
        .await?;
    let sat = alice.pair().access_token();
    let addresses = list_addresses(&space, &mock, BearerAuthLayer::from_token(sat)?).await?;
    let Some(address) = addresses.first().cloned() else {
        return Err("the subscriber has no address to invite to".into());
    };
    println!(
        "subscriber {} owns address {address}",
        alice.subscriber_id()
    );

    // 2. An invite to that address, created with the subscriber's SAT.
    let invite = tokens
        .create_invite_token(&CreateInviteToken::new(&address), sat)
        .await?;
    println!(
        "invite token created ({} characters; Debug shows {invite:?})",
        invite.len()
    );

    // 3. A guest token for the same address: with the project credentials, and again with
    //    the subscriber's SAT (SignalWire documents both).
    let request = CreateGuestToken::new([address.as_str()]);
    let guest = tokens
        .create_guest_token(&request, GuestAuth::Basic)
        .await?;
    let by_subscriber = tokens
        .create_guest_token(&request, GuestAuth::Bearer(sat))
        .await?;
    println!(
        "guest tokens created with project credentials and with the SAT (lifetime {:?} each; refresh tokens: {}, {})",
        guest.lifetime(),
        guest.refresh_token().is_some(),
        by_subscriber.refresh_token().is_some(),
    );

    // 4. The guest token is a bearer token like any other: a fixed one, not refreshed.
    // What a guest may list is the space's decision; the example only reports it.
    let guest_layer = BearerAuthLayer::from_token(guest.access_token())?;
    match list_addresses(&space, &mock, guest_layer).await {
        Ok(seen) => println!("the guest lists {} address(es)", seen.len()),
        Err(refused) => println!("the guest may not list addresses: {refused}"),
    }
    Ok(())
}

/// `GET /api/fabric/addresses` through `layer`, returning the addresses' ids.
async fn list_addresses(
    space: &Space,
    mock: &Option<MockSpace>,
    layer: BearerAuthLayer,
) -> Result<Vec<String>, BoxError> {
    let layer = layer.for_space(space);
    let request = Request::get(space.endpoint("/api/fabric/addresses")?).body(Full::default())?;
    let response = match mock {
        Some(mock) => {
            layer
                .layer(mock.client::<ReplayBody<Full<Bytes>>>())
                .oneshot(request)
                .await?
        }
        None => {
            layer
                .layer(https_client::<ReplayBody<Full<Bytes>>>())
                .oneshot(request)
                .await?
        }
    };
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!(
            "listing addresses: {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(json["data"]
        .as_array()
        .map(|data| {
            data.iter()
                .filter_map(|address| address["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}
