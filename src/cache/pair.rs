//! A token pair and what the client can read of a SAT.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use serde::Deserialize;
use tokio::time::Instant;

use crate::{Error, secret::Secret};

/// An access token, an optional refresh token, and when each expires.
///
/// A SAT is encrypted for SignalWire, so the client cannot read its expiry: it is tracked here
/// from the instant the minting request was *sent* plus the lifetime asked for (or the
/// documented default). Both tokens are wiped on drop and redacted in `Debug`.
///
/// ```
/// use std::time::Duration;
/// use signalwire_auth::TokenPair;
/// use tokio::time::Instant;
///
/// let sent = Instant::now();
/// let pair = TokenPair::new("eyJhbGciOiJkaXIifQ..a.b.c", sent, TokenPair::DEFAULT_LIFETIME)?
///     .with_refresh_token("eyJ0eXAiOiJSZWZyZXNoIn0..d.e.f", TokenPair::REFRESH_TOKEN_LIFETIME)?;
/// assert_eq!(pair.expires_at(), sent + Duration::from_secs(2 * 60 * 60));
/// // Debug shows what is left of each lifetime, and never a token.
/// let shown = format!("{pair:?}");
/// assert!(!shown.contains("eyJ"));
/// assert!(shown.contains("expires_in: \"71") || shown.contains("expires_in: \"7200s\""), "{shown}");
/// assert!(!shown.contains("tv_sec"), "{shown}");
/// # Ok::<(), signalwire_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct TokenPair {
    access: Secret,
    issued_at: Instant,
    expires_at: Instant,
    refresh: Option<(Secret, Instant)>,
}

impl TokenPair {
    /// Lifetime of a SAT minted without `expire_at`, and of every refreshed SAT: 2 hours.
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60);
    /// Lifetime of a refresh token returned by the refresh endpoint: 2 hours 5 minutes.
    pub const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60 + 5 * 60);

    /// An access token issued at `issued_at` (the instant its request was sent) that lives for
    /// `lifetime`.
    ///
    /// The token must be a non-empty RFC 6750 `b64token` (what a JWE compact token is), so it
    /// can be sent as `Authorization: Bearer <token>`; anything else is refused.
    pub fn new(
        access_token: impl Into<String>,
        issued_at: Instant,
        lifetime: Duration,
    ) -> Result<Self, Error> {
        let access = Secret::new(access_token.into());
        check_token("access token", access.expose())?;
        Ok(Self {
            access,
            issued_at,
            expires_at: expiry(issued_at, lifetime)?,
            refresh: None,
        })
    }

    /// Adds the refresh token issued with the access token, living `lifetime` from the same
    /// issue instant.
    pub fn with_refresh_token(
        mut self,
        refresh_token: impl Into<String>,
        lifetime: Duration,
    ) -> Result<Self, Error> {
        let refresh = Secret::new(refresh_token.into());
        check_token("refresh token", refresh.expose())?;
        self.refresh = Some((refresh, expiry(self.issued_at, lifetime)?));
        Ok(self)
    }

    /// The lifetime a token asked for with `expire_at` (unix seconds) has, counted from
    /// `sent_at`, the wall-clock time the request was sent. Zero if `expire_at` has passed.
    pub fn lifetime_until(expire_at: u64, sent_at: SystemTime) -> Duration {
        let sent = sent_at.duration_since(UNIX_EPOCH).unwrap_or_default();
        Duration::from_secs(expire_at).saturating_sub(sent)
    }

    /// The access token. Handle with care: it is a credential.
    pub fn access_token(&self) -> &str {
        self.access.expose()
    }

    /// The refresh token, if the pair has one. Handle with care: it is a credential.
    pub fn refresh_token(&self) -> Option<&str> {
        self.refresh.as_ref().map(|(token, _)| token.expose())
    }

    /// The instant the request that minted this pair was sent.
    pub fn issued_at(&self) -> Instant {
        self.issued_at
    }

    /// When the access token expires.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// When the refresh token expires, if there is one.
    pub fn refresh_expires_at(&self) -> Option<Instant> {
        self.refresh.as_ref().map(|(_, at)| *at)
    }

    /// The access token's lifetime.
    pub fn lifetime(&self) -> Duration {
        self.expires_at.saturating_duration_since(self.issued_at)
    }

    /// The readable header of the access token, if it is a JWE or JWS in compact form.
    pub fn access_header(&self) -> Option<TokenHeader> {
        TokenHeader::parse(self.access.expose())
    }
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Remaining lifetimes, which a reader can use; an `Instant` prints as opaque clock
        // internals.
        let now = Instant::now();
        f.debug_struct("TokenPair")
            .field("access_token", &self.access)
            .field("expires_in", &Remaining(self.expires_at, now))
            .field(
                "refresh_token",
                &self.refresh.as_ref().map(|(secret, _)| secret),
            )
            .field(
                "refresh_expires_in",
                &self.refresh_expires_at().map(|at| Remaining(at, now)),
            )
            .finish()
    }
}

/// How long until an instant, in whole seconds: `"3599s"`, or `"expired"`.
struct Remaining(Instant, Instant);

impl fmt::Debug for Remaining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Remaining(at, now) = *self;
        if at <= now {
            f.write_str("\"expired\"")
        } else {
            write!(f, "\"{}s\"", at.duration_since(now).as_secs())
        }
    }
}

/// `issued_at + lifetime`, refusing a lifetime no `Instant` can hold (a far-future `expire_at`).
fn expiry(issued_at: Instant, lifetime: Duration) -> Result<Instant, Error> {
    issued_at.checked_add(lifetime).ok_or_else(|| {
        Error::invalid_input(format!("token lifetime {lifetime:?} is too long to track"))
    })
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub(crate) fn check_token(what: &str, token: &str) -> Result<(), Error> {
    let body = token.trim_end_matches('=');
    let valid = !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "{what} is not a valid bearer token (empty, or a character outside RFC 6750 b64token)"
        )))
    }
}

/// The protected header of a compact JWE (or JWS): what a client can read of a SAT without the
/// server's key.
///
/// ```
/// use signalwire_auth::TokenHeader;
///
/// // {"alg":"dir","enc":"A256GCM","ch":"puc.signalwire.com","typ":"SAT"}
/// let sat = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwiY2giOiJwdWMuc2lnbmFsd2lyZS5jb20iLCJ0eXAiOiJTQVQifQ..iv.ct.tag";
/// let header = TokenHeader::parse(sat).unwrap();
/// assert_eq!(header.typ(), Some("SAT"));
/// assert_eq!(header.channel(), Some("puc.signalwire.com"));
/// assert!(TokenHeader::parse("not a token").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenHeader {
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    enc: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    ch: Option<String>,
}

impl TokenHeader {
    /// Reads the first segment of a compact token as base64url JSON. `None` for anything else;
    /// never panics.
    pub fn parse(token: &str) -> Option<Self> {
        let first = token.split('.').next()?;
        if first.is_empty() || first.len() > 4096 {
            return None;
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(first.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// `typ`: `"SAT"` for an access token, `"Refresh"` for a refresh token.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }

    /// `ch`: the channel (host) the token is for.
    pub fn channel(&self) -> Option<&str> {
        self.ch.as_deref()
    }

    /// `alg`: `"dir"` for a SAT.
    pub fn alg(&self) -> Option<&str> {
        self.alg.as_deref()
    }

    /// `enc`: `"A256GCM"` for a SAT.
    pub fn enc(&self) -> Option<&str> {
        self.enc.as_deref()
    }

    /// Whether `typ` is `"Refresh"`.
    pub fn is_refresh(&self) -> bool {
        self.typ() == Some("Refresh")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_tokens_that_cannot_be_a_bearer_value() {
        let now = Instant::now();
        for bad in ["", "a b", "tok\n", "==", "t\u{e9}", "a,b"] {
            assert!(
                TokenPair::new(bad, now, Duration::from_secs(1))
                    .unwrap_err()
                    .is_invalid_input(),
                "{bad:?}"
            );
        }
        assert!(TokenPair::new("abc.DEF-_~+/==", now, Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn absurd_lifetime_is_an_error_not_a_panic() {
        let err = TokenPair::new("t", Instant::now(), Duration::MAX).unwrap_err();
        assert!(err.is_invalid_input());
        let pair = TokenPair::new("t", Instant::now(), Duration::from_secs(1)).unwrap();
        assert!(pair.with_refresh_token("r", Duration::MAX).is_err());
    }

    #[test]
    fn lifetime_from_expire_at() {
        let sent = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            TokenPair::lifetime_until(1_060, sent),
            Duration::from_secs(60)
        );
        assert_eq!(TokenPair::lifetime_until(10, sent), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn debug_shows_remaining_seconds_and_no_token() {
        let pair = TokenPair::new("secret-sat", Instant::now(), Duration::from_secs(3600))
            .unwrap()
            .with_refresh_token("secret-refresh", Duration::from_secs(3900))
            .unwrap();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let shown = format!("{pair:?}");
        assert!(shown.contains(r#"expires_in: "3598s""#), "{shown}");
        assert!(
            shown.contains(r#"refresh_expires_in: Some("3898s")"#),
            "{shown}"
        );
        assert!(
            !shown.contains("secret") && !shown.contains("tv_sec"),
            "{shown}"
        );
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(format!("{pair:?}").contains(r#"expires_in: "expired""#));
    }

    #[test]
    fn header_parsing_never_panics_on_junk() {
        for junk in ["", ".", "..", "%%%.a", "eyJ", "e30", "bnVsbA", "W10"] {
            let _ = TokenHeader::parse(junk);
        }
        assert_eq!(TokenHeader::parse("e30").unwrap().typ(), None);
    }
}
