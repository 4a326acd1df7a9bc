//! The Parquet files read by the tools analysts use on them, pyarrow, DuckDB and Spark
//! (`parquet_readers.py`), must hold exactly what Perimeter stored: every event once, its
//! decoded hive partition values, its times to the microsecond. Files a writer has not finished
//! (a batch or a merge cut off by a crash) and files a repair set aside must stay invisible to
//! them.
//!
//! The readers run in Python: `PERIMETER_PARQUET_PYTHON` names an interpreter with `pyarrow`,
//! `duckdb` and `pyspark` (and Spark needs `java`), else `python3` is used when it has all three
//! (`.ci/run` installs them).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::process::Command;
use std::sync::OnceLock;

use chrono::{DateTime, TimeZone, Utc};
use perimeter_model::{Ecs, Event, Outcome, RawRecord};
use perimeter_store::{Store, StoreBatch, StoreConfig};
use serde_json::{json, Value};

use crate::util::{json_lines, perimeter, repo, serving_demo, stderr};

/// The readers `parquet_readers.py` runs, as its output names them.
const READERS: [&str; 3] = ["pyarrow", "duckdb", "spark"];

/// An interpreter that imports all the readers, checked once per test run (each check starts a
/// JVM or a Python).
fn readers_python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(find_readers_python)
}

fn find_readers_python() -> String {
    let has_java = Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_java,
        "the Parquet reader tests run Spark, which needs a Java runtime (17 or later) on the \
         PATH: `apt-get install default-jre-headless` (or run `bash .ci/run`, which installs it)"
    );
    if let Ok(python) = std::env::var("PERIMETER_PARQUET_PYTHON") {
        return python;
    }
    let has_all = Command::new("python3")
        .args(["-c", "import pyarrow, duckdb, pyspark"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_all,
        "the Parquet reader tests need pyarrow, DuckDB and Spark: `pip install pyarrow duckdb \
         pyspark` and a Java runtime (or run `bash .ci/run`, which installs them), or set \
         PERIMETER_PARQUET_PYTHON to a python3 that has them"
    );
    "python3".into()
}

/// What pyarrow, DuckDB and Spark read from a data directory (or, with `--export`, one
/// exported file), once it is checked that all of them read the same rows. Returns (event
/// rows, alert rows); their layout is in `parquet_readers.py`.
fn read_with_all(args: &[&OsStr]) -> (Vec<Value>, Vec<Value>) {
    let out = Command::new(readers_python())
        .arg(repo().join("tests/parquet_readers.py"))
        .args(args)
        .output()
        .expect("running the Parquet readers");
    assert!(
        out.status.success(),
        "a Parquet reader failed on {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the readers print JSON");
    let rows = |what: &str| {
        let read = |reader: &str| {
            seen[what][reader]
                .as_array()
                .unwrap_or_else(|| panic!("{reader}'s {what}"))
                .clone()
        };
        let first = read(READERS[0]);
        for other in &READERS[1..] {
            assert_eq!(
                first,
                read(other),
                "{} {} and {other} {} read other {what}",
                READERS[0],
                seen[format!("{}_version", READERS[0])],
                seen[format!("{other}_version")]
            );
        }
        first
    };
    (rows("events"), rows("alerts"))
}

fn micros(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_micros()
}

#[test]
fn the_demo_reads_the_same_in_pyarrow_duckdb_and_spark_as_in_perimeter_and_its_export() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let d = data.to_str().unwrap();
    let (_demo, url, token) = serving_demo(&data, dir.path());

    let search = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "*",
            "--format",
            "json",
            "--limit",
            "100000",
        ],
        None,
    );
    assert!(search.status.success(), "{}", stderr(&search));
    let stored: BTreeMap<String, Value> = json_lines(&search)
        .into_iter()
        .map(|e| (e["event"]["id"].as_str().unwrap().to_string(), e))
        .collect();
    assert!(stored.len() > 2000, "{} events stored", stored.len());

    let (events, alerts) = read_with_all(&[data.as_os_str()]);
    assert_eq!(events.len(), stored.len(), "every event once, no more");
    for row in &events {
        let id = row[3].as_str().unwrap();
        let e = stored
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not stored"));
        let at = e["@timestamp"].as_str().unwrap();
        assert_eq!(row[0], "demo");
        assert_eq!(row[1], e["perimeter"]["source"], "{id}");
        assert_eq!(row[2].as_str(), Some(&at[..10]), "{id}: day partition");
        assert_eq!(row[4].as_i64(), Some(micros(at)), "{id}: @timestamp");
        assert_eq!(row[5], e["perimeter"]["line"], "{id}: input line");
        assert_eq!(row[9], true, "{id}: raw is a JSON object");
    }
    let sources: BTreeSet<_> = events.iter().map(|r| r[1].as_str().unwrap()).collect();
    assert!(sources.len() >= 7, "{sources:?}");

    let listed = perimeter(
        &[
            "alerts",
            "--data-dir",
            d,
            "--format",
            "json",
            "--limit",
            "1000",
        ],
        None,
    );
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed: BTreeMap<String, Value> = json_lines(&listed)
        .into_iter()
        .map(|a| (a["alert"]["id"].as_str().unwrap().to_string(), a))
        .collect();
    assert!(!listed.is_empty());
    let exported: BTreeMap<String, &Value> = alerts
        .iter()
        .map(|r| (r[2].as_str().unwrap().to_string(), r))
        .collect();
    assert_eq!(
        exported.keys().collect::<Vec<_>>(),
        listed.keys().collect::<Vec<_>>()
    );
    for (id, row) in exported {
        let a = &listed[&id]["alert"];
        assert_eq!(row[3], a["rule_id"], "{id}");
        assert_eq!(row[4], a["severity"], "{id}");
        assert_eq!(
            row[5].as_i64(),
            Some(micros(a["@timestamp"].as_str().unwrap()))
        );
        assert_eq!(row[6], a["event_ids"], "{id}");
    }

    // The API's Parquet export of everything: the same rows, `tenant` and `source` as columns.
    let export = reqwest::blocking::Client::new()
        .get(format!(
            "{url}/events/export?format=parquet&max_events=100000"
        ))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(export.status(), 200);
    assert_eq!(
        export.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    assert_eq!(
        export.headers()["x-perimeter-exported"],
        stored.len().to_string().as_str()
    );
    let file = dir.path().join("perimeter-events.parquet");
    std::fs::write(&file, export.bytes().unwrap()).unwrap();
    let (exported, _) = read_with_all(&[OsStr::new("--export"), file.as_os_str()]);
    assert_eq!(exported, events);

    // The same through `perimeter export` from the server, and from the data directory.
    let server = url.trim_end_matches("/api/v1");
    for (name, access) in [
        (
            "remote.parquet",
            ["--server", server, "--token", token.as_str()],
        ),
        ("local.parquet", ["--data-dir", d, "--tenant", "demo"]),
    ] {
        let file = dir.path().join(name);
        let f = file.to_str().unwrap();
        let mut args = vec!["export", "*", "--output", f, "--max-events", "100000"];
        args.extend(access);
        let out = perimeter(&args, None);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let said = format!("exported {n} events of the {n} matched", n = stored.len());
        assert!(stderr(&out).contains(&said), "{name}: {}", stderr(&out));
        let (exported, _) = read_with_all(&[OsStr::new("--export"), file.as_os_str()]);
        assert_eq!(exported, events, "{name}");
    }
}

fn login(tenant: &str, source: &str, at: DateTime<Utc>, n: u64) -> Event {
    let user = format!("user{}@example.com", n % 5);
    let raw = json!({"uuid": format!("{tenant}-{source}-{n}"), "actor": {"alternateId": user},
                     "eventType": "user.session.start", "published": at.to_rfc3339()});
    let mut ecs = Ecs {
        timestamp: Some(at),
        event_action: Some("user.session.start".into()),
        event_outcome: Outcome::Success,
        event_category: vec!["authentication".into(), "session".into()],
        user_name: Some(user),
        source_as_number: Some(64500 + n),
        ..Default::default()
    };
    ecs.fill_related();
    let record = RawRecord {
        source: source.into(),
        tenant: tenant.into(),
        received_at: at,
        line: Some(n),
        raw: perimeter_model::raw_from_serde(&raw),
    };
    Event::new(source, record, ecs)
}

/// The row `parquet_readers.py` prints for `e` (`raw` a JSON object).
fn expected_row(e: &Event) -> Value {
    let day = e.timestamp.format("%Y-%m-%d").to_string();
    json!([
        e.tenant,
        e.source,
        day,
        e.id().to_string(),
        e.timestamp.timestamp_micros(),
        e.line,
        e.ecs.source_as_number,
        e.ecs.event_category,
        e.ecs.user_name,
        true
    ])
}

#[test]
fn partition_values_and_unfinished_files_leave_the_readers_right() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        index_writer_threads: 1,
        index_writer_memory_bytes: 20_000_000,
        // Every file is old enough to merge at once.
        parquet_max_file_age_seconds: 0,
        ..StoreConfig::at(dir.path())
    };
    let store = Store::open(config).unwrap();
    // A tenant name with a path separator, a space, `%`, `=` and a non-ASCII letter: stored with
    // `%XX` for the ASCII ones in its directory names, which every reader must decode (Spark
    // decodes each `%XX` as one character, so the letter stays as it is).
    let tenants = ["acme", "acme/eu = ü%"];
    let at = |day: u32, n: u64| {
        Utc.with_ymd_and_hms(2026, 11, day, 9, 0, 0).unwrap()
            + chrono::Duration::milliseconds(n as i64 * 1_001)
    };
    let mut written = Vec::new();
    let mut n = 0;
    let mut write = |written: &mut Vec<Event>| {
        let mut events = Vec::new();
        for tenant in tenants {
            for source in ["okta", "github"] {
                for day in [23, 24] {
                    for _ in 0..3 {
                        n += 1;
                        events.push(login(tenant, source, at(day, n), n));
                    }
                }
            }
        }
        let ack = store
            .write_batch(&StoreBatch {
                events: events.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ack.events_written, events.len());
        written.extend(events);
    };
    // Three batches merged into one file per partition, and one more beside that file.
    for _ in 0..3 {
        write(&mut written);
    }
    let merged = store.compact().unwrap();
    assert!(merged.failed.is_empty(), "{:?}", merged.failed);
    assert_eq!(merged.files_merged, 3 * merged.partitions_compacted);
    assert_eq!(merged.partitions_compacted, 8);
    write(&mut written);
    drop(store);

    // What a crash, or a repair, leaves beside the finished files, named as the store names
    // them: a batch's file cut short, a merge's output cut short, a file set aside.
    let partition = dir
        .path()
        .join("parquet/events/tenant=acme%2Feu%20%3D%20ü%25/source=okta/dt=2026-11-24");
    let finished: Vec<_> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert_eq!(finished.len(), 2, "{finished:?}");
    let bytes = std::fs::read(&finished[0]).unwrap();
    for junk in [
        ".part-00000000000000000099-0000.parquet.tmp",
        ".compact-00000000000000000099-0000.parquet.tmp",
    ] {
        std::fs::write(partition.join(junk), &bytes[..bytes.len() / 2]).unwrap();
    }
    std::fs::write(
        partition.join(".part-00000000000000000042-0000.parquet.unreadable"),
        b"PAR1 not really",
    )
    .unwrap();

    let (rows, alerts) = read_with_all(&[dir.path().as_os_str()]);
    assert!(alerts.is_empty(), "{alerts:?}");
    let mut expected: Vec<Value> = written.iter().map(expected_row).collect();
    expected.sort_by_key(|v| v.to_string());
    let mut rows = rows;
    rows.sort_by_key(|v| v.to_string());
    assert_eq!(rows.len(), written.len());
    assert_eq!(rows, expected);
    let read_tenants: BTreeSet<_> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(read_tenants, tenants.into_iter().collect());
}
