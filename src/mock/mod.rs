//! [`MockSpace`]: an in-process server that behaves like a SignalWire space's token endpoints,
//! for tests and examples (feature `test-util`).
//!
//! It is a real hyper server on `127.0.0.1`, plain HTTP or HTTPS (HTTP/1.1 and HTTP/2 either
//! way), so what is tested is what runs against SignalWire: the same client, the same
//! middleware, real sockets. [`MockSpace::client`] returns a client that trusts the mock's
//! certificate.
//!
//! # What it serves
//!
//! | endpoint | auth | success |
//! | --- | --- | --- |
//! | `POST /api/fabric/subscribers/tokens` | Basic | 200 `{subscriber_id, token, refresh_token}` |
//! | `POST /api/fabric/subscribers/tokens/refresh` | Basic | 201 `{token, refresh_token}` |
//! | `POST /api/fabric/guests/tokens` | Basic, or a subscriber's Bearer SAT | 201 `{token, refresh_token}` |
//! | `POST /api/fabric/subscriber/invites` | a subscriber's Bearer SAT | 201 `{token}` |
//! | `POST /api/fabric/embeds/tokens` | none | 201 `{token}` |
//! | `GET /api/fabric/addresses` | Bearer, any valid access token | 200, paged |
//! | `GET /api/fabric/subscribers` | Basic | 200, paged |
//!
//! - **Create Subscriber Token** needs `reference` (the same reference always gets the same
//!   `subscriber_id`). The SAT lives until `expire_at` (unix seconds, must be in the future)
//!   if given, else the builder's [`access_lifetime`](MockSpaceBuilder::access_lifetime)
//!   (2 h); with `scope: "sat:refresh"` and no `fingerprint`, at most 60 s. The other
//!   documented fields (`application_id`, `password`, `first_name`, `last_name`,
//!   `display_name`, `job_title`, `time_zone`, `country`, `company_name`, `region`) are
//!   accepted as strings.
//! - **Refresh** rotates: the presented refresh token is spent, and a new access token
//!   ([`refreshed_access_lifetime`](MockSpaceBuilder::refreshed_access_lifetime), 2 h) and
//!   refresh token ([`refresh_lifetime`](MockSpaceBuilder::refresh_lifetime), 2 h 5 min) come
//!   back. An unknown, expired or spent refresh token gets 422 with code `token_expired`
//!   (spent ones are counted by [`MockSpace::reused_refresh_tokens`]); an access token gets
//!   422 `not_a_refresh_token`. Both have `attribute: "refresh_token"`.
//! - **Guest tokens** need `allowed_addresses`, 1 to 10 UUIDs; **invites** need an
//!   `address_id` UUID and take `expires_at` (spelled so); **embeds** need a `token` starting
//!   with `c2c_`.
//! - Tokens look like SATs: a compact JWE whose header reads
//!   `{"alg":"dir","enc":"A256GCM","ch":"<host>","typ":"SAT"}` (`"typ":"Refresh"` for refresh
//!   tokens), so [`TokenHeader::parse`](crate::TokenHeader::parse) reads them; the rest is
//!   random. A Bearer token is valid if this mock issued it as an access token and it is
//!   neither expired nor revoked ([`MockSpace::revoke_access_tokens`]). A valid token that is
//!   not a subscriber's (guest, invite, embed) gets 403 where a subscriber's SAT is needed.
//! - Listings answer `{"links":{"self","first","next","prev"},"data":[...]}`, with `next`
//!   and `prev` present only when there is such a page; `page_size` (1 to 1000, default 50)
//!   and the `page_token` of a link select the page.
//!
//! # Errors
//!
//! Every answer is JSON with `content-type: application/json` (except under
//! [`Fault::Garbage`]), and errors have SignalWire's documented shape
//! `{"errors":[{"type","code","message","attribute","url"}]}`:
//!
//! - 401 for missing or wrong credentials, `type: "authentication_error"`,
//!   `code: "unauthorized"`. The exception is `GET /api/fabric/subscribers`, which answers
//!   `{"error":"Unauthorized"}`, a shape some SignalWire endpoints use, so clients meet both.
//! - 422 `validation_error` for missing or invalid fields, one entry per problem, each naming
//!   its `attribute`; 400 `invalid_json` for a body that is not a JSON object; 415 when the
//!   body is not `application/json`; 413 for a body over 64 KiB; 404 for an unknown path;
//!   405 (with `allow`) for a known path with the wrong method.
//!
//! # Time
//!
//! Lifetimes run on [`tokio::time::Instant`] from the moment a request is handled, so a test
//! under `#[tokio::test(start_paused = true)]` expires tokens with `tokio::time::advance`;
//! `expire_at` is converted with the wall clock, as SignalWire does.
//!
//! # Example
//!
//! Start a mock and mint a SAT with a raw request, authenticated by
//! [`BasicAuthLayer`](crate::BasicAuthLayer):
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, StatusCode, header::CONTENT_TYPE};
//! use http_body_util::{BodyExt, Full};
//! use signalwire_auth::{BasicAuthLayer, MockSpace, TokenHeader, mock::MockEndpoint};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let mock = MockSpace::start().await?;
//! let client = ServiceBuilder::new()
//!     .layer(BasicAuthLayer::new(mock.credentials()))
//!     .service(mock.client::<Full<Bytes>>());
//!
//! let request = Request::post(mock.space().endpoint("/api/fabric/subscribers/tokens")?)
//!     .header(CONTENT_TYPE, "application/json")
//!     .body(Full::new(Bytes::from_static(br#"{"reference":"alice@example.com"}"#)))?;
//! let response = client.oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let body = response.into_body().collect().await?.to_bytes();
//! let body: serde_json::Value = serde_json::from_slice(&body)?;
//! let header = TokenHeader::parse(body["token"].as_str().unwrap_or_default()).unwrap();
//! assert_eq!(header.typ(), Some("SAT"));
//! assert_eq!(mock.calls(MockEndpoint::CreateSubscriberToken), 1);
//! # Ok(())
//! # }
//! ```

mod clients;
mod conn;
mod faults;
mod handlers;
mod listing;
mod reply;
mod request;
mod server;
mod shared;
mod tls;
mod tokens;

pub use faults::{Fault, MockEndpoint};
pub use server::{MockSpace, MockSpaceBuilder};
