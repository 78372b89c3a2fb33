//! Exact interpreter semantics on hand-written programs (return values
//! libpcap cannot report through the `pcap` crate, which gives only a verdict).

use rpcap::bpf::opcode::*;
use rpcap::bpf::{Insn, Program};

fn s(code: u16, k: u32) -> Insn {
    Insn::stmt(code, k)
}

fn run(prog: &[Insn], pkt: &[u8], wirelen: u32) -> u32 {
    Program::new(prog.to_vec())
        .expect("valid test program")
        .run(pkt, wirelen)
}

/// Runs `prog` followed by `ret a` on an empty packet.
fn a_after(prog: &[Insn]) -> u32 {
    let mut p = prog.to_vec();
    p.push(s(RET_A, 0));
    run(&p, &[], 0)
}

const PKT: [u8; 6] = [0x12, 0x34, 0x56, 0x78, 0x9a, 0x45];

#[test]
fn ret_k_and_ret_a() {
    assert_eq!(run(&[s(RET_K, 96)], &[], 0), 96);
    assert_eq!(run(&[s(RET_K, u32::MAX)], &[], 0), u32::MAX);
    assert_eq!(a_after(&[s(LD_IMM, 1234)]), 1234);
    assert_eq!(Program::accept_all().run(&[], 0), 262_144);
}

#[test]
fn absolute_loads_are_big_endian_and_bounded() {
    assert_eq!(a_after(&[]), 0, "A starts at 0");
    let ld = |code, k| run(&[s(code, k), s(RET_A, 0)], &PKT, 100);
    assert_eq!(ld(LD_W_ABS, 0), 0x1234_5678);
    assert_eq!(ld(LD_W_ABS, 2), 0x5678_9a45);
    assert_eq!(ld(LD_H_ABS, 4), 0x9a45);
    assert_eq!(ld(LD_B_ABS, 5), 0x45);
    // One byte past the captured data rejects, whatever the wire length.
    assert_eq!(ld(LD_W_ABS, 3), 0);
    assert_eq!(ld(LD_H_ABS, 5), 0);
    assert_eq!(ld(LD_B_ABS, 6), 0);
    assert_eq!(ld(LD_W_ABS, u32::MAX), 0);
    // A rejecting load ends the run even before a `ret #k`.
    assert_eq!(run(&[s(LD_B_ABS, 6), s(RET_K, 7)], &PKT, 100), 0);
}

#[test]
fn indirect_loads_add_x_without_wrapping() {
    let ind = |x, code, k| run(&[s(LDX_IMM, x), s(code, k), s(RET_A, 0)], &PKT, 100);
    assert_eq!(ind(1, LD_W_IND, 1), 0x5678_9a45);
    assert_eq!(ind(3, LD_H_IND, 0), 0x789a);
    assert_eq!(ind(2, LD_B_IND, 3), 0x45);
    assert_eq!(ind(3, LD_W_IND, 0), 0);
    // X + k overflowing u32 must not wrap around to offset 0.
    assert_eq!(ind(u32::MAX, LD_B_IND, 1), 0);
    assert_eq!(ind(1, LD_B_IND, u32::MAX), 0);
    assert_eq!(ind(0x8000_0000, LD_H_IND, 0x8000_0000), 0);
}

#[test]
fn msh_loads_ipv4_header_length() {
    let prog = [s(LDX_B_MSH, 5), s(MISC_TXA, 0), s(RET_A, 0)];
    assert_eq!(run(&prog, &PKT, 6), 20); // 0x45 → 4 * 5
    let prog = [s(LDX_B_MSH, 0), s(MISC_TXA, 0), s(RET_A, 0)];
    assert_eq!(run(&prog, &PKT, 6), 8); // 0x12 → 4 * 2
    assert_eq!(run(&[s(LDX_B_MSH, 6), s(RET_K, 1)], &PKT, 6), 0);
}

#[test]
fn len_is_the_wire_length() {
    assert_eq!(run(&[s(LD_W_LEN, 0), s(RET_A, 0)], &PKT, 1514), 1514);
    let prog = [s(LDX_W_LEN, 0), s(MISC_TXA, 0), s(RET_A, 0)];
    assert_eq!(run(&prog, &PKT, 70_000), 70_000);
}

#[test]
fn alu_with_k_and_x() {
    let a = 100u32;
    let cases: [(u16, u16, u32, u32); 10] = [
        (ALU_ADD_K, ALU_ADD_X, 7, 107),
        (ALU_SUB_K, ALU_SUB_X, 7, 93),
        (ALU_MUL_K, ALU_MUL_X, 7, 700),
        (ALU_DIV_K, ALU_DIV_X, 7, 14),
        (ALU_MOD_K, ALU_MOD_X, 7, 2),
        (ALU_AND_K, ALU_AND_X, 7, 4),
        (ALU_OR_K, ALU_OR_X, 7, 103),
        (ALU_XOR_K, ALU_XOR_X, 7, 99),
        (ALU_LSH_K, ALU_LSH_X, 7, 12_800),
        (ALU_RSH_K, ALU_RSH_X, 2, 25),
    ];
    for (op_k, op_x, k, want) in cases {
        assert_eq!(a_after(&[s(LD_IMM, a), s(op_k, k)]), want, "{op_k:#x}");
        assert_eq!(
            a_after(&[s(LD_IMM, a), s(LDX_IMM, k), s(op_x, 0)]),
            want,
            "{op_x:#x}"
        );
    }
    assert_eq!(
        a_after(&[s(LD_IMM, a), s(ALU_NEG, 0)]),
        0u32.wrapping_sub(100)
    );
    assert_eq!(
        a_after(&[s(LD_IMM, 0x8000_0000), s(ALU_NEG, 0)]),
        0x8000_0000
    );
}

#[test]
fn alu_wraps_on_u32() {
    assert_eq!(a_after(&[s(LD_IMM, 1), s(ALU_SUB_K, 2)]), u32::MAX);
    assert_eq!(a_after(&[s(LD_IMM, u32::MAX), s(ALU_ADD_K, 2)]), 1);
    assert_eq!(
        a_after(&[s(LD_IMM, 0x1_0001), s(ALU_MUL_K, 0x1_0001)]),
        0x0002_0001
    );
    assert_eq!(a_after(&[s(LD_IMM, 1), s(ALU_LSH_K, 31)]), 0x8000_0000);
}

#[test]
fn division_by_x_zero_rejects() {
    for op in [ALU_DIV_X, ALU_MOD_X] {
        assert_eq!(run(&[s(LD_IMM, 9), s(op, 0), s(RET_K, 5)], &[], 0), 0);
        assert_eq!(
            run(
                &[s(LD_IMM, 9), s(LDX_IMM, 2), s(op, 0), s(RET_K, 5)],
                &[],
                0
            ),
            5
        );
    }
}

#[test]
fn shifts_by_x_of_32_or_more_give_zero() {
    for x in [32, 33, 63, 64, u32::MAX] {
        for op in [ALU_LSH_X, ALU_RSH_X] {
            assert_eq!(
                a_after(&[s(LD_IMM, u32::MAX), s(LDX_IMM, x), s(op, 0)]),
                0,
                "{op:#x} {x}"
            );
        }
    }
    assert_eq!(
        a_after(&[s(LD_IMM, u32::MAX), s(LDX_IMM, 31), s(ALU_RSH_X, 0)]),
        1
    );
}

#[test]
fn conditional_jumps_k_and_x() {
    // jump at pc 2: jt → ret #1, jf → ret #2.
    let jump = |code, a, kx| {
        let k = if code & BPF_X != 0 { 0 } else { kx };
        let prog = [
            s(LD_IMM, a),
            s(LDX_IMM, kx),
            Insn::jump(code, k, 0, 1),
            s(RET_K, 1),
            s(RET_K, 2),
        ];
        run(&prog, &[], 0)
    };
    for (kcode, xcode) in [
        (JMP_JEQ_K, JMP_JEQ_X),
        (JMP_JGT_K, JMP_JGT_X),
        (JMP_JGE_K, JMP_JGE_X),
        (JMP_JSET_K, JMP_JSET_X),
    ] {
        for code in [kcode, xcode] {
            let (lt, eq, gt) = (jump(code, 5, 6), jump(code, 6, 6), jump(code, 7, 6));
            match kcode {
                JMP_JEQ_K => assert_eq!((lt, eq, gt), (2, 1, 2)),
                JMP_JGT_K => assert_eq!((lt, eq, gt), (2, 2, 1)),
                JMP_JGE_K => assert_eq!((lt, eq, gt), (2, 1, 1)),
                // 5 & 6 = 4, 6 & 6 = 6, 7 & 6 = 6: all set; 1 & 6 = 0.
                _ => {
                    assert_eq!((lt, eq, gt), (1, 1, 1));
                    assert_eq!(jump(code, 1, 6), 2);
                }
            }
        }
    }
    // Unsigned comparison: 0x80000000 > 1.
    assert_eq!(jump(JMP_JGT_K, 0x8000_0000, 1), 1);
}

#[test]
fn ja_skips_forward() {
    let prog = [s(JMP_JA, 2), s(RET_K, 1), s(RET_K, 2), s(RET_K, 3)];
    assert_eq!(run(&prog, &[], 0), 3);
    let mut long = vec![s(RET_K, 1); 8192];
    long[0] = s(JMP_JA, 8190);
    long[8191] = s(RET_K, 42);
    assert_eq!(run(&long, &[], 0), 42);
}

#[test]
fn scratch_memory_and_registers_are_fresh_per_run() {
    // M[3] += 1; X += 1 (through A); returns M[3] * 16 + X.
    let prog = [
        s(LD_MEM, 3),
        s(ALU_ADD_K, 1),
        s(ST, 3),
        s(MISC_TXA, 0),
        s(ALU_ADD_K, 1),
        s(MISC_TAX, 0),
        s(LD_MEM, 3),
        s(ALU_MUL_K, 16),
        s(ALU_ADD_X, 0),
        s(RET_A, 0),
    ];
    let p = Program::new(prog.to_vec()).unwrap();
    assert_eq!(p.run(&[], 0), 17);
    assert_eq!(p.run(&[], 0), 17);
    // STX / LDX MEM round trip across all 16 words.
    let mut prog = Vec::new();
    for i in 0..16 {
        prog.extend([s(LDX_IMM, i * 3), s(STX, i)]);
    }
    prog.extend([s(LDX_MEM, 15), s(MISC_TXA, 0), s(RET_A, 0)]);
    assert_eq!(run(&prog, &[], 0), 45);
}

#[test]
fn kernel_ancillary_loads_reject() {
    // SKF_AD_OFF + SKF_AD_PROTOCOL, + SKF_AD_VLAN_TAG; SKF_NET_OFF; SKF_LL_OFF.
    let big = vec![0u8; 65_536];
    for k in [0xffff_f000u32, 0xffff_f02c, 0xfff0_0000, 0xffe0_0000] {
        for code in [LD_W_ABS, LD_H_ABS, LD_B_ABS] {
            assert_eq!(
                run(&[s(code, k), s(RET_K, 1)], &big, 65_536),
                0,
                "{code:#x} {k:#x}"
            );
        }
        assert_eq!(
            run(&[s(LDX_IMM, 0), s(LD_B_IND, k), s(RET_K, 1)], &big, 65_536),
            0
        );
    }
}
