//! Declarative source mappings: a TOML file maps JSON paths in a vendor record to ECS fields, so
//! a new SaaS source needs no Rust. The file format is documented in `detect/README.md`
//! ("Writing a mapping"); [`MappingConfig`] is its schema.
//!
//! A mapping is compiled once ([`MappingNormalizer::from_toml`]) into a [`MappingNormalizer`] whose paths
//! are pre-split, so normalizing an event is a handful of map lookups and string compares.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson as Value;
use perimeter_model::{
    parse_timestamp, without_leap_second, Ecs, NormalizeError, Normalizer, Outcome,
};
use serde::Deserialize;

use super::fields;
use crate::DetectError;

/// Mapping files shipped inside the binary (`mappings/*.toml` at the repository root).
pub const BUNDLED_MAPPINGS: &[(&str, &str)] = &[
    ("zoom.toml", include_str!("../../../mappings/zoom.toml")),
    ("box.toml", include_str!("../../../mappings/box.toml")),
    ("duo.toml", include_str!("../../../mappings/duo.toml")),
    (
        "dropbox.toml",
        include_str!("../../../mappings/dropbox.toml"),
    ),
    (
        "atlassian.toml",
        include_str!("../../../mappings/atlassian.toml"),
    ),
    (
        "google_workspace_alerts.toml",
        include_str!("../../../mappings/google_workspace_alerts.toml"),
    ),
    (
        "pagerduty.toml",
        include_str!("../../../mappings/pagerduty.toml"),
    ),
    ("tines.toml", include_str!("../../../mappings/tines.toml")),
    (
        "launchdarkly.toml",
        include_str!("../../../mappings/launchdarkly.toml"),
    ),
    (
        "terraform_cloud.toml",
        include_str!("../../../mappings/terraform_cloud.toml"),
    ),
    ("torq.toml", include_str!("../../../mappings/torq.toml")),
    (
        "oomnitza.toml",
        include_str!("../../../mappings/oomnitza.toml"),
    ),
    (
        "salesforce.toml",
        include_str!("../../../mappings/salesforce.toml"),
    ),
    (
        "workday.toml",
        include_str!("../../../mappings/workday.toml"),
    ),
    (
        "salesforce_marketing_cloud.toml",
        include_str!("../../../mappings/salesforce_marketing_cloud.toml"),
    ),
    ("azure.toml", include_str!("../../../mappings/azure.toml")),
    ("auth0.toml", include_str!("../../../mappings/auth0.toml")),
    (
        "onelogin.toml",
        include_str!("../../../mappings/onelogin.toml"),
    ),
    ("asana.toml", include_str!("../../../mappings/asana.toml")),
    ("notion.toml", include_str!("../../../mappings/notion.toml")),
    (
        "zendesk.toml",
        include_str!("../../../mappings/zendesk.toml"),
    ),
];

/// One declarative source mapping, as written in a `<name>.toml` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Source name the mapping registers (`zoom`); lowercase ASCII letters, digits and `_`.
    pub name: String,
    /// One line on what the mapping reads (vendor, API endpoint).
    #[serde(default)]
    pub description: String,
    /// How `--source auto` recognises a record of this source.
    pub detect: DetectConfig,
    /// Where the event time is.
    pub timestamp: TimestampConfig,
    /// ECS field name -> JSON path, or a list of paths tried in order (first non-empty value
    /// wins). Paths are dotted (`actor.user.email`, `participants.0.email`) or JSON Pointers
    /// (`/event_type/.tag`) for keys that contain dots, or templates joining several values
    /// (`"{resource.type}.{resource.action}"`, used only when every placeholder has a value).
    /// `event.action` is required.
    pub fields: BTreeMap<String, Paths>,
    /// How `event.outcome` is derived from the record.
    #[serde(default)]
    pub outcome: Option<OutcomeConfig>,
    /// Categorisation rules, tried in order; the first whose conditions all hold sets
    /// `event.category` / `event.type` (and the outcome when the record did not decide it).
    #[serde(default)]
    pub classify: Vec<ClassifyRuleConfig>,
}

/// One JSON path or several alternatives.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Paths {
    One(String),
    Many(Vec<String>),
}

impl Paths {
    fn as_slice(&self) -> &[String] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(p) => p,
        }
    }
}

/// Auto-detection: a record is this source when every path of at least one `key_sets` entry is
/// present (non-null) and every `equals` path holds its string value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Alternative sets of paths that must all be present (one set per record shape).
    pub key_sets: Vec<Vec<String>>,
    /// Paths that must hold exactly this string value.
    #[serde(default)]
    pub equals: BTreeMap<String, String>,
}

/// The event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// Path(s) of the timestamp; the first present one is used.
    pub path: Paths,
    /// A chrono `strftime` format for vendors with unusual text formats (`%d/%m/%Y %H:%M:%S`);
    /// without it, RFC 3339 / ISO 8601 variants, RFC 2822 and epoch numbers are accepted. A
    /// format without a zone is read as UTC.
    #[serde(default)]
    pub format: Option<String>,
    /// Whether a record without a timestamp is an error (`true`) or gets the receive time.
    #[serde(default = "default_true")]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

/// `event.outcome` from a vendor result field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeConfig {
    /// Path(s) of the vendor's result value (string or boolean).
    #[serde(default)]
    pub path: Option<Paths>,
    /// Values meaning success (exact, case-insensitive; `true` for booleans).
    #[serde(default)]
    pub success: Vec<String>,
    /// Values meaning failure (exact, case-insensitive; `false` for booleans).
    #[serde(default)]
    pub failure: Vec<String>,
    /// Paths whose mere presence (non-null) means failure (`errorCode`).
    #[serde(default)]
    pub failure_if_present: Vec<String>,
    /// Outcome when neither the values above nor a matching `[[classify]]` rule's `outcome`
    /// decided: `success`, `failure` or `unknown` (default).
    #[serde(default)]
    pub default: Outcome,
}

/// One categorisation rule. Patterns are exact strings, or use `*` at the start and/or end
/// for suffix / prefix / substring matches (`user_*`, `*_failed`, `*download*`), or `*` alone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRuleConfig {
    /// Patterns for the resolved `event.action` (any may match).
    #[serde(default)]
    pub action: Vec<String>,
    /// Path -> patterns for other record values (every path must match one of its patterns).
    #[serde(default)]
    pub when: BTreeMap<String, Vec<String>>,
    /// ECS `event.category` values (`authentication`, `iam`, `configuration`, `file`, ...).
    pub category: Vec<String>,
    /// ECS `event.type` values (`start`, `change`, `creation`, `deletion`, `access`, ...).
    #[serde(rename = "type")]
    pub kind: Vec<String>,
    /// Outcome to use when the record's own result value (the `[outcome]` path/values) did not
    /// decide; it wins over `outcome.default`.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// ECS fields this kind of record has beyond `[fields]`, in the same form (`"user.target.name"
    /// = "target.name"` where only some records act on another user); a value found here wins
    /// over `[fields]`. Not `event.action`: the rules match on it.
    #[serde(default)]
    pub fields: BTreeMap<String, Paths>,
}

const ECS_CATEGORIES: &[&str] = &[
    "api",
    "authentication",
    "configuration",
    "database",
    "driver",
    "email",
    "file",
    "host",
    "iam",
    "intrusion_detection",
    "library",
    "malware",
    "network",
    "package",
    "process",
    "registry",
    "session",
    "threat",
    "vulnerability",
    "web",
];
const ECS_TYPES: &[&str] = &[
    "access",
    "admin",
    "allowed",
    "change",
    "connection",
    "creation",
    "deletion",
    "denied",
    "end",
    "error",
    "group",
    "indicator",
    "info",
    "installation",
    "protocol",
    "start",
    "user",
];

/// ECS fields a mapping may fill from a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EcsField {
    Action,
    UserName,
    UserEmail,
    UserId,
    TargetName,
    TargetEmail,
    TargetId,
    SourceIp,
    Country,
    AsNumber,
    UserAgent,
    OrganizationId,
    CloudAccountId,
}

impl EcsField {
    fn parse(name: &str) -> Option<EcsField> {
        Some(match name {
            "event.action" => EcsField::Action,
            "user.name" => EcsField::UserName,
            "user.email" => EcsField::UserEmail,
            "user.id" => EcsField::UserId,
            "user.target.name" => EcsField::TargetName,
            "user.target.email" => EcsField::TargetEmail,
            "user.target.id" => EcsField::TargetId,
            "source.ip" => EcsField::SourceIp,
            "source.geo.country_iso_code" => EcsField::Country,
            "source.as.number" => EcsField::AsNumber,
            "user_agent.original" => EcsField::UserAgent,
            "organization.id" => EcsField::OrganizationId,
            "cloud.account.id" => EcsField::CloudAccountId,
            _ => return None,
        })
    }
}

/// A pre-split path: object keys, or array indexes where the value is an array.
#[derive(Debug, Clone)]
struct JsonPath {
    text: String,
    segments: Vec<(String, Option<usize>)>,
}

impl JsonPath {
    fn parse(text: &str) -> Result<JsonPath, String> {
        let raw: Vec<String> = if let Some(pointer) = text.strip_prefix('/') {
            pointer
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect()
        } else {
            text.split('.').map(str::to_owned).collect()
        };
        if text.is_empty() || raw.iter().any(String::is_empty) {
            return Err(format!("path `{text}` has an empty segment"));
        }
        let segments = raw
            .into_iter()
            .map(|s| {
                let idx = s.parse::<usize>().ok();
                (s, idx)
            })
            .collect();
        Ok(JsonPath {
            text: text.to_owned(),
            segments,
        })
    }

    fn resolve<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        let mut cur = v;
        for (key, idx) in &self.segments {
            cur = if cur.is_object() {
                cur.get(key.as_str())?
            } else if cur.is_array() {
                cur.get((*idx)?)?
            } else {
                return None;
            };
        }
        if cur.is_null() {
            None
        } else {
            Some(cur)
        }
    }

    fn first<'a, 'p>(paths: &'p [JsonPath], v: &'a Value) -> Option<(&'p JsonPath, &'a Value)> {
        paths.iter().find_map(|p| {
            p.resolve(v)
                .filter(|x| !x.as_str().is_some_and(|s| s.trim().is_empty()))
                .map(|x| (p, x))
        })
    }
}

/// Where an ECS field's value comes from: one path, or a template joining several values
/// (`"{resource.type}.{resource.action}"`), for vendors whose action is spread over fields.
#[derive(Debug, Clone)]
enum FieldSource {
    Path(JsonPath),
    Template {
        text: String,
        pieces: Vec<TemplatePiece>,
    },
}

#[derive(Debug, Clone)]
enum TemplatePiece {
    Literal(String),
    Path(JsonPath),
}

/// What a [`FieldSource`] found in a record.
enum Found<'a> {
    Value(&'a Value),
    Text(String),
}

impl FieldSource {
    /// A path; a template when the text holds `{`: literal text with `{path}` placeholders; or a
    /// constant in single quotes (`'Sign-in activity'`), for a kind of record that names no
    /// action of its own (a key set in `[detect]` tells it apart), last among the alternatives.
    fn parse(text: &str) -> Result<FieldSource, String> {
        if let Some(constant) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
            if constant.trim().is_empty() {
                return Err(format!("constant `{text}` is empty"));
            }
            return Ok(FieldSource::Template {
                text: text.to_owned(),
                pieces: vec![TemplatePiece::Literal(constant.to_owned())],
            });
        }
        if !text.contains('{') {
            return JsonPath::parse(text).map(FieldSource::Path);
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if rest[..open].contains('}') {
                return Err(format!("template `{text}`: `}}` without its `{{`"));
            }
            if open > 0 {
                pieces.push(TemplatePiece::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("template `{text}`: `{{` without its `}}`"))?;
            let path =
                JsonPath::parse(&after[..close]).map_err(|e| format!("template `{text}`: {e}"))?;
            pieces.push(TemplatePiece::Path(path));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("template `{text}`: `}}` without its `{{`"));
        }
        if !rest.is_empty() {
            pieces.push(TemplatePiece::Literal(rest.to_owned()));
        }
        Ok(FieldSource::Template {
            text: text.to_owned(),
            pieces,
        })
    }

    fn is_template(&self) -> bool {
        matches!(self, FieldSource::Template { .. })
    }

    fn text(&self) -> &str {
        match self {
            FieldSource::Path(p) => &p.text,
            FieldSource::Template { text, .. } => text,
        }
    }

    /// The first source that finds a value. A template finds one only when every placeholder
    /// holds a non-empty scalar, so a partial record falls through to the next alternative.
    fn first<'a, 's>(sources: &'s [FieldSource], raw: &'a Value) -> Option<(&'s Self, Found<'a>)> {
        sources.iter().find_map(|source| {
            let found = match source {
                FieldSource::Path(p) => {
                    JsonPath::first(std::slice::from_ref(p), raw).map(|(_, v)| Found::Value(v))?
                }
                FieldSource::Template { pieces, .. } => {
                    let mut out = String::new();
                    for piece in pieces {
                        match piece {
                            TemplatePiece::Literal(l) => out.push_str(l),
                            TemplatePiece::Path(p) => {
                                out.push_str(&fields::scalar_string(p.resolve(raw)?)?);
                            }
                        }
                    }
                    Found::Text(out)
                }
            };
            Some((source, found))
        })
    }
}

/// A compiled classification pattern.
#[derive(Debug, Clone)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl Pattern {
    fn parse(p: &str) -> Result<Pattern, String> {
        let starts = p.starts_with('*');
        let ends = p.ends_with('*') && p.len() > 1;
        let core = p.trim_matches('*');
        if p == "*" {
            return Ok(Pattern::Any);
        }
        if core.contains('*') {
            return Err(format!(
                "pattern `{p}`: `*` is only allowed at the start or end"
            ));
        }
        Ok(match (starts, ends) {
            (true, true) => Pattern::Contains(core.to_owned()),
            (true, false) => Pattern::Suffix(core.to_owned()),
            (false, true) => Pattern::Prefix(core.to_owned()),
            (false, false) => Pattern::Exact(core.to_owned()),
        })
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(x) => s == x,
            Pattern::Prefix(x) => s.starts_with(x.as_str()),
            Pattern::Suffix(x) => s.ends_with(x.as_str()),
            Pattern::Contains(x) => s.contains(x.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    action: Vec<Pattern>,
    when: Vec<(JsonPath, Vec<Pattern>)>,
    category: Vec<String>,
    kind: Vec<String>,
    outcome: Option<Outcome>,
    fields: Vec<(EcsField, Vec<FieldSource>)>,
}

#[derive(Debug, Clone)]
struct OutcomeRule {
    paths: Vec<JsonPath>,
    success: Vec<String>,
    failure: Vec<String>,
    failure_if_present: Vec<JsonPath>,
    default: Outcome,
}

/// A compiled declarative mapping; implements [`Normalizer`] under its configured name.
#[derive(Debug, Clone)]
pub struct MappingNormalizer {
    name: String,
    description: String,
    key_sets: Vec<Vec<JsonPath>>,
    equals: Vec<(JsonPath, String)>,
    ts_paths: Vec<JsonPath>,
    ts_format: Option<String>,
    ts_required: bool,
    fields: Vec<(EcsField, Vec<FieldSource>)>,
    outcome: Option<OutcomeRule>,
    rules: Vec<Rule>,
}

impl MappingConfig {
    /// Parse a mapping file's text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<MappingConfig, DetectError> {
        toml::from_str(text).map_err(|e| DetectError::Config {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    fn compile(&self) -> Result<MappingNormalizer, String> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name || self.name == "auto" {
            return Err(format!(
                "`name = \"{}\"`: use lowercase letters, digits and `_` (and not `auto`)",
                self.name
            ));
        }
        let paths = |list: &[String], what: &str| -> Result<Vec<JsonPath>, String> {
            if list.is_empty() {
                return Err(format!("{what}: no path given"));
            }
            list.iter()
                .map(|p| JsonPath::parse(p).map_err(|e| format!("{what}: {e}")))
                .collect()
        };
        if self.detect.key_sets.is_empty() || self.detect.key_sets.iter().any(Vec::is_empty) {
            return Err("detect.key_sets: needs at least one non-empty set of paths".into());
        }
        let key_sets = self
            .detect
            .key_sets
            .iter()
            .map(|set| paths(set, "detect.key_sets"))
            .collect::<Result<Vec<_>, _>>()?;
        let equals = self
            .detect
            .equals
            .iter()
            .map(|(p, v)| {
                Ok((
                    JsonPath::parse(p).map_err(|e| format!("detect.equals: {e}"))?,
                    v.clone(),
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let ts_paths = paths(self.timestamp.path.as_slice(), "timestamp.path")?;
        if let Some(fmt) = &self.timestamp.format {
            let bad = chrono::format::StrftimeItems::new(fmt)
                .any(|i| matches!(i, chrono::format::Item::Error));
            if bad || fmt.is_empty() {
                return Err(format!(
                    "timestamp.format: `{fmt}` is not a valid strftime format"
                ));
            }
        }
        let fields = compile_fields(&self.fields, "fields")?;
        if !fields.iter().any(|(t, _)| *t == EcsField::Action) {
            return Err("fields: `event.action` must be mapped".into());
        }
        let outcome = match &self.outcome {
            None => None,
            Some(o) => Some(OutcomeRule {
                paths: match &o.path {
                    Some(p) => paths(p.as_slice(), "outcome.path")?,
                    None => Vec::new(),
                },
                success: o.success.clone(),
                failure: o.failure.clone(),
                failure_if_present: o
                    .failure_if_present
                    .iter()
                    .map(|p| {
                        JsonPath::parse(p).map_err(|e| format!("outcome.failure_if_present: {e}"))
                    })
                    .collect::<Result<_, _>>()?,
                default: o.default,
            }),
        };
        let mut rules = Vec::new();
        for (i, r) in self.classify.iter().enumerate() {
            let what = format!("classify[{i}]");
            for c in &r.category {
                if !ECS_CATEGORIES.contains(&c.as_str()) {
                    return Err(format!(
                        "{what}.category: `{c}` is not an ECS event.category ({})",
                        ECS_CATEGORIES.join(", ")
                    ));
                }
            }
            for t in &r.kind {
                if !ECS_TYPES.contains(&t.as_str()) {
                    return Err(format!(
                        "{what}.type: `{t}` is not an ECS event.type ({})",
                        ECS_TYPES.join(", ")
                    ));
                }
            }
            let pats = |list: &[String], at: &str| -> Result<Vec<Pattern>, String> {
                list.iter()
                    .map(|p| Pattern::parse(p).map_err(|e| format!("{what}.{at}: {e}")))
                    .collect()
            };
            let mut when = Vec::new();
            for (p, list) in &r.when {
                let at = format!("when.\"{p}\"");
                if list.is_empty() {
                    return Err(format!("{what}.{at}: `when.{p}` has no patterns"));
                }
                when.push((
                    JsonPath::parse(p).map_err(|e| format!("{what}.{at}: {e}"))?,
                    pats(list, &at)?,
                ));
            }
            let fields = compile_fields(&r.fields, &format!("{what}.fields"))?;
            if fields.iter().any(|(t, _)| *t == EcsField::Action) {
                return Err(format!(
                    "{what}.fields: `event.action` is mapped in `[fields]` only (the rules match on it)"
                ));
            }
            rules.push(Rule {
                action: pats(&r.action, "action")?,
                when,
                category: r.category.clone(),
                kind: r.kind.clone(),
                outcome: r.outcome,
                fields,
            });
        }
        Ok(MappingNormalizer {
            name: self.name.clone(),
            description: self.description.clone(),
            key_sets,
            equals,
            ts_paths,
            ts_format: self.timestamp.format.clone(),
            ts_required: self.timestamp.required,
            fields,
            outcome,
            rules,
        })
    }
}

/// `message` (`classify[2].category: ...`, as `compile` words its errors: the place in the
/// file, then what is wrong there) with the line of that place in `text` before it, so a mapping's
/// author is sent to the line (`classify[2]` is the third `[[classify]]` table). The innermost
/// part of the place found is the one named; a message naming no place is returned as it is.
fn with_line(text: &str, message: String) -> String {
    let Some((place, _)) = message.split_once(": ") else {
        return message;
    };
    match line_of(text, place) {
        Some(line) => format!("line {line}: {message}"),
        None => message,
    }
}

/// The 1-based line where `place` (`fields."user.name"`, `classify[1].when."kind"`) is written.
fn line_of(text: &str, place: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table: &DeTable<'_> = doc.get_ref();
    let mut current: Option<&toml::Spanned<DeValue<'_>>> = None;
    let mut found: Option<std::ops::Range<usize>> = None;
    for segment in place_segments(place)? {
        if let Some(v) = current {
            match v.get_ref() {
                DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        let Some((key, value)) = table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == segment.0)
        else {
            break;
        };
        found = Some(key.span());
        current = Some(value);
        if let Some(i) = segment.1 {
            let DeValue::Array(items) = value.get_ref() else {
                break;
            };
            let Some(item) = items.get(i) else {
                break;
            };
            // An array of tables' item spans its `[[name]]` header onwards.
            found = Some(item.span());
            current = Some(item);
        }
    }
    let at = found?.start.min(text.len());
    Some(text[..at].matches('\n').count() + 1)
}

/// The keys of `place`, each with its index when it is an array's item: `classify[2].fields`
/// -> `("classify", Some(2)), ("fields", None)`; a quoted key holds dots (`fields."user.name"`).
fn place_segments(place: &str) -> Option<Vec<(String, Option<usize>)>> {
    let mut out = Vec::new();
    let mut rest = place;
    while !rest.is_empty() {
        let (key, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"')?;
            (quoted[..end].to_string(), &quoted[end + 1..])
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        let (index, after) = match after.strip_prefix('[') {
            Some(inner) => {
                let close = inner.find(']')?;
                (Some(inner[..close].parse().ok()?), &inner[close + 1..])
            }
            None => (None, after),
        };
        if key.is_empty() {
            return None;
        }
        out.push((key, index));
        rest = after.strip_prefix('.').unwrap_or(after);
        if !after.is_empty() && !after.starts_with('.') {
            return None;
        }
    }
    Some(out)
}

/// Compile ECS field name -> paths; `what` names the section in errors.
fn compile_fields(
    map: &BTreeMap<String, Paths>,
    what: &str,
) -> Result<Vec<(EcsField, Vec<FieldSource>)>, String> {
    let mut fields = Vec::new();
    for (name, p) in map {
        let target = EcsField::parse(name).ok_or_else(|| {
            format!(
                "{what}.\"{name}\": `{name}` is not a mappable ECS field (use one of event.action, user.name, user.email, user.id, user.target.name, user.target.email, user.target.id, source.ip, source.geo.country_iso_code, source.as.number, user_agent.original, organization.id, cloud.account.id; outcome and categories have their own sections)"
            )
        })?;
        let what = format!("{what}.\"{name}\"");
        if p.as_slice().is_empty() {
            return Err(format!("{what}: no path given"));
        }
        let sources = p
            .as_slice()
            .iter()
            .map(|text| FieldSource::parse(text).map_err(|e| format!("{what}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if target == EcsField::AsNumber && sources.iter().any(FieldSource::is_template) {
            return Err(format!(
                "{what}: a number comes from one path, not a template"
            ));
        }
        fields.push((target, sources));
    }
    Ok(fields)
}

impl MappingNormalizer {
    /// Parse and compile a mapping file's text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<MappingNormalizer, DetectError> {
        MappingConfig::from_toml(text, origin)?
            .compile()
            .map_err(|message| DetectError::Config {
                path: origin.to_owned(),
                message: with_line(text, message),
            })
    }

    /// Read, parse and compile one mapping file.
    pub fn from_file(path: &Path) -> Result<MappingNormalizer, DetectError> {
        let text = std::fs::read_to_string(path).map_err(|cause| DetectError::Io {
            path: path.to_owned(),
            cause,
        })?;
        Self::from_toml(&text, path)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether the record has this source's shape (the `[detect]` section).
    pub fn matches(&self, raw: &Value) -> bool {
        raw.is_object()
            && self
                .key_sets
                .iter()
                .any(|set| set.iter().all(|p| p.resolve(raw).is_some()))
            && self
                .equals
                .iter()
                .all(|(p, want)| p.resolve(raw).and_then(Value::as_str) == Some(want.as_str()))
    }

    fn timestamp(&self, raw: &Value) -> Result<Option<DateTime<Utc>>, NormalizeError> {
        let Some((path, v)) = JsonPath::first(&self.ts_paths, raw) else {
            return if self.ts_required {
                Err(NormalizeError::MissingField(self.ts_paths[0].text.clone()))
            } else {
                Ok(None)
            };
        };
        let bad = |reason: &str| NormalizeError::BadTimestamp {
            field: path.text.clone(),
            reason: reason.to_owned(),
        };
        match (&self.ts_format, v.as_str()) {
            (Some(fmt), Some(s)) => {
                if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
                    return Ok(Some(without_leap_second(dt.with_timezone(&Utc))));
                }
                NaiveDateTime::parse_from_str(s, fmt)
                    .map(|n| Some(without_leap_second(Utc.from_utc_datetime(&n))))
                    .map_err(|e| bad(&format!("does not match format `{fmt}`: {e}")))
            }
            _ => parse_timestamp(v)
                .map(Some)
                .map_err(|e| bad(&e.to_string())),
        }
    }

    fn ecs(&self, raw: &Value) -> Result<Ecs, NormalizeError> {
        fields::object(raw)?;
        let mut ecs = Ecs {
            timestamp: self.timestamp(raw)?,
            ..Ecs::default()
        };
        for (target, sources) in &self.fields {
            set_field(&mut ecs, *target, sources, raw)?;
        }
        let decided = self.outcome.as_ref().and_then(|o| o.decide(raw));
        let action = ecs.event_action.as_deref().unwrap_or("");
        let rule = self.rules.iter().find(|r| r.matches(action, raw));
        match rule {
            Some(rule) => {
                ecs.event_category = rule.category.clone();
                ecs.event_type = rule.kind.clone();
                for (target, sources) in &rule.fields {
                    set_field(&mut ecs, *target, sources, raw)?;
                }
            }
            None => ecs.event_type = vec!["info".to_owned()],
        }
        ecs.event_outcome = decided
            .or_else(|| rule.and_then(|r| r.outcome))
            .or_else(|| self.outcome.as_ref().map(|o| o.default))
            .unwrap_or_default();
        ecs.fill_related();
        Ok(ecs)
    }
}

/// Set `target` from the first of `sources` with a value in `raw`; a missing action is an error,
/// any other missing field is left as it is.
fn set_field(
    ecs: &mut Ecs,
    target: EcsField,
    sources: &[FieldSource],
    raw: &Value,
) -> Result<(), NormalizeError> {
    if matches!(target, EcsField::UserEmail | EcsField::TargetEmail) {
        set_email(ecs, target, sources, raw);
        return Ok(());
    }
    let Some((source, found)) = FieldSource::first(sources, raw) else {
        if target == EcsField::Action {
            return Err(NormalizeError::MissingField(sources[0].text().to_owned()));
        }
        return Ok(());
    };
    let s = match found {
        Found::Value(v) if target == EcsField::AsNumber => {
            ecs.source_as_number = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
            return Ok(());
        }
        Found::Value(v) => fields::scalar_string(v),
        Found::Text(t) => Some(t),
    };
    let Some(s) = s else {
        if target == EcsField::Action {
            return Err(NormalizeError::WrongType {
                field: source.text().to_owned(),
                expected: "string",
            });
        }
        return Ok(());
    };
    match target {
        EcsField::Action => ecs.event_action = Some(s),
        EcsField::UserName => ecs.user_name = Some(s),
        EcsField::UserEmail => ecs.user_email = Some(s),
        EcsField::UserId => ecs.user_id = Some(s),
        EcsField::TargetName => ecs.user_target_name = Some(s),
        EcsField::TargetEmail => ecs.user_target_email = Some(s),
        EcsField::TargetId => ecs.user_target_id = Some(s),
        EcsField::SourceIp => ecs.source_ip = fields::clean_ip(&s),
        EcsField::Country => ecs.source_geo_country_iso_code = fields::country_iso(&s),
        EcsField::UserAgent => ecs.user_agent_original = Some(s),
        EcsField::OrganizationId => ecs.organization_id = Some(s),
        EcsField::CloudAccountId => ecs.cloud_account_id = Some(s),
        EcsField::AsNumber => {}
    }
    Ok(())
}

/// An email field takes the first of `sources` whose value is an email: vendors keep display
/// names in the same places (OneLogin's `actor_user_name` is `Dana Kim`).
fn set_email(ecs: &mut Ecs, target: EcsField, sources: &[FieldSource], raw: &Value) {
    let email = sources
        .iter()
        .filter_map(|s| FieldSource::first(std::slice::from_ref(s), raw))
        .find_map(|(_, found)| {
            match found {
                Found::Value(v) => fields::scalar_string(v),
                Found::Text(t) => Some(t),
            }
            .filter(|s| fields::is_email(s))
        });
    let slot = match target {
        EcsField::UserEmail => &mut ecs.user_email,
        _ => &mut ecs.user_target_email,
    };
    if email.is_some() {
        *slot = email;
    }
}

impl OutcomeRule {
    /// The outcome the record's own values give, `None` when they do not decide.
    fn decide(&self, raw: &Value) -> Option<Outcome> {
        if self
            .failure_if_present
            .iter()
            .any(|p| p.resolve(raw).is_some())
        {
            return Some(Outcome::Failure);
        }
        if let Some(t) = JsonPath::first(&self.paths, raw).and_then(|(_, v)| decision_text(v)) {
            if self.success.iter().any(|s| s.eq_ignore_ascii_case(&t)) {
                return Some(Outcome::Success);
            }
            if self.failure.iter().any(|s| s.eq_ignore_ascii_case(&t)) {
                return Some(Outcome::Failure);
            }
        }
        None
    }
}

/// A string, boolean or whole-number value as the text outcome and rule patterns compare
/// against (an error code `0` is `"0"`).
fn decision_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match v.as_ref() {
        ValueRef::String(s) => Some(Cow::Borrowed(s)),
        ValueRef::Bool(true) => Some(Cow::Borrowed("true")),
        ValueRef::Bool(false) => Some(Cow::Borrowed("false")),
        ValueRef::Number(n) => n
            .as_i64()
            .map(|i| i.to_string())
            .or_else(|| n.as_u64().map(|u| u.to_string()))
            .map(Cow::Owned),
        _ => None,
    }
}

impl Rule {
    fn matches(&self, action: &str, raw: &Value) -> bool {
        (self.action.is_empty() || self.action.iter().any(|p| p.matches(action)))
            && self.when.iter().all(|(path, pats)| {
                let text = path.resolve(raw).and_then(decision_text);
                text.is_some_and(|t| pats.iter().any(|p| p.matches(&t)))
            })
    }
}

impl Normalizer for MappingNormalizer {
    fn source(&self) -> &str {
        &self.name
    }

    fn normalize_ecs(&self, raw: &Value) -> Result<Ecs, NormalizeError> {
        self.ecs(raw)
    }
}

/// Parse every bundled mapping (a failure here is a bug in the shipped files, caught by tests).
pub(crate) fn bundled() -> Vec<Result<MappingNormalizer, DetectError>> {
    BUNDLED_MAPPINGS
        .iter()
        .map(|(file, text)| {
            MappingNormalizer::from_toml(text, Path::new(&format!("mappings/{file}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::json;

    const MINIMAL: &str = r#"
name = "acme"
[detect]
key_sets = [["acme_event", "when"]]
[timestamp]
path = "when"
[fields]
"event.action" = "acme_event"
"user.email" = ["who.email", "/who/mail.addr"]
"source.ip" = "who.ip"
[outcome]
path = "ok"
success = ["true"]
failure = ["false"]
[[classify]]
action = ["login*"]
category = ["authentication"]
type = ["start"]
"#;

    fn acme() -> MappingNormalizer {
        MappingNormalizer::from_toml(MINIMAL, Path::new("acme.toml")).expect("valid mapping")
    }

    #[test]
    fn minimal_mapping_normalizes() {
        let m = acme();
        let raw = json!({"acme_event": "login_ok", "when": 1700000000, "who": {"mail.addr": "a@b.io", "ip": "198.51.100.2"}, "ok": false});
        assert!(m.matches(&raw));
        let ecs = m.ecs(&raw).expect("normalizes");
        assert_eq!(ecs.event_action.as_deref(), Some("login_ok"));
        assert_eq!(ecs.user_email.as_deref(), Some("a@b.io"));
        assert_eq!(ecs.event_outcome, Outcome::Failure);
        assert_eq!(ecs.event_category, vec!["authentication"]);
        assert_eq!(ecs.related_ip, vec!["198.51.100.2"]);
    }

    #[test]
    fn templates_join_values_and_fall_through_when_incomplete() {
        let text = MINIMAL.replace(
            "\"event.action\" = \"acme_event\"",
            "\"event.action\" = [\"{resource.type}.{resource.action}\", \"acme_event\"]\n\"user.id\" = \"acme:{who.id}\"",
        );
        let m = MappingNormalizer::from_toml(&text, Path::new("acme.toml")).expect("valid");
        let full = json!({"acme_event": "x", "when": 1700000000, "resource": {"type": "token", "action": "create"}, "who": {"id": 42}});
        let ecs = m.ecs(&full).expect("normalizes");
        assert_eq!(ecs.event_action.as_deref(), Some("token.create"));
        assert_eq!(ecs.user_id.as_deref(), Some("acme:42"));
        // A placeholder with no value (absent, empty, an object) skips the template.
        for resource in [
            json!({"type": "token"}),
            json!({"type": "token", "action": ""}),
            json!({"type": {}, "action": "create"}),
        ] {
            let partial =
                json!({"acme_event": "login_ok", "when": 1700000000, "resource": resource});
            let ecs = m.ecs(&partial).expect("normalizes");
            assert_eq!(ecs.event_action.as_deref(), Some("login_ok"));
            assert_eq!(ecs.user_id, None);
        }
    }

    #[test]
    fn a_quoted_constant_is_the_last_resort_of_its_field() {
        let text = MINIMAL.replace(
            "\"event.action\" = \"acme_event\"",
            "\"event.action\" = [\"acme_event\", \"'sign-in'\"]",
        );
        let m = MappingNormalizer::from_toml(&text, Path::new("acme.toml")).expect("valid");
        let named = json!({"acme_event": "logout", "when": 1700000000});
        assert_eq!(
            m.ecs(&named).unwrap().event_action.as_deref(),
            Some("logout")
        );
        let unnamed = json!({"when": 1700000000});
        assert_eq!(
            m.ecs(&unnamed).unwrap().event_action.as_deref(),
            Some("sign-in")
        );
        let empty = MINIMAL.replace(
            "\"event.action\" = \"acme_event\"",
            "\"event.action\" = \"' '\"",
        );
        let err = MappingNormalizer::from_toml(&empty, Path::new("acme.toml"))
            .expect_err("an empty constant")
            .to_string();
        assert!(err.contains("acme.toml") && err.contains("empty"), "{err}");
    }

    #[test]
    fn malformed_templates_are_rejected_naming_the_field() {
        for (field, template, reason) in [
            ("event.action", "{resource.type", "without its `}`"),
            ("event.action", "resource}.{type}", "without its `{`"),
            ("event.action", "{}.x", "empty segment"),
            ("source.as.number", "{asn}", "not a template"),
        ] {
            let text = format!("{MINIMAL}\n").replace(
                "\"event.action\" = \"acme_event\"",
                &format!(
                    "\"event.action\" = \"acme_event\"\n\"{field}\" = [\"x\", \"{template}\"]"
                ),
            );
            let text = if field == "event.action" {
                text.replacen("\"event.action\" = \"acme_event\"\n", "", 1)
            } else {
                text
            };
            let err = MappingNormalizer::from_toml(&text, Path::new("acme.toml"))
                .expect_err(template)
                .to_string();
            assert!(
                err.contains("acme.toml") && err.contains(field) && err.contains(reason),
                "{template}: {err}"
            );
        }
    }

    #[test]
    fn classify_rules_set_the_fields_of_their_kind_of_record() {
        let text = format!(
            "{MINIMAL}\n[[classify]]\nwhen = {{ \"kind\" = [\"member\"] }}\ncategory = [\"iam\"]\ntype = [\"user\", \"change\"]\n\
             fields = {{ \"user.target.name\" = \"target.name\", \"user.email\" = \"member.email\" }}\n"
        );
        let m = MappingNormalizer::from_toml(&text, Path::new("acme.toml")).expect("valid");
        let member = json!({"acme_event": "role_changed", "when": 1700000000, "kind": "member",
                            "target": {"name": "Dana Kim"}, "who": {"email": "it@acme.test"}, "member": {"email": "lee@acme.test"}});
        let ecs = m.ecs(&member).expect("normalizes");
        assert_eq!(ecs.event_category, vec!["iam"]);
        assert_eq!(ecs.user_target_name.as_deref(), Some("Dana Kim"));
        // A value the rule finds wins over `[fields]`, and lands in related.user.
        assert_eq!(ecs.user_email.as_deref(), Some("lee@acme.test"));
        assert!(
            ecs.related_user.iter().any(|u| u == "Dana Kim"),
            "{:?}",
            ecs.related_user
        );
        // Another kind of record keeps `[fields]` alone, even with the same keys present.
        let flag = json!({"acme_event": "flag_changed", "when": 1700000000, "kind": "flag",
                          "target": {"name": "new-checkout"}, "who": {"email": "it@acme.test"}});
        let ecs = m.ecs(&flag).expect("normalizes");
        assert_eq!(ecs.user_target_name, None);
        assert_eq!(ecs.user_email.as_deref(), Some("it@acme.test"));
        // The action is resolved before the rules run, so a rule cannot set it.
        let bad = text.replace(
            "fields = { \"user.target.name\"",
            "fields = { \"event.action\" = \"x\", \"user.target.name\"",
        );
        let err = MappingNormalizer::from_toml(&bad, Path::new("acme.toml"))
            .expect_err("event.action in a rule")
            .to_string();
        assert!(
            err.contains("classify[1].fields") && err.contains("event.action"),
            "{err}"
        );
    }

    #[test]
    fn missing_and_mistyped_fields_are_errors() {
        let m = acme();
        assert_eq!(m.ecs(&json!([1])), Err(NormalizeError::NotAnObject));
        assert_eq!(
            m.ecs(&json!({"when": 1})),
            Err(NormalizeError::MissingField("acme_event".into()))
        );
        assert!(matches!(
            m.ecs(&json!({"acme_event": {"x": 1}, "when": 1})),
            Err(NormalizeError::WrongType { .. })
        ));
        assert!(matches!(
            m.ecs(&json!({"acme_event": "x", "when": "nope"})),
            Err(NormalizeError::BadTimestamp { .. })
        ));
        assert!(!m.matches(&json!({"acme_event": "x"})));
    }

    #[test]
    fn bad_mapping_files_name_file_and_problem() {
        // Each broken copy, what its error must say, and the text on the line it must name (a
        // problem found after parsing is located in the file too; QA).
        let cases = [
            (
                MINIMAL.replace("name = \"acme\"", "name = \"acme\"\nbogus = 1"),
                "unknown field `bogus`",
                None,
            ),
            (
                MINIMAL.replace(
                    "\"event.action\" = \"acme_event\"",
                    "\"event.actoin\" = \"acme_event\"",
                ),
                "event.actoin",
                Some("\"event.actoin\""),
            ),
            (
                MINIMAL.replace("category = [\"authentication\"]", "category = [\"logins\"]"),
                "`logins` is not an ECS event.category",
                Some("category = [\"logins\"]"),
            ),
            (
                MINIMAL.replace("action = [\"login*\"]", "action = [\"lo*gin\"]"),
                "only allowed at the start or end",
                Some("action = [\"lo*gin\"]"),
            ),
            (
                MINIMAL.replace("name = \"acme\"", "name = \"Acme!\""),
                "lowercase",
                None,
            ),
            (
                MINIMAL.replace("path = \"when\"", "path = \"when\"\nformat = \"%Q\""),
                "not a valid strftime",
                Some("format = \"%Q\""),
            ),
            (
                MINIMAL.replace("key_sets = [[\"acme_event\", \"when\"]]", "key_sets = []"),
                "detect.key_sets",
                Some("key_sets = []"),
            ),
            (
                MINIMAL.replace("\"source.ip\" = \"who.ip\"", "\"source.ip\" = \"who..ip\""),
                "empty segment",
                Some("\"source.ip\" = \"who..ip\""),
            ),
        ];
        for (text, want, line_with) in cases {
            let err = MappingNormalizer::from_toml(&text, Path::new("mappings/acme.wrongkey.toml"))
                .expect_err("must be rejected")
                .to_string();
            assert!(err.contains("mappings/acme.wrongkey.toml"), "{err}");
            assert!(err.contains(want), "{err} should mention {want}");
            if let Some(marker) = line_with {
                let line = text.lines().position(|l| l.contains(marker)).unwrap() + 1;
                assert!(
                    err.contains(&format!("line {line}: ")),
                    "{err} should name line {line}"
                );
            }
        }
    }

    /// The place an error names is found in the file: a key of a table, the n-th table of an
    /// array of tables, a quoted key holding dots; a place not in the file gives no line.
    #[test]
    fn an_error_place_is_found_on_its_line() {
        let text = "name = \"x\"\n[fields]\n\"user.name\" = \"a\"\n\n[[classify]]\naction = [\"a\"]\n\n[[classify]]\naction = [\"b\"]\ncategory = [\"iam\"]\n";
        assert_eq!(line_of(text, "fields.\"user.name\""), Some(3));
        assert_eq!(line_of(text, "classify[1].category"), Some(10));
        assert_eq!(line_of(text, "classify[0].action"), Some(6));
        // The innermost part found: the second table, for a key it does not have.
        assert_eq!(line_of(text, "classify[1].type"), Some(8));
        assert_eq!(line_of(text, "nothing"), None);
        assert_eq!(
            with_line(text, "classify[0].action: bad".into()),
            "line 6: classify[0].action: bad"
        );
        assert_eq!(with_line(text, "no place here".into()), "no place here");
    }

    #[test]
    fn explicit_timestamp_format() {
        let text = MINIMAL.replace(
            "path = \"when\"",
            "path = \"when\"\nformat = \"%d/%m/%Y %H:%M:%S\"",
        );
        let m = MappingNormalizer::from_toml(&text, Path::new("acme.toml")).expect("valid");
        let ecs = m
            .ecs(&json!({"acme_event": "x", "when": "24/06/2021 00:04:08"}))
            .expect("parses");
        assert_eq!(
            ecs.timestamp.map(|t| t.to_rfc3339()),
            Some("2021-06-24T00:04:08+00:00".into())
        );
        assert!(m
            .ecs(&json!({"acme_event": "x", "when": "2021-06-24"}))
            .is_err());
    }

    #[test]
    fn patterns() {
        let p = |s: &str| Pattern::parse(s).expect("valid");
        assert!(p("user_*").matches("user_login"));
        assert!(!p("user_*").matches("a_user_login"));
        assert!(p("*_failed").matches("login_failed"));
        assert!(p("*down*").matches("file_download"));
        assert!(p("*").matches(""));
        assert!(p("LOGIN").matches("LOGIN") && !p("LOGIN").matches("LOGINS"));
    }

    /// The example in `detect/README.md` ("Writing a mapping") is a valid mapping.
    #[test]
    fn readme_example_mapping_compiles() {
        let readme = include_str!("../../README.md");
        let section = readme
            .find("## Normalize")
            .expect("README has a Normalize section");
        let start = section
            + readme[section..]
                .find("```toml\n")
                .expect("README has a toml example")
            + "```toml\n".len();
        let len = readme[start..].find("```").expect("closed block");
        let m = MappingNormalizer::from_toml(&readme[start..start + len], Path::new("README.md"))
            .expect("valid");
        let raw = json!({"event_id": 1, "kind": "audit", "action": "login_failed", "ts": "2024-01-01T00:00:00Z",
            "client": {"kind": "web", "ip.address": "198.51.100.9"}, "target": [{"email": "t@x.io"}]});
        assert!(m.matches(&raw));
        let ecs = m.ecs(&raw).expect("normalizes");
        assert_eq!(ecs.source_ip.as_deref(), Some("198.51.100.9"));
        assert_eq!(ecs.user_target_email.as_deref(), Some("t@x.io"));
        assert_eq!(ecs.event_category, vec!["authentication"]);
    }

    #[test]
    fn every_bundled_mapping_compiles() {
        for m in bundled() {
            m.expect("bundled mapping is valid");
        }
    }
}
