//! How xrpcapd starts as the references do: `-d` (a daemon that an init
//! script's start-stop-daemon starts and stops) and inetd mode (bare `-i`:
//! one client on standard input, as libpcap's rpcapd.socket / rpcapd@.service
//! run it), against the real libpcap RPCAP client
//! (scripts/libpcap-remote.sh). Needs root (network namespaces).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use xrpcap_testkit::{
    bin_path, numbered_payloads, read_pcap, require_root, send_udp, veth_pair, wait_until, Child,
    Netns, VethEnd,
};

const GEN_IP: &str = "10.211.1.1";
const CAP_IP: &str = "10.211.1.2";
const DST_PORT: u16 = 7777;

fn client_bin() -> PathBuf {
    xrpcap_testkit::interop::rpcap_client_bin()
}

/// ns gen (g0) ── veth ── ns cap (c0), where xrpcapd and the client run.
fn namespaces() -> (Netns, Netns) {
    require_root();
    let gen = Netns::new("sg").unwrap();
    let cap = Netns::new("sc").unwrap();
    veth_pair(
        VethEnd {
            ns: &gen,
            ifname: "g0",
            cidr: &format!("{GEN_IP}/24"),
        },
        VethEnd {
            ns: &cap,
            ifname: "c0",
            cidr: &format!("{CAP_IP}/24"),
        },
        1500,
    )
    .unwrap();
    (gen, cap)
}

/// Accepts the client's connection on `listener` as inetd would and runs
/// `xrpcapd -i -n` with it as standard input (and output: inetd's way).
fn inetd_agent(cap: &Netns, listener: &std::net::TcpListener) -> std::process::Child {
    let (conn, _) = listener.accept().unwrap();
    let fd = OwnedFd::from(conn);
    let out = fd.try_clone().unwrap();
    cap.command(bin_path("xrpcapd"))
        .args(["-i", "-n", "-D"])
        .stdin(Stdio::from(fd))
        .stdout(Stdio::from(out))
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_exit(agent: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(Duration::from_secs(secs), "the inetd agent to exit", || {
        status = agent.try_wait()?;
        Ok(status.is_some())
    })
    .unwrap_or_else(|e| {
        let _ = agent.kill();
        panic!("{e}")
    });
    status.unwrap()
}

/// Inetd mode: a libpcap client lists the interfaces, then captures c0 over
/// TCP and over UDP, each connection served by an `xrpcapd -i` of its own
/// that exits once its client is gone.
#[test]
#[ignore = "needs root"]
fn inetd_mode_serves_one_libpcap_client_on_stdin_then_exits() {
    let (gen, cap) = namespaces();
    let listener = cap
        .enter(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let source = format!("rpcap://127.0.0.1:{port}/");

    let mut cmd = cap.command(client_bin());
    cmd.args(["list", &source]);
    let mut client = Child::spawn("rpcap_client", cmd).unwrap();
    let mut agent = inetd_agent(&cap, &listener);
    let status = client
        .wait_timeout(Duration::from_secs(30))
        .unwrap()
        .expect("client ended");
    assert!(status.success(), "{}", client.describe());
    assert!(
        client.stdout().contains(&format!("dev {source}c0|")),
        "{}",
        client.stdout()
    );
    assert!(wait_exit(&mut agent, 10).success());

    let tmp = tempfile::tempdir().unwrap();
    for udp in [false, true] {
        let out = tmp.path().join(format!("c0-{udp}.pcap"));
        let mut cmd = cap.command(client_bin());
        if udp {
            cmd.arg("-U");
        }
        cmd.args([
            "-c",
            "20",
            "-I",
            "3",
            "-T",
            "30",
            "-f",
            &format!("udp dst port {DST_PORT}"),
        ]);
        cmd.args(["capture", &format!("{source}c0")]).arg(&out);
        let mut client = Child::spawn("rpcap_client", cmd).unwrap();
        let mut agent = inetd_agent(&cap, &listener);
        wait_until(Duration::from_secs(15), "the capture to start", || {
            Ok(client.stdout().contains("capturing"))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", client.describe()));
        std::thread::sleep(Duration::from_millis(700));
        let payloads = numbered_payloads(20, 200);
        send_udp(
            &gen,
            format!("{GEN_IP}:40000").parse().unwrap(),
            format!("{CAP_IP}:{DST_PORT}").parse().unwrap(),
            &payloads,
        )
        .unwrap();
        let status = client
            .wait_timeout(Duration::from_secs(30))
            .unwrap()
            .expect("client ended");
        assert!(status.success(), "udp={udp}: {}", client.describe());
        let got = read_pcap(&out).unwrap();
        assert_eq!(got.len(), 20, "udp={udp}: {}", client.describe());
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.data[42..], payloads[i][..], "udp={udp} frame {i}");
        }
        assert!(wait_exit(&mut agent, 10).success(), "udp={udp}");
    }
}

/// ExtraHop's init script: `start-stop-daemon --start --pidfile P --exec
/// xrpcapd -- -v -d -f rpcapd.ini` returns at once; the daemon (its pid in
/// the pid file, no terminal, in /) serves the ActiveClient sensor; `--stop`
/// ends it and the pid file goes.
#[test]
#[ignore = "needs root"]
fn start_stop_daemon_starts_a_daemon_that_serves_a_sensor() {
    let (_gen, cap) = namespaces();
    let tmp = tempfile::tempdir().unwrap();
    let ini = tmp.path().join("rpcapd.ini");
    let pid_file = tmp.path().join("xrpcapd.pid");
    std::fs::write(
        &ini,
        "ActiveClient = 127.0.0.1, 2003\nNullAuthPermit = YES\n",
    )
    .unwrap();
    // The sensor waits for the agent's dial (pcap_remoteact_accept).
    let mut cmd = cap.command(client_bin());
    cmd.args(["active", "127.0.0.1", "2003"]);
    let mut sensor = Child::spawn("rpcap_client", cmd).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let start = std::time::Instant::now();
    let out = cap
        .command("start-stop-daemon")
        .args(["--start", "--quiet", "--pidfile"])
        .arg(&pid_file)
        .arg("--exec")
        .arg(bin_path("xrpcapd"))
        .arg("--")
        .args(["-v", "-d", "-f"])
        .arg(&ini)
        .arg("--pid-file")
        .arg(&pid_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "start hung: {:?}",
        start.elapsed()
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Should an assertion fail, the daemon does not outlive the test.
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            if Path::new(&format!("/proc/{}", self.0)).exists() {
                let _ = Command::new("kill").arg(self.0.to_string()).status();
            }
        }
    }
    let _kill = Kill(pid);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // ppid 1 (or a subreaper: not the start-stop-daemon), its own session
    // of which it is not the leader, no controlling terminal.
    let (ppid, sid, tty): (u32, u32, i32) = (
        fields[1].parse().unwrap(),
        fields[3].parse().unwrap(),
        fields[4].parse().unwrap(),
    );
    assert_ne!(sid, pid, "not a session leader");
    assert_eq!(tty, 0, "no controlling terminal");
    assert_ne!(ppid, std::process::id());
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/")
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap(),
        Path::new("/dev/null")
    );

    let status = sensor
        .wait_timeout(Duration::from_secs(30))
        .unwrap()
        .expect("sensor ended");
    assert!(status.success(), "{}", sensor.describe());
    assert!(
        sensor.stdout().contains("connected 127.0.0.1"),
        "{}",
        sensor.describe()
    );
    assert!(
        sensor.stdout().contains("dev rpcap://127.0.0.1/c0|"),
        "{}",
        sensor.describe()
    );

    let out = cap
        .command("start-stop-daemon")
        .args(["--stop", "--quiet", "--retry", "TERM/10", "--pidfile"])
        .arg(&pid_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!pid_file.exists(), "pid file removed at exit");
}
