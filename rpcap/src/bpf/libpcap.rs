//! tcpdump expressions compiled by libpcap into [`Program`]s (feature `libpcap`).
//!
//! libpcap is used here only as a compiler, on a dead handle: no capture, no
//! I/O. The agent (local filter, own-traffic exclusion), the sensor (the
//! filters it pushes) and the differential tests share this one conversion.

use super::opcode::RET_K;
use super::{Insn, Program};

/// An expression libpcap refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad filter '{expr}' for link type {linktype}: {reason}")]
pub struct CompileError {
    pub expr: String,
    pub linktype: i32,
    /// libpcap's own message.
    pub reason: String,
}

/// The snaplen of the `pcap` crate's dead handles: libpcap writes it into the
/// accepting returns of the programs it compiles (`ret #65535`).
pub const DEAD_HANDLE_SNAPLEN: u32 = 65535;

/// Compiles `expr` for `linktype` (a DLT value).
pub fn compile(expr: &str, linktype: i32, optimize: bool) -> Result<Program, CompileError> {
    compile_with(expr, linktype, optimize, |_| {})
}

/// The program a capture of `snaplen` bytes runs for `expr` on `linktype`
/// (optimised): no expression or a blank one accepts everything, and the
/// accepting returns keep `snaplen` bytes, as `pcap_open_dead(snaplen)` would
/// give (the dead handle's snaplen is fixed at [`DEAD_HANDLE_SNAPLEN`]).
pub fn compile_capture(
    expr: Option<&str>,
    linktype: i32,
    snaplen: u32,
) -> Result<Program, CompileError> {
    let expr = match expr.map(str::trim) {
        None | Some("") => return Ok(Program::accept(snaplen)),
        Some(e) => e,
    };
    compile_with(expr, linktype, true, |insns| {
        for insn in insns {
            if insn.code == RET_K && insn.k == DEAD_HANDLE_SNAPLEN {
                insn.k = snaplen;
            }
        }
    })
}

/// Compiles, lets `adjust` rewrite the instructions, validates once.
fn compile_with(
    expr: &str,
    linktype: i32,
    optimize: bool,
    adjust: impl FnOnce(&mut [Insn]),
) -> Result<Program, CompileError> {
    let err = |reason: String| CompileError {
        expr: expr.to_string(),
        linktype,
        reason,
    };
    let dead = pcap::Capture::dead(pcap::Linktype(linktype)).map_err(|e| err(e.to_string()))?;
    let prog = dead
        .compile(expr, optimize)
        .map_err(|e| err(e.to_string()))?;
    let mut insns =
        from_libpcap(&prog).ok_or_else(|| err("unreadable instruction from libpcap".into()))?;
    adjust(&mut insns);
    Program::new(insns).map_err(|e| err(format!("libpcap's program is refused: {e}")))
}

/// Our instructions for a program libpcap compiled.
pub fn from_libpcap(prog: &pcap::BpfProgram) -> Option<Vec<Insn>> {
    prog.get_instructions()
        .iter()
        .map(|i| {
            // The pcap crate keeps the fields private; Display prints "code jt jf k".
            let text = i.to_string();
            let mut f = text.split_whitespace().map(str::parse::<u32>);
            let mut next = || f.next()?.ok();
            let (code, jt, jf, k) = (next()?, next()?, next()?, next()?);
            Some(Insn::new(
                u16::try_from(code).ok()?,
                u8::try_from(jt).ok()?,
                u8::try_from(jf).ok()?,
                k,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_port_80_compiles_to_a_valid_program() {
        let p = compile("tcp port 80", 1, true).unwrap();
        let p = p.insns();
        super::super::validate(p).unwrap();
        assert!(p.iter().any(|i| i.k == 80));
        assert_eq!(p.last().unwrap().code, 0x06);
    }

    #[test]
    fn no_filter_is_ret_snaplen() {
        assert_eq!(
            compile_capture(None, 1, 1500).unwrap().insns(),
            [Insn::new(RET_K, 0, 0, 1500)]
        );
        assert_eq!(compile_capture(Some("  "), 1, 9).unwrap().insns().len(), 1);
    }

    #[test]
    fn capture_program_keeps_the_snaplen() {
        let p = compile_capture(Some("tcp port 80"), 1, 262_144).unwrap();
        let p = p.insns();
        assert!(p.len() > 5);
        // First instruction loads the ethertype (ldh [12]).
        assert_eq!(p[0], Insn::new(0x28, 0, 0, 12));
        // Accepting returns keep the capture's snaplen, rejecting ones 0.
        let rets: Vec<u32> = p.iter().filter(|i| i.code == RET_K).map(|i| i.k).collect();
        assert!(rets.contains(&262_144) && rets.contains(&0), "{rets:?}");
        assert!(!rets.contains(&65535));
    }

    #[test]
    fn a_bad_capture_filter_names_itself_and_has_libpcap_message() {
        let e = compile_capture(Some("tcp port eighty"), 1, 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad filter 'tcp port eighty'"), "{e}");
        assert!(e.len() > "bad filter 'tcp port eighty': ".len(), "{e}");
    }

    #[test]
    fn a_bad_expression_carries_libpcap_message() {
        let e = compile("tcp port eighty", 1, true).unwrap_err();
        assert_eq!(e.linktype, 1);
        assert!(e.reason.contains("eighty"), "{e}");
    }
}
