//! UEBA throughput and memory bench (a bench binary printing its numbers; `harness = false`).
//!
//! 1. events/s on one core through all seven detectors with 100k active entities (users, plus
//!    the source IPs, tokens and orgs their events bring), on a realistic mix: successful and
//!    failed logins, downloads, config changes, throttled API calls, app grants;
//! 2. memory per tracked entity: RSS delta (/proc/self/statm) after tracking ~1M entities,
//!    divided by the entity count;
//! 3. snapshot write / restore time and size for the 100k-entity state.
//!
//! Run: `cargo bench --bench ueba` (set `UEBA_BENCH_ENTITIES` to change the 1M of step 2).

mod cputime;
mod rng;
use rng::Rng;

use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use perimeter_detect::ueba::{UebaConfig, UebaEngine};
use perimeter_model::{Detector, Ecs, Event, Outcome, RawRecord};
use serde_json::json;

const KEY: [u8; 32] = [7; 32];

fn make_event(
    source: &str,
    t: DateTime<Utc>,
    line: u64,
    mut ecs: Ecs,
    raw: serde_json::Value,
) -> Event {
    ecs.timestamp = Some(t);
    let rec = RawRecord {
        source: source.into(),
        tenant: "acme".into(),
        received_at: t,
        line: Some(line),
        raw: perimeter_model::raw_from_serde(&raw),
    };
    Event::new(source, rec, ecs)
}

#[derive(Clone, Copy)]
enum Kind {
    Login(bool),
    Download,
    ConfigChange,
    Throttled,
    AppGrant,
}

/// One event of the mix for user `u` at `t`: 45% successful logins, 15% failed logins, 30%
/// downloads, 4% config changes, 4% throttled API calls, 2% app installs.
fn mixed_event(rng: &mut Rng, u: u64, t: DateTime<Utc>, line: u64) -> Event {
    let kind = match rng.below(100) {
        0..=44 => Kind::Login(true),
        45..=59 => Kind::Login(false),
        60..=89 => Kind::Download,
        90..=93 => Kind::ConfigChange,
        94..=97 => Kind::Throttled,
        _ => Kind::AppGrant,
    };
    event_of(kind, u, t, line)
}

fn event_of(kind: Kind, u: u64, t: DateTime<Utc>, line: u64) -> Event {
    let user = format!("user{u}@example.com");
    // Ten users per source IP.
    let ip = format!(
        "10.{}.{}.{}",
        (u / 10) >> 16 & 255,
        (u / 10) >> 8 & 255,
        (u / 10) & 255
    );
    let countries = ["US", "US", "US", "DE", "GB"];
    let country = countries[(u % 5) as usize];
    match kind {
        Kind::Login(ok) => {
            let raw = json!({"eventType": "user.session.start", "uuid": line, "outcome": {"result": if ok {"SUCCESS"} else {"FAILURE"}},
                "actor": {"type": "User", "alternateId": user}, "client": {"ipAddress": ip}});
            let ecs = Ecs {
                event_action: Some("user.session.start".into()),
                event_category: vec!["authentication".into(), "session".into()],
                event_type: vec!["start".into()],
                event_outcome: if ok {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
                user_name: Some(user),
                source_ip: Some(ip),
                source_geo_country_iso_code: Some(country.into()),
                source_as_number: Some(7922 + u % 3),
                user_agent_original: Some(
                    "Mozilla/5.0 (Macintosh) AppleWebKit/537.36 Chrome/122.0 Safari/537.36".into(),
                ),
                ..Default::default()
            };
            make_event("okta", t, line, ecs, raw)
        }
        Kind::Download => {
            let raw = json!({"id": {"applicationName": "drive", "uniqueQualifier": line}, "actor": {"email": user},
                "events": [{"type": "access", "name": "download"}]});
            let ecs = Ecs {
                event_action: Some("download".into()),
                event_category: vec!["file".into()],
                event_type: vec!["access".into()],
                event_outcome: Outcome::Success,
                user_name: Some(user),
                source_ip: Some(ip),
                organization_id: Some("C01abcd".into()),
                ..Default::default()
            };
            make_event("gsuite", t, line, ecs, raw)
        }
        Kind::ConfigChange => {
            let raw = json!({"eventType": "policy.lifecycle.update", "uuid": line, "actor": {"type": "User", "alternateId": user}});
            let ecs = Ecs {
                event_action: Some("policy.lifecycle.update".into()),
                event_category: vec!["configuration".into()],
                event_type: vec!["change".into()],
                event_outcome: Outcome::Success,
                user_name: Some(user),
                source_ip: Some(ip),
                ..Default::default()
            };
            make_event("okta", t, line, ecs, raw)
        }
        Kind::Throttled => {
            let raw = json!({"eventSource": "ec2.amazonaws.com", "eventName": "DescribeInstances", "eventType": "AwsApiCall",
                "errorCode": "ThrottlingException", "eventID": line,
                "userIdentity": {"type": "IAMUser", "accessKeyId": format!("AKIA{:016}", u % 5000)}});
            let ecs = Ecs {
                event_action: Some("DescribeInstances".into()),
                event_outcome: Outcome::Failure,
                user_name: Some(user),
                source_ip: Some(ip),
                cloud_account_id: Some("123456789012".into()),
                ..Default::default()
            };
            make_event("cloudtrail", t, line, ecs, raw)
        }
        Kind::AppGrant => {
            let raw = json!({"action": "integration_installation.create", "integration": format!("app-{}", u % 300),
                "_document_id": line, "actor": user});
            let ecs = Ecs {
                event_action: Some("integration_installation.create".into()),
                event_category: vec!["configuration".into()],
                event_type: vec!["creation".into()],
                event_outcome: Outcome::Success,
                user_name: Some(user),
                organization_id: Some("acme-org".into()),
                ..Default::default()
            };
            make_event("github", t, line, ecs, raw)
        }
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn throughput() {
    const USERS: u64 = 100_000;
    const POOL: u64 = 400_000;
    const PASSES: i64 = 5;
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // A pool of events over 4 hours of event time, replayed with shifted timestamps.
    let span = 4 * 3600;
    let mut pool: Vec<Event> = (0..POOL)
        .map(|i| {
            let u = rng.below(USERS);
            let t = start + Duration::seconds((i as i64 * span) / POOL as i64);
            mixed_event(&mut rng, u, t, i + 1)
        })
        .collect();
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let mut alerts = Vec::new();
    // Warm the state (entities, baselines) with one pass, untimed.
    for e in &pool {
        engine.detect(e, &mut alerts);
    }
    let mut total = 0u64;
    let mut busy = std::time::Duration::ZERO;
    let cpu_before = cputime::thread_cpu_seconds();
    for pass in 1..=PASSES {
        for e in pool.iter_mut() {
            e.timestamp += Duration::seconds(span);
        }
        let t = Instant::now();
        for e in &pool {
            engine.detect(e, &mut alerts);
        }
        busy += t.elapsed();
        total += pool.len() as u64;
        let _ = pass;
    }
    let cpu = cputime::thread_cpu_seconds() - cpu_before;
    let eps = total as f64 / busy.as_secs_f64();
    println!(
        "ueba throughput: {total} events through 7 detectors in {:.2}s wall / {:.2}s CPU = {:.0} events/s wall, \
         {:.0} events/s per CPU-second on one core ({} tracked entities, {} alerts incl. warm-up)",
        busy.as_secs_f64(),
        cpu,
        eps,
        total as f64 / cpu.max(1e-9),
        engine.tracked_entities(),
        alerts.len()
    );

    let dir = std::env::temp_dir().join(format!("ueba-bench-{}", std::process::id()));
    let path = dir.join("ueba.json");
    let t = Instant::now();
    engine.snapshot_to(&path).expect("snapshot");
    let write = t.elapsed();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let restored = UebaEngine::restore_from(UebaConfig::default(), KEY, &path).expect("restore");
    let read = t.elapsed();
    println!(
        "ueba snapshot: {} entities, {:.1} MiB, write {:.2}s, restore {:.2}s ({} entities restored)",
        engine.tracked_entities(),
        size as f64 / (1024.0 * 1024.0),
        write.as_secs_f64(),
        read.as_secs_f64(),
        restored.tracked_entities()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn memory() {
    let n: u64 = std::env::var("UEBA_BENCH_ENTITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let before = rss_bytes();
    let mut engine = UebaEngine::new(UebaConfig::default(), KEY);
    let mut alerts = Vec::new();
    // Each user: a login, a download and (one in three) a failed login; IPs are shared by ten
    // users, so failures also create IP entities.
    let mut line = 0;
    for u in 0..n {
        let t = start + Duration::milliseconds((u * 3600 * 1000 / n) as i64);
        for kind in [Kind::Login(true), Kind::Download, Kind::Login(false)] {
            if matches!(kind, Kind::Login(false)) && u % 3 != 0 {
                continue;
            }
            line += 1;
            engine.detect(&event_of(kind, u, t, line), &mut alerts);
        }
    }
    let after = rss_bytes();
    let tracked = engine.tracked_entities() as u64;
    let delta = after.saturating_sub(before);
    println!(
        "ueba memory: {tracked} tracked entities, RSS +{:.1} MiB = {:.0} bytes/entity (1M entities ~ {:.0} MiB)",
        delta as f64 / (1024.0 * 1024.0),
        delta as f64 / tracked.max(1) as f64,
        delta as f64 / tracked.max(1) as f64 * 1e6 / (1024.0 * 1024.0)
    );
    drop(engine);
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than "ueba" skips this binary.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "ueba".contains(a.as_str())) {
        return;
    }
    // Memory first, in a fresh process heap: freed throughput buffers would otherwise be reused
    // and hide the growth.
    memory();
    throughput();
}
