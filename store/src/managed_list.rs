//! The directory of a day index: tantivy's memory-mapped one, except that tantivy's list of
//! the files it manages (`.managed.json`) is written once per commit instead of once per new
//! file.
//!
//! Why: tantivy rewrites `.managed.json` before it creates each file, through a new temporary
//! file that is fsynced and renamed. A segment has about seven files, so a commit of a small
//! batch paid seven such writes per index it touched, each a file creation (slow on ext4) and
//! a disk flush the commit waited for. [`ManagedListOncePerCommit`] keeps the list in memory
//! and writes it (durably, as before) just before each `meta.json`, which is the commit point
//! of the index and of every merge.
//!
//! What tantivy needs the list for: deleting files no segment uses any more (merged away, or
//! left by a commit that never happened). Written before `meta.json`, the list on disk names
//! every file of every committed segment, so those are still deleted when merged away. What a
//! crash can leave off it (the files created after the last commit by a process that then
//! died, or a last list write the crash lost) [`register_unlisted_segment_files`] adds when a
//! writer opens the index, and tantivy deletes what no segment uses at its next commit. It also
//! removes the temporary files of atomic writes cut short (`.tmp*`), which tantivy never
//! cleans up.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, WatchCallback, WatchHandle, WritePtr,
};

const MANAGED_LIST: &str = ".managed.json";
const META: &str = "meta.json";

/// An [`MmapDirectory`] that defers `.managed.json` to the next `meta.json` (module docs).
#[derive(Clone, Debug)]
pub struct ManagedListOncePerCommit {
    inner: MmapDirectory,
    /// The list as tantivy last wrote it, not yet on disk.
    pending: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ManagedListOncePerCommit {
    pub fn open(dir: &Path) -> tantivy::Result<ManagedListOncePerCommit> {
        Ok(ManagedListOncePerCommit {
            inner: MmapDirectory::open(dir)?,
            pending: Arc::default(),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Directory for ManagedListOncePerCommit {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.inner.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        if path == Path::new(MANAGED_LIST) && self.pending().is_some() {
            return Ok(true);
        }
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        self.inner.open_write(path)
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        if path == Path::new(MANAGED_LIST) {
            if let Some(list) = self.pending().as_ref() {
                return Ok(list.clone());
            }
        }
        self.inner.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if path == Path::new(MANAGED_LIST) {
            *self.pending() = Some(data.to_vec());
            return Ok(());
        }
        if path == Path::new(META) {
            // The list first: once `meta.json` names a segment, the list on disk names its
            // files. Held while both are written, so a newer list is not overtaken.
            let mut pending = self.pending();
            if let Some(list) = pending.as_deref() {
                self.inner.atomic_write(Path::new(MANAGED_LIST), list)?;
                *pending = None;
            }
            return self.inner.atomic_write(path, data);
        }
        self.inner.atomic_write(path, data)
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(watch_callback)
    }
}

/// Tidy up after a writer that died: add to `dir`'s `.managed.json` the segment files it does
/// not list, which a process created after its last commit (module docs), and delete the
/// temporary files of atomic writes it was in the middle of (`.tmp*`, which tantivy never
/// manages). tantivy deletes the registered files at the index's next commit, as it does every
/// managed file no segment uses. Returns how many files were registered. Only for the one
/// writer of the directory, before it opens the index.
pub fn register_unlisted_segment_files(dir: &Path) -> io::Result<usize> {
    let list_path = dir.join(MANAGED_LIST);
    let mut listed: BTreeSet<PathBuf> = match std::fs::read(&list_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => return Err(e),
    };
    let mut added = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !entry.file_type()?.is_file() {
            continue;
        }
        if name.starts_with(".tmp") {
            std::fs::remove_file(entry.path())?;
        } else if is_segment_file(name) && listed.insert(name.into()) {
            added += 1;
        }
    }
    if added > 0 {
        let mut json = serde_json::to_vec(&listed).map_err(io::Error::other)?;
        json.push(b'\n');
        MmapDirectory::open(dir)
            .map_err(io::Error::other)?
            .atomic_write(Path::new(MANAGED_LIST), &json)?;
    }
    Ok(added)
}

/// A segment's file: its id (32 hex digits), a dot, an extension (`<id>.<opstamp>.del` too).
fn is_segment_file(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 33 && b[..32].iter().all(u8::is_ascii_hexdigit) && b[32] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::schema::{Schema, STRING};
    use tantivy::{doc, Index, IndexWriter};

    fn listed_on_disk(dir: &Path) -> BTreeSet<String> {
        serde_json::from_slice(&std::fs::read(dir.join(MANAGED_LIST)).unwrap()).unwrap()
    }

    fn segment_files(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| is_segment_file(n))
            .collect()
    }

    /// A new index in `dir` and a writer that has committed one document to it.
    fn index_with_one_commit(dir: &Path) -> (Index, IndexWriter) {
        let mut schema = Schema::builder();
        let f = schema.add_text_field("f", STRING);
        let index = Index::create(
            ManagedListOncePerCommit::open(dir).unwrap(),
            schema.build(),
            tantivy::IndexSettings::default(),
        )
        .unwrap();
        let mut writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.add_document(doc!(f => "a")).unwrap();
        writer.commit().unwrap();
        (index, writer)
    }

    /// The list reaches the disk with `meta.json`, not with each file: after a prepared
    /// commit the new segment's files exist but are not listed yet; once committed, every
    /// segment file in the directory is.
    #[test]
    fn the_list_on_disk_names_every_committed_file_and_is_written_with_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (index, mut writer) = index_with_one_commit(dir.path());
        let f = index.schema().get_field("f").unwrap();
        let first = segment_files(dir.path());
        assert!(!first.is_empty());
        assert!(first.is_subset(&listed_on_disk(dir.path())));

        writer.add_document(doc!(f => "b")).unwrap();
        let prepared = writer.prepare_commit().unwrap();
        let files = segment_files(dir.path());
        let new: BTreeSet<String> = files.difference(&first).cloned().collect();
        assert!(!new.is_empty(), "the prepared segment's files are written");
        assert!(
            new.is_disjoint(&listed_on_disk(dir.path())),
            "listed before the commit point"
        );
        prepared.commit().unwrap();
        let listed = listed_on_disk(dir.path());
        assert!(segment_files(dir.path()).is_subset(&listed), "{listed:?}");
    }

    /// Files a process created after its last commit and before it died are not on the list
    /// on disk: the next writer registers them at open, and tantivy deletes them at its next
    /// commit; the committed documents stay. A temporary file of a write cut short goes at
    /// open.
    #[test]
    fn files_left_by_a_dead_writer_are_deleted_at_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        drop(index_with_one_commit(dir.path()));
        // What a segment being written when the process died leaves behind.
        let orphans = [
            "0123456789abcdef0123456789abcdef.idx",
            "0123456789abcdef0123456789abcdef.store",
        ];
        for name in orphans {
            std::fs::write(dir.path().join(name), b"half a segment").unwrap();
        }
        // And the temporary file of an atomic write (`meta.json`'s) cut short.
        std::fs::write(dir.path().join(".tmpAbC123"), b"{\"segm").unwrap();
        assert_eq!(register_unlisted_segment_files(dir.path()).unwrap(), 2);
        assert!(!dir.path().join(".tmpAbC123").exists());
        assert_eq!(register_unlisted_segment_files(dir.path()).unwrap(), 0);

        let index = Index::open(ManagedListOncePerCommit::open(dir.path()).unwrap()).unwrap();
        let f = index.schema().get_field("f").unwrap();
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.add_document(doc!(f => "b")).unwrap();
        writer.commit().unwrap();
        writer.wait_merging_threads().unwrap();
        for name in orphans {
            assert!(!dir.path().join(name).exists(), "{name} is still there");
        }
        let reader = index.reader().unwrap();
        assert_eq!(reader.searcher().num_docs(), 2);
    }

    #[test]
    fn segment_file_names() {
        assert!(is_segment_file("0f8e2d2b4c5a4e0e9f1a2b3c4d5e6f70.idx"));
        assert!(is_segment_file("0f8e2d2b4c5a4e0e9f1a2b3c4d5e6f70.12.del"));
        assert!(!is_segment_file("meta.json"));
        assert!(!is_segment_file(".managed.json"));
        assert!(!is_segment_file(".tantivy-writer.lock"));
        assert!(!is_segment_file("0f8e2d2b4c5a4e0e9f1a2b3c4d5e6f70"));
    }
}
