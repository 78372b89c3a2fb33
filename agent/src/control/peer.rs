//! One control connection, dialled (a sensor of an ActiveClient line) or
//! accepted (a passive client): its stream (TLS or not), its [`Session`],
//! the capture the session runs, and the pumping of bytes and commands
//! between them.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::warn;
use mio::net::TcpStream;
use mio::{Registry, Token};
use rpcap::msg::Message;
use rpcap::ErrorCode;

use super::linger::Lingering;
use super::tls::{Conn, Sniffed};
use crate::auth::{Backoff, Verifier};
use crate::datapath::Counters;
use crate::host::CaptureHost;
use crate::session::{Answer, Command, Ended, HostCommand, Input, PasswordCheck, Session};
use rpcap::addr::canonical;

/// Reads from one peer in one turn of the loop, at most (of 16 KiB): a
/// peer that sends without pause cannot keep the loop from the others.
const READS_PER_TURN: usize = 4;

/// How long a peer may hold its replies over the high-water mark
/// ([`crate::session::OUTPUT_HIGH_WATER`]) without taking a byte of them
/// before it is dropped. A peer that reads takes its replies within a round
/// trip; one that pipelines requests and reads nothing never does.
pub const STALL_LIMIT: Duration = Duration::from_secs(15);

/// Who the peer is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The sensor of an ActiveClient line: we dialled it.
    Sensor,
    /// A passive client: it connected to us.
    Client,
}

/// How a peer stands after it was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Open,
    /// Its session is over.
    Ended(Ended),
    /// Its connection is gone (or unusable); why.
    Gone(String),
}

/// Password checks under way: check id → the peer that waits for it.
#[derive(Debug, Default)]
pub struct Checks {
    next: u64,
    waiting: BTreeMap<u64, Token>,
}

impl Checks {
    /// Hands `check` to the checker for `token`; false when its queue is full.
    fn submit(&mut self, verifier: &Verifier, token: Token, check: PasswordCheck) -> bool {
        self.next += 1;
        if !verifier.submit(self.next, check.auth, check.user, check.password) {
            return false;
        }
        self.waiting.insert(self.next, token);
        true
    }

    /// The peer that waits for check `id`, if it is still there.
    pub fn take(&mut self, id: u64) -> Option<Token> {
        self.waiting.remove(&id)
    }

    /// The checks of a peer that is gone no longer count.
    pub fn forget(&mut self, token: Token) {
        self.waiting.retain(|_, t| *t != token);
    }
}

/// What serving a peer needs besides the peer, shared by all peers.
pub struct Services<H> {
    pub host: H,
    /// Password checks run there, not on the control thread.
    pub verifier: Verifier,
    pub checks: Checks,
    /// Delays of failed logins, per peer address.
    pub backoff: Backoff,
    pub dropped: Dropped,
}

/// Peers the driver dropped, by cause: each is logged as it happens, and
/// counted for the counters an export reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Peers that left their replies unread: over the output cap, or over
    /// the high-water mark for [`STALL_LIMIT`].
    pub unread: u64,
}

/// How long a peer's replies have been held over the high-water mark with
/// no byte taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Stall {
    since: Option<Instant>,
}

impl Stall {
    /// After writing at `now`: whether the replies hold the peer's requests
    /// back, and whether the peer took some of them.
    fn update(&mut self, now: Instant, blocked: bool, progressed: bool) {
        self.since = match (blocked, progressed) {
            (false, _) => None,
            (true, true) => Some(now),
            (true, false) => self.since.or(Some(now)),
        };
    }

    /// When the peer is dropped if it still takes nothing.
    fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + STALL_LIMIT)
    }

    fn expired(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| d <= now)
    }
}

/// One control connection and its session.
pub struct Peer<C> {
    token: Token,
    role: Role,
    conn: Conn<TcpStream>,
    session: Session,
    /// The capture the session's commands run on.
    capture: Option<C>,
    /// Its capture is on its way: the session waits for the host to say
    /// it is up ([`Peer::check_start`]).
    starting: bool,
    /// Its turn ended with more maybe waiting in the socket, whose
    /// readiness was taken: serve it again (after the others).
    again: Option<Instant>,
    stall: Stall,
}

impl<C> Peer<C> {
    pub fn new(token: Token, role: Role, conn: Conn<TcpStream>, session: Session) -> Peer<C> {
        Peer {
            token,
            role,
            conn,
            session,
            capture: None,
            starting: false,
            again: None,
            stall: Stall::default(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn addr(&self) -> SocketAddr {
        self.session.peer()
    }

    pub fn authenticated(&self) -> bool {
        self.session.authenticated()
    }

    pub fn capturing(&self) -> bool {
        self.session.capturing()
    }

    /// Every counter of its running capture (None: none runs).
    pub fn counters<H: CaptureHost<Capture = C>>(&self, host: &mut H) -> Option<Counters> {
        if !self.session.capturing() {
            return None;
        }
        host.counters(self.capture.as_ref()?)
    }

    /// The interface its session opened.
    pub fn interface(&self) -> Option<&str> {
        self.session.interface()
    }

    /// Whose capture, as a `key=value` field (`sensor=HOST:PORT`, `client=ADDR`).
    pub fn owner(&self) -> String {
        self.session.owner()
    }

    /// The requests its session refused since the last call (sensors).
    pub fn take_refusals(&mut self) -> Vec<String> {
        self.session.take_refusals()
    }

    /// New authentication and idle timeouts (a reload).
    pub fn set_timeouts(&mut self, auth: Option<Duration>, idle: Option<Duration>) {
        self.session.set_timeouts(auth, idle);
    }

    /// When [`Peer::timeout`] is due: a timer of the session, another turn,
    /// or the end of the patience with a peer that does not read.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.session.poll_timeout(),
            self.again,
            self.stall.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The socket is ready, or the session may go on: reads what arrived,
    /// runs the session and its commands, writes the replies.
    pub fn service<H: CaptureHost<Capture = C>>(
        &mut self,
        now: Instant,
        svc: &mut Services<H>,
    ) -> Status {
        let gone = self.pump(now, svc);
        self.status(gone)
    }

    /// The session's timers at `now`.
    pub fn timeout<H: CaptureHost<Capture = C>>(
        &mut self,
        now: Instant,
        svc: &mut Services<H>,
    ) -> Status {
        self.session.handle_timeout(now);
        self.run_commands(now, svc);
        self.service(now, svc)
    }

    /// A password check's verdict.
    pub fn checked<H: CaptureHost<Capture = C>>(
        &mut self,
        now: Instant,
        ok: bool,
        svc: &mut Services<H>,
    ) -> Status {
        self.answer(now, Answer::PasswordChecked(ok), svc);
        self.service(now, svc)
    }

    /// Whether its session waits for its capture to be up.
    pub fn starting(&self) -> bool {
        self.starting
    }

    /// Asks the host whether the capture on its way is up (or could not
    /// start); the session answers the peer. None while it is on its way.
    pub fn check_start<H: CaptureHost<Capture = C>>(
        &mut self,
        now: Instant,
        svc: &mut Services<H>,
    ) -> Option<Status> {
        if !self.starting {
            return None;
        }
        let answer = svc.host.poll_started(&mut self.capture)?;
        self.starting = false;
        self.answer(now, answer, svc);
        Some(self.service(now, svc))
    }

    /// Asks the host whether the capture stopped by itself; the session
    /// tells the peer. None when nothing happened.
    pub fn check_capture<H: CaptureHost<Capture = C>>(
        &mut self,
        now: Instant,
        svc: &mut Services<H>,
    ) -> Option<Status> {
        let reason = svc.host.failure(self.capture.as_ref()?)?;
        self.session.handle(now, Input::CaptureFailed(reason));
        self.run_commands(now, svc);
        Some(self.service(now, svc))
    }

    /// Ends the capture, sends what is left and lets the connection linger
    /// until the peer closes too.
    pub fn close<H: CaptureHost<Capture = C>>(
        mut self,
        now: Instant,
        svc: &mut Services<H>,
        registry: &Registry,
        lingering: &mut Lingering,
    ) {
        svc.checks.forget(self.token);
        self.session.handle(now, Input::Shutdown);
        self.run_commands(now, svc);
        // A session ended with a capture still there (or on its way): never
        // leak it.
        if let Some(cap) = self.capture.take() {
            svc.host.stop(cap);
        }
        let _ = self.flush();
        let _ = registry.deregister(&mut self.conn.stream);
        lingering.add(self.conn.stream, now);
    }

    fn answer<H: CaptureHost<Capture = C>>(
        &mut self,
        now: Instant,
        answer: Answer,
        svc: &mut Services<H>,
    ) {
        self.session.handle(now, Input::Answer(answer));
        self.run_commands(now, svc);
    }

    /// Carries out the session's commands; those answered at once are
    /// answered at once (the session waits for them before its next request).
    fn run_commands<H: CaptureHost<Capture = C>>(&mut self, now: Instant, svc: &mut Services<H>) {
        while let Some(cmd) = self.session.poll_command() {
            let ip = canonical(self.session.peer().ip());
            let answer = match cmd {
                Command::Host(cmd) => {
                    let start = matches!(cmd, HostCommand::StartCapture(_));
                    let answer = svc.host.execute(&mut self.capture, cmd);
                    // Unanswered: on its way, answered by `check_start`.
                    self.starting = start && answer.is_none();
                    answer
                }
                Command::CheckPassword(check) => {
                    // A full queue fails the login at once.
                    (!svc.checks.submit(&svc.verifier, self.token, check))
                        .then_some(Answer::PasswordChecked(false))
                }
                Command::HoldFailedAuth => Some(Answer::Hold(svc.backoff.failed(ip, now))),
                Command::AuthSucceeded => {
                    svc.backoff.succeeded(ip);
                    None
                }
            };
            if let Some(answer) = answer {
                self.session.handle(now, Input::Answer(answer));
            }
        }
    }

    /// Finds out TLS or plaintext, feeds what arrived to the session (while
    /// it reads), sends its replies. Returns why the connection is gone, if
    /// it is.
    fn pump<H: CaptureHost<Capture = C>>(
        &mut self,
        now: Instant,
        svc: &mut Services<H>,
    ) -> Option<String> {
        let who = match self.role {
            Role::Sensor => "the sensor",
            Role::Client => "the client",
        };
        let mut first = [0u8; 1];
        let peeked = match self
            .conn
            .sniffing()
            .then(|| self.conn.stream.peek(&mut first))
        {
            Some(Ok(n)) if n > 0 => Some(first[0]),
            _ => None,
        };
        match self.conn.sniff(peeked) {
            Err(e) => return Some(format!("TLS: {e}")),
            // Nothing to read yet, or the end: the read below tells.
            Ok(Sniffed::Pending) => {}
            Ok(Sniffed::PlainRefused) => {
                refuse(
                    &mut self.conn.stream,
                    ErrorCode::TlsRequired,
                    "TLS is required (use rpcaps://)",
                );
                return Some("plaintext client refused: TLS is required".into());
            }
            Ok(Sniffed::Tls) => self.session.handle(now, Input::Tls),
            Ok(_) => {}
        }
        let mut buf = [0u8; 16 * 1024];
        let (mut reads, mut empty, mut progressed) = (0, false, false);
        let mut gone = loop {
            // Replies first: what the peer takes makes room for its requests.
            match self.flush() {
                Ok(took) => progressed |= took,
                Err(e) => break Some(e.to_string()),
            }
            self.session.handle(now, Input::Sent);
            self.run_commands(now, svc);
            if empty || !self.session.reading() {
                break None;
            }
            if reads == READS_PER_TURN {
                self.again = Some(now);
                break None;
            }
            reads += 1;
            match self.conn.read(&mut buf) {
                Ok(0) => break Some(format!("{who} closed the connection")),
                Ok(n) => {
                    self.session.handle(now, Input::Received(&buf[..n]));
                    self.run_commands(now, svc);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => empty = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e.to_string()),
            }
        };
        match self.flush() {
            Ok(took) => progressed |= took,
            Err(e) => {
                gone.get_or_insert(e.to_string());
            }
        }
        // A peer that hangs up while its session waits (a capture on its
        // way, a password check) is gone now, not once the wait is over.
        if gone.is_none() && !self.session.reading() && self.hung_up() {
            gone = Some(format!("{who} closed the connection"));
        }
        self.stall
            .update(now, self.session.output_blocked(), progressed);
        if gone.is_none() && (self.session.output_over_limit() || self.stall.expired(now)) {
            svc.dropped.unread += 1;
            warn!(
                "{who} {}: dropped, it does not read its replies ({} bytes wait; {} dropped so far)",
                self.addr(),
                self.session.output().len(),
                svc.dropped.unread
            );
            gone = Some(format!("{who} does not read its replies"));
        }
        gone
    }

    fn status(&self, gone: Option<String>) -> Status {
        match (self.session.ended(), gone) {
            (Some(ended), _) => Status::Ended(ended.clone()),
            (None, Some(why)) => Status::Gone(why),
            (None, None) => Status::Open,
        }
    }

    /// Whether the peer closed its end with nothing left unread (what the
    /// socket holds after a close is read before the close is seen).
    fn hung_up(&self) -> bool {
        matches!(self.conn.stream.peek(&mut [0u8; 1]), Ok(0))
    }

    /// Writes pending replies until done or the socket is full; whether the
    /// peer took any.
    fn flush(&mut self) -> io::Result<bool> {
        self.conn.flush_tls()?;
        let before = self.session.output().len();
        self.session.write_to(&mut self.conn)?;
        Ok(self.session.output().len() < before)
    }
}

/// Sends an error to a connection refused at accept and closes it.
pub fn refuse(stream: &mut TcpStream, code: ErrorCode, text: &str) {
    let _ = stream.write(&Message::error(code, text).to_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_counts_from_the_last_byte_taken_while_blocked() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut st = Stall::default();
        // Below the high-water mark: no patience needed.
        st.update(t0, false, false);
        assert_eq!(st.deadline(), None);
        // Blocked: the clock starts, and runs on while nothing is taken.
        st.update(s(1), true, false);
        st.update(s(5), true, false);
        assert_eq!(st.deadline(), Some(s(1) + STALL_LIMIT));
        assert!(!st.expired(s(1) + STALL_LIMIT - Duration::from_millis(1)));
        assert!(st.expired(s(1) + STALL_LIMIT));
        // A byte taken restarts it; unblocked ends it.
        st.update(s(10), true, true);
        assert_eq!(st.deadline(), Some(s(10) + STALL_LIMIT));
        st.update(s(11), false, true);
        assert_eq!(st.deadline(), None);
    }
}
