//! What an event means to the behavioural detectors: its action classes and its entities.
//!
//! Reads the normalized ECS view first (the normalizers' convention: `authentication` with an
//! outcome, `iam`, `configuration` changes, `file`/`database` access), then `event.action`
//! keywords, then a few raw vendor fields as fallback (throttling codes, token ids, OAuth clients).

use std::borrow::Cow;

use perimeter_model::{Event, Outcome};
use serde_json::Value;

/// The behavioural meaning of one event. Borrowed from the event: no allocation on the hot path
/// except for numeric raw ids that must be rendered as text.
#[derive(Debug, Default)]
pub(crate) struct Classified<'a> {
    /// `Some(outcome)` for an authentication attempt with a known outcome.
    pub auth: Option<Outcome>,
    /// A security-relevant configuration / IAM change candidate.
    pub config_change: bool,
    /// Counts towards `volume_anomaly` (download, export, data access, deletion, API call).
    pub volume: bool,
    /// A rate-limit / throttling event.
    pub rate_limit: bool,
    /// An OAuth app / integration being installed, granted or created for the org.
    pub app_grant: bool,
    pub user: Option<&'a str>,
    pub ip: Option<&'a str>,
    /// API token / access key used.
    pub token: Option<Cow<'a, str>>,
    /// OAuth client / app acting or used.
    pub app: Option<Cow<'a, str>>,
    pub org: &'a str,
    pub country: Option<&'a str>,
    pub asn: Option<u64>,
    pub user_agent_family: Option<&'a str>,
}

/// Case-insensitive ASCII substring test without allocating.
pub(crate) fn contains_ci(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() {
        return true;
    }
    h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v.eq_ignore_ascii_case(value))
}

fn raw_path<'a>(raw: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = raw;
    for p in path {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn raw_str<'a>(raw: &'a Value, path: &[&str]) -> Option<Cow<'a, str>> {
    match raw_path(raw, path)? {
        Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Raw fields carrying the API token / access key that made a call.
const TOKEN_PATHS: &[&[&str]] = &[
    &["userIdentity", "accessKeyId"],                // CloudTrail
    &["hashed_token"],                               // GitHub
    &["token_id"],                                   // GitHub
    &["transaction", "detail", "requestApiTokenId"], // Okta API token
    &["actor", "token_id"],
];

/// Raw fields naming the OAuth client / integration involved.
const APP_PATHS: &[&[&str]] = &[
    &["oauth_application_name"],                // GitHub
    &["oauth_application_id"],                  // GitHub
    &["integration"],                           // GitHub apps
    &["entity", "app", "name"],                 // Slack
    &["context", "app", "name"],                // Slack
    &["debugContext", "debugData", "clientId"], // Okta
    &["AppId"],                                 // M365
    &["client_id"],
];

/// HTTP 429 / throttling markers in raw records.
const THROTTLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "ratelimited",
    "rate_limited",
];

fn is_429(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Number(n)) => n.as_u64() == Some(429),
        Some(Value::String(s)) => s == "429",
        _ => false,
    }
}

/// A coarse user-agent family: browser name for browsers, the product token otherwise
/// (`python-requests/2.31` -> `python-requests`). Versions are dropped so upgrades are not "new".
pub(crate) fn user_agent_family(ua: &str) -> Option<&str> {
    let ua = ua.trim();
    if ua.is_empty() {
        return None;
    }
    if ua.starts_with("Mozilla/") {
        for (marker, family) in [
            ("Edg/", "Edge"),
            ("OPR/", "Opera"),
            ("Firefox/", "Firefox"),
            ("Chrome/", "Chrome"),
            ("Safari/", "Safari"),
        ] {
            if ua.contains(marker) {
                return Some(family);
            }
        }
        return Some("Mozilla");
    }
    let end = ua.find(['/', ' ', '(']).unwrap_or(ua.len());
    Some(&ua[..end]).filter(|s| !s.is_empty())
}

pub(crate) fn classify(event: &Event) -> Classified<'_> {
    let ecs = &event.ecs;
    let raw = &event.raw;
    let action = ecs.event_action.as_deref().unwrap_or("");
    let mut c = Classified {
        user: ecs
            .user_name
            .as_deref()
            .or(ecs.user_email.as_deref())
            .or(ecs.user_id.as_deref()),
        ip: ecs.source_ip.as_deref(),
        org: ecs
            .organization_id
            .as_deref()
            .or(ecs.cloud_account_id.as_deref())
            .unwrap_or(""),
        country: ecs.source_geo_country_iso_code.as_deref(),
        asn: ecs.source_as_number,
        user_agent_family: ecs
            .user_agent_original
            .as_deref()
            .and_then(user_agent_family),
        ..Default::default()
    };

    if has(&ecs.event_category, "authentication") && ecs.event_outcome != Outcome::Unknown {
        c.auth = Some(ecs.event_outcome);
    }

    let changes = ecs.event_type.is_empty()
        || ["change", "creation", "deletion", "admin", "user", "group"]
            .iter()
            .any(|t| has(&ecs.event_type, t));
    c.config_change =
        (has(&ecs.event_category, "configuration") || has(&ecs.event_category, "iam")) && changes;

    c.rate_limit = contains_ci(action, "rate_limit")
        || contains_ci(action, "ratelimit")
        || contains_ci(action, "throttl")
        || raw_path(raw, &["errorCode"])
            .and_then(Value::as_str)
            .is_some_and(|code| THROTTLE_CODES.contains(&code))
        || raw_path(raw, &["error"])
            .and_then(Value::as_str)
            .is_some_and(|code| THROTTLE_CODES.contains(&code))
        || is_429(raw.get("status"))
        || is_429(raw.get("status_code"))
        || is_429(raw.get("statusCode"))
        || is_429(raw.get("response_code"))
        || is_429(raw_path(raw, &["http", "response", "status_code"]));

    let data_access = (has(&ecs.event_category, "file") || has(&ecs.event_category, "database"))
        && (ecs.event_type.is_empty()
            || has(&ecs.event_type, "access")
            || has(&ecs.event_type, "deletion"));
    let keyword = [
        "download",
        "export",
        "delete",
        "destroy",
        "remove",
        "clone",
        "get_object",
        "getobject",
    ]
    .iter()
    .any(|k| contains_ci(action, k));
    let api_call = raw.get("eventSource").is_some()
        && raw
            .get("eventType")
            .is_some_and(|t| t != "AwsConsoleSignIn")
        || raw.get("programmatic_access_type").is_some();
    c.volume = (data_access || keyword || api_call) && c.auth.is_none() && !c.rate_limit;

    for path in TOKEN_PATHS {
        if let Some(v) = raw_str(raw, path) {
            c.token = Some(v);
            break;
        }
    }
    for path in APP_PATHS {
        if let Some(v) = raw_str(raw, path) {
            c.app = Some(v);
            break;
        }
    }
    // Okta: an app acting on its own (actor type `PublicClientApp` / `App`) is the client.
    if c.app.is_none() {
        if let Some(t) = raw_path(raw, &["actor", "type"]).and_then(Value::as_str) {
            if t.ends_with("App") || t == "AppInstance" {
                c.app = raw_str(raw, &["actor", "id"]);
            }
        }
    }
    c.app_grant = c.app.is_some()
        && [
            "oauth",
            "integration",
            "app_install",
            "app_approved",
            "consent",
            "grant",
            "authorize",
            "application.lifecycle.create",
            "service principal",
            "installation",
        ]
        .iter()
        .any(|k| contains_ci(action, k))
        && !c.rate_limit
        && c.auth != Some(Outcome::Failure);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::{Ecs, RawRecord};
    use serde_json::json;

    fn ev(ecs: Ecs, raw: Value) -> Event {
        let rec = RawRecord {
            source: "x".into(),
            tenant: "t".into(),
            received_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            line: None,
            raw,
        };
        Event::new("x", rec, ecs)
    }

    #[test]
    fn okta_login_failure_is_auth_failure_with_entities() {
        let e = ev(
            Ecs {
                event_action: Some("user.session.start".into()),
                event_category: vec!["authentication".into(), "session".into()],
                event_type: vec!["start".into()],
                event_outcome: Outcome::Failure,
                user_name: Some("alice@example.com".into()),
                source_ip: Some("203.0.113.9".into()),
                user_agent_original: Some(
                    "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36".into(),
                ),
                ..Default::default()
            },
            json!({"eventType": "user.session.start", "outcome": {"result": "FAILURE"}}),
        );
        let c = classify(&e);
        assert_eq!(c.auth, Some(Outcome::Failure));
        assert_eq!(c.user, Some("alice@example.com"));
        assert_eq!(c.ip, Some("203.0.113.9"));
        assert_eq!(c.user_agent_family, Some("Chrome"));
        assert!(!c.volume && !c.rate_limit && !c.config_change);
    }

    #[test]
    fn throttling_is_found_in_action_or_raw() {
        let okta = ev(
            Ecs {
                event_action: Some("system.org.rate_limit.violation".into()),
                ..Default::default()
            },
            json!({}),
        );
        assert!(classify(&okta).rate_limit);
        let ct = ev(
            Ecs {
                event_action: Some("DescribeInstances".into()),
                ..Default::default()
            },
            json!({"eventSource": "ec2.amazonaws.com", "errorCode": "ThrottlingException",
                   "userIdentity": {"accessKeyId": "AKIAEXAMPLE"}}),
        );
        let c = classify(&ct);
        assert!(c.rate_limit && !c.volume);
        assert_eq!(c.token.as_deref(), Some("AKIAEXAMPLE"));
        let gh = ev(Ecs::default(), json!({"status": 429, "token_id": 12345}));
        let c = classify(&gh);
        assert!(c.rate_limit);
        assert_eq!(c.token.as_deref(), Some("12345"));
    }

    #[test]
    fn downloads_and_config_changes() {
        let dl = ev(
            Ecs {
                event_action: Some("file_downloaded".into()),
                event_category: vec!["file".into()],
                event_type: vec!["access".into()],
                ..Default::default()
            },
            json!({}),
        );
        assert!(classify(&dl).volume);
        let cfg = ev(
            Ecs {
                event_action: Some("policy.lifecycle.update".into()),
                event_category: vec!["configuration".into()],
                event_type: vec!["change".into()],
                ..Default::default()
            },
            json!({}),
        );
        let c = classify(&cfg);
        assert!(c.config_change && !c.volume);
    }

    #[test]
    fn user_agent_families_drop_versions() {
        assert_eq!(
            user_agent_family("python-requests/2.31.0"),
            Some("python-requests")
        );
        assert_eq!(
            user_agent_family("aws-cli/2.13.0 Python/3.11"),
            Some("aws-cli")
        );
        assert_eq!(
            user_agent_family("Mozilla/5.0 (Windows NT 10.0) Gecko/20100101 Firefox/118.0"),
            Some("Firefox")
        );
        assert_eq!(user_agent_family("   "), None);
    }
}
