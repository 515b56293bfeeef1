//! The transport rule: where credentials may be sent.

use std::sync::Arc;

use http::Uri;

use crate::{Error, Space, space::is_loopback};

/// Decides, per request, whether credentials may be attached to its URI. Every adapter of this
/// crate (both tower layers, both reqwest middlewares) checks one before it adds credentials,
/// and a request it refuses fails with [`Error::is_refused`] without being sent.
///
/// By default credentials go only to SignalWire's own hosts (`signalwire.com` and its
/// subdomains) over `https`, and to loopback (for tests and mocks).
/// [`for_space`](Self::for_space) pins them to one space (its scheme, host and port),
/// [`allow_host`](Self::allow_host) adds hosts (a proxy, a custom domain), and
/// [`allow_plain_http`](Self::allow_plain_http) lets `http` through to allowed hosts. Cheap to
/// clone, and cheap to check on the default path: a scheme comparison and a suffix match.
///
/// # Example
///
/// ```
/// use signalwire_auth::{Space, TransportRule};
///
/// # fn main() -> Result<(), signalwire_auth::Error> {
/// let default = TransportRule::default();
/// assert!(default.check(&"https://example.signalwire.com/api".parse().unwrap()).is_ok());
/// assert!(default.check(&"http://127.0.0.1:8080/api".parse().unwrap()).is_ok());
/// assert!(default.check(&"https://evil.test/api".parse().unwrap()).unwrap_err().is_refused());
///
/// let space = Space::new("example")?;
/// let rule = TransportRule::for_space(&space).allow_host("files.example.com");
/// assert!(rule.check(&"https://other.signalwire.com/api".parse().unwrap()).is_err());
/// assert!(rule.check(&"https://files.example.com/x".parse().unwrap()).is_ok());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct TransportRule {
    allow_http: bool,
    /// `None`: SignalWire's hosts and loopback.
    hosts: Option<Arc<[AllowedHost]>>,
}

#[derive(Clone, Debug)]
struct AllowedHost {
    host: Box<str>,
    /// `None` accepts any port.
    port: Option<u16>,
    /// `Some(https)` pins the scheme (a space's); `None` leaves it to the scheme rule.
    https: Option<bool>,
}

/// The builder methods every adapter offers over its `target: TransportRule` field, written
/// once so the adapters cannot drift apart.
macro_rules! transport_rule_methods {
    () => {
        /// Replaces the transport rule (default: [`TransportRule::default`](crate::TransportRule)).
        pub fn transport_rule(mut self, rule: $crate::TransportRule) -> Self {
            self.target = rule;
            self
        }

        /// Only attaches the credentials to requests for `space` (its scheme, host and port), plus
        /// any hosts named with [`allow_host`](Self::allow_host); everything else is refused.
        pub fn for_space(mut self, space: &$crate::Space) -> Self {
            self.target = self.target.and_space(space);
            self
        }

        /// Also attaches the credentials to requests for `host` (any port). The first of
        /// `for_space` and `allow_host` replaces the default (SignalWire's hosts and loopback) with
        /// the hosts named.
        pub fn allow_host(mut self, host: &str) -> Self {
            self.target = self.target.allow_host(host);
            self
        }

        /// Allows plain `http` to the allowed hosts, not only to loopback. Only for networks you
        /// trust: anyone on the path can read the credentials.
        pub fn allow_plain_http(mut self) -> Self {
            self.target = self.target.allow_plain_http();
            self
        }
    };
}
pub(crate) use transport_rule_methods;

/// The domain whose hosts the default rule trusts.
const SIGNALWIRE_DOMAIN: &str = "signalwire.com";

impl TransportRule {
    /// Only `space` (its scheme, host and port), plus any hosts added with
    /// [`allow_host`](Self::allow_host).
    pub fn for_space(space: &Space) -> Self {
        Self::default().and_space(space)
    }

    /// Allows plain `http` to the allowed hosts, not only to loopback. Only for networks you
    /// trust: anyone on the path can read the credentials.
    pub fn allow_plain_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    /// Also allows `space` (its scheme, host and port). The first of `and_space`, `for_space`
    /// and `allow_host` replaces the default (SignalWire's hosts and loopback) with the hosts
    /// named.
    pub fn and_space(self, space: &Space) -> Self {
        self.push(AllowedHost {
            host: space.host().into(),
            port: Some(space.port()),
            https: Some(space.is_https()),
        })
    }

    /// Also allows `host` (any port, the scheme rule unchanged). The first of `allow_host` and
    /// [`for_space`](Self::for_space) replaces the default (SignalWire's hosts and loopback)
    /// with the hosts named.
    pub fn allow_host(self, host: &str) -> Self {
        self.push(AllowedHost {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
                .into(),
            port: None,
            https: None,
        })
    }

    fn push(mut self, entry: AllowedHost) -> Self {
        let mut hosts = self.hosts.as_deref().map(<[_]>::to_vec).unwrap_or_default();
        hosts.push(entry);
        self.hosts = Some(hosts.into());
        self
    }

    /// `Ok` when credentials may be attached to a request for `uri`; otherwise the reason, as an
    /// error that names the scheme and host but nothing secret.
    // Always: at some call sites LLVM kept it out of line (69 instructions, five registers
    // saved and restored), more than the test itself.
    #[inline(always)]
    pub fn check(&self, uri: &Uri) -> Result<(), Error> {
        // The default rule on an https URI to a subdomain of SignalWire, checked on the
        // authority's text: parsing the host (`Uri::host`) would cost more than the rest of the
        // middleware. Inline, with the rest out of line, so the fast path is a few word
        // comparisons.
        if self.hosts.is_none()
            && uri.scheme_str() == Some("https")
            && uri
                .authority()
                .is_some_and(|a| is_plain_subdomain(a.as_str()))
        {
            Ok(())
        } else {
            self.check_host(uri)
        }
    }

    // Cold: keeps the fast path's caller lean (4 to 9 instructions a Bearer request fewer).
    // A custom host list or loopback http takes this path on every request; for them it is
    // one call more, against a host parse that costs far more.
    #[cold]
    fn check_host(&self, uri: &Uri) -> Result<(), Error> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(Error::refused(format!(
                    "scheme {other:?} cannot carry credentials; use https"
                )));
            }
            None => {
                return Err(Error::refused(
                    "request URI is not absolute; credentials are only attached to \
                     absolute https:// URIs whose host can be checked",
                ));
            }
        };
        let Some(host) = uri.host() else {
            return Err(Error::refused("request URI has no host"));
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = is_loopback(bare);
        if !https && !self.allow_http && !loopback {
            return Err(Error::refused(format!(
                "plain http to {bare} would expose credentials; use https \
                 (plain http is only allowed to loopback unless explicitly enabled)"
            )));
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let allowed = match &self.hosts {
            None => loopback || is_signalwire(bare),
            Some(hosts) => hosts.iter().any(|allowed| {
                allowed.host.eq_ignore_ascii_case(bare)
                    && allowed.port.is_none_or(|p| p == port)
                    && allowed.https.is_none_or(|h| h == https)
            }),
        };
        if allowed {
            Ok(())
        } else if self.hosts.is_none() {
            Err(Error::refused(format!(
                "host {bare} is not a SignalWire host; allow it with allow_host or for_space"
            )))
        } else {
            Err(Error::refused(format!(
                "{}://{bare}:{port} is not where the credentials are restricted to",
                if https { "https" } else { "http" }
            )))
        }
    }
}

/// Whether a host (as `Uri::host` gives it: no user info, no port) is `signalwire.com` or one
/// of its subdomains, in any case, with or without the trailing dot.
fn is_signalwire(host: &str) -> bool {
    const DOMAIN: &[u8] = SIGNALWIRE_DOMAIN.as_bytes();
    let host = host.as_bytes();
    let host = host.strip_suffix(b".").unwrap_or(host);
    let Some(split) = host.len().checked_sub(DOMAIN.len()) else {
        return false;
    };
    let (prefix, domain) = host.split_at(split);
    domain.eq_ignore_ascii_case(DOMAIN) && (prefix.is_empty() || prefix.ends_with(b"."))
}

/// The suffix the fast path accepts: a subdomain of [`SIGNALWIRE_DOMAIN`], in lower case.
const SUBDOMAIN_SUFFIX: &[u8; 15] = b".signalwire.com";

/// The fast path's test: `authority` is `<labels>.signalwire.com`, in lower case, with no user
/// info and no port. Anything else (upper case, a port, a trailing dot, the bare domain) is
/// left to the full check, which parses the host. Refusing `:`, `@`, `[` and `]` anywhere
/// before the suffix is what keeps `evil.test:.signalwire.com` (host `evil.test`, an
/// unparsable port), `a.signalwire.com@evil.test` and `[evil.test].signalwire.com` (a
/// "bracketed" host that connectors unwrap to `evil.test`) out. Eight bytes at a time: it
/// runs on every request.
#[inline]
fn is_plain_subdomain(authority: &str) -> bool {
    let bytes = authority.as_bytes();
    let len = bytes.len();
    if len <= SUBDOMAIN_SUFFIX.len() {
        return false;
    }
    // The suffix as two overlapping words: bytes len-15..len-7 and len-8..len.
    let word = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let suffix =
        |at: usize| u64::from_ne_bytes(SUBDOMAIN_SUFFIX[at..at + 8].try_into().expect("8 bytes"));
    if word(len - 15) != suffix(0) || word(len - 8) != suffix(7) {
        return false;
    }
    // Every byte before the suffix, in words, the marks of all of them tested once. The last
    // word may reach up to 7 bytes into the suffix, which holds neither byte; `len > 15`, so
    // every word fits.
    let prefix = len - SUBDOMAIN_SUFFIX.len();
    let mut marks = 0;
    let mut at = 0;
    while at + 8 < prefix {
        marks |= delimiters(word(at));
        at += 8;
    }
    marks |= delimiters(word(at));
    marks == 0
}

/// Non-zero if any byte of `word` is `:`, `@`, `[` or `]` (the classic zero-byte test, on
/// `word` xor each byte repeated; it may flag a byte after a true match, never miss one).
/// `[` and `]` are one test: with bits 1 and 2 set, both are `_`, as are `Y` and `_`
/// themselves, which are only sent to the full check.
#[inline]
fn delimiters(word: u64) -> u64 {
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const BRACKET_BITS: u64 = LOW * 0x06;
    let zero = |x: u64| x.wrapping_sub(LOW) & !x & HIGH;
    let any = |word: u64, byte: u8| zero(word ^ (LOW * u64::from(byte)));
    any(word, b':') | any(word, b'@') | any(word | BRACKET_BITS, b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: &TransportRule, uri: &str) -> Result<(), Error> {
        target.check(&uri.parse().unwrap())
    }

    #[test]
    fn default_rule() {
        let t = TransportRule::default();
        assert!(check(&t, "https://example.signalwire.com/api").is_ok());
        assert!(check(&t, "http://127.0.0.1:8080/api").is_ok());
        assert!(check(&t, "http://[::1]:8080/api").is_ok());
        assert!(check(&t, "http://localhost/api").is_ok());
        assert!(
            check(&t, "http://example.com/api")
                .unwrap_err()
                .is_refused()
        );
        assert!(check(&t, "/api").unwrap_err().is_refused());
        assert!(check(&t, "ws://example.com/api").unwrap_err().is_refused());
        assert!(
            check(&t, "https://example.com/api")
                .unwrap_err()
                .is_refused()
        );
        assert!(check(&t, "https://SignalWire.com/api").is_ok());
        assert!(check(&t, "https://a.b.signalwire.com:8443/api").is_ok());
        assert!(check(&t, "https://a.signalwire.com./api").is_ok());
        for foreign in [
            "https://evilsignalwire.com/api",
            "https://signalwire.com.evil.test/api",
            "https://a.signalwire.com@evil.test/api",
            "https://signalwire.com:443@evil.test/api",
            "https://evil.test:.signalwire.com/api",
            "https://user@evil.test:.signalwire.com/api",
            // Connectors unwrap a bracketed host: this one would go to evil.test.
            "https://[evil.test].signalwire.com/api",
        ] {
            assert!(check(&t, foreign).unwrap_err().is_refused(), "{foreign}");
        }
    }

    #[test]
    fn the_fast_path_takes_only_plain_lower_case_subdomains() {
        for plain in [
            "a.signalwire.com",
            "example.signalwire.com",
            "a-much-longer-space-name.eu.signalwire.com",
        ] {
            assert!(is_plain_subdomain(plain), "{plain}");
        }
        for other in [
            "signalwire.com",
            ".signalwire.com",
            "EXAMPLE.SIGNALWIRE.COM",
            "a.signalwire.com:443",
            "a.signalwire.com.",
            "evil.test:.signalwire.com",
            "u@a.signalwire.com",
            "a.b.c.d.e.f.g.h:1.signalwire.com",
            "[evil.test].signalwire.com",
            "a.b.c.d.e.f.[evil].signalwire.com",
            "xsignalwire.com",
            "a.signalwire.co",
        ] {
            assert!(!is_plain_subdomain(other), "{other}");
        }
        // Each byte position of a long prefix: a delimiter anywhere is seen.
        let long = "abcdefghijklmnopqrstuvwxyz";
        for at in 0..long.len() {
            for bad in [":", "@", "[", "]"] {
                let host = format!("{}{bad}{}.signalwire.com", &long[..at], &long[at..]);
                assert!(!is_plain_subdomain(&host), "{host}");
            }
        }
    }

    #[test]
    fn the_fast_path_accepts_nothing_the_full_check_refuses() {
        let t = TransportRule::default();
        let long = "abcdefghijklmnopqrstuvwxyz";
        for byte in 0x21..0x7f_u8 {
            let byte = char::from(byte);
            for at in [0, 3, 7, 8, 15, 16, 25] {
                let host = format!("{}{byte}{}.signalwire.com", &long[..at], &long[at..]);
                let Ok(uri) = format!("https://{host}/").parse::<Uri>() else {
                    continue;
                };
                if is_plain_subdomain(uri.authority().unwrap().as_str()) {
                    assert!(t.check_host(&uri).is_ok(), "{host}");
                }
            }
        }
        // Flagged with the brackets (one test covers `[`, `]`, `Y` and `_`): the full check
        // takes them.
        assert!(!is_plain_subdomain("my_space.signalwire.com"));
        assert!(check(&t, "https://my_space.signalwire.com/").is_ok());
    }

    #[test]
    fn plain_http_opt_in() {
        let t = TransportRule::default().allow_plain_http();
        assert!(check(&t, "http://example.signalwire.com/api").is_ok());
        assert!(
            check(&t, "http://example.com/api")
                .unwrap_err()
                .is_refused()
        );
        let t = t.allow_host("example.com");
        assert!(check(&t, "http://example.com/api").is_ok());
        // A space pins its scheme: plain http allowed elsewhere is not allowed to it.
        let t = t.and_space(&Space::new("example").unwrap());
        assert!(
            check(&t, "http://example.signalwire.com:443/api")
                .unwrap_err()
                .is_refused()
        );
    }

    #[test]
    fn restricted_to_a_space_and_extra_hosts() {
        let space = Space::new("example").unwrap();
        let t = TransportRule::default()
            .and_space(&space)
            .allow_host("Files.Example.com");
        assert!(check(&t, "https://example.signalwire.com/api").is_ok());
        assert!(check(&t, "https://EXAMPLE.signalwire.com:443/api").is_ok());
        assert!(
            check(&t, "https://example.signalwire.com:8443/api")
                .unwrap_err()
                .is_refused()
        );
        assert!(
            check(&t, "https://other.signalwire.com/api")
                .unwrap_err()
                .is_refused()
        );
        assert!(check(&t, "https://files.example.com:9999/x").is_ok());
        assert!(
            check(&t, "http://files.example.com/x")
                .unwrap_err()
                .is_refused()
        );
    }
}
