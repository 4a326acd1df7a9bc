//! HTTP ingestion: `POST /ingest/{source}` with a JSON-lines body (or one JSON document such as
//! a vendor API page or a webhook payload; CSV rows under a header with `Content-Type: text/csv`).
//! The response is sent only after the batch is stored,
//! so a 200 means "durably acknowledged"; on any error the client must resend (replays are
//! idempotent).

use crate::bus::BusSender;
use crate::jsonl::{JsonInput, JsonlReaderConfig};
use crate::InputItem;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use std::sync::Arc;

/// Decides who may ingest: given the bearer token, the tenant it may write to, or why not.
pub type IngestAuth = Arc<dyn Fn(&str) -> Result<String, IngestRefusal> + Send + Sync>;

/// Why a token may not ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestRefusal {
    /// No token, or one nobody issued (or revoked, or expired): 401, saying which (`None`:
    /// no token was presented).
    Unauthorized(Option<String>),
    /// A valid token whose role may not ingest: 403.
    Forbidden,
}

/// The ingest answers still owed: batches handed to the pipeline whose clients wait for the
/// outcome. When the shutdown grace period is over the server stops handing batches over
/// ([`AnswersOwed::stop_taking`]: later ones are answered 503, their connections still open)
/// and cuts the connections left only once no answer is owed: a batch the pipeline took is
/// stored (it drains its queue before the process exits), so cutting its client off would
/// leave a stored batch unanswered. The wait is bounded by the batches taken before the grace
/// period ended.
#[derive(Debug, Clone, Default)]
pub struct AnswersOwed(Arc<std::sync::Mutex<OwedState>>);

#[derive(Debug, Default)]
struct OwedState {
    owed: usize,
    /// Set when the grace period is over ([`AnswersOwed::stop_taking`]): no batch is handed
    /// over any more.
    closed: bool,
}

/// One answer owed, until dropped (after the handler has its answer).
#[derive(Debug)]
pub struct OwedAnswer(AnswersOwed);

impl AnswersOwed {
    fn state(&self) -> std::sync::MutexGuard<'_, OwedState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Owe an answer for a batch about to be handed over; `None` once ingest stopped taking
    /// batches (the batch must not be handed over: its client may be cut off before it is
    /// answered).
    pub fn owe(&self) -> Option<OwedAnswer> {
        let mut state = self.state();
        if state.closed {
            return None;
        }
        state.owed += 1;
        Some(OwedAnswer(self.clone()))
    }

    /// How many answers are owed now.
    pub fn owed(&self) -> usize {
        self.state().owed
    }

    /// Refuse further batches (from now on [`Self::owe`] says no); whether no answer is owed
    /// any more, so the connections may be cut. Called again until it says so.
    pub fn stop_taking(&self) -> bool {
        let mut state = self.state();
        state.closed = true;
        state.owed == 0
    }
}

impl Drop for OwedAnswer {
    fn drop(&mut self) {
        self.0.state().owed -= 1;
    }
}

#[derive(Clone)]
struct IngestState {
    bus: BusSender,
    owed: AnswersOwed,
    auth: IngestAuth,
    reader: JsonlReaderConfig,
    /// Most bytes a body may hold, after decompression too (a small gzip body can inflate to
    /// gigabytes).
    max_body_bytes: usize,
    /// Most records a body may hold (see [`IngestLimits::max_records`]).
    max_records: usize,
    /// Why a source name is refused beyond its form, if it is ([`SourceNameCheck`]).
    source_check: Option<SourceNameCheck>,
}

/// Why a source name is refused (`Some`), beyond its form: the binary refuses a name its masker
/// would mask. A token sent as the name (`POST /ingest/ghp_...`) was masked in the log but
/// stored as the source of every record: in Parquet partition names, the index, `/sources`,
/// exports (QA).
pub type SourceNameCheck = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The default of [`IngestLimits::max_records`]. A batch of this many records holds a few
/// hundred MB while it is parsed, normalized and stored (measured: ~1 KB per dead letter,
/// ~3 KB per minimal event), where the 64 MiB body limit alone let `x\n` x 8M (a 15 KB gzip)
/// take 8 GB. Real audit records are 1-4 KB, so a full 64 MiB body of them holds 16k-64k:
/// no log shipper's batch comes near it.
pub const DEFAULT_MAX_RECORDS_PER_REQUEST: usize = 100_000;

/// What one `POST /ingest/{source}` may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Most bytes in a body, after decompression too.
    pub max_body_bytes: usize,
    /// Longest CSV row; a longer one is a dead letter. A JSON line may be as long as the body
    /// (a page sent compact is one line).
    pub max_line_bytes: usize,
    /// Most records in a body: non-blank lines, CSV rows, JSON documents, counting each element
    /// of a JSON array (a page of records) as one. The whole batch is held in memory until it is
    /// stored (records, then events and dead letters), and bytes alone do not bound that: tiny
    /// lines are a million to a few MB. A body over it is refused whole (413) and nothing is
    /// stored, so nothing is acknowledged and nothing is lost: the sender splits it.
    pub max_records: usize,
}

/// Routes: `POST /ingest/{source}` (source name, `auto` or `json`), within `limits`.
/// `owed` counts the answers owed to clients whose batches the pipeline took (see
/// [`AnswersOwed`]).
pub fn ingest_router(
    bus: BusSender,
    owed: AnswersOwed,
    auth: IngestAuth,
    limits: IngestLimits,
) -> Router {
    ingest_router_checking_sources(bus, owed, auth, limits, None)
}

/// [`ingest_router`], refusing (400 `bad_source`) the source names `check` refuses.
pub fn ingest_router_checking_sources(
    bus: BusSender,
    owed: AnswersOwed,
    auth: IngestAuth,
    limits: IngestLimits,
    check: Option<SourceNameCheck>,
) -> Router {
    let IngestLimits {
        max_body_bytes,
        max_line_bytes,
        max_records,
    } = limits;
    let state = IngestState {
        bus,
        owed,
        auth,
        reader: JsonlReaderConfig {
            // A pretty-printed page is parsed whole before its records are handed out: stop
            // it one past the limit, so a page of millions is not all made first.
            max_items: Some(max_records),
            // A page sent compact (`JSON.stringify(records)`, `json.dumps`) is one line: with
            // the file readers' line limit, a batch over 1 MiB became one dead letter answered
            // 200. The body is already held whole and bounded by `max_body_bytes`, which the
            // line limit is there to bound for files and streams.
            ..JsonlReaderConfig::with_max_line_bytes(max_line_bytes.max(max_body_bytes))
        },
        max_body_bytes,
        max_records,
        source_check: check,
    };
    Router::new()
        .route("/ingest/{source}", post(ingest).get(verify_event_hook))
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "ingest takes POST",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// The body as sent (`Content-Encoding` absent or `identity`) or gunzipped (`gzip`, or gzip
/// bytes sent without the header), at most
/// `max_bytes` either way; other encodings are a 415, a body that does not inflate a 400.
fn decoded_body(
    headers: &HeaderMap,
    body: axum::body::Bytes,
    max_bytes: usize,
) -> Result<axum::body::Bytes, (StatusCode, &'static str, String)> {
    use std::io::Read;
    let encoding = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    // A gzip body sent without its header (as files are: `curl --data-binary @x.jsonl.gz`) is
    // known by its magic bytes, as the spool and the CLI know it; no JSON or CSV starts so.
    let plain = matches!(encoding.as_deref(), None | Some("" | "identity"));
    match encoding.as_deref() {
        _ if plain && !body.starts_with(&[0x1f, 0x8b]) => Ok(body),
        None | Some("" | "identity" | "gzip" | "x-gzip") => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(max_bytes as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    (
                        StatusCode::BAD_REQUEST,
                        "bad_body",
                        format!("the body is not valid gzip: {e}"),
                    )
                })?;
            if out.len() > max_bytes {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "the body inflates to more than {max_bytes} bytes; send smaller batches"
                    ),
                ));
            }
            Ok(out.into())
        }
        Some(other) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding `{other}` is not supported (use gzip or none)"),
        )),
    }
}

/// Why a body's items were not taken.
#[derive(Debug)]
enum ItemsRefused {
    /// The body could not be read in its format.
    Unreadable(std::io::Error),
    /// It holds more than the limit of records.
    TooMany,
}

/// The items of `body`, or [`ItemsRefused::TooMany`] as soon as they count more than
/// `max_records` records: reading stops there, so a body of millions of tiny lines holds at
/// most `max_records` items in memory, not millions of dead letters.
fn read_items(
    body: &[u8],
    reader: &JsonlReaderConfig,
    format: crate::InputFormat,
    max_records: usize,
) -> Result<Vec<InputItem>, ItemsRefused> {
    let input =
        JsonInput::with_format(body, reader.clone(), format).map_err(ItemsRefused::Unreadable)?;
    let mut items = Vec::new();
    let mut records = 0usize;
    for item in input {
        let item = item.map_err(ItemsRefused::Unreadable)?;
        records = records.saturating_add(records_in(&item));
        if records > max_records {
            return Err(ItemsRefused::TooMany);
        }
        items.push(item);
    }
    Ok(items)
}

/// How many records `item` counts for against the limit: a JSON array (a vendor page on one
/// line) is split into its elements by the pipeline, each one a record or a dead letter; so is
/// an envelope page (`{"items": [...]}`, `{"Records": [...]}`), which only the normalizers
/// recognise: an object counts the elements of its top-level arrays (at least 1). An event's
/// own short lists count a few more, which matters only at the limit; without this a 3.5 MB
/// gzip of one envelope with 1.5M items took 2.7 GB.
fn records_in(item: &InputItem) -> usize {
    use sonic_rs::JsonContainerTrait;
    match item {
        InputItem::Record { value, .. } => match (value.as_array(), value.as_object()) {
            (Some(items), _) => items.len().max(1),
            (None, Some(members)) => members
                .iter()
                .filter_map(|(_, member)| member.as_array().map(|a| a.len()))
                .fold(0usize, usize::saturating_add)
                .max(1),
            (None, None) => 1,
        },
        InputItem::Invalid { .. } => 1,
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

/// The tenant of the request's ingest token, or the refusal to answer (401 saying why, 403).
fn authorized_tenant(state: &IngestState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    // Two of them: which one a proxy on the way reads may not be the one used here; neither is.
    let repeated = headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some();
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 7235 2.1), as on the API's routes.
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    let token = if repeated { "" } else { token };
    match (state.auth)(token) {
        Ok(tenant) => Ok(tenant),
        Err(IngestRefusal::Unauthorized(why)) => {
            // Why a token is refused (expired, revoked, unknown), as the API's routes say: a
            // shipper whose token expired is told so.
            let message = match why {
                Some(why) => format!("a valid ingest token is required: {why}"),
                None => "a valid ingest token is required".to_string(),
            };
            let mut refused = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
            // RFC 7235 3.1: a 401 names the scheme that would be accepted.
            refused.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"perimeter\""),
            );
            Err(Box::new(refused))
        }
        Err(IngestRefusal::Forbidden) => Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "ingest takes a responder or admin token",
        ))),
    }
}

/// `GET /ingest/{source}` answers an Okta event hook's one-time verification: Okta sends the
/// challenge in `x-okta-verification-challenge` (with the hook's `Authorization` header, an
/// ingest token) and enables the hook once it gets it back as `{"verification": ...}`. The hook's
/// deliveries then come as `POST`s, their events taken out of the hook's envelope.
#[utoipa::path(get, path = "/ingest/{source}", tag = "ingest",
    params(("source" = String, Path, description = "The source the hook delivers to (`okta`)"),
        ("x-okta-verification-challenge" = String, Header, description = "Okta's challenge")),
    responses(
        (status = 200, description = "The challenge sent back: `{\"verification\": ...}`", body = Object),
        (status = 401, description = "No valid token", body = Object),
        (status = 403, description = "The token's role may not ingest", body = Object),
        (status = 405, description = "No challenge: ingest takes POST", body = Object),
    ),
    security(("bearer" = [])))]
async fn verify_event_hook(State(state): State<IngestState>, headers: HeaderMap) -> Response {
    // A GET that is no verification is a wrong method, whoever sends it.
    let Some(challenge) = headers
        .get("x-okta-verification-challenge")
        .and_then(|v| v.to_str().ok())
    else {
        let mut refused = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "ingest takes POST (a GET answers an Okta event hook's verification challenge)",
        );
        // As every 405 (RFC 9110 15.5.6), and as this route's others say.
        refused.headers_mut().insert(
            axum::http::header::ALLOW,
            axum::http::HeaderValue::from_static("POST,GET,HEAD"),
        );
        return refused;
    };
    if let Err(refused) = authorized_tenant(&state, &headers) {
        return *refused;
    }
    Json(serde_json::json!({ "verification": challenge })).into_response()
}

/// The OpenAPI entry of `POST /ingest/{source}`, for the document the API serves beside it.
pub fn ingest_openapi() -> utoipa::openapi::OpenApi {
    <IngestDoc as utoipa::OpenApi>::openapi()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(ingest, verify_event_hook),
    tags((name = "ingest", description = "Sending events in"))
)]
struct IngestDoc;

/// Send events: a JSON-lines body (one raw vendor event per line), one JSON document (a vendor
/// API page or webhook payload), or CSV rows under a header (`Content-Type: text/csv`); gzip
/// with `Content-Encoding: gzip`. Answered once the batch is stored, so a 200 is a durable
/// acknowledgement; on any error resend (replays are stored once). Lines that are not usable
/// records are stored as dead letters and counted in the answer. At most 100,000 records per
/// request by default (`ingest_max_records` in the config; non-blank lines, CSV rows, JSON
/// documents, each element of a JSON array counting as one): a body with more is refused whole
/// with a 413 `too_many_records` (its `max_records` says the limit) and nothing of it is stored,
/// so split it and send the parts. Takes a responder or admin token; the events go to the
/// token's tenant.
#[utoipa::path(post, path = "/ingest/{source}", tag = "ingest",
    params(("source" = String, Path,
        description = "The normalizer: a vendor (`okta`, `github`, ...), `auto` to tell by each record's shape, or `json` for plain JSON objects")),
    request_body(content = String, description = "JSON lines, one JSON document, or CSV rows",
        content_type = "application/x-ndjson"),
    responses(
        (status = 200, description = "Stored", body = crate::bus::SubmitAck),
        (status = 400, description = "Bad source name, empty or undecodable body", body = Object),
        (status = 401, description = "No valid token", body = Object),
        (status = 403, description = "The token's role may not ingest", body = Object),
        (status = 413, description = "Body larger than the limit (after decompression too), `body_too_large`, or more records than the limit, `too_many_records` (nothing stored: split the batch)", body = Object),
        (status = 415, description = "Unsupported Content-Encoding", body = Object),
        (status = 503, description = "Not stored (store failure, shutting down): resend", body = Object),
    ),
    security(("bearer" = [])))]
async fn ingest(
    State(state): State<IngestState>,
    // A path axum cannot read (not UTF-8: `/ingest/%ff`) is a bad source name, answered as the
    // others are, after the token check: axum's own rejection was plain text, before it.
    source: Result<Path<String>, axum::extract::rejection::PathRejection>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    // Read only once the token passed: taken as bytes first, a body of up to the limit (64 MiB)
    // was held for every caller, a token or not.
    request: axum::extract::Request,
) -> Response {
    let headers = request.headers().clone();
    let tenant = match authorized_tenant(&state, &headers) {
        Ok(tenant) => tenant,
        Err(refused) => return *refused,
    };
    // The tenant is the token's and the source is in the path: a parameter (`?tenant=other`)
    // would be silently ignored, and the shipper sent there by mistake.
    if query.is_some_and(|q| !q.is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "ingest takes no query parameters: the tenant is the token's, the source is in the path",
        );
    }
    // A body over the limit is refused like any other request: with a JSON error.
    let body =
        match <axum::body::Bytes as axum::extract::FromRequest<_>>::from_request(request, &state)
            .await
        {
            Ok(body) => body,
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return error(
                    r.status(),
                    "body_too_large",
                    format!(
                        "the body is larger than {} bytes; send smaller batches",
                        state.max_body_bytes
                    ),
                )
            }
            Err(r) => return error(r.status(), "bad_body", r.body_text()),
        };
    let source = source.map_or_else(|_| String::new(), |Path(source)| source);
    if source.is_empty()
        || source.len() > 64
        || !source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_source",
            "source must be [A-Za-z0-9_]{1,64}",
        );
    }
    // Source names are lower case everywhere else (normalizers, mappings, logsource products,
    // partitions): `Okta` is `okta`. Kept as sent, such a name was neither normalized nor read
    // as plain JSON, and every record of it was dead-lettered.
    // Judged as sent: in lower case, an `AKIA...` key no longer looks like one.
    if let Some(why) = state.source_check.as_ref().and_then(|check| check(&source)) {
        return error(StatusCode::BAD_REQUEST, "bad_source", why);
    }
    let source = source.to_ascii_lowercase();
    // Log shippers (Fluent Bit, Vector, Logstash) compress their batches.
    let body = match decoded_body(&headers, body, state.max_body_bytes) {
        Ok(body) => body,
        Err((status, code, message)) => return error(status, code, message),
    };
    // JSON lines, or one pretty-printed document (a vendor page or webhook payload as sent), or
    // CSV rows under a header when the body says `Content-Type: text/csv`.
    let format = crate::InputFormat::from_content_type(
        headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let items = match read_items(&body[..], &state.reader, format, state.max_records) {
        Ok(items) => items,
        Err(ItemsRefused::Unreadable(e)) => {
            return error(StatusCode::BAD_REQUEST, "bad_body", e.to_string())
        }
        Err(ItemsRefused::TooMany) => {
            let max = state.max_records;
            let body = serde_json::json!({"error": {
                "code": "too_many_records",
                "message": format!(
                    "the body holds more than {max} records (lines, CSV rows, elements of a JSON array or of an envelope page's item list); nothing was stored: split the batch into requests of at most {max} records and send them"
                ),
                "max_records": max,
            }});
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response();
        }
    };
    if items.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "no records in the request body",
        );
    }
    // Held until the answer is made: the server does not cut connections at shutdown while
    // one is owed, and hyper writes the answer in the same poll that ends this handler.
    let Some(_owed) = state.owed.owe() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            "the service is shutting down; the batch was not stored: resend",
        );
    };
    match state.bus.submit(&source, &tenant, items).await {
        Ok(ack) => (StatusCode::OK, Json(ack)).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "not_stored", e.to_string()),
    }
}

#[cfg(test)]
mod router_tests {
    use super::*;
    use tower::ServiceExt;

    fn limits(max_records: usize) -> IngestLimits {
        IngestLimits {
            max_body_bytes: 1000,
            max_line_bytes: 1000,
            max_records,
        }
    }

    /// POST `body` to `uri` with a token every request passes; the status and the JSON error.
    async fn post(uri: &str, body: impl Into<axum::body::Body>) -> (StatusCode, serde_json::Value) {
        let (bus, _rx) = crate::bus::channel(1);
        let router = ingest_router(bus, AnswersOwed::default(), any_token(), limits(1000));
        let request = axum::http::Request::post(uri).header("authorization", "Bearer t");
        answer(router, request.body(body.into()).unwrap()).await
    }

    /// Every token passes, for tenant `acme`.
    fn any_token() -> IngestAuth {
        Arc::new(|_: &str| Ok("acme".to_string()))
    }

    /// What `router` answers `request`: the status and the JSON body.
    async fn answer(
        router: axum::Router,
        request: axum::http::Request<axum::body::Body>,
    ) -> (StatusCode, serde_json::Value) {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// A request without a valid token is refused before its body is read: the body (up to the
    /// 64 MiB limit) was read and held first, for any caller. Here the body never comes, and
    /// the 401 does at once.
    #[tokio::test]
    async fn a_request_without_a_valid_token_is_refused_before_its_body_is_read() {
        let (bus, _rx) = crate::bus::channel(1);
        let auth: IngestAuth = Arc::new(|_: &str| Err(IngestRefusal::Unauthorized(None)));
        let router = ingest_router(bus, AnswersOwed::default(), auth, limits(1000));
        let never = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
        let request = axum::http::Request::post("/ingest/okta")
            .header("content-length", "900")
            .body(axum::body::Body::from_stream(never))
            .unwrap();
        let answered =
            tokio::time::timeout(std::time::Duration::from_secs(5), answer(router, request))
                .await
                .expect("answered without waiting for the body");
        assert_eq!(answered.0, StatusCode::UNAUTHORIZED);
    }

    /// An Okta event hook is enabled by answering its verification challenge to a GET with
    /// the hook's token: the challenge is sent back. A GET without one is no ingest (405), and
    /// one without a valid token gets the 401 any ingest request gets.
    #[tokio::test]
    async fn an_okta_event_hook_verification_is_answered() {
        let get = |token: Option<&str>, challenge: Option<&str>| {
            let (bus, _rx) = crate::bus::channel(1);
            let auth: IngestAuth = Arc::new(|token: &str| match token {
                "good" => Ok("acme".to_string()),
                _ => Err(IngestRefusal::Unauthorized(None)),
            });
            let router = ingest_router(bus, AnswersOwed::default(), auth, limits(1000));
            let mut request = axum::http::Request::get("/ingest/okta");
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if let Some(challenge) = challenge {
                request = request.header("x-okta-verification-challenge", challenge);
            }
            answer(router, request.body(axum::body::Body::empty()).unwrap())
        };
        let (status, body) = get(Some("good"), Some("c2b1e5")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!({"verification": "c2b1e5"}));
        let (status, body) = get(Some("good"), None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
        let (status, _) = get(Some("bad"), Some("c2b1e5")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = get(None, Some("c2b1e5")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // The 405 says what is allowed, as every 405 does.
        let (bus, _rx) = crate::bus::channel(1);
        let router = ingest_router(bus, AnswersOwed::default(), any_token(), limits(1000));
        let refused = router
            .oneshot(
                axum::http::Request::get("/ingest/okta")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers()["allow"], "POST,GET,HEAD");
    }

    /// At shutdown the connections are cut only once no answer is owed: a batch the pipeline
    /// took keeps them open until it is answered, and none is handed over after the cut.
    #[tokio::test]
    async fn a_batch_the_pipeline_took_holds_the_cutoff_until_answered() {
        let (bus, mut rx) = crate::bus::channel(1);
        let owed = AnswersOwed::default();
        let router = ingest_router(bus, owed.clone(), any_token(), limits(1000));
        let request = || {
            axum::http::Request::post("/ingest/okta")
                .header("authorization", "Bearer t")
                .body(axum::body::Body::from("{\"a\": 1}\n"))
                .unwrap()
        };
        let in_flight = tokio::spawn(router.clone().oneshot(request()));
        let taken = rx.recv().await.expect("the batch reaches the pipeline");
        assert_eq!(owed.owed(), 1);
        assert!(!owed.stop_taking(), "cut while an answer is owed");
        // Past the grace period a new batch is answered 503, not handed over, while the one
        // taken before is still owed its answer.
        let refused = router.clone().oneshot(request()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(owed.owed(), 1);
        taken
            .ack
            .send(Ok(crate::bus::SubmitAck {
                events: 1,
                ..Default::default()
            }))
            .unwrap();
        let answered = in_flight.await.unwrap().unwrap();
        assert_eq!(answered.status(), StatusCode::OK);
        assert_eq!(owed.owed(), 0);
        assert!(owed.stop_taking());
        // After the cut a batch is refused, not handed over (its client would get no answer).
        let refused = router.oneshot(request()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            rx.try_recv().is_err(),
            "a batch was handed over after the cut"
        );
    }

    /// POST `body` to a router taking at most `max_records` records whose pipeline stores
    /// every batch: the status, the JSON answer, and how many items reached the pipeline.
    async fn post_within(
        max_records: usize,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, serde_json::Value, usize) {
        let (bus, mut rx) = crate::bus::channel(1);
        let handed_over = tokio::spawn(async move {
            let mut items = 0;
            while let Some(batch) = rx.recv().await {
                items += batch.items.len();
                let _ = batch.ack.send(Ok(crate::bus::SubmitAck::default()));
            }
            items
        });
        let limits = IngestLimits {
            max_body_bytes: 1 << 20,
            ..limits(max_records)
        };
        let router = ingest_router(bus, AnswersOwed::default(), any_token(), limits);
        let request = axum::http::Request::post("/ingest/okta")
            .header("authorization", "Bearer t")
            .header("content-type", content_type)
            .body(axum::body::Body::from(body))
            .unwrap();
        let (status, answer) = answer(router, request).await;
        (status, answer, handed_over.await.unwrap())
    }

    /// Bytes did not bound a request's memory: millions of tiny lines (a 15 KB gzip) became
    /// millions of dead letters held until stored. Past the record limit the body is refused
    /// whole, in every shape a body takes, and nothing reaches the pipeline.
    #[tokio::test]
    async fn a_body_over_the_record_limit_is_refused_whole_with_a_json_413() {
        let refused = |(status, answer, handed_over): (StatusCode, serde_json::Value, usize)| {
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
            assert_eq!(answer["error"]["code"], "too_many_records", "{answer}");
            assert_eq!(answer["error"]["max_records"], 100, "{answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("100 records") && message.contains("split"),
                "{message}"
            );
            assert_eq!(handed_over, 0, "nothing of a refused body is stored");
        };
        let lines = |n: usize, line: &str| line.repeat(n).into_bytes();
        let json = "application/x-ndjson";
        // Garbage lines and valid ones alike, at the limit and one past it.
        refused(post_within(100, json, lines(101, "x\n")).await);
        refused(post_within(100, json, lines(101, "{\"a\":1}\n")).await);
        let (status, answer, handed_over) = post_within(100, json, lines(100, "x\n")).await;
        assert_eq!((status, handed_over), (StatusCode::OK, 100), "{answer}");
        // Blank lines are no records.
        let mut blanks = lines(100, "x\n");
        blanks.extend(lines(50, "\n"));
        assert_eq!(post_within(100, json, blanks).await.0, StatusCode::OK);
        // A one-line page: the pipeline makes each element a record (or a dead letter).
        let page = |n: usize| format!("[{}1]\n", "1,".repeat(n - 1)).into_bytes();
        refused(post_within(100, json, page(101)).await);
        assert_eq!(post_within(100, json, page(100)).await.0, StatusCode::OK);
        // A pretty-printed page is parsed whole: it too stops at the limit.
        let pretty = |n: usize| format!("[\n{}  1\n]\n", "  1,\n".repeat(n - 1)).into_bytes();
        refused(post_within(100, json, pretty(101)).await);
        let (status, _, handed_over) = post_within(100, json, pretty(100)).await;
        assert_eq!((status, handed_over), (StatusCode::OK, 100));
        // An envelope page, on one line or pretty-printed: the normalizers make each of its
        // items a record (it counted as one, and 1.5M items took 2.7 GB).
        let envelope =
            |n: usize| format!("{{\"items\": [{}1]}}\n", "1,".repeat(n - 1)).into_bytes();
        refused(post_within(100, json, envelope(101)).await);
        assert_eq!(
            post_within(100, json, envelope(100)).await.0,
            StatusCode::OK
        );
        let pretty_envelope = |n: usize| {
            format!(
                "{{\n  \"Records\": [\n{}    1\n  ]\n}}\n",
                "    1,\n".repeat(n - 1)
            )
            .into_bytes()
        };
        refused(post_within(100, json, pretty_envelope(101)).await);
        assert_eq!(
            post_within(100, json, pretty_envelope(100)).await.0,
            StatusCode::OK
        );
        // An event's own short lists count too, no more than their elements.
        let events = |n: usize| b"{\"a\": [1, 2], \"b\": {\"c\": [1, 2, 3]}}\n".repeat(n);
        refused(post_within(100, json, events(51)).await);
        assert_eq!(post_within(100, json, events(50)).await.0, StatusCode::OK);
        // CSV rows.
        let csv = |n: usize| {
            let mut rows = b"a,b\n".to_vec();
            rows.extend(lines(n, "1,2\n"));
            rows
        };
        refused(post_within(100, "text/csv", csv(101)).await);
        assert_eq!(
            post_within(100, "text/csv", csv(100)).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_json_413() {
        let (status, error) = post("/ingest/okta", vec![b'x'; 5000]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error["error"]["code"], "body_too_large", "{error}");
    }

    /// The scheme in any case reaches the token check with the token alone; a refused token's
    /// 401 names the scheme (RFC 7235).
    #[tokio::test]
    async fn the_bearer_scheme_is_case_insensitive_and_a_401_challenges() {
        let (bus, _rx) = crate::bus::channel(1);
        let auth: IngestAuth = Arc::new(|token: &str| match token {
            "t" => Ok("acme".to_string()),
            "" => Err(IngestRefusal::Unauthorized(None)),
            _ => Err(IngestRefusal::Unauthorized(Some("unknown token".into()))),
        });
        let router = ingest_router(bus, AnswersOwed::default(), auth, limits(1000));
        let send = |authorization: &str| {
            let request = axum::http::Request::post("/ingest/okta?x=1")
                .header("authorization", authorization)
                .body(axum::body::Body::from("{}"))
                .unwrap();
            router.clone().oneshot(request)
        };
        // Past the token check, the stray parameter is what is refused.
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let response = send(&format!("{scheme} t")).await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{scheme}");
        }
        let refused = send("Bearer nope").await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        // A source name that is not UTF-8 waits for the token check too.
        let request = axum::http::Request::post("/ingest/%ff")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        let (status, error) = answer(router.clone(), request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // No token: what is wanted; a refused one: why (a shipper whose token expired is told).
        assert_eq!(
            error["error"]["message"],
            "a valid ingest token is required"
        );
        assert_eq!(
            refused.headers()["www-authenticate"],
            "Bearer realm=\"perimeter\""
        );
        let request = axum::http::Request::post("/ingest/okta")
            .header("authorization", "Bearer nope")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        let (_, error) = answer(router.clone(), request).await;
        assert_eq!(
            error["error"]["message"],
            "a valid ingest token is required: unknown token"
        );
    }

    #[tokio::test]
    async fn a_source_name_that_is_not_utf8_is_a_json_bad_source() {
        let (status, error) = post("/ingest/%ff", "{}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["error"]["code"], "bad_source", "{error}");
    }

    #[tokio::test]
    async fn a_query_parameter_is_refused_not_ignored() {
        let (status, error) = post("/ingest/okta?tenant=globex", "{}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["error"]["code"], "invalid_parameter", "{error}");
    }
}

#[cfg(test)]
mod tests {
    use super::decoded_body;
    use axum::http::{header::CONTENT_ENCODING, HeaderMap, HeaderValue, StatusCode};
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn decode(encoding: Option<&str>, body: Vec<u8>, max: usize) -> Result<Vec<u8>, StatusCode> {
        let mut headers = HeaderMap::new();
        if let Some(e) = encoding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
        }
        decoded_body(&headers, body.into(), max)
            .map(|b| b.to_vec())
            .map_err(|(status, _, _)| status)
    }

    #[test]
    fn bodies_are_taken_plain_or_gunzipped_within_the_limit() {
        let lines = b"{\"a\":1}\n{\"a\":2}\n".repeat(10);
        assert_eq!(decode(None, lines.clone(), 1000).unwrap(), lines);
        assert_eq!(
            decode(Some("identity"), lines.clone(), 1000).unwrap(),
            lines
        );
        assert_eq!(decode(Some("gzip"), gzip(&lines), 1000).unwrap(), lines);
        assert_eq!(decode(Some("GZIP"), gzip(&lines), 1000).unwrap(), lines);
        // Gzip without the header (it was read as text: dead letters full of binary).
        assert_eq!(decode(None, gzip(&lines), 1000).unwrap(), lines);
        // Two gzip members one after the other (what concatenated files are) are one body.
        let mut two = gzip(&lines);
        two.extend(gzip(&lines));
        assert_eq!(
            decode(Some("x-gzip"), two, 1000).unwrap().len(),
            2 * lines.len()
        );
        // Inflating past the limit stops there: a small bomb is a 413, not gigabytes of memory.
        let bomb = gzip(&vec![b'a'; 1 << 20]);
        assert!(bomb.len() < 10_000);
        assert_eq!(
            decode(Some("gzip"), bomb, 4096),
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(
            decode(Some("gzip"), lines.clone(), 1000),
            Err(StatusCode::BAD_REQUEST),
            "plain text labelled gzip"
        );
        assert_eq!(
            decode(Some("br"), lines, 1000),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }
}
