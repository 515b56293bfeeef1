//! Header values built once and cloned for every request.

use bytes::Bytes;
use http::{HeaderValue, header::InvalidHeaderValue};

/// `value` as a sensitive header value whose clones share one reference-counted buffer, checked
/// once, here. Built from its owner, a clone is one counter increment; `HeaderValue::from_str`
/// copies into a buffer that, on every clone and drop, first checks whether it has been
/// promoted to a shared one.
pub(crate) fn shared_sensitive(value: Vec<u8>) -> Result<HeaderValue, InvalidHeaderValue> {
    let mut header = HeaderValue::from_maybe_shared(Bytes::from_owner(value))?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_sensitive_and_shared() {
        let header = shared_sensitive(b"Bearer abc".to_vec()).unwrap();
        assert!(header.is_sensitive());
        assert_eq!(header, "Bearer abc");
        let clone = header.clone();
        assert_eq!(clone.as_bytes().as_ptr(), header.as_bytes().as_ptr());
        assert!(shared_sensitive(b"Bearer a\nb".to_vec()).is_err());
    }
}
