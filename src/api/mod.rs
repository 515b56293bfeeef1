//! SignalWire's token endpoints.

mod client;
mod error;
mod refresher;
#[cfg(test)]
pub(crate) mod testing;
mod types;

pub use client::TokenClient;
pub use error::{ApiError, ApiErrorEntry};
pub use refresher::SubscriberRefresher;
#[cfg(feature = "test-util")]
pub(crate) use types::is_uuid;
pub use types::{
    CreateGuestToken, CreateInviteToken, CreateSubscriberToken, EmbedToken, GuestAuth, InviteToken,
    SAT_REFRESH_SCOPE, SubscriberToken,
};
