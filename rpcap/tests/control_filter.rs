//! STARTCAP and UPDATEFILTER: the two messages whose decoding validates a BPF
//! program with `rpcap::bpf::validate`, so these tests need the validator.

mod control_support;

use control_support::{decode_encoded, message, program};
use proptest::collection::vec;
use proptest::prelude::*;
use rpcap::bpf::{Insn, ValidateError};
use rpcap::header::MAX_CONTROL_PLEN;
use rpcap::msg::{startcap_flags, DecodeErrorKind as K, Message, StartCapReq};
use rpcap::stream::StreamDecoder;
use rpcap::{ErrorCode, Header, HEADER_LEN};

fn startcap(filter: Vec<Insn>) -> Message {
    Message::StartCapReq(StartCapReq {
        snaplen: 65535,
        read_timeout_ms: 1000,
        flags: startcap_flags::PROMISC | startcap_flags::DGRAM,
        portdata: 5000,
        filter,
    })
}

/// Asserts that both filter-carrying requests refuse `prog` with `err`,
/// answered by the code of the request.
#[track_caller]
fn both_refuse(prog: Vec<Insn>, err: ValidateError) {
    for (m, code) in [
        (startcap(prog.clone()), ErrorCode::StartCapture),
        (
            Message::UpdateFilterReq {
                filter: prog.clone(),
            },
            ErrorCode::UpdateFilter,
        ),
    ] {
        let e = decode_encoded(&m.to_bytes()).expect_err("must be refused");
        assert_eq!(e.kind, K::Filter(err.clone()), "{e}");
        assert_eq!(e.code(), code);
    }
}

#[test]
fn wire_layout_of_startcap() {
    let m = startcap(vec![Insn::new(0x06, 0, 0, 0x40000)]);
    let b = m.to_bytes();
    assert_eq!(
        b,
        [
            0, 4, 0, 0, 0, 0, 0, 28, // header
            0, 0, 0xff, 0xff, 0, 0, 3, 0xe8, 0, 3, 0x13, 0x88, // body
            0, 1, 0, 0, 0, 0, 0, 1, // filter: BPF, 1 instruction
            0, 6, 0, 0, 0, 4, 0, 0, // ret #262144
        ]
    );
    assert_eq!(decode_encoded(&b), Ok(m));
}

#[test]
fn invalid_programs_are_refused_with_the_request_code() {
    let ret = Insn::new(0x06, 0, 0, 0);
    // Jump beyond the end.
    both_refuse(
        vec![Insn::new(0x15, 1, 0, 0), ret],
        ValidateError::JumpOutOfRange { pc: 0 },
    );
    // Scratch memory index 16 (CVE-2026-0799).
    both_refuse(
        vec![Insn::new(0x02, 0, 0, 16), ret],
        ValidateError::BadMemIndex { pc: 0, k: 16 },
    );
    // Division by constant 0.
    both_refuse(
        vec![Insn::new(0x34, 0, 0, 0), ret],
        ValidateError::DivByZero { pc: 0 },
    );
    // No return at the end.
    both_refuse(vec![Insn::new(0x20, 0, 0, 0)], ValidateError::NoReturn);
    // Unknown opcode.
    both_refuse(
        vec![Insn::new(0xffff, 0, 0, 0), ret],
        ValidateError::BadOpcode {
            pc: 0,
            code: 0xffff,
        },
    );
}

#[test]
fn the_largest_program_is_accepted() {
    let mut prog = vec![Insn::new(0x20, 0, 0, 0); 8191];
    prog.push(Insn::new(0x06, 0, 0, 1));
    let m = Message::UpdateFilterReq { filter: prog };
    assert_eq!(decode_encoded(&m.to_bytes()), Ok(m));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn filter_messages_round_trip(
        prog in program(),
        fields in any::<(u32, u32, u16, u16)>(),
    ) {
        let (snaplen, read_timeout_ms, flags, portdata) = fields;
        let m = Message::StartCapReq(StartCapReq {
            snaplen, read_timeout_ms, flags, portdata, filter: prog.clone(),
        });
        prop_assert_eq!(decode_encoded(&m.to_bytes()), Ok(m));
        let m = Message::UpdateFilterReq { filter: prog };
        prop_assert_eq!(decode_encoded(&m.to_bytes()), Ok(m));
    }

    #[test]
    fn stream_of_all_message_types(
        msgs in vec(message(), 1..24),
        chunk in 1usize..100,
    ) {
        let bytes: Vec<u8> = msgs.iter().flat_map(Message::to_bytes).collect();
        let mut d = StreamDecoder::new(MAX_CONTROL_PLEN);
        let mut got = Vec::new();
        for c in bytes.chunks(chunk) {
            d.feed(c);
            while let Some((h, p)) = d.next().unwrap() {
                got.push(Message::decode(&h, p).unwrap());
            }
        }
        prop_assert_eq!(got, msgs);
    }

    /// Random filter bodies: never a panic; what decodes re-encodes to itself.
    #[test]
    fn random_filters_never_panic(
        t in prop::sample::select(vec![0x04u8, 0x05]),
        nitems in prop_oneof![1u32..12, any::<u32>()],
        insns in vec(any::<(u16, u8, u8, u32)>(), 0..12),
        trailing in vec(any::<u8>(), 0..8),
    ) {
        let mut b = if t == 0x04 { vec![0; 12] } else { Vec::new() };
        b.extend([0, 1, 0, 0]);
        b.extend(nitems.to_be_bytes());
        for (code, jt, jf, k) in insns {
            // Bias toward real opcodes so that the validator runs deep.
            b.extend((code % 0xa0).to_be_bytes());
            b.extend([jt % 4, jf % 4]);
            b.extend(k.to_be_bytes());
        }
        b.extend(trailing);
        let h = Header { ver: 0, msg_type: t, value: 0, plen: b.len() as u32 };
        match Message::decode(&h, &b) {
            Ok(m) => {
                let again = m.to_bytes();
                let h2 = Header::parse(&again).unwrap();
                prop_assert_eq!(Message::decode(&h2, &again[HEADER_LEN..]), Ok(m));
            }
            Err(e) => prop_assert!(matches!(
                e.code(),
                ErrorCode::StartCapture | ErrorCode::UpdateFilter
            )),
        }
    }
}
