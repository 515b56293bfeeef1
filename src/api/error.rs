//! A non-2xx answer from SignalWire.

use std::{
    error::Error as StdError,
    fmt,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, StatusCode, header::RETRY_AFTER};
use serde::{Deserialize, Deserializer, de::IgnoredAny};
use serde_json::Value;

use crate::{Error, error::Kind};

/// The most bytes of a body that is not an error document kept in [`ApiError::body_text`].
const MAX_TEXT: usize = 4096;
/// The most characters of that text shown by `Display`.
const MAX_DISPLAY_TEXT: usize = 200;

/// A non-2xx answer from SignalWire: the status and the parsed `errors[]`.
///
/// The body is parsed leniently: SignalWire's `{"errors":[{"type","code","message","attribute",
/// "url"}]}`, the `{"errors":[{"detail","status","title","code"}]}` shape some services use, and
/// a bare `{"error":"Unauthorized"}` all become [`ApiErrorEntry`]s; anything else (an HTML page
/// from a proxy, say) is kept as bounded text in [`body_text`](Self::body_text).
///
/// Any token the request carried is cut out of the kept text before it is stored, so neither
/// `Debug` nor `Display` can echo one back.
///
/// # Example
///
/// A refresh token works once; presenting it again is a 422 that says why:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use http::StatusCode;
/// use signalwire_auth::{MockSpace, TokenClient};
///
/// let mock = MockSpace::start().await?;
/// let client = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
/// let pair = mock.mint("alice@example.com");
/// let refresh_token = pair.refresh_token().unwrap_or_default();
/// client.refresh_subscriber_token(refresh_token).await?;
///
/// let error = client.refresh_subscriber_token(refresh_token).await.unwrap_err();
/// let answer = error.api_error().expect("SignalWire answered");
/// assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY);
/// assert!(answer.is_validation() && answer.is_token_expired());
/// assert_eq!(answer.errors()[0].attribute(), Some("refresh_token"));
/// // The refresh token it was sent is not echoed back.
/// assert!(!format!("{answer} {answer:?}").contains(refresh_token));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    errors: Box<[ApiErrorEntry]>,
    body_text: Option<Box<str>>,
    retry_after: Option<Duration>,
}

/// One entry of an error answer's `errors[]`. Every field is optional: SignalWire's shape has
/// `type`, `code`, `message`, `attribute` (null unless a request field is at fault) and `url`;
/// the other shape has `detail`, `status`, `title` and `code`.
///
/// It deserializes leniently from any JSON object: a number or boolean field is kept as its
/// text, a field of any other type (null, an array) is `None`, and unknown fields are ignored.
///
/// ```
/// use signalwire_auth::ApiErrorEntry;
///
/// let entry: ApiErrorEntry = serde_json::from_str(
///     r#"{"type":"validation_error","code":"token_expired","message":"Token has expired",
///         "attribute":"refresh_token","url":"https://developer.signalwire.com/rest/errors"}"#,
/// )?;
/// assert_eq!(entry.code(), Some("token_expired"));
/// assert_eq!(entry.attribute(), Some("refresh_token"));
/// assert_eq!(entry.to_string(), "token_expired: Token has expired (attribute refresh_token)");
///
/// // The other shape, with a numeric status.
/// let entry: ApiErrorEntry = serde_json::from_str(r#"{"status":403,"title":"Forbidden","attribute":null}"#)?;
/// assert_eq!(entry.status(), Some("403"));
/// assert_eq!(entry.attribute(), None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ApiErrorEntry {
    #[serde(rename = "type", default, deserialize_with = "text")]
    type_: Option<Box<str>>,
    #[serde(default, deserialize_with = "text")]
    code: Option<Box<str>>,
    #[serde(default, deserialize_with = "text")]
    message: Option<Box<str>>,
    #[serde(default, deserialize_with = "text")]
    attribute: Option<Box<str>>,
    #[serde(default, deserialize_with = "text")]
    url: Option<Box<str>>,
    #[serde(default, deserialize_with = "text")]
    detail: Option<Box<str>>,
    #[serde(default, deserialize_with = "text")]
    status: Option<Box<str>>,
    #[serde(default, deserialize_with = "text")]
    title: Option<Box<str>>,
}

/// A field of an entry as SignalWire's services send it: usually a string, sometimes a number.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<str>>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(text) => Some(text.into()),
        Value::Number(number) => Some(number.to_string().into()),
        Value::Bool(flag) => Some(flag.to_string().into()),
        _ => None,
    })
}

/// An error document: `errors` (a list, or one entry), else `error`, else a string `message`.
/// Whichever of them is present decides, even when it holds nothing usable.
#[derive(Deserialize)]
struct Document {
    #[serde(default, deserialize_with = "present")]
    errors: Option<Items>,
    #[serde(default, deserialize_with = "present")]
    error: Option<Item>,
    #[serde(default, deserialize_with = "present")]
    message: Option<Item>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Items {
    Many(Vec<Item>),
    One(Item),
}

/// One element of `errors[]`: an object is an entry, a bare string its message; anything else
/// (a number, null, a nested list, caught before it could fill an entry by position) is dropped.
#[derive(Deserialize)]
#[serde(untagged)]
enum Item {
    Message(Box<str>),
    List(#[allow(dead_code, reason = "read only to be dropped")] Vec<IgnoredAny>),
    Entry(ApiErrorEntry),
    Other(IgnoredAny),
}

impl Item {
    fn into_entry(self) -> Option<ApiErrorEntry> {
        match self {
            Self::Entry(entry) => Some(entry),
            Self::Message(message) => Some(ApiErrorEntry {
                message: Some(message),
                ..ApiErrorEntry::default()
            }),
            Self::List(_) | Self::Other(_) => None,
        }
    }
}

/// A field that is present, even as `null`, is `Some`: `{"errors": null}` is no document.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl ApiError {
    /// Reads a non-2xx answer, cutting every one of `secrets` (what the request carried) out of
    /// whatever the server echoed. `body` may be cut short (bodies are read up to a cap); never
    /// panics on any input.
    pub(crate) fn from_response(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[&str],
    ) -> Self {
        let (errors, body_text) = match parse_document(body) {
            Some(errors) => (errors, None),
            // Redacted before it is cut, so a secret across the cut leaves no prefix behind.
            None => (Vec::new(), bounded_text(&redacted(body, secrets))),
        };
        let mut error = Self {
            status,
            errors: errors.into_boxed_slice(),
            body_text,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
        };
        for secret in secrets {
            error.redact(secret);
        }
        error
    }

    fn for_each_field(&mut self, mut visit: impl FnMut(&mut Option<Box<str>>)) {
        visit(&mut self.body_text);
        for entry in &mut self.errors {
            for field in entry.fields_mut() {
                visit(field);
            }
        }
    }

    /// Replaces every occurrence of `secret` in the kept text with `[redacted]`.
    pub(crate) fn redact(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        self.for_each_field(|field| redact_field(field, secret));
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The entries of the error document, in order; empty when the body was not one.
    pub fn errors(&self) -> &[ApiErrorEntry] {
        &self.errors
    }

    /// The body, when it was not an error document: lossily decoded, at most 4 KiB.
    pub fn body_text(&self) -> Option<&str> {
        self.body_text.as_deref()
    }

    /// How long the server asked to wait before trying again (`Retry-After`, in seconds or as an
    /// HTTP date).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// 401: the credentials or the token were refused (wrong, expired or revoked).
    pub fn is_unauthorized(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }

    /// 403: the API token lacks a scope the endpoint needs.
    pub fn is_forbidden(&self) -> bool {
        self.status == StatusCode::FORBIDDEN
    }

    /// 404: no such endpoint or resource.
    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }

    /// 422: the request failed validation; [`errors`](Self::errors) says which field and why.
    pub fn is_validation(&self) -> bool {
        self.status == StatusCode::UNPROCESSABLE_ENTITY
    }

    /// 429: rate limited; wait [`retry_after`](Self::retry_after) if given.
    pub fn is_rate_limited(&self) -> bool {
        self.status == StatusCode::TOO_MANY_REQUESTS
    }

    /// 5xx: SignalWire failed; worth retrying with backoff.
    pub fn is_server_error(&self) -> bool {
        self.status.is_server_error()
    }

    /// An entry has code `token_expired`: the (refresh) token is past its lifetime.
    pub fn is_token_expired(&self) -> bool {
        self.has_code("token_expired")
    }

    /// An entry has code `not_a_refresh_token`: an access token was sent where a refresh token
    /// was expected.
    pub fn is_not_a_refresh_token(&self) -> bool {
        self.has_code("not_a_refresh_token")
    }

    /// Whether any entry has `code`.
    pub fn has_code(&self, code: &str) -> bool {
        self.errors.iter().any(|e| e.code() == Some(code))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {}", self.status)?;
        if let Some(first) = self.errors.first() {
            write!(f, ": {first}")?;
            if self.errors.len() > 1 {
                write!(f, " (and {} more)", self.errors.len() - 1)?;
            }
        } else if let Some(text) = &self.body_text {
            f.write_str(": ")?;
            let mut shown = text.chars().map(|c| if c.is_control() { ' ' } else { c });
            for c in shown.by_ref().take(MAX_DISPLAY_TEXT) {
                fmt::Write::write_char(f, c)?;
            }
            if shown.next().is_some() {
                f.write_str("…")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl ApiErrorEntry {
    /// `type`, such as `"validation_error"`.
    pub fn type_(&self) -> Option<&str> {
        self.type_.as_deref()
    }

    /// `code`, such as `"token_expired"` or `"not_a_refresh_token"`.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// `message`, for people. A bare `{"error": "…"}` answer puts its text here.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// `attribute`: the request field at fault, such as `"refresh_token"`; `None` when null.
    pub fn attribute(&self) -> Option<&str> {
        self.attribute.as_deref()
    }

    /// `url`: where the error is documented.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// `detail`, in the `detail`/`status`/`title` shape.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// `status`, in the `detail`/`status`/`title` shape (as text, whether sent as a string or a
    /// number).
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// `title`, in the `detail`/`status`/`title` shape.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    fn fields_mut(&mut self) -> [&mut Option<Box<str>>; 8] {
        [
            &mut self.type_,
            &mut self.code,
            &mut self.message,
            &mut self.attribute,
            &mut self.url,
            &mut self.detail,
            &mut self.status,
            &mut self.title,
        ]
    }
}

impl fmt::Display for ApiErrorEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.message().or(self.detail()).or(self.title());
        match (self.code(), text) {
            (Some(code), Some(text)) => write!(f, "{}: {}", Printable(code), Printable(text))?,
            (Some(one), None) | (None, Some(one)) => write!(f, "{}", Printable(one))?,
            (None, None) => f.write_str("no details")?,
        }
        if let Some(attribute) = self.attribute() {
            write!(f, " (attribute {})", Printable(attribute))?;
        }
        Ok(())
    }
}

/// Server text as it may be printed: control characters become spaces, so an answer cannot
/// forge lines in a log.
struct Printable<'a>(&'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            fmt::Write::write_char(f, if c.is_control() { ' ' } else { c })?;
        }
        Ok(())
    }
}

/// The entries of an error document, or `None` when `body` is not one.
fn parse_document(body: &[u8]) -> Option<Vec<ApiErrorEntry>> {
    // Only an object is a document; a derived struct would also accept a JSON array by position.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let document: Document = serde_json::from_slice(body).ok()?;
    match (document.errors, document.error, document.message) {
        (Some(Items::Many(items)), _, _) => {
            Some(items.into_iter().filter_map(Item::into_entry).collect())
        }
        (Some(Items::One(item)), _, _) | (None, Some(item), _) => {
            item.into_entry().map(|e| vec![e])
        }
        (None, None, Some(message @ Item::Message(_))) => message.into_entry().map(|e| vec![e]),
        (None, None, _) => None,
    }
}

/// The body as text with every secret replaced.
fn redacted(body: &[u8], secrets: &[&str]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

fn bounded_text(text: &str) -> Option<Box<str>> {
    if text.chars().all(char::is_whitespace) {
        return None;
    }
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].into())
}

fn redact_field(field: &mut Option<Box<str>>, secret: &str) {
    if let Some(text) = field
        && text.contains(secret)
    {
        *text = text.replace(secret, "[redacted]").into_boxed_str();
    }
}

/// `Retry-After` as delta-seconds or an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`); a date in
/// the past is zero.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

// The API-error parts of the crate's `Error` live here, so that `error.rs` needs nothing from
// the modules above it.
impl Error {
    pub(crate) fn api(error: ApiError) -> Self {
        Self::new(Kind::Api).with_source(error)
    }

    /// The API's answer, when this error is one (`is_api()`), found anywhere in the source chain.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use signalwire_auth::{CreateSubscriberToken, Credentials, MockSpace, TokenClient};
    ///
    /// let mock = MockSpace::start().await?;
    /// let wrong = Credentials::new(mock.credentials().project_id(), "not-the-token")?;
    /// let client = TokenClient::with_service(mock.space(), Some(wrong), mock.client());
    /// let error = client
    ///     .create_subscriber_token(&CreateSubscriberToken::new("alice@example.com"))
    ///     .await
    ///     .unwrap_err();
    /// assert!(error.is_api());
    /// let answer = error.api_error().expect("an API error");
    /// assert!(answer.is_unauthorized());
    /// assert_eq!(answer.errors()[0].code(), Some("unauthorized"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn api_error(&self) -> Option<&ApiError> {
        let mut next = StdError::source(self);
        while let Some(err) = next {
            if let Some(api) = err.downcast_ref::<ApiError>() {
                return Some(api);
            }
            next = err.source();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use http::HeaderValue;

    use super::*;

    fn parse(status: u16, body: &str) -> ApiError {
        ApiError::from_response(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
            &[],
        )
    }

    #[test]
    fn signalwire_shape_with_several_entries_and_null_attribute() {
        let err = parse(
            422,
            r#"{"errors":[
                {"type":"validation_error","code":"token_expired","message":"Token has expired",
                 "attribute":"refresh_token","url":"https://developer.signalwire.com/rest/errors#token_expired"},
                {"type":"validation_error","code":"missing_required_parameter","message":"Reference is required",
                 "attribute":null,"url":"https://developer.signalwire.com/rest/errors"}
            ]}"#,
        );
        assert!(err.is_validation());
        assert!(err.is_token_expired());
        assert!(!err.is_not_a_refresh_token());
        assert_eq!(err.errors().len(), 2);
        let first = &err.errors()[0];
        assert_eq!(first.type_(), Some("validation_error"));
        assert_eq!(first.code(), Some("token_expired"));
        assert_eq!(first.message(), Some("Token has expired"));
        assert_eq!(first.attribute(), Some("refresh_token"));
        assert_eq!(
            first.url(),
            Some("https://developer.signalwire.com/rest/errors#token_expired")
        );
        assert_eq!(err.errors()[1].attribute(), None);
        assert_eq!(err.body_text(), None);
        assert_eq!(
            err.to_string(),
            "status 422 Unprocessable Entity: token_expired: Token has expired \
             (attribute refresh_token) (and 1 more)"
        );
    }

    #[test]
    fn not_a_refresh_token_code() {
        let err = parse(
            422,
            r#"{"errors":[{"code":"not_a_refresh_token","message":"nope","attribute":"refresh_token"}]}"#,
        );
        assert!(err.is_not_a_refresh_token());
        assert!(!err.is_token_expired());
    }

    #[test]
    fn bare_error_string() {
        let err = parse(401, r#"{"error":"Unauthorized"}"#);
        assert!(err.is_unauthorized());
        assert_eq!(err.errors().len(), 1);
        assert_eq!(err.errors()[0].message(), Some("Unauthorized"));
        assert_eq!(err.errors()[0].code(), None);
        assert_eq!(err.to_string(), "status 401 Unauthorized: Unauthorized");
    }

    #[test]
    fn detail_status_title_shape() {
        let err = parse(
            403,
            r#"{"errors":[{"detail":"Missing scope","status":403,"title":"Forbidden","code":"forbidden"}]}"#,
        );
        assert!(err.is_forbidden());
        let entry = &err.errors()[0];
        assert_eq!(entry.detail(), Some("Missing scope"));
        assert_eq!(entry.status(), Some("403"));
        assert_eq!(entry.title(), Some("Forbidden"));
        assert_eq!(entry.code(), Some("forbidden"));
        assert_eq!(entry.message(), None);
        assert_eq!(
            err.to_string(),
            "status 403 Forbidden: forbidden: Missing scope"
        );
        let string_status = parse(404, r#"{"errors":[{"status":"404","title":"Not Found"}]}"#);
        assert!(string_status.is_not_found());
        assert_eq!(string_status.errors()[0].status(), Some("404"));
    }

    #[test]
    fn non_json_is_kept_as_bounded_text() {
        let err = parse(502, "<html>\n<body>Bad Gateway</body></html>");
        assert!(err.is_server_error());
        assert!(err.errors().is_empty());
        assert_eq!(
            err.body_text(),
            Some("<html>\n<body>Bad Gateway</body></html>")
        );
        assert_eq!(
            err.to_string(),
            "status 502 Bad Gateway: <html> <body>Bad Gateway</body></html>"
        );

        let long = "é".repeat(MAX_TEXT);
        let err = parse(500, &long);
        let text = err.body_text().unwrap();
        assert!(text.len() <= MAX_TEXT);
        assert!(text.chars().all(|c| c == 'é'));
        assert!(err.to_string().ends_with('…'));
        assert_eq!(
            err.to_string().chars().filter(|c| *c == 'é').count(),
            MAX_DISPLAY_TEXT
        );
    }

    #[test]
    fn odd_json_and_empty_bodies() {
        for body in ["[1,2]", r#"{"foo":1}"#, "null", "\"x\"", r#"{"errors":5}"#] {
            let err = parse(400, body);
            assert!(err.errors().is_empty(), "{body}");
            assert_eq!(err.body_text(), Some(body));
        }
        let err = parse(500, "");
        assert_eq!(err.body_text(), None);
        assert_eq!(err.to_string(), "status 500 Internal Server Error");
        let err = parse(400, r#"{"errors":[]}"#);
        assert!(err.errors().is_empty());
        assert_eq!(err.body_text(), None);
        let err = parse(400, r#"{"errors":["first", 3, {"code":"c"}]}"#);
        assert_eq!(err.errors().len(), 2);
        assert_eq!(err.errors()[0].message(), Some("first"));
        let err = parse(400, r#"{"errors":{"code":"single"}}"#);
        assert!(err.has_code("single"));
        let err = parse(400, r#"{"error":{"code":"nested"}}"#);
        assert!(err.has_code("nested"));
        let err = parse(400, r#"{"message":"plain"}"#);
        assert_eq!(err.errors()[0].message(), Some("plain"));
    }

    #[test]
    fn lenient_fields_and_shapes_a_derive_would_misread() {
        // Nested lists are not entries filled by position; null `errors` is no document.
        let err = parse(
            400,
            r#"{"errors":[["validation_error","c"],{"code":"kept"}]}"#,
        );
        assert_eq!(err.errors().len(), 1);
        assert!(err.has_code("kept"));
        let err = parse(400, r#"{"errors":null,"error":"shadowed"}"#);
        assert!(err.errors().is_empty());
        assert_eq!(
            err.body_text(),
            Some(r#"{"errors":null,"error":"shadowed"}"#)
        );
        // A present `errors` decides even when `error` would have had something.
        let err = parse(400, r#"{"errors":[],"error":"shadowed"}"#);
        assert!(err.errors().is_empty());
        assert_eq!(err.body_text(), None);
        // Scalars of every kind are kept as text, other types dropped; unknown fields ignored.
        let err = parse(
            400,
            r#"  {"errors":[{"code":true,"status":1.5,"title":["x"],"message":{"a":1},"extra":3}]}"#,
        );
        let entry = &err.errors()[0];
        assert_eq!(entry.code(), Some("true"));
        assert_eq!(entry.status(), Some("1.5"));
        assert_eq!(entry.title(), None);
        assert_eq!(entry.message(), None);
        // A `message` that is not a string is no document.
        let err = parse(400, r#"{"message":{"text":"x"}}"#);
        assert!(err.errors().is_empty());
        assert!(err.body_text().is_some());
    }

    #[test]
    fn garbage_bytes_never_panic() {
        let err = parse(500, "");
        assert!(err.is_server_error());
        for body in [&[0xff, 0xfe, 0x00][..], b"{\"errors\":[{", &[b'{'; 300][..]] {
            let err =
                ApiError::from_response(StatusCode::BAD_REQUEST, &HeaderMap::new(), body, &[]);
            let _ = err.to_string();
        }
    }

    #[test]
    fn status_predicates() {
        let cases = [
            (401, 0),
            (403, 1),
            (404, 2),
            (422, 3),
            (429, 4),
            (500, 5),
            (503, 5),
        ];
        for (status, which) in cases {
            let err = parse(status, "");
            let flags = [
                err.is_unauthorized(),
                err.is_forbidden(),
                err.is_not_found(),
                err.is_validation(),
                err.is_rate_limited(),
                err.is_server_error(),
            ];
            for (i, flag) in flags.into_iter().enumerate() {
                assert_eq!(flag, i == which, "status {status}, predicate {i}");
            }
        }
    }

    #[test]
    fn a_secret_across_the_cut_leaves_no_prefix_and_display_drops_line_breaks() {
        let secret = "eyJsecretTOKEN";
        let body = format!("{}{secret}", "x".repeat(MAX_TEXT - 4));
        let err = ApiError::from_response(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            body.as_bytes(),
            &[secret],
        );
        let text = err.body_text().unwrap();
        assert!(!text.contains("eyJ"), "{text}");

        let body = r#"{"errors":[{"code":"bad","message":"line\nforged: eyJsecretTOKEN"}]}"#;
        let err = ApiError::from_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &HeaderMap::new(),
            body.as_bytes(),
            &[secret],
        );
        assert_eq!(err.errors()[0].message(), Some("line\nforged: [redacted]"));
        // Printed (and so logged) without the line break a server could forge log lines with.
        assert!(err.to_string().contains("line forged: [redacted]"), "{err}");
    }

    #[test]
    fn redaction_removes_a_secret_everywhere() {
        let mut err = parse(
            422,
            r#"{"errors":[{"code":"bad","message":"token eyJsecret is bad","attribute":"eyJsecret"}]}"#,
        );
        err.redact("eyJsecret");
        err.redact("");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("eyJsecret"), "{shown}");
        assert_eq!(err.errors()[0].message(), Some("token [redacted] is bad"));

        let mut err = parse(400, "echo: refresh_token=eyJsecret");
        err.redact("eyJsecret");
        assert_eq!(err.body_text(), Some("echo: refresh_token=[redacted]"));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        let err = ApiError::from_response(StatusCode::TOO_MANY_REQUESTS, &headers, b"", &[]);
        assert!(err.is_rate_limited());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));

        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // Leap day and a year boundary.
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", UNIX_EPOCH),
            Some(Duration::from_secs(1_709_164_800))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", UNIX_EPOCH),
            Some(Duration::ZERO)
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:01 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
