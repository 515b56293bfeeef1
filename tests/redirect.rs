//! Redirects and credentials: with `FollowRedirectLayer` *inside* `BasicAuthLayer` (the documented
//! order), a redirect that leaves the space's origin arrives without the `Authorization` header.
//!
//! Why the order matters: `BasicAuth` adds the header once, to the request it is given. Inside
//! it, `FollowRedirect` builds each hop from that request and its `FilterCredentials` policy
//! removes `Authorization` when the hop changes origin, so the foreign server never sees it.
//! Put the other way round (`FollowRedirect` outside), every hop goes through `BasicAuth` again,
//! which puts the header right back on the request to the foreign origin: the redirect filter
//! runs *before* the header exists and cannot strip it. The last two tests show that leak, and
//! that `for_space` turns it into a refusal.

mod common;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use common::{SEED_HEADER, TestServer};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use signalwire_auth::BasicAuthLayer;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::FollowRedirectLayer;

/// Two servers on 127.0.0.1: the space, and a foreign origin on another port.
struct Servers {
    space: TestServer,
    foreign: TestServer,
}

async fn servers() -> Servers {
    // The foreign server answers `/back` by redirecting to the space, whose port is only known
    // once the space is up.
    let back_to_space = Arc::new(OnceLock::<String>::new());
    let foreign = TestServer::start({
        let back_to_space = Arc::clone(&back_to_space);
        move |seen| match (seen.target.as_str(), back_to_space.get()) {
            ("/back", Some(location)) => common::redirect(302, location),
            _ => common::respond(200, "foreign"),
        }
    })
    .await;
    let to_foreign = foreign.url("/landed");
    let to_foreign_and_back = foreign.url("/back");
    let space = TestServer::start(move |seen| match seen.target.as_str() {
        "/cross" => common::redirect(302, &to_foreign),
        "/cross-and-back" => common::redirect(307, &to_foreign_and_back),
        "/same" => common::redirect(302, "/final"),
        "/same-absolute" => match &seen.host {
            Some(host) => common::redirect(301, &format!("http://{host}/final")),
            None => common::respond(400, "no host"),
        },
        "/final" => common::respond(200, "final"),
        _ => common::respond(404, ""),
    })
    .await;
    back_to_space
        .set(space.url("/final"))
        .expect("set only here");
    Servers { space, foreign }
}

/// The documented order: `BasicAuthLayer` outside, `FollowRedirectLayer` inside.
fn documented_order(
    space: &TestServer,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Incoming>, Error = BoxError> + Clone {
    ServiceBuilder::new()
        .layer(BasicAuthLayer::new(common::seed_credentials()).for_space(&space.space()))
        .layer(FollowRedirectLayer::new())
        .service(common::http_client())
}

/// The wrong order: `FollowRedirectLayer` outside, so every hop goes through `layer`.
fn wrong_order(
    layer: BasicAuthLayer,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Incoming>, Error = BoxError> + Clone {
    ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(layer)
        .service(common::http_client())
}

fn seed() -> Option<String> {
    Some(SEED_HEADER.to_owned())
}

#[tokio::test]
async fn a_cross_origin_redirect_arrives_without_the_header() {
    let Servers { space, foreign } = servers().await;
    let client = documented_order(&space);

    let answer = common::fetch(&client, common::get(space.url("/cross"))).await;
    assert_eq!(answer, (StatusCode::OK, "foreign".to_owned()));

    assert_eq!(space.authorizations(), [seed()]);
    let seen = foreign.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/landed");
    assert_eq!(
        seen[0].authorization, None,
        "credentials leaked cross-origin"
    );
}

#[tokio::test]
async fn a_same_origin_redirect_keeps_the_header() {
    let Servers { space, foreign } = servers().await;
    let client = documented_order(&space);

    for start in ["/same", "/same-absolute"] {
        let answer = common::fetch(&client, common::get(space.url(start))).await;
        assert_eq!(answer.1, "final");
    }

    let targets: Vec<_> = space.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/same", "/final", "/same-absolute", "/final"]);
    assert_eq!(space.authorizations(), vec![seed(); 4]);
    assert!(foreign.seen().is_empty());
}

#[tokio::test]
async fn credentials_stripped_on_leaving_the_origin_do_not_come_back() {
    let Servers { space, foreign } = servers().await;
    let client = documented_order(&space);

    // space /cross-and-back → foreign /back → space /final.
    let answer = common::fetch(&client, common::get(space.url("/cross-and-back"))).await;
    assert_eq!(answer.1, "final");

    assert_eq!(foreign.authorizations(), [None]);
    assert_eq!(
        space.authorizations(),
        [seed(), None],
        "the hop back to the space is built from the stripped request"
    );
}

/// Documents the hazard: in the wrong order the foreign server gets the credentials.
#[tokio::test]
async fn the_wrong_order_leaks_the_header_to_the_foreign_origin() {
    let Servers { space, foreign } = servers().await;
    let client = wrong_order(BasicAuthLayer::new(common::seed_credentials()));

    let answer = common::fetch(&client, common::get(space.url("/cross"))).await;
    assert_eq!(answer.1, "foreign");
    assert_eq!(
        foreign.authorizations(),
        [seed()],
        "BasicAuth re-adds the header on every hop when it sits inside FollowRedirect"
    );
}

/// In the wrong order, `for_space` still keeps the credentials home: the hop is refused.
#[tokio::test]
async fn the_wrong_order_with_for_space_refuses_the_foreign_hop() {
    let Servers { space, foreign } = servers().await;
    let client =
        wrong_order(BasicAuthLayer::new(common::seed_credentials()).for_space(&space.space()));

    let err = client
        .oneshot(common::get(space.url("/cross")))
        .await
        .unwrap_err();
    common::assert_refused(&err);
    assert!(foreign.seen().is_empty());
    assert_eq!(space.authorizations(), [seed()]);
}
