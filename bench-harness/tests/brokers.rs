//! End-to-end: the harness against real brokers (Mosquitto, shardmq) on free loopback ports.
//! The Mosquitto tests are skipped (with a message) only when /usr/sbin/mosquitto is
//! not installed; the shardmq tests run the broker built in this workspace.
//! No timing assertions: only that the counts add up.

// Test helpers (outside #[test] fns, so allow-unwrap-in-tests misses them): a panic is the report.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The tests run one at a time: no port races between them, and no
/// generator competing with another for the CPUs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Broker {
    _serial: std::sync::MutexGuard<'static, ()>,
    child: Child,
    port: u16,
    dir: PathBuf,
    label: &'static str,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts Mosquitto, or returns None (after saying so) when it is not installed.
fn start_mosquitto(name: &str) -> Option<Broker> {
    if !Path::new(MOSQUITTO).exists() {
        println!(
            "SKIPPED: {MOSQUITTO} is not installed; install the mosquitto package to run this test"
        );
        return None;
    }
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("shardmq-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Retry on the (unlikely) race where someone takes the free port first.
    for _ in 0..5 {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        // No queue limit (0): these tests check the generator's exact accounting,
        // and a Mosquitto slowed by a busy machine drops QoS 1 floods beyond its
        // queue limit (measured: 74,792 of a 4-client flood at 100,000).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Make sure the listener is ours: a Mosquitto that could not
                // bind exits at once.
                std::thread::sleep(Duration::from_millis(100));
                if child.try_wait().unwrap().is_none() {
                    return Some(Broker { _serial: serial, child, port, dir, label: "mosquitto" });
                }
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break; // exited: port taken? try another
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("could not start mosquitto");
}

/// Starts the shardmq broker built beside this crate (2 shards) on a free port.
fn start_shardmq(name: &str) -> Broker {
    let port = free_port();
    let args = ["--listen", &format!("127.0.0.1:{port}"), "--cores", "2"];
    spawn_shardmq(name, &args, &[port], |_| {})
}

/// Starts the shardmq binary built beside this harness (same target directory and
/// profile: `cargo build` builds it; `SHARDMQ_BIN` points elsewhere) with `args`,
/// after `setup` wrote what they name into the broker's directory, and waits until
/// every port of `ports` accepts. The harness talks to `ports[0]`.
fn spawn_shardmq(name: &str, args: &[&str], ports: &[u16], setup: impl FnOnce(&Path)) -> Broker {
    let bin = std::env::var("SHARDMQ_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        Path::new(env!("CARGO_BIN_EXE_shardmq-bench")).with_file_name("shardmq")
    });
    assert!(bin.exists(), "{} not found: build the broker first (cargo build)", bin.display());
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("shardmq-bench-sq-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    setup(&dir);
    let child = Command::new(&bin)
        .args(args)
        .args(["--log-level", "warn"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    for &port in ports {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "shardmq did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Broker { _serial: serial, child, port: ports[0], dir, label: "shardmq" }
}

/// Runs the harness, returns its JSON report.
fn bench(broker: &Broker, name: &str, args: &[&str]) -> Value {
    let json = broker.dir.join(format!("{name}.json"));
    let hlog = broker.dir.join(format!("{name}.hlog"));
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq-bench"))
        .args(args)
        .args(["--host", "127.0.0.1", "--port", &broker.port.to_string()])
        .args(["--cores", "1", "--no-progress", "--label", broker.label])
        .args(["--broker-pid", &broker.child.id().to_string()])
        .arg("--json")
        .arg(&json)
        .arg("--hdr-log")
        .arg(&hlog)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(out.status.success(), "shardmq-bench {args:?} failed: {stderr}");
    assert!(stdout.contains("latency") || stdout.contains("CONNACK"), "no table printed");
    let hdr = std::fs::read_to_string(&hlog).unwrap();
    assert!(hdr.contains("#[StartTime:") && hdr.lines().any(|l| l.starts_with("Tag=")));
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or_else(|| panic!("{path} missing in {v}"))
}

/// sent x fan-out = received + lost, and nothing lost or duplicated.
fn check_exact_delivery(r: &Value, fanout: u64) {
    let sent = u(r, "/results/sent");
    let expected = u(r, "/results/expected");
    let received = u(r, "/results/received_unique");
    let lost = u(r, "/results/lost");
    assert!(sent > 0, "nothing sent");
    assert_eq!(expected, sent * fanout, "expected deliveries");
    assert_eq!(expected, received + lost, "counts do not add up");
    assert_eq!(lost, 0, "loss at QoS {}", u(r, "/config/qos"));
    assert_eq!(u(r, "/results/duplicates"), 0, "duplicates");
    assert_eq!(u(r, "/results/duplicates_total"), 0, "duplicates");
    assert_eq!(u(r, "/results/corrupt"), 0);
    assert_eq!(u(r, "/results/protocol_errors"), 0);
    assert_eq!(u(r, "/results/unacked"), 0);
    assert!(u(r, "/results/latency_us/count") == received);
    // Broker figures were sampled.
    assert!(r.pointer("/broker/cpu_s").and_then(Value::as_f64).is_some());
    assert!(u(r, "/broker/rss_peak_kib") > 0);
    assert!(r.pointer("/machine/nproc").and_then(Value::as_u64).unwrap_or(0) > 0);
}

#[test]
fn pairs_qos2_has_no_loss_and_no_duplicates() {
    let Some(b) = start_mosquitto("pairs") else {
        return;
    };
    let r = bench(
        &b,
        "pairs",
        &[
            "pairs",
            "--qos",
            "2",
            "--clients",
            "4",
            "--rate",
            "2000",
            "--duration",
            "2",
            "--warmup",
            "0.5",
        ],
    );
    check_exact_delivery(&r, 1);
    assert_eq!(u(&r, "/config/subscribers"), 4);
}

#[test]
fn fan_in_qos1_has_no_loss() {
    let Some(b) = start_mosquitto("fanin") else {
        return;
    };
    let r = bench(
        &b,
        "fanin",
        &[
            "fan-in",
            "--qos",
            "1",
            "--clients",
            "6",
            "--subscribers",
            "2",
            "--topics",
            "3",
            "--rate",
            "3000",
            "--duration",
            "2",
            "--warmup",
            "0.5",
        ],
    );
    check_exact_delivery(&r, 2);
    // Wildcard subscriptions (+ and #) see the same messages.
    let r = bench(
        &b,
        "wildcard",
        &[
            "fan-in",
            "--wildcard",
            "--qos",
            "1",
            "--clients",
            "4",
            "--subscribers",
            "2",
            "--rate",
            "2000",
            "--duration",
            "1",
            "--warmup",
            "0.2",
        ],
    );
    check_exact_delivery(&r, 2);
}

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path).and_then(Value::as_f64).unwrap_or_else(|| panic!("{path} missing in {v}"))
}

#[test]
fn write_modes_packet_and_coalesced() {
    let Some(b) = start_mosquitto("writes") else {
        return;
    };
    let flood = ["fan-in", "--qos", "1", "--clients", "4", "--duration", "1", "--warmup", "0.2"];
    // The default: one packet per write, whatever the flood.
    let r = bench(&b, "packet", &flood);
    check_exact_delivery(&r, 1);
    assert_eq!(r.pointer("/config/write_mode").and_then(Value::as_str), Some("packet"));
    assert!(u(&r, "/results/publisher_writes") >= u(&r, "/results/sent"));
    assert_eq!(f(&r, "/results/packets_per_write"), 1.0);
    // Coalesced: a flood packs many PUBLISH packets into each write.
    let r = bench(&b, "coalesced", &[&flood[..], &["--write-mode", "coalesced"]].concat());
    check_exact_delivery(&r, 1);
    assert!(r.pointer("/case").and_then(Value::as_str).unwrap().ends_with("coalesced"));
    assert!(f(&r, "/results/packets_per_write") > 1.0, "{r}");
}

#[test]
fn connections_fleet_trickle_and_reconnect_storm() {
    let Some(b) = start_mosquitto("fleet") else {
        return;
    };
    let args = [
        "connections",
        "--clients",
        "200",
        "--qos",
        "1",
        "--clean-session",
        "false",
        "--trickle-per-min",
        "600",
        "--reconnect-storm",
        "--settle",
        "0.5",
        "--duration",
        "1.5",
        "--warmup",
        "0.2",
        "--source-addrs",
        "127.0.0.1,127.0.0.2",
    ];
    let r = bench(&b, "fleet", &args);
    assert_eq!(u(&r, "/results/connections/ok"), 200);
    assert_eq!(u(&r, "/results/connections/failed"), 0);
    assert_eq!(u(&r, "/results/connections/connack_us/count"), 200);
    assert!(f(&r, "/results/connections/per_s") > 0.0);
    // Each device publishes every 100 ms to its own topic and gets it back.
    let sent = u(&r, "/results/connections/trickle_sent");
    let received = u(&r, "/results/connections/trickle_received");
    assert!(sent >= 200, "trickle sent {sent}");
    assert!(received > 0 && received <= sent, "trickle received {received} of {sent}");
    assert!(f(&r, "/broker/rss_per_conn_bytes") > 0.0);
    assert!(f(&r, "/broker/cpu_us_per_conn_s") > 0.0);
    // The storm: everyone back, and Mosquitto kept every persistent session.
    assert_eq!(u(&r, "/results/connections/storm/reconnected"), 200);
    assert_eq!(u(&r, "/results/connections/storm/session_present"), 200);
    assert_eq!(u(&r, "/results/connections/storm/connack_us/count"), 200);
    assert!(u(&r, "/results/connections/storm/rss_settled_kib") > 0);
    assert!(f(&r, "/results/connections/storm/settle_s") >= 0.5);
}

#[test]
fn conn_storm_and_compare() {
    let Some(b) = start_mosquitto("conn") else {
        return;
    };
    let r = bench(&b, "conn", &["conn", "--rate", "500", "--duration", "1", "--warmup", "0.2"]);
    let attempts = u(&r, "/results/connections/attempts");
    assert!(attempts > 0);
    assert_eq!(u(&r, "/results/connections/ok"), attempts);
    assert_eq!(u(&r, "/results/connections/failed"), 0);
    assert_eq!(u(&r, "/results/connections/connack_us/count"), attempts);

    // compare renders the report into Markdown and SVG.
    let md = b.dir.join("cmp.md");
    let svg = b.dir.join("cmp.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq-bench"))
        .arg("compare")
        .arg(b.dir.join("conn.json"))
        .arg("--md")
        .arg(&md)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("| case | metric | mosquitto |"), "{md}");
    assert!(md.contains("CONNACKs/s"));
    assert!(std::fs::read_to_string(svg).unwrap().starts_with("<svg"));
}

#[test]
fn shardmq_pairs_qos2_has_no_loss_and_no_duplicates() {
    let b = start_shardmq("pairs");
    let args = ["pairs", "--qos", "2", "--clients", "4", "--rate", "2000", "--duration", "2"];
    let r = bench(&b, "pairs", &[&args[..], &["--warmup", "0.5"]].concat());
    check_exact_delivery(&r, 1);
}

#[test]
fn shardmq_fan_in_qos1_has_no_loss() {
    let b = start_shardmq("fanin");
    let args = ["fan-in", "--qos", "1", "--clients", "4", "--subscribers", "2", "--duration", "2"];
    let r = bench(&b, "fanin", &[&args[..], &["--warmup", "0.5"]].concat());
    check_exact_delivery(&r, 2);
}

/// Several `--host` entries: one broker listening on two ports stands in for
/// two cluster nodes, so every message arrives whatever the placement, and the
/// report says which client went where.
#[test]
fn shardmq_clients_are_spread_over_several_hosts() {
    let (first, second) = (free_port(), free_port());
    let listen = [format!("127.0.0.1:{first}"), format!("127.0.0.1:{second}")];
    let args = ["--listen", &listen[0], "--listen", &listen[1], "--cores", "2"];
    let b = spawn_shardmq("hosts", &args, &[first, second], |_| {});
    // `bench` adds `--host 127.0.0.1 --port <first>`: the hosts are [second, first].
    let hosts = ["--host", &listen[1], "--duration", "1", "--warmup", "0.5"];
    let placed = |r: &Value| -> Vec<(u64, u64)> {
        let hosts = r.pointer("/config/hosts").and_then(Value::as_array).unwrap();
        hosts.iter().map(|h| (u(h, "/subscribers"), u(h, "/publishers"))).collect()
    };
    let pairs = ["pairs", "--qos", "1", "--clients", "4", "--rate", "2000"];
    let r = bench(&b, "pairs", &[&pairs[..], &hosts].concat());
    check_exact_delivery(&r, 1);
    assert_eq!(placed(&r), [(2, 2), (2, 2)]);
    let addrs = format!("{},{}", listen[1], listen[0]);
    assert_eq!(r.pointer("/config/broker_addr").and_then(Value::as_str), Some(&*addrs));
    let fan_in = ["fan-in", "--qos", "1", "--clients", "4", "--subscribers", "1", "--rate", "2000"];
    let r = bench(&b, "fanin", &[&fan_in[..], &hosts].concat());
    check_exact_delivery(&r, 1);
    assert_eq!(placed(&r), [(1, 0), (0, 4)]);
}

/// Writes a CA and a server certificate for 127.0.0.1 (an IP SAN) signed by it,
/// made for this run: `ca.pem`, `server.pem` and `server.key` in `dir`.
fn write_test_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "shardmq-bench test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = server.signed_by(&key, &Issuer::from_params(&ca, &ca_key)).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[test]
fn shardmq_fan_in_over_tls_websocket_and_both() {
    let (mqtts, ws, wss) = (free_port(), free_port(), free_port());
    let config = format!(
        "[[listener]]\nkind = \"mqtts\"\nbind = \"127.0.0.1:{mqtts}\"\n\
         cert = \"server.pem\"\nkey = \"server.key\"\n\
         [[listener]]\nkind = \"ws\"\nbind = \"127.0.0.1:{ws}\"\n\
         [[listener]]\nkind = \"wss\"\nbind = \"127.0.0.1:{wss}\"\n\
         cert = \"server.pem\"\nkey = \"server.key\"\n"
    );
    // One shard: with two, a debug build of the broker trips the assertion of
    // `process_handshake` (src/shard/sockets.rs) that a link handed to the shard
    // owning its client id is not sending, when the TLS handshake's last records
    // are still going out as CONNECT arrives.
    let args = ["--config", "shardmq.toml", "--cores", "1"];
    let mut b = spawn_shardmq("tls", &args, &[mqtts, ws, wss], |dir| {
        write_test_certificates(dir);
        std::fs::write(dir.join("shardmq.toml"), config).unwrap();
    });
    let ca = b.dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let fan_in = ["fan-in", "--qos", "1", "--clients", "2", "--rate", "2000", "--duration", "1"];
    for (port, transport, flags) in [
        (mqtts, "tls", &["--tls", "--cafile", ca][..]),
        (ws, "ws", &["--ws"][..]),
        (wss, "wss", &["--ws", "/mqtt", "--tls", "--cafile", ca][..]),
    ] {
        b.port = port;
        let r = bench(&b, transport, &[&fan_in[..], &["--warmup", "0.2"], flags].concat());
        check_exact_delivery(&r, 1);
        assert_eq!(r.pointer("/config/transport").and_then(Value::as_str), Some(transport));
        assert!(r
            .pointer("/case")
            .and_then(Value::as_str)
            .unwrap()
            .ends_with(&format!("{transport} @2000/s")));
        let session = r.pointer("/config/tls_session").and_then(Value::as_str);
        assert_eq!(session.is_some(), transport != "ws", "{session:?}");
    }
    // A certificate that the CA does not vouch for fails the handshake.
    b.port = mqtts;
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq-bench"))
        .args(["conn", "--clients", "1", "--duration", "0.5", "--warmup", "0", "--cores", "1"])
        .args(["--port", &mqtts.to_string(), "--no-progress", "--tls", "--cafile", ca])
        .args(["--tls-server-name", "broker.example"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 connection attempts failed") && stdout.contains("TLS"), "{stdout}");
}
