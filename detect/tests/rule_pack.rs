//! The `detection-rules/` pack run through the Sigma engine: every rule's own tests (match /
//! no_match / sequences), and the demo dataset's attack story producing the expected alerts.
//!
//! Events are built from the raw vendor JSON with only the event time filled in (the rules match
//! raw vendor field names), so this test does not depend on the normalizers.

use chrono::{DateTime, TimeZone, Utc};
use perimeter_detect::sigma::{run_rule_tests, RuleSet, SigmaDetector, SigmaOptions};
use perimeter_model::{parse_timestamp, Detector, Ecs, EntityKind, Event, RawRecord};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The vendor's own event time: Okta `published`, GitHub `@timestamp`, Google `id.time`, Slack
/// `date_create`, M365 `CreationTime`, CloudTrail `eventTime`, Salesforce `CreatedDate`, PagerDuty
/// `execution_time`, and the
/// common names of the other vendors.
fn vendor_time(raw: &Value) -> Option<DateTime<Utc>> {
    let candidates = [
        raw.pointer("/published"),
        raw.pointer("/@timestamp"),
        raw.pointer("/id/time"),
        raw.pointer("/date_create"),
        raw.pointer("/CreationTime"),
        raw.pointer("/eventTime"),
        raw.pointer("/timestamp"),
        raw.pointer("/time"),
        raw.pointer("/created_at"),
        raw.pointer("/date"),
        raw.pointer("/attributes/time"),
        raw.pointer("/EventDate"),
        raw.pointer("/TIMESTAMP_DERIVED"),
        raw.pointer("/CreatedDate"),
        raw.pointer("/startTime"),
        raw.pointer("/createTime"),
        raw.pointer("/execution_time"),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|v| parse_timestamp(&perimeter_model::raw_from_serde(v)).ok())
}

fn event(source: &str, raw: Value, line: u64) -> Result<Event, String> {
    let received_at = Utc
        .with_ymd_and_hms(2026, 11, 25, 0, 0, 0)
        .single()
        .ok_or("bad receive time")?;
    let ecs = Ecs {
        timestamp: Some(vendor_time(&raw).ok_or("no vendor timestamp in the event")?),
        ..Ecs::default()
    };
    let record = RawRecord {
        source: source.to_string(),
        tenant: "test".into(),
        received_at,
        line: Some(line),
        raw: perimeter_model::raw_from_serde(&raw),
    };
    Ok(Event::new(source, record, ecs))
}

#[test]
fn every_rule_in_the_pack_passes_its_tests() {
    let report = run_rule_tests(
        &repo().join("detection-rules"),
        &SigmaOptions::default(),
        &event,
    );
    let failures: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        report.rules_tested >= 85,
        "only {} rule files tested",
        report.rules_tested
    );
    // 1-3 matches + >= 1 near miss per rule file, plus the correlation sequences.
    assert!(report.cases_passed >= 2 * report.rules_tested);
}

#[test]
fn the_demo_attack_story_raises_the_expected_alerts() {
    let options = SigmaOptions::default();
    let (rules, load) = RuleSet::load(&[repo().join("detection-rules")], &options);
    assert!(load.failed.is_empty(), "{:?}", load.failed);
    let mut detector = SigmaDetector::new(rules, &options);
    let text = std::fs::read_to_string(repo().join("demo/events.jsonl"))
        .unwrap_or_else(|e| panic!("demo/events.jsonl: {e}"));
    let mut alerts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let envelope: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        let source = envelope["source"].as_str().unwrap_or_default().to_string();
        let e = event(&source, envelope["event"].clone(), i as u64 + 1)
            .unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        detector.detect(&e, &mut alerts);
    }
    detector.flush(&mut alerts);
    let titles: BTreeSet<&str> = alerts.iter().map(|a| a.title.as_str()).collect();
    for expected in [
        "Okta Password Spraying From One IP",
        "Okta Authentication Failure Burst For One User",
        "Okta MFA Factor Reset Followed By New Factor Enrolment",
        "Google Workspace OAuth App Granted Broad Scopes",
        "Google Drive Bulk Download By One User",
        "GitHub Organization Owner Added",
        "GitHub Deploy Key Added To Repository",
        "GitHub Mass Repository Clone By One Actor",
        "AWS IAM Access Key Created For Another User",
        "AWS New IAM User Created And Given An Access Key",
        "AWS CloudTrail Logging Stopped Or Trail Deleted",
        "Slack App Installed With Sensitive Scopes",
        "Microsoft 365 Inbox Rule Forwards Or Redirects Mail",
        "1Password Bulk Secret Reveal By One User",
        "Salesforce Report Exported",
        "LaunchDarkly Access Token Created",
    ] {
        assert!(
            titles.contains(expected),
            "missing alert {expected:?}; got {titles:?}"
        );
    }
    // Every alert names its ATT&CK technique, correlations' too (they had no tags).
    for a in &alerts {
        assert!(
            !a.threat_technique_id.is_empty(),
            "{} has no ATT&CK technique",
            a.title
        );
    }
    // The correlations' alerts say what they are about (the demo and the alert store show it):
    // the MFA reset's `account` alias is a user, not an organization.
    for (title, kind) in [
        (
            "Okta MFA Factor Reset Followed By New Factor Enrolment",
            EntityKind::User,
        ),
        ("Okta Password Spraying From One IP", EntityKind::Ip),
        (
            "Okta Authentication Failure Burst For One User",
            EntityKind::User,
        ),
        ("Google Drive Bulk Download By One User", EntityKind::User),
        (
            "GitHub Mass Repository Clone By One Actor",
            EntityKind::User,
        ),
        // (Not the CloudTrail correlation: it names the normalized `user.name`, which these
        // events without normalizing lack.)
        ("1Password Bulk Secret Reveal By One User", EntityKind::User),
    ] {
        let kinds: Vec<EntityKind> = alerts
            .iter()
            .filter(|a| a.title == title)
            .map(|a| a.entity_kind)
            .collect();
        assert!(
            !kinds.is_empty() && kinds.iter().all(|k| *k == kind),
            "{title}: {kinds:?}"
        );
    }
    // Benign activity of the day (about 2,400 events) stays almost silent.
    let before_attack = alerts
        .iter()
        .filter(|a| a.timestamp < Utc.with_ymd_and_hms(2026, 11, 24, 14, 0, 0).unwrap())
        .count();
    assert!(
        before_attack <= 2,
        "{before_attack} alerts on benign activity before the attack"
    );
}
