//! JSON-lines reading with per-line error reporting.

use serde::Deserialize;
use std::io::{BufRead, Read};

/// How the reader treats its input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlReaderConfig {
    /// Lines longer than this many bytes are dead-lettered without being buffered whole.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// How many bytes of an invalid line are kept as its excerpt (masked before storage, then
    /// cut to the 256 characters stored). More than is stored: a value cut here is masked
    /// only if its pattern still matches, and a cut at 256 bytes left the head of a card
    /// number, a seed phrase or an SSN in clear (QA).
    #[serde(default = "default_excerpt_bytes")]
    pub excerpt_bytes: usize,
    /// Pretty-printed documents are read whole and their items located before the first is
    /// handed out (each is parsed when it is taken): with a limit, locating stops one item past
    /// this, so a caller that refuses larger inputs (HTTP ingest) sees it is over without a
    /// page of millions of elements all listed first. JSON lines and CSV rows are read one at a time, so a caller stops
    /// those itself. `None`: no limit.
    #[serde(default)]
    pub max_items: Option<usize>,
}

/// The default longest line: 1 MiB. Records are a few KB; a line far longer is most likely not
/// one (a 10 MB line is dead-lettered without being buffered). A CloudTrail `{"Records": [...]}`
/// file is one line and can be larger: `max_line_bytes` is a setting for that.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}
fn default_excerpt_bytes() -> usize {
    4096
}

impl JsonlReaderConfig {
    /// The defaults, with lines (and CSV rows) of up to `max_line_bytes`.
    pub fn with_max_line_bytes(max_line_bytes: usize) -> Self {
        JsonlReaderConfig {
            max_line_bytes,
            ..JsonlReaderConfig::default()
        }
    }
}

impl Default for JsonlReaderConfig {
    fn default() -> Self {
        JsonlReaderConfig {
            max_line_bytes: default_max_line_bytes(),
            excerpt_bytes: default_excerpt_bytes(),
            max_items: None,
        }
    }
}

/// One input line's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum InputItem {
    /// A parsed JSON value (object or array; vendor envelopes are split later by the normalizer).
    Record {
        line: u64,
        value: perimeter_model::RawJson,
        /// For a pretty-printed object: each top-level member whose value is an array, with the
        /// line each of its elements starts on, so the records of an envelope page
        /// (`{"items": [...]}`) can be told where they are. Empty otherwise.
        member_lines: Vec<(String, Vec<u64>)>,
    },
    /// A line that could not be used, with why. `excerpt` is NOT masked yet.
    Invalid {
        line: u64,
        reason: String,
        excerpt: String,
        /// [`input_digest`] of the whole line (the excerpt is cut): what tells two bad lines
        /// apart. Of the clear input: keep it in memory (the pipeline keys it before it is
        /// stored).
        digest: String,
    },
}

/// Reads JSON lines from any [`BufRead`], one [`InputItem`] per non-blank line.
pub struct JsonlReader<R> {
    input: R,
    config: JsonlReaderConfig,
    line: u64,
    buf: Vec<u8>,
    done: bool,
    /// Lines longer than `max_line_bytes` (each a dead letter).
    too_long: u64,
}

impl<R: BufRead> JsonlReader<R> {
    pub fn new(input: R, config: JsonlReaderConfig) -> Self {
        JsonlReader {
            input,
            config,
            line: 0,
            too_long: 0,
            buf: Vec::with_capacity(4096),
            done: false,
        }
    }

    /// Number of lines consumed so far (including blank ones).
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    /// How many lines were longer than `max_line_bytes` (each given as a dead letter).
    pub fn lines_too_long(&self) -> u64 {
        self.too_long
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
    memchr::memchr(b'\n', hay)
}

/// Deepest nesting of arrays and objects accepted (see [`perimeter_model::MAX_JSON_NESTING`]).
pub use perimeter_model::MAX_JSON_NESTING as MAX_NESTING;
use perimeter_model::{json_nesting_exceeds as nesting_exceeds, JsonStrings as Strings};

/// BLAKE3 of a rejected line's bytes, hex (see [`InputItem::Invalid`]).
pub fn input_digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..32].to_string()
}

/// The start of a rejected line, for the analyst. When cut, the cut backs off to the last
/// delimiter so no token is split: a split secret would no longer match its mask pattern.
pub(crate) fn excerpt(bytes: &[u8], max: usize) -> String {
    let mut end = bytes.len().min(max);
    if end < bytes.len() {
        let delimiter = |b: &u8| b" \t\r\n\",:;{}[]=&?<>'()".contains(b);
        end = bytes[..end].iter().rposition(delimiter).unwrap_or(0);
    }
    let cut = &bytes[..end];
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
                self.too_long += 1;
                return Some(Ok(InputItem::Invalid {
                    line,
                    reason: format!(
                        "line is {total} bytes, longer than the limit of {} bytes (raise max_line_bytes to read it)",
                        self.config.max_line_bytes
                    ),
                    excerpt: excerpt(&self.buf, max),
                    digest: input_digest(&self.buf),
                }));
            }
            let mut bytes: &[u8] = &self.buf;
            if bytes.last() == Some(&b'\r') {
                bytes = &bytes[..bytes.len() - 1];
            }
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return Some(Ok(parse_record(line, bytes, max)));
        }
    }
}

/// One JSON document's bytes as a record, or why they are not one.
fn parse_record(line: u64, bytes: &[u8], excerpt_bytes: usize) -> InputItem {
    use sonic_rs::{JsonType, JsonValueTrait};
    // Validated once here; `from_str` then skips sonic-rs's own UTF-8 pass.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return InputItem::Invalid {
                line,
                reason: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                excerpt: excerpt(bytes, excerpt_bytes),
                digest: input_digest(bytes),
            }
        }
    };
    if nesting_exceeds(bytes, MAX_NESTING) {
        return InputItem::Invalid {
            line,
            reason: format!("JSON nests deeper than {MAX_NESTING} levels"),
            excerpt: excerpt(bytes, excerpt_bytes),
            digest: input_digest(bytes),
        };
    }
    let parsed = sonic_rs::from_str::<perimeter_model::RawJson>(text).or_else(|e| {
        // Half of a surrogate pair escaped alone (`\ud83d`, a string cut mid-emoji): read as
        // the replacement character rather than losing the record.
        match perimeter_model::without_lone_surrogates(bytes) {
            Some(fixed) => sonic_rs::from_slice::<perimeter_model::RawJson>(&fixed),
            None => Err(e),
        }
    });
    match parsed {
        Ok(value) if matches!(value.get_type(), JsonType::Object | JsonType::Array) => {
            InputItem::Record {
                line,
                value,
                member_lines: Vec::new(),
            }
        }
        Ok(other) => InputItem::Invalid {
            line,
            reason: format!(
                "expected a JSON object, found {}",
                match other.get_type() {
                    JsonType::Null => "null",
                    JsonType::Boolean => "a boolean",
                    JsonType::Number => "a number",
                    JsonType::String => "a string",
                    JsonType::Array => "an array",
                    JsonType::Object => "an object",
                }
            ),
            excerpt: excerpt(bytes, excerpt_bytes),
            digest: input_digest(bytes),
        },
        Err(e) => InputItem::Invalid {
            line,
            reason: format!("invalid JSON: {}", why_not_json(bytes, &e)),
            excerpt: excerpt(bytes, excerpt_bytes),
            digest: input_digest(bytes),
        },
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
    fn deep_nesting_is_a_dead_letter_not_a_stack_overflow() {
        let deep = |n: usize| format!("{}{}\n", "[".repeat(n), "]".repeat(n));
        let mut input = deep(100_000).into_bytes();
        input.extend_from_slice(
            format!(
                "{}1{}\n",
                "{\"a\":".repeat(MAX_NESTING + 1),
                "}".repeat(MAX_NESTING + 1)
            )
            .as_bytes(),
        );
        // At the limit, and brackets inside strings do not count.
        input.extend_from_slice(deep(MAX_NESTING).as_bytes());
        input.extend_from_slice(format!("{{\"s\": \"{}\"}}\n", "[".repeat(1000)).as_bytes());
        // Debug builds use far bigger stack frames than release ones (where the limit is far
        // from the 2 MiB of a test thread): give the parser room for the at-limit line.
        let items = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || read(&input, JsonlReaderConfig::default()))
            .expect("spawning the reader thread")
            .join()
            .expect("the reader does not panic");
        assert_eq!(items.len(), 4);
        for (i, item) in items.iter().take(2).enumerate() {
            match item {
                InputItem::Invalid { line, reason, .. } => {
                    assert_eq!(*line, i as u64 + 1);
                    assert!(reason.contains("nests deeper"), "{reason}");
                }
                other => panic!("line {} should be rejected: {other:?}", i + 1),
            }
        }
        assert!(
            matches!(items[2], InputItem::Record { line: 3, .. }),
            "{:?}",
            items[2]
        );
        assert!(
            matches!(items[3], InputItem::Record { line: 4, .. }),
            "{:?}",
            items[3]
        );
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
                max_items: None,
            },
        );
        match reader.next().unwrap().unwrap() {
            InputItem::Invalid {
                line,
                reason,
                excerpt,
                digest,
            } => {
                assert_eq!(line, 1);
                assert!(reason.contains("10485770 bytes"), "{reason}");
                assert!(excerpt.chars().count() <= 17);
                // Of the whole line, not of the excerpt.
                assert_ne!(
                    digest,
                    input_digest(excerpt.trim_end_matches('…').as_bytes())
                );
                assert_eq!(digest.len(), 32);
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
            for item in JsonlReader::new(&bytes[..], JsonlReaderConfig { max_line_bytes: 100, excerpt_bytes: 10, max_items: None }) {
                let line = match item.unwrap() {
                    InputItem::Record { line, .. } | InputItem::Invalid { line, .. } => line,
                };
                proptest::prop_assert!(line > last);
                last = line;
            }
        }
    }
}

/// What an input is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// JSON lines, or pretty-printed JSON documents ([`JsonInput::new`] tells them apart).
    #[default]
    Json,
    /// CSV with a header row ([`crate::CsvRows`]).
    Csv,
}

impl InputFormat {
    /// The format a file name says: `*.csv` and `*.csv.gz` are CSV, anything else JSON.
    pub fn from_path(path: &std::path::Path) -> InputFormat {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".csv") {
            InputFormat::Csv
        } else {
            InputFormat::Json
        }
    }

    /// The format an HTTP `Content-Type` says: `text/csv` is CSV, anything else JSON.
    pub fn from_content_type(content_type: Option<&str>) -> InputFormat {
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        if media.as_deref() == Some("text/csv") {
            InputFormat::Csv
        } else {
            InputFormat::Json
        }
    }
}

/// Input in the shapes people hand to a CLI: JSON lines (one record or page per line), one
/// pretty-printed JSON document (a saved vendor API page) or several whitespace-separated ones,
/// or CSV rows ([`InputFormat::Csv`]). A UTF-8 byte order mark at the start is skipped.
///
/// For JSON the shape is decided by the first non-blank line. When it is a whole JSON value, or
/// a broken object followed by a line that is a whole object (JSON lines whose first line is
/// damaged), the input is read as JSON lines. Otherwise it is read as documents:
/// - each document is reported at the line it starts on;
/// - the elements of a document that is an array (an Okta or GitHub page) are records of their
///   own, each at the line it starts on, so `lines` of an alert names the record, not the page;
///   for a document that is an object, the start lines of its array members' elements go with
///   it ([`InputItem::Record::member_lines`]), so the records of an envelope page
///   (`{"items": [...]}`) get their own lines when the pipeline splits it (the events of one
///   Google Workspace activity share their activity's line);
/// - a broken document is one dead letter at the line it starts on, and reading resumes at the
///   next line that starts a document in column 0 (`{` or `[`), so what follows is not lost.
pub enum JsonInput<R: Read> {
    Lines(JsonlReader<std::io::Chain<std::io::Cursor<Vec<u8>>, R>>),
    Documents { items: DocumentItems, lines: u64 },
    Csv(crate::CsvRows<R>),
}

/// The items of pretty-printed documents, each parsed when it is taken: the input is held whole
/// with where each item is in it, but its records are not all parsed at once (a page of 400,000
/// array elements took 390 MB when they were, a batch of them is in memory now).
pub struct DocumentItems {
    bytes: Vec<u8>,
    pending: std::vec::IntoIter<PendingItem>,
    excerpt_bytes: usize,
}

/// An item of [`DocumentItems`] not taken yet.
enum PendingItem {
    /// The bytes at `range` (a document, or an element of a document that is an array) on
    /// `line`, to be parsed; `member_lines` go with it when it is a record.
    Record {
        line: u64,
        range: std::ops::Range<usize>,
        member_lines: Vec<(String, Vec<u64>)>,
    },
    /// A broken document's dead letter, made while the documents were told apart.
    Invalid(InputItem),
}

impl Iterator for DocumentItems {
    type Item = Result<InputItem, std::io::Error>;
    fn next(&mut self) -> Option<Self::Item> {
        Some(Ok(match self.pending.next()? {
            PendingItem::Invalid(item) => item,
            PendingItem::Record {
                line,
                range,
                member_lines: lines,
            } => {
                let mut item = parse_record(line, &self.bytes[range], self.excerpt_bytes);
                if let InputItem::Record { member_lines, .. } = &mut item {
                    *member_lines = lines;
                }
                item
            }
        }))
    }
}

/// The UTF-8 byte order mark some Windows tools write at the start of a text file.
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

impl<R: BufRead> JsonInput<R> {
    /// `input` in `format`.
    pub fn with_format(
        input: R,
        config: JsonlReaderConfig,
        format: InputFormat,
    ) -> std::io::Result<Self> {
        match format {
            InputFormat::Json => JsonInput::new(input, config),
            InputFormat::Csv => Ok(JsonInput::Csv(crate::CsvRows::new(input, config))),
        }
    }

    /// JSON input (lines or documents).
    pub fn new(mut input: R, config: JsonlReaderConfig) -> std::io::Result<Self> {
        if input.fill_buf()?.starts_with(BOM) {
            input.consume(BOM.len());
        }
        let mut head = Vec::new();
        let max = config.max_line_bytes;
        let first = read_head_line(&mut input, &mut head, max)?;
        // Only whether they parse: a line of millions of elements built as a `Value` took
        // gigabytes just to be told JSON.
        let parsed = |line: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(line);
        let incomplete = |line: &[u8]| matches!(parsed(line), Err(e) if e.is_eof());
        let as_lines = match first {
            // No pretty-printed document starts with a line over the limit: JSON lines, whose
            // reader dead-letters it without holding it.
            HeadLine::End | HeadLine::TooLong => true,
            HeadLine::Content(first) if parsed(&head[first.clone()]).is_ok() => true,
            // A pretty-printed object's second line is a key (`"uuid": ...`), never a whole
            // object (nor one over the line limit): a whole object there means JSON lines whose
            // first line is broken.
            HeadLine::Content(first) if incomplete(&head[first.clone()]) => {
                head[first].starts_with(b"{")
                    && match read_head_line(&mut input, &mut head, max)? {
                        HeadLine::Content(second) => {
                            head[second.clone()].starts_with(b"{") && parsed(&head[second]).is_ok()
                        }
                        HeadLine::TooLong => true,
                        HeadLine::End => false,
                    }
            }
            // A first line that is no JSON at all (a stray header, a broken line): what follows
            // decides. A document opening on the next line means documents, with the first line
            // a dead letter of its own.
            HeadLine::Content(_) => !matches!(
                read_head_line(&mut input, &mut head, max)?,
                HeadLine::Content(second) if incomplete(&head[second.clone()])
            ),
        };
        if as_lines {
            let chained = std::io::Cursor::new(head).chain(input);
            return Ok(JsonInput::Lines(JsonlReader::new(chained, config)));
        }
        head.reserve(1 << 20);
        input.read_to_end(&mut head)?;
        let lines = count_lines(&head);
        let pending = parse_documents(&head, &config).into_iter();
        Ok(JsonInput::Documents {
            items: DocumentItems {
                bytes: head,
                pending,
                excerpt_bytes: config.excerpt_bytes,
            },
            lines,
        })
    }
}

/// The next line with non-blank content at the head of an input (see [`read_head_line`]).
enum HeadLine {
    /// The range of its content (trimmed) in the head.
    Content(std::ops::Range<usize>),
    /// Longer than the line limit: read only up to past the limit, the rest left in the input.
    TooLong,
    /// The input ended first.
    End,
}

/// Append lines of `input` to `buf` up to and including the next one with non-blank content. A
/// line over `max_line_bytes` is appended only up to one byte past the limit, so that it is not
/// held whole (JSON lines dead-letter it as too long).
fn read_head_line<R: BufRead>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max_line_bytes: usize,
) -> std::io::Result<HeadLine> {
    loop {
        let start = buf.len();
        let mut limited = input.by_ref().take(max_line_bytes as u64 + 2);
        if limited.read_until(b'\n', buf)? == 0 {
            return Ok(HeadLine::End);
        }
        let line = &buf[start..];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.len() > max_line_bytes {
            return Ok(HeadLine::TooLong);
        }
        if let Some(first) = line.iter().position(|b| !b.is_ascii_whitespace()) {
            let last = line
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .unwrap_or(first);
            return Ok(HeadLine::Content(start + first..start + last + 1));
        }
    }
}

/// Physical lines in `bytes` (a last line without a newline counts).
fn count_lines(bytes: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', bytes).count() as u64;
    newlines + u64::from(bytes.last().is_some_and(|&b| b != b'\n'))
}

/// Where the items of the documents in `bytes` are (see [`DocumentItems`]).
fn parse_documents(bytes: &[u8], config: &JsonlReaderConfig) -> Vec<PendingItem> {
    // Half of a surrogate pair escaped alone (`\ud83d`) would make the whole document invalid:
    // read as the replacement character (same length, so lines and offsets stay).
    let fixed = perimeter_model::without_lone_surrogates(bytes);
    let bytes = fixed.as_deref().unwrap_or(bytes);
    let mut out = Vec::new();
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(memchr::memchr_iter(b'\n', bytes).map(|i| i + 1))
        .collect();
    // 1-based line of a byte offset.
    let line_at = |offset: usize| line_starts.partition_point(|&s| s <= offset) as u64;
    let mut base = 0;
    // Past this many items the caller refuses the input: one more tells it so.
    let enough = config
        .max_items
        .map_or(usize::MAX, |max| max.saturating_add(1));
    'documents: while base < bytes.len() && out.len() < enough {
        // serde_json finds where each document ends; the document itself is parsed like a line.
        let mut stream = serde_json::Deserializer::from_slice(&bytes[base..])
            .into_iter::<serde::de::IgnoredAny>();
        loop {
            let start = base + stream.byte_offset();
            let start = start
                + bytes[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_whitespace())
                    .count();
            match stream.next() {
                None => break 'documents,
                Some(Ok(_)) => {
                    let doc = &bytes[start..base + stream.byte_offset()];
                    push_document(&mut out, doc, start, &line_at, enough);
                    if out.len() >= enough {
                        break 'documents;
                    }
                }
                // A page (an array) cut short: its complete elements are records, the rest one
                // dead letter. It was all one dead letter, the records in it lost.
                Some(Err(e))
                    if e.is_eof()
                        && bytes.get(start) == Some(&b'[')
                        && !nesting_exceeds(&bytes[start..], MAX_NESTING) =>
                {
                    let complete = array_elements(&bytes[start..]);
                    let Some(last) = complete.last().map(|r| start + r.end) else {
                        push_unfinished(&mut out, bytes, start, &line_at, config, &e, 0);
                        break 'documents;
                    };
                    let n = complete.len();
                    for element in complete {
                        if out.len() >= enough {
                            break 'documents;
                        }
                        let range = start + element.start..start + element.end;
                        out.push(PendingItem::Record {
                            line: line_at(range.start),
                            range,
                            member_lines: Vec::new(),
                        });
                    }
                    push_unfinished(&mut out, bytes, last, &line_at, config, &e, n);
                    break 'documents;
                }
                Some(Err(e)) => {
                    // Reading resumes at the next line after this one that starts a document
                    // in column 0: the next JSON line, or the next page of a pretty-printed
                    // series (whose inner lines are indented).
                    let first_line = line_at(start) as usize;
                    let resume = line_starts[first_line.min(line_starts.len() - 1)..]
                        .iter()
                        .copied()
                        .find(|&s| s > start && matches!(bytes.get(s), Some(b'{' | b'[')));
                    let end = resume.unwrap_or(bytes.len());
                    let at = line_at(base) - 1;
                    out.push(PendingItem::Invalid(InputItem::Invalid {
                        line: first_line as u64,
                        reason: format!(
                            "invalid JSON: {} at line {} column {}",
                            without_position(&e),
                            e.line() as u64 + at,
                            e.column()
                        ),
                        excerpt: excerpt(&bytes[start..end], config.excerpt_bytes),
                        digest: input_digest(&bytes[start..end]),
                    }));
                    match resume {
                        Some(resume) => {
                            base = resume;
                            continue 'documents;
                        }
                        None => break 'documents,
                    }
                }
            }
        }
    }
    out
}

/// serde_json's message without its ` at line L column C` (given again, relative to the input).
/// Why `bytes` did not parse, without quoting them: sonic-rs's message shows the input around
/// the error (the tail of a token, a short password), serde_json's (re-parsed on this rare
/// path) names line and column without echoing content.
pub(crate) fn why_not_json(bytes: &[u8], e: &sonic_rs::Error) -> String {
    match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        Err(e) => e.to_string(),
        Ok(_) => e.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// One whole document at `offset`: a record, or the records of a top-level array, each at its
/// own line (until `out` holds `enough` items).
fn push_document(
    out: &mut Vec<PendingItem>,
    doc: &[u8],
    offset: usize,
    line_at: &dyn Fn(usize) -> u64,
    enough: usize,
) {
    let elements = (doc.first() == Some(&b'[') && !nesting_exceeds(doc, MAX_NESTING))
        .then(|| array_elements(doc))
        // An empty array is handed on whole, as a record: what reads it says it holds none (it
        // vanished from the counts otherwise).
        .filter(|elements| !elements.is_empty());
    if let Some(elements) = elements {
        for element in elements {
            if out.len() >= enough {
                return;
            }
            let range = offset + element.start..offset + element.end;
            out.push(PendingItem::Record {
                line: line_at(range.start),
                range,
                member_lines: Vec::new(),
            });
        }
    } else {
        let member_lines = array_member_starts(doc)
            .into_iter()
            .map(|(key, starts)| {
                let lines = starts.into_iter().map(|s| line_at(offset + s)).collect();
                (key, lines)
            })
            .collect();
        out.push(PendingItem::Record {
            line: line_at(offset),
            range: offset..offset + doc.len(),
            member_lines,
        });
    }
}

/// For `object`, a whole, valid JSON object (trimmed): each member whose value is an array, with
/// the offsets its elements start at. Keys are taken as written (envelope keys have no escapes).
fn array_member_starts(object: &[u8]) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut strings = Strings::default();
    let mut depth = 0usize;
    let (mut expecting_key, mut key_start, mut key) = (false, None, String::new());
    // Inside a member's array: whether an element has started since the last `,`.
    let (mut in_member_array, mut element_open) = (false, false);
    for (i, &b) in object.iter().enumerate() {
        if !strings.outside(b) {
            if let (false, Some(start)) = (strings.in_string(), key_start) {
                key = String::from_utf8_lossy(&object[start + 1..i]).into_owned();
                key_start = None;
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        let element_starts =
            depth == 2 && in_member_array && !element_open && !matches!(b, b',' | b']');
        if element_starts {
            element_open = true;
            if let Some((_, starts)) = out.last_mut() {
                starts.push(i);
            }
        }
        match (depth, b) {
            (1, b'"') if expecting_key => {
                key_start = Some(i);
                expecting_key = false;
            }
            (1, b',') => expecting_key = true,
            (1, b'[') => {
                depth = 2;
                in_member_array = true;
                element_open = false;
                out.push((std::mem::take(&mut key), Vec::new()));
            }
            (2, b',') if in_member_array => element_open = false,
            (2, b']') if in_member_array => {
                depth = 1;
                in_member_array = false;
            }
            (0, b'{') => {
                depth = 1;
                expecting_key = true;
            }
            (_, b'[' | b'{') => depth += 1,
            (_, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    out
}

/// The dead letter of an array page cut short, from `from` (after its `read` complete
/// elements, or its start) to the end of the input.
fn push_unfinished(
    out: &mut Vec<PendingItem>,
    bytes: &[u8],
    from: usize,
    line_at: &dyn Fn(usize) -> u64,
    config: &JsonlReaderConfig,
    error: &serde_json::Error,
    read: usize,
) {
    let tail = &bytes[from..];
    let skipped = tail
        .iter()
        .take_while(|b| b.is_ascii_whitespace() || **b == b',')
        .count();
    out.push(PendingItem::Invalid(InputItem::Invalid {
        line: line_at(from + skipped.min(tail.len().saturating_sub(1))),
        reason: format!(
            "invalid JSON: {}: a JSON array that ends before it closes (its {read} complete element(s) before this were read)",
            without_position(error)
        ),
        excerpt: excerpt(tail, config.excerpt_bytes),
        digest: input_digest(tail),
    }));
}

/// The byte ranges of the elements of `array`, a whole, valid JSON array (trimmed). Of an
/// array cut short, the elements that are complete (followed by their `,`).
fn array_elements(array: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut strings = Strings::default();
    let mut element_start: Option<usize> = None;
    let mut last_content = 0;
    for (i, &b) in array.iter().enumerate() {
        if !strings.outside(b) {
            if !strings.in_string() {
                // The closing quote ends a string element.
                last_content = i;
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if depth == 1 && (b == b',' || b == b']') {
            if let Some(start) = element_start.take() {
                out.push(start..last_content + 1);
            }
        } else if depth == 1 && element_start.is_none() {
            element_start = Some(i);
        }
        match b {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        last_content = i;
    }
    out
}

impl<R: BufRead> Iterator for JsonInput<R> {
    type Item = Result<InputItem, std::io::Error>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            JsonInput::Lines(r) => r.next(),
            JsonInput::Documents { items, .. } => items.next(),
            JsonInput::Csv(c) => c.next(),
        }
    }
}

impl<R: BufRead> JsonInput<R> {
    /// Whether the input is documents whose last one ends before it is complete (`EOF while
    /// parsing`): a pretty-printed page still being written.
    pub fn ends_unfinished(&self) -> bool {
        match self {
            JsonInput::Documents { items, .. } => items.pending.as_slice().last().is_some_and(
                |p| matches!(p, PendingItem::Invalid(InputItem::Invalid { reason, .. }) if reason.contains("EOF while parsing")),
            ),
            _ => false,
        }
    }

    /// Physical lines consumed (for documents: all of them, read at the start).
    pub fn lines_read(&self) -> u64 {
        match self {
            JsonInput::Lines(r) => r.lines_read(),
            JsonInput::Csv(c) => c.lines_read(),
            JsonInput::Documents { lines, .. } => *lines,
        }
    }

    /// JSON lines longer than `max_line_bytes` read so far (each a dead letter).
    pub fn lines_too_long(&self) -> u64 {
        match self {
            JsonInput::Lines(r) => r.lines_too_long(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod input_tests {
    use super::*;

    #[test]
    fn pretty_printed_pages_are_documents_and_jsonl_stays_lines() {
        let page = b"[\n  {\"a\": 1},\n  {\"a\": 2}\n]\n\n{\n  \"items\": []\n}\n";
        let input = JsonInput::new(&page[..], JsonlReaderConfig::default()).unwrap();
        assert_eq!(input.lines_read(), 8);
        let items: Vec<InputItem> = input.map(|i| i.unwrap()).collect();
        // The elements of an array page are records of their own, at their own lines.
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(matches!(&items[0], InputItem::Record { line: 2, value, .. } if value["a"] == 1));
        assert!(matches!(&items[1], InputItem::Record { line: 3, value, .. } if value["a"] == 2));
        assert!(matches!(&items[2], InputItem::Record { line: 6, .. }));

        let broken = b"{\n  \"a\": 1,\n  \"b\": \n";
        let items: Vec<InputItem> = JsonInput::new(&broken[..], JsonlReaderConfig::default())
            .unwrap()
            .map(|i| i.unwrap())
            .collect();
        assert!(
            matches!(&items[..], [InputItem::Invalid { reason, .. }] if reason.contains("EOF"))
        );

        let lines = b"{\"a\":1}\nnot json\n{\"a\":2}\n";
        let items: Vec<InputItem> = JsonInput::new(&lines[..], JsonlReaderConfig::default())
            .unwrap()
            .map(|i| i.unwrap())
            .collect();
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[1], InputItem::Invalid { line: 2, .. }));
    }

    /// A page (an array) cut short was one dead letter, the records in it lost: its complete
    /// elements are records, at their lines, and the rest one dead letter saying so.
    #[test]
    fn the_complete_elements_of_an_array_cut_short_are_read() {
        let cut = b"[\n  {\"a\": 1},\n  {\"a\": 2},\n  {\"a\": 3, \"b\": [1, 2";
        let items: Vec<InputItem> = JsonInput::new(&cut[..], JsonlReaderConfig::default())
            .unwrap()
            .map(|i| i.unwrap())
            .collect();
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(matches!(&items[0], InputItem::Record { line: 2, value, .. } if value["a"] == 1));
        assert!(matches!(&items[1], InputItem::Record { line: 3, value, .. } if value["a"] == 2));
        assert!(
            matches!(&items[2], InputItem::Invalid { line: 4, reason, .. }
                if reason.contains("ends before it closes") && reason.contains("its 2 complete")),
            "{items:?}"
        );
        // Nothing complete in it: one dead letter, as before.
        let items: Vec<InputItem> =
            JsonInput::new(&b"[\n  {\"a\": 1"[..], JsonlReaderConfig::default())
                .unwrap()
                .map(|i| i.unwrap())
                .collect();
        assert!(
            matches!(&items[..], [InputItem::Invalid { .. }]),
            "{items:?}"
        );
    }

    /// Half of a surrogate pair escaped alone (`\ud83d`: a string cut mid-emoji, as
    /// JavaScript writes it) made a line a dead letter and a whole page invalid: it is read as
    /// the replacement character, in a JSON line and in a pretty-printed page alike.
    #[test]
    fn a_lone_surrogate_escape_is_read_as_the_replacement_character() {
        use sonic_rs::JsonValueTrait;
        let lines = b"{\"m\":\"Signed in \\ud83d\"}\n{\"m\":\"ok\"}\n";
        let page = b"[\n  {\"m\": \"cut \\ud83d\"},\n  {\"m\": \"\\ud83d\\ude00\"}\n]\n";
        for input in [&lines[..], &page[..]] {
            let items: Vec<InputItem> = JsonInput::new(input, JsonlReaderConfig::default())
                .unwrap()
                .map(|i| i.unwrap())
                .collect();
            assert_eq!(items.len(), 2, "{items:?}");
            let InputItem::Record { value, .. } = &items[0] else {
                panic!("{items:?}")
            };
            assert!(
                value["m"].as_str().unwrap().ends_with('\u{fffd}'),
                "{value:?}"
            );
            let InputItem::Record { value, .. } = &items[1] else {
                panic!("{items:?}")
            };
            assert!(value["m"] == "ok" || value["m"] == "\u{1f600}", "{value:?}");
        }
    }

    /// A pretty-printed page of 400,000 elements held them all parsed at once (390 MB): they
    /// are parsed as they are taken.
    #[test]
    fn the_elements_of_a_document_are_parsed_as_they_are_taken() {
        let page = b"[\n  {\"a\": 1},\n  {\"a\": 2},\n  {\"a\": 3}\n]\n";
        let mut input = JsonInput::new(&page[..], JsonlReaderConfig::default()).unwrap();
        assert!(matches!(
            input.next(),
            Some(Ok(InputItem::Record { line: 2, .. }))
        ));
        let JsonInput::Documents { items, .. } = &input else {
            panic!("read as lines");
        };
        let pending: Vec<(u64, &[u8])> = items
            .pending
            .as_slice()
            .iter()
            .map(|item| match item {
                PendingItem::Record { line, range, .. } => (*line, &items.bytes[range.clone()]),
                PendingItem::Invalid(item) => panic!("{item:?}"),
            })
            .collect();
        assert_eq!(
            pending,
            [(3, &b"{\"a\": 2}"[..]), (4, &b"{\"a\": 3}"[..])],
            "not parsed yet"
        );
    }

    /// QA: a bad line was cut to 256 bytes before masking, between the groups of a card number
    /// (or the words of a seed phrase), leaving their head in clear in the dead letter. The
    /// excerpt reaches well past what is stored, so the whole value is there to be masked.
    #[test]
    fn a_bad_line_keeps_enough_for_a_value_past_the_stored_excerpt_to_be_masked() {
        let line = format!(
            "{{\"note\": \"{} 4111 1111 1111 1111 then more\n",
            "x".repeat(230)
        );
        let got = items(line.as_bytes());
        match &got[..] {
            [InputItem::Invalid { excerpt, .. }] => {
                assert!(excerpt.contains("4111 1111 1111 1111"), "{excerpt}")
            }
            other => panic!("{other:?}"),
        }
    }

    fn items(input: &[u8]) -> Vec<InputItem> {
        JsonInput::new(input, JsonlReaderConfig::default())
            .unwrap()
            .map(|i| i.unwrap())
            .collect()
    }

    fn lines_of(items: &[InputItem]) -> Vec<(u64, bool)> {
        items
            .iter()
            .map(|i| match i {
                InputItem::Record { line, .. } => (*line, true),
                InputItem::Invalid { line, .. } => (*line, false),
            })
            .collect()
    }

    /// The line that decides lines or documents was read whole and built as a `Value` to be
    /// told JSON: a 40 MB first line of small elements took 2 GB. A first (or deciding second)
    /// line over the limit is read only up to it and is the reader's too-long dead letter,
    /// numbered, with the lines after it read on.
    #[test]
    fn an_overlong_first_line_is_a_dead_letter_without_being_held() {
        let config = JsonlReaderConfig {
            max_line_bytes: 1000,
            ..JsonlReaderConfig::default()
        };
        let elements = vec!["{\"a\":1}"; 100_000].join(",");
        for head in [
            format!("[{elements}]\n"),
            // Not JSON at all, and the last line.
            format!("{{\"a\": [{elements}"),
            // A broken first line: the second decides.
            format!("{{\"uuid\": \"u1\",\n{{\"items\": [{elements}]}}\n"),
        ] {
            let input = format!("{head}\n{{\"ok\":1}}\n");
            let ok_line = input.lines().count() as u64;
            let reader = JsonInput::new(input.as_bytes(), config.clone()).unwrap();
            let JsonInput::Lines(lines) = &reader else {
                panic!("read as documents");
            };
            let held = lines.input.get_ref().0.get_ref().len();
            assert!(held <= 2 * (config.max_line_bytes + 2), "{held} bytes held");
            let items: Vec<InputItem> = reader.map(|i| i.unwrap()).collect();
            let too_long = items.iter().find_map(|item| match item {
                InputItem::Invalid { line, reason, .. } if reason.contains("longer than") => {
                    Some(*line)
                }
                _ => None,
            });
            assert_eq!(too_long, Some(head.lines().count() as u64), "{items:?}");
            assert!(
                matches!(items.last(), Some(InputItem::Record { line, value, .. })
                    if *line == ok_line && value["ok"] == 1),
                "{items:?}"
            );
        }
    }

    #[test]
    fn a_broken_first_line_does_not_take_the_rest_of_the_file_with_it() {
        // Read as JSON lines: the first line alone is the dead letter.
        let got = items(b"{\"uuid\": \"u1\", \n{\"a\":1}\n\n{\"a\":2}\n");
        assert_eq!(lines_of(&got), vec![(1, false), (2, true), (4, true)]);
        // A broken first line that opens an array is read as documents; reading resumes at the
        // next line that starts a document.
        let got = items(b"[{\"a\":1},\n{\"a\":2}\n{\"a\":3}\n");
        assert_eq!(lines_of(&got), vec![(1, false), (2, true), (3, true)]);
    }

    #[test]
    fn a_line_that_is_no_json_before_a_pretty_printed_page_does_not_take_the_page() {
        for first in ["this is not json", "{broken", "[oops"] {
            let input = format!("{first}\n[\n  {{\"a\": 1}},\n  {{\"a\": 2}}\n]\n");
            let got = items(input.as_bytes());
            assert_eq!(
                lines_of(&got),
                vec![(1, false), (3, true), (4, true)],
                "{first}: {got:?}"
            );
        }
        // Followed by JSON lines, it stays one bad line among lines.
        let got = items(b"not json\n{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(lines_of(&got), vec![(1, false), (2, true), (3, true)]);
    }

    #[test]
    fn a_broken_document_is_reported_where_it_starts_and_the_next_one_is_read() {
        let input = b"{\n  \"a\": 1,\n  \"b\": \n}\n{\n  \"c\": 3\n}\n[\n  1,\n  {\"d\": 4}\n]\n";
        let got = items(input);
        assert_eq!(
            lines_of(&got),
            vec![(1, false), (5, true), (9, false), (10, true)],
            "{got:?}"
        );
        match &got[0] {
            InputItem::Invalid { reason, .. } => {
                assert!(reason.contains("at line 4 column 1"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&got[2], InputItem::Invalid { reason, .. } if reason.contains("found a number"))
        );
        // Line numbers of a document after a broken one are still the input's.
        let input = b"{\n  \"a\": ,\n  \"b\": 2\n}\n{\n  \"c\": \n}\n";
        let got = items(input);
        assert_eq!(lines_of(&got), vec![(1, false), (5, false)], "{got:?}");
        match &got[1] {
            InputItem::Invalid { reason, .. } => {
                assert!(reason.contains("at line 7 column 1"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn array_elements_are_found_whatever_their_strings_hold() {
        let array = br#"[ {"s": "a,]\"b[{"}, "x\\", 12 , [1, [2]], {} ]"#;
        let got: Vec<&str> = array_elements(array)
            .into_iter()
            .map(|r| std::str::from_utf8(&array[r]).unwrap())
            .collect();
        assert_eq!(
            got,
            vec![r#"{"s": "a,]\"b[{"}"#, r#""x\\""#, "12", "[1, [2]]", "{}"]
        );
        assert!(array_elements(b"[]").is_empty());
        assert!(array_elements(b"[ ]").is_empty());
    }

    #[test]
    fn the_elements_of_an_objects_array_members_are_found_with_their_lines() {
        let object = br#"{"cursor": "x,[", "items": [ {"a": [1, 2]}, "s,]\"", 3 ], "meta": {"x": [9]}, "more": []}"#;
        let got: Vec<(String, Vec<&str>)> = array_member_starts(object)
            .into_iter()
            .map(|(key, starts)| {
                let heads = starts
                    .into_iter()
                    .map(|s| std::str::from_utf8(&object[s..s + 3]).unwrap())
                    .collect();
                (key, heads)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("items".to_string(), vec![r#"{"a"#, r#""s,"#, "3 ]"]),
                ("more".to_string(), vec![]),
            ]
        );
        // Through the input: a pretty-printed envelope page says where its records start.
        let page = b"{\n  \"items\": [\n    {\n      \"a\": 1\n    },\n    {\"a\": 2}\n  ],\n  \"cursor\": null\n}\n";
        match &items(page)[..] {
            [InputItem::Record {
                line: 1,
                member_lines,
                ..
            }] => assert_eq!(member_lines, &[("items".to_string(), vec![3, 6])]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let got = items(b"\xEF\xBB\xBF{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(lines_of(&got), vec![(1, true), (2, true)]);
        let got = items(b"\xEF\xBB\xBF[\n  {\"a\": 1}\n]\n");
        assert_eq!(lines_of(&got), vec![(2, true)]);
    }
}

/// `input` as it is, or gunzipped when it starts with the gzip magic bytes (exports such as
/// CloudTrail's `*.json.gz` files, `zcat`-less pipes). Decided by content, not by file name, so
/// stdin works too; concatenated gzip members read as one stream.
pub fn decompressed<R: BufRead>(mut input: R) -> std::io::Result<MaybeGzip<R>> {
    let head = input.fill_buf()?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    // UTF-16 with its byte order mark (Windows PowerShell 5's `Out-File` and `>`): each line
    // was a dead letter, and nothing said why. Read whole and written as UTF-8.
    let utf16 = match head {
        [0xff, 0xfe, ..] => Some(u16::from_le_bytes as fn([u8; 2]) -> u16),
        [0xfe, 0xff, ..] => Some(u16::from_be_bytes as fn([u8; 2]) -> u16),
        _ => None,
    };
    if let Some(unit) = utf16 {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        let units = bytes[2..]
            .chunks(2)
            .map(|pair| unit([pair[0], *pair.get(1).unwrap_or(&0)]));
        let text: String = char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        return Ok(MaybeGzip::Utf16(std::io::Cursor::new(text.into_bytes())));
    }
    Ok(if gzip {
        MaybeGzip::Gzip(std::io::BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(input),
        ))
    } else {
        MaybeGzip::Plain(input)
    })
}

/// What [`decompressed`] returns: the input, or a gunzipping reader over it.
pub enum MaybeGzip<R: BufRead> {
    Plain(R),
    Gzip(std::io::BufReader<flate2::bufread::MultiGzDecoder<R>>),
    /// UTF-16 input (with its byte order mark), written as UTF-8.
    Utf16(std::io::Cursor<Vec<u8>>),
}

impl<R: BufRead> Read for MaybeGzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            MaybeGzip::Plain(r) => r.read(buf),
            MaybeGzip::Gzip(r) => r.read(buf),
            MaybeGzip::Utf16(r) => r.read(buf),
        }
    }
}

impl<R: BufRead> BufRead for MaybeGzip<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self {
            MaybeGzip::Plain(r) => r.fill_buf(),
            MaybeGzip::Gzip(r) => r.fill_buf(),
            MaybeGzip::Utf16(r) => r.fill_buf(),
        }
    }

    fn consume(&mut self, amount: usize) {
        match self {
            MaybeGzip::Plain(r) => r.consume(amount),
            MaybeGzip::Gzip(r) => r.consume(amount),
            MaybeGzip::Utf16(r) => r.consume(amount),
        }
    }
}

#[cfg(test)]
mod decompression_tests {
    use super::decompressed;
    use std::io::{Read, Write};

    fn read_all(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decompressed(bytes).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    /// UTF-16 with its byte order mark, either order, is read as the text it holds.
    #[test]
    fn utf16_with_a_byte_order_mark_is_read_as_its_text() {
        let text = "[\r\n  {\"m\": \"caf\u{e9} \u{1f600}\"}\r\n]\r\n";
        let le: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = [0xfe, 0xff]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(read_all(&le), text.as_bytes());
        assert_eq!(read_all(&be), text.as_bytes());
        // Plain UTF-8 is left as it is.
        assert_eq!(read_all(text.as_bytes()), text.as_bytes());
    }

    #[test]
    fn gzip_is_recognised_by_content() {
        let text = b"{\"a\":1}\n{\"a\":2}\n";
        assert_eq!(read_all(text), text, "plain input passes through");
        assert_eq!(read_all(b""), b"", "empty input");
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(read_all(&gz(text)), text);
        let mut two = gz(text);
        two.extend(gz(text));
        assert_eq!(
            read_all(&two),
            [&text[..], &text[..]].concat(),
            "concatenated members"
        );
        // A truncated stream is a read error, not a silent short read.
        let cut = gz(&text.repeat(100));
        let mut out = Vec::new();
        assert!(decompressed(&cut[..cut.len() - 10])
            .unwrap()
            .read_to_end(&mut out)
            .is_err());
    }
}
