//! Datagrams into a sensor capture (sensor/src/capture.rs and source.rs):
//! udpstr or plain, decided per datagram, from the agent's pinned port or
//! another sender, with STARTCAP restarts in between. It must never panic,
//! every record it takes must be counted once, and the loss counters must
//! stay within what the accepted datagrams could have lost.
//!
//! Input: 2 bytes of snaplen, then datagrams as `ctl u8 | len u16 LE | bytes`;
//! `ctl` bits 0-1 pick the source port, bit 7 restarts the stream first.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use xrpcap_sensor::capture::Capture;
use xrpcap_sensor::source::SourcePin;

fuzz_target!(|input: &[u8]| {
    let Some((snap, mut rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let snaplen = u32::from(u16::from_le_bytes(*snap)).max(1);
    let mut cap = Capture::new("eth0", 1, snaplen, None);
    let mut pin = SourcePin::new("10.0.0.1".parse().unwrap());
    let mut budget = u64::MAX;
    let mut taken = 0u64;
    while let Some((&ctl, tail)) = rest.split_first() {
        let Some((len, tail)) = tail.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (dgram, tail) = tail.split_at(len);
        rest = tail;
        if ctl & 0x80 != 0 {
            cap.restart_stream();
            pin.unpin();
        }
        let from = SocketAddr::new("10.0.0.1".parse().unwrap(), 4000 + u16::from(ctl & 3));
        if pin.admit(Some(from)) {
            cap.on_datagram(dgram, &mut budget);
            taken += 1;
        }
    }
    let c = &cap.counters;
    let u = *cap.udpstr();
    // No output: every record delivered is one write error, once.
    assert_eq!(c.packets, 0);
    assert!(c.write_errors <= u.records + taken, "{c:?} {u:?}");
    // Each datagram the pin let through is classified once by seqno.
    assert!(u.datagrams + u.duplicates + u.reordered + u.rejected <= taken);
    // npkt gaps count at most what the lost datagrams (and the one the
    // gap shows in) could hold: 20 bytes a record, 64 KiB a datagram.
    let per_dgram = 65_535 / 20 + 1;
    let headers = u.records + u.truncated_records + 1;
    assert!(
        u.lost_records <= (u.lost_datagrams + u.reordered + headers) * per_dgram,
        "{u:?}"
    );
});
