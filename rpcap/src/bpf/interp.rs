//! The interpreter, with libpcap's `bpf_filter` semantics (which the Linux
//! kernel shares for every program the validator accepts):
//!
//! - A, X and the 16 scratch words start at 0 on every run;
//! - packet loads read big-endian (network order) words/halves/bytes at `k`
//!   (ABS) or `X + k` (IND; an unsigned overflow of `X + k` rejects); a load
//!   reaching past the captured bytes returns 0 (reject) at once;
//! - `ldx 4*([k]&0xf)` (MSH) reads one byte;
//! - `len` is the length on the wire, not the captured length;
//! - ALU is on u32 with wrapping; DIV/MOD by X = 0 returns 0 (reject);
//! - shifts by 32 or more give 0 (as current libpcap `bpf_filter`; the
//!   validator refuses constant shifts ≥ 32 like the kernel and libpcap, so
//!   this matters only for `lsh x`/`rsh x`);
//! - jumps are forward only (the validator guarantees it), so every run ends.
//!
//! The kernel's ancillary loads (offsets from `SKF_AD_OFF` = -0x1000, and
//! `SKF_NET_OFF`/`SKF_LL_OFF`) are not supported: as unsigned offsets they lie
//! far beyond any packet, so they reject like any other out-of-bounds load.
//! libpcap emits them only for live Linux captures (VLAN offload), never for
//! programs compiled on a dead handle or sent by an RPCAP client.

use super::opcode::*;
use super::{Insn, MEMWORDS};

/// Runs `insns` (validated) on `pkt`; see the module docs for the semantics.
/// Never panics, even on an unvalidated program: a jump past the end or a
/// bad scratch index returns 0.
pub(super) fn run(insns: &[Insn], pkt: &[u8], wirelen: u32) -> u32 {
    let mut a: u32 = 0;
    let mut x: u32 = 0;
    let mut mem = [0u32; MEMWORDS];
    let mut pc: usize = 0;
    loop {
        let Some(insn) = insns.get(pc) else {
            return 0;
        };
        pc += 1;
        let k = insn.k;
        match insn.code {
            RET_K => return k,
            RET_A => return a,

            LD_W_ABS => match load::<4>(pkt, Some(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            LD_H_ABS => match load::<2>(pkt, Some(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            LD_B_ABS => match load::<1>(pkt, Some(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            LD_W_IND => match load::<4>(pkt, x.checked_add(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            LD_H_IND => match load::<2>(pkt, x.checked_add(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            LD_B_IND => match load::<1>(pkt, x.checked_add(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            LD_W_LEN => a = wirelen,
            LD_IMM => a = k,
            LD_MEM => match mem.get(k as usize) {
                Some(&v) => a = v,
                None => return 0,
            },

            LDX_IMM => x = k,
            LDX_W_LEN => x = wirelen,
            LDX_MEM => match mem.get(k as usize) {
                Some(&v) => x = v,
                None => return 0,
            },
            LDX_B_MSH => match load::<1>(pkt, Some(k)) {
                Some(v) => x = (v & 0xf) << 2,
                None => return 0,
            },

            ST => match mem.get_mut(k as usize) {
                Some(m) => *m = a,
                None => return 0,
            },
            STX => match mem.get_mut(k as usize) {
                Some(m) => *m = x,
                None => return 0,
            },

            ALU_ADD_K => a = a.wrapping_add(k),
            ALU_SUB_K => a = a.wrapping_sub(k),
            ALU_MUL_K => a = a.wrapping_mul(k),
            ALU_DIV_K => match a.checked_div(k) {
                Some(v) => a = v,
                None => return 0,
            },
            ALU_MOD_K => match a.checked_rem(k) {
                Some(v) => a = v,
                None => return 0,
            },
            ALU_AND_K => a &= k,
            ALU_OR_K => a |= k,
            ALU_XOR_K => a ^= k,
            ALU_LSH_K => a = a.checked_shl(k).unwrap_or(0),
            ALU_RSH_K => a = a.checked_shr(k).unwrap_or(0),
            ALU_ADD_X => a = a.wrapping_add(x),
            ALU_SUB_X => a = a.wrapping_sub(x),
            ALU_MUL_X => a = a.wrapping_mul(x),
            ALU_DIV_X => match a.checked_div(x) {
                Some(v) => a = v,
                None => return 0,
            },
            ALU_MOD_X => match a.checked_rem(x) {
                Some(v) => a = v,
                None => return 0,
            },
            ALU_AND_X => a &= x,
            ALU_OR_X => a |= x,
            ALU_XOR_X => a ^= x,
            ALU_LSH_X => a = a.checked_shl(x).unwrap_or(0),
            ALU_RSH_X => a = a.checked_shr(x).unwrap_or(0),
            ALU_NEG => a = a.wrapping_neg(),

            // usize is at least 32 bits here; saturating keeps a 32-bit
            // target from wrapping backwards (then `get` ends the run).
            JMP_JA => pc = pc.saturating_add(k as usize),
            JMP_JEQ_K => pc += branch(insn, a == k),
            JMP_JGT_K => pc += branch(insn, a > k),
            JMP_JGE_K => pc += branch(insn, a >= k),
            JMP_JSET_K => pc += branch(insn, a & k != 0),
            JMP_JEQ_X => pc += branch(insn, a == x),
            JMP_JGT_X => pc += branch(insn, a > x),
            JMP_JGE_X => pc += branch(insn, a >= x),
            JMP_JSET_X => pc += branch(insn, a & x != 0),

            MISC_TAX => x = a,
            MISC_TXA => a = x,

            _ => return 0,
        }
    }
}

#[inline(always)]
fn branch(insn: &Insn, taken: bool) -> usize {
    usize::from(if taken { insn.jt } else { insn.jf })
}

/// Reads `N` (1, 2 or 4) bytes big-endian at `off`; `None` when `off` is
/// `None` (an overflowed `X + k`) or the bytes are not all captured.
#[inline(always)]
fn load<const N: usize>(pkt: &[u8], off: Option<u32>) -> Option<u32> {
    let start = usize::try_from(off?).ok()?;
    let bytes = pkt.get(start..start.checked_add(N)?)?;
    Some(bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b)))
}
