//! The project's two programs, started in a namespace with their output kept:
//! [`Sensor`] (xrpcap-sensor listening for active agents, writing pcap files
//! into its own temporary folder) and [`Agent`] (xrpcapd with a written
//! rpcapd.ini). Both are stopped (SIGKILL) when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::netns::Netns;
use crate::pcap::{read_pcap, Packet};
use crate::process::{bin_path, Child};
use crate::wait::wait_until;

/// How long a program may take to start listening or connecting. Generous:
/// debug binaries on a loaded 2-core machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Number of (non-overlapping) occurrences of `needle` in `haystack`.
pub fn count_of(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Waits until `child`'s log (stderr) contains `needle` at least `n` times;
/// fails early, with the log, when the program exits.
fn wait_log(
    child: &mut Child,
    role: &str,
    needle: &str,
    n: usize,
    timeout: Duration,
) -> Result<()> {
    let waited = wait_until(timeout, needle, || {
        if child.try_wait()?.is_some() {
            bail!("the {role} exited");
        }
        Ok(count_of(&child.stderr(), needle) >= n)
    });
    waited.with_context(|| format!("{role} log:\n{}", child.describe()))
}

/// xrpcap-sensor in a namespace, accepting active agents on `listen`, writing
/// one pcap file per capture into a temporary folder of its own.
#[derive(Debug)]
pub struct Sensor {
    child: Child,
    out: TempDir,
    listen: SocketAddr,
}

impl Sensor {
    /// Starts the sensor with `--listen LISTEN --out DIR` and the `extra`
    /// flags (e.g. `--filter`, `--udp-ports`), STATS every second. Returns once
    /// it listens.
    pub fn start(ns: &Netns, listen: SocketAddr, extra: &[&str]) -> Result<Sensor> {
        let out = tempfile::Builder::new()
            .prefix("xrpcap-test-sensor-out-")
            .tempdir()?;
        let mut cmd = ns.command(bin_path("xrpcap-sensor"));
        cmd.arg("--listen")
            .arg(listen.to_string())
            .arg("--out")
            .arg(out.path())
            .args(["--stats-interval", "1", "--summary-interval", "3600"])
            .args(extra)
            .env("RUST_LOG", "debug");
        let mut child = Child::spawn("xrpcap-sensor", cmd)?;
        child.wait_for_output("listening for active agents", START_TIMEOUT)?;
        Ok(Sensor { child, out, listen })
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Its log (stderr).
    pub fn log(&self) -> String {
        self.child.stderr()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits until the log contains `needle` at least `n` times.
    pub fn wait_log(&mut self, needle: &str, n: usize, timeout: Duration) -> Result<()> {
        wait_log(&mut self.child, "sensor", needle, n, timeout)
    }

    /// The capture files written so far, oldest name first, by their
    /// final names (a file still written is `NAME.part`: read it with
    /// `read_pcap`/`wait_for_packets`, which look there).
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.out.path())?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        for f in &mut files {
            if f.extension().is_some_and(|e| e == "part") {
                f.set_extension("");
            }
        }
        files.retain(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"));
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// Waits for exactly one capture file and returns its path.
    pub fn the_file(&self) -> Result<PathBuf> {
        let mut files = Vec::new();
        wait_until(START_TIMEOUT, "the sensor's capture file", || {
            files = self.files()?;
            Ok(!files.is_empty())
        })?;
        if files.len() != 1 {
            bail!("expected one capture file, found {files:?}");
        }
        Ok(files.remove(0))
    }

    /// Stops the sensor (SIGTERM: it flushes its files and prints its final
    /// counter lines) and returns its log.
    pub fn stop(&mut self) -> Result<String> {
        let status = self.child.stop(Duration::from_secs(10))?;
        if !status.success() {
            bail!(
                "xrpcap-sensor exited with {status}\n{}",
                self.child.describe()
            );
        }
        Ok(self.log())
    }

    /// Kills the sensor at once (SIGKILL): nothing is flushed, like a crash.
    pub fn kill(&mut self) -> Result<()> {
        self.child.signal("KILL")?;
        if self.child.wait_timeout(Duration::from_secs(10))?.is_none() {
            bail!("xrpcap-sensor survived SIGKILL");
        }
        Ok(())
    }

    /// Every packet of the one capture file (call after [`Sensor::stop`]).
    pub fn packets(&self) -> Result<Vec<Packet>> {
        read_pcap(&self.the_file()?)
    }

    /// The `key=value` counters of the sensor's final line for its capture
    /// number `index` (0-based, in the order the captures ended).
    pub fn final_counters(&self, index: usize) -> Result<Counters> {
        let log = self.log();
        let line = log
            .lines()
            .filter(|l| l.starts_with("final "))
            .nth(index)
            .with_context(|| format!("no final line #{index} in the sensor log:\n{log}"))?;
        Ok(Counters(line.to_string()))
    }
}

/// The `final key=value …` line of one capture.
#[derive(Debug, Clone)]
pub struct Counters(pub String);

impl Counters {
    /// The value of `key` as a number (panics when absent, see [`field`]).
    pub fn get(&self, key: &str) -> u64 {
        num(&parse_line(&self.0), key)
    }
}

/// The `key=value` fields of a counters line (a sensor's `final …` line in
/// its log or stats file), in order; words without `=` are left out.
pub fn parse_line(l: &str) -> Vec<(String, String)> {
    l.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of `key` in a parsed line (panics with the line when absent: a
/// test that asks for a counter relies on it).
pub fn field<'a>(line: &'a [(String, String)], key: &str) -> &'a str {
    line.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// The value of `key` as a number.
pub fn num(line: &[(String, String)], key: &str) -> u64 {
    field(line, key).parse().unwrap()
}

/// xrpcapd in a namespace, with its configuration written to a temporary file.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    dir: TempDir,
}

impl Agent {
    /// Writes `ini` to `rpcapd.ini` and starts `xrpcapd -f rpcapd.ini -v`
    /// (active mode only) with the `extra` flags, debug logging on.
    pub fn start(ns: &Netns, ini: &str, extra: &[&str]) -> Result<Agent> {
        let dir = tempfile::Builder::new()
            .prefix("xrpcap-test-agent-")
            .tempdir()?;
        let path = dir.path().join("rpcapd.ini");
        std::fs::write(&path, ini)?;
        let mut cmd = ns.command(bin_path("xrpcapd"));
        cmd.arg("-f").arg(&path).arg("-v").args(extra);
        cmd.env("RUST_LOG", "debug");
        let child = Child::spawn("xrpcapd", cmd)?;
        Ok(Agent { child, dir })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("rpcapd.ini")
    }

    pub fn log(&self) -> String {
        self.child.stderr()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits until the log contains `needle` at least `n` times; fails early
    /// when the agent exits.
    pub fn wait_log(&mut self, needle: &str, n: usize, timeout: Duration) -> Result<()> {
        wait_log(&mut self.child, "agent", needle, n, timeout)
    }

    /// Waits for the `n`th capture on `ifname` to be started: the AF_PACKET
    /// socket is bound when the agent logs it (it opens the ring before it
    /// answers STARTCAP), so every frame sent afterwards is seen.
    pub fn wait_capturing(&mut self, ifname: &str, n: usize) -> Result<()> {
        self.wait_log(&format!("capture on {ifname} started"), n, START_TIMEOUT)
    }

    /// Stops the agent (SIGTERM) and checks that it exits cleanly.
    pub fn stop(&mut self) -> Result<String> {
        let status = self.child.stop(Duration::from_secs(10))?;
        if !status.success() {
            bail!("xrpcapd exited with {status}\n{}", self.child.describe());
        }
        Ok(self.log())
    }
}

/// Writes `text` to `path` (a filter file, a configuration).
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
