//! Alerts as Parquet: `parquet/alerts/tenant=<t>/dt=YYYY-MM-DD/alerts.parquet`, one file per
//! tenant and day of the alerts' `@timestamp`, each alert as it stands (triage status, assignee,
//! `count`, `last_seen`), for DuckDB, Spark or pyarrow beside the events.
//!
//! The alert journal stays the record (triage changes every alert after it is raised, which an
//! append-only columnar file cannot); a day's file is its export, rewritten whole (temp file,
//! fsync, rename, directory fsync) whenever an alert of that day is stored, grouped into or
//! triaged, before the write or the change returns, and every day again when the writer opens
//! the store (which also makes up for a crash between the journal and the file).
//!
//! | column | type |
//! |---|---|
//! | `alert_id`, `rule_id`, `title`, `severity`, `detector`, `source`, `entity`, `entity_kind`, `status` | utf8, not null |
//! | `timestamp` (first occurrence), `last_seen` (newest occurrence) | timestamp(us, UTC), not null |
//! | `count` (occurrences grouped), `notes` (how many) | int64, not null |
//! | `assignee`, `explanation`, `rule_hash` | utf8 |
//! | `score` | float64 |
//! | `event_ids`, `tags` | list<utf8> |
//! | `lines` | list<int64> |
//! | `matched_fields` | utf8: JSON object (masked like the alert) |

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;

use crate::alerts::{AlertBook, AlertRecord};
use crate::error::IoContext;
use crate::layout::{create_dir_durable, sync_dir, Layout};
use crate::Result;

const TEXT_COLUMNS: &[&str] = &[
    "alert_id",
    "rule_id",
    "title",
    "severity",
    "detector",
    "source",
    "entity",
    "entity_kind",
    "status",
];

/// The arrow schema of the alert files.
pub fn alert_arrow_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            let list = |item: DataType| DataType::List(Arc::new(Field::new("item", item, true)));
            let mut fields: Vec<Field> = TEXT_COLUMNS
                .iter()
                .map(|c| Field::new(*c, DataType::Utf8, false))
                .collect();
            fields.extend([
                Field::new("timestamp", ts.clone(), false),
                Field::new("last_seen", ts, false),
                Field::new("count", DataType::Int64, false),
                Field::new("notes", DataType::Int64, false),
                Field::new("assignee", DataType::Utf8, true),
                Field::new("explanation", DataType::Utf8, true),
                Field::new("rule_hash", DataType::Utf8, true),
                Field::new("score", DataType::Float64, true),
                Field::new("event_ids", list(DataType::Utf8), false),
                Field::new("tags", list(DataType::Utf8), false),
                Field::new("lines", list(DataType::Int64), false),
                Field::new("matched_fields", DataType::Utf8, false),
            ]);
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// An enum's wire name (`high`, `false_positive`, `correlation`).
fn label<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// The records as one arrow batch of [`alert_arrow_schema`].
pub(crate) fn alerts_to_record_batch(records: &[&AlertRecord]) -> Result<RecordBatch> {
    let mut text: Vec<StringBuilder> = TEXT_COLUMNS.iter().map(|_| StringBuilder::new()).collect();
    let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let (mut first, mut last) = (ts(), ts());
    let (mut count, mut notes) = (Int64Builder::new(), Int64Builder::new());
    let (mut assignee, mut explanation, mut rule_hash) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut score = Float64Builder::new();
    let (mut event_ids, mut tags) = (
        ListBuilder::new(StringBuilder::new()),
        ListBuilder::new(StringBuilder::new()),
    );
    let mut lines = ListBuilder::new(Int64Builder::new());
    let mut matched = StringBuilder::new();
    for r in records {
        let a = &r.alert;
        let values = [
            a.id.clone(),
            a.rule_id.clone(),
            a.title.clone(),
            label(&a.severity),
            label(&a.detector),
            a.source.clone(),
            a.entity.clone(),
            label(&a.entity_kind),
            label(&a.status),
        ];
        for (b, v) in text.iter_mut().zip(values) {
            b.append_value(v);
        }
        first.append_value(r.first_occurrence().timestamp_micros());
        last.append_value(r.last_occurrence().timestamp_micros());
        count.append_value(a.count as i64);
        notes.append_value(r.notes.len() as i64);
        assignee.append_option(r.assignee.as_deref());
        explanation.append_option(a.explanation.as_deref());
        rule_hash.append_option(a.rule_hash.as_deref());
        score.append_option(a.score);
        for id in &a.event_ids {
            event_ids.values().append_value(id);
        }
        event_ids.append(true);
        for t in &a.tags {
            tags.values().append_value(t);
        }
        tags.append(true);
        for l in &a.lines {
            lines.values().append_value(*l as i64);
        }
        lines.append(true);
        matched.append_value(serde_json::to_string(&a.matched_fields).unwrap_or_default());
    }
    let mut columns: Vec<ArrayRef> = text
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    columns.extend([
        Arc::new(first.finish()) as ArrayRef,
        Arc::new(last.finish()),
        Arc::new(count.finish()),
        Arc::new(notes.finish()),
        Arc::new(assignee.finish()),
        Arc::new(explanation.finish()),
        Arc::new(rule_hash.finish()),
        Arc::new(score.finish()),
        Arc::new(event_ids.finish()),
        Arc::new(tags.finish()),
        Arc::new(lines.finish()),
        Arc::new(matched.finish()),
    ]);
    Ok(RecordBatch::try_new(alert_arrow_schema(), columns)?)
}

/// Write the files of `tenant`'s `days` from `book` as it is now; a day without alerts left
/// (retention removed them) loses its file.
pub(crate) fn export_days(
    layout: &Layout,
    book: &AlertBook,
    tenant: &str,
    days: impl IntoIterator<Item = NaiveDate>,
) -> Result<()> {
    let by_day = book.records_by_day(tenant);
    for day in days {
        let path = layout.parquet_alerts_file(tenant, day);
        let dir = path.parent().expect("a file in a partition directory");
        let records = by_day.get(&day).map(Vec::as_slice).unwrap_or_default();
        if records.is_empty() {
            if path.exists() {
                std::fs::remove_file(&path).at(&path)?;
                sync_dir(dir)?;
            }
            // The day's partition goes with its file (readers listing `dt=` partitions would
            // find an empty one); a directory something else was put in stays.
            if std::fs::remove_dir(dir).is_ok() {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
            }
            continue;
        }
        create_dir_durable(dir)?;
        let tmp = dir.join(".alerts.parquet.tmp");
        crate::parquet_sink::write_parquet_file(&tmp, &alerts_to_record_batch(records)?)?;
        std::fs::rename(&tmp, &path).at(&path)?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// Write every day's file of every tenant in `book` (the writer's open).
pub(crate) fn export_all(layout: &Layout, book: &AlertBook) -> Result<()> {
    for (tenant, days) in all_days(book) {
        export_days(layout, book, &tenant, days)?;
    }
    Ok(())
}

/// Every tenant of `book` with the days it has alerts on.
pub(crate) fn all_days(book: &AlertBook) -> Vec<(String, BTreeSet<NaiveDate>)> {
    book.tenants()
        .map(|t| (t.clone(), book.records_by_day(t).into_keys().collect()))
        .collect()
}
