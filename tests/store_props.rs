//! `StoredPair` round trips (issue 11): any pair survives JSON and comes back with the same
//! tokens, the same version and what is left of each lifetime, to the second.

use std::time::Duration;

use proptest::prelude::*;
use signalwire_auth::{StoredPair, TokenPair};
use tokio::time::Instant;

/// RFC 6750 b64token characters, as SATs and refresh tokens are made of.
/// Each starts with `SAT.`, which a redacted `Debug` must never show.
fn token() -> impl Strategy<Value = String> {
    "SAT\\.[A-Za-z0-9._~+/-]{0,64}={0,2}"
}

proptest! {
    #[test]
    fn stored_pairs_round_trip_through_json_with_their_remaining_lifetimes(
        access in token(),
        refresh in proptest::option::of(token()),
        lifetime in 0u64..10_000_000,
        extra in 0u64..1_000_000,
        age in 0u64..100_000,
        version in 0u64..u64::MAX,
    ) {
        // Issued `age` seconds ago (an `Instant` this far back exists on any machine that
        // has been up for a day; otherwise issue it now).
        let now = Instant::now();
        let issued = now.checked_sub(Duration::from_secs(age)).unwrap_or(now);
        let mut pair = TokenPair::new(access.clone(), issued, Duration::from_secs(lifetime)).unwrap();
        if let Some(refresh) = &refresh {
            pair = pair.with_refresh_token(refresh.clone(), Duration::from_secs(lifetime + extra)).unwrap();
        }
        let stored = StoredPair::from_pair(&pair, version);
        let json = stored.to_json();
        let read = StoredPair::from_json(&json).unwrap();
        prop_assert_eq!(&read, &stored);
        prop_assert_eq!(read.version(), version);
        let shown = format!("{:?}", read);
        prop_assert!(!shown.contains("SAT."), "{}", shown);

        let back = read.to_pair().unwrap();
        prop_assert_eq!(back.access_token(), access.as_str());
        prop_assert_eq!(back.refresh_token(), refresh.as_deref());
        // Rounded down to the second, never later than the original.
        let close = |a: Instant, b: Instant| a <= b + Duration::from_millis(5) && b < a + Duration::from_secs(2);
        prop_assert!(close(back.expires_at(), pair.expires_at()));
        if let (Some(a), Some(b)) = (back.refresh_expires_at(), pair.refresh_expires_at()) {
            prop_assert!(close(a, b));
        }
    }

    #[test]
    fn junk_never_panics_and_is_a_corrupt_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Err(error) = StoredPair::from_json(&bytes) {
            prop_assert!(error.is_store_corrupt());
        }
    }
}
