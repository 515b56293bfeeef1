//! What a store holds: a token pair with wall-clock expiries, and the key it is stored under.

use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{Error, Space, TokenPair, cache::check_token, secret::Secret};

/// Where a subscriber's pair is stored: the space's host (with its port, unless it is 443) and
/// the subscriber's reference. Neither is a secret; `Display` shows `host/reference`.
///
/// ```
/// use signalwire_auth::{Space, StoreKey};
///
/// let key = StoreKey::new(&Space::new("example")?, "alice@example.com");
/// assert_eq!(key.host(), "example.signalwire.com");
/// assert_eq!(key.to_string(), "example.signalwire.com/alice@example.com");
/// # Ok::<(), signalwire_auth::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StoreKey {
    /// `host/reference`: the host holds no `/`, so this splits back unambiguously.
    text: Arc<str>,
    host_len: usize,
}

impl StoreKey {
    /// The key of `reference`'s pair in `space`.
    pub fn new(space: &Space, reference: &str) -> Self {
        let host = if space.port() == 443 {
            space.host().to_owned()
        } else {
            format!("{}:{}", space.host(), space.port())
        };
        Self {
            host_len: host.len(),
            text: format!("{host}/{reference}").into(),
        }
    }

    /// The space's host, with `:port` unless the port is 443.
    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    /// The subscriber's reference.
    pub fn reference(&self) -> &str {
        &self.text[self.host_len + 1..]
    }

    /// `host/reference`, the form stores use in their own key names and change messages.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Reads [`as_str`](Self::as_str)'s form back: `None` without a `/`.
    pub fn parse(text: &str) -> Option<Self> {
        let host_len = text.find('/')?;
        Some(Self {
            host_len,
            text: text.into(),
        })
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreKey").field(&&*self.text).finish()
    }
}

/// A [`TokenPair`] as a store keeps it: serde-able (JSON), with wall-clock expiries in unix
/// seconds, since an `Instant` means nothing to another process or after a restart, and the
/// version the store's compare-and-set goes by.
///
/// Expiries are rounded down to the second, so a pair read back never seems to live longer
/// than it does. `Debug` shows versions and expiries, never a token.
///
/// ```
/// use std::time::Duration;
/// use signalwire_auth::{StoredPair, TokenPair};
/// use tokio::time::Instant;
///
/// let pair = TokenPair::new("sat", Instant::now(), Duration::from_secs(3600))?
///     .with_refresh_token("refresh", Duration::from_secs(3900))?;
/// let stored = StoredPair::from_pair(&pair, 7);
/// let json = stored.to_json();
/// assert!(!format!("{stored:?}").contains("sat"));
///
/// // Another process reads it back, with what is left of each lifetime.
/// let back = StoredPair::from_json(&json)?.to_pair()?;
/// assert_eq!(back.access_token(), "sat");
/// let left = back.expires_at() - Instant::now();
/// assert!(left > Duration::from_secs(3598) && left <= Duration::from_secs(3600), "{left:?}");
/// assert_eq!(StoredPair::from_json(&json)?.version(), 7);
/// # Ok::<(), signalwire_auth::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPair {
    version: u64,
    access_token: Secret,
    /// Unix seconds: when the request that minted the pair was sent.
    issued_at: u64,
    /// Unix seconds.
    expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<Secret>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_expires_at: Option<u64>,
    /// Set by a lease holder just before it presents the refresh token: whoever finds it
    /// set later knows the token may be spent, and mints instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    presented: bool,
}

impl StoredPair {
    /// `pair` as of now, at `version`.
    pub fn from_pair(pair: &TokenPair, version: u64) -> Self {
        let clock = Clock::now();
        Self {
            version,
            access_token: Secret::new(pair.access_token().to_owned()),
            issued_at: clock.unix(pair.issued_at()),
            expires_at: clock.unix(pair.expires_at()),
            refresh_token: pair.refresh_token().map(|t| Secret::new(t.to_owned())),
            refresh_expires_at: pair.refresh_expires_at().map(|at| clock.unix(at)),
            presented: false,
        }
    }

    /// The pair, with what is left of each lifetime as of now (none, if it has expired).
    ///
    /// Fails with [`Error::is_store_corrupt`] if a token is not a bearer token or an expiry
    /// comes before the issue time.
    pub fn to_pair(&self) -> Result<TokenPair, Error> {
        self.check()?;
        let clock = Clock::now();
        // Counted from the issue instant when the clock can hold it, else from now with what
        // is left (a pair older than the monotonic clock: long expired anyway).
        let (issued_at, from) = match clock.instant(self.issued_at) {
            Some(at) => (at, self.issued_at),
            None => (clock.instant, clock.wall.as_secs()),
        };
        let corrupt = |e: Error| Error::store_corrupt(e);
        let lifetime = |until: u64| Duration::from_secs(until.saturating_sub(from));
        let pair = TokenPair::new(
            self.access_token.expose(),
            issued_at,
            lifetime(self.expires_at),
        )
        .map_err(corrupt)?;
        match (&self.refresh_token, self.refresh_expires_at) {
            (Some(token), Some(at)) => pair
                .with_refresh_token(token.expose(), lifetime(at))
                .map_err(corrupt),
            _ => Ok(pair),
        }
    }

    /// Reads a stored pair from its JSON. Fails with [`Error::is_store_corrupt`] on anything
    /// that is not one.
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        let stored: Self = serde_json::from_slice(json).map_err(Error::store_corrupt)?;
        stored.check()?;
        Ok(stored)
    }

    /// The JSON a store keeps. It holds both tokens: keep it where only replicas can read it.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a stored pair is strings and integers")
    }

    /// The version this pair was written at: 1 for the first pair under a key, and one more
    /// than the version it replaced for each one after.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The same pair at another version.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// When the access token expires.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires_at)
    }

    /// When the refresh token expires, if there is one.
    pub fn refresh_expires_at(&self) -> Option<SystemTime> {
        self.refresh_expires_at
            .map(|at| UNIX_EPOCH + Duration::from_secs(at))
    }

    /// Whether the access token has expired.
    pub fn is_expired(&self) -> bool {
        Clock::now().wall.as_secs() >= self.expires_at
    }

    /// Whether a lease holder presented (or was about to present) this pair's refresh token:
    /// it may be spent, so the next holder mints rather than presents it again.
    pub fn is_presented(&self) -> bool {
        self.presented
    }

    /// The same pair, marked presented.
    pub(crate) fn presented(mut self) -> Self {
        self.presented = true;
        self
    }

    /// Whether this pair holds the same access token as `pair`.
    pub fn same_access_token(&self, pair: &TokenPair) -> bool {
        self.access_token.expose() == pair.access_token()
    }

    /// Whether the pair can still be used or refreshed.
    pub(crate) fn is_usable(&self) -> bool {
        let now = Clock::now().wall.as_secs();
        now < self.expires_at
            || (self.refresh_token.is_some() && self.refresh_expires_at.is_some_and(|at| now < at))
    }

    fn check(&self) -> Result<(), Error> {
        check_token("stored access token", self.access_token.expose())
            .map_err(Error::store_corrupt)?;
        if let Some(token) = &self.refresh_token {
            check_token("stored refresh token", token.expose()).map_err(Error::store_corrupt)?;
        }
        let before_issue = self.expires_at < self.issued_at
            || self
                .refresh_expires_at
                .is_some_and(|at| at < self.issued_at);
        if before_issue || self.refresh_token.is_some() != self.refresh_expires_at.is_some() {
            return Err(Error::store_corrupt(
                "an expiry before the issue time, or a refresh token without its expiry",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for StoredPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredPair")
            .field("version", &self.version)
            .field("access_token", &self.access_token)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("presented", &self.presented)
            .finish()
    }
}

/// The wall clock as Tokio's clock sees it: the system time when it was first read, moved on
/// by Tokio's `Instant`s since. Stored pairs then age with the tokens they hold, paused test
/// time included; across processes and restarts it is the system clock.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    instant: Instant,
    /// Since the unix epoch.
    wall: Duration,
}

impl Clock {
    pub(crate) fn now() -> Self {
        static ANCHOR: OnceLock<(std::time::Instant, Duration)> = OnceLock::new();
        let (at, wall) = *ANCHOR.get_or_init(|| {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            (std::time::Instant::now(), wall)
        });
        let instant = Instant::now();
        let now = instant.into_std();
        let wall = if now >= at {
            wall + (now - at)
        } else {
            wall.saturating_sub(at - now)
        };
        Self { instant, wall }
    }

    /// `at` in unix seconds, rounded down.
    fn unix(&self, at: Instant) -> u64 {
        let wall = if at >= self.instant {
            self.wall + (at - self.instant)
        } else {
            self.wall.saturating_sub(self.instant - at)
        };
        wall.as_secs()
    }

    /// The `Instant` of `unix` seconds, if the clock can hold it.
    fn instant(&self, unix: u64) -> Option<Instant> {
        let at = Duration::from_secs(unix);
        if at >= self.wall {
            self.instant.checked_add(at - self.wall)
        } else {
            self.instant.checked_sub(self.wall - at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stored_pairs_age_with_tokio_time() {
        let pair = TokenPair::new("sat", Instant::now(), Duration::from_secs(100)).unwrap();
        let stored = StoredPair::from_pair(&pair, 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        let back = stored.to_pair().unwrap();
        let left = back.expires_at() - Instant::now();
        assert!(
            left <= Duration::from_secs(40) && left > Duration::from_secs(38),
            "{left:?}"
        );
        assert!(!stored.is_expired());
        tokio::time::advance(Duration::from_secs(41)).await;
        assert!(stored.is_expired());
        assert!(stored.to_pair().unwrap().expires_at() <= Instant::now());
    }

    #[test]
    fn junk_is_a_corrupt_error_not_a_panic() {
        for junk in [
            &b"garbage"[..],
            b"{}",
            b"[]",
            br#"{"version":1,"access_token":"a b","issued_at":1,"expires_at":2}"#,
            br#"{"version":1,"access_token":"ok","issued_at":5,"expires_at":2}"#,
            br#"{"version":1,"access_token":"ok","issued_at":1,"expires_at":2,"refresh_token":"r"}"#,
        ] {
            let error = StoredPair::from_json(junk).unwrap_err();
            assert!(error.is_store_corrupt(), "{error:?}");
        }
    }

    #[test]
    fn keys_split_back_into_host_and_reference() {
        let space = Space::from_url("http://127.0.0.1:8080").unwrap();
        let key = StoreKey::new(&space, "bob/with/slashes");
        assert_eq!(key.host(), "127.0.0.1:8080");
        assert_eq!(key.reference(), "bob/with/slashes");
        assert_eq!(StoreKey::parse(key.as_str()), Some(key));
        assert_eq!(StoreKey::parse("no-slash"), None);
    }
}
