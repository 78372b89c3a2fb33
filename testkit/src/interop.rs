//! The real libpcap RPCAP client of the interop tests (tests/interop/
//! rpcap_client.c, linked against libpcap built with remote capture by
//! scripts/libpcap-remote.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The client binary, built (or found built) once per test process.
pub fn rpcap_client_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(root.join("scripts/libpcap-remote.sh"))
            .output()
            .expect("running scripts/libpcap-remote.sh");
        assert!(
            out.status.success(),
            "scripts/libpcap-remote.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = String::from_utf8_lossy(&out.stdout);
        let prefix = Path::new(prefix.lines().last().expect("prefix line").trim());
        prefix.parent().unwrap().join("rpcap_client")
    })
    .clone()
}
