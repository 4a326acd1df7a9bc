//! `perimeter demo`: the embedded pipeline over the bundled dataset, a table of what it found,
//! then the API over the demo data.

use crate::config::PerimeterConfig;
use crate::detect_cmd::{base_parts, load_rules};
use anyhow::Context;
use perimeter_detect::pipeline::{entity_key, Pipeline, PipelineOutput};
use perimeter_detect::ueba::UebaEngine;
use perimeter_ingest::{JsonlReader, JsonlReaderConfig};
use perimeter_model::{Alert, EntityKind, Metrics};
use perimeter_serve::store_output;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The bundled dataset: one `{"source": ..., "event": {...}}` per line (see demo/README.md).
const DEMO_EVENTS: &str = include_str!("../demo/events.jsonl");
const DEMO_TENANT: &str = "demo";

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo's data goes (replaced on every run).
    #[arg(long, default_value = "data/demo")]
    pub data_dir: PathBuf,
    /// Rule directory (default: ./detection-rules, else the one in the source tree).
    #[arg(long)]
    pub rules: Vec<PathBuf>,
    /// Address the API listens on after the run.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = perimeter_query_api::parse_listen)]
    pub listen: SocketAddr,
    /// Exit after printing the results instead of serving the API.
    #[arg(long)]
    pub no_serve: bool,
}

/// Marks a directory as the demo's, so a later demo may replace it.
pub(crate) const DEMO_MARKER: &str = ".perimeter-demo";

/// Marks a directory a `perimeter run` has used: a demo never replaces it, even the default
/// demo directory or one a demo first made.
const SERVICE_MARKER: &str = ".perimeter-service";

/// Mark `dir` as a service's store before `run` writes to it. A directory a demo made is one
/// no longer (QA: `perimeter demo` wiped the events, tokens and audit log a service had since
/// kept there, without a word).
pub(crate) fn adopt_for_service(dir: &std::path::Path) -> anyhow::Result<()> {
    let service = dir.join(SERVICE_MARKER);
    if !service.exists() {
        std::fs::write(
            &service,
            "used by perimeter run: perimeter demo does not replace it\n",
        )
        .with_context(|| format!("writing {}", service.display()))?;
    }
    let demo = dir.join(DEMO_MARKER);
    if demo.exists() {
        std::fs::remove_file(&demo).with_context(|| format!("removing {}", demo.display()))?;
        tracing::info!(data_dir = %dir.display(),
            "this directory was made by perimeter demo; it is a service's store now, which perimeter demo will not replace");
    }
    Ok(())
}

/// Remove the previous demo's data in `dir`. Refused while a process (a demo still serving, a
/// `perimeter run`) uses it, and for a directory holding other data: `--data-dir ./data` must
/// not wipe a service's store. The default directory is the demo's unless a service has used it
/// (earlier versions did not mark it).
fn clear_previous_demo(dir: &std::path::Path) -> anyhow::Result<()> {
    let is_default = dir == std::path::Path::new("data/demo") && !dir.join(SERVICE_MARKER).exists();
    let is_empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    anyhow::ensure!(
        is_default || is_empty || dir.join(DEMO_MARKER).exists(),
        "{} holds data that `perimeter demo` did not write, or a `perimeter run` has used; not replacing it (choose another --data-dir)",
        dir.display()
    );
    let _lock = perimeter_store::lock_data_dir(dir)?;
    std::fs::remove_dir_all(dir)
        .with_context(|| format!("clearing the previous demo data in {}", dir.display()))
}

fn rules_dir(args: &DemoArgs, config: &PerimeterConfig) -> Vec<PathBuf> {
    let chosen = config.rule_paths(&args.rules);
    if !chosen.is_empty() {
        return chosen;
    }
    vec![PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/detection-rules"
    ))]
}

pub fn demo(config: &PerimeterConfig, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    // Said before the run, not after it: the address is taken (another demo still serving).
    if !args.no_serve && args.listen.port() != 0 {
        std::net::TcpListener::bind(args.listen).with_context(|| {
            format!(
                "cannot serve the API on {} (--listen another address, or --no-serve)",
                args.listen
            )
        })?;
    }
    if args.data_dir.exists() {
        clear_previous_demo(&args.data_dir)?;
    }
    std::fs::create_dir_all(&args.data_dir)?;
    std::fs::write(
        args.data_dir.join(DEMO_MARKER),
        "written by perimeter demo\n",
    )?;
    let (registry, masker) = base_parts(config)?;
    let key = entity_key(&masker);
    let (rule_set, sigma_options) = load_rules(config, &rules_dir(&args, config), false)?;
    // Listed by the demo's API, so `GET /rules` shows what produced the alerts.
    let listed_rules = perimeter_serve::rule_service::rule_list(&rule_set);
    let sigma = perimeter_detect::sigma::SigmaDetector::new(rule_set, &sigma_options);
    let metrics = Arc::new(Metrics::new());
    let mut pipeline = Pipeline::new(registry, masker, metrics.clone(), true)
        .with_sigma(sigma)
        .with_ueba(UebaEngine::new(config.ueba.clone(), key));
    // The bundled day is fixed history: retention would count it as expired once it is older
    // than the configured window, so the demo's own store keeps everything.
    let mut store_config = config.store.clone();
    store_config.retention_days = 0;
    store_config.retention.clear();
    let store = Arc::new(crate::run::open_store_with(
        store_config,
        &config.mask,
        &args.data_dir,
    )?);

    eprintln!("perimeter demo: running the bundled dataset through ingest -> detect -> store ...");
    let mut out = PipelineOutput::default();
    let mut alerts: Vec<Alert> = Vec::new();
    let mut dead = 0usize;
    let now = chrono::Utc::now();
    let mut repeats = 0usize;
    let mut flush = |out: &mut PipelineOutput, alerts: &mut Vec<Alert>| -> anyhow::Result<()> {
        let ack = store_output(&store, out, &metrics)
            .map_err(|e| anyhow::anyhow!("storing demo data: {e}"))?;
        repeats += ack.alerts_grouped.len();
        alerts.extend_from_slice(&perimeter_serve::new_alerts(&out.alerts, &ack));
        dead += out.dead_letters.len();
        out.clear();
        Ok(())
    };
    for item in JsonlReader::new(DEMO_EVENTS.as_bytes(), JsonlReaderConfig::default()) {
        perimeter_serve::process_item(&mut pipeline, "auto", DEMO_TENANT, item?, now, &mut out);
        if out.events.len() >= 2000 {
            flush(&mut out, &mut alerts)?;
        }
    }
    pipeline.finish(&mut out);
    flush(&mut out, &mut alerts)?;
    // The alert Parquet files catch up now rather than at the next export interval, as the
    // demo says where the data landed next.
    store
        .flush()
        .map_err(|e| anyhow::anyhow!("storing demo data: {e}"))?;
    // As the queue has them: a rule's repeats for one entity are counted into its first alert.
    let alerts: Vec<Alert> = alerts
        .into_iter()
        .map(|a| match store.get_alert(&a.tenant, &a.id) {
            Ok(Some(record)) => record.alert,
            _ => a,
        })
        .collect();
    let stats = pipeline.stats();
    print_alert_table(&alerts);
    say!();
    say!(
        "{} events from {} records, {} alerts ({} repeats counted into them), {} values masked, \
         {} dead letters, in {:.1}s",
        stats.events,
        stats.records,
        alerts.len(),
        repeats,
        stats.values_masked,
        dead,
        started.elapsed().as_secs_f64()
    );
    say!("Data landed in {}:", args.data_dir.display());
    say!(
        "  full-text indexes  {}",
        args.data_dir.join("index").display()
    );
    say!(
        "  Parquet files      {}",
        args.data_dir.join("parquet").display()
    );
    let dir = args.data_dir.display();
    say!("Explore it from the terminal:");
    say!("  perimeter alerts --data-dir {dir} --summary");
    say!("  perimeter alerts --data-dir {dir} --severity high");
    say!("  perimeter search --data-dir {dir} 'event.outcome:failure AND event.module:okta'");
    say!("  perimeter search --data-dir {dir} 'event.outcome:failure' --histogram --interval 30m");
    say!("  perimeter search --data-dir {dir} 'event.outcome:failure' --top user.name");
    // A real evidence event of the most severe alert, so the pivot can be pasted as it is.
    let evidence = alerts
        .iter()
        .filter(|a| {
            a.event_ids
                .first()
                .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        // The same pick every run: the most severe, a user's before an address's, the
        // earliest, then by id.
        .max_by(|a, b| {
            let user = |a: &Alert| a.entity_kind == EntityKind::User;
            (a.severity, user(a))
                .cmp(&(b.severity, user(b)))
                .then_with(|| b.timestamp.cmp(&a.timestamp))
                .then_with(|| b.id.cmp(&a.id))
        });
    if let Some(a) = evidence {
        // An address's alert pivots on the address: `--by user` would show whoever the
        // evidence event's user is.
        let by = if a.entity_kind == EntityKind::Ip {
            " --by ip"
        } else {
            ""
        };
        say!(
            "  perimeter context {}{by} --data-dir {dir} --window 30m   # around \"{}\"",
            a.event_ids[0],
            a.title
        );
    }
    say!("  perimeter export --data-dir {dir} 'event.module:okta' --output okta.parquet   # for DuckDB, pyarrow, pandas, Spark");
    if args.no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    crate::run::serve_demo(
        config,
        &args.data_dir,
        store,
        metrics,
        args.listen,
        DEMO_TENANT,
        listed_rules,
    )
}

/// Alerts as an aligned table, in event-time order.
fn print_alert_table(alerts: &[Alert]) {
    use crate::terminal_cmd::{write_table, Column};
    const COLUMNS: &[Column] = &[
        Column::time("TIME (UTC)", 20, &["@timestamp"]),
        Column::new("SEVERITY", 13, &["severity"]),
        Column::new("SOURCE", 16, &["source"]),
        Column::new("ALERT", 54, &["title"]),
        Column::identity("ENTITY", 32, &["entity"]),
        Column::new("COUNT", 5, &["count"]),
    ];
    let mut sorted: Vec<&Alert> = alerts.iter().collect();
    sorted.sort_by(|a, b| {
        a.timestamp
            .cmp(&b.timestamp)
            .then(a.rule_id.cmp(&b.rule_id))
    });
    let items: Vec<serde_json::Value> = sorted
        .iter()
        .map(|a| serde_json::to_value(a).unwrap_or_default())
        .collect();
    let _ = write_table(&mut std::io::stdout().lock(), COLUMNS, &items);
}
