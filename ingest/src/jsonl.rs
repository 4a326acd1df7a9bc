//! JSON-lines reading with per-line error reporting.

use serde::Deserialize;
use std::io::BufRead;

/// How the reader treats its input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlReaderConfig {
    /// Lines longer than this many bytes are dead-lettered without being buffered whole.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// How many bytes of an invalid line are kept as its excerpt (masked before storage).
    #[serde(default = "default_excerpt_bytes")]
    pub excerpt_bytes: usize,
}

fn default_max_line_bytes() -> usize {
    1024 * 1024
}
fn default_excerpt_bytes() -> usize {
    256
}

impl Default for JsonlReaderConfig {
    fn default() -> Self {
        JsonlReaderConfig {
            max_line_bytes: default_max_line_bytes(),
            excerpt_bytes: default_excerpt_bytes(),
        }
    }
}

/// One input line's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum InputItem {
    /// A parsed JSON value (object or array; vendor envelopes are split later by the normalizer).
    Record { line: u64, value: serde_json::Value },
    /// A line that could not be used, with why. `excerpt` is NOT masked yet.
    Invalid {
        line: u64,
        reason: String,
        excerpt: String,
    },
}

/// Reads JSON lines from any [`BufRead`], one [`InputItem`] per non-blank line.
pub struct JsonlReader<R> {
    input: R,
    config: JsonlReaderConfig,
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> JsonlReader<R> {
    pub fn new(input: R, config: JsonlReaderConfig) -> Self {
        JsonlReader {
            input,
            config,
            line: 0,
            buf: Vec::with_capacity(4096),
            done: false,
        }
    }

    /// Number of lines consumed so far (including blank ones).
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    /// Read the next physical line into `self.buf`. Returns `Ok(None)` at end of input and
    /// `Ok(Some(total_len))` otherwise; when the line was too long, `buf` holds only its start.
    fn read_line(&mut self) -> std::io::Result<Option<usize>> {
        self.buf.clear();
        let mut total = 0usize;
        let mut saw_any = false;
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok(if saw_any { Some(total) } else { None });
            }
            saw_any = true;
            let (take, found_newline) = match memchr_newline(chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let content = if found_newline {
                &chunk[..take - 1]
            } else {
                &chunk[..take]
            };
            // Keep at most max_line_bytes + 1 so "too long" is detectable without buffering more.
            let room = (self.config.max_line_bytes + 1).saturating_sub(self.buf.len());
            self.buf
                .extend_from_slice(&content[..content.len().min(room)]);
            total += content.len();
            self.input.consume(take);
            if found_newline {
                return Ok(Some(total));
            }
        }
    }
}

fn memchr_newline(hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == b'\n')
}

fn excerpt(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > max {
        s.push('…');
    }
    s
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    type Item = Result<InputItem, std::io::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let total = match self.read_line() {
                Ok(Some(t)) => t,
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            self.line += 1;
            let line = self.line;
            let max = self.config.excerpt_bytes;
            if total > self.config.max_line_bytes {
                return Some(Ok(InputItem::Invalid {
                    line,
                    reason: format!(
                        "line is {total} bytes, longer than the limit of {} bytes",
                        self.config.max_line_bytes
                    ),
                    excerpt: excerpt(&self.buf, max),
                }));
            }
            let mut bytes: &[u8] = &self.buf;
            if bytes.last() == Some(&b'\r') {
                bytes = &bytes[..bytes.len() - 1];
            }
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if let Err(e) = std::str::from_utf8(bytes) {
                return Some(Ok(InputItem::Invalid {
                    line,
                    reason: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                    excerpt: excerpt(bytes, max),
                }));
            }
            return Some(Ok(
                match serde_json::from_slice::<serde_json::Value>(bytes) {
                    Ok(value @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
                        InputItem::Record { line, value }
                    }
                    Ok(other) => InputItem::Invalid {
                        line,
                        reason: format!("expected a JSON object, found {}", json_kind(&other)),
                        excerpt: excerpt(bytes, max),
                    },
                    Err(e) => InputItem::Invalid {
                        line,
                        reason: format!("invalid JSON: {e}"),
                        excerpt: excerpt(bytes, max),
                    },
                },
            ));
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], cfg: JsonlReaderConfig) -> Vec<InputItem> {
        JsonlReader::new(input, cfg).map(|r| r.unwrap()).collect()
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number_and_processing_continues() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"a\":1}\n");
        input.extend_from_slice(b"not json\n");
        input.extend_from_slice(b"\n");
        input.extend_from_slice(b"{\"truncated\": \n");
        input.extend_from_slice(b"{\"bad\": \"\xff\xfe\"}\n");
        input.extend_from_slice(b"42\n");
        input.extend_from_slice(b"{\"b\":2}\r\n");
        input.extend_from_slice(b"{\"last\":true}");
        let items = read(&input, JsonlReaderConfig::default());
        let summary: Vec<(u64, bool)> = items
            .iter()
            .map(|i| match i {
                InputItem::Record { line, .. } => (*line, true),
                InputItem::Invalid { line, .. } => (*line, false),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, true),
                (2, false),
                (4, false),
                (5, false),
                (6, false),
                (7, true),
                (8, true)
            ]
        );
        let reasons: Vec<&str> = items
            .iter()
            .filter_map(|i| match i {
                InputItem::Invalid { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        assert!(reasons[0].starts_with("invalid JSON"), "{reasons:?}");
        assert!(reasons[1].contains("EOF"), "{reasons:?}");
        assert!(
            reasons[2].starts_with("invalid UTF-8 at byte 9"),
            "{reasons:?}"
        );
        assert!(reasons[3].contains("found a number"), "{reasons:?}");
    }

    #[test]
    fn overlong_line_is_reported_without_buffering_it() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"big\":\"");
        input.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
        input.extend_from_slice(b"\"}\n{\"ok\":1}\n");
        let mut reader = JsonlReader::new(
            &input[..],
            JsonlReaderConfig {
                max_line_bytes: 1000,
                excerpt_bytes: 16,
            },
        );
        match reader.next().unwrap().unwrap() {
            InputItem::Invalid {
                line,
                reason,
                excerpt,
            } => {
                assert_eq!(line, 1);
                assert!(reason.contains("10485770 bytes"), "{reason}");
                assert!(excerpt.chars().count() <= 17);
            }
            other => panic!("expected invalid, got {other:?}"),
        }
        assert!(
            reader.buf.capacity() < 64 * 1024,
            "buffer grew to {}",
            reader.buf.capacity()
        );
        assert!(matches!(
            reader.next().unwrap().unwrap(),
            InputItem::Record { line: 2, .. }
        ));
        assert!(reader.next().is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_line_numbers_increase(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let mut last = 0;
            for item in JsonlReader::new(&bytes[..], JsonlReaderConfig { max_line_bytes: 100, excerpt_bytes: 10 }) {
                let line = match item.unwrap() {
                    InputItem::Record { line, .. } | InputItem::Invalid { line, .. } => line,
                };
                proptest::prop_assert!(line > last);
                last = line;
            }
        }
    }
}
