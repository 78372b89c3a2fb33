//! The command line: clap arguments and their translation into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use ipnet::IpNet;
use rpcap::msg::Auth;

use crate::choose::Choice;
use crate::config;
use crate::control;
use crate::filter;
use crate::output::{Format, OutputConfig, StreamTo};
use crate::rotation;
use crate::session::{Direction, SessionConfig};

/// Receive remote packet captures from RPCAP agents and write them to pcap files.
///
/// Agents in active mode (xrpcapd or rpcapd with `-a`/ActiveClient) connect to
/// --listen; passive agents are dialed with --connect. For each agent the sensor
/// authenticates, picks one interface, starts a capture with your filter and
/// writes the packets to DIR/NAME (one file per agent and interface).
///
/// Examples:
///   xrpcap-sensor --out /var/cap --filter 'tcp port 80'
///   xrpcap-sensor --connect 10.0.0.5 --ifaddr 10.0.0.0/24 -w - | wireshark -k -i -
///   xrpcap-sensor -w - | tshark -r -        (every agent, one pcapng stream)
///   xrpcap-sensor -w - | zeek -r -          (libpcap readers: one link type for all)
///   xrpcap-sensor --out /var/cap -C 100 -W 50 -z /usr/local/bin/ship   (tcpdump rotation)
///
/// pcapng output names each interface AGENT/IFNAME (if_name), has the sensor in
/// its section header, an interface statistics block at rotation and at close
/// (the agent's ifrecv/ifdrop/krnldrop/svrcapt as isb_ifrecv/isb_ifdrop/
/// isb_osdrop/isb_filteraccept, the records written as isb_usrdeliv, the
/// sensor's losses in its comment), and a comment plus drop count on the first
/// record after records were lost.
///
/// The final line per capture (stderr, and --stats-file) lists every counter as
/// key=value: packets, bytes, lost (records that did not arrive whole), datagram gaps,
/// duplicates, reordered, malformed, foreign (wrong source), socket_drops, and
/// the agent's own counters from its last STATS reply.
#[derive(Parser, Debug)]
#[command(name = "xrpcap-sensor", version, verbatim_doc_comment)]
pub struct Args {
    /// Address to accept active agents on ("none" to only dial passive agents).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:2003")]
    listen: String,

    /// Dial a passive agent (repeatable; port defaults to 2002).
    #[arg(long = "connect", value_name = "HOST[:PORT]")]
    connect: Vec<String>,

    /// Authenticate as this user (password from --password-file or $XRPCAP_PASSWORD).
    /// Without it, NULL authentication is used.
    #[arg(long)]
    user: Option<String>,

    /// File whose first line is the password for --user.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// Capture the agent's interface with this name.
    #[arg(long, value_name = "NAME")]
    ifname: Option<String>,

    /// Capture the agent's first interface with an address inside this prefix
    /// (e.g. 10.1.0.0/16). Default: the agent's preselected interface, else its
    /// first non-loopback interface that is up.
    #[arg(long, value_name = "CIDR")]
    ifaddr: Option<String>,

    /// Bytes kept of each packet.
    #[arg(long, default_value_t = 262_144)]
    snaplen: u32,

    /// Agent read timeout in ms (how long a partly filled datagram may wait).
    #[arg(long, value_name = "MS", default_value_t = 100)]
    read_timeout: u32,

    /// Do not put the agent's interface in promiscuous mode.
    #[arg(long)]
    no_promisc: bool,

    /// Ask the agent to sample (SETSAMPLING, sent right before STARTCAP):
    /// 'one-of:N' keeps every Nth packet, 'first-after-ms:N' the first packet
    /// after each N ms. The reference rpcapd daemons accept it and ignore it.
    #[arg(long, value_name = "METHOD:N", value_parser = parse_sampling)]
    sampling: Option<rpcap::msg::Sampling>,

    /// Frames the agent captures: 'in' (received), 'out' (sent) or 'inout'
    /// (STARTCAP's INBOUND/OUTBOUND flags, libpcap's pcap_setdirection).
    #[arg(long, value_enum, default_value_t = Direction::Inout)]
    direction: Direction,

    /// Capture filter, a tcpdump expression (e.g. 'tcp port 80').
    #[arg(long, value_name = "EXPR", conflicts_with = "filter_file")]
    filter: Option<String>,

    /// Read the filter expression from a file; SIGHUP re-reads it and pushes it
    /// to every running capture.
    #[arg(long, value_name = "FILE")]
    filter_file: Option<PathBuf>,

    /// UDP ports for data, one per capture.
    #[arg(long, value_name = "A-B", default_value = "2003-2034")]
    udp_ports: String,

    /// One UDP port for the data of every capture (one firewall rule for
    /// any number of agents), routed by each agent's source address. One
    /// capture per agent IP uses it at a time; another capture from the
    /// same IP gets a port of --udp-ports.
    #[arg(long, value_name = "PORT", conflicts_with = "tcp_data", value_parser = clap::value_parser!(u16).range(1..))]
    udp_shared_port: Option<u16>,

    /// Receive data over TCP instead of UDP.
    #[arg(long)]
    tcp_data: bool,

    /// Seconds between STATS requests (also the liveness check).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    stats_interval: f64,

    /// Seconds without a reply after which a session is closed (default 3 × --stats-interval).
    #[arg(long, value_name = "SECS")]
    stats_timeout: Option<f64>,

    /// Seconds between the per-agent summary lines.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    summary_interval: f64,

    /// Output format. Default: pcap for files, pcapng for -w (one stream
    /// carrying every capture needs pcapng; a pcap stream takes one capture).
    #[arg(long, value_enum)]
    format: Option<Format>,

    /// Directory for capture files.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,

    /// File name template: {agent} (agent IP, with _PORT when several agents share
    /// an IP), {iface}, {time} (UTC yyyymmddThhmmss), and strftime sequences
    /// (%Y%m%d-%H%M%S …, UTC; a literal % is %%). A file is written as
    /// NAME.part and renamed to NAME once complete. Default
    /// '{agent}-{iface}-{time}.pcap' (.pcapng with --format pcapng).
    #[arg(long, value_name = "TEMPLATE")]
    name: Option<String>,

    /// Write every capture as one pcapng stream, one interface per capture:
    /// '-' is stdout (e.g. into `tshark -r -`), PATH a named pipe (waits for its
    /// reader) or a file (truncated), unix:PATH a unix stream socket the
    /// sensor creates at PATH (mode 0660; a stale socket is replaced, any
    /// other file refused; removed at exit) and waits on for one reader
    /// (e.g. `socat -u UNIX-CONNECT:PATH - | tshark -r -`). When the reader
    /// goes away, as when a pipe's does, the sensor logs it and goes on,
    /// counting what it cannot write as write_errors. Not rotated.
    #[arg(short = 'w', value_name = "-|PATH|unix:PATH")]
    write: Option<PathBuf>,

    // --- Rotation (tcpdump's -C -G -W -z; see docs/getting-started-sensor.md).
    /// Start a new file when the current one reaches SIZE: millions of bytes
    /// as tcpdump's -C (1 = 1000000 bytes), or N with k, m, g (KiB, MiB, GiB).
    #[arg(short = 'C', long = "rotate-size", value_name = "SIZE", value_parser = rotation::parse_size)]
    rotate_size: Option<u64>,

    /// Start a new file every SECS seconds (tcpdump's -G; put strftime
    /// sequences in --name for distinct names).
    #[arg(short = 'G', long = "rotate-secs", value_name = "SECS")]
    rotate_secs: Option<u64>,

    /// Keep the newest N finished files of each capture and delete older
    /// ones, with -C and with -G (the .part being written is not counted;
    /// unlike tcpdump -G -W, the sensor does not exit after N files).
    #[arg(short = 'W', long = "file-count", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    file_count: Option<u64>,

    /// Run CMD FILE for each finished file (tcpdump's -z; no shell; at most
    /// 4 at once, failures counted in post_rotate_failures).
    #[arg(short = 'z', long = "post-rotate", value_name = "CMD")]
    post_rotate: Option<PathBuf>,

    /// Stop writing (records counted as disk_floor_drops) while the output
    /// directory's file system has less free space than this: N% of its
    /// size, or a size as -C takes it (e.g. 2g); 0 turns it off. Checked at
    /// each new file and every 16 MiB a capture writes.
    #[arg(long, value_name = "N%|SIZE", default_value = "1%", value_parser = rotation::parse_min_free)]
    min_free: rotation::MinFree,
    // --- end of rotation
    /// Exit after writing this many packets (all agents together).
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    /// Exit after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,

    /// At exit, write the final line of every capture to this file.
    #[arg(long, value_name = "FILE")]
    stats_file: Option<PathBuf>,

    /// Serve Prometheus metrics (GET /metrics) on this address, e.g.
    /// 127.0.0.1:9464. Off unless given. See docs/metrics.md.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_metrics_listen)]
    metrics_listen: Option<SocketAddr>,

    // --- Access control and live TAP output (sensor-tap) ---
    /// Accept active agents only from this address range (CIDR or one
    /// address; repeatable, IPv4 and IPv6). An agent from elsewhere is closed
    /// before any RPCAP message, logged once per address and counted
    /// (agents_refused in the last line, xrpcap_sensor_agents_refused_total).
    /// Default: any address (a WARN says so when --listen is not loopback).
    /// Agents dialed with --connect are not checked.
    #[arg(long, value_name = "CIDR", value_parser = parse_allow)]
    allow: Vec<IpNet>,

    /// Write every received Ethernet frame onto TAP interface NAME (created
    /// at start, up, removed at exit), for tools that capture from an
    /// interface: `zeek -i NAME`, `suricata -i NAME`, `tcpdump -i NAME`.
    /// Files or -w are written as well (`-w /dev/null` for the TAP only).
    /// Frames of other link types are counted (tap_skipped), frames the
    /// kernel does not take at once are dropped and counted (tap_drops).
    /// Needs CAP_NET_ADMIN and /dev/net/tun.
    #[arg(long, value_name = "NAME", value_parser = parse_tap_name, conflicts_with = "tap_per_agent")]
    tap: Option<String>,

    /// One TAP interface per agent, named PREFIX + the agent's slot number
    /// (PREFIX at most 10 bytes, e.g. xtap → xtap0, xtap1…), created when
    /// its Ethernet capture starts and removed when the agent's session
    /// ends (a slot number is reused by the next agent).
    #[arg(long, value_name = "PREFIX", value_parser = parse_tap_prefix)]
    tap_per_agent: Option<String>,

    // --- TLS (rpcaps://, sensor-tls) ---
    /// Speak TLS (rpcaps://) to every agent, active and passive, on the
    /// control and the TCP data connections, and accept an agent only with a
    /// certificate chaining to a certificate of this PEM file, valid for its
    /// name (--tls-name). The agent is the TLS server in both modes. Needs
    /// --tcp-data: UDP data cannot be TLS (the agent refuses it).
    #[arg(long, value_name = "FILE", requires = "tcp_data")]
    tls_ca: Option<PathBuf>,

    /// Speak TLS (as --tls-ca) and accept an agent only if its certificate
    /// or its public key is one of these pins (repeatable, or several
    /// separated by ';'). sha256//BASE64 pins the public key, as curl's
    /// --pinnedpubkey: the base64 of the SHA-256 of its DER
    /// SubjectPublicKeyInfo (`openssl x509 -in agent.pem -pubkey -noout |
    /// openssl pkey -pubin -outform der | openssl dgst -sha256 -binary |
    /// base64`); it still holds when the certificate is re-issued for the
    /// same key. 64 hex digits (colons allowed, as `openssl x509 -noout
    /// -fingerprint -sha256` prints them) pin the whole certificate (DER).
    /// With --tls-ca as well, both must hold; alone, the certificate's
    /// issuer, name and dates are not checked.
    #[arg(
        long,
        value_name = "PIN",
        value_parser = crate::tls::parse_pin,
        value_delimiter = ';',
        requires = "tcp_data"
    )]
    tls_pin: Vec<crate::tls::Pin>,

    /// The name the agent's certificate must carry for --tls-ca (DNS name or
    /// address). Default: the host of --connect, or the address an active
    /// agent connected from.
    #[arg(long, value_name = "NAME")]
    tls_name: Option<String>,

    /// Client certificate (PEM chain) to present to agents that require one
    /// (xrpcapd's TlsClientCa); with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Receive threads: N event loops, each with its share of the agents
    /// (dealt by the agent's IP address through SO_REUSEPORT on --listen
    /// and --udp-shared-port; --connect targets round-robin), so N cores
    /// receive. 1 (default): one loop. Worth it when one core is busy
    /// receiving (many agents or > ~1 M datagrams/s): at most one per core
    /// left after the writer thread. Not with --count, -w or
    /// --tap-per-agent. See docs/DESIGN.md.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    receive_threads: u16,

    /// More logging: -v debug, -vv trace (default info; RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Runs the sensor with the command line's settings until it stops.
pub fn run(args: Args) -> Result<()> {
    let cfg = config(args)?;
    let mut sensor = control::Sensor::new(cfg)?;
    sensor.handle_signals()?;
    sensor.run()
}

fn secs(v: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow!("{what}: {v} is not a valid number of seconds"))
}

/// The settings `a` asks for; reads the password and filter files and
/// creates the output directory.
pub fn config(a: Args) -> Result<config::Config> {
    let listen = parse_listen(&a.listen)?;
    let ifaddr = a.ifaddr.as_deref().map(parse_ifaddr).transpose()?;
    let auth = match &a.user {
        None => Auth::Null,
        Some(user) => {
            let password = match &a.password_file {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read --password-file {}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
                None => std::env::var("XRPCAP_PASSWORD").map_err(|_| {
                    anyhow!("--user needs a password: --password-file FILE or $XRPCAP_PASSWORD")
                })?,
            };
            Auth::Password {
                user: user.as_bytes().to_vec(),
                password: password.into_bytes(),
            }
        }
    };
    let udp_ports = parse_range(&a.udp_ports)?;
    if a.receive_threads > 1 {
        // Each needs one place for all receive threads: one packet budget,
        // one stream's interface numbering, TAP names by slot number.
        for (given, what) in [
            (a.count.is_some(), "--count"),
            (a.write.is_some(), "-w"),
            (a.tap_per_agent.is_some(), "--tap-per-agent"),
        ] {
            if given {
                bail!("{what} needs --receive-threads 1 (one receive thread)");
            }
        }
    }
    if a.snaplen == 0 || a.snaplen > 262_144 {
        bail!("--snaplen must be 1..=262144");
    }
    // Check the filter now, so that a typo is an error at start and not a
    // refused capture per agent. Ethernet is what nearly every agent returns.
    let filter_text = match &a.filter_file {
        Some(f) => Some(filter::read_file(f)?),
        None => a.filter.clone(),
    };
    rpcap::bpf::libpcap::compile_capture(filter_text.as_deref(), 1, a.snaplen)?;
    let stream = match a.write.as_deref() {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(StreamTo::Stdout),
        Some(p) if p.as_os_str().is_empty() => bail!("-w needs '-' (stdout) or a path"),
        Some(p) => match p.to_str().and_then(|s| s.strip_prefix("unix:")) {
            Some("") => bail!("-w unix: needs a path (unix:/run/xrpcap.sock)"),
            Some(s) => Some(StreamTo::Unix(PathBuf::from(s))),
            None => Some(StreamTo::Path(p.to_path_buf())),
        },
    };
    let format = a.format.unwrap_or(if stream.is_some() {
        Format::Pcapng
    } else {
        Format::Pcap
    });
    if stream.is_none() {
        std::fs::create_dir_all(&a.out)
            .with_context(|| format!("cannot create output directory {}", a.out.display()))?;
    }
    let template = a.name.clone().unwrap_or_else(|| {
        match format {
            Format::Pcap => "{agent}-{iface}-{time}.pcap",
            Format::Pcapng => "{agent}-{iface}-{time}.pcapng",
        }
        .to_string()
    });
    rotation::check_template(&template).map_err(|e| anyhow!("--name: {e}"))?;
    let stats_interval = secs(a.stats_interval, "--stats-interval")?;
    let stats_timeout = match a.stats_timeout {
        Some(v) => secs(v, "--stats-timeout")?,
        None => stats_interval * 3,
    };
    let connect = a.connect.iter().map(|c| connect_target(c)).collect();
    Ok(config::Config {
        listen,
        connect,
        session: SessionConfig {
            auth,
            choice: Choice {
                ifname: a.ifname.clone(),
                ifaddr,
            },
            snaplen: a.snaplen,
            read_timeout_ms: a.read_timeout,
            promisc: !a.no_promisc,
            sampling: a.sampling,
            direction: a.direction,
        },
        filter: a.filter.clone(),
        filter_file: a.filter_file.clone(),
        udp_ports,
        udp_shared_port: a.udp_shared_port,
        tcp_data: a.tcp_data,
        stats_interval,
        stats_timeout,
        summary_interval: secs(a.summary_interval, "--summary-interval")?,
        output: OutputConfig {
            format,
            dir: a.out.clone(),
            template,
            rotate_bytes: a.rotate_size,
            rotate_age: a.rotate_secs.map(Duration::from_secs),
            stream,
            files: std::sync::Arc::new(rotation::Files::new(
                a.file_count.map(|n| n as usize),
                a.post_rotate.clone(),
                a.min_free,
            )),
        },
        count: a.count,
        duration: a.duration.map(|d| secs(d, "--duration")).transpose()?,
        stats_file: a.stats_file.clone(),
        metrics_listen: a.metrics_listen,
        allow: a.allow.clone(),
        tap: a.tap.clone(),
        tap_per_agent: a.tap_per_agent.clone(),
        receive_threads: usize::from(a.receive_threads),
        tls: crate::tls::Tls::new(&crate::tls::Options {
            ca: a.tls_ca.clone(),
            pins: a.tls_pin.clone(),
            name: a.tls_name.clone(),
            cert: a.tls_cert.clone(),
            key: a.tls_key.clone(),
        })?,
    })
}

/// `--listen`: `ADDR:PORT`, or `none` (no listener).
pub fn parse_listen(s: &str) -> Result<Option<SocketAddr>> {
    match s {
        "none" => Ok(None),
        s => s
            .parse::<SocketAddr>()
            .map(Some)
            .map_err(|_| anyhow!("--listen: '{s}' is not ADDR:PORT (e.g. 0.0.0.0:2003)")),
    }
}

/// `--metrics-listen`: `ADDR:PORT` (a bad value is a configuration error, exit 78).
pub fn parse_metrics_listen(s: &str) -> std::result::Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("'{s}' is not ADDR:PORT (e.g. 127.0.0.1:9464)"))
}

/// `--ifaddr`: a CIDR prefix, or one address (a /32 or /128).
pub fn parse_ifaddr(s: &str) -> Result<IpNet> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| anyhow!("--ifaddr: '{s}' is not an address or CIDR prefix (e.g. 10.1.0.0/16)"))
}

/// `--allow`: a CIDR prefix, or one address (a /32 or /128).
pub fn parse_allow(s: &str) -> std::result::Result<IpNet, String> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{s}' is not an address or CIDR prefix (e.g. 10.1.0.0/16)"))
}

/// `--tap NAME`: an interface name (1..=15 bytes, no '/', white space or NUL).
pub fn parse_tap_name(s: &str) -> std::result::Result<String, String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && !s
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not an interface name (1-15 bytes, no '/' or spaces)"
        ))
    }
}

/// `--tap-per-agent PREFIX`: room for 5 digits in an interface name.
pub fn parse_tap_prefix(s: &str) -> std::result::Result<String, String> {
    parse_tap_name(s)?;
    if s.len() > crate::tap::MAX_PREFIX || s.contains('%') {
        return Err(format!(
            "'{s}': a TAP prefix has at most {} bytes and no '%'",
            crate::tap::MAX_PREFIX
        ));
    }
    Ok(s.to_string())
}

/// `--connect HOST[:PORT]` as `host:port` for the dialer (port 2002 when
/// none is given; a bare IPv6 address gets its brackets).
pub fn connect_target(c: &str) -> String {
    if c.parse::<SocketAddr>().is_ok()
        || c.rsplit_once(':')
            .is_some_and(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok())
    {
        c.to_string()
    } else if c.contains(':') && !c.starts_with('[') {
        format!("[{c}]:2002")
    } else {
        format!("{c}:2002")
    }
}

/// `one-of:N` or `first-after-ms:N` (SETSAMPLING methods 1 and 2).
pub fn parse_sampling(s: &str) -> std::result::Result<rpcap::msg::Sampling, String> {
    let bad = || format!("'{s}' is not one-of:N or first-after-ms:N (N a positive integer)");
    let (method, value) = s.split_once(':').ok_or_else(bad)?;
    let method = match method {
        "one-of" => 1,
        "first-after-ms" => 2,
        _ => return Err(bad()),
    };
    match value.parse::<u32>() {
        Ok(value) if value > 0 => Ok(rpcap::msg::Sampling { method, value }),
        _ => Err(bad()),
    }
}

/// `A-B` (or a single port `A`).
pub fn parse_range(s: &str) -> Result<(u16, u16)> {
    let bad = || anyhow!("--udp-ports: '{s}' is not a port range like 2003-2034");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_range("2003-2034").unwrap(), (2003, 2034));
        assert_eq!(parse_range("5000").unwrap(), (5000, 5000));
        assert!(parse_range("10-5").is_err());
        assert!(parse_range("x-5").is_err());
        assert!(parse_range("0-5").is_err());
    }

    #[test]
    fn sampling_flag() {
        let s = parse_sampling("one-of:10").unwrap();
        assert_eq!((s.method, s.value), (1, 10));
        let s = parse_sampling("first-after-ms:250").unwrap();
        assert_eq!((s.method, s.value), (2, 250));
        for bad in ["one-of", "one-of:0", "one-of:-1", "every:3", "one-of:x"] {
            assert!(parse_sampling(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn receive_threads_refuse_what_needs_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let cfg = |args: &[&str]| {
            let mut v = vec!["xrpcap-sensor", "--listen", "none", "--out", out];
            v.extend_from_slice(args);
            config(Args::parse_from(v))
        };
        assert_eq!(cfg(&[]).unwrap().receive_threads, 1);
        assert_eq!(
            cfg(&["--receive-threads", "4", "--tap", "xt0"])
                .unwrap()
                .receive_threads,
            4
        );
        for (flag, val) in [("--count", "5"), ("-w", "-"), ("--tap-per-agent", "xt")] {
            let e = cfg(&["--receive-threads", "2", flag, val]).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{flag} needs --receive-threads 1 (one receive thread)")
            );
            assert!(cfg(&[flag, val]).is_ok(), "{flag} alone");
        }
        assert!(Args::try_parse_from(["xrpcap-sensor", "--receive-threads", "0"]).is_err());
    }

    #[test]
    fn w_streams_pcapng_unless_told_pcap() {
        let out = |args: &[&str]| {
            let mut v = vec!["xrpcap-sensor", "--listen", "none"];
            v.extend_from_slice(args);
            config(Args::parse_from(v)).unwrap().output
        };
        let o = out(&["-w", "-"]);
        assert_eq!(
            (o.format, o.stream),
            (Format::Pcapng, Some(StreamTo::Stdout))
        );
        let o = out(&["-w", "-", "--format", "pcap"]);
        assert_eq!((o.format, o.stream), (Format::Pcap, Some(StreamTo::Stdout)));
        let o = out(&["-w", "/run/x.pipe"]);
        assert_eq!(o.stream, Some(StreamTo::Path("/run/x.pipe".into())));
        let o = out(&["-w", "unix:/run/x.sock"]);
        assert_eq!(o.stream, Some(StreamTo::Unix("/run/x.sock".into())));
        assert_eq!(o.format, Format::Pcapng);
        let o = out(&["-w", "./unix:x"]);
        assert_eq!(o.stream, Some(StreamTo::Path("./unix:x".into())));
        let dir = tempfile::tempdir().unwrap();
        let o = out(&["--out", dir.path().to_str().unwrap()]);
        assert_eq!((o.format, o.stream), (Format::Pcap, None));
    }

    #[test]
    fn udp_shared_port_flag() {
        let parse = |args: &[&str]| {
            let mut v = vec!["xrpcap-sensor", "--listen", "none"];
            v.extend_from_slice(args);
            Args::try_parse_from(v)
        };
        let c = config(parse(&[]).unwrap()).unwrap();
        assert_eq!(c.udp_shared_port, None, "per-capture ports by default");
        let c = config(parse(&["--udp-shared-port", "2004"]).unwrap()).unwrap();
        assert_eq!(c.udp_shared_port, Some(2004));
        assert!(parse(&["--udp-shared-port", "0"]).is_err());
        assert!(parse(&["--udp-shared-port", "2004", "--tcp-data"]).is_err());
    }

    #[test]
    fn tls_pins_of_both_forms_repeated_or_separated() {
        use crate::tls::Pin;
        let parse = |args: &[&str]| {
            let mut v = vec!["xrpcap-sensor", "--listen", "none", "--tcp-data"];
            v.extend_from_slice(args);
            Args::try_parse_from(v)
        };
        let key = "sha256//YhKJKSzoTt2b5FP18fvpHo7fJYqQCjAa3HWY3tvRMwE=";
        let cert = "AB".repeat(32);
        let a = parse(&["--tls-pin", &format!("{key};{cert}")]).unwrap();
        assert!(matches!(
            a.tls_pin[..],
            [Pin::PublicKey(_), Pin::Certificate(_)]
        ));
        let a = parse(&["--tls-pin", key, "--tls-pin", &cert]).unwrap();
        assert_eq!(a.tls_pin.len(), 2);
        assert!(config(a).unwrap().tls.is_some(), "a pin turns TLS on");
        assert!(parse(&["--tls-pin", "sha256//abc"]).is_err());
    }

    /// tcpdump's rotation letters and their long aliases (rotation block).
    #[test]
    fn rotation_flags() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let parse = |args: &[&str]| {
            let mut v = vec!["xrpcap-sensor", "--listen", "none", "--out", d];
            v.extend_from_slice(args);
            Args::try_parse_from(v)
                .map_err(|e| e.to_string())
                .and_then(|a| config(a).map_err(|e| e.to_string()))
                .map(|c| c.output)
        };
        let o = parse(&["-C", "1", "-G", "60", "-W", "3", "-z", "/bin/true"]).unwrap();
        assert_eq!(o.rotate_bytes, Some(1_000_000));
        assert_eq!(o.rotate_age, Some(Duration::from_secs(60)));
        assert_eq!(o.files.keep, Some(3));
        assert_eq!(o.files.post_rotate.as_deref(), Some("/bin/true".as_ref()));
        assert_eq!(o.files.min_free, rotation::MinFree::Percent(1.0));
        let o = parse(&[
            "--rotate-size",
            "2",
            "--rotate-secs",
            "5",
            "--file-count",
            "1",
        ])
        .unwrap();
        assert_eq!(o.rotate_bytes, Some(2_000_000));
        assert_eq!(o.rotate_age, Some(Duration::from_secs(5)));
        assert_eq!(o.files.keep, Some(1));
        let o = parse(&["-C", "10m", "--min-free", "0"]).unwrap();
        assert_eq!(o.rotate_bytes, Some(10 << 20));
        assert_eq!(o.files.min_free, rotation::MinFree::Bytes(0));
        assert!(parse(&["-W", "0"]).is_err());
        assert!(parse(&["-C", "x"]).is_err());
        assert!(parse(&["--min-free", "150%"]).is_err());
        let e = parse(&["--name", "a-%Q.pcap"]).unwrap_err();
        assert!(e.contains("strftime"), "{e}");
        assert!(parse(&["--name", "{agent}-%Y%m%d-100%%.pcap"]).is_ok());
    }

    #[test]
    fn allow_takes_prefixes_and_addresses() {
        assert_eq!(
            parse_allow("10.1.2.3/16").unwrap(),
            "10.1.0.0/16".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_allow("192.0.2.7").unwrap(),
            "192.0.2.7/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_allow("fd00::1").unwrap(),
            "fd00::1/128".parse::<IpNet>().unwrap()
        );
        assert!(parse_allow("10.1/8").is_err());
        let a = Args::parse_from([
            "xrpcap-sensor",
            "--allow",
            "10.0.0.0/8",
            "--allow",
            "::1",
            "--listen",
            "none",
            "-w",
            "-",
        ]);
        assert_eq!(config(a).unwrap().allow.len(), 2);
    }

    #[test]
    fn tap_names_fit_an_interface_name() {
        assert_eq!(parse_tap_name("xtap0").unwrap(), "xtap0");
        for bad in ["", "a/b", "a b", "sixteen-bytes-xx", ".."] {
            assert!(parse_tap_name(bad).is_err(), "{bad}");
        }
        assert!(parse_tap_prefix("xtap").is_ok());
        assert!(parse_tap_prefix("eleven-byte").is_err());
        assert!(parse_tap_prefix("x%d").is_err());
    }

    #[test]
    fn help_parses() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
