//! Correlation state: per correlation rule, per group-by key (a u64 hash of the group-by values),
//! a small sorted list of (event time, value, line) entries.
//!
//! - Group-by keys and counted values are keyed hashes ([`ValueHash`]), so the state can be
//!   snapshotted to disk ([`Correlator::snapshot`]) and survive a restart, and kept across a rule
//!   reload ([`Correlator::adopt`]), without holding a value that could be tested by guessing.
//!
//! - Keys belong to one tenant: the tenant is part of every group-by key, so two tenants'
//!   events never count towards one window.
//! - Event-time windows, with a watermark per stream (tenant + source): events older than the
//!   newest seen *in their stream* minus `allowed_lateness_seconds` are dropped (counted), later
//!   ones are inserted in time order, so out-of-order input within the lateness gives the same
//!   result as ordered input. Vendors deliver with very different delays (Okta in seconds,
//!   Google Workspace and Microsoft 365 hours behind): one watermark for everything made every
//!   event of a delayed source "late", so correlations on it never fired. A key's windows close
//!   and expire by the watermark of the stream that last fed it.
//! - Conditions that can only become true as events arrive (`gt`/`gte` counts, sums, temporal)
//!   fire as soon as a window of `timespan` containing the new event satisfies them; the entries
//!   of that window are then consumed, so one burst gives one alert.
//! - Conditions with an upper bound (`lt`, `lte`, `eq`, `neq`) are evaluated when a tumbling
//!   window (starting at the key's first event) closes: when the watermark passes its end, or on
//!   flush.
//! - Memory is bounded: entries expire by event time, each key keeps at most a fixed number of
//!   entries, and each correlation keeps at most `max_correlation_keys` keys, evicting the least
//!   recently used eighth when full.

use perimeter_model::{Alert, DetectorKind, EntityKind, Event};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::compile::{base_alert, entity_kind_for_group_by, entity_of};
use super::matcher::{FieldPath, Found, Leaf, NO_SLOT};
use super::parse::{CorrelationRule, CorrelationType, CountOp};
use super::{RuleRef, RuleSet, SigmaOptions};

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

/// Keys are already hashes: no need to hash them again.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap = HashMap<u64, KeyState, BuildHasherDefault<IdentityHasher>>;

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
}

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
}

#[derive(Debug)]
struct KeyState {
    last_used: u64,
    /// The stream (tenant + source) of the last event; its watermark closes this key's windows.
    stream: u64,
    window_start: i64,
    entries: Vec<Entry>,
    window: Option<Box<WindowInfo>>,
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
    /// Newest event time per stream (tenant + source): lateness and window closing.
    streams: HashMap<u64, i64, BuildHasherDefault<IdentityHasher>>,
    /// Event time at which the next correlation is due for a sweep: `advance` does nothing
    /// per correlation before that.
    next_sweep_ts: i64,
    /// Events since the last sweep (see [`crate::FORCED_SWEEP_MIN_EVENTS`]).
    events_since_sweep: u64,
    /// Changes whenever the windows may have changed (see [`Correlator::state_version`]).
    state_version: u64,
    seq: u64,
    /// Events too late for their window (older than newest seen minus allowed lateness).
    pub late_dropped: u64,
    /// Keys (open windows) dropped to stay within `max_correlation_keys`: detections that may
    /// have been missed.
    pub evicted_keys: u64,
    distinct: Vec<u64>,
    /// Key of [`ValueHash`].
    hash_key: [u8; 16],
}

const MAX_ENTRIES_CAP: usize = 10_000;

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
                let mode = match c.kind {
                    CorrelationType::EventCount
                    | CorrelationType::ValueCount
                    | CorrelationType::ValueSum
                        if !lower_only =>
                    {
                        Mode::OnClose
                    }
                    _ => Mode::Early,
                };
                let threshold = c.condition.iter().map(|(_, n)| *n).fold(0.0f64, f64::max);
                let max_entries = match c.kind {
                    CorrelationType::Temporal | CorrelationType::TemporalOrdered => {
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
                                })
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
                    h.write(t.as_bytes());
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

    fn entity(
        c: &CorrelationRule,
        paths: &[FieldPath],
        event: &Event,
        rules: &RuleSet,
        ci: usize,
    ) -> (String, EntityKind) {
        let _ = rules;
        let _ = ci;
        // The rule's own choice (`entity_field`) names the alert, whatever it groups by: a
        // group of role sessions keyed by their ARN is about the person who acted.
        if c.meta.entity_field.is_some() {
            return entity_of(&c.meta, event);
        }
        match paths {
            [] => entity_of(&c.meta, event),
            [p] => match Self::first_text(p, event) {
                Some(v) => (v, entity_kind_for_group_by(c, &c.group_by[0])),
                None => entity_of(&c.meta, event),
            },
            many => {
                let mut s = String::new();
                for (g, p) in c.group_by.iter().zip(many) {
                    if !s.is_empty() {
                        s.push_str(", ");
                    }
                    s.push_str(g);
                    s.push('=');
                    s.push_str(Self::first_text(p, event).as_deref().unwrap_or("-"));
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
        let ts = event.timestamp.timestamp_millis();
        let stream = stream_of(event);
        let stream_ts = self.streams.get(&stream).copied().unwrap_or(i64::MIN);
        if stream_ts != i64::MIN && ts < stream_ts.saturating_sub(self.lateness_ms) {
            self.late_dropped += 1;
            return;
        }
        let c = &rules.correlations[ci];
        // Positions of `from` in the correlation's rule list (usually one), without allocating.
        let positions = || {
            rules.corr_refs[ci]
                .iter()
                .enumerate()
                .filter(move |(_, r)| **r == from)
                .map(|(j, _)| j)
        };
        let Some(j0) = positions().next() else {
            return;
        };
        let st = &mut self.states[ci];
        let mut h = ValueHash::new(&self.hash_key);
        h.write(event.tenant.as_bytes());
        h.write(&[0xff]);
        for (p, &slot) in st.group_paths[j0].iter().zip(&st.group_slots[j0]) {
            // An event without a group-by value belongs to no group (as `stats ... by field`
            // drops it): ten failures of ten unknown users are not ten failures of one.
            if !Self::text_of(p, slot, event, fields, &mut h) {
                return;
            }
            h.write(&[0xff]);
        }
        let key = h.finish();
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
        self.seq += 1;
        self.state_version += 1;
        if !st.keys.contains_key(&key) && st.keys.len() >= self.max_keys {
            self.evicted_keys += evict_lru(&mut st.keys, &mut self.distinct);
        }
        let span = c.timespan_ms;
        let horizon = stream_ts
            .max(ts)
            .saturating_sub(span)
            .saturating_sub(self.lateness_ms);
        let mode = st.mode;
        let max_entries = st.max_entries;
        let line = event.line.unwrap_or(0);
        let id = u128::from_str_radix(event.id().as_str(), 16).unwrap_or(0);
        let ks = st.keys.entry(key).or_insert_with(|| KeyState {
            last_used: 0,
            stream,
            window_start: ts,
            entries: Vec::with_capacity(1),
            window: None,
        });
        ks.last_used = self.seq;
        ks.stream = stream;
        if mode == Mode::OnClose && ks.window.is_none() {
            let (entity, entity_kind) = Self::entity(c, &st.group_paths[j0], event, rules, ci);
            ks.window = Some(Box::new(WindowInfo {
                source: event.source.clone(),
                tenant: event.tenant.clone(),
                entity,
                entity_kind,
            }));
        }
        let mut pending_close: Vec<Vec<Entry>> = Vec::new();
        if mode == Mode::OnClose {
            if ks.entries.is_empty() {
                ks.window_start = ts;
            }
            while !ks.entries.is_empty()
                && ts > ks.window_start.saturating_add(span)
                && ts.saturating_sub(ks.window_start) > span
            {
                let end = ks.window_start.saturating_add(span);
                let cut = ks.entries.partition_point(|e| e.ts <= end);
                pending_close.push(ks.entries.drain(..cut).collect());
                ks.window_start = ks.entries.first().map_or(ts, |e| e.ts.min(ts));
            }
            ks.window_start = ks.window_start.min(ts);
        } else {
            let keep_from = ks.entries.partition_point(|e| e.ts < horizon);
            if keep_from > 0 {
                ks.entries.drain(..keep_from);
            }
        }
        // value_count only needs each distinct value once, at its latest time: keeps a key's
        // entries (and memory) bounded by the number of distinct values.
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
        let mut insert = true;
        if c.kind == CorrelationType::ValueCount {
            if let Some(pos) = ks.entries.iter().position(|e| e.val == val) {
                if ks.entries[pos].ts >= ts {
                    insert = false;
                } else {
                    ks.entries.remove(pos);
                }
            }
        }
        for j in positions().filter(|_| insert) {
            let v = if temporal { j as u64 } else { val };
            if counted(&ks.entries, v) {
                continue;
            }
            let at = ks.entries.partition_point(|e| e.ts <= ts);
            ks.entries.insert(
                at,
                Entry {
                    ts,
                    val: v,
                    line,
                    id,
                },
            );
        }
        if ks.entries.len() > max_entries {
            let extra = ks.entries.len() - max_entries;
            ks.entries.drain(..extra);
        }
        if !pending_close.is_empty() {
            let window = ks.window.clone();
            for closed in pending_close {
                if let Some(w) = &window {
                    self.fire_closed(ci, &closed, w, rules, alerts);
                }
            }
        }
        if mode == Mode::Early {
            let ks = match self.states[ci].keys.get_mut(&key) {
                Some(k) => k,
                None => return,
            };
            if let Some((lo, hi)) = find_window(c, &ks.entries, ts, val, &mut self.distinct) {
                let used: Vec<Entry> = ks.entries.drain(lo..hi).collect();
                let entity = Self::entity(c, &self.states[ci].group_paths[j0], event, rules, ci);
                let mut alert = base_alert(&c.meta, DetectorKind::Correlation, event, entity);
                // The window's newest event dates the alert, whichever arrived last (events
                // within the allowed lateness may come out of order): the same events give
                // the same alert. The triggering event's own time keeps its full precision.
                let newest = used.iter().map(|e| e.ts).max().unwrap_or(ts);
                if newest > ts {
                    alert.timestamp =
                        chrono::DateTime::from_timestamp_millis(newest).unwrap_or(alert.timestamp);
                }
                for e in &used {
                    if e.line > 0 && !alert.lines.contains(&e.line) {
                        alert.lines.push(e.line);
                    }
                }
                alert.lines.sort_unstable();
                alert.event_ids = evidence_ids(&used);
                if !alert.event_ids.contains(&event.id().0) {
                    alert.event_ids.push(event.id().0.clone());
                }
                alert.count = used.len() as u64;
                alert.explanation = Some(explain_window(c, &used));
                let alert = alert.seal();
                if !rules.corr_suppressed[ci] {
                    alerts.push(alert);
                }
                for &p in &rules.corr_parents[ci] {
                    self.hit(p, RuleRef::Correlation(ci), event, rules, alerts, fields);
                }
            }
        }
    }

    fn fire_closed(
        &mut self,
        ci: usize,
        entries: &[Entry],
        w: &WindowInfo,
        rules: &RuleSet,
        alerts: &mut Vec<Alert>,
    ) {
        let c = &rules.correlations[ci];
        if entries.is_empty() {
            return;
        }
        let agg = aggregate(c, entries, None, &mut self.distinct);
        if !c.condition.iter().all(|(op, n)| op.holds(agg, *n)) {
            return;
        }
        let last = entries.iter().map(|e| e.ts).max().unwrap_or(0);
        let ts = chrono::DateTime::from_timestamp_millis(last).unwrap_or_default();
        let sev = c
            .meta
            .level
            .as_deref()
            .and_then(perimeter_model::Severity::parse)
            .unwrap_or_default();
        let mut a = Alert::new(
            c.meta.key(),
            c.meta.title.clone(),
            sev,
            DetectorKind::Correlation,
            w.source.clone(),
            w.tenant.clone(),
            ts,
            w.entity.clone(),
            w.entity_kind,
        );
        a.rule_status = c.meta.status.clone();
        a.description = c.meta.description.clone();
        a.tags = c.meta.tags.clone();
        a.threat_technique_id = super::compile::technique_ids(&c.meta.tags);
        a.references = c.meta.references.clone();
        a.rule_hash = Some(c.meta.rule_hash.clone());
        a.lines = entries
            .iter()
            .filter(|e| e.line > 0)
            .map(|e| e.line)
            .collect();
        a.lines.sort_unstable();
        a.lines.dedup();
        a.count = entries.len() as u64;
        a.explanation = Some(explain_window(c, entries));
        a.event_ids = evidence_ids(entries);
        if !rules.corr_suppressed[ci] {
            alerts.push(a.seal());
        }
    }

    /// Called after every event: advance the watermark, expire old state, close windows.
    pub fn advance(&mut self, event: &Event, rules: &RuleSet, alerts: &mut Vec<Alert>) {
        let ts = event.timestamp.timestamp_millis();
        // An event whose impossible vendor time was replaced by its receive time says nothing
        // of how far its stream has come: taken as the watermark, one such record (`9999-12-31`
        // in a replayed file) would make every later event of the stream too late to count.
        if !event.timestamp_adjusted {
            let stream_ts = self.streams.entry(stream_of(event)).or_insert(i64::MIN);
            if ts > *stream_ts {
                *stream_ts = ts;
            }
            if ts > self.max_ts {
                self.max_ts = ts;
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
        let span = rules.correlations[ci].timespan_ms;
        let (streams, lateness) = (&self.streams, self.lateness_ms);
        let st = &mut self.states[ci];
        let mut closed: Vec<(Vec<Entry>, Box<WindowInfo>)> = Vec::new();
        let mode = st.mode;
        st.keys.retain(|_, ks| {
            let watermark = streams
                .get(&ks.stream)
                .copied()
                .unwrap_or(i64::MIN)
                .saturating_sub(lateness);
            let horizon = watermark.saturating_sub(span);
            if mode == Mode::OnClose {
                while !ks.entries.is_empty()
                    && (all || ks.window_start.saturating_add(span) < watermark)
                {
                    let end = ks.window_start.saturating_add(span);
                    let cut = if all {
                        ks.entries.partition_point(|e| e.ts <= end).max(1)
                    } else {
                        ks.entries.partition_point(|e| e.ts <= end)
                    };
                    let chunk: Vec<Entry> = ks.entries.drain(..cut).collect();
                    if let Some(w) = &ks.window {
                        closed.push((chunk, w.clone()));
                    }
                    if let Some(first) = ks.entries.first() {
                        ks.window_start = first.ts;
                    }
                }
            } else {
                let keep_from = if all {
                    ks.entries.len()
                } else {
                    ks.entries.partition_point(|e| e.ts < horizon)
                };
                ks.entries.drain(..keep_from);
            }
            !ks.entries.is_empty()
        });
        for (entries, w) in closed {
            self.fire_closed(ci, &entries, &w, rules, alerts);
        }
    }

    /// End of input: close every open window.
    pub fn flush(&mut self, rules: &RuleSet, alerts: &mut Vec<Alert>) {
        for ci in 0..self.states.len() {
            self.sweep(ci, rules, alerts, true);
        }
    }
}

/// Format tag of [`CorrelatorSnapshot`].
const SNAPSHOT_FORMAT: &str = "perimeter-correlation/1";

/// The open correlation windows, as written to disk: keyed hashes, times, event ids, input
/// lines, and for windows that close later the alert's source, tenant and (masked) entity.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelatorSnapshot {
    format: String,
    /// Proves which hash key wrote it without revealing the key.
    key_check: String,
    max_ts: i64,
    seq: u64,
    streams: Vec<(u64, i64)>,
    correlations: Vec<CorrelationSnapshot>,
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
                        window_start: ks.window_start,
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
            streams: self.streams.iter().map(|(k, v)| (*k, *v)).collect(),
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
        if snap.format != SNAPSHOT_FORMAT {
            return Err(format!(
                "format `{}` is not `{SNAPSHOT_FORMAT}`",
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
                    .map(|(ts, val, _line, id)| Entry {
                        ts,
                        val,
                        line: 0,
                        id: u128::from_str_radix(&id, 16).unwrap_or(0),
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
                        window_start: k.window_start,
                        entries,
                        window: k.window.map(|w| {
                            Box::new(WindowInfo {
                                source: w.source,
                                tenant: w.tenant,
                                entity: w.entity,
                                entity_kind: w.entity_kind,
                            })
                        }),
                    },
                );
                restored.keys += 1;
            }
            while st.keys.len() > self.max_keys {
                self.evicted_keys += evict_lru(&mut st.keys, &mut self.distinct);
            }
        }
        self.take_clocks(snap.streams, snap.max_ts, snap.seq);
        self.state_version += 1;
        Ok(restored)
    }

    /// Take the stream watermarks, newest time and use counter of state taken over (a snapshot,
    /// the correlator before a reload), keeping the later of each, and sweep at the next event.
    fn take_clocks(
        &mut self,
        streams: impl IntoIterator<Item = (u64, i64)>,
        max_ts: i64,
        seq: u64,
    ) {
        for (stream, ts) in streams {
            let t = self.streams.entry(stream).or_insert(i64::MIN);
            *t = (*t).max(ts);
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

/// The stream an event belongs to: its tenant and source.
fn stream_of(event: &Event) -> u64 {
    let mut h = Fnv::new();
    h.write(event.tenant.as_bytes());
    h.write(&[0xff]);
    h.write(event.source.as_bytes());
    h.finish()
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

fn explain_window(c: &CorrelationRule, w: &[Entry]) -> String {
    let span = c.timespan_ms / 1000;
    let first = w.first().map_or(0, |e| e.ts);
    let last = w.last().map_or(0, |e| e.ts);
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
    format!(
        "{} correlation: {} events over {}s (timespan {}s){}{}",
        c.kind.as_str(),
        w.len(),
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
