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
    hop_by_hop_index(name).is_some()
}

/// The index of `name` in [`HOP_BY_HOP`], if it is there.
///
/// Runs on every header field in both directions, so it switches on the
/// length first: most names are ruled out without touching their bytes,
/// and `keep-alive` (a custom name, for which `==` against the list falls
/// back to byte compares) costs no more than the standard ones. Header
/// names are always lower case, so plain byte equality is exact.
pub fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    let s = name.as_str();
    let i = match s.len() {
        2 if s == "te" => 4,
        7 if s == "trailer" => 5,
        7 if s == "upgrade" => 7,
        10 if s == "connection" => 0,
        10 if s == "keep-alive" => 1,
        17 if s == "transfer-encoding" => 6,
        18 if s == "proxy-authenticate" => 2,
        19 if s == "proxy-authorization" => 3,
        _ => return None,
    };
    Some(i)
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

    #[test]
    fn hop_by_hop_index_agrees_with_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
            // The same name parsed from the wire (as the codec does).
            let parsed = HeaderName::from_bytes(name.as_str().to_uppercase().as_bytes()).unwrap();
            assert_eq!(hop_by_hop_index(&parsed), Some(i), "{name}");
        }
        // End-to-end names, including ones as long as a hop-by-hop name
        // (2, 7, 10, 17, 18 and 19 bytes) and near misses.
        for name in [
            "t",
            "tf",
            "tee",
            "trailers",
            "upgrades",
            "referer",
            "x-trace",
            "x-priority",
            "connectiom",
            "keep_alive",
            "keep-alivE",
            "content-location",
            "proxy-connection",
            "transfer-encodinG",
            "transfer-encodings",
            "proxy-authenticatE",
            "proxy-authorizatioN",
            "x-forwarded-for-all",
            "content-type",
            "content-length",
            "host",
            "date",
        ] {
            let parsed = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(
                hop_by_hop_index(&parsed),
                HOP_BY_HOP.iter().position(|h| *h == parsed),
                "{name}"
            );
        }
        for name in [
            header::ACCEPT,
            header::ACCEPT_ENCODING,
            header::AUTHORIZATION,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::DATE,
            header::EXPECT,
            header::HOST,
            header::ORIGIN,
            header::REFERER,
            header::SERVER,
            header::VIA,
            header::WARNING,
            header::X_FRAME_OPTIONS,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ] {
            assert_eq!(hop_by_hop_index(&name), None, "{name}");
        }
    }
}
