//! Salesforce: SOQL queries through the REST API (`GET /services/data/v60.0/query?q=...`, more
//! rows behind each answer's `nextRecordsUrl`). Two feeds:
//!
//! - `setup_audit_trail`: `SetupAuditTrail` rows (who changed which setting, permission set or
//!   user), oldest first by `CreatedDate`. The checkpoint is the newest `CreatedDate` stored and,
//!   while a listing is read, its `nextRecordsUrl`; a listing starts at that time inclusive (the
//!   rows of that very second come again and the store keeps them once), and one whose locator
//!   expired starts again from it.
//! - `event_log_files`: `EventLogFile` rows name Event Monitoring log files (one CSV per event
//!   type and day, or hour). Each new file is written to disk as it arrives, then its rows are
//!   read from there and submitted in batches ([`crate::CsvRows`]: a row that does not fit the
//!   header is a dead letter), so a file of gigabytes needs no more memory than a batch. Files are
//!   stored oldest `LogDate` first; the checkpoint is the newest `LogDate` stored and the ids
//!   of the files stored within [`SETTLE_HOURS`] before it. Listings start that far back, so a
//!   file Salesforce makes available late is still read, and the files already stored are not.
//!
//! `token` is an access token (kept fresh by another process), or with `client_id` the connected
//! app's consumer secret: Perimeter then gets access tokens itself (OAuth 2.0 client-credentials
//! flow at `<base_url>/services/oauth2/token`, which must be the org's My Domain URL).

use chrono::{DateTime, Duration, Utc};
use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson;
use reqwest::Url;

use super::vendor::{str_at, time_at, PageRequest};
use super::{Checkpoint, PollError, PollReport, PollSource, ProbeReport};
use crate::{CsvRows, InputItem, JsonlReaderConfig};

/// The REST API version queried.
const API_VERSION: &str = "v60.0";
/// How far before the newest stored `LogDate` event log files are listed again.
const SETTLE_HOURS: i64 = 48;
/// Rows of a log file submitted together. A day's file of a busy org holds hundreds of
/// thousands; the checkpoint moves once the whole file is stored, and the rows of a file fetched
/// again after a crash part-way are kept once by the store.
const ROWS_PER_BATCH: usize = 10_000;
/// Largest log file taken. A file is written to disk as it arrives (beside the checkpoint) and
/// read from there batch by batch, so its size is bounded by the disk, not by memory or
/// `max_page_bytes`; a busy org's day of URI or API events runs into gigabytes.
const MAX_LOG_FILE_BYTES: u64 = 16 << 30;

/// The feeds `feed` may name.
pub(super) const FEEDS: &[&str] = &["setup_audit_trail", "event_log_files"];

fn soql_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn query_url(src: &PollSource, soql: &str) -> Result<Url, PollError> {
    let mut url = src
        .api
        .join(&format!("services/data/{API_VERSION}/query"))?;
    url.query_pairs_mut().append_pair("q", soql);
    Ok(url)
}

/// One answer of a query: its rows and where the next ones are.
async fn query_page(
    src: &PollSource,
    authorization: &str,
    url: Url,
) -> Result<(Vec<RawJson>, Option<String>), PollError> {
    let (body, _) = src.fetch(&PageRequest::get(url), authorization).await?;
    let rows = body
        .get("records")
        .and_then(|r| r.as_array())
        .ok_or_else(|| PollError::Malformed("the query answer has no `records` list".into()))?
        .iter()
        .cloned()
        .collect();
    let next = str_at(&body, &["nextRecordsUrl"]);
    Ok((rows, next))
}

fn feed(src: &PollSource) -> &str {
    src.config.feed.as_deref().unwrap_or_default()
}

fn audit_trail_query(since: DateTime<Utc>) -> String {
    format!(
        "SELECT Id, Action, Section, CreatedDate, CreatedById, CreatedBy.Username, Display, \
         DelegateUser, ResponsibleNamespacePrefix FROM SetupAuditTrail WHERE CreatedDate >= {} \
         ORDER BY CreatedDate ASC, Id ASC",
        soql_time(since)
    )
}

fn log_files_query(since: DateTime<Utc>) -> String {
    format!(
        "SELECT Id, EventType, LogDate, LogFile FROM EventLogFile WHERE LogDate >= {} \
         ORDER BY LogDate ASC, Id ASC",
        soql_time(since)
    )
}

/// The newest `CreatedDate` among Setup Audit Trail rows.
fn newest_created(rows: &[RawJson]) -> Option<DateTime<Utc>> {
    rows.iter()
        .filter_map(|r| time_at(r, &["CreatedDate"]))
        .max()
}

/// One poll of the feed.
pub(super) async fn poll(
    src: &PollSource,
    authorization: &str,
    start: DateTime<Utc>,
) -> Result<PollReport, PollError> {
    match feed(src) {
        "event_log_files" => poll_log_files(src, authorization, start).await,
        _ => poll_audit_trail(src, authorization, start).await,
    }
}

async fn poll_audit_trail(
    src: &PollSource,
    authorization: &str,
    start: DateTime<Utc>,
) -> Result<PollReport, PollError> {
    let mut cp = src.checkpoint()?;
    let mut report = PollReport::default();
    while report.pages < src.config.max_pages_per_poll.max(1) {
        let since = cp.since.unwrap_or(start);
        let url = match &cp.resume {
            Some(next) => src.api.same_origin(next)?,
            None => query_url(src, &audit_trail_query(since))?,
        };
        let (rows, next) = match query_page(src, authorization, url).await {
            // The query locator expired (they last about 15 minutes): list again from the
            // newest time stored.
            Err(PollError::Http { status, .. })
                if cp.resume.is_some() && matches!(status, 400 | 404) =>
            {
                tracing::warn!(poller = %src.config.name, status,
                    "the query locator expired; listing again from the last stored time");
                cp.resume = None;
                src.save_checkpoint(&cp)?;
                continue;
            }
            other => other?,
        };
        report.pages += 1;
        let created = rows.iter().filter_map(|r| time_at(r, &["CreatedDate"]));
        let newest = src.checkpoint_time(Some(since), created);
        report.add_stored(src.submit(rows).await?);
        cp = Checkpoint {
            resume: next.clone(),
            listing_since: None,
            since: newest,
            ..Checkpoint::default()
        };
        src.save_checkpoint(&cp)?;
        if next.is_none() {
            break;
        }
    }
    Ok(report)
}

/// An `EventLogFile` row.
struct LogFile {
    id: String,
    log_date: DateTime<Utc>,
    path: String,
}

/// The log files listed from `SETTLE_HOURS` before the checkpoint on that are not stored yet,
/// oldest first, the request made, and whether the listing was read to its end.
async fn new_log_files(
    src: &PollSource,
    authorization: &str,
    cp: &Checkpoint,
    start: DateTime<Utc>,
) -> Result<(Url, Vec<LogFile>, bool), PollError> {
    let from = cp
        .since
        .map_or(start, |s| s - Duration::hours(SETTLE_HOURS));
    let first = query_url(src, &log_files_query(from))?;
    let (mut url, mut files, mut pages) = (first.clone(), Vec::new(), 0u32);
    loop {
        let (rows, next) = query_page(src, authorization, url).await?;
        pages += 1;
        for row in &rows {
            let field = |name: &str| {
                PollError::Malformed(format!("an EventLogFile row has no usable `{name}`"))
            };
            files.push(LogFile {
                id: str_at(row, &["Id"]).ok_or_else(|| field("Id"))?,
                log_date: time_at(row, &["LogDate"]).ok_or_else(|| field("LogDate"))?,
                path: str_at(row, &["LogFile"]).ok_or_else(|| field("LogFile"))?,
            });
        }
        match next {
            Some(next) if pages < src.config.max_pages_per_poll.max(1) => {
                url = src.api.same_origin(&next)?
            }
            next => {
                // `recent_keys` holds `<id>@<LogDate seconds>` of the files stored lately.
                files.retain(|f| {
                    !cp.recent_keys
                        .iter()
                        .any(|k| k.split('@').next() == Some(f.id.as_str()))
                });
                files.sort_by(|a, b| (a.log_date, &a.id).cmp(&(b.log_date, &b.id)));
                return Ok((first, files, next.is_none()));
            }
        }
    }
}

/// A downloaded log file's rows (CSV), read on the blocking pool: records, and dead letters for
/// rows that do not fit the header.
type LogFileReader = CsvRows<std::io::BufReader<std::fs::File>>;

/// Download one log file beside the checkpoint and open it for reading.
async fn open_log_file(
    src: &PollSource,
    authorization: &str,
    file: &LogFile,
) -> Result<LogFileReader, PollError> {
    let url = src.api.same_origin(&file.path)?;
    let headers = [
        ("accept", "text/csv".to_string()),
        ("authorization", authorization.to_string()),
    ];
    let path = src.checkpoint_path.with_extension("download");
    let io_err = |e: std::io::Error| PollError::LocalFile {
        path: path.clone(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    src.download(&PageRequest::get(url), &headers, &path, MAX_LOG_FILE_BYTES)
        .await?;
    let opened = std::fs::File::open(&path).map_err(io_err)?;
    // Unlinked once open: the rows are read from the open file, and nothing is left behind.
    let _ = std::fs::remove_file(&path);
    Ok(CsvRows::new(
        std::io::BufReader::with_capacity(1 << 16, opened),
        JsonlReaderConfig::default(),
    ))
}

/// The next `n` items of a log file (fewer at its end), read off the async threads.
async fn next_rows(
    mut rows: LogFileReader,
    n: usize,
    file: &LogFile,
) -> Result<(LogFileReader, Vec<InputItem>), PollError> {
    let (rows, batch) = tokio::task::spawn_blocking(move || {
        let batch = rows.by_ref().take(n).collect::<Result<Vec<_>, _>>();
        (rows, batch)
    })
    .await
    .map_err(|e| PollError::Malformed(format!("log file {}: {e}", file.id)))?;
    let batch = batch.map_err(|e| PollError::Malformed(format!("log file {}: {e}", file.id)))?;
    Ok((rows, batch))
}

async fn poll_log_files(
    src: &PollSource,
    authorization: &str,
    start: DateTime<Utc>,
) -> Result<PollReport, PollError> {
    let mut cp = src.checkpoint()?;
    let (_, files, _) = new_log_files(src, authorization, &cp, start).await?;
    let mut report = PollReport::default();
    for file in files {
        if report.pages >= src.config.max_pages_per_poll.max(1) {
            break;
        }
        let mut rows = open_log_file(src, authorization, &file).await?;
        report.pages += 1;
        loop {
            let (rest, batch) = next_rows(rows, ROWS_PER_BATCH, &file).await?;
            rows = rest;
            if batch.is_empty() {
                break;
            }
            report.add_stored(src.submit_items(batch).await?);
        }
        // The ids of the files stored within the settle window before the newest one.
        let newest = src.checkpoint_time(cp.since, [file.log_date]);
        let keep_from = newest.unwrap_or(file.log_date) - Duration::hours(SETTLE_HOURS);
        cp.recent_keys
            .push(format!("{}@{}", file.id, file.log_date.timestamp()));
        cp.recent_keys.retain(|k| {
            k.rsplit_once('@')
                .and_then(|(_, t)| t.parse::<i64>().ok())
                .is_some_and(|t| t >= keep_from.timestamp())
        });
        cp.since = newest;
        src.save_checkpoint(&cp)?;
    }
    Ok(report)
}

/// [`PollSource::probe`] for Salesforce: the first query page after the checkpoint (for event
/// log files: the listing, and the rows of its first new file).
pub(super) async fn probe(
    src: &PollSource,
    authorization: &str,
    start: DateTime<Utc>,
) -> Result<ProbeReport, PollError> {
    let cp = src.checkpoint()?;
    if feed(src) == "event_log_files" {
        let (url, files, complete) = new_log_files(src, authorization, &cp, start).await?;
        let first = match files.first() {
            Some(file) => {
                let rows = open_log_file(src, authorization, file).await?;
                let count = tokio::task::spawn_blocking(move || rows.filter(Result::is_ok).count())
                    .await
                    .map_err(|e| PollError::Malformed(format!("log file {}: {e}", file.id)))?;
                Some((count, file.log_date))
            }
            None => None,
        };
        return Ok(ProbeReport::of_listing(&url, files.len(), complete, first));
    }
    let url = query_url(src, &audit_trail_query(cp.since.unwrap_or(start)))?;
    let (rows, next) = query_page(src, authorization, url.clone()).await?;
    Ok(ProbeReport {
        url: url.to_string(),
        records: rows.len(),
        newest: newest_created(&rows),
        more: next.is_some(),
    })
}

/// An access token from the org's token endpoint (client-credentials flow of a connected app;
/// `secret` is its consumer secret). The secret goes only to `base_url`.
pub(super) async fn access_token(
    src: &PollSource,
    client_id: &str,
    secret: &str,
) -> Result<String, PollError> {
    let url = src.api.join("services/oauth2/token")?;
    src.client_credentials_token(url, client_id, secret, None)
        .await
}
