//! What the XDP program can check in the kernel, derived from the capture's
//! cBPF program.
//!
//! The derivation is a conservative over-approximation: every frame the cBPF
//! program accepts satisfies the rules (so it is redirected to the AF_XDP
//! socket, where the worker runs the full cBPF program); frames the rules
//! reject are ones the cBPF program rejects too.
//!
//! How: every path from the first instruction to an accepting `ret` is walked
//! (cBPF jumps only forward, so paths are finite; their number is bounded).
//! Along a path, the true branch of `jeq`/`jgt`/`jge` against a recognised
//! load becomes a constraint; everything else is ignored — dropping a
//! conjunct only widens the set, so that stays sound. The recognised loads
//! are the fixed offsets libpcap uses on Ethernet: the ethertype at 12, the
//! IPv4 protocol at 23, the words after the IPv4 header (`ldxb 4*([14]&0xf);
//! ldh [x+14]/[x+16]`), the IPv6 next header at 20, the words at 54/56, and
//! the eight 32-bit words at 22..=50 that hold the addresses (IPv4 source and
//! destination at 26/30; IPv6 source at 22..=34, destination at 38..=50).
//! libpcap tests an address prefix word by word: `jeq` on the word, masked
//! (`and #m`) for the partial one, or `jset #m` whose false branch says the
//! masked bits are zero (`net ::/16`, `src net 2001:db8::/48`). Each such
//! branch fixes bits of a word; at an accepting `ret` the leading run of
//! fixed bits of the source or of the destination address is a prefix the
//! frame's address lies in. A path is then sorted by its ethertype into
//! IPv4, IPv6 or other, and each class takes the union of its paths per
//! dimension (protocols, prefixes, ports).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use rpcap::bpf::opcode::*;
use rpcap::bpf::Insn;

/// What the XDP program can hold: its `MAX_PORT_RANGES` and the
/// `max_entries` of its LPM tries (the agent's `afxdp::abi` has the values).
/// Rules beyond them widen: ranges merge into their hull, too many prefixes
/// become "any address".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most port ranges per class.
    pub port_ranges: usize,
    /// Most prefixes per family.
    pub prefixes: usize,
}
/// Bound on the path walk; a bigger program gets no kernel pre-filter.
const MAX_STEPS: usize = 200_000;

/// Rules for one address family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassRules {
    /// Allowed protocol numbers (IPv4 protocol / IPv6 next header); `None`: any.
    pub protos: Option<BTreeSet<u8>>,
    /// Source or destination inside one of these (of the class's family); `None`: any.
    pub prefixes: Option<BTreeSet<IpNet>>,
    /// Either port word inside one of these inclusive ranges; `None`: any.
    pub ports: Option<Vec<(u16, u16)>>,
}

/// The kernel-side pre-filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XdpRules {
    /// No pre-filter: every frame goes to the socket.
    pub all: bool,
    /// `None`: no IPv4 frame can pass the filter.
    pub v4: Option<ClassRules>,
    pub v6: Option<ClassRules>,
    /// Some non-IP (or VLAN-tagged) frame can pass.
    pub other: bool,
}

impl XdpRules {
    /// Redirect everything (empty filter, or a program too complex to walk).
    pub fn all() -> XdpRules {
        XdpRules {
            all: true,
            ..XdpRules::default()
        }
    }

    /// Derives the rules of `insns` (a validated program; empty = accept
    /// all) within `limits`.
    pub fn derive(insns: &[Insn], limits: &Limits) -> XdpRules {
        if insns.is_empty() {
            return XdpRules::all();
        }
        let mut w = Walker {
            insns,
            steps: 0,
            rules: XdpRules::default(),
        };
        if w.walk(0, Path::default()).is_err() || w.rules.all {
            return XdpRules::all();
        }
        let mut r = w.rules;
        for c in [&mut r.v4, &mut r.v6].into_iter().flatten() {
            if let Some(p) = &mut c.ports {
                *p = merge_ranges(std::mem::take(p), limits.port_ranges);
            }
            if c.prefixes
                .as_ref()
                .is_some_and(|p| p.len() > limits.prefixes)
            {
                c.prefixes = None;
            }
        }
        r
    }

    /// Whether the XDP program redirects `frame` (a model of its decision,
    /// own-traffic exclusion aside), used to test the derivation.
    pub fn matches(&self, frame: &[u8]) -> bool {
        if self.all {
            return true;
        }
        let b16 = |o: usize| {
            frame
                .get(o..o + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let ports_ok = |ranges: &Option<Vec<(u16, u16)>>, off: usize| match ranges {
            None => true,
            Some(r) => match (b16(off), b16(off + 2)) {
                (Some(a), Some(b)) => r
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&a) || (lo..=hi).contains(&b)),
                _ => true,
            },
        };
        let proto_ok = |c: &ClassRules, p: u8| c.protos.as_ref().is_none_or(|s| s.contains(&p));
        let addr_ok = |c: &ClassRules, src: IpAddr, dst: IpAddr| {
            c.prefixes
                .as_ref()
                .is_none_or(|s| s.iter().any(|n| n.contains(&src) || n.contains(&dst)))
        };
        let bytes = |o: usize| -> [u8; 16] {
            let mut b = [0; 16];
            b.copy_from_slice(&frame[o..o + 16]);
            b
        };
        match b16(12) {
            Some(0x0800) => {
                let Some(c) = &self.v4 else { return false };
                if frame.len() < 34 || frame[14] & 0xf < 5 {
                    return true;
                }
                let v4 =
                    |o: usize| IpAddr::from([frame[o], frame[o + 1], frame[o + 2], frame[o + 3]]);
                proto_ok(c, frame[23])
                    && addr_ok(c, v4(26), v4(30))
                    && ports_ok(&c.ports, 14 + 4 * (frame[14] & 0xf) as usize)
            }
            Some(0x86dd) => {
                let Some(c) = &self.v6 else { return false };
                if frame.len() < 54 {
                    return true;
                }
                // The model checks the fixed offsets only (no extension
                // headers): the kernel program accepts a superset of this.
                proto_ok(c, frame[20])
                    && addr_ok(c, IpAddr::from(bytes(22)), IpAddr::from(bytes(38)))
                    && ports_ok(&c.ports, 54)
            }
            _ => self.other,
        }
    }
}

/// The addresses of a frame as far as a path fixed them: bit `b` of word
/// `i` (the big-endian word at 22 + 4 * i) is known when `known[i]` has it,
/// and is then that bit of `val[i]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct AddrBits {
    known: [u32; ADDR_WORDS],
    val: [u32; ADDR_WORDS],
    /// The word fixed last: its address is the one whose test accepted
    /// (an `or` of address tests leaves the failed ones half done).
    last: usize,
}

/// Words at 22, 26, ..., 50: the IPv6 source (0..4) and destination (4..8)
/// addresses; IPv4's source and destination are words 1 and 2.
const ADDR_WORDS: usize = 8;
const ADDR_FIRST: u32 = 22;

impl AddrBits {
    /// Adds "bits `m` of word `i` equal those of `v`"; `None` when that
    /// contradicts what the path fixed already (no frame takes the branch).
    fn fix(mut self, i: usize, m: u32, v: u32) -> Option<AddrBits> {
        let both = self.known[i] & m;
        if (self.val[i] ^ v) & both != 0 {
            return None;
        }
        self.known[i] |= m;
        self.val[i] = (self.val[i] & !m) | (v & m);
        if m != 0 {
            self.last = i;
        }
        Some(self)
    }

    /// The leading run of known bits over `words`, as (value, length).
    /// The leading run of known bits over `words`, left-aligned in a u128,
    /// as (value, length).
    fn prefix(&self, words: std::ops::Range<usize>) -> (u128, u32) {
        let (mut known, mut val) = (0u128, 0u128);
        for (n, i) in words.enumerate() {
            let shift = 96 - 32 * n as u32;
            known |= u128::from(self.known[i]) << shift;
            val |= u128::from(self.val[i]) << shift;
        }
        let len = known.leading_ones();
        let mask = if len == 0 { 0 } else { !0u128 << (128 - len) };
        (val & mask, len)
    }

    /// The prefix of an IPv4 path: source (word 1) or destination (word 2).
    fn v4_prefix(&self) -> Option<IpNet> {
        let net = |w: usize| {
            let (v, len) = self.prefix(w..w + 1);
            Ipv4Net::new(Ipv4Addr::from((v >> 96) as u32), len.min(32) as u8)
                .ok()
                .map(IpNet::from)
        };
        choose(net(1), net(2), self.last == 2)
    }

    /// The prefix of an IPv6 path: source (words 0..4) or destination (4..8).
    fn v6_prefix(&self) -> Option<IpNet> {
        let net = |w: usize| {
            let (v, len) = self.prefix(w..w + 4);
            Ipv6Net::new(Ipv6Addr::from(v), len as u8)
                .ok()
                .map(IpNet::from)
        };
        choose(net(0), net(4), self.last >= 4)
    }
}

/// Either prefix is sound for the path (its frames have the source in one
/// and the destination in the other). Take the address tested last (`dst`
/// says so), unless nothing leading of it is known; length 0 says nothing:
/// `None`.
fn choose(src: Option<IpNet>, dst: Option<IpNet>, dst_last: bool) -> Option<IpNet> {
    let real = |n: Option<IpNet>| n.filter(|n| n.prefix_len() > 0);
    let (first, second) = if dst_last { (dst, src) } else { (src, dst) };
    real(first).or(real(second))
}

/// A field the accumulator holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    EtherType,
    Proto4,
    Next6,
    /// 32-bit word `i` of [`AddrBits`] (at 22 + 4 * i).
    Addr(usize),
    /// Word at the IPv4 upper-layer header + 0 / + 2.
    L4W0,
    L4W1,
    /// Words at 54 / 56 (IPv6 upper-layer header without extension headers).
    W54,
    W56,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val {
    Unknown,
    Field(Field, u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XVal {
    Unknown,
    /// `ldxb 4*([14]&0xf)`: the IPv4 header length.
    IpHl,
}

/// The constraints collected on one path.
#[derive(Debug, Clone, Copy)]
struct Path {
    a: Val,
    x: XVal,
    ethertype: Option<u16>,
    proto4: Option<u8>,
    next6: Option<u8>,
    addr: AddrBits,
    /// Inclusive intervals of L4W0, L4W1, W54, W56.
    words: [(u16, u16); 4],
    /// Whether a word's interval came from a taken `jeq`/`jgt`/`jge` (the
    /// filter asked for it) rather than from a branch not taken.
    asked: [bool; 4],
}

impl Default for Path {
    fn default() -> Self {
        Path {
            a: Val::Unknown,
            x: XVal::Unknown,
            ethertype: None,
            proto4: None,
            next6: None,
            addr: AddrBits::default(),
            words: [(0, u16::MAX); 4],
            asked: [false; 4],
        }
    }
}

fn word_index(f: Field) -> Option<usize> {
    match f {
        Field::L4W0 => Some(0),
        Field::L4W1 => Some(1),
        Field::W54 => Some(2),
        Field::W56 => Some(3),
        _ => None,
    }
}

struct Walker<'a> {
    insns: &'a [Insn],
    steps: usize,
    rules: XdpRules,
}

struct TooComplex;

impl Walker<'_> {
    fn walk(&mut self, mut pc: usize, mut p: Path) -> Result<(), TooComplex> {
        loop {
            self.steps += 1;
            if self.steps > MAX_STEPS || self.rules.all {
                return Err(TooComplex);
            }
            let Some(i) = self.insns.get(pc).copied() else {
                return Ok(()); // validated programs never fall off the end
            };
            let k = i.k;
            match i.code & BPF_CLASS_MASK {
                BPF_RET => {
                    let accepts = i.code & BPF_RVAL_MASK != BPF_K || k != 0;
                    if accepts {
                        self.accept(&p);
                    }
                    return Ok(());
                }
                BPF_LD => {
                    let size = i.code & BPF_SIZE_MASK;
                    p.a = match (i.code & BPF_MODE_MASK, size, k) {
                        (BPF_ABS, BPF_H, 12) => Val::Field(Field::EtherType, 0xffff),
                        (BPF_ABS, BPF_B, 23) => Val::Field(Field::Proto4, 0xff),
                        (BPF_ABS, BPF_B, 20) => Val::Field(Field::Next6, 0xff),
                        (BPF_ABS, BPF_W, k)
                            if (ADDR_FIRST..ADDR_FIRST + 4 * ADDR_WORDS as u32).contains(&k)
                                && (k - ADDR_FIRST).is_multiple_of(4) =>
                        {
                            Val::Field(Field::Addr(((k - ADDR_FIRST) / 4) as usize), u32::MAX)
                        }
                        (BPF_ABS, BPF_H, 54) => Val::Field(Field::W54, 0xffff),
                        (BPF_ABS, BPF_H, 56) => Val::Field(Field::W56, 0xffff),
                        (BPF_IND, BPF_H, 14) if p.x == XVal::IpHl => {
                            Val::Field(Field::L4W0, 0xffff)
                        }
                        (BPF_IND, BPF_H, 16) if p.x == XVal::IpHl => {
                            Val::Field(Field::L4W1, 0xffff)
                        }
                        _ => Val::Unknown,
                    };
                    pc += 1;
                }
                BPF_LDX => {
                    p.x = if i.code == BPF_LDX | BPF_B | BPF_MSH && k == 14 {
                        XVal::IpHl
                    } else {
                        XVal::Unknown
                    };
                    pc += 1;
                }
                BPF_ST | BPF_STX => pc += 1,
                BPF_ALU => {
                    p.a = match p.a {
                        Val::Field(f, m)
                            if i.code & BPF_OP_MASK == BPF_AND
                                && i.code & BPF_SRC_MASK == BPF_K =>
                        {
                            Val::Field(f, m & k)
                        }
                        _ => Val::Unknown,
                    };
                    pc += 1;
                }
                BPF_MISC => {
                    if i.code & BPF_MISCOP_MASK == BPF_TAX {
                        p.x = XVal::Unknown;
                    } else {
                        p.a = Val::Unknown;
                    }
                    pc += 1;
                }
                _ => {
                    // BPF_JMP
                    let op = i.code & BPF_OP_MASK;
                    if op == BPF_JA {
                        pc = pc + 1 + k as usize;
                        continue;
                    }
                    let t = pc + 1 + i.jt as usize;
                    let f = pc + 1 + i.jf as usize;
                    let field = match p.a {
                        Val::Field(field, m) if i.code & BPF_SRC_MASK == BPF_K => Some((field, m)),
                        _ => None,
                    };
                    let (pt, pf) = match field {
                        Some((field, m)) => constrain(&p, field, m, op, k),
                        None => (Some(p), Some(p)),
                    };
                    if t == f {
                        // Both branches go to the same place: no constraint.
                        pc = t;
                        continue;
                    }
                    if let Some(pt) = pt {
                        self.walk(t, pt)?;
                    }
                    match pf {
                        Some(pf) => {
                            p = pf;
                            pc = f;
                        }
                        None => return Ok(()),
                    }
                }
            }
        }
    }

    fn accept(&mut self, p: &Path) {
        let r = &mut self.rules;
        match p.ethertype {
            None => r.all = true,
            Some(0x0800) => {
                let c = r.v4.get_or_insert_with(empty_class);
                add_proto(c, p.proto4);
                add_prefix(c, p.addr.v4_prefix());
                add_ports(c, &p.words[0..2], &p.asked[0..2]);
            }
            Some(0x86dd) => {
                let c = r.v6.get_or_insert_with(empty_class);
                add_proto(c, p.next6);
                add_prefix(c, p.addr.v6_prefix());
                add_ports(c, &p.words[2..4], &p.asked[2..4]);
            }
            Some(_) => r.other = true,
        }
    }
}

/// A class no path reached yet: every dimension empty (grows with `add_*`).
fn empty_class() -> ClassRules {
    ClassRules {
        protos: Some(BTreeSet::new()),
        prefixes: Some(BTreeSet::new()),
        ports: Some(Vec::new()),
    }
}

fn add_proto(c: &mut ClassRules, p: Option<u8>) {
    match (&mut c.protos, p) {
        (Some(set), Some(p)) => {
            set.insert(p);
        }
        (slot, _) => *slot = None,
    }
}

fn add_prefix(c: &mut ClassRules, p: Option<IpNet>) {
    match (&mut c.prefixes, p) {
        (Some(set), Some(p)) => {
            set.insert(p);
        }
        (slot, _) => *slot = None,
    }
}

fn add_ports(c: &mut ClassRules, words: &[(u16, u16)], asked: &[bool]) {
    let full = (0, u16::MAX);
    // The path needs each word in its interval; "either word in the range
    // of one of them" is a superset of the path whichever we pick. Pick the
    // tightest of those the filter asked for (`port 53` rather than the
    // "not 53" left by a branch not taken), else the tightest of all.
    let width = |w: &(u16, u16)| w.1 - w.0;
    let constrained = || words.iter().zip(asked).filter(|(w, _)| **w != full);
    let range = constrained()
        .filter(|(_, a)| **a)
        .map(|(w, _)| *w)
        .min_by_key(width)
        .or_else(|| constrained().map(|(w, _)| *w).min_by_key(width));
    match (&mut c.ports, range) {
        (Some(v), Some(r)) => v.push(r),
        (slot, _) => *slot = None,
    }
}

/// Sorts and merges overlapping ranges; more than `max` are merged into
/// their hull (a superset).
fn merge_ranges(mut v: Vec<(u16, u16)>, max: usize) -> Vec<(u16, u16)> {
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    if out.len() > max {
        let lo = out[0].0;
        let hi = out.iter().map(|r| r.1).max().unwrap_or(u16::MAX);
        out = vec![(lo, hi)];
    }
    out
}

/// The two successors of a conditional jump on `field & m` against `k`:
/// `None` where the branch cannot be taken (contradicts the path).
fn constrain(p: &Path, field: Field, m: u32, op: u16, k: u32) -> (Option<Path>, Option<Path>) {
    let mut t = *p;
    let mut f = *p;
    let whole = |f: Field| match f {
        Field::EtherType | Field::L4W0 | Field::L4W1 | Field::W54 | Field::W56 => m == 0xffff,
        Field::Proto4 | Field::Next6 => m == 0xff,
        Field::Addr(_) => true, // any mask: it fixes the bits it keeps
    };
    if !whole(field) {
        return (Some(t), Some(f));
    }
    match (op, field) {
        (BPF_JEQ, Field::EtherType) => {
            if p.ethertype.is_some_and(|e| u32::from(e) != k) || k > 0xffff {
                return (None, Some(f));
            }
            t.ethertype = Some(k as u16);
        }
        (BPF_JEQ, Field::Proto4 | Field::Next6) => {
            let slot = if field == Field::Proto4 {
                &mut t.proto4
            } else {
                &mut t.next6
            };
            if slot.is_some_and(|v| u32::from(v) != k) || k > 0xff {
                return (None, Some(f));
            }
            *slot = Some(k as u8);
        }
        // (word & m) == k: the bits of m are those of k (none if k has others).
        (BPF_JEQ, Field::Addr(i)) => match (k & !m == 0).then(|| p.addr.fix(i, m, k)).flatten() {
            Some(a) => t.addr = a,
            None => return (None, Some(f)),
        },
        // (word & m & k) != 0 is false: the bits of m & k are zero.
        (BPF_JSET, Field::Addr(i)) => match p.addr.fix(i, m & k, 0) {
            Some(a) => f.addr = a,
            None => return (Some(t), None),
        },
        (_, w) if word_index(w).is_some() => {
            let idx = word_index(w).unwrap_or(0);
            let (lo, hi) = p.words[idx];
            let k = k.min(0x1_0000);
            let (tr, fr) = match op {
                BPF_JEQ => ((k, k), (u32::from(lo), u32::from(hi))),
                BPF_JGT => ((k + 1, u32::from(hi)), (u32::from(lo), k)),
                BPF_JGE => ((k, u32::from(hi)), (u32::from(lo), k.wrapping_sub(1))),
                _ => (
                    (u32::from(lo), u32::from(hi)),
                    (u32::from(lo), u32::from(hi)),
                ),
            };
            let clip = |(a, b): (u32, u32)| {
                let a = a.max(u32::from(lo));
                let b = b.min(u32::from(hi));
                (a <= b && b <= 0xffff).then_some((a as u16, b as u16))
            };
            t.asked[idx] = true;
            match clip(tr) {
                Some(r) => t.words[idx] = r,
                None => {
                    return (
                        None,
                        clip(fr).map(|r| {
                            f.words[idx] = r;
                            f
                        }),
                    )
                }
            }
            if op != BPF_JEQ {
                match clip(fr) {
                    Some(r) => f.words[idx] = r,
                    None => return (Some(t), None),
                }
            }
        }
        _ => {}
    }
    (Some(t), Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcap::bpf::libpcap::CompileError;
    use rpcap::bpf::Program;

    /// The XDP program's limits (`afxdp::abi` in the agent).
    const LIMITS: Limits = Limits {
        port_ranges: 16,
        prefixes: 256,
    };
    const DLT_EN10MB: i32 = 1;

    /// libpcap's optimised program for `expr` (as the agent compiles filters).
    fn compile(linktype: i32, expr: &str) -> Result<Vec<Insn>, CompileError> {
        rpcap::bpf::libpcap::compile(expr, linktype, true).map(rpcap::bpf::Program::into_insns)
    }

    fn rules(expr: &str) -> XdpRules {
        XdpRules::derive(&compile(DLT_EN10MB, expr).unwrap(), &LIMITS)
    }

    fn nets(v: &[&str]) -> BTreeSet<IpNet> {
        v.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// The IPv6 address prefixes libpcap's address tests come down to.
    #[test]
    fn ipv6_address_tests_give_prefixes() {
        let cases: &[(&str, &[&str])] = &[
            ("ip6 net 2001:db8::/32", &["2001:db8::/32"]),
            ("ip6 host 2001:db8::1", &["2001:db8::1/128"]),
            ("host ::1", &["::1/128"]),
            ("src net 2001:db8::/48", &["2001:db8::/48"]),
            ("dst net 2001:db8:1:2:3::/80", &["2001:db8:1:2:3::/80"]),
            ("ip6 net 2001:db8::/33", &["2001:db8::/33"]),
            ("ip6 net 2001:db8:8000::/33", &["2001:db8:8000::/33"]),
            // `jset` false branch: the masked bits are zero.
            ("ip6 net ::/16", &["::/16"]),
            ("net 2001:db8::/32 and udp port 53", &["2001:db8::/32"]),
            (
                "src host ::1 or dst net fe80::/10",
                &["::1/128", "fe80::/10"],
            ),
            (
                "src net 2001:db8:a::/48 and dst net 2001:db8:b:c::/64",
                &["2001:db8:b:c::/64"],
            ),
            (
                "ip6 net 2001:db8::/32 or ip6 net fd00::/8",
                &["2001:db8::/32", "fd00::/8"],
            ),
        ];
        for &(expr, want) in cases {
            let r = rules(expr);
            assert!(!r.all && !r.other, "{expr}: {r:?}");
            let v6 =
                r.v6.as_ref()
                    .unwrap_or_else(|| panic!("{expr}: no v6 class"));
            assert_eq!(v6.prefixes, Some(nets(want)), "{expr}");
            if !expr.contains(':') || expr.starts_with("ip6") {
                assert!(r.v4.is_none(), "{expr}: {r:?}");
            }
        }
        let r = rules("net 2001:db8::/32 and udp port 53");
        let v6 = r.v6.unwrap();
        assert_eq!(v6.protos, Some([17].into()));
        assert_eq!(v6.ports, Some(vec![(53, 53)]));
        // IPv4 prefixes come from the same words (26/30), `jset` included.
        assert_eq!(
            rules("net 0.0.0.0/8").v4.unwrap().prefixes,
            Some(nets(&["0.0.0.0/8"]))
        );
        assert_eq!(
            rules("src net 10.0.0.0/8 and dst host 10.1.2.3")
                .v4
                .unwrap()
                .prefixes,
            Some(nets(&["10.1.2.3/32"]))
        );
    }

    /// Where no prefix is implied, the class holds "any address" - never a
    /// made-up prefix.
    #[test]
    fn ipv6_expressions_without_a_prefix_give_no_prefix_rule() {
        for expr in [
            "ip6",
            "ip6 and udp port 53",
            "not ip6 net 2001:db8::/32",
            "ip6 net ::/0",
            "ip6 net 2001:db8::/32 or ip6 and tcp",
            "ip6[8:4] & 0x00ff0000 = 0x00010000",
            "ip6[8:4] > 0x20010000",
        ] {
            let r = rules(expr);
            assert!(
                r.all || r.v6.as_ref().is_some_and(|c| c.prefixes.is_none()),
                "{expr}: {r:?}"
            );
        }
        // VLAN-tagged IPv6 is judged by the `other` class (the tag is at 12).
        let r = rules("vlan and ip6 net 2001:db8::/32");
        assert!(r.all || (r.other && r.v6.is_none()), "{r:?}");
    }

    #[test]
    fn simple_filters_give_tight_rules() {
        let r = rules("udp port 53");
        assert!(!r.all && !r.other);
        let v4 = r.v4.unwrap();
        assert_eq!(v4.protos, Some([17].into()));
        assert_eq!(v4.ports, Some(vec![(53, 53)]));
        assert_eq!(v4.prefixes, None);
        assert!(r.v6.unwrap().ports.is_some());

        let r = rules("ip and tcp and net 10.1.0.0/16 and portrange 1000-2000");
        let v4 = r.v4.unwrap();
        assert_eq!(v4.protos, Some([6].into()));
        assert_eq!(v4.prefixes, Some(nets(&["10.1.0.0/16"])));
        assert_eq!(v4.ports, Some(vec![(1000, 2000)]));
        assert!(r.v6.is_none() && !r.other);

        assert!(rules("arp").other);
        assert!(rules("arp").v4.is_none());
        assert!(XdpRules::derive(&[], &LIMITS).all);
        // A negation constrains nothing the XDP program can check.
        let r = rules("not port 22");
        assert!(r.all || r.v4.as_ref().is_some_and(|c| c.ports.is_none()));
    }

    /// Frames of many shapes; for each filter, everything the cBPF program
    /// accepts must be matched by the rules (the soundness property).
    #[test]
    fn rules_never_reject_what_the_filter_accepts() {
        let exprs = [
            "udp port 53",
            "tcp dst port 80 or udp src port 5000",
            "host 10.0.0.1",
            "net 10.1.0.0/16 and not port 22",
            "ip6 and tcp",
            "portrange 1000-2000",
            "icmp or arp",
            "udp and (dst port 9 or dst port 7) and src net 192.168.0.0/24",
            "tcp[13] & 2 != 0",
            "ip[6:2] & 0x1fff != 0",
            "vlan and udp",
            "len > 100",
            "ether proto 0x88cc",
            "ip6 and udp port 4789",
            "ip6 net 2001:db8::/32",
            "ip6 host 2001:db8::1 or host ::1",
            "src net 2001:db8:0:1::/64 and udp",
            "dst net 2001:db8::/33 or dst net fe80::/10",
            "ip6 net ::/16 and not udp port 53",
            "net 2001:db8::/32 or net 10.0.0.0/8",
            "vlan and ip6 net 2001:db8::/32",
            "ip6 and (src net 2001:db8::/48 or tcp port 80)",
        ];
        let frames = sample_frames();
        for e in exprs {
            let insns = compile(DLT_EN10MB, e).unwrap();
            let r = XdpRules::derive(&insns, &LIMITS);
            let prog = Program::new(insns).unwrap();
            let mut rejected = 0;
            for f in &frames {
                let accepted = prog.run(f, f.len() as u32) != 0;
                let m = r.matches(f);
                assert!(
                    !accepted || m,
                    "{e}: rules {r:?} reject an accepted frame {f:02x?}"
                );
                rejected += usize::from(!m);
            }
            if e == "udp port 53" || e == "ip6 net 2001:db8::/32" {
                assert!(rejected > frames.len() / 2, "{e}: rules reject too little");
            }
        }
    }

    fn sample_frames() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let ports = [22u16, 53, 80, 999, 1000, 1500, 2000, 2001, 4789, 5000, 7, 9];
        let addrs = [
            [10, 0, 0, 1],
            [10, 1, 2, 3],
            [192, 168, 0, 7],
            [172, 16, 0, 1],
        ];
        for proto in [1u8, 6, 17, 47] {
            for (i, &sp) in ports.iter().enumerate() {
                let dp = ports[(i * 7 + 3) % ports.len()];
                for (j, s) in addrs.iter().enumerate() {
                    let d = addrs[(j + 1) % addrs.len()];
                    for frag in [0u16, 0x2000, 0x00b9] {
                        let mut f = vec![0u8; 14 + 20 + 8 + 40];
                        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                        f[14] = 0x45;
                        f[20..22].copy_from_slice(&frag.to_be_bytes());
                        f[23] = proto;
                        f[26..30].copy_from_slice(s);
                        f[30..34].copy_from_slice(&d);
                        f[34..36].copy_from_slice(&sp.to_be_bytes());
                        f[36..38].copy_from_slice(&dp.to_be_bytes());
                        f[47] = 0x02;
                        out.push(f);
                    }
                }
                for (j, s) in V6_ADDRS.iter().enumerate() {
                    let d: Ipv6Addr = V6_ADDRS[(j + i) % V6_ADDRS.len()].parse().unwrap();
                    let s: Ipv6Addr = s.parse().unwrap();
                    out.push(v6_frame(proto, s, d, sp, dp));
                }
            }
        }
        // Hop-by-hop options before UDP; a VLAN-tagged IPv6 frame.
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut f = v6_frame(0, a, a, 0, 0);
        f[54] = 17;
        f[62..64].copy_from_slice(&53u16.to_be_bytes());
        out.push(f);
        let mut f = v6_frame(17, a, a, 53, 53);
        f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        out.push(f);
        for et in [0x0806u16, 0x88cc, 0x8100] {
            let mut f = vec![0u8; 64];
            f[12..14].copy_from_slice(&et.to_be_bytes());
            f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
            f[18] = 0x45;
            f[27] = 17;
            out.push(f);
        }
        out
    }

    const V6_ADDRS: [&str; 8] = [
        "2001:db8::1",
        "2001:db8:0:1::7",
        "2001:db8:8000::1",
        "2001:db9::1",
        "::1",
        "::2",
        "fe80::1",
        "fd00::5",
    ];

    /// An untagged IPv6 frame with 8 bytes of upper-layer header and room behind.
    fn v6_frame(next: u8, src: Ipv6Addr, dst: Ipv6Addr, sp: u16, dp: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8 + 100];
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        f[14] = 0x60;
        f[20] = next;
        f[22..38].copy_from_slice(&src.octets());
        f[38..54].copy_from_slice(&dst.octets());
        f[54..56].copy_from_slice(&sp.to_be_bytes());
        f[56..58].copy_from_slice(&dp.to_be_bytes());
        f
    }

    proptest::proptest! {
        /// Random IPv6 prefixes and addresses near them: the rules never
        /// reject a frame the filter accepts, and they do reject frames
        /// with both addresses outside the prefix.
        #[test]
        fn ipv6_prefix_rules_are_sound_and_tight(
            net in proptest::prelude::any::<u128>(),
            len in 1u8..=128,
            kind in 0usize..4,
            flips in proptest::collection::vec((proptest::prelude::any::<u128>(), 0u32..129), 8),
        ) {
            let prefix = Ipv6Net::new(Ipv6Addr::from(net), len).unwrap().trunc();
            let expr = match kind {
                0 => format!("ip6 net {prefix}"),
                1 => format!("src net {prefix}"),
                2 => format!("dst net {prefix}"),
                _ => format!("ip6 net {prefix} and udp"),
            };
            let insns = compile(DLT_EN10MB, &expr).unwrap();
            let r = XdpRules::derive(&insns, &LIMITS);
            let prog = Program::new(insns).unwrap();
            proptest::prop_assert_eq!(
                r.v6.as_ref().and_then(|c| c.prefixes.clone()),
                Some([IpNet::V6(prefix)].into()),
                "{}", expr
            );
            // Addresses inside the prefix with bits after bit `b` flipped
            // (b >= len: still inside; b < len: outside).
            let base = u128::from(prefix.network());
            let addr = |(x, b): (u128, u32)| {
                let keep = if b == 0 { 0 } else { !0u128 << (128 - b) };
                Ipv6Addr::from((base & keep) | (x & !keep))
            };
            for pair in flips.chunks(2) {
                let (s, d) = (addr(pair[0]), addr(pair[1]));
                let f = v6_frame(17, s, d, 1, 2);
                let accepted = prog.run(&f, f.len() as u32) != 0;
                proptest::prop_assert!(!accepted || r.matches(&f), "{}: {} -> {}", expr, s, d);
                if !prefix.contains(&s) && !prefix.contains(&d) {
                    proptest::prop_assert!(!r.matches(&f), "{}: {} -> {}", expr, s, d);
                }
            }
        }
    }

    #[test]
    fn ranges_merge_and_collapse() {
        let max = LIMITS.port_ranges;
        assert_eq!(
            merge_ranges(vec![(5, 9), (1, 3), (4, 4)], max),
            vec![(1, 9)]
        );
        let many: Vec<_> = (0..40u16).map(|i| (i * 10, i * 10)).collect();
        assert_eq!(merge_ranges(many, max), vec![(0, 390)]);
    }
}
