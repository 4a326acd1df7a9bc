//! Writing JSON string literals, shared by the stages that emit JSON text themselves (masking's
//! write walk, the store's document text) instead of going through a serializer.

/// The escape of each byte inside a JSON string: `0` none, `u` as `\u00XX`, else `\` + it.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// `bytes` with each lone UTF-16 surrogate escape written as `\ufffd` (the replacement
/// character), or `None` when it holds none. JSON text may escape half of a surrogate pair
/// (`"\ud83d"`): JavaScript's `JSON.stringify` writes one for a string cut in the middle of an
/// emoji, so a vendor that cuts a display name or message to a length sends it. The parsers
/// refuse it, and a page (or record) holding one would be refused whole, for ever. The length
/// is kept, so offsets and line numbers of the text stay true.
pub fn without_lone_surrogates(bytes: &[u8]) -> Option<Vec<u8>> {
    let unit = |at: usize| -> Option<u16> {
        let hex = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
        u16::from_str_radix(hex, 16).ok()
    };
    let escaped_unit = |at: usize| -> Option<u16> {
        (bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'u'))
            .then(|| unit(at + 2))
            .flatten()
    };
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    // (A backslash last in the input puts `i` past its end.)
    while let Some(found) = bytes.get(i..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        let at = i + found;
        i = at + 2;
        let Some(u) = escaped_unit(at) else {
            continue;
        };
        i = at + 6;
        let lone = match u {
            0xD800..=0xDBFF => match escaped_unit(at + 6) {
                Some(0xDC00..=0xDFFF) => {
                    i = at + 12;
                    false
                }
                _ => true,
            },
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if lone {
            out.get_or_insert_with(|| bytes.to_vec())[at + 2..at + 6].copy_from_slice(b"fffd");
        }
    }
    out
}

/// `parse(bytes)`, or, when that fails and `bytes` holds lone surrogate escapes, `parse` of
/// the text with them read as the replacement character ([`without_lone_surrogates`]). Clean
/// input costs nothing extra: the text is only searched for them once a first parse failed.
pub fn parse_with_lone_surrogates<T, E>(
    bytes: &[u8],
    parse: impl Fn(&[u8]) -> Result<T, E>,
) -> Result<T, E> {
    parse(bytes).or_else(|e| match without_lone_surrogates(bytes) {
        Some(fixed) => parse(&fixed),
        None => Err(e),
    })
}

/// Append `s` to `out` as a JSON string literal (quotes included).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // The usual case: nothing to escape.
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc = ESCAPE[usize::from(c)];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if esc == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any byte of `bytes` needs an escape. Whole blocks are checked without an early exit
/// per byte, which the compiler turns into vector compares: a short-circuiting `any` over the
/// bytes ran byte by byte, and was the largest single cost of writing a stored event's text.
fn needs_escape(bytes: &[u8]) -> bool {
    let escaped = |b: u8| u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\');
    let (blocks, rest) = bytes.as_chunks::<32>();
    for block in blocks {
        let mut any = 0u8;
        for &b in block {
            any |= escaped(b);
        }
        if any != 0 {
            return true;
        }
    }
    // Most strings (names, actions, addresses) are shorter than a block: 8 bytes at a time.
    let (words, tail) = rest.as_chunks::<8>();
    words
        .iter()
        .any(|w| word_needs_escape(u64::from_le_bytes(*w)))
        || tail.iter().any(|&b| escaped(b) != 0)
}

/// Whether one of the 8 bytes of `w` is below 0x20, `"` or `\\` (exact: the borrows of these
/// tests never make a byte that is none of them look like one).
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    below_space || has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\')))
}

#[cfg(test)]
mod tests {

    /// Lone halves of surrogate pairs become the replacement character, in place; pairs,
    /// other escapes and an escaped backslash before a `u` stay.
    #[test]
    fn lone_surrogate_escapes_become_the_replacement_character() {
        let fixed = |text: &str| {
            super::without_lone_surrogates(text.as_bytes()).map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(
            fixed(r#"{"m": "Signed in \ud83d", "n": "\uDE00 x"}"#).as_deref(),
            Some(r#"{"m": "Signed in \ufffd", "n": "\ufffd x"}"#)
        );
        assert_eq!(
            fixed(r#"{"m": "\ud83d\ude00 \ud83d\u0041"}"#).as_deref(),
            Some(r#"{"m": "\ud83d\ude00 \ufffd\u0041"}"#)
        );
        for clean in [
            "ends with a backslash \\",
            "\\",
            r#"{"m": "\ud83d\ude00", "p": "C:\\ud83d", "e": "\n\"\u00e9"}"#,
            r#"{"cut": "\ud8"}"#,
            "plain",
        ] {
            assert_eq!(fixed(clean), None, "{clean}");
        }
        let repaired = fixed(r#"{"m": "a\ud83d"}"#).unwrap();
        let value: serde_json::Value = serde_json::from_str(&repaired).unwrap();
        assert_eq!(value["m"], "a\u{fffd}");
    }

    use super::*;

    proptest::proptest! {
        /// Whatever the text, the literal reads back as that text.
        #[test]
        fn literals_read_back_as_the_text(s in "(\\PC|[\\x00-\\x1f\"\\\\])*") {
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).expect("valid JSON string");
            proptest::prop_assert_eq!(back, s);
        }
    }

    #[test]
    fn an_escape_is_found_wherever_it_is_in_a_block() {
        for len in [1, 31, 32, 33, 64, 100] {
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x1f] {
                    let mut text = vec![b'a'; len];
                    text[at] = special;
                    assert!(needs_escape(&text), "{len} {at} {special}");
                }
            }
            assert!(!needs_escape(&vec![b' '; len]));
        }
    }

    proptest::proptest! {
        /// The word test agrees with the byte test on any 8 bytes.
        #[test]
        fn the_word_test_is_the_byte_test(
            w in proptest::collection::vec(proptest::sample::select(vec![
                0x00u8, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xa2,
                0xdc, 0xff, b'a',
            ]), 8)
        ) {
            let bytewise = w.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            let word: [u8; 8] = w.try_into().expect("8 bytes");
            proptest::prop_assert_eq!(word_needs_escape(u64::from_le_bytes(word)), bytewise);
        }
    }

    #[test]
    fn escapes_are_the_short_ones_where_json_has_them() {
        let mut out = Vec::new();
        write_json_str(&mut out, "a\"b\\c\nd\u{1}e");
        assert_eq!(out, br#""a\"b\\c\nd\u0001e""#);
    }
}

/// Deepest nesting of arrays and objects accepted (serde_json's default). The parser and every
/// walk over a record recurse once per level, so an adversarial `[[[[...` line must become a
/// dead letter, not a stack overflow.
pub const MAX_JSON_NESTING: usize = 128;

/// Whether the JSON text nests deeper than `max` (strings are skipped, so brackets inside them
/// do not count). Audit records have a few dozen brackets at most: counting them with a SIMD
/// search settles almost every line without the byte-by-byte pass.
pub fn json_nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    if memchr::memchr2_iter(b'[', b'{', bytes).count() <= max {
        return false;
    }
    let mut depth = 0usize;
    let mut strings = JsonStrings::default();
    for &b in bytes {
        if !strings.outside(b) {
            continue;
        }
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Follows JSON text byte by byte to tell structure from the inside of strings (escapes
/// included), without parsing it.
#[derive(Debug, Default)]
pub struct JsonStrings {
    in_string: bool,
    escaped: bool,
}

impl JsonStrings {
    /// Whether the last byte given to [`Self::outside`] left the text inside a string.
    pub fn in_string(&self) -> bool {
        self.in_string
    }

    /// Whether `b` stands outside every string: an opening quote does, a closing one does not.
    pub fn outside(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return false;
        }
        self.in_string = b == b'"';
        true
    }
}
