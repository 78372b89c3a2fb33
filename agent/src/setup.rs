//! `xrpcapd-setup`: points xrpcapd at a sensor with one command.
//!
//! It writes the drop-in `<config-dir>/50-sensor.ini` (an `ActiveClient`
//! line, `NullAuthPermit = YES` for sensors that log in with NULL
//! authentication, `LocalFilter` for `--filter`), checks the result with
//! the installed `xrpcapd --check-config` (restoring the previous drop-in if
//! the check fails), then enables and restarts `xrpcapd.service`.
//!
//! The values come from the flags, else the environment (`XRPCAPD_SENSOR`,
//! `XRPCAPD_IFNAME`, `XRPCAPD_IFADDR`, `XRPCAPD_FILTER`,
//! `XRPCAPD_NULL_AUTH`), else `/etc/default/xrpcapd` (same names). The
//! deciding parts are sans-IO — [`parse_defaults`], [`resolve`],
//! [`render`], [`service_step`] — and [`run`] does the file system and the
//! processes. Values are checked with the agent's own parsers and the
//! rendered file is parsed back with the agent's ini parser, so a written
//! drop-in is valid by construction.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use ipnet::IpNet;

use crate::filter;
use crate::settings::values;
use crate::settings::{ActiveClient, Config, Preselect, DEFAULT_ACTIVE_PORT};

/// The main configuration file of the packages.
pub const DEFAULT_CONFIG: &str = "/etc/xrpcapd/rpcapd.ini";
/// The defaults file (`KEY=value` lines).
pub const DEFAULT_DEFAULTS_FILE: &str = "/etc/default/xrpcapd";
/// The file this command writes in the drop-in directory.
pub const DROPIN_NAME: &str = "50-sensor.ini";
/// The drop-in directory beside the main file.
pub const DROPIN_DIR_NAME: &str = "rpcapd.d";
/// The agent that checks the configuration (`XRPCAPD_BIN` overrides it).
pub const DEFAULT_XRPCAPD: &str = "/usr/sbin/xrpcapd";
/// The unit enabled and restarted.
pub const SERVICE: &str = "xrpcapd.service";
/// The group that may read the drop-in (it may come to hold secrets).
pub const GROUP: &str = "xrpcapd";
/// sd_booted(3): systemd is running when this directory exists.
pub const SYSTEMD_RUNTIME_DIR: &str = "/run/systemd/system";
/// EX_CONFIG (sysexits.h): bad input or a configuration the check refused.
pub const EX_CONFIG: u8 = 78;

/// The variables read from the environment and the defaults file.
pub const ENV_SENSOR: &str = "XRPCAPD_SENSOR";
pub const ENV_IFNAME: &str = "XRPCAPD_IFNAME";
pub const ENV_IFADDR: &str = "XRPCAPD_IFADDR";
pub const ENV_FILTER: &str = "XRPCAPD_FILTER";
pub const ENV_NULL_AUTH: &str = "XRPCAPD_NULL_AUTH";
const KNOWN_VARS: &[&str] = &[
    ENV_SENSOR,
    ENV_IFNAME,
    ENV_IFADDR,
    ENV_FILTER,
    ENV_NULL_AUTH,
];

/// The variables, as one literal (for `concat!` in the help text).
macro_rules! defaults_help {
    () => {
        "\
VARIABLES (flags > environment > /etc/default/xrpcapd):
  XRPCAPD_SENSOR=HOST[:PORT]   the sensor to dial (--sensor); HOST is a name, an IPv4
                               address or [IPv6]; PORT defaults to 2003
  XRPCAPD_IFNAME=IF            the only interface the sensor may open (--ifname)
  XRPCAPD_IFADDR=ADDR[/PREFIX] the interface with this address (--ifaddr);
                               not together with XRPCAPD_IFNAME
  XRPCAPD_FILTER=\"EXPR\"        tcpdump expression applied before the sensor's own
                               filter (--filter, LocalFilter)
  XRPCAPD_NULL_AUTH=yes|no     no: do not write NullAuthPermit = YES (--no-null-auth)
An empty value counts as unset. A choice of interface (IFNAME or IFADDR) is taken
from the first source that sets either."
    };
}

/// The variables of `/etc/default/xrpcapd` (the packages ship
/// `packaging/default/xrpcapd`; a test checks it against these variables).
pub const DEFAULTS_HELP: &str = defaults_help!();

/// The command line (`xrpcapd::setup::Cli::command()` for the man page).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "xrpcapd-setup",
    version,
    about = "Point xrpcapd at a sensor: write the drop-in, check it, enable and restart the service",
    long_about = "xrpcapd-setup points the xrpcapd agent at a sensor with one command. It writes \
the drop-in <config-dir>/50-sensor.ini (default /etc/xrpcapd/rpcapd.d/50-sensor.ini) with an \
ActiveClient line for the sensor (and the interface choice), NullAuthPermit = YES (sensors such \
as ExtraHop's and xrpcap-sensor log in with NULL authentication; only the dialled sensor can use \
it while passive mode is off) and LocalFilter for --filter. The file is replaced atomically, \
mode 0640, group xrpcapd. It then runs `xrpcapd --check-config -f <main file>` (the agent reads \
the drop-ins after the main file) and puts the previous drop-in back if the check fails. Last, \
unless --no-start, it runs `systemctl enable xrpcapd.service` and `systemctl restart \
xrpcapd.service`; without a running systemd it says how to start the agent by hand.\n\n\
Each value comes from its flag, else from the environment, else from /etc/default/xrpcapd \
(KEY=value or KEY=\"value\" lines, # comments; the packages run `xrpcapd-setup --no-start` on \
first install when it sets XRPCAPD_SENSOR), so that automation (cloud-init, Ansible, golden \
images) never edits the conffile rpcapd.ini.\n\n\
Values are checked with the agent's own parsers (the filter is compiled by libpcap); newlines \
and control characters are refused. Exit status: 0 done, 78 bad input or a configuration the \
check refused (nothing changed), 1 other failures (files, systemctl), 2 usage.",
    after_long_help = concat!(defaults_help!(), "
  XRPCAPD_BIN=PATH             the agent that checks the configuration (/usr/sbin/xrpcapd)

EXAMPLES:
  xrpcapd-setup --sensor 10.0.0.9
  xrpcapd-setup --sensor sensor.example:2003 --ifname eth1 --filter 'not port 22'
  xrpcapd-setup --sensor [2001:db8::9]:2003 --ifaddr 192.0.2.0/24
  XRPCAPD_SENSOR=10.0.0.9 xrpcapd-setup --no-start

To undo: remove /etc/xrpcapd/rpcapd.d/50-sensor.ini and run `systemctl restart xrpcapd`.")
)]
pub struct Cli {
    /// The sensor to dial: HOST[:PORT], HOST a name, an IPv4 address, [IPv6] or a bare
    /// IPv6 address; PORT defaults to 2003 [env: XRPCAPD_SENSOR]
    #[arg(short = 's', long, value_name = "HOST[:PORT]")]
    pub sensor: Option<String>,

    /// Let the sensor open only this interface (ifname= of ActiveClient) [env: XRPCAPD_IFNAME]
    #[arg(long, value_name = "IF", conflicts_with = "ifaddr")]
    pub ifname: Option<String>,

    /// Let the sensor open only the interface with an address in this prefix
    /// (ifaddr= of ActiveClient; a bare address is one host) [env: XRPCAPD_IFADDR]
    #[arg(long, value_name = "CIDR")]
    pub ifaddr: Option<String>,

    /// Capture only what this tcpdump expression matches, before the sensor's
    /// own filter (LocalFilter) [env: XRPCAPD_FILTER]
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,

    /// Do not write NullAuthPermit = YES: the sensor logs in with a password
    /// (a User line of rpcapd.ini) [env: XRPCAPD_NULL_AUTH=no]
    #[arg(long)]
    pub no_null_auth: bool,

    /// Write and check the drop-in, but do not enable or restart the service
    #[arg(long)]
    pub no_start: bool,

    /// The agent's main configuration file, checked with the drop-in
    #[arg(short = 'f', long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// The drop-in directory (default: rpcapd.d beside the main file)
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    /// The defaults file read for the values no flag or variable gives
    #[arg(long, value_name = "FILE", default_value = DEFAULT_DEFAULTS_FILE)]
    pub defaults: PathBuf,

    /// Print the drop-in and the commands; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

impl Cli {
    /// The drop-in directory: `--config-dir`, else `rpcapd.d` beside the main file.
    pub fn dropin_dir(&self) -> PathBuf {
        self.config_dir
            .clone()
            .unwrap_or_else(|| default_dropin_dir(&self.config))
    }
}

/// `rpcapd.d` in the directory of `config` (what xrpcapd reads by default).
pub fn default_dropin_dir(config: &Path) -> PathBuf {
    match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(DROPIN_DIR_NAME),
        _ => PathBuf::from(DROPIN_DIR_NAME),
    }
}

/// What went wrong, with the exit status it means.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Bad input (a flag, a variable, the defaults file): nothing changed.
    #[error("{0}")]
    Input(String),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// `xrpcapd --check-config` refused the configuration; the previous
    /// drop-in is back.
    #[error("`{command}` failed ({status}); nothing changed (the previous drop-in, if any, is back):\n{output}")]
    Check {
        command: String,
        status: String,
        output: String,
    },
    /// systemctl failed (the drop-in stays: it passed the check).
    #[error("{0}")]
    Service(String),
}

impl SetupError {
    /// 78 for bad input or a refused configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            SetupError::Input(_) | SetupError::Check { .. } => EX_CONFIG,
            SetupError::Io { .. } | SetupError::Service(_) => 1,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SetupError {
    let what = what.into();
    move |source| SetupError::Io { what, source }
}

/// Where a value came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
    File {
        path: String,
        line: usize,
        key: &'static str,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::Env(var) => write!(f, "{var} (environment)"),
            Origin::File { path, line, key } => write!(f, "{path}:{line}: {key}"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced {
    pub value: String,
    pub origin: Origin,
}

impl Sourced {
    fn bad(&self, expected: impl fmt::Display) -> SetupError {
        SetupError::Input(format!("{} = {:?}: {expected}", self.origin, self.value))
    }
}

/// The variables of a defaults file: (name, value, line), in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults {
    pub path: String,
    pub vars: Vec<(String, String, usize)>,
    /// Unknown `XRPCAPD_*` names, as `file:line: ...` lines.
    pub warnings: Vec<String>,
}

impl Defaults {
    /// The last non-empty assignment of `key` (shell semantics: the last wins).
    fn get(&self, key: &'static str) -> Option<Sourced> {
        let (_, value, line) = self.vars.iter().rev().find(|(k, _, _)| k == key)?;
        (!value.is_empty()).then(|| Sourced {
            value: value.clone(),
            origin: Origin::File {
                path: self.path.clone(),
                line: *line,
                key,
            },
        })
    }
}

/// Parses a defaults file: `KEY=value`, `KEY="value"`, `KEY='value'`,
/// optionally after `export `; blank lines and `#` comments. An unquoted
/// value holding a space must be quoted (the file stays valid shell).
pub fn parse_defaults(text: &str, path: &str) -> Result<Defaults, SetupError> {
    let mut defaults = Defaults {
        path: path.to_string(),
        ..Defaults::default()
    };
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let bad = |msg: &str| SetupError::Input(format!("{path}:{line}: {msg}"));
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let assignment = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((key, value)) = assignment.split_once('=') else {
            return Err(bad("expected KEY=value"));
        };
        let key = key.trim();
        let valid_name = key
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if key.is_empty() || !valid_name {
            return Err(bad(&format!("`{key}` is not a variable name")));
        }
        let value = unquote(value.trim()).map_err(|e| bad(&format!("{key}: {e}")))?;
        if key.starts_with("XRPCAPD_") && !KNOWN_VARS.contains(&key) {
            defaults.warnings.push(format!(
                "{path}:{line}: unknown variable {key} ignored (known: {})",
                KNOWN_VARS.join(", ")
            ));
        }
        defaults.vars.push((key.to_string(), value, line));
    }
    Ok(defaults)
}

/// The value of a `KEY=value` line, quotes removed; a `#` comment may follow
/// a quoted value or an unquoted one after a space.
fn unquote(value: &str) -> Result<String, String> {
    fn rest_is_comment(rest: &str) -> bool {
        let rest = rest.trim_start();
        rest.is_empty() || rest.starts_with('#')
    }
    if let Some(inner) = value.strip_prefix('\'') {
        let end = inner.find('\'').ok_or("no closing '")?;
        if !rest_is_comment(&inner[end + 1..]) {
            return Err("text after the closing quote".into());
        }
        return Ok(inner[..end].to_string());
    }
    if let Some(inner) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    if !rest_is_comment(&inner[i + 1..]) {
                        return Err("text after the closing quote".into());
                    }
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\' | '$' | '`'))) => out.push(e),
                    Some((_, e)) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => return Err("no closing \"".into()),
                },
                _ => out.push(c),
            }
        }
        return Err("no closing \"".into());
    }
    match value.split_once(char::is_whitespace) {
        None => Ok(value.to_string()),
        Some((v, rest)) if rest_is_comment(rest) => Ok(v.to_string()),
        Some(_) => Err("a value with spaces must be quoted: KEY=\"value\"".into()),
    }
}

/// What the drop-in says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub client: ActiveClient,
    pub filter: Option<String>,
    pub null_auth: bool,
    /// Where each value came from, for the report.
    pub origins: Vec<(&'static str, Origin)>,
}

/// Refuses newlines and control characters (they would end the ini line).
fn no_controls(s: &Sourced) -> Result<(), SetupError> {
    if s.value.chars().any(char::is_control) {
        return Err(s.bad("contains a newline or control character"));
    }
    Ok(())
}

/// `HOST[:PORT]`, `[IPv6][:PORT]` or a bare IPv6 address; port 2003 by default.
pub fn parse_sensor(value: &str) -> Result<(String, u16), String> {
    let expected = "expected HOST[:PORT], [IPv6]:PORT or an IPv6 address";
    if value.is_empty() {
        return Err(format!("empty: {expected}"));
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("no closing ]: {expected}"))?;
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("`{inner}` in brackets is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{p}` after ]: {expected}"))?,
            ),
        };
        (inner, port)
    } else if value.matches(':').count() >= 2 {
        value
            .parse::<Ipv6Addr>()
            .map_err(|_| "not an IPv6 address; with a port write [ADDR]:PORT".to_string())?;
        (value, None)
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    if host.parse::<IpAddr>().is_err() {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if host.is_empty()
            || host.len() > 253
            || host.starts_with(['-', '.'])
            || !host.chars().all(ok_char)
        {
            return Err(format!(
                "`{host}` is not a host name or address (letters, digits, - . _): {expected}"
            ));
        }
    }
    let port = match port {
        None => DEFAULT_ACTIVE_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => n,
            _ => return Err(format!("port `{p}`: expected 1..=65535 (default 2003)")),
        },
    };
    Ok((host.to_string(), port))
}

/// An interface name as the kernel accepts it (dev_valid_name), without
/// the ActiveClient line's separators.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("an interface name of 1 to 15 bytes".into());
    }
    if name == "." || name == ".." {
        return Err("an interface name, not . or ..".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '/' | ':' | ',' | ';' | '='))
    {
        return Err(format!("an interface name without `{c}`"));
    }
    Ok(())
}

/// A variable of the environment (tests give their own).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The value of `var` from the flag, else the environment, else the file.
fn pick(
    flag: Option<&String>,
    flag_name: &'static str,
    var: &'static str,
    env: Lookup<'_>,
    defaults: &Defaults,
) -> Option<Sourced> {
    if let Some(v) = flag {
        return Some(Sourced {
            value: v.clone(),
            origin: Origin::Flag(flag_name),
        });
    }
    if let Some(v) = env(var).filter(|v| !v.is_empty()) {
        return Some(Sourced {
            value: v,
            origin: Origin::Env(var),
        });
    }
    defaults.get(var)
}

/// The interface choice: from the first source that sets IFNAME or IFADDR.
fn pick_interface(
    cli: &Cli,
    env: Lookup<'_>,
    defaults: &Defaults,
) -> Result<(Option<Sourced>, Option<Sourced>), SetupError> {
    let none = |_: &str| None;
    let empty = Defaults::default();
    type Layer<'a> = (
        Option<&'a String>,
        Option<&'a String>,
        Lookup<'a>,
        &'a Defaults,
    );
    let layers: [Layer; 3] = [
        (cli.ifname.as_ref(), cli.ifaddr.as_ref(), &none, &empty),
        (None, None, env, &empty),
        (None, None, &none, defaults),
    ];
    for (ifname, ifaddr, env, file) in layers {
        let name = pick(ifname, "--ifname", ENV_IFNAME, env, file);
        let addr = pick(ifaddr, "--ifaddr", ENV_IFADDR, env, file);
        match (name, addr) {
            (None, None) => continue,
            (Some(n), Some(a)) => {
                return Err(SetupError::Input(format!(
                    "{} and {} both choose the interface: give one of them",
                    n.origin, a.origin
                )))
            }
            (n, a) => return Ok((n, a)),
        }
    }
    Ok((None, None))
}

/// Decides the drop-in's content from the flags, the environment (`env`)
/// and the defaults file; every value checked.
pub fn resolve(cli: &Cli, env: Lookup<'_>, defaults: &Defaults) -> Result<Request, SetupError> {
    let mut origins = Vec::new();
    let sensor =
        pick(cli.sensor.as_ref(), "--sensor", ENV_SENSOR, env, defaults).ok_or_else(|| {
            SetupError::Input(format!(
                "no sensor: give --sensor HOST[:PORT], or set {ENV_SENSOR} in the environment \
                 or in {}",
                defaults.path
            ))
        })?;
    no_controls(&sensor)?;
    let (host, port) = parse_sensor(&sensor.value).map_err(|e| sensor.bad(e))?;
    origins.push(("sensor", sensor.origin.clone()));

    let mut preselect = Preselect::default();
    let (ifname, ifaddr) = pick_interface(cli, env, defaults)?;
    if let Some(n) = ifname {
        no_controls(&n)?;
        check_ifname(&n.value).map_err(|e| n.bad(format!("expected {e}")))?;
        preselect.ifname = Some(n.value.clone());
        origins.push(("ifname", n.origin));
    }
    if let Some(a) = ifaddr {
        no_controls(&a)?;
        let net: IpNet =
            values::parse_ifaddr(&a.value).map_err(|e| a.bad(format!("expected {e}")))?;
        preselect.ifaddr = Some(net);
        origins.push(("ifaddr", a.origin));
    }

    let filter = match pick(cli.filter.as_ref(), "--filter", ENV_FILTER, env, defaults) {
        None => None,
        Some(f) => {
            no_controls(&f)?;
            let expr = f.value.trim();
            if expr.is_empty() {
                return Err(f.bad("expected a tcpdump expression"));
            }
            filter::check_local(expr).map_err(|e| f.bad(e))?;
            origins.push(("filter", f.origin.clone()));
            Some(expr.to_string())
        }
    };

    let null_auth = if cli.no_null_auth {
        origins.push(("null auth", Origin::Flag("--no-null-auth")));
        false
    } else {
        match pick(None, "", ENV_NULL_AUTH, env, defaults) {
            None => true,
            Some(v) => {
                no_controls(&v)?;
                let yes =
                    values::parse_yes_no(&v.value).map_err(|e| v.bad(format!("expected {e}")))?;
                origins.push(("null auth", v.origin));
                yes
            }
        }
    };

    // The line as the agent's parser reads it: the same client, or refuse.
    let client = ActiveClient {
        host,
        port,
        preselect,
        capture: None,
        decap: None,
    };
    let parsed = values::parse_active_client(&client.to_string()).map_err(|e| {
        SetupError::Input(format!("ActiveClient = {client}: the agent expects {e}"))
    })?;
    if parsed != client {
        return Err(SetupError::Input(format!(
            "ActiveClient = {client} would read back as {parsed}"
        )));
    }
    Ok(Request {
        client,
        filter,
        null_auth,
        origins,
    })
}

/// The text of the drop-in.
pub fn render(req: &Request) -> String {
    let mut s = String::from(
        "# Written by xrpcapd-setup: the sensor this agent dials. Each run of\n\
         # xrpcapd-setup replaces this file; to change it, run it again, e.g.\n\
         #   xrpcapd-setup --sensor HOST[:PORT] [--ifname IF | --ifaddr CIDR] [--filter EXPR]\n\
         # or set XRPCAPD_SENSOR (and XRPCAPD_IFNAME, ...) in /etc/default/xrpcapd and run\n\
         # xrpcapd-setup. To stop dialling this sensor, remove the file and run\n\
         # `systemctl restart xrpcapd`. xrpcapd reads it after the main rpcapd.ini;\n\
         # see xrpcapd-setup(8) and rpcapd.ini(5).\n",
    );
    s.push_str(&format!("ActiveClient = {}\n", req.client));
    if req.null_auth {
        s.push_str(
            "# The sensor logs in with NULL authentication (ExtraHop, xrpcap-sensor);\n\
             # with passive mode off only the dialled sensor can use it.\n\
             NullAuthPermit = YES\n",
        );
    }
    if let Some(f) = &req.filter {
        s.push_str(&format!("LocalFilter = {f}\n"));
    }
    s
}

/// Parses the rendered drop-in with the agent's ini parser and checks it
/// says exactly what was asked.
pub fn validate_rendered(text: &str, req: &Request) -> Result<Config, SetupError> {
    let parsed = Config::parse(text, DROPIN_NAME)
        .map_err(|e| SetupError::Input(format!("the drop-in would not parse: {e}")))?;
    let c = &parsed.config;
    if !parsed.warnings.is_empty()
        || c.active_clients != [req.client.clone()]
        || c.local_filter != req.filter
        || (req.null_auth && !c.null_auth)
    {
        return Err(SetupError::Input(format!(
            "the drop-in would read back differently:\n{text}"
        )));
    }
    Ok(parsed.config)
}

/// What to do about the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceStep {
    /// `--no-start` or `--dry-run`.
    Skip,
    /// No systemd to ask: the reason.
    Manual(String),
    /// `systemctl enable` and `restart` with this systemctl.
    Systemctl(PathBuf),
}

/// Decides the service step: systemctl when it is installed and systemd runs.
pub fn service_step(no_start: bool, systemctl: Option<PathBuf>, booted: bool) -> ServiceStep {
    match (no_start, systemctl, booted) {
        (true, _, _) => ServiceStep::Skip,
        (false, None, _) => ServiceStep::Manual("systemctl is not installed".into()),
        (false, Some(_), false) => ServiceStep::Manual(format!(
            "systemd is not running here (no {SYSTEMD_RUNTIME_DIR})"
        )),
        (false, Some(path), true) => ServiceStep::Systemctl(path),
    }
}

/// An executable `name` in `path` (a PATH value).
pub fn find_in_path(name: &str, path: Option<OsString>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A command line for messages.
fn show_command(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The `xrpcapd --check-config` command; `--config-dir` only when the
/// drop-in directory is not the one beside the main file.
pub fn check_command(xrpcapd: &Path, config: &Path, dropin_dir: &Path) -> Command {
    let mut cmd = Command::new(xrpcapd);
    cmd.arg("--check-config").arg("-f").arg(config);
    if dropin_dir != default_dropin_dir(config) {
        cmd.arg("--config-dir").arg(dropin_dir);
    }
    cmd
}

/// The drop-in in place, with the previous one kept until [`Placed::commit`].
struct Placed {
    path: PathBuf,
    backup: Option<PathBuf>,
}

impl Placed {
    fn commit(self) -> Result<(), SetupError> {
        if let Some(b) = &self.backup {
            fs::remove_file(b).map_err(io_err(format!("removing {}", b.display())))?;
        }
        Ok(())
    }

    /// Puts the previous drop-in back (or removes the new one).
    fn rollback(self) -> Result<(), SetupError> {
        match &self.backup {
            Some(b) => fs::rename(b, &self.path).map_err(io_err(format!(
                "restoring {} from {}",
                self.path.display(),
                b.display()
            )))?,
            None => fs::remove_file(&self.path)
                .map_err(io_err(format!("removing {}", self.path.display())))?,
        }
        sync_dir(&self.path);
        Ok(())
    }
}

fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent() {
        // Best effort: the rename is durable once the directory is.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
}

/// The gid of group `xrpcapd`, if it exists.
fn group_id() -> Option<u32> {
    nix::unistd::Group::from_name(GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Gives `f` to group `gid`; a warning when not permitted (not root).
fn chgrp(f: &File, path: &Path, gid: Option<u32>, out: &mut dyn Write) -> Result<(), SetupError> {
    if let Some(gid) = gid {
        if let Err(e) = std::os::unix::fs::fchown(f, None, Some(gid)) {
            if e.kind() != io::ErrorKind::PermissionDenied {
                return Err(io_err(format!(
                    "giving {} to group {GROUP}",
                    path.display()
                ))(e));
            }
            let _ = writeln!(
                out,
                "xrpcapd-setup: note: {} not given to group {GROUP}: {e}",
                path.display()
            );
        }
    }
    Ok(())
}

/// Creates the drop-in directory (0750, group xrpcapd) when missing.
fn ensure_dir(dir: &Path, gid: Option<u32>, out: &mut dyn Write) -> Result<(), SetupError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o750))
        .map_err(io_err(format!("setting the mode of {}", dir.display())))?;
    let d = File::open(dir).map_err(io_err(format!("opening {}", dir.display())))?;
    chgrp(&d, dir, gid, out)?;
    let _ = writeln!(out, "xrpcapd-setup: created {}", dir.display());
    Ok(())
}

/// Replaces `path` with `text` atomically (temporary file, fsync, rename),
/// mode 0640, group `gid`; keeps a hard link to the previous file.
fn place(
    path: &Path,
    text: &str,
    gid: Option<u32>,
    out: &mut dyn Write,
) -> Result<Placed, SetupError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let backup = dir.join(format!(".{name}.previous"));
    let mut write = || -> Result<(), SetupError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)
            .map_err(io_err(format!("creating {}", tmp.display())))?;
        // Whatever the umask.
        f.set_permissions(fs::Permissions::from_mode(0o640))
            .map_err(io_err(format!("setting the mode of {}", tmp.display())))?;
        chgrp(&f, path, gid, out)?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io_err(format!("writing {}", tmp.display())))
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let mut placed = Placed {
        path: path.to_path_buf(),
        backup: None,
    };
    if path.exists() {
        let _ = fs::remove_file(&backup);
        if let Err(e) = fs::hard_link(path, &backup) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(format!(
                "keeping {} as {}",
                path.display(),
                backup.display()
            ))(e));
        }
        placed.backup = Some(backup);
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        if let Some(b) = &placed.backup {
            let _ = fs::remove_file(b);
        }
        return Err(io_err(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        ))(e));
    }
    sync_dir(path);
    Ok(placed)
}

/// Runs `cmd`, its output captured; `Err` holds (status, output) on failure.
fn run_captured(cmd: &mut Command) -> io::Result<Result<String, (String, String)>> {
    let output = cmd.output()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_string();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    if output.status.success() {
        Ok(Ok(stdout))
    } else {
        let both = [stderr, stdout]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Err((output.status.to_string(), both)))
    }
}

/// What [`run`] needs from the process environment (tests give their own).
pub struct Env<'a> {
    pub var: Lookup<'a>,
    /// `XRPCAPD_BIN` or /usr/sbin/xrpcapd.
    pub xrpcapd: PathBuf,
    /// systemctl found in PATH.
    pub systemctl: Option<PathBuf>,
    /// Whether systemd runs (/run/systemd/system exists).
    pub booted: bool,
}

impl Env<'static> {
    /// The real process environment.
    pub fn from_process() -> Env<'static> {
        fn var(name: &str) -> Option<String> {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        }
        Env {
            var: &var,
            xrpcapd: std::env::var_os("XRPCAPD_BIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_XRPCAPD)),
            systemctl: find_in_path("systemctl", std::env::var_os("PATH")),
            booted: Path::new(SYSTEMD_RUNTIME_DIR).is_dir(),
        }
    }
}

/// Reads the defaults file; a missing one is empty.
pub fn load_defaults(path: &Path) -> Result<Defaults, SetupError> {
    let shown = path.display().to_string();
    match fs::read_to_string(path) {
        Ok(text) => parse_defaults(&text, &shown),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Defaults {
            path: shown,
            ..Defaults::default()
        }),
        Err(e) => Err(SetupError::Input(format!("reading {shown}: {e}"))),
    }
}

/// Does it all, saying what it does on `out`.
pub fn run(cli: &Cli, env: &Env, out: &mut dyn Write) -> Result<(), SetupError> {
    let say = |out: &mut dyn Write, msg: String| {
        let _ = writeln!(out, "xrpcapd-setup: {msg}");
    };
    let defaults = load_defaults(&cli.defaults)?;
    for w in &defaults.warnings {
        say(out, format!("warning: {w}"));
    }
    let req = resolve(cli, env.var, &defaults)?;
    let text = render(&req);
    validate_rendered(&text, &req)?;
    let dir = cli.dropin_dir();
    let path = dir.join(DROPIN_NAME);
    let mut check = check_command(&env.xrpcapd, &cli.config, &dir);
    let from: Vec<String> = req
        .origins
        .iter()
        .filter(|(_, o)| !matches!(o, Origin::Flag(_)))
        .map(|(what, o)| format!("{what} from {o}"))
        .collect();
    if !from.is_empty() {
        say(out, from.join("; "));
    }
    if let Some(name) = &req.client.preselect.ifname {
        if !Path::new("/sys/class/net").join(name).exists() {
            say(
                out,
                format!(
                    "note: no interface {name} here now; the sensor can open it once it exists"
                ),
            );
        }
    }
    if cli.dry_run {
        say(
            out,
            format!("dry run: would write {}:\n{text}", path.display()),
        );
        say(out, format!("dry run: would run {}", show_command(&check)));
        if !cli.no_start {
            say(
                out,
                format!(
                    "dry run: would run systemctl enable {SERVICE} and systemctl restart {SERVICE}"
                ),
            );
        }
        return Ok(());
    }

    let gid = group_id();
    ensure_dir(&dir, gid, out)?;
    let existed = path.exists();
    let placed = place(&path, &text, gid, out)?;
    say(
        out,
        format!(
            "{} {}: ActiveClient = {}",
            if existed { "replaced" } else { "wrote" },
            path.display(),
            req.client
        ),
    );

    let shown = show_command(&check);
    match run_captured(&mut check) {
        Ok(Ok(stdout)) => {
            placed.commit()?;
            say(out, format!("checked: {shown}: OK"));
            let line = format!("ActiveClient = {}", req.client);
            if !stdout.lines().any(|l| l.trim() == line) {
                say(
                    out,
                    format!(
                        "warning: {} did not list `{line}`: this xrpcapd may not read {} \
                         (drop-ins need a newer xrpcapd) or another file overrides it",
                        env.xrpcapd.display(),
                        dir.display()
                    ),
                );
            }
        }
        Ok(Err((status, output))) => {
            placed.rollback()?;
            return Err(SetupError::Check {
                command: shown,
                status,
                output,
            });
        }
        Err(e) => {
            placed.rollback()?;
            return Err(io_err(format!(
                "running {} (set XRPCAPD_BIN to the agent; the previous drop-in is back in place)",
                env.xrpcapd.display()
            ))(e));
        }
    }

    let by_hand = format!(
        "start the agent by hand: {} -L -f {}",
        env.xrpcapd.display(),
        cli.config.display()
    );
    match service_step(cli.no_start || cli.dry_run, env.systemctl.clone(), env.booted) {
        ServiceStep::Skip => say(
            out,
            format!("not starting the service (--no-start): `systemctl enable --now {SERVICE}` starts it"),
        ),
        ServiceStep::Manual(why) => say(out, format!("{why}: {by_hand}")),
        ServiceStep::Systemctl(systemctl) => {
            for verb in ["enable", "restart"] {
                let mut cmd = Command::new(&systemctl);
                cmd.arg(verb).arg(SERVICE);
                let shown = show_command(&cmd);
                match run_captured(&mut cmd) {
                    Ok(Ok(_)) => say(out, format!("ran {shown}")),
                    Ok(Err((status, output))) => {
                        return Err(SetupError::Service(format!(
                            "`{shown}` failed ({status}): {output}\nthe drop-in is in place; \
                             see `journalctl -u {SERVICE}`"
                        )))
                    }
                    Err(e) => {
                        return Err(SetupError::Service(format!("running `{shown}`: {e}")))
                    }
                }
            }
            say(out, format!("{SERVICE} is running with the new sensor; `systemctl status {SERVICE}` shows it"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
