//! The contract with the XDP program, `ebpf/xrpcapd_xdp.c`, in one place:
//! its program and map names, the maps' shapes, the counter slots, the rule
//! flags, the structs user space writes into its maps, and the metadata in
//! front of a frame. The C side of it is `ebpf/xrpcapd_abi.h`.
//!
//! Nothing else in the agent spells a map name or a slot number. The layout
//! is asserted at compile time (sizes) and checked against the compiled
//! object by the tests below: every map's type, key and value size and
//! `max_entries` (aya-obj), the structs' sizes and member offsets (the
//! object's BTF), and the flag, counter and limit values (the header).

use std::mem::{offset_of, size_of};

/// The program's function (and kernel) name: how a leftover of ours is
/// recognised on an interface.
pub const PROG_NAME: &str = "xrpcapd_xdp";
/// The program's section: multi-buffer aware (BPF_F_XDP_HAS_FRAGS). The
/// loader renames it to plain `xdp` for kernels without frags.
pub const FRAGS_SECTION: &str = "xdp.frags";

/// Bytes of XDP metadata the program writes in front of a frame: its
/// arrival time (CLOCK_MONOTONIC ns, host order) - `META_LEN`.
pub const META_LEN: usize = 8;
/// Most port ranges per class in [`Rules`] (`MAX_PORT_RANGES`).
pub const MAX_PORT_RANGES: usize = 16;
/// Most RX queues (XSKMAP slots).
pub const MAX_QUEUES: u32 = 256;
/// Most prefixes per family in the LPM tries.
pub const MAX_PREFIXES: u32 = 256;
/// Most own-traffic flows.
pub const MAX_OWN_FLOWS: u32 = 64;

/// What the pre-filter rules may hold (for `xdpc::XdpRules::derive`).
pub const RULE_LIMITS: xdpc::Limits = xdpc::Limits {
    port_ranges: MAX_PORT_RANGES,
    prefixes: MAX_PREFIXES as usize,
};

/// `bpf_map_type` values of the maps below.
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PROG_ARRAY: u32 = 3;
    pub const PERCPU_ARRAY: u32 = 6;
    pub const LPM_TRIE: u32 = 11;
    pub const XSKMAP: u32 = 17;
}

/// One map of the program: its name and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub map_type: u32,
    pub key_size: usize,
    pub value_size: usize,
    pub max_entries: u32,
}

/// One AF_XDP socket fd per RX queue.
pub const XSKS: MapSpec = MapSpec {
    name: "xsks",
    map_type: map_type::XSKMAP,
    key_size: 4,
    value_size: 4,
    max_entries: MAX_QUEUES,
};
/// Per-CPU u64 counters, one slot per [`Counter`].
pub const COUNTERS: MapSpec = MapSpec {
    name: "counters",
    map_type: map_type::PERCPU_ARRAY,
    key_size: 4,
    value_size: 8,
    max_entries: Counter::COUNT,
};
/// The translated filter, tail-called in slot [`FILTER_SLOT`].
pub const FILTER_PROG: MapSpec = MapSpec {
    name: "filter_prog",
    map_type: map_type::PROG_ARRAY,
    key_size: 4,
    value_size: 4,
    max_entries: 1,
};
/// The pre-filter: one [`Rules`] at key 0.
pub const RULES: MapSpec = MapSpec {
    name: "rules",
    map_type: map_type::ARRAY,
    key_size: 4,
    value_size: size_of::<Rules>(),
    max_entries: 1,
};
/// IPv4 prefixes (key: prefix length u32 + address, network order).
pub const V4_PREFIXES: MapSpec = MapSpec {
    name: "v4_prefixes",
    map_type: map_type::LPM_TRIE,
    key_size: size_of::<aya::maps::lpm_trie::Key<[u8; 4]>>(),
    value_size: 1,
    max_entries: MAX_PREFIXES,
};
/// IPv6 prefixes (key: prefix length u32 + address).
pub const V6_PREFIXES: MapSpec = MapSpec {
    name: "v6_prefixes",
    map_type: map_type::LPM_TRIE,
    key_size: size_of::<aya::maps::lpm_trie::Key<[u8; 16]>>(),
    value_size: 1,
    max_entries: MAX_PREFIXES,
};
/// Own-traffic flows ([`Flow`] → 1).
pub const OWN_FLOWS: MapSpec = MapSpec {
    name: "own_flows",
    map_type: map_type::HASH,
    key_size: size_of::<Flow>(),
    value_size: 1,
    max_entries: MAX_OWN_FLOWS,
};
/// Every map of the program.
pub const MAPS: [MapSpec; 7] = [
    XSKS,
    COUNTERS,
    FILTER_PROG,
    RULES,
    V4_PREFIXES,
    V6_PREFIXES,
    OWN_FLOWS,
];

/// The slot of [`FILTER_PROG`] the program tail-calls.
pub const FILTER_SLOT: u32 = 0;
/// The key of the one [`Rules`] in [`RULES`].
pub const RULES_KEY: u32 = 0;

/// The slots of [`COUNTERS`] (`enum counter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// Every frame the program ran on.
    Seen = 0,
    /// Handed to bpf_redirect_map successfully.
    Redirected = 1,
    /// Left to the kernel stack (rules or own traffic).
    Passed = 2,
    /// Dropped: rejected with `DROP_REJECTED`.
    Dropped = 3,
    /// Matched, but no socket on the queue: passed instead.
    RedirectErr = 4,
    /// Own traffic passed to the stack (also in `Passed`).
    Own = 5,
    /// Rejected by the translated filter (also in `Passed` or `Dropped`).
    Filtered = 6,
    /// Redirected without a timestamp: the driver gave no metadata room.
    Unstamped = 7,
}

impl Counter {
    /// Number of slots (`C_COUNT`).
    pub const COUNT: u32 = 8;
    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::Seen,
        Counter::Redirected,
        Counter::Passed,
        Counter::Dropped,
        Counter::RedirectErr,
        Counter::Own,
        Counter::Filtered,
        Counter::Unstamped,
    ];

    /// The slot index.
    pub const fn slot(self) -> u32 {
        self as u32
    }
}

/// The slots the translated filter counts in, as the program does.
pub const FILTER_COUNTERS: xdpc::CounterSlots = xdpc::CounterSlots {
    redirected: Counter::Redirected.slot(),
    redirect_err: Counter::RedirectErr.slot(),
    passed: Counter::Passed.slot(),
    dropped: Counter::Dropped.slot(),
    filtered: Counter::Filtered.slot(),
};

/// Flags of [`Rules::flags`] (`RULE_*`).
pub mod flag {
    /// No pre-filter: redirect every frame.
    pub const ALL: u32 = 0x1;
    /// Some IPv4 frame may match.
    pub const V4: u32 = 0x2;
    /// Some IPv6 frame may match.
    pub const V6: u32 = 0x4;
    /// Some other (or VLAN-tagged) frame may match.
    pub const OTHER: u32 = 0x8;
    pub const V4_ANY_PROTO: u32 = 0x10;
    pub const V4_ANY_ADDR: u32 = 0x20;
    pub const V4_ANY_PORT: u32 = 0x40;
    pub const V6_ANY_PROTO: u32 = 0x80;
    pub const V6_ANY_PORT: u32 = 0x100;
    /// XDP_DROP instead of XDP_PASS for frames the filter rejects.
    pub const DROP_REJECTED: u32 = 0x200;
    /// The own-traffic map has entries.
    pub const OWN: u32 = 0x400;
    pub const V6_ANY_ADDR: u32 = 0x800;

    /// Every flag with its C name (checked against the header).
    pub const ALL_NAMED: [(&str, u32); 12] = [
        ("RULE_ALL", ALL),
        ("RULE_V4", V4),
        ("RULE_V6", V6),
        ("RULE_OTHER", OTHER),
        ("RULE_V4_ANY_PROTO", V4_ANY_PROTO),
        ("RULE_V4_ANY_ADDR", V4_ANY_ADDR),
        ("RULE_V4_ANY_PORT", V4_ANY_PORT),
        ("RULE_V6_ANY_PROTO", V6_ANY_PROTO),
        ("RULE_V6_ANY_PORT", V6_ANY_PORT),
        ("RULE_DROP_REJECTED", DROP_REJECTED),
        ("RULE_OWN", OWN),
        ("RULE_V6_ANY_ADDR", V6_ANY_ADDR),
    ];
}

/// `struct port_range`: inclusive, host byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// `struct rules`: the pre-filter.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    pub flags: u32,
    pub v4_nports: u32,
    pub v6_nports: u32,
    pub pad: u32,
    /// Bitmaps over the 256 protocol numbers.
    pub v4_protos: [u64; 4],
    pub v6_protos: [u64; 4],
    pub v4_ports: [PortRange; MAX_PORT_RANGES],
    pub v6_ports: [PortRange; MAX_PORT_RANGES],
}

/// Bytes of a [`Rules`] in the map.
pub const RULES_LEN: usize = size_of::<Rules>();

impl Rules {
    /// The bytes the C program reads: the `repr(C)` layout, host byte
    /// order, written field by field (no `unsafe` view of the struct).
    pub fn to_bytes(&self) -> [u8; RULES_LEN] {
        let mut b = [0u8; RULES_LEN];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(offset_of!(Rules, flags), &self.flags.to_ne_bytes());
        put(offset_of!(Rules, v4_nports), &self.v4_nports.to_ne_bytes());
        put(offset_of!(Rules, v6_nports), &self.v6_nports.to_ne_bytes());
        put(offset_of!(Rules, pad), &self.pad.to_ne_bytes());
        for (at, words) in [
            (offset_of!(Rules, v4_protos), &self.v4_protos),
            (offset_of!(Rules, v6_protos), &self.v6_protos),
        ] {
            for (i, w) in words.iter().enumerate() {
                put(at + 8 * i, &w.to_ne_bytes());
            }
        }
        for (at, ranges) in [
            (offset_of!(Rules, v4_ports), &self.v4_ports),
            (offset_of!(Rules, v6_ports), &self.v6_ports),
        ] {
            for (i, r) in ranges.iter().enumerate() {
                let at = at + size_of::<PortRange>() * i;
                put(at + offset_of!(PortRange, lo), &r.lo.to_ne_bytes());
                put(at + offset_of!(PortRange, hi), &r.hi.to_ne_bytes());
            }
        }
        b
    }
}

/// `struct flow`: one own-traffic flow (zero address/port = wildcard).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flow {
    /// 4 or 6.
    pub family: u8,
    pub proto: u8,
    /// Network byte order.
    pub sport: u16,
    pub dport: u16,
    pub pad: u16,
    /// An IPv4 address in the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Bytes of a [`Flow`] (the `own_flows` key).
pub const FLOW_LEN: usize = size_of::<Flow>();

impl Flow {
    /// The key as the C program looks it up (see [`Rules::to_bytes`]).
    pub fn to_bytes(&self) -> [u8; FLOW_LEN] {
        let mut b = [0u8; FLOW_LEN];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(offset_of!(Flow, family), &[self.family]);
        put(offset_of!(Flow, proto), &[self.proto]);
        put(offset_of!(Flow, sport), &self.sport.to_ne_bytes());
        put(offset_of!(Flow, dport), &self.dport.to_ne_bytes());
        put(offset_of!(Flow, pad), &self.pad.to_ne_bytes());
        put(offset_of!(Flow, saddr), &self.saddr);
        put(offset_of!(Flow, daddr), &self.daddr);
        b
    }
}

// The layouts the C program reads; no implicit padding anywhere.
const _: () = assert!(size_of::<PortRange>() == 4);
const _: () = assert!(size_of::<Rules>() == 16 + 2 * 32 + 2 * 4 * MAX_PORT_RANGES);
const _: () = assert!(size_of::<Rules>() == 208);
const _: () = assert!(offset_of!(Rules, v4_protos) == 16);
const _: () = assert!(size_of::<Flow>() == 40);
const _: () = assert!(offset_of!(Flow, saddr) == 8);
const _: () = assert!(V4_PREFIXES.key_size == 8 && V6_PREFIXES.key_size == 20);
const _: () = assert!(Counter::Unstamped.slot() + 1 == Counter::COUNT);

/// A struct's layout: its C name, size and (member, offset) in order.
#[cfg(test)]
type Layout = (&'static str, usize, Vec<(&'static str, usize)>);

/// The layouts of the structs user space shares with the program, for the
/// BTF check.
#[cfg(test)]
fn layouts() -> Vec<Layout> {
    vec![
        (
            "port_range",
            size_of::<PortRange>(),
            vec![
                ("lo", offset_of!(PortRange, lo)),
                ("hi", offset_of!(PortRange, hi)),
            ],
        ),
        (
            "rules",
            size_of::<Rules>(),
            vec![
                ("flags", offset_of!(Rules, flags)),
                ("v4_nports", offset_of!(Rules, v4_nports)),
                ("v6_nports", offset_of!(Rules, v6_nports)),
                ("pad", offset_of!(Rules, pad)),
                ("v4_protos", offset_of!(Rules, v4_protos)),
                ("v6_protos", offset_of!(Rules, v6_protos)),
                ("v4_ports", offset_of!(Rules, v4_ports)),
                ("v6_ports", offset_of!(Rules, v6_ports)),
            ],
        ),
        (
            "flow",
            size_of::<Flow>(),
            vec![
                ("family", offset_of!(Flow, family)),
                ("proto", offset_of!(Flow, proto)),
                ("sport", offset_of!(Flow, sport)),
                ("dport", offset_of!(Flow, dport)),
                ("pad", offset_of!(Flow, pad)),
                ("saddr", offset_of!(Flow, saddr)),
                ("daddr", offset_of!(Flow, daddr)),
            ],
        ),
        (
            "v4_key",
            V4_PREFIXES.key_size,
            vec![("prefixlen", 0), ("addr", 4)],
        ),
        (
            "v6_key",
            V6_PREFIXES.key_size,
            vec![("prefixlen", 0), ("addr", 4)],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::afxdp::program::OBJECT;
    use std::collections::HashMap;

    /// The header the C program includes: the C half of this file.
    const HEADER: &str = include_str!("../../../../ebpf/xrpcapd_abi.h");

    #[test]
    fn structs_encode_field_by_field_in_host_order() {
        let mut r = Rules {
            flags: 0x0102_0304,
            v4_nports: 1,
            ..Rules::default()
        };
        r.v6_protos[3] = 1 << 63;
        r.v6_ports[15] = PortRange {
            lo: 0x0a0b,
            hi: 0xfffe,
        };
        let b = r.to_bytes();
        assert_eq!(
            b[..8],
            [0x0102_0304u32.to_ne_bytes(), 1u32.to_ne_bytes()].concat()
        );
        assert_eq!(b[48 + 24..48 + 32], (1u64 << 63).to_ne_bytes());
        assert_eq!(
            b[RULES_LEN - 4..],
            [0x0a0bu16.to_ne_bytes(), 0xfffeu16.to_ne_bytes()].concat()
        );
        let f = Flow {
            family: 6,
            proto: 17,
            sport: 0x1234,
            daddr: [9; 16],
            ..Flow::default()
        };
        let b = f.to_bytes();
        assert_eq!(
            b[..4],
            [
                6,
                17,
                0x1234u16.to_ne_bytes()[0],
                0x1234u16.to_ne_bytes()[1]
            ]
        );
        assert_eq!(b[8..24], [0; 16]);
        assert_eq!(b[24..], [9; 16]);
    }

    #[test]
    fn every_map_has_the_shape_user_space_assumes() {
        let obj = aya_obj::Object::parse(OBJECT).expect("the object parses");
        let mut names: Vec<&str> = obj.maps.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut ours: Vec<&str> = MAPS.iter().map(|m| m.name).collect();
        ours.sort_unstable();
        assert_eq!(names, ours, "the object's maps are exactly ours");
        for m in MAPS {
            let o = &obj.maps[m.name];
            assert_eq!(o.map_type(), m.map_type, "{}: type", m.name);
            assert_eq!(o.key_size() as usize, m.key_size, "{}: key size", m.name);
            assert_eq!(o.value_size() as usize, m.value_size, "{}: value", m.name);
            assert_eq!(o.max_entries(), m.max_entries, "{}: max_entries", m.name);
        }
        let p = obj.programs.get(PROG_NAME).expect("the program, by name");
        assert!(matches!(
            p.section,
            aya_obj::ProgramSection::Xdp { frags: true, .. }
        ));
        assert!(OBJECT
            .windows(FRAGS_SECTION.len() + 1)
            .any(|w| w == [FRAGS_SECTION.as_bytes(), b"\0"].concat()));
    }

    #[test]
    fn structs_are_laid_out_as_the_object_says() {
        let obj = aya_obj::Object::parse(OBJECT).expect("the object parses");
        let btf = obj.btf.as_ref().expect("the object carries BTF (clang -g)");
        let structs = btf::structs(&btf.to_bytes());
        for (name, size, members) in layouts() {
            let s = structs
                .get(name)
                .unwrap_or_else(|| panic!("struct {name} missing from the BTF"));
            assert_eq!(s.size, size, "struct {name}: size");
            let got: Vec<(&str, usize)> = s.members.iter().map(|(n, o)| (n.as_str(), *o)).collect();
            assert_eq!(got, members, "struct {name}: members and offsets");
        }
    }

    #[test]
    fn flags_counters_and_limits_match_the_header() {
        let defs = header_values(HEADER);
        let get = |name: &str| {
            *defs
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing from xrpcapd_abi.h"))
        };
        for (name, v) in flag::ALL_NAMED {
            assert_eq!(get(name), u64::from(v), "{name}");
        }
        let c_names = [
            "C_SEEN",
            "C_REDIRECTED",
            "C_PASSED",
            "C_DROPPED",
            "C_REDIRECT_ERR",
            "C_OWN",
            "C_FILTERED",
            "C_UNSTAMPED",
        ];
        for (name, c) in c_names.iter().zip(Counter::ALL) {
            assert_eq!(get(name), u64::from(c.slot()), "{name}");
        }
        assert_eq!(get("C_COUNT"), u64::from(Counter::COUNT));
        assert_eq!(get("MAX_PORT_RANGES"), MAX_PORT_RANGES as u64);
        assert_eq!(get("META_LEN"), META_LEN as u64);
        assert_eq!(get("MAX_QUEUES"), u64::from(MAX_QUEUES));
        assert_eq!(get("MAX_PREFIXES"), u64::from(MAX_PREFIXES));
        assert_eq!(get("MAX_OWN_FLOWS"), u64::from(MAX_OWN_FLOWS));
        assert_eq!(get("RULES_KEY"), u64::from(RULES_KEY));
        assert_eq!(get("FILTER_SLOT"), u64::from(FILTER_SLOT));
        let rule_defs = defs.keys().filter(|k| k.starts_with("RULE_")).count();
        assert_eq!(
            rule_defs,
            flag::ALL_NAMED.len(),
            "a flag without a Rust name"
        );
    }

    /// `#define NAME VALUE` and `NAME = VALUE,` (enumerators) of a header.
    fn header_values(text: &str) -> HashMap<String, u64> {
        let num = |v: &str| {
            let v = v.trim().trim_end_matches(',');
            match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => v.parse().ok(),
            }
        };
        let mut out = HashMap::new();
        for line in text.lines() {
            let line = line.split("//").next().unwrap_or("").trim();
            let mut w = line.split_whitespace();
            let (name, value) = match (w.next(), w.next(), w.next()) {
                (Some("#define"), Some(n), Some(v)) => (n, v),
                (Some(n), Some("="), Some(v)) => (n, v),
                _ => continue,
            };
            if let Some(v) = num(value) {
                out.insert(name.to_owned(), v);
            }
        }
        out
    }

    /// Just enough of a BTF reader for struct layouts (the kernel's
    /// Documentation/bpf/btf.rst: header, then types, then strings).
    mod btf {
        use std::collections::HashMap;

        pub struct Struct {
            pub size: usize,
            /// (name, byte offset) in order.
            pub members: Vec<(String, usize)>,
        }

        pub fn structs(b: &[u8]) -> HashMap<String, Struct> {
            let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
            assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0xeb9f, "BTF magic");
            let hdr_len = u32_at(4) as usize;
            let (type_off, type_len) = (u32_at(8) as usize, u32_at(12) as usize);
            let str_off = u32_at(16) as usize;
            let strings = hdr_len + str_off;
            let name = |off: u32| {
                let s = &b[strings + off as usize..];
                let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).into_owned()
            };
            let mut out = HashMap::new();
            let (mut p, end) = (hdr_len + type_off, hdr_len + type_off + type_len);
            while p < end {
                let (name_off, info, size) = (u32_at(p), u32_at(p + 4), u32_at(p + 8));
                let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
                let kind_flag = info >> 31 == 1;
                p += 12;
                // Bytes after the common part, by kind.
                let extra = match kind {
                    1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                    3 => 12,                      // ARRAY
                    4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
                    6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
                    _ => 0, // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
                };
                if kind == 4 {
                    let members = (0..vlen)
                        .map(|i| {
                            let m = p + 12 * i;
                            let off = u32_at(m + 8);
                            // With kind_flag the low 24 bits are the bit offset.
                            let bits = if kind_flag { off & 0xff_ffff } else { off };
                            (name(u32_at(m)), bits as usize / 8)
                        })
                        .collect();
                    out.insert(
                        name(name_off),
                        Struct {
                            size: size as usize,
                            members,
                        },
                    );
                }
                p += extra;
            }
            out
        }
    }
}
