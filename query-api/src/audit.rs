//! The API's own audit trail: one JSON line per audited request (who searched what, who
//! changed which alert), appended to `audit.jsonl` in the data dir. The file is only ever
//! appended to; entries are written (and flushed) before the response is sent, so an answered
//! change always has its audit line.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Role, TokenInfo};

/// File name of the audit log inside the data dir.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: DateTime<Utc>,
    pub tenant: String,
    pub token_id: String,
    pub token_name: String,
    pub role: Role,
    /// What was done: `alerts.list`, `alerts.get`, `alerts.update`, `events.search`,
    /// `events.get`, `rules.list`, `rules.test`, `dead_letters.list`, `audit.list`.
    pub action: String,
    /// The alert/event id acted on, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Parameters of the action (the search query, the requested change).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl AuditEntry {
    pub fn new(
        token: &TokenInfo,
        action: &str,
        target: Option<&str>,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            timestamp: Utc::now(),
            tenant: token.tenant.clone(),
            token_id: token.id.clone(),
            token_name: token.name.clone(),
            role: token.role,
            action: action.to_string(),
            target: target.map(str::to_string),
            details,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit entry not serializable: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Append-only JSONL audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Open (creating if needed) the audit log at `path` for appending.
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err)?;
        // A crash mid-write can leave a line without its newline; start on a fresh line so
        // the next entry is not glued to the torn one.
        if !ends_with_newline_or_empty(&path).map_err(io_err)? {
            file.write_all(b"\n").map_err(io_err)?;
        }
        Ok(AuditLog {
            path,
            file: Mutex::new(file),
        })
    }

    /// Open the audit log in its standard place inside `data_dir`.
    pub fn open_in(data_dir: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        AuditLog::open(data_dir.as_ref().join(AUDIT_FILE))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one entry as one line. The whole line goes in one `write` on an `O_APPEND`
    /// file, so concurrent writers never interleave within a line.
    pub fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line)
            .and_then(|_| file.flush())
            .map_err(|source| AuditError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// The newest `limit` entries of `tenant`, newest first. A line that does not parse (a
    /// torn write after a crash) is skipped with a warning, not fatal.
    pub fn recent(&self, tenant: &str, limit: usize) -> Result<Vec<AuditEntry>, AuditError> {
        let file = File::open(&self.path).map_err(|source| AuditError::Io {
            path: self.path.clone(),
            source,
        })?;
        // A bounded ring of the newest matches keeps memory at `limit` entries however
        // large the log grows.
        let mut newest = std::collections::VecDeque::with_capacity(limit.min(4096));
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| AuditError::Io {
                path: self.path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<AuditEntry>(&line) {
                Ok(entry) if entry.tenant == tenant => {
                    if newest.len() == limit {
                        newest.pop_front();
                    }
                    if limit > 0 {
                        newest.push_back(entry);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(line = index + 1, %error, "skipping unreadable audit line")
                }
            }
        }
        Ok(newest.into_iter().rev().collect())
    }
}

fn ends_with_newline_or_empty(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(tenant: &str) -> TokenInfo {
        TokenInfo {
            id: "abc".into(),
            name: "alice".into(),
            tenant: tenant.into(),
            role: Role::Admin,
            created_at: Utc::now(),
            revoked_at: None,
            expires_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn appends_and_reads_back_newest_first_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_in(dir.path()).unwrap();
        for i in 0..5 {
            log.append(&AuditEntry::new(
                &token("a"),
                "events.search",
                None,
                json!({"q": i}),
            ))
            .unwrap();
        }
        log.append(&AuditEntry::new(
            &token("b"),
            "alerts.update",
            Some("x"),
            json!({}),
        ))
        .unwrap();
        let recent = log.recent("a", 3).unwrap();
        assert_eq!(
            recent
                .iter()
                .map(|e| e.details["q"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            [4, 3, 2]
        );
        assert_eq!(log.recent("b", 10).unwrap().len(), 1);

        // Reopening appends rather than truncating; a torn line is skipped.
        drop(log);
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(AUDIT_FILE))
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        let log = AuditLog::open_in(dir.path()).unwrap();
        log.append(&AuditEntry::new(
            &token("a"),
            "alerts.get",
            Some("y"),
            json!({}),
        ))
        .unwrap();
        let recent = log.recent("a", 100).unwrap();
        assert_eq!(recent.len(), 6);
        assert_eq!(recent[0].target.as_deref(), Some("y"));
    }
}
