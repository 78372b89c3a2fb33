//! The file source through the whole datapath: a pcap/pcapng written by the
//! test is replayed to a loopback sensor; the filter runs in user space.

mod datapath_support;

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use datapath_support::*;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use rpcap::msg::Sampling;
use xrpcapd::datapath::{DatapathOptions, Transport, Worker};
use xrpcapd::settings::Backend;

const LIMIT: Duration = Duration::from_secs(5);

/// An Ethernet/IPv4/UDP frame to `dport` with `payload`.
fn udp_frame(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let ip_len = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&5555u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Frame i: port 7001 for even i, 7002 for odd; sizes vary up to jumbo.
fn frames(n: usize) -> Vec<(u32, u32, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let size = [64usize, 1500, 9000, 300][i % 4];
            let port = if i % 2 == 0 { 7001 } else { 7002 };
            (
                1_700_000_000 + i as u32,
                (i as u32 * 37) % 1_000_000,
                udp_frame(port, &payload(size, i)),
            )
        })
        .collect()
}

fn write_pcap(path: &Path, fr: &[(u32, u32, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(f).unwrap();
    for (s, us, d) in fr {
        let ts = Duration::new(u64::from(*s), us * 1000);
        w.write_packet(&PcapPacket::new(ts, d.len() as u32, d))
            .unwrap();
    }
}

/// pcapng with the default (µs) timestamp resolution, or nanoseconds.
fn write_pcapng(path: &Path, fr: &[(u32, u32, Vec<u8>)], nanos: bool) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = PcapNgWriter::new(f).unwrap();
    let options = if nanos {
        vec![InterfaceDescriptionOption::IfTsResol(9)]
    } else {
        vec![]
    };
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options,
    })
    .unwrap();
    for (s, us, d) in fr {
        // pcap-file writes the Duration's nanoseconds as raw timestamp units.
        let raw = if nanos {
            u64::from(*s) * 1_000_000_000 + u64::from(*us) * 1000
        } else {
            u64::from(*s) * 1_000_000 + u64::from(*us)
        };
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(raw),
            original_len: d.len() as u32,
            data: Cow::Borrowed(d),
            options: vec![],
        })
        .unwrap();
    }
}

fn file_spec(
    path: &Path,
    filter: rpcap::bpf::Program,
    transport: Transport,
) -> xrpcapd::datapath::CaptureSpec {
    let mut s = spec("file", filter, transport);
    s.capture.backend = Backend::File(path.to_owned());
    s
}

fn replay_and_check(path: &Path, fr: &[(u32, u32, Vec<u8>)]) {
    let sink = udp_sink();
    let w = Worker::start(file_spec(
        path,
        compile("udp dst port 7001"),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    ))
    .expect("start");
    let want: Vec<_> = fr.iter().step_by(2).collect();
    let (recs, st, _) = collect_udpstr(&sink, want.len(), LIMIT);
    assert!(wait_for(LIMIT, || w.is_finished()), "replay ends at EOF");
    assert!(w.failure().is_none(), "{:?}", w.failure());
    let stats = w.stop();
    assert_eq!(recs.len(), want.len());
    for (k, (r, (s, us, d))) in recs.iter().zip(&want).enumerate() {
        assert_eq!(r.hdr.npkt as usize, k + 1);
        assert_eq!((r.hdr.ts_sec, r.hdr.ts_usec), (*s, *us), "timestamp of {k}");
        assert_eq!(&r.data, d, "record {k}");
        assert_eq!(r.hdr.len as usize, d.len());
    }
    assert_eq!(st.seq_gaps, 0);
    assert_eq!(stats.ifrecv as usize, want.len());
    assert_eq!(stats.svrcapt as usize, want.len());
    assert_eq!(stats.ifdrop, 0);
}

#[test]
// Root: the replay outruns a default socket buffer; the sink needs
// SO_RCVBUFFORCE (CAP_NET_ADMIN) to hold all of it.
#[ignore = "needs root"]
fn pcap_file_is_replayed_filtered_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.pcap");
    let fr = frames(200);
    write_pcap(&p, &fr);
    replay_and_check(&p, &fr);
}

#[test]
// Root: the replay outruns a default socket buffer; the sink needs
// SO_RCVBUFFORCE (CAP_NET_ADMIN) to hold all of it.
#[ignore = "needs root"]
fn pcapng_file_is_replayed_with_its_timestamp_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let fr = frames(60);
    for nanos in [false, true] {
        let p = dir.path().join(format!("t{nanos}.pcapng"));
        write_pcapng(&p, &fr, nanos);
        replay_and_check(&p, &fr);
    }
}

#[test]
fn snaplen_and_filter_return_value_cut_frames() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.pcap");
    let fr = frames(8);
    write_pcap(&p, &fr);
    let sink = udp_sink();
    let mut s = file_spec(&p, accept_all(), Transport::PlainUdp { dest: addr(&sink) });
    s.capture.snaplen = 100;
    let w = Worker::start(s).expect("start");
    let recs = collect_plain(&sink, 8, LIMIT);
    assert_eq!(recs.len(), 8);
    for (r, (_, _, d)) in recs.iter().zip(&fr) {
        assert_eq!(r.data, d[..d.len().min(100)]);
        assert_eq!(r.hdr.len as usize, d.len());
    }
    w.stop();
}

#[test]
fn one_of_n_sampling_on_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.pcap");
    let fr = frames(90);
    write_pcap(&p, &fr);
    let sink = udp_sink();
    let mut s = file_spec(
        &p,
        accept_all(),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    );
    s.sampling = Sampling {
        method: 1,
        value: 3,
    };
    let w = Worker::start(s).expect("start");
    let (recs, _, _) = collect_udpstr(&sink, 30, LIMIT);
    assert!(wait_for(LIMIT, || w.is_finished()));
    let c = w.counters();
    assert_eq!(recs.len(), 30);
    for (k, r) in recs.iter().enumerate() {
        assert_eq!(r.data, fr[3 * k + 2].2);
    }
    assert_eq!(c.sampled_out, 60);
    assert_eq!(w.stop().svrcapt, 30);
}

#[test]
fn refused_udp_is_counted_and_the_replay_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.pcap");
    let fr = frames(100);
    write_pcap(&p, &fr);
    // A port nobody listens on: every datagram draws an ICMP port unreachable.
    let closed = {
        let s = udp_sink();
        addr(&s)
    };
    let w = Worker::start(file_spec(
        &p,
        accept_all(),
        Transport::PlainUdp { dest: closed },
    ))
    .expect("start");
    assert!(wait_for(LIMIT, || w.is_finished()));
    assert!(w.failure().is_none(), "{:?}", w.failure());
    let c = w.counters();
    eprintln!("{c:?}");
    assert_eq!(c.received, 100);
    assert!(c.refused > 0, "ECONNREFUSED seen and counted");
    assert_eq!(c.datagrams_sent + c.datagrams_dropped, 100);
    w.stop();
}

#[test]
// Root: the replay outruns a default socket buffer; the sink needs
// SO_RCVBUFFORCE (CAP_NET_ADMIN) to hold all of it.
#[ignore = "needs root"]
fn udpstr_without_gso_and_tiny_datagrams_still_exact() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.pcap");
    let fr = frames(40);
    write_pcap(&p, &fr);
    for (gso, size) in [(false, 1472), (true, 200), (false, 65000), (true, 8972)] {
        let sink = udp_sink();
        let w = Worker::start_with(
            file_spec(
                &p,
                accept_all(),
                Transport::UdpStr {
                    dest: addr(&sink),
                    size,
                },
            ),
            DatapathOptions {
                gso,
                ..Default::default()
            },
        )
        .expect("start");
        let (recs, st, _) = collect_udpstr(&sink, 40, LIMIT);
        assert_eq!(recs.len(), 40, "size {size} gso {gso}");
        for (r, (_, _, d)) in recs.iter().zip(&fr) {
            assert_eq!(&r.data, d);
        }
        assert_eq!(st.seq_gaps, 0);
        w.stop();
    }
}
