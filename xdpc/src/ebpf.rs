//! eBPF instructions as the kernel takes them, and a small assembler with
//! labels (jumps are resolved when the program is finished).
//!
//! Only what the translation needs: the instruction classes and fields of
//! linux/bpf.h, the helpers it calls, `struct xdp_md` offsets and XDP
//! actions. These are the kernel's ABI, not the XDP program's (that
//! contract lives in the agent's `capture::afxdp::abi`).

/// XDP actions (`enum xdp_action`).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub(crate) const R0: u8 = 0;
pub(crate) const R1: u8 = 1;
pub(crate) const R2: u8 = 2;
pub(crate) const R3: u8 = 3;
pub(crate) const R4: u8 = 4;
pub(crate) const FP: u8 = 10;

// Instruction classes and fields (linux/bpf.h, bpf_common.h).
pub(crate) const LDIMM: u8 = 0x00;
pub(crate) const LDX: u8 = 0x01;
pub(crate) const STIMM: u8 = 0x02;
pub(crate) const STXC: u8 = 0x03;
pub(crate) const ALU32: u8 = 0x04;
pub(crate) const JMP64: u8 = 0x05;
pub(crate) const JMP32: u8 = 0x06;
pub(crate) const ALU64: u8 = 0x07;
pub(crate) const SRC_K: u8 = 0x00;
pub(crate) const SRC_X: u8 = 0x08;
pub(crate) const MODE_IMM: u8 = 0x00;
pub(crate) const MODE_MEM: u8 = 0x60;
pub(crate) const W: u8 = 0x00;
pub(crate) const H: u8 = 0x08;
pub(crate) const B: u8 = 0x10;
pub(crate) const DW: u8 = 0x18;
pub(crate) const AND: u8 = 0x50;
pub(crate) const LSH: u8 = 0x60;
pub(crate) const NEG: u8 = 0x80;
pub(crate) const MOV: u8 = 0xb0;
pub(crate) const END: u8 = 0xd0;
pub(crate) const ADD: u8 = 0x00;
pub(crate) const RSH: u8 = 0x70;
pub(crate) const JA: u8 = 0x00;
pub(crate) const JEQ: u8 = 0x10;
pub(crate) const JGT: u8 = 0x20;
pub(crate) const JGE: u8 = 0x30;
pub(crate) const JNE: u8 = 0x50;
pub(crate) const CALL: u8 = 0x80;
pub(crate) const EXIT: u8 = 0x90;
pub(crate) const JLT: u8 = 0xa0;
pub(crate) const JLE: u8 = 0xb0;
pub(crate) const PSEUDO_MAP_FD: u8 = 1;

pub(crate) const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
pub(crate) const HELPER_REDIRECT_MAP: i32 = 51;
pub(crate) const HELPER_XDP_GET_BUFF_LEN: i32 = 188;
pub(crate) const HELPER_XDP_LOAD_BYTES: i32 = 189;

/// `struct xdp_md` field offsets.
pub(crate) const XDP_MD_DATA: i16 = 0;
pub(crate) const XDP_MD_DATA_END: i16 = 4;
pub(crate) const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// Loads whose last byte lies beyond this offset skip direct access (the
/// verifier's packet ranges stop here, MAX_PACKET_OFF) and go to the helper
/// (or reject: no linear part is this long).
pub(crate) const DIRECT_END: u32 = 0xffff;

/// One eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ins {
    pub(crate) code: u8,
    pub(crate) dst: u8,
    pub(crate) src: u8,
    pub(crate) off: i16,
    pub(crate) imm: i32,
}

impl Ins {
    pub(crate) const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Ins {
        Ins {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// `code u8 | dst:4 src:4 | off i16 | imm i32`, little-endian fields
    /// with dst in the low nibble (as on every little-endian host; the
    /// encoding below is for the host's byte order).
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = if cfg!(target_endian = "little") {
            (self.src << 4) | (self.dst & 0xf)
        } else {
            (self.dst << 4) | (self.src & 0xf)
        };
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

pub(crate) fn alu32_imm(op: u8, dst: u8, imm: i32) -> Ins {
    Ins::new(ALU32 | op | SRC_K, dst, 0, 0, imm)
}
pub(crate) fn alu32_reg(op: u8, dst: u8, src: u8) -> Ins {
    Ins::new(ALU32 | op | SRC_X, dst, src, 0, 0)
}
pub(crate) fn alu64_imm(op: u8, dst: u8, imm: i32) -> Ins {
    Ins::new(ALU64 | op | SRC_K, dst, 0, 0, imm)
}
pub(crate) fn alu64_reg(op: u8, dst: u8, src: u8) -> Ins {
    Ins::new(ALU64 | op | SRC_X, dst, src, 0, 0)
}
pub(crate) fn ldx(size: u8, dst: u8, src: u8, off: i16) -> Ins {
    Ins::new(LDX | size | MODE_MEM, dst, src, off, 0)
}
pub(crate) fn stx(size: u8, dst: u8, src: u8, off: i16) -> Ins {
    Ins::new(STXC | size | MODE_MEM, dst, src, off, 0)
}
pub(crate) fn st_imm(size: u8, dst: u8, off: i16, imm: i32) -> Ins {
    Ins::new(STIMM | size | MODE_MEM, dst, 0, off, imm)
}
/// Host order to big-endian, `bits` wide, zero-extended.
pub(crate) fn to_be(dst: u8, bits: i32) -> Ins {
    Ins::new(ALU32 | END | SRC_X, dst, 0, 0, bits)
}
pub(crate) fn ja() -> Ins {
    Ins::new(JMP64 | JA, 0, 0, 0, 0)
}
pub(crate) fn jmp_imm(class: u8, op: u8, dst: u8, imm: i32) -> Ins {
    Ins::new(class | op | SRC_K, dst, 0, 0, imm)
}
pub(crate) fn jmp_reg(class: u8, op: u8, dst: u8, src: u8) -> Ins {
    Ins::new(class | op | SRC_X, dst, src, 0, 0)
}
pub(crate) fn call(helper: i32) -> Ins {
    Ins::new(JMP64 | CALL, 0, 0, 0, helper)
}
pub(crate) fn exit() -> Ins {
    Ins::new(JMP64 | EXIT, 0, 0, 0, 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label(usize);

/// A tiny assembler: instructions, labels, and jumps resolved at the end.
#[derive(Debug, Default)]
pub(crate) struct Asm {
    out: Vec<Ins>,
    labels: Vec<Option<usize>>,
    /// (instruction index, label) of every jump.
    fixups: Vec<(usize, Label)>,
    /// Far jumps: `ja` as `gotol`, conditional jumps that may cross the
    /// program as an inverted jump over a `gotol`.
    pub(crate) far: bool,
}

impl Asm {
    /// An empty program (`far`: see the field).
    pub(crate) fn new(far: bool) -> Asm {
        Asm {
            far,
            ..Asm::default()
        }
    }

    pub(crate) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    pub(crate) fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.out.len());
    }

    pub(crate) fn used(&self, l: Label) -> bool {
        self.fixups.iter().any(|&(_, f)| f == l)
    }

    pub(crate) fn emit(&mut self, i: Ins) {
        self.out.push(i);
    }

    /// A jump to `to`: `i` is a conditional jump or `ja` (whose far form
    /// is `gotol`). Conditional jumps stay near: cBPF's own span at most
    /// 255 instructions.
    pub(crate) fn jump(&mut self, i: Ins, to: Label) {
        self.fixups.push((self.out.len(), to));
        if self.far && i == ja() {
            self.out.push(Ins::new(JMP32 | JA, 0, 0, 0, 0));
        } else {
            self.out.push(i);
        }
    }

    /// `if dst <op> imm goto to` (64-bit compare, op JEQ or JNE), where
    /// `to` may be far.
    pub(crate) fn jump_if(&mut self, op: u8, dst: u8, imm: i32, to: Label) {
        if !self.far {
            return self.jump(jmp_imm(JMP64, op, dst, imm), to);
        }
        let inverse = if op == JEQ { JNE } else { JEQ };
        self.emit(Ins::new(JMP64 | inverse | SRC_K, dst, 0, 1, imm));
        self.jump(ja(), to);
    }

    /// `ld_imm64 dst, map_fd` (two slots).
    pub(crate) fn ld_map_fd(&mut self, dst: u8, fd: i32) {
        self.emit(Ins::new(LDIMM | DW | MODE_IMM, dst, PSEUDO_MAP_FD, 0, fd));
        self.emit(Ins::new(0, 0, 0, 0, 0));
    }

    /// Resolves the jumps; every `off` must fit eBPF's 16 bits (a `gotol`
    /// takes its offset in `imm`). `Err(n)`: some jump of the `n`
    /// instructions does not fit.
    pub(crate) fn finish(mut self) -> Result<Vec<Ins>, usize> {
        let n = self.out.len();
        for &(at, l) in &self.fixups {
            let to = self.labels[l.0].ok_or(n)?;
            let delta = to as i64 - at as i64 - 1;
            let ins = &mut self.out[at];
            if ins.code == JMP32 | JA {
                ins.imm = i32::try_from(delta).map_err(|_| n)?;
            } else {
                ins.off = i16::try_from(delta).map_err(|_| n)?;
            }
        }
        Ok(self.out)
    }
}

/// Why a program is malformed (see [`check_structure`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("empty program")]
    Empty,
    #[error("instruction {pc}: jump to {to}, outside {pc}+1..{len}")]
    Jump { pc: usize, to: i64, len: usize },
    #[error("instruction {pc}: jump into the second half of ld_imm64")]
    IntoLdImm64 { pc: usize },
    #[error("the program does not end with exit")]
    NoExit,
}

/// What can be checked of a program without the kernel's verifier: every
/// jump lands forward, inside the program, on an instruction's start (not
/// the second slot of an `ld_imm64`), and the last instruction is `exit`
/// (the translation emits no loops and no fall-through off the end).
pub fn check_structure(insns: &[Ins]) -> Result<(), StructureError> {
    let n = insns.len();
    if n == 0 {
        return Err(StructureError::Empty);
    }
    // The second slot of each ld_imm64: no jump may land there.
    let mut second = vec![false; n];
    let mut pc = 0;
    while pc < n {
        if insns[pc].code == LDIMM | DW | MODE_IMM {
            if let Some(s) = second.get_mut(pc + 1) {
                *s = true;
            }
            pc += 2;
        } else {
            pc += 1;
        }
    }
    for (pc, i) in insns.iter().enumerate() {
        let Some(to) = i.jump_target(pc) else {
            continue;
        };
        if to <= pc as i64 || to >= n as i64 {
            return Err(StructureError::Jump { pc, to, len: n });
        }
        if second[to as usize] {
            return Err(StructureError::IntoLdImm64 { pc });
        }
    }
    if insns[n - 1] != exit() {
        return Err(StructureError::NoExit);
    }
    Ok(())
}

impl Ins {
    /// Where this instruction at `pc` jumps (`None`: not a jump; calls and
    /// exit are not jumps).
    pub(crate) fn jump_target(&self, pc: usize) -> Option<i64> {
        let class = self.code & 7;
        let op = self.code & 0xf0;
        if self.code == JMP32 | JA {
            Some(pc as i64 + 1 + i64::from(self.imm))
        } else if (class == JMP64 || class == JMP32) && op != CALL && op != EXIT {
            Some(pc as i64 + 1 + i64::from(self.off))
        } else {
            None
        }
    }
}
