//! Standard tunnels: the numbers on the wire, and the pure functions that
//! take frames out of them ([`decap`]) or put them in ([`encap`]).
//!
//! Both directions are sans-IO: functions over byte slices, unit- and
//! property-tested, with no socket, allocation or syscall per packet.
//! [`export`] runs the `TunnelClient` exports.

pub mod decap;
pub mod encap;
pub mod export;

/// IANA UDP port of VXLAN (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// IANA UDP port of GENEVE (RFC 8926).
pub const GENEVE_PORT: u16 = 6081;

/// IP protocol numbers.
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_GRE: u8 = 47;

/// EtherTypes (and GRE protocol types, which share the registry).
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
/// 802.1Q customer tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad service tag (QinQ outer).
pub const ETH_P_8021AD: u16 = 0x88A8;
/// The pre-standard QinQ tag some switches still send.
pub const ETH_P_QINQ_9100: u16 = 0x9100;
/// Transparent Ethernet Bridging: GRE (L2GRE/NVGRE) and GENEVE carrying Ethernet.
pub const ETH_P_TEB: u16 = 0x6558;
/// GRE protocol of ERSPAN type I and II.
pub const ETH_P_ERSPAN2: u16 = 0x88BE;
/// GRE protocol of ERSPAN type III.
pub const ETH_P_ERSPAN3: u16 = 0x22EB;

/// Length of an Ethernet header without tags.
pub const ETH_HLEN: usize = 14;
/// Length of a VXLAN header.
pub const VXLAN_HLEN: usize = 8;
/// Length of a GENEVE header without options.
pub const GENEVE_HLEN: usize = 8;
/// ERSPAN type II header length.
pub const ERSPAN2_HLEN: usize = 8;
/// ERSPAN type III header length, without the platform-specific subheader.
pub const ERSPAN3_HLEN: usize = 12;
/// ERSPAN type III platform-specific subheader (present when the O bit is set).
pub const ERSPAN3_PLATFORM_HLEN: usize = 8;
