//! rpcapd.ini: the configuration file of libpcap's and ExtraHop's rpcapd
//! (PROTOCOL.md §5), plus xrpcapd's own keys (see docs/rpcapd.ini.example).
//! A main file is followed by the drop-ins of its `rpcapd.d` directory
//! ([`Config::load`]): one configuration, as if the files were one.
//!
//! The parser is hand-written: the `ini` crates lose line numbers (needed for
//! `file:line` diagnostics) and collapse repeated keys (`ActiveClient` and
//! `PassiveClient` repeat, one session per line). Every key is one entry of
//! [`KEYS`]: its name, how its value is parsed and set, and how it is shown
//! by `--check-config` ([`super::render`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::env::Environment;
use super::model::{Backend, BusyPoll, Config, StatusSocket, MIN_RING_SIZE, MIN_SEND_BUFFER};
use super::values::*;

/// One rpcapd.ini key.
pub struct Key {
    /// As written in the file (matched without regard to case).
    pub name: &'static str,
    /// Parses `value` into the configuration: `Ok` holds the warnings when
    /// it applied but deserves a word, `Err` what was expected.
    set: fn(&mut Config, &str) -> Result<Vec<String>, String>,
    /// The values of the key's lines in `--check-config`, in order; none
    /// when the key is unset.
    pub show: fn(&Config) -> Vec<String>,
}

/// A key held in one field of the configuration: `$parse` turns the value
/// into the field's value, `$show` the field into its lines.
macro_rules! field {
    ($name:literal, $($f:ident).+, $parse:expr, $show:expr) => {
        Key {
            name: $name,
            set: |c, v| {
                c.$($f).+ = ($parse)(v)?;
                Ok(Vec::new())
            },
            show: |c| ($show)(&c.$($f).+),
        }
    };
}

fn one(v: &impl fmt::Display) -> Vec<String> {
    vec![v.to_string()]
}

fn opt(v: &Option<impl fmt::Display>) -> Vec<String> {
    v.iter().map(|v| v.to_string()).collect()
}

fn path(p: &Option<PathBuf>) -> Vec<String> {
    p.iter().map(|p| p.display().to_string()).collect()
}

/// `0,2,3`; no line when unset (no pinning).
fn cpu_list(cpus: &[usize]) -> Vec<String> {
    if cpus.is_empty() {
        return Vec::new();
    }
    let cpus: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
    vec![cpus.join(",")]
}

/// As the reference daemons write them.
fn yes_no(b: &bool) -> Vec<String> {
    one(&if *b { "YES" } else { "NO" })
}

/// The `Xdp*` keys' own spelling.
fn lower_yes_no(b: &bool) -> Vec<String> {
    one(&if *b { "yes" } else { "no" })
}

/// Every key, in the order `--check-config` prints them.
pub static KEYS: &[Key] = &[
    // `Passive = no` is `-v`; absent, passive unless `-v` (the references'
    // rule). The flags override it ([`super::cli::Cli::apply`]).
    Key {
        name: "Passive",
        set: |c, v| {
            c.active_only = !parse_yes_no(v)?;
            Ok(Vec::new())
        },
        show: |c| lower_yes_no(&!c.active_only),
    },
    Key {
        name: "ActiveClient",
        set: |c, v| {
            let (client, warnings) = parse_active_client_line(v)?;
            c.active_clients.push(client);
            Ok(warnings)
        },
        show: |c| c.active_clients.iter().map(|a| a.to_string()).collect(),
    },
    Key {
        name: "TunnelClient",
        set: |c, v| {
            c.tunnel_clients
                .push(super::tunnel::parse_tunnel_client(v)?);
            Ok(Vec::new())
        },
        show: |c| c.tunnel_clients.iter().map(|t| t.to_string()).collect(),
    },
    Key {
        name: "PassiveClient",
        // One host, as libpcap's rpcapd reads it, or a list (ExtraHop's
        // reads every host of `PassiveClient = h1, h2`): all are allowed.
        set: |c, v| {
            c.passive.clients.extend(parse_host_list(v)?);
            Ok(Vec::new())
        },
        show: |c| c.passive.clients.clone(),
    },
    Key {
        name: "NullAuthPermit",
        set: |c, v| {
            // Both references compare with "YES" exactly; anything else
            // means no. libpcap's reads the first word only.
            let word = v.split_whitespace().next().unwrap_or_default();
            c.null_auth = word == "YES";
            if !c.null_auth && word.eq_ignore_ascii_case("yes") {
                return Ok(vec![format!(
                    "NullAuthPermit = {word} means NO (only `YES` permits, as in the reference daemons)"
                )]);
            }
            Ok(Vec::new())
        },
        show: |c| yes_no(&c.null_auth),
    },
    field!(
        "UserName",
        user_name,
        |v| parse_nonempty(v, "a user name").map(Some),
        opt
    ),
    Key {
        name: "Capture",
        set: |c, v| {
            (c.capture.backend, c.capture.xdp.interfaces) = parse_backend(v)?;
            Ok(Vec::new())
        },
        show: |c| {
            one(&match &c.capture.backend {
                Backend::AfPacket => "afpacket".to_string(),
                Backend::File(p) => format!("file:{}", p.display()),
                Backend::AfXdp if c.capture.xdp.interfaces.is_empty() => "afxdp".to_string(),
                Backend::AfXdp => format!("afxdp:{}", c.capture.xdp.interfaces.join(",")),
            })
        },
    },
    field!("XdpMode", capture.xdp.mode, parse_xdp_mode, one),
    field!(
        "XdpReplace",
        capture.xdp.replace,
        parse_yes_no,
        lower_yes_no
    ),
    field!(
        "XdpDropRejected",
        capture.xdp.drop_rejected,
        parse_yes_no,
        lower_yes_no
    ),
    field!("XdpBusyPoll", capture.xdp.busy_poll, BusyPoll::parse, one),
    field!("UdpStrSize", udpstr_size, parse_udpstr_size, one),
    field!(
        "SendBuffer",
        capture.send_buffer,
        |v| parse_bytes(v, MIN_SEND_BUFFER),
        one
    ),
    field!(
        "RingSize",
        capture.ring_size,
        |v| parse_bytes(v, MIN_RING_SIZE),
        one
    ),
    field!(
        "LocalFilter",
        local_filter,
        |v: &str| Ok::<_, String>((!v.is_empty()).then(|| v.to_string())),
        opt
    ),
    field!("WorkerCpu", capture.worker_cpus, parse_cpu_list, cpu_list),
    field!(
        "MaxLatencyMs",
        capture.max_latency,
        |v| parse_u32_in(v, 1, 60_000).map(|ms| Duration::from_millis(ms.into())),
        |d: &Duration| one(&d.as_millis())
    ),
    field!(
        "LogLevel",
        log_level,
        parse_log_level,
        |l: &log::LevelFilter| one(&l.as_str().to_ascii_lowercase())
    ),
    field!(
        "KeepaliveSecs",
        keepalive_secs,
        |v| parse_u32_in(v, 0, 86_400),
        one
    ),
    field!(
        "MaxBackoffSecs",
        max_backoff_secs,
        |v| parse_u32_in(v, 1, 86_400),
        one
    ),
    field!(
        "FailbackSecs",
        failback_secs,
        |v| parse_u32_in(v, 1, 86_400),
        one
    ),
    field!(
        "LivenessSecs",
        liveness_secs,
        |v| parse_u32_in(v, 0, 3600),
        one
    ),
    field!("ActiveCloseStops", active_close_stops, parse_yes_no, yes_no),
    field!(
        "SummaryInterval",
        summary_interval_secs,
        |v| parse_u32_in(v, 0, 86_400),
        one
    ),
    field!(
        "MaxClients",
        passive.max_clients,
        |v| parse_u32_in(v, 1, 4096).map(|n| n as usize),
        one
    ),
    field!(
        "MaxClientsPerHost",
        passive.max_clients_per_host,
        |v| parse_u32_in(v, 1, 4096).map(|n| n as usize),
        one
    ),
    field!(
        "AuthTimeoutSecs",
        passive.auth_timeout_secs,
        |v| parse_u32_in(v, 1, 3600),
        one
    ),
    field!(
        "IdleTimeoutSecs",
        passive.idle_timeout_secs,
        |v| parse_u32_in(v, 1, 86_400),
        one
    ),
    field!(
        "DataAcceptTimeoutSecs",
        passive.data_accept_timeout_secs,
        |v| parse_u32_in(v, 1, 3600),
        one
    ),
    field!("PassiveUdpStr", passive.udpstr, parse_yes_no, yes_no),
    Key {
        name: "User",
        set: |c, v| {
            c.auth.users.push(parse_user(v)?);
            Ok(Vec::new())
        },
        show: |c| {
            c.auth
                .users
                .iter()
                .map(|u| format!("{} {}", u.name, u.hash))
                .collect()
        },
    },
    field!("SystemAccounts", auth.system_accounts, parse_yes_no, yes_no),
    field!(
        "ShadowFile",
        auth.shadow_file,
        |v| parse_path(v).map(Some),
        path
    ),
    field!("TlsCert", tls.cert, |v| parse_path(v).map(Some), path),
    field!("TlsKey", tls.key, |v| parse_path(v).map(Some), path),
    field!(
        "TlsClientCa",
        tls.client_ca,
        |v| parse_path(v).map(Some),
        path
    ),
    field!("TlsMode", tls.mode, |v| parse_tls_mode(v).map(Some), opt),
    field!(
        "MetricsListen",
        metrics_listen,
        |v| parse_metrics_listen(v).map(Some),
        opt
    ),
    field!(
        "StatusSocket",
        status_socket,
        parse_status_socket,
        |s: &StatusSocket| match s {
            StatusSocket::Default => Vec::new(),
            StatusSocket::Off => vec!["none".to_string()],
            StatusSocket::Path(p) => vec![p.display().to_string()],
        }
    ),
];

/// The entry of `name` (any case).
fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name.eq_ignore_ascii_case(name))
}

/// A warning or error about one line of a file, or about an environment
/// variable (`file` is then its name, and `line` 0 when its value is one
/// line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub file: String,
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.msg)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.msg)
        }
    }
}

/// Where a `Key = value` line comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of the main file or of a drop-in.
    File { path: String, line: usize },
    /// An `XRPCAPD_*` variable ([`super::env`]): `line` of its value when
    /// the value holds several, else 0.
    Env { var: String, line: usize },
}

impl Origin {
    pub(super) fn diag(&self, msg: String) -> Diag {
        let (file, line) = match self {
            Origin::File { path, line } => (path, line),
            Origin::Env { var, line } => (var, line),
        };
        Diag {
            file: file.clone(),
            line: *line,
            msg,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{path}:{line}"),
            Origin::Env { var, line: 0 } => write!(f, "env {var}"),
            Origin::Env { var, line } => write!(f, "env {var}:{line}"),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl Key {
    /// Whether the key takes several values (each line adds one, as
    /// `ActiveClient`) rather than one (a later line overrides), found by
    /// setting `sample` (a valid value) twice.
    pub(super) fn repeats(&self, sample: &str) -> bool {
        let mut c = Config::default();
        if (self.set)(&mut c, sample).is_err() {
            return false;
        }
        let once = (self.show)(&c).len();
        let _ = (self.set)(&mut c, sample);
        (self.show)(&c).len() > once
    }
}

/// One line that names a key: its value (comment removed) and where it is.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub key: &'static Key,
    /// The key as written (any case), for messages.
    written: String,
    pub value: String,
    pub origin: Origin,
    /// A file's line of a key that the environment sets: checked, but the
    /// environment's value replaces it.
    pub replaced: bool,
}

/// A file that cannot be used: every error found, in line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub errors: Vec<Diag>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// A successfully parsed file and what was odd about it.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<Diag>,
}

/// The main file, its drop-ins and the environment, merged into one
/// configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diag>,
    /// The files read, in the order they were applied.
    pub files: Vec<PathBuf>,
    /// The configuration variables read, in the order they were applied.
    pub env: Vec<String>,
    /// Every key line of the files, then of the environment, in order
    /// (`--check-config` shows where each value comes from).
    pub assignments: Vec<Assignment>,
}

/// Why the configuration files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading configuration file {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("reading configuration directory {}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    /// Every error of every file, each with its file and line.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// The drop-in directory of `main` when `--config-dir` names none.
pub fn default_dropin_dir(main: &Path) -> PathBuf {
    main.parent()
        .unwrap_or_else(|| Path::new("."))
        .join("rpcapd.d")
}

/// The `*.ini` files of `dir`, in lexical order of their names; hidden
/// files (editors' backups) are skipped, a missing directory has none.
pub fn dropin_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LoadError::Dir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let dir_err = |source| LoadError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(dir_err)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".ini") || !path.is_file() {
            continue;
        }
        files.push(path);
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// What one line of a text says.
pub(super) enum Step {
    Warning(Diag),
    Error(Diag),
    Assign(Assignment),
}

/// The lines of an rpcapd.ini text, in order; `at(n)` names line `n`.
pub(super) fn lex(text: &str, at: &dyn Fn(usize) -> Origin) -> Vec<Step> {
    let mut steps = Vec::new();
    // A byte order mark (Windows editors) belongs to no key. Lines end
    // in LF or CRLF (`lines`), a stray CR is white space (`trim`).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (idx, raw) in text.lines().enumerate() {
        let origin = || at(idx + 1);
        let warn = |msg: String| Step::Warning(origin().diag(msg));
        // Only a line whose first visible character is `#` is a comment
        // line: `  # ActiveClient = …` stays one (ExtraHop's rpcapd
        // finds keys anywhere in a line and would read it).
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key_name, value)) = trimmed.split_once('=') else {
            // libpcap's rpcapd logs such a line and goes on; ExtraHop's
            // skips it, or crashes when it names a key.
            let first = trimmed
                .split(|c: char| c.is_whitespace() || c == '=')
                .next()
                .unwrap_or_default();
            steps.push(if key(first).is_some() {
                Step::Error(origin().diag(format!("`{trimmed}`: expected `Key = value`")))
            } else {
                warn(format!("`{trimmed}` ignored: not a `Key = value` line"))
            });
            continue;
        };
        let key_name = key_name.trim();
        let Some(k) = key(key_name) else {
            steps.push(warn(format!("unknown key `{key_name}` ignored")));
            continue;
        };
        let (value, comment) = split_comment(k, value);
        if comment.is_some() && k.name == "ActiveClient" {
            steps.push(warn(format!(
                "ActiveClient = {value}: trailing comment ignored (ExtraHop's rpcapd \
                 reads it as options and drops the line's preselection)"
            )));
        }
        if value.is_empty() && REFERENCE_KEYS.contains(&k.name) {
            // Both references log it and go on.
            steps.push(warn(format!("{key_name} has no value: line ignored")));
            continue;
        }
        steps.push(Step::Assign(Assignment {
            key: k,
            written: key_name.to_string(),
            value: value.to_string(),
            origin: origin(),
            replaced: false,
        }));
    }
    steps
}

/// Sources applied one after the other over the defaults.
#[derive(Default)]
struct Merge {
    config: Config,
    /// Where the replaced lines are applied: checked, never used.
    scratch: Config,
    warnings: Vec<Diag>,
    errors: Vec<Diag>,
    assignments: Vec<Assignment>,
}

impl Merge {
    /// Applies `steps`; a line of a key in `replaced` is only checked.
    fn run(&mut self, steps: Vec<Step>, replaced: &[&str]) {
        for step in steps {
            match step {
                Step::Warning(d) => self.warnings.push(d),
                Step::Error(d) => self.errors.push(d),
                Step::Assign(mut a) => {
                    a.replaced = replaced.contains(&a.key.name);
                    let target = if a.replaced {
                        &mut self.scratch
                    } else {
                        &mut self.config
                    };
                    match (a.key.set)(target, &a.value) {
                        Ok(w) => self
                            .warnings
                            .extend(w.into_iter().map(|m| a.origin.diag(m))),
                        Err(expected) => self.errors.push(
                            a.origin
                                .diag(format!("{} = {}: expected {expected}", a.written, a.value)),
                        ),
                    }
                    self.assignments.push(a);
                }
            }
        }
    }
}

impl Config {
    /// Reads `main`, then the `*.ini` files of `dropin_dir` (default:
    /// `rpcapd.d` beside `main`) in lexical order: a later file's scalar
    /// keys override, repeatable keys (`ActiveClient`, `TunnelClient`,
    /// `PassiveClient`, `User`) accumulate. Errors of every file are reported together.
    pub fn load(main: &Path, dropin_dir: Option<&Path>) -> Result<Loaded, LoadError> {
        Config::load_all(Some(main), dropin_dir, &Environment::default())
    }

    /// The files as [`Config::load`] reads them (none without `main`),
    /// then the `XRPCAPD_*` variables of `env` ([`super::env`]): a key the
    /// environment sets takes the environment's value (its lines in the
    /// files are checked, then replaced, for repeatable keys too). Errors
    /// of every file and variable are reported together.
    pub fn load_all(
        main: Option<&Path>,
        dropin_dir: Option<&Path>,
        env: &Environment,
    ) -> Result<Loaded, LoadError> {
        let mut files = Vec::new();
        if let Some(main) = main {
            let dir = dropin_dir.map_or_else(|| default_dropin_dir(main), Path::to_path_buf);
            files.push(main.to_path_buf());
            files.extend(dropin_files(&dir)?);
        }
        let env_steps = env.steps();
        let replaced: Vec<&str> = env_steps
            .iter()
            .filter_map(|s| match s {
                Step::Assign(a) => Some(a.key.name),
                _ => None,
            })
            .collect();
        let mut m = Merge::default();
        for path in &files {
            let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })?;
            let name = path.display().to_string();
            m.run(
                lex(&text, &|line| Origin::File {
                    path: name.clone(),
                    line,
                }),
                &replaced,
            );
        }
        m.run(env_steps, &[]);
        if m.errors.is_empty() {
            Ok(Loaded {
                config: m.config,
                warnings: m.warnings,
                files,
                env: env.names(),
                assignments: m.assignments,
            })
        } else {
            Err(ConfigError { errors: m.errors }.into())
        }
    }

    /// Parses the text of an rpcapd.ini; `file` names it in diagnostics.
    pub fn parse(text: &str, file: &str) -> Result<Parsed, ConfigError> {
        let mut m = Merge::default();
        m.run(
            lex(text, &|line| Origin::File {
                path: file.to_string(),
                line,
            }),
            &[],
        );
        if m.errors.is_empty() {
            Ok(Parsed {
                config: m.config,
                warnings: m.warnings,
            })
        } else {
            Err(ConfigError { errors: m.errors })
        }
    }
}

/// The keys both reference daemons read: their values end at a `#`
/// anywhere (libpcap's rule; ExtraHop's rpcapd reads no comments), and an
/// empty value is ignored with a warning, as both do.
const REFERENCE_KEYS: [&str; 3] = ["ActiveClient", "PassiveClient", "NullAuthPermit"];

/// The value of a key line and its trailing comment. For the reference
/// keys a comment starts at any `#` (libpcap ends hosts, ports and
/// settings there); for xrpcapd's own keys at a `#` that starts the value
/// or follows white space, so that a path or a hash may hold a `#`.
fn split_comment<'a>(k: &Key, value: &'a str) -> (&'a str, Option<&'a str>) {
    let at = if REFERENCE_KEYS.contains(&k.name) {
        value.find('#')
    } else {
        value.char_indices().find_map(|(i, c)| {
            let after_space = value[..i]
                .chars()
                .next_back()
                .is_none_or(char::is_whitespace);
            (c == '#' && after_space).then_some(i)
        })
    };
    match at {
        Some(i) => (value[..i].trim(), Some(&value[i..])),
        None => (value.trim(), None),
    }
}

/// Bad values and what their error says (after the location): the ini's
/// test runs them as file lines, the environment's ([`super::env`]) as
/// variables, so that both say the same about the same value.
#[cfg(test)]
pub(super) const BAD_LINES: &[(&str, &str)] = &[
    (
        "UdpStrSize = 12",
        "rpcapd.ini:1: UdpStrSize = 12: expected 0 or 29..=65000",
    ),
    (
        "UdpStrSize = 65001",
        "UdpStrSize = 65001: expected 0 or 29..=65000",
    ),
    ("UdpStrSize = x", "UdpStrSize = x: expected 0 or 29..=65000"),
    (
        "ActiveClient = h, 0",
        "ActiveClient = h, 0: expected a port 1..=65535 or DEFAULT",
    ),
    ("ActiveClient = h, 70000", "expected a port 1..=65535"),
    (
        "ActiveClient = h, 1, ifaddr=300.1.1.1",
        "expected ifaddr=ADDR",
    ),
    (
        "ActiveClient = h, 1, ifaddr=10.0.0.0/33",
        "expected ifaddr=ADDR",
    ),
    (
        "ActiveClient = h, ifname = ",
        "ActiveClient = h, ifname =: expected ifname=NAME",
    ),
    (
        "ActiveClient = h, 1, ifaddr= 10.0.0.0/33",
        "expected ifaddr=ADDR",
    ),
    (
        "ActiveClient = h, 2003x # port",
        "ActiveClient = h, 2003x: expected a port 1..=65535",
    ),
    (
        "ActiveClient = ifname=eth0",
        "ActiveClient = ifname=eth0: expected `host, port",
    ),
    ("ActiveClient = h, 1, ifname=", "expected ifname=NAME"),
    ("ActiveClient = h, 1, failover=", "expected failover=NAME"),
    (
        "ActiveClient = h, 1, failover=a/b",
        "expected failover=NAME",
    ),
    (
        "ActiveClient = h, 1, capture=xdp",
        "capture=xdp: expected capture=afpacket or capture=afxdp",
    ),
    (
        "Capture = afxdp:",
        "Capture = afxdp:: expected afpacket, afxdp, afxdp:IFNAME",
    ),
    ("Capture = file:", "expected afpacket, afxdp"),
    ("Capture = xdp", "expected afpacket, afxdp"),
    (
        "XdpMode = fast",
        "XdpMode = fast: expected auto, native or generic",
    ),
    (
        "XdpReplace = maybe",
        "XdpReplace = maybe: expected YES or NO",
    ),
    (
        "XdpBusyPoll = fast",
        "XdpBusyPoll = fast: expected off, on or on:BUDGET (BUDGET 1..=1024)",
    ),
    (
        "XdpBusyPoll = on:0",
        "XdpBusyPoll = on:0: expected off, on or on:BUDGET",
    ),
    ("XdpBusyPoll = on:5000", "expected off, on or on:BUDGET"),
    ("XdpBusyPoll = on:", "expected off, on or on:BUDGET"),
    ("XdpBusyPoll =", "XdpBusyPoll = : expected off, on"),
    (
        "SendBuffer = lots",
        "SendBuffer = lots: expected a byte count >= 4096",
    ),
    ("SendBuffer = 10", "expected a byte count >= 4096"),
    ("RingSize = 99999999999G", "expected a byte count"),
    (
        "WorkerCpu = a",
        "WorkerCpu = a: expected a list of CPU numbers",
    ),
    ("WorkerCpu = 3-1", "expected a list of CPU numbers"),
    (
        "LogLevel = loud",
        "LogLevel = loud: expected off, error, warn",
    ),
    (
        "KeepaliveSecs = -1",
        "KeepaliveSecs = -1: expected a number 0..=86400",
    ),
    (
        "MaxBackoffSecs = 0",
        "MaxBackoffSecs = 0: expected a number 1..=86400",
    ),
    ("UserName =", "UserName = : expected a user name"),
    (
        "NullAuthPermit YES",
        "`NullAuthPermit YES`: expected `Key = value`",
    ),
    (
        "UdpStrSize = 12 # too small",
        "UdpStrSize = 12: expected 0 or 29",
    ),
    (
        "ActiveClient 10.0.0.1",
        "rpcapd.ini:1: `ActiveClient 10.0.0.1`: expected `Key = value`",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::model::*;

    fn parse(text: &str) -> Parsed {
        Config::parse(text, "rpcapd.ini").unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        Config::parse(text, "rpcapd.ini").unwrap_err().to_string()
    }

    #[test]
    fn defaults_without_keys() {
        let p = parse("# nothing\n\n   \n");
        assert_eq!(p.config, Config::default());
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn active_client_separators_and_default_port() {
        let p = parse(
            "ActiveClient = 10.0.0.1, 2003\n\
             ActiveClient=sensor.example;DEFAULT\n\
             ActiveClient = 10.0.0.2 4000\n\
             ActiveClient = 10.0.0.3,;  5000\n\
             ActiveClient = 10.0.0.4\n",
        );
        let got: Vec<(String, u16)> = p
            .config
            .active_clients
            .iter()
            .map(|c| (c.host.clone(), c.port))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.0.0.1".into(), 2003),
                ("sensor.example".into(), 2003),
                ("10.0.0.2".into(), 4000),
                ("10.0.0.3".into(), 5000),
                ("10.0.0.4".into(), 2003),
            ]
        );
    }

    #[test]
    fn active_client_preselection_ipv4_ipv6_prefix() {
        let p = parse(
            "ActiveClient = 10.0.0.1, DEFAULT, ifname=eth1\n\
             ActiveClient = 10.0.0.1, 2003, ifaddr=192.168.1.0/24\n\
             ActiveClient = fd00::1, 2003, ifaddr=fd00:1::/64\n\
             ActiveClient = [::1], 2003; ifaddr=2001:db8::5, ifname=eth2\n\
             ActiveClient = 10.0.0.1 2003 ifaddr=10.1.2.3\n",
        );
        let c = &p.config.active_clients;
        assert_eq!(c[0].preselect.ifname.as_deref(), Some("eth1"));
        assert_eq!(c[0].preselect.ifaddr, None);
        assert_eq!(
            c[1].preselect.ifaddr,
            Some("192.168.1.0/24".parse().unwrap())
        );
        assert_eq!(c[2].host, "fd00::1");
        assert_eq!(c[2].preselect.ifaddr, Some("fd00:1::/64".parse().unwrap()));
        assert_eq!(c[3].host, "::1");
        assert_eq!(
            c[3].preselect.ifaddr,
            Some("2001:db8::5/128".parse().unwrap())
        );
        assert_eq!(c[3].preselect.ifname.as_deref(), Some("eth2"));
        assert_eq!(c[4].preselect.ifaddr, Some("10.1.2.3/32".parse().unwrap()));
    }

    #[test]
    fn active_client_capture_option() {
        let p = parse(
            "Capture = afpacket\n\
             ActiveClient = 10.0.0.1, 2003, ifname=span0, capture=afxdp\n\
             ActiveClient = 10.0.0.2, DEFAULT; capture=AFPACKET\n\
             ActiveClient = 10.0.0.3, capture=afxdp\n\
             ActiveClient = 10.0.0.4, 2003\n",
        );
        let c = &p.config.active_clients;
        assert_eq!(c[0].capture, Some(CaptureChoice::AfXdp));
        assert_eq!(c[0].preselect.ifname.as_deref(), Some("span0"));
        assert_eq!(c[1].capture, Some(CaptureChoice::AfPacket));
        assert_eq!(
            (c[2].port, c[2].capture),
            (2003, Some(CaptureChoice::AfXdp))
        );
        assert_eq!(c[3].capture, None);
        // The global key is untouched by a line's choice.
        assert_eq!(p.config.capture.backend, Backend::AfPacket);
        // Printed back as it was written (config dump, reload comparison).
        assert_eq!(
            c[0].to_string(),
            "10.0.0.1, 2003, ifname=span0, capture=afxdp"
        );
        assert_eq!(parse_active_client(&c[0].to_string()).unwrap(), c[0]);
    }

    #[test]
    fn active_client_decap_option() {
        let p = parse(
            "ActiveClient = 10.0.0.1, 2003, ifname=ens5, decap=vxlan:100\n\
             ActiveClient = 10.0.0.2, decap = GENEVE@10.1.0.0/16\n\
             ActiveClient = 10.0.0.3, 2003\n",
        );
        let c = &p.config.active_clients;
        assert_eq!(c[0].decap.as_ref().unwrap().to_string(), "vxlan:100");
        assert_eq!(
            c[1].decap.as_ref().unwrap().to_string(),
            "geneve@10.1.0.0/16"
        );
        assert_eq!(c[2].decap, None);
        assert_eq!(
            c[0].to_string(),
            "10.0.0.1, 2003, ifname=ens5, decap=vxlan:100"
        );
        assert_eq!(parse_active_client(&c[1].to_string()).unwrap(), c[1]);
        let e = parse_active_client("h, 1, decap=vxlan:x").unwrap_err();
        assert!(
            e.contains("decap=vxlan:x") && e.contains("expected vxlan[:VNI]"),
            "{e}"
        );
    }

    #[test]
    fn active_client_failover_option_and_failback_secs() {
        let p = parse(
            "ActiveClient = a.example, 2003, ifname=eth1, failover=dc-1\n\
             ActiveClient = b.example, 2004; FAILOVER=dc-1\n\
             ActiveClient = c.example, 2003\n\
             FailbackSecs = 5\n",
        );
        let c = &p.config.active_clients;
        assert_eq!(c[0].failover.as_deref(), Some("dc-1"));
        assert_eq!(c[0].preselect.ifname.as_deref(), Some("eth1"));
        assert_eq!(c[1].failover.as_deref(), Some("dc-1"));
        assert_eq!(c[2].failover, None);
        assert_eq!(p.config.failback_secs, 5);
        assert_eq!(Config::default().failback_secs, 30);
        assert_eq!(
            c[0].to_string(),
            "a.example, 2003, ifname=eth1, failover=dc-1"
        );
        assert_eq!(parse_active_client(&c[0].to_string()).unwrap(), c[0]);
    }

    #[test]
    fn more_than_ten_active_clients() {
        let text: String = (0..25)
            .map(|i| format!("ActiveClient = 10.0.0.{i}, 2003\n"))
            .collect();
        assert_eq!(parse(&text).config.active_clients.len(), 25);
    }

    #[test]
    fn reference_keys() {
        let p = parse(
            "# comment\n  # indented comment\nNullAuthPermit = YES\n\
             PassiveClient = a.example\nPassiveClient = 10.9.9.9\nUserName = rpcapd\n",
        );
        assert!(p.config.null_auth);
        assert_eq!(p.config.passive.clients, vec!["a.example", "10.9.9.9"]);
        assert_eq!(p.config.user_name.as_deref(), Some("rpcapd"));
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn null_auth_only_exact_yes() {
        assert!(!parse("NullAuthPermit = NO\n").config.null_auth);
        assert!(!parse("NullAuthPermit = 1\n").config.null_auth);
        let p = parse("NullAuthPermit = yes\n");
        assert!(!p.config.null_auth);
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].to_string().starts_with("rpcapd.ini:1: "));
    }

    #[test]
    fn own_keys() {
        let p = parse(
            "Capture = file:/tmp/x.pcap\nUdpStrSize = 0\nSendBuffer = 4M\nRingSize = 65536\n\
             LocalFilter = not port 22\nWorkerCpu = 0,2-3\nLogLevel = debug\n\
             KeepaliveSecs = 0\nMaxBackoffSecs = 5\nLivenessSecs = 12\nActiveCloseStops = yes\n",
        );
        let c = p.config;
        assert_eq!(c.capture.backend, Backend::File("/tmp/x.pcap".into()));
        assert_eq!(c.udpstr_size, 0);
        assert_eq!(c.capture.send_buffer, 4 << 20);
        assert_eq!(c.capture.ring_size, 65536);
        assert_eq!(c.local_filter.as_deref(), Some("not port 22"));
        assert_eq!(c.capture.worker_cpus, vec![0, 2, 3]);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(c.keepalive_secs, 0);
        assert_eq!(c.max_backoff_secs, 5);
        assert_eq!(c.liveness_secs, 12);
        assert!(c.active_close_stops);
        let d = parse("").config;
        assert_eq!((d.liveness_secs, d.active_close_stops), (30, false));
        assert_eq!(
            parse("Capture = afpacket\nUdpStrSize = 29")
                .config
                .udpstr_size,
            29
        );
        assert_eq!(parse("UdpStrSize = 65000").config.udpstr_size, 65000);
        assert_eq!(parse("SendBuffer = 1g").config.capture.send_buffer, 1 << 30);
        assert_eq!(
            parse("SendBuffer = 64k").config.capture.send_buffer,
            64 << 10
        );
    }

    #[test]
    fn unknown_key_warns_with_file_and_line() {
        let p = parse("NullAuthPermit = YES\n\nFooBar = 1\n");
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(
            p.warnings[0].to_string(),
            "rpcapd.ini:3: unknown key `FooBar` ignored"
        );
    }

    #[test]
    fn every_error_names_file_line_value_and_expectation() {
        for &(text, want) in BAD_LINES {
            let got = error(&format!("# first\n{text}\n"));
            let want = want.replace("rpcapd.ini:1:", "rpcapd.ini:2:");
            assert!(got.starts_with("rpcapd.ini:2: "), "{text}: {got}");
            assert!(got.contains(&want), "{text}: got `{got}`, want `{want}`");
        }
    }

    #[test]
    fn all_errors_reported_and_nothing_half_applied() {
        let e = Config::parse(
            "UdpStrSize = 1\nActiveClient = a, 1\nRingSize = x\n",
            "f.ini",
        )
        .unwrap_err();
        assert_eq!(e.errors.len(), 2);
        assert_eq!(e.errors[0].line, 1);
        assert_eq!(e.errors[1].line, 3);
    }

    #[test]
    fn active_list_flag() {
        let l = parse_active_list("10.0.0.1,2003,sensor,DEFAULT").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!((l[1].host.as_str(), l[1].port), ("sensor", 2003));
        assert!(parse_active_list("10.0.0.1").is_err());
        assert!(parse_active_list("10.0.0.1,x").is_err());
    }

    #[test]
    fn example_file_parses_cleanly_and_documents_every_key() {
        let text = include_str!("../../../docs/rpcapd.ini.example");
        let p = parse(text);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // Every commented-out example line is valid too.
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = ") && !l.starts_with(' '))
            .map(|l| format!("{l}\n"))
            .collect();
        let all = parse(&uncommented);
        assert!(all.warnings.is_empty(), "{:?}", all.warnings);
        for key in [
            "Passive",
            "ActiveClient",
            "TunnelClient",
            "PassiveClient",
            "NullAuthPermit",
            "UserName",
            "Capture",
            "UdpStrSize",
            "SendBuffer",
            "RingSize",
            "LocalFilter",
            "WorkerCpu",
            "LogLevel",
            "KeepaliveSecs",
            "MaxBackoffSecs",
            "FailbackSecs",
            "LivenessSecs",
            "ActiveCloseStops",
            "SummaryInterval",
            "MaxClients",
            "MaxClientsPerHost",
            "AuthTimeoutSecs",
            "IdleTimeoutSecs",
            "DataAcceptTimeoutSecs",
            "PassiveUdpStr",
            "User",
            "SystemAccounts",
            "ShadowFile",
            "TlsCert",
            "TlsKey",
            "TlsClientCa",
            "TlsMode",
            "XdpMode",
            "XdpReplace",
            "XdpDropRejected",
            "XdpBusyPoll",
            "MetricsListen",
            "StatusSocket",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches('#').starts_with(&format!("{key} = "))),
                "{key} has no example line"
            );
        }
        assert_eq!(all.config.active_clients.len(), 7);
        assert_eq!(
            all.config.active_clients[1].capture,
            Some(CaptureChoice::AfXdp)
        );
        assert_eq!(
            all.config.active_clients[4].decap,
            Some("vxlan:4242".parse().unwrap())
        );
        let groups: Vec<_> = all.config.active_clients[5..]
            .iter()
            .map(|c| c.failover.as_deref())
            .collect();
        assert_eq!(groups, [Some("dc1"), Some("dc1")]);
    }

    #[test]
    fn status_socket_takes_a_path_or_none() {
        let c = parse("StatusSocket = /tmp/x/status.sock\n").config;
        assert_eq!(
            c.status_socket,
            StatusSocket::Path("/tmp/x/status.sock".into())
        );
        assert!(c
            .to_string()
            .contains("StatusSocket = /tmp/x/status.sock\n"));
        let c = parse("StatusSocket = None\n").config;
        assert_eq!(c.status_socket, StatusSocket::Off);
        assert!(c.to_string().contains("StatusSocket = none\n"));
        let c = parse("").config;
        assert_eq!(c.status_socket, StatusSocket::Default);
        assert!(!c.to_string().contains("StatusSocket"));
        assert!(Config::parse("StatusSocket = \n", "t.ini").is_err());
    }

    #[test]
    fn metrics_listen_takes_an_address_and_a_port() {
        let c = parse("MetricsListen = 127.0.0.1:9917\n").config;
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9917".parse().unwrap()));
        assert!(c.to_string().contains("MetricsListen = 127.0.0.1:9917\n"));
        let c = parse("MetricsListen = [::1]:9917\n").config;
        assert_eq!(c.metrics_listen, Some("[::1]:9917".parse().unwrap()));
        assert!(c.to_string().contains("MetricsListen = [::1]:9917\n"));
        assert_eq!(parse("").config.metrics_listen, None);
        for bad in [
            "9917",
            "localhost:9917",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "",
        ] {
            let e = Config::parse(&format!("MetricsListen = {bad}\n"), "t.ini").unwrap_err();
            assert!(e.to_string().contains("ADDR:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn packaged_file_is_minimal_and_safe() {
        let p = parse(include_str!("../../../packaging/rpcapd.ini"));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let c = p.config;
        assert!(c.active_only, "the packaged file turns passive mode off");
        assert!(!c.null_auth && c.active_clients.is_empty() && c.user_name.is_none());
        assert!(c.no_sensor());
        assert_eq!(c.null_auth_warning(), None);
        // Everything else is the default.
        assert_eq!(
            c,
            Config {
                active_only: true,
                ..Config::default()
            }
        );
    }

    #[test]
    fn afxdp_is_explicit_and_takes_its_keys_in_any_order() {
        assert_eq!(Config::default().capture.backend, Backend::AfPacket);
        let c = parse("XdpMode = generic\nXdpReplace = yes\nCapture = afxdp\n").config;
        assert_eq!(c.capture.backend, Backend::AfXdp);
        let x = &c.capture.xdp;
        assert_eq!(
            (x.mode, x.replace, x.drop_rejected),
            (XdpMode::Generic, true, false)
        );
        assert!(x.covers("anything"));
        let c =
            parse("Capture = afxdp:span0, tap1\nXdpMode = native\nXdpDropRejected = yes\n").config;
        assert_eq!(c.capture.backend, Backend::AfXdp);
        let x = &c.capture.xdp;
        assert_eq!(x.interfaces, vec!["span0", "tap1"]);
        assert_eq!((x.mode, x.drop_rejected), (XdpMode::Native, true));
        assert!(x.covers("tap1") && !x.covers("eth0"));
        assert_eq!(x.busy_poll, BusyPoll::Off, "busy polling is off by default");
        let again = parse(&c.to_string()).config;
        assert_eq!(again, c);
    }

    #[test]
    fn xdp_busy_poll_takes_on_off_and_a_budget_in_any_key_order() {
        for (text, want) in [
            (
                "XdpBusyPoll = on\nCapture = afxdp\n",
                BusyPoll::On { budget: 64 },
            ),
            (
                "Capture = afxdp\nXdpBusyPoll = ON:16\n",
                BusyPoll::On { budget: 16 },
            ),
            (
                "Capture = afxdp\nXdpBusyPoll = on:1024\n",
                BusyPoll::On { budget: 1024 },
            ),
            ("XdpBusyPoll = off\nCapture = afxdp:span0\n", BusyPoll::Off),
        ] {
            let c = parse(text).config;
            assert_eq!(c.capture.backend, Backend::AfXdp, "{text}");
            assert_eq!(c.capture.xdp.busy_poll, want, "{text}");
            // --check-config prints the effective value, and it reads back.
            let shown = c.to_string();
            assert!(
                shown.contains(&format!("XdpBusyPoll = {want}\n")),
                "{shown}"
            );
            assert_eq!(parse(&shown).config, c);
        }
        assert!(Config::default()
            .to_string()
            .contains("XdpBusyPoll = off\n"));
        // The error names the file and line, like every other key.
        let e = Config::parse("Capture = afxdp\n\nXdpBusyPoll = on:0\n", "x.ini").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.ini:3: XdpBusyPoll = on:0: expected off, on or on:BUDGET (BUDGET 1..=1024)"
        );
    }

    #[test]
    fn byte_order_mark_keeps_line_one() {
        let p = parse("\u{feff}ActiveClient = 10.0.0.1, 2003\nNullAuthPermit = YES\n");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.config.active_clients.len(), 1);
        // Line numbers still count the first line as 1.
        let e = error("\u{feff}UdpStrSize = 1\n");
        assert!(e.starts_with("rpcapd.ini:1: UdpStrSize = 1:"), "{e}");
    }

    #[test]
    fn passive_key_sets_active_only_and_round_trips() {
        assert!(!Config::default().active_only);
        assert!(parse("Passive = no\n").config.active_only);
        assert!(parse("Passive = NO\n").config.active_only);
        assert!(!parse("Passive = no\nPassive = yes\n").config.active_only);
        assert!(error("Passive = off\n").contains("Passive = off: expected YES or NO"));
        let c = parse("Passive = no\n").config;
        let shown = c.to_string();
        assert!(shown.starts_with("Passive = no\n"), "{shown}");
        assert_eq!(parse(&shown).config, c);
        assert!(Config::default().to_string().starts_with("Passive = yes\n"));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    const H: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$P4KtnBwHFLD2nM46CoNeIv6TEP3h20mD0ZLSLu3KmM8";

    #[test]
    fn dropins_follow_the_main_file_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "rpcapd.ini",
            &format!("Passive = no\nUdpStrSize = 0\nActiveClient = 10.0.0.1, 2003\nUser = a {H}\n"),
        );
        let d = dir.path().join("rpcapd.d");
        // Written out of order: applied 10- then 50- then 90-.
        let f90 = write(&d, "90-last.ini", "UdpStrSize = 1000\nPassive = yes\n");
        let f10 = write(
            &d,
            "10-first.ini",
            "UdpStrSize = 500\nActiveClient = 10.0.0.2, 2003\nPassiveClient = h1\n",
        );
        let f50 = write(
            &d,
            "50-sensor.ini",
            &format!(
                "\u{feff}ActiveClient = 10.0.0.3, DEFAULT\nUser = b {H}\nPassiveClient = h2\n"
            ),
        );
        // Not drop-ins: another suffix, a hidden file, a directory.
        write(&d, "60-x.ini.dpkg-old", "UdpStrSize = 7\n");
        write(&d, ".70-swap.ini", "UdpStrSize = 7\n");
        std::fs::create_dir_all(d.join("80-dir.ini")).unwrap();
        let l = Config::load(&main, None).unwrap();
        assert_eq!(l.files, vec![main.clone(), f10, f50, f90]);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let c = l.config;
        // Scalars: the last file wins.
        assert_eq!(c.udpstr_size, 1000);
        assert!(!c.active_only);
        // Repeatable keys accumulate, in file order.
        let hosts: Vec<_> = c.active_clients.iter().map(|a| a.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(c.passive.clients, ["h1", "h2"]);
        let users: Vec<_> = c.auth.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(users, ["a", "b"]);
    }

    #[test]
    fn config_dir_replaces_the_default_and_a_missing_one_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "rpcapd.ini", "UdpStrSize = 0\n");
        write(dir.path(), "rpcapd.d/a.ini", "UdpStrSize = 100\n");
        let other = dir.path().join("other");
        write(&other, "b.ini", "UdpStrSize = 200\n");
        assert_eq!(Config::load(&main, None).unwrap().config.udpstr_size, 100);
        let l = Config::load(&main, Some(&other)).unwrap();
        assert_eq!(l.config.udpstr_size, 200);
        assert_eq!(l.files.len(), 2);
        let l = Config::load(&main, Some(&dir.path().join("nowhere"))).unwrap();
        assert_eq!((l.config.udpstr_size, l.files.len()), (0, 1));
    }

    #[test]
    fn diagnostics_name_the_dropin_and_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "rpcapd.ini", "UdpStrSize = 1\nBogus = 1\n");
        let f = write(
            dir.path(),
            "rpcapd.d/50-sensor.ini",
            "# x\nNope = 2\nActiveClient = h, 0\n",
        );
        let e = match Config::load(&main, None) {
            Err(LoadError::Invalid(e)) => e,
            other => panic!("{other:?}"),
        };
        let (m, f) = (main.display().to_string(), f.display().to_string());
        let got: Vec<String> = e.errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with(&format!("{m}:1: UdpStrSize = 1")),
            "{got:?}"
        );
        assert!(
            got[1].starts_with(&format!("{f}:3: ActiveClient = h, 0")),
            "{got:?}"
        );
        // Warnings too.
        std::fs::write(&main, "Bogus = 1\n").unwrap();
        std::fs::write(&f, "# x\nNope = 2\n").unwrap();
        let w: Vec<String> = Config::load(&main, None)
            .unwrap()
            .warnings
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            w,
            [
                format!("{m}:1: unknown key `Bogus` ignored"),
                format!("{f}:2: unknown key `Nope` ignored")
            ]
        );
        // A file that cannot be read names itself.
        let e = Config::load(&dir.path().join("missing.ini"), None).unwrap_err();
        assert!(matches!(e, LoadError::Read { .. }));
        assert!(e.to_string().contains("missing.ini"), "{e}");
    }

    /// The warnings of `text`, as `line: message`.
    fn warned(text: &str) -> (Config, Vec<String>) {
        let p = parse(text);
        let w = p
            .warnings
            .iter()
            .map(|d| {
                assert_eq!(d.file, "rpcapd.ini");
                format!("{}: {}", d.line, d.msg)
            })
            .collect();
        (p.config, w)
    }

    #[test]
    fn active_client_option_spacing_reads_the_trimmed_option_and_warns() {
        for (text, written) in [
            (
                "ActiveClient = 10.0.0.1, 2003, ifname= eth0",
                "ifname= eth0",
            ),
            (
                "ActiveClient = 10.0.0.1, 2003, ifname =eth0",
                "ifname =eth0",
            ),
            (
                "ActiveClient = 10.0.0.1, 2003, ifname = eth0",
                "ifname = eth0",
            ),
            ("ActiveClient=10.0.0.1,2003,ifname=\teth0", "ifname= eth0"),
            (
                "ActiveClient = 10.0.0.1, 2003, IFNAME= eth0",
                "IFNAME= eth0",
            ),
        ] {
            let (c, w) = warned(&format!("# x\n{text}\n"));
            let a = &c.active_clients[0];
            assert_eq!((a.host.as_str(), a.port), ("10.0.0.1", 2003), "{text}");
            assert_eq!(a.preselect.ifname.as_deref(), Some("eth0"), "{text}");
            assert_eq!(w.len(), 1, "{text}: {w:?}");
            assert!(
                w[0].starts_with(&format!("2: `{written}` read as `ifname=eth0` (ExtraHop")),
                "{text}: {w:?}"
            );
        }
        // Every option, with or without a port.
        let (c, w) = warned(
            "ActiveClient = h, ifaddr = 10.1.0.0/16 capture= afxdp\n\
             ActiveClient = h 4000 ifaddr =fd00::1 ifname=eth2\n",
        );
        let (a, b) = (&c.active_clients[0], &c.active_clients[1]);
        assert_eq!(a.port, 2003);
        assert_eq!(a.preselect.ifaddr, Some("10.1.0.0/16".parse().unwrap()));
        assert_eq!(a.capture, Some(CaptureChoice::AfXdp));
        assert_eq!(b.port, 4000);
        assert_eq!(b.preselect.ifaddr, Some("fd00::1/128".parse().unwrap()));
        assert_eq!(b.preselect.ifname.as_deref(), Some("eth2"));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("1: `ifaddr = 10.1.0.0/16` read as"),
            "{w:?}"
        );
        assert!(w[1].starts_with("1: `capture= afxdp` read as"), "{w:?}");
        assert!(w[2].starts_with("2: `ifaddr =fd00::1` read as"), "{w:?}");
        // Written without spaces: no warning.
        assert!(warned("ActiveClient = h, 2003, ifname=eth0\n").1.is_empty());
    }

    #[test]
    fn active_client_words_that_are_no_option_are_ignored_with_a_warning() {
        let (c, w) = warned("\nActiveClient = h, 2003, ifname=eth0, bogus, foo = bar\n");
        let a = &c.active_clients[0];
        assert_eq!(a.preselect.ifname.as_deref(), Some("eth0"));
        assert_eq!(
            w,
            [
                "2: `bogus` ignored: not an ActiveClient option (ifname=, ifaddr=, capture=, decap=, failover=)",
                "2: `foo` ignored: not an ActiveClient option (ifname=, ifaddr=, capture=, decap=, failover=)",
                "2: `=` ignored: not an ActiveClient option (ifname=, ifaddr=, capture=, decap=, failover=)",
                "2: `bar` ignored: not an ActiveClient option (ifname=, ifaddr=, capture=, decap=, failover=)",
            ]
        );
    }

    #[test]
    fn trailing_comments_end_reference_values() {
        let (c, w) = warned(
            "ActiveClient = 10.0.0.1, 2003 # the lab sensor\n\
             ActiveClient = 10.0.0.2, DEFAULT, ifname=eth1#span\n\
             ActiveClient = 10.0.0.3 # no port\n\
             PassiveClient = 10.0.0.9 # the lab sensor\n\
             NullAuthPermit = YES # lab only\n",
        );
        let got: Vec<_> = c
            .active_clients
            .iter()
            .map(|a| (a.host.as_str(), a.port, a.preselect.ifname.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1", 2003, None),
                ("10.0.0.2", 2003, Some("eth1")),
                ("10.0.0.3", 2003, None)
            ]
        );
        assert_eq!(c.passive.clients, ["10.0.0.9"]);
        assert!(c.null_auth, "YES before the comment permits");
        // ExtraHop's rpcapd reads an ActiveClient comment as options: warned.
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("1: ActiveClient = 10.0.0.1, 2003: trailing comment ignored"),
            "{w:?}"
        );
        assert!(w[1].starts_with("2: ActiveClient = 10.0.0.2, DEFAULT, ifname=eth1: trailing"));
        assert!(w[2].starts_with("3: "));
        // xrpcapd's own keys: a `#` after white space starts a comment, one
        // inside a word (a path) does not.
        let (c, w) = warned(
            "UdpStrSize = 0 # plain\nLocalFilter = not port 22 # ssh\n\
             ShadowFile = /etc/x#1/shadow\nLogLevel = debug\t# more\n",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.udpstr_size, 0);
        assert_eq!(c.local_filter.as_deref(), Some("not port 22"));
        assert_eq!(c.auth.shadow_file, Some("/etc/x#1/shadow".into()));
        assert_eq!(c.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn crlf_tabs_and_default_port() {
        let (c, w) = warned(
            "# Windows\r\nActiveClient = 10.0.0.1, DEFAULT\r\n\r\n\
             \tActiveClient\t=\t10.0.0.2\t4000\tifname=eth0\r\n\
             ActiveClient = 10.0.0.3;default\r\n\
             PassiveClient = 10.0.0.9\r\nNullAuthPermit = YES\r\nUdpStrSize = 0\r\n",
        );
        assert!(w.is_empty(), "{w:?}");
        let got: Vec<_> = c
            .active_clients
            .iter()
            .map(|a| (a.host.as_str(), a.port, a.preselect.ifname.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1", 2003, None),
                ("10.0.0.2", 4000, Some("eth0")),
                ("10.0.0.3", 2003, None)
            ]
        );
        assert_eq!(c.passive.clients, ["10.0.0.9"]);
        assert!(c.null_auth && c.udpstr_size == 0);
        // Line numbers count CRLF lines once.
        let e = Config::parse("# a\r\n\r\nUdpStrSize = 1\r\n", "w.ini").unwrap_err();
        assert_eq!(e.errors[0].line, 3);
    }

    #[test]
    fn active_client_port_may_be_a_service_name() {
        let etc = std::fs::read_to_string("/etc/services").unwrap_or_default();
        if !etc
            .lines()
            .any(|l| l.starts_with("ssh") && l.contains("22/tcp"))
        {
            eprintln!("skipped: /etc/services names no ssh");
            return;
        }
        let (c, w) = warned("ActiveClient = 10.0.0.1, ssh\n");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.active_clients[0].port, 22);
        assert!(error("ActiveClient = 10.0.0.1, no-such-svc\n")
            .contains("expected a port 1..=65535 or DEFAULT (or a TCP service name"));
    }

    #[test]
    fn indented_comment_stays_a_comment_and_keys_match_whole_names() {
        let (c, w) = warned(
            "  # ActiveClient = 10.0.0.1, 2003\n\t# NullAuthPermit = YES\n\
             MyActiveClient = 10.0.0.2, 2003\nX = ActiveClient = 10.0.0.3\n",
        );
        assert!(c.active_clients.is_empty() && !c.null_auth);
        assert_eq!(
            w,
            [
                "3: unknown key `MyActiveClient` ignored",
                "4: unknown key `X` ignored"
            ]
        );
    }

    #[test]
    fn passive_client_lists_and_empty_reference_values() {
        let (c, w) = warned("PassiveClient = h1, h2;h3 [fd00::1]\nPassiveClient = h4\n");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.passive.clients, ["h1", "h2", "h3", "fd00::1", "h4"]);
        // Both references log an empty value and go on.
        let (c, w) = warned(
            "ActiveClient =\nPassiveClient = # none\nNullAuthPermit = YES\nNullAuthPermit =\n",
        );
        assert!(c.active_clients.is_empty() && c.passive.clients.is_empty());
        assert!(c.null_auth, "an empty NullAuthPermit changes nothing");
        assert_eq!(
            w,
            [
                "1: ActiveClient has no value: line ignored",
                "2: PassiveClient has no value: line ignored",
                "4: NullAuthPermit has no value: line ignored",
            ]
        );
        // NullAuthPermit reads its first word, as libpcap's rpcapd.
        assert!(parse("NullAuthPermit = YES please\n").config.null_auth);
        assert!(!parse("NullAuthPermit = NO YES\n").config.null_auth);
    }

    #[test]
    fn lines_without_equals() {
        // Naming no key: ignored with a warning (both references go on).
        let (c, w) = warned("[rpcapd]\nNullAuthPermit = YES\n");
        assert!(c.null_auth);
        assert_eq!(w, ["1: `[rpcapd]` ignored: not a `Key = value` line"]);
        // Naming a key: an error (ExtraHop's rpcapd crashes on it).
        let e = error("\nPassiveClient h1\n");
        assert_eq!(
            e,
            "rpcapd.ini:2: `PassiveClient h1`: expected `Key = value`"
        );
    }

    #[test]
    fn byte_order_mark_in_every_file_and_only_at_the_start() {
        let (c, w) = warned("\u{feff}# comment\r\nActiveClient = 10.0.0.1\r\n");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.active_clients.len(), 1);
        // A BOM elsewhere is no white space: that line names an unknown key.
        let (_, w) = warned("UdpStrSize = 0\n\u{feff}Bogus = 1\n");
        assert_eq!(w, ["2: unknown key `\u{feff}Bogus` ignored"]);
    }

    #[test]
    fn display_round_trips() {
        let p = parse(
            "ActiveClient = 10.0.0.1, 2003, ifname=eth0, ifaddr=10.0.0.0/8\nNullAuthPermit = YES\n\
             UdpStrSize = 0\nWorkerCpu = 1,3\nLocalFilter = not port 22\nCapture = file:/x.pcap\n\
             MaxClients = 3\nMaxClientsPerHost = 2\nAuthTimeoutSecs = 5\nIdleTimeoutSecs = 7\nDataAcceptTimeoutSecs = 2\n\
             PassiveUdpStr = YES\nSystemAccounts = YES\nShadowFile = /tmp/shadow\n\
             TlsCert = /c.pem\nTlsKey = /k.pem\nTlsClientCa = /ca.pem\nTlsMode = optional\n",
        );
        let again = parse(&p.config.to_string());
        assert_eq!(again.config, p.config);
        assert!(again.warnings.is_empty());
    }
}
