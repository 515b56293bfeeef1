//! Project credentials: a Project ID and an API token.

use std::fmt;

use base64::Engine as _;
use http::HeaderValue;

use crate::{Error, secret::Secret};

/// The environment variable [`Credentials::from_env`] reads the Project ID from.
///
/// ```
/// use signalwire_auth::{API_TOKEN_ENV, Credentials, PROJECT_ID_ENV};
///
/// assert_eq!(PROJECT_ID_ENV, "SIGNALWIRE_PROJECT_ID");
/// // Without the variables, the error names what is missing.
/// if std::env::var_os(PROJECT_ID_ENV).is_none() {
///     let error = Credentials::from_env().unwrap_err();
///     assert!(error.is_invalid_input());
///     assert!(error.to_string().contains(PROJECT_ID_ENV), "{error}");
/// }
/// # let _ = API_TOKEN_ENV;
/// ```
pub const PROJECT_ID_ENV: &str = "SIGNALWIRE_PROJECT_ID";
/// The environment variable [`Credentials::from_env`] reads the API token from.
///
/// ```
/// use signalwire_auth::{API_TOKEN_ENV, Credentials, PROJECT_ID_ENV};
///
/// assert_eq!(API_TOKEN_ENV, "SIGNALWIRE_API_TOKEN");
/// if std::env::var_os(PROJECT_ID_ENV).is_some() && std::env::var_os(API_TOKEN_ENV).is_none() {
///     let error = Credentials::from_env().unwrap_err();
///     assert!(error.to_string().contains(API_TOKEN_ENV), "{error}");
/// }
/// ```
pub const API_TOKEN_ENV: &str = "SIGNALWIRE_API_TOKEN";

/// A SignalWire Project ID and API token, the pair behind Basic authentication.
///
/// The API token is wiped from memory when the last clone is dropped and never shows in `Debug`.
///
/// ```
/// use signalwire_auth::Credentials;
///
/// let creds = Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "PTsecret")?;
/// assert_eq!(creds.project_id(), "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
/// assert!(!format!("{creds:?}").contains("PTsecret"));
/// # Ok::<(), signalwire_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct Credentials {
    project_id: Box<str>,
    api_token: Secret,
}

impl Credentials {
    /// Checks and keeps a Project ID and API token.
    ///
    /// Both must be non-empty and free of control characters, and the Project ID may not contain
    /// `:` (Basic authentication splits on the first one).
    pub fn new(project_id: impl Into<String>, api_token: impl Into<String>) -> Result<Self, Error> {
        let project_id = project_id.into();
        let api_token = Secret::new(api_token.into());
        check_part("project ID", &project_id)?;
        check_part("API token", api_token.expose())?;
        if project_id.contains(':') {
            return Err(Error::invalid_input(
                "project ID contains ':', which Basic authentication cannot carry",
            ));
        }
        Ok(Self {
            project_id: project_id.into_boxed_str(),
            api_token,
        })
    }

    /// Reads `SIGNALWIRE_PROJECT_ID` and `SIGNALWIRE_API_TOKEN`.
    ///
    /// A variable that is missing, empty or not Unicode is an error that names it.
    pub fn from_env() -> Result<Self, Error> {
        Self::new(env_var(PROJECT_ID_ENV)?, env_var(API_TOKEN_ENV)?)
    }

    /// The Project ID (not a secret: it appears in URLs and in `Debug`).
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The API token, for the code that must cut it out of echoed errors.
    pub(crate) fn api_token(&self) -> &str {
        self.api_token.expose()
    }

    /// `Basic base64(project_id:api_token)`, marked sensitive, for a client that is not a tower
    /// service (a WebSocket handshake, say).
    ///
    /// [`BasicAuthLayer`](crate::BasicAuthLayer) adds the same value and also refuses to send it
    /// anywhere but SignalWire's hosts and loopback; code that sends this value itself must keep
    /// that rule.
    ///
    /// ```
    /// use signalwire_auth::Credentials;
    ///
    /// let creds = Credentials::new("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "4tjCGnmAeQ0hwFmFDhwfgww880X2lsnuR60VMyasGR3hFpSyvu")?;
    /// let header = creds.basic_header();
    /// assert!(header.is_sensitive());
    /// assert_eq!(
    ///     header,
    ///     "Basic YTFiMmMzZDQtZTVmNi03ODkwLWFiY2QtZWYxMjM0NTY3ODkwOjR0akNHbm1BZVEwaHdGbUZEaHdmZ3d3ODgwWDJsc251UjYwVk15YXNHUjNoRnBTeXZ1",
    /// );
    /// // A sensitive value's Debug hides it.
    /// assert!(!format!("{header:?}").contains("YTFi"));
    /// # Ok::<(), signalwire_auth::Error>(())
    /// ```
    pub fn basic_header(&self) -> HeaderValue {
        let mut raw = zeroize::Zeroizing::new(String::with_capacity(
            self.project_id.len() + 1 + self.api_token.expose().len(),
        ));
        raw.push_str(&self.project_id);
        raw.push(':');
        raw.push_str(self.api_token.expose());
        let mut value = zeroize::Zeroizing::new(String::from("Basic "));
        base64::engine::general_purpose::STANDARD.encode_string(raw.as_bytes(), &mut value);
        crate::header::shared_sensitive(value.as_bytes().to_vec())
            .expect("base64 output is always a valid header value")
    }
}

fn check_part(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid_input(format!("{what} is empty")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid_input(format!(
            "{what} contains a control character"
        )));
    }
    Ok(())
}

fn env_var(name: &str) -> Result<String, Error> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) => Err(Error::invalid_input(format!(
            "environment variable {name} is empty"
        ))),
        Err(std::env::VarError::NotPresent) => Err(Error::invalid_input(format!(
            "environment variable {name} is not set"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::invalid_input(format!(
            "environment variable {name} is not valid unicode"
        ))),
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("project_id", &self.project_id)
            .field("api_token", &self.api_token)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_vector_byte_for_byte() {
        let creds = Credentials::new(
            "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "4tjCGnmAeQ0hwFmFDhwfgww880X2lsnuR60VMyasGR3hFpSyvu",
        )
        .unwrap();
        let header = creds.basic_header();
        assert_eq!(
            header.as_bytes(),
            b"Basic YTFiMmMzZDQtZTVmNi03ODkwLWFiY2QtZWYxMjM0NTY3ODkwOjR0akNHbm1BZVEwaHdGbUZEaHdmZ3d3ODgwWDJsc251UjYwVk15YXNHUjNoRnBTeXZ1"
        );
        assert!(header.is_sensitive());
    }

    #[test]
    fn rejects_empty_control_and_colon() {
        assert!(Credentials::new("", "t").unwrap_err().is_invalid_input());
        assert!(Credentials::new("p", "").unwrap_err().is_invalid_input());
        assert!(Credentials::new("p\n", "t").unwrap_err().is_invalid_input());
        assert!(Credentials::new("p", "t\r").unwrap_err().is_invalid_input());
        let err = Credentials::new("a:b", "t").unwrap_err();
        assert!(err.to_string().contains("':'"), "{err}");
    }

    #[test]
    fn debug_hides_the_token() {
        let creds = Credentials::new("proj", "very-secret-token").unwrap();
        let dbg = format!("{creds:?}");
        assert!(dbg.contains("proj"));
        assert!(!dbg.contains("very-secret-token"));
    }
}
