//! Identities compared as SaaS tools compare them: case-folded (`BOB@example.com` is
//! `bob@example.com`), for the keys the correlations and the behavioural detectors hash.

/// Hand `text` case-folded to `write`, in pieces whose concatenation is the folded text (a
/// streaming hash of the pieces is the hash of the whole): lowercase text as it is, so keys of
/// lowercase values written before folding still match; ASCII through a small buffer, without
/// allocating; other text through its Unicode lowercase.
pub(crate) fn write_case_folded(text: &str, mut write: impl FnMut(&[u8])) {
    let bytes = text.as_bytes();
    if !bytes
        .iter()
        .any(|b| !b.is_ascii() || b.is_ascii_uppercase())
    {
        write(bytes);
    } else if text.is_ascii() {
        let mut buf = [0u8; 64];
        for chunk in bytes.chunks(buf.len()) {
            let piece = &mut buf[..chunk.len()];
            piece.copy_from_slice(chunk);
            piece.make_ascii_lowercase();
            write(piece);
        }
    } else {
        write(text.to_lowercase().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(text: &str) -> String {
        let mut out = Vec::new();
        write_case_folded(text, |piece| out.extend_from_slice(piece));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_is_handed_on_lowercase_in_pieces_that_make_it_whole() {
        assert_eq!(folded("bob@example.com"), "bob@example.com");
        assert_eq!(folded("Carol@Contoso.COM"), "carol@contoso.com");
        let long = "ABC".repeat(50);
        assert_eq!(folded(&long), "abc".repeat(50));
        assert_eq!(folded("ÅSA@Exempel.se"), "åsa@exempel.se");
    }
}
