//! Capture files: every packet of a pcap or pcapng file, also while the
//! file is still being written.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};

/// One captured packet as stored in a capture file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Time since the epoch.
    pub ts: Duration,
    /// Bytes stored in the file (`data.len()`).
    pub caplen: u32,
    /// Length of the packet on the wire.
    pub len: u32,
    pub data: Vec<u8>,
}

/// Each packet's wire length and bytes: what byte-exact comparisons of
/// two captures look at.
pub fn len_and_data(p: &[Packet]) -> Vec<(u32, Vec<u8>)> {
    p.iter().map(|p| (p.len, p.data.clone())).collect()
}

/// Reads every packet of a pcap or pcapng file (told apart by magic number).
/// A truncated or malformed file is an error.
pub fn read_pcap(path: &Path) -> Result<Vec<Packet>> {
    let path = &live(path);
    read_packets(path, false).with_context(|| format!("reading {}", path.display()))
}

/// The file to read for `path`: the sensor writes `NAME.part` and renames
/// it to `NAME` once complete, so while it runs (or after a crash) `NAME`
/// is `NAME.part`.
pub fn live(path: &Path) -> PathBuf {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    if !path.exists() && part.exists() {
        part
    } else {
        path.to_path_buf()
    }
}

/// Reads the packets of a file that may still be being written: stops at the
/// first incomplete record instead of failing. A file too short for its
/// header yields no packets.
pub(crate) fn read_packets_so_far(path: &Path) -> Result<Vec<Packet>> {
    read_packets(path, true)
}

const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

fn read_packets(path: &Path, partial_ok: bool) -> Result<Vec<Packet>> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path)?;
    if let Err(e) = file.read_exact(&mut magic) {
        if partial_ok {
            return Ok(Vec::new());
        }
        return Err(e).context("file shorter than a capture header");
    }
    let file = File::open(path)?; // pcap-file buffers its input itself
    if magic == PCAPNG_MAGIC {
        read_pcapng(file, partial_ok)
    } else {
        read_classic(file, partial_ok)
    }
}

fn read_classic(file: impl Read, partial_ok: bool) -> Result<Vec<Packet>> {
    let mut reader = match PcapReader::new(file) {
        Ok(r) => r,
        Err(_) if partial_ok => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut packets = Vec::new();
    while let Some(next) = reader.next_packet() {
        match next {
            Ok(p) => packets.push(Packet {
                ts: p.timestamp,
                caplen: p.data.len() as u32,
                len: p.orig_len,
                data: p.data.into_owned(),
            }),
            Err(_) if partial_ok => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(packets)
}

fn read_pcapng(file: impl Read, partial_ok: bool) -> Result<Vec<Packet>> {
    let mut reader = match PcapNgReader::new(file) {
        Ok(r) => r,
        Err(_) if partial_ok => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut packets = Vec::new();
    // if_tsresol of each interface of the current section, by interface id.
    let mut tsresols: Vec<u8> = Vec::new();
    while let Some(next) = reader.next_block() {
        let block = match next {
            Ok(b) => b,
            Err(_) if partial_ok => break,
            Err(e) => return Err(e.into()),
        };
        match block {
            Block::SectionHeader(_) => tsresols.clear(),
            Block::InterfaceDescription(idb) => {
                let tsresol = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                    _ => None,
                });
                tsresols.push(tsresol.unwrap_or(6)); // default 10^-6 s
            }
            Block::EnhancedPacket(epb) => {
                let Some(&tsresol) = tsresols.get(epb.interface_id as usize) else {
                    bail!("packet refers to unknown interface {}", epb.interface_id);
                };
                // pcap-file 2 reads the raw 64-bit timestamp as nanoseconds;
                // rescale it by the interface's if_tsresol.
                packets.push(Packet {
                    ts: scale_timestamp(epb.timestamp.as_nanos(), tsresol)?,
                    caplen: epb.data.len() as u32,
                    len: epb.original_len,
                    data: epb.data.into_owned(),
                });
            }
            Block::SimplePacket(spb) => packets.push(Packet {
                ts: Duration::ZERO, // simple packet blocks carry no timestamp
                caplen: spb.data.len() as u32,
                len: spb.original_len,
                data: spb.data.into_owned(),
            }),
            _ => {}
        }
    }
    Ok(packets)
}

/// Converts a pcapng timestamp in units given by if_tsresol (high bit clear:
/// 10^-v seconds; set: 2^-v seconds) to a Duration.
fn scale_timestamp(raw: u128, tsresol: u8) -> Result<Duration> {
    let v = u32::from(tsresol & 0x7f);
    let units_per_sec: u128 = if tsresol & 0x80 == 0 {
        10u128.checked_pow(v)
    } else {
        1u128.checked_shl(v)
    }
    .filter(|u| *u > 0)
    .with_context(|| format!("unsupported if_tsresol {tsresol:#x}"))?;
    let secs = raw / units_per_sec;
    let nanos = (raw % units_per_sec) * 1_000_000_000 / units_per_sec;
    Ok(Duration::new(secs as u64, nanos as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_scale_by_tsresol() {
        // default microseconds
        assert_eq!(
            scale_timestamp(1_500_000, 6).unwrap(),
            Duration::new(1, 500_000_000)
        );
        // nanoseconds
        assert_eq!(
            scale_timestamp(2_000_000_007, 9).unwrap(),
            Duration::new(2, 7)
        );
        // 2^-10 seconds: 1024 units = 1 s, 512 = 0.5 s
        assert_eq!(
            scale_timestamp(1024 + 512, 0x80 | 10).unwrap(),
            Duration::new(1, 500_000_000)
        );
        assert!(scale_timestamp(1, 0x7f).is_err());
    }
}
