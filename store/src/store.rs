//! [`Store`]: the write path (dedup, Parquet + tantivy, alerts, dead letters), recovery on open,
//! and the shared state the read side and retention use.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use perimeter_model::{Alert, DeadLetter, Event};
use serde::{Deserialize, Serialize};

use crate::alerts::AlertBook;
use crate::backwards::{cursor_offset, page_cursor, CursorError, ReverseLines};
use crate::doc_text::{output_document, BatchText};
use crate::error::IoContext;
use crate::layout::{self, Layout};
use crate::parallel;
use crate::parquet_sink;
use crate::tantivy_sink::{id_key, DayIndex, DayWriter, EventSchema};
use crate::{Result, StoreConfig, StoreError};

/// What one `write_batch` call stores. Everything in it is ALREADY MASKED by the pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreBatch {
    pub events: Vec<Event>,
    pub alerts: Vec<Alert>,
    pub dead_letters: Vec<DeadLetter>,
}

/// What a `write_batch` call did; returned only once all of it is durable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteAck {
    /// Events newly stored (in tantivy and Parquet).
    pub events_written: usize,
    /// Events skipped because their id was already stored (replays) or repeated in the batch.
    pub events_duplicate: usize,
    /// Alerts newly stored (alerts already known by id are skipped).
    pub alerts_written: usize,
    /// Ids of the batch's alerts counted as repeats of a stored alert of the same rule and
    /// entity (`alert_group_seconds`) instead of being stored on their own: nobody needs to be
    /// told about them again.
    #[serde(default)]
    pub alerts_grouped: Vec<String>,
    /// Ids of the batch's alerts the store already had, stored or counted into another (the
    /// same events detected again, as after a restart that lost the detection state): not new,
    /// so not to be sent again.
    #[serde(default)]
    pub alerts_known: Vec<String>,
    /// Stored alerts whose repeats in this batch took their `count` past 10, 100, 1000, ...,
    /// as they are now (same id, the higher count): still firing, which destinations are told.
    #[serde(default)]
    pub alerts_still_firing: Vec<perimeter_model::Alert>,
    /// Alerts of this batch that later alerts of the same batch were grouped into, as stored
    /// (the higher count): destinations are sent these instead of the alerts as raised.
    #[serde(default)]
    pub alerts_grown: Vec<perimeter_model::Alert>,
    /// Dead letters newly stored: one already stored (the same source, line, reason and
    /// excerpt among the tenant's newest 100,000) is not stored again.
    pub dead_letters_written: usize,
    /// `dead_letters_written` per source (for the per-source dead-letter metric: a resent bad
    /// line is not counted again).
    #[serde(default)]
    pub dead_letters_written_by_source: std::collections::BTreeMap<String, usize>,
    /// `events_written` per source (for the per-source "events out" metric).
    #[serde(default)]
    pub events_written_by_source: std::collections::BTreeMap<String, usize>,
    /// Events of the batch dated before their tenant's and source's retention window, at most
    /// as many as it wrote (a resent batch that stored nothing counts none): stored all the
    /// same, and removed by the next `apply_retention`.
    /// Reported so a backfill past retention is not lost without a word.
    #[serde(default)]
    pub events_past_retention: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Events currently stored (all tenants).
    pub events_stored: u64,
    pub events_written_total: u64,
    pub events_duplicate_total: u64,
    pub alerts_stored: u64,
    pub dead_letters_written_total: u64,
    pub batches_written_total: u64,
    /// Wall time of the last tantivy commit (all indexes of the batch), in seconds.
    pub last_commit_seconds: f64,
    /// Wall time of the last whole `write_batch`, in seconds.
    pub last_batch_seconds: f64,
    /// Number of (tenant, day) indexes on disk.
    pub index_days: u64,
    pub open_index_writers: u64,
    pub parquet_files_written_total: u64,
}

/// The last batch the store could not write, while no later batch was written: the store is
/// failing (disk full, files unwritable). `/readyz` answers 503 with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteFailure {
    /// When the first failing batch of the current run of failures failed.
    pub since: DateTime<Utc>,
    /// Failed batches since the last good one.
    pub batches: u64,
    /// The last failure's error.
    pub error: String,
}

/// How many days back a resent event whose time was adjusted to its receive time is looked for
/// (see [`Store::stored_on_days_before`]): a resend within 24 hours of the first delivery is
/// always found, whatever the time of day.
pub(crate) const ADJUSTED_REPLAY_DAYS: u64 = 2;

pub(crate) type IndexKey = (String, NaiveDate);

#[derive(Default)]
pub(crate) struct GroupState {
    pub leader_active: bool,
    pub next_ticket: u64,
    pub queue: Vec<(u64, StoreBatch)>,
    pub results: HashMap<u64, Result<WriteAck>>,
}

pub(crate) struct WriteState {
    pub writers: HashMap<IndexKey, DayWriter>,
    /// The text forms of the batch being written (buffers kept from batch to batch).
    pub text: BatchText,
    /// Threads for the per-event work that precedes the parallel index and Parquet writes
    /// (ids, batch texts): the machine's cores.
    pub cores: usize,
    pub last_seq: u64,
    pub tick: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub events_stored: AtomicU64,
    pub events_written: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub dead_letters_written: AtomicU64,
    pub batches: AtomicU64,
    pub last_commit_micros: AtomicU64,
    pub last_batch_micros: AtomicU64,
    pub parquet_files: AtomicU64,
}

/// The event, alert and dead-letter store. `Send + Sync`: share it with `Arc`. Writes are
/// serialized internally; reads run concurrently with writes and each other.
pub struct Store {
    pub(crate) config: StoreConfig,
    pub(crate) layout: Layout,
    pub(crate) schema: EventSchema,
    pub(crate) indexes: RwLock<BTreeMap<IndexKey, Arc<DayIndex>>>,
    pub(crate) write: Mutex<WriteState>,
    pub(crate) group: Mutex<GroupState>,
    pub(crate) group_done: std::sync::Condvar,
    pub(crate) alerts: RwLock<AlertBook>,
    /// Tenants with a dead-letter journal; held (write) while one is appended to or rewritten.
    pub(crate) dead: RwLock<BTreeSet<String>>,
    pub(crate) counters: Counters,
    /// The data directory's lock file, locked exclusively while this store may write (`None`:
    /// opened read-only). The lock goes with the file when the store is dropped or the process
    /// dies, `kill -9` included.
    dir_lock: Option<std::fs::File>,
    /// Set when a batch fails to be written, cleared by the next batch written.
    write_failure: Mutex<Option<WriteFailure>>,
    /// Masks a query's terms as stored values were masked ([`Store::with_query_masker`]).
    pub(crate) query_masker: Option<QueryTermMasker>,
    /// The keyed hash a term would be stored as ([`Store::with_query_pseudonyms`]).
    pub(crate) query_pseudonym: Option<QueryTermPseudonym>,
    /// Per tenant, the keys of its newest dead letters, loaded from its journal at its first
    /// write: the same bad line read again (a spool file re-read after a crash, an HTTP batch
    /// resent) is not stored twice.
    recent_dead: Mutex<HashMap<String, RecentDeadLetters>>,
    /// The days whose alert Parquet file is behind the alert book
    /// (`StoreConfig::alert_parquet_export_seconds`).
    alert_export: Mutex<AlertExport>,
}

/// The alert Parquet files not yet rewritten with the alerts stored since, per tenant, and
/// when they were last all brought up to date.
struct AlertExport {
    behind: BTreeMap<String, BTreeSet<chrono::NaiveDate>>,
    last: std::time::Instant,
}

/// How many of a tenant's newest dead letters are remembered for deduplication: a resend comes
/// soon after the batch it repeats.
const RECENT_DEAD_LETTERS: usize = 100_000;

/// What makes two dead letters the same: the same source, input line, reason and (masked)
/// input, whenever they were received. The input is known by its digest: excerpts are cut,
/// and different records cut to the same excerpt (a webhook's records are all line 1) were
/// taken for resends and dropped. Dead letters without a digest (stored before it existed)
/// go by their excerpt.
fn dead_letter_key(d: &DeadLetter) -> u64 {
    let mut h = blake3::Hasher::new();
    let input = d.input_digest.as_deref().unwrap_or(&d.excerpt);
    for part in [
        d.source.as_bytes(),
        &d.line.unwrap_or(0).to_le_bytes(),
        d.reason.as_bytes(),
        input.as_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or_default())
}

/// The keys of a tenant's newest dead letters, oldest first in `order`.
#[derive(Default)]
struct RecentDeadLetters {
    keys: HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

impl RecentDeadLetters {
    /// The newest [`RECENT_DEAD_LETTERS`] of the journal at `path` (none if it does not exist).
    fn load(path: &std::path::Path) -> Result<RecentDeadLetters> {
        let mut recent = RecentDeadLetters::default();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(recent),
            Err(e) => return Err(e).at(path),
        };
        let end = file.metadata().at(path)?.len();
        let mut lines = ReverseLines::new(&file, end);
        while recent.order.len() < RECENT_DEAD_LETTERS {
            let Some((_, line)) = lines.next_line().at(path)? else {
                break;
            };
            if let Ok(d) = serde_json::from_slice::<DeadLetter>(&line) {
                let key = dead_letter_key(&d);
                if recent.keys.insert(key) {
                    recent.order.push_front(key);
                }
            }
        }
        Ok(recent)
    }

    fn remember(&mut self, key: u64) {
        if self.keys.insert(key) {
            self.order.push_back(key);
            if self.order.len() > RECENT_DEAD_LETTERS {
                if let Some(old) = self.order.pop_front() {
                    self.keys.remove(&old);
                }
            }
        }
    }
}

/// Masks one search term the way the pipeline masks the values it stores: the masked text, or
/// `None` when the term holds nothing to mask.
pub type QueryTermMasker = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The stand-in the pipeline stores for a value it hashes whole (`hmac:...`): for a value hashed
/// for its key's name (Salesforce's `SESSION_KEY`) or a field the masking config hashes
/// (`user.email`), which no pattern recognises in a search term.
pub type QueryTermPseudonym = Arc<dyn Fn(&str) -> String + Send + Sync>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves state that is still consistent on disk (every
    // step is durable before memory changes), so the poison flag carries no information.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// A Parquet file written under a temporary name, waiting for its index commit.
struct PendingFile {
    tmp: PathBuf,
    final_path: PathBuf,
    key: IndexKey,
}

fn tmp_name(seq: u64, n: usize) -> String {
    format!(".part-{seq:020}-{n:04}.parquet.tmp")
}
pub(crate) fn final_name(seq: u64, n: usize) -> String {
    format!("part-{seq:020}-{n:04}.parquet")
}
/// Batch sequence number from a temporary file name.
fn seq_of_tmp(name: &str) -> Option<(u64, usize)> {
    let rest = name.strip_prefix(".part-")?.strip_suffix(".parquet.tmp")?;
    let (seq, n) = rest.split_once('-')?;
    Some((seq.parse().ok()?, n.parse().ok()?))
}

/// Settle the `.parquet.tmp` files of batches a crash interrupted in partition `dir`; (put into
/// place, removed). With the day's index usable (`committed`: the last batch it committed), as
/// recovery on open does: a committed batch's file is put into place (its events are in the
/// index and were acknowledged), the others are removed (never acknowledged: resent). Without it
/// (`perimeter reindex` rebuilding a lost index), a readable file is put into place and indexed,
/// an unreadable one removed. A batch writes and syncs its Parquet files before its index
/// commits, so an unreadable one was never committed; a readable one may or may not have been,
/// which only the lost index could tell, and keeping it loses nothing either way: were it never
/// acknowledged, its resend is a duplicate of what the rebuilt index holds.
pub(crate) fn settle_interrupted_batches(
    dir: &std::path::Path,
    committed: Option<u64>,
) -> Result<(usize, usize)> {
    let (mut kept, mut removed) = (0, 0);
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".parquet.tmp") {
            continue;
        }
        let keep = seq_of_tmp(&name).filter(|(seq, _)| match committed {
            Some(committed) => *seq <= committed,
            None => std::fs::File::open(entry.path())
                .ok()
                .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
                .is_some(),
        });
        if let Some((seq, n)) = keep {
            let dst = dir.join(final_name(seq, n));
            std::fs::rename(entry.path(), &dst).at(&dst)?;
            tracing::info!(file = %dst.display(), "recovered parquet file of an interrupted batch");
            kept += 1;
        } else {
            std::fs::remove_file(entry.path()).at(entry.path())?;
            tracing::info!(file = %name, "removed parquet file of an unacknowledged batch");
            removed += 1;
        }
    }
    if kept + removed > 0 {
        layout::sync_dir(dir)?;
    }
    Ok((kept, removed))
}

impl Store {
    /// Open (or create) the store in `config.data_dir`, finishing or undoing any batch a crash
    /// interrupted (see `docs/adr/001-store-durability.md`). One process at a time: the data
    /// directory is locked ([`LOCK_FILE`]), and a second writer gets [`StoreError::Locked`]
    /// (its recovery would delete the first one's unfinished files).
    pub fn open(config: StoreConfig) -> Result<Store> {
        Store::open_as(config, true)
    }

    /// Open the store in `config.data_dir` for reading only, beside a writer that may be running
    /// (`perimeter search` on a live service's directory): no lock, no recovery (unfinished
    /// files are left to their writer, and are invisible to reads anyway), nothing written;
    /// writes fail with [`StoreError::ReadOnly`]. Reads see what was committed at open.
    pub fn open_read_only(config: StoreConfig) -> Result<Store> {
        Store::open_as(config, false)
    }

    fn open_as(config: StoreConfig, writer: bool) -> Result<Store> {
        config.validate()?;
        let layout = Layout {
            root: config.data_dir.clone(),
        };
        let lock = if writer {
            std::fs::create_dir_all(&layout.root).at(&layout.root)?;
            Some(lock_data_dir(&layout.root)?)
        } else {
            None
        };
        if writer {
            crate::reindex::remove_unfinished_rebuilds(&layout.index_root())?;
        }
        let schema = EventSchema::new();
        let mut indexes = BTreeMap::new();
        let mut last_seq = 0;
        let mut events_stored = 0;
        for (tenant, day, ddir) in layout.index_days()? {
            if !ddir.join("meta.json").exists() {
                // Created but never committed (crash during the first batch of the day).
                if writer {
                    std::fs::remove_dir_all(&ddir).at(&ddir)?;
                }
                continue;
            }
            // A damaged index stops the store, which would otherwise take it for empty (and
            // store resends of its events again); the Parquet files can rebuild it.
            let idx =
                DayIndex::open(&ddir, &tenant, day, &schema, writer).map_err(|e| match e {
                    StoreError::Tantivy(e) => StoreError::Corrupt {
                        path: ddir.clone(),
                        reason: format!(
                            "{e}: rebuild the index from the Parquet files with \
                             `perimeter reindex`"
                        ),
                    },
                    other => other,
                })?;
            last_seq = last_seq.max(idx.committed_seq()?);
            events_stored += idx.reader.searcher().num_docs();
            indexes.insert((tenant.clone(), day), Arc::new(idx));
        }
        let store = Store {
            alerts: RwLock::new({
                let mut book = AlertBook::load(&layout.alerts_root(), writer)?;
                book.set_group_seconds(config.alert_group_seconds);
                if writer {
                    // The files follow the journal: written again in full, they are complete
                    // even after a crash between a journal append and its export.
                    crate::alert_parquet::export_all(&layout, &book)?;
                }
                book
            }),
            dead: RwLock::new(load_dead_letters(&layout, writer)?),
            config,
            layout,
            schema,
            indexes: RwLock::new(indexes),
            group: Mutex::new(GroupState::default()),
            group_done: std::sync::Condvar::new(),
            write: Mutex::new(WriteState {
                writers: HashMap::new(),
                text: BatchText::default(),
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                last_seq,
                tick: 0,
            }),
            counters: Counters::default(),
            dir_lock: lock,
            write_failure: Mutex::new(None),
            query_masker: None,
            query_pseudonym: None,
            recent_dead: Mutex::new(HashMap::new()),
            alert_export: Mutex::new(AlertExport {
                behind: BTreeMap::new(),
                last: std::time::Instant::now(),
            }),
        };
        store
            .counters
            .events_stored
            .store(events_stored, Ordering::Relaxed);
        if writer {
            store.recover_parquet()?;
        }
        Ok(store)
    }

    /// `Err(ReadOnly)` for a store opened with [`Store::open_read_only`].
    pub(crate) fn ensure_writable(&self) -> Result<()> {
        match self.dir_lock {
            Some(_) => Ok(()),
            None => Err(StoreError::ReadOnly {
                path: self.layout.root.clone(),
            }),
        }
    }

    /// Mask the terms of event searches with `masker` before they are looked up: a value the
    /// pipeline stored masked (an access key id hashed to `hmac:...`) is found by searching
    /// the value itself, as the analyst has it from elsewhere.
    pub fn with_query_masker(mut self, masker: QueryTermMasker) -> Store {
        self.query_masker = Some(masker);
        self
    }

    /// Let each search term that `with_query_masker`'s masker leaves alone also match its
    /// keyed hash (`term` becomes `(term OR "<pseudonym>")`): a value stored hashed because of
    /// its key's name or its field's masking rule is found by the value itself, written exactly
    /// (the hash is of the exact text, case included).
    pub fn with_query_pseudonyms(mut self, pseudonym: QueryTermPseudonym) -> Store {
        self.query_pseudonym = Some(pseudonym);
        self
    }

    /// The config the store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Finish an interrupted batch: a temporary Parquet file whose index committed the batch is
    /// renamed into place; one whose index did not is deleted (the batch was never
    /// acknowledged, so its events will be replayed).
    fn recover_parquet(&self) -> Result<()> {
        crate::compaction::remove_staging(&self.layout.root)?;
        let indexes = read(&self.indexes);
        for p in self.layout.event_partitions()? {
            crate::compaction::recover_compactions(&p.dir)?;
            let committed = match indexes.get(&(p.tenant, p.day)) {
                Some(idx) => idx.committed_seq()?,
                None => 0,
            };
            settle_interrupted_batches(&p.dir, Some(committed))?;
        }
        Ok(())
    }

    pub(crate) fn index_for(&self, tenant: &str, day: NaiveDate) -> Result<Arc<DayIndex>> {
        let key = (tenant.to_string(), day);
        if let Some(idx) = read(&self.indexes).get(&key) {
            return Ok(idx.clone());
        }
        let dir = self.layout.index_dir(tenant, day);
        let idx = Arc::new(DayIndex::open(&dir, tenant, day, &self.schema, true)?);
        write(&self.indexes).insert(key, idx.clone());
        Ok(idx)
    }

    /// Store a batch. Returns only after tantivy committed and the Parquet files are written,
    /// fsynced and in place, alerts and dead letters journaled. Idempotent on event id and
    /// alert id, across restarts too.
    pub fn write_batch(&self, batch: &StoreBatch) -> Result<WriteAck> {
        self.ensure_writable()?;
        let now = Utc::now();
        let result = self.answered(self.write_batch_grouped(batch), batch, now);
        self.note_write_result(&result);
        result
    }

    /// A batch's result as callers get it: what it holds past retention at `now` counted, a full
    /// disk named as such.
    fn answered(
        &self,
        result: Result<WriteAck>,
        batch: &StoreBatch,
        now: DateTime<Utc>,
    ) -> Result<WriteAck> {
        result
            .map(|ack| WriteAck {
                // Resent events stored nothing: a batch counts at most the events it wrote
                // (QA: every resend of an old record counted and warned again).
                events_past_retention: self
                    .past_retention(&batch.events, now)
                    .min(ack.events_written),
                ..ack
            })
            .map_err(|e| crate::error::name_full_disk(e, &self.layout.root))
    }

    /// Store several batches with one commit per touched index (group commit): each result is
    /// what [`Store::write_batch`] would have answered for that batch, in the same order, and
    /// none is returned before all are durable. For a caller that holds several batches at
    /// once (the service's pipeline, when submissions queued while it worked): a commit per
    /// small batch costs far more per event than one for their sum. A batch that is invalid as
    /// given gets its own error; the others are written.
    pub fn write_batches(&self, batches: &[StoreBatch]) -> Vec<Result<WriteAck>> {
        if let Err(e) = self.ensure_writable() {
            let mut error = failed_together(e);
            return batches.iter().map(|_| Err(error())).collect();
        }
        let now = Utc::now();
        let checked: Vec<Result<()>> = batches.iter().map(validate_batch).collect();
        let valid: Vec<&StoreBatch> = batches
            .iter()
            .zip(&checked)
            .filter(|(_, c)| c.is_ok())
            .map(|(b, _)| b)
            .collect();
        let mut written = self.write_group(&valid).into_iter();
        let results: Vec<Result<WriteAck>> = batches
            .iter()
            .zip(checked)
            .map(|(b, c)| {
                c?;
                let ack = written.next().unwrap_or_else(|| Ok(WriteAck::default()));
                self.answered(ack, b, now)
            })
            .collect();
        // The store's health is that of the write: the first valid batch's result.
        if let Some(r) = results
            .iter()
            .find(|r| !matches!(r, Err(StoreError::InvalidBatch(_))))
        {
            self.note_write_result(r);
        }
        results
    }

    /// Track whether the store is failing (see [`Store::write_failure`]). A batch that is
    /// wrong as given says nothing about the store's health.
    fn note_write_result(&self, result: &Result<WriteAck>) {
        let mut failure = lock(&self.write_failure);
        match result {
            Ok(_) => *failure = None,
            Err(StoreError::InvalidBatch(_)) => {}
            Err(e) => {
                let error = e.to_string();
                match failure.as_mut() {
                    Some(f) => {
                        f.batches += 1;
                        f.error = error;
                    }
                    None => {
                        *failure = Some(WriteFailure {
                            since: Utc::now(),
                            batches: 1,
                            error,
                        })
                    }
                }
            }
        }
    }

    /// The failure of the last batch written, if no batch was written since: the store is
    /// failing. `None` while writes succeed (or none was tried yet).
    pub fn write_failure(&self) -> Option<WriteFailure> {
        lock(&self.write_failure).clone()
    }

    /// How many of `events` are dated before their retention window at `now` (see
    /// [`WriteAck::events_past_retention`]).
    pub fn past_retention(&self, events: &[Event], now: DateTime<Utc>) -> usize {
        events
            .iter()
            .filter(|e| {
                let days = self.config.retention_days_for(&e.tenant, &e.source);
                crate::retention::is_expired(e.timestamp.date_naive(), days, now)
            })
            .count()
    }

    fn write_batch_grouped(&self, batch: &StoreBatch) -> Result<WriteAck> {
        validate_batch(batch)?;
        if self.config.commit_interval_ms == 0 {
            return self
                .write_group(&[batch])
                .pop()
                .unwrap_or_else(|| Ok(WriteAck::default()));
        }
        // Group commit: the first caller becomes the leader, waits the window, then writes
        // every batch queued meanwhile with one commit per index; the others wait for it.
        let mut g = lock(&self.group);
        let ticket = g.next_ticket;
        g.next_ticket += 1;
        if g.leader_active {
            g.queue.push((ticket, batch.clone()));
            loop {
                g = self.group_done.wait(g).unwrap_or_else(|p| p.into_inner());
                if let Some(r) = g.results.remove(&ticket) {
                    return r;
                }
            }
        }
        g.leader_active = true;
        drop(g);
        std::thread::sleep(std::time::Duration::from_millis(
            self.config.commit_interval_ms,
        ));
        let followers = {
            let mut g = lock(&self.group);
            g.leader_active = false;
            std::mem::take(&mut g.queue)
        };
        let mut batches: Vec<&StoreBatch> = vec![batch];
        batches.extend(followers.iter().map(|(_, b)| b));
        let mut results = self.write_group(&batches).into_iter();
        let own = results.next().unwrap_or_else(|| Ok(WriteAck::default()));
        let mut g = lock(&self.group);
        for ((t, _), r) in followers.iter().zip(results) {
            g.results.insert(*t, r);
        }
        drop(g);
        self.group_done.notify_all();
        own
    }

    /// Write batches with one commit per touched index; one result per batch, same order.
    fn write_group(&self, batches: &[&StoreBatch]) -> Vec<Result<WriteAck>> {
        let started = Instant::now();
        let events: Vec<&Event> = batches.iter().flat_map(|b| b.events.iter()).collect();
        let mut acks = vec![WriteAck::default(); batches.len()];
        if !events.is_empty() {
            let mut st = lock(&self.write);
            match self.write_events(&mut st, &events) {
                Ok(fresh) => {
                    let mut offset = 0;
                    for (ack, b) in acks.iter_mut().zip(batches) {
                        let flags = &fresh[offset..offset + b.events.len()];
                        ack.events_written = flags.iter().filter(|f| **f).count();
                        for (e, _) in b.events.iter().zip(flags).filter(|(_, new)| **new) {
                            *ack.events_written_by_source
                                .entry(e.source.clone())
                                .or_default() += 1;
                        }
                        ack.events_duplicate = flags.len() - ack.events_written;
                        offset += b.events.len();
                    }
                }
                Err(e) => {
                    let mut error = failed_together(e);
                    return batches.iter().map(|_| Err(error())).collect();
                }
            }
        }
        // The alert Parquet files of the days the group's alerts touched are rewritten once for
        // the group, after every batch's alerts are journaled (a day's file holds all its
        // alerts, so a rewrite per batch would redo the same file), and no more often than
        // `alert_parquet_export_seconds`.
        let mut touched = Vec::new();
        let mut results: Vec<Result<WriteAck>> = acks
            .into_iter()
            .zip(batches)
            .map(|(mut ack, b)| {
                if !b.alerts.is_empty() {
                    let layout = &self.layout;
                    let mut book = write(&self.alerts);
                    let inserted = book.insert(|t| layout.alerts_journal(t), &b.alerts)?;
                    drop(book);
                    touched.extend(inserted.touched);
                    ack.alerts_written = inserted.written;
                    ack.alerts_grouped = inserted.grouped;
                    ack.alerts_known = inserted.known;
                    ack.alerts_still_firing = inserted.still_firing;
                    ack.alerts_grown = inserted.grown;
                }
                if !b.dead_letters.is_empty() {
                    ack.dead_letters_written_by_source =
                        self.write_dead_letters(&b.dead_letters)?;
                    ack.dead_letters_written = ack.dead_letters_written_by_source.values().sum();
                }
                Ok(ack)
            })
            .collect();
        if !touched.is_empty() {
            self.note_alert_days(&touched);
        }
        if let Err(e) = self.export_alert_days(false) {
            // The batches with alerts fail, as a batch whose export failed did before groups:
            // the alerts are journaled, and the days' files stay due, to be rewritten whole by
            // the next export.
            tracing::warn!(error = %e, "alert parquet export failed");
            let mut error = failed_together(e);
            for (r, b) in results.iter_mut().zip(batches) {
                if r.is_ok() && !b.alerts.is_empty() {
                    *r = Err(error());
                }
            }
        }
        self.counters
            .batches
            .fetch_add(batches.len() as u64, Ordering::Relaxed);
        self.counters
            .last_batch_micros
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        results
    }

    /// Store the events not stored yet; returns, per event, whether it was new.
    fn write_events(&self, st: &mut WriteState, events: &[&Event]) -> Result<Vec<bool>> {
        st.tick += 1;
        let tick = st.tick;
        let now_nanos = Utc::now().timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
        let seq = (st.last_seq + 1).max(now_nanos);
        st.last_seq = seq;

        derive_ids(events, st.cores)?;
        // Dedup against each (tenant, day) index's id set, opening writers as needed.
        let mut fresh: Vec<&Event> = Vec::with_capacity(events.len());
        let mut flags = Vec::with_capacity(events.len());
        let mut touched: HashSet<IndexKey> = HashSet::new();
        let mut dedup = || -> Result<()> {
            for e in events {
                let key = (e.tenant.clone(), e.timestamp.date_naive());
                self.open_writer(st, &key, tick)?;
                let id = id_key(&e.id().0);
                let stored_earlier =
                    e.timestamp_adjusted && self.stored_on_days_before(st, &key, id, tick)?;
                let Some(w) = st.writers.get_mut(&key) else {
                    continue;
                };
                w.last_used = tick;
                let new = !stored_earlier && w.ids.insert(id);
                if new {
                    touched.insert(key);
                    fresh.push(*e);
                }
                flags.push(new);
            }
            Ok(())
        };
        let mut result = dedup();
        let dup = (flags.len() - fresh.len()) as u64;
        if result.is_ok() && !fresh.is_empty() {
            result = self.write_fresh(st, &fresh, &touched, seq);
        }
        if result.is_err() {
            // Pending documents and the ids added above are not committed: drop those writers
            // so the next batch reloads ids from what is really on disk.
            for key in &touched {
                if let Some(mut w) = st.writers.remove(key) {
                    let _ = w.writer.rollback();
                }
            }
        }
        self.evict_writers(st);
        result?;
        self.counters
            .events_duplicate
            .fetch_add(dup, Ordering::Relaxed);
        Ok(flags)
    }

    /// Open the writer of `key`'s index (created if new) unless it is open.
    fn open_writer(&self, st: &mut WriteState, key: &IndexKey, tick: u64) -> Result<()> {
        if !st.writers.contains_key(key) {
            let idx = self.index_for(&key.0, key.1)?;
            let w = DayWriter::open(
                idx,
                self.config.index_writer_threads,
                self.config.index_writer_memory_bytes,
                tick,
            )?;
            st.writers.insert(key.clone(), w);
        }
        Ok(())
    }

    /// Whether event `id` is stored in one of the [`ADJUSTED_REPLAY_DAYS`] days' indexes before
    /// `key`'s day. Asked only for events whose vendor time was replaced by their receive time
    /// (ADR 012): such an event's day is the day it arrived, so a resend after midnight lands
    /// on a later day than the first delivery, whose index alone would not know it. Indexes
    /// that do not exist are not created.
    fn stored_on_days_before(
        &self,
        st: &mut WriteState,
        key: &IndexKey,
        id: u128,
        tick: u64,
    ) -> Result<bool> {
        for back in 1..=ADJUSTED_REPLAY_DAYS {
            let Some(day) = key.1.checked_sub_days(chrono::Days::new(back)) else {
                break;
            };
            let earlier = (key.0.clone(), day);
            let exists = st.writers.contains_key(&earlier)
                || read(&self.indexes).contains_key(&earlier)
                || self
                    .layout
                    .index_dir(&key.0, day)
                    .join("meta.json")
                    .exists();
            if !exists {
                continue;
            }
            self.open_writer(st, &earlier, tick)?;
            if st
                .writers
                .get(&earlier)
                .is_some_and(|w| w.ids.contains(&id))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn write_fresh(
        &self,
        st: &mut WriteState,
        fresh: &[&Event],
        touched: &HashSet<IndexKey>,
        seq: u64,
    ) -> Result<()> {
        let WriteState {
            writers,
            text,
            cores,
            ..
        } = st;
        let t_start = Instant::now();
        // Raw JSON text (Parquet, output documents) and raw words (catch-all), in one pass.
        text.rebuild(fresh, *cores, &|e: &Event| {
            self.config.raw_text_searched(&e.source)
        })?;
        let text = &*text;

        let mut groups: BTreeMap<(&str, &str, NaiveDate), Vec<usize>> = BTreeMap::new();
        for (i, e) in fresh.iter().enumerate() {
            groups
                .entry((&e.tenant, &e.source, e.timestamp.date_naive()))
                .or_default()
                .push(i);
        }

        // Two phases, each with two busy threads for the two cores. First the caller builds the
        // documents while each writer's indexing thread inverts them. Then the touched indexes
        // prepare their commits (each indexing thread serializes its segment) while the caller
        // writes the Parquet files. Only when those files are written and synced do the indexes
        // commit: a committed index says its batch's files exist (recovery renames them into
        // place, ADR 001), so a Parquet failure aborts every prepared commit instead.
        let (mut output, mut all) = (String::new(), String::new());
        for (i, e) in fresh.iter().enumerate() {
            let key = (e.tenant.clone(), e.timestamp.date_naive());
            let Some(w) = writers.get(&key) else {
                continue;
            };
            let output = output_document(e, text.raw(i), &mut output);
            let doc = self.schema.document(e, text.raw_words(i), output, &mut all);
            w.writer.add_document(doc)?;
        }
        let it = t_start.elapsed();
        let commit_started = Instant::now();
        let (prepared, pending, pt) = std::thread::scope(|scope| {
            // In parallel: one index at a time left a core idle whenever that index had fewer
            // indexing threads than there are cores.
            let handles: Vec<_> = writers
                .iter_mut()
                .filter(|(key, _)| touched.contains(*key))
                .map(|(key, w)| (key, scope.spawn(move || w.prepare(seq))))
                .collect();
            let t = Instant::now();
            let pending = self.write_parquet_tmp(fresh, text, &groups, seq);
            let pt = t.elapsed();
            let prepared: Vec<_> = handles
                .into_iter()
                .map(|(key, h)| {
                    let r = h.join().unwrap_or_else(|_| {
                        Err(StoreError::InvalidBatch(
                            "index commit thread panicked".into(),
                        ))
                    });
                    (key, r)
                })
                .collect();
            (prepared, pending, pt)
        });
        let pending = match pending {
            Ok(files) => files,
            Err(e) => {
                // write_parquet_tmp removed its own files; nothing of the batch is committed.
                for p in prepared.into_iter().filter_map(|(_, p)| p.ok()) {
                    let _ = p.abort();
                }
                return Err(e);
            }
        };
        let outcomes: Vec<(&IndexKey, Result<()>)> = prepared
            .into_iter()
            .map(|(key, p)| (key, p.and_then(|p| p.commit())))
            .collect();
        let mut committed: HashSet<&IndexKey> = HashSet::new();
        let mut first_err = None;
        for (key, outcome) in outcomes {
            let Some(key) = touched.get(key) else {
                continue;
            };
            match outcome {
                Ok(()) => {
                    committed.insert(key);
                }
                Err(e) => {
                    tracing::error!(tenant = %key.0, day = %key.1, error = %e, "tantivy commit failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        self.counters.last_commit_micros.store(
            commit_started.elapsed().as_micros() as u64,
            Ordering::Relaxed,
        );
        // Files of committed indexes go into place even if another index failed: their events
        // are now in the dedup set and would not be written again on replay.
        let mut dirs = HashSet::new();
        for f in &pending {
            if committed.contains(&f.key) {
                std::fs::rename(&f.tmp, &f.final_path).at(&f.final_path)?;
                if let Some(d) = f.final_path.parent() {
                    dirs.insert(d.to_path_buf());
                }
            } else {
                let _ = std::fs::remove_file(&f.tmp);
            }
        }
        for d in dirs {
            layout::sync_dir(&d)?;
        }
        if let Some(e) = first_err {
            // The committed indexes keep their writers (their ids are durable); the caller
            // drops the others, including the committed ones - harmless, ids reload from disk.
            return Err(e);
        }
        let n = fresh.len() as u64;
        tracing::debug!(
            events = n,
            index_adds_ms = it.as_millis() as u64,
            parquet_ms = pt.as_millis() as u64,
            commit_ms = commit_started.elapsed().as_millis() as u64,
            total_ms = t_start.elapsed().as_millis() as u64,
            "batch stored"
        );
        self.counters.events_written.fetch_add(n, Ordering::Relaxed);
        self.counters.events_stored.fetch_add(n, Ordering::Relaxed);
        self.counters
            .parquet_files
            .fetch_add(pending.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn write_parquet_tmp(
        &self,
        fresh: &[&Event],
        text: &BatchText,
        groups: &BTreeMap<(&str, &str, NaiveDate), Vec<usize>>,
        seq: u64,
    ) -> Result<Vec<PendingFile>> {
        let mut files = Vec::new();
        let result = (|| {
            for ((tenant, source, day), idxs) in groups {
                let dir = self.layout.parquet_partition_dir(tenant, source, *day);
                layout::create_dir_durable(&dir)?;
                for (n, chunk) in idxs
                    .chunks(self.config.parquet_max_rows_per_file)
                    .enumerate()
                {
                    let evs: Vec<&Event> = chunk.iter().map(|&i| fresh[i]).collect();
                    let rs: Vec<&str> = chunk.iter().map(|&i| text.raw(i)).collect();
                    let tmp = dir.join(tmp_name(seq, n));
                    files.push(PendingFile {
                        tmp: tmp.clone(),
                        final_path: dir.join(final_name(seq, n)),
                        key: (tenant.to_string(), *day),
                    });
                    parquet_sink::write_events_file(&tmp, &evs, &rs)?;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(files),
            Err(e) => {
                remove_tmp_files(&files);
                Err(e)
            }
        }
    }

    /// Close least recently used writers beyond `max_open_writers` (they hold no pending
    /// documents: every batch commits).
    fn evict_writers(&self, st: &mut WriteState) {
        while st.writers.len() > self.config.max_open_writers {
            let Some(oldest) = st
                .writers
                .iter()
                .min_by_key(|(k, w)| (w.last_used, k.1))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(w) = st.writers.remove(&oldest) {
                if let Err(e) = w.writer.wait_merging_threads() {
                    tracing::warn!(tenant = %oldest.0, day = %oldest.1, error = %e, "closing index writer");
                }
            }
        }
    }

    /// Store the dead letters not stored already; how many were, per source.
    fn write_dead_letters(&self, dls: &[DeadLetter]) -> Result<BTreeMap<String, usize>> {
        let mut by_tenant: BTreeMap<&str, Vec<&DeadLetter>> = BTreeMap::new();
        for d in dls {
            by_tenant.entry(&d.tenant).or_default().push(d);
        }
        let mut tenants = write(&self.dead);
        let mut recent = lock(&self.recent_dead);
        let mut written: BTreeMap<String, usize> = BTreeMap::new();
        for (tenant, list) in by_tenant {
            let path = self.layout.dead_letters_file(tenant);
            let known = match recent.entry(tenant.to_string()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(RecentDeadLetters::load(&path)?)
                }
            };
            let mut batch_keys = HashSet::new();
            let (keys, fresh): (Vec<u64>, Vec<&DeadLetter>) = list
                .into_iter()
                .map(|d| (dead_letter_key(d), d))
                .filter(|(k, _)| !known.keys.contains(k) && batch_keys.insert(*k))
                .unzip();
            if fresh.is_empty() {
                continue;
            }
            crate::journal::append(&path, &fresh)?;
            // Remembered once written: a failed append is retried in full.
            for k in keys {
                known.remember(k);
            }
            tenants.insert(tenant.to_string());
            for d in &fresh {
                *written.entry(d.source.clone()).or_default() += 1;
            }
        }
        self.counters
            .dead_letters_written
            .fetch_add(written.values().sum::<usize>() as u64, Ordering::Relaxed);
        Ok(written)
    }

    /// A tenant's dead letters, newest first, a page at a time, read backwards from the end
    /// of its file (all of them, back to retention; the newest cost the same however many
    /// there are). A filter that selects none reads the whole file.
    pub fn list_dead_letters(
        &self,
        tenant: &str,
        q: &DeadLetterQuery,
    ) -> Result<crate::Page<DeadLetter>> {
        let path = self.layout.dead_letters_file(tenant);
        // Opened and measured while no append is under way: the length ends on a whole line
        // (a reader beside another process's writer may still see half a line: skipped).
        let opened = {
            let _appends = read(&self.dead);
            match std::fs::File::open(&path) {
                Ok(f) => f.metadata().map(|m| (f, m)).at(&path).map(Some),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).at(&path),
            }?
        };
        let Some((file, meta)) = opened else {
            if q.cursor.is_some() {
                return Err(StoreError::InvalidQuery(CursorError::Bad.to_string()));
            }
            return Ok(crate::Page {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        use std::os::unix::fs::MetadataExt;
        let end = match &q.cursor {
            None => meta.len(),
            Some(c) => cursor_offset(&file, c, meta.ino(), meta.len())
                .map_err(|e| StoreError::InvalidQuery(e.to_string()))?,
        };
        // An excerpt is masked as stored events are: an address searched for matches its
        // pseudonym too (QA: found in events, not in dead letters).
        let text = q.text.as_deref().map(|t| {
            std::iter::once(t.to_string())
                .chain(self.stored_forms_of(t))
                .map(|form| form.to_lowercase())
                .collect::<Vec<_>>()
        });
        let limit = q.limit.clamp(1, crate::MAX_PAGE_LIMIT);
        let mut lines = ReverseLines::new(&file, end);
        let mut items = Vec::new();
        let (mut page_end, mut more) = (0, false);
        while let Some((offset, line)) = lines.next_line().at(&path)? {
            let d: DeadLetter = match serde_json::from_slice(&line) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(path = %path.display(), offset, error = %e, "unreadable dead-letter line skipped");
                    continue;
                }
            };
            if !q.selects(&d, text.as_deref()) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(d);
            page_end = offset;
        }
        Ok(crate::Page {
            items,
            next_cursor: more.then(|| page_cursor(meta.ino(), page_end)),
        })
    }

    /// Every tenant with events, alerts or dead letters, sorted.
    /// The days (tenant, day) whose events are in Parquet files but that have no index: one
    /// deleted or lost while the service was stopped. Searched, such a day looks empty, alert
    /// evidence looks expired, and events sent again are stored again (QA); `reindex` rebuilds
    /// them.
    pub fn days_without_index(&self) -> Result<Vec<(String, chrono::NaiveDate)>> {
        let indexed: std::collections::HashSet<(String, chrono::NaiveDate)> = self
            .layout
            .index_days()?
            .into_iter()
            .map(|(tenant, day, _)| (tenant, day))
            .collect();
        let mut missing = std::collections::BTreeSet::new();
        for p in self.layout.event_partitions()? {
            if indexed.contains(&(p.tenant.clone(), p.day)) {
                continue;
            }
            let holds_files = std::fs::read_dir(&p.dir).at(&p.dir)?.any(|e| {
                e.is_ok_and(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    !name.starts_with('.') && name.ends_with(".parquet")
                })
            });
            if holds_files {
                missing.insert((p.tenant, p.day));
            }
        }
        Ok(missing.into_iter().collect())
    }

    pub fn tenants(&self) -> Vec<String> {
        let mut set: std::collections::BTreeSet<String> =
            read(&self.indexes).keys().map(|(t, _)| t.clone()).collect();
        set.extend(read(&self.alerts).tenants().cloned());
        set.extend(read(&self.dead).iter().cloned());
        set.into_iter().collect()
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            events_stored: c.events_stored.load(Ordering::Relaxed),
            events_written_total: c.events_written.load(Ordering::Relaxed),
            events_duplicate_total: c.events_duplicate.load(Ordering::Relaxed),
            alerts_stored: read(&self.alerts).len() as u64,
            dead_letters_written_total: c.dead_letters_written.load(Ordering::Relaxed),
            batches_written_total: c.batches.load(Ordering::Relaxed),
            last_commit_seconds: c.last_commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
            last_batch_seconds: c.last_batch_micros.load(Ordering::Relaxed) as f64 / 1e6,
            index_days: read(&self.indexes).len() as u64,
            open_index_writers: self
                .write
                .try_lock()
                .map(|s| s.writers.len() as u64)
                .unwrap_or(0),
            parquet_files_written_total: c.parquet_files.load(Ordering::Relaxed),
        }
    }

    /// Close every index writer after waiting for its merges (graceful shutdown). Every
    /// acknowledged batch is already durable; this only leaves the indexes tidy.
    pub fn flush(&self) -> Result<()> {
        let mut st = lock(&self.write);
        for (_, w) in st.writers.drain() {
            w.writer.wait_merging_threads()?;
        }
        drop(st);
        self.export_alert_days(true)
    }

    /// Rewrite the alert Parquet files that are behind, if `alert_parquet_export_seconds` have
    /// passed since they were last brought up to date. Stored batches do this themselves; a
    /// service calls it now and then so that the files catch up when batches stop coming.
    pub fn export_due_alerts(&self) -> Result<()> {
        self.export_alert_days(false)
    }

    /// Note the days of the alerts a group added or grew as behind in the Parquet export.
    fn note_alert_days(&self, touched: &[(String, String)]) {
        let days: Vec<(String, chrono::NaiveDate)> = {
            let book = read(&self.alerts);
            touched
                .iter()
                .filter_map(|(tenant, id)| {
                    Some((
                        tenant.clone(),
                        book.get(tenant, id)?.alert.timestamp.date_naive(),
                    ))
                })
                .collect()
        };
        self.alert_days_behind(days);
    }

    /// Note days of tenants whose alert Parquet file is behind the book. Not to be called with
    /// the book locked: the export holds this lock, then reads the book.
    pub(crate) fn alert_days_behind(
        &self,
        days: impl IntoIterator<Item = (String, chrono::NaiveDate)>,
    ) {
        let mut export = lock(&self.alert_export);
        for (tenant, day) in days {
            export.behind.entry(tenant).or_default().insert(day);
        }
    }

    /// Rewrite the alert Parquet files that are behind: now if `force`, else once
    /// `alert_parquet_export_seconds` have passed since the last time. On an error they all
    /// stay behind (a file rewritten again is the same file).
    pub(crate) fn export_alert_days(&self, force: bool) -> Result<()> {
        let mut export = lock(&self.alert_export);
        let every = std::time::Duration::from_secs(self.config.alert_parquet_export_seconds);
        if export.behind.is_empty() || !(force || export.last.elapsed() >= every) {
            return Ok(());
        }
        let book = read(&self.alerts);
        for (tenant, days) in &export.behind {
            crate::alert_parquet::export_days(&self.layout, &book, tenant, days.iter().copied())?;
        }
        drop(book);
        export.behind.clear();
        export.last = std::time::Instant::now();
        Ok(())
    }
}

impl Drop for Store {
    /// The alert Parquet files catch up with the alerts stored since their last rewrite (were
    /// this to fail or not run, the next open rewrites them all).
    fn drop(&mut self) {
        if let Err(e) = self.export_alert_days(true) {
            tracing::warn!(error = %e, "alert parquet export at close failed");
        }
    }
}

/// The errors of batches that failed together, one per call: `e` for the first,
/// [`StoreError::GroupCommit`] naming it for the others.
fn failed_together(e: StoreError) -> impl FnMut() -> StoreError {
    let msg = e.to_string();
    let mut first = Some(e);
    move || {
        first
            .take()
            .unwrap_or_else(|| StoreError::GroupCommit(msg.clone()))
    }
}

fn validate_batch(batch: &StoreBatch) -> Result<()> {
    for e in &batch.events {
        if e.tenant.is_empty() || e.source.is_empty() {
            return Err(StoreError::InvalidBatch(format!(
                "event {} has an empty tenant or source",
                e.id()
            )));
        }
    }
    for a in &batch.alerts {
        if a.tenant.is_empty() || a.id.is_empty() {
            return Err(StoreError::InvalidBatch(format!(
                "alert for rule `{}` has an empty tenant or id (not sealed)",
                a.rule_id
            )));
        }
    }
    for d in &batch.dead_letters {
        if d.tenant.is_empty() {
            return Err(StoreError::InvalidBatch(
                "dead letter has an empty tenant".into(),
            ));
        }
    }
    Ok(())
}

/// Derive the ids of `events` (each event keeps its own) on up to `threads` threads. The dedup
/// needs every id before the rest of the batch's work can start.
fn derive_ids(events: &[&Event], threads: usize) -> Result<()> {
    parallel::over_chunks(events, threads, &mut Vec::<()>::new(), |_, chunk| {
        for e in chunk {
            e.id();
        }
        Ok(())
    })
    .map(drop)
}

fn remove_tmp_files(files: &[PendingFile]) {
    for f in files {
        let _ = std::fs::remove_file(&f.tmp);
    }
}

/// The data directory's lock file (hidden: dot names are in-flight or private files).
pub const LOCK_FILE: &str = ".lock";

/// Lock data directory `root` for this process (held while the returned file is open):
/// `Err(Locked)` while another process holds it. [`Store::open`] takes it; whoever is about to
/// remove a data directory takes it first.
pub fn lock_data_dir(root: &std::path::Path) -> Result<std::fs::File> {
    let path = root.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: root.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(e).at(&path),
    }
}

/// The tenants with dead letters; the writer also cuts a torn last line off each file (the
/// files are read when listed, not here).
fn load_dead_letters(layout: &Layout, writer: bool) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (name, dir) in layout::list_dirs(&layout.dead_letters_root())? {
        let Some(tenant) = layout::partition_value(&name, "tenant") else {
            continue;
        };
        if writer {
            crate::journal::cut_torn_tail(&dir.join("dead_letters.jsonl"))?;
        }
        out.insert(tenant);
    }
    Ok(out)
}

/// What [`Store::list_dead_letters`] reads: filters on a tenant's dead letters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadLetterQuery {
    /// Page size (clamped to `1..=MAX_PAGE_LIMIT`).
    pub limit: usize,
    /// Only this source, compared case-insensitively (`OKTA` is `okta`), as alerts' is.
    pub source: Option<String>,
    /// Only those whose reason or (masked) excerpt holds this text, case-insensitively.
    pub text: Option<String>,
    /// Received at or after.
    pub from: Option<DateTime<Utc>>,
    /// Received before.
    pub to: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl DeadLetterQuery {
    /// `text`: [`Self::text`] lowercased, and the forms masking stores it in.
    fn selects(&self, d: &DeadLetter, text: Option<&[String]>) -> bool {
        self.source
            .as_deref()
            .is_none_or(|s| d.source.eq_ignore_ascii_case(s))
            && self.from.is_none_or(|f| d.received_at >= f)
            && self.to.is_none_or(|t| d.received_at < t)
            && text.is_none_or(|forms| {
                let (reason, excerpt) = (d.reason.to_lowercase(), d.excerpt.to_lowercase());
                forms
                    .iter()
                    .any(|t| reason.contains(t.as_str()) || excerpt.contains(t.as_str()))
            })
    }
}
