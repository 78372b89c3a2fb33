//! Test harness: the real sensor binary, and a scripted agent that plays the
//! agent side of RPCAP over real loopback sockets.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rpcap::bpf::Insn;
use rpcap::header::MAX_CONTROL_PLEN;
use rpcap::msg::{if_flags, Auth, IfAddr, Interface, Message, StartCapReply, StartCapReq, Stats};
use rpcap::stream::StreamDecoder;
use rpcap::udpstr::{Batch, Framer};
use rpcap::PktHdr;

pub const BIN: &str = env!("CARGO_BIN_EXE_xrpcap-sensor");

/// A running sensor; killed on drop if still running.
pub struct Sensor {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub stats_file: PathBuf,
}

pub struct Finished {
    pub code: Option<i32>,
    pub stderr: String,
    pub stdout: Vec<u8>,
}

impl Sensor {
    /// Starts the sensor with `--out DIR --stats-file DIR/stats` plus `args`.
    pub fn start(args: &[&str]) -> Sensor {
        Self::start_with(args, Stdio::null())
    }

    pub fn start_with(args: &[&str], stdout: Stdio) -> Sensor {
        Self::start_env(args, stdout, &[])
    }

    pub fn start_env(args: &[&str], stdout: Stdio, env: &[(&str, &str)]) -> Sensor {
        let dir = tempfile::tempdir().unwrap();
        let stats_file = dir.path().join("stats.txt");
        let out = dir.path().join("out");
        let child = Command::new(BIN)
            .arg("--out")
            .arg(&out)
            .arg("--stats-file")
            .arg(&stats_file)
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("sensor starts");
        Sensor {
            child,
            dir,
            stats_file,
        }
    }

    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the sensor to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> Finished {
        let mut stderr = self.child.stderr.take().unwrap();
        let err_reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut stdout = self.child.stdout.take();
        let out_reader = thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(o) = stdout.as_mut() {
                let _ = o.read_to_end(&mut v);
            }
            v
        });
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "sensor did not exit within {limit:?}; stderr:\n{}",
                    err_reader.join().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Finished {
            code: status.code(),
            stderr: err_reader.join().unwrap(),
            stdout: out_reader.join().unwrap(),
        }
    }

    /// The `key=value` final lines of the stats file.
    pub fn final_lines(&self) -> Vec<Vec<(String, String)>> {
        let text = std::fs::read_to_string(&self.stats_file).expect("stats file written");
        text.lines()
            .filter(|l| !l.is_empty())
            .map(parse_line)
            .collect()
    }

    /// Capture files written (sorted).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.out_dir())
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn parse_line(l: &str) -> Vec<(String, String)> {
    l.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn field<'a>(line: &'a [(String, String)], key: &str) -> &'a str {
    line.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

pub fn num(line: &[(String, String)], key: &str) -> u64 {
    field(line, key).parse().unwrap()
}

/// The interfaces every scripted agent lists.
pub fn interfaces() -> Vec<Interface> {
    let up = if_flags::UP | if_flags::RUNNING;
    let a = |s: &str| IfAddr {
        addr: s.parse().unwrap(),
        netmask: None,
        broadaddr: None,
        dstaddr: None,
        scope_id: 0,
    };
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

/// A record of the test traffic: header and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub hdr: PktHdr,
    pub data: Vec<u8>,
}

/// `n` records of varied sizes, npkt 1..=n, bytes tagged with `tag`.
pub fn records(n: u32, tag: u8) -> Vec<Record> {
    (1..=n)
        .map(|i| {
            let caplen = 20 + (i * 37) % 400;
            let data: Vec<u8> = (0..caplen).map(|b| (b as u8) ^ tag ^ (i as u8)).collect();
            Record {
                hdr: PktHdr {
                    ts_sec: 1_700_000_000 + i,
                    ts_usec: i * 1000,
                    caplen,
                    len: caplen + 10,
                    npkt: i,
                },
                data,
            }
        })
        .collect()
}

/// Frames records into udpstr datagrams of `size` bytes; also returns, per
/// record, the datagram indices it spans.
pub fn frame(recs: &[Record], size: usize) -> (Vec<Vec<u8>>, Vec<(usize, usize)>) {
    let mut framer = Framer::new(size).unwrap();
    let mut batch = Batch::new(size, Batch::min_slots(size, 1000).max(8));
    let mut dgrams: Vec<Vec<u8>> = Vec::new();
    let mut spans = Vec::new();
    for r in recs {
        let first = dgrams.len() + batch.ready();
        framer.push(&mut batch, &r.hdr, &r.data).unwrap();
        // The record ends in the partial datagram, or in the last complete one
        // if it exactly filled it.
        let has_partial = framer.has_partial(&batch);
        let last = dgrams.len() + batch.ready() - usize::from(!has_partial);
        spans.push((first, last));
        dgrams.extend(batch.datagrams().map(<[u8]>::to_vec));
        batch.consume();
    }
    if framer.flush(&mut batch) {
        dgrams.extend(batch.datagrams().map(<[u8]>::to_vec));
        batch.consume();
    }
    (dgrams, spans)
}

/// The pcap file the sensor must write for these records.
pub fn pcap_bytes(recs: &[&Record], snaplen: u32, linktype: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0xA1B2_C3D4u32.to_ne_bytes());
    v.extend_from_slice(&2u16.to_ne_bytes());
    v.extend_from_slice(&4u16.to_ne_bytes());
    for x in [0u32, 0, snaplen, linktype] {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    for r in recs {
        for x in [r.hdr.ts_sec, r.hdr.ts_usec, r.hdr.caplen, r.hdr.len] {
            v.extend_from_slice(&x.to_ne_bytes());
        }
        v.extend_from_slice(&r.data);
    }
    v
}

/// A UDP socket on 127.0.0.1 sending to the sensor's data port.
pub fn data_socket(port: u16) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect((IpAddr::V4(Ipv4Addr::LOCALHOST), port)).unwrap();
    s
}

/// Packets tcpdump reads from a file (fails the test if tcpdump cannot).
pub fn tcpdump_count(f: &Path) -> usize {
    let out = Command::new("tcpdump")
        .arg("-ttnr")
        .arg(f)
        .output()
        .expect("tcpdump runs");
    assert!(
        out.status.success(),
        "tcpdump cannot read {}: {}",
        f.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("1700000"))
        .count()
}
