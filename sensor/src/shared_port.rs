//! `--udp-shared-port`: one UDP socket for the data of every UDP capture,
//! so that 1000 agents need one port (and one firewall rule), not 1000.
//!
//! A datagram is routed to its capture by its source address. RPCAP tells
//! the agent where to send but the agent says nothing of where it sends
//! from, so the route is keyed by the agent's IP (its control connection's
//! peer) and the port is pinned by the first datagram, as on a per-capture
//! port ([`SourcePin`]). Two captures from one IP could not be told apart
//! before their first datagrams, so the shared port takes one capture per
//! agent IP at a time: another capture from that IP gets a port of
//! `--udp-ports` instead (counted in [`SharedPort::fallbacks`] and logged).
//! Datagrams from an IP with no capture are counted in
//! [`SharedPort::foreign`]; from another port of a capture's IP, in that
//! capture's `foreign`. Routing is one hash lookup, no allocation.
//!
//! With `--receive-threads N` each thread has its own socket of the port
//! and the kernel hands it the datagrams of the agent addresses it is
//! steered ([`sys::reuseport::member_for`]); a capture of an agent whose
//! datagrams would reach another thread's socket (a dialed agent: dials
//! are dealt round-robin) gets a port of `--udp-ports` too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use rpcap::addr::canonical;

use crate::data::UdpPort;
use crate::source::SourcePin;

/// Where a datagram goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// To agent `i`'s capture.
    Agent(usize),
    /// From agent `i`'s IP but not its pinned port: that capture's foreign.
    ForeignOf(usize),
    /// From nobody we know: the shared port's foreign.
    Unknown,
}

pub struct SharedPort {
    pub port: UdpPort,
    routes: HashMap<IpAddr, (usize, SourcePin)>,
    /// Datagrams from an IP without a capture on the shared port.
    pub foreign: u64,
    /// Datagrams the socket dropped (SO_RXQ_OVFL): not attributable to a capture.
    pub socket_drops: u64,
    /// Captures that got a per-capture port because their agent's IP
    /// already had one on the shared port (or its datagrams reach another
    /// receive thread's socket).
    pub fallbacks: u64,
    /// `--receive-threads`: this socket is member `.0` of `.1`.
    member: Option<(usize, usize)>,
}

impl SharedPort {
    pub fn new(port: UdpPort) -> SharedPort {
        SharedPort {
            port,
            routes: HashMap::new(),
            foreign: 0,
            socket_drops: 0,
            fallbacks: 0,
            member: None,
        }
    }

    /// This socket is member `i` of a group of `n` steered by source
    /// address (one per receive thread).
    pub fn set_member(&mut self, i: usize, n: usize) {
        self.member = (n > 1).then_some((i, n));
    }

    /// Whether `agent`'s datagrams reach this socket.
    fn reaches(&self, agent: IpAddr) -> bool {
        self.member
            .is_none_or(|(i, n)| sys::reuseport::member_for(canonical(agent), n) == i)
    }

    /// Why [`SharedPort::claim`] refused `agent`, for the log.
    pub fn refusal(&self, agent: IpAddr) -> String {
        if self.reaches(agent) {
            format!(
                "another capture of this address uses the shared UDP port {}",
                self.port.port
            )
        } else {
            format!(
                "its datagrams to the shared UDP port {} reach another receive thread",
                self.port.port
            )
        }
    }

    /// Routes datagrams from `agent` to agent `idx`; false when another
    /// agent of that IP holds the route, or its datagrams reach another
    /// receive thread's socket.
    pub fn claim(&mut self, agent: IpAddr, idx: usize) -> bool {
        if !self.reaches(agent) {
            return false;
        }
        let ip = canonical(agent);
        match self.routes.get(&ip) {
            Some((owner, _)) => *owner == idx,
            None => {
                self.routes.insert(ip, (idx, SourcePin::new(ip)));
                true
            }
        }
    }

    /// Agent `idx` no longer takes `agent`'s datagrams.
    pub fn release(&mut self, agent: IpAddr, idx: usize) {
        let ip = canonical(agent);
        if self.routes.get(&ip).is_some_and(|(o, _)| *o == idx) {
            self.routes.remove(&ip);
        }
    }

    /// The capture starts anew (new STARTCAP): the next datagram pins again.
    pub fn unpin(&mut self, agent: IpAddr) {
        if let Some((_, pin)) = self.routes.get_mut(&canonical(agent)) {
            pin.unpin();
        }
    }

    /// Where a datagram from `from` goes.
    pub fn route(&mut self, from: Option<SocketAddr>) -> Route {
        let Some(from) = from else {
            return Route::Unknown;
        };
        match self.routes.get_mut(&canonical(from.ip())) {
            None => Route::Unknown,
            Some((idx, pin)) => {
                if pin.admit(Some(from)) {
                    Route::Agent(*idx)
                } else {
                    Route::ForeignOf(*idx)
                }
            }
        }
    }

    /// Captures routed now.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> SharedPort {
        let p = crate::data::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        SharedPort::new(p)
    }

    #[test]
    fn routes_by_agent_ip_and_pinned_port() {
        let mut s = shared();
        let at = |x: &str| Some(x.parse::<SocketAddr>().unwrap());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(s.claim(a, 3));
        assert!(s.claim(b, 7));
        assert!(!s.claim(a, 9), "one capture per agent IP");
        assert!(s.claim(a, 3), "its own claim again");
        assert_eq!(s.route(at("10.0.0.1:4000")), Route::Agent(3));
        assert_eq!(s.route(at("[::ffff:10.0.0.2]:5000")), Route::Agent(7));
        assert_eq!(s.route(at("10.0.0.1:4001")), Route::ForeignOf(3));
        assert_eq!(s.route(at("10.0.0.3:4000")), Route::Unknown);
        assert_eq!(s.route(None), Route::Unknown);
        s.unpin(a);
        assert_eq!(s.route(at("10.0.0.1:4001")), Route::Agent(3));
        s.release(a, 9);
        assert_eq!(s.len(), 2, "only the owner releases");
        s.release(a, 3);
        assert_eq!(s.route(at("10.0.0.1:4001")), Route::Unknown);
        assert!(s.claim(a, 9));
    }

    #[test]
    fn a_receive_thread_claims_only_the_addresses_steered_to_it() {
        let mut s = shared();
        s.set_member(1, 2);
        let odd: IpAddr = "10.0.0.1".parse().unwrap();
        let even: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(s.claim(odd, 3));
        assert!(s.claim("::ffff:10.0.0.3".parse().unwrap(), 4));
        assert!(s.claim("fd00::5".parse().unwrap(), 5));
        assert!(!s.claim(even, 6));
        assert!(!s.claim("fd00::4".parse().unwrap(), 7));
        assert_eq!(
            s.refusal(even),
            format!(
                "its datagrams to the shared UDP port {} reach another receive thread",
                s.port.port
            )
        );
        assert!(s
            .refusal(odd)
            .starts_with("another capture of this address"));
    }
}
