//! AWS Signature Version 4 for the S3 `GET`s the CloudTrail poller makes (no body): the
//! `Authorization`, `x-amz-date`, `x-amz-content-sha256` (and `x-amz-security-token`) headers.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::{Digest, Sha256};

/// SHA-256 of the empty body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Credentials for one request.
pub(crate) struct AwsCredentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 percent-encoding as SigV4 wants it: everything but `A-Za-z0-9-_.~` (and `/` in
/// paths).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The headers that sign a `GET` of `url` for S3 at `now`.
pub(crate) fn sign_get(
    url: &Url,
    creds: &AwsCredentials<'_>,
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let day = now.format("%Y%m%d").to_string();
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    // The path as S3 names the object: decoded, then encoded the SigV4 way.
    let path: String = url
        .path_segments()
        .map(|segments| {
            segments
                .map(|s| {
                    let decoded = percent_decode(s);
                    encode(&decoded, false)
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default();
    let canonical_uri = format!("/{path}");
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (encode(&k, false), encode(&v, false)))
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers: Vec<(&'static str, String)> = vec![
        ("host", host),
        ("x-amz-content-sha256", EMPTY_SHA256.to_string()),
        ("x-amz-date", amz_date.clone()),
    ];
    if let Some(token) = creds.session_token {
        headers.push(("x-amz-security-token", token.to_string()));
    }
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "GET\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{EMPTY_SHA256}"
    );
    let scope = format!("{day}/{}/s3/aws4_request", creds.region);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let key = [creds.region, "s3", "aws4_request"].iter().fold(
        hmac(format!("AWS4{}", creds.secret_access_key).as_bytes(), &day),
        |key, part| hmac(&key, part),
    );
    let signature = hex::encode(hmac(&key, &string_to_sign));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    );
    // `host` is set by the HTTP client from the URL.
    headers.retain(|(k, _)| *k != "host");
    headers.push(("authorization", authorization));
    headers
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signatures computed by botocore (`S3SigV4Auth`) for the same requests, credentials and
    /// time: AWS's documented example keys, 2013-05-24T00:00:00Z, us-east-1.
    #[test]
    fn signatures_match_the_reference_implementation() {
        let creds = AwsCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "us-east-1",
        };
        let now = DateTime::parse_from_rfc3339("2013-05-24T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let sig = |url: &str, creds: &AwsCredentials<'_>| {
            let headers = sign_get(&Url::parse(url).unwrap(), creds, now);
            let auth = &headers
                .iter()
                .find(|(k, _)| *k == "authorization")
                .unwrap()
                .1;
            auth.rsplit("Signature=").next().unwrap().to_string()
        };
        assert_eq!(
            sig(
                "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J",
                &creds
            ),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
        assert_eq!(
            sig("http://127.0.0.1:9000/trail-bucket/AWSLogs/1/CloudTrail/us-east-1/2024/01/02/a%20b.json.gz", &creds),
            "923176ead73270b86290534f93efa2d8de75c813fb15f4cccf7e1a2b955f47a4"
        );
        let with_token = AwsCredentials {
            session_token: Some("FwoGZXIvYXdzEXAMPLE"),
            ..creds
        };
        assert_eq!(
            sig(
                "https://trail.s3.us-east-1.amazonaws.com/?list-type=2&prefix=AWSLogs%2F1%2F&start-after=AWSLogs%2F1%2Fx.json.gz",
                &with_token
            ),
            "332d4d7acb517413653a70c03e97fc051935a3764d0bb4fdf746f4b98f7e80d8"
        );
    }
}
