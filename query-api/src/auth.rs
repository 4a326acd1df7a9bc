//! API tokens and roles.
//!
//! A token is 32 random bytes from the OS (`prm_` + 64 hex chars). Only its SHA-256 is kept,
//! in a JSON file (mode 0600 on Unix) under the data dir; a presented token is hashed and
//! compared against every stored hash in constant time, so neither the file nor timing
//! reveals a usable token. The file is re-read when it changes on disk, so tokens created or
//! revoked by `perimeter tokens ...` while the server runs take effect on the next request.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// File name of the token store inside the data dir.
pub const TOKENS_FILE: &str = "api-tokens.json";

/// What a token may do. Ordered: each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads alerts, events, rules and dead letters.
    Viewer,
    /// Also changes alerts (status, assignee, notes).
    Responder,
    /// Also manages and tests rules, destinations and exports, and reads the audit log.
    Admin,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Role, AuthError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "responder" => Ok(Role::Responder),
            "admin" => Ok(Role::Admin),
            other => Err(AuthError::UnknownRole(other.to_string())),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token's public description (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// Short random id, safe to show and log.
    pub id: String,
    /// Human name (`ci`, `alice`), defaults to the id.
    pub name: String,
    pub tenant: String,
    pub role: Role,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// The token is refused from this time on (`None`: it does not expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the token was last accepted, to the minute ([`LAST_USED_RESOLUTION`]): an old or
    /// missing value marks a token nobody uses any more, a revocation candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// How stale a token's `last_used_at` may get before a use rewrites it: the token file is
/// written at most once per token and minute, not on every request.
pub const LAST_USED_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl TokenInfo {
    /// How the token appears in alert histories and the audit log.
    pub fn actor(&self) -> String {
        format!("token:{}:{}", self.name, self.id)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Whether the token has expired at `now`.
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// What [`TokenStore::revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The token was revoked by this call.
    Revoked,
    /// The token had been revoked before, at this time; nothing changed.
    AlreadyRevoked(DateTime<Utc>),
    /// No token has this id.
    Unknown,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No stored token has this hash.
    Unknown,
    Revoked,
    Expired(DateTime<Utc>),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unknown => f.write_str("unknown token"),
            Refusal::Revoked => f.write_str("the token was revoked"),
            Refusal::Expired(at) => write!(
                f,
                "the token expired at {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token store {path} is not valid JSON: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("unknown role `{0}` (expected viewer, responder or admin)")]
    UnknownRole(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no randomness from the OS: {0}")]
    Random(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    #[serde(flatten)]
    info: TokenInfo,
    /// Hex SHA-256 of the plaintext token.
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

#[derive(Debug, Default)]
struct Loaded {
    records: Vec<TokenRecord>,
    /// mtime and size of the file when read, to notice changes by another process.
    stamp: Option<(SystemTime, u64)>,
}

/// The set of API tokens, persisted as hashes in one JSON file.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    loaded: RwLock<Loaded>,
    /// Per token id, when a use was last written (or tried: a file that cannot be written is
    /// not retried, nor logged, on every request).
    use_noted: std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>>,
    /// Per token id, when its refused use (revoked, expired) was last logged.
    refusal_logged: std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>>,
}

/// A revoked or expired token still presented is logged at most this often, per token.
const REFUSED_USE_LOG_EVERY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

impl TokenStore {
    /// Open (or start) the token store at `path`. A missing file is an empty store.
    pub fn open(path: impl AsRef<Path>) -> Result<TokenStore, AuthError> {
        let path = path.as_ref().to_path_buf();
        let loaded = read_file(&path)?;
        Ok(TokenStore {
            path,
            loaded: RwLock::new(loaded),
            use_noted: Default::default(),
            refusal_logged: Default::default(),
        })
    }

    /// Open the token store in its standard place inside `data_dir`.
    pub fn open_in(data_dir: impl AsRef<Path>) -> Result<TokenStore, AuthError> {
        TokenStore::open(data_dir.as_ref().join(TOKENS_FILE))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create a token that does not expire. Returns its description and the plaintext, which is
    /// shown once and never stored.
    pub fn create(
        &self,
        tenant: &str,
        role: Role,
        name: Option<&str>,
    ) -> Result<(TokenInfo, String), AuthError> {
        self.create_until(tenant, role, name, None)
    }

    /// [`Self::create`] for a token refused from `expires_at` on (`None`: never).
    pub fn create_until(
        &self,
        tenant: &str,
        role: Role,
        name: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(TokenInfo, String), AuthError> {
        validate_label("tenant", tenant)?;
        if let Some(name) = name {
            validate_label("name", name)?;
        }
        let secret = random_hex(32)?;
        let plaintext = format!("prm_{secret}");
        let id = random_hex(6)?;
        let info = TokenInfo {
            name: name.map(str::to_string).unwrap_or_else(|| id.clone()),
            id,
            tenant: tenant.to_string(),
            role,
            created_at: Utc::now(),
            revoked_at: None,
            expires_at,
            last_used_at: None,
        };
        let record = TokenRecord {
            info: info.clone(),
            sha256: sha256_hex(&plaintext),
        };
        self.modify(|records| records.push(record))?;
        Ok((info, plaintext))
    }

    /// All tokens, revoked ones included (with `revoked_at` set).
    pub fn list(&self) -> Vec<TokenInfo> {
        self.refresh();
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded.records.iter().map(|r| r.info.clone()).collect()
    }

    /// Revoke a token by id, saying whether it was revoked now, had been already (a second
    /// `tokens revoke` is not told the token does not exist) or is unknown.
    pub fn revoke(&self, id: &str) -> Result<Revocation, AuthError> {
        let mut outcome = Revocation::Unknown;
        self.modify(|records| {
            for r in records.iter_mut().filter(|r| r.info.id == id) {
                outcome = match r.info.revoked_at {
                    Some(at) => Revocation::AlreadyRevoked(at),
                    None => {
                        r.info.revoked_at = Some(Utc::now());
                        Revocation::Revoked
                    }
                };
            }
        })?;
        Ok(outcome)
    }

    /// The token a presented plaintext belongs to, if it is known, not revoked and not expired.
    pub fn verify(&self, presented: &str) -> Option<TokenInfo> {
        self.check(presented, Utc::now()).ok()
    }

    /// The token a presented plaintext belongs to at `now`, or why it is refused. An accepted
    /// token's `last_used_at` becomes `now` (written when it was older than
    /// [`LAST_USED_RESOLUTION`]).
    pub fn check(&self, presented: &str, now: DateTime<Utc>) -> Result<TokenInfo, Refusal> {
        self.check_naming(presented, now)
            .map_err(|(refusal, _)| refusal)
    }

    /// [`Self::check`], naming the token a refusal is of when it is a known one (revoked,
    /// expired): for the audit log of its tenant.
    pub fn check_naming(
        &self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<TokenInfo, (Refusal, Option<Box<TokenInfo>>)> {
        let info = self.find(presented, now)?;
        self.note_use(&info, now);
        Ok(info)
    }

    fn find(
        &self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<TokenInfo, (Refusal, Option<Box<TokenInfo>>)> {
        self.refresh();
        let presented_hash = Sha256::digest(presented.as_bytes());
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        let mut found: Option<&TokenRecord> = None;
        // Every stored hash is compared, match or not, so timing does not depend on where
        // (or whether) the token is in the list.
        for record in &loaded.records {
            let Ok(stored) = hex::decode(&record.sha256) else {
                continue;
            };
            if bool::from(stored.as_slice().ct_eq(presented_hash.as_slice())) {
                found = Some(record);
            }
        }
        let info = &found.ok_or((Refusal::Unknown, None))?.info;
        let refusal = if info.is_revoked() {
            Refusal::Revoked
        } else {
            match info.expires_at {
                Some(at) if info.is_expired_at(now) => Refusal::Expired(at),
                _ => return Ok(info.clone()),
            }
        };
        self.log_refused_use(info, &refusal, now);
        Err((refusal, Some(Box::new(info.clone()))))
    }

    /// A revoked or expired token still presented is an incident signal (a departed
    /// contractor's, a leaked one tried): which one it is is logged (its id and name, never
    /// the token), once a minute per token. It left no trace before.
    fn log_refused_use(&self, info: &TokenInfo, refusal: &Refusal, now: DateTime<Utc>) {
        let mut logged = self
            .refusal_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if logged
            .get(&info.id)
            .is_some_and(|at| now - *at < REFUSED_USE_LOG_EVERY)
        {
            return;
        }
        logged.insert(info.id.clone(), now);
        tracing::warn!(
            token_id = %info.id,
            token_name = %info.name,
            tenant = %info.tenant,
            role = %info.role,
            why = %refusal,
            client = crate::client::current_client().unwrap_or_default(),
            "a refused token was presented (logged once a minute per token)"
        );
    }

    /// Write `now` as the token's last use when the stored one is older than the resolution.
    /// A failed write is logged once per resolution period; the request goes on.
    fn note_use(&self, info: &TokenInfo, now: DateTime<Utc>) {
        let fresh = |t: Option<DateTime<Utc>>| t.is_some_and(|t| now - t < LAST_USED_RESOLUTION);
        if fresh(info.last_used_at) {
            return;
        }
        {
            let mut noted = self.use_noted.lock().unwrap_or_else(|e| e.into_inner());
            if fresh(noted.get(&info.id).copied()) {
                return;
            }
            noted.insert(info.id.clone(), now);
        }
        let written = self.modify(|records| {
            for r in records.iter_mut().filter(|r| r.info.id == info.id) {
                r.info.last_used_at = r.info.last_used_at.max(Some(now));
            }
        });
        if let Err(error) = written {
            tracing::warn!(%error, token_id = %info.id, "could not record the token's last use");
        }
    }

    /// Re-read the file if another process changed it. A file that became unreadable keeps
    /// the last good state (and logs), rather than locking everybody out mid-flight.
    fn refresh(&self) {
        let current = file_stamp(&self.path);
        {
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            if loaded.stamp == current {
                return;
            }
        }
        match read_file(&self.path) {
            Ok(fresh) => *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = fresh,
            Err(error) => tracing::error!(%error, "token store reload failed"),
        }
    }

    fn modify(&self, change: impl FnOnce(&mut Vec<TokenRecord>)) -> Result<(), AuthError> {
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        // Start from the file as it is now, so two writers do not drop each other's tokens; the
        // lock keeps another process (the service recording a token's use, `perimeter tokens`)
        // from writing between this read and write.
        let io = |source| AuthError::Io {
            path: self.path.clone(),
            source,
        };
        let fresh = crate::files::with_lock(&self.path, io, || {
            let mut fresh = read_file(&self.path)?;
            change(&mut fresh.records);
            write_file(&self.path, &fresh.records)?;
            fresh.stamp = file_stamp(&self.path);
            Ok::<_, AuthError>(fresh)
        })?;
        *loaded = fresh;
        Ok(())
    }
}

fn validate_label(field: &'static str, value: &str) -> Result<(), AuthError> {
    if perimeter_model::is_valid_label(value) {
        Ok(())
    } else {
        Err(AuthError::Invalid {
            field,
            reason: "expected 1-128 characters from [A-Za-z0-9-_.@]".into(),
        })
    }
}

fn random_hex(num_bytes: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; num_bytes];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_file(path: &Path) -> Result<Loaded, AuthError> {
    let stamp = file_stamp(path);
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(source) => {
            return Err(AuthError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let file: TokenFile = serde_json::from_str(&text).map_err(|source| AuthError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Loaded {
        records: file.tokens,
        stamp,
    })
}

fn write_file(path: &Path, records: &[TokenRecord]) -> Result<(), AuthError> {
    let file = TokenFile {
        tokens: records.to_vec(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|source| AuthError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    crate::files::replace_file(path, text.as_bytes(), crate::files::Readers::Owner).map_err(
        |source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        },
    )
}

/// The least role an endpoint needs, as a type, so the check happens while extracting:
/// before the request body is read or any parameter is looked at.
pub trait MinRole: Send + Sync + 'static {
    const ROLE: Role;
}

/// Any valid token.
#[derive(Debug, Clone, Copy)]
pub struct ViewerRole;
/// Responder or admin.
#[derive(Debug, Clone, Copy)]
pub struct ResponderRole;
/// Admin only.
#[derive(Debug, Clone, Copy)]
pub struct AdminRole;

impl MinRole for ViewerRole {
    const ROLE: Role = Role::Viewer;
}
impl MinRole for ResponderRole {
    const ROLE: Role = Role::Responder;
}
impl MinRole for AdminRole {
    const ROLE: Role = Role::Admin;
}

/// The authenticated caller, holding at least role `R`. Extracting it answers 401 for a
/// missing, unknown, revoked or expired token (saying which) and 403 for a token whose role is
/// below `R`.
#[derive(Debug, Clone)]
pub struct Auth<R: MinRole = ViewerRole>(pub TokenInfo, PhantomData<R>);

impl<R: MinRole> Auth<R> {
    pub fn tenant(&self) -> &str {
        &self.0.tenant
    }

    pub fn token(&self) -> &TokenInfo {
        &self.0
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    // Two of them: which one a proxy on the way reads may not be the one used here.
    if parts
        .headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ApiError::Unauthorized(
            "more than one Authorization header: send the API token once".into(),
        ));
    }
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthorized(
                // Worded so the masking of error answers leaves it whole (`Authorization: x`
                // reads as a credential).
                "missing Authorization header: send the API token as `Bearer <token>`".into(),
            )
        })?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    // The scheme is case-insensitive (RFC 7235 2.1): `BEARER` and `bearer` are `Bearer`.
    value
        .trim_start()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
        })
}

impl<R: MinRole> FromRequestParts<AppState> for Auth<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Auth<R>, ApiError> {
        let token = bearer_token(parts)?;
        // The path as requested: nested routers see it without their prefix.
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or(parts.uri.path(), |u| u.0.path());
        let target = format!("{} {path}", parts.method);
        let info = match state.tokens.check_naming(token, Utc::now()) {
            Ok(info) => info,
            Err((refusal, known)) => {
                // A revoked or expired token still in use (a departed contractor's, a leaked
                // one tried) goes to its tenant's audit log, as a refused role does.
                if let Some(info) = known {
                    let outcome = match refusal {
                        Refusal::Revoked => "revoked",
                        _ => "expired",
                    };
                    let details = serde_json::json!({ "outcome": outcome });
                    if let Err(e) =
                        state.audit(&info, crate::audit::DENIED_ACTION, Some(&target), details)
                    {
                        tracing::warn!(error = %e, "auditing the use of a refused token failed");
                    }
                }
                return Err(ApiError::Unauthorized(refusal.to_string()));
            }
        };
        if info.role < R::ROLE {
            // A valid token reaching beyond its role is worth knowing about (a viewer trying
            // an export or the audit log): recorded like any other use, with what it tried.
            let details = serde_json::json!({"outcome": "forbidden", "needs": R::ROLE.to_string()});
            state.audit(&info, crate::audit::DENIED_ACTION, Some(&target), details)?;
            return Err(ApiError::Forbidden(format!(
                "this operation needs role `{}`, the token has `{}`",
                R::ROLE,
                info.role
            )));
        }
        Ok(Auth(info, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_verify_revoke_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open_in(dir.path()).unwrap();
        let (info, token) = store
            .create("acme", Role::Responder, Some("alice"))
            .unwrap();
        assert!(token.starts_with("prm_") && token.len() == 68);
        assert_eq!(store.verify(&token).unwrap(), info);
        assert!(store.verify("prm_wrong").is_none());
        assert!(store.verify(&token[..token.len() - 1]).is_none());

        // A second handle (another process) sees the token, and a revoke made there.
        let other = TokenStore::open_in(dir.path()).unwrap();
        assert_eq!(other.verify(&token).unwrap().name, "alice");
        assert_eq!(other.revoke(&info.id).unwrap(), Revocation::Revoked);
        let revoked_at = other.list()[0].revoked_at.unwrap();
        // Again: the token is known, and already revoked (its time unchanged).
        assert_eq!(
            other.revoke(&info.id).unwrap(),
            Revocation::AlreadyRevoked(revoked_at)
        );
        assert_eq!(store.list()[0].revoked_at, Some(revoked_at));
        assert_eq!(other.revoke("0123456789ab").unwrap(), Revocation::Unknown);
        assert!(
            store.verify(&token).is_none(),
            "revocation must be seen by the first handle"
        );
        assert!(store.list()[0].revoked_at.is_some());
    }

    #[test]
    fn last_use_is_kept_to_the_minute() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open_in(dir.path()).unwrap();
        let (_, used) = store.create("acme", Role::Viewer, Some("used")).unwrap();
        let (_, idle) = store.create("acme", Role::Viewer, Some("idle")).unwrap();
        let last_used = |store: &TokenStore, name: &str| {
            store
                .list()
                .into_iter()
                .find(|t| t.name == name)
                .unwrap()
                .last_used_at
        };
        let t0 = Utc::now();
        store.check(&used, t0).unwrap();
        // Written to the file: another handle (the CLI's `tokens list`) sees it.
        let other = TokenStore::open_in(dir.path()).unwrap();
        assert_eq!(last_used(&other, "used"), Some(t0));
        assert_eq!(last_used(&other, "idle"), None);
        // Uses within the resolution do not rewrite the file; a later one does.
        store
            .check(&used, t0 + chrono::Duration::seconds(30))
            .unwrap();
        assert_eq!(last_used(&other, "used"), Some(t0));
        let t1 = t0 + LAST_USED_RESOLUTION;
        store.check(&used, t1).unwrap();
        assert_eq!(last_used(&other, "used"), Some(t1));
        // A refused token records nothing.
        store.revoke(&store.list()[1].id).unwrap();
        assert!(store.check(&idle, t1).is_err());
        assert_eq!(last_used(&other, "idle"), None);
    }

    #[test]
    fn expiring_tokens_work_until_their_time_and_say_why_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open_in(dir.path()).unwrap();
        let until = Utc::now() + chrono::Duration::hours(1);
        let (info, token) = store
            .create_until("acme", Role::Viewer, Some("contractor"), Some(until))
            .unwrap();
        assert_eq!(store.check(&token, Utc::now()), Ok(info.clone()));
        let later = until + chrono::Duration::seconds(1);
        assert_eq!(store.check(&token, later), Err(Refusal::Expired(until)));
        assert_eq!(store.check(&token, until), Err(Refusal::Expired(until)));
        assert_eq!(store.check("prm_nope", Utc::now()), Err(Refusal::Unknown));
        // Kept across a reopen; a revoked token says revoked, whatever its expiry.
        let reopened = TokenStore::open_in(dir.path()).unwrap();
        assert_eq!(reopened.list()[0].expires_at, Some(until));
        assert_eq!(reopened.revoke(&info.id).unwrap(), Revocation::Revoked);
        assert_eq!(reopened.check(&token, Utc::now()), Err(Refusal::Revoked));
        // A token file written before tokens could expire reads as tokens that do not.
        let old = r#"{"tokens": [{"id": "abc", "name": "ci", "tenant": "acme", "role": "admin",
            "created_at": "2026-01-01T00:00:00Z", "sha256": "00"}]}"#;
        std::fs::write(dir.path().join("old.json"), old).unwrap();
        let old = TokenStore::open(dir.path().join("old.json")).unwrap();
        assert_eq!(old.list()[0].expires_at, None);
    }

    #[test]
    fn only_hashes_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open_in(dir.path()).unwrap();
        let (_, token) = store.create("acme", Role::Admin, None).unwrap();
        let text = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(
            !text.contains(&token[4..]),
            "plaintext token found in the token file"
        );
        assert!(text.contains(&sha256_hex(&token)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKENS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "token file readable by others: {mode:o}");
        }
    }

    #[test]
    fn tokens_are_unique_and_labels_validated() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open_in(dir.path()).unwrap();
        let (a, ta) = store.create("t1", Role::Viewer, None).unwrap();
        let (b, tb) = store.create("t1", Role::Viewer, None).unwrap();
        assert_ne!(ta, tb);
        assert_ne!(a.id, b.id);
        assert!(store.create("", Role::Viewer, None).is_err());
        assert!(store.create("a b", Role::Viewer, None).is_err());
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Admin > Role::Responder && Role::Responder > Role::Viewer);
    }

    #[test]
    fn corrupt_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENS_FILE), "{not json").unwrap();
        assert!(matches!(
            TokenStore::open_in(dir.path()),
            Err(AuthError::Corrupt { .. })
        ));
    }
}
