use super::*;
use crate::metrics::{CaptureSnapshot, SlotSnapshot};

fn view() -> View {
    let counters = Counters {
        received: 1000,
        framed: 990,
        send_dropped: 10,
        kernel_drops: 5,
        ..Counters::default()
    };
    let mut pps = BTreeMap::new();
    pps.insert(("192.0.2.1:2003".to_string(), "eth1".to_string()), 41_000.4);
    View {
        snapshot: Snapshot {
            slots: vec![
                SlotSnapshot {
                    sensor: "192.0.2.1:2003".into(),
                    state: "capturing",
                    attempts: 1,
                    last_error: None,
                    failovers: 0,
                },
                SlotSnapshot {
                    sensor: "sensor.example.net:2003".into(),
                    state: "backing-off",
                    attempts: 7,
                    last_error: Some("connection refused\n(os error 111)".into()),
                    failovers: 0,
                },
            ],
            captures: vec![
                CaptureSnapshot {
                    sensor: "192.0.2.1:2003".into(),
                    interface: "eth1".into(),
                    running: true,
                    counters,
                },
                CaptureSnapshot {
                    sensor: "passive:198.51.100.7".into(),
                    interface: "lo".into(),
                    running: false,
                    counters: Counters {
                        dry_run: true,
                        ..counters
                    },
                },
            ],
        },
        pps,
        listeners: vec!["[::]:2002".parse().unwrap()],
        warnings: vec!["passive mode listens on *:2002 and permits NULL authentication".into()],
    }
}

#[test]
fn renders_slots_captures_listeners_and_warnings_as_a_table() {
    let text = render(&view());
    let expected = "\
SENSOR                   STATE        ATTEMPTS  LAST ERROR
192.0.2.1:2003           capturing    1         -
sensor.example.net:2003  backing-off  7         connection refused (os error 111)

OWNER                 INTERFACE  CAPTURE  SENT  DROPS  PPS
192.0.2.1:2003        eth1       running  980   15     41000
passive:198.51.100.7  lo         ended    0     15     -

passive listeners: [::]:2002
WARNING: passive mode listens on *:2002 and permits NULL authentication
";
    assert_eq!(text, expected, "\n{text}");
}

#[test]
fn renders_an_idle_agent() {
    let text = render(&View::default());
    assert_eq!(
        text,
        "sensor slots: none (no ActiveClient lines, no -a)\n\ncaptures: none\n\n\
         passive listeners: none\nwarnings: none\n"
    );
}

#[test]
fn rates_are_frames_sent_per_second_between_publishes() {
    let mut v = view();
    let mut rates = Rates::default();
    let t0 = Instant::now();
    assert!(rates.update(&v.snapshot, t0).is_empty());
    v.snapshot.captures[0].counters.framed += 500;
    let r = rates.update(&v.snapshot, t0 + Duration::from_millis(500));
    let key = ("192.0.2.1:2003".to_string(), "eth1".to_string());
    assert_eq!(r.get(&key), Some(&1000.0));
    // Ended captures have no rate.
    assert_eq!(r.len(), 1);
}

/// The socket answers with the board's table, mode 0660, replaces a stale
/// file, refuses a path another server answers on, and is gone when dropped.
#[test]
fn serves_the_board_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.sock");
    // A stale socket file (its listener gone).
    drop(UnixListener::bind(&path).unwrap());
    let board = Board::default();
    let server = serve(&path, board.clone()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let v = view();
    board.publish(v.snapshot.clone(), v.pps.clone(), v.listeners.clone());
    board.set_warnings(v.warnings.clone());
    let text = query(&path).unwrap();
    assert!(text.starts_with("xrpcapd "), "{text}");
    assert!(text.ends_with(&render(&v)), "{text}");
    assert!(matches!(
        serve(&path, Board::default()),
        Err(ServeError::InUse(_))
    ));
    drop(server);
    assert!(!path.exists());
    let e = query(&path).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    std::fs::write(&path, "").unwrap();
    assert!(matches!(
        serve(&path, Board::default()),
        Err(ServeError::NotASocket(_))
    ));
}
