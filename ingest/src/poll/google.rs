//! Google service accounts: when a Google Workspace poller's `token` holds a service-account key
//! file (the JSON Google hands out), Perimeter gets its own access tokens. It signs a JWT
//! assertion (RS256) naming the service account, the Reports API's read-only audit scope and
//! the admin to act as (`delegated_user`: the Reports API needs domain-wide delegation), posts
//! it to the key's `token_uri`, and caches the token until a minute before it expires. The
//! private key never leaves the process; only the signed assertion goes to `token_uri`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::Url;
use serde::Deserialize;

use super::{PollError, PollSource};

/// The scope the Reports API's activities need.
const REPORTS_SCOPE: &str = "https://www.googleapis.com/auth/admin.reports.audit.readonly";

/// The fields of a service-account key file that matter here.
#[derive(Deserialize)]
pub(super) struct ServiceAccountKey {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl ServiceAccountKey {
    /// The key, when `secret` is a service-account key file; `None` for an access token.
    pub(super) fn parse(secret: &str) -> Result<Option<ServiceAccountKey>, PollError> {
        if !secret.trim_start().starts_with('{') {
            return Ok(None);
        }
        let key: ServiceAccountKey = serde_json::from_str(secret).map_err(|e| {
            // The error names the field, not the content.
            PollError::Config(format!(
                "`token`: a JSON secret must be a Google service-account key file: {}",
                e.to_string().split(" at line").next().unwrap_or_default()
            ))
        })?;
        if key.kind != "service_account" {
            return Err(PollError::Config(format!(
                "`token`: a key file of type `{}`, not `service_account`",
                key.kind
            )));
        }
        Ok(Some(key))
    }

    /// The signed JWT assertion for `subject`, valid from `now` for an hour.
    fn assertion(&self, subject: &str, now: i64) -> Result<String, PollError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": REPORTS_SCOPE,
            "aud": self.token_uri,
            "sub": subject,
            "iat": now,
            "exp": now + 3600,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let bad_key = |why: &str| {
            PollError::Config(format!("`token`: the service account's private_key {why}"))
        };
        let der: String = self
            .private_key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD
            .decode(der.trim())
            .map_err(|_| bad_key("is not PEM"))?;
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| bad_key("is not a PKCS#8 RSA key"))?;
        let mut signature = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signed.as_bytes(),
            &mut signature,
        )
        .map_err(|_| bad_key("cannot sign"))?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// A bearer access token for the Reports API, for the service account acting as
/// `delegated_user`.
pub(super) async fn access_token(
    src: &PollSource,
    key: &ServiceAccountKey,
) -> Result<String, PollError> {
    let subject = src.config.delegated_user.as_deref().ok_or_else(|| {
        PollError::Config(format!(
            "poll `{}`: a service-account key needs `delegated_user` (the admin it acts as)",
            src.config.name
        ))
    })?;
    let url = Url::parse(&key.token_uri)
        .map_err(|e| PollError::Config(format!("`token`: token_uri: {e}")))?;
    src.oauth_token(url, || {
        Ok(vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string(),
            ),
            (
                "assertion",
                key.assertion(subject, chrono::Utc::now().timestamp())?,
            ),
        ])
    })
    .await
}
