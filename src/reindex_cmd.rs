//! `perimeter reindex` and `perimeter repair-parquet`: rebuild the search indexes from the
//! Parquet files, and write back from the indexes what the Parquet files lost.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use perimeter_store::{ReindexOptions, ReindexProgress, ReindexedDay, Store};

use crate::config::PerimeterConfig;

/// The days of a data directory a store repair works on.
#[derive(clap::Args)]
pub struct StoreDays {
    /// Data directory (default: the configuration's `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Only this tenant's days.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only days on or after this one (`2026-11-01`, UTC).
    #[arg(long, value_name = "DAY")]
    pub from: Option<NaiveDate>,
    /// Only days on or before this one (`2026-11-30`, UTC).
    #[arg(long, value_name = "DAY")]
    pub to: Option<NaiveDate>,
}

impl StoreDays {
    /// The store config for the data directory, and the options selecting the days.
    fn resolve(
        self,
        config: &PerimeterConfig,
        needs: &str,
    ) -> anyhow::Result<(perimeter_store::StoreConfig, ReindexOptions)> {
        let data_dir = self.data_dir.unwrap_or_else(|| config.data_dir.clone());
        anyhow::ensure!(
            data_dir.join(needs).is_dir(),
            "no {needs} in {}: pass --data-dir (`perimeter demo` stores into data/demo)",
            data_dir.display()
        );
        if let (Some(from), Some(to)) = (self.from, self.to) {
            anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
        }
        let mut store_config = config.store.clone();
        store_config.data_dir = data_dir;
        let options = ReindexOptions {
            tenant: self.tenant,
            from: self.from,
            to: self.to,
            ..ReindexOptions::default()
        };
        Ok((store_config, options))
    }
}

#[derive(clap::Args)]
pub struct ReindexArgs {
    #[command(flatten)]
    pub days: StoreDays,
    /// Rebuild every index in range, sound ones too: to apply a changed `raw_text_search_off`
    /// (or a new version's indexing) to events stored before.
    #[arg(long)]
    pub all: bool,
    /// Only list the indexes that would be rebuilt, and why; change nothing. Exit 1 when there
    /// is any (a check after a restore, or before starting a new version).
    #[arg(long)]
    pub check: bool,
}

#[derive(clap::Args)]
pub struct RepairParquetArgs {
    #[command(flatten)]
    pub days: StoreDays,
    /// Only list the partitions that would be repaired (events to write back, unreadable
    /// files); change nothing. Exit 1 when there is any.
    #[arg(long)]
    pub check: bool,
}

/// Rebuild what `args` selects, printing progress to stderr and one line per index to stdout.
pub fn reindex(config: &PerimeterConfig, args: ReindexArgs) -> anyhow::Result<ExitCode> {
    let (store_config, mut options) = args.days.resolve(config, "parquet")?;
    options.all = args.all;
    options.check_only = args.check;
    let data_dir = store_config.data_dir.clone();
    // The vendor's own time, read as when the record was stored: it tells which events had an
    // implausible one replaced by their receive time (marked `timestamp_adjusted`).
    let registry = crate::detect_cmd::normalizers(config)?;
    let vendor_time = |source: &str, raw: &perimeter_model::RawJson| {
        registry
            .normalize_ecs(source, raw)
            .ok()
            .and_then(|(_, ecs)| ecs.timestamp)
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
    .map_err(|e| needs_the_directory(e, &data_dir))
    .with_context(|| format!("reindexing {}", data_dir.display()))?;

    for path in &report.unreadable_files {
        say!(
            "warn     {} cannot be read; its day's index is sound and was left as it is (`perimeter repair-parquet` writes the file's events back from it)",
            path.display()
        );
    }
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

/// A repair writes the data directory: when a service holds it, say so without the store's
/// hint about reading through `--server`, which does not apply here.
fn needs_the_directory(
    e: perimeter_store::StoreError,
    data_dir: &std::path::Path,
) -> anyhow::Error {
    match e {
        perimeter_store::StoreError::Locked { .. } => anyhow::anyhow!(
            "{} is in use by a running `perimeter run` or `perimeter demo`: stop it first (a \
             repair needs the data directory to itself)",
            data_dir.display()
        ),
        other => other.into(),
    }
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

/// Write back from the indexes the events the Parquet files of the selected days lost (an
/// unreadable file, a deleted partition), and set unreadable files aside.
pub fn repair_parquet(
    config: &PerimeterConfig,
    args: RepairParquetArgs,
) -> anyhow::Result<ExitCode> {
    let (store_config, mut options) = args.days.resolve(config, "index")?;
    options.check_only = args.check;
    let data_dir = store_config.data_dir.clone();
    let report = Store::repair_parquet(store_config, &options)
        .map_err(|e| needs_the_directory(e, &data_dir))
        .with_context(|| format!("repairing the Parquet files of {}", data_dir.display()))?;
    let verb = if args.check { "to repair" } else { "repaired" };
    for p in &report.repaired {
        say!(
            "{verb}  tenant {} {} source {}: {} events {} from the index{}",
            p.tenant,
            p.day,
            p.source,
            p.restored,
            if args.check {
                "to write back"
            } else {
                "written back"
            },
            match p.unreadable.len() {
                0 => String::new(),
                n => format!(
                    "; {n} unreadable file(s) {}: {}",
                    if args.check {
                        "to set aside"
                    } else {
                        "set aside as .<name>.unreadable"
                    },
                    p.unreadable
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        );
    }
    for unusable in &report.unusable_indexes {
        say!("skipped  {unusable} (`perimeter reindex` rebuilds an index from the Parquet files)");
    }
    say!(
        "{} partition(s) {verb}, {} day(s) sound",
        report.repaired.len(),
        report.sound
    );
    Ok(if args.check && !report.repaired.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
