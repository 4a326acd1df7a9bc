//! What each vendor's audit-log API asks and answers: the request for the next page after a
//! checkpoint, and the records and checkpoint a page yields. Three paging styles cover them:
//!
//! - **next link** (Okta System Log, GitHub audit log): oldest first; each page's `Link` header
//!   names the next one. Okta keeps giving a next link at the end (its polling mode), so the
//!   checkpoint is that link; GitHub stops giving one, so the next listing starts at the newest
//!   record time stored.
//! - **listing** (Slack Audit Logs, Google Workspace Reports, LaunchDarkly audit log): newest
//!   first, a page cursor in the body (LaunchDarkly's is the next page's link), a lower time bound
//!   per listing. A listing is read to its end before the lower bound
//!   moves up to the newest record time it held; a restart mid-way goes on with the cursor.
//! - **cursor** (1Password Events API): `POST` with a cursor that always says where to go on.
//!
//! Listings start at the newest time already stored, inclusive: the records of that very second
//! come again and the store, idempotent on event id, keeps them once.

use chrono::{DateTime, SecondsFormat, Utc};
use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::{checkpoint_time, Checkpoint, CheckpointTime, PollError};

/// The SaaS APIs Perimeter polls, by the name of the normalizer their records go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    /// Okta System Log: `GET /api/v1/logs`, `Authorization: SSWS <token>`.
    Okta,
    /// GitHub organization audit log: `GET /orgs/{org}/audit-log`, bearer token.
    Github,
    /// Slack Audit Logs API: `GET /audit/v1/logs`, bearer token (an org-level user token).
    Slack,
    /// 1Password Events API: `POST /api/v1/{feed}` (`signinattempts`, `itemusages`,
    /// `auditevents`), bearer token.
    Onepassword,
    /// Google Workspace Admin SDK Reports API: `GET /admin/reports/v1/activity/users/all/
    /// applications/{feed}` (`login`, `admin`, `drive`, `token`, ...), bearer OAuth access token.
    GoogleWorkspace,
    /// Microsoft 365 Management Activity API: content blobs of one content type (`feed`) for one
    /// Azure AD tenant (`org`), listed by time and fetched one by one (see `m365.rs`).
    M365,
    /// AWS CloudTrail log files in S3: `ListObjectsV2` under a key prefix (`feed`), each
    /// `.json.gz` file fetched, SigV4-signed (see `cloudtrail.rs`).
    AwsCloudtrail,
    /// Salesforce REST API SOQL queries: Setup Audit Trail rows, or Event Monitoring log files
    /// (CSV) (`feed`, see `salesforce.rs`), bearer access token.
    Salesforce,
    /// LaunchDarkly audit log: `GET /api/v2/auditlog`, newest first, the next page's link in
    /// `_links.next.href`; the API access token as the whole `Authorization` header.
    Launchdarkly,
}

impl Vendor {
    /// Whether a listing comes newest first, page after page going back in time (Slack, Google
    /// Workspace, LaunchDarkly): the poller hands it on oldest first (`PollSource::read_pages`).
    pub fn lists_newest_first(self) -> bool {
        matches!(
            self,
            Vendor::Slack | Vendor::GoogleWorkspace | Vendor::Launchdarkly
        )
    }

    /// The source name the records are submitted under (the normalizer's).
    pub fn source(self) -> &'static str {
        match self {
            Vendor::Okta => "okta",
            Vendor::Github => "github",
            Vendor::Slack => "slack",
            Vendor::Onepassword => "onepassword",
            Vendor::GoogleWorkspace => "google_workspace",
            Vendor::M365 => "m365",
            Vendor::AwsCloudtrail => "aws_cloudtrail",
            Vendor::Salesforce => "salesforce",
            Vendor::Launchdarkly => "launchdarkly",
        }
    }

    /// The `Authorization` header value for `token`.
    pub(crate) fn authorization(self, token: &str) -> String {
        match self {
            Vendor::Okta => format!("SSWS {token}"),
            // LaunchDarkly takes the access token alone (`api-...`), no scheme.
            Vendor::Launchdarkly => token.to_string(),
            _ => format!("Bearer {token}"),
        }
    }

    /// What the configuration must name besides the URL and token: `None` if complete.
    pub(crate) fn missing(self, org: Option<&str>, feed: Option<&str>) -> Option<&'static str> {
        match self {
            Vendor::Github if org.is_none() => Some("`org` (the GitHub organization)"),
            Vendor::Onepassword if !feed.is_some_and(|f| ONEPASSWORD_FEEDS.contains(&f)) => {
                Some("`feed` (signinattempts, itemusages or auditevents)")
            }
            Vendor::GoogleWorkspace if feed.is_none() => {
                Some("`feed` (the Reports API application: login, admin, drive, token, ...)")
            }
            Vendor::AwsCloudtrail if feed.is_none() => {
                Some("`feed` (the log files' key prefix: AWSLogs/<account>/CloudTrail/<region>/)")
            }
            Vendor::M365 if org.is_none() => Some("`org` (the Azure AD tenant id)"),
            Vendor::Salesforce if !feed.is_some_and(|f| super::salesforce::FEEDS.contains(&f)) => {
                Some("`feed` (setup_audit_trail or event_log_files)")
            }
            Vendor::M365 if feed.is_none() => Some(
                "`feed` (the content type: Audit.AzureActiveDirectory, Audit.Exchange, Audit.SharePoint, Audit.General or DLP.All)",
            ),
            _ => None,
        }
    }
}

/// The 1Password Events API's feeds (`/api/v1/<feed>`).
const ONEPASSWORD_FEEDS: [&str; 3] = ["signinattempts", "itemusages", "auditevents"];

/// One request to make.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PageRequest {
    pub url: Url,
    /// A JSON body to `POST` (1Password); `GET` without one.
    pub body: Option<serde_json::Value>,
    /// A form to `POST` (Microsoft's token endpoint).
    pub form: Option<Vec<(&'static str, String)>>,
    /// Whether the request goes on from `Checkpoint::resume` (a link or cursor the vendor gave),
    /// which the vendor may have expired.
    pub resumes: bool,
}

impl PageRequest {
    /// A `GET` of `url`.
    pub fn get(url: Url) -> PageRequest {
        PageRequest {
            url,
            body: None,
            form: None,
            resumes: false,
        }
    }
}

/// What a fetched page yields.
#[derive(Debug)]
pub(crate) struct Page {
    pub records: Vec<RawJson>,
    /// The checkpoint once these records are stored.
    pub checkpoint: Checkpoint,
    /// Whether another page is due now (else wait for the next poll).
    pub more: bool,
    /// The records' times as the checkpoint took them (which it did not, and why).
    pub times: CheckpointTime,
}

/// A configured API: vendor, where, and what.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub vendor: Vendor,
    pub base: Url,
    pub org: Option<String>,
    pub feed: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Api {
    /// The request for the page after `cp`; `start` is where a first listing begins.
    pub fn request(&self, cp: &Checkpoint, start: DateTime<Utc>) -> Result<PageRequest, PollError> {
        let since = cp.since.unwrap_or(start);
        match self.vendor {
            Vendor::M365 | Vendor::AwsCloudtrail | Vendor::Salesforce => Err(not_paged()),
            Vendor::Okta | Vendor::Github => {
                if let Some(next) = &cp.resume {
                    return Ok(PageRequest {
                        resumes: true,
                        ..PageRequest::get(self.same_origin(next)?)
                    });
                }
                let mut url = match self.vendor {
                    Vendor::Okta => self.join("api/v1/logs")?,
                    _ => self.join(&format!(
                        "orgs/{}/audit-log",
                        self.org.as_deref().unwrap_or_default()
                    ))?,
                };
                {
                    let mut q = url.query_pairs_mut();
                    if self.vendor == Vendor::Okta {
                        q.append_pair("since", &rfc3339(since))
                            .append_pair("sortOrder", "ASCENDING")
                            .append_pair("limit", "1000");
                    } else {
                        // `include=all`: GitHub answers web events only by default, and the
                        // Git ones (`git.clone`, `git.push`) are what the mass-clone rule reads
                        // (QA: that rule could never fire on polled data).
                        q.append_pair("phrase", &format!("created:>={}", rfc3339(since)))
                            .append_pair("include", "all")
                            .append_pair("order", "asc")
                            .append_pair("per_page", "100");
                    }
                }
                Ok(PageRequest::get(url))
            }
            Vendor::Slack | Vendor::GoogleWorkspace => {
                let from = cp.listing_since.unwrap_or(since);
                let mut url = match self.vendor {
                    Vendor::Slack => self.join("audit/v1/logs")?,
                    _ => self.join(&format!(
                        "admin/reports/v1/activity/users/all/applications/{}",
                        self.feed.as_deref().unwrap_or_default()
                    ))?,
                };
                {
                    let mut q = url.query_pairs_mut();
                    if self.vendor == Vendor::Slack {
                        q.append_pair("oldest", &from.timestamp().to_string())
                            .append_pair("limit", "200");
                        if let Some(cursor) = &cp.resume {
                            q.append_pair("cursor", cursor);
                        }
                    } else {
                        q.append_pair("startTime", &rfc3339(from))
                            .append_pair("maxResults", "1000");
                        if let Some(token) = &cp.resume {
                            q.append_pair("pageToken", token);
                        }
                    }
                }
                Ok(PageRequest {
                    resumes: cp.resume.is_some(),
                    ..PageRequest::get(url)
                })
            }
            Vendor::Launchdarkly => {
                if let Some(next) = &cp.resume {
                    return Ok(PageRequest {
                        resumes: true,
                        ..PageRequest::get(self.same_origin(next)?)
                    });
                }
                let from = cp.listing_since.unwrap_or(since);
                let mut url = self.join("api/v2/auditlog")?;
                // `after` is exclusive and in milliseconds: one millisecond earlier keeps the
                // newest stored millisecond in, as the other listings are inclusive.
                url.query_pairs_mut()
                    .append_pair("after", &(from.timestamp_millis() - 1).to_string())
                    .append_pair("limit", "20");
                Ok(PageRequest::get(url))
            }
            Vendor::Onepassword => {
                let url = self.join(&format!(
                    "api/v1/{}",
                    self.feed.as_deref().unwrap_or_default()
                ))?;
                let body = match &cp.resume {
                    Some(cursor) => serde_json::json!({ "cursor": cursor }),
                    None => serde_json::json!({ "limit": 1000, "start_time": rfc3339(since) }),
                };
                Ok(PageRequest {
                    body: Some(body),
                    resumes: cp.resume.is_some(),
                    ..PageRequest::get(url)
                })
            }
        }
    }

    /// Read a page answered to a request made at `cp`, at `now`. `link_next` is the `Link`
    /// header's `rel="next"` target, if any. The checkpoint's `since` moves to the newest record
    /// time as [`checkpoint_time`] allows.
    pub fn page(
        &self,
        cp: &Checkpoint,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
        body: RawJson,
        link_next: Option<String>,
    ) -> Result<Page, PollError> {
        let shape = |what: &str| PollError::Malformed(format!("the page has no {what}"));
        let (records, time_path): (Vec<RawJson>, &[&str]) = match self.vendor {
            Vendor::M365 | Vendor::AwsCloudtrail | Vendor::Salesforce => return Err(not_paged()),
            Vendor::Okta | Vendor::Github => {
                let path: &[&str] = if self.vendor == Vendor::Okta {
                    &["published"]
                } else {
                    &["@timestamp"]
                };
                let records = match body.as_array() {
                    Some(list) => list.iter().cloned().collect(),
                    // An empty object for "nothing new" (seen in recorded Okta pages).
                    None if self.vendor == Vendor::Okta
                        && body.as_object().is_some_and(|o| o.is_empty()) =>
                    {
                        Vec::new()
                    }
                    None => return Err(shape("JSON array")),
                };
                (records, path)
            }
            Vendor::Slack => (list_at(&body, "entries", None)?, &["date_create"]),
            // Google leaves `items` out of an empty page, which still names its kind: a page
            // without either (`{}` from a proxy, an error object) is no empty page (QA: taken
            // for one mid-listing, it ended the listing and the older pages were never read).
            Vendor::GoogleWorkspace => (
                list_at(&body, "items", Some(("kind", "admin#reports#activities")))?,
                &["id", "time"],
            ),
            Vendor::Onepassword => (list_at(&body, "items", None)?, &["timestamp"]),
            Vendor::Launchdarkly => (list_at(&body, "items", None)?, &["date"]),
        };
        let times = checkpoint_time(
            cp.since,
            records.iter().filter_map(|r| time_at(r, time_path)),
            now,
        );
        let mut next = Checkpoint {
            since: times.since,
            ..cp.clone()
        };
        let more;
        match self.vendor {
            Vendor::Okta | Vendor::Github => {
                // Okta's link at the end of the log is where new records will appear; an
                // empty page ends this poll but keeps the link.
                if let Some(link) = &link_next {
                    self.same_origin(link)?;
                }
                more = link_next.is_some() && !records.is_empty();
                next.resume = link_next;
            }
            Vendor::Slack | Vendor::GoogleWorkspace | Vendor::Launchdarkly => {
                let cursor = match self.vendor {
                    Vendor::Slack => str_at(&body, &["response_metadata", "next_cursor"]),
                    // A page past the last one is empty; its link is not followed further.
                    Vendor::Launchdarkly if records.is_empty() => None,
                    Vendor::Launchdarkly => str_at(&body, &["_links", "next", "href"]),
                    _ => str_at(&body, &["nextPageToken"]),
                };
                if let (Vendor::Launchdarkly, Some(link)) = (self.vendor, &cursor) {
                    self.same_origin(link)?;
                }
                more = cursor.is_some();
                if more {
                    // Mid-listing: its lower bound stays until the listing is read through.
                    next.listing_since = Some(cp.listing_since.or(cp.since).unwrap_or(start));
                } else {
                    next.listing_since = None;
                }
                next.resume = cursor;
            }
            Vendor::M365 | Vendor::AwsCloudtrail | Vendor::Salesforce => return Err(not_paged()),
            Vendor::Onepassword => {
                let cursor = str_at(&body, &["cursor"]).ok_or_else(|| shape("`cursor`"))?;
                more = body.get("has_more").and_then(|v| v.as_bool()) == Some(true);
                next.resume = Some(cursor);
            }
        }
        Ok(Page {
            records,
            checkpoint: next,
            more,
            times,
        })
    }

    /// `path` under the base URL (which may itself have a path, e.g. behind a proxy).
    pub(crate) fn join(&self, path: &str) -> Result<Url, PollError> {
        let mut base = self.base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base.join(path)
            .map_err(|e| PollError::Config(format!("base_url + `{path}`: {e}")))
    }

    /// A link the vendor gave, only if it points where the credential is meant to go: a link
    /// to another host would carry the token there.
    pub fn same_origin(&self, link: &str) -> Result<Url, PollError> {
        let url = self
            .base
            .join(link)
            .map_err(|e| PollError::Malformed(format!("next link is not a URL: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(PollError::Malformed(format!(
                "next link leaves {} (to {}); not followed, the credential would go with it",
                self.base.origin().ascii_serialization(),
                url.origin().ascii_serialization()
            )));
        }
        Ok(url)
    }
}

/// Microsoft 365 and CloudTrail are not read page by page with these (`m365.rs`,
/// `cloudtrail.rs`).
fn not_paged() -> PollError {
    PollError::Config("this API is read by its own poller, not as pages".into())
}

/// The records list `key` of a page. Without it, a page is an error (a vendor error sent with
/// status 200, `{"ok": false, "error": "invalid_auth"}`, must not pass for a quiet source),
/// unless the vendor leaves the list out of an empty page that still says what it is
/// (`empty_page`: a member and its value, Google's `"kind": "admin#reports#activities"`).
fn list_at(
    body: &RawJson,
    key: &str,
    empty_page: Option<(&str, &str)>,
) -> Result<Vec<RawJson>, PollError> {
    match body.get(key) {
        Some(list) if list.is_array() => Ok(list
            .as_array()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()),
        None if empty_page.is_some_and(|(member, value)| {
            body.get(member).and_then(|v| v.as_str()) == Some(value)
        }) =>
        {
            Ok(Vec::new())
        }
        _ => Err(PollError::Malformed(format!(
            "the page has no `{key}` list"
        ))),
    }
}

pub(crate) fn str_at(v: &RawJson, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for key in path {
        cur = cur.get(*key)?;
    }
    cur.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

pub(crate) fn time_at(v: &RawJson, path: &[&str]) -> Option<DateTime<Utc>> {
    let mut cur = v;
    for key in path {
        cur = cur.get(*key)?;
    }
    perimeter_model::parse_timestamp(cur).ok()
}

/// The `rel="next"` target of a `Link` header (`<url>; rel="next", <url>; rel="prev"`).
pub(crate) fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(vendor: Vendor) -> Api {
        Api {
            vendor,
            base: Url::parse("https://acme.example.com").unwrap(),
            org: Some("acme".into()),
            feed: Some("auditevents".into()),
        }
    }

    #[test]
    fn a_page_without_its_records_list_is_an_error_unless_the_vendor_leaves_it_out() {
        let cp = Checkpoint::default();
        let start = Utc::now();
        let page =
            |vendor: Vendor, body: sonic_rs::Value| api(vendor).page(&cp, start, start, body, None);
        // A vendor error sent with status 200 is no quiet source.
        for (vendor, body) in [
            (
                Vendor::Slack,
                sonic_rs::json!({"ok": false, "error": "invalid_auth"}),
            ),
            (
                Vendor::Onepassword,
                sonic_rs::json!({"errorCode": "E0000047"}),
            ),
            (Vendor::Github, sonic_rs::json!({})),
            // Neither records nor Google's kind: a proxy's `{}`, an error object.
            (Vendor::GoogleWorkspace, sonic_rs::json!({})),
            (
                Vendor::GoogleWorkspace,
                sonic_rs::json!({"unexpected": true}),
            ),
            (
                Vendor::GoogleWorkspace,
                sonic_rs::json!({"kind": "admin#reports#somethingElse"}),
            ),
        ] {
            assert!(
                matches!(page(vendor, body), Err(PollError::Malformed(_))),
                "{vendor:?}"
            );
        }
        // Google leaves `items` out of an empty page; Okta answers `{}` when nothing is new.
        assert!(page(
            Vendor::GoogleWorkspace,
            sonic_rs::json!({"kind": "admin#reports#activities"})
        )
        .is_ok_and(|p| p.records.is_empty()));
        assert!(page(Vendor::Okta, sonic_rs::json!({})).is_ok_and(|p| p.records.is_empty()));
    }

    #[test]
    fn a_record_time_far_ahead_does_not_move_the_checkpoint() {
        // GitHub's `@timestamp` is in milliseconds; the year 3000 moved `since` there and the
        // next listing asked for `created:>=3000-01-01`.
        let now = Utc::now();
        let cp = Checkpoint {
            since: Some(now - chrono::Duration::hours(2)),
            ..Checkpoint::default()
        };
        let newest = now - chrono::Duration::hours(1);
        let body = sonic_rs::json!([
            {"@timestamp": newest.timestamp_millis(), "_document_id": "a"},
            {"@timestamp": 32_503_680_000_000i64, "_document_id": "b"},
        ]);
        let page = api(Vendor::Github).page(&cp, now, now, body, None).unwrap();
        assert_eq!(page.records.len(), 2);
        assert_eq!(
            page.checkpoint.since.map(|t| t.timestamp_millis()),
            Some(newest.timestamp_millis())
        );
        assert_eq!(page.times.implausible.len(), 1);
    }

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"<https://a/x?after=1>; rel="self", <https://a/x?after=2>; rel="next""#),
            Some("https://a/x?after=2".into())
        );
        assert_eq!(next_link(r#"<https://a/x>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(
            next_link("<https://a/y>; rel=next"),
            Some("https://a/y".into())
        );
    }

    #[test]
    fn links_to_other_hosts_are_refused() {
        let okta = api(Vendor::Okta);
        assert!(okta
            .same_origin("https://acme.example.com/api/v1/logs?after=2")
            .is_ok());
        assert!(okta.same_origin("/api/v1/logs?after=2").is_ok());
        for bad in [
            "https://evil.example.net/api/v1/logs",
            "http://acme.example.com/api/v1/logs",
            "https://acme.example.com:8443/api/v1/logs",
        ] {
            let err = okta.same_origin(bad).unwrap_err().to_string();
            assert!(err.contains("not followed"), "{bad}: {err}");
        }
    }

    #[test]
    fn first_requests_start_at_the_checkpoint_or_the_lookback() {
        let start = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cp = Checkpoint::default();
        let okta = api(Vendor::Okta).request(&cp, start).unwrap();
        assert_eq!(
            okta.url.as_str(),
            "https://acme.example.com/api/v1/logs?since=2026-12-01T00%3A00%3A00Z&sortOrder=ASCENDING&limit=1000"
        );
        let gh = api(Vendor::Github).request(&cp, start).unwrap();
        assert_eq!(gh.url.path(), "/orgs/acme/audit-log");
        assert!(
            gh.url.query().unwrap().contains("include=all"),
            "Git events too"
        );
        assert!(gh
            .url
            .query()
            .unwrap()
            .contains("created%3A%3E%3D2026-12-01T00"));
        let later = Checkpoint {
            since: Some(start + chrono::Duration::hours(5)),
            ..Checkpoint::default()
        };
        let slack = api(Vendor::Slack).request(&later, start).unwrap();
        assert_eq!(
            slack.url.query(),
            Some(
                format!(
                    "oldest={}&limit=200",
                    (start + chrono::Duration::hours(5)).timestamp()
                )
                .as_str()
            )
        );
        let op = api(Vendor::Onepassword).request(&cp, start).unwrap();
        assert_eq!(op.url.path(), "/api/v1/auditevents");
        assert_eq!(op.body.unwrap()["start_time"], "2026-12-01T00:00:00Z");
        let resumed = Checkpoint {
            resume: Some("c1".into()),
            ..Checkpoint::default()
        };
        let op = api(Vendor::Onepassword).request(&resumed, start).unwrap();
        assert_eq!(op.body.unwrap(), serde_json::json!({"cursor": "c1"}));
        assert!(op.resumes);
    }
}
