//! Exports of stored events as one file: JSON lines (every stored document whole), CSV for a
//! spreadsheet, or Parquet for DuckDB, pyarrow or pandas (`GET /api/v1/events/export`,
//! `perimeter export`).
//!
//! An export is made in pieces, so that one of millions of events needs neither the whole file
//! in memory nor paging by its reader: [`EventExportEncoder`] turns page after page of stored
//! documents into the bytes that follow. A Parquet file ends with its footer, so it cannot be
//! sent line by line as JSON lines can; its row groups can: each is handed out once complete,
//! and the footer last ([`ParquetEventExport`]). The writer holds at most one row group
//! ([`EXPORT_ROW_GROUP_ROWS`] events), and a download cut short has no footer, so no reader
//! takes it for a whole file.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use perimeter_model::{Event, RawJson};
use serde::Serialize;

use crate::parquet_sink::{event_arrow_schema, events_to_record_batch, writer_properties_builder};
use crate::reader::EventQuery;
use crate::{Result, Store, StoreError};

/// The file formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One stored event document (masked) per line.
    Jsonl,
    /// One row per event with the main ECS columns ([`CSV_COLUMNS`]).
    Csv,
    /// One Parquet file: the columns of the store's event files, then `tenant` and `source`.
    Parquet,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 3] = [
        ExportFormat::Jsonl,
        ExportFormat::Csv,
        ExportFormat::Parquet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
            ExportFormat::Parquet => "parquet",
        }
    }

    /// The HTTP content type of a file of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The format a file name's extension says (`.jsonl`/`.ndjson`/`.json`, `.csv`,
    /// `.parquet`), if any.
    pub fn of_path(path: &Path) -> Option<ExportFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Some(ExportFormat::Jsonl),
            "csv" => Some(ExportFormat::Csv),
            "parquet" => Some(ExportFormat::Parquet),
            _ => None,
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<ExportFormat, String> {
        ExportFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown format `{s}` (expected jsonl, csv or parquet)"))
    }
}

/// The columns of a CSV export: header and JSON path in the stored event document.
const CSV_COLUMNS: &[(&str, &[&str])] = &[
    ("@timestamp", &["@timestamp"]),
    ("event.module", &["event", "module"]),
    ("event.action", &["event", "action"]),
    ("event.outcome", &["event", "outcome"]),
    ("user.name", &["user", "name"]),
    ("user.email", &["user", "email"]),
    ("user.target.name", &["user", "target", "name"]),
    ("source.ip", &["source", "ip"]),
    (
        "source.geo.country_iso_code",
        &["source", "geo", "country_iso_code"],
    ),
    ("user_agent.original", &["user_agent", "original"]),
    ("event.id", &["event", "id"]),
];

/// One CSV field (RFC 4180 quoting). Event values are attacker-controlled: a cell a spreadsheet
/// would run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) gets a leading `'`.
fn csv_cell(out: &mut Vec<u8>, value: &str) {
    let guarded = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = guarded || value.contains([',', '"', '\n', '\r']);
    if quoted {
        out.push(b'"');
    }
    if guarded {
        out.push(b'\'');
    }
    for b in value.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    if quoted {
        out.push(b'"');
    }
}

/// One event as a CSV row; list values are joined with `;`.
fn csv_row(out: &mut Vec<u8>, doc: &serde_json::Value) {
    for (i, (_, path)) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let value = path.iter().try_fold(doc, |v, k| v.get(*k));
        let text = match value {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(";"),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        csv_cell(out, &text);
    }
    out.extend_from_slice(b"\r\n");
}

/// A stored event document read for its fields, with its raw record left as the JSON text it
/// is in the document: parsing that (most of the document) into a map only for Parquet to write
/// it out again, and for CSV not to read it at all, took most of those exports' time.
struct StoredFields<'t> {
    /// The document without `raw`.
    fields: serde_json::Value,
    raw: Option<&'t serde_json::value::RawValue>,
}

impl<'t> StoredFields<'t> {
    fn read(text: &'t str) -> Result<StoredFields<'t>> {
        Ok(serde_json::from_str(text)?)
    }
}

impl<'de> serde::Deserialize<'de> for StoredFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = StoredFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a stored event document (a JSON object)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut fields = serde_json::Map::new();
                let mut raw = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "raw" {
                        raw = Some(map.next_value()?);
                    } else {
                        fields.insert(key, map.next_value()?);
                    }
                }
                Ok(StoredFields {
                    fields: serde_json::Value::Object(fields),
                    raw,
                })
            }
        }
        d.deserialize_map(Fields)
    }
}

/// Stored event documents ([`Event::to_output_json`], as search returns them) to the bytes of
/// an export file, page by page: [`Self::head`], then [`Self::encode`] for each page in order,
/// then [`Self::finish`].
pub(crate) enum EventExportEncoder {
    Jsonl,
    Csv,
    Parquet(Box<ParquetEventExport>),
}

impl EventExportEncoder {
    pub fn new(format: ExportFormat) -> Result<EventExportEncoder> {
        Ok(match format {
            ExportFormat::Jsonl => EventExportEncoder::Jsonl,
            ExportFormat::Csv => EventExportEncoder::Csv,
            ExportFormat::Parquet => {
                EventExportEncoder::Parquet(Box::new(ParquetEventExport::new()?))
            }
        })
    }

    pub fn format(&self) -> ExportFormat {
        match self {
            EventExportEncoder::Jsonl => ExportFormat::Jsonl,
            EventExportEncoder::Csv => ExportFormat::Csv,
            EventExportEncoder::Parquet(_) => ExportFormat::Parquet,
        }
    }

    /// What comes before the first event: the CSV header.
    pub fn head(&self) -> Vec<u8> {
        match self {
            EventExportEncoder::Csv => {
                let names: Vec<&str> = CSV_COLUMNS.iter().map(|(name, _)| *name).collect();
                format!("{}\r\n", names.join(",")).into_bytes()
            }
            EventExportEncoder::Jsonl | EventExportEncoder::Parquet(_) => Vec::new(),
        }
    }

    /// The bytes that follow for these stored documents, each the JSON text the store keeps
    /// (none yet, for Parquet, until a row group is complete).
    pub fn encode(&mut self, texts: &[String]) -> Result<Vec<u8>> {
        let parsed = || -> Result<Vec<StoredFields<'_>>> {
            texts.iter().map(|text| StoredFields::read(text)).collect()
        };
        Ok(match self {
            // A JSON line is the stored text as it is: parsing it and writing it again took
            // most of that export's time (700k events: 14.8-16.5 s against ~5 s).
            EventExportEncoder::Jsonl => {
                let mut chunk = Vec::with_capacity(texts.iter().map(|t| t.len() + 1).sum());
                for text in texts {
                    // The store writes its documents compact, but a line break in one (a
                    // document written otherwise) would split the line: that one is written
                    // anew.
                    if text.as_bytes().contains(&b'\n') {
                        let doc: serde_json::Value = serde_json::from_str(text)?;
                        serde_json::to_writer(&mut chunk, &doc)?;
                    } else {
                        chunk.extend_from_slice(text.as_bytes());
                    }
                    chunk.push(b'\n');
                }
                chunk
            }
            EventExportEncoder::Csv => {
                let mut chunk = Vec::with_capacity(texts.len() * 256);
                parsed()?
                    .iter()
                    .for_each(|doc| csv_row(&mut chunk, &doc.fields));
                chunk
            }
            EventExportEncoder::Parquet(file) => {
                // The raw record goes out as the document holds its text: read back into a
                // `RawJson` only to be written out again, it took half of a Parquet export's
                // time.
                let docs = parsed()?;
                let mut raws = Vec::with_capacity(docs.len());
                let mut events = Vec::with_capacity(docs.len());
                for (doc, text) in docs.iter().zip(texts) {
                    let event = doc.raw.and_then(|raw| {
                        raws.push(raw.get());
                        Event::from_output_json_with_raw(&doc.fields, RawJson::new())
                    });
                    events.push(event.ok_or_else(|| StoreError::Corrupt {
                        path: "event document".into(),
                        reason: format!("a stored event could not be read back: {text}"),
                    })?);
                }
                file.write(&events, &raws)?
            }
        })
    }

    /// What comes after the last event: a Parquet file's last row group and footer.
    pub fn finish(self) -> Result<Vec<u8>> {
        match self {
            EventExportEncoder::Parquet(file) => file.finish(),
            EventExportEncoder::Jsonl | EventExportEncoder::Csv => Ok(Vec::new()),
        }
    }
}

/// What an export held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    /// Events the query matched.
    pub matched: u64,
    /// Events written: `matched`, or `max_events` when fewer.
    pub exported: u64,
}

/// Events one export holds when its caller sets no bound.
pub const DEFAULT_EXPORT_EVENTS: usize = 100_000;
/// Largest bound on the events of one export; larger asks are refused, not silently capped.
pub const MAX_EXPORT_EVENTS: usize = 10_000_000;
/// Events read from the store per step of an export: a search page. Pages of 10,000 measured no
/// faster over 700k events (CSV 9.4-9.9 against 10.5-11.9 s of CPU, JSON lines 13.1-13.7
/// against 10.9-12.8 s) and took 680-710 MB at their peak against 400 MB.
const EXPORT_PAGE_EVENTS: usize = 1000;

impl Store {
    /// Begin an export of the events of `tenant` that `query` matches (its `limit` and `cursor`
    /// are not used), in its sort order and at most `max_events` of them, as one file of
    /// `format`. Everything is read from one snapshot taken now: events stored meanwhile are
    /// not in it, so the file holds what [`EventExport::summary`] says. A query the store
    /// refuses is an error here, before any byte is written.
    pub fn start_export(
        &self,
        tenant: &str,
        query: &EventQuery,
        max_events: usize,
        format: ExportFormat,
    ) -> Result<EventExport> {
        let snapshot = self.event_snapshot(tenant);
        let query = EventQuery {
            limit: EXPORT_PAGE_EVENTS.min(max_events.max(1)),
            cursor: None,
            ..query.clone()
        };
        let first = self.search_snapshot_text(&snapshot, &query)?;
        let matched = self.count_snapshot(&snapshot, &query.query, query.from, query.to)?;
        Ok(EventExport {
            snapshot,
            query,
            first,
            max_events,
            encoder: EventExportEncoder::new(format)?,
            matched,
        })
    }

    /// [`Self::start_export`] and [`EventExport::write`] at once.
    pub fn export_events(
        &self,
        tenant: &str,
        query: &EventQuery,
        max_events: usize,
        format: ExportFormat,
        out: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ExportSummary> {
        self.start_export(tenant, query, max_events, format)?
            .write(self, out, progress)
    }
}

/// An export begun by [`Store::start_export`]: its snapshot, its first page and its count.
pub struct EventExport {
    snapshot: crate::reader::EventSnapshot,
    query: EventQuery,
    first: crate::Page<String>,
    max_events: usize,
    encoder: EventExportEncoder,
    matched: u64,
}

impl EventExport {
    /// How many events matched, and how many the file will hold.
    pub fn summary(&self) -> ExportSummary {
        ExportSummary {
            matched: self.matched,
            exported: self.matched.min(self.max_events as u64),
        }
    }

    pub fn format(&self) -> ExportFormat {
        self.encoder.format()
    }

    /// Write the file, in pieces handed to `out` in order, reading page after page from the
    /// snapshot of `store` (the store it was begun on). `progress(exported, matched)` is called
    /// after each page. An error of `out` (a closed pipe, a client gone) ends the export.
    pub fn write(
        self,
        store: &Store,
        out: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ExportSummary> {
        let EventExport {
            snapshot,
            mut query,
            first,
            max_events,
            mut encoder,
            matched,
        } = self;
        let mut send = |bytes: Vec<u8>| {
            if bytes.is_empty() {
                return Ok(());
            }
            out(bytes).map_err(StoreError::ExportOutput)
        };
        send(encoder.head())?;
        let mut page = first;
        let mut exported = 0u64;
        loop {
            let take = page.items.len().min(max_events - exported as usize);
            send(encoder.encode(&page.items[..take])?)?;
            exported += take as u64;
            progress(exported, matched);
            match page.next_cursor {
                Some(cursor) if take > 0 && (exported as usize) < max_events => {
                    query.cursor = Some(cursor);
                    page = store.search_snapshot_text(&snapshot, &query)?;
                }
                _ => break,
            }
        }
        send(encoder.finish()?)?;
        Ok(ExportSummary { matched, exported })
    }
}

/// Events per row group of an export: the writer keeps one row group in memory (about 1.3 KB an
/// event before compression) until it is complete and can be sent.
const EXPORT_ROW_GROUP_ROWS: usize = 16_384;

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
pub(crate) struct ParquetEventExport {
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

    /// Add `events` (in the order the file should hold them), each with its raw record as JSON
    /// text in `raws` (the events' own `raw` is not read). Returns the bytes of the file made
    /// ready by them, often none until a row group is complete; they follow those returned
    /// before.
    pub fn write(&mut self, events: &[Event], raws: &[&str]) -> Result<Vec<u8>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&Event> = events.iter().collect();
        let stored = events_to_record_batch(&refs, raws)?;
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
            source: if n.is_multiple_of(2) {
                "okta"
            } else {
                "github"
            }
            .into(),
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

    /// The stored documents of `events`, as an export reads them.
    fn documents(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| e.to_output_json().to_string())
            .collect()
    }

    fn parquet_encoder() -> EventExportEncoder {
        EventExportEncoder::new(ExportFormat::Parquet).unwrap()
    }

    #[test]
    fn pieces_make_one_file_with_every_event_in_order_and_row_groups_sent_early() {
        let events: Vec<Event> = (0..EXPORT_ROW_GROUP_ROWS + 1000).map(event).collect();
        let mut export = parquet_encoder();
        assert!(export.head().is_empty());
        let mut file = Vec::new();
        let mut sent_before_finish = 0;
        for page in events.chunks(1000) {
            file.extend(export.encode(&documents(page)).unwrap());
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
        let mut rows = 0;
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let column = |name: &str| batch.column_by_name(name).unwrap().as_string::<i32>();
            let (id, source, tenant) = (column("event_id"), column("source"), column("tenant"));
            let (raw, user) = (column("raw"), column("user_name"));
            let line = batch.column_by_name("line").unwrap();
            let line = line.as_primitive::<arrow::datatypes::Int64Type>();
            for row in 0..batch.num_rows() {
                ids.push(id.value(row).to_string());
                sources.push(source.value(row).to_string());
                assert_eq!(tenant.value(row), "acme");
                // The columns come from the stored document, the raw record as it holds it.
                let e = &events[rows];
                let raw: serde_json::Value = serde_json::from_str(raw.value(row)).unwrap();
                assert_eq!(raw, serde_json::to_value(&e.raw).unwrap());
                assert_eq!(Some(user.value(row)), e.ecs.user_name.as_deref());
                assert_eq!(line.value(row), e.line.unwrap() as i64);
                rows += 1;
            }
            assert_eq!(batch.column_by_name("raw").unwrap().null_count(), 0);
        }
        assert_eq!(rows, events.len());
        let want: Vec<String> = events.iter().map(|e| e.id().0.clone()).collect();
        assert_eq!(ids, want);
        let want: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
        assert_eq!(sources, want);
    }

    fn cell(value: &str) -> String {
        let mut out = Vec::new();
        csv_cell(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_cells_are_quoted_and_formula_guarded() {
        assert_eq!(cell("alice@acme.test"), "alice@acme.test");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        // Attacker-controlled values a spreadsheet would run as formulas.
        assert_eq!(
            cell("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        for risky in ["+1", "-2+3", "@SUM(A1)", "\tx"] {
            assert!(cell(risky).starts_with("\"'"), "{risky}: {}", cell(risky));
        }
        let mut row = Vec::new();
        csv_row(
            &mut row,
            &serde_json::json!({"@timestamp": "2024-05-01T10:00:00Z", "event": {"module": "okta",
                "action": "user.session.start", "id": "abc"}, "user": {"name": "=cmd"},
                "related": {"ip": ["1.2.3.4"]}}),
        );
        assert_eq!(
            String::from_utf8(row).unwrap(),
            "2024-05-01T10:00:00Z,okta,user.session.start,,\"'=cmd\",,,,,,abc\r\n"
        );
    }

    #[test]
    fn json_lines_are_the_stored_documents_as_they_are_and_csv_reads_their_fields() {
        let events: Vec<Event> = (0..3).map(event).collect();
        // Key order as the store wrote it, which parsing into a map would have sorted.
        let texts: Vec<String> = documents(&events)
            .into_iter()
            .map(|t| t.replacen('{', r#"{"zz_first":1,"#, 1))
            .collect();
        let mut jsonl = EventExportEncoder::new(ExportFormat::Jsonl).unwrap();
        let lines = String::from_utf8(jsonl.encode(&texts).unwrap()).unwrap();
        assert_eq!(
            lines,
            texts.iter().map(|t| format!("{t}\n")).collect::<String>()
        );
        // A document with a line break in it still makes one line, the same document.
        let spread = texts[0].replacen(',', ",\n", 1);
        let line = String::from_utf8(jsonl.encode(&[spread]).unwrap()).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let again: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(&texts[0]).unwrap()
        );

        let mut csv = EventExportEncoder::new(ExportFormat::Csv).unwrap();
        let rows = String::from_utf8(csv.encode(&texts).unwrap()).unwrap();
        assert_eq!(rows.lines().count(), 3);
        assert!(rows.contains(&events[2].id().0), "{rows}");
        // A stored text that is no JSON is an error of the export, not a panic or a blank row.
        let broken = vec!["{not json".to_string()];
        assert!(csv.encode(&broken).is_err());
        assert!(parquet_encoder().encode(&broken).is_err());
    }

    #[test]
    fn an_export_of_nothing_is_a_valid_empty_file() {
        let mut export = parquet_encoder();
        assert!(export.encode(&[]).unwrap().is_empty());
        let file = export.finish().unwrap();
        let reader = reader(file).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        assert_eq!(reader.schema(), &export_arrow_schema());
    }

    #[test]
    fn a_file_cut_short_is_no_parquet_file() {
        let events: Vec<Event> = (0..100).map(event).collect();
        let mut export = parquet_encoder();
        let mut file = export.encode(&documents(&events)).unwrap();
        file.extend(export.finish().unwrap());
        file.truncate(file.len() - 10);
        assert!(reader(file).is_err());
    }
}
