//! The cBPF → eBPF translation of `xdpc::translate` against rpcap's
//! interpreter: each program is translated in test mode (accept → XDP_PASS,
//! reject → XDP_DROP), loaded into the kernel and run with
//! BPF_PROG_TEST_RUN on every frame; the verdicts must be the interpreter's.
//! Frames beyond a page are multi-buffer input (the program is translated
//! for and loaded with BPF_F_XDP_HAS_FRAGS), so loads past the linear part
//! go through bpf_xdp_load_bytes; frames that fit a page also run through
//! the translation without frags (the linear part is the frame). Needs root
//! (bpf(2)).

// The expression and frame corpus shared with rpcap's differential tests.

use rpcap::bpf::opcode::*;
use rpcap::bpf::{Insn, Program};
use xdpc::XdpRules;
use xdpc::{translate, Verdict, XDP_DROP, XDP_PASS};
use xrpcap_testkit::bpf_corpus::{compile, frame, Rng, EXPRS};
use xrpcapd::capture::afxdp::program::{FilterPlace, FilterProg, XdpProgram};

const TEST: Verdict = Verdict::Test {
    accept: XDP_PASS,
    reject: XDP_DROP,
};
/// Larger frames do not fit the linear part of a test run without frags.
const LINEAR_MAX: usize = 3000;

fn load(prog: &[Insn], frags: bool) -> FilterProg {
    let valid = Program::new(prog.to_vec()).unwrap_or_else(|e| panic!("{prog:?}: {e}"));
    let t = translate(&valid, TEST, frags).unwrap_or_else(|e| panic!("translate {prog:?}: {e}"));
    FilterProg::load(&t, frags).unwrap_or_else(|e| panic!("load {prog:?}: {e}"))
}

/// The XDP verdict: true = accept.
fn xdp(p: &FilterProg, frame: &[u8]) -> bool {
    match p.test_run(frame) {
        Ok(XDP_PASS) => true,
        Ok(XDP_DROP) => false,
        Ok(other) => panic!("unexpected XDP action {other}"),
        Err(e) => panic!("BPF_PROG_TEST_RUN on {} bytes: {e}", frame.len()),
    }
}

/// The corpus frames (whole frames, as XDP sees them: caplen = wire
/// length, at least an Ethernet header long), some grown beyond 4 KiB.
fn frames(n: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x0dd_f00d);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let mut f = frame(&mut rng).data;
        if f.len() < 14 {
            continue;
        }
        if rng.chance(8) {
            let extra = 4000 + rng.below(6000) as usize;
            f.extend(rng.bytes(extra));
        }
        v.push(f);
    }
    v
}

#[test]
#[ignore = "needs root"]
fn corpus_verdicts_equal_the_interpreter() {
    let frames = frames(3000);
    let big = frames.iter().filter(|f| f.len() > 4096).count();
    assert!(big > 100, "{big} multi-buffer frames");
    for &expr in EXPRS {
        for optimize in [true, false] {
            let insns = compile(expr, optimize);
            let reference = Program::new(insns.clone()).expect("valid");
            let with_frags = load(&insns, true);
            let linear = load(&insns, false);
            let mut accepted = 0;
            for f in &frames {
                let want = reference.run(f, f.len() as u32) != 0;
                accepted += usize::from(want);
                assert_eq!(
                    xdp(&with_frags, f),
                    want,
                    "{expr:?} (optimize {optimize}) frags, {} bytes: {:02x?}",
                    f.len(),
                    &f[..f.len().min(80)]
                );
                if f.len() <= LINEAR_MAX {
                    assert_eq!(xdp(&linear, f), want, "{expr:?} (optimize {optimize})");
                }
            }
            assert!(
                accepted > 0 && accepted < frames.len(),
                "{expr:?}: {accepted} of {} accepted: the corpus misses a case",
                frames.len()
            );
        }
    }
}

/// `P; jeq #V; ret #65535; ret #0` with V = the A the interpreter leaves
/// after P on `frame` (it returns A for `P; ret a`): XDP accepts only if it
/// computed the very same A (or both reject inside P). Returns on how many
/// frames P ran to its end (the rest rejected inside P, in both).
fn check_value(name: &str, p: &[Insn], frames: &[Vec<u8>]) -> usize {
    let mut with_ret_a = p.to_vec();
    with_ret_a.push(Insn::stmt(RET_A, 0));
    let value = Program::new(with_ret_a).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut reached = 0;
    for f in frames {
        let v = value.run(f, f.len() as u32);
        let mut prog = p.to_vec();
        prog.extend([
            Insn::jump(JMP_JEQ_K, v, 0, 1),
            Insn::stmt(RET_K, 65535),
            Insn::stmt(RET_K, 0),
        ]);
        let reference = Program::new(prog.clone()).expect("valid");
        let want = reference.run(f, f.len() as u32) != 0;
        reached += usize::from(want);
        assert_eq!(
            xdp(&load(&prog, true), f),
            want,
            "{name} on {} bytes: the interpreter's A is {v:#x}",
            f.len()
        );
        if f.len() <= LINEAR_MAX {
            assert_eq!(
                xdp(&load(&prog, false), f),
                want,
                "{name} without frags on {} bytes: the interpreter's A is {v:#x}",
                f.len()
            );
        }
    }
    reached
}

/// Sums what `check_value` returns and checks both outcomes occurred.
#[derive(Default)]
struct Tally {
    through: usize,
    runs: usize,
}

impl Tally {
    fn add(&mut self, name: &str, p: &[Insn], frames: &[Vec<u8>]) -> usize {
        let n = check_value(name, p, frames);
        self.through += n;
        self.runs += frames.len();
        n
    }

    fn assert_both(&self) {
        assert!(
            self.through > self.runs / 4 && self.through < self.runs,
            "{} of {} runs got through: the cases miss an outcome",
            self.through,
            self.runs
        );
    }
}

/// Frames of sizes around the edges: the Ethernet minimum, the linear
/// part of a test run (~3.5 KiB), a page, and multi-buffer sizes.
fn edge_frames() -> Vec<Vec<u8>> {
    let mut rng = Rng(7);
    [
        14, 15, 20, 60, 64, 100, 1514, 3000, 3490, 3500, 3510, 3520, 3530, 3600, 4096, 5000, 9000,
        16000,
    ]
    .iter()
    .map(|&n| rng.bytes(n))
    .collect()
}

fn s(code: u16, k: u32) -> Insn {
    Insn::stmt(code, k)
}

#[test]
#[ignore = "needs root"]
fn packet_loads_read_big_endian_and_reject_out_of_bounds() {
    let frames = edge_frames();
    let mut t = Tally::default();
    let offsets = [
        0,
        1,
        12,
        13,
        16,
        59,
        62,
        63,
        96,
        1510,
        3486,
        3496,
        3498,
        3505,
        3515,
        3517,
        3519,
        3526,
        4092,
        4095,
        4999,
        8996,
        15996,
        60000,
        0x7fff_ffff,
    ];
    for k in offsets {
        for code in [LD_W_ABS, LD_H_ABS, LD_B_ABS] {
            t.add(&format!("ld {code:#x} [{k}]"), &[s(code, k)], &frames);
        }
        // ldx 4*([k]&0xf); txa
        t.add(
            &format!("msh [{k}]"),
            &[s(LDX_B_MSH, k), s(MISC_TXA, 0)],
            &frames,
        );
    }
    // [x + k]: plain, across the linear part, and overflowing 32 bits.
    for (x, k) in [
        (0, 0),
        (14, 2),
        (3490, 20),
        (3500, 9),
        (4000, 996),
        (0xffff_ffff, 1),
        (0xffff_fff0, 0x20),
        (0x8000_0000, 0x7fff_ffff),
        (1, 0x7fff_ffff),
    ] {
        for code in [LD_W_IND, LD_H_IND, LD_B_IND] {
            t.add(
                &format!("ld {code:#x} [x={x:#x} + {k:#x}]"),
                &[s(LDX_IMM, x), s(code, k)],
                &frames,
            );
        }
    }
    // X from the frame (msh), then an indirect load: the IPv4 pattern.
    t.add(
        "ldxb 4*([14]&0xf); ldh [x+14]",
        &[s(LDX_B_MSH, 14), s(LD_H_IND, 14)],
        &frames,
    );
    t.assert_both();
}

#[test]
#[ignore = "needs root"]
fn lengths_scratch_and_transfers() {
    let frames = edge_frames();
    let mut t = Tally::default();
    let progs: Vec<(&str, Vec<Insn>)> = vec![
        ("ld len", vec![s(LD_W_LEN, 0)]),
        ("ldx len; txa", vec![s(LDX_W_LEN, 0), s(MISC_TXA, 0)]),
        ("ld #k", vec![s(LD_IMM, 0xdead_beef)]),
        ("ldx #k; txa", vec![s(LDX_IMM, 0x8000_0001), s(MISC_TXA, 0)]),
        (
            "tax; ld #0; txa",
            vec![s(LD_W_ABS, 2), s(MISC_TAX, 0), s(LD_IMM, 0), s(MISC_TXA, 0)],
        ),
        // Scratch words start at 0.
        ("ld M[5] unwritten", vec![s(LD_MEM, 5)]),
        ("ldx M[15] unwritten", vec![s(LDX_MEM, 15), s(MISC_TXA, 0)]),
        (
            "st/stx every word, sum some",
            (0..16u32)
                .flat_map(|i| {
                    [
                        s(LD_W_ABS, i),
                        s(ALU_XOR_K, i * 0x0101_0101),
                        if i % 2 == 0 { s(ST, i) } else { s(MISC_TAX, 0) },
                        s(STX, (i + 1) % 16),
                    ]
                })
                .chain([
                    s(LD_MEM, 0),
                    s(LDX_MEM, 7),
                    s(ALU_ADD_X, 0),
                    s(LDX_MEM, 14),
                    s(ALU_XOR_X, 0),
                    s(LDX_MEM, 3),
                    s(ALU_SUB_X, 0),
                ])
                .collect(),
        ),
    ];
    for (name, p) in progs {
        t.add(name, &p, &frames);
    }
    t.assert_both();
}

#[test]
#[ignore = "needs root"]
fn alu_operations_match_including_division_by_zero_and_wide_shifts() {
    let frames = edge_frames();
    let mut t = Tally::default();
    let ks = [
        0u32,
        1,
        2,
        7,
        31,
        0x7fff_ffff,
        0x8000_0000,
        0x8000_0001,
        0xffff_ffff,
    ];
    let k_ops = [
        ALU_ADD_K, ALU_SUB_K, ALU_MUL_K, ALU_DIV_K, ALU_MOD_K, ALU_AND_K, ALU_OR_K, ALU_XOR_K,
        ALU_LSH_K, ALU_RSH_K,
    ];
    for op in k_ops {
        for k in ks {
            let refused = matches!(op, ALU_DIV_K | ALU_MOD_K) && k == 0
                || matches!(op, ALU_LSH_K | ALU_RSH_K) && k >= 32;
            if refused {
                continue; // the validator refuses these constants
            }
            t.add(
                &format!("ld [14]; alu {op:#x} #{k:#x}"),
                &[s(LD_W_ABS, 14), s(op, k)],
                &frames,
            );
        }
    }
    let x_ops = [
        ALU_ADD_X, ALU_SUB_X, ALU_MUL_X, ALU_DIV_X, ALU_MOD_X, ALU_AND_X, ALU_OR_X, ALU_XOR_X,
        ALU_LSH_X, ALU_RSH_X,
    ];
    // X: constants at the edges (0: division by zero rejects; ≥ 32: shifts
    // give 0), and X from the frame.
    for op in x_ops {
        for x in [0u32, 1, 3, 31, 32, 33, 0x8000_0000, 0xffff_ffff] {
            t.add(
                &format!("ld [14]; ldx #{x:#x}; alu {op:#x} x"),
                &[s(LD_W_ABS, 14), s(LDX_IMM, x), s(op, 0)],
                &frames,
            );
        }
        t.add(
            &format!("ldb [15] & 0x3f -> x; ld [14]; alu {op:#x} x"),
            &[
                s(LD_B_ABS, 15),
                s(ALU_AND_K, 0x3f),
                s(MISC_TAX, 0),
                s(LD_W_ABS, 14),
                s(op, 0),
            ],
            &frames,
        );
    }
    for a in [0u32, 1, 0x8000_0000, 0xffff_ffff] {
        t.add(
            &format!("ld #{a:#x}; neg"),
            &[s(LD_IMM, a), s(ALU_NEG, 0)],
            &frames,
        );
    }
    t.add("ld [20]; neg", &[s(LD_W_ABS, 20), s(ALU_NEG, 0)], &frames);
    t.assert_both();
}

#[test]
#[ignore = "needs root"]
fn jumps_compare_unsigned_32_bit_and_jset_tests_bits() {
    let frames = edge_frames();
    let mut t = Tally::default();
    // P = ld [14]; j<op> …, 0, 2; ld #111; ja 1; ld #222
    let branch = |j: Insn, load_x: Option<Insn>| {
        let mut p = vec![s(LD_W_ABS, 14)];
        p.extend(load_x);
        p.extend([j, s(LD_IMM, 111), s(JMP_JA, 1), s(LD_IMM, 222)]);
        p
    };
    for code in [JMP_JEQ_K, JMP_JGT_K, JMP_JGE_K, JMP_JSET_K] {
        for k in [0u32, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff] {
            t.add(
                &format!("jmp {code:#x} #{k:#x}"),
                &branch(Insn::jump(code, k, 0, 2), None),
                &frames,
            );
        }
    }
    for code in [JMP_JEQ_X, JMP_JGT_X, JMP_JGE_X, JMP_JSET_X] {
        for x in [0u32, 0x8000_0000, 0xffff_ffff] {
            t.add(
                &format!("jmp {code:#x} x={x:#x}"),
                &branch(Insn::jump(code, 0, 0, 2), Some(s(LDX_IMM, x))),
                &frames,
            );
        }
        // X from the frame too: equal and unequal values both occur.
        t.add(
            &format!("jmp {code:#x} x=[16]"),
            &branch(Insn::jump(code, 0, 0, 2), Some(s(LDX_B_MSH, 16))),
            &frames,
        );
    }
    // jt taken to a later instruction, jf falling through, both equal,
    // and a long ja over dead code.
    let mut dead = vec![s(LD_IMM, 5), s(JMP_JA, 3)];
    dead.extend([s(RET_A, 0), s(LD_W_ABS, 0xffff_0000), s(RET_K, 1)]);
    dead.push(s(ALU_ADD_K, 1));
    t.add("ja over dead code", &dead, &frames);
    t.add(
        "jt = jf",
        &[
            s(LD_W_ABS, 14),
            Insn::jump(JMP_JGT_K, 5, 1, 1),
            s(LD_IMM, 9),
        ],
        &frames,
    );
    t.add(
        "jset jt=2 jf=0",
        &[
            s(LD_B_ABS, 14),
            Insn::jump(JMP_JSET_K, 0x81, 2, 0),
            s(LD_IMM, 1),
            s(JMP_JA, 1),
            s(LD_IMM, 2),
        ],
        &frames,
    );
    t.assert_both();
}

/// The whole chain without a network: `xrpcapd_xdp` (rules: everything)
/// tail-calls the translated filter in capture mode. In a test run nothing
/// is bound to RX queue 0, so an accepted frame's redirect fails and is
/// counted as a redirect error (passed), a rejected one as filtered.
#[test]
#[ignore = "needs root"]
fn the_xdp_program_tail_calls_the_filter_and_counts_its_verdicts() {
    let mut p = XdpProgram::load("lo").expect("load the XDP object");
    p.set_rules(&XdpRules::all(), false, false).unwrap();
    let insns = compile("udp or len > 1000", true);
    let place = p.set_filter(&Program::new(insns.clone()).unwrap(), false);
    assert!(
        matches!(place, FilterPlace::Kernel { keep: 65535 }),
        "{place:?}"
    );
    let reference = Program::new(insns.clone()).unwrap();
    let frames = frames(400);
    let small: Vec<&Vec<u8>> = frames.iter().filter(|f| f.len() <= LINEAR_MAX).collect();
    let small_accepted = small
        .iter()
        .filter(|f| reference.run(f, f.len() as u32) != 0)
        .count() as u64;
    // Every frame the rules let through is stamped before the filter runs:
    // the test run's output starts at the XDP metadata, 8 bytes of
    // CLOCK_MONOTONIC ns in front of the untouched frame.
    let mut out = vec![0u8; LINEAR_MAX + 64];
    for f in &small {
        let before = xrpcapd::capture::afxdp::stamp::monotonic_ns();
        let (act, len) = p.test_run_output(f, &mut out).expect("test run");
        let after = xrpcapd::capture::afxdp::stamp::monotonic_ns();
        assert_eq!(act, XDP_PASS);
        assert_eq!(len, f.len() + 8, "metadata in front of the frame");
        let stamp = u64::from_ne_bytes(out[..8].try_into().unwrap());
        assert!(
            (before..=after).contains(&stamp),
            "{before} <= {stamp} <= {after}"
        );
        assert_eq!(&out[8..len], &f[..], "the frame itself untouched");
    }
    let n = small.len() as u64;
    let c = p.counters();
    assert!(
        small_accepted > 0 && small_accepted < n,
        "{small_accepted} of {n}"
    );
    assert_eq!(c.seen, n);
    assert_eq!(
        c.redirect_errors, small_accepted,
        "accepted: redirect tried"
    );
    assert_eq!(c.filtered, n - small_accepted, "rejected by the XDP filter");
    assert_eq!((c.passed, c.redirected, c.dropped), (n, 0, 0));
    assert_eq!(c.unstamped, 0, "the test run's buffer has metadata room");

    // drop_rejected: the rejected ones are dropped.
    assert!(matches!(
        p.set_filter(&Program::new(insns.clone()).unwrap(), true),
        FilterPlace::Kernel { .. }
    ));
    let dropped: u64 = small
        .iter()
        .map(|f| u64::from(p.test_run(f).unwrap() == XDP_DROP))
        .sum();
    assert_eq!(dropped, n - small_accepted);
    assert_eq!(p.counters().dropped, n - small_accepted);

    // A filter that stays in user space empties the slot: the main program
    // redirects (tries to) every frame itself and nothing is filtered.
    let truncating: Vec<Insn> = insns
        .iter()
        .map(|i| match i.code {
            RET_K if i.k != 0 => s(RET_K, 96),
            _ => *i,
        })
        .collect();
    let place = p.set_filter(&Program::new(truncating.clone()).unwrap(), false);
    assert!(matches!(place, FilterPlace::UserSpace { .. }), "{place:?}");
    let before = p.counters();
    for f in &small {
        p.test_run(f).unwrap();
    }
    let after = p.counters();
    assert_eq!(after.filtered, before.filtered);
    assert_eq!(after.redirect_errors - before.redirect_errors, n);
}

/// A program whose translation outgrows 16-bit jump offsets (libpcap's
/// unoptimized code for 100 ports: ~6300 instructions) is emitted with
/// 32-bit `gotol` jumps and still judges like the interpreter.
#[test]
#[ignore = "needs root"]
fn a_long_program_uses_far_jumps_and_still_matches() {
    let expr = (0..100)
        .map(|i| format!("port {}", 990 + i))
        .collect::<Vec<_>>()
        .join(" or ");
    let insns = compile(&expr, false);
    assert!(insns.len() > 5000, "{}", insns.len());
    let t = translate(&Program::new(insns.clone()).unwrap(), TEST, true).expect("translate");
    assert!(t.len() > 32768, "{} eBPF instructions", t.len());
    let p = FilterProg::load(&t, true).expect("load");
    let reference = Program::new(insns).unwrap();
    let mut accepted = 0;
    for f in frames(600) {
        let want = reference.run(&f, f.len() as u32) != 0;
        accepted += usize::from(want);
        assert_eq!(xdp(&p, &f), want, "{} bytes", f.len());
    }
    assert!(accepted > 0 && accepted < 600, "{accepted}");
}
