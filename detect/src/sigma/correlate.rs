//! Correlation state: per correlation rule, per group-by key (a u64 hash of the group-by values),
//! a small sorted list of (event time, value, line) entries.
//!
//! - Group-by keys and counted values are keyed hashes ([`ValueHash`]), so the state can be
//!   snapshotted to disk ([`Correlator::snapshot`]) and survive a restart, and kept across a rule
//!   reload ([`Correlator::adopt`]), without holding a value that could be tested by guessing.
//!
//! - Group-by and counted values are hashed case-folded ([`ValueHash::write_folded`]): Sigma
//!   compares field values case-insensitively, and SaaS identities are case-insensitive.
//!   A group-by path through an array has a value per element: the event counts under each
//!   distinct value (at most [`MAX_GROUP_KEYS`] keys), whatever the elements' order.
//! - Keys belong to one tenant: the tenant is part of every group-by key, so two tenants'
//!   events never count towards one window.
//! - Event-time windows, with a watermark per stream (tenant + source, and the feed of a source
//!   whose feeds are published apart: [`feed_of`]): events older than the
//!   newest seen *in their stream* minus `allowed_lateness_seconds` are dropped (counted), later
//!   ones are inserted in time order, so out-of-order input within the lateness gives the same
//!   result as ordered input. Vendors deliver with very different delays (Okta in seconds,
//!   Google Workspace and Microsoft 365 hours behind): one watermark for everything made every
//!   event of a delayed source "late", so correlations on it never fired. A key's windows close
//!   and expire by the watermark of the stream that last fed it.
//!   A record dated after its receipt moves its stream's watermark only as far as its receipt
//!   allows ([`StreamClock`]), so one skewed or forged record cannot make the others late.
//! - Conditions that can only become true as events arrive (`gt`/`gte` counts, sums, temporal
//!   without a condition or with `gt`/`gte`)
//!   fire as soon as a window of `timespan` containing the new event satisfies them; the entries
//!   of that window are then consumed, so one burst gives one alert.
//! - Conditions with an upper bound (`lt`, `lte`, `eq`, `neq`, ranges) are evaluated when a
//!   window closes: when its stream's watermark (minus the allowed lateness) passes its end, or
//!   on flush. A window starts at the key's oldest open event and spans `timespan`. A closed
//!   window that holds too few (below a lower bound: `gt`, `gte`, or `eq` not reached) slides:
//!   its first event is dropped and the next window starts at its second event, so each event
//!   starts a window at most once and a burst is not lost to a boundary that fell inside it. A
//!   window that fires, or holds too many (an upper bound exceeded, or `neq` equal), is consumed
//!   whole: a burst of 10 does not fire `lte: 5` from its tail.
//! - A correlation's hit is passed to the correlations that read it (chained correlations),
//!   whether it fired early or when its window closed. A window that closes has no event at
//!   hand: a correlation read by others keeps, per key, a small stand-in event with the fields
//!   those read (group-by, counted field, `entity_field`), dated by the window's newest event.
//!   It is not snapshotted (clear values): after a restore it is rebuilt from the key's next
//!   event. The reading correlation's alert cites the events of the hit (lines and event ids,
//!   at most [`MAX_EVIDENCE_IDS`] ids), kept beside its entry while it is open.
//! - Memory is bounded: entries expire by event time, each key keeps at most a fixed number of
//!   entries, and each correlation keeps at most `max_correlation_keys` keys, evicting the least
//!   recently used eighth when full.

use perimeter_model::{Alert, DetectorKind, EntityKind, Event};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::Hasher;

use crate::identity_hash::BuildIdentity;

use super::compile::{base_alert, entity_kind_for_group_by, entity_of};
use super::matcher::{FieldPath, Found, Leaf, NO_SLOT};
use super::parse::{CorrelationRule, CorrelationType, CountOp};
use super::{RuleRef, RuleSet, SigmaOptions};
use crate::stream_clock::StreamClock;

/// Where a correlation reads an event's field values: the matcher's per-event cache, or the
/// event itself.
pub(crate) trait FieldValues {
    /// Like [`FieldPath::visit_event`]; `slot` is the matcher's slot for `path` or [`NO_SLOT`].
    fn visit(
        &mut self,
        slot: u32,
        path: &FieldPath,
        event: &Event,
        f: &mut dyn FnMut(Leaf<'_>) -> bool,
    ) -> Found;
}

type KeyMap = HashMap<u64, KeyState, BuildIdentity>;

/// Keyed SipHash-1-3 of group-by and counted values. Keyed, because snapshots hold these hashes:
/// an unkeyed hash of a user name or an IP can be tested against guesses, and FNV's initial
/// state can even be recovered from one known pair. Stable across runs for the same key.
#[derive(Clone)]
struct ValueHash(siphasher::sip::SipHasher13);

impl ValueHash {
    fn new(key: &[u8; 16]) -> ValueHash {
        ValueHash(siphasher::sip::SipHasher13::new_with_key(key))
    }
    fn write(&mut self, bytes: &[u8]) {
        Hasher::write(&mut self.0, bytes);
    }
    fn finish(&self) -> u64 {
        Hasher::finish(&self.0)
    }

    /// Write `text` case-folded, as Sigma compares by default (the matcher folds ASCII letters,
    /// and other letters through Unicode case-insensitive regexes; here their lowercase):
    /// `BOB@example.com` and `bob@example.com` are one group-by key and one distinct value.
    /// Lowercase text hashes as before folding, so keys of lowercase values in a snapshot
    /// written before still match.
    fn write_folded(&mut self, text: &str) {
        // SipHash over pieces is SipHash over their concatenation.
        crate::case_fold::write_case_folded(text, |piece| self.write(piece));
    }
}

/// The hash key of a correlator whose owner set none ([`Correlator::set_hash_key`]): fine for
/// state that never leaves memory.
const DEFAULT_HASH_KEY: [u8; 16] = *b"perimeter corr 1";

/// FNV-1a: stable across runs and processes, cheap for short texts. Only for stream names
/// (tenant + source), which are no secret.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(self) -> u64 {
        // Final avalanche (splitmix64) so the identity-hashed map spreads well.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    ts: i64,
    /// Value hash (value_count, percentile), f64 bits (sum, avg) or rule position (temporal).
    val: u64,
    /// 1-based input line, 0 when unknown.
    line: u64,
    /// The event's id as a number (ids are 32 hex digits), so alerts can name their evidence.
    id: u128,
    /// Events this entry stands for: 1, or for `value_count` (one entry per value, at its latest
    /// time) the events of the value within one timespan up to it. Fits the entry's padding.
    n: u32,
    /// For `value_count`: seconds from the first of those `n` events to this one.
    run_secs: u32,
}

impl Entry {
    fn new(ts: i64, val: u64, line: u64, id: u128) -> Entry {
        Entry {
            ts,
            val,
            line,
            id,
            n: 1,
            run_secs: 0,
        }
    }
}

/// The events an entry that is another correlation's hit stands for (its window's events).
#[derive(Debug, Clone)]
struct Cited {
    /// The entry's time and id.
    ts: i64,
    id: u128,
    events: Box<[Entry]>,
}

/// What a correlation counts: a detection rule's event, or the hit of a correlation it reads,
/// dated by that window's newest event and citing the window's events.
#[derive(Clone, Copy)]
struct Origin<'a> {
    ts: i64,
    line: u64,
    /// `None`: the event's own id, derived only once the event is counted (most hits are not:
    /// no group-by value, late), as deriving it hashes the whole record.
    id: Option<u128>,
    /// Empty for a detection rule's event.
    cites: &'a [Entry],
}

/// Field values read from the event itself (a stand-in event has no matcher cache).
struct EventFields;

impl FieldValues for EventFields {
    fn visit(
        &mut self,
        _slot: u32,
        path: &FieldPath,
        event: &Event,
        f: &mut dyn FnMut(Leaf<'_>) -> bool,
    ) -> Found {
        path.visit_event(event, f)
    }
}

// The value_count fields live in the padding of the 16-byte aligned id.
const _: () = assert!(std::mem::size_of::<Entry>() <= 48);

/// Most evidence event ids a correlation alert lists (the latest ones).
const MAX_EVIDENCE_IDS: usize = 100;

/// The evidence ids of a window's entries, oldest first, at most [`MAX_EVIDENCE_IDS`].
fn evidence_ids(entries: &[Entry]) -> Vec<String> {
    let skip = entries.len().saturating_sub(MAX_EVIDENCE_IDS);
    entries[skip..]
        .iter()
        .map(|e| format!("{:032x}", e.id))
        .collect()
}

/// Where a closed-window alert goes (no event is at hand when it closes).
#[derive(Debug, Clone)]
struct WindowInfo {
    source: String,
    tenant: String,
    entity: String,
    entity_kind: EntityKind,
    /// For a correlation that others read: the stand-in event its closed windows pass to them.
    carrier: Option<Box<Carrier>>,
}

/// A stand-in event: tenant, source and the fields the reading correlations use.
#[derive(Debug, Clone)]
struct Carrier {
    event: Event,
    /// Approximate heap bytes, for [`Correlator::state_bytes`].
    bytes: usize,
}

/// A window that closed and fired.
struct ClosedWindow {
    /// Its entries.
    used: Vec<Entry>,
    /// The events it cites, oldest first ([`cited_evidence`]).
    cites: Vec<Entry>,
    info: Box<WindowInfo>,
}

#[derive(Debug)]
struct KeyState {
    last_used: u64,
    /// The stream (tenant + source) of the last event; its watermark closes this key's windows.
    stream: u64,
    entries: Vec<Entry>,
    window: Option<Box<WindowInfo>>,
    /// Evidence of entries that are hits of a correlation this one reads.
    cited: Option<Box<[Cited]>>,
}

impl KeyState {
    /// Drop the evidence of entries no longer held.
    fn prune_citations(&mut self) {
        let entries = &self.entries;
        let held = |c: &Cited| entries.iter().any(|e| e.ts == c.ts && e.id == c.id);
        if self.cited.as_ref().is_some_and(|l| !l.iter().all(held)) {
            let kept: Vec<Cited> = self
                .cited
                .take()
                .into_iter()
                .flatten()
                .filter(held)
                .collect();
            self.cited = (!kept.is_empty()).then(|| kept.into_boxed_slice());
        }
    }

    /// Keep the events an entry at (`ts`, `id`) cites (the latest [`MAX_EVIDENCE_IDS`]).
    fn cite(&mut self, ts: i64, id: u128, events: &[Entry]) {
        if self
            .cited
            .iter()
            .flatten()
            .any(|c| c.ts == ts && c.id == id)
        {
            return;
        }
        let skip = events.len().saturating_sub(MAX_EVIDENCE_IDS);
        let mut list: Vec<Cited> = self.cited.take().map(Vec::from).unwrap_or_default();
        list.push(Cited {
            ts,
            id,
            events: events[skip..].into(),
        });
        self.cited = Some(list.into_boxed_slice());
    }
}

/// The events `used` cites: each entry, and the events of the correlation hits among them,
/// oldest first, each event once (an event counted for two rules of a temporal correlation,
/// or cited by a hit and counted itself, is one event).
fn cited_evidence(cited: Option<&[Cited]>, used: &[Entry]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::with_capacity(used.len());
    for e in used {
        if let Some(c) = cited.and_then(|l| l.iter().find(|c| c.ts == e.ts && c.id == e.id)) {
            out.extend_from_slice(&c.events);
        }
        out.push(*e);
    }
    out.sort_by_key(|e| (e.ts, e.id));
    out.dedup_by(|a, b| a.id != 0 && a.id == b.id && a.ts == b.ts);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Fire as soon as a window containing the new event satisfies the condition.
    Early,
    /// Evaluate tumbling windows when they close.
    OnClose,
}

struct CorrState {
    mode: Mode,
    keys: KeyMap,
    /// [rule position][group-by field] -> path (aliases resolved).
    group_paths: Vec<Vec<FieldPath>>,
    /// Parallel to `group_paths`: the matcher's field slot for the path ([`NO_SLOT`] until
    /// [`Correlator::assign_group_slots`]).
    group_slots: Vec<Vec<u32>>,
    /// [rule position] -> paths of `condition.field` (aliases resolved; empty when none).
    value_paths: Vec<Vec<FieldPath>>,
    max_entries: usize,
    last_sweep_ts: i64,
}

pub struct Correlator {
    states: Vec<CorrState>,
    lateness_ms: i64,
    max_keys: usize,
    /// Newest event time over all streams: schedules sweeps.
    max_ts: i64,
    /// Each stream's clock (tenant + source): lateness and window closing.
    streams: HashMap<u64, StreamClock, BuildIdentity>,
    /// Event time at which the next correlation is due for a sweep: `advance` does nothing
    /// per correlation before that.
    next_sweep_ts: i64,
    /// Events since the last sweep (see [`crate::FORCED_SWEEP_MIN_EVENTS`]).
    events_since_sweep: u64,
    /// Changes whenever the windows may have changed (see [`Correlator::state_version`]).
    state_version: u64,
    seq: u64,
    /// Events too late for their window (older than their stream's watermark minus the allowed
    /// lateness): each event once, however many correlations read it.
    pub late_dropped: u64,
    /// The event being detected was too late for a correlation ([`Correlator::advance`] adds
    /// it to `late_dropped` once).
    late_now: bool,
    /// Events dated more than the allowed lateness after they were received: believed for
    /// their own windows, not for their stream's watermark ([`StreamClock`]).
    pub dated_ahead: u64,
    /// Keys (open windows) dropped to stay within `max_correlation_keys`: detections that may
    /// have been missed.
    pub evicted_keys: u64,
    distinct: Vec<u64>,
    /// Key of [`ValueHash`].
    hash_key: [u8; 16],
}

/// The most events a correlation keeps per group-by key and window: the oldest go past it.
/// Counts are exact up to it; conditions that would need more are refused at load
/// ([`super::parse`]).
pub(crate) const MAX_ENTRIES_CAP: usize = 10_000;

fn resolve_field(
    c: &CorrelationRule,
    field: &str,
    rule_ref: &str,
    rules: &RuleSet,
    r: RuleRef,
) -> String {
    if let Some(per_rule) = c.aliases.get(field) {
        let meta = match r {
            RuleRef::Detection(i) => &rules.detections[i].meta,
            RuleRef::Correlation(i) => &rules.correlations[i].meta,
        };
        for key in [Some(rule_ref), meta.name.as_deref(), meta.id.as_deref()]
            .into_iter()
            .flatten()
        {
            if let Some(f) = per_rule.get(key) {
                return f.clone();
            }
        }
    }
    field.to_string()
}

impl Correlator {
    pub fn new(rules: &RuleSet, options: &SigmaOptions) -> Correlator {
        let states = rules
            .correlations
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                let refs = &rules.corr_refs[ci];
                let lower_only = c
                    .condition
                    .iter()
                    .all(|(op, _)| matches!(op, CountOp::Gt | CountOp::Gte));
                // A temporal correlation counts the rules matched in a window: `lt: 2` ("A
                // without B") is known only when the window has closed without B.
                let mode = match c.kind {
                    CorrelationType::EventCount
                    | CorrelationType::ValueCount
                    | CorrelationType::ValueSum
                    | CorrelationType::Temporal
                        if !lower_only =>
                    {
                        Mode::OnClose
                    }
                    _ => Mode::Early,
                };
                let threshold = c.condition.iter().map(|(_, n)| *n).fold(0.0f64, f64::max);
                let max_entries = match c.kind {
                    CorrelationType::Temporal | CorrelationType::TemporalOrdered
                        if mode == Mode::Early =>
                    {
                        16 * c.rules.len().max(1)
                    }
                    CorrelationType::EventCount | CorrelationType::ValueCount
                        if mode == Mode::Early =>
                    {
                        ((threshold as usize).saturating_add(1))
                            .saturating_mul(2)
                            .clamp(8, MAX_ENTRIES_CAP)
                    }
                    _ => MAX_ENTRIES_CAP,
                };
                let group_paths = c
                    .rules
                    .iter()
                    .zip(refs)
                    .map(|(rr, r)| {
                        c.group_by
                            .iter()
                            .map(|g| FieldPath::new(&resolve_field(c, g, rr, rules, *r)))
                            .collect()
                    })
                    .collect();
                let value_paths = c
                    .rules
                    .iter()
                    .zip(refs)
                    .map(|(rr, r)| {
                        c.fields
                            .iter()
                            .map(|f| FieldPath::new(&resolve_field(c, f, rr, rules, *r)))
                            .collect()
                    })
                    .collect();
                let group_slots = c
                    .rules
                    .iter()
                    .map(|_| vec![NO_SLOT; c.group_by.len()])
                    .collect();
                CorrState {
                    mode,
                    keys: KeyMap::default(),
                    group_paths,
                    group_slots,
                    value_paths,
                    max_entries,
                    last_sweep_ts: i64::MIN,
                }
            })
            .collect();
        Correlator {
            states,
            lateness_ms: (options.allowed_lateness_seconds as i64).saturating_mul(1000),
            max_keys: options.max_correlation_keys.max(1),
            max_ts: i64::MIN,
            streams: HashMap::default(),
            next_sweep_ts: i64::MIN,
            events_since_sweep: 0,
            state_version: 0,
            seq: 0,
            late_dropped: 0,
            late_now: false,
            dated_ahead: 0,
            evicted_keys: 0,
            distinct: Vec::new(),
            hash_key: DEFAULT_HASH_KEY,
        }
    }

    /// Key the hashes of group-by and counted values (before any event): a snapshot can only
    /// be restored by a correlator with the same key.
    pub fn set_hash_key(&mut self, key: [u8; 16]) {
        debug_assert_eq!(self.num_keys(), 0, "keyed after state was built");
        self.hash_key = key;
    }

    /// A number that changes whenever the open windows may have changed (an event counted, a
    /// window closed or expired, state restored): a caller snapshots again only when it moved.
    pub fn state_version(&self) -> u64 {
        self.state_version
    }

    /// Number of group-by keys held, over all correlations.
    pub fn num_keys(&self) -> usize {
        self.states.iter().map(|s| s.keys.len()).sum()
    }

    /// Approximate heap bytes held by correlation state.
    pub fn state_bytes(&self) -> usize {
        self.states
            .iter()
            .map(|s| {
                let slot = std::mem::size_of::<(u64, KeyState)>() + 1;
                s.keys.capacity() * slot
                    + s.keys
                        .values()
                        .map(|k| {
                            k.entries.capacity() * std::mem::size_of::<Entry>()
                                + k.window.as_ref().map_or(0, |w| {
                                    std::mem::size_of::<WindowInfo>()
                                        + w.source.len()
                                        + w.tenant.len()
                                        + w.entity.len()
                                        + w.carrier.as_ref().map_or(0, |c| c.bytes)
                                })
                                + k.cited
                                    .iter()
                                    .flatten()
                                    .map(|c| {
                                        std::mem::size_of::<Cited>()
                                            + c.events.len() * std::mem::size_of::<Entry>()
                                    })
                                    .sum::<usize>()
                        })
                        .sum::<usize>()
            })
            .sum()
    }

    /// Let the matcher resolve group-by fields from its per-event field values: `slot_of` gives
    /// the slot of a single-path field.
    pub(crate) fn assign_group_slots(&mut self, mut slot_of: impl FnMut(&FieldPath) -> u32) {
        for st in &mut self.states {
            for (paths, slots) in st.group_paths.iter().zip(&mut st.group_slots) {
                for (p, s) in paths.iter().zip(slots.iter_mut()) {
                    *s = slot_of(p);
                }
            }
        }
    }

    /// Every slot assigned by [`Correlator::assign_group_slots`].
    pub(crate) fn group_slots(&self) -> Vec<u32> {
        self.states
            .iter()
            .flat_map(|st| st.group_slots.iter().flatten().copied())
            .collect()
    }

    fn text_of(
        path: &FieldPath,
        slot: u32,
        event: &Event,
        fields: &mut dyn FieldValues,
        h: &mut ValueHash,
    ) -> bool {
        let mut found = false;
        let r = fields.visit(slot, path, event, &mut |leaf: Leaf<'_>| {
            leaf.with_text(|t| {
                if let Some(t) = t {
                    h.write_folded(t);
                    found = true;
                }
            });
            found
        });
        r == Found::Stopped
    }

    fn first_text(path: &FieldPath, event: &Event) -> Option<String> {
        let mut out = None;
        path.visit_event(event, &mut |leaf: Leaf<'_>| {
            leaf.with_text(|t| out = t.map(str::to_string));
            out.is_some()
        });
        out
    }

    /// The alert's entity: `entity_field`, else the group-by values (`values`, as seen, when
    /// the event has several keys; else the event's).
    fn entity(
        c: &CorrelationRule,
        paths: &[FieldPath],
        values: Option<&[String]>,
        event: &Event,
    ) -> (String, EntityKind) {
        let value = |i: usize, p: &FieldPath| match values {
            Some(v) => v.get(i).cloned(),
            None => Self::first_text(p, event),
        };
        // The rule's own choice (`entity_field`) names the alert, whatever it groups by: a
        // group of role sessions keyed by their ARN is about the person who acted.
        if c.meta.entity_field.is_some() {
            return entity_of(&c.meta, event);
        }
        match paths {
            [] => entity_of(&c.meta, event),
            [p] => match value(0, p) {
                Some(v) => (v, entity_kind_for_group_by(c, &c.group_by[0])),
                None => entity_of(&c.meta, event),
            },
            many => {
                let mut s = String::new();
                for (i, (g, p)) in c.group_by.iter().zip(many).enumerate() {
                    if !s.is_empty() {
                        s.push_str(", ");
                    }
                    s.push_str(g);
                    s.push('=');
                    s.push_str(value(i, p).as_deref().unwrap_or("-"));
                }
                (s, EntityKind::Unknown)
            }
        }
    }

    /// A referenced rule matched `event` for correlation `ci`.
    pub fn hit(
        &mut self,
        ci: usize,
        from: RuleRef,
        event: &Event,
        rules: &RuleSet,
        alerts: &mut Vec<Alert>,
        fields: &mut dyn FieldValues,
    ) {
        let origin = Origin {
            ts: event.timestamp.timestamp_millis(),
            line: event.line.unwrap_or(0),
            id: None,
            cites: &[],
        };
        self.count(ci, from, event, origin, rules, alerts, fields);
    }

    /// The stand-in event a closed window of `ci` passes to the correlations that read it: the
    /// tenant and source of `event`, and the values of the fields they read: `ci`'s group-by
    /// fields under its own names, the paths the readers resolve for `ci` (aliases), their
    /// counted fields and `entity_field`. Dated when passed on.
    fn carrier_for(
        &self,
        ci: usize,
        j0: usize,
        values: Option<&[String]>,
        event: &Event,
        rules: &RuleSet,
    ) -> Box<Carrier> {
        let mut raw = serde_json::Map::new();
        let c = &rules.correlations[ci];
        // The key's own values, when the event has several keys.
        for (g, v) in c.group_by.iter().zip(values.into_iter().flatten()) {
            raw.insert(g.clone(), serde_json::Value::String(v.clone()));
        }
        let mut put = |name: &str, path: &FieldPath| {
            if raw.contains_key(name) {
                return;
            }
            let mut value = None;
            path.visit_event(event, &mut |leaf: Leaf<'_>| {
                if leaf.with_text(|t| t.is_some()) {
                    value = Some(leaf.to_json());
                }
                value.is_some()
            });
            if let Some(v) = value {
                raw.insert(name.to_string(), v);
            }
        };
        for (g, p) in c.group_by.iter().zip(&self.states[ci].group_paths[j0]) {
            put(g, p);
        }
        for &p in &rules.corr_parents[ci] {
            let st = &self.states[p];
            for (j, r) in rules.corr_refs[p].iter().enumerate() {
                if *r == RuleRef::Correlation(ci) {
                    for path in st.group_paths[j].iter().chain(&st.value_paths[j]) {
                        put(&path.name, path);
                    }
                }
            }
            if let Some(f) = &rules.correlations[p].meta.entity_field {
                put(f, &FieldPath::new(f));
            }
        }
        let raw = serde_json::Value::Object(raw);
        let bytes = std::mem::size_of::<Carrier>()
            + event.source.len()
            + event.tenant.len()
            + serde_json::to_string(&raw).map_or(0, |t| t.len() * 2);
        let ecs = perimeter_model::Ecs {
            timestamp: Some(event.timestamp),
            user_name: event.ecs.user_name.clone(),
            user_email: event.ecs.user_email.clone(),
            source_ip: event.ecs.source_ip.clone(),
            ..Default::default()
        };
        let record = perimeter_model::RawRecord {
            source: event.source.clone(),
            tenant: event.tenant.clone(),
            received_at: event.received_at,
            line: None,
            raw: perimeter_model::raw_from_serde(&raw),
        };
        Box::new(Carrier {
            event: Event::new(event.source.clone(), record, ecs),
            bytes,
        })
    }

    /// Count `origin` (of `event`) for correlation `ci`.
    #[allow(clippy::too_many_arguments)]
    fn count(
        &mut self,
        ci: usize,
        from: RuleRef,
        event: &Event,
        origin: Origin<'_>,
        rules: &RuleSet,
        alerts: &mut Vec<Alert>,
        fields: &mut dyn FieldValues,
    ) {
        let ts = origin.ts;
        let stream = stream_of(event);
        let mut clock = self
            .streams
            .get(&stream)
            .copied()
            .unwrap_or(StreamClock::NEW);
        // The stream's clock with this event taken ([`Correlator::advance`] takes it after the
        // event's hits): an event that moves it is not late for it.
        if matches!(from, RuleRef::Detection(_)) && !event.timestamp_adjusted {
            clock.observe(ts, event.received_at.timestamp_millis());
        }
        let stream_ts = clock.watermark();
        // A correlation's hit is dated by its window's newest event, and a window closes only
        // once its stream is past the allowed lateness: that is no late event.
        if matches!(from, RuleRef::Detection(_))
            && stream_ts != i64::MIN
            && ts < stream_ts.saturating_sub(self.lateness_ms)
        {
            self.late_now = true;
            return;
        }
        let c = &rules.correlations[ci];
        let Some(j0) = positions(rules, ci, from).next() else {
            return;
        };
        let st = &mut self.states[ci];
        let (paths, slots) = (&st.group_paths[j0], &st.group_slots[j0]);
        let groups = match group_key(&self.hash_key, paths, slots, event, fields) {
            // An event without a group-by value belongs to no group (as `stats ... by field`
            // drops it): ten failures of ten unknown users are not ten failures of one.
            None => return,
            Some(Some(key)) => Groups::One(key),
            Some(None) => Groups::Many(group_keys(&self.hash_key, paths, slots, event, fields)),
        };
        let val = match c.kind {
            CorrelationType::EventCount
            | CorrelationType::Temporal
            | CorrelationType::TemporalOrdered => 0,
            CorrelationType::ValueCount | CorrelationType::ValuePercentile => {
                let paths = &st.value_paths[j0];
                if paths.is_empty() {
                    return;
                }
                // Several fields: the value is their combination; an event lacking one of
                // them has none.
                let mut vh = ValueHash::new(&self.hash_key);
                for p in paths {
                    if !Self::text_of(p, NO_SLOT, event, fields, &mut vh) {
                        return;
                    }
                    vh.write(&[0xff]);
                }
                vh.finish()
            }
            CorrelationType::ValueSum | CorrelationType::ValueAvg => {
                let Some(p) = st.value_paths[j0].first() else {
                    return;
                };
                let mut n = None;
                p.visit_event(event, &mut |leaf: Leaf<'_>| {
                    n = leaf.as_f64();
                    n.is_some()
                });
                match n {
                    Some(n) if n.is_finite() => n.to_bits(),
                    _ => return,
                }
            }
        };
        match groups {
            Groups::One(key) => {
                let group = (key, None);
                let at = (stream, stream_ts);
                self.count_key(ci, from, j0, event, origin, group, val, at, rules, alerts);
            }
            Groups::Many(keys) => {
                for (key, values) in &keys {
                    let group = (*key, Some(values.as_slice()));
                    let at = (stream, stream_ts);
                    self.count_key(ci, from, j0, event, origin, group, val, at, rules, alerts);
                }
            }
        }
    }

    /// Count `origin` (of `event`, value `val`) for correlation `ci` under one group-by key
    /// (`group`: the key, and its values as seen when the event has several keys).
    #[allow(clippy::too_many_arguments)]
    fn count_key(
        &mut self,
        ci: usize,
        from: RuleRef,
        j0: usize,
        event: &Event,
        origin: Origin<'_>,
        group: (u64, Option<&[String]>),
        val: u64,
        stream_at: (u64, i64),
        rules: &RuleSet,
        alerts: &mut Vec<Alert>,
    ) {
        let (key, values) = group;
        let ts = origin.ts;
        let c = &rules.correlations[ci];
        let (stream, stream_ts) = stream_at;
        let st = &self.states[ci];
        let mode = st.mode;
        // A correlation that others read passes its closed windows on with a stand-in event.
        let carrier = (mode == Mode::OnClose
            && !rules.corr_parents[ci].is_empty()
            && st
                .keys
                .get(&key)
                .and_then(|k| k.window.as_ref())
                .is_none_or(|w| w.carrier.is_none()))
        .then(|| self.carrier_for(ci, j0, values, event, rules));
        let st = &mut self.states[ci];
        self.seq += 1;
        self.state_version += 1;
        if !st.keys.contains_key(&key) && st.keys.len() >= self.max_keys {
            self.evicted_keys += evict_lru(&mut st.keys, &mut self.distinct);
        }
        let span = c.timespan_ms;
        // By the stream's clock, not the event's own time: a record dated hours ahead must not
        // expire its key's open events.
        let horizon = stream_ts
            .saturating_sub(span)
            .saturating_sub(self.lateness_ms);
        let max_entries = st.max_entries;
        let line = origin.line;
        let id = origin
            .id
            .unwrap_or_else(|| u128::from_str_radix(event.id().as_str(), 16).unwrap_or(0));
        let ks = st.keys.entry(key).or_insert_with(|| KeyState {
            last_used: 0,
            stream,
            entries: Vec::with_capacity(1),
            window: None,
            cited: None,
        });
        ks.last_used = self.seq;
        ks.stream = stream;
        if mode == Mode::OnClose && ks.window.is_none() {
            let (entity, entity_kind) = Self::entity(c, &st.group_paths[j0], values, event);
            ks.window = Some(Box::new(WindowInfo {
                source: event.source.clone(),
                tenant: event.tenant.clone(),
                entity,
                entity_kind,
                carrier: None,
            }));
        }
        if let (Some(w), Some(carrier)) = (&mut ks.window, carrier) {
            w.carrier = Some(carrier);
        }
        let mut closed: Vec<ClosedWindow> = Vec::new();
        if mode == Mode::OnClose {
            // The windows this stream's watermark has passed: no event still accepted is in them.
            let watermark = stream_ts.saturating_sub(self.lateness_ms);
            close_windows(c, ks, Some(watermark), &mut self.distinct, &mut closed);
        } else {
            let keep_from = ks.entries.partition_point(|e| e.ts < horizon);
            if keep_from > 0 {
                ks.entries.drain(..keep_from);
            }
        }
        // value_count only needs each distinct value once, at its latest time: keeps a key's
        // entries (and memory) bounded by the number of distinct values. The entry counts the
        // value's events within one timespan up to it (`n`), for the alert's explanation.
        // An event counted already (sent again after a restart that restored the window it was
        // counted in) is not counted twice. Same event, same time: only entries at `ts` are read.
        // For temporal correlations an entry is an event *for one of the rules* (`val` is the
        // rule's position): an event matching two of the rules counts for each of them.
        let temporal = matches!(
            c.kind,
            CorrelationType::Temporal | CorrelationType::TemporalOrdered
        );
        let counted = |entries: &[Entry], v: u64| {
            let same_time = entries.partition_point(|e| e.ts < ts);
            entries[same_time..]
                .iter()
                .take_while(|e| e.ts == ts)
                .any(|e| e.id == id && id != 0 && (!temporal || e.val == v))
        };
        let secs = |ms: i64| u32::try_from(ms.max(0) / 1000).unwrap_or(u32::MAX);
        let mut insert = true;
        let mut new_entry = Entry::new(ts, val, line, id);
        if c.kind == CorrelationType::ValueCount {
            if let Some(pos) = ks.entries.iter().position(|e| e.val == val) {
                let old = ks.entries[pos];
                if old.ts >= ts {
                    insert = false;
                    // An earlier event of the value, arriving late: one more for its entry.
                    if old.id != id && old.ts.saturating_sub(ts) <= span {
                        let e = &mut ks.entries[pos];
                        e.n = e.n.saturating_add(1);
                        e.run_secs = e.run_secs.max(secs(old.ts - ts));
                    }
                } else {
                    ks.entries.remove(pos);
                    let run_start = old.ts.saturating_sub(i64::from(old.run_secs) * 1000);
                    if run_start >= ts.saturating_sub(span) {
                        new_entry.n = old.n.saturating_add(1);
                        new_entry.run_secs = secs(ts - run_start);
                    } else if old.ts >= ts.saturating_sub(span) {
                        new_entry.n = 2;
                        new_entry.run_secs = secs(ts - old.ts);
                    }
                }
            }
        }
        for j in positions(rules, ci, from).filter(|_| insert) {
            let v = if temporal { j as u64 } else { val };
            if counted(&ks.entries, v) {
                continue;
            }
            let at = ks.entries.partition_point(|e| e.ts <= ts);
            ks.entries.insert(
                at,
                Entry {
                    val: v,
                    ..new_entry
                },
            );
        }
        if !origin.cites.is_empty() && insert {
            ks.cite(ts, id, origin.cites);
        }
        if ks.entries.len() > max_entries {
            let extra = ks.entries.len() - max_entries;
            ks.entries.drain(..extra);
        }
        ks.prune_citations();
        for w in closed {
            self.fire_closed(ci, w, rules, alerts);
        }
        if mode == Mode::Early {
            let ks = match self.states[ci].keys.get_mut(&key) {
                Some(k) => k,
                None => return,
            };
            if let Some((lo, hi)) = find_window(c, &ks.entries, ts, val, &mut self.distinct) {
                let used: Vec<Entry> = ks.entries.drain(lo..hi).collect();
                let cites = cited_evidence(ks.cited.as_deref(), &used);
                ks.prune_citations();
                let entity = Self::entity(c, &self.states[ci].group_paths[j0], values, event);
                let mut alert = base_alert(&c.meta, DetectorKind::Correlation, event, entity);
                // The window's newest event dates the alert, whichever arrived last (events
                // within the allowed lateness may come out of order): the same events give
                // the same alert. The triggering event's own time keeps its full precision.
                let newest = used.iter().map(|e| e.ts).max().unwrap_or(ts);
                if newest > event.timestamp.timestamp_millis() {
                    alert.timestamp =
                        chrono::DateTime::from_timestamp_millis(newest).unwrap_or(alert.timestamp);
                }
                alert.lines = cited_lines(&cites);
                alert.event_ids = evidence_ids(&cites);
                let trigger = if id != 0 {
                    format!("{id:032x}")
                } else {
                    event.id().0.clone()
                };
                if !alert.event_ids.contains(&trigger) {
                    alert.event_ids.push(trigger);
                }
                alert.count = events_counted(c, &used, &cites);
                alert.explanation = Some(explain_window(c, &used, &cites, &mut self.distinct));
                let alert = alert.seal();
                if !rules.corr_suppressed[ci] {
                    alerts.push(alert);
                }
                let up = Origin {
                    cites: &cites,
                    id: Some(id),
                    ..origin
                };
                if !rules.corr_parents[ci].is_empty() {
                    // The hit goes on as a stand-in event, as a closed window's does: it holds
                    // this correlation's group-by values under their names, which the event
                    // that completed it may not (an alias: QA, an outer correlation grouped by
                    // the inner one's alias never fired).
                    let carrier = self.carrier_for(ci, j0, values, event, rules);
                    for &p in &rules.corr_parents[ci] {
                        self.count(
                            p,
                            RuleRef::Correlation(ci),
                            &carrier.event,
                            up,
                            rules,
                            alerts,
                            &mut EventFields,
                        );
                    }
                }
            }
        }
    }

    /// Alert for a window that closed and fired, and pass its hit to the correlations that
    /// read this one (as [`Correlator::count`] does for an early hit).
    fn fire_closed(
        &mut self,
        ci: usize,
        w: ClosedWindow,
        rules: &RuleSet,
        alerts: &mut Vec<Alert>,
    ) {
        let c = &rules.correlations[ci];
        let Some(newest) = w.used.iter().copied().max_by_key(|e| e.ts) else {
            return;
        };
        let ts = chrono::DateTime::from_timestamp_millis(newest.ts).unwrap_or_default();
        let sev = c
            .meta
            .level
            .as_deref()
            .and_then(perimeter_model::Severity::parse)
            .unwrap_or_default();
        let info = &w.info;
        let mut a = Alert::new(
            c.meta.key(),
            c.meta.title.clone(),
            sev,
            DetectorKind::Correlation,
            info.source.clone(),
            info.tenant.clone(),
            ts,
            info.entity.clone(),
            info.entity_kind,
        );
        a.rule_status = c.meta.status.clone();
        a.description = c.meta.description.clone();
        a.tags = c.meta.tags.clone();
        a.threat_technique_id = super::compile::technique_ids(&c.meta.tags);
        a.references = c.meta.references.clone();
        a.rule_hash = Some(c.meta.rule_hash.clone());
        a.lines = cited_lines(&w.cites);
        a.count = events_counted(c, &w.used, &w.cites);
        a.explanation = Some(explain_window(c, &w.used, &w.cites, &mut self.distinct));
        a.event_ids = evidence_ids(&w.cites);
        if !rules.corr_suppressed[ci] {
            alerts.push(a.seal());
        }
        if let Some(carrier) = &info.carrier {
            let mut event = carrier.event.clone();
            event.timestamp = ts;
            event.line = (newest.line > 0).then_some(newest.line);
            let origin = Origin {
                ts: newest.ts,
                line: newest.line,
                id: Some(newest.id),
                cites: &w.cites,
            };
            for &p in &rules.corr_parents[ci] {
                self.count(
                    p,
                    RuleRef::Correlation(ci),
                    &event,
                    origin,
                    rules,
                    alerts,
                    &mut EventFields,
                );
            }
        }
    }
    /// Called after every event: advance the watermark, expire old state, close windows.
    pub fn advance(&mut self, event: &Event, rules: &RuleSet, alerts: &mut Vec<Alert>) {
        let ts = event.timestamp.timestamp_millis();
        // An event is late or not for all correlations alike (one stream, one time): the
        // loss is counted in events, not in events times the correlations that read them.
        if std::mem::take(&mut self.late_now) {
            self.late_dropped += 1;
        }
        // An event whose impossible vendor time was replaced by its receive time says nothing
        // of how far its stream has come: taken as the watermark, one such record (`9999-12-31`
        // in a replayed file) would make every later event of the stream too late to count.
        if !event.timestamp_adjusted {
            let received = event.received_at.timestamp_millis();
            let clock = self
                .streams
                .entry(stream_of(event))
                .or_insert(StreamClock::NEW);
            clock.observe(ts, received);
            // Sweeps follow the watermarks too: a record dated hours ahead would otherwise
            // put the next sweep hours away (until a forced one).
            self.max_ts = self.max_ts.max(clock.watermark());
            if ts > received.saturating_add(self.lateness_ms) {
                self.dated_ahead += 1;
            }
        }
        self.events_since_sweep += 1;
        // Sweeps are scheduled by the newest event time of all streams. When that stream stalls
        // (a source gone quiet, one whose clock runs ahead), the others' windows would never
        // close or expire: every so many events, sweep anyway. Every key closes by its own
        // stream's watermark either way; as many events as keys keep the cost per event flat.
        let forced = self.events_since_sweep >= crate::FORCED_SWEEP_MIN_EVENTS
            && self.events_since_sweep >= self.num_keys() as u64;
        if self.max_ts < self.next_sweep_ts && !forced {
            return;
        }
        self.events_since_sweep = 0;
        let mut next = i64::MAX;
        for ci in 0..self.states.len() {
            let span = rules.correlations[ci].timespan_ms;
            let st = &self.states[ci];
            let due = forced
                || st.last_sweep_ts == i64::MIN
                || self.max_ts.saturating_sub(st.last_sweep_ts) >= (span / 2).max(1000);
            if due && !st.keys.is_empty() {
                self.sweep(ci, rules, alerts, false);
            }
            if due {
                self.states[ci].last_sweep_ts = self.max_ts;
            }
            let st = &self.states[ci];
            next = next.min(if st.last_sweep_ts == i64::MIN {
                i64::MIN
            } else {
                st.last_sweep_ts.saturating_add((span / 2).max(1000))
            });
        }
        self.next_sweep_ts = next;
    }

    fn sweep(&mut self, ci: usize, rules: &RuleSet, alerts: &mut Vec<Alert>, all: bool) {
        self.state_version += 1;
        let c = &rules.correlations[ci];
        let span = c.timespan_ms;
        let (streams, lateness, distinct) = (&self.streams, self.lateness_ms, &mut self.distinct);
        let st = &mut self.states[ci];
        let mut closed: Vec<ClosedWindow> = Vec::new();
        let mode = st.mode;
        st.keys.retain(|_, ks| {
            let watermark = streams
                .get(&ks.stream)
                .map_or(i64::MIN, StreamClock::watermark)
                .saturating_sub(lateness);
            if mode == Mode::OnClose {
                close_windows(c, ks, (!all).then_some(watermark), distinct, &mut closed);
            } else {
                let horizon = watermark.saturating_sub(span);
                let keep_from = if all {
                    ks.entries.len()
                } else {
                    ks.entries.partition_point(|e| e.ts < horizon)
                };
                ks.entries.drain(..keep_from);
                ks.prune_citations();
            }
            !ks.entries.is_empty()
        });
        for w in closed {
            self.fire_closed(ci, w, rules, alerts);
        }
    }
    /// End of input: close every open window.
    /// A correlation is flushed before those that read it: the hits of its last windows still
    /// count for them.
    pub fn flush(&mut self, rules: &RuleSet, alerts: &mut Vec<Alert>) {
        let mut order = Vec::with_capacity(self.states.len());
        let mut seen = vec![false; self.states.len()];
        for ci in 0..self.states.len() {
            readers_last(ci, rules, &mut seen, &mut order);
        }
        for ci in order {
            self.sweep(ci, rules, alerts, true);
        }
    }
}

/// Push `ci` to `order` after the correlations it reads (correlations reading each other in a
/// cycle are rejected when loading).
fn readers_last(ci: usize, rules: &RuleSet, seen: &mut [bool], order: &mut Vec<usize>) {
    if std::mem::replace(&mut seen[ci], true) {
        return;
    }
    for r in &rules.corr_refs[ci] {
        if let RuleRef::Correlation(c) = *r {
            readers_last(c, rules, seen, order);
        }
    }
    order.push(ci);
}

/// Format tag of [`CorrelatorSnapshot`]: 2 added `stream_clocks`.
const SNAPSHOT_FORMAT: &str = "perimeter-correlation/2";

/// Format tag of snapshots written before `stream_clocks` (2026-12-04), which still restore. The
/// binary form has no field names, so this tag, the first field, is what says that the field is
/// not in the file (reading format 2's fields from it failed, and set the snapshot aside).
const SNAPSHOT_FORMAT_1: &str = "perimeter-correlation/1";

/// The open correlation windows, as written to disk: keyed hashes, times, event ids, input
/// lines, and for windows that close later the alert's source, tenant and (masked) entity.
///
/// Read through its own `Deserialize` (below) for format 1; `remote = "Self"` makes the derived
/// reading and writing plain functions that it and `Serialize` call.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct CorrelatorSnapshot {
    format: String,
    /// Proves which hash key wrote it without revealing the key.
    key_check: String,
    max_ts: i64,
    seq: u64,
    /// Per stream, the newest time of a record dated at or before its receipt
    /// ([`StreamClock`]; before 2026-12, the newest time of any record).
    streams: Vec<(u64, i64)>,
    /// Per stream, the rest of its clock: (stream, delay, newest receive time of a record dated
    /// after its receipt). Absent from snapshots of format 1 (before 2026-12-05).
    #[serde(default)]
    stream_clocks: Vec<(u64, i64, i64)>,
    correlations: Vec<CorrelationSnapshot>,
}

impl Serialize for CorrelatorSnapshot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CorrelatorSnapshot::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for CorrelatorSnapshot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = CorrelatorSnapshot;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a correlation snapshot")
            }

            /// Named fields (JSON): the derived reading, where format 1 lacks `stream_clocks`.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                CorrelatorSnapshot::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }

            /// Fields in order (the binary form): the format, first, says which follow.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                /// Field `index`; a file ending before it is cut off.
                fn next<'de, T: Deserialize<'de>, A: serde::de::SeqAccess<'de>>(
                    seq: &mut A,
                    index: usize,
                ) -> Result<T, A::Error> {
                    seq.next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(index, &Fields))
                }
                let format: String = next(&mut seq, 0)?;
                let format_1 = format == SNAPSHOT_FORMAT_1;
                Ok(CorrelatorSnapshot {
                    key_check: next(&mut seq, 1)?,
                    max_ts: next(&mut seq, 2)?,
                    seq: next(&mut seq, 3)?,
                    streams: next(&mut seq, 4)?,
                    stream_clocks: if format_1 {
                        Vec::new()
                    } else {
                        next(&mut seq, 5)?
                    },
                    correlations: next(&mut seq, if format_1 { 5 } else { 6 })?,
                    format,
                })
            }
        }
        deserializer.deserialize_struct(
            "CorrelatorSnapshot",
            &[
                "format",
                "key_check",
                "max_ts",
                "seq",
                "streams",
                "stream_clocks",
                "correlations",
            ],
            Fields,
        )
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorrelationSnapshot {
    /// The rule's identity (`RuleSet::correlation_identities`).
    rule: String,
    keys: Vec<KeySnapshot>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySnapshot {
    key: u64,
    last_used: u64,
    stream: u64,
    window_start: i64,
    /// (event time ms, value, input line, event id as 32 hex digits)
    entries: Vec<(i64, u64, u64, String)>,
    window: Option<WindowSnapshot>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowSnapshot {
    source: String,
    tenant: String,
    entity: String,
    entity_kind: EntityKind,
}

/// What [`Correlator::restore`] took from a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorrelationRestore {
    /// Group-by keys (open windows) restored.
    pub keys: usize,
    /// Correlations of the snapshot with no unchanged counterpart in the rules now loaded (their
    /// windows are dropped: a changed rule starts afresh).
    pub dropped_correlations: usize,
}

fn key_check(key: &[u8; 16]) -> String {
    let mut h = ValueHash::new(key);
    h.write(b"perimeter correlation snapshot key check");
    format!("{:016x}", h.finish())
}

impl Correlator {
    /// The open windows of every correlation, for [`Correlator::restore`] after a restart.
    /// `mask` masks the entity text kept for windows that close later (it is clear in memory).
    pub fn snapshot(&self, rules: &RuleSet, mask: &dyn Fn(&str) -> String) -> CorrelatorSnapshot {
        let correlations = self
            .states
            .iter()
            .zip(&rules.corr_identities)
            .filter(|(st, _)| !st.keys.is_empty())
            .map(|(st, identity)| CorrelationSnapshot {
                rule: identity.clone(),
                keys: st
                    .keys
                    .iter()
                    .map(|(key, ks)| KeySnapshot {
                        key: *key,
                        last_used: ks.last_used,
                        stream: ks.stream,
                        // The window start of format 1's tumbling windows: a window now starts
                        // at its oldest open event.
                        window_start: ks.entries.first().map_or(0, |e| e.ts),
                        entries: ks
                            .entries
                            .iter()
                            .map(|e| (e.ts, e.val, e.line, format!("{:032x}", e.id)))
                            .collect(),
                        window: ks.window.as_ref().map(|w| WindowSnapshot {
                            source: w.source.clone(),
                            tenant: w.tenant.clone(),
                            entity: mask(&w.entity),
                            entity_kind: w.entity_kind,
                        }),
                    })
                    .collect(),
            })
            .collect();
        CorrelatorSnapshot {
            format: SNAPSHOT_FORMAT.to_string(),
            key_check: key_check(&self.hash_key),
            max_ts: self.max_ts,
            seq: self.seq,
            streams: self.streams.iter().map(|(k, v)| (*k, v.dated)).collect(),
            stream_clocks: self
                .streams
                .iter()
                .map(|(k, v)| (*k, v.delay, v.ahead_received))
                .collect(),
            correlations,
        }
    }

    /// Take the windows of `snap` for the correlations loaded now that are unchanged (same
    /// identity). Fails, changing nothing, when the snapshot is of another format or was written
    /// under another hash key (its keys could never match an event again).
    pub fn restore(
        &mut self,
        rules: &RuleSet,
        snap: CorrelatorSnapshot,
    ) -> Result<CorrelationRestore, String> {
        if snap.format != SNAPSHOT_FORMAT && snap.format != SNAPSHOT_FORMAT_1 {
            return Err(format!(
                "format `{}` is neither `{SNAPSHOT_FORMAT}` nor `{SNAPSHOT_FORMAT_1}`",
                snap.format
            ));
        }
        if snap.key_check != key_check(&self.hash_key) {
            return Err("written under another hash key (mask.hmac_key changed?); its windows cannot be matched".into());
        }
        let mut restored = CorrelationRestore::default();
        for cs in snap.correlations {
            let Some(ci) = rules.corr_identities.iter().position(|c| *c == cs.rule) else {
                restored.dropped_correlations += 1;
                continue;
            };
            let st = &mut self.states[ci];
            for k in cs.keys {
                let mut entries: Vec<Entry> = k
                    .entries
                    .into_iter()
                    // The line was of the input read before the snapshot: an alert's `lines` name
                    // lines of the input it is raised in (`detect --state-dir` over the next
                    // file), so an earlier input's events are cited by their ids only.
                    .map(|(ts, val, _line, id)| {
                        Entry::new(ts, val, 0, u128::from_str_radix(&id, 16).unwrap_or(0))
                    })
                    .collect();
                entries.sort_by_key(|e| e.ts);
                if entries.len() > st.max_entries {
                    entries.drain(..entries.len() - st.max_entries);
                }
                if entries.is_empty() {
                    continue;
                }
                st.keys.insert(
                    k.key,
                    KeyState {
                        last_used: k.last_used,
                        stream: k.stream,
                        // Snapshots of tumbling windows (before 2026-12) load too: their
                        // events are evaluated in windows from the oldest one on.
                        entries,
                        window: k.window.map(|w| {
                            Box::new(WindowInfo {
                                source: w.source,
                                tenant: w.tenant,
                                entity: w.entity,
                                entity_kind: w.entity_kind,
                                carrier: None,
                            })
                        }),
                        cited: None,
                    },
                );
                restored.keys += 1;
            }
            while st.keys.len() > self.max_keys {
                self.evicted_keys += evict_lru(&mut st.keys, &mut self.distinct);
            }
        }
        let mut clocks: HashMap<u64, StreamClock> = snap
            .streams
            .into_iter()
            .map(|(stream, dated)| {
                let clock = StreamClock {
                    dated,
                    ..StreamClock::NEW
                };
                (stream, clock)
            })
            .collect();
        for (stream, delay, ahead_received) in snap.stream_clocks {
            let clock = clocks.entry(stream).or_insert(StreamClock::NEW);
            clock.delay = delay;
            clock.ahead_received = ahead_received;
        }
        self.take_clocks(clocks, snap.max_ts, snap.seq);
        self.state_version += 1;
        Ok(restored)
    }

    /// Take the stream watermarks, newest time and use counter of state taken over (a snapshot,
    /// the correlator before a reload), keeping the later of each, and sweep at the next event.
    fn take_clocks(
        &mut self,
        streams: impl IntoIterator<Item = (u64, StreamClock)>,
        max_ts: i64,
        seq: u64,
    ) {
        for (stream, clock) in streams {
            self.streams
                .entry(stream)
                .or_insert(StreamClock::NEW)
                .merge(clock);
        }
        self.max_ts = self.max_ts.max(max_ts);
        self.seq = self.seq.max(seq);
        self.next_sweep_ts = i64::MIN;
    }

    /// A rule reload: take over the windows of `old`'s correlations that are unchanged in the new
    /// rules (same identity), so a reload does not restart them. What is left in `old` is what
    /// its flush should still close. Both must have the same hash key. Returns the number of
    /// correlations taken over.
    pub fn adopt(&mut self, rules: &RuleSet, old: &mut Correlator, old_rules: &RuleSet) -> usize {
        if old.hash_key != self.hash_key {
            return 0;
        }
        let mut adopted = 0;
        for (ci, identity) in rules.corr_identities.iter().enumerate() {
            let Some(oi) = old_rules.corr_identities.iter().position(|o| o == identity) else {
                continue;
            };
            let Some(old_state) = old.states.get_mut(oi) else {
                continue;
            };
            self.states[ci].keys = std::mem::take(&mut old_state.keys);
            self.states[ci].last_sweep_ts = old_state.last_sweep_ts;
            adopted += 1;
        }
        self.take_clocks(
            old.streams.iter().map(|(k, v)| (*k, *v)),
            old.max_ts,
            old.seq,
        );
        // Past both: a caller comparing with the old correlator's last version sees a change.
        self.state_version = self.state_version.max(old.state_version) + 1;
        adopted
    }
}

/// Positions of `from` in correlation `ci`'s rule list (usually one), without allocating.
fn positions(rules: &RuleSet, ci: usize, from: RuleRef) -> impl Iterator<Item = usize> + '_ {
    rules.corr_refs[ci]
        .iter()
        .enumerate()
        .filter(move |(_, r)| **r == from)
        .map(|(j, _)| j)
}

/// Most group-by keys one event counts under (a group-by path through an array has a value
/// per element).
const MAX_GROUP_KEYS: usize = 8;

/// The group-by keys an event counts under.
enum Groups {
    One(u64),
    /// Each key with its values as seen (for the alert's entity).
    Many(Vec<(u64, Vec<String>)>),
}

/// The hasher every group-by key starts from: the tenant's.
fn tenant_hash(hash_key: &[u8; 16], event: &Event) -> ValueHash {
    let mut h = ValueHash::new(hash_key);
    h.write(event.tenant.as_bytes());
    h.write(&[0xff]);
    h
}

/// The group-by key of `event` (tenant and each group-by value, case-folded) when each field
/// has one value: `None` when a field has none, `Some(None)` when one has several (an array):
/// then [`group_keys`]. The common case, without allocating.
fn group_key(
    hash_key: &[u8; 16],
    paths: &[FieldPath],
    slots: &[u32],
    event: &Event,
    fields: &mut dyn FieldValues,
) -> Option<Option<u64>> {
    let mut h = tenant_hash(hash_key, event);
    for (p, &slot) in paths.iter().zip(slots) {
        let mut texts = 0u32;
        fields.visit(slot, p, event, &mut |leaf: Leaf<'_>| {
            leaf.with_text(|t| {
                if let Some(t) = t {
                    if texts == 0 {
                        h.write_folded(t);
                    }
                    texts += 1;
                }
            });
            texts > 1
        });
        match texts {
            0 => return None,
            1 => h.write(&[0xff]),
            _ => return Some(None),
        }
    }
    Some(Some(h.finish()))
}

/// The group-by keys of an event with several values of a group-by field (a path through an
/// array: the Okta `target` list): it counts under each distinct (case-folded) combination,
/// whatever the order of the elements, at most [`MAX_GROUP_KEYS`].
fn group_keys(
    hash_key: &[u8; 16],
    paths: &[FieldPath],
    slots: &[u32],
    event: &Event,
    fields: &mut dyn FieldValues,
) -> Vec<(u64, Vec<String>)> {
    let mut partial: Vec<(ValueHash, Vec<String>)> = vec![(tenant_hash(hash_key, event), vec![])];
    for (p, &slot) in paths.iter().zip(slots) {
        let mut values: Vec<(String, String)> = Vec::new();
        fields.visit(slot, p, event, &mut |leaf: Leaf<'_>| {
            leaf.with_text(|t| {
                if let Some(t) = t {
                    let folded = t.to_lowercase();
                    if !values.iter().any(|(f, _)| *f == folded) {
                        values.push((folded, t.to_string()));
                    }
                }
            });
            values.len() >= MAX_GROUP_KEYS
        });
        let mut next = Vec::with_capacity(MAX_GROUP_KEYS);
        for (h, seen) in &partial {
            for (_, v) in &values {
                if next.len() == MAX_GROUP_KEYS {
                    break;
                }
                let mut h = h.clone();
                h.write_folded(v);
                h.write(&[0xff]);
                let mut seen = seen.clone();
                seen.push(v.clone());
                next.push((h, seen));
            }
        }
        partial = next;
    }
    partial
        .into_iter()
        .map(|(h, values)| (h.finish(), values))
        .collect()
}

/// The stream an event belongs to: its tenant, source and feed ([`feed_of`]).
fn stream_of(event: &Event) -> u64 {
    let mut h = Fnv::new();
    h.write(event.tenant.as_bytes());
    h.write(&[0xff]);
    h.write(event.source.as_bytes());
    if let Some(feed) = feed_of(event) {
        h.write(&[0xfe]);
        h.write(feed.as_bytes());
    }
    h.finish()
}

/// The feed of a source whose feeds are published with delays of their own: a Google
/// Workspace application (`id.applicationName`: `login` in minutes, `drive` or `token` hours
/// later) or a Microsoft 365 workload (`Workload`: Azure AD, SharePoint, Exchange). Each feed
/// keeps its own watermark (QA: once the login feed had an event from a minute ago, every Drive
/// download older than the allowed lateness was late, and a bulk download raised nothing).
fn feed_of(event: &Event) -> Option<&str> {
    use perimeter_model::raw_prelude::*;
    match event.source.as_str() {
        "google_workspace" => event
            .raw
            .get("id")
            .and_then(|id| id.get("applicationName"))
            .and_then(|v| v.as_str()),
        "m365" => event.raw.get("Workload").and_then(|v| v.as_str()),
        _ => None,
    }
}

/// Drop the least recently used eighth of `keys`; how many were dropped.
fn evict_lru(keys: &mut KeyMap, scratch: &mut Vec<u64>) -> u64 {
    scratch.clear();
    scratch.extend(keys.values().map(|k| k.last_used));
    if scratch.is_empty() {
        return 0;
    }
    let before = keys.len();
    let nth = (scratch.len() / 8).min(scratch.len() - 1);
    let (_, threshold, _) = scratch.select_nth_unstable(nth);
    let threshold = *threshold;
    keys.retain(|_, k| k.last_used > threshold);
    (before - keys.len()) as u64
}

/// The aggregate of a window (count, distinct count, sum, average, percent share of `current`).
fn aggregate(
    c: &CorrelationRule,
    w: &[Entry],
    current: Option<u64>,
    distinct: &mut Vec<u64>,
) -> f64 {
    match c.kind {
        CorrelationType::EventCount => w.len() as f64,
        CorrelationType::ValueCount
        | CorrelationType::Temporal
        | CorrelationType::TemporalOrdered => {
            distinct.clear();
            distinct.extend(w.iter().map(|e| e.val));
            distinct.sort_unstable();
            distinct.dedup();
            distinct.len() as f64
        }
        CorrelationType::ValueSum => w.iter().map(|e| f64::from_bits(e.val)).sum(),
        CorrelationType::ValueAvg => {
            if w.is_empty() {
                0.0
            } else {
                w.iter().map(|e| f64::from_bits(e.val)).sum::<f64>() / w.len() as f64
            }
        }
        CorrelationType::ValuePercentile => {
            let cur = current.unwrap_or(0);
            if w.is_empty() {
                100.0
            } else {
                100.0 * w.iter().filter(|e| e.val == cur).count() as f64 / w.len() as f64
            }
        }
    }
}

fn ordered_chain(w: &[Entry], n: usize) -> bool {
    let mut want = 0u64;
    // One event matching two of the rules is not one followed by the other: each step of the
    // chain is another event than the step before.
    let mut previous: Option<u128> = None;
    for e in w {
        if e.val == want && (previous != Some(e.id) || e.id == 0) {
            previous = Some(e.id);
            want += 1;
            if want as usize == n {
                return true;
            }
        }
    }
    false
}

/// A window of `timespan` that contains the new event (time `ts`) and satisfies the condition:
/// returns its index range in the sorted entries.
fn find_window(
    c: &CorrelationRule,
    entries: &[Entry],
    ts: i64,
    cur: u64,
    distinct: &mut Vec<u64>,
) -> Option<(usize, usize)> {
    let span = c.timespan_ms;
    let n_rules = c.rules.len();
    if matches!(
        c.kind,
        CorrelationType::ValueAvg | CorrelationType::ValuePercentile
    ) {
        // An average (or a share) over a part of the period says nothing of the period: the
        // window starting at the newest event alone would make `value_avg` fire on any single
        // value above the threshold. These are judged over whole periods: the `timespan` up to
        // the new event, or up to a later one that arrived before it.
        let last = entries.partition_point(|e| e.ts <= ts.saturating_add(span));
        let first_end = entries.partition_point(|e| e.ts < ts);
        for hi in first_end..last {
            let end = entries[hi].ts;
            let lo = entries.partition_point(|e| e.ts < end.saturating_sub(span));
            let w = &entries[lo..=hi];
            let agg = aggregate(c, w, Some(cur), distinct);
            if c.condition.iter().all(|(op, n)| op.holds(agg, *n)) {
                return Some((lo, hi + 1));
            }
        }
        return None;
    }
    let first = entries.partition_point(|e| e.ts < ts.saturating_sub(span));
    if matches!(
        c.kind,
        CorrelationType::EventCount | CorrelationType::ValueCount | CorrelationType::ValueSum
    ) {
        return sliding_window(c, entries, ts, first);
    }
    for lo in first..entries.len() {
        let start = entries[lo].ts;
        if start > ts {
            break;
        }
        let hi = entries.partition_point(|e| e.ts <= start.saturating_add(span));
        let w = &entries[lo..hi];
        let ok = match c.kind {
            CorrelationType::Temporal if c.condition.is_empty() => {
                aggregate(c, w, None, distinct) as usize >= n_rules
            }
            CorrelationType::TemporalOrdered => {
                ordered_chain(w, n_rules)
                    && c.condition
                        .iter()
                        .all(|(op, n)| op.holds(aggregate(c, w, None, distinct), *n))
            }
            CorrelationType::ValuePercentile => c
                .condition
                .iter()
                .all(|(op, n)| op.holds(aggregate(c, w, Some(cur), distinct), *n)),
            _ => {
                let agg = aggregate(c, w, None, distinct);
                c.condition.iter().all(|(op, n)| op.holds(agg, *n))
            }
        };
        if ok {
            return Some((lo, hi));
        }
    }
    None
}

/// [`find_window`] for the aggregates that can be kept as the window slides from one start to
/// the next (a count, the values seen, a sum): the same windows in the same order, each judged
/// without going over it again. Recomputing each start's aggregate (for `value_count` a sort of
/// its values) made a burst of new values cubic: 4,000 events at `gte: 1000` took 7-10 s (QA).
fn sliding_window(
    c: &CorrelationRule,
    entries: &[Entry],
    ts: i64,
    first: usize,
) -> Option<(usize, usize)> {
    let span = c.timespan_ms;
    let mut values: HashMap<u64, u32> = HashMap::new();
    let mut sum = 0.0f64;
    let mut end = first;
    for lo in first..entries.len() {
        let start = entries[lo].ts;
        if start > ts {
            break;
        }
        // Starts only move later, so ends do too.
        while entries
            .get(end)
            .is_some_and(|e| e.ts <= start.saturating_add(span))
        {
            let e = &entries[end];
            match c.kind {
                CorrelationType::ValueCount => *values.entry(e.val).or_default() += 1,
                CorrelationType::ValueSum => sum += f64::from_bits(e.val),
                _ => {}
            }
            end += 1;
        }
        let hi = end;
        let agg = match c.kind {
            CorrelationType::ValueCount => values.len() as f64,
            CorrelationType::ValueSum => sum,
            _ => (hi - lo) as f64,
        };
        let holds = |agg: f64| c.condition.iter().all(|(op, n)| op.holds(agg, *n));
        let mut ok = holds(agg);
        if c.kind == CorrelationType::ValueSum {
            // A running sum drifts by rounding as values leave it: near a bound, or when it
            // would fire, the window's own sum decides.
            let near = c
                .condition
                .iter()
                .any(|(_, n)| (agg - n).abs() <= 1e-9 * n.abs().max(agg.abs()).max(1.0));
            if ok || near {
                ok = holds(entries[lo..hi].iter().map(|e| f64::from_bits(e.val)).sum());
            }
        }
        if ok {
            return Some((lo, hi));
        }
        let leaving = &entries[lo];
        match c.kind {
            CorrelationType::ValueCount => {
                if let Some(n) = values.get_mut(&leaving.val) {
                    *n -= 1;
                    if *n == 0 {
                        values.remove(&leaving.val);
                    }
                }
            }
            CorrelationType::ValueSum => sum -= f64::from_bits(leaving.val),
            _ => {}
        }
    }
    None
}

/// How a closed window's condition came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Fire,
    /// Below a lower bound (`gt`, `gte`, `eq` not reached): the window slides.
    TooFew,
    /// Over an upper bound, or `neq` equal: the window is consumed.
    TooMany,
}

fn verdict(c: &CorrelationRule, agg: f64) -> Verdict {
    if c.condition.iter().all(|(op, n)| op.holds(agg, *n)) {
        return Verdict::Fire;
    }
    let too_many = c.condition.iter().any(|(op, n)| match op {
        CountOp::Lt | CountOp::Lte => !op.holds(agg, *n),
        CountOp::Eq => agg > *n,
        _ => false,
    });
    let too_few = c.condition.iter().any(|(op, n)| match op {
        CountOp::Gt | CountOp::Gte => !op.holds(agg, *n),
        CountOp::Eq => agg < *n,
        _ => false,
    });
    if too_few && !too_many {
        Verdict::TooFew
    } else {
        Verdict::TooMany
    }
}

/// Evaluate the windows of `ks` (each from its oldest open event, `timespan` long) that end
/// before `watermark`, every window when `None` (flush). One with too few slides to its next
/// event; one that fires (pushed to `out`) or has too many is consumed whole.
fn close_windows(
    c: &CorrelationRule,
    ks: &mut KeyState,
    watermark: Option<i64>,
    distinct: &mut Vec<u64>,
    out: &mut Vec<ClosedWindow>,
) {
    let mut lo = 0;
    while lo < ks.entries.len() {
        let end = ks.entries[lo].ts.saturating_add(c.timespan_ms);
        if watermark.is_some_and(|w| end >= w) {
            break;
        }
        let hi = lo + ks.entries[lo..].partition_point(|e| e.ts <= end);
        let w = &ks.entries[lo..hi];
        match verdict(c, aggregate(c, w, None, distinct)) {
            Verdict::TooFew => lo += 1,
            Verdict::TooMany => lo = hi,
            Verdict::Fire => {
                if let Some(info) = &ks.window {
                    out.push(ClosedWindow {
                        cites: cited_evidence(ks.cited.as_deref(), w),
                        used: w.to_vec(),
                        info: info.clone(),
                    });
                }
                lo = hi;
            }
        }
    }
    if lo > 0 {
        ks.entries.drain(..lo);
        ks.prune_citations();
    }
}

/// The input lines of `cites`, sorted, each once.
fn cited_lines(cites: &[Entry]) -> Vec<u64> {
    let mut lines: Vec<u64> = cites.iter().map(|e| e.line).filter(|l| *l > 0).collect();
    lines.sort_unstable();
    lines.dedup();
    lines
}

/// The events a window counted: for `value_count` those of its values (an entry stands for
/// the value's events within one timespan up to it), else the events it cites.
fn events_counted(c: &CorrelationRule, used: &[Entry], cites: &[Entry]) -> u64 {
    match c.kind {
        CorrelationType::ValueCount => used.iter().map(|e| u64::from(e.n)).sum(),
        _ => cites.len() as u64,
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `used` are the window's entries, `cites` the events it cites, oldest first.
fn explain_window(
    c: &CorrelationRule,
    used: &[Entry],
    cites: &[Entry],
    distinct: &mut Vec<u64>,
) -> String {
    let span = c.timespan_ms / 1000;
    // A value_count entry's events start `run_secs` before it.
    let first = used
        .iter()
        .map(|e| e.ts.saturating_sub(i64::from(e.run_secs) * 1000))
        .chain(cites.first().map(|e| e.ts))
        .min()
        .unwrap_or(0);
    let last = cites.last().map_or(0, |e| e.ts);
    let cond: Vec<String> = c
        .condition
        .iter()
        .map(|(op, n)| {
            let op = match op {
                CountOp::Gt => "gt",
                CountOp::Gte => "gte",
                CountOp::Lt => "lt",
                CountOp::Lte => "lte",
                CountOp::Eq => "eq",
                CountOp::Neq => "neq",
            };
            format!("{op} {n}")
        })
        .collect();
    let counted = match c.kind {
        CorrelationType::ValueCount => {
            let values = aggregate(c, used, None, distinct) as u64;
            let events = events_counted(c, used, cites);
            format!(
                "{values} distinct {} value{} from {events} event{}",
                c.fields.join("+"),
                plural(values),
                plural(events)
            )
        }
        _ => format!("{} event{}", cites.len(), plural(cites.len() as u64)),
    };
    format!(
        "{} correlation: {counted} over {}s (timespan {}s){}{}",
        c.kind.as_str(),
        (last - first) / 1000,
        span,
        if c.group_by.is_empty() {
            String::new()
        } else {
            format!(", grouped by {}", c.group_by.join(", "))
        },
        if cond.is_empty() {
            String::new()
        } else {
            format!(", condition {}", cond.join(" and "))
        }
    )
}
