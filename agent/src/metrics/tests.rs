use super::*;

fn counters(received: u64, framed: u64) -> Counters {
    Counters {
        received,
        framed,
        kernel_drops: 2,
        send_dropped: 1,
        datagrams_sent: 4,
        framed_bytes: framed * 100,
        bytes_sent: framed * 110,
        truncated: 1,
        ..Counters::default()
    }
}

fn live(id: u64, c: Counters) -> LiveCapture {
    LiveCapture {
        sensor: "sensor.example:2003".into(),
        interface: "eth1".into(),
        id,
        counters: c,
    }
}

/// The value of the sample `name{labels}` in `page` (labels as rendered).
fn sample(page: &str, name_labels: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name_labels)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn page() -> String {
    let mut totals = Totals::default();
    let captures = totals.update(vec![live(16, counters(10, 9))]);
    let snap = Snapshot {
        slots: vec![SlotSnapshot {
            sensor: "sensor.example:2003".into(),
            state: "capturing",
            attempts: 3,
            last_error: Some("connection refused\nsecond line".into()),
        }],
        captures,
    };
    render(
        &snap,
        &Process {
            resident_bytes: 4096,
            uptime_seconds: 1.5,
        },
    )
}

#[test]
fn renders_slots_captures_and_process_in_the_text_format() {
    let p = page();
    let s = r#"sensor="sensor.example:2003""#;
    assert_eq!(
        sample(
            &p,
            &format!("xrpcapd_sensor_state{{{s},state=\"capturing\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &p,
            &format!("xrpcapd_sensor_state{{{s},state=\"dialing\"}}")
        ),
        Some(0.0)
    );
    assert_eq!(
        p.matches("xrpcapd_sensor_state{").count(),
        SLOT_STATES.len()
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_sensor_attempts_total{{{s}}}")),
        Some(3.0)
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_sensor_reconnects_total{{{s}}}")),
        Some(2.0)
    );
    // One line of the error, in a label of the info metric.
    assert_eq!(
        sample(
            &p,
            &format!("xrpcapd_sensor_last_error_info{{error=\"connection refused\",{s}}}")
        ),
        Some(1.0),
        "{p}"
    );
    let c = format!("{{interface=\"eth1\",{s}}}");
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_frames_seen_total{c}")),
        Some(12.0)
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_frames_sent_total{c}")),
        Some(8.0)
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_bytes_sent_total{c}")),
        Some(990.0)
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_framed_bytes_total{c}")),
        Some(900.0)
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_ring_drops_total{c}")),
        Some(2.0)
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_send_drops_total{c}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_truncated_total{c}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_running{c}")),
        Some(1.0)
    );
    // No XDP counters where the backend has none.
    assert!(!p.contains("xrpcapd_capture_xdp_"), "{p}");
    assert_eq!(
        sample(&p, "xrpcapd_process_resident_memory_bytes"),
        Some(4096.0)
    );
    assert_eq!(sample(&p, "xrpcapd_uptime_seconds"), Some(1.5));
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&p, &format!("xrpcapd_build_info{{version=\"{v}\"}}")),
        Some(1.0)
    );
    // Text format 0.0.4: the TYPE line names the counter with its _total.
    assert!(
        p.contains("# TYPE xrpcapd_capture_frames_sent_total counter\n"),
        "{p}"
    );
}

#[test]
fn xdp_counters_appear_for_af_xdp_captures() {
    let mut c = counters(5, 5);
    c.xdp = Some(crate::capture::XdpStats {
        redirected: 7,
        filtered: 3,
        ring_full: 1,
    });
    let mut totals = Totals::default();
    let snap = Snapshot {
        slots: vec![],
        captures: totals.update(vec![live(1, c)]),
    };
    let p = render(
        &snap,
        &Process {
            resident_bytes: 0,
            uptime_seconds: 0.0,
        },
    );
    let l = r#"{interface="eth1",sensor="sensor.example:2003"}"#;
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_xdp_redirected_total{l}")),
        Some(7.0)
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_xdp_filtered_total{l}")),
        Some(3.0)
    );
    assert_eq!(
        sample(&p, &format!("xrpcapd_capture_xdp_ring_full_total{l}")),
        Some(1.0)
    );
}

/// Counters only go up: an ended capture's counters stay, the next
/// capture of the same labels (another connection, or the same one's
/// restart from 0) adds to them.
#[test]
fn totals_survive_the_captures() {
    let mut t = Totals::default();
    let framed = |s: &[CaptureSnapshot]| s[0].counters.framed;
    assert_eq!(framed(&t.update(vec![live(16, counters(10, 10))])), 10);
    assert_eq!(framed(&t.update(vec![live(16, counters(20, 20))])), 20);
    // Gone: kept, not running.
    let gone = t.update(vec![]);
    assert_eq!((framed(&gone), gone[0].running), (20, false));
    // Another connection's capture.
    assert_eq!(framed(&t.update(vec![live(17, counters(5, 5))])), 25);
    // The same connection restarts its capture: counters from 0.
    assert_eq!(framed(&t.update(vec![live(17, counters(2, 2))])), 27);
    assert_eq!(framed(&t.update(vec![live(17, counters(3, 3))])), 28);
    t.retain_sensors(|s| s != "sensor.example:2003");
    assert!(t.update(vec![]).is_empty());
}

#[test]
fn labels_of_sensors_and_errors() {
    let label = |host: &str, port| {
        crate::settings::ActiveClient {
            host: host.into(),
            port,
            preselect: Default::default(),
            capture: None,
            decap: None,
        }
        .slot_name()
    };
    assert_eq!(label("192.0.2.1", 2003), "192.0.2.1:2003");
    assert_eq!(label("2001:db8::1", 2003), "[2001:db8::1]:2003");
    assert_eq!(label("sensor.example", 1), "sensor.example:1");
    let long = "x".repeat(300);
    assert_eq!(error_label(&long).chars().count(), 201);
}

#[test]
fn page_size_and_rss_are_read() {
    assert!(page_size().is_power_of_two() && page_size() >= 4096);
    let p = Process::read(Instant::now());
    assert!(p.resident_bytes > 1 << 20, "{p:?}");
}

/// The endpoint answers GET /metrics with the published snapshot, 404 otherwise.
#[test]
fn endpoint_serves_the_published_snapshot() {
    use std::io::{Read, Write};
    let published = Published::default();
    let ep = serve("127.0.0.1:0".parse().unwrap(), published.clone()).unwrap();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(ep.addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let mut totals = Totals::default();
    published.publish(Snapshot {
        slots: vec![],
        captures: totals.update(vec![live(1, counters(3, 3))]),
    });
    let r = get("/metrics");
    assert!(
        r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"),
        "{r}"
    );
    assert!(r.contains("text/plain; version=0.0.4"), "{r}");
    assert!(r.contains("xrpcapd_capture_frames_sent_total{interface=\"eth1\",sensor=\"sensor.example:2003\"} 2"), "{r}");
    assert!(get("/").contains(" 404 "));
    assert!(get("/metricsx").contains(" 404 "));
    drop(ep);
}

#[test]
fn decap_counters_appear_for_decapsulating_captures_and_add_up() {
    let page = |c: Counters| {
        let mut totals = Totals::default();
        let snap = Snapshot {
            slots: vec![],
            captures: totals.update(vec![live(1, c)]),
        };
        render(
            &snap,
            &Process {
                resident_bytes: 0,
                uptime_seconds: 0.0,
            },
        )
    };
    assert!(!page(counters(5, 5)).contains("decap"));
    let mut c = counters(5, 5);
    c.decap = Some(crate::datapath::DecapCounters {
        decapsulated: 5,
        foreign: 4,
        malformed: 2,
        filtered: 1,
    });
    let p = page(c);
    let l = r#"{interface="eth1",sensor="sensor.example:2003"}"#;
    for (name, v) in [
        ("decapsulated", 5.0),
        ("foreign", 4.0),
        ("malformed", 2.0),
        ("filtered", 1.0),
    ] {
        assert_eq!(
            sample(&p, &format!("xrpcapd_capture_decap_{name}_total{l}")),
            Some(v),
            "{name}"
        );
    }
    // A capture that ended adds to the next one's.
    let mut t = Totals::default();
    t.update(vec![live(1, c)]);
    let snap = t.update(vec![live(2, c)]);
    assert_eq!(snap[0].counters.decap.unwrap().foreign, 8);
}
