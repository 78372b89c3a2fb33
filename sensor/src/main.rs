//! xrpcap-sensor: the reference RPCAP sensor. Agents (xrpcapd, rpcapd) dial it
//! (active mode) or it dials them (passive mode); it starts one capture per
//! agent and writes what arrives to pcap/pcapng files. The work is the
//! library's (`xrpcap_sensor`); this is the shell: arguments, logging, exit code.
#![deny(unsafe_code)]

use clap::Parser;
use xrpcap_sensor::cli::{self, Args};
use xrpcap_sensor::control;

/// Exit status of a configuration error (EX_CONFIG of sysexits.h), as
/// xrpcapd's: systemd's `RestartPreventExitStatus=78` does not loop on it.
const EX_CONFIG: i32 = 78;

fn main() {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // A flag's bad value is a configuration error; usage errors stay 2.
            use clap::error::ErrorKind;
            let bad_value = matches!(
                e.kind(),
                ErrorKind::ValueValidation | ErrorKind::InvalidValue
            );
            let _ = e.print();
            std::process::exit(if bad_value { EX_CONFIG } else { e.exit_code() });
        }
    };
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    // The settings (flags, password and filter files, output directory)
    // first: what fails there is the configuration's fault.
    let cfg = match cli::config(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("xrpcap-sensor: error: {e:#}");
            std::process::exit(EX_CONFIG);
        }
    };
    let run = || -> anyhow::Result<()> {
        let mut sensor = control::Sensor::new(cfg)?;
        sensor.handle_signals()?;
        sensor.run()
    };
    if let Err(e) = run() {
        eprintln!("xrpcap-sensor: error: {e:#}");
        std::process::exit(1);
    }
}
