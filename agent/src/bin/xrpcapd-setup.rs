//! xrpcapd-setup: points xrpcapd at a sensor (see `xrpcapd::setup`).
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use xrpcapd::setup::{run, Cli, Env};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout();
    match run(&cli, &Env::from_process(), &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xrpcapd-setup: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
