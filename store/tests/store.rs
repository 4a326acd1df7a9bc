//! Integration tests of the store against real files: tantivy indexes and Parquet read back
//! with the arrow/parquet readers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use chrono::{DateTime, Duration, TimeZone, Utc};
use perimeter_model::{
    Alert, AlertStatus, DeadLetter, DetectorKind, Ecs, EntityKind, Event, Outcome, RawRecord,
    Severity,
};
use perimeter_store::parquet_sink::read_parquet_file;
use perimeter_store::{
    AlertQuery, AlertUpdate, DeadLetterQuery, EventQuery, EventSort, ReindexOptions,
    ReindexProgress, RetentionRule, Store, StoreBatch, StoreConfig, StoreError,
};
use serde_json::json;

fn ts(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, minute, 0)
        .unwrap()
}

fn event(tenant: &str, source: &str, at: DateTime<Utc>, user: &str, action: &str, n: u64) -> Event {
    let raw = json!({"uuid": format!("{tenant}-{source}-{n}-{}", at.timestamp()), "actor": {"alternateId": user},
                     "eventType": action, "published": at.to_rfc3339(), "client": {"ipAddress": "198.51.100.7"}});
    let mut ecs = Ecs {
        timestamp: Some(at),
        event_action: Some(action.to_string()),
        event_outcome: if n.is_multiple_of(2) {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        event_category: vec!["authentication".into()],
        user_name: Some(user.to_string()),
        source_ip: Some("198.51.100.7".into()),
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

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        index_writer_threads: 1,
        index_writer_memory_bytes: 20_000_000,
        // The alert Parquet files are read right after the batch that changed them.
        alert_parquet_export_seconds: 0,
        ..StoreConfig::at(dir)
    }
}

fn batch(events: Vec<Event>) -> StoreBatch {
    StoreBatch {
        events,
        ..Default::default()
    }
}

fn parquet_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                out.push(path);
            }
        }
    }
    walk(&root.join("parquet"), &mut out);
    out.sort();
    out
}

fn parquet_ids(root: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for f in parquet_files(root) {
        for b in read_parquet_file(&f).unwrap() {
            let col = b.column_by_name("event_id").unwrap().as_string::<i32>();
            ids.extend(col.iter().map(|v| v.unwrap().to_string()));
        }
    }
    ids
}

/// `query` on tenant `acme` is refused as the caller's invalid query (a 400, never a 500).
fn assert_invalid_query(store: &Store, query: &str) {
    let q = EventQuery {
        query: query.into(),
        limit: 10,
        ..Default::default()
    };
    assert!(
        matches!(
            store.search_events("acme", &q),
            Err(StoreError::InvalidQuery(_))
        ),
        "{query}"
    );
}

/// The string at `path` of every event of tenant `acme` that `query` finds, sorted.
fn sorted_values(store: &Store, query: &str, path: &[&str]) -> Vec<String> {
    let mut values: Vec<String> = search_all(store, "acme", query, 50)
        .iter()
        .map(|d| {
            path.iter()
                .fold(d, |v, k| &v[*k])
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    values.sort();
    values
}

fn search_all(store: &Store, tenant: &str, query: &str, limit: usize) -> Vec<serde_json::Value> {
    search_all_sorted(store, tenant, query, limit, EventSort::Newest)
}

fn search_all_sorted(
    store: &Store,
    tenant: &str,
    query: &str,
    limit: usize,
    sort: EventSort,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let q = EventQuery {
            query: query.into(),
            limit,
            cursor: cursor.clone(),
            sort,
            ..Default::default()
        };
        let page = store.search_events(tenant, &q).unwrap();
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn parquet_files_read_back_with_columns_rows_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let events = vec![
        event(
            "acme",
            "okta",
            ts(20, 10, 0),
            "alice@acme.test",
            "user.session.start",
            1,
        ),
        event(
            "acme",
            "okta",
            ts(20, 11, 0),
            "bob@acme.test",
            "user.session.start",
            2,
        ),
        event(
            "acme",
            "okta",
            ts(21, 9, 0),
            "alice@acme.test",
            "user.session.end",
            3,
        ),
        event("acme", "github", ts(20, 12, 0), "carol", "repo.create", 4),
        event(
            "globex",
            "okta",
            ts(20, 10, 0),
            "alice@globex.test",
            "user.session.start",
            5,
        ),
    ];
    let ack = store.write_batch(&batch(events.clone())).unwrap();
    assert_eq!(ack.events_written, 5);

    let root = dir.path();
    let part = |t: &str, s: &str, d: &str| {
        root.join(format!("parquet/events/tenant={t}/source={s}/dt={d}"))
    };
    let rows_in = |p: PathBuf| -> usize {
        std::fs::read_dir(&p)
            .unwrap()
            .flatten()
            .map(|e| {
                read_parquet_file(&e.path())
                    .unwrap()
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>()
            })
            .sum()
    };
    assert_eq!(rows_in(part("acme", "okta", "2026-11-20")), 2);
    assert_eq!(rows_in(part("acme", "okta", "2026-11-21")), 1);
    assert_eq!(rows_in(part("acme", "github", "2026-11-20")), 1);
    assert_eq!(rows_in(part("globex", "okta", "2026-11-20")), 1);
    assert_eq!(parquet_files(root).len(), 4);

    let file = std::fs::read_dir(part("acme", "okta", "2026-11-20"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("part-"));
    let batches = read_parquet_file(&file).unwrap();
    let b = &batches[0];
    let schema = b.schema();
    assert_eq!(
        schema.field_with_name("timestamp").unwrap().data_type(),
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()))
    );
    for col in [
        "event_id",
        "event_action",
        "event_outcome",
        "user_name",
        "source_ip",
        "raw",
        "related_user",
    ] {
        assert!(schema.field_with_name(col).is_ok(), "missing column {col}");
    }
    let ids = b.column_by_name("event_id").unwrap().as_string::<i32>();
    let users = b.column_by_name("user_name").unwrap().as_string::<i32>();
    let times = b
        .column_by_name("timestamp")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let raws = b.column_by_name("raw").unwrap().as_string::<i32>();
    let asn = b
        .column_by_name("source_as_number")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    let cats = b.column_by_name("event_category").unwrap().as_list::<i32>();
    for row in 0..b.num_rows() {
        let ev = events
            .iter()
            .find(|e| e.id().0 == ids.value(row))
            .expect("row is one of the written events");
        assert_eq!(users.value(row), ev.ecs.user_name.as_deref().unwrap());
        assert_eq!(times.value(row), ev.timestamp.timestamp_micros());
        let raw: serde_json::Value = serde_json::from_str(raws.value(row)).unwrap();
        assert_eq!(raw, perimeter_model::raw_to_serde(&ev.raw));
        assert_eq!(asn.value(row), ev.ecs.source_as_number.unwrap() as i64);
        assert_eq!(
            cats.value(row).as_string::<i32>().value(0),
            "authentication"
        );
    }
    assert!(b.column_by_name("line").unwrap().null_count() == 0);
    // No temporary files left behind.
    assert!(walk_names(root).iter().all(|n| !n.ends_with(".tmp")));
}

fn walk_names(p: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        out.push(path.to_string_lossy().to_string());
        if path.is_dir() {
            out.extend(walk_names(&path));
        }
    }
    out
}

#[test]
fn names_with_apostrophes_are_searchable() {
    // An apostrophe inside a word opened a single-quoted phrase: a syntax error for O'Brien.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let at = ts(18, 8, 0);
    store
        .write_batch(&batch(vec![
            event(
                "acme",
                "okta",
                at,
                "o'brien@acme.test",
                "user.session.start",
                1,
            ),
            event(
                "acme",
                "okta",
                at,
                "obrien@acme.test",
                "user.session.start",
                2,
            ),
        ]))
        .unwrap();
    for (query, expected) in [
        ("user.name:o'brien@acme.test", 1),
        ("o'brien", 1),
        ("user.name:o'bri*", 1),
        ("'o brien'", 1),
        ("obrien", 1),
    ] {
        assert_eq!(
            search_all(&store, "acme", query, 50).len(),
            expected,
            "{query}"
        );
    }
    let err = store
        .search_events(
            "acme",
            &EventQuery {
                query: "user.name:obrien@acme.test | stats count".into(),
                limit: 5,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("`|`"), "{err}");
}

#[test]
fn search_is_per_tenant_newest_first_paginated_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut events = Vec::new();
    for i in 0..30u64 {
        let at = ts(18 + (i % 3) as u32, 8, i as u32);
        let user = if i % 2 == 0 {
            "alice@acme.test"
        } else {
            "bob@acme.test"
        };
        events.push(event("acme", "okta", at, user, "user.session.start", i));
    }
    events.push(event(
        "acme",
        "okta",
        ts(19, 9, 0),
        "alice@acme.test",
        "user.account.lock",
        100,
    ));
    events.push(event(
        "globex",
        "okta",
        ts(19, 9, 0),
        "alice@globex.test",
        "user.session.start",
        200,
    ));
    store.write_batch(&batch(events.clone())).unwrap();

    // NOT as analysts write it (it used to find nothing: a group of only excluded terms).
    for (query, expected) in [
        ("user.name:alice AND NOT event.action:user.account.lock", 15),
        ("NOT event.action:user.account.lock AND user.name:alice", 15),
        ("NOT user.name:alice", 15),
        ("-user.name:bob", 16),
        (
            "event.action:user.account.lock OR NOT event.outcome:success",
            16,
        ),
        ("user.name:alice AND (NOT event.outcome:failure)", 16),
        // Wildcards: `*` a run of characters, `?` one (they used to be dropped or taken
        // literally).
        ("user.name:ali*", 16),
        ("user.name:b?b", 15),
        ("event.action:user.session.*", 30),
        ("event.action:USER.*.lock", 1),
        ("alic*", 16),
        ("*@acme.test", 31),
        ("event.action:user.session.* AND NOT user.name:al*", 15),
        // Across the words of a word field: each word, and the whole value (it found nothing).
        ("user.name:a*@acme.test", 16),
        ("user.name:?lice@acme.test", 16),
        ("user.name:alice@*.test", 16),
        (
            "user.name:alice@acme.t?st AND NOT event.action:user.account.lock",
            15,
        ),
        ("user.name:z*@acme.test", 0),
        // A trailing `*` only: a phrase prefix over the words, whatever separates them.
        ("user.name:alice.acme*", 16),
        ("user.name:alice-ac*", 16),
        // A wildcard with no word in it matches no word (it matched every event); one cut off
        // from its word by a dropped character stays with the word.
        ("user.name:🔥*", 0),
        ("user.name:.*", 0),
        ("user.name:*🔥*", 0),
        ("user.name:ali🔥*", 16),
        ("user.name:ali🔥* AND NOT user.name:bob", 16),
        // Wildcards alone are patterns (they were taken literally and matched nothing): on a
        // word field over one word, elsewhere over the whole term.
        ("user.name:?????", 16),
        ("user.name:???*", 31),
        ("user.name:??????*", 0),
        ("event.action:*?", 31),
        ("event.action:??", 0),
        ("event.action:?????????????????", 1),
        ("**", 31),
        // Has a value (tantivy answers `field:*` from fast fields only).
        ("user.name:*", 31),
        ("user.target.name:*", 0),
        // Fuzzy (they used to find nothing: `alcie~1` was searched as `alcie` and `1`).
        ("user.name:alcie~1", 16),
        ("user.name:ALIC~1", 16),
        ("user.name:alxcx~1", 0),
        ("user.name:alxcx~2", 16),
        ("user.name:bbo~", 15),
        ("event.action:user.account.lcok~1", 1),
        ("alicd~1", 16),
        ("alcie~1 AND NOT event.action:user.account.lock", 15),
        ("(alcie~1 OR bbo~1) AND event.action:user.session.start", 30),
        // Other languages' operators (`||` used to vanish: `a || b` meant `a AND b`).
        ("user.name:alice || user.name:bob", 31),
        ("user.name:alice && event.action:user.account.lock", 1),
        ("user.name:alice && !event.action:user.account.lock", 15),
    ] {
        assert_eq!(
            search_all(&store, "acme", query, 50).len(),
            expected,
            "{query}"
        );
    }

    // Oldest first, page by page: every event once, in time order, across the three days.
    let newest = search_all(&store, "acme", "*", 4);
    let oldest = search_all_sorted(&store, "acme", "*", 4, EventSort::Oldest);
    assert_eq!(oldest.len(), 31);
    let key = |d: &serde_json::Value| {
        (
            d["@timestamp"].as_str().unwrap().to_string(),
            d["event"]["id"].as_str().unwrap().to_string(),
        )
    };
    let mut reversed: Vec<_> = newest.iter().map(key).collect();
    reversed.reverse();
    let in_order: Vec<_> = oldest.iter().map(key).collect();
    assert!(
        in_order.windows(2).all(|w| w[0].0 <= w[1].0),
        "{in_order:?}"
    );
    let mut a = in_order.clone();
    let mut b = reversed.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same events both ways");
    let since_19 = EventQuery {
        query: "*".into(),
        from: Some(ts(19, 0, 0)),
        limit: 3,
        sort: EventSort::Oldest,
        ..Default::default()
    };
    let first = store.search_events("acme", &since_19).unwrap();
    assert!(first.items[0]["@timestamp"]
        .as_str()
        .unwrap()
        .starts_with("2026-11-19T08:"));
    // A cursor of one order is refused by the other.
    let wrong = EventQuery {
        cursor: first.next_cursor,
        limit: 3,
        ..Default::default()
    };
    assert!(matches!(
        store.search_events("acme", &wrong),
        Err(StoreError::InvalidQuery(_))
    ));

    let alice = search_all(
        &store,
        "acme",
        "event.action:user.session.start AND user.name:alice",
        4,
    );
    assert_eq!(alice.len(), 15);
    assert!(alice
        .iter()
        .all(|d| d["perimeter"]["tenant"] == "acme" && d["user"]["name"] == "alice@acme.test"));
    let times: Vec<String> = alice
        .iter()
        .map(|d| d["@timestamp"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    let ids: BTreeSet<&str> = alice
        .iter()
        .map(|d| d["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 15, "pagination returns each hit once");

    // Everything, across three day indexes, in pages of 7.
    assert_eq!(search_all(&store, "acme", "", 7).len(), 31);
    // Free text on the catch-all field, and keyword fields are case-insensitive.
    assert_eq!(search_all(&store, "acme", "lock", 10).len(), 1);
    assert_eq!(
        search_all(&store, "acme", "event.action:USER.ACCOUNT.LOCK", 10).len(),
        1
    );
    assert_eq!(
        search_all(&store, "acme", "event.outcome:failure", 100).len(),
        15
    );
    assert_eq!(
        search_all(&store, "acme", "source.as.number:64501", 100).len(),
        1
    );
    // Never another tenant's events.
    let globex = search_all(&store, "globex", "alice", 10);
    assert_eq!(globex.len(), 1);
    assert_eq!(globex[0]["perimeter"]["tenant"], "globex");
    assert!(search_all(&store, "acme", "globex", 10).is_empty());
    assert!(search_all(&store, "nobody", "", 10).is_empty());

    // from inclusive, to exclusive.
    let q = EventQuery {
        from: Some(ts(19, 0, 0)),
        to: Some(ts(20, 0, 0)),
        limit: 100,
        ..Default::default()
    };
    let day19 = store.search_events("acme", &q).unwrap().items;
    assert_eq!(day19.len(), 11);
    assert!(day19
        .iter()
        .all(|d| d["@timestamp"].as_str().unwrap().starts_with("2026-11-19")));
    let q = EventQuery {
        from: Some(ts(19, 8, 3)),
        to: Some(ts(19, 8, 9)),
        limit: 100,
        ..Default::default()
    };
    let minutes: Vec<String> = store
        .search_events("acme", &q)
        .unwrap()
        .items
        .iter()
        .map(|d| d["@timestamp"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        minutes,
        vec!["2026-11-19T08:07:00Z", "2026-11-19T08:04:00Z"]
    );

    // get_event by id, scoped to the tenant.
    let g = &events[31];
    let doc = store.get_event("globex", &g.id().0).unwrap().unwrap();
    assert_eq!(doc, g.to_output_json());
    assert_eq!(store.get_event("acme", &g.id().0).unwrap(), None);
    // The index term is the id's first 64 bits; an id differing only in the rest is not found.
    let mut near = g.id().0.clone();
    let last = if near.ends_with('0') { "1" } else { "0" };
    near.replace_range(31.., last);
    assert_eq!(store.get_event("globex", &near).unwrap(), None);
    assert_eq!(store.get_event("globex", "not-an-id").unwrap(), None);

    // Time ranges in the query syntax run on the timestamp column.
    assert_eq!(
        search_all(
            &store,
            "acme",
            "@timestamp:[2026-11-19T08:03:00Z TO 2026-11-19T08:09:00Z} AND user.name:bob",
            100
        )
        .len(),
        1
    );
    assert_eq!(
        search_all(
            &store,
            "acme",
            "@timestamp:[2026-11-19T00:00:00Z TO *]",
            100
        )
        .len(),
        21
    );
}

#[test]
fn indexes_of_an_older_schema_are_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let at = ts(20, 1, 0);
    {
        let store = Store::open(config(dir.path())).unwrap();
        store
            .write_batch(&batch(vec![event("acme", "okta", at, "a", "x", 1)]))
            .unwrap();
    }
    // What the previous version wrote: `event.id` as text, `@timestamp` indexed.
    let index_dir = dir.path().join("index/tenant=acme/dt=2026-11-20");
    let meta_path = index_dir.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    for field in meta["schema"].as_array_mut().unwrap() {
        if field["name"] == "@timestamp" {
            field["options"]["indexed"] = json!(true);
        }
    }
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    match Store::open(config(dir.path())) {
        Err(StoreError::Corrupt { path, reason }) => {
            assert_eq!(path, index_dir);
            assert!(reason.contains("schema differs"), "{reason}");
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("an index of another schema was opened"),
    }
}

#[test]
fn free_text_matches_whole_identifiers_their_words_and_phrase_words() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut a = event(
        "acme",
        "okta",
        ts(20, 1, 0),
        "alice@acme.test",
        "user.session.start",
        1,
    );
    let mut raw = perimeter_model::raw_to_serde(&a.raw);
    raw["client"]["userAgent"] = json!("Mozilla/5.0 (X11; Linux x86_64) Firefox/118.0");
    raw["client"]["ipAddress"] = json!("203.0.113.9");
    a.raw = perimeter_model::raw_from_serde(&raw);
    let b = event(
        "acme",
        "okta",
        ts(20, 2, 0),
        "bob@acme.test",
        "user.account.lock",
        2,
    );
    store
        .write_batch(&batch(vec![a.clone(), b.clone()]))
        .unwrap();
    let ids = |q: &str| -> Vec<String> {
        let mut v: Vec<String> = search_all(&store, "acme", q, 10)
            .iter()
            .map(|d| d["event"]["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let only_a = vec![a.id().0.clone()];
    let both = {
        let mut v = vec![a.id().0.clone(), b.id().0.clone()];
        v.sort();
        v
    };
    // Whole identifiers, bare or quoted, case-insensitive.
    assert_eq!(ids("\"203.0.113.9\""), only_a);
    assert_eq!(ids("203.0.113.9"), only_a);
    assert_eq!(ids("Alice@Acme.Test"), only_a);
    assert_eq!(ids("all:user.session.start"), only_a);
    // Their words.
    assert_eq!(ids("alice"), only_a);
    assert_eq!(ids("acme"), both);
    assert_eq!(ids("lock"), vec![b.id().0.clone()]);
    // An address's domain and local part match on their own (every event of a domain).
    assert_eq!(ids("acme.test"), both);
    assert_eq!(ids("\"acme.test\""), both);
    // Another part of an identifier that is not a word of it does not match.
    assert!(ids("session.start").is_empty());
    assert!(ids("203.0").is_empty());
    // A numeric identifier (IP, decimal, version, date) is indexed whole only: its numbers
    // are not words of it. Ids with letters keep their words, numbers included.
    assert!(ids("203").is_empty() && ids("113").is_empty());
    let uuid = raw["uuid"].as_str().unwrap().to_string();
    assert_eq!(ids(&format!("\"{uuid}\"")), only_a);
    assert_eq!(
        ids(&format!("\"{}\"", uuid.rsplit('-').next().unwrap())),
        only_a
    );
    // Raw date-times are not in `all` at all (search time with @timestamp ranges).
    let published = raw["published"].as_str().unwrap().to_string();
    assert!(published.starts_with("2026-11-20T01:00:00"), "{published}");
    assert!(ids(&format!("\"{published}\"")).is_empty());
    assert!(ids("2026").is_empty());
    // A multi-word phrase matches events holding every chunk, adjacent or not.
    assert_eq!(ids("\"Mozilla/5.0 (X11; Linux\""), only_a);
    assert_eq!(ids("\"firefox/118.0 x11\""), only_a);
    assert!(ids("\"Mozilla/5.0 windows\"").is_empty());
    // Phrases on word fields keep their positional meaning.
    assert_eq!(ids("user.name:\"alice acme\""), only_a);
    assert!(ids("user.name:\"acme alice\"").is_empty());
    // Ids, timestamps, tenant and line are not in `all`; the id has its own field.
    assert!(ids(&a.id().0).is_empty());
    assert_eq!(ids(&format!("event.id:{}", a.id().0)), only_a);
    assert_eq!(ids(&format!("event.id:\"{}\"", a.id().0)), only_a);
    assert_eq!(
        ids(&format!("event.id: IN [{} {}]", a.id().0, b.id().0)),
        both
    );
    assert!(ids("event.id:not-an-id").is_empty());
    // An id sharing only its first 64 bits with a stored one finds nothing.
    let half = format!(
        "{}{:016x}",
        &a.id().0[..16],
        u64::from_str_radix(&a.id().0[16..], 16).unwrap() ^ 1
    );
    assert!(ids(&format!("event.id:{half}")).is_empty());
    assert_eq!(
        ids(&format!("event.id: IN [{half} {}]", b.id().0)),
        ids(&format!("event.id:{}", b.id().0))
    );
    assert_eq!(ids(&format!("event.id:{} AND alice", a.id().0)), only_a);
}

#[test]
fn sources_with_raw_text_search_off_are_found_by_ecs_fields_only_and_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        raw_text_search_off: vec!["aws_cloudtrail".into()],
        ..config(dir.path())
    })
    .unwrap();
    // The same raw-only value (`uuid`, in no ECS field) in an event of each source.
    let mut okta = event(
        "acme",
        "okta",
        ts(20, 1, 0),
        "alice",
        "user.session.start",
        1,
    );
    let mut trail = event(
        "acme",
        "aws_cloudtrail",
        ts(20, 2, 0),
        "bob",
        "CreateAccessKey",
        2,
    );
    for e in [&mut okta, &mut trail] {
        let mut raw = perimeter_model::raw_to_serde(&e.raw);
        raw["requestRegion"] = json!("rawonly-region-7");
        e.raw = perimeter_model::raw_from_serde(&raw);
    }
    store
        .write_batch(&batch(vec![okta.clone(), trail.clone()]))
        .unwrap();
    let ids = |q: &str| -> Vec<String> {
        search_all(&store, "acme", q, 10)
            .iter()
            .map(|d| d["event"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    // A raw-only value: found in the okta event only.
    assert_eq!(ids("\"rawonly-region-7\""), vec![okta.id().0.clone()]);
    // ECS values of the CloudTrail event, as bare words and by field.
    assert_eq!(ids("createaccesskey"), vec![trail.id().0.clone()]);
    assert_eq!(ids("bob"), vec![trail.id().0.clone()]);
    assert_eq!(
        ids("event.action:CreateAccessKey"),
        vec![trail.id().0.clone()]
    );
    // The raw record is kept whole: returned by id and written to Parquet.
    let doc = store
        .get_event("acme", &trail.id().0)
        .unwrap()
        .expect("stored");
    assert_eq!(doc["raw"]["requestRegion"], "rawonly-region-7");
    let mut stored = parquet_ids(dir.path());
    stored.sort();
    let mut want = vec![okta.id().0.clone(), trail.id().0.clone()];
    want.sort();
    assert_eq!(stored, want);
}

#[test]
fn invalid_queries_and_cursors_are_invalid_query_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store
        .write_batch(&batch(vec![event(
            "acme",
            "okta",
            ts(20, 1, 0),
            "a",
            "x",
            1,
        )]))
        .unwrap();
    for bad in [
        "user.name:(alice",
        "nosuchfield:x",
        "\"unterminated",
        "@timestamp:[2026 TO",
        // Refused by tantivy at search time (not a fast field): still the caller's error.
        "source.as.number:*",
        "nosuchfield:*",
        // Fuzzy: too many edits, several words, with a wildcard, on an unknown field.
        "alice~3",
        "user.name:alice.doe~1",
        "ali*~1",
        "nosuchfield:x~1",
    ] {
        assert_invalid_query(&store, bad);
    }
    // Nesting thousands deep overflowed the stack of the thread parsing it (the service's
    // worker thread: the whole process aborted); now it is refused before parsing.
    for bad in [
        format!("{}alice", "NOT ".repeat(2_000)),
        format!("{}alice", "-".repeat(2_000)),
        format!("{}alice{}", "(".repeat(5_000), ")".repeat(5_000)),
    ] {
        assert_invalid_query(&store, &bad);
    }
    // A flat query with many exclusions is no nesting.
    let many_nots = (0..200)
        .map(|i| format!("NOT user.name:u{i}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let q = EventQuery {
        query: many_nots,
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.search_events("acme", &q).unwrap().items.len(), 1);
    // A vendor field name says how to search its value instead, and which fields exist.
    let q = EventQuery {
        query: "actor.alternateId:alice".into(),
        limit: 10,
        ..Default::default()
    };
    match store.search_events("acme", &q) {
        Err(StoreError::InvalidQuery(m)) => {
            assert!(
                m.contains("`actor.alternateId`") && m.contains("free text"),
                "{m}"
            );
            assert!(m.contains("user.name") && m.contains("source.ip"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // A range of ids says what the field takes, whatever the bounds look like.
    for query in [
        "event.id:[a TO b]",
        "event.id:>1",
        "event.id:[1 TO 2]",
        "_id_lo:>=0",
    ] {
        let q = EventQuery {
            query: query.into(),
            limit: 10,
            ..Default::default()
        };
        match store.search_events("acme", &q) {
            Err(StoreError::InvalidQuery(m)) => {
                assert!(
                    m.contains("not a range") && !m.contains("ParseIntError"),
                    "{query}: {m}"
                )
            }
            other => panic!("{query}: {other:?}"),
        }
    }
    let q = EventQuery {
        cursor: Some("nope".into()),
        limit: 10,
        ..Default::default()
    };
    assert!(matches!(
        store.search_events("acme", &q),
        Err(StoreError::InvalidQuery(_))
    ));
    let q = EventQuery {
        from: Some(ts(21, 0, 0)),
        to: Some(ts(20, 0, 0)),
        limit: 10,
        ..Default::default()
    };
    assert!(matches!(
        store.search_events("acme", &q),
        Err(StoreError::InvalidQuery(_))
    ));
    // A huge limit is clamped, not an error.
    let q = EventQuery {
        limit: usize::MAX,
        ..Default::default()
    };
    assert_eq!(store.search_events("acme", &q).unwrap().items.len(), 1);
}

#[test]
fn replayed_events_are_stored_once_also_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (0..50)
        .map(|i| {
            event(
                "acme",
                "okta",
                ts(20 + (i % 2) as u32, 3, (i % 60) as u32),
                "u",
                "a",
                i,
            )
        })
        .collect();
    {
        let store = Store::open(config(dir.path())).unwrap();
        let first = store.write_batch(&batch(events.clone())).unwrap();
        assert_eq!((first.events_written, first.events_duplicate), (50, 0));
        let again = store.write_batch(&batch(events.clone())).unwrap();
        assert_eq!((again.events_written, again.events_duplicate), (0, 50));
        // Duplicates inside one batch, mixed with new events.
        let mut mixed = events[..10].to_vec();
        let new = event("acme", "okta", ts(22, 0, 0), "u", "a", 999);
        mixed.push(new.clone());
        mixed.push(new.clone());
        let github = event("acme", "github", ts(22, 0, 1), "u", "a", 1000);
        mixed.push(github);
        let m = store.write_batch(&batch(mixed)).unwrap();
        assert_eq!((m.events_written, m.events_duplicate), (2, 11));
        // Per source, for the per-source "events out" metric: only what was new.
        assert_eq!(
            m.events_written_by_source,
            [("github".to_string(), 1), ("okta".to_string(), 1)].into()
        );
        assert!(again.events_written_by_source.is_empty());
        assert_eq!(store.stats().events_stored, 52);
        // The new event is stored with its own raw record, not a skipped duplicate's (the
        // batch's text is built before dedup and rebuilt for the fresh events).
        let raw = perimeter_model::raw_to_serde(&new.raw);
        let doc = store.get_event("acme", &new.id().0).unwrap().unwrap();
        assert_eq!(doc["raw"], raw);
        let mut parquet_raw = None;
        for f in parquet_files(dir.path()) {
            for b in read_parquet_file(&f).unwrap() {
                let ids = b.column_by_name("event_id").unwrap().as_string::<i32>();
                let raws = b.column_by_name("raw").unwrap().as_string::<i32>();
                for (id, r) in ids.iter().zip(raws.iter()) {
                    if id == Some(new.id().0.as_str()) {
                        parquet_raw =
                            r.map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap());
                    }
                }
            }
        }
        assert_eq!(parquet_raw, Some(raw));
    }
    let store = Store::open(config(dir.path())).unwrap();
    let after = store.write_batch(&batch(events.clone())).unwrap();
    assert_eq!((after.events_written, after.events_duplicate), (0, 50));
    assert_eq!(store.stats().events_stored, 52);
    assert_eq!(search_all(&store, "acme", "", 100).len(), 52);
    let ids = parquet_ids(dir.path());
    assert_eq!(ids.len(), 52);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 52);
}

/// The indexes serialize their segments while the Parquet files are written, but commit only
/// once the files are: a batch whose Parquet write fails leaves no event in the index (else a
/// replay would be taken for duplicates and never reach Parquet).
#[test]
fn a_failed_parquet_write_commits_nothing_and_the_replay_lands_in_both() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let stored = event("acme", "github", ts(20, 1, 0), "u", "a", 1);
    store.write_batch(&batch(vec![stored])).unwrap();
    let events: Vec<Event> = (0..20)
        .map(|i| event("acme", "okta", ts(20, 2, i as u32), "u", "a", i))
        .collect();
    // A file where the okta partition's directory must go.
    let blocker = dir.path().join("parquet/events/tenant=acme/source=okta");
    std::fs::write(&blocker, b"not a directory").unwrap();
    assert_eq!(store.write_failure(), None);
    assert!(store.write_batch(&batch(events.clone())).is_err());
    assert!(store.write_batch(&batch(events.clone())).is_err());
    assert_eq!(search_all(&store, "acme", "", 100).len(), 1);
    assert_eq!(parquet_ids(dir.path()).len(), 1);
    // The store says it is failing (what /readyz reports), counting the batches in a row.
    let failure = store
        .write_failure()
        .expect("the failing batches are noted");
    assert_eq!(failure.batches, 2);
    assert!(failure.error.contains("source=okta"), "{}", failure.error);
    // A batch wrong as given is the caller's fault, not the store's: it changes nothing.
    let mut no_tenant = event("acme", "okta", ts(20, 3, 0), "u", "a", 99);
    no_tenant.tenant.clear();
    assert!(store.write_batch(&batch(vec![no_tenant])).is_err());
    assert_eq!(store.write_failure().map(|f| f.batches), Some(2));

    std::fs::remove_file(&blocker).unwrap();
    let replay = store.write_batch(&batch(events.clone())).unwrap();
    assert_eq!((replay.events_written, replay.events_duplicate), (20, 0));
    assert_eq!(
        store.write_failure(),
        None,
        "a stored batch clears the failure"
    );
    assert_eq!(search_all(&store, "acme", "", 100).len(), 21);
    let ids = parquet_ids(dir.path());
    assert_eq!(ids.len(), 21);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 21);
    // Also across a reopen: the aborted batch left nothing behind to recover.
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(search_all(&store, "acme", "", 100).len(), 21);
    assert_eq!(parquet_ids(dir.path()).len(), 21);
}

/// An event dated in the year 2999 gets its receive time (ADR 012), so a resend after midnight
/// is filed under the next day: it must still be taken for the duplicate it is.
#[test]
fn a_resent_event_with_an_adjusted_time_is_stored_once_across_midnight() {
    let received = |day: u32, hour: u32, minute: u32| {
        let raw = json!({"uuid": "clock-off-1", "published": "2999-01-01T00:00:00Z",
                         "actor": {"alternateId": "u"}, "eventType": "user.session.start"});
        let ecs = Ecs {
            timestamp: Some(Utc.with_ymd_and_hms(2999, 1, 1, 0, 0, 0).unwrap()),
            event_action: Some("user.session.start".into()),
            ..Default::default()
        };
        let record = RawRecord {
            source: "okta".into(),
            tenant: "acme".into(),
            received_at: ts(day, hour, minute),
            line: Some(1),
            raw: perimeter_model::raw_from_serde(&raw),
        };
        Event::new("okta", record, ecs)
    };
    let dir = tempfile::tempdir().unwrap();
    let first = received(20, 23, 59);
    assert!(first.timestamp_adjusted);
    {
        let store = Store::open(config(dir.path())).unwrap();
        let ack = store.write_batch(&batch(vec![first.clone()])).unwrap();
        assert_eq!((ack.events_written, ack.events_duplicate), (1, 0));
    }
    // Resent after midnight, to a restarted store (the dedup set is loaded from disk), and once
    // more the day after.
    let store = Store::open(config(dir.path())).unwrap();
    for (day, hour) in [(21, 0), (22, 6)] {
        let resent = received(day, hour, 1);
        assert_eq!(resent.id(), first.id());
        assert_ne!(resent.timestamp.date_naive(), first.timestamp.date_naive());
        let ack = store.write_batch(&batch(vec![resent])).unwrap();
        assert_eq!(
            (ack.events_written, ack.events_duplicate),
            (0, 1),
            "day {day}"
        );
    }
    assert_eq!(search_all(&store, "acme", "", 10).len(), 1);
    assert_eq!(parquet_ids(dir.path()).len(), 1);
    // An event whose own time is kept is filed by that time: the look-back is only for
    // adjusted ones, and creates no index for the days it looks at.
    assert!(!dir.path().join("index/tenant=acme/dt=2026-11-19").exists());
}

/// ADR 012: an event whose vendor time could not be true is stored with the receive time and
/// `perimeter.timestamp_adjusted: true` in its document, as read back by id and in search hits
/// (the vendor's time stays in `raw`); an event with its own time has no such key.
#[test]
fn an_adjusted_event_says_so_in_its_stored_document() {
    let received = ts(20, 12, 0);
    let raw = json!({"uuid": "clock-off-2", "published": "2038-01-19T03:14:08Z",
                     "eventType": "user.session.start"});
    let ecs = Ecs {
        timestamp: Some(Utc.with_ymd_and_hms(2038, 1, 19, 3, 14, 8).unwrap()),
        event_action: Some("user.session.start".into()),
        ..Default::default()
    };
    let record = RawRecord {
        source: "okta".into(),
        tenant: "acme".into(),
        received_at: received,
        line: Some(1),
        raw: perimeter_model::raw_from_serde(&raw),
    };
    let adjusted = Event::new("okta", record, ecs);
    assert!(adjusted.timestamp_adjusted);
    let normal = event("acme", "okta", ts(20, 11, 0), "u", "user.session.start", 2);
    assert!(!normal.timestamp_adjusted);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store
        .write_batch(&batch(vec![adjusted.clone(), normal.clone()]))
        .unwrap();
    let by_id = |e: &Event| store.get_event("acme", &e.id().0).unwrap().unwrap();
    let doc = by_id(&adjusted);
    assert_eq!(doc["perimeter"]["timestamp_adjusted"], true, "{doc}");
    assert_eq!(doc["@timestamp"], "2026-11-20T12:00:00Z", "{doc}");
    assert_eq!(doc["raw"]["published"], "2038-01-19T03:14:08Z", "{doc}");
    assert_eq!(doc, adjusted.to_output_json());
    let doc = by_id(&normal);
    assert!(
        doc["perimeter"].get("timestamp_adjusted").is_none(),
        "{doc}"
    );
    let hits = search_all(&store, "acme", "", 10);
    let marks: Vec<_> = hits
        .iter()
        .map(|h| {
            (
                h["event"]["id"].as_str().unwrap().to_string(),
                h["perimeter"].get("timestamp_adjusted").cloned(),
            )
        })
        .collect();
    assert_eq!(
        marks,
        [
            (adjusted.id().0.clone(), Some(true.into())),
            (normal.id().0.clone(), None)
        ]
    );
    // Also after a reopen (what the service and `perimeter search` read).
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    let doc = store.get_event("acme", &adjusted.id().0).unwrap().unwrap();
    assert_eq!(doc["perimeter"]["timestamp_adjusted"], true, "{doc}");
}

/// One writer per data directory: a second one's recovery would delete the first one's
/// unfinished files. Readers (`perimeter search` beside a running service) take no lock and
/// touch nothing: an unfinished Parquet file, an index being created and a journal line being
/// written stay as they are.
#[test]
fn one_writer_per_data_directory_and_readers_beside_it_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(config(dir.path())).unwrap();
    let ev = event("acme", "okta", ts(20, 1, 0), "u", "a", 1);
    writer.write_batch(&batch(vec![ev.clone()])).unwrap();
    match Store::open(config(dir.path())) {
        Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("a second writer opened: {:?}", other.err()),
    }
    // What a writer has in flight.
    let part = parquet_files(dir.path())[0]
        .parent()
        .unwrap()
        .join(".part-99-0.parquet.tmp");
    std::fs::write(&part, b"half written").unwrap();
    let creating = dir.path().join("index/tenant=acme/dt=2026-11-21");
    std::fs::create_dir_all(&creating).unwrap();
    let journal = dir.path().join("alerts/tenant=acme/journal.jsonl");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    std::fs::write(&journal, b"{\"kind\":\"al").unwrap();

    let reader = Store::open_read_only(config(dir.path())).unwrap();
    assert_eq!(search_all(&reader, "acme", "", 10).len(), 1);
    assert!(reader.get_event("acme", &ev.id().0).unwrap().is_some());
    assert!(part.exists() && creating.exists());
    assert_eq!(std::fs::read(&journal).unwrap(), b"{\"kind\":\"al");
    assert!(matches!(
        reader.write_batch(&batch(vec![ev.clone()])),
        Err(StoreError::ReadOnly { .. })
    ));
    assert!(matches!(
        reader.apply_retention(Utc::now()),
        Err(StoreError::ReadOnly { .. })
    ));
    drop(reader);

    // Once the writer is gone, the next one opens (and recovers what it finds).
    drop(writer);
    let next = Store::open(config(dir.path())).unwrap();
    assert!(!part.exists() && !creating.exists());
    assert_eq!(search_all(&next, "acme", "", 10).len(), 1);
}

/// The ids of the tenant's alerts `q` lists (its first page).
fn alert_ids(store: &Store, tenant: &str, q: &AlertQuery) -> Vec<String> {
    store
        .list_alerts(tenant, q)
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.alert.id)
        .collect()
}

fn alert_for(tenant: &str, ev: &Event, sev: Severity, rule: &str) -> Alert {
    Alert::new(
        rule,
        format!("{rule} title"),
        sev,
        DetectorKind::Sigma,
        &ev.source,
        tenant,
        ev.timestamp,
        "alice",
        EntityKind::User,
    )
    .with_evidence(ev)
    .seal()
}

/// The rows of a tenant's alert file of 2026-11-`day`: (alert id, status, assignee, count).
fn alert_file_rows(
    root: &Path,
    tenant: &str,
    day: u32,
) -> Vec<(String, String, Option<String>, i64)> {
    let path = root.join(format!(
        "parquet/alerts/tenant={tenant}/dt=2026-11-{day:02}/alerts.parquet"
    ));
    let mut rows = Vec::new();
    for b in read_parquet_file(&path).unwrap() {
        let text = |name: &str| b.column_by_name(name).unwrap().as_string::<i32>().clone();
        let (ids, status, assignee) = (text("alert_id"), text("status"), text("assignee"));
        let count = b
            .column_by_name("count")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        for i in 0..b.num_rows() {
            rows.push((
                ids.value(i).to_string(),
                status.value(i).to_string(),
                (!assignee.is_null(i)).then(|| assignee.value(i).to_string()),
                count.value(i),
            ));
        }
    }
    rows
}

/// The alert files are rewritten whole, so they catch up at most every
/// `alert_parquet_export_seconds` while batches come, and at flush and close.
#[test]
fn alert_files_catch_up_with_the_journal_at_intervals_and_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir
        .path()
        .join("parquet/alerts/tenant=acme/dt=2026-11-20/alerts.parquet");
    let with_alert = |n: u64| {
        let e = event("acme", "okta", ts(20, 1, n as u32), "alice", "x", n);
        let a = alert_for("acme", &e, Severity::High, &format!("rule_{n}"));
        (
            StoreBatch {
                events: vec![e],
                alerts: vec![a.clone()],
                dead_letters: vec![],
            },
            a,
        )
    };
    let ids = || -> Vec<String> {
        alert_file_rows(dir.path(), "acme", 20)
            .into_iter()
            .map(|r| r.0)
            .collect()
    };
    let hourly = StoreConfig {
        alert_parquet_export_seconds: 3600,
        ..config(dir.path())
    };
    let store = Store::open(hourly.clone()).unwrap();
    let (b1, a1) = with_alert(1);
    store.write_batch(&b1).unwrap();
    assert!(!file.exists(), "not rewritten before the interval");
    store.export_due_alerts().unwrap();
    assert!(!file.exists(), "not due yet");
    // The API reads the journal: the alert is there at once.
    assert_eq!(
        store.get_alert("acme", &a1.id).unwrap().unwrap().alert.id,
        a1.id
    );
    store.flush().unwrap();
    assert_eq!(ids(), vec![a1.id.clone()]);
    let (b2, a2) = with_alert(2);
    store.write_batch(&b2).unwrap();
    assert_eq!(ids(), vec![a1.id.clone()]);
    // Triage follows the same interval.
    let resolve = AlertUpdate {
        status: Some(AlertStatus::Resolved),
        assignee: None,
        note: None,
    };
    store
        .update_alert("acme", &a1.id, &resolve, "bob@soc")
        .unwrap()
        .unwrap();
    let status_of_a1 = || alert_file_rows(dir.path(), "acme", 20)[0].1.clone();
    assert_eq!(status_of_a1(), "open");
    drop(store);
    assert_eq!(ids(), [a1.id.clone(), a2.id.clone()], "caught up at close");
    assert_eq!(status_of_a1(), "resolved");

    // With a short interval, a later batch (with no alert of its own) brings the file up to date.
    let store = Store::open(StoreConfig {
        alert_parquet_export_seconds: 1,
        ..hourly
    })
    .unwrap();
    let (b3, a3) = with_alert(3);
    store.write_batch(&b3).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let no_alert = event("acme", "okta", ts(20, 2, 0), "bob", "x", 9);
    store.write_batch(&batch(vec![no_alert])).unwrap();
    assert_eq!(ids(), [a1.id.clone(), a2.id.clone(), a3.id.clone()]);
}

#[test]
fn alerts_are_in_parquet_per_tenant_and_day_as_they_stand() {
    let dir = tempfile::tempdir().unwrap();
    let e1 = event(
        "acme",
        "okta",
        ts(20, 1, 0),
        "alice",
        "user.session.start",
        1,
    );
    let e2 = event(
        "acme",
        "okta",
        ts(20, 2, 0),
        "alice",
        "user.account.lock",
        2,
    );
    let e3 = event(
        "acme",
        "okta",
        ts(21, 2, 0),
        "alice",
        "user.account.lock",
        3,
    );
    let g = event("globex", "okta", ts(20, 1, 0), "alice", "x", 4);
    let a1 = alert_for("acme", &e1, Severity::High, "okta_login");
    let a2 = alert_for("acme", &e2, Severity::Low, "okta_lock");
    let a3 = alert_for("acme", &e3, Severity::Low, "okta_other");
    let ag = alert_for("globex", &g, Severity::Critical, "okta_login");
    let store = Store::open(config(dir.path())).unwrap();
    let b = StoreBatch {
        events: vec![e1, e2, e3, g],
        alerts: vec![a1.clone(), a2.clone(), a3.clone(), ag.clone()],
        dead_letters: vec![],
    };
    store.write_batch(&b).unwrap();
    let open = |a: &Alert| (a.id.clone(), "open".to_string(), None, 1);
    assert_eq!(
        alert_file_rows(dir.path(), "acme", 20),
        [open(&a1), open(&a2)]
    );
    assert_eq!(alert_file_rows(dir.path(), "acme", 21), [open(&a3)]);
    assert_eq!(alert_file_rows(dir.path(), "globex", 20), [open(&ag)]);
    // Triage shows in the file before the change returns.
    let up = AlertUpdate {
        status: Some(AlertStatus::FalsePositive),
        assignee: Some("bob".into()),
        note: None,
    };
    store
        .update_alert("acme", &a1.id, &up, "bob@soc")
        .unwrap()
        .unwrap();
    let triaged = (
        a1.id.clone(),
        "false_positive".to_string(),
        Some("bob".to_string()),
        1,
    );
    assert_eq!(
        alert_file_rows(dir.path(), "acme", 20),
        [triaged.clone(), open(&a2)]
    );
    // Columns a reader relies on, by name and type.
    let path = dir
        .path()
        .join("parquet/alerts/tenant=acme/dt=2026-11-20/alerts.parquet");
    let batch = &read_parquet_file(&path).unwrap()[0];
    assert_eq!(
        batch
            .column_by_name("severity")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "high"
    );
    assert_eq!(
        batch
            .column_by_name("rule_id")
            .unwrap()
            .as_string::<i32>()
            .value(1),
        "okta_lock"
    );
    assert!(matches!(
        batch.column_by_name("timestamp").unwrap().data_type(),
        DataType::Timestamp(_, Some(tz)) if tz.as_ref() == "UTC"
    ));
    let evidence = batch
        .column_by_name("event_ids")
        .unwrap()
        .as_list::<i32>()
        .value(0);
    assert_eq!(evidence.as_string::<i32>().value(0), a1.event_ids[0]);
    // A lost file (a crash between the journal and the export) is written again on open.
    drop(store);
    std::fs::remove_file(&path).unwrap();
    let _store = Store::open(config(dir.path())).unwrap();
    assert_eq!(
        alert_file_rows(dir.path(), "acme", 20),
        [triaged, open(&a2)]
    );
}

#[test]
fn batches_written_together_are_answered_each_and_committed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let ev = |n: u64, user: &str| event("acme", "okta", ts(20, 3, n as u32), user, "a", n);
    let (a1, a2, b1) = (ev(1, "alice"), ev(2, "alice"), ev(3, "bob"));
    let mut first = batch(vec![a1.clone(), a2.clone()]);
    first.alerts = vec![alert_for("acme", &a1, Severity::High, "rule-a")];
    let mut second = batch(vec![a2.clone(), b1.clone()]);
    second.alerts = vec![alert_for("acme", &b1, Severity::Low, "rule-b")];
    let mut invalid = batch(vec![ev(4, "carol")]);
    invalid.events[0].tenant.clear();
    let results = store.write_batches(&[first, second, invalid]);
    let acks: Vec<_> = results
        .iter()
        .take(2)
        .map(|r| r.as_ref().unwrap())
        .collect();
    // Each batch's own counts: the event both hold is new in the first, a duplicate in the
    // second.
    assert_eq!(
        acks.iter()
            .map(|a| (a.events_written, a.events_duplicate, a.alerts_written))
            .collect::<Vec<_>>(),
        [(2, 0, 1), (1, 1, 1)]
    );
    assert!(matches!(results[2], Err(StoreError::InvalidBatch(_))));
    assert_eq!(store.stats().events_stored, 3);
    // One commit: one Parquet file for the partition both batches wrote to.
    let event_files: Vec<PathBuf> = parquet_files(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/parquet/events/"))
        .collect();
    assert_eq!(event_files.len(), 1, "{event_files:?}");
    let mut ids = Vec::new();
    for b in read_parquet_file(&event_files[0]).unwrap() {
        let col = b.column_by_name("event_id").unwrap().as_string::<i32>();
        ids.extend(col.iter().map(|v| v.unwrap().to_string()));
    }
    ids.sort();
    let mut expected = vec![a1.id().0.clone(), a2.id().0.clone(), b1.id().0.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    // The day's alert file, written once for the group, holds both batches' alerts.
    let alert_ids: Vec<String> = alert_file_rows(dir.path(), "acme", 20)
        .into_iter()
        .map(|(id, ..)| id)
        .collect();
    assert_eq!(alert_ids.len(), 2, "{alert_ids:?}");
}

#[test]
fn alerts_are_idempotent_and_triage_history_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let e1 = event(
        "acme",
        "okta",
        ts(20, 1, 0),
        "alice",
        "user.session.start",
        1,
    );
    let e2 = event(
        "acme",
        "okta",
        ts(20, 2, 0),
        "alice",
        "user.account.lock",
        2,
    );
    let a1 = alert_for("acme", &e1, Severity::High, "okta_login");
    let a2 = alert_for("acme", &e2, Severity::Low, "okta_lock");
    let g = event("globex", "okta", ts(20, 1, 0), "alice", "x", 3);
    let ag = alert_for("globex", &g, Severity::Critical, "okta_login");
    let id1 = a1.id.clone();
    {
        let store = Store::open(config(dir.path())).unwrap();
        let b = StoreBatch {
            events: vec![e1.clone(), e2.clone(), g],
            alerts: vec![a1.clone(), a2.clone(), ag.clone()],
            dead_letters: vec![],
        };
        assert_eq!(store.write_batch(&b).unwrap().alerts_written, 3);
        assert_eq!(store.write_batch(&b).unwrap().alerts_written, 0);

        let up = AlertUpdate {
            status: Some(AlertStatus::Acknowledged),
            assignee: Some("bob".into()),
            note: Some("looking".into()),
        };
        let r = store
            .update_alert("acme", &id1, &up, "bob@soc")
            .unwrap()
            .unwrap();
        assert_eq!(r.alert.status, AlertStatus::Acknowledged);
        assert_eq!(r.history.len(), 3);
        let up2 = AlertUpdate {
            status: Some(AlertStatus::Resolved),
            assignee: Some(String::new()),
            note: None,
        };
        store
            .update_alert("acme", &id1, &up2, "carol@soc")
            .unwrap()
            .unwrap();
        // The queue at a glance: counts per severity, status, rule and entity, per tenant.
        let summary = store.alert_summary("acme", &AlertQuery::default());
        assert_eq!(summary.total, 2);
        assert_eq!(summary.by_status["resolved"], 1);
        assert_eq!(summary.by_status["open"], 1);
        assert_eq!(summary.by_severity["high"], 1);
        assert_eq!(summary.by_rule.len(), 2);
        assert_eq!(summary.by_entity[0].count, 2, "{summary:?}");
        assert_eq!(
            (summary.oldest, summary.newest),
            (Some(ts(20, 1, 0)), Some(ts(20, 2, 0)))
        );
        let open = AlertQuery {
            statuses: vec![AlertStatus::Open],
            ..Default::default()
        };
        let summary = store.alert_summary("acme", &open);
        assert_eq!(summary.total, 1);
        assert_eq!(summary.by_rule[0].rule_id, "okta_lock");
        let globex = store.alert_summary("globex", &AlertQuery::default());
        assert_eq!((globex.total, globex.by_severity["critical"]), (1, 1));
        assert_eq!(
            store.alert_summary("nobody", &AlertQuery::default()).total,
            0
        );
        // Another tenant cannot see or change it.
        assert!(store.get_alert("globex", &id1).unwrap().is_none());
        assert!(store
            .update_alert("globex", &id1, &up2, "mallory")
            .unwrap()
            .is_none());
    }
    let store = Store::open(config(dir.path())).unwrap();
    let r = store.get_alert("acme", &id1).unwrap().unwrap();
    assert_eq!(r.alert.status, AlertStatus::Resolved);
    assert_eq!(r.assignee, None);
    assert_eq!(r.notes.len(), 1);
    assert_eq!(r.notes[0].by, "bob@soc");
    let fields: Vec<(&str, &str, Option<&str>, Option<&str>)> = r
        .history
        .iter()
        .map(|c| {
            (
                c.by.as_str(),
                c.field.as_str(),
                c.from.as_deref(),
                c.to.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        vec![
            ("bob@soc", "status", Some("open"), Some("acknowledged")),
            ("bob@soc", "assignee", None, Some("bob")),
            ("bob@soc", "note", None, Some("looking")),
            (
                "carol@soc",
                "status",
                Some("acknowledged"),
                Some("resolved")
            ),
            ("carol@soc", "assignee", Some("bob"), None),
        ]
    );
    // Re-delivering the alert does not reset its triage state.
    store
        .write_batch(&StoreBatch {
            alerts: vec![a1.clone()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        store.get_alert("acme", &id1).unwrap().unwrap().alert.status,
        AlertStatus::Resolved
    );

    let evidence = store.alert_evidence("acme", &id1).unwrap();
    assert_eq!(evidence.events, vec![e1.to_output_json()]);
    assert!(evidence.missing.is_empty());
    // A source-silence alert's evidence is a time, no event: not reported missing.
    let mut silent = alert_for("quiet", &e1, Severity::Medium, "perimeter.source_silent");
    silent.event_ids = vec!["newest:1796596789000000".into()];
    let silent = silent.seal();
    store
        .write_batch(&StoreBatch {
            alerts: vec![silent.clone()],
            ..Default::default()
        })
        .unwrap();
    let evidence = store.alert_evidence("quiet", &silent.id).unwrap();
    assert!(
        evidence.events.is_empty() && evidence.missing.is_empty(),
        "{evidence:?}"
    );
    let q = AlertQuery {
        statuses: vec![AlertStatus::Open],
        limit: 10,
        ..Default::default()
    };
    let open = alert_ids(&store, "acme", &q);
    assert_eq!(open, vec![a2.id.clone()]);
    let q = AlertQuery {
        text: Some("LOCK".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list_alerts("acme", &q).unwrap().items.len(), 1);
    let q = AlertQuery {
        severity: Some(Severity::High),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list_alerts("acme", &q).unwrap().items.len(), 1);
    assert_eq!(
        store
            .list_alerts(
                "globex",
                &AlertQuery {
                    limit: 10,
                    ..Default::default()
                }
            )
            .unwrap()
            .items
            .len(),
        1
    );
}

#[test]
fn retention_deletes_exactly_the_expired_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        retention_days: 3,
        retention: vec![
            RetentionRule {
                tenant: None,
                source: Some("github".into()),
                days: 1,
            },
            RetentionRule {
                tenant: Some("keep".into()),
                source: None,
                days: 0,
            },
        ],
        ..config(dir.path())
    };
    let store = Store::open(cfg).unwrap();
    let mut events = Vec::new();
    for day in 18..=25u32 {
        events.push(event("acme", "okta", ts(day, 12, 0), "u", "a", day as u64));
        events.push(event(
            "acme",
            "github",
            ts(day, 12, 0),
            "u",
            "a",
            day as u64,
        ));
        events.push(event("keep", "okta", ts(day, 12, 0), "u", "a", day as u64));
    }
    let now = ts(25, 13, 0);
    // What the next sweep will remove, as the write reports it (against the real clock) and as
    // counted at the sweep's `now`: okta 18..=21 (4), github 18..=23 (6).
    assert_eq!(store.past_retention(&events, now), 10);
    let ack = store.write_batch(&batch(events.clone())).unwrap();
    // Today (after 2026-11-28) every okta and github day here is past: 8 + 8; `keep` never.
    assert_eq!(ack.events_past_retention, 16);
    // What the sweep will remove, told before it does (`run --check`), removing nothing.
    let preview = store.retention_preview(now).unwrap();
    assert_eq!(preview.events, 10);
    assert_eq!(preview.parquet_partitions, 10);
    assert_eq!(
        store.retention_preview(now).unwrap(),
        preview,
        "nothing removed"
    );
    let report = store.apply_retention(now).unwrap();
    assert_eq!(report.events_removed, preview.events);
    assert_eq!(
        report.parquet_partitions_dropped.len(),
        preview.parquet_partitions
    );

    // okta keeps 2026-11-22 ..= 25 (3 days), github keeps 24 ..= 25 (1 day), keep keeps all.
    let days_of = |t: &str, s: &str| -> Vec<String> {
        let p = dir
            .path()
            .join(format!("parquet/events/tenant={t}/source={s}"));
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    let expect = |from: u32| {
        (from..=25)
            .map(|d| format!("dt=2026-11-{d}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(days_of("acme", "okta"), expect(22));
    assert_eq!(days_of("acme", "github"), expect(24));
    assert_eq!(days_of("keep", "okta"), expect(18));
    assert_eq!(report.parquet_partitions_dropped.len(), 4 + 6);

    let mut index_days: Vec<String> = std::fs::read_dir(dir.path().join("index/tenant=acme"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    index_days.sort();
    assert_eq!(index_days, expect(22));
    let dropped: Vec<String> = report
        .indexes_dropped
        .iter()
        .map(|(t, d)| format!("{t}/{d}"))
        .collect();
    assert_eq!(
        dropped,
        (18..=21)
            .map(|d| format!("acme/2026-11-{d}"))
            .collect::<Vec<_>>()
    );
    // Days 22 and 23 keep okta but lost github inside the index.
    assert_eq!(report.events_deleted_from_kept_indexes, 2);
    let sources: Vec<(String, String)> = search_all(&store, "acme", "", 100)
        .iter()
        .map(|d| {
            (
                d["@timestamp"].as_str().unwrap()[..10].to_string(),
                d["event"]["module"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(sources.len(), 4 + 2);
    assert!(!sources.contains(&("2026-11-23".into(), "github".into())));
    assert!(sources.contains(&("2026-11-24".into(), "github".into())));
    assert_eq!(search_all(&store, "keep", "", 100).len(), 8);
    // Idempotent: nothing more to drop at the same instant; one day later drops one more day.
    assert_eq!(store.apply_retention(now).unwrap(), Default::default());
    let next = store.apply_retention(now + Duration::days(1)).unwrap();
    assert_eq!(next.indexes_dropped.len(), 1);
    // okta 23..=25, github 25, keep all 8.
    assert_eq!(store.stats().events_stored, 3 + 1 + 8);
    assert_eq!(next.events_deleted_from_kept_indexes, 1);
    // A dropped day can be written again (a late event), into a fresh index.
    store
        .write_batch(&batch(vec![event(
            "acme",
            "okta",
            ts(18, 12, 0),
            "late",
            "a",
            1,
        )]))
        .unwrap();
    assert_eq!(search_all(&store, "acme", "late", 10).len(), 1);
}

#[test]
fn retention_removes_closed_alerts_past_it_and_keeps_the_queue_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // Alerts are kept longer than events (here 3 days against 1).
    let cfg = StoreConfig {
        retention_days: 1,
        alert_retention_days: 3,
        ..config(dir.path())
    };
    let journal = dir.path().join("alerts/tenant=acme/journal.jsonl");
    let old = event("acme", "okta", ts(18, 12, 0), "alice", "a", 1);
    let recent = event("acme", "okta", ts(24, 12, 0), "alice", "a", 2);
    let resolved = alert_for("acme", &old, Severity::High, "resolved_old");
    let open = alert_for("acme", &old, Severity::High, "open_old");
    let resolved_recent = alert_for("acme", &recent, Severity::Low, "resolved_recent");
    {
        let store = Store::open(cfg.clone()).unwrap();
        let b = StoreBatch {
            events: vec![old.clone(), recent.clone()],
            alerts: vec![resolved.clone(), open.clone(), resolved_recent.clone()],
            ..Default::default()
        };
        store.write_batch(&b).unwrap();
        for id in [&resolved.id, &resolved_recent.id] {
            let update = AlertUpdate {
                status: Some(perimeter_model::AlertStatus::Resolved),
                ..Default::default()
            };
            store.update_alert("acme", id, &update, "dana").unwrap();
        }
        let report = store.apply_retention(ts(25, 13, 0)).unwrap();
        assert_eq!(report.alerts_removed, 1, "{report:?}");
        assert_eq!(report.alert_journals_rewritten, 1);
        assert_eq!(report.alert_journal_lines_removed, 5 - 2);
        assert_eq!(store.get_alert("acme", &resolved.id).unwrap(), None);
        assert_eq!(store.stats().alerts_stored, 2);
        // The open alert outlives its event: its evidence says which event is gone.
        let evidence = store.alert_evidence("acme", &open.id).unwrap();
        assert!(evidence.events.is_empty());
        assert_eq!(evidence.missing, [old.id().0.clone()]);
        let evidence = store.alert_evidence("acme", &resolved_recent.id).unwrap();
        assert_eq!(evidence.events.len(), 1);
        assert!(evidence.missing.is_empty());
    }
    // The journal holds the two alerts left, one line each, and a reopen sees them as they were.
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        2
    );
    let store = Store::open(cfg).unwrap();
    let ids = alert_ids(
        &store,
        "acme",
        &AlertQuery {
            limit: 10,
            ..Default::default()
        },
    );
    assert_eq!(ids, [resolved_recent.id.clone(), open.id.clone()]);
    // The day's alert file lost the removed alert with it.
    let day_18: Vec<String> = alert_file_rows(dir.path(), "acme", 18)
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(day_18, std::slice::from_ref(&open.id));
    let kept = store
        .get_alert("acme", &resolved_recent.id)
        .unwrap()
        .unwrap();
    assert_eq!(kept.history.len(), 1, "the triage history is kept");
    assert_eq!(
        store.apply_retention(ts(25, 13, 0)).unwrap(),
        Default::default()
    );
    // The day's last alert closed and removed: its partition goes too (an empty `dt=`
    // directory was left).
    let update = AlertUpdate {
        status: Some(perimeter_model::AlertStatus::Resolved),
        ..Default::default()
    };
    store
        .update_alert("acme", &open.id, &update, "dana")
        .unwrap();
    assert_eq!(
        store.apply_retention(ts(25, 13, 0)).unwrap().alerts_removed,
        1
    );
    let day_dir = dir.path().join("parquet/alerts/tenant=acme/dt=2026-11-18");
    assert!(!day_dir.exists(), "{}", day_dir.display());
}

#[test]
fn interrupted_batches_are_finished_or_undone_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        store
            .write_batch(&batch(vec![event(
                "acme",
                "okta",
                ts(20, 1, 0),
                "u",
                "a",
                1,
            )]))
            .unwrap();
    }
    let files = parquet_files(dir.path());
    assert_eq!(files.len(), 1);
    let committed = files[0].clone();
    let name = committed.file_name().unwrap().to_str().unwrap().to_string();
    // Crash after the tantivy commit, before the rename: the file must come back.
    let tmp_committed = committed.with_file_name(format!(".{}.tmp", name));
    std::fs::rename(&committed, &tmp_committed).unwrap();
    // Crash before the commit of a later batch: its file must go.
    let orphan = committed.with_file_name(".part-09999999999999999999-0000.parquet.tmp");
    std::fs::copy(&tmp_committed, &orphan).unwrap();
    // A half-written file with a mangled name is ours too and never acknowledged.
    let mangled = committed.with_file_name(".part-xyz.parquet.tmp");
    std::fs::write(&mangled, b"PAR1").unwrap();

    let store = Store::open(config(dir.path())).unwrap();
    assert!(committed.exists());
    assert!(!tmp_committed.exists());
    assert!(!orphan.exists());
    assert!(!mangled.exists());
    assert_eq!(parquet_ids(dir.path()).len(), 1);
    assert_eq!(search_all(&store, "acme", "", 10).len(), 1);
}

#[test]
fn dead_letters_and_bad_batches() {
    let dir = tempfile::tempdir().unwrap();
    let dl = |tenant: &str, n: u64| DeadLetter {
        line: Some(n),
        source: "okta".into(),
        tenant: tenant.into(),
        received_at: ts(20, 0, 0),
        reason: format!("invalid JSON at line {n}"),
        excerpt: "{\"x\":".into(),
        input_digest: None,
    };
    {
        let store = Store::open(config(dir.path())).unwrap();
        let b = StoreBatch {
            dead_letters: vec![dl("acme", 1), dl("acme", 2), dl("globex", 3)],
            ..Default::default()
        };
        assert_eq!(store.write_batch(&b).unwrap().dead_letters_written, 3);
        // The same bad lines again (a resent batch): stored once; a new one beside them is.
        let again = StoreBatch {
            dead_letters: vec![dl("acme", 1), dl("acme", 4), dl("acme", 4)],
            ..Default::default()
        };
        assert_eq!(store.write_batch(&again).unwrap().dead_letters_written, 1);
        let mut bad = event("", "okta", ts(20, 0, 0), "u", "a", 1);
        bad.tenant.clear();
        assert!(matches!(
            store.write_batch(&batch(vec![bad])),
            Err(StoreError::InvalidBatch(_))
        ));
    }
    let store = Store::open(config(dir.path())).unwrap();
    let lines: Vec<Option<u64>> = store
        .list_dead_letters("acme", &newest(10))
        .unwrap()
        .items
        .iter()
        .map(|d| d.line)
        .collect();
    assert_eq!(lines, vec![Some(4), Some(2), Some(1)]);
    // After a restart too (a spool file re-read after a crash), whenever they are received.
    let later = DeadLetter {
        received_at: ts(21, 0, 0),
        ..dl("acme", 2)
    };
    let b = StoreBatch {
        dead_letters: vec![later, dl("globex", 3)],
        ..Default::default()
    };
    assert_eq!(store.write_batch(&b).unwrap().dead_letters_written, 0);
    // Records that differ past their excerpt, all line 1 (one per webhook call): their inputs'
    // digests tell them apart; a resend of one is still known.
    let webhook = |digest: &str| DeadLetter {
        input_digest: Some(digest.into()),
        ..dl("acme", 1)
    };
    let b = StoreBatch {
        dead_letters: vec![webhook("d1"), webhook("d2")],
        ..Default::default()
    };
    assert_eq!(store.write_batch(&b).unwrap().dead_letters_written, 2);
    let b = StoreBatch {
        dead_letters: vec![webhook("d2"), webhook("d3")],
        ..Default::default()
    };
    assert_eq!(store.write_batch(&b).unwrap().dead_letters_written, 1);
    assert_eq!(
        store
            .list_dead_letters("globex", &newest(10))
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        store.tenants(),
        vec!["acme".to_string(), "globex".to_string()]
    );
}

#[test]
fn the_dead_letter_source_filter_ignores_case() {
    let dir = tempfile::tempdir().unwrap();
    let dl = |n: u64, source: &str| DeadLetter {
        line: Some(n),
        source: source.into(),
        tenant: "acme".into(),
        received_at: ts(20, 0, n as u32),
        reason: "invalid JSON".into(),
        excerpt: "{".into(),
        input_digest: None,
    };
    let store = Store::open(config(dir.path())).unwrap();
    let b = StoreBatch {
        dead_letters: vec![dl(1, "okta"), dl(2, "github"), dl(3, "okta")],
        ..Default::default()
    };
    assert_eq!(store.write_batch(&b).unwrap().dead_letters_written, 3);
    // Source names are lower-case; an operator typing the vendor's name finds the same.
    for typed in ["okta", "OKTA", "Okta"] {
        let q = DeadLetterQuery {
            source: Some(typed.into()),
            ..newest(10)
        };
        let lines: Vec<Option<u64>> = store
            .list_dead_letters("acme", &q)
            .unwrap()
            .items
            .iter()
            .map(|d| d.line)
            .collect();
        assert_eq!(lines, vec![Some(3), Some(1)], "--source {typed}");
    }
    let q = DeadLetterQuery {
        source: Some("okt".into()),
        ..newest(10)
    };
    assert!(store
        .list_dead_letters("acme", &q)
        .unwrap()
        .items
        .is_empty());
}

/// The newest `limit` dead letters, unfiltered.
fn newest(limit: usize) -> DeadLetterQuery {
    DeadLetterQuery {
        limit,
        ..Default::default()
    }
}

#[test]
fn dead_letters_page_back_through_all_of_them_filtered_and_survive_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let dl = |n: u64| DeadLetter {
        line: Some(n),
        source: ["okta", "github", "slack"][n as usize % 3].into(),
        tenant: "acme".into(),
        received_at: ts(20, 0, 0) + Duration::minutes(n as i64),
        reason: if n.is_multiple_of(5) {
            format!("line longer than 1048576 bytes ({n})")
        } else {
            format!("invalid JSON at column {n}")
        },
        excerpt: format!("{{\"n\":{n}, \"pad\":\"{}\"}}", "x".repeat(200)),
        input_digest: None,
    };
    // Far more than a page and several 64 KiB read chunks, in three batches.
    let all: Vec<DeadLetter> = (0..3000).map(dl).collect();
    {
        let store = Store::open(config(dir.path())).unwrap();
        for chunk in all.chunks(1000) {
            let b = StoreBatch {
                dead_letters: chunk.to_vec(),
                ..Default::default()
            };
            store.write_batch(&b).unwrap();
        }
    }
    // A crash mid-append leaves half a line: the writer's open cuts it.
    let file = dir
        .path()
        .join("dead_letters/tenant=acme/dead_letters.jsonl");
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap(),
        b"{\"line\":99",
    )
    .unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert!(std::fs::read_to_string(&file).unwrap().ends_with("}\n"));
    let pages = |q: DeadLetterQuery| -> Vec<u64> {
        let mut got = Vec::new();
        let mut q = q;
        loop {
            let page = store.list_dead_letters("acme", &q).unwrap();
            assert!(page.items.len() <= q.limit);
            got.extend(page.items.iter().map(|d| d.line.unwrap()));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => return got,
            }
        }
    };
    let want = |f: &dyn Fn(&DeadLetter) -> bool| -> Vec<u64> {
        all.iter()
            .rev()
            .filter(|d| f(d))
            .map(|d| d.line.unwrap())
            .collect()
    };
    assert_eq!(pages(newest(1000)), want(&|_| true));
    let q = DeadLetterQuery {
        limit: 77,
        source: Some("github".into()),
        text: Some("LONGER THAN".into()),
        from: Some(ts(20, 10, 0)),
        to: Some(ts(21, 6, 0)),
        ..Default::default()
    };
    let selected = want(&|d: &DeadLetter| {
        d.source == "github"
            && d.reason.contains("longer than")
            && d.received_at >= ts(20, 10, 0)
            && d.received_at < ts(21, 6, 0)
    });
    assert!(selected.len() > 77 / 10, "{}", selected.len());
    assert_eq!(pages(q), selected);
    // Cursors that the store did not hand out are invalid queries.
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&file).unwrap().ino();
    for bad in [
        "x".to_string(),
        format!("{ino:x}.5"),
        format!("{:x}.0", ino + 1),
    ] {
        let q = DeadLetterQuery {
            limit: 5,
            cursor: Some(bad.clone()),
            ..Default::default()
        };
        assert!(
            matches!(
                store.list_dead_letters("acme", &q),
                Err(StoreError::InvalidQuery(_))
            ),
            "{bad}"
        );
    }
    assert!(store
        .list_dead_letters("nobody", &newest(5))
        .unwrap()
        .items
        .is_empty());
}

#[test]
fn retention_removes_exactly_the_expired_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || StoreConfig {
        retention_days: 3,
        retention: vec![RetentionRule {
            tenant: None,
            source: Some("github".into()),
            days: 1,
        }],
        ..config(dir.path())
    };
    let dl = |tenant: &str, source: &str, day: u32| DeadLetter {
        line: Some(u64::from(day)),
        source: source.into(),
        tenant: tenant.into(),
        received_at: ts(day, 12, 0),
        reason: "invalid JSON".into(),
        excerpt: "{".into(),
        input_digest: None,
    };
    let mut letters = Vec::new();
    for day in 20..=25 {
        letters.push(dl("acme", "okta", day));
        letters.push(dl("acme", "github", day));
        letters.push(dl("globex", "okta", day));
    }
    let lines = |store: &Store, tenant: &str| -> Vec<Option<u64>> {
        let mut v: Vec<Option<u64>> = store
            .list_dead_letters(tenant, &newest(100))
            .unwrap()
            .items
            .iter()
            .map(|d| d.line)
            .collect();
        v.sort();
        v
    };
    {
        let store = Store::open(cfg()).unwrap();
        let b = StoreBatch {
            dead_letters: letters,
            ..Default::default()
        };
        store.write_batch(&b).unwrap();
        let report = store.apply_retention(ts(25, 13, 0)).unwrap();
        // okta keeps 22..=25 (3 days), github 24..=25 (1 day): 2 + 4 acme, 2 globex removed.
        assert_eq!(report.dead_letters_removed, 2 + 4 + 2);
        let expected = |days: &[u32]| days.iter().map(|d| Some(u64::from(*d))).collect::<Vec<_>>();
        let mut acme = expected(&[22, 23, 24, 25, 24, 25]);
        acme.sort();
        assert_eq!(lines(&store, "acme"), acme);
        assert_eq!(lines(&store, "globex"), expected(&[22, 23, 24, 25]));
        // Idempotent, and later dead letters still append to the rewritten file.
        assert_eq!(
            store
                .apply_retention(ts(25, 13, 0))
                .unwrap()
                .dead_letters_removed,
            0
        );
        let late = StoreBatch {
            dead_letters: vec![dl("acme", "okta", 26)],
            ..Default::default()
        };
        store.write_batch(&late).unwrap();
    }
    // The file itself was rewritten: a reopened store sees the same.
    let store = Store::open(cfg()).unwrap();
    assert_eq!(lines(&store, "acme").len(), 6 + 1);
    assert_eq!(lines(&store, "globex").len(), 4);
}

#[test]
fn tenant_names_cannot_escape_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(&dir.path().join("data"))).unwrap();
    store
        .write_batch(&batch(vec![event(
            "../evil",
            "okta/../x",
            ts(20, 0, 0),
            "u",
            "a",
            1,
        )]))
        .unwrap();
    assert!(walk_names(dir.path())
        .iter()
        .all(|p| p.starts_with(&dir.path().join("data").to_string_lossy().to_string())));
    assert_eq!(search_all(&store, "../evil", "", 10).len(), 1);
    drop(store);
    let store = Store::open(config(&dir.path().join("data"))).unwrap();
    assert_eq!(store.tenants(), vec!["../evil".to_string()]);
}

#[test]
fn compaction_merges_small_files_without_losing_or_doubling_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        parquet_max_file_age_seconds: 0,
        parquet_max_rows_per_file: 25,
        ..config(dir.path())
    };
    let store = Store::open(cfg.clone()).unwrap();
    let mut all = Vec::new();
    for b in 0..6u64 {
        let events: Vec<Event> = (0..8)
            .map(|i| {
                event(
                    "acme",
                    "okta",
                    ts(20, b as u32, i as u32),
                    "u",
                    "a",
                    b * 100 + i,
                )
            })
            .collect();
        all.extend(events.iter().map(|e| e.id().0.clone()));
        store.write_batch(&batch(events)).unwrap();
    }
    assert_eq!(parquet_files(dir.path()).len(), 6);
    let report = store.compact().unwrap();
    // 48 rows in files of at most 25 rows: 8+8+8 = 24, then 24.
    assert_eq!(
        (report.files_merged, report.files_written, report.rows),
        (6, 2, 48)
    );
    assert_eq!(parquet_files(dir.path()).len(), 2);
    let mut ids = parquet_ids(dir.path());
    ids.sort();
    all.sort();
    assert_eq!(ids, all);
    // Nothing small enough left to merge in pairs.
    assert_eq!(store.compact().unwrap().files_merged, 0);
    // Young files are left alone.
    drop(store);
    let young = Store::open(StoreConfig {
        parquet_max_file_age_seconds: 3600,
        ..cfg.clone()
    })
    .unwrap();
    young
        .write_batch(&batch(vec![event(
            "acme",
            "okta",
            ts(20, 9, 0),
            "u",
            "a",
            1,
        )]))
        .unwrap();
    young
        .write_batch(&batch(vec![event(
            "acme",
            "okta",
            ts(20, 9, 1),
            "u",
            "a",
            2,
        )]))
        .unwrap();
    assert_eq!(young.compact().unwrap().files_merged, 0);
}

/// DuckDB and pyarrow list a partition, then open each file: during a compaction they must see
/// the files before the merge or after it, never the merged file beside its inputs.
#[test]
fn a_reader_listing_a_partition_while_it_is_compacted_never_counts_a_row_twice() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        parquet_max_file_age_seconds: 0,
        ..config(dir.path())
    };
    let store = Store::open(cfg).unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let mut n = 0u64;
    let mut write_batches = |count: usize| {
        for _ in 0..count {
            let events: Vec<Event> = (0..5)
                .map(|_| {
                    n += 1;
                    event("acme", "okta", ts(20, 0, 0), "u", "a", n)
                })
                .collect();
            store.write_batch(&batch(events)).unwrap();
            written.fetch_add(5, Ordering::SeqCst);
        }
    };
    write_batches(30);
    let part = parquet_files(dir.path())[0].parent().unwrap().to_path_buf();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (part, written, done) = (part.clone(), written.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut listings, mut retried) = (0usize, 0usize);
            while !done.load(Ordering::SeqCst) {
                let stored = written.load(Ordering::SeqCst);
                let Ok(entries) = std::fs::read_dir(&part) else {
                    retried += 1;
                    continue;
                };
                let mut rows = 0i64;
                let mut complete = true;
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if name.starts_with('.') || !name.ends_with(".parquet") {
                        continue;
                    }
                    // A file of the old generation gone since the listing: read again.
                    let Ok(file) = std::fs::File::open(entry.path()) else {
                        complete = false;
                        break;
                    };
                    rows += parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                        file,
                    )
                    .unwrap()
                    .metadata()
                    .file_metadata()
                    .num_rows();
                }
                if !complete {
                    retried += 1;
                    continue;
                }
                listings += 1;
                // Plus one batch of 5: its file is in place before `write_batch` returns.
                let after = written.load(Ordering::SeqCst) + 5;
                assert!(
                    rows as usize <= after && rows as usize >= stored,
                    "listed {rows} rows with {stored}..{after} stored"
                );
            }
            (listings, retried)
        })
    };
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&part);
    for _ in 0..4 {
        assert!(store.compact().unwrap().files_merged >= 2);
        write_batches(30);
    }
    // The partition was swapped for its next generation (the directory is another one), not
    // changed file by file.
    assert_ne!(inode(&part), before);
    done.store(true, Ordering::SeqCst);
    let (listings, _) = reader.join().expect("the reader never counted a row twice");
    assert!(listings > 0);
    // Old generations are gone, and the staging directory with them.
    assert!(!dir.path().join(".compacting").exists());
    assert_eq!(
        parquet_ids(dir.path()).len(),
        written.load(Ordering::SeqCst)
    );
}

#[test]
fn interrupted_compactions_are_finished_or_undone_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        parquet_max_file_age_seconds: 0,
        ..config(dir.path())
    };
    {
        let store = Store::open(cfg.clone()).unwrap();
        for b in 0..2u32 {
            store
                .write_batch(&batch(vec![event(
                    "acme",
                    "okta",
                    ts(20, b, 0),
                    "u",
                    "a",
                    b as u64,
                )]))
                .unwrap();
        }
    }
    let files = parquet_files(dir.path());
    let part = files[0].parent().unwrap().to_path_buf();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    // Crash after the output was renamed but before the inputs were deleted: the merged file
    // holds both rows, so the inputs must go.
    let merged = part.join("part-00000000000000000007-0000.parquet");
    {
        let batches: Vec<_> = files
            .iter()
            .flat_map(|f| read_parquet_file(f).unwrap())
            .collect();
        let rb = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        perimeter_store::parquet_sink::write_parquet_file(&merged, &rb).unwrap();
    }
    let manifest = json!({"inputs": names, "outputs": ["part-00000000000000000007-0000.parquet"]});
    std::fs::write(
        part.join(".compact-00000000000000000007.json"),
        manifest.to_string(),
    )
    .unwrap();
    // And an older compaction that crashed before its output was complete: undone.
    std::fs::write(
        part.join(".compact-00000000000000000005-0000.parquet.tmp"),
        b"PAR1",
    )
    .unwrap();
    let undone = json!({"inputs": ["part-00000000000000000007-0000.parquet"], "outputs": ["part-00000000000000000005-0000.parquet"]});
    std::fs::write(
        part.join(".compact-00000000000000000005.json"),
        undone.to_string(),
    )
    .unwrap();

    let store = Store::open(cfg).unwrap();
    let left: Vec<String> = std::fs::read_dir(&part)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        left,
        vec!["part-00000000000000000007-0000.parquet".to_string()]
    );
    assert_eq!(parquet_ids(dir.path()).len(), 2);
    assert_eq!(search_all(&store, "acme", "", 10).len(), 2);
}

#[test]
fn group_commit_acks_each_caller_with_its_own_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        commit_interval_ms: 30,
        ..config(dir.path())
    };
    let store = std::sync::Arc::new(Store::open(cfg).unwrap());
    let shared = event("acme", "okta", ts(20, 0, 0), "u", "a", 7777);
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                for b in 0..3u64 {
                    let mut events: Vec<Event> = (0..5)
                        .map(|i| {
                            event(
                                "acme",
                                "okta",
                                ts(20, t as u32, (b * 5 + i) as u32),
                                "u",
                                "a",
                                t * 1000 + b * 10 + i,
                            )
                        })
                        .collect();
                    events.push(shared.clone());
                    acks.push(store.write_batch(&batch(events)).unwrap());
                }
                acks
            })
        })
        .collect();
    let acks: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(acks.len(), 12);
    assert!(acks
        .iter()
        .all(|a| a.events_written + a.events_duplicate == 6 && a.events_written >= 5));
    // The shared event is new for exactly one caller.
    assert_eq!(
        acks.iter().map(|a| a.events_written).sum::<usize>(),
        4 * 3 * 5 + 1
    );
    assert_eq!(search_all(&store, "acme", "", 100).len(), 61);
    assert_eq!(parquet_ids(dir.path()).len(), 61);
}

#[test]
fn ip_ranges_and_cidr_blocks_compare_addresses_not_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let ips = [
        "192.0.2.1",
        "192.0.2.9",
        "192.0.2.10",
        "192.0.2.90",
        "192.0.2.255",
        "192.0.3.4",
        "10.20.30.40",
        "2001:db8::1",
    ];
    let events: Vec<Event> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let mut e = event("acme", "okta", ts(20, 10, i as u32), "u", "a", i as u64);
            e.ecs.source_ip = Some(ip.to_string());
            e.ecs.related_ip = vec![ip.to_string()];
            e
        })
        .collect();
    store.write_batch(&batch(events)).unwrap();
    let found = |query: &str| sorted_values(&store, query, &["source", "ip"]);
    // A range compared as text took 192.0.2.10 and 192.0.2.90 into [.0 TO .9].
    assert_eq!(
        found("source.ip:[192.0.2.0 TO 192.0.2.9]"),
        ["192.0.2.1", "192.0.2.9"]
    );
    assert_eq!(
        found("source.ip:{192.0.2.1 TO 192.0.2.90}"),
        ["192.0.2.10", "192.0.2.9"]
    );
    assert_eq!(
        found("source.ip:192.0.2.0/24"),
        [
            "192.0.2.1",
            "192.0.2.10",
            "192.0.2.255",
            "192.0.2.9",
            "192.0.2.90"
        ]
    );
    assert_eq!(
        found("related.ip:192.0.2.0/23 AND NOT source.ip:192.0.2.0/24"),
        ["192.0.3.4"]
    );
    assert_eq!(found("source.ip:10.0.0.0/8"), ["10.20.30.40"]);
    assert_eq!(
        found("source.ip:[192.0.2.200 TO *]"),
        ["192.0.2.255", "192.0.3.4"]
    );
    assert!(found("source.ip:[192.0.2.9 TO 192.0.2.1]").is_empty());
    // Exact addresses, IPv6 included, as before.
    assert_eq!(found("source.ip:\"2001:db8::1\""), ["2001:db8::1"]);
    assert_eq!(found("source.ip:192.0.2.9"), ["192.0.2.9"]);
    // Other written forms of a stored address find it (the normalizers store one form).
    assert_eq!(found("source.ip:\"2001:DB8:0:0:0:0:0:1\""), ["2001:db8::1"]);
    assert_eq!(found("related.ip:\"::ffff:192.0.2.9\""), ["192.0.2.9"]);
    // What cannot be answered is an error, not an empty result.
    for bad in [
        "source.ip:192.0.2.0/33",
        "source.ip:[2001:db8:: TO 2001:db8::ff]",
        "user.name:/adm.*/",
    ] {
        assert_invalid_query(&store, bad);
    }
}

#[test]
fn timestamp_terms_take_days_and_relative_times_as_the_time_parameters_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    // Around the midnights of Nov 20 and 21, and one event a minute ago.
    let times = [
        ts(19, 23, 59),
        ts(20, 0, 0),
        ts(20, 12, 0),
        ts(20, 23, 59),
        ts(21, 0, 0),
        Utc::now() - chrono::TimeDelta::minutes(1),
    ];
    let events: Vec<Event> = times
        .iter()
        .enumerate()
        .map(|(i, at)| event("acme", "okta", *at, "u", &format!("act{i}"), i as u64))
        .collect();
    store.write_batch(&batch(events)).unwrap();
    let found = |query: &str| sorted_values(&store, query, &["event", "action"]);
    // A date alone is its whole day.
    assert_eq!(found("@timestamp:2026-11-20"), ["act1", "act2", "act3"]);
    assert_eq!(found("@timestamp:>2026-11-20 AND NOT act5"), ["act4"]);
    assert_eq!(found("@timestamp:<=2026-11-19"), ["act0"]);
    assert_eq!(found("@timestamp:<2026-11-20"), ["act0"]);
    assert_eq!(
        found("@timestamp:>=2026-11-20 AND @timestamp:<2026-11-21"),
        ["act1", "act2", "act3"]
    );
    assert_eq!(
        found("@timestamp:[2026-11-19 TO 2026-11-20]"),
        ["act0", "act1", "act2", "act3"]
    );
    // Relative times and RFC 3339 as before.
    assert_eq!(found("@timestamp:[now-1h TO now]"), ["act5"]);
    assert_eq!(
        found("@timestamp:>=2026-11-20T12:00:00Z AND @timestamp:<now-1d"),
        ["act2", "act3", "act4"]
    );
    assert_eq!(found("@timestamp:\"2026-11-20T12:00:00Z\""), ["act2"]);
    // Quoted range bounds.
    assert_eq!(
        found("@timestamp:[\"2026-11-20T12:00:00Z\" TO \"2026-11-20T12:00:01Z\"}"),
        ["act2"]
    );
    // Quoted after a comparison too, as times are quoted elsewhere.
    assert_eq!(
        found("@timestamp:>=\"2026-11-20T12:00:00Z\" AND @timestamp:<\"now-1d\""),
        ["act2", "act3", "act4"]
    );
    // What is no time is an invalid query, not an empty result.
    assert_invalid_query(&store, "@timestamp:>yesterday");
    assert_invalid_query(&store, "@timestamp:[2026-11-20 TO soon]");
}

#[test]
fn histograms_count_what_the_search_finds_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    // acme: failures (odd n) and successes over two days, with a quiet hour between; globex
    // has events in the same hours that acme must never count.
    let mut events = Vec::new();
    for (n, at) in [
        ts(20, 22, 5),
        ts(20, 22, 40),
        ts(20, 23, 59),
        ts(21, 1, 0),
        ts(21, 1, 30),
        ts(21, 1, 59),
    ]
    .into_iter()
    .enumerate()
    {
        events.push(event(
            "acme",
            "okta",
            at,
            "dana",
            "user.session.start",
            n as u64,
        ));
        events.push(event(
            "globex",
            "okta",
            at,
            "eve",
            "user.session.start",
            n as u64,
        ));
    }
    // Written in two batches: the counts add up over segments and over day indexes.
    let later = events.split_off(6);
    store.write_batch(&batch(events)).unwrap();
    store.write_batch(&batch(later)).unwrap();
    let histogram = |query: &str, from, to, interval| {
        store
            .event_histogram(
                "acme",
                &perimeter_store::EventHistogramQuery {
                    query: query.into(),
                    from,
                    to,
                    interval_seconds: interval,
                },
            )
            .unwrap()
    };
    let counts = |h: &perimeter_store::EventHistogram| -> Vec<(String, u64)> {
        h.buckets
            .iter()
            .map(|b| (b.start.format("%d %H:%M").to_string(), b.count))
            .collect()
    };
    let pairs = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(s, c)| (s.to_string(), *c)).collect()
    };

    // Open ends: from the first event's hour to the last one's, the quiet hour as a zero.
    let h = histogram("*", None, None, Some(3_600));
    assert_eq!(h.total, 6);
    assert_eq!(h.interval_seconds, 3_600);
    assert_eq!(
        counts(&h),
        pairs(&[
            ("20 22:00", 2),
            ("20 23:00", 1),
            ("21 00:00", 0),
            ("21 01:00", 3)
        ])
    );
    // The search narrows the counts exactly as it narrows the hits.
    let failures = histogram("event.outcome:failure", None, None, Some(3_600));
    let found = search_all(&store, "acme", "event.outcome:failure", 100).len() as u64;
    assert_eq!((failures.total, found), (3, 3));
    assert_eq!(
        counts(&failures),
        pairs(&[
            ("20 22:00", 1),
            ("20 23:00", 0),
            ("21 00:00", 0),
            ("21 01:00", 2)
        ])
    );
    // Given bounds are kept, empty buckets included; `to` is exclusive.
    let h = histogram("*", Some(ts(20, 21, 0)), Some(ts(21, 1, 30)), Some(3_600));
    assert_eq!(h.total, 4);
    assert_eq!(
        counts(&h),
        pairs(&[
            ("20 21:00", 0),
            ("20 22:00", 2),
            ("20 23:00", 1),
            ("21 00:00", 0),
            ("21 01:00", 1)
        ])
    );
    // No interval: a round one, at most 100 buckets over the events' span (about 4 hours).
    let auto = histogram("*", None, None, None);
    assert_eq!((auto.total, auto.interval_seconds), (6, 300));
    assert!(
        auto.buckets.len() <= 100 && auto.buckets.len() > 40,
        "{}",
        auto.buckets.len()
    );
    assert_eq!(auto.buckets.iter().map(|b| b.count).sum::<u64>(), 6);
    // The interval goes by the matching events' span, not by all that is stored: an old
    // unrelated event does not stretch dana's buckets into weeks.
    store
        .write_batch(&batch(vec![event(
            "acme",
            "okta",
            ts(20, 22, 5) - chrono::Duration::days(300),
            "old",
            "user.session.start",
            99,
        )]))
        .unwrap();
    let narrow = histogram("dana", None, None, None);
    assert_eq!(narrow.total, 6);
    assert_eq!(narrow.interval_seconds, auto.interval_seconds);
    // A tenant with nothing stored: no buckets, no error.
    let none = store
        .event_histogram("initech", &perimeter_store::EventHistogramQuery::default())
        .unwrap();
    assert_eq!((none.total, none.buckets.len()), (0, 0));
    // Refused: too many buckets, a bad query, an empty range.
    for (q, from, to, interval) in [
        ("*", Some(ts(1, 0, 0)), Some(ts(30, 0, 0)), Some(1)),
        ("event.action:(", None, None, None),
        ("*", Some(ts(21, 0, 0)), Some(ts(20, 0, 0)), None),
    ] {
        let e = store
            .event_histogram(
                "acme",
                &perimeter_store::EventHistogramQuery {
                    query: q.into(),
                    from,
                    to,
                    interval_seconds: interval,
                },
            )
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidQuery(_)), "{q}: {e}");
    }
}

#[test]
fn source_activity_names_each_sources_newest_event_and_its_last_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let now = ts(21, 12, 0);
    // okta: busy until an hour ago (two days of events); github: silent for three days;
    // slack: one event inside the last 24 hours, one just outside. globex's okta is newer
    // and must not show up in acme's view.
    let events = vec![
        event("acme", "okta", ts(20, 9, 0), "dana", "a", 1),
        event("acme", "okta", ts(20, 13, 0), "dana", "a", 2),
        event("acme", "okta", ts(21, 0, 30), "dana", "a", 3),
        event("acme", "okta", ts(21, 11, 0), "dana", "a", 4),
        event("acme", "github", ts(18, 12, 0), "dana", "a", 5),
        event("acme", "slack", ts(20, 11, 59), "dana", "a", 6),
        event("acme", "slack", ts(20, 12, 1), "dana", "a", 7),
        event("globex", "okta", ts(21, 11, 59), "eve", "a", 8),
        event("globex", "zoom", ts(21, 11, 0), "eve", "a", 9),
        // Stamped after `now` (a vendor clock ahead): the newest event, but not one of the
        // last 24 hours.
        event("acme", "slack", ts(21, 12, 30), "dana", "a", 10),
    ];
    store.write_batch(&batch(events)).unwrap();
    let got: Vec<(String, DateTime<Utc>, u64)> = store
        .source_activity("acme", now)
        .unwrap()
        .into_iter()
        .map(|a| (a.source, a.newest_event, a.events_24h))
        .collect();
    assert_eq!(
        got,
        [
            ("github".to_string(), ts(18, 12, 0), 0),
            ("okta".to_string(), ts(21, 11, 0), 3),
            ("slack".to_string(), ts(21, 12, 30), 1),
        ]
    );
    assert!(store.source_activity("initech", now).unwrap().is_empty());
}

#[test]
fn top_values_count_a_fields_values_among_the_matches() {
    use perimeter_store::{TopValues, TopValuesQuery};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    // acme: dana 5 events, Eve (spelt two ways) 3, bob 1, over two days and two batches, with
    // actions whose case differs; globex: many events by mallory that acme must never count.
    let mut events = Vec::new();
    let users = [
        "dana", "dana", "Eve", "dana", "eve", "bob", "dana", "EVE", "dana",
    ];
    for (n, user) in users.iter().enumerate() {
        let action = if n % 3 == 0 { "LOGIN" } else { "login" };
        let at = ts(20 + (n as u32 % 2), 10, n as u32);
        events.push(event("acme", "okta", at, user, action, n as u64));
    }
    for n in 0..12 {
        events.push(event(
            "globex",
            "okta",
            ts(20, 11, n),
            "mallory",
            "login",
            100 + n as u64,
        ));
    }
    let later = events.split_off(5);
    store.write_batch(&batch(events)).unwrap();
    store.write_batch(&batch(later)).unwrap();
    let top = |query: &str, field: &str, limit: usize, sample: usize| -> TopValues {
        store
            .top_values(
                "acme",
                &TopValuesQuery {
                    query: query.into(),
                    field: field.into(),
                    limit,
                    sample,
                    ..Default::default()
                },
            )
            .unwrap()
    };
    let pairs = |t: &TopValues| -> Vec<(String, u64)> {
        t.values
            .iter()
            .map(|v| (v.value.clone(), v.count))
            .collect()
    };
    let want = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(s, c)| (s.to_string(), *c)).collect()
    };

    // Every match read from its stored document: exact; values grouped without regard to case.
    let users_top = top("*", "user.name", 10, 100);
    assert_eq!((users_top.total, users_top.counted), (9, 9));
    assert!(users_top.exact);
    assert_eq!(pairs(&users_top)[0], ("dana".to_string(), 5));
    assert_eq!(users_top.values[1].count, 3);
    assert!(
        ["Eve", "eve", "EVE"].contains(&users_top.values[1].value.as_str()),
        "{users_top:?}"
    );
    assert_eq!(pairs(&users_top)[2], ("bob".to_string(), 1));
    assert_eq!((users_top.other, users_top.missing), (0, 0));
    // The limit: what is left out is counted in `other`.
    let one = top("*", "user.name", 1, 100);
    assert_eq!(pairs(&one), want(&[("dana", 5)]));
    assert_eq!(one.other, 4);
    // The search narrows the counts as it narrows the hits: failures are the odd events.
    let failures = top("event.outcome:failure", "user.name", 10, 100);
    let found = search_all(&store, "acme", "event.outcome:failure", 100).len() as u64;
    assert_eq!(failures.total, found);
    assert_eq!(
        failures.values.iter().map(|v| v.count).sum::<u64>(),
        found,
        "{failures:?}"
    );

    // More matches than the sample on a field indexed whole: counted in the index, exact, and
    // equal to what reading every stored document gives.
    let in_index = top("*", "event.action", 10, 2);
    let from_docs = top("*", "event.action", 10, 100);
    assert!(in_index.exact && from_docs.exact);
    assert_eq!(in_index.counted, 9);
    assert_eq!(pairs(&in_index), pairs(&from_docs));
    assert_eq!(in_index.values.len(), 1, "{in_index:?}");
    assert_eq!(in_index.values[0].count, 9);
    assert!(["LOGIN", "login"].contains(&in_index.values[0].value.as_str()));
    // A list field: each event counts once per value it holds.
    let ips = top("*", "related.ip", 10, 2);
    assert_eq!(pairs(&ips), want(&[("198.51.100.7", 9)]));
    // A field no event has: every counted event is missing it, in the index and in documents.
    for sample in [2, 100] {
        let none = top("*", "cloud.account.id", 10, sample);
        assert!(none.values.is_empty());
        assert_eq!((none.total, none.missing), (9, 9), "sample {sample}");
    }
    // More matches than the sample on a field indexed as words: the newest matches only, and
    // the answer says so.
    let sampled = top("*", "user.name", 10, 4);
    assert!(!sampled.exact);
    assert_eq!((sampled.total, sampled.counted), (9, 4));
    assert_eq!(sampled.values.iter().map(|v| v.count).sum::<u64>(), 4);
    // The time range applies.
    let day = store
        .top_values(
            "acme",
            &TopValuesQuery {
                query: "*".into(),
                field: "user.name".into(),
                from: Some(ts(21, 0, 0)),
                to: Some(ts(22, 0, 0)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(day.total, 4);

    // Refused: a field the store does not index, limits out of range, a bad query, an empty
    // range.
    for q in [
        TopValuesQuery {
            field: "actor.alternateId".into(),
            ..Default::default()
        },
        TopValuesQuery {
            field: "user.name".into(),
            limit: 0,
            ..Default::default()
        },
        TopValuesQuery {
            field: "user.name".into(),
            sample: perimeter_store::MAX_TOP_SAMPLE + 1,
            ..Default::default()
        },
        TopValuesQuery {
            query: "user.name:(".into(),
            field: "user.name".into(),
            ..Default::default()
        },
        TopValuesQuery {
            field: "user.name".into(),
            from: Some(ts(21, 0, 0)),
            to: Some(ts(20, 0, 0)),
            ..Default::default()
        },
    ] {
        let e = store.top_values("acme", &q).unwrap_err();
        assert!(matches!(e, StoreError::InvalidQuery(_)), "{q:?}: {e}");
    }
    let e = store
        .top_values(
            "acme",
            &TopValuesQuery {
                field: "actor.alternateId".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("user.name"), "{e}");
}

/// A user's context holds that user's events, whatever their case, and not those of a user
/// whose name merely contains it (QA: `kim@acme.example`'s context was 350 events of
/// `dana.kim@acme.example`, since the search's phrase matches a run of words).
#[test]
fn an_events_context_is_its_users_exactly() {
    use perimeter_store::ContextPivot;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let pivot = event("acme", "okta", ts(20, 10, 5), "kim@acme.example", "a", 1);
    let pivot_id = pivot.id().0.clone();
    let mut events = vec![
        pivot,
        event("acme", "okta", ts(20, 10, 7), "Kim@ACME.example", "a", 2),
    ];
    // More longer names than one page of the search holds, on both sides of the pivot.
    for n in 0..250u32 {
        events.push(event(
            "acme",
            "okta",
            ts(20, 9 + n / 125, n % 60),
            "dana.kim@acme.example",
            "a",
            100 + n as u64,
        ));
    }
    events.push(event(
        "acme",
        "okta",
        ts(20, 11, 9),
        "kim@acme.example",
        "a",
        3,
    ));
    store.write_batch(&batch(events)).unwrap();
    let context = store
        .event_context(
            "acme",
            &pivot_id,
            ContextPivot::User,
            chrono::Duration::hours(2),
            10,
        )
        .unwrap()
        .unwrap();
    let users: Vec<&str> = context
        .items
        .iter()
        .map(|e| e["user"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        ["kim@acme.example", "Kim@ACME.example", "kim@acme.example"],
        "{context:?}"
    );
    assert!(!context.more);
}

#[test]
fn an_events_context_is_its_users_or_addresses_events_around_it() {
    use perimeter_store::ContextPivot;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let dana_at = |minute: u32, n: u64| event("acme", "okta", ts(20, 10, minute), "dana", "a", n);
    let pivot = dana_at(5, 2);
    let pivot_id = pivot.id().0.clone();
    let quoted = event("acme", "okta", ts(20, 12, 0), "o\"b\\rien", "a", 7);
    store
        .write_batch(&batch(vec![
            dana_at(0, 1),
            pivot,
            dana_at(20, 3),
            event("acme", "okta", ts(20, 11, 0), "dana", "a", 4),
            event("acme", "okta", ts(20, 10, 6), "eve", "a", 5),
            event("globex", "okta", ts(20, 10, 5), "dana", "a", 6),
            quoted.clone(),
        ]))
        .unwrap();
    // A user name with a quote and a backslash is still one phrase of the search.
    let alone = store
        .event_context(
            "acme",
            &quoted.id().0,
            ContextPivot::User,
            chrono::Duration::minutes(15),
            10,
        )
        .unwrap()
        .unwrap();
    assert_eq!(alone.items.len(), 1, "{}", alone.query);
    let minutes = |c: &perimeter_store::EventContext| -> Vec<String> {
        c.items
            .iter()
            .map(|e| {
                let t = e["@timestamp"].as_str().unwrap();
                let user = e["user"]["name"].as_str().unwrap();
                format!("{} {user}", &t[11..16])
            })
            .collect()
    };
    // The same user within 15 minutes either side, oldest first, the event itself included;
    // not an hour later, not eve, not globex's dana.
    let window = chrono::Duration::minutes(15);
    let by_user = store
        .event_context("acme", &pivot_id, ContextPivot::User, window, 100)
        .unwrap()
        .unwrap();
    assert_eq!(
        minutes(&by_user),
        ["10:00 dana", "10:05 dana", "10:20 dana"],
        "{by_user:?}"
    );
    assert_eq!(by_user.values, ["dana"]);
    assert_eq!(by_user.event["event"]["id"], pivot_id.as_str());
    assert!(!by_user.more);
    // The query it ran finds the same events through search.
    let found = store
        .search_events(
            "acme",
            &EventQuery {
                query: by_user.query.clone(),
                from: Some(by_user.from),
                to: Some(by_user.to),
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(found.items.len(), 3);
    // The same address: eve's event from it too.
    let by_ip = store
        .event_context("acme", &pivot_id, ContextPivot::Ip, window, 100)
        .unwrap()
        .unwrap();
    assert_eq!(
        minutes(&by_ip),
        ["10:00 dana", "10:05 dana", "10:06 eve", "10:20 dana"]
    );
    // A limit: the nearest on both sides, the event itself included, and `more` says there
    // are others.
    let nearest = |limit| {
        let c = store
            .event_context("acme", &pivot_id, ContextPivot::Ip, window, limit)
            .unwrap()
            .unwrap();
        (minutes(&c), c.more)
    };
    assert_eq!(
        nearest(2),
        (vec!["10:00 dana".into(), "10:05 dana".into()], true)
    );
    assert_eq!(
        nearest(3),
        (
            vec!["10:00 dana".into(), "10:05 dana".into(), "10:06 eve".into()],
            true
        )
    );
    assert_eq!(nearest(1), (vec!["10:05 dana".to_string()], true));
    assert!(!nearest(4).1);
    // Nothing before it: the whole limit goes after.
    let oldest = store
        .event_context(
            "acme",
            store
                .search_events(
                    "acme",
                    &EventQuery {
                        query: "*".into(),
                        limit: 1,
                        sort: EventSort::Oldest,
                        ..Default::default()
                    },
                )
                .unwrap()
                .items[0]["event"]["id"]
                .as_str()
                .unwrap(),
            ContextPivot::Ip,
            window,
            2,
        )
        .unwrap()
        .unwrap();
    assert_eq!(minutes(&oldest), ["10:00 dana", "10:05 dana"]);
    // Another tenant's id is no event; bad windows and limits are refused.
    assert!(store
        .event_context("globex", &pivot_id, ContextPivot::User, window, 10)
        .unwrap()
        .is_none());
    for (window, limit) in [
        (chrono::Duration::zero(), 10),
        (chrono::Duration::days(31), 10),
        (window, 0),
        (window, 1001),
    ] {
        let e = store
            .event_context("acme", &pivot_id, ContextPivot::User, window, limit)
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidQuery(_)), "{e}");
    }
}

#[test]
fn pages_and_bounds_keep_events_apart_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let at = |ms: i64| ts(20, 10, 0) + chrono::Duration::milliseconds(ms);
    let events: Vec<Event> = [100, 300, 500, 700, 900]
        .into_iter()
        .enumerate()
        .map(|(n, ms)| event("acme", "okta", at(ms), "dana", "a", n as u64))
        .collect();
    store.write_batch(&batch(events)).unwrap();
    for sort in [EventSort::Newest, EventSort::Oldest] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .search_events(
                    "acme",
                    &EventQuery {
                        query: "*".into(),
                        limit: 2,
                        cursor,
                        sort,
                        ..Default::default()
                    },
                )
                .unwrap();
            seen.extend(
                page.items
                    .iter()
                    .map(|e| e["@timestamp"].as_str().unwrap().to_string()),
            );
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 5, "{sort:?}: {seen:?}");
    }
    // `from` and `to` are exact to the microsecond: [300 ms, 700 ms) holds 300 and 500.
    let within = store
        .search_events(
            "acme",
            &EventQuery {
                query: "*".into(),
                from: Some(at(300)),
                to: Some(at(700)),
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(within.items.len(), 2, "{:?}", within.items);
    // Bounds past what tantivy's dates hold (1677-2262) are clamped, not overflowed: they
    // still take in every event (`from=now-18300w` used to panic).
    let year = |y: i32| chrono::TimeZone::with_ymd_and_hms(&Utc, y, 1, 1, 0, 0, 0).unwrap();
    let wide = store
        .search_events(
            "acme",
            &EventQuery {
                query: "*".into(),
                from: Some(year(1600)),
                to: Some(year(2500)),
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(wide.items.len(), 5);
}

#[test]
fn a_range_open_at_both_ends_finds_the_events_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut no_user = event("acme", "okta", ts(20, 3, 0), "x", "user.session.start", 3);
    no_user.ecs.user_name = None;
    store
        .write_batch(&batch(vec![
            event(
                "acme",
                "okta",
                ts(20, 1, 0),
                "alice",
                "user.session.start",
                1,
            ),
            event("acme", "okta", ts(20, 2, 0), "bob", "user.session.start", 2),
            no_user,
        ]))
        .unwrap();
    // It matched nothing, on a text field and on the date alike.
    assert_eq!(
        sorted_values(&store, "user.name:[* TO *]", &["user", "name"]),
        ["alice", "bob"]
    );
    assert_eq!(
        search_all(&store, "acme", "@timestamp:[* TO *]", 10).len(),
        3
    );
    // A bounded range is still a range.
    assert_eq!(
        sorted_values(&store, "user.name:[a TO b]", &["user", "name"]),
        ["alice"]
    );
}

#[test]
fn a_snapshot_pages_and_counts_as_the_store_was_when_it_was_taken() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store
        .write_batch(&batch(acme_okta(10, 8, "dana", 0..5)))
        .unwrap();
    let snapshot = store.event_snapshot("acme");
    // Stored after the snapshot: one later than all, one in between, one on a new day.
    let later = vec![
        event(
            "acme",
            "okta",
            ts(10, 9, 0),
            "dana",
            "user.session.start",
            10,
        ),
        event(
            "acme",
            "okta",
            ts(10, 8, 2),
            "erin",
            "user.session.start",
            11,
        ),
        event(
            "acme",
            "okta",
            ts(11, 8, 0),
            "dana",
            "user.session.start",
            12,
        ),
    ];
    store.write_batch(&batch(later)).unwrap();

    let q = EventQuery {
        query: "*".into(),
        limit: 2,
        sort: EventSort::Oldest,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut query = q.clone();
    loop {
        let page = store.search_snapshot(&snapshot, &query).unwrap();
        seen.extend(page.items);
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|e| e["user"]["name"] == "dana"));
    assert_eq!(store.count_snapshot(&snapshot, "*", None, None).unwrap(), 5);
    assert_eq!(
        store.count_snapshot(&snapshot, "erin", None, None).unwrap(),
        0
    );
    // The store itself has them all.
    assert_eq!(store.count_events("acme", "*", None, None).unwrap(), 8);
    assert_eq!(search_all(&store, "acme", "*", 100).len(), 8);
}

#[test]
fn an_event_is_found_by_its_own_nanosecond_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let at = ts(10, 8, 0) + Duration::nanoseconds(123_456_789);
    let other = ts(10, 8, 0) + Duration::nanoseconds(123_457_000);
    store
        .write_batch(&batch(vec![
            event("acme", "okta", at, "dana", "user.session.start", 1),
            event("acme", "okta", other, "erin", "user.session.start", 2),
        ]))
        .unwrap();
    let exact = format!(
        "@timestamp:\"{}\"",
        at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    );
    let hits = search_all(&store, "acme", &exact, 10);
    assert_eq!(hits.len(), 1, "{exact}");
    assert_eq!(hits[0]["user"]["name"], "dana");
}

/// Every stored document of `tenant` (search hits), sorted by event id.
fn documents_by_id(store: &Store, tenant: &str) -> Vec<serde_json::Value> {
    let mut docs = search_all(store, tenant, "", 7);
    docs.sort_by(|a, b| a["event"]["id"].as_str().cmp(&b["event"]["id"].as_str()));
    docs
}

/// Okta sign-ins of tenant acme by `user`, one a minute from minute `n` of `day`'s `hour`, `n`
/// running over `ns` (also the input line).
fn acme_okta(day: u32, hour: u32, user: &str, ns: std::ops::Range<u64>) -> Vec<Event> {
    ns.map(|n| {
        event(
            "acme",
            "okta",
            ts(day, hour, n as u32),
            user,
            "user.session.start",
            n,
        )
    })
    .collect()
}

/// Store `events` as one batch in a store at `dir` (closed after), and return the Parquet file
/// the batch wrote last.
fn stored_once(dir: &Path, events: Vec<Event>) -> PathBuf {
    let store = Store::open(config(dir)).unwrap();
    store.write_batch(&batch(events)).unwrap();
    drop(store);
    parquet_files(dir).pop().unwrap()
}

/// `Store::reindex` of the store at `dir` with the default options: what is unsound.
fn reindex_unsound(dir: &Path) -> Result<perimeter_store::ReindexReport, StoreError> {
    Store::reindex(
        config(dir),
        &ReindexOptions::default(),
        &published,
        &mut |_| {},
    )
}

/// Cut a file to half its length, as a crash or a bad disk may leave it.
fn cut_short(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

/// Every Parquet file under `root` with its bytes.
fn parquet_contents(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    parquet_files(root)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// The vendor time of the test records (`published`), as the binary's normalizers read it.
fn published(_source: &str, raw: &perimeter_model::RawJson) -> Option<DateTime<Utc>> {
    let raw = perimeter_model::raw_to_serde(raw);
    raw["published"].as_str()?.parse().ok()
}

/// `Store::reindex` rebuilds lost, unusable and incomplete indexes from the Parquet files
/// alone: the same documents come back (the adjusted-time mark included, which is no Parquet
/// column), searches and dedup work as before, the Parquet files are untouched, sound indexes
/// are left alone, and what an interrupted rebuild leaves is removed on open.
#[test]
fn reindex_rebuilds_lost_unusable_and_incomplete_indexes_from_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let received = ts(20, 12, 0);
    let raw = json!({"uuid": "clock-off", "published": "2038-01-19T03:14:08Z",
                     "eventType": "user.session.start", "debug": {"note": "rarewordinraw"}});
    let record = RawRecord {
        source: "okta".into(),
        tenant: "acme".into(),
        received_at: received,
        line: Some(9),
        raw: perimeter_model::raw_from_serde(&raw),
    };
    let ecs = Ecs {
        timestamp: Some(Utc.with_ymd_and_hms(2038, 1, 19, 3, 14, 8).unwrap()),
        event_action: Some("user.session.start".into()),
        ..Default::default()
    };
    let adjusted = Event::new("okta", record, ecs);
    assert!(adjusted.timestamp_adjusted);
    let mut events = vec![adjusted];
    for n in 0..30 {
        let (tenant, source) = match n % 3 {
            0 => ("acme", "okta"),
            1 => ("acme", "github"),
            _ => ("globex", "okta"),
        };
        let day = 20 + (n % 2) as u32;
        events.push(event(
            tenant,
            source,
            ts(day, 8, n as u32),
            &format!("user{n}"),
            "user.session.start",
            n,
        ));
    }
    let store = Store::open(config(dir.path())).unwrap();
    store.write_batch(&batch(events.clone())).unwrap();
    let before: Vec<_> = ["acme", "globex"]
        .iter()
        .map(|t| documents_by_id(&store, t))
        .collect();
    assert_eq!(before[0].len() + before[1].len(), events.len());
    drop(store);
    let parquet_before = parquet_contents(dir.path());

    // acme's 20th: unusable; acme's 21st: gone; globex's 21st: loses its segments (its meta.json
    // names none, so it opens holding no events); globex's 20th: sound.
    let index = |tenant: &str, day: &str| {
        dir.path()
            .join(format!("index/tenant={tenant}/dt=2026-11-{day}"))
    };
    std::fs::write(index("acme", "20").join("meta.json"), b"{not json").unwrap();
    std::fs::remove_dir_all(index("acme", "21")).unwrap();
    let globex_21 = index("globex", "21");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(globex_21.join("meta.json")).unwrap()).unwrap();
    let mut emptied = meta.clone();
    emptied["segments"] = json!([]);
    std::fs::write(
        globex_21.join("meta.json"),
        serde_json::to_vec(&emptied).unwrap(),
    )
    .unwrap();
    assert!(
        Store::open(config(dir.path())).is_err(),
        "an unusable index stops the store"
    );

    let mut progress = Vec::new();
    let report = Store::reindex(
        config(dir.path()),
        &ReindexOptions::default(),
        &published,
        &mut |p| progress.push(p.clone()),
    )
    .unwrap();
    let rebuilt: Vec<_> = report
        .rebuilt
        .iter()
        .map(|d| {
            (
                d.tenant.as_str(),
                d.day.to_string(),
                d.why.split(':').next().unwrap().to_string(),
                d.events,
            )
        })
        .collect();
    let acme_20 = before[0]
        .iter()
        .filter(|d| d["@timestamp"].as_str().unwrap().starts_with("2026-11-20"))
        .count() as u64;
    let globex_21_events = before[1]
        .iter()
        .filter(|d| d["@timestamp"].as_str().unwrap().starts_with("2026-11-21"))
        .count() as u64;
    assert_eq!(
        rebuilt,
        vec![
            (
                "acme",
                "2026-11-20".to_string(),
                "cannot be used".to_string(),
                acme_20
            ),
            (
                "acme",
                "2026-11-21".to_string(),
                "missing".to_string(),
                before[0].len() as u64 - acme_20
            ),
            (
                "globex",
                "2026-11-21".to_string(),
                format!("holds 0 events, its Parquet files {globex_21_events}"),
                globex_21_events
            ),
        ]
    );
    assert_eq!(report.sound, 1, "globex's 20th is left as it was");
    // Days are rebuilt side by side: each is started once, numbered, before it is done.
    let mut started: Vec<usize> = progress
        .iter()
        .filter_map(|p| match p {
            ReindexProgress::Starting { n, of: 3, .. } => Some(*n),
            _ => None,
        })
        .collect();
    started.sort();
    assert_eq!(started, [1, 2, 3], "{progress:?}");
    assert_eq!(
        progress
            .iter()
            .filter(|p| matches!(p, ReindexProgress::Done(_)))
            .count(),
        3
    );

    let store = Store::open(config(dir.path())).unwrap();
    for (tenant, docs) in ["acme", "globex"].iter().zip(&before) {
        assert_eq!(
            &documents_by_id(&store, tenant),
            docs,
            "{tenant}: the same documents"
        );
    }
    let adjusted_doc = store.get_event("acme", &events[0].id().0).unwrap().unwrap();
    assert_eq!(
        adjusted_doc["perimeter"]["timestamp_adjusted"], true,
        "{adjusted_doc}"
    );
    assert_eq!(adjusted_doc, events[0].to_output_json());
    let raw_word = search_all(&store, "acme", "rarewordinraw", 10);
    assert_eq!(
        raw_word.len(),
        1,
        "free text over raw values is indexed again"
    );
    assert_eq!(
        parquet_contents(dir.path()),
        parquet_before,
        "Parquet files untouched"
    );
    let again = store.write_batch(&batch(events.clone())).unwrap();
    assert_eq!(
        (again.events_written, again.events_duplicate),
        (0, events.len()),
        "dedup knows every event"
    );
    drop(store);

    // Asked for: a sound index is rebuilt too, to the same documents.
    let report = Store::reindex(
        config(dir.path()),
        &ReindexOptions {
            tenant: Some("globex".into()),
            all: true,
            ..Default::default()
        },
        &published,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(report.rebuilt.len(), 2, "{report:?}");
    assert!(report
        .rebuilt
        .iter()
        .all(|d| d.tenant == "globex" && d.why.contains("--all")));

    // What a rebuild interrupted before its swap leaves is removed on open.
    let leftover = dir.path().join("index/tenant=acme/.rebuild-dt=2026-11-20");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("meta.json"), b"{}").unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert!(!leftover.exists());
    assert_eq!(documents_by_id(&store, "globex"), before[1]);
}

/// A Parquet file that cannot be read stops the rebuild of its day with an error naming it,
/// and no index built without its events is put in place.
#[test]
fn reindex_stops_at_an_unreadable_parquet_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = stored_once(dir.path(), acme_okta(20, 9, "u", 0..4));
    cut_short(&file);
    let index = dir.path().join("index/tenant=acme/dt=2026-11-20");
    std::fs::remove_dir_all(&index).unwrap();

    let err = reindex_unsound(dir.path()).unwrap_err();
    match err {
        StoreError::Corrupt { path, reason } => {
            assert_eq!(path, file);
            assert!(reason.contains("unreadable parquet file"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(!index.exists(), "no partial index put in place");
}

/// QA: one unreadable Parquet file in a day whose index is sound stopped the rebuild of every
/// other day. That day is left as it is (its index holds the file's events), the file named in
/// the report, and the damaged index of another day is rebuilt.
#[test]
fn an_unreadable_file_of_a_sound_day_does_not_stop_the_rebuild_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store
        .write_batch(&batch(acme_okta(20, 9, "u", 0..4)))
        .unwrap();
    store
        .write_batch(&batch(acme_okta(21, 9, "v", 0..3)))
        .unwrap();
    drop(store);
    let day_20 = parquet_files(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains("dt=2026-11-20"))
        .unwrap();
    cut_short(&day_20);
    let index_21 = dir.path().join("index/tenant=acme/dt=2026-11-21");
    std::fs::remove_dir_all(&index_21).unwrap();

    // (`run --check` names it too.)
    let store = Store::open_read_only(config(dir.path())).unwrap();
    assert_eq!(
        store.unreadable_parquet_files().unwrap(),
        vec![day_20.clone()]
    );
    drop(store);
    let report = reindex_unsound(dir.path()).unwrap();
    assert_eq!(report.unreadable_files, vec![day_20], "{report:?}");
    let rebuilt: Vec<_> = report.rebuilt.iter().map(|d| d.day.to_string()).collect();
    assert_eq!(rebuilt, ["2026-11-21"], "{report:?}");
    assert_eq!(report.rebuilt[0].events, 3);
    assert_eq!(report.sound, 1);
}

/// A crash between writing a batch's Parquet files and committing its index leaves
/// `.parquet.tmp` files. With the day's index usable, a reindex settles them as the writer's
/// recovery does (only a committed batch's file stays); with the index lost, a readable file is
/// kept and indexed (never a loss: a resend of its events is a duplicate), an unreadable one
/// (cut short, so never committed) removed.
#[test]
fn reindex_settles_the_files_of_interrupted_batches() {
    let dir = tempfile::tempdir().unwrap();
    let committed = stored_once(dir.path(), acme_okta(20, 9, "u", 0..4));
    // The file a later batch of two other events wrote before its index commit.
    let other = tempfile::tempdir().unwrap();
    let second = acme_okta(20, 10, "v", 10..12);
    let second_file = stored_once(other.path(), second.clone());
    let seq: u64 = committed.file_name().unwrap().to_str().unwrap()[5..25]
        .parse()
        .unwrap();
    let partition = committed.parent().unwrap().to_path_buf();
    let interrupted = |n: u64| partition.join(format!(".part-{:020}-0000.parquet.tmp", seq + n));
    let leave_interrupted_batches = || {
        std::fs::copy(&second_file, interrupted(1)).unwrap();
        std::fs::write(interrupted(2), b"PAR1 cut short").unwrap();
    };
    let reindex = || reindex_unsound(dir.path()).unwrap();

    leave_interrupted_batches();
    let report = reindex();
    assert_eq!(
        (
            report.interrupted_files_kept,
            report.interrupted_files_removed,
            report.sound
        ),
        (0, 2, 1),
        "{report:?}"
    );
    assert_eq!(parquet_files(dir.path()), vec![committed.clone()]);

    leave_interrupted_batches();
    std::fs::remove_dir_all(dir.path().join("index/tenant=acme/dt=2026-11-20")).unwrap();
    let report = reindex();
    assert_eq!(
        (
            report.interrupted_files_kept,
            report.interrupted_files_removed,
            report.events()
        ),
        (1, 1, 6),
        "{report:?}"
    );
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(search_all(&store, "acme", "", 10).len(), 6);
    let again = store.write_batch(&batch(second)).unwrap();
    assert_eq!(
        again.events_duplicate, 2,
        "the kept file's events are known"
    );
}

/// One unreadable Parquet file (cut short, bit rot) is named and left as it is; the rest of its
/// partition and every other partition are still compacted, and no row is lost or doubled.
#[test]
fn compaction_names_an_unreadable_file_and_compacts_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        parquet_max_file_age_seconds: 0,
        ..config(dir.path())
    })
    .unwrap();
    for b in 0..3u64 {
        let events: Vec<Event> = ["okta", "github"]
            .iter()
            .flat_map(|source| {
                (0..4).map(move |i| {
                    event(
                        "acme",
                        source,
                        ts(20, b as u32, i as u32),
                        "u",
                        "a",
                        b * 100 + i,
                    )
                })
            })
            .collect();
        store.write_batch(&batch(events)).unwrap();
    }
    let okta_files: Vec<PathBuf> = parquet_files(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("source=okta"))
        .collect();
    assert_eq!(okta_files.len(), 3);
    let damaged = &okta_files[1];
    cut_short(damaged);

    let report = store.compact().unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(
        report.failed[0].starts_with(&damaged.display().to_string())
            && report.failed[0].contains("unreadable"),
        "{report:?}"
    );
    assert_eq!(
        (
            report.partitions_compacted,
            report.files_merged,
            report.rows
        ),
        (2, 5, 20),
        "{report:?}"
    );
    let files = parquet_files(dir.path());
    assert_eq!(
        files.len(),
        3,
        "one merged file per partition, and the damaged one: {files:?}"
    );
    assert!(files.contains(damaged));
    let rows: usize = files
        .iter()
        .filter(|f| *f != damaged)
        .flat_map(|f| read_parquet_file(f).unwrap())
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 20);
    let leftovers: Vec<_> = std::fs::read_dir(damaged.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// QA: bit rot in the pages of a column other than the ids left a file "sound" to the repair
/// (it read the ids only), while `reindex` and outside readers could not read it.
#[test]
fn repair_parquet_finds_damage_in_any_column() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let events: Vec<Event> = (0..200u32)
        .map(|i| event("acme", "okta", ts(20, 0, i % 60), "u", "a", u64::from(i)))
        .collect();
    store.write_batch(&batch(events)).unwrap();
    drop(store);
    let file = parquet_files(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains("parquet/events/"))
        .unwrap();
    // The pages of the raw record's column, garbled; the footer stays.
    let (start, len) = {
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        let raw = (0..group.num_columns())
            .map(|i| group.column(i))
            .find(|c| c.column_path().string() == "raw")
            .expect("a raw column");
        let (start, len) = raw.byte_range();
        (start as usize, len as usize)
    };
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[start + len / 4..start + len * 3 / 4] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();
    let check = Store::repair_parquet(
        config(dir.path()),
        &ReindexOptions {
            check_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let unreadable: Vec<&PathBuf> = check.repaired.iter().flat_map(|p| &p.unreadable).collect();
    assert_eq!(unreadable, [&file], "{check:?}");
}

/// `Store::repair_parquet` writes back from the day's index the events of an unreadable file
/// and of a deleted partition, sets the unreadable file aside, and leaves sound days alone:
/// afterwards the Parquet files hold every event once, and rebuilding the index from them gives
/// the same documents. `check_only` says as much and changes nothing.
#[test]
fn repair_parquet_restores_unreadable_and_deleted_files_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut ids = Vec::new();
    for b in 0..2u32 {
        let events: Vec<Event> = ["okta", "github"]
            .iter()
            .flat_map(|source| {
                (0..3).map(move |i| {
                    event("acme", source, ts(20, b, i), "u", "a", (b * 10 + i) as u64)
                })
            })
            .chain([event("acme", "okta", ts(21, b, 0), "u", "a", 99 + b as u64)])
            .collect();
        ids.extend(events.iter().map(|e| e.id().0.clone()));
        store.write_batch(&batch(events)).unwrap();
    }
    let before = documents_by_id(&store, "acme");
    drop(store);
    let partition = |source: &str, day: u32| {
        dir.path().join(format!(
            "parquet/events/tenant=acme/source={source}/dt=2026-11-{day}"
        ))
    };
    // A partition's files with their bytes.
    let contents = |partition: PathBuf| -> Vec<(PathBuf, Vec<u8>)> {
        parquet_contents(dir.path())
            .into_iter()
            .filter(|(p, _)| p.starts_with(&partition))
            .collect()
    };
    let damaged = contents(partition("okta", 20)).remove(0).0;
    cut_short(&damaged);
    std::fs::remove_dir_all(partition("github", 20)).unwrap();
    let untouched = contents(partition("okta", 21));

    let options = |check_only| ReindexOptions {
        check_only,
        ..Default::default()
    };
    let check = Store::repair_parquet(config(dir.path()), &options(true)).unwrap();
    let planned: Vec<_> = check
        .repaired
        .iter()
        .map(|p| {
            (
                p.source.as_str(),
                p.restored,
                p.unreadable.len(),
                p.file.is_some(),
            )
        })
        .collect();
    assert_eq!(planned, [("github", 6, 0, false), ("okta", 3, 1, false)]);
    assert!(damaged.exists(), "--check changes nothing");

    let report = Store::repair_parquet(config(dir.path()), &options(false)).unwrap();
    assert_eq!(report.sound, 1, "the 21st is left alone: {report:?}");
    assert_eq!(report.repaired.len(), 2);
    assert!(report
        .repaired
        .iter()
        .all(|p| p.file.as_ref().is_some_and(|f| f.exists())));
    assert!(!damaged.exists());
    let name = damaged.file_name().unwrap().to_string_lossy();
    assert!(damaged
        .with_file_name(format!(".{name}.unreadable"))
        .exists());
    let mut stored = parquet_ids(dir.path());
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids, "every event once");
    assert_eq!(contents(partition("okta", 21)), untouched);
    let again = Store::repair_parquet(config(dir.path()), &options(false)).unwrap();
    assert!(again.repaired.is_empty(), "{again:?}");

    // Round trip: the index rebuilt from the repaired files holds the same documents.
    let rebuilt = Store::reindex(
        config(dir.path()),
        &ReindexOptions {
            all: true,
            ..Default::default()
        },
        &published,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(rebuilt.events(), ids.len() as u64);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(documents_by_id(&store, "acme"), before);
}

/// A day larger than what a rebuild reads ahead at a time is rebuilt whole, reporting progress
/// on the way.
#[test]
fn reindex_rebuilds_a_day_larger_than_its_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (0..4_500u64)
        .map(|n| {
            event(
                "acme",
                "okta",
                ts(20, (n / 600) as u32, (n % 60) as u32),
                &format!("u{n}"),
                "a",
                n,
            )
        })
        .collect();
    stored_once(dir.path(), events);
    let mut indexed = Vec::new();
    let report = Store::reindex(
        config(dir.path()),
        &ReindexOptions {
            all: true,
            ..Default::default()
        },
        &published,
        &mut |p| {
            if let ReindexProgress::Indexed { n, events } = p {
                indexed.push((*n, *events));
            }
        },
    )
    .unwrap();
    assert_eq!(report.events(), 4_500);
    assert_eq!(indexed, [(1, 4_096)], "progress after each read-ahead");
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.stats().events_stored, 4_500);
}

/// QA: with e-mail pseudonyms on, the alert filters (`entity`, the words of `q`) and the
/// dead-letter text filter compared an address with the stored pseudonym and found nothing,
/// where event search finds it. They match the stored form too, in the list and the summary.
#[test]
fn alerts_are_found_by_the_value_masking_stored_as_a_pseudonym() {
    let dir = tempfile::tempdir().unwrap();
    let hashed = |term: &str| format!("hmac:{:016x}", term.to_lowercase().len() * 7919);
    let masker = move |term: &str| term.contains('@').then(|| hashed(term));
    let store = Store::open(config(dir.path()))
        .unwrap()
        .with_query_masker(std::sync::Arc::new(masker));
    let e = event("acme", "okta", ts(20, 1, 0), "x", "Login", 1);
    let mut a = Alert::new(
        "okta_token",
        "API token created",
        Severity::High,
        DetectorKind::Sigma,
        "okta",
        "acme",
        e.timestamp,
        hashed("dana.kim@acme.example"),
        EntityKind::User,
    )
    .with_evidence(&e);
    a.description = Some(format!("by {}", hashed("erin@acme.example")));
    let a = a.seal();
    let dead = DeadLetter {
        line: Some(1),
        source: "okta".into(),
        tenant: "acme".into(),
        received_at: ts(20, 0, 0),
        reason: "invalid JSON".into(),
        excerpt: format!("{{\"actor\":\"{}\",", hashed("dana.kim@acme.example")),
        input_digest: None,
    };
    store
        .write_batch(&StoreBatch {
            events: vec![e],
            alerts: vec![a.clone()],
            dead_letters: vec![dead],
        })
        .unwrap();
    let dead_letters = |text: &str| {
        let q = DeadLetterQuery {
            text: Some(text.into()),
            limit: 10,
            ..Default::default()
        };
        store.list_dead_letters("acme", &q).unwrap().items.len()
    };
    assert_eq!(dead_letters("Dana.Kim@acme.example"), 1);
    assert_eq!(dead_letters("bob@acme.example"), 0);
    let found = |q: AlertQuery| -> Vec<String> {
        let summary = store.alert_summary("acme", &q);
        let ids = alert_ids(&store, "acme", &q);
        assert_eq!(summary.total, ids.len(), "{q:?}");
        ids
    };
    let by_entity = |entity: &str| AlertQuery {
        entity: Some(entity.into()),
        ..Default::default()
    };
    let by_text = |text: &str| AlertQuery {
        text: Some(text.into()),
        ..Default::default()
    };
    assert_eq!(
        found(by_entity("Dana.Kim@acme.example")),
        vec![a.id.clone()]
    );
    assert_eq!(found(by_entity(&a.entity)), vec![a.id.clone()]);
    assert_eq!(
        found(by_text("token erin@acme.example")),
        vec![a.id.clone()]
    );
    assert!(found(by_entity("bob@acme.example")).is_empty());
    assert!(found(by_text("token bob@acme.example")).is_empty());
}

/// A value stored as its keyed hash because of its key's name (Salesforce's `SESSION_KEY`) or
/// its field's masking rule (`user.email`) is found by the value itself once the store knows
/// how terms are hashed: each term also matches its pseudonym. The value's other terms and a
/// search for the stored form itself still work; another value does not match.
#[test]
fn values_stored_hashed_whole_are_found_by_the_value_itself() {
    let dir = tempfile::tempdir().unwrap();
    // A stand-in for the masker's keyed hash: any fixed function of the exact text.
    let pseudonym = |term: &str| {
        format!(
            "hmac:{:016x}",
            term.bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        )
    };
    let store = Store::open(config(dir.path()))
        .unwrap()
        .with_query_pseudonyms(std::sync::Arc::new(pseudonym));
    let mut a = event(
        "acme",
        "salesforce",
        ts(20, 1, 0),
        "alice@acme.test",
        "Login",
        1,
    );
    let mut raw = perimeter_model::raw_to_serde(&a.raw);
    raw["SESSION_KEY"] = json!(pseudonym("c75cccb7df1d20a6"));
    a.raw = perimeter_model::raw_from_serde(&raw);
    a.ecs.user_email = Some(pseudonym("hashme0@acme.example"));
    let b = event(
        "acme",
        "salesforce",
        ts(20, 2, 0),
        "bob@acme.test",
        "Login",
        2,
    );
    store
        .write_batch(&batch(vec![a.clone(), b.clone()]))
        .unwrap();
    let ids = |q: &str| -> Vec<String> {
        search_all(&store, "acme", q, 10)
            .iter()
            .map(|d| d["event"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let only_a = vec![a.id().0.clone()];
    assert_eq!(ids("c75cccb7df1d20a6"), only_a);
    assert_eq!(ids("\"c75cccb7df1d20a6\""), only_a);
    assert_eq!(ids("user.email:\"hashme0@acme.example\""), only_a);
    assert_eq!(ids("event.action:Login AND c75cccb7df1d20a6"), only_a);
    assert_eq!(
        ids(&format!("\"{}\"", pseudonym("c75cccb7df1d20a6"))),
        only_a
    );
    // Pasted as shown, unquoted (QA: read as a field `hmac` and refused).
    assert_eq!(ids(&pseudonym("c75cccb7df1d20a6")), only_a);
    assert_eq!(
        ids(&format!(
            "event.action:Login AND {}",
            pseudonym("c75cccb7df1d20a6")
        )),
        only_a
    );
    assert!(ids("61f86575daf6da29").is_empty());
    // Terms stored in clear are found as before, on every kind of field.
    assert_eq!(ids("bob"), vec![b.id().0.clone()]);
    assert_eq!(ids("event.action:Login").len(), 2);
    assert_eq!(ids("source.as.number:64501"), only_a);
    assert_eq!(ids("source.as.number:[64500 TO 64502]").len(), 2);
    assert_eq!(ids("source.ip:198.51.100.0/24").len(), 2);
    assert_eq!(ids("user.name:ali*"), only_a);
    assert_eq!(ids(&format!("event.id:{}", a.id().0)), only_a);
    assert_eq!(ids("@timestamp:[2020-01-01 TO *] AND NOT bob"), only_a);
}
