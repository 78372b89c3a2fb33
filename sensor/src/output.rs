//! Capture files: pcap or pcapng, one file per agent and interface named
//! from a template, rotated by size and/or age; or one stream (`-w -`, a
//! named pipe, a unix socket's reader or a file) that carries every capture as one pcapng section
//! with an interface per capture. Records are serialized into a buffer that
//! the writer thread writes (see `writer`), so the receive loop never waits
//! for the disk; when no buffer is free, whole records are dropped and
//! counted. Every file is valid at every rotation and at exit: header
//! first, whole blocks only.
//!
//! pcapng carries the capture's identity and accounting (see `pcapng`):
//! the interface is named `AGENT/IFNAME`; the first record after a loss has
//! a comment and a drop count; an interface statistics block at rotation
//! and at close has the agent's last STATS and the sensor's own counts.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use rpcap::msg::Stats;
use rpcap::PktHdr;

use crate::pcapng::{self, IfaceId, IsbCounts, SensorId};
pub use crate::rotation::render;
use crate::rotation::{self, Files};
use crate::writer::{self, Dest, Job, Ledger, Target, Then, BUF_SIZE};

/// Bytes written by one capture between two checks of the disk-space floor.
pub const FLOOR_CHECK_BYTES: u64 = 16 << 20;
/// How often a capture stopped by the floor looks for space again.
pub const FLOOR_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Pcap,
    Pcapng,
}

/// Where `-w` streams every capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamTo {
    /// `-w -`.
    Stdout,
    /// `-w PATH`: a named pipe (opened for writing, which waits for its
    /// reader) or a file (created or truncated).
    Path(PathBuf),
    /// `-w unix:PATH`: a unix stream socket listening at PATH; the stream
    /// goes to the first reader that connects (see [`listen_unix`]).
    Unix(PathBuf),
}

/// Where and how captures are written.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    pub format: Format,
    pub dir: PathBuf,
    /// File name template with `{agent}`, `{iface}`, `{time}`.
    pub template: String,
    pub rotate_bytes: Option<u64>,
    pub rotate_age: Option<Duration>,
    /// One stream for every capture instead of files (`-w`).
    pub stream: Option<StreamTo>,
    /// The ring (`-W`), `-z` and the disk-space floor (files only).
    pub files: Arc<Files>,
}

/// Buffered records reach a `-w` reader within this time.
pub const STDOUT_FLUSH_AGE: Duration = Duration::from_millis(100);
/// Buffered records reach a file within this time.
pub const FILE_FLUSH_AGE: Duration = Duration::from_secs(1);

/// The `-w` stream, shared by every capture: its target, and how many
/// interfaces it has described (the next capture's interface id).
pub struct Stream {
    target: Arc<Target>,
    name: String,
    interfaces: u32,
    /// `-w unix:PATH`: the socket file, removed when the stream ends.
    _socket: Option<SocketFile>,
}

impl Stream {
    /// Opens the stream's destination. A named pipe blocks here until a
    /// reader opens it.
    pub fn open(to: &StreamTo) -> io::Result<Stream> {
        let mut socket = None;
        let (dest, name) = match to {
            StreamTo::Stdout => (Dest::Stdout, "stdout".to_string()),
            StreamTo::Unix(p) => {
                let (file, reader) = listen_unix(p)?;
                socket = Some(file);
                log::info!(
                    "writing every capture to the reader of unix:{}",
                    p.display()
                );
                (Dest::File(reader), format!("unix:{}", p.display()))
            }
            StreamTo::Path(p) => {
                let fifo = std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo());
                if fifo {
                    log::info!("waiting for a reader of the named pipe {}", p.display());
                }
                let f = OpenOptions::new()
                    .write(true)
                    .create(!fifo)
                    .truncate(!fifo)
                    .open(p)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot open {}: {e}", p.display()))
                    })?;
                log::info!("writing every capture to {}", p.display());
                (Dest::File(f), p.display().to_string())
            }
        };
        Ok(Stream {
            target: Target::new(dest),
            name,
            interfaces: 0,
            _socket: socket,
        })
    }

    /// Where the stream goes, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The mode of a `-w unix:PATH` socket: the sensor's user and group may
/// connect (put the reader's user in the sensor's group), nobody else.
pub const UNIX_SOCKET_MODE: u32 = 0o660;

/// The socket file of `-w unix:PATH`, removed when dropped (at exit) if it
/// is still ours (same inode).
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("cannot remove the socket {}: {e}", self.path.display());
            }
        }
    }
}

/// `-w unix:PATH`: creates a listening unix stream socket at `path` (mode
/// [`UNIX_SOCKET_MODE`], set before the socket appears at `path`: it is
/// bound at a temporary name and renamed), waits for one reader and returns
/// the connection, as a named pipe's open waits for its reader. A stale
/// socket at `path` (nobody listening) is replaced; anything else there,
/// or a socket someone listens on, is an error. The listening socket is
/// closed once the reader connected: a second reader is refused (the
/// socket file stays until exit). std's UnixListener, no hand-written
/// socket code.
fn listen_unix(path: &Path) -> io::Result<(SocketFile, std::fs::File)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::net::{UnixListener, UnixStream};
    let err = |what: String, e: io::Error| {
        io::Error::new(e.kind(), format!("-w unix:{}: {what}: {e}", path.display()))
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "-w unix:{}: exists and is not a socket; not replaced",
                    path.display()
                ),
            ));
        }
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("-w unix:{}: another process listens on it", path.display()),
                ));
            }
            log::info!("replacing the stale socket {}", path.display());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("cannot inspect it".into(), e)),
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)
        .map_err(|e| err(format!("cannot listen at {}", tmp.display()), e))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(UNIX_SOCKET_MODE))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("cannot create it".into(), e));
    }
    let m = std::fs::symlink_metadata(path).map_err(|e| err("cannot inspect it".into(), e))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        id: (m.dev(), m.ino()),
    };
    log::info!("waiting for a reader on the unix socket {}", path.display());
    let (reader, _) = listener.accept().map_err(|e| err("accept".into(), e))?;
    drop(listener);
    // The stream only goes out; what a reader might send is not read.
    let _ = reader.shutdown(std::net::Shutdown::Read);
    Ok((
        file,
        std::fs::File::from(std::os::fd::OwnedFd::from(reader)),
    ))
}

fn sensor_id() -> &'static SensorId {
    static ID: OnceLock<SensorId> = OnceLock::new();
    ID.get_or_init(SensorId::local)
}

/// One capture's output.
pub struct Output {
    cfg: OutputConfig,
    agent: String,
    iface: String,
    /// `if_name` (`AGENT/IFNAME`) and `if_description` of the pcapng interface.
    if_name: String,
    if_description: String,
    linktype: i32,
    snaplen: u32,
    writer: writer::Handle,
    target: Arc<Target>,
    /// This output's buffers: done and failed (the target may be shared).
    ledger: Arc<Ledger>,
    /// Writes into the shared `-w` stream: a block is never left half
    /// handed over, as another capture's buffer may follow.
    shared: bool,
    /// The interface id of the records (0 in a file of its own).
    if_id: u32,
    /// Where the records go, for messages.
    dest_name: String,
    /// Buffers sent to the writer for `target`.
    sent: u64,
    /// The buffer being filled (None until a record needs one).
    buf: Option<Vec<u8>>,
    /// Records and packet bytes that end in `buf`.
    buf_records: u64,
    buf_bytes: u64,
    /// When the first record of `buf` was written (for the age flush).
    buf_since: Option<Instant>,
    /// The file being written (`NAME.part`) and its final name.
    path: Option<PathBuf>,
    final_path: Option<PathBuf>,
    /// The base name and suffix of the current file (see `open_file`).
    last_name: Option<(PathBuf, u32)>,
    /// Bytes in the current file.
    size: u64,
    opened: Instant,
    /// Every file written, in order.
    files: Vec<PathBuf>,
    closed: bool,
    /// Records dropped because no buffer was free (the writer is behind).
    pub write_drops: u64,
    /// Records dropped because the disk had less room than `--min-free`.
    pub floor_drops: u64,
    /// Writing stopped by the floor; when it was last checked; bytes
    /// written since.
    floor_stopped: bool,
    floor_checked: Instant,
    since_floor_check: u64,
    /// npkt of the last record written (None: none yet, or the agent
    /// started counting anew).
    last_npkt: Option<u32>,
    /// Write drops since the last record written.
    drops_since: u64,
    /// Records written, and records missing between them by npkt.
    delivered: u64,
    missing: u64,
    /// The agent's last STATS, for the statistics blocks.
    agent_stats: Option<Stats>,
    /// The loss comment, kept to reuse its allocation.
    comment: String,
}

/// Appends to an output's buffers; the caller has reserved room (or forces).
struct Put<'a> {
    out: &'a mut Output,
    force: bool,
}

impl Write for Put<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.out.put(b, self.force);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Output {
    /// Opens the capture's first file and queues its header, or describes
    /// the capture in the `-w` stream (`stream`, needed when
    /// `cfg.stream` is set). `description` goes into pcapng's
    /// `if_description`.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        writer: &writer::Handle,
        cfg: &OutputConfig,
        stream: Option<&mut Stream>,
        agent: &str,
        iface: &str,
        description: &str,
        linktype: i32,
        snaplen: u32,
    ) -> io::Result<Output> {
        let mut last_name = None;
        let (target, path, shared, dest_name) = match (&cfg.stream, &stream) {
            (Some(_), Some(s)) => {
                if cfg.format == Format::Pcap && s.interfaces > 0 {
                    return Err(io::Error::other(format!(
                        "a pcap stream ({}) carries only one capture (one link type per pcap \
                         file); use --format pcapng for several",
                        s.name
                    )));
                }
                (s.target.clone(), None, true, s.name.clone())
            }
            (Some(_), None) => return Err(io::Error::other("the -w stream is not open")),
            (None, _) => {
                let (dest, path) = open_file(cfg, agent, iface, &mut last_name)?;
                let name = path
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string());
                (Target::new(dest), path, false, name)
            }
        };
        let final_path = path.clone();
        let path = path.as_deref().map(rotation::part_path);
        writer.pool.output_opened();
        let mut o = Output {
            cfg: cfg.clone(),
            agent: agent.to_string(),
            iface: iface.to_string(),
            if_name: format!("{agent}/{iface}"),
            if_description: description.to_string(),
            linktype,
            snaplen,
            writer: writer.clone(),
            target,
            ledger: Ledger::new(),
            shared,
            if_id: 0,
            dest_name,
            sent: 0,
            buf: None,
            buf_records: 0,
            buf_since: None,
            buf_bytes: 0,
            path,
            final_path: final_path.clone(),
            last_name,
            size: 0,
            opened: Instant::now(),
            // The final line's `files=`: the -w file or pipe too (stdout: none).
            files: match &cfg.stream {
                Some(StreamTo::Path(p)) => vec![p.clone()],
                _ => final_path.into_iter().collect(),
            },
            closed: false,
            write_drops: 0,
            floor_drops: 0,
            floor_stopped: false,
            floor_checked: Instant::now(),
            since_floor_check: 0,
            last_npkt: None,
            drops_since: 0,
            delivered: 0,
            missing: 0,
            agent_stats: None,
            comment: String::new(),
        };
        match stream {
            Some(s) => {
                // The first capture starts the stream; each one then adds
                // its interface, handed over at once: interface ids are
                // the order of the descriptions in the stream.
                if s.interfaces == 0 {
                    o.write_section_header();
                }
                o.if_id = s.interfaces;
                s.interfaces += 1;
                if cfg.format == Format::Pcapng {
                    o.write_idb();
                }
                o.hand_off();
            }
            None => {
                o.write_section_header();
                if cfg.format == Format::Pcapng {
                    o.write_idb();
                }
                o.check_floor();
            }
        }
        Ok(o)
    }

    /// The file being written, `NAME.part` (None for the `-w` stream).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The file or stream being written, for messages.
    pub fn dest_name(&self) -> &str {
        &self.dest_name
    }

    /// The pcapng interface name, `AGENT/IFNAME`.
    pub fn if_name(&self) -> &str {
        &self.if_name
    }

    /// Every file written so far (final names: `-W` may have deleted some).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The agent's latest STATS, for the next statistics block.
    pub fn set_agent_stats(&mut self, s: Stats) {
        self.agent_stats = Some(s);
    }

    /// The agent starts the capture anew: its npkt counts from 1 again, so
    /// the next record is not a gap.
    pub fn restart_numbering(&mut self) {
        self.last_npkt = None;
    }

    /// Queues one record, rotating first if the file has reached its size.
    /// Ok(false): dropped, no buffer free (counted in `write_drops`). Err: an
    /// earlier write of this capture failed; nothing more is written.
    pub fn write(&mut self, hdr: &PktHdr, data: &[u8]) -> io::Result<bool> {
        if self.target.failed() || self.closed {
            return Err(io::Error::other("the output failed earlier"));
        }
        if self.cfg.rotate_bytes.is_some_and(|max| self.size >= max) {
            self.rotate()?;
        }
        if self.path.is_some() {
            if self.since_floor_check >= FLOOR_CHECK_BYTES {
                self.check_floor();
            }
            if self.floor_stopped {
                self.floor_drops += 1;
                return Ok(false);
            }
        }
        // Records missing before this one, by the agent's packet numbers
        // (a step back or a leap beyond 2^31 is a new baseline, no loss).
        let gap = match self.last_npkt {
            Some(last) => {
                let g = hdr.npkt.wrapping_sub(last.wrapping_add(1));
                if g < 1 << 31 {
                    u64::from(g)
                } else {
                    0
                }
            }
            None => 0,
        };
        let len = match self.cfg.format {
            Format::Pcap => 16 + data.len(),
            Format::Pcapng if gap == 0 => pcapng::epb_len(data.len()),
            Format::Pcapng => {
                self.loss_comment(gap, hdr.npkt);
                let c = (self.comment.as_str(), gap);
                let ts = pcapng::usecs(hdr.ts_sec, hdr.ts_usec);
                pcapng::epb(self.if_id, ts, hdr.len, data, Some(c), &mut io::sink())?
            }
        };
        if !self.reserve(len) {
            self.write_drops += 1;
            self.drops_since += 1;
            return Ok(false);
        }
        let sent = self.sent;
        match self.cfg.format {
            Format::Pcap => {
                let mut h = [0u8; 16];
                let caplen = data.len() as u32;
                put_u32s(&mut h, &[hdr.ts_sec, hdr.ts_usec, caplen, hdr.len]);
                self.put(&h, false);
                self.put(data, false);
            }
            Format::Pcapng => {
                let ts = pcapng::usecs(hdr.ts_sec, hdr.ts_usec);
                let comment = std::mem::take(&mut self.comment);
                let loss = (gap > 0).then_some((comment.as_str(), gap));
                let (if_id, wire_len) = (self.if_id, hdr.len);
                // Writes to our buffers do not fail.
                match self.buf.as_mut() {
                    // The usual case: straight into the buffer being filled
                    // (pcap-file writes a block in ten small pieces).
                    Some(b) if BUF_SIZE - b.len() > len => {
                        let _ = pcapng::epb(if_id, ts, wire_len, data, loss, b);
                    }
                    _ => {
                        let mut w = Put {
                            out: self,
                            force: false,
                        };
                        let _ = pcapng::epb(if_id, ts, wire_len, data, loss, &mut w);
                    }
                }
                self.comment = comment;
            }
        }
        self.end_block(sent);
        self.last_npkt = Some(hdr.npkt);
        self.missing += gap;
        self.drops_since = 0;
        self.delivered += 1;
        self.size += len as u64;
        self.since_floor_check += len as u64;
        if self.buf_records == 0 {
            self.buf_since = Some(Instant::now());
        }
        self.buf_records += 1;
        self.buf_bytes += data.len() as u64;
        Ok(true)
    }

    /// The comment on the first record after `gap` missing ones.
    fn loss_comment(&mut self, gap: u64, npkt: u32) {
        let c = &mut self.comment;
        c.clear();
        let first = npkt.wrapping_sub(gap as u32);
        let _ = write!(
            c,
            "xrpcap-sensor: {gap} records lost before this one (sequence gap: npkt {first} to {})",
            npkt.wrapping_sub(1)
        );
        if self.drops_since > 0 {
            let _ = write!(
                c,
                "; {} of them dropped by the sensor (writer behind)",
                self.drops_since.min(gap)
            );
        }
    }

    /// In the shared stream, a block whose start went to the writer goes
    /// whole: another capture's buffer may be queued next.
    fn end_block(&mut self, sent_before: u64) {
        if self.shared && self.sent != sent_before {
            self.hand_off();
        }
    }

    /// Whether `len` bytes fit in the current buffer plus the free ones.
    /// In the shared stream a block that does not fit starts a new buffer
    /// (the current one is handed over first, once the buffers it needs are
    /// sure to be there): a block cut between buffers would have its tail
    /// handed over alone (see `end_block`), half a buffer for a few bytes.
    fn reserve(&mut self, len: usize) -> bool {
        let room = self.buf.as_ref().map_or(0, |b| BUF_SIZE - b.len());
        if len <= room {
            return true;
        }
        if self.shared {
            if self.writer.pool.available() < len.div_ceil(BUF_SIZE) {
                return false;
            }
            self.hand_off();
            return true;
        }
        let more = (len - room).div_ceil(BUF_SIZE);
        self.writer.pool.available() >= more
    }

    /// Appends bytes, handing full buffers to the writer. Without `force`
    /// the caller has checked with `reserve` that buffers are free.
    fn put(&mut self, mut bytes: &[u8], force: bool) {
        while !bytes.is_empty() {
            let buf = match &mut self.buf {
                Some(b) => b,
                None => match self.writer.pool.take(force) {
                    Some(b) => self.buf.insert(b),
                    None => {
                        // Unreachable after `reserve`; a cut record would
                        // corrupt the file, so refuse loudly instead.
                        debug_assert!(false, "put without reserve");
                        return;
                    }
                },
            };
            let n = bytes.len().min(BUF_SIZE - buf.len());
            buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if buf.len() == BUF_SIZE {
                self.hand_off();
            }
        }
    }

    /// Sends the buffer being filled (if any) to the writer.
    fn hand_off(&mut self) {
        self.buf_since = None;
        let Some(buf) = self.buf.take() else { return };
        if buf.is_empty() {
            self.writer.pool.give(buf);
            return;
        }
        self.writer.send(Job {
            target: self.target.clone(),
            ledger: self.ledger.clone(),
            buf,
            records: std::mem::take(&mut self.buf_records),
            bytes: std::mem::take(&mut self.buf_bytes),
        });
        self.sent += 1;
    }

    /// Rotates when the file is older than the configured age, and hands a
    /// partly filled buffer to the writer once its oldest record is
    /// [`STDOUT_FLUSH_AGE`] (`-w -`, a live Wireshark) or [`FILE_FLUSH_AGE`]
    /// old. Flushing files on every tick cost one small buffer per capture
    /// per tick: with 1000 captures that exhausted the writer's buffers.
    pub fn tick(&mut self, now: Instant) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        if self
            .cfg
            .rotate_age
            .is_some_and(|age| now.duration_since(self.opened) >= age)
        {
            self.rotate()?;
        }
        if self.floor_stopped && now.duration_since(self.floor_checked) >= FLOOR_RECHECK {
            self.check_floor();
        }
        let age = if self.shared {
            STDOUT_FLUSH_AGE
        } else {
            FILE_FLUSH_AGE
        };
        if self.buf_since.is_some_and(|t| now.duration_since(t) >= age) {
            self.flush();
        }
        Ok(())
    }

    /// Hands buffered records to the writer (the file stays valid and open).
    pub fn flush(&mut self) {
        self.hand_off();
    }

    /// Hands the last records to the writer; the file is closed once the
    /// writer has written them and the output is dropped.
    pub fn close(&mut self) {
        if !self.closed {
            self.write_isb();
            self.hand_off();
            self.finish_file();
            self.closed = true;
            self.writer.pool.output_closed();
        }
    }

    /// Whether the writer has written (or failed) everything handed to it.
    pub fn is_written(&self) -> bool {
        self.buf.as_ref().is_none_or(Vec::is_empty) && self.ledger.done() >= self.sent
    }

    /// Flushes and waits (bounded) until the writer has written everything.
    #[cfg(test)]
    pub fn sync(&mut self, limit: Duration) -> bool {
        self.flush();
        let deadline = Instant::now() + limit;
        while !self.is_written() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Records and packet bytes that the writer failed to write.
    pub fn errors(&self) -> (u64, u64) {
        self.ledger.errors()
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.shared {
            return Ok(());
        }
        self.write_isb();
        self.hand_off();
        self.finish_file();
        let (dest, path) = open_file(&self.cfg, &self.agent, &self.iface, &mut self.last_name)?;
        self.target = Target::new(dest);
        self.ledger = Ledger::new();
        self.sent = 0;
        if let Some(p) = &path {
            log::info!("rotated to {}", p.display());
            self.files.push(p.clone());
            self.dest_name = p.display().to_string();
        }
        self.path = path.as_deref().map(rotation::part_path);
        self.final_path = path;
        self.size = 0;
        self.check_floor();
        self.opened = Instant::now();
        self.write_section_header();
        if self.cfg.format == Format::Pcapng {
            self.write_idb();
        }
        Ok(())
    }

    /// Once the writer has written what is queued for the current file,
    /// renames `NAME.part` to `NAME` (then the ring and `-z`).
    fn finish_file(&mut self) {
        let (Some(part), Some(name)) = (self.path.clone(), self.final_path.clone()) else {
            return;
        };
        let (files, target) = (self.cfg.files.clone(), self.target.clone());
        let key = self.if_name.clone();
        self.writer.then(Then {
            ledger: self.ledger.clone(),
            run: Box::new(move || files.finished(&key, &part, &name, !target.failed())),
        });
        self.sent += 1;
    }

    /// Stops (or resumes) writing when the output directory's file system
    /// has less (more) room than `--min-free`.
    fn check_floor(&mut self) {
        self.since_floor_check = 0;
        self.floor_checked = Instant::now();
        let below = match self.cfg.files.min_free.below(&self.cfg.dir) {
            Ok(b) => b,
            Err(e) => {
                log::debug!("statvfs {}: {e}", self.cfg.dir.display());
                false
            }
        };
        if below != self.floor_stopped {
            if below {
                log::warn!(
                    "{}: less free space than --min-free ({:?}); records of {} are dropped \
                     (counted as disk_floor_drops) until there is room again",
                    self.cfg.dir.display(),
                    self.cfg.files.min_free,
                    self.if_name
                );
            } else {
                log::warn!(
                    "{}: room again above --min-free; {} writes again ({} records dropped)",
                    self.cfg.dir.display(),
                    self.if_name,
                    self.floor_drops
                );
            }
            self.floor_stopped = below;
        }
    }

    /// Queues the file (or stream) header: pcap's, or pcapng's section
    /// header block. Headers may take a buffer beyond the bound, as a file
    /// without them would be unreadable.
    fn write_section_header(&mut self) {
        let (linktype, snaplen) = (self.linktype as u32, self.snaplen);
        let sent = self.sent;
        match self.cfg.format {
            Format::Pcap => {
                let mut h = [0u8; 24];
                h[0..4].copy_from_slice(&0xA1B2_C3D4u32.to_ne_bytes());
                h[4..6].copy_from_slice(&2u16.to_ne_bytes());
                h[6..8].copy_from_slice(&4u16.to_ne_bytes());
                // thiszone and sigfigs stay 0.
                h[16..20].copy_from_slice(&snaplen.to_ne_bytes());
                h[20..24].copy_from_slice(&linktype.to_ne_bytes());
                self.put(&h, true);
                self.size += 24;
            }
            Format::Pcapng => {
                let mut w = Put {
                    out: self,
                    force: true,
                };
                let n = pcapng::shb(sensor_id(), &mut w).unwrap_or(0);
                self.size += n as u64;
            }
        }
        self.end_block(sent);
    }

    /// Queues the capture's interface description block.
    fn write_idb(&mut self) {
        let (name, description) = (
            std::mem::take(&mut self.if_name),
            std::mem::take(&mut self.if_description),
        );
        let i = IfaceId {
            name: &name,
            description: &description,
            linktype: self.linktype,
            snaplen: self.snaplen,
        };
        let sent = self.sent;
        let mut w = Put {
            out: self,
            force: true,
        };
        let n = pcapng::idb(&i, &mut w).unwrap_or(0);
        self.size += n as u64;
        self.end_block(sent);
        (self.if_name, self.if_description) = (name, description);
    }

    /// The counters of the next statistics block.
    pub fn isb_counts(&self) -> IsbCounts {
        IsbCounts {
            agent: self.agent_stats,
            delivered: self.delivered,
            missing: self.missing,
            dropped: self.write_drops,
        }
    }

    /// Queues an interface statistics block (pcapng), at rotation and close.
    fn write_isb(&mut self) {
        if self.cfg.format != Format::Pcapng || self.target.failed() {
            return;
        }
        let (c, if_id, sent) = (self.isb_counts(), self.if_id, self.sent);
        let mut w = Put {
            out: self,
            force: true,
        };
        let n = pcapng::isb(if_id, SystemTime::now(), &c, &mut w).unwrap_or(0);
        self.size += n as u64;
        self.end_block(sent);
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.close();
    }
}

fn put_u32s(buf: &mut [u8], vals: &[u32]) {
    for (i, v) in vals.iter().enumerate() {
        buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
}

/// Creates the capture's next file as `NAME.part`. `last` is the base name
/// and suffix of the capture's previous file: a name is never used twice by
/// a capture, even after -W deleted the first file of that name (a watcher
/// that already read `NAME` would skip a second one).
fn open_file(
    cfg: &OutputConfig,
    agent: &str,
    iface: &str,
    last: &mut Option<(PathBuf, u32)>,
) -> io::Result<(Dest, Option<PathBuf>)> {
    let name = render(&cfg.template, agent, iface, SystemTime::now());
    let base = cfg.dir.join(&name);
    // A template with directories (`%Y-%m-%d/{agent}.pcap`): create them.
    if name.contains('/') {
        if let Some(parent) = base.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", parent.display()))
            })?;
        }
    }
    let first = match last {
        Some((b, n)) if *b == base => *n + 1,
        _ => 0,
    };
    // A name already taken (same second, same agent) gets a numeric suffix.
    for n in first..10_000u32 {
        let path = if n == 0 {
            base.clone()
        } else {
            with_suffix(&base, n)
        };
        if path.exists() {
            continue;
        }
        let part = rotation::part_path(&path);
        match OpenOptions::new().write(true).create_new(true).open(&part) {
            Ok(f) => {
                log::info!("writing {}", part.display());
                *last = Some((base, n));
                return Ok((Dest::File(f), Some(path)));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", path.display()),
                ))
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("every variant of {} exists", base.display()),
    ))
}

/// `dir/a.pcap` → `dir/a-N.pcap`.
fn with_suffix(p: &Path, n: u32) -> PathBuf {
    let stem = p.file_stem().unwrap_or_default().to_string_lossy();
    let name = match p.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    p.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::Writer;

    fn cfg(dir: &Path, format: Format) -> OutputConfig {
        OutputConfig {
            format,
            dir: dir.to_path_buf(),
            template: "{agent}-{iface}-{time}.cap".into(),
            rotate_bytes: None,
            rotate_age: None,
            files: Default::default(),
            stream: None,
        }
    }

    fn create(
        w: &Writer,
        c: &OutputConfig,
        agent: &str,
        iface: &str,
        linktype: i32,
        snaplen: u32,
    ) -> io::Result<Output> {
        Output::create(
            &w.handle(),
            c,
            None,
            agent,
            iface,
            "test",
            linktype,
            snaplen,
        )
    }

    fn hdr(n: u32, caplen: u32) -> PktHdr {
        PktHdr {
            ts_sec: 1_700_000_000 + n,
            ts_usec: n * 10,
            caplen,
            len: caplen + 4,
            npkt: n,
        }
    }

    #[test]
    fn pcap_bytes_exact() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut o = create(&w, &cfg(dir.path(), Format::Pcap), "a", "eth0", 1, 1500).unwrap();
        o.write(&hdr(1, 3), &[1, 2, 3]).unwrap();
        assert!(o.sync(Duration::from_secs(5)));
        let bytes = std::fs::read(o.path().unwrap()).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&0xA1B2_C3D4u32.to_ne_bytes());
        want.extend_from_slice(&2u16.to_ne_bytes());
        want.extend_from_slice(&4u16.to_ne_bytes());
        for v in [0u32, 0, 1500, 1, 1_700_000_001, 10, 3, 7] {
            want.extend_from_slice(&v.to_ne_bytes());
        }
        want.extend_from_slice(&[1, 2, 3]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn rotation_by_size_keeps_every_file_readable() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::Pcap, Format::Pcapng] {
            let mut c = cfg(dir.path(), format);
            c.rotate_bytes = Some(200);
            let mut o = create(&w, &c, "r", &format!("{format:?}"), 1, 1500).unwrap();
            for n in 1..=10 {
                o.write(&hdr(n, 61), &[n as u8; 61]).unwrap();
            }
            o.close();
            assert!(o.sync(Duration::from_secs(5)));
            assert!(o.files().len() >= 3, "{:?}", o.files());
            let mut total = 0;
            for f in o.files() {
                total += count_with_tcpdump(f);
            }
            assert_eq!(total, 10);
        }
    }

    #[test]
    fn rotation_by_age_on_tick() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), Format::Pcap);
        c.rotate_age = Some(Duration::from_secs(60));
        let mut o = create(&w, &c, "t", "e", 1, 1500).unwrap();
        o.write(&hdr(1, 10), &[1; 10]).unwrap();
        o.tick(Instant::now()).unwrap();
        assert_eq!(o.files().len(), 1, "not old enough yet");
        o.tick(Instant::now() + Duration::from_secs(61)).unwrap();
        o.write(&hdr(2, 10), &[2; 10]).unwrap();
        o.close();
        assert!(o.sync(Duration::from_secs(5)));
        assert_eq!(o.files().len(), 2);
        for f in o.files() {
            assert_eq!(count_with_tcpdump(f), 1);
        }
    }

    #[test]
    fn tick_flushes_buffered_records() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut o = create(&w, &cfg(dir.path(), Format::Pcap), "f", "e", 1, 1500).unwrap();
        o.write(&hdr(1, 10), &[1; 10]).unwrap();
        let path = o.path().unwrap().to_path_buf();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "still buffered");
        o.tick(Instant::now()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "a young partial buffer stays"
        );
        o.tick(Instant::now() + FILE_FLUSH_AGE).unwrap();
        // The tick handed the buffer over; the writer writes it soon after.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(&path).unwrap().len() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24 + 16 + 10);
        assert_eq!(count_with_tcpdump(&path), 1);
    }

    /// Below the disk floor nothing is written but headers; every record
    /// is counted as a floor drop, and the file is still complete.
    #[test]
    fn below_the_disk_floor_records_are_dropped_and_counted() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), Format::Pcap);
        c.files = Arc::new(Files::new(None, None, rotation::MinFree::Bytes(u64::MAX)));
        let mut o = create(&w, &c, "a", "e", 1, 1500).unwrap();
        for n in 1..=5 {
            assert!(!o.write(&hdr(n, 10), &[1; 10]).unwrap());
        }
        assert_eq!((o.floor_drops, o.write_drops), (5, 0));
        o.close();
        assert!(o.sync(Duration::from_secs(5)));
        assert_eq!(count_with_tcpdump(&o.files()[0]), 0);
        assert!(!o.path().unwrap().exists(), "renamed");
    }

    #[test]
    fn pcapng_readable_by_tcpdump() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut o = create(&w, &cfg(dir.path(), Format::Pcapng), "a", "e", 1, 9000).unwrap();
        for n in 1..=4 {
            o.write(&hdr(n, 60 + n), &vec![0xAB; 60 + n as usize])
                .unwrap();
        }
        assert!(o.sync(Duration::from_secs(5)));
        assert_eq!(count_with_tcpdump(o.path().unwrap()), 4);
    }

    #[test]
    fn strftime_directories_are_created() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), Format::Pcap);
        c.template = "%Y/{iface}-%H.pcap".into();
        let mut o = create(&w, &c, "a", "e", 1, 100).unwrap();
        o.close();
        assert!(o.sync(Duration::from_secs(5)));
        let f = &o.files()[0];
        assert!(f.exists(), "{f:?}");
        let rel = f
            .strip_prefix(dir.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            rel.len() == "2026/e-00.pcap".len() && rel.contains("/e-"),
            "{rel}"
        );
    }

    #[test]
    fn same_name_gets_suffix() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), Format::Pcap);
        c.template = "fixed.pcap".into();
        let a = create(&w, &c, "a", "e", 1, 100).unwrap();
        let b = create(&w, &c, "a", "e", 1, 100).unwrap();
        assert_eq!(a.path().unwrap().file_name().unwrap(), "fixed.pcap.part");
        assert_eq!(b.path().unwrap().file_name().unwrap(), "fixed-1.pcap.part");
        assert_eq!(b.files()[0].file_name().unwrap(), "fixed-1.pcap");
        // A finished file's name is taken too.
        drop((a, b));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dir.path().join("fixed-1.pcap").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let c = create(&w, &c, "a", "e", 1, 100).unwrap();
        assert_eq!(c.path().unwrap().file_name().unwrap(), "fixed-2.pcap.part");
    }

    #[test]
    fn no_free_buffer_drops_whole_records_and_counts_them() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut o = create(&w, &cfg(dir.path(), Format::Pcap), "d", "e", 1, 70_000).unwrap();
        assert!(o.write(&hdr(1, 100), &[1; 100]).unwrap());
        // Exhaust the pool as a stalled disk would: every buffer in flight.
        let mut held = Vec::new();
        while let Some(b) = w.handle().pool.take(false) {
            held.push(b);
        }
        // Fits in the current buffer: still written.
        assert!(o.write(&hdr(2, 100), &[2; 100]).unwrap());
        // Larger than what is left of the buffer (spans several): dropped whole.
        assert!(!o.write(&hdr(3, 65_000), &[3; 65_000]).unwrap());
        assert_eq!(o.write_drops, 1);
        for b in held {
            w.handle().pool.give(b);
        }
        // A record spanning three buffers once buffers are free again.
        assert!(o.write(&hdr(4, 65_000), &[4; 65_000]).unwrap());
        assert!(o.write(&hdr(5, 10), &[5; 10]).unwrap());
        assert!(o.sync(Duration::from_secs(5)));
        assert_eq!(o.errors(), (0, 0));
        let bytes = std::fs::read(o.path().unwrap()).unwrap();
        assert_eq!(bytes.len(), 24 + 4 * 16 + 100 + 100 + 65_000 + 10);
        assert_eq!(count_with_tcpdump(o.path().unwrap()), 4);
    }

    fn count_with_tcpdump(f: &Path) -> usize {
        let out = std::process::Command::new("tcpdump")
            .args(["-ttnr"])
            .arg(f)
            .output()
            .expect("tcpdump runs");
        assert!(
            out.status.success(),
            "tcpdump failed on {}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // One line per packet starts with its epoch timestamp (continuation lines do not).
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("17000000"))
            .count()
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use crate::writer::Writer;

    fn hdr(npkt: u32, caplen: u32) -> PktHdr {
        PktHdr {
            ts_sec: 1_700_000_000 + npkt,
            ts_usec: npkt,
            caplen,
            len: caplen,
            npkt,
        }
    }

    fn tshark(args: &[&str], f: &Path) -> String {
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(f)
            .args(args)
            .output()
            .expect("tshark runs (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "tshark: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Two captures in one stream, interleaved, one with a sequence gap and
    /// agent STATS: tshark sees two named interfaces, each frame on its
    /// own, the comment on the record after the gap.
    #[test]
    fn one_stream_two_interfaces_identity_and_accounting() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.pcapng");
        let cfg = OutputConfig {
            format: Format::Pcapng,
            dir: dir.path().to_path_buf(),
            template: String::new(),
            rotate_bytes: None,
            rotate_age: None,
            files: Default::default(),
            stream: Some(StreamTo::Path(path.clone())),
        };
        let mut s = Stream::open(cfg.stream.as_ref().unwrap()).unwrap();
        let mk = |s: &mut Stream, agent: &str, iface: &str| {
            Output::create(&w.handle(), &cfg, Some(s), agent, iface, "d", 1, 65_535).unwrap()
        };
        let mut a = mk(&mut s, "10.0.0.1", "eth0");
        let mut b = mk(&mut s, "10.0.0.2", "eth1");
        for n in 1..=3 {
            a.write(&hdr(n, 60), &[0xA0 + n as u8; 60]).unwrap();
            b.write(&hdr(n, 70), &[0xB0 + n as u8; 70]).unwrap();
            a.flush();
        }
        // Records 4..=40 of b are lost on the way.
        b.write(&hdr(41, 70), &[0xBF; 70]).unwrap();
        b.set_agent_stats(Stats {
            ifrecv: 1000,
            ifdrop: 7,
            krnldrop: 11,
            svrcapt: 41,
        });
        // A record that spans buffers goes whole: a's buffer, handed over
        // meanwhile, must not land inside it.
        let mut n = 42;
        while b.buf.as_ref().is_some_and(|x| BUF_SIZE - x.len() > 1000) {
            b.write(&hdr(n, 1400), &[0xCC; 1400]).unwrap();
            n += 1;
        }
        // Larger than a buffer: it spans several, and its tail goes at once.
        b.write(&hdr(n, 40_000), &[0xDD; 40_000]).unwrap();
        a.write(&hdr(4, 60), &[0xA4; 60]).unwrap();
        a.flush();
        // Records that do not fit start a new buffer rather than leave a
        // tail alone in one: 100 records of 1432 bytes fill 5 buffers.
        let sent = b.sent;
        for k in 1..=100 {
            b.write(&hdr(n + k, 1400), &[0xEE; 1400]).unwrap();
        }
        b.flush();
        assert!(b.sent - sent <= 6, "{} buffers", b.sent - sent);
        a.close();
        b.close();
        assert!(a.sync(Duration::from_secs(5)));
        assert!(b.sync(Duration::from_secs(5)));
        let nb = b.delivered as usize;
        drop((a, b, s));
        let lines = tshark(
            &[
                "-T",
                "fields",
                "-e",
                "frame.interface_name",
                "-e",
                "frame.len",
                "-e",
                "frame.comment",
            ],
            &path,
        );
        let rows: Vec<_> = lines.lines().collect();
        let count = |prefix: &str| rows.iter().filter(|r| r.starts_with(prefix)).count();
        assert_eq!(rows.len(), 4 + nb, "{lines}");
        assert_eq!(count("10.0.0.1/eth0\t60\t"), 4, "{lines}");
        assert_eq!(count("10.0.0.2/eth1\t"), nb, "{lines}");
        assert_eq!(count("10.0.0.2/eth1\t40000\t"), 1, "{lines}");
        let gap = rows.iter().find(|r| r.contains("lost")).expect(&lines);
        assert!(
            gap.contains("37 records lost before this one (sequence gap: npkt 4 to 40)"),
            "{gap}"
        );
        assert_eq!(
            rows.iter().filter(|r| r.contains("lost")).count(),
            1,
            "{lines}"
        );
    }
}

#[cfg(test)]
mod pcapng_file_tests {
    use super::*;
    use crate::writer::Writer;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption;
    use pcap_file::pcapng::{Block, PcapNgReader};

    /// A pcapng output that streams to `to` (no files of its own).
    fn stream_cfg(dir: &Path, to: StreamTo) -> OutputConfig {
        OutputConfig {
            format: Format::Pcapng,
            dir: dir.to_path_buf(),
            template: String::new(),
            rotate_bytes: None,
            rotate_age: None,
            files: Default::default(),
            stream: Some(to),
        }
    }

    /// One 4-byte record (1, 2, 3, 4) through an output on stream `s`,
    /// closed and synced.
    fn one_record_through(w: &Writer, cfg: &OutputConfig, s: &mut Stream) -> Output {
        let mut o = Output::create(&w.handle(), cfg, Some(s), "a", "e", "x", 1, 1500).unwrap();
        let h = PktHdr {
            ts_sec: 1,
            ts_usec: 2,
            caplen: 4,
            len: 4,
            npkt: 1,
        };
        o.write(&h, &[1, 2, 3, 4]).unwrap();
        o.close();
        assert!(o.sync(Duration::from_secs(5)));
        o
    }

    /// The packet bytes of every EPB in a pcapng byte stream.
    fn packets_of(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut r = PcapNgReader::new(bytes).unwrap();
        let mut out = Vec::new();
        while let Some(b) = r.next_block() {
            if let Block::EnhancedPacket(p) = b.unwrap() {
                out.push(p.data.to_vec());
            }
        }
        out
    }

    fn blocks(f: &Path) -> Vec<Block<'static>> {
        let bytes = std::fs::read(f).unwrap();
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let mut v = Vec::new();
        while let Some(b) = r.next_block() {
            v.push(b.unwrap().into_owned());
        }
        v
    }

    /// Every rotated file is a section of its own: its IDB, its records,
    /// and an ISB with the counters so far (the agent's and the sensor's).
    #[test]
    fn rotated_pcapng_files_each_end_with_statistics() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = OutputConfig {
            format: Format::Pcapng,
            dir: dir.path().to_path_buf(),
            template: "{agent}-{iface}-{time}.pcapng".into(),
            rotate_bytes: Some(600),
            rotate_age: None,
            files: Default::default(),
            stream: None,
        };
        let mut o =
            Output::create(&w.handle(), &cfg, None, "10.1.1.1", "eth2", "x", 1, 1500).unwrap();
        o.set_agent_stats(Stats {
            ifrecv: 50,
            ifdrop: 1,
            krnldrop: 2,
            svrcapt: 20,
        });
        for n in 1..=20u32 {
            let h = PktHdr {
                ts_sec: 1_700_000_000,
                ts_usec: n,
                caplen: 100,
                len: 100,
                npkt: n,
            };
            o.write(&h, &[n as u8; 100]).unwrap();
        }
        o.close();
        assert!(o.sync(Duration::from_secs(5)));
        let files = o.files().to_vec();
        assert!(files.len() >= 3, "{files:?}");
        let mut delivered = Vec::new();
        for f in &files {
            let b = blocks(f);
            let Block::InterfaceDescription(idb) = &b[0] else {
                panic!("{f:?}: {:?}", b[0])
            };
            assert!(idb
                .options
                .contains(&InterfaceDescriptionOption::IfName("10.1.1.1/eth2".into())));
            let Some(Block::InterfaceStatistics(isb)) = b.last() else {
                panic!("{f:?} does not end with an ISB: {:?}", b.last())
            };
            assert!(isb
                .options
                .contains(&InterfaceStatisticsOption::IsbOsDrop(2)));
            delivered.extend(isb.options.iter().filter_map(|o| match o {
                InterfaceStatisticsOption::IsbUsrDeliv(n) => Some(*n),
                _ => None,
            }));
        }
        // Cumulative since the capture started; the last one counts all.
        assert_eq!(delivered.len(), files.len());
        assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{delivered:?}");
        assert_eq!(delivered.last(), Some(&20));
    }

    /// `-w unix:PATH`: the socket (mode 0660) waits for its reader, which
    /// gets the pcapng section; a non-socket file is not replaced, a stale
    /// socket is; the socket file goes with the stream.
    #[test]
    fn stream_to_a_unix_socket_reader() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        // A regular file there: refused, left alone.
        std::fs::write(&path, b"keep").unwrap();
        let e = Stream::open(&StreamTo::Unix(path.clone())).err().unwrap();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        // A stale socket there (nobody listens): replaced.
        std::fs::remove_file(&path).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let p = path.clone();
        let reader = std::thread::spawn(move || {
            let mut waited = 0;
            let mut s = loop {
                let ok =
                    std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o660);
                if ok {
                    if let Ok(s) = std::os::unix::net::UnixStream::connect(&p) {
                        break s;
                    }
                }
                waited += 1;
                assert!(waited < 5000, "no listening socket");
                std::thread::sleep(Duration::from_millis(1));
            };
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut s, &mut bytes).unwrap();
            bytes
        });
        let cfg = stream_cfg(dir.path(), StreamTo::Unix(path.clone()));
        let w = Writer::start().unwrap();
        let mut s = Stream::open(cfg.stream.as_ref().unwrap()).unwrap();
        assert_eq!(s.name(), format!("unix:{}", path.display()));
        // A second reader is refused: one stream, one reader.
        assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
        let o = one_record_through(&w, &cfg, &mut s);
        assert!(o.files().is_empty(), "a socket is no file");
        drop((o, s));
        assert!(!path.exists(), "the socket file is removed with the stream");
        assert_eq!(packets_of(&reader.join().unwrap()), [[1, 2, 3, 4]]);
    }

    /// `-w FIFO`: the stream opens once a reader has the pipe, and the
    /// reader gets a pcapng section.
    #[test]
    fn stream_to_a_named_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        let f = fifo.clone();
        let reader = std::thread::spawn(move || std::fs::read(f).unwrap());
        let w = Writer::start().unwrap();
        let cfg = stream_cfg(dir.path(), StreamTo::Path(fifo.clone()));
        let mut s = Stream::open(cfg.stream.as_ref().unwrap()).unwrap();
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        let o = one_record_through(&w, &cfg, &mut s);
        assert_eq!(o.files(), std::slice::from_ref(&fifo));
        drop((o, s));
        assert_eq!(packets_of(&reader.join().unwrap()), [[1, 2, 3, 4]]);
    }
}
