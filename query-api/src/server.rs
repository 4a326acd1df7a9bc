//! Serving the router over HTTP, or HTTPS (rustls) when a certificate is configured.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::parse_errors::JsonParseErrorsAcceptor;
use crate::state::AppState;

/// `[api]` in perimeter.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address and port to listen on (`127.0.0.1:8443`, `localhost:8443`). Port 0 picks a
    /// free port.
    #[serde(default = "default_listen", deserialize_with = "deserialize_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key_path`, the API speaks HTTPS only.
    #[serde(default)]
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching `tls_cert_path`.
    #[serde(default)]
    pub tls_key_path: Option<PathBuf>,
    /// How often (seconds) the certificate and key files are checked for a renewal: when
    /// either changed, the pair is loaded again and new connections get it, without a
    /// restart (certbot, cert-manager). A pair that does not load, or that clients would
    /// refuse (expired, not yet valid, a CA certificate), is logged and the one in use stays.
    /// `0`: never (a [`CertificateReloader`] still reloads the pair, and the daily reminder of a
    /// certificate close to expiry still runs).
    #[serde(default = "default_tls_reload_check_seconds")]
    pub tls_reload_check_seconds: u64,
    /// How long in-flight requests may take to finish after shutdown is requested.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// How long (seconds) a connection may send nothing of a request: its first request, the
    /// rest of a request's headers, the next part of its body (answered `408`), the next
    /// request on a kept-alive connection. Past it the
    /// connection is closed: idle or half-sent connections (a client gone, or one holding
    /// sockets open on purpose) would each hold a file descriptor until the process had none
    /// left for the store. At least 1.
    #[serde(default = "default_client_silence_seconds")]
    pub client_silence_seconds: u64,
    /// Connections open at once, at most (API clients, shippers, analysts' browsers, all
    /// counted); a connection past it is closed as it is accepted, counted in
    /// `api_connections_refused_total` and warned about once a minute. Keep it well under the
    /// process's open-file limit (`ulimit -n`): the store opens files as it writes. At least 1.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Whether alert webhooks may point at loopback and private addresses (an internal relay).
    /// Turn it off where tenant admins are not the operator. Link-local addresses (cloud
    /// metadata) are refused either way (`egress`).
    #[serde(default = "default_allow_private_destinations")]
    pub allow_private_destinations: bool,
    /// Days of the API's audit log to keep (`audit.jsonl`): entries of older days are dropped
    /// hourly by `perimeter run`. `0` (the default) keeps them forever; audit trails are often
    /// required for a year or more.
    #[serde(default)]
    pub audit_retention_days: u32,
}

fn default_allow_private_destinations() -> bool {
    true
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_shutdown_grace_seconds() -> u64 {
    10
}

fn default_client_silence_seconds() -> u64 {
    30
}

fn default_max_connections() -> usize {
    1024
}

fn default_tls_reload_check_seconds() -> u64 {
    60
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: default_listen(),
            tls_cert_path: None,
            tls_key_path: None,
            tls_reload_check_seconds: default_tls_reload_check_seconds(),
            shutdown_grace_seconds: default_shutdown_grace_seconds(),
            client_silence_seconds: default_client_silence_seconds(),
            max_connections: default_max_connections(),
            allow_private_destinations: default_allow_private_destinations(),
            audit_retention_days: 0,
        }
    }
}

impl ApiConfig {
    /// Checks that need no IO: cert and key come together.
    pub fn validate(&self) -> Result<(), ServeError> {
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(_), None) => Err(ServeError::Config(
                "`tls_cert_path` is set but `tls_key_path` is not".into(),
            )),
            (None, Some(_)) => Err(ServeError::Config(
                "`tls_key_path` is set but `tls_cert_path` is not".into(),
            )),
            // Elsewhere 0 means off or unlimited: here it would mean one connection at a
            // time, or a 408 after a second's pause.
            _ if self.max_connections == 0 => Err(ServeError::Config(
                "`max_connections` is 0: at least 1 (the default is 1024)".into(),
            )),
            _ if self.client_silence_seconds == 0 => Err(ServeError::Config(
                "`client_silence_seconds` is 0: at least 1 (the default is 30)".into(),
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid [api] config: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    /// The certificate file loads but clients would refuse a certificate of it (see
    /// [`check_server_chain`]).
    #[error("TLS: certificate {}: {problem}", path.display())]
    Certificate {
        path: PathBuf,
        problem: ChainProblem,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a server certificate that parses is still refused: a rustls/webpki client (the
/// `perimeter` CLI's, among others) would refuse it, so serving it would only trade a clear
/// error now for failed handshakes later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateProblem {
    #[error("expired on {not_after}: clients refuse it")]
    Expired {
        not_after: chrono::DateTime<chrono::Utc>,
    },
    #[error("not valid before {not_before}: clients refuse it until then")]
    NotYetValid {
        not_before: chrono::DateTime<chrono::Utc>,
    },
    /// webpki refuses a CA certificate as the server's own (`CaUsedAsEndEntity`), even when
    /// it is the very certificate the client trusts.
    #[error(
        "is a CA certificate (basicConstraints CA:TRUE), which TLS clients refuse as a server's \
         own: issue it with basicConstraints CA:FALSE (a self-signed one too; `openssl req -x509` \
         marks it a CA unless told otherwise)"
    )]
    CaCertificate,
}

/// Which certificate of a chain file clients would refuse, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "certificate #{} in the file ({}, subject `{subject}`) {problem}",
    .index + 1,
    chain_role(*.index)
)]
pub struct ChainProblem {
    /// Its place in the file, from 0: the server's own (the leaf), then the chain's.
    pub index: usize,
    /// Its subject (`CN=...`), as x509-parser writes it.
    pub subject: String,
    pub problem: CertificateProblem,
}

fn chain_role(index: usize) -> &'static str {
    if index == 0 {
        "the server's own"
    } else {
        "a chain certificate"
    }
}

/// Which certificate of a chain file `index` (from 0) is, as errors and warnings name it:
/// `certificate #2 in the file (a chain certificate)`. The one to renew when it expires.
pub fn certificate_place(index: usize) -> String {
    format!(
        "certificate #{} in the file ({})",
        index + 1,
        chain_role(index)
    )
}

/// What [`check_server_certificate`] or [`check_server_chain`] read from what it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateValidity {
    /// When the certificate (of a chain: the first of its certificates) expires; `None` when
    /// none could be parsed to read it (rustls may still load them).
    pub not_after: Option<chrono::DateTime<chrono::Utc>>,
    /// The place in the file (from 0) of the certificate that expires at `not_after`: renewing
    /// the server's own does not help when an intermediate runs out first.
    pub first_to_expire: usize,
}

/// Whether a DER leaf certificate may be served at `now`: within its validity period and not
/// a CA certificate. A certificate x509-parser cannot read passes (its expiry is reported
/// unknown): rustls decides whether it loads.
pub fn check_server_certificate(
    der: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<CertificateValidity, CertificateProblem> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Ok(CertificateValidity {
            not_after: None,
            first_to_expire: 0,
        });
    };
    let not_after = check_validity(&cert, now)?;
    // An unreadable extension (a duplicate) is not called a CA here: rustls and the client
    // judge that certificate on their own terms.
    let is_ca = cert
        .basic_constraints()
        .is_ok_and(|constraints| constraints.is_some_and(|c| c.value.ca));
    if is_ca {
        return Err(CertificateProblem::CaCertificate);
    }
    Ok(CertificateValidity {
        not_after,
        first_to_expire: 0,
    })
}

/// Whether a certificate chain (DER, in the order of the PEM file: the server's own first) may
/// be served at `now`: the first certificate as [`check_server_certificate`] has it, and each
/// of the others within its validity period (a client building the path through an expired
/// intermediate refuses the server as surely as for an expired leaf). The one rule `perimeter
/// run --check`, the start and each reload apply. Accepted, it says when the first of the
/// readable certificates expires: what clients refuse first.
pub fn check_server_chain(
    chain: &[impl AsRef<[u8]>],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<CertificateValidity, ChainProblem> {
    let mut earliest: Option<(chrono::DateTime<chrono::Utc>, usize)> = None;
    for (index, der) in chain.iter().enumerate() {
        let der = der.as_ref();
        let problem = |problem| {
            let subject = x509_parser::parse_x509_certificate(der)
                .map(|(_, cert)| cert.subject().to_string())
                .unwrap_or_default();
            ChainProblem {
                index,
                subject,
                problem,
            }
        };
        let not_after = if index == 0 {
            check_server_certificate(der, now)
                .map_err(problem)?
                .not_after
        } else {
            match x509_parser::parse_x509_certificate(der) {
                // A self-signed root in the file is never part of a client's path (clients
                // trust their own copy of a root, or not at all): current clients ignore an
                // expired one (fullchain files kept the expired DST Root CA X3 for years), so
                // its dates neither refuse the file nor are the chain's expiry.
                Ok((_, cert)) if cert.subject().as_raw() == cert.issuer().as_raw() => None,
                Ok((_, cert)) => check_validity(&cert, now).map_err(problem)?,
                Err(_) => None,
            }
        };
        if let Some(at) = not_after {
            if earliest.is_none_or(|(first, _)| at < first) {
                earliest = Some((at, index));
            }
        }
    }
    Ok(CertificateValidity {
        not_after: earliest.map(|(at, _)| at),
        first_to_expire: earliest.map_or(0, |(_, index)| index),
    })
}

/// Whether `cert` is within its validity period at `now`; when it expires (`None`: unreadable).
fn check_validity(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, CertificateProblem> {
    let time = |t: x509_parser::time::ASN1Time| chrono::DateTime::from_timestamp(t.timestamp(), 0);
    let validity = cert.validity();
    let not_after = time(validity.not_after);
    if let Some(not_before) = time(validity.not_before) {
        if now < not_before {
            return Err(CertificateProblem::NotYetValid { not_before });
        }
    }
    if let Some(not_after) = not_after {
        if now > not_after {
            return Err(CertificateProblem::Expired { not_after });
        }
    }
    Ok(not_after)
}

/// A bound listener, not yet serving: lets the caller learn the port (when `listen` had
/// port 0) before requests arrive.
pub struct Server {
    listener: std::net::TcpListener,
    tls: Option<(LoadedCertificate, CertificateFiles)>,
    grace: Duration,
    silence: Duration,
    max_connections: usize,
    cutoff_gate: Option<CutoffGate>,
}

/// Asked, once the shutdown grace period is over, whether the connections still open may be
/// cut now; `true` must stay `true` (it also stops what would need them open). Asked again
/// until it says so. See [`Server::hold_cutoff_while`].
pub type CutoffGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// What [`Server::check`] found the listener would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerCheck {
    Http,
    /// With when the first certificate of the chain expires (`None`: no validity could be read).
    Https {
        certificate_expires: Option<chrono::DateTime<chrono::Utc>>,
        /// The place in the file of the certificate that expires then
        /// ([`certificate_place`] names it).
        expiring_certificate: usize,
    },
}

/// A certificate pair loaded for serving, and when the first certificate of its chain expires.
struct LoadedCertificate {
    config: Arc<rustls::ServerConfig>,
    /// `not_after` is `None` when the certificate's validity could not be read (rustls
    /// accepted it anyway).
    validity: CertificateValidity,
}

impl LoadedCertificate {
    /// Say when the certificate expires: in the log (a warning within [`CERTIFICATE_EXPIRY_WARNING`], an
    /// error once expired) and as the gauge `perimeter_tls_certificate_expiry_timestamp_seconds`,
    /// for an alert well before clients start to refuse the API.
    fn report(&self, path: &std::path::Path, metrics: &perimeter_model::Metrics) {
        let Some(not_after) = self.validity.not_after else {
            tracing::warn!(cert = %path.display(), "tls certificate expiry could not be read");
            return;
        };
        metrics.set(
            "tls_certificate_expiry_timestamp_seconds",
            &[],
            not_after.timestamp() as f64,
        );
        if !remind_expiry(path, self.validity, chrono::Utc::now()) {
            tracing::info!(cert = %path.display(), %not_after, "tls certificate valid");
        }
    }
}

/// Log that the served certificate has expired (an error) or expires within
/// [`CERTIFICATE_EXPIRY_WARNING`] (a warning); returns whether it did. Said at start, at each reload and
/// daily while serving ([`EXPIRY_REMINDER`]), so an on-call engineer reading the log learns of
/// a renewal that never came before clients refuse the API.
fn remind_expiry(
    path: &std::path::Path,
    validity: CertificateValidity,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(not_after) = validity.not_after else {
        return false;
    };
    let cert = path.display();
    // Which one of the file: the one to renew.
    let certificate = certificate_place(validity.first_to_expire);
    match expiry_state(not_after, now) {
        ExpiryState::Expired => {
            tracing::error!(%cert, %certificate, %not_after, "tls certificate has expired: clients refuse the API");
        }
        ExpiryState::ExpiresSoon { days_left } => {
            tracing::warn!(%cert, %certificate, %not_after, days_left, "tls certificate expires soon");
        }
        ExpiryState::Valid => return false,
    }
    true
}

/// What the served certificate's expiry calls for.
#[derive(Debug, PartialEq, Eq)]
enum ExpiryState {
    Expired,
    ExpiresSoon { days_left: i64 },
    Valid,
}

fn expiry_state(
    not_after: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> ExpiryState {
    let left = not_after - now;
    if left <= chrono::TimeDelta::zero() {
        ExpiryState::Expired
    } else if left < CERTIFICATE_EXPIRY_WARNING {
        ExpiryState::ExpiresSoon {
            days_left: left.num_days(),
        }
    } else {
        ExpiryState::Valid
    }
}

/// A certificate expiring within this is logged as a warning (at start, at each reload and
/// daily), and is a `warn` line of `perimeter run --check`.
pub const CERTIFICATE_EXPIRY_WARNING: chrono::TimeDelta = chrono::TimeDelta::days(14);

/// How often a served certificate close to expiry (or expired) is logged again.
const EXPIRY_REMINDER: Duration = Duration::from_secs(24 * 3600);

/// Where the served certificate comes from, how often to look for a renewed one, and how
/// often to remind of its expiry.
struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    check_every: Option<Duration>,
    /// [`EXPIRY_REMINDER`] (shorter in tests).
    remind_every: Duration,
    /// Reloads asked for ([`CertificateReloader`]).
    reload_requests: Arc<tokio::sync::Notify>,
}

/// Asks a server to load its certificate and key files again now, whether or not they changed
/// (`perimeter run` on SIGHUP), as a renewal found by the file checks is: the same checks, and
/// a pair that does not load or is refused is logged as a warning, counted in
/// `tls_certificate_reloads_total{result="failed"}`, and the certificate in use stays. Requests
/// made while one is being handled make one more reload, not one each.
#[derive(Clone)]
pub struct CertificateReloader(Arc<tokio::sync::Notify>);

impl CertificateReloader {
    pub fn reload(&self) {
        self.0.notify_one();
    }
}

impl CertificateFiles {
    /// The files' modification times (what a renewal changes).
    fn stamp(&self) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
        let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(&self.cert)?, modified(&self.key)?))
    }

    /// Until the server stops: remind of the certificate's expiry every `remind_every` (also
    /// when renewals are not looked for: an expiring certificate needs its reminder all the
    /// more), and, with `check_every`, load the pair again whenever a file changed, and hand it
    /// to the listener; and whenever a reload is requested ([`CertificateReloader`]), changed
    /// or not. A renewal half written (the certificate new, the key still old) fails to
    /// load; it is retried at the next change, which the second file's write is. A renewal
    /// [`check_server_chain`] refuses (expired, a CA certificate) is not served either:
    /// the certificate in use stays. One not valid yet (issued a moment ahead of this clock)
    /// is tried again at each check until it is valid. A failure is counted and logged once
    /// per change of the files, and once per request.
    async fn watch(
        self,
        served: axum_server::tls_rustls::RustlsConfig,
        metrics: Arc<perimeter_model::Metrics>,
        mut validity: CertificateValidity,
    ) {
        let start = tokio::time::Instant::now();
        let every = |period: Duration| {
            let mut ticks = tokio::time::interval_at(start + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        };
        let mut reminders = every(self.remind_every);
        let mut checks = self.check_every.map(&every);
        let mut seen = self.stamp();
        // The files' stamp when a load last failed.
        let mut last_refused = None;
        loop {
            let requested = tokio::select! {
                _ = reminders.tick() => {
                    remind_expiry(&self.cert, validity, chrono::Utc::now());
                    continue;
                }
                _ = next_tick(&mut checks) => false,
                _ = self.reload_requests.notified() => true,
            };
            let now = self.stamp();
            if !requested && (now.is_none() || now == seen) {
                continue;
            }
            let (cert, key) = (self.cert.clone(), self.key.clone());
            let loaded = tokio::task::spawn_blocking(move || load_tls(&cert, &key))
                .await
                .map_err(|e| ServeError::Tls(e.to_string()))
                .and_then(|r| r);
            let not_yet_valid = matches!(
                loaded,
                Err(ServeError::Certificate {
                    problem: ChainProblem {
                        problem: CertificateProblem::NotYetValid { .. },
                        ..
                    },
                    ..
                })
            );
            // Counted and logged once per change, also while a not-yet-valid one is retried
            // (and once per request).
            let first_try = requested || last_refused != now;
            if !not_yet_valid {
                seen = now;
            }
            match loaded {
                Ok(loaded) => {
                    served.reload_from_config(loaded.config.clone());
                    metrics.inc("tls_certificate_reloads_total", &[("result", "ok")], 1);
                    tracing::info!(cert = %self.cert.display(), requested, "tls certificate reloaded");
                    loaded.report(&self.cert, &metrics);
                    validity = loaded.validity;
                    // Just reported: the next reminder is a whole period away.
                    reminders.reset();
                    last_refused = None;
                }
                Err(e) if first_try => {
                    last_refused = now;
                    metrics.inc("tls_certificate_reloads_total", &[("result", "failed")], 1);
                    tracing::warn!(
                        cert = %self.cert.display(),
                        requested,
                        error = %e,
                        "renewed tls certificate not loaded; the one in use stays"
                    );
                }
                Err(_) => {}
            }
        }
    }
}

/// A server whose config is validated and certificate (if any) loaded and checked, not bound
/// yet ([`Server::prepare`]): a caller that must refuse a bad certificate before it opens
/// anything else binds it later, without reading the certificate files a second time.
pub struct PreparedServer {
    listen: SocketAddr,
    tls: Option<(LoadedCertificate, CertificateFiles)>,
    grace: Duration,
    silence: Duration,
    max_connections: usize,
}

impl PreparedServer {
    /// What the listener will be.
    pub fn listener_check(&self) -> ListenerCheck {
        match &self.tls {
            None => ListenerCheck::Http,
            Some((tls, _)) => ListenerCheck::Https {
                certificate_expires: tls.validity.not_after,
                expiring_certificate: tls.validity.first_to_expire,
            },
        }
    }

    /// Asks the server, once it runs, to load its certificate again (`None` without TLS). A
    /// request made before it runs is handled when it starts.
    pub fn certificate_reloader(&self) -> Option<CertificateReloader> {
        self.tls
            .as_ref()
            .map(|(_, files)| CertificateReloader(files.reload_requests.clone()))
    }

    /// Bind the listen address, with the certificate loaded by [`Server::prepare`].
    pub fn bind(self) -> Result<Server, ServeError> {
        let listener =
            std::net::TcpListener::bind(self.listen).map_err(|source| ServeError::Bind {
                addr: self.listen,
                source,
            })?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            tls: self.tls,
            grace: self.grace,
            silence: self.silence,
            max_connections: self.max_connections,
            cutoff_gate: None,
        })
    }
}

/// The next tick of `ticks`; never when there are none.
async fn next_tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Server {
    /// Validate the config and load the certificate (if any) without binding: what
    /// [`Self::bind`] would refuse, short of an address in use.
    pub fn check(config: &ApiConfig) -> Result<ListenerCheck, ServeError> {
        Ok(Self::prepare(config)?.listener_check())
    }

    /// Validate the config and load the certificate (if any), to bind later
    /// ([`PreparedServer::bind`]).
    pub fn prepare(config: &ApiConfig) -> Result<PreparedServer, ServeError> {
        config.validate()?;
        let tls = match (&config.tls_cert_path, &config.tls_key_path) {
            (Some(cert), Some(key)) => Some((
                load_tls(cert, key)?,
                CertificateFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    check_every: (config.tls_reload_check_seconds > 0)
                        .then(|| Duration::from_secs(config.tls_reload_check_seconds)),
                    remind_every: EXPIRY_REMINDER,
                    reload_requests: Arc::default(),
                },
            )),
            _ => None,
        };
        Ok(PreparedServer {
            listen: config.listen,
            tls,
            grace: Duration::from_secs(config.shutdown_grace_seconds),
            silence: Duration::from_secs(config.client_silence_seconds.max(1)),
            max_connections: config.max_connections.max(1),
        })
    }

    /// Validate the config, load the certificate (if any) and bind.
    pub async fn bind(config: &ApiConfig) -> Result<Server, ServeError> {
        Self::prepare(config)?.bind()
    }

    /// Past the shutdown grace period, cut the open connections only once `may_cut` says so;
    /// it is called from then on until it does (the binary's ingest stops taking batches at
    /// the first call and owes answers for the ones it took, which will be stored: their
    /// clients must not be cut off). Without it they are cut when the grace period is over.
    pub fn hold_cutoff_while(mut self, may_cut: CutoffGate) -> Server {
        self.cutoff_gate = Some(may_cut);
        self
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.listener.local_addr()?)
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serve until `shutdown` completes, then stop accepting, mark the state not ready and
    /// let in-flight requests finish (up to `shutdown_grace_seconds`).
    pub async fn run(
        self,
        state: AppState,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        self.run_with(axum::Router::new(), None, state, shutdown)
            .await
    }

    /// [`Server::run`] with `extra` routes served beside the API on the same listener (the
    /// binary adds HTTP ingest this way, so one port and one TLS setup serve both), and
    /// `extra_doc`, their OpenAPI entries, in the served document.
    pub async fn run_with(
        self,
        extra: axum::Router,
        extra_doc: Option<utoipa::openapi::OpenApi>,
        state: AppState,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        // The extra routes' answers are counted too: a shipper refused for a revoked token
        // shows in `api_requests_total{status="401"}`.
        let extra = extra
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::mask_error_bodies,
            ))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::count_requests,
            ));
        // Outermost, so its 408 replaces whatever a handler answered to a body gone silent.
        let app = crate::router_documenting(state.clone(), extra_doc)
            .merge(extra)
            .layer(axum::middleware::from_fn_with_state(
                self.silence,
                crate::body_silence::answer_silent_bodies,
            ));
        let addr = self.local_addr()?;
        let handle = axum_server::Handle::new();
        let grace = self.grace;
        let silence = self.silence;
        let cap =
            crate::connection_cap::ConnectionCap::new(self.max_connections, state.metrics.clone());
        let signal = handle.clone();
        let metrics = state.metrics.clone();
        let parse_metrics = state.metrics.clone();
        let may_cut = self
            .cutoff_gate
            .clone()
            .unwrap_or_else(|| Arc::new(|| true));
        tokio::spawn(async move {
            shutdown.await;
            state.set_ready(false);
            // Stop accepting and let the open requests finish; the cutoff is ours, below
            // (axum-server's own deadline would cut off clients whose answers are owed).
            signal.graceful_shutdown(None);
            tokio::time::sleep(grace).await;
            let mut said = false;
            while !may_cut() {
                if !said {
                    said = true;
                    tracing::info!(
                        grace_seconds = grace.as_secs(),
                        "the shutdown grace period is over; waiting for the batches being stored to be answered"
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Say when requests were still open: their clients get no answer (an ingest
            // client resends; nothing of theirs was handed to the pipeline).
            let open = signal.connection_count();
            if open > 0 {
                tracing::warn!(
                    connections = open,
                    grace_seconds = grace.as_secs(),
                    "connections still open after the shutdown grace period were cut off"
                );
                signal.shutdown();
            }
        });
        let service = app
            .layer(axum::middleware::from_fn(crate::client::remember_client))
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        match self.tls {
            Some((tls, files)) => {
                tracing::info!(%addr, "api listening (https)");
                tls.report(&files.cert, &metrics);
                let config = axum_server::tls_rustls::RustlsConfig::from_config(tls.config);
                let watcher = tokio::spawn(files.watch(config.clone(), metrics, tls.validity));
                let _stop_watching = AbortOnDrop(watcher);
                let mut server = axum_server::from_tcp_rustls(self.listener, config)?
                    .map(|inner| crate::connection_cap::CappedAcceptor {
                        inner: JsonParseErrorsAcceptor(inner, parse_metrics.clone()),
                        cap: cap.clone(),
                    })
                    .handle(handle)
                    .first_request_timeout(silence);
                server.http_builder().http1().header_read_timeout(silence);
                server.serve(service).await?;
            }
            None => {
                tracing::info!(%addr, "api listening (http)");
                let mut server = axum_server::from_tcp(self.listener)?
                    .map(|inner| crate::connection_cap::CappedAcceptor {
                        inner: JsonParseErrorsAcceptor(inner, parse_metrics.clone()),
                        cap: cap.clone(),
                    })
                    .handle(handle)
                    .first_request_timeout(silence);
                server.http_builder().http1().header_read_timeout(silence);
                server.serve(service).await?;
            }
        }
        tracing::info!(%addr, "api stopped");
        Ok(())
    }
}

/// A listen address: `IP:port`, or `host:port` for a name this machine resolves (`localhost`;
/// its first IPv4 address, else its first). The error says what is expected.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let expected =
        "expected an address and port such as 127.0.0.1:8443, [::1]:8443 or localhost:8443";
    if !text.contains(':') {
        return Err(format!("`{text}` has no port: {expected}"));
    }
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("`{text}`: {e}; {expected}"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("`{text}` resolves to no address; {expected}"))
}

fn deserialize_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// Aborts a task when dropped (the certificate watcher ends with the server).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bind per `config` and serve `state` until `shutdown` completes.
pub async fn serve(
    config: ApiConfig,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Server::bind(&config).await?.run(state, shutdown).await
}

/// A PEM reading error for people: the marker a cut-short file lacks as text (rustls prints
/// its bytes as numbers).
fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "the file is cut short: `-----END {}-----` is missing",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "not a valid PEM section start: `{}`",
            String::from_utf8_lossy(line)
        ),
        Error::NoItemsFound => "no PEM item of the expected kind in the file".to_string(),
        other => other.to_string(),
    }
}

fn load_tls(
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<LoadedCertificate, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ServeError::Tls(format!(
                "certificate {}: {}",
                cert_path.display(),
                pem_problem(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "certificate {}: no certificate found",
            cert_path.display()
        )));
    }
    let validity = check_server_chain(&certs, chrono::Utc::now()).map_err(|problem| {
        ServeError::Certificate {
            path: cert_path.to_path_buf(),
            problem,
        }
    })?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        ServeError::Tls(format!(
            "private key {}: {}",
            key_path.display(),
            pem_problem(&e)
        ))
    })?;
    // An explicit provider: no process-wide default has to be installed by the binary.
    // aws-lc-rs offers the hybrid post-quantum key exchange first.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ServeError::Tls(format!(
                "certificate {} and private key {} do not belong together (or the key type is unsupported): {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(LoadedCertificate {
        config: Arc::new(config),
        validity,
    })
}

#[cfg(test)]
#[path = "../tests/api/certs.rs"]
mod certs;

#[cfg(test)]
#[path = "../../tests/support/captured_log.rs"]
mod captured_log;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    #[test]
    fn a_served_certificate_is_reminded_of_within_two_weeks_of_expiry() {
        let now = chrono::Utc::now();
        let days = chrono::TimeDelta::days;
        assert_eq!(expiry_state(now + days(90), now), ExpiryState::Valid);
        assert_eq!(
            expiry_state(now + days(3) + chrono::TimeDelta::hours(1), now),
            ExpiryState::ExpiresSoon { days_left: 3 }
        );
        assert_eq!(expiry_state(now, now), ExpiryState::Expired);
        assert_eq!(expiry_state(now - days(1), now), ExpiryState::Expired);
        let path = std::path::Path::new("server.pem");
        let expiring = |at| CertificateValidity {
            not_after: Some(at),
            first_to_expire: 1,
        };
        assert!(!remind_expiry(path, expiring(now + days(30)), now));
        assert!(remind_expiry(path, expiring(now + days(1)), now));
    }

    #[test]
    fn config_parses_and_rejects_unknown_fields() {
        let c: ApiConfig = toml_like(r#"{"listen": "0.0.0.0:9000"}"#).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.shutdown_grace_seconds, 10);
        assert!(toml_like(r#"{"listen": "0.0.0.0:9000", "tls": true}"#).is_err());
        let local: ApiConfig = toml_like(r#"{"listen": "localhost:9000"}"#).unwrap();
        assert!(local.listen.ip().is_loopback() && local.listen.port() == 9000);
        let e = toml_like(r#"{"listen": "9000"}"#).unwrap_err().to_string();
        assert!(
            e.contains("has no port") && e.contains("127.0.0.1:8443"),
            "{e}"
        );
        let half = ApiConfig {
            tls_cert_path: Some("c.pem".into()),
            ..ApiConfig::default()
        };
        assert!(half.validate().is_err());
    }

    fn toml_like(json: &str) -> Result<ApiConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// A self-signed certificate for localhost, valid from `not_before` to `not_after`.
    fn certificate(
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
        is_ca: bool,
    ) -> rcgen::CertifiedKey {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        if is_ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key_pair).unwrap();
        rcgen::CertifiedKey { cert, key_pair }
    }

    fn utc(text: &str) -> chrono::DateTime<chrono::Utc> {
        text.parse().unwrap()
    }

    /// A cut-short PEM file and a key of another certificate are errors naming the files and
    /// what is wrong, in words.
    #[test]
    fn unreadable_or_mismatched_tls_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now().date_naive();
        let (y, m) = (now.year(), now.month() as u8);
        let (ours, theirs) = (
            certificate((y - 1, m, 1), (y + 1, m, 1), false),
            certificate((y - 1, m, 1), (y + 1, m, 1), false),
        );
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let pem = ours.cert.pem();
        std::fs::write(&cert_path, &pem[..pem.len() / 2]).unwrap();
        std::fs::write(&key_path, ours.key_pair.serialize_pem()).unwrap();
        let error = load_tls(&cert_path, &key_path).err().unwrap().to_string();
        assert!(
            error.contains("cut short") && error.contains("-----END CERTIFICATE-----"),
            "{error}"
        );
        assert!(error.contains(&cert_path.display().to_string()), "{error}");
        std::fs::write(&cert_path, &pem).unwrap();
        std::fs::write(&key_path, theirs.key_pair.serialize_pem()).unwrap();
        let error = load_tls(&cert_path, &key_path).err().unwrap().to_string();
        assert!(
            error.contains(&cert_path.display().to_string())
                && error.contains(&key_path.display().to_string())
                && error.contains("do not belong together"),
            "{error}"
        );
        std::fs::write(&key_path, ours.key_pair.serialize_pem()).unwrap();
        assert!(load_tls(&cert_path, &key_path).is_ok());
    }

    #[test]
    fn a_server_certificate_must_be_valid_now_and_not_a_ca() {
        let cert = certificate((2026, 1, 1), (2027, 1, 1), false);
        let der = cert.cert.der();
        let check = |now: &str| check_server_certificate(der, utc(now));
        assert_eq!(
            check("2026-06-01T00:00:00Z"),
            Ok(CertificateValidity {
                not_after: Some(utc("2027-01-01T00:00:00Z")),
                first_to_expire: 0,
            })
        );
        assert_eq!(
            check("2027-01-01T00:00:01Z"),
            Err(CertificateProblem::Expired {
                not_after: utc("2027-01-01T00:00:00Z")
            })
        );
        assert_eq!(
            check("2025-12-31T23:59:59Z"),
            Err(CertificateProblem::NotYetValid {
                not_before: utc("2026-01-01T00:00:00Z")
            })
        );
        let ca = certificate((2026, 1, 1), (2027, 1, 1), true);
        assert_eq!(
            check_server_certificate(ca.cert.der(), utc("2026-06-01T00:00:00Z")),
            Err(CertificateProblem::CaCertificate)
        );
        // What is not a certificate x509-parser reads is left to rustls.
        assert_eq!(
            check_server_certificate(b"junk", utc("2026-06-01T00:00:00Z")),
            Ok(CertificateValidity {
                not_after: None,
                first_to_expire: 0,
            })
        );
        // The error names the file and says why.
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, ca.cert.pem()).unwrap();
        std::fs::write(&key_path, ca.key_pair.serialize_pem()).unwrap();
        let Err(e) = load_tls(&cert_path, &key_path) else {
            panic!("a CA certificate loaded for serving");
        };
        let e = e.to_string();
        assert!(
            e.contains(&cert_path.display().to_string()) && e.contains("CA:TRUE"),
            "{e}"
        );
    }

    /// The expiry reminder used to run only while renewals were looked for
    /// (`tls_reload_check_seconds` > 0): with `0`, a certificate expiring in days was said once,
    /// at start, and never again.
    #[test]
    fn the_expiry_reminder_runs_without_renewal_checks() {
        let log = super::captured_log::CapturedLog::default();
        let _logging = log.start();
        let today = chrono::Utc::now().date_naive();
        let in_three_days = today + chrono::Days::new(3);
        let date = |d: chrono::NaiveDate| (d.year(), d.month() as u8, d.day() as u8);
        let cert = certificate(
            date(today - chrono::Days::new(30)),
            date(in_three_days),
            false,
        );
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
        let Ok(loaded) = load_tls(&cert_path, &key_path) else {
            panic!("the certificate did not load");
        };
        let files = CertificateFiles {
            cert: cert_path,
            key: key_path,
            check_every: None,
            remind_every: Duration::from_millis(20),
            reload_requests: Arc::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let served = axum_server::tls_rustls::RustlsConfig::from_config(loaded.config);
            let metrics = Arc::new(perimeter_model::Metrics::new());
            let watcher = tokio::spawn(files.watch(served, metrics, loaded.validity));
            tokio::time::sleep(Duration::from_millis(300)).await;
            watcher.abort();
        });
        let text = log.text();
        assert!(
            text.matches("tls certificate expires soon").count() >= 2,
            "{text}"
        );
    }

    /// Only the server's own certificate used to be checked: a chain file whose intermediate
    /// had expired was served, and every client refused it.
    #[test]
    fn every_certificate_of_the_chain_must_be_valid_now() {
        let now = chrono::Utc::now().date_naive();
        let (y, m) = (now.year(), now.month() as u8);
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
        let load = |(chain, key): (String, rcgen::KeyPair)| {
            std::fs::write(&cert_path, chain).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            load_tls(&cert_path, &key_path)
        };
        for (from, until, expected) in [
            (
                (2020, 1, 1),
                (2021, 1, 1),
                "expired on 2021-01-01 00:00:00 UTC",
            ),
            (
                (4000, 1, 1),
                (4001, 1, 1),
                "not valid before 4000-01-01 00:00:00 UTC",
            ),
        ] {
            let Err(e) = load(super::certs::chain_through_intermediate(from, until)) else {
                panic!("a chain with a refused intermediate loaded ({expected})");
            };
            let e = e.to_string();
            assert!(
                e.contains(&cert_path.display().to_string())
                    && e.contains("certificate #2 in the file (a chain certificate, subject `CN=Test Intermediate`)")
                    && e.contains(expected),
                "{e}"
            );
        }
        // Valid, the chain loads, and its expiry is the intermediate's (before the server's own).
        let Ok(loaded) = load(super::certs::chain_through_intermediate(
            (y - 1, m, 1),
            (y + 1, m, 1),
        )) else {
            panic!("a valid chain did not load");
        };
        assert_eq!(
            loaded.validity.not_after.map(|t| t.date_naive()),
            chrono::NaiveDate::from_ymd_opt(y + 1, m as u32, 1)
        );
        assert_eq!(loaded.validity.first_to_expire, 1, "the intermediate");
        // A self-signed root at the end of the file (as fullchain files kept the expired DST
        // Root CA X3) is no part of a client's path: its dates are not the chain's.
        let (chain, key) = super::certs::chain_through_intermediate((y - 1, m, 1), (y + 1, m, 1));
        let old_root_key = rcgen::KeyPair::generate().unwrap();
        let mut old_root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        old_root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        old_root.not_before = rcgen::date_time_ymd(2000, 1, 1);
        old_root.not_after = rcgen::date_time_ymd(2021, 9, 30);
        let old_root = old_root.self_signed(&old_root_key).unwrap();
        let Ok(loaded) = load((format!("{chain}{}", old_root.pem()), key)) else {
            panic!("an expired root after the chain refused it");
        };
        assert_eq!(
            loaded.validity.not_after.map(|t| t.date_naive()),
            chrono::NaiveDate::from_ymd_opt(y + 1, m as u32, 1)
        );
        // The server's own certificate is named as such.
        let expired = certificate((2020, 1, 1), (2021, 1, 1), false);
        let e = check_server_chain(&[expired.cert.der()], utc("2026-06-01T00:00:00Z")).unwrap_err();
        assert_eq!(
            (e.index, e.subject.as_str()),
            (0, "CN=rcgen self signed cert")
        );
        assert!(
            e.to_string()
                .starts_with("certificate #1 in the file (the server's own, subject"),
            "{e}"
        );
    }

    /// Whether a rustls client trusting `cert` itself completes a handshake with a server
    /// presenting it (in memory; the `perimeter` CLI's client is rustls too).
    fn handshake(cert: &rcgen::CertifiedKey) -> Result<(), rustls::Error> {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(
            cert.key_pair.serialize_pem().as_bytes(),
        )
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    /// Why a CA certificate is refused for serving: clients refuse it, even one that trusts
    /// that very certificate (webpki's `CaUsedAsEndEntity`).
    #[test]
    fn rustls_clients_refuse_a_ca_certificate_as_the_servers_own() {
        assert_eq!(
            handshake(&certificate((2020, 1, 1), (4000, 1, 1), false)),
            Ok(())
        );
        let refused = handshake(&certificate((2020, 1, 1), (4000, 1, 1), true))
            .expect_err("a CA certificate was accepted as the server's");
        assert!(
            format!("{refused:?}").contains("CaUsedAsEndEntity"),
            "{refused:?}"
        );
    }
}
