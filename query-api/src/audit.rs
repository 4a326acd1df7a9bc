//! The API's own audit trail: one JSON line per audited request (who searched what, who
//! changed which alert), appended to `audit.jsonl` in the data dir. The file is only ever
//! appended to; entries are written (and flushed) before the response is sent, so an answered
//! change always has its audit line.
//!
//! Reading ([`AuditLog::query`]) goes backwards from the end of the file, newest first, and stops
//! once a page is full (or entries are older than `from`): an admin's look at the last hour costs
//! the same in a year-old log as in a new one. Pages are cut by byte offset, which appending
//! never moves.
//!
//! Retention ([`AuditLog::expire`], `[api] audit_retention_days`, off by default) drops the
//! entries of expired days. They are the head of the file, so the rest is copied to a new file
//! that replaces the log (appends wait only for the last lines and the rename); cursors name the file they were cut from (its inode), so one handed
//! out before is refused rather than misread.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Role, TokenInfo};
use perimeter_store::backwards::{cursor_offset, page_cursor, CursorError, ReverseLines};

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
    /// What was done: `alerts.list`, `alerts.get`, `alerts.update`, `alerts.summary`,
    /// `events.search`, `events.get`, `events.context`, `events.histogram`, `events.top`,
    /// `events.export`, `sources.list`, `rules.list`, `rules.test`, `rules.switch_off`,
    /// `rules.switch_on`, `destinations.list`, `destinations.create`, `destinations.delete`,
    /// `dead_letters.list`, `audit.list`, `request.denied` (a request refused for the token's
    /// role or state), and with the `perimeter` command (actor `cli`) `tokens.create` and
    /// `tokens.revoke`.
    pub action: String,
    /// The alert/event id acted on, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Parameters of the action (the search query, the requested change).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// The IP address the request came from (absent for the `perimeter` command's entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl AuditEntry {
    pub fn new(
        token: &TokenInfo,
        action: &str,
        target: Option<&str>,
        details: serde_json::Value,
    ) -> AuditEntry {
        let mut details = details;
        cut_long_texts(&mut details);
        AuditEntry::with_actor(
            (&token.tenant, &token.id, &token.name, token.role),
            action,
            target,
            details,
        )
    }

    /// An action taken with the `perimeter` command on the data directory, not through the
    /// API (creating or revoking a token): the actor is `cli`, named after the OS user.
    pub fn by_cli(
        tenant: &str,
        action: &str,
        target: Option<&str>,
        details: serde_json::Value,
    ) -> AuditEntry {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        AuditEntry::with_actor(
            (tenant, "cli", &format!("cli:{user}"), Role::Admin),
            action,
            target,
            details,
        )
    }

    fn with_actor(
        (tenant, token_id, token_name, role): (&str, &str, &str, Role),
        action: &str,
        target: Option<&str>,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            timestamp: Utc::now(),
            tenant: tenant.to_string(),
            token_id: token_id.to_string(),
            token_name: token_name.to_string(),
            role,
            action: action.to_string(),
            target: target.map(|t| cut_text(t).into_owned()),
            details,
            client: crate::client::current_client(),
        }
    }
}

/// The longest text an audit entry keeps of a request's value: the longest value the API takes
/// (a query, 4 KiB). A longer one was refused; it is kept cut, with its length, so any token
/// cannot grow the log by the URI limit (64 KiB) per request (QA).
const AUDIT_TEXT_BYTES: usize = 4096;

/// `text` cut to [`AUDIT_TEXT_BYTES`] (on a character boundary), saying how long it was.
fn cut_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= AUDIT_TEXT_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = AUDIT_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}... ({} bytes)", &text[..end], text.len()))
}

/// Every text in `value` cut as [`cut_text`] does.
fn cut_long_texts(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.len() > AUDIT_TEXT_BYTES => {
            *s = cut_text(s).into_owned();
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(cut_long_texts),
        serde_json::Value::Object(map) => map.values_mut().for_each(cut_long_texts),
        _ => {}
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
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

/// What [`AuditLog::query`] reads: a tenant's entries, newest first, filtered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    pub tenant: String,
    /// Page size (at least 1).
    pub limit: usize,
    /// Only this action (`alerts.update`); a trailing `*` matches a prefix (`alerts.*`).
    pub action: Option<String>,
    /// Only entries of this token, by its id or its name.
    pub token: Option<String>,
    /// Only entries about this alert or event id (refused requests on its path included).
    pub target: Option<String>,
    /// `timestamp >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `timestamp < to`.
    pub to: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl AuditQuery {
    fn selects(&self, e: &AuditEntry) -> bool {
        e.tenant == self.tenant
            && self
                .action
                .as_deref()
                .is_none_or(|a| match a.strip_suffix('*') {
                    Some(prefix) => e.action.starts_with(prefix),
                    None => e.action == a,
                })
            && self
                .token
                .as_deref()
                .is_none_or(|t| e.token_id == t || e.token_name == t)
            && self.target.as_deref().is_none_or(|t| is_about(e, t))
            && self.from.is_none_or(|f| e.timestamp >= f)
            && self.to.is_none_or(|t| e.timestamp < t)
    }
}

/// Whether entry `e` is about the alert, event or other id `target`: its target is the id, or,
/// for a request refused before its handler ran (`request.denied`, whose target is the method
/// and path, `PATCH /api/v1/alerts/<id>`), the id is the path's resource id. Lines already on
/// disk are read the same way.
fn is_about(e: &AuditEntry, target: &str) -> bool {
    let Some(recorded) = e.target.as_deref() else {
        return false;
    };
    if recorded == target {
        return true;
    }
    e.action == DENIED_ACTION
        && recorded
            .split_once(' ')
            .and_then(|(_, path)| path.strip_prefix("/api/v1/"))
            .and_then(|path| path.split(['?', '#']).next())
            .and_then(|path| path.split('/').nth(1))
            .is_some_and(|id| id == target)
}

/// The action of a request refused for its token's role.
pub const DENIED_ACTION: &str = "request.denied";

/// One page of audit entries, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass back as `cursor` for older entries; `None` when there are none.
    pub next_cursor: Option<String>,
}

/// Entries are appended in the order they are written, so their times only go down reading
/// backwards, but for clock steps: reading stops at the first entry older than `from` by more
/// than this.
const CLOCK_STEP_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

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
        let mut file = owner_only(OpenOptions::new().create(true).append(true))
            .open(&path)
            .map_err(io_err)?;
        // The log names who read what (tokens, searches): owner only, like the token file. A log
        // created before it was made so is fixed here; one the service may not change (another
        // owner's) is still appended to, with a warning, rather than stop the service.
        if let Err(error) = restrict_to_owner(&file) {
            tracing::warn!(path = %path.display(), %error, "audit log left readable by others");
        }
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

    /// Open an existing audit log only to read it ([`Self::query`]), beside the server that
    /// writes it: nothing is created or written (appending fails).
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
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
        self.reopen_if_moved(&mut file)
            .and_then(|()| file.write_all(&line))
            .and_then(|_| file.flush())
            .map_err(|source| AuditError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Open the log at its path again when the file there is no longer the one held (moved
    /// away or deleted: logrotate, an operator archiving it). Entries went on into the moved
    /// file, or into a deleted one and were lost, until a restart (QA).
    fn reopen_if_moved(&self, file: &mut File) -> std::io::Result<()> {
        let held = file.metadata()?;
        let same = match std::fs::metadata(&self.path) {
            Ok(at_path) => at_path.ino() == held.ino() && at_path.dev() == held.dev(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !same {
            *file = owner_only(OpenOptions::new().create(true).append(true)).open(&self.path)?;
            tracing::info!(path = %self.path.display(), "the audit log was moved or removed; writing a new one at its path");
        }
        Ok(())
    }

    /// The log opened for reading, with its metadata taken under the append lock: its length
    /// ends on a whole line, and the file is the one retention last put in place.
    fn open_whole_lines(&self) -> std::io::Result<(File, std::fs::Metadata)> {
        let _appending = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let file = File::open(&self.path)?;
        let meta = file.metadata()?;
        Ok((file, meta))
    }

    /// The entries `q` selects, newest first, a page at a time. A line that does not parse (a
    /// write torn by a crash) is skipped with a warning, not fatal.
    pub fn query(&self, q: &AuditQuery) -> Result<AuditPage, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let (file, meta) = match self.open_whole_lines() {
            // Moved away (rotated) and nothing written since: empty, as the next entry starts
            // a new log.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AuditPage {
                    items: Vec::new(),
                    next_cursor: None,
                })
            }
            other => other.map_err(io)?,
        };
        let end = match q.cursor.as_deref() {
            None => meta.len(),
            Some(c) => cursor_offset(&file, c, meta.ino(), meta.len())?,
        };
        let mut lines = ReverseLines::new(&file, end);
        let limit = q.limit.max(1);
        let mut items = Vec::with_capacity(limit.min(1024));
        // Offset of the page's last entry, and whether a selected one comes before it.
        let mut page_end = 0;
        let mut more = false;
        while let Some((offset, line)) = lines.next_line().map_err(io)? {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let entry = match serde_json::from_slice::<AuditEntry>(&line) {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(offset, %error, "skipping unreadable audit line");
                    continue;
                }
            };
            if q.from.is_some_and(|f| {
                f.checked_sub_signed(CLOCK_STEP_SLACK)
                    .is_some_and(|stop| entry.timestamp < stop)
            }) {
                break;
            }
            if !q.selects(&entry) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(entry);
            page_end = offset;
        }
        Ok(AuditPage {
            items,
            next_cursor: more.then(|| page_cursor(meta.ino(), page_end)),
        })
    }

    /// Drop the entries of the days before `now`'s date minus `days` (`0`: keep everything);
    /// returns how many lines were dropped. Entries are in write order, so the expired ones are
    /// the head of the file and checking costs one line while none has expired (once a day it
    /// has). The rest is copied to a new file while appends go on; they wait only while the
    /// lines written during the copy are added and the new file is fsynced and renamed over the
    /// log. A clock step back leaves an older entry after a newer one: the head ends at the
    /// first entry kept, so nothing after it is dropped.
    pub fn expire(&self, now: DateTime<Utc>, days: u32) -> Result<u64, AuditError> {
        let Some(oldest_kept) = (days > 0)
            .then(|| {
                now.date_naive()
                    .checked_sub_days(chrono::Days::new(u64::from(days)))
            })
            .flatten()
        else {
            return Ok(0);
        };
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let (src, meta) = match self.open_whole_lines() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            other => other.map_err(io)?,
        };
        let len = meta.len();
        let mut reader = BufReader::new(std::io::Read::take(&src, len));
        let (mut head, mut lines) = (0u64, 0u64);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 || !line.ends_with(b"\n") {
                break;
            }
            // Torn lines (a crash mid-write) in the head go with it.
            if let Ok(e) = serde_json::from_slice::<AuditEntry>(&line) {
                if e.timestamp.date_naive() >= oldest_kept {
                    break;
                }
            }
            head += n as u64;
            lines += 1;
        }
        if head == 0 {
            return Ok(0);
        }
        let tmp = self.path.with_extension("jsonl.expire");
        let mut out = owner_only(OpenOptions::new().write(true).create(true).truncate(true))
            .open(&tmp)
            .map_err(io)?;
        restrict_to_owner(&out).map_err(io)?;
        let copy = |out: &mut File, from: u64, to: u64| -> std::io::Result<u64> {
            let mut part = std::io::Read::take(&src, to - from);
            std::io::Seek::seek(&mut &src, std::io::SeekFrom::Start(from))?;
            std::io::copy(&mut part, out)
        };
        copy(&mut out, head, len).map_err(io)?;
        let mut appending = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let now_len = src.metadata().map_err(io)?.len();
        copy(&mut out, len, now_len).map_err(io)?;
        out.sync_all().map_err(io)?;
        drop(out);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        // The handle appended to the file just replaced.
        *appending = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        Ok(lines)
    }
}

/// `options` creating the file readable and writable by its owner only (Unix).
fn owner_only(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Take group and other access away from an open file that has some (Unix).
fn restrict_to_owner(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
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

    fn recent(log: &AuditLog, tenant: &str, limit: usize) -> Vec<AuditEntry> {
        let q = AuditQuery {
            tenant: tenant.into(),
            limit,
            ..Default::default()
        };
        log.query(&q).unwrap().items
    }

    #[cfg(unix)]
    #[test]
    fn the_log_is_readable_by_its_owner_only_also_one_created_before() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_in(dir.path()).unwrap();
        log.append(&AuditEntry::new(
            &token("acme"),
            "alerts.list",
            None,
            json!({}),
        ))
        .unwrap();
        assert_eq!(mode(log.path()), 0o600);
        // Left 0644 by an older version: fixed when opened.
        let old = dir.path().join("old").join(AUDIT_FILE);
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, "").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let reopened = AuditLog::open(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
        // A retention trim replaces the file: the new one is owner only too.
        let mut e = AuditEntry::new(&token("acme"), "alerts.list", None, json!({}));
        e.timestamp = Utc::now() - chrono::TimeDelta::days(10);
        reopened.append(&e).unwrap();
        reopened
            .append(&AuditEntry::new(
                &token("acme"),
                "alerts.get",
                None,
                json!({}),
            ))
            .unwrap();
        assert_eq!(reopened.expire(Utc::now(), 1).unwrap(), 1);
        assert_eq!(mode(&old), 0o600);
    }

    /// QA: a refused parameter of 60 KB went into the log whole, for any token.
    #[test]
    fn long_texts_are_kept_cut_with_their_length() {
        let long = "é".repeat(30_000);
        let e = AuditEntry::new(
            &token("a"),
            "events.search",
            Some(&long),
            json!({"q": long, "n": [long.clone(), "short"]}),
        );
        let kept = e.details["q"].as_str().unwrap();
        assert!(
            kept.len() < 4200 && kept.ends_with("... (60000 bytes)"),
            "{}",
            kept.len()
        );
        assert_eq!(e.details["n"][1], "short");
        assert!(e.details["n"][0].as_str().unwrap().len() < 4200);
        assert!(e.target.unwrap().ends_with("(60000 bytes)"));
    }

    /// QA: after logrotate moved `audit.jsonl` away (or it was deleted), entries went on into
    /// the moved (or deleted) file and reading the log failed until a restart.
    #[test]
    fn a_log_moved_or_deleted_is_written_anew_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_in(dir.path()).unwrap();
        let entry = |q: i64| AuditEntry::new(&token("a"), "events.search", None, json!({"q": q}));
        log.append(&entry(1)).unwrap();
        let rotated = dir.path().join("audit.jsonl.1");
        std::fs::rename(log.path(), &rotated).unwrap();
        assert!(recent(&log, "a", 10).is_empty(), "nothing written since");
        log.append(&entry(2)).unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!((read(&rotated), read(log.path())), (1, 1));
        assert_eq!(recent(&log, "a", 10)[0].details["q"], 2);
        std::fs::remove_file(log.path()).unwrap();
        assert_eq!(log.expire(Utc::now(), 1).unwrap(), 0);
        log.append(&entry(3)).unwrap();
        assert_eq!(read(log.path()), 1);
        assert_eq!(recent(&log, "a", 10)[0].details["q"], 3);
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
        let newest = recent(&log, "a", 3);
        assert_eq!(
            newest
                .iter()
                .map(|e| e.details["q"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            [4, 3, 2]
        );
        assert_eq!(recent(&log, "b", 10).len(), 1);

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
        let newest = recent(&log, "a", 100);
        assert_eq!(newest.len(), 6);
        assert_eq!(newest[0].target.as_deref(), Some("y"));
    }

    /// An entry of token `name` (id `id-<name>`) at `minute` past 10:00.
    fn entry_at(tenant: &str, name: &str, action: &str, target: &str, minute: i64) -> AuditEntry {
        let mut t = token(tenant);
        t.name = name.into();
        t.id = format!("id-{name}");
        let mut e = AuditEntry::new(&t, action, Some(target), json!({"n": minute}));
        e.timestamp = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 1, 10, 0, 0).unwrap()
            + chrono::TimeDelta::minutes(minute);
        e
    }

    #[test]
    fn pages_go_back_through_a_large_log_with_filters_and_no_entry_twice() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_in(dir.path()).unwrap();
        // Several 64 KiB read chunks of entries: two tenants, two tokens, three actions.
        let actions = ["alerts.update", "alerts.get", "events.search"];
        let mut written = Vec::new();
        for m in 0..3000 {
            let tenant = if m % 10 == 9 { "b" } else { "a" };
            let name = if m % 2 == 0 { "dana" } else { "lee" };
            let e = entry_at(
                tenant,
                name,
                actions[m as usize % 3],
                &format!("x{}", m % 7),
                m,
            );
            log.append(&e).unwrap();
            written.push(e);
        }
        let expected = |q: &AuditQuery| -> Vec<AuditEntry> {
            written
                .iter()
                .rev()
                .filter(|e| q.selects(e))
                .cloned()
                .collect()
        };
        let at = |m: i64| written[m as usize].timestamp;
        let queries = [
            AuditQuery::default(),
            AuditQuery {
                action: Some("alerts.*".into()),
                ..Default::default()
            },
            AuditQuery {
                action: Some("alerts.update".into()),
                token: Some("lee".into()),
                ..Default::default()
            },
            AuditQuery {
                token: Some("id-dana".into()),
                target: Some("x3".into()),
                ..Default::default()
            },
            AuditQuery {
                from: Some(at(1000)),
                to: Some(at(1500)),
                ..Default::default()
            },
            AuditQuery {
                action: Some("events.search".into()),
                from: Some(at(2990)),
                ..Default::default()
            },
        ];
        for base in queries {
            let base = AuditQuery {
                tenant: "a".into(),
                limit: 97,
                ..base
            };
            let want = expected(&base);
            assert!(!want.is_empty(), "{base:?}");
            let mut got = Vec::new();
            let mut q = base.clone();
            loop {
                let page = log.query(&q).unwrap();
                assert!(page.items.len() <= 97);
                got.extend(page.items);
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(got, want, "{base:?}");
        }
        // Entries are only ever about their own tenant.
        let b = log
            .query(&AuditQuery {
                tenant: "b".into(),
                limit: 1000,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(b.items.len(), 300);
        assert!(b.items.iter().all(|e| e.tenant == "b"));
        // Cursors that are not a line start the log handed out are refused.
        let ino = std::fs::metadata(log.path()).unwrap().ino();
        for bad in [
            "x".to_string(),
            "0".into(),
            "1".into(),
            format!("{ino:x}.1"),
            format!("{ino:x}.0"),
            format!("{ino:x}.-5"),
            format!("{ino:x}.99999999999"),
            format!("zz.{ino}"),
        ] {
            let q = AuditQuery {
                tenant: "a".into(),
                limit: 10,
                cursor: Some(bad.clone()),
                ..Default::default()
            };
            assert!(
                matches!(log.query(&q), Err(AuditError::Cursor(CursorError::Bad))),
                "{bad}"
            );
        }
    }

    #[test]
    fn entries_appended_during_a_trim_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(AuditLog::open_in(dir.path()).unwrap());
        // A large expired head (2026-12-01) and a kept day (12-03), then appends during the trim.
        for m in 0..20_000 {
            log.append(&entry_at("a", "old", "events.search", "x", m % 600))
                .unwrap();
        }
        for m in 0..100 {
            log.append(&entry_at(
                "a",
                "kept",
                "events.search",
                "x",
                2 * 24 * 60 + m,
            ))
            .unwrap();
        }
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                for m in 0..2000 {
                    log.append(&entry_at("a", "during", "alerts.get", "y", 2 * 24 * 60 + m))
                        .unwrap();
                }
            })
        };
        let day4 = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 4, 1, 0, 0).unwrap();
        assert_eq!(log.expire(day4, 2).unwrap(), 20_000);
        writer.join().unwrap();
        let names: Vec<String> = recent(&log, "a", 100_000)
            .into_iter()
            .map(|e| e.token_name)
            .collect();
        assert_eq!(names.iter().filter(|n| *n == "during").count(), 2000);
        assert_eq!(names.iter().filter(|n| *n == "kept").count(), 100);
        assert_eq!(names.len(), 2100);
    }

    #[test]
    fn retention_drops_the_expired_days_and_appends_go_on_in_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_in(dir.path()).unwrap();
        // Entries every 3 hours from 2026-12-01 10:00 (5 that day) to 12-04 07:00; a torn line
        // among the first.
        for m in (0..3 * 24 * 60).step_by(180) {
            log.append(&entry_at("a", "dana", "events.search", "x", m))
                .unwrap();
            if m == 180 {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(log.path())
                    .unwrap()
                    .write_all(b"{\"torn\n")
                    .unwrap();
            }
        }
        let all = |log: &AuditLog| recent(log, "a", 1000);
        assert_eq!(all(&log).len(), 24);
        let page = log
            .query(&AuditQuery {
                tenant: "a".into(),
                limit: 5,
                ..Default::default()
            })
            .unwrap();
        let cursor = page.next_cursor.unwrap();
        // On 2026-12-04 with 2 days, 12-02 is the oldest day kept: 12-01's 5 entries (and the
        // torn line) go; 0 days and an unexpired day change nothing.
        let day = |d: u32| chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, d, 1, 0, 0).unwrap();
        assert_eq!(log.expire(day(4), 0).unwrap(), 0);
        assert_eq!(log.expire(day(3), 2).unwrap(), 0);
        assert_eq!(log.expire(day(4), 2).unwrap(), 6);
        let kept = all(&log);
        assert_eq!(kept.len(), 19);
        assert!(kept
            .iter()
            .all(|e| e.timestamp.date_naive() >= day(2).date_naive()));
        // A cursor of the old file is refused, not misread.
        let stale = AuditQuery {
            tenant: "a".into(),
            limit: 5,
            cursor: Some(cursor),
            ..Default::default()
        };
        assert!(matches!(
            log.query(&stale),
            Err(AuditError::Cursor(CursorError::Stale))
        ));
        // Appends go to the new file, and so does a reopen's.
        log.append(&entry_at("a", "lee", "alerts.get", "y", 5000))
            .unwrap();
        assert_eq!(all(&log)[0].token_name, "lee");
        drop(log);
        let log = AuditLog::open_in(dir.path()).unwrap();
        assert_eq!(all(&log).len(), 20);
        assert_eq!(log.expire(day(4), 2).unwrap(), 0, "once a day");
    }
}
