//! Name lookups off the control thread. `getaddrinfo` blocks (a name server
//! that does not answer holds it ~10 s per try) and has no cancellation, so
//! each lookup runs on a thread of its own and answers through a channel,
//! waking the loop. Nothing can grow without bound: a key (an ActiveClient
//! slot) has at most one lookup running, and at most `limit` run in all; a
//! lookup refused for either reason is the attempt's failure. A dead name
//! server thus holds one thread per slot that names it, and every other
//! slot's lookups still run at once.
//!
//! Deadlines are the caller's ([`super::slot::Slot`]): a lookup that
//! outlives its attempt is left to finish, its answer ignored.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use mio::Token;

/// The answer of one lookup.
#[derive(Debug)]
pub struct Answer {
    pub key: Token,
    pub lookup: u64,
    pub result: Result<Vec<SocketAddr>, String>,
}

/// Why a lookup was not started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("the previous lookup of this name is still running")]
    Busy,
    #[error("{0} name lookups are already running")]
    Full(usize),
    #[error("cannot start a lookup thread: {0}")]
    Spawn(String),
}

/// Lookups under way and their answers.
pub struct Resolver {
    tx: Sender<Answer>,
    rx: Receiver<Answer>,
    /// Keys with a lookup running.
    running: BTreeSet<Token>,
    limit: usize,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl Resolver {
    /// At most `limit` lookups at once; `wake` is called after each answer.
    pub fn new(limit: usize, wake: impl Fn() + Send + Sync + 'static) -> Resolver {
        // Every running lookup sends one answer: `limit` slots never block.
        let (tx, rx) = crossbeam_channel::bounded(limit.max(1));
        Resolver {
            tx,
            rx,
            running: BTreeSet::new(),
            limit: limit.max(1),
            wake: Arc::new(wake),
        }
    }

    /// Looks `host` up (port `port`) for `key`; answer number `lookup`.
    pub fn submit(
        &mut self,
        key: Token,
        lookup: u64,
        host: &str,
        port: u16,
    ) -> Result<(), Refused> {
        if self.running.contains(&key) {
            return Err(Refused::Busy);
        }
        if self.running.len() >= self.limit {
            return Err(Refused::Full(self.running.len()));
        }
        let (tx, wake, host) = (self.tx.clone(), self.wake.clone(), host.to_string());
        std::thread::Builder::new()
            .name("xrpcapd-dns".into())
            .spawn(move || {
                let result = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect)
                    .map_err(|e| format!("cannot resolve {host}: {e}"));
                // The loop may be gone (daemon stopping): nobody to tell.
                if tx
                    .send(Answer {
                        key,
                        lookup,
                        result,
                    })
                    .is_ok()
                {
                    wake();
                }
            })
            .map_err(|e| Refused::Spawn(e.to_string()))?;
        self.running.insert(key);
        Ok(())
    }

    /// The next answer, if one came.
    pub fn try_recv(&mut self) -> Option<Answer> {
        let answer = self.rx.try_recv().ok()?;
        self.running.remove(&answer.key);
        Some(answer)
    }

    /// Lookups running (answered but not yet collected included).
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn wait(r: &mut Resolver) -> Answer {
        let t0 = Instant::now();
        loop {
            if let Some(a) = r.try_recv() {
                return a;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no answer");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn answers_through_the_channel_and_wakes() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let mut r = Resolver::new(4, move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        r.submit(Token(7), 3, "127.0.0.1", 2003).unwrap();
        let a = wait(&mut r);
        assert_eq!((a.key, a.lookup), (Token(7), 3));
        assert_eq!(a.result.unwrap(), vec!["127.0.0.1:2003".parse().unwrap()]);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert_eq!(r.running(), 0);
        r.submit(Token(7), 4, "no such host.invalid", 1).unwrap();
        assert!(wait(&mut r).result.is_err());
    }

    #[test]
    fn one_lookup_per_key_and_a_bounded_number_in_all() {
        let mut r = Resolver::new(2, || {});
        r.submit(Token(1), 1, "127.0.0.1", 1).unwrap();
        assert_eq!(r.submit(Token(1), 2, "127.0.0.1", 1), Err(Refused::Busy));
        r.submit(Token(2), 1, "127.0.0.1", 1).unwrap();
        assert_eq!(r.submit(Token(3), 1, "127.0.0.1", 1), Err(Refused::Full(2)));
        wait(&mut r);
        wait(&mut r);
        r.submit(Token(1), 3, "127.0.0.1", 1).unwrap();
        assert_eq!(wait(&mut r).lookup, 3);
    }
}
