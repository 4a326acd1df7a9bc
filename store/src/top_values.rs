//! The most frequent values of one field among the events a search matches: which users are
//! behind these 700 failures, from which addresses, with which actions. It is the question an
//! analyst asks right after "how many, and when" (the [`crate::histogram`]), before reading
//! events one by one.
//!
//! Values are grouped without regard to case, as search matches them (`Dana.Kim@...` and
//! `dana.kim@...` are one user), and shown as stored.
//!
//! How they are counted depends on the field and on how many events match:
//! - up to `sample` matches: every match's stored document is read, for any field: exact;
//! - more, on a field indexed whole (`event.action`, `source.ip`, ... see
//!   [`TopValuesQuery::field`]): the field's terms are counted against the set of matches in the
//!   index itself, for every match: exact, and no stored document is opened but one per value
//!   shown (for its spelling). Unless the field has very many distinct values in the searched
//!   days ([`MAX_INDEX_TERM_VISITS`]): then as below;
//! - more, on a field indexed as words (`user.name`, `user_agent.original`, ...): the index
//!   has no whole values, so the newest `sample` matches are read and the answer says it is
//!   not exact (`exact: false`, `counted` < `total`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
use tantivy::query::Query;
use tantivy::schema::{Field, IndexRecordOption, Value as _};
use tantivy::{
    BitSet, DocAddress, DocId, DocSet, Order, Score, SegmentOrdinal, SegmentReader,
    TantivyDocument, TantivyError, TERMINATED,
};

use crate::store::Store;
use crate::tantivy_sink::{KEYWORD_FIELDS, TEXT_FIELDS, TIMESTAMP_FIELD};
use crate::{Result, StoreError};

/// Counting in the index is skipped when the searched segments hold more terms of the field than
/// this, all together (a field with many distinct values, such as `source.ip` over a month): it
/// would take longer than reading the sample.
pub const MAX_INDEX_TERM_VISITS: u64 = 500_000;
/// Most values one answer lists.
pub const MAX_TOP_VALUES: usize = 100;
/// Values listed when the caller does not say.
pub const DEFAULT_TOP_VALUES: usize = 10;
/// Matches read from stored documents when the index cannot count them all (default).
pub const DEFAULT_TOP_SAMPLE: usize = 10_000;
/// The most matches one answer reads from stored documents.
pub const MAX_TOP_SAMPLE: usize = 100_000;

/// The most frequent values of `field` among a search's matches.
#[derive(Debug, Clone, PartialEq)]
pub struct TopValuesQuery {
    /// The search, as in [`crate::EventQuery::query`].
    pub query: String,
    /// `@timestamp >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `@timestamp < to`.
    pub to: Option<DateTime<Utc>>,
    /// An ECS field the store indexes: `event.module` or one of [`top_value_fields`].
    pub field: String,
    /// Values listed, most frequent first (`1..=MAX_TOP_VALUES`).
    pub limit: usize,
    /// Matches read from stored documents at most (`1..=MAX_TOP_SAMPLE`), see the module docs.
    pub sample: usize,
}

impl Default for TopValuesQuery {
    fn default() -> Self {
        TopValuesQuery {
            query: String::new(),
            from: None,
            to: None,
            field: String::new(),
            limit: DEFAULT_TOP_VALUES,
            sample: DEFAULT_TOP_SAMPLE,
        }
    }
}

/// The answer to a [`TopValuesQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopValues {
    pub field: String,
    /// Every event the search matches in the time range.
    pub total: u64,
    /// The events whose values were counted: `total` when `exact`, else the newest `sample`.
    pub counted: u64,
    /// Whether every match was counted.
    pub exact: bool,
    /// Most frequent first; equal counts in value order.
    pub values: Vec<ValueCount>,
    /// Occurrences of the values not listed (an event holding several values of a list field,
    /// such as `related.ip`, counts once per value).
    pub other: u64,
    /// Counted events without the field.
    pub missing: u64,
}

/// One value and the counted events holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueCount {
    pub value: String,
    pub count: u64,
}

/// The fields top values can be asked of: `event.module`, then the ECS fields indexed whole,
/// then those indexed as words.
pub fn top_value_fields() -> Vec<&'static str> {
    let mut fields = vec!["event.module"];
    fields.extend(KEYWORD_FIELDS);
    fields.extend(TEXT_FIELDS);
    fields
}

/// Per lower-cased value: the count, and where it was first seen (to show its spelling).
type Tally = HashMap<String, (u64, Option<Seen>)>;

/// A match holding a value: the searcher (day index) and the document in it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    searcher: usize,
    doc: DocAddress,
}

impl Store {
    /// The most frequent values of one field among the events of `tenant` that a search
    /// matches (see [`crate::top_values`]). Bad queries, fields and limits are
    /// [`StoreError::InvalidQuery`].
    pub fn top_values(&self, tenant: &str, q: &TopValuesQuery) -> Result<TopValues> {
        let whole = q.field == "event.module" || KEYWORD_FIELDS.contains(&q.field.as_str());
        if !whole && !TEXT_FIELDS.contains(&q.field.as_str()) {
            return Err(StoreError::InvalidQuery(format!(
                "top values are counted for the ECS fields the store indexes, not `{}`: {}",
                q.field,
                top_value_fields().join(", ")
            )));
        }
        if !(1..=MAX_TOP_VALUES).contains(&q.limit) {
            return Err(StoreError::InvalidQuery(format!(
                "the limit of values must be between 1 and {MAX_TOP_VALUES}"
            )));
        }
        if !(1..=MAX_TOP_SAMPLE).contains(&q.sample) {
            return Err(StoreError::InvalidQuery(format!(
                "the sample must be between 1 and {MAX_TOP_SAMPLE} events"
            )));
        }
        let user_query = self.parse_event_query(&q.query)?;
        let query = self.query_in_range(user_query, q.from, q.to)?;
        let searchers: Vec<_> = self
            .indexes_in_range(tenant, q.from, q.to)
            .iter()
            .map(|idx| idx.reader.searcher())
            .collect();
        let mut total = 0u64;
        for searcher in &searchers {
            total += searcher
                .search(&query, &Count)
                .map_err(crate::reader::query_shape_error)? as u64;
        }
        let field = self.field_named(&q.field)?;
        let mut tally = Tally::new();
        let term_visits = || -> u64 {
            searchers
                .iter()
                .flat_map(|s| s.segment_readers())
                .map(|seg| {
                    seg.inverted_index(field)
                        .map_or(0, |i| i.terms().num_terms() as u64)
                })
                .sum()
        };
        // Counting in the index walks each segment's terms of the field: cheap for the handful
        // of actions of a day, not for millions of addresses (about 0.5 µs a term). The terms
        // are counted only when the index would be asked.
        let in_index = whole && total > q.sample as u64 && term_visits() <= MAX_INDEX_TERM_VISITS;
        let (counted, missing) = if in_index {
            let collector = TermTally { field };
            let mut missing = 0;
            for (i, searcher) in searchers.iter().enumerate() {
                let part = searcher
                    .search(&query, &collector)
                    .map_err(crate::reader::query_shape_error)?;
                missing += part.missing;
                for (term, (count, doc)) in part.terms {
                    let entry = tally.entry(term).or_insert((0, None));
                    entry.0 += count;
                    entry.1 = entry.1.or(Some(Seen { searcher: i, doc }));
                }
            }
            (total, missing)
        } else {
            self.tally_stored(&searchers, &query, &q.field, q.sample, &mut tally)?
        };
        let mut ranked: Vec<(String, u64, Option<Seen>)> =
            tally.into_iter().map(|(k, (c, s))| (k, c, s)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other = ranked.iter().skip(q.limit).map(|(_, c, _)| c).sum();
        ranked.truncate(q.limit);
        let mut values = Vec::with_capacity(ranked.len());
        for (key, count, seen) in ranked {
            let value = match seen {
                Some(s) => self.spelling(&searchers[s.searcher], s.doc, &q.field, &key)?,
                None => key,
            };
            values.push(ValueCount { value, count });
        }
        Ok(TopValues {
            field: q.field.clone(),
            total,
            counted,
            exact: counted == total,
            values,
            other,
            missing,
        })
    }

    fn field_named(&self, name: &str) -> Result<Field> {
        self.schema
            .schema
            .get_field(name)
            .map_err(|e| StoreError::InvalidQuery(e.to_string()))
    }

    /// Count the values of the newest `sample` matches from their stored documents; returns the
    /// events counted and those without the field. Each value is tallied with no spelling
    /// (`None`): the first one seen, the newest, is the key's spelling already.
    fn tally_stored(
        &self,
        searchers: &[tantivy::Searcher],
        query: &dyn Query,
        field: &str,
        sample: usize,
        tally: &mut Tally,
    ) -> Result<(u64, u64)> {
        let mut spelled: HashMap<String, String> = HashMap::new();
        let (mut counted, mut missing) = (0u64, 0u64);
        // Searchers are newest day first; within a day, the collector orders by time.
        for searcher in searchers {
            let want = sample.saturating_sub(counted as usize);
            if want == 0 {
                break;
            }
            let newest = TopDocs::with_limit(want)
                .order_by_fast_field::<tantivy::DateTime>(TIMESTAMP_FIELD, Order::Desc);
            let hits = searcher
                .search(query, &newest)
                .map_err(crate::reader::query_shape_error)?;
            for (_, addr) in hits {
                counted += 1;
                let values = self.stored_values(searcher, addr, field)?;
                if values.is_empty() {
                    missing += 1;
                }
                for value in values {
                    let key = value.to_lowercase();
                    tally.entry(key.clone()).or_insert((0, None)).0 += 1;
                    spelled.entry(key).or_insert(value);
                }
            }
        }
        // The keys become their first spelling.
        let keyed = std::mem::take(tally);
        for (key, entry) in keyed {
            let shown = spelled.remove(&key).unwrap_or(key);
            tally.insert(shown, entry);
        }
        Ok((counted, missing))
    }

    /// The values of `field` in a stored event (none when absent; several for list fields).
    /// Only the field is parsed out of the stored text.
    fn stored_values(
        &self,
        searcher: &tantivy::Searcher,
        addr: DocAddress,
        field: &str,
    ) -> Result<Vec<String>> {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let text = doc
            .get_first(self.schema.doc)
            .and_then(|v| v.as_str())
            .unwrap_or("{}");
        values_in(text, field)
    }

    /// How a lower-cased indexed value is spelled in the document it was seen in.
    fn spelling(
        &self,
        searcher: &tantivy::Searcher,
        addr: DocAddress,
        field: &str,
        key: &str,
    ) -> Result<String> {
        Ok(self
            .stored_values(searcher, addr, field)?
            .into_iter()
            .find(|v| v.to_lowercase() == key)
            .unwrap_or_else(|| key.to_string()))
    }
}

/// The string and number values at a dotted ECS path (`source.geo.country_iso_code`) of a
/// stored event's text, the items of a list included; none when the path is absent.
fn values_in(text: &str, path: &str) -> Result<Vec<String>> {
    let Ok(found) = perimeter_model::sonic_rs::get_from_str(text, path.split('.')) else {
        return Ok(Vec::new());
    };
    let value: serde_json::Value = serde_json::from_str(found.as_raw_str())?;
    Ok(leaf_values(&value))
}

/// [`values_in`] of an event document already parsed.
pub(crate) fn values_in_doc(doc: &serde_json::Value, path: &str) -> Vec<String> {
    let mut cur = doc;
    for part in path.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return Vec::new(),
        }
    }
    leaf_values(cur)
}

/// The string and number values of a field's value, the items of a list included.
fn leaf_values(value: &serde_json::Value) -> Vec<String> {
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match value {
        serde_json::Value::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// Counts a whole-value field's terms over the matches of each segment, in the index.
struct TermTally {
    field: Field,
}

/// One segment's (or, merged, one day index's) counts: per term, the matches holding it and
/// the first of them; and the matches holding no term.
#[derive(Default)]
struct TermCounts {
    terms: HashMap<String, (u64, DocAddress)>,
    missing: u64,
}

struct SegmentTermTally {
    field: Field,
    segment: SegmentOrdinal,
    reader: SegmentReader,
    matches: BitSet,
    matched: u64,
}

impl Collector for TermTally {
    type Fruit = TermCounts;
    type Child = SegmentTermTally;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentTermTally> {
        Ok(SegmentTermTally {
            field: self.field,
            segment,
            reader: reader.clone(),
            matches: BitSet::with_max_value(reader.max_doc()),
            matched: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<tantivy::Result<TermCounts>>,
    ) -> tantivy::Result<TermCounts> {
        let mut all = TermCounts::default();
        for part in fruits {
            let part = part?;
            all.missing += part.missing;
            for (term, (count, doc)) in part.terms {
                let entry = all.terms.entry(term).or_insert((0, doc));
                entry.0 += count;
            }
        }
        Ok(all)
    }
}

impl SegmentCollector for SegmentTermTally {
    type Fruit = tantivy::Result<TermCounts>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.matches.insert(doc);
        self.matched += 1;
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        for doc in docs {
            self.matches.insert(*doc);
        }
        self.matched += docs.len() as u64;
    }

    /// Walks every term of the field and its postings: the cost is the field's postings in the
    /// segment, whatever the number of matches (few matches are counted from stored documents
    /// instead, see [`Store::top_values`]).
    fn harvest(self) -> tantivy::Result<TermCounts> {
        let mut out = TermCounts::default();
        if self.matched == 0 {
            return Ok(out);
        }
        let mut holding = BitSet::with_max_value(self.reader.max_doc());
        let inverted = self.reader.inverted_index(self.field)?;
        let mut terms = inverted.terms().stream().map_err(TantivyError::from)?;
        while terms.advance() {
            let mut postings = inverted
                .read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)
                .map_err(TantivyError::from)?;
            let (mut count, mut first) = (0u64, None);
            let mut doc = postings.doc();
            while doc != TERMINATED {
                if self.matches.contains(doc) {
                    count += 1;
                    first.get_or_insert(doc);
                    holding.insert(doc);
                }
                doc = postings.advance();
            }
            if let Some(first) = first {
                out.terms.insert(
                    String::from_utf8_lossy(terms.key()).into_owned(),
                    (count, DocAddress::new(self.segment, first)),
                );
            }
        }
        out.missing = self.matched - holding.len() as u64;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_read_at_dotted_paths_and_from_lists() {
        let doc = json!({
            "user": {"name": "dana.kim"},
            "source": {"geo": {"country_iso_code": "DE"}},
            "related": {"ip": ["10.0.0.1", "10.0.0.2"]},
            "cloud": {"account": {"id": 123456789012u64}},
            "event": {"action": ""}
        })
        .to_string();
        let at = |path: &str| values_in(&doc, path).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
        for path in [
            "user.name",
            "related.ip",
            "cloud.account.id",
            "event.action",
            "x.y",
        ] {
            assert_eq!(values_in_doc(&parsed, path), at(path), "{path}");
        }
        assert_eq!(at("user.name"), ["dana.kim"]);
        assert_eq!(at("source.geo.country_iso_code"), ["DE"]);
        assert_eq!(at("related.ip"), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(at("cloud.account.id"), ["123456789012"]);
        assert!(at("event.action").is_empty());
        assert!(at("user.email").is_empty());
        assert!(at("user.name.first").is_empty());
    }
}
