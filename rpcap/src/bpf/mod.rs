//! Classic BPF: the instruction, a validator with every rule of PROTOCOL.md
//! (STARTCAP), and an interpreter with the kernel's semantics.
//!
//! - [`validate`]: 1 ≤ len ≤ [`MAX_INSNS`], only known opcodes
//!   ([`opcode::ALL`]), every jump lands inside the program (forward), the
//!   last instruction is RET, no DIV/MOD by constant 0, no constant shift ≥ 32,
//!   scratch memory index < 16.
//! - [`Program::run`] returns the number of bytes to keep (0 = reject), with
//!   libpcap's `bpf_filter` semantics (see [Interpreter](self#interpreter)):
//!   packet loads outside `pkt` reject; `len` loads `wirelen`; division or
//!   modulo by X = 0 rejects; never panics. Kernel ancillary loads
//!   (`SKF_AD_OFF` = -0x1000 …) are not supported and reject as
//!   out-of-bounds loads.
//! - [`and_then`]: `first`, and if it accepts, `second` (one program,
//!   validated once; [`Program::and_then`] for two validated programs).
//!
//! # Interpreter
//!
//! A, X and the 16 scratch words start at 0 on each run. Loads are big-endian.
//! ALU is wrapping u32 arithmetic; shifts by 32 or more give 0 (as libpcap's
//! `bpf_filter`; constant ones are refused by the validator, as by the kernel
//! and libpcap's `bpf_validate`). No allocation per run.

mod compose;
mod interp;
#[cfg(feature = "libpcap")]
pub mod libpcap;
pub mod opcode;
mod validate;

pub use compose::and_then;
pub use validate::validate;

/// Largest program accepted (as the kernel's BPF_MAXINSNS).
pub const MAX_INSNS: usize = 8192;
/// Scratch memory words.
pub const MEMWORDS: usize = 16;

/// One instruction: `code u16 | jt u8 | jf u8 | k u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl Insn {
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }

    /// A non-jump instruction (`BPF_STMT`).
    pub const fn stmt(code: u16, k: u32) -> Insn {
        Insn::new(code, 0, 0, k)
    }

    /// A conditional jump (`BPF_JUMP`): `jt`/`jf` instructions ahead.
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
        Insn::new(code, jt, jf, k)
    }
}

/// Why a program was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidateError {
    #[error("empty program")]
    Empty,
    #[error("{0} instructions exceed the limit of {MAX_INSNS}")]
    TooLong(usize),
    #[error("instruction {pc}: unknown opcode {code:#06x}")]
    BadOpcode { pc: usize, code: u16 },
    #[error("instruction {pc}: jump lands outside the program")]
    JumpOutOfRange { pc: usize },
    #[error("instruction {pc}: division or modulo by constant 0")]
    DivByZero { pc: usize },
    #[error("instruction {pc}: scratch memory index {k} (must be < {MEMWORDS})")]
    BadMemIndex { pc: usize, k: u32 },
    #[error("instruction {pc}: constant shift by {k} (must be < 32)")]
    ShiftTooLarge { pc: usize, k: u32 },
    #[error("program does not end with a return")]
    NoReturn,
}

/// A validated program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
    /// `insns` decoded once for the interpreter.
    ops: Vec<interp::Op>,
}

impl Program {
    /// Validates and wraps `insns`.
    pub fn new(insns: Vec<Insn>) -> Result<Program, ValidateError> {
        validate(&insns)?;
        let ops = interp::decode(&insns);
        Ok(Program { insns, ops })
    }

    /// `ret #262144`: accepts every packet whole.
    pub fn accept_all() -> Program {
        Program::accept(262_144)
    }

    /// `ret #snaplen`: accepts every packet, keeping `snaplen` bytes.
    pub fn accept(snaplen: u32) -> Program {
        let insns = vec![Insn::new(opcode::RET_K, 0, 0, snaplen)];
        let ops = interp::decode(&insns);
        Program { insns, ops }
    }

    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// The instructions, for a message that carries them.
    pub fn into_insns(self) -> Vec<Insn> {
        self.insns
    }

    /// Runs the program on captured bytes `pkt` of a packet `wirelen` long;
    /// returns the number of bytes to keep, 0 to reject.
    #[inline]
    pub fn run(&self, pkt: &[u8], wirelen: u32) -> u32 {
        interp::run(&self.ops, pkt, wirelen)
    }
}
