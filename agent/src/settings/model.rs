//! The settings model: what rpcapd.ini and the flags configure, as plain
//! data. The bottom layer of the agent: it imports nothing from capture,
//! datapath, session, control or host; those read their values from here.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use crate::tunnel::decap::DecapSpec;

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
/// Smallest `SendBuffer` (`-u`).
pub const MIN_SEND_BUFFER: usize = 4096;
pub const DEFAULT_RING_SIZE: usize = 32 << 20;
/// `MaxLatencyMs` when unset: short enough for a live view (a sensor's
/// display, an IDS), long enough that a busy server's agent wakes ~11
/// times a second rather than per frame or per few. Each wake-up costs
/// ~125 us of CPU on a VM, so at 50 ms the wake-ups alone cost more than
/// tcpdump's whole capture at 20 kpps (benches/README.md, "Per wake-up
/// and per packet"). xrpcap-sensor asks for the same read timeout.
pub const DEFAULT_MAX_LATENCY: Duration = Duration::from_millis(100);
/// Smallest `RingSize`.
pub const MIN_RING_SIZE: usize = 1 << 16;
pub const DEFAULT_KEEPALIVE_SECS: u32 = 60;
pub const DEFAULT_MAX_BACKOFF_SECS: u32 = 30;
/// `FailbackSecs`: how often a failover group probes its better sensors.
pub const DEFAULT_FAILBACK_SECS: u32 = 30;
/// A capturing sensor whose STATS_REQ rhythm stops is given up after at
/// most this long; also the control connections' TCP_USER_TIMEOUT.
pub const DEFAULT_LIVENESS_SECS: u32 = 30;
/// `SummaryInterval`: a summary line per capture every minute.
pub const DEFAULT_SUMMARY_INTERVAL_SECS: u32 = 60;
pub const DEFAULT_MAX_CLIENTS: usize = 16;
/// One address may hold this many of the MaxClients slots, so that one host
/// (idle connections, a slowloris, a password guesser) cannot lock out the others.
pub const DEFAULT_MAX_CLIENTS_PER_HOST: usize = 4;
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
    /// `decap=KIND[:ID][@SRC]`: the sensor gets the frames inside this
    /// tunnel, not the tunnel packets (`--decap` for lines without one).
    pub decap: Option<DecapSpec>,
    /// `failover=NAME`: the lines of one group hold one session at most,
    /// with the first reachable sensor in file order.
    pub failover: Option<String>,
}

impl ActiveClient {
    /// The slot's name in logs, metrics and status: `HOST:PORT`
    /// (`[ADDR]:PORT` for an IPv6 address).
    pub fn slot_name(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
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
        if let Some(d) = &self.decap {
            write!(f, ", decap={d}")?;
        }
        if let Some(g) = &self.failover {
            write!(f, ", failover={g}")?;
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
    /// Most passive clients served at once from one address.
    pub max_clients_per_host: usize,
    /// A client must authenticate within this time from its connection,
    /// however it sends its bytes.
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
            max_clients_per_host: DEFAULT_MAX_CLIENTS_PER_HOST,
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

/// One `User = NAME HASH` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    /// argon2 PHC string.
    pub hash: String,
}

/// The password accounts a session may authenticate against (`User`,
/// `SystemAccounts`, `ShadowFile`). Data only: the auth module checks
/// passwords against them (its `Authenticator` is this type with `verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: Vec<UserEntry>,
    /// Also check the system's accounts in `shadow_file`.
    pub system_accounts: bool,
    pub shadow_file: Option<PathBuf>,
}

/// Which capture source serves a capture (`Capture`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// TPACKET_V3 ring: both directions, the host's own traffic (default).
    AfPacket,
    /// Replays a pcap/pcapng file instead of a live interface.
    File(PathBuf),
    /// XDP program + AF_XDP sockets: ingress only, takes the frames away
    /// from the host's stack (mirror/SPAN/tap interfaces), with the
    /// [`XdpSettings`] of the configuration.
    AfXdp,
}

/// Where the XDP program runs (`XdpMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode, generic if the driver has no XDP support.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works on every interface, slowest.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// NAPI budget when `XdpBusyPoll = on` gives none (the kernel's default weight).
pub const DEFAULT_BUDGET: u16 = 64;
/// The largest budget accepted: a larger one lets one kick hold the CPU
/// for a long batch (the kernel itself allows up to 65535).
pub const MAX_BUDGET: u16 = 1024;

/// The `XdpBusyPoll` setting (see `capture::afxdp::busy_poll`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BusyPoll {
    #[default]
    Off,
    /// Busy polling with this NAPI budget (1..=[`MAX_BUDGET`]).
    On { budget: u16 },
}

impl fmt::Display for BusyPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusyPoll::Off => f.write_str("off"),
            BusyPoll::On { budget } => write!(f, "on:{budget}"),
        }
    }
}

impl BusyPoll {
    /// `off`, `on` or `on:BUDGET`; `Err` says what was expected.
    pub fn parse(value: &str) -> Result<BusyPoll, String> {
        let expected = || format!("off, on or on:BUDGET (BUDGET 1..={MAX_BUDGET})");
        let v = value.trim().to_ascii_lowercase();
        let (word, budget) = match v.split_once(':') {
            Some((w, b)) => (w.trim(), Some(b.trim())),
            None => (v.as_str(), None),
        };
        match (word, budget) {
            ("off" | "no", None) => Ok(BusyPoll::Off),
            ("on" | "yes", None) => Ok(BusyPoll::On {
                budget: DEFAULT_BUDGET,
            }),
            ("on", Some(b)) => match b.parse::<u16>() {
                Ok(budget) if (1..=MAX_BUDGET).contains(&budget) => Ok(BusyPoll::On { budget }),
                _ => Err(expected()),
            },
            _ => Err(expected()),
        }
    }
}

/// The settings of AF_XDP captures (`Capture = afxdp[:IF,...]`, `XdpMode`,
/// `XdpReplace`, `XdpDropRejected`, `XdpBusyPoll`), held once: they apply
/// wherever a capture runs on AF_XDP, by `Capture` or by an ActiveClient
/// line's `capture=afxdp`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XdpSettings {
    pub mode: XdpMode,
    /// Replace another program already attached to the interface.
    pub replace: bool,
    /// Drop in XDP what the filter rejects instead of passing it on.
    pub drop_rejected: bool,
    /// Interfaces `Capture = afxdp:IF,...` captures with AF_XDP; empty:
    /// every interface. The others use AF_PACKET (the host resolves this
    /// before starting a worker).
    pub interfaces: Vec<String>,
    /// `XdpBusyPoll`.
    pub busy_poll: BusyPoll,
}

impl XdpSettings {
    /// Whether `ifname` is captured with AF_XDP under these settings.
    pub fn covers(&self, ifname: &str) -> bool {
        self.interfaces.is_empty() || self.interfaces.iter().any(|i| i == ifname)
    }
}

/// The operator's capture settings, held once: the host passes them down
/// by reference in every `capture::Request`, and the sources and the
/// worker read what they need. A new capture option is a field here, its
/// rpcapd.ini key (`ini::KEYS`) and the line of the source that reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSettings {
    /// `Capture`: the operator's choice; the host resolves it per capture
    /// (ActiveClient's `capture=`, [`XdpSettings::covers`]) into the
    /// request's own backend, which is what the sources go by.
    pub backend: Backend,
    /// The `Xdp*` keys and `Capture = afxdp:`'s interfaces (whatever the
    /// key order: they are kept apart from `backend`), also for a session
    /// whose ActiveClient line says `capture=afxdp` while `Capture` does not.
    pub xdp: XdpSettings,
    /// `RingSize`: the AF_PACKET ring's bytes; for AF_XDP the UMEM's, raised
    /// to a floor of frames (`capture::afxdp::socket::frames_per_queue`);
    /// 0: the source's default.
    pub ring_size: usize,
    /// `SendBuffer` (`-u`): the data socket's send buffer in bytes; 0: the
    /// system's.
    pub send_buffer: usize,
    /// `WorkerCpu`: CPUs the workers are pinned to, in turn; empty = no pinning.
    pub worker_cpus: Vec<usize>,
    /// `-y`: capture and count, send no data.
    pub dry_run: bool,
    /// `MaxLatencyMs`: the longest a frame may wait in the agent (less if
    /// the sensor's read timeout is shorter). Longer means fewer wake-ups
    /// and less CPU per packet at low rates; see `capture::Request::latency`.
    pub max_latency: Duration,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings {
            backend: Backend::AfPacket,
            xdp: XdpSettings::default(),
            ring_size: DEFAULT_RING_SIZE,
            send_buffer: DEFAULT_SEND_BUFFER,
            worker_cpus: Vec::new(),
            dry_run: false,
            max_latency: DEFAULT_MAX_LATENCY,
        }
    }
}

/// The effective configuration: file, then flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub active_clients: Vec<ActiveClient>,
    /// `TunnelClient` lines, `--tunnel-client`: exports that need no sensor.
    pub tunnel_clients: Vec<super::tunnel::TunnelClient>,
    pub passive: Passive,
    /// `-v`: active mode only, never listen.
    pub active_only: bool,
    pub null_auth: bool,
    pub user_name: Option<String>,
    /// What the capture sources and the worker read.
    pub capture: CaptureSettings,
    /// udpstr datagram payload size; 0 selects the plain format.
    pub udpstr_size: usize,
    /// tcpdump expression AND-ed with every sensor filter.
    pub local_filter: Option<String>,
    pub log_level: log::LevelFilter,
    /// TCP keepalive idle time on control connections; 0 = off.
    pub keepalive_secs: u32,
    pub max_backoff_secs: u32,
    /// `FailbackSecs`: while a failover group runs on a later line, the
    /// earlier lines are probed this often; the group moves back to the
    /// first that answers.
    pub failback_secs: u32,
    /// `LivenessSecs`: longest silence of a capturing sensor that polls
    /// STATS, and TCP_USER_TIMEOUT of control connections; 0 = off.
    pub liveness_secs: u32,
    /// `ActiveCloseStops`: a sensor's CLOSE stops its slot (libpcap);
    /// default: redial with backoff.
    pub active_close_stops: bool,
    /// `-S`: log the counters on every STATS_REQ.
    pub log_stats: bool,
    /// `SummaryInterval`: seconds between a capture's summary lines; 0 = none.
    pub summary_interval_secs: u32,
    /// `-L`: log to syslog.
    pub syslog: bool,
    /// Password accounts (`User`, `SystemAccounts`, `ShadowFile`).
    pub auth: Accounts,
    pub tls: Tls,
    /// `MetricsListen`, `--metrics-listen`: where the Prometheus endpoint
    /// listens; None: no endpoint. Read at start only.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `StatusSocket`, `--status-socket`: the unix socket `xrpcapd status`
    /// reads. Read at start only.
    pub status_socket: StatusSocket,
}

/// Where the status socket is (`StatusSocket = PATH|none`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StatusSocket {
    /// [`DEFAULT_STATUS_SOCKET`] when its directory (the unit's
    /// RuntimeDirectory) exists and is writable; none otherwise.
    #[default]
    Default,
    /// `none`: no socket.
    Off,
    /// This path; failing to listen there stops the start.
    Path(PathBuf),
}

/// The status socket of the packaged unit (RuntimeDirectory=xrpcapd).
pub const DEFAULT_STATUS_SOCKET: &str = "/run/xrpcapd/status.sock";

impl StatusSocket {
    /// The path `xrpcapd status` connects to (None: `none`).
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            StatusSocket::Default => Some(PathBuf::from(DEFAULT_STATUS_SOCKET)),
            StatusSocket::Off => None,
            StatusSocket::Path(p) => Some(p.clone()),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            active_clients: Vec::new(),
            tunnel_clients: Vec::new(),
            passive: Passive::default(),
            active_only: false,
            null_auth: false,
            user_name: None,
            capture: CaptureSettings::default(),
            udpstr_size: DEFAULT_UDPSTR_SIZE,
            local_filter: None,
            log_level: log::LevelFilter::Info,
            keepalive_secs: DEFAULT_KEEPALIVE_SECS,
            max_backoff_secs: DEFAULT_MAX_BACKOFF_SECS,
            failback_secs: DEFAULT_FAILBACK_SECS,
            liveness_secs: DEFAULT_LIVENESS_SECS,
            active_close_stops: false,
            log_stats: false,
            summary_interval_secs: DEFAULT_SUMMARY_INTERVAL_SECS,
            syslog: false,
            auth: Accounts::default(),
            tls: Tls::default(),
            metrics_listen: None,
            status_socket: StatusSocket::Default,
        }
    }
}

/// What xrpcapd logs (WARN) and reports to systemd (STATUS) when it has a
/// configuration file but nothing to do: no sensor, passive mode off.
pub const NO_SENSOR_WARNING: &str =
    "no sensor configured: run xrpcapd-setup --sensor HOST or add ActiveClient lines, then reload";

impl Config {
    /// Passive mode off and no sensor to dial: nothing to serve.
    pub fn no_sensor(&self) -> bool {
        self.active_only && self.active_clients.is_empty() && self.tunnel_clients.is_empty()
    }

    /// Whether passive mode listens at all.
    pub fn listens(&self) -> bool {
        !self.active_only
    }

    /// The warning for a passive listener that lets anyone in: NULL
    /// authentication permitted, a non-loopback address, no host list.
    /// `None` when the configuration is not exposed that way.
    pub fn null_auth_warning(&self) -> Option<String> {
        if !self.listens() || !self.null_auth || !self.passive.clients.is_empty() {
            return None;
        }
        let bind = self.passive.bind.as_deref();
        if bind.is_some_and(is_loopback_host) {
            return None;
        }
        Some(format!(
            "passive mode listens on {}:{} and permits NULL authentication from any host: \
             anyone who reaches this port can capture this host's traffic without a password; \
             turn passive mode off (-v or Passive = no), allow only some hosts (-l HOSTS or \
             PassiveClient), require a password (User lines, no -n/NullAuthPermit) or listen \
             on loopback only (-b 127.0.0.1)",
            bind.unwrap_or("*"),
            self.passive.port
        ))
    }
}

/// Whether `host` (an address, `[v6]` or a name) means loopback only; a
/// name is resolved, and one that does not resolve counts as exposed.
fn is_loopback_host(host: &str) -> bool {
    use std::net::{IpAddr, ToSocketAddrs};
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    match (host, 0).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_auth_warning_only_for_an_open_exposed_listener() {
        let cfg = |f: &dyn Fn(&mut Config)| {
            let mut c = Config {
                null_auth: true,
                ..Config::default()
            };
            f(&mut c);
            c.null_auth_warning()
        };
        let w = cfg(&|_| {}).expect("NULL auth on *:2002 with no host list");
        for fix in [
            "-v",
            "Passive = no",
            "-l HOSTS",
            "PassiveClient",
            "-b 127.0.0.1",
        ] {
            assert!(w.contains(fix), "{fix} missing: {w}");
        }
        assert!(w.contains("*:2002"), "{w}");
        assert!(cfg(&|c| c.passive.bind = Some("0.0.0.0".into())).is_some());
        assert!(cfg(&|c| c.passive.bind = Some("192.0.2.1".into())).is_some());
        // Safe: no NULL auth, passive off, a host list, loopback binds.
        assert_eq!(cfg(&|c| c.null_auth = false), None);
        assert_eq!(cfg(&|c| c.active_only = true), None);
        assert_eq!(cfg(&|c| c.passive.clients.push("h".into())), None);
        for lo in ["127.0.0.1", "::1", "[::1]", "localhost"] {
            assert_eq!(cfg(&|c| c.passive.bind = Some(lo.into())), None, "{lo}");
        }
    }

    #[test]
    fn no_sensor_is_passive_off_without_active_clients() {
        let mut c = Config::default();
        assert!(!c.no_sensor());
        c.active_only = true;
        assert!(c.no_sensor());
        c.active_clients.push(ActiveClient {
            host: "h".into(),
            port: 2003,
            preselect: Preselect::default(),
            capture: None,
            decap: None,
            failover: None,
        });
        assert!(!c.no_sensor());
    }

    #[test]
    fn busy_poll_parses_off_on_and_a_budget() {
        assert_eq!(BusyPoll::parse("off"), Ok(BusyPoll::Off));
        assert_eq!(BusyPoll::parse("OFF"), Ok(BusyPoll::Off));
        assert_eq!(
            BusyPoll::parse("on"),
            Ok(BusyPoll::On {
                budget: DEFAULT_BUDGET
            })
        );
        assert_eq!(BusyPoll::parse("on:16"), Ok(BusyPoll::On { budget: 16 }));
        assert_eq!(
            BusyPoll::parse("On: 1024"),
            Ok(BusyPoll::On { budget: 1024 })
        );
        for bad in [
            "", "maybe", "on:", "on:0", "on:1025", "on:-1", "on:x", "off:5", "on:64:1",
        ] {
            let e = BusyPoll::parse(bad).expect_err(bad);
            assert!(e.contains("on:BUDGET"), "{bad}: {e}");
        }
        for s in [BusyPoll::Off, BusyPoll::On { budget: 8 }] {
            assert_eq!(BusyPoll::parse(&s.to_string()), Ok(s));
        }
    }
}
