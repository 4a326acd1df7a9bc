//! Logs on stderr, masked: a log line can quote what came from outside (a vendor's error text,
//! a next-page link, a file name) and nothing may leave the process unmasked, logs included.

use std::io::Write;
use std::sync::OnceLock;

use perimeter_detect::mask::{MaskConfig, SecretMasker};
use perimeter_model::Masker;

/// The configuration's masking, once it is loaded.
static CONFIG: OnceLock<MaskConfig> = OnceLock::new();

/// Mask log lines and terminal messages as `config` masks, from now on. The masker is built
/// at the first line to mask: most commands log nothing.
pub fn use_mask_config(config: MaskConfig) {
    let _ = CONFIG.set(config);
}

/// `text` masked as log lines are: by the configuration's masker, the built-in one before the
/// configuration is loaded or should its masker not build (a key reference not set in this
/// shell is the command's own error to report).
pub fn masked(text: &str) -> String {
    static CONFIGURED: OnceLock<SecretMasker> = OnceLock::new();
    static BUILT_IN: OnceLock<SecretMasker> = OnceLock::new();
    let masker = match CONFIG.get() {
        Some(config) => CONFIGURED.get_or_init(|| SecretMasker::new(config).unwrap_or_default()),
        None => BUILT_IN.get_or_init(SecretMasker::default),
    };
    masker.mask_text(text)
}

/// Where the log formatter writes: one [`MaskedLine`] per log event.
pub struct MaskedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MaskedStderr {
    type Writer = MaskedLine;

    fn make_writer(&'a self) -> MaskedLine {
        MaskedLine(Vec::new())
    }
}

/// One formatted log event, masked as a whole (a secret may span the formatter's writes) and
/// written to stderr when the formatter is done with it.
pub struct MaskedLine(Vec<u8>);

impl Write for MaskedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MaskedLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = masked(&String::from_utf8_lossy(&self.0));
        let line = without_control_characters(&line);
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// `line` with the characters that could forge or hide log lines written as escapes: a line
/// break inside it (`\n`, `\r`), other control characters and right-to-left overrides (`\u001b`,
/// `\u202e`). A value from outside (a file name, a destination's name a tenant admin chose)
/// could otherwise start a line of its own, or drive the terminal. The colour codes the log
/// formatter writes at a terminal (`ESC [ ... m`) stay, as does the line's final newline. In
/// JSON lines only the overrides can occur (the encoder escapes control characters), and
/// `\u202e` is JSON's own escape of the same character.
fn without_control_characters(line: &str) -> std::borrow::Cow<'_, str> {
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let body = line.strip_suffix('\n').unwrap_or(line);
    if !body
        .chars()
        .any(|c| (c.is_control() && c != '\t') || bidi(c))
    {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for (at, c) in body.char_indices() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push(c),
            '\u{1b}' if is_colour_code(&body[at..]) => out.push(c),
            c if c.is_control() || bidi(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    if line.ends_with('\n') {
        out.push('\n');
    }
    std::borrow::Cow::Owned(out)
}

/// Whether `text` starts with a colour code (SGR: `ESC [`, digits and `;`, `m`).
fn is_colour_code(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("\u{1b}[") else {
        return false;
    };
    let params = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    rest.as_bytes().get(params) == Some(&b'm')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value with a line break, a terminal escape or a right-to-left override forged a log
    /// line of its own, or hid one: written as escapes; the formatter's colours and the final
    /// newline stay, and a clean line is untouched.
    #[test]
    fn control_characters_in_a_line_are_escaped() {
        let forged = "INFO destination=\"ops\n2026-12-06T00:00:00Z ERROR forged\" \u{1b}]0;title\u{7} \u{202e}nimda\n";
        let line = without_control_characters(forged);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.ends_with('\n'));
        assert!(
            line.contains("ops\\n2026") && line.contains("\\u001b]0;title\\u0007"),
            "{line}"
        );
        assert!(line.contains("\\u202enimda"), "{line}");
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ok\n";
        assert_eq!(without_control_characters(coloured), coloured);
        let clean = "INFO all\tfine\n";
        assert!(matches!(
            without_control_characters(clean),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_line_is_masked_whole_when_written() {
        let mut line = MaskedLine(Vec::new());
        // The formatter's writes may cut a secret in two.
        line.write_all(b"poll failed: vendor says \"key AKIAIOSF")
            .unwrap();
        line.write_all(b"ODNN7EXAMPLE password=Hunter2Qa3\"\n")
            .unwrap();
        let text = masked(&String::from_utf8_lossy(&line.0));
        line.0.clear();
        assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"), "{text}");
        assert!(!text.contains("Hunter2Qa3"), "{text}");
        assert!(text.starts_with("poll failed: vendor says"), "{text}");
    }
}
