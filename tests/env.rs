//! `Credentials::from_env` and `Space::from_env`.
//!
//! Edition 2024 makes changing the environment `unsafe`: another thread reading it at the same
//! time is undefined behaviour. So every change lives in this test binary, which has exactly one
//! test, and that test starts no threads (no runtime, no spawned work) while it changes it.

use signalwire_auth::{API_TOKEN_ENV, Credentials, Error, PROJECT_ID_ENV, SPACE_ENV, Space};

const PROJECT_ID: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
const API_TOKEN: &str = "PTenv-secret-5a0c9e7d";

fn set(name: &str, value: Option<&str>) {
    // SAFETY: this is the only test in this binary and it runs no other thread, so nothing reads
    // or writes the environment concurrently (see the module docs).
    unsafe {
        match value {
            Some(value) => std::env::set_var(name, value),
            None => std::env::remove_var(name),
        }
    }
}

#[track_caller]
fn assert_names(err: Error, variable: &str) {
    assert!(err.is_invalid_input(), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(variable),
        "{message:?} should name {variable}"
    );
    assert!(!message.contains(API_TOKEN), "{message:?}");
    assert!(!format!("{err:?}").contains(API_TOKEN));
}

#[test]
fn from_env_reads_the_variables_and_names_the_one_at_fault() {
    assert_eq!(PROJECT_ID_ENV, "SIGNALWIRE_PROJECT_ID");
    assert_eq!(API_TOKEN_ENV, "SIGNALWIRE_API_TOKEN");
    assert_eq!(SPACE_ENV, "SIGNALWIRE_SPACE");

    // Both set.
    set(PROJECT_ID_ENV, Some(PROJECT_ID));
    set(API_TOKEN_ENV, Some(API_TOKEN));
    let creds = Credentials::from_env().unwrap();
    assert_eq!(creds.project_id(), PROJECT_ID);
    assert!(!format!("{creds:?}").contains(API_TOKEN));

    // One missing.
    set(PROJECT_ID_ENV, None);
    assert_names(Credentials::from_env().unwrap_err(), PROJECT_ID_ENV);
    set(PROJECT_ID_ENV, Some(PROJECT_ID));
    set(API_TOKEN_ENV, None);
    assert_names(Credentials::from_env().unwrap_err(), API_TOKEN_ENV);

    // One empty.
    set(API_TOKEN_ENV, Some(""));
    assert_names(Credentials::from_env().unwrap_err(), API_TOKEN_ENV);
    set(API_TOKEN_ENV, Some(API_TOKEN));
    set(PROJECT_ID_ENV, Some(""));
    assert_names(Credentials::from_env().unwrap_err(), PROJECT_ID_ENV);

    // Both missing: the Project ID is read, and reported, first.
    set(PROJECT_ID_ENV, None);
    set(API_TOKEN_ENV, None);
    assert_names(Credentials::from_env().unwrap_err(), PROJECT_ID_ENV);

    // Set but not acceptable as credentials: refused like `Credentials::new` refuses it.
    set(PROJECT_ID_ENV, Some("a:b"));
    set(API_TOKEN_ENV, Some(API_TOKEN));
    let err = Credentials::from_env().unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    assert!(!err.to_string().contains(API_TOKEN));

    // The space: a name, a host or a URL.
    for (value, url) in [
        ("example", "https://example.signalwire.com"),
        (" example.signalwire.com ", "https://example.signalwire.com"),
        (
            "https://example.signalwire.com",
            "https://example.signalwire.com",
        ),
        ("http://127.0.0.1:4010", "http://127.0.0.1:4010"),
    ] {
        set(SPACE_ENV, Some(value));
        assert_eq!(Space::from_env().unwrap().url(), url, "{value:?}");
    }
    set(SPACE_ENV, Some("http://example.signalwire.com"));
    assert!(Space::from_env().unwrap_err().is_invalid_input());
    set(SPACE_ENV, None);
    assert_names(Space::from_env().unwrap_err(), SPACE_ENV);

    set(PROJECT_ID_ENV, None);
    set(API_TOKEN_ENV, None);
}
