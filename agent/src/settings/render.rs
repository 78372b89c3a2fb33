//! What `--check-config` prints: the effective configuration in rpcapd.ini
//! syntax (every key of [`KEYS`], in its order), then what only flags set.
//! It parses back to the same configuration. [`Explained`] adds, above
//! each key that a source set, where its value comes from.

use std::fmt;

use super::ini::{Assignment, Key, Loaded, KEYS};
use super::model::Config;

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_config(f, self, &|_| None)
    }
}

/// `config`, with `note(key)` as a comment line above the key's lines.
fn write_config(
    f: &mut fmt::Formatter<'_>,
    config: &Config,
    note: &dyn Fn(&Key) -> Option<String>,
) -> fmt::Result {
    for key in KEYS {
        if let Some(n) = note(key) {
            writeln!(f, "# {n}")?;
        }
        for value in (key.show)(config) {
            writeln!(f, "{} = {value}", key.name)?;
        }
    }
    let p = &config.passive;
    writeln!(f, "# from flags only:")?;
    writeln!(
        f,
        "#   passive listen (-b/-p/-4): {}:{}{}{}",
        p.bind.as_deref().unwrap_or("*"),
        p.port,
        if p.ipv4_only { " IPv4 only" } else { "" },
        if config.active_only {
            " (off: -v or Passive = no)"
        } else {
            ""
        }
    )?;
    writeln!(f, "#   log stats (-S): {}", config.log_stats)?;
    writeln!(f, "#   dry run (-y): {}", config.capture.dry_run)?;
    write!(f, "#   syslog (-L): {}", config.syslog)
}

/// `--check-config`'s configuration: `config` (the files and the
/// environment of `loaded`, then the flags) with a comment above each key
/// a source set, naming the source(s) that decide its value and those it
/// overrides, highest precedence first:
///
/// ```text
/// # UdpStrSize from flags; overrides env XRPCAPD_UDP_STR_SIZE, /etc/xrpcapd/rpcapd.ini:4
/// # ActiveClient from env XRPCAPD_ACTIVE_CLIENT_1, env XRPCAPD_ACTIVE_CLIENT_2; replaces /etc/xrpcapd/rpcapd.d/50-sensor.ini:1
/// ```
pub struct Explained<'a> {
    pub loaded: &'a Loaded,
    pub config: &'a Config,
}

impl Explained<'_> {
    /// Where `key`'s value comes from, if anything but the default.
    fn note(&self, key: &Key) -> Option<String> {
        let mine: Vec<&Assignment> = self
            .loaded
            .assignments
            .iter()
            .filter(|a| std::ptr::eq(a.key, key))
            .collect();
        let by_flags = (key.show)(&self.loaded.config) != (key.show)(self.config);
        if mine.is_empty() && !by_flags {
            return None;
        }
        let shown = |a: &&Assignment| a.origin.to_string();
        let kept: Vec<String> = mine.iter().filter(|a| !a.replaced).map(shown).collect();
        let replaced: Vec<String> = mine
            .iter()
            .rev()
            .filter(|a| a.replaced)
            .map(shown)
            .collect();
        let repeats = mine.last().is_some_and(|a| key.repeats(&a.value));
        let (from, over, verb) = if repeats {
            // Each line adds a value; the flags add theirs (or amend them, -i).
            let mut from = kept;
            if by_flags {
                from.push("flags".to_string());
            }
            (from, replaced, "replaces")
        } else {
            // One value: the last source wins over the others.
            let mut order: Vec<String> = kept.into_iter().rev().chain(replaced).collect();
            if by_flags {
                order.insert(0, "flags".to_string());
            }
            let rest = order.split_off(1);
            (order, rest, "overrides")
        };
        let mut note = format!("{} from {}", key.name, from.join(", "));
        if !over.is_empty() {
            note.push_str(&format!("; {verb} {}", over.join(", ")));
        }
        Some(note)
    }
}

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_config(f, self.config, &|key| self.note(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::cli::Cli;
    use crate::settings::env::Environment;
    use clap::Parser;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The same keys in the file, a drop-in, the environment and a flag:
    /// each value comes from the highest, and `--check-config` says so.
    #[test]
    fn precedence_ini_dropin_env_flags_and_where_each_value_comes_from() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "rpcapd.ini",
            "UdpStrSize = 100\nActiveClient = 10.0.0.1\nSendBuffer = 1M\nRingSize = 1M\n\
             PassiveClient = f1\nLogLevel = warn\n",
        );
        let dropin = write(
            dir.path(),
            "rpcapd.d/50-x.ini",
            "UdpStrSize = 200\nActiveClient = 10.0.0.2\nSendBuffer = 2M\n",
        );
        let env = Environment::from_vars([
            ("XRPCAPD_UDP_STR_SIZE", "300"),
            ("XRPCAPD_ACTIVE_CLIENT_1", "10.0.0.3"),
            ("XRPCAPD_ACTIVE_CLIENT_2", "10.0.0.4"),
            ("XRPCAPD_SEND_BUFFER", "3M"),
            ("XRPCAPD_KEEPALIVE_SECS", "5"),
        ]);
        let loaded = Config::load_all(Some(&main), None, &env).unwrap();
        assert_eq!(
            loaded.env,
            [
                "XRPCAPD_ACTIVE_CLIENT_1",
                "XRPCAPD_ACTIVE_CLIENT_2",
                "XRPCAPD_UDP_STR_SIZE",
                "XRPCAPD_SEND_BUFFER",
                "XRPCAPD_KEEPALIVE_SECS"
            ]
        );
        let c = &loaded.config;
        assert_eq!(c.udpstr_size, 300, "env over the drop-in over the file");
        assert_eq!(c.capture.send_buffer, 3 << 20);
        assert_eq!(c.capture.ring_size, 1 << 20, "the file's, nothing over it");
        assert_eq!(c.keepalive_secs, 5);
        // The environment replaces the files' ActiveClient lines.
        let hosts: Vec<&str> = c.active_clients.iter().map(|a| a.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.3", "10.0.0.4"]);
        // Flags over everything; -a adds to the list.
        let cli =
            Cli::try_parse_from(["xrpcapd", "-t", "400", "-a", "10.0.0.5", "-l", "g1"]).unwrap();
        let mut effective = loaded.config.clone();
        cli.apply(&mut effective);
        assert_eq!(effective.udpstr_size, 400);
        assert_eq!(effective.active_clients.len(), 3);

        let text = Explained {
            loaded: &loaded,
            config: &effective,
        }
        .to_string();
        let (m, d) = (main.display(), dropin.display());
        for want in [
            format!("# UdpStrSize from flags; overrides env XRPCAPD_UDP_STR_SIZE, {d}:1, {m}:1\nUdpStrSize = 400\n"),
            format!(
                "# ActiveClient from env XRPCAPD_ACTIVE_CLIENT_1, env XRPCAPD_ACTIVE_CLIENT_2, flags; \
                 replaces {d}:2, {m}:2\nActiveClient = 10.0.0.3, 2003\nActiveClient = 10.0.0.4, 2003\n\
                 ActiveClient = 10.0.0.5, 2003\n"
            ),
            format!("# SendBuffer from env XRPCAPD_SEND_BUFFER; overrides {d}:3, {m}:3\nSendBuffer = 3145728\n"),
            format!("# RingSize from {m}:4\nRingSize = 1048576\n"),
            format!("# PassiveClient from {m}:5, flags\nPassiveClient = f1\nPassiveClient = g1\n"),
            format!("# LogLevel from {m}:6\nLogLevel = warn\n"),
            "# KeepaliveSecs from env XRPCAPD_KEEPALIVE_SECS\nKeepaliveSecs = 5\n".to_string(),
        ] {
            assert!(text.contains(&want), "missing\n{want}\nin\n{text}");
        }
        // A key no source sets has no note; the notes are comments: the
        // text parses back to the same configuration.
        assert!(text.contains("\nMaxBackoffSecs = 30\n") && !text.contains("MaxBackoffSecs from"));
        let again = Config::parse(&text, "check").unwrap();
        assert!(again.warnings.is_empty(), "{:?}", again.warnings);
        assert_eq!(again.config.to_string(), effective.to_string());
    }

    #[test]
    fn later_lines_of_one_source_override_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "a.ini", "UdpStrSize = 100\nUdpStrSize = 0\n");
        let env = Environment::from_vars([("XRPCAPD_WORKER_CPU", "1\n2")]);
        let loaded = Config::load_all(Some(&main), None, &env).unwrap();
        let text = Explained {
            loaded: &loaded,
            config: &loaded.config,
        }
        .to_string();
        let m = main.display();
        assert!(
            text.contains(&format!("# UdpStrSize from {m}:2; overrides {m}:1\n")),
            "{text}"
        );
        assert!(
            text.contains("# WorkerCpu from env XRPCAPD_WORKER_CPU:2; overrides env XRPCAPD_WORKER_CPU:1\nWorkerCpu = 2\n"),
            "{text}"
        );
    }
}
