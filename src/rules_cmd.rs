//! `perimeter rules check|test|explain|list|disable|enable`.

use crate::config::PerimeterConfig;
use crate::detect_cmd::base_parts;
use anyhow::Context;
use perimeter_detect::sigma::{explain, run_rule_tests, RuleSet};
use perimeter_model::RawRecord;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Validate rule files (Sigma rules, correlations, filters). Exit code 1 if any fails.
    Check {
        /// Rule files or directories (searched recursively for *.yml / *.yaml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// `text` for people, `json` for scripts: {"loaded": N, "failed": [{"path", "line",
        /// "field", "error"}], "warnings": [{"path", "line", "warning"}]}.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Run every rule's test events (`<rule>.tests.yml` beside `<rule>.yml`). Exit code 1 on any mismatch.
    Test {
        /// Rule pack directory.
        dir: PathBuf,
    },
    /// Show which selections of a rule match an event, and why.
    Explain {
        /// The rule file.
        rule: PathBuf,
        /// A file holding one raw event (JSON object; for JSON lines the first line is used).
        #[arg(long)]
        event: PathBuf,
        /// Source of the event (`auto` detects it).
        #[arg(long, default_value = "auto")]
        source: String,
        /// Evaluate the rule whatever its logsource (as `perimeter detect --ignore-logsource`),
        /// e.g. a rule for another product on an event read with `--source json`.
        #[arg(long)]
        ignore_logsource: bool,
    },
    /// List the rules and behavioural detectors a running server uses, with what your tenant
    /// switched off (ON false: off for everyone; OFF FOR: entities it is off for).
    List {
        /// Only the rules switched off, for everyone or for some entities.
        #[arg(long)]
        off: bool,
        /// `table` at a terminal, JSON lines otherwise (`auto`).
        #[arg(long, value_enum, default_value_t = crate::terminal_cmd::OutputFormat::Auto)]
        format: crate::terminal_cmd::OutputFormat,
        #[command(flatten)]
        server: crate::terminal_cmd::ServerAccess,
    },
    /// Switch a rule off for your tenant through a running server (admin token), for every
    /// entity or one (`--entity`), for good or until a time (`--until`). Its alerts are dropped
    /// (and counted in `perimeter_alerts_switched_off_total`); the rule keeps running, events
    /// are still stored, other tenants are not affected. Behavioural detectors are switched the
    /// same way (`ueba.password_spray`).
    Disable {
        /// Rule id, as `GET /api/v1/rules` lists it (an alert's `rule_id`).
        id: String,
        /// Why (kept with who and when, and in the API's audit log).
        #[arg(long)]
        reason: String,
        /// Only for this entity, as the rule's alerts show it (an alert's `entity`).
        #[arg(long)]
        entity: Option<String>,
        /// The switch lapses then: RFC 3339, a date, or relative (`now+30d`).
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        server: crate::terminal_cmd::ServerAccess,
    },
    /// Switch a rule back on for your tenant through a running server (admin token). Without
    /// `--entity` the per-entity switches stay.
    Enable {
        /// Rule id, as `GET /api/v1/rules` lists it.
        id: String,
        /// Only for this entity (undoes `disable --entity`).
        #[arg(long)]
        entity: Option<String>,
        #[command(flatten)]
        server: crate::terminal_cmd::ServerAccess,
    },
}

pub fn run(config: &PerimeterConfig, cmd: RulesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RulesCommand::Check { paths, format } => check(config, paths, &format),
        RulesCommand::Test { dir } => test(config, dir),
        RulesCommand::Explain {
            rule,
            event,
            source,
            ignore_logsource,
        } => explain_cmd(config, rule, event, &source, ignore_logsource),
        RulesCommand::Disable {
            id,
            reason,
            entity,
            until,
            server,
        } => {
            let body = serde_json::json!({
                "enabled": false, "reason": reason, "entity": entity, "until": until,
            });
            crate::terminal_cmd::switch_rule(&server, &id, body)
        }
        RulesCommand::List {
            off,
            format,
            server,
        } => crate::terminal_cmd::list_rules(&server, off, format),
        RulesCommand::Enable { id, entity, server } => {
            let body = serde_json::json!({ "enabled": true, "entity": entity });
            crate::terminal_cmd::switch_rule(&server, &id, body)
        }
    }
}

fn check(config: &PerimeterConfig, paths: Vec<PathBuf>, format: &str) -> anyhow::Result<ExitCode> {
    // A path that does not exist is a failed entry of the report (`cannot read: ...`), so a
    // script reading the JSON sees it there like any other failure.
    let (rules, mut report) = RuleSet::load(&paths, &config.sigma);
    // A directory without a rule file loads without an error, and a check of it that passed
    // would vouch for nothing (a wrong or emptied directory): it fails like a missing path.
    for path in paths.iter().filter(|p| p.exists()) {
        if RuleSet::files(path).is_empty() {
            report.failed.push(perimeter_detect::sigma::RuleError {
                path: path.clone(),
                line: None,
                field: None,
                message: "holds no rule file (*.yml, *.yaml)".into(),
            });
        }
    }
    let (registry, _) = base_parts(config)?;
    let misspelt = rules.misspelt_sources(&registry.names(), &config.sigma);
    if format == "json" {
        let failed: Vec<_> = report
            .failed
            .iter()
            .map(|f| serde_json::json!({"path": f.path, "line": f.line, "field": f.field, "error": f.to_string()}))
            .collect();
        // Warnings do not fail the check: the rules load and run.
        let warnings: Vec<_> = misspelt
            .iter()
            .map(|u| serde_json::json!({"path": u.path, "line": u.line, "warning": u.to_string()}))
            .chain(rules.spec_warnings().into_iter().map(|w| {
                serde_json::json!({"path": w.path, "line": w.line, "field": w.field, "warning": w.to_string()})
            }))
            .collect();
        println!(
            "{}",
            serde_json::json!({"loaded": report.loaded, "failed": failed, "warnings": warnings})
        );
    } else {
        // Paths and rule text are the user's, printed to a terminal: control characters in
        // them are written out.
        let safe = |text: String| crate::terminal_cmd::terminal_safe_lines(&text);
        for f in &report.failed {
            println!("FAIL {}", safe(f.to_string()));
        }
        for m in &misspelt {
            println!("WARN {}", safe(m.to_string()));
        }
        for w in rules.spec_warnings() {
            println!("WARN {}", safe(w.to_string()));
        }
        println!(
            "{} rules loaded, {} failed",
            report.loaded,
            report.failed.len()
        );
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn test(config: &PerimeterConfig, dir: PathBuf) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    // "0 rules tested" with exit code 0 would pass a wrong or emptied directory.
    anyhow::ensure!(
        !RuleSet::files(&dir).is_empty(),
        "{} holds no rule file (*.yml, *.yaml): nothing to test",
        dir.display()
    );
    let (registry, _) = base_parts(config)?;
    let normalize = |source: &str, raw: serde_json::Value, index: u64| {
        let record = RawRecord {
            source: source.to_string(),
            tenant: config.tenant.clone(),
            received_at: chrono::Utc::now(),
            line: Some(index),
            raw: perimeter_model::raw_from_serde(&raw),
        };
        registry
            .normalize_lenient(source, record)
            .map_err(|e| e.to_string())
    };
    let report = run_rule_tests(&dir, &config.sigma, &normalize);
    for f in &report.failures {
        println!(
            "FAIL {}",
            crate::terminal_cmd::terminal_safe_lines(&f.to_string())
        );
    }
    println!(
        "{} rules tested, {} cases passed, {} failed",
        report.rules_tested,
        report.cases_passed,
        report.failures.len()
    );
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn explain_cmd(
    config: &PerimeterConfig,
    rule: PathBuf,
    event: PathBuf,
    source: &str,
    ignore_logsource: bool,
) -> anyhow::Result<ExitCode> {
    let (registry, masker) = base_parts(config)?;
    let text =
        std::fs::read_to_string(&event).with_context(|| format!("reading {}", event.display()))?;
    // Half of a surrogate pair escaped alone (text cut mid-emoji) is read as ingest reads it.
    let text = perimeter_model::without_lone_surrogates(text.as_bytes())
        .and_then(|fixed| String::from_utf8(fixed).ok())
        .unwrap_or(text);
    let raw: serde_json::Value = serde_json::from_str(text.trim())
        .or_else(|_| serde_json::from_str(text.lines().next().unwrap_or("")))
        .with_context(|| format!("{} holds no JSON event", event.display()))?;
    let mut options = config.sigma.clone();
    options.ignore_logsource |= ignore_logsource;
    // A page, or a Google Workspace activity of several events, is explained record by record,
    // as `detect` reads it (QA: an activity of two events was refused).
    let records =
        perimeter_detect::normalize::split_records(source, perimeter_model::raw_from_serde(&raw));
    let several = records.len() > 1;
    for (i, raw) in records.into_iter().enumerate() {
        let record = RawRecord {
            source: source.to_string(),
            tenant: config.tenant.clone(),
            received_at: chrono::Utc::now(),
            line: Some(1),
            raw,
        };
        let ev = registry
            .normalize_lenient(source, record)
            .map_err(|e| anyhow::anyhow!("normalizing the event: {e}"))?;
        let out = explain(&rule, &ev, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
        if several {
            println!("record {} of the input:", i + 1);
        }
        // The rule sees clear values; what is printed is masked like every other output, event
        // values under secret keys as the masked event has them.
        println!(
            "{}",
            perimeter_detect::pipeline::mask_event_quotes(&masker, &ev, &out)
        );
    }
    Ok(ExitCode::SUCCESS)
}
