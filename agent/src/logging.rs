//! Log output: stderr (env_logger; `RUST_LOG` overrides the level) or
//! syslog (`-L`, facility daemon).

use anyhow::Context;
use log::LevelFilter;

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
    Ok(())
}
