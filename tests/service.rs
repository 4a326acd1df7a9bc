//! `perimeter run` as a real process: HTTP ingest acknowledged only after storage, kill -9 and
//! restart without losing or duplicating an acknowledged event, graceful SIGTERM.

use crate::util::{assert_stderr_says, json_lines, perimeter, repo, stderr};
#[path = "../query-api/tests/api/webhook_receiver.rs"]
mod webhook_receiver;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use webhook_receiver::WebhookReceiver;

struct Service {
    child: Child,
    base: String,
    /// The key of its event ids ([`id_key_of`]).
    id_key: Option<[u8; 32]>,
}

impl Service {
    /// The Prometheus text of `/metrics`.
    fn metrics(&self) -> String {
        reqwest::blocking::get(format!("{}/metrics", self.base))
            .unwrap()
            .text()
            .unwrap()
    }

    /// Assert that `/metrics` has each of `lines` as a line of its own.
    fn assert_metrics(&self, lines: &[&str]) {
        let metrics = self.metrics();
        for line in lines {
            assert!(
                metrics.lines().any(|l| l == *line),
                "no `{line}` in {metrics}"
            );
        }
    }
}

impl Drop for Service {
    /// A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("perimeter.toml");
    let text = format!(
        "data_dir = {:?}\ntenant = \"acme\"\nrules = [{:?}]\n[api]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("data"),
        repo().join("detection-rules")
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// [`write_config`] with `extra` (TOML tables) appended.
fn write_config_with(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let cfg = write_config(dir);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(extra);
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// `perimeter run` with `cfg`, once it says where it listens (its base URL, as printed).
fn spawn_run(cfg: &std::path::Path, stderr: Stdio) -> Service {
    spawn_run_logging(cfg, stderr, "text")
}

/// [`spawn_run`] with `--log-format <log_format>`.
fn spawn_run_logging(cfg: &std::path::Path, stderr: Stdio, log_format: &str) -> Service {
    let mut child = Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--log-format",
            log_format,
            "run",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawning perimeter run");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next()
        .expect("perimeter run printed nothing")
        .unwrap();
    let base = first.rsplit(' ').next().unwrap().to_string();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Service {
        child,
        base,
        id_key: id_key_of(cfg),
    }
}

/// The key the service run with `cfg` keys its event ids with (`perimeter_detect::pipeline::id_key`):
/// from the config's `[mask] hmac_key`, else from the key the service made for its data
/// directory at its start.
fn id_key_of(cfg: &std::path::Path) -> Option<[u8; 32]> {
    let config: toml::Value = toml::from_str(&std::fs::read_to_string(cfg).ok()?).ok()?;
    let configured = config
        .get("mask")
        .and_then(|m| m.get("hmac_key"))
        .and_then(|k| k.as_str());
    let reference = match configured {
        Some(reference) => reference.to_string(),
        None => {
            let file =
                std::path::Path::new(config.get("data_dir")?.as_str()?).join("state/mask.key");
            format!("file:{}", file.display())
        }
    };
    let masker = perimeter_detect::mask::SecretMasker::new(&perimeter_detect::mask::MaskConfig {
        hmac_key: Some(reference),
        ..Default::default()
    })
    .ok()?;
    perimeter_detect::pipeline::id_key(&masker)
}

fn start(cfg: &std::path::Path) -> Service {
    start_with_stderr(cfg, Stdio::inherit())
}

/// [`start`] with the service's stderr (its log) sent to `stderr`.
fn start_with_stderr(cfg: &std::path::Path, stderr: Stdio) -> Service {
    let service = spawn_run(cfg, stderr);
    let base = service.base.clone();
    assert!(
        base.starts_with("http://127.0.0.1:"),
        "unexpected base URL {base:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::blocking::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send() {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "service at {base} never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    service
}

fn token(cfg: &std::path::Path, role: &str) -> String {
    let out = perimeter(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "tokens",
            "create",
            "--tenant",
            "acme",
            "--role",
            role,
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An Okta login of two days ago: inside the default retention whenever the tests run (a
/// restart's retention sweep must not remove it), and more than a day old (event-time lag).
fn okta_event(batch: usize, i: usize) -> serde_json::Value {
    let day = (chrono::Utc::now() - chrono::Duration::days(2)).format("%Y-%m-%d");
    serde_json::json!({
        "uuid": format!("evt-{batch}-{i}"),
        "published": format!("{day}T{:02}:{:02}:{:02}.000Z", 8 + batch % 10, i % 60, (batch * 7 + i) % 60),
        "eventType": "user.session.start",
        "outcome": {"result": if i.is_multiple_of(5) { "FAILURE" } else { "SUCCESS" }},
        "actor": {"id": format!("00u{i}"), "type": "User", "alternateId": format!("user{}@acme.example", i % 40)},
        "client": {"ipAddress": format!("198.51.100.{}", i % 200), "userAgent": {"rawUserAgent": "Mozilla/5.0"}},
        "displayMessage": "User login to Okta"
    })
}

/// The event ids a service keying them with `key` gives Okta records.
fn okta_ids(events: &[serde_json::Value], key: Option<[u8; 32]>) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let raw = perimeter_model::raw_from_serde(e);
            perimeter_model::EventId::derive_with("okta", &raw, key.as_ref()).0
        })
        .collect()
}

/// Post `okta_event(batch, 0..n)` to `base`'s ingest: its answer (a success) and the ids of the
/// events.
fn post_okta_batch(
    svc: &Service,
    token: &str,
    batch: usize,
    n: usize,
) -> (serde_json::Value, Vec<String>) {
    let base = &svc.base;
    let events: Vec<serde_json::Value> = (0..n).map(|i| okta_event(batch, i)).collect();
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/ingest/okta"))
        .bearer_auth(token)
        .body(body)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    (r.json().unwrap(), okta_ids(&events, svc.id_key))
}

/// The events a search for `q` returns (its first page).
fn searched_events(base: &str, token: &str, q: &str) -> Vec<serde_json::Value> {
    let r: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{base}/api/v1/events/search"))
        .query(&[("q", q)])
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    r["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .clone()
}

/// Every stored event of the tenant (the search's pages, `q=*`), each through `each`.
fn each_stored_event(base: &str, token: &str, mut each: impl FnMut(&serde_json::Value)) {
    let client = reqwest::blocking::Client::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/events/search?q=*&limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let body: serde_json::Value = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let items = body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items: {body}"));
        items.iter().for_each(&mut each);
        match body["next_cursor"].as_str() {
            Some(c) if !items.is_empty() => cursor = Some(c.to_string()),
            _ => return,
        }
    }
}

/// Every stored event id of the tenant, with how often it is stored.
fn stored_ids(base: &str, token: &str) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    each_stored_event(base, token, |e| {
        *ids.entry(e["event"]["id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    });
    ids
}

/// Posts batches of 200 Okta events to `base`'s ingest until the server dies, sending the event
/// ids of each acknowledged batch; `check` reads each answer.
fn spawn_poster(
    base: String,
    id_key: Option<[u8; 32]>,
    token: String,
    check: fn(&serde_json::Value),
) -> (
    std::sync::mpsc::Receiver<Vec<String>>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<String>>();
    let poster = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        for batch in 0..10_000 {
            let events: Vec<serde_json::Value> = (0..200).map(|i| okta_event(batch, i)).collect();
            let body: String = events.iter().map(|e| format!("{e}\n")).collect();
            let ids = okta_ids(&events, id_key);
            match client
                .post(format!("{base}/ingest/okta"))
                .bearer_auth(&token)
                .body(body)
                .send()
            {
                Ok(r) if r.status().is_success() => {
                    check(&r.json().unwrap());
                    if tx.send(ids).is_err() {
                        return;
                    }
                }
                _ => return, // the server died: this batch was not acknowledged
            }
        }
    });
    (rx, poster)
}

/// Once the poster of [`spawn_poster`] has `n` events acknowledged, `kill -9` the service; the
/// ids of every batch it acknowledged.
fn kill_9_after_acked(
    svc: &mut Service,
    rx: std::sync::mpsc::Receiver<Vec<String>>,
    poster: std::thread::JoinHandle<()>,
    n: usize,
) -> Vec<String> {
    let mut acked: Vec<String> = Vec::new();
    while acked.len() < n {
        acked.extend(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("ingest stalled"),
        );
    }
    svc.child.kill().unwrap(); // SIGKILL
    svc.child.wait().unwrap();
    poster.join().unwrap();
    acked.extend(rx.try_iter().flatten());
    acked
}

#[test]
fn kill_9_during_ingest_loses_and_duplicates_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let ingest_token = token(&cfg, "responder");
    let mut svc = start(&cfg);
    let (rx, poster) = spawn_poster(svc.base.clone(), svc.id_key, ingest_token.clone(), |ack| {
        assert_eq!(ack["events"], 200, "{ack}");
    });
    let acked = kill_9_after_acked(&mut svc, rx, poster, 2000);

    let svc = start(&cfg);
    let stored = stored_ids(&svc.base, &ingest_token);
    for id in &acked {
        assert_eq!(
            stored.get(id).copied(),
            Some(1),
            "acknowledged event {id} stored {:?} times",
            stored.get(id)
        );
    }
    assert!(
        stored.values().all(|&n| n == 1),
        "some event is stored twice"
    );
    stop(svc);
}

/// A webhook destination for the tenant's alerts, at `url`.
fn add_destination(base: &str, admin: &str, url: &str) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/api/v1/destinations"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"name": "soc", "url": url, "min_severity": "informational"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
}

#[test]
fn alert_deliveries_pending_at_kill_9_are_sent_after_restart_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let admin = token(&cfg, "admin");
    // The webhook refuses the first try; the service waits a second before its retry, and is
    // killed meanwhile.
    let hook = WebhookReceiver::start(1);
    let mut svc = start(&cfg);
    add_destination(&svc.base, &admin, &hook.url());
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/ingest/auto", svc.base))
        .bearer_auth(&admin)
        .body(crate::secrets::secret_events())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let ack: serde_json::Value = r.json().unwrap();
    let alerts = ack["alerts"].as_u64().unwrap();
    assert!(alerts > 0, "{ack}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while hook.requests() == 0 {
        assert!(Instant::now() < deadline, "no delivery was tried");
        std::thread::sleep(Duration::from_millis(10));
    }
    svc.child.kill().unwrap(); // SIGKILL, during the retry's wait
    svc.child.wait().unwrap();
    assert!(hook.bodies().is_empty(), "the first try was refused");

    let svc = start(&cfg);
    let body: serde_json::Value =
        serde_json::from_str(&hook.wait_for_body(Duration::from_secs(20))).unwrap();
    assert_eq!(
        body["alerts"].as_array().map(Vec::len),
        Some(alerts as usize),
        "{body}"
    );
    stop(svc);
    // Delivered and marked done: a later start sends nothing again.
    let svc = start(&cfg);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.bodies().len(), 1, "sent again after a restart");
    stop(svc);
}

/// A source resends a batch whose answer it may have missed, after a `kill -9` that lost the
/// detection state: the events are detected again, but their alerts are the stored ones, so
/// neither the answer nor the destinations present them as new.
#[test]
fn a_batch_resent_after_kill_9_sends_no_alert_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let admin = token(&cfg, "admin");
    let hook = WebhookReceiver::start(0);
    let mut svc = start(&cfg);
    add_destination(&svc.base, &admin, &hook.url());
    let send = |base: &str| -> serde_json::Value {
        let r = reqwest::blocking::Client::new()
            .post(format!("{base}/ingest/auto"))
            .bearer_auth(&admin)
            .body(crate::secrets::secret_events())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
        r.json().unwrap()
    };
    let first = send(&svc.base);
    assert!(first["alerts"].as_u64().unwrap() > 0, "{first}");
    hook.wait_for_body(Duration::from_secs(20));
    // Every delivery of the batch made (none in flight at the kill, which would be redelivered).
    let mut delivered = hook.bodies().len();
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        if hook.bodies().len() == delivered {
            break;
        }
        delivered = hook.bodies().len();
    }
    svc.child.kill().unwrap();
    svc.child.wait().unwrap();

    let svc = start(&cfg);
    let again = send(&svc.base);
    // (Events dated before the retention window were removed at the restart and are stored
    // again; the others are duplicates.)
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        n(&again, "events") + n(&again, "duplicates"),
        n(&first, "events"),
        "{again}"
    );
    assert!(n(&again, "duplicates") > 0, "{again}");
    assert_eq!(n(&again, "alerts"), 0, "{again}");
    // Its bad line is stored once too.
    assert_eq!(
        (n(&first, "dead_letters"), n(&again, "dead_letters")),
        (1, 0),
        "{again}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hook.bodies().len(),
        delivered,
        "alerts sent again: {:?}",
        hook.bodies()
    );
    stop(svc);
}

/// Without `[mask] hmac_key` the service makes a key of its own for its data directory (the
/// built-in one is public): kept across restarts, so after a graceful restart a resend is
/// still known for one (the replay window is saved with the detection state) and raises no
/// alert again.
#[test]
fn an_unkeyed_service_keeps_a_key_of_its_own_and_knows_a_resend_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let admin = token(&cfg, "admin");
    let send = |base: &str| -> serde_json::Value {
        let r = reqwest::blocking::Client::new()
            .post(format!("{base}/ingest/auto"))
            .bearer_auth(&admin)
            .body(std::fs::read(repo().join("demo/events.jsonl")).unwrap())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
        r.json().unwrap()
    };
    let svc = start(&cfg);
    let first = send(&svc.base);
    assert!(first["alerts"].as_u64().unwrap() > 0, "{first}");
    stop(svc);
    let key_file = dir.path().join("data/state/mask.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key.len(), 64, "{key}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
    }

    let svc = start(&cfg);
    let again = send(&svc.base);
    assert_eq!(again["events"], 0, "{again}");
    assert_eq!(again["alerts"], 0, "{again}");
    stop(svc);
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        key,
        "the same key"
    );
    // The key lost (a restore that missed it): the detection state tells it was not the
    // built-in one, so neither the check nor a start takes the public key instead.
    std::fs::rename(&key_file, dir.path().join("mask.key.aside")).unwrap();
    let check = |cfg: &std::path::Path| {
        crate::util::perimeter(&["--config", cfg.to_str().unwrap(), "run", "--check"], None)
    };
    // Both the check and a start refuse, saying the key is missing and `why`.
    let refused_for_the_missing_key = |why: &str| {
        let out = check(&cfg);
        assert!(!out.status.success());
        let line = crate::util::check_line(&out, "sources and masking");
        assert!(
            line.starts_with("error") && line.contains("mask.key is missing"),
            "{line}"
        );
        let out = crate::util::perimeter(&["--config", cfg.to_str().unwrap(), "run"], None);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("mask.key is missing") && err.contains(why),
            "{err}"
        );
        assert!(!key_file.exists(), "no new key made");
    };
    refused_for_the_missing_key("restore it");
    // Damaged (cut short): refused too, not taken as a key.
    std::fs::write(&key_file, &key[..10]).unwrap();
    let line = crate::util::check_line(&check(&cfg), "sources and masking");
    assert!(
        line.starts_with("error") && line.contains("is damaged"),
        "{line}"
    );
    // Put back, all is well.
    std::fs::write(&key_file, &key).unwrap();
    assert!(check(&cfg).status.success());
    // Another key configured on this data: the check says what a start would set aside, and
    // which key the data was written with (QA: it said ok).
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, "a key of the deployment's, not this data's").unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "{text}[mask]\nhmac_key = \"file:{}\"\n",
            other_key.display()
        ),
    )
    .unwrap();
    let out = check(&other);
    let warning = crate::util::check_line(&out, "warn   sources and masking");
    assert!(
        warning.contains("not the key this data directory's detection state was written with")
            && warning.contains("mask.key"),
        "{warning}"
    );
    // The key it was written with, configured: no warning.
    let same = dir.path().join("same.toml");
    std::fs::write(
        &same,
        format!("{text}[mask]\nhmac_key = \"file:{}\"\n", key_file.display()),
    )
    .unwrap();
    let out = check(&same);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warn   sources and masking"));
    // The whole of `state/` lost (the key and the detection state with it): the data
    // directory's key mark still tells the data was not written with the built-in key (QA:
    // the service went on hashing with the public key, saying the data was written with it).
    std::fs::rename(
        dir.path().join("data/state"),
        dir.path().join("state.aside"),
    )
    .unwrap();
    assert!(dir.path().join("data/mask-key.mark").exists());
    refused_for_the_missing_key("not the public built-in one");
    // So does a command that only reads it, whose search terms would be hashed unlike the
    // stored values (QA).
    let out = crate::util::perimeter(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "search",
            "user.name:alice",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mask.key is missing"), "{err}");
}

fn stop(svc: Service) {
    let status = stop_with_status(svc);
    assert!(
        status.success(),
        "perimeter run exited with {status} on SIGTERM"
    );
}

/// SIGTERM, then how the service exited.
fn stop_with_status(mut svc: Service) -> std::process::ExitStatus {
    let pid = svc.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = svc.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "perimeter run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The stderr of `perimeter run` with `--log-format <format>` until its first stdout line.
fn run_stderr_until_listening(cfg: &std::path::Path, format: &str) -> String {
    let log = cfg.with_file_name(format!("stderr.{format}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--log-format",
            format,
            "run",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawning perimeter run");
    // The first stdout line comes after the startup checks.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("listening on"), "{first:?}");
    std::fs::read_to_string(&log).unwrap()
}

/// Each line of a `--log-format json` log as JSON; fails on a line that is not.
fn json_log_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_misspelt_raw_text_search_off_source_is_warned_about_in_plain_text_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with(
        dir.path(),
        "[store]\nraw_text_search_off = [\"cloudtrail\", \"okta\"]\n[[store.retention]]\nsource = \"otka\"\ndays = 30\n",
    );
    let stderr = run_stderr_until_listening(&cfg, "text");
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("raw_text_search_off"))
        .collect();
    assert_eq!(warned.len(), 1, "{stderr}");
    // A retention rule for a misspelt source would keep nothing shorter: warned about too.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("setting=\"retention\"") && l.contains("otka")),
        "{stderr}"
    );
    assert!(warned[0].contains("\"cloudtrail\"") && warned[0].contains("aws_cloudtrail"));
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log file: {stderr:?}"
    );
    // For log collectors: one JSON object per line, the level and fields as keys.
    let stderr = run_stderr_until_listening(&cfg, "json");
    let lines = json_log_lines(&stderr);
    let warned: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.to_string().contains("raw_text_search_off"))
        .collect();
    assert_eq!(warned.len(), 1, "{stderr}");
    assert_eq!(warned[0]["level"], "WARN", "{}", warned[0]);
    assert_eq!(warned[0]["fields"]["source"], "cloudtrail", "{}", warned[0]);
}

#[test]
fn an_unusable_behavioural_snapshot_does_not_stop_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let state = dir.path().join("data/state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("ueba.snapshot"), "written by an older version").unwrap();
    let svc = start(&cfg);
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("ueba.snapshot.unreadable-")),
        "{names:?}"
    );
    stop(svc);
}

#[test]
fn sigterm_flushes_and_spool_files_are_ingested() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let viewer = token(&cfg, "viewer");
    let inbox = dir.path().join("data/inbox/okta");
    std::fs::create_dir_all(&inbox).unwrap();
    let lines: String = (0..50).map(|i| format!("{}\n", okta_event(1, i))).collect();
    std::fs::write(inbox.join("batch.jsonl"), lines).unwrap();
    let svc = start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    while inbox.join("batch.jsonl").exists() {
        assert!(Instant::now() < deadline, "spool file never ingested");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stored_ids(&svc.base, &viewer).len(), 50);
    // Viewers cannot ingest (a valid token without the role: 403), nobody without a token
    // (401), and every refusal is a JSON error, a wrong method's too.
    let client = reqwest::blocking::Client::new();
    let ingest_url = format!("{}/ingest/okta", svc.base);
    let body = format!("{}\n", okta_event(2, 1));
    for (request, status, code) in [
        (
            client
                .post(&ingest_url)
                .bearer_auth(&viewer)
                .body(body.clone()),
            403,
            "forbidden",
        ),
        (
            client.post(&ingest_url).bearer_auth("nope").body(body),
            401,
            "unauthorized",
        ),
        (
            client.get(&ingest_url).bearer_auth(&viewer),
            405,
            "method_not_allowed",
        ),
    ] {
        let r = request.send().unwrap();
        assert_eq!(r.status().as_u16(), status);
        let error: serde_json::Value = r.json().unwrap();
        assert_eq!(error["error"]["code"], code, "{error}");
    }
    // The viewer's attempt is in the audit log, as a refused API call is.
    let audit = std::fs::read_to_string(dir.path().join("data/audit.jsonl")).unwrap();
    let denied: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["action"] == "request.denied")
        .collect();
    assert_eq!(denied.len(), 1, "{audit}");
    assert_eq!(
        (&denied[0]["target"], &denied[0]["role"]),
        (
            &serde_json::json!("POST /ingest"),
            &serde_json::json!("viewer")
        )
    );
    // Freshness and Perimeter's own delay are apart: the events are days old by event time,
    // but were stored within seconds of being received.
    let metrics = svc.metrics();
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("perimeter_{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(gauge("pipeline_lag_seconds") > 86_400.0, "{metrics}");
    let processing = gauge("pipeline_processing_lag_seconds");
    assert!((0.0..60.0).contains(&processing), "{metrics}");
    // The terminal commands against the running server.
    let out = perimeter(
        &[
            "search",
            "event.outcome:failure",
            "--server",
            &svc.base,
            "--token",
            &viewer,
            "--limit",
            "1000",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        10,
        "every fifth login failed"
    );
    let out = perimeter(
        &[
            "alerts", "--server", &svc.base, "--token", &viewer, "--status", "open",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A log shipper's gzipped batch is taken like a plain one; an encoding we cannot read is
    // a 415 with a JSON error, not dead letters of binary noise.
    let lines: String = (0..20).map(|i| format!("{}\n", okta_event(3, i))).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, lines.as_bytes()).unwrap();
    let responder = token(&cfg, "responder");
    let post = |encoding: &str, body: Vec<u8>| {
        reqwest::blocking::Client::new()
            .post(format!("{}/ingest/okta", svc.base))
            .bearer_auth(&responder)
            .header("Content-Encoding", encoding)
            .body(body)
            .send()
            .unwrap()
    };
    let r = post("gzip", gz.finish().unwrap());
    assert!(r.status().is_success(), "{}", r.status());
    let ack: serde_json::Value = r.json().unwrap();
    assert_eq!(
        (&ack["events"], &ack["dead_letters"]),
        (&20.into(), &0.into()),
        "{ack}"
    );
    let r = post("br", lines.into_bytes());
    assert_eq!(r.status().as_u16(), 415);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "unsupported_encoding", "{body}");
    // A recorded vendor page, pretty-printed as the API returned it, is accepted as it is.
    let page =
        std::fs::read_to_string(crate::util::fixtures().join("okta/system_log/001.json")).unwrap();
    let records = serde_json::from_str::<serde_json::Value>(&page)
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/ingest/okta", svc.base))
        .bearer_auth(&responder)
        .body(page)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let ack: serde_json::Value = r.json().unwrap();
    let taken = ack["events"].as_u64().unwrap() + ack["duplicates"].as_u64().unwrap();
    assert_eq!(taken, records as u64, "{ack}");
    // The page is from 2021, past the default 90 days: stored, and said to be past retention
    // (the next sweep removes it), in the answer and in the metrics.
    let stored = ack["events"].as_u64().unwrap();
    assert!(stored > 0, "{ack}");
    assert_eq!(ack["past_retention"], stored, "{ack}");
    // Sent again it stores nothing, and is not counted again (QA: each resend was).
    let again: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{}/ingest/okta", svc.base))
        .bearer_auth(&responder)
        .body(std::fs::read(crate::util::fixtures().join("okta/system_log/001.json")).unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (&again["events"], &again["past_retention"]),
        (&0.into(), &0.into()),
        "{again}"
    );
    let metrics = svc.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("perimeter_events_past_retention_total {stored}")),
        "{metrics}"
    );
    // A Salesforce Event Monitoring log file is CSV: taken row by row when the body says so,
    // with a dead letter for a row that does not fit the header.
    let mut csv =
        std::fs::read_to_string(crate::util::fixtures().join("sf/event_log/001.csv")).unwrap();
    let rows = csv.lines().count() - 1;
    // (The recorded file ends without a line break.)
    csv = format!("{}\n\"Login\",\"cut off\"\n", csv.trim_end());
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/ingest/auto", svc.base))
        .bearer_auth(&responder)
        .header("Content-Type", "text/csv; charset=utf-8")
        .body(csv)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let ack: serde_json::Value = r.json().unwrap();
    assert_eq!(
        (&ack["events"], &ack["dead_letters"]),
        (&rows.into(), &1.into()),
        "{ack}"
    );
    // The recorded rows are dated 2038: stored with their receive time, and their documents
    // say so (ADR 012), in search hits and by id; the Okta events, with their own times, not.
    let api_get = |path: &str| -> serde_json::Value {
        reqwest::blocking::Client::new()
            .get(format!("{}{path}", svc.base))
            .bearer_auth(&viewer)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let adjusted_mark =
        |doc: &serde_json::Value| doc["perimeter"].get("timestamp_adjusted").cloned();
    let hits = api_get("/api/v1/events/search?q=event.module:salesforce&limit=100");
    let hits = hits["items"].as_array().unwrap().clone();
    assert_eq!(hits.len(), rows, "{hits:?}");
    for hit in &hits {
        assert_eq!(adjusted_mark(hit), Some(true.into()), "{hit}");
        assert!(
            hit["raw"]["TIMESTAMP"]
                .as_str()
                .unwrap()
                .starts_with("2038"),
            "{hit}"
        );
        assert!(hit["@timestamp"].as_str().unwrap() < "2038", "{hit}");
    }
    let by_id = api_get(&format!(
        "/api/v1/events/{}",
        hits[0]["event"]["id"].as_str().unwrap()
    ));
    assert_eq!(adjusted_mark(&by_id), Some(true.into()), "{by_id}");
    let okta = api_get("/api/v1/events/search?q=event.module:okta&limit=10");
    let okta = okta["items"].as_array().unwrap();
    assert!(!okta.is_empty());
    assert!(
        okta.iter().all(|hit| adjusted_mark(hit).is_none()),
        "{okta:?}"
    );
    stop(svc);
    // After a clean stop the data is all there when read straight from the data directory.
    let out = perimeter(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "search",
            "*",
            "--limit",
            "1000",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(
        stored > 50,
        "the spool file's 50 events and the page's events: {stored}"
    );
}

/// Every string in every Parquet file under `dir`, decompressed, as one text; `None` when a
/// file listed was gone when read (the service's compaction swapped its partition meanwhile).
fn parquet_text(dir: &std::path::Path) -> Option<(usize, String)> {
    use arrow::array::Array;
    let mut text = String::new();
    let mut files = 0;
    for path in crate::cli::walk(dir) {
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        files += 1;
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            for col in batch.columns() {
                // Secrets could only hide in text columns (and lists of text).
                let col = match col.data_type() {
                    arrow::datatypes::DataType::List(_) => col
                        .as_any()
                        .downcast_ref::<arrow::array::ListArray>()
                        .unwrap()
                        .values()
                        .clone(),
                    _ => col.clone(),
                };
                if let Some(strings) = col.as_any().downcast_ref::<arrow::array::StringArray>() {
                    for v in strings.iter().flatten() {
                        text.push_str(v);
                        text.push('\n');
                    }
                }
            }
        }
    }
    Some((files, text))
}

#[test]
fn no_secret_survives_into_the_store_the_api_or_any_file() {
    use crate::secrets::{assert_no_secret, secret_events};
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let client = reqwest::blocking::Client::new();
    // A webhook destination for the tenant's alerts: what it receives must be masked too (and
    // so must the delivery outbox, among the files checked below).
    let hook = WebhookReceiver::start(0);
    add_destination(&svc.base, &admin, &hook.url());
    let r = client
        .post(format!("{}/ingest/auto", svc.base))
        .bearer_auth(&admin)
        .body(secret_events())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let ack: serde_json::Value = r.json().unwrap();
    assert_eq!(ack["events"], 4, "{ack}");
    assert_eq!(ack["dead_letters"], 1, "{ack}");
    assert!(ack["alerts"].as_u64().unwrap() > 0, "{ack}");
    let delivered = hook.wait_for_body(std::time::Duration::from_secs(20));
    let body: serde_json::Value = serde_json::from_str(&delivered).expect("a JSON delivery");
    assert!(!body["alerts"].as_array().unwrap().is_empty(), "{body}");
    assert_no_secret("webhook deliveries", &delivered);
    // `perimeter alerts --server` passes its filter flags on: all alerts, then none for an
    // entity nobody is and for a window before the data.
    let listed = |filter: &[&str]| {
        let mut args = vec!["alerts", "--server", &svc.base, "--token", &admin];
        args.extend_from_slice(filter);
        let out = perimeter(&args, None);
        assert!(out.status.success(), "{filter:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert!(listed(&[]) > 0, "no alerts listed");
    assert_eq!(listed(&["--entity", "nobody@nowhere.test"]), 0);
    assert_eq!(listed(&["--to", "2000-01-01"]), 0);
    // A search for a secret: the audit log records the search, masked.
    let r = client
        .get(format!("{}/api/v1/events/search", svc.base))
        .query(&[("q", format!("\"{}\"", crate::secrets::SECRETS[0]))])
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    // The access key id is stored hashed; searching the id itself finds its event, since the
    // query's terms are hashed alike. A redacted token is not searchable (every redacted token
    // looks the same), and its search finds nothing rather than every redacted event.
    let hits = |q: &str| searched_events(&svc.base, &admin, q).len();
    let key_id = crate::secrets::SECRETS[1];
    assert_eq!(hits(key_id), 1);
    assert_eq!(
        hits(&format!("\"{key_id}\" AND event.module:aws_cloudtrail")),
        1
    );
    assert_eq!(hits(&format!("{key_id} AND event.module:okta")), 0);
    assert_eq!(hits(crate::secrets::SECRETS[0]), 0);
    // An analyst pastes the leaked secrets into an alert's note and assignee: stored masked.
    let alerts: serde_json::Value = client
        .get(format!("{}/api/v1/alerts?limit=1", svc.base))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let alert_id = alerts["items"][0]["alert"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let note = format!(
        "leaked {} and {} in the repo",
        crate::secrets::SECRETS[0],
        crate::secrets::SECRETS[3]
    );
    let r = client
        .patch(format!("{}/api/v1/alerts/{alert_id}", svc.base))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"note": note, "assignee": crate::secrets::SECRETS[1]}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let patched: serde_json::Value = r.json().unwrap();
    let kept = patched["notes"][0]["text"].as_str().unwrap();
    assert!(
        kept.starts_with("leaked ") && kept.ends_with(" in the repo"),
        "{kept}"
    );
    let r = client
        .patch(format!("{}/api/v1/alerts/{alert_id}", svc.base))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"note": "  "}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "an empty note is refused");
    // The same from the terminal: `perimeter triage` changes through the server, which records
    // who; without changes it shows the alert. A viewer may look but not change.
    let triage = |token: &str, extra: &[&str]| {
        let mut args = vec!["triage", &alert_id, "--server", &svc.base, "--token", token];
        args.extend_from_slice(extra);
        perimeter(&args, None)
    };
    let out = triage(
        &admin,
        &["--status", "resolved", "--note", "fixed in the repo"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = triage(&admin, &[]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let record: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(record["alert"]["status"], "resolved", "{record}");
    assert!(record["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["text"] == "fixed in the repo"));
    assert_stderr_says(&shown, "status resolved");
    let viewer = token(&cfg, "viewer");
    let refused = triage(&viewer, &["--status", "open"]);
    assert!(!refused.status.success());
    assert_stderr_says(&refused, "403");
    // A webhook URL that carries a token is listed masked.
    let token_url = "http://127.0.0.1:9/hook?token=Wh00kT0k3nN0tT0B3L1st3d";
    add_destination(&svc.base, &admin, token_url);
    let destinations = || {
        client
            .get(format!("{}/api/v1/destinations", svc.base))
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let listed = destinations();
    assert!(listed.contains("127.0.0.1:9/hook?token="), "{listed}");
    assert!(!listed.contains("Wh00kT0k3n"), "{listed}");
    // And a secret pasted into a destination's name (it is stored masked).
    let r = client
        .post(format!("{}/api/v1/destinations", svc.base))
        .bearer_auth(&admin)
        .json(
            &serde_json::json!({"name": format!("hook {}", crate::secrets::SECRETS[2]),
            "url": "http://127.0.0.1:9/other"}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let listed = destinations();
    assert!(listed.contains("\"hook "), "{listed}");
    assert!(!listed.contains(crate::secrets::SECRETS[2]), "{listed}");
    // So is a secret pasted into the reason for switching a rule off (kept in
    // rule_switches.json, the audit log and the rule listing).
    let rule_id = alerts["items"][0]["alert"]["rule_id"].as_str().unwrap();
    let r = client
        .patch(format!("{}/api/v1/rules/{rule_id}", svc.base))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"enabled": false,
            "reason": format!("fires on {}", crate::secrets::SECRETS[2])}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let mut api_text = patched.to_string();
    api_text.push_str(&r.text().unwrap());
    // An entity typed in clear is kept masked (and then matches the alerts, masked alike).
    let r = client
        .patch(format!("{}/api/v1/rules/{rule_id}", svc.base))
        .bearer_auth(&admin)
        .json(
            &serde_json::json!({"enabled": false, "reason": "leaked key",
            "entity": crate::secrets::SECRETS[0]}),
        )
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    api_text.push_str(&r.text().unwrap());
    // A secret pasted where an id, a query or a parameter goes: the error answers quote what
    // was asked, and the audit log names it, both masked.
    let secrets = crate::secrets::SECRETS;
    for path in [
        format!("/events/{}", secrets[0]),
        format!("/alerts/{}", secrets[3]),
        format!("/events/{}/context", secrets[2]),
        format!("/events/search?q={}%20AND%20(", secrets[0]),
        format!("/events/search?q=*&from={}", secrets[2]),
    ] {
        let r = client
            .get(format!("{}/api/v1{path}", svc.base))
            .bearer_auth(&admin)
            .send()
            .unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
        let body: serde_json::Value = r.json().unwrap();
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
        api_text.push_str(&body.to_string());
    }
    for path in [
        "/rules",
        &format!("/alerts/{alert_id}"),
        "/events/search?q=*&limit=100",
        "/events/export",
        "/events/export?format=csv",
        "/alerts?limit=100",
        "/dead-letters?limit=100",
        "/audit?limit=100",
    ] {
        let r = client
            .get(format!("{}/api/v1{path}", svc.base))
            .bearer_auth(&admin)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        api_text.push_str(&r.text().unwrap());
    }
    assert!(
        api_text.contains("CreateAccessKey"),
        "events are searchable: {api_text}"
    );
    assert_no_secret("API responses", &api_text);
    // The dead letter from the terminal, through the server and from the data directory: the
    // reason and line, the excerpt masked.
    let data = dir.path().join("data");
    let dead_letters = |target: &[&str]| {
        let mut args = vec!["dead-letters", "--format", "json"];
        args.extend_from_slice(target);
        let out = perimeter(&args, None);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_no_secret(
            "perimeter dead-letters",
            &String::from_utf8_lossy(&out.stdout),
        );
        json_lines(&out)
    };
    let listed = dead_letters(&["--server", &svc.base, "--token", &admin]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0]["reason"].as_str().unwrap().contains("JSON"),
        "{listed:?}"
    );
    // The API's audit log from the terminal: the searches and exports above, through the
    // server and from the data directory beside it (read only), the same entries.
    let audit = |target: &[&str]| {
        let mut args = vec!["audit", "--action", "events.*", "--format", "json"];
        args.extend_from_slice(target);
        let out = perimeter(&args, None);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_no_secret("perimeter audit", &String::from_utf8_lossy(&out.stdout));
        json_lines(&out)
    };
    let served = audit(&["--server", &svc.base, "--token", &admin, "--limit", "1000"]);
    let actions: std::collections::BTreeSet<&str> = served
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains("events.search") && actions.contains("events.export"),
        "{actions:?}"
    );
    assert!(
        actions.iter().all(|a| a.starts_with("events.")),
        "{actions:?}"
    );
    let data_dir = data.to_str().unwrap();
    let local = audit(&[
        "--data-dir",
        data_dir,
        "--tenant",
        "acme",
        "--limit",
        "1000",
    ]);
    assert_eq!(local, served);
    let exports = audit(&["--data-dir", data_dir, "--tenant", "acme", "--limit", "1"]);
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0], served[0], "newest first");
    // A tenant with nothing stored still has its API use in the audit log (it was refused as
    // "no data" there).
    let out = perimeter(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "tokens",
            "create",
            "--tenant",
            "globex",
            "--role",
            "viewer",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let globex = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let r = client
        .get(format!(
            "{}/api/v1/events/search?q=CreateAccessKey",
            svc.base
        ))
        .bearer_auth(&globex)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let theirs = audit(&["--data-dir", data_dir, "--tenant", "globex"]);
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0]["tenant"], "globex", "{theirs:?}");
    // A tenant with neither data nor entries is still a misspelling to point out.
    let out = perimeter(
        &["audit", "--data-dir", data_dir, "--tenant", "globx"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_says(&out, "tenant globx has no data");
    // Through the server the token's tenant is read whatever `--tenant` says: said so.
    let out = perimeter(
        &[
            "audit", "--server", &svc.base, "--token", &admin, "--tenant", "globex", "--format",
            "json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stderr_says(&out, "--tenant globex is not used with --server");
    assert!(json_lines(&out).iter().all(|e| e["tenant"] == "acme"));
    stop(svc);
    let listed = dead_letters(&["--data-dir", data.to_str().unwrap()]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0]["line"].is_u64(), "{listed:?}");
    let (files, text) = parquet_text(&data).expect("no compaction runs here");
    assert!(
        files > 0 && text.contains("CreateAccessKey"),
        "parquet read back ({files} files)"
    );
    assert_no_secret("Parquet files", &text);
    // Raw bytes of every file (tantivy term dictionaries, journals, audit log, behavioural state).
    for path in crate::cli::walk(&data) {
        let bytes = std::fs::read(&path).unwrap();
        let lossy = String::from_utf8_lossy(&bytes);
        assert_no_secret(&path.display().to_string(), &lossy);
    }
}

#[test]
fn rule_tests_run_the_real_engine_and_name_the_posted_rule_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let client = reqwest::blocking::Client::new();
    let test = |body: serde_json::Value| {
        client
            .post(format!("{}/api/v1/rules/test", svc.base))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .unwrap()
    };
    let rule = "title: Okta login failure\nlogsource: {product: okta}\ndetection:\n  sel:\n    \
                eventType: user.session.start\n    outcome.result: FAILURE\n  condition: sel\n";
    let events: Vec<serde_json::Value> = (0..10).map(|i| okta_event(1, i)).collect();
    let r = test(serde_json::json!({"rule": rule, "events": events}));
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let body: serde_json::Value = r.json().unwrap();
    // okta_event fails every fifth login: events 0 and 5.
    assert_eq!(
        body["result"]["matched"],
        serde_json::json!([0, 5]),
        "{body}"
    );
    // A rule that does not compile: 422, naming the posted rule's line and field, not a
    // temporary file of the server's.
    let bad = rule.replace("eventType:", "eventType|bogus:");
    let r = test(serde_json::json!({"rule": bad, "events": events}));
    assert_eq!(r.status().as_u16(), 422);
    let body: serde_json::Value = r.json().unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("rule:5:") && message.contains("bogus"),
        "{message}"
    );
    // A misspelt logsource matches nothing; the answer says why.
    let r = test(serde_json::json!({"rule": rule.replace("okta}", "okat}"), "events": events}));
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["result"]["matched"], serde_json::json!([]), "{body}");
    let warning = body["result"]["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("okat") && warning.contains("okta"),
        "{body}"
    );
    // Records whose shape names no source: the advice is the request's `source` field (not the
    // CLI's `--source`), and naming it works.
    let plain = serde_json::json!([{"action": "login", "who": "alice"}]);
    let r = test(serde_json::json!({"rule": rule, "events": plain}));
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("events[0]:")
            && message.contains("\"source\"")
            && !message.contains("--source"),
        "{body}"
    );
    let r = test(serde_json::json!({"rule": rule, "events": plain, "source": "json"}));
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    // The Okta events under a named source: the answer, and which events matched.
    let under = |source: &str, matched: serde_json::Value| {
        let r = test(serde_json::json!({"rule": rule, "events": events, "source": source}));
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["result"]["matched"], matched, "{source}: {body}");
        body
    };
    under("okta", serde_json::json!([0, 5]));
    // Source names are taken in any case, as ingest takes them; a misspelt one reads the
    // events as plain JSON, which the Okta rule does not see: the answer says so.
    under("Okta", serde_json::json!([0, 5]));
    let body = under("otka", serde_json::json!([]));
    let warning = body["result"]["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("did you mean `okta`?"), "{body}");
    // An event that cannot be used is the request's fault, not the rule's.
    let r = test(serde_json::json!({"rule": rule, "events": [1, 2]}));
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "invalid_json", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[0]:"),
        "{body}"
    );
    stop(svc);
}

#[test]
fn the_served_openapi_document_has_the_ingest_route() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&write_config(dir.path()));
    let doc: serde_json::Value =
        reqwest::blocking::get(format!("{}/api/v1/openapi.json", svc.base))
            .unwrap()
            .json()
            .unwrap();
    let ingest = &doc["paths"]["/ingest/{source}"]["post"];
    for status in ["200", "400", "401", "403", "413", "503"] {
        assert!(
            ingest["responses"][status].is_object(),
            "{status}: {ingest}"
        );
    }
    assert_eq!(ingest["parameters"][0]["name"], "source", "{ingest}");
    // The answer's fields, as the route sends them.
    let ack = &doc["components"]["schemas"]["SubmitAck"]["properties"];
    for field in [
        "events",
        "duplicates",
        "dead_letters",
        "alerts",
        "dead_letter_lines",
    ] {
        assert!(ack[field].is_object(), "{field}: {ack}");
    }
    assert!(
        doc["components"]["schemas"]["DeadLetterLine"]["properties"]["reason"].is_object(),
        "{}",
        doc["components"]["schemas"]
    );
    // The API's own routes are still there.
    assert!(doc["paths"]["/api/v1/events/search"]["get"].is_object());
    // Ingest answers are counted with the API's: a shipper refused for its token shows.
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/ingest/okta", svc.base))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let metrics = svc.metrics();
    assert!(
        metrics.contains(
            "perimeter_api_requests_total{route=\"/ingest/{source}\",method=\"POST\",status=\"401\"} 1"
        ),
        "{metrics}"
    );
    // Failure counters are there at 0 before any failure (an alert on their increase sees the
    // first one).
    for zero in [
        "perimeter_store_batches_failed_total 0",
        "perimeter_state_snapshots_failed_total 0",
        "perimeter_api_connections_refused_total 0",
        "perimeter_rule_reloads_failed_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == zero), "{zero}: {metrics}");
    }
    stop(svc);
}

/// A `[[poll]]` table that cannot work stops `run` before the data directory is touched.
#[test]
fn a_poll_table_that_cannot_work_stops_run_before_the_store_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with(
        dir.path(),
        "[[poll]]\nname = \"okta\"\nvendor = \"okta\"\nbase_url = \"https://acme.okta.example\"\ntoken = \"env:HOME\"\nlate_records_minutes = 60\n",
    );
    let out = perimeter(&["--config", cfg.to_str().unwrap(), "run"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_says(&out, "late_records_minutes");
    assert!(!dir.path().join("data").exists(), "the store was opened");
}

#[test]
fn a_busy_port_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let cfg = write_config(dir.path());
    let out = perimeter(
        &["--config", cfg.to_str().unwrap(), "run", "--listen", &addr],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains(&format!("cannot listen on {addr}")), "{line}");
    // The cause once, not once per layer of the error chain.
    assert_eq!(line.matches("in use").count(), 1, "{line}");
}

/// A Sigma rule on Okta records.
fn okta_rule(id: &str, title: &str, detection: &str) -> String {
    format!(
        "title: {title}\nid: {id}\nlogsource:\n    product: okta\ndetection:\n{detection}\nlevel: high\n"
    )
}

/// A config for tenant `acme` whose rules are the directory `dir/rules`, holding `rules` (file
/// name, text).
fn config_with_rules(dir: &std::path::Path, rules: &[(&str, String)]) -> std::path::PathBuf {
    let rule_dir = dir.join("rules");
    std::fs::create_dir_all(&rule_dir).unwrap();
    for (name, text) in rules {
        std::fs::write(rule_dir.join(name), text).unwrap();
    }
    let cfg = dir.join("perimeter.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\ntenant = \"acme\"\nrules = [{:?}]\n[api]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("data"),
            rule_dir
        ),
    )
    .unwrap();
    cfg
}

/// A config whose one rule (`id`) fires on every Okta login.
fn any_login_config(dir: &std::path::Path, id: &str) -> std::path::PathBuf {
    config_with_rules(
        dir,
        &[("logins.yml", okta_rule(id, "Any Okta login", ANY_LOGIN))],
    )
}

/// [`any_login_config`] with a mask key of the deployment's own (the detection state then
/// includes the replay window).
fn keyed_any_login_config(dir: &std::path::Path, id: &str) -> std::path::PathBuf {
    let cfg = any_login_config(dir, id);
    let key = dir.join("mask.key");
    std::fs::write(&key, "a deployment's own mask key").unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}[mask]\nhmac_key = \"file:{}\"\n", key.display()),
    )
    .unwrap();
    cfg
}

/// The detection of a rule that fires on every Okta login.
const ANY_LOGIN: &str = "    sel:\n        eventType: user.session.start\n    condition: sel";

#[test]
fn sighup_reloads_the_rules_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    let rule = okta_rule;
    let cfg = config_with_rules(
        dir.path(),
        &[(
            "never.yml",
            rule(
                "3f1c2a44-0000-4000-8000-000000000001",
                "Never",
                "    sel:\n        eventType: no.such.event\n    condition: sel",
            ),
        )],
    );
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let client = reqwest::blocking::Client::new();
    let listed = || -> usize {
        let body: serde_json::Value = client
            .get(format!("{}/api/v1/rules", svc.base))
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .json()
            .unwrap();
        // The behavioural detectors are listed too; count the rules.
        let rules = body["rules"].as_array().unwrap();
        rules.iter().filter(|r| r["kind"] != "ueba").count()
    };
    let ingest = |i: usize| -> serde_json::Value {
        client
            .post(format!("{}/ingest/okta", svc.base))
            .bearer_auth(&admin)
            .body(okta_event(9, i).to_string())
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let hangup = || unsafe {
        assert_eq!(libc::kill(svc.child.id() as i32, libc::SIGHUP), 0);
    };
    assert_eq!(listed(), 1);
    assert_eq!(ingest(1)["alerts"], 0);
    // A new rule, then SIGHUP: listed, and it fires on the next batch; no restart.
    std::fs::write(
        rules.join("logins.yml"),
        rule(
            "3f1c2a44-0000-4000-8000-000000000002",
            "Any Okta login",
            ANY_LOGIN,
        ),
    )
    .unwrap();
    hangup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while listed() != 2 {
        assert!(Instant::now() < deadline, "the new rule was never listed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ack = ingest(2);
    assert_eq!(ack["alerts"], 1, "{ack}");
    // A broken rule (and the login rule removed): nothing is reloaded, the rules in use stay,
    // the service keeps running. A partial reload would list 1 rule and raise no alert.
    std::fs::remove_file(rules.join("logins.yml")).unwrap();
    std::fs::write(
        rules.join("broken.yml"),
        rule(
            "3f1c2a44-0000-4000-8000-000000000003",
            "Broken",
            "    sel:\n        eventType|bogus: x\n    condition: sel",
        ),
    )
    .unwrap();
    hangup();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(listed(), 2);
    let ack = ingest(3);
    assert_eq!(ack["alerts"], 1, "the reloaded rules still run: {ack}");
    svc.assert_metrics(&[
        "perimeter_rules_loaded 2",
        "perimeter_rule_reloads_failed_total 1",
        "perimeter_rule_files_failed 0",
    ]);
    stop(svc);
    // Started with the broken file: the others run, and the file left out is a metric too.
    let svc = start(&cfg);
    svc.assert_metrics(&["perimeter_rules_loaded 1", "perimeter_rule_files_failed 1"]);
    stop(svc);
}

/// With `--log-format json` every line on stderr is a JSON object, the reload's too (it was a
/// bare `perimeter: rules reloaded (...)` line, which log collectors reject).
#[test]
fn a_rule_reload_is_logged_as_json_with_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = any_login_config(dir.path(), "3f1c2a44-0000-4000-8000-000000000010");
    let log = dir.path().join("stderr.log");
    let svc = spawn_run_logging(&cfg, std::fs::File::create(&log).unwrap().into(), "json");
    // A rule added for the reload whose product is misspelt: warned about as at a start.
    std::fs::write(
        dir.path().join("rules/misspelt.yml"),
        okta_rule(
            "3f1c2a44-0000-4000-8000-000000000011",
            "Misspelt product",
            ANY_LOGIN,
        )
        .replace("product: okta", "product: okat"),
    )
    .unwrap();
    unsafe {
        assert_eq!(libc::kill(svc.child.id() as i32, libc::SIGHUP), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("rules reloaded")
    {
        assert!(Instant::now() < deadline, "no reload logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(svc);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = json_log_lines(&text);
    let reloaded: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "rules reloaded (2 rules in use)")
        .collect();
    assert_eq!(reloaded.len(), 1, "{text}");
    assert_eq!(reloaded[0]["level"], "INFO", "{}", reloaded[0]);
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("okat") && m.contains("okta"))),
        "{text}"
    );
}

/// QA: a mapping added after the start was thought live after a SIGHUP (which reloads the
/// rules and the certificate only), while its vendor's records went on being stored as plain
/// JSON. The reload says that the mappings changed and take a restart.
#[test]
fn a_reload_says_when_the_mappings_changed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = any_login_config(dir.path(), "3f1c2a44-0000-4000-8000-000000000010");
    let maps = dir.path().join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("mappings_dir = {maps:?}\n{text}")).unwrap();
    let log = dir.path().join("stderr.log");
    let svc = start_with_stderr(&cfg, std::fs::File::create(&log).unwrap().into());
    let reload = |times: usize| {
        unsafe {
            assert_eq!(libc::kill(svc.child.id() as i32, libc::SIGHUP), 0);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&log)
            .unwrap()
            .matches("rules reloaded")
            .count()
            < times
        {
            assert!(Instant::now() < deadline, "no reload logged");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&log).unwrap()
    };
    let said = "the mappings changed since the start";
    assert!(!reload(1).contains(said));
    std::fs::write(maps.join("acme_crm.toml"), "# a new vendor's mapping\n").unwrap();
    assert!(reload(2).contains(said));
    stop(svc);
}

/// A deploy that empties the rules directory before writing the new rules, then a SIGHUP in
/// between: the reload used to succeed with no rules, switching detection off (and dropping the
/// open correlation windows) without a word in any answer.
#[test]
fn a_reload_onto_an_emptied_rules_directory_keeps_the_rules_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = any_login_config(dir.path(), "3f1c2a44-0000-4000-8000-000000000010");
    let admin = token(&cfg, "admin");
    let log = dir.path().join("stderr.log");
    let svc = start_with_stderr(&cfg, std::fs::File::create(&log).unwrap().into());
    let client = reqwest::blocking::Client::new();
    let ingest = |i: usize| -> serde_json::Value {
        client
            .post(format!("{}/ingest/okta", svc.base))
            .bearer_auth(&admin)
            .body(okta_event(9, i).to_string())
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    assert_eq!(ingest(1)["alerts"], 1);
    let rules_dir = dir.path().join("rules");
    std::fs::remove_file(rules_dir.join("logins.yml")).unwrap();
    unsafe {
        assert_eq!(libc::kill(svc.child.id() as i32, libc::SIGHUP), 0);
    }
    // The refusal is counted as a failed reload (the only sign the reload was handled).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = svc.metrics();
        if metrics
            .lines()
            .any(|l| l == "perimeter_rule_reloads_failed_total 1")
        {
            assert!(
                metrics.lines().any(|l| l == "perimeter_rules_loaded 1"),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reload onto no rules was not refused: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let body: serde_json::Value = client
        .get(format!("{}/api/v1/rules", svc.base))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let listed: Vec<&serde_json::Value> = body["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] != "ueba")
        .collect();
    assert_eq!(listed.len(), 1, "{body}");
    let ack = ingest(2);
    assert_eq!(ack["alerts"], 1, "the rules in use still run: {ack}");
    // The log says why, and names the directory.
    let text = std::fs::read_to_string(&log).unwrap();
    let refusal = text
        .lines()
        .find(|l| l.contains("rules not reloaded"))
        .unwrap_or_else(|| panic!("no refusal in the log: {text}"));
    assert!(
        refusal.contains("no rules") && refusal.contains(rules_dir.to_str().unwrap()),
        "{refusal}"
    );
    stop(svc);
}

/// SIGHUP used to reload the rules only: a renewed certificate was served once the file checks
/// (`tls_reload_check_seconds`) saw it, and never with them off. It now loads the certificate
/// too, with the checks of a start: a refused one is counted and the served one stays.
#[test]
fn sighup_reloads_the_tls_certificate_and_keeps_the_served_one_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let write = |c: &rcgen::CertifiedKey| crate::certs::write_pem(c, &cert_path, &key_path);
    let made = crate::certs::self_signed;
    let first = made(&|_| {});
    write(&first);
    // No file checks: only SIGHUP reloads.
    let cfg = write_config_with(
        dir.path(),
        &format!(
            "tls_cert_path = {cert_path:?}\ntls_key_path = {key_path:?}\ntls_reload_check_seconds = 0\n"
        ),
    );
    let svc = spawn_run(&cfg, Stdio::null());
    // The certificates name localhost, not the address.
    let base = svc.base.replace("127.0.0.1", "localhost");
    assert!(base.starts_with("https://localhost:"), "{base}");
    let trusting = |c: &rcgen::CertifiedKey| {
        reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(c.cert.pem().as_bytes()).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let served_by = |c: &rcgen::CertifiedKey| {
        trusting(c)
            .get(format!("{base}/healthz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    };
    let reloads = |c: &rcgen::CertifiedKey, result: &str| -> f64 {
        let text = trusting(c)
            .get(format!("{base}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let name = format!("perimeter_tls_certificate_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    let until = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let hangup = || unsafe {
        assert_eq!(libc::kill(svc.child.id() as i32, libc::SIGHUP), 0);
    };
    until("the first certificate is served", &|| served_by(&first));

    let renewed = made(&|p| p.not_after = rcgen::date_time_ymd(2099, 6, 30));
    write(&renewed);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(served_by(&first), "without SIGHUP, nothing is reloaded");
    hangup();
    until("the renewed certificate is served after SIGHUP", &|| {
        served_by(&renewed)
    });
    assert!(
        !served_by(&first),
        "the old certificate is no longer served"
    );
    assert_eq!(reloads(&renewed, "ok"), 1.0);

    // An expired renewal: refused and counted, the renewed certificate stays served.
    let expired = made(&|p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    write(&expired);
    hangup();
    until("the refused reload is counted", &|| {
        reloads(&renewed, "failed") == 1.0
    });
    assert!(served_by(&renewed), "the certificate in use stays");
    assert_eq!(reloads(&renewed, "ok"), 1.0);
    stop(svc);
}

/// SIGTERM while ingest batches are being stored: each client whose batch was stored is
/// answered 200, however long past the grace period (0 s here) the store takes; one that is not
/// answered had nothing stored. They used to be cut off at the end of the grace period while
/// the pipeline went on to store their batches.
#[test]
fn sigterm_answers_the_ingest_batches_it_stores() {
    const BATCHES: usize = 4;
    const EVENTS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with(dir.path(), "shutdown_grace_seconds = 0\n");
    let responder = token(&cfg, "responder");
    let svc = start(&cfg);
    let senders: Vec<_> = (0..BATCHES)
        .map(|b| {
            let url = format!("{}/ingest/okta", svc.base);
            let responder = responder.clone();
            std::thread::spawn(move || {
                let body: String = (0..EVENTS)
                    .map(|i| format!("{}\n", okta_event(100 + b, i)))
                    .collect();
                let answer = reqwest::blocking::Client::new()
                    .post(url)
                    .bearer_auth(responder)
                    .timeout(Duration::from_secs(300))
                    .body(body)
                    .send()
                    .and_then(|r| Ok((r.status().as_u16(), r.json::<serde_json::Value>()?)));
                answer.map_err(|e| e.to_string())
            })
        })
        .collect();
    // Once one batch is stored, the others are queued behind it or being stored.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !svc
        .metrics()
        .lines()
        .any(|l| l.starts_with("perimeter_events_stored_total"))
    {
        assert!(Instant::now() < deadline, "no batch was ever stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(svc);
    let answers: Vec<_> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let mut acknowledged = 0;
    for answer in &answers {
        if let Ok((200, ack)) = answer {
            assert_eq!(ack["events"], EVENTS, "{ack}");
            acknowledged += EVENTS;
        }
    }
    let out = perimeter(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "search",
            "*",
            "--limit",
            &(BATCHES * EVENTS + 1).to_string(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(
        stored, acknowledged,
        "events stored but not acknowledged, or acknowledged but not stored: {answers:?}"
    );
    assert!(acknowledged > 0, "{answers:?}");
}

/// A key repeated in an ingested record is stored with its last value only, the one the rules
/// saw: a search for the first value finds nothing, the stored event shows the last, and the
/// secret under the first of two `password` keys is in no file of the store.
#[test]
fn a_repeated_key_is_stored_with_the_value_the_rules_saw() {
    let dir = tempfile::tempdir().unwrap();
    let rule = okta_rule(
        "3c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
        "Factor removed",
        "    selection:\n        eventType: user.mfa.factor.deactivate\n    condition: selection\n",
    );
    let cfg = config_with_rules(dir.path(), &[("factor.yml", rule)]);
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let mut record = okta_event(12, 1);
    record["displayMessage"] = "Xqfirstword".into();
    record["debugContext"] = serde_json::json!({"debugData": {"password": "Hx7qFirstSecret"}});
    // serde_json keeps one value per key: the repeats are written into the text.
    let text = record.to_string();
    let line = format!(
        "{},\"displayMessage\":\"Zqlastword\",\"debugContext\":{{\"debugData\":{{\"password\":\"x\"}}}},\
         \"eventType\":\"user.mfa.factor.deactivate\"}}\n",
        text.strip_suffix('}').unwrap()
    );
    let ack: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{}/ingest/okta", svc.base))
        .bearer_auth(&admin)
        .body(line)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (ack["events"].clone(), ack["alerts"].clone()),
        (1.into(), 1.into()),
        "{ack}"
    );
    let search = |q: &str| searched_events(&svc.base, &admin, q);
    assert!(search("Xqfirstword").is_empty());
    let found = search("Zqlastword");
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0]["event"]["action"], "user.mfa.factor.deactivate",
        "{}",
        found[0]
    );
    assert_eq!(found[0]["raw"]["eventType"], "user.mfa.factor.deactivate");
    assert!(!found[0].to_string().contains("Hx7q"), "{}", found[0]);
    stop(svc);
    for path in crate::cli::walk(dir.path()) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(8).any(|w| w == b"Hx7qFirs"),
            "{}",
            path.display()
        );
    }
    let (_, parquet) = parquet_text(dir.path()).expect("parquet files");
    assert!(parquet.contains("Zqlastword") && !parquet.contains("Xqfirstword"));
}

#[test]
fn a_resent_bad_line_is_not_counted_as_a_new_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let body = format!("{}\nnot json at all\n", okta_event(11, 1));
    let send = || -> serde_json::Value {
        reqwest::blocking::Client::new()
            .post(format!("{}/ingest/okta", svc.base))
            .bearer_auth(&admin)
            .body(body.clone())
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let first = send();
    assert_eq!(first["dead_letters"], 1);
    // Which line failed, and why: also in the answer to the resend, which stores nothing.
    for answer in [first, send()] {
        let lines = answer["dead_letter_lines"].as_array().unwrap();
        assert_eq!(lines.len(), 1, "{answer}");
        assert_eq!(lines[0]["line"], 2, "{answer}");
        assert!(
            lines[0]["reason"].as_str().unwrap().contains("JSON"),
            "{answer}"
        );
    }
    assert_eq!(send()["dead_letters"], 0, "stored once");
    // It was counted at each sending: the metric disagreed with the store and the answers.
    svc.assert_metrics(&["perimeter_dead_letters_total{source=\"okta\"} 1"]);
    stop(svc);
}

#[test]
fn the_dead_letter_source_filter_ignores_case_in_the_api_and_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let client = reqwest::blocking::Client::new();
    let ack: serde_json::Value = client
        .post(format!("{}/ingest/okta", svc.base))
        .bearer_auth(&admin)
        .body(format!("{}\nnot json at all\n", okta_event(12, 1)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ack["dead_letters"], 1, "{ack}");
    let api = |source: &str| -> usize {
        let body: serde_json::Value = client
            .get(format!("{}/api/v1/dead-letters", svc.base))
            .query(&[("source", source)])
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .json()
            .unwrap();
        body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .len()
    };
    assert_eq!((api("okta"), api("OKTA"), api("Okta")), (1, 1, 1));
    assert_eq!(api("github"), 0);
    let terminal = |target: &[&str]| -> usize {
        let mut args = vec!["dead-letters", "--source", "OKTA", "--format", "json"];
        args.extend_from_slice(target);
        let out = perimeter(&args, None);
        assert!(out.status.success(), "{}", stderr(&out));
        json_lines(&out).len()
    };
    assert_eq!(terminal(&["--server", &svc.base, "--token", &admin]), 1);
    stop(svc);
    let data = dir.path().join("data");
    let local = ["--data-dir", data.to_str().unwrap(), "--tenant", "acme"];
    assert_eq!(terminal(&local), 1);
}

#[test]
fn a_rule_switched_off_raises_no_alerts_for_the_tenant_or_the_entity_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = "3f1c2a44-0000-4000-8000-000000000010";
    let cfg = any_login_config(dir.path(), id);
    let admin = token(&cfg, "admin");
    let client = reqwest::blocking::Client::new();
    let ingest = |svc: &Service, i: usize| -> serde_json::Value {
        client
            .post(format!("{}/ingest/okta", svc.base))
            .bearer_auth(&admin)
            .body(okta_event(11, i).to_string())
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let switch = |svc: &Service, args: &[&str]| {
        let mut all = vec!["rules"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[id, "--server", &svc.base, "--token", &admin]);
        let out = perimeter(&all, None);
        assert!(out.status.success(), "{}", stderr(&out));
        json_lines(&out).remove(0)
    };
    let svc = start(&cfg);
    assert_eq!(ingest(&svc, 1)["alerts"], 1);
    let rule = switch(
        &svc,
        &["disable", "--reason", "noisy during the SSO migration"],
    );
    assert_eq!(rule["enabled"], false, "{rule}");
    let ack = ingest(&svc, 2);
    assert_eq!(
        (ack["events"].clone(), ack["alerts"].clone()),
        (1.into(), 0.into()),
        "{ack}"
    );
    // Events in and out per source: both were stored.
    svc.assert_metrics(&[
        "perimeter_events_received_total{source=\"okta\"} 2",
        "perimeter_events_stored_total{source=\"okta\"} 2",
        &format!("perimeter_alerts_switched_off_total{{rule=\"{id}\"}} 1"),
    ]);
    stop(svc);

    // The switch was persisted: still off after a restart, back on when switched on.
    let svc = start(&cfg);
    assert_eq!(ingest(&svc, 3)["alerts"], 0);
    assert_eq!(switch(&svc, &["enable"])["enabled"], true);
    assert_eq!(ingest(&svc, 4)["alerts"], 1);
    // Off for one user only, for a day: the others still raise it.
    let rule = switch(
        &svc,
        &[
            "disable",
            "--entity",
            "user5@acme.example",
            "--until",
            "now+1d",
            "--reason",
            "load test account",
        ],
    );
    assert!(
        rule["switched_off_for"]["user5@acme.example"]["until"].is_string(),
        "{rule}"
    );
    assert_eq!(ingest(&svc, 5)["alerts"], 0);
    assert_eq!(ingest(&svc, 6)["alerts"], 1);
    // What is switched off, from the terminal (any role may look).
    let viewer = token(&cfg, "viewer");
    let out = perimeter(
        &[
            "rules", "list", "--off", "--format", "json", "--server", &svc.base, "--token", &viewer,
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let off = json_lines(&out);
    assert_eq!(off.len(), 1, "{off:?}");
    assert_eq!(
        (
            off[0]["id"].as_str(),
            &off[0]["enabled"],
            &off[0]["off_for_entities"]
        ),
        (Some(id), &true.into(), &1.into())
    );
    // A viewer cannot switch rules: the server's 403 is the command's error.
    let out = perimeter(
        &[
            "rules", "disable", id, "--reason", "x", "--server", &svc.base, "--token", &viewer,
        ],
        None,
    );
    assert!(!out.status.success());
    assert_stderr_says(&out, "403");
    // Triage in bulk: the alerts `perimeter alerts` lists, piped into `perimeter triage -`,
    // plus an id that does not exist (reported; the others are still changed).
    let listed = perimeter(
        &[
            "alerts", "--server", &svc.base, "--token", &admin, "--format", "json",
        ],
        None,
    );
    assert!(listed.status.success(), "{}", stderr(&listed));
    let mut input = listed.stdout.clone();
    input.extend_from_slice(b"\nno-such-alert\n");
    let out = perimeter(
        &[
            "triage", "-", "--status", "resolved", "--server", &svc.base, "--token", &admin,
        ],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_stderr_says(&out, "3 of 4 alerts changed, 1 failed");
    let statuses: Vec<serde_json::Value> = json_lines(&out)
        .iter()
        .map(|r| r["alert"]["status"].clone())
        .collect();
    assert_eq!(statuses, vec!["resolved"; 3]);
    stop(svc);
}

#[test]
fn alerts_of_a_batch_the_store_failed_to_write_are_stored_with_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let id = "3f1c2a44-0000-4000-8000-000000000020";
    let cfg = any_login_config(dir.path(), id);
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let client = reqwest::blocking::Client::new();
    let ingest = || {
        client
            .post(format!("{}/ingest/okta", svc.base))
            .bearer_auth(&admin)
            .body(okta_event(12, 1).to_string())
            .send()
            .unwrap()
    };
    // The tenant's alert journal cannot be created: the batch is not stored.
    let blocker = block_alert_journal(dir.path());
    let failed = ingest();
    assert_eq!(failed.status().as_u16(), 503);
    let body: serde_json::Value = failed.json().unwrap();
    assert_eq!(body["error"]["code"], "not_stored", "{body}");
    let text = svc.metrics();
    assert!(
        text.lines()
            .any(|l| l == "perimeter_store_batches_failed_total 1"),
        "{text}"
    );
    // The disk is fixed and the source resends: the events were already detected (the resend
    // is passed on without detecting it again), and the alert they raised is stored now.
    std::fs::remove_file(&blocker).unwrap();
    let ack: serde_json::Value = ingest().json().unwrap();
    assert_eq!(ack["alerts"], 0, "not detected twice: {ack}");
    assert_one_alert_of(&svc, &admin, id);
    // Counted once, with the batch that raised it, not again when it was stored later.
    let text = svc.metrics();
    let line = format!("perimeter_alerts_total{{rule=\"{id}\"}} 1");
    assert!(text.lines().any(|l| l == line), "no `{line}` in {text}");
    stop(svc);
}

/// Make tenant `acme`'s alert journal impossible to create (a file where its directory goes),
/// so every batch fails to store; remove the returned path to repair it.
fn block_alert_journal(dir: &std::path::Path) -> std::path::PathBuf {
    let blocker = dir.join("data/alerts/tenant=acme");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, "").unwrap();
    blocker
}

/// The tenant holds exactly one alert, of rule `id`.
fn assert_one_alert_of(svc: &Service, token: &str, id: &str) {
    let alerts: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/alerts", svc.base))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let items = alerts["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{alerts}");
    assert_eq!(items[0]["alert"]["rule_id"], id);
}

/// A config whose rules count logins from one address: 3 within an hour raise an alert.
fn logins_from_one_address_config(dir: &std::path::Path) -> std::path::PathBuf {
    let rules = format!(
        "{}name: any_login\n---\ntitle: Logins from one address\nid: 3f1c2a44-0000-4000-8000-000000000011\n\
         correlation:\n    type: event_count\n    rules:\n        - any_login\n    group-by:\n\
         \x20       - client.ipAddress\n    timespan: 1h\n    condition:\n        gte: 3\nlevel: high\n",
        okta_rule("3f1c2a44-0000-4000-8000-000000000010", "Any Okta login", ANY_LOGIN)
    );
    config_with_rules(dir, &[("burst.yml", rules)])
}

/// POST login `i` (of `okta_event(5, i)`) to the service; its answer.
fn ingest_login(svc: &Service, admin: &str, i: usize) -> serde_json::Value {
    ingest_login_as(svc, admin, "okta", i)
}

/// The answer to a resent login: stored already, and not detected again.
fn assert_resent_quietly(ack: &serde_json::Value) {
    assert_eq!(
        (ack["duplicates"].clone(), ack["alerts"].clone()),
        (1.into(), 0.into()),
        "{ack}"
    );
}

/// [`ingest_login`] under source name `source`.
fn ingest_login_as(svc: &Service, admin: &str, source: &str, i: usize) -> serde_json::Value {
    reqwest::blocking::Client::new()
        .post(format!("{}/ingest/{source}", svc.base))
        .bearer_auth(admin)
        .body(okta_event(5, i).to_string())
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// A rule that matches one user again and again is one alert to triage: its repeats within
/// the hour are counted into it (`count`, `last_seen`) and not sent on their own; other
/// users' matches stay alerts of their own. When the count passes 10 the alert is sent again,
/// marked still firing.
#[test]
fn repeats_of_a_rule_for_one_user_are_one_alert_counted_and_sent_again_past_ten() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = any_login_config(dir.path(), "3f1c2a44-0000-4000-8000-000000000020");
    let admin = token(&cfg, "admin");
    let hook = WebhookReceiver::start(0);
    let svc = start(&cfg);
    add_destination(&svc.base, &admin, &hook.url());
    let post = |logins: &[usize]| -> serde_json::Value {
        let body: String = logins
            .iter()
            .map(|i| format!("{}\n", okta_event(5, *i)))
            .collect();
        reqwest::blocking::Client::new()
            .post(format!("{}/ingest/okta", svc.base))
            .bearer_auth(&admin)
            .body(body)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    // user0 logs in at :00, :40 and :20 past the hour (logins 0, 40, 80); user1 once.
    let ack = post(&[0, 40, 80, 1]);
    assert_eq!(ack["alerts"], 4, "every match is detected: {ack}");
    assert_eq!(ack["alerts_grouped"], 2, "{ack}");
    let first: serde_json::Value =
        serde_json::from_str(&hook.wait_for_body(Duration::from_secs(20))).unwrap();
    assert_eq!(first["alerts"].as_array().map(Vec::len), Some(2), "{first}");
    // user0's alert goes out as its own batch grew it (3), not as it was raised (1).
    let mut counts: Vec<u64> = first["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["count"].as_u64().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 3], "{first}");
    // user0 again, in a later batch and within the hour: counted, not sent.
    let ack = post(&[120]);
    assert_eq!(
        (ack["alerts"].clone(), ack["alerts_grouped"].clone()),
        (1.into(), 1.into()),
        "{ack}"
    );
    assert_eq!(ack["alerts_still_firing"], 0, "{ack}");
    let alerts: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/alerts?limit=10", svc.base))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let items = alerts["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{alerts}");
    let by_count: HashMap<u64, &serde_json::Value> = items
        .iter()
        .map(|r| (r["alert"]["count"].as_u64().unwrap(), r))
        .collect();
    let grouped = by_count[&4];
    assert_eq!(grouped["alert"]["event_ids"].as_array().unwrap().len(), 4);
    let last_login = okta_event(5, 40)["published"].as_str().unwrap().to_string();
    let last_seen = chrono::DateTime::parse_from_rfc3339(grouped["last_seen"].as_str().unwrap());
    assert_eq!(
        last_seen.unwrap(),
        chrono::DateTime::parse_from_rfc3339(&last_login).unwrap(),
        "{grouped}"
    );
    assert!(by_count[&1]["last_seen"].is_null());
    assert!(svc
        .metrics()
        .lines()
        .any(|l| l == "perimeter_alerts_grouped_total 3"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hook.bodies().len(),
        1,
        "a repeat was sent: {:?}",
        hook.bodies()
    );
    // Six more of user0 take the alert from 4 to 10: sent again, as it is now.
    let ack = post(&[160, 200, 240, 280, 320, 360]);
    assert_eq!(ack["alerts_grouped"], 6, "{ack}");
    assert_eq!(ack["alerts_still_firing"], 1, "{ack}");
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while hook.bodies().len() < 2 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let again: serde_json::Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(again["still_firing"], true, "{again}");
    let alerts = again["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{again}");
    assert_eq!(alerts[0]["id"], grouped["alert"]["id"], "{again}");
    assert_eq!(alerts[0]["count"], 10, "{again}");
    assert!(first.get("still_firing").is_none(), "{first}");
    assert!(svc
        .metrics()
        .lines()
        .any(|l| l == "perimeter_alerts_still_firing_total 1"));
    stop(svc);
}

/// A restart used to drop every open correlation window, so a burst spread over a deploy was
/// missed. The windows are snapshotted on shutdown (masked, keyed hashes) and restored on start.
#[test]
fn an_open_correlation_window_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = logins_from_one_address_config(dir.path());
    let admin = token(&cfg, "admin");
    let ingest = |svc: &Service, i: usize| ingest_login(svc, &admin, i);
    // Logins 1, 201 and 401 come from one address within the hour (13:01, 13:21, 13:41).
    let svc = start(&cfg);
    assert_eq!(ingest(&svc, 1)["alerts"], 0);
    assert_eq!(ingest(&svc, 201)["alerts"], 0);
    let metrics = svc.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l == "perimeter_correlation_open_windows 1"),
        "{metrics}"
    );
    stop(svc);
    let snapshot = dir.path().join("data/state/correlation.snapshot");
    let bytes = std::fs::read(&snapshot).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("198.51.100"),
        "a clear group-by value: {text}"
    );
    let svc = start(&cfg);
    // The restored window shows in the metrics before any batch (QA: the series were absent
    // until the first one).
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut metrics = svc.metrics();
    while !metrics
        .lines()
        .any(|l| l == "perimeter_correlation_open_windows 1")
        && std::time::Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(50));
        metrics = svc.metrics();
    }
    assert!(
        metrics
            .lines()
            .any(|l| l == "perimeter_correlation_open_windows 1"),
        "{metrics}"
    );
    let ack = ingest(&svc, 401);
    assert_eq!(
        ack["alerts"], 1,
        "the third login completes the window: {ack}"
    );
    stop(svc);
}

/// Killed with SIGKILL right after two logins were acknowledged (no periodic snapshot yet): the
/// windows written after each stored batch come back, and a login sent again after the restart
/// is not counted twice.
#[test]
fn an_open_correlation_window_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = logins_from_one_address_config(dir.path());
    let admin = token(&cfg, "admin");
    let mut svc = start(&cfg);
    assert_eq!(ingest_login(&svc, &admin, 1)["alerts"], 0);
    assert_eq!(ingest_login(&svc, &admin, 201)["alerts"], 0);
    // The snapshot follows the answer; the answer to the next batch (the same login again, which
    // changes nothing) means it is written. A kill between the two loses the last batch's count.
    assert_eq!(ingest_login(&svc, &admin, 201)["duplicates"], 1);
    svc.child.kill().unwrap(); // SIGKILL
    svc.child.wait().unwrap();
    let svc = start(&cfg);
    // Resent (as a source does when unsure): stored once, and still two logins in the window.
    let again = ingest_login(&svc, &admin, 201);
    assert_resent_quietly(&again);
    let ack = ingest_login(&svc, &admin, 401);
    assert_eq!(
        ack["alerts"], 1,
        "the third login completes the window: {ack}"
    );
    stop(svc);
}

/// The periodic snapshot (here every second) is skipped for batches that change nothing, and a
/// snapshot that cannot be written is counted, not only logged.
#[test]
fn state_snapshots_skip_unchanged_state_and_count_failures() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = any_login_config(dir.path(), "3f1c2a44-0000-4000-8000-000000000030");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("state_snapshot_seconds = 1\n{text}")).unwrap();
    let admin = token(&cfg, "admin");
    let ueba = dir.path().join("data/state/ueba.snapshot");
    let modified = || std::fs::metadata(&ueba).and_then(|m| m.modified()).ok();
    let svc = start(&cfg);
    // Snapshots are written after a batch or, idle, when the ticker wakes the worker, once the
    // interval is over: two seconds and a half see the state written if it changed.
    let settled = || {
        std::thread::sleep(Duration::from_millis(2500));
        modified()
    };
    assert_eq!(ingest_login(&svc, &admin, 1)["events"], 1);
    let written = settled().expect("snapshot written");
    // Sent again: stored once, not detected again, so the state is unchanged: no rewrite.
    assert_eq!(ingest_login(&svc, &admin, 1)["duplicates"], 1);
    assert_eq!(settled(), Some(written));
    ingest_login(&svc, &admin, 3);
    assert_ne!(settled(), Some(written), "a new login changes the state");
    // A snapshot that fails (its temp file's place taken by a directory) is counted.
    std::fs::create_dir(dir.path().join("data/state/ueba.snapshot.tmp")).unwrap();
    ingest_login(&svc, &admin, 4);
    settled();
    let metrics = svc.metrics();
    let failed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("perimeter_state_snapshots_failed_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failed >= 1, "{metrics}");
    std::fs::remove_dir(dir.path().join("data/state/ueba.snapshot.tmp")).unwrap();
    stop(svc);
}

/// A source that got no answer before a restart resends: the events the saved state counted are
/// not detected again after the restart, because the replay window is saved with that state
/// (with a configured mask key; the built-in one is public and keeps the window in memory only).
#[test]
fn an_event_resent_after_a_restart_is_not_detected_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = keyed_any_login_config(dir.path(), "3f1c2a44-0000-4000-8000-000000000040");
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    assert_eq!(ingest_login(&svc, &admin, 1)["alerts"], 1);
    stop(svc);
    assert!(dir.path().join("data/state/replay.snapshot").exists());
    let svc = start(&cfg);
    let again = ingest_login(&svc, &admin, 1);
    assert_resent_quietly(&again);
    assert_eq!(ingest_login(&svc, &admin, 2)["alerts"], 1, "a new login is");
    stop(svc);
}

/// The detection state is saved while no input comes too: a batch followed by a quiet spell
/// and a `kill -9` is not detected again when its source resends it.
#[test]
fn an_idle_pipeline_still_saves_its_detection_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = keyed_any_login_config(dir.path(), "3f1c2a44-0000-4000-8000-000000000041");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("state_snapshot_seconds = 1\n{text}")).unwrap();
    let admin = token(&cfg, "admin");
    let mut svc = start(&cfg);
    assert_eq!(ingest_login(&svc, &admin, 1)["alerts"], 1);
    assert_eq!(ingest_login(&svc, &admin, 2)["alerts"], 1);
    std::thread::sleep(Duration::from_millis(3500));
    svc.child.kill().unwrap();
    svc.child.wait().unwrap();
    let svc = start(&cfg);
    assert_resent_quietly(&ingest_login(&svc, &admin, 2));
    stop(svc);
}

/// Records sent in under a source name no normalizer knows are stored as plain JSON under that
/// name: right for a vendor only rules know, a silent detection gap for a typo. The answer says
/// so (and a near name), the log says it once.
#[test]
fn ingest_under_an_unknown_source_name_is_answered_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = any_login_config(dir.path(), "3f1c2a44-0000-4000-8000-000000000050");
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let post = |source: &str| ingest_login_as(&svc, &admin, source, 1);
    let typo = post("otka");
    assert_eq!(
        (typo["events"].clone(), typo["alerts"].clone()),
        (1.into(), 0.into()),
        "{typo}"
    );
    let warning = typo["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("no normalizer for source `otka`")
            && warning.contains("did you mean `okta`?"),
        "{typo}"
    );
    let known = post("okta");
    assert_eq!(known["alerts"], 1, "{known}");
    assert!(known.get("warnings").is_none(), "{known}");
    // Source names are taken in lower case: `Okta` is `okta` (its records were dead-lettered).
    let capitalized = ingest_login_as(&svc, &admin, "Okta", 2);
    assert_eq!(
        (
            capitalized["events"].clone(),
            capitalized["dead_letters"].clone()
        ),
        (1.into(), 0.into()),
        "{capitalized}"
    );
    assert!(capitalized.get("warnings").is_none(), "{capitalized}");
    // Empty pages store nothing, and the answer says so rather than nothing at all.
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/ingest/okta", svc.base))
        .bearer_auth(&admin)
        .body("{}\n[]\n{\"data\": []}\n")
        .send()
        .unwrap();
    let empty: serde_json::Value = r.json().unwrap();
    assert_eq!(
        (empty["events"].clone(), empty["dead_letters"].clone()),
        (0.into(), 0.into()),
        "{empty}"
    );
    let warning = empty["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.starts_with("3 input value(s) held no record"),
        "{empty}"
    );
    stop(svc);
}

/// The alert of a batch the store failed to write is kept for the next batch; with the replay
/// window saved, the source's resend after a restart is not detected again, so the kept alert
/// must survive the restart too: it is saved with the detection state and stored at start.
#[test]
fn an_alert_the_store_could_not_write_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = "3f1c2a44-0000-4000-8000-000000000060";
    let cfg = keyed_any_login_config(dir.path(), id);
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    // The tenant's alert journal cannot be created: the batch is not stored, nor at shutdown.
    let blocker = block_alert_journal(dir.path());
    let failed = reqwest::blocking::Client::new()
        .post(format!("{}/ingest/okta", svc.base))
        .bearer_auth(&admin)
        .body(okta_event(5, 1).to_string())
        .send()
        .unwrap();
    assert_eq!(failed.status().as_u16(), 503);
    stop(svc);
    let kept = std::fs::read_to_string(dir.path().join("data/state/unstored-alerts.json")).unwrap();
    assert!(kept.contains(id), "{kept}");

    std::fs::remove_file(&blocker).unwrap();
    let svc = start(&cfg);
    assert_resent_quietly(&ingest_login(&svc, &admin, 1));
    assert_one_alert_of(&svc, &admin, id);
    stop(svc);
    assert!(!dir.path().join("data/state/unstored-alerts.json").exists());
}

/// A shutdown that can neither store an alert nor keep it with the detection state (a full
/// disk) says the alert is lost and exits non-zero: it said the alert was kept and stored at
/// the next start, then "stopped cleanly", exit code 0. The next start tells what was lost.
#[test]
fn a_shutdown_that_cannot_save_the_detection_state_says_so_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let id = "3f1c2a44-0000-4000-8000-000000000061";
    let cfg = keyed_any_login_config(dir.path(), id);
    let admin = token(&cfg, "admin");
    let log = dir.path().join("stderr.log");
    let svc = start_with_stderr(&cfg, std::fs::File::create(&log).unwrap().into());
    // The alert can be stored neither with its batch nor at shutdown, and the file that would
    // keep it cannot be written (a directory where its temp file goes).
    let blocker = block_alert_journal(dir.path());
    let state_blocker = dir.path().join("data/state/unstored-alerts.json.tmp");
    std::fs::create_dir(&state_blocker).unwrap();
    let failed = ingest_login(&svc, &admin, 1);
    assert_eq!(failed["error"]["code"], "not_stored", "{failed}");
    let status = stop_with_status(svc);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "detection state NOT saved at shutdown: 1 alert(s) neither stored nor kept are lost"
        ),
        "{text}"
    );
    assert!(text.contains("stopped, but not cleanly"), "{text}");
    assert!(!text.contains("stopped cleanly"), "{text}");
    assert!(!text.contains("kept with the detection state"), "{text}");

    std::fs::remove_file(&blocker).unwrap();
    std::fs::remove_dir(&state_blocker).unwrap();
    let log = dir.path().join("stderr.restart.log");
    let svc = start_with_stderr(&cfg, std::fs::File::create(&log).unwrap().into());
    stop(svc);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the previous shutdown could not save the detection state: 1 alert(s) neither stored nor kept were lost"),
        "{text}"
    );
    // Told once: the note is gone, and this shutdown saved everything.
    let notes: Vec<_> = std::fs::read_dir(dir.path().join("data/state"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("unsaved-shutdown-")
        })
        .collect();
    assert!(notes.is_empty(), "{notes:?}");
    assert!(text.contains("stopped cleanly"), "{text}");
}

/// A second `perimeter run` on the same data directory (a restart racing the old process, two
/// units pointing at one directory) is refused with a clear error before it touches anything:
/// its recovery would delete the running one's unfinished files.
#[test]
fn a_second_service_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = any_login_config(dir.path(), "3f1c2a44-0000-4000-8000-000000000070");
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let mut second = Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second service did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("in use by another Perimeter process"), "{err}");
    // The first one is unharmed.
    assert_eq!(ingest_login(&svc, &admin, 1)["alerts"], 1);
    stop(svc);
}

/// Request lines and `Authorization` headers a fake API saw.
type RequestLog = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// The request line and headers a fake vendor API read from its connection.
struct FakeRequest {
    line: String,
    head: String,
}

impl FakeRequest {
    fn read(stream: &mut std::net::TcpStream) -> FakeRequest {
        use std::io::Read;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let line = head.lines().next().unwrap_or_default().to_string();
        FakeRequest { line, head }
    }

    /// A header's value (names as the client sent them, lowercase for reqwest), or "".
    fn header(&self, name: &str) -> String {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_string()
    }
}

/// A fake Perimeter API on loopback whose listings hold `first` and a `next_cursor`, and that
/// fails the request for the next page (500); its base URL.
fn api_failing_after_one_page(first: serde_json::Value) -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let request = FakeRequest::read(&mut stream);
            let (status, body) = if request.line.contains("cursor=") {
                (
                    "500 Internal Server Error",
                    r#"{"error":"boom"}"#.to_string(),
                )
            } else {
                let page = serde_json::json!({"items": first, "next_cursor": "page2"});
                ("200 OK", page.to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

#[test]
fn listings_print_each_page_as_it_comes() {
    let events = serde_json::json!([
        {"@timestamp": "2026-11-24T10:01:00Z", "event": {"id": "e1", "module": "okta"}},
        {"@timestamp": "2026-11-24T10:00:00Z", "event": {"id": "e2", "module": "okta"}},
    ]);
    let base = api_failing_after_one_page(events);
    let server = ["--server", base.as_str(), "--token", "t", "--limit", "50"];
    // The second page fails: the first one is out already, not held back with the rest.
    let mut args = vec!["search", "event.module:okta", "--format", "json"];
    args.extend(server);
    let out = perimeter(&args, None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_says(&out, "500");
    let ids: Vec<_> = json_lines(&out)
        .iter()
        .map(|e| e["event"]["id"].clone())
        .collect();
    assert_eq!(ids, ["e1", "e2"]);
    // Table rows too (the columns have fixed widths): the header, then the page's rows.
    let mut args = vec!["search", "event.module:okta", "--format", "table"];
    args.extend(server);
    let out = perimeter(&args, None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].starts_with("TIME (UTC)") && rows[1].contains("e1"),
        "{table}"
    );
}

/// A fake Okta System Log API on loopback: page `n` (`after=n`, the first without) holds
/// `pages[n]` and links to `after=n+1`; past the last page the log's tail is empty and links to
/// itself (Okta's polling mode). Each answer waits `delay`. Returns its base URL and what it saw
/// (request line and `Authorization`).
fn fake_okta(pages: Vec<Vec<serde_json::Value>>, delay: Duration) -> (String, RequestLog) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (me, log) = (base.clone(), seen.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let request = FakeRequest::read(&mut stream);
            let (line, auth) = (request.line.clone(), request.header("authorization"));
            let n: usize = line
                .split_whitespace()
                .nth(1)
                .and_then(|target| target.split("after=").nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            log.lock().unwrap().push((line, auth));
            std::thread::sleep(delay);
            let body = serde_json::to_string(pages.get(n).unwrap_or(&Vec::new())).unwrap();
            let next = (n + 1).min(pages.len());
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nlink: <{me}/api/v1/logs?after={next}>; rel=\"next\"\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (base, seen)
}

/// `cfg` with a `[[poll]]` table for the fake Okta at `base`, its token in a file.
fn with_okta_poller(cfg: &std::path::Path, name: &str, base: &str) {
    let token_file = cfg.with_file_name("okta-token");
    std::fs::write(&token_file, "00okta-token-for-tests\n").unwrap();
    let mut text = std::fs::read_to_string(cfg).unwrap();
    text.push_str(&format!(
        "[[poll]]\nname = {name:?}\nvendor = \"okta\"\nbase_url = {base:?}\ntoken = \"file:{}\"\ninterval_seconds = 1\n",
        token_file.display()
    ));
    std::fs::write(cfg, text).unwrap();
}

#[test]
fn a_polled_okta_system_log_is_stored_and_its_checkpoint_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let (okta, seen) = fake_okta(
        vec![vec![okta_event(0, 1), okta_event(0, 2)]],
        Duration::ZERO,
    );
    with_okta_poller(&cfg, "okta-test", &okta);
    let viewer = token(&cfg, "viewer");
    let svc = start(&cfg);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ids = stored_ids(&svc.base, &viewer);
    while ids.len() < 2 || seen.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "polled events not stored: {ids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        ids = stored_ids(&svc.base, &viewer);
    }
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen[0].0.starts_with("GET /api/v1/logs?since="), "{seen:?}");
    assert!(
        seen[1..].iter().all(|(line, _)| line.contains("after=1")),
        "{seen:?}"
    );
    assert!(seen
        .iter()
        .all(|(_, auth)| auth == "SSWS 00okta-token-for-tests"));
    let metrics = svc.metrics();
    assert!(
        metrics.contains("perimeter_poll_records_total{poller=\"okta-test\"} 2"),
        "{metrics}"
    );
    stop(svc);
    let checkpoint: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("data/state/poll/okta-test.json")).unwrap(),
    )
    .unwrap();
    assert!(
        checkpoint["resume"].as_str().unwrap().ends_with("after=1"),
        "{checkpoint}"
    );
    // The token is in no file the service wrote.
    for entry in crate::cli::walk(&dir.path().join("data")) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("00okta-token-for-tests"),
            "{}",
            entry.display()
        );
    }
}

#[test]
fn poll_check_fetches_the_next_page_without_storing_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let (okta, seen) = fake_okta(
        vec![vec![okta_event(0, 1), okta_event(0, 2)]],
        Duration::ZERO,
    );
    let token_file = dir.path().join("okta-token");
    std::fs::write(&token_file, "00okta-token-for-tests\n").unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    for (name, token) in [
        ("okta-good", token_file.display().to_string()),
        (
            "okta-no-token",
            dir.path().join("missing").display().to_string(),
        ),
    ] {
        text.push_str(&format!(
            "[[poll]]\nname = {name:?}\nvendor = \"okta\"\nbase_url = {okta:?}\ntoken = \"file:{token}\"\n"
        ));
    }
    std::fs::write(&cfg, text).unwrap();
    let check = |names: &[&str]| {
        let mut args = vec!["--config", cfg.to_str().unwrap(), "poll-check"];
        args.extend(names);
        perimeter(&args, None)
    };

    let out = check(&["okta-good"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(
        stdout.contains("okta-good: ok (okta): 2 record(s) on the next page, newest "),
        "{stdout}"
    );
    assert!(!stdout.contains("00okta-token"), "{stdout}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(
        !dir.path().join("data/state/poll/okta-good.json").exists(),
        "a check moves no checkpoint"
    );

    let out = check(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("okta-good: ok"), "{stdout}");
    assert!(
        stdout.contains(
            "okta-no-token: FAILED (okta): configuration: poll `okta-no-token`: `token`: reading"
        ),
        "{stdout}"
    );

    let out = check(&["okta-typo"]);
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_says(&out, "no [[poll]] table is named `okta-typo`");

    // A name used twice, which `perimeter run` refuses: the check said ok.
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[[poll]]\nname = \"okta-good\"\nvendor = \"okta\"\nbase_url = {okta:?}\ntoken = \"file:{}\"\n",
        token_file.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    let out = check(&["okta-good"]);
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_says(&out, "name `okta-good` is used twice");
}

/// A vendor that refuses every request with `status` and a JSON `body`; its base URL.
fn refusing_vendor(status: &str, body: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let status = status.to_string();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

#[test]
fn what_a_vendor_says_is_masked_in_poll_check_output_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let secrets = crate::secrets::SECRETS;
    // An error text quoting a token, a password and a card number, as vendors' texts can.
    let said = serde_json::json!({"errorSummary": format!(
        "bad request {} password={} card {}", secrets[0], secrets[4], secrets[5]
    )});
    let vendor = refusing_vendor("400 Bad Request", said.to_string());
    with_okta_poller(&cfg, "okta-refused", &vendor);
    let out = perimeter(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--log-format",
            "json",
            "poll-check",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", stderr(&out));
    assert!(
        stdout.contains("okta-refused: FAILED (okta): HTTP 400") && stdout.contains("bad request"),
        "{stdout}"
    );
    crate::secrets::assert_no_secret("poll-check stdout", &stdout);
    crate::secrets::assert_no_secret("poll-check stderr", &stderr(&out));
}

/// `perimeter run` killed with SIGKILL while it polls a 30-page Okta log: after a restart every
/// event is stored exactly once, and the restart goes on from its checkpoint.
#[test]
fn kill_9_while_polling_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let pages: Vec<Vec<serde_json::Value>> = (0..30)
        .map(|p| (0..20).map(|i| okta_event(100 + p, i)).collect())
        .collect();
    let (okta, seen) = fake_okta(pages, Duration::from_millis(60));
    with_okta_poller(&cfg, "okta-kill", &okta);
    let viewer = token(&cfg, "viewer");

    let mut svc = start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < 10 {
        assert!(Instant::now() < deadline, "the poller never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    svc.child.kill().unwrap(); // SIGKILL, mid-log
    svc.child.wait().unwrap();
    let before_restart = seen.lock().unwrap().len();
    assert!(before_restart < 31, "killed before the end of the log");

    let svc = start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ids = stored_ids(&svc.base, &viewer);
    while ids.len() < 600 {
        assert!(Instant::now() < deadline, "{} of 600 stored", ids.len());
        std::thread::sleep(Duration::from_millis(200));
        ids = stored_ids(&svc.base, &viewer);
    }
    assert_eq!(ids.len(), 600);
    assert!(ids.values().all(|n| *n == 1), "an event stored twice");
    let first_after_restart = seen.lock().unwrap()[before_restart].0.clone();
    assert!(
        first_after_restart.contains("after="),
        "the restart went on from its checkpoint: {first_after_restart}"
    );
    stop(svc);
}

/// A fake Salesforce org on loopback: the token endpoint (consumer secret `sf-secret`), an
/// `EventLogFile` listing of one file, and that file's CSV. Returns its base URL and the request
/// lines it saw.
fn fake_salesforce_org(csv: String) -> (String, RequestLog) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let request = FakeRequest::read(&mut stream);
            let (line, header) = (request.line.clone(), |name: &str| request.header(name));
            let length: usize = header("content-length").parse().unwrap_or(0);
            let mut body = vec![0u8; length];
            let _ = stream.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).to_string();
            log.lock()
                .unwrap()
                .push((line.clone(), header("authorization")));
            let day = (chrono::Utc::now().date_naive() - chrono::Duration::days(1))
                .format("%Y-%m-%dT00:00:00.000+0000");
            let (kind, answer) = if line.starts_with("POST /services/oauth2/token") {
                if body.contains("client_secret=sf-secret") {
                    ("application/json", r#"{"access_token":"00Dsf!session","instance_url":"x","token_type":"Bearer"}"#.to_string())
                } else {
                    (
                        "application/json",
                        r#"{"error":"invalid_client"}"#.to_string(),
                    )
                }
            } else if header("authorization") != "Bearer 00Dsf!session" {
                ("application/json", "[]".to_string())
            } else if line.contains("/query?") {
                (
                    "application/json",
                    serde_json::json!({"totalSize": 1, "done": true, "records": [
                    {"Id": "0ATe1", "EventType": "ReportExport", "LogDate": day.to_string(),
                     "LogFile": "/services/data/v60.0/sobjects/EventLogFile/0ATe1/LogFile"}]})
                    .to_string(),
                )
            } else if line.contains("/EventLogFile/0ATe1/LogFile") {
                ("text/csv", csv.clone())
            } else {
                ("application/json", "[]".to_string())
            };
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (base, seen)
}

/// The whole path for a CSV source: `perimeter run` polls a Salesforce org's Event Monitoring
/// files, reads the CSV, normalizes the rows with the salesforce mapping, raises the report
/// export rule's alert, stores the rows, and keeps the row that does not fit as a dead letter.
#[test]
fn salesforce_event_log_files_are_polled_detected_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let csv = "\"EVENT_TYPE\",\"TIMESTAMP_DERIVED\",\"REQUEST_ID\",\"USER_NAME\",\"CLIENT_IP\",\"REPORT_ID\"\n\
        \"ReportExport\",\"2026-11-24T10:15:22.004Z\",\"4exLH0kq0x9Z\",\"dana.kim@acme-corp.example\",\"203.0.113.66\",\"00O5g000006xYzA\"\n\
        \"ReportExport\",\"cut short\"\n";
    let (org, seen) = fake_salesforce_org(csv.to_string());
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[[poll]]\nname = \"sf-elf\"\nvendor = \"salesforce\"\nbase_url = {org:?}\nfeed = \"event_log_files\"\n\
         client_id = \"3MVG9-key\"\ntoken = \"env:PERIMETER_TEST_SF_SERVICE_SECRET\"\ninterval_seconds = 1\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    std::env::set_var("PERIMETER_TEST_SF_SERVICE_SECRET", "sf-secret");
    let viewer = token(&cfg, "viewer");
    let svc = start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ids = stored_ids(&svc.base, &viewer);
    while ids.is_empty() {
        assert!(Instant::now() < deadline, "polled rows not stored");
        std::thread::sleep(Duration::from_millis(100));
        ids = stored_ids(&svc.base, &viewer);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let client = reqwest::blocking::Client::new();
    let get = |path: &str| -> serde_json::Value {
        client
            .get(format!("{}/api/v1{path}", svc.base))
            .bearer_auth(&viewer)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let found = get("/events/search?q=event.module:salesforce%20AND%20event.action:ReportExport");
    let event = &found["items"][0];
    assert_eq!(
        event["user"]["name"], "dana.kim@acme-corp.example",
        "{found}"
    );
    assert_eq!(event["event"]["category"][0], "file", "{found}");
    assert_eq!(event["source"]["ip"], "203.0.113.66", "{found}");
    assert_one_alert_of(&svc, &viewer, "ef1e06b6-5bb0-4471-b981-c03d4291f97f");
    let dead = get("/dead-letters?limit=10");
    let dead = dead["items"].as_array().expect("dead letters");
    assert!(
        dead.iter().any(|d| d["line"] == 3
            && d["reason"]
                .as_str()
                .unwrap_or("")
                .contains("the header has 6")),
        "{dead:?}"
    );
    stop(svc);
    // The consumer secret went only to the token endpoint.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|(_, auth)| !auth.contains("sf-secret")));
    assert!(seen
        .iter()
        .any(|(line, _)| line.starts_with("POST /services/oauth2/token")));
}

#[test]
fn a_source_that_went_silent_raises_one_alert_resolved_when_it_sends_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with(
        dir.path(),
        "[silence]\nafter_seconds = 120\ncheck_seconds = 1\n",
    );
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let hook = WebhookReceiver::start(0);
    add_destination(&svc.base, &admin, &hook.url());
    let client = reqwest::blocking::Client::new();
    // okta's newest event is 10 minutes old (quiet past the 2 minutes); github's is fresh.
    let at = |ago: i64| {
        (chrono::Utc::now() - chrono::Duration::seconds(ago))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mut okta = okta_event(0, 1);
    okta["published"] = serde_json::json!(at(600));
    let github = serde_json::json!({
        "@timestamp": chrono::Utc::now().timestamp_millis(),
        "action": "repo.create", "actor": "dana-kim", "org": "acme", "_document_id": "gh-1",
    });
    for (source, body) in [("okta", okta), ("github", github)] {
        let r = client
            .post(format!("{}/ingest/{source}", svc.base))
            .bearer_auth(&admin)
            .body(body.to_string())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{source}: {}", r.text().unwrap());
    }
    let silence_alerts = || -> Vec<serde_json::Value> {
        let body: serde_json::Value = client
            .get(format!(
                "{}/api/v1/alerts?rule=perimeter.source_silent",
                svc.base
            ))
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .json()
            .unwrap();
        body["items"].as_array().cloned().unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while silence_alerts().is_empty() {
        assert!(Instant::now() < deadline, "no silence alert raised");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Checked every second: still one alert, about okta only.
    std::thread::sleep(Duration::from_secs(3));
    let alerts = silence_alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0]["alert"];
    assert_eq!(alert["entity"], "okta", "{alert}");
    assert_eq!(alert["detector"], "source_health");
    assert!(
        alert["title"]
            .as_str()
            .unwrap()
            .starts_with("Source went silent: no okta events for 10 minutes"),
        "{alert}"
    );
    let text = svc.metrics();
    assert!(
        text.lines()
            .any(|l| l == "perimeter_alerts_total{rule=\"perimeter.source_silent\"} 1"),
        "{text}"
    );
    // Listed among the rules, and switched off per tenant like one: slack going quiet while
    // it is off raises nothing.
    let rules: serde_json::Value = client
        .get(format!("{}/api/v1/rules", svc.base))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "perimeter.source_silent" && r["kind"] == "source_health"),
        "{rules}"
    );
    let off = client
        .patch(format!("{}/api/v1/rules/perimeter.source_silent", svc.base))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"enabled": false, "reason": "slack is retired"}))
        .send()
        .unwrap();
    assert!(off.status().is_success(), "{}", off.text().unwrap());
    let slack = serde_json::json!({
        "id": "slack-1", "date_create": chrono::Utc::now().timestamp() - 600,
        "action": "user_login", "actor": {"type": "user", "user": {"id": "U1", "name": "dana", "email": "dana@acme.example"}},
        "entity": {"type": "user", "user": {"id": "U1", "name": "dana"}}, "context": {"ip_address": "198.51.100.9"},
    });
    let r = client
        .post(format!("{}/ingest/slack", svc.base))
        .bearer_auth(&admin)
        .body(slack.to_string())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "slack: {}", r.text().unwrap());
    std::thread::sleep(Duration::from_secs(3));
    let alerts = silence_alerts();
    assert_eq!(
        alerts.len(),
        1,
        "only okta's, from before the switch: {alerts:?}"
    );
    assert!(
        svc.metrics().lines().any(|l| l
            .starts_with("perimeter_alerts_switched_off_total{rule=\"perimeter.source_silent\"}")),
        "the switched-off silence is counted"
    );
    // okta sends again: its silence alert is resolved by Perimeter, with a note saying when.
    let mut fresh = okta_event(1, 2);
    fresh["published"] = serde_json::json!(at(0));
    let r = client
        .post(format!("{}/ingest/okta", svc.base))
        .bearer_auth(&admin)
        .body(fresh.to_string())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "okta: {}", r.text().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let resolved = loop {
        let alerts = silence_alerts();
        if alerts[0]["alert"]["status"] == "resolved" {
            break alerts[0].clone();
        }
        assert!(Instant::now() < deadline, "not resolved: {alerts:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        resolved["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["by"] == "perimeter" && c["field"] == "status" && c["to"] == "resolved"),
        "{resolved}"
    );
    assert!(
        resolved["notes"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("okta sent again: its newest event is from "),
        "{resolved}"
    );
    assert_eq!(silence_alerts().len(), 1, "and no new silence is raised");
    // The destination heard of the silence, then of its end: the same alert, resolved.
    let id = resolved["alert"]["id"].as_str().unwrap().to_string();
    let deliveries_of = |status: &str| {
        hook.bodies()
            .iter()
            .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["id"] == id.as_str() && a["status"] == status)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while deliveries_of("resolved") == 0 {
        assert!(
            Instant::now() < deadline,
            "no resolved delivery: {:?}",
            hook.bodies()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(deliveries_of("open"), 1, "{:?}", hook.bodies());
    assert_eq!(deliveries_of("resolved"), 1, "{:?}", hook.bodies());
    stop(svc);
}

#[test]
fn the_audit_log_keeps_only_its_retention_days() {
    let dir = tempfile::tempdir().unwrap();
    // Right after `[api]`, which the base config ends with.
    let cfg = write_config_with(dir.path(), "audit_retention_days = 30\n");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let entry = |at: &str, action: &str| {
        format!(
            "{{\"timestamp\":\"{at}\",\"tenant\":\"acme\",\"token_id\":\"t1\",\"token_name\":\"dana\",\"role\":\"admin\",\"action\":\"{action}\",\"details\":{{}}}}\n"
        )
    };
    let recent = chrono::Utc::now() - chrono::TimeDelta::days(2);
    let text = entry("2020-01-01T00:00:00Z", "events.export")
        + &entry(&recent.to_rfc3339(), "alerts.update");
    let audit = data.join("audit.jsonl");
    std::fs::write(&audit, text).unwrap();
    let svc = start(&cfg);
    // Retention runs at start, beside serving.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&audit)
        .unwrap()
        .contains("2020-01-01")
    {
        assert!(
            Instant::now() < deadline,
            "the expired entry is still there"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = std::fs::read_to_string(&audit).unwrap();
    assert!(kept.contains("alerts.update"), "{kept}");
    // The store's retention sweep at start is counted too (nothing to remove here).
    let metrics = || {
        reqwest::blocking::get(format!("{}/metrics", svc.base))
            .unwrap()
            .text()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !metrics().contains("perimeter_retention_removed_total{what=\"alerts\"} 0") {
        assert!(Instant::now() < deadline, "{}", metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(svc);
}

/// Each stored batch writes a Parquet file per partition; `perimeter run` merges them
/// (`parquet_compact_every_seconds`), so readers of the Parquet tree do not open a file per batch.
#[test]
fn the_service_merges_the_parquet_files_of_its_batches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with(
        dir.path(),
        "\n[store]\nparquet_max_file_age_seconds = 0\nparquet_compact_every_seconds = 1\n",
    );
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    for i in 0..6 {
        let ack = ingest_login(&svc, &admin, i);
        assert_eq!(ack["events"], 1, "{ack}");
    }
    let parquet = dir.path().join("data/parquet");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((1, text)) = parquet_text(&parquet) {
            // Each event once, in the one file left.
            for i in 0..6 {
                let uuid = format!("\"evt-5-{i}\"");
                assert_eq!(text.matches(&uuid).count(), 1, "{uuid} in {text}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "parquet files left: {:?}",
            parquet_text(&parquet).map(|(files, _)| files)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Counted once the merge that left the one file has returned, a moment after its files
    // were swapped in: read until it shows.
    loop {
        let metrics = reqwest::blocking::get(format!("{}/metrics", svc.base))
            .unwrap()
            .text()
            .unwrap();
        let merged: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("perimeter_parquet_files_merged_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if merged >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(svc);
}

#[test]
fn terminal_commands_reach_an_https_server_whose_certificate_a_private_ca_signed() {
    let dir = tempfile::tempdir().unwrap();
    // A certificate no public root vouches for, as an internal CA's would be.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let cfg = write_config(dir.path());
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "tls_cert_path = {cert_path:?}\ntls_key_path = {key_path:?}\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    let token = token(&cfg, "viewer");
    let service = spawn_run(&cfg, Stdio::null());
    // The certificate names localhost, not the address.
    let server = service.base.replace("127.0.0.1", "localhost");
    assert!(server.starts_with("https://localhost:"), "{server}");
    let alerts = |ca: Option<&std::path::Path>| {
        let mut args = vec![
            "alerts", "--server", &server, "--token", &token, "--format", "json",
        ];
        if let Some(ca) = ca {
            args.extend(["--ca-cert", ca.to_str().unwrap()]);
        }
        perimeter(&args, None)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let out = alerts(Some(&cert_path));
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(out.status.success(), "{}", stderr(&out));
    // Without it the certificate is refused, and the error says why and what to pass.
    let out = alerts(None);
    assert!(!out.status.success());
    assert_stderr_says(&out, "certificate");
    assert_stderr_says(&out, "--ca-cert");
    // Plain http to the TLS port: told to use https.
    let plain = server.replace("https://", "http://");
    let out = perimeter(
        &[
            "alerts", "--server", &plain, "--token", &token, "--format", "json",
        ],
        None,
    );
    assert!(!out.status.success());
    assert_stderr_says(&out, "use https://");
    // A file that holds no certificate is named.
    let out = alerts(Some(&dir.path().join("perimeter.toml")));
    assert!(!out.status.success());
    assert_stderr_says(&out, "no PEM certificate");
    drop(service);
}

/// A body of more records than `ingest_max_records` is refused whole over real HTTP, gzipped or
/// not (a tiny gzip of millions of lines took gigabytes), with a JSON error saying the limit;
/// nothing of it is stored. One at the limit is stored.
#[test]
fn a_body_over_the_record_limit_is_refused_whole_and_one_at_it_is_stored() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("ingest_max_records = 1000\n{text}")).unwrap();
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let client = reqwest::blocking::Client::new();
    let post = |body: Vec<u8>, gzip: bool| {
        let request = client
            .post(format!("{}/ingest/okta", svc.base))
            .bearer_auth(&admin);
        let request = if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&body).unwrap();
            request
                .header("content-encoding", "gzip")
                .body(enc.finish().unwrap())
        } else {
            request.body(body)
        };
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().unwrap())
    };
    let events = |from: usize, n: usize| -> Vec<u8> {
        (from..from + n)
            .map(|i| format!("{}\n", okta_event(20, i)))
            .collect::<String>()
            .into_bytes()
    };
    // Valid events and garbage lines alike, one past the limit.
    for (body, gzip) in [
        (events(0, 1001), false),
        (b"x\n".repeat(1001), true),
        (b"not json\n".repeat(5000), false),
    ] {
        let (status, answer) = post(body, gzip);
        assert_eq!(status, 413, "{answer}");
        assert_eq!(answer["error"]["code"], "too_many_records", "{answer}");
        assert_eq!(answer["error"]["max_records"], 1000, "{answer}");
    }
    assert!(stored_ids(&svc.base, &admin).is_empty(), "nothing stored");
    let dead_letters: serde_json::Value = client
        .get(format!("{}/api/v1/dead-letters", svc.base))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        dead_letters["items"],
        serde_json::json!([]),
        "{dead_letters}"
    );
    // At the limit: stored, every line counted.
    let (status, ack) = post(events(0, 1000), false);
    assert_eq!((status, ack["events"].clone()), (200, 1000.into()), "{ack}");
    let mut mixed = events(1000, 500);
    mixed.extend(b"x\n".repeat(500));
    let (status, ack) = post(mixed, true);
    assert_eq!(
        (status, ack["events"].clone(), ack["dead_letters"].clone()),
        (200, 500.into(), 500.into()),
        "{ack}"
    );
    assert_eq!(stored_ids(&svc.base, &admin).len(), 1500);
    stop(svc);
}

/// Every dead letter of a spool file starts its reason with the file's name: the reader's
/// (not JSON), and the normalizer's too (a record it cannot read, a source it does not know),
/// which used to name only the normalizer. HTTP ingest has no file to name.
#[test]
fn every_dead_letter_of_a_spool_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let admin = token(&cfg, "admin");
    let inbox = dir.path().join("data/inbox");
    for (sub, name, body) in [
        (
            "okta",
            "nopub.jsonl",
            "{\"uuid\": \"u1\", \"eventType\": \"user.session.start\"}\nnot json\n",
        ),
        ("bad-src", "other.jsonl", "{\"a\": 1}\n"),
    ] {
        std::fs::create_dir_all(inbox.join(sub)).unwrap();
        std::fs::write(inbox.join(sub).join(name), body).unwrap();
    }
    let svc = start(&cfg);
    let client = reqwest::blocking::Client::new();
    let ack: serde_json::Value = client
        .post(format!("{}/ingest/okta", svc.base))
        .bearer_auth(&admin)
        .body("{\"uuid\": \"u2\", \"eventType\": \"user.session.start\"}\n")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ack["dead_letters"], 1, "{ack}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let reasons = loop {
        let body: serde_json::Value = client
            .get(format!("{}/api/v1/dead-letters", svc.base))
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let mut reasons: Vec<String> = body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|d| d["reason"].as_str().unwrap().to_string())
            .collect();
        if reasons.len() >= 4 || Instant::now() > deadline {
            reasons.sort();
            break reasons;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons[0].starts_with("nopub.jsonl: invalid JSON"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("nopub.jsonl: okta normalizer: ")
            && reasons[1].contains("published"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("okta normalizer: ") && reasons[2].contains("published"),
        "over HTTP: no file name: {reasons:?}"
    );
    assert!(
        reasons[3].starts_with("other.jsonl: bad-src normalizer: "),
        "{reasons:?}"
    );
    stop(svc);
}

/// `[kafka]` for a test broker: a topic and group of the test's own, and timeouts a test can
/// wait out when a member dies.
fn kafka_table(broker: &crate::kafka_broker::KafkaBroker, name: &str) -> String {
    format!(
        "[kafka]\nbrokers = \"{}\"\ntopic = \"records-{name}\"\ngroup = \"detect-{name}\"\n\
         partitions = 4\nbatch_records = 1000\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
         \"heartbeat.interval.ms\" = \"500\"\n\"max.poll.interval.ms\" = \"10000\"\n",
        broker.brokers()
    )
}

/// [`kafka_table`] of an instance of a deployment: with the masking key all its instances share
/// (`run --check` warns without one; pseudonyms and event ids derive from it).
fn kafka_instance(broker: &crate::kafka_broker::KafkaBroker, name: &str) -> String {
    format!(
        "[mask]\nhmac_key = \"file:{}\"\n{}",
        shared_mask_key().display(),
        kafka_table(broker, name)
    )
}

/// The masking key every instance of a scaled-out deployment shares (README: pseudonyms and
/// event ids derive from it), one file per test process.
fn shared_mask_key() -> &'static std::path::Path {
    static KEY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "perimeter-tests-{}-shared-mask.key",
            std::process::id()
        ));
        std::fs::write(
            &path,
            "the mask key every instance of the deployment shares",
        )
        .unwrap();
        path
    })
}

/// Every id of `expected` stored exactly once, waiting up to `within` for the detector side
/// (it stores after the ingest answer on the Kafka bus).
fn wait_stored_once(base: &str, token: &str, expected: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let stored = stored_ids(base, token);
        assert!(
            stored.values().all(|&n| n == 1),
            "some event is stored twice"
        );
        let missing = expected
            .iter()
            .filter(|id| !stored.contains_key(*id))
            .count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged events never stored",
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn on_the_kafka_bus_kill_9_loses_nothing_the_broker_acknowledged() {
    let broker = crate::kafka_broker::KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with(dir.path(), &kafka_instance(&broker, "kill9"));
    let ingest_token = token(&cfg, "responder");
    let mut svc = start(&cfg);
    // On the broker, not yet stored: the answer says so.
    let (rx, poster) = spawn_poster(svc.base.clone(), svc.id_key, ingest_token.clone(), |ack| {
        assert_eq!(ack["queued"], 200, "{ack}");
        assert_eq!(ack["events"], 0, "{ack}");
    });
    // Some of it stored and committed, some consumed and not yet stored, some not yet read.
    let acked = kill_9_after_acked(&mut svc, rx, poster, 2000);

    let svc = start(&cfg);
    wait_stored_once(&svc.base, &ingest_token, &acked, Duration::from_secs(120));
    // The on-call view: what this member read and committed, and how far behind it is. The
    // events are searchable before their offsets are committed and the lag is measured after
    // (asking the broker), so the metrics are waited for. Everything is stored: the lag comes
    // down to 0 while the member idles (no stale backlog for a lag alert to fire on).
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let metrics = svc.metrics();
        let lags: Vec<f64> = metrics
            .lines()
            .filter(|l| l.starts_with("perimeter_kafka_consumer_lag_records{partition="))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        if kafka_counter(&metrics, "kafka_records_consumed_total") > 0.0
            && kafka_counter(&metrics, "kafka_batches_committed_total") > 0.0
            && !lags.is_empty()
            && lags.iter().all(|&lag| lag == 0.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no commit, or the lag never came down to 0: {lags:?}\n{metrics}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    stop(svc);
}

/// The value of counter `perimeter_<name>` in a `/metrics` text (0 when absent).
fn kafka_counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("perimeter_{name} ")))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[test]
fn run_check_says_whether_the_kafka_bus_answers() {
    let broker = crate::kafka_broker::KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with(dir.path(), &kafka_table(&broker, "check"));
    let (ok, line) = kafka_check_line(&cfg);
    assert!(ok, "{line}");
    assert!(
        line.starts_with("ok     kafka bus: 1 broker(s)") && line.contains("records-check"),
        "{line}"
    );
    assert!(
        line.ends_with("records in clear on the topic (no payload_keys)"),
        "{line}"
    );
    // A payload key is checked too: a file that holds none is named, its content not quoted.
    let keyed_dir = tempfile::tempdir().unwrap();
    let key = keyed_dir.path().join("bus.key");
    let keyed = write_config_with(
        keyed_dir.path(),
        &kafka_table(&broker, "check").replace(
            "[kafka]\n",
            &format!("[kafka]\npayload_keys = [\"{}\"]\n", key.display()),
        ),
    );
    std::fs::write(&key, "s3cr3t-but-not-a-key").unwrap();
    let (ok, line) = kafka_check_line(&keyed);
    assert!(!ok, "{line}");
    assert!(
        line.contains("bus.key") && line.contains("64 hex digits"),
        "{line}"
    );
    assert!(!line.contains("s3cr3t"), "{line}");
    std::fs::write(&key, "5e".repeat(32)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A key others can read works, with a warning saying how to fix it.
    let out = run_check(&keyed);
    let line = crate::util::check_line(&out, "kafka bus");
    assert!(out.status.success(), "{line}");
    assert!(line.contains("records sealed with payload key "), "{line}");
    let warning = crate::util::check_line(&out, "warn   kafka bus: payload key");
    assert!(
        warning.contains("bus.key")
            && warning.contains("mode 644")
            && warning.contains("chmod 600"),
        "{warning}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_check(&keyed);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warn   kafka bus: payload key"));
    // Without `[mask] hmac_key` each instance would hash with a key of its own data directory:
    // said, and not with one.
    let warning = crate::util::check_line(&out, "warn   kafka bus: no [mask] hmac_key");
    assert!(warning.contains("every instance"), "{warning}");
    let mask_key = keyed_dir.path().join("mask.key");
    std::fs::write(&mask_key, "the group's own mask key").unwrap();
    let text = std::fs::read_to_string(&keyed).unwrap();
    std::fs::write(
        &keyed,
        format!("{text}[mask]\nhmac_key = \"file:{}\"\n", mask_key.display()),
    )
    .unwrap();
    let out = run_check(&keyed);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warn   kafka bus"));
    drop(broker);
    let (ok, line) = kafka_check_line(&cfg);
    assert!(!ok, "a bus that does not answer fails the check: {line}");
    assert!(line.starts_with("error  kafka bus:"), "{line}");
}

/// `perimeter run --check` of `cfg`.
fn run_check(cfg: &std::path::Path) -> std::process::Output {
    crate::util::perimeter(&["--config", cfg.to_str().unwrap(), "run", "--check"], None)
}

/// `perimeter run --check`'s exit status and its line about the Kafka bus.
fn kafka_check_line(cfg: &std::path::Path) -> (bool, String) {
    let out = run_check(cfg);
    (
        out.status.success(),
        crate::util::check_line(&out, "kafka bus"),
    )
}

#[test]
fn on_the_kafka_bus_over_tls_records_are_stored_and_an_untrusted_broker_is_refused() {
    use crate::tls_front::{TestCa, TlsFront};
    // The broker is reached only through TLS (a terminator in front of it, which it advertises
    // as its address), with a certificate for `localhost` from a CA of the test's own.
    let ca = TestCa::new();
    let mut front = TlsFront::bind();
    let broker = crate::kafka_broker::KafkaBroker::start_advertising(&front.address());
    front.forward_to(broker.addr, &ca);
    let dir = tempfile::tempdir().unwrap();
    let tls_table = |ca_pem: &str, name: &str| {
        let ca_path = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca_path, ca_pem).unwrap();
        format!(
            "{}\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = \"{}\"\n\
             \"broker.address.family\" = \"v4\"\n",
            kafka_instance(&broker, "tls"),
            ca_path.display()
        )
    };
    let cfg = write_config_with(dir.path(), &tls_table(&ca.ca_pem, "trusted"));
    let (ok, line) = kafka_check_line(&cfg);
    assert!(ok, "{line}");
    assert!(line.starts_with("ok     kafka bus: 1 broker(s)"), "{line}");

    let ingest_token = token(&cfg, "responder");
    let svc = start(&cfg);
    let (ack, posted) = post_okta_batch(&svc, &ingest_token, 1, 300);
    assert_eq!(ack["queued"], 300, "on the broker: {ack}");
    wait_stored_once(&svc.base, &ingest_token, &posted, Duration::from_secs(90));
    stop(svc);
    assert!(
        front.handshakes() >= 2,
        "the producer and the consumer each went through TLS: {} handshakes",
        front.handshakes()
    );
    assert_eq!(front.refused(), 0);

    // Trusting another CA: the broker's certificate is refused, and the check says why.
    let other = TestCa::new();
    let other_dir = tempfile::tempdir().unwrap();
    let untrusting = write_config_with(other_dir.path(), &tls_table(&other.ca_pem, "other"));
    let (ok, line) = kafka_check_line(&untrusting);
    assert!(!ok, "{line}");
    assert!(
        line.starts_with("error  kafka bus:") && line.contains("certificate verify failed"),
        "{line}"
    );
    assert!(front.refused() > 0, "no handshake was refused");
    // The service does not start on it, and says why.
    let out = crate::util::perimeter(&["--config", untrusting.to_str().unwrap(), "run"], None);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(log.contains("certificate verify failed"), "{log}");
}

#[test]
fn on_the_kafka_bus_sealed_records_reach_key_holders_and_a_detector_without_the_key_is_not_ready() {
    let broker = crate::kafka_broker::KafkaBroker::start();
    let keys = tempfile::tempdir().unwrap();
    let with_key = |name: &str, byte: &str| {
        let key = keys.path().join(format!("{name}.key"));
        std::fs::write(&key, byte.repeat(32)).unwrap();
        kafka_instance(&broker, "sealed").replace(
            "[kafka]\n",
            &format!("[kafka]\npayload_keys = [\"{}\"]\n", key.display()),
        )
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a_cfg = write_config_with(a_dir.path(), &with_key("bus", "4d"));
    let b_cfg = write_config_with(b_dir.path(), &with_key("other", "9f"));
    let a_token = token(&a_cfg, "responder");
    let a = start(&a_cfg);
    let (_, mut posted) = post_okta_batch(&a, &a_token, 0, 200);
    wait_stored_once(&a.base, &a_token, &posted, Duration::from_secs(90));

    // B joins the group with another key: once it gets partitions it meets sealed records it
    // cannot open, stops reading, and says so; the group gives its partitions back to A.
    let b = start(&b_cfg);
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut batch = 1;
    let not_ready = loop {
        posted.extend(post_okta_batch(&a, &a_token, batch, 50).1);
        batch += 1;
        std::thread::sleep(Duration::from_millis(500));
        let r = client.get(format!("{}/readyz", b.base)).send().unwrap();
        if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            break r.json::<serde_json::Value>().unwrap();
        }
        assert!(Instant::now() < deadline, "B never met a sealed record");
    };
    let why = not_ready["error"]["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("Kafka consumer stopped until a restart") && why.contains("payload key"),
        "{not_ready}"
    );
    assert!(
        b.metrics()
            .contains("perimeter_part_stopped{part=\"Kafka consumer\"} 1"),
        "{}",
        b.metrics()
    );
    // Nothing B could not open is lost: A, holding the key, stores all of it.
    wait_stored_once(&a.base, &a_token, &posted, Duration::from_secs(120));
    stop(a);
    stop(b);
}

/// The id of every stored event of the tenant, with its `user.name` (as stored: masked alike
/// for one user).
fn stored_users(base: &str, token: &str) -> HashMap<String, String> {
    let mut users = HashMap::new();
    each_stored_event(base, token, |e| {
        let id = e["event"]["id"].as_str().unwrap().to_string();
        let user = e["user"]["name"].as_str().unwrap_or_default().to_string();
        assert!(users.insert(id, user).is_none(), "stored twice: {e}");
    });
    users
}

#[test]
fn two_detector_instances_share_the_kafka_topic_by_entity() {
    let broker = crate::kafka_broker::KafkaBroker::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let table = kafka_instance(&broker, "share");
    let a_cfg = write_config_with(a_dir.path(), &table);
    let b_cfg = write_config_with(b_dir.path(), &table);
    let (a_token, b_token) = (token(&a_cfg, "responder"), token(&b_cfg, "responder"));
    let a = start(&a_cfg);
    let b = start(&b_cfg);
    // An ingest-only edge: what it takes in goes to the topic, for A and B to store.
    let edge_dir = tempfile::tempdir().unwrap();
    let edge_cfg = write_config_with(
        edge_dir.path(),
        &table.replace("[kafka]\n", "[kafka]\nconsume = false\n"),
    );
    let edge_token = token(&edge_cfg, "responder");
    let edge = start(&edge_cfg);
    let client = reqwest::blocking::Client::new();
    // A misspelt source is pointed out in the answer, as on the embedded bus.
    let ack: serde_json::Value = client
        .post(format!("{}/ingest/otka", a.base))
        .bearer_auth(&a_token)
        .body("{\"uuid\": \"typo-1\"}\n")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ack["queued"], 1, "{ack}");
    assert!(
        ack["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("did you mean `okta`")),
        "{ack}"
    );
    let mut posted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    // Batches go in through instance A only; the group spreads them over both.
    let mut batch = 0;
    loop {
        posted.extend(post_okta_batch(&a, &a_token, batch, 200).1);
        batch += 1;
        std::thread::sleep(Duration::from_millis(500));
        let (on_a, on_b) = (
            stored_users(&a.base, &a_token),
            stored_users(&b.base, &b_token),
        );
        if !on_a.is_empty() && !on_b.is_empty() && batch >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never gave both instances work: {} on A, {} on B",
            on_a.len(),
            on_b.len()
        );
    }
    // Everything posted is stored, on one instance or the other.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (on_a, on_b) = loop {
        let (on_a, on_b) = (
            stored_users(&a.base, &a_token),
            stored_users(&b.base, &b_token),
        );
        let missing = posted
            .iter()
            .filter(|id| !on_a.contains_key(*id) && !on_b.contains_key(*id))
            .count();
        if missing == 0 {
            break (on_a, on_b);
        }
        assert!(
            Instant::now() < deadline,
            "{missing} posted events never stored"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Once the group settled, one user's events went to one instance: the users both hold are
    // only those of the first batches, read before the second member joined.
    let users = |stored: &HashMap<String, String>| -> std::collections::HashSet<String> {
        stored.values().cloned().collect()
    };
    let last_batch: std::collections::HashSet<&String> =
        posted[posted.len() - 200..].iter().collect();
    let late_users = |stored: &HashMap<String, String>| -> std::collections::HashSet<String> {
        stored
            .iter()
            .filter(|(id, _)| last_batch.contains(id))
            .map(|(_, u)| u.clone())
            .collect()
    };
    assert!(
        late_users(&on_a).is_disjoint(&late_users(&on_b)),
        "a user's events split over both instances"
    );
    assert!(users(&on_a).len() + users(&on_b).len() >= 40);
    assert_eq!(
        kafka_counter(&a.metrics(), "kafka_records_produced_total"),
        posted.len() as f64 + 1.0,
        "A put every posted record on the topic (and the misspelt one)"
    );
    assert_eq!(
        kafka_counter(&b.metrics(), "kafka_records_produced_total"),
        0.0
    );
    // The edge's batch reached the detectors; the edge itself stored nothing.
    // Sent as one page (a JSON array), its records go on the topic one by one, each keyed by
    // its user (QA: a page was one message keyed by the tenant, so a user's records split
    // over the detectors and bursts were missed).
    let events: Vec<serde_json::Value> = (0..50).map(|i| okta_event(9_999, i)).collect();
    let ack: serde_json::Value = client
        .post(format!("{}/ingest/okta", edge.base))
        .bearer_auth(&edge_token)
        .body(serde_json::to_string(&events).unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ack["queued"], 50, "{ack}");
    let edge_ids = okta_ids(&events, edge.id_key);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (on_a, on_b) = (
            stored_users(&a.base, &a_token),
            stored_users(&b.base, &b_token),
        );
        if edge_ids
            .iter()
            .all(|id| on_a.contains_key(id) || on_b.contains_key(id))
        {
            let page_users =
                |stored: &HashMap<String, String>| -> std::collections::HashSet<String> {
                    edge_ids
                        .iter()
                        .filter_map(|id| stored.get(id).cloned())
                        .collect()
                };
            let (page_a, page_b) = (page_users(&on_a), page_users(&on_b));
            assert!(
                !page_a.is_empty() && !page_b.is_empty() && page_a.is_disjoint(&page_b),
                "the page's records by user: {page_a:?} / {page_b:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge's events never reached a detector"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(stored_users(&edge.base, &edge_token).is_empty());
    assert_eq!(
        kafka_counter(&edge.metrics(), "kafka_records_consumed_total"),
        0.0
    );
    stop(edge);
    stop(a);
    stop(b);
}

/// A page sent compact (`JSON.stringify(records)`) is one line: over `max_line_bytes`, its
/// records were one dead letter answered 200, and a resend 200 with nothing counted. The body
/// limit bounds an HTTP body, so its lines are read whole.
#[test]
fn a_compact_json_page_longer_than_max_line_bytes_is_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("max_line_bytes = 2000\n{text}")).unwrap();
    let admin = token(&cfg, "admin");
    let svc = start(&cfg);
    let events: Vec<serde_json::Value> = (0..40).map(|i| okta_event(12, i)).collect();
    let body = serde_json::to_string(&events).unwrap();
    assert!(body.len() > 4000 && !body.contains('\n'));
    let answer: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{}/ingest/okta", svc.base))
        .bearer_auth(&admin)
        .body(body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["events"], 40, "{answer}");
    assert_eq!(answer["dead_letters"], 0, "{answer}");
    let stored = stored_ids(&svc.base, &admin);
    assert!(okta_ids(&events, svc.id_key)
        .iter()
        .all(|id| stored.get(id) == Some(&1)));
    stop(svc);
}

/// `[api] max_connections` past what the open-file limit leaves for the store is warned about
/// (idle connections took every descriptor before one was refused), and 0, which would mean
/// one connection at a time, is refused.
#[test]
fn max_connections_is_checked_against_the_open_file_limit_and_zero_refused() {
    let dir = tempfile::tempdir().unwrap();
    // `write_config` ends with the `[api]` table.
    let cfg = write_config_with(dir.path(), "max_connections = 100000000\n");
    let out = run_check(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let warning = crate::util::check_line(&out, "warn   api: the open-file limit");
    assert!(warning.contains("max_connections = 100000000"), "{warning}");
    let zero_dir = dir.path().join("zero");
    std::fs::create_dir_all(&zero_dir).unwrap();
    let zero = write_config_with(&zero_dir, "max_connections = 0\n");
    let out = run_check(&zero);
    assert!(!out.status.success());
    let line = crate::util::check_line(&out, "max_connections");
    assert!(line.contains("at least 1"), "{line}");
}

/// QA: a directory a demo made and a service then used (its events, tokens and audit log) was
/// wiped by the next `perimeter demo` on it, without a word. The service adopts it.
#[test]
fn a_demo_does_not_replace_a_directory_a_service_has_used() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = || {
        perimeter(
            &["demo", "--no-serve", "--data-dir", data.to_str().unwrap()],
            None,
        )
    };
    let first = demo();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // A demo replaces its own directory.
    let again = demo();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let cfg = write_config(dir.path());
    let service = start(&cfg);
    drop(service);
    assert!(!data.join(".perimeter-demo").exists());
    let refused = demo();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("a `perimeter run` has used"), "{said}");
    assert!(data.join("index").is_dir(), "the service's data was kept");
}

/// QA: a token sent as the source name of `POST /ingest/{source}` was masked in the log but
/// shown in clear in `/metrics` (which takes no token), and stored as the source of every
/// record. Such a name is refused (without being echoed); vendor names are not.
#[test]
fn a_secret_sent_as_a_source_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let svc = start(&cfg);
    let token = token(&cfg, "responder");
    let post = |source: &str, body: String| {
        reqwest::blocking::Client::new()
            .post(format!("{}/ingest/{source}", svc.base))
            .bearer_auth(&token)
            .body(body)
            .send()
            .unwrap()
    };
    for secret in [
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        // Judged as sent (in lower case it no longer looks like a key).
        "AKIAIOSFODNN7PRMTEST",
    ] {
        let r = post(secret, "{\"message\": \"hello\"}\n".into());
        assert_eq!(r.status().as_u16(), 400, "{secret}");
        let body = r.text().unwrap();
        assert!(
            body.contains("bad_source") && !body.contains(&secret[5..]),
            "{body}"
        );
    }
    let metrics = svc.metrics();
    assert!(!metrics.contains("abcdefghijklmnopqrstuvwxyz"), "{metrics}");
    // Vendor names, and names of sources Perimeter does not know, stay as they are.
    for source in [
        "okta",
        "aws_cloudtrail",
        "google_workspace",
        "salesforce_marketing_cloud",
        "onepassword",
        "m365",
        "acme_crm_v2",
    ] {
        let r = post(source, format!("{}\n", okta_event(1, 1)));
        assert!(r.status().is_success(), "{source}: {}", r.text().unwrap());
    }
    assert!(svc
        .metrics()
        .contains("perimeter_events_received_total{source=\"okta\"}"));
    stop(svc);
}
