//! The normalized view of an event, with Elastic Common Schema (ECS) field names.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `event.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    #[default]
    Unknown,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

/// Every ECS field name Perimeter fills, in the dotted form rules and queries use.
pub const ECS_FIELDS: &[&str] = &[
    "@timestamp",
    "event.action",
    "event.outcome",
    "event.category",
    "event.type",
    "user.name",
    "user.email",
    "user.id",
    "user.target.name",
    "user.target.email",
    "user.target.id",
    "source.ip",
    "source.geo.country_iso_code",
    "source.as.number",
    "user_agent.original",
    "organization.id",
    "cloud.account.id",
    "related.ip",
    "related.user",
];

/// Normalized ECS fields. Kept as a flat struct (not a JSON tree) so detectors read them without
/// hashing or allocation; [`Ecs::to_json`] gives the nested ECS document for storage and output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ecs {
    #[serde(rename = "@timestamp")]
    pub timestamp: Option<DateTime<Utc>>,
    pub event_action: Option<String>,
    pub event_outcome: Outcome,
    pub event_category: Vec<String>,
    pub event_type: Vec<String>,
    pub user_name: Option<String>,
    pub user_email: Option<String>,
    pub user_id: Option<String>,
    pub user_target_name: Option<String>,
    pub user_target_email: Option<String>,
    pub user_target_id: Option<String>,
    pub source_ip: Option<String>,
    pub source_geo_country_iso_code: Option<String>,
    pub source_as_number: Option<u64>,
    pub user_agent_original: Option<String>,
    pub organization_id: Option<String>,
    pub cloud_account_id: Option<String>,
    pub related_ip: Vec<String>,
    pub related_user: Vec<String>,
}

/// A borrowed ECS field value, as detectors see it.
#[derive(Debug, Clone, PartialEq)]
pub enum EcsValue<'a> {
    Str(&'a str),
    Num(u64),
    List(&'a [String]),
}

impl Ecs {
    /// Look a field up by its dotted ECS name (`user.name`, `event.outcome`, ...).
    pub fn get(&self, field: &str) -> Option<EcsValue<'_>> {
        fn s(o: &Option<String>) -> Option<&str> {
            o.as_deref()
        }
        let v = match field {
            "event.action" => EcsValue::Str(s(&self.event_action)?),
            "event.outcome" => EcsValue::Str(self.event_outcome.as_str()),
            "event.category" if !self.event_category.is_empty() => {
                EcsValue::List(&self.event_category)
            }
            "event.type" if !self.event_type.is_empty() => EcsValue::List(&self.event_type),
            "user.name" => EcsValue::Str(s(&self.user_name)?),
            "user.email" => EcsValue::Str(s(&self.user_email)?),
            "user.id" => EcsValue::Str(s(&self.user_id)?),
            "user.target.name" => EcsValue::Str(s(&self.user_target_name)?),
            "user.target.email" => EcsValue::Str(s(&self.user_target_email)?),
            "user.target.id" => EcsValue::Str(s(&self.user_target_id)?),
            "source.ip" => EcsValue::Str(s(&self.source_ip)?),
            "source.geo.country_iso_code" => EcsValue::Str(s(&self.source_geo_country_iso_code)?),
            "source.as.number" => EcsValue::Num(self.source_as_number?),
            "user_agent.original" => EcsValue::Str(s(&self.user_agent_original)?),
            "organization.id" => EcsValue::Str(s(&self.organization_id)?),
            "cloud.account.id" => EcsValue::Str(s(&self.cloud_account_id)?),
            "related.ip" if !self.related_ip.is_empty() => EcsValue::List(&self.related_ip),
            "related.user" if !self.related_user.is_empty() => EcsValue::List(&self.related_user),
            _ => return None,
        };
        Some(v)
    }

    /// Mutable access to every string-valued field, for the masker.
    pub fn strings_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut String)> {
        let singles = [
            ("event.action", &mut self.event_action),
            ("user.name", &mut self.user_name),
            ("user.email", &mut self.user_email),
            ("user.id", &mut self.user_id),
            ("user.target.name", &mut self.user_target_name),
            ("user.target.email", &mut self.user_target_email),
            ("user.target.id", &mut self.user_target_id),
            ("source.ip", &mut self.source_ip),
            (
                "source.geo.country_iso_code",
                &mut self.source_geo_country_iso_code,
            ),
            ("user_agent.original", &mut self.user_agent_original),
            ("organization.id", &mut self.organization_id),
            ("cloud.account.id", &mut self.cloud_account_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_mut().map(|v| (k, v)));
        let lists = self
            .related_ip
            .iter_mut()
            .map(|v| ("related.ip", v))
            .chain(self.related_user.iter_mut().map(|v| ("related.user", v)))
            .chain(
                self.event_category
                    .iter_mut()
                    .map(|v| ("event.category", v)),
            )
            .chain(self.event_type.iter_mut().map(|v| ("event.type", v)));
        singles.chain(lists)
    }

    /// Add an address to `related.ip` unless it is there.
    pub fn add_related_ip(&mut self, ip: String) {
        if !self.related_ip.contains(&ip) {
            self.related_ip.push(ip);
        }
    }

    /// Vendors' stand-ins for an identity nobody knows (`HIDDEN_DUE_TO_SECURITY_REASONS` of a
    /// failed AWS console sign-in, M365's `Not Available`, Okta's `unknown` actor) are no user:
    /// kept, every such failure would count against one made-up user in the detectors.
    pub fn drop_placeholder_users(&mut self) {
        fn placeholder(s: &str) -> bool {
            let s = s.trim();
            // By length first: most names are none of these lengths.
            let is = |p: &str| s.eq_ignore_ascii_case(p);
            match s.len() {
                0 => true,
                1 => s == "-",
                3 => is("n/a"),
                4 => is("null") || is("none"),
                7 => is("unknown"),
                13 => is("not available"),
                30 => is("hidden_due_to_security_reasons"),
                _ => false,
            }
        }
        for field in [
            &mut self.user_name,
            &mut self.user_email,
            &mut self.user_id,
            &mut self.user_target_name,
            &mut self.user_target_email,
            &mut self.user_target_id,
        ] {
            if field.as_deref().is_some_and(placeholder) {
                *field = None;
            }
        }
        self.related_user.retain(|u| !placeholder(u));
    }

    /// Fill `related.user` / `related.ip` from the user and IP fields (deduplicated).
    pub fn fill_related(&mut self) {
        let users = [
            &self.user_name,
            &self.user_email,
            &self.user_target_name,
            &self.user_target_email,
        ];
        for u in users.into_iter().flatten() {
            if !self.related_user.iter().any(|x| x == u) {
                self.related_user.push(u.clone());
            }
        }
        if let Some(ip) = &self.source_ip {
            if !self.related_ip.iter().any(|x| x == ip) {
                self.related_ip.push(ip.clone());
            }
        }
    }

    /// Set the text field `field` (dotted name; `event.outcome` from its name, an unknown one
    /// being `unknown`). False for a name that is no text field.
    pub fn set_text(&mut self, field: &str, value: &str) -> bool {
        let v = Some(value.to_string());
        match field {
            "event.action" => self.event_action = v,
            "event.outcome" => {
                self.event_outcome = match value {
                    "success" => Outcome::Success,
                    "failure" => Outcome::Failure,
                    _ => Outcome::Unknown,
                }
            }
            "user.name" => self.user_name = v,
            "user.email" => self.user_email = v,
            "user.id" => self.user_id = v,
            "user.target.name" => self.user_target_name = v,
            "user.target.email" => self.user_target_email = v,
            "user.target.id" => self.user_target_id = v,
            "source.ip" => self.source_ip = v,
            "source.geo.country_iso_code" => self.source_geo_country_iso_code = v,
            "user_agent.original" => self.user_agent_original = v,
            "organization.id" => self.organization_id = v,
            "cloud.account.id" => self.cloud_account_id = v,
            _ => return false,
        }
        true
    }

    /// Set the list field `field` (dotted name). False for a name that is no list field.
    pub fn set_list(&mut self, field: &str, values: Vec<String>) -> bool {
        match field {
            "event.category" => self.event_category = values,
            "event.type" => self.event_type = values,
            "related.ip" => self.related_ip = values,
            "related.user" => self.related_user = values,
            _ => return false,
        }
        true
    }

    /// The ECS view of a document [`Ecs::to_json`] made (a stored event read back); fields it
    /// does not hold, or holds with another type, stay empty.
    pub fn from_json(doc: &serde_json::Value) -> Ecs {
        let mut ecs = Ecs {
            timestamp: doc["@timestamp"].as_str().and_then(|t| t.parse().ok()),
            ..Ecs::default()
        };
        for name in ECS_FIELDS.iter().skip(1) {
            let value = name.split('.').fold(doc, |v, part| &v[part]);
            match value {
                serde_json::Value::String(s) => {
                    ecs.set_text(name, s);
                }
                serde_json::Value::Array(items) => {
                    let list = items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect();
                    ecs.set_list(name, list);
                }
                serde_json::Value::Number(n) if *name == "source.as.number" => {
                    ecs.source_as_number = n.as_u64();
                }
                _ => {}
            }
        }
        ecs
    }

    /// The nested ECS JSON document (`{"event": {"action": ...}, "user": {...}}`); empty fields
    /// are left out.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value};
        let mut root = Map::new();
        fn put(root: &mut Map<String, Value>, path: &str, v: Value) {
            let mut parts = path.split('.').peekable();
            let mut cur = root;
            while let Some(p) = parts.next() {
                if parts.peek().is_none() {
                    cur.insert(p.to_string(), v);
                    return;
                }
                let next = cur
                    .entry(p.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                match next {
                    Value::Object(m) => cur = m,
                    _ => return,
                }
            }
        }
        if let Some(ts) = self.timestamp {
            root.insert(
                "@timestamp".into(),
                Value::String(ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            );
        }
        for name in ECS_FIELDS.iter().skip(1) {
            if let Some(v) = self.get(name) {
                let v = match v {
                    EcsValue::Str(s) => Value::String(s.to_string()),
                    EcsValue::Num(n) => Value::from(n),
                    EcsValue::List(l) => {
                        Value::Array(l.iter().cloned().map(Value::String).collect())
                    }
                };
                put(&mut root, name, v);
            }
        }
        Value::Object(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_and_to_json_agree() {
        let mut e = Ecs {
            event_action: Some("user.session.start".into()),
            event_outcome: Outcome::Failure,
            user_name: Some("alice@example.com".into()),
            source_ip: Some("198.51.100.7".into()),
            ..Default::default()
        };
        e.fill_related();
        let j = e.to_json();
        assert_eq!(j["event"]["action"], "user.session.start");
        assert_eq!(j["event"]["outcome"], "failure");
        assert_eq!(j["related"]["ip"][0], "198.51.100.7");
        assert_eq!(e.get("user.name"), Some(EcsValue::Str("alice@example.com")));
        assert_eq!(e.get("user.email"), None);
        assert!(j.get("cloud").is_none());
    }

    #[test]
    fn strings_mut_reaches_every_string() {
        let mut e = Ecs {
            user_email: Some("a@b.c".into()),
            related_user: vec!["a@b.c".into()],
            ..Default::default()
        };
        for (_, v) in e.strings_mut() {
            *v = "x".into();
        }
        assert_eq!(e.user_email.as_deref(), Some("x"));
        assert_eq!(e.related_user, vec!["x".to_string()]);
    }
}
