//! Sigma engine: detection rules, correlation rules and filters, compiled once into a matcher
//! that dispatches by source and skips rules whose literals are absent from the event.
//!
//! Guarantees:
//! - a rule that fails to load is reported with file, line, key and reason; the other files
//!   load (a file with an error loads none of its rules: they may be a correlation's base rules);
//! - compiled matching gives the same result as evaluating every rule's condition naively
//!   (checked by a property test);
//! - correlation state is bounded: per-key entries expire by event time and the number of keys
//!   per correlation is capped with least-recently-used eviction.

mod compile;
mod condition;
mod correlate;
mod explain;
mod logsource;
mod matcher;
mod modifiers;
mod parse;
mod pipeline_map;
mod tests_runner;
mod yaml;

#[cfg(test)]
mod conformance_tests;

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub use compile::SigmaDetector;
pub use correlate::{CorrelationRestore, CorrelatorSnapshot};
pub use explain::explain;
pub use logsource::LogSource;
pub use pipeline_map::{PipelineConfig, Pipelines};
pub use tests_runner::{run_rule_tests, TestFailure, TestReport};

use parse::{CorrelationRule, DetectionRule, FilterRule, RuleDoc};

/// The `[sigma]` section of `perimeter.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaOptions {
    /// Run every rule on every event, whatever its `logsource` says.
    #[serde(default)]
    pub ignore_logsource: bool,
    /// How far (event time) an event may arrive behind the newest one seen and still count in
    /// correlation windows.
    #[serde(default = "default_allowed_lateness_seconds")]
    pub allowed_lateness_seconds: u64,
    /// Field-mapping pipeline files (YAML or TOML), applied after the built-in one.
    #[serde(default)]
    pub pipelines: Vec<PathBuf>,
    /// Maximum number of group-by keys each correlation rule keeps (least recently used evicted).
    #[serde(default = "default_max_correlation_keys")]
    pub max_correlation_keys: usize,
}

fn default_allowed_lateness_seconds() -> u64 {
    300
}

fn default_max_correlation_keys() -> usize {
    1_000_000
}

impl Default for SigmaOptions {
    fn default() -> Self {
        SigmaOptions {
            ignore_logsource: false,
            allowed_lateness_seconds: default_allowed_lateness_seconds(),
            pipelines: Vec::new(),
            max_correlation_keys: default_max_correlation_keys(),
        }
    }
}

/// Why a rule (or pipeline) could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// What [`RuleSet::load`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Rules (detection, correlation and filter documents) that loaded.
    pub loaded: usize,
    pub failed: Vec<RuleError>,
}

/// The kind of a loaded rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Detection,
    Correlation,
    Filter,
}

impl RuleKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleKind::Detection => "detection",
            RuleKind::Correlation => "correlation",
            RuleKind::Filter => "filter",
        }
    }
}

/// A summary of one loaded rule (for `perimeter rules check` and listings).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    pub id: String,
    pub title: String,
    pub level: Option<String>,
    pub status: Option<String>,
    pub path: PathBuf,
    pub product: Option<String>,
    pub service: Option<String>,
    pub tags: Vec<String>,
    pub kind: RuleKind,
}

/// Reference from a correlation to one of its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleRef {
    Detection(usize),
    Correlation(usize),
}

/// Loaded, compiled and cross-referenced rules.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub(crate) detections: Vec<DetectionRule>,
    pub(crate) correlations: Vec<CorrelationRule>,
    pub(crate) filters: Vec<FilterRule>,
    /// Filters that apply to each detection.
    pub(crate) det_filters: Vec<Vec<usize>>,
    /// Each correlation's rules, resolved.
    pub(crate) corr_refs: Vec<Vec<RuleRef>>,
    /// Correlations that reference each detection / correlation.
    pub(crate) det_parents: Vec<Vec<usize>>,
    pub(crate) corr_parents: Vec<Vec<usize>>,
    /// Alerts of these rules are not emitted on their own (referenced by `generate: false`).
    pub(crate) det_suppressed: Vec<bool>,
    pub(crate) corr_suppressed: Vec<bool>,
    /// Each correlation as itself across restarts and reloads (see
    /// [`RuleSet::correlation_identities`]): equal identities keep their open windows.
    pub(crate) corr_identities: Vec<String>,
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<RuleError>, explicit: bool) {
    let is_rule_file = |p: &Path| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        (name.ends_with(".yml") || name.ends_with(".yaml"))
            && !name.ends_with(".tests.yml")
            && !name.ends_with(".tests.yaml")
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => {
                    errors.push(RuleError {
                        path: path.to_path_buf(),
                        line: None,
                        field: None,
                        message: format!("reading directory: {e}"),
                    });
                    return;
                }
            };
            entries.sort();
            for p in entries {
                collect_files(&p, out, errors, false);
            }
        }
        Ok(_) => {
            if explicit || is_rule_file(path) {
                out.push(path.to_path_buf());
            }
        }
        Err(e) => errors.push(RuleError {
            path: path.to_path_buf(),
            line: None,
            field: None,
            message: format!("cannot read: {e}"),
        }),
    }
}

impl RuleSet {
    /// The rule files [`RuleSet::load`] reads for `path`: the file itself, or a directory's
    /// `*.yml`/`*.yaml` files (recursively, `*.tests.yml` skipped), sorted. Empty for a directory
    /// holding none, which a caller can refuse: loading it is no error, just no rules.
    pub fn files(path: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        collect_files(path, &mut files, &mut Vec::new(), true);
        files
    }

    /// Load rules from files and/or directories (recursively, `*.yml`/`*.yaml`; skips
    /// `*.tests.yml`). Bad rules are reported in the [`LoadReport`]; the other files load (see
    /// [`RuleSet::from_whole_files`]).
    pub fn load(paths: &[PathBuf], options: &SigmaOptions) -> (RuleSet, LoadReport) {
        let mut report = LoadReport::default();
        let pipelines = load_pipelines(options, &mut report.failed);
        let mut files = Vec::new();
        for p in paths {
            collect_files(p, &mut files, &mut report.failed, true);
        }
        let mut docs = Vec::new();
        for f in &files {
            let text = match std::fs::read_to_string(f) {
                Ok(t) => t,
                Err(e) => {
                    report.failed.push(RuleError {
                        path: f.clone(),
                        line: None,
                        field: None,
                        message: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            let (ok, errs) = parse::parse_file(f, &text, &pipelines);
            docs.extend(ok);
            report.failed.extend(errs);
        }
        let set = RuleSet::from_whole_files(docs, &mut report.failed);
        report.loaded = set.len();
        (set, report)
    }

    /// Load the rules of one YAML text that is not a file (a rule posted to the API); errors
    /// name `label` where they would name the file (`rule:4: field ...`).
    pub fn from_text(label: &str, text: &str, options: &SigmaOptions) -> (RuleSet, LoadReport) {
        let mut report = LoadReport::default();
        let pipelines = load_pipelines(options, &mut report.failed);
        let (docs, errs) = parse::parse_file(Path::new(label), text, &pipelines);
        report.failed.extend(errs);
        let set = RuleSet::from_whole_files(docs, &mut report.failed);
        report.loaded = set.len();
        (set, report)
    }

    /// [`RuleSet::from_docs`] over the documents of the files without errors: a file with an
    /// error loads nothing. Its other documents may be the base rules of a correlation that
    /// failed, which alone would alert on every event they match (a multi-document file's base
    /// rules make no alerts of their own), or a correlation whose input failed. A file that
    /// refers to a rule of a refused file is refused in turn.
    pub(crate) fn from_whole_files(mut docs: Vec<RuleDoc>, errors: &mut Vec<RuleError>) -> RuleSet {
        loop {
            let failed: std::collections::HashSet<&Path> =
                errors.iter().map(|e| e.path.as_path()).collect();
            docs.retain(|d| !failed.contains(d.meta().path.as_path()));
            let mut more = Vec::new();
            let set = RuleSet::from_docs(docs.clone(), &mut more);
            let refused_more = more
                .iter()
                .any(|e| docs.iter().any(|d| d.meta().path == e.path));
            errors.extend(more);
            if !refused_more {
                return set;
            }
        }
    }

    /// Build from parsed documents: check ids, resolve correlation and filter references.
    pub(crate) fn from_docs(docs: Vec<RuleDoc>, errors: &mut Vec<RuleError>) -> RuleSet {
        let mut set = RuleSet::default();
        // Correlations and filters name the rules they read by `id` or by `name`: two rules of
        // one id or one name would leave which one is read to the order files load in.
        let mut seen: [std::collections::HashMap<String, PathBuf>; 2] = Default::default();
        for d in docs {
            let meta = d.meta();
            let keys = [
                ("id", meta.id.as_ref(), meta.id_line),
                ("name", meta.name.as_ref(), meta.name_line),
            ];
            let duplicate = keys.iter().zip(&seen).find_map(|((field, value, line), seen)| {
                let value = (*value)?;
                seen.get(value).map(|first| RuleError {
                    path: meta.path.clone(),
                    line: Some(*line),
                    field: Some((*field).into()),
                    message: format!(
                        "duplicate rule {field} `{value}` (first defined in {}); a rule's {field} must be unique",
                        first.display()
                    ),
                })
            });
            if let Some(error) = duplicate {
                errors.push(error);
                continue;
            }
            for ((_, value, _), seen) in keys.iter().zip(&mut seen) {
                if let Some(value) = value {
                    seen.insert((*value).clone(), meta.path.clone());
                }
            }
            match d {
                RuleDoc::Detection(r) => set.detections.push(r),
                RuleDoc::Correlation(r) => set.correlations.push(r),
                RuleDoc::Filter(r) => set.filters.push(r),
            }
        }
        set.resolve(errors);
        set
    }

    fn resolve(&mut self, errors: &mut Vec<RuleError>) {
        // Drop correlations whose references do not resolve, until nothing changes (a dropped
        // correlation can break another that references it).
        loop {
            let mut bad = None;
            'outer: for (ci, c) in self.correlations.iter().enumerate() {
                for (i, r) in c.rules.iter().enumerate() {
                    if self.find_ref(r).is_none() {
                        let line = c.rule_lines.get(i).copied().unwrap_or(c.meta.line);
                        bad = Some((
                            ci,
                            line,
                            "correlation.rules",
                            format!("correlation references unknown rule `{r}`"),
                        ));
                        break 'outer;
                    }
                }
                // An alias for a rule the correlation does not read is never used: the
                // group-by field it was meant to give that rule silently stays the alias name.
                for (r, line) in &c.alias_rule_lines {
                    let target = self.find_ref(r);
                    if target.is_none() || !c.rules.iter().any(|x| self.find_ref(x) == target) {
                        bad = Some((
                            ci,
                            *line,
                            "correlation.aliases",
                            format!(
                                "alias names rule `{r}`, which is not in the correlation's `rules`"
                            ),
                        ));
                        break 'outer;
                    }
                }
            }
            match bad {
                Some((ci, line, field, msg)) => {
                    let c = self.correlations.remove(ci);
                    errors.push(RuleError {
                        path: c.meta.path,
                        line: Some(line),
                        field: Some(field.into()),
                        message: msg,
                    });
                }
                None => break,
            }
        }
        // An alias used for grouping or counting that gives no field for a rule the correlation
        // reads: that rule's events are looked up under the alias's own name, which works only
        // when they have a field of that name (QA: when they had none, the correlation never
        // counted them, without a word). Warned, as the field may exist.
        let mut alias_warnings = Vec::new();
        for (ci, c) in self.correlations.iter().enumerate() {
            for (alias, per_rule) in &c.aliases {
                if !c.group_by.contains(alias) && !c.fields.contains(alias) {
                    continue;
                }
                for r in &c.rules {
                    let target = self.find_ref(r);
                    if per_rule.keys().any(|k| self.find_ref(k) == target) {
                        continue;
                    }
                    let line = c
                        .alias_rule_lines
                        .iter()
                        .find(|(k, _)| per_rule.contains_key(k))
                        .map_or(c.meta.line, |(_, l)| *l);
                    alias_warnings.push((
                        ci,
                        line,
                        format!(
                            "alias `{alias}` gives no field for rule `{r}`: its events are read at a field named `{alias}`, and not counted when they have none"
                        ),
                    ));
                }
            }
        }
        for (ci, line, message) in alias_warnings {
            let meta = &mut self.correlations[ci].meta;
            let path = meta.path.clone();
            meta.warnings.push(RuleError {
                path,
                line: Some(line),
                field: Some("correlation.aliases".into()),
                message,
            });
        }
        // Cycles between correlations.
        loop {
            let refs: Vec<Vec<RuleRef>> = self
                .correlations
                .iter()
                .map(|c| c.rules.iter().filter_map(|r| self.find_ref(r)).collect())
                .collect();
            // A cycle through `start`: the correlations on it, in order, from `start`.
            let cycle = (0..self.correlations.len()).find_map(|start| {
                let mut parent: Vec<Option<usize>> = vec![None; refs.len()];
                let mut stack = vec![start];
                while let Some(n) = stack.pop() {
                    for r in &refs[n] {
                        if let RuleRef::Correlation(m) = *r {
                            if m == start {
                                let mut path = vec![n];
                                while let Some(p) = parent[*path.last()?] {
                                    path.push(p);
                                }
                                path.reverse();
                                return Some(path);
                            }
                            if parent[m].is_none() && m != start {
                                parent[m] = Some(n);
                                stack.push(m);
                            }
                        }
                    }
                }
                None
            });
            match cycle {
                Some(cycle) => {
                    // Every correlation on it is refused (each would be left reading a rule
                    // that is gone), each at its `rules` entry for the next one.
                    let label = |ci: usize| {
                        let m = &self.correlations[ci].meta;
                        m.name
                            .clone()
                            .or(m.id.clone())
                            .unwrap_or_else(|| m.title.clone())
                    };
                    let chain = cycle
                        .iter()
                        .chain(cycle.first())
                        .map(|ci| format!("`{}`", label(*ci)))
                        .collect::<Vec<_>>()
                        .join(" -> ");
                    for (k, &ci) in cycle.iter().enumerate() {
                        let next = cycle[(k + 1) % cycle.len()];
                        let c = &self.correlations[ci];
                        let line = c
                            .rules
                            .iter()
                            .position(|r| self.find_ref(r) == Some(RuleRef::Correlation(next)))
                            .and_then(|i| c.rule_lines.get(i).copied())
                            .unwrap_or(c.meta.line);
                        errors.push(RuleError {
                            path: c.meta.path.clone(),
                            line: Some(line),
                            field: Some("correlation.rules".into()),
                            message: format!(
                                "correlation rules reference each other in a cycle: {chain}"
                            ),
                        });
                    }
                    let mut gone = cycle;
                    gone.sort_unstable();
                    for ci in gone.into_iter().rev() {
                        self.correlations.remove(ci);
                    }
                }
                None => {
                    self.corr_refs = refs;
                    break;
                }
            }
        }
        self.det_parents = vec![Vec::new(); self.detections.len()];
        self.corr_parents = vec![Vec::new(); self.correlations.len()];
        self.det_suppressed = vec![false; self.detections.len()];
        self.corr_suppressed = vec![false; self.correlations.len()];
        let mut det_generate = vec![false; self.detections.len()];
        let mut corr_generate = vec![false; self.correlations.len()];
        for (ci, refs) in self.corr_refs.iter().enumerate() {
            let generate = self.correlations[ci].generate;
            for r in refs {
                match *r {
                    RuleRef::Detection(d) => {
                        self.det_parents[d].push(ci);
                        self.det_suppressed[d] = true;
                        det_generate[d] |= generate;
                    }
                    RuleRef::Correlation(c) => {
                        self.corr_parents[c].push(ci);
                        self.corr_suppressed[c] = true;
                        corr_generate[c] |= generate;
                    }
                }
            }
        }
        // A referenced rule still alerts on its own when any correlation says `generate: true`.
        for (s, g) in self.det_suppressed.iter_mut().zip(det_generate) {
            *s &= !g;
        }
        for (s, g) in self.corr_suppressed.iter_mut().zip(corr_generate) {
            *s &= !g;
        }
        // A filter applies to detection rules; one naming nothing that exists (a typo, a rule
        // not loaded) or a correlation would load and never filter anything.
        let mut fi = 0;
        while fi < self.filters.len() {
            let f = &self.filters[fi];
            let bad = f.rules.iter().enumerate().find_map(|(i, r)| {
                let message = match self.find_ref(r) {
                    Some(RuleRef::Detection(_)) => return None,
                    Some(RuleRef::Correlation(_)) => format!(
                        "filter references correlation `{r}` (filters apply to detection rules; filter the rules it correlates)"
                    ),
                    None => format!("filter references unknown rule `{r}`"),
                };
                Some((f.rule_lines.get(i).copied().unwrap_or(f.meta.line), message))
            });
            match bad {
                Some((line, message)) => {
                    let f = self.filters.remove(fi);
                    errors.push(RuleError {
                        path: f.meta.path,
                        line: Some(line),
                        field: Some("filter.rules".into()),
                        message,
                    });
                }
                None => fi += 1,
            }
        }
        self.det_filters = self
            .detections
            .iter()
            .map(|d| {
                self.filters
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.rules.iter().any(|r| d.meta.is_referenced_by(r)))
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        // A filter whose logsource shares no source with a rule it names never sees that
        // rule's events: loaded, it would never filter anything, without a word (QA).
        for (d, filters) in self.detections.iter().zip(&self.det_filters) {
            let Some(rule_sources) = &d.sources else {
                continue;
            };
            for &fi in filters {
                let f = &mut self.filters[fi];
                let Some(filter_sources) = &f.sources else {
                    continue;
                };
                if !filter_sources.iter().any(|s| rule_sources.contains(s)) {
                    let message = format!(
                        "the filter's logsource ({}) shares no source with rule `{}` ({}): it never applies to that rule",
                        filter_sources.join(", "),
                        d.meta.key(),
                        rule_sources.join(", ")
                    );
                    let line = f.meta.logsource_line;
                    f.meta.warnings.push(RuleError {
                        path: f.meta.path.clone(),
                        line: Some(line),
                        field: Some("logsource".into()),
                        message,
                    });
                }
            }
        }
        self.corr_identities = self.correlation_identities();
    }

    /// Each correlation's identity: its own file's hash, its line and its id, and, when it reads
    /// rules of other files, a hash of those files' hashes. "Reads" is transitive: the rules of a
    /// correlation it reads, and the filters of each detection rule it reads (they change what
    /// that rule matches). An edit of any of those files gives a new identity, whose windows start
    /// empty (the counted events were matched by the old rule); an edit of a file it does not read
    /// keeps them. A correlation that reads only rules of its own file has the identity it had
    /// before other files counted, so snapshots written then still restore.
    fn correlation_identities(&self) -> Vec<String> {
        (0..self.correlations.len())
            .map(|ci| {
                let own = &self.correlations[ci].meta;
                let mut files = std::collections::BTreeSet::new();
                let mut read = vec![false; self.correlations.len()];
                let mut stack = vec![ci];
                while let Some(c) = stack.pop() {
                    for r in &self.corr_refs[c] {
                        match *r {
                            RuleRef::Detection(d) => {
                                files.insert(self.detections[d].meta.rule_hash.as_str());
                                for &f in &self.det_filters[d] {
                                    files.insert(self.filters[f].meta.rule_hash.as_str());
                                }
                            }
                            RuleRef::Correlation(m) => {
                                files.insert(self.correlations[m].meta.rule_hash.as_str());
                                if !read[m] {
                                    read[m] = true;
                                    stack.push(m);
                                }
                            }
                        }
                    }
                }
                files.remove(own.rule_hash.as_str());
                let id = own
                    .id
                    .as_deref()
                    .or(own.name.as_deref())
                    .unwrap_or(&own.title);
                let mut identity = format!("{}#{}/{id}", own.rule_hash, own.line);
                if !files.is_empty() {
                    let mut read_files = blake3::Hasher::new();
                    for hash in files {
                        read_files.update(hash.as_bytes());
                        read_files.update(b"\n");
                    }
                    identity.push('+');
                    identity.push_str(read_files.finalize().to_hex().as_str());
                }
                identity
            })
            .collect()
    }

    pub(crate) fn find_ref(&self, r: &str) -> Option<RuleRef> {
        if let Some(i) = self
            .detections
            .iter()
            .position(|d| d.meta.is_referenced_by(r))
        {
            return Some(RuleRef::Detection(i));
        }
        self.correlations
            .iter()
            .position(|c| c.meta.is_referenced_by(r))
            .map(RuleRef::Correlation)
    }

    /// Number of loaded rules (detections, correlations and filters).
    pub fn len(&self) -> usize {
        self.detections.len() + self.correlations.len() + self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the loaded rules' metadata breaks of the Sigma specification (see
    /// `RuleMeta::warnings`): warnings, the rules run.
    pub fn spec_warnings(&self) -> Vec<&RuleError> {
        let metas = self
            .detections
            .iter()
            .map(|r| &r.meta)
            .chain(self.correlations.iter().map(|c| &c.meta))
            .chain(self.filters.iter().map(|f| &f.meta));
        metas.flat_map(|m| m.warnings.iter()).collect()
    }

    /// Detection rules whose logsource resolves to a source no normalizer or mapping in `known`
    /// produces, but one name of `known` nearly: a misspelt product (`okat` for `okta`). Any
    /// source name is accepted (records of vendors without a normalizer keep their name as plain
    /// JSON, and the pack has rules for such vendors), so such a rule loads and runs, silently
    /// seeing nothing. Empty with `ignore_logsource`, where every rule runs on every source.
    pub fn misspelt_sources(&self, known: &[&str], options: &SigmaOptions) -> Vec<MisspeltSource> {
        if options.ignore_logsource {
            return Vec::new();
        }
        self.detections
            .iter()
            .filter_map(|r| {
                let sources = r.sources.as_ref()?;
                if sources.iter().any(|s| known.contains(&s.as_str())) {
                    return None;
                }
                sources.iter().find_map(|s| {
                    let near = near_name(s, known.iter().copied())?;
                    Some(MisspeltSource {
                        path: r.meta.path.clone(),
                        line: r.meta.logsource_line,
                        title: r.meta.title.clone(),
                        source: s.clone(),
                        suggestion: near.to_string(),
                    })
                })
            })
            .collect()
    }

    /// Every loaded rule.
    pub fn rules(&self) -> impl Iterator<Item = RuleInfo> + '_ {
        let info = |m: &parse::RuleMeta, kind| RuleInfo {
            id: m.key().to_string(),
            title: m.title.clone(),
            level: m.level.clone(),
            status: m.status.clone(),
            path: m.path.clone(),
            product: m.logsource.product.clone(),
            service: m.logsource.service.clone(),
            tags: m.tags.clone(),
            kind,
        };
        self.detections
            .iter()
            .map(move |r| info(&r.meta, RuleKind::Detection))
            .chain(
                self.correlations
                    .iter()
                    .map(move |r| info(&r.meta, RuleKind::Correlation)),
            )
            .chain(
                self.filters
                    .iter()
                    .map(move |r| info(&r.meta, RuleKind::Filter)),
            )
    }
}

/// A rule whose source looks misspelt (see [`RuleSet::misspelt_sources`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MisspeltSource {
    pub path: PathBuf,
    pub line: usize,
    pub title: String,
    /// The source its logsource resolves to.
    pub source: String,
    /// The known source it is closest to.
    pub suggestion: String,
}

impl std::fmt::Display for MisspeltSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: rule `{}` is for source `{}`, which no normalizer or mapping produces; did you mean `{}`? (as written, it only sees records sent in under `{}`)",
            self.path.display(),
            self.line,
            self.title,
            self.source,
            self.suggestion,
            self.source
        )
    }
}

/// The name of `known` that `name` is most likely a misspelling of: within 2 edits (names of
/// at least 4 characters; shorter ones are too close to everything).
pub(crate) fn near_name<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .filter(|k| k.len() >= 4 && *k != name)
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edits (insert, delete, substitute, swap two neighbours) between `a` and `b`.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

pub(crate) fn load_pipelines(options: &SigmaOptions, errors: &mut Vec<RuleError>) -> Pipelines {
    let mut pipelines = Pipelines::builtin();
    for p in &options.pipelines {
        if let Err(message) = pipelines.load_file(p) {
            errors.push(RuleError {
                path: p.clone(),
                line: None,
                field: None,
                message,
            });
        }
    }
    pipelines
}

#[cfg(test)]
mod edit_distance_tests {
    use super::edit_distance;

    #[test]
    fn counts_inserts_deletes_substitutions_and_swaps() {
        assert_eq!(edit_distance("okta", "okta"), 0);
        assert_eq!(edit_distance("okat", "okta"), 1, "a swap");
        assert_eq!(edit_distance("gihub", "github"), 1);
        assert_eq!(edit_distance("githubb", "github"), 1);
        assert_eq!(edit_distance("slak", "slack"), 1);
        assert_eq!(edit_distance("m356", "m365"), 1);
        assert_eq!(edit_distance("salesforce", "okta"), 9);
        assert_eq!(edit_distance("", "duo"), 3);
    }
}
