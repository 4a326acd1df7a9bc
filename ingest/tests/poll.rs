//! API pollers against fake vendor APIs on loopback that replay the recorded pages of
//! `../shared/fixtures/saas-api-pages` with the vendors' paging (Okta's and GitHub's `Link`
//! headers, Slack's cursor, 1Password's POSTed cursor, LaunchDarkly's `_links.next`), into the
//! real in-process bus.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use perimeter_ingest::bus::{self, BusReceiver, SubmitAck};
use perimeter_ingest::poll::{Checkpoint, PollConfig, PollError, PollSource, Vendor};
use perimeter_ingest::InputItem;
use serde_json::{json, Value};

const TOKEN: &str = "tok-0123456789abcdef";

/// The recorded pages beside the repository (or beside a worktree of it).
fn fixtures_root() -> PathBuf {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/saas-api-pages");
    if root.exists() {
        root
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/saas-api-pages")
    }
}

fn fixture_pages(dir: &str) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures_root().join(dir))
        .unwrap_or_else(|e| panic!("fixture pages {dir}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect()
}

/// What the fake API saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    authorization: String,
    body: String,
}

/// A status to answer instead of a page, with its headers.
type Failure = (StatusCode, Vec<(&'static str, String)>);

/// A fake vendor API: answers page `n` of `pages` with the vendor's paging, after any queued
/// failure statuses. Slack's pages hold only the entries from the request's `oldest` on.
struct FakeApi {
    vendor: Vendor,
    /// A test may add pages between polls (records the vendor has since).
    pages: Mutex<Vec<Value>>,
    base: Mutex<String>,
    seen: Mutex<Vec<Seen>>,
    failures: Mutex<VecDeque<Failure>>,
    /// Okta: a next link pointing elsewhere on this page index.
    foreign_link_on: Mutex<Option<usize>>,
    /// Okta: page `.0`'s next link leads to page `.1` (a vendor cursor going round in a loop).
    link_back: Mutex<Option<(usize, usize)>>,
    /// Every page after the first answered 404 (a proxy that breaks the vendor's links).
    refuse_cursors: Mutex<bool>,
}

impl FakeApi {
    fn page_index(&self, uri: &str, body: &str) -> usize {
        let param = |name: &str| {
            uri.split(['?', '&'])
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
        };
        let n = match self.vendor {
            Vendor::Okta | Vendor::Github => param("after"),
            Vendor::Slack => param("cursor"),
            Vendor::GoogleWorkspace => param("pageToken"),
            Vendor::Launchdarkly => param("before"),
            Vendor::Onepassword => serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|b| b["cursor"].as_str().map(str::to_string)),
            Vendor::M365 | Vendor::AwsCloudtrail | Vendor::Salesforce => {
                unreachable!("these have fakes of their own")
            }
        };
        n.and_then(|c| c.trim_start_matches('c').parse().ok())
            .unwrap_or(0)
    }

    fn answer(&self, n: usize, uri: &str) -> Response {
        let pages = self.pages.lock().unwrap().clone();
        let last = pages.len() - 1;
        let base = self.base.lock().unwrap().clone();
        match self.vendor {
            Vendor::Okta | Vendor::Github => {
                // Okta links on from its last page too (where new records will appear); GitHub
                // stops linking.
                let body = pages.get(n).cloned().unwrap_or(json!([]));
                let path = if self.vendor == Vendor::Okta {
                    "/api/v1/logs"
                } else {
                    "/orgs/acme/audit-log"
                };
                let link_back = self
                    .link_back
                    .lock()
                    .unwrap()
                    .filter(|(from, _)| *from == n);
                let next = if let Some((_, to)) = link_back {
                    Some(to)
                } else if self.vendor == Vendor::Okta {
                    Some(n.min(last) + 1)
                } else {
                    (n < last).then_some(n + 1)
                };
                let mut headers = HeaderMap::new();
                if let Some(next) = next {
                    let target = if *self.foreign_link_on.lock().unwrap() == Some(n) {
                        format!("http://127.0.0.2:9{path}?after=c{next}")
                    } else {
                        format!("{base}{path}?after=c{next}")
                    };
                    headers.insert("link", format!("<{target}>; rel=\"next\"").parse().unwrap());
                }
                (headers, axum::Json(body)).into_response()
            }
            Vendor::Slack | Vendor::GoogleWorkspace => {
                let mut body = pages[n.min(last)].clone();
                let cursor = if n < last {
                    format!("c{}", n + 1)
                } else {
                    String::new()
                };
                if self.vendor == Vendor::Slack {
                    let oldest: i64 = uri
                        .split(['?', '&'])
                        .find_map(|kv| kv.strip_prefix("oldest="))
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    body["entries"]
                        .as_array_mut()
                        .unwrap()
                        .retain(|e| e["date_create"].as_i64() >= Some(oldest));
                    body["response_metadata"] = json!({ "next_cursor": cursor });
                } else if cursor.is_empty() {
                    body.as_object_mut().unwrap().remove("nextPageToken");
                } else {
                    body["nextPageToken"] = json!(cursor);
                }
                axum::Json(body).into_response()
            }
            Vendor::Launchdarkly => {
                // The page's own links as recorded, and a next link on every page but the last.
                let mut body = pages.get(n).cloned().unwrap_or(json!({"items": []}));
                let links = body["_links"].as_object_mut().unwrap();
                links.remove("next");
                if n < last {
                    links.insert(
                        "next".into(),
                        json!({"href": format!("/api/v2/auditlog?after=1755193754255&before=c{}&limit=20", n + 1),
                               "type": "application/json"}),
                    );
                }
                axum::Json(body).into_response()
            }
            Vendor::M365 | Vendor::AwsCloudtrail | Vendor::Salesforce => {
                unreachable!("these have fakes of their own")
            }
            Vendor::Onepassword => {
                let mut body = pages.get(n).cloned().unwrap_or(json!({"items": []}));
                body["cursor"] = json!(format!("c{}", (n + 1).min(pages.len())));
                body["has_more"] = json!(n < last);
                axum::Json(body).into_response()
            }
        }
    }
}

/// Note a request the fake saw: `uri` (prefixed with the method when `with_method`), its
/// `Authorization` and its body.
async fn note(seen: &Mutex<Vec<Seen>>, request: Request, with_method: bool) -> Seen {
    let uri = if with_method {
        format!("{} {}", request.method(), request.uri())
    } else {
        request.uri().to_string()
    };
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let noted = Seen {
        uri,
        authorization,
        body: String::from_utf8_lossy(&body).to_string(),
    };
    seen.lock().unwrap().push(noted.clone());
    noted
}

/// A noted `METHOD target` without its method, and the target's path alone.
fn request_target(noted: &str) -> (String, String) {
    let uri = noted.split_once(' ').map_or(noted, |(_, u)| u).to_string();
    let path = uri.split('?').next().unwrap_or_default().to_string();
    (uri, path)
}

async fn serve(State(api): State<Arc<FakeApi>>, request: Request) -> Response {
    let Seen { uri, body, .. } = note(&api.seen, request, false).await;
    if let Some((status, headers)) = api.failures.lock().unwrap().pop_front() {
        let mut h = HeaderMap::new();
        // `body` is the answer's body, not a header.
        let mut body = "{\"error\":\"no\"}".to_string();
        for (k, v) in headers {
            if k == "body" {
                body = v;
            } else {
                h.insert(k, v.parse().unwrap());
            }
        }
        return (status, h, body).into_response();
    }
    let n = api.page_index(&uri, &body);
    if n > 0 && *api.refuse_cursors.lock().unwrap() {
        return (StatusCode::NOT_FOUND, "{\"error\":\"no such page\"}").into_response();
    }
    api.answer(n, &uri)
}

/// A fake API on a loopback port.
async fn fake_api(vendor: Vendor, pages: Vec<Value>) -> Arc<FakeApi> {
    let api = Arc::new(FakeApi {
        vendor,
        pages: Mutex::new(pages),
        base: Mutex::new(String::new()),
        seen: Mutex::new(Vec::new()),
        failures: Mutex::new(VecDeque::new()),
        foreign_link_on: Mutex::new(None),
        link_back: Mutex::new(None),
        refuse_cursors: Mutex::new(false),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *api.base.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(serve).with_state(api.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    api
}

/// The store's side of the bus: acknowledges batches, or refuses them as `script` says (one
/// entry per batch, `false` refuses; accepts when it is empty), and keeps what it took. Like
/// the store, it tells records it took before (equal ones) as duplicates.
#[derive(Clone, Default)]
struct Consumer {
    taken: Arc<Mutex<Vec<(String, String, Value)>>>,
    script: Arc<Mutex<VecDeque<bool>>>,
    /// Dead letters submitted: (line, reason).
    invalid: Arc<Mutex<Vec<(u64, String)>>>,
}

impl Consumer {
    fn start(mut rx: BusReceiver) -> Consumer {
        let c = Consumer::default();
        let me = c.clone();
        tokio::spawn(async move {
            while let Some(sub) = rx.recv().await {
                if me.script.lock().unwrap().pop_front() == Some(false) {
                    let _ = sub.ack.send(Err("disk full".into()));
                    continue;
                }
                let mut events = 0;
                let mut duplicates = 0;
                let mut taken = me.taken.lock().unwrap();
                for item in sub.items {
                    match item {
                        InputItem::Record { value, .. } => {
                            let value = perimeter_model::raw_to_serde(&value);
                            let again = taken.iter().any(|(_, _, v)| *v == value);
                            duplicates += usize::from(again);
                            events += usize::from(!again);
                            taken.push((sub.source.clone(), sub.tenant.clone(), value));
                        }
                        InputItem::Invalid { line, reason, .. } => {
                            me.invalid.lock().unwrap().push((line, reason))
                        }
                    }
                }
                // As the store answers: new events, and those it had.
                let _ = sub.ack.send(Ok(SubmitAck {
                    events,
                    duplicates,
                    ..SubmitAck::default()
                }));
            }
        });
        c
    }

    fn records(&self) -> Vec<Value> {
        let invalid = self.invalid.lock().unwrap().clone();
        assert!(invalid.is_empty(), "dead letters submitted: {invalid:?}");
        self.taken
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, v)| v.clone())
            .collect()
    }
}

fn config(vendor: Vendor, base: &str) -> PollConfig {
    std::env::set_var("PERIMETER_TEST_POLL_TOKEN", TOKEN);
    PollConfig {
        org: Some("acme".into()),
        feed: Some("auditevents".into()),
        tenant: Some("acme".into()),
        interval_seconds: 1,
        initial_lookback_hours: 24 * 365 * 10,
        request_timeout_seconds: 10,
        max_page_bytes: 1 << 20,
        ..PollConfig::new(
            &format!("{vendor:?}-test").to_lowercase(),
            vendor,
            base,
            "env:PERIMETER_TEST_POLL_TOKEN",
        )
    }
}

struct Setup {
    api: Arc<FakeApi>,
    consumer: Consumer,
    bus: bus::BusSender,
    state: tempfile::TempDir,
}

async fn setup(vendor: Vendor, pages: Vec<Value>) -> Setup {
    let api = fake_api(vendor, pages).await;
    let (bus, rx) = bus::channel(4);
    Setup {
        api,
        consumer: Consumer::start(rx),
        bus,
        state: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// A new source over the same checkpoint directory (as after a restart).
    fn source(&self) -> PollSource {
        self.source_every(1)
    }

    /// [`Setup::source`], polling every `interval_seconds`.
    fn source_every(&self, interval_seconds: u64) -> PollSource {
        let base = self.api.base.lock().unwrap().clone();
        PollSource::new(
            PollConfig {
                interval_seconds,
                ..config(self.api.vendor, &base)
            },
            "default",
            self.state.path(),
            self.bus.clone(),
        )
        .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.api.seen.lock().unwrap().clone()
    }
}

/// The records of a newest-first listing (Slack, Google, LaunchDarkly) as the poller hands
/// them on: oldest first, the last page's first.
fn oldest_first(records: Vec<Value>) -> Vec<Value> {
    records.into_iter().rev().collect()
}

fn all_records(pages: &[Value], key: Option<&str>) -> Vec<Value> {
    pages
        .iter()
        .flat_map(|p| {
            match key {
                Some(k) => p[k].as_array().cloned(),
                None => p.as_array().cloned(),
            }
            .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn okta_pages_are_stored_once_and_a_restart_goes_on_from_the_checkpoint() {
    let pages = fixture_pages("okta/system_log");
    let expected = all_records(&pages, None);
    assert!(!expected.is_empty());
    let s = setup(Vendor::Okta, pages).await;

    let report = s.source().poll_once().await.unwrap();
    assert_eq!(report.records, expected.len());
    assert_eq!(s.consumer.records(), expected);
    let taken = s.consumer.taken.lock().unwrap().clone();
    assert!(taken.iter().all(|(src, t, _)| src == "okta" && t == "acme"));
    let seen = s.seen();
    assert!(seen[0].uri.starts_with("/api/v1/logs?since="), "{seen:?}");
    assert!(seen
        .iter()
        .all(|r| r.authorization == format!("SSWS {TOKEN}")));
    // The last page was empty: its link, where new records will appear, is the checkpoint.
    let cp = s.source().checkpoint().unwrap();
    let resume = cp.resume.clone().expect("a next link is kept");
    assert!(resume.ends_with(&format!("after=c{}", 2)), "{cp:?}");
    assert_eq!(
        cp.since.map(|t| t.to_rfc3339()),
        Some("2021-06-24T00:04:08.123+00:00".to_string())
    );

    // A restart asks for that link first, and gets nothing new.
    let before = s.seen().len();
    let report = s.source().poll_once().await.unwrap();
    assert_eq!(report.records, 0);
    assert!(s.seen()[before].uri.ends_with("after=c2"), "{:?}", s.seen());
    assert_eq!(s.consumer.records().len(), expected.len());
}

/// A record holding half of a surrogate pair escaped alone (`\ud83d`: a display name cut
/// mid-emoji, as JavaScript writes it) made the whole page "not JSON" at every poll, and the
/// poller never got past it: the page is read, that half as the replacement character.
#[tokio::test]
async fn a_page_with_a_lone_surrogate_escape_is_read() {
    let s = setup(Vendor::Okta, fixture_pages("okta/system_log")).await;
    let mut record = fixture_pages("okta/system_log")[0][0].clone();
    record["displayMessage"] = Value::from("Signed in LONE_HALF");
    let page = Value::Array(vec![record])
        .to_string()
        .replace("LONE_HALF", "\\ud83d");
    s.api
        .failures
        .lock()
        .unwrap()
        .push_back((StatusCode::OK, vec![("body", page)]));
    let report = s.source().poll_once().await.unwrap();
    assert!(report.records >= 1, "{report:?}");
    let first = &s.consumer.records()[0];
    assert_eq!(first["displayMessage"], "Signed in \u{fffd}");
}

#[tokio::test]
async fn a_page_the_store_did_not_take_is_fetched_again_and_nothing_is_lost() {
    let pages = fixture_pages("onepassword/events_audit");
    let expected = all_records(&pages, Some("items"));
    let s = setup(Vendor::Onepassword, pages).await;
    s.consumer.script.lock().unwrap().push_back(false);

    let err = s.source().poll_once().await.unwrap_err();
    assert!(matches!(err, PollError::NotStored(_)), "{err}");
    assert!(err.to_string().contains("disk full"));
    assert_eq!(s.source().checkpoint().unwrap(), Checkpoint::default());
    // The pages after the refused one were fetched (and stored) while it was being refused:
    // the next page is fetched while the ones before are stored.
    let first_poll = s.seen().len();

    let report = s.source().poll_once().await.unwrap();
    assert_eq!(report.records, expected.len());
    // The bus is taken in order: what the first poll put on it comes before the retry.
    let stored = s.consumer.records();
    assert_eq!(
        stored[stored.len() - expected.len()..],
        expected[..],
        "none lost, in order"
    );
    assert!(
        stored.iter().all(|r| expected.contains(r)),
        "the first poll stored only pages after the refused one (the real store drops their repeats)"
    );
    // 1Password: POSTed, first with a start time, then with the cursors it gave.
    let seen = s.seen();
    assert!(seen[0].body.contains("start_time"), "{seen:?}");
    assert!(
        seen[first_poll].body.contains("start_time"),
        "refetched from the start: {seen:?}"
    );
    assert_eq!(seen[first_poll + 1].body, r#"{"cursor":"c1"}"#);
    assert!(seen.iter().all(|r| r.uri == "/api/v1/auditevents"));
    assert!(seen
        .iter()
        .all(|r| r.authorization == format!("Bearer {TOKEN}")));
    assert_eq!(
        s.source().checkpoint().unwrap().resume.as_deref(),
        Some("c3")
    );
}

#[tokio::test]
async fn slack_listings_are_read_through_then_start_at_the_newest_time() {
    let pages = fixture_pages("slack/audit");
    let expected = all_records(&pages, Some("entries"));
    let newest = expected
        .iter()
        .filter_map(|e| e["date_create"].as_i64())
        .max()
        .unwrap();
    let s = setup(Vendor::Slack, pages).await;
    let report = s.source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (3, expected.len()));
    let seen = s.seen();
    assert!(seen[1].uri.contains("cursor=c1") && seen[2].uri.contains("cursor=c2"));
    // The listing's lower bound stays the same through its pages.
    let oldest = |uri: &str| {
        uri.split(['?', '&'])
            .find(|p| p.starts_with("oldest="))
            .map(str::to_string)
    };
    assert_eq!(oldest(&seen[0].uri), oldest(&seen[2].uri));
    let cp = s.source().checkpoint().unwrap();
    assert_eq!((cp.resume, cp.listing_since), (None, None));
    assert_eq!(cp.since.map(|t| t.timestamp()), Some(newest));

    s.source().poll_once().await.unwrap();
    let next = &s.seen()[3].uri;
    assert!(
        next.contains(&format!("oldest={newest}")) && !next.contains("cursor"),
        "{next}"
    );
}

/// `poll_errors_total{kind="implausible_time"}` of the Slack test poller.
fn implausible_times_counted(metrics: &perimeter_model::Metrics) -> u64 {
    metrics.counter(
        "poll_errors_total",
        &[("poller", "slack-test"), ("kind", "implausible_time")],
    )
}

/// One record dated in the year 3000 (a vendor clock far off, milliseconds read as seconds)
/// moved the checkpoint there: every later listing asked for `oldest=32503680000`, and no later
/// record of the source was read again, with nothing in the log or the metrics. The record is
/// stored; the checkpoint stays at the newest plausible time, and a warning and a count say so.
#[tokio::test]
async fn a_record_dated_far_ahead_is_stored_but_does_not_move_the_checkpoint() {
    const YEAR_3000: i64 = 32_503_680_000;
    let mut pages = fixture_pages("slack/audit");
    pages[0]["entries"][0]["date_create"] = json!(YEAR_3000);
    let first = all_records(&pages, Some("entries"));
    let newest_plausible = first
        .iter()
        .filter_map(|e| e["date_create"].as_i64())
        .filter(|t| *t != YEAR_3000)
        .max()
        .unwrap();
    let s = setup(Vendor::Slack, pages).await;
    let metrics = Arc::new(perimeter_model::Metrics::new());
    let source = s.source().with_metrics(metrics.clone());
    let log = CapturedLog::default();
    let report = {
        let _logging = log.start();
        source.poll_once().await.unwrap()
    };
    assert_eq!(report.records, first.len());
    assert_eq!(s.consumer.records(), oldest_first(first.clone()));
    let cp = s.source().checkpoint().unwrap();
    assert_eq!(cp.since.map(|t| t.timestamp()), Some(newest_plausible));
    assert_eq!(implausible_times_counted(&metrics), 1);
    let warned = log.lines_with("the checkpoint does not move to their time");
    assert!(
        matches!(&warned[..], [line] if line.contains("WARN")
            && line.contains("slack-test") && line.contains("3000-01-01")),
        "{warned:#?}"
    );

    // Records the vendor has since, newer than the plausible ones, are read at the next poll.
    let mut later = first[1].clone();
    later["id"] = json!("later-than-the-checkpoint");
    later["date_create"] = json!(newest_plausible + 60);
    s.api
        .pages
        .lock()
        .unwrap()
        .insert(0, json!({ "entries": [later.clone()] }));
    source.poll_once().await.unwrap();
    let next = &s.seen()[3].uri;
    assert!(
        next.contains(&format!("oldest={newest_plausible}")),
        "{next}"
    );
    assert!(s.consumer.records().contains(&later), "{next}");
    // The record dated in 3000 was listed again (`since` stays before it), but it is warned
    // about and counted once, not at every poll.
    let year_3000 = s.consumer.records();
    let year_3000 = year_3000.iter().filter(|e| e["date_create"] == YEAR_3000);
    assert_eq!(year_3000.count(), 2);
    assert_eq!(implausible_times_counted(&metrics), 1);
}

/// A record dated hours ahead (a vendor clock a little off) moved the checkpoint to now, and the
/// records the vendor published afterwards with earlier times (Google hours late, GitHub
/// minutes) were below the next listing's `oldest`: 30 of 60 stored in QA, silently. Only record
/// times that have passed move the checkpoint; the one dated ahead is listed again meanwhile.
#[tokio::test]
async fn records_published_after_one_dated_ahead_with_earlier_times_are_read() {
    let now = chrono::Utc::now().timestamp();
    let mut pages = fixture_pages("slack/audit");
    pages[0]["entries"][0]["date_create"] = json!(now + 2 * 3600);
    let first = all_records(&pages, Some("entries"));
    let newest_passed = first
        .iter()
        .filter_map(|e| e["date_create"].as_i64())
        .filter(|t| *t <= now)
        .max()
        .unwrap();
    let s = setup(Vendor::Slack, pages).await;
    let metrics = Arc::new(perimeter_model::Metrics::new());
    s.source()
        .with_metrics(metrics.clone())
        .poll_once()
        .await
        .unwrap();
    assert_eq!(s.consumer.records(), oldest_first(first.clone()));
    let cp = s.source().checkpoint().unwrap();
    assert_eq!(cp.since.map(|t| t.timestamp()), Some(newest_passed));
    // Hours ahead is plausible: nothing to warn about.
    assert_eq!(implausible_times_counted(&metrics), 0);

    // The vendor now has records dated before the first poll.
    let late: Vec<Value> = (1..=3)
        .map(|i| {
            let mut record = first[1].clone();
            record["id"] = json!(format!("published-late-{i}"));
            record["date_create"] = json!(now - 60 * i);
            record
        })
        .collect();
    s.api
        .pages
        .lock()
        .unwrap()
        .insert(0, json!({ "entries": late.clone() }));
    s.source().poll_once().await.unwrap();
    let next = &s.seen()[3].uri;
    assert!(next.contains(&format!("oldest={newest_passed}")), "{next}");
    let stored = s.consumer.records();
    assert!(late.iter().all(|r| stored.contains(r)), "{next}");
}

/// Pages are put on the bus without waiting for the ones before to be stored: a store that
/// answers nothing until it holds every page still gets them, in order (a newest-first listing
/// oldest first), and the checkpoint ends past the last.
#[tokio::test]
async fn the_next_page_is_fetched_while_the_ones_before_are_stored() {
    let pages = fixture_pages("slack/audit");
    let expected = oldest_first(all_records(&pages, Some("entries")));
    let api = fake_api(Vendor::Slack, pages.clone()).await;
    let (bus, mut rx) = bus::channel(8);
    let state = tempfile::tempdir().unwrap();
    let base = api.base.lock().unwrap().clone();
    let source =
        PollSource::new(config(Vendor::Slack, &base), "default", state.path(), bus).unwrap();
    let n = pages.len();
    let store = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(rx.recv().await.unwrap());
        }
        let mut records = Vec::new();
        for sub in held {
            for item in &sub.items {
                if let InputItem::Record { value, .. } = item {
                    records.push(perimeter_model::raw_to_serde(value));
                }
            }
            let _ = sub.ack.send(Ok(SubmitAck::default()));
        }
        records
    });
    let report = tokio::time::timeout(Duration::from_secs(20), source.poll_once())
        .await
        .expect("every page was put on the bus before the first was stored")
        .unwrap();
    assert_eq!(report.pages as usize, n);
    assert_eq!(store.await.unwrap(), expected, "in order");
    assert!(source.checkpoint().unwrap().since.is_some());
}

/// A newest-first listing goes on the bus oldest first once it is read through. The store
/// refusing a part of it leaves the checkpoint before the listing, and the next poll lists it
/// again from its lower bound: nothing is lost (the real store drops the repeats).
#[tokio::test]
async fn a_listing_interrupted_mid_way_is_listed_again_from_its_bound() {
    let pages = fixture_pages("slack/audit");
    let expected = oldest_first(all_records(&pages, Some("entries")));
    let oldest_page = pages.last().unwrap()["entries"].as_array().unwrap().len();
    let s = setup(Vendor::Slack, pages).await;
    // The listing's oldest page is stored, the next part refused (the store failed).
    s.consumer.script.lock().unwrap().extend([true, false]);
    let metrics = Arc::new(perimeter_model::Metrics::new());
    s.source()
        .with_metrics(metrics.clone())
        .poll_once()
        .await
        .unwrap_err();
    // What was stored before the failure is counted, and the failure by its kind.
    let poller = [("poller", "slack-test")];
    assert_eq!(
        metrics.counter("poll_records_total", &poller),
        oldest_page as u64
    );
    assert_eq!(metrics.counter("poll_pages_total", &poller), 1);
    assert_eq!(
        metrics.counter(
            "poll_errors_total",
            &[("poller", "slack-test"), ("kind", "not_stored")]
        ),
        1
    );
    let cp = s.source().checkpoint().unwrap();
    assert_eq!(cp.resume, None, "{cp:?}");
    assert_eq!(cp.since, None, "not past the listing: {cp:?}");
    let first_poll = s.seen().len();
    assert_eq!(first_poll, 3, "the whole listing was read");
    // (The newest page, put on the bus before the refusal was known, was stored too.)
    let stored_first = s.consumer.records().len();

    // After a restart: the listing is read again from its start, oldest first.
    let report = s.source().poll_once().await.unwrap();
    assert_eq!(report.pages, 3);
    let seen = s.seen();
    assert!(!seen[first_poll].uri.contains("cursor="), "{seen:?}");
    let stored = s.consumer.records();
    assert_eq!(
        stored[..oldest_page],
        expected[..oldest_page],
        "the oldest page"
    );
    assert_eq!(
        stored[stored_first..],
        expected[..],
        "then the whole listing, in order"
    );
}

#[tokio::test]
async fn rate_limits_wait_as_told_and_refused_credentials_say_so_without_the_token() {
    let s = setup(Vendor::Github, fixture_pages("github/audit")).await;
    s.api.failures.lock().unwrap().push_back((
        StatusCode::TOO_MANY_REQUESTS,
        vec![("retry-after", "3".into())],
    ));
    match s.source().poll_once().await {
        Err(PollError::RateLimited(d)) => assert_eq!(d, Duration::from_secs(3)),
        other => panic!("expected a rate limit, got {other:?}"),
    }
    s.api
        .failures
        .lock()
        .unwrap()
        .push_back((StatusCode::UNAUTHORIZED, vec![]));
    let err = s.source().poll_once().await.unwrap_err();
    assert!(matches!(err, PollError::Unauthorized(401, _)), "{err}");
    assert!(!format!("{err} {err:?}").contains(TOKEN));
    // What the vendor said is in the error, on one line, without the token should it be echoed.
    assert!(err.to_string().ends_with(": vendor says \"no\""), "{err}");
    s.api.failures.lock().unwrap().push_back((
        StatusCode::UNAUTHORIZED,
        vec![(
            "body",
            format!(r#"{{"message":"Bad credentials: {TOKEN}\nsee docs","documentation_url":"https://docs.github.com/rest"}}"#),
        )],
    ));
    let err = s.source().poll_once().await.unwrap_err().to_string();
    assert!(
        err.ends_with(r#": vendor says "Bad credentials: [REDACTED] see docs""#),
        "{err}"
    );
    // An HTML error page is not quoted.
    s.api.failures.lock().unwrap().push_back((
        StatusCode::BAD_GATEWAY,
        vec![("body", "<html>\n<title>502</title>\n</html>".into())],
    ));
    let err = s.source().poll_once().await.unwrap_err().to_string();
    assert!(
        err.starts_with("HTTP 502 from ") && !err.contains("vendor says"),
        "{err}"
    );
    s.api
        .failures
        .lock()
        .unwrap()
        .push_back((StatusCode::BAD_GATEWAY, vec![]));
    let err = s.source().poll_once().await.unwrap_err().to_string();
    assert!(err.contains("502") && !err.contains(TOKEN), "{err}");
    // A page that is not JSON is told by line and column, without quoting it.
    s.api.failures.lock().unwrap().push_back((
        StatusCode::OK,
        vec![(
            "body",
            r#"[{"actor":"x","note":"pw Hunter2pass" BROKEN}]"#.into(),
        )],
    ));
    let err = s.source().poll_once().await.unwrap_err().to_string();
    assert!(
        err.contains("the page is not JSON: ") && err.contains("column"),
        "{err}"
    );
    assert!(
        !err.contains("pass") && !err.contains("BROKEN") && !err.contains('\n'),
        "{err}"
    );
    assert!(s.consumer.records().is_empty());

    // Then it works: GitHub's pages by their links, and the next listing starts at the
    // newest @timestamp stored.
    let report = s.source().poll_once().await.unwrap();
    assert_eq!(report.pages, 2);
    let cp = s.source().checkpoint().unwrap();
    assert_eq!(cp.resume, None, "GitHub's last page has no next link");
    assert_eq!(
        cp.since.map(|t| t.timestamp_millis()),
        Some(1_625_045_793_371)
    );
    let before = s.seen().len();
    s.source().poll_once().await.unwrap();
    let next = s.seen()[before].uri.clone();
    assert!(
        next.contains("phrase=created%3A%3E%3D2021-06-30T09%3A36%3A33Z")
            && !next.contains("after="),
        "{next}"
    );
}

/// `source` run until it has waited `num_waits` times between polls, with the waits recorded
/// instead of spent; `at_wait(n)` is called at the `n`th (to queue the vendor's next answers).
async fn waits_between_polls(
    source: PollSource,
    num_waits: usize,
    at_wait: impl Fn(usize) + Send + 'static,
) -> Vec<Duration> {
    let waits: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let sleep = {
        let waits = waits.clone();
        move |wait: Duration| {
            let mut recorded = waits.lock().unwrap();
            recorded.push(wait);
            let n = recorded.len();
            at_wait(n);
            async move {
                if n >= num_waits {
                    std::future::pending::<()>().await
                }
            }
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(source.run_with_sleep(
        async move {
            let _ = stop_rx.await;
        },
        sleep,
    ));
    // Only a guard against hanging: no wait is spent, so this takes milliseconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while waits.lock().unwrap().len() < num_waits {
        assert!(std::time::Instant::now() < deadline, "{:?}", waits.lock());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run ends at shutdown")
        .unwrap();
    let waits = waits.lock().unwrap().clone();
    waits
}

/// Log lines of the test's thread (a current-thread runtime runs the poller there).
#[path = "../../tests/support/captured_log.rs"]
mod captured_log;
use captured_log::CapturedLog;

/// A vendor answering 500 logged an ERROR at every retry (every 2 s, 4 s, ... up to the
/// interval, for as long as its outage lasted). Like rate limits, server errors are logged when
/// they begin and every tenth in a row, and once when they end; the backoff and the metrics
/// still have every one.
#[tokio::test]
async fn server_errors_in_a_row_are_logged_when_they_begin_and_every_tenth() {
    let s = setup(Vendor::Github, fixture_pages("github/audit")).await;
    {
        let mut failures = s.api.failures.lock().unwrap();
        for status in [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY] {
            for _ in 0..6 {
                failures.push_back((status, vec![]));
            }
        }
    }
    let metrics = Arc::new(perimeter_model::Metrics::new());
    let source = s.source_every(60).with_metrics(metrics.clone());
    let log = CapturedLog::default();
    let _logging = log.start();
    let waits = waits_between_polls(source, 13, |_| {}).await;
    let secs: Vec<u64> = waits.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60, 60, 60]);
    let logged = log.lines_with("poll failed");
    assert_eq!(logged.len(), 2, "{logged:#?}");
    assert!(
        logged.iter().all(|line| line.contains("ERROR")),
        "{logged:#?}"
    );
    assert!(
        logged[0].contains("server_errors_in_a_row=1"),
        "{logged:#?}"
    );
    assert!(
        logged[1].contains("server_errors_in_a_row=10"),
        "{logged:#?}"
    );
    assert!(logged[1].contains("HTTP 502"), "{logged:#?}");
    let ended = log.lines_with("no longer answers with server errors");
    assert!(
        matches!(&ended[..], [line] if line.contains("server_errors_in_a_row=12")),
        "{ended:#?}"
    );
    assert_eq!(
        metrics.counter(
            "poll_errors_total",
            &[("poller", "github-test"), ("kind", "http")]
        ),
        12
    );
    // Then the pages, all of them.
    let expected = all_records(&fixture_pages("github/audit"), None);
    assert_eq!(s.consumer.records()[..expected.len()], expected);
}

/// A vendor whose clock is off answers 429 with `Retry-After: 0` or a date already past. Taken
/// at its word that had the poller ask once a second for as long as it lasted, ignoring
/// `interval_seconds`; the waits must grow with the rate limits in a row as failures' do, and
/// a long `Retry-After` must still be waited out. The waits are recorded, not spent.
#[tokio::test]
async fn rate_limits_asking_for_no_wait_back_off_growingly() {
    let s = setup(Vendor::Github, fixture_pages("github/audit")).await;
    let rate_limited = |retry_after: &str| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            vec![("retry-after", retry_after.to_string())],
        )
    };
    {
        let mut failures = s.api.failures.lock().unwrap();
        for _ in 0..4 {
            failures.push_back(rate_limited("0"));
        }
        failures.push_back(rate_limited("Wed, 21 Oct 2015 07:28:00 GMT"));
    }
    let api = s.api.clone();
    let waits = waits_between_polls(s.source_every(60), 9, move |n| {
        // After the first poll that worked: a long Retry-After, then one asking for none.
        if n == 6 {
            let mut failures = api.failures.lock().unwrap();
            failures.push_back(rate_limited("600"));
            failures.push_back(rate_limited("0"));
        }
    })
    .await;
    let secs: Vec<u64> = waits.iter().map(|d| d.as_secs()).collect();
    assert_eq!(
        secs,
        [2, 4, 8, 16, 32, 60, 600, 4, 60],
        "growing up to the interval; the interval after a poll that worked; a long Retry-After in full"
    );
    // The first poll that worked stored both pages (the next listing repeats its last second).
    let expected = all_records(&fixture_pages("github/audit"), None);
    assert_eq!(s.consumer.records()[..expected.len()], expected);
}

#[tokio::test]
async fn a_next_link_to_another_host_is_not_followed() {
    let s = setup(Vendor::Okta, fixture_pages("okta/system_log")).await;
    *s.api.foreign_link_on.lock().unwrap() = Some(0);
    let err = s.source().poll_once().await.unwrap_err().to_string();
    assert!(err.contains("not followed"), "{err}");
    // The page's records were not stored either: the checkpoint did not move.
    assert!(s.consumer.records().is_empty());
    assert_eq!(s.source().checkpoint().unwrap(), Checkpoint::default());
    assert_eq!(s.seen().len(), 1);
}

/// A next link leading back to a page already read (QA: a cursor looping back) had an Okta
/// poller read the same pages at every poll, all of them duplicates, while its metrics said
/// success. A link back within a poll is not followed round again, and a poll that reads only
/// duplicates and ends at the link it began with is stuck too: both are warned and counted. A
/// quiet source is not stuck.
#[tokio::test]
async fn a_next_link_going_round_in_a_loop_is_reported_as_stuck() {
    let s = setup(Vendor::Okta, fixture_pages("okta/system_log")).await;
    *s.api.link_back.lock().unwrap() = Some((0, 0));
    let metrics = Arc::new(perimeter_model::Metrics::new());
    let stuck = || {
        metrics.counter(
            "poll_errors_total",
            &[("poller", "okta-test"), ("kind", "stuck")],
        )
    };
    let log = CapturedLog::default();
    let _logging = log.start();
    let report = s
        .source()
        .with_metrics(metrics.clone())
        .poll_once()
        .await
        .unwrap();
    assert_eq!(
        (
            report.pages,
            report.records,
            report.duplicates,
            report.events
        ),
        (2, 2, 1, 1),
        "requests: {}",
        s.seen().len()
    );
    assert_eq!(stuck(), 1);

    // One page per poll: each poll reads the same page again and ends at the link it began with.
    let base = s.api.base.lock().unwrap().clone();
    let one_page = || {
        PollSource::new(
            PollConfig {
                max_pages_per_poll: 1,
                ..config(Vendor::Okta, &base)
            },
            "default",
            s.state.path(),
            s.bus.clone(),
        )
        .unwrap()
        .with_metrics(metrics.clone())
    };
    let report = one_page().poll_once().await.unwrap();
    assert_eq!((report.records, report.duplicates), (1, 1));
    assert_eq!(stuck(), 2);
    let warned = log.lines_with("the poller is stuck");
    assert!(
        warned.len() == 2
            && warned
                .iter()
                .all(|l| l.contains("WARN") && l.contains("okta-test")),
        "{warned:#?}"
    );

    // The vendor links on again: re-reading the page, then nothing new, is no loop.
    *s.api.link_back.lock().unwrap() = None;
    for _ in 0..3 {
        one_page().poll_once().await.unwrap();
    }
    assert_eq!(stuck(), 2);
}

#[tokio::test]
async fn an_expired_cursor_restarts_the_listing_from_the_last_stored_time() {
    let pages = fixture_pages("okta/system_log");
    let s = setup(Vendor::Okta, pages).await;
    s.source().poll_once().await.unwrap();
    let stored = s.consumer.records().len();
    s.api
        .failures
        .lock()
        .unwrap()
        .push_back((StatusCode::NOT_FOUND, vec![]));
    s.source().poll_once().await.unwrap();
    let seen = s.seen();
    let n = seen.len();
    assert!(
        seen[n - 3].uri.ends_with("after=c2"),
        "the kept link: {seen:?}"
    );
    assert!(
        seen[n - 2].uri.contains("since=2021-06-24T00%3A04%3A08Z"),
        "then from the newest stored time: {seen:?}"
    );
    // The record at that time came again; the store (idempotent on id) keeps it once.
    assert_eq!(s.consumer.records().len(), stored + 1);
}

/// QA: behind a proxy that broke the vendor's next links, every poll read the first page, was
/// refused its link, listed again from the stored time, and did so up to `max_pages_per_poll`
/// times (~200 requests in a second, at every poll) while reporting success. Listing again
/// happens once per poll; a link refused after that fails the poll.
#[tokio::test]
async fn a_link_refused_again_after_listing_anew_fails_the_poll() {
    for vendor in [Vendor::Okta, Vendor::GoogleWorkspace] {
        let pages = fixture_pages(match vendor {
            Vendor::Okta => "okta/system_log",
            _ => "gsuite/activities",
        });
        let s = setup(vendor, pages).await;
        *s.api.refuse_cursors.lock().unwrap() = true;
        let err = s.source().poll_once().await.unwrap_err();
        assert!(
            matches!(err, PollError::Http { status: 404, .. })
                && err.to_string().contains("refused again"),
            "{vendor:?}: {err}"
        );
        let seen: Vec<String> = s.seen().into_iter().map(|r| r.uri).collect();
        assert_eq!(
            seen.len(),
            4,
            "{vendor:?}: first page, link, first page, link: {seen:?}"
        );
        // The first page's records were stored; the next poll fails the same way.
        let distinct = || {
            let records = s.consumer.records();
            records
                .iter()
                .map(Value::to_string)
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        let stored = distinct();
        assert!(stored > 0, "{vendor:?}");
        s.source().poll_once().await.unwrap_err();
        assert_eq!(distinct(), stored, "{vendor:?}");
    }
}

#[tokio::test]
async fn run_polls_until_shutdown() {
    let pages = fixture_pages("onepassword/events_audit");
    let expected = all_records(&pages, Some("items")).len();
    let s = setup(Vendor::Onepassword, pages).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(s.source().run(async move {
        let _ = stop_rx.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.consumer.records().len() < expected || s.seen().len() < 5 {
        assert!(std::time::Instant::now() < deadline, "{:?}", s.seen());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run ends at shutdown")
        .unwrap();
    // Later polls go on from the cursor: nothing is taken twice.
    assert_eq!(s.consumer.records().len(), expected);
    assert!(s.seen().last().unwrap().body.contains("\"cursor\""));
}

#[tokio::test]
async fn google_workspace_pages_follow_their_page_tokens() {
    let pages = fixture_pages("gsuite/activities");
    let expected = all_records(&pages, Some("items"));
    let newest = expected
        .iter()
        .filter_map(|e| e["id"]["time"].as_str())
        .max()
        .unwrap()
        .to_string();
    let s = setup(Vendor::GoogleWorkspace, pages).await;
    let report = s.source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (3, expected.len()));
    assert_eq!(s.consumer.records(), oldest_first(expected.clone()));
    let seen = s.seen();
    assert!(seen[0]
        .uri
        .starts_with("/admin/reports/v1/activity/users/all/applications/auditevents?startTime="));
    assert!(seen[1].uri.contains("pageToken=c1") && seen[2].uri.contains("pageToken=c2"));
    assert!(seen
        .iter()
        .all(|r| r.authorization == format!("Bearer {TOKEN}")));
    let cp = s.source().checkpoint().unwrap();
    assert_eq!(
        cp.since
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        Some(newest.clone()),
        "{cp:?}"
    );
    s.source().poll_once().await.unwrap();
    let next = &s.seen()[3].uri;
    assert!(
        next.contains(&format!("startTime={}", &newest[..19].replace(':', "%3A")))
            && !next.contains("pageToken"),
        "{next}"
    );
}

#[tokio::test]
async fn a_page_over_max_page_bytes_is_refused_and_nothing_is_stored() {
    let pages = fixture_pages("slack/audit");
    let s = setup(Vendor::Slack, pages).await;
    let base = s.api.base.lock().unwrap().clone();
    let mut small = config(Vendor::Slack, &base);
    // The recorded pages are a few KiB; the third is the largest.
    small.max_page_bytes = 2_000;
    let source = PollSource::new(small, "default", s.state.path(), s.bus.clone()).unwrap();
    let err = source.poll_once().await.unwrap_err().to_string();
    assert!(err.contains("max_page_bytes"), "{err}");
    let taken = s.consumer.records().len();
    assert!(taken < 21, "the big page was not stored: {taken}");
    // With the default bound it goes through, from where it stopped.
    let report = s.source().poll_once().await.unwrap();
    assert_eq!(taken + report.records, 21);
}

/// A fake Microsoft 365: Azure AD's token endpoint and the Management Activity API for tenant
/// `t-1`, with three content blobs over two listing pages, and no subscription until one is
/// started.
struct FakeM365 {
    base: String,
    subscribed: Mutex<bool>,
    seen: Mutex<Vec<Seen>>,
    blobs: Vec<(String, String, Vec<Value>)>,
}

async fn serve_m365(State(api): State<Arc<FakeM365>>, request: Request) -> Response {
    let Seen {
        uri,
        authorization,
        body,
    } = note(&api.seen, request, true).await;
    let (uri, path) = request_target(&uri);
    if path == "/t-1/oauth2/v2.0/token" {
        if !body.contains("client_secret=m365-secret") {
            // As Entra ID does, the answer quotes the secret it was sent.
            let sent = body
                .split('&')
                .find_map(|p| p.strip_prefix("client_secret="))
                .unwrap_or_default();
            let said = json!({"error": "invalid_client", "error_description": format!("AADSTS7000215: Invalid client secret provided. Received: '{sent}'")});
            return (StatusCode::UNAUTHORIZED, said.to_string()).into_response();
        }
        return axum::Json(
            json!({"access_token": "at-1", "expires_in": 3599, "token_type": "Bearer"}),
        )
        .into_response();
    }
    if authorization != "Bearer at-1" {
        return (StatusCode::UNAUTHORIZED, "{}").into_response();
    }
    let feed = "/api/v1.0/t-1/activity/feed";
    if path == format!("{feed}/subscriptions/start") {
        *api.subscribed.lock().unwrap() = true;
        return axum::Json(
            json!({"contentType": "Audit.AzureActiveDirectory", "status": "enabled"}),
        )
        .into_response();
    }
    if path == format!("{feed}/subscriptions/content") {
        if !*api.subscribed.lock().unwrap() {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"error":{"code":"AF20022","message":"No subscription found for the specified content type"}}"#,
            )
                .into_response();
        }
        let listed = |range: std::ops::Range<usize>| -> Vec<Value> {
            api.blobs[range]
                .iter()
                .map(|(id, created, _)| {
                    json!({"contentType": "Audit.AzureActiveDirectory", "contentId": id,
                           "contentUri": format!("{}{feed}/audit/{id}", api.base),
                           "contentCreated": created, "contentExpiration": "2099-01-01T00:00:00.000Z"})
                })
                .collect()
        };
        if uri.contains("nextpage=2") {
            return axum::Json(listed(2..3)).into_response();
        }
        let mut headers = HeaderMap::new();
        let next = format!(
            "{}{path}?contentType=Audit.AzureActiveDirectory&nextpage=2",
            api.base
        );
        headers.insert("NextPageUri", next.parse().unwrap());
        // Listed newest first on purpose: the poller stores them oldest first.
        let mut first = listed(0..2);
        first.reverse();
        return (headers, axum::Json(first)).into_response();
    }
    if let Some(id) = path.strip_prefix(&format!("{feed}/audit/")) {
        if id.starts_with("broken") {
            // Cut off, as a blob that never reads as JSON.
            return (StatusCode::OK, r#"[{"Id":"trunc"#).into_response();
        }
        if let Some((_, _, records)) = api.blobs.iter().find(|(b, _, _)| b == id) {
            return axum::Json(records.clone()).into_response();
        }
    }
    (StatusCode::NOT_FOUND, "{}").into_response()
}

/// A fake Microsoft 365 on loopback; its base URL.
async fn fake_m365(subscribed: bool, blobs: Vec<(String, String, Vec<Value>)>) -> Arc<FakeM365> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = Arc::new(FakeM365 {
        base: format!("http://{}", listener.local_addr().unwrap()),
        subscribed: Mutex::new(subscribed),
        seen: Mutex::new(Vec::new()),
        blobs,
    });
    let app = axum::Router::new()
        .fallback(serve_m365)
        .with_state(api.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    api
}

/// A `[[poll]]` table for the fake's tenant, with the client secret in `secret_env`.
fn m365_config(api: &FakeM365, secret_env: &str, secret: &str) -> PollConfig {
    std::env::set_var(secret_env, secret);
    let mut cfg = config(Vendor::M365, &api.base);
    cfg.org = Some("t-1".into());
    cfg.feed = Some("Audit.AzureActiveDirectory".into());
    cfg.client_id = Some("app-1".into());
    cfg.auth_url = Some(api.base.clone());
    cfg.token = format!("env:{secret_env}");
    cfg.initial_lookback_hours = 2;
    cfg
}

/// Three blobs made available 60, 50 and 40 minutes ago (listed out of order), four records.
fn three_blobs() -> Vec<(String, String, Vec<Value>)> {
    let now = chrono::Utc::now();
    let at = |minutes_ago: i64| {
        (now - chrono::Duration::minutes(minutes_ago))
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    };
    vec![
        (
            "b-2".into(),
            at(50),
            vec![m365_record("r3", "cy@acme.example", 3)],
        ),
        (
            "b-1".into(),
            at(60),
            vec![
                m365_record("r1", "al@acme.example", 1),
                m365_record("r2", "bo@acme.example", 2),
            ],
        ),
        (
            "b-3".into(),
            at(40),
            vec![m365_record("r4", "di@acme.example", 4)],
        ),
    ]
}

fn m365_record(id: &str, user: &str, minute: u32) -> Value {
    json!({"CreationTime": format!("2026-12-01T10:{minute:02}:00"), "Id": id, "Operation": "UserLoggedIn",
           "OrganizationId": "t-1", "RecordType": 15, "ResultStatus": "Success", "UserType": 0,
           "Workload": "AzureActiveDirectory", "ClientIP": "198.51.100.10", "UserId": user})
}

#[tokio::test]
async fn m365_blobs_are_listed_fetched_oldest_first_and_not_again() {
    let api = fake_m365(false, three_blobs()).await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let state = tempfile::tempdir().unwrap();
    let cfg = m365_config(&api, "PERIMETER_TEST_M365_SECRET", "m365-secret");
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();

    let report = source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (3, 4));
    let ids: Vec<String> = consumer
        .records()
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        ["r1", "r2", "r3", "r4"],
        "blobs in the order they were made available"
    );
    assert!(consumer
        .taken
        .lock()
        .unwrap()
        .iter()
        .all(|(src, _, _)| src == "m365"));
    let seen = api.seen.lock().unwrap().clone();
    assert!(
        seen[0].uri.starts_with("POST /t-1/oauth2/v2.0/token"),
        "{seen:?}"
    );
    assert!(
        seen[0].body.contains("grant_type=client_credentials")
            && seen[0].body.contains("client_id=app-1")
    );
    assert!(
        seen[0]
            .body
            .contains(&format!("scope={}", "http%3A%2F%2F127.0.0.1")),
        "{}",
        seen[0].body
    );
    assert!(seen[1]
        .uri
        .contains("/subscriptions/content?contentType=Audit.AzureActiveDirectory&startTime="));
    assert!(
        seen[2]
            .uri
            .starts_with("POST /api/v1.0/t-1/activity/feed/subscriptions/start"),
        "{seen:?}"
    );
    assert!(seen[1..].iter().all(|r| r.authorization == "Bearer at-1"));
    // The secret went to the token endpoint only, and in its body.
    assert!(seen[1..]
        .iter()
        .all(|r| !r.body.contains("m365-secret") && !r.uri.contains("m365-secret")));
    // The window (the last 2 hours) was read through: the next one starts ten minutes before
    // its end, after the last blob.
    let cp = source().checkpoint().unwrap();
    assert_eq!(cp.resume, None, "{cp:?}");
    let lag = chrono::Utc::now() - cp.since.unwrap();
    assert!(
        lag > chrono::Duration::minutes(9) && lag < chrono::Duration::minutes(12),
        "{cp:?}"
    );

    // The next poll lists the blobs again (this fake ignores times) and fetches none of them;
    // the token is reused, not asked for again.
    let before = api.seen.lock().unwrap().len();
    let src = source();
    let report = src.poll_once().await.unwrap();
    assert_eq!(report.records, 0);
    let report = src.poll_once().await.unwrap();
    assert_eq!(report.records, 0);
    let later: Vec<Seen> = api.seen.lock().unwrap()[before..].to_vec();
    assert!(
        later.iter().all(|r| !r.uri.contains("/audit/")),
        "{later:?}"
    );
    assert_eq!(
        later.iter().filter(|r| r.uri.contains("/token")).count(),
        1,
        "{later:?}"
    );
    assert_eq!(consumer.records().len(), 4);
}

#[tokio::test]
async fn checking_an_m365_poller_does_not_start_a_subscription() {
    // `perimeter poll-check` started the subscription on the tenant: a check changed it.
    let api = fake_m365(false, three_blobs()).await;
    let (bus, _rx) = bus::channel(4);
    let state = tempfile::tempdir().unwrap();
    let cfg = m365_config(&api, "PERIMETER_TEST_M365_SECRET_4", "m365-secret");
    let source = PollSource::new(cfg, "default", state.path(), bus).unwrap();
    let err = source.probe().await.unwrap_err();
    assert!(
        matches!(err, PollError::Http { status: 400, .. })
            && err.to_string().contains("`perimeter run` starts it"),
        "{err}"
    );
    assert!(!*api.subscribed.lock().unwrap());
    assert!(api
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|r| !r.uri.contains("subscriptions/start")));
}

#[tokio::test]
async fn a_wrong_m365_client_secret_is_a_refused_credential() {
    let api = fake_m365(true, Vec::new()).await;
    let (bus, _rx) = bus::channel(4);
    let state = tempfile::tempdir().unwrap();
    let cfg = m365_config(&api, "PERIMETER_TEST_M365_WRONG", "not-the-secret");
    let source = PollSource::new(cfg, "default", state.path(), bus).unwrap();
    let err = source.poll_once().await.unwrap_err();
    assert!(matches!(err, PollError::Unauthorized(..)), "{err}");
    // The secret went in the token request's form; the vendor's quote of it is cut out.
    assert!(
        err.to_string()
            .ends_with("Invalid client secret provided. Received: '[REDACTED]'\""),
        "{err}"
    );
    assert!(!format!("{err:?}").contains("not-the-secret"));
}

#[tokio::test]
async fn an_m365_blob_the_store_did_not_take_is_fetched_again_from_its_place() {
    let api = fake_m365(true, three_blobs()).await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    consumer.script.lock().unwrap().extend([true, false]);
    let state = tempfile::tempdir().unwrap();
    let cfg = m365_config(&api, "PERIMETER_TEST_M365_SECRET_2", "m365-secret");
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();
    let err = source().poll_once().await.unwrap_err();
    assert!(matches!(err, PollError::NotStored(_)), "{err}");
    let cp = source().checkpoint().unwrap();
    assert_eq!(
        cp.resume.as_deref(),
        Some("b-1"),
        "the first blob is stored: {cp:?}"
    );

    let report = source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (2, 2));
    let ids: Vec<String> = consumer
        .records()
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect();
    // The third blob was fetched and stored while the second was being refused (the next blob
    // is fetched while the ones before are stored); the retry reads the second and third
    // again, and the real store drops the repeat of r4 (this fake one keeps it).
    assert_eq!(ids, ["r1", "r2", "r4", "r3", "r4"], "none lost");
    let fetched: Vec<String> = api
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.uri.contains("/audit/"))
        .map(|r| r.uri.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(fetched, ["b-1", "b-2", "b-3", "b-2", "b-3"]);
}

#[tokio::test]
async fn an_m365_blob_that_is_not_json_is_a_dead_letter_and_the_blobs_after_it_are_read() {
    // It used to fail every poll, and every blob made available after it waited.
    let mut blobs = three_blobs();
    blobs[0].0 = "broken-2".into();
    let api = fake_m365(true, blobs).await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let state = tempfile::tempdir().unwrap();
    let cfg = m365_config(&api, "PERIMETER_TEST_M365_SECRET_3", "m365-secret");
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();
    // b-1, broken-2 (in b-2's place) and b-3, in that order.
    let report = source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (3, 3));
    let invalid = std::mem::take(&mut *consumer.invalid.lock().unwrap());
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert!(
        invalid[0].1.starts_with("content blob broken-2: ") && invalid[0].1.contains("not JSON"),
        "{invalid:?}"
    );
    let ids: Vec<String> = consumer
        .records()
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["r1", "r2", "r4"]);
    // Not fetched again.
    let before = api.seen.lock().unwrap().len();
    assert_eq!(source().poll_once().await.unwrap().records, 0);
    assert!(api.seen.lock().unwrap()[before..]
        .iter()
        .all(|r| !r.uri.contains("/audit/")));
    assert!(consumer.invalid.lock().unwrap().is_empty());
}

/// A fake S3 bucket (path style, `/trail-bucket`) holding gzipped CloudTrail files; listings
/// return `page` keys at a time. Requests without a SigV4 `Authorization` for the expected key
/// id, `x-amz-date` and `x-amz-content-sha256` are refused with 403, as S3 does.
struct FakeS3 {
    base: String,
    objects: Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
    page: usize,
    seen: Mutex<Vec<Seen>>,
}

async fn serve_s3(State(s3): State<Arc<FakeS3>>, request: Request) -> Response {
    let uri = request.uri().clone();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let authorization = header("authorization");
    s3.seen.lock().unwrap().push(Seen {
        uri: uri.to_string(),
        authorization: authorization.clone(),
        body: String::new(),
    });
    let signed = authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIAFAKEPOLLER0000001/")
        && authorization.contains("/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=")
        && header("x-amz-date").len() == 16
        && header("x-amz-content-sha256").len() == 64;
    if !signed {
        return (
            StatusCode::FORBIDDEN,
            "<Error><Code>SignatureDoesNotMatch</Code></Error>",
        )
            .into_response();
    }
    let path = uri.path().to_string();
    if path == "/trail-bucket/" || path == "/trail-bucket" {
        let query: std::collections::HashMap<String, String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let prefix = query.get("prefix").cloned().unwrap_or_default();
        let after = query.get("start-after").cloned().unwrap_or_default();
        let objects = s3.objects.lock().unwrap();
        if query.get("delimiter").map(String::as_str) == Some("/") {
            // The folders under `prefix`, `page` at a time; the continuation token is the last
            // folder of the page before.
            let token = query.get("continuation-token").cloned().unwrap_or_default();
            let folders: std::collections::BTreeSet<String> = objects
                .keys()
                .filter_map(|k| k.strip_prefix(prefix.as_str()))
                .filter_map(|rest| rest.split_once('/'))
                .map(|(folder, _)| format!("{prefix}{folder}/"))
                .filter(|f| *f > token)
                .collect();
            let page: Vec<&String> = folders.iter().take(s3.page).collect();
            let truncated = folders.len() > s3.page;
            let common: String = page
                .iter()
                .map(|f| format!("<CommonPrefixes><Prefix>{f}</Prefix></CommonPrefixes>"))
                .collect();
            let next = match (truncated, page.last()) {
                (true, Some(last)) => {
                    format!("<NextContinuationToken>{last}</NextContinuationToken>")
                }
                _ => String::new(),
            };
            return format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>trail-bucket</Name><Prefix>{prefix}</Prefix><Delimiter>/</Delimiter><IsTruncated>{truncated}</IsTruncated>{common}{next}</ListBucketResult>"
            )
            .into_response();
        }
        let keys: Vec<&String> = objects
            .keys()
            .filter(|k| k.starts_with(&prefix) && **k > after)
            .collect();
        let truncated = keys.len() > s3.page;
        let contents: String = keys
            .iter()
            .take(s3.page)
            .map(|k| format!("<Contents><Key>{k}</Key><Size>1</Size></Contents>"))
            .collect();
        return format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>trail-bucket</Name><Prefix>{prefix}</Prefix><IsTruncated>{truncated}</IsTruncated>{contents}</ListBucketResult>"
        )
        .into_response();
    }
    let key = path.trim_start_matches("/trail-bucket/");
    match s3.objects.lock().unwrap().get(key) {
        Some(bytes) => bytes.clone().into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchKey</Code></Error>",
        )
            .into_response(),
    }
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

const TRAIL: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/";

/// A CloudTrail file made `minutes_ago`, holding one record per name in `events`, gzipped, and
/// its key.
fn trail_file(minutes_ago: i64, unique: &str, events: &[&str]) -> (String, Vec<u8>) {
    region_trail_file("us-east-1", minutes_ago, unique, events)
}

/// [`trail_file`] in another region's folder of the same account.
fn region_trail_file(
    region: &str,
    minutes_ago: i64,
    unique: &str,
    events: &[&str],
) -> (String, Vec<u8>) {
    use std::io::Write;
    let t = chrono::Utc::now() - chrono::Duration::minutes(minutes_ago);
    let key = format!(
        "AWSLogs/111122223333/CloudTrail/{region}/{}/111122223333_CloudTrail_{region}_{}_{unique}.json.gz",
        t.format("%Y/%m/%d"),
        t.format("%Y%m%dT%H%MZ")
    );
    let records: Vec<Value> = events
        .iter()
        .map(|name| {
            json!({"eventVersion": "1.10", "eventTime": t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                   "eventSource": "iam.amazonaws.com", "eventName": name, "awsRegion": "us-east-1",
                   "sourceIPAddress": "198.51.100.7", "userIdentity": {"type": "IAMUser", "userName": "ops"},
                   "eventID": format!("{unique}-{name}")})
        })
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(
        serde_json::to_string(&json!({ "Records": records }))
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    (key, gz.finish().unwrap())
}

async fn fake_s3(files: Vec<(String, Vec<u8>)>) -> Arc<FakeS3> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s3 = Arc::new(FakeS3 {
        base: format!("http://{}/trail-bucket", listener.local_addr().unwrap()),
        objects: Mutex::new(files.into_iter().collect()),
        page: 2,
        seen: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .fallback(serve_s3)
        .with_state(s3.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    s3
}

fn cloudtrail_config(s3: &FakeS3, key_id: &str) -> PollConfig {
    std::env::set_var("PERIMETER_TEST_AWS_SECRET", "fake/secret+access+key");
    std::env::set_var(format!("PERIMETER_TEST_AWS_KEY_{key_id}"), key_id);
    let mut cfg = config(Vendor::AwsCloudtrail, &s3.base);
    cfg.name = format!("trail-{key_id}").to_lowercase();
    // Without its last `/`, as a user may write it.
    cfg.feed = Some(TRAIL.trim_end_matches('/').into());
    cfg.aws_region = Some("us-east-1".into());
    cfg.aws_access_key_id = Some(format!("env:PERIMETER_TEST_AWS_KEY_{key_id}"));
    cfg.token = "env:PERIMETER_TEST_AWS_SECRET".into();
    cfg.initial_lookback_hours = 24;
    cfg
}

#[tokio::test]
async fn cloudtrail_files_are_read_in_order_and_late_ones_are_not_missed() {
    let s3 = fake_s3(vec![
        trail_file(50, "a1", &["CreateUser", "CreateAccessKey"]),
        trail_file(45, "b1", &["AttachUserPolicy"]),
        trail_file(40, "c1", &["DeleteTrail"]),
    ])
    .await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let state = tempfile::tempdir().unwrap();
    let cfg = cloudtrail_config(&s3, "AKIAFAKEPOLLER0000001");
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();

    let report = source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (3, 4));
    let names = |c: &Consumer| -> Vec<String> {
        c.records()
            .iter()
            .map(|r| r["eventName"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&consumer),
        [
            "CreateUser",
            "CreateAccessKey",
            "AttachUserPolicy",
            "DeleteTrail"
        ]
    );
    assert!(consumer
        .taken
        .lock()
        .unwrap()
        .iter()
        .all(|(src, _, _)| src == "aws_cloudtrail"));
    // Listed two keys at a time, from the first day of the lookback.
    let seen = s3.seen.lock().unwrap().clone();
    let listings: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.uri.contains("list-type=2"))
        .collect();
    assert!(listings.len() >= 2, "{seen:?}");
    assert!(listings[0].uri.contains("start-after="), "{seen:?}");
    let day = (chrono::Utc::now() - chrono::Duration::hours(24)).format("%Y%%2F%m%%2F%d%%2F");
    assert!(
        listings[0]
            .uri
            .contains(&format!("CloudTrail%2Fus-east-1%2F{day}")),
        "the first listing starts at the lookback's day: {seen:?}"
    );

    // A file delivered late (older than the newest stored) and a new one: both are taken, the
    // stored ones are not fetched again.
    let late = trail_file(44, "b0-late", &["PutBucketPolicy"]);
    let new = trail_file(30, "d1", &["ConsoleLogin"]);
    s3.objects
        .lock()
        .unwrap()
        .extend([late.clone(), new.clone()]);
    let before = s3.seen.lock().unwrap().len();
    let report = source().poll_once().await.unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(
        names(&consumer)[4..],
        ["PutBucketPolicy".to_string(), "ConsoleLogin".to_string()]
    );
    let fetched: Vec<String> = s3.seen.lock().unwrap()[before..]
        .iter()
        .filter(|r| !r.uri.contains("list-type"))
        .map(|r| r.uri.clone())
        .collect();
    assert_eq!(fetched.len(), 2, "{fetched:?}");
    let cp = source().checkpoint().unwrap();
    assert_eq!(cp.resume.as_deref(), Some(new.0.as_str()));
    // Nothing new: nothing fetched.
    assert_eq!(source().poll_once().await.unwrap().records, 0);
}

/// Small CloudTrail files are put on the bus several at a time (the next fetched while the
/// ones before are stored), in key order, and the checkpoint moves past each once it is
/// stored: a store that answers nothing until it holds three files still gets them, and one
/// that refuses the second leaves the checkpoint after the first.
/// QA: with the account's folder as prefix (`AWSLogs/<account>/`, every region of a
/// multi-region trail), listings went on after the last key stored, so new files of regions
/// sorting before it (eu-west-1 behind us-east-1) were never read, and digests were dead
/// letters. Each region folder under the prefix now has its own place in the checkpoint, and
/// digests are not fetched.
#[tokio::test]
async fn an_account_prefix_reads_every_region_and_skips_digests() {
    let digest = (
        "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/01/01/111122223333_CloudTrail-Digest_us-east-1_x_us-east-1_20240101T000000Z.json.gz".to_string(),
        b"{}".to_vec(),
    );
    let s3 = fake_s3(vec![
        region_trail_file("ap-southeast-2", 50, "ap1", &["CreateUser"]),
        region_trail_file("eu-west-1", 45, "eu1", &["AttachUserPolicy"]),
        region_trail_file("us-east-1", 40, "us1", &["DeleteTrail"]),
        region_trail_file("us-west-2", 35, "usw1", &["StopLogging"]),
        digest,
    ])
    .await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let state = tempfile::tempdir().unwrap();
    let mut cfg = cloudtrail_config(&s3, "AKIAFAKEPOLLER0000001");
    // Without its last `/`, as a user may write it.
    cfg.feed = Some("AWSLogs/111122223333".into());
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();
    let names = |c: &Consumer| -> Vec<String> {
        let mut names: Vec<String> = c
            .records()
            .iter()
            .map(|r| r["eventName"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    let report = source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (4, 4));
    assert_eq!(
        names(&consumer),
        [
            "AttachUserPolicy",
            "CreateUser",
            "DeleteTrail",
            "StopLogging"
        ]
    );
    // New files in a region sorting before the newest key stored, and after it.
    s3.objects.lock().unwrap().extend([
        region_trail_file("eu-west-1", 20, "eu2", &["ConsoleLogin"]),
        region_trail_file("us-east-1", 20, "us2", &["PutBucketPolicy"]),
    ]);
    let report = source().poll_once().await.unwrap();
    assert_eq!(report.records, 2);
    assert!(names(&consumer).contains(&"ConsoleLogin".to_string()));
    assert!(names(&consumer).contains(&"PutBucketPolicy".to_string()));
    let cp = source().checkpoint().unwrap();
    assert_eq!(cp.folders.len(), 4, "{cp:?}");
    assert!(cp.folders["AWSLogs/111122223333/CloudTrail/eu-west-1/"]
        .resume
        .as_deref()
        .is_some_and(|k| k.ends_with("_eu2.json.gz")));
    // Nothing new: nothing fetched, and the digest never was.
    assert_eq!(source().poll_once().await.unwrap().records, 0);
    assert!(!s3
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.uri.contains("Digest") && !r.uri.contains("list-type")));
    assert!(consumer.invalid.lock().unwrap().is_empty());
    // From `AWSLogs/` (or an organization's folder) the same region folders are found.
    let root_state = tempfile::tempdir().unwrap();
    let mut root = cfg.clone();
    root.name = "trail-root".into();
    root.feed = Some("AWSLogs".into());
    let report = PollSource::new(root, "default", root_state.path(), bus.clone())
        .unwrap()
        .poll_once()
        .await
        .unwrap();
    assert_eq!(report.records, 6, "{report:?}");
}

/// QA on the per-region reading: a busy region read first at every poll spent the page budget
/// and the regions after it were never read; and an upgrade from the single position a build
/// before kept for the whole prefix started every region at the lookback, so a service stopped
/// longer than that lost files.
#[tokio::test]
async fn account_prefix_regions_take_turns_and_an_old_checkpoint_is_kept() {
    let busy: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| region_trail_file("ap-south-1", 50 - i, &format!("ap{i}"), &["GetObject"]))
        .collect();
    let mut files = busy.clone();
    files.push(region_trail_file("eu-west-1", 40, "eu1", &["ConsoleLogin"]));
    let s3 = fake_s3(files).await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let state = tempfile::tempdir().unwrap();
    let mut cfg = cloudtrail_config(&s3, "AKIAFAKEPOLLER0000001");
    cfg.feed = Some("AWSLogs/111122223333/".into());
    cfg.max_pages_per_poll = 2;
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();
    let report = source().poll_once().await.unwrap();
    assert_eq!(report.pages, 2);
    // The busy region spent the budget: the next poll reads eu-west-1 first.
    source().poll_once().await.unwrap();
    let names: Vec<String> = consumer
        .records()
        .iter()
        .map(|r| r["eventName"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"ConsoleLogin".to_string()), "{names:?}");
    // Every file is read in the end.
    for _ in 0..3 {
        source().poll_once().await.unwrap();
    }
    assert_eq!(consumer.records().len(), 5);

    // An old checkpoint: one position for the account, 30 hours back (the lookback is 24).
    let old = region_trail_file("us-east-1", 30 * 60, "old", &["CreateUser"]);
    let missed = region_trail_file("eu-west-1", 28 * 60, "missed", &["DeleteTrail"]);
    let s3 = fake_s3(vec![old.clone(), missed]).await;
    let upgraded = tempfile::tempdir().unwrap();
    let mut cfg = cloudtrail_config(&s3, "AKIAFAKEPOLLER0000001");
    cfg.name = "trail-upgraded".into();
    cfg.feed = Some("AWSLogs/111122223333/".into());
    // One file a poll: a folder read at a later poll than the first still starts from the old
    // position (QA: it started at the lookback).
    cfg.max_pages_per_poll = 1;
    std::fs::write(
        upgraded.path().join("trail-upgraded.json"),
        serde_json::to_vec(&json!({"resume": old.0})).unwrap(),
    )
    .unwrap();
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    for _ in 0..3 {
        PollSource::new(cfg.clone(), "default", upgraded.path(), bus.clone())
            .unwrap()
            .poll_once()
            .await
            .unwrap();
    }
    let names: Vec<String> = consumer
        .records()
        .iter()
        .map(|r| r["eventName"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"DeleteTrail".to_string()), "{names:?}");
}

#[tokio::test]
async fn cloudtrail_files_are_put_on_the_bus_before_the_ones_before_are_stored() {
    let files = vec![
        trail_file(50, "a1", &["CreateUser"]),
        trail_file(45, "b1", &["AttachUserPolicy"]),
        trail_file(40, "c1", &["DeleteTrail"]),
    ];
    let s3 = fake_s3(files.clone()).await;
    let (bus, mut rx) = bus::channel(4);
    let state = tempfile::tempdir().unwrap();
    let cfg = cloudtrail_config(&s3, "AKIAFAKEPOLLER0000001");
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();
    let store = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(rx.recv().await.unwrap());
        }
        let mut names = Vec::new();
        for (i, sub) in held.into_iter().enumerate() {
            for item in &sub.items {
                if let InputItem::Record { value, .. } = item {
                    names.push(perimeter_model::raw_to_serde(value)["eventName"].to_string());
                }
            }
            let answer = if i == 1 {
                Err("disk full".to_string())
            } else {
                Ok(SubmitAck::default())
            };
            let _ = sub.ack.send(answer);
        }
        names
    });
    let refused = tokio::time::timeout(Duration::from_secs(20), source().poll_once())
        .await
        .expect("the files were put on the bus before the first was stored");
    assert!(
        matches!(refused, Err(PollError::NotStored(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.await.unwrap(),
        ["\"CreateUser\"", "\"AttachUserPolicy\"", "\"DeleteTrail\""],
        "in key order"
    );
    let cp = source().checkpoint().unwrap();
    assert_eq!(
        cp.resume.as_deref(),
        Some(files[0].0.as_str()),
        "past the stored file only"
    );
}

#[tokio::test]
async fn a_cut_off_cloudtrail_file_is_a_dead_letter_and_the_files_after_it_are_read() {
    // It used to fail every poll ("not gzip"), and every later file waited behind it.
    let (broken_key, whole) = trail_file(45, "b1", &["AttachUserPolicy"]);
    let s3 = fake_s3(vec![
        trail_file(50, "a1", &["CreateUser"]),
        (broken_key.clone(), whole[..whole.len() / 2].to_vec()),
        trail_file(40, "c1", &["DeleteTrail"]),
    ])
    .await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let state = tempfile::tempdir().unwrap();
    let cfg = cloudtrail_config(&s3, "AKIAFAKEPOLLER0000001");
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();
    let report = source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (3, 2));
    let invalid = std::mem::take(&mut *consumer.invalid.lock().unwrap());
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert!(
        invalid[0].1.starts_with(&format!("{broken_key}: ")) && invalid[0].1.contains("gzip"),
        "{invalid:?}"
    );
    let names: Vec<String> = consumer
        .records()
        .iter()
        .map(|r| r["eventName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["CreateUser", "DeleteTrail"]);
    // Set aside for good: the next poll neither fetches it nor dead-letters it again.
    assert_eq!(source().poll_once().await.unwrap().records, 0);
    assert!(consumer.invalid.lock().unwrap().is_empty());
}

#[tokio::test]
async fn cloudtrail_with_a_key_s3_refuses_is_a_refused_credential() {
    let s3 = fake_s3(vec![trail_file(10, "a1", &["CreateUser"])]).await;
    let (bus, _rx) = bus::channel(4);
    let state = tempfile::tempdir().unwrap();
    let cfg = cloudtrail_config(&s3, "AKIAWRONGKEY00000000");
    let source = PollSource::new(cfg, "default", state.path(), bus).unwrap();
    let err = source.poll_once().await.unwrap_err();
    assert!(matches!(err, PollError::Unauthorized(403, _)), "{err}");
    assert!(!format!("{err:?}").contains("fake/secret"));
}

/// A fake Google: a token endpoint that checks the service account's signed assertion with the
/// key's public half, and the Reports API answering the recorded activities page to the token it
/// issued.
struct FakeGoogle {
    base: String,
    public_key: Vec<u8>,
    seen: Mutex<Vec<Seen>>,
    claims: Mutex<Vec<Value>>,
}

async fn serve_google(State(g): State<Arc<FakeGoogle>>, request: Request) -> Response {
    use base64::Engine;
    let Seen {
        uri,
        authorization,
        body,
    } = note(&g.seen, request, false).await;
    if uri == "/token" {
        let form: std::collections::HashMap<String, String> = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let jwt = form.get("assertion").cloned().unwrap_or_default();
        let parts: Vec<&str> = jwt.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let verified = parts.len() == 3
            && form.get("grant_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
            && ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                &g.public_key,
            )
            .verify(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &b64.decode(parts[2]).unwrap_or_default(),
            )
            .is_ok();
        if !verified {
            return (StatusCode::BAD_REQUEST, r#"{"error":"invalid_grant"}"#).into_response();
        }
        let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        g.claims.lock().unwrap().push(claims);
        return axum::Json(
            json!({"access_token": "ya29.fake", "expires_in": 3599, "token_type": "Bearer"}),
        )
        .into_response();
    }
    if authorization != "Bearer ya29.fake" {
        return (StatusCode::UNAUTHORIZED, "{}").into_response();
    }
    let mut page = fixture_pages("gsuite/activities")[2].clone();
    page.as_object_mut().unwrap().remove("nextPageToken");
    axum::Json(page).into_response()
}

#[tokio::test]
async fn a_google_service_account_gets_its_own_tokens_by_signed_assertion() {
    let pem = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/throwaway-service-account-key.pem"),
    )
    .unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    use ring::signature::KeyPair;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let g = Arc::new(FakeGoogle {
        base: format!("http://{}", listener.local_addr().unwrap()),
        public_key: pair.public_key().as_ref().to_vec(),
        seen: Mutex::new(Vec::new()),
        claims: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .fallback(serve_google)
        .with_state(g.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let state = tempfile::tempdir().unwrap();
    let key_file = state.path().join("sa.json");
    std::fs::write(
        &key_file,
        json!({"type": "service_account", "project_id": "acme-siem", "client_email": "perimeter@acme-siem.iam.gserviceaccount.com",
               "private_key": pem, "token_uri": format!("{}/token", g.base)})
        .to_string(),
    )
    .unwrap();
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let mut cfg = config(Vendor::GoogleWorkspace, &g.base);
    cfg.feed = Some("login".into());
    cfg.token = format!("file:{}", key_file.display());
    let source = |cfg: &PollConfig| {
        PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap()
    };

    // Without the admin to act as, it says so.
    let err = source(&cfg).poll_once().await.unwrap_err().to_string();
    assert!(err.contains("delegated_user"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");

    cfg.delegated_user = Some("admin@acme.example".into());
    let expected = fixture_pages("gsuite/activities")[2]["items"]
        .as_array()
        .unwrap()
        .len();
    let src = source(&cfg);
    assert_eq!(src.poll_once().await.unwrap().records, expected);
    assert_eq!(consumer.records().len(), expected);
    let claims = g.claims.lock().unwrap().clone();
    assert_eq!(claims.len(), 1);
    assert_eq!(
        claims[0]["iss"],
        "perimeter@acme-siem.iam.gserviceaccount.com"
    );
    assert_eq!(claims[0]["sub"], "admin@acme.example");
    assert_eq!(claims[0]["aud"], format!("{}/token", g.base));
    assert_eq!(
        claims[0]["scope"],
        "https://www.googleapis.com/auth/admin.reports.audit.readonly"
    );
    // The token is reused by the next poll; the private key was sent nowhere.
    src.poll_once().await.unwrap();
    assert_eq!(g.claims.lock().unwrap().len(), 1);
    let seen = g.seen.lock().unwrap().clone();
    // No line of the key's PEM text is in any request (checking for `MII`, the usual start of
    // a DER key in base64, failed now and then: the signed assertion is base64 too, and
    // holds those three letters by chance about once in a few hundred runs).
    let key_lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(seen.iter().all(
        |r| !r.body.contains("PRIVATE") && key_lines.iter().all(|line| !r.body.contains(line))
    ));
    assert!(seen
        .iter()
        .filter(|r| r.uri.starts_with("/admin/reports"))
        .all(|r| r.authorization == "Bearer ya29.fake"));
}

/// A fake Salesforce org: the token endpoint, SOQL queries on `SetupAuditTrail` (two pages,
/// filtered by the query's `CreatedDate >=` bound as the org would) and `EventLogFile` (filtered
/// by `LogDate >=`), and the log files' CSV.
struct FakeSalesforce {
    base: String,
    seen: Mutex<Vec<Seen>>,
    access_token: String,
    trail: Vec<Value>,
    /// (Id, LogDate, CSV) of the log files.
    files: Mutex<Vec<(String, String, String)>>,
}

/// The time after `<field> >= ` in a SOQL query.
fn soql_bound(query: &str, field: &str) -> chrono::DateTime<chrono::Utc> {
    let at = query.find(&format!("{field} >= ")).expect("a time bound") + field.len() + 4;
    let literal = query[at..].split(' ').next().unwrap();
    chrono::DateTime::parse_from_rfc3339(literal)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn at_least(v: &Value, field: &str, bound: chrono::DateTime<chrono::Utc>) -> bool {
    chrono::DateTime::parse_from_str(v[field].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.3f%z").unwrap()
        >= bound
}

async fn serve_salesforce(State(sf): State<Arc<FakeSalesforce>>, request: Request) -> Response {
    let Seen {
        uri,
        authorization,
        body,
    } = note(&sf.seen, request, true).await;
    let (uri, path) = request_target(&uri);
    if path == "/services/oauth2/token" {
        if !body.contains("grant_type=client_credentials")
            || !body.contains("client_secret=sf-secret")
        {
            return (StatusCode::BAD_REQUEST, r#"{"error":"invalid_client"}"#).into_response();
        }
        let mut answer = fixture_pages("sf/threat_detection")
            .into_iter()
            .find(|p| p.get("access_token").is_some())
            .expect("the recorded token answer");
        answer["instance_url"] = json!(sf.base);
        return axum::Json(answer).into_response();
    }
    if authorization != format!("Bearer {}", sf.access_token) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"[{"errorCode":"INVALID_SESSION_ID"}]"#,
        )
            .into_response();
    }
    let page = |records: Vec<Value>, next: Option<&str>| {
        let mut body =
            json!({"totalSize": records.len(), "done": next.is_none(), "records": records});
        if let Some(next) = next {
            body["nextRecordsUrl"] = json!(next);
        }
        axum::Json(body).into_response()
    };
    if path == "/services/data/v60.0/query" {
        let query = percent_decode(uri.split_once("q=").unwrap().1).replace('+', " ");
        if query.contains("FROM SetupAuditTrail") {
            let bound = soql_bound(&query, "CreatedDate");
            let rows: Vec<Value> = sf
                .trail
                .iter()
                .filter(|r| at_least(r, "CreatedDate", bound))
                .cloned()
                .collect();
            return if rows.len() > 2 {
                page(
                    rows[..2].to_vec(),
                    Some("/services/data/v60.0/query/01gTRAIL-2"),
                )
            } else {
                page(rows, None)
            };
        }
        if query.contains("FROM EventLogFile") {
            let bound = soql_bound(&query, "LogDate");
            let rows = sf
                .files
                .lock()
                .unwrap()
                .iter()
                .map(|(id, date, _)| json!({"attributes": {"type": "EventLogFile"}, "Id": id, "EventType": "Login", "LogDate": date,
                    "LogFile": format!("/services/data/v60.0/sobjects/EventLogFile/{id}/LogFile")}))
                .filter(|r| at_least(r, "LogDate", bound))
                .collect();
            return page(rows, None);
        }
    }
    if path == "/services/data/v60.0/query/01gTRAIL-2" {
        return page(sf.trail[2..].to_vec(), None);
    }
    if let Some(id) = path
        .strip_prefix("/services/data/v60.0/sobjects/EventLogFile/")
        .and_then(|p| p.strip_suffix("/LogFile"))
    {
        if let Some((_, _, csv)) = sf.files.lock().unwrap().iter().find(|(f, _, _)| f == id) {
            if id.ends_with("CUT") {
                // The connection breaks half-way through the file.
                // (The break comes a moment later, so the first half is on its way first.)
                let half = csv.as_bytes()[..csv.len() / 2].to_vec();
                let parts = futures_util::stream::unfold(Some(half), |half| async move {
                    match half {
                        Some(h) => Some((Ok(h), None)),
                        None => {
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            Some((Err(std::io::Error::other("connection reset")), None))
                        }
                    }
                });
                return (
                    [("content-type", "text/csv")],
                    axum::body::Body::from_stream(parts),
                )
                    .into_response();
            }
            return ([("content-type", "text/csv")], csv.clone()).into_response();
        }
    }
    (StatusCode::NOT_FOUND, "[]").into_response()
}

fn sf_time(hours_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::hours(hours_ago))
        .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string()
}

async fn fake_salesforce(files: Vec<(String, String, String)>) -> Arc<FakeSalesforce> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let access_token = fixture_pages("sf/threat_detection")
        .into_iter()
        .find_map(|p| p["access_token"].as_str().map(str::to_string))
        .unwrap();
    let trail_row = |id: &str, action: &str, hours_ago: i64| {
        json!({"attributes": {"type": "SetupAuditTrail"}, "Id": id, "Action": action, "Section": "Manage Users",
               "CreatedDate": sf_time(hours_ago), "CreatedById": "0055g00000AbCdEAAV",
               "CreatedBy": {"attributes": {"type": "User"}, "Username": "dana.kim@acme-corp.example"},
               "Display": format!("{action} by Dana"), "DelegateUser": null, "ResponsibleNamespacePrefix": null})
    };
    let sf = Arc::new(FakeSalesforce {
        base: format!("http://{}", listener.local_addr().unwrap()),
        seen: Mutex::new(Vec::new()),
        access_token,
        trail: vec![
            trail_row("0Ym1", "PermSetAssign", 5),
            trail_row("0Ym2", "PermSetEnableUserPerm", 4),
            trail_row("0Ym3", "changedSessionTimeout", 3),
        ],
        files: Mutex::new(files),
    });
    let app = axum::Router::new()
        .fallback(serve_salesforce)
        .with_state(sf.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    sf
}

/// A `[[poll]]` table for the fake org; the consumer secret in `secret_env` (one per test: tests
/// run in parallel and one of them changes it).
fn salesforce_config(sf: &FakeSalesforce, feed: &str, secret_env: &str) -> PollConfig {
    std::env::set_var(secret_env, "sf-secret");
    let mut cfg = config(Vendor::Salesforce, &sf.base);
    cfg.feed = Some(feed.into());
    cfg.client_id = Some("3MVG9-consumer-key".into());
    cfg.token = format!("env:{secret_env}");
    cfg.initial_lookback_hours = 24 * 7;
    cfg
}

#[tokio::test]
async fn salesforce_setup_audit_trail_pages_are_read_and_the_next_poll_starts_at_the_newest() {
    let sf = fake_salesforce(Vec::new()).await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let state = tempfile::tempdir().unwrap();
    let cfg = salesforce_config(&sf, "setup_audit_trail", "PERIMETER_TEST_SF_TRAIL_SECRET");
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();

    let report = source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (2, 3), "{report:?}");
    let ids: Vec<_> = consumer.records().iter().map(|r| r["Id"].clone()).collect();
    assert_eq!(ids, ["0Ym1", "0Ym2", "0Ym3"]);
    assert!(consumer
        .taken
        .lock()
        .unwrap()
        .iter()
        .all(|(s, t, _)| s == "salesforce" && t == "acme"));
    let cp = source().checkpoint().unwrap();
    assert_eq!(cp.resume, None);
    let newest = chrono::DateTime::parse_from_str(
        sf.trail[2]["CreatedDate"].as_str().unwrap(),
        "%Y-%m-%dT%H:%M:%S%.3f%z",
    )
    .unwrap();
    assert_eq!(cp.since, Some(newest.with_timezone(&chrono::Utc)));
    // `perimeter poll-check` asks for what the next poll would read: the boundary row.
    let probe = source().probe().await.unwrap();
    assert_eq!((probe.records, probe.more), (1, false), "{probe:?}");
    assert!(probe.url.contains("SetupAuditTrail"), "{}", probe.url);
    assert!(!probe.url.contains("sf-secret"));

    // After a restart the listing starts at the newest time stored: only that row comes again
    // (the store keeps it once), and the token is fetched once per process.
    source().poll_once().await.unwrap();
    let ids: Vec<_> = consumer.records().iter().map(|r| r["Id"].clone()).collect();
    assert_eq!(ids, ["0Ym1", "0Ym2", "0Ym3", "0Ym3"]);
    let seen = sf.seen.lock().unwrap().clone();
    let tokens = seen
        .iter()
        .filter(|s| s.uri.contains("/oauth2/token"))
        .count();
    // Three sources (two polls and the probe), each a process of its own: one token each.
    assert_eq!(tokens, 3, "one token per process");
    assert!(seen
        .iter()
        .filter(|s| !s.uri.contains("/oauth2/token"))
        .all(|s| s.authorization.starts_with("Bearer ") && !s.authorization.contains("sf-secret")));
    // A wrong consumer secret is a refused credential, not a parse error.
    std::env::set_var("PERIMETER_TEST_SF_TRAIL_SECRET", "wrong");
    let err = source().poll_once().await.unwrap_err();
    assert!(matches!(err, PollError::Unauthorized(400, _)), "{err}");
}

#[tokio::test]
async fn salesforce_event_log_files_are_read_as_csv_once_and_late_files_are_not_missed() {
    let recorded = std::fs::read_to_string(fixtures_root().join("sf/event_log/001.csv")).unwrap();
    let recorded_rows = recorded.lines().count() - 1;
    let header = recorded.lines().next().unwrap().to_string();
    let day = |days_ago: i64| {
        (chrono::Utc::now().date_naive() - chrono::Duration::days(days_ago))
            .format("%Y-%m-%dT00:00:00.000+0000")
            .to_string()
    };
    // The second file has a row cut short: a dead letter, the rest of the file is stored.
    let first_row = recorded.lines().nth(1).unwrap();
    let second = format!("{header}\n{first_row}\n\"Login\",\"cut\"\n");
    let sf = fake_salesforce(vec![
        ("0AT2".into(), day(1), second),
        ("0AT1".into(), day(2), recorded.clone()),
    ])
    .await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let state = tempfile::tempdir().unwrap();
    let cfg = salesforce_config(&sf, "event_log_files", "PERIMETER_TEST_SF_FILES_SECRET");
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();

    let report = source().poll_once().await.unwrap();
    assert_eq!(report.pages, 2, "{report:?}");
    let taken = consumer.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), recorded_rows + 1);
    assert!(taken
        .iter()
        .all(|(s, _, r)| s == "salesforce" && r["EVENT_TYPE"] == "Login"));
    let invalid = consumer.invalid.lock().unwrap().clone();
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert!(invalid[0].1.contains("the header has"), "{invalid:?}");
    let fetched = |sf: &FakeSalesforce| -> Vec<String> {
        sf.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.uri.ends_with("/LogFile"))
            .map(|s| s.uri.clone())
            .collect()
    };
    // Oldest first.
    let files = fetched(&sf);
    assert_eq!(files.len(), 2);
    assert!(
        files[0].contains("0AT1") && files[1].contains("0AT2"),
        "{files:?}"
    );

    // Listed again, the stored files are not fetched again; a file Salesforce made available
    // late, dated a day before the newest stored, is.
    sf.files
        .lock()
        .unwrap()
        .push(("0AT3".into(), day(2), format!("{header}\n{first_row}\n")));
    let report = source().poll_once().await.unwrap();
    assert_eq!(report.pages, 1, "{report:?}");
    let files = fetched(&sf);
    assert_eq!(files.len(), 3);
    assert!(files[2].contains("0AT3"), "{files:?}");
    source().poll_once().await.unwrap();
    assert_eq!(fetched(&sf).len(), 3, "nothing new, nothing fetched");
    let cp = source().checkpoint().unwrap();
    assert_eq!(cp.recent_keys.len(), 3, "{cp:?}");
    let probe = source().probe().await.unwrap();
    assert_eq!((probe.records, probe.more), (0, false), "{probe:?}");
    // A feed Salesforce does not have is a configuration error naming the choices.
    let mut bad = cfg.clone();
    bad.feed = Some("login_history".into());
    let err = PollSource::new(bad, "default", state.path(), bus.clone())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("setup_audit_trail or event_log_files"),
        "{err}"
    );
}

/// A big log file (larger than a page may be: it is read from disk, not memory) goes to the bus
/// in batches; the checkpoint moves only once all of them are stored, so a batch the store
/// refuses makes the whole file be read again.
#[tokio::test]
async fn a_salesforce_log_file_is_submitted_in_batches_and_checkpointed_whole() {
    let sf = fake_salesforce(vec![("0ATBIG".into(), yesterday(), uri_rows(20_001))]).await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    // The first batch is stored, the second refused.
    consumer.script.lock().unwrap().extend([true, false]);
    let state = tempfile::tempdir().unwrap();
    let cfg = salesforce_config(&sf, "event_log_files", "PERIMETER_TEST_SF_BIG_SECRET");
    let size = sf.files.lock().unwrap()[0].2.len() as u64;
    assert!(size > cfg.max_page_bytes, "{size} bytes");
    let source = || PollSource::new(cfg.clone(), "default", state.path(), bus.clone()).unwrap();

    let err = source().poll_once().await.unwrap_err();
    assert!(matches!(err, PollError::NotStored(_)), "{err}");
    assert_eq!(consumer.records().len(), 10_000, "the first batch");
    assert_eq!(source().checkpoint().unwrap(), Checkpoint::default());

    let report = source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (1, 20_001), "{report:?}");
    let ids: std::collections::HashSet<_> = consumer
        .records()
        .iter()
        .map(|r| r["REQUEST_ID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 20_001, "every row, the first batch twice");
    assert_eq!(source().checkpoint().unwrap().recent_keys.len(), 1);
    // Nothing of the download is left beside the checkpoint.
    let left = walk(state.path());
    assert_eq!(left.len(), 1, "{left:?}");
}

/// A log file whose download breaks off: a transport error, nothing submitted, the checkpoint
/// where it was, and no partial file left on disk (a day's file can be gigabytes).
#[tokio::test]
async fn a_broken_log_file_download_leaves_no_partial_file_and_no_checkpoint() {
    let sf = fake_salesforce(vec![("0ATCUT".into(), yesterday(), uri_rows(2_000))]).await;
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let state = tempfile::tempdir().unwrap();
    let cfg = salesforce_config(&sf, "event_log_files", "PERIMETER_TEST_SF_CUT_SECRET");
    let source = PollSource::new(cfg, "default", state.path(), bus).unwrap();

    let err = source.poll_once().await.unwrap_err();
    assert!(matches!(err, PollError::Transport { .. }), "{err}");
    assert!(consumer.records().is_empty());
    assert_eq!(source.checkpoint().unwrap(), Checkpoint::default());
    let left: Vec<_> = walk(state.path());
    assert!(
        left.iter()
            .all(|p| p.extension().is_none_or(|e| e != "download")),
        "{left:?}"
    );
}

/// An Event Monitoring log file of `n` URI rows.
fn uri_rows(n: usize) -> String {
    let mut csv = String::from("EVENT_TYPE,TIMESTAMP_DERIVED,REQUEST_ID,USER_NAME\n");
    for i in 0..n {
        csv.push_str(&format!(
            "URI,2026-11-24T10:00:00.000Z,req-{i},dana.kim@acme-corp.example\n"
        ));
    }
    csv
}

/// Yesterday's `LogDate`, as Salesforce writes it.
fn yesterday() -> String {
    (chrono::Utc::now().date_naive() - chrono::Duration::days(1))
        .format("%Y-%m-%dT00:00:00.000+0000")
        .to_string()
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// LaunchDarkly's recorded audit log pages, newest first: the listing follows `_links.next`, the
/// token goes alone in `Authorization`, and the next listing starts at the newest entry stored.
#[tokio::test]
async fn launchdarkly_listings_follow_their_next_links_then_start_at_the_newest_entry() {
    let pages: Vec<Value> = ["audit_log_list_2.json", "audit_log_list_3.json"]
        .iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(fixtures_root().join("launchdarkly").join(f)).unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    let expected = all_records(&pages, Some("items"));
    let newest = expected
        .iter()
        .filter_map(|e| e["date"].as_i64())
        .max()
        .unwrap();
    let s = setup(Vendor::Launchdarkly, pages).await;
    // `perimeter poll-check` first: the first page, nothing stored, no checkpoint.
    let probe = s.source().probe().await.unwrap();
    assert_eq!((probe.records, probe.more), (3, true), "{probe:?}");
    assert!(!probe.url.contains(TOKEN), "{}", probe.url);
    assert!(s.consumer.taken.lock().unwrap().is_empty());
    assert_eq!(s.source().checkpoint().unwrap(), Checkpoint::default());
    let probed = s.seen().len();
    let report = s.source().poll_once().await.unwrap();
    assert_eq!((report.pages, report.records), (2, expected.len()));
    assert_eq!(s.consumer.records(), oldest_first(expected.clone()));
    let seen = s.seen()[probed..].to_vec();
    assert!(
        seen[0].uri.starts_with("/api/v2/auditlog?after=") && seen[0].uri.contains("limit=20"),
        "{seen:?}"
    );
    assert!(seen[1].uri.contains("before=c1"), "{seen:?}");
    assert!(seen.iter().all(|r| r.authorization == TOKEN), "{seen:?}");
    let cp = s.source().checkpoint().unwrap();
    assert_eq!((cp.resume, cp.listing_since), (None, None));
    assert_eq!(cp.since.map(|t| t.timestamp_millis()), Some(newest));

    // The next listing: after the newest stored millisecond, less one (`after` is exclusive).
    s.source().poll_once().await.unwrap();
    let next = &s.seen()[probed + 2].uri;
    assert!(
        next.contains(&format!("after={}", newest - 1)) && !next.contains("before"),
        "{next}"
    );
}

/// A fake Reports API that answers what it holds at or after `startTime`, newest first, in one
/// page: records can be added with times older than those already served (published late).
struct LateGoogle {
    items: Mutex<Vec<Value>>,
    seen: Mutex<Vec<Seen>>,
}

async fn serve_late_google(State(g): State<Arc<LateGoogle>>, request: Request) -> Response {
    let Seen { uri, .. } = note(&g.seen, request, false).await;
    let start = uri
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("startTime="))
        .map(percent_decode)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .expect("startTime");
    let mut items: Vec<Value> = g
        .items
        .lock()
        .unwrap()
        .iter()
        .filter(|i| {
            chrono::DateTime::parse_from_rfc3339(i["id"]["time"].as_str().unwrap()).unwrap()
                >= start
        })
        .cloned()
        .collect();
    items.sort_by(|a, b| b["id"]["time"].as_str().cmp(&a["id"]["time"].as_str()));
    axum::Json(json!({"kind": "admin#reports#activities", "items": items})).into_response()
}

fn login_activity(time: &str, qualifier: &str) -> Value {
    json!({
        "kind": "admin#reports#activity",
        "id": {"time": time, "uniqueQualifier": qualifier, "applicationName": "login", "customerId": "C01"},
        "actor": {"email": "dana.kim@acme.test", "profileId": "1001"},
        "events": [{"type": "login", "name": "login_success"}]
    })
}

/// What a poll asked for: the `startTime` of its listing.
fn start_time(seen: &Seen) -> String {
    percent_decode(
        seen.uri
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("startTime="))
            .unwrap(),
    )
}

#[tokio::test]
async fn records_google_publishes_late_are_read_by_the_periodic_sweep() {
    let g = Arc::new(LateGoogle {
        items: Mutex::new(vec![
            login_activity("2026-11-01T10:00:00.000Z", "1"),
            login_activity("2026-11-01T10:05:00.000Z", "2"),
        ]),
        seen: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(serve_late_google)
        .with_state(g.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (bus, rx) = bus::channel(4);
    let consumer = Consumer::start(rx);
    let state = tempfile::tempdir().unwrap();
    let source = |late: Option<u64>| {
        let config = PollConfig {
            feed: Some("login".into()),
            late_records_minutes: late,
            ..config(Vendor::GoogleWorkspace, &base)
        };
        PollSource::new(config, "default", state.path(), bus.clone()).unwrap()
    };
    let qualifiers = || -> Vec<String> {
        let mut q: Vec<String> = consumer
            .records()
            .iter()
            .map(|r| r["id"]["uniqueQualifier"].as_str().unwrap().to_string())
            .collect();
        q.sort();
        q.dedup();
        q
    };

    // The first poll reads everything from `initial_lookback_hours` back, which counts as a
    // sweep.
    source(None).poll_once().await.unwrap();
    assert_eq!(qualifiers(), ["1", "2"]);
    let first_sweep = source(None).checkpoint().unwrap().last_sweep.unwrap();

    // A login at 10:02 is published after the poll stored 10:05.
    g.items
        .lock()
        .unwrap()
        .push(login_activity("2026-11-01T10:02:00.000Z", "late"));
    // Without sweeps the listing starts at the newest stored time and never sees it.
    source(Some(0)).poll_once().await.unwrap();
    assert_eq!(
        start_time(g.seen.lock().unwrap().last().unwrap()),
        "2026-11-01T10:05:00Z"
    );
    assert_eq!(qualifiers(), ["1", "2"]);

    // Nor with Google's default while the first listing is less than 15 minutes old.
    source(None).poll_once().await.unwrap();
    assert_eq!(
        start_time(g.seen.lock().unwrap().last().unwrap()),
        "2026-11-01T10:05:00Z"
    );
    assert_eq!(qualifiers(), ["1", "2"]);
    // 15 minutes later (the checkpoint's sweep time moved back as if they had passed), the
    // next listing is a sweep from 3 hours before the newest stored record.
    let cp_path = state.path().join("googleworkspace-test.json");
    let mut cp: Value = serde_json::from_slice(&std::fs::read(&cp_path).unwrap()).unwrap();
    cp["last_sweep"] = json!((first_sweep - chrono::Duration::minutes(15)).to_rfc3339());
    std::fs::write(&cp_path, cp.to_string()).unwrap();
    let report = source(None).poll_once().await.unwrap();
    assert_eq!(
        start_time(g.seen.lock().unwrap().last().unwrap()),
        "2026-11-01T07:05:00Z"
    );
    assert_eq!(qualifiers(), ["1", "2", "late"]);
    assert_eq!(report.records, 3, "{report:?}");
    let cp = source(None).checkpoint().unwrap();
    assert!(
        cp.last_sweep.unwrap() >= first_sweep && cp.listing_since.is_none(),
        "{cp:?}"
    );
    assert_eq!(cp.since.unwrap().to_rfc3339(), "2026-11-01T10:05:00+00:00");

    // The next sweep waits `late_sweep_interval_minutes`: until then listings start at the
    // newest stored time again.
    source(None).poll_once().await.unwrap();
    assert_eq!(
        start_time(g.seen.lock().unwrap().last().unwrap()),
        "2026-11-01T10:05:00Z"
    );
}

#[test]
fn sweep_and_page_settings_that_cannot_work_are_refused() {
    let (bus, _rx) = bus::channel(1);
    let state = tempfile::tempdir().unwrap();
    let refused = |config: PollConfig| {
        PollSource::new(config, "default", state.path(), bus.clone())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let base = "https://example.test";
    let err = refused(PollConfig {
        late_records_minutes: Some(60),
        ..config(Vendor::Okta, base)
    });
    assert!(
        err.contains("late_records_minutes and late_sweep_interval_minutes apply to"),
        "{err}"
    );
    let err = refused(PollConfig {
        late_sweep_interval_minutes: 5,
        ..config(Vendor::Okta, base)
    });
    assert!(err.contains("apply to google_workspace"), "{err}");
    let err = refused(PollConfig {
        late_sweep_interval_minutes: 0,
        ..config(Vendor::GoogleWorkspace, base)
    });
    assert!(err.contains("late_sweep_interval_minutes"), "{err}");
    // Zero was quietly read as 1 (a poll every second).
    for (zeroed, setting) in [
        (
            PollConfig {
                interval_seconds: 0,
                ..config(Vendor::Okta, base)
            },
            "interval_seconds",
        ),
        (
            PollConfig {
                request_timeout_seconds: 0,
                ..config(Vendor::Okta, base)
            },
            "request_timeout_seconds",
        ),
        (
            PollConfig {
                max_pages_per_poll: 0,
                ..config(Vendor::Okta, base)
            },
            "max_pages_per_poll",
        ),
    ] {
        let err = refused(zeroed);
        assert!(
            err.contains(&format!("{setting} must be at least 1")),
            "{err}"
        );
    }
    let err = refused(PollConfig {
        max_page_bytes: 0,
        ..config(Vendor::Slack, base)
    });
    assert!(err.contains("max_page_bytes 0"), "{err}");
    let err = refused(PollConfig {
        feed: Some("auditevent".into()),
        ..config(Vendor::Onepassword, base)
    });
    assert!(
        err.contains("signinattempts, itemusages or auditevents"),
        "{err}"
    );
    // Zero is "off", accepted everywhere.
    assert_eq!(
        refused(PollConfig {
            late_records_minutes: Some(0),
            ..config(Vendor::Okta, base)
        }),
        ""
    );
}
