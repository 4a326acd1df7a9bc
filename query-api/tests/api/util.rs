//! A real API server on a loopback port over a real store in a tempdir, and a blocking client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use perimeter_model::{
    Alert, DetectorKind, Ecs, EntityKind, Event, Metrics, Outcome, RawRecord, Severity,
};
use perimeter_query_api::{
    ApiConfig, AppState, AuditLog, Role, RuleService, RuleTestError, Server, TokenStore,
};
use perimeter_store::{Store, StoreBatch, StoreConfig};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde_json::{json, Value};

pub const ACME: &str = "acme";
pub const GLOBEX: &str = "globex";

/// TEST-ONLY stand-in for the Sigma engine (the real one lives in `perimeter-detect`, which
/// this crate must not import). It "matches" events whose JSON text contains the value of the
/// rule's `keyword:` line, and rejects YAML without a `title:` line, which is enough to see
/// the API pass rules and events through and map engine errors.
pub struct FakeRuleService;

impl RuleService for FakeRuleService {
    fn list(&self) -> Vec<Value> {
        vec![
            json!({"id": "okta_bruteforce", "title": "Okta brute force", "level": "high",
                "kind": "detection"}),
            json!({"id": "okta_known_scanner", "title": "Known scanner", "kind": "filter"}),
        ]
    }

    fn test(
        &self,
        rule_yaml: &str,
        events: Vec<Value>,
        source: Option<&str>,
    ) -> Result<Value, RuleTestError> {
        if !rule_yaml.lines().any(|l| l.starts_with("title:")) {
            return Err(RuleTestError::Rule("rule has no title".into()));
        }
        let keyword = rule_yaml
            .lines()
            .find_map(|l| l.strip_prefix("keyword:"))
            .map(str::trim)
            .ok_or_else(|| RuleTestError::Rule("rule has no keyword".into()))?;
        let matched: Vec<Value> = events
            .iter()
            .filter(|e| e.to_string().contains(keyword))
            .map(|e| e.pointer("/event/id").cloned().unwrap_or(Value::Null))
            .collect();
        // The source is echoed, for tests to see what the API passed on.
        Ok(json!({"matched": matched.len(), "matched_event_ids": matched, "source": source}))
    }
}

pub fn t(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap() + chrono::Duration::minutes(minute as i64)
}

pub fn event(
    tenant: &str,
    source: &str,
    minute: u32,
    user: &str,
    action: &str,
    outcome: Outcome,
) -> Event {
    let raw = json!({
        "uuid": format!("{tenant}-{source}-{minute}"),
        "published": t(minute).to_rfc3339(),
        "actor": {"alternateId": user},
        "eventType": action,
    });
    let ecs = Ecs {
        timestamp: Some(t(minute)),
        event_action: Some(action.to_string()),
        event_outcome: outcome,
        user_name: Some(user.to_string()),
        source_ip: Some("203.0.113.7".to_string()),
        ..Ecs::default()
    };
    let record = RawRecord {
        source: source.to_string(),
        tenant: tenant.to_string(),
        received_at: t(minute) + chrono::Duration::seconds(5),
        line: Some(minute as u64 + 1),
        raw: perimeter_model::raw_from_serde(&raw),
    };
    Event::new(source, record, ecs)
}

#[allow(clippy::too_many_arguments)]
pub fn alert(
    tenant: &str,
    rule: &str,
    title: &str,
    severity: Severity,
    source: &str,
    minute: u32,
    entity: &str,
    evidence: &[&Event],
) -> Alert {
    let mut a = Alert::new(
        rule,
        title,
        severity,
        DetectorKind::Sigma,
        source,
        tenant,
        t(minute),
        entity,
        EntityKind::User,
    );
    for e in evidence {
        a.push_evidence(e);
    }
    a.seal()
}

/// What the store holds in every test.
pub struct Dataset {
    /// acme events, in time order.
    pub acme_events: Vec<Event>,
    pub globex_events: Vec<Event>,
    /// acme alerts: [okta brute force (high, alice, 10:05), github admin (critical, carol,
    /// 10:20), okta new country (low, bob, 10:30)].
    pub acme_alerts: Vec<Alert>,
    pub globex_alerts: Vec<Alert>,
}

pub fn dataset() -> Dataset {
    let acme_events = vec![
        event(
            ACME,
            "okta",
            1,
            "alice",
            "user.session.start",
            Outcome::Failure,
        ),
        event(
            ACME,
            "okta",
            2,
            "alice",
            "user.session.start",
            Outcome::Failure,
        ),
        event(
            ACME,
            "okta",
            3,
            "alice",
            "user.session.start",
            Outcome::Failure,
        ),
        event(
            ACME,
            "okta",
            25,
            "bob",
            "user.session.start",
            Outcome::Success,
        ),
        event(
            ACME,
            "github",
            15,
            "carol",
            "org.add_member",
            Outcome::Success,
        ),
        event(ACME, "github", 16, "carol", "repo.create", Outcome::Success),
    ];
    let globex_events = vec![
        event(
            GLOBEX,
            "okta",
            4,
            "mallory",
            "user.session.start",
            Outcome::Failure,
        ),
        event(
            GLOBEX,
            "okta",
            5,
            "mallory",
            "user.session.start",
            Outcome::Failure,
        ),
    ];
    let e = &acme_events;
    let acme_alerts = vec![
        alert(
            ACME,
            "okta_bruteforce",
            "Okta brute force",
            Severity::High,
            "okta",
            5,
            "alice",
            &[&e[0], &e[1], &e[2]],
        ),
        alert(
            ACME,
            "github_admin_added",
            "GitHub admin added",
            Severity::Critical,
            "github",
            20,
            "carol",
            &[&e[4]],
        ),
        alert(
            ACME,
            "okta_new_country",
            "Okta login from new country",
            Severity::Low,
            "okta",
            30,
            "bob",
            &[&e[3]],
        ),
    ];
    let g = &globex_events;
    let globex_alerts = vec![alert(
        GLOBEX,
        "okta_bruteforce",
        "Okta brute force",
        Severity::High,
        "okta",
        6,
        "mallory",
        &[&g[0], &g[1]],
    )];
    Dataset {
        acme_events,
        globex_events,
        acme_alerts,
        globex_alerts,
    }
}

/// A filled store, tokens for every (tenant, role), and the API state over them.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub data: Dataset,
    pub tokens: BTreeMap<(String, Role), String>,
    pub token_store: Arc<TokenStore>,
    pub state: AppState,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::at(dir.path().join("store"))).unwrap();
        let data = dataset();
        let mut events = data.acme_events.clone();
        events.extend(data.globex_events.iter().cloned());
        let mut alerts = data.acme_alerts.clone();
        alerts.extend(data.globex_alerts.iter().cloned());
        store
            .write_batch(&StoreBatch {
                events,
                alerts,
                dead_letters: vec![dead_letter(ACME)],
            })
            .unwrap();

        let token_store = Arc::new(TokenStore::open_in(dir.path()).unwrap());
        let mut tokens = BTreeMap::new();
        for tenant in [ACME, GLOBEX] {
            for role in [Role::Viewer, Role::Responder, Role::Admin] {
                let name = format!("{tenant}-{role}");
                let (_, token) = token_store.create(tenant, role, Some(&name)).unwrap();
                tokens.insert((tenant.to_string(), role), token);
            }
        }
        let metrics = Arc::new(Metrics::new());
        metrics.inc("events_received_total", &[("source", "okta")], 6);
        metrics.set("store_commit_latency_seconds", &[], 0.25);
        let audit = Arc::new(AuditLog::open_in(dir.path()).unwrap());
        let state = AppState::new(
            Arc::new(store),
            token_store.clone(),
            audit,
            Arc::new(FakeRuleService),
            metrics,
        );
        Fixture {
            dir,
            data,
            tokens,
            token_store,
            state,
        }
    }
}

pub struct TestApi {
    pub base: String,
    pub client: Client,
    pub data: Dataset,
    /// Plaintext tokens by (tenant, role).
    pub tokens: BTreeMap<(String, Role), String>,
    pub token_store: Arc<TokenStore>,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), perimeter_query_api::ServeError>>>,
    rt: Option<tokio::runtime::Runtime>,
    pub dir: tempfile::TempDir,
}

impl TestApi {
    pub fn start() -> TestApi {
        Self::start_with(ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ApiConfig::default()
        })
    }

    pub fn start_with(config: ApiConfig) -> TestApi {
        let Fixture {
            dir,
            data,
            tokens,
            token_store,
            state,
        } = Fixture::new();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(Server::bind(&config)).unwrap();
        let addr = server.local_addr().unwrap();
        let scheme = if server.is_tls() { "https" } else { "http" };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = rt.spawn(server.run(state.clone(), async move {
            let _ = rx.await;
        }));
        let api = TestApi {
            base: format!("{scheme}://{addr}"),
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            data,
            tokens,
            token_store,
            state,
            shutdown: Some(tx),
            server: Some(handle),
            rt: Some(rt),
            dir,
        };
        if scheme == "http" {
            api.wait_ready();
        }
        api
    }

    /// Poll `/healthz` until it answers, with a deadline (no fixed sleeps).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.client.get(self.url("/healthz")).send() {
                Ok(r) if r.status().is_success() => return,
                _ if Instant::now() > deadline => {
                    panic!("server at {} not ready in time", self.base)
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The Prometheus text `/metrics` answers now.
    pub fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn token(&self, tenant: &str, role: Role) -> &str {
        &self.tokens[&(tenant.to_string(), role)]
    }

    /// A request with `tenant`'s `role` token.
    pub fn req(&self, method: Method, path: &str, tenant: &str, role: Role) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(self.token(tenant, role))
    }

    pub fn get(&self, path: &str, tenant: &str, role: Role) -> Response {
        self.req(Method::GET, path, tenant, role).send().unwrap()
    }

    pub fn get_json(&self, path: &str, tenant: &str, role: Role) -> Value {
        let r = self.get(path, tenant, role);
        let status = r.status();
        let body: Value = r.json().unwrap();
        assert!(status.is_success(), "GET {path} -> {status}: {body}");
        body
    }

    pub fn patch(&self, path: &str, tenant: &str, role: Role, body: Value) -> Response {
        self.req(Method::PATCH, path, tenant, role)
            .json(&body)
            .send()
            .unwrap()
    }

    /// Stop the server gracefully and wait for it (with a deadline).
    pub fn shutdown(&mut self) -> Result<(), perimeter_query_api::ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let (Some(rt), Some(handle)) = (self.rt.as_ref(), self.server.take()) else {
            return Ok(());
        };
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), handle).await })
            .expect("server did not stop within 20s")
            .expect("server task panicked")
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        let _ = self.shutdown();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

pub fn dead_letter(tenant: &str) -> perimeter_model::DeadLetter {
    perimeter_model::DeadLetter {
        line: Some(7),
        source: "okta".into(),
        tenant: tenant.into(),
        received_at: t(40),
        reason: "invalid JSON at column 17".into(),
        excerpt: "{\"uuid\": \"x\", ".into(),
        input_digest: None,
    }
}

/// Assert a JSON error answer: the expected status and a `{"error": {"code", "message"}}` body.
pub fn assert_error(response: Response, status: u16, code: &str) -> Value {
    let got = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let text = response.text().unwrap();
    assert_eq!(got, status, "expected {status} {code}, got {got}: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "error not JSON ({content_type}): {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], code, "{text}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{text}"
    );
    body
}

pub fn ids(items: &Value, key: &str) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i.pointer(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}
