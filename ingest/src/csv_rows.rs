//! CSV input: a header row, then one record per row, each read as a JSON object of strings keyed
//! by the header (`{"EVENT_TYPE": "Login", "USER_NAME": ...}`), which the declarative mappings
//! and rules then read like any vendor record. This is the shape of Salesforce Event Monitoring
//! log files and of the CSV exports admin consoles offer.
//!
//! A row that cannot be a record (another number of fields than the header, bytes that are not
//! UTF-8, a row longer than the line limit) becomes an [`InputItem::Invalid`] with its line
//! number and the reason; reading goes on with the next row. Quoted fields may span lines: a
//! record is reported at the line it starts on.

use std::io::{BufRead, BufReader, Read};

use crate::jsonl::{excerpt, input_digest, InputItem, JsonlReaderConfig};

/// The records of a CSV input, one [`InputItem`] per data row (blank lines are skipped).
pub struct CsvRows<R: Read> {
    reader: csv::Reader<CrlfAsLf<BufReader<R>>>,
    header: Option<Vec<String>>,
    config: JsonlReaderConfig,
    row: csv::ByteRecord,
    done: bool,
}

/// CSV text with each `\r\n` outside quoted fields read as `\n`. The csv reader counts the line
/// break of a row ending in `\r\n` only when it reads the next row, so each row of a CRLF file
/// (the usual CSV line ending, as Salesforce's) was reported one line early. Inside quotes the
/// bytes are kept as they are: they are the field's value.
struct CrlfAsLf<R> {
    inner: R,
    in_quotes: bool,
    /// A read error met after some bytes were given out in the same call: those come first,
    /// the error at the next call (a cut-off gzip's rows before the cut are all read).
    error: Option<std::io::Error>,
}

impl<R: BufRead> CrlfAsLf<R> {
    fn new(inner: R) -> CrlfAsLf<R> {
        CrlfAsLf {
            inner,
            in_quotes: false,
            error: None,
        }
    }
}

impl<R: BufRead> Read for CrlfAsLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut written = 0;
        let result = self.fill(out, &mut written);
        match result {
            Err(e) if written > 0 => {
                self.error = Some(e);
                Ok(written)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(written),
        }
    }
}

impl<R: BufRead> CrlfAsLf<R> {
    /// Copy into `out` what fits, `written` counting it (also when an error ends the copy).
    fn fill(&mut self, out: &mut [u8], written: &mut usize) -> std::io::Result<()> {
        while *written < out.len() {
            let available = self.inner.fill_buf()?;
            let Some(&first) = available.first() else {
                break;
            };
            match first {
                b'"' => {
                    self.in_quotes = !self.in_quotes;
                    out[*written] = first;
                    *written += 1;
                    self.inner.consume(1);
                }
                b'\r' if !self.in_quotes => {
                    self.inner.consume(1);
                    // A lone `\r` stays: line numbers count `\n`s, as `sed` and `grep -n` do.
                    // (An error reading on keeps it: the input ends there anyway.)
                    let next = match self.inner.fill_buf() {
                        Ok(next) => next.first().copied(),
                        Err(e) => {
                            out[*written] = first;
                            *written += 1;
                            return Err(e);
                        }
                    };
                    if next != Some(b'\n') {
                        out[*written] = first;
                        *written += 1;
                    }
                }
                _ => {
                    // Up to the next byte that needs a look (a quote, a `\r`).
                    let room = (out.len() - *written).min(available.len());
                    let plain = memchr::memchr2(b'"', b'\r', &available[..room]).unwrap_or(room);
                    let plain = plain.max(usize::from(first == b'\r'));
                    out[*written..*written + plain].copy_from_slice(&available[..plain]);
                    *written += plain;
                    self.inner.consume(plain);
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> CsvRows<R> {
    pub fn new(input: R, config: JsonlReaderConfig) -> CsvRows<R> {
        let reader = csv::ReaderBuilder::new()
            // The header is read as a row of its own, so that its problems are reported too.
            .has_headers(false)
            // Rows with another number of fields are reported here, not by the reader.
            .flexible(true)
            .from_reader(CrlfAsLf::new(BufReader::new(input)));
        CsvRows {
            reader,
            header: None,
            config,
            row: csv::ByteRecord::new(),
            done: false,
        }
    }

    /// The line the row just read starts on. The reader reports the line it started reading at,
    /// which is a blank line before the row when there is one; the row ends on the line before
    /// the reader's position (it consumed the row's line break), less its quoted line breaks.
    fn start_line(&self) -> u64 {
        let reported = self.row.position().map_or(0, csv::Position::line);
        let breaks = self
            .row
            .iter()
            .map(|f| memchr::memchr_iter(b'\n', f).count() as u64)
            .sum::<u64>();
        let computed = self.reader.position().line().saturating_sub(1 + breaks);
        reported.max(computed)
    }

    /// Physical lines read so far.
    pub fn lines_read(&self) -> u64 {
        self.reader.position().line().saturating_sub(1)
    }

    fn invalid(&self, line: u64, reason: String) -> InputItem {
        let joined = match &self.header {
            Some(header) => labelled_fields(header, &self.row),
            None => self.row.iter().collect::<Vec<_>>().join(&b","[..]),
        };
        InputItem::Invalid {
            line,
            reason,
            excerpt: excerpt(&joined, self.config.excerpt_bytes),
            digest: input_digest(&joined),
        }
    }

    /// The current row as a record, or why it is not one.
    fn record(&self, line: u64, header: &[String]) -> InputItem {
        let bytes: usize = self.row.iter().map(<[u8]>::len).sum();
        if bytes > self.config.max_line_bytes {
            return self.invalid(
                line,
                format!(
                    "CSV row of {bytes} bytes is longer than the {} byte limit (raise max_line_bytes to read it)",
                    self.config.max_line_bytes
                ),
            );
        }
        if self.row.len() != header.len() {
            return self.invalid(
                line,
                format!(
                    "CSV row has {} fields, the header has {}",
                    self.row.len(),
                    header.len()
                ),
            );
        }
        let mut object = sonic_rs::Object::with_capacity(header.len());
        for (name, field) in header.iter().zip(self.row.iter()) {
            let Ok(text) = std::str::from_utf8(field) else {
                return self.invalid(line, format!("CSV field `{name}` is not valid UTF-8"));
            };
            object.insert(name, sonic_rs::Value::from(text));
        }
        InputItem::Record {
            line,
            value: object.into_value(),
            member_lines: Vec::new(),
        }
    }
}

impl<R: Read> Iterator for CsvRows<R> {
    type Item = Result<InputItem, std::io::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let read = self.reader.read_byte_record(&mut self.row);
            let line = self.start_line();
            match read {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Ok(true) => {}
                Err(e) => match e.into_kind() {
                    csv::ErrorKind::Io(io) => {
                        self.done = true;
                        return Some(Err(io));
                    }
                    other => {
                        return Some(Ok(self.invalid(line, format!("invalid CSV: {other:?}"))))
                    }
                },
            }
            // A blank line reads as one empty field.
            if self.row.len() == 1 && self.row[0].is_empty() {
                continue;
            }
            let Some(header) = &self.header else {
                match header_names(&self.row) {
                    Ok(names) => self.header = Some(names),
                    Err(reason) => {
                        // Without a header no row can be read: report it and stop.
                        self.done = true;
                        return Some(Ok(self.invalid(line, reason)));
                    }
                }
                continue;
            };
            return Some(Ok(self.record(line, header)));
        }
    }
}

/// A row that cannot be read, as `name="value"` pairs by the header (`column<N>` past its end):
/// the dead-letter masking then knows which value is a `password` column's, as it does for a
/// row that became a record; the fields alone, joined by commas, would only be masked for
/// their shapes.
fn labelled_fields(header: &[String], row: &csv::ByteRecord) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, field) in row.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        match header.get(i) {
            Some(name) => out.extend_from_slice(name.as_bytes()),
            None => out.extend_from_slice(format!("column{}", i + 1).as_bytes()),
        }
        out.extend_from_slice(b"=\"");
        for &b in field {
            if matches!(b, b'"' | b'\\') {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    }
    out
}

/// The column names of a header row: UTF-8, trimmed (a byte-order mark at the start of the
/// file goes), none empty, none twice (a record holds one value per name: the second column
/// of a name silently replaced the first's value).
fn header_names(row: &csv::ByteRecord) -> Result<Vec<String>, String> {
    let names: Vec<String> = row
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let field = if i == 0 {
                field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
            } else {
                field
            };
            let name = std::str::from_utf8(field)
                .map_err(|_| format!("CSV header column {} is not valid UTF-8", i + 1))?
                .trim();
            if name.is_empty() {
                return Err(format!("CSV header column {} has no name", i + 1));
            }
            Ok(name.to_owned())
        })
        .collect::<Result<_, _>>()?;
    for (i, name) in names.iter().enumerate() {
        if let Some(first) = names[..i].iter().position(|n| n == name) {
            return Err(format!(
                "CSV header columns {} and {} are both named `{name}`",
                first + 1,
                i + 1
            ));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::raw_prelude::*;

    fn items(text: &[u8]) -> Vec<InputItem> {
        CsvRows::new(text, JsonlReaderConfig::default())
            .map(|i| i.expect("no IO error"))
            .collect()
    }

    #[test]
    fn rows_become_objects_keyed_by_the_header() {
        let text = b"\xEF\xBB\xBF\"EVENT_TYPE\",\"USER_NAME\",\"URI\"\n\"Login\",\"a@example.org\",\"/x,y\"\n\n\"Logout\",\"b@example.org\",\"multi\nline\"\n";
        let got = items(text);
        assert_eq!(got.len(), 2, "{got:?}");
        let InputItem::Record { line, value, .. } = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(*line, 2);
        assert_eq!(
            value.get("EVENT_TYPE").and_then(|v| v.as_str()),
            Some("Login")
        );
        assert_eq!(value.get("URI").and_then(|v| v.as_str()), Some("/x,y"));
        let InputItem::Record { line, value, .. } = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(*line, 4);
        assert_eq!(
            value.get("URI").and_then(|v| v.as_str()),
            Some("multi\nline")
        );
        let mut rows = CsvRows::new(&text[..], JsonlReaderConfig::default());
        rows.by_ref().for_each(drop);
        assert_eq!(rows.lines_read(), 5);
    }

    #[test]
    fn rows_of_a_crlf_file_have_the_lines_of_the_same_file_with_lf() {
        let lf = b"a,b\n1,2\n\n\"x\r\ny\",3\n1,2,3\n4,5\n".to_vec();
        // Line breaks as CRLF, but the one inside the quoted field, which stays as it is.
        let crlf = b"a,b\r\n1,2\r\n\r\n\"x\r\ny\",3\r\n1,2,3\r\n4,5\r\n".to_vec();
        let lines = |text: &[u8]| -> Vec<u64> {
            items(text)
                .iter()
                .map(|item| match item {
                    InputItem::Record { line, .. } | InputItem::Invalid { line, .. } => *line,
                })
                .collect()
        };
        assert_eq!(lines(&lf), vec![2, 4, 6, 7]);
        assert_eq!(lines(&crlf), lines(&lf));
        let InputItem::Record { value, .. } = &items(&crlf)[1] else {
            panic!()
        };
        assert_eq!(value.get("a").and_then(|v| v.as_str()), Some("x\r\ny"));
    }

    #[test]
    fn every_row_read_before_a_read_error_is_given_out_before_it() {
        /// The bytes in chunks of 100, then an error (a cut-off gzip).
        struct CutOff(Vec<u8>, usize);
        impl Read for CutOff {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                if self.1 >= self.0.len() {
                    return Err(std::io::Error::other("incomplete deflate stream"));
                }
                let n = out.len().min(100).min(self.0.len() - self.1);
                out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        for ending in ["\n", "\r\n"] {
            let mut text = format!("n,text{ending}");
            for i in 0..500 {
                text.push_str(&format!("{i},\"row {i}\"{ending}"));
            }
            // Cut inside the last row.
            text.truncate(text.len() - 3);
            let mut rows = CsvRows::new(CutOff(text.into_bytes(), 0), JsonlReaderConfig::default());
            let read = rows.by_ref().take_while(Result::is_ok).count();
            assert_eq!(read, 499, "{ending:?}: every whole row before the error");
        }
    }

    #[test]
    fn bad_rows_are_reported_with_line_and_reason_and_reading_goes_on() {
        let text = b"a,b\n1,2\n1,2,3\n\xff\xfe,2\n3,4\n";
        let got = items(text);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(&got[0], InputItem::Record { line: 2, .. }));
        assert!(
            matches!(&got[1], InputItem::Invalid { line: 3, reason, excerpt, .. } if reason.contains("3 fields, the header has 2")
                && excerpt == "a=\"1\", b=\"2\", column3=\"3\"")
        );
        assert!(
            matches!(&got[2], InputItem::Invalid { line: 4, reason, .. } if reason.contains("`a` is not valid UTF-8"))
        );
        assert!(matches!(&got[3], InputItem::Record { line: 5, .. }));
    }

    #[test]
    fn a_header_without_usable_names_stops_with_one_dead_letter() {
        let got = items(b"a,,c\n1,2,3\n");
        assert!(
            matches!(&got[..], [InputItem::Invalid { line: 1, reason, .. }] if reason.contains("column 2 has no name")),
            "{got:?}"
        );
        assert!(items(b"").is_empty());
        // Two columns of one name: the second's values replaced the first's.
        let got = items(b"user,action,user\nalice,login,mallory\n");
        assert!(
            matches!(&got[..], [InputItem::Invalid { line: 1, reason, .. }] if reason.contains("columns 1 and 3 are both named `user`")),
            "{got:?}"
        );
    }

    proptest::proptest! {
        /// Any bytes: no panic, no IO error, every item at a line of the input.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            for item in CsvRows::new(&bytes[..], JsonlReaderConfig::default()) {
                let line = match item.expect("reading a slice") {
                    InputItem::Record { line, .. } | InputItem::Invalid { line, .. } => line,
                };
                proptest::prop_assert!((1..=lines).contains(&line), "line {} of {}", line, lines);
            }
        }
    }

    #[test]
    fn rows_over_the_limit_are_dead_letters() {
        let config = JsonlReaderConfig {
            max_line_bytes: 8,
            ..JsonlReaderConfig::default()
        };
        let got: Vec<InputItem> = CsvRows::new(&b"a\nshort\nmuch too long\n"[..], config)
            .map(|i| i.expect("no IO error"))
            .collect();
        assert!(matches!(&got[0], InputItem::Record { .. }));
        assert!(
            matches!(&got[1], InputItem::Invalid { line: 3, reason, .. } if reason.contains("byte limit"))
        );
    }
}
