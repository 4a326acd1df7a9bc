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
                    if let Some(help) = help_of(name) {
                        out.push_str(&format!("# HELP perimeter_{name} {help}\n"));
                    }
                    out.push_str(&format!("# TYPE perimeter_{name} {kind}\n"));
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

/// What a metric counts, for the `# HELP` line of the ones a dashboard or an alert starts from
/// (QA: none had one). The query-api README describes them all.
fn help_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "events_received_total" => "Records received, per source.",
        "events_stored_total" => "Events stored, per source.",
        "dead_letters_total" => {
            "Inputs stored as dead letters (unusable lines, records no normalizer takes)."
        }
        "alerts_total" => "Alerts raised, per rule.",
        "alerts_grouped_total" => {
            "Repeats counted into an open alert instead of raised on their own."
        }
        "api_requests_total" => "API and ingest requests answered, per route, method and status.",
        "api_connections_refused_total" => {
            "Connections closed as accepted past [api] max_connections."
        }
        "store_batches_failed_total" => {
            "Batches the store could not write (the source retries them)."
        }
        "state_snapshots_failed_total" => "Detection state snapshots that could not be written.",
        "retention_failures_total" => "Retention sweeps that failed.",
        "parquet_compaction_failures_total" => "Parquet compactions that failed.",
        "rule_reloads_failed_total" => "SIGHUP rule reloads refused (the rules in use stay).",
        "rule_files_failed" => "Rule files left out at the start for an error.",
        "rules_loaded" => "Sigma rules in use.",
        "tls_certificate_reloads_total" => "TLS certificate reloads, per result.",
        "pipeline_lag_seconds" => "Receive time minus event time of the newest batch.",
        "poll_errors_total" => "Poll failures, per poller and kind.",
        "poll_last_success_timestamp_seconds" => "When each poller last polled without an error.",
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
            "# HELP perimeter_events_received_total Records received, per source.\n# TYPE"
        ));
        assert!(text.contains("perimeter_events_received_total{source=\"okta\"} 5\n"));
        assert!(text.contains("perimeter_pipeline_lag_seconds 1.5\n"));
        assert_eq!(m.counter("events_received_total", &[("source", "okta")]), 5);
    }
}
