//! The compiled matcher: rules dispatched by source, and one case-insensitive Aho-Corasick
//! automaton per source over every rule's literal needles, so a rule is only evaluated when the
//! event contains at least one literal its condition requires (rules without such a guarantee --
//! negations, `exists`, numbers, regexes, null -- are always evaluated).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use perimeter_model::{Alert, DetectorKind, EntityKind, Event, Severity, ECS_FIELDS};
use std::collections::HashMap;
use std::fmt::Write as _;

use super::condition::Cond;
use super::correlate::Correlator;
use super::matcher::{Detection, FieldMatch, Leaf, NumBuf, Selection, ValueTest};
use super::parse::{DetectionRule, RuleMeta};
use super::{RuleRef, RuleSet, SigmaOptions};

/// Literals of which at least one must be present for the detection to match, if such a set
/// exists. Sets are compared by their shortest needle (longer is rarer), then by size.
pub(crate) fn detection_needles(det: &Detection) -> Option<Vec<String>> {
    cond_needles(&det.condition, &det.selections)
}

/// Marks a needle that must occur in an object key (field presence) rather than in a value.
const KEY_MARK: &str = "\u{0}key:";

/// Value needles rank by length; key needles (field presence) rank below value needles of the
/// same length, since key names repeat across events far more than values.
fn needle_rank(n: &str) -> usize {
    match n.strip_prefix(KEY_MARK) {
        Some(k) => k.len() / 2,
        None => n.len(),
    }
}

fn better(a: Vec<String>, b: Vec<String>) -> Vec<String> {
    let score = |v: &Vec<String>| {
        (
            v.iter().map(|n| needle_rank(n)).min().unwrap_or(0),
            usize::MAX - v.len(),
        )
    };
    if score(&b) > score(&a) {
        b
    } else {
        a
    }
}

fn union(parts: impl Iterator<Item = Option<Vec<String>>>) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        for n in p? {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn cond_needles(c: &Cond, sels: &[Selection]) -> Option<Vec<String>> {
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

fn selection_needles(sel: &Selection) -> Option<Vec<String>> {
    union(
        sel.alternatives
            .iter()
            .map(|map| map.iter().filter_map(field_needles).reduce(better)),
    )
}

fn field_needles(fm: &FieldMatch) -> Option<Vec<String>> {
    if fm.negate || fm.tests.is_empty() {
        return None;
    }
    value_needles(fm).or_else(|| key_needles(fm))
}

/// A field whose every test needs a value (numbers, regexes, CIDRs, ...) can only match when
/// its key is in the raw event -- unless the value may come from the ECS view.
fn key_needles(fm: &FieldMatch) -> Option<Vec<String>> {
    fm.field.as_ref()?;
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
    if !required
        || fm
            .paths
            .iter()
            .any(|p| ECS_FIELDS.contains(&p.name.as_str()))
    {
        return None;
    }
    let mut out = Vec::new();
    for p in &fm.paths {
        let last = p.name.rsplit('.').next().unwrap_or("");
        if last.is_empty() {
            return None;
        }
        out.push(format!("{KEY_MARK}{last}"));
    }
    Some(out)
}

fn value_needles(fm: &FieldMatch) -> Option<Vec<String>> {
    if fm.all {
        fm.tests
            .iter()
            .filter_map(|t| t.needle().map(|n| vec![n.to_string()]))
            .reduce(better)
    } else {
        union(
            fm.tests
                .iter()
                .map(|t| t.needle().map(|n| vec![n.to_string()])),
        )
    }
}

/// Whether a field of the detection may resolve through the ECS view (its name is an ECS field).
fn uses_ecs(det: &Detection) -> bool {
    det.selections
        .iter()
        .flat_map(|s| s.alternatives.iter().flatten())
        .any(|fm| {
            fm.paths
                .iter()
                .any(|p| ECS_FIELDS.contains(&p.name.as_str()))
        })
}

/// Per-source dispatch: the automaton over the needles of the rules that run on the source.
#[derive(Debug, Default)]
struct SourceEngine {
    ac: Option<AhoCorasick>,
    /// Needle id -> detection rules needing it.
    needle_rules: Vec<Vec<u32>>,
    /// Rules evaluated on every event of this source.
    always: Vec<u32>,
    /// Whether any needle could occur in a number's or boolean's text, or needs the ECS view:
    /// otherwise those values are not scanned at all.
    scan_numbers: bool,
    scan_bools: bool,
    scan_ecs: bool,
    /// By the last dotted segment of the fields the engine's prefiltered rules test: whether
    /// values under such keys are scanned, and the rules whose field-presence needle it is. A
    /// value can only satisfy a field test under a key whose last segment is the field's last
    /// segment (exactly: lookups are case-sensitive), so other values are not scanned.
    keys: HashMap<String, KeyInfo, std::hash::BuildHasherDefault<KeyHasher>>,
    /// A keyword rule searches every value.
    scan_all_values: bool,
}

#[derive(Debug, Default)]
struct KeyInfo {
    scan_values: bool,
    presence_rules: Vec<u32>,
}

/// FNV-1a for short key names (std's SipHash costs more than the lookup saves).
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
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

impl SourceEngine {
    fn build(
        rules: &[DetectionRule],
        applies: impl Fn(&DetectionRule) -> bool,
        needles: &[Option<Vec<String>>],
    ) -> SourceEngine {
        let mut eng = SourceEngine::default();
        let mut needle_ids: HashMap<String, usize> = HashMap::new();
        let mut patterns: Vec<String> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if !applies(r) {
                continue;
            }
            match &needles[i] {
                None => eng.always.push(i as u32),
                Some(ns) => {
                    if uses_ecs(&r.detection) {
                        eng.scan_ecs = true;
                    }
                    for fm in r
                        .detection
                        .selections
                        .iter()
                        .flat_map(|s| s.alternatives.iter().flatten())
                    {
                        if fm.field.is_none() {
                            eng.scan_all_values = true;
                        }
                        for p in &fm.paths {
                            let last = p.name.rsplit('.').next().unwrap_or("");
                            eng.keys.entry(last.to_string()).or_default().scan_values = true;
                        }
                    }
                    for n in ns {
                        if let Some(k) = n.strip_prefix(KEY_MARK) {
                            let info = eng.keys.entry(k.to_string()).or_default();
                            if info.presence_rules.last() != Some(&(i as u32)) {
                                info.presence_rules.push(i as u32);
                            }
                            continue;
                        }
                        let key = n.to_ascii_lowercase();
                        if key
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                        {
                            eng.scan_numbers = true;
                        }
                        if "true".contains(key.as_str()) || "false".contains(key.as_str()) {
                            eng.scan_bools = true;
                        }
                        let id = *needle_ids.entry(key.clone()).or_insert_with(|| {
                            patterns.push(key);
                            eng.needle_rules.push(Vec::new());
                            patterns.len() - 1
                        });
                        if eng.needle_rules[id].last() != Some(&(i as u32)) {
                            eng.needle_rules[id].push(i as u32);
                        }
                    }
                }
            }
        }
        if !patterns.is_empty() {
            eng.ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind(None)
                .build(&patterns)
                .or_else(|_| {
                    AhoCorasickBuilder::new()
                        .ascii_case_insensitive(true)
                        .build(&patterns)
                })
                .ok();
            if eng.ac.is_none() {
                // Cannot happen for plain literals; stay correct by evaluating everything.
                eng.always
                    .extend(eng.needle_rules.iter().flatten().copied());
                eng.always.sort_unstable();
                eng.always.dedup();
            }
        }
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
    fn mark(&mut self, rules: &[u32]) {
        for &r in rules {
            let s = &mut self.stamp[r as usize];
            if *s != self.epoch {
                *s = self.epoch;
                self.candidates.push(r);
            }
        }
    }

    fn scan(&mut self, ac: &AhoCorasick, needle_rules: &[Vec<u32>], text: &str) {
        if text.len() < ac.min_pattern_len() {
            return;
        }
        for m in ac.find_overlapping_iter(text) {
            for &r in &needle_rules[m.pattern().as_usize()] {
                let s = &mut self.stamp[r as usize];
                if *s != self.epoch {
                    *s = self.epoch;
                    self.candidates.push(r);
                }
            }
        }
    }
}

/// One walk over the raw event: each object key is looked up once (field-presence needles,
/// whether its values matter), relevant values go through the value automaton.
fn scan_json(
    v: &perimeter_model::RawJson,
    eng: &SourceEngine,
    hits: &mut Hits<'_>,
    relevant: bool,
) {
    use perimeter_model::raw_prelude::{JsonValueTrait, ValueRef as J};
    match v.as_ref() {
        J::Object(m) => {
            for (k, x) in m.iter() {
                let mut child = eng.scan_all_values;
                if !eng.keys.is_empty() {
                    if let Some(info) = eng.keys.get(k.rsplit('.').next().unwrap_or(k)) {
                        hits.mark(&info.presence_rules);
                        child |= info.scan_values;
                    }
                }
                if child || x.is_object() || x.is_array() {
                    scan_json(x, eng, hits, child);
                }
            }
        }
        J::Array(a) => a.iter().for_each(|x| scan_json(x, eng, hits, relevant)),
        _ if !relevant => {}
        J::Null => {}
        J::String(s) => {
            if let Some(ac) = &eng.ac {
                hits.scan(ac, &eng.needle_rules, s);
            }
        }
        J::Bool(b) => {
            if let Some(ac) = eng.ac.as_ref().filter(|_| eng.scan_bools) {
                hits.scan(ac, &eng.needle_rules, if b { "true" } else { "false" });
            }
        }
        J::Number(n) => {
            if let Some(ac) = eng.ac.as_ref().filter(|_| eng.scan_numbers) {
                let mut buf = NumBuf::new();
                let _ = write!(buf, "{n}");
                hits.scan(ac, &eng.needle_rules, buf.as_str());
            }
        }
    }
}

/// Reusable per-event buffers: nothing is allocated per event on the no-match path.
#[derive(Debug, Default)]
struct Scratch {
    epoch: u32,
    stamp: Vec<u32>,
    candidates: Vec<u32>,
    matched: Vec<u32>,
}

/// Sigma rules as a [`perimeter_model::Detector`].
pub struct SigmaDetector {
    rules: RuleSet,
    ignore_logsource: bool,
    engines: Vec<(String, SourceEngine)>,
    /// For sources no rule names: the rules without a product (all rules with ignore_logsource).
    fallback: SourceEngine,
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
    pub fn new(rules: RuleSet, options: &SigmaOptions) -> SigmaDetector {
        let needles: Vec<Option<Vec<String>>> = rules
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
                let eng = SourceEngine::build(
                    &rules.detections,
                    |r| r.sources.as_ref().is_none_or(|v| v.iter().any(|x| x == s)),
                    &needles,
                );
                engines.push((s.clone(), eng));
            }
        }
        let fallback = SourceEngine::build(
            &rules.detections,
            |r| ignore || r.sources.is_none(),
            &needles,
        );
        let n = rules.detections.len();
        let filters_by_source = rules.filters.iter().map(|f| f.sources.clone()).collect();
        SigmaDetector {
            correlator: Correlator::new(&rules, options),
            rules,
            ignore_logsource: ignore,
            engines,
            fallback,
            scratch: Scratch {
                epoch: 0,
                stamp: vec![0; n],
                candidates: Vec::new(),
                matched: Vec::new(),
            },
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

    /// Events dropped by correlations because they arrived later than the allowed lateness.
    pub fn late_events_dropped(&self) -> u64 {
        self.correlator.late_dropped
    }

    /// Detection rules that match the event (filters applied), in rule order. Used by the
    /// detector and by `rules test`.
    pub(crate) fn match_rules(&mut self, event: &Event) -> &[u32] {
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
            sc.epoch = 1;
        }
        sc.candidates.clear();
        sc.matched.clear();
        if eng.ac.is_some() || !eng.keys.is_empty() {
            let mut hits = Hits {
                epoch: sc.epoch,
                stamp: &mut sc.stamp,
                candidates: &mut sc.candidates,
            };
            scan_json(&event.raw, eng, &mut hits, true);
            if let Some(ac) = eng.ac.as_ref().filter(|_| eng.scan_ecs) {
                let ecs = &event.ecs;
                let singles = [
                    &ecs.event_action,
                    &ecs.user_name,
                    &ecs.user_email,
                    &ecs.user_id,
                    &ecs.user_target_name,
                    &ecs.user_target_email,
                    &ecs.user_target_id,
                    &ecs.source_ip,
                    &ecs.source_geo_country_iso_code,
                    &ecs.user_agent_original,
                    &ecs.organization_id,
                    &ecs.cloud_account_id,
                ];
                for v in singles.into_iter().flatten() {
                    hits.scan(ac, &eng.needle_rules, v);
                }
                for list in [
                    &ecs.event_category,
                    &ecs.event_type,
                    &ecs.related_ip,
                    &ecs.related_user,
                ] {
                    for v in list {
                        hits.scan(ac, &eng.needle_rules, v);
                    }
                }
                hits.scan(ac, &eng.needle_rules, ecs.event_outcome.as_str());
                if let Some(n) = ecs.source_as_number {
                    let mut b = NumBuf::new();
                    let _ = write!(b, "{n}");
                    hits.scan(ac, &eng.needle_rules, b.as_str());
                }
            }
        }
        sc.candidates.extend_from_slice(&eng.always);
        sc.candidates.sort_unstable();
        for &r in &sc.candidates {
            let rule = &self.rules.detections[r as usize];
            if rule.detection.matches(event)
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
        &sc.matched
    }

    /// Feed one event: detection alerts, then correlation state.
    fn process(&mut self, event: &Event, alerts: &mut Vec<Alert>) {
        let matched: Vec<u32> = {
            let m = self.match_rules(event);
            if m.is_empty() {
                self.correlator.advance(event, &self.rules, alerts);
                return;
            }
            m.to_vec()
        };
        for r in matched {
            let r = r as usize;
            if !self.rules.det_suppressed[r] {
                alerts.push(detection_alert(&self.rules.detections[r], event));
            }
            for &c in &self.rules.det_parents[r] {
                self.correlator
                    .hit(c, RuleRef::Detection(r), event, &self.rules, alerts);
            }
        }
        self.correlator.advance(event, &self.rules, alerts);
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

pub(crate) fn entity_kind_for_field(f: &str) -> EntityKind {
    let f = f.to_ascii_lowercase();
    if f.contains("ip") || f.contains("address") {
        EntityKind::Ip
    } else if f.contains("user")
        || f.contains("actor")
        || f.contains("email")
        || f.contains("login")
        || f.contains("principal")
    {
        EntityKind::User
    } else if f.contains("token") || f.contains("key") {
        EntityKind::Token
    } else if f.contains("app") || f.contains("client") {
        EntityKind::App
    } else if f.contains("org") || f.contains("tenant") || f.contains("account") {
        EntityKind::Org
    } else {
        EntityKind::Unknown
    }
}

pub(crate) fn base_alert(
    meta: &RuleMeta,
    kind: DetectorKind,
    event: &Event,
    entity: (String, EntityKind),
) -> Alert {
    let mut a = Alert::new(
        meta.key(),
        meta.title.clone(),
        severity(meta.level.as_deref()),
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
    a.threat_technique_id = technique_ids(&meta.tags);
    a.references = meta.references.clone();
    a.rule_hash = Some(meta.rule_hash.clone());
    a
}

fn detection_alert(rule: &DetectionRule, event: &Event) -> Alert {
    let mut a = base_alert(
        &rule.meta,
        DetectorKind::Sigma,
        event,
        entity_of(&rule.meta, event),
    );
    for (k, v) in rule.detection.matched_fields(event) {
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
}
