//! One RPCAP control connection, server side: the sans-IO `Session` driven by
//! bytes from an untrusted peer, with a fake capture host, password checker
//! and clock whose answers (and their timing) the input also chooses.
//!
//! Input: two bytes of session settings, then operations, each an opcode byte
//! and its operands: raw bytes from the peer, a well-formed request built
//! from fields (so that the fuzzer gets past authentication and OPEN), the
//! answer to the oldest outstanding command, time passing, a capture failure,
//! TLS, shutdown, the peer reading some replies.
//!
//! Checked: nothing panics (debug assertions on); no host work is asked for
//! before authentication; a capture never leaks (a second one is never
//! started while the host runs one); replies are well-framed RPCAP messages
//! that decode, never a request, only ERROR or the AUTH reply before
//! authentication; an ended session has no timer.
#![no_main]

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rpcap::bpf::Insn;
use rpcap::conn::Codec;
use rpcap::msg::{if_flags, Auth, IfAddr, Interface, Sampling, StartCapReq, Stats};
use rpcap::{Message, MsgType};
use xrpcapd::session::{
    Answer, Command, HostCommand, HostError, Input, Mode, Session, SessionConfig,
};
use xrpcapd::settings::Preselect;

/// The operands, read front to back; missing bytes read as 0.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// `len u8` then that many bytes (fewer at the end of the input).
    fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8()).min(self.0.len());
        let (c, rest) = self.0.split_at(n);
        self.0 = rest;
        c
    }
    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.chunk()).into_owned()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Settings from two bytes of flags.
fn config(flags: u8, more: u8) -> SessionConfig {
    SessionConfig {
        mode: if flags & 1 != 0 {
            Mode::Passive
        } else {
            Mode::Active
        },
        null_auth: flags & 2 != 0,
        preselect: Preselect {
            ifname: (flags & 4 != 0).then(|| "eth0".into()),
            ifaddr: None,
        },
        udpstr_size: if flags & 8 != 0 { 0 } else { 1472 },
        ring_size: 4 << 20,
        local_filter: None,
        log_stats: flags & 16 != 0,
        auth: Arc::default(),
        tls: flags & 32 != 0,
        data_accept_timeout: Duration::from_secs(1),
        capture: None,
        auth_timeout: (flags & 64 != 0).then(|| Duration::from_secs(10)),
        idle_timeout: (flags & 128 != 0).then(|| Duration::from_secs(30)),
        liveness: (more & 1 != 0).then(|| Duration::from_secs(30)),
        slot: (flags & 1 == 0).then(|| "sensor.example:2003".into()),
        decap: None,
    }
}

/// What the fake host lists: loopback and one Ethernet interface.
fn interfaces() -> Vec<Interface> {
    [
        ("lo", if_flags::LOOPBACK | if_flags::UP, "127.0.0.1"),
        ("eth0", if_flags::UP | if_flags::RUNNING, "fe80::1"),
    ]
    .into_iter()
    .map(|(name, flags, addr)| Interface {
        name: name.into(),
        description: format!("{name} of the fake host"),
        flags,
        addrs: vec![IfAddr::from(addr.parse::<IpAddr>().unwrap())],
    })
    .collect()
}

/// A filter: accept all, reject all, or instructions from the input (the
/// session must refuse those that do not validate).
fn filter(b: &mut Bytes) -> Vec<Insn> {
    match b.u8() % 3 {
        0 => vec![Insn::new(0x06, 0, 0, 262_144)],
        1 => vec![Insn::new(0x06, 0, 0, 0)],
        _ => (0..b.u8() % 8)
            .map(|_| Insn::new(b.u16(), b.u8(), b.u8(), b.u32()))
            .collect(),
    }
}

/// A request (or CLOSE, or ERROR) as a client would send it.
fn request(b: &mut Bytes) -> Message {
    match b.u8() % 11 {
        0 => Message::AuthReq(Auth::Null),
        1 => Message::AuthReq(Auth::Password {
            user: b.chunk().to_vec(),
            password: b.chunk().to_vec(),
        }),
        2 => Message::FindAllIfReq,
        3 => Message::OpenReq {
            source: match b.u8() % 5 {
                0 => "eth0".into(),
                1 => "lo".into(),
                2 => "rpcap://10.0.0.1/eth0".into(),
                3 => "missing".into(),
                _ => b.text(),
            },
        },
        4 => Message::StartCapReq(StartCapReq {
            snaplen: b.u32(),
            read_timeout_ms: b.u32(),
            flags: b.u16(),
            portdata: b.u16(),
            filter: filter(b),
        }),
        5 => Message::UpdateFilterReq { filter: filter(b) },
        6 => Message::SetSamplingReq(Sampling {
            method: b.u8(),
            value: b.u32(),
        }),
        7 => Message::StatsReq,
        8 => Message::EndCapReq,
        9 => Message::Close,
        _ => Message::Error {
            code: b.u16(),
            text: b.text(),
        },
    }
}

/// The capture host, checker and backoff of the driver, answering as the
/// input says; at most one capture runs, as on the real host.
struct Driver {
    session: Session,
    now: Instant,
    /// Commands taken from the session, not answered yet (oldest first).
    waiting: VecDeque<Command>,
    /// The host runs a capture for this connection.
    capture: bool,
    /// Replies the peer has read, decoded as the peer would.
    peer: Codec,
}

impl Driver {
    /// Takes the session's new commands; checks none asks for host work
    /// before authentication.
    fn collect(&mut self) {
        while let Some(cmd) = self.session.poll_command() {
            if let Command::Host(h) = &cmd {
                assert!(
                    self.session.authenticated(),
                    "host work before authentication: {h:?}"
                );
            }
            self.waiting.push_back(cmd);
        }
    }

    /// Answers the oldest outstanding command; `b` says how.
    fn answer(&mut self, b: &mut Bytes) {
        let Some(cmd) = self.waiting.pop_front() else {
            return;
        };
        let ok = b.u8() % 4 != 0;
        let answer = match cmd {
            Command::Host(h) => match h {
                HostCommand::ListInterfaces => Answer::Interfaces(if ok {
                    Ok(interfaces())
                } else {
                    Err("cannot list".into())
                }),
                HostCommand::ReadLinktype(name) => Answer::Linktype(
                    if ok && interfaces().iter().any(|i| i.name == name) {
                        Ok(1)
                    } else {
                        Err("no such interface".into())
                    },
                ),
                HostCommand::StartCapture(req) => {
                    assert!(!self.capture, "a capture leaked: {req:?} while one runs");
                    self.capture = ok;
                    Answer::Started(if ok {
                        Ok(b.u16())
                    } else {
                        Err(HostError::DataChannel("refused".into()))
                    })
                }
                HostCommand::UpdateFilter(_) => Answer::FilterUpdated(if ok {
                    Ok(())
                } else {
                    Err(HostError::NoCapture)
                }),
                HostCommand::SetSampling(_) => return,
                HostCommand::ReadStats => Answer::Stats(stats(b)),
                HostCommand::Stop => {
                    self.capture = false;
                    Answer::Stopped(stats(b))
                }
            },
            Command::CheckPassword(_) => Answer::PasswordChecked(ok),
            Command::HoldFailedAuth => Answer::Hold(Duration::from_millis(b.u8().into())),
            Command::AuthSucceeded => return,
        };
        self.session.handle(self.now, Input::Answer(answer));
    }

    /// The peer reads up to `n` bytes of replies.
    fn read(&mut self, n: usize) {
        let out = self.session.output();
        let n = n.min(out.len());
        self.peer.feed(&out[..n]);
        self.session.consume_output(n);
        let authenticated = self.session.authenticated();
        while let Some(r) = self.peer.next().expect("reply framing") {
            let msg = r.message.expect("a reply that decodes");
            let t = msg.msg_type();
            assert!(
                t == MsgType::Error || t.is_reply(),
                "the server sent a request: {msg:?}"
            );
            if !authenticated {
                assert!(
                    matches!(t, MsgType::Error | MsgType::AuthReply),
                    "{msg:?} before authentication"
                );
            }
        }
    }
}

fn stats(b: &mut Bytes) -> Stats {
    Stats {
        ifrecv: b.u32(),
        ifdrop: b.u32(),
        krnldrop: b.u32(),
        svrcapt: b.u32(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let now = Instant::now();
    let local = "10.0.0.5:2002".parse().unwrap();
    let peer = "10.0.0.9:40000".parse().unwrap();
    let mut d = Driver {
        session: Session::new(config(b.u8(), b.u8()), local, peer, now),
        now,
        waiting: VecDeque::new(),
        capture: false,
        peer: Codec::control(),
    };
    while !b.is_empty() {
        // Replies the peer reads are checked before authentication changes
        // what may be sent.
        if !d.session.authenticated() {
            d.read(usize::MAX);
        }
        match b.u8() % 9 {
            0 => {
                let raw = b.chunk();
                d.session.handle(d.now, Input::Received(raw));
            }
            1 | 2 => {
                let bytes = request(&mut b).to_bytes();
                d.session.handle(d.now, Input::Received(&bytes));
            }
            3 | 4 => d.answer(&mut b),
            5 => {
                d.now += Duration::from_millis(u64::from(b.u16()) * 16);
                d.session.handle_timeout(d.now);
            }
            6 => d
                .session
                .handle(d.now, Input::CaptureFailed("interface gone".into())),
            7 => match b.u8() % 3 {
                0 => d.session.handle(d.now, Input::Tls),
                // The connection goes (below): nothing comes after it.
                1 => break,
                _ => d.read(usize::from(b.u16())),
            },
            _ => {
                // A timer the session asked for fires when due.
                if let Some(at) = d.session.poll_timeout() {
                    assert!(d.session.ended().is_none());
                    d.now = d.now.max(at);
                    d.session.handle_timeout(d.now);
                }
            }
        }
        d.collect();
        if d.session.ended().is_some() {
            assert_eq!(d.session.poll_timeout(), None);
        }
    }
    // The connection goes: the capture stops, late answers are taken, and
    // what was sent so far must still frame.
    d.session.handle(d.now, Input::Shutdown);
    d.collect();
    while !d.waiting.is_empty() {
        d.answer(&mut b);
        d.collect();
    }
    assert!(!d.capture || d.session.capturing(), "the host runs a capture its session forgot");
    d.read(usize::MAX);
});
