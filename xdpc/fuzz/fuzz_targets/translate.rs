//! Valid cBPF programs → the XDP compilers, checked against rpcap's
//! interpreter without root (running the eBPF itself needs the kernel:
//! `agent/tests/xdp_filter.rs` does that as root).
//!
//! Input: `n u8` (instruction count, 1..=64) | n × 8 bytes (`op jt jf kind
//! k:u32`) | the frame. Each instruction is mapped onto a valid cBPF one
//! (any opcode the validator admits, jumps kept in range, memory slots and
//! shifts in bounds, offsets mostly within a frame's headers, so paths the
//! rules understand come up often); the last is a `ret`. Then:
//! - `check` and `translate` never panic, agree on whether the program
//!   translates and on its keep length, and every translation (with and
//!   without frags, test and capture verdicts) passes the structural check:
//!   jumps forward and inside the program, never into an `ld_imm64`, ends
//!   with `exit`;
//! - the pre-filter rules never reject a frame the interpreter accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcap::bpf::opcode::*;
use rpcap::bpf::{validate, Insn, Program};
use xdpc::{CounterSlots, Limits, Verdict, XdpRules};

/// Constants libpcap compares with: ethertypes, protocols, ports, masks.
const KS: &[u32] = &[
    0x0800, 0x86dd, 0x0806, 0x8100, 6, 17, 1, 58, 0x2c, 53, 80, 443, 0x1fff, 0xff00, 0xffff,
    0xffff_ff00, 0xffff_0000, 0x0a00_0000, 0x2001_0db8, 0xfe80_0000, 65535, 262_144,
];

const LIMITS: Limits = Limits {
    port_ranges: 16,
    prefixes: 256,
};

fn program(n: usize, raw: &[u8]) -> Vec<Insn> {
    raw.chunks_exact(8)
        .take(n)
        .enumerate()
        .map(|(pc, c)| {
            let left = (n - pc - 1) as u32; // instructions after this one
            let raw_k = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
            let kind = c[3];
            if pc + 1 == n {
                // The last: accept (a length or all) or reject.
                let k = match kind % 4 {
                    0 => 0,
                    1 => 65535,
                    2 => 262_144,
                    _ => raw_k,
                };
                return Insn::stmt(if kind & 0x80 != 0 { RET_A } else { RET_K }, k);
            }
            let code = ALL[usize::from(c[0]) % ALL.len()];
            let k = match code {
                LD_MEM | LDX_MEM | ST | STX => raw_k % 16,
                ALU_LSH_K | ALU_RSH_K => raw_k % 32,
                ALU_DIV_K | ALU_MOD_K => raw_k.max(1),
                JMP_JA => raw_k % left.max(1),
                LD_W_ABS | LD_H_ABS | LD_B_ABS | LD_W_IND | LD_H_IND | LD_B_IND | LDX_B_MSH => {
                    match kind % 8 {
                        0 => raw_k,
                        _ => raw_k % 80,
                    }
                }
                _ => match kind % 4 {
                    0 => raw_k,
                    _ => KS[raw_k as usize % KS.len()],
                },
            };
            let (jt, jf) = match left {
                0 => (0, 0),
                l => ((u32::from(c[1]) % l) as u8, (u32::from(c[2]) % l) as u8),
            };
            Insn::new(code, jt, jf, k)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 64) + 1;
    let Some(raw) = rest.get(..n * 8) else {
        return;
    };
    let frame = &rest[n * 8..];
    let insns = program(n, raw);
    if validate(&insns).is_err() {
        // The mapping keeps every instruction valid except a jump at the
        // second-to-last position and similar edges: skip those.
        return;
    }

    // Translation: never panics, agrees with check, is well formed.
    let checked = xdpc::check(&insns);
    let prog = rpcap::bpf::Program::new(insns.clone()).expect("validated");
    let capture = Verdict::Capture {
        xsks_fd: 3,
        counters_fd: 4,
        counters: CounterSlots {
            redirected: 1,
            redirect_err: 4,
            passed: 2,
            dropped: 3,
            filtered: 6,
        },
        drop_rejected: frame.first().is_some_and(|b| b & 1 != 0),
    };
    let test = Verdict::Test {
        accept: xdpc::XDP_PASS,
        reject: xdpc::XDP_DROP,
    };
    for verdict in [capture, test] {
        for frags in [false, true] {
            match (xdpc::translate(&prog, verdict, frags), &checked) {
                (Ok(t), Ok(keep)) => {
                    assert_eq!(t.keep(), *keep, "{insns:?}");
                    if let Err(e) = t.check_structure() {
                        panic!("{insns:?} (frags {frags}): {e}");
                    }
                    assert_eq!(t.bytes().len(), 8 * t.len());
                }
                (Err(e), Err(c)) => assert_eq!(&e, c, "{insns:?}"),
                (t, c) => panic!("translate {t:?} but check {c:?}: {insns:?}"),
            }
        }
    }

    // The pre-filter: a superset of what the program accepts.
    let rules = XdpRules::derive(&insns, &LIMITS);
    let prog = Program::new(insns).expect("validated");
    if prog.run(frame, frame.len() as u32) != 0 {
        assert!(
            rules.matches(frame),
            "rules {rules:?} reject a frame the program accepts: {:?} on {frame:02x?}",
            prog.insns()
        );
    }
});
