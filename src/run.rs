//! `perimeter run`: one process with ingest (the `[[poll]]` API pollers, the spool directory and
//! `POST /ingest/{source}`), detect, store and the API on the embedded bus, or with `[kafka]` on
//! the Kafka bus (ADR 019). SIGTERM/SIGINT flush and commit before exit.

use crate::config::PerimeterConfig;
use crate::detect_cmd::{base_parts, load_rules_reported};
use anyhow::Context;
use perimeter_detect::mask::{SecretMasker, GENERATED_KEY_FILE};
use perimeter_detect::pipeline::{entity_key, Pipeline, UEBA_SNAPSHOT};
use perimeter_detect::sigma::{RuleSet, SigmaDetector};
use perimeter_detect::ueba::UebaEngine;
use perimeter_ingest::poll::PollSource;
use perimeter_ingest::spool::{SpoolConfig, SpoolSource};
use perimeter_model::Metrics;
use perimeter_query_api::auth::Role;
use perimeter_query_api::{
    AlertNotifier, AppState, DeliveryOutbox, DestinationStore, ListenerCheck, RuleSwitchStore,
    Server,
};
use perimeter_serve::rule_service::{rule_list, SigmaRuleService};
use perimeter_store::Store;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Listen address for the API and HTTP ingest (overrides `[api] listen`; port 0 picks one).
    #[arg(long, value_parser = perimeter_query_api::parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Check the configuration and what it names (mappings, masking, every rule, the TLS
    /// certificate: refused, as by `run` and its reloads, when expired, not yet valid or a CA
    /// certificate; the `[[poll]]` tables and their secrets, the spool directory) without
    /// starting anything: one line per part, exit code 1 when any is wrong (2 when the
    /// configuration file itself cannot be read). Safe beside a running service (it opens
    /// no store and binds no port): run it before a restart.
    #[arg(long, conflicts_with = "listen")]
    pub check: bool,
}

/// Open the store under `data_dir` with the config's `[store]` settings.
pub fn open_store(config: &PerimeterConfig, data_dir: &Path) -> anyhow::Result<Store> {
    open_store_with(config.store.clone(), &config.mask, data_dir)
}

/// Open the store under `data_dir` with `store_config` (its `data_dir` replaced); searches
/// mask their terms with `mask`.
pub fn open_store_with(
    store_config: perimeter_store::StoreConfig,
    mask: &perimeter_detect::mask::MaskConfig,
    data_dir: &Path,
) -> anyhow::Result<Store> {
    open_store_as(store_config, mask, data_dir, Store::open)
}

/// Open the store under `data_dir` for reading only (the terminal commands): safe beside a
/// `perimeter run` or `demo` writing to it, which it neither locks out nor disturbs. Search
/// terms are hashed with the key the service hashed the stored values with (its generated one
/// when the config sets none).
pub fn open_store_read_only(config: &PerimeterConfig, data_dir: &Path) -> anyhow::Result<Store> {
    // Without the config, a service's own `[mask] hmac_key` (the usual production setup) is
    // unknown here: the built-in key would hash search terms, and a search for a hashed value
    // would find nothing, without a word. A data directory written with the built-in key (one
    // older than the generated key) holds no key file either, so this is a warning.
    if config.mask.hmac_key.is_none()
        && !generated_key_file(data_dir).exists()
        && holds_data(data_dir)
        // The demo's data is hashed with the built-in key, as the demo says.
        && !data_dir.join(crate::demo::DEMO_MARKER).exists()
    {
        tracing::warn!(
            data_dir = %data_dir.display(),
            "no [mask] hmac_key given and the data directory holds no generated key: search terms are hashed with the built-in key; if the service that wrote this data sets [mask] hmac_key, pass its --config, or hashed values will not be found"
        );
    }
    let config = with_data_dir_key(config, data_dir, false)?;
    open_store_as(
        config.store.clone(),
        &config.mask,
        data_dir,
        Store::open_read_only,
    )
}

/// Where `perimeter run` keeps the mask key it generates for a data directory.
fn generated_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join(GENERATED_KEY_FILE)
}

/// Raise this process's open-file limit to the most it may have (the soft limit is often 1024,
/// under systemd and in login shells, far below the hard one), as Go's runtime does: the API's
/// connections and the store's files share it. The soft limit in force after, if known.
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill and setrlimit to read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// Files the store, the logs and the pollers keep open beside the API's connections.
const FILES_BESIDE_CONNECTIONS: u64 = 512;

/// A warning when `[api] max_connections` would take the open files the store needs: with the
/// limit at 1024, 1,015 idle connections made ingest, snapshots and the spool fail before one
/// connection was refused.
fn open_file_limit_warning(open_files: Option<u64>, max_connections: usize) -> Option<String> {
    let limit = open_files?;
    (limit < max_connections as u64 + FILES_BESIDE_CONNECTIONS).then(|| {
        format!(
            "the open-file limit ({limit}) leaves too few files beside [api] max_connections = {max_connections}: the store and the spool would fail before a connection is refused; raise the limit (`LimitNOFILE=` in a systemd unit, `ulimit -n`) or lower max_connections to at most {}",
            limit.saturating_sub(FILES_BESIDE_CONNECTIONS)
        )
    })
}

/// Why `data_dir` cannot be used without its generated key, when that key is gone: no
/// `[mask] hmac_key`, no `state/mask.key`, and detection state written with a key other than
/// the built-in one (which a data directory without a key file was assumed to use). Started
/// anyway, the service hashed with the public built-in key from then on, set its detection
/// state aside, and no hashed value stored before could be searched for.
fn missing_generated_key(config: &PerimeterConfig, data_dir: &Path) -> Option<String> {
    let key_file = generated_key_file(data_dir);
    if config.mask.hmac_key.is_some() || key_file.exists() {
        return None;
    }
    if holds_data(data_dir) && written_with_own_key(data_dir) {
        return Some(format!(
            "{} is missing, and this data directory's data was written with a key of its own ({}), not the public built-in one: restore it from a backup (the stored hashes were made with it), or set [mask] hmac_key to the key the data was written with",
            key_file.display(),
            data_dir.join(KEY_MARK_FILE).display(),
        ));
    }
    let builtin = SecretMasker::new(&config.mask).ok()?;
    let snapshot = data_dir.join("state").join(UEBA_SNAPSHOT);
    let written_with_builtin = perimeter_detect::ueba::snapshot_written_with(
        &snapshot,
        &perimeter_detect::pipeline::entity_key(&builtin),
    )?;
    (!written_with_builtin).then(|| {
        format!(
            "{} is missing, and the detection state in {} was written with it: restore it from a backup (the stored hashes were made with it), or set [mask] hmac_key to the key the data was written with",
            key_file.display(),
            snapshot.display()
        )
    })
}

/// A data directory's note of the mask key its data was last written with: a fingerprint derived
/// from the key (it tells nothing of the key), or [`BUILTIN_KEY_MARK`]. Kept outside `state/`, so
/// that a data directory that lost `state/` (its generated key with it) is not taken for one
/// written with the built-in key (QA: it went on hashing with the public key, and said the data
/// was written with it).
const KEY_MARK_FILE: &str = "mask-key.mark";
const BUILTIN_KEY_MARK: &str = "builtin";

fn key_mark_of(masker: &SecretMasker) -> String {
    if masker.uses_builtin_key() {
        BUILTIN_KEY_MARK.to_string()
    } else {
        masker.derive_key("perimeter mask key mark")[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Note the key `masker` hashes with in `data_dir` ([`KEY_MARK_FILE`]).
fn note_key_mark(data_dir: &Path, masker: &SecretMasker) -> anyhow::Result<()> {
    let mark = key_mark_of(masker);
    let path = data_dir.join(KEY_MARK_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|m| m.trim() == mark) {
        return Ok(());
    }
    let tmp = data_dir.join(format!(".{KEY_MARK_FILE}.tmp"));
    std::fs::write(&tmp, format!("{mark}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))
}

/// Whether `data_dir`'s data was last written with a key other than the built-in one, by its
/// [`KEY_MARK_FILE`] (none before session 51).
fn written_with_own_key(data_dir: &Path) -> bool {
    std::fs::read_to_string(data_dir.join(KEY_MARK_FILE))
        .is_ok_and(|m| !m.trim().is_empty() && m.trim() != BUILTIN_KEY_MARK)
}

/// Whether `data_dir` holds stored data or detection state (written with some mask key).
fn holds_data(data_dir: &Path) -> bool {
    let ueba_snapshot = data_dir.join("state").join(UEBA_SNAPSHOT);
    ["index", "parquet", "alerts"]
        .iter()
        .any(|p| data_dir.join(p).exists())
        || ueba_snapshot.exists()
}

/// `config` with the data directory's generated mask key when it sets no `hmac_key`
/// (`MaskConfig::or_key_file`); `create` makes the key when there is none yet, in a data
/// directory that holds no data: one written with the built-in key keeps it (a new key would
/// hash the same values differently from what is stored, and set the detection state aside).
fn with_data_dir_key(
    config: &PerimeterConfig,
    data_dir: &Path,
    create: bool,
) -> anyhow::Result<PerimeterConfig> {
    let key_file = generated_key_file(data_dir);
    let holds_data = holds_data(data_dir);
    let keyless = config.mask.hmac_key.is_none() && !key_file.exists();
    // Also for the commands that only read: with the built-in key they would hash search terms
    // unlike the stored values and find nothing (QA: `search` went on, advising `hmac_key`).
    if let Some(missing) = missing_generated_key(config, data_dir) {
        anyhow::bail!("{missing}");
    }
    if create && keyless && holds_data {
        tracing::warn!(
            data_dir = %data_dir.display(),
            "masking hashes with the built-in public key, as this data directory's data was: set [mask] hmac_key"
        );
    }
    let create = create && !holds_data;
    let mask = config
        .mask
        .or_key_file(&key_file, create)
        .with_context(|| format!("the generated mask key {}", key_file.display()))?;
    Ok(PerimeterConfig {
        mask,
        ..config.clone()
    })
}

fn open_store_as(
    mut store_config: perimeter_store::StoreConfig,
    mask: &perimeter_detect::mask::MaskConfig,
    data_dir: &Path,
    open: fn(perimeter_store::StoreConfig) -> perimeter_store::Result<Store>,
) -> anyhow::Result<Store> {
    store_config.data_dir = data_dir.to_path_buf();
    let store = open(store_config)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    // One masker for both (building one compiles every pattern).
    let masker = Arc::new(SecretMasker::new(mask).context("building the masker")?);
    let pseudonyms = masker.clone();
    Ok(store
        .with_query_masker(query_term_masker(masker))
        .with_query_pseudonyms(Arc::new(move |term: &str| pseudonyms.pseudonymize(term))))
}

/// Search terms masked as stored values are: only where masking gives each value a stable
/// stand-in (`hash`); a redacted or partly kept term would find every value masked alike.
fn query_term_masker(masker: Arc<SecretMasker>) -> perimeter_store::QueryTermMasker {
    Arc::new(move |term: &str| {
        let masked = perimeter_model::Masker::mask_text(masker.as_ref(), term);
        (masked != term && !masked.contains("[REDACTED:") && !masked.contains("****"))
            .then_some(masked)
    })
}

/// The Sigma engine behind the API's rule endpoints, with the rules in use (`listed`) and the
/// behavioural detectors `config` runs.
fn rule_service(
    config: &PerimeterConfig,
    listed: Vec<serde_json::Value>,
) -> anyhow::Result<SigmaRuleService> {
    let (registry, _) = base_parts(config)?;
    let detectors = config
        .ueba
        .detectors()
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "id": d.rule_id(), "title": d.title(), "kind": "ueba", "detector": d.name(),
            })
        })
        // Listed (and so switchable per tenant) when it runs.
        .chain((config.silence.after_seconds > 0).then(|| {
            serde_json::json!({
                "id": perimeter_detect::silence::SOURCE_SILENT_RULE_ID,
                "title": "Source went silent", "kind": "source_health",
                "detector": "source_silence",
            })
        }))
        .collect();
    Ok(SigmaRuleService::new(
        listed,
        detectors,
        config.sigma.clone(),
        registry,
    ))
}

/// The masker the API applies to what it records itself (audit details).
fn value_masker(
    config: &PerimeterConfig,
) -> anyhow::Result<Arc<perimeter_query_api::state::ValueMasker>> {
    let masker = SecretMasker::new(&config.mask).context("building the masker")?;
    Ok(Arc::new(move |v: &mut serde_json::Value| {
        perimeter_model::Masker::mask_value(&masker, v);
    }))
}

/// Who may ingest: responder and admin tokens, into their tenant. A valid token refused for its
/// role is audited as the API's routes audit it (`request.denied`).
fn ingest_auth(state: AppState) -> perimeter_ingest::http::IngestAuth {
    use perimeter_ingest::http::IngestRefusal;
    Arc::new(
        move |presented: &str| match state.tokens.check(presented, chrono::Utc::now()) {
            Ok(t) if t.role >= Role::Responder => Ok(t.tenant.clone()),
            Ok(t) => {
                let details = serde_json::json!({"outcome": "forbidden", "needs": Role::Responder.to_string()});
                if let Err(e) = state.audit(&t, "request.denied", Some("POST /ingest"), details) {
                    tracing::warn!(error = %e, "auditing a refused ingest failed");
                }
                Err(IngestRefusal::Forbidden)
            }
            Err(_) if presented.is_empty() => Err(IngestRefusal::Unauthorized(None)),
            Err(refusal) => Err(IngestRefusal::Unauthorized(Some(refusal.to_string()))),
        },
    )
}

/// The names, sizes and modification times of the files in `dir`: whether they changed.
fn files_fingerprint(dir: &Path) -> Vec<(std::ffi::OsString, u64, Option<std::time::SystemTime>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.file_name(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// SIGHUP reloads the rules from their paths while the service runs: new and changed rules
/// are in use once the reload is reported, without a restart (which would drop correlation windows and
/// behavioural state). All or nothing: if any rule fails, each failure is logged and the rules
/// in use stay; so do they when the paths hold no rules any more ([`empty_reload_refusal`]).
/// Either refusal counts in `rule_reloads_failed_total`. It also asks the API server to load
/// its TLS certificate again (`certificates`; the server checks it, and keeps the one in use
/// when it refuses the files). `known`, beside the rules' paths: the sources the normalizers
/// produce, for the warnings a reload gives of the rules (a misspelt product), as a start does.
fn spawn_sighup_reloader(
    config: &PerimeterConfig,
    certificates: Option<perimeter_query_api::CertificateReloader>,
    (paths, known): (Vec<PathBuf>, Vec<String>),
    listed: Arc<SigmaRuleService>,
    (to_pipeline, wake): (
        std::sync::mpsc::Sender<perimeter_detect::sigma::SigmaDetector>,
        perimeter_ingest::bus::BusSender,
    ),
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    #[cfg(unix)]
    {
        let options = config.sigma.clone();
        let tenant = config.tenant.clone();
        let paths_for_log: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        // The config file as read at the start: a SIGHUP says when it changed since, as its
        // other settings take a restart (the rules and the certificate reload).
        let config_file = config.source_path.clone();
        let config_text = config_file.as_ref().and_then(|p| std::fs::read(p).ok());
        // Likewise the mappings (QA: a mapping added for a new vendor was thought live after a
        // SIGHUP, while its records went on being stored as plain JSON).
        let mappings_dir = config.mappings_dir.clone();
        let mappings_seen = mappings_dir.as_deref().map(files_fingerprint);
        // Registered before returning: a SIGHUP right after start must not end the process
        // (the default action).
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!(
                "cannot listen for SIGHUP; rules (and the TLS certificate, unless its files are \
                 checked for changes) reload only with a restart"
            );
            return;
        };
        tokio::spawn(async move {
            // Ends at shutdown, dropping its bus handle: the pipeline drains once every
            // sender is gone.
            loop {
                tokio::select! {
                    signal = hangups.recv() => if signal.is_none() { return },
                    _ = stop.changed() => return,
                }
                if let Some(certificates) = &certificates {
                    certificates.reload();
                }
                if let Some(dir) = &mappings_dir {
                    if Some(files_fingerprint(dir)) != mappings_seen {
                        tracing::warn!(
                            mappings_dir = %dir.display(),
                            "the mappings changed since the start: a SIGHUP reloads the rules and the TLS certificate only; restart to use them"
                        );
                    }
                }
                if let Some(path) = &config_file {
                    if std::fs::read(path).ok() != config_text {
                        tracing::warn!(
                            config = %path.display(),
                            "the config file changed since the start: a SIGHUP reloads the rule files under the rule paths read at the start, and the TLS certificate, only; restart to apply the rest (a changed `rules` list included)"
                        );
                    }
                }
                let (paths, options) = (paths.clone(), options.clone());
                let loaded =
                    tokio::task::spawn_blocking(move || RuleSet::load(&paths, &options)).await;
                let Ok((set, report)) = loaded else { continue };
                if !report.failed.is_empty() {
                    for f in &report.failed {
                        tracing::error!(error = %f, "rule error");
                    }
                    metrics.inc("rule_reloads_failed_total", &[], 1);
                    tracing::error!(
                        failed = report.failed.len(),
                        "rules not reloaded: fix the rules above and send SIGHUP again; the rules in use stay"
                    );
                    continue;
                }
                let in_use = listed.rule_count();
                if let Some(refusal) = empty_reload_refusal(in_use, set.len()) {
                    metrics.inc("rule_reloads_failed_total", &[], 1);
                    tracing::error!(
                        paths = ?paths_for_log,
                        rules_in_use = in_use,
                        "rules not reloaded: {refusal}"
                    );
                    continue;
                }
                // The warnings a start logs (a misspelt product, a tag off the spec): a rule
                // deployed by SIGHUP had none.
                let names: Vec<&str> = known.iter().map(String::as_str).collect();
                for warning in set.misspelt_sources(&names, listed.sigma_options()) {
                    tracing::warn!("rules: {warning}");
                }
                for warning in set.spec_warnings() {
                    tracing::warn!("rules: {warning}");
                }
                let detector = perimeter_detect::sigma::SigmaDetector::new(
                    set.clone(),
                    listed.sigma_options(),
                );
                if to_pipeline.send(detector).is_err() {
                    return;
                }
                // Wake the pipeline so the new rules are in use now, not at the next input;
                // its answer comes once they are. Only then does the API list them: listed
                // before, a batch sent on seeing them was still detected with the old ones (a
                // CI run caught the race).
                if wake.submit("", &tenant, Vec::new()).await.is_err() {
                    return;
                }
                listed.replace(&set);
                let count = set.len();
                metrics.set("rules_loaded", &[], count as f64);
                metrics.set("rule_files_failed", &[], 0.0);
                // A log line like the others: with `--log-format json`, one JSON object.
                tracing::info!(rules = count, "rules reloaded ({count} rules in use)");
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (
        config,
        certificates,
        paths,
        listed,
        to_pipeline,
        wake,
        known,
        metrics,
        stop,
    );
}

/// Why a reload that found `found` rules must not replace the `in_use` ones, if it must not: a
/// rules directory emptied (a deploy that removes the files before writing the new ones, a
/// mount gone) would otherwise switch every Sigma rule off and drop every open correlation
/// window, with nothing in the answers of ingest to show it. Starting without rules is still
/// allowed (and warned about at start); only a reload to none from some is refused.
fn empty_reload_refusal(in_use: usize, found: usize) -> Option<String> {
    (found == 0 && in_use > 0).then(|| {
        format!(
            "the rule paths hold no rules now; the {in_use} rules in use (and their open \
             correlation windows) stay. Put the rules back and send SIGHUP again (restart to run \
             without Sigma rules)"
        )
    })
}

/// Wakes the pipeline every `every` for its periodic work when no input comes: the silent
/// source check (`[silence]`: a source that stopped sending sends nothing that would wake it)
/// and the detection state snapshot. Ends at `stop`.
fn spawn_pipeline_ticker(
    every: std::time::Duration,
    wake: perimeter_ingest::bus::BusSender,
    config: &PerimeterConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tenant = config.tenant.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            // An empty submission: the pipeline answers it without storing anything.
            if wake.submit("", &tenant, Vec::new()).await.is_err() {
                return;
            }
        }
    });
}

/// Run `job` on a blocking thread every `every` until `stop` (also at once when `at_start`);
/// a job that panics is logged and the next tick runs it again.
fn spawn_blocking_every(
    every: std::time::Duration,
    at_start: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
    job: impl Fn() + Clone + Send + 'static,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if !at_start {
            ticks.tick().await;
        }
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = tokio::task::spawn_blocking(job.clone()).await {
                tracing::warn!(error = %e, "background task failed");
            }
        }
    });
}

/// Merge the Parquet files each stored batch adds, every `[store] parquet_compact_every_seconds`,
/// off the pipeline's thread (compaction is safe beside writes).
fn spawn_parquet_compaction(
    store: Arc<Store>,
    every_seconds: u64,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if every_seconds == 0 {
        return;
    }
    let every = std::time::Duration::from_secs(every_seconds);
    spawn_blocking_every(every, false, stop, move || match store.compact() {
        Ok(report) => {
            metrics.inc(
                "parquet_files_merged_total",
                &[],
                report.files_merged as u64,
            );
            // Each named in the log by the store: an unreadable file, a partition that failed.
            if !report.failed.is_empty() {
                metrics.inc(
                    "parquet_compaction_failures_total",
                    &[],
                    report.failed.len() as u64,
                );
            }
            if report.files_merged > 0 {
                tracing::info!(
                    partitions = report.partitions_compacted,
                    files_merged = report.files_merged,
                    files_written = report.files_written,
                    rows = report.rows,
                    "parquet files compacted"
                );
            }
        }
        Err(e) => {
            metrics.inc("parquet_compaction_failures_total", &[], 1);
            tracing::warn!(error = %e, "parquet compaction failed");
        }
    });
}

/// Bring the alert Parquet files up to date every `[store] alert_parquet_export_seconds` when
/// batches stop coming (stored batches do it themselves while they come).
fn spawn_alert_export(
    store: Arc<Store>,
    every_seconds: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if every_seconds == 0 {
        return;
    }
    let every = std::time::Duration::from_secs(every_seconds);
    spawn_blocking_every(every, false, stop, move || {
        if let Err(e) = store.export_due_alerts() {
            tracing::warn!(error = %e, "alert parquet export failed");
        }
    });
}

/// Drop the audit log's expired days at start and hourly (nothing to do with `days` 0).
fn spawn_audit_retention(
    audit: Arc<perimeter_query_api::AuditLog>,
    days: u32,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if days == 0 {
        return;
    }
    let hourly = std::time::Duration::from_secs(3600);
    spawn_blocking_every(hourly, true, stop, move || {
        match audit.expire(chrono::Utc::now(), days) {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, days, "expired audit log entries dropped"),
            Err(e) => tracing::warn!(error = %e, "audit log retention failed"),
        }
    });
}

/// One task per `[[poll]]` table, each ending at `stop`. A table that cannot work (bad URL,
/// missing `org`/`feed`, a literal token, a name used twice) stops the start with why.
fn spawn_pollers(
    config: &PerimeterConfig,
    data_dir: &std::path::Path,
    bus: &perimeter_ingest::bus::BusSender,
    metrics: &Arc<Metrics>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut names = std::collections::HashSet::new();
    let mut tasks = Vec::new();
    for poll in &config.poll {
        let source =
            poll_source(config, poll, data_dir, bus, &mut names)?.with_metrics(metrics.clone());
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(source.run(async move {
            let _ = stop.changed().await;
        })));
    }
    Ok(tasks)
}

/// The poller of one `[[poll]]` table, checked; `names`: the names of the tables before it (a
/// name is the checkpoint's file, so it may be used once).
fn poll_source(
    config: &PerimeterConfig,
    poll: &perimeter_ingest::poll::PollConfig,
    data_dir: &std::path::Path,
    bus: &perimeter_ingest::bus::BusSender,
    names: &mut std::collections::HashSet<String>,
) -> anyhow::Result<PollSource> {
    anyhow::ensure!(
        names.insert(poll.name.clone()),
        "[[poll]] name `{}` is used twice (it names the checkpoint)",
        poll.name
    );
    Ok(PollSource::new(
        poll.clone(),
        &config.tenant,
        &data_dir.join("state").join("poll"),
        bus.clone(),
    )?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    // Through the log, so `--log-format json` keeps one JSON object per line.
    tracing::info!("shutting down (flushing and committing)");
}

pub fn run(config: &PerimeterConfig, args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        return Ok(check(config));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(config, args))
}

/// The sources the `[store]` settings name that no normalizer produces, with the setting
/// (`raw_text_search_off`, `retention`): a misspelt one (`otka`) would silently do nothing.
fn unknown_store_sources<'a>(
    config: &'a PerimeterConfig,
    registry: &perimeter_detect::normalize::NormalizerRegistry,
) -> Vec<(&'static str, &'a String)> {
    let store = &config.store;
    let raw_text = store
        .raw_text_search_off
        .iter()
        .map(|s| ("raw_text_search_off", s));
    let retention = store
        .retention
        .iter()
        .filter_map(|r| Some(("retention", r.source.as_ref()?)));
    raw_text
        .chain(retention)
        .filter(|(_, s)| registry.get(s).is_none())
        .collect()
}

/// `perimeter run --check`: build each part `run` would build, from the same config, and say
/// for each whether it works (see [`RunArgs::check`]).
/// Whether `run` could write under `dir`: it, or the nearest directory above it that exists (where
/// `run` would create it), takes a file. The probe file is removed at once.
/// The spool directory `run` watches: the configured one, else `<data_dir>/inbox`.
fn spool_dir(config: &PerimeterConfig) -> std::path::PathBuf {
    config
        .spool_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("inbox"))
}

fn writable_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut existing = dir;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
    }
    anyhow::ensure!(
        existing.is_dir(),
        "{} is not a directory",
        existing.display()
    );
    let probe = existing.join(format!(".perimeter-check-{}", std::process::id()));
    std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "{} cannot be written here (checked in {})",
                dir.display(),
                existing.display()
            )
        })
}

/// `run --check` with no rule paths: a warning (behavioural detectors still run), not a failure.
#[derive(Debug)]
struct NoRules;

impl std::fmt::Display for NoRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("none: the config names no `rules` and there is no ./detection-rules here; only the behavioural detectors would run")
    }
}

impl std::error::Error for NoRules {}

/// The warning for days whose events are in Parquet files but that have no index, if any.
fn days_without_index_warning(store: &Store) -> anyhow::Result<Option<String>> {
    let days = store.days_without_index()?;
    let Some((tenant, first)) = days.first() else {
        return Ok(None);
    };
    let from = days.iter().map(|(_, d)| *d).min().unwrap_or(*first);
    let last = days.iter().map(|(_, d)| *d).max().unwrap_or(*first);
    Ok(Some(format!(
        "{} day(s) hold events in Parquet files but have no index (e.g. tenant {tenant} {first}): searches of them find nothing, and events sent again are stored again; rebuild them with `perimeter reindex --from {from} --to {last}` while the service is stopped",
        days.len()
    )))
}

/// What the data directory holds, read as `run` would open it: an index `run` would refuse
/// (damaged, another version's) fails here, naming `perimeter reindex`, before a restart does.
/// Also what is worth a warning there.
fn stored_events(config: &PerimeterConfig) -> anyhow::Result<(String, Vec<String>)> {
    // A full disk: the check said ok and the start then failed to open the store, so a
    // service running degraded did not come back after a restart.
    let mut warnings = Vec::new();
    if let Some(free) = free_bytes(&config.data_dir) {
        anyhow::ensure!(
            free >= NEEDED_FREE_BYTES,
            "{} has {free} bytes free: `run` cannot open the store on a full disk; free space first",
            config.data_dir.display()
        );
        if free < LOW_FREE_BYTES {
            warnings.push(format!(
                "{} has {:.0} MB free: the store stops taking batches when it runs out",
                config.data_dir.display(),
                free as f64 / 1e6
            ));
        }
    }
    // (Parquet files without any index: every day lost its index.)
    if !config.data_dir.join("index").is_dir() && !config.data_dir.join("parquet").is_dir() {
        return Ok((String::new(), warnings));
    }
    // Opened without the search masker: the masking key is the masking part's to check.
    let mut store_config = config.store.clone();
    store_config.data_dir = config.data_dir.clone();
    let store = Store::open_read_only(store_config)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    // A warning, not a failure: the service runs without them; the disk they take is the
    // on-call's call.
    let aside = store.set_aside_parquet_files()?;
    let aside_warning = aside.first().map(|first| {
        let bytes: u64 = aside.iter().map(|f| f.bytes).sum();
        format!(
            "{} Parquet file(s) that could not be read were set aside by `perimeter repair-parquet` ({:.1} MB), e.g. {}: their events were written back, so delete them once the damage is understood",
            aside.len(),
            bytes as f64 / 1e6,
            first.path.display()
        )
    });
    let stored = format!(" ({} events stored)", store.stats().events_stored);
    warnings.extend(days_without_index_warning(&store)?);
    let unreadable = store.unreadable_parquet_files()?;
    if let Some(first) = unreadable.first() {
        warnings.push(format!(
            "{} Parquet file(s) cannot be read, e.g. {}: searches are served from the indexes, but exports and compaction cannot read them; `perimeter repair-parquet` (with the service stopped) writes their events back from the indexes",
            unreadable.len(),
            first.display()
        ));
    }
    // The retention sweep runs at the start: what it would remove, before it does.
    let expiring = store.retention_preview(chrono::Utc::now())?;
    if expiring.events > 0 || expiring.parquet_partitions > 0 {
        warnings.push(format!(
            "the retention settings remove {} stored event(s) ({} Parquet partition(s)) at the start: raise retention_days (or a [[store.retention]] rule) first if they are to be kept",
            expiring.events, expiring.parquet_partitions
        ));
    }
    let aside_warning = aside_warning.into_iter();
    Ok((stored, warnings.into_iter().chain(aside_warning).collect()))
}

/// Less free space than this, and the store cannot be opened (it writes as it opens).
const NEEDED_FREE_BYTES: u64 = 16 << 20;
/// Less free space than this is worth a warning.
const LOW_FREE_BYTES: u64 = 1 << 30;

/// Bytes free for this process on the file system of `path` (its nearest existing ancestor).
fn free_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a valid C string, and a zeroed statvfs for the call to fill.
    unsafe {
        let mut stats: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c_path.as_ptr(), &mut stats) == 0)
            .then(|| stats.f_bavail as u64 * stats.f_frsize as u64)
    }
}

/// Which config file was read, and the data directory it names, as absolute paths: a relative
/// path follows the shell's working directory, and a check run elsewhere (or without
/// `--config`) checked something else than the service, saying `ok` all the same.
fn config_said(config: &PerimeterConfig) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let data = absolute(&config.data_dir);
    match &config.source_path {
        Some(path) => format!("{} (data_dir {})", absolute(path).display(), data.display()),
        None => format!(
            "none given: the defaults (data_dir {}); pass --config or set PERIMETER_CONFIG",
            data.display()
        ),
    }
}

/// What `run` reads of the API's own files in `data_dir`: its tokens, the alert destinations
/// and the rule switches (read only).
fn api_state(data_dir: &Path) -> anyhow::Result<String> {
    let tokens = perimeter_query_api::auth::TokenStore::open_in(data_dir)
        .context("API tokens (`perimeter tokens`)")?
        .list();
    let live = tokens
        .iter()
        .filter(|t| !t.is_revoked() && !t.is_expired_at(chrono::Utc::now()))
        .count();
    DestinationStore::open_in(data_dir).context("alert destinations")?;
    RuleSwitchStore::open_in(data_dir).context("rule switches")?;
    Ok(format!(
        "{live} API token(s) in use; alert destinations and rule switches readable"
    ))
}

fn check(config: &PerimeterConfig) -> ExitCode {
    say!("ok     config: {}", config_said(config));
    let mut failed = 0;
    // Errors quote what was configured or found (a misspelt property's value, a token in a
    // URL): masked as `run` masks the same errors in its log (QA: the check printed them clear).
    let mut report = |part: &str, outcome: anyhow::Result<String>| match outcome {
        Ok(what) => say!("ok     {part}: {what}"),
        Err(e) => {
            failed += 1;
            say!(
                "error  {part}: {}",
                crate::logging::masked(&format!("{e:#}"))
            );
        }
    };
    // The key `run` would hash with: the configured one, else the data directory's own.
    let keyed = match missing_generated_key(config, &config.data_dir) {
        Some(missing) => Err(anyhow::anyhow!("{missing}")),
        None => with_data_dir_key(config, &config.data_dir, false),
    };
    let parts = keyed
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(base_parts);
    let names: Vec<String> = parts.as_ref().map_or_else(
        |_| Vec::new(),
        |(registry, _)| registry.names().iter().map(|n| n.to_string()).collect(),
    );
    let unknown_store: Vec<(&str, &String)> = parts.as_ref().map_or_else(
        |_| Vec::new(),
        |(registry, _)| unknown_store_sources(config, registry),
    );
    // A configured key that is not the one the detection state was written with: the start
    // sets the state aside (QA: the check said ok, the restart logged three errors).
    let key_changed = parts.as_ref().ok().and_then(|(_, masker)| {
        config.mask.hmac_key.as_ref()?;
        let snapshot = config.data_dir.join("state").join(UEBA_SNAPSHOT);
        let same = perimeter_detect::ueba::snapshot_written_with(
            &snapshot,
            &perimeter_detect::pipeline::entity_key(masker),
        )?;
        let written_with = generated_key_file(&config.data_dir);
        (!same).then(|| {
            format!(
                "[mask] hmac_key is not the key this data directory's detection state was written with: at the start the behavioural baselines, open correlation windows and replay window are set aside, and hashed values stored before no longer match new ones; to keep them, set hmac_key to the key they were written with{}",
                if written_with.exists() {
                    format!(" (\"file:{}\")", written_with.display())
                } else {
                    String::new()
                }
            )
        })
    });
    report(
        "sources and masking",
        parts.map(|(registry, masker)| {
            format!(
                "{} sources ({}){}",
                registry.names().len(),
                registry.names().join(", "),
                match (masker.uses_builtin_key(), config.mask.hmac_key.is_some()) {
                    (true, _) if holds_data(&config.data_dir) => {
                        "; masking hashes with the built-in public key, as this data directory's data was (set [mask] hmac_key)".to_string()
                    }
                    (true, _) => format!(
                        "; masking will hash with a key generated at the first start in {} (or set [mask] hmac_key)",
                        generated_key_file(&config.data_dir).display()
                    ),
                    (false, false) => format!(
                        "; masking hashes with the key generated in {}",
                        generated_key_file(&config.data_dir).display()
                    ),
                    (false, true) => String::new(),
                }
            )
        }),
    );
    if let Some(warning) = key_changed {
        say!("warn   sources and masking: {warning}");
    }
    for (setting, source) in unknown_store {
        say!("warn   store: {setting} names `{source}`, which no normalizer produces");
    }
    let rule_paths = config.rule_paths(&[]);
    let rules = (|| -> anyhow::Result<String> {
        let (set, options, loaded) = load_rules_reported(config, &[], false)?;
        let known: Vec<&str> = names.iter().map(String::as_str).collect();
        for warning in set.misspelt_sources(&known, &options) {
            say!("warn   rules: {warning}");
        }
        for warning in set.spec_warnings() {
            say!("warn   rules: {warning}");
        }
        for f in &loaded.failed {
            say!("error  rules: {f}");
        }
        anyhow::ensure!(
            loaded.failed.is_empty(),
            "{} rule file(s) would be left out",
            loaded.failed.len()
        );
        if rule_paths.is_empty() {
            // The warning says it all; no "ok ... from nowhere" after it.
            anyhow::bail!(NoRules);
        }
        if rule_list(&set).is_empty() {
            say!("warn   rules: the rule paths hold no Sigma rules (*.yml / *.yaml); only the behavioural detectors would run");
        }
        let dirs: Vec<String> = rule_paths.iter().map(|p| p.display().to_string()).collect();
        Ok(format!(
            "{} loaded from {}",
            rule_list(&set).len(),
            if dirs.is_empty() {
                "nowhere".to_string()
            } else {
                dirs.join(", ")
            }
        ))
    })();
    match rules {
        Err(e) if e.is::<NoRules>() => say!("warn   rules: {e}"),
        rules => report("rules", rules),
    }
    let mut store_warnings = Vec::new();
    report(
        "store",
        config
            .store
            .validate()
            .map_err(anyhow::Error::from)
            .and_then(|()| writable_data_dir(&config.data_dir).context("data_dir"))
            .and_then(|()| stored_events(config))
            .map(|(stored, warnings)| {
                store_warnings = warnings;
                format!("data under {}{stored}", config.data_dir.display())
            }),
    );
    for warning in store_warnings {
        say!("warn   store: {warning}");
    }
    // The files the API keeps beside the store, which `run` refuses to start without reading
    // (a hand edit, a partial restore).
    report("api state", api_state(&config.data_dir));
    if let Ok(destinations) = DestinationStore::open_in(&config.data_dir) {
        let destinations =
            destinations.allow_private_destinations(config.api.allow_private_destinations);
        for problem in destinations.unusable() {
            say!("warn   alert destinations: {problem}");
        }
    }
    let spool = spool_dir(config);
    report(
        "spool",
        writable_data_dir(&spool).context("spool_dir").map(|()| {
            format!(
                "files dropped into {}/<source>/ are ingested",
                spool.display()
            )
        }),
    );
    report(
        "behavioural detectors",
        config
            .ueba
            .validate()
            .map(|()| format!("{} on", config.ueba.detectors().len()))
            .map_err(anyhow::Error::from),
    );
    let api = Server::check(&config.api);
    let listen = config.api.listen;
    match api {
        // An expired, not yet valid or CA certificate is an error of `Server::check` already,
        // the same `run` and a reload stop at; one close to expiry is what `run` warns of.
        Ok(ListenerCheck::Https {
            certificate_expires: Some(at),
            expiring_certificate,
        }) if at - chrono::Utc::now() < perimeter_query_api::CERTIFICATE_EXPIRY_WARNING => {
            let days = (at - chrono::Utc::now()).num_days();
            // Which one: renewing the server's own does not help when an intermediate runs out.
            let which = perimeter_query_api::certificate_place(expiring_certificate);
            say!(
                "warn   api: https on {listen}, certificate expires {at} (in {days} days; {which}): renew it before clients refuse the API"
            );
        }
        api => report(
            "api",
            api.map_err(anyhow::Error::from)
                .map(|listener| match listener {
                    ListenerCheck::Http => format!("http on {listen}"),
                    ListenerCheck::Https {
                        certificate_expires: None,
                        ..
                    } => format!("https on {listen} (certificate expiry unreadable)"),
                    ListenerCheck::Https {
                        certificate_expires: Some(at),
                        ..
                    } => {
                        let days = (at - chrono::Utc::now()).num_days();
                        format!("https on {listen}, certificate valid until {at} ({days} days)")
                    }
                }),
        ),
    }
    // The limit `run` would have (it raises its own, as this does).
    if let Some(warning) =
        open_file_limit_warning(raise_open_file_limit(), config.api.max_connections)
    {
        say!("warn   api: {warning}");
    }
    // Nothing is submitted: the bus only satisfies the source's constructor.
    let (bus, _unused) = perimeter_ingest::bus::channel(1);
    let mut poll_names = std::collections::HashSet::new();
    for poll in &config.poll {
        let outcome = (|| -> anyhow::Result<String> {
            poll_source(config, poll, &config.data_dir, &bus, &mut poll_names)?;
            // Secrets are read when polling starts; a missing one is found here instead.
            for reference in std::iter::once(&poll.token).chain(poll.aws_access_key_id.as_ref()) {
                perimeter_model::resolve_secret(reference)
                    // Not "secret <path>: ...", which reads as a secret assignment to the log's
                    // masking when the path names a secret file (QA: the reference redacted).
                    .with_context(|| format!("reading the secret {reference} names"))?;
            }
            Ok(format!(
                "{} from {} every {} s (`perimeter poll-check` asks it)",
                poll.vendor.source(),
                poll.base_url,
                poll.interval_seconds.max(1)
            ))
        })();
        report(&format!("poll {}", poll.name), outcome);
    }
    if let Some(kafka) = &config.kafka {
        report(
            "kafka bus",
            perimeter_ingest::kafka::probe(kafka).map_err(anyhow::Error::from),
        );
        for warning in perimeter_ingest::kafka::payload_key_warnings(kafka) {
            say!("warn   kafka bus: {warning}");
        }
        if let Some(warning) = kafka_mask_key_warning(config) {
            say!("warn   kafka bus: {warning}");
        }
    }
    if failed > 0 {
        say!("{failed} part(s) would keep `perimeter run` from starting or leave something out");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn run_async(config: &PerimeterConfig, args: RunArgs) -> anyhow::Result<ExitCode> {
    let data_dir = config.data_dir.clone();
    // `[ueba]` values `run --check` refuses stop the start with the same words (QA: `run`
    // clamped them without a word, so the thresholds in use were not the ones configured).
    config.ueba.validate()?;
    // A `[[poll]]` table that cannot work stops the start before anything is opened or swept.
    {
        let (bus, _unused) = perimeter_ingest::bus::channel(1);
        let mut names = std::collections::HashSet::new();
        for poll in &config.poll {
            poll_source(config, poll, &data_dir, &bus, &mut names)?;
        }
    }
    // A certificate the listener would refuse (unreadable, expired, a CA's) stops the start
    // before anything is opened, with the words of `run --check`; bound later as loaded here.
    let mut api_config = config.api.clone();
    if let Some(listen) = args.listen {
        api_config.listen = listen;
    }
    let prepared_api = Server::prepare(&api_config)?;
    tracing::info!(config = %config_said(config), "configuration");
    let open_files = raise_open_file_limit();
    if let Some(warning) = open_file_limit_warning(open_files, api_config.max_connections) {
        tracing::warn!("{warning}");
    }
    // The same words as `run --check` for a data_dir that is a file ("File exists" said less).
    writable_data_dir(&data_dir).context("data_dir")?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // An inbox that cannot be used would leave file ingest off without a word.
    let spool_dir = spool_dir(config);
    writable_data_dir(&spool_dir).context("spool_dir")?;
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("creating {}", spool_dir.display()))?;
    // Without `[mask] hmac_key`, a key of this data directory's own (made at the first start).
    let config = &with_data_dir_key(config, &data_dir, true)?;
    let metrics = Arc::new(Metrics::new());
    // Failure counters are there from the start, at 0: an alert on `increase(...) > 0` sees the
    // first failure (a series born at 1 shows no increase), and a typo in its name shows.
    for failures in [
        "store_batches_failed_total",
        "state_snapshots_failed_total",
        "retention_failures_total",
        "parquet_compaction_failures_total",
        "api_connections_refused_total",
        "rule_reloads_failed_total",
    ] {
        metrics.inc(failures, &[], 0);
    }
    if config.api.tls_cert_path.is_some() {
        for result in ["ok", "failed"] {
            metrics.inc("tls_certificate_reloads_total", &[("result", result)], 0);
        }
    }
    let store = Arc::new(open_store(config, &data_dir)?);
    crate::demo::adopt_for_service(&data_dir)?;
    if let Some(warning) = days_without_index_warning(&store)? {
        tracing::warn!("{warning}");
    }
    let (registry, masker) = base_parts(config)?;
    note_key_mark(&data_dir, &masker)?;
    // The Kafka producer keys records by entity with normalizers of its own.
    let registry_for_keys = match config.kafka {
        Some(_) => Some(crate::detect_cmd::normalizers(config)?),
        None => None,
    };
    for (setting, source) in unknown_store_sources(config, &registry) {
        tracing::warn!(
            source = source.as_str(),
            setting,
            known = ?registry.names(),
            "a [store] setting names a source no normalizer produces; it has no effect"
        );
    }
    let key = entity_key(&masker);
    // Kafka message keys are keyed only with a configured key, which every instance shares: a
    // key of one instance's own data directory would send one entity to several partitions.
    let partition_hash_key = config
        .mask
        .hmac_key
        .is_some()
        .then(|| masker.derive_key("perimeter kafka partition key"));
    let rule_paths = config.rule_paths(&[]);
    if rule_paths.is_empty() {
        tracing::warn!("no Sigma rules: the config names no `rules` and there is no ./detection-rules here; only the behavioural detectors run");
    }
    let (rule_set, sigma_options, loaded) = load_rules_reported(config, &rule_paths, false)?;
    // Logged as errors (a log collector sees them), not only printed: the service runs
    // without these files' rules.
    for f in &loaded.failed {
        tracing::error!("rule error, the file's rules do not run: {f}");
    }
    // For the warnings a SIGHUP reload gives of the rules, as these.
    let source_names: Vec<String> = registry.names().iter().map(|n| n.to_string()).collect();
    for rule in rule_set.misspelt_sources(&registry.names(), &sigma_options) {
        tracing::warn!("{rule}");
    }
    let listed_rules = rule_list(&rule_set);
    if !rule_paths.is_empty() && listed_rules.is_empty() && loaded.failed.is_empty() {
        tracing::warn!(paths = ?rule_paths, "the rule paths hold no Sigma rules (*.yml / *.yaml); only the behavioural detectors run");
    }
    let rules_left_out = loaded.failed.len();
    let sigma = SigmaDetector::new(rule_set, &sigma_options);
    let state_dir = data_dir.join("state");
    let state_path = state_dir.join(UEBA_SNAPSHOT);
    std::fs::create_dir_all(&state_dir)?;
    perimeter_serve::report_unsaved_shutdowns(&state_dir);
    let (ueba, set_aside) = UebaEngine::restore_or_set_aside(config.ueba.clone(), key, &state_path)
        .with_context(|| format!("restoring behavioural state from {}", state_path.display()))?;
    if let Some((aside, reason)) = set_aside {
        tracing::error!(
            moved_to = %aside.display(),
            reason = %reason,
            "behavioural state could not be used; starting with empty baselines (UEBA warms up again)"
        );
    } else if ueba.tracked_entities() > 0 {
        // Said, so that a restart shows whether the baselines came back (QA: nothing did).
        tracing::info!(
            entities = ueba.tracked_entities(),
            "restored the behavioural baselines"
        );
    }
    let rule_switches =
        Arc::new(RuleSwitchStore::open_in(&data_dir).context("opening the rule switches")?);
    let mut pipeline = Pipeline::new(registry, masker, metrics.clone(), true)
        .with_sigma(sigma)
        .with_ueba(ueba)
        .with_rule_switches(rule_switches.switches());
    let restore = pipeline
        .restore_correlations(&state_dir)
        .with_context(|| format!("restoring correlation windows from {}", state_dir.display()))?;
    if let Some((aside, reason)) = &restore.set_aside {
        tracing::error!(
            moved_to = %aside.display(),
            reason = %reason,
            "correlation windows could not be restored; correlations start with empty windows"
        );
    } else if restore.restored.keys > 0 || restore.restored.dropped_correlations > 0 {
        tracing::info!(
            open_windows = restore.restored.keys,
            correlations_changed = restore.restored.dropped_correlations,
            "restored open correlation windows (correlations whose rule file, or a file of the rules they read, changed start empty)"
        );
    }
    match pipeline
        .restore_replay_window(&state_dir)
        .with_context(|| format!("restoring the replay window from {}", state_dir.display()))?
    {
        Ok(0) => {}
        Ok(events) => tracing::info!(
            events,
            "restored the replay window (these events are not detected again if resent)"
        ),
        Err((aside, reason)) => tracing::error!(
            moved_to = %aside.display(),
            reason = %reason,
            "replay window could not be restored; events resent after the restart are detected again"
        ),
    }
    let destinations = Arc::new(
        DestinationStore::open_in(&data_dir)
            .context("opening the alert destinations")?
            .allow_private_destinations(config.api.allow_private_destinations),
    );
    for problem in destinations.unusable() {
        tracing::warn!("{problem}; its batches are given up at the first try");
    }
    let (outbox, undelivered) =
        DeliveryOutbox::open_in(&data_dir).context("opening the alert delivery outbox")?;
    if !undelivered.is_empty() {
        tracing::info!(
            batches = undelivered.len(),
            "sending alert batches a previous run left undelivered"
        );
    }
    let notifier = AlertNotifier::spawn(
        destinations.clone(),
        metrics.clone(),
        std::time::Duration::from_secs(1),
        Arc::new(outbox),
        undelivered,
    );
    notifier.requeue_intended(|tenant, id| match store.get_alert(tenant, id) {
        Ok(found) => found.map(|record| record.alert),
        Err(e) => {
            tracing::warn!(error = %e, "reading an alert to queue for delivery failed; it is not sent");
            None
        }
    });
    let silence = perimeter_detect::silence::SourceSilence::new(&config.silence);
    // Up to this many submissions wait for the worker, which stores those waiting together
    // (one commit): many concurrent senders of small batches (webhooks) make larger groups.
    let (bus, rx) = perimeter_ingest::bus::channel(64);
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    let worker = perimeter_serve::spawn_pipeline_worker(
        pipeline,
        store.clone(),
        rx,
        metrics.clone(),
        perimeter_serve::StateSnapshots {
            dir: state_dir,
            every: std::time::Duration::from_secs(config.state_snapshot_seconds.max(1)),
        },
        notifier,
        perimeter_serve::WorkerControl {
            rule_reloads: reload_rx,
            silence: silence.clone(),
        },
    );

    let rule_count = listed_rules.len();
    let rules = Arc::new(rule_service(config, listed_rules)?);
    metrics.set("rules_loaded", &[], rule_count as f64);
    // Rule files left out at the start (each logged): a dashboard or an alert sees that
    // detections are missing, as it sees a failed reload (QA).
    metrics.set("rule_files_failed", &[], rules_left_out as f64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // What the sources submit to: the worker's bus, or with `[kafka]` the topic (and this
    // service reads its share of the topic into the worker's bus).
    let (sources_bus, kafka_tasks) = match &config.kafka {
        None => (bus.clone(), Vec::new()),
        Some(kafka) => {
            if let Some(warning) = kafka_mask_key_warning(config) {
                tracing::warn!("{warning}");
            }
            start_kafka_bus(
                kafka,
                registry_for_keys,
                partition_hash_key,
                &bus,
                &stop_rx,
                &metrics,
                &config.tenant,
            )
            .await?
        }
    };
    // Twice per snapshot interval, so an idle pipeline's snapshot is at most 1.5 intervals late.
    let snapshot_every = std::time::Duration::from_secs(config.state_snapshot_seconds.max(2)) / 2;
    let tick = silence
        .as_ref()
        .map_or(snapshot_every, |s| s.check_every().min(snapshot_every));
    spawn_pipeline_ticker(tick, bus.clone(), config, stop_rx.clone());
    spawn_sighup_reloader(
        config,
        prepared_api.certificate_reloader(),
        (rule_paths.clone(), source_names),
        rules.clone(),
        (reload_tx, bus.clone()),
        metrics.clone(),
        stop_rx.clone(),
    );
    let state = AppState::open_in(&data_dir, store.clone(), rules, metrics.clone())
        .context("opening tokens and audit log")?
        .with_masker(value_masker(config)?)
        .with_destinations(destinations)
        .with_rule_switches(rule_switches);
    spawn_audit_retention(
        state.audit.clone(),
        config.api.audit_retention_days,
        stop_rx.clone(),
    );
    spawn_parquet_compaction(
        store.clone(),
        config.store.parquet_compact_every_seconds,
        metrics.clone(),
        stop_rx.clone(),
    );
    spawn_alert_export(
        store.clone(),
        config.store.alert_parquet_export_seconds,
        stop_rx.clone(),
    );
    // At shutdown, once the grace period is over, ingest takes no more batches (503), and the
    // clients whose batches the pipeline took before are answered before the connections are
    // cut: the worker stores those batches anyway before the process exits (it drains the
    // bus), so cutting them saves no time and would leave stored batches unanswered.
    let answers_owed = perimeter_ingest::http::AnswersOwed::default();
    let server = prepared_api.bind()?.hold_cutoff_while({
        let owed = answers_owed.clone();
        Arc::new(move || owed.stop_taking())
    });
    let addr = server.local_addr()?;
    let scheme = if server.is_tls() { "https" } else { "http" };
    let ingest = perimeter_ingest::http::ingest_router_checking_sources(
        sources_bus.clone(),
        answers_owed,
        ingest_auth(state.clone()),
        perimeter_ingest::http::IngestLimits {
            max_body_bytes: 64 * 1024 * 1024,
            max_line_bytes: config.max_line_bytes,
            max_records: config.ingest_max_records,
        },
        Some(secret_source_names()),
    );

    let pollers = spawn_pollers(config, &data_dir, &sources_bus, &metrics, &stop_rx)?;
    let spool = SpoolSource::new(
        SpoolConfig {
            max_line_bytes: config.max_line_bytes,
            keep_processed_hours: config.spool_keep_processed_hours,
            ..SpoolConfig::new(spool_dir.clone(), config.tenant.clone())
        },
        sources_bus,
    )
    .with_metrics(metrics.clone())
    .with_source_check(secret_source_names());
    let mut spool_stop = stop_rx.clone();
    let spool_task = tokio::spawn(async move {
        spool
            .run(async move {
                let _ = spool_stop.changed().await;
            })
            .await
    });

    say!("perimeter run: listening on {scheme}://{addr}");
    say!("  ingest: POST {scheme}://{addr}/ingest/<source> (JSON lines) or drop files into {}/<source>/", spool_dir.display());
    for p in &config.poll {
        say!(
            "  poll:   {} ({}, {}, every {} s)",
            p.name,
            p.vendor.source(),
            p.base_url,
            p.interval_seconds.max(1)
        );
    }
    if let Some(kafka) = &config.kafka {
        let role = if kafka.consume {
            format!("detecting its share in consumer group {}", kafka.group)
        } else {
            "ingest only: this service stores nothing".to_string()
        };
        say!(
            "  bus:    Kafka topic {} at {} ({role}; ingest answers mean queued on the broker)",
            kafka.topic,
            kafka.brokers,
        );
    }
    say!("  API:    {scheme}://{addr}/api/v1/openapi.json");
    say!("  data:   {}", data_dir.display());
    let rule_dirs: Vec<String> = rule_paths.iter().map(|p| p.display().to_string()).collect();
    if rule_dirs.is_empty() {
        say!("  rules:  none configured (`rules = [...]` in the config; SIGHUP reloads them)");
    } else {
        say!(
            "  rules:  {rule_count} from {}{} (SIGHUP reloads them)",
            rule_dirs.join(", "),
            match rules_left_out {
                0 => String::new(),
                n => format!("; {n} file(s) left out for errors, see the log"),
            }
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let mut server_stop = stop_rx.clone();
    let ingest_doc = Some(perimeter_ingest::http::ingest_openapi());
    let server_task = tokio::spawn(server.run_with(ingest, ingest_doc, state, async move {
        let _ = server_stop.changed().await;
    }));
    // The sources, the ticker, the reloader and the Kafka member hold their own senders: once
    // they are gone, the worker drains and ends.
    drop(bus);
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    match spool_task.await {
        Ok(Err(error)) => tracing::error!(%error, "the spool directory stopped"),
        Err(error) => tracing::error!(%error, "the spool directory's task failed"),
        Ok(Ok(())) => {}
    }
    for poller in pollers {
        let _ = poller.await;
    }
    if let Ok(Err(e)) = server_task.await {
        tracing::error!(error = %e, "api server stopped with an error");
    }
    // The Kafka producer has sent what the sources handed it; the group member has stored
    // and committed its last batch (or left it uncommitted, to be read again).
    for task in kafka_tasks {
        let _ = task.await;
    }
    // Every bus sender is gone now: the worker drains, stores, snapshots and flushes.
    match tokio::task::spawn_blocking(move || worker.join()).await {
        Ok(Ok(losses)) if losses.is_clean() => {
            tracing::info!("stopped cleanly");
            Ok(ExitCode::SUCCESS)
        }
        // A service manager or an operator reads the exit code: a shutdown that lost data
        // must not look like a clean one.
        Ok(Ok(losses)) => {
            tracing::error!(
                alerts_lost = losses.alerts_lost,
                state_not_saved = losses.state_not_saved,
                store_not_flushed = losses.store_not_flushed,
                "stopped, but not cleanly: the shutdown could not save everything (see the errors above)"
            );
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(_)) | Err(_) => {
            tracing::error!("stopped, but not cleanly: the pipeline thread panicked, so its last alerts and detection state were not saved");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// On the Kafka bus without `[mask] hmac_key`, each instance hashes with the key generated in
/// its own data directory: the same person gets a different pseudonym on each detector (and in
/// each store), which breaks "one stable pseudonym per person" across the group.
fn kafka_mask_key_warning(config: &PerimeterConfig) -> Option<String> {
    (config.kafka.is_some() && config.mask.hmac_key.is_none()).then(|| {
        "no [mask] hmac_key: each instance hashes with a key of its own data directory, so one value gets a different pseudonym on each detector; set the same hmac_key (e.g. \"env:PERIMETER_MASK_KEY\") on every instance".to_string()
    })
}

/// The Kafka bus of `[kafka]` (ADR 019): the topic is created when missing, a producer takes
/// what the sources submit (the returned sender; acknowledged once on the broker), and a
/// member of the detectors' consumer group feeds `worker` (committing once stored). Both
/// tasks end after `stop`.
async fn start_kafka_bus(
    kafka: &perimeter_ingest::kafka::KafkaBusConfig,
    registry: Option<perimeter_detect::normalize::NormalizerRegistry>,
    partition_hash_key: Option<[u8; 32]>,
    worker: &perimeter_ingest::bus::BusSender,
    stop: &tokio::sync::watch::Receiver<bool>,
    metrics: &Arc<Metrics>,
    tenant: &str,
) -> anyhow::Result<(
    perimeter_ingest::bus::BusSender,
    Vec<tokio::task::JoinHandle<()>>,
)> {
    use perimeter_ingest::kafka::{
        ensure_topic, entity_partition_key, KafkaBusConsumer, KafkaBusProducer,
    };
    // Settings that cannot work, and brokers that do not answer, in `run --check`'s words and
    // at once (creating the topic would only time out after a minute).
    let probe = kafka.clone();
    tokio::task::spawn_blocking(move || perimeter_ingest::kafka::probe(&probe))
        .await
        .context("asking the Kafka brokers")??;
    for warning in perimeter_ingest::kafka::payload_key_warnings(kafka) {
        tracing::warn!("{warning}");
    }
    ensure_topic(kafka)
        .await
        .with_context(|| format!("the Kafka topic {} on {}", kafka.topic, kafka.brokers))?;
    let registry = Arc::new(registry.context("normalizers for the Kafka keys")?);
    let names = registry.clone();
    let key = entity_partition_key(partition_hash_key, move |source, record| {
        registry.entity_of(source, record)
    });
    let producer = KafkaBusProducer::new(kafka, key)?
        .with_record_splitter(Arc::new(|source, item| match item {
            perimeter_ingest::InputItem::Record {
                line,
                value,
                member_lines,
            } => perimeter_detect::normalize::records_of_input(source, value, *line, member_lines)
                .map(|records| {
                    records
                        .into_iter()
                        .map(|(line, value)| perimeter_ingest::InputItem::Record {
                            line,
                            value,
                            member_lines: Vec::new(),
                        })
                        .collect()
                }),
            _ => None,
        }))
        .with_metrics(metrics.clone())
        .with_source_note(Arc::new(move |source| {
            names.unnormalized_source_note(source)
        }));
    let (sources_bus, sources_rx) = perimeter_ingest::bus::channel(16);
    let produce = tokio::spawn(producer.run(sources_rx));
    if !kafka.consume {
        tracing::info!(
            brokers = kafka.brokers,
            topic = kafka.topic,
            "on the Kafka bus, ingest only: sources produce to the topic; this service detects and stores nothing ([kafka] consume = false)"
        );
        return Ok((sources_bus, vec![produce]));
    }
    let consumer = KafkaBusConsumer::new(kafka)?
        .with_metrics(metrics.clone())
        .with_tenant(tenant);
    let (worker, stop) = (worker.clone(), stop.clone());
    let topic = kafka.topic.clone();
    let consumer_metrics = metrics.clone();
    let consume = tokio::spawn(async move {
        match consumer.run(worker, stop).await {
            Ok(totals) => tracing::info!(
                messages = totals.messages,
                batches = totals.batches,
                "left the Kafka consumer group"
            ),
            Err(e) => {
                tracing::error!(error = %e, topic, "reading the Kafka bus failed; this instance detects nothing more until restarted");
                consumer_metrics.part_stopped("Kafka consumer", &e.to_string());
            }
        }
    });
    tracing::info!(
        brokers = kafka.brokers,
        topic = kafka.topic,
        group = kafka.group,
        "on the Kafka bus: sources produce to the topic, this service consumes its share"
    );
    Ok((sources_bus, vec![produce, consume]))
}

/// After the demo run: serve the API over the demo data with a fresh admin token.
pub fn serve_demo(
    config: &PerimeterConfig,
    data_dir: &Path,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    listen: SocketAddr,
    tenant: &str,
    listed_rules: Vec<serde_json::Value>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        // The rules the demo ran, so `GET /rules` lists what produced its alerts.
        let rules = Arc::new(rule_service(config, listed_rules)?);
        // Triage through the API reaches the alert Parquet files as in `run`.
        let (_keep_exporting, stop) = tokio::sync::watch::channel(false);
        spawn_alert_export(store.clone(), config.store.alert_parquet_export_seconds, stop);
        let state = AppState::open_in(data_dir, store, rules, metrics)?.with_masker(value_masker(config)?);
        let (_, token) = state.tokens.create(tenant, Role::Admin, Some("demo"))?;
        let mut api_config = config.api.clone();
        api_config.listen = listen;
        let server = Server::bind(&api_config).await?;
        let url = format!("http://{}", server.local_addr()?);
        say!();
        say!("API serving the demo data at {url}/api/v1  (Ctrl-C to stop)");
        say!("  demo token (admin, tenant {tenant}): {token}");
        say!("  try: curl -H 'Authorization: Bearer {token}' '{url}/api/v1/alerts?limit=5'");
        say!("       curl -H 'Authorization: Bearer {token}' '{url}/api/v1/events/search?q=event.action:user.session.start'");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server.run(state, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The source names refused over HTTP and in the inbox: a name the masker would mask is a
/// secret (a token pasted as the source), not a vendor; it is not echoed back.
fn secret_source_names() -> perimeter_ingest::http::SourceNameCheck {
    Arc::new(|source: &str| {
        (crate::logging::masked(source) != source).then(|| {
            "the source name looks like a secret (a token or key): name the vendor, such as `okta`"
                .to_string()
        })
    })
}
