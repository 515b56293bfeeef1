//! Routing, faults, and the seven endpoints.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http::{Request, StatusCode, request::Parts};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::api::is_uuid;

use super::{
    Fault, MockEndpoint,
    conn::ConnLink,
    listing::{Address, Page},
    reply::{self, ErrorEntry, ErrorReply, Reply},
    request::{Caller, Fields, caller, json_object, read_body},
    shared::Shared,
    tokens::{Grant, Profile, RefreshRefusal},
};

/// The lifetime of a SAT minted with `scope: "sat:refresh"` and no `fingerprint`.
const UNBOUND_REFRESH_SCOPE_LIFETIME: Duration = Duration::from_secs(60);

/// The most `allowed_addresses` a guest token may have.
const MAX_GUEST_ADDRESSES: usize = 10;

/// Answers one request: routes it, counts it, applies the next fault, handles it.
pub(super) async fn answer(
    shared: Arc<Shared>,
    link: ConnLink,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let endpoint = match MockEndpoint::from_path(request.uri().path()) {
        None => return Ok(reply::not_found()),
        Some(endpoint) if request.method() != endpoint.method() => {
            return Ok(reply::method_not_allowed(&endpoint.method()));
        }
        Some(endpoint) => endpoint,
    };
    let fault = {
        let mut state = shared.lock();
        let count = &mut state.calls[endpoint.index()];
        *count = count.saturating_add(1);
        state.faults.take(endpoint)
    };
    let reply = match fault {
        None => handle(&shared, endpoint, request).await,
        Some(Fault::Status(status)) => {
            discard_body(request).await;
            reply::fault_status(status)
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            handle(&shared, endpoint, request).await
        }
        Some(Fault::Garbage) => {
            discard_body(request).await;
            reply::garbage(endpoint.success_status())
        }
        Some(Fault::Drop) => return Ok(link.close().await),
        Some(Fault::Stall(delay)) => {
            let reply = handle(&shared, endpoint, request).await;
            tokio::time::sleep(delay).await;
            reply
        }
        Some(Fault::LoseAnswer) => {
            let _lost = handle(&shared, endpoint, request).await;
            return Ok(link.close().await);
        }
    };
    Ok(reply)
}

/// Reads the body of a request that is answered without it, so that the connection can be
/// reused rather than reset with unread data.
async fn discard_body(request: Request<Incoming>) {
    let (parts, body) = request.into_parts();
    let _ = read_body(&parts.headers, body).await;
}

/// Which credentials an endpoint takes.
#[derive(Debug, Clone, Copy)]
enum Needs {
    Nothing,
    Project,
    AnyToken,
    SubscriberToken,
    ProjectOrSubscriberToken,
}

fn needs(endpoint: MockEndpoint) -> Needs {
    match endpoint {
        MockEndpoint::CreateSubscriberToken
        | MockEndpoint::RefreshSubscriberToken
        | MockEndpoint::ListSubscribers => Needs::Project,
        MockEndpoint::CreateGuestToken => Needs::ProjectOrSubscriberToken,
        MockEndpoint::CreateInviteToken => Needs::SubscriberToken,
        MockEndpoint::CreateEmbedToken => Needs::Nothing,
        MockEndpoint::ListAddresses => Needs::AnyToken,
    }
}

/// Lets the request in, or answers 401 (no or bad credentials, or the wrong kind) or 403 (a
/// valid token that is not a subscriber's where one is needed).
fn authorize(
    shared: &Shared,
    endpoint: MockEndpoint,
    parts: &Parts,
    now: Instant,
) -> Result<(), ErrorReply> {
    let needs = needs(endpoint);
    if let Needs::Nothing = needs {
        return Ok(());
    }
    let caller = caller(shared, &parts.headers, now).map_err(|rejection| {
        tracing::debug!(?endpoint, ?rejection, "mock space: unauthorized");
        reply::unauthorized(endpoint)
    })?;
    match (needs, caller) {
        (Needs::Project | Needs::ProjectOrSubscriberToken, Caller::Project)
        | (Needs::AnyToken, Caller::Token(_))
        | (
            Needs::SubscriberToken | Needs::ProjectOrSubscriberToken,
            Caller::Token(Grant::Subscriber(_)),
        ) => Ok(()),
        (Needs::SubscriberToken | Needs::ProjectOrSubscriberToken, Caller::Token(_)) => {
            Err(reply::forbidden("this endpoint needs a subscriber's access token").into())
        }
        _ => Err(reply::unauthorized(endpoint).into()),
    }
}

/// A token endpoint, given the request's JSON object.
type TokenHandler = fn(&Shared, &Map<String, Value>, Instant) -> Result<Reply, ErrorReply>;

async fn handle(shared: &Shared, endpoint: MockEndpoint, request: Request<Incoming>) -> Reply {
    // Lifetimes count from the instant the request is handled, after any injected delay.
    let now = Instant::now();
    let (parts, body) = request.into_parts();
    respond(shared, endpoint, &parts, body, now)
        .await
        .unwrap_or_else(ErrorReply::into_reply)
}

async fn respond(
    shared: &Shared,
    endpoint: MockEndpoint,
    parts: &Parts,
    body: Incoming,
    now: Instant,
) -> Result<Reply, ErrorReply> {
    authorize(shared, endpoint, parts, now)?;
    let handler: TokenHandler = match endpoint {
        MockEndpoint::ListAddresses => return list_addresses(shared, parts),
        MockEndpoint::ListSubscribers => return list_subscribers(shared, parts),
        MockEndpoint::CreateSubscriberToken => create_subscriber_token,
        MockEndpoint::RefreshSubscriberToken => refresh_subscriber_token,
        MockEndpoint::CreateGuestToken => create_guest_token,
        MockEndpoint::CreateInviteToken => create_invite_token,
        MockEndpoint::CreateEmbedToken => create_embed_token,
    };
    let map = json_object(&parts.headers, body).await?;
    handler(shared, &map, now)
}

/// The value of a required field once [`Fields::finish`] found no problem; a 422 otherwise, so
/// the two can never disagree into a panic.
fn required<T>(value: Option<T>, name: &str) -> Result<T, ErrorReply> {
    value.ok_or_else(|| {
        reply::invalid(&[ErrorEntry::invalid(
            name,
            "missing_required_parameter",
            format!("{name} is required"),
        )])
        .into()
    })
}

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_owned)
}

fn create_subscriber_token(
    shared: &Shared,
    map: &Map<String, Value>,
    now: Instant,
) -> Result<Reply, ErrorReply> {
    let mut f = Fields::new(map);
    let reference = f.required_str("reference");
    let expiry = f.optional_expiry("expire_at", now);
    let scope = f.optional_str("scope");
    if scope.is_some_and(|scope| scope != "sat:refresh") {
        f.problem(
            "scope",
            "invalid_parameter",
            "scope must be \"sat:refresh\"",
        );
    }
    let fingerprint = f.optional_str("fingerprint");
    let _application_id = f.optional_str("application_id");
    let _password = f.optional_str("password");
    let profile = Profile {
        first_name: owned(f.optional_str("first_name")),
        last_name: owned(f.optional_str("last_name")),
        display_name: owned(f.optional_str("display_name")),
        job_title: owned(f.optional_str("job_title")),
        timezone: owned(f.optional_str("time_zone")),
        country: owned(f.optional_str("country")),
        region: owned(f.optional_str("region")),
        company_name: owned(f.optional_str("company_name")),
    };
    f.finish()?;
    let reference = required(reference, "reference")?;

    let mut expires_at = expiry.unwrap_or(now + shared.lifetimes.access);
    if scope == Some("sat:refresh") && fingerprint.is_none() {
        // A refresh-scoped SAT not bound to a device fingerprint is short-lived.
        expires_at = expires_at.min(now + UNBOUND_REFRESH_SCOPE_LIFETIME);
    }
    let (subscriber_id, issued) = shared.lock().store.mint_subscriber(
        reference,
        profile,
        expires_at,
        now + shared.lifetimes.refresh,
    );
    Ok(reply::json(
        StatusCode::OK,
        &json!({
            "subscriber_id": subscriber_id,
            "token": issued.access,
            "refresh_token": issued.refresh,
        }),
    ))
}

fn refresh_subscriber_token(
    shared: &Shared,
    map: &Map<String, Value>,
    now: Instant,
) -> Result<Reply, ErrorReply> {
    let mut f = Fields::new(map);
    let presented = f.required_str("refresh_token");
    f.finish()?;
    let presented = required(presented, "refresh_token")?;
    let lifetimes = shared.lifetimes;
    let result = shared.lock().store.refresh(presented, now, |now| {
        (now + lifetimes.refreshed_access, now + lifetimes.refresh)
    });
    match result {
        Ok(issued) => Ok(reply::json(
            StatusCode::CREATED,
            &json!({ "token": issued.access, "refresh_token": issued.refresh }),
        )),
        Err(RefreshRefusal::Expired) => Ok(reply::invalid(&[ErrorEntry::invalid(
            "refresh_token",
            "token_expired",
            "The refresh token is expired or has already been used",
        )])),
        Err(RefreshRefusal::NotARefreshToken) => Ok(reply::invalid(&[ErrorEntry::invalid(
            "refresh_token",
            "not_a_refresh_token",
            "The token given is an access token, not a refresh token",
        )])),
    }
}

fn create_guest_token(
    shared: &Shared,
    map: &Map<String, Value>,
    now: Instant,
) -> Result<Reply, ErrorReply> {
    let mut f = Fields::new(map);
    if let Some(addresses) = f.required_array("allowed_addresses") {
        if addresses.is_empty() || addresses.len() > MAX_GUEST_ADDRESSES {
            f.problem(
                "allowed_addresses",
                "invalid_parameter",
                format!("allowed_addresses must hold 1 to {MAX_GUEST_ADDRESSES} address ids"),
            );
        }
        if !addresses.iter().all(|a| a.as_str().is_some_and(is_uuid)) {
            f.problem(
                "allowed_addresses",
                "invalid_parameter",
                "allowed_addresses must hold address ids (UUIDs)",
            );
        }
    }
    let expiry = f.optional_expiry("expire_at", now);
    let _region = f.optional_str("region");
    let _channel = f.optional_str("ch");
    f.finish()?;
    let issued = shared.lock().store.issue_pair(
        Grant::Guest,
        expiry.unwrap_or(now + shared.lifetimes.access),
        now + shared.lifetimes.refresh,
    );
    Ok(reply::json(
        StatusCode::CREATED,
        &json!({ "token": issued.access, "refresh_token": issued.refresh }),
    ))
}

fn create_invite_token(
    shared: &Shared,
    map: &Map<String, Value>,
    now: Instant,
) -> Result<Reply, ErrorReply> {
    let mut f = Fields::new(map);
    if f.required_str("address_id").is_some_and(|id| !is_uuid(id)) {
        f.problem(
            "address_id",
            "invalid_parameter",
            "address_id must be an address id (a UUID)",
        );
    }
    // Spelled `expires_at` on this endpoint, unlike the others.
    let expiry = f.optional_expiry("expires_at", now);
    f.finish()?;
    let token = shared.lock().store.issue_access(
        Grant::Invite,
        expiry.unwrap_or(now + shared.lifetimes.access),
    );
    Ok(reply::json(StatusCode::CREATED, &json!({ "token": token })))
}

fn create_embed_token(
    shared: &Shared,
    map: &Map<String, Value>,
    now: Instant,
) -> Result<Reply, ErrorReply> {
    let mut f = Fields::new(map);
    if f.required_str("token")
        .is_some_and(|t| t.len() <= "c2c_".len() || !t.starts_with("c2c_"))
    {
        f.problem(
            "token",
            "invalid_parameter",
            "token must be a click-to-call token (c2c_...)",
        );
    }
    f.finish()?;
    let token = shared
        .lock()
        .store
        .issue_access(Grant::Embed, now + shared.lifetimes.access);
    Ok(reply::json(StatusCode::CREATED, &json!({ "token": token })))
}

fn list_addresses(shared: &Shared, parts: &Parts) -> Result<Reply, ErrorReply> {
    let page = Page::from_query(parts.uri.query())?;
    let state = shared.lock();
    let mut all = state.addresses.clone();
    all.extend(state.store.subscribers().iter().map(Address::of_subscriber));
    drop(state);
    Ok(page.answer(MockEndpoint::ListAddresses.path(), &all))
}

fn list_subscribers(shared: &Shared, parts: &Parts) -> Result<Reply, ErrorReply> {
    let page = Page::from_query(parts.uri.query())?;
    let state = shared.lock();
    Ok(page.answer(
        MockEndpoint::ListSubscribers.path(),
        state.store.subscribers(),
    ))
}
