//! End-to-end, what the systemd units rely on, without systemd (PID 1 of the
//! test machines is not systemd):
//!
//! - sd_notify: the real binaries with `NOTIFY_SOCKET` set to a unix
//!   datagram socket the test reads and `WATCHDOG_USEC` set: READY=1 with a
//!   STATUS=, STATUS= following the sensors and captures, WATCHDOG=1 at half
//!   the period, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM.
//! - The hardened agent unit's privileges: xrpcapd as an unprivileged user
//!   with only CAP_NET_RAW+CAP_NET_ADMIN (ambient, as the unit's
//!   `AmbientCapabilities=`; bounding set and no_new_privs as the unit's)
//!   still captures with AF_PACKET and forwards to a sensor.
//! - `UserName`: started as root the agent drops to the user keeping those
//!   two capabilities, and still forwards; not root, another user is a WARN.
//!
//! Needs root (namespaces); real packets on the test's own namespaces.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xrpcap_testkit::daemon::START_TIMEOUT;
use xrpcap_testkit::{
    bin_path, numbered_payloads, require_root, send_udp, wait_for_packets, wait_until, Child,
    Netns, Topology,
};

const ARRIVAL: Duration = Duration::from_secs(20);
/// The capabilities the unit gives: CAP_NET_ADMIN (12) and CAP_NET_RAW (13).
const NET_CAPS: u64 = (1 << 12) | (1 << 13);
const NOBODY: u32 = 65534;

use xrpcap_testkit::netns::sock_addr as addr;

/// A unix datagram socket standing in for systemd's notify socket: every
/// message received, with when it arrived.
struct NotifySocket {
    path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(dir: &Path, name: &str) -> NotifySocket {
        let path = dir.join(name);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    g.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        NotifySocket {
            path,
            got,
            stop,
            reader: Some(reader),
        }
    }

    fn messages(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for a message containing the line `line`; returns its index.
    fn wait_line(&self, line: &str, after: usize) -> usize {
        let mut at = None;
        wait_until(START_TIMEOUT, line, || {
            at = self
                .messages()
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, (_, m))| m.lines().any(|l| l.starts_with(line)))
                .map(|(i, _)| i);
            Ok(at.is_some())
        })
        .unwrap_or_else(|e| panic!("{e:#}\nmessages: {:#?}", self.texts()));
        at.unwrap()
    }

    fn texts(&self) -> Vec<String> {
        self.messages().into_iter().map(|(_, m)| m).collect()
    }

    /// The times of the WATCHDOG=1 messages.
    fn pings(&self) -> Vec<Instant> {
        self.messages()
            .into_iter()
            .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
            .map(|(t, _)| t)
            .collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The pings come every half of `period`: never sooner (give or take the
/// clock), never a whole period apart (systemd would kill the service).
fn assert_rhythm(pings: &[Instant], period: Duration, what: &str) {
    let half = period / 2;
    assert!(pings.len() >= 5, "{what}: {} pings in 3 s", pings.len());
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= half.mul_f64(0.9) && gap < period,
            "{what}: a ping {gap:?} after the previous one (every {half:?} expected)"
        );
    }
}

/// A directory everyone may read (the unprivileged agent reads its ini there).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("xrpcap-test-systemd-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn write_ini(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("rpcapd.ini");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn active_ini(extra: &str) -> String {
    format!(
        "ActiveClient = {}, {}, ifname={}\nNullAuthPermit = YES\nMaxBackoffSecs = 1\n{extra}",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    )
}

/// xrpcap-sensor in ns sen writing into `out`, with `env`.
fn start_sensor(topo: &Topology, out: &Path, env: &[(&str, String)]) -> Child {
    let mut cmd = topo.sen.command(bin_path("xrpcap-sensor"));
    cmd.arg("--listen")
        .arg(addr(Topology::SEN_IP, Topology::SEN_PORT).to_string())
        .arg("--out")
        .arg(out)
        .args(["--stats-interval", "1", "--summary-interval", "3600"])
        .env("RUST_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Child::spawn("xrpcap-sensor", cmd).unwrap();
    child
        .wait_for_output("listening for active agents", START_TIMEOUT)
        .unwrap();
    child
}

/// xrpcapd `-f ini -v` in ns cap, run through `wrapper` (e.g. setpriv) if any.
fn start_agent(ns: &Netns, ini: &Path, wrapper: &[&str], env: &[(&str, String)]) -> Child {
    let mut cmd = if let Some((first, rest)) = wrapper.split_first() {
        let mut c = ns.command(first);
        c.args(rest).arg(bin_path("xrpcapd"));
        c
    } else {
        ns.command(bin_path("xrpcapd"))
    };
    cmd.arg("-f").arg(ini).arg("-v").env("RUST_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Child::spawn("xrpcapd", cmd).unwrap()
}

fn wait_log(child: &mut Child, needle: &str) {
    let found = wait_until(START_TIMEOUT, needle, || {
        if child.try_wait()?.is_some() {
            anyhow::bail!("exited");
        }
        Ok(child.stderr().contains(needle))
    });
    if let Err(e) = found {
        panic!("{e:#}\n{}", child.describe());
    }
}

/// Sends 20 numbered datagrams gen → cap:5000 and waits for them in the
/// sensor's one capture file.
fn forwards(topo: &Topology, out: &Path) {
    let _sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    let payloads = numbered_payloads(20, 100);
    send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 4000),
        addr(Topology::CAP_IP, 5000),
        &payloads,
    )
    .unwrap();
    let mut file = None;
    wait_until(START_TIMEOUT, "the sensor's capture file", || {
        file = std::fs::read_dir(out)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            // NAME.pcap.part while the sensor writes it.
            .find(|p| p.extension().is_some_and(|e| e == "pcap" || e == "part"));
        Ok(file.is_some())
    })
    .unwrap();
    let got = wait_for_packets(&file.unwrap(), 20, ARRIVAL).unwrap();
    assert_eq!(got.len(), 20);
}

/// The `key:\tvalue` line of /proc/PID/status.
fn proc_status(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn caps_of(pid: u32, set: &str) -> u64 {
    u64::from_str_radix(&proc_status(pid, set), 16).unwrap()
}

/// Uid/Gid and the capability sets of every thread of `pid`.
fn assert_runs_as(pid: u32, uid: u32) {
    let ids: Vec<u32> = proc_status(pid, "Uid")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(ids, [uid; 4], "real, effective, saved, fs uid");
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        let eff = text
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(eff, NET_CAPS, "CapEff of thread {tid}");
    }
    assert_eq!(caps_of(pid, "CapPrm"), NET_CAPS, "CapPrm");
    assert_eq!(caps_of(pid, "CapBnd"), NET_CAPS, "CapBnd");
}

/// Both binaries speak sd_notify: READY with a status, statuses that follow
/// the sensors and captures, WATCHDOG=1 every half WATCHDOG_USEC, RELOADING
/// and READY around SIGHUP, STOPPING on SIGTERM.
#[test]
#[ignore = "needs root"]
fn agent_and_sensor_notify_systemd() {
    require_root();
    let topo = Topology::new().unwrap();
    let dir = open_dir();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let watchdog = Duration::from_millis(1000);
    let wd = watchdog.as_micros().to_string();
    let sensor_sock = NotifySocket::bind(dir.path(), "sensor.sock");
    let agent_sock = NotifySocket::bind(dir.path(), "agent.sock");
    let env = |s: &NotifySocket| {
        vec![
            ("NOTIFY_SOCKET", s.path.to_string_lossy().into_owned()),
            ("WATCHDOG_USEC", wd.clone()),
        ]
    };
    let mut sensor = start_sensor(&topo, &out, &env(&sensor_sock));
    let first = sensor_sock.wait_line("READY=1", 0);
    assert!(
        sensor_sock.texts()[first].contains("STATUS=0 agents, 0 captures"),
        "{:?}",
        sensor_sock.texts()
    );

    let ini = write_ini(dir.path(), &active_ini(""));
    let mut agent = start_agent(&topo.cap, &ini, &[], &env(&agent_sock));
    let ready = agent_sock.wait_line("READY=1", 0);
    assert_eq!(ready, 0, "READY=1 comes first: {:?}", agent_sock.texts());
    assert!(
        agent_sock.texts()[0].contains("STATUS=0/1 sensors capturing, 0 captures"),
        "{:?}",
        agent_sock.texts()
    );
    agent_sock.wait_line("STATUS=1/1 sensors capturing, 1 capture", 0);
    sensor_sock.wait_line("STATUS=1 agent, 1 capture", 0);
    forwards(&topo, &out);

    // Three seconds of pings at half the period.
    std::thread::sleep(Duration::from_secs(3));
    assert_rhythm(&agent_sock.pings(), watchdog, "agent");
    assert_rhythm(&sensor_sock.pings(), watchdog, "sensor");

    let n = agent_sock.messages().len();
    agent.signal("HUP").unwrap();
    let reloading = agent_sock.wait_line("RELOADING=1", n);
    assert!(agent_sock.texts()[reloading].contains("MONOTONIC_USEC="));
    agent_sock.wait_line("READY=1", reloading);
    let n = sensor_sock.messages().len();
    sensor.signal("HUP").unwrap();
    let reloading = sensor_sock.wait_line("RELOADING=1", n);
    sensor_sock.wait_line("READY=1", reloading);

    let n = agent_sock.messages().len();
    assert!(agent.stop(Duration::from_secs(10)).unwrap().success());
    agent_sock.wait_line("STOPPING=1", n);
    sensor_sock.wait_line("STATUS=0 agents, 0 captures", 0);
    let n = sensor_sock.messages().len();
    assert!(sensor.stop(Duration::from_secs(10)).unwrap().success());
    sensor_sock.wait_line("STOPPING=1", n);
}

/// The packaged unit's privileges: an unprivileged user, CAP_NET_RAW and
/// CAP_NET_ADMIN ambient, nothing else in the bounding set, no_new_privs —
/// AF_PACKET capture works and forwards. A UserName naming another user is
/// ignored with a WARN (the unit's User= decides).
#[test]
#[ignore = "needs root"]
fn the_units_privileges_capture_and_forward() {
    require_root();
    let topo = Topology::new().unwrap();
    let dir = open_dir();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut sensor = start_sensor(&topo, &out, &[]);
    let ini = write_ini(dir.path(), &active_ini("UserName = daemon\n"));
    let nobody = NOBODY.to_string();
    let setpriv = [
        "setpriv",
        "--reuid",
        &nobody,
        "--regid",
        &nobody,
        "--clear-groups",
        "--inh-caps=-all,+net_raw,+net_admin",
        "--ambient-caps=+net_raw,+net_admin",
        "--bounding-set=-all,+net_raw,+net_admin",
        "--no-new-privs",
        "--",
    ];
    let mut agent = start_agent(&topo.cap, &ini, &setpriv, &[]);
    wait_log(&mut agent, "capture on c0 started");
    assert_runs_as(agent.id(), NOBODY);
    assert_eq!(proc_status(agent.id(), "NoNewPrivs"), "1");
    assert!(
        agent
            .stderr()
            .contains("UserName = daemon ignored: not started as root"),
        "{}",
        agent.describe()
    );
    forwards(&topo, &out);
    assert!(agent.stop(Duration::from_secs(10)).unwrap().success());
    assert!(sensor.stop(Duration::from_secs(10)).unwrap().success());
}

/// Started as root with `UserName = nobody`, the agent runs as nobody with
/// CAP_NET_RAW+CAP_NET_ADMIN only (every thread, bounding set too) and
/// still captures and forwards.
#[test]
#[ignore = "needs root"]
fn user_name_drops_root_and_still_forwards() {
    require_root();
    let topo = Topology::new().unwrap();
    let dir = open_dir();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut sensor = start_sensor(&topo, &out, &[]);
    let ini = write_ini(dir.path(), &active_ini("UserName = nobody\n"));
    let mut agent = start_agent(&topo.cap, &ini, &[], &[]);
    wait_log(
        &mut agent,
        "running as nobody with CAP_NET_ADMIN CAP_NET_RAW",
    );
    wait_log(&mut agent, "capture on c0 started");
    assert_runs_as(agent.id(), NOBODY);
    forwards(&topo, &out);
    // A reload reads the configuration again as nobody (the file is 0644).
    agent.signal("HUP").unwrap();
    wait_log(&mut agent, "configuration reloaded");
    assert!(agent.stop(Duration::from_secs(10)).unwrap().success());
    assert!(sensor.stop(Duration::from_secs(10)).unwrap().success());
}

/// An agent with nothing to serve (a file, passive off, no sensor) is ready
/// and says why in its status; a reload that adds a sensor changes it.
#[test]
fn an_agent_without_sensor_is_ready_and_says_so() {
    let dir = open_dir();
    let sock = NotifySocket::bind(dir.path(), "agent.sock");
    let ini = write_ini(dir.path(), "Passive = no\n");
    let mut cmd = std::process::Command::new(bin_path("xrpcapd"));
    cmd.arg("-f")
        .arg(&ini)
        .env("RUST_LOG", "debug")
        .env("NOTIFY_SOCKET", &sock.path);
    let mut agent = Child::spawn("xrpcapd", cmd).unwrap();
    let ready = sock.wait_line("READY=1", 0);
    assert!(
        sock.texts()[ready].contains(
            "STATUS=no sensor configured: run xrpcapd-setup --sensor HOST or add \
             ActiveClient lines, then reload"
        ),
        "{:?}",
        sock.texts()
    );
    // A closed port on loopback: the sensor is configured, not capturing.
    write_ini(dir.path(), "Passive = no\nActiveClient = 127.0.0.1, 9\n");
    agent.signal("HUP").unwrap();
    let reloading = sock.wait_line("RELOADING=1", ready);
    let ready = sock.wait_line("READY=1", reloading);
    assert!(
        sock.texts()[ready].contains("STATUS=0/1 sensors capturing, 0 captures"),
        "{:?}",
        sock.texts()
    );
    assert!(agent.stop(Duration::from_secs(10)).unwrap().success());
}
