//! The read side the API uses: event search and lookup, alert listing and triage.

use std::ops::Bound;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::query_grammar::{
    Delimiter, UserInputAst, UserInputBound, UserInputLeaf, UserInputLiteral,
};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, Searcher, SegmentReader, TantivyDocument, Term};

use crate::alerts::{AlertQuery, AlertRecord, AlertUpdate, Page, MAX_PAGE_LIMIT};
use crate::catch_all::{map_leaves, rewrite_catch_all_phrases, try_map_leaves};
use crate::fuzzy::rewrite_fuzzy;
use crate::histogram::{
    Buckets, EventHistogram, EventHistogramQuery, HistogramCollector, AUTO_INTERVAL_WITHOUT_DATA,
};
use crate::ip_query::rewrite_ip_ranges;
use crate::store::{read, write, Store};
use crate::tantivy_sink::{
    id_halves, tantivy_date_from_micros, DayIndex, ID_FIELD, ID_LO_FIELD, TIMESTAMP_FIELD,
};
use crate::time_query::rewrite_times;
use crate::wildcard::rewrite_wildcards;
use crate::{Result, StoreError};

/// An event search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// tantivy query syntax over the fields listed in [`crate::tantivy_sink`] (for example
    /// `event.action:user.session.start AND user.name:alice`); bare words search the `all`
    /// field; several bare words must all match. Empty or `*` matches everything.
    pub query: String,
    /// `@timestamp >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `@timestamp < to`.
    pub to: Option<DateTime<Utc>>,
    /// Page size (clamped to `1..=MAX_PAGE_LIMIT`).
    pub limit: usize,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Newest first (default), or oldest first (a timeline, to read what happened in order).
    pub sort: EventSort,
}

/// Order of [`EventQuery`] results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSort {
    #[default]
    Newest,
    Oldest,
}

impl std::str::FromStr for EventSort {
    type Err = String;

    /// `newest` or `oldest`; the error says what is accepted.
    fn from_str(s: &str) -> std::result::Result<EventSort, String> {
        match s {
            "newest" => Ok(EventSort::Newest),
            "oldest" => Ok(EventSort::Oldest),
            other => Err(format!(
                "unknown sort `{other}` (expected newest or oldest)"
            )),
        }
    }
}

/// Position of an event in time order: (@timestamp micros, id high, id low).
type EventKey = (i64, u64, u64);

/// The collector keeps the largest ranks. Newest first ranks by the key; oldest first by its
/// bitwise complement, which reverses the order (and, applied again, gives the key back).
fn in_order(sort: EventSort, k: EventKey) -> EventKey {
    match sort {
        EventSort::Newest => k,
        EventSort::Oldest => (!k.0, !k.1, !k.2),
    }
}

/// A newest-first cursor is the key; an oldest-first one is prefixed `o`, so a cursor cannot
/// be taken to the other order (it would skip or repeat events).
fn encode_cursor(sort: EventSort, k: EventKey) -> String {
    let tag = if sort == EventSort::Oldest { "o" } else { "" };
    format!("{tag}{}.{:016x}{:016x}", k.0, k.1, k.2)
}

fn decode_cursor(sort: EventSort, c: &str) -> Result<EventKey> {
    let bad = || {
        StoreError::InvalidQuery(
            "bad cursor: pass the `next_cursor` of the previous page unchanged".into(),
        )
    };
    let c = match (sort, c.strip_prefix('o')) {
        (EventSort::Oldest, Some(rest)) => rest,
        (EventSort::Newest, None) => c,
        _ => {
            return Err(StoreError::InvalidQuery(
                "cursor belongs to another sort order".into(),
            ))
        }
    };
    let (ts, id) = c.split_once('.').ok_or_else(bad)?;
    let ts: i64 = ts.parse().map_err(|_| bad())?;
    let (hi, lo) = crate::tantivy_sink::hex_id_halves(id).ok_or_else(bad)?;
    Ok((ts, hi, lo))
}

/// Whether the index of `day` can hold events of `[from, to)`.
fn day_may_hold(day: NaiveDate, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> bool {
    !(from.is_some_and(|f| day < f.date_naive()) || to.is_some_and(|t| day > t.date_naive()))
}

/// One tenant's event indexes at one moment ([`Store::event_snapshot`]), newest day first.
/// Cheap to take and to clone; it keeps the segments it reads alive while it is held.
#[derive(Clone)]
pub struct EventSnapshot {
    days: Vec<(NaiveDate, Searcher)>,
}

impl Store {
    /// The tenant's day indexes, newest day first.
    pub(crate) fn tenant_indexes(&self, tenant: &str) -> Vec<Arc<DayIndex>> {
        let map = read(&self.indexes);
        let range = (tenant.to_string(), chrono::NaiveDate::MIN)
            ..=(tenant.to_string(), chrono::NaiveDate::MAX);
        map.range(range).rev().map(|(_, v)| v.clone()).collect()
    }

    /// Parse a user query. Invalid syntax or unknown fields are [`StoreError::InvalidQuery`].
    pub fn parse_event_query(&self, query: &str) -> Result<Box<dyn Query>> {
        let q = query.trim();
        if q.is_empty() || q == "*" {
            return Ok(Box::new(AllQuery));
        }
        let depth = nesting(q);
        if depth > MAX_QUERY_NESTING {
            return Err(StoreError::InvalidQuery(format!(
                "the query nests {depth} levels deep (parentheses and NOT / - / + in a row); at most {MAX_QUERY_NESTING}"
            )));
        }
        let mut parser = QueryParser::new(
            self.schema.schema.clone(),
            vec![self.schema.all],
            self.schema.query_tokenizers.clone(),
        );
        parser.set_conjunction_by_default();
        // For IP ranges and CIDR blocks (`ip_query`); a regex typed by the user stays refused.
        parser.allow_regexes();
        let spelt = crate::operators::spell_operators(q).map_err(StoreError::InvalidQuery)?;
        let unquoted =
            crate::time_query::unquote_comparisons(&crate::time_query::quote_bare_instants(&spelt));
        let ast = tantivy::query_grammar::parse_query(&unquoted)
            .map_err(|_| StoreError::InvalidQuery(format!("syntax error in query `{q}`")))?;
        if has_regex(&ast) {
            return Err(StoreError::InvalidQuery(
                "regular expressions (`field:/.../`) are not supported; use wildcards (`dana*`)"
                    .into(),
            ));
        }
        let ast = refuse_event_id_ranges(ast).map_err(StoreError::InvalidQuery)?;
        let ast = rewrite_pasted_pseudonyms(ast);
        let ast = match (&self.query_masker, &self.query_pseudonym) {
            (None, None) => ast,
            (masker, pseudonym) => {
                let schema = &self.schema.schema;
                // Only text holds a keyed hash: a number field's term stays a number.
                let text_field = |name: &str| {
                    schema.get_field(name).is_ok_and(|field| {
                        matches!(
                            schema.get_field_entry(field).field_type(),
                            tantivy::schema::FieldType::Str(_)
                        )
                    })
                };
                mask_query_terms(
                    ast,
                    &|term: &str| masker.as_ref().and_then(|m| m(term)),
                    pseudonym.as_deref(),
                    &text_field,
                )
            }
        };
        let ast = rewrite_fuzzy(rewrite_unbounded_ranges(ast)).map_err(StoreError::InvalidQuery)?;
        let ast = rewrite_times(ast, Utc::now()).map_err(StoreError::InvalidQuery)?;
        let ast = rewrite_wildcards(rewrite_ip_ranges(ast).map_err(StoreError::InvalidQuery)?);
        let ast = rewrite_negations(rewrite_event_ids(rewrite_catch_all_phrases(ast)));
        crate::fuzzy::build(ast, &self.schema.schema, &|part| {
            parser
                .build_query_from_user_input_ast(part)
                .map_err(|e| StoreError::InvalidQuery(query_error_text(&e)))
        })
    }

    /// One tenant's events as they are now, for several searches that must agree: a long
    /// export pages through one snapshot, so events stored meanwhile neither grow it past the
    /// count it announced nor shift its pages.
    pub fn event_snapshot(&self, tenant: &str) -> EventSnapshot {
        EventSnapshot {
            days: self
                .tenant_indexes(tenant)
                .into_iter()
                .map(|idx| (idx.day, idx.reader.searcher()))
                .collect(),
        }
    }

    /// Search one tenant's events, newest first (or oldest first, `q.sort`).
    pub fn search_events(&self, tenant: &str, q: &EventQuery) -> Result<Page<serde_json::Value>> {
        self.search_snapshot(&self.event_snapshot(tenant), q)
    }

    /// [`Self::search_events`] over a snapshot ([`Self::event_snapshot`]).
    pub fn search_snapshot(
        &self,
        snapshot: &EventSnapshot,
        q: &EventQuery,
    ) -> Result<Page<serde_json::Value>> {
        self.search_snapshot_with(snapshot, q, |doc| self.stored_output(doc))
    }

    /// [`Self::search_snapshot`] with each hit as the JSON text the store keeps of it (the
    /// document [`Self::search_snapshot`] parses), for an export that writes it out as it is.
    pub(crate) fn search_snapshot_text(
        &self,
        snapshot: &EventSnapshot,
        q: &EventQuery,
    ) -> Result<Page<String>> {
        self.search_snapshot_with(snapshot, q, |doc| Ok(self.stored_text(doc).to_string()))
    }

    fn search_snapshot_with<T>(
        &self,
        snapshot: &EventSnapshot,
        q: &EventQuery,
        read: impl Fn(&TantivyDocument) -> Result<T>,
    ) -> Result<Page<T>> {
        let limit = q.limit.clamp(1, MAX_PAGE_LIMIT);
        let user_query = self.parse_event_query(&q.query)?;
        let oldest = q.sort == EventSort::Oldest;
        let cursor = q
            .cursor
            .as_deref()
            .map(|c| decode_cursor(q.sort, c))
            .transpose()?;
        check_time_range(q.from, q.to)?;
        // Bounds in micros from `from`/`to` and the cursor (inclusive: ties on the timestamp
        // are split by id in the sort key): newest first, the cursor bounds from above; oldest
        // first, from below.
        let mut upper: Option<Bound<i64>> = q.to.map(|t| Bound::Excluded(t.timestamp_micros()));
        let mut lower: Option<i64> = q.from.map(|f| f.timestamp_micros());
        if let Some((ts, _, _)) = cursor {
            if oldest {
                lower = Some(lower.map_or(ts, |l| l.max(ts)));
            } else {
                let tighter = !matches!(upper, Some(Bound::Excluded(u)) if u <= ts);
                if tighter {
                    upper = Some(Bound::Included(ts));
                }
            }
        }
        let lower_day = lower
            .and_then(DateTime::from_timestamp_micros)
            .map(|d| d.date_naive());
        let upper_day = upper.map(|b| match b {
            Bound::Included(u) | Bound::Excluded(u) => DateTime::from_timestamp_micros(u)
                .map(|d| d.date_naive())
                .unwrap_or(chrono::NaiveDate::MAX),
            Bound::Unbounded => chrono::NaiveDate::MAX,
        });

        let query = self.within_time(user_query, lower, upper);

        let mut hits: Vec<(EventKey, T)> = Vec::new();
        let mut days: Vec<&(NaiveDate, Searcher)> = snapshot.days.iter().collect();
        if oldest {
            days.reverse();
        }
        for (day, searcher) in days {
            if upper_day.is_some_and(|u| *day > u) || lower_day.is_some_and(|l| *day < l) {
                continue;
            }
            let want = limit + 1 - hits.len();
            let q_sort = q.sort;
            let collector = TopDocs::with_limit(want).order_by(move |seg: &SegmentReader| {
                let ff = seg.fast_fields();
                let ts = ff
                    .date(TIMESTAMP_FIELD)
                    .ok()
                    .map(|c| c.first_or_default_col(tantivy::DateTime::MIN));
                let hi = ff.u64(ID_FIELD).ok().map(|c| c.first_or_default_col(0));
                let lo = ff.u64(ID_LO_FIELD).ok().map(|c| c.first_or_default_col(0));
                move |doc: tantivy::DocId| -> Option<EventKey> {
                    let key = (
                        ts.as_ref()?.get_val(doc).into_timestamp_micros(),
                        hi.as_ref()?.get_val(doc),
                        lo.as_ref()?.get_val(doc),
                    );
                    // Docs at or past the cursor's position sort last and are dropped below.
                    let rank = in_order(q_sort, key);
                    match cursor {
                        Some(c) if rank >= in_order(q_sort, c) => None,
                        _ => Some(rank),
                    }
                }
            });
            let top: Vec<(Option<EventKey>, DocAddress)> = searcher
                .search(&query, &collector)
                .map_err(query_shape_error)?;
            for (rank, addr) in top {
                let Some(rank) = rank else { continue };
                let key = in_order(q.sort, rank);
                let doc: TantivyDocument = searcher.doc(addr)?;
                hits.push((key, read(&doc)?));
            }
            if hits.len() > limit {
                break;
            }
        }
        let more = hits.len() > limit;
        hits.truncate(limit);
        let next_cursor = if more {
            hits.last().map(|(k, _)| encode_cursor(q.sort, *k))
        } else {
            None
        };
        Ok(Page {
            items: hits.into_iter().map(|(_, v)| v).collect(),
            next_cursor,
        })
    }

    /// `user_query` restricted to `@timestamp >= lower` and below `upper` (microseconds).
    fn within_time(
        &self,
        user_query: Box<dyn Query>,
        lower: Option<i64>,
        upper: Option<Bound<i64>>,
    ) -> Box<dyn Query> {
        let ts_field = self.schema.timestamp;
        let term_of = |micros: i64| {
            // Exact to the microsecond: `@timestamp` is a fast field only, so the range runs on
            // its column. (`from_field_date_for_search` cuts to whole seconds, the precision of
            // indexed dates: a page's cursor then dropped the other events of its second.)
            Term::from_field_date(ts_field, tantivy_date_from_micros(micros))
        };
        let lower_bound = lower
            .map(|l| Bound::Included(term_of(l)))
            .unwrap_or(Bound::Unbounded);
        let upper_bound = match upper {
            Some(Bound::Included(u)) => Bound::Included(term_of(u)),
            Some(Bound::Excluded(u)) => Bound::Excluded(term_of(u)),
            _ => Bound::Unbounded,
        };
        if matches!(
            (&lower_bound, &upper_bound),
            (Bound::Unbounded, Bound::Unbounded)
        ) {
            return user_query;
        }
        let range: Box<dyn Query> = Box::new(RangeQuery::new(lower_bound, upper_bound));
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, user_query),
            (Occur::Must, range),
        ]))
    }

    /// The tenant's day indexes that can hold events of `[from, to)`, newest day first.
    pub(crate) fn indexes_in_range(
        &self,
        tenant: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Vec<Arc<DayIndex>> {
        self.tenant_indexes(tenant)
            .into_iter()
            .filter(|idx| day_may_hold(idx.day, from, to))
            .collect()
    }

    /// `user_query` restricted to `[from, to)`; `from` must be before `to`.
    pub(crate) fn query_in_range(
        &self,
        user_query: Box<dyn Query>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Box<dyn Query>> {
        check_time_range(from, to)?;
        Ok(self.within_time(
            user_query,
            from.map(|f| f.timestamp_micros()),
            to.map(|t| Bound::Excluded(t.timestamp_micros())),
        ))
    }

    /// How many of one tenant's events a search matches in `[from, to)` (an export says so
    /// when it stops at its bound before them all).
    pub fn count_events(
        &self,
        tenant: &str,
        query: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<u64> {
        self.count_snapshot(&self.event_snapshot(tenant), query, from, to)
    }

    /// [`Self::count_events`] over a snapshot ([`Self::event_snapshot`]).
    pub fn count_snapshot(
        &self,
        snapshot: &EventSnapshot,
        query: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<u64> {
        check_time_range(from, to)?;
        let user_query = self.parse_event_query(query)?;
        let query = self.query_in_range(user_query, from, to)?;
        let mut total = 0u64;
        for (day, searcher) in &snapshot.days {
            if !day_may_hold(*day, from, to) {
                continue;
            }
            total += searcher
                .search(&*query, &tantivy::collector::Count)
                .map_err(query_shape_error)? as u64;
        }
        Ok(total)
    }

    /// How many of one tenant's events a search matches, per interval of time (see
    /// [`crate::histogram`]). Bad queries and intervals are [`StoreError::InvalidQuery`].
    pub fn event_histogram(&self, tenant: &str, q: &EventHistogramQuery) -> Result<EventHistogram> {
        let user_query = self.parse_event_query(&q.query)?;
        let query = self.query_in_range(user_query, q.from, q.to)?;
        if q.interval_seconds.is_some_and(|i| i <= 0) {
            return Err(StoreError::InvalidQuery(
                "the interval must be at least one second".into(),
            ));
        }
        let indexes = self.indexes_in_range(tenant, q.from, q.to);
        let searchers: Vec<_> = indexes.iter().map(|idx| idx.reader.searcher()).collect();
        // An open end of the range ends where the matching events do, so the interval chosen
        // and the bucket limit go by them: one unrelated event a year old must not make the
        // failures of the last hour one weekly bucket.
        let mut stored: Option<(i64, i64)> = None;
        if q.from.is_none() || q.to.is_none() {
            for searcher in &searchers {
                if let Some(span) = searcher
                    .search(&query, &crate::histogram::MatchSpanCollector)
                    .map_err(query_shape_error)?
                {
                    stored = Some(stored.map_or(span, |s| crate::histogram::widen(s, span)));
                }
            }
        }
        let from = q.from.map(|f| f.timestamp());
        // `to` is exclusive: a fraction of a second past it still belongs to its second.
        let to =
            q.to.map(|t| t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0));
        let (start, end) = match (from, to, stored) {
            (Some(f), Some(t), _) => (f, t),
            (Some(f), None, Some((_, hi))) => (f, hi.max(f + 1)),
            (None, Some(t), Some((lo, _))) => (lo.min(t - 1), t),
            (None, None, Some(span)) => span,
            // Nothing stored, and an open end: no bucket to show.
            (_, _, None) => {
                return Ok(EventHistogram {
                    total: 0,
                    interval_seconds: q.interval_seconds.unwrap_or(AUTO_INTERVAL_WITHOUT_DATA),
                    buckets: Vec::new(),
                });
            }
        };
        let buckets = Buckets::covering(start, end, q.interval_seconds)?;
        let collector = HistogramCollector { buckets };
        let mut counts = vec![0u64; buckets.len];
        for searcher in &searchers {
            let part = searcher
                .search(&query, &collector)
                .map_err(query_shape_error)?;
            for (c, p) in counts.iter_mut().zip(part) {
                *c += p;
            }
        }
        Ok(buckets.histogram(counts, q.from.is_none(), q.to.is_none()))
    }

    fn stored_output(&self, doc: &TantivyDocument) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(self.stored_text(doc))?)
    }

    fn stored_text<'d>(&self, doc: &'d TantivyDocument) -> &'d str {
        doc.get_first(self.schema.doc)
            .and_then(|v| v.as_str())
            .unwrap_or("{}")
    }

    /// One event of a tenant by id (the `Event::to_output_json` document).
    pub fn get_event(&self, tenant: &str, id: &str) -> Result<Option<serde_json::Value>> {
        let (hi, lo) = id_halves(id);
        let term = Term::from_field_u64(self.schema.id, hi);
        let query = TermQuery::new(term.clone(), IndexRecordOption::Basic);
        for idx in self.tenant_indexes(tenant) {
            let searcher = idx.reader.searcher();
            if searcher.doc_freq(&term)? == 0 {
                continue;
            }
            // The term is the id's first 64 bits; the low half decides.
            for (_, addr) in searcher.search(&query, &TopDocs::with_limit(16).order_by_score())? {
                let seg = searcher.segment_reader(addr.segment_ord);
                let lo_col = seg.fast_fields().u64(ID_LO_FIELD)?.first_or_default_col(0);
                if lo_col.get_val(addr.doc_id) != lo {
                    continue;
                }
                let doc: TantivyDocument = searcher.doc(addr)?;
                return Ok(Some(self.stored_output(&doc)?));
            }
        }
        Ok(None)
    }

    /// Alerts of one tenant, filtered, sorted and paginated. An entity or text value that
    /// masking stores as a pseudonym (an e-mail address when e-mails are hashed) matches its
    /// pseudonym too, as event search does (QA: alerts of a user were not found by the
    /// address).
    pub fn list_alerts(&self, tenant: &str, q: &AlertQuery) -> Result<Page<AlertRecord>> {
        read(&self.alerts).list(tenant, &self.with_stored_forms(q))
    }

    /// Counts of one tenant's alerts selected by `q`'s filters (see [`crate::AlertSummary`]).
    pub fn alert_summary(&self, tenant: &str, q: &AlertQuery) -> crate::AlertSummary {
        read(&self.alerts).summary(tenant, &self.with_stored_forms(q))
    }

    /// The forms masking may have stored `value` in: as the query masker masks it, and its keyed
    /// hash (for a search to match those too).
    pub(crate) fn stored_forms_of(&self, value: &str) -> Vec<String> {
        let masked = self.query_masker.as_ref().and_then(|m| m(value));
        let hashed = self.query_pseudonym.as_ref().map(|p| p(value));
        masked.into_iter().chain(hashed).collect()
    }

    /// `q` with the stored forms of its entity and text values ([`AlertQuery::stored_forms`]):
    /// each as the query masker masks it, and its keyed hash.
    fn with_stored_forms(&self, q: &AlertQuery) -> AlertQuery {
        let mut q = q.clone();
        if self.query_masker.is_none() && self.query_pseudonym.is_none() {
            return q;
        }
        // The values as written (a keyed hash is of the exact text), each under its lowercased
        // form, which is how the alert book compares.
        let mut values: Vec<String> = q.entity.iter().cloned().collect();
        values.extend(
            q.text
                .as_deref()
                .map(crate::alerts::text_parts)
                .unwrap_or_default(),
        );
        for value in values {
            let lower = value.to_lowercase();
            for form in self.stored_forms_of(&value) {
                q.stored_forms.push((lower.clone(), form));
            }
        }
        q
    }

    /// One alert of a tenant (another tenant's id answers `None`).
    pub fn get_alert(&self, tenant: &str, id: &str) -> Result<Option<AlertRecord>> {
        Ok(read(&self.alerts).get(tenant, id).cloned())
    }

    /// The stored events an alert names in `event_ids`, in that order, and the ids of those no
    /// longer stored (event retention is shorter than alert retention as a rule).
    pub fn alert_evidence(&self, tenant: &str, id: &str) -> Result<AlertEvidence> {
        let Some(ids) = read(&self.alerts)
            .get(tenant, id)
            .map(|r| r.alert.event_ids.clone())
        else {
            return Ok(AlertEvidence::default());
        };
        let mut out = AlertEvidence::default();
        // Only event ids are looked up: a source-silence alert's evidence is the time of the
        // source's newest event (`newest:<µs>`), no event of its own (QA: reported as "no
        // longer stored (event retention)" minutes after it was raised).
        let is_event_id = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        for eid in ids.into_iter().filter(|id| is_event_id(id)) {
            match self.get_event(tenant, &eid)? {
                Some(ev) => out.events.push(ev),
                None => out.missing.push(eid),
            }
        }
        Ok(out)
    }

    /// Change status / assignee / add a note; each change is recorded with `actor` and the
    /// time, durably, before this returns. `None` when the tenant has no such alert. The day's
    /// alert Parquet file follows as stored alerts do (`alert_parquet_export_seconds`): a
    /// script triaging a thousand alerts of a busy day would otherwise rewrite it a thousand
    /// times.
    pub fn update_alert(
        &self,
        tenant: &str,
        id: &str,
        update: &AlertUpdate,
        actor: &str,
    ) -> Result<Option<AlertRecord>> {
        self.ensure_writable()?;
        let path = self.layout.alerts_journal(tenant);
        let record = write(&self.alerts).update(&path, tenant, id, update, actor, Utc::now())?;
        if let Some(r) = &record {
            self.alert_days_behind([(tenant.to_string(), r.alert.timestamp.date_naive())]);
            // The change is durable in the journal: a file that failed to catch up stays
            // behind for the next export rather than fail the change.
            if let Err(e) = self.export_alert_days(false) {
                tracing::warn!(error = %e, "alert parquet export failed");
            }
        }
        Ok(record)
    }
}

/// `event.id:<id>` (bare or quoted, or each id of `event.id: IN [..]`) becomes a term on the
/// u64 of the id's first 64 bits, which is what the `event.id` field holds, and the exact value
/// of the other 64 bits in the fast field `_id_lo`: an id that shares only its first half with a
/// stored one finds nothing, as `get_event` does.
fn rewrite_event_ids(ast: UserInputAst) -> UserInputAst {
    let one_id = |id: &str| {
        let (hi, lo) = id_halves(id.trim());
        let lo = || UserInputBound::Inclusive(lo.to_string());
        UserInputAst::Clause(vec![
            (
                Some(Occur::Must),
                UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(UserInputLiteral {
                    field_name: Some(ID_FIELD.to_string()),
                    phrase: hi.to_string(),
                    delimiter: Delimiter::None,
                    slop: 0,
                    prefix: false,
                }))),
            ),
            (
                Some(Occur::Must),
                UserInputAst::Leaf(Box::new(UserInputLeaf::Range {
                    field: Some(ID_LO_FIELD.to_string()),
                    lower: lo(),
                    upper: lo(),
                })),
            ),
        ])
    };
    map_leaves(ast, &|leaf| match leaf {
        UserInputLeaf::Literal(lit) if lit.field_name.as_deref() == Some(ID_FIELD) => {
            one_id(&lit.phrase)
        }
        UserInputLeaf::Set { field, elements } if field.as_deref() == Some(ID_FIELD) => {
            UserInputAst::Clause(
                elements
                    .iter()
                    .map(|id| (Some(Occur::Should), one_id(id)))
                    .collect(),
            )
        }
        other => UserInputAst::Leaf(Box::new(other)),
    })
}

/// Each term of the query masked as the pipeline masks stored values (`masker`), so a value
/// stored masked is found by the value itself. Wildcard terms, ids and times are left alone;
/// a masked term is searched as a phrase, as its quoted masked form would be. A term `masker`
/// leaves alone also matches its `pseudonym` (`(term OR "hmac:...")`), when there is one: the
/// form of a value hashed whole for its key's name or its field's rule.
fn mask_query_terms(
    ast: UserInputAst,
    masker: &dyn Fn(&str) -> Option<String>,
    pseudonym: Option<&(dyn Fn(&str) -> String + Send + Sync)>,
    text_field: &dyn Fn(&str) -> bool,
) -> UserInputAst {
    let skipped = |field: &Option<String>| {
        matches!(
            field.as_deref(),
            Some(ID_FIELD | ID_LO_FIELD | TIMESTAMP_FIELD)
        )
    };
    let wildcard = |lit: &UserInputLiteral| {
        lit.delimiter == Delimiter::None && lit.phrase.contains(['*', '?'])
    };
    map_leaves(ast, &|leaf| {
        UserInputAst::Leaf(Box::new(match leaf {
            UserInputLeaf::Literal(mut lit) if !skipped(&lit.field_name) && !wildcard(&lit) => {
                if let Some(masked) = masker(&lit.phrase) {
                    lit.phrase = masked;
                    if lit.delimiter == Delimiter::None {
                        lit.delimiter = Delimiter::DoubleQuotes;
                    }
                } else if let Some(pseudonym) = pseudonym.filter(|_| {
                    !lit.phrase.is_empty()
                        && !is_pseudonym(&lit.phrase)
                        && lit.field_name.as_deref().is_none_or(text_field)
                }) {
                    let hashed = UserInputLiteral {
                        phrase: pseudonym(&lit.phrase),
                        delimiter: Delimiter::DoubleQuotes,
                        slop: 0,
                        prefix: false,
                        field_name: lit.field_name.clone(),
                    };
                    let leaf = |l: UserInputLiteral| {
                        (
                            Some(Occur::Should),
                            UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(l))),
                        )
                    };
                    return UserInputAst::Clause(vec![leaf(lit), leaf(hashed)]);
                }
                UserInputLeaf::Literal(lit)
            }
            UserInputLeaf::Set { field, elements } if !skipped(&field) => UserInputLeaf::Set {
                elements: elements
                    .into_iter()
                    .map(|e| masker(&e).unwrap_or(e))
                    .collect(),
                field,
            },
            other => other,
        }))
    })
}

/// Whether a term is already a keyed hash as masking writes it (`hmac:` and hex digits).
fn is_pseudonym(term: &str) -> bool {
    term.strip_prefix("hmac:")
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Ranges on `event.id` (`event.id:>1`, `event.id:[a TO b]`) are refused: ids are content
/// hashes, their order means nothing, and the field holds only half of each.
fn refuse_event_id_ranges(ast: UserInputAst) -> std::result::Result<UserInputAst, String> {
    try_map_leaves(ast, &|leaf| match leaf {
        UserInputLeaf::Range { field, .. }
            if matches!(field.as_deref(), Some(ID_FIELD | ID_LO_FIELD)) =>
        {
            Err(format!(
                "`{ID_FIELD}` takes one event's id (`{ID_FIELD}:<32 hex digits>`) or several \
                 (`{ID_FIELD}: IN [a b]`), not a range"
            ))
        }
        other => Ok(other),
    })
}

/// A masking pseudonym pasted as it is shown (`hmac:118ce402e9d0d1f6`) reads as field `hmac`,
/// which does not exist (QA: refused, with advice to search the value alone, which the analyst
/// had done): it is the value, searched in every field as a quoted one would be.
fn rewrite_pasted_pseudonyms(ast: UserInputAst) -> UserInputAst {
    map_leaves(ast, &|leaf| match leaf {
        UserInputLeaf::Literal(lit)
            if lit.field_name.as_deref() == Some(PSEUDONYM_PREFIX)
                && !lit.prefix
                && !lit.phrase.is_empty()
                && lit.phrase.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(UserInputLiteral {
                field_name: None,
                phrase: format!("{PSEUDONYM_PREFIX}:{}", lit.phrase),
                delimiter: Delimiter::DoubleQuotes,
                slop: 0,
                prefix: false,
            })))
        }
        other => UserInputAst::Leaf(Box::new(other)),
    })
}

/// What masking's keyed hashes start with (`hmac:<hex>`).
const PSEUDONYM_PREFIX: &str = "hmac";

/// `field:[* TO *]` becomes `field:*` (the field has a value): tantivy's range query with
/// neither bound matched nothing at all on text and date fields.
fn rewrite_unbounded_ranges(ast: UserInputAst) -> UserInputAst {
    map_leaves(ast, &|leaf| match leaf {
        UserInputLeaf::Range {
            field: Some(field),
            lower: UserInputBound::Unbounded,
            upper: UserInputBound::Unbounded,
        } => UserInputAst::Leaf(Box::new(UserInputLeaf::Exists { field })),
        other => UserInputAst::Leaf(Box::new(other)),
    })
}

/// A search that tantivy refuses for the query's shape (an exists or range query on a field
/// that cannot answer it) is the caller's invalid query, not a store failure.
pub(crate) fn query_shape_error(e: tantivy::TantivyError) -> StoreError {
    match e {
        tantivy::TantivyError::SchemaError(m) | tantivy::TantivyError::InvalidArgument(m) => {
            StoreError::InvalidQuery(format!("this query cannot run on these fields: {m}"))
        }
        // `nope:*`: the grammar's exists query does not check its field.
        tantivy::TantivyError::FieldNotFound(field) => {
            StoreError::InvalidQuery(format!("unknown field `{field}`"))
        }
        other => other.into(),
    }
}

/// The parser's error, and for an unknown field what can be searched instead: vendor field
/// names (`actor.alternateId`) are not fields of their own, their values are free text.
fn query_error_text(e: &tantivy::query::QueryParserError) -> String {
    match e {
        tantivy::query::QueryParserError::FieldDoesNotExist(field) => {
            let mut known: Vec<&str> = vec![ID_FIELD, crate::tantivy_sink::TIMESTAMP_FIELD];
            known.push("event.module");
            known.extend(crate::tantivy_sink::KEYWORD_FIELDS);
            known.extend(crate::tantivy_sink::TEXT_FIELDS);
            known.push("source.as.number");
            format!(
                "unknown field `{field}`: vendor fields are not searched by name, their values are \
                 free text (search the value alone, e.g. `dana.kim` or \"Okta Verify\"); the fields \
                 are {}",
                known.join(", ")
            )
        }
        // The parser's text quotes Rust's error value (`ParseIntError { kind: InvalidDigit }`).
        tantivy::query::QueryParserError::ExpectedInt(_)
        | tantivy::query::QueryParserError::ExpectedFloat(_) => {
            "a number was expected: `source.as.number` takes whole numbers".to_string()
        }
        other => other.to_string(),
    }
}

fn has_regex(ast: &UserInputAst) -> bool {
    match ast {
        UserInputAst::Clause(clauses) => clauses.iter().any(|(_, sub)| has_regex(sub)),
        UserInputAst::Boost(inner, _) => has_regex(inner),
        UserInputAst::Leaf(leaf) => matches!(**leaf, UserInputLeaf::Regex { .. }),
    }
}

/// Make `NOT` mean what analysts mean. The grammar reads `a AND NOT b` as `+a +(-b)`, and a
/// group of only excluded terms matches nothing in tantivy, so the query found nothing at all
/// (`NOT b` alone too). Such a group under `AND` is merged into its parent (`+a -b`); anywhere
/// else (`a OR NOT b`, a whole query `NOT b`) it becomes "every event except": `(+* -b)`.
fn rewrite_negations(ast: UserInputAst) -> UserInputAst {
    with_everything_but(merge_excluded_groups(ast))
}

fn only_excluded(clauses: &[(Option<Occur>, UserInputAst)]) -> bool {
    !clauses.is_empty() && clauses.iter().all(|(o, _)| *o == Some(Occur::MustNot))
}

/// `+a +(-b)` -> `+a -b`, at every depth.
fn merge_excluded_groups(ast: UserInputAst) -> UserInputAst {
    match ast {
        UserInputAst::Clause(clauses) => {
            let mut out = Vec::with_capacity(clauses.len());
            for (occur, sub) in clauses {
                match (occur, merge_excluded_groups(sub)) {
                    // The parser builds with conjunction by default: no occur is `Must`.
                    (Some(Occur::Must) | None, UserInputAst::Clause(inner))
                        if only_excluded(&inner) =>
                    {
                        out.extend(inner)
                    }
                    other => out.push(other),
                }
            }
            UserInputAst::Clause(out)
        }
        UserInputAst::Boost(inner, boost) => {
            UserInputAst::Boost(Box::new(merge_excluded_groups(*inner)), boost)
        }
        leaf => leaf,
    }
}

/// A group left with only excluded terms becomes `(+* -b)`: every event but those.
fn with_everything_but(ast: UserInputAst) -> UserInputAst {
    match ast {
        UserInputAst::Clause(clauses) => {
            let mut out: Vec<_> = clauses
                .into_iter()
                .map(|(o, sub)| (o, with_everything_but(sub)))
                .collect();
            if only_excluded(&out) {
                let everything = UserInputAst::Leaf(Box::new(UserInputLeaf::All));
                out.insert(0, (Some(Occur::Must), everything));
            }
            UserInputAst::Clause(out)
        }
        UserInputAst::Boost(inner, boost) => {
            UserInputAst::Boost(Box::new(with_everything_but(*inner)), boost)
        }
        leaf => leaf,
    }
}

/// Deepest nesting [`nesting`] lets through to the parser. Analysts' queries nest a few levels.
const MAX_QUERY_NESTING: usize = 64;

/// How deeply `q` nests: open parentheses plus the prefix operators in a row before an operand
/// (`NOT NOT a`, `-(-a)`), outside quoted phrases. tantivy's grammar and the rewrites recurse
/// once per level: `NOT ` written 500 times (2 KB) overflowed the stack of the API worker
/// thread, which aborts the whole service.
fn nesting(q: &str) -> usize {
    let b = q.as_bytes();
    let (mut parens, mut prefix, mut deepest) = (0usize, 0usize, 0usize);
    let mut in_phrase = false;
    // Whether the next byte starts a token (the start, after a space, `(` or a prefix operator).
    let mut token_start = true;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_phrase {
            match c {
                b'\\' => i += 1,
                b'"' => in_phrase = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let starts = token_start;
        token_start = false;
        match c {
            b'"' => {
                in_phrase = true;
                prefix = 0;
            }
            b'(' => {
                parens += 1;
                token_start = true;
            }
            b')' => {
                parens = parens.saturating_sub(1);
                prefix = 0;
            }
            b'-' | b'+' if starts => {
                prefix += 1;
                token_start = true;
            }
            b'N' if starts
                && b[i..].starts_with(b"NOT")
                && b.get(i + 3)
                    .is_none_or(|n| n.is_ascii_whitespace() || matches!(n, b'(' | b'-' | b'+')) =>
            {
                prefix += 1;
                i += 2;
            }
            c if c.is_ascii_whitespace() => token_start = true,
            _ => prefix = 0,
        }
        deepest = deepest.max(parens + prefix);
        i += 1;
    }
    deepest
}

/// `[from, to)` must not be empty.
fn check_time_range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<()> {
    match (from, to) {
        (Some(f), Some(t)) if f >= t => Err(StoreError::InvalidQuery(
            "`from` must be before `to`".into(),
        )),
        _ => Ok(()),
    }
}

/// What [`Store::alert_evidence`] found.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AlertEvidence {
    /// The evidence events still stored (masked, as stored), in the alert's order.
    pub events: Vec<serde_json::Value>,
    /// Ids of the evidence events no longer stored: removed by event retention (an alert can
    /// outlive its events), so an analyst sees why the evidence is short.
    pub missing: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_parentheses_and_prefix_operators_in_a_row() {
        assert_eq!(nesting("user.name:alice"), 0);
        assert_eq!(nesting("a AND NOT b AND NOT c AND -d"), 1);
        assert_eq!(nesting("NOT NOT a"), 2);
        assert_eq!(nesting("-(-(a))"), 4);
        assert_eq!(nesting("((a OR b) AND c)"), 2);
        // Inside words and phrases nothing nests.
        assert_eq!(nesting("acme-corp NOTICE \"((( NOT NOT\" x-y"), 0);
        assert_eq!(nesting(&"NOT ".repeat(500)), 500);
        assert_eq!(
            nesting(&format!("{}a{}", "(".repeat(70), ")".repeat(70))),
            70
        );
    }

    #[test]
    fn negations_keep_their_meaning() {
        let shown = |q: &str| {
            let ast = tantivy::query_grammar::parse_query(q).unwrap();
            format!("{:?}", rewrite_negations(ast))
        };
        assert_eq!(shown("a AND NOT b"), "(+a -b)");
        assert_eq!(shown("NOT b AND a"), "(-b +a)");
        assert_eq!(shown("a -b"), "(*a -b)");
        assert_eq!(shown("NOT b"), shown("-b"));
        assert!(shown("NOT b").contains('+'), "{}", shown("NOT b"));
        assert!(
            shown("a OR NOT b").contains("(+"),
            "{}",
            shown("a OR NOT b")
        );
        assert_eq!(shown("a AND b"), "(+a +b)", "no negation, no change");
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let k = (1_700_000_000_000_000, 0xdead_beef, 42);
        for sort in [EventSort::Newest, EventSort::Oldest] {
            assert_eq!(decode_cursor(sort, &encode_cursor(sort, k)).unwrap(), k);
        }
        let newest = encode_cursor(EventSort::Newest, k);
        assert!(decode_cursor(EventSort::Oldest, &newest).is_err());
        assert!(decode_cursor(EventSort::Newest, &encode_cursor(EventSort::Oldest, k)).is_err());
        for bad in [
            "",
            "x",
            "1.abc",
            "abc.0000000000000000000000000000000g",
            "1.00",
            // 32 bytes with a character across byte 16: refused, not cut there.
            &format!("1.{}\u{a5d35}{}", "0".repeat(15), "0".repeat(13)),
            &format!("1.+{}", "0".repeat(31)),
        ] {
            assert!(
                matches!(
                    decode_cursor(EventSort::Newest, bad),
                    Err(StoreError::InvalidQuery(_))
                ),
                "{bad}"
            );
        }
    }
}
