//! Reading a request: its credentials, its body, and the fields of its JSON object.
//!
//! Everything here looks at bytes from the network, so nothing here may panic: every malformed
//! input becomes an answer in SignalWire's error shape.

use std::time::SystemTime;

use base64::Engine as _;
use http::{
    HeaderMap,
    header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE},
};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{
    reply::{self, ErrorEntry, ErrorReply},
    shared::Shared,
    tokens::{Grant, Rejection, deadline},
};
use crate::TokenPair;

/// The largest request body the mock reads; anything larger gets 413.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// The credentials on a request, if they are good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Caller {
    /// Basic with the project's credentials.
    Project,
    /// Bearer with a valid access token.
    Token(Grant),
}

/// Who is calling, or why they are not let in.
pub(super) fn caller(
    shared: &Shared,
    headers: &HeaderMap,
    now: Instant,
) -> Result<Caller, Rejection> {
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(Rejection::Unknown)?;
    let (scheme, credentials) = value.trim().split_once(' ').ok_or(Rejection::Unknown)?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .map_err(|_| Rejection::Unknown)?,
        );
        if shared.is_project(&decoded) {
            Ok(Caller::Project)
        } else {
            Err(Rejection::Unknown)
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        shared
            .lock()
            .store
            .check_access(credentials, now)
            .map(Caller::Token)
    } else {
        Err(Rejection::Unknown)
    }
}

/// The most a too-large body is read (and thrown away) before the 413 goes out. Reading it
/// lets the connection live on; closing a socket with unread data would reset it, and the
/// client could lose the 413.
const MAX_DRAIN: usize = 1024 * 1024;

/// The body, at most [`MAX_BODY`] bytes.
pub(super) async fn read_body(
    headers: &HeaderMap,
    mut body: Incoming,
) -> Result<Vec<u8>, ErrorReply> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_DRAIN as u64) {
        return Err(reply::payload_too_large(MAX_BODY).into());
    }
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The client went away or broke the framing; it will likely never read this.
            return Err(
                reply::bad_request("incomplete_body", "request body could not be read").into(),
            );
        };
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            if total > MAX_DRAIN {
                return Err(reply::payload_too_large(MAX_BODY).into());
            }
            if total <= MAX_BODY {
                kept.extend_from_slice(&data);
            }
        }
    }
    if total > MAX_BODY {
        return Err(reply::payload_too_large(MAX_BODY).into());
    }
    Ok(kept)
}

/// The body, at most [`MAX_BODY`] bytes, as a JSON object.
pub(super) async fn json_object(
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Map<String, Value>, ErrorReply> {
    let bytes = read_body(headers, body).await?;
    if !is_json(headers) {
        return Err(reply::unsupported_media_type().into());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => {
            Err(reply::bad_request("invalid_json", "request body must be a JSON object").into())
        }
        Err(_) => Err(reply::bad_request("invalid_json", "request body is not valid JSON").into()),
    }
}

/// `content-type: application/json`, with or without parameters such as `charset`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads fields of a request object, collecting every problem so that one 422 lists them all.
#[derive(Debug)]
pub(super) struct Fields<'a> {
    map: &'a Map<String, Value>,
    problems: Vec<ErrorEntry>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            problems: Vec::new(),
        }
    }

    /// The field, treating `null` as absent.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub(super) fn problem(
        &mut self,
        attribute: &str,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.problems
            .push(ErrorEntry::invalid(attribute, code, message));
    }

    fn missing(&mut self, name: &str) {
        self.problem(
            name,
            "missing_required_parameter",
            format!("{name} is required"),
        );
    }

    /// A string that must be present and not blank.
    pub(super) fn required_str(&mut self, name: &str) -> Option<&'a str> {
        match self.get(name) {
            None => {
                self.missing(name);
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.problem(name, "invalid_parameter", format!("{name} can't be blank"));
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.problem(
                    name,
                    "invalid_parameter",
                    format!("{name} must be a string"),
                );
                None
            }
        }
    }

    pub(super) fn optional_str(&mut self, name: &str) -> Option<&'a str> {
        match self.get(name)? {
            Value::String(s) => Some(s),
            _ => {
                self.problem(
                    name,
                    "invalid_parameter",
                    format!("{name} must be a string"),
                );
                None
            }
        }
    }

    /// An array that must be present.
    pub(super) fn required_array(&mut self, name: &str) -> Option<&'a [Value]> {
        match self.get(name) {
            None => {
                self.missing(name);
                None
            }
            Some(Value::Array(items)) => Some(items),
            Some(_) => {
                self.problem(
                    name,
                    "invalid_parameter",
                    format!("{name} must be an array"),
                );
                None
            }
        }
    }

    /// An optional unix time in seconds, turned into the instant it stands for (counted from
    /// `now`, with the wall clock read now). It must be in the future.
    pub(super) fn optional_expiry(&mut self, name: &str, now: Instant) -> Option<Instant> {
        let value = self.get(name)?;
        let Some(unix) = value.as_u64() else {
            self.problem(
                name,
                "invalid_parameter",
                format!("{name} must be a unix time in seconds"),
            );
            return None;
        };
        let lifetime = TokenPair::lifetime_until(unix, SystemTime::now());
        if lifetime.is_zero() {
            self.problem(
                name,
                "invalid_parameter",
                format!("{name} must be in the future"),
            );
            return None;
        }
        let at = deadline(now, lifetime);
        if at.is_none() {
            self.problem(
                name,
                "invalid_parameter",
                format!("{name} is too far in the future"),
            );
        }
        at
    }

    /// `Ok` when no problem was found, else the 422 listing them.
    pub(super) fn finish(self) -> Result<(), ErrorReply> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(reply::invalid(&self.problems).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::is_uuid;

    #[test]
    fn uuid_shape() {
        assert!(is_uuid("c22d24f6-5a26-4f53-8008-b29530339efa"));
        assert!(is_uuid("C22D24F6-5A26-4F53-8008-B29530339EFA"));
        for bad in [
            "",
            "c22d24f6-5a26-4f53-8008-b29530339ef",
            "c22d24f6-5a26-4f53-8008-b29530339efaa",
            "c22d24f65a264f538008b29530339efa0000",
            "g22d24f6-5a26-4f53-8008-b29530339efa",
            "c22d24f6-5a26-4f53-8008-b29530339eé",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }

    #[test]
    fn json_content_type_accepts_parameters_only() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        headers.insert(
            CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json(&headers));
        headers.insert(CONTENT_TYPE, "application/json-patch+json".parse().unwrap());
        assert!(!is_json(&headers));
        headers.insert(CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json(&headers));
    }

    #[test]
    fn fields_collect_every_problem() {
        let map = serde_json::json!({
            "a": 1, "b": "  ", "c": null, "d": "x", "t": -5, "arr": "no",
        });
        let map = map.as_object().unwrap();
        let mut fields = Fields::new(map);
        let now = Instant::now();
        assert_eq!(fields.required_str("a"), None);
        assert_eq!(fields.required_str("b"), None);
        assert_eq!(fields.required_str("c"), None);
        assert_eq!(fields.optional_str("c"), None);
        assert_eq!(fields.optional_str("d"), Some("x"));
        assert_eq!(fields.optional_expiry("t", now), None);
        assert_eq!(fields.optional_expiry("missing", now), None);
        assert_eq!(fields.required_array("arr"), None);
        let attributes: Vec<_> = fields
            .problems
            .iter()
            .map(|p| p.attribute.as_deref().unwrap())
            .collect();
        assert_eq!(attributes, ["a", "b", "c", "t", "arr"]);
    }

    #[test]
    fn expiry_in_the_past_or_beyond_instant_is_a_problem() {
        let now = Instant::now();
        let map = serde_json::json!({"past": 1, "far": u64::MAX, "soon": u64::MAX / 2});
        let map = map.as_object().unwrap();
        let mut fields = Fields::new(map);
        assert_eq!(fields.optional_expiry("past", now), None);
        assert_eq!(fields.optional_expiry("far", now), None);
        let _ = fields.optional_expiry("soon", now);
        assert!(fields.problems.len() >= 2);
    }
}
