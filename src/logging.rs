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
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
