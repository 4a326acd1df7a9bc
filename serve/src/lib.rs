//! The embedded service loop of `perimeter run`: bus -> pipeline (normalize, detect, mask) ->
//! store, on a pipeline thread and a store thread of its own.
//!
//! Guarantees:
//! - a submission is answered (acknowledged to its source) only after the store committed its
//!   events and alerts (ADR 005); one that could not be stored is answered with the error;
//! - submissions queued behind each other are stored with one commit, each still answered with
//!   its own counts (ADR 020);
//! - a snapshot of the detection state never holds events whose source was not told they are
//!   stored (ADR 013), and alerts the store could not write are kept for the next batch and across
//!   a restart.
//!
//! [`process_item`] and [`store_output`] are the same steps for `perimeter detect` and the demo.
//! [`rule_service`] is the Sigma engine behind the API's rule endpoints.

pub mod rule_service;

use perimeter_detect::pipeline::{save_unstored_alerts, Pipeline, PipelineOutput};
use perimeter_detect::sigma::SigmaDetector;
use perimeter_detect::silence::SourceSilence;
use perimeter_ingest::bus::{BusReceiver, Submission, SubmitAck};
use perimeter_ingest::InputItem;
use perimeter_model::{Masker, Metrics};
use perimeter_query_api::AlertNotifier;
use perimeter_store::{Store, StoreBatch, WriteAck};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Open correlation windows up to which they are snapshotted after every stored batch (not
/// fsynced: a `kill -9` then loses at most the batch in flight; a power loss what the periodic,
/// fsynced snapshot has not seen). A snapshot costs about 1.2 us per window (`sigma_match`
/// bench), so at most about 1.2 ms per batch here. Above, only the periodic snapshot writes them.
const PER_BATCH_SNAPSHOT_MAX_WINDOWS: usize = 1_000;
/// How often expired partitions are dropped (also at start).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

fn apply_retention(store: &Store, metrics: &Metrics) {
    match store.apply_retention(chrono::Utc::now()) {
        Ok(report) => {
            for (what, n) in [
                ("events", report.events_removed),
                ("dead_letters", report.dead_letters_removed),
                ("alerts", report.alerts_removed),
                ("alert_journal_lines", report.alert_journal_lines_removed),
            ] {
                metrics.inc("retention_removed_total", &[("what", what)], n);
            }
            // Fields of their own, so log collectors read the counts.
            tracing::info!(
                indexes_dropped = report.indexes_dropped.len(),
                parquet_partitions_dropped = report.parquet_partitions_dropped.len(),
                events_removed = report.events_removed,
                events_deleted_from_kept_indexes = report.events_deleted_from_kept_indexes,
                dead_letters_removed = report.dead_letters_removed,
                alerts_removed = report.alerts_removed,
                alert_journals_rewritten = report.alert_journals_rewritten,
                alert_journal_lines_removed = report.alert_journal_lines_removed,
                "retention applied"
            )
        }
        Err(e) => {
            metrics.inc("retention_failures_total", &[], 1);
            tracing::warn!(error = %e, "retention failed")
        }
    }
}

/// Where and how often the worker snapshots detection state.
pub struct StateSnapshots {
    pub dir: PathBuf,
    pub every: Duration,
}

/// What drives the pipeline worker besides its input.
pub struct WorkerControl {
    /// Rule sets reloaded (SIGHUP), put in use at the next wake.
    pub rule_reloads: std::sync::mpsc::Receiver<SigmaDetector>,
    /// Silence alerts, checked at most every `check_every` (the service wakes the worker).
    pub silence: Option<SourceSilence>,
}

/// What the pipeline worker could not keep when it stopped; all zero for a clean stop.
#[derive(Debug, Default)]
pub struct ShutdownLosses {
    /// Alerts neither stored nor saved with the detection state: gone with the process.
    pub alerts_lost: usize,
    /// The detection state was not saved: the next start restores an older one.
    pub state_not_saved: bool,
    /// The store's final flush failed.
    pub store_not_flushed: bool,
}

impl ShutdownLosses {
    pub fn is_clean(&self) -> bool {
        self.alerts_lost == 0 && !self.state_not_saved && !self.store_not_flushed
    }
}

/// Run the pipeline on its own thread (CPU-bound, synchronous) until every bus sender is gone;
/// the thread's result says what the shutdown could not keep.
pub fn spawn_pipeline_worker(
    mut pipeline: Pipeline,
    store: Arc<Store>,
    mut rx: BusReceiver,
    metrics: Arc<Metrics>,
    state: StateSnapshots,
    notifier: AlertNotifier,
    control: WorkerControl,
) -> std::thread::JoinHandle<ShutdownLosses> {
    let WorkerControl {
        rule_reloads,
        silence,
    } = control;
    std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            pipeline.publish_state_metrics();
            let mut out = PipelineOutput::default();
            // Alerts of batches the store failed to write. The source resends those events,
            // but the detectors already counted them and the replay window passes them on
            // without detecting them again, so their alerts would be lost: they are stored with
            // the next batch that is stored (alerts are idempotent by id).
            // They go into the state directory with every snapshot of the detection state (which
            // counted their events), so a restart does not lose them either.
            let mut unstored_alerts = Vec::new();
            out.alerts = restore_unstored_alerts(&state.dir);
            if !out.alerts.is_empty() {
                let stored = store_alerts_or_keep(
                    &store,
                    &mut out,
                    &metrics,
                    &notifier,
                    &mut unstored_alerts,
                    "alerts a previous run could not store are still not stored; kept for the next batch",
                );
                if stored {
                    tracing::info!(
                        alerts = out.alerts.len(),
                        "stored the alerts a previous run could not store"
                    );
                    if let Err(e) = save_unstored_alerts(&state.dir, &[]) {
                        tracing::warn!(error = %e, "removing the stored alerts' file failed");
                    }
                }
                out.clear();
            }
            let mut snapshots = PeriodicSnapshots::new(state.every);
            // The correlation state version last written after a batch.
            let mut saved_correlations = u64::MAX;
            apply_retention(&store, &metrics);
            let mut last_retention = Instant::now();
            // Sources without a normalizer already logged (once each; every answer says it).
            let mut warned_sources = std::collections::HashSet::new();
            // Silence alerts raised by this run (one per silence; the store dedups across runs).
            let mut silences_raised = std::collections::HashSet::new();
            let mut last_silence_check: Option<Instant> = None;
            // Storing runs on its own thread: while it stores (and answers) one group, this
            // thread detects the next.
            let mut stage = StoreStage::spawn(
                store.clone(),
                metrics.clone(),
                notifier.clone(),
                state.dir.clone(),
            );
            while let Some(first) = rx.blocking_recv() {
                out.clear();
                // Rules reloaded meanwhile (SIGHUP) apply from this batch on.
                while let Ok(sigma) = rule_reloads.try_recv() {
                    let kept = pipeline.replace_sigma(sigma, &mut out);
                    tracing::info!(
                        correlations_kept_open = kept,
                        "reloaded rules in use (unchanged correlations keep their open windows)"
                    );
                }
                // Woken at least every check interval (see `run::spawn_silence_ticker`).
                if let Some(silence) = &silence {
                    if last_silence_check.is_none_or(|t| t.elapsed() >= silence.check_every()) {
                        last_silence_check = Some(Instant::now());
                        let SilenceCheck { raised, resolved } =
                            silent_sources(&store, silence, &mut silences_raised, |a| {
                                !pipeline.switched_off(a)
                            });
                        // The destinations hear of the end too (the same alert, `status`
                        // resolved), as of the start.
                        if !resolved.is_empty() {
                            notifier.notify(&resolved);
                        }
                        if !raised.is_empty() {
                            for a in &raised {
                                metrics.inc("alerts_total", &[("rule", &a.rule_id)], 1);
                            }
                            // Stored (and sent) on their own: they belong to no input batch.
                            let mut silent = PipelineOutput {
                                alerts: raised,
                                ..PipelineOutput::default()
                            };
                            store_alerts_or_keep(
                                &store,
                                &mut silent,
                                &metrics,
                                &notifier,
                                &mut unstored_alerts,
                                "silence alerts not stored; kept for the next batch",
                            );
                        }
                    }
                }
                // Each submission's detection output; alerts the old rules flushed go with the
                // first one stored.
                let mut group: Vec<GroupMember> = Vec::new();
                let mut admit = |mut sub: Submission| {
                    // An empty submission only wakes the worker (sources never send one): for
                    // a reload, or the ticker's periodic work when no input comes. Nothing to
                    // store unless the old rules flushed alerts.
                    if sub.items.is_empty() && out.alerts.is_empty() {
                        let _ = sub.ack.send(Ok(SubmitAck::default()));
                        return None;
                    }
                    let now = chrono::Utc::now();
                    let mut sub_out = std::mem::take(&mut out);
                    detect_submission(&mut pipeline, &mut sub, &mut sub_out, now);
                    let answer = Answer::before_store(&pipeline, &sub, &sub_out, now);
                    if let Some(note) = &answer.source_note {
                        if warned_sources.insert(sub.source.clone()) {
                            tracing::warn!(source = %sub.source, "{note}");
                        }
                    }
                    // Counted once, with the batch that raised them (before kept ones join).
                    pipeline.publish_metrics(&sub.source, &sub_out);
                    Some(GroupMember {
                        sub,
                        out: sub_out,
                        answer,
                    })
                };
                let mut records = first.items.len();
                group.extend(admit(first));
                // The submissions that queued meanwhile are stored with this one: one commit for
                // the group instead of one per submission, which costs several times more per
                // event for small batches (webhooks, API pages). Each is still answered only
                // once the group is stored. While the store thread is still busy with the group
                // before, what arrives joins this one too: senders answered together send again
                // together, and a group handed over at once would hold only the first of them.
                while records < GROUP_MAX_RECORDS {
                    match rx.try_recv() {
                        Ok(sub) => {
                            records += sub.items.len();
                            group.extend(admit(sub));
                        }
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty)
                            if !group.is_empty() && stage.busy() =>
                        {
                            stage.wait_briefly()
                        }
                        Err(_) => break,
                    }
                }
                if !group.is_empty() {
                    // Alerts of groups the store failed so far are stored with this one.
                    stage.poll();
                    stage.take_returned(&mut unstored_alerts, &mut saved_correlations);
                    group[0].out.alerts.splice(0..0, unstored_alerts.drain(..));
                    // The correlation windows as of this group, written once it is stored:
                    // the file then never holds events whose source was not told they are
                    // stored (a restart would count those again when they are resent).
                    let (windows, version) = pipeline.correlation_state();
                    let correlations = (version != saved_correlations
                        && windows <= PER_BATCH_SNAPSHOT_MAX_WINDOWS)
                        .then(|| pipeline.correlation_snapshot())
                        .flatten();
                    if correlations.is_some() {
                        saved_correlations = version;
                    }
                    stage.store(StoreJob {
                        group,
                        correlations,
                    });
                }
                let retention_due = last_retention.elapsed() > RETENTION_EVERY;
                if retention_due || snapshots.due() {
                    // Checked on idle wakes too: a quiet spell must not leave the last batches
                    // out of the snapshot (a `kill -9` in it would have their resend detected,
                    // and sent, again). The snapshot holds the detection state of every group
                    // detected so far: each must be stored and answered first (and retention
                    // waits for no write).
                    stage.finish_all();
                    stage.take_returned(&mut unstored_alerts, &mut saved_correlations);
                    if retention_due {
                        apply_retention(&store, &metrics);
                        last_retention = Instant::now();
                    }
                    snapshots.save_if_due(&pipeline, &unstored_alerts, &state.dir, &metrics);
                }
            }
            stage.finish_all();
            stage.take_returned(&mut unstored_alerts, &mut saved_correlations);
            stage.stop();
            // What the last batch left in `out` is stored and sent already.
            out.clear();
            out.alerts.append(&mut unstored_alerts);
            // Correlation windows stay open: they are in the snapshot and close after the restart.
            pipeline.suspend(&mut out);
            if !out.alerts.is_empty() {
                store_alerts_or_keep(
                    &store,
                    &mut out,
                    &metrics,
                    &notifier,
                    &mut unstored_alerts,
                    "alerts not stored at shutdown (behavioural groups closed by the shutdown, or kept from failed batches)",
                );
            }
            let mut losses = ShutdownLosses::default();
            // Whether the alerts are kept is said once it is known, not promised before.
            match write_state(&pipeline, &unstored_alerts, &state.dir) {
                Ok(()) => {
                    note_state_current(&metrics);
                    if !unstored_alerts.is_empty() {
                        tracing::warn!(
                            alerts = unstored_alerts.len(),
                            file = %state.dir.join(perimeter_detect::pipeline::UNSTORED_ALERTS).display(),
                            "alerts not stored at shutdown are kept with the detection state; stored at the next start"
                        );
                    }
                }
                Err(e) => {
                    metrics.inc("state_snapshots_failed_total", &[], 1);
                    losses.alerts_lost = unstored_alerts.len();
                    losses.state_not_saved = true;
                    tracing::error!(
                        error = %e,
                        alerts_lost = losses.alerts_lost,
                        "detection state NOT saved at shutdown: {} alert(s) neither stored nor kept are lost, and the next start restores the state of the last snapshot, older than the store",
                        losses.alerts_lost
                    );
                    note_unsaved_shutdown(&state.dir, losses.alerts_lost);
                }
            }
            if let Err(e) = store.flush() {
                tracing::error!(error = %e, "final store flush failed");
                losses.store_not_flushed = true;
            }
            losses
        })
        .expect("spawning the pipeline thread")
}

/// Most records of the submissions stored together with one commit: the store's cost per event
/// stops falling at a few tens of thousands of events per commit (`store` bench), and the group
/// is held in memory until stored.
const GROUP_MAX_RECORDS: usize = 50_000;

/// Run the detection over one submission's items into `out` (their events, alerts and dead
/// letters); the items are taken.
fn detect_submission(
    pipeline: &mut Pipeline,
    sub: &mut Submission,
    out: &mut PipelineOutput,
    now: chrono::DateTime<chrono::Utc>,
) {
    // A spool file's name starts the reason of each of its dead letters, the normalizer's as
    // well as the reader's: "line 3" of a source with several files could not be traced.
    // Masked, as the reasons are.
    let origin = sub
        .origin
        .as_deref()
        .map(|origin| format!("{}: ", pipeline.masker().mask_text(origin)));
    for item in std::mem::take(&mut sub.items) {
        let dead_letters_before = out.dead_letters.len();
        process_item(pipeline, &sub.source, &sub.tenant, item, now, out);
        if let Some(origin) = &origin {
            for dead_letter in &mut out.dead_letters[dead_letters_before..] {
                dead_letter.reason.insert_str(0, origin);
            }
        }
    }
}

/// One input item into the pipeline: a record is normalized, detected and masked into `out`, an
/// unusable line becomes a dead letter. Returns the item's input line.
pub fn process_item(
    pipeline: &mut Pipeline,
    source: &str,
    tenant: &str,
    item: InputItem,
    now: chrono::DateTime<chrono::Utc>,
    out: &mut PipelineOutput,
) -> u64 {
    match item {
        InputItem::Record {
            line,
            value,
            member_lines,
        } => {
            pipeline.process_value_at(source, tenant, Some(line), &member_lines, value, now, out);
            line
        }
        InputItem::Invalid {
            line,
            reason,
            excerpt,
            digest,
        } => {
            pipeline.dead_letter(
                source,
                tenant,
                Some(line),
                &reason,
                &excerpt,
                Some(&digest),
                now,
                out,
            );
            line
        }
    }
}

/// What a submission's answer needs from before its output is stored.
struct Answer {
    /// Age of the submission's oldest event since its event time (vendor delay and backfills
    /// included: freshness).
    lag: f64,
    /// When Perimeter received its oldest event: once stored, Perimeter's own delay (what an
    /// on-call engineer acts on).
    first_received: Option<chrono::DateTime<chrono::Utc>>,
    /// The answer goes to the submission's tenant: it counts that tenant's alerts only
    /// (another tenant's, released by this batch's time, are stored all the same).
    own_alerts: std::collections::HashSet<String>,
    /// Why the source's records are stored as plain JSON (no normalizer knows its name).
    source_note: Option<String>,
    /// What the sender should know about the batch.
    warnings: Vec<String>,
    /// Its first dead letters, for the answer.
    dead_letter_lines: Vec<perimeter_ingest::bus::DeadLetterLine>,
}

impl Answer {
    fn before_store(
        pipeline: &Pipeline,
        sub: &Submission,
        out: &PipelineOutput,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Answer {
        let source_note = pipeline.registry().unnormalized_source_note(&sub.source);
        let mut warnings: Vec<String> = source_note.iter().cloned().collect();
        if out.empty_inputs > 0 {
            warnings.push(format!(
                "{} input value(s) held no record (an empty page such as `{{}}`, `[]` or `{{\"data\": []}}`): nothing was stored for them",
                out.empty_inputs
            ));
        }
        Answer {
            lag: out
                .events
                .iter()
                .map(|e| (now - e.timestamp).num_milliseconds() as f64 / 1000.0)
                .fold(0.0f64, f64::max),
            first_received: out.events.iter().map(|e| e.received_at).min(),
            own_alerts: out
                .alerts
                .iter()
                .filter(|a| a.tenant == sub.tenant)
                .map(|a| a.id.clone())
                .collect(),
            source_note,
            warnings,
            dead_letter_lines: out
                .dead_letters
                .iter()
                .take(perimeter_ingest::bus::MAX_DEAD_LETTER_LINES)
                .map(|d| perimeter_ingest::bus::DeadLetterLine {
                    line: d.line,
                    reason: d.reason.clone(),
                })
                .collect(),
        }
    }

    /// The submission's answer once the store has `result` for its output `out`; also the
    /// lag metrics and the stored alerts sent on.
    fn reply(
        self,
        sub: &Submission,
        out: &PipelineOutput,
        result: Result<WriteAck, String>,
        metrics: &Metrics,
        notifier: &AlertNotifier,
    ) -> Result<SubmitAck, String> {
        metrics.set("pipeline_lag_seconds", &[], self.lag.max(0.0));
        if let Some(received) = self.first_received {
            let processing = (chrono::Utc::now() - received).num_milliseconds() as f64;
            metrics.set(
                "pipeline_processing_lag_seconds",
                &[],
                (processing / 1000.0).max(0.0),
            );
        }
        if let Ok(ack) = &result {
            // Stored: the (masked) alerts go to their tenants' destinations.
            notify_stored(notifier, &out.alerts, ack);
        }
        let raised = self.own_alerts.len();
        let own = |ids: &[String]| {
            ids.iter()
                .filter(|id| self.own_alerts.contains(*id))
                .count()
        };
        let reply = result.map(|ack| SubmitAck {
            alerts_grouped: own(&ack.alerts_grouped),
            alerts_still_firing: ack
                .alerts_still_firing
                .iter()
                .filter(|a| a.tenant == sub.tenant)
                .count(),
            events: ack.events_written,
            duplicates: ack.events_duplicate,
            // Stored ones: a resent bad line is kept once, as a resent event is.
            dead_letters: ack.dead_letters_written,
            // Alerts already stored (the same events detected again) are not raised anew.
            alerts: raised.saturating_sub(own(&ack.alerts_known)),
            past_retention: ack.events_past_retention,
            warnings: self.warnings,
            dead_letter_lines: self.dead_letter_lines,
            // Stored here, not handed on.
            queued: 0,
        });
        if reply.is_err() {
            metrics.inc("store_batches_failed_total", &[], 1);
            metrics.set(
                "store_last_failure_timestamp_seconds",
                &[],
                chrono::Utc::now().timestamp() as f64,
            );
        }
        reply
    }
}

/// A submission of a group, detected: its output and what its answer needs.
struct GroupMember {
    sub: Submission,
    out: PipelineOutput,
    answer: Answer,
}

/// A detected group for the store stage.
struct StoreJob {
    group: Vec<GroupMember>,
    /// The correlation windows as of the group's detection, written once every submission of
    /// the group is stored and answered.
    correlations: Option<perimeter_detect::sigma::CorrelatorSnapshot>,
}

/// What the store stage reports for a job.
struct JobDone {
    /// Alerts of the submissions the store failed: stored with a later group.
    unstored_alerts: Vec<perimeter_model::Alert>,
    /// The job's correlation windows were not written (the group was not all stored, or the
    /// write failed): the next group writes them.
    correlations_not_written: bool,
}

/// The thread that stores detected groups and answers their submissions, one group at a time,
/// while the pipeline thread detects the next: detection and storing overlap, and a group is
/// handed over only when the previous one is stored, so at most one waits.
struct StoreStage {
    jobs: Option<std::sync::mpsc::SyncSender<StoreJob>>,
    done: std::sync::mpsc::Receiver<JobDone>,
    /// Jobs handed over whose report was not taken yet.
    in_flight: usize,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Alerts of groups the store failed, from the reports taken, for [`Self::take_returned`].
    returned_alerts: Vec<perimeter_model::Alert>,
    /// A report taken said its correlation windows were not written.
    correlations_not_written: bool,
}

impl StoreStage {
    fn spawn(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        notifier: AlertNotifier,
        state_dir: PathBuf,
    ) -> StoreStage {
        // Rendezvous: a job is taken only when the stage is done with the one before.
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<StoreJob>(0);
        let (done_tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                for job in job_rx {
                    let report = store_group(job, &store, &metrics, &notifier, &state_dir);
                    if done_tx.send(report).is_err() {
                        return;
                    }
                }
            })
            .expect("spawning the store thread");
        StoreStage {
            jobs: Some(jobs),
            done,
            in_flight: 0,
            thread: Some(thread),
            returned_alerts: Vec::new(),
            correlations_not_written: false,
        }
    }

    /// Hand a group over; waits while the stage stores the one before.
    fn store(&mut self, job: StoreJob) {
        let Some(jobs) = &self.jobs else { return };
        match jobs.send(job) {
            Ok(()) => self.in_flight += 1,
            // The stage is gone (it panicked): the job's submissions are dropped with it, and
            // their senders see the pipeline closed and resend.
            Err(_) => tracing::error!("the store thread is gone; the batch is not stored"),
        }
    }

    fn absorb(&mut self, report: JobDone) {
        self.in_flight -= 1;
        self.returned_alerts.extend(report.unstored_alerts);
        self.correlations_not_written |= report.correlations_not_written;
    }

    /// Take the reports of the jobs finished so far (not waiting).
    fn poll(&mut self) {
        while self.in_flight > 0 {
            match self.done.try_recv() {
                Ok(report) => self.absorb(report),
                Err(_) => return,
            }
        }
    }

    /// Whether a job handed over is still being stored.
    fn busy(&mut self) -> bool {
        self.poll();
        self.in_flight > 0
    }

    /// Wait a little for the job in the store to finish (taking its report if it does).
    fn wait_briefly(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        match self.done.recv_timeout(Duration::from_micros(500)) {
            Ok(report) => self.absorb(report),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => self.in_flight = 0,
        }
    }

    /// Wait until every job handed over is stored and answered.
    fn finish_all(&mut self) {
        while self.in_flight > 0 {
            match self.done.recv() {
                Ok(report) => self.absorb(report),
                Err(_) => self.in_flight = 0,
            }
        }
    }

    /// What the reports taken so far give back: the alerts of failed groups (into
    /// `unstored_alerts`), and whether correlation windows went unwritten (then
    /// `saved_correlations` is reset, so the next group writes them).
    fn take_returned(
        &mut self,
        unstored_alerts: &mut Vec<perimeter_model::Alert>,
        saved_correlations: &mut u64,
    ) {
        unstored_alerts.append(&mut self.returned_alerts);
        if std::mem::take(&mut self.correlations_not_written) {
            *saved_correlations = u64::MAX;
        }
    }

    fn stop(mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the store thread panicked");
            }
        }
    }
}

/// Store a group with one commit, answer each submission, then write the correlation windows
/// taken with the group if all of it is stored.
fn store_group(
    job: StoreJob,
    store: &Store,
    metrics: &Metrics,
    notifier: &AlertNotifier,
    state_dir: &std::path::Path,
) -> JobDone {
    let StoreJob {
        group,
        correlations,
    } = job;
    let (members, mut outs): (Vec<(Submission, Answer)>, Vec<PipelineOutput>) = group
        .into_iter()
        .map(|m| ((m.sub, m.answer), m.out))
        .unzip();
    // A crash between the commit and the queueing of the alerts must not lose their delivery.
    let intent_noted = notifier.intend(outs.iter().flat_map(|o| &o.alerts));
    let results = store_outputs(store, &mut outs, metrics);
    let mut unstored_alerts = Vec::new();
    let mut all_stored = true;
    for (((sub, answer), mut out), result) in members.into_iter().zip(outs).zip(results) {
        let reply = answer.reply(&sub, &out, result, metrics, notifier);
        if let Err(e) = &reply {
            all_stored = false;
            unstored_alerts.append(&mut out.alerts);
            tracing::error!(
                error = %e,
                alerts_kept_for_the_next_batch = unstored_alerts.len(),
                "batch not stored; the source will retry"
            )
        }
        let _ = sub.ack.send(reply);
    }
    if intent_noted {
        notifier.intent_met();
    }
    let mut correlations_not_written = false;
    if let Some(snapshot) = correlations {
        correlations_not_written = true;
        if all_stored {
            match perimeter_detect::pipeline::write_correlation_snapshot(
                state_dir, &snapshot, false,
            ) {
                Ok(()) => correlations_not_written = false,
                Err(e) => snapshot_failed(metrics, &e, "correlation windows"),
            }
        }
    }
    JobDone {
        unstored_alerts,
        correlations_not_written,
    }
}

/// When the detection state is written whole (fsynced): every `StateSnapshots::every`, after
/// a batch or when the ticker wakes an idle pipeline.
struct PeriodicSnapshots {
    configured: Duration,
    /// The configured interval, stretched while snapshots are slow (see [`snapshot_interval`]).
    every: Duration,
    last: Instant,
    /// The state versions of the last snapshot written.
    written: Option<((u64, u64), usize)>,
}

impl PeriodicSnapshots {
    fn new(every: Duration) -> PeriodicSnapshots {
        PeriodicSnapshots {
            configured: every,
            every,
            last: Instant::now(),
            written: None,
        }
    }

    /// Whether [`Self::save_if_due`] would look at the state now.
    fn due(&self) -> bool {
        self.last.elapsed() > self.every
    }

    fn save_if_due(
        &mut self,
        pipeline: &Pipeline,
        unstored_alerts: &[perimeter_model::Alert],
        dir: &std::path::Path,
        metrics: &Metrics,
    ) {
        if self.last.elapsed() <= self.every {
            return;
        }
        // Batches that change nothing (a source resending what is stored, lines that are all
        // dead letters) and idle wakes would rewrite the same state, hundreds of MiB when it is
        // large, every time.
        let versions = (pipeline.state_versions(), unstored_alerts.len());
        if self.written == Some(versions) {
            note_state_current(metrics);
        } else {
            let started = Instant::now();
            if save_state(pipeline, unstored_alerts, dir, metrics) {
                self.written = Some(versions);
            }
            let took = started.elapsed();
            metrics.set("state_snapshot_duration_seconds", &[], took.as_secs_f64());
            let next = snapshot_interval(self.configured, took);
            if next != self.every {
                tracing::info!(
                    took_ms = took.as_millis() as u64,
                    every_s = next.as_secs(),
                    "detection state snapshot interval adjusted to its cost"
                );
            }
            self.every = next;
        }
        self.last = Instant::now();
    }
}

/// The pipeline thread spends at most this share of its time writing periodic snapshots.
const MAX_SNAPSHOT_SHARE: u32 = 10;

/// How long to wait before the next periodic snapshot: the configured interval, or
/// [`MAX_SNAPSHOT_SHARE`] times what the last one took if that is longer. Large state is slow to
/// write (UEBA at 1M entities is most of a GB of JSON, seconds of work on the thread that also
/// answers every batch), and a fixed 30 s would then spend a quarter of the time on it.
fn snapshot_interval(every: Duration, last_took: Duration) -> Duration {
    every.max(last_took * MAX_SNAPSHOT_SHARE)
}

/// Alerts a previous run could not store (see [`save_unstored_alerts`]); none when the file is
/// missing or unusable (set aside, logged).
fn restore_unstored_alerts(dir: &std::path::Path) -> Vec<perimeter_model::Alert> {
    match perimeter_detect::pipeline::restore_unstored_alerts(dir) {
        Ok(Ok(alerts)) => alerts,
        Ok(Err((aside, reason))) => {
            tracing::error!(moved_to = %aside.display(), reason = %reason,
                "alerts a previous run could not store are unreadable; set aside");
            Vec::new()
        }
        Err(e) => {
            tracing::error!(error = %e, "alerts a previous run could not store cannot be read");
            Vec::new()
        }
    }
}

/// Snapshot the detection state, with the alerts not stored yet that it raised; whether it was
/// written. A failure is logged and counted (the service goes on, but a restart would then lose
/// the state since the last good snapshot: worth an alert).
fn save_state(
    pipeline: &Pipeline,
    unstored_alerts: &[perimeter_model::Alert],
    dir: &std::path::Path,
    metrics: &Metrics,
) -> bool {
    match write_state(pipeline, unstored_alerts, dir) {
        Ok(()) => {
            note_state_current(metrics);
            true
        }
        Err(e) => {
            snapshot_failed(metrics, &e, "detection state");
            false
        }
    }
}

/// [`save_state`] without the logging and counting: the alerts first, then the state (see
/// [`save_unstored_alerts`]); the state is not written when the alerts could not be, since
/// state that counted their events would keep a resend from raising them again.
fn write_state(
    pipeline: &Pipeline,
    unstored_alerts: &[perimeter_model::Alert],
    dir: &std::path::Path,
) -> perimeter_detect::Result<()> {
    save_unstored_alerts(dir, unstored_alerts).and_then(|()| pipeline.save_state(dir))
}

/// Start of the name of the file a shutdown that could not save the detection state leaves in
/// the state directory, for the next start to tell (see [`note_unsaved_shutdown`]).
const UNSAVED_SHUTDOWN_PREFIX: &str = "unsaved-shutdown-";

/// Leave a record in `dir` that this shutdown could not save the detection state and lost
/// `alerts_lost` alerts. An empty file with the facts in its name: a full disk, the usual
/// cause, still takes a new empty file (a name and an inode), not a byte of content.
fn note_unsaved_shutdown(dir: &std::path::Path, alerts_lost: usize) {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let path = dir.join(format!(
        "{UNSAVED_SHUTDOWN_PREFIX}{stamp}-{alerts_lost}-alerts-lost"
    ));
    if let Err(e) = std::fs::File::create(&path) {
        tracing::error!(error = %e, file = %path.display(), "cannot leave a note of the unsaved shutdown for the next start");
    }
}

/// Tell what the shutdowns [`note_unsaved_shutdown`] recorded in the state directory `dir`
/// lost, once: the notes are removed after they are logged.
pub fn report_unsaved_shutdowns(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut notes: Vec<(String, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.starts_with(UNSAVED_SHUTDOWN_PREFIX)
                .then(|| (name, e.path()))
        })
        .collect();
    notes.sort();
    for (name, path) in notes {
        let facts = name.trim_start_matches(UNSAVED_SHUTDOWN_PREFIX);
        let (at, alerts_lost) = match facts
            .strip_suffix("-alerts-lost")
            .and_then(|f| f.split_once('-'))
        {
            Some((at, n)) => (at.to_string(), n.parse::<usize>().ok()),
            None => (facts.to_string(), None),
        };
        tracing::error!(
            shutdown_at = %at,
            alerts_lost,
            "the previous shutdown could not save the detection state: {} the restored detection state (baselines, correlation windows, replay window) is older than the store, so events stored after its last snapshot are detected and counted again if resent",
            match alerts_lost {
                Some(n) => format!("{n} alert(s) neither stored nor kept were lost;"),
                None => "alerts may have been lost;".to_string(),
            }
        );
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(error = %e, file = %path.display(), "removing the note of an unsaved shutdown failed");
        }
    }
}

/// What one check of the sources found.
#[derive(Default)]
struct SilenceCheck {
    /// New silence alerts, to store and send.
    raised: Vec<perimeter_model::Alert>,
    /// Silence alerts resolved because their source sent again (stored already), to send.
    resolved: Vec<perimeter_model::Alert>,
}

/// Silence alerts for every tenant's sources quiet past the threshold, leaving out those this
/// run raised already (`raised`) and those not `wanted` (switched off); and the silences that
/// ended, resolved.
fn silent_sources(
    store: &Store,
    silence: &SourceSilence,
    raised: &mut std::collections::HashSet<String>,
    mut wanted: impl FnMut(&perimeter_model::Alert) -> bool,
) -> SilenceCheck {
    let now = chrono::Utc::now();
    let mut check = SilenceCheck::default();
    for tenant in store.tenants() {
        let sources = match store.source_activity(&tenant, now) {
            Ok(sources) => sources,
            Err(e) => {
                tracing::warn!(error = %e, %tenant, "checking for silent sources failed");
                continue;
            }
        };
        check
            .resolved
            .extend(resolve_ended_silences(store, &tenant, &sources));
        for a in &sources {
            let Some(alert) = silence.alert(&tenant, &a.source, a.newest_event, now) else {
                continue;
            };
            // A switched-off silence is not remembered: it is asked about again at the next
            // check, when the switch may have ended.
            if !raised.contains(&alert.id) && wanted(&alert) {
                raised.insert(alert.id.clone());
                check.raised.push(alert);
            }
        }
    }
    check
}

/// Resolve the tenant's open (or acknowledged) silence alerts whose source has sent again,
/// with a note saying when; recorded as changed by `perimeter`. Returns them as resolved.
fn resolve_ended_silences(
    store: &Store,
    tenant: &str,
    sources: &[perimeter_store::SourceActivity],
) -> Vec<perimeter_model::Alert> {
    use perimeter_model::AlertStatus;
    let mut unresolved = Vec::new();
    for status in [AlertStatus::Open, AlertStatus::Acknowledged] {
        let query = perimeter_store::AlertQuery {
            rule_id: Some(perimeter_detect::silence::SOURCE_SILENT_RULE_ID.to_string()),
            statuses: vec![status],
            limit: perimeter_store::MAX_PAGE_LIMIT,
            ..Default::default()
        };
        match store.list_alerts(tenant, &query) {
            Ok(page) => unresolved.extend(page.items),
            Err(e) => {
                tracing::warn!(error = %e, %tenant, "listing silence alerts failed");
                return Vec::new();
            }
        }
    }
    let mut resolved = Vec::new();
    for record in unresolved {
        let alert = &record.alert;
        let newest = sources
            .iter()
            .find(|s| s.source == alert.source)
            .map(|s| s.newest_event);
        let Some(note) = newest.and_then(|n| perimeter_detect::silence::resumed_note(alert, n))
        else {
            continue;
        };
        let update = perimeter_store::AlertUpdate {
            status: Some(AlertStatus::Resolved),
            note: Some(note),
            assignee: None,
        };
        match store.update_alert(tenant, &alert.id, &update, "perimeter") {
            Ok(updated) => {
                tracing::info!(%tenant, source = %alert.source, "a silent source sent again; its alert is resolved");
                resolved.extend(updated.map(|r| r.alert));
            }
            Err(e) => tracing::warn!(error = %e, %tenant, "resolving a silence alert failed"),
        }
    }
    resolved
}

/// A snapshot of `what` could not be written: counted (worth an alert) and logged.
fn snapshot_failed(metrics: &Metrics, error: &dyn std::fmt::Display, what: &str) {
    metrics.inc("state_snapshots_failed_total", &[], 1);
    tracing::warn!(error = %error, "{what} snapshot failed");
}

/// Store the alerts in `out` alone (kept from failed batches, or flushed at shutdown) and send
/// them; whether they were stored. If the store fails again they move to `kept`, which goes
/// into the state snapshot, and `failure` is logged.
fn store_alerts_or_keep(
    store: &Store,
    out: &mut PipelineOutput,
    metrics: &Metrics,
    notifier: &AlertNotifier,
    kept: &mut Vec<perimeter_model::Alert>,
    failure: &str,
) -> bool {
    let intent_noted = notifier.intend(&out.alerts);
    match store_output(store, out, metrics) {
        Ok(ack) => {
            notify_stored(notifier, &out.alerts, &ack);
            if intent_noted {
                notifier.intent_met();
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, alerts = out.alerts.len(), "{failure}");
            kept.append(&mut out.alerts);
            false
        }
    }
}

/// The state on disk is the state in memory as of now (written, or nothing changed since).
fn note_state_current(metrics: &Metrics) {
    metrics.set(
        "state_last_snapshot_timestamp_seconds",
        &[],
        chrono::Utc::now().timestamp() as f64,
    );
}

/// Tell the tenants' destinations what a stored batch brought: its new alerts (not those the
/// store counted into an earlier one), and earlier alerts still firing (their `count` passed a
/// tenfold with this batch).
fn notify_stored(notifier: &AlertNotifier, alerts: &[perimeter_model::Alert], ack: &WriteAck) {
    let mut new = new_alerts(alerts, ack).into_owned();
    // An alert the batch's own repeats grew goes out as stored (a burst of 40 says 40, not
    // the 10 it was raised with).
    for a in &mut new {
        if let Some(grown) = ack.alerts_grown.iter().find(|g| g.id == a.id) {
            *a = grown.clone();
        }
    }
    notifier.notify_stored(&new, &ack.alerts_still_firing);
}

/// The alerts destinations hear of: not those the store counted into an earlier alert of the
/// same rule and entity (the first of a group was sent; its repeats are in its `count`), nor
/// those it already had (sent when they were first stored).
pub fn new_alerts<'a>(
    alerts: &'a [perimeter_model::Alert],
    ack: &WriteAck,
) -> std::borrow::Cow<'a, [perimeter_model::Alert]> {
    if ack.alerts_grouped.is_empty() && ack.alerts_known.is_empty() {
        return std::borrow::Cow::Borrowed(alerts);
    }
    let told: std::collections::HashSet<&str> = ack
        .alerts_grouped
        .iter()
        .chain(&ack.alerts_known)
        .map(String::as_str)
        .collect();
    alerts
        .iter()
        .filter(|a| !told.contains(a.id.as_str()))
        .cloned()
        .collect()
}

/// Store one pipeline output; returns what the store reports.
pub fn store_output(
    store: &Store,
    out: &mut PipelineOutput,
    metrics: &Metrics,
) -> Result<WriteAck, String> {
    store_outputs(store, std::slice::from_mut(out), metrics)
        .pop()
        .unwrap_or_else(|| Ok(WriteAck::default()))
}

/// Store pipeline outputs with one commit (see [`Store::write_batches`]); what the store
/// reports for each, in order. The outputs keep their events.
pub fn store_outputs(
    store: &Store,
    outs: &mut [PipelineOutput],
    metrics: &Metrics,
) -> Vec<Result<WriteAck, String>> {
    let batches: Vec<StoreBatch> = outs
        .iter_mut()
        .map(|out| StoreBatch {
            events: std::mem::take(&mut out.events),
            alerts: out.alerts.clone(),
            dead_letters: out.dead_letters.clone(),
        })
        .collect();
    let started = Instant::now();
    let results = store.write_batches(&batches);
    if results.iter().any(|r| r.is_ok()) {
        metrics.set(
            "store_commit_latency_seconds",
            &[],
            started.elapsed().as_secs_f64(),
        );
    }
    for (out, batch) in outs.iter_mut().zip(batches) {
        out.events = batch.events;
    }
    results
        .into_iter()
        .map(|result| {
            let ack = result.map_err(|e| e.to_string())?;
            count_stored(&ack, metrics);
            Ok(ack)
        })
        .collect()
}

/// The metrics of what one stored batch brought.
fn count_stored(ack: &WriteAck, metrics: &Metrics) {
    if !ack.alerts_grouped.is_empty() {
        metrics.inc("alerts_grouped_total", &[], ack.alerts_grouped.len() as u64);
    }
    if !ack.alerts_still_firing.is_empty() {
        metrics.inc(
            "alerts_still_firing_total",
            &[],
            ack.alerts_still_firing.len() as u64,
        );
    }
    for (source, n) in &ack.events_written_by_source {
        metrics.inc("events_stored_total", &[("source", source)], *n as u64);
    }
    // Counted once stored, as events are: a resent bad line is not a new dead letter.
    for (source, n) in &ack.dead_letters_written_by_source {
        metrics.inc("dead_letters_total", &[("source", source)], *n as u64);
    }
    if ack.events_past_retention > 0 {
        metrics.inc(
            "events_past_retention_total",
            &[],
            ack.events_past_retention as u64,
        );
        tracing::warn!(
            events = ack.events_past_retention,
            "events dated before their retention window were stored; the next retention sweep \
             removes them (raise [store] retention_days or add a [[store.retention]] rule to keep \
             them)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Okta sign-in of the day before yesterday (inside the default retention).
    fn okta_record(id: &str) -> InputItem {
        let day = (chrono::Utc::now() - chrono::Duration::days(2)).format("%Y-%m-%d");
        let text = format!(
            r#"{{"uuid":"{id}","published":"{day}T08:00:00.000Z","eventType":"user.session.start","outcome":{{"result":"SUCCESS"}},"actor":{{"id":"00u1","type":"User","alternateId":"dana@acme.test"}},"client":{{"ipAddress":"198.51.100.7"}}}}"#
        );
        InputItem::Record {
            line: 1,
            value: perimeter_model::sonic_rs::from_str(&text).unwrap(),
            member_lines: Vec::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_submissions_are_stored_with_one_commit_and_answered_each() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(
            Store::open(perimeter_store::StoreConfig {
                data_dir: data.clone(),
                ..Default::default()
            })
            .unwrap(),
        );
        let pipeline = Pipeline::new(
            perimeter_detect::normalize::NormalizerRegistry::builtin(),
            perimeter_detect::mask::SecretMasker::default(),
            metrics.clone(),
            true,
        );
        let destinations = Arc::new(perimeter_query_api::DestinationStore::open_in(&data).unwrap());
        let (outbox, pending) = perimeter_query_api::DeliveryOutbox::open_in(&data).unwrap();
        let notifier = AlertNotifier::spawn(
            destinations,
            metrics.clone(),
            Duration::from_secs(1),
            Arc::new(outbox),
            pending,
        );
        let (bus, rx) = perimeter_ingest::bus::channel(16);
        let invalid = InputItem::Invalid {
            line: 3,
            reason: "not JSON".into(),
            excerpt: "{nope".into(),
            digest: "d1".into(),
        };
        // Queued before the worker runs, so it takes them together: a repeat across two of
        // them, a bad line, another tenant, and an empty wake-up.
        let submissions = [
            ("acme", vec![okta_record("a1"), okta_record("a2"), invalid]),
            ("acme", vec![okta_record("a2"), okta_record("a3")]),
            ("globex", vec![okta_record("g1")]),
            ("acme", vec![]),
        ];
        let mut answers = Vec::new();
        for (queued, (tenant, items)) in submissions.into_iter().enumerate() {
            let sender = bus.clone();
            answers.push(tokio::spawn(async move {
                sender.submit("okta", tenant, items).await
            }));
            // One at a time, so they queue in this order.
            let deadline = Instant::now() + Duration::from_secs(10);
            while bus.queued() <= queued {
                assert!(
                    Instant::now() < deadline,
                    "submission {queued} never queued"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let (_reloads, rule_reloads) = std::sync::mpsc::channel();
        let worker = spawn_pipeline_worker(
            pipeline,
            store.clone(),
            rx,
            metrics,
            StateSnapshots {
                dir: dir.path().join("state"),
                every: Duration::from_secs(30),
            },
            notifier,
            WorkerControl {
                rule_reloads,
                silence: None,
            },
        );
        let mut acks = Vec::new();
        for answer in answers {
            acks.push(answer.await.unwrap().expect("stored"));
        }
        let counts: Vec<_> = acks
            .iter()
            .map(|a| (a.events, a.duplicates, a.dead_letters))
            .collect();
        assert_eq!(counts, [(2, 0, 1), (1, 1, 0), (1, 0, 0), (0, 0, 0)]);
        drop(bus);
        let losses = tokio::task::spawn_blocking(move || worker.join().unwrap())
            .await
            .unwrap();
        assert!(losses.is_clean(), "{losses:?}");
        // One commit for the group: one Parquet file for acme's Okta day (the two submissions
        // would each have written theirs), one for globex's.
        let files = |tenant: &str| {
            let mut n = 0;
            let root = data.join(format!("parquet/events/tenant={tenant}/source=okta"));
            for day in std::fs::read_dir(&root).unwrap() {
                for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
                    n += usize::from(f.unwrap().path().extension() == Some("parquet".as_ref()));
                }
            }
            n
        };
        assert_eq!((files("acme"), files("globex")), (1, 1));
        assert_eq!(store.stats().events_stored, 4);
    }

    #[test]
    fn slow_snapshots_are_taken_less_often() {
        let every = Duration::from_secs(30);
        assert_eq!(snapshot_interval(every, Duration::from_millis(40)), every);
        assert_eq!(snapshot_interval(every, Duration::from_secs(3)), every);
        assert_eq!(
            snapshot_interval(every, Duration::from_millis(7_500)),
            Duration::from_secs(75)
        );
    }
}
