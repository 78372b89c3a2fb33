//! `xrpcapd status`: the running agent answers on a unix stream socket
//! (`StatusSocket`, `--status-socket`; default [`DEFAULT_STATUS_SOCKET`] in
//! the unit's RuntimeDirectory) with a plain-text table — its sensor slots,
//! its captures, its passive listeners and the configuration warnings — and
//! closes the connection. `xrpcapd status` ([`query`]) copies it to stdout.
//!
//! Nothing here touches the datapath or waits on the control loop: the loop
//! publishes a [`View`] into a [`Board`] at each capture check (every
//! 500 ms, with the metrics snapshot: the same slots and counters), and the
//! socket's thread ([`serve`]) takes the board's lock for a copy when a
//! client connects, renders it ([`render`]) and writes it (a client that does
//! not read is given up after [`WRITE_TIMEOUT`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::datapath::Counters;
use crate::metrics::Snapshot;
pub use crate::settings::{StatusSocket, DEFAULT_STATUS_SOCKET};

/// A client that does not read its table is dropped after this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// `xrpcapd status` waits this long for the table.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the status socket shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The slots and captures, as published for the metrics endpoint.
    pub snapshot: Snapshot,
    /// Frames sent per second of each running capture (sensor, interface),
    /// over the last publish interval.
    pub pps: BTreeMap<(String, String), f64>,
    /// The passive listeners' addresses.
    pub listeners: Vec<SocketAddr>,
    /// The configuration's warnings (at start, then at each reload).
    pub warnings: Vec<String>,
}

/// The latest [`View`]: written by the control loop (and by the reload for
/// the warnings), read by the socket's thread.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<View>>);

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The control loop's part: slots, captures, rates, listeners.
    pub fn publish(
        &self,
        snapshot: Snapshot,
        pps: BTreeMap<(String, String), f64>,
        listeners: Vec<SocketAddr>,
    ) {
        let mut v = self.lock();
        v.snapshot = snapshot;
        v.pps = pps;
        v.listeners = listeners;
    }

    pub fn set_warnings(&self, warnings: Vec<String>) {
        self.lock().warnings = warnings;
    }

    pub fn get(&self) -> View {
        self.lock().clone()
    }
}

/// Packets sent to the sensor (as `xrpcapd_capture_frames_sent_total`):
/// framed minus send drops, 0 in a dry run.
pub fn frames_sent(c: &Counters) -> u64 {
    if c.dry_run {
        0
    } else {
        c.framed.saturating_sub(c.send_dropped)
    }
}

/// Frames sent per second between the previous publish and this one: kept
/// by the control loop per (sensor, interface) of the running captures.
#[derive(Debug, Default)]
pub struct Rates(BTreeMap<(String, String), (u64, Instant)>);

impl Rates {
    /// The rates of `snapshot`'s running captures at `now` (none for a
    /// capture seen for the first time).
    pub fn update(&mut self, snapshot: &Snapshot, now: Instant) -> BTreeMap<(String, String), f64> {
        let mut rates = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for c in snapshot.captures.iter().filter(|c| c.running) {
            let key = (c.sensor.clone(), c.interface.clone());
            let sent = frames_sent(&c.counters);
            if let Some(&(before, at)) = self.0.get(&key) {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                if secs > 0.0 && sent >= before {
                    rates.insert(key.clone(), (sent - before) as f64 / secs);
                }
            }
            seen.insert(key, (sent, now));
        }
        self.0 = seen;
        rates
    }
}

/// Rows under a header, each column as wide as its widest cell (the last
/// one not padded).
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut l = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(out, header.to_vec());
    for row in rows {
        line(out, row.iter().map(String::as_str).collect());
    }
}

/// The table `xrpcapd status` prints.
pub fn render(v: &View) -> String {
    let mut out = String::new();
    let snap = &v.snapshot;
    if snap.slots.is_empty() {
        out.push_str("sensor slots: none (no ActiveClient lines, no -a)\n");
    } else {
        let rows: Vec<Vec<String>> = snap
            .slots
            .iter()
            .map(|s| {
                vec![
                    s.sensor.clone(),
                    s.state.to_string(),
                    s.attempts.to_string(),
                    one_line(s.last_error.as_deref().unwrap_or("-")),
                ]
            })
            .collect();
        table(
            &mut out,
            &["SENSOR", "STATE", "ATTEMPTS", "LAST ERROR"],
            &rows,
        );
    }
    out.push('\n');
    if snap.captures.is_empty() {
        out.push_str("captures: none\n");
    } else {
        let rows: Vec<Vec<String>> = snap
            .captures
            .iter()
            .map(|c| {
                let key = (c.sensor.clone(), c.interface.clone());
                let pps = match (c.running, v.pps.get(&key)) {
                    (true, Some(p)) => format!("{}", p.round() as u64),
                    _ => "-".to_string(),
                };
                vec![
                    c.sensor.clone(),
                    c.interface.clone(),
                    if c.running { "running" } else { "ended" }.to_string(),
                    frames_sent(&c.counters).to_string(),
                    (c.counters.kernel_drops + c.counters.send_dropped).to_string(),
                    pps,
                ]
            })
            .collect();
        table(
            &mut out,
            &["OWNER", "INTERFACE", "CAPTURE", "SENT", "DROPS", "PPS"],
            &rows,
        );
    }
    out.push('\n');
    if v.listeners.is_empty() {
        out.push_str("passive listeners: none\n");
    } else {
        let addrs: Vec<String> = v.listeners.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(out, "passive listeners: {}", addrs.join(", "));
    }
    if v.warnings.is_empty() {
        out.push_str("warnings: none\n");
    } else {
        for w in &v.warnings {
            let _ = writeln!(out, "WARNING: {}", one_line(w));
        }
    }
    out
}

/// A text on one line (an error may hold several).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another xrpcapd answers on {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("listening on {0}: {1}")]
    Io(PathBuf, #[source] io::Error),
}

/// A served status socket: the thread stops and the file goes when dropped.
pub struct Server {
    path: PathBuf,
    /// The inode of the socket file we made (another agent's is left alone).
    ino: u64,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listens on `path` (mode 0660; a stale socket file nobody answers on is
/// replaced) and answers every connection with the table of `board`, on
/// its own thread, until the [`Server`] is dropped.
pub fn serve(path: &Path, board: Board) -> Result<Server, ServeError> {
    let io_err = |e| ServeError::Io(path.to_path_buf(), e);
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(ServeError::NotASocket(path.to_path_buf()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    let ino = std::fs::metadata(path).map_err(io_err)?.ino();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let mut conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        log::debug!("status socket: accepting: {e}");
                        // Out of descriptors and the like: do not spin.
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                let text = format!(
                    "xrpcapd {} (pid {})\n\n{}",
                    env!("CARGO_PKG_VERSION"),
                    std::process::id(),
                    render(&board.get())
                );
                let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
                if let Err(e) = conn.write_all(text.as_bytes()) {
                    log::debug!("status socket: answering: {e}");
                }
            }
        })
        .map_err(io_err)?;
    Ok(Server {
        path: path.to_path_buf(),
        ino,
        stop,
        thread: Some(thread),
    })
}

/// The socket `socket` asks for: at the default path only when its
/// directory lets us (a plain run as a user has no /run/xrpcapd: no socket,
/// a debug line); at a path given, or fails.
pub fn open(socket: &StatusSocket, board: &Board) -> Result<Option<Server>, ServeError> {
    match socket {
        StatusSocket::Off => Ok(None),
        StatusSocket::Path(p) => serve(p, board.clone()).map(Some),
        StatusSocket::Default => {
            let path = Path::new(DEFAULT_STATUS_SOCKET);
            match serve(path, board.clone()) {
                Ok(s) => Ok(Some(s)),
                Err(ServeError::Io(_, e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound
                            | io::ErrorKind::PermissionDenied
                            | io::ErrorKind::ReadOnlyFilesystem
                    ) =>
                {
                    log::debug!(
                        "no status socket: {} ({e}; --status-socket PATH sets one)",
                        path.display()
                    );
                    Ok(None)
                }
                Err(e) => {
                    log::warn!("no status socket: {e}");
                    Ok(None)
                }
            }
        }
    }
}

/// `xrpcapd status`: the table the agent at `path` writes.
pub fn query(path: &Path) -> io::Result<String> {
    let mut conn = UnixStream::connect(path)?;
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests;
