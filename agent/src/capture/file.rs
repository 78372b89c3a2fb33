//! Replays a pcap or pcapng file as a capture source, as fast as the worker
//! takes the frames, ending at the end of the file. The filter runs in user
//! space (rpcap's cBPF interpreter), with the kernel's semantics: the program's
//! return value cuts the frame, 0 rejects it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use rpcap::bpf::Program;

use super::{CaptureError, Frame, Polled, Source, SourceStats};

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
            ended: false,
        })
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
