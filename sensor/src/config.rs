//! The sensor's settings, as the command line gave them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::output::OutputConfig;
use crate::session::SessionConfig;

/// Everything the event loop and its agents need to know.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Option<SocketAddr>,
    /// Passive agents to dial, as `host:port`.
    pub connect: Vec<String>,
    pub session: SessionConfig,
    pub filter: Option<String>,
    pub filter_file: Option<PathBuf>,
    pub udp_ports: (u16, u16),
    /// `--udp-shared-port`: one UDP port for every capture's data.
    pub udp_shared_port: Option<u16>,
    pub tcp_data: bool,
    pub stats_interval: Duration,
    pub stats_timeout: Duration,
    pub summary_interval: Duration,
    pub output: OutputConfig,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub stats_file: Option<PathBuf>,
    /// `--metrics-listen`: where to serve `GET /metrics` (None: nowhere).
    pub metrics_listen: Option<SocketAddr>,
    /// `--allow`: the ranges active agents may connect from (empty: any).
    pub allow: Vec<ipnet::IpNet>,
    /// `--tap`: one TAP interface for every capture's frames.
    pub tap: Option<String>,
    /// `--tap-per-agent`: the prefix of one TAP interface per agent.
    pub tap_per_agent: Option<String>,
    /// `--tls-ca`/`--tls-pin`: rpcaps:// to every agent (None: plaintext).
    pub tls: Option<crate::tls::Tls>,
    /// `--receive-threads`: event loops, each with its share of the agents.
    pub receive_threads: usize,
}
