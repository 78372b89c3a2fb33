//! End-to-end, rpcaps:// between xrpcapd and xrpcap-sensor (issue 18 item 5,
//! TLS part): the agent is the TLS server in both modes, the sensor the TLS
//! client on the control and the TCP data connections. Certificates are made
//! at test time with the openssl CLI (testkit::tls). Real binaries, real
//! packets (TESTING.md topology); needs root (marked `needs root`).
//!
//! - Active mode, the agent requiring a client certificate (TlsClientCa):
//!   the sensor's --tls-cert satisfies it, the capture is byte-exact
//!   against tcpdump on the captured link, both connections are TLS; a
//!   peer that never answers the ClientHello, connected first, holds up
//!   nothing.
//! - Passive mode (--connect) with --tls-pin: byte-exact likewise; the pin
//!   alone does not check the certificate's name.
//! - A public key pin (`--tls-pin sha256//BASE64`, curl's form, computed
//!   by openssl): the agent's certificate re-issued for the same key is
//!   still accepted (byte-exact); the old certificate's pin refuses the new
//!   certificate, another key's pin refuses it, with a clear log line.
//! - A wrong CA, a wrong pin, a wrong name: refused with a clear error in
//!   the sensor's log, and no capture; each refusal counted on /metrics
//!   (`xrpcap_sensor_tls_refused_total`), logged at WARN once for the
//!   agent however often it redials.

use std::path::Path;
use std::time::Duration;

use xrpcap_testkit::daemon::{count_of, START_TIMEOUT};
use xrpcap_testkit::prometheus::http_get_in;
use xrpcap_testkit::tls::{fingerprint, make_ca, reissue, spki_pin};
use xrpcap_testkit::{
    bin_path, numbered_payloads, require_root, send_udp, wait_for_packets, wait_until, Agent,
    Child, Sensor, Tcpdump, Topology,
};

const ARRIVAL: Duration = Duration::from_secs(20);
const COUNT: u32 = 200;
const DST_PORT: u16 = 5000;
/// The passive agent's port.
const AGENT_PORT: u16 = 2002;
/// The sensor's metrics endpoint, in ns sen.
const METRICS: &str = "127.0.0.1:9466";

use xrpcap_testkit::netns::sock_addr as addr;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The agent's TLS keys, with `extra` ini lines.
fn tls_ini(dir: &Path, extra: &str) -> String {
    format!(
        "NullAuthPermit = YES\nMaxBackoffSecs = 1\nTlsCert = {}\nTlsKey = {}\n{extra}",
        dir.join("server.pem").display(),
        dir.join("server.key").display(),
    )
}

fn active_line() -> String {
    format!(
        "ActiveClient = {}, {}, ifname={}\n",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    )
}

/// COUNT datagrams gen → cap:DST_PORT while `agent` captures; the sensor's
/// file must equal tcpdump's on the captured link, byte for byte.
fn capture_is_byte_exact(topo: &Topology, sensor: &mut Sensor, agent: &mut Child, tmp: &Path) {
    let tcpdump = Tcpdump::start(
        &topo.cap,
        Topology::CAP_IF,
        &tmp.join("c0.pcap"),
        &format!("udp dst port {DST_PORT}"),
    )
    .unwrap();
    agent
        .wait_for_output("capture on c0 started", START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", sensor.log()));
    // The TCP data connection (and its TLS handshake) comes after that
    // line: what is sent before it is up may be missed (as passive.rs waits).
    std::thread::sleep(Duration::from_millis(1000));
    let _sink = topo
        .cap
        .udp_socket(addr(Topology::CAP_IP, DST_PORT))
        .unwrap();
    let payloads = numbered_payloads(COUNT, 300);
    send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 40000),
        addr(Topology::CAP_IP, DST_PORT),
        &payloads,
    )
    .unwrap();
    let file = sensor.the_file().unwrap();
    let arrived = wait_for_packets(&file, COUNT as usize, ARRIVAL);
    let reference = tcpdump.stop().unwrap();
    if let Err(e) = arrived {
        panic!(
            "{e:#} (tcpdump saw {})\n{}\n{}",
            reference.len(),
            sensor.log(),
            agent.stderr()
        );
    }
    let status = agent.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{}", agent.describe());
    sensor.stop().unwrap();
    let got = sensor.packets().unwrap();
    assert_eq!(reference.len(), COUNT as usize, "tcpdump on c0");
    assert_eq!(got.len(), reference.len(), "frames in the sensor's file");
    for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
        assert_eq!((g.len, g.caplen), (r.len, r.caplen), "lengths of frame {i}");
        assert!(g.data == r.data, "bytes of frame {i} differ from tcpdump's");
    }
    let c = sensor.final_counters(0).unwrap();
    assert_eq!(c.get("packets"), u64::from(COUNT), "{c:?}");
    assert_eq!(c.get("lost"), 0, "{c:?}");
    // Control and data connection were both TLS (the agent, as the TLS
    // server, logs the suite of each).
    let log = agent.stderr();
    assert!(
        log.matches("decided upon suite").count() >= 2,
        "two TLS connections expected:\n{log}"
    );
}

#[test]
#[ignore = "needs root"]
fn active_rpcaps_with_a_client_certificate_is_byte_exact() {
    require_root();
    let topo = Topology::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The agent is seen from UPLINK_IP: the name the sensor checks.
    let sans = format!("IP:{}", Topology::UPLINK_IP);
    make_ca(
        d,
        "ca",
        &[("server", "serverAuth"), ("client", "clientAuth")],
        &sans,
    );
    let listen = addr(Topology::SEN_IP, Topology::SEN_PORT);
    let (ca, cert, key) = (d.join("ca.pem"), d.join("client.pem"), d.join("client.key"));
    let mut sensor = Sensor::start(
        &topo.sen,
        listen,
        &[
            "--tcp-data",
            "--filter",
            "udp dst port 5000",
            "--tls-ca",
            path(&ca),
            "--tls-cert",
            path(&cert),
            "--tls-key",
            path(&key),
        ],
    )
    .unwrap();
    // A peer that connects and never answers the ClientHello: its handshake
    // must not hold up the agent's (the loop does not block on it).
    let _silent = topo
        .cap
        .enter(|| std::net::TcpStream::connect(listen))
        .unwrap()
        .unwrap();
    sensor
        .wait_log("connected (active mode)", 1, Duration::from_secs(5))
        .unwrap();
    let ini = tls_ini(
        d,
        &format!(
            "{}TlsMode = required\nTlsClientCa = {}\n",
            active_line(),
            ca.display()
        ),
    );
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    capture_is_byte_exact(&topo, &mut sensor, agent.child(), d);
    assert!(
        sensor.log().contains("(TLS)"),
        "the TCP data channel is TLS:\n{}",
        sensor.log()
    );
}

#[test]
#[ignore = "needs root"]
fn passive_rpcaps_with_a_pinned_certificate_is_byte_exact() {
    require_root();
    let topo = Topology::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A name the sensor could not match: a pin does not check it.
    make_ca(d, "ca", &[("server", "serverAuth")], "DNS:agent.invalid");
    let pin = fingerprint(&d.join("server.pem"));
    let agent_addr = addr(Topology::UPLINK_IP, AGENT_PORT).to_string();
    // Passive mode (testkit's Agent runs active-only, -v).
    let ini = d.join("rpcapd.ini");
    std::fs::write(&ini, tls_ini(d, "TlsMode = required\n")).unwrap();
    let mut cmd = topo.cap.command(bin_path("xrpcapd"));
    cmd.args(["-D", "-f", path(&ini), "-b", Topology::UPLINK_IP])
        .args(["-p", &AGENT_PORT.to_string()]);
    let mut agent = Child::spawn("xrpcapd", cmd).unwrap();
    xrpcap_testkit::wait_tcp_listen(&topo.cap, AGENT_PORT, Duration::from_secs(10)).unwrap();
    let listen = addr(Topology::SEN_IP, Topology::SEN_PORT);
    let mut sensor = Sensor::start(
        &topo.sen,
        listen,
        &[
            "--tcp-data",
            "--filter",
            "udp dst port 5000",
            "--ifname",
            Topology::CAP_IF,
            "--connect",
            &agent_addr,
            "--tls-pin",
            &pin,
        ],
    )
    .unwrap();
    capture_is_byte_exact(&topo, &mut sensor, &mut agent, d);
}

#[test]
#[ignore = "needs root"]
fn a_pinned_public_key_holds_across_a_reissued_certificate() {
    require_root();
    let topo = Topology::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A name the sensor could not match: a pin alone does not check it.
    make_ca(d, "ca", &[("server", "serverAuth")], "DNS:agent.invalid");
    make_ca(
        d,
        "other",
        &[("stranger", "serverAuth")],
        "DNS:agent.invalid",
    );
    let old_cert = fingerprint(&d.join("server.pem"));
    let key_pin = spki_pin(&d.join("server.pem"));
    // The agent's certificate re-issued for the same key: it runs with
    // that one (server.pem becomes the new certificate, tls_ini's name).
    std::fs::rename(d.join("server.pem"), d.join("server-old.pem")).unwrap();
    reissue(d, "ca", "server", "server");
    assert_ne!(
        fingerprint(&d.join("server.pem")),
        old_cert,
        "a new certificate"
    );
    assert_eq!(spki_pin(&d.join("server.pem")), key_pin, "the same key");
    let ini = tls_ini(d, &format!("{}TlsMode = required\n", active_line()));

    let listen = addr(Topology::SEN_IP, Topology::SEN_PORT);
    let mut sensor = Sensor::start(
        &topo.sen,
        listen,
        &[
            "--tcp-data",
            "--filter",
            "udp dst port 5000",
            "--tls-pin",
            &key_pin,
        ],
    )
    .unwrap();
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    capture_is_byte_exact(&topo, &mut sensor, agent.child(), d);

    // The old certificate's pin no longer fits; another key's neither.
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    refused(&topo, &["--tls-pin", &old_cert], "matches no --tls-pin");
    let stranger = spki_pin(&d.join("stranger.pem"));
    let log = refused(&topo, &["--tls-pin", &stranger], "matches no --tls-pin");
    // The line names what the agent presented, in the pins' own forms.
    assert!(
        log.contains(&format!("public key {key_pin})")),
        "the agent's key pin in the refusal:\n{log}"
    );
    let log = agent.stop().unwrap();
    assert!(!log.contains("capture on c0 started"), "{log}");
}

/// The sensor started with `tls` against an active agent whose certificate
/// does not satisfy it: the session ends with `error` in the sensor's log,
/// the agent never captures, no file is written. The agent redials (every
/// second): each refusal is counted, the first one logged at WARN.
fn refused(topo: &Topology, tls: &[&str], error: &str) -> String {
    let listen = addr(Topology::SEN_IP, Topology::SEN_PORT);
    let mut args = vec!["--tcp-data", "--metrics-listen", METRICS];
    args.extend(tls);
    let mut sensor = Sensor::start(&topo.sen, listen, &args).unwrap();
    sensor
        .wait_log(error, 1, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let refusals = || -> u64 {
        let (_, page) =
            http_get_in(topo.sen.name(), METRICS.parse().unwrap(), "/metrics", None).unwrap();
        page.lines()
            .find_map(|l| l.strip_prefix("xrpcap_sensor_tls_refused_total "))
            .unwrap_or_else(|| panic!("no tls_refused_total in\n{page}"))
            .parse()
            .unwrap()
    };
    wait_until(Duration::from_secs(15), "two refusals counted", || {
        Ok(refusals() >= 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sensor.log()));
    let log = sensor.stop().unwrap();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("refused the agent's certificate:"))
        .collect();
    assert_eq!(warned.len(), 1, "one WARN for the agent:\n{log}");
    assert!(warned[0].contains(error), "the reason in {warned:?}");
    assert!(
        warned[0].contains(&format!("agent {}:", Topology::UPLINK_IP)),
        "the agent in {warned:?}"
    );
    assert!(
        count_of(&log, "refused the agent's certificate again:") >= 1,
        "later refusals at debug level:\n{log}"
    );
    assert!(sensor.files().unwrap().is_empty(), "no capture:\n{log}");
    assert!(!log.contains("capturing"), "{log}");
    log
}

#[test]
#[ignore = "needs root"]
fn a_wrong_ca_pin_or_name_is_refused_without_a_capture() {
    require_root();
    let topo = Topology::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sans = format!("IP:{}", Topology::UPLINK_IP);
    make_ca(d, "ca", &[("server", "serverAuth")], &sans);
    make_ca(d, "other", &[], &sans);
    let mut agent = Agent::start(
        &topo.cap,
        &tls_ini(d, &format!("{}TlsMode = required\n", active_line())),
        &[],
    )
    .unwrap();
    let (ca, other) = (d.join("ca.pem"), d.join("other.pem"));
    refused(
        &topo,
        &["--tls-ca", path(&other)],
        "invalid peer certificate: UnknownIssuer",
    );
    let wrong_pin = fingerprint(&other);
    refused(&topo, &["--tls-pin", &wrong_pin], "matches no --tls-pin");
    refused(
        &topo,
        &["--tls-ca", path(&ca), "--tls-name", "elsewhere.example"],
        "certificate not valid for name \"elsewhere.example\"",
    );
    let log = agent.stop().unwrap();
    assert!(!log.contains("capture on c0 started"), "{log}");
}
