//! Standard tunnels: the numbers on the wire, and the pure functions that
//! take frames out of them (`decap`) or put them in ([`encap`]).
//!
//! Both directions are sans-IO: functions over byte slices, unit- and
//! property-tested, with no socket, allocation or syscall per packet.
//! [`export`] runs the `TunnelClient` exports.

pub mod encap;
pub mod export;

/// IANA UDP port of VXLAN (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;

/// IP protocol numbers.
pub const IPPROTO_GRE: u8 = 47;

/// Transparent Ethernet Bridging: GRE (L2GRE/NVGRE) and GENEVE carrying Ethernet.
pub const ETH_P_TEB: u16 = 0x6558;
/// GRE protocol of ERSPAN type I and II.
pub const ETH_P_ERSPAN2: u16 = 0x88BE;
/// GRE protocol of ERSPAN type III.
pub const ETH_P_ERSPAN3: u16 = 0x22EB;
