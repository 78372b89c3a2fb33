//! One running capture on the sensor side: takes data-channel datagrams or
//! PACKET messages, reassembles records, accounts for every loss, and writes
//! the records to the capture's output.

use rpcap::plain;
use rpcap::udpstr::{Deframer, DeframerStats, MAX_AHEAD, RESYNC_RUN};
use rpcap::{MsgType, PktHdr};
use sys::mmsg::Meta;

use crate::delay::{self, Delay};
use crate::output::Output;
use crate::tap::TapSink;

/// What happened to a capture's data, besides the deframer's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records written to the output.
    pub packets: u64,
    /// Packet bytes written (sum of caplen).
    pub bytes: u64,
    /// Plain format: packets missing according to npkt gaps.
    pub plain_lost: u64,
    /// Plain format: packets whose npkt was not beyond the last one (duplicates
    /// or late arrivals); dropped.
    pub plain_dups: u64,
    /// Plain format: packets whose npkt is beyond [`MAX_AHEAD`] of the last
    /// one and not confirmed by a run (forged or replayed); dropped.
    pub plain_rejected: u64,
    /// Plain-format datagrams or messages that could not be read, and
    /// datagrams that are neither udpstr nor plain.
    pub malformed: u64,
    /// Datagrams from an address other than the agent's.
    pub foreign: u64,
    /// Datagrams the socket dropped for lack of buffer (SO_RXQ_OVFL).
    pub socket_drops: u64,
    /// Datagrams that arrived several to a buffer (UDP GRO): whether the
    /// path merges them, and how much.
    pub gro_datagrams: u64,
    /// Records not written because the output failed.
    pub write_errors: u64,
    /// Records dropped because the writer was behind (no free buffer).
    pub write_drops: u64,
    /// Records dropped because the disk had less room than --min-free.
    pub disk_floor_drops: u64,
    /// Datagrams that reached the capture's port after it was closed.
    pub late: u64,
    /// Records received after `--count` was reached (not written).
    pub over_count: u64,
    /// `--tap`: frames written onto the TAP interface.
    pub tap_frames: u64,
    /// `--tap`: frames the TAP did not take (busy: EAGAIN/ENOBUFS, or down).
    pub tap_drops: u64,
    /// `--tap`: frames not written because the link type is not Ethernet.
    pub tap_skipped: u64,
}

pub struct Capture {
    pub iface: String,
    pub linktype: i32,
    pub snaplen: u32,
    deframer: Deframer,
    /// Plain format: the last npkt seen (0 = none yet).
    plain_last: u32,
    /// Plain format: npkts beyond the window in a row (the next one, how many).
    plain_run: Option<(u32, u32)>,
    pub counters: Counters,
    output: Option<Output>,
    write_error_logged: bool,
    /// `--tap`/`--tap-per-agent`: where records go besides the output.
    tap: Option<TapSink>,
    /// Whether the capture had a TAP (its counters go in the final line).
    pub tapped: bool,
    /// Capture-to-sensor delay of the records written or not.
    pub delay: Delay,
}

impl Capture {
    /// A capture writing to `output`; without one, records are counted
    /// (as write errors) and not written, as after the output is settled.
    pub fn new(iface: &str, linktype: i32, snaplen: u32, output: Option<Output>) -> Capture {
        Capture {
            iface: iface.to_string(),
            linktype,
            snaplen,
            deframer: Deframer::new(snaplen as usize),
            plain_last: 0,
            plain_run: None,
            counters: Counters::default(),
            output,
            write_error_logged: false,
            tap: None,
            tapped: false,
            delay: Delay::default(),
        }
    }

    /// Records go onto `sink` too (written records only: not beyond `--count`).
    pub fn set_tap(&mut self, sink: TapSink) {
        self.tap = Some(sink);
        self.tapped = true;
    }

    /// Ends the TAP output (a per-agent TAP goes away with its last handle).
    pub fn take_tap(&mut self) -> Option<TapSink> {
        self.tap.take()
    }

    pub fn udpstr(&self) -> &DeframerStats {
        self.deframer.stats()
    }

    /// Records that did not arrive whole, in either format: udpstr records
    /// missing by npkt plus those whose end was lost, and plain npkt gaps.
    pub fn lost(&self) -> u64 {
        let u = self.deframer.stats();
        u.lost_records + u.truncated_records + self.counters.plain_lost
    }

    /// The agent starts the capture anew (a new STARTCAP): seqno and npkt
    /// count from the start again. Counters and output go on.
    pub fn restart_stream(&mut self) {
        self.deframer.reset();
        if let Some(o) = self.output.as_mut() {
            o.restart_numbering();
        }
        self.plain_last = 0;
        self.plain_run = None;
    }

    pub fn output(&mut self) -> Option<&mut Output> {
        self.output.as_mut()
    }

    /// One receive buffer `buf` of the data channel (`m`: one datagram, or
    /// several of one sender with UDP GRO), from the capture's pinned source
    /// (`admitted`) or not; counted per datagram.
    pub fn on_buffer(&mut self, buf: &[u8], m: &Meta, admitted: bool, budget: &mut u64) {
        let count = m.count() as u64;
        if !admitted {
            self.counters.foreign += count;
        } else if m.truncated {
            self.counters.malformed += count;
        } else {
            if count > 1 {
                self.counters.gro_datagrams += count;
            }
            let at = m.arrived_us.unwrap_or_else(delay::now_us);
            for d in m.datagrams(buf) {
                self.on_datagram_at(d, at, budget);
            }
        }
    }

    /// One UDP datagram of the data channel, received now.
    pub fn on_datagram(&mut self, dgram: &[u8], budget: &mut u64) {
        self.on_datagram_at(dgram, delay::now_us(), budget)
    }

    /// One UDP datagram of the data channel, received at `at_us` (µs since
    /// the epoch): udpstr (type 110) or plain (type 7), decided per
    /// datagram. `budget` is how many more records may be written.
    pub fn on_datagram_at(&mut self, dgram: &[u8], at_us: u64, budget: &mut u64) {
        match dgram.get(1).copied() {
            Some(t) if t == MsgType::UdpStrPacket as u8 => {
                let (out, c, logged, tap, delay) = (
                    &mut self.output,
                    &mut self.counters,
                    &mut self.write_error_logged,
                    &mut self.tap,
                    &mut self.delay,
                );
                // Errors are counted by the deframer itself (stats().malformed).
                let _ = self.deframer.push(dgram, |h, data| {
                    delay.observe(at_us, h);
                    write_record(out, c, logged, tap, budget, h, data)
                });
            }
            Some(t) if t == MsgType::Packet as u8 => match plain::decode(dgram) {
                Ok((h, data)) => self.on_plain_record(&h, data, at_us, budget),
                Err(_) => self.counters.malformed += 1,
            },
            _ => self.counters.malformed += 1,
        }
    }

    /// The payload of one PACKET message from a TCP data channel.
    pub fn on_packet_payload(&mut self, payload: &[u8], budget: &mut u64) {
        match plain::decode_payload(payload) {
            Ok((h, data)) => self.on_plain_record(&h, data, delay::now_us(), budget),
            Err(_) => self.counters.malformed += 1,
        }
    }

    fn on_plain_record(&mut self, h: &PktHdr, data: &[u8], at_us: u64, budget: &mut u64) {
        if data.len() > self.snaplen as usize {
            self.counters.malformed += 1;
            return;
        }
        let ahead = h.npkt.wrapping_sub(self.plain_last);
        if self.plain_last != 0 && (ahead == 0 || ahead >= 1 << 31) {
            self.counters.plain_dups += 1;
            return;
        }
        // A jump beyond the window is believed only when a run of
        // consecutive npkts confirms it: one forged packet must not move the
        // baseline (every real packet after it would be a "duplicate") nor
        // inflate the loss count.
        if self.plain_last != 0 && ahead > MAX_AHEAD {
            let run = match self.plain_run {
                Some((next, n)) if next == h.npkt => n + 1,
                _ => 1,
            };
            if run < RESYNC_RUN {
                self.plain_run = Some((h.npkt.wrapping_add(1), run));
                self.counters.plain_rejected += 1;
                return;
            }
        }
        self.plain_run = None;
        // npkt starts at 1: a first packet with npkt 3 means 2 were lost.
        // (A first packet far ahead has nothing to confirm it: no count.)
        if self.plain_last != 0 || ahead <= MAX_AHEAD {
            self.counters.plain_lost += u64::from(ahead.saturating_sub(1));
        }
        self.plain_last = h.npkt;
        self.delay.observe(at_us, h);
        write_record(
            &mut self.output,
            &mut self.counters,
            &mut self.write_error_logged,
            &mut self.tap,
            budget,
            h,
            data,
        );
    }

    /// Hands the last records to the writer; returns the files written.
    /// The counters are final once [`Capture::is_written`] (see `settle`).
    ///
    /// The session is over, so a udpstr record whose start arrived and whose
    /// end did not (the agent's last datagram carried only its start) never
    /// will: it counts in `truncated_records` (and `lost`). It is not
    /// written: pcap allows caplen < len only for bytes the capture kept,
    /// and these were cut by the transport, not by the snaplen.
    pub fn finish(&mut self) -> Vec<std::path::PathBuf> {
        self.deframer.reset();
        match self.output.as_mut() {
            Some(o) => {
                o.close();
                o.files().to_vec()
            }
            None => Vec::new(),
        }
    }

    /// Whether the writer is done with everything this capture handed it.
    pub fn is_written(&self) -> bool {
        self.output.as_ref().is_none_or(Output::is_written)
    }

    /// Moves records the writer failed to write from `packets`/`bytes` to
    /// `write_errors`, and closes the file. Call once, after `finish`.
    pub fn settle(&mut self) {
        if let Some(o) = self.output.take() {
            let (records, bytes) = o.errors();
            let c = &mut self.counters;
            c.packets -= records.min(c.packets);
            c.bytes -= bytes.min(c.bytes);
            c.write_errors += records;
            c.write_drops = o.write_drops;
            c.disk_floor_drops = o.floor_drops;
        }
    }
}

fn write_record(
    out: &mut Option<Output>,
    c: &mut Counters,
    logged: &mut bool,
    tap: &mut Option<TapSink>,
    budget: &mut u64,
    h: &PktHdr,
    data: &[u8],
) {
    if *budget == 0 {
        c.over_count += 1;
        return;
    }
    if let Some(t) = tap.as_mut() {
        t.send(data, c);
    }
    let Some(o) = out.as_mut() else {
        c.write_errors += 1;
        return;
    };
    match o.write(h, data) {
        Ok(true) => {
            *budget -= 1;
            c.packets += 1;
            c.bytes += data.len() as u64;
        }
        Ok(false) => {
            c.write_drops = o.write_drops;
            c.disk_floor_drops = o.floor_drops;
        }
        Err(e) => {
            c.write_errors += 1;
            if !*logged {
                log::error!(
                    "writing {}: {e} (further records of this capture are counted as write errors)",
                    o.dest_name()
                );
                *logged = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcap::header::{Header, MsgType};

    /// A plain-format datagram: one record with `npkt`.
    fn plain(npkt: u32) -> Vec<u8> {
        let h = PktHdr {
            ts_sec: 1,
            ts_usec: 2,
            caplen: 4,
            len: 4,
            npkt,
        };
        let mut v = Header::new(MsgType::Packet, 0, (PktHdr::LEN + 4) as u32)
            .to_bytes()
            .to_vec();
        v.extend_from_slice(&h.to_bytes());
        v.extend_from_slice(&[1, 2, 3, 4]);
        v
    }

    /// The udpstr datagrams of `records` (caplen each) framed in datagrams
    /// of `size` bytes, npkt from 1.
    fn udpstr(records: &[usize], size: usize) -> Vec<Vec<u8>> {
        use rpcap::udpstr::{Batch, Framer};
        let mut f = Framer::new(size).unwrap();
        let mut b = Batch::new(size, 64);
        for (i, &n) in records.iter().enumerate() {
            let h = PktHdr {
                ts_sec: 1,
                ts_usec: i as u32,
                caplen: n as u32,
                len: n as u32,
                npkt: i as u32 + 1,
            };
            f.push(&mut b, &h, &vec![i as u8; n]).unwrap();
        }
        f.flush(&mut b);
        b.datagrams().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn a_record_cut_off_by_the_end_of_the_session_is_counted_not_written() {
        // Issue 14 item 9: 60 bytes whole, then 300 bytes over datagrams of
        // 200; the agent's last datagram carried only the second's start.
        let dgrams = udpstr(&[60, 300], 200);
        assert_eq!(dgrams.len(), 3);
        let mut c = Capture::new("eth0", 1, 1000, None);
        let mut budget = u64::MAX;
        for d in &dgrams[..2] {
            c.on_datagram(d, &mut budget);
        }
        // Without an output every record handed over is a write error.
        assert_eq!(c.counters.write_errors, 1, "the whole record is taken");
        assert_eq!(c.udpstr().truncated_records, 0, "its end may still come");
        c.finish();
        assert_eq!(c.counters.write_errors, 1, "the cut record is not written");
        assert_eq!((c.udpstr().truncated_records, c.lost()), (1, 1));
        let peer = "192.0.2.1:2003".parse().unwrap();
        let line = crate::summary::final_line(&peer, &c, None, &[]);
        assert!(line.contains(" truncated_records=1 "), "{line}");
        assert!(line.contains(" lost=1 "), "{line}");

        // All of it arrived: nothing is truncated.
        let mut c = Capture::new("eth0", 1, 1000, None);
        for d in &dgrams {
            c.on_datagram(d, &mut budget);
        }
        c.finish();
        assert_eq!(c.counters.write_errors, 2);
        assert_eq!((c.udpstr().truncated_records, c.lost()), (0, 0));
    }

    #[test]
    fn the_delay_runs_to_the_kernels_receive_time_when_it_came_with_the_buffer() {
        // Records stamped 1 s + 0..3 µs; the kernel received the buffer at
        // 1.05 s, whenever this thread got round to reading it.
        let dgrams = udpstr(&[60, 60, 60], 1000);
        assert_eq!(dgrams.len(), 1);
        let meta = |arrived_us| Meta {
            len: dgrams[0].len(),
            from: None,
            overflow: None,
            truncated: false,
            segment: None,
            arrived_us,
        };
        let mut budget = u64::MAX;
        let mut c = Capture::new("eth0", 1, 1000, None);
        c.on_buffer(&dgrams[0], &meta(Some(1_050_000)), true, &mut budget);
        assert_eq!((c.delay.max_us, c.delay.mean_us()), (50_000, 49_999));
        // Without it: the time of reading (now, decades after 1970).
        let mut c = Capture::new("eth0", 1, 1000, None);
        c.on_buffer(&dgrams[0], &meta(None), true, &mut budget);
        assert!(c.delay.max_us > 1_000_000_000_000_000, "{:?}", c.delay);
    }

    #[test]
    fn plain_npkt_far_ahead_is_rejected_unless_a_run_confirms_it() {
        // Issue 12: one forged npkt made every later packet a "duplicate"
        // and added up to 2^31 to the loss count.
        let mut c = Capture::new("eth0", 1, 100, None);
        let mut budget = u64::MAX;
        for n in 1..=5 {
            c.on_datagram(&plain(n), &mut budget);
        }
        c.on_datagram(&plain(1 << 30), &mut budget);
        for n in 6..=10 {
            c.on_datagram(&plain(n), &mut budget);
        }
        assert_eq!(c.counters.write_errors, 10, "every real packet taken");
        assert_eq!((c.counters.plain_lost, c.counters.plain_rejected), (0, 1));
        // A replay is a duplicate, never taken again.
        c.on_datagram(&plain(3), &mut budget);
        assert_eq!((c.counters.write_errors, c.counters.plain_dups), (10, 1));
        // The agent really is far ahead (a long stall): a run moves there.
        let far = 10 + MAX_AHEAD + 5;
        for n in far..far + RESYNC_RUN + 1 {
            c.on_datagram(&plain(n), &mut budget);
        }
        assert_eq!(c.counters.write_errors, 12);
        assert_eq!(
            c.counters.plain_lost,
            u64::from(far + RESYNC_RUN - 1 - 10 - 1)
        );
    }
}
