//! Microsoft 365 Management Activity API: audit records come in *content blobs*. A listing
//! (`GET /api/v1.0/{tenant}/activity/feed/subscriptions/content?contentType=..&startTime=..&endTime=..`,
//! at most 24 hours, within the last 7 days, more pages in a `NextPageUri` header) names the
//! blobs made available in a time window; each blob's `contentUri` returns its records. The
//! content type must be subscribed to first (`POST .../subscriptions/start`): a listing refused
//! with 400 before any is read starts the subscription and lists again.
//!
//! Blobs are stored in the order they were made available (`contentCreated`, then id). The
//! checkpoint is the last blob stored: its time (`since`) and id (`resume`), so a listing that
//! names it again skips it. A window read through moves `since` up to its end less ten minutes
//! (content still being made available then is listed again, and skipped by id if seen).

use chrono::{DateTime, Duration, Utc};
use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson;
use reqwest::Url;

use super::vendor::{str_at, time_at, PageRequest};
use super::{Checkpoint, InFlight, PollError, PollReport, PollSource, ProbeReport};

/// How far back the API keeps content.
const RETAINED_DAYS: i64 = 7;
/// A listing window's longest span.
const WINDOW_HOURS: i64 = 24;
/// How far before the end of a window read through the next one starts.
const SETTLE_MINUTES: i64 = 10;

struct Blob {
    id: String,
    uri: String,
    created: DateTime<Utc>,
}

fn m365_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The window the next listing covers after `cp` (first polls start at `start`).
fn window(cp: &Checkpoint, start: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let now = Utc::now();
    // Content older than the API keeps cannot be listed: go on from the oldest it has.
    let floor = now - Duration::days(RETAINED_DAYS) + Duration::minutes(5);
    let from = cp.since.unwrap_or(start).max(floor).min(now);
    (from, (from + Duration::hours(WINDOW_HOURS)).min(now))
}

fn tenant_and_feed(src: &PollSource) -> (&str, &str) {
    (
        src.config.org.as_deref().unwrap_or_default(),
        src.config.feed.as_deref().unwrap_or_default(),
    )
}

/// Whether a listing refused for want of a subscription may start one: polling does, a check
/// (`perimeter poll-check`) changes nothing on the tenant and says so instead.
#[derive(Clone, Copy, PartialEq)]
enum Subscribe {
    IfMissing,
    Never,
}

/// The blobs made available in `from..to`, and whether the listing was read to its end (not
/// cut at `max_pages_per_poll`).
async fn list(
    src: &PollSource,
    authorization: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    subscribe: Subscribe,
) -> Result<(Url, Vec<Blob>, bool), PollError> {
    let (tenant, feed) = tenant_and_feed(src);
    let mut first = src.api.join(&format!(
        "api/v1.0/{tenant}/activity/feed/subscriptions/content"
    ))?;
    first
        .query_pairs_mut()
        .append_pair("contentType", feed)
        .append_pair("startTime", &m365_time(from))
        .append_pair("endTime", &m365_time(to));
    let mut url = first.clone();
    let (mut blobs, mut pages, mut subscribed) = (Vec::new(), 0u32, false);
    loop {
        let (body, headers) = match src
            .fetch(&PageRequest::get(url.clone()), authorization)
            .await
        {
            // No subscription to this content type yet (AF20022): start it, list again.
            Err(PollError::Http { status: 400, .. })
                if pages == 0 && !subscribed && subscribe == Subscribe::IfMissing =>
            {
                start_subscription(src, authorization).await?;
                subscribed = true;
                continue;
            }
            Err(PollError::Http {
                status: 400,
                url,
                detail,
            }) if pages == 0 && subscribe == Subscribe::Never => {
                return Err(PollError::Http {
                    status: 400,
                    url,
                    detail: format!(
                        "{detail} (no subscription to {feed} yet? `perimeter run` starts it; this check changes nothing)",
                        feed = tenant_and_feed(src).1
                    ),
                })
            }
            other => other?,
        };
        pages += 1;
        let list = body.as_array().ok_or_else(|| {
            PollError::Malformed("the content listing is not a JSON array".into())
        })?;
        for b in list.iter() {
            let field =
                |name: &str| PollError::Malformed(format!("a content blob has no usable `{name}`"));
            blobs.push(Blob {
                id: str_at(b, &["contentId"]).ok_or_else(|| field("contentId"))?,
                uri: str_at(b, &["contentUri"]).ok_or_else(|| field("contentUri"))?,
                created: time_at(b, &["contentCreated"]).ok_or_else(|| field("contentCreated"))?,
            });
        }
        let next = headers
            .get("nextpageuri")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        match next {
            None => return Ok((first, blobs, true)),
            Some(_) if pages >= src.config.max_pages_per_poll.max(1) => {
                return Ok((first, blobs, false))
            }
            Some(next) => url = src.api.same_origin(next)?,
        }
    }
}

async fn start_subscription(src: &PollSource, authorization: &str) -> Result<(), PollError> {
    let (tenant, feed) = tenant_and_feed(src);
    let mut url = src.api.join(&format!(
        "api/v1.0/{tenant}/activity/feed/subscriptions/start"
    ))?;
    url.query_pairs_mut().append_pair("contentType", feed);
    let request = PageRequest {
        body: Some(serde_json::json!({})),
        ..PageRequest::get(url)
    };
    tracing::info!(poller = %src.config.name, content_type = feed, "starting the Management Activity API subscription");
    match src.fetch(&request, authorization).await {
        // Already started (AF20024) is as good as started.
        Ok(_) | Err(PollError::Http { status: 400, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Blobs not stored yet, oldest first.
fn new_blobs(mut blobs: Vec<Blob>, cp: &Checkpoint) -> Vec<Blob> {
    blobs.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    blobs.retain(|b| match cp.since {
        Some(since) => (b.created, Some(&b.id)) > (since, cp.resume.as_ref()),
        None => true,
    });
    blobs
}

async fn blob_records(
    src: &PollSource,
    authorization: &str,
    blob: &Blob,
) -> Result<Vec<RawJson>, PollError> {
    let url = src.api.same_origin(&blob.uri)?;
    let (body, _) = src.fetch(&PageRequest::get(url), authorization).await?;
    body.as_array()
        .map(|a| a.iter().cloned().collect())
        .ok_or_else(|| {
            PollError::Malformed(format!("content blob {} is not a JSON array", blob.id))
        })
}

/// One poll: list the window after the checkpoint, store its new blobs in order (the next
/// fetched while the ones before are stored; the checkpoint moves past each once it is
/// stored), then move past a window read through.
pub(super) async fn poll(
    src: &PollSource,
    authorization: &str,
    start: DateTime<Utc>,
) -> Result<PollReport, PollError> {
    let mut cp = src.checkpoint()?;
    let (from, to) = window(&cp, start);
    let (_, blobs, complete) = list(src, authorization, from, to, Subscribe::IfMissing).await?;
    let mut report = PollReport::default();
    let mut in_flight = InFlight::new(|cp: &mut Checkpoint, blob: Blob| {
        *cp = Checkpoint {
            resume: Some(blob.id),
            listing_since: None,
            since: src.checkpoint_time(cp.since, [blob.created]),
            ..Checkpoint::default()
        };
    });
    for blob in new_blobs(blobs, &cp) {
        if report.pages >= src.config.max_pages_per_poll.max(1) {
            in_flight.settle_all(src, &mut cp, &mut report).await?;
            return Ok(report);
        }
        report.pages += 1;
        let queued = match blob_records(src, authorization, &blob).await {
            Ok(records) => src.enqueue(records).await?,
            // A blob is written once: fetching it again cannot help, and every later blob
            // would wait behind it.
            Err(PollError::Malformed(reason)) => {
                src.enqueue_set_aside(&format!("content blob {}", blob.id), &reason)
                    .await?
            }
            Err(e) => return Err(in_flight.stop_with(src, &mut cp, &mut report, e).await),
        };
        in_flight.push(blob, queued);
        in_flight.make_room(src, &mut cp, &mut report).await?;
    }
    in_flight.settle_all(src, &mut cp, &mut report).await?;
    let settled = to - Duration::minutes(SETTLE_MINUTES);
    if complete && settled > from && cp.since.is_none_or(|s| s < settled) {
        src.save_checkpoint(&Checkpoint {
            resume: None,
            listing_since: None,
            since: Some(settled),
            ..Checkpoint::default()
        })?;
    }
    Ok(report)
}

/// [`PollSource::probe`] for Microsoft 365: the listing after the checkpoint, and the records of
/// its first new blob.
pub(super) async fn probe(
    src: &PollSource,
    authorization: &str,
    start: DateTime<Utc>,
) -> Result<ProbeReport, PollError> {
    let cp = src.checkpoint()?;
    let (from, to) = window(&cp, start);
    let (url, blobs, complete) = list(src, authorization, from, to, Subscribe::Never).await?;
    let blobs = new_blobs(blobs, &cp);
    let first = match blobs.first() {
        Some(blob) => Some((
            blob_records(src, authorization, blob).await?.len(),
            blob.created,
        )),
        None => None,
    };
    Ok(ProbeReport::of_listing(&url, blobs.len(), complete, first))
}

/// A bearer access token for the Management API from the Azure AD token endpoint
/// (client-credentials grant, `secret` as the client secret). The secret goes only to
/// `auth_url`.
pub(super) async fn access_token(
    src: &PollSource,
    client_id: &str,
    secret: &str,
) -> Result<String, PollError> {
    let (tenant, _) = tenant_and_feed(src);
    let auth = src
        .config
        .auth_url
        .as_deref()
        .unwrap_or("https://login.microsoftonline.com");
    let url = Url::parse(&format!("{}/", auth.trim_end_matches('/')))
        .and_then(|u| u.join(&format!("{tenant}/oauth2/v2.0/token")))
        .map_err(|e| PollError::Config(format!("auth_url `{auth}`: {e}")))?;
    if url.scheme() != "https" && !super::is_loopback(&url) {
        return Err(PollError::Config(format!(
            "auth_url `{auth}` is not https: the client secret would cross the network in clear"
        )));
    }
    let scope = format!("{}/.default", src.api.base.origin().ascii_serialization());
    src.client_credentials_token(url, client_id, secret, Some(scope))
        .await
}
