//! End-to-end: configuration errors of the real xrpcapd binary, at start and
//! at reload (SIGHUP), each reported with file:line; a broken file never
//! starts a half-configured daemon and never replaces a running one. Needs
//! root (namespaces; marked `needs root`: ignored without it).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use xrpcap_testkit::daemon::{write_file, START_TIMEOUT};
use xrpcap_testkit::{
    bin_path, numbered_payloads, require_root, send_udp, wait_for_packets, Agent, Child, Netns,
    Sensor, Topology,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// Runs xrpcapd inside `ns` to completion (bounded) and returns its exit
/// code and stderr.
fn run_agent(ns: &Netns, args: &[&str]) -> (i32, String) {
    let mut cmd = ns.command(bin_path("xrpcapd"));
    cmd.args(args);
    let mut child = Child::spawn("xrpcapd", cmd).unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .unwrap_or_else(|| panic!("xrpcapd did not exit\n{}", child.describe()));
    (status.code().unwrap_or(-1), child.stderr())
}

#[test]
#[ignore = "needs root"]
fn broken_file_stops_the_start_with_every_error_at_file_line() {
    require_root();
    let ns = Netns::new("cfg").unwrap();
    // A sensor the agent would dial if it started despite the errors.
    let listener = ns.tcp_listener(addr("127.0.0.1:2003")).unwrap();
    listener.set_nonblocking(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("rpcapd.ini");
    write_file(
        &ini,
        "# sensors\n\
         ActiveClient = 127.0.0.1, 2003\n\
         ActiveClient = 127.0.0.1, 70000, ifname=c0\n\
         ActiveClient = 127.0.0.1; 2003; ifaddr=banana\n\
         ActiveClient 127.0.0.1 2003\n\
         NullAuthPermit = YES\n\
         UdpStrSize = 28\n\
         SendBuffer = 10\n",
    )
    .unwrap();
    let p = ini.to_str().unwrap();
    let (code, err) = run_agent(&ns, &["-f", p, "-v"]);
    assert_eq!(code, 78, "EX_CONFIG: {err}");
    for (line, what) in [
        (
            3,
            "ActiveClient = 127.0.0.1, 70000, ifname=c0: expected a port 1..=65535",
        ),
        (
            4,
            "ActiveClient = 127.0.0.1; 2003; ifaddr=banana: expected ifaddr=ADDR",
        ),
        (5, "`ActiveClient 127.0.0.1 2003`: expected `Key = value`"),
        (7, "UdpStrSize = 28: expected 0 or 29..=65000"),
        (8, "SendBuffer = 10: expected a byte count >= 4096"),
    ] {
        let want = format!("{p}:{line}: {what}");
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(!err.contains(&format!("{p}:2:")), "line 2 is valid:\n{err}");
    // It refused to start: nobody dialled the sensor.
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the agent connected despite the errors: {other:?}"),
    }
}

#[test]
#[ignore = "needs root"]
fn missing_file_and_bad_flags_are_refused_with_their_reason() {
    require_root();
    let ns = Netns::new("cfg").unwrap();
    let (code, err) = run_agent(&ns, &["-f", "/nonexistent/xrpcap/rpcapd.ini", "-v"]);
    assert_eq!(code, 78, "EX_CONFIG: {err}");
    assert!(
        err.contains("/nonexistent/xrpcap/rpcapd.ini") && err.contains("No such file"),
        "{err}"
    );
    for (args, what) in [
        (&["-t", "12"][..], "expected 0 or 29..=65000"),
        (&["-u", "10"][..], "expected a byte count >= 4096"),
        (
            &["-a", "127.0.0.1,0"][..],
            "expected a port 1..=65535 or DEFAULT",
        ),
    ] {
        let mut all = args.to_vec();
        all.push("-v");
        let (code, err) = run_agent(&ns, &all);
        assert_eq!(code, 78, "EX_CONFIG: {args:?}: {err}");
        assert!(err.contains(what), "{args:?}: missing {what:?} in:\n{err}");
    }
}

#[test]
#[ignore = "needs root"]
fn broken_reload_keeps_the_running_configuration_and_capture() {
    require_root();
    let topo = Topology::new().unwrap();
    let sensor_at = SocketAddr::new(Topology::SEN_IP.parse().unwrap(), Topology::SEN_PORT);
    let mut sensor = Sensor::start(&topo.sen, sensor_at, &[]).unwrap();
    let good = format!(
        "ActiveClient = {}, {}, ifname={}\nNullAuthPermit = YES\nBogus = 1\n",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    let mut agent = Agent::start(&topo.cap, &good, &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let ini = agent.config_path();
    let p = ini.to_str().unwrap().to_string();
    // An unknown key is a warning with file:line, not an error.
    assert!(
        agent
            .log()
            .contains(&format!("{p}:3: unknown key `Bogus` ignored")),
        "{}",
        agent.log()
    );

    write_file(
        &ini,
        &format!(
            "{good}UdpStrSize = 99999\nActiveClient = {}, x\n",
            Topology::SEN_IP
        ),
    )
    .unwrap();
    agent.child().signal("HUP").unwrap();
    agent
        .wait_log("configuration not reloaded", 1, START_TIMEOUT)
        .unwrap();
    let log = agent.log();
    assert!(
        log.contains(&format!(
            "{p}:4: UdpStrSize = 99999: expected 0 or 29..=65000"
        )),
        "{log}"
    );
    assert!(log.contains(&format!("{p}:5: ActiveClient")), "{log}");

    // Same session, same capture: traffic still arrives, no reconnection.
    let _sink = topo.cap.udp_socket(addr("10.200.1.2:5000")).unwrap();
    send_udp(
        &topo.gen,
        addr("10.200.1.1:4000"),
        addr("10.200.1.2:5000"),
        &numbered_payloads(10, 100),
    )
    .unwrap();
    wait_for_packets(&sensor.the_file().unwrap(), 10, Duration::from_secs(20)).unwrap();
    agent.stop().unwrap();
    sensor.stop().unwrap();
    assert_eq!(
        xrpcap_testkit::daemon::count_of(&agent.log(), "connected to sensor"),
        1,
        "{}",
        agent.log()
    );
    assert_eq!(sensor.packets().unwrap().len(), 10);
}

/// `--check-config` of the real binary names the file and line too (the
/// in-crate CLI tests cover it per key; this is the installed binary).
#[test]
#[ignore = "needs root"]
fn check_config_reports_file_line() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("rpcapd.ini");
    write_file(&ini, "ActiveClient = 127.0.0.1, DEFAULT\nLogLevel = loud\n").unwrap();
    let out = Command::new(bin_path("xrpcapd"))
        .arg("-f")
        .arg(&ini)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG: {err}");
    assert!(
        err.contains(&format!("{}:2: LogLevel = loud: expected", ini.display())),
        "{err}"
    );
}
