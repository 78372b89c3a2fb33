//! TCP sockets set up the way both daemons use them in their event loops: a
//! non-blocking listener, and a non-blocking connect started now and judged
//! when the loop reports its socket (or its deadline passes).
//!
//! Each caller keeps its policy (backlog, dual-stack, keepalive, when to try
//! again, which address to try): these functions only make the sockets and
//! read their state. A connect takes an address, never a name, so that name
//! resolution can run wherever the caller wants it (today inline, later off
//! the loop) without touching the connect.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::Instant;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// A non-blocking, close-on-exec TCP listener on `addr` with
/// `SO_REUSEADDR` (a restarted daemon binds again at once) and `backlog`
/// pending connections. `only_v6`: `IPV6_V6ONLY` for an IPv6 address; None
/// leaves the system's default.
pub fn listener(addr: SocketAddr, backlog: i32, only_v6: Option<bool>) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let (true, Some(only)) = (addr.is_ipv6(), only_v6) {
        sock.set_only_v6(only)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.set_cloexec(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    Ok(sock.into())
}

/// Socket options of an outgoing connection, set before it starts.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `TCP_NODELAY`.
    pub nodelay: bool,
    /// `SO_KEEPALIVE` with these timings; None: off.
    pub keepalive: Option<TcpKeepalive>,
}

/// A connect in progress to `addr`, to be given up at `deadline`. `S` is the
/// socket as the caller's event loop holds it (e.g. `mio::net::TcpStream`,
/// through [`Connecting::map`]).
#[derive(Debug)]
pub struct Connecting<S> {
    pub stream: S,
    pub addr: SocketAddr,
    pub deadline: Instant,
}

/// Where a connect in progress stands.
#[derive(Debug)]
pub enum Progress {
    /// Not established yet (a wake-up before the handshake ended): wait on.
    Pending,
    Connected {
        local: SocketAddr,
        peer: SocketAddr,
    },
    /// Refused, unreachable, reset…: the attempt is over.
    Failed(io::Error),
}

impl Connecting<TcpStream> {
    /// Starts a non-blocking, close-on-exec connect to `addr` with `opts`;
    /// the handshake goes on in the kernel. An error here (no route, no
    /// descriptor…) means no attempt was made.
    pub fn start(
        addr: SocketAddr,
        opts: &ConnectOptions,
        deadline: Instant,
    ) -> io::Result<Connecting<TcpStream>> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        sock.set_cloexec(true)?;
        if opts.nodelay {
            sock.set_tcp_nodelay(true)?;
        }
        if let Some(ka) = &opts.keepalive {
            sock.set_tcp_keepalive(ka)?;
        }
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(Connecting {
            stream: sock.into(),
            addr,
            deadline,
        })
    }
}

impl<S> Connecting<S> {
    /// The same attempt with its socket converted (e.g. to the event loop's type).
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> Connecting<T> {
        Connecting {
            stream: f(self.stream),
            addr: self.addr,
            deadline: self.deadline,
        }
    }

    /// Whether the deadline has come: the attempt counts as timed out.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

impl<S: AsFd> Connecting<S> {
    /// Judges the attempt after its socket was reported ready: the pending
    /// error (`SO_ERROR`) first, then whether the socket has a peer.
    pub fn progress(&self) -> Progress {
        let sock = SockRef::from(&self.stream);
        if let Ok(Some(e)) | Err(e) = sock.take_error() {
            return Progress::Failed(e);
        }
        let addrs = (sock.local_addr(), sock.peer_addr());
        let as_inet = |a: socket2::SockAddr| {
            a.as_socket()
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
        };
        match (addrs.0.and_then(as_inet), addrs.1.and_then(as_inet)) {
            (Ok(local), Ok(peer)) => Progress::Connected { local, peer },
            (_, Err(e)) if e.kind() == io::ErrorKind::NotConnected => Progress::Pending,
            (Err(e), _) | (_, Err(e)) => Progress::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls `c` until it is no longer pending (loopback: milliseconds).
    fn settle<S: AsFd>(c: &Connecting<S>) -> Progress {
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            match c.progress() {
                Progress::Pending if Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                p => return p,
            }
        }
    }

    #[test]
    fn connects_to_a_listener_and_reports_both_ends() {
        let l = listener("127.0.0.1:0".parse().unwrap(), 8, None).unwrap();
        let to = l.local_addr().unwrap();
        let opts = ConnectOptions {
            nodelay: true,
            keepalive: Some(TcpKeepalive::new().with_time(Duration::from_secs(30))),
        };
        let c = Connecting::start(to, &opts, Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(c.addr, to);
        assert!(!c.expired(Instant::now()));
        match settle(&c) {
            Progress::Connected { local, peer } => {
                assert_eq!(peer, to);
                assert_eq!(local, c.stream.local_addr().unwrap());
            }
            p => panic!("{p:?}"),
        }
        assert!(c.stream.nodelay().unwrap());
        assert!(SockRef::from(&c.stream).keepalive().unwrap());
        let (_, from) = l.accept().unwrap();
        assert_eq!(from, c.stream.local_addr().unwrap());
    }

    #[test]
    fn refused_connect_fails_and_deadline_expires() {
        // A port that was just free: nothing listens there.
        let to = listener("127.0.0.1:0".parse().unwrap(), 1, None)
            .unwrap()
            .local_addr()
            .unwrap();
        let now = Instant::now();
        let c = Connecting::start(to, &ConnectOptions::default(), now).unwrap();
        assert!(c.expired(now));
        match settle(&c) {
            Progress::Failed(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn listener_is_nonblocking_and_keeps_v6_choice() {
        let l = listener("127.0.0.1:0".parse().unwrap(), 4, Some(true)).unwrap();
        assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        if let Ok(l6) = listener("[::1]:0".parse().unwrap(), 4, Some(true)) {
            assert!(SockRef::from(&l6).only_v6().unwrap());
        }
        if let Ok(l6) = listener("[::]:0".parse().unwrap(), 4, Some(false)) {
            assert!(!SockRef::from(&l6).only_v6().unwrap());
        }
    }
}
