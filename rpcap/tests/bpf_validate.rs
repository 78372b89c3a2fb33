//! The validator, rule by rule, and robustness on random programs.

use proptest::prelude::*;
use rpcap::bpf::opcode::*;
use rpcap::bpf::{validate, Insn, Program, ValidateError, MAX_INSNS};

const RET0: Insn = Insn::stmt(RET_K, 0);

/// The known opcodes derived from the documented encoding (independently of
/// `opcode::ALL`).
fn known(code: u16) -> bool {
    if code > 0xff {
        return false;
    }
    let (size, mode, op, src) = (code & 0x18, code & 0xe0, code & 0xf0, code & 0x08);
    match code & 0x07 {
        0x00 => {
            (matches!(mode, 0x20 | 0x40) && size != 0x18)
                || (size == 0x00 && matches!(mode, 0x00 | 0x60 | 0x80))
        }
        0x01 => (size == 0x00 && matches!(mode, 0x00 | 0x60 | 0x80)) || code == 0xb1,
        0x02 | 0x03 => code <= 0x03,
        0x04 => (op <= 0xa0 && op != 0x80) || code == 0x84,
        0x05 => code == 0x05 || (matches!(op, 0x10..=0x40) && code & 0x07 == 0x05 && src <= 0x08),
        0x06 => code == 0x06 || code == 0x16,
        _ => code == 0x07 || code == 0x87,
    }
}

#[test]
fn every_opcode_is_classified() {
    let mut n = 0;
    for code in 0..=u16::MAX {
        // k = 1: a valid divisor, shift, memory index and `ja` target.
        let prog = [Insn::new(code, 0, 0, 1), RET0, RET0];
        let got = validate(&prog);
        if known(code) {
            n += 1;
            assert_eq!(got, Ok(()), "{code:#06x}");
            assert!(ALL.contains(&code), "{code:#06x}");
        } else {
            assert_eq!(got, Err(ValidateError::BadOpcode { pc: 0, code }));
        }
    }
    assert_eq!(n, ALL.len());
    assert_eq!(n, 49);
}

#[test]
fn length_limits() {
    assert_eq!(validate(&[]), Err(ValidateError::Empty));
    assert_eq!(validate(&[RET0]), Ok(()));
    let mut prog = vec![Insn::stmt(LD_IMM, 1); MAX_INSNS - 1];
    prog.push(RET0);
    assert_eq!(validate(&prog), Ok(()));
    prog.insert(0, Insn::stmt(LD_IMM, 1));
    assert_eq!(validate(&prog), Err(ValidateError::TooLong(MAX_INSNS + 1)));
    assert!(Program::new(prog).is_err());
}

#[test]
fn must_end_with_ret() {
    assert_eq!(
        validate(&[Insn::stmt(LD_IMM, 1)]),
        Err(ValidateError::NoReturn)
    );
    assert_eq!(
        validate(&[RET0, Insn::stmt(MISC_TAX, 0)]),
        Err(ValidateError::NoReturn)
    );
    assert_eq!(
        validate(&[Insn::stmt(LD_IMM, 1), Insn::stmt(RET_A, 0)]),
        Ok(())
    );
}

#[test]
fn conditional_jumps_stay_inside() {
    for code in [
        JMP_JEQ_K, JMP_JGT_K, JMP_JGE_K, JMP_JSET_K, JMP_JEQ_X, JMP_JGT_X, JMP_JGE_X, JMP_JSET_X,
    ] {
        // pc 0 of 4 instructions: offsets 0..=2 land on 1..=3.
        let prog = |jt, jf| [Insn::jump(code, 0, jt, jf), RET0, RET0, RET0];
        assert_eq!(validate(&prog(2, 0)), Ok(()));
        assert_eq!(validate(&prog(0, 2)), Ok(()));
        assert_eq!(
            validate(&prog(3, 0)),
            Err(ValidateError::JumpOutOfRange { pc: 0 })
        );
        assert_eq!(
            validate(&prog(0, 3)),
            Err(ValidateError::JumpOutOfRange { pc: 0 })
        );
        assert_eq!(
            validate(&prog(255, 255)),
            Err(ValidateError::JumpOutOfRange { pc: 0 })
        );
    }
}

#[test]
fn ja_32_bit_offset_cannot_overflow() {
    let prog = |k| [Insn::stmt(LD_IMM, 1), Insn::stmt(JMP_JA, k), RET0, RET0];
    assert_eq!(validate(&prog(1)), Ok(()));
    for k in [2, 3, 0x7fff_ffff, 0xffff_fffe, u32::MAX] {
        assert_eq!(
            validate(&prog(k)),
            Err(ValidateError::JumpOutOfRange { pc: 1 }),
            "{k:#x}"
        );
    }
    // The longest jump of the longest program.
    let mut long = vec![RET0; MAX_INSNS];
    long[0] = Insn::stmt(JMP_JA, (MAX_INSNS - 2) as u32);
    assert_eq!(validate(&long), Ok(()));
    long[0].k += 1;
    assert_eq!(
        validate(&long),
        Err(ValidateError::JumpOutOfRange { pc: 0 })
    );
}

#[test]
fn no_constant_division_by_zero() {
    for code in [ALU_DIV_K, ALU_MOD_K] {
        let prog = [Insn::stmt(LD_IMM, 1), Insn::stmt(code, 0), RET0];
        assert_eq!(validate(&prog), Err(ValidateError::DivByZero { pc: 1 }));
    }
    // By X it is a run-time matter (the run rejects).
    for code in [ALU_DIV_X, ALU_MOD_X] {
        assert_eq!(validate(&[Insn::stmt(code, 0), RET0]), Ok(()));
    }
}

#[test]
fn scratch_memory_index_below_16() {
    // CVE-2026-0799: an index ≥ 16 must never reach the interpreter.
    for code in [LD_MEM, LDX_MEM, ST, STX] {
        assert_eq!(validate(&[Insn::stmt(code, 15), RET0]), Ok(()));
        for k in [16, 17, 255, 0x8000_0000, u32::MAX] {
            assert_eq!(
                validate(&[Insn::stmt(code, k), RET0]),
                Err(ValidateError::BadMemIndex { pc: 0, k }),
                "{code:#x} {k}"
            );
        }
    }
}

#[test]
fn constant_shift_below_32() {
    for code in [ALU_LSH_K, ALU_RSH_K] {
        assert_eq!(validate(&[Insn::stmt(code, 31), RET0]), Ok(()));
        assert_eq!(
            validate(&[Insn::stmt(code, 32), RET0]),
            Err(ValidateError::ShiftTooLarge { pc: 0, k: 32 })
        );
    }
}

/// Mostly-valid random programs: known opcodes, short jumps, small indices.
fn insn() -> impl Strategy<Value = Insn> {
    let code = prop_oneof![9 => proptest::sample::select(ALL.to_vec()), 1 => any::<u16>()];
    let k = prop_oneof![
        4 => 0u32..20,
        1 => any::<u32>(),
        1 => proptest::sample::select(vec![0xffff_f000u32, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000]),
    ];
    (code, 0u8..6, 0u8..6, k).prop_map(|(code, jt, jf, k)| Insn::new(code, jt, jf, k))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn random_programs_never_panic(
        mut prog in proptest::collection::vec(insn(), 1..40),
        ret in prop_oneof![Just(RET_K), Just(RET_A)],
        pkt in proptest::collection::vec(any::<u8>(), 0..80),
        extra in 0u32..100,
    ) {
        // Half the time force a RET at the end, so many programs validate.
        if extra % 2 == 0 {
            prog.push(Insn::stmt(ret, extra));
        }
        if validate(&prog).is_ok() {
            let p = Program::new(prog).expect("validated");
            let wirelen = pkt.len() as u32 + extra;
            let first = p.run(&pkt, wirelen);
            // Deterministic, and fresh state on each run.
            prop_assert_eq!(p.run(&pkt, wirelen), first);
        }
    }
}

/// Makes `prog` valid by construction: known opcodes, jumps clamped into the
/// program, legal constants, a RET at the end.
fn repair(prog: &mut Vec<Insn>, ret: u16) {
    prog.push(Insn::stmt(ret, 0xffff));
    let len = prog.len();
    for (pc, i) in prog.iter_mut().enumerate() {
        let room = (len - pc - 1) as u32; // instructions after this one
        if !ALL.contains(&i.code) || (room == 0 && i.code & 0x07 != BPF_RET) {
            i.code = if room == 0 { RET_A } else { LD_IMM };
        }
        match i.code {
            LD_MEM | LDX_MEM | ST | STX => i.k %= 16,
            ALU_DIV_K | ALU_MOD_K => i.k = i.k.max(1),
            ALU_LSH_K | ALU_RSH_K => i.k %= 32,
            JMP_JA => i.k %= room,
            c if c & 0x07 == BPF_JMP => {
                i.jt = (u32::from(i.jt) % room) as u8;
                i.jf = (u32::from(i.jf) % room) as u8;
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn valid_random_programs_run(
        mut prog in proptest::collection::vec(insn(), 0..60),
        ret in prop_oneof![Just(RET_K), Just(RET_A)],
        pkt in proptest::collection::vec(any::<u8>(), 0..80),
        extra in 0u32..100,
    ) {
        repair(&mut prog, ret);
        prop_assert_eq!(validate(&prog), Ok(()));
        let p = Program::new(prog).expect("validated");
        let wirelen = pkt.len() as u32 + extra;
        let first = p.run(&pkt, wirelen);
        prop_assert_eq!(p.run(&pkt, wirelen), first);
    }
}
