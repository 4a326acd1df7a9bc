//! Normalize + mask throughput (events/s on one core) over a mixed-source set of realistic SaaS
//! events, and JSON parsing on its own for comparison. Target: >= 500k events/s for normalize +
//! mask of already-parsed events.

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use perimeter_detect::mask::SecretMasker;
use perimeter_detect::normalize::NormalizerRegistry;
use perimeter_model::{sonic_rs, Masker, RawJson, RawRecord};

fn bench(c: &mut Criterion) {
    let records = common::mixed_records();
    let lines: Vec<String> = records
        .iter()
        .map(|(_, v)| sonic_rs::to_string(v).expect("serializing"))
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    let n = records.len() as u64;
    eprintln!(
        "bench input: {n} records, {} bytes on average",
        bytes / records.len().max(1)
    );
    let registry = NormalizerRegistry::builtin();
    let masker = SecretMasker::default();
    let now = chrono::Utc::now();
    let mut g = c.benchmark_group("normalize_mask");
    g.throughput(Throughput::Elements(n));

    // What the pipeline parses into (sonic-rs's arena DOM), and serde_json::Value for comparison.
    g.bench_function("parse_json_only", |b| {
        b.iter(|| {
            for l in &lines {
                let v: RawJson = sonic_rs::from_str(l).expect("valid");
                std::hint::black_box(v);
            }
        })
    });
    g.bench_function("parse_json_serde_json_value", |b| {
        b.iter(|| {
            for l in &lines {
                let v: serde_json::Value = serde_json::from_str(l).expect("valid");
                std::hint::black_box(v);
            }
        })
    });
    // One pass over records: normalize, and mask when a masker is given. Events are dropped
    // inside the timed part, as the pipeline drops them.
    let run = |source: &str, raw: RawJson, masker: Option<&SecretMasker>| {
        let rec = RawRecord {
            source: source.to_string(),
            tenant: "t".into(),
            received_at: now,
            line: None,
            raw,
        };
        if let Ok(mut e) = registry.normalize(source, rec) {
            if let Some(m) = masker {
                std::hint::black_box(m.mask(&mut e));
            }
            std::hint::black_box(e);
        }
    };
    for (name, masker) in [
        ("normalize_only", None),
        ("normalize_and_mask", Some(&masker)),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || records.clone(),
                |recs| {
                    for (source, raw) in recs {
                        run(&source, raw, masker);
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.bench_function("parse_normalize_mask", |b| {
        b.iter(|| {
            for ((source, _), l) in records.iter().zip(&lines) {
                run(source, sonic_rs::from_str(l).expect("valid"), Some(&masker));
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
