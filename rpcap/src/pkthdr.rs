//! `rpcap_pkthdr`: the 20-byte header in front of every captured packet on the
//! data channel, in both the plain and the udpstr formats.

/// A packet record header: `ts_sec | ts_usec | caplen | len | npkt`, all u32 big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PktHdr {
    pub ts_sec: u32,
    pub ts_usec: u32,
    /// Bytes of the packet that follow the header.
    pub caplen: u32,
    /// Length of the packet on the wire.
    pub len: u32,
    /// Packets sent in this capture so far, this one included (starts at 1).
    pub npkt: u32,
}

impl PktHdr {
    /// Length on the wire.
    pub const LEN: usize = 20;

    /// Reads a header from the first 20 bytes of `buf`; `None` if `buf` is shorter.
    pub fn parse(buf: &[u8]) -> Option<PktHdr> {
        let b = buf.get(..Self::LEN)?;
        let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(PktHdr {
            ts_sec: w(0),
            ts_usec: w(4),
            caplen: w(8),
            len: w(12),
            npkt: w(16),
        })
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        for (i, v) in [self.ts_sec, self.ts_usec, self.caplen, self.len, self.npkt]
            .into_iter()
            .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = PktHdr {
            ts_sec: 1,
            ts_usec: 2,
            caplen: 70000,
            len: 70001,
            npkt: 0xFFFF_FFFF,
        };
        let b = h.to_bytes();
        assert_eq!(&b[8..12], &70000u32.to_be_bytes());
        assert_eq!(PktHdr::parse(&b), Some(h));
        assert_eq!(PktHdr::parse(&b[..19]), None);
    }
}
