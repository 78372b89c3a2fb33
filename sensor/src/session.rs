//! One agent session, client side of RPCAP, as a sans-IO state machine: bytes
//! from the agent go in ([`Session::receive`]), bytes for the agent come out
//! ([`Session::write_to`]), and what the driver must act on comes out as
//! [`Event`]s. No sockets, no clock of its own (the driver passes `now`).
//!
//! The sequence: AUTH → FINDALLIF → choose the interface → OPEN → (driver
//! compiles the filter and opens a data port) → STARTCAP → capturing, with
//! STATS_REQ (liveness) and UPDATEFILTER at the driver's request.
//!
//! Transient causes are retried here, after [`RETRY_STEPS`] of backoff
//! ([`Session::poll_timeout`] / [`Session::handle_timeout`]), instead of
//! ending the session (RPCAP's CLOSE carries no reason, and an agent may not
//! dial again): no matching interface (FINDALLIF again), OPEN refused
//! (FINDALLIF again), STARTCAP refused or the capture failed while running
//! (OPEN again: the interface may come back), and what the driver reports
//! ([`Session::retry_later`], e.g. no free data port). Whenever the session
//! gives up, the agent gets an ERROR saying why before the CLOSE.
//!
//! Framing and output buffering are [`rpcap::conn::Codec`]'s, shared with the
//! agent's server session.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::choose::Choice;
use rpcap::bpf::Insn;
use rpcap::conn::Codec;
use rpcap::header::{ErrorCode, MsgType};
use rpcap::msg::{startcap_flags, Auth, Interface, Message, Sampling, StartCapReq, Stats};

/// What a session asks of the agent.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub auth: Auth,
    pub choice: Choice,
    pub snaplen: u32,
    pub read_timeout_ms: u32,
    pub promisc: bool,
    /// SETSAMPLING sent right before STARTCAP, so the capture samples from
    /// its first packet (None: no SETSAMPLING, the agent keeps every packet).
    pub sampling: Option<Sampling>,
    /// STARTCAP's INBOUND/OUTBOUND flags.
    pub direction: Direction,
}

/// Which frames the agent captures (libpcap's `pcap_setdirection`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// Received frames only (STARTCAP INBOUND).
    In,
    /// Sent frames only (STARTCAP OUTBOUND).
    Out,
    /// Both (no direction flag, as libpcap's clients send).
    #[default]
    Inout,
}

impl Direction {
    /// The STARTCAP flags for this direction.
    pub fn startcap_flags(self) -> u16 {
        match self {
            Direction::In => startcap_flags::INBOUND,
            Direction::Out => startcap_flags::OUTBOUND,
            Direction::Inout => 0,
        }
    }
}

/// How the capture's data reaches the sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataTransport {
    /// UDP to this sensor port.
    Udp { port: u16 },
    /// TCP; the sensor listens on `port` and the agent connects (SERVEROPEN).
    TcpSensorListens { port: u16 },
    /// TCP; the agent listens and returns its port in the STARTCAP reply.
    TcpAgentListens,
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// OPEN succeeded: compile the filter for `linktype`, open a data port,
    /// then call [`Session::start_capture`].
    Opened {
        iface: Interface,
        linktype: i32,
    },
    /// STARTCAP succeeded; `reply_port` is the agent's TCP data port when it listens.
    Started {
        reply_port: u16,
        bufsize: i32,
    },
    /// The agent's counters.
    Stats(Stats),
    FilterUpdated,
    /// A non-fatal ERROR from the agent while capturing (e.g. a refused filter update).
    AgentError {
        code: u16,
        text: String,
    },
    /// The capture cannot run now (`why`); the session asks again in `after`.
    /// `stopped`: a running capture ended (the driver keeps its output for
    /// the next STARTCAP).
    Retrying {
        why: String,
        after: Duration,
        stopped: bool,
    },
}

/// Waits between retries of a transient failure: quick at first (an
/// interface re-created within a second resumes within a second), then
/// every 5 s for as long as the agent stays connected.
pub const RETRY_STEPS: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
];

/// The least time an agent gets to answer STARTCAP, whatever the reply
/// timeout: it opens the capture first, and an AF_XDP attach on a loaded
/// host takes seconds (4 s seen with a 3 s reply timeout). Requests that
/// answer from memory keep the short timeout.
pub const STARTCAP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which request a retry sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// The interface list again (the wanted interface may appear).
    FindAllIf,
    /// OPEN of the chosen interface again, then STARTCAP.
    Open,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the agent refused {what}: {} (error {code})", rpcap::peer_text::PeerText::new(.text))]
    Refused {
        what: &'static str,
        code: u16,
        text: String,
    },
    #[error("the agent closed the session")]
    ClosedByAgent,
    #[error("no reply to {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Auth,
    FindAllIf,
    Open,
    /// OPEN done; waiting for the driver to start the capture.
    Ready,
    StartCap,
    Capturing,
    /// Waiting to retry with `Retry` at the instant.
    Waiting(Instant, Retry),
    /// The sensor stops: ENDCAP sent, CLOSE follows its reply.
    Ending,
    Closed,
}

/// The client side of one RPCAP control connection.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    phase: Phase,
    codec: Codec,
    events: VecDeque<Event>,
    /// Requests sent and not answered yet, oldest first, with when they were sent.
    pending: VecDeque<(MsgType, Instant)>,
    iface: Option<Interface>,
    /// A filter change that came while STARTCAP was being prepared or
    /// answered: the STARTCAP carried the old program, so it follows as
    /// UPDATEFILTER as soon as the capture runs.
    filter_after_start: Option<Vec<Insn>>,
    /// Retries since the capture last ran (the backoff step).
    retries: usize,
}

impl Session {
    /// A session that has queued its AUTH request.
    pub fn new(cfg: SessionConfig, now: Instant) -> Session {
        let mut s = Session {
            cfg,
            phase: Phase::Auth,
            codec: Codec::control(),
            events: VecDeque::new(),
            pending: VecDeque::new(),
            iface: None,
            filter_after_start: None,
            retries: 0,
        };
        let auth = s.cfg.auth.clone();
        s.send(Message::AuthReq(auth), now);
        s
    }

    /// Writes the bytes waiting for the agent to `w` (see [`Codec::write_to`]).
    pub fn write_to<W: std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.codec.write_to(w)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn is_capturing(&self) -> bool {
        self.phase == Phase::Capturing
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The session's state, as the metrics name it
    /// ([`crate::metrics::SESSION_STATES`]).
    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Auth => "auth",
            Phase::FindAllIf => "findallif",
            Phase::Open => "open",
            Phase::Ready => "ready",
            Phase::StartCap => "startcap",
            Phase::Capturing => "capturing",
            Phase::Waiting(..) => "waiting",
            Phase::Ending => "ending",
            Phase::Closed => "closed",
        }
    }

    /// Bytes received from the agent. On error the session is closed and any
    /// ERROR/CLOSE for the agent is already queued for [`Session::write_to`].
    pub fn receive(&mut self, data: &[u8], now: Instant) -> Result<(), SessionError> {
        if self.phase == Phase::Closed {
            return Ok(());
        }
        self.codec.feed(data);
        loop {
            let msg = match self.codec.next() {
                Ok(None) => return Ok(()),
                Ok(Some(r)) => r.message.map_err(|e| (e.code(), e.to_string())),
                Err(e) => Err((ErrorCode::Netw, e.to_string())),
            };
            let result = match msg {
                Ok(m) => self.handle(m, now),
                Err((code, text)) => Err(self.protocol_error(code, text)),
            };
            if let Err(e) = result {
                self.phase = Phase::Closed;
                return Err(e);
            }
        }
    }

    /// Sends STARTCAP with the driver's data transport and compiled filter.
    pub fn start_capture(&mut self, transport: DataTransport, filter: Vec<Insn>, now: Instant) {
        if self.phase != Phase::Ready {
            return;
        }
        let mut flags = self.cfg.direction.startcap_flags();
        if self.cfg.promisc {
            flags |= startcap_flags::PROMISC;
        }
        let portdata = match transport {
            DataTransport::Udp { port } => {
                flags |= startcap_flags::DGRAM;
                port
            }
            DataTransport::TcpSensorListens { port } => {
                flags |= startcap_flags::SERVEROPEN;
                port
            }
            DataTransport::TcpAgentListens => 0,
        };
        let req = StartCapReq {
            snaplen: self.cfg.snaplen,
            read_timeout_ms: self.cfg.read_timeout_ms,
            flags,
            portdata,
            filter,
        };
        self.phase = Phase::StartCap;
        if let Some(sampling) = self.cfg.sampling {
            // Replies come in order: a refusal fails the session before STARTCAP's reply.
            self.send(Message::SetSamplingReq(sampling), now);
        }
        self.send(Message::StartCapReq(req), now);
    }

    /// Pushes a new filter to a running capture.
    pub fn update_filter(&mut self, filter: Vec<Insn>, now: Instant) {
        match self.phase {
            Phase::Capturing => self.send(Message::UpdateFilterReq { filter }, now),
            Phase::Ready | Phase::StartCap => self.filter_after_start = Some(filter),
            // Before OPEN the driver compiles the current rules anyway.
            _ => {}
        }
    }

    /// Asks for the agent's counters, unless a STATS request is still unanswered.
    pub fn request_stats(&mut self, now: Instant) {
        if self.phase == Phase::Capturing
            && !self.pending.iter().any(|(t, _)| *t == MsgType::StatsReq)
        {
            self.send(Message::StatsReq, now);
        }
    }

    /// Fails the session if the oldest unanswered request is older than
    /// `timeout` — or, for STARTCAP, than [`STARTCAP_TIMEOUT`] if longer.
    pub fn check_timeout(&mut self, now: Instant, timeout: Duration) -> Result<(), SessionError> {
        match self.pending.front() {
            Some((t, sent)) if self.phase != Phase::Closed => {
                let timeout = match t {
                    MsgType::StartCapReq => timeout.max(STARTCAP_TIMEOUT),
                    _ => timeout,
                };
                if now.duration_since(*sent) <= timeout {
                    return Ok(());
                }
                let e = SessionError::Timeout {
                    what: request_name(*t),
                    after: timeout,
                };
                self.abort(Some(ErrorCode::RuntimeTimeout), &e.to_string());
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// When [`Session::handle_timeout`] has a retry to send.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting(at, _) => Some(at),
            _ => None,
        }
    }

    /// Sends the retry that is due at `now`, if one is.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Phase::Waiting(at, retry) = self.phase else {
            return;
        };
        if now < at {
            return;
        }
        match (retry, self.iface.as_ref()) {
            (Retry::Open, Some(iface)) => {
                let source = iface.name.clone();
                self.phase = Phase::Open;
                self.send(Message::OpenReq { source }, now);
            }
            _ => {
                self.phase = Phase::FindAllIf;
                self.send(Message::FindAllIfReq, now);
            }
        }
    }

    /// The driver cannot start the capture now (`why`, e.g. no free data
    /// port): OPEN and STARTCAP again after the backoff.
    pub fn retry_later(&mut self, why: String, now: Instant) {
        if self.phase == Phase::Ready {
            self.wait(Retry::Open, why, false, now);
        }
    }

    /// Waits for the next backoff step, then sends `retry`.
    fn wait(&mut self, retry: Retry, why: String, stopped: bool, now: Instant) {
        let after = RETRY_STEPS[self.retries.min(RETRY_STEPS.len() - 1)];
        self.retries += 1;
        self.filter_after_start = None;
        self.phase = Phase::Waiting(now + after, retry);
        self.events.push_back(Event::Retrying {
            why,
            after,
            stopped,
        });
    }

    /// The sensor stops: ENDCAP for a capture that runs (or is being
    /// started), and CLOSE once the agent has answered it (the capture's
    /// last data is in flight before the reply); without a capture, CLOSE
    /// now. Called again before the reply came (the driver's wait is over),
    /// CLOSE now. [`Session::is_closed`] says when CLOSE is queued.
    pub fn stop(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::Capturing | Phase::StartCap => {
                self.send(Message::EndCapReq, now);
                self.phase = Phase::Ending;
            }
            _ => self.abort(None, ""),
        }
    }

    /// Ends the session from the sensor's side: an ERROR with `text` (if
    /// `code` is given), then CLOSE.
    pub fn abort(&mut self, code: Option<ErrorCode>, text: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        if let Some(code) = code {
            self.codec.send(&Message::error(code, text));
        }
        self.codec.send(&Message::Close);
        self.phase = Phase::Closed;
    }

    fn send(&mut self, msg: Message, now: Instant) {
        let t = msg.msg_type();
        self.codec.send(&msg);
        if !matches!(t, MsgType::Close | MsgType::Error) {
            self.pending.push_back((t, now));
        }
    }

    fn protocol_error(&mut self, code: ErrorCode, text: String) -> SessionError {
        self.abort(Some(code), &text);
        SessionError::Protocol(text)
    }

    fn handle(&mut self, msg: Message, now: Instant) -> Result<(), SessionError> {
        if self.phase == Phase::Ending {
            return self.handle_ending(msg);
        }
        let expected = self.pending.front().map(|(t, _)| *t);
        match msg {
            Message::Close => return Err(SessionError::ClosedByAgent),
            Message::Error { code, text } => {
                // An ERROR answers the oldest request, unless it is the
                // agent's own news (a capture that stopped by itself).
                let news = self.phase == Phase::Capturing && code == ErrorCode::ReadEx as u16;
                if !news {
                    self.pending.pop_front();
                }
                if news {
                    let why = format!("the agent's capture stopped: {text}");
                    self.wait(Retry::Open, why, true, now);
                    return Ok(());
                }
                let what = expected.map_or("nothing", request_name);
                match (self.phase, expected) {
                    // A refused filter update or a STATS the agent cannot
                    // answer: the capture (or the wait for it) goes on.
                    (Phase::Capturing, _)
                    | (_, Some(MsgType::StatsReq | MsgType::UpdateFilterReq)) => {
                        self.events.push_back(Event::AgentError { code, text });
                    }
                    (Phase::Open, Some(MsgType::OpenReq)) => {
                        let why = SessionError::Refused { what, code, text }.to_string();
                        self.wait(Retry::FindAllIf, why, false, now)
                    }
                    (Phase::StartCap, Some(MsgType::StartCapReq)) => {
                        let why = SessionError::Refused { what, code, text }.to_string();
                        self.wait(Retry::Open, why, false, now)
                    }
                    _ => {
                        let e = SessionError::Refused { what, code, text };
                        self.abort(Some(refused_code(expected)), &e.to_string());
                        return Err(e);
                    }
                }
                return Ok(());
            }
            _ => {}
        }
        let reply_to = reply_request(msg.msg_type());
        if reply_to.is_none() || reply_to != expected {
            let text = format!(
                "unexpected {} (waiting for the reply to {})",
                rpcap::msg::type_name(msg.msg_type() as u8),
                expected.map_or("nothing", request_name)
            );
            return Err(self.protocol_error(ErrorCode::WrongMsg, text));
        }
        self.pending.pop_front();
        match msg {
            Message::AuthReply(_) => {
                self.phase = Phase::FindAllIf;
                self.send(Message::FindAllIfReq, now);
            }
            Message::FindAllIfReply(list) => {
                let iface = match self.cfg.choice.pick(&list) {
                    Ok(i) => i.clone(),
                    Err(text) => {
                        // It may appear (created, renamed, addressed): ask again.
                        self.wait(Retry::FindAllIf, text, false, now);
                        return Ok(());
                    }
                };
                self.phase = Phase::Open;
                self.send(
                    Message::OpenReq {
                        source: iface.name.clone(),
                    },
                    now,
                );
                self.iface = Some(iface);
            }
            Message::OpenReply { linktype, .. } => {
                self.phase = Phase::Ready;
                let iface = self.iface.clone().unwrap_or_else(|| Interface {
                    name: String::new(),
                    description: String::new(),
                    flags: 0,
                    addrs: Vec::new(),
                });
                self.events.push_back(Event::Opened { iface, linktype });
            }
            Message::StartCapReply(r) => {
                self.phase = Phase::Capturing;
                self.retries = 0;
                self.events.push_back(Event::Started {
                    reply_port: r.portdata,
                    bufsize: r.bufsize,
                });
                if let Some(filter) = self.filter_after_start.take() {
                    self.send(Message::UpdateFilterReq { filter }, now);
                }
            }
            Message::StatsReply(s) => self.events.push_back(Event::Stats(s)),
            Message::UpdateFilterReply => self.events.push_back(Event::FilterUpdated),
            // Replies we never ask for were refused above.
            _ => {}
        }
        Ok(())
    }
}

impl Session {
    /// While stopping, replies (and ERRORs answering requests) are taken in
    /// order and dropped; the one to ENDCAP lets CLOSE go.
    fn handle_ending(&mut self, msg: Message) -> Result<(), SessionError> {
        let answers = match &msg {
            Message::Close => return Err(SessionError::ClosedByAgent),
            // The agent's news of a capture that stopped answers nothing.
            Message::Error { code, .. } => *code != ErrorCode::ReadEx as u16,
            m => reply_request(m.msg_type()).is_some(),
        };
        if answers && self.pending.pop_front().map(|(t, _)| t) == Some(MsgType::EndCapReq) {
            self.abort(None, "");
        }
        Ok(())
    }
}

/// The code of the ERROR the sensor sends when it gives up because the
/// agent refused `request`.
fn refused_code(request: Option<MsgType>) -> ErrorCode {
    match request {
        Some(MsgType::AuthReq) => ErrorCode::Auth,
        Some(MsgType::SetSamplingReq) => ErrorCode::SetSampling,
        Some(MsgType::FindAllIfReq) => ErrorCode::FindAllIf,
        _ => ErrorCode::WrongMsg,
    }
}

/// The request a reply type answers.
fn reply_request(t: MsgType) -> Option<MsgType> {
    Some(match t {
        MsgType::AuthReply => MsgType::AuthReq,
        MsgType::FindAllIfReply => MsgType::FindAllIfReq,
        MsgType::OpenReply => MsgType::OpenReq,
        MsgType::StartCapReply => MsgType::StartCapReq,
        MsgType::StatsReply => MsgType::StatsReq,
        MsgType::UpdateFilterReply => MsgType::UpdateFilterReq,
        MsgType::EndCapReply => MsgType::EndCapReq,
        MsgType::SetSamplingReply => MsgType::SetSamplingReq,
        _ => return None,
    })
}

fn request_name(t: MsgType) -> &'static str {
    match t {
        MsgType::AuthReq => "AUTH",
        MsgType::FindAllIfReq => "FINDALLIF",
        MsgType::OpenReq => "OPEN",
        MsgType::StartCapReq => "STARTCAP",
        MsgType::StatsReq => "STATS",
        MsgType::UpdateFilterReq => "UPDATEFILTER",
        MsgType::EndCapReq => "ENDCAP",
        MsgType::SetSamplingReq => "SETSAMPLING",
        _ => "a request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcap::header::Header;
    use rpcap::msg::{if_flags, StartCapReply};

    fn cfg() -> SessionConfig {
        SessionConfig {
            auth: Auth::Null,
            choice: Choice::default(),
            snaplen: 262_144,
            read_timeout_ms: 100,
            promisc: true,
            sampling: None,
            direction: Direction::Inout,
        }
    }

    /// Decodes every whole message in `bytes`.
    fn decode_all(bytes: &[u8]) -> Vec<Message> {
        let mut c = Codec::control();
        c.feed(bytes);
        let mut v = Vec::new();
        while let Some(r) = c.next().unwrap() {
            v.push(r.message.unwrap());
        }
        v
    }

    fn take(s: &mut Session) -> Vec<Message> {
        let mut out = Vec::new();
        s.write_to(&mut out).unwrap();
        decode_all(&out)
    }

    fn ifaces() -> Vec<Interface> {
        vec![
            Interface {
                name: "lo".into(),
                description: String::new(),
                flags: if_flags::LOOPBACK | if_flags::UP,
                addrs: vec![],
            },
            Interface {
                name: "eth0".into(),
                description: "x ;preselected".into(),
                flags: if_flags::UP,
                addrs: vec![],
            },
        ]
    }

    /// Drives a session to Capturing; returns it.
    fn capturing(now: Instant) -> Session {
        let mut s = Session::new(cfg(), now);
        assert_eq!(take(&mut s), vec![Message::AuthReq(Auth::Null)]);
        s.receive(&Message::AuthReply(None).to_bytes(), now)
            .unwrap();
        assert_eq!(take(&mut s), vec![Message::FindAllIfReq]);
        // Delivered one byte at a time: framing must not depend on chunking.
        for b in Message::FindAllIfReply(ifaces()).to_bytes() {
            s.receive(&[b], now).unwrap();
        }
        assert_eq!(
            take(&mut s),
            vec![Message::OpenReq {
                source: "eth0".into()
            }]
        );
        s.receive(
            &Message::OpenReply {
                linktype: 1,
                tzoff: 0,
            }
            .to_bytes(),
            now,
        )
        .unwrap();
        match s.poll_event() {
            Some(Event::Opened { iface, linktype }) => {
                assert_eq!(iface.name, "eth0");
                assert_eq!(linktype, 1);
            }
            e => panic!("{e:?}"),
        }
        let filter = vec![Insn::new(0x06, 0, 0, 262_144)];
        s.start_capture(DataTransport::Udp { port: 2010 }, filter.clone(), now);
        let msgs = take(&mut s);
        assert_eq!(
            msgs,
            vec![Message::StartCapReq(StartCapReq {
                snaplen: 262_144,
                read_timeout_ms: 100,
                flags: startcap_flags::PROMISC | startcap_flags::DGRAM,
                portdata: 2010,
                filter,
            })]
        );
        let reply = Message::StartCapReply(StartCapReply {
            bufsize: 1000,
            portdata: 0,
        });
        s.receive(&reply.to_bytes(), now).unwrap();
        assert_eq!(
            s.poll_event(),
            Some(Event::Started {
                reply_port: 0,
                bufsize: 1000
            })
        );
        assert!(s.is_capturing());
        s
    }

    #[test]
    fn full_setup_then_stats_and_filter_update() {
        let now = Instant::now();
        let mut s = capturing(now);
        s.request_stats(now);
        s.request_stats(now); // not twice while one is outstanding
        assert_eq!(take(&mut s), vec![Message::StatsReq]);
        let st = Stats {
            ifrecv: 5,
            ifdrop: 1,
            krnldrop: 2,
            svrcapt: 4,
        };
        s.receive(&Message::StatsReply(st).to_bytes(), now).unwrap();
        assert_eq!(s.poll_event(), Some(Event::Stats(st)));
        let f = vec![Insn::new(0x06, 0, 0, 0)];
        s.update_filter(f.clone(), now);
        assert_eq!(take(&mut s), vec![Message::UpdateFilterReq { filter: f }]);
        s.receive(
            &Message::error(ErrorCode::UpdateFilter, "nope").to_bytes(),
            now,
        )
        .unwrap();
        assert_eq!(
            s.poll_event(),
            Some(Event::AgentError {
                code: 7,
                text: "nope".into()
            })
        );
        assert!(s.is_capturing());
    }

    #[test]
    fn filter_change_during_startcap_follows_as_updatefilter() {
        let now = Instant::now();
        let mut s = opened(cfg(), now);
        let old = vec![Insn::new(0x06, 0, 0, 262_144)];
        s.start_capture(DataTransport::Udp { port: 2010 }, old, now);
        take(&mut s);
        // The rules change while the STARTCAP reply is on its way.
        let new = vec![Insn::new(0x06, 0, 0, 0)];
        s.update_filter(new.clone(), now);
        assert!(take(&mut s).is_empty(), "nothing before the capture runs");
        let reply = Message::StartCapReply(StartCapReply {
            bufsize: 1000,
            portdata: 0,
        });
        s.receive(&reply.to_bytes(), now).unwrap();
        assert_eq!(take(&mut s), vec![Message::UpdateFilterReq { filter: new }]);
    }

    #[test]
    fn stats_timeout_closes() {
        let now = Instant::now();
        let mut s = capturing(now);
        let t = Duration::from_secs(3);
        s.request_stats(now);
        assert!(s.check_timeout(now + Duration::from_secs(2), t).is_ok());
        let e = s
            .check_timeout(now + Duration::from_secs(4), t)
            .unwrap_err();
        assert!(
            matches!(e, SessionError::Timeout { what: "STATS", .. }),
            "{e}"
        );
        assert!(s.is_closed());
    }

    #[test]
    fn startcap_gets_longer_than_the_reply_timeout() {
        let now = Instant::now();
        let mut s = opened(cfg(), now);
        let filter = vec![Insn::new(0x06, 0, 0, 262_144)];
        s.start_capture(DataTransport::Udp { port: 2010 }, filter, now);
        let t = Duration::from_secs(3);
        assert!(s.check_timeout(now + Duration::from_secs(5), t).is_ok());
        let e = s
            .check_timeout(now + STARTCAP_TIMEOUT + Duration::from_secs(1), t)
            .unwrap_err();
        assert!(
            matches!(
                e,
                SessionError::Timeout {
                    what: "STARTCAP",
                    ..
                }
            ),
            "{e}"
        );
    }

    /// Drives a session with `cfg` up to Ready (OPEN answered).
    fn opened(cfg: SessionConfig, now: Instant) -> Session {
        let mut s = Session::new(cfg, now);
        s.receive(&Message::AuthReply(None).to_bytes(), now)
            .unwrap();
        s.receive(&Message::FindAllIfReply(ifaces()).to_bytes(), now)
            .unwrap();
        s.receive(
            &Message::OpenReply {
                linktype: 1,
                tzoff: 0,
            }
            .to_bytes(),
            now,
        )
        .unwrap();
        take(&mut s);
        assert!(matches!(s.poll_event(), Some(Event::Opened { .. })));
        s
    }

    #[test]
    fn sampling_goes_right_before_startcap_and_its_reply_is_accepted() {
        let now = Instant::now();
        let sampling = Sampling {
            method: 1,
            value: 5,
        };
        let mut s = opened(
            SessionConfig {
                sampling: Some(sampling),
                ..cfg()
            },
            now,
        );
        let filter = vec![Insn::new(0x06, 0, 0, 262_144)];
        s.start_capture(DataTransport::Udp { port: 2010 }, filter, now);
        let msgs = take(&mut s);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert_eq!(msgs[0], Message::SetSamplingReq(sampling));
        assert!(matches!(msgs[1], Message::StartCapReq(_)), "{msgs:?}");
        s.receive(&Message::SetSamplingReply.to_bytes(), now)
            .unwrap();
        assert!(!s.is_capturing());
        let reply = Message::StartCapReply(StartCapReply {
            bufsize: 1,
            portdata: 0,
        });
        s.receive(&reply.to_bytes(), now).unwrap();
        assert!(s.is_capturing());
    }

    #[test]
    fn refused_sampling_ends_the_session() {
        let now = Instant::now();
        let mut s = opened(
            SessionConfig {
                sampling: Some(Sampling {
                    method: 2,
                    value: 1,
                }),
                ..cfg()
            },
            now,
        );
        let filter = vec![Insn::new(0x06, 0, 0, 262_144)];
        s.start_capture(DataTransport::Udp { port: 2010 }, filter, now);
        take(&mut s);
        let err = s
            .receive(
                &Message::error(ErrorCode::SetSampling, "no").to_bytes(),
                now,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                SessionError::Refused {
                    what: "SETSAMPLING",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn stopping_sends_endcap_then_close_after_its_reply() {
        // Issue 14 item 10: SIGTERM used to drop the connection unannounced.
        let now = Instant::now();
        let mut s = capturing(now);
        take(&mut s);
        s.request_stats(now);
        assert_eq!(take(&mut s), vec![Message::StatsReq]);
        s.stop(now);
        assert_eq!(take(&mut s), vec![Message::EndCapReq]);
        assert!(!s.is_closed(), "CLOSE waits for ENDCAP's reply");
        // The STATS reply in flight is taken, then ENDCAP's lets CLOSE go.
        s.receive(&Message::StatsReply(Stats::default()).to_bytes(), now)
            .unwrap();
        assert!(take(&mut s).is_empty());
        s.receive(&Message::EndCapReply.to_bytes(), now).unwrap();
        assert_eq!(take(&mut s), vec![Message::Close]);
        assert!(s.is_closed());
        assert_eq!(s.poll_event(), None);

        // An agent that does not answer: stop again (the wait is over), CLOSE now.
        let mut s = capturing(now);
        take(&mut s);
        s.stop(now);
        assert_eq!(take(&mut s), vec![Message::EndCapReq]);
        s.stop(now);
        assert_eq!(take(&mut s), vec![Message::Close]);

        // No capture yet: CLOSE alone.
        let mut s = Session::new(cfg(), now);
        take(&mut s);
        s.stop(now);
        assert_eq!(take(&mut s), vec![Message::Close]);
        assert!(s.is_closed());
    }

    #[test]
    fn direction_goes_in_startcap_flags() {
        let now = Instant::now();
        for (direction, want) in [
            (Direction::In, startcap_flags::INBOUND),
            (Direction::Out, startcap_flags::OUTBOUND),
            (Direction::Inout, 0),
        ] {
            let mut s = opened(SessionConfig { direction, ..cfg() }, now);
            let filter = vec![Insn::new(0x06, 0, 0, 262_144)];
            s.start_capture(DataTransport::Udp { port: 2010 }, filter, now);
            match &take(&mut s)[..] {
                [Message::StartCapReq(r)] => {
                    let dir = r.flags & (startcap_flags::INBOUND | startcap_flags::OUTBOUND);
                    assert_eq!(dir, want, "{direction:?}");
                    assert_ne!(r.flags & startcap_flags::PROMISC, 0);
                }
                m => panic!("{m:?}"),
            }
        }
    }

    #[test]
    fn refused_auth_is_fatal() {
        let now = Instant::now();
        let mut s = Session::new(cfg(), now);
        take(&mut s);
        let e = s
            .receive(
                &Message::error(ErrorCode::AuthFailed, "NULL authentication not permitted")
                    .to_bytes(),
                now,
            )
            .unwrap_err();
        assert!(e.to_string().contains("AUTH"), "{e}");
        assert!(e.to_string().contains("NULL authentication"), "{e}");
        assert!(s.is_closed());
        // The agent learns why the session ends, then CLOSE.
        match &take(&mut s)[..] {
            [Message::Error { code: 3, text }, Message::Close] => {
                assert_eq!(text, &e.to_string())
            }
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn garbage_gets_error_and_close() {
        let now = Instant::now();
        let mut s = Session::new(cfg(), now);
        take(&mut s);
        // Version 5 header.
        let mut h = Header::new(MsgType::AuthReply, 0, 0).to_bytes();
        h[0] = 5;
        assert!(matches!(s.receive(&h, now), Err(SessionError::Protocol(_))));
        let msgs = take(&mut s);
        assert!(
            matches!(msgs[0], Message::Error { code: 17, .. }),
            "{msgs:?}"
        );
        assert_eq!(msgs[1], Message::Close);
        // A reply nobody asked for.
        let mut s = Session::new(cfg(), now);
        take(&mut s);
        let e = s.receive(&Message::StatsReply(Stats::default()).to_bytes(), now);
        assert!(matches!(e, Err(SessionError::Protocol(_))));
        let msgs = take(&mut s);
        assert!(
            matches!(msgs[0], Message::Error { code: 16, .. }),
            "{msgs:?}"
        );
        // Oversized plen.
        let mut s = Session::new(cfg(), now);
        take(&mut s);
        let h = Header::new(MsgType::AuthReply, 0, u32::MAX).to_bytes();
        assert!(s.receive(&h, now).is_err());
        assert!(s.is_closed());
    }

    #[test]
    fn no_matching_interface_asks_again_until_it_appears() {
        let now = Instant::now();
        let mut c = cfg();
        c.choice.ifname = Some("eth9".into());
        let mut s = Session::new(c, now);
        s.receive(&Message::AuthReply(None).to_bytes(), now)
            .unwrap();
        take(&mut s);
        // Before issue 12 the session sent CLOSE here, and xrpcapd never
        // dialled again: forwarding ended for good.
        s.receive(&Message::FindAllIfReply(ifaces()).to_bytes(), now)
            .unwrap();
        assert!(take(&mut s).is_empty(), "no CLOSE");
        assert!(matches!(s.poll_event(), Some(Event::Retrying { .. })));
        let mut at = now;
        for step in RETRY_STEPS.iter().chain(&[RETRY_STEPS[3]]) {
            assert_eq!(s.poll_timeout(), Some(at + *step));
            s.handle_timeout(at + *step - Duration::from_millis(1));
            assert!(take(&mut s).is_empty(), "not before the step");
            at += *step;
            s.handle_timeout(at);
            assert_eq!(take(&mut s), vec![Message::FindAllIfReq]);
            s.receive(&Message::FindAllIfReply(ifaces()).to_bytes(), at)
                .unwrap();
        }
        // eth9 appears.
        s.handle_timeout(at + RETRY_STEPS[3]);
        take(&mut s);
        let mut list = ifaces();
        list[1].name = "eth9".into();
        s.receive(&Message::FindAllIfReply(list).to_bytes(), at)
            .unwrap();
        assert_eq!(
            take(&mut s),
            vec![Message::OpenReq {
                source: "eth9".into()
            }]
        );
    }

    #[test]
    fn a_capture_that_stops_by_itself_is_opened_and_started_again() {
        let now = Instant::now();
        let mut s = capturing(now);
        s.request_stats(now);
        take(&mut s);
        // The agent's news (the interface vanished), not an answer to STATS.
        s.receive(
            &Message::error(
                ErrorCode::ReadEx,
                "capture stopped: interface eth0 vanished",
            )
            .to_bytes(),
            now,
        )
        .unwrap();
        assert!(matches!(
            s.poll_event(),
            Some(Event::Retrying { stopped: true, .. })
        ));
        assert!(!s.is_capturing());
        s.receive(&Message::StatsReply(Stats::default()).to_bytes(), now)
            .unwrap();
        assert!(matches!(s.poll_event(), Some(Event::Stats(_))));
        let t = s.poll_timeout().unwrap();
        s.handle_timeout(t);
        assert_eq!(
            take(&mut s),
            vec![Message::OpenReq {
                source: "eth0".into()
            }]
        );
        // Still gone: OPEN refused, the list again after the next step.
        s.receive(
            &Message::error(ErrorCode::Open, "no such device").to_bytes(),
            t,
        )
        .unwrap();
        assert!(matches!(s.poll_event(), Some(Event::Retrying { .. })));
        let t = s.poll_timeout().unwrap();
        s.handle_timeout(t);
        assert_eq!(take(&mut s), vec![Message::FindAllIfReq]);
        s.receive(&Message::FindAllIfReply(ifaces()).to_bytes(), t)
            .unwrap();
        take(&mut s);
        s.receive(
            &Message::OpenReply {
                linktype: 1,
                tzoff: 0,
            }
            .to_bytes(),
            t,
        )
        .unwrap();
        assert!(matches!(s.poll_event(), Some(Event::Opened { .. })));
        // STARTCAP refused (the device is not up yet): OPEN again.
        s.start_capture(
            DataTransport::Udp { port: 2010 },
            vec![Insn::new(0x06, 0, 0, 1)],
            t,
        );
        take(&mut s);
        s.receive(
            &Message::error(ErrorCode::StartCapture, "down").to_bytes(),
            t,
        )
        .unwrap();
        assert!(matches!(s.poll_event(), Some(Event::Retrying { .. })));
        let t = s.poll_timeout().unwrap();
        s.handle_timeout(t);
        assert!(matches!(take(&mut s)[..], [Message::OpenReq { .. }]));
    }

    #[test]
    fn the_driver_can_defer_the_start() {
        let now = Instant::now();
        let mut s = opened(cfg(), now);
        s.retry_later("sensor: no free UDP port in 2003-2003".into(), now);
        assert!(take(&mut s).is_empty(), "no CLOSE");
        assert!(matches!(s.poll_event(), Some(Event::Retrying { .. })));
        s.handle_timeout(now + RETRY_STEPS[0]);
        assert!(matches!(take(&mut s)[..], [Message::OpenReq { .. }]));
    }

    #[test]
    fn giving_up_says_why_before_the_close() {
        let now = Instant::now();
        let mut s = capturing(now);
        s.request_stats(now);
        take(&mut s);
        let e = s
            .check_timeout(now + Duration::from_secs(9), Duration::from_secs(3))
            .unwrap_err();
        match &take(&mut s)[..] {
            [Message::Error { code: 14, text }, Message::Close] => {
                assert_eq!(text, &e.to_string())
            }
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn tcp_transports_set_flags() {
        let now = Instant::now();
        for (t, flag, port) in [
            (
                DataTransport::TcpSensorListens { port: 4000 },
                startcap_flags::SERVEROPEN,
                4000,
            ),
            (DataTransport::TcpAgentListens, 0, 0),
        ] {
            let mut c = cfg();
            c.promisc = false;
            let mut s = opened(c, now);
            s.start_capture(t, vec![Insn::new(0x06, 0, 0, 1)], now);
            match &take(&mut s)[0] {
                Message::StartCapReq(r) => {
                    assert_eq!(r.flags, flag);
                    assert_eq!(r.portdata, port);
                }
                m => panic!("{m:?}"),
            }
        }
    }
}
