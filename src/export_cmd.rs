//! `perimeter export`: the events a query matches, as one file (JSON lines, CSV or Parquet), from
//! a data directory or a running server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use perimeter_store::{ExportFormat, ExportSummary, DEFAULT_EXPORT_EVENTS, MAX_EXPORT_EVENTS};

use crate::config::PerimeterConfig;
use crate::progress::ProgressLines;
use crate::terminal_cmd::{
    event_sort, http_client, local_store, query_string, terminal_safe, Access, TimeRange,
};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Query in tantivy syntax, as for `perimeter search` (`'*'` for every event).
    #[arg(allow_hyphen_values = true)]
    pub query: String,
    /// The file to write, or `-` for standard output. A file is written under a temporary name
    /// beside it and renamed once complete: a file at this path is always a whole export.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    /// `jsonl`: every stored (masked) event whole, one per line; `csv`: the main ECS columns,
    /// for a spreadsheet; `parquet`: every column (as in the store's Parquet files, plus
    /// `tenant` and `source`), for DuckDB, pyarrow, pandas or Spark. Default: from the
    /// extension of --output (`.jsonl`, `.ndjson`, `.json`, `.csv`, `.parquet`), else jsonl.
    #[arg(long, value_parser = ["jsonl", "csv", "parquet"])]
    pub format: Option<String>,
    #[command(flatten)]
    pub range: TimeRange,
    /// newest (default) or oldest first.
    #[arg(long, value_parser = ["newest", "oldest"])]
    pub sort: Option<String>,
    /// Most events to export; the newest are kept (with --sort oldest the oldest), and a cut is
    /// said on stderr. At most 10000000.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_EXPORT_EVENTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(1..=MAX_EXPORT_EVENTS as u64))]
    pub max_events: usize,
    /// Replace a file already at --output.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub at: Access,
}

/// Where the export's bytes go: standard output, or a temporary file renamed into place when
/// complete (removed if the export fails).
enum Output {
    Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>),
    File {
        file: std::io::BufWriter<std::fs::File>,
        partial: PathBuf,
        path: PathBuf,
    },
}

impl Output {
    fn open(path: &Path, force: bool, format: ExportFormat) -> anyhow::Result<Output> {
        use std::io::IsTerminal;
        if path == Path::new("-") {
            anyhow::ensure!(
                !(format == ExportFormat::Parquet && std::io::stdout().is_terminal()),
                "a Parquet file is binary: write it with --output FILE, or pipe standard output on"
            );
            return Ok(Output::Stdout(std::io::BufWriter::new(
                std::io::stdout().lock(),
            )));
        }
        anyhow::ensure!(
            force || !path.exists(),
            "{} exists: pass --force to replace it",
            path.display()
        );
        let name = path
            .file_name()
            .with_context(|| format!("--output {} names no file", path.display()))?;
        // A new file of an unguessable name, never one there already: in a directory others
        // may write to (`/tmp`), a name known in advance could be a link planted to have the
        // export overwrite another file, or land where someone else reads it.
        // (The standard library's hasher is keyed from the OS's randomness per process.)
        let nonce = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            (std::process::id(), std::time::SystemTime::now()),
        );
        let mut partial_name = std::ffi::OsString::from(".");
        partial_name.push(name);
        partial_name.push(format!(".partial-{nonce:016x}"));
        let partial = path.with_file_name(partial_name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        Ok(Output::File {
            file: std::io::BufWriter::new(file),
            partial,
            path: path.to_path_buf(),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(out) => out,
            Output::File { file, .. } => file,
        }
    }

    /// Put the complete export in place.
    fn finish(self) -> anyhow::Result<()> {
        match self {
            Output::Stdout(mut out) => Ok(out.flush()?),
            Output::File {
                file,
                partial,
                path,
            } => {
                let done = file
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f| f.sync_all())
                    .and_then(|()| std::fs::rename(&partial, &path));
                if let Err(e) = done {
                    let _ = std::fs::remove_file(&partial);
                    return Err(e).with_context(|| format!("writing {}", path.display()));
                }
                Ok(())
            }
        }
    }

    /// Remove what a failed export wrote.
    fn abandon(self) {
        if let Output::File { partial, .. } = self {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// How often a long export says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub fn export(config: &PerimeterConfig, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let format = match &args.format {
        Some(name) => name.parse().map_err(anyhow::Error::msg)?,
        None => ExportFormat::of_path(&args.output).unwrap_or(ExportFormat::Jsonl),
    };
    let mut output = Output::open(&args.output, args.force, format)?;
    let result = if args.at.server.is_some() {
        from_server(&args, format, output.writer())
    } else {
        from_data_dir(config, &args, format, output.writer())
    };
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            output.abandon();
            return Err(e);
        }
    };
    output.finish()?;
    let to = if args.output == Path::new("-") {
        "standard output".to_string()
    } else {
        args.output.display().to_string()
    };
    eprintln!(
        "exported {} events of the {} matched to {} ({})",
        summary.exported,
        summary.matched,
        terminal_safe(&to),
        format.as_str()
    );
    if summary.matched > summary.exported {
        eprintln!(
            "cut at --max-events {}: {} more matched (raise --max-events, or narrow --from/--to)",
            args.max_events,
            summary.matched - summary.exported
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn from_data_dir(
    config: &PerimeterConfig,
    args: &ExportArgs,
    format: ExportFormat,
    out: &mut dyn Write,
) -> anyhow::Result<ExportSummary> {
    let (store, tenant) = local_store(&args.at, config)?;
    let sort = event_sort(&args.sort)?;
    let [from, to] = args.range.parsed()?;
    let query = perimeter_store::EventQuery {
        query: args.query.clone(),
        from,
        to,
        limit: 0,
        cursor: None,
        sort,
    };
    let mut progress = ProgressLines::new(PROGRESS_EVERY, true);
    Ok(store.export_events(
        &tenant,
        &query,
        args.max_events,
        format,
        &mut |bytes| out.write_all(&bytes),
        &mut |done, matched| {
            progress.say(|| {
                format!(
                    "exported {done} of {} events",
                    matched.min(args.max_events as u64)
                )
            })
        },
    )?)
}

fn from_server(
    args: &ExportArgs,
    format: ExportFormat,
    out: &mut dyn Write,
) -> anyhow::Result<ExportSummary> {
    let token =
        args.at.token.as_deref().context(
            "an API token is required with --server: set PERIMETER_TOKEN or pass --token",
        )?;
    if let Some(tenant) = &args.at.tenant {
        eprintln!(
            "warning: --tenant {} is not used with --server: the server answers for the token's tenant",
            terminal_safe(tenant)
        );
    }
    let params = query_string(&[
        ("q", &Some(args.query.clone())),
        ("from", &args.range.from),
        ("to", &args.range.to),
        ("sort", &args.sort),
        ("max_events", &Some(args.max_events.to_string())),
        ("format", &Some(format.as_str().to_string())),
    ]);
    let server = args.at.server.as_deref().unwrap_or_default();
    let url = format!(
        "{}/api/v1/events/export?{params}",
        server.trim_end_matches('/')
    );
    // No overall timeout: a large export streams for as long as it takes.
    let client = http_client(args.at.ca_cert.as_deref(), None)?;
    let mut resp = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().unwrap_or_default();
        anyhow::bail!("GET {url}: {status}: {body}");
    }
    let count = |name: &str| -> anyhow::Result<u64> {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("GET {url}: the answer has no {name} header"))
    };
    let summary = ExportSummary {
        matched: count("x-perimeter-matched")?,
        exported: count("x-perimeter-exported")?,
    };
    // The body streams; a server failing mid-export breaks it, which is an error here.
    let mut progress = ProgressLines::new(PROGRESS_EVERY, true);
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = std::io::Read::read(&mut resp, &mut buf)
            .with_context(|| format!("GET {url}: the export broke off after {received} bytes"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        received += n as u64;
        progress.say(|| format!("received {:.1} MB", received as f64 / 1e6));
    }
    Ok(summary)
}
