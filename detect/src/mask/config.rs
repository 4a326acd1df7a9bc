//! `MaskConfig`: the `[mask]` table of the project's config file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DetectError;

/// How a secret is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `[REDACTED:<kind>]` (`[REDACTED:key]` for key-name matches).
    Redact,
    /// `hmac:<hex>`: keyed HMAC-SHA256, truncated. Same input and key give the same output, so a
    /// hashed user id or access key id is still the same entity for baselines and correlation.
    Hash,
    /// `****` followed by the last `partial_keep_chars` characters (`****1111`).
    Partial,
}

/// What a per-field rule does with the field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FieldAction {
    /// Default treatment: key-name and value-pattern detection (plus this rule's `patterns`).
    #[default]
    Scan,
    /// Always redact the whole value (every leaf of an object/array).
    Redact,
    /// Always replace the whole value by its keyed HMAC (every leaf of an object/array).
    Hash,
    /// Always keep only the last characters of the whole value (every leaf of an object/array).
    Partial,
    /// Never mask this field because of its key name (an allow-list entry); value patterns still
    /// apply, so a token pasted into it is still caught.
    Keep,
}

/// The value patterns (detectors on content, applied to substrings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternKind {
    /// `-----BEGIN ... PRIVATE KEY-----` through the matching END line (or end of text when
    /// truncated). Also a PuTTY key file's private part: its `Private-Lines:` and the
    /// `Private-MAC:` value.
    PemPrivateKey,
    /// `name=value` / `"name": "value"` inside text where the name is a sensitive key name
    /// (URL query strings, log lines, stringified JSON, unparseable dead-letter lines).
    SecretAssignment,
    /// `Bearer <token>` / `Basic <base64 user:pass>` (the scheme word is kept).
    AuthHeader,
    /// The password of a URL's user info (`postgres://app:<password>@db:5432/prod`, a webhook
    /// or proxy URL with basic auth); the user name and the rest of the URL are kept.
    UrlCredentials,
    /// The signature of a pre-signed or shared-access URL (`X-Amz-Signature=`,
    /// `X-Goog-Signature=`, CloudFront `Signature=`, Azure SAS `sig=`): whoever holds it can use
    /// the URL until it expires. Also the other credentials a URL's query carries under names
    /// that are no sensitive key name: `code=` (an Azure Functions key), `pw=`, `auth=` (a
    /// Firebase token), session ids (`session=`, `sessionid=`, `jsessionid=`). The rest of the
    /// URL is kept.
    UrlSignature,
    /// The key in an Azure connection string (`AccountKey=` of a storage account,
    /// `SharedAccessKey=` of Service Bus, Event Hubs and IoT Hub); the rest of the string is
    /// kept. Also a whole value shaped like a storage account key (86 base64 characters and
    /// `==`), as a `listKeys` answer or an `accountKey` setting carries it.
    AzureConnectionKey,
    /// Credentials on a command line: `curl -u user:<password>`, `--user user:<password>`,
    /// `--password <value>` (and `--passwd`, `--token`, `--secret`, `--api-key`,
    /// `--client-secret`) with a space instead of `=`, `sshpass`/`docker login -p`, `redis-cli
    /// -a`, `mysql -p<password>` (also as an item of an argument list after the program; the
    /// other programs' argument lists are read as their command line), `-passin pass:<password>`, `net user <name>
    /// <password>`, `htpasswd -b`, `ConvertTo-SecureString '<password>'`, `sqlplus
    /// user/<password>`, `jdbc:oracle:thin:user/<password>@`, a password piped on the standard
    /// input (`echo <password> | passwd --stdin`, `| sudo -S`, `| docker login
    /// --password-stdin`).
    CliCredentials,
    /// 40-char AWS secret key after `aws_secret_access_key=` / `SecretAccessKey:`.
    AwsSecretAccessKey,
    /// Okta API token (`00` + 40 chars) after `SSWS ` or an `okta..token=` assignment only: a bare
    /// `00...` string of that length is too common (hex digests, ids) to mask everywhere.
    OktaApiToken,
    /// 1Password service account token (`ops_...`) or account Secret Key (`A3-XXXXXX-...`).
    OnepasswordToken,
    /// GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// Slack tokens (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, `xapp-`).
    SlackToken,
    /// Slack incoming webhook URLs (`https://hooks.slack.com/services/...`).
    SlackWebhook,
    /// The secret part of other chat and automation webhook URLs, whoever holds which can post
    /// as the integration: Discord (`discord.com/api/webhooks/<id>/<token>`), Microsoft Teams
    /// (`<tenant>.webhook.office.com/webhookb2/...`, `outlook.office.com/webhook/...`), Zapier
    /// (`hooks.zapier.com/hooks/catch/<account>/<hook>`), IFTTT (`maker.ifttt.com/.../key/<key>`),
    /// Mattermost (`<host>/hooks/<26 lowercase characters>`) and Rocket.Chat
    /// (`<host>/hooks/<id>/<token>`). Google Chat's `key=` and `token=` are caught as a Google
    /// API key and a `token=` assignment.
    /// The host and the fixed path stay, so an analyst still sees where the hook points.
    WebhookUrl,
    /// Other vendors' API keys and tokens with a documented prefix: Stripe (`sk_live_`, `rk_`,
    /// `whsec_`), GitLab (`glpat-`, ...), npm (`npm_`), PyPI (`pypi-`), Google (`AIza` API keys,
    /// `GOCSPX-` OAuth client secrets, `ya29.` access tokens), Microsoft Entra client secrets
    /// (`...8Q~...`), HashiCorp Vault (`hvs.`) and Terraform Cloud (`.atlasv1.`), Docker Hub
    /// (`dckr_pat_`), Hugging Face (`hf_`), Shopify (`shpat_`, ...), SendGrid (`SG.`), Atlassian
    /// (`ATATT3`), DigitalOcean (`dop_v1_`, ...), Anthropic and OpenAI (`sk-ant-`, `sk-proj-`, ...),
    /// Postman (`PMAK-`), New Relic (`NRAK-`), Sentry (`sntrys_`), Doppler (`dp.pt.`), Heroku
    /// (`HRKU-`), Grafana (`glsa_`, `glc_`), Pulumi (`pul-`), Tailscale (`tskey-`), Buildkite
    /// (`bkua_`), CircleCI (`CCIPAT_`), Figma (`figd_`), Notion (`ntn_`, `secret_`), Databricks
    /// (`dapi`), Mailgun (`key-`), Square (`sq0atp-`, `sq0csp-`), Linear (`lin_api_`), age
    /// (`AGE-SECRET-KEY-1`), Mailchimp (32 hex + `-us<N>`), JFrog (`AKCp`, `cmVmdGtu` reference
    /// tokens), Dynatrace (`dt0c01.`), Bitbucket (`ATBB`), Supabase (`sbp_`, `sb_secret_`),
    /// Fly.io (`fo1_`, `fm2_`), Render (`rnd_`), Netlify (`nfp_`), Telegram bot tokens
    /// (`<bot id>:AA...`), Twilio API key SIDs (`SK` + 32 lower-case hex, not all digits),
    /// OpenAI's older keys (`sk-...T3BlbkFJ...`), AWS STS session tokens (`IQoJb3JpZ2luX2Vj`,
    /// `FwoGZXIvYXdz`), Google OAuth refresh tokens (`1//0`), Braintree
    /// (`access_token$production$`), Meta (`EAACEdEose0cBA`, `EAAM`/`EAAC` + 100), Dropbox
    /// (`sl.`), Airtable (`pat...`), Replicate (`r8_`), Groq (`gsk_`), xAI (`xai-`), Perplexity
    /// (`pplx-`), Mapbox secret tokens (`sk.eyJ1Ijoi`), Salesforce session ids (`00D...!...`),
    /// LaunchDarkly access tokens and SDK keys (`api-`/`sdk-` + UUID), HubSpot (`pat-na1-`),
    /// ClickUp (`pk_<digits>_`), PlanetScale (`pscale_tkn_`), SonarQube (`squ_`), RubyGems
    /// (`rubygems_`), Intercom (`dG9rOj`), crates.io (`cio` + 32), GitLab's other tokens
    /// (`glcbt-`, `gloas-`, `glft-`, `glimt-`, `glagent-`, `glsoat-`, runner `GR1348941`),
    /// Contentful (`CFPAT-`), New Relic insert keys (`NRII-`), Typeform (`tfp_`), Pinecone
    /// (`pcsk_`), LangSmith (`lsv2_`), and Perimeter's own API tokens (`prm_`).
    VendorToken,
    /// JSON Web Tokens (`eyJ...` `.` `eyJ...` `.` signature).
    Jwt,
    /// AWS access key ids (`AKIA...` long-term, `ASIA...` temporary).
    AwsAccessKeyId,
    /// Payment card numbers: 13-19 digits (plain, or 4-digit groups / Amex 4-6-5 separated by
    /// spaces or dashes) with a card-network prefix and a valid Luhn checksum.
    CreditCard,
    /// US social security numbers `ddd-dd-dddd` outside the never-issued ranges.
    UsSsn,
    /// Email addresses. Off by default (they are the identity in audit logs); enable globally or
    /// per field.
    Email,
}

impl PatternKind {
    /// All kinds, in the order they are applied to a value (PEM blocks first so that nothing
    /// else eats half of one; assignments before token shapes so `token=ghp_..` counts once).
    pub const ALL: [PatternKind; 20] = [
        PatternKind::PemPrivateKey,
        PatternKind::SecretAssignment,
        PatternKind::AuthHeader,
        PatternKind::UrlCredentials,
        PatternKind::UrlSignature,
        PatternKind::AzureConnectionKey,
        PatternKind::CliCredentials,
        PatternKind::AwsSecretAccessKey,
        PatternKind::OktaApiToken,
        PatternKind::OnepasswordToken,
        PatternKind::GithubToken,
        PatternKind::SlackToken,
        PatternKind::SlackWebhook,
        PatternKind::WebhookUrl,
        PatternKind::VendorToken,
        PatternKind::Jwt,
        PatternKind::AwsAccessKeyId,
        PatternKind::CreditCard,
        PatternKind::UsSsn,
        PatternKind::Email,
    ];

    /// Number of kinds.
    pub const COUNT: usize = PatternKind::ALL.len();

    /// Index in [`PatternKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The snake_case name used in config and in `[REDACTED:<kind>]`.
    pub fn as_str(self) -> &'static str {
        match self {
            PatternKind::PemPrivateKey => "pem_private_key",
            PatternKind::SecretAssignment => "secret_assignment",
            PatternKind::AuthHeader => "auth_header",
            PatternKind::UrlCredentials => "url_credentials",
            PatternKind::UrlSignature => "url_signature",
            PatternKind::AzureConnectionKey => "azure_connection_key",
            PatternKind::CliCredentials => "cli_credentials",
            PatternKind::AwsSecretAccessKey => "aws_secret_access_key",
            PatternKind::OktaApiToken => "okta_api_token",
            PatternKind::OnepasswordToken => "onepassword_token",
            PatternKind::GithubToken => "github_token",
            PatternKind::SlackToken => "slack_token",
            PatternKind::SlackWebhook => "slack_webhook",
            PatternKind::WebhookUrl => "webhook_url",
            PatternKind::VendorToken => "vendor_token",
            PatternKind::Jwt => "jwt",
            PatternKind::AwsAccessKeyId => "aws_access_key_id",
            PatternKind::CreditCard => "credit_card",
            PatternKind::UsSsn => "us_ssn",
            PatternKind::Email => "email",
        }
    }

    /// Whether the kind is on when the config says nothing about it.
    pub fn enabled_by_default(self) -> bool {
        self != PatternKind::Email
    }

    /// Whether the kind's secrets may be guessable: passwords (after a name, on a command line,
    /// in a URL, in a `Basic` header or a `pw=` parameter), card numbers and SSNs. Hashed with
    /// the public built-in key, such a value is found again by hashing guesses (a word list, the
    /// card or SSN ranges), so `hash` needs a `hmac_key` for them. Tokens and keys with a random
    /// part of their own cannot be guessed that way.
    pub fn holds_guessable_values(self) -> bool {
        matches!(
            self,
            PatternKind::SecretAssignment
                | PatternKind::AuthHeader
                | PatternKind::UrlCredentials
                | PatternKind::UrlSignature
                | PatternKind::CliCredentials
                | PatternKind::CreditCard
                | PatternKind::UsSsn
        )
    }

    /// The action used when the config says nothing about the kind. Identifiers that analysts
    /// correlate on (access key ids, emails) are hashed; secrets are redacted; card numbers keep
    /// their last 4 digits as PCI DSS allows for display.
    pub fn default_action(self) -> Action {
        match self {
            PatternKind::AwsAccessKeyId | PatternKind::Email => Action::Hash,
            PatternKind::CreditCard => Action::Partial,
            _ => Action::Redact,
        }
    }
}

/// Per-pattern overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Turn the pattern on/off everywhere (default: on, except `email`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Replacement for matches of this pattern (default: see [`PatternKind::default_action`]).
    #[serde(default)]
    pub action: Option<Action>,
}

/// Sensitive key-name detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Replacement for values under a sensitive key (default `redact`). `hash` needs a
    /// `hmac_key`: passwords are guessable, and the built-in key is public.
    #[serde(default = "default_key_action")]
    pub action: Action,
    /// Extra sensitive words, added to the built-in list (`password`, `secret`, `token`, ...).
    /// Matched case-insensitively, ignoring `_`, `-` and `.` (`x_session_key` -> `sessionkey`).
    #[serde(default)]
    pub extra_names: Vec<String>,
    /// Key names that are never sensitive even though they contain a sensitive word (exact
    /// match, case-insensitive, ignoring `_`, `-` and `.`).
    #[serde(default)]
    pub allow_names: Vec<String>,
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig {
            action: default_key_action(),
            extra_names: Vec::new(),
            allow_names: Vec::new(),
        }
    }
}

fn default_key_action() -> Action {
    Action::Redact
}

/// A rule for one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// The field: an ECS dotted name (`user.email`, applied to the ECS field AND to the same path
    /// in the raw JSON), or a raw JSON path (`actor.alternateId`; the `raw.` prefix is optional
    /// and makes the path raw-only). Segments are exact object keys; arrays are transparent
    /// (`events.parameters.value` reaches every element).
    pub path: String,
    /// What to do with the value (default `scan`).
    #[serde(default)]
    pub action: FieldAction,
    /// Extra value patterns for this field only, on top of the globally enabled ones
    /// (e.g. `["email"]`). Their action is the pattern's action.
    #[serde(default)]
    pub patterns: Vec<PatternKind>,
}

/// Masking configuration (`[mask]`). Every field has a safe default, so an empty table masks all
/// built-in secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// Secret reference for the HMAC key used by `hash`: `env:NAME` or `file:/path` (file content,
    /// trailing newline trimmed). Never the key itself. When absent, a built-in key is used: hashes
    /// are then stable but guessable by anyone with this source code for low-entropy values, so
    /// production must set one.
    #[serde(default)]
    pub hmac_key: Option<String>,
    /// Hex characters kept from the HMAC in `hmac:<hex>` (8..=64, default 16 = 64 bits).
    #[serde(default = "default_hash_hex_chars")]
    pub hash_hex_chars: usize,
    /// Characters kept by `partial` (default 4). Values not longer than this are fully masked.
    #[serde(default = "default_partial_keep_chars")]
    pub partial_keep_chars: usize,
    /// Sensitive key-name detection.
    #[serde(default)]
    pub keys: KeyConfig,
    /// Per-pattern overrides, keyed by pattern name (`[mask.patterns.email] enabled = true`).
    #[serde(default)]
    pub patterns: BTreeMap<PatternKind, PatternConfig>,
    /// Per-field rules (`[[mask.fields]]`). When several rules name the same path, the last wins.
    #[serde(default)]
    pub fields: Vec<FieldRule>,
}

fn default_hash_hex_chars() -> usize {
    16
}

fn default_partial_keep_chars() -> usize {
    4
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            hmac_key: None,
            hash_hex_chars: default_hash_hex_chars(),
            partial_keep_chars: default_partial_keep_chars(),
            keys: KeyConfig::default(),
            patterns: BTreeMap::new(),
            fields: Vec::new(),
        }
    }
}

/// Where config errors that do not come from a file of their own point: the table the
/// settings come from in `perimeter.toml`.
pub(crate) const INLINE: &str = "[mask]";

/// Name of the key a service generates for its data directory when the config sets no
/// `hmac_key` ([`MaskConfig::or_key_file`]), under `<data_dir>/state/`.
pub const GENERATED_KEY_FILE: &str = "mask.key";

/// Write `bytes` to a new file only its owner can read, durably (a key lost after a crash
/// would make the detection state written with it unusable).
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

impl MaskConfig {
    /// This config, with `key_file` as its `hmac_key` when it sets none. With `create`, a new
    /// random key is written there first if the file does not exist (owner-only permissions):
    /// a service then hashes with a key of its own, kept across restarts, instead of the
    /// public built-in one (whose hashes anyone can reverse by guessing, and with which the
    /// replay window cannot be kept across a restart). Without `create` a missing file leaves
    /// the config as it is (the readers of a data directory no service has written to).
    pub fn or_key_file(&self, key_file: &Path, create: bool) -> Result<MaskConfig, DetectError> {
        if self.hmac_key.is_some() {
            return Ok(self.clone());
        }
        let io = |cause: std::io::Error| DetectError::Write {
            path: key_file.to_path_buf(),
            cause,
        };
        if create && !key_file.exists() {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key)
                .map_err(|e| io(std::io::Error::other(format!("no random key: {e}"))))?;
            if let Some(dir) = key_file.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            write_owner_only(key_file, hex::encode(key).as_bytes()).map_err(io)?;
        }
        if !key_file.exists() {
            return Ok(self.clone());
        }
        // What Perimeter writes is 64 hex digits: anything else (a file cut short, overwritten,
        // restored from the wrong place) would be taken as the key and hash everything anew.
        let text = std::fs::read_to_string(key_file).map_err(io)?;
        let key = text.trim();
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DetectError::Other(format!(
                "the generated mask key {} is damaged (it holds not the 64 hex digits Perimeter writes): restore it from a backup, as the stored hashes and the detection state were made with it, or set [mask] hmac_key",
                key_file.display()
            )));
        }
        Ok(MaskConfig {
            hmac_key: Some(format!("file:{}", key_file.display())),
            ..self.clone()
        })
    }

    /// Parse TOML: either a whole config file with a `[mask]` table (other tables are ignored,
    /// they belong to other stages; no `[mask]` table means defaults), or the bare table content.
    pub fn from_toml_str(text: &str) -> Result<MaskConfig, DetectError> {
        Self::parse(text, Path::new(INLINE))
    }

    /// Read and parse a TOML file (see [`MaskConfig::from_toml_str`]).
    pub fn from_toml_file(path: &Path) -> Result<MaskConfig, DetectError> {
        let text = std::fs::read_to_string(path).map_err(|cause| DetectError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<MaskConfig, DetectError> {
        let err = |message: String| DetectError::Config {
            path: path.to_path_buf(),
            message,
        };
        let doc: toml::Table = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
        let table = match doc.get("mask") {
            Some(toml::Value::Table(t)) => t.clone(),
            Some(_) => return Err(err("`mask` must be a table".into())),
            None if looks_like_other_sections(&doc) => return Ok(MaskConfig::default()),
            None => doc,
        };
        table
            .try_into::<MaskConfig>()
            .map_err(|e| err(format!("[mask]: {}", e.message())))
    }

    /// Checks that need no IO (the key reference is resolved by `SecretMasker::new`).
    pub(crate) fn validate(&self) -> Result<(), DetectError> {
        let err = |message: String| DetectError::Config {
            path: PathBuf::from(INLINE),
            message,
        };
        if !(8..=64).contains(&self.hash_hex_chars) {
            return Err(err(format!(
                "hash_hex_chars must be within 8..=64, got {}",
                self.hash_hex_chars
            )));
        }
        if self.partial_keep_chars > 8 {
            return Err(err(format!(
                "partial_keep_chars must be at most 8, got {}",
                self.partial_keep_chars
            )));
        }
        for name in self.keys.extra_names.iter().chain(&self.keys.allow_names) {
            if super::keys::normalize_key(name).len() < 3 {
                return Err(err(format!(
                    "key name `{name}` needs at least 3 letters or digits (shorter words match everywhere)"
                )));
            }
        }
        for rule in &self.fields {
            let p = rule.path.strip_prefix("raw.").unwrap_or(&rule.path);
            if p.is_empty() || p.split('.').any(str::is_empty) {
                return Err(err(format!(
                    "field rule path `{}` has an empty segment",
                    rule.path
                )));
            }
        }
        if let Some(r) = &self.hmac_key {
            if !perimeter_model::is_secret_reference(r) {
                return Err(err(
                    "hmac_key must be a secret reference `env:NAME` or `file:/path`, not a value"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

/// A document without a `[mask]` table is read as the bare table when one of its top-level keys
/// is a `MaskConfig` field (so typos in the other keys are reported), and as a whole project
/// file that leaves masking at its defaults otherwise.
fn looks_like_other_sections(doc: &toml::Table) -> bool {
    const FIELDS: [&str; 6] = [
        "hmac_key",
        "hash_hex_chars",
        "partial_keep_chars",
        "keys",
        "patterns",
        "fields",
    ];
    !doc.keys().any(|k| FIELDS.contains(&k.as_str()))
}
