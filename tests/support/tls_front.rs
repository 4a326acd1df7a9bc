//! A TLS terminator in front of the test Kafka broker, as a TLS sidecar or a load balancer
//! terminating TLS stands in front of brokers in some deployments: clients reach the broker only
//! through TLS, their certificate checks are librdkafka's own (OpenSSL), and behind the front
//! the bytes go on to the broker's plaintext listener. The test broker's own TLS listener does
//! not come up in the build the tests use (ADR 019), so this is how the bus is tested over TLS.
//!
//! The broker must advertise the front's address (`KafkaBroker::start_advertising`): clients
//! open every later connection to what the broker's metadata names.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A certificate authority and a server certificate for `localhost` it signed.
pub struct TestCa {
    /// The authority's certificate (PEM): what a client trusts.
    pub ca_pem: String,
    pub server_cert: rustls::pki_types::CertificateDer<'static>,
    pub server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Perimeter Test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
        TestCa {
            ca_pem: ca.pem(),
            server_cert: server.der().clone(),
            server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        }
    }
}

/// The front: a loopback port taken when it is made (so the broker can advertise it), serving
/// once [`TlsFront::forward_to`] names the broker.
pub struct TlsFront {
    listener: Option<TcpListener>,
    pub addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsFront {
    pub fn bind() -> TlsFront {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().unwrap();
        TlsFront {
            listener: Some(listener),
            addr,
            handshakes: Arc::default(),
            refused: Arc::default(),
            runtime: None,
        }
    }

    /// `localhost:<port>`: the name the server certificate is for, so clients check it.
    pub fn address(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    /// Serve TLS with `ca`'s server certificate and pass each connection's bytes on to
    /// `upstream`.
    pub fn forward_to(&mut self, upstream: SocketAddr, ca: &TestCa) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ca.server_cert.clone()], ca.server_key.clone_key())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = self.listener.take().expect("forwarding once");
        listener.set_nonblocking(true).unwrap();
        let (handshakes, refused) = (self.handshakes.clone(), self.refused.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, handshakes, refused) =
                    (acceptor.clone(), handshakes.clone(), refused.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate hangs up here.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut broker) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                });
            }
        });
        self.runtime = Some(runtime);
    }

    /// Connections that completed a TLS handshake.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Connections whose handshake failed (the client refused the certificate).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
