//! The pcapng blocks the sensor writes, built with the `pcap-file` crate's
//! block types: a section header naming the sensor, one interface per
//! (agent, interface) named `AGENT/IFNAME`, enhanced packet blocks (with a
//! comment and drop count on the first record after a loss), and interface
//! statistics with the agent's and the sensor's counters.
//!
//! Blocks are written in the machine's byte order, as libpcap does. Two
//! quirks of `pcap-file` 2.0 are worked around here rather than by writing
//! blocks by hand: it writes an EPB's timestamp as the `Duration`'s
//! nanoseconds, i.e. as raw units of the interface's `if_tsresol`; and it
//! writes an ISB's timestamp as one 64-bit integer, where pcapng has two
//! 32-bit words (high first), which differs on little-endian machines.

use std::borrow::Cow;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use byteorder::NativeEndian;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::Block;
use pcap_file::{DataLink, Endianness};
use rpcap::msg::Stats;

/// `if_tsresol`: RPCAP records carry microseconds.
pub const TSRESOL_USEC: u8 = 6;

/// Fixed part of an EPB without options: block header and trailer (12),
/// interface, timestamp (8), caplen, len.
const EPB_FIXED: usize = 32;

/// Who the sensor is: `shb_userappl`, `shb_os`, `shb_hardware`.
pub struct SensorId {
    pub userappl: String,
    pub os: String,
    pub hardware: String,
}

impl SensorId {
    /// This sensor on this machine: its version, the kernel (from /proc, as
    /// `uname -sr` prints it) and the machine's architecture.
    pub fn local() -> SensorId {
        let read = |f: &str| {
            std::fs::read_to_string(f)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let (ty, rel) = (
            read("/proc/sys/kernel/ostype"),
            read("/proc/sys/kernel/osrelease"),
        );
        let os = match (ty.is_empty(), rel.is_empty()) {
            (false, false) => format!("{ty} {rel}"),
            (false, true) => ty,
            _ => std::env::consts::OS.to_string(),
        };
        SensorId {
            userappl: format!("xrpcap-sensor {}", env!("CARGO_PKG_VERSION")),
            os,
            hardware: std::env::consts::ARCH.to_string(),
        }
    }
}

/// What an interface description block says about a capture.
pub struct IfaceId<'a> {
    /// `if_name`: `AGENT/IFNAME`.
    pub name: &'a str,
    /// `if_description`.
    pub description: &'a str,
    pub linktype: i32,
    pub snaplen: u32,
}

/// The counters of an interface statistics block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IsbCounts {
    /// The agent's last STATS, if one arrived.
    pub agent: Option<Stats>,
    /// Records written for this interface since the capture started.
    pub delivered: u64,
    /// Records missing between written ones (npkt gaps).
    pub missing: u64,
    /// Of those, records the sensor dropped itself (writer behind).
    pub dropped: u64,
}

fn write(block: &Block<'_>, w: &mut impl Write) -> io::Result<usize> {
    block.write_to::<NativeEndian, _>(w)
}

/// The section header block.
pub fn shb(id: &SensorId, w: &mut impl Write) -> io::Result<usize> {
    let b = SectionHeaderBlock {
        endianness: Endianness::native(),
        major_version: 1,
        minor_version: 0,
        section_length: -1,
        options: vec![
            SectionHeaderOption::Hardware(Cow::Borrowed(&id.hardware)),
            SectionHeaderOption::OS(Cow::Borrowed(&id.os)),
            SectionHeaderOption::UserApplication(Cow::Borrowed(&id.userappl)),
        ],
    };
    write(&Block::SectionHeader(b), w)
}

/// One interface description block.
pub fn idb(i: &IfaceId<'_>, w: &mut impl Write) -> io::Result<usize> {
    let b = InterfaceDescriptionBlock {
        linktype: DataLink::from(i.linktype as u32),
        snaplen: i.snaplen,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Borrowed(i.name)),
            InterfaceDescriptionOption::IfDescription(Cow::Borrowed(i.description)),
            InterfaceDescriptionOption::IfTsResol(TSRESOL_USEC),
        ],
    };
    write(&Block::InterfaceDescription(b), w)
}

/// Microseconds since the epoch, the unit of every timestamp we write.
pub fn usecs(sec: u32, usec: u32) -> u64 {
    u64::from(sec) * 1_000_000 + u64::from(usec)
}

/// Bytes of an EPB without options for `caplen` bytes of packet.
pub fn epb_len(caplen: usize) -> usize {
    EPB_FIXED + caplen + (4 - caplen % 4) % 4
}

/// An enhanced packet block; `loss` (a comment and the records lost before
/// this one) only on the first record after a loss.
pub fn epb(
    if_id: u32,
    ts_usec: u64,
    len: u32,
    data: &[u8],
    loss: Option<(&str, u64)>,
    w: &mut impl Write,
) -> io::Result<usize> {
    let options = match loss {
        None => Vec::new(),
        Some((comment, n)) => vec![
            EnhancedPacketOption::Comment(Cow::Borrowed(comment)),
            EnhancedPacketOption::DropCount(n),
        ],
    };
    let b = EnhancedPacketBlock {
        interface_id: if_id,
        // pcap-file writes the nanoseconds of the Duration as raw units of
        // if_tsresol (microseconds here).
        timestamp: Duration::from_nanos(ts_usec),
        original_len: len,
        data: Cow::Borrowed(data),
        options,
    };
    write(&Block::EnhancedPacket(b), w)
}

/// The ISB comment on the sensor's own accounting.
pub fn isb_comment(c: &IsbCounts) -> String {
    format!(
        "xrpcap-sensor: {} records written, {} missing by npkt (sequence gaps), {} dropped by the sensor (writer behind)",
        c.delivered, c.missing, c.dropped
    )
}

/// An interface statistics block at `now`.
pub fn isb(if_id: u32, now: SystemTime, c: &IsbCounts, w: &mut impl Write) -> io::Result<usize> {
    let ts = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let comment = isb_comment(c);
    let mut options = Vec::with_capacity(7);
    options.push(InterfaceStatisticsOption::Comment(Cow::Borrowed(&comment)));
    if let Some(s) = c.agent {
        options.push(InterfaceStatisticsOption::IsbIfRecv(s.ifrecv.into()));
        options.push(InterfaceStatisticsOption::IsbIfDrop(s.ifdrop.into()));
        options.push(InterfaceStatisticsOption::IsbOsDrop(s.krnldrop.into()));
        options.push(InterfaceStatisticsOption::IsbFilterAccept(s.svrcapt.into()));
    }
    options.push(InterfaceStatisticsOption::IsbUsrDeliv(c.delivered));
    let b = InterfaceStatisticsBlock {
        interface_id: if_id,
        timestamp: split_ts(ts),
        options,
    };
    write(&Block::InterfaceStatistics(b), w)
}

/// pcap-file writes the ISB timestamp with one `write_u64`; pcapng wants the
/// high 32 bits first, then the low ones, each in the section's byte order.
fn split_ts(ts: u64) -> u64 {
    if cfg!(target_endian = "little") {
        ts.rotate_left(32)
    } else {
        ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::PcapNgReader;

    fn ident() -> SensorId {
        SensorId {
            userappl: "xrpcap-sensor 9.9".into(),
            os: "Linux 6.1".into(),
            hardware: "x86_64".into(),
        }
    }

    /// SHB, IDB, EPB, EPB with loss, ISB: read back by pcap-file's reader.
    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        shb(&ident(), &mut v).unwrap();
        let i = IfaceId {
            name: "10.0.0.2/eth1",
            description: "agent 10.0.0.2:2002, interface eth1",
            linktype: 1,
            snaplen: 1500,
        };
        idb(&i, &mut v).unwrap();
        let n = epb(0, usecs(1_700_000_000, 7), 70, &[9; 61], None, &mut v).unwrap();
        assert_eq!(n, epb_len(61));
        epb(
            0,
            usecs(1_700_000_001, 8),
            3,
            &[1, 2, 3],
            Some(("lost 5", 5)),
            &mut v,
        )
        .unwrap();
        let c = IsbCounts {
            agent: Some(Stats {
                ifrecv: 100,
                ifdrop: 2,
                krnldrop: 3,
                svrcapt: 95,
            }),
            delivered: 2,
            missing: 5,
            dropped: 1,
        };
        isb(
            0,
            UNIX_EPOCH + Duration::from_micros(0x1_2345_6789),
            &c,
            &mut v,
        )
        .unwrap();
        v
    }

    #[test]
    fn blocks_read_back_with_their_options() {
        let bytes = sample();
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let shb = r.section().clone();
        assert!(shb.options.contains(&SectionHeaderOption::UserApplication(
            "xrpcap-sensor 9.9".into()
        )));
        assert!(shb
            .options
            .contains(&SectionHeaderOption::OS("Linux 6.1".into())));
        assert!(shb
            .options
            .contains(&SectionHeaderOption::Hardware("x86_64".into())));
        let mut blocks = Vec::new();
        while let Some(b) = r.next_block() {
            blocks.push(b.unwrap().into_owned());
        }
        let Block::InterfaceDescription(idb) = &blocks[0] else {
            panic!("{:?}", blocks[0])
        };
        assert_eq!(idb.linktype, DataLink::ETHERNET);
        assert!(idb
            .options
            .contains(&InterfaceDescriptionOption::IfName("10.0.0.2/eth1".into())));
        assert!(idb
            .options
            .contains(&InterfaceDescriptionOption::IfTsResol(6)));
        let Block::EnhancedPacket(p) = &blocks[1] else {
            panic!()
        };
        assert_eq!((p.data.len(), p.original_len), (61, 70));
        assert!(p.options.is_empty());
        let Block::EnhancedPacket(p) = &blocks[2] else {
            panic!()
        };
        assert_eq!(&p.data[..], &[1, 2, 3]);
        assert!(p
            .options
            .contains(&EnhancedPacketOption::Comment("lost 5".into())));
        assert!(p.options.contains(&EnhancedPacketOption::DropCount(5)));
        let Block::InterfaceStatistics(s) = &blocks[3] else {
            panic!()
        };
        for o in [
            InterfaceStatisticsOption::IsbIfRecv(100),
            InterfaceStatisticsOption::IsbIfDrop(2),
            InterfaceStatisticsOption::IsbOsDrop(3),
            InterfaceStatisticsOption::IsbFilterAccept(95),
            InterfaceStatisticsOption::IsbUsrDeliv(2),
        ] {
            assert!(s.options.contains(&o), "{o:?} in {:?}", s.options);
        }
    }

    #[test]
    fn timestamps_are_pcapng_high_then_low_words() {
        let bytes = sample();
        // EPB 1 starts after the SHB and the IDB; its timestamp words at +12.
        let u32_at = |off: usize| u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap());
        let shb_len = u32_at(4) as usize;
        let idb_len = u32_at(shb_len + 4) as usize;
        let epb = shb_len + idb_len;
        assert_eq!(u32_at(epb), 6);
        let ts = usecs(1_700_000_000, 7);
        assert_eq!(u32_at(epb + 12), (ts >> 32) as u32);
        assert_eq!(u32_at(epb + 16), ts as u32);
        // The ISB (type 5) is the last block; its timestamp at +12.
        let mut off = epb;
        while u32_at(off) != 5 {
            off += u32_at(off + 4) as usize;
        }
        assert_eq!((u32_at(off + 12), u32_at(off + 16)), (1, 0x2345_6789));
    }
}
