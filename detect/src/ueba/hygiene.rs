//! Alert hygiene: dedup and suppression per (detector, entity), grouping of repeats into one alert
//! with a count, and severity from the rule plus the score.
//!
//! The first finding for a (detector, entity) is emitted at once with `count = 1`. Findings for the
//! same pair within the detector's `suppress_seconds` (event time, from that first alert) are
//! absorbed; when the window has closed (seen on the next finding, on the hourly sweep, or on
//! flush) one grouped alert is emitted with `count` = all occurrences in the window and the
//! evidence of the repeats. Groups are part of the snapshot, so a restart does not re-alert.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use perimeter_model::{Alert, DetectorKind, EntityKind, Event, Severity};
use serde::{Deserialize, Serialize};

use super::state::{EntityKey, Evidence};

/// The behavioural detectors, by their stable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UebaDetector {
    AuthFailureBurst,
    PasswordSpray,
    BruteForceSuccess,
    RateLimitViolation,
    ConfigChange,
    FirstSeen,
    VolumeAnomaly,
}

impl UebaDetector {
    pub const ALL: [UebaDetector; 7] = [
        UebaDetector::AuthFailureBurst,
        UebaDetector::PasswordSpray,
        UebaDetector::BruteForceSuccess,
        UebaDetector::RateLimitViolation,
        UebaDetector::ConfigChange,
        UebaDetector::FirstSeen,
        UebaDetector::VolumeAnomaly,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            UebaDetector::AuthFailureBurst => "auth_failure_burst",
            UebaDetector::PasswordSpray => "password_spray",
            UebaDetector::BruteForceSuccess => "brute_force_success",
            UebaDetector::RateLimitViolation => "rate_limit_violation",
            UebaDetector::ConfigChange => "config_change",
            UebaDetector::FirstSeen => "first_seen",
            UebaDetector::VolumeAnomaly => "volume_anomaly",
        }
    }

    /// The ATT&CK techniques its alerts stand for (`threat.technique.id`). Rate limiting says a
    /// client is automated, not what it does, so it names none.
    pub fn attack_techniques(&self) -> &'static [&'static str] {
        match self {
            UebaDetector::AuthFailureBurst => &["T1110"],
            UebaDetector::PasswordSpray => &["T1110.003"],
            UebaDetector::BruteForceSuccess => &["T1110", "T1078"],
            UebaDetector::RateLimitViolation => &[],
            UebaDetector::ConfigChange => &["T1562", "T1098"],
            UebaDetector::FirstSeen => &["T1078"],
            UebaDetector::VolumeAnomaly => &["T1530"],
        }
    }

    fn technique_ids(&self) -> Vec<String> {
        self.attack_techniques()
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    /// The alert tags: `ueba`, `ueba.<detector>`, and `attack.<technique>` as Sigma rules write
    /// them.
    fn tags(&self) -> Vec<String> {
        ["ueba".to_string(), format!("ueba.{}", self.name())]
            .into_iter()
            .chain(
                self.attack_techniques()
                    .iter()
                    .map(|t| format!("attack.{}", t.to_ascii_lowercase())),
            )
            .collect()
    }

    /// What the detector looks for, for rule listings.
    pub fn title(&self) -> &'static str {
        match self {
            UebaDetector::AuthFailureBurst => "Failed authentications above baseline",
            UebaDetector::PasswordSpray => "One source failing against many users",
            UebaDetector::BruteForceSuccess => "Burst of failures followed by a success",
            UebaDetector::RateLimitViolation => "Rate limiting above baseline",
            UebaDetector::ConfigChange => "Unusual security configuration change",
            UebaDetector::FirstSeen => "First seen country, network, agent or app",
            UebaDetector::VolumeAnomaly => "Downloads, exports or deletions above baseline",
        }
    }

    /// `ueba.<detector>`.
    pub fn rule_id(&self) -> String {
        format!("ueba.{}", self.name())
    }
}

/// What a detector found, before hygiene decides whether it becomes an alert.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub detector: UebaDetector,
    pub entity_key: EntityKey,
    /// Clear entity value (memory only; alerts are masked by the pipeline).
    pub entity: String,
    pub entity_kind: EntityKind,
    pub title: &'static str,
    pub explanation: String,
    /// `-log10(p)` for baseline detectors, the detector's own score otherwise.
    pub score: f64,
    pub severity: Severity,
    /// Raise the severity one level (strong score).
    pub escalate: bool,
    pub suppress_seconds: u64,
    /// Evidence events (the current event included).
    pub evidence: Evidence,
}

pub(crate) fn escalated(base: Severity, escalate: bool) -> Severity {
    if !escalate {
        return base;
    }
    match base {
        Severity::Informational => Severity::Low,
        Severity::Low => Severity::Medium,
        Severity::Medium => Severity::High,
        Severity::High | Severity::Critical => Severity::Critical,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct GroupKey {
    pub detector: UebaDetector,
    pub entity: EntityKey,
}

/// An open suppression window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Group {
    pub title: String,
    pub source: String,
    pub tenant: String,
    pub entity_kind: EntityKind,
    pub severity: Severity,
    /// Event time of the alert that opened the window, of the last repeat, and the window's end.
    pub first_t: i64,
    pub last_t: i64,
    pub until: i64,
    /// Findings absorbed after the first alert and not reported yet.
    pub suppressed: u64,
    /// Repeats already reported by a grouped alert at an end of input, and the event time of
    /// the last of them: what comes after is reported as more of the same, not counted again.
    pub reported: u64,
    pub reported_until_t: i64,
    pub max_score: f64,
    pub escalate: bool,
    pub evidence: Evidence,
    /// Clear entity and last explanation: memory only, never snapshotted.
    #[serde(skip)]
    pub entity_clear: Option<String>,
    #[serde(skip)]
    pub last_explanation: Option<String>,
}

/// A [`Group`] as snapshots of format `perimeter-ueba/2` and before hold it: without what was
/// reported already (snapshots are positional, a field more is another layout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupV2 {
    pub title: String,
    pub source: String,
    pub tenant: String,
    pub entity_kind: EntityKind,
    pub severity: Severity,
    pub first_t: i64,
    pub last_t: i64,
    pub until: i64,
    pub suppressed: u64,
    pub max_score: f64,
    pub escalate: bool,
    pub evidence: Evidence,
}

impl From<GroupV2> for Group {
    fn from(g: GroupV2) -> Group {
        Group {
            title: g.title,
            source: g.source,
            tenant: g.tenant,
            entity_kind: g.entity_kind,
            severity: g.severity,
            first_t: g.first_t,
            last_t: g.last_t,
            until: g.until,
            suppressed: g.suppressed,
            reported: 0,
            reported_until_t: g.first_t,
            max_score: g.max_score,
            escalate: g.escalate,
            evidence: g.evidence,
            entity_clear: None,
            last_explanation: None,
        }
    }
}

/// For tests writing snapshots of earlier formats.
#[cfg(test)]
impl From<Group> for GroupV2 {
    fn from(g: Group) -> GroupV2 {
        GroupV2 {
            title: g.title,
            source: g.source,
            tenant: g.tenant,
            entity_kind: g.entity_kind,
            severity: g.severity,
            first_t: g.first_t,
            last_t: g.last_t,
            until: g.until,
            suppressed: g.suppressed,
            max_score: g.max_score,
            escalate: g.escalate,
            evidence: g.evidence,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Hygiene {
    pub groups: HashMap<GroupKey, Group>,
    pub num_suppressed: u64,
}

fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

fn fmt_time(t: i64) -> String {
    ts(t).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Hygiene {
    /// Turn a finding into an alert, or absorb it into the open group for its (detector, entity).
    pub fn admit(
        &mut self,
        f: Finding,
        event: &Event,
        max_evidence: usize,
        alerts: &mut Vec<Alert>,
    ) {
        let t = event.timestamp.timestamp();
        let key = GroupKey {
            detector: f.detector,
            entity: f.entity_key,
        };
        if let Some(g) = self.groups.get_mut(&key) {
            if t < g.until {
                g.suppressed += 1;
                g.last_t = g.last_t.max(t);
                g.max_score = g.max_score.max(f.score);
                g.escalate |= f.escalate;
                g.evidence.extend_from(&f.evidence, max_evidence);
                g.entity_clear = Some(f.entity);
                g.last_explanation = Some(f.explanation);
                self.num_suppressed += 1;
                return;
            }
            if let Some(g) = self.groups.remove(&key) {
                if let Some(a) = summary(key, g) {
                    alerts.push(a);
                }
            }
        }
        let severity = escalated(f.severity, f.escalate);
        let mut alert = Alert::new(
            f.detector.rule_id(),
            f.title,
            severity,
            DetectorKind::Ueba,
            event.source.clone(),
            event.tenant.clone(),
            event.timestamp,
            f.entity.clone(),
            f.entity_kind,
        );
        f.evidence.write_to(&mut alert);
        if !alert.event_ids.iter().any(|id| id == event.id().as_str()) {
            alert.push_evidence(event);
        }
        alert.explanation = Some(f.explanation.clone());
        alert.score = Some(f.score);
        alert.tags = f.detector.tags();
        alert.threat_technique_id = f.detector.technique_ids();
        alerts.push(alert.seal());
        self.groups.insert(
            key,
            Group {
                title: f.title.to_string(),
                source: event.source.clone(),
                tenant: event.tenant.clone(),
                entity_kind: f.entity_kind,
                severity: f.severity,
                first_t: t,
                last_t: t,
                until: t.saturating_add(f.suppress_seconds as i64),
                suppressed: 0,
                reported: 0,
                reported_until_t: t,
                max_score: f.score,
                escalate: f.escalate,
                evidence: Evidence::default(),
                entity_clear: Some(f.entity),
                last_explanation: Some(f.explanation),
            },
        );
    }

    /// Close every window that ended before its stream's time (`now(tenant, source)`, event
    /// time), emitting grouped alerts.
    pub fn expire(&mut self, now: impl Fn(&str, &str) -> i64, alerts: &mut Vec<Alert>) {
        let closed = self.keys_in_order(|g| g.until <= now(&g.tenant, &g.source));
        for key in closed {
            if let Some(g) = self.groups.remove(&key) {
                if let Some(a) = summary(key, g) {
                    alerts.push(a);
                }
            }
        }
    }

    /// Emit grouped alerts for every open window with repeats (end of input), and keep the
    /// windows themselves so later input is still suppressed.
    pub fn flush(&mut self, alerts: &mut Vec<Alert>) {
        for key in self.keys_in_order(|g| g.suppressed > 0) {
            let Some(g) = self.groups.get_mut(&key) else {
                continue;
            };
            if let Some(a) = summary(key, g.clone()) {
                alerts.push(a);
            }
            // The repeats are reported; the window stays open for suppression, and what it
            // absorbs next is reported as more (a later run with the same state goes on).
            g.reported += g.suppressed;
            g.reported_until_t = g.last_t;
            g.suppressed = 0;
            g.evidence.clear();
        }
    }

    /// The keys of the groups `pick` selects, oldest group first (then by detector and entity):
    /// the grouped alerts come out in the same order in every run of the same input.
    fn keys_in_order(&self, pick: impl Fn(&Group) -> bool) -> Vec<GroupKey> {
        let mut keys: Vec<(i64, GroupKey)> = self
            .groups
            .iter()
            .filter(|(_, g)| pick(g))
            .map(|(k, g)| (g.first_t, *k))
            .collect();
        keys.sort_unstable();
        keys.into_iter().map(|(_, k)| k).collect()
    }
}

/// The grouped alert for a window with repeats (`None` when the first alert was alone).
fn summary(key: GroupKey, g: Group) -> Option<Alert> {
    if g.suppressed == 0 {
        return None;
    }
    // The first alert counts as an occurrence, unless an earlier grouped alert reported up to
    // now: then this one tells what came since.
    let (total, since) = if g.reported == 0 {
        (g.suppressed + 1, String::new())
    } else {
        (
            g.suppressed,
            format!(
                ", after {} reported up to {}",
                g.reported + 1,
                fmt_time(g.reported_until_t)
            ),
        )
    };
    // After a restart the clear value is gone: name the entity by its keyed hash.
    let entity = g
        .entity_clear
        .clone()
        .unwrap_or_else(|| format!("entity:{}", key.entity.to_hex()));
    let from = if g.reported == 0 {
        g.first_t
    } else {
        g.reported_until_t
    };
    // Dated at the first occurrence it counts, with the last in `last_seen`, as the store
    // keeps a grouped alert's span: a query over any part of the span finds it (dated at the
    // last repeat, it was found only by a window holding that one).
    let mut alert = Alert::new(
        key.detector.rule_id(),
        format!("{} (repeated)", g.title),
        escalated(g.severity, g.escalate),
        DetectorKind::Ueba,
        g.source,
        g.tenant,
        ts(from),
        entity,
        g.entity_kind,
    );
    g.evidence.write_to(&mut alert);
    let last = g
        .last_explanation
        .map(|e| format!("; last: {e}"))
        .unwrap_or_default();
    alert.last_seen = (g.last_t > from).then(|| ts(g.last_t));
    alert.explanation = Some(format!(
        "{total} occurrences between {} and {} (first alerted at {}, {} repeats grouped{since}){last}",
        fmt_time(from),
        fmt_time(g.last_t),
        fmt_time(g.first_t),
        g.suppressed
    ));
    alert.score = Some(g.max_score);
    alert.count = total;
    alert.tags = key.detector.tags();
    alert.tags.push("grouped".into());
    alert.threat_technique_id = key.detector.technique_ids();
    Some(alert.seal())
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::{Ecs, RawRecord};

    fn event(t: i64, n: u64) -> Event {
        let rec = RawRecord {
            source: "okta".into(),
            tenant: "acme".into(),
            received_at: ts(t),
            line: Some(n),
            raw: sonic_rs::json!({ "n": n }),
        };
        Event::new(
            "okta",
            rec,
            Ecs {
                timestamp: Some(ts(t)),
                ..Default::default()
            },
        )
    }

    fn finding(e: &Event, score: f64) -> Finding {
        let mut evidence = Evidence::default();
        evidence.push(e, 20);
        Finding {
            detector: UebaDetector::AuthFailureBurst,
            entity_key: EntityKey([1; 16]),
            entity: "alice@example.com".into(),
            entity_kind: EntityKind::User,
            title: "Burst of failed logins",
            explanation: format!("score {score}"),
            score,
            severity: Severity::Medium,
            escalate: score >= 9.0,
            suppress_seconds: 600,
            evidence,
        }
    }

    #[test]
    fn repeats_in_the_window_are_grouped_with_a_count() {
        let mut h = Hygiene::default();
        let mut alerts = Vec::new();
        let t0 = 1_700_000_000;
        for i in 0..5 {
            let e = event(t0 + i * 60, i as u64 + 1);
            h.admit(finding(&e, 7.0 + i as f64), &e, 20, &mut alerts);
        }
        assert_eq!(alerts.len(), 1, "only the first is emitted at once");
        assert_eq!(alerts[0].count, 1);
        assert_eq!(alerts[0].severity, Severity::Medium);
        h.expire(|_, _| t0 + 599, &mut alerts);
        assert_eq!(alerts.len(), 1, "window still open");
        h.expire(|_, _| t0 + 600, &mut alerts);
        assert_eq!(alerts.len(), 2);
        let grouped = &alerts[1];
        assert_eq!(grouped.count, 5);
        assert_eq!(grouped.lines, vec![2, 3, 4, 5]);
        // Dated at the first occurrence it counts, the last in `last_seen`: the span a time
        // query must find it over.
        assert_eq!(grouped.timestamp.timestamp(), t0);
        assert_eq!(grouped.last_seen.map(|t| t.timestamp()), Some(t0 + 4 * 60));
        assert_eq!(
            grouped.severity,
            Severity::High,
            "a repeat scored 11 >= 9 escalates"
        );
        assert!(grouped
            .explanation
            .as_deref()
            .unwrap()
            .starts_with("5 occurrences"));
        // A finding after the window opens a new group and alerts again.
        let e = event(t0 + 700, 9);
        h.admit(finding(&e, 1.0), &e, 20, &mut alerts);
        assert_eq!(alerts.len(), 3);
        assert_eq!(alerts[2].count, 1);
    }

    /// An end of input reports the open window's repeats; the same window going on (the next
    /// run with the same state) reports only what came after, so every occurrence is counted
    /// once: 1 + 3 + 2 = 6, as one run would count them.
    #[test]
    fn repeats_reported_at_an_end_of_input_are_not_counted_again() {
        let mut h = Hygiene::default();
        let mut alerts = Vec::new();
        let t0 = 1_700_000_000;
        let admit = |h: &mut Hygiene, i: i64, alerts: &mut Vec<Alert>| {
            let e = event(t0 + i * 60, i as u64 + 1);
            h.admit(finding(&e, 7.0), &e, 20, alerts);
        };
        for i in 0..4 {
            admit(&mut h, i, &mut alerts);
        }
        h.flush(&mut alerts);
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[1].count, 4, "the first alert and 3 repeats");
        for i in 4..6 {
            admit(&mut h, i, &mut alerts);
        }
        h.flush(&mut alerts);
        assert_eq!(alerts.len(), 3);
        assert_eq!(alerts[2].count, 2, "only what came since");
        assert_eq!(alerts[2].lines, vec![5, 6]);
        let explanation = alerts[2].explanation.as_deref().unwrap();
        assert!(
            explanation
                .starts_with("2 occurrences between 2023-11-14T22:16:20Z and 2023-11-14T22:18:20Z")
                && explanation.contains("after 4 reported up to 2023-11-14T22:16:20Z"),
            "{explanation}"
        );
        // Nothing new: nothing to report.
        h.flush(&mut alerts);
        assert_eq!(alerts.len(), 3);
    }

    #[test]
    fn severity_escalates_one_level() {
        assert_eq!(escalated(Severity::High, true), Severity::Critical);
        assert_eq!(escalated(Severity::Critical, true), Severity::Critical);
        assert_eq!(escalated(Severity::Low, false), Severity::Low);
    }
}
