//! Capture filters: tcpdump expressions compiled by libpcap (through the
//! `pcap` crate, on a dead handle for the agent's link type) into the classic
//! BPF program STARTCAP and UPDATEFILTER carry.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rpcap::bpf::libpcap::DEAD_HANDLE_SNAPLEN;
use rpcap::bpf::Insn;

/// BPF_RET | BPF_K.
const RET_K: u16 = 0x06;

/// The program for `expr` (None or blank: accept everything) on `linktype`,
/// keeping up to `snaplen` bytes of accepted packets.
pub fn compile(expr: Option<&str>, linktype: i32, snaplen: u32) -> Result<Vec<Insn>> {
    let expr = match expr.map(str::trim) {
        None | Some("") => return Ok(vec![Insn::new(RET_K, 0, 0, snaplen)]),
        Some(e) => e,
    };
    let mut out = rpcap::bpf::libpcap::compile(expr, linktype, true)
        .map_err(|e| anyhow!("bad filter '{expr}': {}", e.reason))?;
    for insn in &mut out {
        // The dead handle's snaplen is fixed at 65535; what the filter keeps
        // must be the capture's snaplen instead, as pcap_open_dead(snaplen) would give.
        if insn.code == RET_K && insn.k == DEAD_HANDLE_SNAPLEN {
            insn.k = snaplen;
        }
    }
    if out.is_empty() {
        bail!("libpcap compiled '{expr}' to an empty program");
    }
    Ok(out)
}

/// A filter expression from a file: `#` comment lines dropped, lines joined.
pub fn read_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read filter file {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" "))
}

/// SIGHUP: the expression of `--filter-file` read again, if there is one
/// and it compiles (otherwise logged, and the current filter stays).
pub fn reload(path: Option<&Path>, snaplen: u32) -> Option<String> {
    let Some(path) = path else {
        log::info!("SIGHUP: no --filter-file to re-read");
        return None;
    };
    let expr = match read_file(path) {
        Ok(e) => e,
        Err(e) => {
            log::error!("SIGHUP: {e:#}; keeping the current filter");
            return None;
        }
    };
    // Check it once before pushing it anywhere.
    if let Err(e) = compile(Some(&expr), 1, snaplen) {
        log::error!("SIGHUP: {e:#}; keeping the current filter");
        return None;
    }
    log::info!("SIGHUP: new filter '{expr}'");
    Some(expr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_filter_is_ret_snaplen() {
        assert_eq!(
            compile(None, 1, 1500).unwrap(),
            vec![Insn::new(RET_K, 0, 0, 1500)]
        );
        assert_eq!(compile(Some("  "), 1, 9).unwrap().len(), 1);
    }

    #[test]
    fn compiles_tcp_port_80_for_ethernet() {
        let p = compile(Some("tcp port 80"), 1, 262_144).unwrap();
        assert!(p.len() > 5);
        // First instruction loads the ethertype (ldh [12]).
        assert_eq!(p[0], Insn::new(0x28, 0, 0, 12));
        // Accepting returns keep the capture's snaplen, rejecting ones 0.
        let rets: Vec<u32> = p.iter().filter(|i| i.code == RET_K).map(|i| i.k).collect();
        assert!(rets.contains(&262_144) && rets.contains(&0), "{rets:?}");
        assert!(!rets.contains(&65535));
    }

    #[test]
    fn bad_filter_has_libpcap_message() {
        let e = compile(Some("tcp port eighty"), 1, 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad filter 'tcp port eighty'"), "{e}");
        assert!(e.len() > "bad filter 'tcp port eighty': ".len(), "{e}");
    }

    #[test]
    fn filter_file_drops_comments() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "# web\ntcp port 80\n\n  or udp port 53\n").unwrap();
        assert_eq!(read_file(&p).unwrap(), "tcp port 80 or udp port 53");
    }
}
