//! Encode → decode round trips of every control message (except the two
//! carrying a filter, see control_filter.rs) and the stream decoder fed
//! concatenated messages in arbitrary chunks.

mod control_support;

use control_support::{decode_encoded, interface, message_without_filter};
use proptest::collection::vec;
use proptest::prelude::*;
use rpcap::header::MAX_CONTROL_PLEN;
use rpcap::msg::{IfAddr, Interface, Message, MAX_NAME_LEN};
use rpcap::stream::StreamDecoder;
use rpcap::{Header, MsgType, HEADER_LEN};

/// Feeds `bytes` in chunks of the given sizes (cycled) and collects every
/// message decoded from the frames.
fn stream_decode(bytes: &[u8], chunks: &[usize]) -> Vec<Message> {
    let mut d = StreamDecoder::new(MAX_CONTROL_PLEN);
    let mut out = Vec::new();
    let mut pos = 0;
    for &c in chunks.iter().cycle() {
        if pos >= bytes.len() {
            break;
        }
        let end = (pos + c).min(bytes.len());
        d.feed(&bytes[pos..end]);
        pos = end;
        while let Some((h, payload)) = d.next().expect("no frame is too long") {
            assert_eq!(payload.len(), h.plen as usize);
            out.push(Message::decode(&h, payload).expect("frame decodes"));
        }
    }
    assert_eq!(d.buffered(), 0, "nothing left over");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips(m in message_without_filter()) {
        let b = m.to_bytes();
        prop_assert_eq!(b[1], m.msg_type() as u8);
        prop_assert_eq!(decode_encoded(&b), Ok(m));
    }

    #[test]
    fn encode_appends(a in message_without_filter(), b in message_without_filter()) {
        let mut out = vec![0xEE];
        a.encode(&mut out);
        b.encode(&mut out);
        let mut expected = vec![0xEE];
        expected.extend(a.to_bytes());
        expected.extend(b.to_bytes());
        prop_assert_eq!(out, expected);
    }

}

proptest! {
    // Big messages: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn many_interfaces_round_trip(ifs in vec(interface(), 0..200)) {
        let m = Message::FindAllIfReply(ifs.clone());
        let b = m.to_bytes();
        let h = Header::parse(&b).unwrap();
        prop_assert_eq!(h.value as usize, ifs.len(), "header value = interface count");
        prop_assert_eq!(decode_encoded(&b), Ok(m));
    }

    #[test]
    fn stream_yields_every_message_whatever_the_chunking(
        msgs in vec(message_without_filter(), 1..24),
        chunks in vec(1usize..200, 1..16),
    ) {
        let bytes: Vec<u8> = msgs.iter().flat_map(Message::to_bytes).collect();
        prop_assert_eq!(&stream_decode(&bytes, &chunks), &msgs);
        prop_assert_eq!(&stream_decode(&bytes, &[1]), &msgs);
    }
}

#[test]
fn names_of_exactly_1024_bytes_round_trip_and_longer_ones_are_cut() {
    let iface = |name: String| Interface {
        name,
        description: "d".repeat(MAX_NAME_LEN),
        flags: 0x6,
        addrs: vec![IfAddr {
            addr: "192.0.2.1".parse().unwrap(),
            netmask: None,
            broadaddr: None,
            dstaddr: None,
            scope_id: 0,
        }],
    };
    let m = Message::FindAllIfReply(vec![iface("n".repeat(MAX_NAME_LEN))]);
    assert_eq!(decode_encoded(&m.to_bytes()), Ok(m));
    // Clients reject ≥ 1025 bytes, so encoding cuts (on a char boundary).
    let long = Message::FindAllIfReply(vec![iface("é".repeat(600))]);
    let Ok(Message::FindAllIfReply(ifs)) = decode_encoded(&long.to_bytes()) else {
        panic!("cut reply does not decode");
    };
    assert_eq!(ifs[0].name, "é".repeat(512));
}

#[test]
fn findallif_reply_over_64000_bytes_is_encoded_whole() {
    // The references silently drop such a reply (plen kept in 16 bits).
    let ifs: Vec<Interface> = (0..40)
        .map(|i| Interface {
            name: format!("veth{i}"),
            description: String::new(),
            flags: 0x6,
            addrs: (0..4)
                .map(|j| IfAddr {
                    addr: format!("fd00::{i}:{j}").parse().unwrap(),
                    netmask: Some("ffff:ffff:ffff:ffff::".parse().unwrap()),
                    broadaddr: None,
                    dstaddr: None,
                    scope_id: j,
                })
                .collect(),
        })
        .collect();
    let m = Message::FindAllIfReply(ifs);
    let b = m.to_bytes();
    assert!(b.len() > 80_000);
    assert_eq!(decode_encoded(&b), Ok(m));
}

#[test]
fn stream_buffer_is_reused_in_steady_state() {
    let msgs = [
        Message::StatsReq,
        Message::OpenReq {
            source: "eth0".into(),
        },
        Message::error(rpcap::ErrorCode::Open, &"x".repeat(256)),
        Message::EndCapReq,
    ];
    let bytes: Vec<u8> = msgs.iter().flat_map(Message::to_bytes).collect();
    let mut d = StreamDecoder::new(MAX_CONTROL_PLEN);
    let round = |d: &mut StreamDecoder| {
        let mut n = 0;
        for chunk in bytes.chunks(37) {
            d.feed(chunk);
            while let Some((h, p)) = d.next().unwrap() {
                assert_eq!(Message::decode(&h, p).unwrap(), msgs[n % msgs.len()]);
                n += 1;
            }
        }
        assert_eq!(n, msgs.len());
    };
    round(&mut d);
    round(&mut d);
    let cap = d.capacity();
    assert!(cap > 0);
    for _ in 0..1000 {
        round(&mut d);
    }
    assert_eq!(d.capacity(), cap, "buffer reallocated in steady state");
    assert!(
        cap <= 2 * bytes.len(),
        "buffer of {cap} bytes grew beyond need"
    );
}

#[test]
fn stream_delimits_a_wrong_version_by_plen() {
    // Version is checked by Message::decode, not by the framer: the message
    // after it still comes out whole.
    let mut bytes = vec![1, 0x09, 0, 0, 0, 0, 0, 3, 9, 9, 9];
    bytes.extend(Message::StatsReq.to_bytes());
    let mut d = StreamDecoder::new(MAX_CONTROL_PLEN);
    d.feed(&bytes);
    let (h, p) = d.next().unwrap().unwrap();
    assert_eq!((h.ver, h.plen, p), (1, 3, &[9u8, 9, 9][..]));
    let err = Message::decode(&h, p).unwrap_err();
    assert_eq!(err.code(), rpcap::ErrorCode::WrongVer);
    let (h, p) = d.next().unwrap().unwrap();
    assert_eq!(Message::decode(&h, p), Ok(Message::StatsReq));
    assert_eq!(d.next(), Ok(None));
}

#[test]
fn stream_holds_partial_messages() {
    let b = Message::OpenReq {
        source: "eth0".into(),
    }
    .to_bytes();
    let mut d = StreamDecoder::new(MAX_CONTROL_PLEN);
    d.feed(&b[..5]);
    assert_eq!(d.next(), Ok(None));
    d.feed(&b[5..HEADER_LEN + 2]);
    assert_eq!(d.next(), Ok(None));
    assert_eq!(d.buffered(), HEADER_LEN + 2);
    d.feed(&b[HEADER_LEN + 2..]);
    let (h, p) = d.next().unwrap().unwrap();
    assert_eq!(h, Header::new(MsgType::OpenReq, 0, 4));
    assert_eq!(p, b"eth0");
    assert_eq!(d.buffered(), 0);
}
