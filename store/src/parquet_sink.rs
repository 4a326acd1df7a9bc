//! The Parquet side: masked events as hive-partitioned files `tenant=/source=/dt=`.
//!
//! Columns (standard arrow types only, so DuckDB, Spark and pyarrow read them as is; ECS dots
//! become underscores so SQL needs no quoting):
//!
//! | column | type |
//! |---|---|
//! | `event_id` | utf8, not null |
//! | `timestamp` (ECS `@timestamp`) | timestamp(us, UTC), not null |
//! | `received_at` | timestamp(us, UTC), not null |
//! | `line` | int64 |
//! | `event_action`, `event_outcome`, `user_name`, `user_email`, `user_id`, `user_target_name`, `user_target_email`, `user_target_id`, `source_ip`, `source_geo_country_iso_code`, `user_agent_original`, `organization_id`, `cloud_account_id` | utf8 |
//! | `source_as_number` | int64 |
//! | `event_category`, `event_type`, `related_ip`, `related_user` | list<utf8> |
//! | `raw` | utf8: the masked vendor record as JSON text |
//!
//! `tenant`, `source` and `dt` are not columns: they are the hive partition keys in the path,
//! which is how Spark, DuckDB (`hive_partitioning = true`) and pyarrow datasets expect them.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use perimeter_model::{Ecs, Event, RawRecord};

use crate::error::IoContext;
use crate::Result;

const STRING_COLUMNS: &[(&str, &str)] = &[
    ("event_action", "event.action"),
    ("event_outcome", "event.outcome"),
    ("user_name", "user.name"),
    ("user_email", "user.email"),
    ("user_id", "user.id"),
    ("user_target_name", "user.target.name"),
    ("user_target_email", "user.target.email"),
    ("user_target_id", "user.target.id"),
    ("source_ip", "source.ip"),
    ("source_geo_country_iso_code", "source.geo.country_iso_code"),
    ("user_agent_original", "user_agent.original"),
    ("organization_id", "organization.id"),
    ("cloud_account_id", "cloud.account.id"),
];
const LIST_COLUMNS: &[(&str, &str)] = &[
    ("event_category", "event.category"),
    ("event_type", "event.type"),
    ("related_ip", "related.ip"),
    ("related_user", "related.user"),
];

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The arrow schema of event files.
pub fn event_arrow_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                Field::new("event_id", DataType::Utf8, false),
                Field::new("timestamp", ts_type(), false),
                Field::new("received_at", ts_type(), false),
                Field::new("line", DataType::Int64, true),
            ];
            for (col, _) in STRING_COLUMNS {
                fields.push(Field::new(*col, DataType::Utf8, true));
            }
            fields.push(Field::new("source_as_number", DataType::Int64, true));
            for (col, _) in LIST_COLUMNS {
                fields.push(Field::new_list(
                    *col,
                    Field::new_list_field(DataType::Utf8, true),
                    true,
                ));
            }
            fields.push(Field::new("raw", DataType::Utf8, false));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// Arrow record batch of events; `raws` are the masked raw records as JSON text, same order.
pub fn events_to_record_batch(events: &[&Event], raws: &[&str]) -> Result<RecordBatch> {
    let n = events.len();
    let mut id = StringBuilder::with_capacity(n, n * 32);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut received = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut line = Int64Builder::with_capacity(n);
    let mut strings: Vec<StringBuilder> = STRING_COLUMNS
        .iter()
        .map(|_| StringBuilder::with_capacity(n, n * 16))
        .collect();
    let mut as_number = Int64Builder::with_capacity(n);
    let mut lists: Vec<ListBuilder<StringBuilder>> = LIST_COLUMNS
        .iter()
        .map(|_| ListBuilder::new(StringBuilder::new()))
        .collect();
    let raw_bytes: usize = raws.iter().map(|r| r.len()).sum();
    let mut raw = StringBuilder::with_capacity(n, raw_bytes);
    for (e, r) in events.iter().zip(raws) {
        id.append_value(&e.id().0);
        ts.append_value(e.timestamp.timestamp_micros());
        received.append_value(e.received_at.timestamp_micros());
        line.append_option(e.line.and_then(|l| i64::try_from(l).ok()));
        for ((_, ecs_name), b) in STRING_COLUMNS.iter().zip(strings.iter_mut()) {
            match e.ecs.get(ecs_name) {
                Some(perimeter_model::EcsValue::Str(s)) => b.append_value(s),
                _ => b.append_null(),
            }
        }
        as_number.append_option(e.ecs.source_as_number.and_then(|n| i64::try_from(n).ok()));
        for ((_, ecs_name), b) in LIST_COLUMNS.iter().zip(lists.iter_mut()) {
            if let Some(perimeter_model::EcsValue::List(l)) = e.ecs.get(ecs_name) {
                for s in l {
                    b.values().append_value(s);
                }
            }
            b.append(true);
        }
        raw.append_value(r);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(ts.finish()),
        Arc::new(received.finish()),
        Arc::new(line.finish()),
    ];
    columns.extend(strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(as_number.finish()));
    columns.extend(lists.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(raw.finish()));
    Ok(RecordBatch::try_new(event_arrow_schema(), columns)?)
}

/// The events of a record batch written by [`events_to_record_batch`], read back: what the
/// store kept of each (masked raw record, ECS columns, id, times, input line), with `tenant` and
/// `source` from the partition the file is in. `timestamp_adjusted` is not a column: it comes
/// back false, and the caller decides it ([`crate::Store::reindex`]).
pub fn events_from_record_batch(
    batch: &RecordBatch,
    tenant: &str,
    source: &str,
) -> Result<Vec<Event>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    let bad = |what: &str| crate::StoreError::InvalidBatch(format!("parquet events: {what}"));
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| bad(name));
    let strings = |name: &str| {
        column(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| bad(name))
    };
    let times = |name: &str| {
        column(name)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| bad(name))
    };
    let ints = |name: &str| {
        column(name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad(name))
    };
    let ids = strings("event_id")?;
    let (timestamps, received) = (times("timestamp")?, times("received_at")?);
    let (lines, as_numbers) = (ints("line")?, ints("source_as_number")?);
    let raws = strings("raw")?;
    let string_columns = STRING_COLUMNS
        .iter()
        .map(|(col, ecs)| Ok((*ecs, strings(col)?)))
        .collect::<Result<Vec<_>>>()?;
    let list_columns = LIST_COLUMNS
        .iter()
        .map(|(col, ecs)| {
            Ok((
                *ecs,
                column(col)?.as_list_opt::<i32>().ok_or_else(|| bad(col))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let time = |micros: i64| {
        DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| bad("a time out of range"))
    };
    let mut events = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut ecs = Ecs::default();
        for (name, values) in &string_columns {
            if values.is_valid(row) {
                ecs.set_text(name, values.value(row));
            }
        }
        for (name, lists) in &list_columns {
            if lists.is_valid(row) {
                let items = lists.value(row);
                let items = items.as_string_opt::<i32>().ok_or_else(|| bad(name))?;
                let list: Vec<String> = (0..items.len())
                    .filter(|&i| items.is_valid(i))
                    .map(|i| items.value(i).to_string())
                    .collect();
                ecs.set_list(name, list);
            }
        }
        ecs.source_as_number = as_numbers
            .is_valid(row)
            .then(|| u64::try_from(as_numbers.value(row)).ok())
            .flatten();
        let timestamp = time(timestamps.value(row))?;
        let raw: perimeter_model::RawJson = sonic_rs::from_str(raws.value(row))
            .map_err(|e| bad(&format!("raw record of {}: {e}", ids.value(row))))?;
        let record = RawRecord {
            source: source.to_string(),
            tenant: tenant.to_string(),
            received_at: time(received.value(row))?,
            line: lines
                .is_valid(row)
                .then(|| u64::try_from(lines.value(row)).ok())
                .flatten(),
            raw,
        };
        let id = perimeter_model::EventId(ids.value(row).to_string());
        events.push(Event::stored(record, ecs, id, timestamp, false));
    }
    Ok(events)
}

pub(crate) fn writer_properties() -> WriterProperties {
    writer_properties_builder().build()
}

pub(crate) fn writer_properties_builder() -> parquet::file::properties::WriterPropertiesBuilder {
    // Snappy and format v1 pages: the combination every Parquet reader supports. The unique
    // columns (`event_id`, `raw`, and the per-event numbers `timestamp`, `received_at`, `line`)
    // skip the dictionary attempt (every value would be hashed, and a dictionary holding every
    // value of a file is only kept for the small ones), and `raw` the min/max statistics of
    // kilobyte strings nobody filters on.
    let unique = |c: &str| ColumnPath::from(c);
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_column_dictionary_enabled(unique("event_id"), false)
        .set_column_dictionary_enabled(unique("timestamp"), false)
        .set_column_dictionary_enabled(unique("received_at"), false)
        .set_column_dictionary_enabled(unique("line"), false)
        .set_column_dictionary_enabled(unique("raw"), false)
        .set_column_statistics_enabled(unique("raw"), EnabledStatistics::None)
        .set_created_by(format!("perimeter-store {}", env!("CARGO_PKG_VERSION")))
}

/// Events per arrow record batch when writing a file: the builders' buffers (about 1.3 KB per
/// event) are then reused slice after slice instead of sized for the whole file, which had the
/// writer thread fault tens of MB of fresh pages in per file. The file is the same: one row
/// group, pages cut by size.
const ROWS_PER_RECORD_BATCH: usize = 4096;

/// Write the events (with their raw records as JSON text, same order) as one complete Parquet
/// file at `path` and fsync it. Returns the bytes written.
pub fn write_events_file(path: &Path, events: &[&Event], raws: &[&str]) -> Result<u64> {
    write_file(path, event_arrow_schema(), |writer| {
        for (evs, rs) in events
            .chunks(ROWS_PER_RECORD_BATCH)
            .zip(raws.chunks(ROWS_PER_RECORD_BATCH))
        {
            writer.write(&events_to_record_batch(evs, rs)?)?;
        }
        Ok(())
    })
}

/// Read the event file at `path` record batch by record batch into `each`. A file that cannot be
/// read, or holds another schema, is `Corrupt` naming it: compaction and reindex stop at it
/// rather than write a merged file or an index without its rows.
pub(crate) fn read_event_batches(
    path: &Path,
    mut each: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let corrupt = |reason: String| crate::StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let unreadable = |e: &dyn std::fmt::Display| corrupt(format!("unreadable parquet file ({e})"));
    let file = File::open(path).at(path)?;
    let batches = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| unreadable(&e))?;
    for batch in batches {
        let batch = batch.map_err(|e| unreadable(&e))?;
        if batch.schema() != event_arrow_schema() {
            return Err(corrupt(
                "parquet schema differs from the event schema".into(),
            ));
        }
        each(batch)?;
    }
    Ok(())
}

/// Write one complete Parquet file at `path` and fsync it. Returns the bytes written.
pub fn write_parquet_file(path: &Path, batch: &RecordBatch) -> Result<u64> {
    write_file(path, batch.schema(), |writer| Ok(writer.write(batch)?))
}

/// Create the file at `path`, let `fill` write its record batches, close it and fsync it.
/// Returns the bytes written.
fn write_file(
    path: &Path,
    schema: SchemaRef,
    fill: impl FnOnce(&mut ArrowWriter<File>) -> Result<()>,
) -> Result<u64> {
    let file = File::create(path).at(path)?;
    let mut writer = ArrowWriter::try_new(file, schema, Some(writer_properties()))?;
    fill(&mut writer)?;
    let file = writer.into_inner()?;
    file.sync_all().at(path)?;
    let len = file.metadata().at(path)?.len();
    Ok(len)
}

/// Read every record batch of a Parquet file (used by recovery, compaction and tests).
pub fn read_parquet_file(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).at(path)?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out = Vec::new();
    for b in reader {
        out.push(b?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use chrono::{TimeZone, Utc};
    use perimeter_model::{Ecs, RawRecord};

    #[test]
    fn a_file_written_slice_by_slice_is_one_row_group_with_every_event_in_order() {
        let at = Utc.with_ymd_and_hms(2026, 11, 2, 3, 4, 5).unwrap();
        let events: Vec<Event> = (0..ROWS_PER_RECORD_BATCH as u64 + 3)
            .map(|n| {
                let record = RawRecord {
                    source: "okta".into(),
                    tenant: "acme".into(),
                    received_at: at,
                    line: Some(n),
                    raw: perimeter_model::raw_from_serde(&serde_json::json!({ "n": n })),
                };
                Event::new("okta", record, Ecs::default())
            })
            .collect();
        let evs: Vec<&Event> = events.iter().collect();
        let raws: Vec<String> = (0..events.len())
            .map(|n| format!("{{\"n\":{n}}}"))
            .collect();
        let rs: Vec<&str> = raws.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.parquet");
        write_events_file(&path, &evs, &rs).unwrap();

        let file = File::open(&path).unwrap();
        let builder =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(builder.metadata().num_row_groups(), 1);
        // Columns with a value per event are written without a dictionary; the others keep it.
        let rg = builder.metadata().row_group(0);
        for c in rg.columns() {
            let name = c.column_path().string();
            let unique = ["event_id", "timestamp", "received_at", "line", "raw"];
            assert_eq!(
                c.dictionary_page_offset().is_none(),
                unique.contains(&name.as_str()),
                "{name}"
            );
        }
        let mut ids = Vec::new();
        let mut raw_col = Vec::new();
        for b in builder.build().unwrap() {
            let b = b.unwrap();
            let id = b.column_by_name("event_id").unwrap().as_string::<i32>();
            ids.extend(id.iter().map(|v| v.unwrap().to_string()));
            let raw = b.column_by_name("raw").unwrap().as_string::<i32>();
            raw_col.extend(raw.iter().map(|v| v.unwrap().to_string()));
        }
        let want: Vec<String> = events.iter().map(|e| e.id().0.clone()).collect();
        assert_eq!(ids, want);
        assert_eq!(raw_col, raws);
    }
}
