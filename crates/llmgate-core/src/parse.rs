//! Parsing the OpenAI-shaped JSON bodies of completions, chat and embeddings.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::prefix::{text_block_hashes, token_block_hashes};
use crate::scan::scan_envelope;
use crate::{EndpointKind, MetaError, TokenEstimator};

/// What llmgate learns from a request body.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ParsedBody {
    /// `model`
    pub model: Option<String>,
    /// `stream`
    pub stream: bool,
    /// `max_tokens`, else `max_completion_tokens`
    pub max_tokens: Option<u32>,
    /// `user`
    pub user: Option<String>,
    /// Estimated prompt tokens.
    pub prompt_tokens: u32,
    /// Chained prefix block hashes.
    pub prefix_hashes: Vec<u64>,
}

/// The fields llmgate reads. Strings borrow from the body where they hold no
/// escapes: most are read once and then copied into shared storage.
#[derive(Deserialize, Default)]
pub(crate) struct Envelope<'a> {
    #[serde(borrow)]
    pub(crate) model: Option<Cow<'a, str>>,
    pub(crate) stream: Option<bool>,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) max_completion_tokens: Option<u32>,
    #[serde(borrow)]
    pub(crate) user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) prompt: Option<PromptField<'a>>,
    pub(crate) messages: Option<Value>,
    /// The prompt text of `messages`, when the scanner built it directly
    /// (then `messages` stays `None`).
    #[serde(skip)]
    pub(crate) chat_text: Option<String>,
    #[serde(borrow)]
    pub(crate) input: Option<PromptField<'a>>,
}

/// A `prompt`/`input` value as read: a string stays a slice of the body
/// when it has no escapes (the prompt is only measured and hashed, so it
/// need not be copied), anything else becomes a [`Value`] as before.
pub(crate) enum PromptField<'a> {
    Str(Cow<'a, str>),
    Other(Value),
}

impl<'de: 'a, 'a> Deserialize<'de> for PromptField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PromptFieldVisitor(std::marker::PhantomData))
    }
}

struct PromptFieldVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for PromptFieldVisitor<'a> {
    type Value = PromptField<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(PromptField::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PromptField::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(PromptField::Str(Cow::Owned(v)))
    }

    // The rest as `Value`'s own visitor builds them.
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PromptField::Other(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(PromptField::Other(Value::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(PromptField::Other(Value::Number(v.into())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(PromptField::Other(Value::from(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(PromptField::Other(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(PromptField::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(PromptField::Other)
    }
}

/// Prompt of a request: text, or token ids when the client sent ids.
enum Prompt<'a> {
    Text(Cow<'a, str>),
    Tokens(Vec<u32>),
}

fn invalid(msg: impl Into<String>) -> MetaError {
    MetaError::InvalidJson(msg.into())
}

/// Parses `body` for `kind`. `block_chars` is the prefix block size in
/// characters; token-id prompts use blocks of `block_chars / 4` ids.
pub fn parse_body(
    kind: EndpointKind,
    body: &[u8],
    estimator: &dyn TokenEstimator,
    block_chars: usize,
) -> Result<ParsedBody, MetaError> {
    let p = parse_borrowed(kind, body, estimator, Some(block_chars))?;
    Ok(ParsedBody {
        model: p.model.map(Cow::into_owned),
        stream: p.stream,
        max_tokens: p.max_tokens,
        user: p.user.map(Cow::into_owned),
        prompt_tokens: p.prompt_tokens,
        prefix_hashes: p.prefix_hashes,
    })
}

/// [`ParsedBody`] with its strings still borrowed from the body where
/// they hold no escapes, so a caller that stores them elsewhere copies once.
#[derive(Debug, Default)]
pub(crate) struct Parsed<'a> {
    pub(crate) model: Option<Cow<'a, str>>,
    pub(crate) stream: bool,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) user: Option<Cow<'a, str>>,
    pub(crate) prompt_tokens: u32,
    pub(crate) prefix_hashes: Vec<u64>,
}

/// [`parse_body`] without the owned copies, and without prefix hashes when
/// `block_chars` is `None`.
pub(crate) fn parse_borrowed<'a>(
    kind: EndpointKind,
    body: &'a [u8],
    estimator: &dyn TokenEstimator,
    block_chars: Option<usize>,
) -> Result<Parsed<'a>, MetaError> {
    let mut env = Envelope::default();
    if !scan_envelope(body, &mut env) {
        env = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    }
    let prompt = match kind {
        EndpointKind::Completions => {
            let p = env
                .prompt
                .ok_or_else(|| invalid("missing field `prompt`"))?;
            text_or_tokens(p, "prompt")?
        }
        EndpointKind::Chat => match env.chat_text {
            Some(text) => Prompt::Text(Cow::Owned(text)),
            None => {
                let m = env
                    .messages
                    .ok_or_else(|| invalid("missing field `messages`"))?;
                Prompt::Text(Cow::Owned(chat_text(&m)?))
            }
        },
        EndpointKind::Embeddings => {
            let i = env.input.ok_or_else(|| invalid("missing field `input`"))?;
            text_or_tokens(i, "input")?
        }
        EndpointKind::Other => Prompt::Text(Cow::Borrowed("")),
    };
    let (prompt_tokens, prefix_hashes) = match (&prompt, block_chars) {
        (Prompt::Text(t), Some(chars)) => (estimator.estimate(t), text_block_hashes(t, chars)),
        (Prompt::Text(t), None) => (estimator.estimate(t), Vec::new()),
        (Prompt::Tokens(ids), chars) => (
            ids.len().min(u32::MAX as usize) as u32,
            chars.map_or_else(Vec::new, |c| token_block_hashes(ids, (c / 4).max(1))),
        ),
    };
    Ok(Parsed {
        model: env.model,
        stream: env.stream.unwrap_or(false),
        max_tokens: env.max_tokens.or(env.max_completion_tokens),
        user: env.user,
        prompt_tokens,
        prefix_hashes,
    })
}

/// A `prompt`/`input` field: a string, an array of strings, an array of token
/// ids, or an array of token-id arrays. Takes the value so a string prompt
/// is moved out, not copied.
fn text_or_tokens<'a>(v: PromptField<'a>, field: &str) -> Result<Prompt<'a>, MetaError> {
    let shape_err = || {
        invalid(format!(
            "`{field}` must be a string, an array of strings, an array of token ids or an array of token-id arrays"
        ))
    };
    let v = match v {
        PromptField::Str(s) => return Ok(Prompt::Text(s)),
        PromptField::Other(v) => v,
    };
    match v {
        Value::String(s) => Ok(Prompt::Text(Cow::Owned(s))),
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(Prompt::Text(Cow::Owned(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
        ))),
        Value::Array(items) => {
            let mut ids = Vec::new();
            for item in items {
                match item {
                    Value::Number(_) => ids.push(token_id(&item).ok_or_else(shape_err)?),
                    Value::Array(inner) => {
                        for t in inner {
                            ids.push(token_id(&t).ok_or_else(shape_err)?);
                        }
                    }
                    _ => return Err(shape_err()),
                }
            }
            Ok(Prompt::Tokens(ids))
        }
        _ => Err(shape_err()),
    }
}

fn token_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// The text of a chat `messages` array: each message's role and content,
/// multi-part content reduced to its text parts.
pub(crate) fn chat_text(v: &Value) -> Result<String, MetaError> {
    let messages = v
        .as_array()
        .ok_or_else(|| invalid("`messages` must be an array"))?;
    let mut out = String::new();
    for (i, m) in messages.iter().enumerate() {
        let obj = m
            .as_object()
            .ok_or_else(|| invalid(format!("`messages[{i}]` must be an object")))?;
        let role = obj.get("role").and_then(Value::as_str).unwrap_or("user");
        out.push_str("<|");
        out.push_str(role);
        out.push_str("|>");
        match obj.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    match part {
                        Value::String(s) => out.push_str(s),
                        Value::Object(p) => {
                            if let Some(t) = p.get("text").and_then(Value::as_str) {
                                out.push_str(t);
                            }
                        }
                        _ => {
                            return Err(invalid(format!(
                                "`messages[{i}].content[{j}]` must be an object or a string"
                            )))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(invalid(format!(
                    "`messages[{i}].content` must be a string or an array of parts"
                )))
            }
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CharsPerToken;

    fn parse(kind: EndpointKind, body: &str) -> Result<ParsedBody, MetaError> {
        parse_body(kind, body.as_bytes(), &CharsPerToken::default(), 64)
    }

    #[test]
    fn completion_string_and_token_prompts() {
        let p = parse(
            EndpointKind::Completions,
            r#"{"model":"m","prompt":"abcdefgh","max_tokens":7,"stream":true}"#,
        )
        .unwrap();
        assert_eq!(p.model.as_deref(), Some("m"));
        assert_eq!(
            (p.prompt_tokens, p.max_tokens, p.stream),
            (2, Some(7), true)
        );
        let ids: Vec<u32> = (0..40).collect();
        let body = serde_json::json!({"model":"m","prompt": ids}).to_string();
        let p = parse(EndpointKind::Completions, &body).unwrap();
        assert_eq!(p.prompt_tokens, 40);
        assert_eq!(p.prefix_hashes.len(), 2);
    }

    #[test]
    fn chat_concatenates_messages_and_text_parts() {
        let simple = parse(
            EndpointKind::Chat,
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"}],"user":"u1","max_completion_tokens":5}"#,
        )
        .unwrap();
        assert_eq!(simple.user.as_deref(), Some("u1"));
        assert_eq!(simple.max_tokens, Some(5));
        // "<|system|>be brief\n<|user|>hello\n" is 33 characters: 9 tokens.
        assert_eq!(simple.prompt_tokens, 9);

        let multi = parse(
            EndpointKind::Chat,
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hel"},{"type":"image_url","image_url":{"url":"http://x"}},{"type":"text","text":"lo"}]}]}"#,
        )
        .unwrap();
        assert_eq!(multi.prompt_tokens, simple.prompt_tokens);
    }

    #[test]
    fn embeddings_inputs() {
        let p = parse(
            EndpointKind::Embeddings,
            r#"{"model":"e","input":["abcd","efgh"]}"#,
        )
        .unwrap();
        assert_eq!(p.prompt_tokens, 3); // "abcd\nefgh" = 9 chars
        let p = parse(
            EndpointKind::Embeddings,
            r#"{"model":"e","input":[[1,2,3],[4]]}"#,
        )
        .unwrap();
        assert_eq!(p.prompt_tokens, 4);
    }

    #[test]
    fn string_prompts_with_and_without_escapes_read_the_same_text() {
        let text =
            "line one \"quoted\"\nline two\t\u{e9}\u{1f600} and some more words to fill a block";
        let escaped = serde_json::json!({ "prompt": text, "input": text }).to_string();
        assert!(escaped.contains("\\\""), "{escaped}");
        let expected = (
            CharsPerToken::default().estimate(text),
            text_block_hashes(text, 64),
        );
        for kind in [EndpointKind::Completions, EndpointKind::Embeddings] {
            let p = parse(kind, &escaped).unwrap();
            assert_eq!((p.prompt_tokens, p.prefix_hashes), expected.clone());
        }
        // No escapes: the text is read in place.
        let plain = "a plain prompt with nothing to unescape, long enough for a block or two";
        let body = format!(r#"{{"model":"m","prompt":"{plain}","temperature":0}}"#);
        let p = parse(EndpointKind::Completions, &body).unwrap();
        assert_eq!(
            (p.prompt_tokens, p.prefix_hashes),
            (
                CharsPerToken::default().estimate(plain),
                text_block_hashes(plain, 64)
            )
        );
    }

    #[test]
    fn prompts_of_other_shapes_are_refused_as_before() {
        let shape = "`prompt` must be a string, an array of strings, an array of token ids or an array of token-id arrays";
        for prompt in [
            "5",
            "-5",
            "1.5",
            "true",
            "{\"a\":[1]}",
            "[1,\"a\"]",
            "[[1],[true]]",
            "[-1]",
        ] {
            let body = format!(r#"{{"prompt":{prompt}}}"#);
            match parse(EndpointKind::Completions, &body).unwrap_err() {
                MetaError::InvalidJson(m) => assert_eq!(m, shape, "{body}"),
                e => panic!("{body}: {e}"),
            }
        }
        match parse(EndpointKind::Completions, r#"{"prompt":null}"#).unwrap_err() {
            MetaError::InvalidJson(m) => assert_eq!(m, "missing field `prompt`"),
            e => panic!("{e}"),
        }
        // Malformed JSON inside the field is a JSON error, as before.
        let e = parse(EndpointKind::Completions, r#"{"prompt":[1,}"#).unwrap_err();
        let want = serde_json::from_str::<serde_json::Value>(r#"{"prompt":[1,}"#)
            .unwrap_err()
            .to_string();
        assert!(
            matches!(e, MetaError::InvalidJson(ref m) if *m == want),
            "{e}"
        );
        // Arrays of strings and of token ids still read.
        let p = parse(EndpointKind::Completions, r#"{"prompt":["ab","cd"]}"#).unwrap();
        assert_eq!(p.prompt_tokens, CharsPerToken::default().estimate("ab\ncd"));
        let p = parse(EndpointKind::Completions, r#"{"prompt":[[1,2],[3]]}"#).unwrap();
        assert_eq!(p.prompt_tokens, 3);
    }

    #[test]
    fn malformed_and_wrong_shapes_are_errors() {
        for (kind, body) in [
            (EndpointKind::Chat, "{not json"),
            (EndpointKind::Chat, r#"{"model":"m"}"#),
            (EndpointKind::Chat, r#"{"messages":"hi"}"#),
            (
                EndpointKind::Chat,
                r#"{"messages":[{"role":"user","content":5}]}"#,
            ),
            (EndpointKind::Completions, r#"{"prompt":{"a":1}}"#),
            (
                EndpointKind::Completions,
                r#"{"prompt":"x","stream":"yes"}"#,
            ),
            (
                EndpointKind::Completions,
                r#"{"prompt":"x","max_tokens":-3}"#,
            ),
            (EndpointKind::Embeddings, r#"{"input":[1,"a"]}"#),
        ] {
            let e = parse(kind, body).unwrap_err();
            assert!(matches!(e, MetaError::InvalidJson(_)), "{body}: {e}");
        }
    }
}
