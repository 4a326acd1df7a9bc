//! Scenario tests: realistic event sequences (ECS filled the way the normalizers fill it, raw JSON
//! shaped like the vendor's), event time only.

use chrono::{DateTime, Duration, TimeZone, Utc};
use perimeter_model::{Alert, Detector, Ecs, EntityKind, Event, Outcome, RawRecord, Severity};
use serde_json::json;

use super::*;

const KEY: [u8; 32] = [42; 32];

fn t0() -> DateTime<Utc> {
    // A Monday, 00:00 UTC.
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
}

fn event(
    source: &str,
    tenant: &str,
    t: DateTime<Utc>,
    line: u64,
    mut ecs: Ecs,
    raw: serde_json::Value,
) -> Event {
    ecs.timestamp = Some(t);
    ecs.fill_related();
    let rec = RawRecord {
        source: source.into(),
        tenant: tenant.into(),
        received_at: t,
        line: Some(line),
        raw: perimeter_model::raw_from_serde(&raw),
    };
    Event::new(source, rec, ecs)
}

struct Login<'a> {
    user: &'a str,
    ip: &'a str,
    ok: bool,
    country: &'a str,
    asn: u64,
    ua: &'a str,
}

impl<'a> Login<'a> {
    fn new(user: &'a str, ip: &'a str, ok: bool) -> Self {
        Login {
            user,
            ip,
            ok,
            country: "US",
            asn: 7922,
            ua: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/122.0 Safari/537.36",
        }
    }
}

/// An Okta System Log `user.session.start`, as the Okta normalizer maps it.
fn okta_login(tenant: &str, t: DateTime<Utc>, line: u64, l: &Login<'_>) -> Event {
    let (result, reason) = if l.ok {
        ("SUCCESS", serde_json::Value::Null)
    } else {
        ("FAILURE", json!("INVALID_CREDENTIALS"))
    };
    let raw = json!({
        "uuid": format!("{:08x}-{line}", t.timestamp()),
        "published": t.to_rfc3339(),
        "eventType": "user.session.start",
        "displayMessage": "User login to Okta",
        "severity": if l.ok { "INFO" } else { "WARN" },
        "actor": {"id": "00u1abcd", "type": "User", "alternateId": l.user, "displayName": l.user},
        "client": {
            "ipAddress": l.ip,
            "userAgent": {"rawUserAgent": l.ua, "browser": "CHROME", "os": "Mac OS X"},
            "geographicalContext": {"country": l.country}
        },
        "securityContext": {"asNumber": l.asn},
        "outcome": {"result": result, "reason": reason},
        "authenticationContext": {"externalSessionId": "trs-1", "authenticationStep": 0}
    });
    let ecs = Ecs {
        event_action: Some("user.session.start".into()),
        event_category: vec!["authentication".into(), "session".into()],
        event_type: vec!["start".into()],
        event_outcome: if l.ok {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        user_name: Some(l.user.into()),
        source_ip: Some(l.ip.into()),
        source_geo_country_iso_code: Some(l.country.into()),
        source_as_number: Some(l.asn),
        user_agent_original: Some(l.ua.into()),
        ..Default::default()
    };
    event("okta", tenant, t, line, ecs, raw)
}

/// A Google Workspace Drive `download`, as the gsuite normalizer maps it.
fn drive_download(t: DateTime<Utc>, line: u64, user: &str) -> Event {
    let raw = json!({
        "kind": "admin#reports#activity",
        "id": {"time": t.to_rfc3339(), "uniqueQualifier": format!("{line}"), "applicationName": "drive", "customerId": "C01abcd"},
        "actor": {"email": user, "profileId": "1049"},
        "ipAddress": "192.0.2.44",
        "events": [{"type": "access", "name": "download", "parameters": [{"name": "doc_id", "value": format!("doc-{line}")}]}]
    });
    let ecs = Ecs {
        event_action: Some("download".into()),
        event_category: vec!["file".into()],
        event_type: vec!["access".into()],
        event_outcome: Outcome::Success,
        user_name: Some(user.into()),
        user_email: Some(user.into()),
        source_ip: Some("192.0.2.44".into()),
        organization_id: Some("C01abcd".into()),
        ..Default::default()
    };
    event("gsuite", "acme", t, line, ecs, raw)
}

fn run(engine: &mut UebaEngine, events: &[Event]) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for e in events {
        engine.detect(e, &mut alerts);
    }
    alerts
}

fn of<'a>(alerts: &'a [Alert], detector: &str) -> Vec<&'a Alert> {
    alerts
        .iter()
        .filter(|a| a.rule_id == format!("ueba.{detector}"))
        .collect()
}

#[test]
fn nine_failures_then_success_from_several_ips_fires_brute_force_once() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0() + Duration::hours(9);
    let ips = ["198.51.100.10", "198.51.100.11", "203.0.113.77"];
    let mut events = Vec::new();
    for i in 0..9 {
        let l = Login::new("alice@example.com", ips[i % 3], false);
        events.push(okta_login(
            "acme",
            start + Duration::seconds(25 * i as i64),
            i as u64 + 1,
            &l,
        ));
    }
    events.push(okta_login(
        "acme",
        start + Duration::seconds(240),
        10,
        &Login::new("alice@example.com", ips[2], true),
    ));
    // Another success right after: the burst is over, no second alert.
    events.push(okta_login(
        "acme",
        start + Duration::seconds(300),
        11,
        &Login::new("alice@example.com", ips[2], true),
    ));
    let mut alerts = run(&mut engine, &events);
    engine.flush(&mut alerts);

    let bf = of(&alerts, "brute_force_success");
    assert_eq!(bf.len(), 1, "{alerts:#?}");
    let a = bf[0];
    assert_eq!(a.entity, "alice@example.com");
    assert_eq!(a.entity_kind, EntityKind::User);
    assert_eq!(a.detector, perimeter_model::DetectorKind::Ueba);
    assert_eq!(
        a.lines,
        (1..=10).collect::<Vec<u64>>(),
        "the 9 failures and the success are the evidence"
    );
    assert_eq!(a.event_ids.len(), 10);
    assert_eq!(a.timestamp, start + Duration::seconds(240));
    let why = a.explanation.as_deref().unwrap();
    assert!(
        why.contains("9 failed logins from 3 source IP(s) within 15m"),
        "{why}"
    );
    assert!(why.contains("203.0.113.77"), "{why}");
    assert_eq!(a.severity, Severity::High);
    assert!(!a.id.is_empty());
    // 9 failures is below the burst floor of 10: no auth_failure_burst.
    assert!(of(&alerts, "auth_failure_burst").is_empty());
}

/// QA: failures as `Carol@Contoso.com` then a success as `carol@contoso.com` (M365 writes the
/// UPN as typed, then in its own case) were two users: no brute-force alert; and a name written
/// in two cases split a spray's distinct users in two.
#[test]
fn one_user_in_several_cases_is_one_entity() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0() + Duration::hours(9);
    let mut events = Vec::new();
    for i in 0..9 {
        let user = if i % 2 == 0 {
            "Carol@Contoso.com"
        } else {
            "CAROL@contoso.com"
        };
        events.push(okta_login(
            "acme",
            start + Duration::seconds(20 * i as i64),
            i as u64 + 1,
            &Login::new(user, "198.51.100.10", false),
        ));
    }
    events.push(okta_login(
        "acme",
        start + Duration::seconds(200),
        10,
        &Login::new("carol@contoso.com", "198.51.100.10", true),
    ));
    let mut alerts = run(&mut engine, &events);
    engine.flush(&mut alerts);
    let bf = of(&alerts, "brute_force_success");
    assert_eq!(bf.len(), 1, "{alerts:#?}");
    assert_eq!(bf[0].lines, (1..=10).collect::<Vec<u64>>());

    // 19 users and a second spelling of one of them are 19 users, not a spray of 20.
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let mut events: Vec<Event> = (0..19)
        .map(|i| {
            okta_login(
                "acme",
                start + Duration::seconds(10 * i),
                i as u64 + 1,
                &Login::new(&format!("user{i:02}@acme.example"), "203.0.113.9", false),
            )
        })
        .collect();
    events.push(okta_login(
        "acme",
        start + Duration::seconds(195),
        20,
        &Login::new("USER00@ACME.EXAMPLE", "203.0.113.9", false),
    ));
    let mut alerts = run(&mut engine, &events);
    engine.flush(&mut alerts);
    assert!(of(&alerts, "password_spray").is_empty(), "{alerts:#?}");
    // The control: a 20th user of its own is a spray.
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    events.pop();
    events.push(okta_login(
        "acme",
        start + Duration::seconds(195),
        20,
        &Login::new("user19@acme.example", "203.0.113.9", false),
    ));
    let mut alerts = run(&mut engine, &events);
    engine.flush(&mut alerts);
    assert_eq!(of(&alerts, "password_spray").len(), 1, "{alerts:#?}");
}

#[test]
fn a_burst_at_the_floor_keeps_its_severity_and_three_times_the_floor_raises_it() {
    // A quiet user's prior makes even the floor's 10 failures p ~ 1e-18: the score alone would
    // raise every burst. 30 failures (3x the floor) do raise the grouped alert.
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0() + Duration::hours(9);
    let events: Vec<Event> = (0..30)
        .map(|i| {
            let l = Login::new("erin@example.com", "203.0.113.9", false);
            okta_login("acme", start + Duration::seconds(10 * i), i as u64 + 1, &l)
        })
        .collect();
    let mut alerts = run(&mut engine, &events);
    engine.flush(&mut alerts);
    let bursts: Vec<_> = of(&alerts, "auth_failure_burst")
        .into_iter()
        .filter(|a| a.entity == "erin@example.com")
        .collect();
    assert_eq!(bursts.len(), 2, "{bursts:#?}");
    let base = UebaConfig::default().auth_failure_burst.severity;
    assert_eq!(bursts[0].severity, base, "the 10th failure: {bursts:#?}");
    assert!(bursts[0]
        .explanation
        .as_deref()
        .unwrap()
        .contains("p < 1e-"));
    assert_eq!(bursts[1].count, 21);
    assert!(bursts[1].severity > base, "30 failures: {bursts:#?}");
}

/// A snapshot written before groups remembered what they reported (format 2) restores with its
/// open groups; what they reported since counts from then.
#[test]
fn a_snapshot_of_the_format_before_restores_its_open_groups() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0() + Duration::hours(9);
    let events = failed_logins("erin@example.com", start, "203.0.113.9", 1, 15);
    let alerts = run(&mut engine, &events);
    assert!(!alerts.is_empty());
    assert!(!engine.hygiene.groups.is_empty(), "a group is open");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ueba.snapshot");
    super::snapshot::write_groups_v2(&engine, &path).unwrap();
    let restored = UebaEngine::restore_from(UebaConfig::default(), KEY, &path).unwrap();
    assert!(restored.entities == engine.entities);
    let strip = |g: &hygiene::Group| hygiene::GroupV2::from(g.clone());
    for (key, group) in &engine.hygiene.groups {
        assert_eq!(strip(&restored.hygiene.groups[key]), strip(group));
        assert_eq!(restored.hygiene.groups[key].reported, 0);
    }
    assert_eq!(restored.hygiene.groups.len(), engine.hygiene.groups.len());
}

/// QA: a snapshot written before entity keys were case-folded finds its users written with
/// capitals under new keys. Restored, the tenant counts as watched from the snapshot's newest
/// event, so those users are not judged new actors while they warm up again.
#[test]
fn a_snapshot_from_before_case_folding_restarts_the_tenants_watch() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0() + Duration::hours(9);
    let events = failed_logins("erin@example.com", start, "203.0.113.9", 1, 3);
    run(&mut engine, &events);
    let since = engine.tenant_since["acme"];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ueba.snapshot");
    super::snapshot::write_case_sensitive(&engine, &path).unwrap();
    let restored = UebaEngine::restore_from(UebaConfig::default(), KEY, &path).unwrap();
    assert!(restored.entities == engine.entities);
    assert_eq!(restored.tenant_since["acme"], engine.watermark);
    assert!(engine.watermark > since);
    // The current format keeps the tenant's watch as it was.
    super::snapshot::write(&engine, &path).unwrap();
    let restored = UebaEngine::restore_from(UebaConfig::default(), KEY, &path).unwrap();
    assert_eq!(restored.tenant_since["acme"], since);
}

/// `n` failed logins of `user` from `ip`, 10 seconds apart from `at`, at input lines from
/// `line`.
fn failed_logins(user: &str, at: DateTime<Utc>, ip: &str, line: u64, n: i64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let l = Login::new(user, ip, false);
            okta_login("acme", at + Duration::seconds(10 * i), line + i as u64, &l)
        })
        .collect()
}

#[test]
fn failures_of_an_expired_burst_are_not_the_evidence_of_a_later_one() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let day1 = t0() + Duration::hours(9);
    let day2 = day1 + Duration::days(1);
    let failures = |at, ip, line, n| failed_logins("bob@example.com", at, ip, line, n);
    let mut events = failures(day1, "198.51.100.77", 1, 4);
    events.extend(failures(day2, "203.0.113.20", 5, 9));
    let ok = Login::new("bob@example.com", "203.0.113.20", true);
    events.push(okta_login("acme", day2 + Duration::seconds(120), 14, &ok));
    let alerts = run(&mut engine, &events);
    let bf = of(&alerts, "brute_force_success");
    assert_eq!(bf.len(), 1, "{alerts:#?}");
    assert_eq!(bf[0].lines, (5..=14).collect::<Vec<u64>>());
    let why = bf[0].explanation.as_deref().unwrap();
    assert!(why.contains("9 failed logins from 1 source IP(s)"), "{why}");
}

/// QA: a success dated an hour before the failures, arriving after them (a late page, a
/// newest-first listing), raised the alert naming the user's own login and closed the burst, so
/// the attacker's success right after went unreported.
#[test]
fn a_success_dated_before_the_failures_does_not_close_the_burst() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let burst = t0() + Duration::hours(12);
    let mut events = failed_logins("erin@example.com", burst, "203.0.113.77", 1, 6);
    let own = Login::new("erin@example.com", "198.51.100.10", true);
    events.push(okta_login("acme", burst - Duration::hours(1), 7, &own));
    let attacker = Login::new("erin@example.com", "203.0.113.77", true);
    events.push(okta_login(
        "acme",
        burst + Duration::seconds(120),
        8,
        &attacker,
    ));
    let alerts = run(&mut engine, &events);
    let bf = of(&alerts, "brute_force_success");
    assert_eq!(bf.len(), 1, "{alerts:#?}");
    assert_eq!(bf[0].timestamp, burst + Duration::seconds(120));
    let why = bf[0].explanation.as_deref().unwrap();
    assert!(why.contains("from 203.0.113.77"), "{why}");
    assert!(!bf[0].lines.contains(&7), "{:?}", bf[0].lines);
    // QA: a success dated before the newest failure but after enough of them (the user's own
    // typos after the attacker's success, arriving first) is still the attacker's.
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let mut events = failed_logins("erin@example.com", burst, "203.0.113.77", 1, 10);
    events.extend(failed_logins(
        "erin@example.com",
        burst + Duration::seconds(150),
        "198.51.100.10",
        11,
        2,
    ));
    events.push(okta_login(
        "acme",
        burst + Duration::seconds(120),
        13,
        &attacker,
    ));
    let bf = of(&run(&mut engine, &events), "brute_force_success").len();
    assert_eq!(bf, 1);
}

/// QA: after one burst of failures for a user, the same burst two days later was not
/// reported: the attack's hour, learned as normal, made the next one no surprise. An hour that
/// raised an alert is not learned.
#[test]
fn a_returning_attack_is_reported_again() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let user = "carol@example.com";
    let mut events = Vec::new();
    let mut line = 0;
    // Nine days of two ordinary logins a day, then a burst, and the same burst two days later.
    for day in 0..11 {
        for hour in [9, 14] {
            line += 1;
            let at = t0() + Duration::days(day) + Duration::hours(hour);
            events.push(okta_login(
                "acme",
                at,
                line,
                &Login::new(user, "198.51.100.10", true),
            ));
        }
    }
    let first = t0() + Duration::days(9) + Duration::hours(11);
    let again = first + Duration::days(2) + Duration::hours(1);
    events.extend(failed_logins(user, first, "203.0.113.9", 1000, 12));
    events.extend(failed_logins(user, again, "203.0.113.9", 2000, 15));
    events.sort_by_key(|e| e.ecs.timestamp);
    let alerts = run(&mut engine, &events);
    let bursts: Vec<_> = of(&alerts, "auth_failure_burst")
        .into_iter()
        .filter(|a| a.entity == user)
        .collect();
    assert!(
        bursts.iter().any(|a| a.timestamp >= again),
        "the second burst: {bursts:#?}"
    );
}

/// A burst's evidence is the events of the window its explanation counts, not failures of
/// days before (an analyst would pivot on the wrong address and day).
#[test]
fn a_burst_alert_holds_only_the_events_of_its_window() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let first = t0() + Duration::hours(9);
    let later = first + Duration::hours(2);
    let failures = |at, ip, line, n| failed_logins("dave@example.com", at, ip, line, n);
    // The same address fails a few times, then bursts two hours later.
    let mut events = failures(first, "203.0.113.20", 1, 8);
    events.extend(failures(later, "203.0.113.20", 101, 30));
    let alerts = run(&mut engine, &events);
    let burst: Vec<_> = of(&alerts, "auth_failure_burst")
        .into_iter()
        .filter(|a| a.entity == "203.0.113.20")
        .collect();
    assert_eq!(burst.len(), 1, "{alerts:#?}");
    assert!(!burst[0].lines.is_empty());
    assert!(
        burst[0].lines.iter().all(|l| *l >= 101),
        "evidence from day 1: {:?}",
        burst[0].lines
    );
}

#[test]
fn eight_failures_then_success_is_not_enough_when_the_threshold_is_nine() {
    let cfg = UebaConfig::from_toml("[brute_force_success]\nmin_failures = 9").unwrap();
    let mut engine = UebaEngine::new(cfg, KEY);
    let start = t0();
    let mut events: Vec<Event> = (0..8)
        .map(|i| {
            okta_login(
                "acme",
                start + Duration::seconds(20 * i),
                i as u64 + 1,
                &Login::new("bob@example.com", "198.51.100.9", false),
            )
        })
        .collect();
    events.push(okta_login(
        "acme",
        start + Duration::seconds(200),
        9,
        &Login::new("bob@example.com", "198.51.100.9", true),
    ));
    assert!(of(&run(&mut engine, &events), "brute_force_success").is_empty());
}

#[test]
fn thirty_users_failing_from_one_ip_in_ten_minutes_is_a_password_spray() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0() + Duration::hours(3);
    let users: Vec<String> = (0..30).map(|i| format!("user{i:02}@example.com")).collect();
    let events: Vec<Event> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            okta_login(
                "acme",
                start + Duration::seconds(19 * i as i64),
                i as u64 + 1,
                &Login::new(u, "203.0.113.50", false),
            )
        })
        .collect();
    let mut alerts = run(&mut engine, &events);
    let spray = of(&alerts, "password_spray");
    assert_eq!(
        spray.len(),
        1,
        "first alert at the threshold, the rest grouped"
    );
    assert_eq!(spray[0].entity, "203.0.113.50");
    assert_eq!(spray[0].entity_kind, EntityKind::Ip);
    let why = spray[0].explanation.as_deref().unwrap();
    assert!(
        why.starts_with("20 distinct users with failed logins from 203.0.113.50 within 10m"),
        "{why}"
    );
    assert_eq!(spray[0].event_ids.len(), 20);

    engine.flush(&mut alerts);
    let spray = of(&alerts, "password_spray");
    assert_eq!(spray.len(), 2, "flush emits the grouped repeats");
    assert_eq!(spray[1].count, 11, "the first alert plus 10 repeats");
    assert!(
        spray[1]
            .explanation
            .as_deref()
            .unwrap()
            .contains("last: 30 distinct users"),
        "{:?}",
        spray[1].explanation
    );
    assert!(spray[1].tags.contains(&"grouped".to_string()));
    // Both name the ATT&CK technique, in the tags as Sigma rules write it.
    for a in &spray {
        assert_eq!(a.threat_technique_id, ["T1110.003"]);
        assert!(
            a.tags.contains(&"attack.t1110.003".to_string()),
            "{:?}",
            a.tags
        );
    }

    // The same 30 users failing from 30 different IPs is not a spray.
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let events: Vec<Event> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let ip = format!("198.18.0.{}", i + 1);
            okta_login(
                "acme",
                start + Duration::seconds(19 * i as i64),
                i as u64 + 1,
                &Login::new(u, &ip, false),
            )
        })
        .collect();
    assert!(of(&run(&mut engine, &events), "password_spray").is_empty());
}

/// Alert groups close by their own stream's clock: a tenant whose logs arrive three hours behind
/// another's keeps its spray grouped (the other's hourly sweeps used to close the group, so each
/// further finding became a new alert).
#[test]
fn a_delayed_streams_alert_group_is_not_closed_by_another_streams_clock() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0() + Duration::hours(3);
    let mut events = Vec::new();
    for i in 0..30 {
        let user = format!("user{i:02}@example.com");
        events.push(okta_login(
            "globex",
            start + Duration::seconds(19 * i as i64),
            2 * i as u64 + 1,
            &Login::new(&user, "203.0.113.50", false),
        ));
        // acme's stream is three hours ahead and crosses an hour every six events.
        events.push(okta_login(
            "acme",
            start + Duration::hours(3) + Duration::minutes(10 * i as i64),
            2 * i as u64 + 2,
            &Login::new("carl@example.com", "198.51.100.7", true),
        ));
    }
    let globex_sprays = |alerts: &[Alert]| -> Vec<(String, u64)> {
        of(alerts, "password_spray")
            .into_iter()
            .filter(|a| a.tenant == "globex")
            .map(|a| (a.title.clone(), a.count))
            .collect()
    };
    let alerts = run(&mut engine, &events);
    let spray = globex_sprays(&alerts);
    assert_eq!(spray.len(), 1, "one alert, the rest grouped: {spray:?}");

    // The same with a restart in the middle: the streams' clocks come back with the snapshot
    // (without them, globex's group closed by acme's time at the first sweep after the restart).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ueba.snapshot");
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    // After the restart acme comes first, and its event crosses an hour (a sweep).
    let (before, after) = events.split_at(49);
    let mut alerts = run(&mut engine, before);
    engine.snapshot_to(&path).unwrap();
    let mut engine = UebaEngine::restore_from(UebaConfig::default(), KEY, &path).unwrap();
    alerts.extend(run(&mut engine, after));
    let spray = globex_sprays(&alerts);
    assert_eq!(spray.len(), 1, "grouped across the restart: {spray:?}");
}

/// Housekeeping followed only the newest stream's hour: when that stream stalled ahead of the
/// others, a delayed stream's alert groups never closed, so their repeats were reported only at
/// shutdown.
#[test]
fn a_delayed_streams_groups_close_while_the_newest_stream_stalls() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0() + Duration::hours(3);
    let mut events = vec![okta_login(
        "globex",
        start + Duration::hours(10),
        1,
        &Login::new("carl@example.com", "198.51.100.7", true),
    )];
    for i in 0..30 {
        let user = format!("user{i:02}@example.com");
        events.push(okta_login(
            "acme",
            start + Duration::seconds(19 * i as i64),
            i as u64 + 2,
            &Login::new(&user, "203.0.113.50", false),
        ));
    }
    // acme goes on for two more hours; globex has gone quiet ten hours ahead.
    for i in 0..5000 {
        events.push(okta_login(
            "acme",
            start + Duration::hours(1) + Duration::seconds(2 * i as i64),
            i as u64 + 100,
            &Login::new("dana@example.com", "198.51.100.8", true),
        ));
    }
    let alerts = run(&mut engine, &events);
    let sprays: Vec<u64> = of(&alerts, "password_spray")
        .iter()
        .map(|a| a.count)
        .collect();
    assert_eq!(sprays.len(), 2, "the alert, then its repeats: {sprays:?}");
    assert!(sprays[1] > 1, "{sprays:?}");
}

/// The hourly sweep followed the newest time of all streams: a tenant sending the same hours
/// as another (the same day twice, a backfill) had its groups closed only by a later event of
/// another tenant, whose input then carried them.
#[test]
fn a_tenant_behind_another_closes_its_groups_by_its_own_input() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0() + Duration::hours(3);
    let day = |tenant: &str| -> Vec<Event> {
        let mut events = Vec::new();
        for i in 0..30 {
            let user = format!("user{i:02}@example.com");
            events.push(okta_login(
                tenant,
                start + Duration::seconds(19 * i as i64),
                i as u64 + 1,
                &Login::new(&user, "203.0.113.50", false),
            ));
        }
        // Two more hours of ordinary sign-ins.
        for i in 0..24 {
            events.push(okta_login(
                tenant,
                start + Duration::minutes(10) + Duration::minutes(5 * i as i64),
                i as u64 + 100,
                &Login::new("dana@example.com", "198.51.100.8", true),
            ));
        }
        events
    };
    let sprays = |alerts: &[Alert], tenant: &str| -> Vec<u64> {
        of(alerts, "password_spray")
            .into_iter()
            .filter(|a| a.tenant == tenant)
            .map(|a| a.count)
            .collect()
    };
    let acme = run(&mut engine, &day("acme"));
    assert_eq!(
        sprays(&acme, "acme").len(),
        2,
        "{:?}",
        sprays(&acme, "acme")
    );
    let globex = run(&mut engine, &day("globex"));
    assert!(sprays(&globex, "acme").is_empty());
    assert_eq!(
        sprays(&globex, "globex"),
        sprays(&acme, "acme"),
        "the same day gives the same alerts, within the tenant's own input"
    );
}

/// `e` as received at `at` (the other helpers receive every record at its own time).
fn received(mut e: Event, at: DateTime<Utc>) -> Event {
    e.received_at = at;
    e
}

/// A record dated hours after its receipt (a clock ahead, a forged record; believed within
/// `MAX_FUTURE_SKEW`) was counted at its own time: its entity's windows moved nine hours
/// ahead, so the burst from the same address right after it, on time, fell out of them and
/// raised nothing. It counts at what its stream's clock allows now, live and in a replay of old
/// logs (every record received "now") alike.
#[test]
fn a_record_dated_ahead_of_its_receipt_does_not_blind_its_entitys_windows() {
    let ip = "203.0.113.66";
    let bursts = |alerts: &[Alert]| -> Vec<u64> {
        of(alerts, "auth_failure_burst")
            .into_iter()
            .filter(|a| a.entity == ip)
            .map(|a| a.count)
            .collect()
    };
    let start = t0() + Duration::hours(9);
    let forged = |received_at: DateTime<Utc>| {
        let l = Login::new("kai@example.com", ip, false);
        let e = okta_login("acme", received_at + Duration::hours(9), 1, &l);
        received(e, received_at)
    };
    let failures = |at: DateTime<Utc>| -> Vec<Event> {
        (0..10)
            .map(|i| {
                let user = format!("user{i:02}@example.com");
                let at = at + Duration::seconds(10 * i);
                okta_login("acme", at, i as u64 + 2, &Login::new(&user, ip, false))
            })
            .collect()
    };
    // Live: the records arrive as they happen.
    let mut events = vec![okta_login(
        "acme",
        start,
        100,
        &Login::new("carl@example.com", "198.51.100.7", true),
    )];
    events.push(forged(start + Duration::seconds(5)));
    events.extend(failures(start + Duration::seconds(60)));
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let alerts = run(&mut engine, &events);
    assert_eq!(bursts(&alerts), [1], "live: {alerts:#?}");

    // A replay of those hours two days later, every record received then: the forged record
    // is dated ahead of that receipt.
    let now = start + Duration::days(2);
    let mut events: Vec<Event> = events.iter().map(|e| received(e.clone(), now)).collect();
    events[1] = forged(now);
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let mut alerts = run(&mut engine, &events);
    assert_eq!(bursts(&alerts), [1], "replay: {alerts:#?}");
    engine.flush(&mut alerts);
    // It still counts, at its believed time: with it, the ninth on-time failure alerts and the
    // tenth is a repeat.
    assert_eq!(bursts(&alerts), [1, 2], "{alerts:#?}");

    // The replay resumed from a snapshot (`detect --state-dir`, the next file), the forged
    // record first: the stream's delay is not in the snapshot, its watermark bounds the record.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ueba.snapshot");
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let mut alerts = run(&mut engine, &events[..1]);
    engine.snapshot_to(&path).unwrap();
    let mut engine = UebaEngine::restore_from(UebaConfig::default(), KEY, &path).unwrap();
    alerts.extend(run(&mut engine, &events[1..]));
    assert_eq!(bursts(&alerts), [1], "resumed replay: {alerts:#?}");
}

/// The counts of the password-spray alerts of 40 users failing from one address, 10 s apart,
/// each received at `receipt(its time)`, with `odd(time of the 26th)` after the 26th.
fn spray_alert_counts(
    receipt: impl Fn(DateTime<Utc>) -> DateTime<Utc>,
    odd: impl Fn(DateTime<Utc>) -> Event,
) -> (Vec<u64>, Vec<Alert>) {
    let start = t0() + Duration::hours(9);
    let mut events = Vec::new();
    for i in 0..40i64 {
        let user = format!("user{i:02}@example.com");
        let at = start + Duration::seconds(10 * i);
        let l = Login::new(&user, "203.0.113.50", false);
        events.push(received(
            okta_login("acme", at, i as u64 + 1, &l),
            receipt(at),
        ));
        if i == 25 {
            events.push(odd(at));
        }
    }
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let mut alerts = run(&mut engine, &events);
    engine.flush(&mut alerts);
    let counts = of(&alerts, "password_spray")
        .iter()
        .map(|a| a.count)
        .collect();
    (counts, alerts)
}

/// The same record moved its stream's clock nine hours ahead, which closed the stream's alert
/// groups at once: every further finding of a spray under way became a new alert.
#[test]
fn a_record_dated_ahead_of_its_receipt_does_not_close_its_streams_groups() {
    let (sprays, alerts) = spray_alert_counts(
        |at| at,
        |at| {
            let l = Login::new("carl@example.com", "198.51.100.7", true);
            received(okta_login("acme", at + Duration::hours(9), 100, &l), at)
        },
    );
    assert_eq!(
        sprays,
        [1, 21],
        "one alert, then its repeats grouped: {alerts:#?}"
    );
}

/// A record whose time `Event::new` replaced (dated 2999, say) is dated at its receipt: in a
/// replay of old logs, "now". It moved its stream's clock there, which closed the stream's
/// alert groups at once; it no longer moves it.
#[test]
fn a_replayed_record_with_a_replaced_time_does_not_close_its_streams_groups() {
    let now = t0() + Duration::days(2);
    let (sprays, alerts) = spray_alert_counts(
        |_| now,
        |_| {
            // What `Event::new` makes of a record dated 2999 received now.
            let l = Login::new("carl@example.com", "198.51.100.7", true);
            let mut e = okta_login("acme", now, 100, &l);
            e.timestamp_adjusted = true;
            e
        },
    );
    assert_eq!(
        sprays,
        [1, 21],
        "one alert, then its repeats grouped: {alerts:#?}"
    );
}

#[test]
fn steady_service_account_is_normal_but_a_quiet_user_doing_the_same_is_not() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0();
    let mut events = Vec::new();
    let mut line = 0;
    // Two days of history: the service account downloads 120 files an hour, around the clock;
    // bob downloads two files a day.
    for h in 0..48i64 {
        for i in 0..120i64 {
            line += 1;
            events.push(drive_download(
                start + Duration::hours(h) + Duration::seconds(30 * i),
                line,
                "svc-backup@example.com",
            ));
        }
        if h % 24 == 10 || h % 24 == 15 {
            line += 1;
            events.push(drive_download(
                start + Duration::hours(h) + Duration::minutes(7),
                line,
                "bob@example.com",
            ));
        }
    }
    let history = run(&mut engine, &events);
    assert!(of(&history, "volume_anomaly").is_empty(), "{history:#?}");

    // Hour 49: both download 120 files.
    let burst_start = start + Duration::hours(49);
    let mut events = Vec::new();
    for i in 0..120i64 {
        for user in ["svc-backup@example.com", "bob@example.com"] {
            line += 1;
            events.push(drive_download(
                burst_start + Duration::seconds(30 * i),
                line,
                user,
            ));
        }
    }
    let alerts = run(&mut engine, &events);
    let vol = of(&alerts, "volume_anomaly");
    assert_eq!(vol.len(), 1, "{vol:#?}");
    assert_eq!(vol[0].entity, "bob@example.com");
    let why = vol[0].explanation.as_deref().unwrap();
    assert!(
        why.starts_with("50 data-access/export/delete/API events in 1h for bob@example.com"),
        "{why}"
    );
    assert!(why.contains("p < 1e-"), "{why}");
    assert!(vol[0].score.unwrap() > 6.0);
    assert_eq!(
        vol[0].event_ids.len(),
        20,
        "evidence is bounded to max_evidence_events"
    );
}

#[test]
fn a_new_user_cannot_trigger_volume_anomaly_during_warm_up() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let events: Vec<Event> = (0..200)
        .map(|i| {
            drive_download(
                t0() + Duration::seconds(10 * i),
                i as u64 + 1,
                "new@example.com",
            )
        })
        .collect();
    assert!(of(&run(&mut engine, &events), "volume_anomaly").is_empty());
}

#[test]
fn restart_mid_window_keeps_the_count_and_does_not_realert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("ueba.json");
    let start = t0() + Duration::hours(14);
    let fail = |i: i64, user: &str| {
        let ip = if user.starts_with("carol") {
            "192.0.2.200"
        } else {
            "192.0.2.210"
        };
        okta_login(
            "acme",
            start + Duration::seconds(20 * i),
            i as u64 + 1,
            &Login::new(user, ip, false),
        )
    };

    // carol: 6 failures, restart, 3 more and a success: brute force still sees 9.
    // dan: 7 failures, restart, 5 more: the burst floor (10) is crossed after the restart.
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let mut before: Vec<Event> = (0..6).map(|i| fail(i, "carol@example.com")).collect();
    before.extend((0..7).map(|i| fail(i, "dan@example.com")));
    before.sort_by_key(|e| e.timestamp);
    let alerts = run(&mut engine, &before);
    assert!(alerts.is_empty(), "{alerts:#?}");
    engine.snapshot_to(&path).unwrap();
    assert!(
        !path.with_extension("json.tmp").exists(),
        "temp file renamed away"
    );
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"PRMSTAT1"), "the binary form");
    let text = String::from_utf8_lossy(&bytes);
    for clear in ["carol", "dan@", "example.com", "192.0.2.200"] {
        assert!(!text.contains(clear), "snapshot leaks `{clear}`");
    }
    let tracked = engine.tracked_entities();
    let tenant_since = engine.tenant_since.clone();
    assert_eq!(tenant_since.len(), 1, "{tenant_since:?}");
    drop(engine);

    // The JSON snapshots of earlier versions restore to the same state.
    let json_path = dir.path().join("state").join("ueba-v1.json");
    {
        let engine = UebaEngine::restore_from(UebaConfig::default(), KEY, &path).unwrap();
        super::snapshot::write_json(&engine, &json_path).unwrap();
        let from_json = UebaEngine::restore_from(UebaConfig::default(), KEY, &json_path).unwrap();
        assert_eq!(from_json.tracked_entities(), tracked);
        assert!(
            from_json.entities == engine.entities,
            "same entities from JSON and binary"
        );
        // So do snapshots of format `perimeter-ueba/1` (10-slot windows), binary and JSON.
        for binary in [true, false] {
            let legacy = dir
                .path()
                .join("state")
                .join(format!("ueba-legacy-{binary}"));
            super::snapshot::write_legacy(&engine, &legacy, binary).unwrap();
            let text = String::from_utf8_lossy(&std::fs::read(&legacy).unwrap()).into_owned();
            assert!(text.contains("perimeter-ueba/1"), "{binary}");
            let restored = UebaEngine::restore_from(UebaConfig::default(), KEY, &legacy).unwrap();
            assert!(restored.entities == engine.entities, "binary {binary}");
        }
    }

    let mut engine = UebaEngine::restore_from(UebaConfig::default(), KEY, &path).unwrap();
    assert_eq!(engine.tracked_entities(), tracked);
    // How long each tenant has been watched survives, and is no stream of its own.
    assert_eq!(engine.tenant_since, tenant_since);
    assert!(engine.stream_clocks.values().all(|s| !s.contains_key("")));
    let mut after: Vec<Event> = (6..9).map(|i| fail(i, "carol@example.com")).collect();
    after.push(okta_login(
        "acme",
        start + Duration::seconds(200),
        100,
        &Login::new("carol@example.com", "192.0.2.201", true),
    ));
    after.extend((7..12).map(|i| fail(i, "dan@example.com")));
    after.sort_by_key(|e| e.timestamp);
    let alerts = run(&mut engine, &after);
    let bf = of(&alerts, "brute_force_success");
    assert_eq!(bf.len(), 1, "{alerts:#?}");
    assert!(
        bf[0]
            .explanation
            .as_deref()
            .unwrap()
            .starts_with("9 failed logins"),
        "{:?}",
        bf[0].explanation
    );
    let burst: Vec<_> = of(&alerts, "auth_failure_burst")
        .into_iter()
        .filter(|a| a.entity == "dan@example.com")
        .collect();
    assert_eq!(burst.len(), 1, "{alerts:#?}");
    assert!(
        burst[0]
            .explanation
            .as_deref()
            .unwrap()
            .starts_with("10 failed logins in 10m"),
        "{:?}",
        burst[0].explanation
    );
    // dan's IP crossed the floor too (7 + 5); carol's (6 + 3) did not.
    assert_eq!(
        of(&alerts, "auth_failure_burst")
            .iter()
            .filter(|a| a.entity == "192.0.2.210")
            .count(),
        1
    );
    assert_eq!(
        of(&alerts, "auth_failure_burst")
            .iter()
            .filter(|a| a.entity == "192.0.2.200")
            .count(),
        0
    );

    // Restart again after the alert: more failures in the suppression window do not re-alert,
    // they are grouped (the restored group only knows the hashed key until the entity shows up again).
    engine.snapshot_to(&path).unwrap();
    let mut engine = UebaEngine::restore_from(UebaConfig::default(), KEY, &path).unwrap();
    let more: Vec<Event> = (12..15).map(|i| fail(i, "dan@example.com")).collect();
    let mut alerts = run(&mut engine, &more);
    assert!(of(&alerts, "auth_failure_burst").is_empty(), "{alerts:#?}");
    engine.flush(&mut alerts);
    let grouped: Vec<_> = of(&alerts, "auth_failure_burst")
        .into_iter()
        .filter(|a| a.entity == "dan@example.com")
        .collect();
    assert_eq!(grouped.len(), 1);
    // The first alert (10th failure) + 2 repeats before the second restart + 3 after it: the
    // open group's repeat count survived the snapshot too.
    assert_eq!(grouped[0].count, 6);

    // A snapshot is bound to its key.
    let err = UebaEngine::restore_from(UebaConfig::default(), [1; 32], &path)
        .err()
        .unwrap();
    assert!(err.to_string().contains("different entity key"), "{err}");
    std::fs::write(
        &path,
        "{\"format\": \"perimeter-ueba/1\", \"key_check\": 3}",
    )
    .unwrap();
    let err = UebaEngine::restore_from(UebaConfig::default(), KEY, &path)
        .err()
        .unwrap();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn a_service_sets_an_unusable_snapshot_aside_and_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ueba.snapshot");
    // None yet: an empty engine, nothing set aside.
    let (_, aside) = UebaEngine::restore_or_set_aside(UebaConfig::default(), KEY, &path).unwrap();
    assert!(aside.is_none());
    // A usable one is restored.
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let events: Vec<Event> = (0..3)
        .map(|i| {
            okta_login(
                "acme",
                t0() + Duration::seconds(i),
                i as u64 + 1,
                &Login::new("fay@example.com", "192.0.2.9", false),
            )
        })
        .collect();
    run(&mut engine, &events);
    engine.snapshot_to(&path).unwrap();
    let (restored, aside) =
        UebaEngine::restore_or_set_aside(UebaConfig::default(), KEY, &path).unwrap();
    assert!(aside.is_none());
    assert_eq!(restored.tracked_entities(), engine.tracked_entities());
    assert!(restored.tracked_entities() > 0);
    // Another key's snapshot, then garbage: each is moved aside, the engine starts empty.
    for (key, damage) in [([1u8; 32], false), (KEY, true)] {
        if damage {
            std::fs::write(&path, "not a snapshot").unwrap();
        } else {
            engine.snapshot_to(&path).unwrap();
        }
        let (fresh, aside) =
            UebaEngine::restore_or_set_aside(UebaConfig::default(), key, &path).unwrap();
        let (moved, reason) = aside.expect("set aside");
        assert_eq!(fresh.tracked_entities(), 0);
        assert!(!path.exists() && moved.exists(), "{}", moved.display());
        assert!(
            moved
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ueba.snapshot.unreadable-"),
            "{}",
            moved.display()
        );
        assert!(!reason.is_empty());
        std::fs::remove_file(moved).unwrap();
    }
}

#[test]
fn tenant_thresholds_override_the_defaults() {
    let cfg = UebaConfig::from_toml(
        "[auth_failure_burst]\nmin_failures = 10\n[tenants.strict.auth_failure_burst]\nmin_failures = 4\n",
    )
    .unwrap();
    cfg.validate().unwrap();
    let mut engine = UebaEngine::new(cfg, KEY);
    let mut events = Vec::new();
    for tenant in ["strict", "relaxed"] {
        for i in 0..5 {
            events.push(okta_login(
                tenant,
                t0() + Duration::seconds(30 * i),
                i as u64 + 1,
                &Login::new("erin@example.com", "198.51.100.70", false),
            ));
        }
    }
    events.sort_by_key(|e| e.timestamp);
    let alerts = run(&mut engine, &events);
    let bursts = of(&alerts, "auth_failure_burst");
    assert!(!bursts.is_empty());
    assert!(bursts.iter().all(|a| a.tenant == "strict"), "{bursts:#?}");
    assert_eq!(
        bursts
            .iter()
            .filter(|a| a.entity == "erin@example.com")
            .count(),
        1
    );
    // The floor is 4, but 4 failures against the prior (0.08/10m) give p ~ 2e-6 > 1e-6: the 5th alerts.
    let why = bursts[0].explanation.as_deref().unwrap();
    assert!(why.starts_with("5 failed logins in 10m"), "{why}");
    // Same user name, two tenants: two separate entities.
    assert_eq!(engine.tracked_entities(), 4);
}

#[test]
fn config_with_an_unknown_key_is_rejected() {
    let err = UebaConfig::from_toml("[volume_anomaly]\nwindow_minutes = 60\n").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `window_minutes`"),
        "{err}"
    );
}

fn okta_admin(t: DateTime<Utc>, line: u64, user: &str, action: &str, category: &str) -> Event {
    let raw = json!({
        "uuid": format!("adm-{line}"),
        "published": t.to_rfc3339(),
        "eventType": action,
        "actor": {"id": "00uadmin", "type": "User", "alternateId": user},
        "client": {"ipAddress": "198.51.100.5"},
        "outcome": {"result": "SUCCESS"},
        "target": [{"type": "PolicyEntity", "displayName": "Default MFA policy"}]
    });
    let ecs = Ecs {
        event_action: Some(action.into()),
        event_category: vec![category.into()],
        event_type: vec![if category == "configuration" {
            "change"
        } else {
            "info"
        }
        .into()],
        event_outcome: Outcome::Success,
        user_name: Some(user.into()),
        source_ip: Some("198.51.100.5".into()),
        ..Default::default()
    };
    event("okta", "acme", t, line, ecs, raw)
}

#[test]
fn config_change_by_a_rare_actor_at_an_unusual_hour_alerts_and_a_routine_admin_does_not() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let mut events = Vec::new();
    let mut line = 0;
    for day in 0..5i64 {
        for h in 9..17i64 {
            for user in ["frank@example.com", "grace@example.com"] {
                for m in [5, 35] {
                    line += 1;
                    let t = t0() + Duration::days(day) + Duration::hours(h) + Duration::minutes(m);
                    events.push(okta_admin(
                        t,
                        line,
                        user,
                        "user.session.access_admin_app",
                        "session",
                    ));
                }
            }
        }
        // grace changes security configuration every working day.
        line += 1;
        events.push(okta_admin(
            t0() + Duration::days(day) + Duration::hours(11),
            line,
            "grace@example.com",
            "policy.lifecycle.update",
            "configuration",
        ));
    }
    let alerts = run(&mut engine, &events);
    assert!(
        of(&alerts, "config_change").is_empty(),
        "warm-up and routine: {alerts:#?}"
    );

    let day6 = t0() + Duration::days(5);
    let later = vec![
        okta_admin(
            day6 + Duration::hours(11),
            1000,
            "grace@example.com",
            "policy.lifecycle.update",
            "configuration",
        ),
        okta_admin(
            day6 + Duration::hours(3),
            1001,
            "frank@example.com",
            "policy.rule.deactivate",
            "configuration",
        ),
        // Not security-relevant: a theme change.
        okta_admin(
            day6 + Duration::hours(12),
            1002,
            "frank@example.com",
            "org.theme.update",
            "configuration",
        ),
        // An account never seen in five days of the tenant switches an MFA factor off.
        okta_admin(
            day6 + Duration::hours(14),
            1003,
            "it-temp@example.com",
            "system.mfa.factor.deactivate",
            "configuration",
        ),
    ];
    let alerts = run(&mut engine, &later);
    let cc = of(&alerts, "config_change");
    assert_eq!(cc.len(), 2, "{cc:#?}");
    let new = cc[1];
    assert_eq!(new.entity, "it-temp@example.com");
    assert_eq!(new.title, "Security configuration change by a new actor");
    assert_eq!(new.severity, Severity::High, "a new actor escalates");
    assert!(
        new.explanation
            .as_deref()
            .unwrap()
            .contains("first seen 0 h ago, in a tenant watched for 5 days"),
        "{new:#?}"
    );
    assert_eq!(cc[0].entity, "frank@example.com");
    let why = cc[0].explanation.as_deref().unwrap();
    assert!(
        why.contains("policy.rule.deactivate") && why.contains("0.00 security config changes/week"),
        "{why}"
    );
    assert!(why.contains("03:00 UTC"), "{why}");
    assert_eq!(
        cc[0].severity,
        Severity::High,
        "rare and off-hours escalates"
    );
}

#[test]
fn first_seen_country_asn_and_client_after_warm_up() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let mut events = Vec::new();
    for day in 0..4i64 {
        events.push(okta_login(
            "acme",
            t0() + Duration::days(day) + Duration::hours(9),
            day as u64 + 1,
            &Login::new("heidi@example.com", "198.51.100.30", true),
        ));
    }
    let alerts = run(&mut engine, &events);
    assert!(of(&alerts, "first_seen").is_empty());
    let odd = Login {
        country: "RU",
        asn: 12389,
        ua: "python-requests/2.31.0",
        ..Login::new("heidi@example.com", "203.0.113.99", true)
    };
    let alerts = run(
        &mut engine,
        &[okta_login(
            "acme",
            t0() + Duration::days(4) + Duration::hours(2),
            10,
            &odd,
        )],
    );
    let fs = of(&alerts, "first_seen");
    assert_eq!(fs.len(), 1);
    let why = fs[0].explanation.as_deref().unwrap();
    assert!(
        why.contains("country `RU`")
            && why.contains("ASN `12389`")
            && why.contains("user-agent family `python-requests`"),
        "{why}"
    );
    assert!(!why.contains("Chrome"));
    assert_eq!(
        fs[0].severity,
        Severity::Medium,
        "several new attributes escalate low -> medium"
    );

    // A failed guess from a new place is neither an alert nor learned: the success from there
    // after it is the alert.
    let guess = Login {
        country: "NL",
        ..Login::new("heidi@example.com", "203.0.113.77", false)
    };
    let at = |h: i64| t0() + Duration::days(4) + Duration::hours(h);
    let alerts = run(&mut engine, &[okta_login("acme", at(3), 12, &guess)]);
    assert!(of(&alerts, "first_seen").is_empty(), "{alerts:?}");
    let alerts = run(
        &mut engine,
        &[okta_login("acme", at(5), 13, &Login { ok: true, ..guess })],
    );
    let fs = of(&alerts, "first_seen");
    assert_eq!(fs.len(), 1, "{alerts:?}");
    assert_eq!(fs[0].lines, [13]);

    // A brand-new user is learned silently.
    let new = Login {
        country: "BR",
        ..Login::new("ivan@example.com", "203.0.113.1", true)
    };
    let alerts = run(
        &mut engine,
        &[okta_login(
            "acme",
            t0() + Duration::days(4) + Duration::hours(3),
            11,
            &new,
        )],
    );
    assert!(of(&alerts, "first_seen").is_empty());
}

#[test]
fn rate_limit_violations_per_app_and_per_access_key() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let start = t0() + Duration::hours(5);
    let mut events = Vec::new();
    for i in 0..12i64 {
        let raw = json!({
            "uuid": format!("rl-{i}"),
            "published": (start + Duration::seconds(40 * i)).to_rfc3339(),
            "eventType": "system.org.rate_limit.violation",
            "actor": {"id": "0oa1integration", "type": "PublicClientApp", "alternateId": "0oa1integration"},
            "client": {"ipAddress": "198.51.100.80"},
            "outcome": {"result": "DENY"}
        });
        let ecs = Ecs {
            event_action: Some("system.org.rate_limit.violation".into()),
            event_category: vec!["network".into()],
            source_ip: Some("198.51.100.80".into()),
            ..Default::default()
        };
        events.push(event(
            "okta",
            "acme",
            start + Duration::seconds(40 * i),
            i as u64 + 1,
            ecs,
            raw,
        ));
    }
    for i in 0..8i64 {
        let raw = json!({
            "eventVersion": "1.08",
            "eventTime": (start + Duration::seconds(30 * i)).to_rfc3339(),
            "eventSource": "ec2.amazonaws.com",
            "eventName": "DescribeInstances",
            "eventType": "AwsApiCall",
            "errorCode": "ThrottlingException",
            "errorMessage": "Rate exceeded",
            "userIdentity": {"type": "IAMUser", "userName": "deploy-bot", "accessKeyId": "AKIAIOSFODNN7EXAMPLE"},
            "recipientAccountId": "123456789012"
        });
        let ecs = Ecs {
            event_action: Some("DescribeInstances".into()),
            event_outcome: Outcome::Failure,
            user_name: Some("deploy-bot".into()),
            cloud_account_id: Some("123456789012".into()),
            ..Default::default()
        };
        events.push(event(
            "cloudtrail",
            "acme",
            start + Duration::seconds(30 * i),
            100 + i as u64,
            ecs,
            raw,
        ));
    }
    events.sort_by_key(|e| e.timestamp);
    let alerts = run(&mut engine, &events);
    let rl = of(&alerts, "rate_limit_violation");
    let entities: Vec<(&str, EntityKind)> = rl
        .iter()
        .map(|a| (a.entity.as_str(), a.entity_kind))
        .collect();
    assert!(
        entities.contains(&("0oa1integration", EntityKind::App)),
        "{entities:?}"
    );
    assert!(
        entities.contains(&("198.51.100.80", EntityKind::Ip)),
        "{entities:?}"
    );
    assert!(
        entities.contains(&("AKIAIOSFODNN7EXAMPLE", EntityKind::Token)),
        "{entities:?}"
    );
    let why = rl[0].explanation.as_deref().unwrap();
    assert!(
        why.starts_with("5 rate-limit/throttling events in 10m"),
        "{why}"
    );
    // Throttled calls are not counted as volume.
    assert!(of(&alerts, "volume_anomaly").is_empty());
}

#[test]
fn memory_is_bounded_by_max_entities_and_idle_eviction() {
    let cfg = UebaConfig {
        max_entities: 100,
        entity_idle_days: 1,
        ..Default::default()
    };
    let mut engine = UebaEngine::new(cfg, KEY);
    let events: Vec<Event> = (0..1000)
        .map(|i| {
            let u = format!("u{i}@example.com");
            okta_login(
                "acme",
                t0() + Duration::seconds(i),
                i as u64 + 1,
                &Login::new(&u, "198.51.100.1", true),
            )
        })
        .collect();
    run(&mut engine, &events);
    assert!(
        engine.tracked_entities() <= 100,
        "{}",
        engine.tracked_entities()
    );
    assert!(engine.stats().entities_evicted_total >= 900);
    // Two days later everything idle is gone.
    let late = okta_login(
        "acme",
        t0() + Duration::days(2),
        5000,
        &Login::new("late@example.com", "198.51.100.1", true),
    );
    run(&mut engine, &[late]);
    assert_eq!(engine.tracked_entities(), 1);
}

#[test]
fn disabled_detectors_stay_silent() {
    let cfg = UebaConfig::from_toml(
        "[password_spray]\nenabled = false\n[auth_failure_burst]\nenabled = false\n",
    )
    .unwrap();
    let mut engine = UebaEngine::new(cfg, KEY);
    let events: Vec<Event> = (0..30)
        .map(|i| {
            let u = format!("user{i}@example.com");
            okta_login(
                "acme",
                t0() + Duration::seconds(10 * i),
                i as u64 + 1,
                &Login::new(&u, "203.0.113.50", false),
            )
        })
        .collect();
    assert!(run(&mut engine, &events).is_empty());
    assert_eq!(engine.name(), "ueba");
}

mod stream_proptests {
    use super::*;
    use proptest::prelude::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        let cats = prop::sample::subsequence(
            vec![
                "authentication",
                "iam",
                "configuration",
                "file",
                "database",
                "session",
                "network",
            ],
            0..3,
        );
        let types = prop::sample::subsequence(
            vec!["start", "change", "creation", "deletion", "access", "info"],
            0..3,
        );
        (
            cats,
            types,
            prop::option::of("[a-z._ ]{0,30}"),
            0u8..3,
            prop::option::of(0u8..6),
            prop::option::of(0u8..4),
            -100_000_000i64..100_000_000,
            any::<bool>(),
            prop::option::of(any::<u64>()),
        )
            .prop_map(|(cats, types, action, outcome, user, ip, dt, throttle, asn)| {
                let ecs = Ecs {
                    event_action: action,
                    event_category: cats.into_iter().map(String::from).collect(),
                    event_type: types.into_iter().map(String::from).collect(),
                    event_outcome: [Outcome::Success, Outcome::Failure, Outcome::Unknown][outcome as usize],
                    user_name: user.map(|u| format!("u{u}@example.com")),
                    source_ip: ip.map(|i| format!("192.0.2.{i}")),
                    source_as_number: asn,
                    source_geo_country_iso_code: asn.map(|a| format!("C{}", a % 3)),
                    user_agent_original: Some("curl/8.0".into()),
                    ..Default::default()
                };
                let raw = if throttle {
                    json!({"errorCode": "ThrottlingException", "token_id": dt, "integration": "app", "status": 429})
                } else {
                    json!({"n": dt, "actor": {"type": "PublicClientApp", "id": 5}})
                };
                event("okta", "acme", t0() + Duration::seconds(dt), 1, ecs, raw)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any event mix, in any time order (gaps of years, late events), never panics, keeps
        /// the entity bound, and survives a snapshot round trip unchanged.
        #[test]
        fn arbitrary_streams_are_safe(events in prop::collection::vec(arb_event(), 1..80)) {
            let cfg = UebaConfig { max_entities: 8, ..Default::default() };
            let mut engine = UebaEngine::new(cfg.clone(), KEY);
            let mut alerts = run(&mut engine, &events);
            prop_assert!(engine.tracked_entities() <= 8);
            engine.flush(&mut alerts);
            for a in &alerts {
                prop_assert!(a.rule_id.starts_with("ueba.") && !a.id.is_empty());
                prop_assert!(a.event_ids.len() <= 21);
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.json");
            engine.snapshot_to(&path).unwrap();
            let restored = UebaEngine::restore_from(cfg, KEY, &path).unwrap();
            prop_assert_eq!(restored.tracked_entities(), engine.tracked_entities());
            prop_assert!(restored.entities == engine.entities);
        }
    }
}

fn github_install(t: DateTime<Utc>, line: u64, actor: &str, app: &str) -> Event {
    let raw = json!({
        "@timestamp": t.timestamp_millis(),
        "_document_id": format!("doc-{line}"),
        "action": "integration_installation.create",
        "actor": actor,
        "org": "acme-corp",
        "integration": app,
        "repository_selection": "all"
    });
    let ecs = Ecs {
        event_action: Some("integration_installation.create".into()),
        event_category: vec!["configuration".into()],
        event_type: vec!["creation".into()],
        event_outcome: Outcome::Success,
        user_name: Some(actor.into()),
        organization_id: Some("acme-corp".into()),
        ..Default::default()
    };
    event("github", "acme", t, line, ecs, raw)
}

#[test]
fn a_new_integration_for_the_org_after_warm_up_is_first_seen() {
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let learned = run(
        &mut engine,
        &[github_install(t0(), 1, "octo-admin", "dependabot")],
    );
    assert!(
        of(&learned, "first_seen").is_empty(),
        "learned during warm-up"
    );
    let again = run(
        &mut engine,
        &[github_install(
            t0() + Duration::days(4),
            2,
            "octo-admin",
            "dependabot",
        )],
    );
    assert!(of(&again, "first_seen").is_empty(), "known app");
    let alerts = run(
        &mut engine,
        &[github_install(
            t0() + Duration::days(4) + Duration::hours(1),
            3,
            "octo-admin",
            "sketchy-ci",
        )],
    );
    let org: Vec<_> = of(&alerts, "first_seen")
        .into_iter()
        .filter(|a| a.entity_kind == EntityKind::Org)
        .collect();
    assert_eq!(org.len(), 1, "{alerts:#?}");
    assert_eq!(org[0].entity, "acme-corp");
    let why = org[0].explanation.as_deref().unwrap();
    assert!(
        why.contains("OAuth app/integration `sketchy-ci`") && !why.contains("dependabot"),
        "{why}"
    );
    assert_eq!(
        org[0].severity,
        Severity::Medium,
        "a new org app escalates low -> medium"
    );
}
