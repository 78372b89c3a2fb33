//! One connected agent: its control connection and [`Session`], its data
//! channel and its capture. The event loop hands it the events of its
//! sockets and a tick; it acts on its session's events (open the data
//! channel, start the capture, keep the agent's counters) and says when it
//! must be closed.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rpcap::bpf::libpcap::compile_capture;
use rpcap::header::ErrorCode;
use rpcap::log_limit::LogLimit;
use rpcap::msg::Stats;
use rpcap::peer_text::PeerText;
use sys::mmsg::Meta;

use crate::capture::Capture;
use crate::config::Config;
use crate::data_channel::{Buffers, DataChannel, UdpPorts};
use crate::linger::Closed;
use crate::metrics;
use crate::output::Output;
use crate::session::{DataTransport, Event, Session};
use crate::summary::Rate;
use crate::tap::{TapSink, LINKTYPE_ETHERNET};
use crate::tls::{Stream, Tls};
use crate::token::Owner;
use crate::writer;

/// What every agent uses, owned by the loop and lent to one agent at a time.
pub struct Shared {
    pub cfg: Config,
    pub registry: Registry,
    pub bufs: Buffers,
    pub ports: UdpPorts,
    /// The writer thread's queue; `None` once the sensor stops (the thread
    /// ends when every handle is gone).
    pub writer: Option<writer::Handle>,
    /// Records still allowed by `--count` (all agents together).
    pub budget: u64,
    /// The filter expression captures start with (SIGHUP may replace it).
    pub filter: Option<String>,
    /// The `-w` stream every capture writes to (None: files per capture).
    pub stream: Option<crate::output::Stream>,
    /// `--tap`: the TAP interface every capture writes onto.
    pub tap: Option<std::sync::Arc<sys::tap::Tap>>,
}

pub struct Agent {
    peer: SocketAddr,
    local_ip: IpAddr,
    /// `{agent}` of the file name template.
    name: String,
    /// The dial this agent came from (passive mode).
    dial: Option<usize>,
    /// Its slot in the loop (the number of a `--tap-per-agent` interface).
    idx: usize,
    stream: Stream,
    /// TLS (rpcaps://): the configuration and the name the agent's
    /// certificate must carry, for the data connections too.
    tls: Option<(Tls, rustls::pki_types::ServerName<'static>)>,
    session: Session,
    capture: Option<Capture>,
    data: DataChannel,
    data_token: Token,
    /// The agent's last STATS reply.
    stats: Option<Stats>,
    next_stats: Instant,
    rate: Rate,
    /// The log lines the agent's messages cause (its ERRORs).
    peer_lines: LogLimit,
}

/// Why a capture could not be started.
enum StartError {
    /// Not now (no free data port): the session asks again later.
    Later(String),
    /// Not at all: the session ends with this ERROR.
    Refused(ErrorCode, String),
}

/// What is left of an agent once closed.
pub struct Ended {
    /// The dial to redial (passive mode).
    pub dial: Option<usize>,
    /// The capture, to linger until its final line.
    pub capture: Option<Closed>,
}

impl Agent {
    /// Agent `idx` on a connected control stream (accepted, or dialed from
    /// `dial`): registered, with its AUTH request sent (over TLS, with the
    /// TLS handshake started, when configured; `host` is the name the
    /// agent's certificate must carry, unless --tls-name says another).
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        mut stream: TcpStream,
        peer: SocketAddr,
        host: &str,
        dial: Option<usize>,
        name: String,
        idx: usize,
        sh: &Shared,
        now: Instant,
    ) -> io::Result<Agent> {
        let _ = stream.set_nodelay(true);
        sh.registry.register(
            &mut stream,
            Owner::Control(idx).token(),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let local_ip = stream
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let (stream, tls) = match &sh.cfg.tls {
            None => (Stream::Plain(stream), None),
            Some(t) => {
                let name = t.server_name(host)?;
                (t.wrap(stream, name.clone())?, Some((t.clone(), name)))
            }
        };
        let mut a = Agent {
            peer,
            local_ip,
            name,
            dial,
            idx,
            stream,
            tls,
            session: Session::new(sh.cfg.session.clone(), now),
            capture: None,
            data: DataChannel::None,
            data_token: Owner::Data(idx).token(),
            stats: None,
            next_stats: now + sh.cfg.stats_interval,
            rate: Rate::new(now),
            peer_lines: LogLimit::new(10, Duration::from_secs(1)),
        };
        a.flush();
        Ok(a)
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The session's state (the metrics' `sessions{state}`).
    pub fn state_name(&self) -> &'static str {
        self.session.state_name()
    }

    /// The capture's counters as the metrics export them (read, not locked:
    /// the loop owns them).
    pub fn metrics(&self) -> Option<(metrics::Key, metrics::CaptureValues)> {
        let cap = self.capture.as_ref()?;
        Some((
            (metrics::agent_label(&self.peer), cap.iface.clone()),
            metrics::CaptureValues::of(cap, self.stats.as_ref()),
        ))
    }

    /// Whether a capture of this agent runs (the sd_notify status).
    pub fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// The control connection is readable: feeds the session and acts on
    /// its events. Returns why the agent must be closed, if it must.
    pub fn on_control(&mut self, sh: &mut Shared, now: Instant) -> Option<String> {
        let mut end: Option<String> = None;
        loop {
            match self.stream.read(&mut sh.bufs.stream) {
                Ok(0) => {
                    end = Some("the agent closed the connection".into());
                    break;
                }
                Ok(n) => {
                    if let Err(e) = self.session.receive(&sh.bufs.stream[..n], now) {
                        end = Some(e.to_string());
                        break;
                    }
                    // Events are acted on as they come: an agent that never
                    // pauses would otherwise queue them (1 MiB ERROR texts)
                    // without bound.
                    self.handle_events(sh, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    end = Some(format!("connection error: {e}"));
                    break;
                }
            }
        }
        self.handle_events(sh, now);
        self.flush();
        end
    }

    /// The data channel is readable.
    pub fn on_data(&mut self, sh: &mut Shared) {
        let Some(cap) = self.capture.as_mut() else {
            return;
        };
        let read = self.data.read(
            self.peer,
            cap,
            &mut sh.bufs,
            &mut sh.budget,
            &sh.registry,
            self.data_token,
        );
        if let Err(reason) = read {
            log::warn!("agent {}: {reason}", self.peer);
            self.data.close(&mut sh.ports, &sh.registry);
        }
    }

    /// A buffer of the shared UDP port (one datagram, or several with UDP
    /// GRO: `m`), from this agent's pinned source (`admitted`) or from
    /// another port of its address.
    pub fn on_shared_datagrams(&mut self, buf: &[u8], m: &Meta, admitted: bool, budget: &mut u64) {
        if let Some(cap) = self.capture.as_mut() {
            cap.on_buffer(buf, m, admitted, budget);
        }
    }

    /// Timers: file rotation, the session's reply timeout, the data
    /// channel's accept deadline, STATS requests. Returns why the agent must
    /// be closed, if it must.
    pub fn tick(&mut self, sh: &mut Shared, now: Instant) -> Option<String> {
        if let Some(o) = self.capture.as_mut().and_then(Capture::output) {
            if let Err(e) = o.tick(now) {
                log::error!("agent {}: rotation failed: {e}", self.peer);
            }
        }
        if let Err(e) = self.session.check_timeout(now, sh.cfg.stats_timeout) {
            let reason = e.to_string();
            log::warn!("agent {}: {reason}; closing the session", self.peer);
            return Some(reason);
        }
        if self.data.accept_deadline().is_some_and(|d| now >= d) {
            let text = "the agent did not connect the TCP data channel";
            self.session.abort(Some(ErrorCode::StartCapture), text);
            return Some(text.into());
        }
        if self.session.poll_timeout().is_some_and(|t| now >= t) {
            self.session.handle_timeout(now);
            self.flush();
        }
        if self.session.is_capturing() && now >= self.next_stats {
            self.next_stats = now + sh.cfg.stats_interval;
            self.session.request_stats(now);
            self.flush();
        }
        self.session
            .is_closed()
            .then(|| "session ended".to_string())
    }

    /// Pushes the filter `expr` (compiled for this capture) to a running capture.
    pub fn update_filter(&mut self, expr: Option<&str>, now: Instant) {
        let Some(cap) = self.capture.as_ref() else {
            return;
        };
        match compile_capture(expr, cap.linktype, cap.snaplen) {
            Ok(prog) => self.session.update_filter(prog.into_insns(), now),
            Err(e) => log::error!("agent {}: {e:#}", self.peer),
        }
        self.flush();
    }

    /// The periodic summary line of a running capture.
    pub fn summary_line(&mut self, now: Instant) -> Option<String> {
        let cap = self.capture.as_ref()?;
        Some(self.rate.line(now, &self.peer, cap, self.stats.as_ref()))
    }

    /// The sensor stops: ENDCAP (a capture runs) and CLOSE after its
    /// reply, or CLOSE now (no capture, or called again: the wait is over).
    pub fn stop(&mut self, now: Instant) {
        self.session.stop(now);
        self.flush();
    }

    /// Ends the agent: last output sent, sockets deregistered. With
    /// `keep_port` a capture's UDP port is handed on to linger, so that what
    /// the agent still sends is counted as late instead of refused by the kernel.
    pub fn close(mut self, sh: &mut Shared, reason: &str, keep_port: bool) -> Ended {
        self.flush();
        // A per-agent TAP goes now: the slot (and its name) may be reused at once.
        if let Some(cap) = self.capture.as_mut() {
            cap.take_tap();
        }
        let port = match (&self.capture, keep_port) {
            (Some(_), true) => self.data.take_udp(),
            _ => None,
        };
        self.data.close(&mut sh.ports, &sh.registry);
        let _ = sh.registry.deregister(self.stream.socket());
        log::info!("agent {}: session closed: {reason}", self.peer);
        let held_back = self.peer_lines.take_suppressed();
        if held_back > 0 {
            log::warn!(
                "agent {}: {held_back} log lines it caused were suppressed",
                self.peer
            );
        }
        Ended {
            dial: self.dial,
            capture: self.capture.take().map(|cap| Closed {
                peer: self.peer,
                cap,
                stats: self.stats,
                port,
            }),
        }
    }

    /// Acts on the session's events (open data port, start capture, stats…).
    fn handle_events(&mut self, sh: &mut Shared, now: Instant) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                Event::Opened { iface, linktype } => {
                    match self.start_capture(sh, &iface.name, linktype, now) {
                        Ok(()) => {}
                        // Transient (no free data port): the session asks again.
                        Err(StartError::Later(text)) => self.session.retry_later(text, now),
                        Err(StartError::Refused(code, text)) => {
                            log::error!("agent {}: {}", self.peer, PeerText::new(&text));
                            self.session.abort(Some(code), &text);
                        }
                    }
                }
                Event::Retrying {
                    why,
                    after,
                    stopped,
                } => {
                    // `why` may carry the agent's ERROR text, as often as it sends one.
                    if let Some(held_back) = self.peer_lines.admit(now) {
                        log::warn!(
                            "agent {}: {}; {} in {after:?}{held_back}",
                            self.peer,
                            PeerText::new(&why),
                            if stopped { "resuming" } else { "retrying" }
                        );
                    }
                }
                Event::Started { reply_port, .. } => self.on_started(sh, reply_port),
                Event::Stats(s) => {
                    log::debug!(
                        "agent {}: recv {} ifdrop {} krnldrop {} sent {}",
                        self.peer,
                        s.ifrecv,
                        s.ifdrop,
                        s.krnldrop,
                        s.svrcapt
                    );
                    if let Some(o) = self.capture.as_mut().and_then(Capture::output) {
                        o.set_agent_stats(s);
                    }
                    self.stats = Some(s);
                }
                Event::FilterUpdated => log::info!("agent {}: filter updated", self.peer),
                Event::AgentError { code, text } => {
                    if let Some(held_back) = self.peer_lines.admit(now) {
                        log::warn!(
                            "agent {}: error {code}: {}{held_back}",
                            self.peer,
                            PeerText::new(&text)
                        )
                    }
                }
            }
        }
    }

    /// After OPEN: compile the filter, open the data channel and the output,
    /// send STARTCAP. A capture that stopped by itself and is opened again
    /// resumes: same output file, same UDP port (its source unpinned, its
    /// stream numbering restarted); a TCP data channel is made anew.
    fn start_capture(
        &mut self,
        sh: &mut Shared,
        iface: &str,
        linktype: i32,
        now: Instant,
    ) -> Result<(), StartError> {
        let refused = |text: String| StartError::Refused(ErrorCode::StartCapture, text);
        let snaplen = sh.cfg.session.snaplen;
        let prog = compile_capture(sh.filter.as_deref(), linktype, snaplen)
            .map_err(|e| refused(format!("{e:#}")))?;
        if let Some(cap) = self.capture.as_ref() {
            if cap.iface != iface || cap.linktype != linktype {
                return Err(refused(format!(
                    "the capture of {} (linktype {}) cannot resume as {iface} (linktype {linktype})",
                    cap.iface, cap.linktype
                )));
            }
            let transport = match self.data.udp_port() {
                Some(port) => {
                    self.data.unpin(&mut sh.ports);
                    DataTransport::Udp { port }
                }
                None => {
                    self.data.close(&mut sh.ports, &sh.registry);
                    let (data, transport) = self.open_data(sh, now)?;
                    self.data = data;
                    transport
                }
            };
            if let Some(cap) = self.capture.as_mut() {
                cap.restart_stream();
            }
            log::info!(
                "agent {}: resuming the capture of {}",
                self.peer,
                PeerText::new(iface)
            );
            self.session
                .start_capture(transport, prog.into_insns(), now);
            return Ok(());
        }
        let Some(writer) = sh.writer.clone() else {
            return Err(StartError::Later("the sensor is stopping".into()));
        };
        let (mut data, transport) = self.open_data(sh, now)?;
        let description = format!("{iface} of agent {} (RPCAP, via xrpcap-sensor)", self.peer);
        let output = match Output::create(
            &writer,
            &sh.cfg.output,
            sh.stream.as_mut(),
            &self.name,
            iface,
            &description,
            linktype,
            snaplen,
        ) {
            Ok(o) => o,
            Err(e) => {
                data.close(&mut sh.ports, &sh.registry);
                return Err(refused(format!("sensor cannot write: {e}")));
            }
        };
        let what = match transport {
            DataTransport::Udp { port } => format!("UDP port {port}"),
            DataTransport::TcpSensorListens { port } => format!("TCP port {port} (agent connects)"),
            DataTransport::TcpAgentListens => "TCP (sensor connects)".into(),
        };
        log::info!(
            "agent {}: capturing {} (linktype {linktype}, snaplen {snaplen}) via {what} into {} as {}",
            self.peer,
            PeerText::new(iface),
            output.dest_name(),
            PeerText::new(output.if_name())
        );
        let mut cap = Capture::new(iface, linktype, snaplen, Some(output));
        if let Some(sink) = self.tap_sink(sh, linktype) {
            match sink.name() {
                Some(name) => log::info!("agent {}: frames go onto TAP {name} too", self.peer),
                None => log::info!(
                    "agent {}: linktype {linktype} is not Ethernet: its frames are counted as tap_skipped, not written to the TAP",
                    self.peer
                ),
            }
            cap.set_tap(sink);
        }
        self.capture = Some(cap);
        self.data = data;
        self.session
            .start_capture(transport, prog.into_insns(), now);
        Ok(())
    }

    /// The TAP output of a new capture of `linktype`, if `--tap` or
    /// `--tap-per-agent` asks for one. A per-agent TAP that cannot be made
    /// is logged; the capture goes on without it.
    fn tap_sink(&self, sh: &Shared, linktype: i32) -> Option<TapSink> {
        if sh.tap.is_some() {
            return Some(TapSink::new(sh.tap.clone(), linktype));
        }
        let prefix = sh.cfg.tap_per_agent.as_deref()?;
        if linktype != LINKTYPE_ETHERNET {
            return Some(TapSink::new(None, linktype));
        }
        match crate::tap::open(&format!("{prefix}{}", self.idx)) {
            Ok(tap) => Some(TapSink::new(Some(tap), linktype)),
            Err(e) => {
                log::error!("agent {}: {e:#}; capturing without a TAP", self.peer);
                None
            }
        }
    }

    /// The capture's data channel, as configured. Failing to get one (every
    /// UDP port of the range taken) is transient.
    fn open_data(
        &self,
        sh: &mut Shared,
        now: Instant,
    ) -> Result<(DataChannel, DataTransport), StartError> {
        if !sh.cfg.tcp_data {
            let (d, port) = DataChannel::udp(
                self.local_ip,
                self.peer.ip(),
                &mut sh.ports,
                &sh.registry,
                self.data_token,
            )
            .map_err(StartError::Later)?;
            Ok((d, DataTransport::Udp { port }))
        } else if self.dial.is_none() {
            let (d, port) = DataChannel::tcp_listen(
                self.local_ip,
                &sh.registry,
                self.data_token,
                now,
                self.tls.clone(),
            )
            .map_err(StartError::Later)?;
            Ok((d, DataTransport::TcpSensorListens { port }))
        } else {
            // Connected when STARTCAP's reply gives the agent's port.
            Ok((DataChannel::None, DataTransport::TcpAgentListens))
        }
    }

    /// STARTCAP succeeded: a passive agent listening for TCP data gets connected.
    fn on_started(&mut self, sh: &mut Shared, reply_port: u16) {
        if self.dial.is_none() || !sh.cfg.tcp_data {
            return;
        }
        let addr = SocketAddr::new(self.peer.ip(), reply_port);
        match DataChannel::tcp_connect(
            addr,
            sh.cfg.session.snaplen,
            &sh.registry,
            self.data_token,
            self.tls.as_ref(),
        ) {
            Ok(d) => self.data = d,
            Err(e) => log::error!(
                "agent {}: cannot connect data channel to {addr}: {e}",
                self.peer
            ),
        }
    }

    /// Writes pending session output; errors surface on the next read.
    fn flush(&mut self) {
        let _ = self.session.write_to(&mut self.stream);
        // What TLS still holds once the socket takes it again.
        let _ = self.stream.flush();
    }
}
