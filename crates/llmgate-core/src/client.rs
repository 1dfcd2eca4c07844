//! Who a request comes from: [`ClientKey`].

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// Longest `x-client-id` kept verbatim; longer ids are hashed so that a key
/// map cannot be bloated by huge header values.
const MAX_CLIENT_ID: usize = 128;

/// The identity used for rate limits and fairness.
///
/// Built, in order of precedence, from the `x-client-id` header, a keyed hash
/// of the `Authorization: Bearer` token (the raw token is never stored, so it
/// can never reach a log line or a metric), the peer address, or
/// `"anonymous"`. A client key must never become a metric label: it is
/// unbounded.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(Arc<str>);

/// The peer address of the connection a request came in on. Servers insert it
/// into request extensions; [`ClientKey::from_parts`] uses it as a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

fn key_hasher() -> &'static std::collections::hash_map::RandomState {
    // A per-process random key: a leaked client key cannot be brute-forced
    // back to the bearer token offline.
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

fn keyed_hash(bytes: &[u8]) -> u64 {
    let mut h = key_hasher().build_hasher();
    h.write(bytes);
    h.finish()
}

impl ClientKey {
    /// The key of requests that carry no identity at all.
    pub fn anonymous() -> ClientKey {
        ClientKey(Arc::from("anonymous"))
    }

    /// A key from an explicit client id (the `x-client-id` header).
    pub fn from_id(id: &str) -> ClientKey {
        if id.len() > MAX_CLIENT_ID {
            ClientKey(Arc::from(format!("id#{:016x}", keyed_hash(id.as_bytes()))))
        } else {
            ClientKey(Arc::from(format!("id:{id}")))
        }
    }

    /// A key from an API key. Only a keyed hash of `token` is kept.
    pub fn from_bearer(token: &str) -> ClientKey {
        ClientKey(Arc::from(format!(
            "key:{:016x}",
            keyed_hash(token.as_bytes())
        )))
    }

    /// A key from the peer's IP address (the port is ignored).
    pub fn from_peer(addr: SocketAddr) -> ClientKey {
        // Requests mostly come from a few peers (a load balancer, a few
        // services): remember the last key per thread instead of formatting
        // the address for every request.
        thread_local! {
            static LAST: std::cell::RefCell<Option<(std::net::IpAddr, ClientKey)>> =
                const { std::cell::RefCell::new(None) };
        }
        let ip = addr.ip();
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((seen, key)) if *seen == ip => key.clone(),
                _ => {
                    let key = ClientKey(Arc::from(format!("ip:{ip}")));
                    *last = Some((ip, key.clone()));
                    key
                }
            }
        })
    }

    /// The key by precedence: `x-client-id`, bearer token, peer address,
    /// anonymous.
    pub fn from_parts(headers: &http::HeaderMap, extensions: &http::Extensions) -> ClientKey {
        ClientKey::from_values(
            headers.get(&crate::headers::X_CLIENT_ID),
            headers.get(http::header::AUTHORIZATION),
            extensions,
        )
    }

    /// [`from_parts`](Self::from_parts) with the first `x-client-id` and
    /// `Authorization` values already looked up.
    pub(crate) fn from_values(
        client_id: Option<&http::HeaderValue>,
        authorization: Option<&http::HeaderValue>,
        extensions: &http::Extensions,
    ) -> ClientKey {
        if let Some(id) = client_id
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            return ClientKey::from_id(id);
        }
        if let Some(token) = authorization.and_then(bearer_of) {
            return ClientKey::from_bearer(token);
        }
        if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
            return ClientKey::from_peer(*addr);
        }
        ClientKey::anonymous()
    }

    /// The key as text (`id:…`, `key:…`, `ip:…` or `anonymous`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The token of an `Authorization: Bearer …` header, if any.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    bearer_of(headers.get(http::header::AUTHORIZATION)?)
}

fn bearer_of(v: &http::HeaderValue) -> Option<&str> {
    let v = v.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Default for ClientKey {
    fn default() -> Self {
        ClientKey::anonymous()
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({})", self.0)
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn precedence_id_then_bearer_then_peer_then_anonymous() {
        let mut ext = http::Extensions::new();
        ext.insert(PeerAddr("10.0.0.7:5555".parse().unwrap()));
        let all = headers(&[("x-client-id", "team-a"), ("authorization", "Bearer sk-1")]);
        assert_eq!(ClientKey::from_parts(&all, &ext).as_str(), "id:team-a");

        let bearer = headers(&[("authorization", "Bearer sk-1")]);
        let k = ClientKey::from_parts(&bearer, &ext);
        assert!(k.as_str().starts_with("key:"), "{k}");
        assert_eq!(k, ClientKey::from_bearer("sk-1"));
        assert_ne!(k, ClientKey::from_bearer("sk-2"));

        let none = HeaderMap::new();
        assert_eq!(ClientKey::from_parts(&none, &ext).as_str(), "ip:10.0.0.7");
        assert_eq!(
            ClientKey::from_parts(&none, &http::Extensions::new()),
            ClientKey::anonymous()
        );
    }

    #[test]
    fn bearer_key_never_shown() {
        let secret = "sk-live-THIS-IS-SECRET-123456";
        let h = headers(&[("authorization", &format!("Bearer {secret}"))]);
        let k = ClientKey::from_parts(&h, &http::Extensions::new());
        assert!(!format!("{k:?}").contains(secret));
        assert!(!k.to_string().contains(secret));
        assert!(!k.to_string().contains("SECRET"));
    }

    #[test]
    fn non_bearer_authorization_is_ignored_and_long_ids_are_hashed() {
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(
            ClientKey::from_parts(&h, &http::Extensions::new()),
            ClientKey::anonymous()
        );
        let long = "x".repeat(500);
        let k = ClientKey::from_id(&long);
        assert!(k.as_str().len() < 40);
        assert_eq!(k, ClientKey::from_id(&long));
    }
}
