//! `perimeter.toml`: one file configures every stage; each table is the owning crate's config.

use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerimeterConfig {
    /// The file this config was read from (`None`: no file, the defaults). Not a key of the
    /// file: what `run --check` and the start say they read, and what a SIGHUP compares.
    #[serde(skip)]
    pub source_path: Option<PathBuf>,
    /// Where Perimeter keeps its data (indexes, Parquet, state, tokens).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Tenant for input that does not name one.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Rule files or directories (default: `detection-rules` when it exists).
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// Directory of extra declarative source mappings (`*.toml`).
    #[serde(default)]
    pub mappings_dir: Option<PathBuf>,
    /// Secrets and PII masking.
    #[serde(default)]
    pub mask: perimeter_detect::mask::MaskConfig,
    /// Sigma engine options.
    #[serde(default)]
    pub sigma: perimeter_detect::sigma::SigmaOptions,
    /// Behavioural detectors.
    #[serde(default)]
    pub ueba: perimeter_detect::ueba::UebaConfig,
    /// Alerts for sources that stopped sending (off unless `after_seconds` is set).
    #[serde(default)]
    pub silence: perimeter_detect::silence::SilenceConfig,
    /// Storage (its `data_dir` is taken from the top-level `data_dir`).
    #[serde(default)]
    pub store: perimeter_store::StoreConfig,
    /// The HTTP API (and HTTP ingest) listener.
    #[serde(default)]
    pub api: perimeter_query_api::ApiConfig,
    /// Spool directory watched by `perimeter run` (default: `<data_dir>/inbox`).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// How long ingested spool files are kept in `<spool_dir>/.processed/` before they are
    /// deleted (they hold the vendor's records unmasked); 0 deletes them once stored.
    #[serde(default = "default_spool_keep_processed_hours")]
    pub spool_keep_processed_hours: u64,
    /// Longest input line (or CSV row) read from files, stdin and the spool, and longest CSV row
    /// of HTTP ingest (a JSON line of an HTTP body may be as long as the body: a page sent
    /// compact is one line); a longer one is a dead letter. A CloudTrail `{"Records": [...]}`
    /// file is a single line.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Most records one `POST /ingest/{source}` may hold (non-blank lines, CSV rows, JSON
    /// documents, each element of a JSON array counting as one); a body with more is refused
    /// whole (413 `too_many_records`, nothing stored) for the sender to split. A batch is held
    /// in memory until it is stored, ~1-3 KB per record: this bounds what one request takes.
    #[serde(default = "default_ingest_max_records")]
    pub ingest_max_records: usize,
    /// SaaS audit-log APIs `perimeter run` polls (`[[poll]]` tables): Okta, GitHub, Slack,
    /// 1Password, Google Workspace. Checkpoints live in `<data_dir>/state/poll/`.
    #[serde(default)]
    pub poll: Vec<perimeter_ingest::poll::PollConfig>,
    /// `[kafka]`: the scaled-out bus (ADR 019). Without it, `run` uses the embedded bus. With
    /// it, what the sources take in goes to the topic, and the service reads its share of the
    /// topic as a member of the detectors' consumer group (offsets committed once stored).
    #[serde(default)]
    pub kafka: Option<perimeter_ingest::kafka::KafkaBusConfig>,
    /// How often `perimeter run` snapshots detection state (behavioural baselines, correlation
    /// windows) to `<data_dir>/state` while batches change it; also at shutdown. At least 1.
    #[serde(default = "default_state_snapshot_seconds")]
    pub state_snapshot_seconds: u64,
}

fn default_spool_keep_processed_hours() -> u64 {
    24
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_tenant() -> String {
    "default".into()
}
fn default_max_line_bytes() -> usize {
    perimeter_ingest::DEFAULT_MAX_LINE_BYTES
}
fn default_ingest_max_records() -> usize {
    perimeter_ingest::http::DEFAULT_MAX_RECORDS_PER_REQUEST
}
fn default_state_snapshot_seconds() -> u64 {
    30
}

/// A config parse error's text without the value it is about when that value is a secret: the
/// error quotes the file's line (masked with the rest of the output) and, for a wrong type, the
/// value again in words (QA: `hmac_key = 8734...` as a number was masked on its line and
/// repeated in clear under it: ``invalid type: integer `8734...` ``).
fn without_secret_value(text: &str, e: &toml::de::Error) -> String {
    let message = e.to_string();
    let Some(span) = e.span() else {
        return message;
    };
    let value = text.get(span.clone()).unwrap_or("").trim();
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line_end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    let line = &text[line_start..line_end];
    if value.len() < 4 || crate::logging::masked(line) == line {
        return message;
    }
    // The value as written, and as the error words it: decoded (`0x79b1...` as
    // `133804401747961`, `1_000` as `1000`) between backticks.
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.replace(value, "[REDACTED]").split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        let quoted = i % 2 == 1;
        if quoted
            && !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
        {
            out.push_str("[REDACTED]");
        } else {
            out.push_str(part);
        }
    }
    out
}

impl PerimeterConfig {
    /// Read `path` (when given) or use defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<PerimeterConfig> {
        let Some(path) = path else {
            return Ok(toml::from_str("").expect("empty config is valid"));
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut config: PerimeterConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!(without_secret_value(&text, &e)))
            .with_context(|| format!("config {}", path.display()))?;
        config.source_path = Some(path.to_path_buf());
        config
            .check_tenants()
            .and_then(|()| config.check_limits())
            .with_context(|| format!("config {}", path.display()))?;
        // The store's own `data_dir` key is replaced by the top-level one: set there, it would
        // be accepted and silently not used.
        anyhow::ensure!(
            config.store.data_dir == perimeter_store::StoreConfig::default().data_dir,
            "config {}: [store] data_dir is not used; set `data_dir` at the top level",
            path.display()
        );
        Ok(config)
    }

    /// Tenants name data directories and are what API tokens are issued for: one no token can
    /// be issued for would hold data nobody can read through the API.
    fn check_tenants(&self) -> anyhow::Result<()> {
        let named = std::iter::once(("tenant", &self.tenant)).chain(
            self.poll
                .iter()
                .filter_map(|p| Some(("poll tenant", p.tenant.as_ref()?))),
        );
        for (key, tenant) in named {
            anyhow::ensure!(
                perimeter_model::is_valid_label(tenant),
                "{key} `{tenant}`: expected 1-128 characters from [A-Za-z0-9-_.@] (the name API tokens are issued for)"
            );
        }
        Ok(())
    }

    /// A limit of 0 would refuse every request (`ingest_max_records`) or dead-letter every
    /// record (`max_line_bytes`): a typo, not a choice, and the service would pass its checks
    /// and then ingest nothing.
    fn check_limits(&self) -> anyhow::Result<()> {
        for (key, value) in [
            ("max_line_bytes", self.max_line_bytes),
            ("ingest_max_records", self.ingest_max_records),
        ] {
            anyhow::ensure!(
                value > 0,
                "{key} = 0 would refuse every record; it must be at least 1"
            );
        }
        Ok(())
    }

    /// Rule paths: the command line wins, then the config, then `./detection-rules` if present.
    pub fn rule_paths(&self, cli: &[PathBuf]) -> Vec<PathBuf> {
        if !cli.is_empty() {
            return cli.to_vec();
        }
        if !self.rules.is_empty() {
            return self.rules.clone();
        }
        let default = PathBuf::from("detection-rules");
        if default.is_dir() {
            vec![default]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_no_token_could_be_issued_for_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        for (text, bad) in [
            ("tenant = \"../../escape\"\n", "../../escape"),
            ("tenant = \"\"\n", ""),
            (
                "[[poll]]\nname = \"o\"\nvendor = \"okta\"\nbase_url = \"https://x.test\"\ntoken = \"env:T\"\ntenant = \"a b\"\n",
                "a b",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", PerimeterConfig::load(Some(&path)).unwrap_err());
            assert!(err.contains(&format!("`{bad}`: expected 1-128 characters")), "{err}");
        }
        std::fs::write(&path, "tenant = \"acme-prod.eu@x_1\"\n").unwrap();
        assert!(PerimeterConfig::load(Some(&path)).is_ok());
    }

    #[test]
    fn limits_of_zero_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        for key in ["max_line_bytes", "ingest_max_records"] {
            std::fs::write(&path, format!("{key} = 0\n")).unwrap();
            let err = format!("{:#}", PerimeterConfig::load(Some(&path)).unwrap_err());
            assert!(err.contains(&format!("{key} = 0 would refuse")), "{err}");
            std::fs::write(&path, format!("{key} = 10\n")).unwrap();
            assert!(PerimeterConfig::load(Some(&path)).is_ok(), "{key}");
        }
    }

    #[test]
    fn a_store_data_dir_is_refused_for_the_top_level_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[store]\ndata_dir = \"/elsewhere\"\n").unwrap();
        let err = format!("{:#}", PerimeterConfig::load(Some(&path)).unwrap_err());
        assert!(err.contains("set `data_dir` at the top level"), "{err}");
    }

    #[test]
    fn the_example_config_parses_and_typos_are_rejected() {
        let example: PerimeterConfig =
            toml::from_str(include_str!("../perimeter.example.toml")).expect("example parses");
        assert_eq!(example.sigma.allowed_lateness_seconds, 300);
        assert_eq!(example.store.retention_days, 90);
        assert_eq!(example.silence.after_seconds, 21_600);
        // A secret of the wrong type is not repeated in the error's words (QA).
        let text = "[mask]\nhmac_key = 8734619283746192837\n";
        let e = toml::from_str::<PerimeterConfig>(text).unwrap_err();
        assert!(e.to_string().contains("8734619283746192837"), "{e}");
        let said = without_secret_value(text, &e);
        assert!(!said.contains("8734619283746192837"), "{said}");
        assert!(said.contains("invalid type"), "{said}");
        // Nor written in another notation, which the error words decoded (QA).
        for written in [
            "0x79b1c3d5e7f9",
            "+87346192837",
            "8_734_619_283",
            "8734.6192837",
        ] {
            let text = format!("[mask]\nhmac_key = {written}\n");
            let e = toml::from_str::<PerimeterConfig>(&text).unwrap_err();
            let said = without_secret_value(&text, &e);
            assert!(
                !said.contains("133804401747961")
                    && !said.contains("87346192837")
                    && !said.contains("8734619283")
                    && !said.contains(written),
                "{said}"
            );
        }
        // Nor is a value that is no secret hidden.
        let text = "state_snapshot_seconds = \"often\"\n";
        let e = toml::from_str::<PerimeterConfig>(text).unwrap_err();
        assert_eq!(without_secret_value(text, &e), e.to_string());
        let typo = toml::from_str::<PerimeterConfig>("data_dri = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("data_dri"), "{typo}");
        let nested = toml::from_str::<PerimeterConfig>("[ueba.password_spray]\nmin_distinct = 3")
            .unwrap_err()
            .to_string();
        assert!(nested.contains("min_distinct"), "{nested}");
    }

    #[test]
    fn the_example_kafka_table_parses_once_uncommented() {
        let example = include_str!("../perimeter.example.toml");
        let start = example.find("# [kafka]").expect("kafka example");
        let uncommented: String = example[start..]
            .lines()
            .map_while(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        let config: PerimeterConfig = toml::from_str(&uncommented).expect("kafka example parses");
        let kafka = config.kafka.expect("[kafka]");
        assert_eq!(kafka.brokers, "kafka-1:9092,kafka-2:9092");
        assert_eq!(kafka.replication_factor, 3);
        assert_eq!(kafka.properties["security.protocol"], "SASL_SSL");
        assert!(kafka.validate().is_ok());
        let typo =
            toml::from_str::<PerimeterConfig>("[kafka]\nbrokers = \"b:9092\"\ngroupp = \"x\"")
                .unwrap_err()
                .to_string();
        assert!(typo.contains("groupp"), "{typo}");
    }

    #[test]
    fn the_example_poll_tables_parse_once_uncommented() {
        let example = include_str!("../perimeter.example.toml");
        let start = example.find("# [[poll]]").expect("poll examples");
        let uncommented: String = example[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .take_while(|l| !l.starts_with("Slack:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let config: PerimeterConfig = toml::from_str(&uncommented).expect("poll examples parse");
        let names: Vec<&str> = config.poll.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "okta-prod",
                "github-acme",
                "1password-audit",
                "m365-entra",
                "salesforce-audit-trail",
                "launchdarkly-audit",
                "cloudtrail-us-east-1",
                "workspace-login"
            ]
        );
        assert_eq!(config.poll[1].org.as_deref(), Some("acme"));
        let typo = toml::from_str::<PerimeterConfig>(
            "[[poll]]\nname = \"x\"\nvendor = \"okta\"\nbase_url = \"https://a\"\ntoken = \"env:T\"\nintervall_seconds = 5",
        )
        .unwrap_err()
        .to_string();
        assert!(typo.contains("intervall_seconds"), "{typo}");
        let vendor = toml::from_str::<PerimeterConfig>(
            "[[poll]]\nname = \"x\"\nvendor = \"octa\"\nbase_url = \"https://a\"\ntoken = \"env:T\"",
        )
        .unwrap_err()
        .to_string();
        assert!(vendor.contains("octa"), "{vendor}");
    }
}
