//! Detection state on disk (behavioural baselines, open correlation windows): files written
//! atomically (JSON, or a compact binary form for the large ones), and set aside rather than
//! fatal when they cannot be used.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::DetectError;

fn io(path: &Path) -> impl Fn(std::io::Error) -> DetectError + '_ {
    move |cause| DetectError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

fn write_io(path: &Path) -> impl Fn(std::io::Error) -> DetectError + '_ {
    move |cause| DetectError::Write {
        path: path.to_path_buf(),
        cause,
    }
}

/// Write `value` as JSON to `path` atomically: a temp file beside it, renamed over it, so a
/// crash of the process leaves either the old file or the new one. `durable`: fsync the file
/// before the rename, so a crash of the machine does too (costs a disk flush). `what` names the
/// file in errors.
pub(crate) fn write_json<T: Serialize>(
    path: &Path,
    what: &str,
    value: &T,
    durable: bool,
) -> crate::Result<()> {
    write_atomically(path, what, durable, |w| {
        serde_json::to_writer(w, value).map_err(|e| e.to_string())
    })
}

/// The first bytes of a state file in the binary form ([`write_binary`]); JSON ones start `{`.
const BINARY_MAGIC: &[u8; 8] = b"PRMSTAT1";

/// [`write_json`] in a compact binary form (postcard: varints, no field names), for state that
/// grows with the entities tracked: UEBA at 113k entities is 47 MiB instead of 99, restored in
/// a quarter of the time. [`read_state`] reads both forms. `value`'s type must not skip fields when
/// serializing (`skip_serializing_if`): the binary form has no field names to tell.
pub(crate) fn write_binary<T: Serialize>(
    path: &Path,
    what: &str,
    value: &T,
    durable: bool,
) -> crate::Result<()> {
    write_atomically(path, what, durable, |w| {
        w.write_all(BINARY_MAGIC).map_err(|e| e.to_string())?;
        let mut out = KeepsIoError {
            inner: w,
            error: None,
        };
        postcard::to_io(value, &mut out)
            .map(|_| ())
            .map_err(|e| match out.error.take() {
                Some(io) => io.to_string(),
                None => e.to_string(),
            })
    })
}

/// A writer that keeps the I/O error it passed on: postcard reports any failed write as "The
/// serialize buffer is full" (QA: a snapshot on a full disk said that, not the disk's error).
struct KeepsIoError<'w, W: Write> {
    inner: &'w mut W,
    error: Option<std::io::Error>,
}

impl<W: Write> KeepsIoError<'_, W> {
    /// Keep `e`, and pass on a copy of it.
    fn keep(&mut self, e: std::io::Error) -> std::io::Error {
        let passed = std::io::Error::new(e.kind(), e.to_string());
        self.error = Some(e);
        passed
    }
}

impl<W: Write> Write for KeepsIoError<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.inner.write(bytes).map_err(|e| self.keep(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| self.keep(e))
    }
}

fn write_atomically(
    path: &Path,
    what: &str,
    durable: bool,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), String>,
) -> crate::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_io(dir))?;
    }
    let written = write_tmp(&tmp, what, durable, write);
    if written.is_err() {
        // A cut-off temp file is of no use, and on a full disk it holds space that the next
        // attempt (or another state file) needs.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::rename(&tmp, path).map_err(write_io(path))?;
    Ok(())
}

fn write_tmp(
    tmp: &Path,
    what: &str,
    durable: bool,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), String>,
) -> crate::Result<()> {
    let file = File::create(tmp).map_err(write_io(tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write(&mut w)
        .map_err(|e| DetectError::Other(format!("writing {what} {}: {e}", tmp.display())))?;
    w.flush().map_err(write_io(tmp))?;
    let file = w.into_inner().map_err(|e| write_io(tmp)(e.into_error()))?;
    if durable {
        file.sync_all().map_err(write_io(tmp))?;
    }
    Ok(())
}

/// Read a file written by [`write_binary`] or by [`write_json`] (as earlier versions wrote every
/// state file), telling them apart by their first bytes.
pub(crate) fn read_state<T: DeserializeOwned>(path: &Path, what: &str) -> crate::Result<T> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    match bytes.strip_prefix(BINARY_MAGIC) {
        Some(body) => postcard::from_bytes(body)
            .map_err(|e| DetectError::Other(format!("{what} {}: {e}", path.display()))),
        None => serde_json::from_slice(&bytes).map_err(|e| {
            DetectError::Other(format!(
                "{what} {}: line {} column {}: {e}",
                path.display(),
                e.line(),
                e.column()
            ))
        }),
    }
}

/// Restore state from the file at `path` with `restore`. A file that cannot be used (malformed,
/// another format, another key) is set aside (see [`set_aside`]) and `Err((where, why))` is
/// returned, for the caller to start empty; failing to read it (permissions, IO) is an error,
/// since the file itself may be fine.
pub(crate) fn restore_or_set_aside<T>(
    path: &Path,
    restore: impl FnOnce() -> crate::Result<T>,
) -> crate::Result<Result<T, (PathBuf, String)>> {
    match restore() {
        Ok(value) => Ok(Ok(value)),
        Err(e @ DetectError::Io { .. }) => Err(e),
        Err(unusable) => Ok(Err((set_aside(path)?, unusable.to_string()))),
    }
}

/// [`restore_or_set_aside`] for a state file written by [`write_json`] or [`write_binary`]:
/// `apply` takes what the file holds, and its error (another format, another key) makes the
/// file as unusable as malformed content does. The error names `what` and the file.
pub(crate) fn restore_state<S: DeserializeOwned, T>(
    path: &Path,
    what: &str,
    apply: impl FnOnce(S) -> Result<T, String>,
) -> crate::Result<Result<T, (PathBuf, String)>> {
    restore_or_set_aside(path, || {
        apply(read_state(path, what)?)
            .map_err(|e| DetectError::Other(format!("{what} {}: {e}", path.display())))
    })
}

/// Rename an unusable state file to `<name>.unreadable-<UTC time>` and return where it went:
/// state comes back by warming up again, while refusing to start would stop all detection.
fn set_aside(path: &Path) -> crate::Result<PathBuf> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let aside = path.with_file_name(format!("{name}.unreadable-{stamp}"));
    std::fs::rename(path, &aside).map_err(io(path))?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same for a binary snapshot larger than the writer's buffer: the disk's error, not
    /// postcard's "The serialize buffer is full" (QA).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_under_a_binary_snapshot_names_the_disk_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ueba.snapshot");
        std::os::unix::fs::symlink("/dev/full", dir.path().join("ueba.snapshot.tmp")).unwrap();
        let value: Vec<String> = (0..20_000).map(|i| format!("entity {i}")).collect();
        let error = write_binary(&path, "ueba snapshot", &value, true)
            .unwrap_err()
            .to_string();
        assert!(error.contains("No space left on device"), "{error}");
    }

    /// A full disk while a state file is written: the error says writing and names the cause
    /// (it said "reading"), and no cut-off temp file is left holding space.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_a_write_error_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unstored-alerts.json");
        let tmp = dir.path().join("unstored-alerts.json.tmp");
        // Every write to /dev/full fails with ENOSPC, as on a full disk.
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let value = vec!["alert"; 10];
        let error = write_json(&path, "unstored alerts", &value, true)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("writing {}", tmp.display())),
            "{error}"
        );
        assert!(error.contains("No space left on device"), "{error}");
        assert!(
            !tmp.exists() && tmp.symlink_metadata().is_err(),
            "temp file left"
        );
        assert!(!path.exists());
        // The next attempt, with space again, writes the file.
        write_json(&path, "unstored alerts", &value, true).unwrap();
        assert_eq!(
            read_state::<Vec<String>>(&path, "unstored alerts")
                .unwrap()
                .len(),
            10
        );
    }
}
