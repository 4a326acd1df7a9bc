//! Normalization: vendor audit-log records -> [`perimeter_model::Event`] with ECS fields.
//!
//! - Built-in normalizers, one per SaaS (`okta`, `github`, `google_workspace`, `slack`, `m365`,
//!   `aws_cloudtrail`, `onepassword`) and `json` (plain objects, ECS-named keys only).
//! - Declarative [`mapping`]s (TOML) for other sources; `zoom`, `box`, `duo`, `dropbox`,
//!   `atlassian`, `google_workspace_alerts`, `salesforce`, `workday`, `pagerduty`, `tines`, `terraform_cloud`, `torq`,
//!   `oomnitza`, `salesforce_marketing_cloud` and `launchdarkly` are bundled, more load from a directory.
//! - [`NormalizerRegistry`] looks normalizers up by name and guesses the source from a record's
//!   shape (`--source auto`) with a few key lookups per record.
//! - [`split_records`] turns one parsed input value (an API page, a CloudTrail file, a Google
//!   Workspace activity with several events) into individual records.
//!
//! Guarantees: a normalizer never panics on any JSON input (proptest-checked); bad input gives a
//! [`NormalizeError`] naming the field; the raw record is kept unchanged in the event.

mod aws_cloudtrail;
mod fields;
mod github;
mod google_workspace;
mod json;
mod m365;
pub mod mapping;
mod okta;
mod onepassword;
mod slack;

use std::path::Path;

use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson as Value;
use perimeter_model::{is_source_name, Ecs, Event, NormalizeError, Normalizer, RawRecord};

pub use aws_cloudtrail::CloudTrailNormalizer;
pub use github::GithubAuditLogNormalizer;
pub use google_workspace::GoogleWorkspaceActivityNormalizer;
pub use json::PlainJsonNormalizer;
pub use m365::M365ManagementActivityNormalizer;
pub use mapping::{MappingConfig, MappingNormalizer};
pub use okta::OktaSystemLogNormalizer;
pub use onepassword::{OnePasswordEventKind, OnePasswordEventsNormalizer};
pub use slack::SlackAuditLogNormalizer;

use crate::DetectError;

/// The `--source` value that asks for shape detection.
pub const AUTO: &str = "auto";

/// Every normalizer Perimeter knows, by source name.
pub struct NormalizerRegistry {
    builtins: Vec<Box<dyn Normalizer>>,
    mappings: Vec<MappingNormalizer>,
}

impl std::fmt::Debug for NormalizerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NormalizerRegistry")
            .field("names", &self.names())
            .finish()
    }
}

impl Default for NormalizerRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl NormalizerRegistry {
    /// Built-ins + `json` + bundled declarative mappings.
    pub fn builtin() -> NormalizerRegistry {
        let builtins: Vec<Box<dyn Normalizer>> = vec![
            Box::new(OktaSystemLogNormalizer),
            Box::new(GithubAuditLogNormalizer),
            Box::new(GoogleWorkspaceActivityNormalizer),
            Box::new(SlackAuditLogNormalizer),
            Box::new(M365ManagementActivityNormalizer),
            Box::new(CloudTrailNormalizer),
            Box::new(OnePasswordEventsNormalizer),
            Box::new(PlainJsonNormalizer),
        ];
        let mappings = mapping::bundled()
            .into_iter()
            .map(|m| {
                m.unwrap_or_else(|e| {
                    panic!("bundled mapping is invalid (a build bug, see mapping tests): {e}")
                })
            })
            .collect();
        NormalizerRegistry { builtins, mappings }
    }

    /// Add every `*.toml` mapping in `dir`; returns how many were loaded.
    ///
    /// A mapping named like a bundled one replaces it; a mapping named like a built-in
    /// normalizer, or any unreadable/invalid file, is an error naming the file (nothing from
    /// the directory is added then).
    pub fn load_mappings_dir(&mut self, dir: &Path) -> Result<usize, DetectError> {
        let io = |cause| DetectError::Io {
            path: dir.to_owned(),
            cause,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut loaded: Vec<MappingNormalizer> = Vec::with_capacity(files.len());
        for path in &files {
            let m = MappingNormalizer::from_file(path)?;
            if self.builtins.iter().any(|b| b.source() == m.name()) || m.name() == AUTO {
                return Err(DetectError::Config {
                    path: path.clone(),
                    message: format!("name `{}` is taken by a built-in normalizer", m.name()),
                });
            }
            if loaded.iter().any(|l| l.name() == m.name()) {
                return Err(DetectError::Config {
                    path: path.clone(),
                    message: format!(
                        "name `{}` is used by another file in {}",
                        m.name(),
                        dir.display()
                    ),
                });
            }
            loaded.push(m);
        }
        let n = loaded.len();
        for m in loaded {
            match self.mappings.iter_mut().find(|x| x.name() == m.name()) {
                Some(slot) => *slot = m,
                None => self.mappings.push(m),
            }
        }
        Ok(n)
    }

    /// Source names, built-ins first, then mappings.
    pub fn names(&self) -> Vec<&str> {
        self.builtins
            .iter()
            .map(|b| b.source())
            .chain(self.mappings.iter().map(|m| m.name()))
            .collect()
    }

    /// What to tell the sender of records for `source` when no normalizer or mapping has that
    /// name (`None` for known names, `auto` and `json`): they are read as plain JSON under that
    /// name, which is right for a vendor only rules know (`azure`) and a silent detection gap
    /// for a typo (`otka`: no Okta rule sees them), so a name near a known one is pointed out.
    pub fn unnormalized_source_note(&self, source: &str) -> Option<String> {
        if source == "auto" || self.get(source).is_some() {
            return None;
        }
        let names = self.names();
        if !is_source_name(source) {
            // Not even read as plain JSON: every record becomes a dead letter.
            return Some(format!(
                "`{source}` is no source name (lower-case letters, digits and `_`): its records are dead-lettered (normalizers: {})",
                names.join(", ")
            ));
        }
        let hint = crate::sigma::near_name(source, names.iter().copied())
            .map(|n| format!("; did you mean `{n}`?"))
            .unwrap_or_default();
        Some(format!(
            "no normalizer for source `{source}`: its records are read as plain JSON under that name{hint} (normalizers: {})",
            names.join(", ")
        ))
    }

    pub fn get(&self, source: &str) -> Option<&dyn Normalizer> {
        if let Some(b) = self.builtins.iter().find(|b| b.source() == source) {
            return Some(b.as_ref());
        }
        self.mappings
            .iter()
            .find(|m| m.name() == source)
            .map(|m| m as &dyn Normalizer)
    }

    /// Guess the source from the record's shape (`None` when nothing fits).
    ///
    /// Built-ins are tried first (their tests are a few `contains_key`s), then mappings in load
    /// order. `json` is never guessed: it is a choice, not a shape.
    pub fn detect_source(&self, raw: &Value) -> Option<&str> {
        let obj = fields::object(raw).ok()?;
        // One pass over the keys tells which shape tests can succeed; each test below then runs
        // only when the keys it requires are present (a record's keys are scanned once instead of
        // once per looked-up key per shape). The order of the tests is the precedence.
        let shape = ShapeKeys::of(obj);
        let builtin = if shape.any(ShapeKeys::KIND | ShapeKeys::EVENTS)
            && GoogleWorkspaceActivityNormalizer::matches(obj)
        {
            Some(GoogleWorkspaceActivityNormalizer::SOURCE)
        } else if shape.all(ShapeKeys::EVENT_TYPE | ShapeKeys::PUBLISHED)
            && OktaSystemLogNormalizer::matches(obj)
        {
            Some(OktaSystemLogNormalizer::SOURCE)
        } else if shape.all(ShapeKeys::EVENT_NAME | ShapeKeys::EVENT_SOURCE | ShapeKeys::EVENT_TIME)
            && CloudTrailNormalizer::matches(obj)
        {
            Some(CloudTrailNormalizer::SOURCE)
        } else if shape.all(ShapeKeys::CREATION_TIME | ShapeKeys::OPERATION)
            && M365ManagementActivityNormalizer::matches(obj)
        {
            Some(M365ManagementActivityNormalizer::SOURCE)
        } else if shape.all(ShapeKeys::DATE_CREATE | ShapeKeys::ACTION | ShapeKeys::ACTOR)
            && SlackAuditLogNormalizer::matches(obj)
        {
            Some(SlackAuditLogNormalizer::SOURCE)
        } else if shape.all(ShapeKeys::UUID) && OnePasswordEventsNormalizer::matches(obj) {
            Some(OnePasswordEventsNormalizer::SOURCE)
        } else if shape.all(ShapeKeys::ACTION) && GithubAuditLogNormalizer::matches(obj) {
            Some(GithubAuditLogNormalizer::SOURCE)
        } else {
            None
        };
        if let Some(name) = builtin {
            // The built-in is registered; return the registry's string so the lifetime is `self`.
            return self
                .builtins
                .iter()
                .map(|b| b.source())
                .find(|s| *s == name);
        }
        self.mappings
            .iter()
            .find(|m| m.matches(raw))
            .map(|m| m.name())
    }

    /// Normalize with `source` = a name, `auto` (detect by shape; [`NormalizeError::UndetectedSource`]
    /// if nothing fits) or `json`.
    /// A key repeated in an object of the record has its last value
    /// ([`perimeter_model::resolve_repeated_keys`]), as in the pipeline.
    pub fn normalize(&self, source: &str, mut record: RawRecord) -> Result<Event, NormalizeError> {
        perimeter_model::resolve_repeated_keys(&mut record.raw);
        let name = if source == AUTO {
            if !record.raw.is_object() {
                return Err(NormalizeError::NotAnObject);
            }
            self.detect_source(&record.raw)
                .ok_or(NormalizeError::UndetectedSource)?
        } else {
            source
        };
        let normalizer = self
            .get(name)
            .ok_or_else(|| NormalizeError::UnknownSource(name.to_owned()))?;
        let mut event = normalizer.normalize(record)?;
        event.ecs.drop_placeholder_users();
        Ok(event)
    }

    /// The ECS view of `raw` and the source name it was normalized as, without taking the record:
    /// the pipeline keeps ownership for the dead letter when this fails (and resolves the
    /// record's repeated keys before, [`perimeter_model::resolve_repeated_keys`]). `source` is a name,
    /// `auto` or `json`; a name with no normalizer of its own (a vendor only rules know, such as
    /// `azure`) is read with the `json` normalizer but keeps its name, so logsource dispatch works.
    pub fn normalize_ecs<'a>(
        &'a self,
        source: &'a str,
        raw: &Value,
    ) -> Result<(&'a str, Ecs), NormalizeError> {
        let name = if source == AUTO {
            if !raw.is_object() {
                return Err(NormalizeError::NotAnObject);
            }
            self.detect_source(raw)
                .ok_or(NormalizeError::UndetectedSource)?
        } else {
            source
        };
        let normalizer = match self.get(name) {
            Some(n) => n,
            None if is_source_name(name) => self
                .get(PlainJsonNormalizer::SOURCE)
                .ok_or_else(|| NormalizeError::UnknownSource(name.to_owned()))?,
            None => return Err(NormalizeError::UnknownSource(name.to_owned())),
        };
        let mut ecs = normalizer.normalize_ecs(raw)?;
        ecs.drop_placeholder_users();
        Ok((name, ecs))
    }

    /// The entity a record is about, for keying it on a partitioned bus (the Kafka bus keeps
    /// one entity's records on one detector instance, with its behavioural and correlation
    /// state): the user (`user.name`, else `user.email`, `user.id`), else the source IP. `None`
    /// when the record does not normalize (a page, an unknown shape) or names neither.
    pub fn entity_of(&self, source: &str, raw: &Value) -> Option<String> {
        let (_, ecs) = self.normalize_ecs(source, raw).ok()?;
        ["user.name", "user.email", "user.id", "source.ip"]
            .iter()
            .find_map(|field| match ecs.get(field) {
                Some(perimeter_model::EcsValue::Str(s)) if !s.is_empty() => {
                    Some(s.to_ascii_lowercase())
                }
                _ => None,
            })
    }

    /// [`Self::normalize_ecs`] into an [`Event`] (ids derive from the resolved source name).
    pub fn normalize_lenient(
        &self,
        source: &str,
        mut record: RawRecord,
    ) -> Result<Event, NormalizeError> {
        perimeter_model::resolve_repeated_keys(&mut record.raw);
        let (name, ecs) = self.normalize_ecs(source, &record.raw)?;
        Ok(Event::new(name, record, ecs))
    }
}

/// The keys the built-in shape tests ([`NormalizerRegistry::detect_source`]) require, found in one
/// pass over a record's keys: a necessary condition for each test, so only a test that can
/// succeed runs its lookups.
#[derive(Debug, Clone, Copy)]
struct ShapeKeys(u16);

impl ShapeKeys {
    const KIND: u16 = 1;
    const EVENTS: u16 = 1 << 1;
    const EVENT_TYPE: u16 = 1 << 2;
    const PUBLISHED: u16 = 1 << 3;
    const EVENT_NAME: u16 = 1 << 4;
    const EVENT_SOURCE: u16 = 1 << 5;
    const EVENT_TIME: u16 = 1 << 6;
    const CREATION_TIME: u16 = 1 << 7;
    const OPERATION: u16 = 1 << 8;
    const DATE_CREATE: u16 = 1 << 9;
    const ACTION: u16 = 1 << 10;
    const ACTOR: u16 = 1 << 11;
    const UUID: u16 = 1 << 12;

    fn of(obj: &fields::Obj) -> ShapeKeys {
        let mut bits = 0;
        for (k, _) in obj.as_object().into_iter().flat_map(|o| o.iter()) {
            bits |= match k {
                "kind" => Self::KIND,
                "events" => Self::EVENTS,
                "eventType" => Self::EVENT_TYPE,
                "published" => Self::PUBLISHED,
                "eventName" => Self::EVENT_NAME,
                "eventSource" => Self::EVENT_SOURCE,
                "eventTime" => Self::EVENT_TIME,
                "CreationTime" => Self::CREATION_TIME,
                "Operation" => Self::OPERATION,
                "date_create" => Self::DATE_CREATE,
                "action" => Self::ACTION,
                "actor" => Self::ACTOR,
                "uuid" => Self::UUID,
                _ => 0,
            };
        }
        ShapeKeys(bits)
    }

    fn all(self, bits: u16) -> bool {
        self.0 & bits == bits
    }

    fn any(self, bits: u16) -> bool {
        self.0 & bits != 0
    }
}

/// Keys under which list APIs return their records.
const LIST_KEYS: &[&str] = &[
    "items",
    "entries",
    "Records",
    "records",
    "events",
    "data",
    "logs",
    "activity_logs",
    "operation_logs",
    "authlogs",
    "results",
    "result",
    "value",
    "response",
    "audit_events",
    "auditEvents",
    "activities",
    // Tines and Torq audit log pages.
    "audit_logs",
    // Google Workspace Alert Center pages.
    "alerts",
];

/// Page metadata that may sit beside the list in an envelope.
const META_KEYS: &[&str] = &[
    "cursor",
    "has_more",
    "hasMore",
    "nextPageToken",
    "next_page_token",
    "response_metadata",
    "links",
    "meta",
    "metadata",
    "total",
    "limit",
    "offset",
    "from",
    "to",
    "page_size",
    "kind",
    "etag",
    "stat",
    "next_stream_position",
    "chunk_size",
    "next",
    "previous",
    "nextLink",
    "@odata.nextLink",
    "@odata.context",
    "@odata.count",
    "next_cursor",
    "count",
    "page",
    "per_page",
    "total_count",
    "nextPage",
    "isLast",
    "size",
    "start",
    // Terraform Cloud (`pagination`) and Salesforce Marketing Cloud (`pageSize`) pages.
    "pagination",
    "pageSize",
    // Salesforce SOQL query results.
    "totalSize",
    "done",
    "nextRecordsUrl",
    // HAL links (LaunchDarkly pages).
    "_links",
    // Offset paging (Asana `next_page`, Zendesk `next_page`/`previous_page`) and the request
    // status beside the list (OneLogin v1 `status`).
    "next_page",
    "previous_page",
    "prev_page",
    "status",
    // Slack Web API answers (`{"ok": true, "warning": "..", ...}`).
    "ok",
    "warning",
];

/// Split one parsed input value into individual vendor records: API page envelopes
/// (`{"items":[..]}` 1Password/Google, `{"entries":[..]}` Slack, `{"Records":[..]}` CloudTrail files,
/// top-level arrays as in Okta/GitHub pages, other common list keys), and Google Workspace activities
/// with several `events[]` -> one record per event entry (a copy of the activity whose `events` holds that
/// one entry). A plain single record comes back as a one-element Vec. `source` may be a name, `auto` or `json`.
///
/// An object is unwrapped as an envelope only when its other keys are all known page metadata
/// (`cursor`, `has_more`, `nextPageToken`, `links`, ...) or it has that one key, so a record that
/// merely contains a list (`{"action": .., "items": [..]}`) is kept whole. An empty page (`[]`,
/// `{"data": []}`, `{}`) gives no records. Google Workspace splitting applies with `auto` and
/// `google_workspace` (with `json` nothing vendor-specific happens).
pub fn split_records(source: &str, value: Value) -> Vec<Value> {
    let split_google = source == AUTO || source == GoogleWorkspaceActivityNormalizer::SOURCE;
    let mut out = Vec::new();
    split_into(value, split_google, 0, &mut out);
    out
}

/// [`split_records`], each record with the position of the element of the envelope's list it
/// came from (several records share one when a Google Workspace activity splits into its
/// events), and the key of that list; `None` for both when `value` is no envelope with a list.
pub fn split_records_indexed(
    source: &str,
    value: Value,
) -> (Option<&'static str>, Vec<(Option<usize>, Value)>) {
    let list = envelope_key(&value).and_then(|key| {
        let items = value
            .get(key)?
            .as_array()?
            .iter()
            .cloned()
            .collect::<Vec<_>>();
        Some((key, items))
    });
    let Some((key, items)) = list else {
        let records = split_records(source, value);
        return (None, records.into_iter().map(|r| (None, r)).collect());
    };
    let split_google = source == AUTO || source == GoogleWorkspaceActivityNormalizer::SOURCE;
    let mut out = Vec::new();
    let mut records = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        // The envelope's list is one level down, as `split_into` would have reached it.
        split_into(item, split_google, 2, &mut records);
        out.extend(records.drain(..).map(|r| (Some(i), r)));
    }
    (Some(key), out)
}

/// The records of one input (`value`, read at `line`, with the lines of a pretty-printed
/// envelope's elements in `member_lines`) when it holds several: a page envelope, an event hook
/// delivery, a CloudTrail file, a Google Workspace activity of several events; each with the
/// line it starts on. `None` when it is one record or none, and for a Perimeter envelope
/// (`{"source", "event"}`), which the pipeline reads whole. What the pipeline would split it
/// into, for a bus that keys each record by its own entity.
pub fn records_of_input(
    source: &str,
    value: &Value,
    line: u64,
    member_lines: &[(String, Vec<u64>)],
) -> Option<Vec<(u64, Value)>> {
    if !value.is_array() && envelope_key(value).is_none() && okta_event_hook_events(value).is_none()
    {
        // One record (or a Google Workspace activity, split below only when it has several).
        if !(source == AUTO || source == GoogleWorkspaceActivityNormalizer::SOURCE)
            || !GoogleWorkspaceActivityNormalizer::matches(value)
        {
            return None;
        }
    }
    let mut value = value.clone();
    // As the pipeline reads it: a repeated key's last value, before the list is found.
    perimeter_model::resolve_repeated_keys(&mut value);
    let (list_key, records) = split_records_indexed(source, value);
    if records.len() < 2 {
        return None;
    }
    let lines = list_key.and_then(|key| member_lines.iter().find(|(k, _)| k == key));
    Some(
        records
            .into_iter()
            .map(|(element, record)| {
                let at = element
                    .and_then(|i| lines.and_then(|(_, each)| each.get(i)))
                    .copied()
                    .unwrap_or(line);
                (at, record)
            })
            .collect(),
    )
}

// Children are taken out by `clone`, which for a parsed document is a reference-counted view
// into the same arena; mutating a parsed document would convert it into owned maps.
fn split_into(value: Value, split_google: bool, depth: u8, out: &mut Vec<Value>) {
    if depth < 3 {
        if let Some(items) = value.as_array() {
            for item in items.iter() {
                split_into(item.clone(), split_google, depth + 1, out);
            }
            return;
        }
    }
    let Some(obj) = value.as_object() else {
        out.push(value);
        return;
    };
    if obj.is_empty() {
        return;
    }
    if depth >= 3 {
        out.push(value);
        return;
    }
    if let Some(key) = envelope_key(&value) {
        if let Some(inner) = value.get(key) {
            split_into(inner.clone(), split_google, depth + 1, out);
        }
        return;
    }
    if is_cloudtrail_digest(obj) {
        return;
    }
    if let Some(events) = okta_event_hook_events(&value) {
        for event in events.iter() {
            split_into(event.clone(), split_google, 3, out);
        }
        return;
    }
    if split_google && GoogleWorkspaceActivityNormalizer::matches(&value) {
        if let Some(events) = value.get("events").and_then(|e| e.as_array()) {
            if events.len() > 1 {
                for event in events.iter() {
                    let mut copy = sonic_rs::Object::with_capacity(obj.len());
                    for (k, v) in obj.iter() {
                        if k == "events" {
                            let mut one = sonic_rs::Array::with_capacity(1);
                            one.push(event.clone());
                            copy.insert(k, one.into_value());
                        } else {
                            copy.insert(k, v.clone());
                        }
                    }
                    out.push(copy.into_value());
                }
                return;
            }
        }
    }
    out.push(value);
}

/// Why `value`, read as one record, may really be a page that was not unwrapped: it holds a
/// list of records under a page's list key beside keys that are no known page metadata. Said in
/// the dead letter of a record its normalizer refused, since "missing field" alone hides that
/// the whole page went there.
pub fn unwrapped_page_hint(value: &Value) -> Option<String> {
    let obj = value.as_object()?;
    let (key, items) = obj.iter().find_map(|(k, v)| {
        let items = v.as_array()?;
        let key = LIST_KEYS.iter().find(|l| **l == k)?;
        (!items.is_empty() && items.iter().all(|i| i.is_object())).then_some((*key, items.len()))
    })?;
    let others: Vec<String> = obj
        .iter()
        .map(|(k, _)| k)
        .filter(|k| *k != key && !META_KEYS.contains(k))
        .take(3)
        .map(|k| format!("`{k}`"))
        .collect();
    (!others.is_empty()).then(|| {
        format!(
            "it looks like a page of {items} record{} under `{key}`, read as one record \
             because {} {} no page metadata",
            if items == 1 { "" } else { "s" },
            others.join(", "),
            if others.len() == 1 { "is" } else { "are" }
        )
    })
}

/// Whether `obj` is a CloudTrail digest file (`awsAccountId` first, then `digestStartTime`, ...,
/// `logFiles`): written beside the log files every hour per region, it lists them and holds no
/// event, so it is read as an empty page, not as a record that is no event (a synced bucket's
/// digests buried the real dead letters). Judged by its first key first, as this runs on every
/// record.
fn is_cloudtrail_digest(obj: &sonic_rs::Object) -> bool {
    obj.iter()
        .next()
        .is_some_and(|(first, _)| first == "awsAccountId")
        && obj.get(&"digestStartTime").is_some()
        && obj.get(&"logFiles").is_some_and(|files| files.is_array())
}

/// Whether `value` is a CloudTrail digest file (see [`split_records`]): a value that holds no
/// record by design, not one to report as empty.
pub fn is_cloudtrail_digest_value(value: &Value) -> bool {
    value.as_object().is_some_and(is_cloudtrail_digest)
}

/// The list key when `obj` is a page envelope rather than a record.
/// The events of an Okta event hook's delivery (`{"eventType": "com.okta.event_hook", ...,
/// "data": {"events": [...]}}`), each a System Log event. A delivery's first key is one of its
/// envelope's (Okta writes `eventType` first; sorted, `cloudEventsVersion`), which a System Log
/// event's is not (`actor`, sorted or not): other records are passed over at their first key.
fn okta_event_hook_events(value: &Value) -> Option<&sonic_rs::Array> {
    const ENVELOPE_KEYS: [&str; 4] = ["eventType", "cloudEventsVersion", "contentType", "data"];
    let (first, _) = value.as_object()?.iter().next()?;
    if !ENVELOPE_KEYS.contains(&first) {
        return None;
    }
    (value.get("eventType")?.as_str()? == "com.okta.event_hook")
        .then(|| value.get("data")?.get("events")?.as_array())
        .flatten()
}

fn envelope_key(obj: &Value) -> Option<&'static str> {
    // An envelope has only list and metadata keys, so a record is told apart by its first key
    // alone (the lookups below scan every key once per list key).
    let (first, _) = obj.as_object()?.iter().next()?;
    if !LIST_KEYS.contains(&first) && !META_KEYS.contains(&first) {
        return None;
    }
    let key = LIST_KEYS.iter().copied().find(|k| match obj.get(*k) {
        Some(v) if v.is_array() => true,
        // Duo wraps its page once more: `{"stat": "OK", "response": {"authlogs": [..], "metadata": {..}}}`.
        Some(inner) if inner.is_object() => *k == "response" && envelope_key(inner).is_some(),
        _ => false,
    })?;
    let only_meta = obj
        .as_object()?
        .iter()
        .all(|(k, _)| k == key || META_KEYS.contains(&k));
    // A Google Workspace activity has `events` + `kind`, both of which look like an envelope.
    let is_activity = GoogleWorkspaceActivityNormalizer::matches(obj);
    (only_meta && !is_activity).then_some(key)
}

#[cfg(test)]
mod tests;
