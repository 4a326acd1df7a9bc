//! Bench inputs shared by the benches: a mixed-source set of realistic SaaS audit events, built
//! from the recorded vendor pages in `../shared/fixtures/saas-api-pages` plus the demo dataset.

#![allow(dead_code)]

use perimeter_model::sonic_rs;
use std::path::PathBuf;

// The same allocator, tuned the same way, as the `perimeter` binary, so the numbers are the
// binary's; `mixed_records` and `mixed_jsonl` apply the tuning.
#[path = "../../src/alloc.rs"]
mod alloc;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(source, raw record)` pairs: every record of the recorded pages of the built-in vendors and
/// the demo dataset, in a mixed order.
pub fn mixed_records() -> Vec<(String, perimeter_model::RawJson)> {
    alloc::tune();
    let mut out = Vec::new();
    let pages = [
        ("okta", "okta/system_log"),
        ("github", "github/audit"),
        ("google_workspace", "gsuite/activities"),
        ("slack", "slack/audit"),
        ("onepassword", "onepassword/events_signinattempts"),
        ("onepassword", "onepassword/events_itemusages"),
        ("onepassword", "onepassword/events_audit"),
    ];
    // `shared/` sits next to the repository clone; in a git worktree under `wt/<name>/` it is
    // one level further up. Without it the input would silently shrink to the demo day, and
    // figures would not compare with other runs: refuse instead.
    let fixtures = ["../shared", "../../shared"]
        .iter()
        .map(|up| repo().join(up).join("fixtures/saas-api-pages"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "the recorded pages are missing: no shared/fixtures/saas-api-pages next to {}",
                repo().display()
            )
        });
    for (source, dir) in pages {
        let rd = std::fs::read_dir(fixtures.join(dir))
            .unwrap_or_else(|e| panic!("{}: {e}", fixtures.join(dir).display()));
        for f in rd.flatten() {
            let Ok(text) = std::fs::read_to_string(f.path()) else {
                continue;
            };
            let Ok(v) = sonic_rs::from_str::<perimeter_model::RawJson>(&text) else {
                continue;
            };
            for r in perimeter_detect::normalize::split_records(source, v) {
                out.push((source.to_string(), r));
            }
        }
    }
    let demo = std::fs::read_to_string(repo().join("demo/events.jsonl")).unwrap_or_default();
    for line in demo.lines() {
        if let Ok(v) = sonic_rs::from_str::<perimeter_model::RawJson>(line) {
            use perimeter_model::raw_prelude::*;
            let source = v.get("source").and_then(|s| s.as_str()).unwrap_or("json");
            if let Some(event) = v.get("event") {
                out.push((source.to_string(), event.clone()));
            }
        }
    }
    // Interleave sources the way a shared bus would.
    out.sort_by_key(|(_, v)| {
        blake3::hash(sonic_rs::to_string(v).unwrap_or_default().as_bytes()).as_bytes()[0]
    });
    out
}

/// The same records as JSON lines (each a Perimeter envelope `{"source", "event"}`) repeated
/// until at least `n` lines.
pub fn mixed_jsonl(n: usize) -> Vec<u8> {
    let records = mixed_records();
    assert!(!records.is_empty(), "no bench input found");
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let (source, raw) = &records[i % records.len()];
        out.extend_from_slice(b"{\"source\":");
        serde_json::to_writer(&mut out, source).expect("serializing");
        out.extend_from_slice(b",\"event\":");
        sonic_rs::to_writer(&mut out, raw).expect("serializing");
        out.extend_from_slice(b"}\n");
        i += 1;
    }
    out
}
