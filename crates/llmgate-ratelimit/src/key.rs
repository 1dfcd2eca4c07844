//! What the limiter learns from a request: its key ([`KeyExtractor`]) and
//! its token cost ([`TokenCost`]).

use llmgate_core::{ClientKey, RequestMeta};

/// Picks the bucket a request is charged to.
///
/// Implemented for closures `Fn(&Req) -> K`; the HTTP default is
/// [`MetaClientKey`].
pub trait KeyExtractor<Req> {
    /// The key type.
    type Key;

    /// The key of `req`.
    fn extract(&self, req: &Req) -> Self::Key;
}

impl<Req, K, F> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> K,
{
    type Key = K;

    fn extract(&self, req: &Req) -> K {
        self(req)
    }
}

/// The HTTP default key: the [`ClientKey`] of the request's [`RequestMeta`]
/// (set by `MetaLayer` or user code); a request without one is
/// [`ClientKey::anonymous`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MetaClientKey;

impl<B> KeyExtractor<http::Request<B>> for MetaClientKey {
    type Key = ClientKey;

    fn extract(&self, req: &http::Request<B>) -> ClientKey {
        req.extensions()
            .get::<RequestMeta>()
            .map(|m| m.client.clone())
            .unwrap_or_else(ClientKey::anonymous)
    }
}

/// The token cost of a request, charged to the tokens limit before the
/// request runs and settled later against actual usage.
///
/// Implemented for closures `Fn(&Req) -> u64`; the HTTP default is
/// [`MetaTokenCost`].
pub trait TokenCost<Req> {
    /// Estimated tokens `req` will use (prompt plus completion).
    fn tokens(&self, req: &Req) -> u64;
}

impl<Req, F> TokenCost<Req> for F
where
    F: Fn(&Req) -> u64,
{
    fn tokens(&self, req: &Req) -> u64 {
        self(req)
    }
}

/// Default `max_tokens` assumed for requests that name none.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// The HTTP default cost: [`RequestMeta::prompt_tokens`] plus `max_tokens`
/// (or a configurable default when the request names none). A request
/// without `RequestMeta` costs the default `max_tokens` alone.
#[derive(Debug, Clone, Copy)]
pub struct MetaTokenCost {
    default_max_tokens: u32,
}

impl MetaTokenCost {
    /// A cost assuming `default_max_tokens` for requests that name none.
    pub const fn new(default_max_tokens: u32) -> MetaTokenCost {
        MetaTokenCost { default_max_tokens }
    }

    /// The assumed `max_tokens` of requests that name none.
    pub const fn default_max_tokens(&self) -> u32 {
        self.default_max_tokens
    }
}

impl Default for MetaTokenCost {
    fn default() -> Self {
        MetaTokenCost::new(DEFAULT_MAX_TOKENS)
    }
}

impl<B> TokenCost<http::Request<B>> for MetaTokenCost {
    fn tokens(&self, req: &http::Request<B>) -> u64 {
        match req.extensions().get::<RequestMeta>() {
            Some(meta) => meta.estimated_total_tokens(self.default_max_tokens),
            None => u64::from(self.default_max_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgate_core::EndpointKind;

    #[test]
    fn http_defaults_read_request_meta() {
        let mut meta = RequestMeta::new(EndpointKind::Chat).with_client(ClientKey::from_id("t"));
        meta.prompt_tokens = 100;
        meta.max_tokens = Some(50);
        let mut req = http::Request::new(());
        req.extensions_mut().insert(meta);
        assert_eq!(MetaClientKey.extract(&req), ClientKey::from_id("t"));
        assert_eq!(MetaTokenCost::new(7).tokens(&req), 150);
        req.extensions_mut()
            .get_mut::<RequestMeta>()
            .unwrap()
            .max_tokens = None;
        assert_eq!(MetaTokenCost::new(7).tokens(&req), 107);

        let bare = http::Request::new(());
        assert_eq!(MetaClientKey.extract(&bare), ClientKey::anonymous());
        assert_eq!(MetaTokenCost::new(7).tokens(&bare), 7);
    }
}
