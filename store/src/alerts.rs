//! Alerts: an append-only JSONL journal per tenant (`alerts/tenant=<t>/journal.jsonl`) holding
//! each alert once and every triage change, replayed into memory on open.
//!
//! Alerts are few compared with events (thousands, not millions), so filtering and sorting a
//! tenant's alerts in memory is fast and keeps status/assignee/notes/history trivially
//! consistent: the journal is the single source of truth, the in-memory book a cache of it.
//!
//! The journal does not grow without end: a noisy rule grouped into one alert adds a line per
//! repeat. A journal with many more lines than alerts is rewritten with one snapshot line per
//! alert ([`JournalEntry::Snapshot`]), when the book is loaded and at retention
//! ([`AlertBook::expire`], which also drops closed alerts past `alert_retention_days`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use perimeter_model::{Alert, AlertStatus, DetectorKind, Severity};
use serde::{Deserialize, Serialize};

use crate::{journal, Result, StoreError};

/// An alert with its triage state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// The alert as the detector produced it; `alert.status` is the current triage status.
    pub alert: Alert,
    pub assignee: Option<String>,
    pub notes: Vec<Note>,
    /// Every change, oldest first.
    pub history: Vec<AlertChange>,
    /// Event time of the newest repeat grouped into this alert (`None`: no repeat so far).
    /// The alert's own `@timestamp` is its first occurrence and `count` says how many there
    /// were; `event_ids` and `lines` keep the first [`MAX_GROUPED_EVIDENCE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    /// Event time of the oldest repeat grouped into this alert when one is dated before the
    /// alert's own `@timestamp` (delivered late, as Google reports and CloudTrail records
    /// are); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<DateTime<Utc>>,
}

impl AlertRecord {
    /// Event time of the alert's last occurrence: its newest repeat, or its own `@timestamp`.
    pub fn last_occurrence(&self) -> DateTime<Utc> {
        self.last_seen
            .unwrap_or(self.alert.timestamp)
            .max(self.alert.timestamp)
    }

    /// Event time of the alert's first occurrence: its own `@timestamp`, or a repeat dated
    /// before it.
    pub fn first_occurrence(&self) -> DateTime<Utc> {
        self.first_seen
            .unwrap_or(self.alert.timestamp)
            .min(self.alert.timestamp)
    }

    /// Count a repeat dated `at` into the alert's span.
    fn note_occurrence(&mut self, at: DateTime<Utc>) {
        if at < self.alert.timestamp {
            self.first_seen = Some(self.first_seen.map_or(at, |f| f.min(at)));
        } else {
            self.last_seen = self.last_seen.max(Some(at));
        }
    }
}

/// Evidence (event ids, lines) a grouped alert keeps; `count` goes on counting past it.
pub const MAX_GROUPED_EVIDENCE: usize = 100;

/// An analyst note on an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub at: DateTime<Utc>,
    pub by: String,
    pub text: String,
}

/// One recorded change: `field` is `status`, `assignee` or `note`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertChange {
    pub at: DateTime<Utc>,
    pub by: String,
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A triage change request. `assignee: Some("")` clears the assignee.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertUpdate {
    #[serde(default)]
    pub status: Option<AlertStatus>,
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// Sort order of [`AlertQuery`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSort {
    /// Newest `@timestamp` first (default).
    #[default]
    Newest,
    Oldest,
    /// Highest severity first, newest first within a severity.
    Severity,
}

impl AlertSort {
    fn tag(&self) -> &'static str {
        match self {
            AlertSort::Newest => "n",
            AlertSort::Oldest => "o",
            AlertSort::Severity => "s",
        }
    }
}

/// Filters for listing alerts; every set filter must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertQuery {
    /// `@timestamp >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `@timestamp < to`.
    pub to: Option<DateTime<Utc>>,
    /// Minimum severity (`high` also returns `critical`).
    pub severity: Option<Severity>,
    /// Any of these statuses (empty: any status): `[Open, Acknowledged]` is the queue still
    /// to be worked.
    pub statuses: Vec<AlertStatus>,
    /// Exact rule id.
    pub rule_id: Option<String>,
    /// Exact source name.
    pub source: Option<String>,
    /// Exact entity (case-insensitive).
    pub entity: Option<String>,
    /// Words (and `"quoted phrases"`), each a case-insensitive substring of some part of the
    /// alert: title, description, explanation, entity, rule id, tags, technique ids, assignee,
    /// notes, or a matched field value. All must be found.
    pub text: Option<String>,
    /// Page size (clamped to `1..=MAX_PAGE_LIMIT`).
    pub limit: usize,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub sort: AlertSort,
    /// How the store keeps values of `entity` and `text` that masking replaces (an e-mail
    /// address as its `hmac:` pseudonym): each value (lowercased) with its stored form, which
    /// matches too. The store fills it in ([`crate::Store::list_alerts`]).
    pub stored_forms: Vec<(String, String)>,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Largest page size; bigger limits are clamped.
pub const MAX_PAGE_LIMIT: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum JournalEntry {
    Alert {
        alert: Box<Alert>,
    },
    Update {
        id: String,
        at: DateTime<Utc>,
        by: String,
        update: AlertUpdate,
    },
    /// Alert `alert_id` repeated alert `id` (same rule and entity within the grouping window)
    /// and was counted there instead of being stored on its own.
    Repeat {
        id: String,
        alert_id: String,
        at: DateTime<Utc>,
        #[serde(default)]
        event_ids: Vec<String>,
        #[serde(default)]
        lines: Vec<u64>,
        /// The occurrences the repeat brings: 1 for a single-event rule's match, the events of
        /// its window for a correlation's (a journal from before correlations grouped has none).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        count: u64,
    },
    /// An alert as it stands (triage state, history, count): what a compacted journal holds
    /// instead of the alert's own entry, its updates and its repeats.
    Snapshot {
        record: Box<AlertRecord>,
        /// The newest alert of its rule for its entity: the one a repeat may join.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        group_head: bool,
        /// [`id_hash`]es of the alerts grouped into it, so a replayed one is still not counted
        /// twice.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        absorbed: Vec<u64>,
    },
}

/// A tenant's journal is rewritten compact once it holds this many lines more than twice its
/// alerts (about 2.5 MB of repeat lines at the least).
const COMPACT_MIN_EXCESS_LINES: u64 = 10_000;

/// In-memory alerts of every tenant.
#[derive(Default)]
pub struct AlertBook {
    tenants: HashMap<String, TenantAlerts>,
    /// Repeats of a rule's alert for one entity this close to the group's occurrences are
    /// grouped into it (`None`: every alert stands alone).
    group_window: Option<chrono::TimeDelta>,
}

#[derive(Default)]
struct TenantAlerts {
    records: HashMap<String, AlertRecord>,
    /// (rule id, entity) -> the alerts of that rule for that entity later repeats may join,
    /// oldest first, at most [`MAX_GROUP_HEADS`]: the newest, and those a backfill raised
    /// beside it (each joins the one whose window it falls in).
    groups: HashMap<(String, String), Vec<String>>,
    /// Hashes of the alert ids grouped into another, so a replayed one is not counted twice.
    absorbed: HashSet<u64>,
    /// Alert id -> the hashes in `absorbed` grouped into it (kept in its snapshot, dropped with
    /// it at retention).
    absorbed_into: HashMap<String, Vec<u64>>,
    /// Lines in the tenant's journal file.
    journal_lines: u64,
}

impl TenantAlerts {
    /// Replay one journal entry (on load, and after a write is durable).
    fn apply(&mut self, entry: JournalEntry) {
        match entry {
            JournalEntry::Alert { alert } => {
                if groups_repeats(alert.detector) {
                    let key = (alert.rule_id.clone(), group_entity(&alert.entity));
                    self.add_group_head(key, &alert.id);
                }
                self.records
                    .entry(alert.id.clone())
                    .or_insert_with(|| new_record(*alert));
            }
            JournalEntry::Update { id, at, by, update } => {
                if let Some(r) = self.records.get_mut(&id) {
                    apply_update(r, &update, &by, at);
                }
            }
            JournalEntry::Repeat {
                id,
                alert_id,
                at,
                event_ids,
                lines,
                count,
            } => {
                let hash = id_hash(&alert_id);
                if !self.absorbed.insert(hash) {
                    return;
                }
                if let Some(r) = self.records.get_mut(&id) {
                    self.absorbed_into.entry(id).or_default().push(hash);
                    r.note_occurrence(at);
                    let a = &mut r.alert;
                    a.count += count;
                    let room = MAX_GROUPED_EVIDENCE.saturating_sub(a.event_ids.len());
                    a.event_ids.extend(event_ids.into_iter().take(room));
                    let room = MAX_GROUPED_EVIDENCE.saturating_sub(a.lines.len());
                    a.lines.extend(lines.into_iter().take(room));
                }
            }
            JournalEntry::Snapshot {
                record,
                group_head,
                absorbed,
            } => {
                let id = record.alert.id.clone();
                if group_head {
                    let key = (
                        record.alert.rule_id.clone(),
                        group_entity(&record.alert.entity),
                    );
                    self.add_group_head(key, &id);
                }
                if !absorbed.is_empty() {
                    self.absorbed.extend(&absorbed);
                    self.absorbed_into
                        .entry(id.clone())
                        .or_default()
                        .extend(absorbed);
                }
                self.records.insert(id, *record);
            }
        }
    }

    /// `id` is an alert later repeats of its rule and entity may join (QA: an occurrence dated
    /// before the open alert, a backfill, took its place, so the next live repeat raised a new
    /// alert; kept as the only one, the backfill's next batch raised new ones).
    fn add_group_head(&mut self, key: (String, String), id: &str) {
        let records = &self.records;
        let heads = self.groups.entry(key).or_default();
        if !heads.iter().any(|h| h == id) {
            heads.push(id.to_string());
        }
        if heads.len() > MAX_GROUP_HEADS {
            // A closed alert's group is over (its record may be gone): it goes first; else the
            // group that fired longest ago, never the one just added (QA: the open live alert,
            // added first, was dropped when a backfill raised eight more).
            let open_since = |h: &String| {
                records.get(h).and_then(|r| {
                    matches!(
                        r.alert.status,
                        AlertStatus::Open | AlertStatus::Acknowledged
                    )
                    .then(|| r.last_occurrence())
                })
            };
            let at = heads
                .iter()
                .position(|h| h != id && open_since(h).is_none())
                .or_else(|| {
                    heads
                        .iter()
                        .enumerate()
                        .filter(|(_, h)| *h != id)
                        .min_by_key(|(_, h)| open_since(h))
                        .map(|(i, _)| i)
                });
            if let Some(at) = at {
                heads.remove(at);
            }
        }
    }

    fn knows(&self, id: &str) -> bool {
        self.records.contains_key(id) || self.absorbed.contains(&id_hash(id))
    }

    /// Whether the journal holds so many lines more than alerts that it is worth rewriting.
    fn journal_is_bloated(&self) -> bool {
        self.journal_lines >= 2 * self.records.len() as u64 + COMPACT_MIN_EXCESS_LINES
    }

    /// Drop closed alerts whose last occurrence is on a day expired for `retention_days`;
    /// returns how many. Open and acknowledged alerts stay: retention never takes work out of
    /// an analyst's queue.
    fn expire(&mut self, now: DateTime<Utc>, retention_days: u32) -> usize {
        let expired: Vec<String> = self
            .records
            .values()
            .filter(|r| {
                matches!(
                    r.alert.status,
                    AlertStatus::Resolved | AlertStatus::FalsePositive
                ) && crate::retention::is_expired(
                    r.last_occurrence().date_naive(),
                    retention_days,
                    now,
                )
            })
            .map(|r| r.alert.id.clone())
            .collect();
        for id in &expired {
            if let Some(r) = self.records.remove(id) {
                let key = (r.alert.rule_id, group_entity(&r.alert.entity));
                if let Some(heads) = self.groups.get_mut(&key) {
                    heads.retain(|h| h != id);
                    if heads.is_empty() {
                        self.groups.remove(&key);
                    }
                }
            }
            for hash in self.absorbed_into.remove(id).unwrap_or_default() {
                self.absorbed.remove(&hash);
            }
        }
        expired.len()
    }

    /// Rewrite the journal at `path` as one snapshot per alert, oldest first.
    fn rewrite_journal(&mut self, path: &Path) -> Result<()> {
        let heads: HashSet<&String> = self.groups.values().flatten().collect();
        let mut records: Vec<&AlertRecord> = self.records.values().collect();
        records.sort_by(|a, b| {
            (a.alert.timestamp, &a.alert.id).cmp(&(b.alert.timestamp, &b.alert.id))
        });
        let entries: Vec<JournalEntry> = records
            .into_iter()
            .map(|r| JournalEntry::Snapshot {
                record: Box::new(r.clone()),
                group_head: heads.contains(&r.alert.id),
                absorbed: self
                    .absorbed_into
                    .get(&r.alert.id)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        journal::rewrite(path, &entries)?;
        self.journal_lines = entries.len() as u64;
        Ok(())
    }
}

/// A grouping window of `seconds` (`None` for 0, or past what a time span holds).
/// Alerts of one rule and entity that later repeats may join at once (see
/// `TenantAlerts::groups`).
const MAX_GROUP_HEADS: usize = 8;

/// Whether the store groups a detector's repeats into its open alert. A correlation fires again
/// each time its condition holds anew (every 10 failures of a burst): those are repeats too.
/// Behavioural and source-health alerts are not: they say "how many" in one alert by their own
/// rules.
fn groups_repeats(detector: DetectorKind) -> bool {
    matches!(detector, DetectorKind::Sigma | DetectorKind::Correlation)
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

fn group_window(seconds: u64) -> Option<chrono::TimeDelta> {
    i64::try_from(seconds)
        .ok()
        .and_then(chrono::TimeDelta::try_seconds)
        .filter(|w| *w > chrono::TimeDelta::zero())
}

/// A 64-bit hash of an alert id: the absorbed ids of a busy rule can number millions, and the
/// set is rebuilt from the journal at every start. Stable across builds (snapshots keep it).
fn id_hash(id: &str) -> u64 {
    let h = blake3::hash(id.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or_default())
}

/// A group's span of occurrences while a batch is being decided.
struct OpenGroup {
    id: String,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

/// Sort key, also what a cursor encodes: (severity rank, micros, id), compared per sort order.
type SortKey = (u8, i64, String);

fn sort_key(r: &AlertRecord) -> SortKey {
    (
        r.alert.severity as u8,
        r.alert.timestamp.timestamp_micros(),
        r.alert.id.clone(),
    )
}

/// `Less` means "comes first" in the requested order.
fn compare(sort: AlertSort, a: &SortKey, b: &SortKey) -> std::cmp::Ordering {
    match sort {
        AlertSort::Newest => (b.1, &b.2).cmp(&(a.1, &a.2)),
        AlertSort::Oldest => (a.1, &a.2).cmp(&(b.1, &b.2)),
        AlertSort::Severity => (b.0, b.1, &b.2).cmp(&(a.0, a.1, &a.2)),
    }
}

/// `tag.severity.micros.id.check`: `check` is the first 8 hex digits of the BLAKE3 of the rest.
/// Alert ids are free text to this parser (it keeps whatever follows the time), so without it
/// a cursor with characters added or cut off still parsed, as another position: a page then
/// began at, and repeated, the previous page's last alert.
fn encode_cursor(sort: AlertSort, k: &SortKey) -> String {
    let body = format!("{}.{}.{}.{}", sort.tag(), k.0, k.1, k.2);
    let check = cursor_check(&body);
    format!("{body}.{check}")
}

fn cursor_check(body: &str) -> String {
    blake3::hash(body.as_bytes()).to_hex()[..8].to_string()
}

fn decode_cursor(sort: AlertSort, c: &str) -> Result<SortKey> {
    let bad = || {
        StoreError::InvalidQuery(
            "bad cursor: pass the `next_cursor` of the previous page unchanged".into(),
        )
    };
    let (body, check) = c.rsplit_once('.').ok_or_else(bad)?;
    if check != cursor_check(body) {
        return Err(bad());
    }
    let mut parts = body.splitn(4, '.');
    let tag = parts.next().ok_or_else(bad)?;
    let known = [AlertSort::Newest, AlertSort::Oldest, AlertSort::Severity];
    if !known.iter().any(|s| s.tag() == tag) {
        return Err(bad());
    }
    if tag != sort.tag() {
        return Err(StoreError::InvalidQuery(
            "cursor belongs to another sort order".into(),
        ));
    }
    let sev: u8 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let micros: i64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let id = parts.next().ok_or_else(bad)?.to_string();
    Ok((sev, micros, id))
}

impl AlertBook {
    /// Replay every tenant journal under `root` (`writer`: see [`journal::load_as`]).
    pub fn load(root: &Path, writer: bool) -> Result<AlertBook> {
        let mut book = AlertBook::default();
        for (name, dir) in crate::layout::list_dirs(root)? {
            let Some(tenant) = crate::layout::partition_value(&name, "tenant") else {
                continue;
            };
            let path = dir.join("journal.jsonl");
            let entries: Vec<JournalEntry> = journal::load_as(&path, writer)?;
            let alerts = book.tenants.entry(tenant).or_default();
            alerts.journal_lines = entries.len() as u64;
            for e in entries {
                alerts.apply(e);
            }
            if writer && alerts.journal_is_bloated() {
                let lines = alerts.journal_lines;
                alerts.rewrite_journal(&path)?;
                tracing::info!(
                    journal = %path.display(),
                    lines_before = lines,
                    lines_after = alerts.journal_lines,
                    "alert journal compacted"
                );
            }
        }
        Ok(book)
    }

    /// Retention for alerts: drop the closed alerts (resolved, false positive) whose last
    /// occurrence is on a day expired at `now` for `retention_days` (`0`: none), and rewrite
    /// compact each journal that lost alerts or holds many more lines than alerts. Open and
    /// acknowledged alerts are kept whatever their age.
    pub fn expire(
        &mut self,
        journal_path: impl Fn(&str) -> PathBuf,
        now: DateTime<Utc>,
        retention_days: u32,
    ) -> Result<AlertsExpired> {
        let mut done = AlertsExpired::default();
        for (tenant, alerts) in &mut self.tenants {
            let removed = alerts.expire(now, retention_days);
            if removed > 0 || alerts.journal_is_bloated() {
                let lines = alerts.journal_lines;
                alerts.rewrite_journal(&journal_path(tenant))?;
                done.journal_lines_removed += lines.saturating_sub(alerts.journal_lines);
                done.journals_rewritten += 1;
            }
            done.alerts_removed += removed as u64;
        }
        Ok(done)
    }

    /// Group repeats of a Sigma rule's alert for one entity within `seconds` of the group's
    /// occurrences into the open (or acknowledged) alert (`0`: no grouping).
    pub fn set_group_seconds(&mut self, seconds: u64) {
        self.group_window = group_window(seconds);
    }

    pub fn tenants(&self) -> impl Iterator<Item = &String> {
        self.tenants.keys()
    }

    pub fn len(&self) -> usize {
        self.tenants.values().map(|t| t.records.len()).sum()
    }

    /// Store alerts not seen before, grouping repeats (see [`Self::set_group_seconds`]). Durable
    /// on return.
    pub fn insert(
        &mut self,
        journal_path: impl Fn(&str) -> std::path::PathBuf,
        alerts: &[Alert],
    ) -> Result<AlertsInserted> {
        let mut by_tenant: HashMap<&str, Vec<JournalEntry>> = HashMap::new();
        let mut seen = HashSet::new();
        // Per tenant, rule and entity: the stored group repeats may join, and the groups this
        // batch opened. Several, since a batch may hold occurrences hours apart (a backfill
        // beside live records), each joining the group whose window it falls in.
        let mut open: HashMap<(&str, &str, String), Vec<OpenGroup>> = HashMap::new();
        let mut done = AlertsInserted::default();
        for a in alerts {
            if a.id.is_empty() {
                return Err(StoreError::InvalidBatch(format!(
                    "alert for rule `{}` has no id (not sealed)",
                    a.rule_id
                )));
            }
            if self.tenants.get(&a.tenant).is_some_and(|t| t.knows(&a.id)) {
                done.known.push(a.id.clone());
                continue;
            }
            if !seen.insert((a.tenant.as_str(), a.id.as_str())) {
                continue;
            }
            let key = (
                a.tenant.as_str(),
                a.rule_id.as_str(),
                group_entity(&a.entity),
            );
            // The rule's own window, else the store's.
            let window = match a.alert_group_seconds {
                Some(secs) => group_window(secs),
                None => self.group_window,
            };
            let grouping = window.filter(|_| groups_repeats(a.detector));
            if let Some(window) = grouping {
                let groups = open.entry(key).or_insert_with(|| self.open_groups(a));
                // The newest group whose window the occurrence falls in.
                if let Some(g) = groups
                    .iter_mut()
                    .rev()
                    .find(|g| a.timestamp >= g.first - window && a.timestamp <= g.last + window)
                {
                    g.first = g.first.min(a.timestamp);
                    g.last = g.last.max(a.timestamp);
                    by_tenant
                        .entry(&a.tenant)
                        .or_default()
                        .push(JournalEntry::Repeat {
                            id: g.id.clone(),
                            alert_id: a.id.clone(),
                            at: a.timestamp,
                            event_ids: a.event_ids.clone(),
                            lines: a.lines.clone(),
                            count: a.count.max(1),
                        });
                    done.grouped.push(a.id.clone());
                    continue;
                }
                groups.push(OpenGroup {
                    id: a.id.clone(),
                    first: a.timestamp,
                    last: a.timestamp,
                });
            }
            by_tenant
                .entry(&a.tenant)
                .or_default()
                .push(JournalEntry::Alert {
                    alert: Box::new(a.clone()),
                });
            done.written += 1;
        }
        for (tenant, entries) in by_tenant {
            journal::append(&journal_path(tenant), &entries)?;
            let book = self.tenants.entry(tenant.to_string()).or_default();
            book.journal_lines += entries.len() as u64;
            // The count before this batch of every alert it may grow: the stored ones it
            // repeats, and the new ones (their own count).
            let mut before: HashMap<String, u64> = HashMap::new();
            let mut raised_here = HashSet::new();
            for e in &entries {
                match e {
                    JournalEntry::Alert { alert } => {
                        before.insert(alert.id.clone(), alert.count);
                        raised_here.insert(alert.id.clone());
                    }
                    JournalEntry::Repeat { id, .. } => {
                        if let Some(r) = book.records.get(id) {
                            before.entry(id.clone()).or_insert(r.alert.count);
                        }
                    }
                    JournalEntry::Update { .. } | JournalEntry::Snapshot { .. } => {}
                }
            }
            for e in entries {
                book.apply(e);
            }
            for (id, was) in before {
                if let Some(r) = book.records.get(&id) {
                    if passes_power_of_ten(was, r.alert.count) {
                        // Receivers are told it fires still: when it last did, too.
                        let mut firing = r.alert.clone();
                        firing.last_seen = Some(r.last_occurrence());
                        done.still_firing.push(firing);
                    }
                    if raised_here.contains(&id) && r.alert.count != was {
                        done.grown.push(r.alert.clone());
                    }
                }
                done.touched.push((tenant.to_string(), id));
            }
        }
        Ok(done)
    }

    /// The stored alerts a new one of the same rule and entity could be grouped into, oldest
    /// first: those open or acknowledged (a resolved alert ends its group).
    fn open_groups(&self, a: &Alert) -> Vec<OpenGroup> {
        let Some(t) = self.tenants.get(&a.tenant) else {
            return Vec::new();
        };
        let Some(heads) = t.groups.get(&(a.rule_id.clone(), group_entity(&a.entity))) else {
            return Vec::new();
        };
        heads
            .iter()
            .filter_map(|id| t.records.get(id))
            .filter(|r| {
                matches!(
                    r.alert.status,
                    AlertStatus::Open | AlertStatus::Acknowledged
                )
            })
            .map(|r| OpenGroup {
                id: r.alert.id.clone(),
                // From its earliest occurrence, a repeat dated before the alert's own time
                // included (QA: a backfill split newest-first over batches raised an extra
                // alert that one batch did not).
                first: r.first_occurrence(),
                last: r.last_occurrence(),
            })
            .collect()
    }

    /// `tenant`'s alerts by the day of their `@timestamp` (first occurrence), each day's oldest
    /// first: one pass over the tenant's alerts, whatever the number of days asked about.
    pub fn records_by_day(
        &self,
        tenant: &str,
    ) -> std::collections::BTreeMap<chrono::NaiveDate, Vec<&AlertRecord>> {
        let mut by_day: std::collections::BTreeMap<_, Vec<&AlertRecord>> = Default::default();
        for r in self
            .tenants
            .get(tenant)
            .into_iter()
            .flat_map(|t| t.records.values())
        {
            by_day
                .entry(r.alert.timestamp.date_naive())
                .or_default()
                .push(r);
        }
        for records in by_day.values_mut() {
            records.sort_by(|a, b| {
                (a.alert.timestamp, &a.alert.id).cmp(&(b.alert.timestamp, &b.alert.id))
            });
        }
        by_day
    }

    pub fn get(&self, tenant: &str, id: &str) -> Option<&AlertRecord> {
        self.tenants.get(tenant)?.records.get(id)
    }

    /// Apply a change, journal it durably, and return the new record (`None`: unknown alert).
    pub fn update(
        &mut self,
        journal_path: &Path,
        tenant: &str,
        id: &str,
        update: &AlertUpdate,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<AlertRecord>> {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return Ok(None);
        };
        let Some(record) = t.records.get_mut(id) else {
            return Ok(None);
        };
        let mut probe = record.clone();
        if apply_update(&mut probe, update, actor, at) == 0 {
            return Ok(Some(probe));
        }
        let entry = JournalEntry::Update {
            id: id.to_string(),
            at,
            by: actor.to_string(),
            update: update.clone(),
        };
        journal::append(journal_path, &[entry])?;
        *record = probe;
        t.journal_lines += 1;
        Ok(Some(record.clone()))
    }

    pub fn list(&self, tenant: &str, q: &AlertQuery) -> Result<Page<AlertRecord>> {
        let limit = q.limit.clamp(1, MAX_PAGE_LIMIT);
        let after = q
            .cursor
            .as_deref()
            .map(|c| decode_cursor(q.sort, c))
            .transpose()?;
        let (text, entity) = filter_values(q);
        let Some(alerts) = self.tenants.get(tenant).map(|t| &t.records) else {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        let mut hits: Vec<(SortKey, &AlertRecord)> = alerts
            .values()
            .filter(|r| matches(q, r, text.as_deref(), entity.as_deref()))
            .map(|r| (sort_key(r), r))
            .filter(|(k, _)| {
                after
                    .as_ref()
                    .is_none_or(|c| compare(q.sort, k, c) == std::cmp::Ordering::Greater)
            })
            .collect();
        hits.sort_by(|a, b| compare(q.sort, &a.0, &b.0));
        let more = hits.len() > limit;
        hits.truncate(limit);
        let next_cursor = if more {
            hits.last().map(|(k, _)| encode_cursor(q.sort, k))
        } else {
            None
        };
        Ok(Page {
            items: hits.into_iter().map(|(_, r)| r.clone()).collect(),
            next_cursor,
        })
    }

    /// Counts of the tenant's alerts that `q`'s filters select (its page fields are not used):
    /// by severity, status, rule and entity, for the morning look at the queue.
    pub fn summary(&self, tenant: &str, q: &AlertQuery) -> AlertSummary {
        let (text, entity) = filter_values(q);
        let mut out = AlertSummary::default();
        // Per rule: its count, highest severity, and what its alerts' titles share.
        let mut rules: HashMap<&str, RuleCount> = HashMap::new();
        // By entity whatever its case, shown as first seen.
        let mut entities: HashMap<String, (&str, usize)> = HashMap::new();
        let selected = self
            .tenants
            .get(tenant)
            .into_iter()
            .flat_map(|alerts| alerts.records.values())
            .filter(|r| matches(q, r, text.as_deref(), entity.as_deref()))
            .map(|r| &r.alert);
        for a in selected {
            out.total += 1;
            *out.by_severity
                .entry(a.severity.as_str().into())
                .or_default() += 1;
            *out.by_status
                .entry(status_name(a.status).into())
                .or_default() += 1;
            let title = a.title.strip_suffix(REPEATED_TITLE).unwrap_or(&a.title);
            let rule = rules.entry(&a.rule_id).or_insert_with(|| RuleCount {
                rule_id: a.rule_id.clone(),
                title: title.to_string(),
                severity: a.severity,
                count: 0,
            });
            rule.count += 1;
            rule.severity = rule.severity.max(a.severity);
            // A detector's alerts say what kind each is ("... for one user", "... from one
            // source IP"): the row says what they share (QA: one alert's title stood for all).
            rule.title = shared_words(&rule.title, title);
            entities
                .entry(group_entity(&a.entity))
                .or_insert((&a.entity, 0))
                .1 += 1;
            out.oldest = Some(out.oldest.map_or(a.timestamp, |t| t.min(a.timestamp)));
            out.newest = Some(out.newest.map_or(a.timestamp, |t| t.max(a.timestamp)));
        }
        out.by_rule = rules.into_values().collect();
        out.by_rule
            .sort_by(|a, b| b.count.cmp(&a.count).then(a.rule_id.cmp(&b.rule_id)));
        out.by_rule.truncate(SUMMARY_TOP_RULES);
        let mut entities: Vec<EntityCount> = entities
            .into_values()
            .map(|(entity, count)| EntityCount {
                entity: entity.to_string(),
                count,
            })
            .collect();
        entities.sort_by(|a, b| b.count.cmp(&a.count).then(a.entity.cmp(&b.entity)));
        entities.truncate(SUMMARY_TOP_ENTITIES);
        out.by_entity = entities;
        out
    }
}

/// Most rules a summary lists (the busiest).
pub const SUMMARY_TOP_RULES: usize = 50;
/// Most entities a summary lists (the busiest).
pub const SUMMARY_TOP_ENTITIES: usize = 20;

/// Counts of a tenant's alerts ([`AlertBook::summary`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertSummary {
    pub total: usize,
    /// Severity name -> alerts.
    pub by_severity: std::collections::BTreeMap<String, usize>,
    /// Status name -> alerts.
    pub by_status: std::collections::BTreeMap<String, usize>,
    /// The busiest rules first (at most [`SUMMARY_TOP_RULES`]).
    pub by_rule: Vec<RuleCount>,
    /// The busiest entities first (at most [`SUMMARY_TOP_ENTITIES`]).
    pub by_entity: Vec<EntityCount>,
    /// Time of the oldest and newest selected alert.
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
}

/// Alerts of one rule in a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleCount {
    pub rule_id: String,
    pub title: String,
    /// The highest severity among them.
    pub severity: Severity,
    pub count: usize,
}

/// Alerts about one entity in a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityCount {
    pub entity: String,
    pub count: usize,
}

/// An entity as alerts are grouped and counted by it: whatever its case (`GRP-TESTER` and
/// `grp-tester` are one GitHub login, `Dana@Acme.example` one mailbox), as `--entity` finds it
/// (QA: two open alerts for one login, and the summary counted it twice).
fn group_entity(entity: &str) -> String {
    entity.to_lowercase()
}

/// What a grouped alert's title ends with once it has repeats.
const REPEATED_TITLE: &str = " (repeated)";

/// The words two titles start with alike (the first when they share none).
fn shared_words(a: &str, b: &str) -> String {
    let shared: Vec<&str> = a
        .split(' ')
        .zip(b.split(' '))
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    if shared.is_empty() {
        a.to_string()
    } else {
        shared.join(" ")
    }
}

fn status_name(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Open => "open",
        AlertStatus::Acknowledged => "acknowledged",
        AlertStatus::Resolved => "resolved",
        AlertStatus::FalsePositive => "false_positive",
    }
}

/// Whether a record passes the filters of `q` (`text` and `entity` lowercased). The time range
/// selects alerts with an occurrence in it: a grouped alert spans its first (`@timestamp`, or
/// `first_seen`) to its last (`last_seen`) occurrence, so one still firing shows in "the last
/// hour" although it began earlier.
/// `q`'s text terms and entity (lowercased), each with the forms it may be stored in.
fn filter_values(q: &AlertQuery) -> (Option<Vec<Vec<String>>>, Option<Vec<String>>) {
    let with_stored_forms = |value: String| {
        let stored = q
            .stored_forms
            .iter()
            .filter(|(v, _)| *v == value)
            .map(|(_, form)| form.to_lowercase())
            .collect::<Vec<_>>();
        std::iter::once(value).chain(stored).collect::<Vec<_>>()
    };
    let text = q.text.as_deref().map(|t| {
        text_terms(t)
            .into_iter()
            .map(with_stored_forms)
            .collect::<Vec<_>>()
    });
    let entity = q
        .entity
        .as_deref()
        .map(|e| with_stored_forms(e.to_lowercase()));
    (text, entity)
}

fn matches(
    q: &AlertQuery,
    r: &AlertRecord,
    text: Option<&[Vec<String>]>,
    entity: Option<&[String]>,
) -> bool {
    let a = &r.alert;
    q.from.is_none_or(|f| r.last_occurrence() >= f)
        && q.to.is_none_or(|t| r.first_occurrence() < t)
        && q.severity.is_none_or(|s| a.severity >= s)
        && (q.statuses.is_empty() || q.statuses.contains(&a.status))
        && q.rule_id.as_deref().is_none_or(|x| a.rule_id == x)
        && q.source
            .as_deref()
            .is_none_or(|x| a.source.eq_ignore_ascii_case(x))
        && entity.is_none_or(|forms| forms.contains(&a.entity.to_lowercase()))
        && text.is_none_or(|terms| {
            terms
                .iter()
                .all(|forms| forms.iter().any(|t| record_text_matches(r, t)))
        })
}

/// The terms of an alert text search, lowercased: its words, and each `"quoted phrase"` as one
/// term; an alert matches when each is found in some part of it. (The whole text as one
/// substring found nothing for `spray password` or a quoted phrase, where event search, in
/// tantivy's syntax, finds them.)
fn text_terms(text: &str) -> Vec<String> {
    text_parts(&text.to_lowercase())
}

/// The words of a text search and its `"quoted phrases"` (each phrase one part, its spaces made
/// single), as written.
pub(crate) fn text_parts(text: &str) -> Vec<String> {
    let mut terms = Vec::new();
    for (i, part) in text.split('"').enumerate() {
        if i % 2 == 1 {
            let phrase = part.split_whitespace().collect::<Vec<_>>().join(" ");
            if !phrase.is_empty() {
                terms.push(phrase);
            }
        } else {
            terms.extend(part.split_whitespace().map(str::to_string));
        }
    }
    terms
}

/// Free text (`needle` lowercased): what the alert says (title, rule, entity, description,
/// explanation, matched values), how it is classified (tags such as `attack.persistence`,
/// technique ids such as `T1098.001`: an analyst hunts "everything T1098") and its triage
/// (assignee, notes).
fn record_text_matches(r: &AlertRecord, needle: &str) -> bool {
    let a = &r.alert;
    // A phrase matches across a line break or doubled spaces (a note of several lines, a
    // description written as a YAML block), as its words are written.
    let phrase = needle.contains(' ');
    let hay = |s: &str| {
        let lower = s.to_lowercase();
        if phrase {
            lower
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(needle)
        } else {
            lower.contains(needle)
        }
    };
    hay(&a.title)
        || a.tags.iter().any(|t| hay(t))
        || a.threat_technique_id.iter().any(|t| hay(t))
        || r.assignee.as_deref().is_some_and(hay)
        || r.notes.iter().any(|n| hay(&n.text))
        || hay(&a.rule_id)
        || hay(&a.entity)
        || a.description.as_deref().is_some_and(hay)
        || a.explanation.as_deref().is_some_and(hay)
        || a.matched_fields.values().any(|v| match v {
            serde_json::Value::String(s) => hay(s),
            other => hay(&other.to_string()),
        })
}

fn new_record(alert: Alert) -> AlertRecord {
    // An alert that already spans occurrences (UEBA's grouped repeats) brings its last one.
    let last_seen = alert.last_seen.filter(|last| *last > alert.timestamp);
    AlertRecord {
        alert,
        assignee: None,
        notes: Vec::new(),
        history: Vec::new(),
        last_seen,
        first_seen: None,
    }
}

/// What [`AlertBook::expire`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AlertsExpired {
    /// Closed alerts past retention, removed.
    pub alerts_removed: u64,
    /// Tenant journals rewritten with one line per alert.
    pub journals_rewritten: u64,
    /// Journal lines those rewrites saved.
    pub journal_lines_removed: u64,
}

/// What [`AlertBook::insert`] did with a batch's alerts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertsInserted {
    /// Alerts stored on their own.
    pub written: usize,
    /// Ids of the alerts counted as repeats of a stored one instead.
    pub grouped: Vec<String>,
    /// Ids of the alerts already stored or counted before (a batch detected again after a
    /// restart lost the detection state): nothing changed, nobody is told again.
    pub known: Vec<String>,
    /// Stored alerts whose repeats in this batch took their `count` past a power of ten (10,
    /// 100, 1000, ...), as they are now: still firing, which their destinations hear of again.
    pub still_firing: Vec<Alert>,
    /// (tenant, alert id) of every stored alert the batch added or grew.
    pub touched: Vec<(String, String)>,
    /// Alerts the batch raised that its own repeats grew, as stored (their `count` is not the
    /// one they were raised with): what destinations are sent in their place.
    pub grown: Vec<Alert>,
}

/// Whether a count that went from `was` to `now` passed 10, 100, 1000, ...: a group that keeps
/// growing is announced again at each tenfold, so a long attack is heard of a few times, not
/// once per repeat.
fn passes_power_of_ten(was: u64, now: u64) -> bool {
    let mut step: u64 = 10;
    while step <= now {
        if was < step {
            return true;
        }
        match step.checked_mul(10) {
            Some(next) => step = next,
            None => break,
        }
    }
    false
}

fn status_str(s: AlertStatus) -> String {
    match s {
        AlertStatus::Open => "open",
        AlertStatus::Acknowledged => "acknowledged",
        AlertStatus::Resolved => "resolved",
        AlertStatus::FalsePositive => "false_positive",
    }
    .to_string()
}

/// Apply an update, recording each actual change; returns how many changes were made.
fn apply_update(r: &mut AlertRecord, u: &AlertUpdate, by: &str, at: DateTime<Utc>) -> usize {
    let mut changes = 0;
    let mut record =
        |field: &str, from: Option<String>, to: Option<String>, r: &mut AlertRecord| {
            r.history.push(AlertChange {
                at,
                by: by.to_string(),
                field: field.to_string(),
                from,
                to,
            });
            changes += 1;
        };
    if let Some(status) = u.status {
        if status != r.alert.status {
            let from = Some(status_str(r.alert.status));
            r.alert.status = status;
            record("status", from, Some(status_str(status)), r);
        }
    }
    if let Some(assignee) = &u.assignee {
        let new = if assignee.is_empty() {
            None
        } else {
            Some(assignee.clone())
        };
        if new != r.assignee {
            let from = r.assignee.take();
            r.assignee = new.clone();
            record("assignee", from, new, r);
        }
    }
    if let Some(note) = &u.note {
        if !note.is_empty() {
            r.notes.push(Note {
                at,
                by: by.to_string(),
                text: note.clone(),
            });
            record("note", None, Some(note.clone()), r);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::{DetectorKind, EntityKind};

    /// A summary row names what its alerts share, not one alert's kind (QA: "Burst of failed
    /// logins from one source IP (repeated)" stood for per-user bursts too).
    #[test]
    fn a_rules_row_is_titled_by_what_its_alerts_share() {
        let titles = [
            "Burst of failed logins for one user",
            "Burst of failed logins from one source IP (repeated)",
            "Burst of failed logins for one user (repeated)",
        ];
        let row = titles.iter().fold(None::<String>, |row, t| {
            let t = t.strip_suffix(REPEATED_TITLE).unwrap_or(t);
            Some(row.map_or(t.to_string(), |r| shared_words(&r, t)))
        });
        assert_eq!(row.as_deref(), Some("Burst of failed logins"));
        assert_eq!(shared_words("Okta login", "Okta login"), "Okta login");
        assert_eq!(shared_words("A b", "C d"), "A b");
    }

    fn alert(id_seed: &str, sev: Severity, minute: u32) -> Alert {
        let ts = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 1, 10, minute, 0).unwrap();
        let mut a = Alert::new(
            format!("rule-{id_seed}"),
            format!("Title {id_seed}"),
            sev,
            DetectorKind::Sigma,
            "okta",
            "acme",
            ts,
            "alice",
            EntityKind::User,
        );
        a.event_ids.push(id_seed.to_string());
        a.seal()
    }

    #[test]
    fn free_text_finds_tags_techniques_assignee_and_notes() {
        let mut a = alert("x", Severity::High, 1);
        a.tags = vec!["attack.persistence".into(), "attack.t1098.001".into()];
        a.threat_technique_id = vec!["T1098.001".into()];
        let mut r = new_record(a);
        r.assignee = Some("Dana".into());
        r.notes.push(Note {
            at: r.alert.timestamp,
            by: "bob".into(),
            text: "Escalated to IR".into(),
        });
        for hit in [
            "t1098",
            "attack.persistence",
            "dana",
            "escalated",
            "title x",
        ] {
            assert!(record_text_matches(&r, hit), "{hit}");
        }
        for miss in ["t1110", "carol", "phishing"] {
            assert!(!record_text_matches(&r, miss), "{miss}");
        }
        // Several words each match somewhere, in any order; a quoted phrase as written.
        let all = |q: &str| text_terms(q).iter().all(|t| record_text_matches(&r, t));
        assert!(all("dana t1098"));
        assert!(all("Escalated  dana"));
        assert!(all("\"escalated to  ir\" dana"));

        assert!(!all("dana carol"));
        assert!(!all("\"to escalated\""));
        assert_eq!(text_terms(" a \"b  c\" d\""), vec!["a", "b c", "d"]);
        r.notes[0].text = "Escalated\nto   IR".into();
        assert!(text_terms("\"escalated to ir\"")
            .iter()
            .all(|t| record_text_matches(&r, t)));
    }

    /// An alert of rule `rule` for `entity` at `minute` past 10:00, caused by event `event`.
    fn repeat(rule: &str, entity: &str, minute: i64, event: &str) -> Alert {
        let ts = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 1, 10, 0, 0).unwrap()
            + chrono::TimeDelta::minutes(minute);
        let mut a = Alert::new(
            rule,
            "Okta login failed",
            Severity::Low,
            DetectorKind::Sigma,
            "okta",
            "acme",
            ts,
            entity,
            EntityKind::User,
        );
        a.event_ids.push(event.to_string());
        a.lines.push(minute as u64 + 1);
        a.seal()
    }

    /// One login, one group: a repeat whose entity differs in case only joins the open alert,
    /// in the same batch or a later one, and the summary counts the entity once as first seen
    /// (QA: `grp-tester` and `GRP-TESTER` made two open alerts).
    #[test]
    fn an_entity_groups_whatever_its_case() {
        let dir = tempfile::tempdir().unwrap();
        let journal = |_: &str| dir.path().join("j.jsonl");
        let mut book = AlertBook::default();
        book.set_group_seconds(3600);
        let first = book
            .insert(
                journal,
                &[
                    repeat("fail", "grp-tester", 0, "e0"),
                    repeat("fail", "GRP-Tester", 1, "e1"),
                ],
            )
            .unwrap();
        assert_eq!(first.grouped.len(), 1, "{first:?}");
        let later = book
            .insert(journal, &[repeat("fail", "GRP-TESTER", 25, "e2")])
            .unwrap();
        assert_eq!(later.grouped.len(), 1, "{later:?}");
        let summary = book.summary("acme", &AlertQuery::default());
        assert_eq!(summary.total, 1, "{summary:?}");
        assert_eq!(summary.by_entity.len(), 1);
        assert_eq!(summary.by_entity[0].entity, "grp-tester");
    }

    /// QA: a batch holding a repeat dated hours before the open alert (a backfill) and then one
    /// within the open alert's window raised a second alert for the second: the older one took
    /// the open alert's place, in the batch and as the group later batches join.
    #[test]
    fn an_older_occurrence_does_not_take_the_open_alerts_place() {
        let dir = tempfile::tempdir().unwrap();
        let journal = |_: &str| dir.path().join("tenant=acme/journal.jsonl");
        std::fs::create_dir_all(dir.path().join("tenant=acme")).unwrap();
        let mut book = AlertBook::default();
        book.set_group_seconds(3600);
        let open = repeat("fail", "alice", 300, "e0");
        book.insert(journal, std::slice::from_ref(&open)).unwrap();
        let done = book
            .insert(
                journal,
                &[
                    repeat("fail", "alice", 120, "old"),
                    repeat("fail", "alice", 301, "e1"),
                ],
            )
            .unwrap();
        assert_eq!(
            done.written, 1,
            "the old one is an alert of its own: {done:?}"
        );
        assert_eq!(done.grouped, vec![repeat("fail", "alice", 301, "e1").id]);
        assert_eq!(book.get("acme", &open.id).unwrap().alert.count, 2);
        // The next batch's repeat joins the open alert too, not the older one.
        let done = book
            .insert(journal, &[repeat("fail", "alice", 302, "e2")])
            .unwrap();
        assert_eq!(done.grouped.len(), 1, "{done:?}");
        assert_eq!(book.get("acme", &open.id).unwrap().alert.count, 3);
        // The backfill's next occurrence, in a batch of its own, joins the backfill's alert
        // (QA: with the open alert the only group, it raised one alert per batch).
        let backfill = repeat("fail", "alice", 120, "old");
        let done = book
            .insert(journal, &[repeat("fail", "alice", 125, "old2")])
            .unwrap();
        assert_eq!(done.grouped.len(), 1, "{done:?}");
        assert_eq!(book.get("acme", &backfill.id).unwrap().alert.count, 2);
        // So it stays after the journal is read again.
        let mut reread = AlertBook::load(dir.path(), false).unwrap();
        reread.set_group_seconds(3600);
        let done = reread
            .insert(journal, &[repeat("fail", "alice", 303, "e3")])
            .unwrap();
        assert_eq!(done.grouped.len(), 1, "{done:?}");
        assert_eq!(reread.get("acme", &open.id).unwrap().alert.count, 4);
        let done = reread
            .insert(journal, &[repeat("fail", "alice", 126, "old3")])
            .unwrap();
        assert_eq!(done.grouped.len(), 1, "{done:?}");
        assert_eq!(reread.get("acme", &backfill.id).unwrap().alert.count, 3);
    }

    /// QA: with eight groups kept per rule and entity, the ninth (a backfill's) dropped the open
    /// live alert, added first, and its next repeat raised a second alert. A backfill split
    /// newest-first over batches joins its alert from the alert's earliest occurrence.
    #[test]
    fn the_open_alert_keeps_its_group_beside_many_backfilled_ones() {
        let dir = tempfile::tempdir().unwrap();
        let journal = |_: &str| dir.path().join("j.jsonl");
        let mut book = AlertBook::default();
        book.set_group_seconds(3600);
        let live = repeat("fail", "alice", 2000, "live");
        book.insert(journal, std::slice::from_ref(&live)).unwrap();
        for n in 0..(MAX_GROUP_HEADS as i64 + 2) {
            let done = book
                .insert(
                    journal,
                    &[repeat("fail", "alice", n * 100, &format!("b{n}"))],
                )
                .unwrap();
            assert_eq!(done.written, 1, "{done:?}");
        }
        let done = book
            .insert(journal, &[repeat("fail", "alice", 2001, "live2")])
            .unwrap();
        assert_eq!(done.grouped.len(), 1, "{done:?}");
        assert_eq!(book.get("acme", &live.id).unwrap().alert.count, 2);
        // Newest first: 1500, then 1450 and 1400 (the window from the earliest, 1450).
        let first = repeat("fail", "bob", 1500, "n0");
        book.insert(journal, std::slice::from_ref(&first)).unwrap();
        for (minute, event) in [(1450, "n1"), (1400, "n2")] {
            let done = book
                .insert(journal, &[repeat("fail", "bob", minute, event)])
                .unwrap();
            assert_eq!(done.grouped.len(), 1, "{minute}: {done:?}");
        }
        assert_eq!(book.get("acme", &first.id).unwrap().alert.count, 3);
    }

    #[test]
    fn a_group_growing_past_each_tenfold_is_announced_again() {
        let dir = tempfile::tempdir().unwrap();
        let journal = |_: &str| dir.path().join("j.jsonl");
        let mut book = AlertBook::default();
        book.set_group_seconds(3600);
        let fails = |minutes: std::ops::Range<i64>| -> Vec<Alert> {
            minutes
                .map(|m| repeat("fail", "alice", m, &format!("e{m}")))
                .collect()
        };
        // Begun and grown to 8 in one batch: nothing to announce again (the first is new).
        let done = book.insert(journal, &fails(0..8)).unwrap();
        assert!(done.still_firing.is_empty(), "{done:?}");
        // 8 -> 12 passes 10: announced once, as stored now.
        let done = book.insert(journal, &fails(8..12)).unwrap();
        assert_eq!(done.still_firing.len(), 1, "{done:?}");
        assert_eq!(done.still_firing[0].id, repeat("fail", "alice", 0, "e0").id);
        assert_eq!(done.still_firing[0].count, 12);
        // It says when it last fired; its own time stays the first occurrence.
        let (first, last) = (&fails(0..1)[0], &fails(11..12)[0]);
        assert_eq!(done.still_firing[0].last_seen, Some(last.timestamp));
        assert_eq!(done.still_firing[0].timestamp, first.timestamp);
        // 12 -> 99: no tenfold passed.
        let done = book.insert(journal, &fails(12..99)).unwrap();
        assert!(done.still_firing.is_empty());
        // 99 -> 100 passes 100; a replayed repeat counts nothing and announces nothing.
        let done = book.insert(journal, &fails(99..100)).unwrap();
        assert_eq!(done.still_firing[0].count, 100);
        let done = book.insert(journal, &fails(99..100)).unwrap();
        assert!(done.still_firing.is_empty() && done.grouped.is_empty());
        // A group begun in a batch that takes it past 10 at once is announced too.
        let bob: Vec<Alert> = (0..11)
            .map(|m| repeat("fail", "bob", m, &format!("b{m}")))
            .collect();
        let done = book.insert(journal, &bob).unwrap();
        assert_eq!(done.still_firing.len(), 1);
        assert_eq!(done.still_firing[0].count, 11);
    }

    /// Every alert of `book`'s tenant `acme`, sorted by id.
    fn all_records(book: &AlertBook) -> Vec<AlertRecord> {
        let mut v: Vec<AlertRecord> = book.tenants["acme"].records.values().cloned().collect();
        v.sort_by(|a, b| a.alert.id.cmp(&b.alert.id));
        v
    }

    fn journal_lines(path: &Path) -> usize {
        std::fs::read_to_string(path).unwrap().lines().count()
    }

    #[test]
    fn a_bloated_journal_is_rewritten_as_one_snapshot_per_alert_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant=acme").join("journal.jsonl");
        let journal = |_: &str| path.clone();
        let mut book = AlertBook::default();
        book.set_group_seconds(3600);
        // A noisy rule: one alert for Alice with many repeats (a journal line each), one for
        // Bob triaged twice, one on its own for another rule.
        let repeats = COMPACT_MIN_EXCESS_LINES as i64 + 50;
        let alice: Vec<Alert> = (0..repeats)
            .map(|i| repeat("fail", "alice", i % 50, &format!("e{i}")))
            .collect();
        book.insert(journal, &alice).unwrap();
        let bob = repeat("fail", "bob", 3, "b3");
        let other = repeat("mfa", "alice", 4, "m4");
        book.insert(journal, &[bob.clone(), other.clone()]).unwrap();
        for update in [
            AlertUpdate {
                status: Some(AlertStatus::Acknowledged),
                assignee: Some("dana".into()),
                ..Default::default()
            },
            AlertUpdate {
                note: Some("known test account".into()),
                ..Default::default()
            },
        ] {
            book.update(&path, "acme", &bob.id, &update, "dana", Utc::now())
                .unwrap();
        }
        assert_eq!(journal_lines(&path), repeats as usize + 2 + 2);
        let before = all_records(&book);
        assert_eq!(before.len(), 3);

        // A reader leaves the file alone; the writer's load rewrites it, the same alerts.
        let read = AlertBook::load(dir.path(), false).unwrap();
        assert_eq!(all_records(&read), before);
        assert_eq!(journal_lines(&path), repeats as usize + 4);
        let mut loaded = AlertBook::load(dir.path(), true).unwrap();
        assert_eq!(journal_lines(&path), 3);
        assert_eq!(all_records(&loaded), before);
        assert_eq!(loaded.tenants["acme"].journal_lines, 3);
        let again = AlertBook::load(dir.path(), true).unwrap();
        assert_eq!(
            all_records(&again),
            before,
            "a compacted journal replays the same"
        );

        // What the journal knew still holds: a replayed repeat is not counted again, a new one
        // joins Alice's group (the group head survived), Bob's group is open too.
        loaded.set_group_seconds(3600);
        let done = loaded.insert(journal, &alice[100..103]).unwrap();
        assert_eq!((done.written, done.grouped.len()), (0, 0), "{done:?}");
        let done = loaded
            .insert(
                journal,
                &[
                    repeat("fail", "alice", 55, "late"),
                    repeat("fail", "bob", 10, "b10"),
                ],
            )
            .unwrap();
        assert_eq!((done.written, done.grouped.len()), (0, 2), "{done:?}");
        assert_eq!(
            loaded.get("acme", &alice[0].id).unwrap().alert.count,
            repeats as u64 + 1
        );
        // Below the threshold nothing is rewritten.
        assert_eq!(journal_lines(&path), 3 + 2);
        AlertBook::load(dir.path(), true).unwrap();
        assert_eq!(journal_lines(&path), 3 + 2);
    }

    #[test]
    fn retention_drops_closed_alerts_past_it_and_keeps_open_ones_and_recent_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant=acme").join("journal.jsonl");
        let journal = |_: &str| path.clone();
        let mut book = AlertBook::default();
        book.set_group_seconds(3600);
        // All begin on 2026-11-01; `late` has a repeat on 2026-11-20.
        let resolved = repeat("r1", "alice", 0, "a");
        let false_positive = repeat("r2", "alice", 0, "b");
        let open = repeat("r3", "alice", 0, "c");
        let acknowledged = repeat("r4", "alice", 0, "d");
        let late = repeat("r5", "alice", 0, "e");
        let late_repeat = repeat("r5", "alice", 19 * 24 * 60, "f");
        let all = [&resolved, &false_positive, &open, &acknowledged, &late];
        book.insert(journal, &all.map(Clone::clone)).unwrap();
        // The late repeat comes within the window of its group's last occurrence.
        for m in (60..19 * 24 * 60).step_by(60) {
            book.insert(journal, &[repeat("r5", "alice", m, &format!("x{m}"))])
                .unwrap();
        }
        book.insert(journal, std::slice::from_ref(&late_repeat))
            .unwrap();
        for (a, status) in [
            (&resolved, AlertStatus::Resolved),
            (&false_positive, AlertStatus::FalsePositive),
            (&acknowledged, AlertStatus::Acknowledged),
            (&late, AlertStatus::Resolved),
        ] {
            let update = AlertUpdate {
                status: Some(status),
                ..Default::default()
            };
            book.update(&path, "acme", &a.id, &update, "dana", Utc::now())
                .unwrap();
        }
        // Kept forever by default (0 days).
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 15, 12, 0, 0).unwrap();
        assert_eq!(
            book.expire(journal, now, 0).unwrap(),
            AlertsExpired::default()
        );
        // 30 days: on 2026-12-15 the oldest day kept is 11-15.
        let days = 30;
        let done = book.expire(journal, now, days).unwrap();
        assert_eq!(done.alerts_removed, 2, "{done:?}");
        assert_eq!(done.journals_rewritten, 1);
        let mut kept: Vec<&str> = book.tenants["acme"]
            .records
            .keys()
            .map(String::as_str)
            .collect();
        kept.sort();
        let mut expected = [&open.id, &acknowledged.id, &late.id].map(|s| s.as_str());
        expected.sort();
        assert_eq!(kept, expected);
        assert_eq!(journal_lines(&path), 3);
        assert_eq!(
            all_records(&AlertBook::load(dir.path(), false).unwrap()),
            all_records(&book)
        );
        // Nothing more to do at the same instant: the journal is left alone.
        assert_eq!(
            book.expire(journal, now, days).unwrap(),
            AlertsExpired::default()
        );
        // A day after the late repeat's day expires, it goes too; the ids grouped into it are
        // forgotten with it.
        let later = now + chrono::TimeDelta::days(6);
        assert!(book.tenants["acme"].absorbed.len() > 400);
        assert_eq!(book.expire(journal, later, days).unwrap().alerts_removed, 1);
        assert!(book.tenants["acme"].absorbed.is_empty());
        assert!(book.tenants["acme"].absorbed_into.is_empty());
        assert!(book.get("acme", &open.id).is_some());
    }

    #[test]
    fn tenfolds() {
        assert!(passes_power_of_ten(9, 10));
        assert!(passes_power_of_ten(1, 1000));
        assert!(passes_power_of_ten(999, 1000));
        assert!(!passes_power_of_ten(10, 99));
        assert!(!passes_power_of_ten(1, 9));
        assert!(!passes_power_of_ten(5, 5));
        assert!(!passes_power_of_ten(u64::MAX - 1, u64::MAX));
        assert!(passes_power_of_ten(0, u64::MAX));
    }

    /// A repeat delivered late (dated before the alert) widens the alert's span backwards: the
    /// alert is found for that earlier time, and its newest occurrence stays its newest.
    #[test]
    fn a_late_repeat_dated_before_its_alert_is_its_first_occurrence() {
        let dir = tempfile::tempdir().unwrap();
        let journal = |_: &str| dir.path().join("j.jsonl");
        let mut book = AlertBook::default();
        book.set_group_seconds(3600);
        let alerts = [
            repeat("push", "qa6", 30, "e30"),
            repeat("push", "qa6", 20, "e20"),
        ];
        book.insert(journal, &alerts).unwrap();
        let r = book.get("acme", &alerts[0].id).unwrap();
        assert_eq!(r.alert.count, 2);
        assert_eq!(r.first_seen, Some(alerts[1].timestamp));
        assert_eq!(r.last_seen, None, "no occurrence after the alert's own");
        assert_eq!(r.first_occurrence(), alerts[1].timestamp);
        assert_eq!(r.last_occurrence(), alerts[0].timestamp);
        let between = |from: i64, to: i64| AlertQuery {
            limit: 10,
            from: Some(alerts[1].timestamp + chrono::TimeDelta::minutes(from)),
            to: Some(alerts[1].timestamp + chrono::TimeDelta::minutes(to)),
            ..Default::default()
        };
        // 10:15-10:25 holds the late repeat (10:20), not the alert's own 10:30.
        assert_eq!(book.list("acme", &between(-5, 5)).unwrap().items.len(), 1);
        assert!(book
            .list("acme", &between(-20, -10))
            .unwrap()
            .items
            .is_empty());
    }

    /// A behavioural detector's grouped repeats come as one alert spanning them (`@timestamp`
    /// the first, `last_seen` the last): it is found for any time inside that span, also after
    /// the journal is read again.
    #[test]
    fn an_alert_that_spans_its_repeats_is_found_over_the_whole_span() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant=acme").join("journal.jsonl");
        let journal = |_: &str| path.clone();
        let mut grouped = repeat("ueba.auth_failure_burst", "203.0.113.66", 0, "e0");
        grouped.detector = DetectorKind::Ueba;
        grouped.last_seen = Some(grouped.timestamp + chrono::TimeDelta::minutes(12));
        let grouped = grouped.seal();
        let inside = |book: &AlertBook| {
            book.list(
                "acme",
                &AlertQuery {
                    limit: 10,
                    from: Some(grouped.timestamp + chrono::TimeDelta::minutes(4)),
                    to: Some(grouped.timestamp + chrono::TimeDelta::minutes(8)),
                    ..Default::default()
                },
            )
            .unwrap()
            .items
            .len()
        };
        let mut book = AlertBook::default();
        book.insert(journal, std::slice::from_ref(&grouped))
            .unwrap();
        assert_eq!(inside(&book), 1);
        let r = book.get("acme", &grouped.id).unwrap();
        assert_eq!(r.last_occurrence(), grouped.last_seen.unwrap());
        assert_eq!(inside(&AlertBook::load(dir.path(), false).unwrap()), 1);
    }

    #[test]
    fn repeats_of_a_rule_for_one_entity_are_counted_into_its_open_alert() {
        let dir = tempfile::tempdir().unwrap();
        let journal = |_: &str| dir.path().join("j.jsonl");
        let mut book = AlertBook::default();
        book.set_group_seconds(3600);
        // Alice fails five times within the hour (one out of order); Bob once; a second rule
        // once for Alice; then Alice again two hours after her last failure.
        let first: Vec<Alert> = [0, 10, 5, 50]
            .iter()
            .map(|m| repeat("fail", "alice", *m, &format!("e{m}")))
            .chain([
                repeat("fail", "bob", 1, "b1"),
                repeat("mfa", "alice", 2, "m2"),
            ])
            .collect();
        let done = book.insert(journal, &first).unwrap();
        assert_eq!(done.written, 3, "{done:?}");
        assert_eq!(done.grouped.len(), 3);
        let alice = book.get("acme", &first[0].id).unwrap();
        assert_eq!(alice.alert.count, 4);
        assert_eq!(alice.alert.event_ids, ["e0", "e10", "e5", "e50"]);
        assert_eq!(alice.alert.lines, [1, 11, 6, 51]);
        assert_eq!(
            alice.alert.timestamp, first[0].timestamp,
            "the first occurrence"
        );
        assert_eq!(alice.last_seen, Some(first[3].timestamp));
        // The next batch: one more within the hour of the last occurrence joins, a replay of
        // an absorbed alert is not counted twice, one more than an hour later starts anew.
        let next = vec![
            repeat("fail", "alice", 100, "e100"),
            first[1].clone(),
            repeat("fail", "alice", 200, "e200"),
        ];
        let done = book.insert(journal, &next).unwrap();
        assert_eq!((done.written, done.grouped.len()), (1, 1));
        assert_eq!(book.get("acme", &first[0].id).unwrap().alert.count, 5);
        assert!(book.get("acme", &next[2].id).is_some());
        // "Since 10:30" finds the group still firing at 10:50 that began at 10:00.
        let since = |minute: i64| AlertQuery {
            limit: 10,
            from: Some(first[0].timestamp + chrono::TimeDelta::minutes(minute)),
            ..Default::default()
        };
        let ids = |q: &AlertQuery| -> Vec<String> {
            let mut ids: Vec<String> = book
                .list("acme", q)
                .unwrap()
                .items
                .into_iter()
                .map(|r| r.alert.id)
                .collect();
            ids.sort();
            ids
        };
        let mut expected = vec![first[0].id.clone(), next[2].id.clone()];
        expected.sort();
        assert_eq!(ids(&since(90)), expected);
        assert_eq!(book.summary("acme", &since(90)).total, 2);
        // Replayed from the journal, the book is the same.
        let mut reloaded = AlertBook::default();
        let entries: Vec<JournalEntry> = journal::load_as(&journal("acme"), false).unwrap();
        let tenant = reloaded.tenants.entry("acme".into()).or_default();
        for e in entries {
            tenant.apply(e);
        }
        for id in [&first[0].id, &first[4].id, &first[5].id, &next[2].id] {
            assert_eq!(reloaded.get("acme", id), book.get("acme", id));
        }
        assert_eq!(reloaded.len(), 4);
        // A resolved alert ends its group: the next match raises a new alert.
        book.update(
            &journal("acme"),
            "acme",
            &next[2].id,
            &AlertUpdate {
                status: Some(AlertStatus::Resolved),
                ..Default::default()
            },
            "analyst",
            Utc::now(),
        )
        .unwrap();
        let after = repeat("fail", "alice", 201, "e201");
        let done = book.insert(journal, std::slice::from_ref(&after)).unwrap();
        assert_eq!((done.written, done.grouped.len()), (1, 0));
    }

    #[test]
    fn a_correlation_firing_again_for_one_entity_counts_its_events_into_its_open_alert() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant=acme").join("journal.jsonl");
        let journal = |_: &str| path.clone();
        let mut book = AlertBook::default();
        book.set_group_seconds(3600);
        // A burst of failures: the correlation fires at every 10th, three times in 5 minutes.
        let burst = |minute: i64, entity: &str| {
            let mut a = repeat("burst", entity, minute, &format!("{entity}{minute}"));
            a.detector = DetectorKind::Correlation;
            a.count = 10;
            a.seal()
        };
        let alerts = [
            burst(0, "alice"),
            burst(2, "alice"),
            burst(4, "alice"),
            burst(3, "bob"),
        ];
        let done = book.insert(journal, &alerts).unwrap();
        assert_eq!((done.written, done.grouped.len()), (2, 2), "{done:?}");
        // Destinations are sent the alert as it grew in this batch, not as raised.
        let grown: Vec<(&str, u64)> = done
            .grown
            .iter()
            .map(|a| (a.entity.as_str(), a.count))
            .collect();
        assert_eq!(grown, [("alice", 30)]);
        let alice = book.get("acme", &alerts[0].id).unwrap();
        assert_eq!(alice.alert.count, 30, "the events of its three windows");
        assert_eq!(alice.alert.event_ids, ["alice0", "alice2", "alice4"]);
        // A later batch (another page, another poll) joins it too.
        let done = book.insert(journal, &[burst(6, "alice")]).unwrap();
        assert_eq!((done.written, done.grouped.len()), (0, 1), "{done:?}");
        assert!(
            done.grown.is_empty(),
            "raised by an earlier batch: still firing at most"
        );
        assert_eq!(book.get("acme", &alerts[0].id).unwrap().alert.count, 40);
        assert_eq!(book.get("acme", &alerts[3].id).unwrap().alert.count, 10);
        // The journal says the same after a restart; a resent alert is not counted again.
        let mut reloaded = AlertBook::load(dir.path(), true).unwrap();
        reloaded.set_group_seconds(3600);
        assert_eq!(reloaded.get("acme", &alerts[0].id).unwrap().alert.count, 40);
        let done = reloaded.insert(journal, &alerts[1..2]).unwrap();
        assert_eq!((done.written, done.grouped.len()), (0, 0));
        // ... and the next firing still finds its group.
        let done = reloaded.insert(journal, &[burst(8, "alice")]).unwrap();
        assert_eq!((done.written, done.grouped.len()), (0, 1), "{done:?}");
        // Behavioural alerts stay alone.
        let ueba = |minute: i64| {
            let mut a = repeat("ueba.burst", "carol", minute, &format!("c{minute}"));
            a.detector = DetectorKind::Ueba;
            a.seal()
        };
        let done = book.insert(journal, &[ueba(0), ueba(1)]).unwrap();
        assert_eq!((done.written, done.grouped.len()), (2, 0));
    }

    #[test]
    fn a_rules_own_window_overrides_the_stores() {
        let dir = tempfile::tempdir().unwrap();
        let journal = |_: &str| dir.path().join("j.jsonl");
        let mut book = AlertBook::default();
        book.set_group_seconds(3600);
        let with = |secs: Option<u64>, minute: i64, event: &str| {
            let mut a = repeat(&format!("r{secs:?}"), "alice", minute, event);
            a.alert_group_seconds = secs;
            a
        };
        // Every root login is an alert of its own (0); a noisy rule groups over a day.
        let alerts = [
            with(Some(0), 0, "a"),
            with(Some(0), 1, "b"),
            with(Some(86_400), 0, "c"),
            with(Some(86_400), 600, "d"),
            with(None, 0, "e"),
            with(None, 600, "f"),
        ];
        let done = book.insert(journal, &alerts).unwrap();
        assert_eq!(done.grouped, [alerts[3].id.clone()]);
        assert_eq!(done.written, 5);
    }

    #[test]
    fn without_a_window_and_beyond_the_evidence_cap_alerts_stand_alone_or_count_on() {
        let dir = tempfile::tempdir().unwrap();
        let journal = |_: &str| dir.path().join("j.jsonl");
        let many: Vec<Alert> = (0..MAX_GROUPED_EVIDENCE as i64 + 20)
            .map(|i| repeat("fail", "alice", i % 50, &format!("e{i}")))
            .collect();
        let mut separate = AlertBook::default();
        let done = separate.insert(journal, &many).unwrap();
        assert_eq!((done.written, done.grouped.len()), (many.len(), 0));

        let dir = tempfile::tempdir().unwrap();
        let journal = |_: &str| dir.path().join("j.jsonl");
        let mut grouped = AlertBook::default();
        grouped.set_group_seconds(3600);
        grouped.insert(journal, &many).unwrap();
        let r = grouped.get("acme", &many[0].id).unwrap();
        assert_eq!(r.alert.count, many.len() as u64);
        assert_eq!(r.alert.event_ids.len(), MAX_GROUPED_EVIDENCE);
        assert_eq!(r.alert.lines.len(), MAX_GROUPED_EVIDENCE);
    }

    #[test]
    fn pagination_visits_every_alert_once_in_every_sort_order() {
        let mut book = AlertBook::default();
        let dir = tempfile::tempdir().unwrap();
        let alerts: Vec<Alert> = (0..25)
            .map(|i| {
                alert(
                    &format!("a{i}"),
                    [Severity::Low, Severity::High, Severity::Critical][i % 3],
                    (i % 7) as u32,
                )
            })
            .collect();
        assert_eq!(
            book.insert(|_| dir.path().join("j.jsonl"), &alerts)
                .unwrap()
                .written,
            25
        );
        for sort in [AlertSort::Newest, AlertSort::Oldest, AlertSort::Severity] {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let q = AlertQuery {
                    limit: 4,
                    cursor: cursor.clone(),
                    sort,
                    ..Default::default()
                };
                let page = book.list("acme", &q).unwrap();
                seen.extend(page.items.iter().map(sort_key));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(seen.len(), 25, "{sort:?}");
            let mut sorted = seen.clone();
            sorted.sort_by(|a, b| compare(sort, a, b));
            assert_eq!(seen, sorted, "{sort:?}");
        }
        let q = AlertQuery {
            limit: 100,
            severity: Some(Severity::High),
            ..Default::default()
        };
        assert!(book
            .list("acme", &q)
            .unwrap()
            .items
            .iter()
            .all(|r| r.alert.severity >= Severity::High));
        // A cursor changed in any way is refused (one with characters added after the id
        // parsed as another position, and the page repeated the previous page's last alert).
        let first = book
            .list(
                "acme",
                &AlertQuery {
                    limit: 4,
                    ..Default::default()
                },
            )
            .unwrap();
        let cursor = first.next_cursor.expect("more than one page");
        let mut cut = cursor.clone();
        cut.pop();
        for changed in [
            "garbage".to_string(),
            format!("{cursor}x"),
            format!("{cursor}.extra"),
            cut,
            cursor.replacen(".3.", ".2.", 1),
        ] {
            let bad = AlertQuery {
                limit: 10,
                cursor: Some(changed.clone()),
                ..Default::default()
            };
            assert!(
                matches!(book.list("acme", &bad), Err(StoreError::InvalidQuery(_))),
                "{changed}"
            );
        }
    }
}
