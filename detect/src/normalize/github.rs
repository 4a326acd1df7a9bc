//! GitHub organization / enterprise audit log (`/orgs/{org}/audit-log`, `/enterprises/{e}/audit-log`).

use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson as Value;
use perimeter_model::{Ecs, NormalizeError, Normalizer, Outcome};

use super::fields::{self, at, classify, str_at};

/// Normalizes GitHub audit-log entries (`action`, `actor`, `user`, `org`, `@timestamp` in ms).
///
/// GitHub records completed actions without a result field, so `event.outcome` is `unknown`
/// except for the explicit failure actions (`user.failed_login`, `*.failed`).
#[derive(Debug, Default, Clone, Copy)]
pub struct GithubAuditLogNormalizer;

impl GithubAuditLogNormalizer {
    pub const SOURCE: &'static str = "github";

    pub(crate) fn matches(obj: &fields::Obj) -> bool {
        obj.get("action").is_some_and(Value::is_str)
            && (obj.get("_document_id").is_some()
                || (obj.get("@timestamp").is_some()
                    && (obj.get("org").is_some()
                        || obj.get("business").is_some()
                        || obj.get("actor").is_some()))
                || (obj.get("created_at").is_some() && obj.get("actor").is_some_and(Value::is_str)))
    }

    pub(crate) fn ecs(raw: &Value) -> Result<Ecs, NormalizeError> {
        fields::object(raw)?;
        // Top-level keys read once: each lookup in the DOM would decode the keys before it.
        let raw = &fields::Record::new(raw);
        let action = fields::required_str(raw, &["action"])?;
        let ts = match at(raw, &["@timestamp"]) {
            Some(t) if !t.is_null() => fields::parse_time(t, &["@timestamp"])?,
            _ => fields::required_time(raw, &["created_at"])?,
        };
        let mut ecs = Ecs {
            timestamp: Some(ts),
            event_action: Some(action.to_owned()),
            ..Ecs::default()
        };
        ecs.event_outcome = if action.ends_with("failed_login") || action.ends_with(".failed") {
            Outcome::Failure
        } else if action == "user.login" {
            Outcome::Success
        } else {
            Outcome::Unknown
        };
        categorize(&mut ecs, action);
        fields::set_login(
            &mut ecs.user_name,
            &mut ecs.user_email,
            str_at(raw, &["actor"]),
        );
        ecs.user_id = fields::id_at(raw, &["actor_id"]);
        fields::set_login(
            &mut ecs.user_target_name,
            &mut ecs.user_target_email,
            str_at(raw, &["user"]),
        );
        ecs.user_target_id = fields::id_at(raw, &["user_id"]);
        ecs.source_ip = str_at(raw, &["actor_ip"]).and_then(fields::clean_ip);
        ecs.source_geo_country_iso_code =
            str_at(raw, &["actor_location", "country_code"]).and_then(fields::country_iso);
        ecs.user_agent_original = fields::owned(str_at(raw, &["user_agent"]));
        // By name first: records of one organization carry `org` always and `org_id` only in
        // some shapes, and one organization must have one id.
        ecs.organization_id = fields::id_at(raw, &["org"])
            .or_else(|| fields::id_at(raw, &["org_id"]))
            .or_else(|| fields::id_at(raw, &["business"]))
            .or_else(|| fields::id_at(raw, &["business_id"]));
        ecs.fill_related();
        Ok(ecs)
    }
}

fn categorize(ecs: &mut Ecs, action: &str) {
    let (prefix, verb) = action.split_once('.').unwrap_or((action, ""));
    let (cat, kind): (&[&str], &[&str]) = match (prefix, verb) {
        ("user", "login") | ("user", "failed_login") => (&["authentication"], &["start"]),
        ("user", "logout") => (&["authentication"], &["end"]),
        ("business" | "enterprise", v) if v.contains("admin") || v.contains("owner") => {
            (&["iam"], &["admin", "change"])
        }
        ("org", "update_member") | ("org", "update_member_repository_creation_permission") => {
            (&["iam"], &["admin", "change"])
        }
        ("org" | "team" | "repo" | "business", v)
            if v.contains("member")
                || v.contains("outside_collaborator")
                || v.contains("invite") =>
        {
            (&["iam"], &["group", "change"])
        }
        ("team", "create") => (&["iam"], &["group", "creation"]),
        ("team", "destroy") => (&["iam"], &["group", "deletion"]),
        ("user", "create") => (&["iam"], &["user", "creation"]),
        ("user", "destroy") | ("user", "delete") => (&["iam"], &["user", "deletion"]),
        ("user", "promote") | ("user", "demote") => (&["iam"], &["admin", "change"]),
        ("user", "suspend") | ("user", "unsuspend") | ("user", "rename") => {
            (&["iam"], &["user", "change"])
        }
        ("git", "clone") | ("git", "fetch") | ("repo", "download_zip") => (&["file"], &["access"]),
        (
            "oauth_application"
            | "oauth_authorization"
            | "oauth_access"
            | "integration_installation"
            | "integration"
            | "hook"
            | "public_key"
            | "deploy_key"
            | "personal_access_token"
            | "org_credential_authorization"
            | "two_factor_authentication"
            | "protected_branch"
            | "repository_ruleset"
            | "secret_scanning"
            | "repository_secret_scanning"
            | "codespaces"
            | "audit_log_streaming"
            | "ip_allow_list"
            | "ip_allow_list_entry"
            | "saml"
            | "sso",
            v,
        ) => (&["configuration"], config_kind(v)),
        ("org" | "business" | "repo", v)
            if v.contains("oauth")
                || v.contains("two_factor")
                || v.contains("saml")
                || v.contains("sso")
                || v.contains("audit_log")
                || v.contains("ip_allow")
                || v.contains("secret_scanning")
                || v.starts_with("set_")
                || v.starts_with("enable")
                || v.starts_with("disable")
                || v == "access"
                || v == "update_default_repository_permission" =>
        {
            (&["configuration"], config_kind(v))
        }
        ("repo", "create") => (&["configuration"], &["creation"]),
        ("repo", "destroy") => (&["configuration"], &["deletion"]),
        _ => (&[], &["info"]),
    };
    classify(ecs, cat, kind);
}

fn config_kind(verb: &str) -> &'static [&'static str] {
    if verb.starts_with("create")
        || verb.starts_with("add")
        || verb == "request_created"
        || verb.ends_with("approved")
    {
        &["creation"]
    } else if verb.starts_with("destroy")
        || verb.starts_with("delete")
        || verb.starts_with("remove")
        || verb.starts_with("revoke")
    {
        &["deletion"]
    } else {
        &["change"]
    }
}

impl Normalizer for GithubAuditLogNormalizer {
    fn source(&self) -> &str {
        Self::SOURCE
    }

    fn normalize_ecs(&self, raw: &Value) -> Result<Ecs, NormalizeError> {
        Self::ecs(raw)
    }
}
