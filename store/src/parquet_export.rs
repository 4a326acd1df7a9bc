//! Events as one Parquet file made piece by piece, for a download that streams
//! (`GET /api/v1/events/export?format=parquet`): an analyst takes the events a query matched
//! straight into DuckDB, pyarrow or pandas, with the columns of the store's own files.
//!
//! A Parquet file ends with its footer, so it cannot be sent line by line as JSON lines can.
//! Row groups can: each one is sent as soon as it is complete, and the footer last. The writer
//! holds at most one row group ([`EXPORT_ROW_GROUP_ROWS`] events) however large the export. A
//! download cut short has no footer, and no reader takes it for a whole file.

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use perimeter_model::Event;

use crate::parquet_sink::{event_arrow_schema, events_to_record_batch, writer_properties_builder};
use crate::{Result, StoreError};

/// Events per row group of an export: the writer keeps one row group in memory (about 1.3 KB an
/// event before compression) until it is complete and can be sent.
pub const EXPORT_ROW_GROUP_ROWS: usize = 16_384;

/// The columns of an export: those of the store's event files, then `tenant` and `source`,
/// which are path segments (hive partition keys) in the store but columns in a single file. The
/// order is the one DuckDB and pyarrow give the store's files read with hive partitioning, so a
/// query written for one runs on the other.
pub fn export_arrow_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields: Vec<Field> = event_arrow_schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new("tenant", DataType::Utf8, false));
            fields.push(Field::new("source", DataType::Utf8, false));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// One Parquet file of events, written in pieces: [`Self::write`] gives back the bytes that
/// are ready (whole row groups), [`Self::finish`] the rest and the footer.
pub struct ParquetEventExport {
    writer: ArrowWriter<Vec<u8>>,
}

impl ParquetEventExport {
    pub fn new() -> Result<ParquetEventExport> {
        let properties = writer_properties_builder()
            .set_max_row_group_row_count(Some(EXPORT_ROW_GROUP_ROWS))
            .build();
        Ok(ParquetEventExport {
            writer: ArrowWriter::try_new(Vec::new(), export_arrow_schema(), Some(properties))?,
        })
    }

    /// Add `events` (in the order the file should hold them). Returns the bytes of the file
    /// made ready by them, often none until a row group is complete; they follow those returned
    /// before.
    pub fn write(&mut self, events: &[Event]) -> Result<Vec<u8>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let raws: Vec<String> = events
            .iter()
            .map(|e| sonic_rs::to_string(&e.raw))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| StoreError::InvalidBatch(format!("raw record as JSON: {e}")))?;
        let refs: Vec<&Event> = events.iter().collect();
        let raw_refs: Vec<&str> = raws.iter().map(String::as_str).collect();
        let stored = events_to_record_batch(&refs, &raw_refs)?;
        let mut columns: Vec<ArrayRef> = stored.columns().to_vec();
        let column = |value: fn(&Event) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(events.iter().map(value)))
        };
        columns.push(column(|e| &e.tenant));
        columns.push(column(|e| &e.source));
        self.writer
            .write(&RecordBatch::try_new(export_arrow_schema(), columns)?)?;
        // The writer's sink only receives whole row groups (and the magic bytes before the
        // first); its own byte count, which the footer's offsets come from, goes on unchanged.
        Ok(std::mem::take(self.writer.inner_mut()))
    }

    /// The rest of the file: the last row group and the footer.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.writer.finish()?;
        Ok(std::mem::take(self.writer.inner_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use chrono::{Duration, TimeZone, Utc};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use perimeter_model::{Ecs, RawRecord};
    use std::io::Write;

    /// A reader of `file` as written to disk.
    fn reader(
        file: Vec<u8>,
    ) -> parquet::errors::Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&file).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(f)
    }

    fn event(n: usize) -> Event {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap() + Duration::seconds(n as i64);
        let raw = serde_json::json!({"n": n, "actor": format!("user{}", n % 7)});
        let record = RawRecord {
            source: if n.is_multiple_of(2) { "okta" } else { "github" }.into(),
            tenant: "acme".into(),
            received_at: at,
            line: Some(n as u64 + 1),
            raw: perimeter_model::raw_from_serde(&raw),
        };
        let ecs = Ecs {
            timestamp: Some(at),
            user_name: Some(format!("user{}", n % 7)),
            ..Default::default()
        };
        Event::new(record.source.clone(), record, ecs)
    }

    #[test]
    fn pieces_make_one_file_with_every_event_in_order_and_row_groups_sent_early() {
        let events: Vec<Event> = (0..EXPORT_ROW_GROUP_ROWS + 1000).map(event).collect();
        let mut export = ParquetEventExport::new().unwrap();
        let mut file = Vec::new();
        let mut sent_before_finish = 0;
        for page in events.chunks(1000) {
            file.extend(export.write(page).unwrap());
            sent_before_finish = file.len();
        }
        // The first row group was sent before the end (its 16-byte ids alone are more than
        // this): the writer does not hold the whole file.
        assert!(
            sent_before_finish > EXPORT_ROW_GROUP_ROWS * 16,
            "{sent_before_finish} bytes"
        );
        file.extend(export.finish().unwrap());

        let reader = reader(file).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 2);
        assert_eq!(reader.schema(), &export_arrow_schema());
        let mut ids = Vec::new();
        let mut sources = Vec::new();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let id = batch.column_by_name("event_id").unwrap().as_string::<i32>();
            let source = batch.column_by_name("source").unwrap().as_string::<i32>();
            let tenant = batch.column_by_name("tenant").unwrap().as_string::<i32>();
            for row in 0..batch.num_rows() {
                ids.push(id.value(row).to_string());
                sources.push(source.value(row).to_string());
                assert_eq!(tenant.value(row), "acme");
            }
            assert_eq!(batch.column_by_name("raw").unwrap().null_count(), 0);
        }
        let want: Vec<String> = events.iter().map(|e| e.id().0.clone()).collect();
        assert_eq!(ids, want);
        let want: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
        assert_eq!(sources, want);
    }

    #[test]
    fn an_export_of_nothing_is_a_valid_empty_file() {
        let mut export = ParquetEventExport::new().unwrap();
        assert!(export.write(&[]).unwrap().is_empty());
        let file = export.finish().unwrap();
        let reader = reader(file).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        assert_eq!(reader.schema(), &export_arrow_schema());
    }

    #[test]
    fn a_file_cut_short_is_no_parquet_file() {
        let events: Vec<Event> = (0..100).map(event).collect();
        let mut export = ParquetEventExport::new().unwrap();
        let mut file = export.write(&events).unwrap();
        file.extend(export.finish().unwrap());
        file.truncate(file.len() - 10);
        assert!(reader(file).is_err());
    }
}
