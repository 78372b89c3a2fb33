//! Command-line flags: those of libpcap's and ExtraHop's rpcapd, with long
//! forms, plus xrpcapd's own. Flags override the configuration files and
//! the environment (`XRPCAPD_*`, [`super::env`]).

use std::path::PathBuf;

use clap::Parser;

use super::model::{
    ActiveClient, Config, DecapSpec, Preselect, StatusSocket, TlsMode, DEFAULT_ACTIVE_PORT,
    MAX_UDPSTR_SIZE, MIN_RING_SIZE, MIN_SEND_BUFFER,
};
use super::values;

// clap value parsers: the config file's parsers, with the same wording.
// Flags whose values clap would take for flags (`-c -1,-1`, `-e -15,10`)
// say `allow_hyphen_values`; bare `-i` versus `-i IFNAME` is an optional
// value (`num_args = 0..=1`): getopt can express neither, so the references
// gave the letter one arity each, and clap parses both without a step of
// its own.

/// 0 or 29..; above 65000 clamped (by [`Cli::apply`], with a notice).
fn udpstr_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > MAX_UDPSTR_SIZE => Ok(n),
        _ => values::parse_udpstr_size(s).map_err(|e| format!("expected {e}")),
    }
}
fn send_buffer(s: &str) -> Result<usize, String> {
    values::parse_bytes(s, MIN_SEND_BUFFER).map_err(|e| format!("expected {e}"))
}
fn ring_bytes(s: &str) -> Result<usize, String> {
    values::parse_bytes(s, 1).map_err(|e| format!("expected {e}"))
}
fn positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a number > 0".into()),
    }
}
fn metrics_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    values::parse_metrics_listen(s).map_err(|e| format!("expected {e}"))
}
fn status_socket(s: &str) -> Result<StatusSocket, String> {
    values::parse_status_socket(s).map_err(|e| format!("expected {e}"))
}
fn tls_mode(s: &str) -> Result<TlsMode, String> {
    values::parse_tls_mode(s).map_err(|e| format!("expected {e}"))
}

/// `-c`: ExtraHop's threading and CPU affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSpec {
    /// `single`: one thread, no pinning.
    Single,
    /// `CPU`: one thread pinned to CPU (`-1`: none).
    SingleOn(i32),
    /// `CAPTURE,SEND`: each thread pinned (`-1`: that one not).
    Threads(i32, i32),
}

const CPU_EXPECTED: &str = "expected single, CPU, CAPTURE_CPU,SEND_CPU or -1,-1";

fn cpu_number(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(n) if (-1..4096).contains(&n) => Ok(n),
        _ => Err(CPU_EXPECTED.into()),
    }
}

fn cpu_spec(s: &str) -> Result<CpuSpec, String> {
    if s.eq_ignore_ascii_case("single") {
        return Ok(CpuSpec::Single);
    }
    match s.split_once(',') {
        Some((a, b)) => Ok(CpuSpec::Threads(cpu_number(a)?, cpu_number(b)?)),
        None => Ok(CpuSpec::SingleOn(cpu_number(s)?)),
    }
}

fn nice_spec(s: &str) -> Result<(i32, Option<i32>), String> {
    let one = |v: &str| match v.trim().parse::<i32>() {
        Ok(n) if (-20..=19).contains(&n) => Ok(n),
        _ => Err("expected NICE[,NICE], each -20..=19".to_string()),
    };
    match s.split_once(',') {
        Some((a, b)) => Ok((one(a)?, Some(one(b)?))),
        None => Ok((one(s)?, None)),
    }
}

/// `-a`: hosts and ports as the references split them (on space, comma,
/// semicolon, CR, LF; tabs too): `host,port` pairs, a missing last port or
/// `DEFAULT` is 2003.
fn decap_spec(s: &str) -> Result<DecapSpec, String> {
    s.parse()
        .map_err(|e: crate::tunnel::decap::SpecError| e.to_string())
}

fn active_list(s: &str) -> Result<Vec<ActiveClient>, String> {
    let fields: Vec<&str> = s
        .split([' ', '\t', ',', ';', '\r', '\n'])
        .filter(|f| !f.is_empty())
        .collect();
    if fields.is_empty() {
        return Err("expected HOST[,PORT][,HOST[,PORT]...]".into());
    }
    fields
        .chunks(2)
        .map(|pair| {
            let host = pair[0];
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if host.contains('=') {
                return Err(format!(
                    "expected HOST[,PORT][,HOST[,PORT]...], not `{host}` (ifname=/ifaddr= are for ActiveClient lines)"
                ));
            }
            let port = match pair.get(1) {
                Some(p) => values::parse_port(p).map_err(|e| format!("expected {e}"))?,
                None => DEFAULT_ACTIVE_PORT,
            };
            Ok(ActiveClient {
                host: host.to_string(),
                port,
                preselect: Preselect::default(),
                capture: None,
                decap: None,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "xrpcapd",
    version,
    about = "Remote packet capture forwarder: captures local interfaces and forwards the frames to a sensor over RPCAP",
    long_about = "xrpcapd captures the frames of local interfaces and forwards them to a remote \
sensor over RPCAP, as libpcap's and ExtraHop's rpcapd do: same rpcapd.ini, same flags, same wire \
formats (plain PACKET over UDP/TCP, ExtraHop's udpstr over UDP).\n\n\
In active mode (ActiveClient lines, -a) xrpcapd dials each sensor and serves it; the sensor \
then chooses an interface and starts captures. Unless -v or `Passive = no`, xrpcapd also listens \
(passive mode, port 2002) for standard clients such as libpcap's rpcap:// and Wireshark; the \
passive flags (-b, -p, -4, -l, -n) turn it on over `Passive = no`. Clients authenticate \
with a password (User lines, system accounts) or NULL when permitted; TLS (rpcaps://) with \
TlsCert/TlsKey. Flags override the configuration file. \
SIGHUP reloads the file; SIGTERM/SIGINT stop every capture and exit.\n\n\
Every rpcapd.ini key may also come from the environment: XRPCAPD_ and the key in UPPER_SNAKE \
(XRPCAPD_ACTIVE_CLIENT, XRPCAPD_METRICS_LISTEN; ENVIRONMENT in xrpcapd(8) lists them). Without -f no file is read: \
the environment and the flags are the whole configuration. Precedence: file < drop-ins < \
environment < flags.\n\n\
`xrpcapd status` prints what a running xrpcapd does (sensor slots, captures, passive \
listeners, configuration warnings), read from its status socket.",
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Configuration file (rpcapd.ini syntax, see rpcapd.ini(5)); the drop-ins
    /// rpcapd.d/*.ini beside it are read after it, in lexical order. Without
    /// it no file is read (XRPCAPD_* variables and flags only)
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Drop-in directory read after -f FILE (its *.ini files, in lexical order;
    /// default: rpcapd.d beside FILE; a missing directory is fine)
    #[arg(long = "config-dir", value_name = "DIR", requires = "config")]
    pub config_dir: Option<PathBuf>,

    /// Sensors to dial (active mode): HOST[,PORT] pairs as the references take
    /// them (port DEFAULT or missing = 2003; in an odd-length list the last
    /// host gets 2003). Repeatable.
    #[arg(short = 'a', long = "active", value_name = "HOST[,PORT][,HOST[,PORT]...]", value_parser = active_list)]
    pub active: Vec<Vec<ActiveClient>>,

    /// Export the frames of an interface in a standard tunnel, no sensor
    /// needed (as a `TunnelClient` line): vxlan|gre|erspan2|erspan3, HOST[, PORT]
    /// [, vni=N | session=N][, ifname=IF][, filter=EXPR]. Repeatable.
    #[arg(long = "tunnel-client", value_name = "SPEC", value_parser = super::tunnel::parse_tunnel_client)]
    pub tunnel_clients: Vec<super::tunnel::TunnelClient>,

    /// Permit NULL authentication (NullAuthPermit = YES)
    #[arg(short = 'n', long = "null-auth")]
    pub null_auth: bool,

    /// Active mode only: never listen for sensors
    #[arg(short = 'v', long = "active-only")]
    pub active_only: bool,

    /// Run as a daemon: fork, detach from the terminal, chdir /, standard
    /// streams onto /dev/null; the starting process exits once the daemon
    /// serves (0) or failed (its error and exit status). Logs go to syslog
    /// when /dev/log exists (as libpcap's rpcapd -d). Not with systemd
    /// (Type=notify runs xrpcapd in the foreground)
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Write the process id to FILE at start (the daemon's with -d), remove it at exit
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Log to syslog (facility daemon) instead of stderr
    #[arg(short = 'L', long = "syslog")]
    pub syslog: bool,

    /// -i IFNAME (ExtraHop): preselect this interface for every sensor that has
    /// no ifname=/ifaddr= of its own: it is listed first in FINDALLIF and is
    /// the only one the sensor may open. Bare -i (libpcap), with no IFNAME
    /// after it: inetd mode, as --inetd
    #[arg(short = 'i', long = "interface", value_name = "IFNAME", num_args = 0..=1)]
    pub interface: Option<Option<String>>,

    /// Decapsulate: the sensors of -a (and every ActiveClient line without a
    /// decap= of its own) get the frames inside this tunnel, not the tunnel
    /// packets: vxlan[:VNI], geneve[:VNI], gre[:KEY] or erspan[:SESSION],
    /// optionally @ADDR[/PREFIX] for the outer source, then +tag to pass the
    /// id to the sensor as VLAN tags (docs/tunnels.md)
    #[arg(long = "decap", value_name = "SPEC", value_parser = decap_spec)]
    pub decap: Option<DecapSpec>,

    /// inetd mode (libpcap's bare -i): standard input is a connected TCP
    /// socket (inetd, xinetd, systemd Accept=yes with StandardInput=socket);
    /// serve that one passive client, then exit. No listener, no sensors
    /// dialled; logs go to syslog (standard streams are the socket)
    #[arg(long = "inetd")]
    pub inetd: bool,

    /// udpstr datagram payload size, 29..=65000 (larger is clamped to 65000, as
    /// ExtraHop's rpcapd does), capped by the path MTU; 0 sends plain PACKET
    /// datagrams (UdpStrSize)
    #[arg(short = 't', long = "udpstr-size", value_name = "SIZE", value_parser = udpstr_size)]
    pub udpstr_size: Option<usize>,

    /// UDP socket send buffer in bytes, suffix K/M/G allowed (SendBuffer, default 8M)
    #[arg(short = 'u', long = "send-buffer", value_name = "BYTES", value_parser = send_buffer)]
    pub send_buffer: Option<usize>,

    /// Capture buffer in bytes, suffix K/M/G allowed (ExtraHop's pcap buffer
    /// size): the capture ring's size, RingSize; raised to 64K
    #[arg(short = 'z', long = "ring-size", value_name = "BYTES", value_parser = ring_bytes)]
    pub ring_size: Option<usize>,

    /// ExtraHop's user-space ring between its capture and send threads, in MB:
    /// accepted with a notice (xrpcapd's worker sends from the capture ring
    /// itself; -z sizes that)
    #[arg(short = 'm', value_name = "MB", value_parser = positive)]
    pub ring_mb: Option<u64>,

    /// ExtraHop's user-space ring in packets: accepted with a notice, as -m
    #[arg(short = 'k', value_name = "PACKETS", value_parser = positive)]
    pub ring_packets: Option<u64>,

    /// ExtraHop's blocking UDP socket: accepted with a notice (xrpcapd never
    /// blocks the capture on the data socket; a full send buffer counts drops)
    #[arg(short = 'g')]
    pub blocking_udp: bool,

    /// Threads and CPU pinning as ExtraHop's rpcapd: `single`, CPU, CAPTURE,SEND
    /// or -1,-1 (no pinning). xrpcapd captures and sends on one worker thread
    /// per capture: a CPU (or CAPTURE) pins the workers there (WorkerCpu)
    #[arg(short = 'c', long = "cpu", value_name = "SPEC", value_parser = cpu_spec, allow_hyphen_values = true)]
    pub cpu: Option<CpuSpec>,

    /// Nice values CAPTURE[,SEND] (ExtraHop's -e -15,10): xrpcapd's workers do
    /// both, so the process takes CAPTURE (-20..=19; below 0 needs root or
    /// CAP_SYS_NICE)
    #[arg(short = 'e', long = "nice", value_name = "CAPTURE[,SEND]", value_parser = nice_spec, allow_hyphen_values = true)]
    pub nice: Option<(i32, Option<i32>)>,

    /// -S alone (ExtraHop): log the capture counters on every STATS request.
    /// -S with -K/-X (libpcap): TLS only (TlsMode = required)
    #[arg(short = 'S', long = "log-stats")]
    pub log_stats: bool,

    /// Log a summary line per capture (rates, drops since the last line)
    /// every SECS seconds; 0: none (SummaryInterval, default 60)
    #[arg(long = "summary-interval", value_name = "SECS", value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub summary_interval: Option<u32>,

    /// libpcap's TLS compression: accepted with a notice (TLS compression
    /// leaks secrets, CRIME; rustls has none)
    #[arg(short = 'C')]
    pub compression: bool,

    /// Save the effective configuration (files, environment and flags) to FILE in rpcapd.ini
    /// syntax, then go on (as the references' -s, which save the flags' part)
    #[arg(short = 's', long = "save-config", value_name = "FILE")]
    pub save_config: Option<PathBuf>,

    /// Dry run: capture and count, but send no data to the sensor
    #[arg(short = 'y', long = "dry-run")]
    pub dry_run: bool,

    /// Passive mode: address to listen on (default: every address)
    #[arg(short = 'b', long = "bind", value_name = "ADDR")]
    pub bind: Option<String>,

    /// Passive mode: port to listen on, default 2002
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,

    /// Passive mode: listen on IPv4 only
    #[arg(short = '4', long = "ipv4")]
    pub ipv4: bool,

    /// Passive mode: hosts allowed to connect, comma-separated (PassiveClient)
    #[arg(short = 'l', long = "allow", value_name = "HOSTLIST")]
    pub allow: Option<String>,

    /// TLS private key, PEM (TlsKey; as libpcap's rpcapd -K)
    #[arg(short = 'K', long = "tls-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// TLS certificate chain, PEM (TlsCert; as libpcap's rpcapd -X)
    #[arg(short = 'X', long = "tls-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (MetricsListen;
    /// default: no endpoint). Read at start: a reload does not move it
    #[arg(long = "metrics-listen", value_name = "ADDR:PORT", value_parser = metrics_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Unix socket where the agent answers `xrpcapd status`, and where
    /// `xrpcapd status` asks (StatusSocket; `none`: no socket; default
    /// /run/xrpcapd/status.sock when /run/xrpcapd exists and is writable).
    /// Read at start: a reload does not move it
    #[arg(long = "status-socket", value_name = "PATH", value_parser = status_socket, global = true)]
    pub status_socket: Option<StatusSocket>,

    /// off, optional or required (TlsMode; default required with a certificate)
    #[arg(long = "tls-mode", value_name = "MODE", value_parser = tls_mode)]
    pub tls_mode: Option<TlsMode>,

    /// Require client certificates signed by these CAs, PEM (TlsClientCa)
    #[arg(long = "tls-client-ca", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Read a password on standard input, print its argon2id hash for a
    /// `User = NAME HASH` line, and exit
    #[arg(long = "hash-password")]
    pub hash_password: bool,

    /// Debug logging (to stderr, or to syslog with -L)
    #[arg(short = 'D', long = "debug")]
    pub debug: bool,

    /// Validate the configuration, print the effective configuration (files, environment and
    /// flags, each key with the source of its value) and exit
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// List interfaces with addresses and flags, as a sensor sees them in FINDALLIF, and exit
    #[arg(long = "list-interfaces")]
    pub list_interfaces: bool,
}

/// What xrpcapd does instead of serving.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Print the running agent's sensor slots, captures, passive listeners
    /// and configuration warnings (from its status socket, --status-socket
    /// or StatusSocket in -f FILE), then exit; exit status 1 when no agent
    /// answers
    Status,
}

impl Cli {
    /// Whether a flag asks for passive listening explicitly.
    pub fn passive_requested(&self) -> bool {
        self.bind.is_some() || self.port.is_some() || self.ipv4 || self.allow.is_some()
    }

    /// Whether a flag turns passive mode on over `Passive = no`: the
    /// passive flags and `-n` (as the references run passive mode).
    pub fn passive_flag(&self) -> bool {
        self.passive_requested() || self.null_auth
    }

    /// Inetd mode: bare `-i` (libpcap) or `--inetd`.
    pub fn inetd_mode(&self) -> bool {
        self.inetd || matches!(self.interface, Some(None))
    }

    /// The interface of `-i IFNAME` (ExtraHop).
    pub fn preselected(&self) -> Option<&str> {
        self.interface.as_ref()?.as_deref()
    }

    /// `-S` means TLS (libpcap) with `-K`/`-X`, stats logging (ExtraHop) without.
    fn s_means_tls(&self) -> bool {
        self.log_stats && (self.tls_key.is_some() || self.tls_cert.is_some())
    }

    /// The nice value `-e` asks for (its first, the capture thread's).
    pub fn nice_value(&self) -> Option<i32> {
        self.nice.map(|(capture, _)| capture)
    }

    /// One line for each reference flag xrpcapd accepts but does otherwise
    /// or not at all: logged at start, printed by `--check-config`.
    pub fn notices(&self) -> Vec<String> {
        let mut n = Vec::new();
        if let Some(size) = self.udpstr_size.filter(|&s| s > MAX_UDPSTR_SIZE) {
            n.push(format!(
                "-t {size}: clamped to {MAX_UDPSTR_SIZE}, the largest udpstr datagram (as ExtraHop's rpcapd)"
            ));
        }
        if let Some(size) = self.ring_size.filter(|&s| s < MIN_RING_SIZE) {
            n.push(format!(
                "-z {size}: raised to {MIN_RING_SIZE} bytes, the smallest capture ring"
            ));
        }
        if let Some(mb) = self.ring_mb {
            n.push(format!(
                "-m {mb}: ignored: xrpcapd has no ring between capture and send threads \
                 (one worker sends from the capture ring; -z/RingSize sizes it)"
            ));
        }
        if let Some(k) = self.ring_packets {
            n.push(format!(
                "-k {k}: ignored: xrpcapd has no ring between capture and send threads \
                 (one worker sends from the capture ring; -z/RingSize sizes it)"
            ));
        }
        if self.blocking_udp {
            n.push(
                "-g: ignored: the data socket never blocks the capture; a full send buffer \
                 counts as drops (-u/SendBuffer sizes it)"
                    .into(),
            );
        }
        match self.cpu {
            Some(CpuSpec::Single) => n.push(
                "-c single: xrpcapd captures and sends on one worker thread per capture already"
                    .into(),
            ),
            Some(CpuSpec::Threads(_, send)) if send >= 0 => n.push(format!(
                "-c ...,{send}: the send CPU is ignored: one worker thread captures and sends, \
                 pinned to the capture CPU"
            )),
            _ => {}
        }
        if let Some((_, Some(send))) = self.nice {
            n.push(format!(
                "-e ...,{send}: the send thread's nice value is ignored: one worker thread \
                 captures and sends, at the capture thread's"
            ));
        }
        if self.compression {
            n.push("-C: ignored: TLS compression leaks secrets (CRIME) and rustls has none".into());
        }
        n
    }

    /// Overrides `cfg` with the flags given.
    pub fn apply(&self, cfg: &mut Config) {
        cfg.active_clients
            .extend(self.active.iter().flatten().cloned());
        if let Some(name) = self.preselected() {
            for c in cfg
                .active_clients
                .iter_mut()
                .filter(|c| !c.preselect.is_set())
            {
                c.preselect.ifname = Some(name.to_string());
            }
        }
        if let Some(d) = &self.decap {
            for c in cfg.active_clients.iter_mut().filter(|c| c.decap.is_none()) {
                c.decap = Some(d.clone());
            }
        }
        cfg.tunnel_clients
            .extend(self.tunnel_clients.iter().cloned());
        if let Some(name) = self.preselected() {
            for t in cfg.tunnel_clients.iter_mut().filter(|t| t.ifname.is_none()) {
                t.ifname = Some(name.to_string());
            }
        }
        cfg.null_auth |= self.null_auth;
        // Flags over the files: -v wins, then a passive flag over `Passive = no`.
        if self.active_only {
            cfg.active_only = true;
        } else if self.passive_flag() {
            cfg.active_only = false;
        }
        cfg.syslog |= self.syslog;
        if self.s_means_tls() {
            cfg.tls.mode = Some(TlsMode::Required);
        } else {
            cfg.log_stats |= self.log_stats;
        }
        cfg.capture.dry_run |= self.dry_run;
        if let Some(s) = self.summary_interval {
            cfg.summary_interval_secs = s;
        }
        if let Some(a) = self.metrics_listen {
            cfg.metrics_listen = Some(a);
        }
        if let Some(s) = &self.status_socket {
            cfg.status_socket = s.clone();
        }
        if let Some(s) = self.udpstr_size {
            cfg.udpstr_size = s.min(MAX_UDPSTR_SIZE);
        }
        if let Some(r) = self.ring_size {
            cfg.capture.ring_size = r.max(MIN_RING_SIZE);
        }
        match self.cpu {
            Some(CpuSpec::SingleOn(cpu) | CpuSpec::Threads(cpu, _)) if cpu >= 0 => {
                cfg.capture.worker_cpus = vec![cpu as usize];
            }
            Some(_) => cfg.capture.worker_cpus.clear(),
            None => {}
        }
        if let Some(b) = self.send_buffer {
            cfg.capture.send_buffer = b;
        }
        if let Some(b) = &self.bind {
            cfg.passive.bind = Some(b.clone());
        }
        if let Some(p) = self.port {
            cfg.passive.port = p;
        }
        cfg.passive.ipv4_only |= self.ipv4;
        if let Some(l) = &self.allow {
            cfg.passive.clients.extend(
                l.split([',', ' ', ';'])
                    .filter(|h| !h.is_empty())
                    .map(String::from),
            );
        }
        if let Some(k) = &self.tls_key {
            cfg.tls.key = Some(k.clone());
        }
        if let Some(c) = &self.tls_cert {
            cfg.tls.cert = Some(c.clone());
        }
        if let Some(m) = self.tls_mode {
            cfg.tls.mode = Some(m);
        }
        if let Some(c) = &self.tls_client_ca {
            cfg.tls.client_ca = Some(c.clone());
        }
        if self.debug {
            cfg.log_level = log::LevelFilter::Debug;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xrpcapd").chain(args.iter().copied()))
    }

    #[test]
    fn reference_short_flags() {
        let c = cli(&[
            "-f",
            "/etc/rpcapd.ini",
            "-a",
            "10.0.0.1,2003,s2,DEFAULT",
            "-n",
            "-v",
            "-d",
            "-L",
            "-i",
            "eth1",
            "-t",
            "0",
            "-u",
            "1M",
            "-S",
            "-y",
            "-b",
            "0.0.0.0",
            "-p",
            "2002",
            "-4",
            "-l",
            "a,b",
            "-D",
        ])
        .unwrap();
        let mut cfg = Config::default();
        cfg.active_clients
            .push(values::parse_active_client("s3, 2003, ifaddr=10.0.0.0/8").unwrap());
        c.apply(&mut cfg);
        assert_eq!(c.config, Some(PathBuf::from("/etc/rpcapd.ini")));
        assert_eq!(cfg.active_clients.len(), 3);
        // -i preselects for clients without a preselection of their own.
        assert_eq!(cfg.active_clients[0].preselect.ifname, None);
        assert_eq!(
            cfg.active_clients[1].preselect.ifname.as_deref(),
            Some("eth1")
        );
        assert_eq!(cfg.active_clients[2].port, 2003);
        assert!(
            cfg.null_auth && cfg.active_only && cfg.syslog && cfg.log_stats && cfg.capture.dry_run
        );
        assert_eq!(cfg.udpstr_size, 0);
        assert_eq!(cfg.capture.send_buffer, 1 << 20);
        assert_eq!(cfg.passive.bind.as_deref(), Some("0.0.0.0"));
        assert!(cfg.passive.ipv4_only);
        assert_eq!(cfg.passive.clients, vec!["a", "b"]);
        assert_eq!(cfg.log_level, log::LevelFilter::Debug);
        assert!(c.passive_requested());
    }

    #[test]
    fn long_forms_and_own_flags() {
        let c = cli(&[
            "--active",
            "h,1",
            "--active",
            "g,2",
            "--check-config",
            "--list-interfaces",
        ])
        .unwrap();
        assert_eq!(c.active.iter().flatten().count(), 2);
        assert!(c.check_config && c.list_interfaces);
        assert!(!c.passive_requested());
    }

    #[test]
    fn passive_key_and_flags_precedence() {
        let from = |ini: &str, args: &[&str]| {
            let mut cfg = Config::parse(ini, "t.ini").unwrap().config;
            cli(args).unwrap().apply(&mut cfg);
            cfg.listens()
        };
        // Absent: passive unless -v (the references' rule).
        assert!(from("", &[]));
        assert!(!from("", &["-v"]));
        // `Passive = no` is -v; yes is the default spelled out.
        assert!(!from("Passive = no\n", &[]));
        assert!(from("Passive = YES\n", &[]));
        // -v beats `Passive = yes`.
        assert!(!from("Passive = yes\n", &["-v"]));
        // Every explicit passive flag beats `Passive = no`.
        for flag in [
            &["-b", "127.0.0.1"][..],
            &["-p", "2002"],
            &["-4"],
            &["-l", "h"],
            &["-n"],
        ] {
            assert!(from("Passive = no\n", flag), "{flag:?}");
            let mut with_v = flag.to_vec();
            with_v.push("-v");
            assert!(!from("Passive = no\n", &with_v), "{with_v:?}");
        }
        // Flags that say nothing about passive mode leave it alone.
        assert!(!from("Passive = no\n", &["-a", "h,1", "-D", "-L"]));
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let e = cli(&["-t", "12"]).unwrap_err().to_string();
        assert!(e.contains("expected 0 or 29..=65000"), "{e}");
        let e = cli(&["-a", "host,x"]).unwrap_err().to_string();
        assert!(e.contains("expected a port"), "{e}");
        let e = cli(&["-c", "two"]).unwrap_err().to_string();
        assert!(e.contains("expected single, CPU"), "{e}");
        let e = cli(&["-e", "-21"]).unwrap_err().to_string();
        assert!(e.contains("-20..=19"), "{e}");
        let e = cli(&["-u", "x"]).unwrap_err().to_string();
        assert!(e.contains("expected a byte count"), "{e}");
    }

    /// `status` is a subcommand; `--status-socket` goes before or after it,
    /// and the references' letters keep their values (`-s status` is a file).
    #[test]
    fn status_subcommand_and_socket_flag() {
        let c = cli(&["status"]).unwrap();
        assert_eq!(c.command, Some(Command::Status));
        assert_eq!(c.status_socket, None);
        for args in [
            &["status", "--status-socket", "/tmp/s.sock"][..],
            &["--status-socket", "/tmp/s.sock", "status"],
        ] {
            let c = cli(args).unwrap();
            assert_eq!(c.command, Some(Command::Status), "{args:?}");
            assert_eq!(
                c.status_socket,
                Some(StatusSocket::Path("/tmp/s.sock".into())),
                "{args:?}"
            );
        }
        let c = cli(&["-s", "status", "--status-socket", "none"]).unwrap();
        assert_eq!(c.command, None);
        assert_eq!(c.save_config, Some(PathBuf::from("status")));
        let mut cfg = Config::default();
        c.apply(&mut cfg);
        assert_eq!(cfg.status_socket, StatusSocket::Off);
        let c = cli(&["-i", "status"]).unwrap();
        assert_eq!(c.preselected(), Some("status"));
        assert!(cli(&["help"]).is_err());
    }

    #[test]
    fn help_documents_every_flag() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for f in [
            "-f",
            "-a",
            "-n",
            "-v",
            "-d",
            "-L",
            "-i",
            "-t",
            "-u",
            "-S",
            "-y",
            "-b",
            "-p",
            "-4",
            "-l",
            "-D",
            "--check-config",
            "--config-dir",
            "--list-interfaces",
            "-K",
            "-X",
            "--tls-mode",
            "--tls-client-ca",
            "--hash-password",
            "--pid-file",
            "--status-socket",
            "--inetd",
            "-z",
            "-m",
            "-k",
            "-g",
            "-c",
            "-e",
            "-C",
            "-s",
        ] {
            assert!(help.contains(f), "{f} missing from --help");
        }
        assert!(help.contains("inetd mode"));
    }

    #[test]
    fn active_list_defaults_missing_ports_as_the_references() {
        let c = cli(&["-a", "h1", "-a", "h1,4000,h2", "-a", "h3;DEFAULT h4"]).unwrap();
        let got: Vec<(String, u16)> = c
            .active
            .iter()
            .flatten()
            .map(|a| (a.host.clone(), a.port))
            .collect();
        let want = [
            ("h1", 2003),
            ("h1", 4000),
            ("h2", 2003),
            ("h3", 2003),
            ("h4", 2003),
        ];
        assert_eq!(got.len(), want.len());
        for ((h, p), (wh, wp)) in got.iter().zip(want) {
            assert_eq!((h.as_str(), *p), (wh, wp));
        }
    }

    #[test]
    fn bare_i_is_inetd_and_i_ifname_preselects() {
        for args in [
            &["-i"][..],
            &["-i", "-n"],
            &["-n", "-i", "-f", "x.ini"],
            &["--inetd"],
        ] {
            let c = cli(args).unwrap();
            assert!(c.inetd_mode(), "{args:?}");
            assert_eq!(c.preselected(), None, "{args:?}");
        }
        for args in [
            &["-i", "eth0"][..],
            &["-ieth0"],
            &["--interface", "eth0", "-n"],
        ] {
            let c = cli(args).unwrap();
            assert!(!c.inetd_mode(), "{args:?}");
            assert_eq!(c.preselected(), Some("eth0"), "{args:?}");
        }
    }

    #[test]
    fn decap_flag_fills_the_sensors_without_their_own() {
        let mut cfg = Config::default();
        cfg.active_clients
            .push(values::parse_active_client("s0, 2003, decap=gre:7").unwrap());
        cli(&["-a", "s1,2003", "--decap", "vxlan:100@10.0.0.0/8"])
            .unwrap()
            .apply(&mut cfg);
        let d: Vec<String> = cfg
            .active_clients
            .iter()
            .map(|c| c.decap.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(d, ["gre:7", "vxlan:100@10.0.0.0/8"]);
        let e = cli(&["--decap", "vxlan:99999999"]).unwrap_err().to_string();
        assert!(e.contains("no vxlan id"), "{e}");
    }

    #[test]
    fn s_is_tls_with_a_key_or_certificate_and_stats_without() {
        let applied = |args: &[&str]| {
            let mut cfg = Config::default();
            cli(args).unwrap().apply(&mut cfg);
            cfg
        };
        let cfg = applied(&["-S"]);
        assert!(cfg.log_stats);
        assert_eq!(cfg.tls.mode, None);
        for tls in [&["-S", "-K", "k.pem"][..], &["-X", "c.pem", "-S"]] {
            let cfg = applied(tls);
            assert!(!cfg.log_stats, "{tls:?}");
            assert_eq!(cfg.tls.mode, Some(TlsMode::Required), "{tls:?}");
        }
    }

    #[test]
    fn extrahop_tuning_flags_map_or_notice() {
        let applied = |args: &[&str]| {
            let c = cli(args).unwrap();
            let mut cfg = Config::default();
            cfg.capture.worker_cpus = vec![7];
            c.apply(&mut cfg);
            (cfg, c.notices().join("\n"))
        };
        // -t above 65000 is clamped, with a notice.
        let (cfg, n) = applied(&["-t", "70000"]);
        assert_eq!(cfg.udpstr_size, MAX_UDPSTR_SIZE);
        assert!(n.contains("-t 70000: clamped to 65000"), "{n}");
        let (cfg, n) = applied(&["-t", "1400"]);
        assert_eq!((cfg.udpstr_size, n.as_str()), (1400, ""));
        // -z is RingSize, raised to the floor.
        let (cfg, n) = applied(&["-z", "8M"]);
        assert_eq!((cfg.capture.ring_size, n.as_str()), (8 << 20, ""));
        let (cfg, n) = applied(&["-z", "1000"]);
        assert_eq!(cfg.capture.ring_size, MIN_RING_SIZE);
        assert!(n.contains("raised to 65536"), "{n}");
        // -c pins to the capture CPU; single and -1 unpin.
        assert_eq!(applied(&["-c", "3"]).0.capture.worker_cpus, vec![3]);
        let (cfg, n) = applied(&["-c", "1,0"]);
        assert_eq!(cfg.capture.worker_cpus, vec![1]);
        assert!(n.contains("send CPU is ignored"), "{n}");
        let (cfg, n) = applied(&["-c", "-1,-1"]);
        assert!(cfg.capture.worker_cpus.is_empty());
        assert_eq!(n, "");
        let (cfg, n) = applied(&["-c", "single"]);
        assert!(cfg.capture.worker_cpus.is_empty());
        assert!(n.contains("one worker thread"), "{n}");
        assert_eq!(applied(&["-y"]).0.capture.worker_cpus, vec![7]);
        // -e: the capture thread's value.
        let c = cli(&["-e", "-15,10"]).unwrap();
        assert_eq!(c.nice_value(), Some(-15));
        assert!(c.notices().join("").contains("-e ...,10"));
        assert_eq!(cli(&["-e", "5"]).unwrap().nice_value(), Some(5));
        // Accepted, with a notice each.
        for (flag, text) in [
            (&["-m", "100"][..], "-m 100: ignored"),
            (&["-k", "4096"], "-k 4096: ignored"),
            (&["-g"], "-g: ignored"),
            (&["-C"], "-C: ignored"),
        ] {
            let (cfg, n) = applied(flag);
            assert_eq!(cfg, {
                let mut d = Config::default();
                d.capture.worker_cpus = vec![7];
                d
            });
            assert!(n.contains(text), "{flag:?}: {n}");
        }
    }
}
