//! 1Password Events API records: sign-in attempts, item usages and audit events.
//!
//! The three endpoints share `uuid` + `timestamp`; the kind is told apart by shape:
//! sign-in attempts carry `category` (+ `session_uuid`/`target_user`), item usages `item_uuid`
//! and `vault_uuid`, audit events `actor_uuid` and `object_type`.

use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson as Value;
use perimeter_model::{Ecs, NormalizeError, Normalizer, Outcome};

use super::fields::{self, at, classify, str_at};

/// Which Events API endpoint a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnePasswordEventKind {
    SignInAttempt,
    ItemUsage,
    Audit,
}

impl OnePasswordEventKind {
    /// Tell the kind from the record's keys.
    pub fn of(obj: &fields::Obj) -> Option<OnePasswordEventKind> {
        obj.get("timestamp")?;
        if obj.get("actor_uuid").is_some() && obj.get("object_type").is_some() {
            Some(OnePasswordEventKind::Audit)
        } else if obj.get("item_uuid").is_some() && obj.get("vault_uuid").is_some() {
            Some(OnePasswordEventKind::ItemUsage)
        } else if obj.get("category").is_some()
            && (obj.get("session_uuid").is_some() || obj.get("target_user").is_some())
        {
            Some(OnePasswordEventKind::SignInAttempt)
        } else {
            None
        }
    }
}

/// Normalizes 1Password Events API records of all three kinds.
///
/// `event.action`: sign-in attempts -> `signin_attempt.<category>` (e.g.
/// `signin_attempt.credentials_failed`); item usages -> the vendor `action` (`secure-copy`,
/// `reveal`, ...); audit events -> `<object_type>.<action>` (e.g. `user.suspend`), because the
/// bare audit verb (`activate`, `grant`) does not say what it acted on.
#[derive(Debug, Default, Clone, Copy)]
pub struct OnePasswordEventsNormalizer;

impl OnePasswordEventsNormalizer {
    pub const SOURCE: &'static str = "onepassword";

    pub(crate) fn matches(obj: &fields::Obj) -> bool {
        obj.get("uuid").is_some() && OnePasswordEventKind::of(obj).is_some()
    }

    pub(crate) fn ecs(raw: &Value) -> Result<Ecs, NormalizeError> {
        let obj = fields::object(raw)?;
        let kind = OnePasswordEventKind::of(obj).ok_or_else(|| {
            NormalizeError::Other(
                "not a 1Password sign-in attempt, item usage or audit event (expected `timestamp` with `category`, `item_uuid`+`vault_uuid` or `actor_uuid`+`object_type`)".into(),
            )
        })?;
        // Top-level keys read once: each lookup in the DOM would decode the keys before it.
        let raw = &fields::Record::new(raw);
        let mut ecs = Ecs {
            timestamp: Some(fields::required_time(raw, &["timestamp"])?),
            ..Ecs::default()
        };
        match kind {
            OnePasswordEventKind::SignInAttempt => {
                let category = fields::required_str(raw, &["category"])?;
                ecs.event_action = Some(format!("signin_attempt.{category}"));
                ecs.event_outcome = match category {
                    "success" | "firewall_reported_success" => Outcome::Success,
                    _ => Outcome::Failure,
                };
                classify(&mut ecs, &["authentication"], &["start"]);
                if let Some(user) = at(raw, &["target_user"]) {
                    ecs.user_id = fields::id_at(user, &["uuid"]);
                    ecs.user_email = fields::owned(str_at(user, &["email"]));
                    ecs.user_name =
                        fields::owned(str_at(user, &["email"]).or_else(|| str_at(user, &["name"])));
                }
                ecs.source_geo_country_iso_code =
                    str_at(raw, &["country"]).and_then(fields::country_iso);
                ecs.source_ip = client_ip(raw);
            }
            OnePasswordEventKind::ItemUsage => {
                let action = str_at(raw, &["action"]).unwrap_or("item_usage");
                ecs.event_action = Some(action.to_owned());
                ecs.event_outcome = Outcome::Success;
                classify(&mut ecs, &["database"], &["access"]);
                if let Some(user) = at(raw, &["user"]) {
                    ecs.user_id = fields::id_at(user, &["uuid"]);
                    ecs.user_email = fields::owned(str_at(user, &["email"]));
                    ecs.user_name =
                        fields::owned(str_at(user, &["email"]).or_else(|| str_at(user, &["name"])));
                }
                ecs.source_ip = client_ip(raw);
                ecs.source_geo_country_iso_code =
                    str_at(raw, &["location", "country"]).and_then(fields::country_iso);
            }
            OnePasswordEventKind::Audit => {
                let action = fields::required_str(raw, &["action"])?;
                let object = fields::required_str(raw, &["object_type"])?;
                ecs.event_action = Some(format!("{object}.{action}"));
                ecs.event_outcome = Outcome::Success;
                categorize_audit(&mut ecs, object, action);
                ecs.user_id = fields::id_at(raw, &["actor_uuid"]);
                if let Some(actor) = at(raw, &["actor_details"]) {
                    ecs.user_email = fields::owned(str_at(actor, &["email"]));
                    ecs.user_name = fields::owned(
                        str_at(actor, &["email"]).or_else(|| str_at(actor, &["name"])),
                    );
                }
                if object == "user" {
                    ecs.user_target_id = fields::id_at(raw, &["object_uuid"]);
                    if let Some(obj) = at(raw, &["object_details"]) {
                        ecs.user_target_email = fields::owned(str_at(obj, &["email"]));
                        ecs.user_target_name = fields::owned(
                            str_at(obj, &["email"]).or_else(|| str_at(obj, &["name"])),
                        );
                    }
                }
                ecs.source_ip = str_at(raw, &["session", "ip"]).and_then(fields::clean_ip);
                ecs.source_geo_country_iso_code =
                    str_at(raw, &["location", "country"]).and_then(fields::country_iso);
            }
        }
        ecs.fill_related();
        Ok(ecs)
    }
}

fn categorize_audit(ecs: &mut Ecs, object: &str, action: &str) {
    let verb: &[&str] = match action {
        "create" | "join" | "grant" | "add" | "invite" => &["creation"],
        "delete" | "leave" | "revoke" | "remove" | "purge" => &["deletion"],
        _ => &["change"],
    };
    let (cat, kind): (&[&str], &[&str]) = match object {
        "user" => match action {
            "create" | "invite" => (&["iam"], &["user", "creation"]),
            "delete" | "purge" => (&["iam"], &["user", "deletion"]),
            _ => (&["iam"], &["user", "change"]),
        },
        "group" | "gm" | "grp" => (&["iam"], &["group", "change"]),
        "uva" | "gva" | "vault" | "role" | "team" => (&["iam"], &["change"]),
        "item" | "items" | "ishare" => (&["database"], verb),
        _ => (&["configuration"], verb),
    };
    classify(ecs, cat, kind);
}

/// The client's address: `client.ip` in the recorded pages, `client.ip_address` in
/// 1Password's API reference and other collectors' copies; either is read.
fn client_ip<'a>(raw: impl fields::Lookup<'a>) -> Option<String> {
    str_at(raw, &["client", "ip"])
        .or_else(|| str_at(raw, &["client", "ip_address"]))
        .and_then(fields::clean_ip)
}

impl Normalizer for OnePasswordEventsNormalizer {
    fn source(&self) -> &str {
        Self::SOURCE
    }

    fn normalize_ecs(&self, raw: &Value) -> Result<Ecs, NormalizeError> {
        Self::ecs(raw)
    }
}
