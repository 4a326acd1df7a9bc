//! The synchronous middle of Perimeter: raw records in, masked events, alerts and dead letters out.
//!
//! Order per record: split vendor envelopes -> normalize -> every detector (clear values, in
//! memory) -> mask the alerts -> mask the event (when events are kept for output). Nothing
//! leaves a [`Pipeline`] unmasked. Alerts of a rule their tenant switched off, for everyone or
//! for the alert's entity ([`RuleSwitches`]), are dropped, and counted.

use crate::mask::SecretMasker;
use crate::normalize::{split_records, split_records_indexed, NormalizerRegistry};
use crate::sigma::{CorrelationRestore, SigmaDetector};
use crate::ueba::UebaEngine;
use base64::Engine;
use chrono::{DateTime, Utc};
use perimeter_model::raw_prelude::*;
use perimeter_model::{
    Alert, DeadLetter, Detector, Event, Masker, Metrics, RawJson, RawRecord, RuleSwitches,
};
use std::sync::Arc;

/// What one call to the pipeline produced, all masked.
#[derive(Debug, Default)]
pub struct PipelineOutput {
    pub events: Vec<Event>,
    pub alerts: Vec<Alert>,
    pub dead_letters: Vec<DeadLetter>,
    /// Input values that held no record at all (an empty page: `[]`, `{}`, `{"data": []}`):
    /// neither events nor dead letters, so the sender is told of them this way.
    pub empty_inputs: usize,
}

impl PipelineOutput {
    pub fn clear(&mut self) {
        self.events.clear();
        self.alerts.clear();
        self.dead_letters.clear();
        self.empty_inputs = 0;
    }
}

/// Counters over the pipeline's life (for the CLI summary).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PipelineStats {
    pub records: u64,
    pub events: u64,
    pub alerts: u64,
    /// Alerts dropped because their tenant switched their rule off.
    pub alerts_switched_off: u64,
    pub dead_letters: u64,
    pub values_masked: u64,
    /// Events seen again within the replay window (same id): passed on, not detected twice.
    pub replayed: u64,
    /// Events whose vendor timestamp could not be true and was replaced by the receive time
    /// ([`Event::new`]).
    pub timestamps_adjusted: u64,
    /// Inputs (a record, or a page of them) with an object that repeated a key: each such key
    /// kept its last value only ([`perimeter_model::resolve_repeated_keys`]). Rare in vendor
    /// output, so worth a look: a record can be crafted to show rules one value and people another.
    pub inputs_with_repeated_keys: u64,
}

/// How many recent events a pipeline remembers by default (8 bytes each, plus the set).
pub const DEFAULT_REPLAY_WINDOW: usize = 1_000_000;

/// Fingerprints of recently seen events. A source that got no acknowledgement resends its batch;
/// the store drops the events it already holds (by id), and the detectors must not count them
/// again either (a resent batch of failed logins would otherwise double a burst and raise a false
/// alert). Bounded: the oldest are forgotten first.
///
/// Keyed by [`Event::fingerprint`] under a secret key rather than by the event id: the same
/// content gives the same fingerprint, at a fraction of the id's cost (the `detect` command never
/// needs most ids), and input cannot be crafted to collide with other input without the key.
/// With a configured mask key the key is derived from it, so the window can be snapshotted with
/// the detection state and a resend after a restart is still known (the baselines in the same
/// snapshot counted it). With the built-in (public) mask key the key is random per process and
/// the window is not snapshotted: a public key would let input be crafted to pass for a resend.
#[derive(Debug)]
struct RecentEvents {
    set: std::collections::HashSet<u64>,
    order: std::collections::VecDeque<u64>,
    capacity: usize,
    hasher: foldhash::quality::SeedableRandomState,
    /// Set when the key is derived from a configured mask key: the window's snapshot check.
    key_check: Option<String>,
    /// Events remembered so far (a version number for snapshots).
    inserted: u64,
}

/// Format tag of the replay window snapshot.
const REPLAY_FORMAT: &str = "perimeter-replay/1";

/// The replay window on disk ([`REPLAY_SNAPSHOT`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaySnapshot {
    format: String,
    /// A one-way function of the window's key: a snapshot taken under another key is unusable.
    key_check: String,
    /// The remembered fingerprints, oldest first, 8 bytes little-endian each, base64.
    fingerprints: String,
}

impl RecentEvents {
    fn new(capacity: usize, masker: &SecretMasker) -> RecentEvents {
        let (hasher, key_check) = if masker.uses_builtin_key() {
            (foldhash::quality::SeedableRandomState::random(), None)
        } else {
            let material = derived_key(masker, "perimeter replay window key");
            let mut seed = [0u8; 8];
            seed.copy_from_slice(&material[..8]);
            let check = blake3::hash(&material).to_hex()[..16].to_string();
            (
                foldhash::quality::SeedableRandomState::with_seed(
                    u64::from_le_bytes(seed),
                    foldhash::SharedSeed::global_fixed(),
                ),
                Some(check),
            )
        };
        RecentEvents {
            set: Default::default(),
            order: Default::default(),
            capacity,
            hasher,
            key_check,
            inserted: 0,
        }
    }

    /// Remember `event`; false when the same content was already remembered.
    fn insert(&mut self, event: &Event) -> bool {
        if self.capacity == 0 {
            return true;
        }
        // Per tenant: another tenant's identical record (one trail delivered to two tenants, a
        // test replay for a new tenant) is that tenant's first sight of it.
        let key = std::hash::BuildHasher::hash_one(
            &self.hasher,
            (event.fingerprint(&self.hasher), event.tenant.as_str()),
        );
        self.remember(key)
    }

    fn remember(&mut self, key: u64) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.inserted += 1;
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// The window as a snapshot; `None` when its key is not stable across restarts.
    fn snapshot(&self) -> Option<ReplaySnapshot> {
        let key_check = self.key_check.clone()?;
        let mut bytes = Vec::with_capacity(self.order.len() * 8);
        for k in &self.order {
            bytes.extend_from_slice(&k.to_le_bytes());
        }
        Some(ReplaySnapshot {
            format: REPLAY_FORMAT.into(),
            key_check,
            fingerprints: base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    }

    /// Remember the fingerprints of `snapshot` (the newest `capacity` of them); how many.
    fn restore(&mut self, snapshot: ReplaySnapshot) -> Result<usize, String> {
        if snapshot.format != REPLAY_FORMAT {
            return Err(format!(
                "format `{}`, expected `{REPLAY_FORMAT}`",
                snapshot.format
            ));
        }
        if self.key_check.as_deref() != Some(snapshot.key_check.as_str()) {
            return Err("taken under another mask key".into());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(snapshot.fingerprints.as_bytes())
            .map_err(|e| format!("fingerprints: {e}"))?;
        if bytes.len() % 8 != 0 {
            return Err("fingerprints: not a whole number of 8-byte values".into());
        }
        let all: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let newest = &all[all.len().saturating_sub(self.capacity)..];
        let before = self.order.len();
        for k in newest {
            self.remember(*k);
        }
        Ok(self.order.len() - before)
    }
}

/// Longest excerpt of rejected input kept in a dead letter.
const DEAD_LETTER_EXCERPT_CHARS: usize = 256;

pub struct Pipeline {
    registry: NormalizerRegistry,
    masker: SecretMasker,
    sigma: Option<SigmaDetector>,
    ueba: Option<UebaEngine>,
    metrics: Arc<Metrics>,
    keep_events: bool,
    stats: PipelineStats,
    scratch_alerts: Vec<Alert>,
    recent: RecentEvents,
    switches: Option<Arc<RuleSwitches>>,
    /// The correlator's late-event count already added to the metrics.
    late_reported: u64,
    /// The correlator's evicted-key count already added to the metrics.
    corr_evicted_reported: u64,
    /// The correlator's count of events dated ahead of receipt already added to the metrics.
    dated_ahead_reported: u64,
    /// UEBA's (idle, at capacity) evicted-entity counts already added to the metrics.
    ueba_evicted_reported: (u64, u64),
    /// The replayed-event count already added to the metrics.
    replayed_reported: u64,
}

impl Pipeline {
    /// `keep_events`: whether masked events are returned (the store wants them; `detect` does not).
    pub fn new(
        registry: NormalizerRegistry,
        masker: SecretMasker,
        metrics: Arc<Metrics>,
        keep_events: bool,
    ) -> Pipeline {
        let recent = RecentEvents::new(DEFAULT_REPLAY_WINDOW, &masker);
        Pipeline {
            registry,
            masker,
            sigma: None,
            ueba: None,
            metrics,
            keep_events,
            stats: PipelineStats::default(),
            scratch_alerts: Vec::new(),
            recent,
            switches: None,
            late_reported: 0,
            corr_evicted_reported: 0,
            dated_ahead_reported: 0,
            ueba_evicted_reported: (0, 0),
            replayed_reported: 0,
        }
    }

    /// Drop the alerts of rules their tenant switched off, for everyone or for the alert's
    /// entity (read at every alert, so a change applies from the next alert on).
    pub fn with_rule_switches(mut self, switches: Arc<RuleSwitches>) -> Pipeline {
        self.switches = Some(switches);
        self
    }

    /// Remember this many recent event ids so a resent event is not detected twice (0: off).
    pub fn with_replay_window(mut self, num_ids: usize) -> Pipeline {
        self.recent = RecentEvents::new(num_ids, &self.masker);
        self
    }

    /// Run Sigma rules and correlations.
    pub fn with_sigma(mut self, mut sigma: SigmaDetector) -> Pipeline {
        sigma.set_state_key(correlation_key(&self.masker));
        self.sigma = Some(sigma);
        self
    }

    /// Run the behavioural detectors.
    pub fn with_ueba(mut self, ueba: UebaEngine) -> Pipeline {
        self.ueba = Some(ueba);
        self
    }

    /// Snapshot detection state into `dir`: behavioural baselines ([`UEBA_SNAPSHOT`], with UEBA)
    /// and open correlation windows ([`CORRELATION_SNAPSHOT`], with Sigma rules). Keys in them
    /// are keyed hashes; the entities kept for windows that close later are masked.
    ///
    /// With a configured mask key, the replay window goes with them ([`REPLAY_SNAPSHOT`]): the
    /// events the baselines in this snapshot counted, so that a source resending them after a
    /// restart does not have them counted twice.
    pub fn save_state(&self, dir: &std::path::Path) -> crate::Result<()> {
        if let Some(u) = &self.ueba {
            u.snapshot_to(&dir.join(UEBA_SNAPSHOT))?;
        }
        if let Some(replay) = self.recent.snapshot() {
            crate::state_file::write_json(
                &dir.join(REPLAY_SNAPSHOT),
                "replay window snapshot",
                &replay,
                true,
            )?;
        }
        self.save_correlations(dir, true)
    }

    /// Remember again the events [`Pipeline::save_state`] wrote into `dir` as seen (the replay
    /// window); how many. No snapshot, or a built-in mask key: nothing. A snapshot that cannot be
    /// used (malformed, another format, another mask key) is set aside as
    /// `<name>.unreadable-<UTC time>` and returned as `Err((where, why))`; failing to read the
    /// file is an error.
    pub fn restore_replay_window(
        &mut self,
        dir: &std::path::Path,
    ) -> crate::Result<Result<usize, (std::path::PathBuf, String)>> {
        let path = dir.join(REPLAY_SNAPSHOT);
        if self.recent.key_check.is_none() || !path.exists() {
            return Ok(Ok(0));
        }
        crate::state_file::restore_state(&path, "replay window snapshot", |snapshot| {
            self.recent.restore(snapshot)
        })
    }

    /// Snapshot the open correlation windows alone ([`CORRELATION_SNAPSHOT`] in `dir`); with
    /// `durable` false the file is not fsynced (it survives the process being killed, not the
    /// machine losing power). Cheap when few windows are open: a service writes it after every
    /// stored batch, so a `kill -9` loses at most the batch in flight.
    pub fn save_correlations(&self, dir: &std::path::Path, durable: bool) -> crate::Result<()> {
        match self.correlation_snapshot() {
            Some(snapshot) => write_correlation_snapshot(dir, &snapshot, durable),
            None => Ok(()),
        }
    }

    /// The open correlation windows as of now, as [`Pipeline::save_correlations`] writes them
    /// (`None` without rules): taken here, written later with [`write_correlation_snapshot`]
    /// (once the events they counted are stored, while the pipeline goes on).
    pub fn correlation_snapshot(&self) -> Option<crate::sigma::CorrelatorSnapshot> {
        self.sigma
            .as_ref()
            .map(|sigma| sigma.correlation_snapshot(&|text| self.masker.mask_text(text)))
    }

    /// Numbers that change whenever the detection state may have changed (behavioural state:
    /// the events it has seen, plus the events the replay window remembered; correlation windows:
    /// [`Pipeline::correlation_state`]). Equal numbers mean a snapshot written since would be the
    /// same file.
    pub fn state_versions(&self) -> (u64, u64) {
        // Both only grow, so their sum changes whenever either does.
        let ueba = self
            .ueba
            .as_ref()
            .map_or(0, |u| u.stats().events_seen_total);
        (ueba + self.recent.inserted, self.correlation_state().1)
    }

    /// Open correlation windows (group-by keys held) and a number that changes whenever they may
    /// have changed: whether [`Pipeline::save_correlations`] has anything new to write.
    pub fn correlation_state(&self) -> (usize, u64) {
        self.sigma.as_ref().map_or((0, 0), |s| {
            (s.correlation_keys(), s.correlation_state_version())
        })
    }

    /// Reopen the correlation windows [`Pipeline::save_state`] wrote into `dir`, for the
    /// correlations whose rule file is unchanged. No snapshot: nothing restored. A snapshot that
    /// cannot be used (malformed, another format, another mask key) is set aside as
    /// `<name>.unreadable-<UTC time>` and reported in [`StateRestore::set_aside`]; failing to
    /// read the file (permissions, IO) is an error.
    pub fn restore_correlations(&mut self, dir: &std::path::Path) -> crate::Result<StateRestore> {
        let path = dir.join(CORRELATION_SNAPSHOT);
        let Some(sigma) = self.sigma.as_mut().filter(|_| path.exists()) else {
            return Ok(StateRestore::default());
        };
        let restored =
            crate::state_file::restore_state(&path, "correlation snapshot", |snapshot| {
                sigma.restore_correlations(snapshot)
            })?;
        Ok(match restored {
            Ok(restored) => StateRestore {
                restored,
                set_aside: None,
            },
            Err(aside) => StateRestore {
                restored: CorrelationRestore::default(),
                set_aside: Some(aside),
            },
        })
    }

    fn detectors(&mut self) -> impl Iterator<Item = &mut dyn Detector> {
        let s = self.sigma.as_mut().map(|d| d as &mut dyn Detector);
        let u = self.ueba.as_mut().map(|d| d as &mut dyn Detector);
        s.into_iter().chain(u)
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// Events the Sigma correlations did not count because they came later than the allowed
    /// lateness (older than the newest of their source by more): a summary must say so.
    pub fn late_events_dropped(&self) -> u64 {
        self.sigma
            .as_ref()
            .map_or(0, SigmaDetector::late_events_dropped)
    }

    /// Events dated more than the allowed lateness after their receipt: counted in their own
    /// correlation windows, but not trusted to move their stream's watermark.
    pub fn events_dated_ahead(&self) -> u64 {
        self.sigma
            .as_ref()
            .map_or(0, SigmaDetector::events_dated_ahead)
    }

    pub fn registry(&self) -> &NormalizerRegistry {
        &self.registry
    }

    pub fn masker(&self) -> &SecretMasker {
        &self.masker
    }

    /// Process one parsed input value: a single record, a vendor page/envelope holding many, or a
    /// Perimeter envelope `{"source": "okta", "event": {...}}` (honoured when `source` is `auto`).
    pub fn process_value(
        &mut self,
        source: &str,
        tenant: &str,
        line: Option<u64>,
        value: RawJson,
        received_at: DateTime<Utc>,
        out: &mut PipelineOutput,
    ) {
        self.process_value_at(source, tenant, line, &[], value, received_at, out)
    }

    /// [`Self::process_value`] for a value whose top-level array members' elements start on
    /// known lines (`member_lines`, a pretty-printed page): the records of its envelope are
    /// each given the line of the list element they came from (the events of one Google
    /// Workspace activity share their activity's line).
    #[allow(clippy::too_many_arguments)]
    pub fn process_value_at(
        &mut self,
        source: &str,
        tenant: &str,
        line: Option<u64>,
        member_lines: &[(String, Vec<u64>)],
        value: RawJson,
        received_at: DateTime<Utc>,
        out: &mut PipelineOutput,
    ) {
        // Before anything reads it (the envelope and page keys too): a repeated key has its last
        // value everywhere from here on, the store's copy included.
        let mut value = value;
        if perimeter_model::resolve_repeated_keys(&mut value) {
            self.stats.inputs_with_repeated_keys += 1;
            self.metrics.inc("inputs_with_repeated_keys_total", &[], 1);
        }
        let (source, tenant, value) = unwrap_perimeter_envelope(source, tenant, value);
        let (list_key, records) = if member_lines.is_empty() {
            let records = split_records(&source, value);
            (None, records.into_iter().map(|r| (None, r)).collect())
        } else {
            split_records_indexed(&source, value)
        };
        if records.is_empty() {
            out.empty_inputs += 1;
        }
        let envelope_lines = list_key
            .and_then(|key| member_lines.iter().find(|(k, _)| k == key))
            .map(|(_, lines)| lines);
        let count = records.len();
        for (index, (element, raw)) in records.into_iter().enumerate() {
            let line = element
                .and_then(|i| envelope_lines.and_then(|each| each.get(i)))
                .copied()
                .or(line);
            self.stats.records += 1;
            match self.registry.normalize_ecs(&source, &raw) {
                Ok((name, ecs)) => {
                    let record = RawRecord {
                        source: name.to_string(),
                        tenant: tenant.clone(),
                        received_at,
                        line,
                        raw,
                    };
                    let event = Event::new(name, record, ecs);
                    self.process_event(event, out);
                }
                Err(err) => {
                    let mut raw = raw;
                    self.masker.mask_record(&mut raw);
                    let excerpt = sonic_rs::to_string(&raw).unwrap_or_default();
                    // Records of one input (an array, a page) share its line: which one.
                    let reason = if count > 1 {
                        format!(
                            "{source} normalizer: record {} of {count}: {err}",
                            index + 1
                        )
                    } else {
                        match crate::normalize::unwrapped_page_hint(&raw) {
                            Some(hint) => format!("{source} normalizer: {err} ({hint})"),
                            None => format!("{source} normalizer: {err}"),
                        }
                    };
                    self.dead_letter(
                        &source,
                        &tenant,
                        line,
                        &reason,
                        &excerpt,
                        None,
                        received_at,
                        out,
                    );
                }
            }
        }
    }

    /// Run detectors on a normalized event (unless it was seen within the replay window), then
    /// mask it and its alerts.
    pub fn process_event(&mut self, mut event: Event, out: &mut PipelineOutput) {
        let mut alerts = std::mem::take(&mut self.scratch_alerts);
        alerts.clear();
        if event.timestamp_adjusted {
            self.stats.timestamps_adjusted += 1;
            self.metrics.inc(
                "events_timestamp_adjusted_total",
                &[("source", &event.source)],
                1,
            );
        }
        if self.recent.insert(&event) {
            for d in self.detectors() {
                d.detect(&event, &mut alerts);
            }
        } else {
            self.stats.replayed += 1;
        }
        if !alerts.is_empty() {
            mask_quoted_values(&self.masker, &event, &mut alerts);
        }
        self.scratch_alerts = alerts;
        self.stats.events += 1;
        self.drain_alerts(out);
        // Masking is what makes an event fit to leave memory. An event that is not kept (the
        // `detect` command prints alerts only) is dropped right here, so masking it would be
        // work without effect; its alerts were masked above.
        if self.keep_events {
            let masked = self.masker.mask(&mut event);
            self.stats.values_masked += masked.total();
            out.events.push(event);
        }
    }

    /// Record input that could not be used. The excerpt is masked and bounded here.
    /// `clear_digest`: a digest the reader took of the whole input in clear (its excerpt is
    /// cut, see `perimeter_ingest::InputItem::Invalid`); it is stored keyed with the masking
    /// key, never as it is. Without one, the digest is of the masked `excerpt`.
    #[allow(clippy::too_many_arguments)]
    pub fn dead_letter(
        &mut self,
        source: &str,
        tenant: &str,
        line: Option<u64>,
        reason: &str,
        excerpt: &str,
        clear_digest: Option<&str>,
        received_at: DateTime<Utc>,
        out: &mut PipelineOutput,
    ) {
        // Mask first, then bound: cutting first could split a secret so its pattern no longer matches.
        let masked = self.masker.mask_excerpt(excerpt);
        let bounded: String = masked.chars().take(DEAD_LETTER_EXCERPT_CHARS).collect();
        let digest = match clear_digest {
            Some(clear) => DeadLetter::digest_of(&self.masker.pseudonymize(clear)),
            None => DeadLetter::digest_of(&masked),
        };
        self.stats.dead_letters += 1;
        out.dead_letters.push(DeadLetter {
            line,
            source: source.to_string(),
            tenant: tenant.to_string(),
            received_at,
            reason: self.masker.mask_text(reason),
            excerpt: bounded,
            input_digest: Some(digest),
        });
    }

    /// Swap in newly loaded Sigma rules (a reload while running). Correlations whose rule file
    /// and the files of the rules they read did not change keep their open windows; the old rules' other correlations first emit
    /// what waits on their windows, as at the end of input, and their new versions start empty.
    /// Behavioural baselines are kept. Returns how many correlations kept their windows.
    pub fn replace_sigma(&mut self, mut sigma: SigmaDetector, out: &mut PipelineOutput) -> usize {
        sigma.set_state_key(correlation_key(&self.masker));
        let mut kept = 0;
        if let Some(mut old) = self.sigma.take() {
            kept = sigma.adopt_correlations(&mut old);
            let mut alerts = std::mem::take(&mut self.scratch_alerts);
            alerts.clear();
            old.flush(&mut alerts);
            self.scratch_alerts = alerts;
            self.drain_alerts(out);
        }
        self.sigma = Some(sigma);
        // The new rules' correlator counts from zero.
        self.late_reported = 0;
        self.corr_evicted_reported = 0;
        self.dated_ahead_reported = 0;
        kept
    }

    /// End of input: let detectors emit what waits on open windows.
    pub fn finish(&mut self, out: &mut PipelineOutput) {
        let mut alerts = std::mem::take(&mut self.scratch_alerts);
        alerts.clear();
        for d in self.detectors() {
            d.flush(&mut alerts);
        }
        self.scratch_alerts = alerts;
        self.drain_alerts(out);
    }

    /// A service stopping to start again: unlike [`Pipeline::finish`] (end of input), open
    /// correlation windows are not closed. They go into the state snapshot
    /// ([`Pipeline::save_state`]) and close by event time after the restart, so a window that
    /// spans the restart is neither cut short nor reported twice. Behavioural detectors flush
    /// as at the end of input.
    pub fn suspend(&mut self, out: &mut PipelineOutput) {
        let mut alerts = std::mem::take(&mut self.scratch_alerts);
        alerts.clear();
        if let Some(ueba) = self.ueba.as_mut() {
            ueba.flush(&mut alerts);
        }
        self.scratch_alerts = alerts;
        self.drain_alerts(out);
    }

    /// Publish the detection state's gauges and counters (open correlation windows, tracked
    /// entities, evictions, late events): once per batch, and at the start, so that a service
    /// that restored its state shows it before the first batch (QA: the series were absent
    /// until then, which alerting rules read as "no data").
    pub fn publish_state_metrics(&mut self) {
        let m = &self.metrics;
        // Events that came later than the allowed lateness of their stream are left out of
        // correlations: missed detections an on-call engineer must be able to see.
        if let Some(sigma) = &self.sigma {
            count_growth(
                m,
                "correlation_late_events_total",
                &[],
                sigma.late_events_dropped(),
                &mut self.late_reported,
            );
            // Records dated ahead of their receipt (a clock ahead, a forged time): not allowed
            // to make their stream's other events late, but worth a look when it grows.
            count_growth(
                m,
                "correlation_events_dated_ahead_total",
                &[],
                sigma.events_dated_ahead(),
                &mut self.dated_ahead_reported,
            );
            // How much detection state a restart must carry over (and memory it holds).
            m.set(
                "correlation_open_windows",
                &[],
                sigma.correlation_keys() as f64,
            );
            // Windows dropped at `max_correlation_keys`: detections possibly missed, silently
            // unless counted.
            count_growth(
                m,
                "correlation_keys_evicted_total",
                &[],
                sigma.correlation_keys_evicted(),
                &mut self.corr_evicted_reported,
            );
        }
        if let Some(ueba) = &self.ueba {
            m.set("ueba_tracked_entities", &[], ueba.tracked_entities() as f64);
            let stats = ueba.stats();
            let capacity = stats.entities_evicted_at_capacity_total;
            let (idle_reported, capacity_reported) = &mut self.ueba_evicted_reported;
            count_growth(
                m,
                "ueba_entities_evicted_total",
                &[("reason", "idle")],
                stats.entities_evicted_total.saturating_sub(capacity),
                idle_reported,
            );
            count_growth(
                m,
                "ueba_entities_evicted_total",
                &[("reason", "capacity")],
                capacity,
                capacity_reported,
            );
        }
    }

    /// Publish per-batch counters (cheap: once per batch, not per event).
    pub fn publish_metrics(&mut self, source: &str, out: &PipelineOutput) {
        self.publish_state_metrics();
        let m = &self.metrics;
        // Events seen again within the replay window (a client's resend, a spool file retried
        // while the store failed) were counted when first received (QA: each retry counted a
        // file's records again): counted apart, as what they are.
        let replayed = self.stats.replayed.saturating_sub(self.replayed_reported);
        self.replayed_reported = self.stats.replayed;
        let replayed = replayed.min(out.events.len() as u64);
        m.inc(
            "events_received_total",
            &[("source", source)],
            out.events.len() as u64 - replayed,
        );
        m.inc("events_replayed_total", &[("source", source)], replayed);
        // A vendor that changes its format (a field renamed) makes normalization come out empty
        // and the rules and baselines on those fields go quiet without an error: counted per
        // source, the share of events with no actor or no action shows the drift. (Sources read
        // as plain JSON, without a normalizer, have neither, by design.)
        let (mut unattributed, mut no_action) = (0, 0);
        for e in &out.events {
            let ecs = &e.ecs;
            if ecs.user_name.is_none()
                && ecs.user_email.is_none()
                && ecs.user_id.is_none()
                && ecs.source_ip.is_none()
            {
                unattributed += 1;
            }
            if ecs.event_action.is_none() {
                no_action += 1;
            }
        }
        m.inc(
            "events_unattributed_total",
            &[("source", source)],
            unattributed,
        );
        m.inc(
            "events_without_action_total",
            &[("source", source)],
            no_action,
        );
        for a in &out.alerts {
            m.inc("alerts_total", &[("rule", &a.rule_id)], 1);
        }
    }

    fn drain_alerts(&mut self, out: &mut PipelineOutput) {
        // Taken out for the loop (it asks `self` about switches) and put back: its buffer is
        // reused batch after batch.
        let mut alerts = std::mem::take(&mut self.scratch_alerts);
        for mut alert in alerts.drain(..) {
            mask_alert(&self.masker, &mut alert);
            // After masking: a switch names the entity as alerts show it.
            if self.switched_off(&alert) {
                continue;
            }
            self.stats.alerts += 1;
            out.alerts.push(alert);
        }
        self.scratch_alerts = alerts;
    }

    /// Whether the tenant switched the alert's rule off (for everyone or for its entity), as
    /// of now; counted when it did. For alerts raised outside the pipeline (source silence)
    /// too, so one switch list governs every alert.
    pub fn switched_off(&mut self, alert: &Alert) -> bool {
        let Some(switches) = &self.switches else {
            return false;
        };
        if !switches.drops(&alert.tenant, &alert.rule_id, &alert.entity, Utc::now()) {
            return false;
        }
        self.stats.alerts_switched_off += 1;
        self.metrics
            .inc("alerts_switched_off_total", &[("rule", &alert.rule_id)], 1);
        true
    }
}

/// Add to counter `name` what `total`, a detector's running count, grew by since `reported`.
fn count_growth(m: &Metrics, name: &str, labels: &[(&str, &str)], total: u64, reported: &mut u64) {
    m.inc(name, labels, total.saturating_sub(*reported));
    *reported = total;
}

/// File name of the behavioural state snapshot in a state directory.
pub const UEBA_SNAPSHOT: &str = "ueba.snapshot";
/// File name of the open correlation windows snapshot in a state directory.
pub const CORRELATION_SNAPSHOT: &str = "correlation.snapshot";
/// File name of the replay window snapshot in a state directory.
pub const REPLAY_SNAPSHOT: &str = "replay.snapshot";

/// File name, in a state directory, of alerts raised by batches the store failed to write and
/// not stored since (see [`save_unstored_alerts`]).
pub const UNSTORED_ALERTS: &str = "unstored-alerts.json";
/// Format tag of [`UNSTORED_ALERTS`].
const UNSTORED_ALERTS_FORMAT: &str = "perimeter-unstored-alerts/1";

/// [`UNSTORED_ALERTS`] on disk; borrows the alerts when written.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UnstoredAlerts<'a> {
    format: String,
    alerts: std::borrow::Cow<'a, [Alert]>,
}

/// Write a correlation snapshot ([`Pipeline::correlation_snapshot`]) where
/// [`Pipeline::restore_correlations`] reads it.
pub fn write_correlation_snapshot(
    dir: &std::path::Path,
    snapshot: &crate::sigma::CorrelatorSnapshot,
    durable: bool,
) -> crate::Result<()> {
    crate::state_file::write_binary(
        &dir.join(CORRELATION_SNAPSHOT),
        "correlation snapshot",
        snapshot,
        durable,
    )
}

/// Keep `alerts` (masked: they come out of a pipeline) in `dir` until they are stored, or remove
/// the file when there are none. They belong with the detection state saved at the same time:
/// that state has counted the events that raised them, so a resend of those events after a
/// restart is not detected again, and these alerts would otherwise be lost with the process.
/// Written before the state, so a crash between the two leaves alerts that the older state
/// raises again on a resend: stored twice under one id, which the store keeps once.
pub fn save_unstored_alerts(dir: &std::path::Path, alerts: &[Alert]) -> crate::Result<()> {
    let path = dir.join(UNSTORED_ALERTS);
    if alerts.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(crate::DetectError::Write { path, cause: e })
            }
            _ => Ok(()),
        };
    }
    let file = UnstoredAlerts {
        format: UNSTORED_ALERTS_FORMAT.into(),
        alerts: std::borrow::Cow::Borrowed(alerts),
    };
    crate::state_file::write_json(&path, "unstored alerts", &file, true)
}

/// The alerts [`save_unstored_alerts`] kept in `dir` (none without a file). A file that cannot
/// be used is set aside as `<name>.unreadable-<UTC time>` and returned as `Err((where, why))`.
pub fn restore_unstored_alerts(
    dir: &std::path::Path,
) -> crate::Result<Result<Vec<Alert>, (std::path::PathBuf, String)>> {
    let path = dir.join(UNSTORED_ALERTS);
    if !path.exists() {
        return Ok(Ok(Vec::new()));
    }
    crate::state_file::restore_state(&path, "unstored alerts", |file: UnstoredAlerts| {
        if file.format != UNSTORED_ALERTS_FORMAT {
            return Err(format!(
                "format `{}`, expected `{UNSTORED_ALERTS_FORMAT}`",
                file.format
            ));
        }
        Ok(file.alerts.into_owned())
    })
}

/// What [`Pipeline::restore_correlations`] did.
#[derive(Debug, Default)]
pub struct StateRestore {
    pub restored: CorrelationRestore,
    /// Where an unusable snapshot was moved, and why it could not be used.
    pub set_aside: Option<(std::path::PathBuf, String)>,
}

/// The key of the correlation state's hashes: derived from the mask key, so it is stable across
/// restarts, secret, and changes (making old snapshots unusable) when the mask key does.
pub fn correlation_key(masker: &SecretMasker) -> [u8; 16] {
    let mut key = [0u8; 16];
    key.copy_from_slice(&derived_key(masker, "perimeter correlation state key")[..16]);
    key
}

/// A key for `purpose` derived from the masker's HMAC key: as secret as that key, stable across
/// restarts of the same deployment, and different per purpose.
fn derived_key(masker: &SecretMasker, purpose: &str) -> [u8; 32] {
    *blake3::hash(masker.pseudonymize(purpose).as_bytes()).as_bytes()
}

/// The key of event and alert ids ([`perimeter_model::key_ids`]): derived from the masker's HMAC
/// key when it is the deployment's own. With the built-in key, which is public, keying them would
/// hide nothing, so ids stay as they were (and as stores written that way hold them).
pub fn id_key(masker: &SecretMasker) -> Option<[u8; 32]> {
    (!masker.uses_builtin_key()).then(|| masker.derive_key("perimeter event and alert id key"))
}

/// The key behavioural state is pseudonymized with: derived from the masker's HMAC key, so it is
/// as secret as that key and stable across restarts of the same deployment.
pub fn entity_key(masker: &SecretMasker) -> [u8; 32] {
    derived_key(masker, "perimeter ueba entity key")
}

/// The values masking changes in `event`'s raw record, each in clear and as the masked event
/// has it, longest first (a secret inside another is replaced as part of the longer).
pub fn masked_values(masker: &SecretMasker, event: &Event) -> Vec<(String, String)> {
    if !masker.raw_needs_masking(&event.raw) {
        return Vec::new();
    }
    let mut masked = event.raw.clone();
    masker.mask_record(&mut masked);
    let mut out = Vec::new();
    changed_leaves(&event.raw, Some(&masked), &mut out);
    out.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

/// The leaves of `clear` that differ in `masked` (the same record masked: the same shape, keys
/// in the same order), in clear and masked. Where the shapes part (`masked` is `None` below
/// there), every leaf of `clear` counts as changed: fail closed.
fn changed_leaves(clear: &RawJson, masked: Option<&RawJson>, out: &mut Vec<(String, String)>) {
    use perimeter_model::raw_prelude::*;
    let text = |v: &RawJson| match v.as_ref() {
        ValueRef::String(s) => Some(s.to_string()),
        ValueRef::Number(_) => sonic_rs::to_string(v).ok(),
        _ => None,
    };
    match (clear.as_ref(), masked.map(|m| m.as_ref())) {
        (ValueRef::Object(c), Some(ValueRef::Object(m))) if c.len() == m.len() => {
            for ((_, cv), (_, mv)) in c.iter().zip(m.iter()) {
                changed_leaves(cv, Some(mv), out);
            }
        }
        (ValueRef::Array(c), Some(ValueRef::Array(m))) if c.len() == m.len() => {
            for (cv, mv) in c.iter().zip(m.iter()) {
                changed_leaves(cv, Some(mv), out);
            }
        }
        (ValueRef::Object(c), _) => {
            for (_, cv) in c.iter() {
                changed_leaves(cv, None, out);
            }
        }
        (ValueRef::Array(c), _) => {
            for cv in c.iter() {
                changed_leaves(cv, None, out);
            }
        }
        _ => {
            let Some(clear_text) = text(clear).filter(|t| !t.is_empty()) else {
                return;
            };
            let masked_text = masked.and_then(text);
            if masked_text.as_deref() != Some(clear_text.as_str()) {
                let masked_text = masked_text.unwrap_or_else(|| "[REDACTED]".to_string());
                out.push((clear_text, masked_text));
            }
        }
    }
}

/// Values shorter than this are replaced in an alert's texts only where they are the whole
/// text: a short secret (`1234`) would otherwise cut into unrelated words and numbers.
const MIN_QUOTED_SECRET_LEN: usize = 6;

/// `text` with each of `values` (from [`masked_values`]) in it replaced by its masked form:
/// the whole text when it is one, else where it occurs in it.
pub fn with_values_masked(text: &str, values: &[(String, String)]) -> Option<String> {
    if let Some((_, masked)) = values.iter().find(|(clear, _)| clear == text) {
        return Some(masked.clone());
    }
    let mut out: Option<String> = None;
    for (clear, masked) in values {
        let current = out.as_deref().unwrap_or(text);
        if clear.len() >= MIN_QUOTED_SECRET_LEN && current.contains(clear.as_str()) {
            out = Some(current.replace(clear.as_str(), masked));
        }
    }
    out
}

/// `text` that quotes values of `event` (as JSON, `"..."`: `rules explain`), masked for
/// output: each value masking changes in the event as the masked event has it, whatever its
/// length, then whatever else masking finds in the text.
pub fn mask_event_quotes(masker: &SecretMasker, event: &Event, text: &str) -> String {
    let mut text = text.to_string();
    for (clear, masked) in masked_values(masker, event) {
        let (clear, masked) = (
            serde_json::Value::String(clear).to_string(),
            serde_json::Value::String(masked).to_string(),
        );
        text = text.replace(&clear, &masked);
    }
    perimeter_model::Masker::mask_text(masker, &text)
}

/// Alerts quote event values where nothing tells the masker what they are: a keyword match
/// (`matched_fields.keywords`), an entity taken from a `password` field (a correlation's
/// `group-by`), a field equal to a secret one (`fieldref`). Each value masking changes in the
/// event that raised them is shown masked in them as the event shows it.
fn mask_quoted_values(masker: &SecretMasker, event: &Event, alerts: &mut [Alert]) {
    let values = masked_values(masker, event);
    if values.is_empty() {
        return;
    }
    let mask = |text: &mut String| {
        if let Some(masked) = with_values_masked(text, &values) {
            *text = masked;
        }
    };
    for alert in alerts {
        // The entity is what alerts are grouped and switched off by: a secret one gets a keyed
        // pseudonym (`hmac:...`, as the `hash` action writes), so two groups of a correlation
        // by a secret field stay two alerts, not one `[REDACTED:key]`.
        if values.iter().any(|(clear, _)| *clear == alert.entity) {
            alert.entity = masker.pseudonymize(&alert.entity);
        } else {
            mask(&mut alert.entity);
        }
        if let Some(x) = alert.explanation.as_mut() {
            mask(x);
        }
        for value in alert.matched_fields.values_mut() {
            mask_json_strings(value, &mut |s| mask(s));
        }
    }
}

/// Each string in `value` through `f` (numbers that are a masked value become its text).
fn mask_json_strings(value: &mut serde_json::Value, f: &mut impl FnMut(&mut String)) {
    match value {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Number(n) => {
            let mut text = n.to_string();
            let before = text.clone();
            f(&mut text);
            if text != before {
                *value = serde_json::Value::String(text);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| mask_json_strings(v, f)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| mask_json_strings(v, f)),
        _ => {}
    }
}

/// Mask everything in an alert that can carry event values.
pub fn mask_alert(masker: &SecretMasker, alert: &mut Alert) {
    alert.entity = masker.mask_text(&alert.entity);
    if let Some(x) = &alert.explanation {
        alert.explanation = Some(masker.mask_text(x));
    }
    // As one object keyed by the field paths, so a value is masked for its key name as it is in
    // the event (`debugData.client_secret`, a pair addressed as `parameters.PASSWORD`), not
    // only for its shape; per-field rules reach it the same way.
    let fields = std::mem::take(&mut alert.matched_fields);
    let mut fields = serde_json::Value::Object(fields.into_iter().collect());
    masker.mask_value(&mut fields);
    alert.matched_fields = match fields {
        serde_json::Value::Object(map) => map.into_iter().collect(),
        // Fail closed: what could not be rebuilt is not kept.
        other => [("matched_fields".to_string(), other)].into(),
    };
}

/// `{"source": "okta", "tenant"?: "t", "event": {...}}` -> (okta, t, {...}) when `source` is `auto`.
fn unwrap_perimeter_envelope(
    source: &str,
    tenant: &str,
    value: RawJson,
) -> (String, String, RawJson) {
    if source == "auto" {
        if let Some(map) = value.as_object() {
            let is_envelope = map.get(&"event").is_some()
                && map.get(&"source").is_some_and(|s| s.is_str())
                && map
                    .iter()
                    .all(|(k, _)| k == "source" || k == "event" || k == "tenant");
            if is_envelope {
                let text = |k: &str| map.get(&k).and_then(|s| s.as_str()).map(str::to_string);
                let src = text("source").unwrap_or_default();
                let ten = text("tenant").unwrap_or_else(|| tenant.to_string());
                let ev = map.get(&"event").cloned().unwrap_or_default();
                return (src, ten, ev);
            }
        }
    }
    (source.to_string(), tenant.to_string(), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Pipeline {
        pipeline_with(Arc::new(Metrics::new()))
    }

    /// A pipeline that keeps events and counts into `metrics`.
    fn pipeline_with(metrics: Arc<Metrics>) -> Pipeline {
        Pipeline::new(
            NormalizerRegistry::builtin(),
            SecretMasker::default(),
            metrics,
            true,
        )
    }

    /// One rule: an Okta record with a FAILURE outcome.
    fn okta_failure_rule() -> (crate::sigma::RuleSet, crate::sigma::SigmaOptions) {
        rules_from(
            "title: Okta failure\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a6b\nlogsource:\n    product: okta\n\
             detection:\n    selection:\n        outcome.result: FAILURE\n    condition: selection\nlevel: low\n",
        )
    }

    /// The rules of one rule file with this text, loaded with the default options.
    fn rules_from(text: &str) -> (crate::sigma::RuleSet, crate::sigma::SigmaOptions) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), text).unwrap();
        let options = crate::sigma::SigmaOptions::default();
        let (rules, report) = crate::sigma::RuleSet::load(&[dir.path().to_path_buf()], &options);
        assert!(
            report.failed.is_empty(),
            "{:?}",
            report.failed.first().map(|f| f.to_string())
        );
        (rules, options)
    }

    #[test]
    fn matched_fields_are_masked_for_their_key_names_as_the_event_is() {
        let (rules, options) = rules_from(
            "title: Secrets seen\nid: 0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f\nlogsource:\n    product: okta\n\
             detection:\n    client:\n        debugContext.debugData.client_secret: '*'\n\
             \x20   pair:\n        debugContext.debugData.parameters.PASSWORD|contains: Pw\n\
             \x20   condition: client and pair\nlevel: high\n",
        );
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        let record = sonic_rs::json!({"eventType": "app.oauth2.token.grant", "published": "2026-11-24T10:00:00Z",
            "outcome": {"result": "SUCCESS"}, "actor": {"alternateId": "a@x.io"},
            "debugContext": {"debugData": {"client_secret": "Hx7qMatchPw01",
                "parameters": [{"name": "PASSWORD", "value": "Hx7qMatchPw02"}]}}});
        let mut out = PipelineOutput::default();
        p.process_value("okta", "t", None, record, Utc::now(), &mut out);
        assert_eq!(out.alerts.len(), 1, "{:?}", out.alerts);
        let fields = &out.alerts[0].matched_fields;
        assert_eq!(fields.len(), 2, "{fields:?}");
        let text = serde_json::to_string(fields).unwrap();
        assert!(!text.contains("Hx7q"), "{text}");
        assert!(text.contains("[REDACTED:key]"), "{text}");
        // And as the event has it.
        let event = out.events[0].raw.to_string();
        assert!(!event.contains("Hx7q"), "{event}");
    }

    #[test]
    fn values_an_alert_quotes_without_their_key_are_masked_as_the_event_has_them() {
        // A keyword match, a field equal to the password (`fieldref`) and a correlation grouped
        // by the password: each quotes the password where no key name says what it is.
        let (rules, options) = rules_from(
            "title: Keyword\nid: 1c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e01\nlogsource:\n    product: okta\n\
             detection:\n    keywords:\n        - 'unter'\n    condition: keywords\nlevel: high\n\
             ---\ntitle: User is password\nid: 1c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e02\nname: same\n\
             logsource:\n    product: okta\ndetection:\n    sel:\n\
             \x20       actor.displayName|fieldref: debugContext.debugData.password\n\
             \x20   condition: sel\nlevel: high\n\
             ---\ntitle: Password burst\nid: 1c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e03\ncorrelation:\n\
             \x20   type: event_count\n    generate: true\n    rules:\n        - same\n\
             \x20   group-by:\n        - debugContext.debugData.password\n\
             \x20   timespan: 5m\n    condition:\n        gte: 2\nlevel: high\n",
        );
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        let record = |minute: u32| {
            sonic_rs::json!({"eventType": "user.session.start",
                "published": format!("2026-11-24T10:0{minute}:00Z"),
                "outcome": {"result": "FAILURE"},
                "actor": {"alternateId": "a@x.io", "displayName": "Hunter2xyz"},
                "debugContext": {"debugData": {"password": "Hunter2xyz"}}})
        };
        let mut out = PipelineOutput::default();
        for minute in 0..2 {
            p.process_value("okta", "t", None, record(minute), Utc::now(), &mut out);
        }
        let titles: Vec<&str> = out.alerts.iter().map(|a| a.title.as_str()).collect();
        for title in ["Keyword", "User is password", "Password burst"] {
            assert!(titles.contains(&title), "{title} raised: {titles:?}");
        }
        for alert in &out.alerts {
            let text = serde_json::to_string(alert).unwrap();
            assert!(!text.contains("Hunter2xyz"), "{text}");
        }
        let burst = out
            .alerts
            .iter()
            .find(|a| a.title == "Password burst")
            .unwrap();
        assert_eq!(burst.entity, p.masker.pseudonymize("Hunter2xyz"));
        // The same texts of an event without secrets are left as they are.
        assert_eq!(
            with_values_masked("a@x.io", &[("Hunter2xyz".into(), "[REDACTED:key]".into())]),
            None
        );
        assert_eq!(
            with_values_masked(
                "login of Hunter2xyz failed",
                &[("Hunter2xyz".into(), "[REDACTED:key]".into())]
            )
            .as_deref(),
            Some("login of [REDACTED:key] failed")
        );
    }

    #[test]
    fn a_repeated_key_has_its_last_value_for_rules_ecs_output_and_masking() {
        let (rules, options) = rules_from(
            "title: Factor removed\nid: 2b1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f\nlogsource:\n    product: okta\n\
             detection:\n    selection:\n        eventType: user.mfa.factor.deactivate\n\
             \x20   condition: selection\nlevel: high\n",
        );
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        let record = |first: &str, last: &str| {
            let text = format!(
                r#"{{"uuid": "{first}", "eventType": "{first}", "published": "2026-11-24T10:00:00Z",
                "outcome": {{"result": "SUCCESS"}},
                "actor": {{"alternateId": "alice@x.io", "alternateId": "mallory@x.io"}},
                "debugContext": {{"debugData": {{"password": "Hx7qFirstSecret", "password": "other"}}}},
                "eventType": "{last}"}}"#
            );
            sonic_rs::from_str::<RawJson>(&text).unwrap()
        };
        let (deactivate, start) = ("user.mfa.factor.deactivate", "user.session.start");
        let mut out = PipelineOutput::default();
        p.process_value(
            "okta",
            "t",
            Some(1),
            record(start, deactivate),
            Utc::now(),
            &mut out,
        );
        p.process_value(
            "okta",
            "t",
            Some(2),
            record(deactivate, start),
            Utc::now(),
            &mut out,
        );
        // The rule sees the last value: it fires on line 1, not on line 2.
        let lines: Vec<_> = out.alerts.iter().map(|a| a.lines.clone()).collect();
        assert_eq!(lines, [vec![1]], "{:?}", out.alerts);
        assert_eq!(out.events.len(), 2);
        for (event, last) in out.events.iter().zip([deactivate, start]) {
            assert_eq!(event.ecs.event_action.as_deref(), Some(last));
            assert_eq!(event.ecs.user_name.as_deref(), Some("mallory@x.io"));
            // The output (and stored) record holds the one value the detectors saw.
            let output = event.to_output_json();
            assert_eq!(output["raw"]["eventType"], last);
            let raw = sonic_rs::to_string(&event.raw).unwrap();
            assert_eq!(raw.matches("eventType").count(), 1, "{raw}");
            assert!(!raw.contains("alice@x.io"), "{raw}");
            // The secret under the first `password` is gone with its pair.
            assert!(!raw.contains("Hx7q"), "{raw}");
            assert!(!output.to_string().contains("Hx7q"), "{output}");
        }
        // Counted, so a crafted record does not pass unseen; a record without repeats is not.
        assert_eq!(p.stats().inputs_with_repeated_keys, 2);
        assert_eq!(p.metrics.counter("inputs_with_repeated_keys_total", &[]), 2);
        p.process_value(
            "okta",
            "t",
            Some(3),
            record(start, start),
            Utc::now(),
            &mut out,
        );
        assert_eq!(p.stats().inputs_with_repeated_keys, 3);
        let plain = sonic_rs::from_str::<RawJson>(r#"{"eventType": "x", "uuid": "u"}"#).unwrap();
        p.process_value("okta", "t", Some(4), plain, Utc::now(), &mut out);
        assert_eq!(p.stats().inputs_with_repeated_keys, 3);
    }

    #[test]
    fn dead_letters_of_records_sharing_a_line_say_which_record() {
        let mut p = pipeline();
        let mut out = PipelineOutput::default();
        let line = sonic_rs::json!(["array", {"a": 1}, 3]);
        p.process_value("json", "t", Some(4), line, Utc::now(), &mut out);
        let reasons: Vec<&str> = out.dead_letters.iter().map(|d| d.reason.as_str()).collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("record 1 of 3"), "{reasons:?}");
        assert!(reasons[1].contains("record 3 of 3"), "{reasons:?}");
        assert!(out.dead_letters.iter().all(|d| d.line == Some(4)));
        assert_eq!(out.events.len(), 1);
        // A line of one record needs no such count.
        let mut out = PipelineOutput::default();
        p.process_value(
            "json",
            "t",
            Some(5),
            sonic_rs::json!(7),
            Utc::now(),
            &mut out,
        );
        assert!(
            !out.dead_letters[0].reason.contains("record"),
            "{:?}",
            out.dead_letters
        );
    }

    #[test]
    fn a_resent_event_is_passed_on_but_not_detected_twice() {
        let (rules, options) = okta_failure_rule();
        let record = |user: &str| {
            sonic_rs::json!({"eventType": "user.session.start", "published": "2026-11-24T10:00:00Z",
                "outcome": {"result": "FAILURE"}, "actor": {"alternateId": user}})
        };
        let run = |window: usize| {
            let mut p = pipeline()
                .with_sigma(SigmaDetector::new(rules.clone(), &options))
                .with_replay_window(window);
            let mut out = PipelineOutput::default();
            for user in ["a@x.io", "a@x.io", "b@x.io", "a@x.io"] {
                p.process_value("okta", "t", None, record(user), Utc::now(), &mut out);
            }
            (p.stats(), out.events.len(), out.alerts.len())
        };
        let (stats, events, alerts) = run(DEFAULT_REPLAY_WINDOW);
        assert_eq!((events, alerts, stats.replayed), (4, 2, 2), "{stats:?}");
        // Window of one id: only an immediate resend is recognised.
        let (stats, _, alerts) = run(1);
        assert_eq!((alerts, stats.replayed), (3, 1), "{stats:?}");
        // Off: every copy is detected.
        let (stats, _, alerts) = run(0);
        assert_eq!((alerts, stats.replayed), (4, 0), "{stats:?}");
        // The same record for another tenant is not a resend.
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules.clone(), &options));
        let mut out = PipelineOutput::default();
        for tenant in ["t", "t2", "t"] {
            p.process_value("okta", tenant, None, record("a@x.io"), Utc::now(), &mut out);
        }
        assert_eq!((out.alerts.len(), p.stats().replayed), (2, 1));
    }

    /// QA: a batch sent again (a spool file retried while the store failed) counted its records
    /// as received again each time; they are counted as replayed.
    #[test]
    fn a_resent_batch_is_counted_as_replayed_not_received_again() {
        let metrics = Arc::new(Metrics::new());
        let mut p = pipeline_with(metrics.clone());
        let record = |user: &str| {
            sonic_rs::json!({"eventType": "user.session.start", "published": "2026-11-24T10:00:00Z",
                "outcome": {"result": "FAILURE"}, "actor": {"alternateId": user}})
        };
        let mut send = |users: &[&str]| {
            let mut out = PipelineOutput::default();
            for user in users {
                p.process_value("okta", "t", None, record(user), Utc::now(), &mut out);
            }
            p.publish_metrics("okta", &out);
            out.events.len()
        };
        assert_eq!(send(&["a@x.io", "b@x.io"]), 2);
        assert_eq!(send(&["a@x.io", "b@x.io", "c@x.io"]), 3);
        let okta = [("source", "okta")];
        assert_eq!(metrics.counter("events_received_total", &okta), 3);
        assert_eq!(metrics.counter("events_replayed_total", &okta), 2);
    }

    #[test]
    fn a_rule_switched_off_for_a_tenant_or_an_entity_raises_no_alerts_there_only() {
        let (rules, options) = okta_failure_rule();
        let rule_id = "5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a6b";
        let switches = Arc::new(RuleSwitches::default());
        let metrics = Arc::new(Metrics::new());
        let mut p = pipeline_with(metrics.clone())
            .with_sigma(SigmaDetector::new(rules, &options))
            .with_rule_switches(switches.clone());
        let mut out = PipelineOutput::default();
        let mut send = |p: &mut Pipeline, tenant: &str, user: &str| {
            let record = sonic_rs::json!({"eventType": "user.session.start",
                "published": "2026-11-24T10:00:00Z", "outcome": {"result": "FAILURE"},
                "actor": {"alternateId": user}});
            out.clear();
            p.process_value("okta", tenant, None, record, Utc::now(), &mut out);
            (out.events.len(), out.alerts.len())
        };
        assert_eq!(send(&mut p, "acme", "a@x.io"), (1, 1));
        let off = |entity: Option<&str>| {
            let mut rules = perimeter_model::SwitchedOffRules::new();
            let why = perimeter_model::SwitchedOff {
                by: "token:t:1".into(),
                at: Utc::now(),
                reason: "noisy".into(),
                until: None,
            };
            perimeter_model::apply_switch(&mut rules, "acme", rule_id, entity, Some(why));
            switches.replace(rules);
        };
        off(None);
        // The event is still kept (searchable); only the alert is dropped, and only for acme.
        assert_eq!(send(&mut p, "acme", "b@x.io"), (1, 0));
        assert_eq!(send(&mut p, "globex", "c@x.io"), (1, 1));
        assert_eq!(p.stats().alerts_switched_off, 1);
        assert_eq!(
            metrics.counter("alerts_switched_off_total", &[("rule", rule_id)]),
            1
        );
        // Off for one entity only.
        off(Some("e@x.io"));
        assert_eq!(send(&mut p, "acme", "e@x.io"), (1, 0));
        assert_eq!(send(&mut p, "acme", "f@x.io"), (1, 1));
        switches.replace(Default::default());
        assert_eq!(send(&mut p, "acme", "d@x.io"), (1, 1));
    }

    /// A rule for failed Okta logins and a correlation: 3 of them for one user within 10 minutes
    /// ("Burst").
    fn failure_burst_rules() -> (crate::sigma::RuleSet, crate::sigma::SigmaOptions) {
        failure_burst_rules_with("gte: 3")
    }

    /// The Okta failure rule and a `Burst` of them under `condition` (keys of `condition:`).
    fn failure_burst_rules_with(
        condition: &str,
    ) -> (crate::sigma::RuleSet, crate::sigma::SigmaOptions) {
        rules_from(&failure_burst_text(condition))
    }

    /// The rule file of [`failure_burst_rules_with`].
    fn failure_burst_text(condition: &str) -> String {
        format!(
            "title: Okta failure\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a6c\nname: okta_failure\n\
             logsource:\n    product: okta\ndetection:\n    selection:\n        outcome.result: FAILURE\n\
             \x20   condition: selection\nlevel: low\n---\ntitle: Burst\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a6d\n\
             correlation:\n    type: event_count\n    rules:\n        - okta_failure\n    group-by:\n\
             \x20       - actor.alternateId\n    timespan: 10m\n    condition:\n        {condition}\nlevel: high\n",
        )
    }

    /// An Okta login failure for `user` at `at` (`HH:MM` on 2026-11-24), into `out`.
    fn okta_failure(
        p: &mut Pipeline,
        out: &mut PipelineOutput,
        tenant: &str,
        user: &str,
        at: &str,
    ) {
        let record = sonic_rs::json!({"uuid": format!("{tenant}-{user}-{at}"),
            "eventType": "user.session.start", "published": format!("2026-11-24T{at}:00Z"),
            "outcome": {"result": "FAILURE"}, "actor": {"alternateId": user}});
        let received: DateTime<Utc> = "2026-11-24T23:00:00Z".parse().unwrap();
        p.process_value("okta", tenant, None, record, received, out);
    }

    #[test]
    fn correlations_keep_tenants_apart_and_follow_each_streams_own_clock() {
        let (rules, options) = failure_burst_rules();
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        let mut out = PipelineOutput::default();
        let mut bursts = |p: &mut Pipeline, tenant: &str, user: &str, times: &[&str]| {
            out.alerts.clear();
            for at in times {
                okta_failure(p, &mut out, tenant, user, at);
            }
            out.alerts
                .iter()
                .filter(|a| a.title == "Burst")
                .map(|a| a.tenant.clone())
                .collect::<Vec<_>>()
        };
        // Two failures in acme and one in globex for the same user name are not three in one
        // tenant (they used to share one window).
        assert!(bursts(&mut p, "acme", "dana", &["10:00", "10:01"]).is_empty());
        assert!(bursts(&mut p, "globex", "dana", &["10:02"]).is_empty());
        assert_eq!(bursts(&mut p, "acme", "dana", &["10:03"]), vec!["acme"]);
        // acme's stream reaches 13:30; globex's arrives three hours behind. Its events are not
        // late for their own stream (they used to be dropped against acme's clock).
        assert!(bursts(&mut p, "acme", "carl", &["13:30"]).is_empty());
        assert_eq!(
            bursts(&mut p, "globex", "erin", &["10:30", "10:31", "10:32"]),
            vec!["globex"]
        );
        // Late within its own stream still counts as late, and is counted for the metrics.
        assert!(bursts(&mut p, "acme", "fred", &["10:40", "10:41", "10:42"]).is_empty());
        p.publish_metrics("okta", &PipelineOutput::default());
        assert_eq!(p.metrics.counter("correlation_late_events_total", &[]), 3);
    }

    /// The late-event figure (the `detect` summary, `correlation_late_events_total`) sizes the
    /// loss in events: it used to count each late event once per correlation reading it.
    #[test]
    fn late_events_are_counted_once_however_many_correlations_read_them() {
        let (rules, options) = rules_from(&format!(
            "{}---\ntitle: Long burst\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a6e\n\
             correlation:\n    type: event_count\n    rules:\n        - okta_failure\n    group-by:\n\
             \x20       - actor.alternateId\n    timespan: 1h\n    condition:\n        gte: 10\nlevel: high\n",
            failure_burst_text("gte: 3")
        ));
        let metrics = Arc::new(Metrics::new());
        let mut p = pipeline_with(metrics.clone()).with_sigma(SigmaDetector::new(rules, &options));
        let mut out = PipelineOutput::default();
        okta_failure(&mut p, &mut out, "acme", "carl", "13:30");
        for at in ["10:40", "10:41", "10:42"] {
            okta_failure(&mut p, &mut out, "acme", "fred", at);
        }
        assert_eq!(p.late_events_dropped(), 3);
        p.publish_metrics("okta", &PipelineOutput::default());
        assert_eq!(metrics.counter("correlation_late_events_total", &[]), 3);
    }

    /// A record dated hours ahead of its receipt (believed: within `MAX_FUTURE_SKEW`) used to
    /// move its stream's watermark to its own time: every on-time event after it was "late" and
    /// no correlation of its tenant and source fired for hours. It moves the watermark no
    /// further than its receipt now, live and in a replay of old logs alike.
    #[test]
    fn a_record_dated_ahead_of_its_receipt_does_not_make_its_stream_late() {
        let (rules, options) = failure_burst_rules();
        let metrics = Arc::new(Metrics::new());
        let mut p = pipeline_with(metrics.clone()).with_sigma(SigmaDetector::new(rules, &options));
        let mut out = PipelineOutput::default();
        let mut send =
            |p: &mut Pipeline, tenant: &str, id: &str, user: &str, at: &str, received: &str| {
                let record = sonic_rs::json!({"uuid": id, "eventType": "user.session.start",
                "published": at, "outcome": {"result": "FAILURE"},
                "actor": {"alternateId": user}});
                let received: DateTime<Utc> = received.parse().unwrap();
                out.alerts.clear();
                p.process_value("okta", tenant, None, record, received, &mut out);
                out.alerts
                    .iter()
                    .filter(|a| a.title == "Burst")
                    .map(|a| a.entity.clone())
                    .collect::<Vec<_>>()
            };
        // Live: records come a few seconds after their time; one is dated nine hours ahead.
        let live = "live";
        send(
            &mut p,
            live,
            "l0",
            "erin@x.io",
            "2026-11-24T10:00:00Z",
            "2026-11-24T10:00:05Z",
        );
        send(
            &mut p,
            live,
            "l1",
            "x@x.io",
            "2026-11-24T19:00:00Z",
            "2026-11-24T10:00:06Z",
        );
        let mut fired = Vec::new();
        for (i, at) in ["10:01:00", "10:02:00", "10:03:00"].iter().enumerate() {
            let received = format!("2026-11-24T{}:05Z", &at[..5]);
            let at = format!("2026-11-24T{at}Z");
            fired.extend(send(
                &mut p,
                live,
                &format!("l{}", i + 2),
                "dana@x.io",
                &at,
                &received,
            ));
        }
        assert_eq!(fired, vec!["dana@x.io"]);
        // A replay of the day before, every record received now: one record dated ahead of
        // now comes first, another in the middle.
        let now = "2026-11-25T12:00:00Z";
        let replay = "replay";
        let mut fired = Vec::new();
        let bursts = [
            ("fred@x.io", ["10:00", "10:01", "10:02"]),
            ("gus@x.io", ["10:03", "10:04", "10:05"]),
        ];
        for (n, (user, minutes)) in bursts.iter().enumerate() {
            let ahead = format!("2026-11-25T2{n}:00:00Z");
            send(&mut p, replay, &format!("r{n}"), "x@x.io", &ahead, now);
            for at in minutes {
                let id = format!("r{n}-{at}");
                let at = format!("2026-11-24T{at}:00Z");
                fired.extend(send(&mut p, replay, &id, user, &at, now));
            }
        }
        assert_eq!(fired, vec!["fred@x.io", "gus@x.io"]);
        assert_eq!(p.late_events_dropped(), 0);
        // Out of order within a stream still counts as late.
        let late = send(
            &mut p,
            replay,
            "r8",
            "hal@x.io",
            "2026-11-24T09:00:00Z",
            now,
        );
        assert!(late.is_empty());
        assert!(p.late_events_dropped() > 0);
        p.publish_metrics("okta", &PipelineOutput::default());
        assert_eq!(p.events_dated_ahead(), 3);
        assert_eq!(
            metrics.counter("correlation_events_dated_ahead_total", &[]),
            3
        );
    }

    /// One record dated far in the future used to move the correlations' event-time watermark
    /// there, so every later event was "late" and no correlation fired again, for any tenant.
    #[test]
    fn an_impossible_timestamp_is_replaced_and_does_not_stop_correlations() {
        let (rules, options) = failure_burst_rules();
        let metrics = Arc::new(Metrics::new());
        let mut p = pipeline_with(metrics.clone()).with_sigma(SigmaDetector::new(rules, &options));
        let received: DateTime<Utc> = "2026-11-24T12:00:00Z".parse().unwrap();
        let mut out = PipelineOutput::default();
        let send = |p: &mut Pipeline, out: &mut PipelineOutput, id: &str, user: &str, at: &str| {
            let record = sonic_rs::json!({"uuid": id, "eventType": "user.session.start",
                "published": at, "outcome": {"result": "FAILURE"},
                "actor": {"alternateId": user}});
            p.process_value("okta", "t", None, record, received, out);
        };
        send(&mut p, &mut out, "future", "x@x.io", "2999-01-01T00:00:00Z");
        send(&mut p, &mut out, "zero", "y@x.io", "1970-01-01T00:00:00Z");
        assert_eq!(out.events[0].timestamp, received);
        assert!(out.events[0].timestamp_adjusted);
        assert_eq!(out.events[1].timestamp, received);
        assert!(out.events[0].to_output_json()["perimeter"]["timestamp_adjusted"] == true);
        // A clock a few hours ahead is believed.
        send(&mut p, &mut out, "ahead", "z@x.io", "2026-11-24T15:00:00Z");
        assert!(!out.events[2].timestamp_adjusted);
        assert_eq!(p.stats().timestamps_adjusted, 2);
        assert_eq!(
            metrics.counter("events_timestamp_adjusted_total", &[("source", "okta")]),
            2
        );
        out.alerts.clear();
        for (i, minute) in ["16:00", "16:01", "16:02"].iter().enumerate() {
            let at = format!("2026-11-24T{minute}:00Z");
            send(&mut p, &mut out, &format!("b{i}"), "dana@x.io", &at);
        }
        assert!(
            out.alerts.iter().any(|a| a.title == "Burst"),
            "the burst is still found: {:?}",
            out.alerts.iter().map(|a| &a.title).collect::<Vec<_>>()
        );
    }

    /// Ids are derived lazily: the ids an alert cites must be those of the stored (masked)
    /// events, i.e. of the content as received, whether or not the pipeline keeps events.
    #[test]
    fn alerts_cite_the_ids_of_the_events_as_received() {
        let (rules, options) = okta_failure_rule();
        // A secret masking changes: the id must still be that of the clear record.
        let record = sonic_rs::json!({"eventType": "user.session.start",
            "published": "2026-11-24T10:00:00Z", "outcome": {"result": "FAILURE"},
            "actor": {"alternateId": "a@x.io"}, "debugContext": {"password": "hunter2hunter2"}});
        let expected = perimeter_model::EventId::derive("okta", &record);
        for keep_events in [true, false] {
            let mut p = Pipeline::new(
                NormalizerRegistry::builtin(),
                SecretMasker::default(),
                Arc::new(Metrics::new()),
                keep_events,
            )
            .with_sigma(SigmaDetector::new(rules.clone(), &options));
            let mut out = PipelineOutput::default();
            p.process_value("okta", "t", Some(1), record.clone(), Utc::now(), &mut out);
            assert_eq!(out.alerts.len(), 1, "keep_events {keep_events}");
            assert_eq!(out.alerts[0].event_ids, vec![expected.0.clone()]);
            if keep_events {
                let event = &out.events[0];
                assert!(!event.raw.to_string().contains("hunter2"), "masked");
                assert_eq!(event.id(), &expected);
            }
        }
        // A kept event no alert cites: its id is first asked for by masking, which must fix it
        // before changing the record.
        let mut quiet = record.clone();
        quiet["outcome"]["result"] = "SUCCESS".into();
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        let mut out = PipelineOutput::default();
        p.process_value("okta", "t", Some(1), quiet.clone(), Utc::now(), &mut out);
        assert!(out.alerts.is_empty());
        assert!(!out.events[0].raw.to_string().contains("hunter2"), "masked");
        assert_eq!(
            out.events[0].id(),
            &perimeter_model::EventId::derive("okta", &quiet)
        );
        // A kept record masking leaves alone: masking does not derive its id, whoever asks later
        // (the store) gets that of the same content.
        let mut clean = quiet.clone();
        clean["debugContext"] = sonic_rs::json!({"requestUri": "/login"});
        out.clear();
        p.process_value("okta", "t", Some(2), clean.clone(), Utc::now(), &mut out);
        assert_eq!(out.events[0].raw, clean, "left as received");
        assert_eq!(
            out.events[0].id(),
            &perimeter_model::EventId::derive("okta", &clean)
        );
    }

    #[test]
    fn a_record_its_normalizer_refuses_is_masked_as_a_record_in_its_dead_letter() {
        // An Okta record without `published`: valid JSON, refused by the normalizer.
        let record = sonic_rs::json!({"eventType": "user.session.start",
            "debugContext": {"debugData": {"client_secret": ["Hx7qOktaDlPw02"],
                "password": {"value": "Hx7qOktaDlPw01"},
                "parameters": [{"name": "DB_PASSWORD", "value": "Hx7qDeadPw02"}]}}});
        let mut p = pipeline();
        let mut out = PipelineOutput::default();
        p.process_value("okta", "t", Some(4), record, Utc::now(), &mut out);
        assert!(out.events.is_empty());
        let d = &out.dead_letters[0];
        assert!(!d.excerpt.contains("Hx7q"), "{}", d.excerpt);
        // Still the record's JSON, masked for its keys.
        let v: serde_json::Value = serde_json::from_str(&d.excerpt).unwrap();
        assert_eq!(
            v["debugContext"]["debugData"]["client_secret"][0],
            "[REDACTED:key]"
        );
        assert_eq!(v["eventType"], "user.session.start");
    }

    /// The dead letters a fresh pipeline makes of `lines`, each invalid JSON at line 1.
    fn dead_letters_of<S: AsRef<str>>(lines: &[S]) -> Vec<DeadLetter> {
        let mut p = pipeline();
        let mut out = PipelineOutput::default();
        for line in lines {
            p.dead_letter(
                "okta",
                "t",
                Some(1),
                "invalid JSON",
                line.as_ref(),
                None,
                Utc::now(),
                &mut out,
            );
        }
        out.dead_letters
    }

    #[test]
    fn a_record_with_junk_after_it_is_masked_as_a_record_in_its_dead_letter() {
        use base64::Engine as _;
        // Each a whole record and a stray `}`: invalid JSON, so a dead letter, yet the record's
        // secrets are known only by its keys and pairs, which text masking cannot read.
        let base64 = base64::engine::general_purpose::STANDARD.encode("password=Hk28Dq9Zr2Lp0");
        let lines = [
            r#"{"eventType":"x","note":"Hk31Dq9Zr2Lp0Vx5Mt","password":"Hk31Dq9Zr2Lp0Vx5Mt"}}"#
                .to_string(),
            r#"{"eventType":"x","headers":[["Authorization","token Hk33Dq9Zr2Lp0Vx5Mt"]]}} and more"#
                .to_string(),
            format!(r#"  {{"eventType":"x","blob":"{base64}"}}]"#),
        ];
        let letters = dead_letters_of(&lines);
        for (d, line) in letters.iter().zip(&lines) {
            assert!(!d.excerpt.contains("Hk3"), "{}", d.excerpt);
            assert!(!d.excerpt.contains(&base64), "{}", d.excerpt);
            // The record's readable parts, and what followed it, are kept.
            assert!(d.excerpt.contains(r#""eventType":"x""#), "{}", d.excerpt);
            let tail = &line[line.rfind(['}', ']']).unwrap()..];
            assert!(d.excerpt.ends_with(tail), "{} / {tail}", d.excerpt);
        }
    }

    #[test]
    fn a_broken_record_has_its_secret_pairs_masked_where_they_repeat_in_its_dead_letter() {
        // No whole document to mask as a record: the pairs' values are looked for in the text.
        let lines = [
            r#"{"id":2,"password":"S3cretPassP2","note":"typed S3cretPassP2 twice",}"#,
            r#"{"id":3,"password":"S3cretPassP3","note":"typed S3cretPassP3 twice""#,
            r#"{"id":5,"password":"S3cretPassP5" "note":"typed S3cretPassP5 twice"}"#,
            r#"x{"id":6,"password":"S3cretPassP6","note":"typed S3cretPassP6 twice"}"#,
            r#"{"id":7,"client_secret" : "S3cretPassP7","n":NaN,"note":"S3cretPassP7"}"#,
        ];
        let letters = dead_letters_of(&lines);
        for d in &letters {
            assert!(!d.excerpt.contains("S3cretPass"), "{}", d.excerpt);
            assert!(d.excerpt.contains(r#""id":"#), "{}", d.excerpt);
        }
        // A value too plain to be told from other text is not spread.
        let letters = dead_letters_of(&[r#"{"pin":"admin","user":"admin","#]);
        assert!(letters[0].excerpt.contains(r#""user":"admin""#));
    }

    #[test]
    fn dead_letter_excerpt_is_masked_before_it_is_bounded() {
        let token = "ghp_R4nd0mT0k3nV4lu3F0rP3r1m3t3rT3st1ngX";
        // The token straddles the excerpt bound: cutting first would leave a prefix the
        // GitHub-token pattern no longer recognises.
        let text = format!(
            "{} {token} trailing",
            "x".repeat(DEAD_LETTER_EXCERPT_CHARS - 20)
        );
        let mut p = pipeline();
        let mut out = PipelineOutput::default();
        p.dead_letter(
            "okta",
            "t",
            Some(3),
            "invalid JSON",
            &text,
            None,
            Utc::now(),
            &mut out,
        );
        let d = &out.dead_letters[0];
        assert_eq!(d.line, Some(3));
        assert!(d.excerpt.chars().count() <= DEAD_LETTER_EXCERPT_CHARS);
        assert!(!d.excerpt.contains("ghp_R4nd0m"), "{}", d.excerpt);
        // The digest is of the whole masked input: inputs that differ past the excerpt differ
        // there, and the secret is not in what it was taken of.
        let other = text.replace("trailing", "other");
        p.dead_letter(
            "okta",
            "t",
            Some(3),
            "invalid JSON",
            &other,
            None,
            Utc::now(),
            &mut out,
        );
        let (a, b) = (&out.dead_letters[0], &out.dead_letters[1]);
        assert_eq!(a.excerpt, b.excerpt);
        assert_ne!(a.input_digest, b.input_digest);
        let masked = p.masker.mask_text(&text);
        assert_eq!(a.input_digest, Some(DeadLetter::digest_of(&masked)));
        // A reader's digest of the clear line is stored keyed, not as it came.
        p.dead_letter(
            "okta",
            "t",
            Some(3),
            "invalid JSON",
            "{",
            Some("0123abcd"),
            Utc::now(),
            &mut out,
        );
        let keyed = out.dead_letters[2].input_digest.clone().expect("a digest");
        assert_ne!(keyed, "0123abcd");
        assert_eq!(
            keyed,
            DeadLetter::digest_of(&p.masker.pseudonymize("0123abcd"))
        );
    }

    #[test]
    fn unknown_shapes_are_dead_lettered_and_rule_only_vendors_keep_their_name() {
        let mut p = pipeline();
        let mut out = PipelineOutput::default();
        let now = Utc::now();
        p.process_value(
            "auto",
            "t",
            Some(1),
            sonic_rs::json!({"neither": "vendor"}),
            now,
            &mut out,
        );
        assert_eq!(out.dead_letters.len(), 1);
        assert!(
            out.dead_letters[0].reason.contains("auto normalizer"),
            "{}",
            out.dead_letters[0].reason
        );
        // `hubspot` has no normalizer of its own: its raw fields stay, its name too.
        p.process_value(
            "hubspot",
            "t",
            Some(2),
            sonic_rs::json!({"operationName": "Add member to role"}),
            now,
            &mut out,
        );
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].source, "hubspot");
        assert_eq!(out.events[0].line, Some(2));
        // A Perimeter envelope names its source.
        let env = sonic_rs::json!({"source": "okta", "event": {"eventType": "user.session.start", "published": "2026-11-24T10:00:00Z",
            "outcome": {"result": "FAILURE"}, "actor": {"alternateId": "a@x.io"}}});
        p.process_value("auto", "t", Some(3), env, now, &mut out);
        assert_eq!(out.events[1].source, "okta");
        assert_eq!(
            out.events[1].ecs.event_outcome,
            perimeter_model::Outcome::Failure
        );
        assert_eq!(p.stats().events, 2);
        assert_eq!(p.stats().dead_letters, 1);
    }

    /// Burst alerts in `out`, with their evidence event ids.
    fn bursts_in(out: &PipelineOutput) -> Vec<Vec<String>> {
        out.alerts
            .iter()
            .filter(|a| a.title == "Burst")
            .map(|a| a.event_ids.clone())
            .collect()
    }

    /// A restart used to drop every open correlation window: a burst spread over a deploy was
    /// never seen. The windows now go into the state snapshot and come back.
    #[test]
    fn open_correlation_windows_survive_a_restart_through_the_state_snapshot() {
        let (rules, options) = failure_burst_rules();
        let state = tempfile::tempdir().unwrap();
        let mut before = pipeline().with_sigma(SigmaDetector::new(rules.clone(), &options));
        let mut out = PipelineOutput::default();
        okta_failure(&mut before, &mut out, "acme", "dana.kim", "10:00");
        okta_failure(&mut before, &mut out, "acme", "dana.kim", "10:01");
        assert!(bursts_in(&out).is_empty());
        before.save_state(state.path()).unwrap();
        let bytes = std::fs::read(state.path().join(CORRELATION_SNAPSHOT)).unwrap();
        assert!(bytes.starts_with(b"PRMSTAT1"), "the binary form");
        // Group-by values are keyed hashes in the file, never the value.
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("dana"), "{text}");

        let restarted = |restore: bool| {
            let mut p = pipeline().with_sigma(SigmaDetector::new(rules.clone(), &options));
            if restore {
                let r = p.restore_correlations(state.path()).unwrap();
                assert_eq!(r.restored.keys, 1);
                assert!(r.set_aside.is_none());
            }
            let mut out = PipelineOutput::default();
            okta_failure(&mut p, &mut out, "acme", "dana.kim", "10:02");
            bursts_in(&out)
        };
        let after = restarted(true);
        assert_eq!(after.len(), 1, "the third failure completes the burst");
        assert_eq!(
            after[0].len(),
            3,
            "with the two failures from before the restart"
        );
        assert!(restarted(false).is_empty());
        // Another user's failure does not complete dana's window.
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules.clone(), &options));
        p.restore_correlations(state.path()).unwrap();
        let mut out = PipelineOutput::default();
        okta_failure(&mut p, &mut out, "acme", "erin", "10:02");
        okta_failure(&mut p, &mut out, "globex", "dana.kim", "10:02");
        assert!(bursts_in(&out).is_empty());
    }

    /// A window judged when it closes (a range) is snapshotted and restored like the others, and
    /// after the restore it slides past too few events as before.
    #[test]
    fn a_range_window_survives_a_restart_and_slides_after_it() {
        let (rules, options) = failure_burst_rules_with("gte: 3\n        lte: 5");
        let state = tempfile::tempdir().unwrap();
        let mut before = pipeline().with_sigma(SigmaDetector::new(rules.clone(), &options));
        let mut out = PipelineOutput::default();
        okta_failure(&mut before, &mut out, "acme", "dana", "10:00");
        okta_failure(&mut before, &mut out, "acme", "dana", "10:09");
        before.save_state(state.path()).unwrap();
        let mut after = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        let r = after.restore_correlations(state.path()).unwrap();
        assert_eq!(r.restored.keys, 1);
        let mut out = PipelineOutput::default();
        okta_failure(&mut after, &mut out, "acme", "dana", "10:11");
        okta_failure(&mut after, &mut out, "acme", "dana", "10:12");
        after.finish(&mut out);
        let bursts = bursts_in(&out);
        assert_eq!(bursts.len(), 1, "10:09, 10:11 and 10:12: {bursts:?}");
        assert_eq!(bursts[0].len(), 3);
    }

    /// A pipeline whose mask key is read from a file holding `key`, with the Okta failure rule.
    fn keyed_pipeline(keys: &std::path::Path, key: &str) -> Pipeline {
        let file = keys.join(format!("{key}.key"));
        std::fs::write(&file, key).unwrap();
        let config = crate::mask::MaskConfig {
            hmac_key: Some(format!("file:{}", file.display())),
            ..Default::default()
        };
        let (rules, options) = okta_failure_rule();
        Pipeline::new(
            NormalizerRegistry::builtin(),
            SecretMasker::new(&config).unwrap(),
            Arc::new(Metrics::new()),
            true,
        )
        .with_sigma(SigmaDetector::new(rules, &options))
    }

    /// A source that got no answer resends after a restart: the events the snapshot's baselines
    /// counted must not be counted again, so the replay window is in the snapshot too.
    #[test]
    fn the_replay_window_survives_a_restart_under_the_same_mask_key_only() {
        let keys = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let alerts = |p: &mut Pipeline, user: &str| {
            let mut out = PipelineOutput::default();
            okta_failure(p, &mut out, "acme", user, "10:00");
            out.alerts.len()
        };
        let mut before = keyed_pipeline(keys.path(), "key-one");
        assert_eq!(alerts(&mut before, "dana"), 1);
        before.save_state(state.path()).unwrap();
        let text = std::fs::read_to_string(state.path().join(REPLAY_SNAPSHOT)).unwrap();
        assert!(!text.contains("dana"), "{text}");

        let mut after = keyed_pipeline(keys.path(), "key-one");
        assert_eq!(after.restore_replay_window(state.path()).unwrap(), Ok(1));
        assert_eq!(alerts(&mut after, "dana"), 0, "the resend is known");
        assert_eq!(after.stats().replayed, 1);
        assert_eq!(alerts(&mut after, "erin"), 1, "new events are detected");
        // Without the restore, the resend is detected again.
        assert_eq!(
            alerts(&mut keyed_pipeline(keys.path(), "key-one"), "dana"),
            1
        );

        // Under another mask key the snapshot is unusable: set aside, the window starts empty.
        let mut rekeyed = keyed_pipeline(keys.path(), "key-two");
        let (aside, why) = rekeyed
            .restore_replay_window(state.path())
            .unwrap()
            .unwrap_err();
        assert!(why.contains("another mask key"), "{why}");
        assert!(aside.exists() && !state.path().join(REPLAY_SNAPSHOT).exists());
        assert_eq!(alerts(&mut rekeyed, "dana"), 1);

        // The built-in key is public: its window is neither written nor read.
        let builtin_state = tempfile::tempdir().unwrap();
        let (rules, options) = okta_failure_rule();
        let mut builtin = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        assert_eq!(alerts(&mut builtin, "dana"), 1);
        builtin.save_state(builtin_state.path()).unwrap();
        assert!(!builtin_state.path().join(REPLAY_SNAPSHOT).exists());
    }

    #[test]
    fn a_changed_rule_file_or_an_unusable_snapshot_starts_correlations_empty() {
        let (rules, options) = failure_burst_rules();
        let state = tempfile::tempdir().unwrap();
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        let mut out = PipelineOutput::default();
        okta_failure(&mut p, &mut out, "acme", "dana", "10:00");
        p.save_state(state.path()).unwrap();
        // The same rules, edited (another level): the old window is not the new rule's.
        let text = "title: Okta failure\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a6c\nname: okta_failure\n\
             logsource:\n    product: okta\ndetection:\n    selection:\n        outcome.result: FAILURE\n\
             \x20   condition: selection\nlevel: low\n---\ntitle: Burst\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a6d\n\
             correlation:\n    type: event_count\n    rules:\n        - okta_failure\n    group-by:\n\
             \x20       - actor.alternateId\n    timespan: 10m\n    condition:\n        gte: 3\nlevel: critical\n";
        let (edited, options) = rules_from(text);
        let mut q = pipeline().with_sigma(SigmaDetector::new(edited, &options));
        let r = q.restore_correlations(state.path()).unwrap();
        assert_eq!((r.restored.keys, r.restored.dropped_correlations), (0, 1));
        // Not JSON: set aside, detection goes on with empty windows.
        let path = state.path().join(CORRELATION_SNAPSHOT);
        std::fs::write(&path, "{not json").unwrap();
        let r = q.restore_correlations(state.path()).unwrap();
        let (aside, why) = r.set_aside.expect("set aside");
        assert!(!path.exists() && aside.exists(), "{}", aside.display());
        assert!(why.contains("correlation snapshot"), "{why}");
        // A cut-off binary snapshot too.
        std::fs::write(&path, b"PRMSTAT1\x05\x01").unwrap();
        let r = q.restore_correlations(state.path()).unwrap();
        let (_, why) = r.set_aside.expect("set aside");
        assert!(why.contains("correlation snapshot"), "{why}");
        okta_failure(&mut q, &mut out, "acme", "dana", "10:01");
    }

    /// A correlation snapshot of format 1 (written by the release before `stream_clocks`, binary
    /// form: `perimeter detect --tenant acme --state-dir` with [`failure_burst_text`]`("gte: 3")`
    /// over dana's failures at 10:00 and 10:01) restores, and the third failure raises the
    /// burst (QA: the new build set such a file aside as invalid and raised nothing).
    #[test]
    fn a_correlation_snapshot_of_format_1_restores_and_its_window_completes() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/state/correlation-format1.snapshot");
        let state = tempfile::tempdir().unwrap();
        std::fs::copy(&fixture, state.path().join(CORRELATION_SNAPSHOT)).unwrap();
        let (rules, options) = failure_burst_rules();
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        let r = p.restore_correlations(state.path()).unwrap();
        assert_eq!(r.set_aside, None);
        assert_eq!((r.restored.keys, r.restored.dropped_correlations), (1, 0));
        let mut out = PipelineOutput::default();
        okta_failure(&mut p, &mut out, "acme", "dana", "10:02");
        let bursts: Vec<_> = out.alerts.iter().filter(|a| a.title == "Burst").collect();
        assert_eq!(bursts.len(), 1, "{:?}", out.alerts);
        // Written again, it is of the current format and restores too.
        p.save_state(state.path()).unwrap();
        let (rules, options) = failure_burst_rules();
        let mut q = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        let r = q.restore_correlations(state.path()).unwrap();
        assert_eq!(r.set_aside, None);
    }

    /// A reload (SIGHUP) used to restart every correlation; unchanged ones now keep their windows.
    #[test]
    fn a_rule_reload_keeps_the_windows_of_unchanged_correlations() {
        let (rules, options) = failure_burst_rules();
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules.clone(), &options));
        let mut out = PipelineOutput::default();
        okta_failure(&mut p, &mut out, "acme", "dana", "10:00");
        okta_failure(&mut p, &mut out, "acme", "dana", "10:01");
        let kept = p.replace_sigma(SigmaDetector::new(rules.clone(), &options), &mut out);
        assert_eq!(kept, 1);
        okta_failure(&mut p, &mut out, "acme", "dana", "10:02");
        assert_eq!(bursts_in(&out).len(), 1);
        // A reload to other rules (here: no correlation) keeps nothing.
        let (single, options) = okta_failure_rule();
        assert_eq!(
            p.replace_sigma(SigmaDetector::new(single, &options), &mut out),
            0
        );
    }

    /// A correlation whose counted rule lives in another file used to keep its windows when
    /// only that rule changed: events the old rule matched went on counting towards the new one.
    #[test]
    fn a_reload_restarts_a_correlation_whose_rule_in_another_file_changed_and_no_other() {
        let failure = |level: &str| {
            format!(
                "title: Okta failure\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a80\nname: okta_failure\n\
                 logsource:\n    product: okta\ndetection:\n    selection:\n        outcome.result: FAILURE\n\
                 \x20   condition: selection\nlevel: {level}\n"
            )
        };
        let burst = "title: Burst\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a81\n\
             correlation:\n    type: event_count\n    rules:\n        - okta_failure\n    group-by:\n\
             \x20       - actor.alternateId\n    timespan: 10m\n    condition:\n        gte: 3\nlevel: high\n";
        let other = |level: &str| {
            format!(
                "title: Okta lockout\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a82\nlogsource:\n    product: okta\n\
                 detection:\n    selection:\n        eventType: user.account.lock\n    condition: selection\nlevel: {level}\n"
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let options = crate::sigma::SigmaOptions::default();
        let load = |failure: &str, other: &str| {
            std::fs::write(dir.path().join("failure.yml"), failure).unwrap();
            std::fs::write(dir.path().join("burst.yml"), burst).unwrap();
            std::fs::write(dir.path().join("other.yml"), other).unwrap();
            let (rules, report) =
                crate::sigma::RuleSet::load(&[dir.path().to_path_buf()], &options);
            assert!(report.failed.is_empty(), "{:?}", report.failed);
            SigmaDetector::new(rules, &options)
        };
        let mut p = pipeline().with_sigma(load(&failure("low"), &other("low")));
        let mut out = PipelineOutput::default();
        okta_failure(&mut p, &mut out, "acme", "dana", "10:00");
        okta_failure(&mut p, &mut out, "acme", "dana", "10:01");
        // Another file changed: the burst's windows stay, the third failure completes it.
        let kept = p.replace_sigma(load(&failure("low"), &other("medium")), &mut out);
        assert_eq!(kept, 1, "a change of a rule the correlation does not read");
        okta_failure(&mut p, &mut out, "acme", "dana", "10:02");
        assert_eq!(bursts_in(&out).len(), 1);
        // The counted rule's file changed: the burst starts empty.
        okta_failure(&mut p, &mut out, "acme", "erin", "10:03");
        okta_failure(&mut p, &mut out, "acme", "erin", "10:04");
        let kept = p.replace_sigma(load(&failure("medium"), &other("medium")), &mut out);
        assert_eq!(kept, 0, "a change of the rule the correlation counts");
        okta_failure(&mut p, &mut out, "acme", "erin", "10:05");
        assert_eq!(
            bursts_in(&out).len(),
            1,
            "erin's earlier failures were dropped"
        );
        // A correlation reading only rules of its own file keeps the identity it had before
        // other files counted (snapshots written by earlier versions still restore).
        let (rules, _) = failure_burst_rules();
        let own = &rules.correlations[0].meta;
        assert_eq!(
            rules.corr_identities,
            [format!(
                "{}#{}/{}",
                own.rule_hash,
                own.line,
                own.id.as_deref().unwrap()
            )]
        );
    }

    /// Sweeps follow the newest event time of all streams. A stream that stalls ahead of the
    /// others used to stop every sweep, so the others' windows with an upper-bound condition
    /// (reported when they close) were never reported until shutdown.
    #[test]
    fn windows_close_while_the_newest_stream_stalls() {
        let (rules, options) = rules_from(
            "title: Okta failure\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a70\nname: okta_failure\n\
             logsource:\n    product: okta\ndetection:\n    selection:\n        outcome.result: FAILURE\n\
             \x20   condition: selection\nlevel: low\n---\ntitle: Quiet\nid: 5d1f7b9e-2c4a-4f3e-9a1b-0c2d3e4f5a71\n\
             correlation:\n    type: event_count\n    rules:\n        - okta_failure\n    group-by:\n\
             \x20       - actor.alternateId\n    timespan: 10m\n    condition:\n        lte: 2\nlevel: low\n",
        );
        let mut p = pipeline().with_sigma(SigmaDetector::new(rules, &options));
        let mut out = PipelineOutput::default();
        okta_failure(&mut p, &mut out, "acme", "dana", "10:00");
        // Another tenant's stream is far ahead, then goes quiet.
        okta_failure(&mut p, &mut out, "globex", "erin", "20:00");
        let received: DateTime<Utc> = "2026-11-24T23:00:00Z".parse().unwrap();
        let quiet = |out: &PipelineOutput| out.alerts.iter().filter(|a| a.title == "Quiet").count();
        // acme goes on at 10:20: dana's 10:00-10:10 window is over by acme's clock.
        for i in 0..5000 {
            let record = sonic_rs::json!({"uuid": format!("ok-{i}"),
                "eventType": "user.session.start", "published": "2026-11-24T10:20:00Z",
                "outcome": {"result": "SUCCESS"}, "actor": {"alternateId": "fred"}});
            p.process_value("okta", "acme", None, record, received, &mut out);
        }
        assert_eq!(quiet(&out), 1, "dana's window closed while globex stalls");
        // globex's own window is not closed by acme's events.
        p.finish(&mut out);
        assert_eq!(quiet(&out), 2);
    }

    #[test]
    fn state_versions_move_with_events_only() {
        let (rules, options) = failure_burst_rules();
        let key = entity_key(&SecretMasker::default());
        let mut p = pipeline()
            .with_sigma(SigmaDetector::new(rules, &options))
            .with_ueba(UebaEngine::new(crate::ueba::UebaConfig::default(), key));
        let mut out = PipelineOutput::default();
        let start = p.state_versions();
        assert_eq!(p.state_versions(), start, "nothing happened");
        okta_failure(&mut p, &mut out, "acme", "dana", "10:00");
        let after = p.state_versions();
        assert!(
            after.0 > start.0 && after.1 > start.1,
            "{start:?} -> {after:?}"
        );
        assert_eq!(p.state_versions(), after);
    }

    /// Windows and baselines dropped to stay within their memory bounds are missed detections
    /// an on-call engineer must be able to see.
    #[test]
    fn state_dropped_at_its_memory_bounds_is_counted() {
        let (rules, _) = failure_burst_rules();
        let options = crate::sigma::SigmaOptions {
            max_correlation_keys: 4,
            ..Default::default()
        };
        let config = crate::ueba::UebaConfig {
            max_entities: 8,
            ..Default::default()
        };
        let key = entity_key(&SecretMasker::default());
        let metrics = Arc::new(Metrics::new());
        let mut p = pipeline_with(metrics.clone())
            .with_sigma(SigmaDetector::new(rules, &options))
            .with_ueba(UebaEngine::new(config, key));
        let mut out = PipelineOutput::default();
        for i in 0..20 {
            okta_failure(&mut p, &mut out, "acme", &format!("user{i}"), "10:00");
        }
        p.publish_metrics("okta", &out);
        let evicted = metrics.counter("correlation_keys_evicted_total", &[]);
        assert!(evicted >= 16, "{evicted}");
        let at_capacity = metrics.counter("ueba_entities_evicted_total", &[("reason", "capacity")]);
        assert!(at_capacity > 0, "{at_capacity}");
        assert_eq!(
            metrics.counter("ueba_entities_evicted_total", &[("reason", "idle")]),
            0
        );
        // Counted once: publishing again adds nothing.
        p.publish_metrics("okta", &PipelineOutput::default());
        assert_eq!(
            metrics.counter("correlation_keys_evicted_total", &[]),
            evicted
        );
    }

    /// Normalization that comes out empty (a vendor renamed a field) is counted per source.
    #[test]
    fn events_with_no_actor_or_no_action_are_counted_per_source() {
        let metrics = Arc::new(Metrics::new());
        let mut p = pipeline_with(metrics.clone());
        let mut out = PipelineOutput::default();
        let now = Utc::now();
        let full = sonic_rs::json!({"uuid": "a", "eventType": "user.session.start",
            "published": "2026-11-24T10:00:00Z", "actor": {"alternateId": "dana"}});
        // The same vendor after a format change: the actor moved.
        let drifted = sonic_rs::json!({"uuid": "b", "eventType": "user.session.start",
            "published": "2026-11-24T10:00:01Z", "principal": {"login": "dana"}});
        p.process_value("okta", "t", None, full, now, &mut out);
        p.process_value("okta", "t", None, drifted, now, &mut out);
        p.publish_metrics("okta", &out);
        assert_eq!(out.events.len(), 2);
        let okta = [("source", "okta")];
        assert_eq!(metrics.counter("events_unattributed_total", &okta), 1);
        assert_eq!(metrics.counter("events_without_action_total", &okta), 0);
        // A vendor without a normalizer: plain JSON, no ECS view at all.
        out.clear();
        let plain = sonic_rs::json!({"log_id": "1", "type": "s", "user_name": "dana"});
        p.process_value("hubspot", "t", None, plain, now, &mut out);
        p.publish_metrics("hubspot", &out);
        let hubspot = [("source", "hubspot")];
        assert_eq!(metrics.counter("events_unattributed_total", &hubspot), 1);
        assert_eq!(metrics.counter("events_without_action_total", &hubspot), 1);
    }
}
