//! Tower middleware that authenticates requests to the SignalWire REST API.
//!
//! placeholder crate docs
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod api;
mod basic;
mod cache;
mod credentials;
mod error;
#[cfg(feature = "https")]
mod https;
#[cfg(feature = "test-util")]
pub mod mock;
mod refresher;
mod secret;
mod space;
mod target;

pub use api::{
    ApiError, ApiErrorEntry, CreateGuestToken, CreateInviteToken, CreateSubscriberToken,
    EmbedToken, GuestAuth, InviteToken, SAT_REFRESH_SCOPE, SubscriberToken, TokenClient,
};
pub use basic::{BasicAuth, BasicAuthLayer};
pub use cache::{Refresh, RefreshError, TokenHeader, TokenPair};
pub use credentials::{API_TOKEN_ENV, Credentials, PROJECT_ID_ENV};
pub use error::Error;
#[cfg(feature = "https")]
pub use https::{HttpsClient, https_client};
#[cfg(feature = "test-util")]
pub use mock::MockSpace;
pub use refresher::SubscriberRefresher;
pub use space::{SPACE_ENV, Space};
