//! The masker's per-thread memory (`mask/cache.rs`) is a cache of exact answers: every record
//! of the recorded vendor pages and the demo day, masked by a masker whose memory has seen them
//! all (twice), comes out as when masked with an empty memory, with the same counts.

use perimeter_detect::mask::{MaskCounts, SecretMasker};
use perimeter_detect::normalize::{split_records, NormalizerRegistry};
use perimeter_model::{Event, RawJson};

mod common;

fn json_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

/// Every record of every recorded page, and the demo day's events.
fn records() -> Vec<RawJson> {
    let mut files = Vec::new();
    json_files(std::path::Path::new(&common::shared()), &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable page");
        if let Ok(page) = sonic_rs::from_str::<RawJson>(&text) {
            out.extend(split_records("auto", page));
        }
    }
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../demo/events.jsonl");
    for line in std::fs::read_to_string(demo).expect("demo events").lines() {
        use perimeter_model::raw_prelude::*;
        if let Ok(v) = sonic_rs::from_str::<RawJson>(line) {
            if let Some(event) = v.get("event") {
                out.push(event.clone());
            }
        }
    }
    out
}

fn event(registry: &NormalizerRegistry, raw: RawJson) -> Event {
    let record = common::record(raw, None);
    let source = registry
        .detect_source(&record.raw)
        .unwrap_or("json")
        .to_string();
    let ecs = registry
        .normalize_ecs(&source, &record.raw)
        .map(|(_, ecs)| ecs)
        .unwrap_or_default();
    Event::new(source, record, ecs)
}

/// The masked event as text (raw record and ECS), and what masking counted.
fn masked(masker: &SecretMasker, mut e: Event) -> (String, String, MaskCounts) {
    let mut counts = MaskCounts::default();
    masker.mask_counted(&mut e, &mut counts);
    let raw = sonic_rs::to_string(&e.raw).expect("serializable");
    let ecs = serde_json::to_string(&e.ecs).expect("serializable");
    (raw, ecs, counts)
}

#[test]
fn the_mask_memory_never_changes_an_outcome() {
    let registry = NormalizerRegistry::builtin();
    let records = records();
    assert!(records.len() > 1_000, "{} records", records.len());
    let masker = SecretMasker::default();
    // Empty memory: each record masked on a thread of its own (the memory is per thread).
    let cold: Vec<_> = records
        .iter()
        .map(|raw| {
            let e = event(&registry, raw.clone());
            std::thread::scope(|s| {
                s.spawn(|| masked(&masker, e))
                    .join()
                    .expect("masking thread")
            })
        })
        .collect();
    // One thread for all, twice over: the second pass answers from the memory.
    for _ in 0..2 {
        for (raw, cold) in records.iter().zip(&cold) {
            let warm = masked(&masker, event(&registry, raw.clone()));
            assert_eq!(
                &warm,
                cold,
                "record {}",
                sonic_rs::to_string(raw).unwrap_or_default()
            );
        }
    }
    let changed = cold
        .iter()
        .filter(|(_, _, c)| c.stats().by_key + c.stats().by_pattern > 0);
    assert!(changed.count() > 10, "the records hold things to mask");
}
