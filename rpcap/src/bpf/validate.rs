//! The validator: every rule of PROTOCOL.md (STARTCAP), plus libpcap's and
//! Linux's refusal of constant shifts ≥ 32.

use super::opcode::*;
use super::{Insn, ValidateError, MAX_INSNS, MEMWORDS};

/// Checks a program before use.
///
/// Rules: 1 ≤ len ≤ [`MAX_INSNS`]; the last instruction is a RET; every
/// opcode is one of [`ALL`]; every jump (the 8-bit `jt`/`jf` and the 32-bit
/// `ja` offset) lands inside the program, forward (offsets are unsigned, so
/// programs terminate); no DIV/MOD by constant 0; no constant shift ≥ 32;
/// scratch memory index < [`MEMWORDS`] for LD/LDX MEM and ST/STX
/// (CVE-2026-0799).
pub fn validate(prog: &[Insn]) -> Result<(), ValidateError> {
    if prog.is_empty() {
        return Err(ValidateError::Empty);
    }
    if prog.len() > MAX_INSNS {
        return Err(ValidateError::TooLong(prog.len()));
    }
    for (pc, insn) in prog.iter().enumerate() {
        check_insn(prog.len(), pc, insn)?;
    }
    match prog.last() {
        Some(last) if class(last.code) == BPF_RET => Ok(()),
        _ => Err(ValidateError::NoReturn),
    }
}

fn check_insn(len: usize, pc: usize, insn: &Insn) -> Result<(), ValidateError> {
    let k = insn.k;
    match insn.code {
        LD_MEM | LDX_MEM | ST | STX if k as usize >= MEMWORDS => {
            Err(ValidateError::BadMemIndex { pc, k })
        }
        ALU_DIV_K | ALU_MOD_K if k == 0 => Err(ValidateError::DivByZero { pc }),
        ALU_LSH_K | ALU_RSH_K if k >= 32 => Err(ValidateError::ShiftTooLarge { pc, k }),
        JMP_JA => {
            // 64-bit arithmetic: pc + 1 + k cannot overflow.
            if (pc as u64) + 1 + u64::from(k) >= len as u64 {
                Err(ValidateError::JumpOutOfRange { pc })
            } else {
                Ok(())
            }
        }
        JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K | JMP_JSET_K | JMP_JEQ_X | JMP_JGT_X | JMP_JGE_X
        | JMP_JSET_X => {
            let far = usize::from(insn.jt.max(insn.jf));
            if pc + 1 + far >= len {
                Err(ValidateError::JumpOutOfRange { pc })
            } else {
                Ok(())
            }
        }
        code if ALL.contains(&code) => Ok(()),
        code => Err(ValidateError::BadOpcode { pc, code }),
    }
}
