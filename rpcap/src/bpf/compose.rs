//! Composing two programs: `first`, and only if it accepts, `second`.

use super::opcode::*;
use super::{validate, Insn, Program, ValidateError, MAX_INSNS, MEMWORDS};

/// The program that accepts a packet only if `first` accepts it (returns
/// non-zero), and then returns what `second` returns on it.
///
/// Both inputs are validated first (the error's `pc` then refers to the input
/// that failed). Layout of the result:
///
/// ```text
/// first, with every `ret #0` kept, every `ret #k≠0` → `ja SECOND`,
///        and every `ret a` → `ja RET_A`
/// RET_A: jeq #0, RET0, SECOND       (only if first has a `ret a`)
/// RET0:  ret #0                     (idem)
/// SECOND: ld #0; st M[i] for every scratch word first writes; ldx #0
///        second, unchanged
/// ```
///
/// Each RET of `first` becomes exactly one `ja` (32-bit offset), so no jump
/// of `first` moves or overflows its 8-bit range. `second` then starts as on
/// a fresh run: A = X = 0 and every scratch word `first` may have written is
/// zeroed again — no assumption about `second` storing before it loads.
///
/// The result is the conjunction of the two programs' verdicts. For
/// libpcap-compiled programs this equals libpcap's own `(a) and (b)` except
/// when `a` uses `vlan`, `mpls`, `pppoes` or `geneve`: in one expression those
/// shift the offsets of everything after them, while `second` here always
/// reads the frame from the start.
///
/// Fails with [`ValidateError::TooLong`] when the result exceeds
/// [`MAX_INSNS`]. The result is validated once, as every [`Program`].
pub fn and_then(first: &[Insn], second: &[Insn]) -> Result<Program, ValidateError> {
    validate(first)?;
    validate(second)?;
    compose(first, second)
}

impl Program {
    /// [`and_then`] of two programs already validated: only the result is
    /// checked.
    pub fn and_then(&self, second: &Program) -> Result<Program, ValidateError> {
        compose(self.insns(), second.insns())
    }
}

/// The layout above, of two valid programs.
fn compose(first: &[Insn], second: &[Insn]) -> Result<Program, ValidateError> {
    let has_ret_a = first.iter().any(|i| i.code == RET_A);
    let mut dirty = [false; MEMWORDS];
    for insn in first.iter().filter(|i| i.code == ST || i.code == STX) {
        // Validated: k < MEMWORDS.
        if let Some(d) = dirty.get_mut(insn.k as usize) {
            *d = true;
        }
    }
    let dirty_count = dirty.iter().filter(|&&d| d).count();

    let ret_a_at = first.len();
    let second_at = ret_a_at + if has_ret_a { 2 } else { 0 };
    let total = second_at + 2 + dirty_count + second.len();
    if total > MAX_INSNS {
        return Err(ValidateError::TooLong(total));
    }

    let mut out = Vec::with_capacity(total);
    // Offset of a `ja` at `pc` landing on `target` (> pc, both < MAX_INSNS).
    let ja = |pc: usize, target: usize| Insn::new(JMP_JA, 0, 0, (target - pc - 1) as u32);
    for (pc, insn) in first.iter().enumerate() {
        out.push(match insn.code {
            RET_K if insn.k != 0 => ja(pc, second_at),
            RET_A => ja(pc, ret_a_at),
            _ => *insn,
        });
    }
    if has_ret_a {
        // A == 0 → next (ret #0); else skip it to SECOND.
        out.push(Insn::new(JMP_JEQ_K, 0, 1, 0));
        out.push(Insn::new(RET_K, 0, 0, 0));
    }
    out.push(Insn::new(LD_IMM, 0, 0, 0));
    for (i, _) in dirty.iter().enumerate().filter(|(_, &d)| d) {
        out.push(Insn::new(ST, 0, 0, i as u32));
    }
    out.push(Insn::new(LDX_IMM, 0, 0, 0));
    out.extend_from_slice(second);
    debug_assert_eq!(out.len(), total);
    Program::new(out)
}
