//! Passive mode: where xrpcapd listens, who may connect, and the state of one
//! accepted client. The mio loop in [`super`] drives them.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::IpNet;
use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

use super::tls::Conn;
use crate::config::{Config, Passive};
use crate::session::Session;

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 64;

/// Where to listen (`-b`, `-p`, `-4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub bind: Option<String>,
    pub port: u16,
    pub ipv4_only: bool,
}

impl ListenSpec {
    /// None with `-v` (active only).
    pub fn from_config(cfg: &Config) -> Option<ListenSpec> {
        (!cfg.active_only).then(|| ListenSpec {
            bind: cfg.passive.bind.clone(),
            port: cfg.passive.port,
            ipv4_only: cfg.passive.ipv4_only,
        })
    }

    /// The addresses to bind: `-b` resolved, or the wildcard (IPv6 dual-stack
    /// unless `-4`, IPv4 when the host has no IPv6).
    fn addrs(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let v4_any = SocketAddr::from(([0, 0, 0, 0], self.port));
        let v6_any = SocketAddr::from(([0u16; 8], self.port));
        let mut addrs: Vec<SocketAddr> = match &self.bind {
            None if self.ipv4_only => vec![v4_any],
            None => vec![v6_any],
            Some(host) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (host, self.port)
                    .to_socket_addrs()
                    .with_context(|| format!("resolving the bind address {host}"))?
                    .collect()
            }
        };
        if self.ipv4_only {
            addrs.retain(|a| a.is_ipv4());
        }
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            anyhow::bail!("no address to listen on (-b/-4)");
        }
        Ok(addrs)
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // The wildcard serves IPv4 clients too (as ::ffff:a.b.c.d).
        sock.set_only_v6(!addr.ip().is_unspecified())?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.set_cloexec(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    Ok(TcpListener::from_std(sock.into()))
}

/// Opens the listeners of `spec`; the IPv6 wildcard falls back to IPv4 on a
/// host without IPv6.
pub fn bind(spec: &ListenSpec) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for addr in spec.addrs()? {
        match listener(addr) {
            Ok(l) => out.push(l),
            Err(e) if spec.bind.is_none() && addr.is_ipv6() => {
                let v4 = SocketAddr::from(([0, 0, 0, 0], spec.port));
                log::info!("cannot listen on {addr} ({e}); listening on {v4}");
                out.push(listener(v4).with_context(|| format!("listening on {v4}"))?);
            }
            Err(e) => return Err(e).with_context(|| format!("listening on {addr}")),
        }
    }
    Ok(out)
}

/// Hosts allowed to connect (`PassiveClient`, `-l`): addresses and prefixes;
/// names are resolved when the configuration is applied. Empty: anyone.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    nets: Vec<IpNet>,
    any: bool,
}

impl Allowed {
    pub fn resolve(hosts: &[String]) -> Allowed {
        let mut nets = Vec::new();
        for h in hosts {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            if let Ok(net) = h.parse::<IpNet>() {
                nets.push(net);
            } else if let Ok(ip) = h.parse::<IpAddr>() {
                nets.push(IpNet::from(ip));
            } else {
                match (h, 0).to_socket_addrs() {
                    Ok(addrs) => nets.extend(addrs.map(|a| IpNet::from(a.ip()))),
                    Err(e) => log::warn!("PassiveClient {h}: cannot resolve ({e}); not allowed"),
                }
            }
        }
        Allowed {
            any: hosts.is_empty(),
            nets,
        }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.any || self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// One accepted passive client.
pub struct Client<C> {
    pub conn: Conn<TcpStream>,
    pub session: Box<Session<C>>,
    pub accepted: Instant,
    /// When the client last sent something.
    pub last_rx: Instant,
    /// A failed authentication's reply is held until then.
    pub hold_until: Option<Instant>,
}

impl<C> Client<C> {
    pub fn new(conn: Conn<TcpStream>, session: Session<C>, now: Instant) -> Client<C> {
        Client {
            conn,
            session: Box::new(session),
            accepted: now,
            last_rx: now,
            hold_until: None,
        }
    }

    pub fn held(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| t > now)
    }

    /// The next instant a timer of this client fires.
    pub fn deadline(&self, p: &Passive) -> Instant {
        if let Some(t) = self.hold_until {
            return t;
        }
        if !self.session.authenticated() {
            return self.accepted + Duration::from_secs(p.auth_timeout_secs.into());
        }
        if !self.session.capturing() {
            return self.last_rx + Duration::from_secs(p.idle_timeout_secs.into());
        }
        Instant::now() + Duration::from_secs(3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_addresses_prefixes_names() {
        let a = Allowed::resolve(&[
            "192.0.2.1".into(),
            "10.1.0.0/16".into(),
            "[2001:db8::1]".into(),
            "localhost".into(),
        ]);
        for ok in ["192.0.2.1", "10.1.200.3", "2001:db8::1", "127.0.0.1"] {
            assert!(a.permits(ok.parse().unwrap()), "{ok}");
        }
        for no in ["192.0.2.2", "10.2.0.1", "2001:db8::2"] {
            assert!(!a.permits(no.parse().unwrap()), "{no}");
        }
        assert!(Allowed::resolve(&[]).permits("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn listen_spec_binds_wildcard_or_given_address() {
        let spec = ListenSpec {
            bind: Some("127.0.0.1".into()),
            port: 0,
            ipv4_only: true,
        };
        let l = bind(&spec).unwrap();
        assert_eq!(l.len(), 1);
        assert!(l[0].local_addr().unwrap().ip().is_loopback());
        let spec = ListenSpec {
            bind: Some("::1".into()),
            port: 0,
            ipv4_only: true,
        };
        assert!(bind(&spec).is_err());
    }
}
