//! The transport rule: where credentials may be sent.

use std::sync::Arc;

use http::Uri;

use crate::{Error, Space, space::is_loopback};

/// Decides, per request, whether credentials may be attached to its URI.
///
/// By default credentials go only to SignalWire's own hosts (`signalwire.com` and its
/// subdomains) over `https`, and to loopback (for tests and mocks). [`Target::restrict_to`] pins
/// them to one space (its scheme, host and port), [`Target::allow_host`] adds hosts (a proxy, a
/// custom domain), and [`Target::allow_plain_http`] lets `http` through to allowed hosts. Cheap
/// to clone, and cheap to check on the default path: a scheme comparison and a suffix match.
#[derive(Clone, Debug, Default)]
pub(crate) struct Target {
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

/// The builder methods both auth layers offer over their `target: Target` field, written once
/// so the two layers cannot drift apart.
macro_rules! transport_rule_methods {
    () => {
        /// Only attaches the credentials to requests for `space` (its scheme, host and port), plus
        /// any hosts named with [`allow_host`](Self::allow_host); everything else is refused.
        pub fn for_space(mut self, space: &$crate::Space) -> Self {
            self.target = self.target.restrict_to(space);
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

impl Target {
    pub(crate) fn allow_plain_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    pub(crate) fn restrict_to(self, space: &Space) -> Self {
        self.push(AllowedHost {
            host: space.host().into(),
            port: Some(space.port()),
            https: Some(space.is_https()),
        })
    }

    pub(crate) fn allow_host(self, host: &str) -> Self {
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
    #[inline]
    pub(crate) fn check(&self, uri: &Uri) -> Result<(), Error> {
        // The default rule on an https URI to SignalWire, checked on the authority's text:
        // parsing the host (`Uri::host`) would cost more than the rest of the middleware.
        // Inline, with the rest out of line, so the fast path is a few comparisons.
        if self.hosts.is_none()
            && uri.scheme_str() == Some("https")
            && uri.authority().is_some_and(|a| is_signalwire(a.as_str()))
        {
            Ok(())
        } else {
            self.check_host(uri)
        }
    }

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

/// Whether an authority (`[user@]host[:port]`) names `signalwire.com` or one of its subdomains.
/// Only its end is read: the host is what follows any user info, so `signalwire.com@evil.test`
/// ends in `evil.test` and is refused. Byte by byte, as it runs on every request.
fn is_signalwire(authority: &str) -> bool {
    const DOMAIN: &[u8] = SIGNALWIRE_DOMAIN.as_bytes();
    let bytes = authority.as_bytes();
    let digits = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let host = match bytes.len().checked_sub(digits + 1) {
        Some(colon) if bytes[colon] == b':' => &bytes[..colon],
        _ => bytes,
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    let Some(split) = host.len().checked_sub(DOMAIN.len()) else {
        return false;
    };
    let (prefix, domain) = host.split_at(split);
    // Host names come in lower case almost always: compare them as bytes before folding case.
    (domain == DOMAIN || domain.eq_ignore_ascii_case(DOMAIN))
        && (prefix.is_empty() || prefix.ends_with(b"."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: &Target, uri: &str) -> Result<(), Error> {
        target.check(&uri.parse().unwrap())
    }

    #[test]
    fn default_rule() {
        let t = Target::default();
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
        ] {
            assert!(check(&t, foreign).unwrap_err().is_refused(), "{foreign}");
        }
    }

    #[test]
    fn plain_http_opt_in() {
        let t = Target::default().allow_plain_http();
        assert!(check(&t, "http://example.signalwire.com/api").is_ok());
        assert!(
            check(&t, "http://example.com/api")
                .unwrap_err()
                .is_refused()
        );
        let t = t.allow_host("example.com");
        assert!(check(&t, "http://example.com/api").is_ok());
        // A space pins its scheme: plain http allowed elsewhere is not allowed to it.
        let t = t.restrict_to(&Space::new("example").unwrap());
        assert!(
            check(&t, "http://example.signalwire.com:443/api")
                .unwrap_err()
                .is_refused()
        );
    }

    #[test]
    fn restricted_to_a_space_and_extra_hosts() {
        let space = Space::new("example").unwrap();
        let t = Target::default()
            .restrict_to(&space)
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
