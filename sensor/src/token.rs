//! What each mio token of the event loop refers to, so the loop hands an
//! event to its owner with one match.

use mio::Token;

/// The owner of a registered socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The listener for active agents.
    Listener,
    /// A connect in progress to passive agent `i` (index into the dial list).
    Dial(usize),
    /// Agent `i`'s control connection.
    Control(usize),
    /// Agent `i`'s data channel.
    Data(usize),
    /// The UDP port of closed capture `i`, lingering to count late datagrams.
    Linger(usize),
    /// The signal self-pipe.
    Signals,
    /// `--udp-shared-port`: the UDP port every capture shares.
    SharedUdp,
}

/// Token = index × KINDS + kind.
const KINDS: usize = 6;

impl Owner {
    pub fn token(self) -> Token {
        let (i, kind) = match self {
            Owner::Listener => (0, 0),
            Owner::Dial(i) => (i, 1),
            Owner::Control(i) => (i, 2),
            Owner::Data(i) => (i, 3),
            Owner::Linger(i) => (i, 4),
            Owner::Signals => (0, 5),
            Owner::SharedUdp => (1, 5),
        };
        Token(i * KINDS + kind)
    }

    pub fn of(t: Token) -> Owner {
        let i = t.0 / KINDS;
        match t.0 % KINDS {
            0 => Owner::Listener,
            1 => Owner::Dial(i),
            2 => Owner::Control(i),
            3 => Owner::Data(i),
            4 => Owner::Linger(i),
            _ if i == 1 => Owner::SharedUdp,
            _ => Owner::Signals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_differ() {
        let mut seen = std::collections::HashSet::new();
        let mut owners = vec![Owner::Listener, Owner::Signals, Owner::SharedUdp];
        for i in [0, 1, 7, 1000] {
            owners.extend([
                Owner::Dial(i),
                Owner::Control(i),
                Owner::Data(i),
                Owner::Linger(i),
            ]);
        }
        for o in owners {
            assert_eq!(Owner::of(o.token()), o);
            assert!(seen.insert(o.token()), "{o:?}");
        }
    }
}
