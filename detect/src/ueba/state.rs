//! Per-entity state, keyed by a keyed hash of tenant + entity kind + value so that nothing
//! written to disk carries a clear user name, email or IP.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use perimeter_model::{EntityKind, Event};
use serde::{Deserialize, Serialize};

use super::auth_failure_burst::AuthFailureState;
use super::baseline::{RateBaseline, WindowCounter};
use super::brute_force_success::BruteForceState;
use super::config_change::ActorState;
use super::first_seen::SeenValues;
use super::password_spray::SprayState;

/// 128 bits of `blake3::keyed_hash(key, tenant NUL kind NUL value)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct EntityKey(pub [u8; 16]);

impl EntityKey {
    /// The key of an entity: its value case-folded, as SaaS identities are compared (M365 writes
    /// a UPN as typed on a failure and in its own case on a success; the Sigma correlations fold
    /// too). QA: `Carol@Contoso.com` failing and `carol@contoso.com` succeeding were two users,
    /// and an attacker alternating the case of a name split its failure burst.
    pub fn derive(key: &[u8; 32], tenant: &str, kind: EntityKind, value: &str) -> EntityKey {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(tenant.as_bytes());
        h.update(&[0, kind_byte(kind), 0]);
        crate::case_fold::write_case_folded(value, |piece| {
            h.update(piece);
        });
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        EntityKey(out)
    }

    /// A 32-bit tag of this key, for the small exact sets (distinct users per IP, ...).
    pub fn tag(&self) -> u32 {
        u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<EntityKey> {
        let v = hex::decode(s).ok()?;
        Some(EntityKey(v.try_into().ok()?))
    }
}

/// Hex in JSON; the 16 bytes as they are in the binary snapshot.
impl Serialize for EntityKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for EntityKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return <[u8; 16]>::deserialize(d).map(EntityKey);
        }
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EntityKey::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("entity key is not 32 hex digits"))
    }
}

/// Key for [`value_tag`], derived from the entity key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TagKey(u64, u64);

impl TagKey {
    pub fn derive(key: &[u8; 32]) -> TagKey {
        let h = blake3::keyed_hash(key, b"perimeter ueba value tags");
        let b = h.as_bytes();
        let word = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        TagKey(word(0), word(8))
    }
}

/// A keyed 32-bit tag of a value (country, ASN, user-agent family, app), for first-seen sets.
/// SipHash-2-4 (a keyed PRF, several times cheaper than BLAKE3 on short inputs) - these run up
/// to four times per login.
#[allow(deprecated)] // `SipHasher` is deprecated as a HashMap hasher, not as SipHash-2-4.
pub(crate) fn value_tag(key: &TagKey, what: u8, value: &[u8]) -> u32 {
    use std::hash::Hasher as _;
    let mut h = std::hash::SipHasher::new_with_keys(key.0, key.1);
    h.write_u8(what);
    h.write(value);
    h.finish() as u32
}

pub(crate) fn kind_byte(kind: EntityKind) -> u8 {
    match kind {
        EntityKind::User => 1,
        EntityKind::Ip => 2,
        EntityKind::Token => 3,
        EntityKind::App => 4,
        EntityKind::Org => 5,
        EntityKind::Unknown => 0,
    }
}

/// The keys are already uniform hashes: use their first 8 bytes instead of hashing again.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `EntityKey`'s array reaches here (as one 16-byte write after its length prefix).
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b).rotate_left(5);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

pub(crate) type KeyMap<V> = HashMap<EntityKey, V, BuildHasherDefault<KeyHasher>>;

/// Recent evidence: event ids (16 bytes, from their hex form) and input lines. Bounded.
/// Written as `[["<32 hex>", line], ...]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<(String, u64)>", into = "Vec<(String, u64)>")]
pub(crate) struct Evidence {
    /// Oldest first; at most the configured number of entries. 24 bytes each.
    items: Vec<([u8; 16], u64)>,
}

impl From<Evidence> for Vec<(String, u64)> {
    fn from(e: Evidence) -> Self {
        e.items
            .iter()
            .map(|(id, line)| (hex::encode(id), *line))
            .collect()
    }
}

impl From<Vec<(String, u64)>> for Evidence {
    fn from(v: Vec<(String, u64)>) -> Self {
        let items = v
            .into_iter()
            .filter_map(|(id, line)| {
                let mut b = [0u8; 16];
                hex::decode_to_slice(&id, &mut b).ok().map(|_| (b, line))
            })
            .collect();
        Evidence { items }
    }
}

/// Marker for "no input line" (lines are 1-based).
const NO_LINE: u64 = 0;

impl Evidence {
    pub fn push(&mut self, event: &Event, max: usize) {
        if max == 0 {
            return;
        }
        let mut id = [0u8; 16];
        // Ids are 32 hex digits by construction; anything else is kept as zeros rather than dropped.
        let _ = hex::decode_to_slice(event.id().as_str(), &mut id);
        if self.items.len() >= max {
            let excess = self.items.len() + 1 - max;
            self.items.drain(..excess);
        }
        self.items.push((id, event.line.unwrap_or(NO_LINE)));
    }

    pub fn extend_from(&mut self, other: &Evidence, max: usize) {
        for &item in &other.items {
            if !self.items.contains(&item) {
                self.items.push(item);
            }
        }
        if self.items.len() > max {
            let excess = self.items.len() - max;
            self.items.drain(..excess);
        }
    }

    pub fn clear(&mut self) {
        self.items = Vec::new();
    }

    /// Keep the newest `n` items: when a window counts `n` events, older evidence is from
    /// before it (an alert must not point the analyst at last week's events).
    pub fn keep_last(&mut self, n: u64) {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if self.items.len() > n {
            let excess = self.items.len() - n;
            self.items.drain(..excess);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Append to an alert's `lines` / `event_ids` (oldest first), skipping ids already there.
    pub fn write_to(&self, alert: &mut perimeter_model::Alert) {
        for &(id, line) in &self.items {
            let hex = hex::encode(id);
            if alert.event_ids.contains(&hex) {
                continue;
            }
            if line != NO_LINE {
                alert.lines.push(line);
            }
            alert.event_ids.push(hex);
        }
    }
}

/// A count window plus a learned rate: what the rate-based detectors keep per entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RateState {
    pub window: WindowCounter,
    pub baseline: RateBaseline,
    pub evidence: Evidence,
}

/// How one rate detector reads its window: the thresholds `RateState::observe_burst` applies.
pub(crate) struct BurstRule {
    pub window_seconds: u64,
    /// Absolute floor: fewer events in the window never alert.
    pub min_events: u64,
    /// Prior rate while the entity warms up (and the floor of the learned one).
    pub prior_per_hour: f64,
    /// Whether the entity's own history is used (else the prior alone).
    pub learned: bool,
    pub max_p_value: f64,
    /// Evidence is kept only once the window count passes this (0: always).
    pub evidence_after: u64,
}

impl RateState {
    /// Count one event in the window and the baseline, keep it as evidence per the rule, and
    /// score the window once it reaches the floor. `Some((count, score))` when it is surprising
    /// enough to report.
    pub fn observe_burst(
        &mut self,
        ctx: &super::Ctx<'_>,
        rule: &BurstRule,
    ) -> Option<(u64, super::baseline::Score)> {
        let t = ctx.t;
        self.baseline.observe(t, 1, ctx.params);
        let n = self.window.add(t, rule.window_seconds, 1);
        if n > rule.evidence_after {
            self.evidence.push(ctx.event, ctx.max_evidence);
        }
        self.evidence.keep_last(n);
        if n < rule.min_events {
            return None;
        }
        let score = self.baseline.score(
            t,
            rule.window_seconds,
            n,
            rule.prior_per_hour,
            rule.learned,
            1.0,
            ctx.params,
        );
        if score.p_value > rule.max_p_value {
            return None;
        }
        Some((n, score))
    }

    pub fn new(t: i64) -> RateState {
        RateState {
            window: WindowCounter::default(),
            baseline: RateBaseline::new(t),
            evidence: Evidence::default(),
        }
    }
}

/// Everything known about one entity. Features are boxed and allocated on first use, so an
/// entity seen once costs little more than its map slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EntityState {
    pub kind: EntityKind,
    /// Event time (Unix seconds) the entity was first / last seen.
    pub first_seen: i64,
    pub last_seen: i64,
    #[serde(default)]
    pub auth_failures: Option<Box<AuthFailureState>>,
    #[serde(default)]
    pub brute_force: Option<Box<BruteForceState>>,
    #[serde(default)]
    pub spray: Option<Box<SprayState>>,
    #[serde(default)]
    pub rate_limit: Option<Box<RateState>>,
    #[serde(default)]
    pub volume: Option<Box<RateState>>,
    #[serde(default)]
    pub actor: Option<Box<ActorState>>,
    #[serde(default)]
    pub seen: Option<Box<SeenValues>>,
}

impl EntityState {
    pub fn new(kind: EntityKind, t: i64) -> EntityState {
        EntityState {
            kind,
            first_seen: t,
            last_seen: t,
            auth_failures: None,
            brute_force: None,
            spray: None,
            rate_limit: None,
            volume: None,
            actor: None,
            seen: None,
        }
    }

    /// Hours since first seen, at `t`.
    pub fn age_hours(&self, t: i64) -> u64 {
        ((t - self.first_seen).max(0) / 3600) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_secret_tenant_kind_and_value() {
        let k1 = [7u8; 32];
        let k2 = [8u8; 32];
        let a = EntityKey::derive(&k1, "acme", EntityKind::User, "alice@example.com");
        assert_eq!(
            a,
            EntityKey::derive(&k1, "acme", EntityKind::User, "alice@example.com")
        );
        assert_ne!(
            a,
            EntityKey::derive(&k2, "acme", EntityKind::User, "alice@example.com")
        );
        assert_ne!(
            a,
            EntityKey::derive(&k1, "globex", EntityKind::User, "alice@example.com")
        );
        assert_ne!(
            a,
            EntityKey::derive(&k1, "acme", EntityKind::Ip, "alice@example.com")
        );
        assert_eq!(EntityKey::from_hex(&a.to_hex()), Some(a));
        assert!(!a.to_hex().contains("alice"));
    }

    #[test]
    fn per_entity_cost_stays_small() {
        use std::mem::size_of;
        // The map slot: 16-byte key + state; features are boxed and allocated on first use.
        assert!(
            size_of::<EntityState>() <= 80,
            "{}",
            size_of::<EntityState>()
        );
        assert!(size_of::<RateState>() <= 112, "{}", size_of::<RateState>());
        assert_eq!(size_of::<([u8; 16], u64)>(), 24);
    }

    #[test]
    fn evidence_keeps_only_the_newest() {
        let mut ev = Evidence::default();
        for i in 0..30u64 {
            let raw = serde_json::json!({ "n": i });
            let rec = perimeter_model::RawRecord {
                source: "okta".into(),
                tenant: "t".into(),
                received_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
                line: Some(i + 1),
                raw: perimeter_model::raw_from_serde(&raw),
            };
            ev.push(&Event::new("okta", rec, Default::default()), 20);
        }
        assert_eq!(ev.len(), 20);
        let mut alert = perimeter_model::Alert::new(
            "r",
            "t",
            perimeter_model::Severity::Low,
            perimeter_model::DetectorKind::Ueba,
            "okta",
            "t",
            chrono::DateTime::from_timestamp(0, 0).unwrap(),
            "e",
            EntityKind::User,
        );
        ev.write_to(&mut alert);
        assert_eq!(alert.lines.first(), Some(&11));
        assert_eq!(alert.lines.last(), Some(&30));
        assert_eq!(alert.event_ids.len(), 20);
        assert_eq!(alert.event_ids[0].len(), 32);
        let json = serde_json::to_string(&ev).unwrap();
        let back: Evidence = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ev);
    }
}
