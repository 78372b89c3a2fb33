//! Log output: stderr (env_logger; `RUST_LOG` overrides the level) or
//! syslog (`-L`, facility daemon).

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use log::LevelFilter;

/// Whether [`init`] installed the logger.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A warning that may come before the logger is installed (the
/// configuration's, at start): to the log once it is, else to stderr, so
/// it is printed once either way (the journal reads both).
pub fn warn(text: &str) {
    if INSTALLED.load(Ordering::Acquire) {
        log::warn!("{text}");
    } else {
        eprintln!("warning: {text}");
    }
}

/// Installs the logger. `syslog` sends records to the local syslog daemon.
pub fn init(level: LevelFilter, syslog: bool) -> anyhow::Result<()> {
    if syslog {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "xrpcapd".into(),
            pid: std::process::id(),
        };
        let logger = syslog::unix(formatter).context("connecting to syslog (/dev/log)")?;
        log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger)))
            .context("installing the syslog logger")?;
        log::set_max_level(level);
    } else {
        env_logger::Builder::new()
            .filter_level(level)
            .parse_default_env()
            .format_target(false)
            .try_init()
            .context("installing the logger")?;
    }
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}
