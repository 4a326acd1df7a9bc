//! Alerts: what detectors produce and what analysts triage.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Sigma `level`, also used for behavioural alerts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s.to_ascii_lowercase().as_str() {
            "informational" | "info" => Severity::Informational,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// Triage status of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    #[default]
    Open,
    Acknowledged,
    Resolved,
    FalsePositive,
}

/// Which kind of detector raised the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    #[default]
    Sigma,
    Correlation,
    Ueba,
    /// The health of a source itself (one that stopped sending).
    SourceHealth,
}

/// What the alert's `entity` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    User,
    Ip,
    Token,
    App,
    Org,
    #[default]
    Unknown,
}

/// An alert. `rule_id`, `title`, `severity`, `source`, `@timestamp`, `entity` and `lines` are the
/// `perimeter detect` output contract; the rest extends it compatibly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable alert id: hash of rule id, entity and the evidence event ids.
    pub id: String,
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    /// Source name of the (first) triggering event.
    pub source: String,
    pub tenant: String,
    /// Event time of the last event that completed the alert.
    #[serde(rename = "@timestamp")]
    pub timestamp: DateTime<Utc>,
    /// The user / IP / token the alert is about (masked like everything else).
    pub entity: String,
    pub entity_kind: EntityKind,
    /// 1-based input line numbers (or bus offsets) of the events that caused it.
    pub lines: Vec<u64>,
    /// Ids of the events that caused it.
    pub event_ids: Vec<String>,
    pub detector: DetectorKind,
    #[serde(default)]
    pub status: AlertStatus,
    /// The rule's own status (`stable`, `test`, `experimental`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// ATT&CK technique ids from the tags (`T1078`, `T1098.001`), ECS `threat.technique.id`.
    #[serde(
        default,
        rename = "threat.technique.id",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub threat_technique_id: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// BLAKE3 of the rule file's content, so an alert says which version of a rule fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_hash: Option<String>,
    /// Field -> value that made the rule match (masked before output).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matched_fields: BTreeMap<String, serde_json::Value>,
    /// Human explanation with numbers (`47 failures in 10m, baseline 0.3, p < 1e-9`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// Anomaly score or tail probability, for behavioural alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// How many occurrences this alert groups (dedup).
    #[serde(default = "one")]
    pub count: u64,
    /// The rule's own window for grouping its repeats for one entity in the store (its
    /// `alert_group_seconds`; `None`: the store's setting, `0`: no grouping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_group_seconds: Option<u64>,
    /// Event time of the newest repeat grouped into this alert (its `@timestamp` stays the
    /// first occurrence): on an alert sent to destinations as still firing, and on a
    /// behavioural detector's grouped repeats (`... (repeated)`), which the store keeps as the
    /// alert record's span. The store keeps it in its alert record; `None` everywhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
}

fn one() -> u64 {
    1
}

impl Alert {
    /// An alert with the contract fields set and everything else empty; the id is derived from
    /// rule, entity and evidence event ids.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rule_id: impl Into<String>,
        title: impl Into<String>,
        severity: Severity,
        detector: DetectorKind,
        source: impl Into<String>,
        tenant: impl Into<String>,
        timestamp: DateTime<Utc>,
        entity: impl Into<String>,
        entity_kind: EntityKind,
    ) -> Alert {
        Alert {
            id: String::new(),
            rule_id: rule_id.into(),
            title: title.into(),
            severity,
            source: source.into(),
            tenant: tenant.into(),
            timestamp,
            entity: entity.into(),
            entity_kind,
            lines: Vec::new(),
            event_ids: Vec::new(),
            detector,
            status: AlertStatus::Open,
            rule_status: None,
            description: None,
            tags: Vec::new(),
            threat_technique_id: Vec::new(),
            references: Vec::new(),
            rule_hash: None,
            matched_fields: BTreeMap::new(),
            explanation: None,
            score: None,
            count: 1,
            alert_group_seconds: None,
            last_seen: None,
        }
    }

    /// Add an evidence event (its line, when known, and its id).
    pub fn with_evidence(mut self, event: &crate::Event) -> Alert {
        self.push_evidence(event);
        self
    }

    pub fn push_evidence(&mut self, event: &crate::Event) {
        if let Some(l) = event.line {
            self.lines.push(l);
        }
        self.event_ids.push(event.id().0.clone());
    }

    /// Compute the stable id from rule id, tenant, entity and evidence. Call after evidence is set.
    /// Keyed as event ids are ([`crate::key_ids`]): the entity is hashed in clear, and the alert
    /// shows it pseudonymized.
    pub fn seal(mut self) -> Alert {
        let mut h = crate::event::id_hasher();
        for part in [&self.rule_id, &self.tenant, &self.entity] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        for id in &self.event_ids {
            h.update(id.as_bytes());
        }
        self.id = h.finalize().to_hex()[..32].to_string();
        self
    }
}
