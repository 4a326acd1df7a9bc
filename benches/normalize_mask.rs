//! Normalize + mask throughput (events/s on one core) over a mixed-source set of realistic SaaS
//! events, and JSON parsing on its own for comparison. Target: >= 500k events/s for normalize +
//! mask of already-parsed events.

mod common;
mod cputime;

use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use perimeter_detect::mask::{MaskConfig, SecretMasker};
use perimeter_detect::normalize::NormalizerRegistry;
use perimeter_model::{sonic_rs, Event, Masker, RawJson, RawRecord};

/// The masker the figures use: the default configuration, or the `[mask]` table of the TOML
/// file `NORMALIZE_MASK_CONFIG` names (to price a narrower masking scope, e.g.
/// `benches/mask-issue3-minimum.toml`).
fn bench_masker() -> SecretMasker {
    match std::env::var_os("NORMALIZE_MASK_CONFIG") {
        None => SecretMasker::default(),
        Some(path) => {
            let config = MaskConfig::from_toml_file(std::path::Path::new(&path))
                .unwrap_or_else(|e| panic!("NORMALIZE_MASK_CONFIG: {e}"));
            SecretMasker::new(&config).unwrap_or_else(|e| panic!("NORMALIZE_MASK_CONFIG: {e}"))
        }
    }
}

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
    let masker = bench_masker();
    let now = chrono::Utc::now();
    // One record: normalize, and mask when a masker is given; what masking changed. The event is
    // dropped here, inside the timed part, as the pipeline drops it.
    let run = |source: &str, raw: RawJson, masker: Option<&SecretMasker>, id: bool| {
        let rec = RawRecord {
            source: source.to_string(),
            tenant: "t".into(),
            received_at: now,
            line: None,
            raw,
        };
        let mut e = pipeline_event(&registry, source, rec)?;
        let stats = masker.map(|m| m.mask(&mut e));
        if id {
            std::hint::black_box(e.id());
        }
        std::hint::black_box(e);
        stats
    };
    // How many records the masker changes: those pay for the write mode and the re-parse.
    let (changed_recs, clean_recs): (Vec<_>, Vec<_>) =
        records.iter().cloned().partition(|(source, raw)| {
            run(source, raw.clone(), Some(&masker), false).is_some_and(|s| s.total() > 0)
        });
    let changed = changed_recs.len();
    eprintln!(
        "records changed by masking: {changed} of {n} ({:.1}%)",
        100.0 * changed as f64 / n.max(1) as f64
    );
    // Events per CPU-second of this thread, before criterion's wall-clock figures: on a shared
    // machine this is what one core does. Each figure is the median of 15 passes over the input.
    // Cold: each masking pass gets a new masker, so its per-thread memory of clean texts starts
    // empty and only repeats within the input are hits. Warm: one masker for all passes, as in a
    // long-running stream of the same sources (criterion's loops below are warm too).
    #[derive(Clone, Copy, PartialEq)]
    enum Memory {
        Cold,
        Warm,
    }
    let per_cpu_second = |recs: &[(String, RawJson)], mask: bool, id: bool, memory: Memory| {
        let shared = bench_masker();
        let mut rates: Vec<f64> = (0..15)
            .map(|_| {
                let batch = recs.to_vec();
                let fresh;
                let masker = if memory == Memory::Warm {
                    &shared
                } else {
                    fresh = bench_masker();
                    &fresh
                };
                let cpu = cputime::thread_cpu_seconds();
                for (source, raw) in batch {
                    std::hint::black_box(run(&source, raw, mask.then_some(masker), id));
                }
                recs.len() as f64 / (cputime::thread_cpu_seconds() - cpu)
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    // Masking derives the event id only for records it changes (the id is of the content as
    // received); a clean record's id is derived by whoever asks for it first (the store, an
    // alert's evidence). The "every event's id" lines charge every record's id here, as
    // storing them all would.
    for (label, recs, mask, id, memory) in [
        ("normalize only", &records, false, false, Memory::Cold),
        (
            "normalize + mask, memory cold",
            &records,
            true,
            false,
            Memory::Cold,
        ),
        (
            "  records masking leaves unchanged",
            &clean_recs,
            true,
            false,
            Memory::Cold,
        ),
        (
            "  records masking changes (id derived)",
            &changed_recs,
            true,
            false,
            Memory::Cold,
        ),
        (
            "normalize + mask, memory warm",
            &records,
            true,
            false,
            Memory::Warm,
        ),
        (
            "  records masking leaves unchanged",
            &clean_recs,
            true,
            false,
            Memory::Warm,
        ),
        (
            "normalize + mask + every event's id, memory cold",
            &records,
            true,
            true,
            Memory::Cold,
        ),
    ] {
        eprintln!(
            "{label}: {:.0} events per CPU-second",
            per_cpu_second(recs, mask, id, memory)
        );
    }
    // The floor of any masking that walks the parsed record: one bare pass touching every key
    // and string (no decisions), per CPU-second, for reading the figures above.
    // Per CPU-second of `pass` (over every record), median of 15.
    let rate_of = |pass: &dyn Fn()| {
        let mut rates: Vec<f64> = (0..15)
            .map(|_| {
                let cpu = cputime::thread_cpu_seconds();
                pass();
                records.len() as f64 / (cputime::thread_cpu_seconds() - cpu)
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let walk_rate = rate_of(&|| {
        for (_, raw) in &records {
            std::hint::black_box(bare_walk(raw));
        }
    });
    eprintln!("one bare walk over every key and string (reference): {walk_rate:.0} records per CPU-second");
    // What the figures above start after: parsing, and the repeated-key check the pipeline runs
    // on each parsed input before anything reads it (`resolve_repeated_keys`).
    let parse_rate = rate_of(&|| {
        for l in &lines {
            std::hint::black_box(sonic_rs::from_str::<RawJson>(l).expect("valid"));
        }
    });
    let check_rate = rate_of(&|| {
        for (_, raw) in &records {
            let mut raw = raw.clone();
            std::hint::black_box(perimeter_model::resolve_repeated_keys(&mut raw));
        }
    });
    eprintln!("parse (sonic-rs DOM): {parse_rate:.0} records per CPU-second; repeated-key check of the parsed record: {check_rate:.0}");
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
    // What the pipeline does with each parsed input before anything reads it.
    g.bench_function("parse_json_resolve_repeated_keys", |b| {
        b.iter(|| {
            for l in &lines {
                let mut v: RawJson = sonic_rs::from_str(l).expect("valid");
                perimeter_model::resolve_repeated_keys(&mut v);
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
    for (name, masker) in [
        ("normalize_only", None),
        ("normalize_and_mask", Some(&masker)),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || records.clone(),
                |recs| {
                    for (source, raw) in recs {
                        run(&source, raw, masker, false);
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    // The two populations apart (per-record cost differs a lot): records masking leaves as
    // they are (check mode only) and records it changes (check, write, re-parse).
    for (name, recs) in [
        ("normalize_and_mask_clean_records", &clean_recs),
        ("normalize_and_mask_changed_records", &changed_recs),
    ] {
        g.throughput(Throughput::Elements(recs.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || recs.clone(),
                |recs| {
                    for (source, raw) in recs {
                        run(&source, raw, Some(&masker), false);
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.throughput(Throughput::Elements(n));
    g.bench_function("parse_normalize_mask", |b| {
        b.iter(|| {
            for ((source, _), l) in records.iter().zip(&lines) {
                let mut raw: RawJson = sonic_rs::from_str(l).expect("valid");
                perimeter_model::resolve_repeated_keys(&mut raw);
                run(source, raw, Some(&masker), false);
            }
        })
    });
    g.finish();
}

/// The event the pipeline makes of an already-parsed record (`normalize_ecs`, then the event):
/// the repeated-key check (`resolve_repeated_keys`) runs where records enter the pipeline,
/// before pages are split, so it is measured with parsing (`parse_json_resolve_repeated_keys`).
fn pipeline_event(registry: &NormalizerRegistry, source: &str, rec: RawRecord) -> Option<Event> {
    let (name, ecs) = registry.normalize_ecs(source, &rec.raw).ok()?;
    Some(Event::new(name, rec, ecs))
}

/// Bytes of every key and string in `v`, read through the same DOM API masking uses.
fn bare_walk(v: &RawJson) -> usize {
    use perimeter_model::raw_prelude::*;
    match v.as_ref() {
        ValueRef::String(s) => std::hint::black_box(s.as_bytes()).len(),
        ValueRef::Array(a) => a.iter().map(bare_walk).sum(),
        ValueRef::Object(o) => o
            .iter()
            .map(|(k, x)| std::hint::black_box(k.as_bytes()).len() + bare_walk(x))
            .sum(),
        _ => 0,
    }
}

/// One cold pass for instruction counting: every record normalized and masked by `masker`
/// (built by the caller, so its construction is outside this function); returns how many
/// records masking changed. Not inlined, so that callgrind can count exactly this function
/// (`--toggle-collect=normalize_mask::measured_pass`).
#[inline(never)]
fn measured_pass(
    registry: &NormalizerRegistry,
    masker: Option<&SecretMasker>,
    records: Vec<(String, RawJson)>,
) -> usize {
    let now = chrono::Utc::now();
    let mut changed = 0;
    for (source, raw) in records {
        let rec = RawRecord {
            source: source.clone(),
            tenant: "t".into(),
            received_at: now,
            line: None,
            raw,
        };
        let Some(mut e) = pipeline_event(registry, &source, rec) else {
            continue;
        };
        if masker.is_some_and(|m| m.mask(&mut e).total() > 0) {
            changed += 1;
        }
        std::hint::black_box(e);
    }
    changed
}

/// `NORMALIZE_MASK_PASSES_ONLY=<n>`: only `n` cold passes of [`measured_pass`] (a new masker
/// each), no criterion, for counting instructions under callgrind: on a shared machine whose
/// speed drifts by 2x within an hour, instruction counts are the figure that compares two
/// builds. `NORMALIZE_MASK_NO_MASK=1` leaves masking out (normalize only);
/// `NORMALIZE_MASK_WARM=1` keeps one masker for all passes. See
/// `benches/README.md`.
fn passes_only(passes: usize) {
    let records = common::mixed_records();
    let registry = NormalizerRegistry::builtin();
    let mask = std::env::var_os("NORMALIZE_MASK_NO_MASK").is_none();
    // `NORMALIZE_MASK_WARM=1`: one masker for every pass, so passes after the first find the
    // memory of clean texts and the regexes' lazy DFAs built (the steady state of a long
    // stream); the first pass is cold, so two runs' difference counts the warm passes.
    let warm = std::env::var_os("NORMALIZE_MASK_WARM").is_some();
    let shared = (mask && warm).then(bench_masker);
    let mut changed = 0;
    for _ in 0..passes {
        let fresh = (mask && !warm).then(bench_masker);
        let masker = shared.as_ref().or(fresh.as_ref());
        changed += measured_pass(&registry, masker, records.clone());
    }
    eprintln!(
        "{passes} passes over {} records: {} normalized{}, {changed} changed by masking",
        records.len(),
        passes * records.len(),
        if mask { " and masked" } else { "" },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}

fn main() {
    if let Some(passes) = std::env::var_os("NORMALIZE_MASK_PASSES_ONLY") {
        passes_only(passes.to_str().and_then(|p| p.parse().ok()).unwrap_or(1));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
