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

/// Every flag of libpcap's rpcapd (getopt "b:dDhip:4l:na:s:f:vSK:X:C") and
/// ExtraHop's ("b:dhp:4l:na:s:f:vyz:u:gc:e:m:k:t:SLi:") with its arity is
/// accepted: a reference command line passes --check-config.
#[test]
fn every_reference_flag_and_arity_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("saved.ini");
    let save_s = save.to_str().unwrap();
    let extrahop: &[&str] = &[
        "-v",
        "-L",
        "-a",
        "192.0.2.1,2003,192.0.2.2",
        "-y",
        "-z",
        "4194304",
        "-u",
        "1048576",
        "-g",
        "-c",
        "-1,-1",
        "-e",
        "-15,10",
        "-m",
        "100",
        "-k",
        "4096",
        "-t",
        "70000",
        "-S",
        "-i",
        "eth0",
        "-b",
        "0.0.0.0",
        "-p",
        "2002",
        "-4",
        "-l",
        "h",
        "-n",
        "-d",
    ];
    let libpcap: &[&str] = &[
        "-b",
        "::1",
        "-p",
        "2002",
        "-4",
        "-l",
        "h",
        "-n",
        "-a",
        "192.0.2.1",
        "-D",
        "-s",
        save_s,
        "-C",
    ];
    for args in [
        extrahop,
        libpcap,
        &["-c", "single"],
        &["-c", "2"],
        &["-c", "1,0"],
        &["-e", "5"],
    ] {
        let mut a = args.to_vec();
        a.push("--check-config");
        let (code, out, err) = xrpcapd(&a);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("Passive = "), "{args:?}: {out}");
    }
    let (_, out, err) = xrpcapd(&[extrahop, &["--check-config"]].concat());
    // The odd-length -a list: the last host gets 2003.
    assert!(
        out.contains("ActiveClient = 192.0.2.2, 2003, ifname=eth0\n"),
        "{out}"
    );
    assert!(out.contains("UdpStrSize = 65000\n"), "{out}");
    assert!(
        out.contains("RingSize = 4M\n") || out.contains("RingSize = 4194304\n"),
        "{out}"
    );
    for notice in [
        "-t 70000: clamped",
        "-m 100: ignored",
        "-k 4096: ignored",
        "-g: ignored",
        "-e ...,10",
    ] {
        assert!(
            err.contains(&format!("notice: {notice}")),
            "{notice}: {err}"
        );
    }
    // -s saved the effective configuration, which loads back.
    let saved = std::fs::read_to_string(&save).unwrap();
    assert!(
        saved.contains("ActiveClient = 192.0.2.1, 2003\n"),
        "{saved}"
    );
    assert!(saved.contains("NullAuthPermit = YES\n"), "{saved}");
    let (code, _, err) = xrpcapd(&["-f", save_s, "--check-config"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn reference_values_out_of_range_are_configuration_errors() {
    for (args, text) in [
        (&["-t", "12"][..], "expected 0 or 29..=65000"),
        (&["-c", "x"], "expected single, CPU"),
        (&["-e", "-30,0"], "-20..=19"),
        (&["-m", "0"], "expected a number > 0"),
        (&["-a", "h,port"], "expected a port"),
    ] {
        let (code, _, err) = xrpcapd(&[args, &["--check-config"]].concat());
        assert_eq!(code, 78, "{args:?}: {err}");
        assert!(err.contains(text), "{args:?}: {err}");
    }
}

#[test]
fn daemon_and_inetd_together_and_inetd_without_a_socket_are_refused() {
    let (code, _, err) = xrpcapd(&["-d", "-i", "-n"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("cannot be used together"), "{err}");
    // Standard input here is not a socket (Command::output gives /dev/null).
    let (code, _, err) = xrpcapd(&["-i", "-n"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("standard input must be a connected TCP socket"),
        "{err}"
    );
}

#[test]
fn daemon_start_failure_reaches_the_starting_process() {
    // The port is taken: the daemon cannot listen; the process that was
    // started says why and exits non-zero instead of 0 at fork.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, _, err) = xrpcapd(&["-d", "-n", "-b", "127.0.0.1", "-p", &port]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Address already in use"), "{err}");
}
