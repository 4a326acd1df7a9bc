//! A webhook receiver on loopback for tests, shared by the query-api tests, the notifier's unit
//! tests (`src/destinations.rs`) and the binary's service tests (`tests/service.rs`), which
//! include this file by path; each uses part of it.
#![allow(dead_code)]

/// A webhook endpoint on loopback: refuses the first `fail_first` requests with a 500, then
/// answers 200 and keeps the bodies.
pub struct WebhookReceiver {
    addr: std::net::SocketAddr,
    /// (signature header, body) of each accepted request.
    bodies: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl WebhookReceiver {
    pub fn start(fail_first: usize) -> WebhookReceiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (kept, seen) = (bodies.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let (mut length, mut signature) = (0usize, String::new());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if let Some(v) = lower.strip_prefix("x-perimeter-signature:") {
                        signature = v.trim().to_string();
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let status = if n < fail_first {
                    "500 Internal Server Error"
                } else {
                    let body = String::from_utf8_lossy(&body).into_owned();
                    kept.lock().unwrap().push((signature, body));
                    "200 OK"
                };
                let _ = reader.get_mut().write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        WebhookReceiver {
            addr,
            bodies,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn bodies(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    pub fn signatures(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// The first body received, waiting for it up to `deadline` (blocking); panics after.
    pub fn wait_for_body(&self, deadline: std::time::Duration) -> String {
        let until = std::time::Instant::now() + deadline;
        while std::time::Instant::now() < until {
            if let Some(first) = self.bodies().into_iter().next() {
                return first;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no webhook delivery within {deadline:?}");
    }
}
