//! The API token never shows: not in `Debug` of the credentials, the layer, the service or its
//! future, and not in `Display`/`Debug` of any error the Basic layer or `Credentials` returns,
//! neither as text nor in base64.

mod common;

use base64::{Engine as _, engine::general_purpose};
use common::{API_TOKEN, Echo, PROJECT_ID, call_now};
use http::Request;
use signalwire_auth::{BasicAuthLayer, Credentials, Error, Space};
use tower::{Layer, Service};

/// Every form of the token that must not appear.
fn forbidden_forms(project_id: &str, token: &str) -> Vec<String> {
    let pair = format!("{project_id}:{token}");
    vec![
        token.to_owned(),
        general_purpose::STANDARD.encode(token),
        general_purpose::STANDARD.encode(&pair),
        general_purpose::STANDARD_NO_PAD.encode(&pair),
        general_purpose::URL_SAFE.encode(&pair),
        // A long enough piece of the encoded pair to catch truncated or wrapped output.
        general_purpose::STANDARD.encode(&pair)[project_id.len()..].to_owned(),
    ]
}

#[track_caller]
fn assert_clean(what: &str, text: &str, project_id: &str, token: &str) {
    for form in forbidden_forms(project_id, token) {
        assert!(!text.contains(&form), "{what} shows {form:?}: {text}");
    }
}

/// Display, Debug and alternate Debug of an error and of everything in its source chain.
fn renderings(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        out.push(err.to_string());
        out.push(format!("{err:?}"));
        out.push(format!("{err:#?}"));
        next = err.source();
    }
    out
}

/// Requests each way the transport rule can refuse one, with the layer each needs.
fn refusals() -> Vec<(BasicAuthLayer, &'static str)> {
    let layer = || BasicAuthLayer::new(common::seed_credentials());
    let space = Space::new("example").unwrap();
    vec![
        (layer(), "http://example.com/api"),
        (layer(), "/api/fabric/addresses"),
        (layer(), "ftp://example.com/api"),
        (layer(), "example.com:443"),
        (
            layer().for_space(&space),
            "https://other.signalwire.com/api",
        ),
        (
            layer().for_space(&space).allow_host("files.example.com"),
            "https://example.signalwire.com:8443/api",
        ),
        (
            layer().allow_plain_http().for_space(&space),
            "http://evil.test/",
        ),
    ]
}

#[test]
fn debug_of_credentials_layer_service_and_future_hides_the_token() {
    let creds = common::seed_credentials();
    let layer = BasicAuthLayer::new(creds.clone()).for_space(&Space::new("example").unwrap());
    let mut service = layer.layer(Echo::default());
    let future = service.call(
        Request::get("https://example.signalwire.com/")
            .body(())
            .unwrap(),
    );

    let renderings = [
        ("credentials", format!("{creds:?}")),
        ("credentials", format!("{creds:#?}")),
        ("layer", format!("{layer:?}")),
        ("layer", format!("{layer:#?}")),
        ("service", format!("{service:?}")),
        ("service", format!("{service:#?}")),
        ("future", format!("{future:?}")),
    ];
    for (what, text) in &renderings {
        assert_clean(what, text, PROJECT_ID, API_TOKEN);
    }
    // The Project ID is not secret and helps debugging.
    assert!(renderings[0].1.contains(PROJECT_ID), "{}", renderings[0].1);
}

#[test]
fn every_refusal_error_hides_the_token() {
    for (layer, uri) in refusals() {
        let mut service = layer.layer(Echo::default());
        let err = call_now(&mut service, Request::get(uri).body(()).unwrap()).expect_err(uri);
        let typed = err
            .downcast_ref::<Error>()
            .expect("a signalwire_auth::Error");
        assert!(typed.is_refused(), "{uri}: {typed:?}");
        for text in renderings(err.as_ref()) {
            assert_clean(uri, &text, PROJECT_ID, API_TOKEN);
        }
        // The message says what was wrong, in lower case and without trailing punctuation.
        let message = typed.to_string();
        assert!(message.starts_with(char::is_lowercase), "{message}");
        assert!(!message.ends_with(['.', '!']), "{message}");
        assert_eq!(service.get_ref().calls(), 0);
    }
}

#[test]
fn credentials_errors_hide_the_token_they_refuse() {
    let token = "PTvery-secret-9f8e7d6c5b4a";
    let cases = [
        ("", token.to_owned()),
        ("proj:ect", token.to_owned()),
        ("proj\nect", token.to_owned()),
        (PROJECT_ID, format!("{token}\n")),
        (PROJECT_ID, format!("\u{7f}{token}")),
        (PROJECT_ID, format!("{token}\r\nX-Injected: 1")),
    ];
    for (project_id, bad_token) in cases {
        let err = Credentials::new(project_id, bad_token.as_str()).unwrap_err();
        assert!(err.is_invalid_input(), "{err:?}");
        for text in renderings(&err) {
            assert_clean("credentials error", &text, project_id, token);
            assert_clean("credentials error", &text, project_id, &bad_token);
        }
    }
}

#[test]
fn inner_errors_pass_through_unchanged() {
    // The layer adds nothing to an inner error, so nothing of the token can leak into one.
    let mut service = BasicAuthLayer::new(common::seed_credentials()).layer(tower::service_fn(
        |_req: Request<()>| async { Err::<(), _>(std::io::Error::other("inner failure")) },
    ));
    let req = Request::get("https://example.signalwire.com/")
        .body(())
        .unwrap();
    let err = call_now(&mut service, req).unwrap_err();
    assert_eq!(err.to_string(), "inner failure");
    assert!(err.source().is_none());
}
