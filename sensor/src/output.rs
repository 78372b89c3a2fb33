//! Capture files: pcap or pcapng, one file per agent and interface named
//! from a template, rotated by size and/or age; or one stream to stdout.
//! Records are serialized into a buffer that the writer thread writes
//! (see `writer`), so the receive loop never waits for the disk; when no
//! buffer is free, whole records are dropped and counted. Every file is valid
//! at every rotation and at exit: header first, whole records only.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rpcap::PktHdr;

use crate::writer::{self, Dest, Job, Target, BUF_SIZE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Pcap,
    Pcapng,
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
    /// Stream to stdout instead of files (`-w -`).
    pub stdout: bool,
}

/// Buffered records reach a `-w -` reader within this time.
pub const STDOUT_FLUSH_AGE: Duration = Duration::from_millis(100);
/// Buffered records reach a file within this time.
pub const FILE_FLUSH_AGE: Duration = Duration::from_secs(1);

/// One capture's output.
pub struct Output {
    cfg: OutputConfig,
    agent: String,
    iface: String,
    linktype: i32,
    snaplen: u32,
    writer: writer::Handle,
    target: Arc<Target>,
    /// Buffers sent to the writer for `target`.
    sent: u64,
    /// The buffer being filled (None until a record needs one).
    buf: Option<Vec<u8>>,
    /// Records and packet bytes that end in `buf`.
    buf_records: u64,
    buf_bytes: u64,
    /// When the first record of `buf` was written (for the age flush).
    buf_since: Option<Instant>,
    path: Option<PathBuf>,
    /// Bytes in the current file.
    size: u64,
    opened: Instant,
    /// Every file written, in order.
    files: Vec<PathBuf>,
    closed: bool,
    /// Records dropped because no buffer was free (the writer is behind).
    pub write_drops: u64,
}

impl Output {
    /// Opens the first file (or stdout) and queues its header.
    pub fn create(
        writer: &writer::Handle,
        cfg: &OutputConfig,
        agent: &str,
        iface: &str,
        linktype: i32,
        snaplen: u32,
    ) -> io::Result<Output> {
        let (dest, path) = open_dest(cfg, agent, iface)?;
        writer.pool.output_opened();
        let mut o = Output {
            cfg: cfg.clone(),
            agent: agent.to_string(),
            iface: iface.to_string(),
            linktype,
            snaplen,
            writer: writer.clone(),
            target: Target::new(dest),
            sent: 0,
            buf: None,
            buf_records: 0,
            buf_since: None,
            buf_bytes: 0,
            path: path.clone(),
            size: 0,
            opened: Instant::now(),
            files: path.into_iter().collect(),
            closed: false,
            write_drops: 0,
        };
        o.write_header();
        Ok(o)
    }

    /// The file being written (None for stdout).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Every file written so far.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
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
        let caplen = data.len() as u32;
        let pad = (4 - data.len() % 4) % 4;
        let len = match self.cfg.format {
            Format::Pcap => 16 + data.len(),
            Format::Pcapng => 32 + data.len() + pad,
        };
        if !self.reserve(len) {
            self.write_drops += 1;
            return Ok(false);
        }
        match self.cfg.format {
            Format::Pcap => {
                let mut h = [0u8; 16];
                put_u32s(&mut h, &[hdr.ts_sec, hdr.ts_usec, caplen, hdr.len]);
                self.put(&h, false);
                self.put(data, false);
            }
            Format::Pcapng => {
                let total = len as u32;
                let ts = u64::from(hdr.ts_sec) * 1_000_000 + u64::from(hdr.ts_usec);
                let mut h = [0u8; 28];
                put_u32s(
                    &mut h,
                    &[6, total, 0, (ts >> 32) as u32, ts as u32, caplen, hdr.len],
                );
                self.put(&h, false);
                self.put(data, false);
                self.put(&[0u8; 3][..pad], false);
                self.put(&total.to_ne_bytes(), false);
            }
        }
        self.size += len as u64;
        if self.buf_records == 0 {
            self.buf_since = Some(Instant::now());
        }
        self.buf_records += 1;
        self.buf_bytes += data.len() as u64;
        Ok(true)
    }

    /// Whether `len` bytes fit in the current buffer plus the free ones.
    fn reserve(&self, len: usize) -> bool {
        let room = self.buf.as_ref().map_or(0, |b| BUF_SIZE - b.len());
        if len <= room {
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
        let age = if self.cfg.stdout {
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
            self.hand_off();
            self.closed = true;
            self.writer.pool.output_closed();
        }
    }

    /// Whether the writer has written (or failed) everything handed to it.
    pub fn is_written(&self) -> bool {
        self.buf.as_ref().is_none_or(Vec::is_empty) && self.target.done() >= self.sent
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
        self.target.errors()
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.cfg.stdout {
            return Ok(());
        }
        self.hand_off();
        let (dest, path) = open_dest(&self.cfg, &self.agent, &self.iface)?;
        self.target = Target::new(dest);
        self.sent = 0;
        if let Some(p) = &path {
            log::info!("rotated to {}", p.display());
            self.files.push(p.clone());
        }
        self.path = path;
        self.size = 0;
        self.opened = Instant::now();
        self.write_header();
        Ok(())
    }

    /// Queues the file header; it may take a buffer beyond the bound, as a
    /// file without its header would be unreadable.
    fn write_header(&mut self) {
        let (linktype, snaplen) = (self.linktype as u32, self.snaplen);
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
                // Section header block: BOM, version 1.0, section length unknown (-1).
                let mut shb = [0u8; 28];
                put_u32s(&mut shb, &[0x0A0D_0D0A, 28, 0x1A2B_3C4D]);
                shb[12..14].copy_from_slice(&1u16.to_ne_bytes());
                shb[16..24].copy_from_slice(&(-1i64).to_ne_bytes());
                shb[24..28].copy_from_slice(&28u32.to_ne_bytes());
                // Interface description block, no options: microsecond timestamps.
                let mut idb = [0u8; 20];
                put_u32s(&mut idb, &[1, 20]);
                idb[8..10].copy_from_slice(&(linktype as u16).to_ne_bytes());
                idb[12..16].copy_from_slice(&snaplen.to_ne_bytes());
                idb[16..20].copy_from_slice(&20u32.to_ne_bytes());
                self.put(&shb, true);
                self.put(&idb, true);
                self.size += 48;
            }
        }
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

fn open_dest(cfg: &OutputConfig, agent: &str, iface: &str) -> io::Result<(Dest, Option<PathBuf>)> {
    if cfg.stdout {
        return Ok((Dest::Stdout, None));
    }
    let name = render(&cfg.template, agent, iface, SystemTime::now());
    let base = cfg.dir.join(name);
    // A name already taken (same second, same agent) gets a numeric suffix.
    for n in 0..10_000u32 {
        let path = if n == 0 {
            base.clone()
        } else {
            with_suffix(&base, n)
        };
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => {
                log::info!("writing {}", path.display());
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

/// The file name for a template. Values are made safe for a file name.
pub fn render(template: &str, agent: &str, iface: &str, t: SystemTime) -> String {
    let safe = |s: &str| {
        s.chars()
            .map(|c| {
                if c == '/' || c == '\0' || c.is_whitespace() {
                    '_'
                } else {
                    c
                }
            })
            .collect::<String>()
    };
    template
        .replace("{agent}", &safe(agent))
        .replace("{iface}", &safe(iface))
        .replace("{time}", &utc_stamp(t))
}

/// UTC `yyyymmddThhmmss`.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's civil_from_days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
            stdout: false,
        }
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
    fn time_stamp_and_template() {
        let t = UNIX_EPOCH + Duration::from_secs(1_709_164_800 + 3661); // 2024-02-29 01:01:01
        assert_eq!(utc_stamp(t), "20240229T010101");
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000");
        assert_eq!(
            render("{agent}-{iface}-{time}.pcap", "10.0.0.1_99", "eth 0/1", t),
            "10.0.0.1_99-eth_0_1-20240229T010101.pcap"
        );
    }

    #[test]
    fn pcap_bytes_exact() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut o = Output::create(
            &w.handle(),
            &cfg(dir.path(), Format::Pcap),
            "a",
            "eth0",
            1,
            1500,
        )
        .unwrap();
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
            let mut o =
                Output::create(&w.handle(), &c, "r", &format!("{format:?}"), 1, 1500).unwrap();
            for n in 1..=10 {
                o.write(&hdr(n, 61), &[n as u8; 61]).unwrap();
            }
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
        let mut o = Output::create(&w.handle(), &c, "t", "e", 1, 1500).unwrap();
        o.write(&hdr(1, 10), &[1; 10]).unwrap();
        o.tick(Instant::now()).unwrap();
        assert_eq!(o.files().len(), 1, "not old enough yet");
        o.tick(Instant::now() + Duration::from_secs(61)).unwrap();
        o.write(&hdr(2, 10), &[2; 10]).unwrap();
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
        let mut o = Output::create(
            &w.handle(),
            &cfg(dir.path(), Format::Pcap),
            "f",
            "e",
            1,
            1500,
        )
        .unwrap();
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

    #[test]
    fn pcapng_readable_by_tcpdump() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut o = Output::create(
            &w.handle(),
            &cfg(dir.path(), Format::Pcapng),
            "a",
            "e",
            1,
            9000,
        )
        .unwrap();
        for n in 1..=4 {
            o.write(&hdr(n, 60 + n), &vec![0xAB; 60 + n as usize])
                .unwrap();
        }
        assert!(o.sync(Duration::from_secs(5)));
        assert_eq!(count_with_tcpdump(o.path().unwrap()), 4);
    }

    #[test]
    fn same_name_gets_suffix() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), Format::Pcap);
        c.template = "fixed.pcap".into();
        let a = Output::create(&w.handle(), &c, "a", "e", 1, 100).unwrap();
        let b = Output::create(&w.handle(), &c, "a", "e", 1, 100).unwrap();
        assert_eq!(a.path().unwrap().file_name().unwrap(), "fixed.pcap");
        assert_eq!(b.path().unwrap().file_name().unwrap(), "fixed-1.pcap");
    }

    #[test]
    fn no_free_buffer_drops_whole_records_and_counts_them() {
        let w = Writer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut o = Output::create(
            &w.handle(),
            &cfg(dir.path(), Format::Pcap),
            "d",
            "e",
            1,
            70_000,
        )
        .unwrap();
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
