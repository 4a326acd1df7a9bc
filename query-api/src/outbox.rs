//! The durable outbox of alert deliveries: a batch of new alerts is written here (fsynced)
//! before the input that produced it is acknowledged, and marked done once every destination
//! took it or its tries ran out. A batch still pending when the process stops (a crash, a
//! `kill -9`, a restart while a webhook is down) is delivered again at the next start, so
//! delivery is at least once: receivers tell repeats apart by the alert ids.
//!
//! Format: `outbox/alerts.jsonl` in the data directory, one record per line,
//! `{"op":"queued","seq":N,"tenant":..,"alerts":[..]}` and `{"op":"done","seq":N}`. The alerts
//! are the pipeline's, masked, like everything else on disk. Done records are not fsynced (losing
//! one costs a repeat, not a loss). A torn last line (a crash mid-write) is skipped. The file is
//! rewritten with only the pending batches at open and whenever it holds
//! [`REWRITE_AFTER_RECORDS`] records of finished batches; it is truncated whenever nothing is
//! pending.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use perimeter_model::Alert;
use serde::{Deserialize, Serialize};

use crate::destinations::DestinationError;

/// Records of finished batches in the file past which it is rewritten with only the pending
/// batches.
pub const REWRITE_AFTER_RECORDS: usize = 10_000;

/// One tenant's new alerts, waiting for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingBatch {
    /// Position in the outbox (`None`: not persisted, e.g. the outbox could not be written).
    pub seq: Option<u64>,
    pub tenant: String,
    pub alerts: Vec<Alert>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Record {
    Queued {
        seq: u64,
        tenant: String,
        alerts: Vec<Alert>,
    },
    Done {
        seq: u64,
    },
}

/// The outbox; shared by the code that queues batches and the task that delivers them.
#[derive(Debug)]
pub struct DeliveryOutbox {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None`: in memory only.
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
    next_seq: u64,
    /// Pending batches by seq (what a rewrite keeps).
    pending: BTreeMap<u64, (String, Vec<Alert>)>,
    /// Records in the file now.
    records: usize,
}

impl DeliveryOutbox {
    /// Open the outbox in `data_dir` (created if missing) and return the batches a previous run
    /// left pending, oldest first. The file is rewritten with only those.
    pub fn open_in(
        data_dir: impl AsRef<Path>,
    ) -> Result<(DeliveryOutbox, Vec<PendingBatch>), DestinationError> {
        let dir = data_dir.as_ref().join("outbox");
        let path = dir.join("alerts.jsonl");
        let io = |source| DestinationError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let mut pending = BTreeMap::new();
        let mut next_seq = 0;
        for (i, line) in text.lines().enumerate() {
            match serde_json::from_str::<Record>(line) {
                Ok(Record::Queued {
                    seq,
                    tenant,
                    alerts,
                }) => {
                    next_seq = next_seq.max(seq + 1);
                    pending.insert(seq, (tenant, alerts));
                }
                Ok(Record::Done { seq }) => {
                    pending.remove(&seq);
                }
                // A crash mid-append leaves at most the last line torn; anything else unreadable
                // is reported, and skipped rather than blocking every later delivery.
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    line = i + 1,
                    error = %e,
                    "unreadable outbox record skipped"
                ),
            }
        }
        let batches = pending
            .iter()
            .map(|(seq, (tenant, alerts))| PendingBatch {
                seq: Some(*seq),
                tenant: tenant.clone(),
                alerts: alerts.clone(),
            })
            .collect();
        let mut inner = Inner {
            path: Some(path.clone()),
            file: None,
            next_seq,
            pending,
            records: 0,
        };
        inner.rewrite().map_err(io)?;
        Ok((
            DeliveryOutbox {
                inner: Mutex::new(inner),
            },
            batches,
        ))
    }

    /// An outbox that lives in memory only (tests, services without a data directory).
    pub fn in_memory() -> DeliveryOutbox {
        DeliveryOutbox {
            inner: Mutex::new(Inner {
                path: None,
                file: None,
                next_seq: 0,
                pending: BTreeMap::new(),
                records: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change is a whole append or a whole rewrite: a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persist new batches (one fsync for all of them) and number them. On a write error the
    /// batches come back unnumbered: they can still be delivered, but not after a restart.
    pub fn queue(&self, batches: Vec<(String, Vec<Alert>)>) -> Vec<PendingBatch> {
        let mut inner = self.lock();
        let numbered: Vec<PendingBatch> = batches
            .into_iter()
            .map(|(tenant, alerts)| {
                let seq = inner.next_seq;
                inner.next_seq += 1;
                PendingBatch {
                    seq: Some(seq),
                    tenant,
                    alerts,
                }
            })
            .collect();
        let records: Vec<Record> = numbered
            .iter()
            .map(|b| Record::Queued {
                seq: b.seq.unwrap_or_default(),
                tenant: b.tenant.clone(),
                alerts: b.alerts.clone(),
            })
            .collect();
        match inner.append(&records, true) {
            Ok(()) => {
                for b in &numbered {
                    inner.pending.insert(
                        b.seq.unwrap_or_default(),
                        (b.tenant.clone(), b.alerts.clone()),
                    );
                }
                numbered
            }
            Err(e) => {
                tracing::error!(error = %e, "alert outbox not written; these deliveries will not survive a restart");
                numbered
                    .into_iter()
                    .map(|b| PendingBatch { seq: None, ..b })
                    .collect()
            }
        }
    }

    /// Mark a batch delivered (or given up on).
    pub fn done(&self, seq: u64) {
        let mut inner = self.lock();
        if inner.pending.remove(&seq).is_none() {
            return;
        }
        // Records of finished batches (queued and done lines) are what a rewrite drops.
        let finished = inner.records.saturating_sub(inner.pending.len());
        let result = if inner.pending.is_empty() {
            inner.truncate()
        } else if finished >= REWRITE_AFTER_RECORDS {
            inner.rewrite()
        } else {
            inner.append(&[Record::Done { seq }], false)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "alert outbox not updated; the batch may be sent again after a restart");
        }
    }

    /// Batches queued and not done yet.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

impl Inner {
    fn append(&mut self, records: &[Record], sync: bool) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut text = Vec::new();
        for r in records {
            serde_json::to_writer(&mut text, r)?;
            text.push(b'\n');
        }
        if self.file.is_none() {
            self.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            );
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(&text)?;
        if sync {
            file.sync_data()?;
        }
        self.records += records.len();
        Ok(())
    }

    /// Empty the file (nothing is pending). Not fsynced, like a done record: should the old
    /// content come back after a crash, its batches are at worst sent again; the next queued
    /// batch's fsync persists the truncation with it.
    fn truncate(&mut self) -> std::io::Result<()> {
        if self.path.is_none() {
            return Ok(());
        }
        match &self.file {
            // Appends go to the end, which is now 0.
            Some(f) => f.set_len(0)?,
            None => return self.rewrite(),
        }
        self.records = 0;
        Ok(())
    }

    /// Replace the file with the pending batches only (write, fsync, rename, fsync the dir).
    fn rewrite(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let tmp = path.with_extension("jsonl.tmp");
        let mut text = Vec::new();
        for (seq, (tenant, alerts)) in &self.pending {
            let record = Record::Queued {
                seq: *seq,
                tenant: tenant.clone(),
                alerts: alerts.clone(),
            };
            serde_json::to_writer(&mut text, &record)?;
            text.push(b'\n');
        }
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        self.file = None;
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.records = self.pending.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str) -> Alert {
        let mut a = Alert::new(
            "okta_mfa_reset",
            "MFA factor reset",
            perimeter_model::Severity::High,
            perimeter_model::DetectorKind::Sigma,
            "okta",
            "acme",
            "2026-11-24T08:00:00Z".parse().expect("a time"),
            "alice",
            perimeter_model::EntityKind::User,
        );
        a.id = id.to_string();
        a
    }

    #[test]
    fn pending_batches_survive_a_reopen_and_done_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
        assert!(pending.is_empty());
        let queued = outbox.queue(vec![
            ("acme".into(), vec![alert("a1")]),
            ("globex".into(), vec![alert("g1"), alert("g2")]),
        ]);
        let seqs: Vec<u64> = queued.iter().map(|b| b.seq.unwrap()).collect();
        assert_eq!(seqs, vec![0, 1]);
        outbox.done(seqs[0]);
        drop(outbox);
        // A torn last line, as a crash mid-append leaves it.
        let path = dir.path().join("outbox/alerts.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"op":"queued","seq":7,"ten"#).unwrap();
        drop(f);

        let (outbox, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].seq, Some(1));
        assert_eq!(pending[0].tenant, "globex");
        assert_eq!(pending[0].alerts, vec![alert("g1"), alert("g2")]);
        // Numbering goes on after the highest seq seen; the rewrite kept only the pending one.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(outbox.queue(vec![("acme".into(), vec![])])[0].seq, Some(2));
        outbox.done(1);
        outbox.done(2);
        assert_eq!(outbox.pending(), 0);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "",
            "emptied when nothing is pending"
        );
        let (_, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
        assert!(pending.is_empty());
    }

    #[test]
    fn a_long_busy_outbox_is_rewritten_to_its_pending_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = DeliveryOutbox::open_in(dir.path()).unwrap();
        let keep = outbox.queue(vec![("acme".into(), vec![alert("keep")])])[0]
            .seq
            .unwrap();
        // One fsync for all of them; each done record is a plain append until the rewrite.
        let many = (0..REWRITE_AFTER_RECORDS)
            .map(|i| ("acme".to_string(), vec![alert(&format!("a{i}"))]))
            .collect();
        for batch in outbox.queue(many) {
            outbox.done(batch.seq.unwrap());
        }
        let path = dir.path().join("outbox/alerts.jsonl");
        // Without rewrites: 2 * REWRITE_AFTER_RECORDS + 1 lines.
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(
            lines <= REWRITE_AFTER_RECORDS + 1,
            "{lines} records: the finished ones were not dropped"
        );
        drop(outbox);
        let (_, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].seq, Some(keep));
    }
}
