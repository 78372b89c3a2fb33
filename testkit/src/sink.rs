//! A loopback socket that receives what a sender forwards, and decoders for
//! the three ways records travel: udpstr datagrams, plain PACKET datagrams,
//! plain PACKET messages on TCP.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::record::Record;

/// A UDP socket on loopback with a large receive buffer.
pub fn udp_sink() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    // Best effort, as before: SO_RCVBUFFORCE (root), else what the system allows.
    let _ = sys::sockopt::force_rcvbuf(&s, 32 << 20);
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// Receives udpstr datagrams until `want` records arrived or `limit` passed.
/// Returns the records, the deframer's counts and each datagram's size.
pub fn collect_udpstr(
    sock: &UdpSocket,
    want: usize,
    limit: Duration,
) -> (Vec<Record>, rpcap::udpstr::DeframerStats, Vec<usize>) {
    let mut d = rpcap::udpstr::Deframer::new(262_144);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut dgrams = Vec::new();
    let t0 = Instant::now();
    while out.len() < want && t0.elapsed() < limit {
        if let Ok(n) = sock.recv(&mut buf) {
            dgrams.push(n);
            d.push(&buf[..n], |h, b| {
                out.push(Record {
                    hdr: *h,
                    data: b.to_vec(),
                })
            })
            .expect("udpstr datagram");
        }
    }
    (out, *d.stats(), dgrams)
}

/// Drains a socket for `quiet` and returns how many datagrams came.
pub fn count_more(sock: &UdpSocket, quiet: Duration) -> usize {
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < quiet {
        if sock.recv(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

/// Receives plain PACKET datagrams.
pub fn collect_plain(sock: &UdpSocket, want: usize, limit: Duration) -> Vec<Record> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    while out.len() < want && t0.elapsed() < limit {
        if let Ok(n) = sock.recv(&mut buf) {
            let (h, b) = rpcap::plain::decode(&buf[..n]).expect("plain datagram");
            out.push(Record {
                hdr: h,
                data: b.to_vec(),
            });
        }
    }
    out
}

/// Reads plain PACKET messages from a TCP stream.
pub fn collect_tcp(s: &mut TcpStream, want: usize, limit: Duration) -> Vec<Record> {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut out = Vec::new();
    let mut acc: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    while out.len() < want && t0.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => acc.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
        while let Some(h) = rpcap::Header::parse(&acc) {
            let total = 8 + h.plen as usize;
            if acc.len() < total {
                break;
            }
            let (ph, b) = rpcap::plain::decode(&acc[..total]).expect("plain message");
            out.push(Record {
                hdr: ph,
                data: b.to_vec(),
            });
            acc.drain(..total);
        }
    }
    out
}

/// Sensor address of a loopback socket.
pub fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap()
}
