//! The token endpoints' request and response bodies.

use std::{fmt, ops::Deref};

use serde::{Deserialize, Serialize, Serializer};

use crate::{Error, TokenPair, secret::Secret};

/// The most addresses a guest token may be restricted to.
pub(crate) const MAX_GUEST_ADDRESSES: usize = 10;

/// The body of `POST /api/fabric/subscribers/tokens`: mints a Subscriber Access Token (and its
/// refresh token) for the subscriber `reference`, creating the subscriber if needed.
///
/// Only `reference` is required; every `with_*` sets one optional field, and fields left unset
/// are not sent at all.
///
/// ```
/// use signalwire_auth::CreateSubscriberToken;
///
/// let request = CreateSubscriberToken::new("alice@example.com")
///     .with_expire_at(1_725_513_600)
///     .with_display_name("Alice");
/// assert_eq!(request.reference(), "alice@example.com");
/// assert_eq!(request.expire_at(), Some(1_725_513_600));
/// ```
#[derive(Clone, Serialize)]
pub struct CreateSubscriberToken {
    reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    application_id: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_secret"
    )]
    password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    company_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
}

/// The scope that makes a SAT able to refresh itself; without a `fingerprint` such a SAT lives
/// only 60 seconds.
///
/// ```
/// use signalwire_auth::{CreateSubscriberToken, SAT_REFRESH_SCOPE};
///
/// let request = CreateSubscriberToken::new("alice@example.com").with_scope(SAT_REFRESH_SCOPE);
/// assert_eq!(request.scope(), Some("sat:refresh"));
/// ```
pub const SAT_REFRESH_SCOPE: &str = "sat:refresh";

fn serialize_secret<S: Serializer>(secret: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_str(secret.expose()),
        None => s.serialize_none(),
    }
}

macro_rules! string_setters {
    ($($(#[$doc:meta])* $name:ident => $field:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: impl Into<String>) -> Self {
                self.$field = Some(value.into());
                self
            }
        )*
    };
}

impl CreateSubscriberToken {
    /// A request for the subscriber `reference` (typically an email address), with every
    /// optional field unset.
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            expire_at: None,
            application_id: None,
            password: None,
            fingerprint: None,
            scope: None,
            first_name: None,
            last_name: None,
            display_name: None,
            job_title: None,
            time_zone: None,
            country: None,
            company_name: None,
            region: None,
        }
    }

    /// When the SAT should expire, in unix seconds. The client then tracks the SAT's expiry as
    /// this instant; without it, SignalWire's default of 2 hours applies.
    ///
    /// This is an absolute time: a request kept for re-minting
    /// ([`SubscriberRefresher::with_remint`](crate::SubscriberRefresher::with_remint)) mints
    /// tokens that expire at that same instant every time.
    pub fn with_expire_at(mut self, unix_seconds: u64) -> Self {
        self.expire_at = Some(unix_seconds);
        self
    }

    /// The subscriber's password (sent, never shown in `Debug`).
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret::new(password.into()));
        self
    }

    string_setters! {
        /// The application the subscriber belongs to.
        with_application_id => application_id;
        /// A device fingerprint; with [`SAT_REFRESH_SCOPE`] it makes the SAT live the normal
        /// lifetime instead of 60 seconds.
        with_fingerprint => fingerprint;
        /// The token's scope, such as [`SAT_REFRESH_SCOPE`] (`"sat:refresh"`).
        with_scope => scope;
        /// The subscriber's first name.
        with_first_name => first_name;
        /// The subscriber's last name.
        with_last_name => last_name;
        /// The subscriber's display name.
        with_display_name => display_name;
        /// The subscriber's job title.
        with_job_title => job_title;
        /// The subscriber's time zone.
        with_time_zone => time_zone;
        /// The subscriber's country.
        with_country => country;
        /// The subscriber's company name.
        with_company_name => company_name;
        /// The region the subscriber's traffic is served from.
        with_region => region;
    }

    /// The same request for another subscriber: every field kept, the reference replaced.
    /// How a [`TokenPool`](crate::TokenPool) fills its template for each subscriber.
    ///
    /// ```
    /// use signalwire_auth::CreateSubscriberToken;
    ///
    /// let template = CreateSubscriberToken::new("").with_region("eu");
    /// let bob = template.clone().for_reference("bob@example.com");
    /// assert_eq!(bob.reference(), "bob@example.com");
    /// ```
    pub fn for_reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = reference.into();
        self
    }

    /// The subscriber reference.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The `expire_at` asked for, in unix seconds.
    pub fn expire_at(&self) -> Option<u64> {
        self.expire_at
    }

    /// The scope asked for.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The fingerprint sent.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// Whether SignalWire gives the SAT the short 60 s life: `sat:refresh` scope without a
    /// fingerprint.
    pub(crate) fn is_short_lived(&self) -> bool {
        self.scope.as_deref() == Some(SAT_REFRESH_SCOPE) && self.fingerprint.is_none()
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.reference.is_empty() {
            return Err(Error::invalid_input("subscriber reference is empty"));
        }
        Ok(())
    }
}

impl fmt::Debug for CreateSubscriberToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateSubscriberToken")
            .field("reference", &self.reference)
            .field("expire_at", &self.expire_at)
            .field("application_id", &self.application_id)
            .field("password", &self.password)
            .field("fingerprint", &self.fingerprint)
            .field("scope", &self.scope)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// What `POST /api/fabric/subscribers/tokens` answers: the subscriber's ID and a token pair.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use signalwire_auth::{CreateSubscriberToken, MockSpace, TokenClient};
///
/// let mock = MockSpace::start().await?;
/// let client = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
/// let request = CreateSubscriberToken::new("alice@example.com");
/// let minted = client.create_subscriber_token(&request).await?;
/// // The same reference is the same subscriber.
/// let again = client.create_subscriber_token(&request).await?;
/// assert_eq!(minted.subscriber_id(), again.subscriber_id());
/// // Debug shows the ID, never a token.
/// assert!(!format!("{minted:?}").contains(minted.pair().access_token()));
/// let pair = minted.into_pair(); // ready for a TokenCache
/// # drop(pair);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SubscriberToken {
    subscriber_id: Box<str>,
    pair: TokenPair,
}

impl SubscriberToken {
    pub(crate) fn new(subscriber_id: String, pair: TokenPair) -> Self {
        Self {
            subscriber_id: subscriber_id.into_boxed_str(),
            pair,
        }
    }

    /// The subscriber's ID (a UUID).
    pub fn subscriber_id(&self) -> &str {
        &self.subscriber_id
    }

    /// The SAT and its refresh token, with their locally tracked expiry.
    pub fn pair(&self) -> &TokenPair {
        &self.pair
    }

    /// The pair, ready for a `TokenCache`.
    pub fn into_pair(self) -> TokenPair {
        self.pair
    }
}

/// The body of `POST /api/fabric/guests/tokens`: a guest token restricted to at most 10 Fabric
/// addresses.
///
/// The addresses are checked when the request is made, before anything is sent: there must be
/// between 1 and 10 of them, each a UUID.
///
/// ```
/// use signalwire_auth::CreateGuestToken;
///
/// let request = CreateGuestToken::new(["c22d24f6-5a26-4f53-8008-b29530339efa"])
///     .with_expire_at(1_725_513_600);
/// assert_eq!(request.allowed_addresses().len(), 1);
/// ```
#[derive(Clone, Debug, Serialize)]
pub struct CreateGuestToken {
    allowed_addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ch: Option<String>,
}

impl CreateGuestToken {
    /// A guest token for `allowed_addresses` (Fabric address UUIDs, at most 10).
    pub fn new<I>(allowed_addresses: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self {
            allowed_addresses: allowed_addresses.into_iter().map(Into::into).collect(),
            expire_at: None,
            region: None,
            ch: None,
        }
    }

    /// When the guest token should expire, in unix seconds (default: 2 hours after minting).
    pub fn with_expire_at(mut self, unix_seconds: u64) -> Self {
        self.expire_at = Some(unix_seconds);
        self
    }

    /// The region the guest's traffic is served from.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The channel (`ch`) the token is for.
    pub fn with_ch(mut self, ch: impl Into<String>) -> Self {
        self.ch = Some(ch.into());
        self
    }

    /// The addresses the guest may reach.
    pub fn allowed_addresses(&self) -> &[String] {
        &self.allowed_addresses
    }

    /// The `expire_at` asked for, in unix seconds.
    pub fn expire_at(&self) -> Option<u64> {
        self.expire_at
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        let count = self.allowed_addresses.len();
        if count == 0 {
            return Err(Error::invalid_input(
                "allowed_addresses is empty; a guest token needs at least one address",
            ));
        }
        if count > MAX_GUEST_ADDRESSES {
            return Err(Error::invalid_input(format!(
                "allowed_addresses has {count} entries; at most {MAX_GUEST_ADDRESSES} are allowed"
            )));
        }
        if let Some(index) = self.allowed_addresses.iter().position(|a| !is_uuid(a)) {
            return Err(Error::invalid_input(format!(
                "allowed_addresses[{index}] is not a UUID"
            )));
        }
        Ok(())
    }
}

/// How [`TokenClient::create_guest_token`](crate::TokenClient::create_guest_token)
/// authenticates: the endpoint's reference page documents project credentials, the
/// Authorization guide a subscriber's SAT.
///
/// ```
/// use signalwire_auth::GuestAuth;
///
/// let sat = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwidHlwIjoiU0FUIn0..x.y.z";
/// let auth = GuestAuth::Bearer(sat);
/// assert_eq!(format!("{auth:?}"), "Bearer([redacted])");
/// assert_eq!(format!("{:?}", GuestAuth::Basic), "Basic");
/// ```
///
/// [`TokenClient::create_guest_token`](crate::TokenClient::create_guest_token) shows both in use.
#[derive(Clone, Copy)]
pub enum GuestAuth<'a> {
    /// The client's project credentials (Basic).
    Basic,
    /// A Subscriber Access Token (Bearer).
    Bearer(&'a str),
}

impl fmt::Debug for GuestAuth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic => f.write_str("Basic"),
            Self::Bearer(_) => f.write_str("Bearer([redacted])"),
        }
    }
}

/// The body of `POST /api/fabric/subscriber/invites`: an invite to one Fabric address.
///
/// ```
/// use signalwire_auth::CreateInviteToken;
///
/// let request = CreateInviteToken::new("c22d24f6-5a26-4f53-8008-b29530339efa")
///     .with_expires_at(1_725_513_600);
/// assert_eq!(request.expires_at(), Some(1_725_513_600));
/// ```
#[derive(Clone, Debug, Serialize)]
pub struct CreateInviteToken {
    address_id: String,
    // The endpoint spells it `expires_at`, unlike the other token endpoints' `expire_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

impl CreateInviteToken {
    /// An invite to the Fabric address `address_id`.
    pub fn new(address_id: impl Into<String>) -> Self {
        Self {
            address_id: address_id.into(),
            expires_at: None,
        }
    }

    /// When the invite should expire, in unix seconds (sent as `expires_at`).
    pub fn with_expires_at(mut self, unix_seconds: u64) -> Self {
        self.expires_at = Some(unix_seconds);
        self
    }

    /// The address invited to.
    pub fn address_id(&self) -> &str {
        &self.address_id
    }

    /// The `expires_at` asked for, in unix seconds.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.address_id.is_empty() {
            return Err(Error::invalid_input("invite address_id is empty"));
        }
        Ok(())
    }
}

macro_rules! token_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// It is a credential: `Debug` redacts it and the memory is wiped on drop. Read it with
        /// [`as_str`](Self::as_str) or through `Deref<Target = str>`.
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Secret);

        impl $name {
            pub(crate) fn new(token: String) -> Self {
                Self(Secret::new(token))
            }

            /// The token.
            pub fn as_str(&self) -> &str {
                self.0.expose()
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                self.as_str()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl From<$name> for String {
            fn from(token: $name) -> String {
                token.as_str().to_owned()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.0).finish()
            }
        }
    };
}

token_string! {
    /// An invite token from `POST /api/fabric/subscriber/invites`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use signalwire_auth::{CreateInviteToken, InviteToken, MockSpace, TokenClient};
    ///
    /// let mock = MockSpace::start().await?;
    /// let client = TokenClient::with_service(mock.space(), None, mock.client());
    /// let alice = mock.mint("alice@example.com");
    /// let request = CreateInviteToken::new("c22d24f6-5a26-4f53-8008-b29530339efa");
    /// let invite: InviteToken = client.create_invite_token(&request, alice.access_token()).await?;
    /// assert_eq!(format!("{invite:?}"), "InviteToken([redacted])");
    /// let link = format!("https://example.com/join?token={}", invite.as_str());
    /// # drop(link);
    /// # Ok(())
    /// # }
    /// ```
    InviteToken
}

token_string! {
    /// A guest embed token from `POST /api/fabric/embeds/tokens`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use signalwire_auth::{EmbedToken, MockSpace, TokenClient};
    ///
    /// let mock = MockSpace::start().await?;
    /// let client = TokenClient::with_service(mock.space(), None, mock.client());
    /// let embed: EmbedToken = client.create_embed_token("c2c_7acc0b5bd1ab4b4b8e6e1a3b").await?;
    /// let text: String = embed.clone().into();
    /// assert_eq!(text, embed.as_str());
    /// assert!(!format!("{embed:?}").contains(&text));
    /// # Ok(())
    /// # }
    /// ```
    EmbedToken
}

/// `{"refresh_token": …}`, for `POST /api/fabric/subscribers/tokens/refresh`.
#[derive(Serialize)]
pub(crate) struct RefreshRequest<'a> {
    pub(crate) refresh_token: &'a str,
}

/// `{"token": "c2c_…"}`, for `POST /api/fabric/embeds/tokens`.
#[derive(Serialize)]
pub(crate) struct EmbedRequest<'a> {
    pub(crate) token: &'a str,
}

/// `{subscriber_id, token, refresh_token}`.
#[derive(Deserialize)]
pub(crate) struct SubscriberTokenResponse {
    pub(crate) subscriber_id: String,
    pub(crate) token: String,
    #[serde(default)]
    pub(crate) refresh_token: Option<String>,
}

/// `{token, refresh_token}` from the refresh and guest endpoints. The refresh endpoint must
/// return a refresh token (the chain depends on it); the guest endpoint may not.
#[derive(Deserialize)]
pub(crate) struct PairResponse {
    pub(crate) token: String,
    #[serde(default)]
    pub(crate) refresh_token: Option<String>,
}

/// `{token}` from the invite and embed endpoints.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) token: String,
}

/// `8-4-4-4-12` hex digits, any case.
pub(crate) fn is_uuid(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const ADDRESS: &str = "c22d24f6-5a26-4f53-8008-b29530339efa";

    fn to_json(value: &impl Serialize) -> Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn subscriber_request_sends_only_what_was_set() {
        assert_eq!(
            to_json(&CreateSubscriberToken::new("alice@example.com")),
            json!({"reference": "alice@example.com"})
        );
    }

    #[test]
    fn subscriber_request_uses_the_documented_field_names() {
        let request = CreateSubscriberToken::new("alice@example.com")
            .with_expire_at(1_725_513_600)
            .with_application_id("app")
            .with_password("hunter2")
            .with_fingerprint("fp")
            .with_scope(SAT_REFRESH_SCOPE)
            .with_first_name("Alice")
            .with_last_name("Liddell")
            .with_display_name("Al")
            .with_job_title("Engineer")
            .with_time_zone("Europe/London")
            .with_country("GB")
            .with_company_name("Wonderland")
            .with_region("eu");
        assert_eq!(
            to_json(&request),
            json!({
                "reference": "alice@example.com",
                "expire_at": 1_725_513_600,
                "application_id": "app",
                "password": "hunter2",
                "fingerprint": "fp",
                "scope": "sat:refresh",
                "first_name": "Alice",
                "last_name": "Liddell",
                "display_name": "Al",
                "job_title": "Engineer",
                "time_zone": "Europe/London",
                "country": "GB",
                "company_name": "Wonderland",
                "region": "eu",
            })
        );
        assert!(!format!("{request:?}").contains("hunter2"));
    }

    #[test]
    fn short_life_needs_refresh_scope_without_fingerprint() {
        let base = CreateSubscriberToken::new("a");
        assert!(!base.is_short_lived());
        assert!(base.clone().with_scope("sat:refresh").is_short_lived());
        assert!(
            !base
                .clone()
                .with_scope("sat:refresh")
                .with_fingerprint("fp")
                .is_short_lived()
        );
        assert!(!base.with_scope("other").is_short_lived());
    }

    #[test]
    fn guest_request_field_names() {
        assert_eq!(
            to_json(&CreateGuestToken::new([ADDRESS])),
            json!({"allowed_addresses": [ADDRESS]})
        );
        let full = CreateGuestToken::new(vec![ADDRESS.to_owned()])
            .with_expire_at(5)
            .with_region("us")
            .with_ch("puc.signalwire.com");
        assert_eq!(
            to_json(&full),
            json!({"allowed_addresses": [ADDRESS], "expire_at": 5, "region": "us", "ch": "puc.signalwire.com"})
        );
    }

    #[test]
    fn invite_request_spells_expires_at() {
        assert_eq!(
            to_json(&CreateInviteToken::new(ADDRESS)),
            json!({"address_id": ADDRESS})
        );
        assert_eq!(
            to_json(&CreateInviteToken::new(ADDRESS).with_expires_at(7)),
            json!({"address_id": ADDRESS, "expires_at": 7})
        );
    }

    #[test]
    fn refresh_and_embed_bodies() {
        assert_eq!(
            to_json(&RefreshRequest { refresh_token: "r" }),
            json!({"refresh_token": "r"})
        );
        assert_eq!(
            to_json(&EmbedRequest { token: "c2c_x" }),
            json!({"token": "c2c_x"})
        );
    }

    #[test]
    fn guest_addresses_are_checked() {
        assert!(CreateGuestToken::new([ADDRESS; 10]).check().is_ok());
        let upper = ADDRESS.to_ascii_uppercase();
        assert!(CreateGuestToken::new([upper]).check().is_ok());
        let err = CreateGuestToken::new([ADDRESS; 11]).check().unwrap_err();
        assert!(err.is_invalid_input());
        assert!(err.to_string().contains("11"), "{err}");
        let none: [&str; 0] = [];
        assert!(
            CreateGuestToken::new(none)
                .check()
                .unwrap_err()
                .is_invalid_input()
        );
        for bad in [
            "",
            "c22d24f6-5a26-4f53-8008-b29530339ef",
            "c22d24f6-5a26-4f53-8008-b29530339efaa",
            "c22d24f6x5a26-4f53-8008-b29530339efa",
            "g22d24f6-5a26-4f53-8008-b29530339efa",
            "c22d24f6-5a26-4f53-8008-b29530339ef\u{e9}",
        ] {
            let err = CreateGuestToken::new([ADDRESS, bad]).check().unwrap_err();
            assert!(err.to_string().contains("allowed_addresses[1]"), "{err}");
        }
    }

    #[test]
    fn token_strings_are_redacted_but_readable() {
        let invite = InviteToken::new("eyJinvite".into());
        assert_eq!(invite, "eyJinvite");
        assert_eq!(invite.len(), 9);
        assert!(!format!("{invite:?}").contains("eyJ"));
        let embed = EmbedToken::new("eyJembed".into());
        assert_eq!(String::from(embed.clone()), "eyJembed");
        assert!(!format!("{embed:?}").contains("eyJ"));
        assert!(!format!("{:?}", GuestAuth::Bearer("eyJsat")).contains("eyJ"));
    }
}
