//! The transport rule: where credentials may be sent.

use std::sync::Arc;

use http::Uri;

use crate::{Error, Space, space::is_loopback};

/// Decides, per request, whether credentials may be attached to its URI.
///
/// The default allows any `https` URI and `http` to loopback; [`Target::allow_plain_http`]
/// lifts the second limit and [`Target::restrict_to`] / [`Target::allow_host`] narrow the
/// hosts. Cheap to clone and to check: one scheme comparison on the default path.
#[derive(Clone, Debug, Default)]
pub(crate) struct Target {
    allow_http: bool,
    hosts: Option<Arc<[AllowedHost]>>,
}

#[derive(Clone, Debug)]
struct AllowedHost {
    host: Box<str>,
    /// `None` accepts any port.
    port: Option<u16>,
}

impl Target {
    pub(crate) fn allow_plain_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    pub(crate) fn restrict_to(self, space: &Space) -> Self {
        self.push(AllowedHost {
            host: space.host().into(),
            port: Some(space.port()),
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
        // The default rule on an https URI needs no host: parsing it (`Uri::host`) would cost
        // more than the rest of the middleware. (`host()` is `Some` exactly when `authority()`
        // is.) Inline, with the rest out of line, so the fast path is a few comparisons.
        if self.hosts.is_none() && uri.scheme_str() == Some("https") && uri.authority().is_some() {
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
        if !https && !self.allow_http && !is_loopback(bare) {
            return Err(Error::refused(format!(
                "plain http to {bare} would expose credentials; use https \
                 (plain http is only allowed to loopback unless explicitly enabled)"
            )));
        }
        if let Some(hosts) = &self.hosts {
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let allowed = hosts.iter().any(|allowed| {
                allowed.host.eq_ignore_ascii_case(bare) && allowed.port.is_none_or(|p| p == port)
            });
            if !allowed {
                return Err(Error::refused(format!(
                    "host {bare}:{port} is not one the credentials are restricted to"
                )));
            }
        }
        Ok(())
    }
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
    }

    #[test]
    fn plain_http_opt_in() {
        let t = Target::default().allow_plain_http();
        assert!(check(&t, "http://example.com/api").is_ok());
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
