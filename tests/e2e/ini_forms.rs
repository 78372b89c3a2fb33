//! End-to-end: rpcapd.ini forms of the reference daemons read by the real
//! xrpcapd (issue 14), and a preselection that matches no interface: warned
//! at start, at each reload and by `--check-config`, naming the missing
//! interface; its sensor's OPEN requests are refused until it appears.
//! Needs root (network namespace): ignored without it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rpcap::header::{Header, MsgType};
use rpcap::msg::{Auth, Message};
use rpcap::ErrorCode;
use xrpcap_testkit::daemon::START_TIMEOUT;
use xrpcap_testkit::{bin_path, require_root, Agent, Netns};

fn read_msg(s: &mut TcpStream) -> (Header, Vec<u8>) {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).expect("a message header");
    let header = Header::parse(&h).unwrap();
    let mut p = vec![0u8; header.plen as usize];
    s.read_exact(&mut p).expect("a message body");
    (header, p)
}

fn open(s: &mut TcpStream, source: &str) -> (Header, String) {
    s.write_all(
        &Message::OpenReq {
            source: source.into(),
        }
        .to_bytes(),
    )
    .unwrap();
    let (h, p) = read_msg(s);
    (h, String::from_utf8_lossy(&p).into_owned())
}

#[test]
#[ignore = "needs root"]
fn unmatched_preselection_is_warned_and_refuses_open_until_the_interface_appears() {
    require_root();
    let ns = Netns::new("inipre").unwrap();
    let sensor: SocketAddr = "127.0.0.1:2003".parse().unwrap();
    let listener = ns.tcp_listener(sensor).unwrap();
    // ExtraHop's documented spelling (space after `=`), a trailing comment,
    // CRLF line ends: the line preselects `nosuch9`.
    let ini = "NullAuthPermit = YES\r\nMaxBackoffSecs = 1\r\n\
               ActiveClient = 127.0.0.1, 2003, ifname= nosuch9 # lab sensor\r\n";
    let mut agent = Agent::start(&ns, ini, &[]).unwrap();
    let path = agent.config_path();
    let p = path.to_str().unwrap().to_string();

    // --check-config: the spelling warnings with file:line, the missing
    // interface by name.
    let out = ns
        .command(bin_path("xrpcapd"))
        .args(["-f", &p, "-v", "--check-config"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("ActiveClient = 127.0.0.1, 2003, ifname=nosuch9\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "# WARNING: ActiveClient = 127.0.0.1, 2003, ifname=nosuch9: no interface nosuch9; \
             that sensor's OPEN requests are refused until the interface appears (interfaces: any, lo)"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "{p}:3: `ifname= nosuch9` read as `ifname=nosuch9`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{p}:3: ActiveClient = 127.0.0.1, 2003, ifname= nosuch9: trailing comment ignored"
        )),
        "{stderr}"
    );

    // At start.
    agent
        .wait_log("ifname=nosuch9: no interface nosuch9", 1, START_TIMEOUT)
        .unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&Message::AuthReq(Auth::Null).to_bytes())
        .unwrap();
    let (h, _) = read_msg(&mut s);
    assert_eq!(h.kind(), Some(MsgType::AuthReply), "{h:?}");
    // Refused: no interface is served in its place (ExtraHop's would).
    let (h, text) = open(&mut s, "lo");
    assert_eq!(h.kind(), Some(MsgType::Error), "{h:?}");
    assert_eq!(h.value, ErrorCode::Open as u16);
    assert_eq!(
        text,
        "no interface matches the preselection (ifname=nosuch9)"
    );

    // At each reload.
    agent.child().signal("HUP").unwrap();
    agent
        .wait_log("ifname=nosuch9: no interface nosuch9", 2, START_TIMEOUT)
        .unwrap();

    // The interface appears: OPEN succeeds on it, and only on it.
    ns.run(
        "ip",
        [
            "link", "add", "nosuch9", "type", "veth", "peer", "name", "nosuch9p",
        ],
    )
    .unwrap();
    ns.run("ip", ["link", "set", "nosuch9", "up"]).unwrap();
    let (h, text) = open(&mut s, "nosuch9");
    assert_eq!(h.kind(), Some(MsgType::OpenReply), "{h:?} {text}");
    let (h, text) = open(&mut s, "lo");
    assert_eq!(h.kind(), Some(MsgType::Error));
    assert_eq!(text, "can only open preselected interface 'nosuch9'");
    drop(s);
    agent.stop().unwrap();
}
