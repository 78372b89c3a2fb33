//! The Kubernetes manifests (packaging/kubernetes), checked offline by
//! `packaging/kubernetes/check.sh`: every plain manifest and every overlay
//! rendered by Debian's kubectl 1.20 (and the kubectl on PATH, if any)
//! validates against the bundled Kubernetes schemas, and the assertions of
//! check.py hold (host network, exactly NET_RAW + NET_ADMIN, the overlays'
//! sensor address, probes on the metrics endpoint...), and the agent as
//! built accepts every agent container's environment (`--check-config`),
//! the sensor as built starts with every sensor Deployment's arguments.
//!
//! As root the check runs in a new network namespace (no route anywhere):
//! nothing it does may need the network. The tools come from
//! `scripts/setup.sh`; without them the check fails naming it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xrpcap_testkit::bin_path;

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/kubernetes")
}

/// check.sh on `dir` (the folder itself or a copy); in a network namespace
/// of its own when root.
fn run_check(dir: &Path, quick: bool) -> Output {
    let script = folder().join("check.sh");
    let mut cmd = if xrpcap_testkit::caps::is_root() {
        let mut c = Command::new("unshare");
        c.arg("--net").arg(&script);
        c
    } else {
        Command::new(&script)
    };
    // The agent must accept every container's environment.
    cmd.env("XRPCAPD_BIN", bin_path("xrpcapd"))
        .env("XRPCAP_SENSOR_BIN", bin_path("xrpcap-sensor"));
    if quick {
        // A breakage is found as well by one kubectl and one schema version.
        cmd.env("XRPCAP_KUBECTL_EXTRA", "none")
            .env("XRPCAP_K8S_VERSIONS", "1.37.0");
    }
    cmd.arg(dir)
        .output()
        .expect("running packaging/kubernetes/check.sh")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of packaging/kubernetes in a temporary folder, to break.
fn copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(folder().join("."))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(status.success());
    tmp
}

fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, s.replacen(from, to, 1)).unwrap();
}

#[test]
fn manifests_and_overlays_validate_offline() {
    let out = run_check(&folder(), false);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("kubernetes: ") && l.ends_with(" 0 failed"))
        .unwrap_or_else(|| panic!("no summary line:\n{all}"));
    // The base and the four overlays, the plain files (three of the base,
    // the sidecar example).
    assert!(
        summary.contains("4 manifest files, 5 kustomizations"),
        "{summary}"
    );
}

/// The check must catch what matters, not only parse: each breakage of a
/// copy fails it with the reason.
#[test]
fn a_broken_manifest_fails_the_check() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // An unknown field: strict schema validation.
        (
            "base/agent.yaml",
            "hostNetwork: true",
            "hostNetwrok: true",
            "'hostNetwrok' was unexpected",
        ),
        // A capability more than capture needs.
        (
            "base/agent.yaml",
            "add: [\"NET_RAW\", \"NET_ADMIN\"]",
            "add: [\"NET_RAW\", \"NET_ADMIN\", \"SYS_ADMIN\"]",
            "capabilities.add is ['NET_RAW', 'NET_ADMIN', 'SYS_ADMIN']",
        ),
        // The overlay's sensor address lost.
        (
            "overlays/sensor-address/agent-env.yaml",
            "\"192.0.2.10,2003\"",
            "\"xrpcap-sensor.xrpcap.svc,2003\"",
            "overlays/sensor-address: ActiveClient host xrpcap-sensor.xrpcap.svc, not 192.0.2.10",
        ),
        // A value the agent refuses: its own --check-config says so.
        (
            "base/agent.yaml",
            "XRPCAPD_LOG_LEVEL: \"info\"",
            "XRPCAPD_LOG_LEVEL: \"loud\"",
            "XRPCAPD_LOG_LEVEL",
        ),
        // A filter the sensor cannot compile: it refuses to start.
        (
            "overlays/filter/sensor-filter.yaml",
            "tcp port 80 or",
            "tcp prt 80 or",
            "xrpcap-sensor refuses the manifest's arguments",
        ),
        // A patch kustomize cannot apply: the render fails.
        (
            "overlays/filter/Kustomization",
            "path: sensor-filter.yaml",
            "path: no-such-patch.yaml",
            "overlays/filter: ",
        ),
    ];
    for (file, from, to, reason) in cases {
        let tmp = copy();
        edit(&tmp.path().join(file), from, to);
        let out = run_check(tmp.path(), true);
        let all = text(&out);
        assert!(!out.status.success(), "{file}: {to} passed:\n{all}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(reason),
            "{file}: {to}: no {reason:?} in:\n{all}"
        );
    }
}
