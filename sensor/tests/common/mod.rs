//! The sensor's tests: the real sensor binary on loopback (this crate's
//! tests are the only ones that know its path), and from the test kit a
//! scripted agent that plays the agent side of RPCAP, the test records and
//! their udpstr framing, the sensor's stats lines.
// Each test binary uses its own subset of these.
#![allow(dead_code, unused_imports)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub use xrpcap_testkit::daemon::{field, num, parse_line};
pub use xrpcap_testkit::record::{frame, pcap_bytes, records, Record};
pub use xrpcap_testkit::scripted_agent::{interfaces, ScriptedAgent};
pub use xrpcap_testkit::tcpdump::tcpdump_count;
pub use xrpcap_testkit::traffic::data_socket;

pub const BIN: &str = env!("CARGO_BIN_EXE_xrpcap-sensor");

/// A running sensor; killed on drop if still running.
pub struct Sensor {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub stats_file: PathBuf,
}

pub struct Finished {
    pub code: Option<i32>,
    pub stderr: String,
    pub stdout: Vec<u8>,
}

impl Sensor {
    /// Starts the sensor with `--out DIR --stats-file DIR/stats` plus `args`.
    pub fn start(args: &[&str]) -> Sensor {
        Self::start_with(args, Stdio::null())
    }

    pub fn start_with(args: &[&str], stdout: Stdio) -> Sensor {
        Self::start_env(args, stdout, &[])
    }

    pub fn start_env(args: &[&str], stdout: Stdio, env: &[(&str, &str)]) -> Sensor {
        let dir = tempfile::tempdir().unwrap();
        let stats_file = dir.path().join("stats.txt");
        let out = dir.path().join("out");
        let child = Command::new(BIN)
            .arg("--out")
            .arg(&out)
            .arg("--stats-file")
            .arg(&stats_file)
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("sensor starts");
        Sensor {
            child,
            dir,
            stats_file,
        }
    }

    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the sensor to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> Finished {
        let mut stderr = self.child.stderr.take().unwrap();
        let err_reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut stdout = self.child.stdout.take();
        let out_reader = thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(o) = stdout.as_mut() {
                let _ = o.read_to_end(&mut v);
            }
            v
        });
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "sensor did not exit within {limit:?}; stderr:\n{}",
                    err_reader.join().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Finished {
            code: status.code(),
            stderr: err_reader.join().unwrap(),
            stdout: out_reader.join().unwrap(),
        }
    }

    /// The `key=value` final lines of the stats file.
    pub fn final_lines(&self) -> Vec<Vec<(String, String)>> {
        let text = std::fs::read_to_string(&self.stats_file).expect("stats file written");
        text.lines()
            .filter(|l| !l.is_empty())
            .map(parse_line)
            .collect()
    }

    /// Capture files written (sorted).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.out_dir())
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` scripted agents at once, agent `i` dialled by `dial(i)`: each takes
/// one capture (handshake, STARTCAP) and serves the sensor's STATS in the
/// background. Returns the data port the sensor gave each, in order, and
/// the serving threads (they end with the sensor).
pub fn capturing_agents<F>(n: usize, dial: F) -> (Vec<u16>, Vec<thread::JoinHandle<()>>)
where
    F: Fn(usize) -> ScriptedAgent + Copy + Send + 'static,
{
    let handles: Vec<_> = (0..n)
        .map(|i| {
            thread::spawn(move || {
                let mut agent = dial(i);
                let (_, req) = agent.handshake(1);
                let (server, _) = agent.serve(rpcap::msg::Stats::default());
                (req.portdata, server)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).unzip()
}
