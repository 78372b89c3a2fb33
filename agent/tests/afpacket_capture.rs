//! The AF_PACKET datapath end to end: real frames through a veth in a
//! namespace pair, a Worker capturing c0 and sending to a loopback sensor
//! socket in the capture namespace.

mod datapath_support;

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use datapath_support::*;
use rpcap::bpf::{Insn, Program};
use rpcap::msg::Sampling;
use xrpcapd::datapath::{DatapathOptions, Transport, Worker};

const PORT: u16 = 7001;
const OTHER: u16 = 7002;
const SIZES: [usize; 3] = [64, 1500, 9000];
const PER_SIZE: usize = 40;
const LIMIT: Duration = Duration::from_secs(5);

/// Sends PER_SIZE frames of every size to PORT, in size order.
fn send_all(tx: &std::net::UdpSocket) {
    for (k, &size) in SIZES.iter().enumerate() {
        send(tx, PORT, size, PER_SIZE, k * PER_SIZE);
    }
}

fn udpstr_matches_reference(gso: bool) {
    let ns = NetnsPair::new();
    let tx = ns.gen_sender();
    let sink = udp_sink();
    let expr = format!("udp dst port {PORT}");
    let mut reference = Reference::open("c0", &expr);
    let spec = spec(
        "c0",
        compile(&expr),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    );
    let opts = DatapathOptions {
        gso,
        ..Default::default()
    };
    let worker = Worker::start_with(spec, opts).expect("start");
    let total = SIZES.len() * PER_SIZE;
    send_all(&tx);

    let (recs, st, dgrams) = collect_udpstr(&sink, total, LIMIT);
    let refs = reference.collect(total, LIMIT);
    let c = worker.counters();
    let stats = worker.stop();
    eprintln!(
        "gso={gso} (in use: {}), {} datagrams, {c:?}",
        c.gso,
        dgrams.len()
    );
    assert_eq!(c.gso, gso, "GSO availability on this kernel/loopback");

    assert_eq!(refs.len(), total, "libpcap reference saw every frame");
    assert_eq!(recs.len(), total, "sensor got every frame");
    for (i, (r, want)) in recs.iter().zip(&refs).enumerate() {
        assert_eq!(r.hdr.npkt as usize, i + 1, "npkt counts from 1");
        assert_eq!(r.hdr.caplen as usize, r.data.len());
        assert_eq!(r.hdr.len as usize, want.len(), "wire length of frame {i}");
        assert_eq!(&r.data, want, "frame {i} byte-exact");
        let size = SIZES[i / PER_SIZE];
        assert_eq!(r.data.len(), size);
        assert!(r.data.ends_with(&payload(size, i)), "payload of frame {i}");
    }
    assert_eq!(st.seq_gaps, 0);
    assert_eq!(st.lost_records, 0);
    assert_eq!(st.malformed, 0);
    assert_eq!(stats.ifrecv as usize, total);
    assert_eq!(stats.svrcapt as usize, total);
    assert_eq!(stats.ifdrop, 0);
    assert_eq!(stats.krnldrop, 0);
}

#[test]
#[ignore = "needs root"]
fn udpstr_frames_are_byte_exact_with_gso() {
    udpstr_matches_reference(true);
}

#[test]
#[ignore = "needs root"]
fn udpstr_frames_are_byte_exact_without_gso() {
    udpstr_matches_reference(false);
}

/// A burst of 64-byte frames through the worker: the records, byte-exact
/// against libpcap, and the size of every datagram.
fn small_frames_burst(gso: bool) -> Vec<usize> {
    const N: usize = 17 * 24;
    let ns = NetnsPair::new();
    let tx = ns.gen_sender();
    let sink = udp_sink();
    let expr = format!("udp dst port {PORT}");
    let mut reference = Reference::open("c0", &expr);
    let transport = Transport::UdpStr {
        dest: addr(&sink),
        size: 1472,
    };
    let opts = DatapathOptions {
        gso,
        ..Default::default()
    };
    let worker = Worker::start_with(spec("c0", compile(&expr), transport), opts).expect("start");
    send(&tx, PORT, 64, N, 0);
    let (recs, st, sizes) = collect_udpstr(&sink, N, LIMIT);
    let refs = reference.collect(N, LIMIT);
    assert_eq!(worker.counters().gso, gso);
    worker.stop();
    assert_eq!(refs.len(), N, "libpcap reference saw every frame");
    assert_eq!(recs.len(), N, "sensor got every frame");
    for (i, (r, want)) in recs.iter().zip(&refs).enumerate() {
        assert_eq!(&r.data, want, "frame {i} byte-exact");
    }
    assert_eq!((st.seq_gaps, st.lost_records, st.malformed), (0, 0, 0));
    assert!(sizes.iter().all(|&n| n <= 1472), "{sizes:?}");
    sizes
}

/// With GSO, same-size small frames are cut at whole records (17 records
/// of 84 bytes: 1436-byte datagrams, one size, so one GSO send per run);
/// without, at the full size as the references do.
#[test]
#[ignore = "needs root"]
fn same_size_small_frames_are_cut_at_whole_records_with_gso() {
    let count = |sizes: &[usize], n: usize| sizes.iter().filter(|&&s| s == n).count();
    let aligned = small_frames_burst(true);
    eprintln!("with GSO: {aligned:?}");
    assert!(
        count(&aligned, 1436) * 2 > aligned.len(),
        "most datagrams 1436 bytes: {aligned:?}"
    );
    let full = small_frames_burst(false);
    eprintln!("without GSO: {full:?}");
    assert!(
        count(&full, 1472) * 2 > full.len(),
        "most datagrams 1472 bytes: {full:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn filter_is_honoured_and_replaced_mid_capture() {
    let ns = NetnsPair::new();
    let tx = ns.gen_sender();
    let sink = udp_sink();
    let spec = spec(
        "c0",
        compile(&format!("udp dst port {PORT}")),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    );
    let worker = Worker::start(spec).expect("start");
    send(&tx, OTHER, 200, 30, 0);
    send(&tx, PORT, 200, 10, 100);
    let (first, _, _) = collect_udpstr(&sink, 10, LIMIT);
    assert_eq!(first.len(), 10);
    assert!(first.iter().all(|r| r
        .data
        .ends_with(&payload(200, 100 + (r.hdr.npkt as usize - 1)))));
    assert_eq!(
        count_more(&sink, Duration::from_millis(200)),
        0,
        "nothing of port {OTHER}"
    );

    worker
        .update_filter(compile(&format!("udp dst port {OTHER}")))
        .expect("update filter");
    send(&tx, PORT, 300, 25, 0);
    send(&tx, OTHER, 300, 15, 200);
    let (second, _, _) = collect_udpstr(&sink, 15, LIMIT);
    assert_eq!(second.len(), 15);
    for (k, r) in second.iter().enumerate() {
        assert_eq!(
            r.hdr.npkt as usize,
            11 + k,
            "npkt continues across UPDATEFILTER"
        );
        assert!(r.data.ends_with(&payload(300, 200 + k)));
    }
    assert_eq!(count_more(&sink, Duration::from_millis(200)), 0);

    // A program rpcap accepts but the kernel refuses (reads scratch memory
    // never written): an error, and the capture goes on with the old filter.
    let bad = vec![Insn::new(0x60, 0, 0, 0), Insn::new(0x16, 0, 0, 0)];
    assert!(worker.update_filter(Program::new(bad).unwrap()).is_err());
    send(&tx, OTHER, 300, 5, 300);
    let (third, _, _) = collect_udpstr(&sink, 5, LIMIT);
    assert_eq!(third.len(), 5);
    assert!(worker.failure().is_none());
    let stats = worker.stop();
    assert_eq!(stats.ifrecv, 30);
    assert_eq!(stats.svrcapt, 30);
}

#[test]
#[ignore = "needs root"]
fn sampling_one_of_n_keeps_exactly_every_nth() {
    let ns = NetnsPair::new();
    let tx = ns.gen_sender();
    let sink = udp_sink();
    let mut s = spec(
        "c0",
        compile(&format!("udp dst port {PORT}")),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    );
    s.sampling = Sampling {
        method: 1,
        value: 5,
    };
    let worker = Worker::start(s).expect("start");
    send(&tx, PORT, 100, 100, 0);
    let (recs, _, _) = collect_udpstr(&sink, 20, LIMIT);
    assert_eq!(recs.len(), 20);
    for (k, r) in recs.iter().enumerate() {
        assert_eq!(r.hdr.npkt as usize, k + 1, "npkt counts sent packets");
        // The 5th, 10th, … frame.
        assert!(r.data.ends_with(&payload(100, 5 * k + 4)), "record {k}");
    }
    assert_eq!(count_more(&sink, Duration::from_millis(200)), 0);

    // Back to every packet.
    worker.set_sampling(Sampling {
        method: 0,
        value: 0,
    });
    std::thread::sleep(Duration::from_millis(50));
    send(&tx, PORT, 100, 7, 1000);
    let (more, _, _) = collect_udpstr(&sink, 7, LIMIT);
    assert_eq!(more.len(), 7);
    let c = worker.counters();
    let stats = worker.stop();
    assert_eq!(c.sampled_out, 80);
    assert_eq!(stats.ifrecv, 107);
    assert_eq!(stats.svrcapt, 27);
    assert_eq!(stats.ifdrop, 0, "sampling is not a drop");
}

#[test]
#[ignore = "needs root"]
fn plain_udp_sends_one_packet_message_per_frame() {
    let ns = NetnsPair::new();
    let tx = ns.gen_sender();
    let sink = udp_sink();
    let expr = format!("udp dst port {PORT}");
    let mut reference = Reference::open("c0", &expr);
    let worker = Worker::start(spec(
        "c0",
        compile(&expr),
        Transport::PlainUdp { dest: addr(&sink) },
    ))
    .expect("start");
    send_all(&tx);
    let total = SIZES.len() * PER_SIZE;
    let recs = collect_plain(&sink, total, LIMIT);
    let refs = reference.collect(total, LIMIT);
    let stats = worker.stop();
    assert_eq!(recs.len(), total);
    assert_eq!(refs.len(), total);
    for (i, (r, want)) in recs.iter().zip(&refs).enumerate() {
        assert_eq!(r.hdr.npkt as usize, i + 1);
        assert_eq!(&r.data, want, "frame {i}");
    }
    assert_eq!(stats.svrcapt as usize, total);
}

#[test]
#[ignore = "needs root"]
fn tcp_transport_streams_plain_messages_and_reports_a_closed_peer() {
    let ns = NetnsPair::new();
    let tx = ns.gen_sender();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let agent_side = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut sensor_side, _) = listener.accept().unwrap();
    let expr = format!("udp dst port {PORT}");
    let mut reference = Reference::open("c0", &expr);
    let worker = Worker::start(spec(
        "c0",
        compile(&expr),
        Transport::Tcp(agent_side.into()),
    ))
    .expect("start");
    send_all(&tx);
    let total = SIZES.len() * PER_SIZE;
    let recs = collect_tcp(&mut sensor_side, total, LIMIT);
    let refs = reference.collect(total, LIMIT);
    assert_eq!(recs.len(), total);
    for (i, (r, want)) in recs.iter().zip(&refs).enumerate() {
        assert_eq!(r.hdr.npkt as usize, i + 1);
        assert_eq!(&r.data, want, "frame {i}");
    }
    assert!(worker.failure().is_none());

    drop(sensor_side);
    assert!(
        wait_for(LIMIT, || worker.failure().is_some()),
        "closed data connection noticed"
    );
    let f = worker.failure().unwrap();
    assert!(f.contains("data connection closed"), "{f}");
    assert!(worker.is_finished());
    let stats = worker.stop();
    assert_eq!(stats.svrcapt as usize, total);
}

#[test]
#[ignore = "needs root"]
fn deleted_interface_is_reported_as_vanished() {
    let ns = NetnsPair::new();
    let tx = ns.gen_sender();
    let sink = udp_sink();
    let worker = Worker::start(spec(
        "c0",
        compile(&format!("udp dst port {PORT}")),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    ))
    .expect("start");
    send(&tx, PORT, 100, 5, 0);
    let (recs, _, _) = collect_udpstr(&sink, 5, LIMIT);
    assert_eq!(recs.len(), 5);
    assert!(worker.failure().is_none());
    ns.delete_capture_link();
    assert!(
        wait_for(LIMIT, || worker.failure().is_some()),
        "vanished interface noticed"
    );
    assert_eq!(worker.failure().unwrap(), "interface c0 vanished");
    let stats = worker.stop();
    assert_eq!(stats.svrcapt, 5);
}

#[test]
#[ignore = "needs root"]
fn link_down_and_up_keeps_capturing() {
    let ns = NetnsPair::new();
    let tx = ns.gen_sender();
    let sink = udp_sink();
    let worker = Worker::start(spec(
        "c0",
        compile(&format!("udp dst port {PORT}")),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    ))
    .expect("start");
    let run = |args: &[&str]| {
        assert!(std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap()
            .success())
    };
    run(&["-n", ns.cap.name(), "link", "set", "c0", "down"]);
    std::thread::sleep(Duration::from_millis(200));
    run(&["-n", ns.cap.name(), "link", "set", "c0", "up"]);
    assert!(worker.failure().is_none(), "{:?}", worker.failure());
    // Carrier and ARP come back; then frames flow again.
    std::thread::sleep(Duration::from_millis(300));
    let _ = ns.gen_sender();
    send(&tx, PORT, 100, 5, 0);
    let (recs, _, _) = collect_udpstr(&sink, 5, LIMIT);
    assert_eq!(recs.len(), 5);
    assert!(worker.failure().is_none());
    worker.stop();
}

#[test]
fn missing_interface_fails_to_start() {
    let sink = udp_sink();
    let err = Worker::start(spec(
        "xrpcap-none0",
        accept_all(),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    ))
    .unwrap_err();
    assert!(err.to_string().contains("xrpcap-none0"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn dry_run_frames_but_sends_nothing() {
    let ns = NetnsPair::new();
    let tx = ns.gen_sender();
    let sink = udp_sink();
    let mut s = spec(
        "c0",
        compile(&format!("udp dst port {PORT}")),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    );
    s.capture.settings_mut().dry_run = true;
    let worker = Worker::start(s).expect("start");
    send(&tx, PORT, 500, 12, 0);
    assert!(wait_for(LIMIT, || worker.counters().received == 12));
    let c = worker.counters();
    let stats = worker.stop();
    assert_eq!(count_more(&sink, Duration::from_millis(200)), 0);
    assert_eq!(c.framed, 12);
    assert_eq!(stats.ifrecv, 12);
    assert_eq!(stats.svrcapt, 0);
    assert_eq!(stats.ifdrop, 0);
}

/// An idle worker sleeps in its ring until its next timed wake-up; a
/// command must not wait for that: it wakes the worker (eventfd).
#[test]
#[ignore = "needs root"]
fn commands_wake_an_idle_worker_at_once() {
    let ns = NetnsPair::new();
    ns.cap.switch_thread();
    let sink = udp_sink();
    let s = spec(
        "c0",
        compile(&format!("udp dst port {PORT}")),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    );
    let other = compile(&format!("udp dst port {OTHER}"));
    assert_commands_wake_an_idle_worker(s, [other, compile(&format!("udp dst port {PORT}"))]);
}

/// Tagged and untagged frames: the kernel takes the VLAN tag off before
/// AF_PACKET's filter runs, yet the filter must mean what it means on the
/// wire (tag at offset 12), as the frames are forwarded tagged: `vlan 10`
/// matches the tagged frames of VLAN 10, `udp` matches only untagged ones.
/// AF_XDP (which sees the tag in the frame) must agree.
#[test]
#[ignore = "needs root"]
fn vlan_tagged_frames_meet_the_filter_as_on_the_wire() {
    use xrpcapd::settings::{XdpMode, XdpSettings};
    let afxdp = |mode| {
        Some(XdpSettings {
            mode,
            ..XdpSettings::default()
        })
    };
    let ns = NetnsPair::new();
    let mut frames = Vec::new();
    for i in 0..24 {
        let vlan = [None, Some(10), Some(20)][i % 3];
        let port = [PORT, OTHER][i / 3 % 2];
        frames.push(udp4_frame(vlan, port, &payload(100 + i, i)));
    }
    for expr in [
        "vlan 10",
        "vlan 20 and udp dst port 7001",
        "udp dst port 7001",
        "vlan and udp",
        "udp or vlan 20",
    ] {
        let want = accepted(expr, &frames);
        assert!(
            !want.is_empty() && want.len() < frames.len(),
            "{expr}: the traffic exercises the filter"
        );
        for xdp in [None, afxdp(XdpMode::Generic), afxdp(XdpMode::Native)] {
            let name = format!("{expr} on {xdp:?}");
            let got = capture_raw(&ns, xdp, expr, &frames);
            assert_eq!(got.len(), want.len(), "{name}: frame count");
            assert!(got == want, "{name}: different frames");
        }
    }
}

/// At a low rate the worker wakes about once per latency bound (the ring
/// hands a block over when the bound has passed since its first frame, and
/// the worker then sends all it read), not once per frame nor per 20 ms as
/// before the bound ruled the block timeout; and no frame waits longer
/// than the bound, save the scheduling slack of a loaded machine.
#[test]
#[ignore = "needs root"]
fn a_slow_link_wakes_the_worker_about_once_per_latency_bound() {
    let ns = NetnsPair::new();
    let tx = ns.gen_sender();
    let sink = udp_sink();
    let s = spec(
        "c0",
        compile(&format!("udp dst port {PORT}")),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    );
    assert_a_slow_link_wakes_about_once_per_bound(&tx, s, &sink, PORT, Duration::from_millis(250));
}
