//! xrpcapd-setup as an operator runs it: the built binary, a main file and
//! drop-in directory in a temporary directory, the built xrpcapd as the
//! checker (`XRPCAPD_BIN`), never the real service (`--no-start`, or a PATH
//! without systemctl).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SETUP: &str = env!("CARGO_BIN_EXE_xrpcapd-setup");
const XRPCAPD: &str = env!("CARGO_BIN_EXE_xrpcapd");

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// A main file as the package ships it (active only, no sensor).
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("rpcapd.ini"),
            "# packaged\nLogLevel = info\n",
        )
        .unwrap();
        Site { dir }
    }

    fn main(&self) -> PathBuf {
        self.dir.path().join("rpcapd.ini")
    }

    fn dropin_dir(&self) -> PathBuf {
        self.dir.path().join("rpcapd.d")
    }

    fn dropin(&self) -> PathBuf {
        self.dropin_dir().join("50-sensor.ini")
    }

    fn defaults(&self) -> PathBuf {
        self.dir.path().join("default-xrpcapd")
    }

    /// xrpcapd-setup with this site's paths and a clean environment.
    fn cmd(&self) -> Command {
        let mut c = Command::new(SETUP);
        for var in [
            "XRPCAPD_SENSOR",
            "XRPCAPD_IFNAME",
            "XRPCAPD_IFADDR",
            "XRPCAPD_FILTER",
            "XRPCAPD_NULL_AUTH",
        ] {
            c.env_remove(var);
        }
        c.env("XRPCAPD_BIN", XRPCAPD)
            .arg("--config")
            .arg(self.main())
            .arg("--defaults")
            .arg(self.defaults());
        c
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.dropin_dir())
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `xrpcapd --check-config -f FILE`: what the agent makes of a file.
fn agent_check(file: &Path) -> String {
    let (code, out, err) = run(Command::new(XRPCAPD)
        .arg("--check-config")
        .arg("-f")
        .arg(file));
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn writes_a_dropin_the_agent_reads_and_checks_it() {
    let site = Site::new();
    let (code, out, err) = run(site.cmd().args([
        "--sensor",
        "[2001:db8::9]:2010",
        "--ifname",
        "eth1",
        "--filter",
        "not port 22",
        "--no-start",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrote "), "{out}");
    assert!(out.contains("checked: "), "{out}");
    assert!(out.contains("--no-start"), "{out}");
    let meta = fs::metadata(site.dropin()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        fs::metadata(site.dropin_dir())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
    assert_eq!(site.names(), ["50-sensor.ini"], "no temporary files left");
    let text = fs::read_to_string(site.dropin()).unwrap();
    assert!(text.starts_with("# Written by xrpcapd-setup"), "{text}");
    // The agent itself reads the file as meant.
    let shown = agent_check(&site.dropin());
    assert!(
        shown.contains("ActiveClient = 2001:db8::9, 2010, ifname=eth1\n"),
        "{shown}"
    );
    assert!(shown.contains("NullAuthPermit = YES\n"), "{shown}");
    assert!(shown.contains("LocalFilter = not port 22\n"), "{shown}");

    // A second run replaces it.
    let (code, out, err) = run(site.cmd().args(["--sensor", "10.0.0.9", "--no-start"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replaced "), "{out}");
    let shown = agent_check(&site.dropin());
    assert!(shown.contains("ActiveClient = 10.0.0.9, 2003\n"), "{shown}");
    assert!(!shown.contains("LocalFilter"), "{shown}");
    assert_eq!(site.names(), ["50-sensor.ini"]);
}

/// Once xrpcapd reads rpcapd.d (`--config-dir`), checking the main file
/// shows the sensor; before that it is only a warning of xrpcapd-setup.
#[test]
fn the_check_of_the_main_file_sees_the_dropin_once_the_agent_reads_dropins() {
    let site = Site::new();
    let (code, out, err) = run(site.cmd().args(["--sensor", "10.0.0.9:2004", "--no-start"]));
    assert_eq!(code, 0, "{out}{err}");
    let (_, help, _) = run(Command::new(XRPCAPD).arg("--help"));
    if help.contains("--config-dir") {
        let shown = agent_check(&site.main());
        assert!(shown.contains("ActiveClient = 10.0.0.9, 2004\n"), "{shown}");
        assert!(!out.contains("did not list"), "{out}");
    } else {
        assert!(out.contains("did not list"), "{out}");
    }
}

#[test]
fn a_refused_check_puts_the_previous_dropin_back() {
    let site = Site::new();
    fs::create_dir(site.dropin_dir()).unwrap();
    fs::write(site.dropin(), "ActiveClient = 10.0.0.1, 2003\n").unwrap();
    // A main file the agent refuses: the check fails.
    fs::write(site.main(), "LogLevel = loud\n").unwrap();
    let (code, out, err) = run(site.cmd().args(["--sensor", "10.0.0.9", "--no-start"]));
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("--check-config"), "{err}");
    assert!(
        err.contains("LogLevel = loud"),
        "the agent's own message: {err}"
    );
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(
        fs::read_to_string(site.dropin()).unwrap(),
        "ActiveClient = 10.0.0.1, 2003\n"
    );
    assert_eq!(site.names(), ["50-sensor.ini"], "no temporary files left");

    // Without a previous drop-in: none afterwards.
    fs::remove_file(site.dropin()).unwrap();
    let (code, _, err) = run(site.cmd().args(["--sensor", "10.0.0.9", "--no-start"]));
    assert_eq!(code, 78, "{err}");
    assert!(site.names().is_empty(), "{:?}", site.names());
}

#[test]
fn a_missing_checker_is_a_failure_and_changes_nothing() {
    let site = Site::new();
    let (code, out, err) = run(site
        .cmd()
        .env("XRPCAPD_BIN", site.dir.path().join("no-such-xrpcapd"))
        .args(["--sensor", "10.0.0.9", "--no-start"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("XRPCAPD_BIN"), "{err}");
    assert!(site.names().is_empty(), "{:?}", site.names());
}

#[test]
fn bad_input_exits_78_and_writes_nothing() {
    let site = Site::new();
    for args in [
        &["--sensor", "10.0.0.9:70000"][..],
        &["--sensor", "10.0.0.9\nPassive = yes"],
        &["--sensor", "10.0.0.9", "--ifaddr", "10.0.0.0/33"],
        &["--sensor", "10.0.0.9", "--filter", "this is no filter"],
        &[],
    ] {
        let (code, out, err) = run(site.cmd().args(args).arg("--no-start"));
        assert_eq!(code, 78, "{args:?}: {out}{err}");
        assert!(err.starts_with("xrpcapd-setup: "), "{err}");
        assert!(!site.dropin_dir().exists(), "{args:?}");
    }
    // clap's usage errors stay 2.
    let (code, _, _) = run(site
        .cmd()
        .args(["--sensor", "s", "--ifname", "a", "--ifaddr", "10.0.0.1"]));
    assert_eq!(code, 2);
}

#[test]
fn environment_then_defaults_file() {
    let site = Site::new();
    fs::write(
        site.defaults(),
        "# pre-seeded\nXRPCAPD_SENSOR=file.example:2100\nXRPCAPD_FILTER=\"not port 22\"\n",
    )
    .unwrap();
    let (code, out, err) = run(site.cmd().arg("--no-start"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sensor from "), "{out}");
    let shown = agent_check(&site.dropin());
    assert!(
        shown.contains("ActiveClient = file.example, 2100\n"),
        "{shown}"
    );
    assert!(shown.contains("LocalFilter = not port 22\n"), "{shown}");

    let (code, out, err) = run(site
        .cmd()
        .env("XRPCAPD_SENSOR", "env.example")
        .env("XRPCAPD_IFADDR", "192.0.2.7")
        .arg("--no-start"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("XRPCAPD_SENSOR (environment)"), "{out}");
    let shown = agent_check(&site.dropin());
    assert!(
        shown.contains("ActiveClient = env.example, 2003, ifaddr=192.0.2.7/32\n"),
        "{shown}"
    );

    // A broken defaults file names its line.
    fs::write(site.defaults(), "XRPCAPD_FILTER=not port 22\n").unwrap();
    let (code, _, err) = run(site.cmd().args(["--sensor", "s", "--no-start"]));
    assert_eq!(code, 78);
    assert!(err.contains("default-xrpcapd:1: "), "{err}");
}

#[test]
fn dry_run_changes_nothing() {
    let site = Site::new();
    let (code, out, err) = run(site.cmd().args(["--sensor", "10.0.0.9", "--dry-run"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ActiveClient = 10.0.0.9, 2003"), "{out}");
    assert!(out.contains("would run systemctl"), "{out}");
    assert!(!site.dropin_dir().exists());
}

#[test]
fn without_systemctl_it_says_how_to_start_by_hand() {
    let site = Site::new();
    let empty = site.dir.path().join("empty-path");
    fs::create_dir(&empty).unwrap();
    // No --no-start: the empty PATH has no systemctl to reach a real service.
    let (code, out, err) = run(site
        .cmd()
        .env("PATH", &empty)
        .args(["--sensor", "10.0.0.9"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("systemctl is not installed"), "{out}");
    assert!(out.contains("start the agent by hand"), "{out}");
    assert!(site.dropin().is_file());
}
