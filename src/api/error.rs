//! A non-2xx answer from SignalWire.

use std::fmt;

use http::StatusCode;

/// A non-2xx answer from SignalWire: the status and the parsed `errors[]`.
#[derive(Clone)]
pub struct ApiError {
    status: StatusCode,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.status)
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {}", self.status)
    }
}

impl std::error::Error for ApiError {}
