//! The capture side of a session: the opened device, the running capture's
//! filter prefix, the stored sampling, and how a STARTCAP becomes a
//! [`StartRequest`] for the host.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rpcap::bpf::{Insn, Program};
use rpcap::msg::{startcap_flags, Sampling, StartCapReq, Stats};

use super::{Mode, SessionConfig};
use crate::capture::Direction;
use crate::filter::{self, canonical, DataDest, OwnTraffic};
use crate::settings::{CaptureChoice, DecapSpec};

/// Largest snaplen honoured (what clients send at most).
pub const MAX_SNAPLEN: u32 = 262_144;
/// Flush interval when the client asks for a read timeout of 0.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(1000);

/// How the captured packets reach the sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataChannel {
    UdpStr {
        dest: SocketAddr,
        size: usize,
    },
    PlainUdp {
        dest: SocketAddr,
    },
    /// The host connects a TCP data connection to `dest` (active mode, SERVEROPEN).
    TcpConnect {
        dest: SocketAddr,
    },
    /// Passive mode: the host listens on an ephemeral port (reported in
    /// [`Answer::Started`](super::Answer::Started)) and accepts one
    /// connection from `peer` within `timeout`.
    TcpListen {
        peer: IpAddr,
        timeout: Duration,
    },
}

impl std::fmt::Display for DataChannel {
    /// `udpstr to ADDR (N-byte datagrams)`, `UDP to ADDR`, `TCP to ADDR`,
    /// `TCP from HOST (we listen)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataChannel::UdpStr { dest, size } => {
                write!(f, "udpstr to {dest} ({size}-byte datagrams)")
            }
            DataChannel::PlainUdp { dest } => write!(f, "UDP to {dest}"),
            DataChannel::TcpConnect { dest } => write!(f, "TCP to {dest}"),
            DataChannel::TcpListen { peer, .. } => write!(f, "TCP from {peer} (we listen)"),
        }
    }
}

/// A capture the session asks its host to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub ifname: String,
    pub linktype: i32,
    pub snaplen: u32,
    pub promisc: bool,
    /// STARTCAP's INBOUND/OUTBOUND flags.
    pub direction: Direction,
    pub read_timeout: Duration,
    /// Own-traffic exclusion AND local filter AND the sensor's filter: the
    /// capture's one program, validated once here.
    pub filter: Program,
    pub sampling: Sampling,
    pub data: DataChannel,
    /// TLS on the TCP data channel (the daemon is the TLS server).
    pub tls: bool,
    /// Our own connections (already excluded by `filter`; AF_XDP also
    /// leaves them to the host's stack).
    pub own: OwnTraffic,
    /// The session's capture source choice (ActiveClient `capture=`).
    pub capture: Option<CaptureChoice>,
    /// Decapsulation (`decap=`): then `filter` is the program for the inner
    /// frames (local filter AND the sensor's) and the source runs `outer`.
    pub decap: Option<DecapStart>,
    /// Whose capture, as a `key=value` field (`sensor=HOST:PORT`,
    /// `client=ADDR:PORT`) for its summary and final counter lines.
    pub owner: String,
}

/// How a decapsulating capture starts: the tunnel, and the program its
/// source runs on the outer packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecapStart {
    pub spec: DecapSpec,
    /// Own-traffic exclusion AND the tunnel packets, for the interface's
    /// link type. (A passive TCP data channel's port, known only once the
    /// host listens, is not refined into it: no tunnel packet is TCP.)
    pub outer: Program,
}

/// A capture the host runs for this session.
#[derive(Debug)]
pub(super) struct Running {
    /// Exclusion + local filter compiled for this capture, reused by UPDATEFILTER.
    pub prefix: Program,
}

/// A STARTCAP between the host's start and the reply.
#[derive(Debug)]
pub(super) struct Starting {
    pub ifname: String,
    pub linktype: i32,
    pub data: DataChannel,
    pub prefix: Program,
    /// The sensor's own program.
    pub sensor: Vec<Insn>,
}

/// What the session knows of its capture.
#[derive(Debug)]
pub(super) struct CaptureSlot {
    /// The interface of the last successful OPEN and its DLT.
    pub opened: Option<(String, i32)>,
    pub running: Option<Running>,
    /// Counters saved when the last capture stopped.
    pub last_stats: Stats,
    pub sampling: Sampling,
    /// The sensor's last filter (kept when no capture runs).
    pub sensor_filter: Option<Vec<Insn>>,
}

impl Default for CaptureSlot {
    fn default() -> Self {
        CaptureSlot {
            opened: None,
            running: None,
            last_stats: Stats::default(),
            sampling: Sampling {
                method: 0,
                value: 0,
            },
            sensor_filter: None,
        }
    }
}

/// The control connection between `local` and `peer`, as the capture must
/// know it to leave it out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Endpoints {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

impl Endpoints {
    /// Our control connection and the data channel `data`.
    pub fn own_traffic(&self, data: DataDest) -> OwnTraffic {
        OwnTraffic {
            control_local: self.local,
            control_peer: self.peer,
            data,
        }
    }

    /// The own-traffic exclusion and local filter for `data` (the prefix),
    /// and the prefix combined with the sensor's filter.
    pub fn build_filter(
        &self,
        cfg: &SessionConfig,
        linktype: i32,
        data: DataDest,
        sensor: &[Insn],
    ) -> Result<(Program, Program), String> {
        if cfg.decap.is_some() {
            // The sensor's program and the local filter judge the inner
            // frames (Ethernet) in user space.
            return filter::decap_inner_prefix(cfg.local_filter.as_deref())
                .and_then(|prefix| Ok((filter::combine(&prefix, sensor)?, prefix)))
                .map_err(|e| e.to_string());
        }
        filter::prefix(
            linktype,
            &self.own_traffic(data),
            cfg.local_filter.as_deref(),
        )
        .and_then(|prefix| Ok((filter::combine(&prefix, sensor)?, prefix)))
        .map_err(|e| e.to_string())
    }

    /// Where the data goes for STARTCAP `req`, or the error text.
    pub fn data_channel(
        &self,
        cfg: &SessionConfig,
        req: &StartCapReq,
    ) -> Result<DataChannel, String> {
        let dest = SocketAddr::new(canonical(self.peer.ip()), req.portdata);
        if req.flags & startcap_flags::DGRAM != 0 {
            if cfg.tls {
                return Err(
                    "UDP data cannot be protected by TLS: use TCP data with rpcaps://".into(),
                );
            }
            if req.portdata == 0 {
                return Err("UDP data requested without a data port".into());
            }
            return Ok(match cfg.udpstr_size {
                0 => DataChannel::PlainUdp { dest },
                size => DataChannel::UdpStr { dest, size },
            });
        }
        if cfg.mode == Mode::Active || req.flags & startcap_flags::SERVEROPEN != 0 {
            if req.portdata == 0 {
                return Err("TCP data channel requested without a data port".into());
            }
            return Ok(DataChannel::TcpConnect { dest });
        }
        Ok(DataChannel::TcpListen {
            peer: canonical(self.peer.ip()),
            timeout: cfg.data_accept_timeout,
        })
    }

    /// The host's request for STARTCAP `req` on the opened device, and what
    /// the session keeps until the host answers.
    pub fn start_request(
        &self,
        cfg: &SessionConfig,
        (ifname, linktype): (String, i32),
        sampling: Sampling,
        req: StartCapReq,
    ) -> Result<(StartRequest, Starting), String> {
        let data = self.data_channel(cfg, &req)?;
        let data_dest = match &data {
            DataChannel::UdpStr { dest, .. } | DataChannel::PlainUdp { dest } => {
                DataDest::Udp(*dest)
            }
            DataChannel::TcpConnect { dest } => DataDest::Tcp(*dest),
            // Our port is known once the host listens: refined then.
            DataChannel::TcpListen { peer, .. } => DataDest::Tcp(SocketAddr::new(*peer, 0)),
        };
        let (combined, prefix) = self.build_filter(cfg, linktype, data_dest, &req.filter)?;
        let decap = match &cfg.decap {
            Some(spec) => Some(DecapStart {
                spec: spec.clone(),
                outer: filter::decap_outer(linktype, &self.own_traffic(data_dest))
                    .map_err(|e| e.to_string())?,
            }),
            None => None,
        };
        let snaplen = match req.snaplen {
            0 => MAX_SNAPLEN,
            n => n.min(MAX_SNAPLEN),
        };
        let read_timeout = match req.read_timeout_ms {
            0 => DEFAULT_READ_TIMEOUT,
            ms => Duration::from_millis(ms.into()),
        };
        let start = StartRequest {
            ifname: ifname.clone(),
            linktype,
            snaplen,
            promisc: req.flags & startcap_flags::PROMISC != 0,
            direction: Direction::from_startcap_flags(req.flags),
            read_timeout,
            filter: combined,
            sampling,
            data: data.clone(),
            tls: cfg.tls,
            own: self.own_traffic(data_dest),
            capture: cfg.capture,
            decap,
            owner: match &cfg.slot {
                Some(slot) => format!("sensor={slot}"),
                None => format!("client={}", self.peer),
            },
        };
        let starting = Starting {
            ifname,
            linktype,
            data,
            prefix,
            sensor: req.filter,
        };
        Ok((start, starting))
    }
}
