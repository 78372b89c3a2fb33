//! Standard tunnels: encapsulation for export (`encap`, sans-IO) and the
//! running exports of `TunnelClient` lines (`export`).

pub mod encap;
pub mod export;

/// IANA UDP port of VXLAN (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// IP protocol number of GRE.
pub const IPPROTO_GRE: i32 = 47;
/// GRE protocol type of transparent Ethernet bridging (L2 GRE, gretap).
pub const GRE_PROTO_TEB: u16 = 0x6558;
/// GRE protocol type of ERSPAN type II.
pub const GRE_PROTO_ERSPAN2: u16 = 0x88BE;
/// GRE protocol type of ERSPAN type III.
pub const GRE_PROTO_ERSPAN3: u16 = 0x22EB;
