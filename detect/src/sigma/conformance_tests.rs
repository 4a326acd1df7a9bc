//! Conformance tests per Sigma spec section (modifiers, conditions, correlations, filters,
//! logsources), the compiled-vs-naive property test and the loader fuzz tests.

use chrono::{TimeZone, Utc};
use perimeter_model::{Detector, Ecs, Event, RawRecord};
use serde_json::{json, Value as Json};
use std::path::Path;

use super::condition::Cond;
use super::matcher::{FieldMatch, Found, StrKind, StrTest, ValueTest};
use super::parse::{parse_file, RuleDoc};
use super::pipeline_map::{parse_pipeline, Pipelines};
use super::*;

fn event(source: &str, raw: Json) -> Event {
    let ts = raw
        .get("published")
        .or_else(|| raw.get("ts"))
        .and_then(|v| perimeter_model::parse_timestamp(&perimeter_model::raw_from_serde(v)).ok())
        .unwrap_or_else(|| {
            Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0)
                .single()
                .unwrap_or_default()
        });
    let ecs = Ecs {
        timestamp: Some(ts),
        user_name: raw
            .pointer("/actor/alternateId")
            .and_then(Json::as_str)
            .map(str::to_string),
        source_ip: raw
            .pointer("/client/ipAddress")
            .and_then(Json::as_str)
            .map(str::to_string),
        ..Default::default()
    };
    let rec = RawRecord {
        source: source.into(),
        tenant: "t1".into(),
        received_at: ts,
        line: Some(1),
        raw: perimeter_model::raw_from_serde(&raw),
    };
    Event::new(source, rec, ecs)
}

fn ruleset_with(text: &str, pipelines: &Pipelines) -> RuleSet {
    let (docs, errs) = parse_file(Path::new("test.yml"), text, pipelines);
    assert!(errs.is_empty(), "{errs:?}");
    let mut errors = Vec::new();
    let set = RuleSet::from_docs(docs, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

/// The first error loading `text` gives.
fn load_error(text: &str) -> RuleError {
    let (_, errs) = parse_file(Path::new("test.yml"), text, &Pipelines::builtin());
    errs.into_iter().next().expect("an error")
}

/// QA: a modifier on a search identifier, rule keys indented under `detection:`, a v1
/// `timeframe` and YAML merge keys each loaded with a meaning other than the one written
/// (a `critical` rule alerting as `medium`), without a word. Each is refused, naming its line.
#[test]
fn detection_keys_that_would_change_the_rule_silently_are_errors() {
    let rule = |detection: &str| {
        format!("title: t\nlogsource:\n    product: okta\ndetection:\n{detection}\nlevel: high\n")
    };
    for (detection, field, message) in [
        (
            "    keywords|all:\n        - a\n        - b\n    condition: 1 of keywords*",
            "keywords|all",
            "a modifier belongs on a field name",
        ),
        (
            "    sel:\n        eventType: x\n    level: critical\n    condition: sel",
            "level",
            "as a rule key it goes at the top level",
        ),
        (
            "    sel:\n        eventType: x\n    tags:\n        - attack.t1098\n    condition: 1 of them",
            "tags",
            "as a rule key it goes at the top level",
        ),
        (
            "    base: &b\n        eventType: x\n    sel:\n        <<: *b\n        outcome.result: FAILURE\n    condition: sel",
            "sel.<<",
            "YAML merge keys",
        ),
    ] {
        let e = load_error(&rule(detection));
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert!(e.message.contains(message) && e.line.is_some(), "{e}");
    }
    // A top-level merge key too.
    let e = load_error(
        "defaults: &d\n    level: critical\n<<: *d\ntitle: t\nlogsource:\n    product: okta\ndetection:\n    sel:\n        eventType: x\n    condition: sel\n",
    );
    assert_eq!(e.field.as_deref(), Some("<<"), "{e}");
    // An identifier named like a rule key that the condition names is a choice, kept, also by
    // a pattern.
    let set = ruleset(&detection("    name:\n        eventType: x", "name"));
    assert_eq!(set.len(), 1);
    let set = ruleset(&detection(
        "    status_bad:\n        eventType: x\n    status:\n        eventType: y",
        "1 of status*",
    ));
    assert_eq!(set.len(), 1);
    // Perimeter's own rule keys too.
    let e = load_error(&rule(
        "    sel:\n        eventType: x\n    entity_field: user.name\n    condition: 1 of them",
    ));
    assert_eq!(e.field.as_deref(), Some("entity_field"), "{e}");
}

/// QA: `prodcut: okta` left the rule without a product (it ran on every source), and a v1
/// `timeframe` was taken without a word: both warned.
#[test]
fn an_unknown_logsource_key_is_warned() {
    let set = ruleset(
        "title: t\nlogsource:\n    prodcut: okta\ndetection:\n    sel:\n        eventType: x\n    condition: sel\n",
    );
    let warnings = set.spec_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.field.as_deref() == Some("logsource.prodcut") && w.line == Some(3)),
        "{warnings:?}"
    );
    // A v1 `timeframe` without its aggregation does nothing: said.
    let set = ruleset(&detection(
        "    sel:\n        eventType: x\n    timeframe: 5m",
        "sel",
    ));
    let warnings = set.spec_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.field.as_deref() == Some("detection.timeframe")),
        "{warnings:?}"
    );
}

#[test]
fn modifiers_that_would_be_ignored_are_errors() {
    for (key, value, message) in [
        (
            "f|re|contains",
            "'a.c'",
            "modifiers `re` and `contains` cannot be combined",
        ),
        (
            "f|re|i|startswith",
            "'a.c'",
            "modifiers `re` and `startswith` cannot be combined",
        ),
        (
            "f|cidr|contains",
            "'10.0.0.0/8'",
            "modifiers `cidr` and `contains` cannot be combined",
        ),
        (
            "f|gt|contains",
            "5",
            "modifiers `gt` and `contains` cannot be combined",
        ),
        ("f|gt|lt", "5", "modifiers `gt` and `lt` cannot be combined"),
        (
            "f|exists|contains",
            "true",
            "modifiers `exists` and `contains` cannot be combined",
        ),
        (
            "f|hour|contains",
            "5",
            "modifiers `hour` and `contains` cannot be combined",
        ),
        (
            "f|fieldref|base64",
            "g",
            "modifiers `fieldref` and `base64` cannot be combined",
        ),
        (
            "f|base64offset|contains",
            "5",
            "`base64offset` transforms text; write the value `5` in quotes",
        ),
        (
            "f|base64|windash",
            "'-x'",
            "`windash` must come before `base64`",
        ),
        (
            "f|wide|base64offset|windash|contains",
            "'-x'",
            "`windash` must come before `base64offset`",
        ),
        // Time parts no date has, or that every date has.
        (
            "f|hour",
            "25",
            "`hour` is 0 to 23: `hour: 25` never matches",
        ),
        ("f|hour", "[3, 24]", "`hour: 24` never matches"),
        ("f|minute", "60", "`minute: 60` never matches"),
        ("f|minute", "-1", "`minute: -1` never matches"),
        ("f|day", "0", "`day: 0` never matches"),
        ("f|day", "32", "`day: 32` never matches"),
        ("f|week", "54", "`week: 54` never matches"),
        ("f|month", "13", "`month: 13` never matches"),
        // Negated, a value no date has holds for every date.
        ("f|month|neq", "0", "`month|neq: 0` holds for every date"),
        ("f|hour|neq", "24", "`hour|neq: 24` holds for every date"),
        (
            "f|year",
            "2024.5",
            "`year` is a whole number: `year: 2024.5` never matches",
        ),
        ("f|hour|gte", "24", "`hour|gte: 24` never matches"),
        ("f|hour|gt", "23", "`hour|gt: 23` never matches"),
        ("f|day|lt", "1", "`day|lt: 1` never matches"),
        ("f|hour|lte", "-1", "`hour|lte: -1` never matches"),
        ("f|hour|gte", "0", "`hour|gte: 0` holds for every date"),
        ("f|hour|lt", "24", "`hour|lt: 24` holds for every date"),
        ("f|month|lte", "12", "`month|lte: 12` holds for every date"),
        ("f|day|gt", "0", "`day|gt: 0` holds for every date"),
    ] {
        let err = load_error(&detection(
            &format!("    sel:\n        {key}: {value}"),
            "sel",
        ));
        assert_eq!(err.line, Some(7), "{key}: {err}");
        assert_eq!(
            err.field.as_deref(),
            Some(format!("sel.{key}").as_str()),
            "{err}"
        );
        assert!(err.message.contains(message), "{key}: {err}");
    }
    // The valid neighbours still load.
    for (key, value) in [
        ("f|windash|base64offset|contains", "'-x'"),
        // A dash stays a character through UTF-16: varied as if windash came first.
        ("f|wide|windash|base64offset|contains", "'-x'"),
        ("f|utf16le|windash|base64|contains", "'-x'"),
        ("f|wide|base64offset|contains", "'x'"),
        ("f|hour|gte", "5"),
        ("f|hour", "[0, 23]"),
        ("f|minute|lt", "59"),
        ("f|day", "31"),
        ("f|day|gt", "30"),
        ("f|week", "53"),
        ("f|month|gte", "12"),
        ("f|month|lte", "1"),
        ("f|year", "1999"),
        ("f|fieldref|contains", "g"),
        ("f|re|i", "'a.c'"),
        ("f|base64offset|contains", "'5'"),
    ] {
        let text = detection(&format!("    sel:\n        {key}: {value}"), "sel");
        let (_, errs) = parse_file(Path::new("test.yml"), &text, &Pipelines::builtin());
        assert!(errs.is_empty(), "{key}: {errs:?}");
    }
}

fn ruleset(text: &str) -> RuleSet {
    ruleset_with(text, &Pipelines::builtin())
}

fn detection(sel: &str, cond: &str) -> String {
    format!("title: t\nid: r1\nlogsource:\n    product: okta\ndetection:\n{sel}\n    condition: {cond}\nlevel: high\n")
}

/// Does rule `r1` fire on the okta event `raw`?
fn fires(sel: &str, cond: &str, raw: Json) -> bool {
    let mut d = SigmaDetector::new(ruleset(&detection(sel, cond)), &SigmaOptions::default());
    let mut alerts = Vec::new();
    d.detect(&event("okta", raw), &mut alerts);
    alerts.iter().any(|a| a.rule_id == "r1")
}

fn check(sel: &str, yes: &[Json], no: &[Json]) {
    for e in yes {
        assert!(fires(sel, "sel", e.clone()), "should match: {sel} on {e}");
    }
    for e in no {
        assert!(
            !fires(sel, "sel", e.clone()),
            "should not match: {sel} on {e}"
        );
    }
}

#[test]
fn numbers_equal_as_numbers_and_long_ones_keep_their_digits() {
    check(
        "    sel:\n        n: 5",
        &[
            json!({"n": 5}),
            json!({"n": 5.0}),
            json!({"n": "5"}),
            json!({"n": [1, 5.0]}),
        ],
        &[
            json!({"n": 5.5}),
            json!({"n": 50}),
            json!({"n": "5.0"}),
            json!({"n": "x"}),
        ],
    );
    check(
        "    sel:\n        n: 5.0",
        &[json!({"n": 5}), json!({"n": 5.0})],
        &[json!({"n": 5.25})],
    );
    check(
        "    sel:\n        n|neq: 5",
        &[json!({"n": 6})],
        &[json!({"n": 5.0})],
    );
    // Whole numbers compare exactly, beyond 2^53 too.
    check(
        "    sel:\n        n: 9007199254740993",
        &[json!({"n": 9_007_199_254_740_993_u64})],
        &[json!({"n": 9_007_199_254_740_992_u64})],
    );
    // Beyond i64: the rule's digits, not a rounded float.
    check(
        "    sel:\n        n: 12345678901234567890",
        &[
            json!({"n": 12_345_678_901_234_567_890_u64}),
            json!({"n": "12345678901234567890"}),
        ],
        &[json!({"n": 12_345_678_901_234_567_000_u64})],
    );
}

#[test]
fn plain_values_are_case_insensitive_and_exact() {
    check(
        "    sel:\n        eventType: User.Session.Start",
        &[json!({"eventType": "user.session.START"})],
        &[
            json!({"eventType": "user.session.start.x"}),
            json!({"other": "user.session.start"}),
        ],
    );
    check(
        "    sel:\n        n: 4624",
        &[json!({"n": 4624}), json!({"n": "4624"})],
        &[json!({"n": 46240})],
    );
    check(
        "    sel:\n        b: true",
        &[json!({"b": true})],
        &[json!({"b": false})],
    );
    check(
        "    sel:\n        e: ''",
        &[json!({"e": ""})],
        &[json!({"e": "x"}), json!({})],
    );
}

#[test]
fn wildcards_and_escapes() {
    check(
        "    sel:\n        f: 'adm*n?'",
        &[json!({"f": "ADMIN1"}), json!({"f": "admxxn2"})],
        &[json!({"f": "admin"}), json!({"f": "xadmin1"})],
    );
    check(
        "    sel:\n        f: 'a\\*b'",
        &[json!({"f": "a*b"})],
        &[json!({"f": "axxb"})],
    );
    check(
        "    sel:\n        f: 'a\\?b'",
        &[json!({"f": "a?b"})],
        &[json!({"f": "acb"})],
    );
    // `\*` is an escaped (literal) star; `\\*` is a backslash followed by a wildcard.
    check(
        "    sel:\n        f: 'C:\\Windows\\*'",
        &[json!({"f": "c:\\windows*"})],
        &[json!({"f": "c:\\windows\\x.exe"})],
    );
    check(
        "    sel:\n        f: 'C:\\Windows\\\\*'",
        &[json!({"f": "c:\\windows\\x.exe"})],
        &[json!({"f": "c:\\win"})],
    );
}

#[test]
fn anchoring_modifiers() {
    check(
        "    sel:\n        f|contains: 'mid'",
        &[json!({"f": "aMIDb"})],
        &[json!({"f": "amdb"})],
    );
    check(
        "    sel:\n        f|startswith: 'adm_'",
        &[json!({"f": "ADM_bob"})],
        &[json!({"f": "x_adm_bob"})],
    );
    check(
        "    sel:\n        f|endswith: '.exe'",
        &[json!({"f": "x.EXE"})],
        &[json!({"f": "x.exe.txt"})],
    );
    check(
        "    sel:\n        f|contains|all:\n            - 'a'\n            - 'b'",
        &[json!({"f": "xaxbx"})],
        &[json!({"f": "xax"})],
    );
    check(
        "    sel:\n        f|contains|cased: 'Admin'",
        &[json!({"f": "xAdminx"})],
        &[json!({"f": "xadminx"})],
    );
    check(
        "    sel:\n        f|neq: 'x'",
        &[json!({"f": "y"})],
        &[json!({"f": "X"})],
    );
    // Applied in order, each adding its wildcard: two different anchors are `contains`.
    for chain in [
        "startswith|endswith",
        "endswith|startswith",
        "contains|startswith",
    ] {
        check(
            &format!("    sel:\n        f|{chain}: 'evil'"),
            &[
                json!({"f": "run evil now"}),
                json!({"f": "evil now"}),
                json!({"f": "run evil"}),
            ],
            &[json!({"f": "run good"})],
        );
    }
    check(
        "    sel:\n        f|startswith|startswith: 'evil'",
        &[json!({"f": "evil now"})],
        &[json!({"f": "run evil"})],
    );
}

#[test]
fn regex_modifier_and_flags() {
    check(
        "    sel:\n        f|re: '^ab+c$'",
        &[json!({"f": "abbc"})],
        &[json!({"f": "ABBC"}), json!({"f": "xabc"})],
    );
    check(
        "    sel:\n        f|re|i: '^ab+c$'",
        &[json!({"f": "ABBC"})],
        &[json!({"f": "ac"})],
    );
    check(
        "    sel:\n        f|re|m: '^x$'",
        &[json!({"f": "a\nx\nb"})],
        &[json!({"f": "a x b"})],
    );
    check(
        "    sel:\n        f|re|s: 'a.b'",
        &[json!({"f": "a\nb"})],
        &[json!({"f": "ab"})],
    );
}

#[test]
fn cidr_modifier() {
    check(
        "    sel:\n        ip|cidr: '10.0.0.0/8'",
        &[json!({"ip": "10.1.2.3"})],
        &[json!({"ip": "11.0.0.1"}), json!({"ip": "x"})],
    );
    check(
        "    sel:\n        ip|cidr: '2001:db8::/32'",
        &[json!({"ip": "2001:db8::1"})],
        &[json!({"ip": "2001:db9::1"})],
    );
}

#[test]
fn encoding_modifiers() {
    // base64("secret") = c2VjcmV0
    check(
        "    sel:\n        f|base64: 'secret'",
        &[json!({"f": "c2VjcmV0"})],
        &[json!({"f": "secret"})],
    );
    check(
        "    sel:\n        f|base64offset|contains: '/bin/bash'",
        &[
            json!({"f": "ZWNobyAvYmluL2Jhc2g="}),
            json!({"f": "L2Jpbi9iYXNo"}),
        ],
        &[json!({"f": "L2Jpbi9zaA=="})],
    );
    // "ping" as UTF-16LE, base64-encoded: cABpAG4AZwA=
    check(
        "    sel:\n        f|wide|base64offset|contains: 'ping'",
        &[json!({"f": "xxcABpAG4AZwAxx"})],
        &[json!({"f": "ping"})],
    );
    check(
        "    sel:\n        f|utf16le|base64: 'ab'",
        &[json!({"f": "YQBiAA=="})],
        &[json!({"f": "ab"})],
    );
    check(
        "    sel:\n        f|utf16be|base64: 'ab'",
        &[json!({"f": "AGEAYg=="})],
        &[json!({"f": "YQBiAA=="})],
    );
    check(
        "    sel:\n        f|utf16|base64: 'ab'",
        &[json!({"f": "//5hAGIA"})],
        &[json!({"f": "YQBiAA=="})],
    );
    check(
        "    sel:\n        f|windash|contains: ' -enc '",
        &[json!({"f": "x /enc y"}), json!({"f": "x \u{2013}enc y"})],
        &[json!({"f": "x enc y"})],
    );
    // `wide|windash`: the dash is varied before the UTF-16 encoding (it was refused, and
    // before that ignored).
    {
        use base64::Engine as _;
        let utf16 = |s: &str| -> String {
            let bytes: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        check(
            "    sel:\n        f|wide|windash|base64: '-enc'",
            &[json!({"f": utf16("-enc")}), json!({"f": utf16("/enc")})],
            &[json!({"f": utf16("enc")}), json!({"f": "/enc"})],
        );
    }
    // `all` joins the rule's values; the forms one value takes are alternatives (modifiers
    // appendix: `windash` and `base64offset` expand one value into several).
    check(
        "    sel:\n        f|windash|contains|all:\n            - '-a'\n            - '-b'",
        &[
            json!({"f": "tool -a -b"}),
            json!({"f": "tool /a \u{2014}b"}),
        ],
        &[json!({"f": "tool -a"}), json!({"f": "tool /b"})],
    );
    check(
        "    sel:\n        f|windash|all|contains:\n            - '-a'\n            - '-b'",
        &[json!({"f": "tool -b /a"})],
        &[json!({"f": "tool -a"})],
    );
    // base64("foo bar") = Zm9vIGJhcg==; base64("foo") = Zm9v.
    check(
        "    sel:\n        f|base64offset|contains|all:\n            - foo\n            - bar",
        &[json!({"f": "Zm9vIGJhcg=="})],
        &[json!({"f": "Zm9v"})],
    );
}

#[test]
fn name_value_pairs_are_addressed_by_name() {
    let params = |new: &str, old: &str| {
        json!({"events": [{"parameters": [
            {"name": "NEW_VALUE", "value": new}, {"name": "OLD_VALUE", "value": old}]}]})
    };
    check(
        "    sel:\n        events.parameters.NEW_VALUE: 'false'",
        &[params("false", "true")],
        &[
            params("true", "false"),
            json!({"events": [{"parameters": []}]}),
        ],
    );
    // Microsoft's capitalised pairs; further segments go into the pair.
    let modified = |old: &str, new: &str| json!({"ModifiedProperties": [{"Name": "Role", "OldValue": old, "NewValue": new}]});
    check(
        "    sel:\n        ModifiedProperties.Role: Admin\n        ModifiedProperties.Role.OldValue: User",
        &[modified("User", "Admin")],
        &[modified("Admin", "User")],
    );
    // A key of that name wins over a pair's name; values of several types are read.
    check(
        "    sel:\n        p.x: 1",
        &[
            json!({"p": [{"name": "x", "intValue": 1}]}),
            json!({"p": [{"x": 1}]}),
        ],
        &[
            json!({"p": [{"name": "x", "x": 2, "value": 1}]}),
            json!({"p": {"name": "x", "value": 1}}),
        ],
    );
}

#[test]
fn presence_null_and_numbers() {
    check(
        "    sel:\n        f|exists: true",
        &[json!({"f": null}), json!({"f": 1})],
        &[json!({"g": 1})],
    );
    check(
        "    sel:\n        f|exists: false",
        &[json!({"g": 1})],
        &[json!({"f": "x"})],
    );
    check(
        "    sel:\n        f: null",
        &[json!({"g": 1}), json!({"f": null})],
        &[json!({"f": "x"})],
    );
    check(
        "    sel:\n        n|gt: 5",
        &[json!({"n": 6}), json!({"n": "7"})],
        &[json!({"n": 5}), json!({"n": "x"})],
    );
    check(
        "    sel:\n        n|gte: 5",
        &[json!({"n": 5})],
        &[json!({"n": 4.9})],
    );
    check(
        "    sel:\n        n|lt: 5",
        &[json!({"n": -1})],
        &[json!({"n": 5})],
    );
    check(
        "    sel:\n        n|lte: 5",
        &[json!({"n": 5.0})],
        &[json!({"n": 6})],
    );
    // Whole numbers beyond a float's 53 bits compare exactly; fractions still compare.
    check(
        "    sel:\n        n|gt: 9007199254740992",
        &[
            json!({"n": 9007199254740993u64}),
            json!({"n": "9007199254740993"}),
            json!({"n": 9.1e15}),
        ],
        &[json!({"n": 9007199254740992u64}), json!({"n": 9.0e15})],
    );
    check(
        "    sel:\n        n|lt: 2.5",
        &[json!({"n": 2}), json!({"n": "2.4"})],
        &[json!({"n": 3})],
    );
    check(
        "    sel:\n        ts|hour: 3",
        &[json!({"ts": "2024-05-01T03:10:00Z"})],
        &[json!({"ts": "2024-05-01T04:10:00Z"})],
    );
}

#[test]
fn fieldref_compares_two_fields() {
    check(
        "    sel:\n        a|fieldref: b",
        &[json!({"a": "X", "b": "x"})],
        &[json!({"a": "x", "b": "y"}), json!({"a": "x"})],
    );
    check(
        "    sel:\n        a|fieldref|startswith: b",
        &[json!({"a": "abc", "b": "ab"})],
        &[json!({"a": "abc", "b": "bc"})],
    );
    // Case folded beyond ASCII, as literal values are.
    check(
        "    sel:\n        a|fieldref: b",
        &[
            json!({"a": "JOSÉ", "b": "josé"}),
            json!({"a": "STRAẞE", "b": "straße"}),
        ],
        &[json!({"a": "JOSÉ", "b": "jose"})],
    );
    check(
        "    sel:\n        a|fieldref|cased: b",
        &[json!({"a": "josé", "b": "josé"})],
        &[json!({"a": "JOSÉ", "b": "josé"})],
    );
}

#[test]
fn expand_uses_pipeline_placeholders() {
    let mut p = Pipelines::builtin();
    p.add(
        parse_pipeline("placeholders:\n  Admins: ['root', 'adm_*']\n", "yml").unwrap_or_default(),
    );
    let set = ruleset_with(
        &detection("    sel:\n        user|expand: '%Admins%'", "sel"),
        &p,
    );
    let mut d = SigmaDetector::new(set, &SigmaOptions::default());
    let mut a = Vec::new();
    d.detect(&event("okta", json!({"user": "adm_x"})), &mut a);
    d.detect(&event("okta", json!({"user": "bob"})), &mut a);
    assert_eq!(a.len(), 1);
    // Unconfigured placeholder: the rule is rejected, with its line.
    let (_, errs) = parse_file(
        Path::new("x.yml"),
        &detection("    sel:\n        user|expand: '%Nope%'", "sel"),
        &Pipelines::builtin(),
    );
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, Some(7));
    assert!(errs[0].message.contains("%Nope%"));
}

#[test]
fn lists_maps_and_keywords() {
    // List of values = OR; map = AND; list of maps = OR.
    check(
        "    sel:\n        a: [x, y]\n        b: z",
        &[json!({"a": "y", "b": "z"})],
        &[json!({"a": "y", "b": "q"})],
    );
    check(
        "    sel:\n        - a: x\n        - b: y",
        &[json!({"b": "y"})],
        &[json!({"a": "y"})],
    );
    // Keywords: any value anywhere contains the keyword.
    check(
        "    sel:\n        - 'evil'\n        - 'bad'",
        &[json!({"deep": {"x": ["a", "very BAD thing"]}})],
        &[json!({"evil": "no"})],
    );
    check(
        "    sel:\n        '|all':\n            - 'foo'\n            - 'bar'",
        &[json!({"a": "foo", "b": "xbarx"})],
        &[json!({"a": "foo"})],
    );
}

#[test]
fn nested_fields_arrays_dotted_keys_and_ecs() {
    check(
        "    sel:\n        actor.alternateId: a@x.com",
        &[json!({"actor": {"alternateId": "A@x.com"}})],
        &[json!({"actor": "a@x.com"})],
    );
    check(
        "    sel:\n        target.type: AppInstance",
        &[json!({"target": [{"type": "User"}, {"type": "AppInstance"}]})],
        &[json!({"target": [{"type": "User"}]})],
    );
    check(
        "    sel:\n        a.b.c: 1",
        &[json!({"a.b": {"c": 1}}), json!({"a": {"b.c": 1}})],
        &[json!({"a": {"b": 1}})],
    );
    // ECS fallback: `user.name` is not in the raw JSON but in the ECS view.
    check(
        "    sel:\n        user.name: a@x.com",
        &[json!({"actor": {"alternateId": "a@x.com"}})],
        &[json!({"actor": {"alternateId": "b@x.com"}})],
    );
}

#[test]
fn condition_forms() {
    let sels = "    sel_a:\n        a: 1\n    sel_b:\n        b: 1\n    filter_c:\n        c: 1\n    _aux:\n        d: 1";
    let e = |a: i32, b: i32, c: i32, d: i32| json!({"a": a, "b": b, "c": c, "d": d});
    assert!(fires(sels, "sel_a and sel_b", e(1, 1, 0, 0)));
    assert!(!fires(sels, "sel_a and sel_b", e(1, 0, 0, 0)));
    assert!(fires(sels, "sel_a or sel_b", e(0, 1, 0, 0)));
    assert!(fires(sels, "sel_a and not filter_c", e(1, 0, 0, 0)));
    assert!(!fires(sels, "sel_a and not filter_c", e(1, 0, 1, 0)));
    assert!(fires(
        sels,
        "(sel_a or sel_b) and not filter_c",
        e(0, 1, 0, 0)
    ));
    assert!(fires(sels, "1 of sel_*", e(0, 1, 0, 0)));
    assert!(!fires(sels, "all of sel_*", e(0, 1, 0, 0)));
    assert!(fires(sels, "all of sel_*", e(1, 1, 0, 0)));
    assert!(fires(sels, "1 of them", e(0, 0, 1, 0)));
    assert!(
        !fires(sels, "1 of them", e(0, 0, 0, 1)),
        "`them` excludes `_aux`"
    );
    assert!(fires(sels, "all of them", e(1, 1, 1, 0)));
    assert!(fires(
        sels,
        "all of sel_* and not 1 of filter_*",
        e(1, 1, 0, 0)
    ));
    assert!(fires(sels, "not sel_a", e(0, 0, 0, 0)));
}

#[test]
fn condition_as_list_is_or() {
    let text = "title: t\nid: r1\nlogsource: {product: okta}\ndetection:\n    a: {x: 1}\n    b: {y: 1}\n    condition:\n        - a\n        - b\n";
    let mut d = SigmaDetector::new(ruleset(text), &SigmaOptions::default());
    let mut alerts = Vec::new();
    d.detect(&event("okta", json!({"y": 1})), &mut alerts);
    assert_eq!(alerts.len(), 1);
}

#[test]
fn logsource_dispatch() {
    let text = "title: t\nid: r1\nlogsource: {product: okta}\ndetection:\n    sel: {x: 1}\n    condition: sel\n---\ntitle: w\nid: w1\nlogsource: {product: windows, service: security}\ndetection:\n    sel: {x: 1}\n    condition: sel\n---\ntitle: any\nid: any1\nlogsource: {category: whatever}\ndetection:\n    sel: {x: 1}\n    condition: sel\n";
    let run = |opts: &SigmaOptions, source: &str| {
        let mut d = SigmaDetector::new(ruleset(text), opts);
        let mut alerts = Vec::new();
        d.detect(&event(source, json!({"x": 1})), &mut alerts);
        let mut ids: Vec<String> = alerts.into_iter().map(|a| a.rule_id).collect();
        ids.sort();
        ids
    };
    let normal = SigmaOptions::default();
    assert_eq!(run(&normal, "okta"), vec!["any1", "r1"]);
    assert_eq!(run(&normal, "github"), vec!["any1"]);
    let ignore = SigmaOptions {
        ignore_logsource: true,
        ..Default::default()
    };
    assert_eq!(run(&ignore, "json"), vec!["any1", "r1", "w1"]);
}

#[test]
fn a_rules_alert_group_seconds_travels_with_its_alerts() {
    let text = "title: Root console login\nalert_group_seconds: 0\nlogsource: {product: okta}\ndetection:\n    sel:\n        eventType: user.session.start\n    condition: sel\n";
    let mut d = SigmaDetector::new(ruleset(text), &SigmaOptions::default());
    let mut alerts = Vec::new();
    d.detect(
        &event("okta", json!({"eventType": "user.session.start"})),
        &mut alerts,
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].alert_group_seconds, Some(0));
}

#[test]
fn alert_metadata() {
    let text = "title: MFA factor deactivated\nid: 11111111-2222-3333-4444-555555555555\nstatus: test\ndescription: d\nreferences: [https://x]\ntags: [attack.persistence, attack.t1556.006]\nlogsource: {product: okta}\ndetection:\n    sel:\n        eventType: user.mfa.factor.deactivate\n        outcome.result: SUCCESS\n    condition: sel\nlevel: high\n";
    let mut d = SigmaDetector::new(ruleset(text), &SigmaOptions::default());
    let mut alerts = Vec::new();
    let e = event(
        "okta",
        json!({"eventType": "user.mfa.factor.deactivate", "outcome": {"result": "SUCCESS"}, "actor": {"alternateId": "a@x.com"}}),
    );
    d.detect(&e, &mut alerts);
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a.rule_id, "11111111-2222-3333-4444-555555555555");
    assert_eq!(a.title, "MFA factor deactivated");
    assert_eq!(a.severity, perimeter_model::Severity::High);
    assert_eq!(a.rule_status.as_deref(), Some("test"));
    assert_eq!(a.threat_technique_id, vec!["T1556.006"]);
    assert_eq!(a.references, vec!["https://x"]);
    assert_eq!(a.alert_group_seconds, None, "the store's setting applies");
    assert_eq!(
        a.rule_hash.as_deref(),
        Some(blake3::hash(text.as_bytes()).to_hex().as_str())
    );
    assert_eq!(
        a.matched_fields.get("eventType"),
        Some(&json!("user.mfa.factor.deactivate"))
    );
    assert_eq!(
        a.matched_fields.get("outcome.result"),
        Some(&json!("SUCCESS"))
    );
    assert_eq!(a.entity, "a@x.com");
    assert_eq!(a.entity_kind, perimeter_model::EntityKind::User);
    assert_eq!(a.lines, vec![1]);
    assert_eq!(a.event_ids, vec![e.id().0.clone()]);
    assert_eq!(a.detector, perimeter_model::DetectorKind::Sigma);
    assert_eq!(a.id.len(), 32);
}

#[test]
fn filters_suppress_named_rules() {
    let text = "title: t\nid: r1\nlogsource: {product: okta}\ndetection:\n    sel: {eventType: x}\n    condition: sel\n---\ntitle: f\nlogsource: {product: okta}\nfilter:\n    rules: [r1]\n    selection:\n        actor.alternateId|startswith: 'svc_'\n    condition: selection\n";
    assert!(ruleset(text).spec_warnings().is_empty());
    // QA: a filter for another product than its rule's never applied, without a word.
    let elsewhere = ruleset(&text.replacen(
        "logsource: {product: okta}\nfilter",
        "logsource: {product: github}\nfilter",
        1,
    ));
    let warnings = elsewhere.spec_warnings();
    assert!(
        warnings.len() == 1 && warnings[0].message.contains("never applies to that rule"),
        "{warnings:?}"
    );
    let mut d = SigmaDetector::new(ruleset(text), &SigmaOptions::default());
    let mut alerts = Vec::new();
    d.detect(
        &event(
            "okta",
            json!({"eventType": "x", "actor": {"alternateId": "svc_backup"}}),
        ),
        &mut alerts,
    );
    assert!(alerts.is_empty());
    d.detect(
        &event(
            "okta",
            json!({"eventType": "x", "actor": {"alternateId": "alice"}}),
        ),
        &mut alerts,
    );
    assert_eq!(alerts.len(), 1);
}

fn okta_fail(user: &str, ip: &str, minute: u32, second: u32) -> Event {
    event(
        "okta",
        json!({"eventType": "user.session.start", "outcome": {"result": "FAILURE"}, "actor": {"alternateId": user},
               "client": {"ipAddress": ip}, "published": format!("2024-05-01T10:{minute:02}:{second:02}Z")}),
    )
}

const FAIL_RULE: &str = "title: fail\nid: fail1\nname: okta_fail\nlogsource: {product: okta}\ndetection:\n    sel:\n        eventType: user.session.start\n        outcome.result: FAILURE\n    condition: sel\n";

fn corr(body: &str) -> String {
    format!("title: corr\nid: c1\nlevel: high\ncorrelation:\n{body}\n---\n{FAIL_RULE}")
}

fn run_events(text: &str, opts: &SigmaOptions, events: &[Event]) -> Vec<perimeter_model::Alert> {
    let mut d = SigmaDetector::new(ruleset(text), opts);
    let mut alerts = Vec::new();
    for e in events {
        d.detect(e, &mut alerts);
    }
    d.flush(&mut alerts);
    alerts
}

#[test]
fn event_count_fires_once_per_burst_and_suppresses_base_alerts() {
    let text = corr("    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 5m\n    condition:\n        gte: 3");
    let burst: Vec<Event> = (0..4).map(|i| okta_fail("bob", "1.1.1.1", 0, i)).collect();
    let alerts = run_events(&text, &SigmaOptions::default(), &burst);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule_id, "c1");
    assert_eq!(alerts[0].entity, "bob");
    assert_eq!(
        alerts[0].detector,
        perimeter_model::DetectorKind::Correlation
    );
    // The alert names the events of its window as evidence (the first three of the burst).
    let ids: Vec<String> = burst[..3].iter().map(|e| e.id().0.clone()).collect();
    assert_eq!(alerts[0].event_ids, ids);
    // Spread over more than the timespan: no alert. Different users: no alert.
    let spread: Vec<Event> = (0..3)
        .map(|i| okta_fail("bob", "1.1.1.1", i * 4, 0))
        .collect();
    assert!(run_events(&text, &SigmaOptions::default(), &spread).is_empty());
    let users: Vec<Event> = ["a", "b", "c"]
        .iter()
        .map(|u| okta_fail(u, "1.1.1.1", 0, 1))
        .collect();
    assert!(run_events(&text, &SigmaOptions::default(), &users).is_empty());
}

#[test]
fn generate_true_keeps_base_alerts() {
    let text = corr("    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 5m\n    generate: true\n    condition:\n        gte: 2");
    let alerts = run_events(
        &text,
        &SigmaOptions::default(),
        &[okta_fail("bob", "x", 0, 0), okta_fail("bob", "x", 0, 1)],
    );
    assert_eq!(alerts.iter().filter(|a| a.rule_id == "fail1").count(), 2);
    assert_eq!(alerts.iter().filter(|a| a.rule_id == "c1").count(), 1);
}

#[test]
fn event_count_out_of_order_within_lateness() {
    let text = corr("    type: event_count\n    rules: [fail1]\n    group-by: [actor.alternateId]\n    timespan: 1m\n    condition:\n        gte: 3");
    // Times 10:00:50, 10:00:10, 10:00:30: all within one minute, arriving out of order.
    let evs = vec![
        okta_fail("bob", "x", 0, 50),
        okta_fail("bob", "x", 0, 10),
        okta_fail("bob", "x", 0, 30),
    ];
    let alerts = run_events(&text, &SigmaOptions::default(), &evs);
    assert_eq!(alerts.len(), 1);
    // Dated by the window's newest event, not by the one that arrived last: the same events
    // in another order give the same alert.
    let newest = evs.iter().map(|e| e.timestamp).max().unwrap();
    assert_eq!(alerts[0].timestamp, newest);
    let mut in_order = evs.clone();
    in_order.sort_by_key(|e| e.timestamp);
    let again = run_events(&text, &SigmaOptions::default(), &in_order);
    assert_eq!(
        (again[0].timestamp, &again[0].id),
        (alerts[0].timestamp, &alerts[0].id)
    );
    // With zero allowed lateness the two late events are dropped.
    let strict = SigmaOptions {
        allowed_lateness_seconds: 0,
        ..Default::default()
    };
    assert!(run_events(&text, &strict, &evs).is_empty());
}

#[test]
fn a_record_with_an_impossible_time_does_not_make_its_stream_late() {
    let text = corr("    type: event_count\n    rules: [fail1]\n    group-by: [actor.alternateId]\n    timespan: 1m\n    condition:\n        gte: 3");
    // Dated 9999: its receive time (today) stands in, far after the burst of 2024 that follows.
    let raw = json!({"eventType": "user.session.start", "outcome": {"result": "FAILURE"},
        "actor": {"alternateId": "eve"}, "published": "9999-12-31T00:00:00Z"});
    let impossible = Event::new(
        "okta",
        RawRecord {
            source: "okta".into(),
            tenant: "t1".into(),
            received_at: Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).unwrap(),
            line: Some(1),
            raw: perimeter_model::raw_from_serde(&raw),
        },
        Ecs {
            timestamp: Some(Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap()),
            ..Default::default()
        },
    );
    assert!(impossible.timestamp_adjusted);
    let mut evs = vec![impossible];
    evs.extend((0..3).map(|i| okta_fail("bob", "x", 0, i)));
    let alerts = run_events(&text, &SigmaOptions::default(), &evs);
    assert_eq!(
        alerts.iter().filter(|a| a.rule_id == "c1").count(),
        1,
        "{alerts:?}"
    );
}

/// QA: one Google Workspace application published ahead of another (the login feed minutes
/// behind, Drive hours) made every Drive event older than the lateness "late": a bulk download
/// raised nothing. Each application is a stream of its own; one application is still one.
#[test]
fn each_google_workspace_application_keeps_its_own_watermark() {
    let text = "title: drive\nid: d1\nname: drive_dl\nlogsource: {product: google_workspace}\ndetection:\n    sel:\n        events.name: download\n    condition: sel\n---\ntitle: bulk\nid: c1\nlevel: high\ncorrelation:\n    type: event_count\n    rules: [drive_dl]\n    group-by: [actor.email]\n    timespan: 10m\n    condition:\n        gte: 3\n";
    let google = |app: &str, name: &str, hour: u32, minute: u32| {
        let time = format!("2024-05-01T{hour:02}:{minute:02}:00Z");
        let raw = json!({"kind": "admin#reports#activity", "ts": time,
            "id": {"time": time, "applicationName": app,
                   "uniqueQualifier": format!("{app}{hour}{minute}")},
            "actor": {"email": "eve@acme.example"}, "events": [{"type": "access", "name": name}]});
        event("google_workspace", raw)
    };
    let mut evs = vec![google("login", "login_success", 12, 0)];
    evs.extend((0..3).map(|m| google("drive", "download", 10, m)));
    let alerts = run_events(text, &SigmaOptions::default(), &evs);
    assert_eq!(
        alerts.iter().filter(|a| a.rule_id == "c1").count(),
        1,
        "{alerts:?}"
    );
    // Within one application, two hours behind its own newest event is late.
    let mut evs = vec![google("drive", "view", 12, 0)];
    evs.extend((0..3).map(|m| google("drive", "download", 10, m)));
    let alerts = run_events(text, &SigmaOptions::default(), &evs);
    assert!(alerts.iter().all(|a| a.rule_id != "c1"), "{alerts:?}");
}

#[test]
fn a_correlation_names_its_entity_field_over_its_group_by() {
    let text = corr("    type: event_count\n    rules: [fail1]\n    group-by: [actor.alternateId]\n    timespan: 1m\n    condition:\n        gte: 2")
        .replacen("level: high\n", "level: high\nentity_field: client.ipAddress\n", 1);
    let evs = [
        okta_fail("bob", "203.0.113.9", 0, 0),
        okta_fail("bob", "203.0.113.9", 0, 1),
    ];
    let alerts = run_events(&text, &SigmaOptions::default(), &evs);
    let c: Vec<_> = alerts.iter().filter(|a| a.rule_id == "c1").collect();
    assert_eq!(c.len(), 1, "{alerts:?}");
    assert_eq!(c[0].entity, "203.0.113.9");
}

#[test]
fn events_without_a_group_by_value_are_in_no_group() {
    let text = corr("    type: event_count\n    rules: [fail1]\n    group-by: [actor.alternateId]\n    timespan: 1m\n    condition:\n        gte: 3");
    let nobody = |s: u32| {
        event(
            "okta",
            json!({"eventType": "user.session.start", "outcome": {"result": "FAILURE"},
                   "client": {"ipAddress": format!("203.0.113.{s}")},
                   "published": format!("2024-05-01T10:00:{s:02}Z")}),
        )
    };
    let evs: Vec<Event> = (0..5).map(nobody).collect();
    assert!(run_events(&text, &SigmaOptions::default(), &evs).is_empty());
}

#[test]
fn value_count_counts_distinct_values() {
    let text = corr("    type: value_count\n    rules: [okta_fail]\n    group-by: [client.ipAddress]\n    timespan: 10m\n    condition:\n        field: actor.alternateId\n        gte: 3");
    let same: Vec<Event> = (0..5).map(|i| okta_fail("bob", "9.9.9.9", 0, i)).collect();
    assert!(run_events(&text, &SigmaOptions::default(), &same).is_empty());
    let spray: Vec<Event> = ["a", "b", "a", "c"]
        .iter()
        .enumerate()
        .map(|(i, u)| okta_fail(u, "9.9.9.9", 1, i as u32))
        .collect();
    let alerts = run_events(&text, &SigmaOptions::default(), &spray);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].entity, "9.9.9.9");
    assert_eq!(alerts[0].entity_kind, perimeter_model::EntityKind::Ip);
    // It says what it counted: distinct values of which field, from how many events.
    assert_eq!(
        alerts[0].explanation.as_deref(),
        Some("value_count correlation: 3 distinct actor.alternateId values from 4 events over 3s (timespan 600s), grouped by client.ipAddress, condition gte 3")
    );
}

/// A burst of many new values against a high threshold (QA: each event sorted every window
/// start's values, 4,000 events at `gte: 1000` took 7-10 s) fires once, when the threshold is
/// reached, and says so; the same with a sum.
#[test]
fn a_high_value_count_threshold_is_reached_in_a_long_burst() {
    let text = corr("    type: value_count\n    rules: [okta_fail]\n    group-by: [client.ipAddress]\n    timespan: 1h\n    condition:\n        field: actor.alternateId\n        gte: 1500");
    let burst: Vec<Event> = (0..1800u32)
        .map(|i| okta_fail(&format!("user{i}"), "9.9.9.9", i / 60 % 60, i % 60))
        .collect();
    let alerts = run_events(&text, &SigmaOptions::default(), &burst);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let said = alerts[0].explanation.as_deref().unwrap_or_default();
    assert!(
        said.starts_with("value_count correlation: 1500 distinct"),
        "{said}"
    );
    // One value short of the threshold: nothing.
    let short = &burst[..1499];
    assert!(run_events(&text, &SigmaOptions::default(), short).is_empty());
}

/// Sigma compares values case-insensitively, and SaaS identities are: `BOB@example.com` and
/// `bob@example.com` are one group and one distinct value (they used to split a burst, break
/// a temporal sequence and make 10 accounts look like 20). The alert shows a value as seen.
#[test]
fn group_by_and_counted_values_fold_case() {
    let opts = SigmaOptions::default();
    let burst = corr("    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 5m\n    condition:\n        gte: 3");
    let evs: Vec<Event> = ["Bob@Example.com", "bob@example.com", "BOB@EXAMPLE.COM"]
        .iter()
        .enumerate()
        .map(|(i, u)| okta_fail(u, "x", 0, i as u32))
        .collect();
    let alerts = run_events(&burst, &opts, &evs);
    let c: Vec<_> = alerts.iter().filter(|a| a.rule_id == "c1").collect();
    assert_eq!(c.len(), 1, "{alerts:?}");
    assert_eq!(c[0].entity, "BOB@EXAMPLE.COM");
    // Beyond ASCII: by their lowercase.
    let evs: Vec<Event> = ["ÉLODIE", "élodie", "Élodie"]
        .iter()
        .enumerate()
        .map(|(i, u)| okta_fail(u, "x", 0, i as u32))
        .collect();
    assert_eq!(run_events(&burst, &opts, &evs).len(), 1);
    // Longer than the folding buffer (folded in pieces).
    let long = format!("{}@example.com", "Mallory".repeat(20));
    let evs: Vec<Event> = [long.to_uppercase(), long.to_lowercase(), long]
        .iter()
        .enumerate()
        .map(|(i, u)| okta_fail(u, "x", 0, i as u32))
        .collect();
    assert_eq!(run_events(&burst, &opts, &evs).len(), 1);
    let spray = corr("    type: value_count\n    rules: [okta_fail]\n    group-by: [client.ipAddress]\n    timespan: 10m\n    condition:\n        field: actor.alternateId\n        gte: 3");
    let two: Vec<Event> = ["ann", "ANN", "Ben", "ben"]
        .iter()
        .enumerate()
        .map(|(i, u)| okta_fail(u, "9.9.9.9", 0, i as u32))
        .collect();
    assert!(run_events(&spray, &opts, &two).is_empty());
    let text = format!(
        "title: c\nid: c1\ncorrelation:\n    type: temporal_ordered\n    rules: [okta_fail, okta_ok]\n    group-by: [actor.alternateId]\n    timespan: 10m\n---\n{FAIL_RULE}---\n{SUCCESS_RULE}"
    );
    let evs = [okta_fail("ALICE", "x", 0, 0), okta_ok("alice", 1)];
    assert_eq!(run_events(&text, &opts, &evs).len(), 1);
}

/// A group-by path through an array (the Okta `target` list) has a value per element: the
/// event counts under each, so the order of the elements does not matter (only the first one
/// used to count: a reset whose target list began with the factor never met the enrolment).
#[test]
fn a_group_by_through_an_array_counts_under_each_element() {
    let reset = |targets: &[&str]| {
        let targets: Vec<_> = targets.iter().map(|t| json!({"alternateId": t})).collect();
        event(
            "okta",
            json!({"eventType": "user.mfa.factor.deactivate", "actor": {"alternateId": "admin"},
                   "target": targets, "published": "2024-05-01T10:00:00Z"}),
        )
    };
    let enrol = event(
        "okta",
        json!({"eventType": "user.mfa.factor.activate", "actor": {"alternateId": "Alice"},
               "published": "2024-05-01T10:10:00Z"}),
    );
    let rules = "title: reset\nid: r1\nname: reset\nlogsource: {product: okta}\ndetection:\n    sel: {eventType: user.mfa.factor.deactivate}\n    condition: sel\n---\n\
                 title: enrol\nid: r2\nname: enrol\nlogsource: {product: okta}\ndetection:\n    sel: {eventType: user.mfa.factor.activate}\n    condition: sel\n";
    let text = format!(
        "title: c\nid: c1\ncorrelation:\n    type: temporal_ordered\n    rules: [reset, enrol]\n    aliases:\n        account:\n            reset: target.alternateId\n            enrol: actor.alternateId\n    group-by: [account]\n    timespan: 1h\n---\n{rules}"
    );
    let opts = SigmaOptions::default();
    for targets in [["alice", "Okta Verify"], ["Okta Verify", "alice"]] {
        let alerts = run_events(&text, &opts, &[reset(&targets), enrol.clone()]);
        let c: Vec<_> = alerts.iter().filter(|a| a.rule_id == "c1").collect();
        assert_eq!(c.len(), 1, "{targets:?}: {alerts:?}");
        assert_eq!(c[0].entity, "Alice");
    }
    // A count over such a field: the event counts once under each distinct value, and the
    // alert names the value its window is of.
    let burst = format!(
        "title: c\nid: c1\ncorrelation:\n    type: event_count\n    rules: [reset]\n    group-by: [target.alternateId]\n    timespan: 1h\n    condition:\n        gte: 2\n---\n{rules}"
    );
    let evs = [
        reset(&["Okta Verify", "bob", "BOB"]),
        reset(&["carol", "bob"]),
    ];
    let alerts = run_events(&burst, &opts, &evs);
    let entities: Vec<_> = alerts
        .iter()
        .filter(|a| a.rule_id == "c1")
        .map(|a| a.entity.as_str())
        .collect();
    assert_eq!(entities, vec!["bob"]);
}

fn assert_explains(alert: &perimeter_model::Alert, start: &str) {
    let text = alert.explanation.as_deref().unwrap_or_default();
    assert!(text.starts_with(start), "{text}");
}

/// An event counted for two rules of a temporal correlation is one event of its explanation.
#[test]
fn a_temporal_explanation_counts_the_events_it_cites() {
    let text = format!(
        "title: c\nid: c1\ncorrelation:\n    type: temporal_ordered\n    rules: [okta_fail, okta_ok, okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 10m\n---\n{FAIL_RULE}---\n{SUCCESS_RULE}"
    );
    let evs = [
        okta_fail("bob", "x", 0, 0),
        okta_ok("bob", 1),
        okta_fail("bob", "x", 2, 0),
    ];
    let alerts = run_events(&text, &SigmaOptions::default(), &evs);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].event_ids.len(), 3);
    assert_eq!(alerts[0].count, 3);
    assert_explains(
        &alerts[0],
        "temporal_ordered correlation: 3 events over 120s",
    );
}

#[test]
fn value_count_over_several_fields_counts_their_combinations() {
    // Spec: "When you use multiple values in `field` they are linked by an AND".
    let text = corr("    type: value_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 10m\n    condition:\n        field:\n            - client.ipAddress\n            - eventType\n        gte: 3");
    let three: Vec<Event> = ["1.1.1.1", "2.2.2.2", "3.3.3.3"]
        .iter()
        .enumerate()
        .map(|(i, ip)| okta_fail("bob", ip, 0, i as u32))
        .collect();
    assert_eq!(run_events(&text, &SigmaOptions::default(), &three).len(), 1);
    let two: Vec<Event> = ["1.1.1.1", "2.2.2.2", "1.1.1.1"]
        .iter()
        .enumerate()
        .map(|(i, ip)| okta_fail("bob", ip, 0, i as u32))
        .collect();
    assert!(run_events(&text, &SigmaOptions::default(), &two).is_empty());
    // The other aggregations take one field, and say so.
    let sum = text.replace("value_count", "value_sum");
    let err = load_error(&sum);
    // The line of `field:`, whose list follows.
    assert_eq!(err.line, Some(10), "{err}");
    assert!(
        err.to_string().contains("`value_sum` takes one field"),
        "{err}"
    );
}

#[test]
fn an_unknown_rule_reference_is_reported_at_its_line() {
    let text = "title: c\nid: c9\ncorrelation:\n    type: event_count\n    rules:\n        - okta_fail\n        - nope\n    group-by: [user]\n    timespan: 1m\n    condition:\n        gte: 2\n---\n".to_string() + FAIL_RULE;
    let (docs, errs) = parse_file(Path::new("c.yml"), &text, &Pipelines::builtin());
    assert!(errs.is_empty(), "{errs:?}");
    let mut errors = Vec::new();
    RuleSet::from_docs(docs, &mut errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "c.yml:7: field `correlation.rules`: correlation references unknown rule `nope`"
    );
}

#[test]
fn a_temporal_correlation_of_one_rule_and_an_alias_for_a_rule_not_correlated_are_errors() {
    for kind in ["temporal", "temporal_ordered"] {
        let err = load_error(&corr(&format!(
            "    type: {kind}\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 5m"
        )));
        assert_eq!(
            (err.line, err.field.as_deref()),
            (Some(6), Some("correlation.rules")),
            "{err}"
        );
        assert!(err.message.contains("needs at least two rules"), "{err}");
    }
    let text = |alias_rule: &str| {
        format!("title: tmp\nid: c1\ncorrelation:\n    type: temporal\n    rules: [okta_fail, okta_ok]\n    aliases:\n        user:\n            {alias_rule}: actor.alternateId\n            okta_ok: actor.alternateId\n    group-by: [user]\n    timespan: 10m\n---\n{FAIL_RULE}---\n{SUCCESS_RULE}")
    };
    let load = |text: &str| {
        let (docs, errs) = parse_file(Path::new("c.yml"), text, &Pipelines::builtin());
        assert!(errs.is_empty(), "{errs:?}");
        let mut errors = Vec::new();
        let set = RuleSet::from_docs(docs, &mut errors);
        (set, errors)
    };
    // By name or by id: both name a correlated rule.
    for ok in ["okta_fail", "fail1"] {
        let (set, errors) = load(&text(ok));
        assert!(errors.is_empty(), "{ok}: {errors:?}");
        assert_eq!(set.correlations.len(), 1);
    }
    let (set, errors) = load(&text("nope"));
    assert!(set.correlations.is_empty());
    assert_eq!(
        errors[0].to_string(),
        "c.yml:8: field `correlation.aliases`: alias names rule `nope`, which is not in the correlation's `rules`"
    );
    // An alias grouping by that leaves a correlated rule out (QA: the correlation never fired
    // when that rule's events had no field named as the alias): warned, the rules load.
    let partial = text("okta_fail").replace("            okta_ok: actor.alternateId\n", "");
    let (set, errors) = load(&partial);
    assert!(
        errors.is_empty() && set.correlations.len() == 1,
        "{errors:?}"
    );
    let warnings: Vec<String> = set.spec_warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        ["c.yml:8: field `correlation.aliases`: alias `user` gives no field for rule `okta_ok`: its events are read at a field named `user`, and not counted when they have none"]
    );
}

#[test]
fn a_filter_naming_an_unknown_rule_or_a_correlation_is_reported_at_its_line() {
    let filter = |target: &str| {
        format!("title: f\nlogsource: {{product: okta}}\nfilter:\n    rules:\n        - okta_fail\n        - {target}\n    selection:\n        actor.alternateId: svc\n    condition: selection\n---\ntitle: c\nid: c9\ncorrelation:\n    type: event_count\n    rules: [okta_fail]\n    group-by: [user]\n    timespan: 1m\n    condition:\n        gte: 2\n---\n{FAIL_RULE}")
    };
    let load = |text: &str| {
        let (docs, errs) = parse_file(Path::new("f.yml"), text, &Pipelines::builtin());
        assert!(errs.is_empty(), "{errs:?}");
        let mut errors = Vec::new();
        let set = RuleSet::from_docs(docs, &mut errors);
        (set, errors)
    };
    let (set, errors) = load(&filter("okta_fail"));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(set.filters.len(), 1);
    for (target, message) in [
        ("nope", "filter references unknown rule `nope`"),
        ("c9", "filter references correlation `c9`"),
    ] {
        let (set, errors) = load(&filter(target));
        assert!(set.filters.is_empty(), "{target}");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .to_string()
                .starts_with(&format!("f.yml:6: field `filter.rules`: {message}")),
            "{}",
            errors[0]
        );
    }
}

#[test]
fn generate_is_read_at_the_top_level_too() {
    // The correlation schema has `generate` beside `correlation`; pySigma reads it inside.
    let outer = corr("    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 1m\n    condition:\n        gte: 2")
        .replacen("correlation:", "generate: true\ncorrelation:", 1);
    let evs = [okta_fail("bob", "x", 0, 0), okta_fail("bob", "x", 0, 1)];
    let alerts = run_events(&outer, &SigmaOptions::default(), &evs);
    assert_eq!(alerts.iter().filter(|a| a.rule_id == "fail1").count(), 2);
    assert_eq!(alerts.iter().filter(|a| a.rule_id == "c1").count(), 1);
    let bad = outer.replace("generate: true", "generate: maybe");
    let err = load_error(&bad);
    assert_eq!(
        (err.line, err.field.as_deref()),
        (Some(4), Some("generate")),
        "{err}"
    );
}

#[test]
fn upper_bound_and_range_conditions_evaluate_on_window_close() {
    let text = corr("    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 5m\n    condition:\n        gt: 1\n        lte: 3");
    let two: Vec<Event> = (0..2).map(|i| okta_fail("bob", "x", 0, i)).collect();
    assert_eq!(run_events(&text, &SigmaOptions::default(), &two).len(), 1);
    let five: Vec<Event> = (0..5).map(|i| okta_fail("bob", "x", 0, i)).collect();
    assert!(run_events(&text, &SigmaOptions::default(), &five).is_empty());
    let eq = corr("    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 5m\n    condition:\n        eq: 1");
    // bob once in the first window, then again 20 minutes later: two closed windows, two alerts.
    let evs = vec![okta_fail("bob", "x", 0, 0), okta_fail("bob", "x", 20, 0)];
    assert_eq!(
        run_events(
            &eq,
            &SigmaOptions {
                allowed_lateness_seconds: 0,
                ..Default::default()
            },
            &evs
        )
        .len(),
        2
    );
}

/// A range is judged when a window closes; a window with too few events slides to its next
/// event (a burst across the first window's end is not lost), one with too many is consumed
/// (a burst too large does not fire from its tail).
#[test]
fn a_range_window_slides_past_too_few_and_consumes_too_many() {
    let text = corr("    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 10m\n    condition:\n        gte: 3\n        lte: 5");
    let opts = SigmaOptions::default();
    // 10:00 alone in its window (10:09 is the only other): then 10:09, 10:11, 10:12.
    let evs: Vec<Event> = [0, 9, 11, 12]
        .iter()
        .map(|m| okta_fail("bob", "x", *m, 0))
        .collect();
    let alerts = run_events(&text, &opts, &evs);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let ids: Vec<String> = evs[1..].iter().map(|e| e.id().0.clone()).collect();
    assert_eq!(alerts[0].event_ids, ids);
    assert_eq!(alerts[0].timestamp, evs[3].timestamp);
    // Out of order within the allowed lateness: the same alert.
    let shuffled = [&evs[1], &evs[0], &evs[3], &evs[2]].map(Clone::clone);
    let again = run_events(&text, &opts, &shuffled);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].id, alerts[0].id);
    // Ten in a minute: too many, and none of their tails fires either.
    let burst: Vec<Event> = (0..10).map(|i| okta_fail("bob", "x", 0, i)).collect();
    assert!(run_events(&text, &opts, &burst).is_empty());
    // Windows close by the watermark too, not only on flush: two separate bursts, two alerts.
    let mut two: Vec<Event> = (0..3).map(|i| okta_fail("bob", "x", 0, i)).collect();
    two.extend((0..4).map(|i| okta_fail("bob", "x", 30, i)));
    two.push(okta_fail("eve", "x", 59, 0));
    let mut d = SigmaDetector::new(ruleset(&text), &opts);
    let mut before_flush = Vec::new();
    for e in &two {
        d.detect(e, &mut before_flush);
    }
    assert_eq!(before_flush.len(), 2, "{before_flush:?}");
}

const SUCCESS_RULE: &str = "title: ok\nid: ok1\nname: okta_ok\nlogsource: {product: okta}\ndetection:\n    sel:\n        eventType: user.session.start\n        outcome.result: SUCCESS\n    condition: sel\n";

#[test]
fn a_correlation_condition_that_never_or_always_holds_is_reported_at_its_line() {
    // Line 9 is `condition:`, its entries follow from line 10.
    let text = |kind: &str, rules: &str, cond: &str| {
        let extra = if kind.starts_with("value") {
            "\n        field: client.ipAddress"
        } else {
            ""
        };
        format!("title: corr\nid: c1\nlevel: high\ncorrelation:\n    type: {kind}\n    rules: [{rules}]\n    group-by: [actor.alternateId]\n    timespan: 5m\n    condition:\n        {cond}{extra}\n---\n{FAIL_RULE}---\n{SUCCESS_RULE}")
    };
    for (kind, cond, line, message) in [
        (
            "event_count",
            "gte: -1",
            10,
            "`gte: -1` always holds (an event count is a whole number from 1)",
        ),
        ("event_count", "gte: 0", 10, "`gte: 0` always holds"),
        // A window holds the event it is judged on at least.
        ("event_count", "gte: 1", 10, "`gte: 1` always holds"),
        ("event_count", "lte: 0", 10, "`lte: 0` can never hold"),
        ("event_count", "eq: 0", 10, "`eq: 0` can never hold"),
        ("event_count", "neq: -3", 10, "`neq: -3` always holds"),
        ("event_count", "lt: 0", 10, "`lt: 0` can never hold"),
        ("event_count", "lte: -1", 10, "`lte: -1` can never hold"),
        ("event_count", "eq: 2.5", 10, "`eq: 2.5` can never hold"),
        (
            "event_count",
            "gt: 5\n        lt: 3",
            11,
            "`gt: 5, lt: 3` can never hold",
        ),
        (
            "event_count",
            "gt: 3\n        lt: 4",
            11,
            "`gt: 3, lt: 4` can never hold",
        ),
        (
            "event_count",
            "eq: 3\n        neq: 3",
            11,
            "`eq: 3, neq: 3` can never hold",
        ),
        (
            "event_count",
            "gte: 2\n        lte: 2\n        neq: 2",
            12,
            "`gte: 2, lte: 2, neq: 2` can never hold",
        ),
        (
            "value_count",
            "lt: 0",
            10,
            "`lt: 0` can never hold (a count of values is a whole number from 1)",
        ),
        (
            "value_sum",
            "gt: 10\n        lte: 10",
            11,
            "`gt: 10, lte: 10` can never hold",
        ),
        (
            "value_avg",
            "eq: 1\n        lt: 1",
            11,
            "`eq: 1, lt: 1` can never hold",
        ),
        (
            "value_percentile",
            "gt: 100",
            10,
            "`gt: 100` can never hold (a percentile is 0 to 100)",
        ),
        (
            "value_percentile",
            "lte: 100",
            10,
            "`lte: 100` always holds",
        ),
        (
            "temporal",
            "gte: 3",
            10,
            "`gte: 3` can never hold (the number of rules seen",
        ),
        ("temporal", "lte: 2", 10, "`lte: 2` always holds"),
        // Past what a window keeps per key (QA: `gte: 12000` never fired, `lt: 11000` fired
        // on 12,000 events counted as 10,000).
        (
            "event_count",
            "gte: 12000",
            10,
            "`gte: 12000`: a correlation counts at most 10000 events",
        ),
        ("event_count", "gt: 10000", 10, "counts at most 10000"),
        ("event_count", "lt: 11000", 10, "counts at most 10000"),
        (
            "event_count",
            "gt: 3\n        lte: 10000",
            11,
            "`gt: 3, lte: 10000`: a correlation counts at most",
        ),
        ("value_count", "gte: 10001", 10, "counts at most 10000"),
    ] {
        let err = load_error(&text(kind, "okta_fail, okta_ok", cond));
        assert_eq!(
            (err.line, err.field.as_deref()),
            (Some(line), Some("correlation.condition")),
            "{kind} {cond}: {err}"
        );
        assert!(err.message.contains(message), "{kind} {cond}: {err}");
    }
    // Their possible neighbours load.
    for (kind, cond) in [
        ("event_count", "gte: 2"),
        ("event_count", "gt: 1"),
        ("event_count", "lt: 2"),
        ("event_count", "gt: 3\n        lt: 5"),
        ("event_count", "gte: 2\n        lte: 3\n        neq: 2"),
        ("event_count", "eq: 1"),
        ("event_count", "gte: 10000"),
        ("event_count", "lt: 10000"),
        ("value_sum", "lt: -5"),
        ("value_avg", "gt: 10\n        lt: 10.5"),
        ("value_percentile", "lte: 1"),
        ("temporal", "gte: 2"),
        ("temporal_ordered", "eq: 1"),
    ] {
        let (_, errs) = parse_file(
            Path::new("test.yml"),
            &text(kind, "okta_fail, okta_ok", cond),
            &Pipelines::builtin(),
        );
        assert!(errs.is_empty(), "{kind} {cond}: {errs:?}");
    }
}

#[test]
fn a_filter_of_no_rules_is_an_error() {
    for rules in ["[]", ""] {
        let text = format!("title: f\nlogsource: {{product: okta}}\nfilter:\n    rules: {rules}\n    selection:\n        actor.alternateId: svc\n    condition: selection\n---\n{FAIL_RULE}");
        let err = load_error(&text);
        assert_eq!(
            err.to_string(),
            "test.yml:4: field `filter.rules`: `rules` is empty: a filter applies to the rules it names",
            "rules: {rules}"
        );
    }
}

fn okta_ok(user: &str, minute: u32) -> Event {
    event(
        "okta",
        json!({"eventType": "user.session.start", "outcome": {"result": "SUCCESS"}, "actor": {"alternateId": user},
               "published": format!("2024-05-01T10:{minute:02}:00Z")}),
    )
}

#[test]
fn temporal_and_temporal_ordered() {
    let temporal = format!(
        "title: tmp\nid: c1\ncorrelation:\n    type: temporal\n    rules: [okta_fail, okta_ok]\n    group-by: [actor.alternateId]\n    timespan: 10m\n---\n{FAIL_RULE}---\n{SUCCESS_RULE}"
    );
    let ordered = temporal.replace("type: temporal", "type: temporal_ordered");
    let fail_then_ok = vec![okta_fail("bob", "x", 0, 0), okta_ok("bob", 2)];
    let ok_then_fail = vec![okta_ok("bob", 0), okta_fail("bob", "x", 2, 0)];
    let opts = SigmaOptions::default();
    assert_eq!(run_events(&temporal, &opts, &fail_then_ok).len(), 1);
    assert_eq!(run_events(&temporal, &opts, &ok_then_fail).len(), 1);
    assert_eq!(run_events(&ordered, &opts, &fail_then_ok).len(), 1);
    assert!(run_events(&ordered, &opts, &ok_then_fail).is_empty());
    // Different users or too far apart: nothing.
    assert!(run_events(
        &temporal,
        &opts,
        &[okta_fail("bob", "x", 0, 0), okta_ok("eve", 1)]
    )
    .is_empty());
    assert!(run_events(
        &temporal,
        &opts,
        &[okta_fail("bob", "x", 0, 0), okta_ok("bob", 30)]
    )
    .is_empty());
}

/// `neq|all: [a, b]` is each value's `neq` linked by AND: neither `a` nor `b` (negating "equals
/// all of them" held for every event).
#[test]
fn neq_all_excludes_every_value_listed() {
    let rule = "title: t\nid: t1\nlogsource: {product: okta}\ndetection:\n    sel:\n        actor.alternateId|neq|all:\n            - bob\n            - eve\n    condition: sel\n";
    let alerts = run_events(
        rule,
        &SigmaOptions::default(),
        &[okta_ok("bob", 0), okta_ok("eve", 1), okta_ok("al", 2)],
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].entity, "al");
}

/// A temporal condition with an upper bound ("a failure without a success": `lt: 2`; exactly
/// two of three rules: `eq: 2`) is judged over the whole window, when it has closed: a QA pass
/// found each event firing alone, before the window's other rules could match.
#[test]
fn temporal_with_an_upper_bound_is_judged_when_the_window_closes() {
    let temporal = |condition: &str| {
        format!(
            "title: tmp\nid: c1\ncorrelation:\n    type: temporal\n    rules: [okta_fail, okta_ok]\n    group-by: [actor.alternateId]\n    timespan: 10m\n    condition:\n        {condition}\n---\n{FAIL_RULE}---\n{SUCCESS_RULE}"
        )
    };
    let opts = SigmaOptions::default();
    let without_success = temporal("lt: 2");
    assert!(run_events(
        &without_success,
        &opts,
        &[okta_fail("bob", "x", 0, 0), okta_ok("bob", 1)]
    )
    .is_empty());
    let alerts = run_events(
        &without_success,
        &opts,
        &[
            okta_fail("bob", "x", 0, 0),
            okta_ok("eve", 1),
            okta_fail("eve", "x", 2, 0),
        ],
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].entity, "bob");
    // A success 30 minutes later is another window: the failure's window closed without one.
    assert_eq!(
        run_events(
            &without_success,
            &opts,
            &[okta_fail("bob", "x", 0, 0), okta_ok("bob", 30)]
        )
        .len(),
        2
    );
    let both = temporal("eq: 2");
    assert_eq!(
        run_events(
            &both,
            &opts,
            &[okta_fail("bob", "x", 0, 0), okta_ok("bob", 1)]
        )
        .len(),
        1
    );
    assert!(run_events(&both, &opts, &[okta_fail("bob", "x", 0, 0)]).is_empty());
}

/// An event that matches two of the rules counts for each: an admin's sign-in is a sign-in
/// too. Which rule is written first in the file does not matter.
#[test]
fn temporal_rules_that_overlap_count_an_event_for_each_rule_it_matches() {
    const ANY_LOGIN: &str = "title: any\nid: any1\nname: okta_any\nlogsource: {product: okta}\ndetection:\n    sel:\n        eventType: user.session.start\n    condition: sel\n";
    let opts = SigmaOptions::default();
    for kind in ["temporal", "temporal_ordered"] {
        for rules in [
            format!("{ANY_LOGIN}---\n{SUCCESS_RULE}"),
            format!("{SUCCESS_RULE}---\n{ANY_LOGIN}"),
        ] {
            let text = format!(
                "title: c\nid: c1\ncorrelation:\n    type: {kind}\n    rules: [okta_any, okta_ok]\n    group-by: [actor.alternateId]\n    timespan: 10m\n---\n{rules}"
            );
            let fail_then_ok = [okta_fail("bob", "x", 0, 0), okta_ok("bob", 2)];
            assert_eq!(run_events(&text, &opts, &fail_then_ok).len(), 1, "{kind}");
        }
    }
    // One event alone: both rules occurred (`temporal`), but nothing followed anything.
    let text = |kind: &str| {
        format!(
            "title: c\nid: c1\ncorrelation:\n    type: {kind}\n    rules: [okta_any, okta_ok]\n    group-by: [actor.alternateId]\n    timespan: 10m\n---\n{ANY_LOGIN}---\n{SUCCESS_RULE}"
        )
    };
    assert_eq!(
        run_events(&text("temporal"), &opts, &[okta_ok("bob", 2)]).len(),
        1
    );
    assert!(run_events(&text("temporal_ordered"), &opts, &[okta_ok("bob", 2)]).is_empty());
}

#[test]
fn chained_correlations_and_aliases() {
    // Spec example: multiple failed logins (event_count) followed by a success (temporal_ordered).
    let text = format!(
        "title: brute force then success\nid: outer\nlevel: critical\ncorrelation:\n    type: temporal_ordered\n    rules: [many_fails, okta_ok]\n    group-by: [user]\n    timespan: 10m\n    aliases:\n        user:\n            many_fails: actor.alternateId\n            okta_ok: actor.alternateId\n---\ntitle: many fails\nid: inner\nname: many_fails\ncorrelation:\n    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 10m\n    condition:\n        gte: 3\n---\n{FAIL_RULE}---\n{SUCCESS_RULE}"
    );
    let mut evs: Vec<Event> = (0..3).map(|i| okta_fail("bob", "x", 0, i)).collect();
    evs.push(okta_ok("bob", 1));
    let alerts = run_events(&text, &SigmaOptions::default(), &evs);
    let ids: Vec<&str> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["outer"],
        "inner correlation and base rules are suppressed (generate: false)"
    );
    assert_eq!(alerts[0].severity, perimeter_model::Severity::Critical);
    // The outer alert cites the events of the inner hit, not only its last one.
    let ids: Vec<String> = evs.iter().map(|e| e.id().0.clone()).collect();
    assert_eq!(alerts[0].event_ids, ids);
    assert_explains(
        &alerts[0],
        "temporal_ordered correlation: 4 events over 60s",
    );
    // Success without the burst first: nothing.
    assert!(run_events(&text, &SigmaOptions::default(), &[okta_ok("bob", 1)]).is_empty());
    // An inner correlation with an upper bound fires when its window closes, and that hit
    // counts for the outer one as an early hit does.
    let range = text.replace("gte: 3\n", "gte: 3\n        lte: 5\n");
    assert_ne!(range, text);
    let alerts = run_events(&range, &SigmaOptions::default(), &evs);
    let outer: Vec<_> = alerts.iter().filter(|a| a.rule_id == "outer").collect();
    assert_eq!(outer.len(), 1, "{alerts:?}");
    assert_eq!(outer[0].event_ids, ids);
    assert_eq!(outer[0].entity, "bob");
    // Six failures are too many for the inner one: no outer alert.
    let mut six: Vec<Event> = (0..6).map(|i| okta_fail("bob", "x", 0, i)).collect();
    six.push(okta_ok("bob", 1));
    assert!(run_events(&range, &SigmaOptions::default(), &six).is_empty());
}

/// An outer correlation grouped by the alias its inner one groups by: the inner's hits carry
/// the alias's value (QA: the outer never fired, and `rules check` said nothing).
#[test]
fn a_chained_correlation_groups_by_the_inner_ones_alias() {
    let rules = "title: r_a\nid: ra\nname: r_a\nlogsource: {product: test}\ndetection:\n    sel: {act: a}\n    condition: sel\n---\ntitle: r_b\nid: rb\nname: r_b\nlogsource: {product: test}\ndetection:\n    sel: {act: b}\n    condition: sel\n";
    let text = format!(
        "title: inner\nid: inner\nname: t_alias\ncorrelation:\n    type: temporal\n    rules: [r_a, r_b]\n    aliases:\n        who:\n            r_a: src_user\n            r_b: dst_user\n    group-by: [who]\n    timespan: 5m\n---\ntitle: outer\nid: outer\ncorrelation:\n    type: event_count\n    rules: [t_alias]\n    group-by: [who]\n    timespan: 1h\n    condition: {{gte: 2}}\nlevel: critical\n---\n{rules}"
    );
    let ev = |m: u32, act: &str, field: &str, user: &str| {
        event(
            "test",
            json!({"act": act, field: user, "ts": format!("2024-05-01T10:{m:02}:00Z")}),
        )
    };
    let evs = [
        ev(0, "a", "src_user", "Bob"),
        ev(1, "b", "dst_user", "bob"),
        ev(2, "b", "dst_user", "carol"),
        ev(20, "a", "src_user", "bob"),
        ev(21, "b", "dst_user", "BOB"),
    ];
    let opts = SigmaOptions {
        ignore_logsource: true,
        ..Default::default()
    };
    let alerts = run_events(&text, &opts, &evs);
    let outer: Vec<_> = alerts.iter().filter(|a| a.rule_id == "outer").collect();
    assert_eq!(outer.len(), 1, "{alerts:?}");
    assert_eq!(outer[0].event_ids.len(), 4, "{:?}", outer[0]);
}

#[test]
fn value_sum_and_avg() {
    let rule = "title: dl\nid: dl1\nname: download\nlogsource: {product: box}\ndetection:\n    sel: {event_type: DOWNLOAD}\n    condition: sel\n";
    let sum = format!("title: s\nid: c1\ncorrelation:\n    type: value_sum\n    rules: [download]\n    group-by: [user]\n    timespan: 1h\n    condition:\n        field: bytes\n        gt: 1000\n---\n{rule}");
    let avg = sum
        .replace("value_sum", "value_avg")
        .replace("gt: 1000", "gte: 500");
    let dl = |b: u64, m: u32| {
        event(
            "box",
            json!({"event_type": "DOWNLOAD", "user": "u", "bytes": b, "ts": format!("2024-05-01T10:{m:02}:00Z")}),
        )
    };
    let opts = SigmaOptions::default();
    assert!(run_events(&sum, &opts, &[dl(400, 0), dl(500, 1)]).is_empty());
    assert_eq!(
        run_events(&sum, &opts, &[dl(400, 0), dl(500, 1), dl(200, 2)]).len(),
        1
    );
    assert_eq!(run_events(&avg, &opts, &[dl(400, 0), dl(600, 1)]).len(), 1);
    assert!(run_events(&avg, &opts, &[dl(100, 0), dl(200, 1)]).is_empty());
    // The average of the period, not of one event in it: 0, 0, 0, 0, 600 averages 120.
    let spike: Vec<Event> = [0, 0, 0, 0, 600]
        .iter()
        .enumerate()
        .map(|(i, b)| dl(*b, i as u32))
        .collect();
    assert!(run_events(&avg, &opts, &spike).is_empty());
    // Until the period has moved past the small values: 0 at 10:00, 600 and 700 after 11:00.
    let later = [
        dl(0, 0),
        dl(600, 1),
        event(
            "box",
            json!({"event_type": "DOWNLOAD", "user": "u", "bytes": 700, "ts": "2024-05-01T11:05:00Z"}),
        ),
    ];
    let alerts = run_events(&avg, &opts, &later);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
}

#[test]
fn correlation_keys_are_capped_with_lru_eviction() {
    let text = corr("    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 1h\n    condition:\n        gte: 2");
    let opts = SigmaOptions {
        max_correlation_keys: 100,
        ..Default::default()
    };
    let mut d = SigmaDetector::new(ruleset(&text), &opts);
    let mut alerts = Vec::new();
    d.detect(&okta_fail("keep", "x", 0, 0), &mut alerts);
    for i in 0..1000 {
        d.detect(&okta_fail(&format!("u{i}"), "x", 0, 1), &mut alerts);
        if i % 50 == 0 {
            // Touching `keep` keeps it recent, so it survives eviction.
            d.detect(&okta_fail("keep", "x", 0, 2), &mut alerts);
        }
    }
    assert!(d.correlation_keys() <= 100, "{}", d.correlation_keys());
    assert!(alerts.iter().any(|a| a.entity == "keep"));
}

#[test]
fn rule_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("good.yml"),
        detection("    sel:\n        a: 1", "sel"),
    )
    .unwrap_or_default();
    std::fs::write(
        dir.path().join("bad_mod.yml"),
        "title: t\nid: b1\nlogsource: {product: okta}\ndetection:\n    sel:\n        a|nosuchmod: 1\n    condition: sel\n",
    )
    .unwrap_or_default();
    std::fs::write(
        dir.path().join("bad_yaml.yml"),
        "title: t\ndetection:\n    sel: [\n",
    )
    .unwrap_or_default();
    std::fs::write(dir.path().join("good.tests.yml"), "match: []\n").unwrap_or_default();
    let (set, report) = RuleSet::load(&[dir.path().to_path_buf()], &SigmaOptions::default());
    assert_eq!(report.loaded, 1);
    assert_eq!(set.len(), 1);
    assert_eq!(report.failed.len(), 2, "{:?}", report.failed);
    let m = report
        .failed
        .iter()
        .find(|e| e.path.ends_with("bad_mod.yml"))
        .expect("bad_mod error");
    assert_eq!(m.line, Some(6));
    assert_eq!(m.field.as_deref(), Some("sel.a|nosuchmod"));
    assert!(m.message.contains("unknown modifier `nosuchmod`"));
    let y = report
        .failed
        .iter()
        .find(|e| e.path.ends_with("bad_yaml.yml"))
        .expect("bad_yaml error");
    assert!(y.message.contains("invalid YAML"));
    assert!(y.line.is_some());
    let info: Vec<RuleInfo> = set.rules().collect();
    assert_eq!(info[0].kind, RuleKind::Detection);
    assert_eq!(info[0].product.as_deref(), Some("okta"));
}

#[test]
fn unresolved_correlation_reference_is_an_error() {
    let (docs, errs) = parse_file(
        Path::new("c.yml"),
        "title: c\nid: c1\ncorrelation:\n    type: event_count\n    rules: [missing]\n    group-by: [x]\n    timespan: 1m\n    condition: {gte: 2}\n",
        &Pipelines::default(),
    );
    assert!(errs.is_empty());
    let mut errors = Vec::new();
    let set = RuleSet::from_docs(docs, &mut errors);
    assert_eq!(set.len(), 0);
    assert!(errors[0].message.contains("`missing`"));
}

fn test_normalize(source: &str, raw: Json, line: u64) -> Result<Event, String> {
    if !raw.is_object() {
        return Err("not an object".into());
    }
    let mut e = event(source, raw);
    e.line = Some(line);
    Ok(e)
}

#[test]
fn rule_test_runner() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path();
    std::fs::write(
        p.join("mfa.yml"),
        detection(
            "    sel:\n        eventType: user.mfa.factor.deactivate",
            "sel",
        ),
    )
    .unwrap_or_default();
    std::fs::write(
        p.join("mfa.tests.yml"),
        "match:\n  - {eventType: user.mfa.factor.deactivate}\nno_match:\n  - {eventType: user.mfa.factor.activate}\n  - {eventType: user.mfa.factor.deactivate}\n",
    )
    .unwrap_or_default();
    std::fs::write(p.join("burst.yml"), corr("    type: event_count\n    rules: [okta_fail]\n    group-by: [actor.alternateId]\n    timespan: 5m\n    condition:\n        gte: 2").replace("id: fail1", "id: fail2")).unwrap_or_default();
    std::fs::write(
        p.join("burst.tests.yml"),
        "sequences:\n  - name: two fails\n    alerts: 1\n    events:\n      - {eventType: user.session.start, outcome: {result: FAILURE}, actor: {alternateId: bob}, published: '2024-05-01T10:00:00Z'}\n      - {eventType: user.session.start, outcome: {result: FAILURE}, actor: {alternateId: bob}, published: '2024-05-01T10:00:05Z'}\n",
    )
    .unwrap_or_default();
    std::fs::write(
        p.join("untested.yml"),
        detection("    sel:\n        x: 1", "sel").replace("id: r1", "id: r9"),
    )
    .unwrap_or_default();
    // Tests files that hold no case test nothing, like a missing one.
    for (name, tests) in [
        ("empty_lists", "match: []\nno_match: []\n"),
        ("source_only", "source: okta\n"),
    ] {
        std::fs::write(
            p.join(format!("{name}.yml")),
            detection("    sel:\n        x: 1", "sel").replace("id: r1", &format!("id: {name}")),
        )
        .unwrap_or_default();
        std::fs::write(p.join(format!("{name}.tests.yml")), tests).unwrap_or_default();
    }
    // Cases read as another source than the rule's: the failure says the rule never ran.
    std::fs::write(
        p.join("other_source.yml"),
        detection("    sel:\n        x: 1", "sel").replace("id: r1", "id: r8"),
    )
    .unwrap_or_default();
    std::fs::write(
        p.join("other_source.tests.yml"),
        "source: github\nmatch:\n  - {x: 1}\n",
    )
    .unwrap_or_default();
    let report = run_rule_tests(p, &SigmaOptions::default(), &test_normalize);
    assert_eq!(report.rules_tested, 3);
    assert_eq!(report.cases_passed, 3, "{:?}", report.failures);
    assert_eq!(report.failures.len(), 5, "{:?}", report.failures);
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.rule.ends_with("other_source.yml")
                && f.got.contains("does not run on source `github`")),
        "{:?}",
        report.failures
    );
    // A miss on the rule's own source is a plain one.
    assert!(report
        .failures
        .iter()
        .filter(|f| f.rule.ends_with("mfa.yml"))
        .all(|f| !f.got.contains("does not run")));
    for name in ["empty_lists.yml", "source_only.yml"] {
        assert!(
            report
                .failures
                .iter()
                .any(|f| f.got == "no cases" && f.rule.ends_with(name)),
            "{name}: {:?}",
            report.failures
        );
    }
    assert!(report
        .failures
        .iter()
        .any(|f| f.case == "no_match[1]" && f.rule.ends_with("mfa.yml")));
    assert!(report
        .failures
        .iter()
        .any(|f| f.got == "no tests" && f.rule.ends_with("untested.yml")));
}

#[test]
fn explain_shows_selections_and_condition() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("r.yml");
    std::fs::write(&path, detection("    sel:\n        eventType|startswith: user.mfa\n    filter:\n        actor.alternateId: svc", "sel and not filter"))
        .unwrap_or_default();
    let out = explain(
        &path,
        &event(
            "okta",
            json!({"eventType": "user.mfa.x", "actor": {"alternateId": "bob"}}),
        ),
        &SigmaOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The lines of `sel:` and `filter:`, and of each field.
    assert!(out.contains("selection `sel` (line 6): MATCHED"), "{out}");
    assert!(
        out.contains("field `eventType` (line 7)")
            && out.contains("field `actor.alternateId` (line 9)"),
        "{out}"
    );
    assert!(
        out.contains("selection `filter` (line 8): not matched"),
        "{out}"
    );
    assert!(out.contains("modifiers: startswith"), "{out}");
    assert!(out.contains("result: MATCH"), "{out}");
    let missing = explain(
        &dir.path().join("nope.yml"),
        &event("okta", json!({})),
        &SigmaOptions::default(),
    );
    assert!(missing.is_err());
}

#[test]
fn options_deserialize_with_deny_unknown_fields() {
    let o: SigmaOptions =
        toml::from_str("ignore_logsource = true\npipelines = [\"a.yml\"]").unwrap_or_default();
    assert!(o.ignore_logsource);
    assert_eq!(o.allowed_lateness_seconds, 300);
    assert!(toml::from_str::<SigmaOptions>("bogus = 1").is_err());
}

// ---------------------------------------------------------------------------------------------
// Compiled matching == naive interpreter.

/// Naive evaluation: every rule, no dispatch, no prefilter, every string test as a regex.
fn naive_matches(set: &RuleSet, event: &Event, ignore_logsource: bool) -> Vec<u32> {
    fn str_regex(t: &StrTest) -> regex::Regex {
        match t {
            StrTest::Regex(r) => r.clone(),
            StrTest::Lit { kind, lit, cased } => {
                let l = regex::escape(lit);
                let body = match kind {
                    StrKind::Exact => format!("^{l}$"),
                    StrKind::Prefix => format!("^{l}"),
                    StrKind::Suffix => format!("{l}$"),
                    StrKind::Contains => l,
                };
                regex::Regex::new(&format!("{}{body}", if *cased { "(?s)" } else { "(?si)" }))
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        }
    }
    fn values(fm: &FieldMatch, event: &Event) -> (bool, Vec<Json>) {
        let mut out = Vec::new();
        for p in &fm.paths {
            let r = p.visit_event(event, &mut |l| {
                out.push(l.to_json());
                false
            });
            if r != Found::Absent {
                return (true, out);
            }
        }
        (false, out)
    }
    fn text(v: &Json) -> Option<String> {
        match v {
            Json::String(s) => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            Json::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    fn all_texts(v: &Json, out: &mut Vec<String>) {
        match v {
            Json::Object(m) => m.values().for_each(|x| all_texts(x, out)),
            Json::Array(a) => a.iter().for_each(|x| all_texts(x, out)),
            other => out.extend(text(other)),
        }
    }
    fn test(t: &ValueTest, present: bool, vals: &[Json]) -> bool {
        match t {
            ValueTest::Str(s) => {
                let re = str_regex(s);
                vals.iter().filter_map(text).any(|x| re.is_match(&x))
            }
            ValueTest::Number {
                text: t,
                int,
                value,
            } => vals.iter().any(|v| match v {
                Json::Number(x) => match (
                    x.as_i64().map(i128::from).or(x.as_u64().map(i128::from)),
                    int,
                ) {
                    (Some(a), Some(b)) => a == *b,
                    _ => x.as_f64() == Some(*value),
                },
                other => text(other).as_deref() == Some(t.as_str()),
            }),
            ValueTest::Null => !present || vals.iter().any(Json::is_null),
            ValueTest::Exists(b) => present == *b,
            ValueTest::Cmp(op, n) => vals.iter().any(|v| {
                let f = match v {
                    Json::Number(x) => x.as_f64(),
                    Json::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                f.is_some_and(|f| op.holds(f, *n))
            }),
            ValueTest::CmpInt(op, n) => vals.iter().any(|v| {
                let (i, f) = match v {
                    Json::Number(x) => (
                        x.as_i64()
                            .map(i128::from)
                            .or_else(|| x.as_u64().map(i128::from)),
                        x.as_f64(),
                    ),
                    Json::String(s) => (s.trim().parse().ok(), s.trim().parse().ok()),
                    _ => (None, None),
                };
                match i {
                    Some(i) => op.holds_ord(i, *n),
                    None => f.is_some_and(|f| op.holds(f, *n as f64)),
                }
            }),
            other => panic!("naive interpreter does not cover {other:?}"),
        }
    }
    fn field(fm: &FieldMatch, event: &Event) -> bool {
        let (present, vals) = if fm.field.is_some() {
            values(fm, event)
        } else {
            let mut t = Vec::new();
            all_texts(&perimeter_model::raw_to_serde(&event.raw), &mut t);
            (true, t.into_iter().map(Json::String).collect())
        };
        let r = if fm.all {
            fm.tests.iter().all(|t| test(t, present, &vals))
        } else {
            fm.tests.iter().any(|t| test(t, present, &vals))
        };
        r != fm.negate
    }
    fn cond(c: &Cond, sels: &[super::matcher::Selection], event: &Event) -> bool {
        match c {
            Cond::Sel(i) => sels[*i]
                .alternatives
                .iter()
                .any(|m| m.iter().all(|f| field(f, event))),
            Cond::And(p) => p.iter().all(|x| cond(x, sels, event)),
            Cond::Or(p) => p.iter().any(|x| cond(x, sels, event)),
            Cond::Not(x) => !cond(x, sels, event),
        }
    }
    set.detections
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            ignore_logsource || r.sources.as_ref().is_none_or(|s| s.contains(&event.source))
        })
        .filter(|(_, r)| cond(&r.detection.condition, &r.detection.selections, event))
        .map(|(i, _)| i as u32)
        .collect()
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    /// `user.name` resolves through the ECS view (filled from `actor.alternateId`), `b.c` is
    /// sometimes a nested object and sometimes a key with a dot.
    const FIELDS: &[&str] = &["a", "b.c", "arr.x", "n", "user.name", "actor.alternateId"];
    const ALPHABET: &[&str] = &["ab", "AB", "b", "abc", "x", "a*", "*b", "?b", "", "5", "12"];

    fn value_strategy() -> impl Strategy<Value = String> {
        proptest::sample::select(ALPHABET.to_vec()).prop_map(|s| s.to_string())
    }

    fn field_strategy() -> impl Strategy<Value = String> {
        let mods = proptest::sample::select(vec![
            "",
            "|contains",
            "|startswith",
            "|endswith",
            "|contains|all",
            "|cased",
            "|exists",
            "|gt",
            "|lte",
            "|neq",
            "|contains|neq",
        ]);
        (
            proptest::sample::select(FIELDS.to_vec()),
            mods,
            proptest::collection::vec(value_strategy(), 1..3),
            any::<bool>(),
        )
            .prop_map(|(f, m, vals, null)| match m {
                "|exists" => format!("{f}|exists: {null}"),
                "|gt" | "|lte" => format!("{f}{m}: {}", vals.len() * 3),
                _ if null && m.is_empty() => format!("{f}: null"),
                _ => format!(
                    "{f}{m}: [{}]",
                    vals.iter()
                        .map(|v| format!("'{v}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    fn selection_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::collection::vec(field_strategy(), 1..3).prop_map(|fs| {
                let mut seen = std::collections::HashSet::new();
                fs.into_iter()
                    .filter(|f| seen.insert(f.split(':').next().unwrap_or("").to_string()))
                    .map(|f| format!("        {f}\n"))
                    .collect::<String>()
            }),
            proptest::collection::vec(value_strategy(), 1..3).prop_map(|vs| vs
                .iter()
                .map(|v| format!("        - '{v}'\n"))
                .collect::<String>()),
        ]
    }

    fn cond_strategy() -> impl Strategy<Value = String> {
        let leaf =
            proptest::sample::select(vec!["s0", "s1", "s2", "1 of s*", "all of s*", "1 of them"])
                .prop_map(str::to_string);
        leaf.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} and {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
                inner.prop_map(|a| format!("not {a}")),
            ]
        })
    }

    fn rule_strategy() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(selection_strategy(), 3),
            cond_strategy(),
            proptest::sample::select(vec!["okta", "github"]),
        )
            .prop_map(|(sels, cond, product)| {
                let mut s = format!("title: r\nlogsource:\n    product: {product}\ndetection:\n");
                for (i, sel) in sels.iter().enumerate() {
                    s.push_str(&format!("    s{i}:\n{sel}"));
                }
                s.push_str(&format!("    condition: {cond}\n"));
                s
            })
    }

    fn json_value() -> impl Strategy<Value = Json> {
        prop_oneof![
            value_strategy().prop_map(Json::String),
            (0u64..20).prop_map(Json::from),
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
        ]
    }

    fn event_strategy() -> impl Strategy<Value = (String, Json)> {
        (
            proptest::sample::select(vec!["okta", "github", "slack"]),
            proptest::option::of(json_value()),
            (proptest::option::of(json_value()), any::<bool>()),
            proptest::collection::vec(json_value(), 0..3),
            proptest::option::of(json_value()),
            proptest::option::of(value_strategy()),
        )
            .prop_map(|(src, a, (bc, dotted), arr, n, actor)| {
                let mut m = serde_json::Map::new();
                if let Some(a) = a {
                    m.insert("a".into(), a);
                }
                if let Some(bc) = bc {
                    if dotted {
                        m.insert("b.c".into(), bc);
                    } else {
                        m.insert("b".into(), json!({ "c": bc }));
                    }
                }
                m.insert(
                    "arr".into(),
                    Json::Array(arr.into_iter().map(|x| json!({ "x": x })).collect()),
                );
                if let Some(n) = n {
                    m.insert("n".into(), n);
                }
                if let Some(actor) = actor {
                    m.insert("actor".into(), json!({ "alternateId": actor }));
                }
                (src.to_string(), Json::Object(m))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn compiled_equals_naive(rules in proptest::collection::vec(rule_strategy(), 1..6),
                                 events in proptest::collection::vec(event_strategy(), 1..8),
                                 ignore in any::<bool>()) {
            let text = rules.iter().enumerate().map(|(i, r)| format!("{r}id: r{i}\n")).collect::<Vec<_>>().join("---\n");
            let (docs, errs) = parse_file(Path::new("p.yml"), &text, &Pipelines::default());
            prop_assert!(errs.is_empty(), "{:?}\n{}", errs, text);
            let mut errors = Vec::new();
            let set = RuleSet::from_docs(docs, &mut errors);
            let opts = SigmaOptions { ignore_logsource: ignore, ..Default::default() };
            let mut det = SigmaDetector::new(set.clone(), &opts);
            let mut alerting = SigmaDetector::new(set.clone(), &opts);
            for (src, raw) in events {
                let e = event(&src, raw);
                let fast = det.match_rules(&e).to_vec();
                let slow = naive_matches(&set, &e, ignore);
                prop_assert_eq!(&fast, &slow, "rules:\n{}\nevent: {}", text, e.raw);
                // Alerts carry the matched values found on the matcher's cached field values:
                // the same as the uncached evaluation's.
                let mut alerts = Vec::new();
                alerting.detect(&e, &mut alerts);
                prop_assert_eq!(alerts.len(), slow.len());
                for (a, &r) in alerts.iter().zip(&slow) {
                    let rule = &set.detections[r as usize];
                    prop_assert_eq!(&a.rule_id, rule.meta.key());
                    let mut want = std::collections::BTreeMap::new();
                    for (k, v) in rule.detection.matched_fields(&e) {
                        want.entry(k).or_insert(v);
                    }
                    prop_assert_eq!(&a.matched_fields, &want, "rules:\n{}\nevent: {}", text, e.raw);
                }
            }
        }

        #[test]
        fn loader_never_panics_on_random_text(s in "\\PC{0,200}") {
            let _ = parse_file(Path::new("f.yml"), &s, &Pipelines::default());
        }

        #[test]
        fn loader_never_panics_on_mutated_rules(rule in rule_strategy(), cut in 0usize..400, insert in "[-|:*?\\[\\]{}'\" \n#&!%@`a-z0-9]{0,6}") {
            let mut bytes: Vec<char> = rule.chars().collect();
            let at = cut.min(bytes.len());
            bytes.splice(at..at, insert.chars());
            let mutated: String = bytes.into_iter().collect();
            let _ = parse_file(Path::new("f.yml"), &mutated, &Pipelines::default());
            let _ = parse_file(Path::new("f.yml"), &mutated.replace("contains", "containz"), &Pipelines::default());
        }
    }
}

#[test]
fn public_docs_from_the_spec_parse() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/specs/sigma/tests/schema"
    );
    let Ok(rd) = std::fs::read_dir(dir) else {
        return; // the shared spec folder is not beside the repo in every checkout
    };
    let mut n = 0;
    for sub in rd.flatten() {
        for f in std::fs::read_dir(sub.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(f.path()).unwrap_or_default();
            let (docs, errs) = parse_file(&f.path(), &text, &Pipelines::builtin());
            assert!(errs.is_empty(), "{}: {errs:?}", f.path().display());
            assert_eq!(docs.len(), 1);
            if let RuleDoc::Detection(d) = &docs[0] {
                assert!(!d.detection.selections.is_empty());
            }
            n += 1;
        }
    }
    assert!(n >= 10);
}

fn sigmahq_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigmahq")
}

#[test]
fn sigmahq_style_rules_load_unchanged() {
    // Without a placeholder for `%Administrators%` exactly one rule must be rejected, precisely.
    let (set, report) = RuleSet::load(&[sigmahq_dir()], &SigmaOptions::default());
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let e = &report.failed[0];
    assert!(e.path.ends_with("win_security_admin_rdp_login.yml"));
    assert_eq!(e.line, Some(20));
    assert!(e.message.contains("%Administrators%"), "{e}");
    assert!(set.len() >= 35, "{}", set.len());

    // With a pipeline that defines the placeholder, every rule loads.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pipeline = dir.path().join("corp.toml");
    std::fs::write(
        &pipeline,
        "[placeholders]\nAdministrators = [\"Administrator\", \"adm_*\"]\n",
    )
    .unwrap_or_default();
    let opts = SigmaOptions {
        pipelines: vec![pipeline],
        ..Default::default()
    };
    let (set, report) = RuleSet::load(&[sigmahq_dir()], &opts);
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    // Together they use every modifier of the modifiers appendix (except `neq`, covered above).
    let mut used = std::collections::BTreeSet::new();
    for r in &set.detections {
        for s in &r.detection.selections {
            for fm in s.alternatives.iter().flatten() {
                used.extend(fm.modifiers.iter().cloned());
            }
        }
    }
    for m in [
        "contains",
        "startswith",
        "endswith",
        "all",
        "re",
        "i",
        "cidr",
        "base64offset",
        "wide",
        "utf16le",
        "utf16be",
        "utf16",
        "windash",
        "exists",
        "gte",
        "lt",
        "lte",
        "fieldref",
        "cased",
        "expand",
        "hour",
    ] {
        assert!(used.contains(m), "modifier `{m}` unused; used: {used:?}");
    }

    // Rules fire on the events they were written for.
    let mut det = SigmaDetector::new(set, &opts);
    let mut fired = |source: &str, raw: Json| -> Vec<String> {
        let mut alerts = Vec::new();
        det.detect(&event(source, raw), &mut alerts);
        alerts.into_iter().map(|a| a.title).collect()
    };
    let enc = "JABjAGwAaQBlAG4AdAAgAD0A";
    assert!(fired("windows", json!({"Image": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "CommandLine": format!("powershell.exe /enc {enc}"), "ParentImage": "C:\\Windows\\explorer.exe"}))
        .contains(&"Suspicious Encoded PowerShell Command Line".to_string()));
    assert!(fired(
        "windows",
        json!({"Image": "C:\\Windows\\System32\\whoami.exe"})
    )
    .contains(&"Whoami Utility Execution".to_string()));
    assert!(fired(
        "windows",
        json!({"EventID": 4624, "LogonType": 3, "IpAddress": "203.0.113.9"})
    )
    .contains(&"Successful Network Logon From Outside The Internal Networks".to_string()));
    assert!(fired(
        "windows",
        json!({"EventID": 4624, "LogonType": 3, "IpAddress": "10.2.3.4"})
    )
    .is_empty());
    assert!(fired("windows", json!({"EventID": 4624, "LogonType": 10, "AuthenticationPackageName": "Negotiate", "TargetUserName": "adm_jane"}))
        .contains(&"Admin User Remote Logon".to_string()));
    // echo 'IEX (New-Object Net.WebClient)' | base64 -> the middle of the encoding appears.
    assert!(fired(
        "windows",
        json!({"CommandLine": "powershell -c SUVYIChOZXctT2JqZWN0IE5ldC5XZWJDbGllbnQp"})
    )
    .contains(&"PowerShell Base64 Encoded IEX Cmdlet".to_string()));
    assert!(fired(
        "linux",
        json!({"CommandLine": "echo IyEvYmluL2Jhc2gKY3VybCBldmls | base64 -d | sh"})
    )
    .contains(&"Linux Base64 Encoded Shebang In CLI".to_string()));
    assert!(
        fired("linux", json!({"msg": "unset HISTFILE; export HISTSIZE=0"}))
            .contains(&"Clear Command History Via Shell Builtins".to_string())
    );
    assert!(fired(
        "linux",
        json!({"type": "EXECVE", "a0": "LD_PRELOAD=/tmp/x.so"})
    )
    .contains(&"LD_PRELOAD Environment Variable Set".to_string()));
    assert!(fired(
        "linux",
        json!({"type": "EXECVE", "a0": "ld_preload=/tmp/x.so"})
    )
    .is_empty());
    assert!(fired(
        "aws_cloudtrail",
        json!({"eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging"})
    )
    .contains(&"AWS CloudTrail Important Change".to_string()));
    assert!(fired("aws_cloudtrail", json!({"eventSource": "iam.amazonaws.com", "eventName": "CreateAccessKey", "userIdentity": {"userName": "jane"}, "requestParameters": {"userName": "bob"}}))
        .contains(&"AWS IAM Access Key Created For Another User".to_string()));
    assert!(fired("aws_cloudtrail", json!({"eventSource": "iam.amazonaws.com", "eventName": "CreateAccessKey", "userIdentity": {"userName": "jane"}, "requestParameters": {"userName": "jane"}}))
        .is_empty());
    // SigmaHQ writes `eventtype` (lower case); the built-in pipeline maps it to Okta's `eventType`.
    assert!(fired(
        "okta",
        json!({"eventType": "user.mfa.factor.reset_all", "actor": {"alternateId": "jane"}})
    )
    .contains(&"Okta MFA Reset or Deactivated".to_string()));
    assert!(
        fired(
            "okta",
            json!({"eventType": "user.mfa.factor.reset_all", "actor": {"alternateId": "svc_sync"}})
        )
        .is_empty(),
        "filtered"
    );
    assert!(fired("m365", json!({"Workload": "SecurityComplianceCenter", "Operation": "Suspicious inbox forwarding", "ResultStatus": "success"}))
        .contains(&"Suspicious Inbox Forwarding".to_string()));
    assert!(fired(
        "okta",
        json!({"eventType": "user.session.access_admin_app", "published": "2024-05-01T03:00:00Z"})
    )
    .contains(&"Okta Admin Console Access At Night".to_string()));
}

#[test]
fn sigmahq_style_rules_match_recorded_vendor_events() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/saas-api-pages"
    );
    if !Path::new(fixtures).is_dir() {
        return; // the shared fixtures are not beside the repo in every checkout
    }
    let (set, _) = RuleSet::load(&[sigmahq_dir()], &SigmaOptions::default());
    let mut det = SigmaDetector::new(set, &SigmaOptions::default());
    let read = |p: &str| -> Vec<Json> {
        let text = std::fs::read_to_string(format!("{fixtures}/{p}")).unwrap_or_default();
        serde_json::from_str::<Json>(&text)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    let okta = read("okta/system_log/001.json");
    assert!(!okta.is_empty());
    let mut alerts = Vec::new();
    for raw in okta {
        det.detect(&event("okta", raw), &mut alerts);
    }
    assert!(
        alerts
            .iter()
            .any(|a| a.title == "Okta OAuth2 Authorization Code Request With OpenID Scope"),
        "{alerts:?}"
    );
    let github = read("github/audit/001.json");
    assert_eq!(github.len(), 2);
    let mut alerts = Vec::new();
    for raw in github {
        det.detect(&event("github", raw), &mut alerts);
    }
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a.title == "GitHub Workflow Job Prepared With Repository Secrets")
            .count(),
        2
    );
}

#[test]
fn detector_is_send_and_named_sigma() {
    fn assert_send<T: Send>(_: &T) {}
    let d = SigmaDetector::new(RuleSet::default(), &SigmaOptions::default());
    assert_send(&d);
    assert_eq!(d.name(), "sigma");
}

#[test]
fn value_percentile_flags_rare_values() {
    let rule = "title: login\nid: l1\nname: login\nlogsource: {product: okta}\ndetection:\n    sel: {eventType: user.session.start}\n    condition: sel\n";
    let text = format!(
        "title: rare country\nid: c1\ncorrelation:\n    type: value_percentile\n    rules: [login]\n    group-by: [actor.alternateId]\n    timespan: 1d\n    condition:\n        field: country\n        lte: 10\n---\n{rule}"
    );
    let login = |country: &str, m: u32| {
        event(
            "okta",
            json!({"eventType": "user.session.start", "actor": {"alternateId": "bob"}, "country": country,
                             "published": format!("2024-05-01T10:{m:02}:00Z")}),
        )
    };
    // 19 logins from DE, then one from KP: KP is 5% of bob's logins that day.
    let mut evs: Vec<Event> = (0..19).map(|m| login("DE", m)).collect();
    evs.push(login("KP", 30));
    let alerts = run_events(&text, &SigmaOptions::default(), &evs);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    // Only DE: never rare.
    let de: Vec<Event> = (0..20).map(|m| login("DE", m)).collect();
    assert!(run_events(&text, &SigmaOptions::default(), &de).is_empty());
}

#[test]
fn temporal_with_count_condition() {
    let r = |n: &str, et: &str| {
        format!("title: {n}\nid: {n}\nname: {n}\nlogsource: {{product: okta}}\ndetection:\n    sel: {{eventType: {et}}}\n    condition: sel\n")
    };
    let text = format!(
        "title: two of three\nid: c1\ncorrelation:\n    type: temporal\n    rules: [ra, rb, rc]\n    group-by: [actor.alternateId]\n    timespan: 5m\n    condition:\n        gte: 2\n---\n{}---\n{}---\n{}",
        r("ra", "a"), r("rb", "b"), r("rc", "c")
    );
    let e = |et: &str, m: u32| {
        event(
            "okta",
            json!({"eventType": et, "actor": {"alternateId": "bob"}, "published": format!("2024-05-01T10:{m:02}:00Z")}),
        )
    };
    assert_eq!(
        run_events(&text, &SigmaOptions::default(), &[e("a", 0), e("c", 1)]).len(),
        1
    );
    assert!(run_events(&text, &SigmaOptions::default(), &[e("a", 0), e("a", 1)]).is_empty());
}
