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

/// Append `s` to `out` as a JSON string literal (quotes included).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // The usual case, settled by a loop the compiler vectorizes: nothing to escape.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
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

#[cfg(test)]
mod tests {
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
    fn escapes_are_the_short_ones_where_json_has_them() {
        let mut out = Vec::new();
        write_json_str(&mut out, "a\"b\\c\nd\u{1}e");
        assert_eq!(out, br#""a\"b\\c\nd\u0001e""#);
    }
}
