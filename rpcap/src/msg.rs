//! Control messages of RPCAP protocol version 0 (PROTOCOL.md §1): typed values,
//! encoded to and decoded from wire bytes.
//!
//! CONTRACT (skeleton; the implementation replaces every `todo!()`):
//! - `Message::decode(&header, payload)` reads exactly what the message needs
//!   from `payload` (the `plen` bytes after the header); trailing bytes are
//!   ignored. It never panics; every failure is a `DecodeError` that says what
//!   was wrong and which RPCAP error code answers it (`DecodeError::code`).
//! - `Message::encode(&self, out)` appends header + payload to `out`.

use std::net::IpAddr;

use crate::bpf::{Insn, ValidateError};
use crate::header::{ErrorCode, Header, MsgType};

/// Longest interface name or description accepted (clients reject ≥ 1025).
pub const MAX_NAME_LEN: usize = 1024;
/// Longest ERROR text sent (longer texts are cut).
pub const MAX_ERROR_TEXT: usize = 256;

/// STARTCAP flags.
pub mod startcap_flags {
    pub const PROMISC: u16 = 0x01;
    /// Data over UDP.
    pub const DGRAM: u16 = 0x02;
    /// The client listens; the server connects the TCP data channel.
    pub const SERVEROPEN: u16 = 0x04;
    pub const INBOUND: u16 = 0x08;
    pub const OUTBOUND: u16 = 0x10;
}

/// PCAP_IF_* flags of a FINDALLIF entry.
pub mod if_flags {
    pub const LOOPBACK: u32 = 0x1;
    pub const UP: u32 = 0x2;
    pub const RUNNING: u32 = 0x4;
    pub const WIRELESS: u32 = 0x8;
}

/// Authentication of AUTH_REQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Null,
    Password { user: Vec<u8>, password: Vec<u8> },
}

/// Body of a non-empty AUTH reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthReplyInfo {
    pub min_version: u8,
    pub max_version: u8,
    /// 0xA1B2C3D4 as the receiver reads it in big-endian: 0xA1B2C3D4 from a
    /// big-endian server, 0xD4C3B2A1 from a little-endian one. Encoding writes
    /// 0xA1B2C3D4 in this machine's native order, as the references do.
    pub byte_order_magic: u32,
}

/// One address of an interface: four sockaddrs on the wire (address, netmask,
/// broadcast, destination), absent ones all-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub netmask: Option<IpAddr>,
    pub broadaddr: Option<IpAddr>,
    pub dstaddr: Option<IpAddr>,
    /// IPv6 scope id of `addr` (0 for IPv4).
    pub scope_id: u32,
}

/// One FINDALLIF entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub description: String,
    pub flags: u32,
    pub addrs: Vec<IfAddr>,
}

/// STARTCAP_REQ body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartCapReq {
    pub snaplen: u32,
    pub read_timeout_ms: u32,
    /// [`startcap_flags`].
    pub flags: u16,
    /// The client's data port (UDP, or TCP with SERVEROPEN/active mode).
    pub portdata: u16,
    /// A validated classic BPF program (filter type 1).
    pub filter: Vec<Insn>,
}

/// STARTCAP reply body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartCapReply {
    pub bufsize: i32,
    pub portdata: u16,
}

/// STATS reply body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub ifrecv: u32,
    pub ifdrop: u32,
    pub krnldrop: u32,
    pub svrcapt: u32,
}

/// SETSAMPLING_REQ body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    /// 0 none, 1 one-of-N, 2 first-after-N-ms.
    pub method: u8,
    pub value: u32,
}

/// Every control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Error { code: u16, text: String },
    FindAllIfReq,
    FindAllIfReply(Vec<Interface>),
    OpenReq { source: String },
    OpenReply { linktype: i32, tzoff: i32 },
    StartCapReq(StartCapReq),
    StartCapReply(StartCapReply),
    UpdateFilterReq { filter: Vec<Insn> },
    UpdateFilterReply,
    Close,
    AuthReq(Auth),
    AuthReply(Option<AuthReplyInfo>),
    StatsReq,
    StatsReply(Stats),
    EndCapReq,
    EndCapReply,
    SetSamplingReq(Sampling),
    SetSamplingReply,
}

/// What was wrong with a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("protocol version {0} (only 0 exists)")]
    WrongVersion(u8),
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("message type {0:#04x} is not a control message")]
    NotControl(u8),
    #[error("payload of {plen} bytes exceeds the limit of {max}")]
    TooLong { plen: u32, max: u32 },
    #[error("{what}: needs {need} bytes, payload has {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what} of {len} bytes exceeds {max}")]
    NameTooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("authentication type {0} is not supported")]
    AuthType(u16),
    #[error("filter type {0} is not supported (only 1, BPF)")]
    FilterType(u16),
    #[error("filter: {0}")]
    Filter(#[from] ValidateError),
}

/// A message that could not be decoded, with the type it claimed to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {kind}", type_name(*.msg_type))]
pub struct DecodeError {
    pub msg_type: u8,
    pub kind: DecodeErrorKind,
}

/// A readable name for a raw message type, for errors and logs.
pub fn type_name(t: u8) -> &'static str {
    let _ = t;
    todo!()
}

impl DecodeError {
    /// The RPCAP error code that answers this error (e.g. a short STARTCAP body
    /// → STARTCAPTURE, a bad filter in UPDATEFILTER → UPDATEFILTER, version ≠ 0
    /// → WRONGVER, unknown type → WRONGMSG, unknown auth type → AUTH_TYPE_NOTSUP).
    pub fn code(&self) -> ErrorCode {
        todo!()
    }
}

impl Message {
    /// The message type this value encodes as.
    pub fn msg_type(&self) -> MsgType {
        todo!()
    }

    /// Decodes the payload of a message whose header has been read. `payload`
    /// must hold the `header.plen` bytes after the header.
    pub fn decode(header: &Header, payload: &[u8]) -> Result<Message, DecodeError> {
        let _ = (header, payload);
        todo!()
    }

    /// Appends header and payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }

    /// Header and payload as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// An ERROR message; the text is cut to [`MAX_ERROR_TEXT`] bytes on a char boundary.
    pub fn error(code: ErrorCode, text: &str) -> Message {
        let _ = (code, text);
        todo!()
    }
}
