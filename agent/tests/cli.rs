//! The binary's configuration handling, run as a process.

use std::process::Command;

fn xrpcapd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xrpcapd"))
        .args(args)
        .output()
        .expect("run xrpcapd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_file_stops_with_file_line_value_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpcapd.ini");
    std::fs::write(
        &path,
        "# x\nActiveClient = 127.0.0.1, DEFAULT\nUdpStrSize = 12\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let (code, _, err) = xrpcapd(&["-f", p, "--check-config"]);
    assert_eq!(code, 78, "EX_CONFIG");
    assert!(
        err.contains(&format!("{p}:3: UdpStrSize = 12: expected 0 or 29..=65000")),
        "{err}"
    );
}

#[test]
fn check_config_prints_effective_configuration_after_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpcapd.ini");
    std::fs::write(
        &path,
        "ActiveClient = 127.0.0.1 DEFAULT\nBogus = 1\nUdpStrSize = 1000\n",
    )
    .unwrap();
    let (code, out, err) = xrpcapd(&[
        "-f",
        path.to_str().unwrap(),
        "-t",
        "0",
        "-n",
        "-a",
        "192.0.2.7,4000",
        "--check-config",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("rpcapd.ini:2: unknown key `Bogus` ignored"),
        "{err}"
    );
    assert!(out.contains("ActiveClient = 127.0.0.1, 2003\n"), "{out}");
    assert!(out.contains("ActiveClient = 192.0.2.7, 4000\n"), "{out}");
    assert!(out.contains("UdpStrSize = 0\n"), "{out}");
    assert!(out.contains("NullAuthPermit = YES\n"), "{out}");
}

#[test]
fn bad_local_filter_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpcapd.ini");
    std::fs::write(
        &path,
        "ActiveClient = 127.0.0.1 DEFAULT\nLocalFilter = port banana and\n",
    )
    .unwrap();
    let (code, _, err) = xrpcapd(&["-f", path.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, 78, "EX_CONFIG");
    assert!(
        err.contains("LocalFilter") && err.contains("port banana and"),
        "{err}"
    );
}

#[test]
fn no_sensor_is_an_error_and_list_interfaces_shows_lo() {
    let (code, _, err) = xrpcapd(&["-v"]);
    assert_eq!(code, 78, "EX_CONFIG");
    assert!(err.contains("no sensor to serve"), "{err}");
    let (code, out, _) = xrpcapd(&["--list-interfaces"]);
    assert_eq!(code, 0);
    assert!(out.contains("lo <UP,RUNNING,LOOPBACK> DLT 1"), "{out}");
    assert!(out.contains("127.0.0.1 netmask 255.0.0.0"), "{out}");
}
