//! The mock's server side of tokens: what it has issued, to whom, until when.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    time::Duration,
};

use base64::Engine as _;
use serde::Serialize;
use tokio::time::Instant;

/// Unpredictable bytes without a `rand` dependency: SipHash keyed by a fresh
/// [`RandomState`](std::collections::hash_map::RandomState) (random keys per process, new
/// ones per instance), over a counter.
#[derive(Debug)]
pub(super) struct Entropy {
    keys: std::collections::hash_map::RandomState,
    counter: u64,
}

impl Entropy {
    pub(super) fn new() -> Self {
        Self {
            keys: std::collections::hash_map::RandomState::new(),
            counter: 0,
        }
    }

    pub(super) fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.counter = self.counter.wrapping_add(1);
            let mut hasher = self.keys.build_hasher();
            hasher.write_u64(self.counter);
            let word = hasher.finish().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// A random (version 4) UUID in its usual text form.
    pub(super) fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        self.fill(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    pub(super) fn base64url(&mut self, len: usize) -> String {
        let mut bytes = vec![0u8; len];
        self.fill(&mut bytes);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// What an access token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Grant {
    /// A subscriber's SAT (index into [`Store::subscribers`]).
    Subscriber(usize),
    /// A guest token, from Create Subscriber Guest Token.
    Guest,
    /// An invite token, from Create Subscriber Invite Token.
    Invite,
    /// A token from Create Guest Embed Token.
    Embed,
}

#[derive(Debug)]
enum Kind {
    Access,
    Refresh { spent: bool },
}

#[derive(Debug)]
struct Record {
    /// Issue order, for revocation by watermark.
    serial: u64,
    kind: Kind,
    grant: Grant,
    expires_at: Instant,
}

/// A subscriber, created by the first token minted for its reference.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Subscriber {
    pub(super) id: String,
    /// The id of the subscriber's own address, listed by `GET /api/fabric/addresses`.
    #[serde(skip)]
    pub(super) address_id: String,
    /// SignalWire uses the reference (usually an email) as the subscriber's email.
    pub(super) email: String,
    #[serde(flatten)]
    pub(super) profile: Profile,
    /// Pairs minted for it (Create Subscriber Token, or `MockSpace::mint`).
    #[serde(skip)]
    pub(super) mints: usize,
    /// Refreshes of its pairs.
    #[serde(skip)]
    pub(super) refreshes: usize,
    /// Its access tokens with a serial up to this one are revoked.
    #[serde(skip)]
    revoked_through: Option<u64>,
}

/// The profile fields Create Subscriber Token may set.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Profile {
    pub(super) first_name: Option<String>,
    pub(super) last_name: Option<String>,
    pub(super) display_name: Option<String>,
    pub(super) job_title: Option<String>,
    pub(super) timezone: Option<String>,
    pub(super) country: Option<String>,
    pub(super) region: Option<String>,
    pub(super) company_name: Option<String>,
}

impl Profile {
    /// Takes every field `update` sets; the others stay as they were.
    fn update(&mut self, update: Profile) {
        let fields = [
            (&mut self.first_name, update.first_name),
            (&mut self.last_name, update.last_name),
            (&mut self.display_name, update.display_name),
            (&mut self.job_title, update.job_title),
            (&mut self.timezone, update.timezone),
            (&mut self.country, update.country),
            (&mut self.region, update.region),
            (&mut self.company_name, update.company_name),
        ];
        for (field, value) in fields {
            if value.is_some() {
                *field = value;
            }
        }
    }
}

/// Why a bearer token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejection {
    /// Not issued here, or a refresh token.
    Unknown,
    Expired,
    Revoked,
}

/// Why a refresh did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RefreshRefusal {
    /// Unknown, expired or already spent.
    Expired,
    /// An access token was presented.
    NotARefreshToken,
}

/// A token pair as the endpoints answer it.
#[derive(Debug)]
pub(super) struct Issued {
    pub(super) access: String,
    pub(super) refresh: String,
}

/// Every token the mock has issued. Tokens are never forgotten, so a late request with an old
/// token gets the precise refusal (spent, expired, revoked), not "unknown".
#[derive(Debug)]
pub(super) struct Store {
    entropy: Entropy,
    /// The `ch` claim put in every token header.
    channel: Box<str>,
    tokens: HashMap<Box<str>, Record>,
    serial: u64,
    /// Access tokens with a serial up to this one are revoked.
    revoked_through: Option<u64>,
    subscribers: Vec<Subscriber>,
    by_reference: HashMap<Box<str>, usize>,
    reused_refresh_tokens: usize,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    enc: &'static str,
    ch: &'a str,
    typ: &'static str,
}

impl Store {
    pub(super) fn new(channel: &str) -> Self {
        Self {
            entropy: Entropy::new(),
            channel: channel.into(),
            tokens: HashMap::new(),
            serial: 0,
            revoked_through: None,
            subscribers: Vec::new(),
            by_reference: HashMap::new(),
            reused_refresh_tokens: 0,
        }
    }

    pub(super) fn entropy(&mut self) -> &mut Entropy {
        &mut self.entropy
    }

    /// A compact JWE look-alike: `header..iv.ciphertext.tag`, with an empty encrypted key as
    /// `alg: dir` has. Only the header means anything; the rest is random.
    fn new_token(&mut self, typ: &'static str) -> String {
        let header = Header {
            alg: "dir",
            enc: "A256GCM",
            ch: &self.channel,
            typ,
        };
        // Serializing four string fields cannot fail.
        let json = serde_json::to_vec(&header).unwrap_or_default();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let iv = self.entropy.base64url(12);
        let ciphertext = self.entropy.base64url(48);
        let tag = self.entropy.base64url(16);
        format!("{header}..{iv}.{ciphertext}.{tag}")
    }

    fn record(
        &mut self,
        kind: Kind,
        typ: &'static str,
        grant: Grant,
        expires_at: Instant,
    ) -> String {
        let token = self.new_token(typ);
        self.serial += 1;
        self.tokens.insert(
            token.as_str().into(),
            Record {
                serial: self.serial,
                kind,
                grant,
                expires_at,
            },
        );
        token
    }

    /// Issues an access token for `grant`, valid until `expires_at`.
    pub(super) fn issue_access(&mut self, grant: Grant, expires_at: Instant) -> String {
        self.record(Kind::Access, "SAT", grant, expires_at)
    }

    /// Issues an access token and its refresh token.
    pub(super) fn issue_pair(
        &mut self,
        grant: Grant,
        access_expires_at: Instant,
        refresh_expires_at: Instant,
    ) -> Issued {
        Issued {
            access: self.issue_access(grant, access_expires_at),
            refresh: self.record(
                Kind::Refresh { spent: false },
                "Refresh",
                grant,
                refresh_expires_at,
            ),
        }
    }

    /// The subscriber for `reference`, created on first use, with `profile` applied.
    fn subscriber(&mut self, reference: &str, profile: Profile) -> usize {
        let index = match self.by_reference.get(reference) {
            Some(&index) => index,
            None => {
                let index = self.subscribers.len();
                let id = self.entropy.uuid();
                let address_id = self.entropy.uuid();
                self.subscribers.push(Subscriber {
                    id,
                    address_id,
                    email: reference.to_owned(),
                    profile: Profile::default(),
                    mints: 0,
                    refreshes: 0,
                    revoked_through: None,
                });
                self.by_reference.insert(reference.into(), index);
                index
            }
        };
        self.subscribers[index].profile.update(profile);
        index
    }

    /// A SAT pair for the subscriber `reference` (created on first use); returns its id too.
    pub(super) fn mint_subscriber(
        &mut self,
        reference: &str,
        profile: Profile,
        access_expires_at: Instant,
        refresh_expires_at: Instant,
    ) -> (String, Issued) {
        let index = self.subscriber(reference, profile);
        self.subscribers[index].mints += 1;
        let id = self.subscribers[index].id.clone();
        let issued = self.issue_pair(
            Grant::Subscriber(index),
            access_expires_at,
            refresh_expires_at,
        );
        (id, issued)
    }

    pub(super) fn subscribers(&self) -> &[Subscriber] {
        &self.subscribers
    }

    /// What `token` may do, if it is a valid access token at `now`.
    pub(super) fn check_access(&self, token: &str, now: Instant) -> Result<Grant, Rejection> {
        let record = match self.tokens.get(token) {
            Some(
                record @ Record {
                    kind: Kind::Access, ..
                },
            ) => record,
            _ => return Err(Rejection::Unknown),
        };
        let subscriber_revoked = match record.grant {
            Grant::Subscriber(index) => self
                .subscribers
                .get(index)
                .and_then(|subscriber| subscriber.revoked_through),
            _ => None,
        };
        if [self.revoked_through, subscriber_revoked]
            .into_iter()
            .flatten()
            .any(|through| record.serial <= through)
        {
            return Err(Rejection::Revoked);
        }
        if now >= record.expires_at {
            return Err(Rejection::Expired);
        }
        Ok(record.grant)
    }

    /// Spends `refresh_token` and issues the next pair, or says why not. A spent token that
    /// comes back is counted in [`reused_refresh_tokens`](Self::reused_refresh_tokens).
    pub(super) fn refresh(
        &mut self,
        refresh_token: &str,
        now: Instant,
        lifetimes: impl FnOnce(Instant) -> (Instant, Instant),
    ) -> Result<Issued, RefreshRefusal> {
        let record = self
            .tokens
            .get_mut(refresh_token)
            .ok_or(RefreshRefusal::Expired)?;
        match record.kind {
            Kind::Access => return Err(RefreshRefusal::NotARefreshToken),
            Kind::Refresh { spent: true } => {
                self.reused_refresh_tokens += 1;
                return Err(RefreshRefusal::Expired);
            }
            Kind::Refresh { spent: false } if now >= record.expires_at => {
                return Err(RefreshRefusal::Expired);
            }
            Kind::Refresh { spent: false } => record.kind = Kind::Refresh { spent: true },
        }
        let grant = record.grant;
        if let Grant::Subscriber(index) = grant {
            if let Some(subscriber) = self.subscribers.get_mut(index) {
                subscriber.refreshes += 1;
            }
        }
        let (access_expires_at, refresh_expires_at) = lifetimes(now);
        Ok(self.issue_pair(grant, access_expires_at, refresh_expires_at))
    }

    /// Revokes every access token issued so far.
    pub(super) fn revoke_access_tokens(&mut self) {
        self.revoked_through = Some(self.serial);
    }

    /// Revokes every access token issued so far to the subscriber `reference`; `false` if the
    /// mock has no such subscriber.
    pub(super) fn revoke_subscriber_access_tokens(&mut self, reference: &str) -> bool {
        let Some(&index) = self.by_reference.get(reference) else {
            return false;
        };
        self.subscribers[index].revoked_through = Some(self.serial);
        true
    }

    /// The subscriber `reference`, if any token was minted for it.
    pub(super) fn subscriber_by_reference(&self, reference: &str) -> Option<&Subscriber> {
        self.by_reference
            .get(reference)
            .map(|&index| &self.subscribers[index])
    }

    pub(super) fn reused_refresh_tokens(&self) -> usize {
        self.reused_refresh_tokens
    }
}

/// `now + lifetime`, or `None` if that is past what an [`Instant`] can hold.
pub(super) fn deadline(now: Instant, lifetime: Duration) -> Option<Instant> {
    now.checked_add(lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenHeader;

    #[test]
    fn tokens_read_as_sat_and_refresh_headers() {
        let mut store = Store::new("localhost");
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let pair = store.issue_pair(Grant::Guest, later, later);
        let access = TokenHeader::parse(&pair.access).unwrap();
        assert_eq!(access.typ(), Some("SAT"));
        assert_eq!(access.alg(), Some("dir"));
        assert_eq!(access.enc(), Some("A256GCM"));
        assert_eq!(access.channel(), Some("localhost"));
        assert!(TokenHeader::parse(&pair.refresh).unwrap().is_refresh());
        assert_eq!(pair.access.split('.').count(), 5);
        assert_eq!(pair.access.split('.').nth(1), Some(""));
        // A valid RFC 6750 bearer token, as TokenPair checks.
        crate::TokenPair::new(pair.access.as_str(), now, Duration::from_secs(1)).unwrap();
        assert_ne!(pair.access, pair.refresh);
    }

    #[test]
    fn entropy_never_repeats_and_uuids_are_v4() {
        let mut a = Entropy::new();
        let mut b = Entropy::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(a.base64url(16)));
            assert!(seen.insert(b.base64url(16)));
        }
        let id = a.uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn refresh_rotates_and_counts_reuse() {
        let mut store = Store::new("h");
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let first = store.issue_pair(Grant::Guest, later, later);
        let lifetimes = |now: Instant| (now + Duration::from_secs(1), now + Duration::from_secs(2));
        let second = store.refresh(&first.refresh, now, lifetimes).unwrap();
        assert_eq!(
            store.refresh(&first.refresh, now, lifetimes).unwrap_err(),
            RefreshRefusal::Expired
        );
        assert_eq!(store.reused_refresh_tokens(), 1);
        assert_eq!(
            store.refresh(&second.access, now, lifetimes).unwrap_err(),
            RefreshRefusal::NotARefreshToken
        );
        assert_eq!(
            store.refresh("nope", now, lifetimes).unwrap_err(),
            RefreshRefusal::Expired
        );
        let past = now + Duration::from_secs(2);
        assert_eq!(
            store.refresh(&second.refresh, past, lifetimes).unwrap_err(),
            RefreshRefusal::Expired
        );
        assert_eq!(store.reused_refresh_tokens(), 1);
    }

    #[test]
    fn revocation_covers_tokens_issued_before_it_only() {
        let mut store = Store::new("h");
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let old = store.issue_access(Grant::Embed, later);
        store.revoke_access_tokens();
        let new = store.issue_access(Grant::Embed, later);
        assert_eq!(store.check_access(&old, now), Err(Rejection::Revoked));
        assert_eq!(store.check_access(&new, now), Ok(Grant::Embed));
        assert_eq!(store.check_access(&new, later), Err(Rejection::Expired));
        assert_eq!(store.check_access("x", now), Err(Rejection::Unknown));
    }
}
