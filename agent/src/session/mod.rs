//! One RPCAP control connection as a sans-IO state machine: bytes from the
//! sensor go in ([`Session::receive`]), reply bytes come out
//! ([`Session::output`]), and captures are started, retuned and stopped
//! through a [`CaptureHost`] — real datapath workers in the daemon, a fake in
//! tests. The dispatch rules are those of PROTOCOL.md §1.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use rpcap::bpf::Insn;
use rpcap::header::{Header, MsgType, MAX_CONTROL_PLEN, VERSION};
use rpcap::msg::{
    startcap_flags, Auth, AuthReplyInfo, DecodeError, Interface, Message, Sampling, StartCapReply,
    StartCapReq, Stats,
};
use rpcap::stream::StreamDecoder;
use rpcap::ErrorCode;

use crate::auth::Authenticator;
use crate::config::{CaptureChoice, Preselect};
use crate::filter::{self, canonical, DataDest, OwnTraffic};
use crate::iface;

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
}

/// How the captured packets reach the sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataChannel {
    UdpStr {
        dest: SocketAddr,
        size: usize,
    },
    PlainUdp {
        dest: SocketAddr,
    },
    /// The host connects a TCP data connection to `dest` (active mode, SERVEROPEN).
    TcpConnect {
        dest: SocketAddr,
    },
    /// Passive mode: the host listens on an ephemeral port (reported by
    /// [`CaptureHost::data_port`]) and accepts one connection from `peer`
    /// within `timeout`.
    TcpListen {
        peer: IpAddr,
        timeout: Duration,
    },
}

/// A capture the session asks its host to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub ifname: String,
    pub linktype: i32,
    pub snaplen: u32,
    pub promisc: bool,
    pub read_timeout: Duration,
    /// Own-traffic exclusion AND local filter AND the sensor's filter.
    pub filter: Vec<Insn>,
    pub sampling: Sampling,
    pub data: DataChannel,
    /// TLS on the TCP data channel (the daemon is the TLS server).
    pub tls: bool,
    /// Our own connections (already excluded by `filter`; AF_XDP also
    /// leaves them to the host's stack).
    pub own: OwnTraffic,
    /// The session's capture source choice (ActiveClient `capture=`).
    pub capture: Option<CaptureChoice>,
}

/// What a session needs from the machine: interfaces and captures.
pub trait CaptureHost {
    type Capture;
    fn interfaces(&mut self) -> io::Result<Vec<Interface>>;
    fn linktype(&mut self, ifname: &str) -> io::Result<i32>;
    fn start(&mut self, req: StartRequest) -> Result<Self::Capture, String>;
    fn update_filter(&mut self, cap: &mut Self::Capture, filter: Vec<Insn>) -> Result<(), String>;
    fn set_sampling(&mut self, cap: &mut Self::Capture, sampling: Sampling);
    fn stats(&mut self, cap: &Self::Capture) -> Stats;
    /// Why the capture stopped by itself, if it did.
    fn failure(&mut self, cap: &Self::Capture) -> Option<String>;
    /// Stops the capture and returns its final counters.
    fn stop(&mut self, cap: Self::Capture) -> Stats;
    /// The port of a [`DataChannel::TcpListen`] data channel (0 for others),
    /// sent to the client in the STARTCAP reply.
    fn data_port(&self, _cap: &Self::Capture) -> u16 {
        0
    }
    /// A reloaded configuration applies to the captures started from now on.
    fn reconfigure(&mut self, _cfg: &crate::config::Config) {}
}

/// Why a session is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The sensor sent CLOSE: in active mode, do not reconnect to it.
    Closed,
    /// The stream cannot go on (wrong version, oversized message).
    Protocol(String),
}

/// Largest snaplen honoured (what clients send at most).
pub const MAX_SNAPLEN: u32 = 262_144;
/// Flush interval when the client asks for a read timeout of 0.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(1000);
/// Texts of errors the sensor may test for.
pub const NO_DEVICE: &str = "No capture device was specified";
pub const NULL_AUTH_REFUSED: &str = "NULL authentication not permitted";
pub const AUTH_FAILED: &str = "Authentication failed";
/// Failed authentications after which a session ends.
pub const MAX_AUTH_ATTEMPTS: u32 = 3;

struct Running<C> {
    cap: C,
    /// Exclusion + local filter compiled for this capture, reused by UPDATEFILTER.
    prefix: Vec<Insn>,
}

/// One control connection.
pub struct Session<C> {
    cfg: SessionConfig,
    local: SocketAddr,
    peer: SocketAddr,
    decoder: StreamDecoder,
    out: Vec<u8>,
    authenticated: bool,
    /// The interface of the last successful OPEN and its DLT.
    opened: Option<(String, i32)>,
    running: Option<Running<C>>,
    /// Counters saved when the last capture stopped.
    last_stats: Stats,
    sampling: Sampling,
    /// The sensor's last filter (kept when no capture runs).
    sensor_filter: Option<Vec<Insn>>,
    ended: Option<Ended>,
    /// An authentication failed: no further request is handled until
    /// [`Session::resume`] (the connection holds the reply for a while).
    paused: bool,
    auth_failures: u32,
    /// Password checks are left to the caller ([`Session::defer_auth`]).
    defer_auth: bool,
    /// A password check the caller has not taken yet: (user, password).
    auth_request: Option<(Vec<u8>, Vec<u8>)>,
    /// A password check of this user is under way: paused until
    /// [`Session::auth_verified`].
    verifying: Option<Vec<u8>>,
}

impl<C> Session<C> {
    /// A session on a control connection between `local` (us) and `peer`.
    pub fn new(cfg: SessionConfig, local: SocketAddr, peer: SocketAddr) -> Session<C> {
        Session {
            cfg,
            local,
            peer,
            decoder: StreamDecoder::new(MAX_CONTROL_PLEN),
            out: Vec::new(),
            authenticated: false,
            opened: None,
            running: None,
            last_stats: Stats::default(),
            sampling: Sampling {
                method: 0,
                value: 0,
            },
            sensor_filter: None,
            ended: None,
            paused: false,
            auth_failures: 0,
            defer_auth: false,
            auth_request: None,
            verifying: None,
        }
    }

    /// Password checks are made by the caller, off the thread that runs the
    /// session (they take tens of ms): a password AUTH_REQ pauses the session
    /// and leaves (user, password) to [`Session::take_auth_request`]; the
    /// answer comes back through [`Session::auth_verified`].
    pub fn defer_auth(&mut self) {
        self.defer_auth = true;
    }

    /// The password check to make, once: the accounts of this session, the
    /// user and the password.
    pub fn take_auth_request(&mut self) -> Option<(Arc<Authenticator>, Vec<u8>, Vec<u8>)> {
        let (user, password) = self.auth_request.take()?;
        Some((self.cfg.auth.clone(), user, password))
    }

    /// Whether a password check is under way.
    pub fn verifying(&self) -> bool {
        self.verifying.is_some()
    }

    /// The answer of the deferred password check: on success the session
    /// goes on with the requests that came meanwhile; on failure it stays
    /// paused like after any failed authentication.
    pub fn auth_verified<H: CaptureHost<Capture = C>>(&mut self, ok: bool, host: &mut H) {
        let Some(user) = self.verifying.take() else {
            return;
        };
        self.paused = false;
        self.auth_request = None;
        self.password_result(&user, ok, host);
        if !self.paused {
            self.receive(&[], host);
        }
    }

    /// The connection turned out to be TLS (known from its first byte):
    /// TCP data channels are then TLS too, and UDP data is refused.
    pub fn set_tls(&mut self, tls: bool) {
        self.cfg.tls = tls;
    }

    /// Whether the last request was a failed authentication: requests after
    /// it wait (in the decoder) for [`Session::resume`].
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Handles the requests that arrived during a pause.
    pub fn resume<H: CaptureHost<Capture = C>>(&mut self, host: &mut H) {
        self.paused = false;
        self.receive(&[], host);
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    pub fn capturing(&self) -> bool {
        self.running.is_some()
    }

    /// Why the session is over, once it is.
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    /// Bytes waiting to be sent to the sensor.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Marks `n` bytes of [`Session::output`] as sent.
    pub fn consume_output(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// All pending output, taken.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Processes bytes received from the sensor.
    pub fn receive<H: CaptureHost<Capture = C>>(&mut self, data: &[u8], host: &mut H) {
        if self.ended.is_some() {
            return;
        }
        self.decoder.feed(data);
        while self.ended.is_none() && !self.paused {
            let (header, decoded) = match self.decoder.next() {
                Ok(Some((h, payload))) => (h, Message::decode(&h, payload)),
                Ok(None) => break,
                Err(too_long) => {
                    // The framing can no longer be trusted: say why and end.
                    let text = too_long.to_string();
                    self.send_error(ErrorCode::WrongMsg, &text);
                    self.end(Ended::Protocol(text), host);
                    break;
                }
            };
            self.handle(header, decoded, host);
        }
    }

    /// Checks the running capture for a failure of its own (interface gone,
    /// data connection closed); reports it to the sensor and ends the capture.
    /// Returns whether it failed.
    pub fn poll_capture<H: CaptureHost<Capture = C>>(&mut self, host: &mut H) -> bool {
        let Some(run) = &self.running else {
            return false;
        };
        let Some(reason) = host.failure(&run.cap) else {
            return false;
        };
        warn!("capture for {} failed: {reason}", self.peer);
        self.stop_capture(host);
        self.send_error(ErrorCode::ReadEx, &format!("capture stopped: {reason}"));
        true
    }

    /// The connection is gone or the daemon stops: end any capture.
    pub fn shutdown<H: CaptureHost<Capture = C>>(&mut self, host: &mut H) {
        self.stop_capture(host);
    }

    fn end<H: CaptureHost<Capture = C>>(&mut self, why: Ended, host: &mut H) {
        self.stop_capture(host);
        self.ended = Some(why);
    }

    fn send(&mut self, msg: Message) {
        msg.encode(&mut self.out);
    }

    fn send_error(&mut self, code: ErrorCode, text: &str) {
        debug!("to {}: error {code:?}: {text}", self.peer);
        self.send(Message::error(code, text));
    }

    fn stop_capture<H: CaptureHost<Capture = C>>(&mut self, host: &mut H) {
        if let Some(run) = self.running.take() {
            self.last_stats = host.stop(run.cap);
        }
    }

    fn handle<H: CaptureHost<Capture = C>>(
        &mut self,
        h: Header,
        decoded: Result<Message, DecodeError>,
        host: &mut H,
    ) {
        if h.ver != VERSION {
            let text = format!("protocol version {} is not supported (only 0)", h.ver);
            self.send_error(ErrorCode::WrongVer, &text);
            self.end(Ended::Protocol(text), host);
            return;
        }
        let kind = h.kind();
        if !self.authenticated {
            match kind {
                Some(MsgType::AuthReq) => {}
                // A client leaving or complaining is not a request to refuse.
                Some(MsgType::Close) => return self.end(Ended::Closed, host),
                Some(MsgType::Error) => return self.log_remote_error(decoded),
                _ => {
                    return self.send_error(
                        ErrorCode::WrongMsg,
                        "authentication is required before any other request",
                    )
                }
            }
        }
        if self.authenticated && kind == Some(MsgType::AuthReq) {
            // Whatever its body: one authentication per session.
            return self.send_error(ErrorCode::WrongMsg, "already authenticated");
        }
        let msg = match decoded {
            Ok(m) => m,
            Err(e) => {
                debug!("from {}: {e}", self.peer);
                return self.send_error(e.code(), &e.to_string());
            }
        };
        match msg {
            Message::AuthReq(auth) => self.auth(auth, host),
            Message::FindAllIfReq => self.find_all_if(host),
            Message::OpenReq { source } => self.open(&source, host),
            Message::StartCapReq(req) => self.start(req, host),
            Message::UpdateFilterReq { filter } => self.update_filter(filter, host),
            Message::SetSamplingReq(s) => self.set_sampling(s, host),
            Message::StatsReq => self.stats(host),
            Message::EndCapReq => self.end_capture(host),
            Message::Close => {
                info!("{} closed the session", self.peer);
                self.end(Ended::Closed, host)
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

    fn log_remote_error(&self, decoded: Result<Message, DecodeError>) {
        match decoded {
            Ok(Message::Error { code, text }) => {
                warn!("{} reports error {code}: {text}", self.peer)
            }
            _ => warn!("{} sent an unreadable error message", self.peer),
        }
    }

    fn auth<H: CaptureHost<Capture = C>>(&mut self, auth: Auth, host: &mut H) {
        match auth {
            Auth::Null if self.cfg.null_auth => {
                info!("{}: authenticated (NULL)", self.peer);
                self.auth_succeeded();
            }
            Auth::Null => {
                warn!("{}: NULL authentication refused", self.peer);
                self.send_error(ErrorCode::AuthFailed, NULL_AUTH_REFUSED);
                self.auth_failed(host);
            }
            Auth::Password { user, password } if self.defer_auth => {
                debug!(
                    "{}: checking the password of {:?}",
                    self.peer,
                    String::from_utf8_lossy(&user)
                );
                self.verifying = Some(user.clone());
                self.auth_request = Some((user, password));
                self.paused = true;
            }
            Auth::Password { user, password } => {
                let ok = self.cfg.auth.verify(&user, &password);
                self.password_result(&user, ok, host);
            }
        }
    }

    /// Answers the password AUTH_REQ of `user` after its check.
    fn password_result<H: CaptureHost<Capture = C>>(
        &mut self,
        user: &[u8],
        ok: bool,
        host: &mut H,
    ) {
        let name = String::from_utf8_lossy(user);
        if ok {
            info!("{}: authenticated as {name:?}", self.peer);
            self.auth_succeeded();
        } else {
            // The same text whether the user exists or not.
            warn!("{}: password authentication failed for {name:?}", self.peer);
            self.send_error(ErrorCode::AuthFailed, AUTH_FAILED);
            self.auth_failed(host);
        }
    }

    fn auth_succeeded(&mut self) {
        self.authenticated = true;
        self.send(Message::AuthReply(Some(AuthReplyInfo::native())));
    }

    fn auth_failed<H: CaptureHost<Capture = C>>(&mut self, host: &mut H) {
        self.auth_failures += 1;
        self.paused = true;
        if self.auth_failures >= MAX_AUTH_ATTEMPTS {
            let text = format!("{} failed authentications", self.auth_failures);
            self.end(Ended::Protocol(text), host);
        }
    }

    fn find_all_if<H: CaptureHost<Capture = C>>(&mut self, host: &mut H) {
        match host.interfaces() {
            Err(e) => self.send_error(
                ErrorCode::FindAllIf,
                &format!("cannot list interfaces: {e}"),
            ),
            Ok(list) if list.is_empty() => {
                self.send_error(ErrorCode::NoRemoteIf, "no interfaces found")
            }
            Ok(list) => {
                let list = iface::arrange(list, &self.cfg.preselect);
                self.send(Message::FindAllIfReply(list))
            }
        }
    }

    fn open<H: CaptureHost<Capture = C>>(&mut self, source: &str, host: &mut H) {
        // CVE-2019-15164: a URL would make us open captures elsewhere.
        if source.contains("://") {
            warn!("{}: refused OPEN of remote source {source:?}", self.peer);
            return self.send_error(
                ErrorCode::Open,
                &format!("'{source}': only local interface names can be opened"),
            );
        }
        if self.cfg.preselect.is_set() {
            let list = host.interfaces().unwrap_or_default();
            match iface::preselected(&list, &self.cfg.preselect) {
                Some(i) if i.name == source => {}
                Some(i) => {
                    let text = format!("can only open preselected interface '{}'", i.name);
                    return self.send_error(ErrorCode::Open, &text);
                }
                None => {
                    let text = format!(
                        "no interface matches the preselection ({})",
                        self.cfg.preselect
                    );
                    return self.send_error(ErrorCode::Open, &text);
                }
            }
        }
        match host.linktype(source) {
            Ok(linktype) => {
                // A device opened anew: a capture of the previous one ends.
                self.stop_capture(host);
                self.opened = Some((source.to_string(), linktype));
                info!("{}: opened {source} (DLT {linktype})", self.peer);
                self.send(Message::OpenReply { linktype, tzoff: 0 })
            }
            Err(e) => self.send_error(ErrorCode::Open, &format!("'{source}': {e}")),
        }
    }

    /// Where the data goes for STARTCAP `req`, or the error text.
    fn data_channel(&self, req: &StartCapReq) -> Result<DataChannel, String> {
        let dest = SocketAddr::new(canonical(self.peer.ip()), req.portdata);
        if req.flags & startcap_flags::DGRAM != 0 {
            if self.cfg.tls {
                return Err(
                    "UDP data cannot be protected by TLS: use TCP data with rpcaps://".into(),
                );
            }
            if req.portdata == 0 {
                return Err("UDP data requested without a data port".into());
            }
            return Ok(match self.cfg.udpstr_size {
                0 => DataChannel::PlainUdp { dest },
                size => DataChannel::UdpStr { dest, size },
            });
        }
        if self.cfg.mode == Mode::Active || req.flags & startcap_flags::SERVEROPEN != 0 {
            if req.portdata == 0 {
                return Err("TCP data channel requested without a data port".into());
            }
            return Ok(DataChannel::TcpConnect { dest });
        }
        Ok(DataChannel::TcpListen {
            peer: canonical(self.peer.ip()),
            timeout: self.cfg.data_accept_timeout,
        })
    }

    fn start<H: CaptureHost<Capture = C>>(&mut self, req: StartCapReq, host: &mut H) {
        let Some((ifname, linktype)) = self.opened.clone() else {
            return self.send_error(ErrorCode::StartCapture, NO_DEVICE);
        };
        // Never leak a capture: a second STARTCAP replaces the first.
        self.stop_capture(host);
        let data = match self.data_channel(&req) {
            Ok(d) => d,
            Err(text) => return self.send_error(ErrorCode::StartCapture, &text),
        };
        let data_dest = match &data {
            DataChannel::UdpStr { dest, .. } | DataChannel::PlainUdp { dest } => {
                DataDest::Udp(*dest)
            }
            DataChannel::TcpConnect { dest } => DataDest::Tcp(*dest),
            // Our port is known once the host listens: refined below.
            DataChannel::TcpListen { peer, .. } => DataDest::Tcp(SocketAddr::new(*peer, 0)),
        };
        let (combined, prefix) = match self.build_filter(linktype, data_dest, &req.filter) {
            Ok(b) => b,
            Err(text) => return self.send_error(ErrorCode::StartCapture, &text),
        };
        let snaplen = match req.snaplen {
            0 => MAX_SNAPLEN,
            n => n.min(MAX_SNAPLEN),
        };
        let read_timeout = match req.read_timeout_ms {
            0 => DEFAULT_READ_TIMEOUT,
            ms => Duration::from_millis(ms.into()),
        };
        let start = StartRequest {
            ifname: ifname.clone(),
            linktype,
            snaplen,
            promisc: req.flags & startcap_flags::PROMISC != 0,
            read_timeout,
            filter: combined,
            sampling: self.sampling,
            data: data.clone(),
            tls: self.cfg.tls,
            own: self.own_traffic(data_dest),
            capture: self.cfg.capture,
        };
        match host.start(start) {
            Ok(mut cap) => {
                info!("{}: capture on {ifname} started, data {data:?}", self.peer);
                let portdata = host.data_port(&cap);
                let mut prefix = prefix;
                if let DataChannel::TcpListen { peer, .. } = data {
                    // The data connection is (peer, any port) ↔ (us, portdata).
                    let dest = DataDest::Tcp(SocketAddr::new(peer, portdata));
                    let refined =
                        self.build_filter(linktype, dest, &req.filter)
                            .and_then(|(combined, p)| {
                                host.update_filter(&mut cap, combined)?;
                                Ok(p)
                            });
                    match refined {
                        Ok(p) => prefix = p,
                        Err(text) => {
                            host.stop(cap);
                            return self.send_error(ErrorCode::StartCapture, &text);
                        }
                    }
                }
                self.running = Some(Running { cap, prefix });
                self.sensor_filter = Some(req.filter);
                let bufsize = i32::try_from(self.cfg.ring_size).unwrap_or(i32::MAX);
                self.send(Message::StartCapReply(StartCapReply { bufsize, portdata }))
            }
            Err(text) => {
                warn!("{}: capture on {ifname} failed: {text}", self.peer);
                self.send_error(ErrorCode::StartCapture, &text)
            }
        }
    }

    /// Our control connection and the data channel `data`.
    fn own_traffic(&self, data: DataDest) -> OwnTraffic {
        OwnTraffic {
            control_local: self.local,
            control_peer: self.peer,
            data,
        }
    }

    /// The own-traffic exclusion and local filter for `data` (the prefix),
    /// and the prefix combined with the sensor's filter.
    fn build_filter(
        &self,
        linktype: i32,
        data: DataDest,
        sensor: &[Insn],
    ) -> Result<(Vec<Insn>, Vec<Insn>), String> {
        filter::prefix(
            linktype,
            &self.own_traffic(data),
            self.cfg.local_filter.as_deref(),
        )
        .and_then(|prefix| Ok((filter::combine(&prefix, sensor)?, prefix)))
        .map_err(|e| e.to_string())
    }

    fn update_filter<H: CaptureHost<Capture = C>>(&mut self, sensor: Vec<Insn>, host: &mut H) {
        if let Some(run) = &mut self.running {
            let result = filter::combine(&run.prefix, &sensor)
                .map_err(|e| e.to_string())
                .and_then(|combined| host.update_filter(&mut run.cap, combined));
            if let Err(text) = result {
                return self.send_error(ErrorCode::UpdateFilter, &text);
            }
        }
        self.sensor_filter = Some(sensor);
        self.send(Message::UpdateFilterReply)
    }

    fn set_sampling<H: CaptureHost<Capture = C>>(&mut self, s: Sampling, host: &mut H) {
        if s.method > 2 {
            let text = format!("sampling method {} is not supported (0, 1 or 2)", s.method);
            return self.send_error(ErrorCode::SetSampling, &text);
        }
        self.sampling = s;
        if let Some(run) = &mut self.running {
            host.set_sampling(&mut run.cap, s);
        }
        self.send(Message::SetSamplingReply)
    }

    fn stats<H: CaptureHost<Capture = C>>(&mut self, host: &mut H) {
        let stats = match &self.running {
            Some(run) => host.stats(&run.cap),
            None => self.last_stats,
        };
        if self.cfg.log_stats {
            info!(
                "{}: stats: ifrecv {} ifdrop {} krnldrop {} svrcapt {}",
                self.peer, stats.ifrecv, stats.ifdrop, stats.krnldrop, stats.svrcapt
            );
        }
        self.send(Message::StatsReply(stats))
    }

    fn end_capture<H: CaptureHost<Capture = C>>(&mut self, host: &mut H) {
        if self.running.is_none() {
            return self.send_error(ErrorCode::EndCapture, "no capture is running");
        }
        self.stop_capture(host);
        info!("{}: capture ended", self.peer);
        self.send(Message::EndCapReply)
    }
}

#[cfg(test)]
mod tests;
