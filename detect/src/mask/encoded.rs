//! Secrets written inside encoded text: percent-encoding (`redirect_uri=https%3A%2F%2Fapp%2F%3F
//! access_token%3D...`, a presigned URL passed as a parameter) and JSON `\u00XX` escapes left in
//! a string (a response body logged as text: `...\u0026X-Amz-Signature=...`). The value patterns
//! read a decoded copy; what they find there is mapped back onto the encoded bytes, which are
//! what gets replaced.
//!
//! Only escapes of ASCII bytes are decoded: that is all a secret's syntax (`=`, `&`, `:`, `@`,
//! `/`, `?`) needs, and the copy stays valid UTF-8 without judging multi-byte sequences. Nested
//! encodings (`%253D`) are decoded up to [`MAX_LEVELS`] times.

/// How many encoding levels are undone (`%25` in `%253D` is one level).
const MAX_LEVELS: usize = 3;

/// A decoded copy of a text and, for each of its bytes, the byte range of the encoded text it
/// came from.
pub(crate) struct Decoded {
    pub text: String,
    spans: Vec<(usize, usize)>,
}

impl Decoded {
    /// The range of the encoded text that `start..end` of the decoded copy came from.
    pub fn encoded_range(&self, start: usize, end: usize) -> std::ops::Range<usize> {
        let first = self.spans[start].0;
        let last = self.spans[end.max(start + 1) - 1].1;
        first..last
    }
}

/// Whether `text` holds an escape [`decode`] would undo (cheap: most texts have no `%` or `\`).
fn has_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memchr2_iter(b'%', b'\\', bytes).any(|i| escape_at(bytes, i).is_some())
}

/// `text` decoded once, twice, ... up to [`MAX_LEVELS`] times while it still has escapes, each
/// copy mapped onto `text`. Every level is searched: a secret may itself hold what looks like an
/// escape (`%25` in a signature), which a further level would garble.
pub(crate) fn levels(text: &str) -> Vec<Decoded> {
    let mut out: Vec<Decoded> = Vec::new();
    while out.len() < MAX_LEVELS {
        let inner = match out.last() {
            None => decode_level(text),
            Some(outer) => decode_level(&outer.text).map(|inner| Decoded {
                spans: inner
                    .spans
                    .iter()
                    .map(|&(s, e)| (outer.spans[s].0, outer.spans[e - 1].1))
                    .collect(),
                text: inner.text,
            }),
        };
        match inner {
            Some(d) => out.push(d),
            None => break,
        }
    }
    out
}

/// One level of decoding.
fn decode_level(text: &str) -> Option<Decoded> {
    if !has_escape(text) {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut spans = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match escape_at(bytes, i) {
            Some((byte, len)) => {
                out.push(byte);
                spans.push((i, i + len));
                i += len;
            }
            None => {
                out.push(bytes[i]);
                spans.push((i, i + 1));
                i += 1;
            }
        }
    }
    // Only ASCII escapes were replaced, by ASCII bytes: the rest is the input's UTF-8 as it was.
    let text = String::from_utf8(out).ok()?;
    Some(Decoded { text, spans })
}

/// The ASCII byte an escape at `i` stands for, and the escape's length.
fn escape_at(bytes: &[u8], i: usize) -> Option<(u8, usize)> {
    let hex = |s: &[u8]| -> Option<u8> {
        let s = std::str::from_utf8(s).ok()?;
        // Printable ASCII and the whitespace a secret may span (a PEM key's line breaks).
        u8::from_str_radix(s, 16)
            .ok()
            .filter(|b| matches!(b, b' '..=b'~' | b'\t' | b'\n' | b'\r'))
    };
    match bytes.get(i..)? {
        [b'%', a, b, ..] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {
            Some((hex(&[*a, *b])?, 3))
        }
        [b'\\', b'u', b'0', b'0', a, b, ..] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {
            Some((hex(&[*a, *b])?, 6))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_and_unicode_escapes_with_their_origin() {
        let text = r"a%3Db\u0026c%2541";
        let levels = levels(text);
        assert_eq!(levels.len(), 2);
        assert_eq!(levels[0].text, "a=b&c%41");
        assert_eq!(&text[levels[0].encoded_range(5, 8)], "%2541");
        let d = &levels[1];
        // `%2541` is `%41` after one level, `A` after two.
        assert_eq!(d.text, "a=b&cA");
        assert_eq!(d.encoded_range(1, 2), 1..4);
        assert_eq!(&text[d.encoded_range(2, 4)], r"b\u0026");
        assert_eq!(&text[d.encoded_range(5, 6)], "%2541");
        assert_eq!(&text[d.encoded_range(0, 6)], text);
    }

    #[test]
    fn leaves_non_ascii_and_incomplete_escapes() {
        assert!(levels("100% sure, 50%").is_empty());
        assert!(levels(r"caf\u00e9 %C3%A9 %zz \u12 %00 %7F").is_empty());
        assert!(!has_escape("plain text"));
        let levels = levels("é%41é");
        let d = &levels[0];
        assert_eq!(d.text, "éAé");
        assert_eq!(d.encoded_range(2, 3), 2..5);
    }
}
