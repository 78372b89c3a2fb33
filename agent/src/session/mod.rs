//! One RPCAP control connection, server side, as a sans-IO state machine in
//! the manner of quinn-proto: the driver hands in [`Input`]s with the time
//! they happened ([`Session::handle`]), takes the reply bytes
//! ([`Session::output`]) and the [`Command`]s for the capture host, the
//! password checker and the failed-login backoff ([`Session::poll_command`]),
//! and answers the commands that have an answer with [`Input::Answer`]. The
//! session keeps its own timers (authentication timeout, idle timeout, the
//! hold of a failed login's reply): [`Session::poll_timeout`] says when,
//! [`Session::handle_timeout`] fires them. It never touches a socket, a
//! clock or the host.
//!
//! Requests are handled one at a time, in order: while a command's answer
//! is awaited, later requests wait in the codec. The dispatch rules are
//! those of PROTOCOL.md §1.
//!
//! - `command`: inputs, commands, answers.
//! - `auth`: the authentication state.
//! - `capture`: the opened device, the running capture, STARTCAP → [`StartRequest`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use rpcap::bpf::{Insn, Program};
use rpcap::conn::{Codec, Received};
use rpcap::header::{Header, MsgType, VERSION};
use rpcap::log_limit::LogLimit;
use rpcap::msg::{
    Auth, AuthReplyInfo, DecodeError, Message, Sampling, StartCapReply, StartCapReq, Stats,
};
use rpcap::peer_text::PeerText;
use rpcap::ErrorCode;

use crate::auth::Authenticator;
use crate::filter::{self, DataDest};
use crate::iface;
use crate::settings::{CaptureChoice, DecapSpec, Preselect};

mod auth;
mod capture;
mod command;
mod liveness;

use self::auth::AuthState;
pub use self::auth::MAX_AUTH_ATTEMPTS;
use self::capture::{CaptureSlot, Endpoints, Running, Starting};
pub use self::capture::{DataChannel, DecapStart, StartRequest, MAX_SNAPLEN};
pub use self::command::{Answer, Command, HostCommand, HostError, Input, PasswordCheck};
use self::liveness::Liveness;

/// Who opened the control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// We dialled the sensor (ActiveClient).
    Active,
    /// The sensor connected to us.
    Passive,
}

/// The settings one session runs with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub mode: Mode,
    pub null_auth: bool,
    pub preselect: Preselect,
    /// udpstr datagram size; 0 = plain PACKET datagrams.
    pub udpstr_size: usize,
    /// Reported as the STARTCAP reply's bufsize.
    pub ring_size: usize,
    pub local_filter: Option<String>,
    /// `-S`: log the counters on every STATS_REQ.
    pub log_stats: bool,
    /// Password accounts.
    pub auth: Arc<Authenticator>,
    /// The control connection is TLS: TCP data channels are TLS too, UDP is refused.
    pub tls: bool,
    /// How long a passive TCP data channel waits for the client.
    pub data_accept_timeout: Duration,
    /// The ActiveClient line's `capture=` (None: as `Capture` says).
    pub capture: Option<CaptureChoice>,
    /// The peer must authenticate within this time (passive clients).
    pub auth_timeout: Option<Duration>,
    /// An authenticated peer without a capture that sends nothing for this
    /// long is dropped (passive clients).
    pub idle_timeout: Option<Duration>,
    /// `LivenessSecs` (sensors): a capturing sensor that polled STATS at a
    /// steady interval and fell silent is given up (`session/liveness.rs`).
    pub liveness: Option<Duration>,
    /// The slot's name (`HOST:PORT` of its ActiveClient line) for a sensor
    /// we dialled: its log lines and its capture's counters carry it.
    pub slot: Option<String>,
    /// The ActiveClient line's `decap=` (or `--decap`): the capture selects
    /// this tunnel's packets and the sensor gets the frames inside.
    pub decap: Option<DecapSpec>,
}

/// Why a session is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The sensor sent CLOSE: in active mode, do not reconnect to it.
    Closed,
    /// The stream cannot go on (wrong version, oversized message, too many
    /// failed authentications).
    Protocol(String),
    /// A timer of the session ran out (it told the peer which).
    Timeout(&'static str),
}

/// Log lines a peer can cause at will (one per message): a burst, then one
/// a second, the rest counted.
const PEER_LINES: LogLimit = LogLimit::new(10, Duration::from_secs(1));

/// Replies waiting for the peer beyond which the session takes no more of
/// its requests: a peer that pipelines requests and does not read the
/// replies fills its own socket, not our memory. Well above any one reply
/// a reading peer waits for (a FINDALLIF reply is tens of KiB).
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;

/// Texts of errors the sensor may test for.
pub const NO_DEVICE: &str = "No capture device was specified";
pub const NULL_AUTH_REFUSED: &str = "NULL authentication not permitted";
pub const AUTH_FAILED: &str = "Authentication failed";

/// The answer a session waits for, and what it does with it.
#[derive(Debug)]
enum Pending {
    /// FINDALLIF.
    Interfaces,
    /// OPEN of `source` under a preselection: the list first.
    Preselection { source: String },
    /// OPEN of `source`: its link type.
    Linktype { source: String },
    /// The capture is stopping; then `then`.
    Stopped(AfterStop),
    /// STARTCAP: the host starts the capture.
    Started(Box<Starting>),
    /// STARTCAP of a passive TCP data channel: the exclusion refined with
    /// our data port replaces the filter.
    Refined {
        starting: Box<Starting>,
        portdata: u16,
        prefix: Program,
    },
    /// UPDATEFILTER of the running capture.
    FilterUpdated { sensor: Vec<Insn> },
    /// STATS of the running capture.
    Stats,
}

impl Pending {
    /// The request awaited, for logs.
    fn name(&self) -> &'static str {
        match self {
            Pending::Interfaces => "FINDALLIF",
            Pending::Preselection { .. } | Pending::Linktype { .. } => "OPEN",
            Pending::Stopped(_) => "the capture's stop",
            Pending::Started(_) | Pending::Refined { .. } => "STARTCAP",
            Pending::FilterUpdated { .. } => "UPDATEFILTER",
            Pending::Stats => "STATS",
        }
    }
}

/// What follows a capture's stop.
#[derive(Debug)]
enum AfterStop {
    /// Nothing to say (the session ends, or the connection is gone).
    Nothing,
    /// ENDCAP: the reply.
    EndCap,
    /// OPEN of another device succeeded.
    Open { source: String, linktype: i32 },
    /// STARTCAP replaces the running capture.
    Start(StartCapReq),
    /// The capture failed by itself: the peer is told why.
    Failed(String),
    /// A capture just started could not be set up: STARTCAP fails with this
    /// text (its counters are not kept).
    Refused(String),
}

/// One control connection.
pub struct Session {
    cfg: SessionConfig,
    ends: Endpoints,
    /// Framing of requests and buffering of replies (shared with the sensor).
    codec: Codec,
    commands: VecDeque<Command>,
    auth: AuthState,
    capture: CaptureSlot,
    pending: Option<Pending>,
    ended: Option<Ended>,
    /// When the session began (authentication timeout).
    began: Instant,
    /// When the peer last sent something (idle timeout, liveness).
    last_rx: Instant,
    /// The sensor's STATS_REQ rhythm.
    liveness: Liveness,
    /// The time of the input being handled.
    now: Instant,
    /// The log lines the peer's messages cause.
    peer_lines: LogLimit,
    /// Requests of a sensor we refused, why: the driver hands them to the
    /// slot, which logs each cause once ([`Session::take_refusals`]).
    refusals: Vec<String>,
}

impl Session {
    /// A session on a control connection between `local` (us) and `peer`,
    /// opened at `now`.
    pub fn new(cfg: SessionConfig, local: SocketAddr, peer: SocketAddr, now: Instant) -> Session {
        Session {
            ends: Endpoints { local, peer },
            codec: Codec::control(),
            commands: VecDeque::new(),
            auth: AuthState::Required { failures: 0 },
            capture: CaptureSlot::default(),
            pending: None,
            ended: None,
            began: now,
            last_rx: now,
            liveness: Liveness::new(cfg.liveness),
            now,
            peer_lines: PEER_LINES,
            refusals: Vec::new(),
            cfg,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.ends.peer
    }

    /// Who the peer is in log lines: `sensor HOST:PORT` (the slot) or the
    /// passive client's address.
    pub fn who(&self) -> String {
        match &self.cfg.slot {
            Some(slot) => format!("sensor {slot}"),
            None => self.ends.peer.to_string(),
        }
    }

    /// Who the peer is as a `key=value` field: `sensor=HOST:PORT` or
    /// `client=ADDR:PORT` (summary and final counter lines).
    pub fn owner(&self) -> String {
        match &self.cfg.slot {
            Some(slot) => format!("sensor={slot}"),
            None => format!("client={}", self.ends.peer),
        }
    }

    /// The interface of the last successful OPEN.
    pub fn interface(&self) -> Option<&str> {
        self.capture.opened.as_ref().map(|(name, _)| name.as_str())
    }

    /// The requests of a sensor refused since the last call, each with why
    /// (`refused OPEN of eth1: …`). A passive client's refusals are logged
    /// by the session itself.
    pub fn take_refusals(&mut self) -> Vec<String> {
        std::mem::take(&mut self.refusals)
    }

    pub fn authenticated(&self) -> bool {
        self.auth.authenticated()
    }

    pub fn capturing(&self) -> bool {
        self.capture.running.is_some()
    }

    /// Why the session is over, once it is.
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    /// Whether the session takes bytes now: not while an answer is awaited,
    /// a failed login is held or the peer has left more replies unread than
    /// [`OUTPUT_HIGH_WATER`] (the driver leaves them in the socket).
    pub fn reading(&self) -> bool {
        self.ended.is_none()
            && self.pending.is_none()
            && !self.auth.blocks()
            && !self.output_blocked()
    }

    /// Whether the replies the peer left unread hold its requests back.
    pub fn output_blocked(&self) -> bool {
        self.codec.output().len() >= OUTPUT_HIGH_WATER
    }

    /// Bytes to send to the peer (none while a failed login is held).
    pub fn output(&self) -> &[u8] {
        if self.auth.held() {
            return &[];
        }
        self.codec.output()
    }

    /// Writes [`Session::output`] to `w` until done or `w` would block.
    pub fn write_to<W: std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.auth.held() {
            return Ok(());
        }
        self.codec.write_to(w)
    }

    /// Whether more replies wait than a peer that reads would leave: it does not.
    pub fn output_over_limit(&self) -> bool {
        self.codec.over_limit()
    }

    /// Marks `n` bytes of [`Session::output`] as sent.
    pub fn consume_output(&mut self, n: usize) {
        self.codec.consume(n);
    }

    /// A reloaded configuration's timeouts apply to the running session too.
    pub fn set_timeouts(&mut self, auth: Option<Duration>, idle: Option<Duration>) {
        self.cfg.auth_timeout = auth;
        self.cfg.idle_timeout = idle;
    }

    /// The next command for the driver.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Session::handle_timeout`] is due, if a timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended.is_some() {
            return None;
        }
        match &self.auth {
            // Not while we wait for an answer: the sensor's bytes then wait
            // unread in the socket, and the silence would be ours.
            AuthState::Authenticated if self.capturing() => self
                .reading()
                .then(|| self.liveness.deadline(self.last_rx))
                .flatten(),
            // Waiting for our answer (a capture on its way) is not idling.
            AuthState::Authenticated if self.pending.is_some() => None,
            AuthState::Authenticated => self.cfg.idle_timeout.map(|d| self.last_rx + d),
            // A held failure ends at the deadline too: holding must not
            // keep a connection past it.
            AuthState::Held { until, .. } => match (*until, self.auth_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            _ => self.auth_deadline(),
        }
    }

    /// When an unauthenticated peer is dropped: a fixed time after the
    /// connection began, whatever it sent meanwhile (trickled bytes, failed
    /// attempts and their held replies do not move it).
    fn auth_deadline(&self) -> Option<Instant> {
        self.cfg.auth_timeout.map(|d| self.began + d)
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.ended.is_some() || self.poll_timeout().is_none_or(|at| at > now) {
            return;
        }
        if !self.auth.authenticated() && self.auth_deadline().is_some_and(|at| at <= now) {
            // A held failure's reply goes out before the timeout's.
            self.auth = AuthState::Required {
                failures: self.auth.failures(),
            };
            self.send_error(ErrorCode::InitTimeout, "Authentication timeout");
            self.end(Ended::Timeout(
                "did not authenticate in time (AuthTimeoutSecs)",
            ));
            return;
        }
        match self.auth {
            AuthState::Held { failures, .. } => {
                // The held reply goes out, then the requests that came meanwhile.
                if failures >= MAX_AUTH_ATTEMPTS {
                    self.auth = AuthState::Required { failures };
                    self.end(Ended::Protocol(format!(
                        "{failures} failed authentications"
                    )));
                } else {
                    self.auth = AuthState::Required { failures };
                    self.run();
                }
            }
            AuthState::Authenticated if self.capturing() => {
                // Gone, or the path is: nothing reaches it, nothing to say.
                self.end(Ended::Timeout(
                    "the sensor stopped its STATS requests (LivenessSecs)",
                ));
            }
            AuthState::Authenticated => {
                self.send_error(ErrorCode::RuntimeTimeout, "Idle timeout");
                self.end(Ended::Timeout("idle without a capture (IdleTimeoutSecs)"));
            }
            // Only the deadline above times these out.
            AuthState::Required { .. } | AuthState::Checking { .. } => {}
        }
    }

    /// Handles what happened at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = now;
        match input {
            Input::Received(data) => {
                if !data.is_empty() {
                    self.last_rx = now;
                }
                if self.ended.is_some() {
                    return;
                }
                self.codec.feed(data);
                self.run();
            }
            Input::Sent => {
                if self.reading() {
                    self.run();
                }
            }
            Input::Answer(answer) => self.answer(now, answer),
            Input::CaptureFailed(reason) => self.capture_failed(reason),
            Input::Tls => self.cfg.tls = true,
            Input::Shutdown => self.stop_for_good(),
        }
    }

    /// Handles the requests waiting in the codec, until one awaits an answer.
    fn run(&mut self) {
        while self.reading() {
            let Received { header, message } = match self.codec.next() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(too_long) => {
                    // The framing can no longer be trusted: say why and end.
                    let text = too_long.to_string();
                    self.send_error(ErrorCode::WrongMsg, &text);
                    self.end(Ended::Protocol(text));
                    break;
                }
            };
            self.dispatch(header, message);
        }
    }

    fn end(&mut self, why: Ended) {
        self.stop_for_good();
        let held_back = self.peer_lines.take_suppressed();
        if held_back > 0 {
            warn!(
                "{}: {held_back} log lines it caused were suppressed",
                self.ends.peer
            );
        }
        self.ended = Some(why);
    }

    fn send(&mut self, msg: Message) {
        self.codec.send(&msg);
    }

    fn send_error(&mut self, code: ErrorCode, text: &str) {
        debug!(
            "to {}: error {}: {}",
            self.ends.peer,
            code as u16,
            PeerText::new(text)
        );
        self.send(Message::error(code, text));
    }

    /// Refuses a request with `code` and `text` (sent to the peer); `what`
    /// says which request and why, for the log: a sensor's go to its slot
    /// (logged once per cause), a passive client's are logged here (within
    /// the peer's line budget).
    fn refuse(&mut self, code: ErrorCode, text: &str, what: String) {
        self.send_error(code, text);
        if self.cfg.mode == Mode::Active {
            self.refusals.push(what);
        } else if let Some(held_back) = self.peer_lines.admit(self.now) {
            warn!("{}: {what}{held_back}", self.who());
        }
    }

    fn host(&mut self, cmd: HostCommand, then: Option<Pending>) {
        debug_assert!(self.pending.is_none(), "one answer awaited at a time");
        self.commands.push_back(Command::Host(cmd));
        self.pending = then;
    }

    /// Stops the capture, if one runs, because the session is over: the
    /// stop goes out even while another answer is awaited (a host that
    /// answers later), and its own answer is then not awaited.
    fn stop_for_good(&mut self) {
        if !self.capturing() {
            return;
        }
        if self.pending.is_none() {
            return self.stop(AfterStop::Nothing);
        }
        self.capture.running = None;
        self.commands.push_back(Command::Host(HostCommand::Stop));
    }

    /// Stops the capture (running or just started); `then` follows.
    fn stop(&mut self, then: AfterStop) {
        self.capture.running = None;
        self.host(HostCommand::Stop, Some(Pending::Stopped(then)));
    }

    fn dispatch(&mut self, h: Header, decoded: Result<Message, DecodeError>) {
        if h.ver != VERSION {
            let text = format!("protocol version {} is not supported (only 0)", h.ver);
            self.send_error(ErrorCode::WrongVer, &text);
            return self.end(Ended::Protocol(text));
        }
        let kind = h.kind();
        if !self.authenticated() {
            match kind {
                Some(MsgType::AuthReq) => {}
                // A client leaving or complaining is not a request to refuse.
                Some(MsgType::Close) => return self.end(Ended::Closed),
                Some(MsgType::Error) => return self.log_remote_error(decoded),
                _ => {
                    return self.send_error(
                        ErrorCode::WrongMsg,
                        "authentication is required before any other request",
                    )
                }
            }
        }
        if self.authenticated() && kind == Some(MsgType::AuthReq) {
            // Whatever its body: one authentication per session.
            return self.send_error(ErrorCode::WrongMsg, "already authenticated");
        }
        let msg = match decoded {
            Ok(m) => m,
            Err(e) => {
                debug!("from {}: {}", self.ends.peer, PeerText::new(&e.to_string()));
                return self.send_error(e.code(), &e.to_string());
            }
        };
        match msg {
            Message::AuthReq(auth) => self.auth(auth),
            Message::FindAllIfReq => {
                self.host(HostCommand::ListInterfaces, Some(Pending::Interfaces))
            }
            Message::OpenReq { source } => self.open(source),
            Message::StartCapReq(req) => self.start(req),
            Message::UpdateFilterReq { filter } => self.update_filter(filter),
            Message::SetSamplingReq(s) => self.set_sampling(s),
            Message::StatsReq => {
                // Received with the bytes that carried it.
                self.liveness.stats_request(self.last_rx);
                self.stats()
            }
            Message::EndCapReq => self.end_capture(),
            Message::Close => {
                info!("{} closed the session", self.who());
                self.end(Ended::Closed)
            }
            Message::Error { .. } => self.log_remote_error(Ok(msg)),
            other => self.send_error(
                ErrorCode::WrongMsg,
                &format!(
                    "unexpected message {}",
                    rpcap::msg::type_name(other.msg_type() as u8)
                ),
            ),
        }
    }

    /// An ERROR from the peer: a line per message (rate-limited, text cut).
    fn log_remote_error(&mut self, decoded: Result<Message, DecodeError>) {
        let Some(held_back) = self.peer_lines.admit(self.now) else {
            return;
        };
        let peer = self.ends.peer;
        match decoded {
            Ok(Message::Error { code, text }) => {
                warn!(
                    "{peer} reports error {code}: {}{held_back}",
                    PeerText::new(&text)
                )
            }
            _ => warn!("{peer} sent an unreadable error message{held_back}"),
        }
    }

    /// The answer to the awaited command, then the requests that wait.
    fn answer(&mut self, now: Instant, answer: Answer) {
        match (&mut self.auth, answer) {
            (AuthState::Checking { .. }, Answer::PasswordChecked(ok)) => {
                self.password_checked(now, ok)
            }
            (
                AuthState::Held {
                    until: until @ None,
                    ..
                },
                Answer::Hold(delay),
            ) => {
                *until = Some(now + delay);
                debug!(
                    "{}: authentication failed; reply held {:.1} s",
                    self.ends.peer.ip(),
                    delay.as_secs_f64()
                );
            }
            (_, answer) => match self.pending.take() {
                Some(pending) => {
                    // The host's time does not count as the peer's idle time.
                    self.last_rx = now;
                    self.host_answer(pending, answer)
                }
                None => debug!("{}: unexpected answer {}", self.ends.peer, answer.name()),
            },
        }
        if self.reading() {
            self.run();
        }
    }

    fn host_answer(&mut self, pending: Pending, answer: Answer) {
        match (pending, answer) {
            (Pending::Interfaces, Answer::Interfaces(list)) => self.find_all_if(list),
            (Pending::Preselection { source }, Answer::Interfaces(list)) => {
                self.preselected(source, list.unwrap_or_default())
            }
            (Pending::Linktype { source }, Answer::Linktype(result)) => {
                self.linktype(source, result)
            }
            (Pending::Stopped(then), Answer::Stopped(stats)) => self.stopped(then, stats),
            (Pending::Started(starting), Answer::Started(result)) => self.started(starting, result),
            (
                Pending::Refined {
                    starting,
                    portdata,
                    prefix,
                },
                Answer::FilterUpdated(result),
            ) => match result {
                Ok(()) => self.capture_running(*starting, prefix, portdata),
                Err(e) => self.stop(AfterStop::Refused(e.to_string())),
            },
            (Pending::FilterUpdated { sensor }, Answer::FilterUpdated(result)) => match result {
                Ok(()) => {
                    self.capture.sensor_filter = Some(sensor);
                    self.send(Message::UpdateFilterReply)
                }
                Err(e) => {
                    let text = e.to_string();
                    let what = format!("refused UPDATEFILTER: {text}");
                    self.refuse(ErrorCode::UpdateFilter, &text, what)
                }
            },
            (Pending::Stats, Answer::Stats(stats)) => self.reply_stats(stats),
            (pending, answer) => {
                warn!(
                    "{}: answer {} does not fit the request awaited ({})",
                    self.ends.peer,
                    answer.name(),
                    pending.name()
                );
                self.pending = Some(pending);
            }
        }
    }

    fn auth(&mut self, auth: Auth) {
        let failures = self.auth.failures();
        match auth {
            Auth::Null if self.cfg.null_auth => {
                info!("{}: authenticated (NULL)", self.who());
                self.auth_succeeded();
            }
            Auth::Null => {
                self.refuse(
                    ErrorCode::AuthFailed,
                    NULL_AUTH_REFUSED,
                    "NULL authentication refused".into(),
                );
                self.auth_failed(failures + 1);
            }
            Auth::Password { user, password } => {
                debug!(
                    "{}: checking the password of {:?}",
                    self.ends.peer,
                    PeerText::bytes(&user)
                );
                self.auth = AuthState::Checking {
                    user: user.clone(),
                    failures,
                };
                self.commands
                    .push_back(Command::CheckPassword(PasswordCheck {
                        auth: self.cfg.auth.clone(),
                        user,
                        password,
                    }));
            }
        }
    }

    /// Answers the password AUTH_REQ after its check.
    fn password_checked(&mut self, now: Instant, ok: bool) {
        let AuthState::Checking { user, failures } =
            std::mem::replace(&mut self.auth, AuthState::Required { failures: 0 })
        else {
            return;
        };
        // The check's time does not count as the peer's idle time.
        self.last_rx = now;
        let name = PeerText::bytes(&user);
        if ok {
            info!("{}: authenticated as {name:?}", self.who());
            self.auth_succeeded();
        } else {
            // The same text whether the user exists or not.
            self.refuse(
                ErrorCode::AuthFailed,
                AUTH_FAILED,
                format!("password authentication failed for {name:?}"),
            );
            self.auth_failed(failures + 1);
        }
    }

    fn auth_succeeded(&mut self) {
        self.auth = AuthState::Authenticated;
        self.send(Message::AuthReply(Some(AuthReplyInfo::native())));
        if self.cfg.mode == Mode::Passive {
            self.commands.push_back(Command::AuthSucceeded);
        }
    }

    /// Failure number `failures`. A passive client's reply is held (the
    /// driver says how long); a sensor we dialled is answered at once.
    fn auth_failed(&mut self, failures: u32) {
        if self.cfg.mode == Mode::Passive {
            self.auth = AuthState::Held {
                until: None,
                failures,
            };
            self.commands.push_back(Command::HoldFailedAuth);
            return;
        }
        self.auth = AuthState::Required { failures };
        if failures >= MAX_AUTH_ATTEMPTS {
            self.end(Ended::Protocol(format!(
                "{failures} failed authentications"
            )));
        }
    }

    fn find_all_if(&mut self, list: Result<Vec<rpcap::msg::Interface>, String>) {
        match list {
            Err(e) => {
                let text = format!("cannot list interfaces: {e}");
                self.refuse(
                    ErrorCode::FindAllIf,
                    &text,
                    format!("refused FINDALLIF: {text}"),
                )
            }
            Ok(list) if list.is_empty() => {
                let text = "no interfaces found";
                self.refuse(
                    ErrorCode::NoRemoteIf,
                    text,
                    format!("refused FINDALLIF: {text}"),
                )
            }
            Ok(list) => {
                let list = iface::arrange(list, &self.cfg.preselect);
                self.send(Message::FindAllIfReply(list))
            }
        }
    }

    fn open(&mut self, source: String) {
        // CVE-2019-15164: a URL would make us open captures elsewhere.
        if source.contains("://") {
            let what = format!("refused OPEN of remote source {:?}", PeerText::new(&source));
            return self.refuse(
                ErrorCode::Open,
                &format!("'{source}': only local interface names can be opened"),
                what,
            );
        }
        if self.cfg.preselect.is_set() {
            return self.host(
                HostCommand::ListInterfaces,
                Some(Pending::Preselection { source }),
            );
        }
        self.read_linktype(source)
    }

    fn read_linktype(&mut self, source: String) {
        // The ActiveClient line's `capture=afxdp` (`Capture` is the host's).
        if source == iface::ANY && self.cfg.capture == Some(CaptureChoice::AfXdp) {
            let why = iface::any_with_afxdp();
            let what = format!("refused OPEN of {}: {why}", PeerText::new(&source));
            return self.refuse(ErrorCode::Open, &format!("'{source}': {why}"), what);
        }
        self.host(
            HostCommand::ReadLinktype(source.clone()),
            Some(Pending::Linktype { source }),
        )
    }

    fn preselected(&mut self, source: String, list: Vec<rpcap::msg::Interface>) {
        match iface::preselected(&list, &self.cfg.preselect) {
            Some(i) if i.name == source => self.read_linktype(source),
            Some(i) => {
                let text = format!("can only open preselected interface '{}'", i.name);
                let what = format!("refused OPEN of {}: {text}", PeerText::new(&source));
                self.refuse(ErrorCode::Open, &text, what)
            }
            None => {
                let text = format!(
                    "no interface matches the preselection ({})",
                    self.cfg.preselect
                );
                let what = format!("refused OPEN of {}: {text}", PeerText::new(&source));
                self.refuse(ErrorCode::Open, &text, what)
            }
        }
    }

    fn linktype(&mut self, source: String, result: Result<i32, String>) {
        match result {
            // A device opened anew: a capture of the previous one ends.
            Ok(linktype) if self.capturing() => self.stop(AfterStop::Open { source, linktype }),
            Ok(linktype) => self.opened(source, linktype),
            Err(e) => {
                let what = format!("refused OPEN of {}: {e}", PeerText::new(&source));
                self.refuse(ErrorCode::Open, &format!("'{source}': {e}"), what)
            }
        }
    }

    fn opened(&mut self, source: String, linktype: i32) {
        if let Some(held_back) = self.peer_lines.admit(self.now) {
            info!(
                "{}: opened {} (DLT {linktype}){held_back}",
                self.who(),
                PeerText::new(&source)
            );
        }
        self.capture.opened = Some((source, linktype));
        // Decapsulated, the sensor gets the inner Ethernet frames whatever
        // the interface's link type (the outer filter is compiled for it).
        let linktype = match self.cfg.decap {
            Some(_) => crate::iface::DLT_EN10MB,
            None => linktype,
        };
        self.send(Message::OpenReply { linktype, tzoff: 0 })
    }

    fn stopped(&mut self, then: AfterStop, stats: Stats) {
        if !matches!(then, AfterStop::Refused(_)) {
            self.capture.last_stats = stats;
        }
        match then {
            AfterStop::Nothing => {}
            AfterStop::EndCap => {
                info!("{}: capture ended", self.who());
                self.send(Message::EndCapReply)
            }
            AfterStop::Open { source, linktype } => self.opened(source, linktype),
            AfterStop::Start(req) => self.start(req),
            AfterStop::Failed(reason) => {
                self.send_error(ErrorCode::ReadEx, &format!("capture stopped: {reason}"))
            }
            AfterStop::Refused(text) => {
                let what = format!("refused STARTCAP: {text}");
                self.refuse(ErrorCode::StartCapture, &text, what)
            }
        }
    }

    fn start(&mut self, req: StartCapReq) {
        let Some(opened) = self.capture.opened.clone() else {
            let what = format!("refused STARTCAP: {NO_DEVICE}");
            return self.refuse(ErrorCode::StartCapture, NO_DEVICE, what);
        };
        // Never leak a capture: a second STARTCAP replaces the first.
        if self.capturing() {
            return self.stop(AfterStop::Start(req));
        }
        let sampling = self.capture.sampling;
        match self.ends.start_request(&self.cfg, opened, sampling, req) {
            Ok((start, starting)) => self.host(
                HostCommand::StartCapture(Box::new(start)),
                Some(Pending::Started(Box::new(starting))),
            ),
            Err(text) => {
                let what = format!("refused STARTCAP: {text}");
                self.refuse(ErrorCode::StartCapture, &text, what)
            }
        }
    }

    fn started(&mut self, starting: Box<Starting>, result: Result<u16, HostError>) {
        let portdata = match result {
            Ok(p) => p,
            Err(e) => {
                let text = e.to_string();
                let what = format!(
                    "capture on {} failed: {text}",
                    PeerText::new(&starting.ifname)
                );
                return self.refuse(ErrorCode::StartCapture, &text, what);
            }
        };
        info!(
            "{}: capture on {} started, data {}",
            self.who(),
            PeerText::new(&starting.ifname),
            starting.data
        );
        let DataChannel::TcpListen { peer, .. } = starting.data else {
            let prefix = starting.prefix.clone();
            return self.capture_running(*starting, prefix, portdata);
        };
        // The data connection is (peer, any port) ↔ (us, portdata).
        let dest = DataDest::Tcp(SocketAddr::new(peer, portdata));
        match self
            .ends
            .build_filter(&self.cfg, starting.linktype, dest, &starting.sensor)
        {
            Ok((combined, prefix)) => self.host(
                HostCommand::UpdateFilter(combined),
                Some(Pending::Refined {
                    starting,
                    portdata,
                    prefix,
                }),
            ),
            Err(text) => self.stop(AfterStop::Refused(text)),
        }
    }

    fn capture_running(&mut self, starting: Starting, prefix: Program, portdata: u16) {
        self.capture.running = Some(Running { prefix });
        self.capture.sensor_filter = Some(starting.sensor);
        let bufsize = i32::try_from(self.cfg.ring_size).unwrap_or(i32::MAX);
        self.send(Message::StartCapReply(StartCapReply { bufsize, portdata }))
    }

    fn update_filter(&mut self, sensor: Vec<Insn>) {
        let Some(run) = &self.capture.running else {
            self.capture.sensor_filter = Some(sensor);
            return self.send(Message::UpdateFilterReply);
        };
        match filter::combine(&run.prefix, &sensor) {
            Ok(combined) => self.host(
                HostCommand::UpdateFilter(combined),
                Some(Pending::FilterUpdated { sensor }),
            ),
            Err(e) => {
                let text = e.to_string();
                let what = format!("refused UPDATEFILTER: {text}");
                self.refuse(ErrorCode::UpdateFilter, &text, what)
            }
        }
    }

    fn set_sampling(&mut self, s: Sampling) {
        if s.method > 2 {
            let text = format!("sampling method {} is not supported (0, 1 or 2)", s.method);
            let what = format!("refused SETSAMPLING: {text}");
            return self.refuse(ErrorCode::SetSampling, &text, what);
        }
        self.capture.sampling = s;
        if self.capturing() {
            self.host(HostCommand::SetSampling(s), None);
        }
        self.send(Message::SetSamplingReply)
    }

    fn stats(&mut self) {
        if self.capturing() {
            return self.host(HostCommand::ReadStats, Some(Pending::Stats));
        }
        self.reply_stats(self.capture.last_stats)
    }

    fn reply_stats(&mut self, stats: Stats) {
        if self.cfg.log_stats {
            info!(
                "{}: stats: ifrecv {} ifdrop {} krnldrop {} svrcapt {}",
                self.who(),
                stats.ifrecv,
                stats.ifdrop,
                stats.krnldrop,
                stats.svrcapt
            );
        }
        self.send(Message::StatsReply(stats))
    }

    fn end_capture(&mut self) {
        if !self.capturing() {
            return self.send_error(ErrorCode::EndCapture, "no capture is running");
        }
        self.stop(AfterStop::EndCap)
    }

    /// The host found the capture stopped by itself. While another answer
    /// is awaited the failure is left for the driver's next check (the host
    /// reports it until the capture is stopped).
    fn capture_failed(&mut self, reason: String) {
        if !self.capturing() || self.pending.is_some() || self.ended.is_some() {
            return;
        }
        warn!("{}: capture failed: {reason}", self.who());
        self.stop(AfterStop::Failed(reason))
    }
}

#[cfg(test)]
mod tests;
