//! `perimeter detect` end to end on one core: JSON-lines bytes -> parse -> normalize -> Sigma
//! (the rule pack plus generated variants, >= 1000 rules) -> UEBA -> mask. Prints events/s.
//! Target: >= 300k events/s per core.
//!
//! `PERIMETER_BENCH_EVENTS` sets the input size (default 200000).

mod common;

use perimeter_detect::mask::SecretMasker;
use perimeter_detect::normalize::NormalizerRegistry;
use perimeter_detect::pipeline::{entity_key, Pipeline, PipelineOutput};
use perimeter_detect::sigma::{RuleSet, SigmaDetector, SigmaOptions};
use perimeter_detect::ueba::{UebaConfig, UebaEngine};
use perimeter_ingest::{InputItem, JsonlReader, JsonlReaderConfig};
use perimeter_model::Metrics;
use std::sync::Arc;
use std::time::Instant;

/// Realistic rule shapes per source, varied by index so they do not match the benign input.
fn generated_rule(i: usize) -> String {
    let (product, service, field, modifier) = match i % 7 {
        0 => ("okta", "okta", "eventType", ""),
        1 => ("github", "audit", "action", "|startswith"),
        2 => ("gcp", "google_workspace.admin", "events.name", ""),
        3 => ("slack", "", "action", "|contains"),
        4 => ("m365", "audit", "Operation", ""),
        5 => ("aws", "cloudtrail", "eventName", "|endswith"),
        _ => ("onepassword", "", "action", ""),
    };
    let service = if service.is_empty() {
        String::new()
    } else {
        format!("\n    service: {service}")
    };
    format!(
        "title: Generated variant {i}\nid: 00000000-0000-4000-8000-{i:012}\nstatus: test\nlogsource:\n    product: {product}{service}\n\
         detection:\n    selection:\n        {field}{modifier}:\n            - 'variant.{i}.create'\n            - 'variant.{i}.delete'\n\
         \x20   filter:\n        outcome.result: SUCCESS\n    condition: selection and not filter\nlevel: medium\n"
    )
}

fn main() {
    let n: usize = std::env::var("PERIMETER_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = 1000;
    for i in 0..generated {
        std::fs::write(
            dir.path().join(format!("variant_{i}.yml")),
            generated_rule(i),
        )
        .expect("writing rule");
    }
    let pack = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/detection-rules"));
    let options = SigmaOptions::default();
    let (rules, report) = RuleSet::load(&[pack, dir.path().to_path_buf()], &options);
    assert!(
        report.failed.is_empty(),
        "rules failed to load: {:?}",
        report.failed.first().map(|f| f.to_string())
    );
    let rule_count = rules.len();
    let input = common::mixed_jsonl(n);
    eprintln!(
        "input: {n} lines, {} MB; rules: {rule_count}",
        input.len() / 1_000_000
    );

    // Stage breakdown: parsing alone, then parse + normalize + mask without detectors.
    let started = Instant::now();
    for item in JsonlReader::new(&input[..], JsonlReaderConfig::default()) {
        std::hint::black_box(item.expect("in-memory read"));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "parse only (JSON lines -> serde_json::Value): {:.0} events/s per core",
        n as f64 / secs
    );
    {
        let mut pipeline = Pipeline::new(
            NormalizerRegistry::builtin(),
            SecretMasker::default(),
            Arc::new(Metrics::new()),
            false,
        );
        let mut out = PipelineOutput::default();
        let now = chrono::Utc::now();
        let started = Instant::now();
        for item in JsonlReader::new(&input[..], JsonlReaderConfig::default()) {
            if let InputItem::Record { line, value } = item.expect("in-memory read") {
                pipeline.process_value("auto", "t", Some(line), value, now, &mut out);
            }
            out.clear();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "parse + normalize + mask (no detectors): {:.0} events/s per core",
            n as f64 / secs
        );
    }

    for with_ueba in [false, true] {
        let masker = SecretMasker::default();
        let key = entity_key(&masker);
        let (rules, _) = RuleSet::load(
            &[
                std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/detection-rules")),
                dir.path().to_path_buf(),
            ],
            &options,
        );
        let mut pipeline = Pipeline::new(
            NormalizerRegistry::builtin(),
            masker,
            Arc::new(Metrics::new()),
            false,
        )
        .with_sigma(SigmaDetector::new(rules, &options));
        if with_ueba {
            pipeline = pipeline.with_ueba(UebaEngine::new(UebaConfig::default(), key));
        }
        let mut out = PipelineOutput::default();
        let mut alerts = 0usize;
        let now = chrono::Utc::now();
        let started = Instant::now();
        for item in JsonlReader::new(&input[..], JsonlReaderConfig::default()) {
            match item.expect("in-memory read") {
                InputItem::Record { line, value } => {
                    pipeline.process_value("auto", "t", Some(line), value, now, &mut out)
                }
                InputItem::Invalid { .. } => unreachable!("bench input is valid"),
            }
            alerts += out.alerts.len();
            out.clear();
        }
        pipeline.finish(&mut out);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "detect end-to-end ({} rules, ueba {}): {n} events in {secs:.2}s = {:.0} events/s per core, {alerts} alerts",
            rule_count,
            if with_ueba { "on" } else { "off" },
            n as f64 / secs
        );
    }
}
