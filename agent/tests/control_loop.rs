//! The control loop against scripted sensors on 127.0.0.1: dialling with
//! backoff, reconnecting after a drop, CLOSE followed by a redial (unless
//! ActiveCloseStops), capture failures reported. Real sockets, a fake capture host, short timings.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rpcap::bpf::{Insn, Program};
use rpcap::header::Header;
use rpcap::msg::{startcap_flags, Auth, IfAddr, Interface, Message, Sampling, StartCapReq, Stats};
use rpcap::ErrorCode;
use xrpcapd::control::{Control, Stopper, Timing};
use xrpcapd::host::CaptureHost;
use xrpcapd::session::{HostError, StartRequest};
use xrpcapd::settings::values::parse_active_client;
use xrpcapd::settings::Config;

#[derive(Default)]
struct Shared {
    started: Vec<StartRequest>,
    running: usize,
    failure: Option<String>,
    /// Captures stay on their way until this is cleared (and the agent notified).
    hold_starts: bool,
    notify: Option<xrpcapd::host::Notify>,
}

#[derive(Clone, Default)]
struct FakeHost(Arc<Mutex<Shared>>);

impl CaptureHost for FakeHost {
    type Capture = ();
    fn interfaces(&mut self) -> io::Result<Vec<Interface>> {
        Ok(vec![Interface {
            name: "lo".into(),
            description: String::new(),
            flags: 0x3,
            addrs: vec![IfAddr::from(IpAddr::from([127, 0, 0, 1]))],
        }])
    }
    fn linktype(&mut self, _ifname: &str) -> io::Result<i32> {
        Ok(1)
    }
    fn start(&mut self, req: StartRequest) -> Result<(), HostError> {
        let mut s = self.0.lock().unwrap();
        s.started.push(req);
        s.running += 1;
        Ok(())
    }
    fn started(&mut self, _: &()) -> Option<Result<(), HostError>> {
        (!self.0.lock().unwrap().hold_starts).then_some(Ok(()))
    }
    fn set_notify(&mut self, notify: xrpcapd::host::Notify) {
        self.0.lock().unwrap().notify = Some(notify);
    }
    fn update_filter(&mut self, _: &mut (), _: Program) -> Result<(), HostError> {
        Ok(())
    }
    fn set_sampling(&mut self, _: &mut (), _: Sampling) {}
    fn stats(&mut self, _: &()) -> Stats {
        Stats::default()
    }
    fn failure(&mut self, _: &()) -> Option<String> {
        self.0.lock().unwrap().failure.clone()
    }
    fn stop(&mut self, _: ()) -> Stats {
        self.0.lock().unwrap().running -= 1;
        Stats::default()
    }
}

struct Agent {
    stopper: Stopper,
    thread: Option<JoinHandle<()>>,
    host: FakeHost,
}

impl Agent {
    fn start(port: u16) -> Agent {
        Agent::start_with(port, |_, _| {})
    }

    /// An agent whose configuration and timing `tune` adjusts.
    fn start_with(port: u16, tune: impl FnOnce(&mut Config, &mut Timing)) -> Agent {
        let mut cfg = Config {
            null_auth: true,
            ..Config::default()
        };
        cfg.active_clients
            .push(parse_active_client(&format!("127.0.0.1, {port}")).unwrap());
        let mut timing = Timing {
            backoff_base: Duration::from_millis(40),
            max_backoff: Duration::from_millis(160),
            fast_step: Duration::from_millis(160),
            fast_window: Duration::from_secs(60),
            resolve_timeout: Duration::from_secs(1),
            stable_session: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(1),
            capture_check: Duration::from_millis(30),
            auth_fail_delay: Duration::from_millis(100),
            auth_fail_max: Duration::from_millis(400),
        };
        tune(&mut cfg, &mut timing);
        let host = FakeHost::default();
        let mut control = Control::new(cfg, timing, host.clone()).unwrap();
        let stopper = control.stopper();
        let thread = std::thread::spawn(move || control.run().unwrap());
        Agent {
            stopper,
            thread: Some(thread),
            host,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits (bounded) for the agent to connect.
fn accept(l: &TcpListener, within: Duration) -> Option<TcpStream> {
    l.set_nonblocking(true).unwrap();
    let end = Instant::now() + within;
    while Instant::now() < end {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                return Some(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

fn send(s: &mut TcpStream, m: Message) {
    s.write_all(&m.to_bytes()).unwrap();
}

fn recv(s: &mut TcpStream) -> Message {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).unwrap();
    let h = Header::parse(&h).unwrap();
    let mut p = vec![0u8; h.plen as usize];
    s.read_exact(&mut p).unwrap();
    Message::decode(&h, &p).unwrap()
}

fn auth(s: &mut TcpStream) {
    send(s, Message::AuthReq(Auth::Null));
    assert!(matches!(recv(s), Message::AuthReply(_)));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sensor_down_at_start_then_up() {
    let port = free_port();
    let _agent = Agent::start(port);
    // Several attempts fail (connection refused) while the sensor is down.
    std::thread::sleep(Duration::from_millis(300));
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    // Backoff is capped at 160 ms: the agent arrives soon after.
    let mut s = accept(&l, Duration::from_secs(2)).expect("agent dials once the sensor is up");
    auth(&mut s);
    send(&mut s, Message::FindAllIfReq);
    assert!(matches!(recv(&mut s), Message::FindAllIfReply(l) if l[0].name == "lo"));
}

#[test]
fn dropped_session_reconnects_at_once() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let _agent = Agent::start(l.local_addr().unwrap().port());
    let mut s = accept(&l, Duration::from_secs(2)).expect("first connection");
    auth(&mut s);
    let t0 = Instant::now();
    drop(s);
    let mut s = accept(&l, Duration::from_secs(2)).expect("reconnection");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    auth(&mut s);
    // A connection closed without a word (before auth) is also followed by a new one.
    drop(s);
    assert!(accept(&l, Duration::from_secs(2)).is_some());
}

/// Opens lo and starts a capture, as a sensor does.
fn capture(s: &mut TcpStream) {
    send(
        s,
        Message::OpenReq {
            source: "lo".into(),
        },
    );
    assert!(matches!(recv(s), Message::OpenReply { .. }));
    send(s, start_udp(9));
    assert!(matches!(recv(s), Message::StartCapReply(_)));
}

/// The agent's end of `s` closes.
fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
}

#[test]
fn close_ends_the_capture_and_redials() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let agent = Agent::start(l.local_addr().unwrap().port());
    let mut s = accept(&l, Duration::from_secs(2)).expect("connection");
    auth(&mut s);
    capture(&mut s);
    send(&mut s, Message::Close);
    // The agent closes its end and the capture, and comes back.
    assert_closed(&mut s);
    let mut s = accept(&l, Duration::from_secs(2)).expect("redial after CLOSE");
    assert_eq!(agent.host.0.lock().unwrap().running, 0);
    auth(&mut s);
}

#[test]
fn active_close_stops_means_no_reconnect() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let agent = Agent::start_with(port, |c, _| c.active_close_stops = true);
    let mut s = accept(&l, Duration::from_secs(2)).expect("connection");
    auth(&mut s);
    capture(&mut s);
    send(&mut s, Message::Close);
    assert_closed(&mut s);
    assert!(accept(&l, Duration::from_millis(600)).is_none());
    assert_eq!(agent.host.0.lock().unwrap().running, 0);
    // Before authentication too.
    drop(l);
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let _agent = Agent::start_with(port, |c, _| c.active_close_stops = true);
    let mut s = accept(&l, Duration::from_secs(2)).expect("connection");
    send(&mut s, Message::Close);
    assert_closed(&mut s);
    assert!(accept(&l, Duration::from_millis(600)).is_none());
}

/// Whoever answers on the sensor's address and sends CLOSE before
/// authenticating (an impostor, a port squatter) neither stops the slot nor
/// changes its backoff: after an outage of a few failures, every redial
/// waits the same step, neither reset to the first nor growing.
#[test]
fn a_close_before_authentication_keeps_redialling_at_the_same_step() {
    let port = free_port();
    let _agent = Agent::start_with(port, |_, t| {
        t.max_backoff = Duration::from_secs(5);
        t.fast_step = Duration::from_secs(5);
    });
    // Refused for 400 ms: 4 or 5 failures (40 ms × 2^n, jitter [0.5, 1)),
    // so the next step is 320–640 ms before jitter; reset it would be 40.
    std::thread::sleep(Duration::from_millis(400));
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut s = accept(&l, Duration::from_secs(2)).expect("first connection");
    let mut gaps = Vec::new();
    for _ in 0..6 {
        send(&mut s, Message::Close);
        let t0 = Instant::now();
        assert_closed(&mut s);
        s = accept(&l, Duration::from_secs(4)).expect("redial after a pre-auth CLOSE");
        gaps.push(t0.elapsed());
    }
    // Not reset (≥ half of 320 ms), not advancing (6 more failures would
    // take the step past 2.5 s).
    for g in &gaps {
        assert!(
            *g > Duration::from_millis(100) && *g < Duration::from_millis(1500),
            "{gaps:?}"
        );
    }
    // And it still serves a real sensor that then logs in.
    auth(&mut s);
}

fn start_udp(portdata: u16) -> Message {
    Message::StartCapReq(StartCapReq {
        snaplen: 65535,
        read_timeout_ms: 100,
        flags: startcap_flags::DGRAM,
        portdata,
        filter: vec![Insn::new(0x06, 0, 0, 65535)],
    })
}

#[test]
fn capture_failure_reaches_the_sensor_and_session_goes_on() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let agent = Agent::start(l.local_addr().unwrap().port());
    let mut s = accept(&l, Duration::from_secs(2)).expect("connection");
    auth(&mut s);
    send(
        &mut s,
        Message::OpenReq {
            source: "lo".into(),
        },
    );
    recv(&mut s);
    send(&mut s, start_udp(5555));
    assert!(matches!(recv(&mut s), Message::StartCapReply(_)));
    {
        let shared = agent.host.0.lock().unwrap();
        let req = &shared.started[0];
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        assert_eq!(
            req.data,
            xrpcapd::session::DataChannel::UdpStr {
                dest: peer,
                size: 1472
            }
        );
    }
    agent.host.0.lock().unwrap().failure = Some("interface lo vanished".into());
    match recv(&mut s) {
        Message::Error { code, text } => {
            assert_eq!(code, ErrorCode::ReadEx as u16);
            assert!(text.contains("interface lo vanished"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(agent.host.0.lock().unwrap().running, 0);
    // The session is still served.
    send(&mut s, Message::StatsReq);
    assert!(matches!(recv(&mut s), Message::StatsReply(_)));
}

#[test]
fn a_capture_on_its_way_is_answered_when_up_and_stopped_if_the_session_ends() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let agent = Agent::start(l.local_addr().unwrap().port());
    agent.host.0.lock().unwrap().hold_starts = true;
    let mut s = accept(&l, Duration::from_secs(2)).expect("connection");
    auth(&mut s);
    let open = Message::OpenReq {
        source: "lo".into(),
    };
    send(&mut s, open.clone());
    recv(&mut s);
    send(&mut s, start_udp(5555));
    // Nothing is said while the capture is on its way, the STATS sent
    // meanwhile included (one request at a time).
    send(&mut s, Message::StatsReq);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(s.read(&mut b).is_err(), "a reply before the capture is up");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // Up: the host notifies, the STARTCAP reply comes, then the STATS one.
    let notify = {
        let mut shared = agent.host.0.lock().unwrap();
        shared.hold_starts = false;
        shared
            .notify
            .clone()
            .expect("the agent gave the host a notifier")
    };
    notify();
    assert!(matches!(recv(&mut s), Message::StartCapReply(_)));
    assert!(matches!(recv(&mut s), Message::StatsReply(_)));
    // A session that ends while its next capture is on its way stops it.
    agent.host.0.lock().unwrap().hold_starts = true;
    send(&mut s, start_udp(5556));
    let t0 = Instant::now();
    while agent.host.0.lock().unwrap().started.len() < 2 && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(s);
    let t0 = Instant::now();
    while agent.host.0.lock().unwrap().running > 0 && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(agent.host.0.lock().unwrap().running, 0);
}
