//! `perimeter`: the command line. Wiring only: it builds Source -> Pipeline -> Sink from the
//! library crates and formats their results for a terminal.

/// `println!` that never panics: stdout may be a closed pipe (`perimeter demo | head`) or gone,
/// and a service that printed its address must keep serving then.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod alloc;
mod config;
mod demo;
mod detect_cmd;
mod export_cmd;
mod logging;
mod poll_cmd;
mod progress;
mod reindex_cmd;
mod rules_cmd;
mod run;
mod terminal_cmd;

use clap::{Parser, Subcommand};

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "perimeter",
    version,
    about = "Mini-SIEM for SaaS audit logs: normalize, detect (Sigma + behavioural), mask, store and search",
    long_about = "Perimeter collects audit logs of SaaS tools (Okta, GitHub, Google Workspace, Slack, \
Microsoft 365, AWS CloudTrail, 1Password, ...), normalizes them to ECS fields, runs Sigma rules, \
correlations and behavioural baselines over them, masks secrets and PII, and stores events and alerts \
for search.\n\nStart with `perimeter demo`."
)]
struct Cli {
    /// Configuration file (TOML). Defaults apply to everything it leaves out.
    #[arg(long, global = true, env = "PERIMETER_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr: `text` for people, `json` (one object per line) for log collectors.
    /// The level is `PERIMETER_LOG` (default `info` for `run`, `warn` for the other commands).
    #[arg(long, global = true, env = "PERIMETER_LOG_FORMAT", default_value = "text",
        value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print one normalized, masked event per line as JSON.
    Normalize(detect_cmd::NormalizeArgs),
    /// Run rules and behavioural detectors over a JSON-lines file; print one alert per line as JSON.
    Detect(detect_cmd::DetectArgs),
    /// Validate, test and explain Sigma rules.
    #[command(subcommand)]
    Rules(rules_cmd::RulesCommand),
    /// Run the bundled demo: the whole pipeline over a day of SaaS activity with an attack in it,
    /// a table of the alerts, then the API over the demo data.
    Demo(demo::DemoArgs),
    /// Run the service: ingest (SaaS API pollers from `[[poll]]`, spool directory, HTTP), detect,
    /// store and API in one process. With `[kafka]` in the config, ingest goes through a Kafka
    /// topic and the service detects its share of it as a member of a consumer group (scale out
    /// by starting more instances).
    Run(run::RunArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Tokens(terminal_cmd::TokensCommand),
    /// Search stored events (tantivy query syntax).
    Search(terminal_cmd::SearchArgs),
    /// Export the events a query matches as one file: JSON lines, CSV (for a spreadsheet) or
    /// Parquet (for DuckDB, pyarrow, pandas, Spark), from the data directory or a running server.
    Export(export_cmd::ExportArgs),
    /// Show what an event's user (or address) did shortly before and after it: the events of the
    /// same user within a window, oldest first.
    Context(terminal_cmd::ContextArgs),
    /// List stored alerts.
    Alerts(terminal_cmd::AlertsArgs),
    /// List the newest input that could not be used (line, reason, masked excerpt).
    DeadLetters(terminal_cmd::DeadLettersArgs),
    /// Show the API's audit log, newest first: who searched what, who read or changed which
    /// alert, who exported; filtered by action, token, alert or event id and time.
    Audit(terminal_cmd::AuditArgs),
    /// List each source's newest stored event, how long it has been quiet and its events of
    /// the last 24 hours: an integration that stopped sending is a blind spot.
    Sources(terminal_cmd::SourcesArgs),
    /// Check the `[[poll]]` tables of the config: fetch the page each would read next (nothing is
    /// stored, no checkpoint moves) and say what came back, so a token or URL is known good
    /// before `perimeter run`. Exit 1 if any failed.
    PollCheck(poll_cmd::PollCheckArgs),
    /// Rebuild the search indexes from the Parquet files: indexes lost, damaged or written by
    /// another version (which `perimeter run` refuses to open), or with --all every one in a
    /// range (after changing `raw_text_search_off`). Stop `perimeter run` first: the data
    /// directory is locked while it runs.
    Reindex(reindex_cmd::ReindexArgs),
    /// Write back from the search indexes the events the Parquet files lost (a file that cannot
    /// be read any more, a deleted partition), and set unreadable files aside
    /// (`.<name>.unreadable`). Stop `perimeter run` first.
    RepairParquet(reindex_cmd::RepairParquetArgs),
    /// Triage alerts through a running server: set their status, assignee or add a note (who and
    /// when are recorded); without changes, show them with their history and evidence.
    Triage(terminal_cmd::TriageArgs),
}

fn main() -> ExitCode {
    alloc::tune();
    // The HTTP clients (pollers, webhooks, this CLI against a server) use the process default
    // provider: aws-lc-rs, as the API server does, so they offer the post-quantum key exchange.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    init_logs(&cli);
    let json_logs = cli.log_format == "json";
    let result = (|| -> anyhow::Result<ExitCode> {
        let config = config::PerimeterConfig::load(cli.config.as_deref())?;
        // Logs are masked as the configuration masks.
        logging::use_mask_config(config.mask.clone());
        match cli.command {
            Command::Normalize(args) => detect_cmd::normalize(&config, args),
            Command::Detect(args) => detect_cmd::detect(&config, args),
            Command::Rules(cmd) => rules_cmd::run(&config, cmd),
            Command::Demo(args) => demo::demo(&config, args),
            Command::Run(args) => run::run(&config, args),
            Command::Tokens(cmd) => terminal_cmd::tokens(&config, cmd),
            Command::Search(args) => terminal_cmd::search(&config, args),
            Command::Export(args) => export_cmd::export(&config, args),
            Command::Context(args) => terminal_cmd::context(&config, args),
            Command::Alerts(args) => terminal_cmd::alerts(&config, args),
            Command::DeadLetters(args) => terminal_cmd::dead_letters(&config, args),
            Command::Audit(args) => terminal_cmd::audit(&config, args),
            Command::Sources(args) => terminal_cmd::sources(&config, args),
            Command::PollCheck(args) => poll_cmd::poll_check(&config, args),
            Command::Reindex(args) => reindex_cmd::reindex(&config, args),
            Command::RepairParquet(args) => reindex_cmd::repair_parquet(&config, args),
            Command::Triage(args) => terminal_cmd::triage(args),
        }
    })();
    match result {
        Ok(code) => code,
        // The reader of stdout went away (`perimeter normalize ... | head`): nothing is wrong,
        // there is just no one left to write to.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors can quote input (a vendor's answer, a file's line): masked as logs are.
            let text = error_text(&e);
            if json_logs && tracing::enabled!(tracing::Level::ERROR) {
                // One JSON object like every other line a log collector reads from us.
                tracing::error!(error = %text, "perimeter stopped");
            } else {
                // Escaped too, line by line (errors such as a bad config's quote its lines): a
                // vendor's answer could hold terminal escape sequences.
                let masked = logging::masked(&text);
                eprintln!("error: {}", terminal_cmd::terminal_safe_lines(&masked));
            }
            ExitCode::from(2)
        }
    }
}

/// `e` and its causes, joined by `: `. The library errors put their cause in their own message
/// (`cannot listen on ADDR: Address already in use`), so a cause whose text already ends the
/// message so far is not repeated.
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Whether `e` comes from writing to a closed pipe (directly, or inside a JSON writer's error).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs to stderr, at `PERIMETER_LOG`'s level: the service reports what it does (files ingested,
/// rules reloaded) at `info`; one-shot commands only warn.
fn init_logs(cli: &Cli) {
    let default_level = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    let (filter, problem) = log_filter(std::env::var("PERIMETER_LOG").ok(), default_level);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(logging::MaskedStderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        // Colour codes only for a person at a terminal, not in files and log collectors.
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// The log filter `PERIMETER_LOG` asks for, or `default_level` and why not. A bare word must
/// be a level: tracing reads `warning` as a target name, which silenced every line, errors
/// included. Unset or empty is the default.
fn log_filter(
    value: Option<String>,
    default_level: &str,
) -> (tracing_subscriber::EnvFilter, Option<String>) {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let value = value.unwrap_or_default();
    let default = || tracing_subscriber::EnvFilter::new(default_level);
    if value.trim().is_empty() {
        return (default(), None);
    }
    let not_levels: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|d| {
            !d.is_empty() && !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
        })
        .collect();
    let problem = if not_levels.is_empty() {
        match tracing_subscriber::EnvFilter::builder().parse(&value) {
            Ok(filter) => return (filter, None),
            Err(e) => e.to_string(),
        }
    } else {
        format!(
            "`{}` is not a level (trace, debug, info, warn, error, off) nor `target=level`",
            not_levels.join(",")
        )
    };
    (
        default(),
        Some(format!(
            "PERIMETER_LOG `{value}`: {problem}; logging at `{default_level}`"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn a_log_filter_that_is_no_level_says_so_and_keeps_the_default() {
        for (value, ok) in [
            (None, true),
            (Some(""), true),
            (Some("debug"), true),
            (Some("WARN"), true),
            (Some("info,perimeter_store=debug"), true),
            (Some("warning"), false),
            (Some("bogus"), false),
            (Some("nonsense=["), false),
        ] {
            let (filter, problem) = log_filter(value.map(str::to_string), "info");
            assert_eq!(problem.is_none(), ok, "{value:?}: {problem:?}");
            if !ok {
                assert_eq!(filter.to_string(), "info", "{value:?}");
                assert!(problem.unwrap().contains("logging at `info`"));
            }
        }
    }
}
