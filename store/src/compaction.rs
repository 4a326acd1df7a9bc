//! Compaction: every batch writes at least one Parquet file per partition it touches, so a
//! busy partition collects many small files. `Store::compact` merges the files of a partition
//! that are older than `parquet_max_file_age_seconds` into files of up to
//! `parquet_max_rows_per_file` rows.
//!
//! Crash safety: a manifest `.compact-<seq>.json` naming inputs and outputs is written and
//! fsynced first; outputs are written as `.compact-<seq>-<n>.parquet.tmp`, fsynced, renamed to
//! `part-<seq>-<n>.parquet`; then inputs are deleted and the manifest last. On open, a
//! manifest whose outputs all exist finishes the deletes; otherwise its outputs are removed
//! and the inputs stay. Either way each row is in exactly one file.
//!
//! Readers of the files (DuckDB, pyarrow, Spark: a glob, then an open per file) must see the
//! partition before the merge or after it, never the merged file beside its inputs (rows
//! counted twice). So the merged partition is made as a next generation beside it (hard links
//! to the files that stay, the merged files, the manifest) in `<data_dir>/.compacting/`, outside
//! the readers' globs, and swapped in with one `renameat2(RENAME_EXCHANGE)` while no batch
//! writes; the old generation is then removed. A reader that listed the old generation and
//! opens one of the inputs after the swap gets "no such file" and reads again. Where the
//! exchange is not supported (not Linux, some file systems) the outputs are renamed in and the
//! inputs deleted after, as before: a reader racing that may count the merged rows twice.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use crate::error::IoContext;
use crate::layout;
use crate::parquet_sink::{event_arrow_schema, read_event_batches, writer_properties};
use crate::store::{lock, Store};
use crate::Result;

/// What `compact` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionReport {
    pub partitions_compacted: usize,
    pub files_merged: usize,
    pub files_written: usize,
    pub rows: u64,
    /// What could not be compacted, each naming its partition or file and why: an unreadable
    /// file is left as it is (and not merged), a partition that failed keeps its files as they
    /// were; the other partitions are compacted all the same.
    #[serde(default)]
    pub failed: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    inputs: Vec<String>,
    outputs: Vec<String>,
}

fn manifest_name(seq: u64) -> String {
    format!(".compact-{seq:020}.json")
}

/// Finish or undo interrupted compactions in one partition directory.
pub(crate) fn recover_compactions(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !(name.starts_with(".compact-") && name.ends_with(".json")) {
            continue;
        }
        let text = std::fs::read(entry.path()).at(entry.path())?;
        match serde_json::from_slice::<Manifest>(&text) {
            Ok(m) if m.outputs.iter().all(|o| dir.join(o).exists()) => {
                for i in &m.inputs {
                    remove_if_exists(&dir.join(i))?;
                }
                tracing::info!(partition = %dir.display(), "finished interrupted parquet compaction");
            }
            Ok(m) => {
                for o in &m.outputs {
                    remove_if_exists(&dir.join(o))?;
                }
                tracing::info!(partition = %dir.display(), "undid interrupted parquet compaction");
            }
            // A torn manifest was never followed by any output: nothing to undo.
            Err(_) => {}
        }
        layout::sync_dir(dir)?;
        std::fs::remove_file(entry.path()).at(entry.path())?;
    }
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(".compact-") && name.ends_with(".parquet.tmp") {
            remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

/// Where next generations of partitions are made (and old ones removed): in the data
/// directory, so on the same file system, but outside `parquet/`.
pub(crate) fn staging_root(data_dir: &Path) -> PathBuf {
    data_dir.join(".compacting")
}

/// Remove what an interrupted compaction left in [`staging_root`]: a next generation never
/// swapped in (its partition still has its files), or an old one swapped out.
pub(crate) fn remove_staging(data_dir: &Path) -> Result<()> {
    let root = staging_root(data_dir);
    match std::fs::remove_dir_all(&root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(root),
    }
}

/// Remove a generation made in [`staging_root`], and the staging directory with it when it
/// holds nothing else: it is there only while a compaction runs.
fn remove_generation(generation: &Path) -> Result<()> {
    std::fs::remove_dir_all(generation).at(generation)?;
    if let Some(root) = generation.parent() {
        // Not empty (another generation) or already gone: nothing to do.
        let _ = std::fs::remove_dir(root);
    }
    Ok(())
}

/// Swap directories `a` and `b` in one step.
#[cfg(target_os = "linux")]
pub(crate) fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let b = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are NUL-terminated C strings that live across the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Write each group of `plan` merged into its file `tmp_of(n)`, synced; (rows, files).
fn write_merged(
    dir: &Path,
    plan: &[Vec<(String, i64)>],
    tmp_of: &dyn Fn(usize) -> PathBuf,
) -> Result<(u64, Vec<PathBuf>)> {
    let mut total = 0u64;
    let mut tmps = Vec::new();
    for (n, group) in plan.iter().enumerate() {
        let tmp = tmp_of(n);
        let file = File::create(&tmp).at(&tmp)?;
        let mut writer =
            ArrowWriter::try_new(file, event_arrow_schema(), Some(writer_properties()))?;
        for (name, _) in group {
            read_event_batches(&dir.join(name), |batch| {
                total += batch.num_rows() as u64;
                Ok(writer.write(&batch)?)
            })?;
        }
        let file = writer.into_inner()?;
        file.sync_all().at(&tmp)?;
        tmps.push(tmp);
    }
    Ok((total, tmps))
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(p),
    }
}

impl Store {
    /// Merge small Parquet files older than `parquet_max_file_age_seconds` (0: any age), per
    /// partition, when a partition has at least two of them. Safe to run while writing.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.ensure_writable()?;
        let mut report = CompactionReport::default();
        let max_rows = self.config.parquet_max_rows_per_file as i64;
        let min_age = Duration::from_secs(self.config.parquet_max_file_age_seconds);
        let now = SystemTime::now();
        for dir in self.layout.event_partitions()?.into_iter().map(|p| p.dir) {
            // One damaged partition (a file cut short, bit rot) must not stop the others from
            // ever being compacted again.
            if let Err(e) = self.compact_dir(&dir, max_rows, min_age, now, &mut report) {
                tracing::error!(partition = %dir.display(), error = %e, "parquet partition not compacted");
                report.failed.push(format!("{}: {e}", dir.display()));
            }
        }
        Ok(report)
    }

    fn compact_dir(
        &self,
        dir: &Path,
        max_rows: i64,
        min_age: Duration,
        now: SystemTime,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let mut small = Vec::new();
        for entry in std::fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !(name.starts_with("part-") && name.ends_with(".parquet")) {
                continue;
            }
            let meta = entry.metadata().at(entry.path())?;
            let old_enough = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_none_or(|age| age >= min_age);
            let file = File::open(entry.path()).at(entry.path())?;
            let rows = match ParquetRecordBatchReaderBuilder::try_new(file) {
                Ok(reader) => reader.metadata().file_metadata().num_rows(),
                Err(e) => {
                    let path = entry.path();
                    tracing::error!(file = %path.display(), error = %e, "unreadable parquet file left out of compaction");
                    report.failed.push(format!(
                        "{}: unreadable ({e}); left as it is",
                        path.display()
                    ));
                    continue;
                }
            };
            if old_enough && rows < max_rows {
                small.push((name, rows));
            }
        }
        small.sort();
        // Groups of consecutive files up to `max_rows`; a group of one would only be
        // rewritten, so it is left as is.
        let mut plan: Vec<Vec<(String, i64)>> = vec![Vec::new()];
        let mut rows_in_current = 0;
        for (name, rows) in small {
            if rows_in_current > 0 && rows_in_current + rows > max_rows {
                plan.push(Vec::new());
                rows_in_current = 0;
            }
            rows_in_current += rows;
            if let Some(last) = plan.last_mut() {
                last.push((name, rows));
            }
        }
        plan.retain(|g| g.len() >= 2);
        if plan.is_empty() {
            return Ok(());
        }
        let seq = {
            let mut st = lock(&self.write);
            st.last_seq += 1;
            st.last_seq
        };
        report.rows += self.compact_partition(dir, &plan, seq)?;
        report.files_merged += plan.iter().map(Vec::len).sum::<usize>();
        report.files_written += plan.len();
        report.partitions_compacted += 1;
        Ok(())
    }

    fn compact_partition(&self, dir: &Path, plan: &[Vec<(String, i64)>], seq: u64) -> Result<u64> {
        let outputs: Vec<String> = (0..plan.len())
            .map(|n| format!("part-{seq:020}-{n:04}.parquet"))
            .collect();
        let inputs: Vec<String> = plan.iter().flatten().map(|(n, _)| n.clone()).collect();
        let manifest = Manifest {
            inputs: inputs.clone(),
            outputs: outputs.clone(),
        };
        let manifest_path = dir.join(manifest_name(seq));
        {
            let f = File::create(&manifest_path).at(&manifest_path)?;
            serde_json::to_writer(&f, &manifest)?;
            f.sync_all().at(&manifest_path)?;
        }
        layout::sync_dir(dir)?;
        let tmp_of = |n: usize| dir.join(format!(".compact-{seq:020}-{n:04}.parquet.tmp"));
        let (total, tmps) = match write_merged(dir, plan, &tmp_of) {
            Ok(merged) => merged,
            Err(e) => {
                // Nothing was swapped in: the partition stays as it was, without this attempt's
                // leftovers.
                for n in 0..plan.len() {
                    remove_if_exists(&tmp_of(n))?;
                }
                remove_if_exists(&manifest_path)?;
                layout::sync_dir(dir)?;
                return Err(e);
            }
        };
        if !self.swap_in_next_generation(dir, &tmps, &outputs, &inputs, seq)? {
            for (tmp, out) in tmps.iter().zip(&outputs) {
                let dst = dir.join(out);
                std::fs::rename(tmp, &dst).at(&dst)?;
            }
            layout::sync_dir(dir)?;
            for name in &inputs {
                remove_if_exists(&dir.join(name))?;
            }
            layout::sync_dir(dir)?;
        }
        std::fs::remove_file(&manifest_path).at(&manifest_path)?;
        layout::sync_dir(dir)?;
        Ok(total)
    }

    /// Put the merged files (`tmps`, named `outputs`) in place of `inputs` in partition `dir`
    /// in one step (see the module docs); false when the file system cannot swap directories,
    /// having changed nothing in `dir`.
    fn swap_in_next_generation(
        &self,
        dir: &Path,
        tmps: &[PathBuf],
        outputs: &[String],
        inputs: &[String],
        seq: u64,
    ) -> Result<bool> {
        let next = staging_root(&self.layout.root).join(format!("{seq:020}"));
        std::fs::create_dir_all(&next).at(&next)?;
        // No batch adds a file to `dir` from here to the swap: it would be left out of the next
        // generation.
        let writing = lock(&self.write);
        let manifest = manifest_name(seq);
        for entry in std::fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let name = entry.file_name().to_string_lossy().to_string();
            // Batches' temporary files are only there while a batch writes; the manifest goes
            // along, so a crash right after the swap finishes as it would have.
            let hidden = name.starts_with('.') && name != manifest;
            if hidden || inputs.contains(&name) {
                continue;
            }
            let link = next.join(&name);
            std::fs::hard_link(entry.path(), &link).at(&link)?;
        }
        for (tmp, out) in tmps.iter().zip(outputs) {
            let link = next.join(out);
            std::fs::hard_link(tmp, &link).at(&link)?;
        }
        layout::sync_dir(&next)?;
        match exchange(dir, &next) {
            Ok(()) => {}
            Err(e) => {
                drop(writing);
                tracing::debug!(partition = %dir.display(), error = %e, "parquet compaction cannot swap directories here; renaming");
                remove_generation(&next)?;
                return Ok(false);
            }
        }
        if let Some(parent) = dir.parent() {
            layout::sync_dir(parent)?;
        }
        drop(writing);
        // `next` is now the old generation: the inputs, the temporary outputs, the links.
        remove_generation(&next)?;
        Ok(true)
    }
}
