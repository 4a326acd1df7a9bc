//! `perimeter reindex`: rebuild the search indexes from the Parquet files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use perimeter_store::{ReindexOptions, ReindexProgress, ReindexedDay, Store};

use crate::config::PerimeterConfig;

#[derive(clap::Args)]
pub struct ReindexArgs {
    /// Data directory (default: the configuration's `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Only this tenant's indexes.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only days on or after this one (`2026-11-01`, UTC).
    #[arg(long, value_name = "DAY")]
    pub from: Option<NaiveDate>,
    /// Only days on or before this one (`2026-11-30`, UTC).
    #[arg(long, value_name = "DAY")]
    pub to: Option<NaiveDate>,
    /// Rebuild every index in range, sound ones too: to apply a changed `raw_text_search_off`
    /// (or a new version's indexing) to events stored before.
    #[arg(long)]
    pub all: bool,
    /// Only list the indexes that would be rebuilt, and why; change nothing. Exit 1 when there
    /// is any (a check after a restore, or before starting a new version).
    #[arg(long)]
    pub check: bool,
}

/// Rebuild what `args` selects, printing progress to stderr and one line per index to stdout.
pub fn reindex(config: &PerimeterConfig, args: ReindexArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.unwrap_or_else(|| config.data_dir.clone());
    anyhow::ensure!(
        data_dir.join("parquet").is_dir(),
        "no Parquet files in {} to rebuild from: pass --data-dir (`perimeter demo` stores into \
         data/demo)",
        data_dir.display()
    );
    if let (Some(from), Some(to)) = (args.from, args.to) {
        anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    }
    let mut store_config = config.store.clone();
    store_config.data_dir = data_dir.clone();
    // The vendor's own time, read as when the record was stored: it tells which events had an
    // implausible one replaced by their receive time (marked `timestamp_adjusted`).
    let registry = crate::detect_cmd::normalizers(config)?;
    let vendor_time = |source: &str, raw: &perimeter_model::RawJson| {
        registry
            .normalize_ecs(source, raw)
            .ok()
            .and_then(|(_, ecs)| ecs.timestamp)
    };
    let options = ReindexOptions {
        tenant: args.tenant,
        from: args.from,
        to: args.to,
        all: args.all,
        check_only: args.check,
    };
    let started = std::time::Instant::now();
    // Several days are rebuilt at a time: each progress line names its own.
    let mut names = std::collections::HashMap::new();
    let report = Store::reindex(store_config, &options, &vendor_time, &mut |p| match p {
        ReindexProgress::Starting { n, of, day } => {
            let label = format!("[{n}/{of}] {}", name(day));
            eprintln!("{label}: rebuilding ({}) from {} files", day.why, day.files);
            names.insert(*n, label);
        }
        ReindexProgress::Indexed { n, events } => {
            let label = names.get(n).map_or("", String::as_str);
            eprintln!("{label}: {events} events indexed");
        }
        ReindexProgress::Done(day) => say!(
            "rebuilt  {}  {} events{} in {:.1}s ({})",
            name(day),
            day.events,
            match day.duplicate_rows {
                0 => String::new(),
                n => format!(" ({n} repeated rows left out)"),
            },
            day.seconds,
            day.why
        ),
    })
    .with_context(|| format!("reindexing {}", data_dir.display()))?;

    if args.check {
        for day in &report.rebuilt {
            say!("unsound  {}  {} ({} files)", name(day), day.why, day.files);
        }
        say!(
            "{} to rebuild, {} sound (`perimeter reindex` without --check rebuilds them)",
            report.rebuilt.len(),
            report.sound
        );
        return Ok(if report.rebuilt.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if report.interrupted_files_kept + report.interrupted_files_removed > 0 {
        say!(
            "files of batches a crash interrupted: {} kept, {} removed (uncommitted or cut short)",
            report.interrupted_files_kept,
            report.interrupted_files_removed
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    say!(
        "{} rebuilt ({} events in {:.1}s, {:.0} events/s), {} sound left as they were",
        indexes(report.rebuilt.len()),
        report.events(),
        seconds,
        report.events() as f64 / seconds.max(1e-3),
        report.sound
    );
    Ok(ExitCode::SUCCESS)
}

fn indexes(n: usize) -> String {
    match n {
        1 => "1 index".to_string(),
        n => format!("{n} indexes"),
    }
}

fn name(day: &ReindexedDay) -> String {
    format!("tenant {} {}", day.tenant, day.day)
}
