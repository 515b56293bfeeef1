//! Property tests: no user string panics `Credentials` or `Space`, and every valid pair of
//! credentials reaches the wire as exactly `base64(project_id:api_token)`.

mod common;

use base64::Engine as _;
use common::{Echo, call_now};
use http::Request;
use proptest::prelude::*;
use signalwire_auth::{BasicAuthLayer, Credentials, Space};
use tower::Layer;

/// Strings that hit every branch of the checks: anything at all, printable text, short strings
/// over a small alphabet with ':' and a control character, and UUID-like IDs.
fn part() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,64}",
        "[a-z0-9:\\- \t\u{7f}\u{85}é]{0,12}",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    ]
}

/// The documented rule, written out independently of the implementation.
fn is_valid(project_id: &str, api_token: &str) -> bool {
    let clean = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
    clean(project_id) && clean(api_token) && !project_id.contains(':')
}

/// The `Authorization` header `BasicAuthLayer` puts on a request, seen by the inner service.
fn header_on_the_wire(credentials: Credentials) -> String {
    let mut service = BasicAuthLayer::new(credentials).layer(Echo::default());
    let req = Request::get("https://example.signalwire.com/api")
        .body(())
        .unwrap();
    let value = call_now(&mut service, req)
        .unwrap()
        .into_body()
        .expect("the header is set");
    assert!(value.is_sensitive(), "the header must be marked sensitive");
    value.to_str().expect("base64 is ASCII").to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn credentials_never_panic_and_round_trip_through_the_layer(
        project_id in part(),
        api_token in part(),
    ) {
        let valid = is_valid(&project_id, &api_token);
        match Credentials::new(project_id.as_str(), api_token.as_str()) {
            Ok(credentials) => {
                prop_assert!(valid, "accepted {project_id:?} / {api_token:?}");
                prop_assert_eq!(credentials.project_id(), project_id.as_str());

                let header = header_on_the_wire(credentials);
                let encoded = header.strip_prefix("Basic ");
                prop_assert!(encoded.is_some(), "{}", header);
                let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.unwrap());
                prop_assert!(decoded.is_ok(), "not standard padded base64: {}", header);
                prop_assert_eq!(decoded.unwrap(), format!("{project_id}:{api_token}").into_bytes());
            }
            Err(err) => {
                prop_assert!(!valid, "refused {project_id:?} / {api_token:?}: {err}");
                prop_assert!(err.is_invalid_input(), "{err:?}");
            }
        }
    }

    #[test]
    fn space_new_never_panics(name in part()) {
        if let Ok(space) = Space::new(&name) {
            prop_assert!(space.is_https());
            prop_assert_eq!(space.port(), 443);
            prop_assert_eq!(space.host(), format!("{}.signalwire.com", name.to_ascii_lowercase()));
            prop_assert!(space.endpoint("/api/fabric/addresses").is_ok());
        }
    }

    #[test]
    fn space_from_url_never_panics(
        url in prop_oneof![
            any::<String>(),
            "(https?|ftp|)(://)?[a-zA-Z0-9.:@\\[\\]%/?#-]{0,30}",
            "https?://(127\\.0\\.0\\.1|localhost|\\[::1\\]|[a-z]{1,8}\\.com)(:[0-9]{0,6})?/?",
        ],
    ) {
        if let Ok(space) = Space::from_url(&url) {
            // What it accepted is usable: the base URL parses back to the same space, and
            // endpoints can be built from it.
            let loopback = space.host() == "localhost"
                || space.host().parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            prop_assert!(space.is_https() || loopback, "plain http to {}", space.host());
            prop_assert_eq!(Space::from_url(space.url()).ok(), Some(space.clone()));
            prop_assert!(space.endpoint("/api/fabric/addresses").is_ok(), "{space:?}");
        }
    }
}
