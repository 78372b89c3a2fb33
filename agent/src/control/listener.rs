//! Passive mode: where xrpcapd listens and who may connect. The mio loop in
//! [`super`] accepts the clients and serves each as a [`super::peer::Peer`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use anyhow::Context;
use ipnet::IpNet;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::settings::Config;

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

/// A listener on `addr`: a specific IPv6 address is IPv6-only, the IPv6
/// wildcard serves IPv4 clients too (as ::ffff:a.b.c.d).
fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let only_v6 = !addr.ip().is_unspecified();
    sys::tcp::listener(addr, BACKLOG, Some(only_v6)).map(TcpListener::from_std)
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

/// The open listeners, by token, and the settings they were made from.
#[derive(Default)]
pub struct Listeners {
    open: BTreeMap<Token, TcpListener>,
    /// None: not listening (before [`Listeners::open`], or `-v`).
    spec: Option<ListenSpec>,
}

impl Listeners {
    /// Listens as `spec` says (closing the previous listeners), under the
    /// tokens `first..last`. Returns the addresses listened on.
    pub fn open(
        &mut self,
        spec: Option<ListenSpec>,
        registry: &Registry,
        tokens: std::ops::Range<usize>,
    ) -> anyhow::Result<Vec<SocketAddr>> {
        for (_, mut l) in std::mem::take(&mut self.open) {
            let _ = registry.deregister(&mut l);
        }
        self.spec = spec.clone();
        let Some(spec) = spec else {
            return Ok(Vec::new());
        };
        let mut addrs = Vec::new();
        let mut tokens = tokens;
        for mut l in bind(&spec)? {
            let Some(token) = tokens.next() else {
                log::warn!("more listening addresses than supported; the rest are ignored");
                break;
            };
            registry
                .register(&mut l, Token(token), Interest::READABLE)
                .context("registering a listener")?;
            if let Ok(a) = l.local_addr() {
                log::info!("listening for passive clients on {a}");
                addrs.push(a);
            }
            self.open.insert(Token(token), l);
        }
        Ok(addrs)
    }

    /// Whether the listeners must be opened anew for `spec` (only once listening).
    pub fn changes(&self, spec: &Option<ListenSpec>) -> bool {
        self.spec.is_some() && *spec != self.spec
    }

    pub fn contains(&self, token: Token) -> bool {
        self.open.contains_key(&token)
    }

    /// The addresses passive clients can connect to.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.open
            .values()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The next waiting connection on listener `token`; None when there is
    /// none now (or the listener failed: EMFILE and the like, it stays and
    /// is tried again at its next event).
    pub fn accept(&self, token: Token) -> Option<(TcpStream, SocketAddr)> {
        let listener = self.open.get(&token)?;
        loop {
            match listener.accept() {
                Ok(a) => return Some(a),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accepting a passive client: {e}");
                    return None;
                }
            }
        }
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
