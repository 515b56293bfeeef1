//! Bearer authentication from a [`TokenCache`](crate::TokenCache), with refresh and replay:
//! [`BearerAuthLayer`], [`BearerAuth`], its [`ResponseFuture`], and the [`ReplayBody`] its inner
//! service receives.

mod body;
mod future;
mod layer;
pub(crate) mod replay;
mod service;

pub use body::ReplayBody;
pub use future::ResponseFuture;
pub use layer::{BearerAuthLayer, DEFAULT_REPLAY_LIMIT};
pub use replay::ReplaySkipped;
pub use service::BearerAuth;
