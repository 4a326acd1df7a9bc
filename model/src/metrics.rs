//! Process-wide counters every stage increments and `/metrics` renders (Prometheus text format).
//! Label cardinality is kept low by design: labels are source names, rule ids, stage names.

use std::collections::BTreeMap;
use std::sync::Mutex;

type SeriesKey = (String, Vec<(String, String)>);
type Series = BTreeMap<SeriesKey, f64>;

/// A counter/gauge registry. Cheap enough for per-batch updates (not per-field).
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Series>,
    gauges: Mutex<Series>,
    /// Parts of the service that stopped until a restart, with why (see [`Self::part_stopped`]).
    stopped: Mutex<Vec<(String, String)>>,
    /// Parts failing now that may recover by themselves, with why (see [`Self::part_failing`]).
    failing: Mutex<Vec<(String, String)>>,
}

/// Most series one metric name may have (label sets). Labels come from source names, rule ids
/// and destinations, which a token holder can invent (`POST /ingest/<any name>`): past this,
/// a new label set is not added (its updates count in `metrics_series_dropped_total`), so the
/// unauthenticated `/metrics` and the registry's memory stay bounded.
pub const MAX_SERIES_PER_NAME: usize = 1000;

/// Whether `key` may be updated in `series`: it is there, it has no labels, or its name has
/// room for another series.
fn admitted(series: &Series, key: &SeriesKey) -> bool {
    if key.1.is_empty() || series.contains_key(key) {
        return true;
    }
    let of_name = series
        .range((key.0.clone(), Vec::new())..)
        .take_while(|((name, _), _)| *name == key.0)
        .count();
    of_name < MAX_SERIES_PER_NAME
}

fn dropped(series: &mut Series) {
    *series
        .entry(("metrics_series_dropped_total".to_string(), Vec::new()))
        .or_insert(0.0) += 1.0;
}

fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Add `by` to counter `name{labels}` (e.g. `events_received_total{source="okta"}`).
    pub fn inc(&self, name: &str, labels: &[(&str, &str)], by: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let key = key(name, labels);
        if !admitted(&c, &key) {
            return dropped(&mut c);
        }
        *c.entry(key).or_insert(0.0) += by as f64;
    }

    /// Set gauge `name{labels}` (e.g. `pipeline_lag_seconds`, `store_commit_latency_seconds`).
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let key = key(name, labels);
        {
            let mut g = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
            if admitted(&g, &key) {
                g.insert(key, value);
                return;
            }
        }
        // One lock at a time: no order between the two to keep.
        dropped(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Note that `part` of the service stopped for good (until a restart) because of `why`:
    /// `/readyz` reports it, and gauge `part_stopped{part}` is 1.
    pub fn part_stopped(&self, part: &str, why: &str) {
        self.set("part_stopped", &[("part", part)], 1.0);
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        stopped.retain(|(p, _)| p != part);
        stopped.push((part.to_string(), why.to_string()));
    }

    /// Note that `part` fails now because of `why` (a Kafka broker not answering): `/readyz`
    /// reports it until [`Self::part_recovered`], and gauge `part_failing{part}` is 1.
    pub fn part_failing(&self, part: &str, why: &str) {
        self.set("part_failing", &[("part", part)], 1.0);
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing.retain(|(p, _)| p != part);
        failing.push((part.to_string(), why.to_string()));
    }

    /// `part` works again ([`Self::part_failing`]).
    pub fn part_recovered(&self, part: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if failing.iter().any(|(p, _)| p == part) {
            failing.retain(|(p, _)| p != part);
            drop(failing);
            self.set("part_failing", &[("part", part)], 0.0);
        }
    }

    /// The parts failing now ([`Self::part_failing`]), with why.
    pub fn failing_parts(&self) -> Vec<(String, String)> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The parts that stopped ([`Self::part_stopped`]), with why.
    pub fn stopped_parts(&self) -> Vec<(String, String)> {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Current value of a counter (0 when never incremented).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.get(&key(name, labels)).copied().unwrap_or(0.0) as u64
    }

    /// Render everything in the Prometheus text exposition format, names prefixed `perimeter_`.
    pub fn render_prometheus(&self) -> String {
        self.render_prometheus_with(|_, value| std::borrow::Cow::Borrowed(value))
    }

    /// [`Self::render_prometheus`] with each label value as `label(name, value)` gives it (the
    /// API masks the `source` names clients chose, as its log does).
    pub fn render_prometheus_with(
        &self,
        label: impl for<'a> Fn(&str, &'a str) -> std::borrow::Cow<'a, str>,
    ) -> String {
        let mut out = String::new();
        let render = |out: &mut String, kind: &str, map: &Series| {
            let mut last = "";
            for ((name, labels), v) in map {
                if name != last {
                    push_header(out, name, kind);
                    last = name;
                }
                out.push_str("perimeter_");
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, val)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let esc = label(k, val)
                            .replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n");
                        out.push_str(&format!("{k}=\"{esc}\""));
                    }
                    out.push('}');
                }
                out.push_str(&format!(" {v}\n"));
            }
        };
        render(
            &mut out,
            "counter",
            &self.counters.lock().unwrap_or_else(|e| e.into_inner()),
        );
        render(
            &mut out,
            "gauge",
            &self.gauges.lock().unwrap_or_else(|e| e.into_inner()),
        );
        out
    }
}

/// The `# HELP` (when the metric has one) and `# TYPE` lines of metric `name` of `kind`
/// (`counter`, `gauge`), names prefixed `perimeter_`.
pub fn push_header(out: &mut String, name: &str, kind: &str) {
    if let Some(help) = help_of(name) {
        out.push_str(&format!("# HELP perimeter_{name} {help}\n"));
    }
    out.push_str(&format!("# TYPE perimeter_{name} {kind}\n"));
}

/// What a metric counts, for its `# HELP` line (QA: none had one, then only some did). Every
/// series the service exports has one; the query-api README describes them at length.
fn help_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "events_received_total" => {
            "Records received, per source (new events only: a resend is counted as replayed)."
        }
        "events_replayed_total" => {
            "Records received again within the replay window (a resend, a retried file), per source: stored if missing, not detected again."
        }
        "events_stored_total" => "Events stored, per source (new events only, not replays).",
        "dead_letters_total" => {
            "Inputs stored as dead letters (unusable lines, records no normalizer takes)."
        }
        "events_timestamp_adjusted_total" => {
            "Events whose impossible vendor time was replaced by the receive time, per source."
        }
        "events_unattributed_total" => "Events with neither a user nor a source IP, per source.",
        "events_without_action_total" => "Events normalized without an action, per source.",
        "events_past_retention_total" => {
            "Events stored although dated before their retention window."
        }
        "inputs_with_repeated_keys_total" => {
            "Inputs with an object that repeated a key (the last value is kept)."
        }
        "alerts_total" => {
            "Alerts the detectors raised, per rule, repeats the store grouped into an open alert included (alerts_grouped_total counts those)."
        }
        "alerts_grouped_total" => {
            "Repeats counted into an open alert instead of raised on their own."
        }
        "alerts_still_firing_total" => "Grouped alerts whose count passed 10, 100, 1000, ...",
        "alerts_switched_off_total" => {
            "Alerts dropped because their tenant switched the rule off, per rule."
        }
        "correlation_open_windows" => "Correlation windows held in memory.",
        "correlation_keys_evicted_total" => {
            "Correlation windows dropped at max_correlation_keys (detections possibly missed)."
        }
        "correlation_late_events_total" => {
            "Events left out of correlations for coming later than allowed_lateness_seconds."
        }
        "correlation_events_dated_ahead_total" => {
            "Events dated more than allowed_lateness_seconds after they were received."
        }
        "ueba_tracked_entities" => "Entities with behavioural baselines held in memory.",
        "ueba_entities_evicted_total" => {
            "Behavioural baselines dropped, per reason (capacity: detections possibly missed)."
        }
        "api_requests_total" => "API and ingest requests answered, per route, method and status.",
        "api_connections_refused_total" => {
            "Connections closed as accepted past [api] max_connections."
        }
        "store_batches_failed_total" => {
            "Batches the store could not write (the source retries them)."
        }
        "store_last_failure_timestamp_seconds" => {
            "When the store last failed to write a batch (Unix time)."
        }
        "store_commit_latency_seconds" => "How long the last store commit took.",
        "store_events_stored" => "Events in the store.",
        "store_events_written_total" => "Events written to the store since the start.",
        "store_events_duplicate_total" => {
            "Events not written again because the store held them already."
        }
        "store_alerts_stored" => "Alerts in the store.",
        "store_dead_letters_written_total" => "Dead letters written since the start.",
        "store_batches_written_total" => "Batches written since the start.",
        "store_last_commit_seconds" => "How long the last index commit took.",
        "store_last_batch_seconds" => "How long the last batch took to store, all of it.",
        "store_index_days" => "Day indexes in the store.",
        "store_open_index_writers" => "Day indexes open for writing.",
        "store_parquet_files_written_total" => "Parquet files written since the start.",
        "store_batches_failing" => "Batches failing to be stored now.",
        "state_snapshots_failed_total" => "Detection state snapshots that could not be written.",
        "state_last_snapshot_timestamp_seconds" => {
            "When the detection state on disk last matched memory (Unix time)."
        }
        "state_snapshot_duration_seconds" => "How long the last detection state snapshot took.",
        "retention_removed_total" => "What the retention sweeps removed, per kind.",
        "retention_failures_total" => "Retention sweeps that failed.",
        "parquet_files_merged_total" => "Parquet files merged by compaction.",
        "parquet_compaction_failures_total" => "Parquet compactions that failed.",
        "rule_reloads_failed_total" => "SIGHUP rule reloads refused (the rules in use stay).",
        "rule_files_failed" => "Rule files left out at the start for an error.",
        "rules_loaded" => "Sigma rules in use.",
        "tls_certificate_reloads_total" => "TLS certificate reloads, per result.",
        "tls_certificate_expiry_timestamp_seconds" => {
            "When the served certificate chain expires first (Unix time)."
        }
        "pipeline_lag_seconds" => "Receive time minus event time of the newest batch.",
        "pipeline_processing_lag_seconds" => {
            "Age since receipt of the oldest event of the last stored batch."
        }
        "part_stopped" => "1 for a part of the service that stopped until a restart.",
        "part_failing" => "1 for a part of the service failing now (it may recover).",
        "poll_errors_total" => "Poll failures, per poller and kind.",
        "poll_last_success_timestamp_seconds" => "When each poller last polled without an error.",
        "poll_pages_total" => "API pages read, per poller.",
        "poll_records_total" => "Records read from the APIs, per poller.",
        "poll_items_set_aside_total" => {
            "Items a poller could not read and set aside (an S3 key, a blob), per poller."
        }
        "spool_files_set_aside_total" => "Spool files moved to .failed/, per source.",
        "spool_files_grown_after_watch_total" => {
            "Spool files that grew after they were read, per source."
        }
        "destination_alerts_sent_total" => "Alerts delivered, per destination.",
        "destination_failures_total" => "Failed delivery rounds, per destination.",
        "destination_batches_abandoned_total" => {
            "Alert batches given up on, per destination: after a day of failed deliveries, or at once for a destination refused (its address, its URL, no signing secret)."
        }
        "destination_outbox_pending_batches" => "Alert batches in the outbox not delivered yet.",
        "destination_batches_overflowed_total" => {
            "Alert batches that arrived while more than 2,048 were pending."
        }
        "destination_batches_dropped_total" => {
            "Alert batches that arrived while delivery shut down (kept in the outbox)."
        }
        "kafka_records_produced_total" => "Records put on the Kafka topic.",
        "kafka_batches_refused_total" => "Ingest batches the Kafka producer could not deliver.",
        "kafka_producer_fatal_errors_total" => {
            "Kafka producers replaced after a fatal error (fenced, out of sequence)."
        }
        "kafka_records_consumed_total" => "Records read from the Kafka topic.",
        "kafka_batches_committed_total" => "Consumed batches committed once stored.",
        "kafka_commit_failures_total" => "Offset commits that failed (the records are read again).",
        "kafka_read_errors_total" => "Errors reading from the Kafka brokers.",
        "kafka_batches_retried_total" => "Consumed batches stored again after a failure.",
        "kafka_messages_unopened_total" => {
            "Sealed messages no configured payload key opens (left for a member that has it)."
        }
        "kafka_records_left_to_new_owner_total" => {
            "Records of revoked partitions left for their new owner to read."
        }
        "kafka_consumer_lag_records" => {
            "Records on the broker past this member's last commit, per partition."
        }
        "metrics_series_dropped_total" => "Label sets not kept for a metric past 1000 series.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {

    /// Label values a client invents (a new source name per request) add series without end
    /// to the unauthenticated `/metrics`: past the bound, new ones are counted as dropped.
    #[test]
    fn the_series_of_one_name_are_bounded() {
        let m = Metrics::new();
        for i in 0..MAX_SERIES_PER_NAME + 5 {
            m.inc("events_received_total", &[("source", &format!("s{i}"))], 1);
        }
        m.inc("events_received_total", &[("source", "s0")], 1);
        assert_eq!(m.counter("events_received_total", &[("source", "s0")]), 2);
        assert_eq!(
            m.counter(
                "events_received_total",
                &[("source", &format!("s{}", MAX_SERIES_PER_NAME))]
            ),
            0
        );
        assert_eq!(m.counter("metrics_series_dropped_total", &[]), 5);
        m.inc("other_total", &[("source", "new")], 1);
        assert_eq!(m.counter("other_total", &[("source", "new")]), 1);
    }

    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.inc("events_received_total", &[("source", "okta")], 3);
        m.inc("events_received_total", &[("source", "okta")], 2);
        m.set("pipeline_lag_seconds", &[], 1.5);
        let text = m.render_prometheus();
        assert!(text.contains("# TYPE perimeter_events_received_total counter\n"));
        assert!(text.contains(
            "# HELP perimeter_events_received_total Records received, per source (new events only: a resend is counted as replayed).\n# TYPE"
        ));
        assert!(text.contains("perimeter_events_received_total{source=\"okta\"} 5\n"));
        assert!(text.contains("perimeter_pipeline_lag_seconds 1.5\n"));
        assert_eq!(m.counter("events_received_total", &[("source", "okta")]), 5);
    }
}
