//! `Subscriber`: the request extension that names whose token a pooled layer sends.

use std::{
    collections::hash_map::RandomState,
    fmt,
    hash::BuildHasher,
    sync::{Arc, OnceLock},
};

/// Names the subscriber a request is sent for: put it in the request's extensions, and
/// [`BearerAuthLayer::pooled`](crate::BearerAuthLayer::pooled) (or
/// [`BearerAuthMiddleware::pooled`](crate::reqwest::BearerAuthMiddleware::pooled)) sends that
/// subscriber's token from its [`TokenPool`](crate::TokenPool). A request without one fails with
/// [`Error::is_missing_subscriber`](crate::Error::is_missing_subscriber) and is not sent.
///
/// Cheap to clone (a reference count): build one per subscriber and clone it into each request.
/// It hashes the reference once, here, so the pool's lookup per request does not.
///
/// # Example
///
/// ```
/// use http::Request;
/// use signalwire_auth::Subscriber;
///
/// let alice = Subscriber::new("alice@example.com");
/// let mut request = Request::get("https://example.signalwire.com/api/fabric/addresses").body(())?;
/// request.extensions_mut().insert(alice.clone());
/// assert_eq!(request.extensions().get::<Subscriber>(), Some(&alice));
/// assert_eq!(alice.reference(), "alice@example.com");
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Clone)]
pub struct Subscriber {
    reference: Arc<str>,
    hash: u64,
}

/// One keyed hasher for the process: a `Subscriber` made anywhere hashes like the pool's keys,
/// and the key is random, so references chosen by outsiders cannot be made to collide.
fn hasher() -> &'static RandomState {
    static HASHER: OnceLock<RandomState> = OnceLock::new();
    HASHER.get_or_init(RandomState::new)
}

pub(crate) fn hash_reference(reference: &str) -> u64 {
    hasher().hash_one(reference)
}

impl Subscriber {
    /// The subscriber `reference` (the `reference` of Create Subscriber Token, typically an
    /// email address).
    pub fn new(reference: impl Into<Arc<str>>) -> Self {
        let reference = reference.into();
        Self {
            hash: hash_reference(&reference),
            reference,
        }
    }

    /// The reference.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    pub(crate) fn shared_reference(&self) -> &Arc<str> {
        &self.reference
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for Subscriber {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.reference == other.reference
    }
}

impl Eq for Subscriber {}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A reference names a subscriber; it is not a credential.
        f.debug_tuple("Subscriber").field(&self.reference).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_references_hash_alike_wherever_they_are_made() {
        let a = Subscriber::new("alice@example.com");
        let b = Subscriber::new(String::from("alice@example.com"));
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a, Subscriber::new("bob@example.com"));
    }
}
