//! Evaluation of compiled detections against one event: field lookup in the raw vendor JSON (with
//! ECS fallback), value tests, selections and conditions. Nothing here allocates per event.

use perimeter_model::raw_prelude::*;
use perimeter_model::{raw_to_serde, EcsValue, Event, RawJson as Json};
use std::fmt::Write as _;

use super::condition::Cond;

/// A field name compiled for lookup: `actor.alternateId` addresses nested objects, walks arrays
/// (any element may match) and also finds keys that literally contain dots.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath {
    pub name: String,
    parts: Vec<String>,
    /// `joined[i][k]` = parts[i..=i+1+k] joined with dots, for keys that contain dots.
    joined: Vec<Vec<String>>,
}

/// Where a name/value pair keeps its value, in the order looked for: Google Workspace
/// (`value`, `intValue`, `boolValue`, `multiValue`, `multiIntValue`), Microsoft 365 (`Value`;
/// `NewValue` of `ModifiedProperties`, the value as changed).
const PAIR_VALUE_KEYS: [&str; 8] = [
    "value",
    "Value",
    "NewValue",
    "newValue",
    "intValue",
    "boolValue",
    "multiValue",
    "multiIntValue",
];

impl FieldPath {
    pub fn new(name: &str) -> FieldPath {
        let parts: Vec<String> = name.split('.').map(str::to_string).collect();
        let joined = (0..parts.len())
            .map(|i| {
                (i + 2..=parts.len())
                    .map(|j| parts[i..j].join("."))
                    .collect()
            })
            .collect();
        FieldPath {
            name: name.to_string(),
            parts,
            joined,
        }
    }

    /// Visit every value this path resolves to in `root`; `f` returns true to stop early.
    /// Returns true when stopped.
    pub fn visit<'a>(&'a self, root: &'a Json, f: &mut dyn FnMut(Leaf<'a>) -> bool) -> bool {
        self.visit_from(root, 0, f)
    }

    /// The keys this path may take in the top-level object: the first segment, then the first
    /// segments joined with dots (for keys that contain dots), in lookup order.
    pub(crate) fn top_keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.parts[0].as_str()).chain(self.joined[0].iter().map(String::as_str))
    }

    /// [`FieldPath::visit`] on an object root whose top-level lookups are already done:
    /// `top(i)` is the value under the `i`-th of [`FieldPath::top_keys`], if any.
    pub(crate) fn visit_from_top<'a>(
        &'a self,
        top: &dyn Fn(usize) -> Option<&'a Json>,
        f: &mut dyn FnMut(Leaf<'a>) -> bool,
    ) -> bool {
        if let Some(next) = top(0) {
            return self.visit_from(next, 1, f);
        }
        for k in 0..self.joined[0].len() {
            if let Some(next) = top(k + 1) {
                if self.visit_from(next, 2 + k, f) {
                    return true;
                }
            }
        }
        false
    }

    fn visit_from<'a>(
        &'a self,
        v: &'a Json,
        i: usize,
        f: &mut dyn FnMut(Leaf<'a>) -> bool,
    ) -> bool {
        if i == self.parts.len() {
            return match v.as_array() {
                Some(items) => {
                    items.iter().any(|item| match item.as_array() {
                        Some(inner) => inner.iter().any(|x| f(Leaf::Json(x))),
                        None => f(Leaf::Json(item)),
                    }) || (items.is_empty() && f(Leaf::EmptyList))
                }
                None => f(Leaf::Json(v)),
            };
        }
        if v.is_object() {
            // A nested path wins over a key that literally contains the dots; dotted keys
            // are only tried when the plain key is absent.
            if let Some(next) = v.get(self.parts[i].as_str()) {
                return self.visit_from(next, i + 1, f);
            }
            for (k, key) in self.joined[i].iter().enumerate() {
                if let Some(next) = v.get(key.as_str()) {
                    if self.visit_from(next, i + 2 + k, f) {
                        return true;
                    }
                }
            }
            return false;
        }
        match v.as_array() {
            Some(items) => items
                .iter()
                .any(|item| self.visit_from(item, i, f) || self.visit_named_pair(item, i, f)),
            None => false,
        }
    }

    /// Perimeter extension: in a list of name/value pairs (Google Workspace `parameters`,
    /// Microsoft 365 `Parameters` and `ModifiedProperties`, Okta `debugData`-style lists), an
    /// element whose `name` is the path's next segment stands for its value, so a rule can ask
    /// for one parameter: `events.parameters.NEW_VALUE: 'false'` is the value of the pair named
    /// `NEW_VALUE`, where `events.parameters.value: 'false'` matched any pair's value. Further
    /// segments go into the pair (`ModifiedProperties.Role.OldValue`). Only elements lacking a
    /// key of that name are read so, and only pairs: objects with a string `name` or `Name`.
    fn visit_named_pair<'a>(
        &'a self,
        item: &'a Json,
        i: usize,
        f: &mut dyn FnMut(Leaf<'a>) -> bool,
    ) -> bool {
        if !item.is_object() || item.get(self.parts[i].as_str()).is_some() {
            return false;
        }
        let named = ["name", "Name"]
            .iter()
            .find_map(|k| item.get(k)?.as_str())
            .is_some_and(|n| n == self.parts[i]);
        if !named {
            return false;
        }
        if i + 1 < self.parts.len() {
            return self.visit_from(item, i + 1, f);
        }
        PAIR_VALUE_KEYS
            .iter()
            .find_map(|k| item.get(k))
            .is_some_and(|value| self.visit_from(value, i + 1, f))
    }

    /// Resolve against the raw event first, then the ECS view. `f` sees every candidate value.
    pub fn visit_event<'a>(
        &'a self,
        event: &'a Event,
        f: &mut dyn FnMut(Leaf<'a>) -> bool,
    ) -> Found {
        let mut any = false;
        let stopped = self.visit(&event.raw, &mut |leaf| {
            any = true;
            f(leaf)
        });
        if stopped {
            return Found::Stopped;
        }
        if any {
            return Found::Exhausted;
        }
        self.visit_ecs(event, f)
    }

    /// The ECS half of [`FieldPath::visit_event`] (when the raw record has no value).
    pub(crate) fn visit_ecs<'a>(
        &'a self,
        event: &'a Event,
        f: &mut dyn FnMut(Leaf<'a>) -> bool,
    ) -> Found {
        match event.ecs.get(&self.name) {
            Some(EcsValue::Str(s)) => {
                if f(Leaf::Str(s)) {
                    Found::Stopped
                } else {
                    Found::Exhausted
                }
            }
            Some(EcsValue::Num(n)) => {
                if f(Leaf::Num(n)) {
                    Found::Stopped
                } else {
                    Found::Exhausted
                }
            }
            Some(EcsValue::List(l)) => {
                if l.iter().any(|s| f(Leaf::Str(s))) {
                    Found::Stopped
                } else {
                    Found::Exhausted
                }
            }
            None => Found::Absent,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The callback stopped the walk (a value matched).
    Stopped,
    /// Values were found, none stopped the walk.
    Exhausted,
    /// The field does not exist in the event.
    Absent,
}

/// One value a field resolved to.
#[derive(Debug, Clone, Copy)]
pub enum Leaf<'a> {
    Json(&'a Json),
    Str(&'a str),
    Num(u64),
    /// The field holds an empty list: it exists but has no element.
    EmptyList,
}

/// Stack buffer for rendering numbers as text without allocating.
pub struct NumBuf {
    buf: [u8; 48],
    len: usize,
}

impl NumBuf {
    pub fn new() -> NumBuf {
        NumBuf {
            buf: [0; 48],
            len: 0,
        }
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Default for NumBuf {
    fn default() -> Self {
        NumBuf::new()
    }
}

impl std::fmt::Write for NumBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let b = s.as_bytes();
        if self.len + b.len() > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        Ok(())
    }
}

impl<'a> Leaf<'a> {
    /// The value as text for string tests: strings as-is, numbers and booleans rendered;
    /// null, objects and lists have no text.
    pub fn with_text<R>(&self, f: impl FnOnce(Option<&str>) -> R) -> R {
        match self {
            Leaf::Json(v) => match v.as_ref() {
                ValueRef::String(s) => f(Some(s)),
                ValueRef::Bool(b) => f(Some(if b { "true" } else { "false" })),
                ValueRef::Number(n) => {
                    let mut buf = NumBuf::new();
                    let _ = write!(buf, "{n}");
                    f(Some(buf.as_str()))
                }
                _ => f(None),
            },
            Leaf::Str(s) => f(Some(s)),
            Leaf::Num(n) => {
                let mut buf = NumBuf::new();
                let _ = write!(buf, "{n}");
                f(Some(buf.as_str()))
            }
            _ => f(None),
        }
    }

    /// The value as a whole number, when it is one (a JSON integer, or text that is one).
    pub fn as_i128(&self) -> Option<i128> {
        match self {
            Leaf::Json(v) => match v.as_ref() {
                ValueRef::Number(n) => n
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from)),
                ValueRef::String(s) => s.trim().parse().ok(),
                _ => None,
            },
            Leaf::Str(s) => s.trim().parse().ok(),
            Leaf::Num(n) => Some(i128::from(*n)),
            _ => None,
        }
    }

    /// The value when it is a number (not text that reads as one): whole (when it is) and
    /// as a float.
    pub fn number(&self) -> Option<(Option<i128>, Option<f64>)> {
        match self {
            Leaf::Json(v) => match v.as_ref() {
                ValueRef::Number(n) => Some((
                    n.as_i64()
                        .map(i128::from)
                        .or_else(|| n.as_u64().map(i128::from)),
                    n.as_f64(),
                )),
                _ => None,
            },
            Leaf::Num(n) => Some((Some(i128::from(*n)), Some(*n as f64))),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Leaf::Json(v) => match v.as_ref() {
                ValueRef::Number(n) => n.as_f64(),
                ValueRef::String(s) => s.trim().parse().ok(),
                _ => None,
            },
            Leaf::Str(s) => s.trim().parse().ok(),
            Leaf::Num(n) => Some(*n as f64),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Leaf::Json(v) if v.is_null())
    }

    /// The value for an alert's `matched_fields`.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Leaf::Json(v) => raw_to_serde(v),
            Leaf::Str(s) => serde_json::Value::String(s.to_string()),
            Leaf::Num(n) => serde_json::Value::from(n),
            Leaf::EmptyList => serde_json::Value::Array(Vec::new()),
        }
    }
}

/// How a string pattern is anchored after wildcards were resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrKind {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

/// A wildcard-aware string test. Patterns that reduce to a literal with optional leading/trailing
/// `*` use direct comparisons; anything else (inner wildcards, `?`, non-ASCII case folding) uses a
/// regex compiled once.
#[derive(Debug, Clone)]
pub enum StrTest {
    Lit {
        kind: StrKind,
        lit: String,
        cased: bool,
    },
    Regex(regex::Regex),
}

/// A pattern token before classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Lit(Vec<u8>),
    Star,
    One,
}

impl StrTest {
    pub fn from_tokens(toks: &[Tok], cased: bool) -> Result<StrTest, String> {
        let toks = normalize_tokens(toks);
        let lit_of = |t: &Tok| match t {
            Tok::Lit(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        let simple = match toks.as_slice() {
            [] => Some((StrKind::Exact, String::new())),
            [Tok::Star] => Some((StrKind::Contains, String::new())),
            [l @ Tok::Lit(_)] => lit_of(l).map(|s| (StrKind::Exact, s)),
            [Tok::Star, l @ Tok::Lit(_)] => lit_of(l).map(|s| (StrKind::Suffix, s)),
            [l @ Tok::Lit(_), Tok::Star] => lit_of(l).map(|s| (StrKind::Prefix, s)),
            [Tok::Star, l @ Tok::Lit(_), Tok::Star] => lit_of(l).map(|s| (StrKind::Contains, s)),
            _ => None,
        };
        if let Some((kind, lit)) = simple {
            if cased || lit.is_ascii() {
                let lit = if cased { lit } else { lit.to_ascii_lowercase() };
                return Ok(StrTest::Lit { kind, lit, cased });
            }
        }
        let re = tokens_to_regex(&toks, cased);
        regex::Regex::new(&re)
            .map(StrTest::Regex)
            .map_err(|e| format!("wildcard pattern: {e}"))
    }

    pub fn matches(&self, text: &str) -> bool {
        match self {
            StrTest::Lit { kind, lit, cased } => {
                let (h, n) = (text.as_bytes(), lit.as_bytes());
                if *cased {
                    match kind {
                        StrKind::Exact => h == n,
                        StrKind::Prefix => h.starts_with(n),
                        StrKind::Suffix => h.ends_with(n),
                        StrKind::Contains => text.contains(lit.as_str()),
                    }
                } else {
                    match kind {
                        StrKind::Exact => h.eq_ignore_ascii_case(n),
                        StrKind::Prefix => {
                            h.len() >= n.len() && h[..n.len()].eq_ignore_ascii_case(n)
                        }
                        StrKind::Suffix => {
                            h.len() >= n.len() && h[h.len() - n.len()..].eq_ignore_ascii_case(n)
                        }
                        StrKind::Contains => contains_ascii_ci(h, n),
                    }
                }
            }
            StrTest::Regex(re) => re.is_match(text),
        }
    }
}

/// Merge adjacent literals and collapse runs of `*`.
pub fn normalize_tokens(toks: &[Tok]) -> Vec<Tok> {
    let mut out: Vec<Tok> = Vec::with_capacity(toks.len());
    for t in toks {
        match (out.last_mut(), t) {
            (Some(Tok::Lit(a)), Tok::Lit(b)) => a.extend_from_slice(b),
            (Some(Tok::Star), Tok::Star) => {}
            (_, Tok::Lit(b)) if b.is_empty() => {}
            _ => out.push(t.clone()),
        }
    }
    out
}

/// Translate wildcard tokens into an anchored regex (`(?s)` so `*` spans newlines).
pub fn tokens_to_regex(toks: &[Tok], cased: bool) -> String {
    let mut re = String::from(if cased { "(?s)^" } else { "(?si)^" });
    push_tokens_regex(&mut re, toks);
    re.push('$');
    re
}

fn push_tokens_regex(re: &mut String, toks: &[Tok]) {
    for t in toks {
        match t {
            Tok::Lit(b) => re.push_str(&regex::escape(&String::from_utf8_lossy(b))),
            Tok::Star => re.push_str(".*"),
            Tok::One => re.push('.'),
        }
    }
}

impl StrTest {
    /// One test passing when any of `variants` matches: the forms one rule value takes under
    /// `windash` or `base64offset`, which are alternatives even under `all` (that joins the
    /// rule's values, not the forms of one value).
    pub fn any_of(variants: &[Vec<Tok>], cased: bool) -> Result<StrTest, String> {
        let mut re = String::from(if cased { "(?s)^(?:" } else { "(?si)^(?:" });
        for (i, toks) in variants.iter().enumerate() {
            if i > 0 {
                re.push('|');
            }
            push_tokens_regex(&mut re, &normalize_tokens(toks));
        }
        re.push_str(")$");
        regex::Regex::new(&re)
            .map(StrTest::Regex)
            .map_err(|e| format!("wildcard pattern: {e}"))
    }
}

pub fn contains_ascii_ci(h: &[u8], n: &[u8]) -> bool {
    if n.is_empty() {
        return true;
    }
    if h.len() < n.len() {
        return false;
    }
    let first = n[0].to_ascii_lowercase();
    let last_start = h.len() - n.len();
    let mut i = 0;
    while i <= last_start {
        if h[i].to_ascii_lowercase() == first && h[i..i + n.len()].eq_ignore_ascii_case(n) {
            return true;
        }
        i += 1;
    }
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CmpOp {
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Gt => a > b,
            CmpOp::Gte => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Lte => a <= b,
        }
    }

    /// [`Self::holds`] for integers.
    pub fn holds_ord(self, a: i128, b: i128) -> bool {
        match self {
            CmpOp::Gt => a > b,
            CmpOp::Gte => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Lte => a <= b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePart {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// One value test of a field (a field with a list of values ORs -- or with `all` ANDs -- them).
#[derive(Debug, Clone)]
pub enum ValueTest {
    Str(StrTest),
    /// `re`: the raw regex, compiled once.
    Re(regex::Regex),
    Cidr(ipnet::IpNet),
    Cmp(CmpOp, f64),
    /// `gt`/`gte`/`lt`/`lte` with a whole number: compared as integers with whole-number
    /// values, exactly (a float has 53 bits: ids and byte counts beyond 2^53 compared wrong).
    CmpInt(CmpOp, i128),
    /// A number written as a number (`n: 5`): a JSON number is compared as a number (5, 5.0
    /// and 5e0 are equal; whole numbers exactly, beyond 2^53 too), any other value by its text.
    Number {
        text: String,
        int: Option<i128>,
        value: f64,
    },
    /// `field: null`: the field is absent or null.
    Null,
    /// `exists: true|false`.
    Exists(bool),
    /// `fieldref`: compare with another field of the same event.
    FieldRef {
        other: FieldPath,
        kind: StrKind,
        cased: bool,
    },
    /// `minute`/`hour`/...: a part of a timestamp value equals (or compares with) a number.
    Time {
        part: TimePart,
        op: Option<CmpOp>,
        value: f64,
    },
}

impl ValueTest {
    /// Whether one value of the field passes this test.
    pub(crate) fn test_leaf(&self, leaf: &Leaf<'_>, event: &Event) -> bool {
        match self {
            ValueTest::Str(t) => leaf.with_text(|s| s.is_some_and(|s| t.matches(s))),
            ValueTest::Re(re) => leaf.with_text(|s| s.is_some_and(|s| re.is_match(s))),
            ValueTest::Cidr(net) => leaf.with_text(|s| {
                s.and_then(|s| s.trim().parse::<std::net::IpAddr>().ok())
                    .is_some_and(|ip| net.contains(&ip))
            }),
            ValueTest::Number { text, int, value } => match leaf.number() {
                Some((Some(a), _)) if int.is_some() => Some(a) == *int,
                Some((_, f)) => f == Some(*value),
                None => leaf.with_text(|s| s == Some(text.as_str())),
            },
            ValueTest::Cmp(op, b) => leaf.as_f64().is_some_and(|a| op.holds(a, *b)),
            ValueTest::CmpInt(op, b) => match leaf.as_i128() {
                Some(a) => op.holds_ord(a, *b),
                None => leaf.as_f64().is_some_and(|a| op.holds(a, *b as f64)),
            },
            ValueTest::Null => leaf.is_null(),
            ValueTest::Exists(_) => true,
            ValueTest::FieldRef { other, kind, cased } => leaf.with_text(|mine| {
                let Some(mine) = mine else { return false };
                let found = other.visit_event(event, &mut |o| {
                    o.with_text(|theirs| {
                        theirs.is_some_and(|theirs| {
                            let ascii = mine.is_ascii() && theirs.is_ascii();
                            if !*cased && !ascii {
                                // Folded beyond ASCII, as literal values are (QA: `JOSÉ` did
                                // not match `josé`).
                                let (h, n) = (mine.to_lowercase(), theirs.to_lowercase());
                                return match kind {
                                    StrKind::Exact => h == n,
                                    StrKind::Prefix => h.starts_with(&n),
                                    StrKind::Suffix => h.ends_with(&n),
                                    StrKind::Contains => h.contains(&n),
                                };
                            }
                            let (h, n) = (mine.as_bytes(), theirs.as_bytes());
                            let eq = |a: &[u8], b: &[u8]| {
                                if *cased {
                                    a == b
                                } else {
                                    a.eq_ignore_ascii_case(b)
                                }
                            };
                            match kind {
                                StrKind::Exact => eq(h, n),
                                StrKind::Prefix => h.len() >= n.len() && eq(&h[..n.len()], n),
                                StrKind::Suffix => {
                                    h.len() >= n.len() && eq(&h[h.len() - n.len()..], n)
                                }
                                StrKind::Contains => {
                                    if *cased {
                                        mine.contains(theirs)
                                    } else {
                                        contains_ascii_ci(h, n)
                                    }
                                }
                            }
                        })
                    })
                });
                found == Found::Stopped
            }),
            ValueTest::Time { part, op, value } => {
                let ts = match leaf {
                    Leaf::Json(v) => perimeter_model::parse_timestamp(v).ok(),
                    Leaf::Str(s) => perimeter_model::parse_timestamp_str(s).ok(),
                    _ => None,
                };
                let Some(ts) = ts else { return false };
                use chrono::{Datelike, Timelike};
                let n = match part {
                    TimePart::Minute => ts.minute() as f64,
                    TimePart::Hour => ts.hour() as f64,
                    TimePart::Day => ts.day() as f64,
                    TimePart::Week => ts.iso_week().week() as f64,
                    TimePart::Month => ts.month() as f64,
                    TimePart::Year => ts.year() as f64,
                };
                match op {
                    None => n == *value,
                    Some(op) => op.holds(n, *value),
                }
            }
        }
    }
}

/// `field|mods: values` (or a keyword list when `field` is `None`).
#[derive(Debug, Clone)]
pub struct FieldMatch {
    /// The field as written in the rule (for explanations and `matched_fields`).
    pub field: Option<String>,
    /// Where to look: pipeline-mapped names first, then the rule's own name.
    pub paths: Vec<FieldPath>,
    pub modifiers: Vec<String>,
    pub tests: Vec<ValueTest>,
    /// `all`: every test must hold (for some value) instead of any.
    pub all: bool,
    /// `neq`: the result is negated.
    pub negate: bool,
    pub line: usize,
    /// The compiled matcher's id for `paths` (values resolved once per event), [`NO_SLOT`]
    /// until a [`super::SigmaDetector`] assigns it.
    pub slot: u32,
}

/// [`FieldMatch::slot`] of a field match no matcher has compiled (or a keyword list).
pub const NO_SLOT: u32 = u32::MAX;

/// Visit every string/number leaf of a JSON document (keyword search and the prefilter).
pub fn visit_leaves<'a>(v: &'a Json, f: &mut dyn FnMut(&Leaf<'a>) -> bool) -> bool {
    match v.as_ref() {
        ValueRef::Object(m) => m.iter().any(|(_, x)| visit_leaves(x, f)),
        ValueRef::Array(a) => a.iter().any(|x| visit_leaves(x, f)),
        ValueRef::Null => false,
        _ => f(&Leaf::Json(v)),
    }
}

impl FieldMatch {
    pub fn matches(&self, event: &Event) -> bool {
        self.eval(event, None) != self.negate
    }

    /// Evaluate; when `record` is given, push (field, value) of the values that matched.
    pub fn eval(
        &self,
        event: &Event,
        mut record: Option<&mut Vec<(String, serde_json::Value)>>,
    ) -> bool {
        let Some(field) = &self.field else {
            return self.eval_keywords(event, record);
        };
        // Presence tests first: `exists` and `null` are about the field, not its values.
        if let [ValueTest::Exists(want)] = self.tests.as_slice() {
            let present = self
                .paths
                .iter()
                .any(|p| p.visit_event(event, &mut |_| true) != Found::Absent);
            return present == *want;
        }
        let test_one =
            |t: &ValueTest, rec: &mut Option<&mut Vec<(String, serde_json::Value)>>| -> bool {
                let mut absent = true;
                for p in &self.paths {
                    let mut hit: Option<serde_json::Value> = None;
                    let want_value = rec.is_some();
                    let r = p.visit_event(event, &mut |leaf| {
                        if t.test_leaf(&leaf, event) {
                            if want_value {
                                hit = Some(leaf.to_json());
                            }
                            true
                        } else {
                            false
                        }
                    });
                    match r {
                        Found::Stopped => {
                            if let (Some(rec), Some(v)) = (rec.as_deref_mut(), hit) {
                                rec.push((field.clone(), v));
                            }
                            return true;
                        }
                        Found::Exhausted => {
                            absent = false;
                            break;
                        }
                        Found::Absent => {}
                    }
                }
                if absent && matches!(t, ValueTest::Null) {
                    if let Some(rec) = rec.as_deref_mut() {
                        rec.push((field.clone(), serde_json::Value::Null));
                    }
                    return true;
                }
                false
            };
        if self.all {
            self.tests.iter().all(|t| test_one(t, &mut record))
        } else {
            self.tests.iter().any(|t| test_one(t, &mut record))
        }
    }

    fn eval_keywords(
        &self,
        event: &Event,
        mut record: Option<&mut Vec<(String, serde_json::Value)>>,
    ) -> bool {
        let test_one =
            |t: &ValueTest, rec: &mut Option<&mut Vec<(String, serde_json::Value)>>| -> bool {
                let mut hit = None;
                let want = rec.is_some();
                let found = visit_leaves(&event.raw, &mut |leaf| {
                    if t.test_leaf(leaf, event) {
                        if want {
                            hit = Some(leaf.to_json());
                        }
                        true
                    } else {
                        false
                    }
                });
                if let (Some(rec), Some(v)) = (rec.as_deref_mut(), hit) {
                    rec.push(("keywords".to_string(), v));
                }
                found
            };
        if self.all {
            self.tests.iter().all(|t| test_one(t, &mut record))
        } else {
            self.tests.iter().any(|t| test_one(t, &mut record))
        }
    }
}

/// A search identifier: a list of maps (OR) of field matches (AND). A keyword list is one map
/// holding one keyword `FieldMatch`.
#[derive(Debug, Clone)]
pub struct Selection {
    pub name: String,
    pub line: usize,
    pub alternatives: Vec<Vec<FieldMatch>>,
}

impl Selection {
    pub fn matches(&self, event: &Event) -> bool {
        self.alternatives
            .iter()
            .any(|map| map.iter().all(|fm| fm.matches(event)))
    }
}

/// A detection: selections plus the condition over them.
#[derive(Debug, Clone)]
pub struct Detection {
    pub selections: Vec<Selection>,
    pub condition: Cond,
}

impl Detection {
    pub fn matches(&self, event: &Event) -> bool {
        super::condition::eval(&self.condition, &mut |i| self.selections[i].matches(event))
    }

    /// Field -> value pairs of the selections that matched (for the alert). The matcher computes
    /// them on its per-event field values; this is the reference it is tested against.
    #[cfg(test)]
    pub fn matched_fields(&self, event: &Event) -> Vec<(String, serde_json::Value)> {
        let mut out = Vec::new();
        for sel in &self.selections {
            for map in &sel.alternatives {
                let mut rec = Vec::new();
                if map.iter().all(|fm| {
                    if fm.negate {
                        fm.matches(event)
                    } else {
                        fm.eval(event, Some(&mut rec))
                    }
                }) {
                    out.extend(rec);
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_walk_objects_arrays_and_dotted_keys() {
        let doc = json!({
            "actor": {"alternateId": "a@x.com"},
            "target": [{"type": "User", "id": "1"}, {"type": "AppInstance", "id": "2"}],
            "weird.key": {"inner": 5},
            "tags": ["x", "y"]
        });
        let raw_doc = perimeter_model::raw_from_serde(&doc);
        let collect = |name: &str| {
            let p = FieldPath::new(name);
            let mut out = Vec::new();
            p.visit(&raw_doc, &mut |l| {
                out.push(l.to_json());
                false
            });
            out
        };
        assert_eq!(collect("actor.alternateId"), vec![json!("a@x.com")]);
        assert_eq!(
            collect("target.type"),
            vec![json!("User"), json!("AppInstance")]
        );
        assert_eq!(collect("weird.key.inner"), vec![json!(5)]);
        assert_eq!(collect("tags"), vec![json!("x"), json!("y")]);
        assert!(collect("actor.missing").is_empty());
    }

    #[test]
    fn literal_fast_paths_agree_with_regex() {
        let cases: &[(&[Tok], &str, bool)] = &[
            (&[Tok::Lit(b"Admin".to_vec())], "admin", true),
            (&[Tok::Star, Tok::Lit(b".EXE".to_vec())], "c:\\x.exe", true),
            (&[Tok::Lit(b"adm_".to_vec()), Tok::Star], "ADM_bob", true),
            (
                &[Tok::Star, Tok::Lit(b"mid".to_vec()), Tok::Star],
                "aMIDb",
                true,
            ),
            (
                &[Tok::Star, Tok::Lit(b"mid".to_vec()), Tok::Star],
                "amdb",
                false,
            ),
            (
                &[Tok::Lit(b"a".to_vec()), Tok::One, Tok::Lit(b"c".to_vec())],
                "abc",
                true,
            ),
            (
                &[Tok::Lit(b"a".to_vec()), Tok::One, Tok::Lit(b"c".to_vec())],
                "abbc",
                false,
            ),
        ];
        for (toks, text, want) in cases {
            let fast = StrTest::from_tokens(toks, false).unwrap();
            let slow = regex::Regex::new(&tokens_to_regex(toks, false)).unwrap();
            assert_eq!(fast.matches(text), *want, "{toks:?} {text}");
            assert_eq!(slow.is_match(text), *want, "{toks:?} {text}");
        }
        let cased = StrTest::from_tokens(&[Tok::Lit(b"Admin".to_vec())], true).unwrap();
        assert!(!cased.matches("admin"));
        assert!(cased.matches("Admin"));
    }
}
