//! Restoring event Parquet files from the indexes (`perimeter repair-parquet`): the other
//! direction of [`crate::reindex`].
//!
//! An index keeps each event's output document (`Event::to_output_json`): every ECS field, the
//! id, the times, the input line and the masked raw record, which is all a Parquet row holds.
//! So the rows of a Parquet file that cannot be read any more (cut short, bit rot), or of a
//! partition that was deleted, can be written again from the day's index, as long as that index
//! is sound. For each (tenant, day) index in range:
//!
//! - the ids in its partitions' readable files are read (the `event_id` column); a file that
//!   fails to read is unreadable;
//! - when a file is unreadable, or the index holds events the files do not, those events are
//!   read out of the index and written as one new file per source
//!   (`part-<seq>-0000.parquet`, through a synced temporary file renamed into place);
//! - then each unreadable file is renamed `.<name>.unreadable`: out of the readers' globs and of
//!   compaction, kept for whoever wants to look at it. A crash between the two steps leaves the
//!   restored file and the unreadable one; the next run finds nothing missing and moves the
//!   unreadable one aside.
//!
//! Like `reindex`, it takes the data directory's lock: stop `perimeter run` first.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use perimeter_model::Event;
use tantivy::schema::Value as _;
use tantivy::TantivyDocument;

use crate::error::IoContext;
use crate::layout::{self, Layout};
use crate::parquet_sink::{event_arrow_schema, events_to_record_batch};
use crate::reindex::{parquet_partitions, part_files, Partition, ReindexOptions};
use crate::store::lock_data_dir;
use crate::tantivy_sink::{id_key, DayIndex, EventSchema};
use crate::{Result, Store, StoreConfig, StoreError};

/// Suffix an unreadable Parquet file is renamed with (after a leading dot).
const UNREADABLE_SUFFIX: &str = ".unreadable";
/// Prefix of a restored file while it is written.
const REPAIR_TMP_PREFIX: &str = ".repair-";

/// One partition repaired (or, with `check_only`, to repair).
#[derive(Debug, Clone, PartialEq)]
pub struct RepairedPartition {
    pub tenant: String,
    pub source: String,
    pub day: NaiveDate,
    /// Events written back from the index.
    pub restored: u64,
    /// The unreadable files, as they were named (renamed `.<name>.unreadable` since).
    pub unreadable: Vec<PathBuf>,
    /// The file the events were written to (none with `check_only`, or nothing to restore).
    pub file: Option<PathBuf>,
}

/// What `Store::repair_parquet` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParquetRepairReport {
    pub repaired: Vec<RepairedPartition>,
    /// Days whose files hold every event of their index, all readable.
    pub sound: usize,
    /// Days whose index cannot be used (`perimeter reindex` is the tool for those, from the
    /// files): nothing to restore from.
    pub unusable_indexes: Vec<String>,
}

/// A Parquet file `perimeter repair-parquet` set aside, unreadable, after writing its events
/// back from the index.
#[derive(Debug, Clone, PartialEq)]
pub struct SetAsideFile {
    pub path: PathBuf,
    pub bytes: u64,
}

impl Store {
    /// The files repairs set aside (`.<name>.unreadable`) and nobody removed yet: they hold
    /// nothing the store needs any more (their events were written back), only disk space, and
    /// whatever an investigation of the damage wants from them.
    pub fn set_aside_parquet_files(&self) -> Result<Vec<SetAsideFile>> {
        let layout = Layout {
            root: self.config.data_dir.clone(),
        };
        let mut out = Vec::new();
        for partition in layout.event_partitions()? {
            for entry in std::fs::read_dir(&partition.dir).at(&partition.dir)? {
                let entry = entry.at(&partition.dir)?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(UNREADABLE_SUFFIX) {
                    let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push(SetAsideFile {
                        path: entry.path(),
                        bytes,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The event Parquet files whose footer cannot be read (cut short, overwritten): `run`
    /// starts beside them (the indexes hold their events) but exports and compaction cannot
    /// read them, and `perimeter repair-parquet` writes their events back (QA: `run --check`
    /// said ok beside one).
    pub fn unreadable_parquet_files(&self) -> Result<Vec<std::path::PathBuf>> {
        let layout = Layout {
            root: self.config.data_dir.clone(),
        };
        let mut out = Vec::new();
        for partition in layout.event_partitions()? {
            for (path, _) in crate::reindex::part_files(&partition.dir)? {
                if crate::reindex::footer_rows(&path)?.is_none() {
                    out.push(path);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Write back, from the indexes, the events missing from the Parquet files of the days
    /// `options` selects (`all` is not used), and set unreadable files aside: see the module
    /// docs. Locks the data directory like a writer.
    pub fn repair_parquet(
        config: StoreConfig,
        options: &ReindexOptions,
    ) -> Result<ParquetRepairReport> {
        config.validate()?;
        let layout = Layout {
            root: config.data_dir.clone(),
        };
        let _lock = lock_data_dir(&layout.root)?;
        let schema = EventSchema::new();
        let mut report = ParquetRepairReport::default();
        let partitions = parquet_partitions(&layout)?;
        for (tenant, day, ddir) in layout.index_days()? {
            if !options.selects(&tenant, day) || !ddir.join("meta.json").exists() {
                continue;
            }
            let index = match DayIndex::open(&ddir, &tenant, day, &schema, false) {
                Ok(index) => index,
                Err(e) => {
                    report
                        .unusable_indexes
                        .push(format!("tenant {tenant} {day}: {e}"));
                    continue;
                }
            };
            let parts = partitions
                .get(&(tenant, day))
                .map_or(&[][..], Vec::as_slice);
            let repaired = repair_day(&layout, &schema, &index, parts, options.check_only)?;
            if repaired.is_empty() {
                report.sound += 1;
            }
            report.repaired.extend(repaired);
        }
        Ok(report)
    }
}

/// The ids in a partition's readable files, and its unreadable files. Every column is read, not
/// only the ids: damage in another column's pages (bit rot) left a file "sound" here that
/// `reindex`, DuckDB or Spark could not read (QA).
fn read_partition(dir: &Path) -> Result<(HashSet<u128>, Vec<PathBuf>)> {
    let mut ids = HashSet::new();
    let mut unreadable = Vec::new();
    for (path, _) in part_files(dir)? {
        let mut found = Vec::new();
        let read = (|| -> std::result::Result<(), Box<dyn std::error::Error>> {
            let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path)?)?;
            for batch in builder.build()? {
                let batch = batch?;
                let column = batch
                    .column_by_name("event_id")
                    .ok_or("no event_id column")?;
                let column = arrow::array::AsArray::as_string_opt::<i32>(column)
                    .ok_or("event_id is not text")?;
                found.extend(column.iter().flatten().map(id_key));
            }
            Ok(())
        })();
        match read {
            Ok(()) => ids.extend(found),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable parquet file");
                unreadable.push(path);
            }
        }
    }
    Ok((ids, unreadable))
}

/// Repair the partitions of one day from its index; the partitions repaired.
fn repair_day(
    layout: &Layout,
    schema: &EventSchema,
    index: &DayIndex,
    parts: &[Partition],
    check_only: bool,
) -> Result<Vec<RepairedPartition>> {
    let (tenant, day) = (&index.tenant, index.day);
    // By source: the ids its readable files hold, its unreadable files.
    let mut partitions: BTreeMap<String, (HashSet<u128>, Vec<PathBuf>)> = BTreeMap::new();
    for p in parts {
        if !check_only {
            remove_repair_leftovers(&p.dir)?;
        }
        partitions.insert(p.source.clone(), read_partition(&p.dir)?);
    }
    let searcher = index.reader.searcher();
    let present: usize = partitions.values().map(|(ids, _)| ids.len()).sum();
    let unreadable = partitions.values().any(|(_, u)| !u.is_empty());
    if !unreadable && present as u64 >= searcher.num_docs() {
        return Ok(Vec::new());
    }

    // The index's events the readable files do not hold, written back by source as they are
    // read (a file per source, fed a record batch at a time: a deleted partition can hold
    // millions of events).
    let mut restored: BTreeMap<String, RestoredFile> = BTreeMap::new();
    let index_dir = layout.index_dir(tenant, day);
    for segment in searcher.segment_readers() {
        let store = segment.get_store_reader(64).at(&index_dir)?;
        let alive = segment.alive_bitset();
        for doc in 0..segment.max_doc() {
            if alive.is_some_and(|a| !a.is_alive(doc)) {
                continue;
            }
            let stored: TantivyDocument = store.get(doc)?;
            let text = stored
                .get_first(schema.doc)
                .and_then(|v| v.as_str())
                .unwrap_or("{}");
            let output: serde_json::Value = serde_json::from_str(text)?;
            let event = Event::from_output_json(&output).ok_or_else(|| StoreError::Corrupt {
                path: index_dir.clone(),
                reason: "a stored document lacks what an event needs".into(),
            })?;
            let id = id_key(&event.id().0);
            let held = partitions
                .get(&event.source)
                .is_some_and(|(ids, _)| ids.contains(&id));
            if held {
                continue;
            }
            if !restored.contains_key(&event.source) {
                let dir = layout.parquet_partition_dir(tenant, &event.source, day);
                let file = RestoredFile::new(dir, check_only)?;
                restored.insert(event.source.clone(), file);
            }
            if let Some(file) = restored.get_mut(&event.source) {
                file.push(event)?;
            }
        }
    }

    let mut repaired = Vec::new();
    let mut sources: Vec<String> = partitions.keys().chain(restored.keys()).cloned().collect();
    sources.sort();
    sources.dedup();
    for source in sources {
        let unreadable = partitions
            .get(&source)
            .map(|(_, u)| u.clone())
            .unwrap_or_default();
        let (restored, file) = match restored.remove(&source) {
            Some(f) => f.finish()?,
            None => (0, None),
        };
        if restored == 0 && unreadable.is_empty() {
            continue;
        }
        if !check_only {
            for path in &unreadable {
                set_aside(path)?;
            }
        }
        repaired.push(RepairedPartition {
            tenant: tenant.clone(),
            source,
            day,
            restored,
            unreadable,
            file,
        });
    }
    Ok(repaired)
}

/// A partition's new file of events written back, filled a record batch at a time under a
/// temporary name (only counted with `check_only`).
struct RestoredFile {
    dir: PathBuf,
    /// The temporary path and its writer; `None` with `check_only`.
    writer: Option<(PathBuf, ArrowWriter<std::fs::File>)>,
    pending: Vec<Event>,
    count: u64,
}

/// Events per record batch of a restored file.
const RESTORED_BATCH: usize = 4096;

impl RestoredFile {
    fn new(dir: PathBuf, check_only: bool) -> Result<RestoredFile> {
        let writer = if check_only {
            None
        } else {
            layout::create_dir_durable(&dir)?;
            let tmp = dir.join(format!("{REPAIR_TMP_PREFIX}{}.tmp", std::process::id()));
            let file = std::fs::File::create(&tmp).at(&tmp)?;
            let writer = ArrowWriter::try_new(
                file,
                event_arrow_schema(),
                Some(crate::parquet_sink::writer_properties()),
            )?;
            Some((tmp, writer))
        };
        Ok(RestoredFile {
            dir,
            writer,
            pending: Vec::new(),
            count: 0,
        })
    }

    fn push(&mut self, event: Event) -> Result<()> {
        self.count += 1;
        if self.writer.is_some() {
            self.pending.push(event);
            if self.pending.len() >= RESTORED_BATCH {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let Some((_, writer)) = self.writer.as_mut() else {
            return Ok(());
        };
        let raws: Vec<String> = self
            .pending
            .iter()
            .map(|e| sonic_rs::to_string(&e.raw))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| StoreError::InvalidBatch(format!("raw record as JSON: {e}")))?;
        let refs: Vec<&Event> = self.pending.iter().collect();
        let raw_refs: Vec<&str> = raws.iter().map(String::as_str).collect();
        writer.write(&events_to_record_batch(&refs, &raw_refs)?)?;
        self.pending.clear();
        Ok(())
    }

    /// Close, sync and rename the file into place; (events, its path).
    fn finish(mut self) -> Result<(u64, Option<PathBuf>)> {
        self.flush()?;
        let Some((tmp, writer)) = self.writer.take() else {
            return Ok((self.count, None));
        };
        let file = writer.into_inner()?;
        file.sync_all().at(&tmp)?;
        let seq = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
        let path = self.dir.join(crate::store::final_name(seq, 0));
        std::fs::rename(&tmp, &path).at(&path)?;
        layout::sync_dir(&self.dir)?;
        Ok((self.count, Some(path)))
    }
}

/// Rename an unreadable file `.<name>.unreadable`, out of the readers' `*.parquet` globs and of
/// compaction and reindex, which read `part-*.parquet` only.
fn set_aside(path: &Path) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let aside = path.with_file_name(format!(".{name}{UNREADABLE_SUFFIX}"));
    std::fs::rename(path, &aside).at(&aside)?;
    if let Some(dir) = path.parent() {
        layout::sync_dir(dir)?;
    }
    Ok(())
}

/// Remove the temporary files of a repair a crash interrupted.
fn remove_repair_leftovers(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(REPAIR_TMP_PREFIX) && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path()).at(entry.path())?;
        }
    }
    Ok(())
}
