//! Registry, envelope splitting, auto-detection and robustness tests.

use super::*;
use chrono::{TimeZone, Utc};
use perimeter_model::Outcome;
use perimeter_model::{raw_from_serde, raw_to_serde};
use proptest::prelude::*;
use serde_json::{json, Value};

/// `split_records` over serde values (the tests build inputs with `json!`).
fn split(source: &str, v: Value) -> Vec<Value> {
    split_records(source, raw_from_serde(&v))
        .iter()
        .map(raw_to_serde)
        .collect()
}

fn record(raw: Value) -> RawRecord {
    RawRecord {
        source: AUTO.into(),
        tenant: "t".into(),
        received_at: Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("valid"),
        line: Some(7),
        raw: raw_from_serde(&raw),
    }
}

#[test]
fn registry_lists_builtins_json_and_bundled_mappings() {
    let r = NormalizerRegistry::builtin();
    let names = r.names();
    for n in [
        "okta",
        "github",
        "google_workspace",
        "slack",
        "m365",
        "aws_cloudtrail",
        "onepassword",
        "json",
        "zoom",
        "box",
        "duo",
        "dropbox",
        "atlassian",
        "google_workspace_alerts",
        "salesforce",
        "workday",
        "pagerduty",
        "tines",
        "terraform_cloud",
        "torq",
        "oomnitza",
        "salesforce_marketing_cloud",
        "launchdarkly",
        "azure",
        "auth0",
        "onelogin",
        "asana",
        "notion",
        "zendesk",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
        assert_eq!(r.get(n).map(|x| x.source()), Some(n));
    }
    assert!(r.get("auto").is_none());
    assert!(r.get("nope").is_none());
}

#[test]
fn unknown_and_undetected_sources_are_errors() {
    let r = NormalizerRegistry::builtin();
    assert_eq!(
        r.normalize("splunk", record(json!({"a": 1}))).err(),
        Some(NormalizeError::UnknownSource("splunk".into()))
    );
    assert_eq!(
        r.normalize(AUTO, record(json!({"a": 1}))).err(),
        Some(NormalizeError::UndetectedSource)
    );
    assert_eq!(
        r.normalize(AUTO, record(json!("text"))).err(),
        Some(NormalizeError::NotAnObject)
    );
}

#[test]
fn auto_detection_picks_each_builtin_by_shape() {
    let r = NormalizerRegistry::builtin();
    let cases = [
        (
            json!({"eventType": "user.session.start", "published": "2024-01-01T00:00:00Z"}),
            Some("okta"),
        ),
        (
            json!({"action": "org.add_member", "@timestamp": 1, "org": "x", "actor": "a"}),
            Some("github"),
        ),
        (
            json!({"action": "repo.create", "_document_id": "d", "created_at": 1}),
            Some("github"),
        ),
        (
            json!({"kind": "admin#reports#activity", "id": {"time": "x"}, "events": []}),
            Some("google_workspace"),
        ),
        (
            json!({"date_create": 1, "action": "user_login", "actor": {}}),
            Some("slack"),
        ),
        (
            json!({"CreationTime": "x", "Operation": "UserLoggedIn", "Workload": "AzureActiveDirectory"}),
            Some("m365"),
        ),
        (
            json!({"eventTime": "x", "eventName": "ConsoleLogin", "eventSource": "signin.amazonaws.com"}),
            Some("aws_cloudtrail"),
        ),
        (
            json!({"uuid": "u", "timestamp": "t", "category": "success", "session_uuid": "s"}),
            Some("onepassword"),
        ),
        (
            json!({"uuid": "u", "timestamp": "t", "item_uuid": "i", "vault_uuid": "v"}),
            Some("onepassword"),
        ),
        (
            json!({"uuid": "u", "timestamp": "t", "actor_uuid": "a", "object_type": "user", "action": "x"}),
            Some("onepassword"),
        ),
        (
            json!({"type": "event", "event_id": "e", "event_type": "LOGIN", "created_at": "t", "created_by": {}}),
            Some("box"),
        ),
        (
            json!({"txid": "t", "event_type": "authentication", "result": "success", "timestamp": 1}),
            Some("duo"),
        ),
        (
            json!({"time": "t", "operator": "o", "category_type": "User", "action": "Add"}),
            Some("zoom"),
        ),
        (
            json!({"timestamp": "t", "event_type": {".tag": "login_fail"}, "event_category": {".tag": "logins"}}),
            Some("dropbox"),
        ),
        (
            json!({"type": "events", "attributes": {"time": "t", "action": "a", "actor": {}}}),
            Some("atlassian"),
        ),
        (
            json!({"user.name": "bob", "@timestamp": "2024-01-01T00:00:00Z"}),
            None,
        ),
        (json!({"action": "x"}), None),
        (
            json!({"type": "event", "event_id": "e", "event_type": "LOGIN", "created_at": "t"}),
            None,
        ),
        (json!([1, 2]), None),
        (json!(null), None),
    ];
    for (raw, want) in cases {
        assert_eq!(r.detect_source(&raw_from_serde(&raw)), want, "{raw}");
    }
}

#[test]
fn a_page_kept_whole_is_named_in_the_hint() {
    let rec = json!({"action": "user_login", "date_create": 1});
    let page = json!({"entries": [rec, rec, rec], "ok": true, "extra": [1], "team": "T1"});
    assert_eq!(
        split(AUTO, page.clone()).len(),
        1,
        "not unwrapped: `extra`, `team`"
    );
    let hint = unwrapped_page_hint(&raw_from_serde(&page)).expect("a hint");
    assert!(hint.contains("3 records under `entries`"), "{hint}");
    assert!(
        hint.contains("`extra`, `team` are no page metadata"),
        "{hint}"
    );
    // A record that holds a list of values, or a page that was unwrapped, gets none.
    for v in [
        json!({"id": 1, "items": [1, 2], "action": "x"}),
        json!({"entries": [rec], "cursor": "c"}),
        json!({"action": "x"}),
    ] {
        assert_eq!(unwrapped_page_hint(&raw_from_serde(&v)), None, "{v}");
    }
}

/// QA: CloudTrail digest files (one per region and hour beside the logs) were dead letters in
/// every input path; they hold no event and are read as an empty page. A record that merely
/// has an `awsAccountId` is still one.
#[test]
fn cloudtrail_digests_hold_no_records() {
    let digest = json!({
        "awsAccountId": "111122223333",
        "digestStartTime": "2024-01-01T00:00:00Z",
        "digestEndTime": "2024-01-01T01:00:00Z",
        "digestS3Bucket": "trail-bucket",
        "logFiles": [{"s3Bucket": "trail-bucket", "s3Object": "AWSLogs/x.json.gz"}],
        "previousDigestSignature": "ab12"
    });
    for source in [AUTO, "aws_cloudtrail", "json"] {
        assert!(split(source, digest.clone()).is_empty(), "{source}");
    }
    let record = json!({"awsAccountId": "111122223333", "eventName": "CreateUser"});
    assert_eq!(split(AUTO, record).len(), 1);
}

#[test]
fn split_unwraps_vendor_envelopes() {
    let rec = json!({"eventType": "a", "published": "t"});
    let two = |v: Value| split(AUTO, v).len();
    assert_eq!(two(json!([rec, rec])), 2);
    assert_eq!(
        two(json!({"items": [rec, rec], "cursor": "c", "has_more": false})),
        2
    );
    assert_eq!(
        two(json!({"entries": [rec, rec], "response_metadata": {}})),
        2
    );
    assert_eq!(two(json!({"Records": [rec, rec]})), 2);
    assert_eq!(two(json!({"data": [rec, rec], "links": {}, "meta": {}})), 2);
    assert_eq!(
        two(json!({"stat": "OK", "response": {"authlogs": [rec, rec], "metadata": {}}})),
        2
    );
    assert_eq!(two(json!({"stat": "OK", "response": [rec, rec]})), 2);
    assert_eq!(two(json!({"logs": [rec, rec]})), 2);
    // Asana, Zendesk offset paging, OneLogin v1.
    assert_eq!(
        two(json!({"data": [rec, rec], "next_page": {"offset": "o", "uri": "u"}})),
        2
    );
    assert_eq!(
        two(
            json!({"audit_logs": [rec, rec], "next_page": null, "previous_page": null, "count": 2})
        ),
        2
    );
    assert_eq!(
        two(json!({"status": {"error": false, "code": 200}, "pagination": {}, "data": [rec, rec]})),
        2
    );
    // Slack Web API answers carry `ok` (and sometimes `warning`).
    assert_eq!(
        two(json!({"ok": true, "entries": [rec, rec], "warning": "superfluous_charset"})),
        2
    );
    assert_eq!(two(json!({"data": [], "total": 0})), 0);
    assert_eq!(two(json!({})), 0);
    // A record that merely contains a list is kept whole.
    let order = json!({"id": 1, "items": [1, 2, 3], "action": "x"});
    assert_eq!(split(AUTO, order.clone()), vec![order]);
    assert_eq!(split("json", json!(5)), vec![json!(5)]);
}

#[test]
fn split_gives_one_google_record_per_event_entry() {
    let activity = json!({
        "kind": "admin#reports#activity",
        "id": {"time": "2021-10-27T23:59:31.657Z", "applicationName": "admin", "customerId": "C1"},
        "actor": {"email": "a@example.com"},
        "events": [{"name": "CREATE_USER"}, {"name": "DELETE_USER"}, {"name": "ASSIGN_ROLE"}]
    });
    let page = json!({"kind": "admin#reports#activities", "items": [activity.clone()], "nextPageToken": "n"});
    let parts = split(AUTO, page);
    assert_eq!(parts.len(), 3);
    for (p, name) in parts
        .iter()
        .zip(["CREATE_USER", "DELETE_USER", "ASSIGN_ROLE"])
    {
        assert_eq!(p["events"], json!([{"name": name}]));
        assert_eq!(p["actor"], activity["actor"]);
    }
    // Unsplit, the activity is refused rather than losing events.
    let r = NormalizerRegistry::builtin();
    assert!(matches!(
        r.normalize("google_workspace", record(activity.clone())),
        Err(NormalizeError::Other(m)) if m.contains("3 events")
    ));
    // Indexed, the three records say they came from the page's first activity, and those
    // of a second activity from the second: each can be given its activity's line.
    let second = json!({"kind": "admin#reports#activity", "id": {"time": "2021-10-28T00:00:00Z",
        "applicationName": "login"}, "actor": {"email": "b@example.com"}, "events": [{"name": "login_success"}]});
    let page = json!({"kind": "admin#reports#activities", "items": [activity.clone(), second]});
    let (key, records) = split_records_indexed(AUTO, raw_from_serde(&page));
    let indexed: Vec<Option<usize>> = records.into_iter().map(|(i, _)| i).collect();
    assert_eq!(key, Some("items"));
    assert_eq!(indexed, [Some(0), Some(0), Some(0), Some(1)]);
    // Not an envelope: no positions.
    let (key, records) = split_records_indexed(AUTO, raw_from_serde(&activity));
    let indexed: Vec<Option<usize>> = records.into_iter().map(|(i, _)| i).collect();
    assert_eq!(key, None);
    assert_eq!(indexed, [None, None, None]);
    // With `json`, nothing vendor-specific happens.
    assert_eq!(split("json", activity.clone()).len(), 1);
    assert_eq!(split("google_workspace", activity.clone()).len(), 3);
    // For a bus keying each record by its entity: the page's records at their lines, the
    // activity's events at its line; one record, or a Perimeter envelope, stays whole.
    let lines = [("items".to_string(), vec![3, 40])];
    let records = records_of_input(AUTO, &raw_from_serde(&page), 1, &lines).expect("a page");
    let at: Vec<u64> = records.iter().map(|(line, _)| *line).collect();
    assert_eq!(at, [3, 3, 3, 40]);
    let events = records_of_input("google_workspace", &raw_from_serde(&activity), 7, &[]);
    assert_eq!(events.map(|r| r.len()), Some(3));
    assert!(records_of_input("json", &raw_from_serde(&activity), 7, &[]).is_none());
    let one = json!({"eventType": "user.session.start", "published": "2024-05-01T10:00:00Z"});
    assert!(records_of_input(AUTO, &raw_from_serde(&one), 1, &[]).is_none());
    let wrapped = json!({"source": "okta", "event": {"items": [one.clone(), one.clone()]}});
    assert!(records_of_input(AUTO, &raw_from_serde(&wrapped), 1, &[]).is_none());
    let array = json!([one.clone(), one]);
    assert_eq!(
        records_of_input("okta", &raw_from_serde(&array), 5, &[]).map(|r| r.len()),
        Some(2)
    );
}

#[test]
fn okta_mfa_challenges_sent_at_sign_in_are_authentication_not_configuration() {
    let r = NormalizerRegistry::builtin();
    let okta = |action: &str| {
        let ev = r
            .normalize(
                "okta",
                record(json!({
                    "uuid": "u1", "published": "2025-12-31T23:59:60Z", "eventType": action,
                    "actor": {"alternateId": "dana@acme.test", "type": "User"},
                    "outcome": {"result": "SUCCESS"},
                })),
            )
            .expect("normalizes");
        // (A leap second reads as the next minute's first second.)
        assert_eq!(ev.timestamp.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        (ev.ecs.event_category, ev.ecs.event_type)
    };
    for action in [
        "system.push.send_factor_verify_push",
        "system.sms.send_factor_verify_message",
        "system.voice.send_mfa_challenge_call",
        "system.email.send_factor_verify_message",
    ] {
        assert_eq!(
            okta(action),
            (vec!["authentication".into()], vec!["info".into()]),
            "{action}"
        );
    }
    assert_eq!(
        okta("system.api_token.create"),
        (vec!["configuration".into()], vec!["creation".into()])
    );
}

#[test]
fn json_source_reads_only_ecs_named_fields() {
    let r = NormalizerRegistry::builtin();
    let ev = r
        .normalize(
            "json",
            record(json!({
                "@timestamp": "2024-05-01T10:00:00+02:00",
                "user.name": "bob",
                "source": {"ip": "198.51.100.4"},
                "event": {"action": "login", "outcome": "failure", "category": "authentication"},
                "username": "ignored",
            })),
        )
        .expect("normalizes");
    assert_eq!(ev.ecs.user_name.as_deref(), Some("bob"));
    assert_eq!(ev.ecs.event_outcome, Outcome::Failure);
    assert_eq!(ev.ecs.event_category, vec!["authentication"]);
    assert_eq!(ev.ecs.related_ip, vec!["198.51.100.4"]);
    assert_eq!(ev.timestamp.to_rfc3339(), "2024-05-01T08:00:00+00:00");
    let plain = r
        .normalize("json", record(json!({"msg": "hi"})))
        .expect("normalizes");
    assert_eq!(plain.timestamp, plain.received_at);
    assert_eq!(plain.ecs.event_action, None);
    assert!(matches!(
        r.normalize("json", record(json!({"@timestamp": "later"}))),
        Err(NormalizeError::BadTimestamp { .. })
    ));
}

#[test]
fn wrong_types_and_missing_fields_are_errors_per_vendor() {
    let r = NormalizerRegistry::builtin();
    let cases: &[(&str, Value, NormalizeError)] = &[
        (
            "okta",
            json!({"published": "2024-01-01T00:00:00Z"}),
            NormalizeError::MissingField("eventType".into()),
        ),
        (
            "okta",
            json!({"eventType": 5, "published": "2024-01-01T00:00:00Z"}),
            NormalizeError::WrongType {
                field: "eventType".into(),
                expected: "string",
            },
        ),
        (
            "okta",
            json!({"eventType": "x", "published": "2024-01-01T00:00:00Z", "target": "nope"}),
            NormalizeError::WrongType {
                field: "target".into(),
                expected: "array",
            },
        ),
        (
            "okta",
            json!({"eventType": "x"}),
            NormalizeError::MissingField("published".into()),
        ),
        (
            "github",
            json!({"action": "x"}),
            NormalizeError::MissingField("created_at".into()),
        ),
        (
            "google_workspace",
            json!({"id": {"time": "2024-01-01T00:00:00Z"}}),
            NormalizeError::MissingField("events".into()),
        ),
        (
            "google_workspace",
            json!({"id": {"time": "2024-01-01T00:00:00Z"}, "events": []}),
            NormalizeError::MissingField("events[0]".into()),
        ),
        (
            "google_workspace",
            json!({"id": {"time": "2024-01-01T00:00:00Z"}, "events": [{"name": 3}]}),
            NormalizeError::WrongType {
                field: "events[0].name".into(),
                expected: "string",
            },
        ),
        (
            "slack",
            json!({"action": "user_login"}),
            NormalizeError::MissingField("date_create".into()),
        ),
        (
            "m365",
            json!({"CreationTime": "2024-01-01T00:00:00"}),
            NormalizeError::MissingField("Operation".into()),
        ),
        (
            "aws_cloudtrail",
            json!({"eventTime": "2024-01-01T00:00:00Z"}),
            NormalizeError::MissingField("eventName".into()),
        ),
        (
            "zoom",
            json!({"time": "2022-08-23T14:46:17Z"}),
            NormalizeError::MissingField("action".into()),
        ),
        (
            "box",
            json!({"event_type": "LOGIN"}),
            NormalizeError::MissingField("created_at".into()),
        ),
    ];
    for (source, raw, want) in cases {
        assert_eq!(
            r.normalize(source, record(raw.clone())).err().as_ref(),
            Some(want),
            "{source}: {raw}"
        );
    }
    for source in r.names() {
        if source == "json" {
            continue;
        }
        assert_eq!(
            r.normalize(source, record(json!([1]))).err(),
            Some(NormalizeError::NotAnObject),
            "{source}"
        );
        assert!(
            r.normalize(source, record(json!({}))).is_err(),
            "{source}: empty object must not normalize"
        );
    }
    assert!(matches!(
        r.normalize("aws_cloudtrail", record(json!({"eventName": "x", "eventTime": "not a time"}))),
        Err(NormalizeError::BadTimestamp { field, .. }) if field == "eventTime"
    ));
    assert!(matches!(
        r.normalize(
            "onepassword",
            record(json!({"uuid": "x", "timestamp": "2024-01-01T00:00:00Z"}))
        ),
        Err(NormalizeError::Other(_))
    ));
}

#[test]
fn event_keeps_raw_line_and_a_content_id() {
    let r = NormalizerRegistry::builtin();
    let raw = json!({"eventType": "user.session.start", "published": "2024-01-01T00:00:00Z", "outcome": {"result": "SUCCESS"}});
    let a = r.normalize(AUTO, record(raw.clone())).expect("ok");
    let b = r.normalize("okta", record(raw.clone())).expect("ok");
    assert_eq!(raw_to_serde(&a.raw), raw);
    assert_eq!(a.line, Some(7));
    assert_eq!(a.id(), b.id());
    assert_eq!(a.source, "okta");
}

#[test]
fn mappings_dir_adds_overrides_and_rejects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acme = r#"
name = "acme"
[detect]
key_sets = [["acme_event", "when"]]
[timestamp]
path = "when"
[fields]
"event.action" = "acme_event"
"#;
    std::fs::write(dir.path().join("acme.toml"), acme).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a mapping").expect("write");
    std::fs::write(dir.path().join("zoom.toml"), acme.replace("acme", "zoom")).expect("write");
    let mut r = NormalizerRegistry::builtin();
    let before = r.names().len();
    assert_eq!(r.load_mappings_dir(dir.path()).expect("loads"), 2);
    assert_eq!(r.names().len(), before + 1, "zoom replaced, acme added");
    let raw = json!({"acme_event": "did_thing", "when": 1700000000});
    assert_eq!(r.detect_source(&raw_from_serde(&raw)), Some("acme"));
    assert_eq!(
        r.normalize(AUTO, record(raw))
            .expect("ok")
            .ecs
            .event_action
            .as_deref(),
        Some("did_thing")
    );
    assert_eq!(
        r.detect_source(&raw_from_serde(&json!({"zoom_event": "x", "when": 1}))),
        Some("zoom")
    );

    let bad = tempfile::tempdir().expect("tempdir");
    std::fs::write(bad.path().join("okta.toml"), acme.replace("acme", "okta")).expect("write");
    let err = r
        .load_mappings_dir(bad.path())
        .expect_err("built-in name")
        .to_string();
    assert!(
        err.contains("okta.toml") && err.contains("built-in"),
        "{err}"
    );
    std::fs::remove_file(bad.path().join("okta.toml")).expect("rm");
    std::fs::write(
        bad.path().join("broken.toml"),
        "name = \"broken\"\n[detect\n",
    )
    .expect("write");
    let err = r
        .load_mappings_dir(bad.path())
        .expect_err("syntax")
        .to_string();
    assert!(err.contains("broken.toml"), "{err}");
    assert!(r.load_mappings_dir(&bad.path().join("missing")).is_err());
}

/// Timestamp formats in every recorded vendor page parse to UTC (collected by key name).
#[test]
fn every_fixture_timestamp_format_parses() {
    fn walk(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let k = k.to_ascii_lowercase();
                    let timeish = ["time", "date", "created", "published", "timestamp"]
                        .iter()
                        .any(|w| k.contains(w))
                        || k.ends_with("_at");
                    if timeish && (x.is_string() || x.is_number()) && k != "timewindow" {
                        out.push(x.clone());
                    }
                    walk(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let near = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/saas-api-pages"
    );
    let root = if Path::new(near).is_dir() {
        near.to_owned()
    } else {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/saas-api-pages"
        )
        .to_owned()
    };
    let mut stack = vec![std::path::PathBuf::from(root)];
    let mut values = Vec::new();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)
                    .expect("read dir")
                    .map(|e| e.expect("entry").path()),
            );
        } else if p.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&p).expect("read");
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                walk(&v, &mut values);
            }
        }
    }
    assert!(values.len() > 500, "found only {} timestamps", values.len());
    let mut failed: Vec<String> = values
        .iter()
        .filter(|v| {
            // Free-text fields and small counters (`"time": 300`, `"REDACTED"`) are not times.
            let text_like = v
                .as_str()
                .is_some_and(|s| !s.starts_with(|c: char| c.is_ascii_digit()));
            let small = v.as_i64().is_some_and(|n| n < 1_000_000)
                || v.as_str()
                    .is_some_and(|s| s.len() < 7 && s.bytes().all(|b| b.is_ascii_digit()));
            !text_like && !small && perimeter_model::parse_timestamp(&raw_from_serde(v)).is_err()
        })
        .map(Value::to_string)
        .collect();
    failed.dedup();
    assert!(failed.is_empty(), "unparsed timestamps: {failed:?}");
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        "[a-zA-Z0-9 :.@_-]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("2024-01-01T00:00:00Z"),
            Just("user.session.start"),
            Just("SUCCESS"),
            Just("login_fail"),
            Just("198.51.100.7"),
            Just("[::1]:80"),
            Just("admin#reports#activity"),
            Just("User"),
            Just("iam.amazonaws.com"),
            Just("Add member to role."),
        ]
        .prop_map(Value::from),
    ];
    let keys = prop_oneof![
        Just("eventType"),
        Just("published"),
        Just("actor"),
        Just("target"),
        Just("client"),
        Just("outcome"),
        Just("result"),
        Just("type"),
        Just("action"),
        Just("@timestamp"),
        Just("created_at"),
        Just("user"),
        Just("kind"),
        Just("id"),
        Just("time"),
        Just("events"),
        Just("name"),
        Just("parameters"),
        Just("date_create"),
        Just("entity"),
        Just("context"),
        Just("CreationTime"),
        Just("Operation"),
        Just("Workload"),
        Just("ClientIP"),
        Just("Target"),
        Just("ExtendedProperties"),
        Just("eventName"),
        Just("eventSource"),
        Just("eventTime"),
        Just("userIdentity"),
        Just("errorCode"),
        Just("uuid"),
        Just("timestamp"),
        Just("category"),
        Just("session_uuid"),
        Just("item_uuid"),
        Just("vault_uuid"),
        Just("actor_uuid"),
        Just("object_type"),
        Just("operator"),
        Just("category_type"),
        Just("event_id"),
        Just("created_by"),
        Just("txid"),
        Just("attributes"),
        Just("items"),
        Just("Records"),
        Just("x"),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..8).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary JSON never panics any normalizer, auto-detection or the splitter.
    #[test]
    fn arbitrary_json_never_panics(raw in arb_json()) {
        let r = NormalizerRegistry::builtin();
        for name in r.names() {
            let _ = r.normalize(name, record(raw.clone()));
        }
        let _ = r.normalize(AUTO, record(raw.clone()));
        for part in split(AUTO, raw) {
            let _ = r.normalize(AUTO, record(part));
        }
    }
}

#[test]
fn only_unknown_source_names_get_a_note_and_near_ones_a_suggestion() {
    let registry = NormalizerRegistry::builtin();
    for known in ["okta", "google_workspace", "json", "zoom", "auto"] {
        assert_eq!(registry.unnormalized_source_note(known), None, "{known}");
    }
    let typo = registry.unnormalized_source_note("gihtub").unwrap();
    assert!(typo.contains("did you mean `github`?"), "{typo}");
    let vendor = registry.unnormalized_source_note("hubspot").unwrap();
    assert!(
        vendor.contains("plain JSON") && !vendor.contains("did you mean"),
        "{vendor}"
    );
    // A name that is none (a spool folder `ok-ta/`) is not read at all: said so.
    let bad = registry.unnormalized_source_note("ok-ta").unwrap();
    assert!(
        bad.contains("no source name") && bad.contains("dead-lettered"),
        "{bad}"
    );
}

#[test]
fn a_cloudtrail_assumed_role_is_named_by_its_session_with_the_role_related() {
    let r = NormalizerRegistry::builtin();
    let identity = |arn: &str| {
        json!({"eventTime": "2026-11-24T10:03:00Z", "eventSource": "s3.amazonaws.com", "eventName": "GetObject",
               "userIdentity": {"type": "AssumedRole", "arn": arn, "principalId": "AROAEXAMPLE:x",
                   "sessionContext": {"sessionIssuer": {"type": "Role", "userName": "AWSReservedSSO_PlatformAdmin_4f1c2d3e"}}}})
    };
    let e = r
        .normalize(
            "aws_cloudtrail",
            record(identity("arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_PlatformAdmin_4f1c2d3e/dana.kim@acme-corp.example")),
        )
        .unwrap();
    assert_eq!(
        e.ecs.user_email.as_deref(),
        Some("dana.kim@acme-corp.example")
    );
    assert!(
        e.ecs
            .related_user
            .iter()
            .any(|u| u == "AWSReservedSSO_PlatformAdmin_4f1c2d3e"),
        "{:?}",
        e.ecs.related_user
    );
    // A CI job's session name; an ARN without one falls back to the role.
    let e = r
        .normalize(
            "aws_cloudtrail",
            record(identity(
                "arn:aws:sts::123456789012:assumed-role/deploy/GitHubActions",
            )),
        )
        .unwrap();
    assert_eq!(e.ecs.user_name.as_deref(), Some("GitHubActions"));
    let e = r
        .normalize("aws_cloudtrail", record(identity("not-an-arn")))
        .unwrap();
    assert_eq!(
        e.ecs.user_name.as_deref(),
        Some("AWSReservedSSO_PlatformAdmin_4f1c2d3e")
    );
}

#[test]
fn the_entity_of_a_record_is_its_user_else_its_source_ip() {
    let registry = NormalizerRegistry::builtin();
    let okta = json!({
        "uuid": "e1", "published": "2026-11-01T10:00:00.000Z",
        "eventType": "user.session.start", "outcome": {"result": "FAILURE"},
        "actor": {"id": "00u1", "type": "User", "alternateId": "Alice@Acme.Example"},
        "client": {"ipAddress": "198.51.100.7"}
    });
    assert_eq!(
        registry
            .entity_of("okta", &raw_from_serde(&okta))
            .as_deref(),
        Some("alice@acme.example"),
        "case-folded: one user, one partition"
    );
    let anonymous = json!({
        "uuid": "e2", "published": "2026-11-01T10:00:00.000Z",
        "eventType": "user.session.start", "outcome": {"result": "FAILURE"},
        "client": {"ipAddress": "198.51.100.7"}
    });
    assert_eq!(
        registry
            .entity_of("okta", &raw_from_serde(&anonymous))
            .as_deref(),
        Some("198.51.100.7")
    );
    assert_eq!(
        registry.entity_of("okta", &raw_from_serde(&json!([1, 2]))),
        None
    );
}

/// A user's MFA switched off and their sign-in methods changed are account changes with the
/// user acted on as the target (M365 named no category and no target for them; Google's
/// `2sv_disable` was a sign-in step of unknown outcome), and 1Password's client address is
/// read under either name it is written with.
#[test]
fn mfa_changes_are_account_changes_and_1password_addresses_are_read_under_both_names() {
    let r = NormalizerRegistry::builtin();
    let norm = |source: &str, raw: Value| r.normalize(source, record(raw)).expect("normalizes");
    for op in [
        "Disable Strong Authentication.",
        "Admin deleted security info",
        "User deleted security info",
    ] {
        let ev = norm(
            "m365",
            json!({"CreationTime": "2026-01-01T00:00:00", "Operation": op, "RecordType": 8,
                   "UserId": "admin@acme.example", "ObjectId": "mallory@acme.example",
                   "ResultStatus": "Success", "Workload": "AzureActiveDirectory"}),
        );
        assert_eq!(ev.ecs.event_category, vec!["iam".to_string()], "{op}");
        assert_eq!(
            ev.ecs.event_type,
            vec!["user".to_string(), "change".to_string()],
            "{op}"
        );
        assert_eq!(
            ev.ecs.user_target_email.as_deref(),
            Some("mallory@acme.example"),
            "{op}"
        );
    }
    let ev = norm(
        "google_workspace",
        json!({"kind": "admin#reports#activity", "id": {"time": "2026-01-01T00:00:00.000Z",
               "uniqueQualifier": "1", "applicationName": "login", "customerId": "C0"},
               "actor": {"email": "bob@acme.example"},
               "events": [{"type": "2sv_change", "name": "2sv_disable"}]}),
    );
    assert_eq!(ev.ecs.event_category, vec!["iam".to_string()]);
    assert_eq!(ev.ecs.event_outcome, Outcome::Success);
    for key in ["ip", "ip_address"] {
        let ev = norm(
            "onepassword",
            json!({"uuid": "u1", "session_uuid": "s1", "timestamp": "2026-01-01T00:00:00Z",
                   "category": "credentials_failed", "type": "password_secret_bad",
                   "target_user": {"uuid": "t1", "name": "Ann", "email": "ann@acme.example"},
                   "client": {"app_name": "1Password Extension", key: "203.0.113.161"}}),
        );
        assert_eq!(ev.ecs.source_ip.as_deref(), Some("203.0.113.161"), "{key}");
    }
}

/// QA: a successful M365 sign-in re-serialized with every schema key (`"LogonError": null` or
/// `""`) came out as a failure; a real logon error still makes one.
#[test]
fn an_m365_sign_in_with_an_empty_logon_error_keeps_its_outcome() {
    let r = NormalizerRegistry::builtin();
    for (error, want) in [
        (None, Outcome::Success),
        (Some(json!(null)), Outcome::Success),
        (Some(json!("")), Outcome::Success),
        (Some(json!("InvalidUserNameOrPassword")), Outcome::Failure),
    ] {
        let mut raw = json!({"CreationTime": "2026-01-01T00:00:00", "Operation": "UserLoggedIn",
               "RecordType": 15, "UserId": "ann@acme.example", "ResultStatus": "Success",
               "Workload": "AzureActiveDirectory"});
        if let Some(e) = &error {
            raw["LogonError"] = e.clone();
        }
        let ev = r.normalize("m365", record(raw)).expect("normalizes");
        assert_eq!(ev.ecs.event_outcome, want, "{error:?}");
    }
}

/// An Okta event hook's delivery carries System Log events under `data.events`: they are the
/// records (the envelope was one record, a dead letter for its missing `published`).
#[test]
fn an_okta_event_hook_delivery_is_its_events() {
    let event = |id: &str| {
        json!({"uuid": id, "published": "2026-01-01T00:00:00.000Z",
        "eventType": "user.session.start", "actor": {"alternateId": "ann@acme.test", "type": "User"},
        "outcome": {"result": "SUCCESS"}})
    };
    let delivery = json!({"eventType": "com.okta.event_hook", "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1", "source": "https://acme.okta.com/api/v1/eventHooks/who1",
        "eventId": "e1", "data": {"events": [event("a"), event("b")]},
        "eventTime": "2026-01-01T00:00:01.000Z", "contentType": "application/json"});
    for source in ["okta", "auto"] {
        let records = split(source, delivery.clone());
        assert_eq!(records, vec![event("a"), event("b")], "{source}");
    }
    // An Okta event is left whole.
    assert_eq!(split("okta", event("c")), vec![event("c")]);
}
