//! What each source of a tenant has sent lately: the newest stored event and the count of the
//! last 24 hours.
//!
//! A SaaS integration that stops sending is a blind spot, and a quiet one: an expired or revoked
//! API token, a changed webhook, an audit log switched off by someone covering their tracks all
//! look like "nothing happened". The newest event per source is what shows it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tantivy::schema::IndexRecordOption;
use tantivy::{DocSet, TantivyError, TERMINATED};

use crate::store::Store;
use crate::tantivy_sink::TIMESTAMP_FIELD;
use crate::Result;

/// One source of a tenant, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceActivity {
    /// The source name (`event.module`).
    pub source: String,
    /// `@timestamp` of the source's newest stored event.
    pub newest_event: DateTime<Utc>,
    /// The source's events with `@timestamp` in the 24 hours before the time asked about.
    pub events_24h: u64,
}

/// Newest event time (microseconds) and count since the cutoff, per source.
type Seen = BTreeMap<String, (i64, u64)>;

impl Store {
    /// Every source with stored events for `tenant`, by name: its newest event and how many of
    /// its events fall in the 24 hours before `now`. Reads the `event.module` terms and the
    /// `@timestamp` column; no stored document is opened.
    pub fn source_activity(&self, tenant: &str, now: DateTime<Utc>) -> Result<Vec<SourceActivity>> {
        let cutoff = (now - chrono::TimeDelta::hours(24)).timestamp_micros();
        let now_micros = now.timestamp_micros();
        let cutoff_day = (now - chrono::TimeDelta::hours(24)).date_naive();
        let mut seen = Seen::new();
        // Newest day first: a source's newest event is in the first index holding the source
        // (indexes are per UTC day of `@timestamp`). Older indexes only add to the 24-hour
        // counts, and only those of the last two days can.
        for idx in self.tenant_indexes(tenant) {
            let recent = idx.day >= cutoff_day;
            let searcher = idx.reader.searcher();
            let mut found_here: Seen = BTreeMap::new();
            for seg in searcher.segment_readers() {
                let Ok(times) = seg.fast_fields().date(TIMESTAMP_FIELD) else {
                    continue;
                };
                let inverted = seg.inverted_index(self.schema.module)?;
                let mut terms = inverted.terms().stream().map_err(TantivyError::from)?;
                while terms.advance() {
                    let source = String::from_utf8_lossy(terms.key()).into_owned();
                    let known = seen
                        .get(&source)
                        .is_some_and(|(newest, _)| *newest != i64::MIN);
                    if known && !recent {
                        continue;
                    }
                    let mut postings = inverted
                        .read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)
                        .map_err(TantivyError::from)?;
                    let (newest, count) = found_here.entry(source).or_insert((i64::MIN, 0));
                    let mut doc = postings.doc();
                    while doc != TERMINATED {
                        if !seg.is_deleted(doc) {
                            if let Some(ts) = times.first(doc) {
                                let micros = ts.into_timestamp_micros();
                                *newest = (*newest).max(micros);
                                *count += u64::from((cutoff..now_micros).contains(&micros));
                            }
                        }
                        doc = postings.advance();
                    }
                }
            }
            for (source, (newest, count)) in found_here {
                let entry = seen.entry(source).or_insert((i64::MIN, 0));
                if entry.0 == i64::MIN {
                    entry.0 = newest;
                }
                entry.1 += count;
            }
        }
        Ok(seen
            .into_iter()
            .filter(|(_, (newest, _))| *newest != i64::MIN)
            .filter_map(|(source, (newest, events_24h))| {
                Some(SourceActivity {
                    source,
                    newest_event: DateTime::from_timestamp_micros(newest)?,
                    events_24h,
                })
            })
            .collect())
    }
}
