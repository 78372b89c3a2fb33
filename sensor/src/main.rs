//! xrpcap-sensor: the reference RPCAP sensor. Agents (xrpcapd, rpcapd) dial it
//! (active mode) or it dials them (passive mode); it starts one capture per
//! agent and writes what arrives to pcap/pcapng files. The work is the
//! library's (`xrpcap_sensor`); this is the shell: arguments, logging, exit code.
#![deny(unsafe_code)]

use clap::Parser;
use xrpcap_sensor::cli::{self, Args};

fn main() {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    if let Err(e) = cli::run(args) {
        eprintln!("xrpcap-sensor: error: {e:#}");
        std::process::exit(1);
    }
}
