//! Alert journal growth and load time (a bench binary printing its numbers; `harness = false`).
//!
//! A noisy Sigma rule grouped into one alert per user still writes a journal line per repeat.
//! This bench stores `ALERT_JOURNAL_REPEATS` (default 1M) alerts of one rule for 100 users
//! through `Store::write_batch` (grouped into 100 alerts), then reports:
//! 1. the journal's size and how long opening the store takes when it is replayed as written
//!    (measured with a read-only open, which never rewrites it);
//! 2. how long the writer's open takes, which rewrites it compact (one snapshot line per alert);
//! 3. the compacted journal's size and how long opening takes from it.
//!
//! Run: `cargo bench --bench alert_journal`.

use std::time::Instant;

use chrono::{TimeDelta, TimeZone, Utc};
use perimeter_model::{Alert, DetectorKind, EntityKind, Severity};
use perimeter_store::{Store, StoreBatch, StoreConfig};

const USERS: u64 = 100;

fn main() {
    let repeats: u64 = std::env::var("ALERT_JOURNAL_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StoreConfig::at(dir.path());
    let journal = dir.path().join("alerts/tenant=acme/journal.jsonl");
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    {
        let store = Store::open(config.clone()).expect("open");
        let written = Instant::now();
        let per_batch = 10_000;
        for first in (0..repeats).step_by(per_batch) {
            let alerts: Vec<Alert> = (first..(first + per_batch as u64).min(repeats))
                .map(|i| {
                    let mut a = Alert::new(
                        "okta_login_failed",
                        "Okta login failed",
                        Severity::Low,
                        DetectorKind::Sigma,
                        "okta",
                        "acme",
                        // Every user fails every 10 seconds: all within the grouping window.
                        start + TimeDelta::seconds((i / USERS) as i64 * 10),
                        format!("user{}@acme.test", i % USERS),
                        EntityKind::User,
                    );
                    a.event_ids.push(format!("{i:032x}"));
                    a.lines.push(i + 1);
                    a.seal()
                })
                .collect();
            let batch = StoreBatch {
                alerts,
                ..Default::default()
            };
            store.write_batch(&batch).expect("write");
        }
        let stats = store.stats();
        eprintln!(
            "stored {repeats} alerts of one rule for {USERS} users in {:.1} s: {} alerts in the queue",
            written.elapsed().as_secs_f64(),
            stats.alerts_stored
        );
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    eprintln!(
        "journal as written: {} lines, {:.1} MB",
        lines(&journal),
        size(&journal) as f64 / 1e6
    );
    let timed_open = |label: &str, read_only: bool| {
        let t = Instant::now();
        let store = if read_only {
            Store::open_read_only(config.clone())
        } else {
            Store::open(config.clone())
        }
        .expect("open");
        eprintln!(
            "{label}: {:.0} ms ({} alerts)",
            t.elapsed().as_secs_f64() * 1e3,
            store.stats().alerts_stored
        );
    };
    timed_open("open, journal replayed as written (read-only)", true);
    timed_open("open by the writer, journal rewritten compact", false);
    eprintln!(
        "journal compacted: {} lines, {:.2} MB",
        lines(&journal),
        size(&journal) as f64 / 1e6
    );
    timed_open("open, compacted journal replayed", false);
}
