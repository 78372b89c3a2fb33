//! Proptest strategies shared by the control_* tests: arbitrary control
//! messages within the limits the wire format can carry.
#![allow(dead_code)]

use std::net::IpAddr;

use proptest::collection::vec;
use proptest::prelude::*;
use rpcap::bpf::Insn;
use rpcap::msg::{
    Auth, AuthReplyInfo, IfAddr, Interface, Message, Sampling, StartCapReply, StartCapReq, Stats,
};
use rpcap::Header;

/// Text without NUL (the wire format has none), at most 4 × 200 bytes.
pub fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,200}"
}

pub fn if_addr() -> impl Strategy<Value = IfAddr> {
    (
        any::<IpAddr>(),
        any::<u32>(),
        proptest::option::of(any::<IpAddr>()),
        proptest::option::of(any::<IpAddr>()),
        proptest::option::of(any::<IpAddr>()),
    )
        .prop_map(|(addr, scope, netmask, broadaddr, dstaddr)| IfAddr {
            addr,
            netmask,
            broadaddr,
            dstaddr,
            // IPv4 sockaddrs carry no scope id.
            scope_id: if addr.is_ipv6() { scope } else { 0 },
        })
}

pub fn interface() -> impl Strategy<Value = Interface> {
    (
        "[a-z0-9.:@_-]{1,32}",
        text(),
        any::<u32>(),
        vec(if_addr(), 0..6),
    )
        .prop_map(|(name, description, flags, addrs)| Interface {
            name,
            description,
            flags,
            addrs,
        })
}

/// Programs every correct validator accepts: loads, ALU ops with non-zero
/// constants and forward jumps that stay inside, ending in a return.
pub fn program() -> impl Strategy<Value = Vec<Insn>> {
    (1usize..24).prop_flat_map(|n| {
        let body = (0..n - 1)
            .map(|pc| {
                // Jumps may skip at most to the final RET (index n - 1).
                let room = (n - 2 - pc) as u8;
                prop_oneof![
                    (0u32..1500).prop_map(|k| Insn::new(0x20, 0, 0, k)), // ld [k]
                    (0u32..1500).prop_map(|k| Insn::new(0x28, 0, 0, k)), // ldh [k]
                    (0u32..1500).prop_map(|k| Insn::new(0x30, 0, 0, k)), // ldb [k]
                    any::<u32>().prop_map(|k| Insn::new(0x04, 0, 0, k)), // add #k
                    (1u32..).prop_map(|k| Insn::new(0x34, 0, 0, k)),     // div #k
                    (0u32..16).prop_map(|k| Insn::new(0x02, 0, 0, k)),   // st M[k]
                    (0..=room, 0..=room, any::<u32>())
                        .prop_map(|(jt, jf, k)| Insn::new(0x15, jt, jf, k)), // jeq #k
                ]
                .boxed()
            })
            .collect::<Vec<_>>();
        (body, any::<u32>()).prop_map(|(mut insns, k)| {
            insns.push(Insn::new(0x06, 0, 0, k)); // ret #k
            insns
        })
    })
}

fn messages_without_filters() -> Vec<BoxedStrategy<Message>> {
    vec![
        (any::<u16>(), text())
            .prop_map(|(code, text)| Message::Error { code, text })
            .boxed(),
        Just(Message::FindAllIfReq).boxed(),
        vec(interface(), 0..12)
            .prop_map(Message::FindAllIfReply)
            .boxed(),
        text()
            .prop_map(|source| Message::OpenReq { source })
            .boxed(),
        any::<(i32, i32)>()
            .prop_map(|(linktype, tzoff)| Message::OpenReply { linktype, tzoff })
            .boxed(),
        any::<(i32, u16)>()
            .prop_map(|(bufsize, portdata)| {
                Message::StartCapReply(StartCapReply { bufsize, portdata })
            })
            .boxed(),
        Just(Message::UpdateFilterReply).boxed(),
        Just(Message::Close).boxed(),
        prop_oneof![
            Just(Auth::Null),
            (vec(any::<u8>(), 0..300), vec(any::<u8>(), 0..300))
                .prop_map(|(user, password)| Auth::Password { user, password }),
        ]
        .prop_map(Message::AuthReq)
        .boxed(),
        proptest::option::of(
            any::<(u8, u8, u32)>().prop_map(|(min_version, max_version, m)| AuthReplyInfo {
                min_version,
                max_version,
                byte_order_magic: m,
            }),
        )
        .prop_map(Message::AuthReply)
        .boxed(),
        Just(Message::StatsReq).boxed(),
        any::<(u32, u32, u32, u32)>()
            .prop_map(|(ifrecv, ifdrop, krnldrop, svrcapt)| {
                Message::StatsReply(Stats {
                    ifrecv,
                    ifdrop,
                    krnldrop,
                    svrcapt,
                })
            })
            .boxed(),
        Just(Message::EndCapReq).boxed(),
        Just(Message::EndCapReply).boxed(),
        any::<(u8, u32)>()
            .prop_map(|(method, value)| Message::SetSamplingReq(Sampling { method, value }))
            .boxed(),
        Just(Message::SetSamplingReply).boxed(),
    ]
}

fn messages_with_filters() -> Vec<BoxedStrategy<Message>> {
    vec![
        (any::<(u32, u32, u16, u16)>(), program())
            .prop_map(|((snaplen, read_timeout_ms, flags, portdata), filter)| {
                Message::StartCapReq(StartCapReq {
                    snaplen,
                    read_timeout_ms,
                    flags,
                    portdata,
                    filter,
                })
            })
            .boxed(),
        program()
            .prop_map(|filter| Message::UpdateFilterReq { filter })
            .boxed(),
    ]
}

/// Every message type except the two that carry a filter (their decoding
/// runs `bpf::validate`).
pub fn message_without_filter() -> impl Strategy<Value = Message> {
    proptest::strategy::Union::new(messages_without_filters())
}

/// Every message type.
pub fn message() -> impl Strategy<Value = Message> {
    let mut all = messages_without_filters();
    all.extend(messages_with_filters());
    proptest::strategy::Union::new(all)
}

/// Decodes one encoded message, checking that plen covers the payload exactly.
pub fn decode_encoded(bytes: &[u8]) -> Result<Message, rpcap::DecodeError> {
    let h = Header::parse(bytes).expect("encoded message has a header");
    assert_eq!(h.plen as usize, bytes.len() - rpcap::HEADER_LEN, "plen");
    assert_eq!(h.ver, 0);
    Message::decode(&h, &bytes[rpcap::HEADER_LEN..])
}
