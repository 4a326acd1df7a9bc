//! Alert destinations: webhooks an admin registers per tenant, and the notifier that posts new
//! alerts to them.
//!
//! Guarantees:
//! - a destination belongs to one tenant and only ever receives that tenant's alerts;
//! - what is posted is the alert as the pipeline produced it, masked (the notifier never sees
//!   clear values);
//! - delivery is a round of [`MAX_ATTEMPTS`] tries per batch with backoff, off the ingest path:
//!   a slow or failing webhook never delays acknowledging input, and batches are delivered side
//!   by side, so it does not hold up other destinations either. A failed round is counted in
//!   `destination_failures_total`, and the batch (still in the outbox) is sent again to the
//!   destinations that did not take it, a minute later and then at growing intervals up to 15
//!   minutes, for a day ([`REDELIVER_FOR_BASES`]); then it is given up on
//!   (`destination_batches_abandoned_total`, an error in the log). The alerts stay in the store;
//! - a batch for a tenant with destinations is written to the durable outbox
//!   ([`crate::outbox`]) before [`AlertNotifier::notify`] returns, i.e. before the input is
//!   acknowledged; batches a stop (even `kill -9`) left undelivered are sent at the next start
//!   (at least once: receivers tell repeats apart by alert id);
//! - the destination list is a JSON file written with write-then-rename, so a crash never leaves
//!   half of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use perimeter_model::{Alert, Metrics, Severity};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::outbox::{AlertRef, DeliveryOutbox, PendingBatch};

/// Tries per batch and destination in one round (the first one included).
pub const MAX_ATTEMPTS: u32 = 4;
/// How long (in retry bases, 1 s in the service: a day) a batch is sent again after its first
/// failed round: a webhook down for a deploy or an outage still gets the alerts when it is back.
pub const REDELIVER_FOR_BASES: u32 = 86_400;
/// The wait before the round after `rounds_failed` failed ones, in retry bases: a minute, then
/// doubling up to 15 minutes.
fn redelivery_wait_bases(rounds_failed: u32) -> u32 {
    60u32
        .saturating_mul(1 << rounds_failed.saturating_sub(1).min(4))
        .min(900)
}
/// Batches in delivery at once; more wait their turn in memory (and in the outbox).
const QUEUE_BATCHES: usize = 1024;
/// Longest a webhook may take to answer one try.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The alerts of one post stay within this many bytes of JSON: many receivers refuse bodies
/// over 1 MB, and an incident that raises thousands of alerts at once (a spray over every user)
/// would otherwise be one post refused on every retry, none of its alerts ever arriving.
const MAX_POST_BYTES: usize = 512 * 1024;
/// Posts in flight to one destination: a webhook that is down ties up only its own.
const POSTS_PER_DESTINATION: usize = 4;
/// Destinations per tenant (a list an admin manages by hand).
pub const MAX_DESTINATIONS_PER_TENANT: usize = 32;

/// What a destination's deliveries look like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DestinationFormat {
    /// `{"tenant", "destination", "alerts": [...]}`: every alert whole, for programs.
    #[default]
    Json,
    /// `{"text": "..."}`, one line per alert: what Slack incoming webhooks (and Mattermost,
    /// Rocket.Chat, Discord's `/slack` endpoints) accept, for people.
    Slack,
}

/// A webhook that receives a tenant's new alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Destination {
    /// `dst_` followed by 16 hex characters.
    pub id: String,
    /// The tenant whose alerts it receives (the creating token's).
    pub tenant: String,
    /// A name for people (`soc-slack`, `pagerduty-high`).
    pub name: String,
    /// `http://` or `https://` URL the alerts are POSTed to.
    pub url: String,
    /// Only alerts at or above this severity are sent.
    #[schema(inline, value_type = crate::routes::SeverityName, example = "high")]
    pub min_severity: Severity,
    /// `json` (default) or `slack`.
    #[serde(default)]
    pub format: DestinationFormat,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Token id of the admin who created it.
    pub created_by: String,
    /// Key of the `X-Perimeter-Signature: sha256=<hex HMAC-SHA256 of the body>` header on every
    /// delivery, so the receiver can tell Perimeter's posts from forged ones. Shown once, in
    /// the answer to the creation; lists leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How deliveries to it went since the service started (in lists; not persisted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStatus>,
}

/// How deliveries to a destination went since the service started, so an admin can see that a
/// webhook is down without reading logs. Kept in memory only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryStatus {
    /// Batches the destination accepted (2xx).
    pub batches_delivered: u64,
    /// Batches given up on: refused (an address alerts may not go to), or a day of failed
    /// rounds of tries.
    pub batches_failed: u64,
    /// Failed tries since the last accepted one.
    pub consecutive_failed_tries: u64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Cause of the last failed try: an HTTP status or a connection error (never the URL or the
    /// alerts).
    pub last_error: Option<String>,
}

/// The outcome of one delivery try, or of a batch.
enum DeliveryEvent<'a> {
    TryFailed(&'a str),
    Delivered,
    GaveUp,
}

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("invalid destination: {0}")]
    Invalid(String),
    #[error("destination store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The registered destinations of every tenant, persisted in one JSON file.
#[derive(Debug)]
pub struct DestinationStore {
    path: Option<PathBuf>,
    /// Whether loopback and private addresses may receive alerts (see [`crate::egress`]).
    allow_private: bool,
    all: Mutex<Vec<Destination>>,
    /// Delivery status by destination id.
    status: Mutex<std::collections::HashMap<String, DeliveryStatus>>,
}

impl DestinationStore {
    /// Open (or start) the list at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<DestinationStore, DestinationError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| DestinationError::Io {
            path: path.clone(),
            source,
        };
        let all = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io(e.into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        Ok(DestinationStore {
            path: Some(path),
            allow_private: true,
            all: Mutex::new(all),
            status: Mutex::default(),
        })
    }

    /// `destinations.json` in the data directory.
    pub fn open_in(data_dir: impl AsRef<Path>) -> Result<DestinationStore, DestinationError> {
        DestinationStore::open(data_dir.as_ref().join("destinations.json"))
    }

    /// A list that lives in memory only (tests, and services without a data directory).
    pub fn in_memory() -> DestinationStore {
        DestinationStore {
            path: None,
            allow_private: true,
            all: Mutex::new(Vec::new()),
            status: Mutex::default(),
        }
    }

    /// Whether loopback and private addresses may receive alerts (default yes; turn it off where
    /// tenants are not the operator, see [`crate::egress`]). Link-local (cloud metadata) and
    /// non-unicast addresses never may.
    pub fn allow_private_destinations(mut self, allow: bool) -> DestinationStore {
        self.allow_private = allow;
        self
    }

    /// `url` parsed, if alerts may be posted there: an http(s) URL with a host that is no
    /// refused address; else why not.
    fn usable_url(&self, url: &str) -> Result<reqwest::Url, String> {
        let parsed =
            reqwest::Url::parse(url.trim()).map_err(|e| format!("`url` is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err("`url` must be an http:// or https:// URL with a host".into());
        }
        if let Some(why) = crate::egress::literal_refusal(&parsed, self.allow_private) {
            return Err(format!("{}: {why}", crate::egress::REFUSED));
        }
        // A name that is loopback by definition (RFC 6761); other names are checked when
        // resolved, at delivery.
        let host = parsed.host_str().unwrap_or_default().trim_end_matches('.');
        let loopback_name = host.eq_ignore_ascii_case("localhost")
            || host
                .len()
                .checked_sub(".localhost".len())
                .and_then(|i| host.get(i..))
                .is_some_and(|t| t.eq_ignore_ascii_case(".localhost"));
        if loopback_name && !self.allow_private {
            return Err(format!(
                "{}: {host} is a loopback name (allow_private_destinations is off)",
                crate::egress::REFUSED
            ));
        }
        Ok(parsed)
    }

    /// Why alerts cannot go to `d`, if they cannot: its URL is not one the API would take now,
    /// or it has no signing secret (an empty one is none).
    fn why_unusable(&self, d: &Destination) -> Option<String> {
        if let Err(why) = self.usable_url(&d.url) {
            return Some(why);
        }
        d.secret
            .as_deref()
            .is_none_or(str::is_empty)
            .then(|| "it has no signing `secret`".to_string())
    }

    /// The registered destinations alerts cannot go to, each with why (its URL is not one the
    /// API would take now, e.g. a private address after `allow_private_destinations` was turned
    /// off, or a hand-edited file's; it has no signing secret). For `run --check` and the
    /// start's log: their batches are given up at the first try (QA: nothing said so before).
    pub fn unusable(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter_map(|d| {
                let why = self.why_unusable(d)?;
                Some(format!(
                    "destination `{}` ({}) of tenant `{}` gets no alerts: {why}",
                    d.name, d.id, d.tenant
                ))
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Destination>> {
        // A panic while holding the lock cannot leave the list half-changed (changes are
        // whole pushes/retains), so a poisoned lock is still usable.
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tenant's destinations, oldest first, without their signing secrets, with how
    /// deliveries to them went.
    pub fn list(&self, tenant: &str) -> Vec<Destination> {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        self.with_secrets(tenant)
            .into_iter()
            .map(|d| Destination {
                secret: None,
                delivery: Some(status.get(&d.id).cloned().unwrap_or_default()),
                ..d
            })
            .collect()
    }

    /// Count a delivery try or outcome for destination `id`.
    fn record(&self, id: &str, event: DeliveryEvent<'_>) {
        let mut all = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let status = all.entry(id.to_string()).or_default();
        let now = Utc::now();
        match event {
            DeliveryEvent::TryFailed(error) => {
                status.consecutive_failed_tries += 1;
                status.last_failure_at = Some(now);
                status.last_error = Some(error.to_string());
            }
            DeliveryEvent::Delivered => {
                status.batches_delivered += 1;
                status.consecutive_failed_tries = 0;
                status.last_success_at = Some(now);
            }
            DeliveryEvent::GaveUp => status.batches_failed += 1,
        }
    }

    /// Whether the tenant has any destination.
    pub fn has_any(&self, tenant: &str) -> bool {
        self.lock().iter().any(|d| d.tenant == tenant)
    }

    /// The tenant's destinations with their signing secrets (for delivery).
    fn with_secrets(&self, tenant: &str) -> Vec<Destination> {
        self.lock()
            .iter()
            .filter(|d| d.tenant == tenant)
            .cloned()
            .collect()
    }

    /// Register a destination after validating it; persisted before returning.
    pub fn create(
        &self,
        tenant: &str,
        name: &str,
        url: &str,
        min_severity: Severity,
        created_by: &str,
    ) -> Result<Destination, DestinationError> {
        self.create_as(
            tenant,
            name,
            url,
            min_severity,
            DestinationFormat::Json,
            created_by,
        )
    }

    /// [`Self::create`] with a delivery format.
    pub fn create_as(
        &self,
        tenant: &str,
        name: &str,
        url: &str,
        min_severity: Severity,
        format: DestinationFormat,
        created_by: &str,
    ) -> Result<Destination, DestinationError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(DestinationError::Invalid(
                "`name` must be 1 to 100 characters".into(),
            ));
        }
        let parsed = self.usable_url(url).map_err(DestinationError::Invalid)?;
        let mut all = self.lock();
        if all.iter().filter(|d| d.tenant == tenant).count() >= MAX_DESTINATIONS_PER_TENANT {
            return Err(DestinationError::Invalid(format!(
                "a tenant has at most {MAX_DESTINATIONS_PER_TENANT} destinations"
            )));
        }
        let mut random = [0u8; 8 + 32];
        getrandom::fill(&mut random)
            .map_err(|e| DestinationError::Invalid(format!("no randomness for an id: {e}")))?;
        let destination = Destination {
            id: format!("dst_{}", hex::encode(&random[..8])),
            secret: Some(format!("whsec_{}", hex::encode(&random[8..]))),
            tenant: tenant.to_string(),
            name: name.to_string(),
            url: parsed.to_string(),
            min_severity,
            format,
            created_at: Utc::now(),
            created_by: created_by.to_string(),
            delivery: None,
        };
        let mut next = all.clone();
        next.push(destination.clone());
        self.persist(&next)?;
        *all = next;
        Ok(destination)
    }

    /// Remove one of the tenant's destinations; `false` when the tenant has none with that id.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<bool, DestinationError> {
        let mut all = self.lock();
        let next: Vec<Destination> = all
            .iter()
            .filter(|d| !(d.tenant == tenant && d.id == id))
            .cloned()
            .collect();
        if next.len() == all.len() {
            return Ok(false);
        }
        self.persist(&next)?;
        *all = next;
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(true)
    }

    fn persist(&self, all: &[Destination]) -> Result<(), DestinationError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| DestinationError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(all).map_err(|e| io(e.into()))?;
        // The file holds the signing secrets: owner only.
        crate::files::replace_file(path, &bytes, crate::files::Readers::Owner).map_err(io)
    }
}

/// Posts alerts to their tenant's destinations, in the background: new ones, and those Perimeter
/// resolved itself (their `status` says so). Cheap to clone.
#[derive(Clone)]
pub struct AlertNotifier {
    /// Unbounded: a batch is already in the outbox (and its memory) when it is sent here, so a
    /// bound would only add a second place for the batches beyond it to wait in.
    tx: tokio::sync::mpsc::UnboundedSender<PendingBatch>,
    /// Batches in delivery at once; beyond as many again waiting, new ones count as overflow.
    queue_batches: usize,
    destinations: Arc<DestinationStore>,
    outbox: Arc<DeliveryOutbox>,
    metrics: Arc<Metrics>,
}

/// The JSON body a destination receives.
#[derive(Serialize)]
struct Delivery<'a> {
    tenant: &'a str,
    destination: &'a str,
    alerts: Vec<&'a Alert>,
    /// Present (`true`) when the alerts were sent before and are still firing: their repeats
    /// took their `count` past 10, 100, 1000, ... (same ids as before).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    still_firing: bool,
}

impl AlertNotifier {
    /// Start the delivery task on the current tokio runtime. It first sends `pending` (what a
    /// previous run left in `outbox`, see [`DeliveryOutbox::open_in`]), then new batches.
    /// `retry_base`: the first retry waits this long, each later one four times longer
    /// (production: 1 s).
    pub fn spawn(
        destinations: Arc<DestinationStore>,
        metrics: Arc<Metrics>,
        retry_base: Duration,
        outbox: Arc<DeliveryOutbox>,
        pending: Vec<PendingBatch>,
    ) -> AlertNotifier {
        Self::spawn_sized(
            destinations,
            metrics,
            retry_base,
            outbox,
            pending,
            QUEUE_BATCHES,
        )
    }

    /// [`Self::spawn`] with `queue_batches` for the queue and for the batches in delivery.
    fn spawn_sized(
        destinations: Arc<DestinationStore>,
        metrics: Arc<Metrics>,
        retry_base: Duration,
        outbox: Arc<DeliveryOutbox>,
        pending: Vec<PendingBatch>,
        queue_batches: usize,
    ) -> AlertNotifier {
        let queue_batches = queue_batches.max(1);
        for destination in destinations.lock().iter() {
            counted_from_zero(&metrics, &destination.id);
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PendingBatch>();
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // Names are resolved to addresses alerts may go to only, and a redirect could
            // point anywhere: webhooks answer where they are registered.
            .dns_resolver(Arc::new(crate::egress::GuardedDns {
                allow_private: destinations.allow_private,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("perimeter/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let delivery = Arc::new(BatchDelivery {
            client,
            destinations: destinations.clone(),
            outbox: outbox.clone(),
            metrics: metrics.clone(),
            retry_base,
            slots: Mutex::default(),
            again: tx.downgrade(),
        });
        tokio::spawn(async move {
            // Batches are delivered side by side, and each destination has its own few slots for
            // posts, so a webhook that is down (a round of four tries, ~21 s a batch, then the
            // batch waits outside the queue for its next round) holds up neither other
            // destinations nor other tenants' alerts.
            let mut in_flight = tokio::task::JoinSet::new();
            let mut earlier = pending.into_iter();
            loop {
                while in_flight.len() >= queue_batches {
                    in_flight.join_next().await;
                }
                let batch = match earlier.next() {
                    Some(b) => b,
                    None => match rx.recv().await {
                        Some(b) => b,
                        None => break,
                    },
                };
                in_flight.spawn(delivery.clone().send(batch));
            }
            while in_flight.join_next().await.is_some() {}
        });
        AlertNotifier {
            tx,
            queue_batches,
            destinations,
            outbox,
            metrics,
        }
    }

    /// Note the alerts a batch about to be stored may send (those of tenants with
    /// destinations), so that a crash between the store's commit and their queueing does not
    /// lose them (see [`crate::outbox`]). Whether a note was written: if so, call
    /// [`Self::intent_met`] once they are queued.
    pub fn intend<'a>(&self, alerts: impl IntoIterator<Item = &'a Alert>) -> bool {
        // Whether a tenant has destinations, asked once per tenant (a batch may hold thousands
        // of alerts of a few tenants).
        let mut has_any: std::collections::HashMap<&str, bool> = Default::default();
        let refs: Vec<AlertRef> = alerts
            .into_iter()
            .filter(|a| {
                *has_any
                    .entry(a.tenant.as_str())
                    .or_insert_with(|| self.destinations.has_any(&a.tenant))
            })
            .map(|a| AlertRef {
                tenant: a.tenant.clone(),
                id: a.id.clone(),
            })
            .collect();
        if refs.is_empty() {
            return false;
        }
        match self.outbox.note_intent(&refs) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "the alert delivery intent could not be written; a crash before these alerts are queued would lose their delivery");
                false
            }
        }
    }

    /// The alerts of the last [`Self::intend`] were queued.
    pub fn intent_met(&self) {
        self.outbox.clear_intent();
    }

    /// At the start: queue the alerts a previous run noted ([`Self::intend`]) but did not
    /// queue, found through `stored` (the store's alert by tenant and id; an alert the store
    /// does not have was not stored, or was counted into an earlier one, and is not sent). How
    /// many were queued.
    pub fn requeue_intended(&self, stored: impl Fn(&str, &str) -> Option<Alert>) -> usize {
        let found: Vec<Alert> = self
            .outbox
            .intended_unqueued()
            .iter()
            .filter_map(|r| stored(&r.tenant, &r.id))
            .collect();
        if !found.is_empty() {
            tracing::info!(
                alerts = found.len(),
                "queued for delivery the alerts stored just before the previous run stopped"
            );
            self.notify(&found);
        }
        self.outbox.clear_intent();
        found.len()
    }

    /// Queue (masked) alerts, one batch per tenant they belong to that has destinations:
    /// written to the outbox (one fsync) before this returns, then handed to the delivery task
    /// without blocking. Beyond the batches in delivery and as many again waiting, new batches
    /// still wait their turn, and are counted in `destination_batches_overflowed_total`.
    pub fn notify(&self, alerts: &[Alert]) {
        self.queue(alerts, false);
    }

    /// Queue what one stored batch brought: its `new` alerts, and the stored alerts
    /// `still_firing` (sent before; their `count` passed a tenfold since), which go in batches
    /// that tell receivers they are not new. An alert in both, raised and grown past a tenfold
    /// by the same batch, is sent once, as new, with its count as stored.
    pub fn notify_stored(&self, new: &[Alert], still_firing: &[Alert]) {
        let (new, still_firing) = merge_still_firing(new, still_firing);
        self.notify(&new);
        if !still_firing.is_empty() {
            self.queue(&still_firing, true);
        }
    }

    fn queue(&self, alerts: &[Alert], still_firing: bool) {
        let mut tenants: Vec<&str> = alerts.iter().map(|a| a.tenant.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let batches: Vec<(String, Vec<Alert>)> = tenants
            .into_iter()
            .filter(|tenant| self.destinations.has_any(tenant))
            .flat_map(|tenant| {
                let alerts = alerts.iter().filter(|a| a.tenant == tenant).cloned();
                in_posts_of(alerts, MAX_POST_BYTES)
                    .into_iter()
                    .map(|part| (tenant.to_string(), part))
            })
            .collect();
        if batches.is_empty() {
            return;
        }
        let queued = self.outbox.queue(batches, still_firing);
        let pending = self.outbox.pending();
        self.metrics
            .set("destination_outbox_pending_batches", &[], pending as f64);
        for batch in queued {
            if pending > 2 * self.queue_batches {
                tracing::warn!(
                    tenant = %batch.tenant,
                    pending,
                    "alert delivery is backed up; the batch waits its turn"
                );
                self.metrics
                    .inc("destination_batches_overflowed_total", &[], 1);
            }
            // The delivery task is gone (the runtime is shutting down): the batch stays in the
            // outbox for the next start.
            if let Err(unsent) = self.tx.send(batch) {
                tracing::warn!(tenant = %unsent.0.tenant, "alert delivery stopped; the batch waits in the outbox for the next start");
                self.metrics
                    .inc("destination_batches_dropped_total", &[], 1);
            }
        }
    }
}

/// `alerts` in order, in parts each of whose JSON array stays within `max_bytes` (an alert
/// larger than that gets a part of its own), each part a batch of its own.
fn in_posts_of(alerts: impl Iterator<Item = Alert>, max_bytes: usize) -> Vec<Vec<Alert>> {
    let mut parts: Vec<Vec<Alert>> = Vec::new();
    let mut bytes = 0;
    for alert in alerts {
        // Each alert and a `,` (or the first one `[`); an alert that cannot be encoded is taken
        // as large (its post fails to encode on its own, see `deliver`).
        let size = serde_json::to_vec(&alert).map_or(max_bytes, |v| v.len() + 1);
        match parts.last_mut() {
            Some(part) if bytes + size <= max_bytes => part.push(alert),
            _ => {
                parts.push(vec![alert]);
                // The closing `]`.
                bytes = 1;
            }
        }
        bytes += size;
    }
    parts
}

/// [`AlertNotifier::notify_stored`]'s two lists, with each alert raised by the batch that also
/// grew past a tenfold moved into the new ones in its stored form.
fn merge_still_firing<'a>(
    new: &'a [Alert],
    still_firing: &'a [Alert],
) -> (std::borrow::Cow<'a, [Alert]>, Vec<Alert>) {
    let (begun_here, sent_before): (Vec<&Alert>, Vec<&Alert>) = still_firing
        .iter()
        .partition(|s| new.iter().any(|a| a.id == s.id));
    let sent_before = sent_before.into_iter().cloned().collect();
    if begun_here.is_empty() {
        return (std::borrow::Cow::Borrowed(new), sent_before);
    }
    let new = new
        .iter()
        .map(|a| {
            begun_here
                .iter()
                .find(|s| s.id == a.id)
                .map_or_else(|| a.clone(), |s| (*s).clone())
        })
        .collect();
    (std::borrow::Cow::Owned(new), sent_before)
}

/// What the delivery task needs to send one batch.
struct BatchDelivery {
    client: reqwest::Client,
    destinations: Arc<DestinationStore>,
    /// [`POSTS_PER_DESTINATION`] permits per destination id.
    slots: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    outbox: Arc<DeliveryOutbox>,
    metrics: Arc<Metrics>,
    retry_base: Duration,
    /// Where a batch goes for its next round (weak: the queue closes with its notifier).
    again: tokio::sync::mpsc::WeakUnboundedSender<PendingBatch>,
}

/// How a round of tries to one destination ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoundOutcome {
    Delivered,
    /// Every try failed: worth another round later.
    Failed,
    /// It can never go there (refused address, unencodable): no other round.
    Refused,
}

impl BatchDelivery {
    /// The posting slots of destination `id`.
    fn slots_of(&self, id: &str) -> Arc<tokio::sync::Semaphore> {
        let mut all = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(POSTS_PER_DESTINATION)))
            .clone()
    }

    /// Post a batch to each of its tenant's destinations it concerns (side by side, only those
    /// still owed it after a failed round), then mark it done in the outbox, or queue its next
    /// round for those whose round failed.
    async fn send(self: Arc<Self>, mut batch: PendingBatch) {
        let destinations: Vec<Destination> = self
            .destinations
            .with_secrets(&batch.tenant)
            .into_iter()
            .filter(|d| {
                batch
                    .redelivery
                    .as_ref()
                    .is_none_or(|r| r.owed.contains(&d.id))
            })
            .collect();
        let posts = destinations.iter().filter_map(|destination| {
            let alerts: Vec<&Alert> = batch
                .alerts
                .iter()
                .filter(|a| a.severity >= destination.min_severity)
                .collect();
            (!alerts.is_empty()).then(|| {
                let body = Delivery {
                    tenant: &batch.tenant,
                    destination: &destination.id,
                    alerts,
                    still_firing: batch.still_firing,
                };
                let this = &self;
                let slots = self.slots_of(&destination.id);
                async move {
                    // A closed semaphore cannot happen (it is never closed); deliver anyway.
                    let _permit = slots.acquire_owned().await.ok();
                    let outcome = deliver(
                        &this.client,
                        destination,
                        &body,
                        this.retry_base,
                        &this.metrics,
                        &this.destinations,
                    )
                    .await;
                    (destination.id.clone(), outcome)
                }
            })
        });
        let failed: Vec<String> = futures_util::future::join_all(posts)
            .await
            .into_iter()
            .filter(|(_, outcome)| *outcome == RoundOutcome::Failed)
            .map(|(id, _)| id)
            .collect();
        if !failed.is_empty() {
            let redelivery = crate::outbox::Redelivery {
                owed: failed,
                rounds_failed: batch.redelivery.as_ref().map_or(0, |r| r.rounds_failed) + 1,
                first_failed: batch
                    .redelivery
                    .as_ref()
                    .map_or_else(std::time::Instant::now, |r| r.first_failed),
            };
            if redelivery.first_failed.elapsed() < self.retry_base * REDELIVER_FOR_BASES {
                let wait = self.retry_base * redelivery_wait_bases(redelivery.rounds_failed);
                tracing::warn!(
                    tenant = %batch.tenant,
                    destinations = ?redelivery.owed,
                    round = redelivery.rounds_failed,
                    wait_seconds = wait.as_secs(),
                    "alert delivery failed; the batch is sent again later"
                );
                if let Some(seq) = batch.seq {
                    // A restart owes it to these only (file I/O: off the async workers).
                    let (outbox, owed) = (self.outbox.clone(), redelivery.clone());
                    let _ = tokio::task::spawn_blocking(move || outbox.owe(seq, &owed)).await;
                }
                batch.redelivery = Some(redelivery);
                // Without a queue (the service is stopping) the batch stays in the outbox for
                // the next start.
                if let Some(again) = self.again.upgrade() {
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = again.send(batch);
                    });
                }
                return;
            }
            tracing::error!(
                tenant = %batch.tenant,
                destinations = ?redelivery.owed,
                rounds = redelivery.rounds_failed,
                "alert delivery given up after a day of failed rounds; the alerts stay in the store"
            );
            for id in &redelivery.owed {
                self.metrics.inc(
                    "destination_batches_abandoned_total",
                    &[("destination", id)],
                    1,
                );
                self.destinations.record(id, DeliveryEvent::GaveUp);
            }
        }
        if let Some(seq) = batch.seq {
            // File I/O: off the async workers.
            let outbox = self.outbox.clone();
            let pending = tokio::task::spawn_blocking(move || {
                outbox.done(seq);
                outbox.pending()
            })
            .await
            .unwrap_or_default();
            self.metrics
                .set("destination_outbox_pending_batches", &[], pending as f64);
        }
    }
}

/// The header that carries a delivery's signature.
pub const SIGNATURE_HEADER: &str = "x-perimeter-signature";

/// `sha256=` and the hex HMAC-SHA256 of `body` under the destination's secret.
pub fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A destination's counters are exported at 0 from its first delivery (and, for those registered
/// before the start, from the start): an alert on `increase(...) > 0` sees the first failure or
/// abandoned batch, which a series born at 1 does not show (QA).
fn counted_from_zero(metrics: &Metrics, id: &str) {
    for name in [
        "destination_alerts_sent_total",
        "destination_failures_total",
        "destination_batches_abandoned_total",
    ] {
        metrics.inc(name, &[("destination", id)], 0);
    }
}

/// A batch given up for destination `id` at once (refused, or not encodable): a failed round
/// that no other round follows, counted as the batches given up after a day of failed rounds
/// are, which alerting rules watch (QA: only the failure was counted).
fn given_up_at_once(metrics: &Metrics, status: &DestinationStore, id: &str) -> RoundOutcome {
    metrics.inc("destination_failures_total", &[("destination", id)], 1);
    status.record(id, DeliveryEvent::GaveUp);
    metrics.inc(
        "destination_batches_abandoned_total",
        &[("destination", id)],
        1,
    );
    RoundOutcome::Refused
}

async fn deliver(
    client: &reqwest::Client,
    destination: &Destination,
    body: &Delivery<'_>,
    retry_base: Duration,
    metrics: &Metrics,
    status: &DestinationStore,
) -> RoundOutcome {
    counted_from_zero(metrics, &destination.id);
    let encoded = match destination.format {
        DestinationFormat::Json => serde_json::to_vec(body),
        DestinationFormat::Slack => serde_json::to_vec(&serde_json::json!({
            "text": slack_text(body),
        })),
    };
    let Ok(bytes) = encoded else {
        return given_up_at_once(metrics, status, &destination.id);
    };
    // What `run --check` and the start name as unusable is given up at once, as they say (QA:
    // an unparseable URL was retried for a day, a destination without a secret got posts signed
    // with an empty key, which anyone can forge).
    if let Some(error) = status.why_unusable(destination) {
        tracing::error!(destination = %destination.id, %error, "alert delivery refused; the batch is given up for this destination (the alerts stay in the store)");
        status.record(&destination.id, DeliveryEvent::TryFailed(&error));
        return given_up_at_once(metrics, status, &destination.id);
    }
    let signature = sign(destination.secret.as_deref().unwrap_or_default(), &bytes);
    // A name that resolves only to addresses alerts may not go to (`localhost` with private
    // destinations off) is refused by the resolver at every try: given up at the first.
    let refused_by_resolver = |error: &str| error.contains(crate::egress::REFUSED);
    let mut wait = retry_base;
    for attempt in 1..=MAX_ATTEMPTS {
        let outcome = client
            .post(&destination.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .body(bytes.clone())
            .send()
            .await;
        let error = match outcome {
            Ok(r) if r.status().is_success() => {
                metrics.inc(
                    "destination_alerts_sent_total",
                    &[("destination", &destination.id)],
                    body.alerts.len() as u64,
                );
                status.record(&destination.id, DeliveryEvent::Delivered);
                return RoundOutcome::Delivered;
            }
            Ok(r) => format!("status {}", r.status().as_u16()),
            // The URL is the admin's; the error text names host and cause (the whole chain:
            // "error sending request" alone says nothing), no alert content.
            Err(e) => perimeter_model::error_chain(&e.without_url()),
        };
        tracing::warn!(destination = %destination.id, name = %destination.name, attempt, %error, "alert delivery failed");
        status.record(&destination.id, DeliveryEvent::TryFailed(&error));
        if refused_by_resolver(&error) {
            return given_up_at_once(metrics, status, &destination.id);
        }
        if attempt < MAX_ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 4;
        }
    }
    metrics.inc(
        "destination_failures_total",
        &[("destination", &destination.id)],
        1,
    );
    RoundOutcome::Failed
}

/// Alerts listed in one Slack message; the rest are counted.
const SLACK_LINES: usize = 20;

/// A Slack message for a batch: a header line, then one line per alert, most severe first
/// (severity, title, entity, source, time, id to look it up by).
fn slack_text(body: &Delivery<'_>) -> String {
    // Slack's control characters in message text, and line breaks and other control
    // characters written out (`\n`): an entity or title comes from the input, and a line break
    // in it would start a line of its own in the message (a forged `[RESOLVED]` one).
    let escape = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                // Also the direction overrides and isolates: `\u{202e}` in a user name made it
                // read as another one in the channel.
                c if c.is_control()
                    || matches!(
                        c,
                        '\u{2028}' | '\u{2029}' | '\u{85}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
                    ) =>
                {
                    out.extend(c.escape_default())
                }
                c => out.push(c),
            }
        }
        out
    };
    let mut alerts = body.alerts.clone();
    alerts.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.timestamp.cmp(&b.timestamp))
    });
    let n = alerts.len();
    // Alerts Perimeter resolved itself (a silent source that sent again) come as updates: their
    // line says the status instead of the severity.
    let open = |a: &Alert| a.status == perimeter_model::AlertStatus::Open;
    let plural = if n == 1 { "" } else { "s" };
    let kind = if body.still_firing {
        format!("alert{plural} still firing")
    } else if alerts.iter().all(|a| open(a)) {
        format!("new alert{plural}")
    } else {
        format!("alert update{plural}")
    };
    let mut text = format!("Perimeter: {n} {kind} for tenant {}", escape(body.tenant));
    for a in alerts.iter().take(SLACK_LINES) {
        let tag = if open(a) {
            a.severity.as_str().to_uppercase()
        } else {
            serde_json::to_value(a.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_uppercase))
                .unwrap_or_default()
        };
        // A correlation's events, or a rule's repeats counted so far.
        let times = if a.count > 1 {
            format!(" ×{}", a.count)
        } else {
            String::new()
        };
        // A still-firing alert's time is its first occurrence; when it last fired tells
        // on-call whether it is firing now.
        let last = a
            .last_seen
            .filter(|l| *l > a.timestamp)
            .map(|l| format!(", last {}", l.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        text.push_str(&format!(
            "\n• *[{}]* {}{times} - {} ({}, {}{last}, alert `{}`)",
            tag,
            escape(&a.title),
            escape(&a.entity),
            escape(&a.source),
            a.timestamp.format("%Y-%m-%d %H:%M:%S UTC"),
            a.id
        ));
    }
    if n > SLACK_LINES {
        text.push_str(&format!("\n... and {} more", n - SLACK_LINES));
    }
    text
}

#[cfg(test)]
#[path = "../tests/api/webhook_receiver.rs"]
mod webhook_receiver;

#[cfg(test)]
mod tests {
    use super::*;

    /// A high alert of tenant `acme` with this id.
    fn test_alert(id: &str) -> Alert {
        let mut a = Alert::new(
            "r",
            "t",
            Severity::High,
            perimeter_model::DetectorKind::Sigma,
            "okta",
            "acme",
            Utc::now(),
            "alice",
            perimeter_model::EntityKind::User,
        );
        a.id = id.to_string();
        a
    }

    /// A webhook down for longer than a round of tries still gets the batch when it is back,
    /// and a destination that took it is not sent it again.
    #[test]
    fn a_batch_is_sent_again_to_the_destination_that_was_down_only() {
        // Two rounds of tries are refused, the third is accepted.
        let down = super::webhook_receiver::WebhookReceiver::start(2 * MAX_ATTEMPTS as usize);
        let up = super::webhook_receiver::WebhookReceiver::start(0);
        let destinations = Arc::new(DestinationStore::in_memory());
        let d = destinations
            .create("acme", "soar", &down.url(), Severity::Low, "tok")
            .unwrap();
        destinations
            .create("acme", "slack", &up.url(), Severity::Low, "tok")
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let outbox = Arc::new(DeliveryOutbox::in_memory());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let notifier = AlertNotifier::spawn(
                destinations.clone(),
                metrics.clone(),
                Duration::from_millis(1),
                outbox.clone(),
                Vec::new(),
            );
            notifier.notify(&[test_alert("a1")]);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while down.bodies().is_empty() || outbox.pending() > 0 {
                assert!(std::time::Instant::now() < deadline, "never delivered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        assert_eq!(down.requests(), 2 * MAX_ATTEMPTS as usize + 1);
        assert_eq!(down.bodies().len(), 1);
        assert_eq!(up.bodies().len(), 1, "the healthy one got it once");
        assert_eq!(
            metrics.counter("destination_failures_total", &[("destination", &d.id)]),
            2,
            "two failed rounds"
        );
        // Nothing was given up on, and that shows as a 0, not as no series.
        assert!(metrics.render_prometheus().contains(&format!(
            "perimeter_destination_batches_abandoned_total{{destination=\"{}\"}} 0\n",
            d.id
        )));
        let status = destinations.list("acme");
        let soar = status.iter().find(|x| x.id == d.id).unwrap();
        assert_eq!(
            soar.delivery.as_ref().unwrap().batches_failed,
            0,
            "{soar:?}"
        );
        assert_eq!(
            soar.delivery.as_ref().unwrap().batches_delivered,
            1,
            "{soar:?}"
        );
    }

    /// QA: a crash between the store's commit and the queueing of a batch's alerts lost their
    /// delivery for good. The alerts noted before the commit are queued at the next start,
    /// those the store has only.
    #[test]
    fn alerts_noted_before_a_crash_are_queued_at_the_next_start() {
        let hook = super::webhook_receiver::WebhookReceiver::start(0);
        let destinations = Arc::new(DestinationStore::in_memory());
        destinations
            .create("acme", "soar", &hook.url(), Severity::Low, "tok")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let spawn = |pending: Option<usize>| {
            let (outbox, undelivered) = DeliveryOutbox::open_in(dir.path()).unwrap();
            if let Some(pending) = pending {
                assert_eq!(undelivered.len(), pending);
            }
            AlertNotifier::spawn(
                destinations.clone(),
                Arc::new(Metrics::new()),
                Duration::from_millis(1),
                Arc::new(outbox),
                undelivered,
            )
        };
        runtime.block_on(async {
            let notifier = spawn(Some(0));
            // Noted, then "stored", then the process dies before queueing them.
            assert!(notifier.intend(&[test_alert("a1"), test_alert("a2")]));
            // A tenant without destinations needs no note.
            let mut other = test_alert("b1");
            other.tenant = "globex".into();
            assert!(!notifier.intend(&[other]));
        });
        assert!(dir.path().join("outbox/intent.json").exists());
        // A note a kill left half written is removed at the next open.
        let torn = dir.path().join("outbox/intent.json.4242.7.tmp");
        std::fs::write(&torn, "{\"alerts\":[").unwrap();
        runtime.block_on(async {
            let notifier = spawn(Some(0));
            // a2 was counted into an earlier alert: the store has no alert of that id.
            let queued = notifier.requeue_intended(|tenant, id| {
                (tenant == "acme" && id == "a1").then(|| test_alert("a1"))
            });
            assert_eq!(queued, 1);
            assert!(!torn.exists());
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while hook.bodies().is_empty() {
                assert!(std::time::Instant::now() < deadline, "never delivered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let body: serde_json::Value = serde_json::from_str(&hook.bodies()[0]).unwrap();
        assert_eq!(body["alerts"].as_array().unwrap().len(), 1, "{body}");
        assert_eq!(body["alerts"][0]["id"], "a1", "{body}");
        assert!(!dir.path().join("outbox/intent.json").exists());
        // Queued and met: nothing is noted any more, so the next start queues nothing again.
        // (a1's done mark may follow its post after the runtime stopped: not counted here.)
        runtime.block_on(async {
            let notifier = spawn(None);
            assert!(notifier.intend(&[test_alert("a3")]));
            notifier.intent_met();
            assert_eq!(notifier.requeue_intended(|_, _| Some(test_alert("a3"))), 0);
        });
    }

    /// A batch the healthy destination took while another was down goes, after a restart, to
    /// the one that was down only (it went to every destination again).
    #[test]
    fn after_a_restart_a_batch_goes_only_to_the_destinations_still_owed_it() {
        // One round of tries refused, then accepted.
        let down = super::webhook_receiver::WebhookReceiver::start(MAX_ATTEMPTS as usize);
        let up = super::webhook_receiver::WebhookReceiver::start(0);
        let destinations = Arc::new(DestinationStore::in_memory());
        destinations
            .create("acme", "soar", &down.url(), Severity::Low, "tok")
            .unwrap();
        destinations
            .create("acme", "slack", &up.url(), Severity::Low, "tok")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A retry base of 10 ms: the next round comes 600 ms after the first failed, time
        // enough to stop the service in between.
        let first_run = tokio::runtime::Runtime::new().unwrap();
        first_run.block_on(async {
            let (outbox, _) = DeliveryOutbox::open_in(dir.path()).unwrap();
            let notifier = AlertNotifier::spawn(
                destinations.clone(),
                Arc::new(Metrics::new()),
                Duration::from_millis(10),
                Arc::new(outbox),
                Vec::new(),
            );
            notifier.notify(&[test_alert("a1")]);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while down.requests() < MAX_ATTEMPTS as usize {
                assert!(std::time::Instant::now() < deadline, "no round failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // The round's end recorded, well before the next round.
            tokio::time::sleep(Duration::from_millis(150)).await;
        });
        first_run.shutdown_background();
        assert_eq!((up.bodies().len(), down.bodies().len()), (1, 0));

        let second_run = tokio::runtime::Runtime::new().unwrap();
        second_run.block_on(async {
            let (outbox, pending) = DeliveryOutbox::open_in(dir.path()).unwrap();
            assert_eq!(pending.len(), 1);
            let outbox = Arc::new(outbox);
            let _notifier = AlertNotifier::spawn(
                destinations.clone(),
                Arc::new(Metrics::new()),
                Duration::from_millis(10),
                outbox.clone(),
                pending,
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while down.bodies().is_empty() || outbox.pending() > 0 {
                assert!(std::time::Instant::now() < deadline, "never delivered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        assert_eq!(down.bodies().len(), 1);
        assert_eq!(up.bodies().len(), 1, "the healthy one got it once");
    }

    /// With room for one batch in delivery and one waiting, later batches overflow; they are
    /// delivered once room frees up, not left for the next start.
    #[test]
    fn batches_that_find_the_queue_full_are_delivered_when_room_frees_up() {
        // The first batch's four tries are refused, then the webhook accepts.
        let hook = super::webhook_receiver::WebhookReceiver::start(MAX_ATTEMPTS as usize);
        let destinations = Arc::new(DestinationStore::in_memory());
        destinations
            .create("acme", "soc", &hook.url(), Severity::Low, "tok")
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let notifier = in_memory_notifier(&destinations, metrics.clone(), 1);
            for i in 0..5 {
                notifier.notify(&[test_alert(&format!("a{i}"))]);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while hook.bodies().len() < 4 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} of the 4 later batches delivered",
                    hook.bodies().len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let delivered: Vec<String> = hook
            .bodies()
            .iter()
            .map(|b| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["alerts"][0]["id"].to_string()
            })
            .collect();
        for id in ["a1", "a2", "a3", "a4"] {
            assert!(delivered.contains(&format!("\"{id}\"")), "{delivered:?}");
        }
        assert!(metrics
            .render_prometheus()
            .contains("destination_batches_overflowed_total"));
    }

    /// A notifier over `destinations` with an in-memory outbox, retrying after 10 ms, with
    /// `queue_batches` batches in delivery at once (must run inside a tokio runtime).
    fn in_memory_notifier(
        destinations: &Arc<DestinationStore>,
        metrics: Arc<Metrics>,
        queue_batches: usize,
    ) -> AlertNotifier {
        AlertNotifier::spawn_sized(
            destinations.clone(),
            metrics,
            Duration::from_millis(10),
            Arc::new(DeliveryOutbox::in_memory()),
            Vec::new(),
            queue_batches,
        )
    }

    /// `n` alerts of tenant `acme`, each with a description of about 1 KB.
    fn large_alerts(n: usize) -> Vec<Alert> {
        (0..n)
            .map(|i| {
                let mut a = test_alert(&format!("a{i:05}"));
                a.description = Some("spray over every user ".repeat(48));
                a
            })
            .collect()
    }

    #[test]
    fn alerts_are_split_into_posts_of_bounded_size_in_order() {
        let alerts = large_alerts(40);
        let one = serde_json::to_vec(&alerts[0]).unwrap().len() + 1;
        let parts = in_posts_of(alerts.clone().into_iter(), 10 * one + 1);
        assert_eq!(
            parts.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 10, 10]
        );
        assert_eq!(parts.concat(), alerts, "every alert once, in order");
        for part in &parts {
            assert!(serde_json::to_vec(part).unwrap().len() <= 10 * one + 1);
        }
        // An alert larger than the limit still goes, alone.
        assert_eq!(in_posts_of(alerts[..3].iter().cloned(), one / 2).len(), 3);
    }

    #[test]
    fn an_incident_of_thousands_of_alerts_arrives_in_posts_receivers_take() {
        let hook = super::webhook_receiver::WebhookReceiver::start(0);
        let destinations = Arc::new(DestinationStore::in_memory());
        destinations
            .create("acme", "soc", &hook.url(), Severity::Low, "tok")
            .unwrap();
        let alerts = large_alerts(3000);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let bodies = runtime.block_on(async {
            let notifier = in_memory_notifier(&destinations, Arc::new(Metrics::new()), 4);
            notifier.notify(&alerts);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let bodies = hook.bodies();
                let delivered: usize = bodies
                    .iter()
                    .map(|b| {
                        let v: serde_json::Value = serde_json::from_str(b).unwrap();
                        v["alerts"].as_array().map_or(0, Vec::len)
                    })
                    .sum();
                if delivered >= alerts.len() {
                    return bodies;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{delivered} of {} alerts delivered",
                    alerts.len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        assert!(
            bodies.len() >= 6,
            "{} posts for ~3 MB of alerts",
            bodies.len()
        );
        let mut ids = Vec::new();
        for body in &bodies {
            assert!(
                body.len() <= MAX_POST_BYTES + 1024,
                "a post of {} bytes",
                body.len()
            );
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            ids.extend(
                v["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["id"].as_str().unwrap().to_string()),
            );
        }
        ids.sort();
        let expected: Vec<String> = alerts.iter().map(|a| a.id.clone()).collect();
        assert_eq!(ids, expected, "each alert delivered once");
    }

    /// A right-to-left override in an entity made a user name read as another one in the
    /// channel: written out as an escape.
    #[test]
    fn direction_overrides_in_a_slack_line_are_written_out() {
        let mut alert = test_alert("a");
        alert.entity = "ann\u{202e}nimda@acme.test".into();
        let text = slack_text(&Delivery {
            tenant: "acme",
            destination: "d",
            alerts: vec![&alert],
            still_firing: false,
        });
        assert!(!text.contains('\u{202e}'), "{text}");
        assert!(text.contains("ann\\u{202e}nimda"), "{text}");
    }

    #[test]
    fn a_still_firing_slack_line_says_when_it_last_fired() {
        let mut firing = test_alert("a");
        firing.count = 12;
        let last = firing.timestamp + chrono::Duration::minutes(90);
        firing.last_seen = Some(last);
        let text = slack_text(&Delivery {
            tenant: "acme",
            destination: "d",
            alerts: vec![&firing],
            still_firing: true,
        });
        let first = firing.timestamp.format("%Y-%m-%d %H:%M:%S UTC");
        let last = last.format("%Y-%m-%d %H:%M:%S UTC");
        assert!(
            text.contains(" ×12 - ") && text.contains(&format!("{first}, last {last}, alert `a`")),
            "{text}"
        );
        // A new alert has no later occurrence to show.
        let new = test_alert("b");
        let text = slack_text(&Delivery {
            tenant: "acme",
            destination: "d",
            alerts: vec![&new],
            still_firing: false,
        });
        assert!(!text.contains(", last "), "{text}");
    }

    #[test]
    fn slack_destinations_get_one_readable_line_per_alert() {
        let hook = super::webhook_receiver::WebhookReceiver::start(0);
        let destinations = Arc::new(DestinationStore::in_memory());
        destinations
            .create_as(
                "acme",
                "soc-slack",
                &hook.url(),
                Severity::Low,
                DestinationFormat::Slack,
                "tok",
            )
            .unwrap();
        let alert = |id: &str, title: &str, severity: Severity| {
            let mut a = Alert::new(
                "r",
                title,
                severity,
                perimeter_model::DetectorKind::Sigma,
                "okta",
                "acme",
                Utc::now(),
                "dana@acme.test",
                perimeter_model::EntityKind::User,
            );
            a.id = id.to_string();
            a
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let body = runtime.block_on(async {
            let notifier = in_memory_notifier(&destinations, Arc::new(Metrics::new()), 1);
            notifier.notify(&[
                alert(
                    "a1",
                    "Login <burst>\n• *[RESOLVED]* all clear",
                    Severity::Medium,
                ),
                alert("a2", "MFA factor reset", Severity::Critical),
            ]);
            tokio::task::spawn_blocking(move || hook.wait_for_body(Duration::from_secs(20)))
                .await
                .unwrap()
        });
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let text = body["text"].as_str().expect("a Slack message");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Perimeter: 2 new alerts for tenant acme");
        assert!(
            lines[1].contains("*[CRITICAL]* MFA factor reset - dana@acme.test (okta"),
            "{text}"
        );
        assert!(
            lines[2].contains("Login &lt;burst&gt;\\n• *[RESOLVED]* all clear")
                && lines[2].contains("`a1`"),
            "{text}"
        );
        assert_eq!(
            lines.len(),
            3,
            "a line break in a title starts no line: {text}"
        );
        assert_eq!(body.as_object().unwrap().len(), 1, "only `text`: {body}");
    }

    #[test]
    fn slack_lines_of_resolved_alerts_say_so() {
        let mut a = Alert::new(
            "perimeter.source_silent",
            "Source went silent: no okta events for 7 hours",
            Severity::Medium,
            perimeter_model::DetectorKind::SourceHealth,
            "okta",
            "acme",
            Utc::now(),
            "okta",
            perimeter_model::EntityKind::App,
        );
        a.id = "s1".into();
        a.status = perimeter_model::AlertStatus::Resolved;
        let text = slack_text(&Delivery {
            tenant: "acme",
            destination: "soc-slack",
            alerts: vec![&a],
            still_firing: false,
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Perimeter: 1 alert update for tenant acme");
        assert!(
            lines[1].starts_with("• *[RESOLVED]* Source went silent"),
            "{text}"
        );
        assert!(!lines[1].contains('×'), "{text}");
        a.count = 25;
        let text = slack_text(&Delivery {
            tenant: "acme",
            destination: "soc-slack",
            alerts: vec![&a],
            still_firing: false,
        });
        assert!(
            text.contains("no okta events for 7 hours ×25 - okta"),
            "{text}"
        );
        // Open alerts sent before whose repeats passed a tenfold: said to be still firing.
        a.status = perimeter_model::AlertStatus::Open;
        a.count = 100;
        let b = a.clone();
        let text = slack_text(&Delivery {
            tenant: "acme",
            destination: "soc-slack",
            alerts: vec![&a, &b],
            still_firing: true,
        });
        assert!(
            text.starts_with("Perimeter: 2 alerts still firing for tenant acme\n"),
            "{text}"
        );
        assert!(
            text.contains("*[MEDIUM]*") && text.contains("×100"),
            "{text}"
        );
    }

    #[test]
    fn an_alert_raised_and_grown_past_ten_by_one_batch_is_sent_once_as_new() {
        let (a, b, c) = (test_alert("a"), test_alert("b"), test_alert("c"));
        let mut a_now = a.clone();
        a_now.count = 11;
        let mut c_now = c.clone();
        c_now.count = 100;
        let (batch, stored) = ([a.clone(), b.clone()], [a_now.clone(), c_now.clone()]);
        let (new, still) = merge_still_firing(&batch, &stored);
        assert_eq!(new.to_vec(), vec![a_now, b.clone()]);
        assert_eq!(still, vec![c_now.clone()]);
        let (new, still) =
            merge_still_firing(std::slice::from_ref(&b), std::slice::from_ref(&c_now));
        assert!(matches!(new, std::borrow::Cow::Borrowed(_)));
        assert_eq!((new.to_vec(), still), (vec![b], vec![c_now]));
    }

    #[test]
    fn the_list_survives_a_reopen_and_keeps_tenants_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = DestinationStore::open_in(dir.path()).unwrap();
        let a = store
            .create(
                "acme",
                "soc",
                "https://hooks.example.com/a",
                Severity::High,
                "t1",
            )
            .unwrap();
        let b = store
            .create(
                "globex",
                "soc",
                "http://10.0.0.5:8080/b",
                Severity::Low,
                "t2",
            )
            .unwrap();
        assert_ne!(a.id, b.id);
        assert!(!store.delete("globex", &a.id).unwrap(), "not globex's");
        let reopened = DestinationStore::open_in(dir.path()).unwrap();
        assert!(a.secret.as_deref().is_some_and(|s| s.starts_with("whsec_")));
        assert_eq!(reopened.with_secrets("acme"), vec![a.clone()]);
        assert_eq!(
            reopened.list("acme")[0].secret,
            None,
            "lists leave the secret out"
        );
        assert_eq!(
            reopened.list("globex"),
            vec![Destination {
                secret: None,
                delivery: Some(DeliveryStatus::default()),
                ..b
            }]
        );
        // The delivery status is not part of the persisted list.
        let text = std::fs::read_to_string(dir.path().join("destinations.json")).unwrap();
        assert!(!text.contains("delivery"), "{text}");
        assert!(reopened.delete("acme", &a.id).unwrap());
        let again = DestinationStore::open_in(dir.path()).unwrap();
        assert!(again.list("acme").is_empty());
        assert!(!dir.path().join("destinations.json.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("destinations.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "signing secrets are the owner's only");
        }
    }

    #[test]
    fn invalid_destinations_are_refused() {
        let store = DestinationStore::in_memory();
        for (name, url) in [
            ("x", "file:///etc/passwd"),
            ("x", "https://"),
            ("x", "hooks.example.com/no-scheme"),
            (" ", "https://hooks.example.com/"),
            // The cloud metadata endpoint, however it is spelt.
            ("x", "http://169.254.169.254/latest/meta-data/iam/"),
            ("x", "http://2852039166/latest/meta-data/"),
            ("x", "http://[::ffff:169.254.169.254]/"),
            ("x", "http://[fe80::1]/"),
            ("x", "http://0.0.0.0:8080/"),
        ] {
            assert!(
                matches!(
                    store.create("acme", name, url, Severity::Low, "t"),
                    Err(DestinationError::Invalid(_))
                ),
                "{name:?} {url:?}"
            );
        }
        for i in 0..MAX_DESTINATIONS_PER_TENANT {
            store
                .create(
                    "acme",
                    &format!("d{i}"),
                    "https://h.example.com/",
                    Severity::Low,
                    "t",
                )
                .unwrap();
        }
        assert!(store
            .create(
                "acme",
                "one more",
                "https://h.example.com/",
                Severity::Low,
                "t"
            )
            .is_err());
    }

    /// QA: a destination registered while private addresses were allowed, after they were turned
    /// off, passed `run --check` and the start silently, and its batch was dropped at the first
    /// try with only a failure counted. It is named as unusable, and the batch counts as given
    /// up.
    #[test]
    fn a_destination_the_config_now_refuses_is_named_and_its_batch_counted_as_given_up() {
        let hook = super::webhook_receiver::WebhookReceiver::start(0);
        let dir = tempfile::tempdir().unwrap();
        let d = DestinationStore::open_in(dir.path())
            .unwrap()
            .create("acme", "relay", &hook.url(), Severity::Low, "t")
            .unwrap();
        assert!(DestinationStore::open_in(dir.path())
            .unwrap()
            .unusable()
            .is_empty());
        let strict = Arc::new(
            DestinationStore::open_in(dir.path())
                .unwrap()
                .allow_private_destinations(false),
        );
        let unusable = strict.unusable();
        assert_eq!(unusable.len(), 1, "{unusable:?}");
        assert!(
            unusable[0].contains("`relay`") && unusable[0].contains("private"),
            "{unusable:?}"
        );
        let abandoned =
            notify_one_and_wait_for(&strict, "destination_batches_abandoned_total", &d.id);
        assert_eq!(abandoned, 1);
        assert!(hook.bodies().is_empty());
        // A destination without its signing secret (a hand-edited file) gets nothing: its
        // posts could not be told from forged ones.
        let path = dir.path().join("destinations.json");
        let mut all: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        all[0].as_object_mut().unwrap().remove("secret");
        // And one whose secret is empty (QA: it was still posted to).
        let mut empty = all[0].clone();
        empty["id"] = "dst_00000000000000ee".into();
        empty["secret"] = "".into();
        all.as_array_mut().unwrap().push(empty);
        std::fs::write(&path, all.to_string()).unwrap();
        let unsigned = Arc::new(DestinationStore::open_in(dir.path()).unwrap());
        let unusable = unsigned.unusable();
        assert_eq!(unusable.len(), 2, "{unusable:?}");
        assert!(
            unusable.iter().all(|u| u.contains("secret")),
            "{unusable:?}"
        );
        let abandoned =
            notify_one_and_wait_for(&unsigned, "destination_batches_abandoned_total", &d.id);
        assert_eq!(abandoned, 1);
        assert!(hook.bodies().is_empty());
    }

    /// Send one alert through a new notifier (outbox in memory) and wait until `counter` of
    /// destination `id` counts; its value then.
    fn notify_one_and_wait_for(
        destinations: &Arc<DestinationStore>,
        counter: &str,
        id: &str,
    ) -> u64 {
        let metrics = Arc::new(Metrics::new());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let notifier = AlertNotifier::spawn(
                destinations.clone(),
                metrics.clone(),
                Duration::from_millis(1),
                Arc::new(DeliveryOutbox::in_memory()),
                Vec::new(),
            );
            notifier.notify(&[test_alert("a1")]);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while metrics.counter(counter, &[("destination", id)]) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{counter} never counted"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        metrics.counter(counter, &[("destination", id)])
    }

    /// With private destinations off, a loopback address is refused when registered, as an IP
    /// or as `localhost`; one registered by that name before, from a file, is named unusable
    /// and gets nothing at delivery, its batch given up at once.
    #[test]
    fn private_destinations_can_be_refused_at_registration_and_at_delivery() {
        let hook = super::webhook_receiver::WebhookReceiver::start(0);
        let strict = Arc::new(DestinationStore::in_memory().allow_private_destinations(false));
        let by_name = hook.url().replace("127.0.0.1", "localhost");
        for url in [hook.url(), by_name.clone()] {
            assert!(matches!(
                strict.create("acme", "x", &url, Severity::Low, "t"),
                Err(DestinationError::Invalid(m)) if m.contains("private") || m.contains("loopback")
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let d = DestinationStore::open_in(dir.path())
            .unwrap()
            .create("acme", "x", &by_name, Severity::Low, "t")
            .unwrap();
        let strict = Arc::new(
            DestinationStore::open_in(dir.path())
                .unwrap()
                .allow_private_destinations(false),
        );
        assert_eq!(strict.unusable().len(), 1);
        let abandoned =
            notify_one_and_wait_for(&strict, "destination_batches_abandoned_total", &d.id);
        assert_eq!(abandoned, 1);
        assert!(
            hook.bodies().is_empty(),
            "nothing reached the loopback hook"
        );
        // The same hook is fine where private destinations are allowed (the default).
        let open = DestinationStore::in_memory();
        assert!(open
            .create("acme", "x", &hook.url(), Severity::Low, "t")
            .is_ok());
    }
}
