//! tcpdump-style file rotation around the capture files: the ring limit
//! (`-W`), the post-rotate command (`-z`), the disk-space floor
//! (`--min-free`) and strftime names (`-G`).
//!
//! A file is written as `NAME.part` and renamed to `NAME` by the writer
//! thread once its last block (pcapng: the statistics block) is written, so
//! a directory watcher (Arkime `--monitor`, Suricata's continuous pcap-file
//! mode) never opens a file that is still growing. The ring and `-z` run
//! right after that rename, in the writer thread, in file order.
//!
//! `-W N` keeps the newest N finished files of each capture (agent and
//! interface, across its reconnections) and deletes older ones, with `-C`
//! and with `-G`. The file being written (`.part`) is not counted: a
//! directory holds at most N finished files plus one `.part` per capture.
//! (tcpdump reuses N names, so it has N files including the one it writes;
//! and with `-G` alone tcpdump exits after N files, which a sensor serving
//! many agents does not: it keeps a ring there too.)

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};

/// `-z` commands that may run at once; a rotation beyond that does not
/// start one (counted in `post_rotate_failures`, logged).
pub const POST_ROTATE_IN_FLIGHT: usize = 4;

/// The suffix of a file still being written.
pub const PART: &str = ".part";

/// The free-space floor of the output directory's file system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    Bytes(u64),
    /// Percent of the file system's size.
    Percent(f64),
}

impl Default for MinFree {
    /// 1 % of the file system (`--min-free 0` turns the floor off).
    fn default() -> MinFree {
        MinFree::Percent(1.0)
    }
}

impl MinFree {
    /// Whether the file system holding `dir` has less room than the floor
    /// (for unprivileged users: statvfs's `f_bavail`, df's "Avail").
    pub fn below(self, dir: &Path) -> io::Result<bool> {
        if self == MinFree::Bytes(0) || self == MinFree::Percent(0.0) {
            return Ok(false);
        }
        let s = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
        let frsize = s.fragment_size() as u64;
        let avail = s.blocks_available() as u64 * frsize;
        let floor = match self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => ((s.blocks() as u64 * frsize) as f64 * p / 100.0) as u64,
        };
        Ok(avail < floor)
    }
}

/// `--min-free`: `N%`, or a size as `-C` takes it (`0` turns it off).
pub fn parse_min_free(s: &str) -> Result<MinFree, String> {
    if let Some(p) = s.strip_suffix('%') {
        return match p.trim().parse::<f64>() {
            Ok(p) if (0.0..100.0).contains(&p) => Ok(MinFree::Percent(p)),
            _ => Err(format!("'{s}' is not a percentage below 100 (e.g. 2%)")),
        };
    }
    parse_size(s).map(MinFree::Bytes)
}

/// A size as tcpdump's `-C` takes it: millions of bytes (`1` = 1 000 000
/// bytes), or with a suffix k/K (KiB), m/M (MiB), g/G (GiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a size (N millions of bytes, or N with k, m or g)");
    let s2 = s.trim();
    let (num, unit) = match s2.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (
            &s2[..i],
            match c.to_ascii_lowercase() {
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(bad()),
            },
        ),
        _ => (s2, 1_000_000u64),
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    n.checked_mul(unit).ok_or_else(bad)
}

/// Checks a file name template's strftime sequences (`%Y`, `%H`, `%%` …).
pub fn check_template(template: &str) -> Result<(), String> {
    if StrftimeItems::new(template).any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "'{template}' has an unknown strftime sequence (a literal % is %%)"
        ));
    }
    Ok(())
}

/// The file name for a template at time `t` (UTC): strftime sequences,
/// then `{agent}`, `{iface}`, `{time}` (yyyymmddThhmmss). Values are made
/// safe for a file name.
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
    let t: DateTime<Utc> = t.into();
    let mut name = String::new();
    if write!(name, "{}", t.format(template)).is_err() {
        // Checked at start (check_template); keep the template as it is.
        name = template.to_string();
    }
    name.replace("{agent}", &safe(agent))
        .replace("{iface}", &safe(iface))
        .replace("{time}", &t.format("%Y%m%dT%H%M%S").to_string())
}

/// The newest finished files of one capture, oldest first.
#[derive(Debug, Default)]
pub struct Ring {
    files: VecDeque<PathBuf>,
}

impl Ring {
    /// Adds a finished file; returns the files beyond `keep` to delete.
    pub fn push(&mut self, file: PathBuf, keep: usize) -> Vec<PathBuf> {
        self.files.push_back(file);
        let over = self.files.len().saturating_sub(keep);
        self.files.drain(..over).collect()
    }
}

#[derive(Debug, Default)]
struct State {
    rings: HashMap<String, Ring>,
    children: Vec<Child>,
}

/// What happens to finished files: shared by every output (through
/// `OutputConfig`) and run in the writer thread.
#[derive(Debug, Default)]
pub struct Files {
    /// `-W`: finished files kept per capture.
    pub keep: Option<usize>,
    /// `-z`: run as `CMD FILE` (no shell) for each finished file.
    pub post_rotate: Option<PathBuf>,
    pub min_free: MinFree,
    state: Mutex<State>,
    /// `-z` commands that could not start, were not started (too many
    /// running) or exited unsuccessfully.
    pub post_rotate_failures: AtomicU64,
    /// Files deleted by the ring.
    pub deleted: AtomicU64,
}

impl Files {
    pub fn new(keep: Option<usize>, post_rotate: Option<PathBuf>, min_free: MinFree) -> Files {
        Files {
            keep,
            post_rotate,
            min_free,
            ..Files::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer has written the last block of `part`: renames it to
    /// `name`, applies the ring of capture `key`, starts `-z`. A file whose
    /// writes failed stays `.part` (it is not complete).
    pub fn finished(&self, key: &str, part: &Path, name: &Path, complete: bool) {
        if !complete {
            log::warn!(
                "{} is incomplete (a write failed); left as it is",
                part.display()
            );
            return;
        }
        if let Err(e) = std::fs::rename(part, name) {
            log::error!(
                "cannot rename {} to {}: {e}",
                part.display(),
                name.display()
            );
            return;
        }
        let mut st = self.lock();
        if let Some(keep) = self.keep {
            let old = st
                .rings
                .entry(key.to_string())
                .or_default()
                .push(name.to_path_buf(), keep);
            for f in old {
                match std::fs::remove_file(&f) {
                    Ok(()) => {
                        self.deleted.fetch_add(1, Ordering::Relaxed);
                        log::info!("deleted {} (-W {keep})", f.display());
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => log::warn!("cannot delete {} (-W): {e}", f.display()),
                }
            }
        }
        if let Some(cmd) = &self.post_rotate {
            self.reap(&mut st);
            if st.children.len() >= POST_ROTATE_IN_FLIGHT {
                self.post_rotate_failures.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "-z {}: {POST_ROTATE_IN_FLIGHT} still running; not run for {}",
                    cmd.display(),
                    name.display()
                );
                return;
            }
            match Command::new(cmd)
                .arg(name)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
            {
                Ok(c) => st.children.push(c),
                Err(e) => {
                    self.post_rotate_failures.fetch_add(1, Ordering::Relaxed);
                    log::warn!("-z {}: cannot run: {e}", cmd.display());
                }
            }
        }
    }

    /// Collects finished `-z` commands, counting those that failed.
    fn reap(&self, st: &mut State) {
        st.children.retain_mut(|c| match c.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                if !status.success() {
                    self.post_rotate_failures.fetch_add(1, Ordering::Relaxed);
                    log::warn!("-z command {}: {status}", c.id());
                }
                false
            }
            Err(_) => false,
        });
    }

    /// Waits (bounded) for running `-z` commands, at exit.
    pub fn wait_post_rotate(&self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let mut st = self.lock();
            self.reap(&mut st);
            if st.children.is_empty() || std::time::Instant::now() >= deadline {
                return;
            }
            drop(st);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// `dir/a.pcap` → `dir/a.pcap.part`.
pub fn part_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(PART);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn sizes_as_tcpdump() {
        assert_eq!(parse_size("1"), Ok(1_000_000));
        assert_eq!(parse_size("3k"), Ok(3 * 1024));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        for bad in ["", "x", "1x", "-1", "1.5"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_min_free("2%"), Ok(MinFree::Percent(2.0)));
        assert_eq!(parse_min_free("0"), Ok(MinFree::Bytes(0)));
        assert_eq!(parse_min_free("1g"), Ok(MinFree::Bytes(1 << 30)));
        assert!(parse_min_free("100%").is_err());
    }

    #[test]
    fn ring_keeps_the_newest() {
        let mut r = Ring::default();
        let p = |n: u32| PathBuf::from(format!("f{n}"));
        assert!(r.push(p(1), 3).is_empty());
        assert!(r.push(p(2), 3).is_empty());
        assert!(r.push(p(3), 3).is_empty());
        assert_eq!(r.push(p(4), 3), vec![p(1)]);
        assert_eq!(r.push(p(5), 3), vec![p(2)]);
        assert_eq!(r.files, [p(3), p(4), p(5)]);
        assert_eq!(r.push(p(6), 1), vec![p(3), p(4), p(5)]);
    }

    #[test]
    fn strftime_templates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_709_164_800 + 3661); // 2024-02-29 01:01:01
        assert_eq!(
            render("{agent}-{iface}-{time}.pcap", "10.0.0.1_99", "eth 0/1", t),
            "10.0.0.1_99-eth_0_1-20240229T010101.pcap"
        );
        assert_eq!(
            render("%Y/%m/%d-%H%M%S-{iface}-100%%.pcap", "a", "e", t),
            "2024/02/29-010101-e-100%.pcap"
        );
        assert!(check_template("x-%Y.pcap").is_ok());
        assert!(check_template("x-%Q.pcap").is_err());
        assert!(check_template("x-%").is_err());
    }

    #[test]
    fn finished_renames_rings_and_runs_z() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("z.log");
        let script = dir.path().join("z.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$1\" >> {}\n", log.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = Files::new(Some(2), Some(script), MinFree::Bytes(0));
        let mut names = Vec::new();
        for n in 0..4 {
            let name = dir.path().join(format!("c{n}.pcap"));
            let part = part_path(&name);
            std::fs::write(&part, b"x").unwrap();
            f.finished("a/e", &part, &name, true);
            f.wait_post_rotate(Duration::from_secs(5));
            assert!(name.exists() && !part.exists());
            names.push(name);
        }
        assert!(!names[0].exists() && !names[1].exists());
        assert!(names[2].exists() && names[3].exists());
        assert_eq!(f.deleted.load(Ordering::Relaxed), 2);
        let ran = std::fs::read_to_string(&log).unwrap();
        let want: String = names.iter().map(|n| format!("{}\n", n.display())).collect();
        assert_eq!(ran, want);
        assert_eq!(f.post_rotate_failures.load(Ordering::Relaxed), 0);
        // An incomplete file stays .part; a failing command is counted.
        let bad = Files::new(None, Some("/bin/false".into()), MinFree::Bytes(0));
        let name = dir.path().join("x.pcap");
        std::fs::write(part_path(&name), b"x").unwrap();
        bad.finished("k", &part_path(&name), &name, false);
        assert!(part_path(&name).exists());
        bad.finished("k", &part_path(&name), &name, true);
        bad.wait_post_rotate(Duration::from_secs(5));
        assert_eq!(bad.post_rotate_failures.load(Ordering::Relaxed), 1);
    }
}
