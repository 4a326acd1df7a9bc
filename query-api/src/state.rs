//! What every handler shares: the store's read side, tokens, the audit log, the rule engine
//! (behind [`RuleService`], so this crate does not depend on the detector) and the metrics.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use perimeter_model::Metrics;
use perimeter_store::Store;

use crate::audit::{AuditEntry, AuditError, AuditLog};
use crate::auth::{AuthError, TokenInfo, TokenStore};
use crate::destinations::DestinationStore;
use crate::error::ApiError;
use crate::rule_switches::RuleSwitchStore;

/// The rule engine as the API sees it. The binary implements it with the real Sigma engine;
/// keeping it a trait keeps `query-api` free of `perimeter-detect`.
pub trait RuleService: Send + Sync {
    /// The loaded rules, one JSON object each (id, title, level, status, source, ...).
    fn list(&self) -> Vec<serde_json::Value>;
    /// Compile `rule_yaml` and run it over `events` (event output documents, or raw records
    /// of `source`: a source name or `json`, as `--source` takes; `None`: told from each
    /// record's shape). Returns a JSON report (at least which events matched); `Err` says
    /// whether the rule or an event is at fault, and why.
    fn test(
        &self,
        rule_yaml: &str,
        events: Vec<serde_json::Value>,
        source: Option<&str>,
    ) -> Result<serde_json::Value, RuleTestError>;
}

/// Why a rule test could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleTestError {
    /// The rule does not compile (422 `invalid_rule`).
    Rule(String),
    /// An event given to test against cannot be used (400 `invalid_json`).
    Event(String),
    /// The test ran past its time bound (400 `limit_too_large`).
    TooLong(String),
}

/// Shared state of the API. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub tokens: Arc<TokenStore>,
    pub audit: Arc<AuditLog>,
    pub rules: Arc<dyn RuleService>,
    pub metrics: Arc<Metrics>,
    /// Alert webhooks per tenant (in memory unless [`AppState::with_destinations`] is given a
    /// persistent list).
    pub destinations: Arc<DestinationStore>,
    /// Rules each tenant switched off (in memory unless [`AppState::with_rule_switches`] is
    /// given the service's persisted store, whose switches the pipeline reads).
    pub rule_switches: Arc<RuleSwitchStore>,
    ready: Arc<AtomicBool>,
    /// Masks secrets in what the API itself writes (audit details such as search text). The
    /// binary installs the detect crate's masker; the default leaves values as they are.
    masker: Arc<ValueMasker>,
}

/// A function that masks secrets in a JSON value in place.
pub type ValueMasker = dyn Fn(&mut serde_json::Value) + Send + Sync;

impl AppState {
    pub fn new(
        store: Arc<Store>,
        tokens: Arc<TokenStore>,
        audit: Arc<AuditLog>,
        rules: Arc<dyn RuleService>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        AppState {
            store,
            tokens,
            audit,
            rules,
            metrics,
            destinations: Arc::new(DestinationStore::in_memory()),
            rule_switches: Arc::new(RuleSwitchStore::in_memory()),
            ready: Arc::new(AtomicBool::new(true)),
            masker: Arc::new(|_: &mut serde_json::Value| {}),
        }
    }

    /// Use a persistent destination list (the service's `destinations.json`).
    pub fn with_destinations(mut self, destinations: Arc<DestinationStore>) -> AppState {
        self.destinations = destinations;
        self
    }

    /// Use the service's persisted rule switches (`rule_switches.json`).
    pub fn with_rule_switches(mut self, switches: Arc<RuleSwitchStore>) -> AppState {
        self.rule_switches = switches;
        self
    }

    /// Mask what the API records (audit details) with `masker`.
    pub fn with_masker(mut self, masker: Arc<ValueMasker>) -> AppState {
        self.masker = masker;
        self
    }

    /// State with the token store and audit log in their standard places in `data_dir`.
    pub fn open_in(
        data_dir: &Path,
        store: Arc<Store>,
        rules: Arc<dyn RuleService>,
        metrics: Arc<Metrics>,
    ) -> Result<AppState, StateError> {
        let tokens = Arc::new(TokenStore::open_in(data_dir)?);
        let audit = Arc::new(AuditLog::open_in(data_dir)?);
        Ok(AppState::new(store, tokens, audit, rules, metrics))
    }

    /// Mask the secrets in `value` (an error answer's body, audit details).
    pub fn mask_value(&self, value: &mut serde_json::Value) {
        (self.masker)(value);
    }

    /// `text` with its secrets masked, for free text the API stores on a user's word (alert
    /// notes, assignees): an analyst pasting a leaked token into a note must not store it.
    pub fn mask_text(&self, text: &str) -> String {
        let mut value = serde_json::Value::String(text.to_string());
        (self.masker)(&mut value);
        match value {
            serde_json::Value::String(masked) => masked,
            other => other.to_string(),
        }
    }

    /// `/readyz` answers 503 while this is false (set during graceful shutdown).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Record an audited action. Failing to audit fails the request: an action that cannot
    /// be attributed is not performed silently.
    pub fn audit(
        &self,
        token: &TokenInfo,
        action: &str,
        target: Option<&str>,
        mut details: serde_json::Value,
    ) -> Result<(), ApiError> {
        (self.masker)(&mut details);
        // The target is what the request named: an id, unless an analyst pasted something
        // else (a token) where the id goes. Ids (hex) are kept as they are: masking could
        // take a long digit run of one for a card number.
        let target = target.map(|t| {
            if t.bytes().all(|b| b.is_ascii_hexdigit()) {
                t.to_string()
            } else {
                self.mask_text(t)
            }
        });
        self.audit
            .append(&AuditEntry::new(token, action, target.as_deref(), details))
            .map_err(audit_unavailable)
    }

    /// [`Self::audit`] for an action that may have failed, with its result passed on. A
    /// failure adds `outcome` (`not_found`, `invalid`, `failed`) and the error `code` to the
    /// details, so a refused or missed read does not read as one that was answered; lines
    /// of answered actions are as before.
    pub fn audit_result<T>(
        &self,
        token: &TokenInfo,
        action: &str,
        target: Option<&str>,
        mut details: serde_json::Value,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Err(error) = &result {
            if !details.is_object() {
                details = serde_json::json!({});
            }
            details["outcome"] = outcome_of(error).into();
            details["error"] = error.code().into();
        }
        self.audit(token, action, target, details)?;
        result
    }
}

/// A request refused because its audit line could not be written (a full disk): 503, saying
/// so, without the log's path (that goes to the server log), so the client knows to retry and
/// an operator what to free.
fn audit_unavailable(error: AuditError) -> ApiError {
    match error {
        AuditError::Io { source, .. } => {
            tracing::error!(error = %source, "writing the audit log failed; the request is refused");
            ApiError::Unavailable(format!(
                "the audit log cannot be written ({}); requests are refused rather than go unrecorded",
                source.kind()
            ))
        }
        other => ApiError::Internal(other.to_string()),
    }
}

/// The audit `outcome` of a failed action.
fn outcome_of(error: &ApiError) -> &'static str {
    match error {
        ApiError::NotFound(_) => "not_found",
        ApiError::Unauthorized(_) => "unauthorized",
        ApiError::Forbidden(_) => "forbidden",
        ApiError::BadRequest { .. }
        | ApiError::InvalidRule(_)
        | ApiError::MethodNotAllowed(_)
        | ApiError::UnsupportedBody { .. } => "invalid",
        ApiError::Unavailable(_) | ApiError::Internal(_) => "failed",
    }
}

/// Why [`AppState::open_in`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Tokens(#[from] AuthError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

#[cfg(test)]
mod audit_failure_tests {
    use super::*;

    /// A full disk refuses audited requests with a 503 that says why (not an opaque 500),
    /// and without the log's path.
    #[test]
    fn an_audit_line_that_cannot_be_written_is_a_503_saying_so() {
        let error = audit_unavailable(AuditError::Io {
            path: "/secret/place/audit.jsonl".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        });
        assert_eq!(error.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code(), "unavailable");
        let message = error.to_string();
        assert!(message.contains("audit log cannot be written"), "{message}");
        assert!(message.contains("no storage space"), "{message}");
        assert!(!message.contains("/secret/place"), "{message}");
    }
}
