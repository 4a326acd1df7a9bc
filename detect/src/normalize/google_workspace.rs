//! Google Workspace Admin SDK Reports API activities (`activities.list`, any application).
//!
//! One Perimeter event per `events[]` entry: an activity that carries several events (a Drive
//! upload + edit + ACL change) is split by [`super::split_records`] into copies of the activity
//! whose `events` holds exactly one entry. Fed an unsplit activity with several events, this
//! normalizer returns an error rather than keep one event and drop the rest.

use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson as Value;
use perimeter_model::{Ecs, NormalizeError, Normalizer, Outcome};

use super::fields::{self, classify, str_at};

/// Normalizes one Reports API activity holding one `events[]` entry.
#[derive(Debug, Default, Clone, Copy)]
pub struct GoogleWorkspaceActivityNormalizer;

impl GoogleWorkspaceActivityNormalizer {
    pub const SOURCE: &'static str = "google_workspace";

    pub(crate) fn matches(obj: &fields::Obj) -> bool {
        obj.get("kind").and_then(Value::as_str) == Some("admin#reports#activity")
            || (obj.get("events").is_some_and(Value::is_array)
                && obj
                    .get("id")
                    .and_then(|id| id.get("applicationName"))
                    .is_some())
    }

    pub(crate) fn ecs(raw: &Value) -> Result<Ecs, NormalizeError> {
        fields::object(raw)?;
        // Top-level keys read once: each lookup in the DOM would decode the keys before it.
        let raw = &fields::Record::new(raw);
        let events = fields::opt_array(raw, &["events"])?
            .ok_or_else(|| NormalizeError::MissingField("events".into()))?;
        let event = match events {
            [one] => one,
            [] => return Err(NormalizeError::MissingField("events[0]".into())),
            // Normalizing only the first entry would drop the others without a trace.
            many => {
                return Err(NormalizeError::Other(format!(
                    "activity holds {} events; split it into one record per event with split_records first",
                    many.len()
                )))
            }
        };
        let name = match event.get("name").map(Value::as_ref) {
            Some(ValueRef::String(s)) if !s.is_empty() => s,
            Some(ValueRef::String(_)) | Some(ValueRef::Null) | None => {
                return Err(NormalizeError::MissingField("events[0].name".into()))
            }
            Some(_) => {
                return Err(NormalizeError::WrongType {
                    field: "events[0].name".into(),
                    expected: "string",
                })
            }
        };
        let mut ecs = Ecs {
            timestamp: Some(fields::required_time(raw, &["id", "time"])?),
            event_action: Some(name.to_owned()),
            ..Ecs::default()
        };
        let app = str_at(raw, &["id", "applicationName"]).unwrap_or("");
        let kind = str_at(event, &["type"]).unwrap_or("");
        categorize(&mut ecs, app, kind, name);
        if matches!(name, "login_challenge" | "login_verification") {
            if let Some(outcome) = challenge_outcome(event) {
                ecs.event_outcome = outcome;
            }
        }

        fields::set_login(
            &mut ecs.user_name,
            &mut ecs.user_email,
            str_at(raw, &["actor", "email"]),
        );
        ecs.user_id = fields::id_at(raw, &["actor", "profileId"]);
        ecs.source_ip = str_at(raw, &["ipAddress"]).and_then(fields::clean_ip);
        ecs.organization_id = fields::id_at(raw, &["id", "customerId"]);
        if let Some(params) = event.get("parameters").and_then(Value::as_array) {
            let target = params.iter().find_map(|p| match param_name(p) {
                Some(
                    "USER_EMAIL" | "target_user" | "affected_email_address" | "target_user_email",
                ) => str_at(p, &["value"]),
                _ => None,
            });
            fields::set_login(
                &mut ecs.user_target_name,
                &mut ecs.user_target_email,
                target,
            );
        }
        ecs.fill_related();
        Ok(ecs)
    }
}

/// The result of a login challenge or verification (2-step, identity verification), which
/// Google reports in the `login_challenge_status` parameter: `Challenge Passed` or
/// `Challenge Failed`.
fn challenge_outcome(event: &Value) -> Option<Outcome> {
    let params = event.get("parameters")?.as_array()?;
    let status = params.iter().find_map(|p| match param_name(p) {
        Some("login_challenge_status") => str_at(p, &["value"]),
        _ => None,
    })?;
    match status.to_ascii_lowercase().as_str() {
        "challenge passed" | "passed" => Some(Outcome::Success),
        "challenge failed" | "failed" => Some(Outcome::Failure),
        _ => None,
    }
}

/// A `parameters[]` entry's name. Google writes `name` first: the first key is read before a
/// lookup by name, which decodes every key it passes (a Drive event has about eight entries, and
/// each was a lookup). Repeated keys are resolved before normalizing, so a first `name` is the
/// only one.
fn param_name(p: &Value) -> Option<&str> {
    match p.as_object().and_then(|o| o.iter().next()) {
        Some(("name", v)) => v.as_str().filter(|s| !fields::is_blank(s)),
        _ => str_at(p, &["name"]),
    }
}

fn categorize(ecs: &mut Ecs, app: &str, kind: &str, name: &str) {
    let (cat, typ, outcome): (&[&str], &[&str], Outcome) = match (app, name) {
        (_, "login_success") => (&["authentication"], &["start"], Outcome::Success),
        (_, "login_failure") => (&["authentication"], &["start"], Outcome::Failure),
        (_, "login_challenge" | "login_verification") => {
            (&["authentication"], &["info"], Outcome::Unknown)
        }
        (_, "logout") => (&["authentication"], &["end"], Outcome::Success),
        // A user's 2-step verification, password or recovery settings changed (the Reports
        // API logs changes that happened): an account change, as Okta's factor changes are.
        (
            "login",
            "2sv_disable"
            | "2sv_enroll"
            | "recovery_email_edit"
            | "recovery_phone_edit"
            | "recovery_secret_qa_edit"
            | "password_edit"
            | "titanium_enroll"
            | "titanium_unenroll",
        ) => (&["iam"], &["user", "change"], Outcome::Success),
        ("login", _) => (&["authentication"], &["info"], Outcome::Unknown),
        ("token", "authorize") => (&["configuration"], &["creation"], Outcome::Success),
        ("token", "revoke") => (&["configuration"], &["deletion"], Outcome::Success),
        ("drive", "download" | "view" | "copy" | "print" | "preview") => {
            (&["file"], &["access"], Outcome::Success)
        }
        ("drive", "upload" | "create") => (&["file"], &["creation"], Outcome::Success),
        ("drive", "delete" | "trash") => (&["file"], &["deletion"], Outcome::Success),
        ("drive", _) => (&["file"], &["change"], Outcome::Success),
        (_, "CREATE_USER") => (&["iam"], &["user", "creation"], Outcome::Success),
        (_, "DELETE_USER") => (&["iam"], &["user", "deletion"], Outcome::Success),
        (
            _,
            "GRANT_ADMIN_PRIVILEGE" | "REVOKE_ADMIN_PRIVILEGE" | "ASSIGN_ROLE" | "UNASSIGN_ROLE",
        ) => (&["iam"], &["admin", "change"], Outcome::Success),
        (_, "CREATE_GROUP") => (&["iam"], &["group", "creation"], Outcome::Success),
        (_, "DELETE_GROUP") => (&["iam"], &["group", "deletion"], Outcome::Success),
        _ if kind == "GROUP_SETTINGS" => (&["iam"], &["group", "change"], Outcome::Success),
        _ if kind == "USER_SETTINGS" => (&["iam"], &["user", "change"], Outcome::Success),
        _ if kind == "DELEGATED_ADMIN_SETTINGS" => {
            (&["iam"], &["admin", "change"], Outcome::Success)
        }
        ("admin", _) if kind.ends_with("_SETTINGS") || kind == "APPLICATION_SETTINGS" => {
            (&["configuration"], &["change"], Outcome::Success)
        }
        (_, n) if n.contains("EXPORT") || n.contains("TAKEOUT") => {
            (&["file"], &["access"], Outcome::Success)
        }
        _ => (&[], &["info"], Outcome::Unknown),
    };
    classify(ecs, cat, typ);
    ecs.event_outcome = outcome;
}

impl Normalizer for GoogleWorkspaceActivityNormalizer {
    fn source(&self) -> &str {
        Self::SOURCE
    }

    fn normalize_ecs(&self, raw: &Value) -> Result<Ecs, NormalizeError> {
        Self::ecs(raw)
    }
}
