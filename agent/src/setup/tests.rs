use std::collections::HashMap;

use super::*;

fn cli(args: &[&str]) -> Cli {
    let mut all = vec!["xrpcapd-setup"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).unwrap_or_else(|e| panic!("{e}"))
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn resolve_with(args: &[&str], env: &[(&str, &str)], file: &str) -> Result<Request, SetupError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let defaults = parse_defaults(file, "/etc/default/xrpcapd").unwrap();
    resolve(&cli(args), &|k| env.get(k).cloned(), &defaults)
}

fn err(args: &[&str], env: &[(&str, &str)], file: &str) -> SetupError {
    resolve_with(args, env, file).unwrap_err()
}

#[test]
fn sensor_forms() {
    let ok = |s: &str| parse_sensor(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(ok("10.0.0.9"), ("10.0.0.9".into(), 2003));
    assert_eq!(ok("10.0.0.9:4000"), ("10.0.0.9".into(), 4000));
    assert_eq!(ok("sensor.example"), ("sensor.example".into(), 2003));
    assert_eq!(
        ok("sensor-1.example:2004"),
        ("sensor-1.example".into(), 2004)
    );
    assert_eq!(ok("[2001:db8::9]:2005"), ("2001:db8::9".into(), 2005));
    assert_eq!(ok("[2001:db8::9]"), ("2001:db8::9".into(), 2003));
    assert_eq!(ok("2001:db8::9"), ("2001:db8::9".into(), 2003));
    assert_eq!(ok("::1"), ("::1".into(), 2003));
}

#[test]
fn sensor_refusals() {
    for bad in [
        "",
        ":2003",
        "host:0",
        "host:65536",
        "host:port",
        "host:",
        "[2001:db8::9",
        "[10.0.0.1]:2003",
        "[2001:db8::9]2003",
        "2001:db8::9:2003x",
        "a b",
        "a,b",
        "a;b",
        "host=x",
        "-host",
        "fe80::1%eth0",
    ] {
        assert!(parse_sensor(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn ifname_rules() {
    assert!(check_ifname("eth0").is_ok());
    assert!(check_ifname("enp0s31f6.100").is_ok());
    assert!(check_ifname("abcdefghijklmno").is_ok());
    for bad in [
        "",
        "abcdefghijklmnop",
        "a b",
        "a/b",
        "a:b",
        "a,b",
        "a;b",
        ".",
        "..",
    ] {
        assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn flags_render_a_dropin_the_agent_reads_back() {
    let req = resolve_with(
        &[
            "--sensor",
            "[2001:db8::9]:2010",
            "--ifaddr",
            "192.0.2.0/24",
            "--filter",
            " not port 22 ",
        ],
        &[],
        "",
    )
    .unwrap();
    let text = render(&req);
    let cfg = validate_rendered(&text, &req).unwrap();
    assert_eq!(cfg.active_clients.len(), 1);
    let c = &cfg.active_clients[0];
    assert_eq!((c.host.as_str(), c.port), ("2001:db8::9", 2010));
    assert_eq!(c.preselect.ifaddr, Some("192.0.2.0/24".parse().unwrap()));
    assert_eq!(c.preselect.ifname, None);
    assert_eq!(cfg.local_filter.as_deref(), Some("not port 22"));
    assert!(cfg.null_auth);
    assert!(text.starts_with("# Written by xrpcapd-setup"), "{text}");
    assert!(text.contains("ActiveClient = 2001:db8::9, 2010, ifaddr=192.0.2.0/24\n"));
    // Only comments and the three keys.
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" = ").next().unwrap())
        .collect();
    assert_eq!(keys, ["ActiveClient", "NullAuthPermit", "LocalFilter"]);
}

#[test]
fn minimal_dropin_and_no_null_auth() {
    let req = resolve_with(&["--sensor", "10.0.0.9", "--no-null-auth"], &[], "").unwrap();
    let text = render(&req);
    let cfg = validate_rendered(&text, &req).unwrap();
    assert!(!text.contains("NullAuthPermit"), "{text}");
    assert!(!cfg.null_auth);
    assert_eq!(cfg.local_filter, None);
    assert_eq!(cfg.active_clients[0].to_string(), "10.0.0.9, 2003");
}

#[test]
fn validation_catches_a_rendering_that_reads_back_differently() {
    let req = resolve_with(&["--sensor", "10.0.0.9", "--ifname", "eth1"], &[], "").unwrap();
    let text = render(&req).replace("ifname=eth1", "ifname=eth2");
    assert!(validate_rendered(&text, &req).is_err());
    let text = format!("{}Bogus = 1\n", render(&req));
    assert!(validate_rendered(&text, &req).is_err());
}

#[test]
fn flags_override_environment_override_file() {
    let file = "XRPCAPD_SENSOR=file.example\nXRPCAPD_FILTER=\"tcp\"\n";
    let env = [("XRPCAPD_SENSOR", "env.example:2100")];
    let r = resolve_with(&["--sensor", "flag.example"], &env, file).unwrap();
    assert_eq!(r.client.host, "flag.example");
    assert_eq!(r.filter.as_deref(), Some("tcp"));
    let r = resolve_with(&[], &env, file).unwrap();
    assert_eq!(
        (r.client.host.as_str(), r.client.port),
        ("env.example", 2100)
    );
    assert!(r
        .origins
        .contains(&("sensor", Origin::Env("XRPCAPD_SENSOR"))));
    let r = resolve_with(&[], &[("XRPCAPD_SENSOR", "")], file).unwrap();
    assert_eq!(r.client.host, "file.example", "an empty variable is unset");
    assert_eq!(
        r.origins[0].1.to_string(),
        "/etc/default/xrpcapd:1: XRPCAPD_SENSOR"
    );
}

#[test]
fn interface_choice_comes_from_one_source() {
    // The flag's ifaddr hides the environment's ifname: no conflict.
    let r = resolve_with(
        &["--sensor", "s", "--ifaddr", "10.1.0.0/16"],
        &[("XRPCAPD_IFNAME", "eth1")],
        "XRPCAPD_IFNAME=eth2\n",
    )
    .unwrap();
    assert_eq!(r.client.preselect.ifname, None);
    assert_eq!(
        r.client.preselect.ifaddr,
        Some("10.1.0.0/16".parse().unwrap())
    );
    let r = resolve_with(&["--sensor", "s"], &[], "XRPCAPD_IFNAME=eth2\n").unwrap();
    assert_eq!(r.client.preselect.ifname.as_deref(), Some("eth2"));
    // Both in one source: refused.
    let e = err(
        &["--sensor", "s"],
        &[("XRPCAPD_IFNAME", "eth1"), ("XRPCAPD_IFADDR", "10.0.0.1")],
        "",
    );
    assert_eq!(e.exit_code(), EX_CONFIG);
    assert!(e.to_string().contains("give one of them"), "{e}");
    // Both flags: clap refuses (usage error, exit 2).
    assert!(
        Cli::try_parse_from(["x", "--sensor", "s", "--ifname", "a", "--ifaddr", "10.0.0.1"])
            .is_err()
    );
}

#[test]
fn bad_values_are_config_errors_naming_their_source() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (&[], &[], "", "no sensor"),
        (
            &["--sensor", "10.0.0.1\nPassive = yes"],
            &[],
            "",
            "control character",
        ),
        (
            &["--sensor", "s", "--filter", "tcp\nUser = x"],
            &[],
            "",
            "control character",
        ),
        (
            &["--sensor", "s", "--ifname", "eth\t1"],
            &[],
            "",
            "control character",
        ),
        (&["--sensor", "s:0"], &[], "", "--sensor"),
        (
            &[],
            &[("XRPCAPD_SENSOR", "s:99999")],
            "",
            "XRPCAPD_SENSOR (environment)",
        ),
        (
            &["--sensor", "s", "--ifaddr", "10.0.0.300"],
            &[],
            "",
            "ifaddr=",
        ),
        (
            &["--sensor", "s", "--ifname", "a,b"],
            &[],
            "",
            "without `,`",
        ),
        (
            &["--sensor", "s", "--filter", "port 99999999"],
            &[],
            "",
            "libpcap",
        ),
        (
            &["--sensor", "s", "--filter", "   "],
            &[],
            "",
            "tcpdump expression",
        ),
        (
            &["--sensor", "s"],
            &[("XRPCAPD_NULL_AUTH", "maybe")],
            "",
            "YES or NO",
        ),
        (&[], &[], "XRPCAPD_SENSOR=a:b\n", "/etc/default/xrpcapd:1"),
    ];
    for (args, env, file, want) in cases {
        let e = err(args, env, file);
        assert_eq!(e.exit_code(), EX_CONFIG, "{args:?} {env:?}: {e}");
        assert!(
            e.to_string().contains(want),
            "{args:?} {env:?}: `{e}` lacks `{want}`"
        );
    }
}

#[test]
fn defaults_file_syntax() {
    let d = parse_defaults(
        "# comment\n\
         \n\
         XRPCAPD_SENSOR=10.0.0.9\n\
         export XRPCAPD_IFNAME='eth1' # the mirror port\n\
         XRPCAPD_FILTER=\"not (port 22 or host \\\"x\\\")\"\n\
         OTHER=whatever\n\
         XRPCAPD_SENSOR=10.0.0.10:2004 # last wins\n\
         XRPCAPD_TYPO=1\n",
        "d",
    )
    .unwrap();
    let get = |k| d.get(k).map(|s| s.value);
    assert_eq!(get(ENV_SENSOR).as_deref(), Some("10.0.0.10:2004"));
    assert_eq!(get(ENV_IFNAME).as_deref(), Some("eth1"));
    assert_eq!(
        get(ENV_FILTER).as_deref(),
        Some("not (port 22 or host \"x\")")
    );
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].starts_with("d:8: unknown variable XRPCAPD_TYPO"),
        "{:?}",
        d.warnings
    );
    for (bad, want) in [
        ("XRPCAPD_FILTER=not port 22\n", "must be quoted"),
        ("XRPCAPD_FILTER=\"tcp\n", "no closing"),
        ("XRPCAPD_FILTER='tcp\n", "no closing"),
        ("XRPCAPD_FILTER=\"tcp\" udp\n", "after the closing quote"),
        ("just words\n", "expected KEY=value"),
        ("1X=2\n", "not a variable name"),
    ] {
        let e = parse_defaults(&format!("# x\n{bad}"), "d").unwrap_err();
        assert_eq!(e.exit_code(), EX_CONFIG);
        let e = e.to_string();
        assert!(e.starts_with("d:2: ") && e.contains(want), "{bad:?}: {e}");
    }
}

/// What the shipped /etc/default/xrpcapd must be: it parses, sets nothing,
/// and each variable has an example line (`#XRPCAPD_X=value`) that is valid
/// once uncommented.
fn check_defaults_text(text: &str) -> Result<(), String> {
    let d = parse_defaults(text, "default").map_err(|e| e.to_string())?;
    if !d.warnings.is_empty() {
        return Err(format!("{:?}", d.warnings));
    }
    if let Some(var) = KNOWN_VARS.iter().find(|v| d.get(v).is_some()) {
        return Err(format!("{var} is set"));
    }
    for var in KNOWN_VARS {
        let prefix = format!("#{var}=");
        let example = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix('#')
                    .filter(|_| l.trim().starts_with(&prefix))
            })
            .ok_or_else(|| format!("no `{prefix}` example"))?;
        let mut file = example.to_string();
        if *var != ENV_SENSOR {
            file.push_str("\nXRPCAPD_SENSOR=s\n");
        }
        let d = parse_defaults(&file, "example").map_err(|e| format!("{example}: {e}"))?;
        let req = resolve(&cli(&[]), &no_env, &d).map_err(|e| format!("{example}: {e}"))?;
        validate_rendered(&render(&req), &req).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The text this command suggests for packaging/default/xrpcapd.
const SUGGESTED_DEFAULTS: &str = include_str!("default-xrpcapd.example");

#[test]
fn defaults_file_checks() {
    check_defaults_text(SUGGESTED_DEFAULTS).unwrap();
    // Examples that would not work once uncommented are caught.
    let unquoted = SUGGESTED_DEFAULTS.replace("\"not port 22\"", "not port 22");
    assert!(check_defaults_text(&unquoted)
        .unwrap_err()
        .contains("quoted"));
    let no_null = SUGGESTED_DEFAULTS.replace("#XRPCAPD_NULL_AUTH=no", "");
    assert!(check_defaults_text(&no_null)
        .unwrap_err()
        .contains("XRPCAPD_NULL_AUTH"));
    let set = SUGGESTED_DEFAULTS.replace("#XRPCAPD_IFNAME", "XRPCAPD_IFNAME");
    assert!(check_defaults_text(&set).unwrap_err().contains("is set"));
}

/// The file the packages ship (packaging/default/xrpcapd, from the systemd
/// work) meets the same rules.
#[test]
fn shipped_defaults_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/default/xrpcapd");
    match fs::read_to_string(&path) {
        Ok(text) => {
            check_defaults_text(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        }
        Err(e) => eprintln!("skipped: {}: {e}", path.display()),
    }
}

#[test]
fn service_steps() {
    let sc = || Some(PathBuf::from("/usr/bin/systemctl"));
    assert_eq!(service_step(true, sc(), true), ServiceStep::Skip);
    assert_eq!(
        service_step(false, sc(), true),
        ServiceStep::Systemctl("/usr/bin/systemctl".into())
    );
    assert!(
        matches!(service_step(false, sc(), false), ServiceStep::Manual(m) if m.contains("/run/systemd/system"))
    );
    assert!(
        matches!(service_step(false, None, true), ServiceStep::Manual(m) if m.contains("not installed"))
    );
}

#[test]
fn check_command_passes_the_dropin_dir_only_when_not_the_default() {
    let args = |dir: &str| -> Vec<String> {
        check_command(
            Path::new("/usr/sbin/xrpcapd"),
            Path::new("/etc/xrpcapd/rpcapd.ini"),
            Path::new(dir),
        )
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
    };
    assert_eq!(
        args("/etc/xrpcapd/rpcapd.d"),
        ["--check-config", "-f", "/etc/xrpcapd/rpcapd.ini"]
    );
    assert_eq!(
        args("/srv/d"),
        [
            "--check-config",
            "-f",
            "/etc/xrpcapd/rpcapd.ini",
            "--config-dir",
            "/srv/d"
        ]
    );
    assert_eq!(
        cli(&["--config", "x.ini"]).dropin_dir(),
        Path::new("rpcapd.d")
    );
    assert_eq!(cli(&[]).dropin_dir(), Path::new("/etc/xrpcapd/rpcapd.d"));
}

#[test]
fn cli_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
    let help = Cli::command().render_long_help().to_string();
    for var in KNOWN_VARS {
        assert!(help.contains(var), "{var} not in --help");
    }
}

#[test]
fn place_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DROPIN_NAME);
    let mut out = Vec::new();
    // New file, rolled back: gone.
    let p = place(&path, "A\n", None, &mut out).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "A\n");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    p.rollback().unwrap();
    assert!(!path.exists());
    // Replacing, rolled back: the old one, and no stray files.
    fs::write(&path, "OLD\n").unwrap();
    let p = place(&path, "NEW\n", None, &mut out).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "NEW\n");
    p.rollback().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "OLD\n");
    // Replacing, committed.
    let p = place(&path, "NEW\n", None, &mut out).unwrap();
    p.commit().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "NEW\n");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [DROPIN_NAME]);
}
