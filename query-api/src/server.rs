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
    /// restart (certbot, cert-manager). A pair that does not load is logged and the one in use
    /// stays. `0`: never.
    #[serde(default = "default_tls_reload_check_seconds")]
    pub tls_reload_check_seconds: u64,
    /// How long in-flight requests may take to finish after shutdown is requested.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
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
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound listener, not yet serving: lets the caller learn the port (when `listen` had
/// port 0) before requests arrive.
pub struct Server {
    listener: std::net::TcpListener,
    tls: Option<(LoadedCertificate, CertificateFiles)>,
    grace: Duration,
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
    /// With when the certificate expires (`None`: its validity could not be read).
    Https {
        certificate_expires: Option<chrono::DateTime<chrono::Utc>>,
    },
}

/// A certificate pair loaded for serving, and when its (leaf) certificate expires.
struct LoadedCertificate {
    config: Arc<rustls::ServerConfig>,
    /// `None` when the certificate's validity could not be read (rustls accepted it anyway).
    not_after: Option<chrono::DateTime<chrono::Utc>>,
}

impl LoadedCertificate {
    /// Say when the certificate expires: in the log (a warning within [`EXPIRY_WARNING`], an
    /// error once expired) and as the gauge `perimeter_tls_certificate_expiry_timestamp_seconds`,
    /// for an alert well before clients start to refuse the API.
    fn report(&self, path: &std::path::Path, metrics: &perimeter_model::Metrics) {
        let Some(not_after) = self.not_after else {
            tracing::warn!(cert = %path.display(), "tls certificate expiry could not be read");
            return;
        };
        metrics.set(
            "tls_certificate_expiry_timestamp_seconds",
            &[],
            not_after.timestamp() as f64,
        );
        let left = not_after - chrono::Utc::now();
        let cert = path.display();
        if left <= chrono::TimeDelta::zero() {
            tracing::error!(%cert, %not_after, "tls certificate has expired: clients refuse the API");
        } else if left < EXPIRY_WARNING {
            tracing::warn!(%cert, %not_after, days_left = left.num_days(), "tls certificate expires soon");
        } else {
            tracing::info!(%cert, %not_after, "tls certificate valid");
        }
    }
}

/// A certificate expiring within this is logged as a warning (at start and at each reload).
const EXPIRY_WARNING: chrono::TimeDelta = chrono::TimeDelta::days(14);

/// Where the served certificate comes from, and how often to look for a renewed one.
struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    check_every: Option<Duration>,
}

impl CertificateFiles {
    /// The files' modification times (what a renewal changes).
    fn stamp(&self) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
        let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(&self.cert)?, modified(&self.key)?))
    }

    /// Until the server stops: load the pair again whenever a file changed, and hand it to
    /// the listener. A renewal half written (the certificate new, the key still old) fails to
    /// load; it is retried at the next change, which the second file's write is.
    async fn watch(
        self,
        served: axum_server::tls_rustls::RustlsConfig,
        metrics: Arc<perimeter_model::Metrics>,
    ) {
        let Some(every) = self.check_every else {
            return;
        };
        let mut seen = self.stamp();
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let now = self.stamp();
            if now.is_none() || now == seen {
                continue;
            }
            seen = now;
            let (cert, key) = (self.cert.clone(), self.key.clone());
            let loaded = tokio::task::spawn_blocking(move || load_tls(&cert, &key))
                .await
                .map_err(|e| ServeError::Tls(e.to_string()))
                .and_then(|r| r);
            match loaded {
                Ok(loaded) => {
                    served.reload_from_config(loaded.config.clone());
                    metrics.inc("tls_certificate_reloads_total", &[("result", "ok")], 1);
                    tracing::info!(cert = %self.cert.display(), "tls certificate reloaded");
                    loaded.report(&self.cert, &metrics);
                }
                Err(e) => {
                    metrics.inc("tls_certificate_reloads_total", &[("result", "failed")], 1);
                    tracing::error!(
                        error = %e,
                        "renewed tls certificate not loaded; the one in use stays"
                    );
                }
            }
        }
    }
}

impl Server {
    /// Validate the config and load the certificate (if any) without binding: what
    /// [`Self::bind`] would refuse, short of an address in use.
    pub fn check(config: &ApiConfig) -> Result<ListenerCheck, ServeError> {
        Ok(match Self::tls_of(config)? {
            None => ListenerCheck::Http,
            Some((tls, _)) => ListenerCheck::Https {
                certificate_expires: tls.not_after,
            },
        })
    }

    fn tls_of(
        config: &ApiConfig,
    ) -> Result<Option<(LoadedCertificate, CertificateFiles)>, ServeError> {
        config.validate()?;
        Ok(match (&config.tls_cert_path, &config.tls_key_path) {
            (Some(cert), Some(key)) => Some((
                load_tls(cert, key)?,
                CertificateFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    check_every: (config.tls_reload_check_seconds > 0)
                        .then(|| Duration::from_secs(config.tls_reload_check_seconds)),
                },
            )),
            _ => None,
        })
    }

    /// Validate the config, load the certificate (if any) and bind.
    pub async fn bind(config: &ApiConfig) -> Result<Server, ServeError> {
        let tls = Self::tls_of(config)?;
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            tls,
            grace: Duration::from_secs(config.shutdown_grace_seconds),
            cutoff_gate: None,
        })
    }

    /// Past the shutdown grace period, cut the open connections only once `may_cut` says so
    /// (the binary's ingest owes answers for batches that will be stored: their clients must
    /// not be cut off). Without it they are cut when the grace period is over.
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
        let app = crate::router_documenting(state.clone(), extra_doc).merge(extra);
        let addr = self.local_addr()?;
        let handle = axum_server::Handle::new();
        let grace = self.grace;
        let signal = handle.clone();
        let metrics = state.metrics.clone();
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
        let service = app.into_make_service();
        match self.tls {
            Some((tls, files)) => {
                tracing::info!(%addr, "api listening (https)");
                tls.report(&files.cert, &metrics);
                let config = axum_server::tls_rustls::RustlsConfig::from_config(tls.config);
                let watcher = tokio::spawn(files.watch(config.clone(), metrics));
                let _stop_watching = AbortOnDrop(watcher);
                axum_server::from_tcp_rustls(self.listener, config)?
                    .map(JsonParseErrorsAcceptor)
                    .handle(handle)
                    .serve(service)
                    .await?;
            }
            None => {
                tracing::info!(%addr, "api listening (http)");
                axum_server::from_tcp(self.listener)?
                    .map(JsonParseErrorsAcceptor)
                    .handle(handle)
                    .serve(service)
                    .await?;
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

fn load_tls(
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<LoadedCertificate, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::Tls(format!("certificate {}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "certificate {}: no certificate found",
            cert_path.display()
        )));
    }
    // The leaf is first in the chain.
    let not_after = certificate_not_after(&certs[0]);
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| ServeError::Tls(format!("private key {}: {e}", key_path.display())))?;
    // An explicit provider: no process-wide default has to be installed by the binary.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("certificate/key mismatch or unsupported: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(LoadedCertificate {
        config: Arc::new(config),
        not_after,
    })
}

/// When a DER certificate stops being valid.
fn certificate_not_after(der: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
