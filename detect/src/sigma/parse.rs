//! Sigma documents -> compiled rules: detection rules, correlation rules and filters. Every error
//! names the file, line and key it comes from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::condition::{parse_condition, Cond};
use super::logsource::{default_sources, LogSource};
use super::matcher::{Detection, Selection};
use super::modifiers::{compile_field, CompileCtx};
use super::pipeline_map::Pipelines;
use super::yaml::{load_documents, Node, Value};
use super::RuleError;

/// Metadata shared by every kind of rule.
#[derive(Debug, Clone, Default)]
pub struct RuleMeta {
    pub id: Option<String>,
    pub name: Option<String>,
    pub title: String,
    pub level: Option<String>,
    pub status: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub references: Vec<String>,
    pub logsource: LogSource,
    pub path: PathBuf,
    pub line: usize,
    /// The line of the `id` key (the document's first line without one).
    pub id_line: usize,
    /// The line of the `name` key (the document's first line without one).
    pub name_line: usize,
    /// The line of `logsource`'s `product` (else `service`, else `logsource`, else the
    /// document's first line): where a misspelt source is.
    pub logsource_line: usize,
    /// BLAKE3 hex of the whole rule file.
    pub rule_hash: String,
    /// Perimeter extension: the field that names the alert's entity.
    pub entity_field: Option<String>,
    /// Perimeter extension: this rule's own `alert_group_seconds` (the store's grouping of
    /// repeats for one entity; `0`: every match is an alert of its own).
    pub alert_group_seconds: Option<u64>,
    /// What the Sigma specification forbids in the rule's metadata but the engine can run
    /// with (a 300-character title, `status: wip`, a date not `YYYY-MM-DD`): `rules check`
    /// warns, the rule loads, so public rules are not refused over style.
    pub warnings: Vec<RuleError>,
}

impl RuleMeta {
    /// The id alerts carry: `id`, else `name`, else the title.
    pub fn key(&self) -> &str {
        self.id
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or(&self.title)
    }

    pub fn is_referenced_by(&self, reference: &str) -> bool {
        self.id.as_deref() == Some(reference) || self.name.as_deref() == Some(reference)
    }
}

#[derive(Debug, Clone)]
pub struct DetectionRule {
    pub meta: RuleMeta,
    pub detection: Detection,
    /// Sources this rule runs on; `None` = every source.
    pub sources: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct FilterRule {
    pub meta: RuleMeta,
    /// Ids or names of the rules the filter applies to.
    pub rules: Vec<String>,
    /// The line of each of `rules` (for errors about a reference).
    pub rule_lines: Vec<usize>,
    pub detection: Detection,
    pub sources: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorrelationType {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
    ValueSum,
    ValueAvg,
    ValuePercentile,
}

impl CorrelationType {
    pub fn as_str(&self) -> &'static str {
        match self {
            CorrelationType::EventCount => "event_count",
            CorrelationType::ValueCount => "value_count",
            CorrelationType::Temporal => "temporal",
            CorrelationType::TemporalOrdered => "temporal_ordered",
            CorrelationType::ValueSum => "value_sum",
            CorrelationType::ValueAvg => "value_avg",
            CorrelationType::ValuePercentile => "value_percentile",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CountOp {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Neq,
}

impl CountOp {
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CountOp::Gt => a > b,
            CountOp::Gte => a >= b,
            CountOp::Lt => a < b,
            CountOp::Lte => a <= b,
            CountOp::Eq => a == b,
            CountOp::Neq => a != b,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CorrelationRule {
    pub meta: RuleMeta,
    pub kind: CorrelationType,
    pub rules: Vec<String>,
    /// The line of each of `rules` (for errors about a reference).
    pub rule_lines: Vec<usize>,
    pub group_by: Vec<String>,
    pub timespan_ms: i64,
    /// All must hold (a range is several entries).
    pub condition: Vec<(CountOp, f64)>,
    /// `condition.field`: what is counted, summed or averaged. `value_count` takes several
    /// (linked by AND, as the specification says: a value is the combination of theirs); the
    /// others one.
    pub fields: Vec<String>,
    /// alias -> (rule id or name -> event field).
    pub aliases: HashMap<String, HashMap<String, String>>,
    /// Each rule an alias names, with its line (for errors about a reference).
    pub alias_rule_lines: Vec<(String, usize)>,
    pub generate: bool,
}

#[derive(Debug, Clone)]
pub enum RuleDoc {
    Detection(DetectionRule),
    Correlation(CorrelationRule),
    Filter(FilterRule),
}

impl RuleDoc {
    /// The document's metadata (title, id, name, file and lines).
    pub fn meta(&self) -> &RuleMeta {
        match self {
            RuleDoc::Detection(r) => &r.meta,
            RuleDoc::Correlation(r) => &r.meta,
            RuleDoc::Filter(r) => &r.meta,
        }
    }
}

fn rerr(path: &Path, line: usize, field: Option<&str>, message: impl Into<String>) -> RuleError {
    RuleError {
        path: path.to_path_buf(),
        line: Some(line),
        field: field.map(str::to_string),
        message: message.into(),
    }
}

fn str_list(node: &Node, path: &Path, key: &str) -> Result<Vec<String>, RuleError> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .map(|i| {
                i.scalar_text()
                    .ok_or_else(|| rerr(path, i.line, Some(key), "expected a list of strings"))
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => node.scalar_text().map(|s| vec![s]).ok_or_else(|| {
            rerr(
                path,
                node.line,
                Some(key),
                "expected a string or a list of strings",
            )
        }),
    }
}

fn opt_str(doc: &Node, key: &str, path: &Path) -> Result<Option<String>, RuleError> {
    match doc.get(key) {
        None => Ok(None),
        Some(n) if n.value == Value::Null => Ok(None),
        Some(n) => n.scalar_text().map(Some).ok_or_else(|| {
            rerr(
                path,
                n.line,
                Some(key),
                format!("expected a string, found a {}", n.kind()),
            )
        }),
    }
}

/// Parse every document of one file. Returns the documents that compiled and the errors of the
/// others (one bad document does not hide the good ones).
pub fn parse_file(
    path: &Path,
    text: &str,
    pipelines: &Pipelines,
) -> (Vec<RuleDoc>, Vec<RuleError>) {
    // Some Windows editors start a UTF-8 file with a byte order mark; the YAML parser would
    // read it as part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let docs = match load_documents(text) {
        Ok(d) => d,
        Err(e) => {
            return (
                Vec::new(),
                vec![rerr(
                    path,
                    e.line,
                    None,
                    format!("invalid YAML: {}", e.message),
                )],
            )
        }
    };
    if docs.is_empty() {
        return (
            Vec::new(),
            vec![RuleError {
                path: path.to_path_buf(),
                line: None,
                field: None,
                message: "no YAML document".into(),
            }],
        );
    }
    let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for doc in &docs {
        match parse_doc(doc, path, &hash, pipelines) {
            Ok(d) => out.push(d),
            Err(e) => errors.push(e),
        }
    }
    (out, errors)
}

fn parse_meta(doc: &Node, path: &Path, hash: &str) -> Result<RuleMeta, RuleError> {
    let Some(keys) = doc.as_map() else {
        return Err(rerr(
            path,
            doc.line,
            None,
            format!("a Sigma document must be a map, found a {}", doc.kind()),
        ));
    };
    // What a merge key brings in (`<<: *defaults` with `level: critical`) was dropped without
    // a word (QA): refused, here and in the detection.
    if let Some((_, merged)) = keys.iter().find(|(k, _)| k == "<<") {
        return Err(rerr(path, merged.line, Some("<<"), MERGE_KEYS_UNSUPPORTED));
    }
    let title = opt_str(doc, "title", path)?
        .ok_or_else(|| rerr(path, doc.line, Some("title"), "missing `title`"))?;
    let level = opt_str(doc, "level", path)?;
    if let Some(l) = &level {
        if perimeter_model::Severity::parse(l).is_none() {
            let line = doc.get("level").map(|n| n.line).unwrap_or(doc.line);
            return Err(rerr(
                path,
                line,
                Some("level"),
                format!("unknown level `{l}` (informational, low, medium, high, critical)"),
            ));
        }
    }
    let mut logsource = LogSource::default();
    if let Some(ls) = doc.get("logsource") {
        if ls.as_map().is_none() {
            return Err(rerr(
                path,
                ls.line,
                Some("logsource"),
                "`logsource` must be a map",
            ));
        }
        logsource.product = opt_str(ls, "product", path)?;
        logsource.service = opt_str(ls, "service", path)?;
        logsource.category = opt_str(ls, "category", path)?;
    }
    Ok(RuleMeta {
        id: opt_str(doc, "id", path)?,
        name: opt_str(doc, "name", path)?,
        title,
        level,
        status: opt_str(doc, "status", path)?,
        description: opt_str(doc, "description", path)?,
        tags: doc
            .get("tags")
            .map(|n| str_list(n, path, "tags"))
            .transpose()?
            .unwrap_or_default(),
        references: doc
            .get("references")
            .map(|n| str_list(n, path, "references"))
            .transpose()?
            .unwrap_or_default(),
        logsource,
        path: path.to_path_buf(),
        line: doc.line,
        id_line: doc.get("id").map_or(doc.line, |n| n.line),
        name_line: doc.get("name").map_or(doc.line, |n| n.line),
        logsource_line: doc.get("logsource").map_or(doc.line, |ls| {
            ls.get("product")
                .or(ls.get("service"))
                .map_or(ls.line, |n| n.line)
        }),
        rule_hash: hash.to_string(),
        entity_field: opt_str(doc, "entity_field", path)?,
        alert_group_seconds: opt_seconds(doc, "alert_group_seconds", path)?,
        warnings: spec_warnings(doc, path),
    })
}

/// The Sigma specification's rules for metadata (rules specification and its JSON schema) that
/// a rule breaks: each a warning naming line and field.
/// Whether `tag` fits the rule schema's pattern for tags, `^[a-z0-9_-]+\.[a-z0-9._-]+$`.
fn is_spec_tag(tag: &str) -> bool {
    let part = |s: &str, dot: bool| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-')
                    || (dot && b == b'.')
            })
    };
    tag.split_once('.')
        .is_some_and(|(namespace, rest)| part(namespace, false) && part(rest, true))
}

/// Why a YAML merge key is refused.
const MERGE_KEYS_UNSUPPORTED: &str =
    "YAML merge keys (`<<`) are not supported: write the keys out (anchors and aliases of whole values work)";

fn spec_warnings(doc: &Node, path: &Path) -> Vec<RuleError> {
    let mut out = Vec::new();
    let mut warn = |node: &Node, field: &str, message: String| {
        out.push(rerr(path, node.line, Some(field), message));
    };
    // Public rules carry it; it only ever worked with the v1 aggregations, which are refused.
    if let Some(t) = doc.get("detection").and_then(|d| d.get("timeframe")) {
        warn(
            t,
            "detection.timeframe",
            "has no effect: it belonged to Sigma v1 aggregations; count over a window with a correlation rule (`timespan`)".into(),
        );
    }
    // A misspelt key (`prodcut: okta`) left the rule without a product: it ran on every
    // source (QA).
    const LOGSOURCE_KEYS: [&str; 4] = ["category", "product", "service", "definition"];
    for (key, value) in doc
        .get("logsource")
        .and_then(Node::as_map)
        .unwrap_or_default()
    {
        if !LOGSOURCE_KEYS.contains(&key.as_str()) {
            warn(
                value,
                &format!("logsource.{key}"),
                format!(
                    "`{key}` is no logsource key ({}): it does not narrow the rule, which applies to every source it does not otherwise exclude",
                    LOGSOURCE_KEYS.join(", ")
                ),
            );
        }
    }
    if let Some(t) = doc.get("title") {
        match t.as_str() {
            Some(title) if title.chars().count() > 256 => warn(
                t,
                "title",
                format!("longer than 256 characters ({})", title.chars().count()),
            ),
            Some(_) => {}
            None => warn(
                t,
                "title",
                format!("should be a string, found a {}", t.kind()),
            ),
        }
    }
    const STATUSES: [&str; 5] = [
        "stable",
        "test",
        "experimental",
        "deprecated",
        "unsupported",
    ];
    if let Some(n) = doc.get("status") {
        if !n.as_str().is_some_and(|v| STATUSES.contains(&v)) {
            let found = n.scalar_text().unwrap_or_else(|| n.kind().to_string());
            warn(
                n,
                "status",
                format!("`{found}` is none of {}", STATUSES.join(", ")),
            );
        }
    }
    for key in ["date", "modified"] {
        if let Some(n) = doc.get(key) {
            let text = n.scalar_text().unwrap_or_default();
            if chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").is_err() || text.len() != 10 {
                warn(n, key, format!("`{text}` is not a date written YYYY-MM-DD"));
            }
        }
    }
    if let Some(n) = doc.get("tags") {
        match &n.value {
            Value::Seq(items) => {
                // The schema's pattern: a lower-case namespace, a dot, the tag
                // (`attack.t1098`, `cve.2021-44228`).
                for item in items {
                    let tag = item.scalar_text().unwrap_or_default();
                    if !is_spec_tag(&tag) {
                        warn(
                            item,
                            "tags",
                            format!("`{tag}` is not `namespace.tag` in lower case (e.g. `attack.t1098`)"),
                        );
                    }
                }
            }
            Value::Null => {}
            _ => warn(n, "tags", "should be a list".into()),
        }
    }
    const RELATIONS: [&str; 5] = ["derived", "obsolete", "merged", "renamed", "similar"];
    if let Some(Value::Seq(items)) = doc.get("related").map(|n| &n.value) {
        for item in items {
            if let Some(t) = item.get("type") {
                if !t.as_str().is_some_and(|v| RELATIONS.contains(&v)) {
                    let found = t.scalar_text().unwrap_or_default();
                    warn(
                        t,
                        "related.type",
                        format!("`{found}` is none of {}", RELATIONS.join(", ")),
                    );
                }
            }
        }
    }
    if doc.get("filter").is_some() && doc.get("logsource").is_none() {
        warn(
            doc,
            "logsource",
            "a filter should name its `logsource`".into(),
        );
    }
    // Value lists in the search identifiers (modifiers appendix, rules specification).
    let section = doc.get("detection").or_else(|| doc.get("filter"));
    for (ident, body) in section.and_then(Node::as_map).unwrap_or_default() {
        let maps: Vec<&Node> = match &body.value {
            Value::Map(_) => vec![body],
            Value::Seq(items) => items.iter().filter(|i| i.as_map().is_some()).collect(),
            _ => Vec::new(),
        };
        for map in maps {
            for (field, values) in map.as_map().unwrap_or_default() {
                let name = format!("detection.{ident}.{field}");
                match &values.value {
                    Value::Seq(items) if items.iter().any(|i| i.value == Value::Null) => warn(
                        values,
                        &name,
                        "`null` cannot be part of a list of values (use a selection of its own)"
                            .into(),
                    ),
                    Value::Seq(items) if items.len() > 1 => {}
                    _ if field.split('|').any(|m| m == "all") => warn(
                        values,
                        &name,
                        "`all` is for a list of values; a single value has nothing to join".into(),
                    ),
                    _ => {}
                }
            }
        }
    }
    out
}

/// An optional whole number of seconds, at most a year.
fn opt_seconds(doc: &Node, key: &str, path: &Path) -> Result<Option<u64>, RuleError> {
    const MAX: i64 = 366 * 86_400;
    match doc.get(key) {
        None => Ok(None),
        Some(n) if n.value == Value::Null => Ok(None),
        Some(Node {
            value: Value::Int(i),
            ..
        }) if (0..=MAX).contains(i) => Ok(Some(*i as u64)),
        Some(n) => Err(rerr(
            path,
            n.line,
            Some(key),
            format!(
                "expected whole seconds from 0 to {MAX}, found {}",
                n.scalar_text().unwrap_or_else(|| format!("a {}", n.kind()))
            ),
        )),
    }
}

fn rule_sources(ls: &LogSource, pipelines: &Pipelines) -> Option<Vec<String>> {
    pipelines.sources_for(ls).or_else(|| default_sources(ls))
}

fn parse_doc(
    doc: &Node,
    path: &Path,
    hash: &str,
    pipelines: &Pipelines,
) -> Result<RuleDoc, RuleError> {
    if let Some(a) = doc.get("action") {
        return Err(rerr(
            path,
            a.line,
            Some("action"),
            "`action: global`/`repeat` collections are legacy Sigma v1 syntax and not supported; write separate rules",
        ));
    }
    // A correlation and a global filter are documents of their own (correlation and filter
    // specifications): a second section beside one would be dropped without a word.
    let sections = ["correlation", "filter", "detection"];
    let present: Vec<(&str, usize)> = sections
        .iter()
        .filter_map(|k| doc.get(k).map(|n| (*k, n.line)))
        .collect();
    if let [(first, _), (second, line), ..] = present[..] {
        return Err(rerr(
            path,
            line,
            Some(second),
            format!("a rule document holds both `{first}` and `{second}`; write each as a document of its own (separated by `---`)"),
        ));
    }
    let meta = parse_meta(doc, path, hash)?;
    if let Some(c) = doc.get("correlation") {
        return parse_correlation(c, doc.get("generate"), meta, path).map(RuleDoc::Correlation);
    }
    let sources = rule_sources(&meta.logsource, pipelines);
    if let Some(f) = doc.get("filter") {
        if f.as_map().is_none() {
            return Err(rerr(path, f.line, Some("filter"), "`filter` must be a map"));
        }
        let (rules, rule_lines) = match f.get("rules") {
            Some(r) => {
                let lines = match &r.value {
                    Value::Seq(items) => items.iter().map(|i| i.line).collect(),
                    _ => vec![r.line],
                };
                let rules = str_list(r, path, "filter.rules")?;
                if rules.is_empty() {
                    return Err(rerr(
                        path,
                        r.line,
                        Some("filter.rules"),
                        "`rules` is empty: a filter applies to the rules it names",
                    ));
                }
                (rules, lines)
            }
            None => {
                return Err(rerr(
                    path,
                    f.line,
                    Some("filter.rules"),
                    "a filter needs `rules`",
                ))
            }
        };
        let detection = parse_detection(f, path, &["rules"], pipelines, sources.as_deref())?;
        // Besides `rules` and `condition`, a filter holds search identifiers; one its condition
        // never uses and that is spelt like one of those two (`rule`, `conditon`) is a misspelt
        // key. Other unused identifiers load, as they do in a detection.
        let used = detection.condition.selections_used();
        let misspelt = |name: &str| {
            ["rules", "condition"]
                .iter()
                .any(|k| super::edit_distance(&name.to_ascii_lowercase(), k) <= 2)
        };
        if let Some(unused) = detection
            .selections
            .iter()
            .enumerate()
            .find(|(i, s)| !used.contains(i) && misspelt(&s.name))
            .map(|(_, s)| s)
        {
            return Err(rerr(
                path,
                unused.line,
                Some(&format!("filter.{}", unused.name)),
                format!(
                    "unknown key `{}` in `filter` (a misspelt `rules` or `condition`? the condition does not use it)",
                    unused.name
                ),
            ));
        }
        return Ok(RuleDoc::Filter(FilterRule {
            meta,
            rules,
            rule_lines,
            detection,
            sources,
        }));
    }
    let Some(det) = doc.get("detection") else {
        return Err(rerr(
            path,
            doc.line,
            Some("detection"),
            "missing `detection` (or `correlation` / `filter`)",
        ));
    };
    if doc.get("logsource").is_none() {
        return Err(rerr(
            path,
            doc.line,
            Some("logsource"),
            "missing `logsource`",
        ));
    }
    let detection = parse_detection(det, path, &["timeframe"], pipelines, sources.as_deref())?;
    Ok(RuleDoc::Detection(DetectionRule {
        meta,
        detection,
        sources,
    }))
}

/// Parse a detection section (also a filter's body): search identifiers plus `condition`.
pub fn parse_detection(
    det: &Node,
    path: &Path,
    skip: &[&str],
    pipelines: &Pipelines,
    sources: Option<&[String]>,
) -> Result<Detection, RuleError> {
    let Some(entries) = det.as_map() else {
        return Err(rerr(
            path,
            det.line,
            Some("detection"),
            format!("`detection` must be a map, found a {}", det.kind()),
        ));
    };
    let field_map = |f: &str| pipelines.map_field(f, sources);
    let ctx = CompileCtx {
        placeholders: &pipelines.placeholders,
        field_map: &field_map,
    };
    let mut selections = Vec::new();
    let mut condition_node = None;
    for (name, node) in entries {
        if name == "condition" {
            condition_node = Some(node);
            continue;
        }
        if skip.contains(&name.as_str()) {
            continue;
        }
        if let Some(why) = misplaced_identifier(name) {
            return Err(rerr(path, node.line, Some(name), why));
        }
        selections.push(parse_selection(name, node, path, &ctx)?);
    }
    let Some(cn) = condition_node else {
        return Err(rerr(
            path,
            det.line,
            Some("condition"),
            "missing `condition`",
        ));
    };
    let names: Vec<String> = selections
        .iter()
        .map(|s: &Selection| s.name.clone())
        .collect();
    let texts: Vec<(String, usize)> = match &cn.value {
        Value::Str(s) => vec![(s.clone(), cn.line)],
        Value::Seq(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(|s| (s.to_string(), i.line))
                    .ok_or_else(|| rerr(path, i.line, Some("condition"), "expected a string"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(rerr(
                path,
                cn.line,
                Some("condition"),
                "`condition` must be a string or a list of strings",
            ))
        }
    };
    if texts.is_empty() {
        return Err(rerr(path, cn.line, Some("condition"), "empty condition"));
    }
    // A rule key indented under `detection:` (`level: critical`) became a search identifier,
    // and the rule alerted at the default level without a word (QA); `1 of them` would even
    // search for its value. Kept only when the condition names it, or a pattern of it
    // (`1 of status*`), not `them`.
    for (name, node) in entries {
        let named = texts.iter().any(|(t, _)| {
            t.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
                .any(|word| match word.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => word == name,
                })
        });
        if RULE_KEYS.contains(&name.as_str()) && !named {
            return Err(rerr(
                path,
                node.line,
                Some(name),
                format!("`{name}` under `detection:` would be a search identifier; as a rule key it goes at the top level (check its indentation)"),
            ));
        }
    }
    let mut conds = Vec::new();
    for (t, line) in texts {
        conds
            .push(parse_condition(&t, &names).map_err(|m| rerr(path, line, Some("condition"), m))?);
    }
    let condition = if conds.len() == 1 {
        conds.remove(0)
    } else {
        Cond::Or(conds)
    };
    Ok(Detection {
        selections,
        condition,
    })
}

/// Top-level keys of a Sigma rule (and Perimeter's own), which indented under `detection:` would
/// be taken as search identifiers.
const RULE_KEYS: [&str; 18] = [
    "entity_field",
    "alert_group_seconds",
    "title",
    "id",
    "name",
    "status",
    "description",
    "author",
    "references",
    "level",
    "tags",
    "falsepositives",
    "date",
    "modified",
    "logsource",
    "fields",
    "related",
    "license",
];

/// Why `name` cannot be a search identifier's name, when it cannot.
fn misplaced_identifier(name: &str) -> Option<String> {
    if name == "<<" {
        return Some(MERGE_KEYS_UNSUPPORTED.into());
    }
    // `keywords|all:` was an identifier named `keywords|all`, its modifier dropped (QA).
    name.contains('|').then(|| {
        format!(
            "a modifier belongs on a field name, not on a search identifier (`{name}`); for a keyword list write `'|all':` (or another modifier) as the one key inside it"
        )
    })
}

fn parse_selection(
    name: &str,
    node: &Node,
    path: &Path,
    ctx: &CompileCtx<'_>,
) -> Result<Selection, RuleError> {
    let field_err =
        |e: super::modifiers::ModError, key: &str| rerr(path, e.line, Some(key), e.message);
    let map_alt = |m: &[(String, Node)]| -> Result<Vec<super::matcher::FieldMatch>, RuleError> {
        m.iter()
            .map(|(k, v)| {
                if k == "<<" {
                    return Err(rerr(
                        path,
                        v.line,
                        Some(&format!("{name}.<<")),
                        MERGE_KEYS_UNSUPPORTED,
                    ));
                }
                compile_field(k, v, ctx).map_err(|e| field_err(e, &format!("{name}.{k}")))
            })
            .collect()
    };
    let alternatives = match &node.value {
        Value::Map(m) => {
            if m.is_empty() {
                return Err(rerr(path, node.line, Some(name), "empty selection"));
            }
            vec![map_alt(m)?]
        }
        Value::Seq(items) => {
            if items.is_empty() {
                return Err(rerr(path, node.line, Some(name), "empty selection"));
            }
            let mut alts = Vec::new();
            let scalars: Vec<Node> = items
                .iter()
                .filter(|i| i.as_map().is_none())
                .cloned()
                .collect();
            if !scalars.is_empty() {
                let list = Node {
                    line: node.line,
                    value: Value::Seq(scalars),
                };
                alts.push(vec![
                    compile_field("", &list, ctx).map_err(|e| field_err(e, name))?
                ]);
            }
            for i in items {
                if let Some(m) = i.as_map() {
                    if m.is_empty() {
                        return Err(rerr(path, i.line, Some(name), "empty map in selection"));
                    }
                    alts.push(map_alt(m)?);
                }
            }
            alts
        }
        Value::Str(_) | Value::Int(_) | Value::Float(_) => vec![vec![
            compile_field("", node, ctx).map_err(|e| field_err(e, name))?
        ]],
        _ => {
            return Err(rerr(
                path,
                node.line,
                Some(name),
                format!(
                    "a search identifier must be a map or a list, found a {}",
                    node.kind()
                ),
            ))
        }
    };
    Ok(Selection {
        name: name.to_string(),
        line: node.line,
        alternatives,
    })
}

/// `10s`, `5m`, `1h`, `7d` -> milliseconds. The correlation specification allows a number and
/// one of these four units "in lowercase", nothing else: `5M` (months to pySigma, minutes to a
/// reader) and `2w` are refused rather than guessed.
pub fn parse_timespan(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let mult = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    (n > 0).then_some(n.checked_mul(mult)?)
}

/// The keys of a `correlation` section (correlation specification and schema); `timeframe` is
/// the pre-2.0 name of `timespan`, still read.
const CORRELATION_KEYS: [&str; 8] = [
    "type",
    "rules",
    "aliases",
    "group-by",
    "timespan",
    "timeframe",
    "condition",
    "generate",
];

/// `top_generate`: a `generate` beside `correlation` (where the Sigma schema puts it), read like
/// one inside it (where pySigma reads it).
fn parse_correlation(
    c: &Node,
    top_generate: Option<&Node>,
    meta: RuleMeta,
    path: &Path,
) -> Result<CorrelationRule, RuleError> {
    if c.as_map().is_none() {
        return Err(rerr(
            path,
            c.line,
            Some("correlation"),
            "`correlation` must be a map",
        ));
    }
    // A misspelt key (`groupby` for `group-by`) would otherwise drop what it says: a per-IP
    // correlation would silently count every event together.
    for (key, node) in c.as_map().unwrap_or_default() {
        if !CORRELATION_KEYS.contains(&key.as_str()) {
            return Err(rerr(
                path,
                node.line,
                Some(&format!("correlation.{key}")),
                format!(
                    "unknown key `{key}` in `correlation` (expected one of {})",
                    CORRELATION_KEYS.join(", ")
                ),
            ));
        }
    }
    let type_node = c
        .get("type")
        .ok_or_else(|| rerr(path, c.line, Some("correlation.type"), "missing `type`"))?;
    let kind = match type_node.as_str().unwrap_or("") {
        "event_count" => CorrelationType::EventCount,
        "value_count" => CorrelationType::ValueCount,
        "temporal" => CorrelationType::Temporal,
        "temporal_ordered" => CorrelationType::TemporalOrdered,
        "value_sum" => CorrelationType::ValueSum,
        "value_avg" => CorrelationType::ValueAvg,
        "value_percentile" => CorrelationType::ValuePercentile,
        other => {
            return Err(rerr(
                path,
                type_node.line,
                Some("correlation.type"),
                format!("unknown correlation type `{other}`"),
            ))
        }
    };
    let rule_lines: Vec<usize>;
    let rules = match c.get("rules") {
        Some(r) => {
            rule_lines = match &r.value {
                Value::Seq(items) => items.iter().map(|i| i.line).collect(),
                _ => vec![r.line],
            };
            str_list(r, path, "correlation.rules")?
        }
        None => {
            return Err(rerr(
                path,
                c.line,
                Some("correlation.rules"),
                "missing `rules`",
            ))
        }
    };
    if rules.is_empty() {
        return Err(rerr(
            path,
            c.line,
            Some("correlation.rules"),
            "`rules` is empty",
        ));
    }
    let group_by = c
        .get("group-by")
        .map(|g| str_list(g, path, "correlation.group-by"))
        .transpose()?
        .unwrap_or_default();
    let ts_node = c
        .get("timespan")
        .or_else(|| c.get("timeframe"))
        .ok_or_else(|| {
            rerr(
                path,
                c.line,
                Some("correlation.timespan"),
                "missing `timespan`",
            )
        })?;
    let ts_text = ts_node.scalar_text().unwrap_or_default();
    let timespan_ms = parse_timespan(&ts_text).ok_or_else(|| {
        rerr(
            path,
            ts_node.line,
            Some("correlation.timespan"),
            format!(
                "invalid timespan `{ts_text}` (a whole number and a lowercase unit s, m, h or d: 30s, 5m, 1h, 1d)"
            ),
        )
    })?;
    let mut condition = Vec::new();
    // The key and line of each entry of `condition`, for errors.
    let mut condition_keys = Vec::new();
    let mut fields = Vec::new();
    let mut field_line = c.line;
    if let Some(cond) = c.get("condition") {
        let Some(entries) = cond.as_map() else {
            return Err(rerr(
                path,
                cond.line,
                Some("correlation.condition"),
                "`condition` must be a map (e.g. `gte: 10`)",
            ));
        };
        for (k, v) in entries {
            if k == "field" {
                fields = str_list(v, path, "correlation.condition.field")?;
                field_line = v.line;
                continue;
            }
            let op = match k.as_str() {
                "gt" => CountOp::Gt,
                "gte" => CountOp::Gte,
                "lt" => CountOp::Lt,
                "lte" => CountOp::Lte,
                "eq" => CountOp::Eq,
                "neq" => CountOp::Neq,
                other => {
                    return Err(rerr(
                        path,
                        v.line,
                        Some("correlation.condition"),
                        format!("unknown condition operator `{other}`"),
                    ))
                }
            };
            let n = match v.value {
                Value::Int(i) => i as f64,
                Value::Float(f) => f,
                _ => {
                    return Err(rerr(
                        path,
                        v.line,
                        Some("correlation.condition"),
                        format!("`{k}` needs a number"),
                    ))
                }
            };
            if !n.is_finite() {
                return Err(rerr(
                    path,
                    v.line,
                    Some("correlation.condition"),
                    format!("`{k}` needs a finite number"),
                ));
            }
            condition.push((op, n));
            condition_keys.push((k.as_str(), v.line));
        }
    }
    let needs_condition = !matches!(
        kind,
        CorrelationType::Temporal | CorrelationType::TemporalOrdered
    );
    if needs_condition && condition.is_empty() {
        return Err(rerr(
            path,
            c.line,
            Some("correlation.condition"),
            format!("`{}` needs a condition", kind.as_str()),
        ));
    }
    let needs_field = matches!(
        kind,
        CorrelationType::ValueCount
            | CorrelationType::ValueSum
            | CorrelationType::ValueAvg
            | CorrelationType::ValuePercentile
    );
    if !needs_field && !fields.is_empty() {
        // Counting events or rules reads no field: the author likely meant `value_count`.
        return Err(rerr(
            path,
            field_line,
            Some("correlation.condition.field"),
            format!(
                "`{}` reads no field (`condition.field` is for `value_count`, `value_sum`, `value_avg`, `value_percentile`)",
                kind.as_str()
            ),
        ));
    }
    if needs_field && fields.is_empty() {
        return Err(rerr(
            path,
            c.line,
            Some("correlation.condition.field"),
            format!("`{}` needs `condition.field`", kind.as_str()),
        ));
    }
    if fields.len() > 1 && kind != CorrelationType::ValueCount {
        return Err(rerr(
            path,
            field_line,
            Some("correlation.condition.field"),
            format!(
                "`{}` takes one field; only `value_count` counts several",
                kind.as_str()
            ),
        ));
    }
    // One rule has nothing to be near in time: the correlation would fire on each of its
    // events (or never wait for another), which an `event_count` says honestly.
    if matches!(
        kind,
        CorrelationType::Temporal | CorrelationType::TemporalOrdered
    ) && rules.len() < 2
    {
        return Err(rerr(
            path,
            rule_lines.first().copied().unwrap_or(c.line),
            Some("correlation.rules"),
            format!(
                "`{}` needs at least two rules (for one rule, use `event_count`)",
                kind.as_str()
            ),
        ));
    }
    check_condition_can_hold(kind, rules.len(), &condition, &condition_keys)
        .map_err(|(line, m)| rerr(path, line, Some("correlation.condition"), m))?;
    let mut aliases = HashMap::new();
    let mut alias_rule_lines = Vec::new();
    if let Some(a) = c.get("aliases") {
        let Some(entries) = a.as_map() else {
            return Err(rerr(
                path,
                a.line,
                Some("correlation.aliases"),
                "`aliases` must be a map",
            ));
        };
        for (alias, per_rule) in entries {
            let Some(m) = per_rule.as_map() else {
                return Err(rerr(
                    path,
                    per_rule.line,
                    Some("correlation.aliases"),
                    format!("alias `{alias}` must map rule names to fields"),
                ));
            };
            let mut inner = HashMap::new();
            for (rule, f) in m {
                let f_line = f.line;
                let f = f.scalar_text().ok_or_else(|| {
                    rerr(
                        path,
                        f.line,
                        Some("correlation.aliases"),
                        "expected a field name",
                    )
                })?;
                alias_rule_lines.push((rule.clone(), f_line));
                inner.insert(rule.clone(), f);
            }
            aliases.insert(alias.clone(), inner);
        }
    }
    let mut generate = false;
    for (node, key) in [
        (c.get("generate"), "correlation.generate"),
        (top_generate, "generate"),
    ] {
        match node.map(|n| (n, &n.value)) {
            Some((_, Value::Bool(b))) => generate |= *b,
            Some((n, _)) => {
                return Err(rerr(
                    path,
                    n.line,
                    Some(key),
                    "`generate` must be true or false",
                ))
            }
            None => {}
        }
    }
    Ok(CorrelationRule {
        meta,
        kind,
        rules,
        rule_lines,
        group_by,
        timespan_ms,
        condition,
        fields,
        aliases,
        alias_rule_lines,
        generate,
    })
}

/// A correlation condition no window meets (`lt: 0`, `gt: 5` with `lt: 3`) or every window
/// meets (`gte: -1`): the correlation would never fire, or fire on every event. Checked against
/// what the correlator compares: counts are whole numbers from 1, a temporal correlation counts
/// at most its rules, a percentile is 0 to 100, sums and averages are any number. The error
/// names the line of the entry that empties the range (the first entry's when all always hold).
fn check_condition_can_hold(
    kind: CorrelationType,
    n_rules: usize,
    condition: &[(CountOp, f64)],
    keys: &[(&str, usize)],
) -> Result<(), (usize, String)> {
    let (what, low, high, whole) = match kind {
        // A window is judged on an event it counts: it holds one at least (`gte: 1` fires on
        // every event, `lte: 0` never).
        CorrelationType::EventCount => (
            "an event count is a whole number from 1",
            1.0,
            f64::INFINITY,
            true,
        ),
        CorrelationType::ValueCount => (
            "a count of values is a whole number from 1",
            1.0,
            f64::INFINITY,
            true,
        ),
        CorrelationType::Temporal | CorrelationType::TemporalOrdered => (
            "the number of rules seen is a whole number from 1 to the rules correlated",
            1.0,
            n_rules as f64,
            true,
        ),
        CorrelationType::ValuePercentile => ("a percentile is 0 to 100", 0.0, 100.0, false),
        CorrelationType::ValueSum | CorrelationType::ValueAvg => {
            ("", f64::NEG_INFINITY, f64::INFINITY, false)
        }
    };
    let shown = |upto: usize| {
        let entries: Vec<String> = condition[..upto]
            .iter()
            .zip(keys)
            .map(|((_, n), (key, _))| format!("{key}: {n}"))
            .collect();
        entries.join(", ")
    };
    let because = if what.is_empty() {
        String::new()
    } else {
        format!(" ({what})")
    };
    // The values that meet the entries so far: `lo` to `hi`, each bound with whether it is
    // excluded; for whole numbers the bounds are made inclusive whole numbers.
    let (mut lo, mut hi) = ((low, false), (high, false));
    let raise = |lo: &mut (f64, bool), b: (f64, bool)| {
        if b.0 > lo.0 || (b.0 == lo.0 && b.1) {
            *lo = b;
        }
    };
    let lower = |hi: &mut (f64, bool), b: (f64, bool)| {
        if b.0 < hi.0 || (b.0 == hi.0 && b.1) {
            *hi = b;
        }
    };
    // A YAML map holds one `neq`: it empties a range of a single value.
    let mut excluded = None;
    for (i, &(op, n)) in condition.iter().enumerate() {
        let mut no_whole_value = false;
        match op {
            CountOp::Gt if whole => raise(&mut lo, (n.floor() + 1.0, false)),
            CountOp::Gte if whole => raise(&mut lo, (n.ceil(), false)),
            CountOp::Lt if whole => lower(&mut hi, (n.ceil() - 1.0, false)),
            CountOp::Lte if whole => lower(&mut hi, (n.floor(), false)),
            CountOp::Gt => raise(&mut lo, (n, true)),
            CountOp::Gte => raise(&mut lo, (n, false)),
            CountOp::Lt => lower(&mut hi, (n, true)),
            CountOp::Lte => lower(&mut hi, (n, false)),
            CountOp::Eq => {
                no_whole_value = whole && n.fract() != 0.0;
                raise(&mut lo, (n, false));
                lower(&mut hi, (n, false));
            }
            CountOp::Neq => excluded = Some(n),
        }
        let empty = no_whole_value
            || lo.0 > hi.0
            || (lo.0 == hi.0 && (lo.1 || hi.1 || excluded == Some(lo.0)));
        if empty {
            return Err((
                keys[i].1,
                format!("`{}` can never hold{because}", shown(i + 1)),
            ));
        }
    }
    // A window keeps at most `MAX_ENTRIES_CAP` events per key (the oldest go): a count holds
    // that many at most, so a bound from it on could never be reached (`gte: 12000`) or
    // would be judged on a count cut short (`lt: 11000` met by 12,000 events) (QA).
    if matches!(
        kind,
        CorrelationType::EventCount | CorrelationType::ValueCount
    ) {
        let cap = super::correlate::MAX_ENTRIES_CAP as f64;
        // A count cut short reads `cap`, the true count being `cap` or more.
        if let Some(i) = condition.iter().position(|&(op, n)| match op {
            CountOp::Gte | CountOp::Lt => n > cap,
            CountOp::Gt | CountOp::Lte | CountOp::Eq | CountOp::Neq => n >= cap,
        }) {
            return Err((
                keys[i].1,
                format!(
                    "`{}`: a correlation counts at most {} events per group and window, so this bound cannot be judged",
                    shown(i + 1),
                    super::correlate::MAX_ENTRIES_CAP
                ),
            ));
        }
    }
    let always = |&(op, n): &(CountOp, f64)| match op {
        CountOp::Gt => low > n,
        CountOp::Gte => low >= n,
        CountOp::Lt => high < n,
        CountOp::Lte => high <= n,
        CountOp::Eq => false,
        CountOp::Neq => n < low || n > high || (whole && n.fract() != 0.0),
    };
    if !condition.is_empty() && condition.iter().all(always) {
        return Err((
            keys[0].1,
            format!(
                "`{}` always holds{because}: every event would fire the correlation",
                shown(condition.len())
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<RuleDoc>, Vec<RuleError>) {
        parse_file(Path::new("r.yml"), text, &Pipelines::default())
    }

    #[test]
    fn unknown_modifier_reports_line_and_field() {
        let (ok, errs) = parse(
            "title: t\nlogsource:\n    product: okta\ndetection:\n    sel:\n        eventType|contians: x\n    condition: sel\n",
        );
        assert!(ok.is_empty());
        assert_eq!(errs.len(), 1);
        let e = &errs[0];
        assert_eq!(e.line, Some(6));
        assert_eq!(e.field.as_deref(), Some("sel.eventType|contians"));
        assert!(e.message.contains("unknown modifier `contians`"), "{e}");
        assert_eq!(
            e.to_string(),
            "r.yml:6: field `sel.eventType|contians`: unknown modifier `contians`"
        );
    }

    #[test]
    fn a_duplicate_id_is_reported_at_its_id_line() {
        let rule = "title: t\nid: 5d2c1b7e-1111-4c7e-9d1a-0a3b5c7d9e11\nlogsource:\n    product: okta\ndetection:\n    sel:\n        eventType: x\n    condition: sel\n";
        let text = format!("{rule}---\n{rule}");
        let (_, report) = super::super::RuleSet::from_text("r.yml", &text, &Default::default());
        // A file with an error loads nothing, the first copy included.
        assert_eq!(report.loaded, 0);
        let e = &report.failed[0];
        assert!(e.message.contains("duplicate rule id"), "{e}");
        // The second document starts on line 10; its `id` is on line 11.
        assert_eq!((e.line, e.field.as_deref()), (Some(11), Some("id")), "{e}");
    }

    /// Findings of a QA pass against the Sigma specification: a `name` is unique, a document
    /// is one of detection, correlation and filter, `condition.field` belongs to the value
    /// correlations, a correlation cycle is named and refuses each of its rules, and a file with
    /// an error loads nothing (its base rules would otherwise alert alone on every match).
    #[test]
    fn rule_set_errors_found_against_the_specification() {
        let load =
            |text: &str| super::super::RuleSet::from_text("r.yml", text, &Default::default()).1;
        let base = |name: &str, value: &str| {
            format!("title: {name}\nname: {name}\nlogsource: {{product: okta}}\ndetection:\n    sel: {{eventType: {value}}}\n    condition: sel\n")
        };
        let report = load(&format!("{}---\n{}", base("fail", "a"), base("fail", "b")));
        assert_eq!(report.loaded, 0);
        let e = &report.failed[0];
        assert!(e.message.contains("duplicate rule name `fail`"), "{e}");
        assert_eq!((e.line, e.field.as_deref()), (Some(9), Some("name")), "{e}");

        let both = "title: c\ncorrelation:\n    type: event_count\n    rules: [fail]\n    group-by: [user]\n    timespan: 5m\n    condition: {gte: 3}\ndetection:\n    sel: {a: b}\n    condition: sel\n";
        let report = load(&format!("{both}---\n{}", base("fail", "a")));
        let e = &report.failed[0];
        assert!(
            e.message.contains("both `correlation` and `detection`"),
            "{e}"
        );
        assert_eq!(e.line, Some(8), "{e}");

        let counted_field = "title: c\ncorrelation:\n    type: event_count\n    rules: [fail]\n    group-by: [user]\n    timespan: 5m\n    condition:\n        gte: 3\n        field: ip\n";
        let report = load(&format!("{counted_field}---\n{}", base("fail", "a")));
        let e = &report.failed[0];
        assert!(e.message.contains("reads no field"), "{e}");
        assert_eq!(e.line, Some(9), "{e}");

        // A typo in the correlation: its base rule does not start alerting on its own.
        let typo = "title: c\ncorrelation:\n    type: event_count\n    rules: [fail]\n    group-by: [user]\n    timespan: 1H\n    condition: {gte: 3}\n";
        let (set, report) = super::super::RuleSet::from_text(
            "r.yml",
            &format!("{typo}---\n{}", base("fail", "a")),
            &Default::default(),
        );
        assert_eq!((set.len(), report.loaded), (0, 0), "{:?}", report.failed);

        let cycle = "title: ca\nname: ca\ncorrelation:\n    type: event_count\n    rules:\n        - fail\n        - cb\n    group-by: [user]\n    timespan: 5m\n    condition: {gte: 3}\n---\ntitle: cb\nname: cb\ncorrelation:\n    type: event_count\n    rules: [ca]\n    group-by: [user]\n    timespan: 5m\n    condition: {gte: 3}\n";
        let report = load(&format!("{cycle}---\n{}", base("fail", "a")));
        let cycles: Vec<_> = report
            .failed
            .iter()
            .filter(|e| e.message.contains("cycle"))
            .collect();
        assert_eq!(cycles.len(), 2, "{:?}", report.failed);
        assert!(
            cycles[0].message.contains("`ca` -> `cb` -> `ca`")
                || cycles[0].message.contains("`cb` -> `ca` -> `cb`"),
            "{}",
            cycles[0]
        );
        let mut lines: Vec<_> = cycles.iter().map(|e| e.line).collect();
        lines.sort();
        assert_eq!(lines, [Some(7), Some(16)]);
    }

    #[test]
    fn tags_outside_the_schemas_pattern_are_warned_about() {
        assert!(is_spec_tag("attack.t1098"));
        assert!(is_spec_tag("cve.2021-44228"));
        assert!(is_spec_tag("attack.credential_access"));
        for bad in [
            "Attack T1098",
            "attack",
            "Attack.t1098",
            ".t1098",
            "attack.",
        ] {
            assert!(!is_spec_tag(bad), "{bad}");
        }
    }

    #[test]
    fn bad_yaml_and_missing_parts() {
        let (_, errs) = parse("title: t\ndetection:\n  sel: {a: [1, 2}\n  condition: sel\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("invalid YAML"));
        assert_eq!(errs[0].line, Some(3));
        let (_, errs) = parse("title: t\nlogsource: {product: okta}\n");
        assert!(errs[0].message.contains("missing `detection`"));
        let (_, errs) = parse("title: t\nlogsource: {product: okta}\ndetection:\n  sel: {a: 1}\n  condition: sel or nope\n");
        assert_eq!(errs[0].line, Some(5));
        assert!(errs[0].message.contains("nope"));
        let (_, errs) = parse("title: t\nlogsource: {product: okta}\nlevel: severe\ndetection:\n  sel: {a: 1}\n  condition: sel\n");
        assert_eq!(errs[0].line, Some(3));
        let (_, errs) = parse("action: global\ntitle: t\n");
        assert!(errs[0].message.contains("legacy"));
    }

    #[test]
    fn multi_document_rule_and_correlation() {
        let (ok, errs) = parse(
            "title: c\nid: c1\ncorrelation:\n  type: event_count\n  rules: [r1]\n  group-by: [user]\n  timespan: 10m\n  condition: {gte: 5}\n---\ntitle: r\nid: r1\nlogsource: {product: okta}\ndetection:\n  sel: {eventType: x}\n  condition: sel\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(ok.len(), 2);
        let RuleDoc::Correlation(c) = &ok[0] else {
            panic!("not a correlation")
        };
        assert_eq!(c.timespan_ms, 600_000);
        assert_eq!(c.condition, vec![(CountOp::Gte, 5.0)]);
    }

    #[test]
    fn a_rules_alert_group_seconds_is_read_and_checked() {
        let rule = |extra: &str| {
            parse(&format!(
                "title: t\nlogsource: {{product: okta}}\n{extra}detection:\n  sel: {{a: 1}}\n  condition: sel\n"
            ))
        };
        let meta = |docs: Vec<RuleDoc>| match docs.into_iter().next() {
            Some(RuleDoc::Detection(r)) => r.meta,
            _ => panic!("not a detection rule"),
        };
        assert_eq!(meta(rule("").0).alert_group_seconds, None);
        assert_eq!(
            meta(rule("alert_group_seconds: 0\n").0).alert_group_seconds,
            Some(0)
        );
        assert_eq!(
            meta(rule("alert_group_seconds: 86400\n").0).alert_group_seconds,
            Some(86_400)
        );
        for bad in ["soon", "-1", "1.5", "99999999"] {
            let (ok, errs) = rule(&format!("alert_group_seconds: {bad}\n"));
            assert!(ok.is_empty(), "{bad}");
            assert_eq!(errs[0].line, Some(3), "{bad}");
            assert_eq!(errs[0].field.as_deref(), Some("alert_group_seconds"));
            assert!(errs[0].message.contains("whole seconds"), "{}", errs[0]);
        }
    }

    #[test]
    fn an_unknown_key_in_a_correlation_or_filter_is_an_error() {
        let (ok, errs) = parse(
            "title: c\ncorrelation:\n  type: event_count\n  rules: [r1]\n  groupby: [ip]\n  timespan: 5m\n  condition: {gte: 2}\n",
        );
        assert!(ok.is_empty());
        assert_eq!(errs.len(), 1);
        assert_eq!(
            (errs[0].line, errs[0].field.as_deref()),
            (Some(5), Some("correlation.groupby")),
            "{}",
            errs[0]
        );
        assert!(
            errs[0].message.contains("unknown key `groupby`"),
            "{}",
            errs[0]
        );

        let filter = |body: &str| {
            parse(&format!(
                "title: f\nlogsource: {{product: okta}}\nfilter:\n  rules: [r1]\n{body}"
            ))
        };
        let (ok, errs) = filter("  selection: {a: 1}\n  condition: selection\n");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(ok.len(), 1);
        // An unused selection of another name loads, as in a detection.
        let (ok, errs) =
            filter("  selection: {a: 1}\n  selection_old: {b: 2}\n  condition: selection\n");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(ok.len(), 1);
        let (ok, errs) = filter("  selection: {a: 1}\n  rule: [r2]\n  condition: selection\n");
        assert!(ok.is_empty());
        assert_eq!(
            (errs[0].line, errs[0].field.as_deref()),
            (Some(6), Some("filter.rule")),
            "{}",
            errs[0]
        );
        assert!(
            errs[0].message.contains("unknown key `rule`"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("30s"), Some(30_000));
        assert_eq!(parse_timespan("1h"), Some(3_600_000));
        assert_eq!(parse_timespan("2d"), Some(172_800_000));
        assert_eq!(parse_timespan("h"), None);
        assert_eq!(parse_timespan("0m"), None);
        assert_eq!(parse_timespan("5x"), None);
        // Only the specification's lowercase units: `5M` is not five minutes, nor months.
        for bad in ["5M", "5S", "1H", "1D", "2w", "1y", "+5m", "1.5h", "5 m"] {
            assert_eq!(parse_timespan(bad), None, "{bad}");
        }
        let (ok, errs) = parse(
            "title: c\ncorrelation:\n  type: event_count\n  rules: [r1]\n  group-by: [ip]\n  timespan: 5M\n  condition: {gte: 2}\n",
        );
        assert!(ok.is_empty());
        assert_eq!(
            (errs[0].line, errs[0].field.as_deref()),
            (Some(6), Some("correlation.timespan")),
            "{}",
            errs[0]
        );
        assert!(
            errs[0].message.contains("invalid timespan `5M`"),
            "{}",
            errs[0]
        );
    }
}
