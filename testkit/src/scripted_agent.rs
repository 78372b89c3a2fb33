//! The agent side of RPCAP, scripted: it accepts or dials a sensor over real
//! loopback sockets and answers the sensor's requests the way a test says.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rpcap::bpf::Insn;
use rpcap::header::MAX_CONTROL_PLEN;
use rpcap::msg::{if_flags, Auth, IfAddr, Interface, Message, StartCapReply, StartCapReq, Stats};
use rpcap::stream::StreamDecoder;

/// The interfaces every scripted agent lists.
pub fn interfaces() -> Vec<Interface> {
    let up = if_flags::UP | if_flags::RUNNING;
    let a = |s: &str| IfAddr::from(s.parse::<IpAddr>().unwrap());
    vec![
        Interface {
            name: "lo".into(),
            description: String::new(),
            flags: if_flags::LOOPBACK | up,
            addrs: vec![a("127.0.0.1")],
        },
        Interface {
            name: "eth0".into(),
            description: "uplink".into(),
            flags: up,
            addrs: vec![a("10.1.0.5")],
        },
        Interface {
            name: "eth1".into(),
            description: "mirror ;preselected".into(),
            flags: up,
            addrs: vec![a("10.2.0.5")],
        },
        Interface {
            name: "eth2".into(),
            description: String::new(),
            flags: up,
            addrs: vec![a("10.3.0.7"), a("2001:db8::7")],
        },
    ]
}

/// The agent side of one control connection.
pub struct ScriptedAgent {
    pub ctl: TcpStream,
    dec: StreamDecoder,
}

impl ScriptedAgent {
    /// Waits for the sensor to dial us (passive mode).
    pub fn accept(l: &std::net::TcpListener) -> ScriptedAgent {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    return ScriptedAgent {
                        ctl: s,
                        dec: StreamDecoder::new(MAX_CONTROL_PLEN),
                    };
                }
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("the sensor did not dial us: {e}"),
            }
        }
    }

    /// An agent on a control connection the caller made (e.g. from a
    /// chosen local address).
    pub fn from_stream(s: TcpStream) -> ScriptedAgent {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        ScriptedAgent {
            ctl: s,
            dec: StreamDecoder::new(MAX_CONTROL_PLEN),
        }
    }

    /// Connects to the sensor (retrying while it starts).
    pub fn connect(port: u16) -> ScriptedAgent {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    return ScriptedAgent {
                        ctl: s,
                        dec: StreamDecoder::new(MAX_CONTROL_PLEN),
                    };
                }
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("cannot connect to the sensor on {port}: {e}"),
            }
        }
    }

    /// The next message from the sensor; None on EOF.
    pub fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some((h, p)) = self.dec.next().expect("sane framing") {
                return Some(Message::decode(&h, p).expect("sensor sends valid messages"));
            }
            match self.ctl.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.dec.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("agent read: {e}"),
            }
        }
    }

    pub fn send(&mut self, m: &Message) {
        self.ctl.write_all(&m.to_bytes()).unwrap();
    }

    /// Answers AUTH, FINDALLIF, OPEN and STARTCAP; returns the opened interface
    /// name and the STARTCAP request.
    pub fn handshake(&mut self, linktype: i32) -> (String, StartCapReq) {
        self.handshake_full(linktype, 0).1
    }

    /// As `handshake`, replying `reply_port` to STARTCAP; also returns the AUTH request.
    pub fn handshake_full(
        &mut self,
        linktype: i32,
        reply_port: u16,
    ) -> (Auth, (String, StartCapReq)) {
        let auth = match self.recv() {
            Some(Message::AuthReq(a)) => a,
            m => panic!("expected AUTH, got {m:?}"),
        };
        self.send(&Message::AuthReply(None));
        assert_eq!(self.recv(), Some(Message::FindAllIfReq));
        self.send(&Message::FindAllIfReply(interfaces()));
        let name = match self.recv() {
            Some(Message::OpenReq { source }) => source,
            m => panic!("expected OPEN, got {m:?}"),
        };
        self.send(&Message::OpenReply { linktype, tzoff: 0 });
        let req = match self.recv() {
            Some(Message::StartCapReq(r)) => r,
            m => panic!("expected STARTCAP, got {m:?}"),
        };
        self.send(&Message::StartCapReply(StartCapReply {
            bufsize: 1 << 20,
            portdata: reply_port,
        }));
        (auth, (name, req))
    }

    /// Answers STATS (with `stats`) and UPDATEFILTER (reporting each new
    /// filter on the channel) in a thread until the sensor closes.
    pub fn serve(mut self, stats: Stats) -> (thread::JoinHandle<()>, mpsc::Receiver<Vec<Insn>>) {
        let (tx, rx) = mpsc::channel();
        let h = thread::spawn(move || {
            while let Some(m) = self.recv() {
                match m {
                    Message::StatsReq => self.send(&Message::StatsReply(stats)),
                    Message::UpdateFilterReq { filter } => {
                        self.send(&Message::UpdateFilterReply);
                        let _ = tx.send(filter);
                    }
                    Message::Close => break,
                    _ => {}
                }
            }
        });
        (h, rx)
    }
}
