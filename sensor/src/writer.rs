//! The disk side of the sensor: one writer thread that takes filled buffers
//! from a queue and writes them to their file (or stdout), so that the
//! receive loop never waits for a disk or a stalled `-w -` reader.
//!
//! Memory is bounded by a pool of buffers of [`BUF_SIZE`] bytes: each open
//! output may hold one buffer it is filling, plus [`IN_FLIGHT`] shared
//! buffers queued or being written. When none is free, the output drops the
//! record and counts it (`write_drops`) instead of waiting. Buffers are
//! recycled, never allocated per packet.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes per buffer (one write system call each when full).
pub const BUF_SIZE: usize = 32 * 1024;
/// Buffers that may wait for the disk beyond the one each output fills:
/// 16 MiB absorb a disk (or reader) stall before records are dropped.
pub const IN_FLIGHT: usize = 512;

/// Where a target's bytes go.
pub enum Dest {
    File(File),
    Stdout,
}

/// One file (or stdout, or a named pipe) being written, shared by its
/// outputs and the writer thread; the file is closed when all have let go
/// of it. A `-w` stream is one target for every capture.
pub struct Target {
    dest: Dest,
    failed: AtomicBool,
}

impl Target {
    pub fn new(dest: Dest) -> Arc<Target> {
        Arc::new(Target {
            dest,
            failed: AtomicBool::new(false),
        })
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn write(&self, buf: &[u8]) -> io::Result<()> {
        match &self.dest {
            Dest::File(f) => {
                let mut f: &File = f;
                f.write_all(buf)
            }
            Dest::Stdout => {
                let mut o = io::stdout().lock();
                o.write_all(buf)?;
                o.flush()
            }
        }
    }
}

/// One output's account of its buffers: how many the writer is done with,
/// and the records and bytes in those it could not write. Per output, as
/// outputs may share a target.
#[derive(Default)]
pub struct Ledger {
    done: AtomicU64,
    err_records: AtomicU64,
    err_bytes: AtomicU64,
}

impl Ledger {
    pub fn new() -> Arc<Ledger> {
        Arc::new(Ledger::default())
    }

    /// Buffers the writer has finished with (written or failed).
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Records and bytes lost to write errors so far.
    pub fn errors(&self) -> (u64, u64) {
        (
            self.err_records.load(Ordering::Acquire),
            self.err_bytes.load(Ordering::Acquire),
        )
    }
}

/// A filled buffer for one target. `records`/`bytes` count the records that
/// end in this buffer (a record larger than a buffer spans several).
pub struct Job {
    pub target: Arc<Target>,
    pub ledger: Arc<Ledger>,
    pub buf: Vec<u8>,
    pub records: u64,
    pub bytes: u64,
}

struct PoolState {
    free: Vec<Vec<u8>>,
    /// Buffers in existence (free, filling, queued or being written).
    allocated: usize,
    /// Open outputs: each may hold one buffer besides the shared ones.
    outputs: usize,
}

impl PoolState {
    fn cap(&self) -> usize {
        self.outputs + IN_FLIGHT
    }
}

/// The buffers, shared by the outputs (taking) and the writer (returning).
pub struct Pool {
    state: Mutex<PoolState>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic while holding this lock leaves only a Vec of buffers behind:
        // still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buffers that can be taken without going over the bound.
    pub fn available(&self) -> usize {
        let s = self.lock();
        s.free.len() + s.cap().saturating_sub(s.allocated)
    }

    /// A free buffer, or a new one while under the bound. `force` allows one
    /// beyond it (file headers at creation and rotation, which must not be
    /// dropped); the excess is freed when it comes back.
    pub fn take(&self, force: bool) -> Option<Vec<u8>> {
        let mut s = self.lock();
        if let Some(b) = s.free.pop() {
            return Some(b);
        }
        if s.allocated < s.cap() || force {
            s.allocated += 1;
            return Some(Vec::with_capacity(BUF_SIZE));
        }
        None
    }

    pub fn give(&self, mut buf: Vec<u8>) {
        let mut s = self.lock();
        if s.allocated > s.cap() {
            s.allocated -= 1;
            return;
        }
        buf.clear();
        s.free.push(buf);
    }

    pub fn output_opened(&self) {
        self.lock().outputs += 1;
    }

    pub fn output_closed(&self) {
        let mut s = self.lock();
        s.outputs = s.outputs.saturating_sub(1);
    }
}

/// A closure the writer runs after every buffer queued before it (the
/// rename of a finished file); it counts as one buffer of `ledger`.
pub struct Then {
    pub ledger: Arc<Ledger>,
    pub run: Box<dyn FnOnce() + Send>,
}

enum Msg {
    Write(Job),
    Then(Then),
}

/// What an output needs to reach the writer thread.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Msg>,
    pub pool: Arc<Pool>,
}

impl Handle {
    /// Queues a buffer. The queue never holds more buffers than the pool
    /// allows, so it is bounded by the pool.
    pub fn send(&self, job: Job) {
        if let Err(mpsc::SendError(Msg::Write(job))) = self.tx.send(Msg::Write(job)) {
            // The writer thread is gone (it only ends when every handle is
            // dropped, so this is a bug); account the records as failed.
            job.fail();
            job.ledger.done.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Queues a closure to run once the buffers queued so far are written.
    pub fn then(&self, then: Then) {
        if let Err(mpsc::SendError(Msg::Then(t))) = self.tx.send(Msg::Then(then)) {
            t.ledger.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Job {
    /// The target failed: this buffer's records are write errors of its output.
    fn fail(&self) {
        self.target.failed.store(true, Ordering::Release);
        self.ledger
            .err_records
            .fetch_add(self.records, Ordering::AcqRel);
        self.ledger
            .err_bytes
            .fetch_add(self.bytes, Ordering::AcqRel);
    }
}

/// The writer thread.
pub struct Writer {
    handle: Option<Handle>,
    /// Bytes written to targets (one add per buffer, not per record).
    written: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start() -> io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let pool = Arc::new(Pool {
            state: Mutex::new(PoolState {
                free: Vec::new(),
                allocated: 0,
                outputs: 0,
            }),
        });
        let p = pool.clone();
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                for msg in rx {
                    let job = match msg {
                        Msg::Write(job) => job,
                        Msg::Then(t) => {
                            (t.run)();
                            t.ledger.done.fetch_add(1, Ordering::AcqRel);
                            continue;
                        }
                    };
                    let t = &job.target;
                    if t.failed() {
                        job.fail();
                    } else if let Err(e) = t.write(&job.buf) {
                        log::error!(
                            "write failed: {e} (further records written there are counted as write errors)"
                        );
                        job.fail();
                    } else {
                        w.fetch_add(job.buf.len() as u64, Ordering::Relaxed);
                    }
                    p.give(job.buf);
                    job.ledger.done.fetch_add(1, Ordering::AcqRel);
                }
            })?;
        Ok(Writer {
            handle: Some(Handle { tx, pool }),
            written,
            thread: Some(thread),
        })
    }

    /// Bytes written to files (and stdout) so far, for the metrics.
    pub fn written(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone().expect("writer running")
    }

    /// Lets the thread finish what is queued, waiting at most `limit` (a
    /// stalled reader of `-w -` must not keep the sensor from exiting).
    pub fn stop(&mut self, limit: Duration) {
        self.handle = None;
        let deadline = Instant::now() + limit;
        if let Some(t) = self.thread.take() {
            while !t.is_finished() {
                if Instant::now() >= deadline {
                    log::warn!("the writer did not finish within {limit:?}; exiting anyway");
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
