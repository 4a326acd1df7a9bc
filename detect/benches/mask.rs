//! Masking throughput on typical SaaS audit events (~1 KB, mostly clean, 1 in 10 carrying a
//! secret). Prints events/s per core via criterion's element throughput.
//! Run: `cargo bench -p perimeter-detect --bench mask`.

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use perimeter_detect::mask::SecretMasker;
use perimeter_model::{Ecs, Event, Masker, Outcome, RawRecord};
use serde_json::{json, Value};

fn okta() -> Value {
    json!({
        "actor": {"id": "00u1abcdEFGHijkl2345", "type": "User", "alternateId": "alice@example.com",
                  "displayName": "Alice Example", "detailEntry": null},
        "client": {"userAgent": {"rawUserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
                                 "os": "Mac OS X", "browser": "CHROME"},
                   "zone": "null", "device": "Computer", "id": null, "ipAddress": "198.51.100.7",
                   "geographicalContext": {"city": "Lisbon", "state": "Lisbon", "country": "Portugal",
                                           "postalCode": "1000-001", "geolocation": {"lat": 38.7223, "lon": -9.1393}}},
        "authenticationContext": {"authenticationProvider": null, "credentialProvider": null, "credentialType": null,
                                  "issuer": null, "interface": null, "authenticationStep": 0,
                                  "externalSessionId": "102Zx9abcDEFghIJKlmNOPqrs"},
        "displayMessage": "User login to Okta", "eventType": "user.session.start",
        "outcome": {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"},
        "published": "2024-01-15T10:23:45.123Z",
        "securityContext": {"asNumber": 3243, "asOrg": "meo", "isp": "meo", "domain": "meo.pt", "isProxy": false},
        "severity": "INFO",
        "debugContext": {"debugData": {"requestId": "Zabc123DEF456ghi789JKL0", "requestUri": "/api/v1/authn",
                                       "threatSuspected": "false", "url": "/api/v1/authn?"}},
        "legacyEventType": "core.user_auth.login_failed", "transaction": {"type": "WEB", "id": "Zabc123DEF456ghi789JKL0", "detail": {}},
        "uuid": "8e6f1a2c-3b4d-11ee-9f1a-0242ac120002", "version": "0",
        "request": {"ipChain": [{"ip": "198.51.100.7", "geographicalContext": {"city": "Lisbon", "country": "Portugal"}, "version": "V4", "source": null}]},
        "target": null
    })
}

fn github() -> Value {
    json!({
        "@timestamp": 1705314225123u64, "_document_id": "Zx9abcDEFghIJKlmNOPqrs",
        "action": "org.add_member", "actor": "octocat", "actor_id": 583231, "actor_location": {"country_code": "US"},
        "business": "acme-corp", "business_id": 1234, "created_at": 1705314225123u64, "operation_type": "create",
        "org": "acme", "org_id": 9919, "permission": "admin", "user": "mona", "user_id": 2121,
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "request_id": "C4F2:1A2B:3C4D5E:6F7081:65A5B3F1", "programmatic_access_type": "Fine-grained personal access token",
        "token_id": 1234567, "token_scopes": "repo,admin:org", "hashed_token": "fJ4b8dE0vhsZPt3+a0yN5Nm0uQ2xRk1d8w9Y3h0a1b4=",
        "external_identity_nameid": "mona@example.com", "external_identity_username": "mona"
    })
}

fn cloudtrail() -> Value {
    json!({
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLEPRINCIPAL1", "arn": "arn:aws:iam::111122223333:user/circleci",
                         "accountId": "111122223333", "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "circleci"},
        "eventTime": "2024-01-15T10:23:45Z", "eventSource": "iam.amazonaws.com", "eventName": "CreateAccessKey",
        "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.9",
        "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.2.0 exe/x86_64.ubuntu.22 prompt/off command/iam.create-access-key",
        "requestParameters": {"userName": "deploy-bot"},
        "responseElements": {"accessKey": {"accessKeyId": "AKIAI44QH8DHBEXAMPLE", "status": "Active",
                                           "userName": "deploy-bot", "createDate": "Jan 15, 2024 10:23:45 AM"}},
        "requestID": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111", "eventID": "a1b2c3d4-5678-90ab-cdef-EXAMPLE22222",
        "readOnly": false, "eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": "111122223333",
        "eventCategory": "Management", "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                                                      "clientProvidedHostHeader": "iam.amazonaws.com"}
    })
}

fn gworkspace() -> Value {
    json!({
        "kind": "admin#reports#activity",
        "id": {"time": "2024-01-15T10:23:45.123Z", "uniqueQualifier": "-1234567890123456789", "applicationName": "drive", "customerId": "C03az79cb"},
        "etag": "\"abcDEF123/ghiJKL456\"",
        "actor": {"callerType": "USER", "email": "bob@example.com", "profileId": "112233445566778899000"},
        "ipAddress": "192.0.2.44",
        "events": [{"type": "access", "name": "download", "parameters": [
            {"name": "primary_event", "boolValue": true}, {"name": "billable", "boolValue": true},
            {"name": "doc_id", "value": "1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"}, {"name": "doc_type", "value": "spreadsheet"},
            {"name": "doc_title", "value": "Q4 revenue forecast"}, {"name": "visibility", "value": "shared_internally"},
            {"name": "owner", "value": "carol@example.com"}, {"name": "owner_is_team_drive", "boolValue": false}]}]
    })
}

fn slack_with_secret() -> Value {
    json!({
        "id": "0123a45b-6c7d-8e9f-a0b1-c2d3e4f5a6b7", "date_create": 1705314225u64, "action": "user_login",
        "actor": {"type": "user", "user": {"id": "W123AB456", "name": "Dana", "email": "dana@example.com"}},
        "entity": {"type": "workspace", "workspace": {"id": "T012AB3CD", "name": "acme", "domain": "acme"}},
        "context": {"location": {"type": "enterprise", "id": "E012AB3CD", "name": "acme-ent", "domain": "acme-ent"},
                    "ua": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Safari/605.1.15",
                    "ip_address": "198.51.100.23", "session_id": 847261937},
        "details": {"note": "bot token xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx pasted in channel",
                    "webhook": "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"}
    })
}

fn events() -> Vec<Event> {
    let received_at = Utc
        .with_ymd_and_hms(2024, 1, 15, 10, 30, 0)
        .single()
        .expect("valid time");
    let mut out = Vec::new();
    for i in 0..10 {
        let raw = match i % 10 {
            0 | 5 => okta(),
            1 | 6 => github(),
            2 | 7 => cloudtrail(),
            3 | 8 => gworkspace(),
            4 => okta(),
            _ => slack_with_secret(),
        };
        let ecs = Ecs {
            timestamp: Some(received_at),
            event_action: Some("user.session.start".into()),
            event_outcome: Outcome::Failure,
            event_category: vec!["authentication".into()],
            event_type: vec!["start".into()],
            user_name: Some("alice@example.com".into()),
            user_email: Some("alice@example.com".into()),
            user_id: Some("00u1abcdEFGHijkl2345".into()),
            source_ip: Some("198.51.100.7".into()),
            user_agent_original: Some(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36".into(),
            ),
            organization_id: Some("acme".into()),
            related_ip: vec!["198.51.100.7".into()],
            related_user: vec!["alice@example.com".into()],
            ..Default::default()
        };
        let record = RawRecord {
            source: "okta".into(),
            tenant: "acme".into(),
            received_at,
            line: Some(i),
            raw: perimeter_model::raw_from_serde(&raw),
        };
        out.push(Event::new("okta", record, ecs));
    }
    out
}

fn bench_mask(c: &mut Criterion) {
    let masker = SecretMasker::default();
    let batch = events();
    let bytes: usize = batch.iter().map(|e| e.raw.to_string().len()).sum();
    eprintln!("average raw event size: {} bytes", bytes / batch.len());
    let mut group = c.benchmark_group("mask");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("mixed_saas_events", |b| {
        b.iter_batched_ref(
            || batch.clone(),
            |events| {
                let mut total = 0;
                for e in events.iter_mut() {
                    total += masker.mask(e).total();
                }
                total
            },
            BatchSize::SmallInput,
        )
    });
    let clean = okta();
    group.throughput(Throughput::Elements(1));
    group.bench_function("clean_okta_value", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            |v| masker.mask_value(v),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    cpu_time_report(&masker, &batch);
}

/// Nanoseconds this thread spent on a CPU (`/proc/thread-self/schedstat`), so the figure does not
/// depend on how loaded the shared machine is. `None` off Linux.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Events/s per core measured on CPU time rather than wall time (masking only; cloning the
/// batch is measured separately). Batches of 10 000 events keep the `/proc` reads negligible.
fn cpu_time_report(masker: &SecretMasker, batch: &[Event]) {
    const ROUNDS: usize = 20;
    const COPIES: usize = 1_000;
    let (mut clone_ns, mut mask_ns, mut total) = (0u64, 0u64, 0u64);
    for _ in 0..ROUNDS {
        let Some(t0) = thread_cpu_ns() else { return };
        let mut events: Vec<Event> = (0..COPIES).flat_map(|_| batch.iter().cloned()).collect();
        let t1 = thread_cpu_ns().unwrap_or(t0);
        for e in events.iter_mut() {
            total += masker.mask(e).total();
        }
        let t2 = thread_cpu_ns().unwrap_or(t1);
        clone_ns += t1 - t0;
        mask_ns += t2 - t1;
    }
    let num_events = (ROUNDS * COPIES * batch.len()) as f64;
    let ns_per_event = mask_ns as f64 / num_events;
    eprintln!(
        "cpu time: mask {ns_per_event:.0} ns/event = {:.0} events/s per core ({total} values masked; clone {:.0} ns/event)",
        1e9 / ns_per_event,
        clone_ns as f64 / num_events
    );
}

criterion_group!(benches, bench_mask);
criterion_main!(benches);
