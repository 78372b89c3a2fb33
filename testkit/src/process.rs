//! Spawned programs (killed and reaped on drop) and the project's binaries.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

/// How often the waits of this module poll.
const POLL: Duration = Duration::from_millis(20);

/// A spawned program whose stdout and stderr go to files (read them with
/// [`Child::stdout`] / [`Child::stderr`]). On drop it is killed (SIGKILL)
/// and reaped if still running; when the test is panicking its output is
/// printed, so a failure shows what the program said.
#[derive(Debug)]
pub struct Child {
    name: String,
    child: std::process::Child,
    status: Option<ExitStatus>,
    logs: TempDir,
}

impl Child {
    /// Spawns `cmd` (stdin closed, output captured). `name` labels its logs.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Child> {
        let logs = tempfile::Builder::new()
            .prefix(&format!("xrpcap-test-{name}-"))
            .tempdir()?;
        let stdout = File::create(logs.path().join("stdout"))?;
        let stderr = File::create(logs.path().join("stderr"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        Ok(Child {
            name: name.to_string(),
            child,
            status: None,
            logs,
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.read_log("stdout")
    }

    pub fn stderr(&self) -> String {
        self.read_log("stderr")
    }

    fn read_log(&self, which: &str) -> String {
        std::fs::read(self.logs.path().join(which))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the program has exited (reaps it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the program to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `USR1`) unless the
    /// program has already been reaped. Uses kill(1): no unsafe code needed.
    pub fn signal(&mut self, sig: &str) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let out = Command::new("kill")
            .args(["-s", sig, &self.id().to_string()])
            .output()
            .context("running kill")?;
        // The program may exit between try_wait and kill; only then may kill fail.
        if !out.status.success() && self.try_wait()?.is_none() {
            bail!(
                "kill -s {sig} {} ({}): {}",
                self.id(),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Stops the program gracefully: SIGTERM, then SIGKILL if it has not
    /// exited within `grace`. Returns its exit status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal("TERM")?;
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// Waits until the program's stdout or stderr contains `needle`. Fails
    /// early, with its output, when the program exits first.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                bail!(
                    "{} exited ({status}) before printing {needle:?}\n{}",
                    self.name,
                    self.describe()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.describe()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Its name and output, for error messages.
    pub fn describe(&self) -> String {
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
    }
}

/// Path of one of the project's binaries (`xrpcapd`, `xrpcap-sensor`).
///
/// Looks in, first match wins:
/// 1. `$XRPCAP_BIN_DIR` (scripts/test.sh sets it to the folder it built);
/// 2. `<target>/<profile>/` where `<target>` is `$CARGO_TARGET_DIR` (relative
///    paths taken from the workspace root) or the workspace's `target/`, and
///    `<profile>` is `$XRPCAP_PROFILE` or the profile this test was built in.
///
/// Panics with a build hint when the binary is missing: `cargo test` does not
/// build other packages' binaries for this crate's tests.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = bin_dir();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: build the binaries first, e.g. `cargo build --workspace --bins{}` \
         (or set XRPCAP_BIN_DIR to the folder that holds them)",
        path.display(),
        if dir.ends_with("release") {
            " --release"
        } else {
            ""
        }
    );
    path
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XRPCAP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace")
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir), // join keeps an absolute dir as is
        None => workspace.join("target"),
    };
    let profile = std::env::var("XRPCAP_PROFILE").unwrap_or_else(|_| {
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_string()
    });
    target.join(profile)
}
