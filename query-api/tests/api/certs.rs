//! Certificates for TLS tests: self-signed ones made to measure, written where a server reads
//! them. Shared by the query API's tests and the service tests (`#[path]`).

use std::path::Path;

/// A self-signed certificate for `localhost` and its key, its parameters changed by `edit`
/// first (validity, CA flag).
pub fn self_signed(edit: &dyn Fn(&mut rcgen::CertificateParams)) -> rcgen::CertifiedKey {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    edit(&mut params);
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key_pair).unwrap();
    rcgen::CertifiedKey { cert, key_pair }
}

/// Write `made`'s certificate and key as PEM to `cert_path` and `key_path`.
pub fn write_pem(made: &rcgen::CertifiedKey, cert_path: &Path, key_path: &Path) {
    std::fs::write(cert_path, made.cert.pem()).unwrap();
    std::fs::write(key_path, made.key_pair.serialize_pem()).unwrap();
}
