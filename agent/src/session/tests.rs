//! Session dispatch rules with a fake capture host.

use super::*;
use rpcap::msg::{if_flags, startcap_flags, IfAddr, Interface};
use std::net::IpAddr;

const LOCAL: &str = "10.0.0.5:40000";
const PEER: &str = "10.0.0.9:2003";

#[derive(Default)]
struct Fake {
    ifaces: Vec<Interface>,
    next_id: u32,
    started: Vec<StartRequest>,
    running: Vec<u32>,
    stopped: Vec<u32>,
    filters: Vec<(u32, Vec<Insn>)>,
    samplings: Vec<(u32, Sampling)>,
    fail_start: Option<String>,
    failure: Option<String>,
    data_port: u16,
    /// The capture the session runs, if any.
    current: Option<u32>,
}

impl Fake {
    fn new() -> Fake {
        let addr = |a: &str| IfAddr::from(a.parse::<IpAddr>().unwrap());
        Fake {
            ifaces: vec![
                Interface {
                    name: "lo".into(),
                    description: String::new(),
                    flags: if_flags::LOOPBACK | if_flags::UP,
                    addrs: vec![addr("127.0.0.1")],
                },
                Interface {
                    name: "eth0".into(),
                    description: String::new(),
                    flags: if_flags::UP | if_flags::RUNNING,
                    addrs: vec![addr("10.0.0.5")],
                },
                Interface {
                    name: "eth1".into(),
                    description: String::new(),
                    flags: if_flags::UP | if_flags::RUNNING,
                    addrs: vec![addr("192.168.7.1")],
                },
            ],
            ..Fake::default()
        }
    }

    fn live(id: u32) -> Stats {
        Stats {
            ifrecv: 1000 + id,
            ifdrop: 1,
            krnldrop: 2,
            svrcapt: 900 + id,
        }
    }

    fn last(id: u32) -> Stats {
        Stats {
            ifrecv: 5000 + id,
            ifdrop: 3,
            krnldrop: 4,
            svrcapt: 4000 + id,
        }
    }
}

impl Fake {
    /// Answers a command as a host would, on the one capture of the connection.
    fn answer(&mut self, cmd: HostCommand) -> Option<Answer> {
        Some(match cmd {
            HostCommand::ListInterfaces => Answer::Interfaces(Ok(self.ifaces.clone())),
            HostCommand::ReadLinktype(ifname) => {
                Answer::Linktype(if self.ifaces.iter().any(|i| i.name == ifname) {
                    Ok(iface::DLT_EN10MB)
                } else {
                    Err("no such interface".into())
                })
            }
            HostCommand::StartCapture(req) => Answer::Started(match &self.fail_start {
                Some(e) => Err(HostError::DataChannel(e.clone())),
                None => {
                    assert!(self.current.is_none(), "a capture leaked");
                    self.next_id += 1;
                    self.started.push(*req);
                    self.running.push(self.next_id);
                    self.current = Some(self.next_id);
                    Ok(self.data_port)
                }
            }),
            HostCommand::UpdateFilter(filter) => {
                let id = self.current.expect("update_filter without a capture");
                self.filters.push((id, filter.into_insns()));
                Answer::FilterUpdated(Ok(()))
            }
            HostCommand::SetSampling(sampling) => {
                let id = self.current.expect("set_sampling without a capture");
                self.samplings.push((id, sampling));
                return None;
            }
            HostCommand::ReadStats => Answer::Stats(Fake::live(self.current.expect("stats"))),
            HostCommand::Stop => Answer::Stopped(match self.current.take() {
                Some(id) => {
                    self.running.retain(|&r| r != id);
                    self.stopped.push(id);
                    Fake::last(id)
                }
                None => Stats::default(),
            }),
        })
    }
}

/// How long the scripted driver holds a failed passive login.
const HOLD: Duration = Duration::from_secs(2);

fn cfg() -> SessionConfig {
    SessionConfig {
        mode: Mode::Active,
        null_auth: true,
        preselect: Preselect::default(),
        udpstr_size: 1472,
        ring_size: 4 << 20,
        local_filter: None,
        log_stats: true,
        auth: Default::default(),
        tls: false,
        data_accept_timeout: std::time::Duration::from_secs(1),
        capture: None,
        auth_timeout: None,
        idle_timeout: None,
        liveness: None,
        slot: None,
        decap: None,
    }
}

/// A session, the scripted host that answers its commands, and the time.
struct T {
    s: Session,
    host: Fake,
    now: Instant,
    /// Answer password checks at once (else they stay in `checks`).
    answer_checks: bool,
    checks: Vec<PasswordCheck>,
    /// Failed passive logins the driver was told of, and successes.
    holds: u32,
    successes: u32,
}

impl T {
    fn with(cfg: SessionConfig) -> T {
        let now = Instant::now();
        T {
            s: Session::new(cfg, LOCAL.parse().unwrap(), PEER.parse().unwrap(), now),
            host: Fake::new(),
            now,
            answer_checks: true,
            checks: Vec::new(),
            holds: 0,
            successes: 0,
        }
    }

    fn new() -> T {
        T::with(cfg())
    }

    fn authed() -> T {
        let mut t = T::new();
        assert!(matches!(
            t.req(Message::AuthReq(Auth::Null))[..],
            [Message::AuthReply(_)]
        ));
        t
    }

    /// Carries out the session's commands as the driver does.
    fn drive(&mut self) {
        while let Some(cmd) = self.s.poll_command() {
            let answer = match cmd {
                Command::Host(c) => self.host.answer(c),
                Command::CheckPassword(c) if self.answer_checks => {
                    Some(Answer::PasswordChecked(c.verify()))
                }
                Command::CheckPassword(c) => {
                    self.checks.push(c);
                    None
                }
                Command::HoldFailedAuth => {
                    self.holds += 1;
                    Some(Answer::Hold(HOLD))
                }
                Command::AuthSucceeded => {
                    self.successes += 1;
                    None
                }
            };
            if let Some(a) = answer {
                self.s.handle(self.now, Input::Answer(a));
            }
        }
    }

    /// Feeds `input`, runs the commands, returns every reply sent.
    fn input(&mut self, input: Input) -> Vec<Message> {
        self.s.handle(self.now, input);
        self.drive();
        self.sent()
    }

    /// The replies the session lets out now, decoded.
    fn sent(&mut self) -> Vec<Message> {
        let out = self.s.output().to_vec();
        self.s.consume_output(out.len());
        let mut d = Codec::control();
        d.feed(&out);
        let mut msgs = Vec::new();
        while let Some(r) = d.next().unwrap() {
            msgs.push(r.message.unwrap());
        }
        assert_eq!(d.buffered(), 0);
        msgs
    }

    /// Feeds raw bytes, returns every reply decoded.
    fn raw(&mut self, bytes: &[u8]) -> Vec<Message> {
        self.input(Input::Received(bytes))
    }

    /// Moves the clock by `d` and fires the session's timers.
    fn advance(&mut self, d: Duration) -> Vec<Message> {
        self.now += d;
        self.s.handle_timeout(self.now);
        self.drive();
        self.sent()
    }

    /// The driver's capture check: a failure the host reports goes to the
    /// session. Returns whether there was one.
    fn check_capture(&mut self) -> bool {
        let Some(reason) = self.host.current.and(self.host.failure.clone()) else {
            return false;
        };
        self.s.handle(self.now, Input::CaptureFailed(reason));
        self.drive();
        true
    }

    fn req(&mut self, m: Message) -> Vec<Message> {
        self.raw(&m.to_bytes())
    }

    fn one(&mut self, m: Message) -> Message {
        let mut r = self.req(m);
        assert_eq!(r.len(), 1, "{r:?}");
        r.pop().unwrap()
    }

    fn open_eth0(&mut self) {
        let r = self.one(Message::OpenReq {
            source: "eth0".into(),
        });
        assert_eq!(
            r,
            Message::OpenReply {
                linktype: 1,
                tzoff: 0
            }
        );
    }
}

fn raw_msg(ver: u8, ty: u8, value: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Header {
        ver,
        msg_type: ty,
        value,
        plen: payload.len() as u32,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

fn accept_all() -> Vec<Insn> {
    vec![Insn::new(0x06, 0, 0, 262_144)]
}

fn startcap(flags: u16, portdata: u16) -> Message {
    Message::StartCapReq(StartCapReq {
        snaplen: 65535,
        read_timeout_ms: 250,
        flags,
        portdata,
        filter: accept_all(),
    })
}

fn assert_error(m: &Message, code: ErrorCode, text_part: &str) {
    match m {
        Message::Error { code: c, text } => {
            assert_eq!(*c, code as u16, "{text}");
            assert!(text.contains(text_part), "`{text}` lacks `{text_part}`");
        }
        other => panic!("expected error {code:?}, got {other:?}"),
    }
}

#[test]
fn before_auth_every_request_gets_wrongmsg_and_session_waits() {
    let mut t = T::new();
    for m in [
        Message::FindAllIfReq,
        Message::OpenReq {
            source: "eth0".into(),
        },
        startcap(startcap_flags::DGRAM, 5000),
        Message::StatsReq,
        Message::EndCapReq,
    ] {
        let r = t.one(m);
        assert_error(&r, ErrorCode::WrongMsg, "authentication");
    }
    assert!(t.s.ended().is_none());
    assert!(t.host.started.is_empty());
    // An unknown type before auth as well.
    let r = t.raw(&raw_msg(0, 0x55, 0, b"xyz"));
    assert_error(&r[0], ErrorCode::WrongMsg, "");
    // The stream stayed in sync: AUTH now works.
    assert!(matches!(
        t.one(Message::AuthReq(Auth::Null)),
        Message::AuthReply(Some(_))
    ));
    assert!(t.s.authenticated());
}

#[test]
fn auth_reply_carries_version_body() {
    let mut t = T::new();
    match t.one(Message::AuthReq(Auth::Null)) {
        Message::AuthReply(Some(info)) => {
            assert_eq!((info.min_version, info.max_version), (0, 0));
            assert_eq!(
                info.byte_order_magic.to_be_bytes(),
                0xA1B2_C3D4u32.to_ne_bytes()
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_version_gets_wrongver_and_closes() {
    let mut t = T::new();
    let r = t.raw(&raw_msg(1, MsgType::AuthReq as u8, 0, &[0; 8]));
    assert_error(&r[0], ErrorCode::WrongVer, "version 1");
    assert!(matches!(t.s.ended(), Some(Ended::Protocol(_))));
    // Nothing more is processed.
    assert!(t.raw(&Message::AuthReq(Auth::Null).to_bytes()).is_empty());
}

#[test]
fn wrong_version_after_auth_stops_capture() {
    let mut t = T::authed();
    t.open_eth0();
    t.one(startcap(startcap_flags::DGRAM, 5000));
    t.raw(&raw_msg(2, MsgType::StatsReq as u8, 0, &[]));
    assert!(t.s.ended().is_some());
    assert!(t.host.running.is_empty());
}

#[test]
fn null_auth_refused_unless_permitted() {
    // A passive client's failure is held: its reply and the requests after it.
    let mut c = cfg();
    c.null_auth = false;
    c.mode = Mode::Passive;
    let mut t = T::with(c);
    assert!(t.req(Message::AuthReq(Auth::Null)).is_empty());
    assert_eq!(t.holds, 1);
    assert!(!t.s.authenticated());
    assert!(t.s.ended().is_none());
    // Requests after a failed authentication wait until the connection
    // has held the failure for its delay.
    assert!(!t.s.reading());
    assert_eq!(t.s.poll_timeout(), Some(t.now + HOLD));
    assert!(t.req(Message::FindAllIfReq).is_empty());
    assert!(t.advance(HOLD - Duration::from_millis(1)).is_empty());
    let r = t.advance(Duration::from_millis(1));
    assert_eq!(r.len(), 2, "{r:?}");
    assert_error(&r[0], ErrorCode::AuthFailed, NULL_AUTH_REFUSED);
    assert_error(&r[1], ErrorCode::WrongMsg, "");
    assert!(t.s.reading() && t.s.ended().is_none());
    // A sensor we dialled is answered at once and may go on at once.
    let mut c = cfg();
    c.null_auth = false;
    let mut t = T::with(c);
    let r = t.one(Message::AuthReq(Auth::Null));
    assert_error(&r, ErrorCode::AuthFailed, NULL_AUTH_REFUSED);
    assert_eq!(t.holds, 0);
    assert!(!t.s.authenticated() && t.s.reading());
    assert_error(&t.one(Message::FindAllIfReq), ErrorCode::WrongMsg, "");
}

#[test]
fn a_passive_client_ends_after_its_third_held_failure() {
    let mut c = cfg();
    c.null_auth = false;
    c.mode = Mode::Passive;
    let mut t = T::with(c);
    for n in 1..=MAX_AUTH_ATTEMPTS {
        assert!(t.req(Message::AuthReq(Auth::Null)).is_empty());
        assert_eq!(t.holds, n);
        let r = t.advance(HOLD);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_error(&r[0], ErrorCode::AuthFailed, NULL_AUTH_REFUSED);
    }
    assert!(matches!(t.s.ended(), Some(Ended::Protocol(_))));
    assert_eq!(t.s.poll_timeout(), None);
}

#[test]
fn a_password_check_holds_the_requests_after_it() {
    let mut c = cfg();
    c.mode = Mode::Passive;
    let mut t = T::with(c);
    t.answer_checks = false;
    let mut bytes = Message::AuthReq(Auth::Password {
        user: b"alice".to_vec(),
        password: b"pw".to_vec(),
    })
    .to_bytes();
    Message::FindAllIfReq.encode(&mut bytes);
    assert!(t.raw(&bytes).is_empty());
    assert_eq!(t.checks.len(), 1);
    assert_eq!(t.checks[0].user, b"alice");
    assert_eq!(t.checks[0].password, b"pw");
    assert!(!t.s.reading());
    let r = t.input(Input::Answer(Answer::PasswordChecked(true)));
    assert!(
        matches!(r[..], [Message::AuthReply(_), Message::FindAllIfReply(_)]),
        "{r:?}"
    );
    // A passive client's success clears its address's failures.
    assert_eq!(t.successes, 1);
}

#[test]
fn passive_timers_authentication_then_idle() {
    let mut c = cfg();
    c.mode = Mode::Passive;
    c.auth_timeout = Some(Duration::from_secs(10));
    c.idle_timeout = Some(Duration::from_secs(60));
    let mut t = T::with(c.clone());
    let began = t.now;
    assert_eq!(t.s.poll_timeout(), Some(began + Duration::from_secs(10)));
    // Bytes do not extend the authentication time.
    t.now += Duration::from_secs(5);
    t.req(Message::FindAllIfReq);
    assert!(t.advance(Duration::from_millis(4999)).is_empty());
    let r = t.advance(Duration::from_millis(1));
    assert_error(&r[0], ErrorCode::InitTimeout, "Authentication timeout");
    assert!(matches!(t.s.ended(), Some(Ended::Timeout(_))));
    // Authenticated: idle time counts from the last bytes, not while a
    // capture runs.
    let mut t = T::with(c);
    t.one(Message::AuthReq(Auth::Null));
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(60)));
    t.now += Duration::from_secs(30);
    t.open_eth0();
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(60)));
    t.one(startcap(startcap_flags::DGRAM, 5000));
    assert_eq!(t.s.poll_timeout(), None);
    assert!(t.advance(Duration::from_secs(600)).is_empty());
    t.one(Message::EndCapReq);
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(60)));
    let r = t.advance(Duration::from_secs(60));
    assert_error(&r[0], ErrorCode::RuntimeTimeout, "Idle timeout");
    assert!(matches!(t.s.ended(), Some(Ended::Timeout(_))));
}

/// A failed login just before the authentication deadline is held (the
/// driver's backoff), but the hold must not keep the connection past the
/// deadline: a slow sender would hold its slot for the backoff's cap more.
#[test]
fn a_held_failure_does_not_outlast_the_authentication_deadline() {
    let mut c = cfg();
    c.mode = Mode::Passive;
    c.auth_timeout = Some(Duration::from_secs(10));
    let mut t = T::with(c);
    t.answer_checks = false;
    let began = t.now;
    t.now += Duration::from_secs(9);
    assert!(t
        .req(Message::AuthReq(Auth::Password {
            user: b"alice".to_vec(),
            password: b"guess".to_vec(),
        }))
        .is_empty());
    // Failed; the driver holds the reply for HOLD (2 s): past the deadline.
    assert!(t
        .input(Input::Answer(Answer::PasswordChecked(false)))
        .is_empty());
    assert_eq!(t.holds, 1);
    assert_eq!(t.s.poll_timeout(), Some(began + Duration::from_secs(10)));
    let r = t.advance(Duration::from_secs(1));
    assert_eq!(r.len(), 2, "{r:?}");
    assert_error(&r[0], ErrorCode::AuthFailed, AUTH_FAILED);
    assert_error(&r[1], ErrorCode::InitTimeout, "Authentication timeout");
    assert!(matches!(t.s.ended(), Some(Ended::Timeout(_))));
    assert_eq!(t.s.poll_timeout(), None);
}

#[test]
fn password_auth_fails_with_one_uniform_text() {
    let mut c = cfg();
    let hash = crate::auth::hash_password("right").unwrap();
    c.auth = Arc::new(crate::auth::Authenticator {
        users: vec![crate::auth::parse_user(&format!("alice {hash}")).unwrap()],
        ..Default::default()
    });
    let mut t = T::with(c.clone());
    let texts: Vec<Message> = [("alice", "wrong"), ("nosuchuser", "right"), ("", "")]
        .iter()
        .map(|(u, p)| {
            t.one(Message::AuthReq(Auth::Password {
                user: u.as_bytes().to_vec(),
                password: p.as_bytes().to_vec(),
            }))
        })
        .collect();
    assert_error(&texts[0], ErrorCode::AuthFailed, AUTH_FAILED);
    assert!(texts.iter().all(|m| *m == texts[0]));
    assert!(!t.s.authenticated());
    // The third failure ends the session.
    assert!(matches!(t.s.ended(), Some(Ended::Protocol(_))));
    // The right password authenticates.
    let mut t = T::with(c);
    let r = t.one(Message::AuthReq(Auth::Password {
        user: b"alice".to_vec(),
        password: b"right".to_vec(),
    }));
    assert!(matches!(r, Message::AuthReply(Some(_))), "{r:?}");
    assert!(t.s.authenticated() && t.s.reading());
}

#[test]
fn malformed_auth_gets_its_code_and_stream_stays_in_sync() {
    let mut t = T::new();
    // Short AUTH body.
    let r = t.raw(&raw_msg(0, MsgType::AuthReq as u8, 0, &[0, 0]));
    assert_error(&r[0], ErrorCode::Auth, "");
    // Unknown auth type 7.
    let r = t.raw(&raw_msg(
        0,
        MsgType::AuthReq as u8,
        0,
        &[0, 7, 0, 0, 0, 0, 0, 0],
    ));
    assert_error(&r[0], ErrorCode::AuthTypeNotSup, "");
    // slen1 + slen2 larger than the payload.
    let r = t.raw(&raw_msg(
        0,
        MsgType::AuthReq as u8,
        0,
        &[0, 1, 0, 0, 0, 200, 0, 200, b'a'],
    ));
    assert_error(&r[0], ErrorCode::Auth, "");
    assert!(matches!(
        t.one(Message::AuthReq(Auth::Null)),
        Message::AuthReply(_)
    ));
}

#[test]
fn after_auth_second_auth_unknown_and_reply_types_get_wrongmsg() {
    let mut t = T::authed();
    assert_error(
        &t.one(Message::AuthReq(Auth::Null)),
        ErrorCode::WrongMsg,
        "already",
    );
    let r = t.raw(&raw_msg(0, 0x55, 0, &[1, 2, 3]));
    assert_error(&r[0], ErrorCode::WrongMsg, "");
    let r = t.one(Message::StatsReply(Stats::default()));
    assert_error(&r, ErrorCode::WrongMsg, "");
    let r = t.raw(&raw_msg(0, MsgType::Packet as u8, 0, &[0; 24]));
    assert_error(&r[0], ErrorCode::WrongMsg, "");
    assert!(t.s.ended().is_none());
    assert!(matches!(t.one(Message::StatsReq), Message::StatsReply(_)));
}

#[test]
fn error_from_sensor_gets_no_reply() {
    let mut t = T::new();
    assert!(t.req(Message::error(ErrorCode::Netw, "hello")).is_empty());
    let mut t = T::authed();
    assert!(t.req(Message::error(ErrorCode::Netw, "hello")).is_empty());
}

#[test]
fn findallif_lists_and_norremoteif_when_none() {
    let mut t = T::authed();
    match t.one(Message::FindAllIfReq) {
        Message::FindAllIfReply(l) => assert_eq!(l, t.host.ifaces),
        other => panic!("{other:?}"),
    }
    t.host.ifaces.clear();
    assert_error(&t.one(Message::FindAllIfReq), ErrorCode::NoRemoteIf, "");
}

fn preselect_cfg(name: Option<&str>, addr: Option<&str>) -> SessionConfig {
    let mut c = cfg();
    c.preselect = Preselect {
        ifname: name.map(String::from),
        ifaddr: addr.map(|a| crate::settings::values::parse_ifaddr(a).unwrap()),
    };
    c
}

#[test]
fn preselection_lists_first_and_refuses_other_opens() {
    let mut t = T::with(preselect_cfg(None, Some("192.168.7.0/24")));
    t.one(Message::AuthReq(Auth::Null));
    match t.one(Message::FindAllIfReq) {
        Message::FindAllIfReply(l) => {
            assert_eq!(l[0].name, "eth1");
            assert_eq!(l[0].description, ";preselected");
            assert_eq!(l.len(), 3);
        }
        other => panic!("{other:?}"),
    }
    let r = t.one(Message::OpenReq {
        source: "eth0".into(),
    });
    assert_error(
        &r,
        ErrorCode::Open,
        "can only open preselected interface 'eth1'",
    );
    assert!(matches!(
        t.one(Message::OpenReq {
            source: "eth1".into()
        }),
        Message::OpenReply { .. }
    ));
}

#[test]
fn preselection_without_match_refuses_open() {
    let mut t = T::with(preselect_cfg(Some("eth9"), None));
    t.one(Message::AuthReq(Auth::Null));
    let r = t.one(Message::OpenReq {
        source: "eth0".into(),
    });
    assert_error(
        &r,
        ErrorCode::Open,
        "no interface matches the preselection (ifname=eth9)",
    );
    // The slot is told which request and why (it logs each cause once).
    assert_eq!(
        t.s.take_refusals(),
        ["refused OPEN of eth0: no interface matches the preselection (ifname=eth9)"]
    );
    assert!(t.s.take_refusals().is_empty());
}

#[test]
fn open_refuses_urls_and_unknown_interfaces() {
    let mut t = T::authed();
    for src in [
        "rpcap://10.1.1.1/eth0",
        "file:///etc/passwd",
        "rpcaps://x:2002/lo",
    ] {
        let r = t.one(Message::OpenReq { source: src.into() });
        assert_error(&r, ErrorCode::Open, "only local interface names");
    }
    let r = t.one(Message::OpenReq {
        source: "nosuch0".into(),
    });
    assert_error(&r, ErrorCode::Open, "no such interface");
    // Nothing was opened: STARTCAP still has no device.
    let r = t.one(startcap(startcap_flags::DGRAM, 5000));
    assert_error(&r, ErrorCode::StartCapture, NO_DEVICE);
}

#[test]
fn startcap_before_open() {
    let mut t = T::authed();
    let r = t.one(startcap(startcap_flags::DGRAM, 5000));
    assert_error(
        &r,
        ErrorCode::StartCapture,
        "No capture device was specified",
    );
    assert!(t.host.started.is_empty());
}

#[test]
fn startcap_udp_udpstr_and_reply() {
    let mut t = T::authed();
    t.open_eth0();
    let r = t.one(startcap(
        startcap_flags::DGRAM | startcap_flags::PROMISC,
        5000,
    ));
    assert_eq!(
        r,
        Message::StartCapReply(StartCapReply {
            bufsize: 4 << 20,
            portdata: 0
        })
    );
    let s = &t.host.started[0];
    assert_eq!(s.ifname, "eth0");
    assert_eq!(s.linktype, 1);
    assert_eq!(s.snaplen, 65535);
    assert!(s.promisc);
    assert_eq!(s.read_timeout, Duration::from_millis(250));
    assert_eq!(
        s.data,
        DataChannel::UdpStr {
            dest: "10.0.0.9:5000".parse().unwrap(),
            size: 1472
        }
    );
    // The combined filter: exclusion prefix, then the sensor's program last.
    assert!(s.filter.insns().len() > 1);
    assert_eq!(s.filter.insns().last(), accept_all().last());
    assert!(t.s.capturing());
}

#[test]
fn startcap_plain_udp_when_size_zero_and_tcp_in_active_mode() {
    let mut c = cfg();
    c.udpstr_size = 0;
    let mut t = T::with(c);
    t.one(Message::AuthReq(Auth::Null));
    t.open_eth0();
    t.one(startcap(startcap_flags::DGRAM, 5000));
    assert_eq!(
        t.host.started[0].data,
        DataChannel::PlainUdp {
            dest: "10.0.0.9:5000".parse().unwrap()
        }
    );
    t.one(startcap(0, 6000));
    assert_eq!(
        t.host.started[1].data,
        DataChannel::TcpConnect {
            dest: "10.0.0.9:6000".parse().unwrap()
        }
    );
}

#[test]
fn startcap_errors_passive_tcp_missing_port_and_host_failure() {
    let mut c = cfg();
    c.mode = Mode::Passive;
    let mut t = T::with(c);
    t.one(Message::AuthReq(Auth::Null));
    t.open_eth0();
    // Plain TCP in passive mode: the host listens, its port goes in the reply,
    // and the own-traffic exclusion is refined with it.
    t.host.data_port = 45678;
    assert_eq!(
        t.one(startcap(0, 6000)),
        Message::StartCapReply(StartCapReply {
            bufsize: 4 << 20,
            portdata: 45678
        })
    );
    assert_eq!(
        t.host.started[0].data,
        DataChannel::TcpListen {
            peer: "10.0.0.9".parse().unwrap(),
            timeout: Duration::from_secs(1)
        }
    );
    assert_eq!(t.host.filters.len(), 1);
    assert_ne!(t.host.filters[0].1, t.host.started[0].filter.insns());
    t.host.data_port = 0;
    // SERVEROPEN: the client listens, we connect.
    assert!(matches!(
        t.one(startcap(startcap_flags::SERVEROPEN, 6000)),
        Message::StartCapReply(_)
    ));
    assert_error(
        &t.one(startcap(startcap_flags::DGRAM, 0)),
        ErrorCode::StartCapture,
        "data port",
    );
    t.host.fail_start = Some("interface eth0: boom".into());
    assert_error(
        &t.one(startcap(startcap_flags::DGRAM, 5000)),
        ErrorCode::StartCapture,
        "boom",
    );
    assert!(!t.s.capturing());
    assert!(t.host.running.is_empty());
}

#[test]
fn snaplen_and_timeout_defaults() {
    let mut t = T::authed();
    t.open_eth0();
    t.one(Message::StartCapReq(StartCapReq {
        snaplen: 0,
        read_timeout_ms: 0,
        flags: startcap_flags::DGRAM,
        portdata: 1,
        filter: accept_all(),
    }));
    t.one(Message::StartCapReq(StartCapReq {
        snaplen: 10_000_000,
        read_timeout_ms: 5,
        flags: startcap_flags::DGRAM,
        portdata: 1,
        filter: accept_all(),
    }));
    assert_eq!(t.host.started[0].snaplen, MAX_SNAPLEN);
    assert_eq!(t.host.started[0].read_timeout, Duration::from_secs(1));
    assert_eq!(t.host.started[1].snaplen, MAX_SNAPLEN);
}

#[test]
fn second_startcap_stops_the_first() {
    let mut t = T::authed();
    t.open_eth0();
    t.one(startcap(startcap_flags::DGRAM, 5000));
    t.one(startcap(startcap_flags::DGRAM, 5001));
    assert_eq!(t.host.stopped, vec![1]);
    assert_eq!(t.host.running, vec![2]);
    // A new OPEN also ends the running capture.
    t.open_eth0();
    assert_eq!(t.host.running, Vec::<u32>::new());
}

#[test]
fn update_filter_and_sampling_running_and_stored() {
    let mut t = T::authed();
    let f2 = vec![Insn::new(0x06, 0, 0, 96)];
    // No capture: stored, acknowledged, no host call.
    assert_eq!(
        t.one(Message::UpdateFilterReq { filter: f2.clone() }),
        Message::UpdateFilterReply
    );
    let s = Sampling {
        method: 1,
        value: 10,
    };
    assert_eq!(t.one(Message::SetSamplingReq(s)), Message::SetSamplingReply);
    assert!(t.host.filters.is_empty() && t.host.samplings.is_empty());
    t.open_eth0();
    t.one(startcap(startcap_flags::DGRAM, 5000));
    // The stored sampling applies to the new capture.
    assert_eq!(t.host.started[0].sampling, s);
    assert_eq!(
        t.one(Message::UpdateFilterReq { filter: f2.clone() }),
        Message::UpdateFilterReply
    );
    let (id, combined) = &t.host.filters[0];
    assert_eq!(*id, 1);
    assert_eq!(combined.last(), f2.last());
    // Same exclusion prefix as at STARTCAP.
    let start = t.host.started[0].filter.insns();
    assert_eq!(combined[..combined.len() - 1], start[..start.len() - 1]);
    let s2 = Sampling {
        method: 2,
        value: 100,
    };
    assert_eq!(
        t.one(Message::SetSamplingReq(s2)),
        Message::SetSamplingReply
    );
    assert_eq!(t.host.samplings, vec![(1, s2)]);
    assert_error(
        &t.one(Message::SetSamplingReq(Sampling {
            method: 9,
            value: 1,
        })),
        ErrorCode::SetSampling,
        "method 9",
    );
}

#[test]
fn stats_live_then_saved_at_endcap() {
    let mut t = T::authed();
    assert_eq!(
        t.one(Message::StatsReq),
        Message::StatsReply(Stats::default())
    );
    t.open_eth0();
    t.one(startcap(startcap_flags::DGRAM, 5000));
    assert_eq!(t.one(Message::StatsReq), Message::StatsReply(Fake::live(1)));
    assert_eq!(t.one(Message::EndCapReq), Message::EndCapReply);
    assert!(t.host.running.is_empty());
    assert_eq!(t.one(Message::StatsReq), Message::StatsReply(Fake::last(1)));
    assert_error(
        &t.one(Message::EndCapReq),
        ErrorCode::EndCapture,
        "no capture",
    );
    // The device stays open after ENDCAP.
    assert!(matches!(
        t.one(startcap(startcap_flags::DGRAM, 5000)),
        Message::StartCapReply(_)
    ));
}

#[test]
fn close_ends_session_and_capture() {
    let mut t = T::authed();
    t.open_eth0();
    t.one(startcap(startcap_flags::DGRAM, 5000));
    assert!(t.req(Message::Close).is_empty());
    assert_eq!(t.s.ended(), Some(&Ended::Closed));
    assert!(t.host.running.is_empty());
    // CLOSE before auth ends the session too.
    let mut t = T::new();
    assert!(t.req(Message::Close).is_empty());
    assert_eq!(t.s.ended(), Some(&Ended::Closed));
}

#[test]
fn bodies_when_no_capture_runs_keep_stream_in_sync() {
    let mut t = T::authed();
    // Several requests with bodies in one chunk, no capture running, then STATS.
    let mut bytes = Vec::new();
    for m in [
        Message::UpdateFilterReq {
            filter: accept_all(),
        },
        Message::SetSamplingReq(Sampling {
            method: 1,
            value: 3,
        }),
        Message::OpenReq {
            source: "nosuch".into(),
        },
        Message::StatsReq,
    ] {
        m.encode(&mut bytes);
    }
    let r = t.raw(&bytes);
    assert_eq!(r.len(), 4);
    assert_eq!(r[0], Message::UpdateFilterReply);
    assert_eq!(r[1], Message::SetSamplingReply);
    assert_error(&r[2], ErrorCode::Open, "");
    assert_eq!(r[3], Message::StatsReply(Stats::default()));
}

#[test]
fn malformed_bodies_get_their_codes_and_stream_stays_in_sync() {
    let mut t = T::authed();
    t.open_eth0();
    let cases: Vec<(Vec<u8>, ErrorCode)> = vec![
        // STARTCAP body shorter than its fixed part.
        (
            raw_msg(0, MsgType::StartCapReq as u8, 0, &[0; 4]),
            ErrorCode::StartCapture,
        ),
        // STARTCAP with nitems beyond the payload.
        (
            raw_msg(
                0,
                MsgType::StartCapReq as u8,
                0,
                &[
                    0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 2, 0x13, 0x88, 0, 1, 0, 0, 0xff, 0xff, 0xff,
                    0xff,
                ],
            ),
            ErrorCode::StartCapture,
        ),
        // UPDATEFILTER with scratch memory index 16 (CVE-2026-0799): ld M[16]; ret a.
        (
            raw_msg(
                0,
                MsgType::UpdateFilterReq as u8,
                0,
                &[
                    0, 1, 0, 0, 0, 0, 0, 2, 0, 0x60, 0, 0, 0, 0, 0, 16, 0, 0x16, 0, 0, 0, 0, 0, 0,
                ],
            ),
            ErrorCode::UpdateFilter,
        ),
        // SETSAMPLING too short.
        (
            raw_msg(0, MsgType::SetSamplingReq as u8, 0, &[1]),
            ErrorCode::SetSampling,
        ),
    ];
    for (bytes, code) in cases {
        let r = t.raw(&bytes);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_error(&r[0], code, "");
        assert!(t.s.ended().is_none());
    }
    assert!(t.host.started.is_empty());
    // Trailing bytes after a body are ignored (CVE-2019-15161).
    let r = t.raw(&raw_msg(0, MsgType::StatsReq as u8, 0, &[9; 16]));
    assert_eq!(r, vec![Message::StatsReply(Stats::default())]);
    assert!(matches!(
        t.one(Message::FindAllIfReq),
        Message::FindAllIfReply(_)
    ));
}

#[test]
fn huge_plen_ends_session() {
    let mut t = T::authed();
    let mut h = raw_msg(0, MsgType::OpenReq as u8, 0, &[]);
    h[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    let r = t.raw(&h);
    assert_eq!(r.len(), 1);
    assert!(matches!(t.s.ended(), Some(Ended::Protocol(_))));
}

#[test]
fn byte_at_a_time() {
    let mut t = T::new();
    let mut bytes = Message::AuthReq(Auth::Null).to_bytes();
    Message::FindAllIfReq.encode(&mut bytes);
    let mut replies = Vec::new();
    for b in &bytes {
        replies.extend(t.raw(&[*b]));
    }
    assert!(matches!(
        replies[..],
        [Message::AuthReply(_), Message::FindAllIfReply(_)]
    ));
}

#[test]
fn capture_failure_is_reported_and_capture_ends() {
    let mut t = T::authed();
    t.open_eth0();
    t.one(startcap(startcap_flags::DGRAM, 5000));
    assert!(!t.check_capture());
    t.host.failure = Some("interface eth0 vanished".into());
    assert!(t.check_capture());
    let r = t.raw(&[]);
    assert_error(&r[0], ErrorCode::ReadEx, "interface eth0 vanished");
    assert!(t.host.running.is_empty());
    assert!(!t.s.capturing());
    assert!(t.s.ended().is_none());
    assert_eq!(t.one(Message::StatsReq), Message::StatsReply(Fake::last(1)));
}

/// A capturing sensor that polled STATS every 5 s and falls silent is
/// given up after 3 intervals; one that never polls is kept.
#[test]
fn a_capturing_sensor_that_stops_polling_is_given_up() {
    let mut c = cfg();
    c.liveness = Some(Duration::from_secs(30));
    for polls in [true, false] {
        let mut t = T::with(c.clone());
        t.one(Message::AuthReq(Auth::Null));
        t.open_eth0();
        t.one(startcap(startcap_flags::DGRAM, 5000));
        for _ in 0..4 {
            t.advance(Duration::from_secs(5));
            if polls {
                t.one(Message::StatsReq);
            }
        }
        assert!(t.s.ended().is_none());
        t.advance(Duration::from_secs(14));
        assert!(t.s.ended().is_none());
        t.advance(Duration::from_secs(2));
        if polls {
            assert!(matches!(t.s.ended(), Some(Ended::Timeout(_))));
            assert!(t.host.running.is_empty(), "the capture stops");
        } else {
            assert_eq!(t.s.poll_timeout(), None);
            t.advance(Duration::from_secs(3600));
            assert!(t.s.ended().is_none());
        }
    }
}

#[test]
fn own_traffic_is_excluded_by_the_combined_filter() {
    let mut c = cfg();
    c.local_filter = Some("not udp port 53".into());
    let mut t = T::with(c);
    t.one(Message::AuthReq(Auth::Null));
    t.open_eth0();
    t.one(startcap(startcap_flags::DGRAM, 5000));
    let prog = t.host.started[0].filter.clone();
    let ip = |s: &str| match s.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!(),
    };
    // Ethernet + IPv4 + TCP/UDP header, ports at the start of the L4 header.
    let frame = |proto: u8, src: &str, sport: u16, dst: &str, dport: u16| {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[22] = 64;
        f[23] = proto;
        f[26..30].copy_from_slice(&ip(src));
        f[30..34].copy_from_slice(&ip(dst));
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    };
    let run = |f: Vec<u8>| prog.run(&f, f.len() as u32);
    // The control connection, both directions: excluded.
    assert_eq!(run(frame(6, "10.0.0.5", 40000, "10.0.0.9", 2003)), 0);
    assert_eq!(run(frame(6, "10.0.0.9", 2003, "10.0.0.5", 40000)), 0);
    // Our data datagrams: excluded.
    assert_eq!(run(frame(17, "10.0.0.5", 33333, "10.0.0.9", 5000)), 0);
    // The local filter applies.
    assert_eq!(run(frame(17, "10.0.0.5", 33333, "10.0.0.1", 53)), 0);
    // Other traffic, even with the sensor: kept, with the sensor's snaplen.
    assert_eq!(run(frame(6, "10.0.0.5", 40001, "10.0.0.9", 2003)), 262_144);
    assert_eq!(run(frame(17, "10.0.0.5", 33333, "10.0.0.9", 5001)), 262_144);
    assert_eq!(run(frame(6, "10.0.0.7", 80, "10.0.0.8", 1234)), 262_144);
}

#[test]
fn tls_sessions_refuse_udp_data_and_mark_tcp_data_tls() {
    let mut c = cfg();
    c.tls = true;
    c.mode = Mode::Passive;
    let mut t = T::with(c);
    t.one(Message::AuthReq(Auth::Null));
    t.open_eth0();
    assert_error(
        &t.one(startcap(startcap_flags::DGRAM, 5000)),
        ErrorCode::StartCapture,
        "TLS",
    );
    assert!(matches!(t.one(startcap(0, 0)), Message::StartCapReply(_)));
    assert!(t.host.started[0].tls);
}

#[test]
fn reloaded_timeouts_apply_to_a_running_session() {
    let mut c = cfg();
    c.mode = Mode::Passive;
    c.auth_timeout = Some(Duration::from_secs(10));
    let mut t = T::with(c);
    let began = t.now;
    t.s.set_timeouts(Some(Duration::from_secs(3)), None);
    assert_eq!(t.s.poll_timeout(), Some(began + Duration::from_secs(3)));
    t.one(Message::AuthReq(Auth::Null));
    assert_eq!(t.s.poll_timeout(), None, "no idle timeout any more");
}

/// Found by the `session` fuzz target: the connection went while a host
/// answer was awaited during a capture; the stop then tripped "one answer
/// awaited at a time" (and, without debug assertions, replaced the awaited
/// answer).
#[test]
fn shutdown_while_an_answer_is_awaited_still_stops_the_capture() {
    let mut t = T::authed();
    t.open_eth0();
    t.one(startcap(startcap_flags::DGRAM, 5000));
    assert!(t.s.capturing());
    // STATS: the host's answer is still to come when the connection goes.
    t.s.handle(t.now, Input::Received(&Message::StatsReq.to_bytes()));
    assert!(matches!(
        t.s.poll_command(),
        Some(Command::Host(HostCommand::ReadStats))
    ));
    t.s.handle(t.now, Input::Shutdown);
    assert!(matches!(
        t.s.poll_command(),
        Some(Command::Host(HostCommand::Stop))
    ));
    assert!(!t.s.capturing());
    // The late answers are taken in order, the awaited one first.
    t.s.handle(t.now, Input::Answer(Answer::Stats(Fake::live(1))));
    t.s.handle(t.now, Input::Answer(Answer::Stopped(Fake::last(1))));
    assert!(t.s.poll_command().is_none());
    assert_eq!(t.sent(), vec![Message::StatsReply(Fake::live(1))]);
}

#[test]
fn replies_left_unread_hold_the_requests_back_until_the_peer_reads() {
    let mut t = T::new();
    // Pipelined requests before authentication, each answered with an error
    // ~7 times its size, and nothing read.
    let n = 20_000;
    let flood = raw_msg(0, MsgType::FindAllIfReq as u8, 0, &[]).repeat(n);
    t.s.handle(t.now, Input::Received(&flood));
    t.drive();
    let out = t.s.output().len();
    assert!(
        (OUTPUT_HIGH_WATER..OUTPUT_HIGH_WATER + 1024).contains(&out),
        "{out}"
    );
    assert!(!t.s.reading());
    assert!(t.s.output_blocked());
    // Nothing was taken: nothing more is done.
    t.s.handle(t.now, Input::Sent);
    assert_eq!(t.s.output().len(), out);
    // The peer reads: the held requests go on, in order, bounded each time.
    let mut replies = 0;
    while replies < n {
        let sent = t.sent();
        assert!(!sent.is_empty());
        for m in &sent {
            assert_error(m, ErrorCode::WrongMsg, "authentication");
        }
        replies += sent.len();
        t.s.handle(t.now, Input::Sent);
        assert!(t.s.output().len() < OUTPUT_HIGH_WATER + 1024);
    }
    assert_eq!(replies, n);
    assert!(t.s.reading());
    assert!(t.sent().is_empty());
}

#[test]
fn any_is_refused_at_open_when_the_sensors_line_says_capture_afxdp() {
    let mut c = cfg();
    c.capture = Some(CaptureChoice::AfXdp);
    let mut t = T::with(c);
    t.one(Message::AuthReq(Auth::Null));
    let r = t.one(Message::OpenReq {
        source: "any".into(),
    });
    assert_error(&r, ErrorCode::Open, "cannot be captured with AF_XDP");
    // Other devices still open with AF_XDP.
    assert!(matches!(
        t.one(Message::OpenReq {
            source: "eth0".into()
        }),
        Message::OpenReply { .. }
    ));
}

#[test]
fn startcap_direction_flags_reach_the_capture_as_libpcap_reads_them() {
    use crate::capture::Direction;
    use startcap_flags::{DGRAM, INBOUND, OUTBOUND};
    for (flags, want) in [
        (0, Direction::Both),
        (INBOUND, Direction::In),
        (OUTBOUND, Direction::Out),
        (INBOUND | OUTBOUND, Direction::Both),
    ] {
        let mut t = T::authed();
        t.open_eth0();
        t.one(startcap(DGRAM | flags, 5000));
        assert_eq!(t.host.started.len(), 1, "flags {flags:#x}");
        assert_eq!(t.host.started[0].direction, want, "flags {flags:#x}");
    }
}

#[test]
fn decap_splits_the_filter_into_outer_and_inner_programs() {
    let mut c = cfg();
    c.local_filter = Some("not udp port 53".into());
    c.decap = Some("vxlan:5".parse().unwrap());
    let mut t = T::with(c);
    t.one(Message::AuthReq(Auth::Null));
    t.open_eth0();
    t.one(startcap(startcap_flags::DGRAM, 5000));
    let start = &t.host.started[0];
    let d = start.decap.as_ref().expect("decap start");
    assert_eq!(d.spec.to_string(), "vxlan:5");
    // Ethernet + IPv4 + UDP to `dport` from `src`.
    let udp = |src: [u8; 4], dst: [u8; 4], dport: u16| {
        let mut f = vec![0u8; 14 + 20 + 8 + 8 + 14];
        f[12] = 0x08;
        f[14] = 0x45;
        let len = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&len.to_be_bytes());
        f[23] = 17;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    };
    let outer = |f: Vec<u8>| d.outer.run(&f, f.len() as u32);
    // The tunnel's packets pass the source's program; others do not; our
    // own data datagrams never do.
    assert!(outer(udp([10, 0, 0, 7], [10, 0, 0, 5], 4789)) > 0);
    assert!(outer(udp([10, 0, 0, 7], [10, 0, 0, 5], 6081)) > 0);
    assert_eq!(outer(udp([10, 0, 0, 7], [10, 0, 0, 5], 53)), 0);
    assert_eq!(outer(udp([10, 0, 0, 5], [10, 0, 0, 9], 5000)), 0);
    // The local filter and the sensor's judge the inner frames.
    let inner = |f: Vec<u8>| start.filter.run(&f, f.len() as u32);
    assert_eq!(inner(udp([1, 1, 1, 1], [2, 2, 2, 2], 53)), 0);
    assert!(inner(udp([1, 1, 1, 1], [2, 2, 2, 2], 80)) > 0);
}
