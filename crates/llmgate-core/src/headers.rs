//! Header names llmgate reads, and the hop-by-hop headers a proxy must not
//! forward. Constants, because looking a header up by `&str` parses the
//! name on every request.

use http::header::{self, HeaderName};

/// Request priority (`critical`, `high`, `normal`, `low`, `batch` or 0–4).
pub const X_PRIORITY: HeaderName = HeaderName::from_static("x-priority");
/// Client identity, before the bearer token and the peer address.
pub const X_CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
/// Session key for sticky routing.
pub const X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
/// Per-request timeout, in seconds.
pub const X_REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-request-timeout");

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and
/// are never forwarded. Headers that `Connection` names are hop-by-hop too.
pub static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is one of [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_recognised_and_end_to_end_ones_are_not() {
        assert!(is_hop_by_hop(&header::TRANSFER_ENCODING));
        assert!(is_hop_by_hop(&HeaderName::from_static("keep-alive")));
        assert!(!is_hop_by_hop(&header::CONTENT_TYPE));
        assert!(!is_hop_by_hop(&X_PRIORITY));
    }
}
