//! `perimeter poll-check`: asks each configured SaaS API for the page the service would read
//! next, without storing anything, so a token, URL or org is known good before `run`.

use std::process::ExitCode;

use anyhow::Context;
use perimeter_ingest::poll::{PollError, PollPacing, PollSource};

use crate::config::PerimeterConfig;

#[derive(clap::Args)]
pub struct PollCheckArgs {
    /// Names of `[[poll]]` tables to check (default: all of them).
    pub names: Vec<String>,
}

/// One line per poller: what it asked and what came back. Exit 1 if any failed.
pub fn poll_check(config: &PerimeterConfig, args: PollCheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !config.poll.is_empty(),
        "no [[poll]] tables in the configuration (see perimeter.example.toml)"
    );
    // As `perimeter run` refuses them: a check that passes must mean the service starts.
    let mut names = std::collections::HashSet::new();
    if let Some(twice) = config.poll.iter().find(|p| !names.insert(p.name.as_str())) {
        anyhow::bail!(
            "[[poll]] name `{}` is used twice (it names the checkpoint; `perimeter run` refuses to start)",
            twice.name
        );
    }
    for name in &args.names {
        anyhow::ensure!(
            config.poll.iter().any(|p| &p.name == name),
            "no [[poll]] table is named `{name}`"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    // Nothing is submitted: the bus only satisfies the source's constructor.
    let (bus, _unused) = perimeter_ingest::bus::channel(1);
    let state_dir = config.data_dir.join("state").join("poll");
    let mut failed = 0;
    for poll in config
        .poll
        .iter()
        .filter(|p| args.names.is_empty() || args.names.contains(&p.name))
    {
        let outcome = PollSource::new(poll.clone(), &config.tenant, &state_dir, bus.clone())
            .map(|source| runtime.block_on(source.probe()));
        match outcome.and_then(|r| r) {
            // The page's link and the vendor's error text are the vendor's words: masked.
            Ok(report) => println!(
                "{}",
                crate::logging::masked(&format!(
                    "{}: ok ({}): {} record(s) on the next page{}{} [{}]",
                    poll.name,
                    poll.vendor.source(),
                    report.records,
                    report
                        .newest
                        .map(|t| format!(", newest {}", t.to_rfc3339()))
                        .unwrap_or_default(),
                    if report.more {
                        ", more pages waiting"
                    } else {
                        ""
                    },
                    report.url
                ))
            ),
            Err(e) => {
                failed += 1;
                // The service would wait and retry; this check does not.
                let why = match e {
                    // What the service would wait after this first refusal (its own pacing:
                    // what the API asks, and at least its first backoff).
                    PollError::RateLimited(delay) => format!(
                        "rate limited: the service waits {}s before it asks again (what the API asks, at least 2 s, at most an hour); check again later",
                        PollPacing::new(std::time::Duration::from_secs(poll.interval_seconds))
                            .after(&Err(PollError::RateLimited(delay)))
                            .as_secs()
                    ),
                    e => e.to_string(),
                };
                println!(
                    "{}",
                    crate::logging::masked(&format!(
                        "{}: FAILED ({}): {why}",
                        poll.name,
                        poll.vendor.source()
                    ))
                );
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
