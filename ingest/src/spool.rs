//! A spool directory source: drop `*.jsonl` / `*.json` / `*.csv` files (gzipped too) into `<dir>/<source>/` (the
//! subdirectory names the source, e.g. `inbox/okta/`, `inbox/auto/`) and they are ingested for
//! the configured tenant, then moved to `<dir>/.processed/<source>/` once the pipeline
//! acknowledged them. Another tenant's files go to `<dir>/tenant=<name>/<source>/` (and are
//! moved to `.processed/tenant=<name>/<source>/`): one inbox serves every tenant of a provider. A file being
//! processed when the process dies is ingested again on restart; the store's idempotency on event
//! id keeps that exactly-once.
//!
//! A file written in place whose writer pauses longer than `settle_ms` is ingested and archived
//! while its writer still holds it open. The spool keeps a handle on every file it archived for
//! 15 minutes after it was ingested or last grew: complete lines written to it after that are
//! read on from where reading stopped (numbered in the file) and submitted, wherever the file
//! went (`.processed/`, or deleted). A last line without its newline that is not complete JSON
//! (its writer paused in the middle of it) waits for its newline, at the first read too; when
//! the watch ends (or at shutdown) it is taken as it is, a dead letter. Once the watch ended the
//! handle is closed, but an archived file's size is still looked at, one stat per scan, while it
//! is kept in `.processed/`: one that changes is warned about, counted
//! (`spool_files_grown_after_watch_total{source}`) and watched again from where reading stopped.
//! A deleted file (`keep_processed_hours = 0`) is not looked at after its watch, and watches are
//! not kept across a restart. A file truncated in place (logrotate's `copytruncate`) is
//! read again from its start. Gzip and CSV files are not read on (a warning says how many
//! bytes were not ingested). Writing a file elsewhere and moving it in avoids all of this.
//!
//! A file that cannot be read (a damaged or cut-off gzip export, a read error) does not hold up
//! the files after it. It is retried at every scan while it changes (it may still be arriving);
//! once it has failed the same way, unchanged, for `set_aside_after_ms`, it is moved to
//! `<dir>/.failed/<source>/` with a `<name>.error.txt` beside it saying why, and logged as an
//! error once. Records read before the damage were ingested. A pipeline failure (the batch was
//! not acknowledged) is not the file's fault: every file is retried at the next scan.
//!
//! The input files hold the vendor's records as they came, secrets included: what was ingested
//! is kept in `.processed` for `keep_processed_hours` (to look at or drop in again), then
//! deleted. Files in `.failed` stay until someone deals with them.

use crate::bus::{BusSender, PendingAck};
use crate::jsonl::{JsonInput, JsonlReaderConfig};
use crate::{IngestError, InputItem, Result};
use perimeter_model::Metrics;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Configuration of the spool source.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// The inbox directory; each subdirectory is a source name.
    pub dir: PathBuf,
    /// Tenant the files belong to.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// How often the inbox is scanned for new files.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Records per submitted batch.
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// A file that fails to be read the same way, unchanged, for this long is moved to
    /// `.failed/<source>/` (see the module docs).
    #[serde(default = "default_set_aside_after_ms")]
    pub set_aside_after_ms: u64,
    /// Longest line (or CSV row) read; a longer one is a dead letter.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// A file is read once it was last modified at least this long ago: one copied into the
    /// inbox in place (not written elsewhere and moved in) is still growing before that. A file
    /// that changes while it is read is read again, whole, once it stops changing (the store
    /// keeps each record once).
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// How long an ingested file is kept in `.processed/` (counted from when it was ingested)
    /// before it is deleted; 0 deletes it as soon as its records are stored.
    #[serde(default = "default_keep_processed_hours")]
    pub keep_processed_hours: u64,
}

fn default_keep_processed_hours() -> u64 {
    24
}

/// How often `.processed/` is looked through for files past `keep_processed_hours`.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

fn default_settle_ms() -> u64 {
    2_000
}

fn default_max_line_bytes() -> usize {
    crate::DEFAULT_MAX_LINE_BYTES
}

fn default_tenant() -> String {
    "default".into()
}
impl SpoolConfig {
    /// The spool of `dir` for `tenant`, with the default poll interval, batch size and
    /// set-aside delay.
    pub fn new(dir: PathBuf, tenant: String) -> SpoolConfig {
        SpoolConfig {
            dir,
            tenant,
            poll_interval_ms: default_poll_interval_ms(),
            batch_records: default_batch_records(),
            set_aside_after_ms: default_set_aside_after_ms(),
            max_line_bytes: default_max_line_bytes(),
            settle_ms: default_settle_ms(),
            keep_processed_hours: default_keep_processed_hours(),
        }
    }
}

fn default_poll_interval_ms() -> u64 {
    500
}
fn default_batch_records() -> usize {
    5000
}
fn default_set_aside_after_ms() -> u64 {
    30_000
}

/// What a file looked like when it failed: a file still being written changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// A file read and put on the bus by [`SpoolSource::put_file`], with what archiving and
/// watching it needs once its last batch is stored.
struct FilePut {
    spooled: SpoolFile,
    /// How it looked before it was read (it is read again if it changed meanwhile).
    before: Option<FileStamp>,
    /// The spool's own handle, to read on from it after it is archived.
    handle: std::io::Result<std::fs::File>,
    /// Where reading stopped before a last line still being written.
    held: Option<u64>,
    /// JSON lines, not gzip: lines written to it later are read on.
    read_on: bool,
    lines: u64,
    /// Its last batch, not known to be stored yet.
    pending: Option<PendingAck>,
    /// About how many records that batch holds.
    pending_records: usize,
    /// Lines longer than `max_line_bytes`, each stored as a dead letter.
    too_long: u64,
}

impl FilePut {
    /// Whether its last batch has been answered for (stored or refused), without waiting.
    fn is_answered(&mut self) -> bool {
        self.pending.as_mut().is_none_or(PendingAck::is_answered)
    }
}

/// A file waiting in the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolFile {
    /// From a `tenant=<name>` directory; `None`: the configured tenant.
    pub tenant: Option<String>,
    pub source: String,
    pub path: PathBuf,
}

impl SpoolFile {
    /// Where it goes below `.processed` or `.failed`: `<source>` or `tenant=<name>/<source>`.
    fn subdir(&self) -> PathBuf {
        match &self.tenant {
            Some(tenant) => Path::new(&format!("{TENANT_DIR_PREFIX}{tenant}")).join(&self.source),
            None => PathBuf::from(&self.source),
        }
    }
}

/// A directory of the inbox named `tenant=<name>` holds that tenant's source directories.
const TENANT_DIR_PREFIX: &str = "tenant=";

/// Files that failed to be read, with how they looked and since when they fail that way.
#[derive(Default)]
struct Unreadable(HashMap<PathBuf, (Option<FileStamp>, Instant)>);

/// Watches a spool directory and submits its files to the bus.
pub struct SpoolSource {
    config: SpoolConfig,
    bus: BusSender,
    /// Files read to their end and archived (or deleted) that are watched for lines written
    /// after that (see [`IngestedFile`]). Taken out while a scan reads on from them.
    ingested: std::sync::Mutex<Vec<IngestedFile>>,
    /// Archived files whose watch ended, looked at for growth while they are kept (see
    /// [`LapsedFile`]), oldest first.
    lapsed: std::sync::Mutex<Vec<LapsedFile>>,
    /// Files holding a JSON document not complete yet, left for a later scan (said once).
    unfinished: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    metrics: Option<Arc<Metrics>>,
    /// Why a source directory's name is refused beyond its form ([`Self::with_source_check`]).
    source_check: Option<crate::http::SourceNameCheck>,
    /// Scans in a row whose file the pipeline refused (the store failing): the next scan waits
    /// longer each time ([`refused_scan_wait`]).
    refused_scans: std::sync::atomic::AtomicU32,
}

/// The wait before the next scan after `refused` scans in a row whose file the pipeline refused:
/// doubling from the poll interval up to 30 s. Retried at the poll interval, a 5,000-record file
/// was read, parsed and detected again every 0.7 s for as long as the store failed (QA).
fn refused_scan_wait(poll_interval: Duration, refused: u32) -> Duration {
    if refused == 0 {
        return poll_interval;
    }
    poll_interval
        .max(Duration::from_millis(500))
        .saturating_mul(1 << refused.min(6))
        .min(Duration::from_secs(30))
}

/// How long a file whose JSON document is not complete (a pretty-printed page still being
/// written, a download that paused) is left in the inbox since it last changed before it is
/// read as it is (its unfinished document a dead letter). Read before, the document was a
/// dead letter and the rest of it, written later, was read on as JSON lines, in fragments.
const UNFINISHED_DOCUMENT_WAIT: Duration = Duration::from_secs(5 * 60);

/// How long an ingested file is watched for lines written after it was archived, from when it
/// was ingested or last grew. A writer that keeps a file open in the inbox and pauses longer
/// than `settle_ms` has it archived under its hands; the lines it writes afterwards land in the
/// archived file (or in a deleted one with `keep_processed_hours = 0`).
const WATCH_INGESTED_FOR: Duration = Duration::from_secs(15 * 60);

/// At most this many ingested files are watched (each holds an open file handle); past it the
/// longest-watched one is let go.
const MAX_WATCHED_FILES: usize = 256;

/// At most this many archived files whose watch ended are looked at for growth; past it the
/// oldest is no longer looked at.
const MAX_LAPSED_FILES: usize = 16_384;

/// How many of the last bytes read are kept of a file whose watch ended (to tell, should it
/// grow, that it was truncated and written anew): it is one of many.
const LAPSED_LAST_READ_BYTES: usize = 64;

/// At most this many bytes written after the archiving are read from a file per scan (the rest
/// at the next scans).
const MAX_READ_ON_BYTES: u64 = 16 * 1024 * 1024;

/// A file ingested to its end and archived. The spool keeps its own handle on it: that reads
/// the same file wherever it was moved, even deleted, so a writer that still holds it open
/// (a file written in place whose writer paused longer than the settle time) loses nothing: at
/// each scan, complete lines written after `read_to` are read and submitted like the rest.
/// `Handle` is the open file while it is watched, its [`FileIdentity`] once the watch ended
/// ([`LapsedFile`]).
struct IngestedFile<Handle = std::fs::File> {
    file: Handle,
    /// The file's name, which its dead letters start with.
    name: String,
    /// Where it was archived (or "deleted"), for the log.
    archived_as: String,
    /// Where it was archived; `None`: deleted (`keep_processed_hours = 0`).
    archived_path: Option<PathBuf>,
    source: String,
    tenant: String,
    /// Bytes read and submitted.
    read_to: u64,
    /// Lines read, so later lines keep their numbers in the file.
    lines: u64,
    /// Plain JSON is read on from `read_to`; gzip and CSV (whose rows need the header) are not:
    /// what is written to those after the archiving is warned about.
    read_on: bool,
    /// When it was ingested or last grew.
    watched_since: Instant,
    /// The last bytes read (up to [`LAST_READ_BYTES`], ending at `read_to`): a file that no
    /// longer holds them there was truncated and written anew.
    last_read: Vec<u8>,
    /// Its size at the last scan.
    len_seen: u64,
    /// Its watch ends at the next scan (more than [`MAX_WATCHED_FILES`] are watched).
    let_go: bool,
    /// It grew since it was ingested (what is read on was written after, not held back).
    grew: bool,
}

/// How many of the last bytes read from a watched file are kept to tell that it was truncated.
const LAST_READ_BYTES: usize = 4096;

impl<Handle> IngestedFile<Handle> {
    /// `read` was just read up to `read_to`.
    fn remember_last_read(&mut self, read: &[u8]) {
        self.last_read.extend_from_slice(read);
        let excess = self.last_read.len().saturating_sub(LAST_READ_BYTES);
        self.last_read.drain(..excess);
    }

    /// The same file, where reading stopped, through `file`.
    fn with_handle<Other>(self, file: Other) -> IngestedFile<Other> {
        IngestedFile {
            file,
            name: self.name,
            archived_as: self.archived_as,
            archived_path: self.archived_path,
            source: self.source,
            tenant: self.tenant,
            read_to: self.read_to,
            lines: self.lines,
            read_on: self.read_on,
            watched_since: self.watched_since,
            last_read: self.last_read,
            len_seen: self.len_seen,
            let_go: self.let_go,
            grew: self.grew,
        }
    }
}

/// An archived file whose watch ended (15 minutes without growth, or more than
/// [`MAX_WATCHED_FILES`] watched). Its handle is closed, but while it is kept in `.processed/`
/// its size is looked at at every scan (one stat): a writer that still holds it open and writes
/// again after a pause over [`WATCH_INGESTED_FOR`] had those lines lost without a word. A file
/// that grew (or shrank) is opened again, warned about and counted
/// (`spool_files_grown_after_watch_total`), and watched on from where reading stopped.
type LapsedFile = IngestedFile<FileIdentity>;

/// What an archived file no longer held open is known by (its device and inode on Unix), so that
/// another file given its name later is not read on from its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity(Option<(u64, u64)>);

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> FileIdentity {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileIdentity(Some((meta.dev(), meta.ino())))
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            FileIdentity(None)
        }
    }
}

/// Where the last line of the first `len` bytes of `file` starts when it has no newline and is
/// not complete JSON (a line still being written); `None` for a whole last line, or one longer
/// than `max_line_bytes` (a dead letter as it is).
fn unfinished_last_line(
    file: &std::fs::File,
    len: u64,
    max_line_bytes: usize,
) -> std::io::Result<Option<u64>> {
    // Most files end with their newline: one byte tells, before the line is read.
    let last = bytes_at(file, len.saturating_sub(1), 1)?;
    if last.first().is_none_or(|&b| b == b'\n') {
        return Ok(None);
    }
    let from = len.saturating_sub(max_line_bytes as u64 + 1);
    let tail = bytes_at(file, from, (len - from) as usize)?;
    if tail.last().is_none_or(|&b| b == b'\n') {
        return Ok(None);
    }
    let start = match memchr::memrchr(b'\n', &tail) {
        Some(newline) => newline + 1,
        None if from == 0 => 0,
        None => return Ok(None),
    };
    let mut line = &tail[start..];
    if from == 0 && start == 0 {
        line = line.strip_prefix(crate::jsonl::BOM).unwrap_or(line);
    }
    if line.iter().all(u8::is_ascii_whitespace)
        || serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
    {
        return Ok(None);
    }
    Ok(Some(from + start as u64))
}

/// `len` bytes of `file` from `from` (fewer at its end).
fn bytes_at(file: &std::fs::File, from: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut file = file;
    file.seek(std::io::SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl SpoolSource {
    pub fn new(config: SpoolConfig, bus: BusSender) -> Self {
        SpoolSource {
            config,
            bus,
            ingested: std::sync::Mutex::new(Vec::new()),
            lapsed: std::sync::Mutex::new(Vec::new()),
            unfinished: std::sync::Mutex::new(std::collections::HashSet::new()),
            metrics: None,
            source_check: None,
            refused_scans: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Leave alone the source directories whose name `check` refuses, as HTTP ingest refuses
    /// such a source ([`crate::http::ingest_router_checking_sources`]): a directory named like a
    /// token would put that token in every event's `source`, in the metrics and in the logs.
    pub fn with_source_check(mut self, check: crate::http::SourceNameCheck) -> Self {
        self.source_check = Some(check);
        self
    }

    /// Count spool events in `metrics` (label `source`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn ingested_files(&self) -> std::sync::MutexGuard<'_, Vec<IngestedFile>> {
        self.ingested.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lapsed_files(&self) -> std::sync::MutexGuard<'_, Vec<LapsedFile>> {
        self.lapsed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watch of `ingested` ended: its handle is closed, and its size is looked at while it
    /// is kept (see [`LapsedFile`]). A deleted file cannot be looked at by its path.
    fn lapse(&self, ingested: IngestedFile) {
        if ingested.archived_path.is_none() {
            return;
        }
        let Ok(meta) = ingested.file.metadata() else {
            return;
        };
        let mut lapsed = ingested.with_handle(FileIdentity::of(&meta));
        lapsed.len_seen = meta.len();
        let excess = lapsed
            .last_read
            .len()
            .saturating_sub(LAPSED_LAST_READ_BYTES);
        lapsed.last_read.drain(..excess);
        lapsed.last_read.shrink_to_fit();
        let mut all = self.lapsed_files();
        if all.len() >= MAX_LAPSED_FILES {
            let oldest = all.remove(0);
            tracing::debug!(file = %oldest.archived_as, "no longer looked at for growth after it was ingested");
        }
        all.push(lapsed);
    }

    /// Archived files whose watch ended and that changed size since are watched again, from
    /// where reading stopped; those gone (pruned, moved away) or replaced are let go.
    fn rewatch_grown_lapsed(&self) {
        let lapsed = std::mem::take(&mut *self.lapsed_files());
        let mut still = Vec::with_capacity(lapsed.len());
        for file in lapsed {
            let Some(path) = file.archived_path.as_deref() else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            if meta.len() == file.len_seen {
                still.push(file);
                continue;
            }
            let opened =
                std::fs::File::open(path).and_then(|handle| Ok((handle.metadata()?, handle)));
            let (meta, handle) = match opened {
                Ok(opened) => opened,
                Err(e) => {
                    tracing::warn!(file = %file.archived_as, error = %e, bytes_not_ingested = meta.len().saturating_sub(file.read_to),
                        "an ingested spool file grew after its watch ended, but cannot be opened: what was written since is not ingested");
                    self.count_grown_after_watch(&file.source);
                    continue;
                }
            };
            if FileIdentity::of(&meta) != file.file {
                // Another file was given its name.
                continue;
            }
            tracing::warn!(file = %file.archived_as, size = meta.len(), read_to = file.read_to,
                "an ingested spool file changed after its watch ended (its writer still holds it open and paused longer than the watch: 15 minutes, less when more than 256 files are watched): read on from where reading stopped (write spool files elsewhere and move them in)");
            self.count_grown_after_watch(&file.source);
            let mut watched = file.with_handle(handle);
            watched.watched_since = Instant::now();
            watched.let_go = false;
            self.watch_ingested(watched);
        }
        let mut kept = self.lapsed_files();
        still.append(&mut kept);
        *kept = still;
    }

    fn count_grown_after_watch(&self, source: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.inc(
                "spool_files_grown_after_watch_total",
                &[("source", source)],
                1,
            );
        }
    }

    /// Read on from the ingested files that grew since they were read (see [`IngestedFile`]);
    /// let go of those not grown for [`WATCH_INGESTED_FOR`]. A batch the pipeline did not take
    /// is read again at the next scan.
    async fn read_on_from_ingested(&self) -> Result<()> {
        let watched = std::mem::take(&mut *self.ingested_files());
        let mut outcome = Ok(());
        let mut still = Vec::with_capacity(watched.len());
        for mut ingested in watched {
            if outcome.is_err() {
                // The pipeline did not take a batch: the rest is read at the next scan.
                still.push(ingested);
                continue;
            }
            let mut read = self.read_on(&mut ingested, false).await;
            let ends = ingested.let_go || ingested.watched_since.elapsed() >= WATCH_INGESTED_FOR;
            if ends && read.is_ok() {
                read = self.finish(&mut ingested).await;
                if read.is_ok() {
                    self.lapse(ingested);
                    continue;
                }
            }
            match read {
                Ok(()) => {}
                // Not taken: read (or finished) at the next scan.
                Err(e @ (IngestError::PipelineClosed | IngestError::Rejected(_))) => {
                    outcome = Err(e)
                }
                Err(e) if ends => {
                    tracing::warn!(file = %ingested.archived_as, error = %e,
                        "cannot read the end of a watched spool file; no longer watched");
                    self.lapse(ingested);
                    continue;
                }
                Err(e) => tracing::warn!(file = %ingested.archived_as, error = %e,
                    "cannot read on from a watched spool file; tried again at the next scan"),
            }
            still.push(ingested);
        }
        // Files archived during this pass (none: scans run one at a time) come after.
        let mut kept = self.ingested_files();
        still.append(&mut kept);
        *kept = still;
        outcome
    }

    /// The watch of `ingested` ends: what was written to it since the last scan is read, and a
    /// last line that never got its newline is taken as it is (a dead letter when it is not
    /// complete JSON) rather than dropped.
    async fn finish(&self, ingested: &mut IngestedFile) -> Result<()> {
        loop {
            let read_to = ingested.read_to;
            self.read_on(ingested, true).await?;
            if ingested.read_to == read_to {
                return Ok(());
            }
        }
    }

    /// On shutdown: every watch ends (see [`Self::finish`]). A file is not watched again after a
    /// restart (it is archived), so a line held for its newline would be lost.
    async fn finish_watched(&self) {
        let watched = std::mem::take(&mut *self.ingested_files());
        for mut ingested in watched {
            if let Err(e) = self.finish(&mut ingested).await {
                tracing::warn!(file = %ingested.archived_as, error = %e,
                    "at shutdown, the end of a watched spool file could not be ingested");
            }
        }
    }

    /// The complete lines written to `ingested` after `read_to`, submitted; with `last` (the
    /// watch ends), a last line without its newline too.
    async fn read_on(&self, ingested: &mut IngestedFile, last: bool) -> Result<()> {
        use std::io::{Read, Seek};
        let io_error = |source| IngestError::Io {
            what: ingested.archived_as.clone(),
            source,
        };
        let len = ingested.file.metadata().map_err(io_error)?.len();
        // Truncated in place (logrotate's copytruncate, a writer starting over): smaller than
        // what was read, or, when new lines made it larger again before this scan, no longer
        // holding the bytes last read where they were. What is in it now is new content: read
        // from its start and numbered from line 1 (what was stored before is not stored twice:
        // event ids are content hashes).
        let truncated = len < ingested.read_to
            || (len > ingested.read_to
                && !ingested.last_read.is_empty()
                && bytes_at(
                    &ingested.file,
                    ingested.read_to - ingested.last_read.len() as u64,
                    ingested.last_read.len(),
                )
                .map_err(io_error)?
                    != ingested.last_read);
        if truncated {
            tracing::warn!(file = %ingested.archived_as, size = len, read_to = ingested.read_to,
                "spool file was truncated after it was ingested (it is smaller than what was read, or no longer holds what was read): it is read again from its start");
            ingested.read_to = 0;
            ingested.lines = 0;
            ingested.last_read.clear();
            ingested.watched_since = Instant::now();
        }
        // Grown since the last scan (a line held for its newline does not keep the watch on).
        let grew_since_last_scan = len != ingested.len_seen;
        if grew_since_last_scan {
            ingested.grew = true;
            ingested.len_seen = len;
            ingested.watched_since = Instant::now();
        }
        if len <= ingested.read_to {
            return Ok(());
        }
        if !ingested.read_on {
            tracing::warn!(file = %ingested.archived_as, bytes_not_ingested = len - ingested.read_to,
                "a gzip, CSV or JSON-document spool file grew after it was ingested and archived: what was written since is not ingested (write spool files elsewhere and move them in)");
            ingested.read_to = len;
            return Ok(());
        }
        let mut grown = Vec::new();
        ingested
            .file
            .seek(std::io::SeekFrom::Start(ingested.read_to))
            .map_err(io_error)?;
        (&ingested.file)
            .take((len - ingested.read_to).min(MAX_READ_ON_BYTES))
            .read_to_end(&mut grown)
            .map_err(io_error)?;
        // A last line without its newline is still being written: it waits for the next scan,
        // unless the watch ends.
        let to_the_end = ingested.read_to + grown.len() as u64 == len;
        let unfinished_line = grown.last().is_some_and(|&b| b != b'\n');
        if !(last && to_the_end) {
            // A last line without its newline that is complete JSON and did not change since
            // the last scan is taken: a page saved in place without a final newline (`curl
            // -o`), finished after a pause, waited the whole 15-minute watch for a newline
            // that never comes.
            let rest_from = memchr::memrchr(b'\n', &grown).map_or(0, |newline| newline + 1);
            let rest = &grown[rest_from..];
            // (Not when it would be the rest of a line read before without its newline.)
            let continues_earlier_line =
                rest_from == 0 && ingested.last_read.last().is_some_and(|&b| b != b'\n');
            let blank = rest.iter().all(u8::is_ascii_whitespace);
            let complete_rest = to_the_end
                && !grew_since_last_scan
                && !continues_earlier_line
                && !blank
                && serde_json::from_slice::<serde::de::IgnoredAny>(rest).is_ok();
            if !complete_rest {
                if rest_from == 0 {
                    return Ok(());
                }
                grown.truncate(rest_from);
            }
        } else if unfinished_line {
            tracing::warn!(file = %ingested.archived_as,
                "the last line of a watched spool file never got its newline: it is taken as it is (a dead letter unless it is complete JSON)");
        }
        // What was read before ended inside a line (a complete last line without its newline):
        // the first line read now is the rest of that one, not a line of its own.
        let continues_line =
            ingested.read_to > 0 && ingested.last_read.last().is_some_and(|&b| b != b'\n');
        let lines_before = ingested.lines - u64::from(continues_line && ingested.lines > 0);
        let reader = JsonlReaderConfig::with_max_line_bytes(self.config.max_line_bytes);
        let mut input = JsonInput::new(&grown[..], reader).map_err(io_error)?;
        let mut batch: Vec<InputItem> = Vec::new();
        for item in input.by_ref() {
            let item = item.map_err(io_error)?;
            // Numbered in the whole file, as the lines read before.
            let item = match item {
                InputItem::Record {
                    line,
                    value,
                    member_lines,
                } => InputItem::Record {
                    line: line + lines_before,
                    value,
                    member_lines: member_lines
                        .into_iter()
                        .map(|(key, lines)| {
                            (key, lines.into_iter().map(|l| l + lines_before).collect())
                        })
                        .collect(),
                },
                InputItem::Invalid {
                    line,
                    reason,
                    excerpt,
                    digest,
                } => InputItem::Invalid {
                    line: line + lines_before,
                    reason,
                    excerpt,
                    digest,
                },
            };
            batch.push(item);
        }
        let records = batch.len();
        for chunk in chunked(batch, self.config.batch_records) {
            self.bus
                .submit_from(
                    Some(&ingested.name),
                    &ingested.source,
                    &ingested.tenant,
                    chunk,
                )
                .await?;
        }
        // Only once all of it is stored: a batch not taken is read again.
        ingested.read_to += grown.len() as u64;
        ingested.remember_last_read(&grown);
        ingested.lines = lines_before + input.lines_read();
        if ingested.grew {
            tracing::info!(file = %ingested.archived_as, records, bytes = grown.len(),
                "spool file grew after it was ingested and archived (its writer still had it open): the lines written since are ingested too");
        } else {
            // Only its last line, held back for its newline since it was ingested (QA: said to
            // have grown when it had not).
            tracing::info!(file = %ingested.archived_as, records, bytes = grown.len(),
                "the last line of an ingested spool file, held back for its newline, is ingested");
        }
        Ok(())
    }

    /// Run until `shutdown` resolves. Files are handled one at a time, oldest name first.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let mut unreadable = Unreadable::default();
        let mut pruned: Option<Instant> = None;
        let mut failing = ScanFailures::default();
        // Set once `shutdown` resolved: a scan then takes no new file and finishes the ones in
        // flight (QA: a SIGTERM read the whole inbox first, minutes for a backlog, past the
        // stop timeouts of systemd and Kubernetes; the files left are read at the next start).
        let stopping = std::sync::atomic::AtomicBool::new(false);
        loop {
            let scanned = {
                let scan = self.scan_until(&mut unreadable, &stopping);
                tokio::pin!(scan);
                loop {
                    tokio::select! {
                        scanned = &mut scan => break scanned,
                        _ = &mut shutdown, if !stopping.load(Ordering::Relaxed) => {
                            stopping.store(true, Ordering::Relaxed);
                            tracing::info!("shutting down: the spool takes no new file, and finishes the ones being stored");
                        }
                    }
                }
            };
            if stopping.load(Ordering::Relaxed) {
                self.finish_watched().await;
                return match scanned {
                    Err(e @ IngestError::PipelineClosed) => Err(e),
                    _ => Ok(()),
                };
            }
            match scanned {
                Ok(()) => failing.recovered(),
                // Nothing is left to take the files: the service is stopping or broken.
                Err(e @ IngestError::PipelineClosed) => return Err(e),
                // Listing the inbox failed (no file descriptor left, a directory removed
                // while it was read): the next scan tries again, as for an unreadable file.
                Err(error) => {
                    failing.failed(&error);
                }
            }
            if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.prune_processed(SystemTime::now());
                pruned = Some(Instant::now());
            }
            tokio::select! {
                _ = &mut shutdown => {
                    self.finish_watched().await;
                    return Ok(());
                }
                _ = tokio::time::sleep(refused_scan_wait(
                    Duration::from_millis(self.config.poll_interval_ms),
                    self.refused_scans.load(Ordering::Relaxed),
                )) => {}
            }
        }
    }

    /// Ingest the pending files once; unreadable ones are remembered in `unreadable` and set
    /// aside when they keep failing unchanged.
    #[cfg(test)]
    async fn scan_once(&self, unreadable: &mut Unreadable) -> Result<()> {
        self.scan_until(unreadable, &std::sync::atomic::AtomicBool::new(false))
            .await
    }

    /// [`Self::scan_once`], taking no new file once `stopping` is set.
    async fn scan_until(
        &self,
        unreadable: &mut Unreadable,
        stopping: &std::sync::atomic::AtomicBool,
    ) -> Result<()> {
        self.rewatch_grown_lapsed();
        if let Err(e) = self.read_on_from_ingested().await {
            tracing::warn!(error = %e, "lines written to an ingested spool file after it was archived not ingested yet; will retry");
        }
        let files = pending_files(
            &self.config.dir,
            &self.config.tenant,
            self.source_check.as_ref(),
        )?;
        unreadable
            .0
            .retain(|path, _| files.iter().any(|f| &f.path == path));
        let settle = Duration::from_millis(self.config.set_aside_after_ms);
        // Files whose last batch is on the bus and not known to be stored yet, oldest first:
        // the next files are read meanwhile, so a backlog of small files is stored a few dozen
        // per commit instead of one per commit. They are put on the bus whole and in order, so
        // records keep the order of the files; each is archived once its batches are stored.
        let mut in_flight: std::collections::VecDeque<FilePut> = Default::default();
        let mut in_flight_records = 0;
        for file in files {
            if stopping.load(Ordering::Relaxed) {
                break;
            }
            let path = &file.path;
            if !settled(path, Duration::from_millis(self.config.settle_ms)) {
                continue;
            }
            // An unreadable file that has not changed is not read again (and its readable head
            // not submitted again) until it is due to be set aside.
            if let Some((seen, since)) = unreadable.0.get(path) {
                if *seen == FileStamp::of(path) && since.elapsed() < settle {
                    continue;
                }
            }
            // Files already answered for are finished (archived) as the scan goes, and the
            // oldest are waited for while the records in flight fill a batch.
            loop {
                let limit = self.config.batch_records.max(1);
                let due = match in_flight.front_mut() {
                    Some(oldest) => oldest.is_answered() || in_flight_records >= limit,
                    None => false,
                };
                if !due {
                    break;
                }
                let Some(oldest) = in_flight.pop_front() else {
                    break;
                };
                in_flight_records -= oldest.pending_records;
                if !self.file_done(oldest, unreadable).await {
                    return Ok(());
                }
            }
            let put = self.put_file(&file).await;
            match put {
                // Its document is still being written: a later scan reads it.
                Ok(None) => {}
                Ok(Some(put)) => {
                    in_flight_records += put.pending_records;
                    in_flight.push_back(put);
                }
                Err(e) => {
                    if !self.file_outcome(&file, Err(e), unreadable) {
                        return Ok(());
                    }
                }
            }
        }
        for put in in_flight {
            if !self.file_done(put, unreadable).await {
                break;
            }
        }
        Ok(())
    }

    /// Finish a file put on the bus ([`Self::finish_file`]) and take note of how it went; false
    /// when the pipeline refused it (the scan stops).
    async fn file_done(&self, put: FilePut, unreadable: &mut Unreadable) -> bool {
        let file = put.spooled.clone();
        let outcome = self.finish_file(put).await;
        self.file_outcome(&file, outcome, unreadable)
    }

    /// Take note of how ingesting `file` went; false when the pipeline refused it: nothing is
    /// wrong with the file, and the next files would meet the same, so all of them (and those
    /// put on the bus after it, which are not archived) are read again at the next scan.
    fn file_outcome(
        &self,
        file: &SpoolFile,
        outcome: Result<()>,
        unreadable: &mut Unreadable,
    ) -> bool {
        match outcome {
            Ok(()) => {
                unreadable.0.remove(&file.path);
                self.refused_scans.store(0, Ordering::Relaxed);
                true
            }
            Err(e @ (IngestError::PipelineClosed | IngestError::Rejected(_))) => {
                let refused = self.refused_scans.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(file = %file.path.display(), error = %e,
                    retry_in_seconds = refused_scan_wait(Duration::from_millis(self.config.poll_interval_ms), refused).as_secs_f64(),
                    "spool file not ingested; will retry");
                false
            }
            Err(e) => {
                self.file_failed(file, &e, unreadable);
                true
            }
        }
    }

    /// A file could not be read: remember how it looked, or, when it failed the same way before
    /// and was retried because it was due, set it aside.
    fn file_failed(&self, file: &SpoolFile, error: &IngestError, unreadable: &mut Unreadable) {
        let path = file.path.as_path();
        let stamp = FileStamp::of(path);
        let failed_before = unreadable
            .0
            .get(path)
            .is_some_and(|(seen, _)| *seen == stamp);
        if !failed_before {
            tracing::warn!(file = %path.display(), error = %error,
                "spool file not readable; read again when it changes, set aside if it stays so for {} s",
                self.config.set_aside_after_ms / 1000);
            unreadable
                .0
                .insert(path.to_path_buf(), (stamp, Instant::now()));
            return;
        }
        match set_aside(&self.config.dir, file, error) {
            Ok(to) => {
                tracing::error!(file = %path.display(), moved_to = %to.display(), error = %error,
                    "spool file unreadable and unchanged: set aside (records read before the failure were ingested)");
                if let Some(metrics) = &self.metrics {
                    metrics.inc(
                        "spool_files_set_aside_total",
                        &[("source", &file.source)],
                        1,
                    );
                }
                unreadable.0.remove(path);
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e,
                    "spool file unreadable and could not be set aside; tried again later");
                unreadable
                    .0
                    .insert(path.to_path_buf(), (stamp, Instant::now()));
            }
        }
    }

    /// Ingest one file in batches; move it to `.processed` after every batch was acknowledged,
    /// unless it changed meanwhile (it is then read again later).
    pub async fn ingest_file(&self, spooled: &SpoolFile) -> Result<()> {
        match self.put_file(spooled).await? {
            Some(put) => self.finish_file(put).await,
            None => Ok(()),
        }
    }

    /// Read a file and put its batches on the bus; its last batch may not be stored yet
    /// ([`Self::finish_file`] waits for it and archives the file). `None`: the file holds a JSON
    /// document not complete yet and changed within [`UNFINISHED_DOCUMENT_WAIT`]; nothing was
    /// read from it.
    async fn put_file(&self, spooled: &SpoolFile) -> Result<Option<FilePut>> {
        let (source, path) = (spooled.source.as_str(), spooled.path.as_path());
        let before = FileStamp::of(path);
        let tenant = spooled.tenant.as_deref().unwrap_or(&self.config.tenant);
        let file = std::fs::File::open(path).map_err(|source| IngestError::Io {
            what: path.display().to_string(),
            source,
        })?;
        // The spool's own handle on the file, to read on from it after it is archived.
        let handle = file.try_clone();
        let format = crate::InputFormat::from_path(path);
        // Gzip, or UTF-16 (read whole and written as UTF-8): their bytes on disk are no lines to
        // hold a last one of, or to read on from.
        let gzip = bytes_at(&file, 0, 2)
            .is_ok_and(|head| matches!(head[..], [0x1f, 0x8b] | [0xff, 0xfe] | [0xfe, 0xff]));
        // A last line of JSON lines without its newline that is not complete JSON is still
        // being written (the writer paused past the settle time): it is left to be read on
        // once it has its newline, like the lines written after the file is archived. Only
        // when there is a handle to read on from.
        let held = if handle.is_ok() && !gzip && format == crate::InputFormat::Json {
            let len = before.as_ref().map_or(0, |stamp| stamp.len);
            unfinished_last_line(&file, len, self.config.max_line_bytes).unwrap_or(None)
        } else {
            None
        };
        let open = |file: &std::fs::File, up_to: Option<u64>| {
            use std::io::{Read, Seek};
            let mut file = file.try_clone()?;
            file.rewind()?;
            let input = std::io::BufReader::new(file.take(up_to.unwrap_or(u64::MAX)));
            let reader = JsonlReaderConfig::with_max_line_bytes(self.config.max_line_bytes);
            JsonInput::with_format(crate::jsonl::decompressed(input)?, reader, format)
        };
        let opened = open(&file, held).and_then(|reader| match reader {
            // Read as JSON lines without the held line, hence with it (the held line is not the
            // one that tells documents from lines). Documents are read whole, as they are.
            JsonInput::Lines(_) => Ok((reader, held)),
            _ if held.is_some() => Ok((open(&file, None)?, None)),
            _ => Ok((reader, None)),
        });
        let (mut reader, held) = opened.map_err(|source| IngestError::Io {
            what: path.display().to_string(),
            source,
        })?;
        if held.is_some() {
            tracing::info!(file = %path.display(), "the last line of a spool file has no newline and is not complete JSON yet: it is read once it has its newline (or when the file is no longer watched)");
        }
        let changed_lately = before
            .as_ref()
            .and_then(|stamp| stamp.modified)
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age < UNFINISHED_DOCUMENT_WAIT);
        {
            let mut unfinished = self.unfinished.lock().unwrap_or_else(|e| e.into_inner());
            if !gzip && reader.ends_unfinished() && changed_lately {
                if unfinished.insert(path.to_path_buf()) {
                    tracing::warn!(file = %path.display(), wait_seconds = UNFINISHED_DOCUMENT_WAIT.as_secs(),
                        "spool file holds a JSON document that is not complete yet (still being written?): read once it is, or as it is when it stays unchanged this long");
                }
                return Ok(None);
            }
            unfinished.remove(path);
        }
        let mut batch: Vec<InputItem> = Vec::with_capacity(self.config.batch_records);
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        // One batch in flight while the next is read: the pipeline detects and stores it
        // meanwhile, instead of waiting for this task to read and parse each batch. Batches
        // are taken in order; the file moves on only once all of them are stored.
        let mut in_flight: Option<PendingAck> = None;
        while let Some(item) = reader.next() {
            let item = match item {
                Ok(item) => item,
                Err(error) => {
                    // A cut-off gzip, a read error: the records read before it are stored too
                    // (up to a whole batch of them was held here), and the error says up to
                    // where, for whoever sets the file right and drops it in again.
                    if !batch.is_empty() {
                        self.bus
                            .submit_from(Some(&file_name), source, tenant, batch)
                            .await?;
                    }
                    if let Some(pending) = in_flight.take() {
                        pending.stored().await?;
                    }
                    return Err(IngestError::Io {
                        what: format!(
                            "{} after line {} (the records before it were ingested)",
                            path.display(),
                            reader.lines_read()
                        ),
                        source: error,
                    });
                }
            };
            batch.push(item);
            if batch.len() >= self.config.batch_records {
                let next = self
                    .bus
                    .enqueue_from(Some(&file_name), source, tenant, std::mem::take(&mut batch))
                    .await?;
                if let Some(previous) = in_flight.replace(next) {
                    previous.stored().await?;
                }
            }
        }
        let mut pending_records = in_flight.as_ref().map_or(0, |_| self.config.batch_records);
        if !batch.is_empty() {
            pending_records = batch.len();
            let last = self
                .bus
                .enqueue_from(Some(&file_name), source, tenant, batch)
                .await?;
            if let Some(previous) = in_flight.replace(last) {
                previous.stored().await?;
            }
        }
        Ok(Some(FilePut {
            spooled: spooled.clone(),
            before,
            handle,
            held,
            // Lines written on after it was read are read as JSON lines: not for documents,
            // whose growth is no record of its own (told as for gzip).
            read_on: !gzip && matches!(reader, JsonInput::Lines(_)),
            lines: reader.lines_read(),
            pending: in_flight,
            pending_records,
            too_long: reader.lines_too_long(),
        }))
    }

    /// Wait until the last batch of a file [`Self::put_file`] read is stored, then move the file
    /// to `.processed` (or delete it) and watch it for lines written later; a file that changed
    /// while it was read is left to be read again.
    async fn finish_file(&self, put: FilePut) -> Result<()> {
        let FilePut {
            spooled,
            before,
            handle,
            held,
            read_on,
            lines,
            pending,
            pending_records: _,
            too_long,
        } = put;
        if let Some(last) = pending {
            last.stored().await?;
        }
        let (source, path) = (spooled.source.as_str(), spooled.path.as_path());
        let tenant = spooled.tenant.as_deref().unwrap_or(&self.config.tenant);
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        if FileStamp::of(path) != before {
            // Still being written (copied in place): what was read is stored, and the whole file
            // is read again once it stops changing; its records already stored are known.
            tracing::info!(file = %path.display(), "spool file changed while it was read; read again once it stays unchanged");
            return Ok(());
        }
        let io_error = |what: &Path| {
            let what = what.display().to_string();
            move |source| IngestError::Io { what, source }
        };
        if too_long > 0 {
            // Its longest lines are dead letters whose excerpts cannot give back the records
            // (a CloudTrail object, a compact API page is one line): the file is kept in
            // `.failed/`, not archived for deletion, with what to do (QA: an INFO "ingested",
            // and the only copy deleted a day later).
            let why = IngestError::Io {
                what: path.display().to_string(),
                source: std::io::Error::other(format!(
                    "{too_long} line(s) longer than max_line_bytes ({} bytes) were stored as dead letters, the other lines were ingested: raise max_line_bytes and move this file back into the inbox to ingest those records (the ones stored already are recognised)",
                    self.config.max_line_bytes
                )),
            };
            let moved = set_aside(&self.config.dir, &spooled, &why).map_err(io_error(path))?;
            tracing::warn!(file = %path.display(), moved_to = %moved.display(), lines = too_long,
                max_line_bytes = self.config.max_line_bytes,
                "spool file has lines longer than max_line_bytes (dead letters): set aside with the reason beside it; raise max_line_bytes and move it back to ingest them");
            if let Some(metrics) = &self.metrics {
                metrics.inc("spool_files_set_aside_total", &[("source", source)], 1);
            }
            return Ok(());
        }
        // Watched from here on, before it is moved: a line written from now on is read on from
        // the archived (or deleted) file.
        let read_to = held.unwrap_or(before.as_ref().map_or(0, |stamp| stamp.len));
        let watch = |archived_as: &Path, archived_path: Option<PathBuf>| match handle {
            Ok(file) => self.watch_ingested(IngestedFile {
                last_read: {
                    let from = read_to.saturating_sub(LAST_READ_BYTES as u64);
                    // Without them (a read error), a truncation is told by the size alone.
                    let want = (read_to - from) as usize;
                    bytes_at(&file, from, want)
                        .ok()
                        .filter(|bytes| bytes.len() == want)
                        .unwrap_or_default()
                },
                file,
                name: file_name.to_string(),
                archived_as: archived_as.display().to_string(),
                archived_path,
                source: source.to_string(),
                tenant: tenant.to_string(),
                read_to,
                lines,
                read_on,
                watched_since: Instant::now(),
                let_go: false,
                grew: false,
                len_seen: before.as_ref().map_or(0, |stamp| stamp.len),
            }),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot keep a handle on the ingested spool file: lines its writer adds after it is archived will not be read");
            }
        };
        if self.config.keep_processed_hours == 0 {
            std::fs::remove_file(path).map_err(io_error(path))?;
            watch(path, None);
            tracing::info!(file = %path.display(), "spool file ingested and deleted");
            return Ok(());
        }
        let done_dir = self.config.dir.join(".processed").join(spooled.subdir());
        std::fs::create_dir_all(&done_dir).map_err(io_error(&done_dir))?;
        let target = free_name(&done_dir, path.file_name().unwrap_or_default());
        std::fs::rename(path, &target).map_err(io_error(path))?;
        watch(&target, Some(target.clone()));
        // Its time of change becomes the time it was ingested, which its age in `.processed`
        // is counted from (the file may have been written long before it was dropped in).
        let stamped = std::fs::File::options()
            .write(true)
            .open(&target)
            .and_then(|f| f.set_modified(SystemTime::now()));
        if let Err(e) = stamped {
            tracing::warn!(file = %target.display(), error = %e, "cannot date the ingested file; it is kept past keep_processed_hours");
        }
        tracing::info!(file = %target.display(), "spool file ingested");
        Ok(())
    }

    /// Watch `ingested` for lines written after it was archived; past [`MAX_WATCHED_FILES`] the
    /// longest-watched file is let go.
    fn watch_ingested(&self, ingested: IngestedFile) {
        let mut watched = self.ingested_files();
        if watched.iter().filter(|f| !f.let_go).count() >= MAX_WATCHED_FILES {
            // Its watch ends at the next scan, which reads what is left in it.
            if let Some(oldest) = watched.iter_mut().find(|f| !f.let_go) {
                oldest.let_go = true;
                tracing::debug!(file = %oldest.archived_as, "no longer watched for lines written after it was ingested");
            }
        }
        watched.push(ingested);
    }

    /// Delete the files in `.processed/` ingested more than `keep_processed_hours` before `now`.
    /// Failures are logged, not fatal: ingest goes on, and the next round tries again.
    fn prune_processed(&self, now: SystemTime) {
        let keep = Duration::from_secs(self.config.keep_processed_hours * 3600);
        let mut dirs = vec![self.config.dir.join(".processed")];
        let mut deleted = 0usize;
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    dirs.push(entry.path());
                    continue;
                }
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|t| now.duration_since(t).ok());
                if age.is_some_and(|age| age > keep) {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => deleted += 1,
                        Err(e) => {
                            tracing::warn!(file = %entry.path().display(), error = %e, "cannot delete an ingested spool file past keep_processed_hours")
                        }
                    }
                }
            }
        }
        if deleted > 0 {
            tracing::info!(
                files = deleted,
                keep_processed_hours = self.config.keep_processed_hours,
                "ingested spool files deleted"
            );
        }
    }
}

/// `items` in batches of at most `size`.
fn chunked(items: Vec<InputItem>, size: usize) -> Vec<Vec<InputItem>> {
    let mut batches = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        batches.push(items.by_ref().take(size.max(1)).collect());
    }
    batches
}

/// Whether the file at `path` was last modified at least `settle` ago (a file whose time cannot
/// be read is taken as settled).
fn settled(path: &Path, settle: Duration) -> bool {
    let modified = std::fs::metadata(path).and_then(|m| m.modified());
    match modified {
        Ok(t) => t.elapsed().map_or(true, |age| age >= settle),
        Err(_) => true,
    }
}

/// `dir/name`, or `dir/name.<n>` with the first `n` not taken: an archived file of the same
/// name (a shipper reusing `okta.jsonl`) is kept, not replaced.
fn free_name(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (1u32..)
        .map(|n| {
            let mut numbered = name.to_os_string();
            numbered.push(format!(".{n}"));
            dir.join(numbered)
        })
        .find(|p| !p.exists())
        .unwrap_or(first)
}

/// Move an unreadable file to `<dir>/.failed/<source>/` (`.failed/tenant=<name>/<source>/`),
/// with `<name>.error.txt` saying why.
fn set_aside(dir: &Path, file: &SpoolFile, error: &IngestError) -> std::io::Result<PathBuf> {
    let path = file.path.as_path();
    let failed_dir = dir.join(".failed").join(file.subdir());
    std::fs::create_dir_all(&failed_dir)?;
    let target = free_name(&failed_dir, path.file_name().unwrap_or_default());
    let mut reason_name = target.file_name().unwrap_or_default().to_os_string();
    reason_name.push(".error.txt");
    std::fs::write(failed_dir.join(reason_name), format!("{error}\n"))?;
    std::fs::rename(path, &target)?;
    Ok(target)
}

/// Every `*.json`/`*.jsonl`/`*.csv` file (or gzipped, `*.json.gz`/...) under `dir/<source>/`
/// and `dir/tenant=<name>/<source>/`, sorted by path.
fn pending_files(
    dir: &Path,
    default_tenant: &str,
    check: Option<&crate::http::SourceNameCheck>,
) -> Result<Vec<SpoolFile>> {
    let io = |e| IngestError::Io {
        what: dir.display().to_string(),
        source: e,
    };
    let mut out = Vec::new();
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    warn_files_outside_source_dirs(dir).map_err(io)?;
    for (name, path) in subdirs(dir).map_err(io)? {
        match name.strip_prefix(TENANT_DIR_PREFIX) {
            // The API's rule for tenant names; `.` and `..` are no names for a directory.
            Some(tenant)
                if perimeter_model::is_valid_label(tenant) && !matches!(tenant, "." | "..") =>
            {
                if tenant != default_tenant && tenant.eq_ignore_ascii_case(default_tenant) {
                    // Tenants are names as written: `ACME` is not `acme`, and no token of
                    // `acme` reads what is stored for it (QA: a tenant made without a word).
                    warn_once(
                        &path,
                        &format!("tenant `{tenant}` differs from the configured tenant `{default_tenant}` in case only: its files are stored for a tenant of their own, which `{default_tenant}`'s tokens do not read (rename the directory if they are `{default_tenant}`'s)"),
                    );
                }
                warn_files_outside_source_dirs(&path).map_err(io)?;
                for (source, path) in subdirs(&path).map_err(io)? {
                    if source_allowed(check, &source, &path) {
                        spool_files(Some(tenant), &source, &path, &mut out).map_err(io)?;
                    }
                }
            }
            Some(_) => warn_once(
                &path,
                "not a tenant name (letters, digits, - _ . @); its files are left alone",
            ),
            None if source_allowed(check, &name, &path) => {
                spool_files(None, &name, &path, &mut out).map_err(io)?
            }
            None => {}
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Whether the source directory `path`, named `source`, may be read; a refused one is said once
/// (the log masks its name).
fn source_allowed(check: Option<&crate::http::SourceNameCheck>, source: &str, path: &Path) -> bool {
    match check.and_then(|check| check(source)) {
        Some(why) => {
            warn_once(path, &format!("source directory left alone: {why}"));
            false
        }
        None => true,
    }
}

/// Warn that `path` is left in the inbox and why, once per path: the inbox is scanned twice a
/// second, and a file nobody is told about would sit there unread for ever.
fn warn_once(path: &Path, why: &str) {
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !warned.iter().any(|p| p == path) {
        tracing::warn!(path = %path.display(), "{why}");
        warned.push(path.to_path_buf());
    }
}

/// Files dropped where no source directory is (`inbox/okta.jsonl`, `inbox/tenant=t/x.jsonl`):
/// they sat there unread without a word, the likeliest mistake of a first use.
fn warn_files_outside_source_dirs(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !is_symlink(&entry.path()) && entry.path().is_file() {
            warn_once(
                &entry.path(),
                "spool file left alone: files are read from a source's directory (`<inbox>/<source>/`, e.g. `okta/`, or `auto/`), not above it",
            );
        }
    }
    Ok(())
}

/// `(name, path)` of the subdirectories of `dir` whose names do not start with a dot. A
/// symbolic link is not followed (see [`SYMLINK_LEFT_ALONE`]).
fn subdirs(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_symlink() {
            warn_once(&entry.path(), SYMLINK_LEFT_ALONE);
        } else if entry.path().is_dir() {
            out.push((name, entry.path()));
        }
    }
    Ok(out)
}

/// Symbolic links in the inbox are not followed: whoever may drop files there could otherwise
/// have the service read any file it can (a key, another tenant's data) into a tenant's events,
/// or archive (move away) the files of its data directory, its API tokens among them.
const SYMLINK_LEFT_ALONE: &str =
    "a symbolic link in the spool directory is not followed: left alone (move the file itself in)";

/// Whether `path` is a symbolic link itself (not what it points to).
fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The spool files of one source directory, added to `out`.
fn spool_files(
    tenant: Option<&str>,
    source: &str,
    dir: &Path,
    out: &mut Vec<SpoolFile>,
) -> std::io::Result<()> {
    for file in std::fs::read_dir(dir)? {
        let path = file?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            warn_once(
                &path,
                "spool file name is not UTF-8: left alone (rename it)",
            );
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let lower = file_name.to_ascii_lowercase();
        let name_ok = [
            ".jsonl",
            ".json",
            ".csv",
            ".jsonl.gz",
            ".json.gz",
            ".csv.gz",
        ]
        .iter()
        .any(|suffix| lower.ends_with(suffix));
        if is_symlink(&path) {
            warn_once(&path, SYMLINK_LEFT_ALONE);
        } else if path.is_dir() {
            warn_once(
                &path,
                "directories inside a source directory are not read: move its files up a level",
            );
        } else if !path.is_file() {
            warn_once(&path, "not a regular file: left alone");
        } else if !name_ok {
            warn_once(
                &path,
                "spool file left alone: only .jsonl, .json and .csv files (gzipped too, .gz) are read",
            );
        } else {
            out.push(SpoolFile {
                tenant: tenant.map(str::to_string),
                // As HTTP ingest does (`/ingest/Okta` is `okta`): source names are lower case.
                source: source.to_ascii_lowercase(),
                path,
            });
        }
    }
    Ok(())
}

/// Scans of the inbox failing in a row: the first failure, a different one, and then one
/// every [`SCAN_FAILURE_REPEAT_LOG`] are logged (a scan runs every poll interval, so a
/// directory gone for good logged an error a second), and the scan working again is said.
#[derive(Debug, Default)]
struct ScanFailures {
    in_a_row: u64,
    last: Option<String>,
    logged_at: Option<Instant>,
}

const SCAN_FAILURE_REPEAT_LOG: Duration = Duration::from_secs(300);

impl ScanFailures {
    /// Whether this failure was logged.
    fn failed(&mut self, error: &IngestError) -> bool {
        self.in_a_row += 1;
        let text = error.to_string();
        let due = self.last.as_deref() != Some(text.as_str())
            || self
                .logged_at
                .is_none_or(|at| at.elapsed() >= SCAN_FAILURE_REPEAT_LOG);
        if due {
            tracing::error!(%error, failures_in_a_row = self.in_a_row,
                "scanning the spool directory failed; will retry (repeats of this error are logged every 5 minutes)");
            self.last = Some(text);
            self.logged_at = Some(Instant::now());
        }
        due
    }

    fn recovered(&mut self) {
        if self.in_a_row > 0 {
            tracing::info!(
                failures = self.in_a_row,
                "scanning the spool directory works again"
            );
        }
        *self = ScanFailures::default();
    }
}

#[cfg(test)]
mod tests {

    /// A scan failing at every poll logged an error each time (every second by default): the
    /// first and a different one are logged, repeats not, and after a working scan the next
    /// failure is again.
    #[test]
    fn repeated_scan_failures_are_logged_once() {
        let gone = |why: &str| IngestError::Io {
            what: "the spool directory".into(),
            source: std::io::Error::other(why.to_string()),
        };
        let mut failing = ScanFailures::default();
        assert!(failing.failed(&gone("no such directory")));
        assert!(!failing.failed(&gone("no such directory")));
        assert!(!failing.failed(&gone("no such directory")));
        assert!(failing.failed(&gone("too many open files")));
        assert_eq!(failing.in_a_row, 4);
        failing.recovered();
        assert!(failing.failed(&gone("too many open files")));
    }

    use super::*;
    use crate::bus::{channel, BusSender, SubmitAck};

    /// A spool over `dir` for tenant `t1`, submitting batches of `batch_records`.
    /// A spool directory with an `okta` source directory in it.
    fn okta_spool_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("okta")).unwrap();
        dir
    }

    /// `okta/half.jsonl` in spool `dir`: a whole line, then a line its writer is still writing
    /// (no newline, JSON cut in a string); the writer, to write on.
    fn half_written_file(dir: &Path) -> (PathBuf, std::fs::File) {
        use std::io::Write;
        let path = dir.join("okta/half.jsonl");
        let mut writer = std::fs::File::create(&path).unwrap();
        write!(
            writer,
            "{{\"id\":\"hp-0\"}}\n{{\"id\":\"hp-1\",\"msg\":\"ha"
        )
        .unwrap();
        (path, writer)
    }

    fn spool_in(dir: &Path, batch_records: usize, bus: BusSender) -> SpoolSource {
        SpoolSource::new(
            SpoolConfig {
                poll_interval_ms: 10,
                batch_records,
                set_aside_after_ms: 0,
                settle_ms: 0,
                ..SpoolConfig::new(dir.into(), "t1".into())
            },
            bus,
        )
    }

    /// A consumer acknowledging every batch; returns what `each` read of each batch.
    fn each_batch_acked<T: Send + 'static>(
        mut rx: crate::bus::BusReceiver,
        mut each: impl FnMut(&crate::bus::Submission) -> T + Send + 'static,
    ) -> tokio::task::JoinHandle<Vec<T>> {
        tokio::spawn(async move {
            let mut read = Vec::new();
            while let Some(s) = rx.recv().await {
                read.push(each(&s));
                s.ack.send(Ok(SubmitAck::default())).unwrap();
            }
            read
        })
    }

    /// A consumer acknowledging every batch; returns the records it was given.
    fn acking(rx: crate::bus::BusReceiver) -> tokio::task::JoinHandle<usize> {
        let batches = each_batch_acked(rx, |s| s.items.len());
        tokio::spawn(async move { batches.await.unwrap().into_iter().sum() })
    }

    #[test]
    fn refused_scans_wait_longer_each_time_up_to_30_s() {
        let poll = Duration::from_millis(100);
        assert_eq!(refused_scan_wait(poll, 0), poll);
        assert_eq!(refused_scan_wait(poll, 1), Duration::from_secs(1));
        assert_eq!(refused_scan_wait(poll, 2), Duration::from_secs(2));
        assert_eq!(refused_scan_wait(poll, 5), Duration::from_secs(16));
        assert_eq!(refused_scan_wait(poll, 6), Duration::from_secs(30));
        assert_eq!(refused_scan_wait(poll, 60), Duration::from_secs(30));
    }

    /// QA: a SIGTERM read the whole inbox before the service stopped (minutes for a backlog).
    /// Once told to stop, the spool takes no new file: the files being stored are finished and
    /// archived, the others stay in the inbox for the next start.
    #[tokio::test]
    async fn at_shutdown_the_spool_takes_no_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::create_dir_all(inbox.join("okta")).unwrap();
        for i in 0..200 {
            std::fs::write(
                inbox.join(format!("okta/{i:03}.jsonl")),
                format!("{{\"n\":{i}}}\n"),
            )
            .unwrap();
        }
        let (tx, mut rx) = channel(2);
        // A slow store: each batch takes a while.
        let consumer = tokio::spawn(async move {
            let mut records = 0;
            while let Some(s) = rx.recv().await {
                tokio::time::sleep(Duration::from_millis(20)).await;
                records += s.items.len();
                s.ack.send(Ok(SubmitAck::default())).unwrap();
            }
            records
        });
        let spool = spool_in(&inbox, 1, tx);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(spool.run(async {
            let _ = stop_rx.await;
        }));
        let archived = inbox.join(".processed/okta");
        for _ in 0..500 {
            if archived.join("000.jsonl").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the spool stops without reading the inbox through")
            .unwrap()
            .unwrap();
        let stored = consumer.await.unwrap();
        let done = std::fs::read_dir(&archived).unwrap().count();
        let left = std::fs::read_dir(inbox.join("okta")).unwrap().count();
        assert_eq!(done, stored, "each file taken is stored and archived");
        assert_eq!(
            done + left,
            200,
            "every file archived or still in the inbox"
        );
        assert!(
            left > 100,
            "{left} files left: the inbox was read on after the stop"
        );
    }

    /// A scan that fails (the inbox is not a directory for a while, as when no file descriptor
    /// is left) is logged and retried: the spool does not stop, and reads the files dropped
    /// once the inbox can be listed again. (It stopped for good, without a word, before.)
    #[tokio::test]
    async fn a_failed_scan_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::write(&inbox, "not a directory").unwrap();
        let (tx, rx) = channel(2);
        let consumer = acking(rx);
        let spool = spool_in(&inbox, 100, tx);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(spool.run(async {
            let _ = stop_rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished(), "a failed scan ended the spool");
        std::fs::remove_file(&inbox).unwrap();
        std::fs::create_dir_all(inbox.join("okta")).unwrap();
        std::fs::write(inbox.join("okta/a.jsonl"), "{\"a\":1}\n").unwrap();
        let archived = inbox.join(".processed/okta/a.jsonl");
        for _ in 0..500 {
            if archived.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            archived.exists(),
            "the file dropped after the failures was not read"
        );
        stop_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(consumer.await.unwrap(), 1);
    }

    /// Ingested files are kept in `.processed` for `keep_processed_hours` from when they were
    /// ingested (not from when they were written), then deleted; with 0 they are not kept.
    #[tokio::test]
    async fn ingested_files_are_deleted_after_keep_processed_hours() {
        let dir = okta_spool_dir();
        let file = dir.path().join("okta/old.jsonl");
        std::fs::write(&file, "{\"a\":1}\n").unwrap();
        // Written two days before it was dropped in.
        let two_days = Duration::from_secs(48 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(SystemTime::now() - two_days)
            .unwrap();
        let (tx, rx) = channel(2);
        let consumer = acking(rx);
        let mut spool = spool_in(dir.path(), 100, tx);
        spool.config.settle_ms = 0;
        spool.scan_once(&mut Unreadable::default()).await.unwrap();
        let kept = dir.path().join(".processed/okta/old.jsonl");
        spool.prune_processed(SystemTime::now());
        assert!(kept.exists(), "ingested just now: kept for a day");
        spool.prune_processed(SystemTime::now() + Duration::from_secs(23 * 3600));
        assert!(kept.exists());
        spool.prune_processed(SystemTime::now() + Duration::from_secs(25 * 3600));
        assert!(!kept.exists(), "past keep_processed_hours");
        // Not kept at all.
        spool.config.keep_processed_hours = 0;
        let file = dir.path().join("okta/new.jsonl");
        std::fs::write(&file, "{\"a\":2}\n").unwrap();
        spool.scan_once(&mut Unreadable::default()).await.unwrap();
        assert!(!file.exists());
        assert!(!dir.path().join(".processed/okta/new.jsonl").exists());
        drop(spool);
        assert_eq!(
            consumer.await.unwrap(),
            2,
            "both files' records were submitted"
        );
    }

    /// A file copied into the inbox in place is read once it stops changing; one that grows
    /// while it is read stays to be read again; an archived file of the same name is kept.
    #[tokio::test]
    async fn files_still_being_written_wait_and_archived_names_are_kept() {
        let dir = okta_spool_dir();
        let file = dir.path().join("okta/okta.jsonl");
        std::fs::write(&file, "{\"a\":1}\n").unwrap();
        let (tx, rx) = channel(2);
        let consumer = acking(rx);
        let mut spool = spool_in(dir.path(), 100, tx);
        spool.config.settle_ms = 60_000;
        let mut unreadable = Unreadable::default();
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(file.exists(), "modified just now: not read yet");
        spool.config.settle_ms = 0;
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(!file.exists());
        // The same name again, later: archived beside the first.
        std::fs::write(&file, "{\"a\":2}\n{\"a\":3}\n").unwrap();
        spool.scan_once(&mut unreadable).await.unwrap();
        let done = dir.path().join(".processed/okta");
        assert_eq!(
            std::fs::read_to_string(done.join("okta.jsonl")).unwrap(),
            "{\"a\":1}\n"
        );
        assert!(std::fs::read_to_string(done.join("okta.jsonl.1"))
            .unwrap()
            .contains("\"a\":3"));
        drop(spool);
        assert_eq!(consumer.await.unwrap(), 3);

        // Grown while read: left in the inbox to be read again whole.
        let (tx, mut rx) = channel(2);
        let spool = spool_in(dir.path(), 1, tx);
        std::fs::write(&file, "{\"a\":4}\n{\"a\":5}\n").unwrap();
        let appended = file.clone();
        let consumer = tokio::spawn(async move {
            let mut first = true;
            while let Some(s) = rx.recv().await {
                if first {
                    // The writer goes on while the first batch is stored.
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(&appended)
                        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"a\":6}\n"))
                        .unwrap();
                    first = false;
                }
                s.ack.send(Ok(SubmitAck::default())).unwrap();
            }
        });
        let spooled = SpoolFile {
            tenant: None,
            source: "okta".into(),
            path: file.clone(),
        };
        spool.ingest_file(&spooled).await.unwrap();
        assert!(file.exists(), "changed while read: not archived");
        spool.ingest_file(&spooled).await.unwrap();
        assert!(!file.exists());
        drop(spool);
        consumer.await.unwrap();
    }

    /// A file written in place whose writer pauses longer than the settle time is ingested and
    /// archived while still open: the lines written to it afterwards (into the archived file,
    /// the same inode) used to be left there unread, and deleted a day later. They are read on
    /// from where the first read stopped, numbered in the file; a last line still being written
    /// waits for its newline.
    #[tokio::test]
    async fn lines_written_to_a_file_after_it_was_archived_are_ingested_too() {
        use std::io::Write;
        for keep_processed_hours in [24, 0] {
            let dir = okta_spool_dir();
            let path = dir.path().join("okta/live.jsonl");
            let mut writer = std::fs::File::create(&path).unwrap();
            for i in 0..10 {
                writeln!(writer, "{{\"a\":{i}}}").unwrap();
            }
            let (tx, mut rx) = channel(4);
            let consumer = tokio::spawn(async move {
                let mut lines = Vec::new();
                while let Some(s) = rx.recv().await {
                    assert_eq!(s.origin.as_deref(), Some("live.jsonl"));
                    for item in &s.items {
                        match item {
                            InputItem::Record { line, .. } => lines.push((*line, None)),
                            InputItem::Invalid { line, reason, .. } => {
                                lines.push((*line, Some(reason.clone())))
                            }
                        }
                    }
                    s.ack.send(Ok(SubmitAck::default())).unwrap();
                }
                lines
            });
            let mut spool = spool_in(dir.path(), 4, tx);
            spool.config.keep_processed_hours = keep_processed_hours;
            let mut unreadable = Unreadable::default();
            spool.scan_once(&mut unreadable).await.unwrap();
            assert!(!path.exists(), "ingested and archived");
            // The writer goes on in the same open file, now archived (or deleted).
            for i in 10..19 {
                writeln!(writer, "{{\"a\":{i}}}").unwrap();
            }
            writeln!(writer, "not json").unwrap();
            write!(writer, "{{\"a\":").unwrap();
            spool.scan_once(&mut unreadable).await.unwrap();
            // Nothing new: nothing submitted again.
            spool.scan_once(&mut unreadable).await.unwrap();
            writeln!(writer, "21}}").unwrap();
            spool.scan_once(&mut unreadable).await.unwrap();
            if keep_processed_hours > 0 {
                let archived = dir.path().join(".processed/okta/live.jsonl");
                assert_eq!(
                    std::fs::read_to_string(archived).unwrap().lines().count(),
                    21
                );
            }
            drop(spool);
            let lines = consumer.await.unwrap();
            let numbers: Vec<u64> = lines.iter().map(|(line, _)| *line).collect();
            assert_eq!(numbers, (1..=21).collect::<Vec<u64>>(), "{lines:?}");
            assert!(
                matches!(&lines[19], (20, Some(reason)) if reason.starts_with("invalid JSON")),
                "{lines:?}"
            );
            assert!(lines.iter().filter(|(_, dead)| dead.is_none()).count() == 20);
        }
    }

    /// Each item submitted: its line, its dead letter's reason (if it is one) and its record.
    type Seen = Vec<(u64, Option<String>, Option<serde_json::Value>)>;

    /// The `id` of each record seen, in order; every item seen must be a record.
    fn record_ids(seen: &Seen) -> Vec<String> {
        assert!(seen.iter().all(|(_, dead, _)| dead.is_none()), "{seen:?}");
        seen.iter()
            .map(|(_, _, v)| v.as_ref().unwrap()["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The `id` of each record one scan of the inbox in `dir` reads (see [`record_ids`]).
    async fn ids_after_one_scan(dir: &Path) -> Vec<String> {
        let (tx, rx) = channel(4);
        let consumer = collecting(rx);
        let spool = spool_in(dir, 100, tx);
        spool.scan_once(&mut Unreadable::default()).await.unwrap();
        drop(spool);
        record_ids(&consumer.await.unwrap())
    }

    /// A consumer acknowledging every batch; returns what it was given.
    fn collecting(rx: crate::bus::BusReceiver) -> tokio::task::JoinHandle<Seen> {
        let batches = each_batch_acked(rx, |s| {
            s.items
                .iter()
                .map(|item| match item {
                    InputItem::Record { line, value, .. } => {
                        let json = sonic_rs::to_string(value).unwrap();
                        (*line, None, serde_json::from_str(&json).ok())
                    }
                    InputItem::Invalid { line, reason, .. } => (*line, Some(reason.clone()), None),
                })
                .collect::<Seen>()
        });
        tokio::spawn(async move { batches.await.unwrap().into_iter().flatten().collect() })
    }

    /// A file truncated in place after it was ingested (logrotate's copytruncate) and written
    /// anew used to be read on from the old offset, inside the new content: a garbage dead
    /// letter, the first new lines lost, and nothing at all once it stayed smaller than the
    /// offset. It is read again from its start, numbered from line 1.
    #[tokio::test]
    async fn a_file_truncated_after_it_was_ingested_is_read_from_its_start() {
        use std::io::{Seek, Write};
        let dir = okta_spool_dir();
        let path = dir.path().join("okta/rotated.jsonl");
        let mut writer = std::fs::File::create(&path).unwrap();
        for i in 0..5 {
            writeln!(writer, "{{\"id\":\"before-truncate-{i}\"}}").unwrap();
        }
        let (tx, rx) = channel(4);
        let consumer = collecting(rx);
        let spool = spool_in(dir.path(), 100, tx);
        let mut unreadable = Unreadable::default();
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(!path.exists(), "ingested and archived");
        writeln!(writer, "{{\"id\":\"appended\"}}").unwrap();
        spool.scan_once(&mut unreadable).await.unwrap();
        // copytruncate: the file is emptied under the writer, which writes on at its start.
        writer.set_len(0).unwrap();
        writer.rewind().unwrap();
        for i in 0..8 {
            writeln!(writer, "{{\"id\":\"after-truncate-{i}\"}}").unwrap();
        }
        spool.scan_once(&mut unreadable).await.unwrap();
        spool.scan_once(&mut unreadable).await.unwrap();
        // Again, staying smaller than what was read.
        writer.set_len(0).unwrap();
        writer.rewind().unwrap();
        writeln!(writer, "{{\"id\":\"second-truncate\"}}").unwrap();
        spool.scan_once(&mut unreadable).await.unwrap();
        drop(spool);
        let seen = consumer.await.unwrap();
        assert!(seen.iter().all(|(_, dead, _)| dead.is_none()), "{seen:?}");
        let ids: Vec<(u64, &str)> = seen
            .iter()
            .map(|(line, _, value)| (*line, value.as_ref().unwrap()["id"].as_str().unwrap()))
            .collect();
        let mut expected: Vec<(u64, String)> = (0..5)
            .map(|i| (i + 1, format!("before-truncate-{i}")))
            .collect();
        expected.push((6, "appended".into()));
        expected.extend((0..8).map(|i| (i + 1, format!("after-truncate-{i}"))));
        expected.push((1, "second-truncate".into()));
        let expected: Vec<(u64, &str)> = expected.iter().map(|(l, id)| (*l, id.as_str())).collect();
        assert_eq!(ids, expected);
    }

    /// A writer that pauses past the settle time in the middle of its last line had the file
    /// ingested with that fragment as a dead letter (`EOF while parsing a string`), then the
    /// rest of the line as a second one, and the lines after numbered one off. The fragment
    /// waits for its newline; a last line without one that is complete JSON is taken at once.
    #[tokio::test]
    async fn a_half_written_last_line_waits_for_its_newline() {
        use std::io::Write;
        for keep_processed_hours in [24, 0] {
            let dir = okta_spool_dir();
            let (path, mut writer) = half_written_file(dir.path());
            // Many tools write no newline after the last line (and may write more later).
            let mut whole = std::fs::File::create(dir.path().join("okta/whole.jsonl")).unwrap();
            write!(whole, "{{\"id\":\"w-0\"}}\n{{\"id\":\"w-1\"}}").unwrap();
            // A pretty-printed document, its `}` without a newline, is read whole at once.
            std::fs::write(dir.path().join("okta/page.json"), "{\n  \"id\": \"doc\"\n}").unwrap();
            let (tx, rx) = channel(4);
            let consumer = collecting(rx);
            let mut spool = spool_in(dir.path(), 100, tx);
            spool.config.keep_processed_hours = keep_processed_hours;
            let mut unreadable = Unreadable::default();
            spool.scan_once(&mut unreadable).await.unwrap();
            assert!(!path.exists(), "ingested and archived");
            spool.scan_once(&mut unreadable).await.unwrap();
            write!(writer, "lfC\"}}\n{{\"id\":\"hp-2\"}}\n").unwrap();
            // The newline that ends w-1, then line 3 (it was numbered 4).
            write!(whole, "\n{{\"id\":\"w-2\"}}\n").unwrap();
            spool.scan_once(&mut unreadable).await.unwrap();
            drop(spool);
            let seen = consumer.await.unwrap();
            assert!(seen.iter().all(|(_, dead, _)| dead.is_none()), "{seen:?}");
            // Files are read on in no set order: compared as a set.
            let mut got: Vec<(u64, String)> = seen
                .iter()
                .map(|(line, _, value)| (*line, value.as_ref().unwrap().to_string()))
                .collect();
            got.sort();
            let mut expected: Vec<(u64, String)> = [
                (1, r#"{"id":"hp-0"}"#),
                (1, r#"{"id":"doc"}"#),
                (1, r#"{"id":"w-0"}"#),
                (2, r#"{"id":"w-1"}"#),
                (2, r#"{"id":"hp-1","msg":"halfC"}"#),
                (3, r#"{"id":"hp-2"}"#),
                (3, r#"{"id":"w-2"}"#),
            ]
            .into_iter()
            .map(|(line, json)| (line, json.to_string()))
            .collect();
            expected.sort();
            assert_eq!(got, expected);
        }
    }

    /// A pretty-printed page written in place with a pause past the settle time (a slow
    /// download) was read unfinished: a dead letter, then its rest read on as JSON lines, in
    /// fragments. It waits in the inbox until it is complete, then all its records are read.
    #[tokio::test]
    async fn a_pretty_printed_page_still_being_written_waits_until_it_is_complete() {
        use std::io::Write;
        let dir = okta_spool_dir();
        let path = dir.path().join("okta/page.json");
        let records: Vec<String> = (0..4)
            .map(|i| format!("  {{\n    \"id\": \"pp-{i}\",\n    \"n\": {i}\n  }}"))
            .collect();
        let text = format!("[\n{}\n]\n", records.join(",\n"));
        let half = text.len() / 2;
        let mut writer = std::fs::File::create(&path).unwrap();
        writer.write_all(&text.as_bytes()[..half]).unwrap();
        let (tx, rx) = channel(4);
        let consumer = collecting(rx);
        let spool = spool_in(dir.path(), 100, tx);
        let mut unreadable = Unreadable::default();
        spool.scan_once(&mut unreadable).await.unwrap();
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(path.exists(), "left in the inbox while unfinished");
        writer.write_all(&text.as_bytes()[half..]).unwrap();
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(!path.exists(), "ingested and archived once complete");
        drop(spool);
        let ids = record_ids(&consumer.await.unwrap());
        assert_eq!(ids, ["pp-0", "pp-1", "pp-2", "pp-3"]);
    }

    /// A compact page saved in place without a final newline (`curl -o`), whose writer paused
    /// in it: held at the first read, then finished without a newline. It waited the whole
    /// 15-minute watch for one; once it is complete JSON and unchanged for a scan, it is read.
    #[tokio::test]
    async fn a_last_line_finished_without_a_newline_is_read_once_it_stays_complete() {
        use std::io::Write;
        let dir = okta_spool_dir();
        let path = dir.path().join("okta/page.json");
        let mut writer = std::fs::File::create(&path).unwrap();
        write!(writer, "{{\"id\":\"cp-0\",\"msg\":\"ha").unwrap();
        let (tx, rx) = channel(4);
        let consumer = collecting(rx);
        let spool = spool_in(dir.path(), 100, tx);
        let mut unreadable = Unreadable::default();
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(!path.exists(), "archived, its last line held");
        write!(writer, "lf\"}}").unwrap();
        // The scan that sees it grow waits; the next one, finding it unchanged, reads it.
        spool.scan_once(&mut unreadable).await.unwrap();
        spool.scan_once(&mut unreadable).await.unwrap();
        drop(spool);
        let ids = record_ids(&consumer.await.unwrap());
        assert_eq!(ids, ["cp-0"]);
    }

    /// A file written by Windows PowerShell 5 (`ConvertTo-Json | Out-File`) is UTF-16 with a
    /// byte order mark: each of its lines was a dead letter. Its records are read.
    #[tokio::test]
    async fn a_utf16_file_is_read() {
        let dir = okta_spool_dir();
        let text = "[\r\n  {\"id\": \"u16-0\"},\r\n  {\"id\": \"u16-1\"}\r\n]\r\n";
        let bytes: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        std::fs::write(dir.path().join("okta/ps.json"), bytes).unwrap();
        let ids = ids_after_one_scan(dir.path()).await;
        assert_eq!(ids, ["u16-0", "u16-1"]);
    }

    /// Symbolic links in the inbox are not followed: a linked file (a key elsewhere) was read
    /// into a tenant's events, and a linked source directory had the data directory's own files
    /// (API tokens) archived away. Both are left alone; a real file beside them is read.
    #[tokio::test]
    async fn symbolic_links_in_the_inbox_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(
            outside.path().join("secret.json"),
            "{\"id\": \"outside\"}\n",
        )
        .unwrap();
        let dir = okta_spool_dir();
        std::os::unix::fs::symlink(
            outside.path().join("secret.json"),
            dir.path().join("okta/linked.json"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("github")).unwrap();
        std::fs::write(dir.path().join("okta/real.json"), "{\"id\": \"real\"}\n").unwrap();
        let ids = ids_after_one_scan(dir.path()).await;
        assert_eq!(ids, ["real"]);
        assert!(
            outside.path().join("secret.json").exists(),
            "not moved away"
        );
        assert!(dir.path().join("okta/linked.json").exists(), "left alone");
    }

    /// Every watch ends at the next scan, as after [`WATCH_INGESTED_FOR`] without growth.
    fn end_watches(spool: &SpoolSource) {
        for watched in spool.ingested_files().iter_mut() {
            match Instant::now().checked_sub(WATCH_INGESTED_FOR) {
                Some(then) => watched.watched_since = then,
                // A clock younger than that: let go the way a full watch list does.
                None => watched.let_go = true,
            }
        }
    }

    /// Lines a writer still holding an archived file open wrote after its watch ended (a pause
    /// over 15 minutes) were lost without a word. The archived file's size is looked at while it
    /// is kept: they are read on from where reading stopped, numbered in the file, warned about
    /// and counted. A deleted file (`keep_processed_hours = 0`) or one replaced under its name
    /// is not read on.
    #[tokio::test]
    async fn lines_written_after_the_watch_ended_are_read_on_while_the_file_is_kept() {
        use std::io::Write;
        let dir = okta_spool_dir();
        let path = dir.path().join("okta/late.jsonl");
        let mut writer = std::fs::File::create(&path).unwrap();
        writeln!(writer, "{{\"id\":\"late-0\"}}").unwrap();
        let replaced = dir.path().join("okta/replaced.jsonl");
        std::fs::write(&replaced, "{\"id\":\"replaced-0\"}\n").unwrap();
        let (tx, rx) = channel(4);
        let consumer = collecting(rx);
        let metrics = Arc::new(Metrics::new());
        let spool = spool_in(dir.path(), 100, tx).with_metrics(metrics.clone());
        let mut unreadable = Unreadable::default();
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(!path.exists(), "ingested and archived");
        end_watches(&spool);
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(spool.ingested_files().is_empty(), "no longer watched");
        assert_eq!(spool.lapsed_files().len(), 2);
        // Nothing written: still only looked at, nothing read.
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(spool.ingested_files().is_empty());
        writeln!(writer, "{{\"id\":\"late-1\"}}").unwrap();
        // Another file moved in under the archived name, longer: not read on from the old
        // offset. (Made before the old one goes, which would free its inode for it.)
        let other = dir.path().join("other.jsonl");
        std::fs::write(&other, "{\"id\":\"other-0\"}\n{\"id\":\"other-1\"}\n").unwrap();
        std::fs::rename(&other, dir.path().join(".processed/okta/replaced.jsonl")).unwrap();
        spool.scan_once(&mut unreadable).await.unwrap();
        assert_eq!(
            metrics.counter("spool_files_grown_after_watch_total", &[("source", "okta")]),
            1
        );
        assert_eq!(spool.ingested_files().len(), 1, "watched again");
        assert!(spool.lapsed_files().is_empty(), "the replaced one let go");
        drop(spool);
        let seen = consumer.await.unwrap();
        assert!(seen.iter().all(|(_, dead, _)| dead.is_none()), "{seen:?}");
        let mut ids: Vec<(u64, String)> = seen
            .iter()
            .map(|(line, _, value)| (*line, value.as_ref().unwrap()["id"].to_string()))
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            [
                (1, "\"late-0\"".to_string()),
                (1, "\"replaced-0\"".to_string()),
                (2, "\"late-1\"".to_string()),
            ]
        );
    }

    /// A held last line that never gets its newline is not dropped: when the watch ends (after
    /// its time, or at shutdown) it is taken as it is, a dead letter.
    #[tokio::test]
    async fn a_held_last_line_is_a_dead_letter_when_the_watch_ends() {
        use std::io::Write;
        for at_shutdown in [false, true] {
            let dir = okta_spool_dir();
            let (path, mut writer) = half_written_file(dir.path());
            let (tx, rx) = channel(4);
            let consumer = collecting(rx);
            let spool = spool_in(dir.path(), 100, tx);
            let mut unreadable = Unreadable::default();
            spool.scan_once(&mut unreadable).await.unwrap();
            assert!(!path.exists(), "ingested and archived");
            write!(writer, "lf").unwrap();
            if at_shutdown {
                spool.finish_watched().await;
            } else {
                // It grew: watched on, the fragment still held.
                spool.scan_once(&mut unreadable).await.unwrap();
                assert_eq!(spool.ingested_files().len(), 1);
                end_watches(&spool);
                spool.scan_once(&mut unreadable).await.unwrap();
            }
            assert!(spool.ingested_files().is_empty(), "no longer watched");
            drop(spool);
            let seen = consumer.await.unwrap();
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert!(seen[0].1.is_none(), "{seen:?}");
            assert!(
                matches!(&seen[1], (2, Some(reason), None) if reason.contains("EOF while parsing")),
                "{seen:?}"
            );
        }
    }

    #[tokio::test]
    async fn files_move_to_processed_only_after_ack() {
        let dir = okta_spool_dir();
        let file = dir.path().join("okta/a.jsonl");
        std::fs::write(&file, "{\"a\":1}\nbad\n{\"a\":2}\n").unwrap();
        let (tx, mut rx) = channel(2);
        let spool = spool_in(dir.path(), 2, tx);
        let consumer = tokio::spawn(async move {
            let mut seen = Vec::new();
            // First batch fails: the file must stay in the inbox.
            let s = rx.recv().await.unwrap();
            s.ack.send(Err("store down".into())).unwrap();
            while let Some(s) = rx.recv().await {
                assert_eq!(s.source, "okta");
                assert_eq!(s.tenant, "t1");
                seen.push(s.items.len());
                s.ack.send(Ok(SubmitAck::default())).unwrap();
            }
            seen
        });
        let spooled = SpoolFile {
            tenant: None,
            source: "okta".into(),
            path: file.clone(),
        };
        assert!(spool.ingest_file(&spooled).await.is_err());
        assert!(file.exists());
        spool.ingest_file(&spooled).await.unwrap();
        assert!(!file.exists());
        assert!(dir.path().join(".processed/okta/a.jsonl").exists());
        assert_eq!(pending_files(dir.path(), "t1", None).unwrap(), vec![]);
        drop(spool);
        // The failed attempt had put its second batch on the bus before it heard of the first's
        // failure (one batch is in flight while the next is read); the retry reads the file
        // from its start, and the store drops what that batch had stored.
        assert_eq!(consumer.await.unwrap(), vec![1, 2, 1]);
    }

    /// A backlog of small files is put on the bus several at a time (up to `batch_records`
    /// records in flight), in order, each archived once stored: a worker that answers nothing
    /// until it holds three files still gets them, and a refused one is left in the inbox with
    /// the files after it.
    #[tokio::test]
    async fn small_files_are_put_on_the_bus_together_and_archived_once_stored() {
        let dir = okta_spool_dir();
        for (name, n) in [("a", 1), ("b", 2), ("c", 3)] {
            std::fs::write(
                dir.path().join(format!("okta/{name}.jsonl")),
                format!("{{\"n\":{n}}}\n"),
            )
            .unwrap();
        }
        let (tx, mut rx) = channel(8);
        let spool = spool_in(dir.path(), 10, tx);
        let consumer = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..3 {
                held.push(rx.recv().await.unwrap());
            }
            let order: Vec<u64> = held
                .iter()
                .map(|s| match &s.items[..] {
                    [InputItem::Record { value, .. }] => {
                        sonic_rs::JsonValueTrait::as_u64(&value["n"]).unwrap()
                    }
                    other => panic!("one record per file: {other:?}"),
                })
                .collect();
            for s in held {
                s.ack.send(Ok(SubmitAck::default())).unwrap();
            }
            // The next scan: `d` is refused, `e` after it stored.
            let refused = rx.recv().await.unwrap();
            let after = rx.recv().await.unwrap();
            refused.ack.send(Err("disk full".into())).unwrap();
            after.ack.send(Ok(SubmitAck::default())).unwrap();
            order
        });
        let mut unreadable = Unreadable::default();
        tokio::time::timeout(Duration::from_secs(10), spool.scan_once(&mut unreadable))
            .await
            .expect("the files were put on the bus before the first was stored")
            .unwrap();
        for name in ["a", "b", "c"] {
            assert!(
                dir.path()
                    .join(format!(".processed/okta/{name}.jsonl"))
                    .exists(),
                "{name}"
            );
        }
        for (name, n) in [("d", 4), ("e", 5)] {
            std::fs::write(
                dir.path().join(format!("okta/{name}.jsonl")),
                format!("{{\"n\":{n}}}\n"),
            )
            .unwrap();
        }
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(
            dir.path().join("okta/d.jsonl").exists(),
            "refused: read again"
        );
        assert!(
            dir.path().join("okta/e.jsonl").exists(),
            "after a refused one: read again"
        );
        assert_eq!(consumer.await.unwrap(), [1, 2, 3], "in the files' order");
    }

    /// The next batch of a file is read and put on the bus while the one before is being
    /// stored: a worker that answers nothing until it holds two batches still gets them.
    #[tokio::test]
    async fn the_next_batch_is_read_while_the_one_before_is_stored() {
        let dir = okta_spool_dir();
        let file = dir.path().join("okta/a.jsonl");
        std::fs::write(
            &file,
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n{\"a\":4}\n{\"a\":5}\n",
        )
        .unwrap();
        let (tx, mut rx) = channel(4);
        let spool = spool_in(dir.path(), 2, tx);
        let consumer = tokio::spawn(async move {
            let mut sizes = Vec::new();
            let first = rx.recv().await.unwrap();
            let second = rx.recv().await.unwrap();
            for s in [first, second] {
                sizes.push(s.items.len());
                s.ack.send(Ok(SubmitAck::default())).unwrap();
            }
            while let Some(s) = rx.recv().await {
                sizes.push(s.items.len());
                s.ack.send(Ok(SubmitAck::default())).unwrap();
            }
            sizes
        });
        let spooled = SpoolFile {
            tenant: None,
            source: "okta".into(),
            path: file.clone(),
        };
        tokio::time::timeout(Duration::from_secs(10), spool.ingest_file(&spooled))
            .await
            .expect("the second batch was put on the bus before the first was stored")
            .unwrap();
        assert!(!file.exists(), "moved once every batch is stored");
        drop(spool);
        assert_eq!(consumer.await.unwrap(), vec![2, 2, 1]);
    }

    #[tokio::test]
    async fn gzipped_exports_are_picked_up_and_read_whole() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("aws_cloudtrail")).unwrap();
        // A CloudTrail-style export: one `{"Records": [...]}` document, gzipped.
        let doc = r#"{"Records": [{"eventName": "A"}, {"eventName": "B"}, {"eventName": "C"}]}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(doc.as_bytes()).unwrap();
        let file = dir.path().join("aws_cloudtrail/trail.json.gz");
        std::fs::write(&file, gz.finish().unwrap()).unwrap();
        std::fs::write(dir.path().join("aws_cloudtrail/notes.txt.gz"), "x").unwrap();
        let spooled = SpoolFile {
            tenant: None,
            source: "aws_cloudtrail".into(),
            path: file.clone(),
        };
        assert_eq!(
            pending_files(dir.path(), "t1", None).unwrap(),
            vec![spooled.clone()],
            "gzipped JSON is pending, other files are not"
        );
        let (tx, mut rx) = channel(2);
        let spool = spool_in(dir.path(), 100, tx);
        let consumer = tokio::spawn(async move {
            let s = rx.recv().await.unwrap();
            let items = s.items.len();
            s.ack.send(Ok(SubmitAck::default())).unwrap();
            items
        });
        spool.ingest_file(&spooled).await.unwrap();
        // The page's one document, whose records the pipeline splits.
        assert_eq!(consumer.await.unwrap(), 1);
        assert!(dir
            .path()
            .join(".processed/aws_cloudtrail/trail.json.gz")
            .exists());
    }

    #[tokio::test]
    async fn an_unreadable_file_does_not_hold_up_the_others_and_is_set_aside_once_unchanged() {
        let dir = okta_spool_dir();
        // A gzip header and then garbage: sorted first, so it used to block `b` for good.
        let bad = dir.path().join("okta/a.json.gz");
        std::fs::write(&bad, b"\x1f\x8b\x08\x00garbage, not deflate").unwrap();
        let good = dir.path().join("okta/b.jsonl");
        std::fs::write(&good, "{\"a\":1}\n").unwrap();
        let (tx, rx) = channel(2);
        let consumer = each_batch_acked(rx, |_| ());
        let mut spool = spool_in(dir.path(), 100, tx);
        spool.config.set_aside_after_ms = 60_000;
        let mut unreadable = Unreadable::default();
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(!good.exists(), "the file after the bad one was ingested");
        assert!(bad.exists(), "a first failure only marks the file");
        // Not due yet: left where it is, not read again.
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(bad.exists());
        // Due, but it changed meanwhile (still arriving?): read again, marked again.
        spool.config.set_aside_after_ms = 0;
        std::fs::write(&bad, b"\x1f\x8b\x08\x00garbage, not deflate, longer").unwrap();
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(bad.exists(), "a file that changed is not set aside");
        // Unchanged and due: set aside, with why.
        spool.scan_once(&mut unreadable).await.unwrap();
        assert!(!bad.exists());
        let failed = dir.path().join(".failed/okta");
        assert!(failed.join("a.json.gz").exists());
        let why = std::fs::read_to_string(failed.join("a.json.gz.error.txt")).unwrap();
        assert!(why.contains("a.json.gz"), "{why}");
        assert_eq!(pending_files(dir.path(), "t1", None).unwrap(), vec![]);
        drop(spool);
        assert_eq!(
            consumer.await.unwrap().len(),
            1,
            "only the good file's batch"
        );
    }

    /// A line over `max_line_bytes` (a CloudTrail object, a compact page: one line) is a dead
    /// letter whose excerpt cannot give its records back: the file is kept in `.failed/` with
    /// what to do, not archived for deletion (QA: an INFO "ingested", deleted a day later).
    #[tokio::test]
    async fn a_file_with_lines_over_the_limit_is_set_aside_once_stored() {
        let dir = okta_spool_dir();
        let file = dir.path().join("okta/page.jsonl");
        let long = format!("{{\"Records\": [\"{}\"]}}", "x".repeat(300));
        std::fs::write(&file, format!("{{\"a\":1}}\n{long}\n{{\"a\":2}}\n")).unwrap();
        let (tx, rx) = channel(2);
        let consumer = each_batch_acked(rx, |s| {
            s.items
                .iter()
                .map(|i| matches!(i, InputItem::Invalid { .. }))
                .collect::<Vec<bool>>()
        });
        let mut spool = spool_in(dir.path(), 100, tx);
        spool.config.max_line_bytes = 200;
        let metrics = Arc::new(Metrics::new());
        spool = spool.with_metrics(metrics.clone());
        spool.scan_once(&mut Unreadable::default()).await.unwrap();
        assert!(!file.exists());
        assert!(!dir.path().join(".processed/okta/page.jsonl").exists());
        let failed = dir.path().join(".failed/okta");
        assert!(failed.join("page.jsonl").exists(), "kept");
        let why = std::fs::read_to_string(failed.join("page.jsonl.error.txt")).unwrap();
        assert!(
            why.contains("1 line(s) longer than max_line_bytes (200 bytes)")
                && why.contains("move this file back"),
            "{why}"
        );
        assert_eq!(
            metrics.counter("spool_files_set_aside_total", &[("source", "okta")]),
            1
        );
        drop(spool);
        // Its other lines were stored, the long one as a dead letter.
        assert_eq!(consumer.await.unwrap(), [vec![false, true, false]]);
    }

    #[tokio::test]
    async fn a_cut_off_gzip_has_every_record_read_before_the_cut_stored() {
        use std::io::Write;
        let dir = okta_spool_dir();
        // Records of random text (so the deflate stream grows with them), gzipped, then cut
        // short as an interrupted copy leaves a file.
        let mut rng = 7u64;
        let lines: String = (0..2000)
            .map(|i| {
                let noise: String = (0..40)
                    .map(|_| {
                        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                        char::from(b'a' + (rng >> 59) as u8 % 26)
                    })
                    .collect();
                format!("{{\"n\":{i},\"noise\":\"{noise}\"}}\n")
            })
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(lines.as_bytes()).unwrap();
        let whole = gz.finish().unwrap();
        let file = dir.path().join("okta/cut.jsonl.gz");
        std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
        let (tx, rx) = channel(4);
        let consumer = each_batch_acked(rx, |s| s.items.len());
        // Batches larger than the readable part: all of it was held in the one batch not
        // submitted when the read failed.
        let spool = spool_in(dir.path(), 5000, tx);
        let spooled = SpoolFile {
            tenant: None,
            source: "okta".into(),
            path: file.clone(),
        };
        let error = spool.ingest_file(&spooled).await.unwrap_err().to_string();
        drop(spool);
        let stored: usize = consumer.await.unwrap().iter().sum();
        assert!(
            (500..2000).contains(&stored),
            "{stored} of the 2000 records read before the cut"
        );
        assert!(
            error.contains(&format!("after line {stored} ")),
            "the error says up to where: {error}"
        );
    }

    #[tokio::test]
    async fn tenant_directories_ingest_for_their_tenant() {
        let dir = tempfile::tempdir().unwrap();
        for (sub, body) in [
            ("okta", "{\"a\":1}\n"),
            ("tenant=globex/okta", "{\"b\":1}\n{\"b\":2}\n"),
            ("tenant=bad name/okta", "{\"c\":1}\n"),
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("x.jsonl"), body).unwrap();
        }
        let (tx, rx) = channel(4);
        let consumer =
            each_batch_acked(rx, |s| (s.tenant.clone(), s.source.clone(), s.items.len()));
        let spool = spool_in(dir.path(), 100, tx);
        spool.scan_once(&mut Unreadable::default()).await.unwrap();
        drop(spool);
        let mut seen = consumer.await.unwrap();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("globex".to_string(), "okta".to_string(), 2),
                ("t1".to_string(), "okta".to_string(), 1),
            ]
        );
        assert!(dir
            .path()
            .join(".processed/tenant=globex/okta/x.jsonl")
            .exists());
        assert!(dir.path().join(".processed/okta/x.jsonl").exists());
        assert!(
            dir.path().join("tenant=bad name/okta/x.jsonl").exists(),
            "not a tenant name: left alone"
        );
    }

    /// Batches carry the file's name, which the pipeline starts every dead letter's reason
    /// with (the reader's and the normalizer's alike).
    #[tokio::test]
    async fn batches_name_their_file() {
        let dir = okta_spool_dir();
        std::fs::write(dir.path().join("okta/b.jsonl"), "{\"a\":1}\nnot json\n").unwrap();
        let (tx, rx) = channel(4);
        let consumer = each_batch_acked(rx, |s| s.origin.clone());
        let spool = spool_in(dir.path(), 100, tx);
        spool.scan_once(&mut Unreadable::default()).await.unwrap();
        drop(spool);
        // The pipeline starts every dead letter's reason with it, the normalizer's too.
        assert_eq!(consumer.await.unwrap(), [Some("b.jsonl".to_string())]);
    }

    #[test]
    fn source_directories_whose_name_the_check_refuses_are_left_alone() {
        // QA: HTTP ingest refused a source named like a token, the inbox read it.
        let dir = tempfile::tempdir().unwrap();
        for sub in [
            "okta",
            "ghp_TokenLikeName",
            "tenant=acme/ghp_Other",
            "tenant=acme/github",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("a.jsonl"), "{}\n").unwrap();
        }
        let check: crate::http::SourceNameCheck = Arc::new(|name: &str| {
            name.starts_with("ghp_")
                .then(|| "looks like a token".to_string())
        });
        let files = pending_files(dir.path(), "t1", Some(&check)).unwrap();
        let sources: Vec<(Option<String>, String)> = files
            .iter()
            .map(|f| (f.tenant.clone(), f.source.clone()))
            .collect();
        assert_eq!(
            sources,
            [
                (None, "okta".to_string()),
                (Some("acme".to_string()), "github".to_string())
            ]
        );
        assert_eq!(pending_files(dir.path(), "t1", None).unwrap().len(), 4);
    }

    #[test]
    fn source_directories_are_lower_cased_and_extensions_read_in_any_case() {
        // `inbox/Okta/` dead-lettered every record (no source `Okta`) while `/ingest/Okta`
        // stored them; `x.JSONL` was never read, and said nothing.
        let dir = tempfile::tempdir().unwrap();
        for sub in ["Okta", "Okta/sub"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for name in ["a.JSONL", "b.json.GZ", "c.txt", "sub/d.jsonl"] {
            std::fs::write(dir.path().join("Okta").join(name), "{}\n").unwrap();
        }
        let files = pending_files(dir.path(), "t1", None).unwrap();
        let found: Vec<(String, String)> = files
            .iter()
            .map(|f| {
                (
                    f.source.clone(),
                    f.path.file_name().unwrap().to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("okta".to_string(), "a.JSONL".to_string()),
                ("okta".to_string(), "b.json.GZ".to_string())
            ]
        );
    }
}
