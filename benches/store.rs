//! Store bench: ingest throughput into tantivy + Parquet together (durable per batch) and
//! search latency over the resulting store.
//!
//! Parameters (env):
//! - `PERIMETER_BENCH_EVENTS` (default 1 000 000): events to ingest (the target size
//!   is 10M; that takes long on 2 cores and ~10 GB of disk);
//! - `PERIMETER_BENCH_BATCH` (default 50 000): events per `write_batch`;
//! - `PERIMETER_BENCH_DAYS`: the events' @timestamps span this many days. Default: the events
//!   divided by 333 333 (30 days at 10M events, 3 days at the default 1M): a stream of ~333k
//!   events a day, so a shorter run writes batches of the shape the full 10M run writes (a
//!   batch of 50 000 spans 3.6 hours: one day index per tenant). A fixed 30 days at 1M made
//!   each batch span 1.5 days, about twice the (tenant, day) segments per commit, which is
//!   a backfill, not a live stream;
//! - `PERIMETER_BENCH_QUERIES` (default 100): searches per query kind;
//! - `PERIMETER_BENCH_WRITER_THREADS`, `PERIMETER_BENCH_WRITER_MEMORY_BYTES`: override the
//!   store's `index_writer_threads` / `index_writer_memory_bytes` (default: the config defaults);
//! - `PERIMETER_BENCH_RAW_TEXT_SEARCH_OFF` (e.g. `okta,github,google_workspace`, the bench's
//!   sources): the store's `raw_text_search_off`, to measure ingest without raw free text;
//! - `RUST_LOG` (e.g. `perimeter_store=debug`): log the store's per-batch timing breakdown;
//! - `PERIMETER_BENCH_REINDEX=1`: last, rebuild every event index from the Parquet files
//!   (`Store::reindex`, what `perimeter reindex --all` runs): events/s and CPU per event;
//! - `PERIMETER_BENCH_DIR`: store directory (default: a temp dir, removed at the end);
//!   if it already holds a store with events, ingest is skipped and only queries run.
//!
//! Last, the Parquet files the batches wrote are merged (`Store::compact`, which `perimeter run`
//! does every 10 minutes): rows per second and CPU per row (set `PERIMETER_BENCH_BATCH` small,
//! e.g. 1000, to get the many small files a live stream writes).
//!
//! Events are shaped on the recorded Okta, GitHub and Google Workspace fixture pages, with
//! masked-looking user names, varied actions, IPs and times. Generating them is not timed.

mod cputime;
mod rng;
use rng::Rng;

// The same allocator, tuned the same way, as the `perimeter` binary (src/alloc.rs), so the
// numbers are the binary's. With the system allocator every new tantivy segment writer's arenas
// come back as freshly mapped, zeroed pages (page faults on the indexing threads) and the doc
// building churns malloc/free.
#[path = "../src/alloc.rs"]
mod alloc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use perimeter_model::{Ecs, Event, Outcome, RawRecord};
use perimeter_store::{
    EventHistogramQuery, EventQuery, Store, StoreBatch, StoreConfig, TopValuesQuery,
};
use serde_json::{json, Value};

/// Builds one random query of a kind.
type QueryMaker = Box<dyn Fn(&mut Rng) -> EventQuery>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A recorded vendor page from `../shared/fixtures/saas-api-pages` (beside the repo, like
/// `benches/common`). Missing fixtures stop the bench: without them the events would shrink
/// to a fraction of their real size and the numbers would mean nothing.
fn fixture(path: &str) -> Vec<Value> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/saas-api-pages")
        .join(path);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("fixture {} not readable: {e}", p.display()));
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", p.display()));
    let items = match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    assert!(!items.is_empty(), "fixture {} has no records", p.display());
    items
}

struct Templates {
    okta: Vec<Value>,
    github: Vec<Value>,
    gsuite: Vec<Value>,
}

const OKTA_ACTIONS: &[&str] = &[
    "user.session.start",
    "user.session.end",
    "user.authentication.sso",
    "user.authentication.auth_via_mfa",
    "user.account.lock",
    "app.oauth2.as.authorize.code",
    "policy.evaluate_sign_on",
    "user.mfa.factor.deactivate",
];
const GITHUB_ACTIONS: &[&str] = &[
    "repo.create",
    "repo.access",
    "org.add_member",
    "workflows.prepared_workflow_job",
    "git.clone",
    "protected_branch.destroy",
];
const GSUITE_ACTIONS: &[&str] = &[
    "login_success",
    "login_failure",
    "ADD_GROUP_MEMBER",
    "CHANGE_PASSWORD",
    "download",
];

fn make_event(t: &Templates, rng: &mut Rng, i: u64, at: DateTime<Utc>) -> Event {
    let tenant = match rng.below(10) {
        0..=6 => "acme",
        7..=8 => "globex",
        _ => "initech",
    };
    let user_n = rng.below(5000);
    let user = format!("user{user_n}@{tenant}.example");
    let ip = format!("10.{}.{}.{}", rng.below(4), rng.below(256), rng.below(256));
    let fail = rng.below(10) == 0;
    let (source, action, mut raw) = match rng.below(10) {
        0..=5 => {
            let action = OKTA_ACTIONS[rng.below(OKTA_ACTIONS.len() as u64) as usize];
            let mut raw = t.okta.first().cloned().unwrap_or_else(|| json!({}));
            // Okta's uuid is a UUID (a time-based one in the recorded pages).
            raw["uuid"] = json!(format!(
                "{:08x}-{:04x}-11ef-{:04x}-{:012x}",
                i.wrapping_mul(0x9e37_79b9) as u32,
                (i >> 32) as u16,
                0x8000 | (i % 0x4000) as u16,
                i.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 16
            ));
            raw["published"] = json!(at.to_rfc3339());
            raw["eventType"] = json!(action);
            raw["actor"] = json!({"id": format!("00u{user_n:08}"), "type": "User", "alternateId": user, "displayName": format!("User {user_n}")});
            raw["outcome"] = json!({"result": if fail { "FAILURE" } else { "SUCCESS" }, "reason": if fail { json!("INVALID_CREDENTIALS") } else { Value::Null }});
            raw["client"]["ipAddress"] = json!(ip);
            ("okta", action, raw)
        }
        6..=8 => {
            let action = GITHUB_ACTIONS[rng.below(GITHUB_ACTIONS.len() as u64) as usize];
            let mut raw = t
                .github
                .get(i as usize % t.github.len().max(1))
                .cloned()
                .unwrap_or_else(|| json!({}));
            raw["_document_id"] = json!(format!("gh-{i:012}"));
            raw["@timestamp"] = json!(at.timestamp_millis());
            raw["action"] = json!(action);
            raw["actor"] = json!(format!("user{user_n}"));
            raw["actor_ip"] = json!(ip);
            raw["repo"] = json!(format!("{tenant}/repo-{}", rng.below(300)));
            ("github", action, raw)
        }
        _ => {
            let action = GSUITE_ACTIONS[rng.below(GSUITE_ACTIONS.len() as u64) as usize];
            let mut raw = t.gsuite.first().cloned().unwrap_or_else(|| json!({}));
            raw["id"] = json!({"time": at.to_rfc3339(), "uniqueQualifier": format!("{i}"), "applicationName": "login"});
            raw["actor"] =
                json!({"callerType": "USER", "email": user, "profileId": format!("{user_n:021}")});
            raw["ipAddress"] = json!(ip);
            raw["events"] = json!([{"type": "login", "name": action}]);
            ("google_workspace", action, raw)
        }
    };
    // What a masker leaves of a secret-looking value.
    raw["debugContext"] = json!({"token": "[MASKED]"});
    let mut ecs = Ecs {
        timestamp: Some(at),
        event_action: Some(action.to_string()),
        event_outcome: if fail {
            Outcome::Failure
        } else {
            Outcome::Success
        },
        event_category: vec!["authentication".into()],
        user_name: Some(user.clone()),
        user_email: Some(user),
        user_id: Some(format!("00u{user_n:08}")),
        source_ip: Some(ip),
        user_agent_original: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/118.0".into()),
        ..Default::default()
    };
    ecs.fill_related();
    let record = RawRecord {
        source: source.into(),
        tenant: tenant.into(),
        received_at: at,
        line: Some(i),
        raw: perimeter_model::raw_from_serde(&raw),
    };
    Event::new(source, record, ecs)
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            total += dir_size(&path);
        } else {
            total += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total
}

/// CPU time (user + system) of this process so far, all threads: tantivy's indexing and
/// merge threads included. Unlike wall time it does not depend on what else the shared box
/// runs, so CPU per event is the number to compare variants by.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    alloc::tune();
    // `cargo bench` passes `--bench`; ignore all arguments.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let n = env_usize("PERIMETER_BENCH_EVENTS", 1_000_000);
    let batch_size = env_usize("PERIMETER_BENCH_BATCH", 50_000).max(1);
    let days = env_usize("PERIMETER_BENCH_DAYS", n / 333_333).max(1);
    let queries = env_usize("PERIMETER_BENCH_QUERIES", 100).max(1);
    let tmp;
    let dir: PathBuf = match std::env::var("PERIMETER_BENCH_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            tmp = tempfile::tempdir().expect("temp dir");
            tmp.path().to_path_buf()
        }
    };
    let defaults = StoreConfig::at(&dir);
    let config = StoreConfig {
        retention_days: 0,
        index_writer_threads: env_usize(
            "PERIMETER_BENCH_WRITER_THREADS",
            defaults.index_writer_threads,
        ),
        index_writer_memory_bytes: env_usize(
            "PERIMETER_BENCH_WRITER_MEMORY_BYTES",
            defaults.index_writer_memory_bytes,
        ),
        raw_text_search_off: std::env::var("PERIMETER_BENCH_RAW_TEXT_SEARCH_OFF")
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        // The compaction at the end merges the files just written.
        parquet_max_file_age_seconds: 0,
        ..defaults
    };
    println!(
        "store bench: events={n} batch={batch_size} days={days} writer_threads={} writer_memory={} MB raw_text_search_off={:?} dir={}",
        config.index_writer_threads,
        config.index_writer_memory_bytes >> 20,
        config.raw_text_search_off,
        dir.display()
    );
    let store = Store::open(config).expect("open store");
    let templates = Templates {
        okta: fixture("okta/system_log/001.json"),
        github: [
            fixture("github/audit/001.json"),
            fixture("github/audit/002.json"),
        ]
        .concat(),
        gsuite: fixture("gsuite/activities/001.json"),
    };
    let start = Utc
        .with_ymd_and_hms(2026, 10, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    let span_micros = days as i64 * 86_400_000_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    if store.stats().events_stored == 0 {
        let mut ingest = Duration::ZERO;
        let mut cpu = Duration::ZERO;
        let mut written = 0usize;
        let mut raw_bytes = 0usize;
        let mut i = 0u64;
        let mut batch_times = Vec::new();
        while (i as usize) < n {
            let m = batch_size.min(n - i as usize);
            let events: Vec<Event> = (0..m as u64)
                .map(|k| {
                    let at = start
                        + chrono::Duration::microseconds(span_micros / n as i64 * (i + k) as i64);
                    make_event(&templates, &mut rng, i + k, at)
                })
                .collect();
            raw_bytes += events
                .iter()
                .map(|e| e.raw.to_string().len())
                .sum::<usize>();
            let batch = StoreBatch {
                events,
                ..Default::default()
            };
            let t0 = Instant::now();
            let c0 = process_cpu();
            let ack = store.write_batch(&batch).expect("write batch");
            let dt = t0.elapsed();
            cpu += process_cpu().saturating_sub(c0);
            ingest += dt;
            batch_times.push(dt);
            written += ack.events_written;
            i += m as u64;
            if (i as usize / batch_size).is_multiple_of(25) {
                println!(
                    "  .. {i} events, {:.0} events/s so far",
                    written as f64 / ingest.as_secs_f64()
                );
            }
        }
        batch_times.sort();
        println!(
            "ingest: {written} events in {:.1} s = {:.0} events/s into tantivy + Parquet (durable ack per batch); \
             batch latency p50 {:.0} ms p99 {:.0} ms; avg raw event {} bytes",
            ingest.as_secs_f64(),
            written as f64 / ingest.as_secs_f64(),
            pct(&batch_times, 0.5),
            pct(&batch_times, 0.99),
            raw_bytes / written.max(1)
        );
        println!(
            "ingest CPU: {:.1} us per event (all threads, during write_batch) = at most {:.0} events/s per core; load average {}",
            cpu.as_secs_f64() * 1e6 / written.max(1) as f64,
            written as f64 / cpu.as_secs_f64().max(1e-9),
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
        );
        let t0 = Instant::now();
        store.flush().expect("flush");
        println!(
            "flush (wait for merges): {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let stats = store.stats();
    println!(
        "store: {} events, {} day indexes; disk: index {:.0} MB, parquet {:.0} MB",
        stats.events_stored,
        stats.index_days,
        dir_size(&dir.join("index")) as f64 / 1e6,
        dir_size(&dir.join("parquet")) as f64 / 1e6
    );

    // Query latency, tenant `acme` (70% of the events), limit 50.
    let mut all = Vec::new();
    let kinds: Vec<(&str, QueryMaker)> = vec![
        (
            "user term",
            Box::new(|r: &mut Rng| q(&format!("user.name:user{}", r.below(5000)), None)),
        ),
        (
            "action AND outcome",
            Box::new(|_| {
                q(
                    "event.action:user.session.start AND event.outcome:failure",
                    None,
                )
            }),
        ),
        (
            "free text ip",
            Box::new(|r: &mut Rng| {
                q(
                    &format!("\"10.{}.{}.{}\"", r.below(4), r.below(256), r.below(256)),
                    None,
                )
            }),
        ),
        ("all, newest page", Box::new(|_| q("", None))),
        (
            "all, oldest page",
            Box::new(|_| EventQuery {
                sort: perimeter_store::EventSort::Oldest,
                ..q("", None)
            }),
        ),
        (
            "user wildcard",
            Box::new(|r: &mut Rng| q(&format!("user.name:user{}*", r.below(500)), None)),
        ),
        (
            // A typo (one letter missing) that one edit mends.
            "user fuzzy, 1 edit",
            Box::new(|r: &mut Rng| q(&format!("user.name:usr{}~1", r.below(5000)), None)),
        ),
        (
            "source.ip /24 block",
            Box::new(|r: &mut Rng| {
                q(
                    &format!("source.ip:10.{}.{}.0/24", r.below(4), r.below(256)),
                    None,
                )
            }),
        ),
        (
            "all, random 1h window",
            Box::new(move |r: &mut Rng| {
                let from =
                    start + chrono::Duration::seconds(r.below(days as u64 * 86_400 - 3600) as i64);
                q("*", Some((from, from + chrono::Duration::hours(1))))
            }),
        ),
        (
            "user AND action, 7 days",
            Box::new(move |r: &mut Rng| {
                let from = start
                    + chrono::Duration::days(r.below(days.saturating_sub(7).max(1) as u64) as i64);
                q(
                    &format!("user.name:user{} AND event.module:okta", r.below(5000)),
                    Some((from, from + chrono::Duration::days(7))),
                )
            }),
        ),
    ];
    println!("queries (tenant acme, limit 50, {queries} per kind):");
    for (name, make) in &kinds {
        let mut times = Vec::with_capacity(queries);
        let mut hits = 0;
        for _ in 0..queries {
            let query = make(&mut rng);
            let t0 = Instant::now();
            let page = store.search_events("acme", &query).expect("search");
            // Second page through the cursor, as a UI would.
            if let Some(c) = page.next_cursor.clone() {
                let _ = store
                    .search_events(
                        "acme",
                        &EventQuery {
                            cursor: Some(c),
                            ..query.clone()
                        },
                    )
                    .expect("page 2");
            }
            times.push(t0.elapsed());
            hits += page.items.len();
        }
        times.sort();
        println!(
            "  {name:<24} p50 {:>7.2} ms  p99 {:>7.2} ms  (avg {:.1} hits on page 1; time includes page 2)",
            pct(&times, 0.5),
            pct(&times, 0.99),
            hits as f64 / queries as f64
        );
        all.extend(times);
    }
    all.sort();
    println!(
        "search overall: p50 {:.2} ms, p99 {:.2} ms over {} searches",
        pct(&all, 0.5),
        pct(&all, 0.99),
        all.len()
    );

    // Histograms (`GET /events/histogram`): every matching event's time is read, so the cost
    // grows with the matches, not the page size. Not part of the search figures above.
    type HistogramMaker = Box<dyn Fn(&mut Rng) -> EventHistogramQuery>;
    let histograms: Vec<(&str, HistogramMaker)> = vec![
        (
            "all events, auto interval",
            Box::new(|_| EventHistogramQuery {
                query: "*".into(),
                ..Default::default()
            }),
        ),
        (
            "failures, 1h buckets",
            Box::new(|_| EventHistogramQuery {
                query: "event.outcome:failure".into(),
                interval_seconds: Some(3_600),
                ..Default::default()
            }),
        ),
        (
            "one user, 7 days, 1h",
            Box::new(move |r: &mut Rng| {
                let from = start
                    + chrono::Duration::days(r.below(days.saturating_sub(7).max(1) as u64) as i64);
                EventHistogramQuery {
                    query: format!("user.name:user{}", r.below(5000)),
                    from: Some(from),
                    to: Some(from + chrono::Duration::days(7)),
                    interval_seconds: Some(3_600),
                }
            }),
        ),
    ];
    println!("histograms (tenant acme, {queries} per kind):");
    for (name, make) in &histograms {
        let mut times = Vec::with_capacity(queries);
        let mut counted = 0;
        for _ in 0..queries {
            let query = make(&mut rng);
            let t0 = Instant::now();
            let h = store.event_histogram("acme", &query).expect("histogram");
            times.push(t0.elapsed());
            counted += h.total;
        }
        times.sort();
        println!(
            "  {name:<26} p50 {:>7.2} ms  p99 {:>7.2} ms  (avg {:.0} events counted)",
            pct(&times, 0.5),
            pct(&times, 0.99),
            counted as f64 / queries as f64
        );
    }

    // Top values (`GET /events/top`): a field indexed whole is counted in the index over every
    // match (the cost is the field's postings); a word field reads the newest `sample` stored
    // events (the cost is the sample).
    let tops: Vec<(&str, TopValuesQuery)> = vec![
        (
            "event.action, all events",
            TopValuesQuery {
                query: "*".into(),
                field: "event.action".into(),
                ..Default::default()
            },
        ),
        (
            "source.ip, failures",
            TopValuesQuery {
                query: "event.outcome:failure".into(),
                field: "source.ip".into(),
                ..Default::default()
            },
        ),
        (
            "user.name, failures (10k)",
            TopValuesQuery {
                query: "event.outcome:failure".into(),
                field: "user.name".into(),
                ..Default::default()
            },
        ),
    ];
    println!(
        "top values (tenant acme, {} per kind):",
        queries.clamp(1, 20)
    );
    for (name, query) in &tops {
        let mut times = Vec::new();
        let mut top = None;
        for _ in 0..queries.clamp(1, 20) {
            let t0 = Instant::now();
            top = Some(store.top_values("acme", query).expect("top values"));
            times.push(t0.elapsed());
        }
        times.sort();
        let top = top.expect("one run");
        println!(
            "  {name:<26} p50 {:>7.2} ms  p99 {:>7.2} ms  ({} of {} events counted, {} values)",
            pct(&times, 0.5),
            pct(&times, 0.99),
            top.counted,
            top.total,
            top.values.len()
        );
    }

    // `GET /sources`: each source's newest event and 24-hour count (reads the newest day
    // index's `event.module` postings and time column).
    let mut times = Vec::new();
    let mut listed = 0;
    for _ in 0..queries.clamp(1, 20) {
        let t0 = Instant::now();
        listed = store
            .source_activity("acme", Utc::now())
            .expect("sources")
            .len();
        times.push(t0.elapsed());
    }
    times.sort();
    println!(
        "source activity ({listed} sources): p50 {:.2} ms  p99 {:.2} ms",
        pct(&times, 0.5),
        pct(&times, 0.99)
    );

    // Parquet compaction, as `perimeter run` runs it beside ingest.
    let (t0, cpu0) = (Instant::now(), cputime::thread_cpu_seconds());
    let report = store.compact().expect("compact");
    let (wall, cpu) = (
        t0.elapsed().as_secs_f64(),
        cputime::thread_cpu_seconds() - cpu0,
    );
    println!(
        "parquet compaction: {} files into {} in {} partitions, {} rows in {wall:.2} s ({:.0} rows/s; {:.1} us CPU per row)",
        report.files_merged,
        report.files_written,
        report.partitions_compacted,
        report.rows,
        report.rows as f64 / wall.max(1e-9),
        cpu * 1e6 / (report.rows.max(1) as f64)
    );

    if std::env::var_os("PERIMETER_BENCH_REINDEX").is_some() {
        let config = store.config().clone();
        drop(store);
        reindex_all(config);
    }
}

/// `PERIMETER_BENCH_REINDEX=1`: rebuild every event index from the Parquet files
/// (`perimeter reindex --all`), after compaction, as after an upgrade or a lost index disk.
fn reindex_all(config: StoreConfig) {
    let (t0, c0) = (Instant::now(), process_cpu());
    let report = Store::reindex(
        config,
        &perimeter_store::ReindexOptions {
            all: true,
            ..Default::default()
        },
        // The bench's events have plausible times: none was adjusted.
        &|_, _| None,
        &mut |_| {},
    )
    .expect("reindex");
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), process_cpu() - c0);
    let events = report.events();
    println!(
        "reindex from Parquet: {} indexes, {events} events in {wall:.1} s = {:.0} events/s; {:.1} us CPU per event (all threads)",
        report.rebuilt.len(),
        events as f64 / wall.max(1e-9),
        cpu.as_secs_f64() * 1e6 / events.max(1) as f64
    );
}

fn q(query: &str, range: Option<(DateTime<Utc>, DateTime<Utc>)>) -> EventQuery {
    EventQuery {
        query: query.to_string(),
        from: range.map(|r| r.0),
        to: range.map(|r| r.1),
        limit: 50,
        ..Default::default()
    }
}
