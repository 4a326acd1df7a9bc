//! Field modifiers (`field|mod1|mod2: value`): value transformations (`base64`, `wide`,
//! `windash`, `expand`, ...), anchoring (`contains`, `startswith`, `endswith`) and value types
//! (`re`, `cidr`, `gt`, `exists`, `fieldref`, ...), compiled into [`ValueTest`]s once.

use base64::Engine as _;
use std::collections::HashMap;

use super::matcher::{
    normalize_tokens, CmpOp, FieldMatch, FieldPath, StrKind, StrTest, TimePart, Tok, ValueTest,
};
use super::yaml::{Node, Value};

/// A modifier error: which part of the rule and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ModError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> ModError {
    ModError {
        line,
        message: message.into(),
    }
}

/// Parse a Sigma string into wildcard tokens: `*` and `?` are wildcards, `\*` `\?` `\\` escape.
pub fn parse_wildcards(s: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut lit = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\\' if i + 1 < bytes.len() && matches!(bytes[i + 1], b'*' | b'?' | b'\\') => {
                lit.push(bytes[i + 1]);
                i += 2;
                continue;
            }
            b'*' | b'?' => {
                if !lit.is_empty() {
                    toks.push(Tok::Lit(std::mem::take(&mut lit)));
                }
                toks.push(if c == b'*' { Tok::Star } else { Tok::One });
            }
            _ => lit.push(c),
        }
        i += 1;
    }
    if !lit.is_empty() {
        toks.push(Tok::Lit(lit));
    }
    toks
}

fn plain_bytes(toks: &[Tok], modifier: &str, line: usize) -> Result<Vec<u8>, ModError> {
    let mut out = Vec::new();
    for t in toks {
        match t {
            Tok::Lit(b) => out.extend_from_slice(b),
            _ => {
                return Err(err(
                    line,
                    format!("`{modifier}` cannot be applied to a value with wildcards"),
                ))
            }
        }
    }
    Ok(out)
}

fn utf16(bytes: &[u8], le: bool, bom: bool) -> Vec<u8> {
    let s = String::from_utf8_lossy(bytes);
    let mut out = Vec::with_capacity(s.len() * 2 + 2);
    if bom {
        out.extend_from_slice(if le { &[0xFF, 0xFE] } else { &[0xFE, 0xFF] });
    }
    for u in s.encode_utf16() {
        out.extend_from_slice(&if le { u.to_le_bytes() } else { u.to_be_bytes() });
    }
    out
}

fn base64_offsets(bytes: &[u8]) -> Vec<Vec<u8>> {
    let start = [0usize, 2, 3];
    let end_trim = [0usize, 3, 2];
    (0..3)
        .map(|i| {
            let mut padded = vec![b' '; i];
            padded.extend_from_slice(bytes);
            let enc = base64::engine::general_purpose::STANDARD
                .encode(&padded)
                .into_bytes();
            let trim = end_trim[(bytes.len() + i) % 3];
            let end = enc.len().saturating_sub(trim);
            enc.get(start[i].min(end)..end).unwrap_or_default().to_vec()
        })
        .collect()
}

const DASHES: [&str; 5] = ["-", "/", "\u{2013}", "\u{2014}", "\u{2015}"];
const MAX_VARIANTS: usize = 4096;

/// `windash`: every dash that starts a flag (after a non-word character, before a word
/// character) becomes each of `-`, `/`, en dash, em dash, horizontal bar. Any of the five
/// counts as such a dash, so a rule written with `—foo` is as wide as one written `-foo`.
fn windash(toks: &[Tok], line: usize) -> Result<Vec<Vec<Tok>>, ModError> {
    let mut variants: Vec<Vec<Tok>> = vec![Vec::new()];
    for t in toks {
        let Tok::Lit(b) = t else {
            variants.iter_mut().for_each(|v| v.push(t.clone()));
            continue;
        };
        let s = String::from_utf8_lossy(b).into_owned();
        let chars: Vec<char> = s.chars().collect();
        let mut pieces: Vec<Vec<String>> = Vec::new();
        let mut cur = String::new();
        for (k, &c) in chars.iter().enumerate() {
            let prev_word = k > 0 && (chars[k - 1].is_alphanumeric() || chars[k - 1] == '_');
            let next_word = chars
                .get(k + 1)
                .is_some_and(|n| n.is_alphanumeric() || *n == '_');
            let is_dash = matches!(c, '-' | '/' | '\u{2013}' | '\u{2014}' | '\u{2015}');
            if is_dash && !prev_word && next_word {
                pieces.push(vec![std::mem::take(&mut cur)]);
                pieces.push(DASHES.iter().map(|d| d.to_string()).collect());
            } else {
                cur.push(c);
            }
        }
        pieces.push(vec![cur]);
        for choices in pieces {
            if choices.len() == 1 {
                let lit = choices[0].as_bytes();
                variants
                    .iter_mut()
                    .for_each(|v| v.push(Tok::Lit(lit.to_vec())));
            } else {
                if variants.len() * choices.len() > MAX_VARIANTS {
                    return Err(err(line, "`windash` expands to too many variants"));
                }
                variants = variants
                    .iter()
                    .flat_map(|v| {
                        choices.iter().map(move |c| {
                            let mut v = v.clone();
                            v.push(Tok::Lit(c.as_bytes().to_vec()));
                            v
                        })
                    })
                    .collect();
            }
        }
    }
    Ok(variants)
}

/// `expand`: `%name%` placeholders become every configured value; `\%` is a plain percent.
fn expand(
    s: &str,
    placeholders: &HashMap<String, Vec<String>>,
    line: usize,
) -> Result<Vec<String>, ModError> {
    let mut outs = vec![String::new()];
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("\\%") {
            outs.iter_mut().for_each(|o| o.push('%'));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('%') {
            let Some(end) = r.find('%') else {
                outs.iter_mut().for_each(|o| o.push('%'));
                rest = r;
                continue;
            };
            let name = &r[..end];
            let values = placeholders.get(name).ok_or_else(|| {
                err(
                    line,
                    format!("placeholder `%{name}%` is not configured in any pipeline"),
                )
            })?;
            if values.is_empty() || outs.len() * values.len() > MAX_VARIANTS {
                return Err(err(
                    line,
                    format!("placeholder `%{name}%` expands to no or too many values"),
                ));
            }
            outs = outs
                .iter()
                .flat_map(|o| values.iter().map(move |v| format!("{o}{v}")))
                .collect();
            rest = &r[end + 1..];
        } else {
            let c = rest.chars().next().unwrap_or('%');
            outs.iter_mut().for_each(|o| o.push(c));
            rest = &rest[c.len_utf8()..];
        }
    }
    Ok(outs)
}

/// Context the compiler needs from the rule set: placeholders and field-name mappings.
pub struct CompileCtx<'a> {
    pub placeholders: &'a HashMap<String, Vec<String>>,
    /// Rule field -> event fields to try first.
    pub field_map: &'a dyn Fn(&str) -> Vec<String>,
}

/// Compile one `key: value` entry of a selection map (`key` may be `field|mods` or `|mods`).
pub fn compile_field(
    key: &str,
    value: &Node,
    ctx: &CompileCtx<'_>,
) -> Result<FieldMatch, ModError> {
    let line = value.line;
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or("").trim().to_string();
    let modifiers: Vec<String> = parts.map(|m| m.trim().to_string()).collect();
    let field = if field.is_empty() { None } else { Some(field) };
    let items: Vec<&Node> = match &value.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![value],
    };
    if items.is_empty() {
        return Err(err(line, "empty value list"));
    }
    let mut fm = FieldMatch {
        paths: match &field {
            Some(f) => {
                let mut names = (ctx.field_map)(f);
                if !names.iter().any(|n| n == f) {
                    names.push(f.clone());
                }
                names.iter().map(|n| FieldPath::new(n)).collect()
            }
            None => Vec::new(),
        },
        field,
        modifiers: modifiers.clone(),
        tests: Vec::new(),
        all: false,
        negate: false,
        line,
        slot: super::matcher::NO_SLOT,
    };

    // Flags and the final value type, validated before any value is touched.
    let mut anchor: Option<StrKind> = None;
    let mut cased = false;
    let mut value_type: Option<&str> = None;
    let mut re_flags = String::new();
    let mut cmp: Option<CmpOp> = None;
    let mut time: Option<TimePart> = None;
    let mut transforms: Vec<&str> = Vec::new();
    for m in &modifiers {
        match m.as_str() {
            // Applied in order, as pySigma does: each adds its wildcard to the value, so two
            // different anchors (`startswith|endswith`, `contains|startswith`) are `contains`.
            "contains" | "startswith" | "endswith" => {
                let this = match m.as_str() {
                    "contains" => StrKind::Contains,
                    "startswith" => StrKind::Prefix,
                    _ => StrKind::Suffix,
                };
                anchor = Some(match anchor {
                    Some(prev) if prev != this => StrKind::Contains,
                    _ => this,
                });
            }
            "all" => fm.all = true,
            "cased" => cased = true,
            "neq" => fm.negate = true,
            "re" | "cidr" | "exists" | "fieldref" => {
                if let Some(prev) = value_type {
                    return Err(err(
                        line,
                        format!("modifiers `{prev}` and `{m}` cannot be combined"),
                    ));
                }
                value_type = Some(m.as_str());
            }
            "i" | "m" | "s" if value_type == Some("re") => re_flags.push_str(m),
            "gt" | "gte" | "lt" | "lte" => {
                if let Some(prev) = cmp {
                    return Err(err(
                        line,
                        format!(
                            "modifiers `{}` and `{m}` cannot be combined (a range is two entries of the selection)",
                            cmp_name(prev)
                        ),
                    ));
                }
                cmp = Some(match m.as_str() {
                    "gt" => CmpOp::Gt,
                    "gte" => CmpOp::Gte,
                    "lt" => CmpOp::Lt,
                    _ => CmpOp::Lte,
                });
            }
            "minute" => time = Some(TimePart::Minute),
            "hour" => time = Some(TimePart::Hour),
            "day" => time = Some(TimePart::Day),
            "week" => time = Some(TimePart::Week),
            "month" => time = Some(TimePart::Month),
            "year" => time = Some(TimePart::Year),
            "base64" | "base64offset" | "wide" | "utf16le" | "utf16be" | "utf16" | "windash"
            | "expand" => {
                // Transformations apply in rule order: after base64, `windash` would look for
                // dashes in the encoded text and find none. Through the UTF-16 encodings a dash
                // stays a character (`wide|windash`, as pySigma reads it): varying it before
                // them is the same.
                if m == "windash" {
                    if let Some(enc) = transforms
                        .iter()
                        .find(|t| matches!(**t, "base64" | "base64offset"))
                    {
                        return Err(err(
                            line,
                            format!("`windash` must come before `{enc}` (modifiers apply in order; after it there is no dash to vary)"),
                        ));
                    }
                    if let Some(first) = transforms.iter().position(|t| ENCODINGS.contains(t)) {
                        transforms.insert(first, "windash");
                        continue;
                    }
                }
                transforms.push(m.as_str());
            }
            "" => return Err(err(line, "empty modifier (`||`)")),
            other => return Err(err(line, format!("unknown modifier `{other}`"))),
        }
    }
    // `neq|all: [a, b]` is "neither a nor b": each value's `neq` linked by AND is, by De
    // Morgan, the negation of any of them (negating "all of them" would hold for every event
    // with one value).
    if fm.negate && fm.all {
        fm.all = false;
    }
    check_combination(&modifiers, value_type, line)?;
    if fm.all && items.len() == 1 && fm.field.is_some() {
        // The spec forbids `all` on a single value; accept it (it is harmless) rather than
        // rejecting public rules over style.
    }

    // Presence and non-string value types.
    if value_type == Some("exists") {
        let b = match &items[0].value {
            Value::Bool(b) => *b,
            Value::Str(t) if t.eq_ignore_ascii_case("true") => true,
            Value::Str(t) if t.eq_ignore_ascii_case("false") => false,
            _ => return Err(err(line, "`exists` takes `true` or `false`")),
        };
        if items.len() != 1 || fm.field.is_none() {
            return Err(err(line, "`exists` takes a single boolean on a field"));
        }
        fm.tests.push(ValueTest::Exists(b));
        return Ok(fm);
    }
    if let Some(op) = cmp.filter(|_| time.is_none()) {
        for it in &items {
            let whole = match &it.value {
                Value::Int(i) => Some(i128::from(*i)),
                Value::Str(s) => s.trim().parse::<i128>().ok(),
                _ => None,
            };
            if let Some(n) = whole {
                fm.tests.push(ValueTest::CmpInt(op, n));
                continue;
            }
            let n = match &it.value {
                Value::Int(i) => *i as f64,
                Value::Float(f) => *f,
                Value::Str(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| err(it.line, format!("`{m}` needs a number", m = cmp_name(op))))?,
                _ => return Err(err(it.line, format!("`{}` needs a number", cmp_name(op)))),
            };
            fm.tests.push(ValueTest::Cmp(op, n));
        }
        return Ok(fm);
    }
    if let Some(part) = time {
        for it in &items {
            let n = match &it.value {
                Value::Int(i) => *i as f64,
                Value::Float(f) => *f,
                _ => return Err(err(it.line, "time modifiers need a number")),
            };
            check_time_value(part, cmp, n, fm.negate).map_err(|m| err(it.line, m))?;
            fm.tests.push(ValueTest::Time {
                part,
                op: cmp,
                value: n,
            });
        }
        return Ok(fm);
    }

    for it in &items {
        if it.value == Value::Null {
            if !modifiers.iter().all(|m| m == "neq") {
                return Err(err(it.line, "`null` cannot be combined with modifiers"));
            }
            fm.tests.push(ValueTest::Null);
            continue;
        }
        let Some(text) = it.scalar_text() else {
            return Err(err(
                it.line,
                format!("expected a scalar value, found a {}", it.kind()),
            ));
        };
        if let Some(t) = transforms.iter().find(|t| **t != "expand") {
            if !matches!(it.value, Value::Str(_)) {
                return Err(err(
                    it.line,
                    format!("`{t}` transforms text; write the value `{text}` in quotes"),
                ));
            }
        }
        match value_type {
            Some("re") => {
                let mut pat = String::new();
                if !re_flags.is_empty() {
                    pat.push_str(&format!("(?{re_flags})"));
                }
                pat.push_str(&text);
                let re = regex::RegexBuilder::new(&pat)
                    .size_limit(1 << 22)
                    .build()
                    .map_err(|e| err(it.line, format!("invalid regular expression: {e}")))?;
                fm.tests.push(ValueTest::Re(re));
            }
            Some("cidr") => {
                let net: ipnet::IpNet = text
                    .trim()
                    .parse()
                    .or_else(|_| {
                        text.trim()
                            .parse::<std::net::IpAddr>()
                            .map(ipnet::IpNet::from)
                    })
                    .map_err(|_| err(it.line, format!("invalid CIDR `{text}`")))?;
                fm.tests.push(ValueTest::Cidr(net));
            }
            Some("fieldref") => fm.tests.push(ValueTest::FieldRef {
                other: FieldPath::new(&text),
                kind: anchor.unwrap_or(StrKind::Exact),
                cased,
            }),
            // A number as a number: `n: 5` is 5.0 in the event too.
            _ if fm.field.is_some()
                && anchor.is_none()
                && transforms.is_empty()
                && matches!(it.value, Value::Int(_) | Value::Float(_)) =>
            {
                let (int, value) = match it.value {
                    Value::Int(i) => (Some(i128::from(i)), i as f64),
                    Value::Float(f) => {
                        ((f.fract() == 0.0 && f.abs() < 1e18).then_some(f as i128), f)
                    }
                    _ => unreachable!("matched above"),
                };
                fm.tests.push(ValueTest::Number { text, int, value });
            }
            _ => {
                let mut variants = Vec::new();
                for toks in apply_transforms(&text, &transforms, ctx, it.line)? {
                    let mut toks = toks;
                    match anchor {
                        Some(StrKind::Contains) => {
                            toks.insert(0, Tok::Star);
                            toks.push(Tok::Star);
                        }
                        Some(StrKind::Prefix) => toks.push(Tok::Star),
                        Some(StrKind::Suffix) => toks.insert(0, Tok::Star),
                        _ => {}
                    }
                    let toks = normalize_tokens(&toks);
                    // Keywords match anywhere in a value, like a full-text search.
                    let toks = if fm.field.is_none() {
                        keyword_tokens(toks)
                    } else {
                        toks
                    };
                    variants.push(toks);
                }
                if fm.all && variants.len() > 1 {
                    // Under `all` each rule value must match, in any of its forms.
                    let t = StrTest::any_of(&variants, cased).map_err(|e| err(it.line, e))?;
                    fm.tests.push(ValueTest::Str(t));
                } else {
                    for toks in &variants {
                        let t = StrTest::from_tokens(toks, cased).map_err(|e| err(it.line, e))?;
                        fm.tests.push(ValueTest::Str(t));
                    }
                }
            }
        }
    }
    if fm.field.is_none()
        && fm
            .tests
            .iter()
            .any(|t| !matches!(t, ValueTest::Str(_) | ValueTest::Re(_)))
    {
        return Err(err(line, "keyword searches only support string values"));
    }
    Ok(fm)
}

/// Encodings: after one of them the value is bytes of another form, not the rule's text.
const ENCODINGS: [&str; 6] = [
    "base64",
    "base64offset",
    "wide",
    "utf16le",
    "utf16be",
    "utf16",
];

/// Modifiers that would be silently ignored beside another (`re|contains`, `gt|contains`,
/// `exists|contains`): the rule would not test what it says, so it is refused, with why.
fn check_combination(
    modifiers: &[String],
    value_type: Option<&str>,
    line: usize,
) -> Result<(), ModError> {
    let find = |set: &[&str]| {
        modifiers
            .iter()
            .map(String::as_str)
            .find(|m| set.contains(m))
    };
    let anchor = find(&["contains", "startswith", "endswith"]);
    let transform = modifiers
        .iter()
        .map(String::as_str)
        .find(|m| ENCODINGS.contains(m) || matches!(*m, "windash" | "expand"));
    let cmp = find(&["gt", "gte", "lt", "lte"]);
    let time = find(&["minute", "hour", "day", "week", "month", "year"]);
    let clash = |a: &str, b: &str, why: &str| {
        Err(err(
            line,
            format!("modifiers `{a}` and `{b}` cannot be combined: {why}"),
        ))
    };
    match value_type {
        Some(vt @ ("re" | "cidr" | "exists")) => {
            let why = match vt {
                "re" => "a regular expression says itself where it matches (it is unanchored unless it uses ^ or $)",
                "cidr" => "a CIDR matches IP addresses, not text",
                _ => "`exists` tests whether the field is present, not its value",
            };
            if let Some(other) = anchor.or(transform).or(cmp).or(time) {
                return clash(vt, other, why);
            }
        }
        Some("fieldref") => {
            if let Some(other) = transform.or(cmp).or(time) {
                return clash(
                    "fieldref",
                    other,
                    "`fieldref` compares with the other field's value as it is",
                );
            }
        }
        _ => {}
    }
    if let Some(t) = time {
        if let Some(other) = anchor.or(transform) {
            return clash(
                t,
                other,
                "a time modifier compares a part of a timestamp as a number",
            );
        }
    } else if let Some(c) = cmp {
        if let Some(other) = anchor.or(transform) {
            return clash(c, other, "a comparison compares numbers, not text");
        }
    }
    Ok(())
}

fn keyword_tokens(mut toks: Vec<Tok>) -> Vec<Tok> {
    if toks.first() != Some(&Tok::Star) {
        toks.insert(0, Tok::Star);
    }
    if toks.last() != Some(&Tok::Star) {
        toks.push(Tok::Star);
    }
    toks
}

/// A time part's value no date has (`hour: 25`), or a comparison every date passes
/// (`hour|lt: 24`): the test would never match, or ask only that the field holds a date.
/// `negated` (`neq`) turns one into the other: `hour|neq: 24` holds for every date.
fn check_time_value(
    part: TimePart,
    cmp: Option<CmpOp>,
    value: f64,
    negated: bool,
) -> Result<(), String> {
    // The modifiers appendix's ranges, but weeks as the matcher counts them: ISO weeks, of
    // which some years have 53.
    let (name, range) = match part {
        TimePart::Minute => ("minute", Some((0.0, 59.0))),
        TimePart::Hour => ("hour", Some((0.0, 23.0))),
        TimePart::Day => ("day", Some((1.0, 31.0))),
        TimePart::Week => ("week", Some((1.0, 53.0))),
        TimePart::Month => ("month", Some((1.0, 12.0))),
        TimePart::Year => ("year", None),
    };
    let test = match (cmp, negated) {
        (Some(op), false) => format!("{name}|{}: {value}", cmp_name(op)),
        (Some(op), true) => format!("{name}|{}|neq: {value}", cmp_name(op)),
        (None, false) => format!("{name}: {value}"),
        (None, true) => format!("{name}|neq: {value}"),
    };
    let every_date = "holds for every date (`exists: true` asks for the field)";
    let (never_text, always_text) = if negated {
        (every_date, "never matches")
    } else {
        ("never matches", every_date)
    };
    if cmp.is_none() && value.fract() != 0.0 {
        return Err(format!("`{name}` is a whole number: `{test}` {never_text}"));
    }
    let Some((low, high)) = range else {
        return Ok(());
    };
    let (never, always) = match cmp {
        None => (value < low || value > high, false),
        Some(CmpOp::Gt) => (value >= high, value < low),
        Some(CmpOp::Gte) => (value > high, value <= low),
        Some(CmpOp::Lt) => (value <= low, value > high),
        Some(CmpOp::Lte) => (value < low, value >= high),
    };
    if never {
        return Err(format!(
            "`{name}` is {low} to {high}: `{test}` {never_text}"
        ));
    }
    if always {
        return Err(format!(
            "`{name}` is {low} to {high}: `{test}` {always_text}"
        ));
    }
    Ok(())
}

fn cmp_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Gt => "gt",
        CmpOp::Gte => "gte",
        CmpOp::Lt => "lt",
        CmpOp::Lte => "lte",
    }
}

/// Apply the value transformations in rule order; one value may become several (OR-ed).
fn apply_transforms(
    text: &str,
    transforms: &[&str],
    ctx: &CompileCtx<'_>,
    line: usize,
) -> Result<Vec<Vec<Tok>>, ModError> {
    let mut values: Vec<Vec<Tok>> = if transforms.first() == Some(&"expand") {
        expand(text, ctx.placeholders, line)?
            .iter()
            .map(|s| parse_wildcards(s))
            .collect()
    } else {
        if transforms.contains(&"expand") {
            return Err(err(line, "`expand` must be the first value transformation"));
        }
        vec![parse_wildcards(text)]
    };
    for t in transforms.iter().skip_while(|t| **t == "expand") {
        let mut next = Vec::new();
        for v in &values {
            match *t {
                "base64" => {
                    let b = plain_bytes(v, t, line)?;
                    next.push(vec![Tok::Lit(
                        base64::engine::general_purpose::STANDARD
                            .encode(b)
                            .into_bytes(),
                    )]);
                }
                "base64offset" => {
                    let b = plain_bytes(v, t, line)?;
                    next.extend(base64_offsets(&b).into_iter().map(|x| vec![Tok::Lit(x)]));
                }
                "wide" | "utf16le" | "utf16be" | "utf16" => {
                    let (le, bom) = match *t {
                        "utf16be" => (false, false),
                        "utf16" => (true, true),
                        _ => (true, false),
                    };
                    next.push(
                        v.iter()
                            .map(|tok| match tok {
                                Tok::Lit(b) => Tok::Lit(utf16(b, le, bom)),
                                other => other.clone(),
                            })
                            .collect(),
                    );
                }
                "windash" => next.extend(windash(v, line)?),
                "expand" => {
                    return Err(err(line, "`expand` must be the first value transformation"))
                }
                _ => next.push(v.clone()),
            }
        }
        if next.len() > MAX_VARIANTS {
            return Err(err(
                line,
                "value transformations expand to too many variants",
            ));
        }
        values = next;
    }
    if let Some(v) = values.iter().find(|v| wildcards_in(v) > MAX_WILDCARDS) {
        return Err(err(
            line,
            format!(
                "a value with {} wildcards (`*`, `?`): at most {MAX_WILDCARDS} (matching costs the \
                 value's wildcards times the text's length; a test with thousands ran for minutes)",
                wildcards_in(v)
            ),
        ));
    }
    Ok(values)
}

/// Wildcards one value may hold. Each inner `*` makes matching walk the text again, so a value of
/// thousands (QA: `*a*a*...` 3,000 times, tested against long texts through `POST /rules/test`)
/// held a core for minutes; real rules use a handful.
pub const MAX_WILDCARDS: usize = 64;

fn wildcards_in(toks: &[Tok]) -> usize {
    toks.iter()
        .filter(|t| matches!(t, Tok::Star | Tok::One))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_of_too_many_wildcards_is_refused() {
        let placeholders = HashMap::new();
        let ctx = CompileCtx {
            placeholders: &placeholders,
            field_map: &|f: &str| vec![f.to_string()],
        };
        let many = "*a".repeat(MAX_WILDCARDS + 1);
        let e = apply_transforms(&many, &[], &ctx, 7).unwrap_err();
        assert_eq!(e.line, 7);
        assert!(e.message.contains("at most 64"), "{}", e.message);
        assert!(apply_transforms(&"*a".repeat(MAX_WILDCARDS), &[], &ctx, 7).is_ok());
        // Escaped ones are text.
        assert!(apply_transforms(&"\\*a".repeat(100), &[], &ctx, 7).is_ok());
    }

    #[test]
    fn wildcard_escapes() {
        assert_eq!(
            parse_wildcards("a*b"),
            vec![Tok::Lit(b"a".to_vec()), Tok::Star, Tok::Lit(b"b".to_vec())]
        );
        assert_eq!(parse_wildcards("a\\*b"), vec![Tok::Lit(b"a*b".to_vec())]);
        assert_eq!(parse_wildcards("a\\?"), vec![Tok::Lit(b"a?".to_vec())]);
        assert_eq!(
            parse_wildcards("C:\\Windows"),
            vec![Tok::Lit(b"C:\\Windows".to_vec())]
        );
        assert_eq!(
            parse_wildcards("a\\\\*"),
            vec![Tok::Lit(b"a\\".to_vec()), Tok::Star]
        );
        assert_eq!(
            parse_wildcards("a\\\\\\*"),
            vec![Tok::Lit(b"a\\*".to_vec())]
        );
    }

    #[test]
    fn base64offset_matches_pysigma() {
        let v: Vec<String> = base64_offsets(b"/bin/bash")
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        // Reference values from pySigma's SigmaBase64OffsetModifier.
        assert_eq!(v, vec!["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]);
    }

    #[test]
    fn windash_permutes_flag_dashes_only() {
        let v = windash(&parse_wildcards(" -enc a-b"), 1).unwrap();
        assert_eq!(v.len(), 5);
        let texts: Vec<String> = v
            .iter()
            .map(|t| String::from_utf8(plain_bytes(t, "x", 1).unwrap()).unwrap())
            .collect();
        assert!(texts.contains(&" /enc a-b".to_string()));
        assert!(texts.contains(&" \u{2014}enc a-b".to_string()));
    }

    #[test]
    fn windash_expands_a_flag_written_with_any_of_the_five_dashes() {
        for dash in DASHES {
            let v = windash(&parse_wildcards(&format!("{dash}foo")), 1).unwrap();
            let mut texts: Vec<String> = v
                .iter()
                .map(|t| String::from_utf8(plain_bytes(t, "x", 1).unwrap()).unwrap())
                .collect();
            texts.sort();
            let mut expected: Vec<String> = DASHES.iter().map(|d| format!("{d}foo")).collect();
            expected.sort();
            assert_eq!(texts, expected, "{dash}");
        }
    }

    #[test]
    fn expand_uses_placeholders() {
        let mut ph = HashMap::new();
        ph.insert(
            "Admins".to_string(),
            vec!["root".to_string(), "adm_*".to_string()],
        );
        assert_eq!(expand("%Admins%", &ph, 1).unwrap(), vec!["root", "adm_*"]);
        assert_eq!(
            expand("\\%plain%Admins%", &ph, 1).unwrap(),
            vec!["%plainroot", "%plainadm_*"]
        );
        assert!(expand("%Nope%", &ph, 7)
            .unwrap_err()
            .message
            .contains("%Nope%"));
    }

    #[test]
    fn utf16_forms() {
        assert_eq!(utf16(b"cmd", true, false), vec![0x63, 0, 0x6d, 0, 0x64, 0]);
        assert_eq!(utf16(b"cmd", false, false), vec![0, 0x63, 0, 0x6d, 0, 0x64]);
        assert_eq!(&utf16(b"cmd", true, true)[..2], &[0xFF, 0xFE]);
    }
}
