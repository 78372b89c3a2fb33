//! The listener active agents connect to.

use std::io;
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};

use crate::token::Owner;

/// Agents connecting at once (a fleet reconnecting after a sensor restart)
/// must not overflow the accept queue: mio's default backlog is 1024, and an
/// overflowed handshake is retried by the agent only after seconds.
const LISTEN_BACKLOG: i32 = 4096;

pub struct Listener {
    inner: TcpListener,
}

impl Listener {
    /// A non-blocking listener on `addr` with [`LISTEN_BACKLOG`], registered
    /// as [`Owner::Listener`].
    pub fn bind(addr: SocketAddr, registry: &Registry) -> io::Result<Listener> {
        // IPV6_V6ONLY as the system sets it (net.ipv6.bindv6only): on most
        // hosts `--listen [::]:…` then takes IPv4 agents too.
        Listener::register(sys::tcp::listener(addr, LISTEN_BACKLOG, None)?, registry)
    }

    /// `--receive-threads N`: `n` listeners on `addr`, one per shard in
    /// shard order, in a reuseport group steered by the agent's address
    /// (see [`sys::reuseport`]), as the shared UDP port's group is.
    pub fn bind_group(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
        if n <= 1 {
            return Ok(vec![sys::tcp::listener(addr, LISTEN_BACKLOG, None)?]);
        }
        let group = sys::reuseport::tcp_listeners(addr, LISTEN_BACKLOG, n)?;
        sys::reuseport::steer_by_source(&group[0], n as u32)?;
        Ok(group)
    }

    /// A listener of [`Listener::bind_group`] in the loop of `registry`.
    pub fn register(l: std::net::TcpListener, registry: &Registry) -> io::Result<Listener> {
        let mut inner = TcpListener::from_std(l);
        registry.register(&mut inner, Owner::Listener.token(), Interest::READABLE)?;
        Ok(Listener { inner })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The next queued connection; None when none waits, or when accepting
    /// failed (logged: the loop's tick calls again, since an edge-triggered
    /// listener would not report the queue again).
    pub fn accept(&self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            match self.inner.accept() {
                Ok(conn) => return Some(conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                // One client gave up while queued: the next one may be fine.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) => {}
                // E.g. out of descriptors.
                Err(e) => {
                    log::warn!("accept: {e}");
                    return None;
                }
            }
        }
    }
}
