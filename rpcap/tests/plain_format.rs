//! Plain PACKET messages: round trip, plen as a full u32, typed errors.

use proptest::prelude::*;
use rpcap::plain::{self, PlainError, PREFIX_LEN};
use rpcap::PktHdr;

fn hdr(caplen: u32) -> PktHdr {
    PktHdr {
        ts_sec: 0x0102_0304,
        ts_usec: 999_999,
        caplen,
        len: caplen + 14,
        npkt: 42,
    }
}

#[test]
fn prefix_bytes_are_hand_checked() {
    let p = plain::prefix(&hdr(60));
    assert_eq!(PREFIX_LEN, 28);
    assert_eq!(&p[..8], &[0, 7, 0, 0, 0, 0, 0, 80]);
    assert_eq!(&p[8..], &hdr(60).to_bytes());
}

#[test]
fn caplen_70000_keeps_a_32_bit_plen() {
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let h = hdr(70_000);
    let mut out = vec![0; PREFIX_LEN + data.len()];
    assert_eq!(plain::encode(&h, &data, &mut out), 70_028);
    assert_eq!(&out[4..8], &70_020u32.to_be_bytes());
    let (got, payload) = plain::decode(&out).unwrap();
    assert_eq!(got, h);
    assert_eq!(payload, &data[..]);
    let (got, payload) = plain::decode_payload(&out[8..]).unwrap();
    assert_eq!((got, payload), (h, &data[..]));
}

#[test]
fn trailing_bytes_are_ignored() {
    let mut out = vec![0xEE; PREFIX_LEN + 3 + 10];
    plain::encode(&hdr(3), &[1, 2, 3], &mut out);
    assert_eq!(plain::decode(&out).unwrap().1, &[1, 2, 3]);
    assert_eq!(plain::decode_payload(&out[8..]).unwrap().1, &[1, 2, 3]);
}

#[test]
fn bad_messages_are_typed_errors() {
    let mut good = vec![0; PREFIX_LEN + 4];
    plain::encode(&hdr(4), &[9; 4], &mut good);

    assert_eq!(plain::decode(&good[..27]), Err(PlainError::Short(27)));
    assert_eq!(plain::decode(&[]), Err(PlainError::Short(0)));
    assert_eq!(
        plain::decode_payload(&good[8..27]),
        Err(PlainError::Short(19))
    );

    let mut t = good.clone();
    t[1] = 110;
    assert_eq!(
        plain::decode(&t),
        Err(PlainError::NotPacket {
            ver: 0,
            msg_type: 110
        })
    );
    let mut v = good.clone();
    v[0] = 1;
    assert_eq!(
        plain::decode(&v),
        Err(PlainError::NotPacket {
            ver: 1,
            msg_type: 7
        })
    );

    let mut m = good.clone();
    m[4..8].copy_from_slice(&25u32.to_be_bytes());
    assert_eq!(
        plain::decode(&m),
        Err(PlainError::LengthMismatch {
            plen: 25,
            caplen: 4
        })
    );
    // A 16-bit-truncated plen (the references' bug) is a mismatch, not a packet.
    let mut big = vec![0; PREFIX_LEN + 70_000];
    plain::encode(&hdr(70_000), &vec![0; 70_000], &mut big);
    big[4..8].copy_from_slice(&(70_020u32 & 0xFFFF).to_be_bytes());
    assert_eq!(
        plain::decode(&big),
        Err(PlainError::LengthMismatch {
            plen: 70_020 & 0xFFFF,
            caplen: 70_000
        })
    );

    assert_eq!(
        plain::decode(&good[..30]),
        Err(PlainError::Truncated { caplen: 4, have: 2 })
    );
    assert_eq!(
        plain::decode_payload(&good[8..30]),
        Err(PlainError::Truncated { caplen: 4, have: 2 })
    );
    let mut huge = good.clone();
    huge[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        plain::decode(&huge),
        Err(PlainError::LengthMismatch { .. })
    ));
    assert!(matches!(
        plain::decode_payload(&huge[8..]),
        Err(PlainError::Truncated { .. })
    ));
}

#[test]
fn caplen_near_u32_max_saturates_plen() {
    let p = plain::prefix(&PktHdr {
        caplen: u32::MAX - 5,
        ..hdr(0)
    });
    assert_eq!(&p[4..8], &u32::MAX.to_be_bytes());
}

#[test]
#[should_panic(expected = "PACKET of 31 bytes")]
fn encode_into_a_short_buffer_is_a_bug() {
    let mut out = [0; 30];
    plain::encode(&hdr(3), &[1, 2, 3], &mut out);
}

proptest! {
    #[test]
    fn round_trip(
        data in prop::collection::vec(any::<u8>(), 0..3000),
        ts_sec in any::<u32>(), ts_usec in any::<u32>(), extra in any::<u16>(), npkt in any::<u32>(),
    ) {
        let h = PktHdr { ts_sec, ts_usec, caplen: data.len() as u32, len: data.len() as u32 + u32::from(extra), npkt };
        let mut out = vec![0; PREFIX_LEN + data.len()];
        let n = plain::encode(&h, &data, &mut out);
        prop_assert_eq!(n, out.len());
        prop_assert_eq!(&out[..PREFIX_LEN], &plain::prefix(&h)[..]);
        let (got, payload) = plain::decode(&out).unwrap();
        prop_assert_eq!(got, h);
        prop_assert_eq!(payload, &data[..]);
    }

    /// Pieces gathered give the bytes of the joined data.
    #[test]
    fn encode_parts_equals_encode_of_the_joined_parts(
        data in prop::collection::vec(any::<u8>(), 0..3000),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let h = PktHdr { ts_sec: 1, ts_usec: 2, caplen: data.len() as u32, len: data.len() as u32, npkt: 3 };
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        at.sort_unstable();
        let mut parts = Vec::new();
        let mut from = 0;
        for &to in at.iter().chain([data.len()].iter()) {
            parts.push(&data[from..to]);
            from = to;
        }
        let mut whole = vec![0; PREFIX_LEN + data.len()];
        let mut gathered = vec![0; PREFIX_LEN + data.len()];
        plain::encode(&h, &data, &mut whole);
        prop_assert_eq!(plain::encode_parts(&h, &parts, &mut gathered), whole.len());
        prop_assert_eq!(gathered, whole);
    }

    #[test]
    fn decode_never_panics(msg in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = plain::decode(&msg);
        let _ = plain::decode_payload(&msg);
    }
}
