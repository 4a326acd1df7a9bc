//! `perimeter detect` end to end on one core: JSON-lines bytes -> parse -> normalize -> Sigma
//! (the rule pack plus generated variants, >= 1000 rules) -> UEBA -> mask. Prints events/s by
//! wall clock and per CPU-second of the benchmark thread. Target: >= 300k events/s per core.
//!
//! `PERIMETER_BENCH_EVENTS` sets the input size (default 200000).

mod common;
mod cputime;

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

    // One timed pass of the input through `step`; prints events/s by wall clock and by this
    // thread's CPU time (what one core does, even when other work shares the machine).
    let timed = |label: &str, step: &mut dyn FnMut(InputItem)| {
        let wall = Instant::now();
        let cpu = cputime::thread_cpu_seconds();
        for item in JsonlReader::new(&input[..], JsonlReaderConfig::default()) {
            step(item.expect("in-memory read"));
        }
        let wall = wall.elapsed().as_secs_f64();
        let cpu = cputime::thread_cpu_seconds() - cpu;
        println!(
            "{label}: {:.0} events/s (wall), {:.0} events/s per CPU-second",
            n as f64 / wall,
            n as f64 / cpu
        );
    };
    let now = chrono::Utc::now();
    let record = |pipeline: &mut Pipeline, out: &mut PipelineOutput, item: InputItem| match item {
        InputItem::Record { line, value, .. } => {
            pipeline.process_value("auto", "t", Some(line), value, now, out)
        }
        InputItem::Invalid { .. } => unreachable!("bench input is valid"),
    };

    // Stage breakdown: parsing alone, then parse + normalize + mask without detectors.
    timed("parse only (JSON lines -> sonic-rs DOM)", &mut |item| {
        std::hint::black_box(item);
    });
    {
        let mut pipeline = Pipeline::new(
            NormalizerRegistry::builtin(),
            SecretMasker::default(),
            Arc::new(Metrics::new()),
            true,
        );
        let mut out = PipelineOutput::default();
        timed("parse + normalize + mask (no detectors)", &mut |item| {
            record(&mut pipeline, &mut out, item);
            out.clear();
        });
    }

    // `keep_events: false` is the `detect` command (alerts out, events dropped unmasked because
    // nothing of them leaves memory); `true` also masks every event, as `run` and `normalize` do.
    for (with_ueba, keep_events) in [(false, false), (true, false), (false, true), (true, true)] {
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
            keep_events,
        )
        .with_sigma(SigmaDetector::new(rules, &options))
        // The input repeats a few thousand records: with the replay window on, every repeat
        // would skip the detectors and the figure would not measure detection.
        .with_replay_window(0);
        if with_ueba {
            pipeline = pipeline.with_ueba(UebaEngine::new(UebaConfig::default(), key));
        }
        let mut out = PipelineOutput::default();
        let mut alerts = 0usize;
        let label = format!(
            "detect end to end ({rule_count} rules, ueba {}, {})",
            if with_ueba { "on" } else { "off" },
            if keep_events {
                "every event masked"
            } else {
                "alerts masked, events dropped"
            }
        );
        timed(&label, &mut |item| {
            record(&mut pipeline, &mut out, item);
            alerts += out.alerts.len();
            out.clear();
        });
        pipeline.finish(&mut out);
        alerts += out.alerts.len();
        println!("  {alerts} alerts");
    }
}
