//! Loads, configures, attaches and detaches the XDP program of `ebpf/`.
//!
//! The object is compiled by build.rs and embedded in the binary. Attaching
//! uses a bpf_link where the kernel has them (it disappears with the process,
//! so a crash leaves nothing behind) and netlink otherwise. Before attaching
//! we look at what the interface already runs (netlink RTM_GETLINK): a
//! program of ours (by name) is a leftover of a crashed older run and is
//! replaced; anyone else's is left alone unless the operator set
//! `XdpReplace = yes`.

use std::io;
use std::mem;
use std::net::IpAddr;

use ipnet::IpNet;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode as AyaMode};
use aya::Ebpf;

use xdpc::{ClassRules, Translation, Verdict, XdpRules};

use super::abi::{
    self, flag, Counter, Flow, PortRange, Rules, FLOW_LEN, MAX_PORT_RANGES, PROG_NAME, RULES_LEN,
};
use crate::filter::{canonical, DataDest, OwnTraffic};
use crate::settings::XdpMode;

/// The XDP object built from ebpf/xrpcapd_xdp.c.
pub static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xrpcapd_xdp.o"));
/// BPF_PROG_LOAD attempts on EAGAIN (an interrupted verifier).
const LOAD_TRIES: u32 = 5;

/// Why the program could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the XDP program: {0}")]
    Load(String),
    #[error(
        "interface {ifname} already runs XDP program `{name}` (id {id}); not replacing \
         another program (set XdpReplace = yes to allow it)"
    )]
    Foreign {
        ifname: String,
        name: String,
        id: u32,
    },
    #[error("cannot remove XDP program `{name}` (id {id}) from {ifname}: {source} (it is probably attached through a bpf_link owned by a running process)")]
    Busy {
        ifname: String,
        name: String,
        id: u32,
        source: io::Error,
    },
    #[error("attaching XDP to {ifname} in {mode} mode: {reason}")]
    Attach {
        ifname: String,
        mode: XdpMode,
        reason: String,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The program's per-CPU counters, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    pub seen: u64,
    pub redirected: u64,
    pub passed: u64,
    pub dropped: u64,
    pub redirect_errors: u64,
    pub own: u64,
    /// Rejected by the translated filter in XDP (also in passed or dropped).
    pub filtered: u64,
    /// Redirected (or about to be judged by the XDP filter) without a
    /// timestamp: the driver has no XDP metadata room. The worker stamps
    /// such frames when it reads them.
    pub unstamped: u64,
}

const TCP: u8 = 6;
const UDP: u8 = 17;

impl Flow {
    /// A flow in the program's encoding: IPv4 in the first 4 bytes,
    /// ports in network order, `None` a wildcard.
    fn new(proto: u8, src: Option<(IpAddr, u16)>, dst: Option<(IpAddr, u16)>) -> Flow {
        let mut f = Flow {
            proto,
            ..Flow::default()
        };
        let mut put = |ep: Option<(IpAddr, u16)>, addr: &mut [u8; 16], port: &mut u16| {
            if let Some((ip, p)) = ep {
                match canonical(ip) {
                    IpAddr::V4(v4) => {
                        f.family = 4;
                        addr[..4].copy_from_slice(&v4.octets());
                    }
                    IpAddr::V6(v6) => {
                        f.family = 6;
                        addr.copy_from_slice(&v6.octets());
                    }
                }
                *port = p.to_be();
            }
        };
        let (mut sa, mut sp, mut da, mut dp) = ([0; 16], 0, [0; 16], 0);
        put(src, &mut sa, &mut sp);
        put(dst, &mut da, &mut dp);
        f.saddr = sa;
        f.sport = sp;
        f.daddr = da;
        f.dport = dp;
        f
    }

    /// The flows the XDP program leaves to the stack for `own` (each one a
    /// subset of what the cBPF own-traffic exclusion rejects).
    pub fn own_traffic(own: &OwnTraffic) -> Vec<Flow> {
        let (l, p) = (own.control_local, own.control_peer);
        let mut v = vec![
            Flow::new(TCP, Some((l.ip(), l.port())), Some((p.ip(), p.port()))),
            Flow::new(TCP, Some((p.ip(), p.port())), Some((l.ip(), l.port()))),
        ];
        match own.data {
            DataDest::Udp(d) => {
                v.push(Flow::new(UDP, None, Some((d.ip(), d.port()))));
                if canonical(d.ip()).is_ipv4() {
                    // Later fragments: no ports.
                    v.push(Flow::new(UDP, None, Some((d.ip(), 0))));
                }
            }
            DataDest::Tcp(d) => {
                v.push(Flow::new(TCP, None, Some((d.ip(), d.port()))));
                v.push(Flow::new(TCP, Some((d.ip(), d.port())), None));
            }
        }
        v
    }
}

/// The loaded program, attached to one interface until dropped.
pub struct XdpProgram {
    ebpf: Ebpf,
    ifname: String,
    /// The mode it runs in (never Auto once attached).
    mode: XdpMode,
    attached: bool,
    /// The translated filter in the `filter_prog` tail-call slot.
    filter: Option<FilterProg>,
    /// Loaded with BPF_F_XDP_HAS_FRAGS (multi-buffer aware). A program
    /// tail-called from it must be loaded with the same flag (the kernel
    /// refuses a prog-array mix).
    frags: bool,
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram")
            .field("ifname", &self.ifname)
            .field("mode", &self.mode)
            .finish()
    }
}

fn load_err(e: impl std::fmt::Display) -> XdpError {
    XdpError::Load(e.to_string())
}

impl XdpProgram {
    /// Loads the program (not attached yet): set rules and sockets first.
    /// The program is multi-buffer aware (section "xdp.frags", loaded with
    /// BPF_F_XDP_HAS_FRAGS); a kernel without frags support (< 5.18)
    /// refuses that flag, and then gets the same program without it.
    pub fn load(ifname: &str) -> Result<XdpProgram, XdpError> {
        let (ebpf, frags) = match Self::load_object(OBJECT) {
            Ok(e) => (e, true),
            Err(e) => {
                let plain = without_frags(OBJECT);
                let ebpf = Self::load_object(&plain).map_err(|_| e)?;
                log::warn!(
                    "{ifname}: the kernel refused a multi-buffer XDP program; loaded it \
                     without frags: frames longer than a page are not captured"
                );
                (ebpf, false)
            }
        };
        Ok(XdpProgram {
            frags,
            ebpf,
            ifname: ifname.to_owned(),
            mode: XdpMode::Auto,
            attached: false,
            filter: None,
        })
    }

    fn load_object(object: &[u8]) -> Result<Ebpf, XdpError> {
        let mut ebpf = Ebpf::load(object).map_err(load_err)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_NAME)
            .ok_or_else(|| load_err("program missing from the object"))?
            .try_into()
            .map_err(load_err)?;
        // The verifier gives up with EAGAIN when a signal is pending for the
        // thread; retry as libbpf does.
        let mut tries = 0;
        loop {
            match prog.load() {
                Ok(()) => break,
                Err(aya::programs::ProgramError::LoadError { io_error, .. })
                    if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < LOAD_TRIES =>
                {
                    tries += 1
                }
                Err(e) => return Err(load_err(e)),
            }
        }
        Ok(ebpf)
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map, XdpError> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| load_err(format!("map {name} missing from the object")))
    }

    /// Puts the socket of RX queue `queue` in the XSKMAP.
    pub fn set_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        let mut m: XskMap<&mut MapData> =
            self.map_mut(abi::XSKS.name)?.try_into().map_err(load_err)?;
        m.set(queue, fd, 0).map_err(load_err)
    }

    /// Installs the own-traffic flows.
    pub fn set_own(&mut self, flows: &[Flow]) -> Result<(), XdpError> {
        let mut m: HashMap<&mut MapData, [u8; FLOW_LEN], u8> = self
            .map_mut(abi::OWN_FLOWS.name)?
            .try_into()
            .map_err(load_err)?;
        for f in flows {
            m.insert(f.to_bytes(), 1, 0).map_err(load_err)?;
        }
        Ok(())
    }

    /// Replaces the pre-filter. Frames in flight meanwhile see either the
    /// old rules, "redirect all", or the new ones: never a stricter mix.
    pub fn set_rules(
        &mut self,
        rules: &XdpRules,
        drop_rejected: bool,
        own: bool,
    ) -> Result<(), XdpError> {
        let own_flag = if own { flag::OWN } else { 0 };
        let open = Rules {
            flags: flag::ALL | own_flag,
            ..Rules::default()
        };
        self.write_rules(&open)?;
        let nets = |c: &Option<ClassRules>| -> Vec<IpNet> {
            c.as_ref()
                .and_then(|c| c.prefixes.as_ref())
                .map(|p| p.iter().copied().collect())
                .unwrap_or_default()
        };
        self.fill_trie(
            abi::V4_PREFIXES.name,
            nets(&rules.v4).iter().filter_map(|n| match n {
                IpNet::V4(n) => Some(Key::new(u32::from(n.prefix_len()), n.network().octets())),
                IpNet::V6(_) => None,
            }),
        )?;
        self.fill_trie(
            abi::V6_PREFIXES.name,
            nets(&rules.v6).iter().filter_map(|n| match n {
                IpNet::V6(n) => Some(Key::new(u32::from(n.prefix_len()), n.network().octets())),
                IpNet::V4(_) => None,
            }),
        )?;
        let mut raw = encode(rules);
        raw.flags |= own_flag;
        if drop_rejected {
            raw.flags |= flag::DROP_REJECTED;
        }
        self.write_rules(&raw)
    }

    /// Replaces the contents of LPM trie `name` with `keys` (address bytes
    /// in network order, as the program looks them up).
    fn fill_trie<const N: usize>(
        &mut self,
        name: &str,
        keys: impl Iterator<Item = Key<[u8; N]>>,
    ) -> Result<(), XdpError> {
        let mut trie: LpmTrie<&mut MapData, [u8; N], u8> =
            self.map_mut(name)?.try_into().map_err(load_err)?;
        let old: Vec<_> = trie.keys().filter_map(Result::ok).collect();
        for k in old {
            let _ = trie.remove(&k);
        }
        for k in keys {
            trie.insert(&k, 1, 0).map_err(load_err)?;
        }
        Ok(())
    }

    fn write_rules(&mut self, raw: &Rules) -> Result<(), XdpError> {
        let mut m: Array<&mut MapData, [u8; RULES_LEN]> = self
            .map_mut(abi::RULES.name)?
            .try_into()
            .map_err(load_err)?;
        m.set(abi::RULES_KEY, raw.to_bytes(), 0).map_err(load_err)
    }

    /// Attaches to the interface in `mode`, after dealing with whatever
    /// program is there already (see the module comment).
    pub fn attach(&mut self, mode: XdpMode, replace_foreign: bool) -> Result<XdpMode, XdpError> {
        let ifindex = ifindex(&self.ifname)?;
        if let Some(cur) = netlink::attached(ifindex)? {
            let name = program_name(cur.id).unwrap_or_else(|| "?".into());
            let ours = name == PROG_NAME;
            if !ours && !replace_foreign {
                return Err(XdpError::Foreign {
                    ifname: self.ifname.clone(),
                    name,
                    id: cur.id,
                });
            }
            if ours {
                log::warn!(
                    "{}: replacing a leftover xrpcapd XDP program (id {}) from an earlier run",
                    self.ifname,
                    cur.id
                );
            } else {
                log::warn!(
                    "{}: replacing XDP program `{name}` (id {}) as XdpReplace = yes allows",
                    self.ifname,
                    cur.id
                );
            }
            netlink::detach(ifindex, cur.flags).map_err(|source| XdpError::Busy {
                ifname: self.ifname.clone(),
                name,
                id: cur.id,
                source,
            })?;
        }
        let tries: &[XdpMode] = match mode {
            XdpMode::Auto => &[XdpMode::Native, XdpMode::Generic],
            m => std::slice::from_ref(match m {
                XdpMode::Native => &XdpMode::Native,
                _ => &XdpMode::Generic,
            }),
        };
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROG_NAME)
            .ok_or_else(|| load_err("program missing"))?
            .try_into()
            .map_err(load_err)?;
        let mut last = String::new();
        for &m in tries {
            let aya_mode = match m {
                XdpMode::Generic => AyaMode::Skb,
                _ => AyaMode::Driver,
            };
            match prog.attach_to_if_index(ifindex, aya_mode) {
                Ok(_) => {
                    self.mode = m;
                    self.attached = true;
                    return Ok(m);
                }
                Err(e) => {
                    last = error_chain(&e);
                    log::info!("{}: XDP {m} mode not available: {last}", self.ifname);
                }
            }
        }
        Err(XdpError::Attach {
            ifname: self.ifname.clone(),
            mode,
            reason: last,
        })
    }

    /// The counters of every CPU, summed.
    pub fn counters(&self) -> XdpCounters {
        let Some(map) = self.ebpf.map(abi::COUNTERS.name) else {
            return XdpCounters::default();
        };
        let Ok(arr) = PerCpuArray::<&MapData, u64>::try_from(map) else {
            return XdpCounters::default();
        };
        let sum = |c: Counter| arr.get(&c.slot(), 0).map(|v| v.iter().sum()).unwrap_or(0);
        XdpCounters {
            seen: sum(Counter::Seen),
            redirected: sum(Counter::Redirected),
            passed: sum(Counter::Passed),
            dropped: sum(Counter::Dropped),
            redirect_errors: sum(Counter::RedirectErr),
            own: sum(Counter::Own),
            filtered: sum(Counter::Filtered),
            unstamped: sum(Counter::Unstamped),
        }
    }

    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Whether the program was loaded multi-buffer aware (see `load`).
    pub fn has_frags(&self) -> bool {
        self.frags
    }
}

/// Where the capture's filter runs after [`XdpProgram::set_filter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterPlace {
    /// Exactly in XDP: user space keeps `keep` bytes of what arrives
    /// (before the snaplen) and runs no cBPF.
    Kernel { keep: u32 },
    /// The tail-call slot is empty: pre-filter in XDP, cBPF in user space.
    UserSpace { reason: String },
}

/// The kernel name of translated filters.
pub const FILTER_PROG_NAME: &str = "xrpcapd_filter";

/// A translated filter loaded into the kernel.
#[derive(Debug)]
pub struct FilterProg {
    fd: OwnedFd,
}

impl FilterProg {
    /// Loads `t` as an XDP program (`frags`: with BPF_F_XDP_HAS_FRAGS).
    pub fn load(t: &Translation, frags: bool) -> Result<FilterProg, XdpError> {
        const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;
        let flags = if frags { BPF_F_XDP_HAS_FRAGS } else { 0 };
        sys::bpf::prog_load_xdp(&t.bytes(), FILTER_PROG_NAME, flags)
            .map(|fd| FilterProg { fd })
            .map_err(|e| {
                // One line: it ends up in the "filter runs in user space" log.
                load_err(format!(
                    "the kernel refused the translated filter ({} instructions): {}: {}",
                    t.len(),
                    e.error,
                    e.log.replace('\n', " / ")
                ))
            })
    }

    /// Runs the program once on `frame` (BPF_PROG_TEST_RUN): its XDP action.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        sys::bpf::prog_test_run_xdp(&self.fd, frame)
    }
}

impl XdpProgram {
    fn map_fd(&self, name: &str) -> Result<RawFd, XdpError> {
        use aya::maps::Map;
        use std::os::fd::AsFd;
        match self.ebpf.map(name) {
            Some(Map::XskMap(d) | Map::PerCpuArray(d) | Map::ProgramArray(d)) => {
                Ok(d.fd().as_fd().as_raw_fd())
            }
            Some(_) => Err(load_err(format!("map {name} has an unexpected type"))),
            None => Err(load_err(format!("map {name} missing from the object"))),
        }
    }

    /// Runs `prog` (the capture's validated cBPF program) exactly in XDP if
    /// it translates and loads: the program goes into the `filter_prog`
    /// tail-call slot in one atomic map update. Otherwise the slot is
    /// emptied and the reason returned (the pre-filter redirects, user space
    /// filters).
    pub fn set_filter(&mut self, prog: &rpcap::bpf::Program, drop_rejected: bool) -> FilterPlace {
        match self.install_filter(prog, drop_rejected) {
            Ok(keep) => FilterPlace::Kernel { keep },
            Err(reason) => {
                let cleared = self
                    .map_fd(abi::FILTER_PROG.name)
                    .and_then(|m| Ok(sys::bpf::prog_array_clear(&m, abi::FILTER_SLOT)?));
                let reason = match cleared {
                    Ok(()) => reason,
                    Err(e) => format!("{reason} (and the old XDP filter stays: {e})"),
                };
                self.filter = None;
                FilterPlace::UserSpace { reason }
            }
        }
    }

    /// Runs the loaded program once on `frame` (BPF_PROG_TEST_RUN, RX
    /// queue 0, attached or not): its XDP action. The counters count it.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        self.test_run_output(frame, &mut []).map(|(act, _)| act)
    }

    /// As [`test_run`](Self::test_run), and copies what the program left
    /// into `out`: the frame with the XDP metadata in front of it (the
    /// kernel returns the buffer from `data_meta` on). Returns the action
    /// and the output's length (which may exceed `out`).
    pub fn test_run_output(&self, frame: &[u8], out: &mut [u8]) -> io::Result<(u32, usize)> {
        use std::os::fd::AsFd;
        let prog: &Xdp = self
            .ebpf
            .program(PROG_NAME)
            .ok_or_else(|| io::Error::other("program missing"))?
            .try_into()
            .map_err(io::Error::other)?;
        let fd = prog.fd().map_err(io::Error::other)?;
        sys::bpf::prog_test_run_xdp_out(&fd.as_fd(), frame, out)
    }

    fn install_filter(
        &mut self,
        prog: &rpcap::bpf::Program,
        drop_rejected: bool,
    ) -> Result<u32, String> {
        let verdict = Verdict::Capture {
            xsks_fd: self.map_fd(abi::XSKS.name).map_err(|e| e.to_string())?,
            counters_fd: self.map_fd(abi::COUNTERS.name).map_err(|e| e.to_string())?,
            counters: abi::FILTER_COUNTERS,
            drop_rejected,
        };
        let frags = self.frags;
        let t = xdpc::translate(prog, verdict, frags).map_err(|e| e.to_string())?;
        let loaded = FilterProg::load(&t, frags).map_err(|e| e.to_string())?;
        let slot = self
            .map_fd(abi::FILTER_PROG.name)
            .map_err(|e| e.to_string())?;
        sys::bpf::prog_array_set(&slot, abi::FILTER_SLOT, loaded.fd.as_raw_fd())
            .map_err(|e| format!("installing the XDP filter: {e}"))?;
        // The old program (if any) is unloaded once no CPU runs it.
        self.filter = Some(loaded);
        Ok(t.keep())
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        // Dropping `ebpf` detaches every link (bpf_link closed, or netlink
        // detach for the legacy path) and unloads the program.
        if self.attached {
            log::info!("{}: detaching the XDP program", self.ifname);
        }
    }
}

/// The object with its program section renamed from "xdp.frags" to "xdp"
/// (aya then loads it without BPF_F_XDP_HAS_FRAGS). Every occurrence of
/// the NUL-terminated name (section, relocation section and BTF string
/// tables) becomes "xdp\0frags\0": same length, so no offset moves.
pub fn without_frags(object: &[u8]) -> Vec<u8> {
    let frags = [abi::FRAGS_SECTION.as_bytes(), b"\0"].concat();
    let dot = abi::FRAGS_SECTION.find('.').unwrap_or(0);
    let mut out = object.to_vec();
    let mut i = 0;
    while i + frags.len() <= out.len() {
        if out[i..i + frags.len()] == frags[..] {
            out[i + dot] = 0;
            i += frags.len();
        } else {
            i += 1;
        }
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
}

fn encode(r: &XdpRules) -> Rules {
    let mut raw = Rules::default();
    if r.all {
        raw.flags = flag::ALL;
        return raw;
    }
    if r.other {
        raw.flags |= flag::OTHER;
    }
    let bitmap = |set: &Option<std::collections::BTreeSet<u8>>, any: u32, flags: &mut u32| {
        let mut b = [0u64; 4];
        match set {
            None => *flags |= any,
            Some(s) => s
                .iter()
                .for_each(|&p| b[usize::from(p >> 6)] |= 1 << (p & 63)),
        }
        b
    };
    let ports = |v: &Option<Vec<(u16, u16)>>, any: u32, flags: &mut u32| {
        let mut out = [PortRange::default(); MAX_PORT_RANGES];
        let mut n = 0;
        match v {
            Some(v) if v.len() <= MAX_PORT_RANGES => {
                for (o, &(lo, hi)) in out.iter_mut().zip(v) {
                    *o = PortRange { lo, hi };
                }
                n = v.len() as u32;
            }
            _ => *flags |= any,
        }
        (out, n)
    };
    let mut flags = raw.flags;
    if let Some(c) = &r.v4 {
        flags |= flag::V4;
        raw.v4_protos = bitmap(&c.protos, flag::V4_ANY_PROTO, &mut flags);
        if c.prefixes.is_none() {
            flags |= flag::V4_ANY_ADDR;
        }
        (raw.v4_ports, raw.v4_nports) = ports(&c.ports, flag::V4_ANY_PORT, &mut flags);
    }
    if let Some(c) = &r.v6 {
        flags |= flag::V6;
        raw.v6_protos = bitmap(&c.protos, flag::V6_ANY_PROTO, &mut flags);
        if c.prefixes.is_none() {
            flags |= flag::V6_ANY_ADDR;
        }
        (raw.v6_ports, raw.v6_nports) = ports(&c.ports, flag::V6_ANY_PORT, &mut flags);
    }
    raw.flags = flags;
    raw
}

pub(crate) use sys::ifreq::ifindex;

/// What RTM_GETLINK / RTM_SETLINK say and do about an interface's XDP program.
pub mod netlink {
    use super::*;

    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_FD: u16 = 1;
    const IFLA_XDP_ATTACHED: u16 = 2;
    const IFLA_XDP_FLAGS: u16 = 3;
    const IFLA_XDP_PROG_ID: u16 = 4;
    const XDP_ATTACHED_DRV: u8 = 1;
    const XDP_ATTACHED_SKB: u8 = 2;
    const XDP_ATTACHED_HW: u8 = 3;
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
    const NLA_F_NESTED: u16 = 1 << 15;

    /// The program an interface runs now.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Attached {
        pub id: u32,
        /// The XDP_FLAGS_*_MODE to detach it with.
        pub flags: u32,
    }

    fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(payload);
        buf.resize(buf.len().next_multiple_of(4), 0);
    }

    /// Sends one request (header filled in here) and returns the reply.
    fn request(ty: u16, flags: u16, body: &[u8]) -> io::Result<Vec<u8>> {
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it
        msg.extend_from_slice(body);
        let buf = sys::netlink::route_request(&msg)?;
        if buf.len() >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == libc::NLMSG_ERROR as u16 {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return Err(io::Error::from_raw_os_error(-err));
            }
        }
        Ok(buf)
    }

    fn ifinfomsg(ifindex: u32) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[0] = libc::AF_UNSPEC as u8;
        b[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        b
    }

    /// Walks the attributes in `buf`, calling `f(type, payload)`.
    fn attrs(mut buf: &[u8], mut f: impl FnMut(u16, &[u8])) {
        while buf.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
            let ty = u16::from_ne_bytes([buf[2], buf[3]]) & !NLA_F_NESTED;
            if len < 4 || len > buf.len() {
                return;
            }
            f(ty, &buf[4..len]);
            buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        }
    }

    /// The XDP program attached to `ifindex`, if any.
    pub fn attached(ifindex: u32) -> io::Result<Option<Attached>> {
        let reply = request(libc::RTM_GETLINK, 0, &ifinfomsg(ifindex))?;
        if reply.len() < 32 {
            return Err(io::Error::other("short RTM_GETLINK reply"));
        }
        let mut mode = 0u8;
        let mut id = 0u32;
        attrs(&reply[32..], |ty, p| {
            if ty == IFLA_XDP {
                attrs(p, |ty, p| match ty {
                    IFLA_XDP_ATTACHED if !p.is_empty() => mode = p[0],
                    IFLA_XDP_PROG_ID if p.len() >= 4 => {
                        id = u32::from_ne_bytes([p[0], p[1], p[2], p[3]])
                    }
                    _ => {}
                });
            }
        });
        let flags = match mode {
            0 => return Ok(None),
            XDP_ATTACHED_DRV => XDP_FLAGS_DRV_MODE,
            XDP_ATTACHED_SKB => XDP_FLAGS_SKB_MODE,
            XDP_ATTACHED_HW => XDP_FLAGS_HW_MODE,
            _ => 0, // several at once: let the kernel pick
        };
        Ok(Some(Attached { id, flags }))
    }

    /// Removes the program attached in `flags` mode (fails with EBUSY when
    /// it is held by a bpf_link).
    pub fn detach(ifindex: u32, flags: u32) -> io::Result<()> {
        let mut nested = Vec::new();
        attr(&mut nested, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
        attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
        let mut body = ifinfomsg(ifindex);
        attr(&mut body, IFLA_XDP | NLA_F_NESTED, &nested);
        request(libc::RTM_SETLINK, libc::NLM_F_ACK as u16, &body).map(|_| ())
    }

    // Keep the struct size assumption visible.
    const _: () = assert!(mem::size_of::<libc::nlmsghdr>() == 16);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_embedded_and_named() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert!(OBJECT
            .windows(PROG_NAME.len())
            .any(|w| w == PROG_NAME.as_bytes()));
    }

    #[test]
    fn the_program_is_multi_buffer_aware_and_has_a_plain_variant() {
        let count = |o: &[u8], s: &[u8]| o.windows(s.len()).filter(|w| *w == s).count();
        assert!(count(OBJECT, b"xdp.frags\0") > 0, "section xdp.frags");
        let plain = without_frags(OBJECT);
        assert_eq!(plain.len(), OBJECT.len());
        assert_eq!(count(&plain, b"xdp.frags\0"), 0);
        // Both parse, with the program under its name (loading needs root:
        // the capture tests load the frags one).
        for o in [OBJECT, &plain[..]] {
            let obj = aya_obj::Object::parse(o).expect("parses");
            let p = obj.programs.get(PROG_NAME).expect("program");
            let frags = matches!(p.section, aya_obj::ProgramSection::Xdp { frags: true, .. });
            assert_eq!(frags, std::ptr::eq(o, OBJECT));
        }
    }

    #[test]
    fn rules_encode_as_the_c_program_reads_them() {
        assert_eq!(mem::size_of::<Rules>(), 208);
        assert_eq!(mem::size_of::<Flow>(), 40);
        let r = XdpRules::derive(
            crate::filter::compile(crate::iface::DLT_EN10MB, "udp port 53")
                .unwrap()
                .insns(),
            &abi::RULE_LIMITS,
        );
        let raw = encode(&r);
        assert_eq!(raw.flags & flag::ALL, 0);
        assert_ne!(raw.flags & flag::V4, 0);
        assert_eq!(raw.flags & flag::V4_ANY_PROTO, 0);
        assert_eq!(raw.v4_protos[0], 1 << 17);
        assert_eq!(
            (raw.v4_nports, raw.v4_ports[0].lo, raw.v4_ports[0].hi),
            (1, 53, 53)
        );
        assert_ne!(
            raw.flags & flag::V6_ANY_ADDR,
            0,
            "no IPv6 prefix in `udp port 53`"
        );
        let r = XdpRules::derive(
            crate::filter::compile(crate::iface::DLT_EN10MB, "ip6 net 2001:db8::/32")
                .unwrap()
                .insns(),
            &abi::RULE_LIMITS,
        );
        let raw = encode(&r);
        assert_eq!(raw.flags & (flag::V6_ANY_ADDR | flag::V4), 0);
        assert_ne!(raw.flags & flag::V6, 0);
        assert_eq!(encode(&XdpRules::all()).flags, flag::ALL);
    }

    #[test]
    fn own_flows_cover_control_and_data() {
        let own = OwnTraffic {
            control_local: "10.0.0.5:40000".parse().unwrap(),
            control_peer: "10.0.0.9:2003".parse().unwrap(),
            data: DataDest::Udp("10.0.0.9:5000".parse().unwrap()),
        };
        let f = Flow::own_traffic(&own);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].sport, 40000u16.to_be());
        assert_eq!(&f[0].daddr[..4], &[10, 0, 0, 9]);
        assert_eq!(
            (f[2].sport, f[2].dport, f[2].saddr),
            (0, 5000u16.to_be(), [0; 16])
        );
        assert_eq!(f[3].dport, 0);
    }
}
