//! rpcapd.ini: the configuration file of libpcap's and ExtraHop's rpcapd
//! (PROTOCOL.md §5), plus xrpcapd's own keys (see rpcapd.ini.example).
//!
//! The parser is hand-written: the `ini` crates lose line numbers (needed for
//! `file:line` diagnostics) and collapse repeated keys (`ActiveClient` and
//! `PassiveClient` repeat, one session per line).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::auth::{self, Authenticator};
use crate::datapath::{Backend, BusyPoll, XdpMode, XdpSpec};

/// Port of ActiveClient when the line says `DEFAULT` (or gives none).
pub const DEFAULT_ACTIVE_PORT: u16 = 2003;
/// Port passive mode listens on.
pub const DEFAULT_PASSIVE_PORT: u16 = 2002;
/// udpstr datagram payload for a 1500-byte MTU over IPv4.
pub const DEFAULT_UDPSTR_SIZE: usize = 1472;
/// Smallest udpstr datagram: header (8) + one record header (20) + 1 byte.
pub const MIN_UDPSTR_SIZE: usize = 29;
/// Largest udpstr datagram the reference allows.
pub const MAX_UDPSTR_SIZE: usize = 65000;
pub const DEFAULT_SEND_BUFFER: usize = 8 << 20;
pub const DEFAULT_RING_SIZE: usize = 32 << 20;
pub const DEFAULT_KEEPALIVE_SECS: u32 = 60;
pub const DEFAULT_MAX_BACKOFF_SECS: u32 = 30;
pub const DEFAULT_MAX_CLIENTS: usize = 16;
pub const DEFAULT_AUTH_TIMEOUT_SECS: u32 = 30;
/// As the reference's runtime timeout: a client with no capture that says
/// nothing for this long is dropped.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u32 = 180;
pub const DEFAULT_DATA_ACCEPT_TIMEOUT_SECS: u32 = 10;

/// Which interface an active session may open (ExtraHop's `ifname=`/`ifaddr=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Preselect {
    pub ifname: Option<String>,
    /// A bare address is stored as a host prefix (/32, /128).
    pub ifaddr: Option<IpNet>,
}

impl Preselect {
    pub fn is_set(&self) -> bool {
        self.ifname.is_some() || self.ifaddr.is_some()
    }
}

impl fmt::Display for Preselect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(n) = &self.ifname {
            write!(f, "ifname={n}")?;
            sep = ", ";
        }
        if let Some(a) = &self.ifaddr {
            write!(f, "{sep}ifaddr={a}")?;
        }
        Ok(())
    }
}

/// The capture source one `ActiveClient` line asks for (`capture=`),
/// overriding `Capture` for that sensor's captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaptureChoice {
    AfPacket,
    /// With the `Xdp*` keys' settings, whatever `Capture` says.
    AfXdp,
}

impl fmt::Display for CaptureChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CaptureChoice::AfPacket => "afpacket",
            CaptureChoice::AfXdp => "afxdp",
        })
    }
}

/// One `ActiveClient` line (or one `-a` pair): a sensor to dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActiveClient {
    pub host: String,
    pub port: u16,
    pub preselect: Preselect,
    /// `capture=afpacket|afxdp`; `None`: as `Capture` says.
    pub capture: Option<CaptureChoice>,
}

impl fmt::Display for ActiveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", self.host, self.port)?;
        if self.preselect.is_set() {
            write!(f, ", {}", self.preselect)?;
        }
        if let Some(c) = self.capture {
            write!(f, ", capture={c}")?;
        }
        Ok(())
    }
}

/// Passive mode settings (`-b`, `-p`, `-4`, `-l`, `PassiveClient`, and the
/// limits that keep clients from holding slots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passive {
    pub bind: Option<String>,
    pub port: u16,
    pub ipv4_only: bool,
    /// Hosts allowed to connect (names, addresses or prefixes); empty = any.
    pub clients: Vec<String>,
    /// Most passive clients served at once.
    pub max_clients: usize,
    /// A client must authenticate within this time.
    pub auth_timeout_secs: u32,
    /// A client with no capture running that sends nothing for this long is dropped.
    pub idle_timeout_secs: u32,
    /// How long a passive TCP data channel waits for the client to connect.
    pub data_accept_timeout_secs: u32,
    /// Serve udpstr to passive clients too (standard clients cannot read it).
    pub udpstr: bool,
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            bind: None,
            port: DEFAULT_PASSIVE_PORT,
            ipv4_only: false,
            clients: Vec::new(),
            max_clients: DEFAULT_MAX_CLIENTS,
            auth_timeout_secs: DEFAULT_AUTH_TIMEOUT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            data_accept_timeout_secs: DEFAULT_DATA_ACCEPT_TIMEOUT_SECS,
            udpstr: false,
        }
    }
}

/// When the control connection must be TLS (rpcaps://).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plaintext only (no certificate configured).
    #[default]
    Off,
    /// TLS or plaintext, as the client chooses (first byte 22 or 0).
    Optional,
    /// TLS only: a plaintext client gets TLS_REQUIRED.
    Required,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Off => "off",
            TlsMode::Optional => "optional",
            TlsMode::Required => "required",
        })
    }
}

/// TLS settings (`TlsCert`, `TlsKey`, `TlsClientCa`, `TlsMode`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
    /// None: `required` when a certificate is configured, else `off`.
    pub mode: Option<TlsMode>,
}

impl Tls {
    pub fn effective_mode(&self) -> TlsMode {
        self.mode.unwrap_or(if self.cert.is_some() {
            TlsMode::Required
        } else {
            TlsMode::Off
        })
    }
}

/// The effective configuration: file, then flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub active_clients: Vec<ActiveClient>,
    pub passive: Passive,
    /// `-v`: active mode only, never listen.
    pub active_only: bool,
    pub null_auth: bool,
    pub user_name: Option<String>,
    pub backend: Backend,
    /// udpstr datagram payload size; 0 selects the plain format.
    pub udpstr_size: usize,
    pub send_buffer: usize,
    /// `RingSize`: the AF_PACKET ring's bytes; for AF_XDP the UMEM's, raised
    /// to a floor of frames (`capture::xsk::frames_per_queue`).
    pub ring_size: usize,
    /// tcpdump expression AND-ed with every sensor filter.
    pub local_filter: Option<String>,
    /// CPUs the workers are pinned to, in turn; empty = no pinning.
    pub worker_cpus: Vec<usize>,
    pub log_level: log::LevelFilter,
    /// TCP keepalive idle time on control connections; 0 = off.
    pub keepalive_secs: u32,
    pub max_backoff_secs: u32,
    /// `-S`: log the counters on every STATS_REQ.
    pub log_stats: bool,
    /// `-y`: capture and count, send no data.
    pub dry_run: bool,
    /// `-L`: log to syslog.
    pub syslog: bool,
    /// Password accounts (`User`, `SystemAccounts`, `ShadowFile`).
    pub auth: Authenticator,
    pub tls: Tls,
    /// `XdpMode`, `XdpReplace`, `XdpDropRejected`, `XdpBusyPoll`: settings of `Capture = afxdp`
    /// (kept apart so the keys may come in any order; folded into
    /// `backend` after parsing).
    pub xdp_mode: XdpMode,
    pub xdp_replace: bool,
    pub xdp_drop_rejected: bool,
    pub xdp_busy_poll: BusyPoll,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            active_clients: Vec::new(),
            passive: Passive::default(),
            active_only: false,
            null_auth: false,
            user_name: None,
            backend: Backend::AfPacket,
            udpstr_size: DEFAULT_UDPSTR_SIZE,
            send_buffer: DEFAULT_SEND_BUFFER,
            ring_size: DEFAULT_RING_SIZE,
            local_filter: None,
            worker_cpus: Vec::new(),
            log_level: log::LevelFilter::Info,
            keepalive_secs: DEFAULT_KEEPALIVE_SECS,
            max_backoff_secs: DEFAULT_MAX_BACKOFF_SECS,
            log_stats: false,
            dry_run: false,
            syslog: false,
            auth: Authenticator::default(),
            tls: Tls::default(),
            xdp_mode: XdpMode::Auto,
            xdp_replace: false,
            xdp_drop_rejected: false,
            xdp_busy_poll: BusyPoll::Off,
        }
    }
}

/// A warning or error about one line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub file: String,
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.msg)
    }
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

impl Config {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> anyhow::Result<Parsed> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration file {}", path.display()))?;
        Ok(Config::parse(&text, &path.display().to_string())?)
    }

    /// Parses the text of an rpcapd.ini; `file` names it in diagnostics.
    pub fn parse(text: &str, file: &str) -> Result<Parsed, ConfigError> {
        let mut config = Config::default();
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let diag = |msg: String| Diag {
                file: file.to_string(),
                line,
                msg,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                errors.push(diag(format!("`{trimmed}`: expected `Key = value`")));
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            match config.apply_key(key, value) {
                Ok(KeyOutcome::Applied) => {}
                Ok(KeyOutcome::Warn(w)) => warnings.push(diag(w)),
                Ok(KeyOutcome::Unknown) => {
                    warnings.push(diag(format!("unknown key `{key}` ignored")))
                }
                Err(expected) => errors.push(diag(format!("{key} = {value}: expected {expected}"))),
            }
        }
        config.fold_xdp();
        if errors.is_empty() {
            Ok(Parsed { config, warnings })
        } else {
            Err(ConfigError { errors })
        }
    }

    /// Puts the XDP keys into `Capture = afxdp` (whatever the key order).
    pub fn fold_xdp(&mut self) {
        if let Backend::AfXdp(x) = &mut self.backend {
            x.mode = self.xdp_mode;
            x.replace = self.xdp_replace;
            x.drop_rejected = self.xdp_drop_rejected;
            x.busy_poll = self.xdp_busy_poll;
        }
    }

    /// Applies one `Key = value`; `Err` holds what was expected.
    fn apply_key(&mut self, key: &str, value: &str) -> Result<KeyOutcome, String> {
        let k = key.to_ascii_lowercase();
        match k.as_str() {
            "activeclient" => self.active_clients.push(parse_active_client(value)?),
            "passiveclient" => self
                .passive
                .clients
                .push(parse_nonempty(value, "a host name or address")?),
            "nullauthpermit" => {
                // Both references compare with "YES" exactly; anything else means no.
                self.null_auth = value == "YES";
                if !self.null_auth && value.eq_ignore_ascii_case("yes") {
                    return Ok(KeyOutcome::Warn(format!(
                        "NullAuthPermit = {value} means NO (only `YES` permits, as in the reference daemons)"
                    )));
                }
            }
            "username" => self.user_name = Some(parse_nonempty(value, "a user name")?),
            "capture" => self.backend = parse_backend(value)?,
            "udpstrsize" => self.udpstr_size = parse_udpstr_size(value)?,
            "sendbuffer" => self.send_buffer = parse_bytes(value, 4096)?,
            "ringsize" => self.ring_size = parse_bytes(value, 1 << 16)?,
            "localfilter" => {
                self.local_filter = if value.is_empty() {
                    None
                } else {
                    Some(value.to_string())
                }
            }
            "workercpu" => self.worker_cpus = parse_cpu_list(value)?,
            "loglevel" => self.log_level = parse_log_level(value)?,
            "xdpmode" => self.xdp_mode = parse_xdp_mode(value)?,
            "xdpreplace" => self.xdp_replace = parse_yes_no(value)?,
            "xdpdroprejected" => self.xdp_drop_rejected = parse_yes_no(value)?,
            "xdpbusypoll" => self.xdp_busy_poll = BusyPoll::parse(value)?,
            "keepalivesecs" => self.keepalive_secs = parse_u32_in(value, 0, 86_400)?,
            "maxbackoffsecs" => self.max_backoff_secs = parse_u32_in(value, 1, 86_400)?,
            "maxclients" => self.passive.max_clients = parse_u32_in(value, 1, 4096)? as usize,
            "authtimeoutsecs" => self.passive.auth_timeout_secs = parse_u32_in(value, 1, 3600)?,
            "idletimeoutsecs" => self.passive.idle_timeout_secs = parse_u32_in(value, 1, 86_400)?,
            "dataaccepttimeoutsecs" => {
                self.passive.data_accept_timeout_secs = parse_u32_in(value, 1, 3600)?
            }
            "passiveudpstr" => self.passive.udpstr = parse_yes_no(value)?,
            "user" => self.auth.users.push(auth::parse_user(value)?),
            "systemaccounts" => self.auth.system_accounts = parse_yes_no(value)?,
            "shadowfile" => {
                self.auth.shadow_file = Some(PathBuf::from(parse_nonempty(value, "a path")?))
            }
            "tlscert" => self.tls.cert = Some(PathBuf::from(parse_nonempty(value, "a path")?)),
            "tlskey" => self.tls.key = Some(PathBuf::from(parse_nonempty(value, "a path")?)),
            "tlsclientca" => {
                self.tls.client_ca = Some(PathBuf::from(parse_nonempty(value, "a path")?))
            }
            "tlsmode" => self.tls.mode = Some(parse_tls_mode(value)?),
            _ => return Ok(KeyOutcome::Unknown),
        }
        Ok(KeyOutcome::Applied)
    }
}

enum KeyOutcome {
    Applied,
    Warn(String),
    Unknown,
}

/// `YES` or `NO` (any case).
fn parse_yes_no(value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err("YES or NO".into())
    }
}

/// `off`, `optional` or `required`.
pub fn parse_tls_mode(value: &str) -> Result<TlsMode, String> {
    match value.to_ascii_lowercase().as_str() {
        "off" => Ok(TlsMode::Off),
        "optional" => Ok(TlsMode::Optional),
        "required" => Ok(TlsMode::Required),
        _ => Err("off, optional or required".into()),
    }
}

fn parse_nonempty(value: &str, what: &str) -> Result<String, String> {
    if value.is_empty() {
        Err(what.to_string())
    } else {
        Ok(value.to_string())
    }
}

/// Splits on the separators the references accept: space, comma, semicolon.
fn split_fields(value: &str) -> impl Iterator<Item = &str> {
    value.split([' ', '\t', ',', ';']).filter(|s| !s.is_empty())
}

/// `DEFAULT` or a port number 1..=65535.
pub fn parse_port(value: &str) -> Result<u16, String> {
    if value.eq_ignore_ascii_case("DEFAULT") {
        return Ok(DEFAULT_ACTIVE_PORT);
    }
    match value.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err("a port 1..=65535 or DEFAULT".into()),
    }
}

/// A host name or address; brackets around an IPv6 address are removed.
fn parse_host(value: &str) -> String {
    value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value)
        .to_string()
}

const ACTIVE_CLIENT_EXPECTED: &str =
    "`host, port[, ifname=NAME][, ifaddr=ADDR[/PREFIX]][, capture=afpacket|afxdp]` \
     (port DEFAULT = 2003)";

/// `host, port[, ifname=NAME][, ifaddr=ADDR[/PREFIX]][, capture=afpacket|afxdp]`.
pub fn parse_active_client(value: &str) -> Result<ActiveClient, String> {
    let mut fields = split_fields(value);
    let host = fields.next().ok_or(ACTIVE_CLIENT_EXPECTED)?;
    if host.contains('=') {
        return Err(ACTIVE_CLIENT_EXPECTED.into());
    }
    let mut client = ActiveClient {
        host: parse_host(host),
        port: DEFAULT_ACTIVE_PORT,
        preselect: Preselect::default(),
        capture: None,
    };
    for (i, field) in fields.enumerate() {
        if let Some(c) = field.strip_prefix("capture=") {
            client.capture = Some(parse_capture_choice(c)?);
        } else if let Some(name) = field.strip_prefix("ifname=") {
            client.preselect.ifname = Some(parse_nonempty(name, "ifname=NAME")?);
        } else if let Some(addr) = field.strip_prefix("ifaddr=") {
            client.preselect.ifaddr = Some(parse_ifaddr(addr)?);
        } else if i == 0 {
            client.port =
                parse_port(field).map_err(|e| format!("{e} in {ACTIVE_CLIENT_EXPECTED}"))?;
        } else {
            return Err(format!("`{field}`: {ACTIVE_CLIENT_EXPECTED}"));
        }
    }
    Ok(client)
}

/// `capture=` of an ActiveClient line.
pub fn parse_capture_choice(value: &str) -> Result<CaptureChoice, String> {
    match value.to_ascii_lowercase().as_str() {
        "afpacket" => Ok(CaptureChoice::AfPacket),
        "afxdp" => Ok(CaptureChoice::AfXdp),
        _ => Err(format!(
            "capture={value}: expected capture=afpacket or capture=afxdp"
        )),
    }
}

/// An address (a host prefix) or an address/prefix, IPv4 or IPv6.
pub fn parse_ifaddr(value: &str) -> Result<IpNet, String> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net);
    }
    value
        .parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| "ifaddr=ADDR or ifaddr=ADDR/PREFIX (IPv4 or IPv6)".into())
}

/// `-a host,port[,host,port…]`.
pub fn parse_active_list(value: &str) -> Result<Vec<ActiveClient>, String> {
    let fields: Vec<&str> = split_fields(value).collect();
    if fields.is_empty() || !fields.chunks_exact(2).remainder().is_empty() {
        return Err("host,port[,host,port...]".into());
    }
    fields
        .chunks(2)
        .map(|pair| {
            Ok(ActiveClient {
                host: parse_host(pair[0]),
                port: parse_port(pair[1])?,
                preselect: Preselect::default(),
                capture: None,
            })
        })
        .collect()
}

const BACKEND_EXPECTED: &str = "afpacket, afxdp, afxdp:IFNAME[,IFNAME...] or file:PATH";

/// `afpacket`, `afxdp` (every interface), `afxdp:IF[,IF...]` (those
/// interfaces; AF_PACKET elsewhere) or `file:PATH`.
pub fn parse_backend(value: &str) -> Result<Backend, String> {
    if value.eq_ignore_ascii_case("afpacket") {
        Ok(Backend::AfPacket)
    } else if value.eq_ignore_ascii_case("afxdp") {
        Ok(Backend::AfXdp(XdpSpec::default()))
    } else if let Some(list) = value.strip_prefix("afxdp:") {
        let interfaces: Vec<String> = split_fields(list).map(str::to_owned).collect();
        if interfaces.is_empty() {
            return Err(BACKEND_EXPECTED.into());
        }
        Ok(Backend::AfXdp(XdpSpec {
            interfaces,
            ..XdpSpec::default()
        }))
    } else if let Some(path) = value.strip_prefix("file:").filter(|p| !p.is_empty()) {
        Ok(Backend::File(PathBuf::from(path)))
    } else {
        Err(BACKEND_EXPECTED.into())
    }
}

/// `auto`, `native` or `generic`.
pub fn parse_xdp_mode(value: &str) -> Result<XdpMode, String> {
    match value.to_ascii_lowercase().as_str() {
        "auto" => Ok(XdpMode::Auto),
        "native" | "drv" => Ok(XdpMode::Native),
        "generic" | "skb" => Ok(XdpMode::Generic),
        _ => Err("auto, native or generic".into()),
    }
}

/// 0 (plain format) or a udpstr datagram size.
pub fn parse_udpstr_size(value: &str) -> Result<usize, String> {
    let expected = || format!("0 or {MIN_UDPSTR_SIZE}..={MAX_UDPSTR_SIZE}");
    let n: usize = value.parse().map_err(|_| expected())?;
    if n == 0 || (MIN_UDPSTR_SIZE..=MAX_UDPSTR_SIZE).contains(&n) {
        Ok(n)
    } else {
        Err(expected())
    }
}

/// A byte count with an optional K/M/G suffix (powers of 1024), at least `min`.
pub fn parse_bytes(value: &str, min: usize) -> Result<usize, String> {
    let expected = || format!("a byte count >= {min} (suffix K, M or G allowed)");
    let (digits, mult) = match value.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&value[..i], 1usize << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&value[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&value[..i], 1 << 30),
        _ => (value, 1),
    };
    let n: usize = digits.trim().parse().map_err(|_| expected())?;
    let n = n.checked_mul(mult).ok_or_else(expected)?;
    // Socket buffers and rings are sized with i32 on the wire and in the kernel.
    if n < min || n > i32::MAX as usize {
        return Err(expected());
    }
    Ok(n)
}

/// CPUs as a list of numbers and ranges: `0,2` or `1-3`.
pub fn parse_cpu_list(value: &str) -> Result<Vec<usize>, String> {
    let expected = || "a list of CPU numbers or ranges, e.g. `1` or `0,2-3`".to_string();
    let mut cpus = Vec::new();
    for field in split_fields(value) {
        let (a, b) = match field.split_once('-') {
            Some((a, b)) => (a, b),
            None => (field, field),
        };
        let a: usize = a.parse().map_err(|_| expected())?;
        let b: usize = b.parse().map_err(|_| expected())?;
        if a > b || b >= 4096 {
            return Err(expected());
        }
        cpus.extend(a..=b);
    }
    if cpus.is_empty() {
        return Err(expected());
    }
    Ok(cpus)
}

pub fn parse_log_level(value: &str) -> Result<log::LevelFilter, String> {
    value
        .parse::<log::LevelFilter>()
        .map_err(|_| "off, error, warn, info, debug or trace".into())
}

fn parse_u32_in(value: &str, min: u32, max: u32) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("a number {min}..={max}")),
    }
}

/// The effective configuration in rpcapd.ini syntax (`--check-config`).
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.active_clients {
            writeln!(f, "ActiveClient = {c}")?;
        }
        for c in &self.passive.clients {
            writeln!(f, "PassiveClient = {c}")?;
        }
        writeln!(
            f,
            "NullAuthPermit = {}",
            if self.null_auth { "YES" } else { "NO" }
        )?;
        if let Some(u) = &self.user_name {
            writeln!(f, "UserName = {u}")?;
        }
        match &self.backend {
            Backend::AfPacket => writeln!(f, "Capture = afpacket")?,
            Backend::File(p) => writeln!(f, "Capture = file:{}", p.display())?,
            Backend::AfXdp(x) if x.interfaces.is_empty() => writeln!(f, "Capture = afxdp")?,
            Backend::AfXdp(x) => writeln!(f, "Capture = afxdp:{}", x.interfaces.join(","))?,
        }
        let yn = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "XdpMode = {}", self.xdp_mode)?;
        writeln!(f, "XdpReplace = {}", yn(self.xdp_replace))?;
        writeln!(f, "XdpDropRejected = {}", yn(self.xdp_drop_rejected))?;
        writeln!(f, "XdpBusyPoll = {}", self.xdp_busy_poll)?;
        writeln!(f, "UdpStrSize = {}", self.udpstr_size)?;
        writeln!(f, "SendBuffer = {}", self.send_buffer)?;
        writeln!(f, "RingSize = {}", self.ring_size)?;
        if let Some(l) = &self.local_filter {
            writeln!(f, "LocalFilter = {l}")?;
        }
        if !self.worker_cpus.is_empty() {
            let cpus: Vec<String> = self.worker_cpus.iter().map(|c| c.to_string()).collect();
            writeln!(f, "WorkerCpu = {}", cpus.join(","))?;
        }
        writeln!(
            f,
            "LogLevel = {}",
            self.log_level.as_str().to_ascii_lowercase()
        )?;
        writeln!(f, "KeepaliveSecs = {}", self.keepalive_secs)?;
        writeln!(f, "MaxBackoffSecs = {}", self.max_backoff_secs)?;
        let p = &self.passive;
        writeln!(f, "MaxClients = {}", p.max_clients)?;
        writeln!(f, "AuthTimeoutSecs = {}", p.auth_timeout_secs)?;
        writeln!(f, "IdleTimeoutSecs = {}", p.idle_timeout_secs)?;
        writeln!(f, "DataAcceptTimeoutSecs = {}", p.data_accept_timeout_secs)?;
        writeln!(f, "PassiveUdpStr = {}", if p.udpstr { "YES" } else { "NO" })?;
        for u in &self.auth.users {
            writeln!(f, "User = {} {}", u.name, u.hash)?;
        }
        writeln!(
            f,
            "SystemAccounts = {}",
            if self.auth.system_accounts {
                "YES"
            } else {
                "NO"
            }
        )?;
        if let Some(s) = &self.auth.shadow_file {
            writeln!(f, "ShadowFile = {}", s.display())?;
        }
        for (key, path) in [
            ("TlsCert", &self.tls.cert),
            ("TlsKey", &self.tls.key),
            ("TlsClientCa", &self.tls.client_ca),
        ] {
            if let Some(path) = path {
                writeln!(f, "{key} = {}", path.display())?;
            }
        }
        if let Some(m) = self.tls.mode {
            writeln!(f, "TlsMode = {m}")?;
        }
        writeln!(f, "# from flags only:")?;
        writeln!(f, "#   active only (-v): {}", self.active_only)?;
        writeln!(
            f,
            "#   passive listen (-b/-p/-4): {}:{}{}{}",
            p.bind.as_deref().unwrap_or("*"),
            p.port,
            if p.ipv4_only { " IPv4 only" } else { "" },
            if self.active_only { " (off: -v)" } else { "" }
        )?;
        writeln!(f, "#   log stats (-S): {}", self.log_stats)?;
        writeln!(f, "#   dry run (-y): {}", self.dry_run)?;
        write!(f, "#   syslog (-L): {}", self.syslog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(p.config.backend, Backend::AfPacket);
        // Printed back as it was written (config dump, reload comparison).
        assert_eq!(
            c[0].to_string(),
            "10.0.0.1, 2003, ifname=span0, capture=afxdp"
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
             KeepaliveSecs = 0\nMaxBackoffSecs = 5\n",
        );
        let c = p.config;
        assert_eq!(c.backend, Backend::File("/tmp/x.pcap".into()));
        assert_eq!(c.udpstr_size, 0);
        assert_eq!(c.send_buffer, 4 << 20);
        assert_eq!(c.ring_size, 65536);
        assert_eq!(c.local_filter.as_deref(), Some("not port 22"));
        assert_eq!(c.worker_cpus, vec![0, 2, 3]);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(c.keepalive_secs, 0);
        assert_eq!(c.max_backoff_secs, 5);
        assert_eq!(
            parse("Capture = afpacket\nUdpStrSize = 29")
                .config
                .udpstr_size,
            29
        );
        assert_eq!(parse("UdpStrSize = 65000").config.udpstr_size, 65000);
        assert_eq!(parse("SendBuffer = 1g").config.send_buffer, 1 << 30);
        assert_eq!(parse("SendBuffer = 64k").config.send_buffer, 64 << 10);
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
        let cases = [
            (
                "UdpStrSize = 12",
                "rpcapd.ini:1: UdpStrSize = 12: expected 0 or 29..=65000",
            ),
            (
                "UdpStrSize = 65001",
                "UdpStrSize = 65001: expected 0 or 29..=65000",
            ),
            ("UdpStrSize = x", "UdpStrSize = x: expected 0 or 29..=65000"),
            ("ActiveClient = ", "ActiveClient = : expected `host, port"),
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
            ("ActiveClient = h, 1, bogus", "`bogus`"),
            ("ActiveClient = h, 1, ifname=", "expected ifname=NAME"),
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
            ("PassiveClient =", "expected a host name"),
            (
                "ActiveClient 10.0.0.1",
                "rpcapd.ini:1: `ActiveClient 10.0.0.1`: expected `Key = value`",
            ),
        ];
        for (text, want) in cases {
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
        let text = include_str!("../../rpcapd.ini.example");
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
            "ActiveClient",
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
            "MaxClients",
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
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches('#').starts_with(&format!("{key} = "))),
                "{key} has no example line"
            );
        }
        assert_eq!(all.config.active_clients.len(), 4);
        assert_eq!(
            all.config.active_clients[1].capture,
            Some(CaptureChoice::AfXdp)
        );
    }

    #[test]
    fn afxdp_is_explicit_and_takes_its_keys_in_any_order() {
        assert_eq!(Config::default().backend, Backend::AfPacket);
        let c = parse("XdpMode = generic\nXdpReplace = yes\nCapture = afxdp\n").config;
        let Backend::AfXdp(x) = &c.backend else {
            panic!("{:?}", c.backend)
        };
        assert_eq!(
            (x.mode, x.replace, x.drop_rejected),
            (XdpMode::Generic, true, false)
        );
        assert!(x.covers("anything"));
        let c =
            parse("Capture = afxdp:span0, tap1\nXdpMode = native\nXdpDropRejected = yes\n").config;
        let Backend::AfXdp(x) = &c.backend else {
            panic!("{:?}", c.backend)
        };
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
            assert_eq!(c.xdp_busy_poll, want, "{text}");
            let Backend::AfXdp(x) = &c.backend else {
                panic!("{:?}", c.backend)
            };
            assert_eq!(x.busy_poll, want, "{text}");
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
    fn display_round_trips() {
        let p = parse(
            "ActiveClient = 10.0.0.1, 2003, ifname=eth0, ifaddr=10.0.0.0/8\nNullAuthPermit = YES\n\
             UdpStrSize = 0\nWorkerCpu = 1,3\nLocalFilter = not port 22\nCapture = file:/x.pcap\n\
             MaxClients = 3\nAuthTimeoutSecs = 5\nIdleTimeoutSecs = 7\nDataAcceptTimeoutSecs = 2\n\
             PassiveUdpStr = YES\nSystemAccounts = YES\nShadowFile = /tmp/shadow\n\
             TlsCert = /c.pem\nTlsKey = /k.pem\nTlsClientCa = /ca.pem\nTlsMode = optional\n",
        );
        let again = parse(&p.config.to_string());
        assert_eq!(again.config, p.config);
        assert!(again.warnings.is_empty());
    }
}
