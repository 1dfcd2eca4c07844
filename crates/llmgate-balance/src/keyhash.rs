//! A fast hasher for maps keyed by names the operator chose (endpoint ids,
//! replica authorities).
//!
//! Those keys come from the configuration and discovery, never from
//! clients, so the maps need no defence against chosen collisions, and
//! std's SipHash cost more than the rest of a lookup on the request path.

use std::hash::{BuildHasherDefault, Hasher};

/// A word-at-a-time multiply-rotate (as in rustc's FxHash), its high bits
/// folded down at the end for the bucket index.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

/// The `BuildHasher` of maps keyed by operator-chosen names.
pub(crate) type TrustedKeys = BuildHasherDefault<KeyHasher>;

impl KeyHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.mix(u64::from(b));
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}
