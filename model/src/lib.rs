//! Perimeter's shared model: the [`Event`] every stage passes along, the [`Alert`] detectors
//! produce, [`DeadLetter`]s for input that could not be processed, and one trait per stage
//! boundary ([`Normalizer`], [`Masker`], [`Detector`]).
//!
//! Guarantees:
//! - an [`EventId`] is a pure function of source name and raw content, so a replayed event gets the
//!   same id and stores can stay idempotent;
//! - nothing here touches IO (apart from [`resolve_secret`] reading the variable or file a
//!   secret reference names, when called), a runtime, or a heavy dependency: every crate may
//!   import this one.

mod alert;
mod ecs;
mod event;
mod json_text;
pub mod metrics;
mod repeated_keys;
mod secret;
mod switches;
mod time;

pub use alert::{Alert, AlertStatus, DetectorKind, EntityKind, Severity};
pub use ecs::{Ecs, EcsValue, Outcome, ECS_FIELDS};
pub use event::{
    hasher_with, is_plausible_event_time, key_ids, raw_from_serde, raw_to_serde, DeadLetter, Event,
    EventId, RawJson, RawRecord,
};
pub use json_text::{
    json_nesting_exceeds, parse_with_lone_surrogates, without_lone_surrogates, write_json_str,
    JsonStrings, MAX_JSON_NESTING,
};
pub use metrics::Metrics;
pub use repeated_keys::resolve_repeated_keys;
pub use secret::{is_secret_reference, resolve_secret, SecretError};
pub use sonic_rs;
pub use switches::{apply_switch, RuleSwitch, RuleSwitches, SwitchedOff, SwitchedOffRules};
pub use time::{
    parse_duration, parse_time_bound, parse_time_delta, parse_timestamp, parse_timestamp_str,
    without_leap_second, DurationError, TimeBoundError, TimestampError,
};

/// Whether `value` can name a tenant, a token or a destination: 1 to 128 characters from
/// `[A-Za-z0-9-_.@]`. One rule for the API's tokens and the spool's `tenant=<name>` directories.
pub fn is_valid_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// A plausible source name: `[a-z0-9_]{1,64}` (what logsource products map to, what the
/// normalizers and mappings are named). The normalizers read records of any other name as dead
/// letters; the Kafka bus refuses a message naming one.
pub fn is_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Turns one raw vendor record into an [`Event`] with a normalized ECS view. Pure: no IO, no state.
pub trait Normalizer: Send + Sync {
    /// The source name this normalizer handles (`okta`, `github`, ...).
    fn source(&self) -> &str;
    /// The ECS view of one raw record (borrowed: on error the caller still owns the record).
    fn normalize_ecs(&self, raw: &RawJson) -> Result<Ecs, NormalizeError>;
    /// Normalize one record. The raw JSON is kept unchanged in the returned event.
    fn normalize(&self, record: RawRecord) -> Result<Event, NormalizeError> {
        let ecs = self.normalize_ecs(&record.raw)?;
        Ok(Event::new(self.source(), record, ecs))
    }
}

/// Masks secrets and PII in an event in place. Pure apart from its counters.
pub trait Masker: Send + Sync {
    /// Mask raw and normalized fields; returns how many values were masked.
    fn mask(&self, event: &mut Event) -> MaskStats;
    /// Mask secrets inside free text (dead-letter excerpts, alert explanations, log lines).
    fn mask_text(&self, text: &str) -> String;
    /// Mask an arbitrary JSON value (alert evidence, matched fields) in place.
    fn mask_value(&self, value: &mut serde_json::Value) -> MaskStats;
}

/// Counts of what a masker did: counted, never logged in clear.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaskStats {
    /// Values masked because their key name is sensitive (`password`, `token`, ...).
    pub by_key: u64,
    /// Values masked because their content matched a secret/PII pattern.
    pub by_pattern: u64,
}

impl MaskStats {
    pub fn total(&self) -> u64 {
        self.by_key + self.by_pattern
    }
    pub fn add(&mut self, other: MaskStats) {
        self.by_key += other.by_key;
        self.by_pattern += other.by_pattern;
    }
}

/// A stateful detector: sees events (with clear values, in memory only) in event-time order as
/// far as the input allows, and appends alerts. Alerts are masked by the pipeline afterwards.
pub trait Detector: Send {
    /// Short stable name (`sigma`, `auth_failure_burst`, ...).
    fn name(&self) -> &str;
    /// Inspect one event and push any alerts it completes.
    fn detect(&mut self, event: &Event, alerts: &mut Vec<Alert>);
    /// Called at end of input (or on shutdown): emit alerts that wait on a window closing.
    fn flush(&mut self, _alerts: &mut Vec<Alert>) {}
}

/// Why a raw record could not be normalized.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum NormalizeError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    MissingField(String),
    #[error("field `{field}` has the wrong type: expected {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("bad timestamp in `{field}`: {reason}")]
    BadTimestamp { field: String, reason: String },
    #[error("unknown source `{0}`")]
    UnknownSource(String),
    #[error(
        "could not detect the source from the event's shape (name it: `--source <name>`, `/ingest/<name>`, or `json` for plain JSON; a mapping file adds a vendor)"
    )]
    UndetectedSource,
    #[error("{0}")]
    Other(String),
}

/// The traits that give [`RawJson`] its accessors (`get`, `as_str`, `as_object`, ...), for
/// `use perimeter_model::raw_prelude::*`.
pub mod raw_prelude {
    pub use sonic_rs::{
        JsonContainerTrait, JsonNumberTrait, JsonType, JsonValueMutTrait, JsonValueTrait, ValueRef,
    };

    /// `v.as_ref()`, read the cheap way for the common kinds. sonic-rs's `as_ref` is a call that
    /// decodes the node's kind once to build its view and, for an object or array, a second time
    /// to cast it; `as_str`, `as_object` and `as_array` inline into one kind test each. Walks
    /// that visit every node of every record (masking, the event id, the store's text, the
    /// repeated-key check) read mostly strings, then objects and arrays.
    #[inline(always)]
    pub fn node_view(v: &crate::RawJson) -> ValueRef<'_> {
        if let Some(s) = v.as_str() {
            ValueRef::String(s)
        } else if let Some(o) = v.as_object() {
            ValueRef::Object(o)
        } else if let Some(a) = v.as_array() {
            ValueRef::Array(a)
        } else {
            v.as_ref()
        }
    }
}

/// An error and its causes on one line (`error sending request: connection refused`): reqwest's
/// own text stops at the outermost layer, which says nothing about what went wrong.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::raw_prelude::*;
    use super::{raw_from_serde, RawJson};

    /// Every node of `v`, depth first, with `v` itself first.
    fn nodes(v: &RawJson) -> Vec<&RawJson> {
        let mut all = vec![v];
        if let Some(a) = v.as_array() {
            all.extend(a.iter().flat_map(nodes));
        } else if let Some(o) = v.as_object() {
            all.extend(o.iter().flat_map(|(_, x)| nodes(x)));
        }
        all
    }

    /// `node_view` reads each kind of node as sonic-rs's `as_ref` does, in a parsed record (its
    /// nodes live in the parser's DOM) and in a built one (owned nodes), empty containers and
    /// every number kind included.
    #[test]
    fn node_view_reads_every_kind_of_node_as_as_ref_does() {
        let text = r#"{"s":"x","e":"","u":18446744073709551615,"i":-2,"f":1.5,"t":true,
            "n":null,"a":[1,"y",[],{}],"o":{"k":{"deep":["z"]}},"ea":[],"eo":{}}"#;
        let parsed: RawJson = sonic_rs::from_str(text).unwrap();
        let built = raw_from_serde(&serde_json::from_str(text).unwrap());
        for record in [&parsed, &built] {
            let all = nodes(record);
            assert_eq!(all.len(), 19, "every node is visited");
            for v in all {
                assert_eq!(format!("{:?}", node_view(v)), format!("{:?}", v.as_ref()));
                if let (ValueRef::String(a), ValueRef::String(b)) = (node_view(v), v.as_ref()) {
                    assert_eq!(a.as_ptr(), b.as_ptr(), "the same text, not a copy");
                }
            }
        }
    }
}
