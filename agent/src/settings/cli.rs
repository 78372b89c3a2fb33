//! Command-line flags: those of libpcap's and ExtraHop's rpcapd, with long
//! forms, plus xrpcapd's own. Flags override the configuration file.

use std::path::PathBuf;

use clap::Parser;

use super::model::{ActiveClient, Config, TlsMode, MIN_SEND_BUFFER};
use super::values;

// clap value parsers: the config file's parsers, with the same wording.
fn udpstr_size(s: &str) -> Result<usize, String> {
    values::parse_udpstr_size(s).map_err(|e| format!("expected {e}"))
}
fn send_buffer(s: &str) -> Result<usize, String> {
    values::parse_bytes(s, MIN_SEND_BUFFER).map_err(|e| format!("expected {e}"))
}
fn tls_mode(s: &str) -> Result<TlsMode, String> {
    values::parse_tls_mode(s).map_err(|e| format!("expected {e}"))
}
fn active_list(s: &str) -> Result<Vec<ActiveClient>, String> {
    values::parse_active_list(s).map_err(|e| format!("expected {e}"))
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
SIGHUP reloads the file; SIGTERM/SIGINT stop every capture and exit."
)]
pub struct Cli {
    /// Configuration file (rpcapd.ini syntax, see rpcapd.ini(5)); the drop-ins
    /// rpcapd.d/*.ini beside it are read after it, in lexical order
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Drop-in directory read after -f FILE (its *.ini files, in lexical order;
    /// default: rpcapd.d beside FILE; a missing directory is fine)
    #[arg(long = "config-dir", value_name = "DIR", requires = "config")]
    pub config_dir: Option<PathBuf>,

    /// Sensors to dial (active mode), as ActiveClient lines; port DEFAULT = 2003. Repeatable.
    #[arg(short = 'a', long = "active", value_name = "HOST,PORT[,HOST,PORT...]", value_parser = active_list)]
    pub active: Vec<Vec<ActiveClient>>,

    /// Permit NULL authentication (NullAuthPermit = YES)
    #[arg(short = 'n', long = "null-auth")]
    pub null_auth: bool,

    /// Active mode only: never listen for sensors
    #[arg(short = 'v', long = "active-only")]
    pub active_only: bool,

    /// Accepted for compatibility: xrpcapd never forks and stays in the foreground
    /// (run it under systemd, Type=simple); -d changes nothing else
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Log to syslog (facility daemon) instead of stderr
    #[arg(short = 'L', long = "syslog")]
    pub syslog: bool,

    /// Preselect this interface for every sensor that has no ifname=/ifaddr= of its own:
    /// it is listed first in FINDALLIF and is the only one the sensor may open
    #[arg(short = 'i', long = "interface", value_name = "IFNAME")]
    pub interface: Option<String>,

    /// udpstr datagram payload size, 29..=65000, capped by the path MTU; 0 sends plain PACKET datagrams (UdpStrSize)
    #[arg(short = 't', long = "udpstr-size", value_name = "SIZE", value_parser = udpstr_size)]
    pub udpstr_size: Option<usize>,

    /// UDP socket send buffer in bytes, suffix K/M/G allowed (SendBuffer, default 8M)
    #[arg(short = 'u', long = "send-buffer", value_name = "BYTES", value_parser = send_buffer)]
    pub send_buffer: Option<usize>,

    /// Log the capture counters on every STATS request
    #[arg(short = 'S', long = "log-stats")]
    pub log_stats: bool,

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

    /// Validate the configuration, print the effective configuration (file and flags) and exit
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// List interfaces with addresses and flags, as a sensor sees them in FINDALLIF, and exit
    #[arg(long = "list-interfaces")]
    pub list_interfaces: bool,
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

    /// Overrides `cfg` with the flags given.
    pub fn apply(&self, cfg: &mut Config) {
        cfg.active_clients
            .extend(self.active.iter().flatten().cloned());
        if let Some(name) = &self.interface {
            for c in cfg
                .active_clients
                .iter_mut()
                .filter(|c| !c.preselect.is_set())
            {
                c.preselect.ifname = Some(name.clone());
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
        cfg.log_stats |= self.log_stats;
        cfg.capture.dry_run |= self.dry_run;
        if let Some(s) = self.udpstr_size {
            cfg.udpstr_size = s;
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
        let e = cli(&["-a", "host"]).unwrap_err().to_string();
        assert!(e.contains("expected host,port"), "{e}");
        let e = cli(&["-u", "x"]).unwrap_err().to_string();
        assert!(e.contains("expected a byte count"), "{e}");
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
        ] {
            assert!(help.contains(f), "{f} missing from --help");
        }
        assert!(help.contains("never forks"));
    }
}
