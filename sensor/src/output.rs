//! Capture files: pcap or pcapng written through a buffered writer, one file
//! per agent and interface named from a template, rotated by size and/or age;
//! or one stream to stdout. Every file is valid at every rotation and at exit
//! (header first, whole records only, flushed on close).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rpcap::PktHdr;

/// Bytes buffered per output before a write to disk.
const BUF_SIZE: usize = 256 * 1024;

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

enum Sink {
    File(BufWriter<File>),
    Stdout(BufWriter<io::Stdout>),
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::File(w) => w,
            Sink::Stdout(w) => w,
        }
    }
}

/// One capture's output.
pub struct Output {
    cfg: OutputConfig,
    agent: String,
    iface: String,
    linktype: i32,
    snaplen: u32,
    sink: Sink,
    path: Option<PathBuf>,
    /// Bytes in the current file.
    size: u64,
    opened: Instant,
    /// Every file written, in order.
    files: Vec<PathBuf>,
}

impl Output {
    /// Opens the first file (or stdout) and writes its header.
    pub fn create(
        cfg: &OutputConfig,
        agent: &str,
        iface: &str,
        linktype: i32,
        snaplen: u32,
    ) -> io::Result<Output> {
        let (sink, path) = open_sink(cfg, agent, iface)?;
        let mut o = Output {
            cfg: cfg.clone(),
            agent: agent.to_string(),
            iface: iface.to_string(),
            linktype,
            snaplen,
            sink,
            path: path.clone(),
            size: 0,
            opened: Instant::now(),
            files: path.into_iter().collect(),
        };
        o.write_header()?;
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

    /// Appends one record, rotating first if the file has reached its size.
    pub fn write(&mut self, hdr: &PktHdr, data: &[u8]) -> io::Result<()> {
        if self.cfg.rotate_bytes.is_some_and(|max| self.size >= max) {
            self.rotate()?;
        }
        let caplen = data.len() as u32;
        let w = self.sink.writer();
        match self.cfg.format {
            Format::Pcap => {
                let mut h = [0u8; 16];
                put_u32s(&mut h, &[hdr.ts_sec, hdr.ts_usec, caplen, hdr.len]);
                w.write_all(&h)?;
                w.write_all(data)?;
                self.size += 16 + data.len() as u64;
            }
            Format::Pcapng => {
                let pad = (4 - data.len() % 4) % 4;
                let total = 32 + data.len() as u32 + pad as u32;
                let ts = u64::from(hdr.ts_sec) * 1_000_000 + u64::from(hdr.ts_usec);
                let mut h = [0u8; 28];
                put_u32s(
                    &mut h,
                    &[6, total, 0, (ts >> 32) as u32, ts as u32, caplen, hdr.len],
                );
                w.write_all(&h)?;
                w.write_all(data)?;
                w.write_all(&[0u8; 3][..pad])?;
                w.write_all(&total.to_ne_bytes())?;
                self.size += u64::from(total);
            }
        }
        Ok(())
    }

    /// Rotates when the file is older than the configured age, and flushes
    /// what is buffered: a reader (`tail -f`, Wireshark on `-w -`) sees the
    /// records within a tick instead of only when 256 KiB have piled up.
    pub fn tick(&mut self, now: Instant) -> io::Result<()> {
        if self
            .cfg
            .rotate_age
            .is_some_and(|age| now.duration_since(self.opened) >= age)
        {
            self.rotate()?;
        }
        self.flush()
    }

    /// Flushes buffered records (the file stays valid and open).
    pub fn flush(&mut self) -> io::Result<()> {
        self.sink.writer().flush()
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.cfg.stdout {
            return Ok(());
        }
        self.flush()?;
        let (sink, path) = open_sink(&self.cfg, &self.agent, &self.iface)?;
        self.sink = sink;
        if let Some(p) = &path {
            log::info!("rotated to {}", p.display());
            self.files.push(p.clone());
        }
        self.path = path;
        self.size = 0;
        self.opened = Instant::now();
        self.write_header()
    }

    fn write_header(&mut self) -> io::Result<()> {
        let (linktype, snaplen) = (self.linktype as u32, self.snaplen);
        let w = self.sink.writer();
        match self.cfg.format {
            Format::Pcap => {
                let mut h = [0u8; 24];
                h[0..4].copy_from_slice(&0xA1B2_C3D4u32.to_ne_bytes());
                h[4..6].copy_from_slice(&2u16.to_ne_bytes());
                h[6..8].copy_from_slice(&4u16.to_ne_bytes());
                // thiszone and sigfigs stay 0.
                h[16..20].copy_from_slice(&snaplen.to_ne_bytes());
                h[20..24].copy_from_slice(&linktype.to_ne_bytes());
                w.write_all(&h)?;
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
                w.write_all(&shb)?;
                w.write_all(&idb)?;
                self.size += 48;
            }
        }
        Ok(())
    }
}

fn put_u32s(buf: &mut [u8], vals: &[u32]) {
    for (i, v) in vals.iter().enumerate() {
        buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
}

fn open_sink(cfg: &OutputConfig, agent: &str, iface: &str) -> io::Result<(Sink, Option<PathBuf>)> {
    if cfg.stdout {
        return Ok((
            Sink::Stdout(BufWriter::with_capacity(BUF_SIZE, io::stdout())),
            None,
        ));
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
                return Ok((
                    Sink::File(BufWriter::with_capacity(BUF_SIZE, f)),
                    Some(path),
                ));
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
        let dir = tempfile::tempdir().unwrap();
        let mut o = Output::create(&cfg(dir.path(), Format::Pcap), "a", "eth0", 1, 1500).unwrap();
        o.write(&hdr(1, 3), &[1, 2, 3]).unwrap();
        o.flush().unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::Pcap, Format::Pcapng] {
            let mut c = cfg(dir.path(), format);
            c.rotate_bytes = Some(200);
            let mut o = Output::create(&c, "r", &format!("{format:?}"), 1, 1500).unwrap();
            for n in 1..=10 {
                o.write(&hdr(n, 61), &[n as u8; 61]).unwrap();
            }
            o.flush().unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), Format::Pcap);
        c.rotate_age = Some(Duration::from_secs(60));
        let mut o = Output::create(&c, "t", "e", 1, 1500).unwrap();
        o.write(&hdr(1, 10), &[1; 10]).unwrap();
        o.tick(Instant::now()).unwrap();
        assert_eq!(o.files().len(), 1, "not old enough yet");
        o.tick(Instant::now() + Duration::from_secs(61)).unwrap();
        o.write(&hdr(2, 10), &[2; 10]).unwrap();
        o.flush().unwrap();
        assert_eq!(o.files().len(), 2);
        for f in o.files() {
            assert_eq!(count_with_tcpdump(f), 1);
        }
    }

    #[test]
    fn tick_flushes_buffered_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Output::create(&cfg(dir.path(), Format::Pcap), "f", "e", 1, 1500).unwrap();
        o.write(&hdr(1, 10), &[1; 10]).unwrap();
        let path = o.path().unwrap().to_path_buf();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "still buffered");
        o.tick(Instant::now()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24 + 16 + 10);
        assert_eq!(count_with_tcpdump(&path), 1);
    }

    #[test]
    fn pcapng_readable_by_tcpdump() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Output::create(&cfg(dir.path(), Format::Pcapng), "a", "e", 1, 9000).unwrap();
        for n in 1..=4 {
            o.write(&hdr(n, 60 + n), &vec![0xAB; 60 + n as usize])
                .unwrap();
        }
        o.flush().unwrap();
        assert_eq!(count_with_tcpdump(o.path().unwrap()), 4);
    }

    #[test]
    fn same_name_gets_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), Format::Pcap);
        c.template = "fixed.pcap".into();
        let a = Output::create(&c, "a", "e", 1, 100).unwrap();
        let b = Output::create(&c, "a", "e", 1, 100).unwrap();
        assert_eq!(a.path().unwrap().file_name().unwrap(), "fixed.pcap");
        assert_eq!(b.path().unwrap().file_name().unwrap(), "fixed-1.pcap");
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
