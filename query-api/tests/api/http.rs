//! The API over real HTTP on a loopback port, with a real store in a tempdir.

use std::collections::BTreeSet;

use super::util::*;
use super::webhook_receiver::WebhookReceiver;
use chrono::Utc;
use perimeter_model::Outcome;
use perimeter_query_api::Role;
use perimeter_store::StoreBatch;
use reqwest::Method;
use serde_json::{json, Value};

const ROLES: [Role; 3] = [Role::Viewer, Role::Responder, Role::Admin];

#[test]
fn health_readiness_and_metrics_need_no_token() {
    let api = TestApi::start();
    let health: Value = api
        .client
        .get(api.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let ready = api.client.get(api.url("/readyz")).send().unwrap();
    assert_eq!(ready.status(), 200);

    // A counted API request shows up next to the pipeline's counters.
    api.get_json("/api/v1/alerts", ACME, Role::Viewer);
    let metrics = api.client.get(api.url("/metrics")).send().unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text().unwrap();
    assert!(
        text.contains("perimeter_events_received_total{source=\"okta\"} 6"),
        "{text}"
    );
    // The store's own counters, read at scrape time: 8 events and 4 alerts were written.
    assert!(
        text.contains("perimeter_store_events_written_total 8\n"),
        "{text}"
    );
    assert!(text.contains("perimeter_store_alerts_stored 4\n"), "{text}");
    assert!(
        text.contains("perimeter_store_commit_latency_seconds 0.25"),
        "{text}"
    );
    assert!(
        text.contains(
            "perimeter_api_requests_total{route=\"/api/v1/alerts\",method=\"GET\",status=\"200\"} 1"
        ),
        "{text}"
    );

    // Every metric says what it counts (QA: 19 of them did), right before its type.
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(typed) = line.strip_prefix("# TYPE ") {
            let name = typed.split(' ').next().unwrap();
            assert!(
                i > 0 && lines[i - 1].starts_with(&format!("# HELP {name} ")),
                "{name} has no HELP line:\n{text}"
            );
        }
    }

    api.state.set_ready(false);
    assert_error(
        api.client.get(api.url("/readyz")).send().unwrap(),
        503,
        "unavailable",
    );
}

/// Clients choose the method and the path: neither may mint a new series in
/// `api_requests_total` (a label per made-up method or per concrete id is unbounded).
#[test]
fn request_metrics_labels_stay_bounded_whatever_the_client_sends() {
    let api = TestApi::start();
    for (method, path) in [
        ("FOO1", "/api/v1/alerts"),
        ("FOO2", "/api/v1/alerts"),
        ("BAR", "/no/such/route/123"),
    ] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let r = api.client.request(method, api.url(path)).send().unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
    }
    let id = &api.data.acme_alerts[0].id;
    api.get_json(&format!("/api/v1/alerts/{id}"), ACME, Role::Viewer);
    let text = api.metrics_text();
    let api_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("perimeter_api_requests_total{"))
        .collect();
    for line in &api_lines {
        assert!(
            !line.contains("FOO") && !line.contains("BAR") && !line.contains(id.as_str()),
            "client-chosen label value in {line}"
        );
    }
    assert!(
        api_lines
            .iter()
            .any(|l| l.contains("route=\"/api/v1/alerts\",method=\"other\"") && l.ends_with(" 2")),
        "{api_lines:?}"
    );
    assert!(
        api_lines
            .iter()
            .any(|l| l.contains("route=\"unmatched\",method=\"other\"")),
        "{api_lines:?}"
    );
    assert!(
        api_lines
            .iter()
            .any(|l| l.contains("route=\"/api/v1/alerts/{id}\",method=\"GET\"")),
        "{api_lines:?}"
    );
}

/// A store that fails batch after batch makes the service not ready (503 with since when and
/// why, and a gauge), and the next stored batch makes it ready again. Liveness stays 200.
#[test]
fn readiness_fails_while_the_store_fails_to_write() {
    let api = TestApi::start();
    let blocker = api
        .dir
        .path()
        .join("store/parquet/events/tenant=acme/source=zoom");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a directory").unwrap();
    let batch = StoreBatch {
        events: vec![event(
            ACME,
            "zoom",
            50,
            "dana",
            "user.signin",
            Outcome::Success,
        )],
        ..StoreBatch::default()
    };
    assert!(api.state.store.write_batch(&batch).is_err());

    let body = assert_error(
        api.client.get(api.url("/readyz")).send().unwrap(),
        503,
        "unavailable",
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("failing to write") && message.contains("source=zoom"),
        "{body}"
    );
    assert_eq!(
        api.client.get(api.url("/healthz")).send().unwrap().status(),
        200
    );
    let failing = |n: u32| {
        let metrics = api.metrics_text();
        assert!(
            metrics.contains(&format!("perimeter_store_batches_failing {n}\n")),
            "{metrics}"
        );
    };
    failing(1);

    std::fs::remove_file(&blocker).unwrap();
    api.state.store.write_batch(&batch).unwrap();
    assert_eq!(
        api.client.get(api.url("/readyz")).send().unwrap().status(),
        200
    );
    failing(0);
}

/// Every authenticated route, with a body where it needs one.
fn protected_routes(api: &TestApi) -> Vec<(Method, String, Option<Value>)> {
    let alert_id = &api.data.acme_alerts[0].id;
    let event_id = &api.data.acme_events[0].id().0;
    vec![
        (Method::GET, "/api/v1/alerts".into(), None),
        (Method::GET, "/api/v1/alerts/summary".into(), None),
        (Method::GET, format!("/api/v1/alerts/{alert_id}"), None),
        (
            Method::PATCH,
            format!("/api/v1/alerts/{alert_id}"),
            Some(json!({"note": "looking"})),
        ),
        (Method::GET, "/api/v1/events/search?q=alice".into(), None),
        (Method::GET, "/api/v1/events/histogram?q=alice".into(), None),
        (
            Method::GET,
            "/api/v1/events/top?field=user.name".into(),
            None,
        ),
        (
            Method::GET,
            "/api/v1/events/export?max_events=1".into(),
            None,
        ),
        (Method::GET, format!("/api/v1/events/{event_id}"), None),
        (
            Method::GET,
            format!("/api/v1/events/{event_id}/context"),
            None,
        ),
        (Method::GET, "/api/v1/dead-letters".into(), None),
        (Method::GET, "/api/v1/sources".into(), None),
        (Method::GET, "/api/v1/rules".into(), None),
        (
            Method::PATCH,
            "/api/v1/rules/okta_bruteforce".into(),
            Some(json!({"enabled": true})),
        ),
        (
            Method::POST,
            "/api/v1/rules/test".into(),
            Some(json!({"rule": "title: t\nkeyword: alice", "events": []})),
        ),
        (Method::GET, "/api/v1/audit".into(), None),
        (Method::GET, "/api/v1/destinations".into(), None),
        (
            Method::POST,
            "/api/v1/destinations".into(),
            Some(json!({"name": "soc", "url": "https://hooks.example.com/soc"})),
        ),
    ]
}

#[test]
fn missing_malformed_unknown_revoked_and_expired_tokens_are_401() {
    let api = TestApi::start();
    let (revoked_info, revoked) = api
        .token_store
        .create(ACME, Role::Admin, Some("old"))
        .unwrap();
    assert_eq!(
        api.token_store.revoke(&revoked_info.id).unwrap(),
        perimeter_query_api::auth::Revocation::Revoked
    );
    let (_, expired) = api
        .token_store
        .create_until(
            ACME,
            Role::Admin,
            Some("contractor"),
            Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
        )
        .unwrap();
    let (_, expiring) = api
        .token_store
        .create_until(
            ACME,
            Role::Viewer,
            Some("audit"),
            Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        )
        .unwrap();
    // Not expired yet: it works like any token; expired, the 401 says so.
    let ok = api
        .client
        .get(api.url("/api/v1/alerts"))
        .bearer_auth(&expiring)
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = assert_error(
        api.client
            .get(api.url("/api/v1/alerts"))
            .bearer_auth(&expired)
            .send()
            .unwrap(),
        401,
        "unauthorized",
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the token expired at ")),
        "{refused}"
    );
    for (method, path, body) in protected_routes(&api) {
        let build = |auth: Option<&str>| {
            let mut r = api.client.request(method.clone(), api.url(&path));
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            if let Some(b) = &body {
                r = r.json(b);
            }
            r.send().unwrap()
        };
        assert_error(build(None), 401, "unauthorized");
        assert_error(build(Some("Bearer prm_0000")), 401, "unauthorized");
        assert_error(
            build(Some(&format!("Basic {}", api.token(ACME, Role::Admin)))),
            401,
            "unauthorized",
        );
        assert_error(
            build(Some(&format!("Bearer {revoked}"))),
            401,
            "unauthorized",
        );
        assert_error(
            build(Some(&format!("Bearer {expired}"))),
            401,
            "unauthorized",
        );
    }
    // A revoked or expired token still presented is in its tenant's audit log, saying which.
    let audit = api.get_json("/api/v1/audit?limit=1000", ACME, Role::Admin);
    let denied = |outcome: &str| {
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "request.denied" && e["details"]["outcome"] == outcome)
            .count()
    };
    assert!(denied("revoked") >= 1, "{audit}");
    assert!(denied("expired") >= 1, "{audit}");
    // Each entry says where the request came from (QA: nothing did).
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["client"] == "127.0.0.1"),
        "{audit}"
    );
}

/// The auth scheme is case-insensitive (RFC 7235), and every 401 says which scheme to use.
#[test]
fn the_bearer_scheme_is_case_insensitive_and_every_401_challenges() {
    let api = TestApi::start();
    let token = api.token(ACME, Role::Viewer);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = api
            .client
            .get(api.url("/api/v1/alerts"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    for (method, path, body) in protected_routes(&api) {
        for authorization in [None, Some("Bearer prm_0000"), Some("Basic dXNlcjpwYXNz")] {
            let mut r = api.client.request(method.clone(), api.url(&path));
            if let Some(a) = authorization {
                r = r.header("authorization", a);
            }
            if let Some(b) = &body {
                r = r.json(b);
            }
            let r = r.send().unwrap();
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string());
            assert_error(r, 401, "unauthorized");
            assert_eq!(
                challenge.as_deref(),
                Some("Bearer realm=\"perimeter\""),
                "{method} {path} with {authorization:?}"
            );
        }
    }
}

#[test]
fn every_role_on_every_endpoint() {
    let api = TestApi::start();
    for role in ROLES {
        for (method, path, body) in protected_routes(&api) {
            let mut r = api.req(method.clone(), &path, ACME, role);
            if let Some(b) = &body {
                r = r.json(b);
            }
            let response = r.send().unwrap();
            let needed = match (method.as_str(), path.as_str()) {
                ("PATCH", p) if p.starts_with("/api/v1/rules/") => Role::Admin,
                ("PATCH", _) => Role::Responder,
                (_, "/api/v1/rules/test") | (_, "/api/v1/audit") => Role::Admin,
                (_, p) if p.starts_with("/api/v1/events/export") => Role::Admin,
                (_, "/api/v1/destinations") => Role::Admin,
                _ => Role::Viewer,
            };
            if role >= needed {
                let status = response.status();
                let text = response.text().unwrap();
                let ok = if method == Method::POST && path.ends_with("/destinations") {
                    201
                } else {
                    200
                };
                assert_eq!(status, ok, "{role} {method} {path}: {text}");
                serde_json::from_str::<Value>(&text).unwrap();
            } else {
                assert_error(response, 403, "forbidden");
            }
        }
    }
}

#[test]
fn the_role_is_checked_before_the_body_is_read() {
    let api = TestApi::start();
    let path = format!("/api/v1/alerts/{}", api.data.acme_alerts[0].id);
    let r = api
        .req(Method::PATCH, &path, ACME, Role::Viewer)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_error(r, 403, "forbidden");
    let r = api
        .req(Method::POST, "/api/v1/rules/test", ACME, Role::Responder)
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .unwrap();
    assert_error(r, 403, "forbidden");
    // Both refusals are in the tenant's audit log, with what was tried.
    let audit = api.get_json("/api/v1/audit?action=request.denied", ACME, Role::Admin);
    let items = audit["items"].as_array().unwrap();
    let tried: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|e| {
            (
                e["target"].as_str().unwrap(),
                e["role"].as_str().unwrap(),
                e["details"]["needs"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tried,
        [
            ("POST /api/v1/rules/test", "responder", "admin"),
            (&*format!("PATCH {path}"), "viewer", "responder"),
        ],
        "{audit}"
    );
    assert!(items.iter().all(|e| e["details"]["outcome"] == "forbidden"));
    // An empty filter is none (QA: `action=` answered nothing, as if nobody did anything).
    let unfiltered = api.get_json("/api/v1/audit?limit=1000", ACME, Role::Admin);
    let empty = api.get_json(
        "/api/v1/audit?limit=1000&action=&token=&target=&cursor=",
        ACME,
        Role::Admin,
    );
    let actions = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].to_string())
            .collect()
    };
    // (The second read also sees the first one's own entry.)
    assert_eq!(actions(&empty)[1..], actions(&unfiltered)[..]);
}

/// ADR 002: the token and role come before the body, also for a body announced over the
/// limit: 401 without a valid token, 403 (audited) without the role, and only then 413.
#[test]
fn the_token_and_role_are_checked_before_the_body_size() {
    let api = TestApi::start();
    let path = format!("/api/v1/alerts/{}", api.data.acme_alerts[0].id);
    // The request announces 5 MiB and sends none of it: an answer means it was not read.
    let oversized = |authorization: &str| {
        raw_request(
            &api,
            &format!(
                "PATCH {path} HTTP/1.1\r\nHost: x\r\n{authorization}\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                5 * 1024 * 1024
            ),
        )
    };
    let anonymous = oversized("");
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    assert!(
        anonymous.contains("\"code\":\"unauthorized\""),
        "{anonymous}"
    );
    let unknown = oversized("Authorization: Bearer prm_0000\r\n");
    assert!(unknown.starts_with("HTTP/1.1 401"), "{unknown}");
    let viewer = oversized(&format!(
        "Authorization: Bearer {}\r\n",
        api.token(ACME, Role::Viewer)
    ));
    assert!(viewer.starts_with("HTTP/1.1 403"), "{viewer}");
    assert!(viewer.contains("\"code\":\"forbidden\""), "{viewer}");
    let responder = oversized(&format!(
        "Authorization: Bearer {}\r\n",
        api.token(ACME, Role::Responder)
    ));
    assert!(responder.starts_with("HTTP/1.1 413"), "{responder}");
    assert!(
        responder.contains("\"code\":\"payload_too_large\""),
        "{responder}"
    );
    let denied = api.get_json("/api/v1/audit?action=request.denied", ACME, Role::Admin);
    assert_eq!(denied["items"].as_array().unwrap().len(), 1, "{denied}");
    assert_eq!(denied["items"][0]["role"], "viewer", "{denied}");
    assert_eq!(denied["items"][0]["target"], format!("PATCH {path}"));
}

/// A read or change that failed is audited with its outcome and error code, so the trail
/// tells a 404 or a refused request from an answered one; answered ones carry no outcome.
#[test]
fn failed_requests_are_audited_with_their_outcome() {
    let api = TestApi::start();
    let missing = "0123456789abcdef";
    let alert_id = api.data.acme_alerts[0].id.clone();
    let event_id = api.data.acme_events[0].id().to_string();
    let get = |path: &str, role: Role| api.get(path, ACME, role);
    assert_eq!(
        get(&format!("/api/v1/events/{missing}"), Role::Viewer).status(),
        404
    );
    assert_eq!(
        get(&format!("/api/v1/alerts/{missing}"), Role::Viewer).status(),
        404
    );
    assert_eq!(
        get(&format!("/api/v1/events/{missing}/context"), Role::Viewer).status(),
        404
    );
    assert_eq!(
        get("/api/v1/events/search?q=(((", Role::Viewer).status(),
        400
    );
    assert_eq!(get("/api/v1/alerts?limit=5000", Role::Viewer).status(), 400);
    assert_eq!(get("/api/v1/alerts?verb=x", Role::Viewer).status(), 400);
    assert_eq!(
        get("/api/v1/events/export?format=xml", Role::Admin).status(),
        400
    );
    let bad_status = api.patch(
        &format!("/api/v1/alerts/{alert_id}"),
        ACME,
        Role::Responder,
        json!({"status": "closed"}),
    );
    assert_eq!(bad_status.status(), 400);
    api.get_json(&format!("/api/v1/events/{event_id}"), ACME, Role::Viewer);

    let audit = api.get_json("/api/v1/audit?limit=100", ACME, Role::Admin);
    let lines: Vec<(String, String, String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
            (
                text(&e["action"]),
                text(&e["target"]),
                text(&e["details"]["outcome"]),
                text(&e["details"]["error"]),
            )
        })
        .collect();
    let line = |action: &str, target: &str, outcome: &str, error: &str| {
        (
            action.to_string(),
            target.to_string(),
            outcome.to_string(),
            error.to_string(),
        )
    };
    assert_eq!(
        lines,
        [
            line("events.get", missing, "not_found", "not_found"),
            line("alerts.get", missing, "not_found", "not_found"),
            line("events.context", missing, "not_found", "not_found"),
            line("events.search", "-", "invalid", "invalid_query"),
            line("alerts.list", "-", "invalid", "limit_too_large"),
            line("alerts.list", "-", "invalid", "invalid_parameter"),
            line("events.export", "-", "invalid", "invalid_parameter"),
            line("alerts.update", &alert_id, "invalid", "invalid_json"),
            line("events.get", &event_id, "-", "-"),
        ],
        "{audit}"
    );
    // What was asked is kept with the refusal.
    let search = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "events.search")
        .unwrap();
    assert_eq!(search["details"]["q"], "(((", "{search}");
}

/// `GET /audit?target=<id>` is everything about that id: attempts refused for the role, whose
/// target is the method and path, included.
#[test]
fn the_audit_target_filter_finds_refused_attempts_on_the_id() {
    let api = TestApi::start();
    let id = api.data.acme_alerts[0].id.clone();
    let other = api.data.acme_alerts[1].id.clone();
    let refused = api.patch(
        &format!("/api/v1/alerts/{id}"),
        ACME,
        Role::Viewer,
        json!({"status": "resolved"}),
    );
    assert_error(refused, 403, "forbidden");
    assert_error(
        api.patch(
            &format!("/api/v1/alerts/{other}"),
            ACME,
            Role::Viewer,
            json!({"status": "resolved"}),
        ),
        403,
        "forbidden",
    );
    api.get_json(&format!("/api/v1/alerts/{id}"), ACME, Role::Viewer);
    let about = api.get_json(&format!("/api/v1/audit?target={id}"), ACME, Role::Admin);
    let actions: Vec<&str> = about["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["alerts.get", "request.denied"], "{about}");
    assert_eq!(
        about["items"][1]["target"],
        format!("PATCH /api/v1/alerts/{id}"),
        "{about}"
    );
}

/// A change is a JSON object: the array serde would also read as the fields in order is
/// refused, and `"assignee": null` unassigns like `""`.
#[test]
fn alert_changes_are_objects_and_a_null_assignee_unassigns() {
    let api = TestApi::start();
    let path = format!("/api/v1/alerts/{}", api.data.acme_alerts[0].id);
    for body in [
        json!(["acknowledged", null, null]),
        json!("acknowledged"),
        json!([]),
    ] {
        assert_error(
            api.patch(&path, ACME, Role::Responder, body),
            400,
            "invalid_json",
        );
    }
    let status = |api: &TestApi| api.get_json(&path, ACME, Role::Viewer)["alert"]["status"].clone();
    assert_eq!(status(&api), "open", "a refused body changed the alert");
    let assigned = api.patch(&path, ACME, Role::Responder, json!({"assignee": "dana"}));
    assert_eq!(assigned.status(), 200);
    let cleared = api.patch(&path, ACME, Role::Responder, json!({"assignee": null}));
    let code = cleared.status();
    let cleared: Value = cleared.json().unwrap();
    assert_eq!(code, 200, "{cleared}");
    assert!(cleared["assignee"].is_null(), "{cleared}");
    assert!(api.get_json(&path, ACME, Role::Viewer)["assignee"].is_null());
    // Blanks around a name are dropped, blanks alone unassign; control characters are refused.
    let padded = api.patch(&path, ACME, Role::Responder, json!({"assignee": "  dana "}));
    assert_eq!(padded.json::<Value>().unwrap()["assignee"], "dana");
    let blank = api.patch(&path, ACME, Role::Responder, json!({"assignee": "   "}));
    assert!(blank.json::<Value>().unwrap()["assignee"].is_null());
    assert_error(
        api.patch(
            &path,
            ACME,
            Role::Responder,
            json!({"assignee": "bob\u{1b}]0;owned\u{7}"}),
        ),
        400,
        "invalid_parameter",
    );
    // Absent is still no change at all.
    assert_error(
        api.patch(&path, ACME, Role::Responder, json!({})),
        400,
        "invalid_json",
    );
}

/// The rule, source, destination and audit handlers record their failures the same way.
#[test]
fn failed_admin_and_list_requests_are_audited_with_their_outcome() {
    let api = TestApi::start();
    let admin = |method: Method, path: &str, body: Value| {
        api.req(method, path, ACME, Role::Admin)
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        api.get("/api/v1/sources?x=1", ACME, Role::Viewer).status(),
        400
    );
    assert_eq!(
        api.get("/api/v1/rules?x=1", ACME, Role::Viewer).status(),
        400
    );
    assert_eq!(
        admin(Method::PATCH, "/api/v1/rules/okta_bruteforce", json!([])),
        400
    );
    assert_eq!(
        admin(
            Method::PATCH,
            "/api/v1/rules/no_such_rule",
            json!({"enabled": false, "reason": "noisy"})
        ),
        404
    );
    assert_eq!(
        admin(
            Method::POST,
            "/api/v1/destinations",
            json!({"name": "soc", "url": "ftp://hooks.example.com"})
        ),
        400
    );
    assert_eq!(
        api.get("/api/v1/audit?cursor=1.1", ACME, Role::Admin)
            .status(),
        400
    );

    let audit = api.get_json("/api/v1/audit?limit=6", ACME, Role::Admin);
    let lines: Vec<String> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap_or("-"),
                e["details"]["outcome"].as_str().unwrap_or("-"),
                e["details"]["error"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            "sources.list - invalid invalid_parameter",
            "rules.list - invalid invalid_parameter",
            "rules.switch okta_bruteforce invalid invalid_json",
            "rules.switch_off no_such_rule not_found not_found",
            "destinations.create - invalid invalid_parameter",
            "audit.list - invalid invalid_query",
        ],
        "{audit}"
    );
}

#[test]
fn the_alert_summary_counts_this_tenants_selected_alerts() {
    let api = TestApi::start();
    let all = api.get_json("/api/v1/alerts/summary", ACME, Role::Viewer);
    assert_eq!(all["total"], 3, "{all}");
    assert_eq!(all["by_status"]["open"], 3);
    assert_eq!(all["by_severity"]["critical"], 1);
    assert_eq!(all["by_rule"].as_array().unwrap().len(), 3);
    assert_eq!(all["by_entity"].as_array().unwrap().len(), 3);
    assert!(all["oldest"].is_string() && all["newest"].is_string());
    let okta = api.get_json(
        "/api/v1/alerts/summary?source=okta&severity=high",
        ACME,
        Role::Viewer,
    );
    assert_eq!(okta["total"], 1, "{okta}");
    assert_eq!(okta["by_rule"][0]["rule_id"], "okta_bruteforce");
    assert_eq!(okta["by_rule"][0]["title"], "Okta brute force");
    assert_eq!(okta["by_entity"][0]["entity"], "alice");
    let globex = api.get_json("/api/v1/alerts/summary", GLOBEX, Role::Viewer);
    assert_eq!(globex["total"], 1);
    assert_eq!(globex["by_entity"][0]["entity"], "mallory");
    for (query, code) in [
        ("?limit=5", "invalid_parameter"),
        ("?status=closed", "invalid_parameter"),
        ("?from=yesterday", "invalid_parameter"),
    ] {
        let r = api.get(
            &format!("/api/v1/alerts/summary{query}"),
            ACME,
            Role::Viewer,
        );
        assert_error(r, 400, code);
    }
}

#[test]
fn alerts_filter_sort_and_paginate() {
    let api = TestApi::start();
    let list = |query: &str| -> Vec<String> {
        let body = api.get_json(&format!("/api/v1/alerts{query}"), ACME, Role::Viewer);
        ids(&body["items"], "/alert/rule_id")
    };
    // Default: newest first, only this tenant's.
    assert_eq!(
        list(""),
        ["okta_new_country", "github_admin_added", "okta_bruteforce"]
    );
    assert_eq!(
        list("?sort=oldest"),
        ["okta_bruteforce", "github_admin_added", "okta_new_country"]
    );
    assert_eq!(list("?severity=critical"), ["github_admin_added"]);
    assert_eq!(
        list("?source=okta"),
        ["okta_new_country", "okta_bruteforce"]
    );
    assert_eq!(list("?rule=okta_bruteforce"), ["okta_bruteforce"]);
    assert_eq!(list("?entity=carol"), ["github_admin_added"]);
    // An empty filter value filters nothing, whichever filter it is.
    for empty in ["?entity=", "?source=", "?rule=", "?q=", "?entity=&q=%20"] {
        assert_eq!(list(empty).len(), 3, "{empty}");
    }
    assert_eq!(list("?status=open").len(), 3);
    assert_eq!(list("?status=resolved").len(), 0);
    // Filter values are taken whatever their case, as severities always were.
    assert_eq!(list("?status=OPEN").len(), 3);
    assert_eq!(list("?severity=CRITICAL"), ["github_admin_added"]);
    assert_eq!(list("?source=OKTA"), list("?source=okta"));
    assert_eq!(list("?q=country"), ["okta_new_country"]);
    assert_eq!(
        list("?from=2024-05-01T10:10:00Z&to=2024-05-01T10:25:00Z"),
        ["github_admin_added"]
    );
    // Dates (midnight UTC) and times relative to now, as analysts type them.
    assert_eq!(list("?from=2024-05-01&to=2024-05-02").len(), 3);
    assert_eq!(list("?to=2024-05-01").len(), 0);
    assert_eq!(list("?from=now-1h").len(), 0);
    assert_eq!(list("?from=2024-04-30&to=now").len(), 3);

    // Cursor pagination visits every alert exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("/api/v1/alerts?limit=1&cursor={}", urlencode(c)),
            None => "/api/v1/alerts?limit=1".to_string(),
        };
        let page = api.get_json(&q, ACME, Role::Viewer);
        assert!(page["items"].as_array().unwrap().len() <= 1);
        seen.extend(ids(&page["items"], "/alert/id"));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected: Vec<String> = api.data.acme_alerts.iter().map(|a| a.id.clone()).collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);
}

#[test]
fn alert_detail_includes_evidence_events() {
    let api = TestApi::start();
    let alert = &api.data.acme_alerts[0];
    let body = api.get_json(&format!("/api/v1/alerts/{}", alert.id), ACME, Role::Viewer);
    assert_eq!(body["alert"]["id"], alert.id.as_str());
    assert_eq!(body["alert"]["severity"], "high");
    let evidence: BTreeSet<String> = ids(&body["evidence"], "/event/id").into_iter().collect();
    let expected: BTreeSet<String> = alert.event_ids.iter().cloned().collect();
    assert_eq!(evidence, expected);
    assert_eq!(body["evidence_missing"], json!([]));
}

#[test]
fn alert_changes_are_recorded_with_who_and_when_and_audited() {
    let api = TestApi::start();
    let alert = &api.data.acme_alerts[1];
    let path = format!("/api/v1/alerts/{}", alert.id);
    let r = api.patch(
        &path,
        ACME,
        Role::Responder,
        json!({"status": "acknowledged", "assignee": "dana"}),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = api.patch(
        &path,
        ACME,
        Role::Admin,
        json!({"status": "false_positive", "note": "test org"}),
    );
    assert_eq!(r.status(), 200);

    let body = api.get_json(&path, ACME, Role::Viewer);
    assert_eq!(body["alert"]["status"], "false_positive");
    assert_eq!(body["assignee"], "dana");
    // Every change: which field, from what to what, by which token, when.
    let started = chrono::Utc::now() - chrono::Duration::minutes(5);
    let history: Vec<(String, String, String)> = body["history"]
        .as_array()
        .expect("history array")
        .iter()
        .map(|c| {
            let at = chrono::DateTime::parse_from_rfc3339(c["at"].as_str().unwrap()).unwrap();
            assert!(at > started, "change time {at} is not now");
            (
                c["field"].as_str().unwrap().to_string(),
                c["to"].as_str().unwrap_or("").to_string(),
                c["by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let by = |role: &str| format!("token:acme-{role}:");
    let has = |field: &str, to: &str, role: &str| {
        history
            .iter()
            .any(|(f, t, b)| f == field && t == to && b.starts_with(&by(role)))
    };
    assert!(has("status", "acknowledged", "responder"), "{history:?}");
    assert!(has("assignee", "dana", "responder"), "{history:?}");
    assert!(has("status", "false_positive", "admin"), "{history:?}");
    assert!(
        history
            .iter()
            .any(|(f, _, b)| f == "note" && b.starts_with(&by("admin"))),
        "{history:?}"
    );
    assert_eq!(body["notes"][0]["text"], "test org");
    assert!(body["notes"][0]["by"]
        .as_str()
        .unwrap()
        .starts_with(&by("admin")));

    // The filter sees the new status.
    let resolved = api.get_json("/api/v1/alerts?status=false_positive", ACME, Role::Viewer);
    assert_eq!(
        ids(&resolved["items"], "/alert/id"),
        std::slice::from_ref(&alert.id)
    );
    // Several statuses at once: the alerts of any of them.
    let all = api.get_json("/api/v1/alerts?limit=1000", ACME, Role::Viewer)["items"]
        .as_array()
        .unwrap()
        .len();
    let active = api.get_json(
        "/api/v1/alerts?status=open,acknowledged&limit=1000",
        ACME,
        Role::Viewer,
    );
    assert_eq!(active["items"].as_array().unwrap().len(), all - 1);
    let either = api.get_json(
        "/api/v1/alerts?status=false_positive,%20OPEN&limit=1000",
        ACME,
        Role::Viewer,
    );
    assert_eq!(either["items"].as_array().unwrap().len(), all);

    // The audit log says who changed what, newest first.
    let audit = api.get_json("/api/v1/audit?limit=100", ACME, Role::Admin);
    let updates: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "alerts.update")
        .collect();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["token_name"], "acme-admin");
    assert_eq!(updates[0]["target"], alert.id.as_str());
    assert_eq!(updates[0]["details"]["status"], "false_positive");
    assert_eq!(updates[1]["token_name"], "acme-responder");
}

#[test]
fn another_tenants_ids_answer_404() {
    let api = TestApi::start();
    let acme_alert = &api.data.acme_alerts[0];
    let acme_event = &api.data.acme_events[0];
    for role in ROLES {
        assert_error(
            api.get(&format!("/api/v1/alerts/{}", acme_alert.id), GLOBEX, role),
            404,
            "not_found",
        );
        assert_error(
            api.get(&format!("/api/v1/events/{}", acme_event.id()), GLOBEX, role),
            404,
            "not_found",
        );
    }
    let r = api.patch(
        &format!("/api/v1/alerts/{}", acme_alert.id),
        GLOBEX,
        Role::Admin,
        json!({"status": "resolved"}),
    );
    assert_error(r, 404, "not_found");
    // The attempt is in the audit log of the tenant that made it.
    let audit = api.get_json("/api/v1/audit?action=alerts.update", GLOBEX, Role::Admin);
    assert_eq!(
        audit["items"][0]["target"],
        acme_alert.id.as_str(),
        "{audit}"
    );
    assert_eq!(
        audit["items"][0]["details"]["outcome"], "not_found",
        "{audit}"
    );
    // ... and the alert is unchanged for its owner.
    let body = api.get_json(
        &format!("/api/v1/alerts/{}", acme_alert.id),
        ACME,
        Role::Viewer,
    );
    assert_eq!(body["alert"]["status"], "open");

    // Lists and searches never show the other tenant's data.
    let alerts = api.get_json("/api/v1/alerts", GLOBEX, Role::Viewer);
    assert_eq!(
        ids(&alerts["items"], "/alert/id"),
        [api.data.globex_alerts[0].id.clone()]
    );
    let found = api.get_json("/api/v1/events/search?q=alice", GLOBEX, Role::Viewer);
    assert_eq!(found["items"].as_array().unwrap().len(), 0, "{found}");
    let letters = api.get_json("/api/v1/dead-letters", GLOBEX, Role::Viewer);
    assert_eq!(letters["items"].as_array().unwrap().len(), 0);
    // Own ids still work.
    api.get_json(
        &format!("/api/v1/events/{}", api.data.globex_events[0].id()),
        GLOBEX,
        Role::Viewer,
    );
}

#[test]
fn events_export_as_parquet_is_one_file_of_the_matching_events_newest_first() {
    use arrow::array::AsArray;
    use arrow::datatypes::TimestampMicrosecondType;
    use std::io::Write;
    let api = TestApi::start();
    // (id, tenant, source, @timestamp in µs, raw) of each row of an exported file.
    let rows = |path: &str| -> Vec<(String, String, String, i64, Value)> {
        let r = api.get(path, ACME, Role::Admin);
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/vnd.apache.parquet"
        );
        assert!(r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("perimeter-events.parquet"));
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&r.bytes().unwrap()).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(reader.schema(), &perimeter_store::export_arrow_schema());
        let mut out = Vec::new();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let text = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap()
                    .as_string::<i32>()
                    .clone()
            };
            let (id, tenant, source, raw) = (
                text("event_id"),
                text("tenant"),
                text("source"),
                text("raw"),
            );
            let ts = batch.column_by_name("timestamp").unwrap();
            let ts = ts.as_primitive::<TimestampMicrosecondType>();
            for row in 0..batch.num_rows() {
                out.push((
                    id.value(row).to_string(),
                    tenant.value(row).to_string(),
                    source.value(row).to_string(),
                    ts.value(row),
                    serde_json::from_str(raw.value(row)).unwrap(),
                ));
            }
        }
        out
    };
    // The same events, in the same order, as the JSON lines export of the same ask.
    let documents = |path: &str| -> Vec<Value> {
        let r = api.get(path, ACME, Role::Admin);
        assert_eq!(r.status(), 200);
        r.text()
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all = rows("/api/v1/events/export?format=parquet");
    let docs = documents("/api/v1/events/export");
    assert_eq!(all.len(), api.data.acme_events.len());
    assert_eq!(all.len(), docs.len());
    for ((id, tenant, source, ts, raw), doc) in all.iter().zip(&docs) {
        assert_eq!(id, doc["event"]["id"].as_str().unwrap());
        assert_eq!(tenant, ACME);
        assert_eq!(source, doc["perimeter"]["source"].as_str().unwrap());
        let at = chrono::DateTime::parse_from_rfc3339(doc["@timestamp"].as_str().unwrap());
        assert_eq!(*ts, at.unwrap().timestamp_micros());
        assert_eq!(raw, &doc["raw"]);
    }
    // A query and `max_events` as for the other formats; nothing matched is still a file.
    let alice = rows("/api/v1/events/export?format=parquet&q=alice&max_events=2");
    let alice_docs = documents("/api/v1/events/export?q=alice&max_events=2");
    assert_eq!(alice.len(), 2);
    let ids = |r: &[(String, String, String, i64, Value)]| -> Vec<String> {
        r.iter().map(|row| row.0.clone()).collect()
    };
    let doc_ids: Vec<String> = alice_docs
        .iter()
        .map(|d| d["event"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids(&alice), doc_ids);
    assert!(rows("/api/v1/events/export?format=parquet&q=user.name:nobody").is_empty());
    // The OpenAPI document offers the format and says what each answer is.
    let doc = served_openapi(&api);
    let op = &doc["paths"]["/api/v1/events/export"]["get"];
    let media: BTreeSet<&str> = op["responses"]["200"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        media,
        BTreeSet::from([
            "application/vnd.apache.parquet",
            "application/x-ndjson",
            "text/csv"
        ])
    );
    let format = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "format")
        .unwrap();
    assert_eq!(format["schema"]["enum"], json!(["jsonl", "csv", "parquet"]));
}

#[test]
fn events_export_streams_the_matching_events_of_the_tenant_as_json_lines() {
    let api = TestApi::start();
    let lines = |path: &str| -> Vec<Value> {
        let r = api.get(path, ACME, Role::Admin);
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/x-ndjson"
        );
        let text = r.text().unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text}");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON event"))
            .collect()
    };
    let event_ids = |docs: &[Value]| -> Vec<String> {
        docs.iter()
            .map(|d| d["event"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Everything of the tenant, newest first, nothing of the other tenant.
    let all = lines("/api/v1/events/export");
    let got: BTreeSet<String> = event_ids(&all).into_iter().collect();
    let want: BTreeSet<String> = api
        .data
        .acme_events
        .iter()
        .map(|e| e.id().0.clone())
        .collect();
    assert_eq!((got, all.len()), (want, api.data.acme_events.len()));
    let times: Vec<&str> = all
        .iter()
        .map(|d| d["@timestamp"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let expected = event_ids(&all);
    // A query and a time range, as for search; `max_events` keeps the newest.
    let alice: BTreeSet<String> = event_ids(&lines("/api/v1/events/export?q=alice"))
        .into_iter()
        .collect();
    let expected_alice: BTreeSet<String> = api.data.acme_events[..3]
        .iter()
        .map(|e| e.id().0.clone())
        .collect();
    assert_eq!(alice, expected_alice);
    let ranged = lines("/api/v1/events/export?from=2024-05-01T10:10:00Z&to=2024-05-01T10:20:00Z");
    assert_eq!(ranged.len(), 2);
    assert_eq!(
        event_ids(&lines("/api/v1/events/export?max_events=2")),
        expected[..2]
    );
    // The headers say how many matched and whether the file holds them all.
    let counts = |path: &str| {
        let r = api.get(path, ACME, Role::Admin);
        let h = |name: &str| r.headers()[name].to_str().unwrap().to_string();
        (
            h("x-perimeter-matched"),
            h("x-perimeter-exported"),
            h("x-perimeter-truncated"),
        )
    };
    let n = api.data.acme_events.len().to_string();
    assert_eq!(
        counts("/api/v1/events/export?max_events=2"),
        (n.clone(), "2".into(), "true".into())
    );
    assert_eq!(
        counts("/api/v1/events/export"),
        (n.clone(), n.clone(), "false".into())
    );
    assert_eq!(
        counts("/api/v1/events/export?q=alice&max_events=3"),
        ("3".into(), "3".into(), "false".into())
    );
    // Oldest first keeps the oldest.
    let mut oldest_two = expected[expected.len() - 2..].to_vec();
    oldest_two.reverse();
    assert_eq!(
        event_ids(&lines("/api/v1/events/export?sort=oldest&max_events=2")),
        oldest_two
    );
    // CSV for a spreadsheet: a header, then one row per event, newest first, id last.
    let r = api.get("/api/v1/events/export?format=csv", ACME, Role::Admin);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let text = r.text().unwrap();
    let rows: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(
        rows[0].starts_with("@timestamp,event.module,event.action,event.outcome,user.name"),
        "{text}"
    );
    assert_eq!(rows.len(), expected.len() + 1, "{text}");
    assert!(rows[1].ends_with(&format!(",{}", expected[0])), "{text}");
    // Bad asks are refused before any event is sent.
    for (path, code) in [
        ("/api/v1/events/export?q=(((", "invalid_query"),
        ("/api/v1/events/export?max_events=0", "invalid_parameter"),
        (
            "/api/v1/events/export?max_events=10000001",
            "limit_too_large",
        ),
        ("/api/v1/events/export?from=yesterday", "invalid_parameter"),
        ("/api/v1/events/export?format=xml", "invalid_parameter"),
        ("/api/v1/events/export?sort=sideways", "invalid_parameter"),
    ] {
        assert_error(api.get(path, ACME, Role::Admin), 400, code);
    }
    assert_error(
        api.get("/api/v1/events/export", ACME, Role::Responder),
        403,
        "forbidden",
    );
    // Exports are audited with their query.
    let audit = api.get_json("/api/v1/audit?limit=100", ACME, Role::Admin);
    let exports: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "events.export")
        .collect();
    assert!(
        exports.iter().any(|e| e["details"]["q"] == "alice"),
        "{audit}"
    );
}

#[test]
fn destinations_are_managed_by_admins_per_tenant() {
    let api = TestApi::start();
    let post = |tenant: &str, body: Value| {
        api.req(Method::POST, "/api/v1/destinations", tenant, Role::Admin)
            .json(&body)
            .send()
            .unwrap()
    };
    let r = post(
        ACME,
        json!({"name": "pagerduty", "url": "https://events.example.com/x", "min_severity": "high"}),
    );
    assert_eq!(r.status(), 201);
    let created: Value = r.json().unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("dst_"), "{created}");
    assert_eq!(created["min_severity"], "high");
    assert_eq!(created["format"], "json", "the default format");
    assert_eq!(created["tenant"], ACME);
    assert!(
        created["secret"].as_str().unwrap().starts_with("whsec_"),
        "{created}"
    );
    let listed = api.get_json("/api/v1/destinations", ACME, Role::Admin);
    assert_eq!(ids(&listed["items"], "/id"), vec![id.clone()]);
    assert!(
        listed["items"][0].get("secret").is_none(),
        "shown once: {listed}"
    );
    assert_eq!(
        listed["items"][0]["delivery"]["batches_delivered"], 0,
        "a new destination's delivery status: {listed}"
    );
    // The other tenant sees none of it and cannot delete it.
    let theirs = api.get_json("/api/v1/destinations", GLOBEX, Role::Admin);
    assert!(theirs["items"].as_array().unwrap().is_empty(), "{theirs}");
    let path = format!("/api/v1/destinations/{id}");
    assert_error(
        api.req(Method::DELETE, &path, GLOBEX, Role::Admin)
            .send()
            .unwrap(),
        404,
        "not_found",
    );
    assert_error(
        api.req(Method::DELETE, &path, ACME, Role::Responder)
            .send()
            .unwrap(),
        403,
        "forbidden",
    );
    // Bad destinations are refused with the reason.
    for (body, code) in [
        (
            json!({"name": "x", "url": "ftp://files.example.com/"}),
            "invalid_parameter",
        ),
        (
            json!({"name": "x", "url": "not a url"}),
            "invalid_parameter",
        ),
        (
            json!({"name": "", "url": "https://a.example.com/"}),
            "invalid_parameter",
        ),
        (
            json!({"name": "x", "url": "https://a.example.com/", "min_severity": "urgent"}),
            "invalid_json",
        ),
        (
            json!({"name": "x", "url": "https://a.example.com/", "secret": 1}),
            "invalid_json",
        ),
        (json!({"url": "https://a.example.com/"}), "invalid_json"),
        (
            json!({"name": "x", "url": "https://a.example.com/", "format": "xml"}),
            "invalid_json",
        ),
    ] {
        assert_error(post(ACME, body), 400, code);
    }
    let r = post(
        ACME,
        json!({"name": "soc-slack", "url": "https://hooks.example.com/s", "format": "slack"}),
    );
    assert_eq!(r.status(), 201);
    let slack: Value = r.json().unwrap();
    assert_eq!(slack["format"], "slack", "{slack}");
    let r = api
        .req(
            Method::DELETE,
            &format!("/api/v1/destinations/{}", slack["id"].as_str().unwrap()),
            ACME,
            Role::Admin,
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = api
        .req(Method::DELETE, &path, ACME, Role::Admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_error(
        api.req(Method::DELETE, &path, ACME, Role::Admin)
            .send()
            .unwrap(),
        404,
        "not_found",
    );
    // Changes are audited, without the URL (webhook URLs often hold their own secret).
    let audit = api.get_json("/api/v1/audit?limit=100", ACME, Role::Admin);
    let text = audit.to_string();
    assert!(
        text.contains("destinations.create") && text.contains("destinations.delete"),
        "{text}"
    );
    assert!(!text.contains("events.example.com"), "{text}");
}

#[test]
fn the_notifier_posts_each_tenants_alerts_to_its_destinations_and_retries() {
    use perimeter_model::{Metrics, Severity};
    use perimeter_query_api::{AlertNotifier, DestinationStore};
    let hook = WebhookReceiver::start(1);
    let destinations = std::sync::Arc::new(DestinationStore::in_memory());
    let created = destinations
        .create(ACME, "soc", &hook.url(), Severity::High, "tok")
        .unwrap();
    let metrics = std::sync::Arc::new(Metrics::new());
    let data = dataset();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let notifier = AlertNotifier::spawn(
            destinations.clone(),
            metrics.clone(),
            std::time::Duration::from_millis(20),
            std::sync::Arc::new(perimeter_query_api::outbox::DeliveryOutbox::in_memory()),
            Vec::new(),
        );
        // One call with both tenants' alerts: globex has no destination, and of acme's alerts
        // only high and critical go out.
        let mixed: Vec<_> = data
            .globex_alerts
            .iter()
            .chain(&data.acme_alerts)
            .cloned()
            .collect();
        notifier.notify(&mixed);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while hook.bodies().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    let bodies = hook.bodies();
    assert_eq!(
        bodies.len(),
        1,
        "one delivery after one refused try: {bodies:?}"
    );
    assert_eq!(hook.requests(), 2, "the refused try was retried");
    // Signed with the destination's secret, so the receiver can tell it from a forgery.
    let secret = created.secret.as_deref().unwrap();
    assert_eq!(
        hook.signatures()[0],
        perimeter_query_api::destinations::sign(secret, bodies[0].as_bytes())
    );
    assert_ne!(
        hook.signatures()[0],
        perimeter_query_api::destinations::sign("another secret", bodies[0].as_bytes())
    );
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["tenant"], ACME);
    let sent: BTreeSet<String> = ids(&body["alerts"], "/id").into_iter().collect();
    let expected: BTreeSet<String> = data
        .acme_alerts
        .iter()
        .filter(|a| a.severity >= Severity::High)
        .map(|a| a.id.clone())
        .collect();
    assert_eq!(sent, expected);
    // Counted once the notifier has the receiver's answer, a moment after the body arrived.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !metrics
        .render_prometheus()
        .contains("destination_alerts_sent_total")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the delivery was never counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The batch leaves the outbox once delivered (the mark follows the receiver's answer).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !metrics
        .render_prometheus()
        .contains("destination_outbox_pending_batches 0")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            metrics.render_prometheus()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The admin's list says how deliveries went: one refused try, then the batch accepted.
    let status = destinations.list(ACME)[0].delivery.clone().unwrap();
    assert_eq!(status.batches_delivered, 1, "{status:?}");
    assert_eq!(status.batches_failed, 0, "{status:?}");
    assert_eq!(status.consecutive_failed_tries, 0, "{status:?}");
    assert_eq!(status.last_error.as_deref(), Some("status 500"));
    assert!(status.last_success_at >= status.last_failure_at);
}

#[test]
fn a_webhook_that_is_down_does_not_hold_up_another_tenants_alerts() {
    use perimeter_model::{Metrics, Severity};
    use perimeter_query_api::{AlertNotifier, DeliveryOutbox, DestinationStore};
    let down = WebhookReceiver::start(usize::MAX);
    let up = WebhookReceiver::start(0);
    let destinations = std::sync::Arc::new(DestinationStore::in_memory());
    for (tenant, hook) in [(ACME, &down), (GLOBEX, &up)] {
        destinations
            .create(tenant, "soc", &hook.url(), Severity::Informational, "tok")
            .unwrap();
    }
    let data = dataset();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Production backoff: the batch for the dead webhook takes 1 + 4 + 16 s of waits.
        let notifier = AlertNotifier::spawn(
            destinations.clone(),
            std::sync::Arc::new(Metrics::new()),
            std::time::Duration::from_secs(1),
            std::sync::Arc::new(DeliveryOutbox::in_memory()),
            Vec::new(),
        );
        // More batches for the dead webhook than could ever be in delivery at once for one
        // destination: they wait for its own slots, not other destinations'.
        for _ in 0..40 {
            notifier.notify(&data.acme_alerts);
        }
        notifier.notify(&data.globex_alerts);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while up.bodies().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "globex's alerts waited behind acme's dead webhook"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    assert!(down.requests() >= 1 && down.bodies().is_empty());
    let body: Value = serde_json::from_str(&up.bodies()[0]).unwrap();
    assert_eq!(body["tenant"], GLOBEX);
    // The dead webhook shows as failing in its tenant's list.
    let status = destinations.list(ACME)[0].delivery.clone().unwrap();
    assert!(status.consecutive_failed_tries >= 1, "{status:?}");
    assert_eq!(status.batches_delivered, 0, "{status:?}");
    assert_eq!(status.last_error.as_deref(), Some("status 500"));
}

#[test]
fn event_search_and_lookup() {
    let api = TestApi::start();
    let found = api.get_json("/api/v1/events/search?q=alice", ACME, Role::Viewer);
    let expected: BTreeSet<String> = api.data.acme_events[..3]
        .iter()
        .map(|e| e.id().0.clone())
        .collect();
    let got: BTreeSet<String> = ids(&found["items"], "/event/id").into_iter().collect();
    assert_eq!(got, expected, "{found}");

    let all = api.get_json("/api/v1/events/search", ACME, Role::Viewer);
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        api.data.acme_events.len()
    );

    let ranged = api.get_json(
        "/api/v1/events/search?from=2024-05-01T10:10:00Z&to=2024-05-01T10:20:00Z",
        ACME,
        Role::Viewer,
    );
    let got: BTreeSet<String> = ids(&ranged["items"], "/event/id").into_iter().collect();
    let expected: BTreeSet<String> = api.data.acme_events[4..6]
        .iter()
        .map(|e| e.id().0.clone())
        .collect();
    assert_eq!(got, expected);

    // Paging with limit=2 returns every event once.
    let mut seen = BTreeSet::new();
    let mut path = "/api/v1/events/search?limit=2".to_string();
    for _ in 0..10 {
        let page = api.get_json(&path, ACME, Role::Viewer);
        for id in ids(&page["items"], "/event/id") {
            assert!(seen.insert(id), "event seen twice");
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/events/search?limit=2&cursor={}", urlencode(c)),
            None => break,
        }
    }
    assert_eq!(seen.len(), api.data.acme_events.len());

    // Oldest first: the newest-first list reversed (a timeline); a bad order is a 400.
    let newest = api.get_json("/api/v1/events/search?limit=100", ACME, Role::Viewer);
    let oldest = api.get_json(
        "/api/v1/events/search?limit=100&sort=oldest",
        ACME,
        Role::Viewer,
    );
    let mut reversed = ids(&newest["items"], "/event/id");
    reversed.reverse();
    assert_eq!(ids(&oldest["items"], "/event/id"), reversed);
    assert_error(
        api.get("/api/v1/events/search?sort=random", ACME, Role::Viewer),
        400,
        "invalid_parameter",
    );

    let event = &api.data.acme_events[4];
    let body = api.get_json(
        &format!("/api/v1/events/{}", event.id()),
        ACME,
        Role::Viewer,
    );
    assert_eq!(body["event"]["id"], event.id().0.as_str());
    assert_error(
        api.get("/api/v1/events/0123456789abcdef", ACME, Role::Viewer),
        404,
        "not_found",
    );

    // Searches are audited with their query.
    let audit = api.get_json("/api/v1/audit", ACME, Role::Admin);
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "events.search"
            && e["details"]["q"] == "alice"
            && e["token_name"] == "acme-viewer"));
}

#[test]
fn event_histograms_count_the_tenants_matches_per_interval() {
    let api = TestApi::start();
    let counts = |body: &Value| -> Vec<(String, u64)> {
        body["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["start"].as_str().unwrap().to_string(),
                    b["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // acme's six events at 10:01-10:03, 10:15, 10:16 and 10:25, in ten-minute buckets.
    let all = api.get_json("/api/v1/events/histogram?interval=10m", ACME, Role::Viewer);
    assert_eq!(all["total"], 6, "{all}");
    assert_eq!(all["interval_seconds"], 600);
    assert_eq!(
        counts(&all),
        [
            ("2024-05-01T10:00:00Z".to_string(), 3),
            ("2024-05-01T10:10:00Z".to_string(), 2),
            ("2024-05-01T10:20:00Z".to_string(), 1),
        ]
    );
    // A search and given bounds: alice's failures minute by minute, globex's events (at
    // 10:04 and 10:05) not counted, the empty minutes at both ends kept.
    let alice = api.get_json(
        "/api/v1/events/histogram?q=alice&interval=1m&from=2024-05-01T10:00:00Z&to=2024-05-01T10:05:00Z",
        ACME,
        Role::Viewer,
    );
    let minutes: Vec<u64> = counts(&alice).into_iter().map(|(_, c)| c).collect();
    assert_eq!(minutes, [0, 1, 1, 1, 0], "{alice}");
    assert_eq!(alice["total"], 3);
    let globex = api.get_json("/api/v1/events/histogram", GLOBEX, Role::Viewer);
    assert_eq!(globex["total"], 2, "{globex}");

    for (path, code) in [
        (
            "/api/v1/events/histogram?interval=soon",
            "invalid_parameter",
        ),
        ("/api/v1/events/histogram?interval=0m", "invalid_parameter"),
        (
            "/api/v1/events/histogram?interval=1s&from=2024-01-01&to=2024-06-01",
            "invalid_query",
        ),
        ("/api/v1/events/histogram?q=event.action:(", "invalid_query"),
        (
            "/api/v1/events/histogram?from=tomorrow",
            "invalid_parameter",
        ),
        ("/api/v1/events/histogram?bucket=1h", "invalid_parameter"),
    ] {
        assert_error(api.get(path, ACME, Role::Viewer), 400, code);
    }
    let audit = api.get_json("/api/v1/audit", ACME, Role::Admin);
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "events.histogram" && e["details"]["interval"] == "1m"));
}

#[test]
fn top_values_name_the_tenants_busiest_values_of_a_field() {
    let api = TestApi::start();
    let values = |body: &Value| -> Vec<(String, u64)> {
        body["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["value"].as_str().unwrap().to_string(),
                    v["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // acme: alice 3 events, bob 1, carol 2; globex's mallory never shows.
    let users = api.get_json("/api/v1/events/top?field=user.name", ACME, Role::Viewer);
    assert_eq!(
        values(&users),
        [
            ("alice".to_string(), 3),
            ("carol".to_string(), 2),
            ("bob".to_string(), 1)
        ],
        "{users}"
    );
    assert_eq!(users["total"], 6);
    assert_eq!(users["counted"], 6);
    assert_eq!(users["exact"], true);
    assert_eq!(
        (users["other"].as_u64(), users["missing"].as_u64()),
        (Some(0), Some(0))
    );
    // A search narrows it, a limit cuts it (the rest counted in `other`); the index counts a
    // field indexed whole when the matches outnumber the sample, still exactly.
    let okta = api.get_json(
        "/api/v1/events/top?field=event.outcome&q=event.module:okta&limit=1&sample=1",
        ACME,
        Role::Viewer,
    );
    assert_eq!(values(&okta), [("failure".to_string(), 3)], "{okta}");
    assert_eq!(
        (okta["total"].as_u64(), okta["other"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(okta["exact"], true);
    let sampled = api.get_json(
        "/api/v1/events/top?field=user.name&sample=2",
        ACME,
        Role::Viewer,
    );
    assert_eq!(sampled["exact"], false, "{sampled}");
    assert_eq!(sampled["counted"], 2);
    let globex = api.get_json("/api/v1/events/top?field=user.name", GLOBEX, Role::Viewer);
    assert_eq!(values(&globex), [("mallory".to_string(), 2)], "{globex}");

    for (path, status, code) in [
        ("/api/v1/events/top", 400, "invalid_parameter"),
        (
            "/api/v1/events/top?field=actor.alternateId",
            400,
            "invalid_query",
        ),
        (
            "/api/v1/events/top?field=user.name&limit=0",
            400,
            "invalid_parameter",
        ),
        (
            "/api/v1/events/top?field=user.name&limit=101",
            400,
            "limit_too_large",
        ),
        (
            "/api/v1/events/top?field=user.name&sample=100001",
            400,
            "limit_too_large",
        ),
        (
            "/api/v1/events/top?field=user.name&q=event.action:(",
            400,
            "invalid_query",
        ),
        (
            "/api/v1/events/top?field=user.name&from=tomorrow",
            400,
            "invalid_parameter",
        ),
        (
            "/api/v1/events/top?field=user.name&top=3",
            400,
            "invalid_parameter",
        ),
    ] {
        assert_error(api.get(path, ACME, Role::Viewer), status, code);
    }
    let audit = api.get_json("/api/v1/audit", ACME, Role::Admin);
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "events.top" && e["details"]["field"] == "event.outcome"));
}

#[test]
fn an_events_context_is_what_its_user_did_around_it() {
    let api = TestApi::start();
    let first = api.data.acme_events[0].id().0.clone();
    // alice's three failures (minutes 1-3); bob (25) and carol (15, 16) are further off or
    // other users; globex's mallory never shows.
    let body = api.get_json(
        &format!("/api/v1/events/{first}/context?window=10m"),
        ACME,
        Role::Viewer,
    );
    let users: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["user"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "alice", "alice"], "{body}");
    assert_eq!(body["event"]["event"]["id"], first.as_str());
    assert_eq!(
        (body["by"].as_str(), body["more"].as_bool()),
        (Some("user"), Some(false))
    );
    assert_eq!(body["values"], json!(["alice"]));
    // The search it names finds the same events.
    let search = api.get_json(
        &format!(
            "/api/v1/events/search?q={}&from={}&to={}",
            urlencode(body["query"].as_str().unwrap()),
            urlencode(body["from"].as_str().unwrap()),
            urlencode(body["to"].as_str().unwrap())
        ),
        ACME,
        Role::Viewer,
    );
    assert_eq!(search["items"].as_array().unwrap().len(), 3, "{search}");
    // By address: everyone of acme within the window shares 203.0.113.7.
    let by_ip = api.get_json(
        &format!("/api/v1/events/{first}/context?by=ip&window=30m&limit=4"),
        ACME,
        Role::Viewer,
    );
    assert_eq!(by_ip["items"].as_array().unwrap().len(), 4, "{by_ip}");
    assert_eq!(by_ip["more"], true);

    let globex_event = api.data.globex_events[0].id().0.clone();
    for (path, status, code) in [
        (
            format!("/api/v1/events/{globex_event}/context"),
            404,
            "not_found",
        ),
        (
            format!("/api/v1/events/{first}/context?by=app"),
            400,
            "invalid_parameter",
        ),
        (
            format!("/api/v1/events/{first}/context?window=soon"),
            400,
            "invalid_parameter",
        ),
        (
            format!("/api/v1/events/{first}/context?window=31d"),
            400,
            "invalid_parameter",
        ),
        (
            format!("/api/v1/events/{first}/context?limit=1001"),
            400,
            "limit_too_large",
        ),
        (
            format!("/api/v1/events/{first}/context?around=1"),
            400,
            "invalid_parameter",
        ),
    ] {
        assert_error(api.get(&path, ACME, Role::Viewer), status, code);
    }
    let audit = api.get_json("/api/v1/audit", ACME, Role::Admin);
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "events.context" && e["target"] == first.as_str()));
}

#[test]
fn sources_show_each_sources_newest_event_for_the_tenant() {
    let api = TestApi::start();
    let body = api.get_json("/api/v1/sources", ACME, Role::Viewer);
    let items = body["items"].as_array().unwrap();
    let summary: Vec<(&str, &str, u64)> = items
        .iter()
        .map(|i| {
            (
                i["source"].as_str().unwrap(),
                i["newest_event"].as_str().unwrap(),
                i["events_24h"].as_u64().unwrap(),
            )
        })
        .collect();
    // acme's okta events end at 10:25 and its github events at 10:16, long ago.
    assert_eq!(
        summary,
        [
            ("github", "2024-05-01T10:16:00Z", 0),
            ("okta", "2024-05-01T10:25:00Z", 0),
        ],
        "{body}"
    );
    let silent = items[1]["silent_seconds"].as_i64().unwrap();
    let expected = (chrono::Utc::now() - t(25)).num_seconds();
    assert!((expected - silent).abs() < 60, "{silent} vs {expected}");
    // globex sees its own okta only.
    let globex = api.get_json("/api/v1/sources", GLOBEX, Role::Viewer);
    assert_eq!(globex["items"].as_array().unwrap().len(), 1, "{globex}");
    assert_eq!(globex["items"][0]["newest_event"], "2024-05-01T10:05:00Z");
    assert_error(
        api.get("/api/v1/sources?source=okta", ACME, Role::Viewer),
        400,
        "invalid_parameter",
    );
}

#[test]
fn dead_letters_are_listed_for_the_tenant() {
    let api = TestApi::start();
    let body = api.get_json("/api/v1/dead-letters?limit=10", ACME, Role::Viewer);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["reason"], "invalid JSON at column 17");
    assert!(body["next_cursor"].is_null());

    // More, from two sources: filtered by source and text, paged back to the oldest.
    let more: Vec<perimeter_model::DeadLetter> = (0..30)
        .map(|i| perimeter_model::DeadLetter {
            line: Some(100 + i),
            source: if i.is_multiple_of(2) {
                "github"
            } else {
                "slack"
            }
            .into(),
            reason: if i.is_multiple_of(3) {
                "line longer than 1048576 bytes"
            } else {
                "invalid JSON"
            }
            .into(),
            ..dead_letter(ACME)
        })
        .collect();
    let batch = perimeter_store::StoreBatch {
        dead_letters: more,
        ..Default::default()
    };
    api.state.store.write_batch(&batch).unwrap();
    let mut lines = Vec::new();
    let mut path = "/api/v1/dead-letters?limit=2&source=github&q=LONGER".to_string();
    loop {
        let page = api.get_json(&path, ACME, Role::Viewer);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        lines.extend(items.iter().map(|d| d["line"].as_u64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => {
                path = format!("/api/v1/dead-letters?limit=2&source=github&q=LONGER&cursor={c}")
            }
            None => break,
        }
    }
    assert_eq!(lines, [124, 118, 112, 106, 100]);
    let other = api.get_json("/api/v1/dead-letters?limit=100", GLOBEX, Role::Viewer);
    assert!(other["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["tenant"] == GLOBEX));
    for bad in [
        "cursor=abc",
        "cursor=1.1",
        "from=yesterday",
        "to=now-1h&from=now",
        "colour=red",
    ] {
        assert_error(
            api.get(&format!("/api/v1/dead-letters?{bad}"), ACME, Role::Viewer),
            400,
            if bad.starts_with("cursor") {
                "invalid_query"
            } else {
                "invalid_parameter"
            },
        );
    }
}

#[test]
fn a_rule_is_switched_off_for_one_tenant_with_who_when_and_why() {
    let api = TestApi::start();
    let path = "/api/v1/rules/okta_bruteforce";
    let off = api.patch(
        path,
        ACME,
        Role::Admin,
        json!({"enabled": false, "reason": "  noisy during the SSO migration  "}),
    );
    assert_eq!(off.status(), 200);
    let off: Value = off.json().unwrap();
    assert_eq!(off["id"], "okta_bruteforce");
    assert_eq!(off["enabled"], false);
    assert_eq!(
        off["switched_off"]["reason"],
        "noisy during the SSO migration"
    );
    assert!(off["switched_off"]["by"]
        .as_str()
        .unwrap()
        .starts_with("token:"));
    // The pipeline's view: off for acme only.
    let switches = api.state.rule_switches.switches();
    let drops = |tenant, entity| switches.drops(tenant, "okta_bruteforce", entity, Utc::now());
    assert!(drops(ACME, "anyone"));
    assert!(!drops(GLOBEX, "anyone"));

    let listed = |tenant| {
        let rules = api.get_json("/api/v1/rules", tenant, Role::Viewer);
        rules["rules"][0].clone()
    };
    assert_eq!(listed(ACME)["enabled"], false);
    assert_eq!(
        listed(ACME)["switched_off"]["reason"],
        "noisy during the SSO migration"
    );
    assert_eq!(listed(GLOBEX)["enabled"], true);
    assert!(listed(GLOBEX).get("switched_off").is_none());

    let audit = api.get_json("/api/v1/audit?limit=100", ACME, Role::Admin);
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| { e["action"] == "rules.switch_off" && e["target"] == "okta_bruteforce" }),
        "{audit}"
    );

    let on = api.patch(path, ACME, Role::Admin, json!({"enabled": true}));
    assert_eq!(on.status(), 200);
    let on: Value = on.json().unwrap();
    assert_eq!(on["enabled"], true);
    assert!(on.get("switched_off").is_none());
    assert!(!drops(ACME, "anyone"));
    assert_eq!(listed(ACME)["enabled"], true);

    // Off for one entity, until a time: the rule stays on for the others.
    let svc = api.patch(
        path,
        ACME,
        Role::Admin,
        json!({"enabled": false, "entity": "svc-ci", "until": "now+30d",
            "reason": "the CI account does this nightly"}),
    );
    assert_eq!(svc.status(), 200);
    let svc: Value = svc.json().unwrap();
    assert_eq!(svc["enabled"], true);
    let until = svc["switched_off_for"]["svc-ci"]["until"].as_str().unwrap();
    let until: chrono::DateTime<Utc> = until.parse().unwrap();
    assert!(until > Utc::now() + chrono::Duration::days(29), "{until}");
    assert!(drops(ACME, "svc-ci"));
    assert!(!drops(ACME, "dana"));
    assert!(
        !switches.drops(ACME, "okta_bruteforce", "svc-ci", until),
        "lapses"
    );
    assert!(listed(ACME)["switched_off_for"]["svc-ci"].is_object());
    // Switching on for every entity leaves it; for the entity removes it.
    api.patch(path, ACME, Role::Admin, json!({"enabled": true}));
    assert!(drops(ACME, "svc-ci"));
    let on = api.patch(
        path,
        ACME,
        Role::Admin,
        json!({"enabled": true, "entity": "svc-ci"}),
    );
    let on: Value = on.json().unwrap();
    assert!(on.get("switched_off_for").is_none(), "{on}");
    assert!(!drops(ACME, "svc-ci"));
}

#[test]
fn bad_rule_switches_are_4xx() {
    let api = TestApi::start();
    let path = "/api/v1/rules/okta_bruteforce";
    for body in [
        json!({"enabled": false}),
        json!({"enabled": false, "reason": "   "}),
        json!({"enabled": false, "reason": "x", "until": "now-1h"}),
        json!({"enabled": false, "reason": "x", "until": "tomorrow"}),
        json!({"enabled": false, "reason": "x", "entity": " "}),
        json!({"enabled": true, "reason": "x"}),
    ] {
        assert_error(
            api.patch(path, ACME, Role::Admin, body),
            400,
            "invalid_parameter",
        );
    }
    for body in [
        json!({"enabled": "no"}),
        json!({"enabled": false, "why": "x"}),
        json!({}),
    ] {
        assert_error(
            api.patch(path, ACME, Role::Admin, body),
            400,
            "invalid_json",
        );
    }
    assert_error(
        api.patch(
            "/api/v1/rules/no_such_rule",
            ACME,
            Role::Admin,
            json!({"enabled": false, "reason": "x"}),
        ),
        404,
        "not_found",
    );
    assert_error(
        api.patch(
            "/api/v1/rules/okta_known_scanner",
            ACME,
            Role::Admin,
            json!({"enabled": false, "reason": "x"}),
        ),
        400,
        "not_switchable",
    );
    assert_error(
        api.patch(
            path,
            ACME,
            Role::Responder,
            json!({"enabled": false, "reason": "x"}),
        ),
        403,
        "forbidden",
    );
    assert!(api
        .state
        .rule_switches
        .switches()
        .for_tenant(ACME, Utc::now())
        .is_empty());
}

#[test]
fn rules_list_and_test_inline_and_stored_events() {
    let api = TestApi::start();
    let rules = api.get_json("/api/v1/rules", ACME, Role::Viewer);
    assert_eq!(rules["rules"][0]["id"], "okta_bruteforce");

    let rule = "title: carol\nkeyword: carol";
    let inline = api
        .req(Method::POST, "/api/v1/rules/test", ACME, Role::Admin)
        .json(&json!({"rule": rule, "events": [{"user": "carol"}, {"user": "dave"}]}))
        .send()
        .unwrap();
    assert_eq!(inline.status(), 200);
    let inline: Value = inline.json().unwrap();
    assert_eq!(inline["num_events_tested"], 2);
    assert_eq!(inline["result"]["matched"], 1);
    // An event holding half of a surrogate pair escaped alone (text cut mid-emoji, which
    // ingest takes) is tested too, that half read as U+FFFD.
    let cut = api
        .req(Method::POST, "/api/v1/rules/test", ACME, Role::Admin)
        .header("content-type", "application/json")
        .body(r#"{"rule": "title: carol\nkeyword: carol", "events": [{"user": "carol \ud83d"}]}"#)
        .send()
        .unwrap();
    assert_eq!(cut.status(), 200);
    assert_eq!(cut.json::<Value>().unwrap()["result"]["matched"], 1);
    assert!(inline["result"]["source"].is_null(), "{inline}");
    // Raw records whose shape does not tell their source can name it, as `--source` does.
    let named = api
        .req(Method::POST, "/api/v1/rules/test", ACME, Role::Admin)
        .json(&json!({"rule": rule, "events": [{"user": "carol"}], "source": "json"}))
        .send()
        .unwrap();
    assert_eq!(named.status(), 200);
    let named: Value = named.json().unwrap();
    assert_eq!(named["result"]["source"], "json", "{named}");
    // Stored events have their own source.
    assert_error(
        api.req(Method::POST, "/api/v1/rules/test", ACME, Role::Admin)
            .json(&json!({"rule": rule, "from": "2024-05-01T10:10:00Z", "source": "okta"}))
            .send()
            .unwrap(),
        400,
        "invalid_json",
    );

    // A time range of stored events: the 10:10-10:30 window holds carol's two github events
    // and bob's okta login.
    let stored: Value = api
        .req(Method::POST, "/api/v1/rules/test", ACME, Role::Admin)
        .json(&json!({"rule": rule, "from": "2024-05-01T10:10:00Z", "to": "2024-05-01T10:30:00Z"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stored["num_events_tested"], 3, "{stored}");
    assert_eq!(stored["result"]["matched"], 2, "{stored}");

    // Stored events of another tenant are never tested.
    let globex: Value = api
        .req(Method::POST, "/api/v1/rules/test", GLOBEX, Role::Admin)
        .json(&json!({"rule": rule, "from": "2024-05-01T00:00:00Z"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(globex["num_events_tested"], 2);
    assert_eq!(globex["result"]["matched"], 0);
    // No range at all: the tenant's stored events, oldest first, `limit` of them.
    let oldest: Value = api
        .req(Method::POST, "/api/v1/rules/test", ACME, Role::Admin)
        .json(&json!({"rule": rule, "limit": 2}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(oldest["num_events_tested"], 2, "{oldest}");

    // The engine's rejection is a 422 with its reason.
    let bad = api
        .req(Method::POST, "/api/v1/rules/test", ACME, Role::Admin)
        .json(&json!({"rule": "keyword: x", "events": []}))
        .send()
        .unwrap();
    let body = assert_error(bad, 422, "invalid_rule");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no title"));
}

#[test]
fn audit_log_is_admin_only_and_per_tenant() {
    let api = TestApi::start();
    api.get_json("/api/v1/events/search?q=alice", ACME, Role::Viewer);
    api.get_json("/api/v1/events/search?q=mallory", GLOBEX, Role::Viewer);
    assert_error(
        api.get("/api/v1/audit", ACME, Role::Viewer),
        403,
        "forbidden",
    );
    assert_error(
        api.get("/api/v1/audit", ACME, Role::Responder),
        403,
        "forbidden",
    );
    let acme = api.get_json("/api/v1/audit", ACME, Role::Admin);
    let items = acme["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(items.iter().all(|e| e["tenant"] == ACME), "{acme}");
    let limited = api.get_json("/api/v1/audit?limit=1", ACME, Role::Admin);
    assert_eq!(limited["items"].as_array().unwrap().len(), 1);

    // Filtered and paged: who searched, one entry a page, back to the first search; each
    // page's own read is audited after it is answered, so paging does not shift the pages.
    for q in ["bob", "carol", "dave"] {
        api.get_json(&format!("/api/v1/events/search?q={q}"), ACME, Role::Viewer);
    }
    let mut queries = Vec::new();
    let mut path = "/api/v1/audit?limit=1&action=events.search&from=now-1h".to_string();
    loop {
        let page = api.get_json(&path, ACME, Role::Admin);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 1, "{page}");
        queries.extend(
            items
                .iter()
                .map(|e| e["details"]["q"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => {
                path = format!("/api/v1/audit?limit=1&action=events.search&from=now-1h&cursor={c}")
            }
            None => break,
        }
    }
    assert_eq!(queries, ["dave", "carol", "bob", "alice"]);
    let reads = api.get_json("/api/v1/audit?action=audit.*&limit=1000", ACME, Role::Admin);
    let reads = reads["items"].as_array().unwrap();
    assert!(reads.len() >= 5 && reads.iter().all(|e| e["action"] == "audit.list"));
    let none = api.get_json("/api/v1/audit?token=nobody", ACME, Role::Admin);
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    assert!(none["next_cursor"].is_null(), "{none}");
    // That read is audited with whose trail it asked for (QA: masked as a secret).
    let read = api.get_json("/api/v1/audit?action=audit.list&limit=1", ACME, Role::Admin);
    assert_eq!(read["items"][0]["details"]["by"], "nobody", "{read}");
    let future = api.get_json("/api/v1/audit?from=now%2B1h", ACME, Role::Admin);
    assert_eq!(future["items"].as_array().unwrap().len(), 0);
    for (bad, code) in [
        ("?cursor=12345678901234", "invalid_query"),
        ("?cursor=abc", "invalid_query"),
        ("?cursor=1.1", "invalid_query"),
        ("?from=yesterday", "invalid_parameter"),
        ("?from=now&to=now-1h", "invalid_parameter"),
        (
            "?from=2024-05-01T10:00:00Z&to=2024-05-01T10:00:00Z",
            "invalid_parameter",
        ),
        ("?limit=1001", "limit_too_large"),
        ("?verb=get", "invalid_parameter"),
    ] {
        assert_error(
            api.get(&format!("/api/v1/audit{bad}"), ACME, Role::Admin),
            400,
            code,
        );
    }
    // The file on disk is JSON lines, append-only.
    let text = std::fs::read_to_string(api.dir.path().join("audit.jsonl")).unwrap();
    assert!(text
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    assert!(text.contains("mallory") && text.contains("alice"));
}

#[test]
fn bad_requests_are_4xx_json_never_500() {
    let api = TestApi::start();
    let alert_path = format!("/api/v1/alerts/{}", api.data.acme_alerts[0].id);
    let get = |path: &str| api.get(path, ACME, Role::Admin);

    // Query parameters.
    assert_error(get("/api/v1/alerts?limit=100000"), 400, "limit_too_large");
    assert_error(get("/api/v1/alerts?limit=1001"), 400, "limit_too_large");
    assert_error(get("/api/v1/alerts?limit=0"), 400, "invalid_parameter");
    assert_error(get("/api/v1/alerts?limit=abc"), 400, "invalid_parameter");
    assert_error(get("/api/v1/alerts?limit=-1"), 400, "invalid_parameter");
    assert_error(
        get("/api/v1/alerts?from=yesterday"),
        400,
        "invalid_parameter",
    );
    assert_error(
        get("/api/v1/alerts?to=2024-02-30T00:00:00Z"),
        400,
        "invalid_parameter",
    );
    assert_error(
        get("/api/v1/alerts?from=2024-05-02T00:00:00Z&to=2024-05-01T00:00:00Z"),
        400,
        "invalid_parameter",
    );
    assert_error(
        get("/api/v1/alerts?status=closed"),
        400,
        "invalid_parameter",
    );
    assert_error(
        get("/api/v1/alerts?severity=urgent"),
        400,
        "invalid_parameter",
    );
    assert_error(get("/api/v1/alerts?sort=random"), 400, "invalid_parameter");
    assert_error(get("/api/v1/alerts?colour=red"), 400, "invalid_parameter");
    // A value that is no UTF-8 (Latin-1 `ÿ`): refused, not answered for another query.
    let body = assert_error(
        get("/api/v1/events/search?q=dana%ff"),
        400,
        "invalid_parameter",
    );
    assert!(body.to_string().contains("`q` is not UTF-8"), "{body}");
    // Routes without parameters refuse them too, rather than ignore a misspelt filter.
    let event_path = format!("/api/v1/events/{}", api.data.acme_events[0].id().0);
    for path in [
        "/api/v1/rules?enabled=false".to_string(),
        "/api/v1/destinations?name=x".to_string(),
        "/api/v1/openapi.json?v=2".to_string(),
        format!("{alert_path}?fields=all"),
        format!("{event_path}?tenant=globex"),
    ] {
        assert_error(get(&path), 400, "invalid_parameter");
    }
    assert_eq!(get(&alert_path).status(), 200);
    // Nor do the routes that change things.
    let r = api
        .req(
            Method::PATCH,
            &format!("{alert_path}?force=1"),
            ACME,
            Role::Admin,
        )
        .json(&json!({"note": "x"}))
        .send()
        .unwrap();
    assert_error(r, 400, "invalid_parameter");
    let r = api
        .req(Method::POST, "/api/v1/rules/test?dry=1", ACME, Role::Admin)
        .json(&json!({"rule": "title: x", "events": []}))
        .send()
        .unwrap();
    assert_error(r, 400, "invalid_parameter");
    assert_error(
        get("/api/v1/alerts?cursor=not-a-cursor"),
        400,
        "invalid_query",
    );
    assert_error(
        get("/api/v1/events/search?q=user.name:(alice"),
        400,
        "invalid_query",
    );
    assert_error(
        get("/api/v1/events/search?q=%22unbalanced"),
        400,
        "invalid_query",
    );
    // Nested 500 deep (2 KB, under the length limit): this overflowed the worker thread's
    // stack and aborted the server. Refused now, and the server answers on.
    assert_error(
        get(&format!(
            "/api/v1/events/search?q={}a",
            "NOT%20".repeat(500)
        )),
        400,
        "invalid_query",
    );
    assert_error(
        get(&format!("/api/v1/events/export?q={}a", "-".repeat(1000))),
        400,
        "invalid_query",
    );
    assert_eq!(get("/api/v1/events/search?q=a").status(), 200);
    // tantivy refuses this one at search time, not parse time: still a 400, not a 500.
    for q in ["source.as.number:*", "nope:*"] {
        assert_error(
            get(&format!("/api/v1/events/search?q={q}")),
            400,
            "invalid_query",
        );
    }
    assert_error(
        get("/api/v1/events/search?q=a&limit=5000"),
        400,
        "limit_too_large",
    );
    assert_error(
        get("/api/v1/events/search?from=2024-05-32"),
        400,
        "invalid_parameter",
    );
    assert_error(
        get("/api/v1/events/search?cursor=%00%01garbage"),
        400,
        "invalid_query",
    );
    assert_error(
        get("/api/v1/audit?limit=1000000000000000000000000"),
        400,
        "invalid_parameter",
    );
    assert_error(
        get("/api/v1/dead-letters?limit=2000"),
        400,
        "limit_too_large",
    );

    // Bodies.
    let send = |method: Method, path: &str, content_type: &str, body: &str| {
        api.req(method, path, ACME, Role::Admin)
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let json_ct = "application/json";
    assert_error(
        send(Method::PATCH, &alert_path, json_ct, "{\"status\": "),
        400,
        "invalid_json",
    );
    assert_error(
        send(Method::PATCH, &alert_path, json_ct, "[1,2]"),
        400,
        "invalid_json",
    );
    assert_error(
        send(
            Method::PATCH,
            &alert_path,
            json_ct,
            "{\"status\": \"closed\"}",
        ),
        400,
        "invalid_json",
    );
    assert_error(
        send(Method::PATCH, &alert_path, json_ct, "{\"status\": 3}"),
        400,
        "invalid_json",
    );
    assert_error(
        send(Method::PATCH, &alert_path, json_ct, "{\"owner\": \"x\"}"),
        400,
        "invalid_json",
    );
    assert_error(
        send(Method::PATCH, &alert_path, json_ct, "{}"),
        400,
        "invalid_json",
    );
    assert_error(
        send(
            Method::PATCH,
            &alert_path,
            "text/plain",
            "{\"note\": \"x\"}",
        ),
        415,
        "unsupported_media_type",
    );
    let huge_note = json!({ "note": "x".repeat(100_000) }).to_string();
    assert_error(
        send(Method::PATCH, &alert_path, json_ct, &huge_note),
        400,
        "invalid_parameter",
    );
    // An oversized body is refused from its Content-Length, before it is read: a raw
    // request that announces 5 MiB (and sends none of it) gets a JSON 413.
    let raw = raw_request(
        &api,
        &format!(
            "POST /api/v1/rules/test HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            api.token(ACME, Role::Admin),
            5 * 1024 * 1024
        ),
    );
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("\"code\":\"payload_too_large\""), "{raw}");
    // A rule alone is tested against stored events: this one is no rule.
    assert_error(
        send(
            Method::POST,
            "/api/v1/rules/test",
            json_ct,
            "{\"rule\": \"title: x\"}",
        ),
        422,
        "invalid_rule",
    );
    assert_error(
        send(
            Method::POST,
            "/api/v1/rules/test",
            json_ct,
            &json!({"rule": "title: x", "events": [], "from": "2024-05-01T00:00:00Z"}).to_string(),
        ),
        400,
        "invalid_json",
    );
    assert_error(
        send(
            Method::POST,
            "/api/v1/rules/test",
            json_ct,
            &json!({"rule": "title: x", "from": "soon"}).to_string(),
        ),
        400,
        "invalid_parameter",
    );
    assert_error(
        send(
            Method::POST,
            "/api/v1/rules/test",
            json_ct,
            &json!({"rule": "title: x", "events": [], "extra": 1}).to_string(),
        ),
        400,
        "invalid_json",
    );

    // Routing.
    assert_error(get("/api/v1/nope"), 404, "not_found");
    assert_error(get("/api/v2/alerts"), 404, "not_found");
    assert_error(
        send(Method::DELETE, &alert_path, json_ct, ""),
        405,
        "method_not_allowed",
    );
    assert_error(
        send(Method::POST, "/api/v1/alerts", json_ct, "{}"),
        405,
        "method_not_allowed",
    );

    // None of that was a server error.
    let metrics = api.metrics_text();
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
}

#[test]
fn openapi_document_and_router_agree() {
    let api = TestApi::start();
    let doc = served_openapi(&api);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc,
        serde_json::to_value(perimeter_query_api::openapi::openapi()).unwrap()
    );
    let paths = doc["paths"].as_object().unwrap();

    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/alerts"),
        ("GET", "/api/v1/alerts/summary"),
        ("GET", "/api/v1/alerts/{id}"),
        ("PATCH", "/api/v1/alerts/{id}"),
        ("GET", "/api/v1/events/search"),
        ("GET", "/api/v1/events/histogram"),
        ("GET", "/api/v1/events/top"),
        ("GET", "/api/v1/events/export"),
        ("GET", "/api/v1/events/{id}"),
        ("GET", "/api/v1/events/{id}/context"),
        ("GET", "/api/v1/dead-letters"),
        ("GET", "/api/v1/sources"),
        ("GET", "/api/v1/rules"),
        ("PATCH", "/api/v1/rules/{id}"),
        ("POST", "/api/v1/rules/test"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/destinations"),
        ("POST", "/api/v1/destinations"),
        ("DELETE", "/api/v1/destinations/{id}"),
        ("GET", "/api/v1/openapi.json"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(documented, expected);

    // Authenticated operations say so, and document their 401.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let public = path.starts_with("/api/v1/openapi") || !path.starts_with("/api/");
            assert_eq!(op.get("security").is_none(), public, "{method} {path}");
            if !public {
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path} lacks 401"
                );
            }
        }
    }

    // Every documented operation is served (routed: not the router's 404/405), and every
    // other method on a documented path is refused by the router (405): the router serves
    // exactly what the document says.
    for (path, item) in paths {
        let concrete = path.replace("{id}", "some-id");
        for method in ["GET", "POST", "PATCH", "PUT", "DELETE"] {
            let response = api
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    api.url(&concrete),
                )
                .bearer_auth(api.token(ACME, Role::Admin))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().unwrap_or(Value::Null);
            let routed = status != 405
                && !(status == 404
                    && body["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("no route"));
            let documented = item.get(method.to_lowercase()).is_some();
            assert_eq!(
                routed, documented,
                "{method} {path}: status {status} {body}"
            );
        }
    }
}

/// The document's bounds and closed sets are the server's: for every query parameter with a
/// `minimum`/`maximum` or an `enum`, the bounds and every listed word are accepted, the values
/// just outside and a word not listed are refused (400). Every count parameter is bounded.
#[test]
fn openapi_parameter_bounds_and_words_are_the_servers() {
    let api = TestApi::start();
    let doc = served_openapi(&api);
    let event_path = format!("/api/v1/events/{}", api.data.acme_events[0].id().0);
    let alert_path = format!("/api/v1/alerts/{}", api.data.acme_alerts[0].id);
    let mut checked = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("/api/v1/events/{id}", &event_path)
            .replace("/api/v1/alerts/{id}", &alert_path);
        for (method, op) in item.as_object().unwrap() {
            let query_parameters: Vec<&Value> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .collect();
            // Required parameters are given their first allowed word.
            let required: Vec<(String, String)> = query_parameters
                .iter()
                .filter(|p| p["required"] == true)
                .map(|p| {
                    let word = p["schema"]["enum"][0].as_str();
                    let word = word.unwrap_or_else(|| panic!("{path}: required {p} has no enum"));
                    (p["name"].as_str().unwrap().to_string(), word.to_string())
                })
                .collect();
            let status_with = |name: &str, value: &str| -> (u16, String) {
                let mut query: Vec<(&str, &str)> = required
                    .iter()
                    .filter(|(n, _)| n != name)
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                query.push((name, value));
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let response = api
                    .req(method, &concrete, ACME, Role::Admin)
                    .query(&query)
                    .send()
                    .unwrap();
                (response.status().as_u16(), response.text().unwrap())
            };
            let expect = |name: &str, value: &str, accepted: bool| {
                let (status, body) = status_with(name, value);
                let wanted = if accepted { 200 } else { 400 };
                assert_eq!(status, wanted, "{method} {path}?{name}={value}: {body}");
            };
            for parameter in query_parameters {
                let name = parameter["name"].as_str().unwrap();
                let schema = &parameter["schema"];
                let integer = schema["type"] == "integer"
                    || schema["type"]
                        .as_array()
                        .is_some_and(|t| t.contains(&json!("integer")));
                if integer {
                    let (Some(min), Some(max)) =
                        (schema["minimum"].as_u64(), schema["maximum"].as_u64())
                    else {
                        panic!("{method} {path}: `{name}` has no bounds: {schema}");
                    };
                    expect(name, &min.to_string(), true);
                    expect(name, &max.to_string(), true);
                    if let Some(below) = min.checked_sub(1) {
                        expect(name, &below.to_string(), false);
                    }
                    expect(name, &(max + 1).to_string(), false);
                    checked.insert(format!("{path} {name}"));
                }
                // A list (`status=open,acknowledged`) names its words in its items' schema.
                if let Some(words) = schema["enum"]
                    .as_array()
                    .or_else(|| schema["items"]["enum"].as_array())
                {
                    for word in words {
                        expect(name, word.as_str().unwrap(), true);
                    }
                    expect(name, "no_such_word", false);
                    checked.insert(format!("{path} {name}"));
                }
            }
        }
    }
    // The bounded and closed parameters of the issue are among those checked.
    for parameter in [
        "/api/v1/alerts limit",
        "/api/v1/alerts severity",
        "/api/v1/alerts status",
        "/api/v1/alerts sort",
        "/api/v1/events/export max_events",
        "/api/v1/events/export format",
        "/api/v1/events/top sample",
        "/api/v1/events/top field",
        "/api/v1/events/{id}/context by",
        "/api/v1/audit limit",
        "/api/v1/dead-letters limit",
    ] {
        assert!(
            checked.contains(parameter),
            "{parameter} not checked: {checked:?}"
        );
    }
}

/// Every API operation lists the client errors it answers when a query parameter is unknown
/// (400) and, taking a body, when the body is not JSON (415) or too large (413), each with the
/// JSON error body.
#[test]
fn openapi_lists_the_client_errors_of_every_operation() {
    let api = TestApi::start();
    let doc = served_openapi(&api);
    // The Parquet export is a binary file (it was an array of integers) with its count headers.
    let export = &doc["paths"]["/api/v1/events/export"]["get"]["responses"]["200"];
    let parquet = &export["content"]["application/vnd.apache.parquet"]["schema"];
    assert_eq!(parquet["$ref"], "#/components/schemas/BinaryFile");
    let file = &doc["components"]["schemas"]["BinaryFile"];
    assert_eq!(
        (&file["type"], &file["format"]),
        (&json!("string"), &json!("binary"))
    );
    for header in [
        "x-perimeter-matched",
        "x-perimeter-exported",
        "x-perimeter-truncated",
    ] {
        assert!(export["headers"][header].is_object(), "{header}: {export}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/") {
            continue;
        }
        let concrete = path.replace("{id}", "some-id");
        for (method, op) in item.as_object().unwrap() {
            let request = || {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                api.req(method, &concrete, ACME, Role::Admin)
            };
            let unknown_parameter = request()
                .query(&[("no_such_parameter", "1")])
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .unwrap();
            let mut answers = vec![("an unknown parameter", unknown_parameter.status().as_u16())];
            if op.get("requestBody").is_some() {
                let text = request()
                    .header("content-type", "text/plain")
                    .body("{}")
                    .send()
                    .unwrap();
                answers.push(("a text body", text.status().as_u16()));
                // Announced, not sent: the server answers from the length.
                let oversize = raw_request(
                    &api,
                    &format!(
                        "{} {concrete} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        method.to_uppercase(),
                        api.token(ACME, Role::Admin),
                        perimeter_query_api::MAX_BODY_BYTES + 1
                    ),
                );
                let status = oversize.get(9..12).and_then(|s| s.parse().ok());
                answers.push(("an oversize body", status.unwrap_or(0)));
            }
            let statuses: Vec<u16> = answers.iter().map(|(_, status)| *status).collect();
            let expected: &[u16] = if answers.len() > 1 {
                &[400, 415, 413]
            } else {
                &[400]
            };
            assert_eq!(statuses, expected, "{method} {path}");
            for (what, status) in answers {
                let listed = &op["responses"][status.to_string()];
                assert_eq!(
                    listed["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} answers {status} to {what}, not listed with the error body: \
                     {}",
                    op["responses"]
                );
            }
        }
    }
}

/// A URI over hyper's fixed limit (65,534 bytes) is refused by hyper before the router sees
/// it; the answer is still a JSON error like every other client error.
#[test]
fn a_uri_too_long_for_http_gets_a_json_error() {
    let api = TestApi::start();
    let long_query = "x".repeat(70_000);
    let answer = raw_request(
        &api,
        &format!(
            "GET /api/v1/events/search?q={long_query} HTTP/1.1\r\nHost: x\r\nAuthorization: \
             Bearer {}\r\n\r\n",
            api.token(ACME, Role::Viewer)
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "uri_too_long", "{body}");
    // Counted, as every answer (QA: hyper's own answers were counted nowhere).
    let metrics = api.metrics_text();
    assert!(
        metrics.contains(
            "perimeter_api_requests_total{route=\"unparsed\",method=\"unknown\",status=\"414\"} 1"
        ),
        "{metrics}"
    );
    // Below the limit, the API's own bound answers, as JSON too.
    let under = api.get(
        &format!("/api/v1/events/search?q={}", "x".repeat(10_000)),
        ACME,
        Role::Viewer,
    );
    assert_error(under, 400, "invalid_parameter");
}

/// The audit log names who read what: owner only, like the token file.
#[cfg(unix)]
#[test]
fn the_audit_log_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let api = TestApi::start();
    api.get_json("/api/v1/alerts", ACME, Role::Viewer);
    let mode = |name: &str| {
        std::fs::metadata(api.dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("audit.jsonl"), 0o600);
    assert_eq!(mode("api-tokens.json"), 0o600);
}

#[test]
fn graceful_shutdown_stops_the_server() {
    let mut api = TestApi::start();
    let base = api.base.clone();
    api.shutdown().unwrap();
    assert!(!api.state.is_ready());
    assert!(
        api.client.get(format!("{base}/healthz")).send().is_err(),
        "still serving after shutdown"
    );
}

/// Send raw bytes and read the answer until the server closes or 5 s pass.
/// The OpenAPI document the server serves.
fn served_openapi(api: &TestApi) -> Value {
    let response = api.client.get(api.url("/api/v1/openapi.json")).send();
    response.unwrap().json().unwrap()
}

fn raw_request(api: &TestApi, request: &str) -> String {
    use std::io::{Read, Write};
    let addr = api.base.trim_start_matches("http://");
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    socket.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&answer).contains("}}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A connection that sends nothing, or a request's headers only in part, is closed after
/// `client_silence_seconds`: such connections (a client gone, or one holding sockets open on
/// purpose) held a file descriptor each for ever, until the service had none left.
#[test]
fn connections_silent_past_the_limit_are_closed() {
    use std::io::{Read, Write};
    let api = TestApi::start_with(perimeter_query_api::ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        client_silence_seconds: 1,
        ..perimeter_query_api::ApiConfig::default()
    });
    let addr = api.base.trim_start_matches("http://").to_string();
    let closed_within = |mut stream: std::net::TcpStream| {
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 256];
        // Closed: a read of 0 bytes (or a reset), not the read timeout.
        match stream.read(&mut buf) {
            Ok(n) => assert!(
                n == 0 || buf[..n].starts_with(b"HTTP/1.1 408"),
                "{:?}",
                &buf[..n]
            ),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "not closed: {e}"
            ),
        }
        started.elapsed()
    };
    let idle = std::net::TcpStream::connect(&addr).unwrap();
    assert!(closed_within(idle) < std::time::Duration::from_secs(8));
    let mut partial = std::net::TcpStream::connect(&addr).unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(closed_within(partial) < std::time::Duration::from_secs(8));
    // A request sent at once is answered as before.
    let response = reqwest::blocking::get(api.url("/healthz")).unwrap();
    assert_eq!(response.status(), 200);
}

/// A request whose body stops arriving part way is answered `408` with the JSON error once
/// no part of it came for `client_silence_seconds`, and the connection closed: the header
/// timeout alone let such a client hold a handler and its socket for as long as it liked.
/// A body sent in parts with pauses shorter than the limit is read whole.
#[test]
fn a_request_body_silent_past_the_limit_is_answered_408() {
    use std::io::{Read, Write};
    let api = TestApi::start_with(perimeter_query_api::ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        client_silence_seconds: 1,
        ..perimeter_query_api::ApiConfig::default()
    });
    let addr = api.base.trim_start_matches("http://").to_string();
    let body = json!({"rule": "title: carol\nkeyword: carol", "events": [{"user": "carol"}, {"user": "dave"}]}).to_string();
    let send = |pauses: &[std::time::Duration], whole: bool| {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "POST /api/v1/rules/test HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            api.token(ACME, Role::Admin),
            body.len()
        )
        .unwrap();
        let parts = body
            .as_bytes()
            .chunks(body.len() / 3 + 1)
            .collect::<Vec<_>>();
        let sent = if whole { parts.len() } else { parts.len() - 1 };
        for (part, pause) in parts[..sent].iter().zip(
            pauses
                .iter()
                .chain(std::iter::repeat(&std::time::Duration::ZERO)),
        ) {
            stream.write_all(part).unwrap();
            std::thread::sleep(*pause);
        }
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok();
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    };
    let (answer, waited) = send(&[], false);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let json_body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json_body["error"]["code"], "request_timeout", "{answer}");
    assert!(waited < std::time::Duration::from_secs(8), "{waited:?}");
    // Counted as the 408 it was answered with (QA: counted as the handler's 400).
    let metrics = api.metrics_text();
    assert!(
        metrics.contains(
            "perimeter_api_requests_total{route=\"/api/v1/rules/test\",method=\"POST\",status=\"408\"} 1"
        ),
        "{metrics}"
    );
    // Pauses under the limit: the body is read whole and the rule tested.
    let pause = std::time::Duration::from_millis(400);
    let (answer, _) = send(&[pause, pause], true);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"matched\":1"), "{answer}");
}

/// Past `max_connections` open connections a new one is closed as it is accepted (and
/// counted); once one of the open ones closes, connections are served again. Without the cap,
/// clients holding connections open could take every file descriptor the process may have.
#[test]
fn connections_past_max_connections_are_closed_at_once() {
    use std::io::{Read, Write};
    let api = TestApi::start_with(perimeter_query_api::ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_connections: 2,
        ..perimeter_query_api::ApiConfig::default()
    });
    let addr = api.base.trim_start_matches("http://").to_string();
    let get = |stream: &mut std::net::TcpStream, path: &str| {
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        (
            read.is_ok() || !answer.is_empty(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    };
    // Idle connections fill the cap (each is held until `client_silence_seconds`): one more
    // is closed unserved.
    let idle: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut past = std::net::TcpStream::connect(&addr).unwrap();
    let (_, answer) = get(&mut past, "/healthz");
    assert!(
        answer.is_empty(),
        "a connection past the cap was served: {answer}"
    );
    drop(idle);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut again = std::net::TcpStream::connect(&addr).unwrap();
    let (_, answer) = get(&mut again, "/metrics");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let refused = answer
        .lines()
        .find(|l| {
            l.starts_with("perimeter_api_connections_refused_total")
                || l.starts_with("api_connections_refused_total")
        })
        .unwrap_or_else(|| panic!("no refusal counted: {answer}"));
    let count: f64 = refused.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{refused}");
}

/// A part failing for now (the Kafka producer when the broker does not answer) makes `/readyz`
/// answer 503 saying so, until it works again: it said ready all along.
#[test]
fn readiness_fails_while_a_part_is_failing_and_comes_back() {
    let api = TestApi::start();
    let ready = || api.client.get(api.url("/readyz")).send().unwrap();
    assert_eq!(ready().status(), 200);
    api.state
        .metrics
        .part_failing("Kafka producer", "no broker answered");
    let r = ready();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Kafka producer is failing: no broker answered"),
        "{body}"
    );
    api.state.metrics.part_recovered("Kafka producer");
    assert_eq!(ready().status(), 200);
}

/// Two `Authorization` headers are refused: the first was used, and a proxy on the way may
/// read the other one.
#[test]
fn two_authorization_headers_are_refused() {
    let api = TestApi::start();
    let token = api.token(ACME, Role::Viewer).to_string();
    let r = api
        .client
        .get(api.url("/api/v1/alerts"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", "Bearer other")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than one Authorization header"),
        "{body}"
    );
}

/// QA: a client that sent a change and hung up at once left it applied with no audit line (the
/// handler was dropped between the store change and the line). Every note applied this way is
/// in the audit log.
#[test]
fn a_change_whose_client_hangs_up_is_still_audited() {
    use std::io::Write;
    let api = TestApi::start();
    let addr = api.base.trim_start_matches("http://").to_string();
    let token = api.token(ACME, Role::Responder).to_string();
    let ids: Vec<String> = api.data.acme_alerts.iter().map(|a| a.id.clone()).collect();
    for (i, id) in ids.iter().enumerate() {
        let body = format!(r#"{{"note": "hung up {i}"}}"#);
        let request = format!(
            "PATCH /api/v1/alerts/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut socket = std::net::TcpStream::connect(&addr).unwrap();
        socket.write_all(request.as_bytes()).unwrap();
        // Closed without reading the answer.
        drop(socket);
    }
    let noted = |id: &str, i: usize| {
        let body = api.get_json(&format!("/api/v1/alerts/{id}"), ACME, Role::Viewer);
        body["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["to"].as_str() == Some(&format!("hung up {i}")))
    };
    // The server takes them in its own time; wait for the ones it took.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut applied;
    loop {
        applied = ids
            .iter()
            .enumerate()
            .filter(|(i, id)| noted(id, *i))
            .map(|(_, id)| id.clone())
            .collect::<Vec<_>>();
        if applied.len() == ids.len() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!applied.is_empty(), "no change reached the server");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let audit = api.get_json(
        "/api/v1/audit?action=alerts.update&limit=1000",
        ACME,
        Role::Admin,
    );
    let audited: BTreeSet<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["target"].as_str())
        .collect();
    for id in &applied {
        assert!(
            audited.contains(id.as_str()),
            "{id} changed, not audited: {audit}"
        );
    }
    // And counted in the request metrics (QA: audited, not counted).
    let metrics = api.metrics_text();
    let patches: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("perimeter_api_requests_total") && l.contains("method=\"PATCH\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(patches >= applied.len() as f64, "{metrics}");
}
