//! The transport rule, seen through `BasicAuthLayer`: where the credentials may go, and that a
//! refused request never reaches the inner service.

mod common;

use common::{Echo, SEED_HEADER, call_now};
use http::Request;
use signalwire_auth::{BasicAuthLayer, Space};
use tower::Layer;

fn layer() -> BasicAuthLayer {
    BasicAuthLayer::new(common::seed_credentials())
}

fn example_space() -> Space {
    Space::new("example").unwrap()
}

/// Sends a GET for each URI through one service built by `layer`, and checks that exactly the
/// `allowed` ones reach the inner service, with the seed header, and that every `refused` one
/// fails with a typed refusal without reaching it.
#[track_caller]
fn check(layer: BasicAuthLayer, allowed: &[&str], refused: &[&str]) {
    let mut service = layer.layer(Echo::default());
    for uri in allowed {
        let response = call_now(&mut service, Request::get(*uri).body(()).unwrap())
            .unwrap_or_else(|err| panic!("{uri} was refused: {err}"));
        let header = response.into_body().expect("the header is set");
        assert_eq!(header, SEED_HEADER, "{uri}");
    }
    assert_eq!(service.get_ref().calls(), allowed.len());
    for uri in refused {
        let err = call_now(&mut service, Request::get(*uri).body(()).unwrap()).expect_err(uri);
        common::assert_refused(&err);
        assert_eq!(
            service.get_ref().calls(),
            allowed.len(),
            "{uri} reached the inner service"
        );
    }
}

#[test]
fn plain_http_to_a_public_host_is_refused_before_the_inner_service() {
    check(
        layer(),
        &[],
        &[
            "http://example.com/api",
            "http://example.signalwire.com/api/fabric/addresses",
            "http://93.184.216.34/api",
            "http://[2001:db8::1]/api",
        ],
    );
}

#[test]
fn https_to_signalwire_and_plain_http_to_loopback_are_allowed() {
    check(
        layer(),
        &[
            "https://example.signalwire.com/api/fabric/addresses",
            "https://127.0.0.1:8443/api",
            "http://127.0.0.1/api",
            "http://127.0.0.1:8080/api",
            "http://127.8.9.10:1/api",
            "http://[::1]:8080/api",
            "http://localhost:3000/api",
            "http://LOCALHOST:3000/api",
        ],
        // Without for_space or allow_host, credentials stay with SignalWire.
        &[
            "https://example.com:8443/api",
            "https://signalwire.com.evil.test/api",
            "https://example.signalwire.com@evil.test/api",
        ],
    );
}

#[test]
fn allow_plain_http_lifts_the_loopback_limit_only() {
    check(
        layer().allow_plain_http().allow_host("example.com"),
        &["http://example.com/api", "https://example.com/api"],
        // It does not make a URI without a scheme or host acceptable.
        &["/api", "example.com:80"],
    );
}

#[test]
fn relative_and_non_http_uris_are_refused() {
    check(
        layer().allow_plain_http(),
        &[],
        &[
            "/api/fabric/addresses",
            "*",
            "example.com:443",
            "ws://example.com/socket",
            "ftp://example.com/file",
        ],
    );
}

#[test]
fn for_space_refuses_foreign_hosts_and_ports() {
    check(
        layer().for_space(&example_space()),
        &[
            "https://example.signalwire.com/api/fabric/addresses",
            "https://EXAMPLE.signalwire.com:443/api",
        ],
        &[
            "https://other.signalwire.com/api",
            "https://example.signalwire.com.evil.test/api",
            "https://example.signalwire.com:8443/api",
            "http://example.signalwire.com/api",
            "https://127.0.0.1/api",
        ],
    );
}

#[test]
fn for_space_on_loopback_pins_the_host_and_port() {
    check(
        layer().for_space(&Space::from_url("http://127.0.0.1:4010").unwrap()),
        &["http://127.0.0.1:4010/api"],
        &[
            "http://127.0.0.1:4011/api",
            "http://localhost:4010/api",
            "https://example.com/",
        ],
    );
}

#[test]
fn allow_host_extends_a_space_restriction() {
    check(
        layer()
            .for_space(&example_space())
            .allow_host("Files.Example.com"),
        &[
            "https://example.signalwire.com/api",
            "https://files.example.com/upload",
            "https://files.example.com:9443/upload",
        ],
        &[
            "https://example.com/upload",
            // Allowing a host does not allow plain http to it.
            "http://files.example.com/upload",
        ],
    );
}

#[test]
fn the_restriction_does_not_depend_on_the_order_of_the_builder_calls() {
    check(
        layer()
            .allow_host("files.example.com")
            .for_space(&example_space()),
        &[
            "https://example.signalwire.com/api",
            "https://files.example.com/upload",
        ],
        &["https://other.example.com/upload"],
    );
}

#[test]
fn clones_of_the_service_keep_the_rule() {
    let service = layer().for_space(&example_space()).layer(Echo::default());
    let mut clone = service.clone();
    let refused = call_now(
        &mut clone,
        Request::get("https://other.signalwire.com/")
            .body(())
            .unwrap(),
    );
    common::assert_refused(&refused.unwrap_err());
    let allowed = call_now(
        &mut clone,
        Request::get("https://example.signalwire.com/")
            .body(())
            .unwrap(),
    );
    assert_eq!(allowed.unwrap().into_body().unwrap(), SEED_HEADER);
    // Clones share the inner `Echo` counter: one call went through.
    assert_eq!(service.get_ref().calls(), 1);
}
