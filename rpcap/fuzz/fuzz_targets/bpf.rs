//! Bytes → BPF program → validate → run (and compose) on a packet.
//!
//! Input: `n u8` (instruction count, 1..=256) | n × (`code u16 | jt u8 |
//! jf u8 | k u32`, big-endian like the STARTCAP body) | `wirelen extra u16` |
//! the packet. Never panics: validation errors are fine, and a validated
//! program must run to completion on any packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcap::bpf::{and_then, validate, Insn, Program};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n) + 1;
    let Some(raw) = rest.get(..n * 8) else {
        return;
    };
    let insns: Vec<Insn> = raw
        .chunks_exact(8)
        .map(|c| {
            Insn::new(
                u16::from_be_bytes([c[0], c[1]]),
                c[2],
                c[3],
                u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    let rest = &rest[n * 8..];
    let (extra, pkt) = match rest {
        [a, b, pkt @ ..] => (u32::from(u16::from_be_bytes([*a, *b])), pkt),
        _ => (0, rest),
    };
    if validate(&insns).is_err() {
        return;
    }
    let prog = Program::new(insns).expect("validated");
    let wirelen = pkt.len() as u32 + extra;
    let verdict = prog.run(pkt, wirelen);
    assert_eq!(prog.run(pkt, wirelen), verdict, "runs are independent");
    // Composition keeps the verdict: accept-all first, then the program.
    let composed = and_then(Program::accept_all().insns(), prog.insns()).expect("fits");
    assert_eq!(composed.run(pkt, wirelen), verdict);
});
