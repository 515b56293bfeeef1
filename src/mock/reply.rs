//! Answers in SignalWire's shapes: JSON bodies, and the documented error body.

use bytes::Bytes;
use http::{
    HeaderValue, Method, Response, StatusCode,
    header::{ALLOW, CONTENT_TYPE, RETRY_AFTER},
};
use http_body_util::Full;
use serde::Serialize;

use super::MockEndpoint;

pub(super) type Reply = Response<Full<Bytes>>;

/// A reply that ends the handling of a request early (a refusal), as the error of a `Result`.
/// Boxed because a `Response` is large and these travel through `?`.
#[derive(Debug)]
pub(super) struct ErrorReply(Box<Reply>);

impl ErrorReply {
    pub(super) fn into_reply(self) -> Reply {
        *self.0
    }
}

impl From<Reply> for ErrorReply {
    fn from(reply: Reply) -> Self {
        Self(Box::new(reply))
    }
}

/// Where SignalWire's error entries point.
pub(super) const ERROR_DOCS_URL: &str =
    "https://developer.signalwire.com/rest/overview/error-codes";

/// One entry of `{"errors":[...]}`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ErrorEntry {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) attribute: Option<String>,
    pub(super) url: &'static str,
}

impl ErrorEntry {
    pub(super) fn new(kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            attribute: None,
            url: ERROR_DOCS_URL,
        }
    }

    /// A `validation_error` about one request attribute.
    pub(super) fn invalid(attribute: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            attribute: Some(attribute.to_owned()),
            ..Self::new("validation_error", code, message)
        }
    }
}

#[derive(Serialize)]
struct Errors<'a> {
    errors: &'a [ErrorEntry],
}

/// `value` as a JSON answer with `status`.
pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    // Every value given here is built by the mock from strings and numbers; serializing it
    // cannot fail, but an empty object is still JSON if it ever did.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The documented error body with `entries`.
pub(super) fn errors(status: StatusCode, entries: &[ErrorEntry]) -> Reply {
    json(status, &Errors { errors: entries })
}

pub(super) fn error(status: StatusCode, entry: ErrorEntry) -> Reply {
    errors(status, &[entry])
}

/// The 401 answer. `GET /api/fabric/subscribers` gives the short `{"error":"Unauthorized"}`,
/// a shape some SignalWire endpoints use, so that clients meet both; every other endpoint
/// gives the documented `errors[]` shape.
pub(super) fn unauthorized(endpoint: MockEndpoint) -> Reply {
    if endpoint == MockEndpoint::ListSubscribers {
        #[derive(Serialize)]
        struct Short {
            error: &'static str,
        }
        return json(
            StatusCode::UNAUTHORIZED,
            &Short {
                error: "Unauthorized",
            },
        );
    }
    error(
        StatusCode::UNAUTHORIZED,
        ErrorEntry::new("authentication_error", "unauthorized", "Unauthorized"),
    )
}

/// 403: authenticated, but not as what the endpoint needs.
pub(super) fn forbidden(message: &str) -> Reply {
    error(
        StatusCode::FORBIDDEN,
        ErrorEntry::new("authorization_error", "forbidden", message),
    )
}

/// 422 with every problem found in the request.
pub(super) fn invalid(entries: &[ErrorEntry]) -> Reply {
    errors(StatusCode::UNPROCESSABLE_ENTITY, entries)
}

pub(super) fn bad_request(code: &'static str, message: &str) -> Reply {
    error(
        StatusCode::BAD_REQUEST,
        ErrorEntry::new("invalid_request_error", code, message),
    )
}

pub(super) fn not_found() -> Reply {
    error(
        StatusCode::NOT_FOUND,
        ErrorEntry::new("invalid_request_error", "not_found", "Not Found"),
    )
}

pub(super) fn method_not_allowed(allowed: &Method) -> Reply {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorEntry::new(
            "invalid_request_error",
            "method_not_allowed",
            format!("Method Not Allowed; use {allowed}"),
        ),
    );
    if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

pub(super) fn payload_too_large(limit: usize) -> Reply {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorEntry::new(
            "invalid_request_error",
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        ),
    )
}

pub(super) fn unsupported_media_type() -> Reply {
    error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorEntry::new(
            "invalid_request_error",
            "unsupported_media_type",
            "request body must be application/json",
        ),
    )
}

/// The answer of [`Fault::Status`](super::Fault::Status): the documented shape, with a `type`
/// and `code` fitting the status.
pub(super) fn fault_status(status: StatusCode) -> Reply {
    let (kind, code) = match status.as_u16() {
        401 => ("authentication_error", "unauthorized"),
        403 => ("authorization_error", "forbidden"),
        404 => ("invalid_request_error", "not_found"),
        422 => ("validation_error", "unprocessable_entity"),
        429 => ("rate_limit_error", "too_many_requests"),
        400..=499 => ("invalid_request_error", "client_error"),
        500..=599 => ("api_error", "server_error"),
        _ => ("api_error", "unexpected_status"),
    };
    let message = status
        .canonical_reason()
        .map_or_else(|| format!("status {}", status.as_u16()), str::to_owned);
    let mut response = error(status, ErrorEntry::new(kind, code, message));
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The answer of [`Fault::Garbage`](super::Fault::Garbage).
pub(super) fn garbage(status: StatusCode) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"<html><body><h1>It works!</h1></body></html>",
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
