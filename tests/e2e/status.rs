//! End-to-end: `xrpcapd status` reads a running agent's status socket
//! (`--status-socket` in a temporary directory). xrpcapd in ns cap serves
//! xrpcap-sensor in ns sen; the status table shows the slot capturing and
//! the capture's interface; a passive listener with NULL authentication
//! on every address shows the exposure warning; with no agent the command
//! fails (exit 1) naming the socket. Needs root (marked `needs root`).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use xrpcap_testkit::daemon::START_TIMEOUT;
use xrpcap_testkit::{bin_path, require_root, wait_until, Agent, Child, Sensor, Topology};

/// `xrpcapd status --status-socket PATH` (a unix socket: no namespace needed).
fn status(socket: &Path) -> Output {
    Command::new(bin_path("xrpcapd"))
        .arg("status")
        .arg("--status-socket")
        .arg(socket)
        .output()
        .expect("running xrpcapd status")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The table once `ready` holds for it (published every 500 ms).
fn table_when(socket: &Path, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let r = wait_until(Duration::from_secs(10), what, || {
        let o = status(socket);
        assert!(
            o.status.success(),
            "xrpcapd status failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        last = stdout(&o);
        Ok(ready(&last))
    });
    if let Err(e) = r {
        panic!("{e}\n{last}");
    }
    last
}

#[test]
#[ignore = "needs root"]
fn status_shows_the_slot_capturing_and_its_capture() {
    require_root();
    let topo = Topology::new().unwrap();
    let listen = format!("{}:{}", Topology::SEN_IP, Topology::SEN_PORT)
        .parse()
        .unwrap();
    let _sensor = Sensor::start(&topo.sen, listen, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("status.sock");
    let ini = format!(
        "ActiveClient = {}, {}, ifname={}\nNullAuthPermit = YES\n",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    let sock = socket.to_str().unwrap();
    let mut agent = Agent::start(&topo.cap, &ini, &["--status-socket", sock]).unwrap();
    agent
        .wait_log(&format!("status on {sock}"), 1, START_TIMEOUT)
        .unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660);

    let slot = format!("{}:{}", Topology::SEN_IP, Topology::SEN_PORT);
    let text = table_when(&socket, "the slot capturing", |t| {
        t.lines()
            .any(|l| l.starts_with(&slot) && l.contains(" capturing "))
            && t.lines()
                .any(|l| l.starts_with(&slot) && l.contains(" running "))
    });
    let fields = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    let slot_line = text
        .lines()
        .find(|l| l.starts_with(&slot) && l.contains(" capturing "))
        .unwrap();
    assert_eq!(
        fields(slot_line)[..3],
        [slot.clone(), "capturing".into(), "1".into()],
        "{text}"
    );
    let capture = text
        .lines()
        .find(|l| l.starts_with(&slot) && l.contains(" running "))
        .unwrap();
    assert_eq!(fields(capture)[1], Topology::CAP_IF, "{text}");
    assert!(text.contains("passive listeners: none"), "{text}");
    assert!(!text.contains("WARNING"), "{text}");

    // Stopped: the socket is gone and the command says so.
    agent.stop().unwrap();
    assert!(!socket.exists());
    let o = status(&socket);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("no xrpcapd running? cannot connect to {sock}")),
        "{err}"
    );
}

/// Passive mode with NULL authentication on every address (`-n`, no `-l`):
/// the status table carries the exposure warning and the listener.
#[test]
#[ignore = "needs root"]
fn status_shows_the_null_auth_warning_of_an_exposed_listener() {
    require_root();
    let topo = Topology::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("status.sock");
    let sock = socket.to_str().unwrap();
    let mut cmd = topo.cap.command(bin_path("xrpcapd"));
    cmd.args([
        "-n",
        "-b",
        Topology::UPLINK_IP,
        "-p",
        "2002",
        "--status-socket",
        sock,
    ]);
    let mut agent = Child::spawn("xrpcapd", cmd).unwrap();
    let r = wait_until(START_TIMEOUT, "the status socket", || Ok(socket.exists()));
    if let Err(e) = r {
        panic!("{e}\n{}", agent.stderr());
    }
    let listener = format!("passive listeners: {}:2002", Topology::UPLINK_IP);
    let text = table_when(&socket, "the listener", |t| t.contains(&listener));
    let warning = text
        .lines()
        .find(|l| l.starts_with("WARNING: "))
        .unwrap_or_else(|| panic!("no warning:\n{text}"));
    assert!(
        warning.contains("permits NULL authentication from any host"),
        "{text}"
    );
    assert!(
        warning.contains(&format!("{}:2002", Topology::UPLINK_IP)),
        "{text}"
    );
    assert!(text.contains("sensor slots: none"), "{text}");
    let status = agent.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{}", agent.stderr());
}
