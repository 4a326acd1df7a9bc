//! Replacing a small state file (tokens, destinations, rule switches, the outbox) so that a crash
//! leaves either the old or the new content, never a half-written file.

use std::io::Write;
use std::path::Path;

/// Who may read a replaced file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readers {
    /// Owner only (`0600`): the file holds token hashes or signing secrets.
    Owner,
    /// The process umask decides.
    Default,
}

/// Write `bytes` to a temporary file beside `path`, flush it to disk, rename it over `path` and
/// flush the directory, creating the directory first if needed.
pub(crate) fn replace_file(path: &Path, bytes: &[u8], readers: Readers) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    // A name of this writer's own: two processes replacing the file at once (the service and
    // `perimeter tokens`) must not write into, or rename away, each other's temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if readers == Readers::Owner {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename itself must survive a crash too.
    std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

/// Run `change` holding an exclusive lock on `path` across processes (an advisory lock on
/// `<path>.lock`, which stays beside it): a read-modify-write of a state file that the service
/// and the CLI both change (the token store) must not lose either's change.
pub(crate) fn with_lock<T, E>(
    path: &Path,
    lock_error: impl FnOnce(std::io::Error) -> E,
    change: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let lock = (|| {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
        lock_name.push(".lock");
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let lock = options.open(path.with_file_name(lock_name))?;
        lock.lock()?;
        Ok(lock)
    })()
    .map_err(lock_error)?;
    let result = change();
    drop(lock);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        replace_file(&path, b"one", Readers::Owner).unwrap();
        replace_file(&path, b"two", Readers::Owner).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    /// Writers in several threads, each a read-modify-write under the lock: none loses
    /// another's change, and the file is whole after each.
    #[test]
    fn locked_read_modify_writes_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counter");
        replace_file(&path, b"0", Readers::Owner).unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        with_lock(
                            &path,
                            |e| e,
                            || -> std::io::Result<()> {
                                let n: u32 = std::fs::read_to_string(&path)?.parse().unwrap();
                                replace_file(&path, (n + 1).to_string().as_bytes(), Readers::Owner)
                            },
                        )
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "200");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
        }
    }
}
