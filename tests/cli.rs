//! The command-line contracts: `normalize`, `detect`, `rules check|test`, `demo`.

use crate::util::{
    assert_stderr_says, fixtures, json_lines, perimeter, perimeter_command, perimeter_in, repo,
    spawn_perimeter, stderr,
};

const MFA_RULE: &str = "title: Okta MFA factor deactivated
id: 6f1c2f3e-4a55-4c7e-9d1a-0a3b5c7d9e11
status: test
logsource:
    product: okta
    service: okta
detection:
    selection:
        eventType: user.mfa.factor.deactivate
    condition: selection
level: high
";

fn okta_event(event_type: &str, user: &str, minute: u32) -> String {
    serde_json::json!({
        "uuid": format!("u-{event_type}-{minute}"),
        "published": format!("2026-11-24T10:{minute:02}:00.000Z"),
        "eventType": event_type,
        "outcome": {"result": "SUCCESS"},
        "actor": {"id": "00u1", "type": "User", "alternateId": user, "displayName": "Al Ice"},
        "client": {"ipAddress": "198.51.100.7", "userAgent": {"rawUserAgent": "Mozilla/5.0"}},
        "displayMessage": "x"
    })
    .to_string()
}

/// `perimeter detect` over Okta records with the rules in `rule`, Sigma rules only.
fn okta_detect_args(rule: &std::path::Path) -> Vec<&str> {
    vec![
        "detect",
        "--rules",
        rule.to_str().unwrap(),
        "--source",
        "okta",
        "--no-ueba",
    ]
}

#[test]
fn detect_reports_every_malformed_line_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("mfa.yml");
    std::fs::write(&rule, MFA_RULE).unwrap();
    let mut input = Vec::new();
    input.extend_from_slice(okta_event("user.session.start", "alice@example.com", 1).as_bytes());
    input.extend_from_slice(b"\nthis is not json\n");
    input.extend_from_slice(b"{\"eventType\": 5, \"published\": [], \"actor\": \"nobody\"}\n");
    input.extend_from_slice(b"{\"eventType\": \"user.session.start\", \"published\": \n");
    input.extend_from_slice(b"{\"huge\": \"");
    input.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    input.extend_from_slice(b"\"}\n");
    input.extend_from_slice(b"{\"eventType\": \"\xff\xfe\"}\n");
    input.extend_from_slice(
        okta_event("user.mfa.factor.deactivate", "alice@example.com", 2).as_bytes(),
    );
    input.push(b'\n');
    let out = perimeter(&okta_detect_args(&rule), Some(&input));
    let err = stderr(&out);
    assert!(out.status.success(), "stderr: {err}");
    let alerts = json_lines(&out);
    assert_eq!(alerts.len(), 1, "alerts: {alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["rule_id"], "6f1c2f3e-4a55-4c7e-9d1a-0a3b5c7d9e11");
    assert_eq!(a["title"], "Okta MFA factor deactivated");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["source"], "okta");
    assert_eq!(a["@timestamp"], "2026-11-24T10:02:00Z");
    assert_eq!(a["entity"], "alice@example.com");
    assert_eq!(a["lines"], serde_json::json!([7]));
    for (line, why) in [
        (2, "invalid JSON"),
        (3, ""),
        (4, "EOF"),
        (5, "longer than"),
        (6, "UTF-8"),
    ] {
        let needle = format!("line {line}: ");
        let row = err.lines().find(|l| l.trim_start().starts_with(&needle));
        let row = row.unwrap_or_else(|| panic!("no report for line {line} in: {err}"));
        assert!(
            row.contains(why),
            "line {line} reason {row:?} lacks {why:?}"
        );
    }
    assert!(err.contains("5 dead-lettered"), "{err}");
}

#[test]
fn every_dead_letter_of_a_long_run_is_written_to_the_dead_letters_file() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("mfa.yml");
    std::fs::write(&rule, MFA_RULE).unwrap();
    // 30 bad lines, a good one between each ten; one bad line holds a secret.
    let mut input = String::new();
    for i in 0..30 {
        if i % 10 == 0 {
            input.push_str(&okta_event("user.session.start", "bob@example.com", 1));
            input.push('\n');
        }
        input.push_str(&format!("not json {i} password=Hunter2xyz\n"));
    }
    let mut args = okta_detect_args(&rule);
    let out = perimeter(&args, Some(input.as_bytes()));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("... and 10 more (--dead-letters FILE writes them all)"),
        "{err}"
    );
    let file = dir.path().join("dead.jsonl");
    args.extend(["--dead-letters", file.to_str().unwrap()]);
    let out = perimeter(&args, Some(input.as_bytes()));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("every dead letter (30) is in {}", file.display())),
        "{err}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<u64> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
            v["line"].as_u64().unwrap()
        })
        .collect();
    let expected: Vec<u64> = (0..30u64).map(|i| i + 2 + i / 10).collect();
    assert_eq!(lines, expected);
    assert!(!text.contains("Hunter2xyz"), "{text}");
    // The input file itself, by its name or a link to it, is refused, and left as it was.
    let input_file = dir.path().join("input.jsonl");
    std::fs::write(&input_file, &input).unwrap();
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&input_file, &link).unwrap();
    for target in [&input_file, &link] {
        let mut args = okta_detect_args(&rule);
        args.extend([
            "--input",
            input_file.to_str().unwrap(),
            "--dead-letters",
            target.to_str().unwrap(),
        ]);
        let out = perimeter(&args, None);
        assert!(!out.status.success());
        assert_stderr_says(&out, "is the input file");
        assert_eq!(std::fs::read_to_string(&input_file).unwrap(), input);
    }
    // So is standard input when it is the input (the pipe's write end, opened, kept the read
    // from ever ending).
    let mut args = okta_detect_args(&rule);
    args.extend(["--dead-letters", "/dev/stdin"]);
    let out = perimeter(&args, Some(input.as_bytes()));
    assert!(!out.status.success());
    assert_stderr_says(&out, "/dev/stdin is the input file");
    // And the file the output goes to: the output would be overwritten.
    let output = std::fs::File::create(dir.path().join("out.jsonl")).unwrap();
    let mut args = okta_detect_args(&rule);
    let out_path = dir.path().join("out.jsonl");
    args.extend(["--input", input_file.to_str().unwrap()]);
    args.extend(["--dead-letters", out_path.to_str().unwrap()]);
    let out = perimeter_command(&repo(), &args)
        .stdout(output)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_stderr_says(&out, "is where the output goes");
}

#[test]
fn an_input_value_without_a_record_is_a_dead_letter_from_a_file_and_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    // (The last line, a CloudTrail digest, holds no record by design: no dead letter.)
    let input = format!(
        "{{}}\n{}\n[]\n{{\"items\": []}}\n{}\n",
        okta_event("user.session.start", "bob@example.com", 1),
        r#"{"awsAccountId": "111122223333", "digestStartTime": "2024-01-01T00:00:00Z", "logFiles": []}"#
    );
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, &input).unwrap();
    let dead = dir.path().join("dead.jsonl");
    let from_file = [
        "normalize",
        "--input",
        file.to_str().unwrap(),
        "--dead-letters",
        dead.to_str().unwrap(),
    ];
    let from_stdin = ["normalize", "--dead-letters", dead.to_str().unwrap()];
    for (args, stdin) in [
        (&from_file[..], None),
        (&from_stdin[..], Some(input.as_bytes())),
    ] {
        let out = perimeter(args, stdin);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert_eq!(json_lines(&out).len(), 1, "{err}");
        assert!(
            err.contains("1 records, 1 events, 0 values masked, 3 dead-lettered"),
            "{args:?}: {err}"
        );
        let letters: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let lines: Vec<u64> = letters
            .iter()
            .map(|d| d["line"].as_u64().unwrap())
            .collect();
        assert_eq!(lines, [1, 3, 4], "{args:?}");
        assert!(
            letters
                .iter()
                .all(|d| d["reason"].as_str().unwrap().contains("holds no record")),
            "{letters:?}"
        );
    }
    // In a file of pretty-printed documents too (an empty array there was no document at all).
    let pretty = dir.path().join("pretty.json");
    std::fs::write(&pretty, "{\n  \"a\": 1\n}\n[\n]\n").unwrap();
    let out = perimeter(
        &[
            "normalize",
            "--source",
            "json",
            "--input",
            pretty.to_str().unwrap(),
        ],
        None,
    );
    assert_stderr_says(
        &out,
        "1 records, 1 events, 0 values masked, 1 dead-lettered",
    );
    assert_stderr_says(&out, "line 4: holds no record");
}

#[test]
fn rules_check_json_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yml"), MFA_RULE).unwrap();
    let bad = MFA_RULE
        .replace("eventType: user", "eventType|containz: user")
        .replace("6f1c", "7f1c");
    std::fs::write(dir.path().join("bad.yml"), bad).unwrap();
    let out = perimeter(
        &[
            "rules",
            "check",
            dir.path().to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = &json_lines(&out)[0];
    assert_eq!(report["loaded"], 1);
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["path"].as_str().unwrap().ends_with("bad.yml"));
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("containz"), "{error}");
    assert_eq!(failed[0]["line"], 9, "{error}");
}

#[test]
fn rule_pack_loads_and_its_tests_pass() {
    let out = perimeter(
        &["rules", "check", "detection-rules", "--format", "json"],
        None,
    );
    let report = &json_lines(&out)[0];
    assert_eq!(report["failed"], serde_json::json!([]), "{report}");
    // Rules for vendors without a normalizer (salesforce, zendesk, ...) are no misspellings.
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
    assert!(report["loaded"].as_u64().unwrap() >= 80, "{report}");
    let out = perimeter(&["rules", "test", "detection-rules"], None);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn normalize_recorded_pages_of_every_builtin_vendor() {
    let pages = [
        ("okta/system_log/001.json", "okta"),
        ("github/audit/001.json", "github"),
        ("gsuite/activities/001.json", "google_workspace"),
        ("slack/audit/001.json", "slack"),
        ("onepassword/events_signinattempts/001.json", "onepassword"),
        ("onepassword/events_itemusages/001.json", "onepassword"),
        ("onepassword/events_audit/001.json", "onepassword"),
    ];
    for (page, source) in pages {
        let path = fixtures().join(page);
        let out = perimeter(
            &[
                "normalize",
                "--source",
                "auto",
                "--input",
                path.to_str().unwrap(),
            ],
            None,
        );
        assert!(out.status.success(), "{page}: {}", stderr(&out));
        let events = json_lines(&out);
        assert!(!events.is_empty(), "{page}: no events; {}", stderr(&out));
        for e in &events {
            assert_eq!(e["event"]["module"], source, "{page}: {e}");
            let ts = e["@timestamp"].as_str().unwrap_or_default();
            assert!(
                chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
                "{page}: @timestamp {ts:?}"
            );
            assert!(e["raw"].is_object(), "{page}: raw kept");
        }
    }
}

#[test]
fn demo_finds_the_attack_and_stores_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = perimeter(
        &["demo", "--no-serve", "--data-dir", data.to_str().unwrap()],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let demo_output = text.to_string();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("2026-")).collect();
    assert!(rows.len() >= 10, "only {} alert rows:\n{text}", rows.len());
    for story in ["okta", "github", "google_workspace", "aws_cloudtrail"] {
        assert!(
            rows.iter().any(|r| r.contains(story)),
            "no {story} alert:\n{text}"
        );
    }
    assert!(text.contains("Parquet files"), "{text}");
    let parquet_files = walk(&data)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert!(
        parquet_files > 0,
        "no parquet files under {}",
        data.display()
    );
    assert!(repo().join("demo/events.jsonl").exists());

    // What the demo stored, from the terminal, as its closing lines say.
    assert!(
        text.contains("perimeter alerts --data-dir"),
        "no terminal hint:\n{text}"
    );
    let d = data.to_str().unwrap();
    let out = perimeter(&["alerts", "--data-dir", d, "--severity", "high"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let alerts = json_lines(&out);
    assert!(!alerts.is_empty(), "no high alerts read back");
    for a in &alerts {
        let sev = a["alert"]["severity"].as_str().unwrap_or_default();
        assert!(sev == "high" || sev == "critical", "{a}");
    }
    assert_stderr_says(&out, "reading tenant demo");
    assert!(!stderr(&out).contains("more match"), "{}", stderr(&out));
    // Cut at --limit: said on stderr (a script piping them on would miss the rest).
    let out = perimeter(&["alerts", "--data-dir", d, "--limit", "2"], None);
    assert_eq!(json_lines(&out).len(), 2);
    assert_stderr_says(&out, "more match than --limit 2");
    // The API's alert filters, from the terminal: source, rule, time (dates and relative), sort.
    let filtered = |extra: &[&str]| {
        let mut args = vec!["alerts", "--data-dir", d, "--limit", "1000"];
        args.extend_from_slice(extra);
        let out = perimeter(&args, None);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        json_lines(&out)
    };
    let okta = filtered(&[
        "--source",
        "okta",
        "--from",
        "2026-11-24",
        "--sort",
        "oldest",
    ]);
    assert!(!okta.is_empty(), "no okta alerts");
    assert!(
        okta.iter().all(|a| a["alert"]["source"] == "okta"),
        "{okta:?}"
    );
    let times: Vec<&str> = okta
        .iter()
        .map(|a| a["alert"]["@timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let rule = okta[0]["alert"]["rule_id"].as_str().unwrap();
    let of_rule = filtered(&["--rule", rule]);
    assert!(!of_rule.is_empty() && of_rule.iter().all(|a| a["alert"]["rule_id"] == rule));
    assert!(of_rule.len() < filtered(&[]).len());
    // Filter values whatever their case, as the API takes them.
    assert_eq!(
        filtered(&["--status", "OPEN"]).len(),
        filtered(&["--status", "open"]).len()
    );
    assert!(
        filtered(&["--from", "now-1h"]).is_empty(),
        "the demo day is in the past"
    );
    assert!(filtered(&["--to", "2026-11-24"]).is_empty());
    // The queue at a glance: counts that agree with the listing.
    let summary = |extra: &[&str]| {
        let mut args = vec!["alerts", "--data-dir", d, "--summary"];
        args.extend_from_slice(extra);
        let out = perimeter(&args, None);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        json_lines(&out).remove(0)
    };
    let all = summary(&[]);
    assert_eq!(all["total"], filtered(&[]).len(), "{all}");
    let of_okta = summary(&["--source", "okta"]);
    assert_eq!(of_okta["total"], filtered(&["--source", "okta"]).len());
    let busiest = &of_okta["by_rule"][0];
    assert_eq!(
        busiest["count"],
        filtered(&["--rule", busiest["rule_id"].as_str().unwrap()]).len()
    );
    let table = perimeter(
        &["alerts", "--data-dir", d, "--summary", "--format", "table"],
        None,
    );
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("alerts (2026-11-24") && text.contains("by severity:"),
        "{text}"
    );
    let out = perimeter(&["alerts", "--data-dir", d, "--from", "last tuesday"], None);
    assert!(!out.status.success());
    assert_stderr_says(&out, "now-24h");
    // A query may start with `-` (exclusion), not taken for a flag.
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--limit",
            "5",
            "-event.outcome:success",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let excluded = json_lines(&out);
    assert_eq!(excluded.len(), 5);
    assert!(excluded.iter().all(|e| e["event"]["outcome"] != "success"));
    // Past one page (1000) in the data directory too.
    let out = perimeter(&["search", "--data-dir", d, "--limit", "2000", "*"], None);
    let ids: std::collections::HashSet<String> = json_lines(&out)
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2000);
    let out = perimeter(&["search", "--data-dir", d, "event.module:okta"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&out);
    assert_eq!(events.len(), 20, "the default limit of okta events");
    assert!(events.iter().all(|e| e["event"]["module"] == "okta"));
    // For people: aligned columns, one row per result (JSON stays the default off a terminal).
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--format",
            "table",
            "--limit",
            "5",
            "event.module:okta",
        ],
        None,
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(
        lines[0].starts_with("TIME (UTC)") && lines[0].contains("ACTION"),
        "{table}"
    );
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.starts_with("2026-11-24 ") && l.contains(" okta ")),
        "{table}"
    );
    // Counts per interval: as many as the search finds, in buckets starting on the hour.
    let okta_events = json_lines(&perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--limit",
            "5000",
            "event.module:okta",
        ],
        None,
    ))
    .len();
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--histogram",
            "--interval",
            "1h",
            "event.module:okta",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let histogram: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(histogram["total"], okta_events, "{histogram}");
    assert_eq!(histogram["interval_seconds"], 3600);
    let buckets = histogram["buckets"].as_array().unwrap();
    let summed: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(summed as usize, okta_events);
    assert!(buckets
        .iter()
        .all(|b| b["start"].as_str().unwrap().ends_with(":00:00Z")));
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--format",
            "table",
            // Right before the query: a flag, so the query is not taken for its value.
            "--histogram",
            "*",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("2629 events, "), "{text}");
    assert!(
        text.lines().skip(1).any(|l| l.ends_with(&"#".repeat(50))),
        "{text}"
    );
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--histogram",
            "--interval",
            "1s",
            "*",
        ],
        None,
    );
    assert!(!out.status.success());
    assert_stderr_says(&out, "at most 1000");
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--histogram",
            "--interval",
            "hourly",
            "*",
        ],
        None,
    );
    assert!(!out.status.success());
    assert_stderr_says(&out, "not a duration");
    let out = perimeter(&["search", "--data-dir", d, "--interval", "1h", "*"], None);
    assert!(!out.status.success(), "--interval needs --histogram");
    // The demo's closing hint names a real evidence event: the command works as printed.
    let hint = demo_output
        .lines()
        .find_map(|l| l.trim().strip_prefix("perimeter context "))
        .unwrap_or_else(|| panic!("no context hint:\n{demo_output}"));
    let hinted_id = hint.split_whitespace().next().unwrap();
    let out = perimeter(&["context", hinted_id, "--data-dir", d], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json_lines(&out)
        .iter()
        .any(|e| e["event"]["id"] == hinted_id));
    // An event's context: its user's events around it, the event among them, oldest first.
    let reset = json_lines(&perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--limit",
            "1",
            "event.action:user.mfa.factor.deactivate",
        ],
        None,
    ));
    let reset_id = reset[0]["event"]["id"].as_str().unwrap();
    let user = reset[0]["user"]["name"].as_str().unwrap();
    let out = perimeter(
        &[
            "context",
            reset_id,
            "--data-dir",
            d,
            "--window",
            "30m",
            "--limit",
            "50",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let around = json_lines(&out);
    assert!(around.len() > 5, "{around:?}");
    assert!(around.iter().any(|e| e["event"]["id"] == reset_id));
    let related = |e: &serde_json::Value| {
        e["related"]["user"]
            .as_array()
            .is_some_and(|u| u.iter().any(|v| v == user))
    };
    assert!(around.iter().all(related), "{around:?}");
    let times: Vec<&str> = around
        .iter()
        .map(|e| e["@timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_stderr_says(&out, &format!("events of user {user}"));
    let out = perimeter(&["context", "0000", "--data-dir", d], None);
    assert!(!out.status.success());
    assert_stderr_says(&out, "no event `0000`");
    // The busiest values of a field: each count is what searching for the value finds.
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--top",
            "user.name",
            "--limit",
            "3",
            "event.outcome:failure",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let top: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(top["exact"], true, "{top}");
    let values = top["values"].as_array().unwrap();
    assert_eq!(values.len(), 3, "{top}");
    for v in values {
        let name = v["value"].as_str().unwrap();
        let found = json_lines(&perimeter(
            &[
                "search",
                "--data-dir",
                d,
                "--limit",
                "5000",
                &format!("event.outcome:failure AND user.name:\"{name}\""),
            ],
            None,
        ));
        let exactly = found
            .iter()
            .filter(|e| {
                e["user"]["name"].as_str().map(str::to_lowercase) == Some(name.to_lowercase())
            })
            .count();
        assert_eq!(v["count"].as_u64(), Some(exactly as u64), "{name}: {top}");
    }
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--format",
            "table",
            "--top",
            "event.module",
            "*",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with("event.module: 2629 events match"),
        "{text}"
    );
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.ends_with(&"#".repeat(50))),
        "{text}"
    );
    let out = perimeter(&["search", "--data-dir", d, "--top", "actor.id", "*"], None);
    assert!(!out.status.success());
    assert_stderr_says(&out, "user.name");
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--top",
            "user.name",
            "--histogram",
            "*",
        ],
        None,
    );
    assert!(
        !out.status.success(),
        "--top and --histogram are two answers"
    );

    // Each source's newest event is the newest its search finds; `--silent-for` keeps the
    // quiet ones and says so in the exit code (the demo day is in the past: all are quiet).
    let out = perimeter(&["sources", "--data-dir", d], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let sources = json_lines(&out);
    assert!(sources.len() >= 8, "{sources:?}");
    for s in &sources {
        let name = s["source"].as_str().unwrap();
        let newest = json_lines(&perimeter(
            &[
                "search",
                "--data-dir",
                d,
                "--limit",
                "1",
                &format!("event.module:{name}"),
            ],
            None,
        ));
        let newest_time = newest[0]["@timestamp"].as_str().unwrap();
        assert_eq!(
            s["newest_event"].as_str().unwrap(),
            format!("{}Z", &newest_time[..19]),
            "{name}"
        );
        assert!(s["silent_seconds"].as_i64().unwrap() > 86_400, "{s}");
        assert_eq!(s["events_24h"], 0, "{s}");
    }
    let quiet = perimeter(&["sources", "--data-dir", d, "--silent-for", "1h"], None);
    assert_eq!(quiet.status.code(), Some(1), "{}", stderr(&quiet));
    assert_eq!(json_lines(&quiet).len(), sources.len());
    let none = perimeter(
        &["sources", "--data-dir", d, "--silent-for", "100000d"],
        None,
    );
    assert!(none.status.success(), "{}", stderr(&none));
    assert!(json_lines(&none).is_empty());

    // `--limit` bounds what is printed (it was ignored); the exit code is of all of them.
    let few = perimeter(
        &[
            "sources",
            "--data-dir",
            d,
            "--silent-for",
            "1h",
            "--limit",
            "2",
        ],
        None,
    );
    assert_eq!(few.status.code(), Some(1), "{}", stderr(&few));
    let names = |items: &[serde_json::Value]| -> Vec<String> {
        items.iter().map(|s| s["source"].to_string()).collect()
    };
    assert_eq!(names(&json_lines(&few)), names(&sources[..2]));
    assert!(stderr(&few).contains(&format!("{} more source(s)", sources.len() - 2)));

    let out = perimeter(&["alerts", "--data-dir", d, "--format", "table"], None);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.starts_with("TIME (UTC)") && table.contains("STATUS"),
        "{table}"
    );
    assert!(
        table.lines().skip(1).all(|l| l.contains(" open ")),
        "{table}"
    );
    // A directory without data is an error that says where to look, and is not created.
    let missing = dir.path().join("nothing-here");
    let out = perimeter(
        &["search", "--data-dir", missing.to_str().unwrap(), "x"],
        None,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no Perimeter data in") && stderr(&out).contains("--data-dir"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists());
}

#[test]
fn a_source_without_a_normalizer_is_read_as_plain_json_and_said_so() {
    let line = b"{\"who\":\"alice\"}\n";
    let out = perimeter(&["normalize", "--source", "okat"], Some(line));
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&out);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"]["module"], "okat");
    assert_eq!(events[0]["raw"]["who"], "alice");
    assert_stderr_says(&out, "no normalizer for source `okat`");
    // A name near a known one is most likely a typo: no Okta rule would see these records.
    assert_stderr_says(&out, "did you mean `okta`?");
    // A vendor only rules know (no normalizer of its own) is nothing like a known name.
    let out = perimeter(&["normalize", "--source", "hubspot"], Some(line));
    assert!(stderr(&out).contains("no normalizer for source `hubspot`"));
    assert!(!stderr(&out).contains("did you mean"), "{}", stderr(&out));
    // Known names and `auto` are not remarked on.
    for source in ["okta", "json", "auto", "zoom", "auth0"] {
        let out = perimeter(&["normalize", "--source", source], Some(line));
        assert!(
            !stderr(&out).contains("no normalizer"),
            "{source}: {}",
            stderr(&out)
        );
    }
}

/// A key repeated in a record has its last value (at its first position) for every stage: the
/// ECS view, the output record, the event id (that of the record written with the last value
/// only) and a Perimeter envelope's `source`.
#[test]
fn a_repeated_key_has_its_last_value_in_normalized_events() {
    let repeated =
        b"{\"source\":\"json\",\"event\":{\"who\":\"alice\",\"n\":1,\"who\":\"mallory\"}}\n\
        {\"source\":\"github\",\"event\":{\"who\":\"bob\"},\"source\":\"json\"}\n";
    let resolved = b"{\"source\":\"json\",\"event\":{\"who\":\"mallory\",\"n\":1}}\n\
        {\"source\":\"json\",\"event\":{\"who\":\"bob\"}}\n";
    let normalized = |input: &[u8]| {
        let out = perimeter(&["normalize", "--source", "auto"], Some(input));
        assert!(out.status.success(), "{}", stderr(&out));
        (json_lines(&out), stderr(&out))
    };
    let ((events, said), (expected, said_resolved)) = (normalized(repeated), normalized(resolved));
    // Counted in the summary: a record crafted this way does not pass unseen.
    assert!(said.contains("2 inputs repeated a key"), "{said}");
    assert!(!said_resolved.contains("repeated a key"), "{said_resolved}");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0]["raw"],
        serde_json::json!({"who": "mallory", "n": 1})
    );
    assert_eq!(events[1]["event"]["module"], "json", "{}", events[1]);
    for (event, same) in events.iter().zip(&expected) {
        assert_eq!(event["event"]["id"], same["event"]["id"]);
    }
}

#[test]
fn the_demo_api_lists_the_rules_the_demo_ran_from_any_directory() {
    // Started outside the repository: no ./detection-rules, so the demo takes the source
    // tree's rules; the API must list those, not an empty set.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let (demo, url, token) = crate::util::serving_demo(&data, dir.path());
    // The reader of the demo's stdout is gone now (as after `perimeter demo | head`): the demo
    // must keep serving whether its last lines were written before or after that.
    // Where it says the data landed, the alerts are too while it serves (their Parquet files
    // are otherwise only brought up to date every `alert_parquet_export_seconds`).
    let alert_files = walk(&data.join("parquet/alerts"))
        .into_iter()
        .filter(|p| p.ends_with("alerts.parquet"))
        .count();
    assert!(
        alert_files > 0,
        "no alert parquet files while the demo serves"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let body: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{url}/rules"))
        .bearer_auth(&token)
        .send()
        .and_then(|r| r.json())
        .unwrap();
    // More than one page (1000) through the server: `--limit` is what is printed.
    let server = url.trim_end_matches("/api/v1");
    let out = perimeter(
        &[
            "search", "*", "--server", server, "--token", &token, "--limit", "1500",
        ],
        None,
    );
    // Beside the serving demo: the terminal reads its data directory directly (read-only,
    // no lock), and a second demo may not wipe it.
    let local = perimeter(
        &[
            "alerts",
            "--data-dir",
            data.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    let second = perimeter(
        &["demo", "--no-serve", "--data-dir", data.to_str().unwrap()],
        None,
    );
    // The server's histogram is the data directory's.
    let histogram_args = [
        "search",
        "--histogram",
        "--interval",
        "30m",
        "event.outcome:failure",
    ];
    let served_histogram = perimeter(
        &[
            &histogram_args[..],
            &["--server", server, "--token", &token],
        ]
        .concat(),
        None,
    );
    let local_histogram = perimeter(
        &[&histogram_args[..], &["--data-dir", data.to_str().unwrap()]].concat(),
        None,
    );
    // And its top values.
    let top_args = ["search", "--top", "source.ip", "event.outcome:failure"];
    let served_top = perimeter(
        &[&top_args[..], &["--server", server, "--token", &token]].concat(),
        None,
    );
    let local_top = perimeter(
        &[&top_args[..], &["--data-dir", data.to_str().unwrap()]].concat(),
        None,
    );
    let served_sources = perimeter(&["sources", "--server", server, "--token", &token], None);
    // A tenant with no source at all is as silent as can be (QA: a monitor said green).
    let cfg = dir.path().join("nobody.toml");
    std::fs::write(&cfg, format!("data_dir = {data:?}\n")).unwrap();
    let nobody = perimeter(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "tokens",
            "create",
            "--tenant",
            "nobody",
            "--role",
            "viewer",
        ],
        None,
    );
    assert!(nobody.status.success(), "{}", stderr(&nobody));
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
    let silent = perimeter(
        &[
            "sources",
            "--server",
            server,
            "--token",
            &nobody,
            "--silent-for",
            "1h",
        ],
        None,
    );
    assert_eq!(silent.status.code(), Some(1), "{}", stderr(&silent));
    assert!(stderr(&silent).contains("no source has stored an event"));
    let local_sources = perimeter(&["sources", "--data-dir", data.to_str().unwrap()], None);
    let still_served = reqwest::blocking::Client::new()
        .get(format!("{url}/alerts"))
        .bearer_auth(&token)
        .send()
        .map(|r| r.status().as_u16());
    drop(demo);
    assert!(local.status.success(), "{}", stderr(&local));
    assert!(json_lines(&local).len() >= 10, "{}", stderr(&local));
    assert!(!second.status.success());
    assert_stderr_says(&second, "in use by another Perimeter process");
    assert_eq!(still_served.unwrap(), 200);
    assert!(
        data.join("index").is_dir(),
        "the serving demo's data was wiped"
    );
    // Nor does a demo replace a directory holding data it did not write.
    let foreign = perimeter(
        &[
            "demo",
            "--no-serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(!foreign.status.success());
    assert_stderr_says(&foreign, "did not write");
    assert!(data.join("index").is_dir());
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: std::collections::HashSet<String> = json_lines(&out)
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1500, "distinct events over two pages");
    assert!(
        served_histogram.status.success(),
        "{}",
        stderr(&served_histogram)
    );
    let served: serde_json::Value = serde_json::from_slice(&served_histogram.stdout).unwrap();
    let local: serde_json::Value = serde_json::from_slice(&local_histogram.stdout).unwrap();
    assert_eq!(served, local);
    assert!(served["total"].as_u64().unwrap() > 40, "{served}");
    assert!(served_top.status.success(), "{}", stderr(&served_top));
    let served: serde_json::Value = serde_json::from_slice(&served_top.stdout).unwrap();
    let local: serde_json::Value = serde_json::from_slice(&local_top.stdout).unwrap();
    assert_eq!(served, local);
    assert!(!served["values"].as_array().unwrap().is_empty(), "{served}");
    let without_age = |out: &std::process::Output| -> Vec<serde_json::Value> {
        json_lines(out)
            .into_iter()
            .map(|mut s| {
                s.as_object_mut().unwrap().remove("silent_seconds");
                s
            })
            .collect()
    };
    assert!(
        served_sources.status.success(),
        "{}",
        stderr(&served_sources)
    );
    assert_eq!(without_age(&served_sources), without_age(&local_sources));
    assert!(without_age(&served_sources).len() >= 8);
    let rules = body["rules"].as_array().expect("rules list");
    assert!(rules.len() >= 100, "{} rules listed", rules.len());
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    use std::io::{BufRead, BufReader};
    // ~15k events out: far more than a pipe holds, so writing hits the closed pipe.
    let demo = std::fs::read_to_string(repo().join("demo/events.jsonl")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.jsonl");
    std::fs::write(&input, demo.repeat(6)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(["normalize", "--source", "auto", "--input"])
        .arg(&input)
        .env_remove("PERIMETER_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The read end is closed here, as `| head -1` does.
    let out = child.wait_with_output().unwrap();
    assert!(first.starts_with('{'), "{first:?}");
    let err = stderr(&out);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("error") && !err.contains("panicked"), "{err}");
}

#[test]
fn ctrl_c_ends_a_run_waiting_on_a_quiet_input_and_normalize_output_is_seen_live() {
    use std::io::{BufRead, BufReader, Write};
    let demo = std::fs::read_to_string(repo().join("demo/events.jsonl")).unwrap();
    let first = format!("{}\n", demo.lines().next().unwrap());
    for args in [
        &["normalize"][..],
        &["detect", "--no-ueba", "--rules", "detection-rules"][..],
    ] {
        let mut child = spawn_perimeter(args, std::process::Stdio::piped());
        // One record, then the writer stays: the run waits for input that does not come.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(first.as_bytes()).unwrap();
        stdin.flush().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).split(b'\n') {
                let _ = tx.send(());
                lines.push(line.unwrap());
            }
            lines
        });
        if args[0] == "normalize" {
            // Its event is printed while the input is still open (it sat in a buffer).
            rx.recv_timeout(std::time::Duration::from_secs(60))
                .expect("the normalized event was not printed while the input stayed open");
        } else {
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        // SAFETY: signalling our own child, still running (not waited for yet).
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{args:?} waited on its input after SIGINT");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{args:?}: {}", stderr(&out));
        assert_stderr_says(&out, "interrupted while waiting for input");
        for line in reader.join().unwrap() {
            serde_json::from_slice::<serde_json::Value>(&line).expect("a whole JSON line");
        }
    }
}

#[test]
fn ctrl_c_ends_normalize_and_detect_with_whole_lines_and_their_summary() {
    use std::io::{BufRead, BufReader, Write};
    let demo = std::fs::read_to_string(repo().join("demo/events.jsonl")).unwrap();
    for args in [
        &["normalize"][..],
        &["detect", "--no-ueba", "--rules", "detection-rules"][..],
    ] {
        let mut child = spawn_perimeter(args, std::process::Stdio::piped());
        // An input that never ends by itself: only the interrupt can end the run.
        let mut stdin = child.stdin.take().unwrap();
        let demo = demo.clone();
        std::thread::spawn(move || while stdin.write_all(demo.as_bytes()).is_ok() {});
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            let mut all = Vec::new();
            let mut told = false;
            loop {
                let mut line = Vec::new();
                match out.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => all.push(line),
                }
                if !told {
                    told = tx.send(()).is_ok();
                }
            }
            all
        });
        rx.recv_timeout(std::time::Duration::from_secs(120))
            .expect("no output line");
        // SAFETY: signalling our own child, still running (not waited for yet).
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{args:?} went on after SIGINT");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let lines = reader.join().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(130), "{args:?}: {err}");
        assert!(
            err.contains(&format!("perimeter {}: ", args[0]))
                && err.contains(" dead-lettered")
                && err.contains("interrupted after line "),
            "{args:?}: {err}"
        );
        assert!(!lines.is_empty());
        for line in &lines {
            assert!(line.ends_with(b"\n"), "{args:?}: a cut-off last line");
            serde_json::from_slice::<serde_json::Value>(line).expect("a whole JSON line");
        }
    }
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn rules_explain_says_which_selection_matched_and_masks_values() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("mfa.yml");
    let text = MFA_RULE
        .replace("    condition: selection", "    filter:\n        actor.alternateId|endswith: '@svc.example'\n    condition: selection and not filter")
        .replace("eventType: user.mfa.factor.deactivate", "eventType: user.mfa.factor.deactivate\n        debugContext.debugData.url|contains: token\n        debugContext.debugData.password|startswith: pw");
    std::fs::write(&rule, text).unwrap();
    let event = dir.path().join("event.json");
    let mut raw: serde_json::Value = serde_json::from_str(&okta_event(
        "user.mfa.factor.deactivate",
        "alice@example.com",
        3,
    ))
    .unwrap();
    raw["debugContext"] = serde_json::json!({"debugData": {"url": "/x?token=ghp_R4nd0mT0k3nV4lu3F0rP3r1m3t3rT3st1ngX",
        "password": "pw9x"}});
    std::fs::write(&event, serde_json::to_string_pretty(&raw).unwrap()).unwrap();
    let out = perimeter(
        &[
            "rules",
            "explain",
            rule.to_str().unwrap(),
            "--event",
            event.to_str().unwrap(),
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("selection `selection` (line 8): MATCHED"),
        "{text}"
    );
    assert!(
        text.contains("selection `filter` (line 12): not matched"),
        "{text}"
    );
    assert!(text.contains("result: MATCH"), "{text}");
    // A value under a secret key, too short for any pattern, is shown as the masked event has
    // it.
    assert!(
        !text.contains("pw9x") && text.contains("event value: \"[REDACTED:key]\""),
        "{text}"
    );
    // A near miss explains why it does not match.
    raw["eventType"] = "user.mfa.factor.activate".into();
    std::fs::write(&event, raw.to_string()).unwrap();
    let out = perimeter(
        &[
            "rules",
            "explain",
            rule.to_str().unwrap(),
            "--event",
            event.to_str().unwrap(),
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("result: NO MATCH") || text.contains("=> false"),
        "{text}"
    );
    assert!(!text.contains("ghp_R4nd0m"), "{text}");
    // An event cut mid-emoji (half of a surrogate pair escaped alone) is explained too.
    raw["eventType"] = "user.mfa.factor.deactivate".into();
    raw["displayMessage"] = "cut LONE_HALF".into();
    std::fs::write(&event, raw.to_string().replace("LONE_HALF", "\\ud83d")).unwrap();
    let out = perimeter(
        &[
            "rules",
            "explain",
            rule.to_str().unwrap(),
            "--event",
            event.to_str().unwrap(),
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("result: MATCH"), "{text}");
}

/// A Google Workspace activity of several events is explained event by event, as `detect`
/// splits it (QA: refused, advising an internal function).
#[test]
fn rules_explain_takes_an_activity_of_several_events_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("activity.json");
    std::fs::write(
        &event,
        r#"{"kind":"admin#reports#activity","id":{"time":"2026-11-24T09:30:00.000Z","uniqueQualifier":"-44","applicationName":"admin","customerId":"C03az79cb"},"actor":{"callerType":"USER","email":"nina@acme.example","profileId":"1"},"ipAddress":"198.51.100.10","events":[{"type":"SECURITY_SETTINGS","name":"ENFORCE_STRONG_AUTHENTICATION","parameters":[{"name":"NEW_VALUE","value":"false"},{"name":"OLD_VALUE","value":"true"}]},{"type":"SECURITY_SETTINGS","name":"ALLOW_STRONG_AUTHENTICATION_TRUSTED_DEVICES","parameters":[{"name":"NEW_VALUE","value":"false"},{"name":"OLD_VALUE","value":"true"}]}]}"#,
    )
    .unwrap();
    let rule = repo().join("detection-rules/google_workspace/gws_2sv_enforcement_disabled.yml");
    let out = perimeter(
        &[
            "rules",
            "explain",
            rule.to_str().unwrap(),
            "--event",
            event.to_str().unwrap(),
            "--source",
            "google_workspace",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let second = text.find("record 2 of the input:").expect("two records");
    assert!(text.starts_with("record 1 of the input:"), "{text}");
    assert!(text[..second].contains("result: MATCH"), "{text}");
    assert!(text[second..].contains("result: no match"), "{text}");
}

#[test]
fn rules_explain_runs_a_rule_of_another_source_with_ignore_logsource() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("mfa.yml");
    std::fs::write(&rule, MFA_RULE).unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        okta_event("user.mfa.factor.deactivate", "alice@example.com", 3),
    )
    .unwrap();
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "rules",
            "explain",
            rule.to_str().unwrap(),
            "--event",
            event.to_str().unwrap(),
            "--source",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = perimeter(&args, None);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let text = explain(&[]);
    assert!(
        text.contains("does NOT run (--ignore-logsource runs it anyway)"),
        "{text}"
    );
    let text = explain(&["--ignore-logsource"]);
    assert!(text.contains("event source `json`: runs"), "{text}");
    assert!(text.contains("result: MATCH"), "{text}");
}

#[test]
fn gzipped_input_is_read_like_plain_input() {
    use std::io::Write;
    let mut plain = Vec::new();
    for (i, kind) in ["user.session.start", "user.mfa.factor.deactivate"]
        .iter()
        .enumerate()
    {
        plain.extend_from_slice(okta_event(kind, "alice@example.com", i as u32).as_bytes());
        plain.push(b'\n');
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("okta.jsonl.gz");
    std::fs::write(&file, &gz).unwrap();
    // `ingested` is the time of the run: compare the events without it.
    let events = |out: &std::process::Output| -> Vec<serde_json::Value> {
        assert!(out.status.success(), "{}", stderr(out));
        json_lines(out)
            .into_iter()
            .map(|mut e| {
                e["event"]["ingested"] = serde_json::Value::Null;
                e
            })
            .collect()
    };
    let expected = events(&perimeter(&["normalize", "--source", "okta"], Some(&plain)));
    assert_eq!(expected.len(), 2);
    let normalize_file = || {
        perimeter(
            &[
                "normalize",
                "--source",
                "okta",
                "--input",
                file.to_str().unwrap(),
            ],
            None,
        )
    };
    assert_eq!(events(&normalize_file()), expected);
    let from_stdin = perimeter(&["normalize", "--source", "okta"], Some(&gz));
    assert_eq!(events(&from_stdin), expected);
    // A cut-off download is an error naming the input, not a silently shorter result.
    std::fs::write(&file, &gz[..gz.len() - 8]).unwrap();
    let cut = normalize_file();
    assert!(!cut.status.success());
    assert_stderr_says(&cut, "okta.jsonl.gz");
    // So is one cut off inside its first line, where reading begins (the format is told from
    // the first bytes).
    std::fs::write(&file, &gz[..30]).unwrap();
    let cut = normalize_file();
    assert!(!cut.status.success());
    assert_stderr_says(&cut, "reading input");
    assert_stderr_says(&cut, "okta.jsonl.gz stopped before its first line");
}

/// Salesforce Event Monitoring log files are CSV: `*.csv` inputs are read as rows keyed by the
/// header, detected as `salesforce` and normalized; a bad row is a dead letter naming its line,
/// and the rows after it still count.
#[test]
fn csv_log_files_are_read_row_by_row() {
    let recorded = fixtures().join("sf/event_log/001.csv");
    let out = perimeter(&["normalize", "--input", recorded.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&out);
    let rows = std::fs::read_to_string(&recorded).unwrap().lines().count() - 1;
    assert_eq!(events.len(), rows, "{}", stderr(&out));
    for e in &events {
        assert_eq!(e["event"]["module"], "salesforce", "{e}");
        assert_eq!(e["event"]["action"], "Login", "{e}");
        assert_eq!(e["event"]["outcome"], "success", "{e}");
        assert_eq!(e["source"]["ip"], "192.0.2.1", "{e}");
        assert_eq!(e["raw"]["LOGIN_STATUS"], "LOGIN_NO_ERROR", "{e}");
    }

    let header = "\"EVENT_TYPE\",\"TIMESTAMP_DERIVED\",\"REQUEST_ID\",\"USER_NAME\",\"CLIENT_IP\",\"LOGIN_STATUS\",\"SESSION_KEY\"";
    let row = |status: &str, minute: u32| {
        format!("\"Login\",\"2026-11-24T10:{minute:02}:00.000Z\",\"4exLFFQZ2B0g{minute}\",\"dana.kim@acme-corp.example\",\"203.0.113.66\",\"{status}\",\"rZ1BfJm3Pq8rD2sH\"")
    };
    let csv = format!(
        "{header}\n{}\n\"Login\",\"short row\"\n{}\n",
        row("LOGIN_ERROR_INVALID_PASSWORD", 1),
        row("LOGIN_NO_ERROR", 3)
    );
    // From stdin the format is not in a file name: --format says it.
    let out = perimeter(&["normalize", "--format", "csv"], Some(csv.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&out);
    let outcomes: Vec<_> = events
        .iter()
        .map(|e| e["event"]["outcome"].clone())
        .collect();
    assert_eq!(outcomes, ["failure", "success"], "{}", stderr(&out));
    assert_eq!(events[1]["perimeter"]["line"], 4);
    // The session key is a secret by its column name: hashed (the same key, the same output, so
    // a session still ties its events together), never in clear.
    assert!(!out.stdout.windows(16).any(|w| w == b"rZ1BfJm3Pq8rD2sH"));
    assert_eq!(
        events[0]["raw"]["SESSION_KEY"],
        events[1]["raw"]["SESSION_KEY"]
    );
    assert!(events[0]["raw"]["SESSION_KEY"]
        .as_str()
        .is_some_and(|k| k.starts_with("hmac:")));
    let err = stderr(&out);
    assert!(
        err.contains("line 3") && err.contains("CSV row has 2 fields, the header has 7"),
        "{err}"
    );
    // Read as JSON (the default for stdin) the same bytes are no records at all.
    let out = perimeter(&["normalize"], Some(csv.as_bytes()));
    assert!(json_lines(&out).is_empty());
}

/// `burst.yml` in `dir`: an Okta login rule and a correlation of 3 logins of one user within 10
/// minutes, their ids `<id_prefix>0` and `<id_prefix>1`.
fn login_burst_rules(dir: &std::path::Path, id_prefix: &str) -> std::path::PathBuf {
    let rule = dir.join("burst.yml");
    std::fs::write(
        &rule,
        format!(
            "title: Login\nid: {id_prefix}0\nname: login\nlogsource:\n    product: okta\n\
             detection:\n    selection:\n        eventType: user.session.start\n    condition: selection\nlevel: low\n\
             ---\ntitle: Login burst\nid: {id_prefix}1\ncorrelation:\n    type: event_count\n\
             \x20   rules:\n        - login\n    group-by:\n        - actor.alternateId\n    timespan: 10m\n\
             \x20   condition:\n        gte: 3\nlevel: high\n"
        ),
    )
    .unwrap();
    rule
}

/// `detect --state-dir` over consecutive inputs works as one stream: a burst split across two
/// files is one burst (the windows open at the end of the first are saved, not closed). Without
/// the state directory each input stands alone.
#[test]
fn detect_with_a_state_dir_continues_correlation_windows_into_the_next_input() {
    let dir = tempfile::tempdir().unwrap();
    let rule = login_burst_rules(dir.path(), "6f1c2f3e-4a55-4c7e-9d1a-0a3b5c7d9e2");
    let input = |minutes: &[u32]| -> Vec<u8> {
        minutes
            .iter()
            .map(|m| okta_event("user.session.start", "alice@example.com", *m) + "\n")
            .collect::<String>()
            .into_bytes()
    };
    let state = dir.path().join("state");
    let run = |minutes: &[u32], with_state: bool| -> Vec<serde_json::Value> {
        let mut args = okta_detect_args(&rule);
        if with_state {
            args.extend(["--state-dir", state.to_str().unwrap()]);
        }
        let out = perimeter(&args, Some(&input(minutes)));
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        json_lines(&out)
            .into_iter()
            .filter(|a| a["title"] == "Login burst")
            .collect()
    };
    assert!(run(&[1, 2], true).is_empty());
    let burst = run(&[3], true);
    assert_eq!(burst.len(), 1, "{burst:?}");
    assert_eq!(burst[0]["event_ids"].as_array().unwrap().len(), 3);
    // `lines` are of this input: its one line; the first input's events by their ids only.
    assert_eq!(burst[0]["lines"], serde_json::json!([1]));
    // Each input alone: two logins, then one.
    assert!(run(&[1, 2], false).is_empty());
    assert!(run(&[3], false).is_empty());
    // An edited rule file does not judge windows gathered under the old one, and says so.
    assert!(run(&[4, 5], true).is_empty());
    let text = std::fs::read_to_string(&rule).unwrap();
    std::fs::write(&rule, text.replace("level: high", "level: critical")).unwrap();
    let mut args = okta_detect_args(&rule);
    args.extend(["--state-dir", state.to_str().unwrap()]);
    let out = perimeter(&args, Some(&input(&[6])));
    assert!(json_lines(&out).iter().all(|a| a["title"] != "Login burst"));
    assert_stderr_says(&out, "1 correlation(s) changed since");
}

/// Events later than the allowed lateness are left out of correlations, and the summary says
/// how many (a burst that is gone without a word looks like no burst).
#[test]
fn detect_says_how_many_events_came_too_late_for_correlations() {
    let dir = tempfile::tempdir().unwrap();
    let rule = login_burst_rules(dir.path(), "6f1c2f3e-4a55-4c7e-9d1a-0a3b5c7d9e3");
    // Another user at 10:40, then three logins of alice at 10:01-10:03: 37 minutes late.
    let mut input = okta_event("user.session.start", "bob@example.com", 40) + "\n";
    for m in 1..=3 {
        input += &(okta_event("user.session.start", "alice@example.com", m) + "\n");
    }
    let out = perimeter(&okta_detect_args(&rule), Some(input.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json_lines(&out).iter().all(|a| a["title"] != "Login burst"));
    assert_stderr_says(
        &out,
        "3 events came more than 300s (sigma.allowed_lateness_seconds) after newer events",
    );
    // In time order they are a burst, and nothing is said.
    let mut sorted: Vec<&str> = input.lines().collect();
    sorted.rotate_left(1);
    let out = perimeter(&okta_detect_args(&rule), Some(sorted.join("\n").as_bytes()));
    assert!(json_lines(&out).iter().any(|a| a["title"] == "Login burst"));
    assert!(!stderr(&out).contains("came more than"), "{}", stderr(&out));
}

/// A replay of old logs with one record dated hours after the run (believed: within a day):
/// it used to move its source's watermark there, so the burst after it was "late" and gone.
/// It counts by its own time but cannot make the others late, and the summary says so.
#[test]
fn detect_a_record_dated_after_the_run_does_not_make_the_rest_late() {
    let dir = tempfile::tempdir().unwrap();
    let rule = login_burst_rules(dir.path(), "6f1c2f3e-4a55-4c7e-9d1a-0a3b5c7d9e4");
    let ahead = (chrono::Utc::now() + chrono::TimeDelta::hours(9)).to_rfc3339();
    let mut input = okta_event("user.session.start", "bob@example.com", 0)
        .replace("2026-11-24T10:00:00.000Z", &ahead)
        + "\n";
    for m in 1..=3 {
        input += &(okta_event("user.session.start", "alice@example.com", m) + "\n");
    }
    let out = perimeter(&okta_detect_args(&rule), Some(input.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json_lines(&out).iter().any(|a| a["title"] == "Login burst"));
    assert!(!stderr(&out).contains("came more than"), "{}", stderr(&out));
    assert_stderr_says(
        &out,
        "1 events were dated more than 300s after they were read",
    );
}

/// With a mask key configured, `detect --state-dir` remembers the events it saw: an input sent
/// again (a collector that retried) is not detected twice; new events are.
#[test]
fn detect_with_a_state_dir_does_not_detect_a_repeated_input_twice() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("login.yml");
    std::fs::write(
        &rule,
        "title: Login\nid: 6f1c2f3e-4a55-4c7e-9d1a-0a3b5c7d9e30\nlogsource:\n    product: okta\n\
         detection:\n    selection:\n        eventType: user.session.start\n    condition: selection\nlevel: low\n",
    )
    .unwrap();
    let key = dir.path().join("mask.key");
    std::fs::write(&key, "this deployment's mask key").unwrap();
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(
        &cfg,
        format!("[mask]\nhmac_key = \"file:{}\"\n", key.display()),
    )
    .unwrap();
    let state = dir.path().join("state");
    let run = |minute: u32| {
        let mut args = vec!["--config", cfg.to_str().unwrap()];
        args.extend(okta_detect_args(&rule));
        args.extend(["--state-dir", state.to_str().unwrap()]);
        let line = okta_event("user.session.start", "alice@example.com", minute) + "\n";
        let out = perimeter(&args, Some(line.as_bytes()));
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        (json_lines(&out).len(), stderr(&out))
    };
    assert_eq!(run(1).0, 1);
    let (alerts, err) = run(1);
    assert_eq!(alerts, 0, "{err}");
    assert!(err.contains("1 events repeated an earlier one"), "{err}");
    assert_eq!(run(2).0, 1);
}

/// A misspelt logsource product loads and runs, but sees nothing: `rules check` says so (a
/// warning, not a failure), naming the source it probably meant.
#[test]
fn rules_check_warns_about_a_misspelt_source() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("typo.yml"),
        MFA_RULE.replace("product: okta", "product: okat"),
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let run = |format: &str| perimeter(&["rules", "check", path, "--format", format], None);
    let out = run("json");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = &json_lines(&out)[0];
    assert_eq!(
        (report["loaded"].clone(), report["failed"].clone()),
        (1.into(), serde_json::json!([]))
    );
    let warnings = report["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{report}");
    assert!(warnings[0]["path"].as_str().unwrap().ends_with("typo.yml"));
    // The line of the misspelt product, not the rule's first line.
    let product_line = MFA_RULE
        .lines()
        .position(|l| l.contains("product: okta"))
        .unwrap()
        + 1;
    assert_eq!(warnings[0]["line"], product_line, "{report}");
    let text = warnings[0]["warning"].as_str().unwrap();
    assert!(
        text.contains("`okat`") && text.contains("did you mean `okta`"),
        "{text}"
    );
    let out = run("text");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("WARN ") && l.contains("okat")),
        "{stdout}"
    );
}

/// What the Sigma specification forbids in metadata but the engine can run with: warnings
/// naming line and field, the rules load.
#[test]
fn rules_check_warns_about_metadata_the_spec_forbids() {
    let dir = tempfile::tempdir().unwrap();
    let long_title = format!("title: {}", "x".repeat(300));
    std::fs::write(
        dir.path().join("meta.yml"),
        MFA_RULE
            .replace(
                "status: test",
                "status: wip\ndate: 2026/01/01\ntags: attack.t1556",
            )
            .replace("title: Okta MFA factor deactivated", &long_title)
            + "related:\n    - id: 6f1c2f3e-4a55-4c7e-9d1a-0a3b5c7d9e12\n      type: cousin\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("values.yml"),
        MFA_RULE
            .replace("9e11", "9e13")
            .replace(
                "        eventType: user.mfa.factor.deactivate",
                "        eventType|contains|all: deactivate\n        outcome.reason:\n            - ''\n            - null",
            ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("filter.yml"),
        "title: Filter without logsource\nfilter:\n    rules:\n        - 6f1c2f3e-4a55-4c7e-9d1a-0a3b5c7d9e11\n    selection:\n        User: x\n    condition: selection\n",
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let out = perimeter(&["rules", "check", path, "--format", "json"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = &json_lines(&out)[0];
    assert_eq!(report["loaded"], 3, "{report}");
    let mut fields: Vec<(String, u64)> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["field"].as_str().unwrap().to_string(),
                w["line"].as_u64().unwrap(),
            )
        })
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("date".to_string(), 4),
            ("detection.selection.eventType|contains|all".to_string(), 9),
            ("detection.selection.outcome.reason".to_string(), 10),
            ("logsource".to_string(), 1),
            ("related.type".to_string(), 16),
            ("status".to_string(), 3),
            ("tags".to_string(), 5),
            ("title".to_string(), 1),
        ],
        "{report}"
    );
}

#[test]
fn tokens_can_expire_and_say_when() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n",
            dir.path().join("data").to_str().unwrap()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec![
            "--config", cfg, "tokens", "create", "--tenant", "acme", "--role", "viewer",
        ];
        args.extend_from_slice(extra);
        perimeter(&args, None)
    };
    let before = chrono::Utc::now();
    let out = create(&["--expires-in", "2h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_says(&out, ", expires 20");
    // The data directory was new: said (a wrong `data_dir` made one without a word).
    assert_stderr_says(&out, "created a new data directory");
    let out = create(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("new data directory"),
        "{}",
        stderr(&out)
    );
    for bad in ["0s", "soon", "1y"] {
        let out = create(&["--expires-in", bad]);
        assert!(!out.status.success(), "--expires-in {bad}");
        assert_stderr_says(&out, "--expires-in");
    }
    let listed = json_lines(&perimeter(&["--config", cfg, "tokens", "list"], None));
    assert_eq!(listed.len(), 2, "{listed:?}");
    let expires: chrono::DateTime<chrono::Utc> =
        listed[0]["expires_at"].as_str().unwrap().parse().unwrap();
    let ahead = expires - before;
    assert!(
        ahead >= chrono::Duration::hours(2)
            && ahead < chrono::Duration::hours(2) + chrono::Duration::minutes(5),
        "{listed:?}"
    );
    assert!(listed[1].get("expires_at").is_none(), "{listed:?}");
}

#[test]
fn run_check_names_each_broken_part_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let example = perimeter(
        &[
            "--config",
            repo().join("perimeter.example.toml").to_str().unwrap(),
            "run",
            "--check",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&example.stdout).into_owned();
    assert!(example.status.success(), "{text}{}", stderr(&example));
    assert!(text.lines().all(|l| l.starts_with("ok ")), "{text}");
    assert!(text.contains("ok     rules: "), "{text}");
    // It says which file it read, as an absolute path (relative ones follow the shell).
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("ok     config: /")
            && first.contains("perimeter.example.toml (data_dir /"),
        "{first}"
    );

    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("fine.yml"),
        "title: fine\nlogsource:\n  product: okta\ndetection:\n  sel:\n    eventType: x\n  condition: sel\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("broken.yml"),
        "title: broken\ndetection:\n  condition: nope\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {data:?}\nrules = [{rules:?}]\n[api]\nlisten = \"127.0.0.1:0\"\n\
             tls_cert_path = {cert:?}\ntls_key_path = {cert:?}\n\
             [[poll]]\nname = \"okta-prod\"\nvendor = \"okta\"\nbase_url = \"https://acme.okta.example\"\n\
             token = \"env:PERIMETER_TEST_CHECK_UNSET_TOKEN\"\n",
            cert = dir.path().join("missing.pem"),
        ),
    )
    .unwrap();
    let out = perimeter(&["--config", cfg.to_str().unwrap(), "run", "--check"], None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    for expected in [
        "broken.yml:1: field `logsource`",
        "error  api: TLS: certificate",
        "error  poll okta-prod: reading the secret env:PERIMETER_TEST_CHECK_UNSET_TOKEN names",
        "3 part(s)",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    assert!(text.contains("ok     sources and masking"), "{text}");
    assert!(text.contains("key generated at the first start"), "{text}");
    // Nothing was started or written: no data directory.
    assert!(!data.exists(), "the check created {}", data.display());
    // A directory holding data written with the built-in key keeps that key: said so.
    std::fs::create_dir_all(data.join("index")).unwrap();
    let out = perimeter(&["--config", cfg.to_str().unwrap(), "run", "--check"], None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("built-in public key, as this data directory's data was"),
        "{text}"
    );
    // A mask key whose reference is not set in this shell is one part's error, not the end of
    // the check (nor of commands that do not use the key).
    let keyed = dir.path().join("keyed.toml");
    std::fs::write(
        &keyed,
        format!(
            "data_dir = {data:?}\nrules = [{rules:?}]\n[mask]\nhmac_key = \"env:PERIMETER_TEST_CHECK_UNSET_KEY\"\n"
        ),
    )
    .unwrap();
    let out = perimeter(
        &["--config", keyed.to_str().unwrap(), "run", "--check"],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.contains("error  sources and masking") && text.contains("ok     store"),
        "{text}"
    );
    let out = perimeter(
        &["--config", keyed.to_str().unwrap(), "tokens", "list"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // QA: a damaged token store, destination list or rule switch file passed the check, and
    // `run` then refused to start on it.
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, format!("data_dir = {data:?}\n")).unwrap();
    let check = || {
        let out = perimeter(
            &["--config", plain.to_str().unwrap(), "run", "--check"],
            None,
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = check();
    assert!(
        code == Some(0) && text.contains("ok     api state: 0 API token(s) in use"),
        "{text}"
    );
    for file in ["api-tokens.json", "destinations.json", "rule_switches.json"] {
        std::fs::write(data.join(file), "{\"cut\": ").unwrap();
        let (code, text) = check();
        assert!(
            code == Some(1) && text.contains("error  api state:") && text.contains(file),
            "{file}: {text}"
        );
        std::fs::remove_file(data.join(file)).unwrap();
    }
}

#[test]
fn run_check_says_when_the_tls_certificate_expires_and_refuses_an_expired_one() {
    let dir = tempfile::tempdir().unwrap();
    let check = |not_after: (i32, u8, u8)| {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let (cfg, _) = write_tls_config(dir.path(), params);
        run_check_api_line(&cfg)
    };
    let (code, api) = check((2099, 6, 30));
    assert_eq!(code, Some(0), "{api}");
    assert!(
        api.starts_with("ok ") && api.contains("certificate valid until 2099-06-30"),
        "{api}"
    );
    let (code, api) = check((2021, 1, 1));
    assert_eq!(code, Some(1), "{api}");
    assert!(
        api.starts_with("error") && api.contains("expired on 2021-01-01"),
        "{api}"
    );
}

/// A self-signed certificate from `params` with its key, and a configuration serving the API
/// with them from a `data` directory, all in `dir`: the configuration's and the certificate's
/// paths.
fn write_tls_config(
    dir: &std::path::Path,
    params: rcgen::CertificateParams,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    write_tls_files_config(dir, &cert.pem(), &key)
}

/// A certificate for localhost signed by an intermediate (`CN=Test Intermediate`) valid from
/// `from` to `until`, signed by a root, and a configuration serving the chain file (the
/// server's own certificate, then the intermediate), as [`write_tls_config`].
fn write_tls_chain_config(
    dir: &std::path::Path,
    from: chrono::NaiveDate,
    until: chrono::NaiveDate,
) -> (std::path::PathBuf, std::path::PathBuf) {
    use chrono::Datelike;
    let date = |d: chrono::NaiveDate| (d.year(), d.month() as u8, d.day() as u8);
    let (chain, key) = crate::certs::chain_through_intermediate(date(from), date(until));
    write_tls_files_config(dir, &chain, &key)
}

fn write_tls_files_config(
    dir: &std::path::Path,
    chain_pem: &str,
    key: &rcgen::KeyPair,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, chain_pem).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let cfg = dir.join("perimeter.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\ntls_cert_path = {cert_path:?}\ntls_key_path = {key_path:?}\n",
            dir.join("data")
        ),
    )
    .unwrap();
    (cfg, cert_path)
}

/// `perimeter run` (or `run --check`) with `cfg`, killed if it has not ended within 60 s (a
/// `run` that started instead of refusing).
/// The exit code of `perimeter run --check` and its line about the API (TLS included).
fn run_check_api_line(cfg: &std::path::Path) -> (Option<i32>, String) {
    let out = run_until_it_ends(cfg, true);
    (out.status.code(), crate::util::check_line(&out, " api: "))
}

fn run_until_it_ends(cfg: &std::path::Path, check: bool) -> std::process::Output {
    let mut args = vec!["--config", cfg.to_str().unwrap(), "run"];
    if check {
        args.push("--check");
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn run_refuses_the_certificates_run_check_refuses_with_the_same_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let refused = |edit: &dyn Fn(&mut rcgen::CertificateParams)| -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        edit(&mut params);
        let (cfg, cert_path) = write_tls_config(dir.path(), params);
        let out = run_until_it_ends(&cfg, true);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let checked = text
            .lines()
            .find_map(|l| l.strip_prefix("error  api: "))
            .unwrap_or_else(|| panic!("no api error: {text}"))
            .to_string();
        let out = run_until_it_ends(&cfg, false);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let started = stderr(&out);
        let run = started
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or_else(|| panic!("no error: {started}"))
            .to_string();
        assert!(!data.exists(), "nothing was opened or written");
        assert!(
            checked.contains(&cert_path.display().to_string()),
            "{checked}"
        );
        (checked, run)
    };
    let (checked, run) = refused(&|p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    assert!(checked.contains("expired on 2021-01-01"), "{checked}");
    assert_eq!(run, checked);
    let (checked, run) = refused(&|p| p.not_before = rcgen::date_time_ymd(4000, 1, 1));
    assert!(checked.contains("not valid before 4000-01-01"), "{checked}");
    assert_eq!(run, checked);
    // A CA certificate: rustls clients (this CLI's `--server`) refuse it as a server's own.
    let (checked, run) =
        refused(&|p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained));
    assert!(checked.contains("CA certificate"), "{checked}");
    assert_eq!(run, checked);
}

/// Every certificate of the chain file is checked, not only the server's own: an expired
/// intermediate is refused (naming it) by `run --check` and `run`, and one expiring first is
/// what the `warn` line dates.
#[test]
fn run_and_run_check_judge_every_certificate_of_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let ymd = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let today = chrono::Utc::now().date_naive();
    let soon = today + chrono::Days::new(5);
    let (cfg, _) = write_tls_chain_config(dir.path(), today - chrono::Days::new(30), soon);
    let (code, api) = run_check_api_line(&cfg);
    assert_eq!(code, Some(0), "{api}");
    assert!(
        api.starts_with("warn   api: ")
            && api.contains(&format!("certificate expires {soon}"))
            // The one to renew is named: not the server's own.
            && api.contains("certificate #2 in the file (a chain certificate)"),
        "{api}"
    );
    let (cfg, cert_path) = write_tls_chain_config(dir.path(), ymd(2020, 1, 1), ymd(2021, 1, 1));
    let (code, api) = run_check_api_line(&cfg);
    assert_eq!(code, Some(1), "{api}");
    let expected = format!(
        "error  api: TLS: certificate {}: certificate #2 in the file (a chain certificate, \
         subject `CN=Test Intermediate`) expired on 2021-01-01 00:00:00 UTC",
        cert_path.display()
    );
    assert!(api.starts_with(&expected), "{api}");
    let out = run_until_it_ends(&cfg, false);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_says(&out, "certificate #2 in the file");
    assert!(!dir.path().join("data").exists(), "nothing was opened");
}

/// A certificate within two weeks of expiry is a `warn` line of `run --check` (what `run`
/// warns of at start), not an error: the exit code stays 0.
#[test]
fn run_check_warns_of_a_certificate_close_to_expiry() {
    use chrono::Datelike;
    let dir = tempfile::tempdir().unwrap();
    let date =
        |d: chrono::NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let today = chrono::Utc::now().date_naive();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = date(today - chrono::Days::new(30));
    params.not_after = date(today + chrono::Days::new(5));
    let (cfg, _) = write_tls_config(dir.path(), params);
    let out = run_until_it_ends(&cfg, true);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let api = text
        .lines()
        .find(|l| l.contains(" api: "))
        .unwrap_or_else(|| panic!("no api line: {text}"));
    assert!(
        api.starts_with("warn   api: ")
            && api.contains("certificate expires")
            && api.contains("renew"),
        "{api}"
    );
}

#[test]
fn revoking_a_token_twice_says_it_was_already_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(&cfg, format!("data_dir = {:?}\n", dir.path().join("data"))).unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = perimeter(
        &[
            "--config", cfg, "tokens", "create", "--tenant", "acme", "--role", "viewer",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = json_lines(&perimeter(&["--config", cfg, "tokens", "list"], None));
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let revoke = |id: &str| perimeter(&["--config", cfg, "tokens", "revoke", id], None);
    let out = revoke(&id);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), format!("revoked {id}"));
    let revoked_at = json_lines(&perimeter(&["--config", cfg, "tokens", "list"], None))[0]
        ["revoked_at"]
        .as_str()
        .unwrap()
        .to_string();
    // Again: done already, which is what the operator wanted (exit code 0), and said so.
    let out = revoke(&id);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_says(&out, &format!("token {id} was already revoked at 20"));
    let listed = json_lines(&perimeter(&["--config", cfg, "tokens", "list"], None));
    assert_eq!(listed[0]["revoked_at"].as_str(), Some(revoked_at.as_str()));
    // Each change is in the tenant's audit log, by the command (QA: a new admin credential
    // left no trace); the second revocation changed nothing and is not.
    let audit = std::fs::read_to_string(dir.path().join("data/audit.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done: Vec<(&str, &str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["tenant"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["token_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        done,
        [
            ("tokens.create", "acme", id.as_str(), "cli"),
            ("tokens.revoke", "acme", id.as_str(), "cli")
        ]
    );
    assert_eq!(entries[0]["details"]["role"], "viewer");
    // An id no token has is still an error.
    let out = revoke("0123456789ab");
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_says(&out, "no token with id 0123456789ab");
}

#[test]
fn detect_says_when_it_runs_short_of_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let input = format!(
        "{}\n",
        okta_event("user.mfa.factor.deactivate", "alice@example.com", 2)
    );
    // No --rules, no config, no ./detection-rules here (a cron job's directory): an error, not
    // a run that finds nothing.
    let out = perimeter_in(
        dir.path(),
        &["detect", "--source", "okta"],
        Some(input.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_says(&out, "no rules to run");
    // One good rule and one broken one: the good one runs, the exit code says the run was
    // short of a rule.
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("mfa.yml"), MFA_RULE).unwrap();
    std::fs::write(rules.join("broken.yml"), "title: x\ndetection: [\n").unwrap();
    let out = perimeter(&okta_detect_args(&rules), Some(input.as_bytes()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json_lines(&out).len(), 1);
    let err = stderr(&out);
    assert!(
        err.contains("perimeter detect: 1 rules from ")
            && err.contains("behavioural detectors off"),
        "{err}"
    );
    assert!(err.contains("broken.yml"), "{err}");
    assert!(err.contains("1 rule file(s) failed to load"), "{err}");
    // Nothing that can detect: refused before reading the input.
    std::fs::remove_file(rules.join("mfa.yml")).unwrap();
    let out = perimeter(&okta_detect_args(&rules), Some(input.as_bytes()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_says(&out, "no detector to run");
}

#[test]
fn detect_on_a_live_stream_prints_each_alert_when_it_fires() {
    use std::io::{BufRead, BufReader, Write};
    let demo = std::fs::read_to_string(repo().join("demo/events.jsonl")).unwrap();
    let stop_logging = demo.lines().find(|l| l.contains("StopLogging")).unwrap();
    let mut child = spawn_perimeter(
        &["detect", "--no-ueba", "--rules", "detection-rules"],
        std::process::Stdio::null(),
    );
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{stop_logging}").unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    // The input stays open (`tail -f`): the alert must come out before it ends.
    let first = rx.recv_timeout(std::time::Duration::from_secs(60));
    drop(stdin);
    let status = child.wait().unwrap();
    let first = first.expect("no alert while the input was still open");
    let alert: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(
        alert["rule_id"].as_str().is_some() && alert["lines"] == serde_json::json!([1]),
        "{alert}"
    );
    assert!(status.success(), "{status:?}");
}

#[test]
fn detect_names_the_line_of_each_record_of_a_pretty_printed_page() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("mfa.yml");
    std::fs::write(&rule, MFA_RULE).unwrap();
    let records: Vec<serde_json::Value> = [
        okta_event("user.session.start", "bob@example.com", 1),
        okta_event("user.mfa.factor.deactivate", "alice@example.com", 2),
    ]
    .iter()
    .map(|r| serde_json::from_str(r).unwrap())
    .collect();
    let page = serde_json::to_string_pretty(&records).unwrap();
    // The line of the `{` that opens the second record.
    let uuid_at = page.find("u-user.mfa.factor.deactivate-2").unwrap();
    let open_at = page[..uuid_at].rfind("\n  {").unwrap() + 1;
    let expected_line = page[..open_at].matches('\n').count() as u64 + 1;
    assert!(expected_line > 2);
    // With a byte order mark, as some Windows tools save it.
    let input = [&b"\xEF\xBB\xBF"[..], page.as_bytes()].concat();
    let out = perimeter(&okta_detect_args(&rule), Some(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let alerts = json_lines(&out);
    assert_eq!(alerts.len(), 1, "{}", stderr(&out));
    assert_eq!(alerts[0]["lines"], serde_json::json!([expected_line]));
    let lines = page.lines().count();
    assert_stderr_says(&out, &format!("perimeter detect: {lines} lines, 2 records"));
    // The same records in an envelope page (`{"items": [...]}`, as 1Password and Google
    // Workspace send them) are told where they start too.
    let page = serde_json::to_string_pretty(&serde_json::json!({"items": records, "cursor": null}))
        .unwrap();
    let uuid_at = page.find("u-user.mfa.factor.deactivate-2").unwrap();
    let open_at = page[..uuid_at].rfind("\n    {").unwrap() + 1;
    let expected_line = page[..open_at].matches('\n').count() as u64 + 1;
    let out = perimeter(&okta_detect_args(&rule), Some(page.as_bytes()));
    let alerts = json_lines(&out);
    assert_eq!(alerts.len(), 1, "{}", stderr(&out));
    assert_eq!(alerts[0]["lines"], serde_json::json!([expected_line]));
}

#[test]
fn a_cloudtrail_file_longer_than_the_line_limit_is_read_with_a_larger_limit() {
    let record = |i: usize| {
        serde_json::json!({
            "eventVersion": "1.08", "eventTime": "2026-11-24T10:00:00Z", "eventSource": "iam.amazonaws.com",
            "eventName": "CreateAccessKey", "awsRegion": "us-east-1", "sourceIPAddress": "198.51.100.7",
            "userIdentity": {"type": "IAMUser", "userName": format!("user{i}"), "accountId": "123456789012"},
            "eventID": format!("e-{i}"), "padding": "x".repeat(400)
        })
    };
    let file =
        serde_json::json!({"Records": (0..3000).map(record).collect::<Vec<_>>()}).to_string();
    assert!(file.len() > 1 << 20);
    let input = format!("{file}\n");
    let args = ["normalize", "--source", "aws_cloudtrail"];
    let out = perimeter(&args, Some(input.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json_lines(&out).is_empty());
    let err = stderr(&out);
    assert!(err.contains("line 1: line is"), "{err}");
    assert!(err.contains("raise max_line_bytes"), "{err}");
    let out = perimeter(
        &[&args[..], &["--max-line-bytes", "16777216"]].concat(),
        Some(input.as_bytes()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&out);
    assert_eq!(events.len(), 3000, "{}", stderr(&out));
    assert_eq!(events[0]["event"]["action"], "CreateAccessKey");
}

#[test]
fn rules_check_json_reports_a_missing_path_as_failed() {
    let out = perimeter(
        &["rules", "check", "no/such/rules", "--format", "json"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = &json_lines(&out)[0];
    assert_eq!(report["loaded"], 0);
    assert_eq!(report["failed"][0]["path"], "no/such/rules");
    let dir = tempfile::tempdir().unwrap();
    let with_bom = format!("\u{feff}{MFA_RULE}");
    std::fs::write(dir.path().join("bom.yml"), with_bom).unwrap();
    let out = perimeter(
        &[
            "rules",
            "check",
            dir.path().to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(json_lines(&out)[0]["loaded"], 1);
}

#[test]
fn a_rules_directory_without_rules_is_refused_not_passed() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("rules");
    std::fs::create_dir(&empty).unwrap();
    // Only test cases, no rule: still no rule to run.
    std::fs::write(empty.join("mfa.tests.yml"), "match: []\n").unwrap();
    let empty = empty.to_str().unwrap();
    let input = format!(
        "{}\n",
        okta_event("user.mfa.factor.deactivate", "alice@example.com", 2)
    );
    // Refused before reading the input, behavioural detectors on or off.
    for extra in [None, Some("--no-ueba")] {
        let mut args = vec!["detect", "--rules", empty, "--source", "okta"];
        args.extend(extra);
        let out = perimeter(&args, Some(input.as_bytes()));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert!(
            err.contains("no rules to run in") && err.contains("holds no rule file"),
            "{err}"
        );
    }
    // Beside a good rule file too: a wrong directory among the paths is named.
    let rule = dir.path().join("mfa.yml");
    std::fs::write(&rule, MFA_RULE).unwrap();
    let out = perimeter(
        &[
            "detect",
            "--rules",
            rule.to_str().unwrap(),
            "--rules",
            empty,
        ],
        Some(input.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = perimeter(
        &[
            "rules",
            "check",
            rule.to_str().unwrap(),
            empty,
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = &json_lines(&out)[0];
    assert_eq!(report["loaded"], 1);
    assert_eq!(report["failed"][0]["path"], empty, "{report}");
    assert!(
        report["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("holds no rule file"),
        "{report}"
    );
    let out = perimeter(&["rules", "check", empty], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 rules loaded, 1 failed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = perimeter(&["rules", "test", empty], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_says(&out, "holds no rule file");
}

#[test]
fn run_check_refuses_a_data_dir_it_cannot_write_and_warns_without_rules() {
    let dir = tempfile::tempdir().unwrap();
    // The data directory would be under a file: `run` could not create it.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n",
            file.join("data")
        ),
    )
    .unwrap();
    // Run where there is no ./detection-rules and the config names none.
    let out = perimeter_in(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "run", "--check"],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let store = text
        .lines()
        .find(|l| l.contains(" store: "))
        .unwrap_or_default();
    assert!(
        store.starts_with("error")
            && store.contains("store: data_dir: ")
            && store.contains("is not a directory"),
        "{text}"
    );
    assert!(text.contains("warn   rules: none"), "{text}");
    // The warning alone, no "ok" line contradicting it.
    assert!(!text.contains("ok     rules"), "{text}");
    // Writable: the store part is fine, and the probe left nothing behind.
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = perimeter_in(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "run", "--check"],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("ok     store: data under"), "{text}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".perimeter-check"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_token_for_a_tenant_that_differs_only_in_case_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(&cfg, format!("data_dir = {:?}\n", dir.path().join("data"))).unwrap();
    let cfg = cfg.to_str().unwrap();
    let create = |tenant: &str| {
        let args = [
            "--config", cfg, "tokens", "create", "--tenant", tenant, "--role", "viewer",
        ];
        let out = perimeter(&args, None);
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    assert!(!create("acme").contains("warning"));
    assert!(!create("acme").contains("warning"), "the same tenant again");
    let err = create("ACME");
    assert!(
        err.contains("warning: tenant `ACME` is not `acme`"),
        "{err}"
    );
}

#[test]
fn a_cut_off_gzip_input_keeps_what_was_read_and_says_where_it_stopped() {
    use std::io::Write;
    let mut text = String::new();
    for minute in 0..2_000 {
        text.push_str(&okta_event(
            "user.session.start",
            "alice@example.com",
            minute % 60,
        ));
        text.push('\n');
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let cut = &gz[..gz.len() * 2 / 3];
    let out = perimeter(&["normalize", "--source", "okta"], Some(cut));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let events = json_lines(&out).len();
    assert!(events > 0 && events < 2_000, "{events}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("perimeter normalize: {events} records")),
        "{err}"
    );
    assert!(err.contains("stopped after line"), "{err}");
}

#[test]
fn the_demo_says_its_address_is_taken_before_running_the_pipeline() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = perimeter(
        &[
            "demo",
            "--listen",
            &addr,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_says(&out, "cannot serve the API");
    assert!(!data.exists(), "nothing was run or written");
}

/// A data directory that holds dead letters but no stored event yet is read: that is when
/// someone asks why nothing was stored (QA: "no Perimeter data", exit 2).
#[test]
fn dead_letters_are_read_from_a_directory_that_stored_no_event_yet() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let letters = data.join("dead_letters/tenant=acme");
    std::fs::create_dir_all(&letters).unwrap();
    let letter = serde_json::json!({
        "line": 1, "source": "aws_cloudtrail", "tenant": "acme",
        "received_at": "2026-12-01T10:00:00Z",
        "reason": "line is 1631497 bytes, longer than the limit of 1048576 bytes",
        "excerpt": "{\"Records\": ["
    });
    std::fs::write(letters.join("dead_letters.jsonl"), format!("{letter}\n")).unwrap();
    let out = perimeter(
        &[
            "dead-letters",
            "--data-dir",
            data.to_str().unwrap(),
            "--tenant",
            "acme",
            "--format",
            "json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0]["reason"]
        .as_str()
        .unwrap()
        .contains("longer than the limit"));
    // A directory with nothing of Perimeter's in it is still refused.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = perimeter(
        &["dead-letters", "--data-dir", empty.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_says(&out, "no Perimeter data");
}

#[test]
fn a_limit_of_zero_is_refused_as_the_api_refuses_it() {
    for command in [
        &["search", "x", "--limit", "0"][..],
        &["alerts", "--limit", "0"],
        &["dead-letters", "--limit", "0"],
    ] {
        let out = perimeter(command, None);
        assert_eq!(out.status.code(), Some(2), "{command:?}");
        assert_stderr_says(&out, "--limit");
    }
}

#[test]
fn a_missing_token_is_named_in_a_readable_error() {
    // The error passes the masker on its way out: it must not read as a credential.
    for cmd in [
        vec!["alerts", "--server", "http://127.0.0.1:9"],
        vec!["search", "x", "--server", "http://127.0.0.1:9"],
    ] {
        let out = perimeter(&cmd, None);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        let err = stderr(&out);
        assert!(
            err.contains(
                "an API token is required with --server: set PERIMETER_TOKEN or pass --token"
            ),
            "{cmd:?}: {err}"
        );
        assert!(!err.contains("REDACTED"), "{err}");
    }
}

#[test]
fn errors_quoting_input_write_its_escape_sequences_out() {
    // A name with an escape sequence in it (clear screen, retitle the window).
    let out = perimeter(
        &[
            "normalize",
            "--source",
            "okta",
            "--input",
            "/nonexistent/x\u{1b}[2J\u{1b}]0;pwned\u{7}",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
    assert!(err.contains("x\\u{1b}[2J"), "{err:?}");
    // The same in the report of `rules check` (stdout) and a source-name warning.
    let out = perimeter(&["rules", "check", "/nonexistent/x\u{1b}[31my"], None);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("FAIL ") && !report.contains('\u{1b}'),
        "{report:?}"
    );
    let out = perimeter(&["normalize", "--source", "ok\u{1b}ta"], Some(b"{}\n"));
    assert!(!stderr(&out).contains('\u{1b}'), "{:?}", stderr(&out));
}

#[test]
fn triage_refuses_a_mangled_json_line_instead_of_taking_it_for_an_id() {
    let out = perimeter(
        &[
            "triage",
            "-",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ],
        Some(b"a1\n{\"alert\": {\"id\": \"a2\"}}\n{\"bad json\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("stdin line 3 is not valid JSON"), "{err}");
    // Refused before anything was sent: the server address is never tried.
    assert!(!err.contains("alert a1"), "{err}");
}

#[test]
fn a_server_url_without_its_scheme_is_refused_saying_what_to_write() {
    for cmd in [
        vec!["alerts", "--server", "127.0.0.1:9", "--token", "t"],
        vec!["triage", "a1", "--server", "localhost:9", "--token", "t"],
    ] {
        let out = perimeter(&cmd, None);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        assert!(
            stderr(&out).contains("needs its scheme: http://"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
}

/// `perimeter reindex` rebuilds a damaged index from the Parquet files: the store refuses the
/// damaged one and names the way out, `--check` finds it (exit 1), the rebuild brings every
/// search hit back as it was, and `--check` is clean afterwards.
#[test]
fn reindex_rebuilds_a_damaged_index_and_search_finds_everything_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let d = data.to_str().unwrap();
    let out = perimeter(&["demo", "--no-serve", "--data-dir", d], None);
    assert!(out.status.success(), "{}", stderr(&out));
    // "2629 events from 2629 records, ..."
    let stored = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.split_once(" events from ").map(|(n, _)| n.to_string()))
        .expect("the demo says how many events it stored");
    let search = || {
        perimeter(
            &[
                "search",
                "--data-dir",
                d,
                "event.outcome:failure",
                "--format",
                "json",
                "--limit",
                "100000",
            ],
            None,
        )
    };
    let before = search();
    assert!(before.status.success(), "{}", stderr(&before));
    let hits = json_lines(&before);
    assert!(hits.len() > 10, "{} failures stored", hits.len());

    let days: Vec<_> = std::fs::read_dir(data.join("index/tenant=demo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(days.len(), 1, "{days:?}");
    std::fs::write(days[0].join("meta.json"), b"{\"segments\": 7").unwrap();
    let broken = search();
    assert!(!broken.status.success());
    assert_stderr_says(&broken, "perimeter reindex");
    // `run --check` finds it before a restart would.
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(&cfg, format!("data_dir = {data:?}\n")).unwrap();
    let run_check = || {
        let out = perimeter(&["--config", cfg.to_str().unwrap(), "run", "--check"], None);
        crate::util::check_line(&out, "store:")
    };
    let line = run_check();
    assert!(
        line.starts_with("error") && line.contains("perimeter reindex"),
        "{line}"
    );

    let check = perimeter(&["reindex", "--data-dir", d, "--check"], None);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("unsound  tenant demo 2026-11-24  cannot be used"),
        "{said}"
    );

    let rebuild = perimeter(&["reindex", "--data-dir", d], None);
    assert!(rebuild.status.success(), "{}", stderr(&rebuild));
    let said = String::from_utf8_lossy(&rebuild.stdout);
    assert!(said.contains("1 index rebuilt"), "{said}");
    assert_stderr_says(&rebuild, "[1/1] tenant demo 2026-11-24: rebuilding");

    let after = search();
    assert!(after.status.success(), "{}", stderr(&after));
    // The same hits in the same order; the receive time as Parquet keeps it, to the microsecond.
    let to_micros = |mut hits: Vec<serde_json::Value>| {
        for h in &mut hits {
            let ingested = &mut h["event"]["ingested"];
            let t: chrono::DateTime<chrono::Utc> = ingested.as_str().unwrap().parse().unwrap();
            *ingested = t.timestamp_micros().into();
        }
        hits
    };
    assert_eq!(to_micros(json_lines(&after)), to_micros(hits));
    let check = perimeter(&["reindex", "--data-dir", d, "--check"], None);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let line = run_check();
    assert!(
        line.starts_with("ok") && line.ends_with(&format!("({stored} events stored)")),
        "{line}"
    );

    // kill -9 while --all rebuilds the sound index: the day keeps its old index or has the new
    // one, never none, and a writer opening the directory removes what the rebuild left.
    use std::io::BufRead;
    let mut child = perimeter_command(&repo(), &["reindex", "--data-dir", d, "--all"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut progress = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(progress.any(|l| l.is_ok_and(|l| l.contains("rebuilding"))));
    child.kill().unwrap();
    child.wait().unwrap();
    let after_kill = search();
    assert!(after_kill.status.success(), "{}", stderr(&after_kill));
    assert_eq!(
        to_micros(json_lines(&after_kill)),
        to_micros(json_lines(&after))
    );
    let tidy = perimeter(&["reindex", "--data-dir", d], None);
    assert!(tidy.status.success(), "{}", stderr(&tidy));
    let left: Vec<_> = std::fs::read_dir(data.join("index/tenant=demo"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

/// `perimeter repair-parquet` writes back from the index the events of a Parquet file that can
/// no longer be read: `--check` finds it (exit 1), the repair sets the file aside, and the
/// Parquet files then rebuild an index holding every event.
#[test]
fn repair_parquet_writes_back_a_lost_file_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let d = data.to_str().unwrap();
    let out = perimeter(&["demo", "--no-serve", "--data-dir", d], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = walk(&data.join("parquet/events"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();

    // While a service holds the directory, a repair says to stop it.
    let held = perimeter_store::lock_data_dir(&data).unwrap();
    let refused = perimeter(&["repair-parquet", "--data-dir", d], None);
    assert!(!refused.status.success());
    assert_stderr_says(
        &refused,
        "stop it first (a repair needs the data directory to itself)",
    );
    assert!(
        !stderr(&refused).contains("--server"),
        "{}",
        stderr(&refused)
    );
    drop(held);

    let check = perimeter(&["repair-parquet", "--data-dir", d, "--check"], None);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.contains("to repair  tenant demo 2026-11-24"), "{said}");
    assert!(said.contains(&file.display().to_string()), "{said}");

    let repair = perimeter(&["repair-parquet", "--data-dir", d], None);
    assert!(repair.status.success(), "{}", stderr(&repair));
    assert!(!file.exists());
    // `run --check` says the set-aside file is there, without failing.
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(&cfg, format!("data_dir = {data:?}\n")).unwrap();
    let check_run = perimeter(&["--config", cfg.to_str().unwrap(), "run", "--check"], None);
    let said = String::from_utf8_lossy(&check_run.stdout);
    let aside = format!(
        ".{}.unreadable",
        file.file_name().unwrap().to_string_lossy()
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("warn   store: 1 Parquet file(s)") && l.contains(&aside)),
        "{said}"
    );
    assert!(
        said.lines().any(|l| l.starts_with("ok     store:")),
        "{said}"
    );
    let again = perimeter(&["repair-parquet", "--data-dir", d, "--check"], None);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // The Parquet files alone now hold every stored event: an index rebuilt from them does.
    std::fs::remove_dir_all(data.join("index")).unwrap();
    let rebuild = perimeter(&["reindex", "--data-dir", d], None);
    assert!(rebuild.status.success(), "{}", stderr(&rebuild));
    let stored = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.split_once(" events from ").map(|(n, _)| n.to_string()))
        .unwrap();
    let rebuilt = String::from_utf8_lossy(&rebuild.stdout);
    assert!(
        rebuilt.contains(&format!("({stored} events in ")),
        "{rebuilt}"
    );
}

#[test]
fn export_writes_what_search_finds_in_each_format_and_never_a_partial_file() {
    use arrow::array::AsArray;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let d = data.to_str().unwrap();
    let out = perimeter(&["demo", "--no-serve", "--data-dir", d], None);
    assert!(out.status.success(), "{}", stderr(&out));
    // The demo's export hint works as printed.
    let hint = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("perimeter export ")
                .map(str::to_string)
        })
        .expect("the demo hints at an export");
    let hinted: Vec<String> = hint
        .split('#')
        .next()
        .unwrap()
        .split_whitespace()
        .map(|w| w.trim_matches('\'').to_string())
        .collect();
    let mut args = vec!["export"];
    args.extend(hinted.iter().map(String::as_str));
    let out = crate::util::perimeter_in(dir.path(), &args, None);
    assert!(out.status.success(), "{hint}: {}", stderr(&out));
    assert!(dir.path().join("okta.parquet").is_file(), "{hint}");
    let query = "event.outcome:failure";
    let search = perimeter(
        &[
            "search",
            query,
            "--data-dir",
            d,
            "--format",
            "json",
            "--limit",
            "100000",
        ],
        None,
    );
    let ids: Vec<String> = json_lines(&search)
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.len() > 10, "{} failures", ids.len());
    let export = |name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        let mut args = vec![
            "export",
            query,
            "--data-dir",
            d,
            "--output",
            path.to_str().unwrap(),
        ];
        args.extend(extra);
        (perimeter(&args, None), path)
    };

    // The format follows the extension; every event search finds, in its order.
    let (out, jsonl) = export("failures.jsonl", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = format!("exported {n} events of the {n} matched", n = ids.len());
    assert!(stderr(&out).contains(&said), "{}", stderr(&out));
    let lines: Vec<String> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(lines, ids);

    let (out, csv) = export("failures.csv", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(
        rows[0].starts_with("@timestamp,event.module"),
        "{}",
        rows[0]
    );
    let csv_ids: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.rsplit(',').next().unwrap())
        .collect();
    assert_eq!(csv_ids, ids);

    let (out, parquet) = export("failures.parquet", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&parquet).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let mut parquet_ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let id = batch.column_by_name("event_id").unwrap().as_string::<i32>();
        let outcome = batch
            .column_by_name("event_outcome")
            .unwrap()
            .as_string::<i32>();
        for row in 0..batch.num_rows() {
            assert_eq!(outcome.value(row), "failure");
            parquet_ids.push(id.value(row).to_string());
        }
    }
    assert_eq!(parquet_ids, ids);

    // An existing file is kept unless --force; --format overrides the extension; a cut says so.
    let (out, _) = export("failures.jsonl", &["--max-events", "5"]);
    assert!(!out.status.success());
    assert_stderr_says(&out, "--force");
    assert_eq!(
        std::fs::read_to_string(&jsonl).unwrap().lines().count(),
        ids.len()
    );
    let (out, _) = export(
        "failures.jsonl",
        &["--max-events", "5", "--force", "--format", "csv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_says(&out, "cut at --max-events 5");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(
        text.split("\r\n").filter(|l| !l.is_empty()).count(),
        6,
        "{text}"
    );

    // A query the store refuses: an error, and nothing left behind.
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    let bad = perimeter(
        &[
            "export",
            "user.name:(",
            "--data-dir",
            d,
            "--output",
            dir.path().join("bad.jsonl").to_str().unwrap(),
        ],
        None,
    );
    assert!(!bad.status.success());
    assert_stderr_says(&bad, "invalid query");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
    // To standard output.
    let piped = perimeter(
        &[
            "export",
            query,
            "--data-dir",
            d,
            "--output",
            "-",
            "--max-events",
            "3",
        ],
        None,
    );
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert_eq!(json_lines(&piped).len(), 3);
}

/// The CLI's HTTP client (as the pollers' and the webhooks') offers the hybrid post-quantum key
/// exchange: a server that supports it settles on it. Without the provider the binary installs,
/// reqwest's own would be ring, which has no ML-KEM, and the handshake would settle on a
/// classical group.
#[test]
fn the_cli_client_offers_the_post_quantum_key_exchange() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = dir.path().join("cert.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let connection = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, socket);
        let (mut buf, mut head) = ([0u8; 4096], Vec::new());
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let body = r#"{"error":"no such token"}"#;
        let _ = write!(
            tls,
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.conn.send_close_notify();
        let _ = tls.flush();
        tls.conn.negotiated_key_exchange_group().map(|g| g.name())
    });
    let server_url = format!("https://localhost:{port}");
    let out = perimeter(
        &[
            "alerts",
            "--server",
            &server_url,
            "--token",
            "x",
            "--ca-cert",
            ca.to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    assert_stderr_says(&out, "401");
    assert_eq!(
        server.join().unwrap(),
        Some(rustls::NamedGroup::X25519MLKEM768),
        "{}",
        stderr(&out)
    );
}

/// Searching a data directory without the config that wrote it: when the directory holds
/// data but no generated key, and no `[mask] hmac_key` is given, the service may have hashed
/// with a key of its own, and a search for a hashed value would find nothing without a word:
/// the command warns. Not for the demo's directory, hashed with the built-in key by design.
#[test]
fn searching_a_data_directory_without_its_key_warns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("index")).unwrap();
    let d = data.to_str().unwrap();
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--tenant",
            "acme",
            "AKIA5X7Q2RZK4M8N3PTW",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_says(&out, "pass its --config");
    std::fs::write(data.join(".perimeter-demo"), "").unwrap();
    let out = perimeter(
        &[
            "search",
            "--data-dir",
            d,
            "--tenant",
            "acme",
            "AKIA5X7Q2RZK4M8N3PTW",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("hmac_key"), "{}", stderr(&out));
}

/// QA: a day's index deleted while the service was stopped went unnoticed (the day searched as
/// empty, events sent again were stored again). `run --check` says so and names the rebuild.
#[test]
fn run_check_warns_of_a_day_without_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = perimeter(
        &["demo", "--no-serve", "--data-dir", data.to_str().unwrap()],
        None,
    );
    assert!(demo.status.success(), "{}", stderr(&demo));
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(&cfg, format!("data_dir = {data:?}\n")).unwrap();
    let check = || {
        let out = perimeter(&["--config", cfg.to_str().unwrap(), "run", "--check"], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!check().contains("have no index"), "{}", check());
    let tenant = std::fs::read_dir(data.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let day = std::fs::read_dir(&tenant)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    std::fs::remove_dir_all(&day).unwrap();
    let text = check();
    assert!(
        text.contains("warn   store: 1 day(s) hold events in Parquet files but have no index")
            && text.contains("perimeter reindex"),
        "{text}"
    );
}

/// QA: `run --check` printed its error lines as they were, while `run` masks the same errors in
/// its log: a token in a path showed in clear.
#[test]
fn run_check_masks_its_error_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("perimeter.toml");
    let rules = dir.path().join("ghp_abcdefghijklmnopqrstuvwxyz0123456789");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nrules = [{rules:?}]\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = perimeter(&["--config", cfg.to_str().unwrap(), "run", "--check"], None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("error  rules: "), "{text}");
    assert!(
        !text.contains("abcdefghijklmnopqrstuvwxyz0123456789"),
        "{text}"
    );
}

/// QA: `[ueba]` values `run --check` refuses were clamped by `run` and `detect` without a word,
/// so the thresholds in use were not the ones configured. Both refuse them, naming the key.
#[test]
fn run_and_detect_refuse_the_ueba_values_run_check_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("perimeter.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[ueba.volume_anomaly]\nmax_p_value = 0.0\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    for check in [true, false] {
        let out = run_until_it_ends(&cfg, check);
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(
            !out.status.success() && said.contains("max_p_value"),
            "check {check}: {said}"
        );
    }
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("mfa.yml"), MFA_RULE).unwrap();
    let out = perimeter(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "detect",
            "--rules",
            rules.to_str().unwrap(),
            "--source",
            "okta",
        ],
        Some(b"{}\n"),
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    assert_stderr_says(&out, "max_p_value");
}
