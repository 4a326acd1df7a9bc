//! Events and dead letters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use crate::Ecs;

/// A raw vendor record as parsed: sonic-rs's arena-allocated DOM. It parses, walks and drops
/// several times faster than `serde_json::Value` (one arena instead of a heap node per value and
/// a B-tree per object), which is what lets the pipeline run at hundreds of thousands of events
/// per second per core. Object keys keep their input order.
pub type RawJson = sonic_rs::Value;

/// A `serde_json::Value` as a raw record (tests, and API bodies that arrive as serde values).
pub fn raw_from_serde(v: &serde_json::Value) -> RawJson {
    sonic_rs::to_value(v).unwrap_or_default()
}

/// A raw record as a `serde_json::Value` (output documents, alert evidence).
pub fn raw_to_serde(v: &RawJson) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Stable event id: the first 16 bytes of BLAKE3(source NUL raw JSON), hex-encoded.
/// Same source + same raw content => same id, so replays are idempotent downstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub String);

impl EventId {
    /// Derive the id from the source name and the raw record's content.
    ///
    /// The content is encoded structurally (a type tag per value, varint lengths before strings
    /// and containers, object keys in input order) into a reused buffer and hashed in one call. Equal values give equal
    /// bytes, whatever their JSON formatting (whitespace, escapes) was; no escaping or number
    /// formatting is done, which made id derivation the slowest step of normalization when it
    /// hashed the JSON text.
    ///
    /// With a key set ([`key_ids`]) the hash is keyed.
    pub fn derive(source: &str, raw: &RawJson) -> EventId {
        Self::derive_with(source, raw, ID_KEY.get())
    }

    /// [`Self::derive`] keyed with `key` (none: unkeyed), whatever this process's key is: the
    /// id another process with that key gives the record.
    pub fn derive_with(source: &str, raw: &RawJson, key: Option<&[u8; 32]>) -> EventId {
        let digest = with_encoding(source, raw, |bytes| {
            hasher_with(key).update(bytes).finalize()
        });
        EventId(hex16(&digest.as_bytes()[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key of the event and alert ids this process derives, when the deployment has a secret key
/// of its own ([`key_ids`]).
static ID_KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// Key every event and alert id this process derives with `key` (one derived from the
/// deployment's secret masking key). Unkeyed, an id is a plain hash of the record as received,
/// before masking: whoever reads a stored event, an export or a webhook could put guesses where
/// a value was masked (a password, a card number's hidden digits, the address behind a
/// pseudonym) and compare ids until one matched (QA: a card number from `****0950` in seconds).
/// Set once, before any id is derived; `false` when another key was set before (it stays).
pub fn key_ids(key: [u8; 32]) -> bool {
    *ID_KEY.get_or_init(|| key) == key
}

/// The hasher of event and alert ids: keyed when [`key_ids`] set a key.
pub(crate) fn id_hasher() -> blake3::Hasher {
    hasher_with(ID_KEY.get())
}

/// A BLAKE3 hasher keyed with `key`, unkeyed without one.
pub fn hasher_with(key: Option<&[u8; 32]>) -> blake3::Hasher {
    match key {
        Some(key) => blake3::Hasher::new_keyed(key),
        None => blake3::Hasher::new(),
    }
}

/// `f` applied to the structural encoding of `source` and `raw` (see [`EventId::derive`]), built
/// in a reused per-thread buffer.
fn with_encoding<T>(source: &str, raw: &RawJson, f: impl FnOnce(&[u8]) -> T) -> T {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let run = |buf: &mut Vec<u8>| {
        buf.clear();
        encode_str(buf, source);
        encode_value(buf, raw);
        let out = f(buf);
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        out
    };
    BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => run(&mut buf),
        Err(_) => run(&mut Vec::new()),
    })
}

fn encode_str(buf: &mut Vec<u8>, s: &str) {
    encode_len(buf, s.len());
    buf.extend_from_slice(s.as_bytes());
}

/// LEB128 varint: audit records are mostly short keys and strings, so one byte per length
/// instead of eight keeps the hashed buffer (and the hash's time) near the record's own size.
fn encode_len(buf: &mut Vec<u8>, len: usize) {
    let mut v = len as u64;
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn encode_value(buf: &mut Vec<u8>, v: &RawJson) {
    use sonic_rs::{JsonNumberTrait, ValueRef};
    match crate::raw_prelude::node_view(v) {
        ValueRef::Null => buf.push(0),
        ValueRef::Bool(b) => buf.extend_from_slice(&[1, b as u8]),
        ValueRef::Number(n) => {
            if let Some(i) = n.as_i64() {
                buf.push(2);
                buf.extend_from_slice(&i.to_le_bytes());
            } else if let Some(u) = n.as_u64() {
                buf.push(3);
                buf.extend_from_slice(&u.to_le_bytes());
            } else {
                buf.push(4);
                buf.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_bits().to_le_bytes());
            }
        }
        ValueRef::String(s) => {
            buf.push(5);
            encode_str(buf, s);
        }
        ValueRef::Array(a) => {
            buf.push(6);
            encode_len(buf, a.len());
            for x in a.iter() {
                encode_value(buf, x);
            }
        }
        ValueRef::Object(m) => {
            buf.push(7);
            encode_len(buf, m.len());
            for (k, x) in m.iter() {
                encode_str(buf, k);
                encode_value(buf, x);
            }
        }
    }
}

fn hex16(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// One vendor record as it arrived, before normalization.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// Source name (`okta`, `github`, ...) or `auto` when the normalizer must guess.
    pub source: String,
    pub tenant: String,
    pub received_at: DateTime<Utc>,
    /// 1-based input line (file/stdin input) or offset (bus input), when known.
    pub line: Option<u64>,
    pub raw: RawJson,
}

/// A normalized event: the raw vendor JSON, unchanged, plus its ECS view.
/// How far after its receipt an event may be dated (vendor clocks run a little ahead).
pub const MAX_FUTURE_SKEW: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// Events dated before this are not SaaS audit records (epoch-zero defaults, unit mix-ups).
pub const EARLIEST_EVENT_TIME: DateTime<Utc> =
    DateTime::from_timestamp_nanos(946_684_800_000_000_000);

/// Whether a vendor time can be true of a record received at `received_at`: not more than
/// [`MAX_FUTURE_SKEW`] after it, not before [`EARLIEST_EVENT_TIME`] (ADR 012). Pollers apply
/// the same rule to the record times their checkpoints move to.
pub fn is_plausible_event_time(time: DateTime<Utc>, received_at: DateTime<Utc>) -> bool {
    time >= EARLIEST_EVENT_TIME && time <= received_at + MAX_FUTURE_SKEW
}

#[derive(Debug, Clone)]
pub struct Event {
    /// Derived from `source` and `raw` on first use ([`Event::id`]): hashing the whole record is
    /// the largest part of normalizing one, and an event that is neither kept nor cited by an
    /// alert (the `detect` command drops those) never needs it.
    id: OnceLock<EventId>,
    pub source: String,
    pub tenant: String,
    pub received_at: DateTime<Utc>,
    /// Event time: the vendor's timestamp; `received_at` when the vendor gave none, or one that
    /// cannot be true (see [`Event::new`]).
    pub timestamp: DateTime<Utc>,
    /// The vendor's timestamp could not be true and `received_at` is used instead (the vendor's
    /// value stays in `raw`).
    pub timestamp_adjusted: bool,
    /// 1-based input line or bus offset, when known. Not part of the id.
    pub line: Option<u64>,
    pub ecs: Ecs,
    /// The record as received. Change it only through [`Event::raw_mut`], which fixes the id
    /// first, so the id stays that of the content as received (masking must not change it).
    pub raw: RawJson,
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.id() == other.id()
            && self.source == other.source
            && self.tenant == other.tenant
            && self.received_at == other.received_at
            && self.timestamp == other.timestamp
            && self.line == other.line
            && self.ecs == other.ecs
            && self.raw == other.raw
    }
}

impl Event {
    /// Build an event from a raw record and its ECS view. The id is derived on first use.
    ///
    /// A vendor timestamp more than [`MAX_FUTURE_SKEW`] after the record was received, or before
    /// [`EARLIEST_EVENT_TIME`], cannot be true (a clock far off, a unit mix-up, a zero default):
    /// the receive time is used instead and `timestamp_adjusted` is set. Event time drives the
    /// detectors' windows and housekeeping: one record dated in the year 2999 would otherwise
    /// make every later event "late" for correlations and age every behavioural baseline out,
    /// for all tenants; and it would sort first in every search, forever.
    pub fn new(source: impl Into<String>, record: RawRecord, ecs: Ecs) -> Event {
        let source = source.into();
        let plausible = |t: &DateTime<Utc>| is_plausible_event_time(*t, record.received_at);
        let timestamp_adjusted = ecs.timestamp.is_some_and(|t| !plausible(&t));
        let timestamp = ecs
            .timestamp
            .filter(plausible)
            .unwrap_or(record.received_at);
        Event::from_parts(
            OnceLock::new(),
            source,
            record,
            ecs,
            timestamp,
            timestamp_adjusted,
        )
    }

    /// The event of `record` with its id (set or to derive) and its judged time.
    fn from_parts(
        id: OnceLock<EventId>,
        source: String,
        record: RawRecord,
        mut ecs: Ecs,
        timestamp: DateTime<Utc>,
        timestamp_adjusted: bool,
    ) -> Event {
        ecs.timestamp = Some(timestamp);
        Event {
            id,
            source,
            tenant: record.tenant,
            received_at: record.received_at,
            timestamp,
            timestamp_adjusted,
            line: record.line,
            ecs,
            raw: record.raw,
        }
    }

    /// The stable id: BLAKE3 of the source and the raw record as received (see
    /// [`EventId::derive`]), computed once.
    pub fn id(&self) -> &EventId {
        self.id
            .get_or_init(|| EventId::derive(&self.source, &self.raw))
    }

    /// An event read back from storage, as it was stored: with the id it was stored under (it
    /// was derived from the record as received, and storage keeps the record masked, so it
    /// cannot be derived again from what was read), and its time and adjusted-time mark as
    /// they were judged on arrival rather than judged again.
    pub fn stored(
        record: RawRecord,
        ecs: Ecs,
        id: EventId,
        timestamp: DateTime<Utc>,
        timestamp_adjusted: bool,
    ) -> Event {
        let source = record.source.clone();
        Event::from_parts(
            OnceLock::from(id),
            source,
            record,
            ecs,
            timestamp,
            timestamp_adjusted,
        )
    }

    /// The raw record for changing it (masking). The id is fixed first, from the content as
    /// received.
    pub fn raw_mut(&mut self) -> &mut RawJson {
        self.id();
        &mut self.raw
    }

    /// A 64-bit fingerprint of the source and raw content under a keyed hasher (e.g. a
    /// per-process random one): equal content gives equal fingerprints for the same hasher, as
    /// with [`Event::id`], at a fraction of its cost. For in-memory duplicate checks; with a
    /// secret random key, input cannot be crafted to collide with other input.
    pub fn fingerprint(&self, hasher: &impl std::hash::BuildHasher) -> u64 {
        with_encoding(&self.source, &self.raw, |bytes| hasher.hash_one(bytes))
    }

    /// The output document: ECS fields nested at the top level, plus `event.id`, `perimeter`
    /// metadata and the raw record under `raw`. This is what `normalize` prints and the store keeps.
    pub fn to_output_json(&self) -> serde_json::Value {
        let mut doc = self.ecs.to_json();
        let obj = doc.as_object_mut().expect("ecs json is an object");
        let ev = obj
            .entry("event")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(ev) = ev.as_object_mut() {
            ev.insert("id".into(), self.id().0.clone().into());
            ev.insert("module".into(), self.source.clone().into());
            ev.insert(
                "ingested".into(),
                self.received_at
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    .into(),
            );
        }
        obj.insert(
            "perimeter".into(),
            if self.timestamp_adjusted {
                serde_json::json!({"source": self.source, "tenant": self.tenant, "line": self.line,
                    "timestamp_adjusted": true})
            } else {
                serde_json::json!({"source": self.source, "tenant": self.tenant, "line": self.line})
            },
        );
        obj.insert("raw".into(), raw_to_serde(&self.raw));
        doc
    }
}

impl Event {
    /// The event an output document ([`Event::to_output_json`], what the store's indexes keep)
    /// was made from: `None` when it lacks the id, source, tenant, times or raw record.
    pub fn from_output_json(doc: &serde_json::Value) -> Option<Event> {
        Event::from_output_json_with_raw(doc, raw_from_serde(doc.get("raw")?))
    }

    /// [`Self::from_output_json`] with the raw record given instead of read from `doc["raw"]`:
    /// turning the document's `raw` into a [`RawJson`] is most of the work, and a caller that
    /// only writes the record out again (a Parquet export, which writes the raw record's text
    /// as the stored document holds it) passes an empty one.
    pub fn from_output_json_with_raw(doc: &serde_json::Value, raw: RawJson) -> Option<Event> {
        let meta = &doc["perimeter"];
        let time = |v: &serde_json::Value| v.as_str()?.parse::<DateTime<Utc>>().ok();
        let timestamp = time(&doc["@timestamp"])?;
        let record = RawRecord {
            source: meta["source"].as_str()?.to_string(),
            tenant: meta["tenant"].as_str()?.to_string(),
            received_at: time(&doc["event"]["ingested"])?,
            line: meta["line"].as_u64(),
            raw,
        };
        Some(Event::stored(
            record,
            Ecs::from_json(doc),
            EventId(doc["event"]["id"].as_str()?.to_string()),
            timestamp,
            meta["timestamp_adjusted"].as_bool().unwrap_or(false),
        ))
    }
}

/// Input that could not be processed, kept with the reason instead of vanishing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// 1-based input line or bus offset, when known.
    pub line: Option<u64>,
    pub source: String,
    pub tenant: String,
    pub received_at: DateTime<Utc>,
    /// Why it was rejected (`invalid JSON at column 17: ...`, `line longer than 1048576 bytes`).
    pub reason: String,
    /// A masked excerpt of the input (bounded length), for the analyst to see what came in.
    pub excerpt: String,
    /// Digest of the whole masked input ([`DeadLetter::digest_of`]): what tells two inputs
    /// apart when their excerpts are the same. Absent in dead letters stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_digest: Option<String>,
}

impl DeadLetter {
    /// The [`DeadLetter::input_digest`] of a (masked) input.
    pub fn digest_of(masked_input: &str) -> String {
        hex16(&blake3::hash(masked_input.as_bytes()).as_bytes()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::json;

    /// What the store keeps of an event gives the event back: every ECS field, the id (which
    /// cannot be derived again from a masked record), times, line and the adjusted-time mark.
    #[test]
    fn an_output_document_reads_back_as_its_event() {
        let received = Utc::now();
        let mut ecs = Ecs {
            timestamp: Some(received + chrono::Duration::days(400)),
            event_action: Some("user.session.start".into()),
            event_outcome: crate::Outcome::Failure,
            event_category: vec!["authentication".into()],
            event_type: vec!["start".into(), "info".into()],
            user_name: Some("dana".into()),
            user_email: Some("dana@acme.example".into()),
            user_id: Some("00u1".into()),
            user_target_name: Some("sam".into()),
            user_target_email: Some("sam@acme.example".into()),
            user_target_id: Some("00u2".into()),
            source_ip: Some("203.0.113.9".into()),
            source_geo_country_iso_code: Some("NL".into()),
            source_as_number: Some(64500),
            user_agent_original: Some("curl/8".into()),
            organization_id: Some("org1".into()),
            cloud_account_id: Some("123456789012".into()),
            ..Ecs::default()
        };
        ecs.fill_related();
        let record = RawRecord {
            source: "okta".into(),
            tenant: "acme".into(),
            received_at: received,
            line: Some(7),
            raw: json!({"uuid": "u-1", "nested": {"list": [1, "two", null]}}),
        };
        let event = Event::new("okta", record, ecs);
        assert!(
            event.timestamp_adjusted,
            "a time 400 days ahead is replaced"
        );
        let doc = event.to_output_json();
        let back = Event::from_output_json(&doc).expect("reads back");
        assert_eq!(back, event);
        assert_eq!(back.ecs, event.ecs);
        assert!(back.timestamp_adjusted);
        let mut without_raw = doc.clone();
        without_raw.as_object_mut().unwrap().remove("raw");
        assert!(Event::from_output_json(&without_raw).is_none());
    }

    fn event(source: &str, raw: RawJson) -> Event {
        let record = RawRecord {
            source: source.into(),
            tenant: "t".into(),
            received_at: Utc::now(),
            line: Some(1),
            raw,
        };
        Event::new(source, record, Ecs::default())
    }

    #[test]
    fn the_lazy_id_is_that_of_the_content_as_received() {
        let raw = json!({"user": "alice", "password": "hunter2"});
        let expected = EventId::derive("okta", &raw);
        assert_eq!(event("okta", raw.clone()).id(), &expected);
        // Changing the record through raw_mut (as masking does) keeps the id of the original.
        let mut e = event("okta", raw.clone());
        *e.raw_mut() = json!({"user": "alice", "password": "[REDACTED:key]"});
        assert_eq!(e.id(), &expected);
        assert_ne!(
            EventId::derive("okta", &e.raw),
            expected,
            "the changed content has another id"
        );
    }

    #[test]
    fn fingerprints_follow_content_not_formatting() {
        let hasher = std::hash::RandomState::new();
        let parse = |s: &str| sonic_rs::from_str::<RawJson>(s).unwrap();
        let fp = |source: &str, text: &str| event(source, parse(text)).fingerprint(&hasher);
        let a = fp("okta", r#"{"a": [1, "x"], "b": {"c": null}}"#);
        assert_eq!(a, fp("okta", r#"{"a":[1,"\u0078"],"b":{"c":null}}"#));
        assert_ne!(a, fp("github", r#"{"a": [1, "x"], "b": {"c": null}}"#));
        assert_ne!(a, fp("okta", r#"{"a": [1, "y"], "b": {"c": null}}"#));
        assert_ne!(a, fp("okta", r#"{"a": ["1", "x"], "b": {"c": null}}"#));
        // Lengths are hashed, so moving bytes between neighbouring strings changes it.
        assert_ne!(fp("okta", r#"{"ab": "c"}"#), fp("okta", r#"{"a": "bc"}"#));
    }

    /// The id of a fixed record, pinned: stored events are deduplicated by id, so a replay after
    /// an upgrade is only recognised if the encoding and hash never change. The record holds
    /// every kind of value, a string longer than 127 bytes (a two-byte length) and non-ASCII
    /// text; a failure here means ids changed, which needs a migration, not a new pin.
    #[test]
    fn the_id_of_a_fixed_record_never_changes() {
        let text = format!(
            r#"{{"s": "é ✓ 𐀀", "i": -7, "u": 18446744073709551615, "f": 2.5, "t": true,
                "n": null, "a": [1, "x", [], {{}}], "o": {{"k": {{"deep": ["z"]}}}},
                "long": "{}"}}"#,
            "y".repeat(300)
        );
        let raw: RawJson = sonic_rs::from_str(&text).unwrap();
        assert_eq!(
            EventId::derive("okta", &raw).0,
            "3aa930e869f0b75493d311e103f8857e"
        );
    }

    #[test]
    fn id_is_stable_and_content_addressed() {
        let a = EventId::derive("okta", &json!({"a": 2, "b": 1}));
        let b = EventId::derive("okta", &json!({"a": 2, "b": 1}));
        let c = EventId::derive("github", &json!({"a": 2, "b": 1}));
        let d = EventId::derive("okta", &json!({"a": 2, "b": 2}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a.0.len(), 32);
    }

    #[test]
    fn id_ignores_formatting_but_not_content() {
        let pretty: RawJson =
            sonic_rs::from_str("{\n  \"z\": [1, {\"k\": \"v\\u00e9\"}],\n  \"a\": null\n}")
                .unwrap();
        let compact: RawJson = sonic_rs::from_str(r#"{"z":[1,{"k":"vé"}],"a":null}"#).unwrap();
        assert_eq!(
            EventId::derive("okta", &pretty),
            EventId::derive("okta", &compact)
        );
        // Boundaries are encoded: moving a character between key and value, or between the
        // source name and the content, changes the id; so does a type change.
        let pairs = [
            (("okta", json!({"ab": "c"})), ("okta", json!({"a": "bc"}))),
            (("okta", json!({"a": 1})), ("okta", json!({"a": "1"}))),
            (
                ("okta", json!({"a": [1, 2]})),
                ("okta", json!({"a": [[1], 2]})),
            ),
            (("okta", json!({"a": 1.5})), ("okta", json!({"a": 1}))),
            (("okt", json!("a")), ("ok", json!("ta"))),
        ];
        for ((s1, v1), (s2, v2)) in pairs {
            assert_ne!(
                EventId::derive(s1, &v1),
                EventId::derive(s2, &v2),
                "{v1} vs {v2}"
            );
        }
    }
}
