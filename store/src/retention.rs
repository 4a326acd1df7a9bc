//! Retention: drop whole expired (tenant, day) indexes and Parquet `dt=` partitions, expired
//! dead letters, and closed alerts past `alert_retention_days` (`AlertBook::expire`, which also
//! compacts alert journals).
//!
//! A day `D` of tenant `t` and source `s` is expired at `now` when the retention `r` for
//! (`t`, `s`) is not 0 and `D < now.date - r days`: with `r = 30` on 2026-11-25 the last kept
//! day is 2026-10-26. An index is removed whole when every source in it is expired; when only
//! some are, their documents are deleted from it (per-source retention shorter than the
//! tenant's).

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tantivy::Term;

use crate::error::IoContext;
use crate::journal;
use crate::layout;
use crate::store::{lock, read, write, Store};
use crate::tantivy_sink::remove_index_dir;
use crate::Result;
use perimeter_model::DeadLetter;

/// What `apply_retention` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// (tenant, day) indexes deleted whole.
    pub indexes_dropped: Vec<(String, NaiveDate)>,
    /// Parquet `dt=` partition directories deleted.
    pub parquet_partitions_dropped: Vec<PathBuf>,
    /// Documents deleted from indexes that stay (a source expired before the tenant's others).
    pub events_deleted_from_kept_indexes: u64,
    /// Events removed in total (whole indexes + per-source deletes).
    pub events_removed: u64,
    /// Dead letters removed (their `received_at` day expired for their tenant and source).
    #[serde(default)]
    pub dead_letters_removed: u64,
    /// Closed alerts (resolved, false positive) removed: their last occurrence is older than
    /// `alert_retention_days`. Open and acknowledged alerts are never removed.
    #[serde(default)]
    pub alerts_removed: u64,
    /// Alert journals rewritten with one line per alert (they lost alerts, or held many more
    /// lines than alerts: the repeats of grouped alerts, triage changes).
    #[serde(default)]
    pub alert_journals_rewritten: u64,
    /// Lines those rewrites took out of the journals.
    #[serde(default)]
    pub alert_journal_lines_removed: u64,
}

pub(crate) fn is_expired(day: NaiveDate, retention_days: u32, now: DateTime<Utc>) -> bool {
    if retention_days == 0 {
        return false;
    }
    let Some(oldest_kept) = now
        .date_naive()
        .checked_sub_days(chrono::Days::new(u64::from(retention_days)))
    else {
        return false;
    };
    day < oldest_kept
}

/// What [`Store::apply_retention`] would remove at a time, removing nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPreview {
    /// Stored events of expired days (counted from the indexes).
    pub events: u64,
    /// Parquet `dt=` partitions of expired days.
    pub parquet_partitions: usize,
}

impl Store {
    /// What [`Self::apply_retention`] would remove at `now`, touching nothing: for `perimeter
    /// run --check`, since the sweep runs at the start (a `retention_days = 9` meant as 90
    /// removed everything stored with one log line).
    pub fn retention_preview(&self, now: DateTime<Utc>) -> Result<RetentionPreview> {
        let mut preview = RetentionPreview::default();
        for p in self.layout.event_partitions()? {
            let days = self.config.retention_days_for(&p.tenant, &p.source);
            if is_expired(p.day, days, now) {
                preview.parquet_partitions += 1;
            }
        }
        let indexes: Vec<_> = read(&self.indexes)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((tenant, day), idx) in indexes {
            let searcher = idx.reader.searcher();
            for source in index_sources(&idx, self.schema.module)? {
                if is_expired(day, self.config.retention_days_for(&tenant, &source), now) {
                    let term = Term::from_field_text(self.schema.module, &source);
                    preview.events += searcher.doc_freq(&term)?;
                }
            }
        }
        Ok(preview)
    }

    /// Delete exactly the partitions expired at `now` (see the module doc).
    pub fn apply_retention(&self, now: DateTime<Utc>) -> Result<RetentionReport> {
        self.ensure_writable()?;
        let mut report = RetentionReport::default();
        let mut st = lock(&self.write);

        // Parquet partitions.
        for p in self.layout.event_partitions()? {
            let days = self.config.retention_days_for(&p.tenant, &p.source);
            if is_expired(p.day, days, now) {
                std::fs::remove_dir_all(&p.dir).at(&p.dir)?;
                report.parquet_partitions_dropped.push(p.dir);
            }
        }

        // tantivy indexes.
        let keys: Vec<_> = read(&self.indexes).keys().cloned().collect();
        for key in keys {
            let (tenant, day) = &key;
            let Some(idx) = read(&self.indexes).get(&key).cloned() else {
                continue;
            };
            let sources = index_sources(&idx, self.schema.module)?;
            let expired: Vec<&String> = sources
                .iter()
                .filter(|s| is_expired(*day, self.config.retention_days_for(tenant, s), now))
                .collect();
            if expired.is_empty() {
                continue;
            }
            let num_docs = idx.reader.searcher().num_docs();
            if expired.len() == sources.len() {
                if let Some(mut w) = st.writers.remove(&key) {
                    let _ = w.writer.rollback();
                }
                write(&self.indexes).remove(&key);
                drop(idx);
                remove_index_dir(&self.layout.index_dir(tenant, *day))?;
                report.indexes_dropped.push(key.clone());
                report.events_removed += num_docs;
            } else {
                let mut writer = match st.writers.remove(&key) {
                    Some(w) => w.writer,
                    None => idx.index.writer_with_num_threads(1, 15_000_000)?,
                };
                for s in &expired {
                    writer.delete_term(Term::from_field_text(self.schema.module, s));
                }
                writer.commit()?;
                idx.reader.reload()?;
                drop(writer);
                let removed = num_docs - idx.reader.searcher().num_docs();
                report.events_deleted_from_kept_indexes += removed;
                report.events_removed += removed;
            }
        }
        report.dead_letters_removed = self.expire_dead_letters(now)?;
        let layout = &self.layout;
        let mut book = write(&self.alerts);
        let days = crate::alert_parquet::all_days(&book);
        let alerts = book.expire(
            |t| layout.alerts_journal(t),
            now,
            self.config.alert_retention_days,
        )?;
        if alerts.alerts_removed > 0 {
            // The days that had alerts before: one whose alerts all went loses its file.
            for (tenant, days) in days {
                crate::alert_parquet::export_days(layout, &book, &tenant, days)?;
            }
        }
        drop(book);
        report.alerts_removed = alerts.alerts_removed;
        report.alert_journals_rewritten = alerts.journals_rewritten;
        report.alert_journal_lines_removed = alerts.journal_lines_removed;
        self.counters.events_stored.fetch_sub(
            report.events_removed.min(
                self.counters
                    .events_stored
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(report)
    }
}

impl Store {
    /// Rewrite each tenant's dead-letter file without the expired ones (by the day they were
    /// received and the retention of their tenant and source); returns how many were removed.
    fn expire_dead_letters(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut removed = 0;
        // Held while rewriting: dead letters are appended under the same lock.
        let _appends = write(&self.dead);
        for (tname, tdir) in layout::list_dirs(&self.layout.dead_letters_root())? {
            let Some(tenant) = layout::partition_value(&tname, "tenant") else {
                continue;
            };
            let path = tdir.join("dead_letters.jsonl");
            let all: Vec<DeadLetter> = journal::load(&path)?;
            let kept: Vec<&DeadLetter> = all
                .iter()
                .filter(|d| {
                    let days = self.config.retention_days_for(&tenant, &d.source);
                    !is_expired(d.received_at.date_naive(), days, now)
                })
                .collect();
            if kept.len() == all.len() {
                continue;
            }
            removed += (all.len() - kept.len()) as u64;
            journal::rewrite(&path, &kept)?;
        }
        Ok(removed)
    }
}

/// Source names present in an index (terms of `event.module`).
fn index_sources(
    idx: &crate::tantivy_sink::DayIndex,
    field: tantivy::schema::Field,
) -> Result<Vec<String>> {
    let searcher = idx.reader.searcher();
    let mut out = std::collections::BTreeSet::new();
    for seg in searcher.segment_readers() {
        let inv = seg.inverted_index(field)?;
        let mut stream = inv.terms().stream().map_err(|e| crate::StoreError::Io {
            path: PathBuf::new(),
            source: e,
        })?;
        while stream.advance() {
            out.insert(String::from_utf8_lossy(stream.key()).to_string());
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn expiry_boundary_is_exact() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 13, 0, 0).unwrap();
        let d = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        assert!(!is_expired(d(10, 26), 30, now));
        assert!(is_expired(d(10, 25), 30, now));
        assert!(!is_expired(d(1, 1), 0, now));
        assert!(!is_expired(d(11, 25), 1, now));
        assert!(!is_expired(d(11, 24), 1, now));
        assert!(is_expired(d(11, 23), 1, now));
    }
}
