//! Field-mapping pipelines, in the spirit of pySigma processing pipelines: rule field names ->
//! event field names (per source), logsource -> source mappings, and `expand` placeholders.
//! Files are YAML (`.yml`/`.yaml`) or TOML (`.toml`); the built-in one ships with the engine.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

use super::logsource::LogSource;

/// One pipeline file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Human name, for error messages.
    #[serde(default)]
    pub name: Option<String>,
    /// Field-name mappings; each applies to the rules running on `source` (all rules if absent).
    #[serde(default)]
    pub field_mappings: Vec<FieldMappingConfig>,
    /// Logsource -> source mappings, consulted before the default table.
    #[serde(default)]
    pub logsources: Vec<LogSourceMappingConfig>,
    /// Values for `expand` placeholders (`%Administrators%` -> these values, OR-ed).
    #[serde(default)]
    pub placeholders: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMappingConfig {
    /// Perimeter source name the mapping is for; absent = every source.
    #[serde(default)]
    pub source: Option<String>,
    /// Rule field -> event field (or several event fields, tried in order).
    pub map: HashMap<String, OneOrMany>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSourceMappingConfig {
    /// Sigma `product` to match (absent = any).
    #[serde(default)]
    pub product: Option<String>,
    /// Sigma `service` to match (absent = any).
    #[serde(default)]
    pub service: Option<String>,
    /// Sigma `category` to match (absent = any).
    #[serde(default)]
    pub category: Option<String>,
    /// Perimeter source names the matching rules run on.
    pub sources: Vec<String>,
}

/// All pipelines merged, in load order (later files win for the same key).
#[derive(Debug, Clone, Default)]
pub struct Pipelines {
    /// (source or None, rule field) -> event fields.
    fields: HashMap<(Option<String>, String), Vec<String>>,
    logsources: Vec<LogSourceMappingConfig>,
    pub placeholders: HashMap<String, Vec<String>>,
}

/// The built-in pipeline: lets SigmaHQ's SaaS rules run on Perimeter's raw vendor events.
pub const BUILTIN_PIPELINE: &str = include_str!("builtin_pipeline.yml");

impl Pipelines {
    pub fn builtin() -> Pipelines {
        let mut p = Pipelines::default();
        // The built-in file is part of the binary and covered by a test; a failure here is a bug.
        if let Ok(cfg) = parse_pipeline(BUILTIN_PIPELINE, "yml") {
            p.add(cfg);
        }
        p
    }

    pub fn add(&mut self, cfg: PipelineConfig) {
        for fm in cfg.field_mappings {
            for (k, v) in fm.map {
                self.fields.insert((fm.source.clone(), k), v.to_vec());
            }
        }
        // User mappings come first so they override the built-in ones.
        let mut ls = cfg.logsources;
        ls.extend(std::mem::take(&mut self.logsources));
        self.logsources = ls;
        self.placeholders.extend(cfg.placeholders);
    }

    pub fn load_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading pipeline: {e}"))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("yml");
        let cfg = parse_pipeline(&text, ext)?;
        self.add(cfg);
        Ok(())
    }

    /// Sources for a logsource from the pipelines' mappings, if one matches.
    pub fn sources_for(&self, ls: &LogSource) -> Option<Vec<String>> {
        let eq = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(w)),
        };
        self.logsources
            .iter()
            .find(|m| {
                (m.product.is_some() || m.service.is_some() || m.category.is_some())
                    && eq(&m.product, &ls.product)
                    && eq(&m.service, &ls.service)
                    && eq(&m.category, &ls.category)
            })
            .map(|m| m.sources.clone())
    }

    /// Event fields to try for `field` on a rule running on `sources` (None = all sources).
    pub fn map_field(&self, field: &str, sources: Option<&[String]>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |v: &Vec<String>| {
            for f in v {
                if !out.contains(f) {
                    out.push(f.clone());
                }
            }
        };
        match sources {
            Some(sources) => {
                for s in sources {
                    if let Some(v) = self.fields.get(&(Some(s.clone()), field.to_string())) {
                        push(v);
                    }
                }
            }
            None => {
                for ((_, k), v) in &self.fields {
                    if k == field {
                        push(v);
                    }
                }
            }
        }
        if let Some(v) = self.fields.get(&(None, field.to_string())) {
            push(v);
        }
        out
    }
}

pub fn parse_pipeline(text: &str, ext: &str) -> Result<PipelineConfig, String> {
    if ext.eq_ignore_ascii_case("toml") {
        return toml::from_str(text).map_err(|e| format!("invalid pipeline TOML: {e}"));
    }
    let docs =
        super::yaml::load_documents(text).map_err(|e| format!("line {}: {}", e.line, e.message))?;
    let json = docs
        .first()
        .map(|d| d.to_json())
        .unwrap_or(serde_json::Value::Object(Default::default()));
    serde_json::from_value(json).map_err(|e| format!("invalid pipeline: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pipeline_parses() {
        let cfg = parse_pipeline(BUILTIN_PIPELINE, "yml").expect("builtin pipeline");
        assert!(!cfg.field_mappings.is_empty());
        let p = Pipelines::builtin();
        assert_eq!(
            p.map_field("eventtype", Some(&["okta".to_string()])),
            vec!["eventType".to_string()]
        );
    }

    #[test]
    fn toml_and_yaml_pipelines() {
        let toml_text = r#"
name = "corp"
[[field_mappings]]
source = "okta"
map = { user = "actor.alternateId", ip = ["client.ipAddress", "request.ip"] }
[[logsources]]
product = "corp_idp"
sources = ["okta"]
[placeholders]
Administrators = ["root", "adm_*"]
"#;
        let mut p = Pipelines::default();
        p.add(parse_pipeline(toml_text, "toml").unwrap());
        assert_eq!(
            p.map_field("ip", Some(&["okta".to_string()])),
            vec!["client.ipAddress", "request.ip"]
        );
        assert!(p.map_field("ip", Some(&["github".to_string()])).is_empty());
        let ls = LogSource {
            product: Some("corp_idp".into()),
            ..Default::default()
        };
        assert_eq!(p.sources_for(&ls), Some(vec!["okta".to_string()]));
        assert_eq!(p.placeholders["Administrators"].len(), 2);
        assert!(parse_pipeline("bogus = 1", "toml")
            .unwrap_err()
            .contains("bogus"));
        assert!(parse_pipeline("field_mapping: []\n", "yml").is_err());
    }
}
