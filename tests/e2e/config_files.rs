//! End-to-end: the configuration files and safe defaults of the real
//! binaries: the packaged rpcapd.ini listens on nothing, an agent with no
//! sensor waits for the reload (a drop-in) that names one, `--check-config`
//! lists the files read and warns about NULL authentication, and
//! configuration errors exit 78 (EX_CONFIG) in xrpcapd and xrpcap-sensor.
//! The namespace tests need root (marked `needs root`: ignored without it).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use xrpcap_testkit::daemon::{write_file, START_TIMEOUT};
use xrpcap_testkit::{
    bin_path, numbered_payloads, require_root, send_udp, wait_for_packets, Child, Netns, Sensor,
    Topology,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// The shipped /etc/xrpcapd/rpcapd.ini.
fn packaged_ini() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/rpcapd.ini");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The sockets open in `ns` (listening TCP, any UDP), from /proc/net as
/// seen inside it: `proto local-address` per line.
fn sockets(ns: &Netns) -> Vec<String> {
    let mut found = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let table = ns.run("cat", [format!("/proc/net/{proto}")]).unwrap();
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 0A: TCP_LISTEN; every UDP socket counts (a data port).
            if f.len() > 3 && (proto.starts_with("udp") || f[3] == "0A") {
                found.push(format!("{proto} {}", f[1]));
            }
        }
    }
    found
}

/// Starts `xrpcapd -f INI ARGS` in `ns` with debug logging.
fn start_agent(ns: &Netns, ini: &Path, args: &[&str]) -> Child {
    let mut cmd = ns.command(bin_path("xrpcapd"));
    cmd.arg("-f").arg(ini).args(args).env("RUST_LOG", "debug");
    Child::spawn("xrpcapd", cmd).unwrap()
}

#[test]
#[ignore = "needs root"]
fn packaged_ini_listens_on_nothing_and_waits() {
    require_root();
    let ns = Netns::new("pkgini").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("rpcapd.ini");
    write_file(&ini, &packaged_ini()).unwrap();
    let mut agent = start_agent(&ns, &ini, &[]);
    agent
        .wait_for_output("no sensor configured", START_TIMEOUT)
        .unwrap();
    // It waits (a reload may name a sensor), it does not exit.
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.try_wait().unwrap().is_none(), "{}", agent.describe());
    assert_eq!(sockets(&ns), Vec::<String>::new(), "{}", agent.describe());
    let log = agent.stderr();
    assert!(!log.contains("NULL authentication"), "{log}");
    let status = agent.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{}", agent.describe());

    // The check is able to fail: the same file without `Passive = no`
    // listens on 2002 (the references' default).
    let open: String = packaged_ini()
        .lines()
        .filter(|l| !l.starts_with("Passive"))
        .map(|l| format!("{l}\n"))
        .collect();
    write_file(&ini, &open).unwrap();
    let mut agent = start_agent(&ns, &ini, &[]);
    agent
        .wait_for_output("listening for passive clients", START_TIMEOUT)
        .unwrap();
    let open = sockets(&ns);
    assert!(
        open.iter().any(|s| s.ends_with(":07D2")),
        "{open:?}\n{}",
        agent.describe()
    );
    agent.stop(Duration::from_secs(10)).unwrap();
}

/// `Passive = no` → `Passive = yes` plus SIGHUP opens the listener (and
/// back to `no` closes it): passive mode follows the file without a restart.
#[test]
#[ignore = "needs root"]
fn a_reload_turns_passive_mode_on_and_off() {
    require_root();
    let ns = Netns::new("pasrld").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("rpcapd.ini");
    write_file(&ini, &packaged_ini()).unwrap();
    let mut agent = start_agent(&ns, &ini, &[]);
    agent
        .wait_for_output("no sensor configured", START_TIMEOUT)
        .unwrap();
    assert_eq!(sockets(&ns), Vec::<String>::new());
    let listening = |ns: &Netns| sockets(ns).iter().any(|s| s.ends_with(":07D2"));

    write_file(
        &ini,
        &packaged_ini().replace("Passive = no", "Passive = yes"),
    )
    .unwrap();
    agent.signal("HUP").unwrap();
    agent
        .wait_for_output("listening for passive clients", START_TIMEOUT)
        .unwrap();
    assert!(listening(&ns), "{:?}\n{}", sockets(&ns), agent.describe());

    write_file(&ini, &packaged_ini()).unwrap();
    agent.signal("HUP").unwrap();
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while listening(&ns) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sockets(&ns), Vec::<String>::new(), "{}", agent.describe());
    agent.stop(Duration::from_secs(10)).unwrap();
}

/// With a file, passive mode off and no sensor the agent warns and waits;
/// a drop-in that adds an ActiveClient line plus SIGHUP makes it dial, and
/// the sensor receives the captured frames.
#[test]
#[ignore = "needs root"]
fn no_sensor_waits_for_a_reload_that_adds_one() {
    require_root();
    let topo = Topology::new().unwrap();
    let sensor_at = SocketAddr::new(Topology::SEN_IP.parse().unwrap(), Topology::SEN_PORT);
    let mut sensor = Sensor::start(&topo.sen, sensor_at, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("rpcapd.ini");
    write_file(&ini, "Passive = no\nNullAuthPermit = YES\n").unwrap();
    let mut agent = start_agent(&topo.cap, &ini, &[]);
    agent
        .wait_for_output("no sensor configured: run xrpcapd-setup", START_TIMEOUT)
        .unwrap();
    // Idle for a while: still running, nothing dialled, nothing listening.
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.try_wait().unwrap().is_none(), "{}", agent.describe());
    assert_eq!(sockets(&topo.cap), Vec::<String>::new());
    assert!(!agent.stderr().contains("connected to sensor"));

    // What xrpcapd-setup writes: a drop-in, then a reload.
    let dropin = dir.path().join("rpcapd.d/50-sensor.ini");
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    write_file(
        &dropin,
        &format!(
            "ActiveClient = {}, {}, ifname={}\n",
            Topology::SEN_IP,
            Topology::SEN_PORT,
            Topology::CAP_IF
        ),
    )
    .unwrap();
    agent.signal("HUP").unwrap();
    agent
        .wait_for_output(
            &format!("capture on {} started", Topology::CAP_IF),
            START_TIMEOUT,
        )
        .unwrap();
    let _sink = topo.cap.udp_socket(addr("10.200.1.2:5000")).unwrap();
    send_udp(
        &topo.gen,
        addr("10.200.1.1:4000"),
        addr("10.200.1.2:5000"),
        &numbered_payloads(10, 100),
    )
    .unwrap();
    wait_for_packets(&sensor.the_file().unwrap(), 10, Duration::from_secs(20)).unwrap();
    let status = agent.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{}", agent.describe());
    sensor.stop().unwrap();
    assert_eq!(sensor.packets().unwrap().len(), 10);
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin_path(bin)).args(args).output().unwrap()
}

fn code_and_stderr(o: &Output) -> (Option<i32>, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    write_file(&p, text).unwrap();
    p
}

#[test]
fn check_config_lists_the_files_read_and_warns_about_null_auth() {
    let dir = tempfile::tempdir().unwrap();
    let ini = write(
        dir.path(),
        "rpcapd.ini",
        "NullAuthPermit = YES\nUdpStrSize = 0\n",
    );
    let a = write(dir.path(), "rpcapd.d/10-a.ini", "UdpStrSize = 100\n");
    let b = write(
        dir.path(),
        "rpcapd.d/20-b.ini",
        "\u{feff}UdpStrSize = 200\n",
    );
    let p = ini.to_str().unwrap();
    let o = run("xrpcapd", &["-f", p, "--check-config"]);
    let (code, err) = code_and_stderr(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(code, Some(0), "{err}");
    let read: Vec<&str> = out.lines().filter(|l| l.starts_with("# read ")).collect();
    assert_eq!(
        read,
        [
            format!("# read {p}"),
            format!("# read {}", a.display()),
            format!("# read {}", b.display())
        ]
    );
    assert!(out.contains("\nUdpStrSize = 200\n"), "{out}");
    assert!(
        out.starts_with("# read") && out.contains("\nPassive = yes\n"),
        "{out}"
    );
    // Passive with NULL auth on every address and no host list: warned.
    for text in [&out[..], &err[..]] {
        assert!(
            text.contains("permits NULL authentication from any host")
                && text.contains("-l HOSTS")
                && text.contains("Passive = no"),
            "{text}"
        );
    }
    // Each fix silences it.
    for fix in [&["-v"][..], &["-l", "10.0.0.1"], &["-b", "127.0.0.1"]] {
        let mut args = vec!["-f", p, "--check-config"];
        args.extend(fix);
        let o = run("xrpcapd", &args);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0));
        assert!(!out.contains("NULL authentication"), "{fix:?}: {out}");
    }
    // `Passive = no` in a drop-in: no listener, no sensor: valid, warned.
    write(dir.path(), "rpcapd.d/30-off.ini", "Passive = no\n");
    let o = run("xrpcapd", &["-f", p, "--check-config"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0));
    assert!(out.contains("\nPassive = no\n"), "{out}");
    assert!(out.contains("# WARNING: no sensor configured"), "{out}");
    assert!(!out.contains("NULL authentication"), "{out}");
    // A passive flag overrides the files.
    let o = run("xrpcapd", &["-f", p, "--check-config", "-p", "2002"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\nPassive = yes\n"), "{out}");
    // --config-dir replaces the default directory.
    let other = dir.path().join("other");
    write(&other, "x.ini", "UdpStrSize = 300\n");
    let o = run(
        "xrpcapd",
        &[
            "-f",
            p,
            "--config-dir",
            other.to_str().unwrap(),
            "--check-config",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\nUdpStrSize = 300\n"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("# read ")).count(), 2);
}

#[test]
fn configuration_errors_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "rpcapd.ini", "ActiveClient = 127.0.0.1, 2003\n");
    let g = good.to_str().unwrap();
    let bad_dropin = write(dir.path(), "bad/rpcapd.ini", "Passive = no\n");
    let f = write(
        dir.path(),
        "bad/rpcapd.d/50-x.ini",
        "# x\nUdpStrSize = 12\n",
    );
    for (args, what) in [
        // A bad key value, named by file and line (here in a drop-in).
        (
            vec!["-f", bad_dropin.to_str().unwrap()],
            format!("{}:2: UdpStrSize = 12", f.display()),
        ),
        (
            vec!["-f", bad_dropin.to_str().unwrap(), "--check-config"],
            format!("{}:2: UdpStrSize = 12", f.display()),
        ),
        // A missing file.
        (
            vec!["-f", "/nonexistent/xrpcap/rpcapd.ini"],
            "/nonexistent/xrpcap/rpcapd.ini".into(),
        ),
        // A flag's bad value.
        (vec!["-f", g, "-t", "12"], "expected 0 or 29..=65000".into()),
        (vec!["-a", "127.0.0.1,0", "-v"], "expected a port".into()),
        // No file, -v, no sensor: nothing to do.
        (vec!["-v"], "no sensor to serve".into()),
    ] {
        let (code, err) = code_and_stderr(&run("xrpcapd", &args));
        assert_eq!(code, Some(78), "{args:?}: {err}");
        assert!(err.contains(&what), "{args:?}: missing {what:?} in {err}");
    }
    // A bad filter.
    let filt = write(dir.path(), "filter.ini", "LocalFilter = not a filter (\n");
    let (code, err) = code_and_stderr(&run(
        "xrpcapd",
        &[
            "-f",
            filt.to_str().unwrap(),
            "-v",
            "-a",
            "127.0.0.1,2003",
            "--check-config",
        ],
    ));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("LocalFilter"), "{err}");
    // Usage errors stay clap's 2; a valid file checks with 0.
    let (code, err) = code_and_stderr(&run("xrpcapd", &["--no-such-flag"]));
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = code_and_stderr(&run("xrpcapd", &["-f", g, "--check-config"]));
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn sensor_configuration_errors_exit_78_other_failures_1() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    for (args, what) in [
        (
            vec!["--listen", "127.0.0.1:0", "--snaplen", "0"],
            "--snaplen",
        ),
        (vec!["--listen", "banana", "--out", o], "banana"),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--out",
                o,
                "--filter",
                "not a filter (",
            ],
            "",
        ),
    ] {
        let (code, err) = code_and_stderr(&run("xrpcap-sensor", &args));
        assert_eq!(code, Some(78), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
    }
    let (code, err) = code_and_stderr(&run("xrpcap-sensor", &["--no-such-flag"]));
    assert_eq!(code, Some(2), "{err}");
    // A port in use is no configuration error: exit 1, systemd may retry.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let (code, err) = code_and_stderr(&run("xrpcap-sensor", &["--listen", &at, "--out", o]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen"), "{err}");
}
