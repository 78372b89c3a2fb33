//! The sensor's command-line parsers (sensor/src/cli.rs): each value parser
//! on the input as one string, and clap on the input split at NUL bytes as
//! an argument vector. None may panic. (The parts of `config` that touch
//! files are not fuzzed.)
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use xrpcap_sensor::cli::{self, Args};

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let _ = cli::parse_listen(&text);
    let _ = cli::parse_ifaddr(&text);
    let _ = cli::parse_range(&text);
    let _ = cli::parse_sampling(&text);
    let _ = xrpcap_sensor::tls::parse_pin(&text);
    let target = cli::connect_target(&text);
    assert!(target.len() >= text.len(), "nothing is cut from --connect");
    let argv = std::iter::once("xrpcap-sensor").chain(text.split('\0'));
    let _ = Args::try_parse_from(argv);
});
