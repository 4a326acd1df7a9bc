//! HTTPS with rustls when a certificate is configured.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::util::TestApi;
use perimeter_query_api::ApiConfig;
use rustls::pki_types::ServerName;

/// One HTTP/1.1 request over TLS, trusting only `ca_der`.
fn https_get(
    addr: &str,
    ca_der: &rustls::pki_types::CertificateDer<'static>,
    path: &str,
) -> std::io::Result<String> {
    https_get_with_group(addr, ca_der, path).map(|(response, _)| response)
}

/// [`https_get`], with the key exchange group the handshake settled on.
fn https_get_with_group(
    addr: &str,
    ca_der: &rustls::pki_types::CertificateDer<'static>,
    path: &str,
) -> std::io::Result<(String, Option<rustls::NamedGroup>)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connection =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut response = String::new();
    let read = match tls.read_to_string(&mut response) {
        Ok(_) => Ok(response),
        // Servers may close without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {
            Ok(response)
        }
        Err(e) => Err(e),
    };
    let group = tls.conn.negotiated_key_exchange_group().map(|g| g.name());
    read.map(|response| (response, group))
}

#[test]
fn serves_https_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();

    let api = TestApi::start_with(ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert_path: Some(cert_path),
        tls_key_path: Some(key_path),
        ..ApiConfig::default()
    });
    assert!(api.base.starts_with("https://"));
    let addr = api.base.trim_start_matches("https://").to_string();

    // Poll readiness over TLS with a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        match https_get(&addr, cert.cert.der(), "/healthz") {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => panic!("no TLS answer: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("{\"status\":\"ok\"}"), "{response}");

    // Authenticated API over TLS: no token is still a JSON 401.
    let (response, group) = https_get_with_group(&addr, cert.cert.der(), "/api/v1/alerts").unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    // A client offering the hybrid post-quantum key exchange gets it (a server on rustls's
    // ring provider, which has no ML-KEM, would settle on a classical group).
    assert_eq!(group, Some(rustls::NamedGroup::X25519MLKEM768));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::blocking::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send();
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[test]
fn bad_tls_config_is_an_error_not_a_plain_http_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert_path: Some(cert_path.clone()),
        tls_key_path: Some(dir.path().join("missing-key.pem")),
        ..ApiConfig::default()
    };
    let err = rt
        .block_on(perimeter_query_api::Server::bind(&config))
        .err()
        .expect("bind must fail");
    assert!(err.to_string().contains("TLS"), "{err}");
    let half = ApiConfig {
        tls_cert_path: Some(cert_path),
        ..config
    };
    let half = ApiConfig {
        tls_key_path: None,
        ..half
    };
    assert!(rt
        .block_on(perimeter_query_api::Server::bind(&half))
        .is_err());
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart_and_a_bad_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let write = |c: &rcgen::CertifiedKey| crate::certs::write_pem(c, &cert_path, &key_path);
    let first = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    write(&first);
    let api = TestApi::start_with(ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert_path: Some(cert_path.clone()),
        tls_key_path: Some(key_path.clone()),
        tls_reload_check_seconds: 1,
        ..ApiConfig::default()
    });
    let addr = api.base.trim_start_matches("https://").to_string();
    let served_by = |c: &rcgen::CertifiedKey| https_get(&addr, c.cert.der(), "/healthz").is_ok();
    let until = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    until("the first certificate is served", &|| served_by(&first));

    // The expiry gauge and the reload counters, from /metrics over the served certificate.
    let metric = |c: &rcgen::CertifiedKey, name: &str| -> Option<f64> {
        let text = https_get(&addr, c.cert.der(), "/metrics").unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(|v| v.trim().parse().unwrap())
    };
    let expiry = "perimeter_tls_certificate_expiry_timestamp_seconds";
    // rcgen's default validity ends on 4096-01-01.
    assert_eq!(metric(&first, expiry), Some(67_090_118_400.0));

    // Renewed in place (as certbot does): new connections get the new certificate.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2099, 6, 30);
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key_pair).unwrap();
    let renewed = rcgen::CertifiedKey { cert, key_pair };
    write(&renewed);
    until("the renewed certificate is served", &|| served_by(&renewed));
    assert!(
        !served_by(&first),
        "the old certificate is no longer served"
    );
    assert_eq!(metric(&renewed, expiry), Some(4_086_460_800.0));
    let reloads = r#"perimeter_tls_certificate_reloads_total{result="ok"}"#;
    assert_eq!(metric(&renewed, reloads), Some(1.0));

    // A broken renewal is not loaded: the certificate in use stays, the failure is counted.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let failed = r#"perimeter_tls_certificate_reloads_total{result="failed"}"#;
    until("the failed reload is counted", &|| {
        metric(&renewed, failed).is_some()
    });
    assert!(served_by(&renewed));
    assert_eq!(metric(&renewed, expiry), Some(4_086_460_800.0));
}

#[test]
fn a_renewal_that_is_expired_or_a_ca_certificate_is_refused_and_the_served_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let write = |c: &rcgen::CertifiedKey| crate::certs::write_pem(c, &cert_path, &key_path);
    let made = crate::certs::self_signed;
    let good = made(&|_| {});
    write(&good);
    let api = TestApi::start_with(ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert_path: Some(cert_path.clone()),
        tls_key_path: Some(key_path.clone()),
        tls_reload_check_seconds: 1,
        ..ApiConfig::default()
    });
    let addr = api.base.trim_start_matches("https://").to_string();
    let served_by = |c: &rcgen::CertifiedKey| https_get(&addr, c.cert.der(), "/healthz").is_ok();
    let until = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    until("the good certificate is served", &|| served_by(&good));
    let metric = |name: &str| -> Option<f64> {
        let text = https_get(&addr, good.cert.der(), "/metrics").unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(|v| v.trim().parse().unwrap())
    };
    let failed = r#"perimeter_tls_certificate_reloads_total{result="failed"}"#;
    let expiry = "perimeter_tls_certificate_expiry_timestamp_seconds";
    // rcgen's default validity ends on 4096-01-01.
    assert_eq!(metric(expiry), Some(67_090_118_400.0));

    // An expired certificate (a renewal job that copied an old file) is counted as a failed
    // reload, and the good one stays served; so does a CA certificate.
    let expired = made(&|p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let ca = made(&|p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained));
    let not_yet = made(&|p| p.not_before = rcgen::date_time_ymd(4000, 1, 1));
    for (n, refused) in [&expired, &ca, &not_yet].into_iter().enumerate() {
        // A check between the two writes sees the pair changed twice: at least one more.
        let before = metric(failed).unwrap_or(0.0);
        write(refused);
        until("the refused reload is counted", &|| {
            metric(failed).unwrap_or(0.0) > before
        });
        assert!(served_by(&good), "the good certificate stays ({n})");
        assert!(!served_by(refused), "the refused one is not served ({n})");
        assert_eq!(metric(expiry), Some(67_090_118_400.0));
    }
    // A not-yet-valid one is tried again at each check, but counted once.
    let counted = metric(failed);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(metric(failed), counted);
    let ok = r#"perimeter_tls_certificate_reloads_total{result="ok"}"#;
    assert_eq!(metric(ok), None);
}
