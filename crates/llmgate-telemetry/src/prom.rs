//! A small Prometheus text-format (0.0.4) parser.
//!
//! Written here rather than taken from a crate: `prometheus-parse` silently
//! drops every sample whose name holds a colon (`vllm:num_requests_running`),
//! and the parser that does accept colons is LGPL. This one reads what engines
//! and exporters serve:
//!
//! * metric names `[a-zA-Z_:][a-zA-Z0-9_:]*` (colons included), and the
//!   Prometheus 3 quoted form `{"name.with.dots", label="v"}`;
//! * labels with `\\`, `\"` and `\n` escapes, an optional trailing comma;
//! * values as floats, `+Inf`, `-Inf`, `NaN`;
//! * an optional integer timestamp (milliseconds);
//! * `#` lines (`# HELP`, `# TYPE`, `# EOF`, plain comments) and blank lines,
//!   which carry no sample.
//!
//! [`parse`] is lenient: a malformed line is skipped (and nothing panics, on
//! any input). [`parse_line`] reports why one line is malformed.
//!
//! ```
//! let text = "# TYPE vllm:num_requests_running gauge\n\
//!             vllm:num_requests_running{model_name=\"m\",engine=\"0\"} 3\n";
//! let samples = llmgate_telemetry::prom::parse(text);
//! assert_eq!(samples[0].name, "vllm:num_requests_running");
//! assert_eq!(samples[0].label("engine"), Some("0"));
//! assert_eq!(samples[0].value, 3.0);
//! ```

use std::fmt;

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `vllm:num_requests_waiting`.
    pub name: String,
    /// Label pairs in the order they appeared, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value (may be infinite or NaN).
    pub value: f64,
    /// Timestamp in milliseconds since the epoch, when the line carried one.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why one line could not be read as a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The metric name is missing or holds a character not allowed in one.
    #[error("invalid metric name")]
    InvalidName,
    /// A label set is malformed (bad name, missing `=`, unquoted value, bad escape, no `}`).
    #[error("invalid label set: {0}")]
    InvalidLabels(&'static str),
    /// The value is missing or not a number.
    #[error("invalid value")]
    InvalidValue,
    /// The timestamp is not an integer.
    #[error("invalid timestamp")]
    InvalidTimestamp,
    /// Something follows the timestamp.
    #[error("trailing characters")]
    Trailing,
}

/// A [`ParseError`] with the 1-based line number it occurred on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub error: ParseError,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

impl std::error::Error for LineError {}

/// Parses a whole exposition, skipping comments, blank lines and malformed lines.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter_map(|line| parse_line(line).ok().flatten())
        .collect()
}

/// Parses a whole exposition and also returns the malformed lines.
pub fn parse_with_errors(text: &str) -> (Vec<Sample>, Vec<LineError>) {
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(s)) => samples.push(s),
            Ok(None) => {}
            Err(error) => errors.push(LineError { line: i + 1, error }),
        }
    }
    (samples, errors)
}

/// Parses one line: `Ok(None)` for a blank or `#` line, `Ok(Some(_))` for a sample.
pub fn parse_line(line: &str) -> Result<Option<Sample>, ParseError> {
    let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut cur = Cursor { s: line, pos: 0 };
    let mut name = String::new();
    let mut labels = Vec::new();
    // Whether the value is already separated from the name (by `}` or whitespace).
    let mut separated = true;
    if cur.peek() == Some('{') {
        // Prometheus 3 form: the name is a quoted string inside the braces.
        cur.bump();
        cur.skip_ws();
        if cur.peek() != Some('"') {
            return Err(ParseError::InvalidName);
        }
        name = cur.quoted().map_err(|_| ParseError::InvalidName)?;
        cur.skip_ws();
        match cur.peek() {
            Some('}') => {
                cur.bump();
            }
            Some(',') => {
                cur.bump();
                parse_labels(&mut cur, &mut labels)?;
            }
            _ => return Err(ParseError::InvalidLabels("expected , or }")),
        }
    } else {
        let start = cur.pos;
        while let Some(c) = cur.peek() {
            let ok = c.is_ascii_alphabetic()
                || c == '_'
                || c == ':'
                || (cur.pos > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            cur.bump();
        }
        if cur.pos == start {
            return Err(ParseError::InvalidName);
        }
        name.push_str(&line[start..cur.pos]);
        let name_end = cur.pos;
        cur.skip_ws();
        separated = cur.pos > name_end;
        if cur.peek() == Some('{') {
            cur.bump();
            parse_labels(&mut cur, &mut labels)?;
            separated = true;
        }
    }
    if name.is_empty() {
        return Err(ParseError::InvalidName);
    }
    let before = cur.pos;
    cur.skip_ws();
    if cur.rest().is_empty() {
        return Err(ParseError::InvalidValue);
    }
    // A name followed directly by junk (`foo-1`) is a bad name, not a sample.
    if !separated && cur.pos == before {
        return Err(ParseError::InvalidName);
    }
    let value = parse_value(cur.token()).ok_or(ParseError::InvalidValue)?;
    cur.skip_ws();
    let timestamp_ms = match cur.token() {
        "" => None,
        t => Some(t.parse::<i64>().map_err(|_| ParseError::InvalidTimestamp)?),
    };
    cur.skip_ws();
    if !cur.rest().is_empty() {
        return Err(ParseError::Trailing);
    }
    Ok(Some(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    }))
}

/// Parses a Prometheus float: `+Inf`, `-Inf`, `NaN` or a decimal/exponent number.
fn parse_value(t: &str) -> Option<f64> {
    match t {
        "" => None,
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            // Rust also accepts "infinity" and friends; Prometheus numbers are
            // digits, sign, dot and exponent only.
            if t.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
            {
                t.parse().ok()
            } else {
                None
            }
        }
    }
}

/// Reads `name="value", ...}` (the opening brace already consumed).
fn parse_labels(cur: &mut Cursor<'_>, out: &mut Vec<(String, String)>) -> Result<(), ParseError> {
    loop {
        cur.skip_ws();
        match cur.peek() {
            Some('}') => {
                cur.bump();
                return Ok(());
            }
            None => return Err(ParseError::InvalidLabels("unterminated label set")),
            _ => {}
        }
        let key = if cur.peek() == Some('"') {
            cur.quoted()?
        } else {
            let start = cur.pos;
            while let Some(c) = cur.peek() {
                if c.is_ascii_alphabetic() || c == '_' || (cur.pos > start && c.is_ascii_digit()) {
                    cur.bump();
                } else {
                    break;
                }
            }
            if cur.pos == start {
                return Err(ParseError::InvalidLabels("invalid label name"));
            }
            cur.s[start..cur.pos].to_string()
        };
        cur.skip_ws();
        if cur.peek() != Some('=') {
            return Err(ParseError::InvalidLabels("expected ="));
        }
        cur.bump();
        cur.skip_ws();
        if cur.peek() != Some('"') {
            return Err(ParseError::InvalidLabels("label value not quoted"));
        }
        let value = cur.quoted()?;
        out.push((key, value));
        cur.skip_ws();
        match cur.peek() {
            Some(',') => {
                cur.bump();
            }
            Some('}') => {}
            _ => return Err(ParseError::InvalidLabels("expected , or }")),
        }
    }
}

/// A position in one line; every step is on a char boundary.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// The run of non-whitespace characters at the cursor.
    fn token(&mut self) -> &str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    /// A `"..."` string with `\\`, `\"`, `\n` escapes (cursor on the opening quote).
    fn quoted(&mut self) -> Result<String, ParseError> {
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(ParseError::InvalidLabels("unterminated string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('n') => out.push('\n'),
                    _ => return Err(ParseError::InvalidLabels("invalid escape")),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

/// Escapes a label value for the text format (`\` → `\\`, `"` → `\"`, newline → `\n`).
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.25
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1.2e+04
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 6000.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="m"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 12.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 3.5
"#;

    const SGLANG: &str = "# HELP sglang:num_running_reqs The number of running requests.\n\
# TYPE sglang:num_running_reqs gauge\n\
sglang:num_running_reqs{model_name=\"qwen\",tp_rank=\"0\",dp_rank=\"0\"} 3.0\n\
sglang:num_running_reqs{model_name=\"qwen\",tp_rank=\"0\",dp_rank=\"1\"} 5.0\n\
sglang:num_queue_reqs{model_name=\"qwen\",tp_rank=\"0\",dp_rank=\"0\"} 1.0\r\n\
sglang:token_usage{model_name=\"qwen\",tp_rank=\"0\",dp_rank=\"0\"} 0.5\n";

    #[test]
    fn parses_vllm_names_with_colons() {
        let s = parse(VLLM);
        assert_eq!(s.len(), 9);
        assert_eq!(s[0].name, "vllm:num_requests_running");
        assert_eq!(s[0].label("engine"), Some("0"));
        assert_eq!(
            s[0].label("model_name"),
            Some("meta-llama/Llama-3.1-8B-Instruct")
        );
        assert_eq!(s[0].value, 4.0);
        assert_eq!(s[1].value, 2.0);
        assert_eq!(s[4].value, 12000.0);
        assert_eq!(s[5].value, 6000.0);
        assert_eq!(s[7].label("le"), Some("+Inf"));
        assert!(s.iter().all(|x| x.timestamp_ms.is_none()));
    }

    #[test]
    fn parses_sglang_with_crlf() {
        let s = parse(SGLANG);
        assert_eq!(s.len(), 4);
        assert_eq!(s[2].name, "sglang:num_queue_reqs");
        assert_eq!(s[2].value, 1.0);
        assert_eq!(s[3].name, "sglang:token_usage");
        assert_eq!(s[3].value, 0.5);
        // A lone trailing CR is whitespace too.
        assert_eq!(parse_line("x 1\r").unwrap().unwrap().value, 1.0);
        assert_eq!(s[1].label("dp_rank"), Some("1"));
    }

    #[test]
    fn escaped_label_values() {
        let line = r#"m{path="C:\\dir",q="say \"hi\"",nl="a\nb",} 1"#;
        let s = parse_line(line).unwrap().unwrap();
        assert_eq!(s.label("path"), Some("C:\\dir"));
        assert_eq!(s.label("q"), Some("say \"hi\""));
        assert_eq!(s.label("nl"), Some("a\nb"));
        // A label value may hold braces, commas and `=`.
        let s = parse_line(r#"m{a="}{,=x"} 2"#).unwrap().unwrap();
        assert_eq!(s.label("a"), Some("}{,=x"));
        assert_eq!(s.value, 2.0);
    }

    #[test]
    fn escape_round_trips() {
        let v = "a\\b\"c\nd}";
        let line = format!("m{{l=\"{}\"}} 1", escape_label_value(v));
        assert_eq!(parse_line(&line).unwrap().unwrap().label("l"), Some(v));
    }

    #[test]
    fn special_values_and_timestamps() {
        let s = parse("a +Inf\nb -Inf\nc NaN\nd 1.5e-3 1700000000000\ne{} -2 -5\n");
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].value, f64::INFINITY);
        assert_eq!(s[1].value, f64::NEG_INFINITY);
        assert!(s[2].value.is_nan());
        assert_eq!(s[3].value, 0.0015);
        assert_eq!(s[3].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(s[4].value, -2.0);
        assert_eq!(s[4].timestamp_ms, Some(-5));
        assert!(s[4].labels.is_empty());
    }

    #[test]
    fn quoted_utf8_names() {
        let s = parse_line(r#"{"my.metric", "le"="1", x="y"} 3"#)
            .unwrap()
            .unwrap();
        assert_eq!(s.name, "my.metric");
        assert_eq!(s.label("le"), Some("1"));
        assert_eq!(s.label("x"), Some("y"));
        let s = parse_line(r#"{"only.name"} 4"#).unwrap().unwrap();
        assert_eq!(s.name, "only.name");
    }

    #[test]
    fn comments_and_blanks_carry_nothing() {
        for l in [
            "",
            "   ",
            "# HELP x y",
            "# TYPE x gauge",
            "#",
            "# EOF",
            "\t# c",
        ] {
            assert_eq!(parse_line(l), Ok(None), "{l:?}");
        }
    }

    #[test]
    fn malformed_lines_are_errors_and_skipped() {
        let cases: &[(&str, ParseError)] = &[
            ("1abc 3", ParseError::InvalidName),
            ("m", ParseError::InvalidValue),
            ("m abc", ParseError::InvalidValue),
            ("m infinity", ParseError::InvalidValue),
            ("m{a=\"1\" 3", ParseError::InvalidLabels("expected , or }")),
            (
                "m{a=1} 3",
                ParseError::InvalidLabels("label value not quoted"),
            ),
            ("m{a} 3", ParseError::InvalidLabels("expected =")),
            (
                "m{a=\"x} 3",
                ParseError::InvalidLabels("unterminated string"),
            ),
            (
                "m{a=\"\\q\"} 3",
                ParseError::InvalidLabels("invalid escape"),
            ),
            (
                "m{1a=\"x\"} 3",
                ParseError::InvalidLabels("invalid label name"),
            ),
            ("m{", ParseError::InvalidLabels("unterminated label set")),
            ("m 1 2.5", ParseError::InvalidTimestamp),
            ("m 1 2 3", ParseError::Trailing),
            ("m-x 1", ParseError::InvalidName),
            ("{x=\"y\"} 1", ParseError::InvalidName),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line), Err(want.clone()), "{line:?}");
        }
        let text = "good 1\nbad{ 2\nalso_good{a=\"b\"} 3\n";
        let (samples, errors) = parse_with_errors(text);
        assert_eq!(samples.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
        assert_eq!(parse(text).len(), 2);
    }

    /// Seeded fuzz loop: random lines built from the format's own alphabet
    /// (and random mutations of valid lines) never make the parser panic,
    /// and whatever parses re-parses identically after re-rendering.
    #[test]
    fn fuzz_never_panics() {
        const ALPHABET: &[&str] = &[
            "a", "z", "_", ":", "0", "9", "{", "}", "\"", "\\", "=", ",", " ", "\t", "#", ".", "e",
            "+", "-", "Inf", "NaN", "\n", "\r", "é", "日", "\u{0}", "le", "1.5",
        ];
        let mut rng = StdRng::seed_from_u64(0x5eed_cafe);
        let seeds: Vec<&str> = VLLM.lines().chain(SGLANG.lines()).collect();
        let mut parsed = 0usize;
        for _ in 0..20_000 {
            let line: String = if rng.random_bool(0.5) {
                let n = rng.random_range(0..40);
                (0..n)
                    .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                    .collect()
            } else {
                // Mutate a real line: delete, insert or replace a few chars.
                let mut chars: Vec<char> =
                    seeds[rng.random_range(0..seeds.len())].chars().collect();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..=chars.len());
                    let c = ALPHABET[rng.random_range(0..ALPHABET.len())]
                        .chars()
                        .next()
                        .unwrap_or('x');
                    match rng.random_range(0..3) {
                        0 if i < chars.len() => {
                            chars.remove(i);
                        }
                        1 if i < chars.len() => chars[i] = c,
                        _ => chars.insert(i, c),
                    }
                }
                chars.into_iter().collect()
            };
            let _ = parse(&line);
            if let Ok(Some(s)) = parse_line(&line) {
                parsed += 1;
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "\"{}\"=\"{}\"",
                            escape_label_value(k),
                            escape_label_value(v)
                        )
                    })
                    .collect();
                let rendered = format!(
                    "{{\"{}\",{}}} {}",
                    escape_label_value(&s.name),
                    labels.join(","),
                    if s.value.is_nan() {
                        "NaN".to_string()
                    } else if s.value == f64::INFINITY {
                        "+Inf".into()
                    } else if s.value == f64::NEG_INFINITY {
                        "-Inf".into()
                    } else {
                        format!("{:e}", s.value)
                    }
                );
                let again = parse_line(&rendered)
                    .unwrap_or_else(|e| panic!("{rendered:?}: {e}"))
                    .unwrap();
                assert_eq!(again.name, s.name);
                assert_eq!(again.labels, s.labels);
                assert!(again.value == s.value || (again.value.is_nan() && s.value.is_nan()));
            }
        }
        // The mutations keep a good share of lines valid, so the round trip is exercised.
        assert!(parsed > 1_000, "only {parsed} lines parsed");
    }
}
