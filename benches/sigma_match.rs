//! Sigma matcher throughput: >= 1,000 rules (the `detection-rules/` pack plus generated variants of
//! realistic SaaS rules) over a mixed-source set of realistic SaaS events. Prints events/s on one
//! core for the matcher alone, then the memory held by 1M distinct correlation keys, then runs the
//! criterion benchmark.

mod cputime;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, Criterion, Throughput};
use perimeter_detect::sigma::{RuleSet, SigmaDetector, SigmaOptions};
use perimeter_model::{Detector, Ecs, Event, Outcome, RawRecord};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// (product, service, selection YAML with `{v}` for the variant number)
const TEMPLATES: &[(&str, &str, &str)] = &[
    (
        "okta",
        "",
        "        eventType: 'user.mfa.factor.deactivate{v}'\n        outcome.result: SUCCESS",
    ),
    (
        "okta",
        "",
        "        eventType|startswith: 'policy.lifecycle.update{v}'",
    ),
    (
        "okta",
        "",
        "        eventType: 'user.session.impersonation.grant{v}'",
    ),
    (
        "okta",
        "",
        "        displayMessage|contains: 'Admin privilege granted {v}'",
    ),
    (
        "github",
        "audit",
        "        action: 'org.disable_two_factor_requirement{v}'",
    ),
    (
        "github",
        "audit",
        "        action|startswith: 'repo.access{v}'\n        visibility: public",
    ),
    (
        "github",
        "audit",
        "        action: 'public_key.create{v}'\n        actor|endswith: '[bot]'",
    ),
    (
        "gcp",
        "google_workspace.admin",
        "        events.name: 'CHANGE_TWO_STEP_VERIFICATION_ENROLLMENT{v}'",
    ),
    (
        "google_workspace",
        "",
        "        events.parameters.value|contains: 'anyone_with_link{v}'",
    ),
    (
        "slack",
        "",
        "        action: 'user_role_changed_to_admin{v}'",
    ),
    (
        "slack",
        "",
        "        action|contains: 'export{v}'\n        entity.type: workspace",
    ),
    (
        "m365",
        "",
        "        Operation: 'Add member to role.{v}'\n        ResultStatus: Success",
    ),
    ("m365", "", "        Operation|contains: 'New-InboxRule{v}'"),
    (
        "aws",
        "cloudtrail",
        "        eventSource: iam.amazonaws.com\n        eventName: 'CreateAccessKey{v}'",
    ),
    ("aws", "cloudtrail", "        eventName: 'StopLogging{v}'"),
    (
        "aws",
        "cloudtrail",
        "        userIdentity.type: Root\n        eventName|startswith: 'Console{v}'",
    ),
    (
        "onepassword",
        "",
        "        action: 'grant{v}'\n        object_type: vault",
    ),
];

fn generated_rules(dir: &std::path::Path, n: usize) -> usize {
    let mut written = 0;
    for i in 0..n {
        let (product, service, sel) = TEMPLATES[i % TEMPLATES.len()];
        let v = i / TEMPLATES.len();
        let service = if service.is_empty() {
            String::new()
        } else {
            format!("    service: {service}\n")
        };
        // Every fifth rule has a negated filter, every seventh a non-prefilterable part.
        let (extra, cond) = match i % 35 {
            0 | 5 | 10 | 15 | 20 | 25 | 30 => (
                "    filter:\n        actor.alternateId|endswith: '@svc.example.com'\n",
                "selection and not filter",
            ),
            7 | 14 | 21 | 28 => ("    bulk:\n        count|gt: 100\n", "selection or bulk"),
            _ => ("", "selection"),
        };
        let text = format!(
            "title: Generated {i}\nid: gen-{i}\nstatus: test\nlogsource:\n    product: {product}\n{service}detection:\n    selection:\n{sel}\n{extra}    condition: {cond}\nlevel: medium\ntags:\n    - attack.t1078.004\n",
            sel = sel.replace("{v}", &if v == 0 { String::new() } else { format!("_{v}") }),
        );
        if std::fs::write(dir.join(format!("gen_{i}.yml")), text).is_ok() {
            written += 1;
        }
    }
    written
}

fn ev(source: &str, raw: serde_json::Value, user: &str, ip: &str, action: &str, i: usize) -> Event {
    let ts = Utc
        .timestamp_opt(1_714_557_600 + i as i64, 0)
        .single()
        .unwrap_or_default();
    let ecs = Ecs {
        timestamp: Some(ts),
        event_action: Some(action.to_string()),
        event_outcome: Outcome::Success,
        user_name: Some(user.to_string()),
        source_ip: Some(ip.to_string()),
        ..Default::default()
    };
    Event::new(
        source,
        RawRecord {
            source: source.into(),
            tenant: "acme".into(),
            received_at: ts,
            line: Some(i as u64 + 1),
            // Parsed from text as `perimeter detect` does: the arena DOM, not the owned
            // (B-tree) objects `raw_from_serde` builds.
            raw: perimeter_model::sonic_rs::from_str(&raw.to_string()).unwrap_or_default(),
        },
        ecs,
    )
}

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let user = format!("user{}@example.com", i % 97);
            let ip = format!("198.51.100.{}", i % 250);
            match i % 7 {
                0 => {
                    let et = ["user.session.start", "user.authentication.sso", "user.mfa.factor.deactivate", "policy.lifecycle.update"][i % 4];
                    ev("okta", json!({"uuid": format!("u{i}"), "published": "2024-05-01T10:00:00.000Z", "eventType": et,
                        "displayMessage": "User login to Okta", "severity": "INFO",
                        "actor": {"id": "00u1", "type": "User", "alternateId": user, "displayName": "Jane Doe"},
                        "client": {"ipAddress": ip, "userAgent": {"rawUserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)", "os": "Mac OS X", "browser": "CHROME"},
                                   "geographicalContext": {"city": "Berlin", "country": "Germany"}},
                        "outcome": {"result": "SUCCESS", "reason": null},
                        "target": [{"id": "0oa1", "type": "AppInstance", "alternateId": "Salesforce", "displayName": "Salesforce.com"}],
                        "securityContext": {"asNumber": 3320, "asOrg": "deutsche telekom ag", "isProxy": false}}), &user, &ip, et, i)
                }
                1 => {
                    let act = ["repo.create", "git.clone", "org.add_member", "public_key.create"][i % 4];
                    ev("github", json!({"@timestamp": 1714557600000u64, "_document_id": format!("d{i}"), "action": act, "actor": "octocat",
                        "actor_location": {"country_code": "DE"}, "org": "acme", "repo": "acme/widgets", "visibility": "private",
                        "user_agent": "git/2.40.0", "business": "acme-corp"}), &user, &ip, act, i)
                }
                2 => ev("google_workspace", json!({"kind": "admin#reports#activity", "id": {"time": "2024-05-01T10:00:00.000Z", "uniqueQualifier": format!("{i}"), "applicationName": "drive", "customerId": "C01"},
                    "actor": {"email": user, "profileId": "1"}, "ipAddress": ip,
                    "events": [{"type": "access", "name": "download", "parameters": [{"name": "doc_title", "value": "Q2 plan"}, {"name": "visibility", "value": "private"}]}]}), &user, &ip, "download", i),
                3 => ev("slack", json!({"id": format!("s{i}"), "date_create": 1714557600, "action": "user_login",
                    "actor": {"type": "user", "user": {"id": "W1", "name": "jane", "email": user}},
                    "entity": {"type": "user", "user": {"id": "W1", "name": "jane"}},
                    "context": {"location": {"type": "workspace", "id": "T1", "name": "acme", "domain": "acme"}, "ua": "Mozilla/5.0", "ip_address": ip}}), &user, &ip, "user_login", i),
                4 => ev("m365", json!({"CreationTime": "2024-05-01T10:00:00", "Id": format!("m{i}"), "Operation": "FileAccessed", "OrganizationId": "o1",
                    "RecordType": 6, "UserKey": "i:0h.f|membership|1", "UserType": 0, "Workload": "SharePoint", "ClientIP": ip, "UserId": user,
                    "ObjectId": "https://acme.sharepoint.com/sites/x/doc.docx", "ResultStatus": "Succeeded"}), &user, &ip, "FileAccessed", i),
                5 => {
                    let name = ["GetObject", "ConsoleLogin", "AssumeRole", "DescribeInstances"][i % 4];
                    ev("aws_cloudtrail", json!({"eventVersion": "1.08", "eventTime": "2024-05-01T10:00:00Z", "eventSource": "s3.amazonaws.com", "eventName": name,
                        "awsRegion": "eu-central-1", "sourceIPAddress": ip, "userAgent": "aws-cli/2.15.0",
                        "userIdentity": {"type": "IAMUser", "principalId": "AIDA1", "arn": "arn:aws:iam::123456789012:user/jane", "accountId": "123456789012", "userName": "jane"},
                        "requestParameters": {"bucketName": "acme-data", "key": "reports/2024.csv"}, "responseElements": null,
                        "eventID": format!("e{i}"), "readOnly": true, "eventType": "AwsApiCall", "recipientAccountId": "123456789012"}), &user, &ip, name, i)
                }
                _ => ev("onepassword", json!({"uuid": format!("p{i}"), "timestamp": "2024-05-01T10:00:00Z", "action": "reveal", "object_type": "item",
                    "object_uuid": "abc", "actor_uuid": "A1", "actor_details": {"email": user, "name": "Jane"},
                    "session": {"uuid": "S1", "ip": ip, "device_uuid": "D1"}, "location": {"country": "DE", "city": "Berlin"}}), &user, &ip, "reveal", i),
            }
        })
        .collect()
}

fn load_rules() -> (RuleSet, usize) {
    let tmp = std::env::temp_dir().join(format!("perimeter-sigma-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&tmp);
    let pack = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/detection-rules"));
    let mut paths = vec![tmp.clone()];
    if pack.is_dir() {
        paths.push(pack);
    }
    generated_rules(&tmp, 1200);
    let (rules, report) = RuleSet::load(&paths, &SigmaOptions::default());
    let _ = std::fs::remove_dir_all(&tmp);
    let failed = report.failed.len();
    (rules, failed)
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn report_throughput(passes: usize) {
    let (rules, failed) = load_rules();
    let n_rules = rules.len();
    let evs = events(70_000);
    let mut det = SigmaDetector::new(rules, &SigmaOptions::default());
    let mut alerts = Vec::new();
    // Warm up, then measure a few passes on one core.
    for e in evs.iter().take(10_000) {
        det.detect(e, &mut alerts);
    }
    alerts.clear();
    let mut num_alerts = 0;
    let cpu_before = cputime::thread_cpu_seconds();
    let start = Instant::now();
    for _ in 0..passes {
        for e in &evs {
            det.detect(e, &mut alerts);
        }
        num_alerts += alerts.len();
        alerts.clear();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cputime::thread_cpu_seconds() - cpu_before;
    let n = (passes * evs.len()) as f64;
    println!(
        "sigma_match: {n_rules} rules ({failed} failed to load), {} events x {passes} ({:.3} alerts/event): {:.0} events per CPU-second on one core (matcher alone), {:.0} events/s wall-clock",
        evs.len(),
        num_alerts as f64 / n,
        n / cpu.max(1e-9),
        n / secs
    );
}

fn report_correlation_memory() {
    let dir = std::env::temp_dir().join(format!("perimeter-sigma-corr-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let rule = "title: many fails\nid: corr-1\ncorrelation:\n    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 30d\n    condition:\n        gte: 5\n---\ntitle: fail\nid: fail-1\nname: okta_fail\nlogsource: {product: okta}\ndetection:\n    sel:\n        eventType: user.session.start\n    condition: sel\n";
    let _ = std::fs::write(dir.join("corr.yml"), rule);
    let (rules, _) = RuleSet::load(std::slice::from_ref(&dir), &SigmaOptions::default());
    let _ = std::fs::remove_dir_all(&dir);
    let opts = SigmaOptions {
        max_correlation_keys: 2_000_000,
        ..Default::default()
    };
    let mut det = SigmaDetector::new(rules, &opts);
    let before = rss_bytes();
    let mut alerts = Vec::new();
    let start = Instant::now();
    for i in 0..1_000_000usize {
        let user = format!("user{i}@example.com");
        let e = ev(
            "okta",
            json!({"eventType": "user.session.start", "actor": {"alternateId": user}}),
            &user,
            "10.0.0.1",
            "user.session.start",
            i,
        );
        det.detect(&e, &mut alerts);
    }
    let after = rss_bytes();
    println!(
        "correlation state: {} keys, {:.1} MiB by structure size, RSS delta {:.1} MiB ({:.1} s to build)",
        det.correlation_keys(),
        det.correlation_state_bytes() as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / 1048576.0,
        start.elapsed().as_secs_f64()
    );
    // What snapshotting the open windows costs (`perimeter run` writes them after every stored
    // batch while they are few): building the snapshot and its bytes, per window.
    let start = Instant::now();
    let snapshot = det.correlation_snapshot(&|text| text.to_string());
    // The binary form `perimeter run` writes (postcard, as `state_file::write_binary`).
    let bytes = postcard::to_allocvec(&snapshot).expect("serializes").len();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "correlation snapshot: {} windows in {:.0} ms, {:.1} MiB binary ({:.2} us and {} bytes per window)",
        det.correlation_keys(),
        secs * 1000.0,
        bytes as f64 / 1048576.0,
        secs * 1e6 / det.correlation_keys().max(1) as f64,
        bytes / det.correlation_keys().max(1)
    );
}

/// What saving and restoring the replay window costs at its default size (1M events): written
/// with every periodic (30 s) and shutdown snapshot of `perimeter run` when it changed, on the
/// pipeline thread.
fn report_replay_window_snapshot() {
    use perimeter_detect::mask::{MaskConfig, SecretMasker};
    use perimeter_detect::normalize::NormalizerRegistry;
    use perimeter_detect::pipeline::{Pipeline, PipelineOutput, DEFAULT_REPLAY_WINDOW};
    let dir = std::env::temp_dir().join(format!("perimeter-replay-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let key = dir.join("mask.key");
    let _ = std::fs::write(&key, "bench mask key");
    let pipeline = || {
        let config = MaskConfig {
            hmac_key: Some(format!("file:{}", key.display())),
            ..Default::default()
        };
        let masker = SecretMasker::new(&config).expect("mask config");
        let metrics = std::sync::Arc::new(perimeter_model::Metrics::new());
        Pipeline::new(NormalizerRegistry::builtin(), masker, metrics, false)
    };
    let mut p = pipeline();
    let mut out = PipelineOutput::default();
    for i in 0..DEFAULT_REPLAY_WINDOW {
        let user = format!("user{i}@example.com");
        let raw = json!({"eventType": "user.session.start", "actor": {"alternateId": user}});
        p.process_event(
            ev("okta", raw, &user, "10.0.0.1", "user.session.start", i),
            &mut out,
        );
    }
    let start = Instant::now();
    p.save_state(&dir).expect("replay window saved");
    let saved = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(dir.join(perimeter_detect::pipeline::REPLAY_SNAPSHOT))
        .map_or(0, |m| m.len());
    let start = Instant::now();
    let restored = pipeline().restore_replay_window(&dir).expect("readable");
    let loaded = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "replay window snapshot: {} events saved in {:.0} ms (fsynced), {:.1} MiB; restored {} in {:.0} ms",
        DEFAULT_REPLAY_WINDOW,
        saved * 1000.0,
        bytes as f64 / 1048576.0,
        restored.unwrap_or(0),
        loaded * 1000.0
    );
}

fn bench_matcher(c: &mut Criterion) {
    let (rules, _) = load_rules();
    let evs = events(7_000);
    let mut det = SigmaDetector::new(rules, &SigmaOptions::default());
    let mut alerts = Vec::new();
    let mut group = c.benchmark_group("sigma");
    group.throughput(Throughput::Elements(evs.len() as u64));
    group.sample_size(10);
    group.bench_function("match_mixed_saas_1200_rules", |b| {
        b.iter(|| {
            for e in &evs {
                det.detect(e, &mut alerts);
            }
            alerts.clear();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_matcher);

fn main() {
    // `SIGMA_BENCH_CRITERION_ONLY=1` skips the printed reports (for profiling the matcher loop);
    // `SIGMA_BENCH_THROUGHPUT_ONLY=<passes>` prints only the throughput line (for callgrind).
    if let Some(passes) = std::env::var_os("SIGMA_BENCH_THROUGHPUT_ONLY") {
        report_throughput(passes.to_str().and_then(|p| p.parse().ok()).unwrap_or(1));
        return;
    }
    if std::env::var_os("SIGMA_BENCH_CRITERION_ONLY").is_none() {
        report_correlation_memory();
        report_replay_window_snapshot();
        report_throughput(10);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
