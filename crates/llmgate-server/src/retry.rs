//! The retry layer of the stack.

use crate::config::Config;

/// The retry layer, when `[retry]` enables it. (The retry crate is being
/// integrated: until then this is the identity layer and `[retry]` only
/// documents intent.)
pub fn retry_layer(config: &Config) -> Option<tower::layer::util::Identity> {
    config.retry.enabled.then(tower::layer::util::Identity::new)
}
