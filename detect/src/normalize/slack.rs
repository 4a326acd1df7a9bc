//! Slack Enterprise Grid Audit Logs API (`/audit/v1/logs`) entries.

use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson as Value;
use perimeter_model::{Ecs, NormalizeError, Normalizer, Outcome};

use super::fields::{self, at, classify, str_at};

/// Normalizes Slack audit entries (`date_create` epoch seconds, `action`, `actor`, `entity`, `context`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SlackAuditLogNormalizer;

impl SlackAuditLogNormalizer {
    pub const SOURCE: &'static str = "slack";

    pub(crate) fn matches(obj: &fields::Obj) -> bool {
        obj.get("date_create").is_some()
            && obj.get("action").is_some_and(Value::is_str)
            && obj.get("actor").is_some()
    }

    pub(crate) fn ecs(raw: &Value) -> Result<Ecs, NormalizeError> {
        fields::object(raw)?;
        // Top-level keys read once: each lookup in the DOM would decode the keys before it.
        let raw = &fields::Record::new(raw);
        let action = fields::required_str(raw, &["action"])?;
        let mut ecs = Ecs {
            timestamp: Some(fields::required_time(raw, &["date_create"])?),
            event_action: Some(action.to_owned()),
            ..Ecs::default()
        };
        categorize(&mut ecs, action);
        if let Some(user) = at(raw, &["actor", "user"]) {
            ecs.user_id = fields::id_at(user, &["id"]);
            ecs.user_email = fields::owned(str_at(user, &["email"]));
            ecs.user_name =
                fields::owned(str_at(user, &["email"]).or_else(|| str_at(user, &["name"])));
        }
        if str_at(raw, &["entity", "type"]) == Some("user") {
            if let Some(user) = at(raw, &["entity", "user"]) {
                ecs.user_target_id = fields::id_at(user, &["id"]);
                ecs.user_target_email = fields::owned(str_at(user, &["email"]));
                ecs.user_target_name =
                    fields::owned(str_at(user, &["email"]).or_else(|| str_at(user, &["name"])));
            }
        }
        if let Some(ctx) = at(raw, &["context"]) {
            ecs.source_ip = str_at(ctx, &["ip_address"]).and_then(fields::clean_ip);
            ecs.user_agent_original = fields::owned(str_at(ctx, &["ua"]));
            ecs.organization_id = fields::id_at(ctx, &["location", "id"]);
        }
        ecs.fill_related();
        Ok(ecs)
    }
}

fn categorize(ecs: &mut Ecs, action: &str) {
    let (cat, kind): (&[&str], &[&str]) = match action {
        "user_login" | "user_login_failed" => (&["authentication"], &["start"]),
        "user_logout" => (&["authentication"], &["end"]),
        "user_created" | "guest_created" => (&["iam"], &["user", "creation"]),
        "user_channel_join" | "user_channel_leave" => (&[], &["info"]),
        "user_deactivated" | "guest_deactivated" => (&["iam"], &["user", "deletion"]),
        a if a.starts_with("role_change_to_") || a.contains("admin") || a.contains("owner") => {
            (&["iam"], &["admin", "change"])
        }
        a if a.starts_with("user_") || a.starts_with("guest_") => (&["iam"], &["user", "change"]),
        a if a.starts_with("usergroup_") || a.starts_with("group_") => {
            (&["iam"], &["group", "change"])
        }
        a if a.starts_with("file_download") || a.contains("export") => (&["file"], &["access"]),
        a if a.starts_with("file_") => (&["file"], &["change"]),
        a if a.starts_with("app_") || a.starts_with("bot_") || a.starts_with("workflow_") => {
            (&["configuration"], config_kind(a))
        }
        a if a.starts_with("pref.")
            || a.contains("sso")
            || a.contains("two_factor")
            || a.contains("session_") =>
        {
            (&["configuration"], &["change"])
        }
        "anomaly" => (&["intrusion_detection"], &["info"]),
        _ => (&[], &["info"]),
    };
    classify(ecs, cat, kind);
    ecs.event_outcome = if action.ends_with("_failed")
        || action.ends_with("_blocked")
        || action.ends_with("_denied")
    {
        Outcome::Failure
    } else if action == "user_login" {
        Outcome::Success
    } else {
        Outcome::Unknown
    };
}

fn config_kind(action: &str) -> &'static [&'static str] {
    if action.ends_with("_installed")
        || action.ends_with("_approved")
        || action.ends_with("_created")
        || action.ends_with("_added")
    {
        &["creation"]
    } else if action.ends_with("_uninstalled")
        || action.ends_with("_removed")
        || action.ends_with("_deleted")
    {
        &["deletion"]
    } else {
        &["change"]
    }
}

impl Normalizer for SlackAuditLogNormalizer {
    fn source(&self) -> &str {
        Self::SOURCE
    }

    fn normalize_ecs(&self, raw: &Value) -> Result<Ecs, NormalizeError> {
        Self::ecs(raw)
    }
}
