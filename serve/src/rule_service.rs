//! The Sigma engine behind the API's `GET /rules` and `POST /rules/test`: the query API reaches
//! rules only through its [`RuleService`] trait (it does not depend on `perimeter-detect`), and
//! this is the implementation `perimeter run` and the demo serve.

use perimeter_detect::normalize::NormalizerRegistry;
use perimeter_detect::sigma::{RuleSet, SigmaDetector, SigmaOptions};
use perimeter_model::{Detector, RawRecord};
use perimeter_query_api::{RuleService, RuleTestError};

/// The Sigma engine behind `GET /rules` and `POST /rules/test`.
pub struct SigmaRuleService {
    /// What `GET /rules` lists; replaced when the rules are reloaded.
    rules: std::sync::RwLock<Vec<serde_json::Value>>,
    /// The behavioural detectors that run, listed after the rules (they can be switched off
    /// per tenant like rules).
    detectors: Vec<serde_json::Value>,
    config_sigma: SigmaOptions,
    registry: NormalizerRegistry,
}

/// One JSON object per rule of `set`, as `GET /rules` lists them.
pub fn rule_list(set: &RuleSet) -> Vec<serde_json::Value> {
    set.rules()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "title": r.title, "level": r.level, "status": r.status,
                "path": r.path, "product": r.product, "service": r.service, "tags": r.tags,
                "kind": format!("{:?}", r.kind).to_lowercase(),
            })
        })
        .collect()
}

impl SigmaRuleService {
    /// `listed`: the [`rule_list`] of the rules in use (loaded once, by the caller);
    /// `detectors`: the behavioural detectors that run, listed after the rules; `sigma` and
    /// `registry`: the options and normalizers rules are tested with, as the pipeline has them.
    pub fn new(
        listed: Vec<serde_json::Value>,
        detectors: Vec<serde_json::Value>,
        sigma: SigmaOptions,
        registry: NormalizerRegistry,
    ) -> SigmaRuleService {
        SigmaRuleService {
            rules: std::sync::RwLock::new(listed),
            detectors,
            config_sigma: sigma,
            registry,
        }
    }

    /// The options rules are compiled with (a reload compiles the new rules with them).
    pub fn sigma_options(&self) -> &SigmaOptions {
        &self.config_sigma
    }

    /// How many rules are in use (listed), the behavioural detectors left out.
    pub fn rule_count(&self) -> usize {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// List `set` from now on (the rules were reloaded).
    pub fn replace(&self, set: &RuleSet) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rule_list(set);
    }
}

/// How long one `POST /rules/test` may run, checked between events.
const MAX_TEST_TIME: std::time::Duration = std::time::Duration::from_secs(30);

impl RuleService for SigmaRuleService {
    fn list(&self) -> Vec<serde_json::Value> {
        let mut listed = self.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
        listed.extend(self.detectors.iter().cloned());
        listed
    }

    fn test(
        &self,
        rule_yaml: &str,
        events: Vec<serde_json::Value>,
        source: Option<&str>,
    ) -> Result<serde_json::Value, RuleTestError> {
        let mut options = self.config_sigma.clone();
        options.ignore_logsource = false;
        let (set, report) = RuleSet::from_text("rule", rule_yaml, &options);
        if let Some(f) = report.failed.first() {
            return Err(RuleTestError::Rule(f.to_string()));
        }
        // Source names are lower-case, as ingest takes them (`/ingest/OKTA` is `okta`).
        let source = source.map(str::to_ascii_lowercase);
        let source = source.as_deref();
        // A misspelt logsource loads and matches nothing: say so, as `rules check` does; and a
        // misspelt `source` reads the events as plain JSON, which no vendor rule sees.
        let warnings: Vec<String> = set
            .misspelt_sources(&self.registry.names(), &options)
            .iter()
            .map(|w| w.to_string())
            .chain(set.spec_warnings().iter().map(|w| w.to_string()))
            .chain(source.and_then(|s| self.registry.unnormalized_source_note(s)))
            .collect();
        let mut detector = SigmaDetector::new(set, &options);
        let mut matched = Vec::new();
        let mut matched_event_ids = Vec::new();
        let mut alerts = Vec::new();
        let started = std::time::Instant::now();
        let total = events.len();
        for (i, doc) in events.into_iter().enumerate() {
            // A test holds a core of the service (and runs to its end when its client hangs
            // up): bounded, as a rule of costly values against long texts ran for minutes (QA).
            if started.elapsed() > MAX_TEST_TIME {
                return Err(RuleTestError::TooLong(format!(
                    "the test ran past {} s after {i} of {total} events; test fewer or shorter events",
                    MAX_TEST_TIME.as_secs()
                )));
            }
            let stored_id = doc.pointer("/event/id").cloned();
            // Stored documents carry their source and raw record; plain objects are raw records
            // of the request's `source`, or told by their shape.
            let (source, raw) = match (
                doc.get("raw"),
                doc.pointer("/event/module").and_then(|s| s.as_str()),
            ) {
                (Some(raw), Some(source)) => (source.to_string(), raw.clone()),
                _ => (source.unwrap_or("auto").to_string(), doc),
            };
            let record = RawRecord {
                source: source.clone(),
                tenant: String::new(),
                received_at: chrono::Utc::now(),
                line: Some(i as u64 + 1),
                raw: perimeter_model::raw_from_serde(&raw),
            };
            let event = self
                .registry
                .normalize_lenient(&source, record)
                .map_err(|e| RuleTestError::Event(format!("events[{i}]: {}", api_advice(&e))))?;
            let before = alerts.len();
            detector.detect(&event, &mut alerts);
            if alerts.len() > before {
                matched.push(i);
                matched_event_ids.extend(stored_id);
            }
        }
        detector.flush(&mut alerts);
        let mut result = serde_json::json!({"matched": matched, "alerts": alerts.len()});
        // Stored events were not seen by the caller: their ids say which they are.
        if !matched_event_ids.is_empty() {
            result["matched_event_ids"] = serde_json::Value::Array(matched_event_ids);
        }
        if !warnings.is_empty() {
            result["warnings"] = warnings.into();
        }
        Ok(result)
    }
}

/// `error` as the API says it: the advice to name the source speaks of the request's
/// `source` field, not of the CLI's `--source`.
fn api_advice(error: &perimeter_model::NormalizeError) -> String {
    match error {
        perimeter_model::NormalizeError::UndetectedSource => "could not detect the source from \
            the event's shape (name it: `\"source\": \"<name>\"` in the request, `okta`, \
            `github`, ..., or `\"json\"` for plain JSON objects)"
            .to_string(),
        other => other.to_string(),
    }
}
