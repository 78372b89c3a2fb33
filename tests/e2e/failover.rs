//! End-to-end, failover groups (issue 18 item 6): xrpcapd in ns cap with
//! two ActiveClient lines sharing `failover=g`, two xrpcap-sensor processes
//! in ns sen (ports 2003 and 2004), numbered datagrams crossing the
//! captured link all along. Only the first sensor gets frames; SIGKILL it
//! and the second captures within 5 s; start the first again and the agent
//! fails back within `FailbackSecs` (+ a dial), closing the second's
//! session: no datagram is ever in both sensors' files (never two sessions
//! at once). Needs root.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xrpcap_testkit::daemon::count_of;
use xrpcap_testkit::prometheus::http_get_in;
use xrpcap_testkit::traffic::{seq_of, udp};
use xrpcap_testkit::wait::wait_for;
use xrpcap_testkit::{numbered_payloads, read_pcap, require_root, Agent, Sensor, Topology};

/// The failover bound the issue states (default settings: a killed sensor
/// resets its connection at once).
const FAILOVER_BOUND: Duration = Duration::from_secs(5);
/// `FailbackSecs` of the test.
const FAILBACK_SECS: u64 = 3;
/// The agent's metrics endpoint, in ns cap.
const METRICS: &str = "127.0.0.1:9918";

use xrpcap_testkit::netns::sock_addr as addr;

/// The numbered payloads in every capture file of `sensor` (a killed
/// sensor's file may end in a torn record: what can be read).
fn seqs(sensor: &Sensor) -> BTreeSet<u32> {
    sensor
        .files()
        .unwrap_or_default()
        .iter()
        .flat_map(|f| read_pcap(f).unwrap_or_default())
        .filter_map(|p| udp(&p).and_then(|u| seq_of(u.payload)))
        .collect()
}

#[test]
#[ignore = "needs root"]
fn a_killed_sensor_fails_over_within_5_s_and_fails_back() {
    require_root();
    let topo = Topology::new().unwrap();
    let _sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    let a_addr = addr(Topology::SEN_IP, 2003);
    let b_addr = addr(Topology::SEN_IP, 2004);
    let mut a = Sensor::start(&topo.sen, a_addr, &[]).unwrap();
    let b = Sensor::start(&topo.sen, b_addr, &[]).unwrap();
    let ini = format!(
        "ActiveClient = {sen}, 2003, ifname={cap}, failover=g\n\
         ActiveClient = {sen}, 2004, ifname={cap}, failover=g\n\
         NullAuthPermit = YES\nFailbackSecs = {FAILBACK_SECS}\n",
        cap = Topology::CAP_IF,
        sen = Topology::SEN_IP,
    );
    let mut agent = Agent::start(&topo.cap, &ini, &["--metrics-listen", METRICS]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let metrics = |want: &[String]| {
        let mut page = String::new();
        let found = wait_for(Duration::from_secs(10), || {
            page = http_get_in(topo.cap.name(), METRICS.parse().unwrap(), "/metrics", None)
                .map(|r| r.1)
                .unwrap_or_default();
            want.iter().all(|w| page.lines().any(|l| l == w))
        });
        assert!(found, "{want:?} not all in\n{page}");
    };
    let line = |family: &str, sensor: &str, extra: &str, v: u64| {
        format!("{family}{{sensor=\"10.200.2.2:{sensor}\"{extra}}} {v}")
    };
    let state = |sensor: &str, state: &str| {
        line(
            "xrpcapd_sensor_state",
            sensor,
            &format!(",state=\"{state}\""),
            1,
        )
    };
    metrics(&[state("2003", "capturing"), state("2004", "standby")]);

    // Numbered datagrams every 10 ms until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let socket = topo.gen.udp_socket(addr(Topology::GEN_IP, 4000)).unwrap();
        std::thread::spawn(move || {
            for p in numbered_payloads(20_000, 64) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                socket.send_to(&p, addr(Topology::CAP_IP, 5000)).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // Only A gets frames.
    assert!(
        wait_for(Duration::from_secs(20), || seqs(&a).len() > 100),
        "A got no frames\n{}",
        agent.log()
    );
    assert!(seqs(&b).is_empty(), "B got frames while A was up");
    assert_eq!(
        count_of(&b.log(), "authenticated"),
        0,
        "B saw a session:\n{}",
        b.log()
    );

    // Kill A mid-capture: B captures within the bound.
    let before_kill = seqs(&a);
    a.kill().unwrap();
    let killed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(20), || !seqs(&b).is_empty()),
        "B never got frames\n{}",
        agent.log()
    );
    let took = killed.elapsed();
    eprintln!(
        "failover: B's file got frames {:.2} s after SIGKILL of A",
        took.as_secs_f64()
    );
    assert!(
        took <= FAILOVER_BOUND,
        "failover took {took:?}\n{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains("failover group g: sensor 10.200.2.2:2003 lost"),
        "{log}"
    );
    let gap = log
        .lines()
        .find(|l| l.contains("failover group g: capturing on sensor 10.200.2.2:2004"))
        .unwrap_or_else(|| panic!("no capture gap reported\n{log}"));
    eprintln!("agent: {gap}");

    // A comes back: the agent fails back within FailbackSecs and a dial,
    // and B's session is closed.
    std::thread::sleep(Duration::from_secs(1));
    let a2 = Sensor::start(&topo.sen, a_addr, &[]).unwrap();
    let back = Instant::now();
    let bound = Duration::from_secs(FAILBACK_SECS + 5);
    assert!(
        wait_for(bound + Duration::from_secs(10), || !seqs(&a2).is_empty()),
        "A never got frames again\n{}",
        agent.log()
    );
    let took = back.elapsed();
    eprintln!(
        "failback: A's new file got frames {:.2} s after A restarted",
        took.as_secs_f64()
    );
    assert!(took <= bound, "failback took {took:?}\n{}", agent.log());
    assert!(agent
        .log()
        .contains("failing back from sensor 10.200.2.2:2004"));
    let mut b = b;
    b.wait_log("session closed", 1, Duration::from_secs(10))
        .unwrap();

    // Let both files fill a little more, then stop the traffic.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (in_b, in_a2) = (seqs(&b), seqs(&a2));
    // Never two sessions at once: no datagram in two sensors' files, and
    // the frames follow each other A, B, A.
    assert!(in_b.is_disjoint(&before_kill), "A and B overlap");
    assert!(in_b.is_disjoint(&in_a2), "B and A again overlap");
    assert!(before_kill.last() < in_b.first());
    assert!(in_b.last() < in_a2.first());
    let lost_over = in_b.first().unwrap() - before_kill.last().unwrap() - 1;
    let lost_back = in_a2.first().unwrap() - in_b.last().unwrap() - 1;
    eprintln!(
        "datagrams in no file: {lost_over} at the failover (some of them A had before it died \
         and never wrote), {lost_back} at the failback"
    );
    agent.stop().unwrap();
}

/// A sensor that goes silent (SIGSTOP: its kernel still acknowledges, it
/// sends no more STATS requests) is given up after `LivenessSecs` (3 of its
/// 1 s STATS intervals, at most LivenessSecs): with `LivenessSecs = 4` the
/// next sensor of the group captures within 4 s and a dial — the ≤ 5 s
/// bound for silent sensors that docs/failover.md states.
#[test]
#[ignore = "needs root"]
fn a_silent_sensor_fails_over_within_liveness_secs() {
    require_root();
    let topo = Topology::new().unwrap();
    let _sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    let mut a = Sensor::start(&topo.sen, addr(Topology::SEN_IP, 2003), &[]).unwrap();
    let b = Sensor::start(&topo.sen, addr(Topology::SEN_IP, 2004), &[]).unwrap();
    let ini = format!(
        "ActiveClient = {sen}, 2003, ifname={cap}, failover=g\n\
         ActiveClient = {sen}, 2004, ifname={cap}, failover=g\n\
         NullAuthPermit = YES\nLivenessSecs = 4\nFailbackSecs = 3600\n",
        cap = Topology::CAP_IF,
        sen = Topology::SEN_IP,
    );
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let socket = topo.gen.udp_socket(addr(Topology::GEN_IP, 4000)).unwrap();
        std::thread::spawn(move || {
            for p in numbered_payloads(20_000, 64) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                socket.send_to(&p, addr(Topology::CAP_IP, 5000)).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    assert!(
        wait_for(Duration::from_secs(20), || seqs(&a).len() > 100),
        "A got no frames\n{}",
        agent.log()
    );
    // STATS requests every second for a few seconds: the rhythm is known.
    std::thread::sleep(Duration::from_secs(4));
    a.child().signal("STOP").unwrap();
    let silent = Instant::now();
    assert!(
        wait_for(Duration::from_secs(30), || !seqs(&b).is_empty()),
        "B never got frames\n{}",
        agent.log()
    );
    let took = silent.elapsed();
    eprintln!(
        "silent sensor: B's file got frames {:.2} s after SIGSTOP of A",
        took.as_secs_f64()
    );
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    a.child().signal("CONT").unwrap();
    let log = agent.log();
    assert!(
        log.contains("failover group g: sensor 10.200.2.2:2003 lost"),
        "{log}"
    );
    assert!(took <= FAILOVER_BOUND, "took {took:?}\n{log}");
}
