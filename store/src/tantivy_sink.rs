//! The tantivy side: one index per (tenant, day), its schema, and the writers.
//!
//! Field mapping (query with these names; dots are part of the field name):
//!
//! | field | from | indexing |
//! |---|---|---|
//! | `event.id` | `Event::id` | u64 of its first 64 bits, indexed + fast; `_id_lo` (fast) has the rest; queries `event.id:<hex id>` are rewritten to it |
//! | `@timestamp` | `Event::timestamp` | date, fast (microseconds): range queries and sort, no exact-term queries |
//! | `event.module` | `Event::source` | keyword, lowercased |
//! | `event.action`, `event.outcome`, `event.category`, `event.type` | ECS | keyword, lowercased |
//! | `source.ip`, `related.ip`, `source.geo.country_iso_code`, `organization.id`, `cloud.account.id` | ECS | keyword, lowercased |
//! | `user.name`, `user.email`, `user.id`, `user.target.*`, `related.user`, `user_agent.original` | ECS | text (words, lowercased) |
//! | `source.as.number` | ECS | u64, indexed |
//! | `all` | `event.module`, the ECS values, every string and number of the raw record | identifiers whole + their words, lowercased, no positions ([`crate::catch_all`]); the default field of free-text queries |
//!
//! The output document ([`perimeter_model::Event::to_output_json`]) is kept in the doc store.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use perimeter_model::{EcsValue, Event, ECS_FIELDS};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, NumericOptions, Schema,
    TextFieldIndexing, TextOptions, STORED,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer, TokenizerManager};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};

use crate::catch_all::{CatchAllTokenizer, CATCH_ALL_TOKENIZER};
use crate::error::IoContext;
use crate::managed_list::{register_unlisted_segment_files, ManagedListOncePerCommit};
use crate::Result;

/// The event id field: the id's high 64 bits as a u64 (see [`EventSchema::id`]).
pub const ID_FIELD: &str = "event.id";
/// The id's low 64 bits (fast field).
pub const ID_LO_FIELD: &str = "_id_lo";
/// The event time (fast field, microseconds).
pub const TIMESTAMP_FIELD: &str = "@timestamp";

/// Tokenizer for keyword fields: the whole value as one token, lowercased.
pub const KEYWORD_TOKENIZER: &str = "keyword_lower";

/// ECS fields indexed as one lowercased token.
pub(crate) const KEYWORD_FIELDS: &[&str] = &[
    "event.action",
    "event.outcome",
    "event.category",
    "event.type",
    "source.ip",
    "source.geo.country_iso_code",
    "organization.id",
    "cloud.account.id",
    "related.ip",
];
/// ECS fields indexed as words.
pub(crate) const TEXT_FIELDS: &[&str] = &[
    "user.name",
    "user.email",
    "user.id",
    "user.target.name",
    "user.target.email",
    "user.target.id",
    "user_agent.original",
    "related.user",
];

/// The schema of every event index, with its field handles.
#[derive(Clone)]
pub struct EventSchema {
    pub schema: Schema,
    /// `event.id`: the id's high 64 bits ([`id_halves`]), indexed and fast.
    pub id: Field,
    /// The id's low 64 bits, fast.
    pub id_lo: Field,
    pub timestamp: Field,
    pub module: Field,
    pub as_number: Field,
    pub all: Field,
    pub doc: Field,
    /// (ECS name, field) for every keyword and text ECS field.
    pub ecs: Vec<(&'static str, Field)>,
    /// Index-side analyzers (set on every index).
    pub tokenizers: TokenizerManager,
    /// Query-side analyzers: the same, except `all`'s ([`crate::catch_all`]).
    pub query_tokenizers: TokenizerManager,
}

impl EventSchema {
    pub fn new() -> EventSchema {
        let mut b = Schema::builder();
        let keyword = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(KEYWORD_TOKENIZER)
                .set_index_option(IndexRecordOption::Basic),
        );
        let words = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        // The id's first 64 bits, indexed (a u64 term per event costs the term dictionary far
        // less than the 32-char hex text did) and fast (dedup set, sort tie-break); the other
        // 64 bits fast only. `event.id:<hex>` queries are rewritten to the u64 (`reader.rs`).
        let id = b.add_u64_field(ID_FIELD, NumericOptions::default().set_indexed().set_fast());
        let id_lo = b.add_u64_field(ID_LO_FIELD, NumericOptions::default().set_fast());
        // Fast only: range queries on a fast field run on the column (tantivy does so even
        // when the field is also indexed), and sorting uses the column; a term per
        // (near-unique) timestamp only grew every segment's term dictionary.
        let timestamp = b.add_date_field(
            TIMESTAMP_FIELD,
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Microseconds),
        );
        let module = b.add_text_field("event.module", keyword.clone());
        let as_number =
            b.add_u64_field("source.as.number", NumericOptions::default().set_indexed());
        let mut ecs = Vec::new();
        for name in KEYWORD_FIELDS {
            ecs.push((*name, b.add_text_field(name, keyword.clone())));
        }
        for name in TEXT_FIELDS {
            ecs.push((*name, b.add_text_field(name, words.clone())));
        }
        // Search sorts by time, not score: no field norms on the catch-all, and no positions
        // (see `catch_all`).
        let catch_all = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(CATCH_ALL_TOKENIZER)
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        );
        let all = b.add_text_field("all", catch_all);
        let doc = b.add_text_field("_doc", STORED);
        let tokenizers = base_tokenizers();
        tokenizers.register(
            CATCH_ALL_TOKENIZER,
            TextAnalyzer::from(CatchAllTokenizer::index_side()),
        );
        let query_tokenizers = base_tokenizers();
        query_tokenizers.register(
            CATCH_ALL_TOKENIZER,
            TextAnalyzer::from(CatchAllTokenizer::query_side()),
        );
        debug_assert!(ECS_FIELDS
            .iter()
            .skip(1)
            .all(|f| *f == "source.as.number" || ecs.iter().any(|(n, _)| n == f)));
        EventSchema {
            schema: b.build(),
            id,
            id_lo,
            timestamp,
            module,
            as_number,
            all,
            doc,
            ecs,
            tokenizers,
            query_tokenizers,
        }
    }

    /// The tantivy document for a masked event; `raw_words` are the strings and numbers of its
    /// raw record, space separated, and `output_text` is its output document
    /// ([`Event::to_output_json`]) as JSON text, kept in the doc store. `all` is scratch space
    /// for the catch-all text (the document copies it; one buffer serves a batch).
    ///
    /// `all` gets `event.module`, the ECS values and every string and number of the raw record:
    /// what an analyst searches for. Not the event id, timestamps, tenant or input line: they
    /// have their own fields (`event.id`, `@timestamp`) or none worth searching, and being
    /// unique per event they would only grow every segment's term dictionary.
    pub fn document(
        &self,
        event: &Event,
        raw_words: &str,
        output_text: &str,
        all: &mut String,
    ) -> TantivyDocument {
        // Sized for the usual event at once (the catch-all and output texts, and the ECS values
        // twice, in their fields and in `all`), instead of growing through several copies.
        let mut d = TantivyDocument::with_capacity(output_text.len() + raw_words.len() + 1024);
        let (hi, lo) = id_halves(&event.id().0);
        d.add_u64(self.id, hi);
        d.add_u64(self.id_lo, lo);
        d.add_date(self.timestamp, to_tantivy_date(event.timestamp));
        d.add_text(self.module, &event.source);
        all.clear();
        all.push_str(&event.source);
        all.push(' ');
        for (name, field) in &self.ecs {
            match event.ecs.get(name) {
                Some(EcsValue::Str(s)) => {
                    d.add_text(*field, s);
                    all.push_str(s);
                    all.push(' ');
                }
                Some(EcsValue::List(l)) => {
                    for s in l {
                        d.add_text(*field, s);
                        all.push_str(s);
                        all.push(' ');
                    }
                }
                Some(EcsValue::Num(n)) => d.add_u64(*field, n),
                None => {}
            }
        }
        if let Some(n) = event.ecs.source_as_number {
            use std::fmt::Write;
            d.add_u64(self.as_number, n);
            let _ = write!(all, "{n} ");
        }
        all.push_str(raw_words);
        d.add_text(self.all, all.as_str());
        d.add_text(self.doc, output_text);
        d
    }
}

/// tantivy's analyzers plus the keyword one.
fn base_tokenizers() -> TokenizerManager {
    let tokenizers = TokenizerManager::default();
    tokenizers.register(
        KEYWORD_TOKENIZER,
        TextAnalyzer::builder(RawTokenizer::default())
            .filter(LowerCaser)
            .build(),
    );
    tokenizers
}

impl Default for EventSchema {
    fn default() -> Self {
        EventSchema::new()
    }
}

/// The 128-bit event id as two u64 (for the dedup set and the sort tie-break). Ids that are
/// not 32 hex chars (never produced by the model) are hashed instead.
pub fn id_halves(id: &str) -> (u64, u64) {
    if let Some(halves) = hex_id_halves(id) {
        return halves;
    }
    let h = blake3::hash(id.as_bytes());
    let b = h.as_bytes();
    let hi = u64::from_be_bytes(b[..8].try_into().unwrap_or_default());
    let lo = u64::from_be_bytes(b[8..16].try_into().unwrap_or_default());
    (hi, lo)
}

/// The two u64 of an id written as 32 hex digits (as the model writes every id), `None` for any
/// other text. The bytes are checked before the text is cut in two: 32 bytes of other
/// characters (an id in a request) may hold one that byte 16 would cut.
pub(crate) fn hex_id_halves(id: &str) -> Option<(u64, u64)> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hi = u64::from_str_radix(&id[..16], 16).ok()?;
    let lo = u64::from_str_radix(&id[16..], 16).ok()?;
    Some((hi, lo))
}

pub fn id_key(id: &str) -> u128 {
    let (hi, lo) = id_halves(id);
    ((hi as u128) << 64) | lo as u128
}

pub fn to_tantivy_date(ts: DateTime<Utc>) -> tantivy::DateTime {
    tantivy_date_from_micros(ts.timestamp_micros())
}

/// tantivy keeps dates as i64 nanoseconds (years 1677 to 2262): a time outside is clamped to
/// the nearest end instead of overflowing. Query bounds such as `now-999999w` land there, and
/// mean the same (every stored event is inside).
pub fn tantivy_date_from_micros(micros: i64) -> tantivy::DateTime {
    const LIMIT: i64 = i64::MAX / 1_000;
    tantivy::DateTime::from_timestamp_micros(micros.clamp(-LIMIT, LIMIT))
}

/// One (tenant, day) index, open for reading.
pub struct DayIndex {
    pub tenant: String,
    pub day: NaiveDate,
    pub index: Index,
    pub reader: IndexReader,
}

impl DayIndex {
    /// Open (or create) the index in `dir`; `writer`: for a store that writes (which may
    /// tidy the directory up first, see [`register_unlisted_segment_files`]).
    pub fn open(
        dir: &Path,
        tenant: &str,
        day: NaiveDate,
        schema: &EventSchema,
        writer: bool,
    ) -> Result<DayIndex> {
        let exists = dir.join("meta.json").exists();
        let mut index = if exists {
            if writer {
                register_unlisted_segment_files(dir).at(dir)?;
            }
            Index::open(ManagedListOncePerCommit::open(dir)?)?
        } else {
            crate::layout::create_dir_durable(dir)?;
            Index::create(
                ManagedListOncePerCommit::open(dir)?,
                schema.schema.clone(),
                tantivy::IndexSettings::default(),
            )?
        };
        if exists && index.schema() != schema.schema {
            return Err(crate::StoreError::Corrupt {
                path: dir.to_path_buf(),
                reason:
                    "index schema differs from this version's event schema (written by another \
                         version): rebuild it from the Parquet files with `perimeter reindex`"
                        .into(),
            });
        }
        index.set_tokenizers(schema.tokenizers.clone());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(DayIndex {
            tenant: tenant.to_string(),
            day,
            index,
            reader,
        })
    }

    /// The batch sequence number of the last commit (0 for a fresh index).
    pub fn committed_seq(&self) -> Result<u64> {
        let meta = self.index.load_metas()?;
        Ok(meta
            .payload
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0))
    }

    /// Every event id in the committed index.
    pub fn load_ids(&self) -> Result<HashSet<u128>> {
        let searcher = self.reader.searcher();
        let mut ids = HashSet::with_capacity(searcher.num_docs() as usize);
        for seg in searcher.segment_readers() {
            let hi = seg.fast_fields().u64(ID_FIELD)?.first_or_default_col(0);
            let lo = seg.fast_fields().u64(ID_LO_FIELD)?.first_or_default_col(0);
            let alive = seg.alive_bitset();
            for doc in 0..seg.max_doc() {
                if alive.is_some_and(|a| !a.is_alive(doc)) {
                    continue;
                }
                ids.insert(((hi.get_val(doc) as u128) << 64) | lo.get_val(doc) as u128);
            }
        }
        Ok(ids)
    }
}

/// tantivy's log merge policy, with every segment size its own level.
///
/// The default puts every segment under 10,000 documents in one level, and merges a level
/// once it holds 8 segments. A store fed small batches (a poller's pages, single webhook
/// events, a group commit of a few requests) commits small segments, so the default merges the
/// level's one large segment again with every 7 new small ones until it passes 10,000
/// documents: an early document is merged up to 10,000 / (7 x the segment size) times (~140
/// for segments of 10). With levels by size all the way down, a document is merged about once
/// per 8x of growth. Batches of 10,000 events and more commit segments above that size, where
/// nothing changes. Measured with the `store` bench, CPU per event: batches of 400 events
/// 176-214 -> 144-163 µs, of 10 events 3,993-4,058 -> 2,834-3,124 µs; search latency unchanged.
fn merge_policy() -> tantivy::indexer::LogMergePolicy {
    let mut policy = tantivy::indexer::LogMergePolicy::default();
    policy.set_min_layer_size(1);
    policy
}

/// An open writer with the ids its index holds (committed + pending), for dedup.
pub struct DayWriter {
    pub index: Arc<DayIndex>,
    pub writer: IndexWriter,
    pub ids: HashSet<u128>,
    pub last_used: u64,
}

impl DayWriter {
    pub fn open(
        index: Arc<DayIndex>,
        threads: usize,
        memory_bytes: usize,
        last_used: u64,
    ) -> Result<DayWriter> {
        let writer: IndexWriter = index.index.writer_with_num_threads(threads, memory_bytes)?;
        writer.set_merge_policy(Box::new(merge_policy()));
        let ids = index.load_ids()?;
        Ok(DayWriter {
            index,
            writer,
            ids,
            last_used,
        })
    }

    /// The expensive half of a commit (the indexing threads serialize their segments), with
    /// `seq` as the payload; nothing is visible or durable until [`PreparedDayCommit::commit`].
    pub fn prepare(&mut self, seq: u64) -> Result<PreparedDayCommit<'_>> {
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&seq.to_string());
        Ok(PreparedDayCommit {
            prepared,
            reader: &self.index.reader,
        })
    }
}

/// A prepared commit of a [`DayWriter`]: commit it or abort it.
pub struct PreparedDayCommit<'a> {
    prepared: tantivy::indexer::PreparedCommit<'a>,
    reader: &'a IndexReader,
}

impl PreparedDayCommit<'_> {
    /// Make the prepared segments durable (meta.json), then visible to readers.
    pub fn commit(self) -> Result<()> {
        self.prepared.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Drop the prepared documents (the writer goes back to its last commit).
    pub fn abort(self) -> Result<()> {
        self.prepared.abort()?;
        Ok(())
    }
}

/// Remove an index directory (after its handles were dropped).
pub fn remove_index_dir(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).at(dir)
}

#[cfg(test)]
mod tests {
    use tantivy::index::SegmentId;
    use tantivy::indexer::MergePolicy;
    use tantivy::schema::Schema;
    use tantivy::Index;

    use super::{hex_id_halves, id_halves, merge_policy};

    /// Ids in requests are any text: one of 32 bytes with a character across byte 16 (which
    /// the API fuzzing found) is hashed like any other id that is not 32 hex digits, and a
    /// model id is read as its two halves.
    #[test]
    fn an_id_is_read_as_hex_halves_only_when_it_is_32_hex_digits() {
        let model_id = "00112233445566778899aabbccddeeff";
        assert_eq!(
            hex_id_halves(model_id),
            Some((0x0011_2233_4455_6677, 0x8899_aabb_ccdd_eeff))
        );
        assert_eq!(id_halves(model_id), hex_id_halves(model_id).unwrap());
        let cut = format!("{}\u{a5d35}{}", "0".repeat(15), "0".repeat(13));
        assert_eq!(cut.len(), 32);
        assert!(!cut.is_char_boundary(16));
        let signed = format!("+{}", &model_id[1..]);
        let spaced = format!("{} {}", &model_id[..16], &model_id[17..]);
        let others = [&cut, &signed, &spaced];
        for other in others {
            assert_eq!(hex_id_halves(other), None, "{other}");
            assert_ne!(id_halves(other), id_halves(model_id));
        }
        // Hashed, not mapped to one fallback value: different texts stay apart.
        let halves: std::collections::HashSet<_> = others.iter().map(|o| id_halves(o)).collect();
        assert_eq!(halves.len(), others.len());
    }

    /// Small commits must not drag the segment they were already merged into along with every
    /// new handful: that merges the same documents again and again.
    #[test]
    fn small_segments_merge_among_themselves_not_into_a_larger_one() {
        let index = Index::create_in_ram(Schema::builder().build());
        let merged_before = index.new_segment_meta(SegmentId::generate_random(), 3_200);
        let mut segments = vec![merged_before.clone()];
        let small: Vec<_> = (0..8)
            .map(|_| index.new_segment_meta(SegmentId::generate_random(), 400))
            .collect();
        segments.extend(small.iter().cloned());

        let candidates = merge_policy().compute_merge_candidates(&segments);
        assert_eq!(candidates.len(), 1, "{candidates:?}");
        let mut merged = candidates[0].0.clone();
        merged.sort();
        let mut expected: Vec<_> = small.iter().map(|s| s.id()).collect();
        expected.sort();
        assert_eq!(merged, expected, "only the 8 small segments are merged");

        // Fewer than 8 of a size: nothing to merge yet.
        let candidates = merge_policy().compute_merge_candidates(&segments[..8]);
        assert!(candidates.is_empty(), "{candidates:?}");
    }
}
