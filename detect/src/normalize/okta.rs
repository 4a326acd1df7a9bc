//! Okta System Log (`/api/v1/logs`) records.

use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson as Value;
use perimeter_model::{Ecs, NormalizeError, Normalizer, Outcome};

use super::fields::{self, at, classify, str_at};

/// Normalizes Okta System Log events (`eventType`, `published`, `actor`, `client`, `target[]`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OktaSystemLogNormalizer;

impl OktaSystemLogNormalizer {
    pub const SOURCE: &'static str = "okta";

    /// Cheap shape test used by auto-detection.
    pub(crate) fn matches(obj: &fields::Obj) -> bool {
        obj.get("eventType").is_some_and(Value::is_str) && obj.get("published").is_some()
    }

    pub(crate) fn ecs(raw: &Value) -> Result<Ecs, NormalizeError> {
        fields::object(raw)?;
        // Top-level keys read once: each lookup in the DOM would decode the keys before it.
        let raw = &fields::Record::new(raw);
        let action = fields::required_str(raw, &["eventType"])?;
        let mut ecs = Ecs {
            timestamp: Some(fields::required_time(raw, &["published"])?),
            event_action: Some(action.to_owned()),
            ..Ecs::default()
        };
        ecs.event_outcome = match str_at(raw, &["outcome", "result"]) {
            Some("SUCCESS") | Some("ALLOW") => Outcome::Success,
            Some("FAILURE") | Some("DENY") => Outcome::Failure,
            _ => Outcome::Unknown,
        };
        // Okta records throttling as its own event type with a SUCCESS-less outcome; detectors
        // treat a violation as a failed request.
        if action.contains(".rate_limit.") {
            ecs.event_outcome = Outcome::Failure;
        }
        categorize(&mut ecs, action);

        let actor = at(raw, &["actor"]);
        if let Some(actor) = actor {
            ecs.user_id = fields::id_at(actor, &["id"]);
            fields::set_login(
                &mut ecs.user_name,
                &mut ecs.user_email,
                str_at(actor, &["alternateId"]),
            );
        }
        if let Some(targets) = fields::opt_array(raw, &["target"])? {
            if let Some(t) = targets
                .iter()
                .find(|t| str_at(t, &["type"]) == Some("User"))
            {
                ecs.user_target_id = fields::id_at(t, &["id"]);
                fields::set_login(
                    &mut ecs.user_target_name,
                    &mut ecs.user_target_email,
                    str_at(t, &["alternateId"]),
                );
                if ecs.user_target_name.is_none() {
                    ecs.user_target_name = fields::owned(str_at(t, &["displayName"]));
                }
            }
        }
        if let Some(client) = at(raw, &["client"]) {
            ecs.source_ip = str_at(client, &["ipAddress"]).and_then(fields::clean_ip);
            ecs.source_geo_country_iso_code =
                str_at(client, &["geographicalContext", "country"]).and_then(fields::country_iso);
            ecs.user_agent_original = fields::owned(str_at(client, &["userAgent", "rawUserAgent"]));
        }
        ecs.source_as_number = at(raw, &["securityContext", "asNumber"]).and_then(Value::as_u64);
        ecs.fill_related();
        // The proxies a request came through (`request.ipChain`): each is an address an analyst
        // pivots on, not only the client's.
        if let Some(chain) = at(raw, &["request", "ipChain"]).and_then(Value::as_array) {
            for ip in chain
                .iter()
                .filter_map(|hop| str_at(hop, &["ip"]).and_then(fields::clean_ip))
            {
                ecs.add_related_ip(ip);
            }
        }
        Ok(ecs)
    }
}

fn categorize(ecs: &mut Ecs, action: &str) {
    const AUTH_START: &[&str] = &["authentication"];
    let (cat, kind): (&[&str], &[&str]) = match action {
        "user.session.start" | "user.authentication.sso" | "user.authentication.auth_via_mfa" => {
            (AUTH_START, &["start"])
        }
        "user.session.end" => (AUTH_START, &["end"]),
        // Okta Verify push answers and bypass attempts are MFA verification steps.
        a if a.starts_with("user.mfa.okta_verify") || a == "user.mfa.attempt_bypass" => {
            (AUTH_START, &["info"])
        }
        // The push, SMS, voice call or e-mail Okta sends to challenge a signing-in user
        // (`system.push.send_factor_verify_push`, `system.voice.send_mfa_challenge_call`): a
        // step of a sign-in, not a change to a system setting, which `system.*` is otherwise.
        a if a.starts_with("system.")
            && (a.contains(".send_factor_verify") || a.contains(".send_mfa_challenge")) =>
        {
            (AUTH_START, &["info"])
        }
        a if a.starts_with("security.threat.")
            || a.starts_with("security.attack.")
            || a == "user.account.report_suspicious_activity_by_enduser" =>
        {
            (&["intrusion_detection"], &["info"])
        }
        a if a.starts_with("user.authentication.") || a.starts_with("policy.evaluate_sign_on") => {
            (AUTH_START, &["info"])
        }
        a if a.starts_with("app.oauth2.as.authorize")
            || a.starts_with("app.oauth2.as.token.grant") =>
        {
            (AUTH_START, &["info"])
        }
        a if a.ends_with(".privilege.grant") || a.ends_with(".privilege.revoke") => {
            (&["iam"], &["admin", "change"])
        }
        a if a.starts_with("user.mfa.factor.") || a.starts_with("user.account.") => {
            (&["iam"], &["user", "change"])
        }
        "user.lifecycle.create" => (&["iam"], &["user", "creation"]),
        a if a.starts_with("user.lifecycle.delete") => (&["iam"], &["user", "deletion"]),
        a if a.starts_with("user.lifecycle.") => (&["iam"], &["user", "change"]),
        "group.lifecycle.create" => (&["iam"], &["group", "creation"]),
        "group.lifecycle.delete" => (&["iam"], &["group", "deletion"]),
        a if a.starts_with("group.") || a.starts_with("application.user_membership.") => {
            (&["iam"], &["group", "change"])
        }
        a if a.contains(".rate_limit.") => (&["web"], &["info"]),
        a if a.starts_with("policy.")
            || a.starts_with("system.")
            || a.starts_with("application.")
            || a.starts_with("app.oauth2.")
            || a.starts_with("security.")
            || a.starts_with("zone.") =>
        {
            let kind: &[&str] = if a.ends_with(".create") || a.ends_with(".add") {
                &["creation"]
            } else if a.ends_with(".delete") || a.ends_with(".revoke") || a.ends_with(".remove") {
                &["deletion"]
            } else {
                &["change"]
            };
            (&["configuration"], kind)
        }
        _ => (&[], &["info"]),
    };
    classify(ecs, cat, kind);
}

impl Normalizer for OktaSystemLogNormalizer {
    fn source(&self) -> &str {
        Self::SOURCE
    }

    fn normalize_ecs(&self, raw: &Value) -> Result<Ecs, NormalizeError> {
        Self::ecs(raw)
    }
}
