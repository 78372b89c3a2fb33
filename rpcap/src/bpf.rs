//! Classic BPF: the instruction, a validator with every rule of PROTOCOL.md
//! (STARTCAP), and an interpreter with the kernel's semantics.
//!
//! CONTRACT (skeleton):
//! - `validate`: 1 ≤ len ≤ [`MAX_INSNS`], only known opcodes, every jump lands
//!   inside the program, the last instruction is RET, no DIV/MOD by constant 0,
//!   scratch memory index < 16.
//! - `Program::run(pkt, wirelen)` returns the number of bytes to keep (0 =
//!   reject). Packet loads (abs, ind, msh) outside `pkt` reject the packet;
//!   `len` loads `wirelen`; division/modulo by X = 0 rejects; never panics on a
//!   validated program.

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
    pub fn new(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
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
    #[error("program does not end with a return")]
    NoReturn,
}

/// Checks a program before use.
pub fn validate(prog: &[Insn]) -> Result<(), ValidateError> {
    let _ = prog;
    todo!()
}

/// A validated program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
}

impl Program {
    /// Validates and wraps `insns`.
    pub fn new(insns: Vec<Insn>) -> Result<Program, ValidateError> {
        validate(&insns)?;
        Ok(Program { insns })
    }

    /// `ret #262144`: accepts every packet whole.
    pub fn accept_all() -> Program {
        Program {
            insns: vec![Insn::new(0x06, 0, 0, 262_144)],
        }
    }

    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Runs the program on captured bytes `pkt` of a packet `wirelen` long;
    /// returns the number of bytes to keep, 0 to reject.
    pub fn run(&self, pkt: &[u8], wirelen: u32) -> u32 {
        let _ = (pkt, wirelen);
        todo!()
    }
}
