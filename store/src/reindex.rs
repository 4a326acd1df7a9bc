//! Rebuilding the tantivy event indexes from the Parquet files (`perimeter reindex`).
//!
//! Every stored event is in both: its index (search, dedup) and its Parquet partition (the
//! masked raw record, every ECS field, the id, times and input line). An index that is lost
//! (a disk, a bad restore), damaged, or written by a version with another index schema (which
//! [`Store::open`] refuses) is rebuilt from the Parquet files alone, without the original input.
//! So is every index in a range on request: after `raw_text_search_off` changed, to apply it to
//! events stored before.
//!
//! Each (tenant, day) index is built beside the old one (`index/tenant=T/.rebuild-dt=D`) and
//! swapped in with one `renameat2(RENAME_EXCHANGE)`, so the day has the old index or the new
//! one, never none; what is left of an interrupted rebuild is removed when the store is opened
//! for writing, or by the next reindex. The new index's commit payload is the newest batch
//! sequence number of the partition's files, which Parquet recovery on open compares with.
//! The data directory is locked while it runs, as by a writer: stop `perimeter run` first.
//!
//! What comes back is what Parquet keeps: times to the microsecond (a receive time read to the
//! nanosecond shows fewer digits in `event.ingested` afterwards); everything else as stored.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use perimeter_model::{Event, RawJson};

use crate::doc_text::{output_document, BatchText};
use crate::error::IoContext;
use crate::layout::{self, Layout};
use crate::parquet_sink::{events_from_record_batch, read_event_batches};
use crate::store::{lock, lock_data_dir, settle_interrupted_batches};
use crate::tantivy_sink::{id_key, DayIndex, DayWriter, EventSchema};
use crate::{Result, Store, StoreConfig, StoreError};

/// Events handed to the index writer at a time (their texts are built together).
const CHUNK_EVENTS: usize = 4_096;

/// Prefix of an index being rebuilt, beside the day's index in its tenant's directory.
const REBUILD_PREFIX: &str = ".rebuild-";

/// Which indexes `Store::reindex` rebuilds.
#[derive(Debug, Clone, Default)]
pub struct ReindexOptions {
    /// Only this tenant's indexes.
    pub tenant: Option<String>,
    /// Only days on or after this one.
    pub from: Option<NaiveDate>,
    /// Only days on or before this one.
    pub to: Option<NaiveDate>,
    /// Rebuild every index in the range, not only those that are missing, unreadable, of
    /// another schema, or holding another number of events than their Parquet files.
    pub all: bool,
    /// Only say which indexes would be rebuilt (`rebuilt` lists them, with no events), and
    /// change nothing: interrupted batches' files are left for the writer's recovery too.
    pub check_only: bool,
}

impl ReindexOptions {
    pub(crate) fn selects(&self, tenant: &str, day: NaiveDate) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self.from.is_none_or(|f| day >= f)
            && self.to.is_none_or(|t| day <= t)
    }
}

/// One index rebuilt (or, in a progress report, about to be).
#[derive(Debug, Clone, PartialEq)]
pub struct ReindexedDay {
    pub tenant: String,
    pub day: NaiveDate,
    /// Why it was rebuilt: `missing`, `cannot be used: ...`, `holds 10 events, its Parquet files
    /// 12`, `asked for (--all)`.
    pub why: String,
    /// Events indexed (0 in the progress report made before it starts).
    pub events: u64,
    /// Rows of its Parquet files whose event id came earlier (not indexed twice).
    pub duplicate_rows: u64,
    pub files: usize,
    pub seconds: f64,
}

/// What `Store::reindex` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReindexReport {
    /// The indexes rebuilt (with `check_only`: those that would be).
    pub rebuilt: Vec<ReindexedDay>,
    /// Indexes in range found sound and left as they were.
    pub sound: usize,
    /// `.parquet.tmp` files of batches a crash interrupted put into place: those of committed
    /// batches, and where the day's index is lost every readable one (its events are indexed
    /// with the rest; a resend of them is then a duplicate).
    pub interrupted_files_kept: usize,
    /// The others (uncommitted, or cut short by the crash), removed.
    pub interrupted_files_removed: usize,
    /// Parquet files that cannot be read in days whose index is sound: left as they are (their
    /// index still holds their events; `perimeter repair-parquet` writes them back from it).
    pub unreadable_files: Vec<PathBuf>,
}

impl ReindexReport {
    pub fn events(&self) -> u64 {
        self.rebuilt.iter().map(|d| d.events).sum()
    }
}

/// Progress of a reindex, for a long one to show.
#[derive(Debug, Clone, PartialEq)]
pub enum ReindexProgress {
    /// About to rebuild the `n`th (1-based) of `of` indexes. Several are rebuilt at a time.
    Starting {
        n: usize,
        of: usize,
        day: ReindexedDay,
    },
    /// `events` of the `n`th indexed so far.
    Indexed { n: usize, events: u64 },
    /// Rebuilt and swapped in.
    Done(ReindexedDay),
}

/// The vendor's own time in a stored (masked) raw record of a source, when it has one: how
/// a reindex tells whether the stored time replaced an implausible vendor time
/// (`Event::timestamp_adjusted`, not a Parquet column). The binary passes the normalizers'.
pub type VendorTime<'a> = dyn Fn(&str, &RawJson) -> Option<DateTime<Utc>> + Sync + 'a;

/// A Parquet partition of one source, within a (tenant, day).
pub(crate) struct Partition {
    pub(crate) source: String,
    pub(crate) dir: PathBuf,
}

impl Store {
    /// Rebuild the tantivy event indexes of `config.data_dir` from its Parquet files: those
    /// [`ReindexOptions`] selects (see the module docs). Locks the data directory like a writer.
    pub fn reindex(
        config: StoreConfig,
        options: &ReindexOptions,
        vendor_time: &VendorTime<'_>,
        progress: &mut (dyn FnMut(&ReindexProgress) + Send),
    ) -> Result<ReindexReport> {
        config.validate()?;
        let layout = Layout {
            root: config.data_dir.clone(),
        };
        std::fs::create_dir_all(&layout.root).at(&layout.root)?;
        let _lock = lock_data_dir(&layout.root)?;
        if !options.check_only {
            remove_unfinished_rebuilds(&layout.index_root())?;
            crate::compaction::remove_staging(&layout.root)?;
        }
        let schema = EventSchema::new();
        let mut report = ReindexReport::default();

        let mut plan = Vec::new();
        for ((tenant, day), parts) in parquet_partitions(&layout)? {
            if !options.selects(&tenant, day) {
                continue;
            }
            let existing =
                ExistingIndex::of(&layout.index_dir(&tenant, day), &tenant, day, &schema);
            let committed = match existing {
                ExistingIndex::Usable { committed, .. } => Some(committed),
                _ => None,
            };
            let mut files = 0;
            for p in &parts {
                if !options.check_only {
                    crate::compaction::recover_compactions(&p.dir)?;
                    let (kept, removed) = settle_interrupted_batches(&p.dir, committed)?;
                    report.interrupted_files_kept += kept;
                    report.interrupted_files_removed += removed;
                }
                files += part_files(&p.dir)?.len();
            }
            let why = if options.all {
                Some("asked for (--all)".to_string())
            } else {
                unsound(&existing, &parts, &mut report.unreadable_files)?
            };
            let Some(why) = why else {
                report.sound += 1;
                continue;
            };
            plan.push(PlannedDay {
                day: ReindexedDay {
                    tenant,
                    day,
                    why,
                    events: 0,
                    duplicate_rows: 0,
                    files,
                    seconds: 0.0,
                },
                parts,
                committed: committed.unwrap_or(0),
            });
        }
        if options.check_only {
            report.rebuilt = plan.into_iter().map(|p| p.day).collect();
            return Ok(report);
        }
        report.rebuilt = rebuild_days(&layout, &config, &schema, plan, vendor_time, progress)?;
        Ok(report)
    }
}

/// Rebuild the `plan`ned days, as many at a time as there are cores (each day's index has its
/// own writer, and a large store has many days), in plan order; the first failure stops the
/// days not started yet and is returned.
fn rebuild_days(
    layout: &Layout,
    config: &StoreConfig,
    schema: &EventSchema,
    plan: Vec<PlannedDay>,
    vendor_time: &VendorTime<'_>,
    progress: &mut (dyn FnMut(&ReindexProgress) + Send),
) -> Result<Vec<ReindexedDay>> {
    let of = plan.len();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(of);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let progress = Mutex::new(progress);
    let report = |p: &ReindexProgress| (lock(&progress))(p);
    let results: Vec<Mutex<Option<Result<ReindexedDay>>>> =
        (0..of).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= of || failed.load(Ordering::Relaxed) {
                    break;
                }
                let planned = &plan[n];
                let day = &planned.day;
                report(&ReindexProgress::Starting {
                    n: n + 1,
                    of,
                    day: day.clone(),
                });
                let started = Instant::now();
                let indexed = |events| report(&ReindexProgress::Indexed { n: n + 1, events });
                let result = rebuild_day(layout, config, schema, planned, vendor_time, &indexed)
                    .map(|(events, duplicate_rows)| ReindexedDay {
                        events,
                        duplicate_rows,
                        seconds: started.elapsed().as_secs_f64(),
                        ..day.clone()
                    });
                match &result {
                    Ok(done) => report(&ReindexProgress::Done(done.clone())),
                    Err(_) => failed.store(true, Ordering::Relaxed),
                }
                *lock(&results[n]) = Some(result);
            });
        }
    });
    let mut rebuilt = Vec::with_capacity(of);
    for r in results {
        match r.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(day)) => rebuilt.push(day),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(rebuilt)
}

/// Remove what interrupted rebuilds left in the tenants' index directories. Either the day's
/// index was never swapped (the rebuild is incomplete or unused) or it was and this is the
/// old one: both go.
pub(crate) fn remove_unfinished_rebuilds(index_root: &Path) -> Result<()> {
    for (_, tdir) in layout::list_dirs(index_root)? {
        for (name, dir) in layout::list_dirs(&tdir)? {
            if name.starts_with(REBUILD_PREFIX) {
                std::fs::remove_dir_all(&dir).at(&dir)?;
            }
        }
    }
    Ok(())
}

/// The event partitions under the Parquet root, by (tenant, day).
pub(crate) fn parquet_partitions(
    layout: &Layout,
) -> Result<BTreeMap<(String, NaiveDate), Vec<Partition>>> {
    let mut out: BTreeMap<(String, NaiveDate), Vec<Partition>> = BTreeMap::new();
    for p in layout.event_partitions()? {
        out.entry((p.tenant, p.day)).or_default().push(Partition {
            source: p.source,
            dir: p.dir,
        });
    }
    Ok(out)
}

/// The committed event files of a partition directory, by name (batch order), with their
/// batch sequence numbers.
pub(crate) fn part_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().to_string();
        let seq = name
            .strip_prefix("part-")
            .and_then(|r| r.strip_suffix(".parquet"))
            .and_then(|r| r.split_once('-'))
            .and_then(|(seq, _)| seq.parse::<u64>().ok());
        if let Some(seq) = seq {
            files.push((entry.path(), seq));
        }
    }
    files.sort();
    Ok(files)
}

/// The index a day has before its rebuild, opened once: whether it can be used, and if so the
/// last batch it committed and the events it holds.
enum ExistingIndex {
    Missing,
    Unusable(String),
    Usable { committed: u64, events: u64 },
}

impl ExistingIndex {
    fn of(dir: &Path, tenant: &str, day: NaiveDate, schema: &EventSchema) -> ExistingIndex {
        if !dir.join("meta.json").exists() {
            return ExistingIndex::Missing;
        }
        let opened = DayIndex::open(dir, tenant, day, schema, false)
            .and_then(|index| Ok((index.committed_seq()?, index.reader.searcher().num_docs())));
        match opened {
            Ok((committed, events)) => ExistingIndex::Usable { committed, events },
            Err(e) => ExistingIndex::Unusable(e.to_string()),
        }
    }
}

/// A day to rebuild: what the report will say of it, its partitions, and the last batch its
/// old index committed (0 without one), which the new index's payload does not go below.
struct PlannedDay {
    day: ReindexedDay,
    parts: Vec<Partition>,
    committed: u64,
}

/// Why the day's index needs rebuilding, or `None` when it opens with this version's schema and
/// holds as many events as its Parquet files.
/// Why a day's index needs rebuilding, if it does. A usable index beside a Parquet file that
/// cannot be read is left as it is, the file noted in `unreadable_files`: rebuilt, it would lose
/// that file's events, and failing would stop the rebuild of every other day (QA: one cut file
/// in a sound day kept `reindex` from rebuilding the damaged index `run` asked it to).
fn unsound(
    existing: &ExistingIndex,
    parts: &[Partition],
    unreadable_files: &mut Vec<PathBuf>,
) -> Result<Option<String>> {
    let indexed = match existing {
        ExistingIndex::Missing => return Ok(Some("missing".into())),
        ExistingIndex::Unusable(e) => return Ok(Some(format!("cannot be used: {e}"))),
        ExistingIndex::Usable { events, .. } => *events,
    };
    let mut rows = 0u64;
    let mut all_read = true;
    for p in parts {
        for (path, _) in part_files(&p.dir)? {
            match footer_rows(&path)? {
                Some(n) => rows += n,
                None => {
                    unreadable_files.push(path);
                    all_read = false;
                }
            }
        }
    }
    Ok((all_read && indexed != rows)
        .then(|| format!("holds {indexed} events, its Parquet files {rows}")))
}

/// The rows a Parquet file's footer counts; `None` when the footer cannot be read.
pub(crate) fn footer_rows(path: &Path) -> Result<Option<u64>> {
    let file = std::fs::File::open(path).at(path)?;
    Ok(ParquetRecordBatchReaderBuilder::try_new(file)
        .ok()
        .map(|reader| reader.metadata().file_metadata().num_rows() as u64))
}

/// Build the index of `day` from its partitions beside the old one and swap it in; (events
/// indexed, duplicate rows).
fn rebuild_day(
    layout: &Layout,
    config: &StoreConfig,
    schema: &EventSchema,
    planned: &PlannedDay,
    vendor_time: &VendorTime<'_>,
    indexed: &dyn Fn(u64),
) -> Result<(u64, u64)> {
    let (day, parts) = (&planned.day, &planned.parts);
    let target = layout.index_dir(&day.tenant, day.day);
    let tenant_dir = target
        .parent()
        .ok_or_else(|| StoreError::InvalidBatch("index directory has no parent".into()))?
        .to_path_buf();
    let staging = tenant_dir.join(format!(
        "{REBUILD_PREFIX}{}",
        target.file_name().unwrap_or_default().to_string_lossy()
    ));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).at(&staging)?;
    }
    std::fs::create_dir_all(&tenant_dir).at(&tenant_dir)?;
    let index = Arc::new(DayIndex::open(
        &staging,
        &day.tenant,
        day.day,
        schema,
        true,
    )?);
    let mut writer = DayWriter::open(
        index,
        config.index_writer_threads,
        config.index_writer_memory_bytes,
        0,
    )?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut seen: HashSet<u128> = HashSet::new();
    let (mut events, mut duplicates, mut last_seq) = (0u64, 0u64, 0u64);
    let mut chunk: Vec<Event> = Vec::with_capacity(CHUNK_EVENTS);
    let mut text = BatchText::default();
    let (mut output, mut all) = (String::new(), String::new());
    let mut add_chunk = |chunk: &mut Vec<Event>, writer: &mut DayWriter| -> Result<()> {
        let refs: Vec<&Event> = chunk.iter().collect();
        text.rebuild(&refs, cores, &|e: &Event| {
            config.raw_text_searched(&e.source)
        })?;
        for (i, e) in refs.iter().enumerate() {
            let out = output_document(e, text.raw(i), &mut output);
            writer
                .writer
                .add_document(schema.document(e, text.raw_words(i), out, &mut all))?;
        }
        chunk.clear();
        Ok(())
    };
    for p in parts {
        for (path, seq) in part_files(&p.dir)? {
            last_seq = last_seq.max(seq);
            read_event_batches(&path, |batch| {
                let read =
                    events_from_record_batch(&batch, &day.tenant, &p.source).map_err(|e| {
                        StoreError::Corrupt {
                            path: path.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                for mut e in read {
                    if !seen.insert(id_key(&e.id().0)) {
                        duplicates += 1;
                        continue;
                    }
                    e.timestamp_adjusted = e.timestamp == e.received_at
                        && vendor_time(&e.source, &e.raw).is_some_and(|t| t != e.timestamp);
                    chunk.push(e);
                    events += 1;
                    if chunk.len() >= CHUNK_EVENTS {
                        add_chunk(&mut chunk, &mut writer)?;
                        indexed(events);
                    }
                }
                Ok(())
            })
            .map_err(with_repair_hint)?;
        }
    }
    add_chunk(&mut chunk, &mut writer)?;
    // Not below the old index's payload: no file of a committed batch is newer, but an old
    // index may have committed batches whose files retention has removed since.
    writer.prepare(last_seq.max(planned.committed))?.commit()?;
    drop(writer);
    swap_in(&staging, &target)?;
    Ok((events, duplicates))
}

/// A Parquet file of a day being rebuilt that cannot be read: named, and what to do about it,
/// since the rebuild stops at it (an index built without its events would pass for complete).
fn with_repair_hint(e: StoreError) -> StoreError {
    match e {
        StoreError::Corrupt { path, reason } => StoreError::Corrupt {
            path,
            reason: format!(
                "{reason}, so this day's index is not rebuilt: set the file aside with \
                 `perimeter repair-parquet` (its events are lost unless an index still holds \
                 them), or rebuild the other days with --from/--to"
            ),
        },
        other => other,
    }
}

/// Put the rebuilt index `staging` in place of `target` (which may not exist) and remove what
/// `staging` then holds.
fn swap_in(staging: &Path, target: &Path) -> Result<()> {
    let parent = target.parent().unwrap_or(target);
    if target.exists() {
        if crate::compaction::exchange(target, staging).is_err() {
            // No atomic exchange here (not Linux, some file systems): until the rename below the
            // day has no index; a crash there leaves it missing, and the next reindex rebuilds it.
            std::fs::remove_dir_all(target).at(target)?;
            std::fs::rename(staging, target).at(target)?;
        }
    } else {
        std::fs::rename(staging, target).at(target)?;
    }
    layout::sync_dir(parent)?;
    if staging.exists() {
        std::fs::remove_dir_all(staging).at(staging)?;
    }
    Ok(())
}
