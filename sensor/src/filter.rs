//! Capture filter expressions: read from `--filter-file` and re-read on
//! SIGHUP. They are compiled by `rpcap::bpf::libpcap::compile_capture` (on a
//! dead handle for the agent's link type) into the program STARTCAP and
//! UPDATEFILTER carry.

use std::path::Path;

use anyhow::{Context, Result};

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
    if let Err(e) = rpcap::bpf::libpcap::compile_capture(Some(&expr), 1, snaplen) {
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
    fn filter_file_drops_comments() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "# web\ntcp port 80\n\n  or udp port 53\n").unwrap();
        assert_eq!(read_file(&p).unwrap(), "tcp port 80 or udp port 53");
    }
}
