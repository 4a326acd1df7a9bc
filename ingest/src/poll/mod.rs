//! Pull sources: SaaS audit-log APIs polled for new records (`[[poll]]` in the config).
//!
//! Each configured API is one [`PollSource`]. Every `interval_seconds` it asks the vendor for
//! what is new since its checkpoint, page by page, submits each page's records to the bus, and
//! moves its checkpoint past a page only once the bus acknowledged it (the records are stored).
//! A crash, `kill -9` or store failure between fetching and storing a page means the page is
//! fetched again; the store, idempotent on event id, keeps its records once. The next page is
//! fetched while the ones before are stored (`InFlight`), so after a refused page the pages
//! fetched behind it are fetched again too. The checkpoint is a small JSON file per source
//! (`<state_dir>/<name>.json`), replaced atomically.
//!
//! The credential is a secret reference (`env:NAME` or `file:/path`), read again at every poll so
//! a rotated token file is picked up; it is never logged, and links the vendor returns are
//! followed only to the configured origin, so the token goes nowhere else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use perimeter_model::{is_plausible_event_time, is_secret_reference, Metrics};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::bus::BusSender;
use crate::InputItem;

mod cloudtrail;
mod google;
mod m365;
mod salesforce;
mod sigv4;
pub mod vendor;

pub use vendor::Vendor;

/// One polled API (a `[[poll]]` table).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Unique name: names the checkpoint file, the logs and the metrics' `poller` label.
    pub name: String,
    /// Which API: `okta`, `github`, `slack`, `onepassword`, `google_workspace`, `m365`,
    /// `aws_cloudtrail` (log files in S3), `salesforce` (the org's My Domain URL as `base_url`).
    pub vendor: Vendor,
    /// The API's base URL, e.g. `https://acme.okta.com`, `https://api.github.com`,
    /// `https://api.slack.com`, `https://events.1password.com`, `https://admin.googleapis.com`.
    pub base_url: String,
    /// The credential, as a secret reference: `env:NAME` or `file:/path` (read at every poll,
    /// so a token file rotated by another process is picked up). Never logged.
    pub token: String,
    /// GitHub: the organization whose audit log is read. Microsoft 365: the Azure AD tenant id.
    #[serde(default)]
    pub org: Option<String>,
    /// 1Password: `signinattempts`, `itemusages` or `auditevents`; Google Workspace: the
    /// Reports API application (`login`, `admin`, `drive`, `token`, ...); Microsoft 365: the
    /// content type (`Audit.AzureActiveDirectory`, `Audit.Exchange`, `Audit.SharePoint`,
    /// `Audit.General`, `DLP.All`); AWS CloudTrail: the key prefix of the log files
    /// (`AWSLogs/<account>/CloudTrail/<region>/`); Salesforce: `setup_audit_trail` or
    /// `event_log_files` (Event Monitoring).
    #[serde(default)]
    pub feed: Option<String>,
    /// Microsoft 365: the Azure AD application (client) id; Salesforce: the connected app's
    /// consumer key. With it, `token` is the app's client (consumer) secret and Perimeter gets
    /// access tokens itself (from `auth_url`, Salesforce: from `base_url`); without it, `token`
    /// is an access token kept fresh by another process.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Microsoft 365: where access tokens come from (default `https://login.microsoftonline.com`).
    #[serde(default)]
    pub auth_url: Option<String>,
    /// Google Workspace with a service-account key file as `token`: the admin user the service
    /// account acts as (domain-wide delegation; the Reports API answers only admins).
    #[serde(default)]
    pub delegated_user: Option<String>,
    /// AWS CloudTrail: the bucket's region (`us-east-1`, ...), for signing.
    #[serde(default)]
    pub aws_region: Option<String>,
    /// AWS CloudTrail: the access key id, as a secret reference (`token` is the secret access
    /// key).
    #[serde(default)]
    pub aws_access_key_id: Option<String>,
    /// AWS CloudTrail: a session token for temporary credentials, as a secret reference.
    #[serde(default)]
    pub aws_session_token: Option<String>,
    /// Tenant the records belong to (default: the configuration's `tenant`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Seconds between polls (at least 1).
    #[serde(default = "default_interval_seconds")]
    pub interval_seconds: u64,
    /// Where the very first poll starts (no checkpoint yet): this many hours back.
    #[serde(default = "default_initial_lookback_hours")]
    pub initial_lookback_hours: u64,
    /// Pages read per poll at most; the rest waits for the next poll (keeps one busy API from
    /// holding a poll forever, and bounds the work after a long outage).
    #[serde(default = "default_max_pages_per_poll")]
    pub max_pages_per_poll: u32,
    /// Seconds before a request without an answer is given up (and retried at the next poll).
    #[serde(default = "default_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// Largest page body taken, in bytes (64 MiB): a bigger one is refused before it is all in
    /// memory, and retried at the next poll.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: u64,
    /// Listing vendors (`google_workspace`, `slack`, `launchdarkly`): how many minutes before
    /// the newest stored record a periodic *sweep* lists again, for records the vendor publishes
    /// late. A listing asks for records from the newest stored time on, so one that shows up
    /// later with an older time would never be read: Google's Reports API publishes some
    /// applications' events minutes to hours after they happened. The store keeps re-read
    /// records once (idempotent on event id). Default: 180 for `google_workspace`, 0 (off) for
    /// the others; other vendors go on from a vendor cursor and take no sweep.
    #[serde(default)]
    pub late_records_minutes: Option<u64>,
    /// Minutes between two sweeps (at least 1): each re-reads `late_records_minutes` of
    /// records, so this trades API calls for how soon a late record is stored.
    #[serde(default = "default_late_sweep_interval_minutes")]
    pub late_sweep_interval_minutes: u64,
}

impl PollConfig {
    /// A table for `vendor` at `base_url` with credential `token`, everything else at its
    /// default (what a `[[poll]]` table naming only these four gets).
    pub fn new(name: &str, vendor: Vendor, base_url: &str, token: &str) -> PollConfig {
        PollConfig {
            name: name.to_string(),
            vendor,
            base_url: base_url.to_string(),
            token: token.to_string(),
            org: None,
            feed: None,
            client_id: None,
            auth_url: None,
            delegated_user: None,
            aws_region: None,
            aws_access_key_id: None,
            aws_session_token: None,
            tenant: None,
            interval_seconds: default_interval_seconds(),
            initial_lookback_hours: default_initial_lookback_hours(),
            max_pages_per_poll: default_max_pages_per_poll(),
            request_timeout_seconds: default_request_timeout_seconds(),
            max_page_bytes: default_max_page_bytes(),
            late_records_minutes: None,
            late_sweep_interval_minutes: default_late_sweep_interval_minutes(),
        }
    }

    /// Minutes a sweep reaches back (0: no sweeps), with the vendor's default.
    pub fn late_records_window(&self) -> u64 {
        self.late_records_minutes.unwrap_or(match self.vendor {
            Vendor::GoogleWorkspace => DEFAULT_GOOGLE_LATE_RECORDS_MINUTES,
            _ => 0,
        })
    }
}

/// The smallest `max_page_bytes` taken: an empty page with its envelope fits, a real one may not.
const MIN_PAGE_BYTES: u64 = 1024;

/// Google documents lag times of up to a few hours for some Reports API applications.
const DEFAULT_GOOGLE_LATE_RECORDS_MINUTES: u64 = 180;

fn default_interval_seconds() -> u64 {
    60
}
fn default_initial_lookback_hours() -> u64 {
    24
}
fn default_max_pages_per_poll() -> u32 {
    100
}
fn default_request_timeout_seconds() -> u64 {
    60
}
fn default_max_page_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_late_sweep_interval_minutes() -> u64 {
    15
}

/// Where a source stands: saved after every stored page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// What the vendor said to go on with: Okta's and GitHub's next link, Slack's, Google's or
    /// 1Password's cursor. `None`: the next request starts a listing at `since`.
    #[serde(default)]
    pub resume: Option<String>,
    /// The lower time bound of a listing read part-way (Slack, Google Workspace).
    #[serde(default)]
    pub listing_since: Option<DateTime<Utc>>,
    /// The newest record time stored that was not after the time it was saved (see
    /// [`checkpoint_time`]): new listings start there.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// CloudTrail: the objects stored within the last minutes before the newest one (files can
    /// land a little out of order; these are not fetched again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_keys: Vec<String>,
    /// Listings: when the last sweep for late records began (see
    /// [`PollConfig::late_records_minutes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sweep: Option<DateTime<Utc>>,
    /// CloudTrail under a prefix above the trail's region folders: each folder's own place
    /// (its `resume` and `recent_keys`), by the folder's prefix.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub folders: std::collections::BTreeMap<String, Checkpoint>,
    /// CloudTrail region folders: the one whose files spent the last poll's page budget; the
    /// next poll reads the folders after it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_folder: Option<String>,
}

/// Where a checkpoint's `since` may move once records with `times` are stored, from `previous`
/// (the checkpoint's), with the poll's clock at `now`: the newest record time at or before
/// `now`. `since` is where the next listing starts (an inclusive lower bound), so it moves
/// only to times that have passed:
/// - a record dated after `now`, even a plausible hour ahead (a vendor clock a little off),
///   does not move it at all. Moving it to that time, or to `now`, skipped the records the
///   vendor publishes later with earlier times (Google hours late, GitHub minutes; ADR 014);
///   the record dated ahead is listed again until `now` passes it, and the store keeps it once;
/// - a time that cannot be true (ADR 012's rule, [`is_plausible_event_time`]: more than a day
///   after `now`, or before 2000) does not move it either and is counted: one record dated in
///   the year 3000 moved it there, and no later record of the source was asked for again. Such
///   a record is still stored (with its receive time as event time, ADR 012).
///
/// A `previous` ahead of `now` (saved before this rule) is brought back to `now`.
pub(crate) fn checkpoint_time(
    previous: Option<DateTime<Utc>>,
    times: impl IntoIterator<Item = DateTime<Utc>>,
    now: DateTime<Utc>,
) -> CheckpointTime {
    let mut next = CheckpointTime {
        since: previous.map(|t| t.min(now)),
        ..CheckpointTime::default()
    };
    for time in times {
        if !is_plausible_event_time(time, now) {
            next.implausible.push(time);
        } else if time <= now {
            next.since = next.since.max(Some(time));
        }
    }
    next
}

/// What [`checkpoint_time`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CheckpointTime {
    /// Where `since` moves.
    pub since: Option<DateTime<Utc>>,
    /// The record times that cannot be true, in order.
    pub implausible: Vec<DateTime<Utc>>,
}

/// How many far-ahead record times a poller remembers having counted (see
/// [`PollSource::note_implausible_times`]); past that it forgets them all and counts anew.
const IMPLAUSIBLE_TIMES_REMEMBERED: usize = 1024;

/// The `poll_errors_total` kind of records dated implausibly (the poll goes on; see
/// [`checkpoint_time`]).
pub const IMPLAUSIBLE_TIME: &str = "implausible_time";

/// The `poll_errors_total` kind of a poll that went round in a loop of the vendor's links or
/// cursors (its records are stored; see [`PollSource::poll_once`]).
pub const STUCK: &str = "stuck";

/// Items of a feed put on the bus ([`PollSource::enqueue`]), not yet known to be stored.
pub(crate) struct Queued {
    pending: Option<crate::bus::PendingAck>,
    count: usize,
    /// A page of the feed, counted once stored (not a set-aside item's dead letter).
    page: bool,
}

impl Queued {
    /// Whether the store has answered for it (see [`crate::bus::PendingAck::is_answered`]).
    fn is_answered(&mut self) -> bool {
        self.pending
            .as_mut()
            .is_none_or(crate::bus::PendingAck::is_answered)
    }

    /// Records it holds (0 for a set-aside item's dead letter).
    pub(crate) fn records(&self) -> usize {
        if self.page {
            self.count
        } else {
            0
        }
    }
}

/// Records of a feed's items (CloudTrail's files, Microsoft 365's content blobs) put on the bus
/// before the oldest of them must be stored: the next items are fetched meanwhile, and the
/// store commits several small ones at once instead of one commit per item.
const MAX_RECORDS_IN_FLIGHT: usize = 5_000;

/// Records of a newest-first listing held to be handed on oldest first ([`HeldListing`]); a
/// longer listing is handed on in parts of about this many (each oldest first, but a later part
/// is older than the one before, so correlations may take its records for late ones).
const MAX_HELD_RECORDS: usize = 20_000;

/// The pages of a newest-first listing read so far in this poll, held until the listing ends so
/// that they go on the bus oldest first. Correlations judge lateness by the newest event of a
/// stream: handed on as the vendor pages it, every record more than the allowed lateness older
/// than a listing's newest was dropped from them (QA: a 10-minute Google Drive bulk download
/// lost its older half and raised nothing).
#[derive(Default)]
struct HeldListing {
    /// Pages in the order read (newest first), each with the checkpoint past it.
    pages: Vec<(Vec<perimeter_model::RawJson>, Checkpoint)>,
    records: usize,
}

/// A feed's items put on the bus and not yet known to be stored, oldest first, each with what
/// moves the checkpoint past it (`advance`); the checkpoint is saved after each stored item, in
/// order, so it never moves past an item that is not stored.
pub(crate) struct InFlight<T, A: Fn(&mut Checkpoint, T)> {
    items: std::collections::VecDeque<(T, Queued)>,
    records: usize,
    advance: A,
}

impl<T, A: Fn(&mut Checkpoint, T)> InFlight<T, A> {
    pub(crate) fn new(advance: A) -> Self {
        InFlight {
            items: Default::default(),
            records: 0,
            advance,
        }
    }

    pub(crate) fn push(&mut self, item: T, queued: Queued) {
        self.records += queued.records();
        self.items.push_back((item, queued));
    }

    /// Take the oldest items the store has already answered for (the checkpoint follows what
    /// is stored as it goes, so a `kill -9` repeats little), then wait for the oldest until at
    /// most [`MAX_RECORDS_IN_FLIGHT`] records are in flight.
    pub(crate) async fn make_room(
        &mut self,
        src: &PollSource,
        cp: &mut Checkpoint,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        while self
            .items
            .front_mut()
            .is_some_and(|(_, queued)| queued.is_answered())
        {
            self.settle_oldest(src, cp, report).await?;
        }
        while self.records > MAX_RECORDS_IN_FLIGHT && self.settle_oldest(src, cp, report).await? {}
        Ok(())
    }

    /// Wait for every item, in order (before a poll ends, also on an error: what was fetched is
    /// stored and checkpointed first).
    pub(crate) async fn settle_all(
        &mut self,
        src: &PollSource,
        cp: &mut Checkpoint,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        while self.settle_oldest(src, cp, report).await? {}
        Ok(())
    }

    /// The poll stops with `error`: what was fetched before it is stored and checkpointed
    /// first, unless the store refused an item (nothing behind a refused item may move the
    /// checkpoint). The error to return.
    pub(crate) async fn stop_with(
        &mut self,
        src: &PollSource,
        cp: &mut Checkpoint,
        report: &mut PollReport,
        error: PollError,
    ) -> PollError {
        if matches!(error, PollError::NotStored(_)) {
            return error;
        }
        match self.settle_all(src, cp, report).await {
            Ok(()) => error,
            Err(settling) => settling,
        }
    }

    /// Wait for the oldest item; the checkpoint moves past it once it is stored. False when
    /// there is none.
    async fn settle_oldest(
        &mut self,
        src: &PollSource,
        cp: &mut Checkpoint,
        report: &mut PollReport,
    ) -> Result<bool, PollError> {
        let Some((item, queued)) = self.items.pop_front() else {
            return Ok(false);
        };
        self.records -= queued.records();
        report.add_stored(src.stored(queued).await?);
        (self.advance)(cp, item);
        src.save_checkpoint(cp)?;
        Ok(true)
    }
}

/// Why a poll stopped early. The checkpoint stays where the last stored page left it.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The configuration cannot work (bad URL, missing `org`/`feed`, unreadable secret).
    #[error("configuration: {0}")]
    Config(String),
    /// The vendor refused the credential (401/403): it needs fixing, retried at every poll.
    /// With what the vendor said, when its answer says it (`: vendor says "..."`).
    #[error("the API refused the credential (HTTP {0}): check `token`{1}")]
    Unauthorized(u16, String),
    /// Rate limited (429): the vendor's delay. Retried after it, or after the poller's own
    /// backoff when that is longer (see [`PollPacing`]).
    #[error("rate limited; retrying in {0:?}")]
    RateLimited(Duration),
    /// Any other HTTP status.
    #[error("HTTP {status} from {url}{detail}")]
    Http {
        status: u16,
        url: String,
        /// What the vendor said (`: vendor says "..."`), or empty.
        detail: String,
    },
    /// No answer (connection refused, DNS, TLS, timeout).
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    /// The answer is not the page the vendor documents (not JSON, no records list, a next link
    /// to another host).
    #[error("unexpected answer: {0}")]
    Malformed(String),
    /// The bus did not acknowledge the page (store failure, shutdown): fetched again later.
    #[error("records not stored: {0}")]
    NotStored(String),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// A file the poller downloads to (a Salesforce log file) could not be written or read: a
    /// full disk, permissions. Retried at the next poll; the checkpoint has not moved.
    #[error("download file {path}: {reason}")]
    LocalFile { path: PathBuf, reason: String },
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PollReport {
    pub pages: u32,
    pub records: usize,
    /// Events the store already had (the boundary of a listing, or a page fetched again).
    pub duplicates: usize,
    /// Events new to the store. (Not `records - duplicates`: one record of some vendors, such
    /// as a Google Workspace activity, holds several events.)
    pub events: usize,
}

impl PollReport {
    /// Add what the store answered for one more item of the poll.
    fn add_stored(&mut self, stored: Stored) {
        self.records += stored.records;
        self.duplicates += stored.duplicates;
        self.events += stored.events;
    }
}

/// What the store answered for one submitted item: its records, and the events they made that
/// it already had and that are new.
#[derive(Debug, Default, Clone, Copy)]
struct Stored {
    records: usize,
    duplicates: usize,
    events: usize,
}

/// What [`PollSource::probe`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The request made (no credential in it).
    pub url: String,
    /// Records on the page.
    pub records: usize,
    /// The newest record time on the page (or stored before), when the page had records.
    pub newest: Option<DateTime<Utc>>,
    /// Whether more pages follow now.
    pub more: bool,
}

impl ProbeReport {
    /// The probe of an API that lists items (content blobs, log files) and then fetches each:
    /// `listed` new items, the listing read to its end or not, and the first item's record
    /// count and time.
    fn of_listing(
        url: &Url,
        listed: usize,
        complete: bool,
        first: Option<(usize, DateTime<Utc>)>,
    ) -> ProbeReport {
        ProbeReport {
            url: url.to_string(),
            records: first.map_or(0, |(records, _)| records),
            newest: first.map(|(_, time)| time),
            more: listed > 1 || !complete,
        }
    }
}

/// A rate limit is logged as a warning, and a server error of the vendor's (HTTP 5xx) as an
/// error, when it begins and every this many times in a row.
pub const RATE_LIMIT_WARN_EVERY: u32 = 10;

/// How long a poller waits before its next poll, from how the polls went:
/// - after a poll that worked, `interval_seconds`;
/// - after a failure, 2 s, 4 s, 8 s, ... for failures in a row, up to the interval: a blip is
///   retried soon, an outage is not hammered;
/// - after a rate limit (429), what the vendor asks (`Retry-After`, at most an hour) but no less
///   than the same growing backoff over the rate limits in a row (up to the interval). A vendor
///   whose clock is off answers `Retry-After: 0` or a date already past, and taken at its word
///   that had the poller ask once a second for as long as it lasted; a long `Retry-After` is
///   still waited out in full.
///
/// A poll that works ends both runs.
#[derive(Debug, Clone)]
pub struct PollPacing {
    interval: Duration,
    failures_in_a_row: u32,
    rate_limits_in_a_row: u32,
    /// Of the failures in a row, the vendor's server errors (5xx) since the last other outcome.
    server_errors_in_a_row: u32,
}

impl PollPacing {
    /// Pacing for polls every `interval` (at least a second).
    pub fn new(interval: Duration) -> PollPacing {
        PollPacing {
            interval: interval.max(Duration::from_secs(1)),
            failures_in_a_row: 0,
            rate_limits_in_a_row: 0,
            server_errors_in_a_row: 0,
        }
    }

    /// Take the outcome of a poll; how long to wait before the next one.
    pub fn after(&mut self, result: &Result<PollReport, PollError>) -> Duration {
        self.server_errors_in_a_row = match result {
            Err(e) if e.is_server_error() => self.server_errors_in_a_row.saturating_add(1),
            _ => 0,
        };
        match result {
            Ok(_) => {
                self.failures_in_a_row = 0;
                self.rate_limits_in_a_row = 0;
                self.interval
            }
            Err(PollError::RateLimited(vendor_delay)) => {
                self.rate_limits_in_a_row = self.rate_limits_in_a_row.saturating_add(1);
                (*vendor_delay).max(self.backoff(self.rate_limits_in_a_row))
            }
            Err(_) => {
                self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
                self.backoff(self.failures_in_a_row)
            }
        }
    }

    /// Failures (other than rate limits) since the last poll that worked.
    pub fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row
    }

    /// Rate limits since the last poll that worked.
    pub fn rate_limits_in_a_row(&self) -> u32 {
        self.rate_limits_in_a_row
    }

    /// The vendor's server errors (5xx) in a row, up to the last poll.
    pub fn server_errors_in_a_row(&self) -> u32 {
        self.server_errors_in_a_row
    }

    /// 2^`in_a_row` seconds, at most the interval.
    fn backoff(&self, in_a_row: u32) -> Duration {
        Duration::from_secs(1u64 << in_a_row.min(16)).min(self.interval)
    }
}

/// Polls one API into the bus.
pub struct PollSource {
    config: PollConfig,
    api: vendor::Api,
    tenant: String,
    checkpoint_path: PathBuf,
    bus: BusSender,
    client: reqwest::Client,
    metrics: Option<Arc<Metrics>>,
    /// Microsoft 365 with a `client_id`: the access token and when to get a new one.
    access_token: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
    /// The record times more than a day ahead already warned about and counted: `since` never
    /// reaches them, so the vendor lists such a record again at every poll.
    implausible_noted: std::sync::Mutex<std::collections::HashSet<DateTime<Utc>>>,
    /// CloudTrail under a prefix above the region folders: the folders found, and when.
    region_folders: std::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>,
}

impl PollSource {
    /// Check `config` and set up its HTTP client. `default_tenant` applies when the config names
    /// none; the checkpoint lives in `state_dir`.
    pub fn new(
        config: PollConfig,
        default_tenant: &str,
        state_dir: &Path,
        bus: BusSender,
    ) -> Result<PollSource, PollError> {
        let name_ok = !config.name.is_empty()
            && config
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(PollError::Config(format!(
                "poll name `{}`: use letters, digits, `-` and `_` (it names a file)",
                config.name
            )));
        }
        let err = |m: String| PollError::Config(format!("poll `{}`: {m}", config.name));
        let base = Url::parse(&config.base_url)
            .map_err(|e| err(format!("base_url `{}`: {e}", config.base_url)))?;
        // The URL is printed and logged; credentials belong in `token`.
        if !base.username().is_empty() || base.password().is_some() || base.query().is_some() {
            return Err(err(
                "base_url must hold no user, password or query (credentials go in `token`)".into(),
            ));
        }
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(err(format!(
                "base_url `{}` must be an http(s) URL with a host",
                config.base_url
            )));
        }
        // The token goes in every request: over plain http anyone on the way reads it. Only a
        // server on this machine (a test double, a local relay) may be spoken to in clear.
        if base.scheme() == "http" && !is_loopback(&base) {
            return Err(err(format!(
                "base_url `{}` is plain http: the token would cross the network in clear; use https (http is for servers on this machine only)",
                config.base_url
            )));
        }
        if let Some(what) = config
            .vendor
            .missing(config.org.as_deref(), config.feed.as_deref())
        {
            // Named as the config names it; a feed that is set but none of the feeds is said
            // to be (it read as missing).
            let given = match (what.starts_with("`feed`"), config.feed.as_deref()) {
                (true, Some(feed)) => format!(": `feed = {feed:?}` is none of them"),
                _ => String::new(),
            };
            return Err(err(format!(
                "{} needs {what}{given}",
                config.vendor.source()
            )));
        }
        if config.vendor == Vendor::AwsCloudtrail {
            if config.aws_region.is_none() {
                return Err(err(
                    "aws_cloudtrail needs `aws_region` (the bucket's region)".into(),
                ));
            }
            if !config
                .aws_access_key_id
                .as_deref()
                .is_some_and(is_secret_reference)
            {
                return Err(err(
                    "aws_cloudtrail needs `aws_access_key_id` as a secret reference, `env:NAME` or `file:/path` (`token` is the secret access key)"
                        .into(),
                ));
            }
        }
        let listing = matches!(
            config.vendor,
            Vendor::GoogleWorkspace | Vendor::Slack | Vendor::Launchdarkly
        );
        let sweep_set = config.late_records_minutes.is_some_and(|m| m > 0)
            || config.late_sweep_interval_minutes != default_late_sweep_interval_minutes();
        if !listing && sweep_set {
            return Err(err(format!(
                "late_records_minutes and late_sweep_interval_minutes apply to google_workspace, slack and launchdarkly; {} goes on from the vendor's own cursor",
                config.vendor.source()
            )));
        }
        // Zero would not mean "off" here: it was quietly read as 1 (a poll every second, a
        // 1-second timeout, one page), which is not what whoever wrote it meant.
        for (setting, value) in [
            (
                "late_sweep_interval_minutes",
                config.late_sweep_interval_minutes,
            ),
            ("interval_seconds", config.interval_seconds),
            ("request_timeout_seconds", config.request_timeout_seconds),
            ("max_pages_per_poll", u64::from(config.max_pages_per_poll)),
        ] {
            if value == 0 {
                return Err(err(format!("{setting} must be at least 1")));
            }
        }
        if config.max_page_bytes < MIN_PAGE_BYTES {
            return Err(err(format!(
                "max_page_bytes {} is too small to hold a page (at least {MIN_PAGE_BYTES})",
                config.max_page_bytes
            )));
        }
        if !is_secret_reference(&config.token) {
            return Err(err(
                "token must be a secret reference, `env:NAME` or `file:/path`, not the token itself"
                    .into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.request_timeout_seconds.max(1)))
            .user_agent(concat!("perimeter/", env!("CARGO_PKG_VERSION")))
            // Links are checked against the base origin before use; redirects are not.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| err(format!("HTTP client: {e}")))?;
        Ok(PollSource {
            api: vendor::Api {
                vendor: config.vendor,
                base,
                org: config.org.clone(),
                feed: config.feed.clone(),
            },
            tenant: config
                .tenant
                .clone()
                .unwrap_or_else(|| default_tenant.to_string()),
            checkpoint_path: state_dir.join(format!("{}.json", config.name)),
            config,
            bus,
            client,
            metrics: None,
            access_token: tokio::sync::Mutex::new(None),
            implausible_noted: std::sync::Mutex::default(),
            region_folders: std::sync::Mutex::default(),
        })
    }

    /// Count polls, pages, records and errors in `metrics` (label `poller`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The saved checkpoint (default when there is none yet).
    pub fn checkpoint(&self) -> Result<Checkpoint, PollError> {
        let cp_err = |reason: String| PollError::Checkpoint {
            path: self.checkpoint_path.clone(),
            reason,
        };
        match std::fs::read(&self.checkpoint_path) {
            // Not guessed around: starting over could skip records or re-read months of them.
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                cp_err(format!(
                    "{e}; fix it, or move it aside to start again `initial_lookback_hours` back"
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
            Err(e) => Err(cp_err(e.to_string())),
        }
    }

    fn save_checkpoint(&self, cp: &Checkpoint) -> Result<(), PollError> {
        let cp_err = |reason: String| PollError::Checkpoint {
            path: self.checkpoint_path.clone(),
            reason,
        };
        if let Some(dir) = self.checkpoint_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| cp_err(e.to_string()))?;
        }
        let tmp = self.checkpoint_path.with_extension("json.tmp");
        let text = serde_json::to_vec(cp).map_err(|e| cp_err(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| cp_err(e.to_string()))?;
        std::fs::rename(&tmp, &self.checkpoint_path).map_err(|e| cp_err(e.to_string()))
    }

    /// Poll until `shutdown` resolves: one poll now, then one every `interval_seconds` (later
    /// after a rate limit or a failure, see [`PollPacing`]).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        self.run_with_sleep(shutdown, tokio::time::sleep).await
    }

    /// [`PollSource::run`], waiting between polls with `sleep` instead of the tokio timer: a
    /// test records the waits instead of spending them.
    pub async fn run_with_sleep<F: std::future::Future<Output = ()>>(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        mut sleep: impl FnMut(Duration) -> F,
    ) {
        tokio::pin!(shutdown);
        let mut pacing = PollPacing::new(Duration::from_secs(self.config.interval_seconds));
        loop {
            let wait = tokio::select! {
                _ = &mut shutdown => return,
                result = self.poll_once() => {
                    let before = pacing.clone();
                    let wait = pacing.after(&result);
                    self.log_poll(&result, &before, &pacing, wait);
                    wait
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = sleep(wait) => {}
            }
        }
    }

    /// Say how a poll went: records stored at info; a rate limit at warn when it begins and
    /// every [`RATE_LIMIT_WARN_EVERY`]th time in a row (at debug between: a vendor that keeps
    /// answering 429 would otherwise fill the log with one line per retry, and the
    /// `poll_errors_total{kind="rate_limited"}` counter has them all), and at info when it ends;
    /// a server error of the vendor's (5xx, an outage: `kind="http"`) the same way at error;
    /// any other failure at error. `before` is the pacing before this poll's outcome.
    fn log_poll(
        &self,
        result: &Result<PollReport, PollError>,
        before: &PollPacing,
        pacing: &PollPacing,
        wait: Duration,
    ) {
        let poller = self.config.name.as_str();
        let paced = |in_a_row: u32| in_a_row == 1 || in_a_row.is_multiple_of(RATE_LIMIT_WARN_EVERY);
        if before.server_errors_in_a_row() > 0 && pacing.server_errors_in_a_row() == 0 {
            tracing::info!(
                poller,
                server_errors_in_a_row = before.server_errors_in_a_row(),
                "the API no longer answers with server errors"
            );
        }
        match result {
            Ok(report) => {
                if before.rate_limits_in_a_row() > 0 {
                    tracing::info!(
                        poller,
                        rate_limits_in_a_row = before.rate_limits_in_a_row(),
                        "no longer rate limited"
                    );
                }
                if report.records > 0 {
                    tracing::info!(
                        poller,
                        pages = report.pages,
                        records = report.records,
                        duplicates = report.duplicates,
                        "polled"
                    );
                }
            }
            Err(PollError::RateLimited(vendor_delay)) => {
                let in_a_row = pacing.rate_limits_in_a_row();
                if paced(in_a_row) {
                    tracing::warn!(poller, ?vendor_delay, delay = ?wait,
                        rate_limits_in_a_row = in_a_row, "rate limited");
                } else {
                    tracing::debug!(poller, ?vendor_delay, delay = ?wait,
                        rate_limits_in_a_row = in_a_row, "rate limited");
                }
            }
            Err(e) if e.is_server_error() => {
                let in_a_row = pacing.server_errors_in_a_row();
                if paced(in_a_row) {
                    tracing::error!(poller, error = %e, delay = ?wait,
                        server_errors_in_a_row = in_a_row,
                        failures_in_a_row = pacing.failures_in_a_row(),
                        "poll failed with a server error of the API; the checkpoint stays");
                } else {
                    tracing::debug!(poller, error = %e, delay = ?wait,
                        server_errors_in_a_row = in_a_row,
                        failures_in_a_row = pacing.failures_in_a_row(),
                        "poll failed with a server error of the API; the checkpoint stays");
                }
            }
            Err(e) => {
                tracing::error!(poller, error = %e,
                    failures_in_a_row = pacing.failures_in_a_row(),
                    "poll failed; the checkpoint stays");
            }
        }
    }

    /// One poll: pages from the checkpoint on, each stored before the checkpoint moves past it,
    /// until the vendor has nothing more or `max_pages_per_poll` is reached.
    pub async fn poll_once(&self) -> Result<PollReport, PollError> {
        let result = self.poll_pages().await;
        if let Some(m) = &self.metrics {
            let poller = [("poller", self.config.name.as_str())];
            match &result {
                // Pages and records are counted as they are stored (`submit`), so a poll that
                // fails part-way still counts what it stored.
                Ok(_) => {
                    m.set(
                        "poll_last_success_timestamp_seconds",
                        &poller,
                        Utc::now().timestamp() as f64,
                    );
                }
                Err(e) => m.inc(
                    "poll_errors_total",
                    &[("poller", self.config.name.as_str()), ("kind", e.kind())],
                    1,
                ),
            }
        }
        result
    }

    /// Fetch the page the next poll would read first, without submitting it or moving the
    /// checkpoint: checks a configuration (URL, credential, paging) before the service runs it.
    pub async fn probe(&self) -> Result<ProbeReport, PollError> {
        let (token, start) = self.token_and_start()?;
        match self.config.vendor {
            Vendor::M365 => {
                return m365::probe(self, &self.authorization(&token).await?, start).await
            }
            Vendor::AwsCloudtrail => return cloudtrail::probe(self, &token, start).await,
            Vendor::Salesforce => {
                return salesforce::probe(self, &self.authorization(&token).await?, start).await
            }
            _ => {}
        }
        let cp = self.checkpoint()?;
        let request = self.api.request(&cp, start)?;
        let (body, headers) = self
            .fetch(&request, &self.authorization(&token).await?)
            .await?;
        let page = self
            .api
            .page(&cp, start, Utc::now(), body, link_next(&headers))?;
        Ok(ProbeReport {
            url: request.url.to_string(),
            records: page.records.len(),
            newest: (!page.records.is_empty())
                .then_some(page.checkpoint.since)
                .flatten(),
            more: page.more,
        })
    }

    /// The credential (read now, so a rotated file is picked up) and where a first listing
    /// starts.
    fn token_and_start(&self) -> Result<(String, DateTime<Utc>), PollError> {
        let token = read_secret(&self.config.token)
            .map_err(|m| PollError::Config(format!("poll `{}`: `token`: {m}", self.config.name)))?;
        let start = Utc::now() - chrono::Duration::hours(self.config.initial_lookback_hours as i64);
        Ok((token, start))
    }

    /// The `Authorization` header value: the vendor's form of the token, or for Microsoft 365
    /// with a `client_id`, a bearer access token got with the token as the client secret
    /// (cached until a minute before it expires).
    async fn authorization(&self, token: &str) -> Result<String, PollError> {
        if let Some(client_id) = &self.config.client_id {
            let access = match self.config.vendor {
                Vendor::Salesforce => salesforce::access_token(self, client_id, token).await?,
                _ => m365::access_token(self, client_id, token).await?,
            };
            return Ok(format!("Bearer {access}"));
        }
        if self.config.vendor == Vendor::GoogleWorkspace {
            if let Some(key) = google::ServiceAccountKey::parse(token)? {
                return Ok(format!(
                    "Bearer {}",
                    google::access_token(self, &key).await?
                ));
            }
        }
        Ok(self.config.vendor.authorization(token))
    }

    /// An access token by the OAuth 2.0 client-credentials grant at `url` (Microsoft 365 asks
    /// for a `scope` too), kept until shortly before it expires.
    async fn client_credentials_token(
        &self,
        url: Url,
        client_id: &str,
        secret: &str,
        scope: Option<String>,
    ) -> Result<String, PollError> {
        self.oauth_token(url, || {
            let mut form = vec![
                ("grant_type", "client_credentials".to_string()),
                ("client_id", client_id.to_string()),
                ("client_secret", secret.to_string()),
            ];
            form.extend(scope.map(|s| ("scope", s)));
            Ok(form)
        })
        .await
    }

    /// An OAuth access token from `url`, got by posting the form `form` makes (client
    /// credentials, a signed assertion), cached until a minute before it expires. A 400 from
    /// the token endpoint (a wrong secret or client) is a refused credential.
    async fn oauth_token(
        &self,
        url: Url,
        form: impl FnOnce() -> Result<Vec<(&'static str, String)>, PollError>,
    ) -> Result<String, PollError> {
        let mut cached = self.access_token.lock().await;
        if let Some((token, renew_at)) = cached.as_ref() {
            if std::time::Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let request = vendor::PageRequest {
            form: Some(form()?),
            ..vendor::PageRequest::get(url)
        };
        let (body, _) = self.fetch(&request, "").await.map_err(|e| match e {
            PollError::Http {
                status: 400,
                detail,
                ..
            } => PollError::Unauthorized(400, detail),
            other => other,
        })?;
        let token = vendor::str_at(&body, &["access_token"])
            .ok_or_else(|| PollError::Malformed("the token answer has no access_token".into()))?;
        use perimeter_model::raw_prelude::*;
        let expires_in = body
            .get("expires_in")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(3600);
        let renew_at =
            std::time::Instant::now() + Duration::from_secs(expires_in.saturating_sub(60));
        *cached = Some((token.clone(), renew_at));
        Ok(token)
    }

    async fn poll_pages(&self) -> Result<PollReport, PollError> {
        let (token, start) = self.token_and_start()?;
        if self.config.vendor == Vendor::AwsCloudtrail {
            return cloudtrail::poll(self, &token, start).await;
        }
        let authorization = self.authorization(&token).await?;
        match self.config.vendor {
            Vendor::M365 => return m365::poll(self, &authorization, start).await,
            Vendor::Salesforce => return salesforce::poll(self, &authorization, start).await,
            _ => {}
        }
        let mut cp = self.checkpoint()?;
        self.begin_sweep_if_due(&mut cp, Utc::now());
        let resumed_from = cp.resume.clone();
        // `cp` is where reading stands (the next request is made from it); `saved` is the
        // checkpoint, moved past a page only once the page is stored. The next page is fetched
        // while the ones before are stored.
        let mut saved = cp.clone();
        let mut in_flight = InFlight::new(|saved: &mut Checkpoint, next: Checkpoint| *saved = next);
        let mut report = PollReport::default();
        let read = self
            .read_pages(
                &authorization,
                start,
                (&mut cp, &mut saved),
                &mut in_flight,
                &mut report,
            )
            .await;
        let stuck_noted = match read {
            Ok(noted) => noted,
            Err(e) => return Err(in_flight.stop_with(self, &mut saved, &mut report, e).await),
        };
        in_flight.settle_all(self, &mut saved, &mut report).await?;
        // A poll that goes on from a vendor link or cursor, reads only records stored before,
        // and ends at the same link or cursor will do the same at every poll. (A quiet source
        // reads nothing, or re-reads the records of a listing's lower bound with no cursor.)
        if !stuck_noted
            && report.duplicates > 0
            && report.events == 0
            && resumed_from.is_some()
            && cp.resume == resumed_from
        {
            self.note_stuck(
                "the poll read only records stored before and the vendor's next link or cursor ends where it began",
                &report,
            );
        }
        Ok(report)
    }

    /// The pages of one poll from `cp` on, each put on the bus (`in_flight`); true when the
    /// poll stopped at a page it had already requested (a loop, reported as stuck). The pages of
    /// a newest-first listing go on the bus oldest first once it ends or the poll stops, also
    /// when it stops at an error (they were read well).
    async fn read_pages<A: Fn(&mut Checkpoint, Checkpoint)>(
        &self,
        authorization: &str,
        start: DateTime<Utc>,
        (cp, saved): (&mut Checkpoint, &mut Checkpoint),
        in_flight: &mut InFlight<Checkpoint, A>,
        report: &mut PollReport,
    ) -> Result<bool, PollError> {
        let mut held = HeldListing::default();
        // The checkpoint of the last item put in flight: where the held pages' first parts
        // leave it (only the last part moves it past the listing).
        let mut pushed = saved.clone();
        let read = self
            .read_listing(
                authorization,
                start,
                (cp, saved),
                (&mut held, &mut pushed),
                in_flight,
                report,
            )
            .await;
        self.hand_on_oldest_first(&mut held, &mut pushed, in_flight, saved, report)
            .await?;
        read
    }

    /// [`Self::read_pages`] up to handing on the pages held at its end.
    async fn read_listing<A: Fn(&mut Checkpoint, Checkpoint)>(
        &self,
        authorization: &str,
        start: DateTime<Utc>,
        (cp, saved): (&mut Checkpoint, &mut Checkpoint),
        (held, pushed): (&mut HeldListing, &mut Checkpoint),
        in_flight: &mut InFlight<Checkpoint, A>,
        report: &mut PollReport,
    ) -> Result<bool, PollError> {
        // The requests made (URL and body): a vendor link or cursor leading back to one is a
        // loop, which would be read again up to `max_pages_per_poll` at every poll.
        let mut requested = std::collections::HashSet::new();
        // Whether this poll already listed again from the stored time after a refused link.
        let mut listed_again = false;
        while report.pages < self.config.max_pages_per_poll.max(1) {
            let request = self.api.request(cp, start)?;
            if !requested.insert((request.url.to_string(), request.body.clone())) {
                self.note_stuck(
                    "the vendor's next link or cursor leads back to a page this poll read; not followed",
                    report,
                );
                return Ok(true);
            }
            let (body, headers) = match self.fetch(&request, authorization).await {
                // A link or cursor the vendor no longer knows (expired after a long stop):
                // start the listing again from its lower bound, which repeats records the
                // store already has rather than skipping any.
                // Refused again after listing anew: the vendor's own links do not work (a proxy
                // or a `base_url` that rewrites paths, a cursor tied to another credential).
                // Listing anew once more would re-read the first page up to
                // `max_pages_per_poll` times at every poll while the poller looked healthy.
                Err(PollError::Http {
                    status,
                    url,
                    detail,
                }) if request.resumes && matches!(status, 400 | 404 | 410) && listed_again => {
                    return Err(PollError::Http {
                        status,
                        url,
                        detail: format!(
                            "{detail} (the vendor's next link or cursor was refused again after \
                             listing from the last stored time: does `base_url` or a proxy \
                             change the vendor's links?)"
                        ),
                    });
                }
                Err(PollError::Http { status, .. })
                    if request.resumes && matches!(status, 400 | 404 | 410) =>
                {
                    listed_again = true;
                    tracing::warn!(poller = %self.config.name, status,
                        "the vendor no longer knows where we were; reading from the last stored time again");
                    in_flight.settle_all(self, saved, report).await?;
                    // Listed again from its bound, the held pages come again.
                    *held = HeldListing::default();
                    *cp = Checkpoint {
                        resume: None,
                        listing_since: None,
                        since: cp.listing_since.or(cp.since),
                        ..Checkpoint::default()
                    };
                    self.save_checkpoint(cp)?;
                    *saved = cp.clone();
                    *pushed = saved.clone();
                    // Listing again from the bound repeats requests on purpose.
                    requested.clear();
                    continue;
                }
                other => other?,
            };
            let page = self
                .api
                .page(cp, start, Utc::now(), body, link_next(&headers))?;
            self.note_implausible_times(&page.times);
            report.pages += 1;
            *cp = page.checkpoint.clone();
            if self.config.vendor.lists_newest_first() {
                held.records += page.records.len();
                held.pages.push((page.records, page.checkpoint));
                if !page.more || held.records >= MAX_HELD_RECORDS {
                    self.hand_on_oldest_first(held, pushed, in_flight, saved, report)
                        .await?;
                }
            } else {
                let queued = self.enqueue(page.records).await?;
                *pushed = page.checkpoint.clone();
                in_flight.push(page.checkpoint, queued);
                in_flight.make_room(self, saved, report).await?;
            }
            if !page.more {
                break;
            }
        }
        Ok(false)
    }

    /// Put the held pages of a newest-first listing on the bus oldest first: the last page read
    /// first, each page's records reversed. The checkpoint moves past them only with the last
    /// one stored (the first page read, which carries the listing's checkpoint).
    async fn hand_on_oldest_first<A: Fn(&mut Checkpoint, Checkpoint)>(
        &self,
        held: &mut HeldListing,
        pushed: &mut Checkpoint,
        in_flight: &mut InFlight<Checkpoint, A>,
        saved: &mut Checkpoint,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let Some(listing_checkpoint) = held.pages.last().map(|(_, cp)| cp.clone()) else {
            return Ok(());
        };
        let pages = std::mem::take(&mut held.pages);
        held.records = 0;
        let last = pages.len() - 1;
        for (i, (mut records, _)) in pages.into_iter().rev().enumerate() {
            records.reverse();
            let queued = self.enqueue(records).await?;
            if i == last {
                *pushed = listing_checkpoint.clone();
            }
            in_flight.push(pushed.clone(), queued);
            in_flight.make_room(self, saved, report).await?;
        }
        Ok(())
    }

    /// Warn about and count (`poll_errors_total{kind="stuck"}`) a poll whose vendor paging goes
    /// round in a loop: the poll itself works (its records are stored, and `last_success` moves),
    /// so without this nothing would tell that no new record can come.
    fn note_stuck(&self, why: &str, report: &PollReport) {
        tracing::warn!(poller = %self.config.name, pages = report.pages,
            records = report.records, duplicates = report.duplicates,
            "the poller is stuck: {why}");
        if let Some(m) = &self.metrics {
            m.inc(
                "poll_errors_total",
                &[("poller", self.config.name.as_str()), ("kind", STUCK)],
                1,
            );
        }
    }

    /// At the start of a new listing, when a sweep is due: list from `late_records_minutes`
    /// before the newest stored record instead of from it, so records the vendor published
    /// late (with older times) are read too. The sweep's lower bound is the listing's, kept in
    /// the checkpoint until the listing is read through, so a restart mid-sweep goes on with it.
    fn begin_sweep_if_due(&self, cp: &mut Checkpoint, now: DateTime<Utc>) {
        let window = self.config.late_records_window();
        let at_listing_start = cp.resume.is_none() && cp.listing_since.is_none();
        if window == 0 || !at_listing_start {
            return;
        }
        let Some(since) = cp.since else {
            // The first listing starts `initial_lookback_hours` back: as good as a sweep.
            cp.last_sweep = Some(now);
            return;
        };
        let interval = chrono::Duration::minutes(self.config.late_sweep_interval_minutes as i64);
        // A sweep time in the future (the clock was set back) counts as long ago.
        if cp
            .last_sweep
            .is_some_and(|last| now - last < interval && last <= now)
        {
            return;
        }
        tracing::debug!(poller = %self.config.name, minutes = window,
            "sweeping for records published late");
        cp.listing_since = Some(since - chrono::Duration::minutes(window as i64));
        cp.last_sweep = Some(now);
    }

    /// Where `since` moves from `previous` once records with `times` are stored (see
    /// [`checkpoint_time`]), saying so when some of them were dated implausibly.
    fn checkpoint_time(
        &self,
        previous: Option<DateTime<Utc>>,
        times: impl IntoIterator<Item = DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        let found = checkpoint_time(previous, times, Utc::now());
        self.note_implausible_times(&found);
        found.since
    }

    /// Warn about and count (`poll_errors_total{kind="implausible_time"}`, one per record)
    /// records whose time cannot be true: they are stored, with their receive time as event
    /// time (ADR 012), but the checkpoint does not move to their time. A record dated far ahead
    /// is listed again at every poll (`since` stays before it): its time is counted once while
    /// the poller runs, not at every poll (two such records with the same time count once).
    fn note_implausible_times(&self, found: &CheckpointTime) {
        let now = Utc::now();
        let new: Vec<DateTime<Utc>> = {
            let mut noted = self
                .implausible_noted
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let new: Vec<_> = found
                .implausible
                .iter()
                .copied()
                .filter(|t| *t <= now || !noted.contains(t))
                .collect();
            if noted.len() + new.len() > IMPLAUSIBLE_TIMES_REMEMBERED {
                noted.clear();
            }
            noted.extend(new.iter().filter(|t| **t > now));
            new
        };
        let Some(first) = new.first() else {
            return;
        };
        tracing::warn!(poller = %self.config.name, records = new.len(),
            time = %first.to_rfc3339(),
            "records dated more than a day ahead or before 2000: stored with their receive time; the checkpoint does not move to their time");
        if let Some(m) = &self.metrics {
            m.inc(
                "poll_errors_total",
                &[
                    ("poller", self.config.name.as_str()),
                    ("kind", IMPLAUSIBLE_TIME),
                ],
                new.len() as u64,
            );
        }
    }

    /// Submit a page's records (line = place on the page) and wait until they are stored;
    /// how many there were and how many the store already had. Counts the page and its records
    /// in the metrics once stored.
    async fn submit(&self, records: Vec<perimeter_model::RawJson>) -> Result<Stored, PollError> {
        let queued = self.enqueue(records).await?;
        self.stored(queued).await
    }

    /// [`Self::submit`] without waiting: the page is on the bus, [`Self::stored`] waits for it.
    /// The bus is taken in order, so a feed of many small items (CloudTrail's files) fetches the
    /// next while the ones before are stored, and the store commits several at once.
    async fn enqueue(&self, records: Vec<perimeter_model::RawJson>) -> Result<Queued, PollError> {
        let items: Vec<InputItem> = records
            .into_iter()
            .enumerate()
            .map(|(i, value)| InputItem::Record {
                line: i as u64 + 1,
                value,
                member_lines: Vec::new(),
            })
            .collect();
        self.enqueue_items(items, true).await
    }

    /// Submit a page's items (records, and dead letters for parts of it that are unusable,
    /// such as a CSV row that does not fit its header); how many, and how many were duplicates.
    async fn submit_items(&self, items: Vec<InputItem>) -> Result<Stored, PollError> {
        let queued = self.enqueue_items(items, true).await?;
        self.stored(queued).await
    }

    /// Put `items` on the bus; `page`: they are a page of the feed (counted in the metrics once
    /// stored), not the dead letter of a set-aside item.
    async fn enqueue_items(&self, items: Vec<InputItem>, page: bool) -> Result<Queued, PollError> {
        let count = items.len();
        let pending = if items.is_empty() {
            None
        } else {
            // Dead letters say which poller they came from, as a spool file's name its own:
            // two pollers of one vendor (two Okta orgs) are told apart.
            let origin = format!("poller {}", self.config.name);
            let pending = self
                .bus
                .enqueue_from(
                    Some(&origin),
                    self.config.vendor.source(),
                    &self.tenant,
                    items,
                )
                .await
                .map_err(|e| PollError::NotStored(e.to_string()))?;
            Some(pending)
        };
        Ok(Queued {
            pending,
            count,
            page,
        })
    }

    /// Wait until `queued` is stored: a page's records and the store's counts of its events
    /// (all 0 for a set-aside item's dead letter). Counts the page in the metrics.
    async fn stored(&self, queued: Queued) -> Result<Stored, PollError> {
        let (duplicates, events) = match queued.pending {
            Some(pending) => {
                let ack = pending
                    .stored()
                    .await
                    .map_err(|e| PollError::NotStored(e.to_string()))?;
                (ack.duplicates, ack.events)
            }
            None => (0, 0),
        };
        if !queued.page {
            return Ok(Stored::default());
        }
        if let Some(m) = &self.metrics {
            let poller = [("poller", self.config.name.as_str())];
            m.inc("poll_pages_total", &poller, 1);
            m.inc("poll_records_total", &poller, queued.count as u64);
        }
        Ok(Stored {
            records: queued.count,
            duplicates,
            events,
        })
    }

    /// Store one dead letter for a whole item of a feed that cannot be used however often it
    /// is fetched again (a cut-off S3 log file, a content blob that is not JSON: both are
    /// written once and never change), so the feed goes on past it instead of failing on it at
    /// every poll while everything after it waits. `item` names it (an S3 key, a blob id);
    /// `reason` is why. The dead letter is put on the bus like a page ([`InFlight`] waits for it).
    async fn enqueue_set_aside(&self, item: &str, reason: &str) -> Result<Queued, PollError> {
        tracing::warn!(poller = %self.config.name, item, reason, "unusable item stored as a dead letter; going on past it");
        if let Some(m) = &self.metrics {
            m.inc(
                "poll_items_set_aside_total",
                &[("poller", self.config.name.as_str())],
                1,
            );
        }
        let invalid = InputItem::Invalid {
            line: 1,
            reason: format!("{item}: {reason}"),
            excerpt: item.to_string(),
            digest: crate::jsonl::input_digest(format!("{item}\n{reason}").as_bytes()),
        };
        self.enqueue_items(vec![invalid], false).await
    }

    /// Make one request (`authorization` empty: none); the parsed body and the headers.
    async fn fetch(
        &self,
        request: &vendor::PageRequest,
        authorization: &str,
    ) -> Result<(perimeter_model::RawJson, reqwest::header::HeaderMap), PollError> {
        let mut headers = vec![("accept", "application/json".to_string())];
        if !authorization.is_empty() {
            headers.push(("authorization", authorization.to_string()));
        }
        let (bytes, headers) = self.fetch_bytes(request, &headers).await?;
        let body = parse_page(&bytes).map_err(|e| {
            PollError::Malformed(format!(
                "the page is not JSON: {}",
                crate::jsonl::why_not_json(&bytes, &e)
            ))
        })?;
        Ok((body, headers))
    }

    /// Make one request with `headers`; the body (at most `max_page_bytes`) and the headers.
    async fn fetch_bytes(
        &self,
        request: &vendor::PageRequest,
        headers: &[(&'static str, String)],
    ) -> Result<(Vec<u8>, reqwest::header::HeaderMap), PollError> {
        let (mut response, transport) = self.send(request, headers).await?;
        let limit = self.config.max_page_bytes;
        let too_big = || {
            PollError::Malformed(format!(
                "the page is larger than max_page_bytes ({limit} bytes)"
            ))
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(&transport)? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, response.headers().clone()))
    }

    /// Make one request with `headers` and write the body to `path` as it arrives (log files
    /// larger than a page is allowed to be), at most `limit` bytes; how many were written.
    async fn download(
        &self,
        request: &vendor::PageRequest,
        headers: &[(&'static str, String)],
        path: &Path,
        limit: u64,
    ) -> Result<u64, PollError> {
        use tokio::io::AsyncWriteExt;
        let (mut response, transport) = self.send(request, headers).await?;
        let file_err = |e: std::io::Error| PollError::LocalFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut file = tokio::fs::File::create(path).await.map_err(file_err)?;
        let copied = async {
            let mut written = 0u64;
            while let Some(chunk) = response.chunk().await.map_err(&transport)? {
                written += chunk.len() as u64;
                if written > limit {
                    return Err(PollError::Malformed(format!(
                        "the file is larger than {limit} bytes"
                    )));
                }
                file.write_all(&chunk).await.map_err(file_err)?;
            }
            file.flush().await.map_err(file_err)?;
            Ok(written)
        }
        .await;
        if copied.is_err() {
            // A partial file is of no use, and may be gigabytes: the next poll downloads again.
            drop(file);
            let _ = tokio::fs::remove_file(path).await;
        }
        copied
    }

    /// Send one request with `headers`: the response of a success, or the error its status
    /// means; and how to report a transport failure reading its body.
    async fn send(
        &self,
        request: &vendor::PageRequest,
        headers: &[(&'static str, String)],
    ) -> Result<(reqwest::Response, impl Fn(reqwest::Error) -> PollError), PollError> {
        let mut builder = match (&request.body, &request.form) {
            (Some(body), _) => self.client.post(request.url.clone()).json(body),
            (None, Some(form)) => self.client.post(request.url.clone()).form(form),
            (None, None) => self.client.get(request.url.clone()),
        };
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        // The URL in errors has no credential in it (tokens go in the header only).
        let url = request.url.to_string();
        let transport = {
            let url = url.clone();
            move |e: reqwest::Error| PollError::Transport {
                url: url.clone(),
                reason: perimeter_model::error_chain(&e.without_url()),
            }
        };
        let response = builder.send().await.map_err(&transport)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || is_rate_limit_403(status, response.headers())
        {
            return Err(PollError::RateLimited(retry_delay(response.headers())));
        }
        if !status.is_success() {
            let detail =
                vendor_says(response, &sent_secrets(headers, request.form.as_deref())).await;
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(PollError::Unauthorized(status.as_u16(), detail));
            }
            return Err(PollError::Http {
                status: status.as_u16(),
                url,
                detail,
            });
        }
        Ok((response, transport))
    }
}

/// Most of an error answer read for its message.
const ERROR_BODY_BYTES: usize = 16 * 1024;
/// Most characters of a vendor's error message quoted.
const VENDOR_MESSAGE_CHARS: usize = 200;

/// Form fields that carry a credential (OAuth client secrets and signed assertions).
const SECRET_FORM_FIELDS: &[&str] = &[
    "client_secret",
    "client_assertion",
    "assertion",
    "refresh_token",
    "password",
];

/// The credentials a request sent: its headers' values (`Bearer <token>`, `SSWS <token>`, or
/// the token alone) and its form's secret fields. An error answer may quote them back, and
/// the masker cannot know them for secrets by their look.
fn sent_secrets<'a>(
    headers: &'a [(&'static str, String)],
    form: Option<&'a [(&'static str, String)]>,
) -> Vec<&'a str> {
    let from_headers = headers
        .iter()
        .map(|(_, value)| value.rsplit(' ').next().unwrap_or(value));
    let from_form = form
        .unwrap_or_default()
        .iter()
        .filter(|(name, _)| SECRET_FORM_FIELDS.contains(name))
        .map(|(_, value)| value.as_str());
    from_headers.chain(from_form).collect()
}

/// `: vendor says "<message>"` from an error answer's body, or empty when it has none that can
/// be told (an HTML page, an empty body). One line, at most [`VENDOR_MESSAGE_CHARS`], and
/// never a credential sent (`secrets`), should the vendor echo it. (What else it quotes is
/// masked where it is shown: logs and `poll-check` mask what they print.)
async fn vendor_says(mut response: reqwest::Response, secrets: &[&str]) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_BYTES);
    let Some(message) = vendor_message(&body) else {
        return String::new();
    };
    let mut message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for secret in secrets {
        if secret.len() >= 8 {
            message = message.replace(secret, "[REDACTED]");
        }
    }
    let mut quoted: String = message.trim().chars().take(VENDOR_MESSAGE_CHARS).collect();
    if message.trim().chars().count() > VENDOR_MESSAGE_CHARS {
        quoted.push_str("...");
    }
    format!(": vendor says {quoted:?}")
}

/// The message of a vendor's JSON error answer, as the vendors put it: `message` (GitHub,
/// LaunchDarkly), `errorSummary` (Okta), `error_description` (OAuth), `error` as text (Slack,
/// OAuth) or as an object with a `message` (Google, Microsoft), `errors[0]` (1Password,
/// GraphQL-style). A short plain-text answer is taken as it is; HTML pages are not quoted.
fn vendor_message(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        let plain = !text.is_empty() && !text.starts_with('<') && text.lines().count() <= 3;
        return plain.then(|| text.to_string());
    };
    let as_text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_string),
        _ => None,
    };
    let json = match &json {
        // Salesforce answers a list of errors.
        serde_json::Value::Array(list) => list.first()?,
        other => other,
    };
    [
        "errorSummary",
        "error_description",
        "message",
        "error",
        "Message",
    ]
    .iter()
    .find_map(|k| json.get(k).and_then(as_text))
    .or_else(|| json.get("errors")?.get(0).and_then(as_text))
}

/// The `rel="next"` target of the `Link` headers, if any.
fn link_next(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(vendor::next_link)
}

impl PollError {
    /// Whether the vendor answered with a server error (HTTP 5xx): an outage on its side,
    /// retried with the backoff and logged like a rate limit.
    pub fn is_server_error(&self) -> bool {
        matches!(self, PollError::Http { status, .. } if (500..600).contains(status))
    }

    /// The `kind` label of `poll_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            PollError::Config(_) => "config",
            PollError::Unauthorized(..) => "unauthorized",
            PollError::RateLimited(_) => "rate_limited",
            PollError::Http { .. } => "http",
            PollError::Transport { .. } => "transport",
            PollError::Malformed(_) => "malformed",
            PollError::NotStored(_) => "not_stored",
            PollError::Checkpoint { .. } => "checkpoint",
            PollError::LocalFile { .. } => "local_file",
        }
    }
}

/// Whether a 403 is a rate limit, not a refused credential: GitHub answers its primary limit
/// with `x-ratelimit-remaining: 0` and its secondary limits with `retry-after`, both on a 403.
fn is_rate_limit_403(status: StatusCode, headers: &reqwest::header::HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    status == StatusCode::FORBIDDEN
        && (header("x-ratelimit-remaining").is_some_and(|v| v.trim() == "0")
            || header("retry-after").is_some())
}

/// How long a 429 asks to wait: `Retry-After` seconds or date, Okta's `X-Rate-Limit-Reset` (epoch
/// seconds), or a minute; at most an hour.
fn retry_delay(headers: &reqwest::header::HeaderMap) -> Duration {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    // `Retry-After` may also be an HTTP date (RFC 9110), which RFC 2822 parsing reads.
    let retry_at = || {
        headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v.trim()).ok())
            .map(|at| at.timestamp() - Utc::now().timestamp())
    };
    let secs = number("retry-after")
        .or_else(retry_at)
        .or_else(|| number("x-ratelimit-reset").map(|reset| reset - Utc::now().timestamp()))
        .or_else(|| number("x-rate-limit-reset").map(|reset| reset - Utc::now().timestamp()))
        .unwrap_or(60);
    Duration::from_secs(secs.clamp(1, 3600) as u64)
}

/// Whether `url` names this machine (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The value behind a secret reference (see [`perimeter_model::resolve_secret`]). Errors name
/// the reference, never a value.
fn read_secret(reference: &str) -> Result<String, String> {
    use perimeter_model::SecretError;
    let bytes = perimeter_model::resolve_secret(reference).map_err(|e| match e {
        SecretError::EnvUnset(name) => format!("environment variable `{name}` is not set"),
        SecretError::NotAReference => "must be `env:NAME` or `file:/path`".into(),
        other => other.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|_| format!("`{reference}` is not UTF-8"))
}

/// A page's JSON. One record in it holding half of a surrogate pair escaped alone (`\ud83d`, a
/// string a vendor cut mid-emoji), or one byte that is not UTF-8 (a Latin-1 `é` from a legacy
/// system behind the API), made the whole page "not JSON", at every poll, for as long as the
/// vendor listed it, and the poller never got past it: both are read as the replacement
/// character instead.
fn parse_page(bytes: &[u8]) -> Result<perimeter_model::RawJson, sonic_rs::Error> {
    sonic_rs::from_slice(bytes).or_else(|e| {
        let lossy = std::str::from_utf8(bytes)
            .is_err()
            .then(|| String::from_utf8_lossy(bytes).into_owned().into_bytes());
        let text = lossy.as_deref().unwrap_or(bytes);
        match perimeter_model::without_lone_surrogates(text) {
            Some(fixed) => sonic_rs::from_slice(&fixed),
            None if lossy.is_some() => sonic_rs::from_slice(text),
            None => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {

    /// A page holding a lone surrogate escape or a byte that is not UTF-8 is read, those as
    /// the replacement character; a page that is no JSON is still refused.
    #[test]
    fn a_page_with_a_lone_surrogate_or_a_stray_byte_is_read() {
        use sonic_rs::JsonValueTrait;
        let page =
            |text: &[u8]| super::parse_page(text).map(|v| v[0]["m"].as_str().map(str::to_string));
        assert_eq!(
            page(br#"[{"m": "cut \ud83d"}]"#).unwrap().as_deref(),
            Some("cut \u{fffd}")
        );
        assert_eq!(
            page(b"[{\"m\": \"Caf\xe9\"}]").unwrap().as_deref(),
            Some("Caf\u{fffd}")
        );
        assert_eq!(
            page(b"[{\"m\": \"\xe9 \\ud83d\"}]").unwrap().as_deref(),
            Some("\u{fffd} \u{fffd}")
        );
        assert!(super::parse_page(b"<html>busy</html>").is_err());
    }

    use super::*;

    #[test]
    fn a_403_with_rate_limit_headers_is_a_rate_limit() {
        let mut h = reqwest::header::HeaderMap::new();
        assert!(
            !is_rate_limit_403(StatusCode::FORBIDDEN, &h),
            "a refused token"
        );
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        assert!(is_rate_limit_403(StatusCode::FORBIDDEN, &h));
        assert!(!is_rate_limit_403(StatusCode::UNAUTHORIZED, &h));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-ratelimit-remaining", "4999".parse().unwrap());
        assert!(!is_rate_limit_403(StatusCode::FORBIDDEN, &h));
        h.insert("retry-after", "60".parse().unwrap());
        assert!(
            is_rate_limit_403(StatusCode::FORBIDDEN, &h),
            "a secondary limit"
        );
    }

    #[tokio::test]
    async fn a_transport_error_says_its_cause() {
        // A port nothing listens on: the cause (refused) must be in the text.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = reqwest::Client::new()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap_err();
        let text = perimeter_model::error_chain(&e.without_url());
        assert!(text.len() > "error sending request".len() + 5, "{text}");
    }

    #[test]
    fn vendor_error_messages_are_found_where_each_vendor_puts_them() {
        let said = |body: &str| vendor_message(body.as_bytes());
        let cases = [
            (
                r#"{"errorCode":"E0000011","errorSummary":"Invalid token provided"}"#,
                "Invalid token provided",
            ),
            (r#"{"ok":false,"error":"invalid_auth"}"#, "invalid_auth"),
            (
                r#"{"error":{"code":400,"message":"Invalid value for: startTime","status":"INVALID_ARGUMENT"}}"#,
                "Invalid value for: startTime",
            ),
            (
                r#"{"error":"invalid_grant","error_description":"AADSTS7000215: Invalid client secret"}"#,
                "AADSTS7000215: Invalid client secret",
            ),
            (
                r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
                "Session expired or invalid",
            ),
            (r#"{"errors":[{"message":"bad cursor"}]}"#, "bad cursor"),
            ("Service Unavailable", "Service Unavailable"),
        ];
        for (body, message) in cases {
            assert_eq!(said(body).as_deref(), Some(message), "{body}");
        }
        for nothing in [
            "",
            "<!DOCTYPE html><html>...</html>",
            "{}",
            r#"{"error":""}"#,
        ] {
            assert_eq!(said(nothing), None, "{nothing:?}");
        }
        assert_eq!(vendor_message(&[0xff, 0xfe, b'x']), None);
    }

    #[test]
    fn checkpoints_move_to_plausible_record_times_and_never_past_now() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let now = at("2026-12-04T12:00:00Z");
        let before = Some(at("2026-12-04T11:00:00Z"));
        let moved = |previous, times: &[&str]| {
            let found = checkpoint_time(previous, times.iter().map(|t| at(t)), now);
            (found.since, found.implausible.len())
        };
        assert_eq!(
            moved(before, &["2026-12-04T11:30:00Z", "2026-12-04T11:10:00Z"]),
            (Some(at("2026-12-04T11:30:00Z")), 0)
        );
        // An hour ahead is plausible (a vendor clock a little off) but does not move `since`,
        // not even to now: records the vendor publishes later, dated between the newest one
        // that has passed and now, would be skipped.
        assert_eq!(moved(before, &["2026-12-04T13:00:00Z"]), (before, 0));
        assert_eq!(
            moved(before, &["2026-12-04T13:00:00Z", "2026-12-04T11:30:00Z"]),
            (Some(at("2026-12-04T11:30:00Z")), 0)
        );
        assert_eq!(moved(None, &["2026-12-04T13:00:00Z"]), (None, 0));
        // A record dated now has passed.
        assert_eq!(moved(before, &["2026-12-04T12:00:00Z"]), (Some(now), 0));
        // The year 3000, or before 2000: stored, counted, and `since` does not move.
        assert_eq!(
            moved(before, &["3000-01-01T00:00:00Z", "1970-01-01T00:00:01Z"]),
            (before, 2)
        );
        assert_eq!(moved(None, &["3000-01-01T00:00:00Z"]), (None, 1));
        // A checkpoint saved ahead of now (before this rule) comes back to now.
        assert_eq!(moved(Some(at("3000-01-01T00:00:00Z")), &[]), (Some(now), 0));
        let found = checkpoint_time(before, [at("3000-01-01T00:00:00Z")], now);
        assert_eq!(found.implausible, [at("3000-01-01T00:00:00Z")]);
    }

    #[test]
    fn retry_delays() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_delay(&h), Duration::from_secs(60));
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_delay(&h), Duration::from_secs(7));
        let mut h = reqwest::header::HeaderMap::new();
        let reset = Utc::now().timestamp() + 30;
        h.insert("x-rate-limit-reset", reset.to_string().parse().unwrap());
        let d = retry_delay(&h).as_secs();
        assert!((28..=30).contains(&d), "{d}");
        h.insert("retry-after", "999999".parse().unwrap());
        assert_eq!(retry_delay(&h), Duration::from_secs(3600));
        // An HTTP date (it was taken for no header: a minute).
        let mut h = reqwest::header::HeaderMap::new();
        let at = (Utc::now() + chrono::Duration::seconds(12))
            .to_rfc2822()
            .replace("+0000", "GMT");
        h.insert("retry-after", at.parse().unwrap());
        let d = retry_delay(&h).as_secs();
        assert!((10..=12).contains(&d), "{at}: {d}");
    }

    #[test]
    fn rate_limits_asking_for_less_than_the_backoff_wait_the_backoff() {
        let mut pacing = PollPacing::new(Duration::from_secs(60));
        let limited = |secs| Err(PollError::RateLimited(Duration::from_secs(secs)));
        let failed = Err(PollError::Malformed("x".into()));
        let waits = |pacing: &mut PollPacing, results: &[Result<PollReport, PollError>]| {
            results
                .iter()
                .map(|r| pacing.after(r).as_secs())
                .collect::<Vec<_>>()
        };
        // Retry-After 0 (taken as a second): growing like failures', up to the interval.
        let zeros: Vec<_> = (0..8).map(|_| limited(1)).collect();
        assert_eq!(waits(&mut pacing, &zeros), [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(pacing.rate_limits_in_a_row(), 8);
        // A poll that worked ends the run; a long Retry-After is waited in full.
        assert_eq!(
            waits(
                &mut pacing,
                &[Ok(PollReport::default()), limited(3600), limited(1)]
            ),
            [60, 3600, 4]
        );
        // Failures count on their own.
        assert_eq!(
            waits(
                &mut pacing,
                &[failed, Err(PollError::NotStored("x".into()))]
            ),
            [2, 4]
        );
        assert_eq!(pacing.failures_in_a_row(), 2);
        // An interval under the backoff caps it.
        let mut fast = PollPacing::new(Duration::from_secs(3));
        assert_eq!(
            waits(&mut fast, &[limited(1), limited(1), limited(1)]),
            [2, 3, 3]
        );
    }

    #[test]
    fn secrets_are_references() {
        std::env::set_var("PERIMETER_TEST_POLL_SECRET", "s3cr3t");
        assert_eq!(
            read_secret("env:PERIMETER_TEST_POLL_SECRET").unwrap(),
            "s3cr3t"
        );
        let err = read_secret("env:PERIMETER_TEST_POLL_UNSET").unwrap_err();
        assert!(err.contains("PERIMETER_TEST_POLL_UNSET"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "tok\n").unwrap();
        assert_eq!(
            read_secret(&format!("file:{}", f.display())).unwrap(),
            "tok"
        );
        assert!(read_secret("s3cr3t").is_err());
    }

    fn config(vendor: Vendor) -> PollConfig {
        PollConfig {
            max_page_bytes: 1 << 20,
            ..PollConfig::new(
                "okta-prod",
                vendor,
                "https://acme.okta.com",
                "env:OKTA_TOKEN",
            )
        }
    }

    #[test]
    fn configs_that_cannot_work_are_refused_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, _rx) = crate::bus::channel(1);
        let refuse = |c: PollConfig| {
            PollSource::new(c, "t", dir.path(), bus.clone())
                .err()
                .expect("refused")
                .to_string()
        };
        assert!(PollSource::new(config(Vendor::Okta), "t", dir.path(), bus.clone()).is_ok());
        let mut c = config(Vendor::Okta);
        c.token = "00abcdefLiteralToken".into();
        let e = refuse(c);
        assert!(
            e.contains("secret reference") && !e.contains("00abcdef"),
            "{e}"
        );
        let mut c = config(Vendor::Okta);
        c.base_url = "ftp://x".into();
        assert!(refuse(c).contains("http(s)"));
        let mut c = config(Vendor::Okta);
        c.base_url = "http://acme.okta.com".into();
        assert!(refuse(c).contains("plain http"));
        for local in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000",
        ] {
            let mut c = config(Vendor::Okta);
            c.base_url = local.into();
            assert!(
                PollSource::new(c, "t", dir.path(), bus.clone()).is_ok(),
                "{local}"
            );
        }
        let mut c = config(Vendor::Okta);
        c.base_url = "https://admin:hunter2@acme.okta.com".into();
        let e = refuse(c);
        assert!(
            e.contains("no user, password or query") && !e.contains("hunter2"),
            "{e}"
        );
        let mut c = config(Vendor::Okta);
        c.base_url = "https://acme.okta.com/?token=abc".into();
        assert!(refuse(c).contains("no user, password or query"));
        let mut c = config(Vendor::Okta);
        c.name = "../x".into();
        assert!(refuse(c).contains("names a file"));
        assert!(refuse(config(Vendor::Github)).contains("`org`"));
        assert!(refuse(config(Vendor::Onepassword)).contains("`feed`"));
    }
}
