//! What `--check-config` prints: the effective configuration in rpcapd.ini
//! syntax (every key of [`KEYS`], in its order), then what only flags set.
//! It parses back to the same configuration.

use std::fmt;

use super::ini::KEYS;
use super::model::Config;

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for key in KEYS {
            for value in (key.show)(self) {
                writeln!(f, "{} = {value}", key.name)?;
            }
        }
        let p = &self.passive;
        writeln!(f, "# from flags only:")?;
        writeln!(
            f,
            "#   passive listen (-b/-p/-4): {}:{}{}{}",
            p.bind.as_deref().unwrap_or("*"),
            p.port,
            if p.ipv4_only { " IPv4 only" } else { "" },
            if self.active_only {
                " (off: -v or Passive = no)"
            } else {
                ""
            }
        )?;
        writeln!(f, "#   log stats (-S): {}", self.log_stats)?;
        writeln!(f, "#   dry run (-y): {}", self.capture.dry_run)?;
        write!(f, "#   syslog (-L): {}", self.syslog)
    }
}
