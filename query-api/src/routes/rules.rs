//! `/rules`: the loaded detection rules, switching a rule off or on for the caller's tenant, and
//! trying a rule before deploying it.

use axum::extract::State;
use axum::Json;
use perimeter_store::{EventQuery, EventSort};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{blocking, bounded, limit_within, time_range, MAX_LIMIT};
use crate::auth::{AdminRole, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, NoParams};
use crate::state::AppState;

/// Most events one rule test runs over (inline or from the store).
pub const MAX_TEST_EVENTS: usize = 10_000;
const MAX_RULE_BYTES: usize = 256 * 1024;
const MAX_RULE_ID_BYTES: usize = 512;
const MAX_REASON_BYTES: usize = 4 * 1024;

/// The loaded rules. Each has `enabled` (for the caller's tenant) and, when it is off,
/// `switched_off` (`by`, `at`, `reason`, `until`); `switched_off_for` maps the entities it is
/// off for to the same.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<serde_json::Value>,
}

/// Switch a rule off or back on for your tenant, for every entity or for one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSwitchRequest {
    /// `false`: the rule's alerts are dropped for your tenant (counted in
    /// `perimeter_alerts_switched_off_total`) until it is switched on again or `until`. The
    /// rule keeps running, events are still stored and searchable, and other tenants are not
    /// affected.
    pub enabled: bool,
    /// Only for this entity (user, IP, key... as the rule's alerts show it, masked values
    /// included). Without it, the switch is for every entity; switching on for every entity
    /// leaves the per-entity switches.
    pub entity: Option<String>,
    /// Switching off lapses at this time: RFC 3339, a date, or relative (`now+30d`).
    pub until: Option<String>,
    /// Why; required to switch a rule off. Kept with who and when, and in the audit log.
    pub reason: Option<String>,
}

/// A rule test: the Sigma rule, and either `events` or a time range of stored events.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleTestRequest {
    /// The Sigma rule, as YAML text.
    pub rule: String,
    /// Events to test against: event documents as `GET /events/{id}` returns them, or raw
    /// vendor records.
    #[schema(value_type = Option<Vec<Object>>)]
    pub events: Option<Vec<serde_json::Value>>,
    /// The source the raw records in `events` come from, when their shape does not tell: a
    /// source name (`okta`, `github`, ...) or `json` for plain JSON objects, as the CLI's
    /// `--source` takes. Default: told from each record's shape. Stored event documents keep
    /// their own source.
    pub source: Option<String>,
    /// Use stored events at or after this time: RFC 3339, a date (`2024-05-01`, UTC) or relative (`now-24h`).
    pub from: Option<String>,
    /// Use stored events before this time (exclusive): RFC 3339, a date or relative (`now-1h`).
    pub to: Option<String>,
    /// Narrow the stored events with a search query (tantivy syntax); default all.
    pub query: Option<String>,
    /// At most this many stored events (default and max 10000).
    pub limit: Option<usize>,
}

/// What the rule engine said, and over how many events.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleTestResponse {
    pub num_events_tested: usize,
    /// The rule engine's report (matches, ...).
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
}

/// The rules the detector runs.
#[utoipa::path(get, path = "/rules", tag = "rules",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Loaded rules", body = RuleList),
        (status = 400, description = "A query parameter (none is taken)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn list_rules(
    State(state): State<AppState>,
    auth: Auth,
    no_params: Result<ApiQuery<NoParams>, ApiError>,
) -> Result<Json<RuleList>, ApiError> {
    state.audit_result(&auth.0, "rules.list", None, json!({}), no_params)?;
    let rules = state.rules.clone();
    let mut rules = blocking(move || rules.list()).await?;
    let switches = state
        .rule_switches
        .switches()
        .for_tenant(auth.tenant(), chrono::Utc::now());
    for rule in &mut rules {
        let id = rule
            .get("id")
            .and_then(|id| id.as_str())
            .unwrap_or_default();
        let switch = switches.get(id).cloned().unwrap_or_default();
        with_switch_state(rule, switch);
    }
    Ok(Json(RuleList { rules }))
}

/// `rule` with `enabled` and, when it is off, `switched_off`; `switched_off_for` when it is off
/// for some entities.
fn with_switch_state(rule: &mut serde_json::Value, switch: perimeter_model::RuleSwitch) {
    if let Some(fields) = rule.as_object_mut() {
        fields.insert("enabled".into(), switch.off.is_none().into());
        if let Some(off) = switch.off {
            fields.insert("switched_off".into(), json!(off));
        }
        if !switch.off_for.is_empty() {
            fields.insert("switched_off_for".into(), json!(switch.off_for));
        }
    }
}

/// Switch a rule off or back on for the caller's tenant (rules, correlations and behavioural
/// detectors alike), for every entity or for one, for good or until a time. Takes effect from
/// the next alert, persists across restarts, and is recorded with who, when and why.
#[utoipa::path(patch, path = "/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "Rule id, as `GET /rules` lists it")),
    request_body = RuleSwitchRequest,
    security(("bearer" = [])),
    responses(
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 200, description = "The rule with its switch state", body = Object),
        (status = 400, description = "Malformed body, no reason, a past `until`, or a filter rule", body = ErrorBody),
        (status = 403, description = "Needs role admin", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 413, description = "Body over the request size limit", body = ErrorBody),
        (status = 415, description = "Body not sent as `Content-Type: application/json`", body = ErrorBody),
    ))]
pub async fn switch_rule(
    State(state): State<AppState>,
    auth: Auth<AdminRole>,
    ApiPath(id): ApiPath<String>,
    no_params: Result<ApiQuery<NoParams>, ApiError>,
    request: Result<ApiJson<RuleSwitchRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // A body too malformed to say which way is recorded as `rules.switch`.
    let mut action = "rules.switch";
    let mut details = json!({});
    let result = async {
        no_params?;
        let ApiJson(request) = request?;
        action = if request.enabled {
            "rules.switch_on"
        } else {
            "rules.switch_off"
        };
        details =
            json!({ "entity": request.entity, "until": request.until, "reason": request.reason });
        switch_rule_audited(&state, &auth, &id, request, &mut details).await
    }
    .await;
    state.audit_result(&auth.0, action, Some(&id), details, result)
}

async fn switch_rule_audited(
    state: &AppState,
    auth: &Auth<AdminRole>,
    id: &str,
    request: RuleSwitchRequest,
    details: &mut serde_json::Value,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = id.to_string();
    bounded("id", &id, MAX_RULE_ID_BYTES)?;
    let reason = match request.reason.as_deref().map(str::trim) {
        Some(r) => Some(bounded("reason", r, MAX_REASON_BYTES)?).filter(|r| !r.is_empty()),
        None => None,
    };
    let entity = match request.entity.as_deref() {
        Some(e) if e.trim().is_empty() => {
            return Err(ApiError::invalid_parameter("`entity` is empty"))
        }
        // Masked like the alerts' entities: a value typed in clear (an access key) is stored
        // masked, and then matches the alerts, which show it masked the same way.
        Some(e) => Some(state.mask_text(bounded("entity", e, MAX_RULE_ID_BYTES)?)),
        None => None,
    };
    let now = chrono::Utc::now();
    let until = super::parse_time("until", request.until.as_deref())?;
    if request.enabled && (until.is_some() || reason.is_some()) {
        return Err(ApiError::invalid_parameter(
            "`until` and `reason` go with switching off (`enabled: false`)",
        ));
    }
    if until.is_some_and(|u| u <= now) {
        return Err(ApiError::invalid_parameter("`until` is not in the future"));
    }
    if !request.enabled && reason.is_none() {
        return Err(ApiError::invalid_parameter(
            "give a `reason` to switch a rule off (it is kept with who and when)",
        ));
    }
    let rules = state.rules.clone();
    let listed = blocking(move || rules.list()).await?;
    let Some(mut rule) = listed
        .into_iter()
        .find(|r| r.get("id").and_then(|v| v.as_str()) == Some(id.as_str()))
    else {
        return Err(ApiError::NotFound(format!("no rule `{id}`")));
    };
    if rule.get("kind").and_then(|k| k.as_str()) == Some("filter") {
        return Err(ApiError::bad_request(
            "not_switchable",
            format!("`{id}` is a filter: it raises no alerts to switch off"),
        ));
    }
    let tenant = auth.tenant().to_string();
    // A reason is free text an analyst typed: masked before it is kept, like alert notes.
    let reason = reason.map(|r| state.mask_text(r));
    let change = (!request.enabled).then(|| perimeter_model::SwitchedOff {
        by: auth.0.actor(),
        at: now,
        reason: reason.clone().unwrap_or_default(),
        until,
    });
    let store = state.rule_switches.clone();
    let (rule_id, for_entity) = (id.clone(), entity.clone());
    blocking(move || store.switch(&tenant, &rule_id, for_entity.as_deref(), change))
        .await?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    *details = json!({ "entity": entity, "until": until, "reason": reason });
    let switch = state
        .rule_switches
        .switches()
        .for_tenant(auth.tenant(), now)
        .remove(&id)
        .unwrap_or_default();
    with_switch_state(&mut rule, switch);
    Ok(Json(rule))
}

/// Run a Sigma rule against given events or a time range of the tenant's stored events.
#[utoipa::path(post, path = "/rules/test", tag = "rules",
    request_body = RuleTestRequest,
    security(("bearer" = [])),
    responses(
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 200, description = "Test result", body = RuleTestResponse),
        (status = 400, description = "Malformed request, or a query parameter (none is taken)", body = ErrorBody),
        (status = 403, description = "Needs role admin", body = ErrorBody),
        (status = 413, description = "Body over the request size limit", body = ErrorBody),
        (status = 415, description = "Body not sent as `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "The rule does not compile", body = ErrorBody),
    ))]
pub async fn test_rule(
    State(state): State<AppState>,
    auth: Auth<AdminRole>,
    no_params: Result<ApiQuery<NoParams>, ApiError>,
    request: Result<ApiJson<RuleTestRequest>, ApiError>,
) -> Result<Json<RuleTestResponse>, ApiError> {
    let mut details = json!({});
    let result = async {
        no_params?;
        let ApiJson(request) = request?;
        details = json!({"rule_sha256": hex::encode(Sha256::digest(request.rule.as_bytes()))});
        test_rule_audited(&state, &auth, request, &mut details).await
    }
    .await;
    state.audit_result(&auth.0, "rules.test", None, details, result)
}

async fn test_rule_audited(
    state: &AppState,
    auth: &Auth<AdminRole>,
    request: RuleTestRequest,
    details: &mut serde_json::Value,
) -> Result<Json<RuleTestResponse>, ApiError> {
    if request.rule.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_json", "`rule` is empty"));
    }
    if request.rule.len() > MAX_RULE_BYTES {
        return Err(ApiError::bad_request(
            "invalid_json",
            format!("`rule` is longer than {MAX_RULE_BYTES} bytes"),
        ));
    }
    let ranged = request.from.is_some() || request.to.is_some() || request.query.is_some();
    let (from, to) = time_range(request.from.as_deref(), request.to.as_deref())?;
    let limit = limit_within("limit", request.limit, MAX_TEST_EVENTS, MAX_TEST_EVENTS)?;
    let source = request
        .source
        .as_deref()
        .map(|s| bounded("source", s, MAX_RULE_ID_BYTES))
        .transpose()?
        .map(str::to_string);
    if source.is_some() && request.events.is_none() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "`source` names where inline `events` come from; stored events have their own",
        ));
    }
    let mode = match (&request.events, ranged) {
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "give either `events` or `from`/`to`/`query`, not both",
            ))
        }
        (Some(events), false) if events.len() > MAX_TEST_EVENTS => {
            return Err(ApiError::bad_request(
                "limit_too_large",
                format!(
                    "at most {MAX_TEST_EVENTS} events per test, got {}",
                    events.len()
                ),
            ))
        }
        (Some(_), false) => "events",
        // No events and no filter: the tenant's stored events, oldest first, `limit` of them
        // (`from`, `to` and `query` are each optional).
        (None, _) => "stored",
    };
    *details = json!({
        "rule_sha256": hex::encode(Sha256::digest(request.rule.as_bytes())),
        "mode": mode, "from": request.from, "to": request.to, "query": request.query,
        "source": source,
    });
    let store = state.store.clone();
    let rules = state.rules.clone();
    let tenant = auth.tenant().to_string();
    let response = blocking(move || -> Result<RuleTestResponse, ApiError> {
        let events = match request.events {
            Some(events) => events,
            None => {
                let mut events = Vec::new();
                let mut cursor = None;
                // Page through the store; each page is one bounded search.
                loop {
                    let query = EventQuery {
                        query: request.query.clone().unwrap_or_else(|| "*".into()),
                        from,
                        to,
                        limit: (limit - events.len()).min(MAX_LIMIT),
                        cursor,
                        // Detectors read events in time order (correlation windows, temporal
                        // rules), as the pipeline feeds them.
                        sort: EventSort::Oldest,
                    };
                    let page = store.search_events(&tenant, &query)?;
                    events.extend(page.items);
                    match page.next_cursor {
                        Some(next) if events.len() < limit => cursor = Some(next),
                        _ => break,
                    }
                }
                events
            }
        };
        let num_events_tested = events.len();
        let result = rules
            .test(&request.rule, events, source.as_deref())
            .map_err(|e| match e {
                crate::state::RuleTestError::Rule(why) => ApiError::InvalidRule(why),
                crate::state::RuleTestError::TooLong(why) => {
                    ApiError::bad_request("limit_too_large", why)
                }
                crate::state::RuleTestError::Event(why) => {
                    ApiError::bad_request("invalid_json", why)
                }
            })?;
        Ok(RuleTestResponse {
            num_events_tested,
            result,
        })
    })
    .await??;
    Ok(Json(response))
}
