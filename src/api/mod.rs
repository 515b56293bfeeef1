//! SignalWire's token endpoints.

mod error;

pub use error::ApiError;
