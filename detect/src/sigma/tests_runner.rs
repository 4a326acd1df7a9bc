//! `perimeter rules test <DIR>`: every `<rule>.yml` has a `<rule>.tests.yml` beside it with
//! events that must match, near misses that must not, and event sequences for correlations.

use perimeter_model::{Detector, Event};
use std::path::{Path, PathBuf};

use super::compile::SigmaDetector;
use super::yaml::{load_documents, Node};
use super::{RuleRef, RuleSet, SigmaOptions};

/// Outcome of a test run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestReport {
    /// Rule files that had a tests file and loaded.
    pub rules_tested: usize,
    pub cases_passed: usize,
    pub failures: Vec<TestFailure>,
}

/// One failed case (or a rule without tests, or a tests file that could not be read).
#[derive(Debug, Clone, PartialEq)]
pub struct TestFailure {
    pub rule: PathBuf,
    /// `match[0]`, `no_match[2]`, `sequence "burst"`, `tests file`, ...
    pub case: String,
    pub expected: String,
    pub got: String,
}

impl std::fmt::Display for TestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: expected {}, got {}",
            self.rule.display(),
            self.case,
            self.expected,
            self.got
        )
    }
}

struct Sequence {
    name: String,
    alerts: u64,
    events: Vec<serde_json::Value>,
}

struct TestFile {
    source: Option<String>,
    matches: Vec<serde_json::Value>,
    no_matches: Vec<serde_json::Value>,
    sequences: Vec<Sequence>,
}

fn parse_tests(text: &str) -> Result<TestFile, String> {
    let docs = load_documents(text).map_err(|e| format!("line {}: {}", e.line, e.message))?;
    let doc = docs.first().ok_or("empty tests file")?;
    let entries = doc.as_map().ok_or("a tests file must be a map")?;
    let mut tf = TestFile {
        source: None,
        matches: Vec::new(),
        no_matches: Vec::new(),
        sequences: Vec::new(),
    };
    let events = |n: &Node, key: &str| -> Result<Vec<serde_json::Value>, String> {
        let items = n
            .as_seq()
            .ok_or_else(|| format!("line {}: `{key}` must be a list of events", n.line))?;
        items
            .iter()
            .map(|i| match i.to_json() {
                v @ serde_json::Value::Object(_) => Ok(v),
                _ => Err(format!(
                    "line {}: each event in `{key}` must be a map",
                    i.line
                )),
            })
            .collect()
    };
    for (k, v) in entries {
        match k.as_str() {
            "source" => {
                tf.source = Some(
                    v.scalar_text()
                        .ok_or(format!("line {}: `source` must be a string", v.line))?,
                )
            }
            "match" => tf.matches = events(v, "match")?,
            "no_match" => tf.no_matches = events(v, "no_match")?,
            "sequences" => {
                for s in v
                    .as_seq()
                    .ok_or(format!("line {}: `sequences` must be a list", v.line))?
                {
                    let name = s
                        .get("name")
                        .and_then(Node::scalar_text)
                        .unwrap_or_else(|| format!("line {}", s.line));
                    let alerts = match s.get("alerts").map(|a| &a.value) {
                        Some(super::yaml::Value::Int(n)) if *n >= 0 => *n as u64,
                        _ => {
                            return Err(format!(
                                "line {}: sequence `{name}` needs `alerts: <number>`",
                                s.line
                            ))
                        }
                    };
                    let evs = match s.get("events") {
                        Some(e) => events(e, "events")?,
                        None => {
                            return Err(format!(
                                "line {}: sequence `{name}` needs `events`",
                                s.line
                            ))
                        }
                    };
                    if let Some((bad, _)) = s
                        .as_map()
                        .unwrap_or_default()
                        .iter()
                        .find(|(k, _)| !matches!(k.as_str(), "name" | "alerts" | "events"))
                    {
                        return Err(format!("line {}: unknown key `{bad}` in sequence", s.line));
                    }
                    tf.sequences.push(Sequence {
                        name,
                        alerts,
                        events: evs,
                    });
                }
            }
            other => {
                return Err(format!(
                    "line {}: unknown key `{other}` (source, match, no_match, sequences)",
                    v.line
                ))
            }
        }
    }
    Ok(tf)
}

fn tests_path(rule: &Path) -> PathBuf {
    let name = rule.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let stem = name
        .strip_suffix(".yml")
        .or_else(|| name.strip_suffix(".yaml"))
        .unwrap_or(name);
    rule.with_file_name(format!("{stem}.tests.yml"))
}

/// Run every `<rule>.tests.yml` in `dir` (recursively) against the whole directory's rules.
pub fn run_rule_tests(
    dir: &Path,
    options: &SigmaOptions,
    normalize: &dyn Fn(&str, serde_json::Value, u64) -> Result<Event, String>,
) -> TestReport {
    let mut report = TestReport::default();
    let (rules, load) = RuleSet::load(&[dir.to_path_buf()], options);
    let files = RuleSet::files(dir);
    let mut matcher = SigmaDetector::new(rules.clone(), options);
    let fail =
        |report: &mut TestReport, rule: &Path, case: String, expected: String, got: String| {
            report.failures.push(TestFailure {
                rule: rule.to_path_buf(),
                case,
                expected,
                got,
            });
        };
    for file in files {
        let load_errors: Vec<String> = load
            .failed
            .iter()
            .filter(|e| e.path == file)
            .map(|e| e.to_string())
            .collect();
        if !load_errors.is_empty() {
            fail(
                &mut report,
                &file,
                "load".into(),
                "rule loads".into(),
                load_errors.join("; "),
            );
            continue;
        }
        let tp = tests_path(&file);
        let text = match std::fs::read_to_string(&tp) {
            Ok(t) => t,
            Err(_) => {
                fail(
                    &mut report,
                    &file,
                    "tests file".into(),
                    format!("{} beside the rule", tp.display()),
                    "no tests".into(),
                );
                continue;
            }
        };
        let tf = match parse_tests(&text) {
            Ok(t) => t,
            Err(e) => {
                fail(
                    &mut report,
                    &tp,
                    "tests file".into(),
                    "a valid tests file".into(),
                    e,
                );
                continue;
            }
        };
        // A tests file without a case tests nothing: it counts as no tests, a failure.
        if tf.matches.is_empty() && tf.no_matches.is_empty() && tf.sequences.is_empty() {
            fail(
                &mut report,
                &file,
                "tests file".into(),
                "at least one `match`, `no_match` or `sequences` case".into(),
                "no cases".into(),
            );
            continue;
        }
        report.rules_tested += 1;
        let dets: Vec<usize> = (0..rules.detections.len())
            .filter(|&i| rules.detections[i].meta.path == file)
            .collect();
        let corrs: Vec<usize> = (0..rules.correlations.len())
            .filter(|&i| rules.correlations[i].meta.path == file)
            .collect();
        // Rules whose match counts for match/no_match: the file's detections, or for a
        // correlation-only file, the detections its correlations reference.
        let mut targets = dets.clone();
        if targets.is_empty() {
            for &c in &corrs {
                for r in &rules.corr_refs[c] {
                    if let RuleRef::Detection(d) = r {
                        targets.push(*d);
                    }
                }
            }
        }
        let source = tf.source.clone().unwrap_or_else(|| {
            targets
                .iter()
                .find_map(|&d| {
                    rules.detections[d]
                        .sources
                        .as_ref()
                        .and_then(|s| s.first().cloned())
                })
                .unwrap_or_else(|| "test".to_string())
        });
        let mut line = 0u64;
        for (kind, list, want) in [
            ("match", &tf.matches, true),
            ("no_match", &tf.no_matches, false),
        ] {
            for (i, raw) in list.iter().enumerate() {
                line += 1;
                let case = format!("{kind}[{i}]");
                let event = match normalize(&source, raw.clone(), line) {
                    Ok(e) => e,
                    Err(e) => {
                        fail(&mut report, &file, case, "event normalizes".into(), e);
                        continue;
                    }
                };
                let got = matcher
                    .match_rules(&event)
                    .iter()
                    .any(|r| targets.contains(&(*r as usize)));
                if got == want {
                    report.cases_passed += 1;
                } else {
                    fail(
                        &mut report,
                        &file,
                        case,
                        if want {
                            "the rule fires".into()
                        } else {
                            "no alert".into()
                        },
                        if got {
                            "the rule fired".into()
                        } else if !options.ignore_logsource
                            && !targets.iter().any(|&d| {
                                rules.detections[d]
                                    .sources
                                    .as_ref()
                                    .is_none_or(|s| s.contains(&event.source))
                            })
                        {
                            // Not a miss of the detection: the rule never ran on the event.
                            let mut runs_on: Vec<String> = targets
                                .iter()
                                .filter_map(|&d| rules.detections[d].sources.as_ref())
                                .flatten()
                                .map(|s| format!("`{s}`"))
                                .collect();
                            runs_on.sort();
                            runs_on.dedup();
                            format!(
                                "no match: the rule does not run on source `{}`: its logsource is source {} (set the tests file's `source` to it, or give the rule the logsource of the source its events come from)",
                                event.source,
                                runs_on.join(", ")
                            )
                        } else {
                            "no match".into()
                        },
                    );
                }
            }
        }
        let ids: Vec<String> = if corrs.is_empty() {
            dets.iter()
                .map(|&d| rules.detections[d].meta.key().to_string())
                .collect()
        } else {
            corrs
                .iter()
                .map(|&c| rules.correlations[c].meta.key().to_string())
                .collect()
        };
        for seq in &tf.sequences {
            let mut det = SigmaDetector::new(rules.clone(), options);
            let mut alerts = Vec::new();
            let mut ok = true;
            for (i, raw) in seq.events.iter().enumerate() {
                match normalize(&source, raw.clone(), i as u64 + 1) {
                    Ok(e) => det.detect(&e, &mut alerts),
                    Err(e) => {
                        fail(
                            &mut report,
                            &file,
                            format!("sequence `{}` event {i}", seq.name),
                            "event normalizes".into(),
                            e,
                        );
                        ok = false;
                    }
                }
            }
            det.flush(&mut alerts);
            if !ok {
                continue;
            }
            let n = alerts.iter().filter(|a| ids.contains(&a.rule_id)).count() as u64;
            if n == seq.alerts {
                report.cases_passed += 1;
            } else {
                fail(
                    &mut report,
                    &file,
                    format!("sequence `{}`", seq.name),
                    format!("{} alert(s)", seq.alerts),
                    format!("{n} alert(s)"),
                );
            }
        }
    }
    report
}
