//! The durable outbox of alert deliveries: a batch of new alerts is written here (fsynced)
//! before the input that produced it is acknowledged, and marked done once every destination
//! took it or its tries ran out. A batch still pending when the process stops (a crash, a
//! `kill -9`, a restart while a webhook is down) is delivered again at the next start, so
//! delivery is at least once: receivers tell repeats apart by the alert ids.
//!
//! Format: one file per tenant, `outbox/tenant=<t>/alerts.jsonl` in the data directory (the
//! tenant %-encoded as in the store's layout), so one tenant's alerts never share a file with
//! another's. One record per line, `{"op":"queued","seq":N,"tenant":..,"alerts":[..]}` (with
//! `"still_firing":true` for alerts sent before that are still firing) and
//! `{"op":"done","seq":N}`, and `{"op":"owed","seq":N,"destinations":[..]}` once a round of it
//! failed for some destinations (those still owed it: a restart sends it to them only, not
//! again to those that took it); sequence numbers run across tenants. The alerts are the pipeline's,
//! masked, like everything else on disk. Done records are not fsynced (losing one costs a
//! repeat, not a loss). A torn last line (a crash mid-write) is skipped. A tenant's file is
//! rewritten with only its pending batches at open and whenever it holds
//! [`REWRITE_AFTER_RECORDS`] records of finished batches; it is truncated whenever none of the
//! tenant's batches is pending.
//!
//! What a batch brings is known only once the store has it (which alerts are new, which were
//! counted into an earlier one), so its alerts are queued right after the store's commit. A
//! crash between the two would lose them for good (QA: the input, sent again, is a duplicate
//! and raises nothing), so before the commit the alerts' tenants and ids are written to
//! `outbox/intent.json` (fsynced), and removed once queued. At the next start, the alerts an
//! intent names that the store has and the outbox does not are queued again
//! ([`AlertNotifier::requeue_intended`](crate::destinations::AlertNotifier::requeue_intended)):
//! at least once, as the rest of delivery.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use perimeter_model::Alert;
use perimeter_store::layout::{encode_partition_value, partition_value};
use serde::{Deserialize, Serialize};

use crate::destinations::DestinationError;

/// Records of finished batches in a tenant's file past which it is rewritten with only the
/// pending batches.
pub const REWRITE_AFTER_RECORDS: usize = 10_000;

/// One tenant's new alerts, waiting for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingBatch {
    /// Position in the outbox (`None`: not persisted, e.g. the outbox could not be written).
    pub seq: Option<u64>,
    pub tenant: String,
    pub alerts: Vec<Alert>,
    /// The alerts were sent before; their repeats took their `count` past a tenfold since.
    pub still_firing: bool,
    /// After a failed round: the destinations still owed the batch (persisted, see
    /// [`DeliveryOutbox::owe`]). `None`: the first round, to all of them.
    pub redelivery: Option<Redelivery>,
}

/// A batch some destinations did not take yet (see [`PendingBatch::redelivery`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Redelivery {
    /// Ids of the destinations whose round of tries failed.
    pub owed: Vec<String>,
    /// Rounds that failed so far.
    pub rounds_failed: u32,
    /// When the first round failed.
    pub first_failed: std::time::Instant,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Record {
    Queued {
        seq: u64,
        tenant: String,
        alerts: Vec<Alert>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        still_firing: bool,
    },
    Done {
        seq: u64,
    },
    Owed {
        seq: u64,
        destinations: Vec<String>,
    },
}

/// The outbox; shared by the code that queues batches and the task that delivers them.
#[derive(Debug)]
pub struct DeliveryOutbox {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The `outbox` directory; `None`: in memory only.
    dir: Option<PathBuf>,
    /// Open files and record counts, by tenant.
    files: HashMap<String, TenantFile>,
    next_seq: u64,
    /// Pending batches by seq (what a rewrite keeps).
    pending: BTreeMap<u64, PendingBatch>,
}

#[derive(Debug, Default)]
struct TenantFile {
    file: Option<std::fs::File>,
    /// Records in the file now.
    records: usize,
    /// The tenant's batches not done yet.
    pending: usize,
}

impl DeliveryOutbox {
    /// Open the outbox in `data_dir` (created if missing) and return the batches a previous run
    /// left pending, oldest first. Each tenant's file is rewritten with only those.
    pub fn open_in(
        data_dir: impl AsRef<Path>,
    ) -> Result<(DeliveryOutbox, Vec<PendingBatch>), DestinationError> {
        let dir = data_dir.as_ref().join("outbox");
        let io = |path: &Path, source| DestinationError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut pending = BTreeMap::new();
        let mut next_seq = 0;
        let mut tenants = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            // A note being written when the process died (QA: they stayed for good).
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(INTENT_FILE) && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(tenant) = entry
                .file_name()
                .to_str()
                .and_then(|name| partition_value(name, "tenant"))
            else {
                continue;
            };
            let path = entry.path().join(FILE_NAME);
            remove_torn_rewrites(&entry.path());
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(io(&path, e)),
            };
            read_records(&path, &tenant, &text, &mut pending, &mut next_seq);
            tenants.push(tenant);
        }
        let batches = pending.values().cloned().collect();
        let mut files: HashMap<String, TenantFile> = HashMap::new();
        for b in pending.values() {
            files.entry(b.tenant.clone()).or_default().pending += 1;
        }
        let mut inner = Inner {
            dir: Some(dir),
            files,
            next_seq,
            pending,
        };
        for tenant in tenants {
            inner
                .rewrite(&tenant)
                .map_err(|e| io(&inner.path(&tenant).unwrap_or_default(), e))?;
        }
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
                dir: None,
                files: HashMap::new(),
                next_seq: 0,
                pending: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change is a whole append or a whole rewrite: a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persist new batches (one fsync per tenant file) and number them. On a write error the
    /// batches come back unnumbered: they can still be delivered, but not after a restart.
    /// `still_firing`: the alerts were sent before (see [`PendingBatch::still_firing`]).
    pub fn queue(
        &self,
        batches: Vec<(String, Vec<Alert>)>,
        still_firing: bool,
    ) -> Vec<PendingBatch> {
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
                    still_firing,
                    redelivery: None,
                }
            })
            .collect();
        let mut by_tenant: BTreeMap<&str, Vec<Record>> = BTreeMap::new();
        for b in &numbered {
            by_tenant
                .entry(&b.tenant)
                .or_default()
                .push(Record::queued(b));
        }
        let written = by_tenant
            .iter()
            .try_for_each(|(tenant, records)| inner.append(tenant, records, true));
        match written {
            Ok(()) => {
                for b in &numbered {
                    inner.pending.insert(b.seq.unwrap_or_default(), b.clone());
                    inner.files.entry(b.tenant.clone()).or_default().pending += 1;
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
        let Some(PendingBatch { tenant, .. }) = inner.pending.remove(&seq) else {
            return;
        };
        let state = inner.files.entry(tenant.clone()).or_default();
        state.pending = state.pending.saturating_sub(1);
        let (still_pending, records) = (state.pending, state.records);
        // Records of finished batches (queued and done lines) are what a rewrite drops.
        let result = if still_pending == 0 {
            inner.truncate(&tenant)
        } else if records.saturating_sub(still_pending) >= REWRITE_AFTER_RECORDS {
            inner.rewrite(&tenant)
        } else {
            inner.append(&tenant, &[Record::Done { seq }], false)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "alert outbox not updated; the batch may be sent again after a restart");
        }
    }

    /// Record that batch `seq` is still owed to these destinations only (a round failed for
    /// them and went through for the others). Not fsynced: losing it costs repeats to the
    /// destinations that took the batch, not a loss.
    pub fn owe(&self, seq: u64, redelivery: &Redelivery) {
        let mut inner = self.lock();
        let Some(batch) = inner.pending.get_mut(&seq) else {
            return;
        };
        batch.redelivery = Some(redelivery.clone());
        let tenant = batch.tenant.clone();
        let record = Record::Owed {
            seq,
            destinations: redelivery.owed.clone(),
        };
        if let Err(e) = inner.append(&tenant, &[record], false) {
            tracing::warn!(error = %e, "alert outbox not updated; after a restart the batch goes again to every destination");
        }
    }

    /// Batches queued and not done yet.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Note, durably, the alerts about to be stored (tenant and id), to queue them again should
    /// the process die between the store's commit and [`Self::queue`]. Nothing for an empty
    /// list or an outbox in memory.
    pub fn note_intent(&self, alerts: &[AlertRef]) -> std::io::Result<()> {
        let inner = self.lock();
        let Some(dir) = &inner.dir else {
            return Ok(());
        };
        if alerts.is_empty() {
            return Ok(());
        }
        let text = serde_json::to_vec(&Intent {
            alerts: alerts.to_vec(),
        })?;
        crate::files::replace_file(
            &dir.join(INTENT_FILE),
            &text,
            crate::files::Readers::Default,
        )
    }

    /// The noted alerts were queued (or there were none): forget them. Not fsynced: a note
    /// that comes back after a crash costs repeats, not a loss.
    pub fn clear_intent(&self) {
        let inner = self.lock();
        let Some(dir) = &inner.dir else {
            return;
        };
        match std::fs::remove_file(dir.join(INTENT_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, "the alert delivery intent could not be removed; its alerts may be sent again after a restart")
            }
        }
    }

    /// The alerts a previous run noted ([`Self::note_intent`]) and did not clear, less those
    /// pending in the outbox. An unreadable note is logged and read as none.
    pub fn intended_unqueued(&self) -> Vec<AlertRef> {
        let inner = self.lock();
        let Some(dir) = &inner.dir else {
            return Vec::new();
        };
        let path = dir.join(INTENT_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "the alert delivery intent could not be read; alerts stored just before a crash may not have been sent");
                return Vec::new();
            }
        };
        let intent: Intent = match serde_json::from_slice(&text) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "the alert delivery intent is damaged; alerts stored just before a crash may not have been sent");
                return Vec::new();
            }
        };
        let queued: std::collections::HashSet<(&str, &str)> = inner
            .pending
            .values()
            .flat_map(|b| b.alerts.iter().map(|a| (a.tenant.as_str(), a.id.as_str())))
            .collect();
        intent
            .alerts
            .into_iter()
            .filter(|a| !queued.contains(&(a.tenant.as_str(), a.id.as_str())))
            .collect()
    }
}

/// Remove, in a tenant's outbox directory, the temporary copies of its file a rewrite was
/// writing when the process died (QA: a whole backlog's copy stayed for good).
fn remove_torn_rewrites(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(FILE_NAME) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The file, in the outbox directory, of the alerts about to be stored (see the module docs).
const INTENT_FILE: &str = "intent.json";

/// An alert by its tenant and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRef {
    pub tenant: String,
    pub id: String,
}

/// What [`INTENT_FILE`] holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Intent {
    alerts: Vec<AlertRef>,
}

/// The file name in each tenant's outbox directory.
const FILE_NAME: &str = "alerts.jsonl";

/// Read one tenant's outbox file into `pending`.
fn read_records(
    path: &Path,
    tenant: &str,
    text: &str,
    pending: &mut BTreeMap<u64, PendingBatch>,
    next_seq: &mut u64,
) {
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<Record>(line) {
            Ok(Record::Queued {
                seq,
                tenant: of,
                alerts,
                still_firing,
            }) if of == tenant => {
                *next_seq = (*next_seq).max(seq + 1);
                pending.insert(
                    seq,
                    PendingBatch {
                        seq: Some(seq),
                        tenant: of,
                        alerts,
                        still_firing,
                        redelivery: None,
                    },
                );
            }
            Ok(Record::Queued { .. }) => tracing::warn!(
                path = %path.display(),
                line = i + 1,
                "outbox record of another tenant skipped"
            ),
            Ok(Record::Done { seq }) => {
                pending.remove(&seq);
            }
            Ok(Record::Owed { seq, destinations }) => {
                if let Some(batch) = pending.get_mut(&seq) {
                    // The rounds' timing starts over: it was in the memory of the last run.
                    batch.redelivery = Some(Redelivery {
                        owed: destinations,
                        rounds_failed: 1,
                        first_failed: std::time::Instant::now(),
                    });
                }
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
}

impl Record {
    fn queued(b: &PendingBatch) -> Record {
        Record::Queued {
            seq: b.seq.unwrap_or_default(),
            tenant: b.tenant.clone(),
            alerts: b.alerts.clone(),
            still_firing: b.still_firing,
        }
    }
}

impl Inner {
    /// The tenant's outbox file; `None` in memory.
    fn path(&self, tenant: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(
            dir.join(format!("tenant={}", encode_partition_value(tenant)))
                .join(FILE_NAME),
        )
    }

    fn append(&mut self, tenant: &str, records: &[Record], sync: bool) -> std::io::Result<()> {
        let Some(path) = self.path(tenant) else {
            return Ok(());
        };
        let mut text = Vec::new();
        for r in records {
            serde_json::to_writer(&mut text, r)?;
            text.push(b'\n');
        }
        let state = self.files.entry(tenant.to_string()).or_default();
        if state.file.is_none() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            state.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?,
            );
        }
        let file = state.file.as_mut().expect("opened above");
        file.write_all(&text)?;
        if sync {
            file.sync_data()?;
        }
        state.records += records.len();
        Ok(())
    }

    /// Empty the tenant's file (none of its batches is pending). Not fsynced, like a done
    /// record: should the old content come back after a crash, its batches are at worst sent
    /// again; the next queued batch's fsync persists the truncation with it.
    fn truncate(&mut self, tenant: &str) -> std::io::Result<()> {
        if self.dir.is_none() {
            return Ok(());
        }
        match self.files.get_mut(tenant) {
            // Appends go to the end, which is now 0.
            Some(TenantFile {
                file: Some(f),
                records,
                ..
            }) => {
                f.set_len(0)?;
                *records = 0;
                Ok(())
            }
            _ => self.rewrite(tenant),
        }
    }

    /// Replace the tenant's file with its pending batches only (write, fsync, rename, fsync the
    /// directory).
    fn rewrite(&mut self, tenant: &str) -> std::io::Result<()> {
        let Some(path) = self.path(tenant) else {
            return Ok(());
        };
        let mut text = Vec::new();
        let mut kept = 0;
        for b in self.pending.values() {
            if b.tenant != tenant {
                continue;
            }
            serde_json::to_writer(&mut text, &Record::queued(b))?;
            text.push(b'\n');
            kept += 1;
            if let Some(r) = &b.redelivery {
                let owed = Record::Owed {
                    seq: b.seq.unwrap_or_default(),
                    destinations: r.owed.clone(),
                };
                serde_json::to_writer(&mut text, &owed)?;
                text.push(b'\n');
                kept += 1;
            }
        }
        let state = self.files.entry(tenant.to_string()).or_default();
        // The append handle points at the file being replaced.
        state.file = None;
        crate::files::replace_file(&path, &text, crate::files::Readers::Default)?;
        state.records = kept;
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
    fn a_batch_owed_to_some_destinations_goes_only_to_those_after_a_restart() {
        // It went again to every destination: one webhook down meant repeats to the healthy
        // ones at every restart.
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = DeliveryOutbox::open_in(dir.path()).unwrap();
        let queued = outbox.queue(
            vec![
                ("acme".into(), vec![alert("a1")]),
                ("acme".into(), vec![alert("a2")]),
            ],
            false,
        );
        let seq = queued[0].seq.unwrap();
        let owed = Redelivery {
            owed: vec!["dst-down".into()],
            rounds_failed: 1,
            first_failed: std::time::Instant::now(),
        };
        outbox.owe(seq, &owed);
        drop(outbox);
        // Twice: the first open rewrites the file, which must keep what is owed.
        for _ in 0..2 {
            let (outbox, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
            assert_eq!(pending.len(), 2);
            assert_eq!(
                pending[0].redelivery.as_ref().map(|r| r.owed.clone()),
                Some(vec!["dst-down".to_string()])
            );
            assert_eq!(
                pending[1].redelivery, None,
                "still owed to every destination"
            );
            drop(outbox);
        }
    }

    #[test]
    fn pending_batches_survive_a_reopen_and_done_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
        assert!(pending.is_empty());
        let mut queued = outbox.queue(vec![("acme".into(), vec![alert("a1")])], false);
        // Alerts sent before that are still firing: their batch says so, and keeps saying so.
        queued.extend(outbox.queue(
            vec![("globex".into(), vec![alert("g1"), alert("g2")])],
            true,
        ));
        let seqs: Vec<u64> = queued.iter().map(|b| b.seq.unwrap()).collect();
        assert_eq!(seqs, vec![0, 1]);
        // One file per tenant: a tenant's alerts never share a file with another's.
        let acme = dir.path().join("outbox/tenant=acme/alerts.jsonl");
        let globex = dir.path().join("outbox/tenant=globex/alerts.jsonl");
        let text = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
        assert!(text(&acme).contains("a1") && !text(&acme).contains("g1"));
        assert!(text(&globex).contains("g1") && !text(&globex).contains("a1"));
        assert!(
            !text(&acme).contains("still_firing"),
            "written only when true"
        );
        assert!(text(&globex).contains(r#""still_firing":true"#));
        outbox.done(seqs[0]);
        assert_eq!(
            text(&acme),
            "",
            "emptied when none of the tenant's batches is pending"
        );
        drop(outbox);
        // A torn last line, as a crash mid-append leaves it.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&globex)
            .unwrap();
        f.write_all(br#"{"op":"queued","seq":7,"ten"#).unwrap();
        drop(f);

        let (outbox, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].seq, Some(1));
        assert_eq!(pending[0].tenant, "globex");
        assert_eq!(pending[0].alerts, vec![alert("g1"), alert("g2")]);
        assert!(pending[0].still_firing);
        // Numbering goes on after the highest seq seen; the rewrite kept only the pending one.
        assert_eq!(text(&globex).lines().count(), 1);
        assert_eq!(
            outbox.queue(vec![("acme".into(), vec![])], false)[0].seq,
            Some(2)
        );
        outbox.done(1);
        outbox.done(2);
        assert_eq!(outbox.pending(), 0);
        assert_eq!((text(&acme), text(&globex)), (String::new(), String::new()));
        let (_, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
        assert!(pending.is_empty());
    }

    /// A rewrite's temporary copy left by a kill is removed at the next open (QA).
    #[test]
    fn a_torn_rewrite_is_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let tenant_dir = dir.path().join("outbox/tenant=acme");
        std::fs::create_dir_all(&tenant_dir).unwrap();
        let torn = tenant_dir.join(format!("{FILE_NAME}.4242.3.tmp"));
        std::fs::write(&torn, "{").unwrap();
        let (_, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
        assert!(pending.is_empty());
        assert!(!torn.exists());
    }

    #[test]
    fn tenant_names_cannot_leave_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = DeliveryOutbox::open_in(dir.path()).unwrap();
        outbox.queue(vec![("../../etc".into(), vec![alert("x")])], false);
        drop(outbox);
        let (_, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].tenant, "../../etc");
        assert!(dir
            .path()
            .join("outbox/tenant=%2E%2E%2F%2E%2E%2Fetc/alerts.jsonl")
            .exists());
    }

    #[test]
    fn a_long_busy_outbox_is_rewritten_to_its_pending_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = DeliveryOutbox::open_in(dir.path()).unwrap();
        let keep = outbox.queue(vec![("acme".into(), vec![alert("keep")])], false)[0]
            .seq
            .unwrap();
        // One fsync for all of them; each done record is a plain append until the rewrite.
        let many = (0..REWRITE_AFTER_RECORDS)
            .map(|i| ("acme".to_string(), vec![alert(&format!("a{i}"))]))
            .collect();
        for batch in outbox.queue(many, false) {
            outbox.done(batch.seq.unwrap());
        }
        let path = dir.path().join("outbox/tenant=acme/alerts.jsonl");
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
