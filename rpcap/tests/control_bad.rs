//! Every parsing-level bad input of PROTOCOL.md §6 (and a few more): each one
//! a typed error carrying the RPCAP code that answers it, never a panic.
//! None of these reaches the BPF validator.

mod control_support;

use proptest::collection::vec;
use proptest::prelude::*;
use rpcap::bpf::ValidateError;
use rpcap::header::MAX_CONTROL_PLEN;
use rpcap::msg::{Auth, DecodeErrorKind as K, Message, Sampling, Stats};
use rpcap::stream::{StreamDecoder, TooLong};
use rpcap::{DecodeError, ErrorCode, Header, HEADER_LEN};

/// Decodes a payload sent with a correct plen.
fn decode(msg_type: u8, value: u16, payload: &[u8]) -> Result<Message, DecodeError> {
    let h = Header {
        ver: 0,
        msg_type,
        value,
        plen: payload.len() as u32,
    };
    Message::decode(&h, payload)
}

/// Asserts the error kind and the code it is answered with.
#[track_caller]
fn refused(r: Result<Message, DecodeError>, kind: K, code: ErrorCode) {
    let e = r.expect_err("must be refused");
    assert_eq!(e.kind, kind, "{e}");
    assert_eq!(e.code(), code, "{e}");
}

fn truncated(what: &'static str, need: usize, have: usize) -> K {
    K::Truncated { what, need, have }
}

/// A filter body: type 1, `nitems`, then `insns` 8-byte instructions.
fn filter(nitems: u32, insns: usize) -> Vec<u8> {
    let mut b = vec![0, 1, 0, 0];
    b.extend(nitems.to_be_bytes());
    for _ in 0..insns {
        b.extend([0, 6, 0, 0, 0, 0, 0xff, 0xff]); // ret #65535
    }
    b
}

fn startcap(filter: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0xff, 0xff, 0, 0, 3, 0xe8, 0, 1, 0, 0];
    b.extend_from_slice(filter);
    b
}

#[test]
fn trailing_bytes_are_ignored() {
    // CVE-2019-15161: a reply must never be built from what is left over;
    // the decoded body is exactly the struct.
    let junk = [0xAAu8; 13];
    let with_junk = |m: &Message| {
        let mut b = m.to_bytes();
        b.extend_from_slice(&junk);
        let plen = (b.len() - HEADER_LEN) as u32;
        b[4..8].copy_from_slice(&plen.to_be_bytes());
        let h = Header::parse(&b).unwrap();
        Message::decode(&h, &b[HEADER_LEN..])
    };
    for m in [
        Message::FindAllIfReq,
        Message::StatsReq,
        Message::EndCapReq,
        Message::Close,
        Message::AuthReq(Auth::Null),
        Message::AuthReq(Auth::Password {
            user: b"u".to_vec(),
            password: b"p".to_vec(),
        }),
        Message::SetSamplingReq(Sampling {
            method: 1,
            value: 10,
        }),
        Message::StatsReply(Stats {
            ifrecv: 1,
            ifdrop: 2,
            krnldrop: 3,
            svrcapt: 4,
        }),
        Message::OpenReply {
            linktype: 1,
            tzoff: 0,
        },
        Message::FindAllIfReply(vec![]),
    ] {
        assert_eq!(with_junk(&m), Ok(m));
    }
}

#[test]
fn a_body_on_a_bodiless_request_does_not_desynchronise_the_stream() {
    let mut bytes = vec![0, 0x0A, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5]; // ENDCAP with 5 bytes
    bytes.extend(Message::StatsReq.to_bytes());
    let mut d = StreamDecoder::new(MAX_CONTROL_PLEN);
    d.feed(&bytes);
    let (h, p) = d.next().unwrap().unwrap();
    assert_eq!(Message::decode(&h, p), Ok(Message::EndCapReq));
    let (h, p) = d.next().unwrap().unwrap();
    assert_eq!(Message::decode(&h, p), Ok(Message::StatsReq));
}

#[test]
fn plen_all_ones_is_fatal_in_the_stream_and_truncated_in_decode() {
    let mut d = StreamDecoder::new(MAX_CONTROL_PLEN);
    d.feed(&[0, 0x04, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    let e = TooLong {
        msg_type: 0x04,
        plen: u32::MAX,
        max: MAX_CONTROL_PLEN,
    };
    assert_eq!(d.next(), Err(e.clone()));
    // Sticky: the framing can no longer be trusted.
    d.feed(&Message::StatsReq.to_bytes());
    assert_eq!(d.next(), Err(e));
    // One byte over the limit already fails; the limit itself passes.
    let mut d = StreamDecoder::new(16);
    d.feed(&[0, 0x03, 0, 0, 0, 0, 0, 17]);
    assert!(d.next().is_err());
    let mut d = StreamDecoder::new(16);
    d.feed(&[0, 0x03, 0, 0, 0, 0, 0, 16]);
    assert_eq!(d.next(), Ok(None));
    d.feed(&[b'a'; 16]);
    assert!(d.next().unwrap().is_some());

    let h = Header {
        ver: 0,
        msg_type: 0x04,
        value: 0,
        plen: u32::MAX,
    };
    refused(
        Message::decode(&h, &startcap(&filter(1, 1))),
        truncated("payload", u32::MAX as usize, 28),
        ErrorCode::StartCapture,
    );
}

#[test]
fn payload_shorter_than_plen_is_truncated() {
    let h = Header {
        ver: 0,
        msg_type: 0x08,
        value: 0,
        plen: 20,
    };
    refused(
        Message::decode(&h, &[0, 0, 0, 0, 0, 0, 0, 0]),
        truncated("payload", 20, 8),
        ErrorCode::Auth,
    );
}

#[test]
fn plen_shorter_than_the_struct() {
    refused(
        decode(0x08, 0, &[0, 1, 0]),
        truncated("AUTH request", 8, 3),
        ErrorCode::Auth,
    );
    refused(
        decode(0x08, 0, &[]),
        truncated("AUTH request", 8, 0),
        ErrorCode::Auth,
    );
    refused(
        decode(0x04, 0, &[0; 11]),
        truncated("STARTCAP request", 12, 11),
        ErrorCode::StartCapture,
    );
    refused(
        decode(0x04, 0, &[0; 12]),
        truncated("filter header", 20, 12),
        ErrorCode::StartCapture,
    );
    refused(
        decode(0x05, 0, &[0, 1, 0, 0, 0]),
        truncated("filter header", 8, 5),
        ErrorCode::UpdateFilter,
    );
    refused(
        decode(0x0B, 0, &[1, 0, 0, 0, 0, 0, 0]),
        truncated("SETSAMPLING request", 8, 7),
        ErrorCode::SetSampling,
    );
    // Replies are never valid requests: a server answers WRONGMSG.
    refused(
        decode(0x83, 0, &[0; 7]),
        truncated("OPEN reply", 8, 7),
        ErrorCode::WrongMsg,
    );
    refused(
        decode(0x84, 0, &[0; 4]),
        truncated("STARTCAP reply", 8, 4),
        ErrorCode::WrongMsg,
    );
    refused(
        decode(0x89, 0, &[0; 15]),
        truncated("STATS reply", 16, 15),
        ErrorCode::WrongMsg,
    );
    refused(
        decode(0x88, 0, &[0; 3]),
        truncated("AUTH reply", 8, 3),
        ErrorCode::WrongMsg,
    );
    refused(
        decode(0x82, 1, &[0; 11]),
        truncated("interface entry", 12, 11),
        ErrorCode::WrongMsg,
    );
}

#[test]
fn usernames_and_passwords_longer_than_the_payload() {
    // slen1 + slen2 > plen − 8.
    let auth = |slen1: u16, slen2: u16, extra: usize| {
        let mut b = vec![0, 1, 0, 0];
        b.extend(slen1.to_be_bytes());
        b.extend(slen2.to_be_bytes());
        b.extend(vec![b'x'; extra]);
        decode(0x08, 0, &b)
    };
    refused(
        auth(10, 10, 19),
        truncated("username and password", 28, 27),
        ErrorCode::Auth,
    );
    refused(
        auth(0xffff, 0xffff, 4),
        truncated("username and password", 8 + 2 * 0xffff, 12),
        ErrorCode::Auth,
    );
    assert_eq!(
        auth(10, 10, 20),
        Ok(Message::AuthReq(Auth::Password {
            user: vec![b'x'; 10],
            password: vec![b'x'; 10],
        }))
    );
}

#[test]
fn unknown_auth_type() {
    refused(
        decode(0x08, 0, &[0, 2, 0, 0, 0, 0, 0, 0]),
        K::AuthType(2),
        ErrorCode::AuthTypeNotSup,
    );
    refused(
        decode(0x08, 0, &[0xff, 0xff, 0, 0, 0, 0, 0, 0]),
        K::AuthType(0xffff),
        ErrorCode::AuthTypeNotSup,
    );
}

#[test]
fn huge_nitems_cannot_overflow() {
    // 0x2000_0000 × 8 wraps a u32 to 0: the reference then reads no
    // instructions and walks off the end.
    for (t, code) in [
        (0x04, ErrorCode::StartCapture),
        (0x05, ErrorCode::UpdateFilter),
    ] {
        let body = |f: &[u8]| {
            if t == 0x04 {
                startcap(f)
            } else {
                f.to_vec()
            }
        };
        for n in [0x2000_0000u32, u32::MAX, 8193] {
            refused(
                decode(t, 0, &body(&filter(n, 2))),
                K::Filter(ValidateError::TooLong(n as usize)),
                code,
            );
        }
        refused(
            decode(t, 0, &body(&filter(0, 0))),
            K::Filter(ValidateError::Empty),
            code,
        );
        // nitems within the cap but beyond the payload.
        let off = if t == 0x04 { 12 } else { 0 };
        refused(
            decode(t, 0, &body(&filter(5, 4))),
            truncated("filter instructions", off + 8 + 40, off + 8 + 32),
            code,
        );
        refused(
            decode(t, 0, &body(&filter(8192, 1))),
            truncated("filter instructions", off + 8 + 8192 * 8, off + 16),
            code,
        );
        // Only BPF filters exist.
        let mut f = filter(1, 1);
        f[1] = 2;
        refused(decode(t, 0, &body(&f)), K::FilterType(2), code);
    }
}

#[test]
fn names_of_1025_bytes_or_more() {
    refused(
        decode(0x03, 0, &[b'e'; 1025]),
        K::NameTooLong {
            what: "interface name",
            len: 1025,
            max: 1024,
        },
        ErrorCode::Open,
    );
    refused(
        decode(0x03, 0, &[b'e'; 70_000]),
        K::NameTooLong {
            what: "interface name",
            len: 70_000,
            max: 1024,
        },
        ErrorCode::Open,
    );
    // A C string from some clients: the NUL goes, 1024 bytes remain.
    let mut name = vec![b'e'; 1024];
    name.push(0);
    assert_eq!(
        decode(0x03, 0, &name),
        Ok(Message::OpenReq {
            source: "e".repeat(1024)
        })
    );
    refused(
        decode(0x03, 0, b"eth\xff"),
        K::NotUtf8("interface name"),
        ErrorCode::Open,
    );

    // FINDALLIF reply entries with a name or description ≥ 1025 bytes.
    let entry = |namelen: u16, desclen: u16| {
        let mut b = Vec::new();
        b.extend(namelen.to_be_bytes());
        b.extend(desclen.to_be_bytes());
        b.extend([0; 8]);
        b.extend(vec![b'n'; usize::from(namelen) + usize::from(desclen)]);
        decode(0x82, 1, &b)
    };
    refused(
        entry(1025, 0),
        K::NameTooLong {
            what: "interface name",
            len: 1025,
            max: 1024,
        },
        ErrorCode::WrongMsg,
    );
    refused(
        entry(3, 0xffff),
        K::NameTooLong {
            what: "interface description",
            len: 0xffff,
            max: 1024,
        },
        ErrorCode::WrongMsg,
    );
    assert!(entry(1024, 1024).is_ok());
}

#[test]
fn unknown_and_data_types() {
    for t in [0x00u8, 0x0C, 0x42, 0x81, 0x86, 0x87, 0x8C, 0xEE, 0xFF] {
        refused(decode(t, 0, &[]), K::UnknownType(t), ErrorCode::WrongMsg);
    }
    for t in [0x07u8, 110] {
        refused(
            decode(t, 0, &[0; 20]),
            K::NotControl(t),
            ErrorCode::WrongMsg,
        );
    }
}

#[test]
fn version_other_than_zero() {
    for (ver, t) in [(1u8, 0x08u8), (0xff, 0x02), (2, 0x42)] {
        let h = Header {
            ver,
            msg_type: t,
            value: 0,
            plen: 0,
        };
        refused(
            Message::decode(&h, &[]),
            K::WrongVersion(ver),
            ErrorCode::WrongVer,
        );
    }
}

#[test]
fn findallif_with_addresses_beyond_the_payload() {
    let entry = |naddr: u16, addr_bytes: usize| {
        let mut b = vec![0, 2, 0, 0, 0, 0, 0, 0];
        b.extend(naddr.to_be_bytes());
        b.extend([0, 0]);
        b.extend(b"lo");
        b.extend(vec![0; addr_bytes]);
        decode(0x82, 1, &b)
    };
    refused(
        entry(0xffff, 0),
        truncated("interface addresses", 14 + 0xffff * 512, 14),
        ErrorCode::WrongMsg,
    );
    refused(
        entry(2, 1023),
        truncated("interface addresses", 14 + 1024, 14 + 1023),
        ErrorCode::WrongMsg,
    );
    // All-zero addresses are absent ones: nothing listed, bytes consumed.
    let Ok(Message::FindAllIfReply(ifs)) = entry(2, 1024) else {
        panic!("two absent addresses do not decode");
    };
    assert!(ifs[0].addrs.is_empty());
    // An interface count beyond the payload.
    let mut one = Message::FindAllIfReply(vec![]).to_bytes();
    one[3] = 0xff;
    one[2] = 0xff;
    refused(
        Message::decode(&Header::parse(&one).unwrap(), &[]),
        truncated("interface entry", 12, 0),
        ErrorCode::WrongMsg,
    );
}

#[test]
fn error_text_is_decoded_lossily() {
    assert_eq!(
        decode(0x01, 18, b"bad \xff user\0"),
        Ok(Message::Error {
            code: 18,
            text: "bad \u{FFFD} user".into()
        })
    );
}

/// Every type byte whose decoding cannot reach the BPF validator.
fn type_without_filter() -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter("filter-carrying types", |t| *t != 0x04 && *t != 0x05)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Random bytes never panic; whatever decodes is a fixed point of
    /// encode → decode (so nothing is lost or invented by the codec).
    #[test]
    fn random_payloads_never_panic(
        ver in prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
        t in prop_oneof![
            4 => prop::sample::select(vec![1u8, 2, 3, 6, 7, 8, 9, 10, 11, 110,
                                           0x82, 0x83, 0x84, 0x85, 0x88, 0x89, 0x8A, 0x8B]),
            1 => type_without_filter(),
        ],
        value in prop_oneof![Just(0u16), 1u16..4, any::<u16>()],
        payload in vec(any::<u8>(), 0..2048),
        plen_delta in prop_oneof![4 => Just(0i64), 1 => -4i64..4],
    ) {
        let plen = (payload.len() as i64 + plen_delta).max(0) as u32;
        let h = Header { ver, msg_type: t, value, plen };
        if let Ok(m) = Message::decode(&h, &payload) {
            let again = m.to_bytes();
            let h2 = Header::parse(&again).unwrap();
            prop_assert_eq!(Message::decode(&h2, &again[HEADER_LEN..]), Ok(m));
        }
    }

    /// FINDALLIF replies built from random entries with plausible lengths
    /// reach the address parser instead of failing at the first field.
    #[test]
    fn random_findallif_entries_never_panic(
        count in 0u16..4,
        entries in vec((0u16..40, 0u16..40, 0u16..3, vec(any::<u8>(), 0..1200)), 0..4),
    ) {
        let mut b = Vec::new();
        for (namelen, desclen, naddr, rest) in entries {
            b.extend(namelen.to_be_bytes());
            b.extend(desclen.to_be_bytes());
            b.extend([0, 0, 0, 2]);
            b.extend(naddr.to_be_bytes());
            b.extend([0, 0]);
            b.extend(rest);
        }
        if let Ok(m) = decode(0x82, count, &b) {
            let again = m.to_bytes();
            let h2 = Header::parse(&again).unwrap();
            prop_assert_eq!(Message::decode(&h2, &again[HEADER_LEN..]), Ok(m));
        }
    }

    /// The stream decoder on random bytes: never panics, never yields a
    /// payload whose length differs from its plen.
    #[test]
    fn random_streams_never_panic(
        bytes in vec(any::<u8>(), 0..4096),
        chunk in 1usize..64,
        max in prop_oneof![Just(MAX_CONTROL_PLEN), 0u32..300],
    ) {
        let mut d = StreamDecoder::new(max);
        'feed: for c in bytes.chunks(chunk) {
            d.feed(c);
            loop {
                match d.next() {
                    Ok(Some((h, p))) => {
                        prop_assert_eq!(p.len(), h.plen as usize);
                        prop_assert!(h.plen <= max);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        prop_assert!(e.plen > max);
                        break 'feed;
                    }
                }
            }
        }
    }
}
