//! Normalize + mask throughput (events/s on one core) over a mixed-source set of realistic SaaS
//! events, and JSON parsing on its own for comparison. Target: >= 500k events/s for normalize +
//! mask of already-parsed events.

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use perimeter_detect::mask::SecretMasker;
use perimeter_detect::normalize::NormalizerRegistry;
use perimeter_model::{Masker, RawRecord};

fn bench(c: &mut Criterion) {
    let records = common::mixed_records();
    let lines: Vec<String> = records.iter().map(|(_, v)| v.to_string()).collect();
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

    g.bench_function("parse_json_only", |b| {
        b.iter(|| {
            for l in &lines {
                let v: serde_json::Value = serde_json::from_str(l).expect("valid");
                std::hint::black_box(v);
            }
        })
    });
    g.bench_function("normalize_only", |b| {
        b.iter_batched(
            || records.clone(),
            |recs| {
                for (source, raw) in recs {
                    let rec = RawRecord {
                        source: source.clone(),
                        tenant: "t".into(),
                        received_at: now,
                        line: None,
                        raw,
                    };
                    std::hint::black_box(registry.normalize(&source, rec).ok());
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("normalize_and_mask", |b| {
        b.iter_batched(
            || records.clone(),
            |recs| {
                for (source, raw) in recs {
                    let rec = RawRecord {
                        source: source.clone(),
                        tenant: "t".into(),
                        received_at: now,
                        line: None,
                        raw,
                    };
                    if let Ok(mut e) = registry.normalize(&source, rec) {
                        std::hint::black_box(masker.mask(&mut e));
                    }
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("parse_normalize_mask", |b| {
        b.iter(|| {
            for ((source, _), l) in records.iter().zip(&lines) {
                let raw: serde_json::Value = serde_json::from_str(l).expect("valid");
                let rec = RawRecord {
                    source: source.clone(),
                    tenant: "t".into(),
                    received_at: now,
                    line: None,
                    raw,
                };
                if let Ok(mut e) = registry.normalize(source, rec) {
                    std::hint::black_box(masker.mask(&mut e));
                }
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
