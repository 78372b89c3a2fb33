//! Network namespaces and veth pairs, deleted by drop guards.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Where `ip netns add` bind-mounts the namespaces it creates.
const NETNS_DIR: &str = "/run/netns";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by the test: created with a unique name
/// (`PREFIX-PID-COUNTER`, so parallel tests and parallel test binaries never
/// clash), loopback up, IPv6 off (no router solicitations or MLD reports to
/// pollute captures). `ip netns del` runs on drop, also when the test panics.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `PREFIX-PID-N`. Keep the prefix short and
    /// telling (`gen`, `cap`, `sen`).
    pub fn new(prefix: &str) -> Result<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        if Self::exists(&name) {
            // A namespace of a dead process that had our pid: nobody owns it.
            run_checked(Command::new("ip").args(["netns", "del", &name]))?;
        }
        run_checked(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        // From here on the guard exists, so a failure below still deletes it.
        let ns = Netns { name };
        ns.run("ip", ["link", "set", "lo", "up"])?;
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a namespace of this name exists (its bind mount is present).
    pub fn exists(name: &str) -> bool {
        Self::path_of(name).exists()
    }

    fn path_of(name: &str) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(name)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`
    /// execs the program in place, so the child's pid is the program's pid).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args…` inside the namespace; fails with its stderr when it
    /// exits non-zero. Returns its stdout.
    pub fn run<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        run_checked(&mut cmd).with_context(|| format!("in netns {}", self.name))
    }

    /// Sets a sysctl inside the namespace (net.* keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run("sysctl", ["-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Runs `f` on a short-lived thread that has entered this namespace with
    /// setns(2). Sockets created in `f` belong to this namespace for their
    /// whole life, so `f` can create them and hand them back to the test's
    /// own thread. The calling thread never changes namespace.
    ///
    /// A thread of its own in the namespace (setns through `sys::ns`): the
    /// alternative, a helper process per socket, would be slower and harder
    /// to control.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = Self::path_of(&self.name);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| -> Result<T> {
                // Moves only this thread (CLONE_NEWNET is per thread), which
                // is ours and ends right after `f`.
                sys::ns::setns_net(&file).with_context(|| format!("setns into {}", self.name))?;
                Ok(f())
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Moves the calling thread into this namespace for the rest of its
    /// life (see [`switch_thread`]).
    pub fn switch_thread(&self) {
        switch_thread(&self.name);
    }

    /// A UDP socket bound to `addr` inside this namespace.
    pub fn udp_socket(&self, addr: SocketAddr) -> Result<UdpSocket> {
        self.enter(|| UdpSocket::bind(addr))?
            .with_context(|| format!("binding UDP {addr} in netns {}", self.name))
    }

    /// A TCP listener bound to `addr` inside this namespace.
    pub fn tcp_listener(&self, addr: SocketAddr) -> Result<TcpListener> {
        self.enter(|| TcpListener::bind(addr))?
            .with_context(|| format!("binding TCP {addr} in netns {}", self.name))
    }

    /// Turns IPv6 on for one interface (`lo` gets ::1 back); the namespace's
    /// other interfaces keep it off.
    pub fn enable_ipv6(&self, ifname: &str) -> Result<()> {
        self.sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "0")
    }

    /// The MAC address of an interface inside this namespace.
    pub fn mac(&self, ifname: &str) -> Result<String> {
        let out = self.run("cat", [format!("/sys/class/net/{ifname}/address")])?;
        Ok(out.trim().to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let result = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match result {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "xrpcap-testkit: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("xrpcap-testkit: ip netns del {}: {e}", self.name),
        }
    }
}

/// One end of a veth pair: its namespace, interface name (≤ 15 bytes) and
/// address with prefix length (`10.200.1.1/24`, or IPv6 `fd00:200:2::1/64`).
#[derive(Debug, Clone, Copy)]
pub struct VethEnd<'a> {
    pub ns: &'a Netns,
    pub ifname: &'a str,
    pub cidr: &'a str,
}

impl VethEnd<'_> {
    fn ip(&self) -> &str {
        self.cidr.split('/').next().unwrap_or(self.cidr)
    }

    fn is_ipv6(&self) -> bool {
        self.cidr.contains(':')
    }
}

/// Creates a veth pair between two namespaces (each end created directly in
/// its namespace, so names never clash in the root namespace), sets MTU and
/// addresses, brings both ends up, and installs permanent neighbour entries
/// on both sides so no ARP crosses the link: a capture of the link holds
/// exactly the traffic a test sent. The pair disappears with its namespaces.
///
/// IPv6 addresses turn IPv6 on for that interface only ([`Netns::new`] turns
/// it off) and skip duplicate address detection (`nodad`), so the address
/// is usable at once; static neighbours stand in for neighbour discovery.
pub fn veth_pair(a: VethEnd<'_>, b: VethEnd<'_>, mtu: u32) -> Result<()> {
    let mtu = mtu.to_string();
    run_checked(Command::new("ip").args([
        "link",
        "add",
        a.ifname,
        "netns",
        a.ns.name(),
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        b.ifname,
        "netns",
        b.ns.name(),
        "mtu",
        &mtu,
    ]))
    .with_context(|| format!("creating veth {} <-> {}", a.ifname, b.ifname))?;
    for end in [a, b] {
        if end.is_ipv6() {
            end.ns.enable_ipv6(end.ifname)?;
            end.ns
                .run("ip", ["addr", "add", end.cidr, "dev", end.ifname, "nodad"])?;
        } else {
            end.ns
                .run("ip", ["addr", "add", end.cidr, "dev", end.ifname])?;
        }
        end.ns.run("ip", ["link", "set", end.ifname, "up"])?;
    }
    for (end, peer) in [(a, b), (b, a)] {
        let peer_mac = peer.ns.mac(peer.ifname)?;
        end.ns.run(
            "ip",
            [
                "neigh",
                "replace",
                peer.ip(),
                "lladdr",
                &peer_mac,
                "dev",
                end.ifname,
                "nud",
                "permanent",
            ],
        )?;
    }
    Ok(())
}

/// The topology of TESTING.md: gen ── captured link ── cap (agent) ── sen.
///
/// ```text
///  ns gen           ns cap (agent)             ns sen (sensor)
///  g0 ──veth── c0 (captured link)   c1 ──veth── s1
///  10.200.1.1   10.200.1.2          10.200.2.1  10.200.2.2
/// ```
/// Fields drop in declaration order: gen, cap, sen.
/// `ip:port` as a socket address (a test's literal: panics on a bad one).
pub fn sock_addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("IP address"), port)
}

#[derive(Debug)]
pub struct Topology {
    pub gen: Netns,
    pub cap: Netns,
    pub sen: Netns,
}

impl Topology {
    /// An agent's rpcapd.ini dialling the sensor at `sensor_ip` (its
    /// port) for the captured interface, NULL authentication, 1 s backoff.
    pub fn active_ini(sensor_ip: &str) -> String {
        format!(
            "ActiveClient = {sensor_ip}, {}, ifname={}\nNullAuthPermit = YES\nMaxBackoffSecs = 1\n",
            Self::SEN_PORT,
            Self::CAP_IF
        )
    }

    pub const GEN_IF: &'static str = "g0";
    pub const GEN_IP: &'static str = "10.200.1.1";
    /// The captured interface, in ns cap.
    pub const CAP_IF: &'static str = "c0";
    pub const CAP_IP: &'static str = "10.200.1.2";
    /// The agent's interface towards the sensor, in ns cap.
    pub const UPLINK_IF: &'static str = "c1";
    pub const UPLINK_IP: &'static str = "10.200.2.1";
    pub const SEN_IF: &'static str = "s1";
    pub const SEN_IP: &'static str = "10.200.2.2";
    /// The sensor's RPCAP port (active mode default).
    pub const SEN_PORT: u16 = 2003;

    /// The sensor link over IPv6 ([`Topology::ipv6`]): the agent's address.
    pub const UPLINK_IP6: &'static str = "fd00:200:2::1";
    /// The sensor's address on an IPv6 sensor link.
    pub const SEN_IP6: &'static str = "fd00:200:2::2";

    /// Creates the three namespaces and both links with MTU 1500.
    pub fn new() -> Result<Topology> {
        Self::with_mtu(1500)
    }

    pub fn with_mtu(mtu: u32) -> Result<Topology> {
        Self::build(mtu, mtu, false)
    }

    /// The same topology with the sensor link (c1 ── s1) on IPv6 only
    /// ([`Topology::UPLINK_IP6`], [`Topology::SEN_IP6`]) and MTU
    /// `uplink_mtu`; the captured link stays IPv4 with MTU `captured_mtu`
    /// and IPv6 off, so its capture holds only the test's frames.
    pub fn ipv6(captured_mtu: u32, uplink_mtu: u32) -> Result<Topology> {
        Self::build(captured_mtu, uplink_mtu, true)
    }

    fn build(captured_mtu: u32, uplink_mtu: u32, ipv6: bool) -> Result<Topology> {
        let topo = Topology {
            gen: Netns::new("gen")?,
            cap: Netns::new("cap")?,
            sen: Netns::new("sen")?,
        };
        veth_pair(
            VethEnd {
                ns: &topo.gen,
                ifname: Self::GEN_IF,
                cidr: "10.200.1.1/24",
            },
            VethEnd {
                ns: &topo.cap,
                ifname: Self::CAP_IF,
                cidr: "10.200.1.2/24",
            },
            captured_mtu,
        )?;
        let (up, sen) = if ipv6 {
            ("fd00:200:2::1/64", "fd00:200:2::2/64")
        } else {
            ("10.200.2.1/24", "10.200.2.2/24")
        };
        veth_pair(
            VethEnd {
                ns: &topo.cap,
                ifname: Self::UPLINK_IF,
                cidr: up,
            },
            VethEnd {
                ns: &topo.sen,
                ifname: Self::SEN_IF,
                cidr: sen,
            },
            uplink_mtu,
        )?;
        Ok(topo)
    }
}

/// Runs a command to completion; an error carries its stderr.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether an XDP program is attached to `dev` in `ns` (`ip link` shows
/// `prog/xdp`).
pub fn xdp_attached(ns: &Netns, dev: &str) -> bool {
    ns.run("ip", ["link", "show", "dev", dev])
        .expect("ip link show")
        .contains("prog/xdp")
}

/// Moves the calling thread into the namespace called `name` for the rest of
/// its life: sockets it creates live there, threads it spawns start there.
/// For tests whose own thread works inside the namespace (a capture worker
/// started from it); [`Netns::enter`] keeps the calling thread where it is.
pub fn switch_thread(name: &str) {
    let path = Netns::path_of(name);
    let file = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    sys::ns::setns_net(&file).unwrap_or_else(|e| panic!("setns {name}: {e}"));
}

/// The namespace pair of the datapath tests: `gen` and `cap` joined by veth
/// g0 ↔ c0 (MTU 9000, jumbo frames), static neighbours. Deleted on drop.
///
/// ```text
///  ns gen         ns cap
///  g0 ──veth── c0 (captured)
///  10.201.1.1  10.201.1.2
/// ```
#[derive(Debug)]
pub struct NetnsPair {
    pub gen: Netns,
    pub cap: Netns,
}

impl NetnsPair {
    pub const GEN_IF: &'static str = "g0";
    pub const GEN_IP: &'static str = "10.201.1.1";
    pub const CAP_IF: &'static str = "c0";
    pub const CAP_IP: &'static str = "10.201.1.2";

    /// Creates the pair; panics (the test fails) when it cannot.
    pub fn new() -> NetnsPair {
        let pair = NetnsPair {
            gen: Netns::new("dpg").expect("namespace gen"),
            cap: Netns::new("dpc").expect("namespace cap"),
        };
        veth_pair(
            VethEnd {
                ns: &pair.gen,
                ifname: Self::GEN_IF,
                cidr: "10.201.1.1/24",
            },
            VethEnd {
                ns: &pair.cap,
                ifname: Self::CAP_IF,
                cidr: "10.201.1.2/24",
            },
            9000,
        )
        .expect("veth g0 <-> c0");
        pair
    }

    /// A UDP socket in `gen` that sends to the capture side (the calling
    /// thread is left in `cap`, where the tests start their workers).
    pub fn gen_sender(&self) -> UdpSocket {
        switch_thread(self.gen.name());
        let s = UdpSocket::bind((Self::GEN_IP, 0)).expect("bind gen");
        self.gen
            .run("ping", ["-c", "1", "-W", "2", Self::CAP_IP])
            .expect("ping over the veth");
        switch_thread(self.cap.name());
        s
    }

    /// Deletes c0 (and so its peer g0) while a capture may be running.
    pub fn delete_capture_link(&self) {
        self.cap
            .run("ip", ["link", "del", Self::CAP_IF])
            .expect("deleting c0");
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        Self::new()
    }
}
