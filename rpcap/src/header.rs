//! The 8-byte header that starts every RPCAP message:
//! `ver u8 | type u8 | value u16 | plen u32`, big-endian.

/// Length of the control header on the wire.
pub const HEADER_LEN: usize = 8;

/// The only protocol version that exists.
pub const VERSION: u8 = 0;

/// Largest control payload accepted by default: no legitimate control message
/// comes near it (a FINDALLIF reply for hundreds of interfaces is ~100 KiB).
pub const MAX_CONTROL_PLEN: u32 = 1 << 20;

/// A fieldless enum with explicit wire values, plus `$from(raw) -> Option<Self>`,
/// so each value is written once.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ident via $from:ident {
            $($(#[$vmeta:meta])* $variant:ident = $value:expr,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)*
        }

        impl $name {
            /// The value for a raw number, if it is a known one.
            pub fn $from(v: $repr) -> Option<$name> {
                $(if v == $value {
                    return Some($name::$variant);
                })*
                None
            }
        }
    };
}

wire_enum! {
/// Message types (the header's `type` byte). Replies are `request | 0x80`.
pub enum MsgType: u8 via from_u8 {
    Error = 0x01,
    FindAllIfReq = 0x02,
    OpenReq = 0x03,
    StartCapReq = 0x04,
    UpdateFilterReq = 0x05,
    Close = 0x06,
    Packet = 0x07,
    AuthReq = 0x08,
    StatsReq = 0x09,
    EndCapReq = 0x0A,
    SetSamplingReq = 0x0B,
    /// ExtraHop's udpstr data datagram.
    UdpStrPacket = 110,
    FindAllIfReply = 0x82,
    OpenReply = 0x83,
    StartCapReply = 0x84,
    UpdateFilterReply = 0x85,
    AuthReply = 0x88,
    StatsReply = 0x89,
    EndCapReply = 0x8A,
    SetSamplingReply = 0x8B,
}
}

impl MsgType {
    /// Whether this is a reply (`request | 0x80`), which a server never accepts.
    pub fn is_reply(self) -> bool {
        (self as u8) & 0x80 != 0
    }

    /// The reply type answering this request, if it has one.
    pub fn reply(self) -> Option<MsgType> {
        match self {
            MsgType::Error | MsgType::Close | MsgType::Packet | MsgType::UdpStrPacket => None,
            t if t.is_reply() => None,
            t => MsgType::from_u8(t as u8 | 0x80),
        }
    }
}

wire_enum! {
/// Error codes carried in the `value` field of an ERROR message.
pub enum ErrorCode: u16 via from_u16 {
    Netw = 1,
    InitTimeout = 2,
    Auth = 3,
    FindAllIf = 4,
    NoRemoteIf = 5,
    Open = 6,
    UpdateFilter = 7,
    GetStats = 8,
    ReadEx = 9,
    HostNoAuth = 10,
    RemoteAccept = 11,
    StartCapture = 12,
    EndCapture = 13,
    RuntimeTimeout = 14,
    SetSampling = 15,
    WrongMsg = 16,
    WrongVer = 17,
    AuthFailed = 18,
    TlsRequired = 19,
    AuthTypeNotSup = 20,
}
}

/// A decoded control header. `msg_type` stays raw so that unknown types can be
/// answered with WRONGMSG instead of killing the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ver: u8,
    pub msg_type: u8,
    pub value: u16,
    pub plen: u32,
}

impl Header {
    /// A version-0 header.
    pub fn new(msg_type: MsgType, value: u16, plen: u32) -> Header {
        Header {
            ver: VERSION,
            msg_type: msg_type as u8,
            value,
            plen,
        }
    }

    /// Reads a header from the first 8 bytes of `buf`; `None` if `buf` is shorter.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            ver: b[0],
            msg_type: b[1],
            value: u16::from_be_bytes([b[2], b[3]]),
            plen: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let v = self.value.to_be_bytes();
        let p = self.plen.to_be_bytes();
        [self.ver, self.msg_type, v[0], v[1], p[0], p[1], p[2], p[3]]
    }

    /// The known message type, if any.
    pub fn kind(&self) -> Option<MsgType> {
        MsgType::from_u8(self.msg_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_big_endian() {
        let h = Header::new(MsgType::FindAllIfReply, 3, 0x0102_0304);
        let b = h.to_bytes();
        assert_eq!(b, [0, 0x82, 0, 3, 1, 2, 3, 4]);
        assert_eq!(Header::parse(&b), Some(h));
        assert_eq!(Header::parse(&b[..7]), None);
    }

    #[test]
    fn every_type_and_code_maps_back() {
        for v in 0..=255u8 {
            if let Some(t) = MsgType::from_u8(v) {
                assert_eq!(t as u8, v);
            }
        }
        for v in 0..=64u16 {
            if let Some(c) = ErrorCode::from_u16(v) {
                assert_eq!(c as u16, v);
            }
        }
        assert_eq!(ErrorCode::from_u16(20), Some(ErrorCode::AuthTypeNotSup));
        assert_eq!(ErrorCode::from_u16(21), None);
        assert_eq!(MsgType::OpenReq.reply(), Some(MsgType::OpenReply));
        assert_eq!(
            MsgType::SetSamplingReq.reply(),
            Some(MsgType::SetSamplingReply)
        );
        assert_eq!(MsgType::Close.reply(), None);
        assert_eq!(MsgType::OpenReply.reply(), None);
        assert!(MsgType::StatsReply.is_reply());
        assert!(!MsgType::UdpStrPacket.is_reply());
    }
}
