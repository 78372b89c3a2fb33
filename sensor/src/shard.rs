//! `--receive-threads N`: the sensor as N event loops ("shards"), each a
//! whole [`Sensor`] loop with its own agents, buffers, linger and ports, in
//! its own thread, so that N cores receive.
//!
//! Agents are dealt to shards by the kernel: the listener and the shared
//! UDP port are each a reuseport group of N sockets (shard i's socket the
//! i-th member of both) steered by the agent's IP address
//! ([`sys::reuseport`]), so one agent's control connection and its
//! shared-port datagrams land in the same shard with no hand-over between
//! threads. Per-capture UDP ports are bound by each shard from the one
//! range (a port another shard holds fails to bind; the next is tried);
//! dialed agents (`--connect`) are dealt round-robin.
//!
//! Shard 0 (the "leader") runs on the calling thread and owns what is one
//! per process: signals, sd_notify, the metrics endpoint, the writer
//! thread, the final summary and `--stats-file`. It tells the others to
//! stop or to take a reloaded filter through [`Control`] (flags read at
//! each wake-up, at most a tick late); they report their counts there and
//! hand their final lines back when they end ([`ShardEnd`]). Data flows one
//! way: socket → shard → writer thread, never between shards.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Result;

/// A receive thread's body: builds its loop (in the thread: a loop's
/// batch buffers stay in the thread that made them) and runs it.
pub type Body = Box<dyn FnOnce() -> Result<ShardEnd> + Send>;

/// What the leader and the other shards share.
#[derive(Default)]
pub struct Control {
    /// The sensor stops (signal, `--duration`, a shard's failure).
    stop: AtomicBool,
    /// The filter to apply, and how many times it was replaced (SIGHUP).
    filter: Mutex<Option<String>>,
    filter_gen: AtomicU64,
    /// Per shard: agents connected, captures running (for `STATUS=`).
    counts: Vec<(AtomicUsize, AtomicUsize)>,
}

impl Control {
    pub fn new(shards: usize) -> Arc<Control> {
        Arc::new(Control {
            counts: (0..shards).map(|_| Default::default()).collect(),
            ..Control::default()
        })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The leader re-read the filter file.
    pub fn set_filter(&self, f: Option<String>) {
        *self.filter.lock().unwrap_or_else(|p| p.into_inner()) = f;
        self.filter_gen.fetch_add(1, Ordering::Release);
    }

    /// The filter, if it changed since generation `seen` (updated).
    pub fn new_filter(&self, seen: &mut u64) -> Option<Option<String>> {
        let g = self.filter_gen.load(Ordering::Acquire);
        if g == *seen {
            return None;
        }
        *seen = g;
        Some(
            self.filter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    pub fn set_counts(&self, shard: usize, agents: usize, captures: usize) {
        if let Some((a, c)) = self.counts.get(shard) {
            a.store(agents, Ordering::Relaxed);
            c.store(captures, Ordering::Relaxed);
        }
    }

    /// Agents and captures of every shard but `except`.
    pub fn others(&self, except: usize) -> (usize, usize) {
        self.counts
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .fold((0, 0), |(a, c), (_, (x, y))| {
                (a + x.load(Ordering::Relaxed), c + y.load(Ordering::Relaxed))
            })
    }
}

/// What a shard leaves for the leader's final summary.
#[derive(Debug, Default)]
pub struct ShardEnd {
    /// The final line of each of its captures.
    pub lines: Vec<String>,
    /// Active agents its `--allow` refused.
    pub refused: u64,
    /// Its shared-UDP-port socket's counters: foreign, socket drops, fallbacks.
    pub shared: Option<[u64; 3]>,
}

impl ShardEnd {
    /// Adds `other`'s lines and counts to this one's.
    pub fn merge(&mut self, other: ShardEnd) {
        self.lines.extend(other.lines);
        self.refused += other.refused;
        if let Some(o) = other.shared {
            let s = self.shared.get_or_insert([0; 3]);
            for (a, b) in s.iter_mut().zip(o) {
                *a += b;
            }
        }
    }
}

/// This loop's part in a sharded sensor.
pub enum Role {
    /// `--receive-threads 1`: the only loop, as before sharding.
    Only,
    /// Shard 0, on the calling thread: starts the others, then waits for
    /// them at its shutdown.
    Leader {
        ctl: Arc<Control>,
        /// The other shards, numbered, not yet started (until `run`).
        waiting: Vec<(usize, Body)>,
        running: Vec<JoinHandle<Result<ShardEnd>>>,
    },
    /// Shard `index` ≥ 1, in a thread of its own.
    Follower {
        ctl: Arc<Control>,
        index: usize,
        /// The filter generation applied.
        filter_seen: u64,
    },
}

impl Role {
    pub fn index(&self) -> usize {
        match self {
            Role::Follower { index, .. } => *index,
            _ => 0,
        }
    }

    pub fn control(&self) -> Option<&Arc<Control>> {
        match self {
            Role::Only => None,
            Role::Leader { ctl, .. } | Role::Follower { ctl, .. } => Some(ctl),
        }
    }

    /// Whether this loop owns the process-wide duties (signals, notify,
    /// writer, summary).
    pub fn leads(&self) -> bool {
        !matches!(self, Role::Follower { .. })
    }

    /// Leader: starts the other shards, each in a thread `shard-I`.
    pub fn start(&mut self) -> Result<()> {
        let Role::Leader {
            waiting, running, ..
        } = self
        else {
            return Ok(());
        };
        for (i, body) in waiting.drain(..) {
            let name = format!("shard-{i}");
            let h = std::thread::Builder::new()
                .name(name.clone())
                .spawn(body)
                .map_err(|e| anyhow::anyhow!("cannot start receive thread {name}: {e}"))?;
            running.push(h);
        }
        Ok(())
    }

    /// Why this loop must stop now, if it must: the leader's stop (for a
    /// follower) or a follower that ended by itself (for the leader).
    pub fn must_stop(&self) -> Option<&'static str> {
        match self {
            Role::Only => None,
            Role::Follower { ctl, .. } => ctl.stopping().then_some("the sensor stops"),
            Role::Leader { running, .. } => running
                .iter()
                .any(JoinHandle::is_finished)
                .then_some("a receive thread ended"),
        }
    }

    /// Leader: stops the other shards and collects their ends, and the
    /// first failure (a failed shard's captures' lines are lost with it;
    /// the sensor then exits with an error after its summary).
    pub fn join(&mut self) -> (ShardEnd, Option<anyhow::Error>) {
        let mut all = ShardEnd::default();
        let mut failed = None;
        let Role::Leader { ctl, running, .. } = self else {
            return (all, failed);
        };
        ctl.stop();
        for h in running.drain(..) {
            let e = match h.join() {
                Ok(Ok(end)) => {
                    all.merge(end);
                    continue;
                }
                Ok(Err(e)) => e.context("a receive thread failed"),
                Err(_) => anyhow::anyhow!("a receive thread panicked"),
            };
            log::error!("{e:#}");
            failed.get_or_insert(e);
        }
        (all, failed)
    }
}

/// Deals `--connect` targets round-robin: shard `i` of `n` gets every n-th.
pub fn deal<T: Clone>(items: &[T], i: usize, n: usize) -> Vec<T> {
    items.iter().skip(i).step_by(n.max(1)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dials_are_dealt_round_robin() {
        let t: Vec<u32> = (0..5).collect();
        assert_eq!(deal(&t, 0, 2), [0, 2, 4]);
        assert_eq!(deal(&t, 1, 2), [1, 3]);
        assert_eq!(deal(&t, 0, 1), t);
    }

    #[test]
    fn control_carries_filters_and_counts() {
        let c = Control::new(3);
        let mut seen = 0;
        assert_eq!(c.new_filter(&mut seen), None);
        c.set_filter(Some("udp".into()));
        assert_eq!(c.new_filter(&mut seen), Some(Some("udp".into())));
        assert_eq!(c.new_filter(&mut seen), None);
        c.set_counts(1, 2, 1);
        c.set_counts(2, 3, 3);
        c.set_counts(0, 9, 9);
        assert_eq!(c.others(0), (5, 4));
    }

    #[test]
    fn ends_merge() {
        let mut a = ShardEnd {
            lines: vec!["a".into()],
            refused: 1,
            shared: Some([1, 2, 3]),
        };
        a.merge(ShardEnd {
            lines: vec!["b".into()],
            refused: 2,
            shared: Some([10, 20, 30]),
        });
        assert_eq!(a.lines, ["a", "b"]);
        assert_eq!(a.refused, 3);
        assert_eq!(a.shared, Some([11, 22, 33]));
    }
}
