//! Compiles the XDP program of `ebpf/` with the distribution's clang
//! (`-target bpf`) into `$OUT_DIR/xrpcapd_xdp.o`, which the agent embeds
//! (`include_bytes!`) and loads with aya at run time.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let src = manifest.join("../ebpf/xrpcapd_xdp.c");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("xrpcapd_xdp.o");
    println!("cargo:rerun-if-changed={}", src.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../ebpf/xrpcapd_abi.h").display()
    );
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        // asm/types.h lives in the multiarch folder on Debian.
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "clang failed ({s}) compiling the XDP program {}: see the messages above",
            src.display()
        ),
        Err(e) => panic!(
            "cannot run `{clang}` to compile the XDP program {} ({e}). \
             Install clang (scripts/setup.sh does) or point CLANG at it.",
            src.display()
        ),
    }
}
