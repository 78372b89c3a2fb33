//! The classic BPF opcode encoding (as in `linux/filter.h` and libpcap's
//! `pcap/bpf.h`).
//!
//! An opcode is `class (3 bits) | size/op (…) | mode/src (…)`:
//! - bits 0–2: the instruction class;
//! - loads (LD/LDX): bits 3–4 the operand size, bits 5–7 the addressing mode;
//! - ALU/JMP: bit 3 the operand source (K or X), bits 4–7 the operation;
//! - RET: bits 3–4 the return value source (K or A);
//! - MISC: bits 3–7 the operation (TAX or TXA).

/// Class mask.
pub const BPF_CLASS_MASK: u16 = 0x07;
/// Load into A.
pub const BPF_LD: u16 = 0x00;
/// Load into X.
pub const BPF_LDX: u16 = 0x01;
/// Store A into scratch memory.
pub const BPF_ST: u16 = 0x02;
/// Store X into scratch memory.
pub const BPF_STX: u16 = 0x03;
/// Arithmetic and logic on A.
pub const BPF_ALU: u16 = 0x04;
/// Jumps.
pub const BPF_JMP: u16 = 0x05;
/// Return.
pub const BPF_RET: u16 = 0x06;
/// Register transfers.
pub const BPF_MISC: u16 = 0x07;

/// Load size mask.
pub const BPF_SIZE_MASK: u16 = 0x18;
/// 32-bit word.
pub const BPF_W: u16 = 0x00;
/// 16-bit half word.
pub const BPF_H: u16 = 0x08;
/// Byte.
pub const BPF_B: u16 = 0x10;

/// Load mode mask.
pub const BPF_MODE_MASK: u16 = 0xe0;
/// Immediate `k`.
pub const BPF_IMM: u16 = 0x00;
/// Packet at absolute offset `k`.
pub const BPF_ABS: u16 = 0x20;
/// Packet at offset `X + k`.
pub const BPF_IND: u16 = 0x40;
/// Scratch memory word `k`.
pub const BPF_MEM: u16 = 0x60;
/// Packet length on the wire.
pub const BPF_LEN: u16 = 0x80;
/// `4 * (pkt[k] & 0xf)`: the IPv4 header length (LDX, byte only).
pub const BPF_MSH: u16 = 0xa0;

/// ALU/JMP operation mask.
pub const BPF_OP_MASK: u16 = 0xf0;
pub const BPF_ADD: u16 = 0x00;
pub const BPF_SUB: u16 = 0x10;
pub const BPF_MUL: u16 = 0x20;
pub const BPF_DIV: u16 = 0x30;
pub const BPF_OR: u16 = 0x40;
pub const BPF_AND: u16 = 0x50;
pub const BPF_LSH: u16 = 0x60;
pub const BPF_RSH: u16 = 0x70;
pub const BPF_NEG: u16 = 0x80;
pub const BPF_MOD: u16 = 0x90;
pub const BPF_XOR: u16 = 0xa0;

pub const BPF_JA: u16 = 0x00;
pub const BPF_JEQ: u16 = 0x10;
pub const BPF_JGT: u16 = 0x20;
pub const BPF_JGE: u16 = 0x30;
pub const BPF_JSET: u16 = 0x40;

/// Operand source mask (ALU/JMP).
pub const BPF_SRC_MASK: u16 = 0x08;
/// Operand is the constant `k`.
pub const BPF_K: u16 = 0x00;
/// Operand is register X.
pub const BPF_X: u16 = 0x08;

/// Return value source mask.
pub const BPF_RVAL_MASK: u16 = 0x18;
/// Return register A (`BPF_K` returns the constant).
pub const BPF_A: u16 = 0x10;

/// MISC operation mask.
pub const BPF_MISCOP_MASK: u16 = 0xf8;
/// X = A.
pub const BPF_TAX: u16 = 0x00;
/// A = X.
pub const BPF_TXA: u16 = 0x80;

/// The instruction class of `code`.
pub const fn class(code: u16) -> u16 {
    code & BPF_CLASS_MASK
}

// Every complete opcode the validator accepts, named `CLASS_SIZE_MODE` /
// `CLASS_OP_SRC`. Exactly the set of libpcap's and Linux's classic BPF
// (without the kernel's ancillary extensions, which are not opcodes but
// negative load offsets).

pub const LD_W_ABS: u16 = BPF_LD | BPF_W | BPF_ABS;
pub const LD_H_ABS: u16 = BPF_LD | BPF_H | BPF_ABS;
pub const LD_B_ABS: u16 = BPF_LD | BPF_B | BPF_ABS;
pub const LD_W_IND: u16 = BPF_LD | BPF_W | BPF_IND;
pub const LD_H_IND: u16 = BPF_LD | BPF_H | BPF_IND;
pub const LD_B_IND: u16 = BPF_LD | BPF_B | BPF_IND;
pub const LD_W_LEN: u16 = BPF_LD | BPF_W | BPF_LEN;
pub const LD_IMM: u16 = BPF_LD | BPF_W | BPF_IMM;
pub const LD_MEM: u16 = BPF_LD | BPF_W | BPF_MEM;

pub const LDX_IMM: u16 = BPF_LDX | BPF_W | BPF_IMM;
pub const LDX_MEM: u16 = BPF_LDX | BPF_W | BPF_MEM;
pub const LDX_W_LEN: u16 = BPF_LDX | BPF_W | BPF_LEN;
pub const LDX_B_MSH: u16 = BPF_LDX | BPF_B | BPF_MSH;

pub const ST: u16 = BPF_ST;
pub const STX: u16 = BPF_STX;

pub const ALU_ADD_K: u16 = BPF_ALU | BPF_ADD | BPF_K;
pub const ALU_SUB_K: u16 = BPF_ALU | BPF_SUB | BPF_K;
pub const ALU_MUL_K: u16 = BPF_ALU | BPF_MUL | BPF_K;
pub const ALU_DIV_K: u16 = BPF_ALU | BPF_DIV | BPF_K;
pub const ALU_MOD_K: u16 = BPF_ALU | BPF_MOD | BPF_K;
pub const ALU_AND_K: u16 = BPF_ALU | BPF_AND | BPF_K;
pub const ALU_OR_K: u16 = BPF_ALU | BPF_OR | BPF_K;
pub const ALU_XOR_K: u16 = BPF_ALU | BPF_XOR | BPF_K;
pub const ALU_LSH_K: u16 = BPF_ALU | BPF_LSH | BPF_K;
pub const ALU_RSH_K: u16 = BPF_ALU | BPF_RSH | BPF_K;
pub const ALU_ADD_X: u16 = BPF_ALU | BPF_ADD | BPF_X;
pub const ALU_SUB_X: u16 = BPF_ALU | BPF_SUB | BPF_X;
pub const ALU_MUL_X: u16 = BPF_ALU | BPF_MUL | BPF_X;
pub const ALU_DIV_X: u16 = BPF_ALU | BPF_DIV | BPF_X;
pub const ALU_MOD_X: u16 = BPF_ALU | BPF_MOD | BPF_X;
pub const ALU_AND_X: u16 = BPF_ALU | BPF_AND | BPF_X;
pub const ALU_OR_X: u16 = BPF_ALU | BPF_OR | BPF_X;
pub const ALU_XOR_X: u16 = BPF_ALU | BPF_XOR | BPF_X;
pub const ALU_LSH_X: u16 = BPF_ALU | BPF_LSH | BPF_X;
pub const ALU_RSH_X: u16 = BPF_ALU | BPF_RSH | BPF_X;
pub const ALU_NEG: u16 = BPF_ALU | BPF_NEG;

pub const JMP_JA: u16 = BPF_JMP | BPF_JA;
pub const JMP_JEQ_K: u16 = BPF_JMP | BPF_JEQ | BPF_K;
pub const JMP_JGT_K: u16 = BPF_JMP | BPF_JGT | BPF_K;
pub const JMP_JGE_K: u16 = BPF_JMP | BPF_JGE | BPF_K;
pub const JMP_JSET_K: u16 = BPF_JMP | BPF_JSET | BPF_K;
pub const JMP_JEQ_X: u16 = BPF_JMP | BPF_JEQ | BPF_X;
pub const JMP_JGT_X: u16 = BPF_JMP | BPF_JGT | BPF_X;
pub const JMP_JGE_X: u16 = BPF_JMP | BPF_JGE | BPF_X;
pub const JMP_JSET_X: u16 = BPF_JMP | BPF_JSET | BPF_X;

pub const RET_K: u16 = BPF_RET | BPF_K;
pub const RET_A: u16 = BPF_RET | BPF_A;

pub const MISC_TAX: u16 = BPF_MISC | BPF_TAX;
pub const MISC_TXA: u16 = BPF_MISC | BPF_TXA;

/// Every opcode the validator accepts.
pub const ALL: [u16; 49] = [
    LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_W_IND, LD_H_IND, LD_B_IND, LD_W_LEN, LD_IMM, LD_MEM, LDX_IMM,
    LDX_MEM, LDX_W_LEN, LDX_B_MSH, ST, STX, ALU_ADD_K, ALU_SUB_K, ALU_MUL_K, ALU_DIV_K, ALU_MOD_K,
    ALU_AND_K, ALU_OR_K, ALU_XOR_K, ALU_LSH_K, ALU_RSH_K, ALU_ADD_X, ALU_SUB_X, ALU_MUL_X,
    ALU_DIV_X, ALU_MOD_X, ALU_AND_X, ALU_OR_X, ALU_XOR_X, ALU_LSH_X, ALU_RSH_X, ALU_NEG, JMP_JA,
    JMP_JEQ_K, JMP_JGT_K, JMP_JGE_K, JMP_JSET_K, JMP_JEQ_X, JMP_JGT_X, JMP_JGE_X, JMP_JSET_X,
    RET_K, RET_A, MISC_TAX, MISC_TXA,
];
