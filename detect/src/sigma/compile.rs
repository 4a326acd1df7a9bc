//! The compiled matcher. Rules are dispatched by source; per source, a prefilter finds the rules
//! that can match an event without evaluating them:
//!
//! - every rule gets a set of *needles*, of which at least one must hold for its condition to be
//!   true: a field equals / starts with / ends with / contains a literal, or a field is present;
//! - needles are grouped by field (a *slot*: the field's lookup paths). Per event each slot is
//!   resolved once, its values are looked up in a hash table of the slot's exact literals
//!   (lowercased) and run through one case-insensitive Aho-Corasick automaton over the slot's
//!   other literals; only those values are scanned, not the whole record;
//! - keyword needles (no field) scan every value of the raw record with their own automaton;
//! - rules without such a guarantee (negations, `exists: false`, `null`) are always evaluated.
//!
//! Candidates are then evaluated in full, so the prefilter only has to be a superset (it is
//! checked against a naive interpreter by a property test).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use perimeter_model::raw_prelude::*;
use perimeter_model::{Alert, DetectorKind, EntityKind, Event, RawJson, Severity};
use std::collections::HashMap;

use super::condition::Cond;
use super::correlate::{
    CorrelationRestore, Correlator, CorrelatorSnapshot, FieldValues as CorrelationFields,
};
use super::matcher::{
    visit_leaves, Detection, FieldMatch, FieldPath, Found, Leaf, Selection, StrKind, StrTest,
    ValueTest, NO_SLOT,
};
use super::parse::{CorrelationRule, DetectionRule, RuleMeta};
use super::{RuleRef, RuleSet, SigmaOptions};

/// What a needle requires of its field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NeedleKind {
    /// A value equals the literal (ASCII case-insensitively).
    Exact,
    /// A value starts with the literal.
    Prefix,
    /// A value ends with the literal.
    Suffix,
    /// A value contains the literal.
    Contains,
    /// The field resolves to something (a value, null or an empty list).
    Present,
}

/// One necessary condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Needle {
    /// The field's lookup paths (pipeline-mapped names first); `None` for a keyword, which may
    /// be found in any value of the raw record.
    pub field: Option<Vec<String>>,
    pub kind: NeedleKind,
    /// ASCII-lowercased literal; for `Present`, the field's last name segment (for ranking).
    pub lit: String,
}

/// Needles of which at least one holds whenever the detection matches, if such a set exists.
/// Sets are compared by their weakest needle (longer literals are rarer), then by size.
pub(crate) fn detection_needles(det: &Detection) -> Option<Vec<Needle>> {
    cond_needles(&det.condition, &det.selections)
}

/// Value needles rank by length; presence needles rank below value needles of the same length,
/// since fields are present in many more events than any one value.
fn needle_rank(n: &Needle) -> usize {
    match n.kind {
        NeedleKind::Present => n.lit.len() / 2,
        // Equality is checked exactly (hash lookup), the others only as substrings.
        NeedleKind::Exact => n.lit.len() + 2,
        _ => n.lit.len(),
    }
}

fn better(a: Vec<Needle>, b: Vec<Needle>) -> Vec<Needle> {
    let score = |v: &Vec<Needle>| {
        (
            v.iter().map(needle_rank).min().unwrap_or(0),
            usize::MAX - v.len(),
        )
    };
    if score(&b) > score(&a) {
        b
    } else {
        a
    }
}

fn union(parts: impl Iterator<Item = Option<Vec<Needle>>>) -> Option<Vec<Needle>> {
    let mut out: Vec<Needle> = Vec::new();
    for p in parts {
        for n in p? {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn cond_needles(c: &Cond, sels: &[Selection]) -> Option<Vec<Needle>> {
    match c {
        Cond::Sel(i) => sels.get(*i).and_then(selection_needles),
        Cond::And(parts) => parts
            .iter()
            .filter_map(|p| cond_needles(p, sels))
            .reduce(better),
        Cond::Or(parts) => union(parts.iter().map(|p| cond_needles(p, sels))),
        Cond::Not(_) => None,
    }
}

fn selection_needles(sel: &Selection) -> Option<Vec<Needle>> {
    union(
        sel.alternatives
            .iter()
            .map(|map| map.iter().filter_map(field_needles).reduce(better)),
    )
}

fn field_needles(fm: &FieldMatch) -> Option<Vec<Needle>> {
    // A field without lookup paths never resolves; its needle would read as a keyword's.
    if fm.negate || fm.tests.is_empty() || (fm.field.is_some() && fm.paths.is_empty()) {
        return None;
    }
    value_needles(fm).or_else(|| key_needles(fm))
}

fn path_names(fm: &FieldMatch) -> Option<Vec<String>> {
    fm.field
        .as_ref()
        .map(|_| fm.paths.iter().map(|p| p.name.clone()).collect())
}

/// A field whose every test needs a value (numbers, regexes, CIDRs, ...) can only match when
/// the field resolves (raw record first, then the ECS view).
fn key_needles(fm: &FieldMatch) -> Option<Vec<Needle>> {
    let field = path_names(fm)?;
    let requires_value = |t: &ValueTest| match t {
        ValueTest::Null => false,
        ValueTest::Exists(b) => *b,
        _ => true,
    };
    let required = if fm.all {
        fm.tests.iter().any(requires_value)
    } else {
        fm.tests.iter().all(requires_value)
    };
    if !required || field.is_empty() {
        return None;
    }
    let last = field[0].rsplit('.').next().unwrap_or("").to_string();
    Some(vec![Needle {
        field: Some(field),
        kind: NeedleKind::Present,
        lit: last,
    }])
}

fn test_needle(field: &Option<Vec<String>>, t: &ValueTest) -> Option<Vec<Needle>> {
    let ValueTest::Str(StrTest::Lit { kind, lit, .. }) = t else {
        return None;
    };
    if lit.is_empty() {
        return None;
    }
    let kind = match (field, kind) {
        // Keywords are substring searches over every value.
        (None, _) => NeedleKind::Contains,
        (Some(_), StrKind::Exact) => NeedleKind::Exact,
        (Some(_), StrKind::Prefix) => NeedleKind::Prefix,
        (Some(_), StrKind::Suffix) => NeedleKind::Suffix,
        (Some(_), StrKind::Contains) => NeedleKind::Contains,
    };
    Some(vec![Needle {
        field: field.clone(),
        kind,
        lit: lit.to_ascii_lowercase(),
    }])
}

fn value_needles(fm: &FieldMatch) -> Option<Vec<Needle>> {
    let field = path_names(fm);
    if fm.all {
        fm.tests
            .iter()
            .filter_map(|t| test_needle(&field, t))
            .reduce(better)
    } else {
        union(fm.tests.iter().map(|t| test_needle(&field, t)))
    }
}

/// FNV-1a over 8-byte words for short strings (std's SipHash costs more than the lookup saves).
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = (h ^ w).wrapping_mul(0x0100_0000_01b3);
            h ^= h >> 29;
        }
        for b in chunks.remainder() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h ^ (h >> 32);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// Rules per automaton pattern, by how the pattern must sit in the value.
#[derive(Debug, Default)]
struct PatternRules {
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    contains: Vec<u32>,
}

/// The needles of one field.
#[derive(Debug)]
struct Slot {
    /// The field's id in [`SigmaDetector::slot_paths`].
    id: u32,
    /// Lowercased literal -> rules needing the field to equal it.
    exact: FastMap<Box<[u8]>, Vec<u32>>,
    exact_max_len: usize,
    ac: Option<AhoCorasick>,
    patterns: Vec<PatternRules>,
    /// Rules needing the field to be present.
    present: Vec<u32>,
}

fn push_rule(v: &mut Vec<u32>, r: u32) {
    if v.last() != Some(&r) {
        v.push(r);
    }
}

fn build_ac(patterns: &[String]) -> Option<AhoCorasick> {
    if patterns.is_empty() {
        return None;
    }
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .build(patterns)
        .ok()
}

/// Per-source dispatch: the field slots and keyword automaton of the rules that run on it.
#[derive(Debug, Default)]
struct SourceEngine {
    slots: Vec<Slot>,
    keyword_ac: Option<AhoCorasick>,
    /// Keyword pattern id -> rules.
    keyword_rules: Vec<Vec<u32>>,
    /// Rules evaluated on every event of this source.
    always: Vec<u32>,
    /// The top-level keys these rules may read.
    tops: TopIndex,
}

impl SourceEngine {
    fn build(
        rules: &[DetectionRule],
        applies: impl Fn(&DetectionRule) -> bool,
        needles: &[Option<Vec<Needle>>],
        field_ids: &HashMap<Vec<String>, u32>,
    ) -> SourceEngine {
        let mut eng = SourceEngine::default();
        let mut slot_ids: HashMap<Vec<String>, usize> = HashMap::new();
        // Per slot: automaton pattern ids by literal, and the literals.
        let mut slot_lits: Vec<(HashMap<String, usize>, Vec<String>)> = Vec::new();
        let mut kw_ids: HashMap<String, usize> = HashMap::new();
        let mut kw_lits: Vec<String> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if !applies(r) {
                continue;
            }
            let rule = i as u32;
            let Some(ns) = &needles[i] else {
                eng.always.push(rule);
                continue;
            };
            for n in ns {
                let Some(field) = &n.field else {
                    let id = *kw_ids.entry(n.lit.clone()).or_insert_with(|| {
                        kw_lits.push(n.lit.clone());
                        eng.keyword_rules.push(Vec::new());
                        kw_lits.len() - 1
                    });
                    push_rule(&mut eng.keyword_rules[id], rule);
                    continue;
                };
                let Some(&id) = field_ids.get(field) else {
                    // Every needle's field got an id; stay correct if one did not.
                    eng.always.push(rule);
                    continue;
                };
                let s = *slot_ids.entry(field.clone()).or_insert_with(|| {
                    eng.slots.push(Slot {
                        id,
                        exact: FastMap::default(),
                        exact_max_len: 0,
                        ac: None,
                        patterns: Vec::new(),
                        present: Vec::new(),
                    });
                    slot_lits.push(Default::default());
                    eng.slots.len() - 1
                });
                let slot = &mut eng.slots[s];
                match n.kind {
                    NeedleKind::Present => push_rule(&mut slot.present, rule),
                    NeedleKind::Exact => {
                        slot.exact_max_len = slot.exact_max_len.max(n.lit.len());
                        let v = slot
                            .exact
                            .entry(n.lit.as_bytes().to_vec().into_boxed_slice())
                            .or_default();
                        push_rule(v, rule);
                    }
                    kind => {
                        let (ids, lits) = &mut slot_lits[s];
                        let id = *ids.entry(n.lit.clone()).or_insert_with(|| {
                            lits.push(n.lit.clone());
                            slot.patterns.push(PatternRules::default());
                            lits.len() - 1
                        });
                        let p = &mut slot.patterns[id];
                        match kind {
                            NeedleKind::Prefix => push_rule(&mut p.prefix, rule),
                            NeedleKind::Suffix => push_rule(&mut p.suffix, rule),
                            _ => push_rule(&mut p.contains, rule),
                        }
                    }
                }
            }
        }
        let mut fallback: Vec<u32> = Vec::new();
        for (slot, (_, lits)) in eng.slots.iter_mut().zip(&slot_lits) {
            slot.ac = build_ac(lits);
            if slot.ac.is_none() && !lits.is_empty() {
                // Cannot happen for plain literals; stay correct by evaluating these rules always.
                for p in &slot.patterns {
                    fallback.extend(p.prefix.iter().chain(&p.suffix).chain(&p.contains));
                }
            }
        }
        eng.keyword_ac = build_ac(&kw_lits);
        if eng.keyword_ac.is_none() {
            fallback.extend(eng.keyword_rules.iter().flatten());
        }
        eng.always.extend(fallback);
        eng.always.sort_unstable();
        eng.always.dedup();
        eng
    }
}

/// Candidate collection for one event: each rule is pushed once (epoch-stamped, no clearing).
struct Hits<'a> {
    epoch: u32,
    stamp: &'a mut [u32],
    candidates: &'a mut Vec<u32>,
}

impl Hits<'_> {
    #[inline]
    fn mark(&mut self, rules: &[u32]) {
        for &r in rules {
            let s = &mut self.stamp[r as usize];
            if *s != self.epoch {
                *s = self.epoch;
                self.candidates.push(r);
            }
        }
    }

    /// One value of a slot's field: its exact literals by hash lookup, the others by automaton.
    fn slot_value(&mut self, slot: &Slot, text: &str, lower: &mut Vec<u8>) {
        let b = text.as_bytes();
        if !slot.exact.is_empty() && b.len() <= slot.exact_max_len {
            let mut small = [0u8; 64];
            let key: &[u8] = if b.len() <= small.len() {
                for (d, c) in small.iter_mut().zip(b) {
                    *d = c.to_ascii_lowercase();
                }
                &small[..b.len()]
            } else {
                lower.clear();
                lower.extend(b.iter().map(u8::to_ascii_lowercase));
                lower
            };
            if let Some(rules) = slot.exact.get(key) {
                self.mark(rules);
            }
        }
        let Some(ac) = &slot.ac else { return };
        if b.len() < ac.min_pattern_len() {
            return;
        }
        for m in ac.find_overlapping_iter(text) {
            let p = &slot.patterns[m.pattern().as_usize()];
            self.mark(&p.contains);
            if m.start() == 0 {
                self.mark(&p.prefix);
            }
            if m.end() == b.len() {
                self.mark(&p.suffix);
            }
        }
    }

    fn keyword_value(&mut self, ac: &AhoCorasick, rules: &[Vec<u32>], text: &str) {
        if text.len() < ac.min_pattern_len() {
            return;
        }
        for m in ac.find_overlapping_iter(text) {
            self.mark(&rules[m.pattern().as_usize()]);
        }
    }
}

/// Values of one field for the current event: `leaves[start..end]`, valid when `epoch` is the
/// current event's.
#[derive(Debug, Clone, Copy, Default)]
struct FieldValues {
    epoch: u32,
    present: bool,
    start: u32,
    end: u32,
}

/// Per-event field values: each field (by slot id) is resolved at most once per event, for the
/// prefilter and every rule that tests it.
struct FieldCache<'a> {
    epoch: u32,
    paths: &'a [Vec<FieldPath>],
    /// [slot][path] -> ids of the path's top-level keys ([`FieldPath::top_keys`]).
    path_tops: &'a [Vec<Vec<u32>>],
    /// By top-level key id: the value under that key in the raw record (first occurrence), when
    /// the record is an object. One pass over the record's keys replaces a linear key search
    /// per field and path.
    /// Values under the keys of `top_index`, by position.
    tops: Vec<Option<&'a RawJson>>,
    top_index: &'a TopIndex,
    /// Top-level key names by id (for keys the source's index does not cover).
    top_names: &'a [Box<str>],
    object_root: bool,
    vals: &'a mut [FieldValues],
    leaves: Vec<Leaf<'a>>,
    event: &'a Event,
}

impl<'a> FieldCache<'a> {
    /// Whether the field resolved, and its values: the first of the field's paths that resolves
    /// (raw record first, then the ECS view), exactly as [`FieldMatch::eval`] looks them up.
    fn get(&mut self, slot: u32) -> (bool, &[Leaf<'a>]) {
        let v = self.vals[slot as usize];
        if v.epoch == self.epoch {
            return (v.present, &self.leaves[v.start as usize..v.end as usize]);
        }
        let start = self.leaves.len();
        let mut present = false;
        let leaves = &mut self.leaves;
        let tops = &self.tops;
        let event = self.event;
        for (p, ids) in self.paths[slot as usize]
            .iter()
            .zip(&self.path_tops[slot as usize])
        {
            let before = leaves.len();
            let mut push = |leaf: Leaf<'a>| {
                // Strings are unwrapped once here rather than by every test of the value (a
                // `Leaf::Str` behaves exactly like a `Leaf::Json` string).
                leaves.push(match leaf {
                    Leaf::Json(v) => v.as_str().map_or(leaf, Leaf::Str),
                    other => other,
                });
                false
            };
            if self.object_root {
                let (top_names, local) = (self.top_names, &self.top_index.local);
                p.visit_from_top(
                    &|k| {
                        let id = ids[k] as usize;
                        match local[id] {
                            u32::MAX => event.raw.get(&*top_names[id]),
                            pos => tops[pos as usize],
                        }
                    },
                    &mut push,
                );
            } else {
                p.visit(&event.raw, &mut push);
            }
            // Same order as `FieldPath::visit_event`: the ECS view only when the raw record has
            // no value.
            if leaves.len() > before
                || p.visit_ecs(event, &mut |leaf: Leaf<'a>| {
                    leaves.push(leaf);
                    false
                }) != Found::Absent
            {
                present = true;
                break;
            }
        }
        let end = self.leaves.len();
        self.vals[slot as usize] = FieldValues {
            epoch: self.epoch,
            present,
            start: start as u32,
            end: end as u32,
        };
        (present, &self.leaves[start..end])
    }

    /// [`FieldMatch::matches`] on cached values.
    fn field_matches(&mut self, fm: &FieldMatch) -> bool {
        if fm.field.is_none() || fm.slot == NO_SLOT {
            return fm.matches(self.event);
        }
        let event = self.event;
        let (present, leaves) = self.get(fm.slot);
        let r = if let [ValueTest::Exists(want)] = fm.tests.as_slice() {
            present == *want
        } else {
            let one = |t: &ValueTest| {
                leaves.iter().any(|l| t.test_leaf(l, event))
                    || (!present && matches!(t, ValueTest::Null))
            };
            if fm.all {
                fm.tests.iter().all(one)
            } else {
                fm.tests.iter().any(one)
            }
        };
        r != fm.negate
    }

    /// [`FieldMatch::eval`] with `record` on cached values: pushes (field, value) of the values
    /// that matched.
    fn field_record(
        &mut self,
        fm: &FieldMatch,
        rec: &mut Vec<(String, serde_json::Value)>,
    ) -> bool {
        let Some(field) = fm.field.as_ref().filter(|_| fm.slot != NO_SLOT) else {
            return fm.eval(self.event, Some(rec));
        };
        let event = self.event;
        let (present, leaves) = self.get(fm.slot);
        if let [ValueTest::Exists(want)] = fm.tests.as_slice() {
            return present == *want;
        }
        let mut one = |t: &ValueTest| {
            if let Some(l) = leaves.iter().find(|l| t.test_leaf(l, event)) {
                rec.push((field.clone(), l.to_json()));
                true
            } else if !present && matches!(t, ValueTest::Null) {
                rec.push((field.clone(), serde_json::Value::Null));
                true
            } else {
                false
            }
        };
        if fm.all {
            fm.tests.iter().all(&mut one)
        } else {
            fm.tests.iter().any(&mut one)
        }
    }

    /// [`Detection::matched_fields`] on cached values.
    fn matched_fields(&mut self, det: &Detection) -> Vec<(String, serde_json::Value)> {
        let mut out = Vec::new();
        for sel in &det.selections {
            for map in &sel.alternatives {
                let mut rec = Vec::new();
                if map.iter().all(|fm| {
                    if fm.negate {
                        self.field_matches(fm)
                    } else {
                        self.field_record(fm, &mut rec)
                    }
                }) {
                    out.extend(rec);
                    break;
                }
            }
        }
        out
    }

    /// [`Detection::matches`] on cached values.
    fn detection_matches(&mut self, det: &Detection) -> bool {
        super::condition::eval(&det.condition, &mut |i| {
            det.selections[i]
                .alternatives
                .iter()
                .any(|map| map.iter().all(|fm| self.field_matches(fm)))
        })
    }
}

impl CorrelationFields for FieldCache<'_> {
    fn visit(
        &mut self,
        slot: u32,
        path: &FieldPath,
        event: &Event,
        f: &mut dyn FnMut(Leaf<'_>) -> bool,
    ) -> Found {
        if slot == NO_SLOT {
            return path.visit_event(event, &mut |leaf| f(leaf));
        }
        let (present, leaves) = self.get(slot);
        if !present {
            Found::Absent
        } else if leaves.iter().any(|l| f(*l)) {
            Found::Stopped
        } else {
            Found::Exhausted
        }
    }
}

/// A buffer of references into one event, emptied and reused for the next: the allocation is
/// kept, the borrow is not (an in-place collect of an empty vector between types that differ
/// only in lifetime).
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
}

/// Check each slot's field values against its needles; then the keyword automaton over every
/// value of the raw record.
fn prefilter(
    eng: &SourceEngine,
    cache: &mut FieldCache<'_>,
    hits: &mut Hits<'_>,
    lower: &mut Vec<u8>,
) {
    for slot in &eng.slots {
        let (present, leaves) = cache.get(slot.id);
        if !present {
            continue;
        }
        hits.mark(&slot.present);
        if slot.exact.is_empty() && slot.ac.is_none() {
            continue;
        }
        for leaf in leaves {
            leaf.with_text(|t| {
                if let Some(t) = t {
                    hits.slot_value(slot, t, lower);
                }
            });
        }
    }
    if let Some(ac) = &eng.keyword_ac {
        visit_leaves(&cache.event.raw, &mut |leaf| {
            leaf.with_text(|t| {
                if let Some(t) = t {
                    hits.keyword_value(ac, &eng.keyword_rules, t);
                }
            });
            false
        });
    }
}

/// Reusable per-event buffers: nothing is allocated per event on the no-match path.
#[derive(Debug, Default)]
struct Scratch {
    epoch: u32,
    stamp: Vec<u32>,
    candidates: Vec<u32>,
    matched: Vec<u32>,
    /// Lowercased value for exact lookups.
    lower: Vec<u8>,
    /// Per field slot: where its values are in `leaves`.
    field_values: Vec<FieldValues>,
    /// The current event's field values (empty between events).
    leaves: Vec<Leaf<'static>>,
    /// The current event's top-level values by key id (empty between events).
    tops: Vec<Option<&'static RawJson>>,
}

/// The top-level keys a source's rules may read, found in one pass over a record's keys.
#[derive(Debug, Default)]
struct TopIndex {
    /// Key -> position in this index.
    map: FastMap<Box<str>, u32>,
    /// Global top-level key id -> position in this index (`u32::MAX`: not indexed).
    local: Vec<u32>,
    /// Cheap rejection of the record's other keys before hashing them: which key lengths
    /// (capped at 63) and which first bytes occur in `map`.
    lens: u64,
    firsts: [u64; 4],
}

impl TopIndex {
    fn new(ids: impl Iterator<Item = u32>, names: &[Box<str>]) -> TopIndex {
        let mut t = TopIndex {
            local: vec![u32::MAX; names.len()],
            ..Default::default()
        };
        for id in ids {
            let k = &names[id as usize];
            t.lens |= 1 << k.len().min(63);
            let b = k.as_bytes().first().copied().unwrap_or(0);
            t.firsts[usize::from(b >> 6)] |= 1 << (b & 63);
            let pos = t.map.len() as u32;
            t.map.insert(k.clone(), pos);
            t.local[id as usize] = pos;
        }
        t
    }

    /// The record's values under the indexed keys, by position (`tops` is empty on entry).
    fn fill<'a>(&self, obj: &'a sonic_rs::Object, tops: &mut Vec<Option<&'a RawJson>>) {
        tops.resize(self.map.len(), None);
        for (k, v) in obj.iter() {
            let b = k.as_bytes().first().copied().unwrap_or(0);
            if self.lens & (1 << k.len().min(63)) == 0
                || self.firsts[usize::from(b >> 6)] & (1 << (b & 63)) == 0
            {
                continue;
            }
            if let Some(&id) = self.map.get(k) {
                let t = &mut tops[id as usize];
                if t.is_none() {
                    *t = Some(v);
                }
            }
        }
    }
}

/// Ids of the top-level keys the rules running on one source may read (their fields, and every
/// correlation's group-by fields).
fn engine_top_ids(
    rules: &[DetectionRule],
    applies: impl Fn(&DetectionRule) -> bool,
    extra_slots: &[u32],
    path_tops: &[Vec<Vec<u32>>],
) -> Vec<u32> {
    let mut ids: Vec<u32> = rules
        .iter()
        .filter(|r| applies(r))
        .flat_map(|r| r.detection.selections.iter())
        .flat_map(|s| s.alternatives.iter().flatten())
        .map(|fm| fm.slot)
        .chain(extra_slots.iter().copied())
        .filter(|&s| s != NO_SLOT)
        .flat_map(|s| path_tops[s as usize].iter().flatten().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Sigma rules as a [`perimeter_model::Detector`].
pub struct SigmaDetector {
    rules: RuleSet,
    ignore_logsource: bool,
    engines: Vec<(String, SourceEngine)>,
    /// For sources no rule names: the rules without a product (all rules with ignore_logsource).
    fallback: SourceEngine,
    /// Lookup paths of every distinct field the detection rules test, by slot id
    /// ([`FieldMatch::slot`]).
    slot_paths: Vec<Vec<FieldPath>>,
    /// Per detection rule: alert fields computed once.
    alert_parts: Vec<AlertParts>,
    /// [slot][path] -> ids (in `top_keys`) of the path's possible top-level keys.
    path_tops: Vec<Vec<Vec<u32>>>,
    /// Every top-level key some field path may start with, by id.
    top_names: Vec<Box<str>>,
    scratch: Scratch,
    correlator: Correlator,
    /// Detection rules that run on every source, for the `applies` check.
    filters_by_source: Vec<Option<Vec<String>>>,
}

impl std::fmt::Debug for SigmaDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigmaDetector")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl SigmaDetector {
    pub fn new(mut rules: RuleSet, options: &SigmaOptions) -> SigmaDetector {
        // One slot per distinct field (list of lookup paths) tested by a detection rule.
        let mut field_ids: HashMap<Vec<String>, u32> = HashMap::new();
        let mut slot_paths: Vec<Vec<FieldPath>> = Vec::new();
        for fm in rules
            .detections
            .iter_mut()
            .flat_map(|r| r.detection.selections.iter_mut())
            .flat_map(|s| s.alternatives.iter_mut().flatten())
        {
            if fm.field.is_none() || fm.paths.is_empty() {
                continue;
            }
            let names: Vec<String> = fm.paths.iter().map(|p| p.name.clone()).collect();
            fm.slot = *field_ids.entry(names).or_insert_with(|| {
                slot_paths.push(fm.paths.clone());
                slot_paths.len() as u32 - 1
            });
        }
        // Group-by fields of correlations are read from the same per-event values.
        let mut correlator = Correlator::new(&rules, options);
        correlator.assign_group_slots(|p| {
            *field_ids.entry(vec![p.name.clone()]).or_insert_with(|| {
                slot_paths.push(vec![p.clone()]);
                slot_paths.len() as u32 - 1
            })
        });
        let mut top_keys: FastMap<Box<str>, u32> = FastMap::default();
        let path_tops: Vec<Vec<Vec<u32>>> = slot_paths
            .iter()
            .map(|paths| {
                paths
                    .iter()
                    .map(|p| {
                        p.top_keys()
                            .map(|k| {
                                let n = top_keys.len() as u32;
                                *top_keys.entry(k.into()).or_insert(n)
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let mut top_names: Vec<Box<str>> = vec![Box::from(""); top_keys.len()];
        for (k, &id) in &top_keys {
            top_names[id as usize] = k.clone();
        }
        let corr_slots = correlator.group_slots();
        let needles: Vec<Option<Vec<Needle>>> = rules
            .detections
            .iter()
            .map(|r| detection_needles(&r.detection))
            .collect();
        let ignore = options.ignore_logsource;
        let mut sources: Vec<String> = rules
            .detections
            .iter()
            .filter_map(|r| r.sources.clone())
            .flatten()
            .collect();
        sources.sort();
        sources.dedup();
        let mut engines = Vec::new();
        if !ignore {
            for s in &sources {
                let applies =
                    |r: &DetectionRule| r.sources.as_ref().is_none_or(|v| v.iter().any(|x| x == s));
                let mut eng = SourceEngine::build(&rules.detections, applies, &needles, &field_ids);
                let ids = engine_top_ids(&rules.detections, applies, &corr_slots, &path_tops);
                eng.tops = TopIndex::new(ids.into_iter(), &top_names);
                engines.push((s.clone(), eng));
            }
        }
        let applies = |r: &DetectionRule| ignore || r.sources.is_none();
        let mut fallback = SourceEngine::build(&rules.detections, applies, &needles, &field_ids);
        let ids = engine_top_ids(&rules.detections, applies, &corr_slots, &path_tops);
        fallback.tops = TopIndex::new(ids.into_iter(), &top_names);
        let n = rules.detections.len();
        let alert_parts = rules
            .detections
            .iter()
            .map(|r| AlertParts {
                severity: severity(r.meta.level.as_deref()),
                techniques: technique_ids(&r.meta.tags),
            })
            .collect();
        let filters_by_source = rules.filters.iter().map(|f| f.sources.clone()).collect();
        SigmaDetector {
            correlator,
            rules,
            ignore_logsource: ignore,
            engines,
            fallback,
            scratch: Scratch {
                epoch: 0,
                stamp: vec![0; n],
                candidates: Vec::new(),
                matched: Vec::new(),
                lower: Vec::new(),
                field_values: vec![FieldValues::default(); slot_paths.len()],
                leaves: Vec::new(),
                tops: Vec::new(),
            },
            slot_paths,
            alert_parts,
            path_tops,
            top_names,
            filters_by_source,
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Group-by keys held by correlation state (all correlation rules).
    pub fn correlation_keys(&self) -> usize {
        self.correlator.num_keys()
    }

    /// Approximate bytes of correlation state (map slots plus per-key entries).
    pub fn correlation_state_bytes(&self) -> usize {
        self.correlator.state_bytes()
    }

    /// Changes whenever the open correlation windows may have changed.
    pub fn correlation_state_version(&self) -> u64 {
        self.correlator.state_version()
    }

    /// Key the hashes of the correlation state (group-by and counted values), before any event.
    /// Snapshots restore only under the same key.
    pub fn set_state_key(&mut self, key: [u8; 16]) {
        self.correlator.set_hash_key(key);
    }

    /// The open correlation windows, for [`SigmaDetector::restore_correlations`] after a
    /// restart. `mask` masks the entity kept for windows that close later.
    pub fn correlation_snapshot(&self, mask: &dyn Fn(&str) -> String) -> CorrelatorSnapshot {
        self.correlator.snapshot(&self.rules, mask)
    }

    /// Take the windows of a snapshot for the correlations that are unchanged since it was
    /// written (see [`Correlator::restore`]).
    pub fn restore_correlations(
        &mut self,
        snapshot: CorrelatorSnapshot,
    ) -> Result<CorrelationRestore, String> {
        self.correlator.restore(&self.rules, snapshot)
    }

    /// A reload: take over the open windows of `old`'s correlations that the new rules keep
    /// unchanged; `old` keeps the others (its flush closes them). Returns how many were taken.
    pub fn adopt_correlations(&mut self, old: &mut SigmaDetector) -> usize {
        self.correlator
            .adopt(&self.rules, &mut old.correlator, &old.rules)
    }

    /// Open windows dropped to stay within `max_correlation_keys`.
    pub fn correlation_keys_evicted(&self) -> u64 {
        self.correlator.evicted_keys
    }

    /// Events dropped by correlations because they arrived later than the allowed lateness.
    pub fn late_events_dropped(&self) -> u64 {
        self.correlator.late_dropped
    }

    /// Events dated more than the allowed lateness after their receipt (their time is not
    /// taken for their stream's watermark).
    pub fn events_dated_ahead(&self) -> u64 {
        self.correlator.dated_ahead
    }

    /// Detection rules that match the event (filters applied), in rule order. Used by the
    /// detector and by `rules test`.
    pub(crate) fn match_rules(&mut self, event: &Event) -> &[u32] {
        self.run(event, None);
        &self.scratch.matched
    }

    /// Match the event; with `alerts`, also raise the alerts of the matched rules and feed the
    /// correlations they belong to (while the event's field values are still at hand).
    fn run(&mut self, event: &Event, alerts: Option<&mut Vec<Alert>>) {
        // A handful of sources: a linear scan beats hashing the name.
        let eng = self
            .engines
            .iter()
            .find(|(name, _)| *name == event.source)
            .map_or(&self.fallback, |(_, e)| e);
        let sc = &mut self.scratch;
        sc.epoch = sc.epoch.wrapping_add(1);
        if sc.epoch == 0 {
            sc.stamp.iter_mut().for_each(|s| *s = 0);
            sc.field_values.iter_mut().for_each(|v| v.epoch = 0);
            sc.epoch = 1;
        }
        sc.candidates.clear();
        sc.matched.clear();
        let mut tops: Vec<Option<&RawJson>> = recycle(std::mem::take(&mut sc.tops));
        let root = event.raw.as_object();
        if let Some(obj) = root {
            eng.tops.fill(obj, &mut tops);
        }
        let mut cache = FieldCache {
            epoch: sc.epoch,
            paths: &self.slot_paths,
            path_tops: &self.path_tops,
            tops,
            top_index: &eng.tops,
            top_names: &self.top_names,
            object_root: root.is_some(),
            vals: &mut sc.field_values,
            leaves: recycle(std::mem::take(&mut sc.leaves)),
            event,
        };
        let mut hits = Hits {
            epoch: sc.epoch,
            stamp: &mut sc.stamp,
            candidates: &mut sc.candidates,
        };
        prefilter(eng, &mut cache, &mut hits, &mut sc.lower);
        sc.candidates.extend_from_slice(&eng.always);
        sc.candidates.sort_unstable();
        for &r in &sc.candidates {
            let rule = &self.rules.detections[r as usize];
            if cache.detection_matches(&rule.detection)
                && !filtered(
                    &self.rules,
                    &self.filters_by_source,
                    r as usize,
                    event,
                    self.ignore_logsource,
                )
            {
                sc.matched.push(r);
            }
        }
        if let Some(alerts) = alerts {
            for &r in sc.matched.iter() {
                let r = r as usize;
                if !self.rules.det_suppressed[r] {
                    alerts.push(detection_alert(
                        &self.rules.detections[r],
                        &self.alert_parts[r],
                        &mut cache,
                    ));
                }
                for &c in &self.rules.det_parents[r] {
                    self.correlator.hit(
                        c,
                        RuleRef::Detection(r),
                        event,
                        &self.rules,
                        alerts,
                        &mut cache,
                    );
                }
            }
            self.correlator.advance(event, &self.rules, alerts);
        }
        sc.leaves = recycle(cache.leaves);
        sc.tops = recycle(cache.tops);
    }

    /// Feed one event: detection alerts, then correlation state.
    fn process(&mut self, event: &Event, alerts: &mut Vec<Alert>) {
        self.run(event, Some(alerts));
    }
}

fn filtered(
    rules: &RuleSet,
    filter_sources: &[Option<Vec<String>>],
    rule: usize,
    event: &Event,
    ignore: bool,
) -> bool {
    rules.det_filters[rule].iter().any(|&f| {
        let applies = ignore
            || filter_sources[f]
                .as_ref()
                .is_none_or(|s| s.contains(&event.source));
        applies && rules.filters[f].detection.matches(event)
    })
}

impl perimeter_model::Detector for SigmaDetector {
    fn name(&self) -> &str {
        "sigma"
    }

    fn detect(&mut self, event: &Event, alerts: &mut Vec<Alert>) {
        self.process(event, alerts);
    }

    fn flush(&mut self, alerts: &mut Vec<Alert>) {
        self.correlator.flush(&self.rules, alerts);
    }
}

/// ATT&CK technique ids from tags: `attack.t1078.004` -> `T1078.004`.
pub(crate) fn technique_ids(tags: &[String]) -> Vec<String> {
    tags.iter()
        .filter_map(|t| {
            let rest = t.strip_prefix("attack.")?;
            let mut chars = rest.chars();
            let first = chars.next()?;
            ((first == 't' || first == 'T')
                && rest[1..].chars().next().is_some_and(|c| c.is_ascii_digit()))
            .then(|| format!("T{}", &rest[1..]))
        })
        .collect()
}

fn severity(level: Option<&str>) -> Severity {
    level.and_then(Severity::parse).unwrap_or(Severity::Medium)
}

/// Entity of an alert: a rule-chosen field, else ECS user.name / user.email, else source.ip.
pub(crate) fn entity_of(meta: &RuleMeta, event: &Event) -> (String, EntityKind) {
    if let Some(f) = &meta.entity_field {
        let path = super::matcher::FieldPath::new(f);
        let mut found = None;
        path.visit_event(event, &mut |leaf: Leaf<'_>| {
            leaf.with_text(|t| found = t.map(str::to_string));
            found.is_some()
        });
        if let Some(v) = found {
            return (v, entity_kind_for_field(f));
        }
    }
    if let Some(u) = event
        .ecs
        .user_name
        .as_ref()
        .or(event.ecs.user_email.as_ref())
    {
        return (u.clone(), EntityKind::User);
    }
    if let Some(ip) = &event.ecs.source_ip {
        return (ip.clone(), EntityKind::Ip);
    }
    ("unknown".to_string(), EntityKind::Unknown)
}

/// What a field holds, from the words of its name (split at `.`, `_`, `-` and camelCase:
/// `userIdentity.principalId` is user, identity, principal, id). The last word that names a kind
/// decides (`userIdentity.accessKeyId` is a token, `client.ipAddress` an address). Whole words
/// only: `principalId`, `recipient` and `description` hold no `ip`.
pub(crate) fn entity_kind_for_field(f: &str) -> EntityKind {
    let words = field_words(f);
    for (i, w) in words.iter().enumerate().rev() {
        let before = i.checked_sub(1).map(|j| words[j].as_str());
        if let Some(kind) = word_kind(w, before) {
            return kind;
        }
    }
    EntityKind::Unknown
}

/// The lowercased words of a field name: split at anything but a letter or digit, before an
/// upper-case letter that follows a lower-case one or a digit (`userId`), and before the last
/// capital of a run followed by a lower-case letter (`sourceIPAddress`: source, ip, address).
fn field_words(f: &str) -> Vec<String> {
    let chars: Vec<char> = f.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        if c.is_uppercase() && !word.is_empty() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                words.push(std::mem::take(&mut word));
            }
        }
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The kind one word of a field name names, if any (`before`: the word before it).
fn word_kind(w: &str, before: Option<&str>) -> Option<EntityKind> {
    // Names written in lower case without separators (`clientip`, `username`).
    const IP_OWNERS: [&str; 10] = [
        "client", "src", "source", "dst", "dest", "remote", "caller", "actor", "host", "public",
    ];
    Some(match w {
        // An e-mail address is someone's, another address a network one.
        "address" | "addr" if matches!(before, Some("email" | "mail")) => EntityKind::User,
        "ip" | "ips" | "ipv4" | "ipv6" | "ipaddr" | "ipaddress" | "address" | "addr" => {
            EntityKind::Ip
        }
        _ if w
            .strip_suffix("ip")
            .is_some_and(|owner| IP_OWNERS.contains(&owner)) =>
        {
            EntityKind::Ip
        }
        "user" | "users" | "username" | "userid" | "useremail" | "userprincipalname" | "upn"
        | "email" | "emails" | "login" | "principal" | "actor" | "caller" => EntityKind::User,
        // `userAgent` names a program, not the user.
        "agent" => EntityKind::Unknown,
        "token" | "tokens" | "key" | "keys" | "apikey" | "accesskey" | "jwt" => EntityKind::Token,
        "app" | "apps" | "application" | "client" | "clientid" | "appid" | "integration" => {
            EntityKind::App
        }
        "org" | "orgs" | "organization" | "organisation" | "tenant" | "account" | "workspace"
        | "enterprise" => EntityKind::Org,
        _ => return None,
    })
}

/// The kind of a correlation's group-by field. An alias names another field per rule: when
/// those fields agree on a kind, that is the alias's (the pack's `account` of Okta's
/// `target.alternateId` and `actor.alternateId` is a user, not an organization).
pub(crate) fn entity_kind_for_group_by(c: &CorrelationRule, field: &str) -> EntityKind {
    if let Some(per_rule) = c.aliases.get(field) {
        let mut kinds = per_rule
            .values()
            .map(|f| entity_kind_for_field(f))
            .filter(|k| *k != EntityKind::Unknown);
        if let Some(first) = kinds.next() {
            if kinds.all(|k| k == first) {
                return first;
            }
        }
    }
    entity_kind_for_field(field)
}

pub(crate) fn base_alert(
    meta: &RuleMeta,
    kind: DetectorKind,
    event: &Event,
    entity: (String, EntityKind),
) -> Alert {
    base_alert_with(
        meta,
        kind,
        event,
        entity,
        severity(meta.level.as_deref()),
        technique_ids(&meta.tags),
    )
}

fn base_alert_with(
    meta: &RuleMeta,
    kind: DetectorKind,
    event: &Event,
    entity: (String, EntityKind),
    severity: Severity,
    techniques: Vec<String>,
) -> Alert {
    let mut a = Alert::new(
        meta.key(),
        meta.title.clone(),
        severity,
        kind,
        event.source.clone(),
        event.tenant.clone(),
        event.timestamp,
        entity.0,
        entity.1,
    );
    a.rule_status = meta.status.clone();
    a.description = meta.description.clone();
    a.tags = meta.tags.clone();
    a.threat_technique_id = techniques;
    a.references = meta.references.clone();
    a.rule_hash = Some(meta.rule_hash.clone());
    a.alert_group_seconds = meta.alert_group_seconds;
    a
}

/// What alerts of one detection rule share, computed once.
#[derive(Debug)]
struct AlertParts {
    severity: Severity,
    techniques: Vec<String>,
}

fn detection_alert(rule: &DetectionRule, parts: &AlertParts, cache: &mut FieldCache<'_>) -> Alert {
    let event = cache.event;
    let mut a = base_alert_with(
        &rule.meta,
        DetectorKind::Sigma,
        event,
        entity_of(&rule.meta, event),
        parts.severity,
        parts.techniques.clone(),
    );
    for (k, v) in cache.matched_fields(&rule.detection) {
        a.matched_fields.entry(k).or_insert(v);
    }
    a.push_evidence(event);
    a.seal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn technique_ids_from_tags() {
        let tags: Vec<String> = [
            "attack.t1078.004",
            "attack.persistence",
            "attack.T1098",
            "cve.2021-1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(technique_ids(&tags), vec!["T1078.004", "T1098"]);
    }

    #[test]
    fn entity_kind_comes_from_the_words_of_the_field_name() {
        use EntityKind::*;
        for (field, kind) in [
            ("userIdentity.principalId", User),
            ("actor.alternateId", User),
            ("actor", User),
            ("UserId", User),
            ("user.email", User),
            ("actor.email", User),
            ("emailAddress", User),
            ("username", User),
            ("caller", User),
            ("client.ipAddress", Ip),
            ("sourceIPAddress", Ip),
            ("ClientIP", Ip),
            ("ActorIpAddress", Ip),
            ("actor_ip", Ip),
            ("src-ip", Ip),
            ("clientip", Ip),
            ("remote_addr", Ip),
            ("userIdentity.accessKeyId", Token),
            ("token", Token),
            ("client_id", App),
            ("applicationName", App),
            ("recipientAccountId", Org),
            ("tenantId", Org),
            ("org", Org),
            // No whole word names an entity: substrings do not count.
            ("recipient", Unknown),
            ("description", Unknown),
            ("shipping", Unknown),
            ("apple", Unknown),
            ("keyword", Unknown),
            ("userAgent", Unknown),
            ("target.alternateId", Unknown),
            ("", Unknown),
        ] {
            assert_eq!(entity_kind_for_field(field), kind, "{field}");
        }
    }

    #[test]
    fn the_packs_correlations_name_the_entity_they_group_by() {
        use EntityKind::*;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../detection-rules");
        let (rules, load) = RuleSet::load(&[dir], &SigmaOptions::default());
        assert!(load.failed.is_empty(), "{:?}", load.failed);
        // As the alert takes it: the rule's `entity_field`, else its first group-by field.
        let kinds: HashMap<String, EntityKind> = rules
            .correlations
            .iter()
            .map(|c| {
                let kind = match &c.meta.entity_field {
                    Some(f) => entity_kind_for_field(f),
                    None => entity_kind_for_group_by(c, &c.group_by[0]),
                };
                (c.meta.title.clone(), kind)
            })
            .collect();
        let expected: HashMap<String, EntityKind> = [
            ("Microsoft 365 Mass File Download By One User", User),
            ("Microsoft 365 Failed Login Burst For One User", User),
            ("Google Drive Bulk Download By One User", User),
            ("1Password Bulk Secret Reveal By One User", User),
            (
                "Okta MFA Factor Reset Followed By New Factor Enrolment",
                User,
            ),
            ("Okta Password Spraying From One IP", Ip),
            ("Okta Authentication Failure Burst For One User", User),
            ("GitHub Mass Repository Clone By One Actor", User),
            ("AWS New IAM User Created And Given An Access Key", User),
            ("AWS Console Login Failure Burst From One IP", Ip),
        ]
        .into_iter()
        .map(|(n, k)| (n.to_string(), k))
        .collect();
        assert_eq!(kinds, expected);
    }
}
