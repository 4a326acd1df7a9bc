//! Perimeter's store: masked events go to tantivy (one index per tenant and day) and to
//! hive-partitioned Parquet (`tenant=/source=/dt=`); alerts and dead letters to per-tenant
//! append-only journals. The read side serves the query API.
//!
//! Guarantees:
//! - [`Store::write_batch`] returns only after the batch is durable everywhere: tantivy
//!   committed, Parquet files written, fsynced and renamed into place, journals fsynced;
//! - writes are idempotent on event id and alert id, across restarts: a replayed event is
//!   stored once (ids are checked against the event's (tenant, day) index);
//! - a crash at any point loses no acknowledged event and stores no event twice after the
//!   unacknowledged batch is replayed (`docs/adr/001-store-durability.md`);
//! - one tenant's data never shares an index, a Parquet partition or a journal with
//!   another's, and every read takes the tenant as an argument;
//! - bad queries and bad cursors are [`StoreError::InvalidQuery`], never a panic.
//!
//! Entry points: [`Store::open`], [`Store::write_batch`], [`Store::search_events`],
//! [`Store::event_histogram`], [`Store::top_values`], [`Store::event_context`], [`Store::source_activity`], [`Store::get_event`], [`Store::list_alerts`], [`Store::update_alert`],
//! [`Store::apply_retention`].

mod activity;
pub mod alert_parquet;
mod alerts;
pub mod backwards;
pub mod catch_all;
mod compaction;
mod config;
mod context;
mod doc_text;
mod error;
mod export;
mod fuzzy;
pub mod histogram;
mod ip_query;
mod journal;
pub mod layout;
mod managed_list;
mod operators;
mod parallel;
mod parquet_repair;
pub mod parquet_sink;
mod reader;
mod reindex;
mod retention;
mod store;
pub mod tantivy_sink;
mod time_query;
pub mod top_values;
mod wildcard;

pub use activity::SourceActivity;
pub use alerts::{
    AlertChange, AlertQuery, AlertRecord, AlertSort, AlertSummary, AlertUpdate, EntityCount, Note,
    Page, RuleCount, MAX_PAGE_LIMIT,
};
pub use compaction::CompactionReport;
pub use config::{RetentionRule, StoreConfig};
pub use context::{ContextPivot, EventContext, MAX_CONTEXT_EVENTS, MAX_CONTEXT_WINDOW_DAYS};
pub use error::{Result, StoreError};
pub use export::{
    export_arrow_schema, EventExport, ExportFormat, ExportSummary, DEFAULT_EXPORT_EVENTS,
    MAX_EXPORT_EVENTS,
};
pub use histogram::{
    EventHistogram, EventHistogramQuery, HistogramBucket, AUTO_HISTOGRAM_BUCKETS,
    MAX_HISTOGRAM_BUCKETS,
};
pub use parquet_repair::{ParquetRepairReport, RepairedPartition, SetAsideFile};
pub use reader::{AlertEvidence, EventQuery, EventSnapshot, EventSort};
pub use reindex::{ReindexOptions, ReindexProgress, ReindexReport, ReindexedDay, VendorTime};
pub use retention::{RetentionPreview, RetentionReport};
pub use store::{
    lock_data_dir, DeadLetterQuery, QueryTermMasker, QueryTermPseudonym, Store, StoreBatch,
    StoreStats, WriteAck, WriteFailure, LOCK_FILE,
};
pub use top_values::{
    top_value_fields, TopValues, TopValuesQuery, ValueCount, DEFAULT_TOP_SAMPLE,
    DEFAULT_TOP_VALUES, MAX_TOP_SAMPLE, MAX_TOP_VALUES,
};

#[cfg(test)]
mod tests {
    #[test]
    fn store_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Store>();
    }
}
