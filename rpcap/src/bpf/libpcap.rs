//! tcpdump expressions compiled by libpcap into [`Insn`]s (feature `libpcap`).
//!
//! libpcap is used here only as a compiler, on a dead handle: no capture, no
//! I/O. The agent (local filter, own-traffic exclusion), the sensor (the
//! filters it pushes) and the differential tests share this one conversion.

use super::Insn;

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
pub fn compile(expr: &str, linktype: i32, optimize: bool) -> Result<Vec<Insn>, CompileError> {
    let err = |reason: String| CompileError {
        expr: expr.to_string(),
        linktype,
        reason,
    };
    let dead = pcap::Capture::dead(pcap::Linktype(linktype)).map_err(|e| err(e.to_string()))?;
    let prog = dead
        .compile(expr, optimize)
        .map_err(|e| err(e.to_string()))?;
    from_libpcap(&prog).ok_or_else(|| err("unreadable instruction from libpcap".into()))
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
        super::super::validate(&p).unwrap();
        assert!(p.iter().any(|i| i.k == 80));
        assert_eq!(p.last().unwrap().code, 0x06);
    }

    #[test]
    fn a_bad_expression_carries_libpcap_message() {
        let e = compile("tcp port eighty", 1, true).unwrap_err();
        assert_eq!(e.linktype, 1);
        assert!(e.reason.contains("eighty"), "{e}");
    }
}
