//! Normalization throughput on one core over a mixed-source set of already-parsed records
//! (every recorded page and sample fixture, split into records), prints events/s.
//!
//! `cargo bench -p perimeter-detect --bench normalize` (set `PERIMETER_BENCH_SECONDS` to change
//! the measuring time, default 3). Measures `NormalizerRegistry::normalize` with an explicit
//! source and with `auto` (shape detection), plus the model's `EventId` hashing on its own: the
//! id is derived on first use (masking fixes it before changing the record), so every event that
//! is kept pays for it, and an event only run through the detectors does not.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use perimeter_detect::normalize::{split_records, NormalizerRegistry};
use perimeter_model::RawJson as Value;
use perimeter_model::{EventId, RawRecord};

/// CPU time of this thread: the machine is shared, so wall time would measure the neighbours.
/// Falls back to wall time where `/proc/thread-self/schedstat` is unavailable.
#[derive(Clone, Copy)]
struct CpuClock(Option<u64>, Instant);

impl CpuClock {
    fn now() -> CpuClock {
        let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()));
        CpuClock(ns, Instant::now())
    }
    fn elapsed(&self) -> Duration {
        match (self.0, CpuClock::now().0) {
            (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
            _ => self.1.elapsed(),
        }
    }
}

fn fixture_files() -> Vec<PathBuf> {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let shared = [
        format!("{manifest}/../../shared/fixtures/saas-api-pages"),
        format!("{manifest}/../../../shared/fixtures/saas-api-pages"),
    ]
    .into_iter()
    .find(|p| Path::new(p).is_dir())
    .unwrap_or_default();
    let dirs = [
        "okta/system_log",
        "github/audit",
        "gsuite/activities",
        "slack/audit",
        "onepassword/events_signinattempts",
        "onepassword/events_itemusages",
        "onepassword/events_audit",
        "zoom/activities",
        "zoom/operation",
        "dropbox/team_events",
        "atlassian/event_audit",
    ];
    let mut files: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(format!("{shared}/{d}")) {
            files.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    for d in [
        "okta",
        "aws_cloudtrail",
        "m365",
        "box",
        "duo",
        "github",
        "slack",
        "onepassword",
    ] {
        if let Ok(rd) = std::fs::read_dir(format!("{manifest}/tests/fixtures/{d}")) {
            files.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    files.sort();
    files
}

fn main() {
    let registry = NormalizerRegistry::builtin();
    let mut records: Vec<(String, Value)> = Vec::new();
    for f in fixture_files() {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(value) = sonic_rs::from_str::<Value>(&text) else {
            continue;
        };
        for raw in split_records("auto", value) {
            if let Some(source) = registry.detect_source(&raw) {
                records.push((source.to_owned(), raw));
            }
        }
    }
    assert!(!records.is_empty(), "no fixture records found");
    let seconds: u64 = std::env::var("PERIMETER_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let budget = Duration::from_secs(seconds);
    println!("{} records from {} sources", records.len(), {
        let mut s: Vec<_> = records.iter().map(|(s, _)| s.as_str()).collect();
        s.sort();
        s.dedup();
        s.len()
    });

    for mode in ["named", "auto"] {
        let mut done = 0u64;
        let mut busy = Duration::ZERO;
        while busy < budget {
            // Cloning the raw value is input preparation, not normalization: keep it off the clock.
            let batch: Vec<RawRecord> = records
                .iter()
                .map(|(s, raw)| RawRecord {
                    source: s.clone(),
                    tenant: "bench".into(),
                    received_at: Utc::now(),
                    line: None,
                    raw: raw.clone(),
                })
                .collect();
            let start = CpuClock::now();
            for rec in batch {
                let source = if mode == "auto" {
                    "auto"
                } else {
                    rec.source.as_str()
                };
                let source = source.to_owned();
                let ev = registry.normalize(&source, rec);
                std::hint::black_box(&ev);
                done += 1;
            }
            busy += start.elapsed();
        }
        println!(
            "normalize ({mode} source): {:.0} events/s",
            done as f64 / busy.as_secs_f64()
        );
    }

    let mut per_source: std::collections::BTreeMap<&str, (u64, Duration, usize)> =
        Default::default();
    for (s, raw) in &records {
        let size = sonic_rs::to_vec(raw).map(|v| v.len()).unwrap_or(0);
        let rec = RawRecord {
            source: s.clone(),
            tenant: "bench".into(),
            received_at: Utc::now(),
            line: None,
            raw: raw.clone(),
        };
        // Batches of one record repeated: its own CPU cost, cache-hot, id included. Batches are big
        // enough that reading the CPU clock (a /proc read) stays out of the figure.
        let mut full = Duration::ZERO;
        for _ in 0..8 {
            let batch: Vec<RawRecord> = (0..256).map(|_| rec.clone()).collect();
            let mut out = Vec::with_capacity(batch.len());
            let start = CpuClock::now();
            for r in batch {
                out.push(registry.normalize(s, r));
            }
            full += start.elapsed();
        }
        let e = per_source.entry(s.as_str()).or_default();
        e.0 += 8 * 256;
        e.1 += full;
        e.2 = e.2.max(size);
    }
    for (s, (n, t, size)) in per_source {
        println!(
            "  {s:<18} {:>9.0} events/s cache-hot  (largest record {size} bytes)",
            n as f64 / t.as_secs_f64()
        );
    }

    let start = CpuClock::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for (s, raw) in &records {
            std::hint::black_box(EventId::derive(s, raw));
            n += 1;
        }
    }
    println!(
        "of which EventId::derive alone: {:.0} ids/s",
        n as f64 / start.elapsed().as_secs_f64()
    );

    let start = CpuClock::now();
    let mut n = 0u64;
    let mut buf = Vec::new();
    while start.elapsed() < budget {
        for (s, raw) in &records {
            buf.clear();
            buf.extend_from_slice(s.as_bytes());
            buf.push(0);
            let _ = sonic_rs::to_writer(&mut buf, raw);
            std::hint::black_box(blake3::hash(&buf));
            n += 1;
        }
    }
    println!(
        "serialize-to-buffer + one blake3 call: {:.0} ids/s",
        n as f64 / start.elapsed().as_secs_f64()
    );

    for ts in [
        "2021-06-24T00:04:08.123Z",
        "2026-11-24T08:15:02",
        "2025-11-12T16:28:36.943+0000",
        "2023-03-15T16:33:50-03:00",
    ] {
        let v = Value::from(ts);
        let start = CpuClock::now();
        for _ in 0..200_000 {
            std::hint::black_box(perimeter_model::parse_timestamp(std::hint::black_box(&v)).ok());
        }
        println!(
            "parse_timestamp({ts}): {:.0} ns",
            start.elapsed().as_nanos() as f64 / 200_000.0
        );
    }
}
