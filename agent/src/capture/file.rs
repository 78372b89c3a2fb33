//! Replays a pcap or pcapng file as a capture source, as fast as the worker
//! takes the frames, ending at the end of the file. The filter runs in user
//! space (rpcap's cBPF interpreter), with the kernel's semantics: the program's
//! return value cuts the frame, 0 rejects it.
//!
//! Direction (STARTCAP's INBOUND/OUTBOUND): a pcapng Enhanced Packet Block
//! whose `epb_flags` give the direction (bits 0-1: 1 inbound, 2 outbound) is
//! kept or skipped by it; frames that carry no direction (pcap files,
//! Simple Packet Blocks, no `epb_flags`, direction bits 0) are kept.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use rpcap::bpf::Program;

use super::{CaptureError, Direction, Frame, Polled, Source, SourceStats};

/// Frames handed out per `poll`, so the worker gets control back regularly.
const FRAMES_PER_POLL: usize = 256;

const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

enum Reader {
    Pcap(PcapReader<BufReader<File>>),
    PcapNg {
        reader: PcapNgReader<BufReader<File>>,
        /// Per interface: raw timestamp units per second.
        ts_units: Vec<u64>,
    },
}

/// A pcap/pcapng file being replayed.
pub struct FileSource {
    reader: Reader,
    snaplen: u32,
    filter: Program,
    /// Frames the filter rejected (not reported by STATS; kept for tests and logs).
    rejected: u64,
    direction: Direction,
    /// Frames of the other direction (pcapng `epb_flags`), skipped.
    skipped_direction: u64,
    ended: bool,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("snaplen", &self.snaplen)
            .field("rejected", &self.rejected)
            .field("ended", &self.ended)
            .finish()
    }
}

impl FileSource {
    /// Opens `path` (format chosen by its magic number) with `filter`.
    pub fn open(path: &Path, snaplen: u32, filter: &Program) -> Result<FileSource, CaptureError> {
        let filter = filter.clone();
        let mut f =
            File::open(path).map_err(|e| CaptureError::io("opening the capture file", e))?;
        let mut magic = [0u8; 4];
        f.read_exact(&mut magic)
            .map_err(|e| CaptureError::io("reading the capture file", e))?;
        let f = File::open(path).map_err(|e| CaptureError::io("opening the capture file", e))?;
        let buf = BufReader::new(f);
        let reader = if magic == PCAPNG_MAGIC {
            let r = PcapNgReader::new(buf).map_err(|e| CaptureError::Format(e.to_string()))?;
            Reader::PcapNg {
                reader: r,
                ts_units: Vec::new(),
            }
        } else {
            Reader::Pcap(PcapReader::new(buf).map_err(|e| CaptureError::Format(e.to_string()))?)
        };
        Ok(FileSource {
            reader,
            snaplen,
            filter,
            rejected: 0,
            direction: Direction::Both,
            skipped_direction: 0,
            ended: false,
        })
    }

    /// Keeps only the frames of `direction` among those whose direction
    /// the file records.
    pub fn with_direction(mut self, direction: Direction) -> FileSource {
        self.direction = direction;
        self
    }

    /// Frames skipped as of the other direction so far.
    pub fn skipped_direction(&self) -> u64 {
        self.skipped_direction
    }

    /// Frames the filter rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Runs the filter and the snap length, then the sink. Returns whether
    /// the frame was handed out.
    fn offer<F: FnMut(&Frame<'_>)>(
        filter: &Program,
        snaplen: u32,
        ts_sec: u32,
        ts_usec: u32,
        data: &[u8],
        wire_len: u32,
        sink: &mut F,
    ) -> bool {
        let keep = filter.run(data, wire_len);
        if keep == 0 {
            return false;
        }
        let cut = data.len().min(keep as usize).min(snaplen as usize);
        sink(&Frame {
            ts_sec,
            ts_usec,
            parts: &[&data[..cut]],
            wire_len,
        });
        true
    }
}

/// Whether a pcapng packet with `options` belongs to `direction`: its
/// `epb_flags` direction bits (1 inbound, 2 outbound); unknown: kept.
fn wanted(direction: Direction, options: &[EnhancedPacketOption<'_>]) -> bool {
    let recorded = options.iter().find_map(|o| match o {
        EnhancedPacketOption::Flags(f) => Some(f & 0b11),
        _ => None,
    });
    !matches!(
        (direction, recorded),
        (Direction::In, Some(2)) | (Direction::Out, Some(1))
    )
}

/// Timestamp units per second of a pcapng interface (if_tsresol; default µs).
fn units_per_sec(options: &[InterfaceDescriptionOption<'_>]) -> u64 {
    for o in options {
        if let InterfaceDescriptionOption::IfTsResol(r) = o {
            let exp = u32::from(r & 0x7F);
            let base: u64 = if r & 0x80 != 0 { 2 } else { 10 };
            return base.checked_pow(exp).unwrap_or(1_000_000).max(1);
        }
    }
    1_000_000
}

impl Source for FileSource {
    fn poll<F: FnMut(&Frame<'_>)>(
        &mut self,
        _timeout: Duration,
        sink: &mut F,
    ) -> Result<Polled, CaptureError> {
        if self.ended {
            return Ok(Polled::End);
        }
        let mut frames = 0;
        let mut read = 0;
        while read < FRAMES_PER_POLL {
            read += 1;
            match &mut self.reader {
                Reader::Pcap(r) => {
                    let Some(p) = r.next_packet() else {
                        self.ended = true;
                        break;
                    };
                    let p = p.map_err(|e| CaptureError::Format(e.to_string()))?;
                    let ts_sec = p.timestamp.as_secs() as u32;
                    let ts_usec = p.timestamp.subsec_micros();
                    if Self::offer(
                        &self.filter,
                        self.snaplen,
                        ts_sec,
                        ts_usec,
                        &p.data,
                        p.orig_len,
                        sink,
                    ) {
                        frames += 1;
                    } else {
                        self.rejected += 1;
                    }
                }
                Reader::PcapNg { reader, ts_units } => {
                    let Some(b) = reader.next_block() else {
                        self.ended = true;
                        break;
                    };
                    let b = b.map_err(|e| CaptureError::Format(e.to_string()))?;
                    let (ts_raw, if_id, wire_len, data) = match &b {
                        Block::InterfaceDescription(idb) => {
                            ts_units.push(units_per_sec(&idb.options));
                            continue;
                        }
                        Block::SectionHeader(_) => {
                            ts_units.clear();
                            continue;
                        }
                        // pcap-file reads the raw timestamp into nanoseconds
                        // without looking at if_tsresol: undo that here.
                        Block::EnhancedPacket(p) if !wanted(self.direction, &p.options) => {
                            self.skipped_direction += 1;
                            continue;
                        }
                        Block::EnhancedPacket(p) => (
                            p.timestamp.as_nanos() as u64,
                            p.interface_id as usize,
                            p.original_len,
                            &p.data[..],
                        ),
                        Block::SimplePacket(p) => (0, 0, p.original_len, &p.data[..]),
                        _ => continue,
                    };
                    let units = ts_units.get(if_id).copied().unwrap_or(1_000_000);
                    let ts_sec = (ts_raw / units) as u32;
                    let ts_usec = ((ts_raw % units) as u128 * 1_000_000 / units as u128) as u32;
                    if Self::offer(
                        &self.filter,
                        self.snaplen,
                        ts_sec,
                        ts_usec,
                        data,
                        wire_len,
                        sink,
                    ) {
                        frames += 1;
                    } else {
                        self.rejected += 1;
                    }
                }
            }
        }
        if frames == 0 && self.ended {
            return Ok(Polled::End);
        }
        Ok(Polled::Frames(frames))
    }

    fn set_filter(&mut self, filter: &Program) -> Result<(), CaptureError> {
        self.filter = filter.clone();
        Ok(())
    }

    fn stats(&mut self) -> SourceStats {
        SourceStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::DataLink;
    use std::borrow::Cow;

    /// Replays a pcapng of three packets (epb_flags inbound, outbound, none)
    /// with `direction`; returns the first bytes of the frames kept and how
    /// many were skipped.
    fn replay(direction: Direction) -> (Vec<u8>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pcapng");
        let mut w = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
        for (tag, flags) in [(1u8, Some(1)), (2, Some(2)), (3, None)] {
            let data = vec![tag; 60];
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_micros(1),
                original_len: 60,
                data: Cow::Owned(data),
                options: flags.map(EnhancedPacketOption::Flags).into_iter().collect(),
            })
            .unwrap();
        }
        drop(w);
        let mut src = FileSource::open(&path, 1000, &Program::accept_all())
            .unwrap()
            .with_direction(direction);
        let mut kept = Vec::new();
        while let Polled::Frames(_) = src
            .poll(Duration::ZERO, &mut |f: &Frame<'_>| {
                kept.push(f.parts[0][0])
            })
            .unwrap()
        {}
        (kept, src.skipped_direction())
    }

    #[test]
    fn pcapng_direction_flags_select_frames_and_unknown_ones_are_kept() {
        assert_eq!(replay(Direction::Both), (vec![1, 2, 3], 0));
        assert_eq!(replay(Direction::In), (vec![1, 3], 1));
        assert_eq!(replay(Direction::Out), (vec![2, 3], 1));
    }
}
