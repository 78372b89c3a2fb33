//! Graceful close of control connections we end.
//!
//! Closing a socket whose peer still sends (its own CLOSE handling, a TLS
//! close_notify, a last request) makes the kernel answer with a reset, and
//! libpcap's client then fails its `pcap_remoteact_close`/`pcap_close` with
//! "Transport endpoint is not connected". So an ended connection sends its
//! FIN, stays open for a short, bounded time while whatever arrives is read
//! and dropped, and is closed once the peer has closed too.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

/// Longest a closed connection waits for its peer to close.
const LINGER: Duration = Duration::from_secs(2);
/// Most connections lingering at once; beyond, the oldest is closed at once.
const MAX_LINGERING: usize = 64;
/// How often lingering connections are drained.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// Connections we closed our side of, waiting for the peer's close.
#[derive(Debug, Default)]
pub struct Lingering {
    conns: VecDeque<(TcpStream, Instant)>,
}

impl Lingering {
    /// Sends our FIN (after any data still queued) and keeps `stream` until
    /// the peer closes or [`LINGER`] has passed. `stream` must not be
    /// registered with the event loop any more.
    pub fn add(&mut self, stream: TcpStream, now: Instant) {
        if stream.shutdown(Shutdown::Write).is_err() {
            return; // already reset or closed by the peer: nothing to wait for
        }
        if self.conns.len() >= MAX_LINGERING {
            self.conns.pop_front();
        }
        self.conns.push_back((stream, now + LINGER));
    }

    /// Reads and drops what arrived; closes the connections whose peer has
    /// closed, failed, or waited too long.
    pub fn drain(&mut self, now: Instant) {
        let mut buf = [0u8; 4096];
        self.conns.retain_mut(|(stream, deadline)| loop {
            match stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return now < *deadline,
                Err(_) => return false,
            }
        });
    }

    /// When [`Lingering::drain`] should run next, if anything lingers.
    pub fn next_drain(&self, now: Instant) -> Option<Instant> {
        (!self.conns.is_empty()).then(|| now + DRAIN_INTERVAL)
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pair() -> (TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (TcpStream::from_std(server), client)
    }

    #[test]
    fn the_peer_gets_a_clean_end_even_when_it_sends_after_our_close() {
        let (server, mut client) = pair();
        let mut l = Lingering::default();
        l.add(server, Instant::now());
        // The peer still sends after our FIN (like a TLS close_notify)...
        client.write_all(b"late bytes").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        l.drain(Instant::now());
        assert_eq!(l.len(), 1, "still waiting for the peer to close");
        // ...sees our end of stream, and its own shutdown succeeds: no reset.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        client.shutdown(Shutdown::Both).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        l.drain(Instant::now());
        assert!(l.is_empty(), "closed once the peer closed");
    }

    #[test]
    fn a_silent_peer_is_dropped_after_the_linger_time() {
        let (server, _client) = pair();
        let mut l = Lingering::default();
        let now = Instant::now();
        l.add(server, now);
        l.drain(now + LINGER - Duration::from_millis(1));
        assert_eq!(l.len(), 1);
        l.drain(now + LINGER);
        assert!(l.is_empty());
    }

    #[test]
    fn lingering_is_bounded() {
        let mut l = Lingering::default();
        let mut keep = Vec::new();
        for _ in 0..MAX_LINGERING + 5 {
            let (server, client) = pair();
            keep.push(client);
            l.add(server, Instant::now());
        }
        assert_eq!(l.len(), MAX_LINGERING);
    }
}
