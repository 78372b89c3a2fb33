//! The capture's cBPF filter translated into an eBPF XDP program, so the
//! kernel judges every frame exactly and user space skips the interpreter.
//!
//! Why: with only the conservative pre-filter of [`rules`](crate::rules), every frame it
//! lets through is copied into the UMEM and then judged by rpcap's cBPF
//! interpreter in the worker - ~30% of the worker's per-frame cost, and the
//! copies of rejected frames are wasted. The translated program runs as a tail
//! call of `ebpf/xrpcapd_xdp.c` where that program would redirect a frame:
//! accept → redirect into the AF_XDP socket, reject → leave the frame to the
//! stack (or drop it). The worker then delivers what arrives without a second
//! look.
//!
//! Exactness: the translation has the semantics of rpcap's interpreter
//! (`rpcap/src/bpf/interp.rs`), instruction by instruction:
//! - A and X are 32-bit (r7, r8: always zero-extended, ALU32 operations),
//!   the 16 scratch words live on the stack and start at 0;
//! - packet loads are big-endian (`BPF_END` to BE); a load reaching past the
//!   frame rejects. The frame is read directly (bounds-checked against
//!   `data_end`); when the bytes are not all in the linear part of a
//!   multi-buffer frame (the main program is `xdp.frags`),
//!   `bpf_xdp_load_bytes` copies them into a stack buffer, and its failure
//!   (beyond the whole frame) rejects. Without frags the linear part is the
//!   whole frame and the bounds check alone decides. `X + k` overflowing 32
//!   bits rejects as in the interpreter;
//! - `len` is `bpf_xdp_get_buff_len` (the whole frame, as the worker passes
//!   `data.len()` as the wire length);
//! - division or modulo by X = 0 rejects; shifts by X ≥ 32 give 0 (eBPF would
//!   mask the count); comparisons are unsigned 32-bit (`JMP32`).
//!
//! Not translated ([`Reason`]; the capture then keeps the pre-filter plus the
//! user-space interpreter): loads at offsets ≥ 2^31 (the kernel's ancillary
//! `SKF_AD_OFF`/`SKF_NET_OFF`/`SKF_LL_OFF` range), `ret a` and `ret #k` with
//! 0 < k < 65535 (XDP gives a verdict, not a snap length), accepting returns
//! of different lengths below [`NEVER_TRUNCATES`]. Unreachable cBPF
//! instructions are left out (the verifier refuses dead code). Programs too
//! long for eBPF's 16-bit jump offsets (thousands of cBPF instructions) use
//! 32-bit `gotol` jumps, which kernels before 6.6 refuse at load time: then,
//! as for any program the verifier refuses, the filter stays in user space.
//!
//! This module only builds instructions (no I/O, no unsafe); loading and
//! installing is the agent's (`capture::afxdp::program`).

use rpcap::bpf::opcode::*;
use rpcap::bpf::{validate, Insn, Program, ValidateError, MEMWORDS};

use crate::ebpf::*;

/// The slots of the XDP program's per-CPU `counters` array that the
/// translated filter counts its verdicts in, as the main program does (the
/// agent's `afxdp::abi` names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSlots {
    /// Accepted and redirected into the AF_XDP socket.
    pub redirected: u32,
    /// Accepted, but no socket on the frame's queue: passed instead.
    pub redirect_err: u32,
    /// Left to the kernel stack.
    pub passed: u32,
    /// Dropped (rejected with `drop_rejected`).
    pub dropped: u32,
    /// Rejected by the filter (also counted in `passed` or `dropped`).
    pub filtered: u32,
}

/// The smallest accepting return that the kernel may honour as "accept the
/// whole frame": libpcap's default snap length. Smaller ones truncate.
pub const WHOLE_FRAME: u32 = 65535;
/// A keep length no frame reaches (RPCAP's largest snap length).
pub const NEVER_TRUNCATES: u32 = 262_144;

/// How the translated program ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Tail-called from `xrpcapd_xdp`: accept redirects into the AF_XDP socket
    /// of the frame's RX queue (`xsks`, XDP_PASS when there is none) and
    /// counts it; reject counts and passes (or drops) the frame. The map fds
    /// belong to the calling process; the kernel resolves them at load time.
    Capture {
        xsks_fd: i32,
        counters_fd: i32,
        counters: CounterSlots,
        drop_rejected: bool,
    },
    /// Standalone (tests): return `accept` or `reject`.
    Test { accept: u32, reject: u32 },
}

/// Why a program is not translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("instruction {pc}: load at offset {k:#x} (ancillary / negative offsets)")]
    AncillaryOffset { pc: usize, k: u32 },
    #[error("instruction {pc}: `ret a` returns a snap length that XDP cannot apply")]
    RetA { pc: usize },
    #[error("instruction {pc}: `ret #{k}` truncates frames, XDP gives a verdict only")]
    Truncating { pc: usize, k: u32 },
    #[error("accepting returns keep different lengths ({a} and {b})")]
    MixedLengths { a: u32, b: u32 },
    #[error("translation of {0} eBPF instructions is too large for its jumps")]
    TooLarge(usize),
}

/// A program that cannot run in XDP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("invalid cBPF program: {0}")]
    Invalid(#[from] ValidateError),
    #[error("not translatable exactly: {0}")]
    Unsupported(#[from] Reason),
}

/// A translated program: eBPF instructions ready for BPF_PROG_LOAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    insns: Vec<Ins>,
    keep: u32,
}

impl Translation {
    /// The instructions as the kernel takes them (8 bytes each).
    pub fn bytes(&self) -> Vec<u8> {
        self.insns.iter().flat_map(|i| i.encode()).collect()
    }

    /// Number of eBPF instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// What user space can check of the program (see
    /// [`check_structure`]): the translation's own invariants, for tests
    /// and the fuzzer; the kernel's verifier checks the rest at load time.
    pub fn check_structure(&self) -> Result<(), StructureError> {
        check_structure(&self.insns)
    }

    /// Bytes of an accepted frame to keep (before the capture's snaplen):
    /// the one accepting return's `k`, which user space applies.
    pub fn keep(&self) -> u32 {
        self.keep
    }
}

/// Checks `prog` without building anything: the keep length if translatable.
pub fn check(prog: &[Insn]) -> Result<u32, TranslateError> {
    validate(prog)?;
    check_valid(prog)
}

/// [`check`] of a program already validated.
fn check_valid(prog: &[Insn]) -> Result<u32, TranslateError> {
    let reach = reachable(prog);
    let mut keep: Option<u32> = None;
    for (pc, i) in prog.iter().enumerate().filter(|(pc, _)| reach[*pc]) {
        match i.code {
            LD_W_ABS | LD_H_ABS | LD_B_ABS | LD_W_IND | LD_H_IND | LD_B_IND | LDX_B_MSH
                if i.k >= 1 << 31 =>
            {
                return Err(Reason::AncillaryOffset { pc, k: i.k }.into())
            }
            RET_A => return Err(Reason::RetA { pc }.into()),
            RET_K if i.k != 0 && i.k < WHOLE_FRAME => {
                return Err(Reason::Truncating { pc, k: i.k }.into())
            }
            RET_K if i.k != 0 => match keep {
                Some(a) if a != i.k && a.min(i.k) < NEVER_TRUNCATES => {
                    return Err(Reason::MixedLengths { a, b: i.k }.into())
                }
                Some(a) => keep = Some(a.min(i.k)),
                None => keep = Some(i.k),
            },
            _ => {}
        }
    }
    Ok(keep.unwrap_or(NEVER_TRUNCATES))
}

/// Translates a validated cBPF program (the one the worker would run).
///
/// `frags`: the program will be loaded with BPF_F_XDP_HAS_FRAGS (as the
/// main program is), so a frame may continue beyond its linear part: loads
/// that miss the linear part then go through `bpf_xdp_load_bytes`. Without
/// it the linear part is the whole frame and such loads reject at once (no
/// helper: kernels before 5.18 have none).
///
/// Jumps use eBPF's 16-bit offsets; a translation too long for them is
/// redone with 32-bit `gotol` jumps (BPF_JMP32 | BPF_JA, kernel ≥ 6.6).
pub fn translate(
    prog: &Program,
    verdict: Verdict,
    frags: bool,
) -> Result<Translation, TranslateError> {
    let prog = prog.insns();
    let keep = check_valid(prog)?;
    let insns = match emit(prog, verdict, frags, false) {
        Err(Reason::TooLarge(_)) => emit(prog, verdict, frags, true)?,
        r => r?,
    };
    Ok(Translation { insns, keep })
}

fn emit(prog: &[Insn], verdict: Verdict, frags: bool, far: bool) -> Result<Vec<Ins>, Reason> {
    let reach = reachable(prog);
    let mut a = Asm::new(far);
    let pcs: Vec<Label> = prog.iter().map(|_| a.label()).collect();
    let accept = a.label();
    let reject = a.label();

    // Prologue: ctx in r6, A = X = 0, scratch words 0 (only if ever read).
    a.emit(alu64_reg(MOV, CTX, R1));
    a.emit(alu32_imm(MOV, A, 0));
    a.emit(alu32_imm(MOV, X, 0));
    if prog.iter().any(|i| i.code == LD_MEM || i.code == LDX_MEM) {
        for w in 0..MEMWORDS as i16 / 2 {
            a.emit(st_imm(DW, FP, MEM_OFF + 8 * w, 0));
        }
    }

    for (pc, i) in prog.iter().enumerate().filter(|(pc, _)| reach[*pc]) {
        a.bind(pcs[pc]);
        let k = i.k;
        let target = |off: u32| pcs[pc + 1 + off as usize];
        match i.code {
            RET_K if k == 0 => a.jump(ja(), reject),
            RET_K => a.jump(ja(), accept),
            LD_W_ABS | LD_H_ABS | LD_B_ABS => {
                load(&mut a, frags, size_of(i.code), A, Off::Abs(k), reject)
            }
            LD_W_IND | LD_H_IND | LD_B_IND => {
                load(&mut a, frags, size_of(i.code), A, Off::Ind(k), reject)
            }
            LDX_B_MSH => {
                load(&mut a, frags, 1, X, Off::Abs(k), reject);
                a.emit(alu32_imm(AND, X, 0xf));
                a.emit(alu32_imm(LSH, X, 2));
            }
            LD_W_LEN | LDX_W_LEN => {
                a.emit(alu64_reg(MOV, R1, CTX));
                a.emit(call(HELPER_XDP_GET_BUFF_LEN));
                let dst = if i.code == LD_W_LEN { A } else { X };
                a.emit(alu32_reg(MOV, dst, R0));
            }
            LD_IMM => a.emit(alu32_imm(MOV, A, k as i32)),
            LDX_IMM => a.emit(alu32_imm(MOV, X, k as i32)),
            LD_MEM => a.emit(ldx(W, A, FP, mem_slot(k))),
            LDX_MEM => a.emit(ldx(W, X, FP, mem_slot(k))),
            ST => a.emit(stx(W, FP, A, mem_slot(k))),
            STX => a.emit(stx(W, FP, X, mem_slot(k))),
            ALU_NEG => a.emit(Ins::new(ALU32 | NEG, A, 0, 0, 0)),
            ALU_DIV_K | ALU_MOD_K => {
                // Through a register: the immediate is signed in eBPF.
                a.emit(alu32_imm(MOV, R1, k as i32));
                a.emit(alu32_reg(op_of(i.code), A, R1));
            }
            ALU_DIV_X | ALU_MOD_X => {
                a.jump_if(JEQ, X, 0, reject);
                a.emit(alu32_reg(op_of(i.code), A, X));
            }
            ALU_LSH_X | ALU_RSH_X => {
                // cBPF (libpcap) gives 0 for counts ≥ 32; eBPF masks them.
                let (zero, done) = (a.label(), a.label());
                a.jump(jmp_imm(JMP64, JGT, X, 31), zero);
                a.emit(alu32_reg(op_of(i.code), A, X));
                a.jump(ja(), done);
                a.bind(zero);
                a.emit(alu32_imm(MOV, A, 0));
                a.bind(done);
            }
            c if c & !BPF_OP_MASK == BPF_ALU | BPF_K => a.emit(alu32_imm(op_of(c), A, k as i32)),
            c if c & !BPF_OP_MASK == BPF_ALU | BPF_X => a.emit(alu32_reg(op_of(c), A, X)),
            JMP_JA => {
                if k != 0 {
                    a.jump(ja(), target(k));
                }
            }
            c if class(c) == BPF_JMP => {
                let (t, f) = (u32::from(i.jt), u32::from(i.jf));
                let op = op_of(c);
                let cond = |op: u8| {
                    if c & BPF_X != 0 {
                        jmp_reg(JMP32, op, A, X)
                    } else {
                        jmp_imm(JMP32, op, A, k as i32)
                    }
                };
                if t == f {
                    if t != 0 {
                        a.jump(ja(), target(t));
                    }
                } else if f == 0 {
                    a.jump(cond(op), target(t));
                } else if let (0, Some(inv)) = (t, inverse(op)) {
                    a.jump(cond(inv), target(f));
                } else {
                    a.jump(cond(op), target(t));
                    a.jump(ja(), target(f));
                }
            }
            MISC_TAX => a.emit(alu32_reg(MOV, X, A)),
            MISC_TXA => a.emit(alu32_reg(MOV, A, X)),
            // validate() admits nothing else.
            _ => a.jump(ja(), reject),
        }
    }

    if a.used(accept) {
        a.bind(accept);
        match verdict {
            Verdict::Capture {
                xsks_fd,
                counters_fd,
                counters,
                ..
            } => {
                // bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS), then
                // count as the main program does.
                let (err, out) = (a.label(), a.label());
                a.ld_map_fd(R1, xsks_fd);
                a.emit(ldx(W, R2, CTX, XDP_MD_RX_QUEUE_INDEX));
                a.emit(alu64_imm(MOV, R3, XDP_PASS as i32));
                a.emit(call(HELPER_REDIRECT_MAP));
                a.emit(alu64_reg(MOV, A, R0));
                a.jump(jmp_imm(JMP64, JNE, A, XDP_REDIRECT as i32), err);
                count(&mut a, counters_fd, counters.redirected);
                a.jump(ja(), out);
                a.bind(err);
                count(&mut a, counters_fd, counters.redirect_err);
                count(&mut a, counters_fd, counters.passed);
                a.bind(out);
                a.emit(alu64_reg(MOV, R0, A));
                a.emit(exit());
            }
            Verdict::Test { accept, .. } => {
                a.emit(alu64_imm(MOV, R0, accept as i32));
                a.emit(exit());
            }
        }
    }
    if a.used(reject) {
        a.bind(reject);
        match verdict {
            Verdict::Capture {
                counters_fd,
                counters,
                drop_rejected,
                ..
            } => {
                count(&mut a, counters_fd, counters.filtered);
                let (c, act) = if drop_rejected {
                    (counters.dropped, XDP_DROP)
                } else {
                    (counters.passed, XDP_PASS)
                };
                count(&mut a, counters_fd, c);
                a.emit(alu64_imm(MOV, R0, act as i32));
                a.emit(exit());
            }
            Verdict::Test { reject, .. } => {
                a.emit(alu64_imm(MOV, R0, reject as i32));
                a.emit(exit());
            }
        }
    }
    a.finish().map_err(Reason::TooLarge)
}

/// Which instructions some run can reach (jumps are forward only).
fn reachable(prog: &[Insn]) -> Vec<bool> {
    let mut r = vec![false; prog.len()];
    if let Some(first) = r.first_mut() {
        *first = true;
    }
    let mark = |r: &mut Vec<bool>, to: usize| {
        if let Some(x) = r.get_mut(to) {
            *x = true;
        }
    };
    for (pc, i) in prog.iter().enumerate() {
        if !r[pc] {
            continue;
        }
        match class(i.code) {
            BPF_RET => {}
            BPF_JMP if i.code == JMP_JA => mark(&mut r, pc + 1 + i.k as usize),
            BPF_JMP => {
                mark(&mut r, pc + 1 + usize::from(i.jt));
                mark(&mut r, pc + 1 + usize::from(i.jf));
            }
            _ => mark(&mut r, pc + 1),
        }
    }
    r
}

fn size_of(code: u16) -> u8 {
    match code & BPF_SIZE_MASK {
        BPF_B => 1,
        BPF_H => 2,
        _ => 4,
    }
}

/// The eBPF ALU/JMP operation of a cBPF one: the encodings are the same.
fn op_of(code: u16) -> u8 {
    (code & BPF_OP_MASK) as u8
}

fn inverse(op: u8) -> Option<u8> {
    match op {
        JEQ => Some(JNE),
        JGT => Some(JLE),
        JGE => Some(JLT),
        _ => None,
    }
}

fn mem_slot(k: u32) -> i16 {
    // validate(): k < MEMWORDS.
    MEM_OFF + 4 * (k as i16 & (MEMWORDS as i16 - 1))
}

/// The XDP context (`struct xdp_md *`), kept across helper calls.
const CTX: u8 = 6;
/// The cBPF accumulator.
const A: u8 = 7;
/// The cBPF index register.
const X: u8 = 8;
/// A load's offset, kept from the bounds check to the helper call.
const OFF: u8 = 9;

// Stack frame (offsets from r10): scratch words, the helper's load buffer,
// the counter key.
const MEM_OFF: i16 = -64;
const BUF_OFF: i16 = -72;
const KEY_OFF: i16 = -80;

/// A packet offset: `k` or `X + k`.
#[derive(Debug, Clone, Copy)]
enum Off {
    Abs(u32),
    Ind(u32),
}

/// `counters[which] += 1` (per-CPU slot; a missing slot is skipped).
fn count(a: &mut Asm, counters_fd: i32, which: u32) {
    a.emit(st_imm(W, FP, KEY_OFF, which as i32));
    a.ld_map_fd(R1, counters_fd);
    a.emit(alu64_reg(MOV, R2, FP));
    a.emit(alu64_imm(ADD, R2, i32::from(KEY_OFF)));
    a.emit(call(HELPER_MAP_LOOKUP_ELEM));
    let skip = a.label();
    a.jump(jmp_imm(JMP64, JEQ, R0, 0), skip);
    a.emit(ldx(DW, R1, R0, 0));
    a.emit(alu64_imm(ADD, R1, 1));
    a.emit(stx(DW, R0, R1, 0));
    a.bind(skip);
}

/// `dst = ntoh(pkt[off .. off + n])`, or jump to `reject` when the bytes
/// are not all in the frame (`frags`: see [`translate`]).
fn load(a: &mut Asm, frags: bool, n: u8, dst: u8, off: Off, reject: Label) {
    let (size, bits) = match n {
        1 => (B, 0),
        2 => (H, 16),
        _ => (W, 32),
    };
    let (slow, done) = (a.label(), a.label());
    let direct = |a: &mut Asm, add_off: &dyn Fn(&mut Asm)| {
        a.emit(ldx(W, R2, CTX, XDP_MD_DATA));
        a.emit(ldx(W, R3, CTX, XDP_MD_DATA_END));
        add_off(a);
        a.emit(alu64_reg(MOV, R1, R2));
        a.emit(alu64_imm(ADD, R1, i32::from(n)));
        a.jump(jmp_reg(JMP64, JGT, R1, R3), slow);
        a.emit(ldx(size, dst, R2, 0));
        if bits != 0 {
            a.emit(to_be(dst, bits));
        }
        a.jump(ja(), done);
    };
    match off {
        Off::Abs(k) => {
            // k < 2^31 (check()), so it fits the signed immediates.
            if k + u32::from(n) <= DIRECT_END {
                direct(a, &|a| {
                    if k != 0 {
                        a.emit(alu64_imm(ADD, R2, k as i32));
                    }
                });
            }
            a.bind(slow);
            if !frags {
                // The linear part is the frame: the bytes are not
                // there. A conditional jump even when the load can
                // never succeed (k beyond any linear part): the
                // verifier refuses code that no jump reaches, and the
                // cBPF instructions after this one are such code then.
                a.emit(alu64_imm(MOV, R0, 0));
                a.jump_if(JEQ, R0, 0, reject);
                a.bind(done);
                return;
            }
            a.emit(alu32_imm(MOV, R2, k as i32));
        }
        Off::Ind(k) => {
            // OFF = X + k in 64 bits; a carry out of 32 bits rejects
            // (the interpreter's checked_add).
            a.emit(alu32_imm(MOV, R1, k as i32));
            a.emit(alu64_reg(MOV, OFF, X));
            a.emit(alu64_reg(ADD, OFF, R1));
            a.emit(alu64_reg(MOV, R1, OFF));
            a.emit(alu64_imm(RSH, R1, 32));
            a.jump_if(JNE, R1, 0, reject);
            // Bounded for the verifier before it becomes a packet offset.
            a.jump(
                jmp_imm(JMP64, JGT, OFF, (DIRECT_END - u32::from(n)) as i32),
                slow,
            );
            direct(a, &|a| a.emit(alu64_reg(ADD, R2, OFF)));
            a.bind(slow);
            if !frags {
                a.jump(ja(), reject);
                a.bind(done);
                return;
            }
            a.emit(alu64_reg(MOV, R2, OFF));
        }
    }
    // bpf_xdp_load_bytes(ctx, off, fp + BUF_OFF, n): also reads frags.
    a.emit(alu64_reg(MOV, R1, CTX));
    a.emit(alu64_reg(MOV, R3, FP));
    a.emit(alu64_imm(ADD, R3, i32::from(BUF_OFF)));
    a.emit(alu64_imm(MOV, R4, i32::from(n)));
    a.emit(call(HELPER_XDP_LOAD_BYTES));
    a.jump_if(JNE, R0, 0, reject);
    a.emit(ldx(size, dst, FP, BUF_OFF));
    if bits != 0 {
        a.emit(to_be(dst, bits));
    }
    a.bind(done);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Verdict = Verdict::Test {
        accept: XDP_PASS,
        reject: XDP_DROP,
    };

    fn ret(k: u32) -> Insn {
        Insn::stmt(RET_K, k)
    }

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        // r7 = *(u16 *)(r2 + 0): code 0x69, dst 7, src 2.
        assert_eq!(ldx(H, A, R2, 0).encode(), [0x69, 0x27, 0, 0, 0, 0, 0, 0]);
        // w1 = 0x80000001 keeps its 32 bits.
        assert_eq!(
            alu32_imm(MOV, R1, 0x8000_0001u32 as i32).encode(),
            [0xb4, 0x01, 0, 0, 0x01, 0, 0, 0x80]
        );
        // be16 r7 (0xdc), call 189, exit.
        assert_eq!(to_be(A, 16).encode(), [0xdc, 0x07, 0, 0, 16, 0, 0, 0]);
        assert_eq!(call(189).encode(), [0x85, 0, 0, 0, 189, 0, 0, 0]);
        assert_eq!(exit().encode(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        // if w7 > w8 (jmp32 jgt x): 0x2e.
        assert_eq!(jmp_reg(JMP32, JGT, A, X).encode()[..2], [0x2e, 0x87]);
    }

    #[test]
    fn refuses_what_xdp_cannot_do_exactly() {
        let ancillary = [Insn::stmt(LD_H_ABS, 0xffff_f000), ret(65535)];
        assert!(matches!(
            check(&ancillary),
            Err(TranslateError::Unsupported(Reason::AncillaryOffset {
                pc: 0,
                ..
            }))
        ));
        let ind = [Insn::stmt(LD_B_IND, 0xffff_f000 + 12), ret(65535)];
        assert!(matches!(
            check(&ind),
            Err(TranslateError::Unsupported(Reason::AncillaryOffset { .. }))
        ));
        assert_eq!(
            check(&[Insn::stmt(RET_A, 0)]),
            Err(Reason::RetA { pc: 0 }.into())
        );
        assert_eq!(
            check(&[ret(96)]),
            Err(Reason::Truncating { pc: 0, k: 96 }.into())
        );
        let mixed = [Insn::jump(JMP_JEQ_K, 1, 0, 1), ret(65535), ret(70000)];
        assert_eq!(
            check(&mixed),
            Err(Reason::MixedLengths { a: 65535, b: 70000 }.into())
        );
        assert!(matches!(check(&[]), Err(TranslateError::Invalid(_))));
    }

    #[test]
    fn keep_is_the_accepting_length_and_dead_code_is_ignored() {
        assert_eq!(check(&[ret(262_144)]), Ok(262_144));
        assert_eq!(check(&[ret(0)]), Ok(NEVER_TRUNCATES));
        // Two lengths that both exceed any frame.
        let both = [Insn::jump(JMP_JEQ_K, 1, 0, 1), ret(262_144), ret(300_000)];
        assert_eq!(check(&both), Ok(262_144));
        // An unreachable `ret a` after an unconditional jump.
        let dead = [Insn::stmt(JMP_JA, 1), Insn::stmt(RET_A, 0), ret(65535)];
        assert_eq!(check(&dead), Ok(65535));
        let t = translate(&Program::new(dead.to_vec()).unwrap(), TEST, true).unwrap();
        // Prologue (3), ja, ja accept, accept path (2): the dead `ret a`
        // emits nothing.
        assert_eq!(t.len(), 7);
        assert_eq!(t.bytes().len(), 56);
    }

    #[test]
    fn every_jump_lands_forward_inside_the_program() {
        let prog = rpcap::bpf::libpcap::compile(
            "tcp dst port 443 and (ip[2:2] - ((ip[0]&0xf)<<2) - ((tcp[12]&0xf0)>>2)) != 0",
            1,
            false,
        )
        .unwrap();
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
            drop_rejected: false,
        };
        for (frags, far) in [(false, false), (true, false), (false, true), (true, true)] {
            let insns = emit(prog.insns(), capture, frags, far).unwrap();
            let n = insns.len() as i64;
            for (pc, i) in insns.iter().enumerate() {
                let class = i.code & 7;
                let op = i.code & 0xf0;
                let to = if i.code == JMP32 | JA {
                    assert!(far, "gotol only when far");
                    pc as i64 + 1 + i64::from(i.imm)
                } else if (class == JMP64 || class == JMP32) && op != CALL && op != EXIT {
                    pc as i64 + 1 + i64::from(i.off)
                } else {
                    continue;
                };
                assert!(to > pc as i64 && to < n, "jump at {pc} to {to} of {n}");
            }
            assert_eq!(insns.last().unwrap().code, JMP64 | EXIT);
            assert_eq!(check_structure(&insns), Ok(()));
            // The map fds sit in ld_imm64 as BPF_PSEUDO_MAP_FD.
            assert!(insns
                .iter()
                .any(|i| i.code == 0x18 && i.src == PSEUDO_MAP_FD && i.imm == 3));
            // bpf_xdp_load_bytes only for frames with frags.
            let helper = insns.iter().any(|i| *i == call(HELPER_XDP_LOAD_BYTES));
            assert_eq!(helper, frags);
        }
    }
}
