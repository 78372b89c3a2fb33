//! The capture filter, compiled for XDP: pure functions from a validated
//! cBPF program to what the agent's XDP program runs.
//!
//! - [`rules`]: the conservative pre-filter the XDP program checks
//!   (ethertype class, protocols, address prefixes, port ranges), derived
//!   from the cBPF program so that it never rejects a frame the program
//!   accepts.
//! - [`translate`]: the cBPF program translated into an eBPF XDP program
//!   with the semantics of rpcap's interpreter, tail-called by the XDP
//!   program to judge frames exactly.
//! - [`ebpf`]: the eBPF instruction encoding and assembler they use.
//!
//! No I/O and no `unsafe`: loading programs and filling maps is the agent's
//! job (`capture::afxdp`), which also holds the contract with the C program
//! (`afxdp::abi`: the limits and counter slots passed in here). Everything
//! here is tested, and fuzzed against the interpreter (`xdpc/fuzz`), without
//! root.
#![forbid(unsafe_code)]

pub mod ebpf;
pub mod rules;
pub mod translate;

pub use ebpf::{
    check_structure, Ins, StructureError, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
};
pub use rules::{ClassRules, Limits, XdpRules};
pub use translate::{
    check, translate, CounterSlots, Reason, TranslateError, Translation, Verdict, NEVER_TRUNCATES,
    WHOLE_FRAME,
};
