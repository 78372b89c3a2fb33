//! Captured bytes from anywhere (a hostile mirror source, a broken switch)
//! into the decapsulation: it never panics, an inner frame is a slice of
//! the input (zero-copy), never longer than what was captured, and its
//! wire length is at least its captured length. The first byte picks the
//! tunnel and the entry point (Ethernet, or the network layer as the raw
//! and cooked link types use it); the next four are the wire length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrpcapd::tunnel::decap::{raw_ethertype, Decap, Inner};

fuzz_target!(|data: &[u8]| {
    let [sel, w0, w1, w2, w3, frame @ ..] = data else {
        return;
    };
    let spec = ["vxlan", "geneve", "gre", "erspan", "vxlan:1", "erspan:5@10.0.0.0/8"]
        [usize::from(sel % 6)];
    let d = Decap::new(spec.parse().unwrap());
    let wire = u32::from_le_bytes([*w0, *w1, *w2, *w3]);
    let r = if sel & 0x80 == 0 {
        d.ethernet(frame, wire)
    } else {
        d.network(raw_ethertype(frame), frame, wire)
    };
    if let Ok(Inner {
        frame: inner,
        wire_len,
        synth,
        ..
    }) = r
    {
        let start = inner.as_ptr() as usize - frame.as_ptr() as usize;
        assert!(start + inner.len() <= frame.len());
        let caplen = inner.len() + synth.map_or(0, |h| h.len());
        assert!(wire_len as usize >= caplen);
        assert!(wire_len <= wire);
    }
});
