//! Certificates for TLS tests: self-signed ones made to measure, written where a server reads
//! them. Shared by the query API's tests and the service tests (`#[path]`).

// Each test crate that includes this file uses part of it.
#![allow(dead_code)]

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

/// A server certificate for localhost signed by an intermediate valid from
/// `intermediate_from` to `intermediate_until`, itself signed by a long-lived root: the
/// chain file's text (server's own, then the intermediate) and the server's key.
pub fn chain_through_intermediate(
    intermediate_from: (i32, u8, u8),
    intermediate_until: (i32, u8, u8),
) -> (String, rcgen::KeyPair) {
    let ca = |name: &str, from: (i32, u8, u8), until: (i32, u8, u8)| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        params
    };
    let root_key = rcgen::KeyPair::generate().unwrap();
    let root = ca("Test Root", (2020, 1, 1), (4000, 1, 1))
        .self_signed(&root_key)
        .unwrap();
    let intermediate_key = rcgen::KeyPair::generate().unwrap();
    let intermediate = ca("Test Intermediate", intermediate_from, intermediate_until)
        .signed_by(&intermediate_key, &root, &root_key)
        .unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(4000, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = params
        .signed_by(&key, &intermediate, &intermediate_key)
        .unwrap();
    (format!("{}{}", leaf.pem(), intermediate.pem()), key)
}
