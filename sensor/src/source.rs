//! Which data datagrams come from the agent. RPCAP tells the agent where to
//! send (our port) but not where it sends from, so the first datagram from
//! the agent's address pins its source port for the rest of the capture
//! (xrpcapd and rpcapd send a capture from one socket); every other sender,
//! other ports of the agent's host included, is foreign. A new STARTCAP
//! (the agent may send from a new socket) unpins it.

use std::net::{IpAddr, SocketAddr};

use rpcap::addr::canonical;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePin {
    agent: IpAddr,
    port: Option<u16>,
}

impl SourcePin {
    /// Datagrams from `agent` (the control connection's peer), port not yet known.
    pub fn new(agent: IpAddr) -> SourcePin {
        SourcePin {
            agent: canonical(agent),
            port: None,
        }
    }

    /// Whether a datagram from `from` is the agent's; the first one from
    /// the agent's address pins its port.
    pub fn admit(&mut self, from: Option<SocketAddr>) -> bool {
        let Some(from) = from else { return false };
        if canonical(from.ip()) != self.agent {
            return false;
        }
        *self.port.get_or_insert(from.port()) == from.port()
    }

    /// The agent starts a new capture: the next datagram pins again.
    pub fn unpin(&mut self) {
        self.port = None;
    }

    /// The pinned source, once a datagram came.
    pub fn pinned(&self) -> Option<SocketAddr> {
        self.port.map(|p| SocketAddr::new(self.agent, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_port_of_the_agent_pins_the_rest_is_foreign() {
        let mut p = SourcePin::new("10.0.0.1".parse().unwrap());
        let at = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert!(!p.admit(at("10.0.0.2:4000")), "another host");
        assert!(!p.admit(None));
        assert_eq!(p.pinned(), None);
        assert!(p.admit(at("10.0.0.1:4000")));
        assert!(
            p.admit(at("[::ffff:10.0.0.1]:4000")),
            "v4-mapped is the same"
        );
        assert!(!p.admit(at("10.0.0.1:4001")), "another port of the agent");
        assert_eq!(p.pinned(), at("10.0.0.1:4000"));
        p.unpin();
        assert!(p.admit(at("10.0.0.1:4001")));
        assert!(!p.admit(at("10.0.0.1:4000")));
    }
}
