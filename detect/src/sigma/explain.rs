//! `perimeter rules explain <rule> --event FILE`: which selections matched and why.

use perimeter_model::Event;
use std::fmt::Write as _;
use std::path::Path;

use super::condition::Cond;
use super::matcher::{Detection, FieldMatch, Found};
use super::parse::{parse_file, RuleDoc};
use super::{load_pipelines, RuleError, SigmaOptions};

fn cond_text(c: &Cond, names: &[String]) -> String {
    match c {
        Cond::Sel(i) => names.get(*i).cloned().unwrap_or_default(),
        Cond::And(p) => format!(
            "({})",
            p.iter()
                .map(|x| cond_text(x, names))
                .collect::<Vec<_>>()
                .join(" and ")
        ),
        Cond::Or(p) => format!(
            "({})",
            p.iter()
                .map(|x| cond_text(x, names))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        Cond::Not(x) => format!("not {}", cond_text(x, names)),
    }
}

fn field_line(out: &mut String, fm: &FieldMatch, event: &Event) {
    let name = fm.field.as_deref().unwrap_or("<keywords>");
    let mods = if fm.modifiers.is_empty() {
        "none".to_string()
    } else {
        fm.modifiers.join("|")
    };
    let matched = fm.matches(event);
    let mut values = Vec::new();
    if fm.field.is_some() {
        for p in &fm.paths {
            let r = p.visit_event(event, &mut |leaf| {
                if values.len() < 5 {
                    values.push(leaf.to_json().to_string());
                }
                false
            });
            if r != Found::Absent {
                break;
            }
        }
    }
    let seen = if fm.field.is_none() {
        "(any value in the event)".to_string()
    } else if values.is_empty() {
        "(field absent)".to_string()
    } else {
        values.join(", ")
    };
    let _ = writeln!(
        out,
        "    {} field `{name}` (line {}) modifiers: {mods}; {} value(s) in rule; event value: {seen}",
        if matched { "[match]" } else { "[ no  ]" },
        fm.line,
        fm.tests.len(),
    );
}

fn explain_detection(out: &mut String, det: &Detection, event: &Event) -> bool {
    let names: Vec<String> = det.selections.iter().map(|s| s.name.clone()).collect();
    for sel in &det.selections {
        let m = sel.matches(event);
        let _ = writeln!(
            out,
            "  selection `{}` (line {}): {}",
            sel.name,
            sel.line,
            if m { "MATCHED" } else { "not matched" }
        );
        for (i, alt) in sel.alternatives.iter().enumerate() {
            if sel.alternatives.len() > 1 {
                let ok = alt.iter().all(|f| f.matches(event));
                let _ = writeln!(
                    out,
                    "   alternative {} ({}):",
                    i + 1,
                    if ok {
                        "all fields match"
                    } else {
                        "not all fields match"
                    }
                );
            }
            for fm in alt {
                field_line(out, fm, event);
            }
        }
    }
    let result = det.matches(event);
    let _ = writeln!(
        out,
        "  condition: {} => {}",
        cond_text(&det.condition, &names),
        result
    );
    result
}

/// Explain how every rule in `rule_path` evaluates on `event`.
pub fn explain(
    rule_path: &Path,
    event: &Event,
    options: &SigmaOptions,
) -> Result<String, RuleError> {
    let text = std::fs::read_to_string(rule_path).map_err(|e| RuleError {
        path: rule_path.to_path_buf(),
        line: None,
        field: None,
        message: format!("cannot read: {e}"),
    })?;
    let mut errors = Vec::new();
    let pipelines = load_pipelines(options, &mut errors);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let (docs, errs) = parse_file(rule_path, &text, &pipelines);
    if let Some(e) = errs.into_iter().next() {
        return Err(e);
    }
    let mut out = String::new();
    for d in &docs {
        match d {
            RuleDoc::Detection(r) => {
                let runs = options.ignore_logsource
                    || r.sources.as_ref().is_none_or(|s| s.contains(&event.source));
                let _ = writeln!(out, "rule `{}` ({}):", r.meta.title, r.meta.key());
                let _ = writeln!(
                    out,
                    "  logsource: runs on {}; event source `{}`: {}",
                    r.sources
                        .as_ref()
                        .map_or("every source".to_string(), |s| s.join(", ")),
                    event.source,
                    if runs {
                        "runs"
                    } else {
                        "does NOT run (--ignore-logsource runs it anyway)"
                    }
                );
                let m = explain_detection(&mut out, &r.detection, event);
                let _ = writeln!(
                    out,
                    "  result: {}",
                    if m && runs { "MATCH" } else { "no match" }
                );
            }
            RuleDoc::Filter(f) => {
                let _ = writeln!(
                    out,
                    "filter `{}` for rules {}:",
                    f.meta.title,
                    f.rules.join(", ")
                );
                let m = explain_detection(&mut out, &f.detection, event);
                let _ = writeln!(
                    out,
                    "  result: {}",
                    if m {
                        "filter matches: alerts suppressed"
                    } else {
                        "filter does not match"
                    }
                );
            }
            RuleDoc::Correlation(c) => {
                let _ = writeln!(
                    out,
                    "correlation `{}` ({}): {} over rules {} within {}s; needs a sequence of events, see `rules test`",
                    c.meta.title,
                    c.meta.key(),
                    c.kind.as_str(),
                    c.rules.join(", "),
                    c.timespan_ms / 1000
                );
            }
        }
    }
    Ok(out)
}
