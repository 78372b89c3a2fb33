//! Control messages of RPCAP protocol version 0 (PROTOCOL.md §1): typed values,
//! encoded to and decoded from wire bytes.
//!
//! What decoding and encoding guarantee:
//! - `Message::decode(&header, payload)` reads exactly what the message needs
//!   from `payload` (the `plen` bytes after the header); trailing bytes are
//!   ignored. It never panics; every failure is a `DecodeError` that says what
//!   was wrong and which RPCAP error code answers it (`DecodeError::code`).
//! - `Message::encode(&self, out)` appends header + payload to `out`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::bpf::{self, Insn, ValidateError, MAX_INSNS};
use crate::header::{ErrorCode, Header, MsgType, HEADER_LEN, VERSION};

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
    /// The two connection-status bits (libpcap's PCAP_IF_CONNECTION_STATUS).
    pub const CONNECTION_STATUS: u32 = 0x30;
    pub const CONNECTION_STATUS_UNKNOWN: u32 = 0x00;
    pub const CONNECTION_STATUS_CONNECTED: u32 = 0x10;
    pub const CONNECTION_STATUS_DISCONNECTED: u32 = 0x20;
    pub const CONNECTION_STATUS_NOT_APPLICABLE: u32 = 0x30;
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

impl From<IpAddr> for IfAddr {
    /// An address alone: no netmask, broadcast or destination, scope 0.
    fn from(addr: IpAddr) -> IfAddr {
        IfAddr {
            addr,
            netmask: None,
            broadaddr: None,
            dstaddr: None,
            scope_id: 0,
        }
    }
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
    use MsgType::*;
    match MsgType::from_u8(t) {
        Some(Error) => "ERROR",
        Some(FindAllIfReq) => "FINDALLIF_REQ",
        Some(OpenReq) => "OPEN_REQ",
        Some(StartCapReq) => "STARTCAP_REQ",
        Some(UpdateFilterReq) => "UPDATEFILTER_REQ",
        Some(Close) => "CLOSE",
        Some(Packet) => "PACKET",
        Some(AuthReq) => "AUTH_REQ",
        Some(StatsReq) => "STATS_REQ",
        Some(EndCapReq) => "ENDCAP_REQ",
        Some(SetSamplingReq) => "SETSAMPLING_REQ",
        Some(UdpStrPacket) => "UDPSTR_PACKET",
        Some(FindAllIfReply) => "FINDALLIF_REPLY",
        Some(OpenReply) => "OPEN_REPLY",
        Some(StartCapReply) => "STARTCAP_REPLY",
        Some(UpdateFilterReply) => "UPDATEFILTER_REPLY",
        Some(AuthReply) => "AUTH_REPLY",
        Some(StatsReply) => "STATS_REPLY",
        Some(EndCapReply) => "ENDCAP_REPLY",
        Some(SetSamplingReply) => "SETSAMPLING_REPLY",
        None => "unknown message",
    }
}

impl DecodeError {
    /// The RPCAP error code that answers this error (e.g. a short STARTCAP body
    /// → STARTCAPTURE, a bad filter in UPDATEFILTER → UPDATEFILTER, version ≠ 0
    /// → WRONGVER, unknown type → WRONGMSG, unknown auth type → AUTH_TYPE_NOTSUP).
    ///
    /// A malformed body is answered with the code of the request it claimed to
    /// be. Messages a server never accepts as requests (replies, ERROR, the
    /// data-channel types) answer WRONGMSG.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            DecodeErrorKind::WrongVersion(_) => return ErrorCode::WrongVer,
            DecodeErrorKind::UnknownType(_) | DecodeErrorKind::NotControl(_) => {
                return ErrorCode::WrongMsg
            }
            DecodeErrorKind::AuthType(_) => return ErrorCode::AuthTypeNotSup,
            _ => {}
        }
        match MsgType::from_u8(self.msg_type) {
            Some(MsgType::AuthReq) => ErrorCode::Auth,
            Some(MsgType::FindAllIfReq) => ErrorCode::FindAllIf,
            Some(MsgType::OpenReq) => ErrorCode::Open,
            Some(MsgType::StartCapReq) => ErrorCode::StartCapture,
            Some(MsgType::UpdateFilterReq) => ErrorCode::UpdateFilter,
            Some(MsgType::StatsReq) => ErrorCode::GetStats,
            Some(MsgType::EndCapReq) => ErrorCode::EndCapture,
            Some(MsgType::SetSamplingReq) => ErrorCode::SetSampling,
            _ => ErrorCode::WrongMsg,
        }
    }
}

impl AuthReplyInfo {
    /// What a server sends: versions 0..=0 and the magic in this machine's
    /// native byte order (the field holds it as a big-endian reader sees it,
    /// so that encoding it big-endian puts the native bytes on the wire).
    pub fn native() -> AuthReplyInfo {
        AuthReplyInfo {
            min_version: 0,
            max_version: 0,
            byte_order_magic: u32::from_be_bytes(BYTE_ORDER_MAGIC.to_ne_bytes()),
        }
    }

    /// Whether the server runs with the opposite byte order to ours.
    pub fn server_byte_order_swapped(&self) -> bool {
        self.byte_order_magic != u32::from_be_bytes(BYTE_ORDER_MAGIC.to_ne_bytes())
    }
}

/// The AUTH reply's byte-order magic.
pub const BYTE_ORDER_MAGIC: u32 = 0xA1B2_C3D4;

impl Message {
    /// The message type this value encodes as.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Message::Error { .. } => MsgType::Error,
            Message::FindAllIfReq => MsgType::FindAllIfReq,
            Message::FindAllIfReply(_) => MsgType::FindAllIfReply,
            Message::OpenReq { .. } => MsgType::OpenReq,
            Message::OpenReply { .. } => MsgType::OpenReply,
            Message::StartCapReq(_) => MsgType::StartCapReq,
            Message::StartCapReply(_) => MsgType::StartCapReply,
            Message::UpdateFilterReq { .. } => MsgType::UpdateFilterReq,
            Message::UpdateFilterReply => MsgType::UpdateFilterReply,
            Message::Close => MsgType::Close,
            Message::AuthReq(_) => MsgType::AuthReq,
            Message::AuthReply(_) => MsgType::AuthReply,
            Message::StatsReq => MsgType::StatsReq,
            Message::StatsReply(_) => MsgType::StatsReply,
            Message::EndCapReq => MsgType::EndCapReq,
            Message::EndCapReply => MsgType::EndCapReply,
            Message::SetSamplingReq(_) => MsgType::SetSamplingReq,
            Message::SetSamplingReply => MsgType::SetSamplingReply,
        }
    }

    /// Decodes the payload of a message whose header has been read. `payload`
    /// must hold the `header.plen` bytes after the header (bytes beyond `plen`
    /// are not looked at; a shorter payload is `Truncated`).
    pub fn decode(header: &Header, payload: &[u8]) -> Result<Message, DecodeError> {
        decode_body(header, payload).map_err(|kind| DecodeError {
            msg_type: header.msg_type,
            kind,
        })
    }

    /// Appends header and payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let value = self.emit_body(out);
        // Every body is far below 4 GiB (names, counts and texts are capped);
        // saturate rather than wrap should a caller ever pass something absurd.
        let plen = u32::try_from(out.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
        let header = Header::new(self.msg_type(), value, plen).to_bytes();
        out[start..start + HEADER_LEN].copy_from_slice(&header);
    }

    /// Header and payload as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// An ERROR message; the text is cut to [`MAX_ERROR_TEXT`] bytes on a char
    /// boundary, and NULs (which the wire format does not allow) are removed.
    pub fn error(code: ErrorCode, text: &str) -> Message {
        let text: String = text.chars().filter(|&c| c != '\0').collect();
        Message::Error {
            code: code as u16,
            text: cut_str(&text, MAX_ERROR_TEXT).to_owned(),
        }
    }

    /// Writes the payload; returns the header's `value` field.
    fn emit_body(&self, out: &mut Vec<u8>) -> u16 {
        match self {
            Message::Error { code, text } => {
                out.extend_from_slice(text.as_bytes());
                *code
            }
            Message::FindAllIfReply(ifs) => {
                let n = ifs.len().min(usize::from(u16::MAX));
                for i in &ifs[..n] {
                    emit_interface(i, out);
                }
                n as u16
            }
            Message::OpenReq { source } => {
                out.extend_from_slice(source.as_bytes());
                0
            }
            Message::OpenReply { linktype, tzoff } => {
                out.put_i32(*linktype);
                out.put_i32(*tzoff);
                0
            }
            Message::StartCapReq(s) => {
                out.put_u32(s.snaplen);
                out.put_u32(s.read_timeout_ms);
                out.put_u16(s.flags);
                out.put_u16(s.portdata);
                emit_filter(&s.filter, out);
                0
            }
            Message::StartCapReply(r) => {
                out.put_i32(r.bufsize);
                out.put_u16(r.portdata);
                out.put_u16(0);
                0
            }
            Message::UpdateFilterReq { filter } => {
                emit_filter(filter, out);
                0
            }
            Message::AuthReq(auth) => {
                emit_auth(auth, out);
                0
            }
            Message::AuthReply(Some(info)) => {
                out.push(info.min_version);
                out.push(info.max_version);
                out.put_u16(0);
                out.put_u32(info.byte_order_magic);
                0
            }
            Message::StatsReply(s) => {
                for v in [s.ifrecv, s.ifdrop, s.krnldrop, s.svrcapt] {
                    out.put_u32(v);
                }
                0
            }
            Message::SetSamplingReq(s) => {
                out.push(s.method);
                out.push(0);
                out.put_u16(0);
                out.put_u32(s.value);
                0
            }
            Message::FindAllIfReq
            | Message::UpdateFilterReply
            | Message::Close
            | Message::AuthReply(None)
            | Message::StatsReq
            | Message::EndCapReq
            | Message::EndCapReply
            | Message::SetSamplingReply => 0,
        }
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

type Res<T> = Result<T, DecodeErrorKind>;

/// Wire sizes of the fixed-length structs.
mod size {
    pub const AUTH_REQ: usize = 8;
    pub const AUTH_REPLY: usize = 8;
    pub const IF_ENTRY: usize = 12;
    pub const SOCKADDR: usize = 128;
    /// Four sockaddrs per address: address, netmask, broadcast, destination.
    pub const IF_ADDR: usize = 4 * SOCKADDR;
    pub const OPEN_REPLY: usize = 8;
    pub const STARTCAP_REQ: usize = 12;
    pub const STARTCAP_REPLY: usize = 8;
    pub const FILTER: usize = 8;
    pub const INSN: usize = 8;
    pub const STATS_REPLY: usize = 16;
    pub const SAMPLING: usize = 8;
}

/// Socket address families as they appear in a FINDALLIF sockaddr.
mod family {
    pub const INET: u16 = 2;
    /// What we send for IPv6: Windows' AF_INET6, the value clients expect.
    pub const INET6: u16 = 23;
    /// IPv6 as other servers may send it: Linux, NetBSD/OpenBSD, FreeBSD, macOS.
    pub const INET6_OTHERS: [u16; 4] = [10, 24, 28, 30];
}

/// The only filter type: classic BPF.
const FILTER_TYPE_BPF: u16 = 1;

/// AUTH_REQ authentication types.
mod auth_type {
    pub const NULL: u16 = 0;
    pub const PASSWORD: u16 = 1;
}

/// A bounds-checked cursor over a payload: every read either yields the bytes
/// or a `Truncated` error naming the field; nothing here can panic.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless `n` more bytes are available.
    fn need(&self, n: usize, what: &'static str) -> Res<()> {
        if n <= self.remaining() {
            Ok(())
        } else {
            Err(DecodeErrorKind::Truncated {
                what,
                need: self.pos.saturating_add(n),
                have: self.buf.len(),
            })
        }
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Res<&'a [u8]> {
        self.need(n, what)?;
        let (s, _) = self.buf[self.pos..].split_at(n);
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Res<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N, what)?);
        Ok(a)
    }

    /// A reader over the next `n` bytes: a fixed-size struct read as a whole,
    /// so that a short payload is reported as the struct it cuts.
    fn sub(&mut self, n: usize, what: &'static str) -> Res<Reader<'a>> {
        Ok(Reader::new(self.bytes(n, what)?))
    }

    fn u8(&mut self, what: &'static str) -> Res<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Res<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Res<u32> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Res<i32> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }
}

fn decode_body(header: &Header, payload: &[u8]) -> Res<Message> {
    if header.ver != VERSION {
        return Err(DecodeErrorKind::WrongVersion(header.ver));
    }
    let t =
        MsgType::from_u8(header.msg_type).ok_or(DecodeErrorKind::UnknownType(header.msg_type))?;
    // The body is exactly the plen bytes: never read beyond them, and refuse a
    // payload that does not hold them all.
    let plen = usize::try_from(header.plen).unwrap_or(usize::MAX);
    let body = payload.get(..plen).ok_or(DecodeErrorKind::Truncated {
        what: "payload",
        need: plen,
        have: payload.len(),
    })?;
    let mut r = Reader::new(body);
    Ok(match t {
        MsgType::Packet | MsgType::UdpStrPacket => {
            return Err(DecodeErrorKind::NotControl(header.msg_type))
        }
        MsgType::Error => Message::Error {
            code: header.value,
            text: peer_text(body, usize::MAX),
        },
        MsgType::FindAllIfReq => Message::FindAllIfReq,
        MsgType::FindAllIfReply => Message::FindAllIfReply(parse_interfaces(&mut r, header.value)?),
        MsgType::OpenReq => Message::OpenReq {
            source: parse_open_source(body)?,
        },
        MsgType::OpenReply => {
            let mut s = r.sub(size::OPEN_REPLY, "OPEN reply")?;
            Message::OpenReply {
                linktype: s.i32("linktype")?,
                tzoff: s.i32("tzoff")?,
            }
        }
        MsgType::StartCapReq => {
            let mut s = r.sub(size::STARTCAP_REQ, "STARTCAP request")?;
            Message::StartCapReq(StartCapReq {
                snaplen: s.u32("snaplen")?,
                read_timeout_ms: s.u32("read timeout")?,
                flags: s.u16("flags")?,
                portdata: s.u16("portdata")?,
                filter: parse_filter(&mut r)?,
            })
        }
        MsgType::StartCapReply => {
            let mut s = r.sub(size::STARTCAP_REPLY, "STARTCAP reply")?;
            Message::StartCapReply(StartCapReply {
                bufsize: s.i32("bufsize")?,
                portdata: s.u16("portdata")?,
            })
        }
        MsgType::UpdateFilterReq => Message::UpdateFilterReq {
            filter: parse_filter(&mut r)?,
        },
        MsgType::UpdateFilterReply => Message::UpdateFilterReply,
        MsgType::Close => Message::Close,
        MsgType::AuthReq => Message::AuthReq(parse_auth(&mut r)?),
        MsgType::AuthReply => Message::AuthReply(if body.is_empty() {
            None
        } else {
            let mut s = r.sub(size::AUTH_REPLY, "AUTH reply")?;
            let min_version = s.u8("minvers")?;
            let max_version = s.u8("maxvers")?;
            s.u16("pad")?;
            Some(AuthReplyInfo {
                min_version,
                max_version,
                byte_order_magic: s.u32("byte order magic")?,
            })
        }),
        MsgType::StatsReq => Message::StatsReq,
        MsgType::StatsReply => {
            let mut s = r.sub(size::STATS_REPLY, "STATS reply")?;
            Message::StatsReply(Stats {
                ifrecv: s.u32("ifrecv")?,
                ifdrop: s.u32("ifdrop")?,
                krnldrop: s.u32("krnldrop")?,
                svrcapt: s.u32("svrcapt")?,
            })
        }
        MsgType::EndCapReq => Message::EndCapReq,
        MsgType::EndCapReply => Message::EndCapReply,
        MsgType::SetSamplingReq => {
            let mut s = r.sub(size::SAMPLING, "SETSAMPLING request")?;
            let method = s.u8("method")?;
            s.array::<3>("dummy")?;
            Message::SetSamplingReq(Sampling {
                method,
                value: s.u32("value")?,
            })
        }
        MsgType::SetSamplingReply => Message::SetSamplingReply,
    })
}

fn parse_auth(r: &mut Reader<'_>) -> Res<Auth> {
    let mut s = r.sub(size::AUTH_REQ, "AUTH request")?;
    let kind = s.u16("auth type")?;
    s.u16("dummy")?;
    let slen1 = usize::from(s.u16("slen1")?);
    let slen2 = usize::from(s.u16("slen2")?);
    match kind {
        // NULL authentication carries no credentials; lengths are not read.
        auth_type::NULL => Ok(Auth::Null),
        auth_type::PASSWORD => {
            // slen1 + slen2 cannot overflow (two u16s); checked against what is left.
            r.need(slen1 + slen2, "username and password")?;
            Ok(Auth::Password {
                user: r.bytes(slen1, "username")?.to_vec(),
                password: r.bytes(slen2, "password")?.to_vec(),
            })
        }
        other => Err(DecodeErrorKind::AuthType(other)),
    }
}

/// The OPEN_REQ name: the whole payload, trailing NULs (some clients send a
/// C string) removed.
fn parse_open_source(body: &[u8]) -> Res<String> {
    let name = trim_nuls(body);
    check_name_len("interface name", name.len())?;
    std::str::from_utf8(name)
        .map(str::to_owned)
        .map_err(|_| DecodeErrorKind::NotUtf8("interface name"))
}

/// A filter body: `filtertype u16 | dummy u16 | nitems u32` then the program.
/// Checks everything before allocating: the type, 1 ≤ nitems ≤ MAX_INSNS, and
/// that the instructions are all in the payload.
fn parse_filter(r: &mut Reader<'_>) -> Res<Vec<Insn>> {
    let mut s = r.sub(size::FILTER, "filter header")?;
    let ftype = s.u16("filter type")?;
    s.u16("dummy")?;
    let nitems = s.u32("nitems")?;
    if ftype != FILTER_TYPE_BPF {
        return Err(DecodeErrorKind::FilterType(ftype));
    }
    let n = usize::try_from(nitems).unwrap_or(usize::MAX);
    if n == 0 {
        return Err(ValidateError::Empty.into());
    }
    if n > MAX_INSNS {
        return Err(ValidateError::TooLong(n).into());
    }
    // n ≤ MAX_INSNS, so n × 8 cannot overflow.
    let mut prog = r.sub(n * size::INSN, "filter instructions")?;
    let mut insns = Vec::with_capacity(n);
    for _ in 0..n {
        insns.push(Insn {
            code: prog.u16("insn code")?,
            jt: prog.u8("insn jt")?,
            jf: prog.u8("insn jf")?,
            k: prog.u32("insn k")?,
        });
    }
    bpf::validate(&insns)?;
    Ok(insns)
}

fn parse_interfaces(r: &mut Reader<'_>, count: u16) -> Res<Vec<Interface>> {
    // Never trust the count for the allocation: each entry needs 12 bytes.
    let mut ifs = Vec::with_capacity(usize::from(count).min(r.remaining() / size::IF_ENTRY));
    for _ in 0..count {
        ifs.push(parse_interface(r)?);
    }
    Ok(ifs)
}

fn parse_interface(r: &mut Reader<'_>) -> Res<Interface> {
    let mut e = r.sub(size::IF_ENTRY, "interface entry")?;
    let namelen = usize::from(e.u16("namelen")?);
    let desclen = usize::from(e.u16("desclen")?);
    let flags = e.u32("flags")?;
    let naddr = usize::from(e.u16("naddr")?);
    check_name_len("interface name", namelen)?;
    check_name_len("interface description", desclen)?;
    let name = peer_text(r.bytes(namelen, "interface name")?, MAX_NAME_LEN);
    let description = peer_text(r.bytes(desclen, "interface description")?, MAX_NAME_LEN);
    // naddr ≤ 65535, so naddr × 512 cannot overflow; check it all is there
    // before allocating.
    let mut a = r.sub(naddr * size::IF_ADDR, "interface addresses")?;
    let mut addrs = Vec::with_capacity(naddr);
    for _ in 0..naddr {
        let addr = parse_sockaddr(&mut a)?;
        let netmask = parse_sockaddr(&mut a)?;
        let broadaddr = parse_sockaddr(&mut a)?;
        let dstaddr = parse_sockaddr(&mut a)?;
        // Addresses of families we do not know are skipped (bytes consumed).
        if let Some((addr, scope_id)) = addr {
            addrs.push(IfAddr {
                addr,
                netmask: netmask.map(|(ip, _)| ip),
                broadaddr: broadaddr.map(|(ip, _)| ip),
                dstaddr: dstaddr.map(|(ip, _)| ip),
                scope_id,
            });
        }
    }
    Ok(Interface {
        name,
        description,
        flags,
        addrs,
    })
}

/// One 128-byte sockaddr: the address and IPv6 scope id, or `None` when it is
/// absent (all zero) or of a family other than IPv4/IPv6.
fn parse_sockaddr(r: &mut Reader<'_>) -> Res<Option<(IpAddr, u32)>> {
    let mut s = r.sub(size::SOCKADDR, "sockaddr")?;
    let fam = s.u16("sockaddr family")?;
    s.u16("sockaddr port")?;
    Ok(match fam {
        family::INET => {
            let a: [u8; 4] = s.array("IPv4 address")?;
            Some((IpAddr::V4(Ipv4Addr::from(a)), 0))
        }
        f if f == family::INET6 || family::INET6_OTHERS.contains(&f) => {
            s.u32("IPv6 flowinfo")?;
            let a: [u8; 16] = s.array("IPv6 address")?;
            let scope = s.u32("IPv6 scope id")?;
            Some((IpAddr::V6(Ipv6Addr::from(a)), scope))
        }
        _ => None,
    })
}

fn check_name_len(what: &'static str, len: usize) -> Res<()> {
    if len > MAX_NAME_LEN {
        Err(DecodeErrorKind::NameTooLong {
            what,
            len,
            max: MAX_NAME_LEN,
        })
    } else {
        Ok(())
    }
}

fn trim_nuls(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    &b[..end]
}

/// Text from a peer: invalid UTF-8 replaced, cut to `max` bytes on a char
/// boundary (replacement characters can make it longer than the wire bytes),
/// trailing NULs dropped. Applying it to its own output changes nothing, so
/// decoded values survive an encode/decode round trip.
fn peer_text(b: &[u8], max: usize) -> String {
    let mut s = String::from_utf8_lossy(trim_nuls(b)).into_owned();
    let len = cut_str(&s, max).trim_end_matches('\0').len();
    s.truncate(len);
    s
}

/// The longest prefix of `s` of at most `max` bytes ending on a char boundary.
fn cut_str(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Big-endian appends.
trait Put {
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_i32(&mut self, v: i32);
}

impl Put for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_i32(&mut self, v: i32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
}

/// A u16 length field and the bytes it covers (cut to what the field can say).
fn put_len_u16(b: &[u8]) -> (u16, &[u8]) {
    let n = b.len().min(usize::from(u16::MAX));
    (n as u16, &b[..n])
}

fn emit_auth(auth: &Auth, out: &mut Vec<u8>) {
    match auth {
        Auth::Null => {
            out.put_u16(auth_type::NULL);
            out.extend_from_slice(&[0; 6]);
        }
        Auth::Password { user, password } => {
            let (l1, user) = put_len_u16(user);
            let (l2, password) = put_len_u16(password);
            out.put_u16(auth_type::PASSWORD);
            out.put_u16(0);
            out.put_u16(l1);
            out.put_u16(l2);
            out.extend_from_slice(user);
            out.extend_from_slice(password);
        }
    }
}

/// The filter body. The program is written as given (validation is the
/// receiver's job); more than u32::MAX instructions cannot occur in practice.
fn emit_filter(insns: &[Insn], out: &mut Vec<u8>) {
    out.put_u16(FILTER_TYPE_BPF);
    out.put_u16(0);
    out.put_u32(u32::try_from(insns.len()).unwrap_or(u32::MAX));
    for i in insns {
        out.put_u16(i.code);
        out.push(i.jt);
        out.push(i.jf);
        out.put_u32(i.k);
    }
}

/// One FINDALLIF entry. Names and descriptions are cut to [`MAX_NAME_LEN`]
/// (clients reject longer ones), the address list to 65535 entries.
fn emit_interface(i: &Interface, out: &mut Vec<u8>) {
    let name = cut_str(&i.name, MAX_NAME_LEN).as_bytes();
    let desc = cut_str(&i.description, MAX_NAME_LEN).as_bytes();
    let naddr = i.addrs.len().min(usize::from(u16::MAX));
    out.put_u16(name.len() as u16);
    out.put_u16(desc.len() as u16);
    out.put_u32(i.flags);
    out.put_u16(naddr as u16);
    out.put_u16(0);
    out.extend_from_slice(name);
    out.extend_from_slice(desc);
    for a in &i.addrs[..naddr] {
        emit_sockaddr(Some(a.addr), a.scope_id, out);
        emit_sockaddr(a.netmask, 0, out);
        emit_sockaddr(a.broadaddr, 0, out);
        emit_sockaddr(a.dstaddr, 0, out);
    }
}

/// A 128-byte sockaddr, all zero when absent.
fn emit_sockaddr(ip: Option<IpAddr>, scope_id: u32, out: &mut Vec<u8>) {
    let start = out.len();
    match ip {
        None => {}
        Some(IpAddr::V4(a)) => {
            out.put_u16(family::INET);
            out.put_u16(0);
            out.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            out.put_u16(family::INET6);
            out.put_u16(0);
            out.put_u32(0);
            out.extend_from_slice(&a.octets());
            out.put_u32(scope_id);
        }
    }
    out.resize(start + size::SOCKADDR, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_bytes(b: &[u8]) -> Result<Message, DecodeError> {
        let h = Header::parse(b).expect("header");
        Message::decode(&h, &b[HEADER_LEN..])
    }

    #[test]
    fn type_names_are_readable() {
        assert_eq!(type_name(0x04), "STARTCAP_REQ");
        assert_eq!(type_name(0x84), "STARTCAP_REPLY");
        assert_eq!(type_name(110), "UDPSTR_PACKET");
        assert_eq!(type_name(0x42), "unknown message");
        for t in 0..=255u8 {
            assert!(!type_name(t).is_empty());
        }
    }

    #[test]
    fn reader_reports_the_field_and_never_overreads() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("a"), Ok(0x0102));
        assert_eq!(
            r.u32("b"),
            Err(DecodeErrorKind::Truncated {
                what: "b",
                need: 6,
                have: 3
            })
        );
        // A failed read consumes nothing.
        assert_eq!(r.u8("c"), Ok(3));
        assert_eq!(r.remaining(), 0);
        assert!(r.bytes(usize::MAX, "huge").is_err());
    }

    #[test]
    fn peer_text_is_lossy_cut_and_idempotent() {
        assert_eq!(peer_text(b"eth0\0\0", 1024), "eth0");
        assert_eq!(peer_text(b"a\xffb", 1024), "a\u{FFFD}b");
        // 1024 invalid bytes become 3072 bytes of replacement characters: cut.
        let t = peer_text(&[0xff; 1024], 1024);
        assert!(t.len() <= 1024 && t.len() > 1000);
        // A cut that would leave a NUL at the end drops it too.
        let mut b = vec![b'x'; 1020];
        b.push(0);
        b.extend_from_slice(&[0xff; 4]);
        let t = peer_text(&b, 1021);
        assert_eq!(t, "x".repeat(1020));
        for s in [t.as_str(), "a\u{FFFD}b", "\0x"] {
            assert_eq!(
                peer_text(peer_text(s.as_bytes(), 8).as_bytes(), 8),
                peer_text(s.as_bytes(), 8)
            );
        }
    }

    #[test]
    fn error_constructor_cuts_on_char_boundary_and_drops_nuls() {
        let long = "é".repeat(200); // 400 bytes
        let Message::Error { code, text } = Message::error(ErrorCode::Open, &long) else {
            panic!("not an error");
        };
        assert_eq!(code, 6);
        assert_eq!(text.len(), 256);
        assert!(text.chars().all(|c| c == 'é'));
        let m = Message::error(ErrorCode::Auth, "a\0b");
        assert_eq!(
            m,
            Message::Error {
                code: 3,
                text: "ab".into()
            }
        );
        let b = m.to_bytes();
        assert_eq!(b, [0, 1, 0, 3, 0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn auth_reply_magic_is_written_in_native_order() {
        let m = Message::AuthReply(Some(AuthReplyInfo::native()));
        let b = m.to_bytes();
        assert_eq!(&b[..8], &[0, 0x88, 0, 0, 0, 0, 0, 8]);
        assert_eq!(&b[8..12], &[0, 0, 0, 0]);
        assert_eq!(&b[12..], &BYTE_ORDER_MAGIC.to_ne_bytes());
        let Ok(Message::AuthReply(Some(info))) = decode_bytes(&b) else {
            panic!("AUTH reply did not decode");
        };
        assert!(!info.server_byte_order_swapped());
        // A big-endian server's reply as a little-endian client sees it, and back.
        let be = [
            0, 0x88, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0xA1, 0xB2, 0xC3, 0xD4,
        ];
        let Ok(Message::AuthReply(Some(info))) = decode_bytes(&be) else {
            panic!("AUTH reply did not decode");
        };
        assert_eq!(info.byte_order_magic, 0xA1B2_C3D4);
        assert_eq!(
            info.server_byte_order_swapped(),
            cfg!(target_endian = "little")
        );
        // Old servers send nothing.
        assert_eq!(
            decode_bytes(&[0, 0x88, 0, 0, 0, 0, 0, 0]),
            Ok(Message::AuthReply(None))
        );
    }

    fn sockaddr(fam: u16, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut s = Vec::new();
        s.put_u16(fam);
        s.put_u16(0);
        fill(&mut s);
        s.resize(size::SOCKADDR, 0);
        s
    }

    fn v6_sockaddr(fam: u16, last: u8, scope: u32) -> Vec<u8> {
        sockaddr(fam, |s| {
            s.put_u32(0);
            let mut a = [0u8; 16];
            a[0] = 0xfe;
            a[1] = 0x80;
            a[15] = last;
            s.extend_from_slice(&a);
            s.put_u32(scope);
        })
    }

    #[test]
    fn ipv6_families_of_every_platform_decode_and_unknown_ones_are_skipped() {
        let mut addrs = Vec::new();
        for fam in [23u16, 10, 24, 28, 30] {
            addrs.extend(v6_sockaddr(fam, fam as u8, 7));
            addrs.extend(vec![0; 3 * size::SOCKADDR]);
        }
        // AF_PACKET (17) address: skipped, its bytes consumed.
        addrs.extend(sockaddr(17, |s| s.extend_from_slice(&[9; 20])));
        addrs.extend(vec![0; 3 * size::SOCKADDR]);
        // IPv4 with netmask and broadcast, unknown-family destination → None.
        addrs.extend(sockaddr(2, |s| s.extend_from_slice(&[10, 0, 0, 1])));
        addrs.extend(sockaddr(2, |s| s.extend_from_slice(&[255, 255, 255, 0])));
        addrs.extend(sockaddr(2, |s| s.extend_from_slice(&[10, 0, 0, 255])));
        addrs.extend(sockaddr(99, |_| {}));
        let mut body = Vec::new();
        body.put_u16(2);
        body.put_u16(0);
        body.put_u32(if_flags::UP);
        body.put_u16(7);
        body.put_u16(0);
        body.extend_from_slice(b"e0");
        body.extend_from_slice(&addrs);
        // A second interface follows: proves the skipped address was consumed.
        body.extend_from_slice(&[0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        body.extend_from_slice(b"lo");
        let h = Header::new(MsgType::FindAllIfReply, 2, body.len() as u32);
        let Ok(Message::FindAllIfReply(ifs)) = Message::decode(&h, &body) else {
            panic!("FINDALLIF reply did not decode");
        };
        assert_eq!(ifs.len(), 2);
        assert_eq!(ifs[1].name, "lo");
        assert_eq!(ifs[1].flags, if_flags::LOOPBACK);
        let a = &ifs[0].addrs;
        assert_eq!(a.len(), 6);
        for (i, fam) in [23u8, 10, 24, 28, 30].into_iter().enumerate() {
            assert_eq!(
                a[i].addr,
                format!("fe80::{fam:x}").parse::<IpAddr>().unwrap()
            );
            assert_eq!(a[i].scope_id, 7);
            assert_eq!(a[i].netmask, None);
        }
        assert_eq!(a[5].addr, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(a[5].netmask, Some(IpAddr::from([255, 255, 255, 0])));
        assert_eq!(a[5].broadaddr, Some(IpAddr::from([10, 0, 0, 255])));
        assert_eq!(a[5].dstaddr, None);
        assert_eq!(a[5].scope_id, 0);
    }

    #[test]
    fn ipv6_is_encoded_with_the_windows_family() {
        let m = Message::FindAllIfReply(vec![Interface {
            name: "eth0".into(),
            description: String::new(),
            flags: 0,
            addrs: vec![IfAddr {
                addr: "fe80::1".parse().unwrap(),
                netmask: Some("ffff:ffff:ffff:ffff::".parse().unwrap()),
                broadaddr: None,
                dstaddr: None,
                scope_id: 3,
            }],
        }]);
        let b = m.to_bytes();
        let entry = HEADER_LEN + size::IF_ENTRY + 4;
        assert_eq!(b.len(), entry + size::IF_ADDR);
        assert_eq!(&b[2..4], &[0, 1], "header value = interface count");
        assert_eq!(&b[entry..entry + 2], &[0, 23]);
        assert_eq!(&b[entry + 24..entry + 28], &[0, 0, 0, 3], "scope id");
        assert!(b[entry + 2 * size::SOCKADDR..].iter().all(|&x| x == 0));
        assert_eq!(decode_bytes(&b), Ok(m));
    }

    #[test]
    fn codes_follow_the_message_type() {
        let e = |msg_type, kind| DecodeError { msg_type, kind }.code();
        let short = || DecodeErrorKind::Truncated {
            what: "x",
            need: 1,
            have: 0,
        };
        assert_eq!(e(0x08, short()), ErrorCode::Auth);
        assert_eq!(
            e(0x08, DecodeErrorKind::AuthType(9)),
            ErrorCode::AuthTypeNotSup
        );
        assert_eq!(e(0x04, short()), ErrorCode::StartCapture);
        assert_eq!(
            e(0x05, DecodeErrorKind::FilterType(2)),
            ErrorCode::UpdateFilter
        );
        assert_eq!(e(0x0B, short()), ErrorCode::SetSampling);
        assert_eq!(e(0x03, short()), ErrorCode::Open);
        assert_eq!(e(0x02, short()), ErrorCode::FindAllIf);
        assert_eq!(e(0x09, short()), ErrorCode::GetStats);
        assert_eq!(e(0x0A, short()), ErrorCode::EndCapture);
        assert_eq!(
            e(0x03, DecodeErrorKind::WrongVersion(1)),
            ErrorCode::WrongVer
        );
        assert_eq!(
            e(0x42, DecodeErrorKind::UnknownType(0x42)),
            ErrorCode::WrongMsg
        );
        assert_eq!(e(0x07, DecodeErrorKind::NotControl(7)), ErrorCode::WrongMsg);
        assert_eq!(e(0x83, short()), ErrorCode::WrongMsg);
        assert_eq!(e(0x88, short()), ErrorCode::WrongMsg);
    }

    #[test]
    fn display_names_the_message() {
        let err = decode_bytes(&[0, 0x0B, 0, 0, 0, 0, 0, 3, 1, 2, 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "SETSAMPLING_REQ: SETSAMPLING request: needs 8 bytes, payload has 3"
        );
    }
}
