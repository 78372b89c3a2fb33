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
//! Speed: [`decode`] turns the validated instructions once into [`Op`]s — one
//! dense enum (a jump table in the loop), absolute jump targets, scratch
//! indices known < 16 — so the per-packet loop does no opcode decoding.
//!
//! The kernel's ancillary loads (offsets from `SKF_AD_OFF` = -0x1000, and
//! `SKF_NET_OFF`/`SKF_LL_OFF`) are not supported: as unsigned offsets they lie
//! far beyond any packet, so they reject like any other out-of-bounds load.
//! libpcap emits them only for live Linux captures (VLAN offload), never for
//! programs compiled on a dead handle or sent by an RPCAP client.

use super::opcode::*;
use super::{Insn, MEMWORDS};

/// A decoded instruction. Jump targets are absolute indices; `Ld*`/`St*`
/// memory indices are < [`MEMWORDS`]; `Div`/`Mod` constants are non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    RetK(u32),
    RetA,
    LdW(u32),
    LdH(u32),
    LdB(u32),
    LdWInd(u32),
    LdHInd(u32),
    LdBInd(u32),
    LdLen,
    LdImm(u32),
    LdMem(u8),
    LdxImm(u32),
    LdxMem(u8),
    LdxLen,
    LdxMsh(u32),
    St(u8),
    Stx(u8),
    Alu(AluOp, u32),
    AluX(AluOp),
    Neg,
    Ja(u32),
    Jeq(u32, u32, u32),
    Jgt(u32, u32, u32),
    Jge(u32, u32, u32),
    Jset(u32, u32, u32),
    JeqX(u32, u32),
    JgtX(u32, u32),
    JgeX(u32, u32),
    JsetX(u32, u32),
    Tax,
    Txa,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    And,
    Or,
    Xor,
    Lsh,
    Rsh,
}

/// Decodes a validated program. An instruction the validator would refuse
/// decodes to `ret #0`, so even then `run` cannot misbehave.
pub(super) fn decode(insns: &[Insn]) -> Vec<Op> {
    insns
        .iter()
        .enumerate()
        .map(|(pc, i)| decode_one(pc, i).unwrap_or(Op::RetK(0)))
        .collect()
}

fn decode_one(pc: usize, i: &Insn) -> Option<Op> {
    let k = i.k;
    let next = u32::try_from(pc).ok()?.checked_add(1)?;
    let jt = next.checked_add(u32::from(i.jt))?;
    let jf = next.checked_add(u32::from(i.jf))?;
    let mem = || u8::try_from(k).ok().filter(|&m| usize::from(m) < MEMWORDS);
    let alu_op = |code: u16| match code & BPF_OP_MASK {
        BPF_ADD => Some(AluOp::Add),
        BPF_SUB => Some(AluOp::Sub),
        BPF_MUL => Some(AluOp::Mul),
        BPF_DIV => Some(AluOp::Div),
        BPF_MOD => Some(AluOp::Mod),
        BPF_AND => Some(AluOp::And),
        BPF_OR => Some(AluOp::Or),
        BPF_XOR => Some(AluOp::Xor),
        BPF_LSH => Some(AluOp::Lsh),
        BPF_RSH => Some(AluOp::Rsh),
        _ => None,
    };
    Some(match i.code {
        RET_K => Op::RetK(k),
        RET_A => Op::RetA,
        LD_W_ABS => Op::LdW(k),
        LD_H_ABS => Op::LdH(k),
        LD_B_ABS => Op::LdB(k),
        LD_W_IND => Op::LdWInd(k),
        LD_H_IND => Op::LdHInd(k),
        LD_B_IND => Op::LdBInd(k),
        LD_W_LEN => Op::LdLen,
        LD_IMM => Op::LdImm(k),
        LD_MEM => Op::LdMem(mem()?),
        LDX_IMM => Op::LdxImm(k),
        LDX_MEM => Op::LdxMem(mem()?),
        LDX_W_LEN => Op::LdxLen,
        LDX_B_MSH => Op::LdxMsh(k),
        ST => Op::St(mem()?),
        STX => Op::Stx(mem()?),
        ALU_DIV_K | ALU_MOD_K if k == 0 => return None,
        ALU_LSH_K | ALU_RSH_K if k >= 32 => return None,
        ALU_ADD_K | ALU_SUB_K | ALU_MUL_K | ALU_DIV_K | ALU_MOD_K | ALU_AND_K | ALU_OR_K
        | ALU_XOR_K | ALU_LSH_K | ALU_RSH_K => Op::Alu(alu_op(i.code)?, k),
        ALU_ADD_X | ALU_SUB_X | ALU_MUL_X | ALU_DIV_X | ALU_MOD_X | ALU_AND_X | ALU_OR_X
        | ALU_XOR_X | ALU_LSH_X | ALU_RSH_X => Op::AluX(alu_op(i.code)?),
        ALU_NEG => Op::Neg,
        JMP_JA => Op::Ja(next.checked_add(k)?),
        JMP_JEQ_K => Op::Jeq(k, jt, jf),
        JMP_JGT_K => Op::Jgt(k, jt, jf),
        JMP_JGE_K => Op::Jge(k, jt, jf),
        JMP_JSET_K => Op::Jset(k, jt, jf),
        JMP_JEQ_X => Op::JeqX(jt, jf),
        JMP_JGT_X => Op::JgtX(jt, jf),
        JMP_JGE_X => Op::JgeX(jt, jf),
        JMP_JSET_X => Op::JsetX(jt, jf),
        MISC_TAX => Op::Tax,
        MISC_TXA => Op::Txa,
        _ => return None,
    })
}

/// Runs decoded `ops` on `pkt`; see the module docs for the semantics.
/// Never panics: a jump past the end returns 0.
pub(super) fn run(ops: &[Op], pkt: &[u8], wirelen: u32) -> u32 {
    let mut a: u32 = 0;
    let mut x: u32 = 0;
    let mut mem = [0u32; MEMWORDS];
    let mut pc: usize = 0;
    // Masking keeps indexing panic-free without a bounds check; decode
    // already guarantees m < MEMWORDS, so the mask never changes it.
    let slot = |m: u8| usize::from(m) & (MEMWORDS - 1);
    loop {
        let Some(&op) = ops.get(pc) else {
            return 0;
        };
        pc += 1;
        match op {
            Op::RetK(k) => return k,
            Op::RetA => return a,
            Op::LdW(k) => match load::<4>(pkt, Some(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            Op::LdH(k) => match load::<2>(pkt, Some(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            Op::LdB(k) => match load::<1>(pkt, Some(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            Op::LdWInd(k) => match load::<4>(pkt, x.checked_add(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            Op::LdHInd(k) => match load::<2>(pkt, x.checked_add(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            Op::LdBInd(k) => match load::<1>(pkt, x.checked_add(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            Op::LdLen => a = wirelen,
            Op::LdImm(k) => a = k,
            Op::LdMem(m) => a = mem[slot(m)],
            Op::LdxImm(k) => x = k,
            Op::LdxMem(m) => x = mem[slot(m)],
            Op::LdxLen => x = wirelen,
            Op::LdxMsh(k) => match load::<1>(pkt, Some(k)) {
                Some(v) => x = (v & 0xf) << 2,
                None => return 0,
            },
            Op::St(m) => mem[slot(m)] = a,
            Op::Stx(m) => mem[slot(m)] = x,
            Op::Alu(op, k) => match alu(op, a, k) {
                Some(v) => a = v,
                None => return 0,
            },
            Op::AluX(op) => match alu(op, a, x) {
                Some(v) => a = v,
                None => return 0,
            },
            Op::Neg => a = a.wrapping_neg(),
            Op::Ja(t) => pc = t as usize,
            Op::Jeq(k, t, f) => pc = pick(a == k, t, f),
            Op::Jgt(k, t, f) => pc = pick(a > k, t, f),
            Op::Jge(k, t, f) => pc = pick(a >= k, t, f),
            Op::Jset(k, t, f) => pc = pick(a & k != 0, t, f),
            Op::JeqX(t, f) => pc = pick(a == x, t, f),
            Op::JgtX(t, f) => pc = pick(a > x, t, f),
            Op::JgeX(t, f) => pc = pick(a >= x, t, f),
            Op::JsetX(t, f) => pc = pick(a & x != 0, t, f),
            Op::Tax => x = a,
            Op::Txa => a = x,
        }
    }
}

/// `a OP b` on u32: wrapping; `None` (reject) for a division or modulo by
/// 0; shifts by 32 or more give 0.
#[inline(always)]
fn alu(op: AluOp, a: u32, b: u32) -> Option<u32> {
    Some(match op {
        AluOp::Add => a.wrapping_add(b),
        AluOp::Sub => a.wrapping_sub(b),
        AluOp::Mul => a.wrapping_mul(b),
        AluOp::Div => a.checked_div(b)?,
        AluOp::Mod => a.checked_rem(b)?,
        AluOp::And => a & b,
        AluOp::Or => a | b,
        AluOp::Xor => a ^ b,
        AluOp::Lsh => a.checked_shl(b).unwrap_or(0),
        AluOp::Rsh => a.checked_shr(b).unwrap_or(0),
    })
}

#[inline(always)]
fn pick(taken: bool, t: u32, f: u32) -> usize {
    (if taken { t } else { f }) as usize
}

/// Reads `N` (1, 2 or 4) bytes big-endian at `off`; `None` when `off` is
/// `None` (an overflowed `X + k`) or the bytes are not all captured.
#[inline(always)]
fn load<const N: usize>(pkt: &[u8], off: Option<u32>) -> Option<u32> {
    let start = usize::try_from(off?).ok()?;
    let bytes = pkt.get(start..start.checked_add(N)?)?;
    Some(bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b)))
}
