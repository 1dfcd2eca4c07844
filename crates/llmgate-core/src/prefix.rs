//! Prefix block hashes: a prompt as a chain of fixed-size block hashes.
//!
//! Block `i`'s hash covers its own bytes *and* the hash of block `i - 1`, so
//! two prompts share the first `n` hashes exactly when they share their first
//! `n` blocks. Only full blocks are hashed (as vLLM's prefix cache does), so a
//! balancer can match shared prefixes without holding prompt text.

/// Default block size in characters of prompt text: 64 characters, about the
/// 16 tokens of a vLLM KV block under the chars/4 estimate.
pub const DEFAULT_BLOCK_CHARS: usize = 64;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hash of one block chained onto its parent's hash. Stable across processes
/// and versions (FNV-1a with a final avalanche), so a simulator and a
/// balancer can agree on it.
pub fn chain_hash(parent: u64, block: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ parent.wrapping_mul(FNV_PRIME);
    for &b in block {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // splitmix64 finaliser: spreads FNV's weak low bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Chained hashes of the full `block_chars`-character blocks of `text`.
pub fn text_block_hashes(text: &str, block_chars: usize) -> Vec<u64> {
    let block_chars = block_chars.max(1);
    // A character is at least one byte: a text shorter in bytes than a
    // block has no full block (most chat turns and short prompts).
    if text.len() < block_chars {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(text.len() / block_chars);
    let mut parent = 0u64;
    if text.is_ascii() {
        // One byte per character: blocks are plain byte chunks.
        for block in text.as_bytes().chunks_exact(block_chars) {
            parent = chain_hash(parent, block);
            out.push(parent);
        }
        return out;
    }
    let mut start = 0usize;
    let mut count = 0usize;
    for (i, c) in text.char_indices() {
        count += 1;
        if count == block_chars {
            let end = i + c.len_utf8();
            parent = chain_hash(parent, &text.as_bytes()[start..end]);
            out.push(parent);
            start = end;
            count = 0;
        }
    }
    out
}

/// Chained hashes of the full `block_tokens`-token blocks of a token-id
/// prompt.
pub fn token_block_hashes(tokens: &[u32], block_tokens: usize) -> Vec<u64> {
    let block_tokens = block_tokens.max(1);
    let mut parent = 0u64;
    tokens
        .chunks_exact(block_tokens)
        .map(|block| {
            let bytes: Vec<u8> = block.iter().flat_map(|t| t.to_le_bytes()).collect();
            parent = chain_hash(parent, &bytes);
            parent
        })
        .collect()
}

/// Length of the common leading run of two hash chains.
pub fn shared_prefix_blocks(a: &[u64], b: &[u64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_prefixes_equal_hashes_then_diverge_after_first_differing_block() {
        let base: String = (0..10).map(|i| format!("{i:0>64}")).collect();
        let mut other = base.clone();
        // Change one character inside block 4 (chars 256..320).
        other.replace_range(300..301, "X");
        let a = text_block_hashes(&base, 64);
        let b = text_block_hashes(&other, 64);
        assert_eq!(a.len(), 10);
        assert_eq!(a, text_block_hashes(&base, 64), "deterministic");
        assert_eq!(&a[..4], &b[..4]);
        for i in 4..10 {
            assert_ne!(a[i], b[i], "block {i} must differ once the chain diverged");
        }
        assert_eq!(shared_prefix_blocks(&a, &b), 4);
    }

    #[test]
    fn only_full_blocks_and_multibyte_safe() {
        assert!(text_block_hashes("short", 64).is_empty());
        let s = "ü".repeat(130);
        assert_eq!(text_block_hashes(&s, 64).len(), 2);
        // The ASCII shortcut hashes the same blocks as the per-character walk.
        let ascii: String = (0..200)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mixed = format!("{ascii}ü");
        assert_eq!(
            text_block_hashes(&ascii, 64),
            text_block_hashes(&mixed, 64)[..3]
        );
        assert_eq!(text_block_hashes(&ascii, 64).len(), 3);
        let t: Vec<u32> = (0..40).collect();
        assert_eq!(token_block_hashes(&t, 16).len(), 2);
        assert_eq!(
            token_block_hashes(&t, 16)[0],
            token_block_hashes(&t[..16], 16)[0]
        );
    }
}
