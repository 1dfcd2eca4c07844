//! Prompt token estimation.

/// Estimates how many tokens a text costs. Plug a real tokenizer in by
/// implementing this trait; the default is [`CharsPerToken`].
pub trait TokenEstimator: Send + Sync + 'static {
    /// Estimated token count of `text`.
    fn estimate(&self, text: &str) -> u32;
}

/// The rule of thumb for English text with BPE tokenizers: one token per four
/// characters (rounded up, so a non-empty text costs at least one token).
#[derive(Debug, Clone, Copy)]
pub struct CharsPerToken(pub u32);

impl Default for CharsPerToken {
    fn default() -> Self {
        CharsPerToken(4)
    }
}

impl TokenEstimator for CharsPerToken {
    fn estimate(&self, text: &str) -> u32 {
        let chars = text.chars().count() as u64;
        let per = u64::from(self.0.max(1));
        chars.div_ceil(per).min(u64::from(u32::MAX)) as u32
    }
}

impl<F> TokenEstimator for F
where
    F: Fn(&str) -> u32 + Send + Sync + 'static,
{
    fn estimate(&self, text: &str) -> u32 {
        self(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars_over_four_rounded_up() {
        let e = CharsPerToken::default();
        assert_eq!(e.estimate(""), 0);
        assert_eq!(e.estimate("abc"), 1);
        assert_eq!(e.estimate("abcd"), 1);
        assert_eq!(e.estimate("abcde"), 2);
        assert_eq!(e.estimate(&"é".repeat(8)), 2);
        let custom = |s: &str| s.split_whitespace().count() as u32;
        assert_eq!(custom.estimate("a b c"), 3);
    }
}
