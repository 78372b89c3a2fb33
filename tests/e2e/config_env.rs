//! End-to-end: configuration without files. The real agent started with no
//! `-f` and only `XRPCAPD_*` variables dials xrpcap-sensor and forwards a
//! burst byte-exact against tcpdump, and a reload (SIGHUP) reads the same
//! environment; `--check-config` shows the precedence ini < drop-in <
//! environment < flags with the source of each value; errors name the
//! variable and exit 78 (EX_CONFIG), as a file's do.
//! The namespace test needs root (marked `needs root`: ignored without it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use xrpcap_testkit::daemon::{count_of, write_file, START_TIMEOUT};
use xrpcap_testkit::traffic::udp;
use xrpcap_testkit::{
    bin_path, numbered_payloads, require_root, send_udp, wait_for_packets, Child, Sensor, Tcpdump,
    Topology,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// `cmd` with only PATH, `RUST_LOG` and `vars` in its environment: nothing
/// of the test's own environment configures the agent.
fn only_env(cmd: &mut Command, vars: &[(&str, &str)]) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug");
    for (k, v) in vars {
        cmd.env(k, v);
    }
}

/// xrpcapd with `args` and only `vars`, to completion.
fn run(args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin_path("xrpcapd"));
    cmd.args(args);
    only_env(&mut cmd, vars);
    let o: Output = cmd.output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    write_file(&p, text).unwrap();
    p
}

/// No file at all (as in the container image): the sensor, the interface
/// and the format come from variables; the frames reach the sensor as
/// tcpdump saw them; SIGHUP re-reads the same environment and keeps the
/// session.
#[test]
#[ignore = "needs root"]
fn env_only_agent_forwards_to_the_sensor_and_reloads() {
    require_root();
    let topo = Topology::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tcpdump =
        Tcpdump::start(&topo.cap, Topology::CAP_IF, &tmp.path().join("c0.pcap"), "").unwrap();
    let sensor_at = SocketAddr::new(Topology::SEN_IP.parse().unwrap(), Topology::SEN_PORT);
    let mut sensor = Sensor::start(&topo.sen, sensor_at, &[]).unwrap();
    let active = format!(
        "{}, {}, ifname={}",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    let mut cmd = topo.cap.command(bin_path("xrpcapd"));
    only_env(
        &mut cmd,
        &[
            ("XRPCAPD_PASSIVE", "no"),
            ("XRPCAPD_NULL_AUTH_PERMIT", "YES"),
            ("XRPCAPD_ACTIVE_CLIENT_1", &active),
            // Plain PACKET datagrams, and only port 5000: keys other than
            // the sensor's take effect too.
            ("XRPCAPD_UDP_STR_SIZE", "0"),
            ("XRPCAPD_LOCAL_FILTER", "udp port 5000"),
            // xrpcapd-setup's variable: no configuration, no warning.
            ("XRPCAPD_SENSOR", "192.0.2.1"),
            ("XRPCAPD_NO_SUCH_KEY", "1"),
        ],
    );
    let mut agent = Child::spawn("xrpcapd", cmd).unwrap();
    agent
        .wait_for_output(
            &format!("capture on {} started", Topology::CAP_IF),
            START_TIMEOUT,
        )
        .unwrap();
    let log = agent.stderr();
    assert!(
        log.contains("configuration read from XRPCAPD_PASSIVE, XRPCAPD_ACTIVE_CLIENT_1"),
        "{log}"
    );
    assert!(!log.contains("configuration read from /"), "{log}");
    assert!(
        log.contains("XRPCAPD_NO_SUCH_KEY: unknown variable ignored"),
        "{log}"
    );
    assert!(!log.contains("XRPCAPD_SENSOR"), "{log}");

    let _sink = topo.cap.udp_socket(addr("10.200.1.2:5000")).unwrap();
    // The local filter (from the environment) passes port 5000 only.
    send_udp(
        &topo.gen,
        addr("10.200.1.1:4001"),
        addr("10.200.1.2:5001"),
        &numbered_payloads(5, 100),
    )
    .unwrap();
    send_udp(
        &topo.gen,
        addr("10.200.1.1:4000"),
        addr("10.200.1.2:5000"),
        &numbered_payloads(10, 100),
    )
    .unwrap();
    wait_for_packets(&sensor.the_file().unwrap(), 10, Duration::from_secs(20)).unwrap();

    // A reload reads the same environment: nothing changed, no redial.
    agent.signal("HUP").unwrap();
    agent
        .wait_for_output("configuration reloaded", START_TIMEOUT)
        .unwrap();
    send_udp(
        &topo.gen,
        addr("10.200.1.1:4000"),
        addr("10.200.1.2:5000"),
        &numbered_payloads(10, 200),
    )
    .unwrap();
    wait_for_packets(&sensor.the_file().unwrap(), 20, Duration::from_secs(20)).unwrap();
    let reference: Vec<_> = tcpdump
        .stop()
        .unwrap()
        .into_iter()
        .filter(|p| udp(p).is_some_and(|u| u.dport == 5000))
        .collect();
    let status = agent.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{}", agent.describe());
    let log = agent.stderr();
    assert_eq!(count_of(&log, "connected to sensor"), 1, "{log}");
    assert_eq!(
        count_of(&log, "XRPCAPD_NO_SUCH_KEY"),
        2,
        "start and reload: {log}"
    );
    sensor.stop().unwrap();
    let got = sensor.packets().unwrap();
    assert_eq!(reference.len(), 20, "tcpdump's frames to port 5000");
    assert_eq!(got.len(), 20, "frames in the sensor's file");
    for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
        assert_eq!((g.len, g.caplen), (r.len, r.caplen), "frame {i}");
        assert!(g.data == r.data, "bytes of frame {i} differ from tcpdump's");
    }
}

/// The same keys in the file, a drop-in, the environment and a flag:
/// `--check-config` prints each value from the highest and names every
/// source, the ones overridden too.
#[test]
fn check_config_shows_ini_dropin_env_flag_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "rpcapd.ini",
        "UdpStrSize = 100\nActiveClient = 10.0.0.1, 2003\nKeepaliveSecs = 7\n",
    );
    let dropin = write(
        dir.path(),
        "rpcapd.d/50-x.ini",
        "UdpStrSize = 200\nActiveClient = 10.0.0.2, 2003\n",
    );
    let (m, d) = (main.display().to_string(), dropin.display().to_string());
    let env = [
        ("XRPCAPD_UDP_STR_SIZE", "300"),
        ("XRPCAPD_ACTIVE_CLIENT", "10.0.0.3, 2003\n10.0.0.4, 2003"),
    ];
    let check = |args: &[&str], vars: &[(&str, &str)]| {
        let mut all = vec!["-f", &m, "--check-config"];
        all.extend(args);
        let (code, out, err) = run(&all, vars);
        assert_eq!(code, Some(0), "{err}");
        out
    };

    // Each layer over the one below.
    let out = check(&[], &[]);
    assert!(
        out.contains(&format!(
            "# UdpStrSize from {d}:1; overrides {m}:1\nUdpStrSize = 200\n"
        )),
        "{out}"
    );
    let out = check(&[], &env);
    assert!(
        out.contains("\n# environment: XRPCAPD_ACTIVE_CLIENT XRPCAPD_UDP_STR_SIZE\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "# UdpStrSize from env XRPCAPD_UDP_STR_SIZE; overrides {d}:1, {m}:1\nUdpStrSize = 300\n"
        )),
        "{out}"
    );
    // The environment replaces the files' ActiveClient lines.
    assert!(
        out.contains(&format!(
            "# ActiveClient from env XRPCAPD_ACTIVE_CLIENT:1, env XRPCAPD_ACTIVE_CLIENT:2; \
             replaces {d}:2, {m}:2\nActiveClient = 10.0.0.3, 2003\nActiveClient = 10.0.0.4, 2003\n\
             NullAuthPermit"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("# KeepaliveSecs from {m}:3\nKeepaliveSecs = 7\n")),
        "{out}"
    );
    let out = check(&["-t", "400", "-a", "10.0.0.5"], &env);
    assert!(
        out.contains(&format!(
            "# UdpStrSize from flags; overrides env XRPCAPD_UDP_STR_SIZE, {d}:1, {m}:1\n\
             UdpStrSize = 400\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("\nActiveClient = 10.0.0.4, 2003\nActiveClient = 10.0.0.5, 2003\n"),
        "{out}"
    );
}

/// With no file the environment is the configuration and nothing is
/// missing; errors name the variable, exit 78 as a file's, and a missing
/// `-f FILE` stays an error.
#[test]
fn env_only_checks_quietly_and_env_errors_exit_78() {
    let sensor = [
        ("XRPCAPD_PASSIVE", "no"),
        ("XRPCAPD_ACTIVE_CLIENT", "10.0.0.9"),
    ];
    let (code, out, err) = run(&["--check-config"], &sensor);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err, "", "no file is no error: {err}");
    assert!(!out.contains("# read "), "{out}");
    assert!(
        out.contains("# Passive from env XRPCAPD_PASSIVE\nPassive = no\n"),
        "{out}"
    );
    for (vars, want) in [
        (
            vec![("XRPCAPD_ACTIVE_CLIENT_2", "h, 0")],
            "XRPCAPD_ACTIVE_CLIENT_2: ActiveClient = h, 0: expected a port 1..=65535",
        ),
        (
            vec![("XRPCAPD_ACTIVE_CLIENT", "h, 1\nh, 2, ifaddr=300.1.1.1")],
            "XRPCAPD_ACTIVE_CLIENT:2: ActiveClient = h, 2, ifaddr=300.1.1.1: expected ifaddr=ADDR",
        ),
        (
            vec![("XRPCAPD_UDP_STR_SIZE", "12")],
            "XRPCAPD_UDP_STR_SIZE: UdpStrSize = 12: expected 0 or 29..=65000",
        ),
        (
            vec![("XRPCAPD_LOCAL_FILTER", "not a filter (")],
            "LocalFilter",
        ),
        // Passive off and no sensor without a file: nothing to do.
        (vec![("XRPCAPD_PASSIVE", "no")], "no sensor to serve"),
    ] {
        let (code, _, err) = run(&["--check-config"], &vars);
        assert_eq!(code, Some(78), "{vars:?}: {err}");
        assert!(err.contains(want), "{vars:?}: want {want:?} in {err}");
    }
    let (code, _, err) = run(&["-f", "/nonexistent/xrpcap/rpcapd.ini"], &sensor);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("/nonexistent/xrpcap/rpcapd.ini"), "{err}");
}
