//! SignalWire's token endpoints.

mod client;
mod error;
mod refresher;
mod service;
#[cfg(test)]
pub(crate) mod testing;
mod types;

pub use client::TokenClient;

/// The service [`TokenClient`] and [`SubscriberRefresher`] call through unless given another:
/// the crate's HTTPS client. Named once here so each type is declared once for every feature set.
#[cfg(feature = "https")]
pub(crate) type DefaultService = crate::HttpsClient;
/// Without the `https` feature there is no default client, and every user names a service.
#[cfg(not(feature = "https"))]
pub(crate) type DefaultService = ();
pub use error::{ApiError, ApiErrorEntry};
pub use refresher::SubscriberRefresher;
#[cfg(feature = "pool")]
pub(crate) use service::SharedService;
pub use service::TokenService;
#[cfg(feature = "test-util")]
pub(crate) use types::is_uuid;
pub use types::{
    CreateGuestToken, CreateInviteToken, CreateSubscriberToken, EmbedToken, GuestAuth, InviteToken,
    SAT_REFRESH_SCOPE, SubscriberToken,
};
