//! Secret references: configuration names where a secret is (`env:NAME` or `file:/path`), never
//! the secret itself, so config files can be shared and logged. One reading of them for every
//! stage (the mask key, API pollers' credentials): a file's trailing line breaks are dropped, an
//! empty secret is refused, and errors name the reference, never a value.

use std::path::PathBuf;

/// Whether `s` is a secret reference (`env:NAME` or `file:/path`) rather than a value.
pub fn is_secret_reference(s: &str) -> bool {
    s.starts_with("env:") || s.starts_with("file:")
}

/// Why a secret reference gave no secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("must be a secret reference `env:NAME` or `file:/path`")]
    NotAReference,
    /// The environment variable is not set (or not UTF-8).
    #[error("environment variable `{0}` is not set (or not UTF-8)")]
    EnvUnset(String),
    /// Not a `source` (its text is in this message already: a chain printer repeated it, QA).
    #[error("reading `{}`: {cause}", path.display())]
    File {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The reference resolves to nothing.
    #[error("`{0}` is empty")]
    Empty(String),
}

/// The secret `reference` names, read now (so a rotated file is picked up by the next call).
/// This is the one place the model crate reads anything: the environment or the named file.
pub fn resolve_secret(reference: &str) -> Result<Vec<u8>, SecretError> {
    let mut bytes = if let Some(name) = reference.strip_prefix("env:") {
        std::env::var(name)
            .map_err(|_| SecretError::EnvUnset(name.to_string()))?
            .into_bytes()
    } else if let Some(path) = reference.strip_prefix("file:") {
        std::fs::read(path).map_err(|cause| SecretError::File {
            path: path.into(),
            cause,
        })?
    } else {
        return Err(SecretError::NotAReference);
    };
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(SecretError::Empty(reference.to_string()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_and_errors_name_the_reference_only() {
        assert!(is_secret_reference("env:X") && is_secret_reference("file:/x"));
        assert!(!is_secret_reference("s3cr3t"));
        std::env::set_var("PERIMETER_MODEL_TEST_SECRET", "s3cr3t");
        assert_eq!(
            resolve_secret("env:PERIMETER_MODEL_TEST_SECRET").unwrap(),
            b"s3cr3t"
        );
        let unset = resolve_secret("env:PERIMETER_MODEL_TEST_UNSET").unwrap_err();
        assert!(matches!(&unset, SecretError::EnvUnset(n) if n == "PERIMETER_MODEL_TEST_UNSET"));
        let dir = std::env::temp_dir().join(format!("perimeter-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "key\r\n").unwrap();
        let reference = format!("file:{}", file.display());
        assert_eq!(resolve_secret(&reference).unwrap(), b"key");
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(resolve_secret(&reference), Err(SecretError::Empty(r)) if r == reference));
        let missing = format!("file:{}", dir.join("missing").display());
        assert!(matches!(
            resolve_secret(&missing),
            Err(SecretError::File { .. })
        ));
        assert!(matches!(
            resolve_secret("s3cr3t"),
            Err(SecretError::NotAReference)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
