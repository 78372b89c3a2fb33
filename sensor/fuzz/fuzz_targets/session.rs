//! Agent bytes into the sensor's RPCAP client session (sensor/src/session.rs):
//! it must never panic, and everything it sends back must decode as RPCAP.
//! The driver's part is played too: STARTCAP after OPEN, STATS requests,
//! filter updates, reply timeouts, a clock that moves.
//!
//! Input: chunks as `ctl u8 | len u8 | bytes`; `ctl` picks what the driver
//! does after the chunk and how far the clock moves.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rpcap::bpf::Insn;
use rpcap::conn::Codec;
use rpcap::msg::Auth;
use xrpcap_sensor::choose::Choice;
use xrpcap_sensor::session::{DataTransport, Event, Session, SessionConfig};

fuzz_target!(|input: &[u8]| {
    let cfg = SessionConfig {
        auth: Auth::Null,
        choice: Choice::default(),
        snaplen: 65535,
        read_timeout_ms: 100,
        promisc: true,
        sampling: None,
        direction: Default::default(),
    };
    let mut now = Instant::now();
    let mut s = Session::new(cfg, now);
    let mut out = Vec::new();
    let mut rest = input;
    while let [ctl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        let _ = s.receive(chunk, now);
        while let Some(ev) = s.poll_event() {
            if let Event::Opened { .. } = ev {
                let transport = match ctl % 3 {
                    0 => DataTransport::Udp { port: 2003 },
                    1 => DataTransport::TcpSensorListens { port: 2004 },
                    _ => DataTransport::TcpAgentListens,
                };
                s.start_capture(transport, vec![Insn::new(0x06, 0, 0, 65535)], now);
            }
        }
        now += Duration::from_millis(u64::from(ctl >> 4) * 100);
        match ctl & 0x0c {
            0x04 => s.request_stats(now),
            0x08 => s.update_filter(vec![Insn::new(0x06, 0, 0, 0)], now),
            0x0c => {
                let _ = s.check_timeout(now, Duration::from_secs(1));
            }
            _ => {}
        }
        s.write_to(&mut out).expect("Vec never fails");
    }
    // What the session sent is well-formed RPCAP, message after message.
    let mut c = Codec::control();
    c.feed(&out);
    while let Some(r) = c.next().expect("the session frames what it sends") {
        r.message.expect("the session sends messages it can decode");
    }
});
