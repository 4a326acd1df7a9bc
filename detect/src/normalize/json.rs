//! `json`: plain JSON objects without vendor normalization.

use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson as Value;
use perimeter_model::{Ecs, NormalizeError, Normalizer, Outcome};

use super::fields;

/// Keeps the object as it is; ECS fields are filled only from keys that already have ECS names,
/// either dotted at the top level (`"user.name": ..`) or nested (`{"user": {"name": ..}}`), plus
/// `@timestamp`. Unknown or mistyped ECS-named values are ignored, never guessed.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainJsonNormalizer;

impl PlainJsonNormalizer {
    pub const SOURCE: &'static str = "json";

    pub(crate) fn ecs(raw: &Value) -> Result<Ecs, NormalizeError> {
        let obj = fields::object(raw)?;
        let mut ecs = Ecs::default();
        if let Some(t) = obj.get("@timestamp").filter(|t| !t.is_null()) {
            ecs.timestamp = Some(fields::parse_time(t, &["@timestamp"])?);
        }
        let get = |dotted: &str, path: &[&str]| -> Option<&Value> {
            obj.get(dotted).or_else(|| fields::at(raw, path))
        };
        let s = |dotted: &str, path: &[&str]| get(dotted, path).and_then(fields::scalar_string);
        let list = |dotted: &str, path: &[&str]| -> Vec<String> {
            match get(dotted, path) {
                Some(v) => match v.as_array() {
                    Some(a) => a.iter().filter_map(fields::scalar_string).collect(),
                    None => fields::scalar_string(v).into_iter().collect(),
                },
                None => Vec::new(),
            }
        };
        ecs.event_action = s("event.action", &["event", "action"]);
        ecs.event_outcome =
            match get("event.outcome", &["event", "outcome"]).and_then(Value::as_str) {
                Some("success") => Outcome::Success,
                Some("failure") => Outcome::Failure,
                _ => Outcome::Unknown,
            };
        ecs.event_category = list("event.category", &["event", "category"]);
        ecs.event_type = list("event.type", &["event", "type"]);
        ecs.user_name = s("user.name", &["user", "name"]);
        ecs.user_email = s("user.email", &["user", "email"]);
        ecs.user_id = s("user.id", &["user", "id"]);
        ecs.user_target_name = s("user.target.name", &["user", "target", "name"]);
        ecs.user_target_email = s("user.target.email", &["user", "target", "email"]);
        ecs.user_target_id = s("user.target.id", &["user", "target", "id"]);
        ecs.source_ip = s("source.ip", &["source", "ip"]);
        ecs.source_geo_country_iso_code = s(
            "source.geo.country_iso_code",
            &["source", "geo", "country_iso_code"],
        );
        ecs.source_as_number =
            get("source.as.number", &["source", "as", "number"]).and_then(Value::as_u64);
        ecs.user_agent_original = s("user_agent.original", &["user_agent", "original"]);
        ecs.organization_id = s("organization.id", &["organization", "id"]);
        ecs.cloud_account_id = s("cloud.account.id", &["cloud", "account", "id"]);
        ecs.related_ip = list("related.ip", &["related", "ip"]);
        ecs.related_user = list("related.user", &["related", "user"]);
        ecs.fill_related();
        Ok(ecs)
    }
}

impl Normalizer for PlainJsonNormalizer {
    fn source(&self) -> &str {
        Self::SOURCE
    }

    fn normalize_ecs(&self, raw: &Value) -> Result<Ecs, NormalizeError> {
        Self::ecs(raw)
    }
}
