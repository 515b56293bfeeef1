//! The base URL of a SignalWire space.

use std::{fmt, net::IpAddr};

use http::{Uri, uri::Scheme};

use crate::Error;

/// Where a SignalWire space lives: `https://{name}.signalwire.com`, or any base URL for a mock
/// server or a proxy.
///
/// ```
/// use signalwire_auth::Space;
///
/// let space = Space::new("example")?;
/// assert_eq!(space.url(), "https://example.signalwire.com");
/// assert_eq!(
///     space.endpoint("/api/fabric/addresses")?.to_string(),
///     "https://example.signalwire.com/api/fabric/addresses",
/// );
/// assert!(Space::new("https://example.signalwire.com").is_err());
/// # Ok::<(), signalwire_auth::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Space {
    /// Scheme and authority, never a trailing slash: `https://example.signalwire.com`.
    base: Box<str>,
    https: bool,
    host: Box<str>,
    port: u16,
}

/// The environment variable naming the space for [`Space::from_env`].
///
/// ```
/// use signalwire_auth::{SPACE_ENV, Space};
///
/// assert_eq!(SPACE_ENV, "SIGNALWIRE_SPACE");
/// if std::env::var_os(SPACE_ENV).is_none() {
///     let error = Space::from_env().unwrap_err();
///     assert!(error.to_string().contains(SPACE_ENV), "{error}");
/// }
/// ```
pub const SPACE_ENV: &str = "SIGNALWIRE_SPACE";

impl Space {
    /// The space called `name`, at `https://{name}.signalwire.com`.
    ///
    /// `name` must be a DNS label (letters, digits and inner hyphens, at most 63 characters). A
    /// URL or host name is refused with a hint to use [`Space::from_url`].
    pub fn new(name: &str) -> Result<Self, Error> {
        if name.contains("://") || name.contains('.') || name.contains('/') {
            return Err(Error::invalid_input(format!(
                "space name {name:?} is not a single DNS label; \
                 pass just the name (\"example\" for example.signalwire.com) \
                 or use Space::from_url for a full URL"
            )));
        }
        if !is_dns_label(name) {
            return Err(Error::invalid_input(format!(
                "space name {name:?} is not a DNS label \
                 (1-63 letters, digits or inner hyphens)"
            )));
        }
        let host = format!("{}.signalwire.com", name.to_ascii_lowercase());
        Ok(Self {
            base: format!("https://{host}").into_boxed_str(),
            https: true,
            host: host.into_boxed_str(),
            port: 443,
        })
    }

    /// Reads the space from `SIGNALWIRE_SPACE`: a name (`example`), a host
    /// (`example.signalwire.com`) or a URL (`https://example.signalwire.com`).
    pub fn from_env() -> Result<Self, Error> {
        let value = std::env::var(SPACE_ENV).map_err(|_| {
            Error::invalid_input(format!("environment variable {SPACE_ENV} is not set"))
        })?;
        let value = value.trim();
        if value.contains("://") {
            Self::from_url(value)
        } else if let Some(name) = value.strip_suffix(".signalwire.com") {
            Self::new(name)
        } else {
            Self::new(value)
        }
    }

    /// A space at any base URL: a mock server, a proxy, a loopback address.
    ///
    /// The URL must be absolute with no path, query or user info. `https` is required, except
    /// for loopback hosts (`127.0.0.0/8`, `::1`, `localhost`), which may use plain `http` for
    /// tests.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let uri: Uri = url.parse().map_err(|e| {
            Error::invalid_input(format!("space URL {url:?} is not a URL")).with_source(e)
        })?;
        let scheme = uri.scheme().ok_or_else(|| {
            Error::invalid_input(format!("space URL {url:?} has no scheme; use https://"))
        })?;
        let authority = uri
            .authority()
            .ok_or_else(|| Error::invalid_input(format!("space URL {url:?} has no host")))?;
        if authority.as_str().contains('@') {
            return Err(Error::invalid_input(format!(
                "space URL {url:?} carries user info; pass credentials separately"
            )));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(Error::invalid_input(format!(
                "space URL {url:?} has a path or query; give only scheme and host"
            )));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let https = if *scheme == Scheme::HTTPS {
            true
        } else if *scheme == Scheme::HTTP {
            if !is_loopback(host) {
                return Err(Error::invalid_input(format!(
                    "space URL {url:?} uses plain http to a non-loopback host; \
                     SignalWire requires https"
                )));
            }
            false
        } else {
            return Err(Error::invalid_input(format!(
                "space URL {url:?} has scheme {scheme}; use https"
            )));
        };
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self {
            base: format!("{scheme}://{authority}").into_boxed_str(),
            https,
            host: host.to_ascii_lowercase().into_boxed_str(),
            port,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The host name or address, lower case, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the space is reached over HTTPS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The URI of `path` (which must start with `/`, and may carry a query) in this space.
    pub fn endpoint(&self, path: &str) -> Result<Uri, Error> {
        if !path.starts_with('/') {
            return Err(Error::invalid_input(format!(
                "endpoint path {path:?} must start with '/'"
            )));
        }
        format!("{}{path}", self.base).parse().map_err(|e| {
            Error::invalid_input(format!("endpoint path {path:?} is not valid in a URI"))
                .with_source(e)
        })
    }
}

impl fmt::Debug for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Space").field(&self.base).finish()
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// `localhost`, `127.0.0.0/8` or `::1` (brackets already removed).
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_builds_the_signalwire_url() {
        let space = Space::new("Example-1").unwrap();
        assert_eq!(space.url(), "https://example-1.signalwire.com");
        assert_eq!(space.host(), "example-1.signalwire.com");
        assert_eq!(space.port(), 443);
    }

    #[test]
    fn bad_names_are_refused_with_a_hint() {
        for bad in ["", "-a", "a-", "a_b", "a b", &"x".repeat(64)] {
            assert!(Space::new(bad).unwrap_err().is_invalid_input(), "{bad:?}");
        }
        let err = Space::new("https://example.signalwire.com").unwrap_err();
        assert!(err.to_string().contains("Space::from_url"), "{err}");
    }

    #[test]
    fn from_url_allows_https_and_loopback_http_only() {
        let s = Space::from_url("http://127.0.0.1:8080/").unwrap();
        assert_eq!(s.url(), "http://127.0.0.1:8080");
        assert_eq!(s.port(), 8080);
        assert!(!s.is_https());
        assert!(Space::from_url("http://[::1]:1").is_ok());
        assert!(Space::from_url("http://localhost:1").is_ok());
        assert!(
            Space::from_url("https://proxy.example.com")
                .unwrap()
                .is_https()
        );
        for bad in [
            "http://example.com",
            "ftp://example.com",
            "example.com",
            "https://example.com/api",
            "https://user:pw@example.com",
            "https://example.com?x=1",
        ] {
            assert!(
                Space::from_url(bad).unwrap_err().is_invalid_input(),
                "{bad}"
            );
        }
    }

    #[test]
    fn endpoint_joins_the_path() {
        let s = Space::from_url("http://127.0.0.1:9").unwrap();
        assert_eq!(
            s.endpoint("/api/fabric/addresses?page_size=2")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9/api/fabric/addresses?page_size=2"
        );
        assert!(s.endpoint("api").is_err());
        assert!(s.endpoint("/a b").is_err());
    }
}
