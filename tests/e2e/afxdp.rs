//! End-to-end, AF_XDP capture with the real binaries (issue 5): the XDP
//! program is attached while a sensor captures, the frames arrive, and it
//! is gone from the interface after SIGTERM. Needs root.

use std::time::Duration;

use xrpcap_testkit::netns::xdp_attached;
use xrpcap_testkit::{
    numbered_payloads, require_root, send_udp, wait_for_packets, Agent, Sensor, Topology,
};

const FRAMES: u32 = 50;
const ARRIVAL: Duration = Duration::from_secs(20);

use xrpcap_testkit::netns::sock_addr as addr;

/// Starts sensor and agent with `ini_extra` / `client_extra`, checks the
/// program is on c0 while capturing and that the frames arrive, then stops
/// the agent with SIGTERM and checks the program is gone.
fn afxdp_capture_detaches_on_sigterm(ini_extra: &str, client_extra: &str) {
    require_root();
    let topo = Topology::new().unwrap();
    let ini = format!(
        "ActiveClient = {}, {}, ifname={}{client_extra}\nNullAuthPermit = YES\n\
         MaxBackoffSecs = 1\n{ini_extra}",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    assert!(!xdp_attached(&topo.cap, Topology::CAP_IF));
    let mut sensor = Sensor::start(
        &topo.sen,
        addr(Topology::SEN_IP, Topology::SEN_PORT),
        &["--filter", "udp dst port 7001"],
    )
    .unwrap();
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    agent.wait_log("AF_XDP capture", 1, ARRIVAL).unwrap();
    assert!(
        xdp_attached(&topo.cap, Topology::CAP_IF),
        "no XDP program on c0 while capturing:\n{}",
        agent.log()
    );

    let payloads = numbered_payloads(FRAMES, 100);
    send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 7002),
        addr(Topology::CAP_IP, 7001),
        &payloads,
    )
    .unwrap();
    let file = sensor.the_file().unwrap();
    let got = wait_for_packets(&file, FRAMES as usize, ARRIVAL).unwrap();
    assert_eq!(got.len(), FRAMES as usize);

    agent.stop().unwrap();
    assert!(
        !xdp_attached(&topo.cap, Topology::CAP_IF),
        "XDP program left on c0 after SIGTERM:\n{}",
        topo.cap
            .run("ip", ["link", "show", "dev", Topology::CAP_IF])
            .unwrap()
    );
    sensor.stop().unwrap();
}

#[test]
#[ignore = "needs root"]
fn capture_afxdp_key_attaches_and_sigterm_detaches() {
    afxdp_capture_detaches_on_sigterm("Capture = afxdp:c0\n", "");
}

#[test]
#[ignore = "needs root"]
fn active_client_capture_option_starts_an_afxdp_capture() {
    // `Capture` stays afpacket; only this sensor's line asks for AF_XDP.
    afxdp_capture_detaches_on_sigterm("Capture = afpacket\n", ", capture=afxdp");
}
