//! A capture's data channel, in the kinds the sensor uses, and its reading:
//! - UDP: a port of the configured range, read in recvmmsg batches;
//! - TCP, sensor listening: the agent (which dialed us) must connect within
//!   [`DATA_ACCEPT_TIMEOUT`];
//! - TCP stream: PACKET messages cut by a [`StreamDecoder`] (the accepted
//!   connection, or ours to a passive agent's port).
//!
//! What arrives goes to the [`Capture`]; what does not come from the agent
//! (its address, and over UDP the source port of its first datagram: see
//! [`SourcePin`]) is counted as foreign.

use std::collections::HashSet;
use std::io::{self, Read};

use rustls::pki_types::ServerName;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use rpcap::addr::canonical;
use rpcap::stream::StreamDecoder;
use rpcap::MsgType;

use crate::capture::Capture;
use crate::data::{self, RangeFull, UdpPort};
use crate::shared_port::SharedPort;
use crate::source::SourcePin;
use crate::tls::{Stream, Tls};
use sys::mmsg::RecvBatch;

/// How long the sensor waits for an agent to connect its TCP data channel.
pub const DATA_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Datagrams per recvmmsg.
const BATCH: usize = 64;
/// One read of a TCP connection (control or data).
const STREAM_READ: usize = 256 * 1024;

/// The receive buffers of the loop's thread, allocated once and used by
/// every agent in turn.
pub struct Buffers {
    pub batch: RecvBatch,
    pub stream: Vec<u8>,
}

impl Buffers {
    pub fn new() -> Buffers {
        Buffers {
            batch: RecvBatch::new(BATCH),
            stream: vec![0u8; STREAM_READ],
        }
    }
}

impl Default for Buffers {
    fn default() -> Buffers {
        Buffers::new()
    }
}

/// The UDP data ports of the configured range and which of them are ours.
pub struct UdpPorts {
    first: u16,
    last: u16,
    used: HashSet<u16>,
    /// `--udp-shared-port`: the one port UDP captures share, when set.
    pub shared: Option<SharedPort>,
}

impl UdpPorts {
    pub fn new((first, last): (u16, u16)) -> UdpPorts {
        UdpPorts {
            first,
            last,
            used: HashSet::new(),
            shared: None,
        }
    }

    /// Binds a free port of the range on `ip` and marks it used.
    pub fn bind(&mut self, ip: IpAddr) -> Result<UdpPort, RangeFull> {
        let p = data::bind_udp(ip, self.first, self.last, &self.used)?;
        self.used.insert(p.port);
        Ok(p)
    }

    /// Closes a port bound by [`UdpPorts::bind`].
    pub fn release(&mut self, mut p: UdpPort, registry: &Registry) {
        let _ = registry.deregister(&mut p.sock);
        self.used.remove(&p.port);
    }
}

pub enum DataChannel {
    /// None yet (the agent listens: connected after STARTCAP's reply), or closed.
    None,
    /// A UDP port and whose datagrams it takes.
    Udp(UdpPort, SourcePin),
    /// The shared UDP port (`--udp-shared-port`): the loop reads it and
    /// routes `agent`'s datagrams to the owner of `token`.
    Shared {
        agent: IpAddr,
        port: u16,
        token: Token,
    },
    /// The sensor listens for the agent's TCP data connection until the
    /// deadline (then TLS client on it, when the control connection is TLS).
    TcpListening(TcpListener, Instant, Option<(Tls, ServerName<'static>)>),
    Tcp(Stream, StreamDecoder),
}

impl DataChannel {
    /// A UDP port on `ip` for datagrams from `agent`, registered as
    /// `token`; returns its port number.
    pub fn udp(
        ip: IpAddr,
        agent: IpAddr,
        ports: &mut UdpPorts,
        registry: &Registry,
        token: Token,
    ) -> Result<(DataChannel, u16), String> {
        if let Some(s) = ports.shared.as_mut() {
            if s.claim(agent, token.0) {
                let port = s.port.port;
                return Ok((DataChannel::Shared { agent, port, token }, port));
            }
            s.fallbacks += 1;
            log::warn!(
                "agent {agent}: {}; this capture gets a port of --udp-ports",
                s.refusal(agent)
            );
        }
        let mut p = ports.bind(ip).map_err(|e| format!("sensor: {e}"))?;
        if let Err(e) = registry.register(&mut p.sock, token, Interest::READABLE) {
            ports.release(p, registry);
            return Err(format!("sensor: {e}"));
        }
        let port = p.port;
        Ok((DataChannel::Udp(p, SourcePin::new(agent)), port))
    }

    /// A TCP listener on an ephemeral port of `ip`, registered as `token`;
    /// returns its port number.
    pub fn tcp_listen(
        ip: IpAddr,
        registry: &Registry,
        token: Token,
        now: Instant,
        tls: Option<(Tls, ServerName<'static>)>,
    ) -> Result<(DataChannel, u16), String> {
        let mut l = TcpListener::bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("sensor: TCP data listener: {e}"))?;
        let port = l.local_addr().map(|s| s.port()).unwrap_or(0);
        registry
            .register(&mut l, token, Interest::READABLE)
            .map_err(|e| format!("sensor: {e}"))?;
        Ok((
            DataChannel::TcpListening(l, now + DATA_ACCEPT_TIMEOUT, tls),
            port,
        ))
    }

    /// A TCP connection to a passive agent's data port, registered as
    /// `token` (TLS client on it with `tls`: its ClientHello goes once the
    /// connect completes, on the writable event).
    pub fn tcp_connect(
        addr: SocketAddr,
        snaplen: u32,
        registry: &Registry,
        token: Token,
        tls: Option<&(Tls, ServerName<'static>)>,
    ) -> io::Result<DataChannel> {
        let s = TcpStream::connect(addr)?;
        let mut s = wrap(s, tls)?;
        let i = interest(&s);
        registry.register(s.socket(), token, i)?;
        Ok(DataChannel::Tcp(s, tcp_decoder(snaplen)))
    }

    /// The UDP port, for a UDP channel.
    pub fn udp_port(&self) -> Option<u16> {
        match self {
            DataChannel::Udp(p, _) => Some(p.port),
            DataChannel::Shared { port, .. } => Some(*port),
            _ => None,
        }
    }

    /// The agent starts its capture anew (new STARTCAP): its datagrams may
    /// come from a new socket.
    pub fn unpin(&mut self, ports: &mut UdpPorts) {
        match self {
            DataChannel::Udp(_, pin) => pin.unpin(),
            DataChannel::Shared { agent, .. } => {
                if let Some(s) = ports.shared.as_mut() {
                    s.unpin(*agent);
                }
            }
            _ => {}
        }
    }

    /// When a listening channel gives up waiting for the agent.
    pub fn accept_deadline(&self) -> Option<Instant> {
        match self {
            DataChannel::TcpListening(_, deadline, _) => Some(*deadline),
            _ => None,
        }
    }

    /// Takes a UDP port out of the channel (to linger after the capture).
    pub fn take_udp(&mut self) -> Option<UdpPort> {
        match std::mem::replace(self, DataChannel::None) {
            DataChannel::Udp(p, _) => Some(p),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Closes the channel (deregistered, its port free again).
    pub fn close(&mut self, ports: &mut UdpPorts, registry: &Registry) {
        match std::mem::replace(self, DataChannel::None) {
            DataChannel::None => {}
            DataChannel::Udp(p, _) => ports.release(p, registry),
            DataChannel::Shared { agent, token, .. } => {
                if let Some(s) = ports.shared.as_mut() {
                    s.release(agent, token.0);
                }
            }
            DataChannel::TcpListening(mut l, _, _) => {
                let _ = registry.deregister(&mut l);
            }
            DataChannel::Tcp(mut s, _) => {
                let _ = registry.deregister(s.socket());
            }
        }
    }

    /// Reads what is waiting into `cap` (`budget`: records `--count` still
    /// allows). Err: why the channel must be closed.
    pub fn read(
        &mut self,
        peer: SocketAddr,
        cap: &mut Capture,
        bufs: &mut Buffers,
        budget: &mut u64,
        registry: &Registry,
        token: Token,
    ) -> Result<(), String> {
        let peer_ip = canonical(peer.ip());
        match self {
            // The loop reads the shared port and routes its datagrams.
            DataChannel::None | DataChannel::Shared { .. } => Ok(()),
            DataChannel::Udp(p, pin) => {
                loop {
                    let n = match bufs.batch.recv(&p.sock) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            log::warn!("agent {peer}: UDP receive: {e}");
                            break;
                        }
                    };
                    for i in 0..n {
                        let (buf, m) = bufs.batch.get(i);
                        cap.counters.socket_drops += p.drops(m.overflow);
                        cap.on_buffer(buf, &m, pin.admit(m.from), budget);
                    }
                }
                Ok(())
            }
            DataChannel::TcpListening(l, _, tls) => match l.accept() {
                Ok((s, from)) => {
                    if canonical(from.ip()) != peer_ip {
                        log::warn!(
                            "agent {peer}: data connection from {from} refused (not the agent)"
                        );
                        cap.counters.foreign += 1;
                        return Ok(());
                    }
                    let _ = registry.deregister(l);
                    let mut s = wrap(s, tls.as_ref()).map_err(|e| format!("TLS: {e}"))?;
                    let i = interest(&s);
                    registry
                        .register(s.socket(), token, i)
                        .map_err(|e| format!("register: {e}"))?;
                    let how = if s.is_tls() { " (TLS)" } else { "" };
                    log::info!("agent {peer}: TCP data channel from {from}{how}");
                    *self = DataChannel::Tcp(s, tcp_decoder(cap.snaplen));
                    // Data may already be waiting: read it now (edge-triggered).
                    self.read(peer, cap, bufs, budget, registry, token)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(format!("accept: {e}")),
            },
            DataChannel::Tcp(s, dec) => loop {
                match s.read(&mut bufs.stream) {
                    Ok(0) => return Err("the agent closed the TCP data channel".into()),
                    Ok(n) => {
                        dec.feed(&bufs.stream[..n]);
                        while let Some((h, payload)) =
                            dec.next().map_err(|e| format!("data channel: {e}"))?
                        {
                            if h.ver == 0 && h.msg_type == MsgType::Packet as u8 {
                                cap.on_packet_payload(payload, budget);
                            } else {
                                cap.counters.malformed += 1;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("data channel: {e}")),
                }
            },
        }
    }
}

/// `s`, with a TLS client session when `tls` is given.
fn wrap(s: TcpStream, tls: Option<&(Tls, ServerName<'static>)>) -> io::Result<Stream> {
    match tls {
        None => Ok(Stream::Plain(s)),
        Some((t, name)) => t.wrap(s, name.clone()),
    }
}

/// A TLS stream also waits to write (its handshake), a plaintext one only reads.
fn interest(s: &Stream) -> Interest {
    if s.is_tls() {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

/// The decoder of a TCP data channel: PACKET messages of up to a record
/// header plus `snaplen`.
fn tcp_decoder(snaplen: u32) -> StreamDecoder {
    StreamDecoder::new(snaplen.saturating_add(rpcap::PktHdr::LEN as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_marked_used_until_released() {
        let poll = mio::Poll::new().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut ports = UdpPorts::new((23721, 23722));
        let (mut a, pa) = DataChannel::udp(ip, ip, &mut ports, poll.registry(), Token(3)).unwrap();
        let (_b, pb) = DataChannel::udp(ip, ip, &mut ports, poll.registry(), Token(8)).unwrap();
        assert_eq!((pa, pb), (23721, 23722));
        let e = DataChannel::udp(ip, ip, &mut ports, poll.registry(), Token(13))
            .err()
            .unwrap();
        assert_eq!(e, "sensor: no free UDP port in 23721-23722 on 127.0.0.1");
        // Closing the channel frees its port for the next capture.
        a.close(&mut ports, poll.registry());
        assert!(matches!(a, DataChannel::None));
        let (_c, pc) = DataChannel::udp(ip, ip, &mut ports, poll.registry(), Token(3)).unwrap();
        assert_eq!(pc, 23721);
    }

    #[test]
    fn shared_port_one_capture_per_agent_ip_the_next_falls_back() {
        let poll = mio::Poll::new().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let mut ports = UdpPorts::new((23731, 23732));
        let sp = data::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let shared = sp.port;
        ports.shared = Some(SharedPort::new(sp));
        let r = poll.registry();
        let (mut a, pa) = DataChannel::udp(ip, ip, &mut ports, r, Token(3)).unwrap();
        let (_b, pb) = DataChannel::udp(ip, other, &mut ports, r, Token(8)).unwrap();
        assert_eq!((pa, pb), (shared, shared), "two agent IPs share it");
        let (_c, pc) = DataChannel::udp(ip, ip, &mut ports, r, Token(13)).unwrap();
        assert_eq!(pc, 23731, "a second capture of 127.0.0.1 gets a range port");
        assert_eq!(ports.shared.as_ref().unwrap().fallbacks, 1);
        // Closing the first frees the shared route of its IP.
        a.close(&mut ports, r);
        let (_d, pd) = DataChannel::udp(ip, ip, &mut ports, r, Token(18)).unwrap();
        assert_eq!(pd, shared);
    }

    #[test]
    fn a_listening_channel_has_a_deadline_and_no_udp_port() {
        let poll = mio::Poll::new().unwrap();
        let now = Instant::now();
        let (mut l, port) = DataChannel::tcp_listen(
            "127.0.0.1".parse().unwrap(),
            poll.registry(),
            Token(3),
            now,
            None,
        )
        .unwrap();
        assert_ne!(port, 0);
        assert_eq!(l.accept_deadline(), Some(now + DATA_ACCEPT_TIMEOUT));
        assert!(l.take_udp().is_none());
        assert!(matches!(l, DataChannel::TcpListening(..)), "left in place");
    }
}
