//! The OCI images of packaging/image.sh (docs/container.md): what
//! `buildah inspect` says about them (size, user, entrypoint, labels), what
//! they hold, and the agent image run as a container runtime would run it —
//! its entrypoint, as its user, with only its capabilities, in a network
//! namespace — forwarding a burst byte-exact to the host's xrpcap-sensor.
//!
//! `podman run` does not work on this machine (docs/TESTING.md), so the run
//! is `buildah from` + `buildah mount`, then chroot (unshare --root, with
//! the image's working directory) and setpriv (the image's uid/gid, no
//! supplementary groups, bounding set NET_RAW + NET_ADMIN, nothing
//! inheritable or ambient, no_new_privs off as with allowPrivilegeEscalation)
//! with the image's environment only. setpriv itself comes from the host,
//! with its libraries, in a folder of the container's writable layer
//! (`/.xrpcap-test`), run through its own loader so that nothing of the
//! image's own files is touched. Not covered: cgroups, seccomp, the
//! runtime's /dev and /etc/hosts, user namespaces.
//!
//! The images are built from `packaging/portable.sh release` (or
//! XRPCAP_IMAGE_BIN), once per test binary; packaging/image.sh reuses an
//! image whose inputs did not change (`/var/cache/xrpcapd-ci/images`).
//! Needs root and buildah (scripts/setup.sh).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use xrpcap_testkit::daemon::START_TIMEOUT;
use xrpcap_testkit::traffic::{ping_pong, udp, UdpEcho};
use xrpcap_testkit::{
    numbered_payloads, require_root, wait_for_packets, wait_until, Child, Netns, Sensor, Tcpdump,
    Topology,
};

/// The size limit of an image, compressed layers and unpacked files alike.
const MAX_IMAGE_BYTES: u64 = 15_000_000;
/// The images' user and group.
const IMAGE_UID: u32 = 65532;
/// CAP_NET_ADMIN (bit 12) and CAP_NET_RAW (bit 13).
const AGENT_CAPS: u64 = (1 << 12) | (1 << 13);
/// Round trips of the forwarded burst: as many frames each way.
const ROUND_TRIPS: u32 = 100;
/// IP packet size of the burst.
const IP_SIZE: usize = 1000;
/// How long forwarded packets may take to show up in the sensor's file.
const ARRIVAL: Duration = Duration::from_secs(20);
/// The sensor's name in the container's /etc/hosts.
const SENSOR_NAME: &str = "xrpcap-sensor.test";
/// Where the test puts setpriv (and its loader and libraries) in a container.
const HELPER_DIR: &str = "/.xrpcap-test";

use xrpcap_testkit::netns::sock_addr as addr;

/// A program of the host, found on PATH; missing: a failure naming setup.sh.
fn host_tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: run scripts/setup.sh (it installs it)"))
}

/// Runs a command; panics with its stderr when it fails. Returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn buildah() -> Command {
    Command::new(host_tool("buildah"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The two images' oci-archives, as packaging/image.sh printed them.
#[derive(Debug)]
struct Archives {
    agent: PathBuf,
    sensor: PathBuf,
}

/// Builds (or reuses) both images, once per test binary.
fn archives() -> &'static Archives {
    static ARCHIVES: OnceLock<Archives> = OnceLock::new();
    ARCHIVES.get_or_init(|| {
        host_tool("buildah");
        let root = workspace_root();
        let out = run(Command::new(root.join("packaging/image.sh")).current_dir(&root));
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 3, "packaging/image.sh printed {line:?}");
            found.insert(f[0].to_string(), PathBuf::from(f[2]));
        }
        let take = |role: &str| {
            found
                .get(role)
                .unwrap_or_else(|| panic!("no {role} image in {out:?}"))
                .clone()
        };
        Archives {
            agent: take("agent"),
            sensor: take("sensor"),
        }
    })
}

/// An image imported from its oci-archive (what `podman load` does) and
/// what `buildah inspect` says about it.
#[derive(Debug)]
struct Image {
    id: String,
    inspect: Value,
}

impl Image {
    fn load(archive: &Path) -> Image {
        let out = run(buildah()
            .args(["pull", "--quiet"])
            .arg(format!("oci-archive:{}", archive.display())));
        let id = out
            .lines()
            .last()
            .expect("buildah pull printed the image id")
            .trim()
            .to_string();
        let json = run(buildah().args(["inspect", "--type", "image", &id]));
        let inspect = serde_json::from_str(&json).expect("buildah inspect's JSON");
        Image { id, inspect }
    }

    /// The OCI image configuration's `config` object.
    fn config(&self) -> &Value {
        &self.inspect["OCIv1"]["config"]
    }

    fn strings(&self, key: &str) -> Vec<String> {
        self.config()[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().expect("string").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.config()["Labels"][key].as_str()
    }

    /// The configured user as (uid, gid): the image uses numbers, so that a
    /// runtime's runAsNonRoot check can verify it without /etc/passwd.
    fn user(&self) -> (u32, u32) {
        let user = self.config()["User"].as_str().expect("a User");
        let (u, g) = user
            .split_once(':')
            .unwrap_or_else(|| panic!("User {user:?} is not UID:GID"));
        (
            u.parse().expect("numeric uid"),
            g.parse().expect("numeric gid"),
        )
    }

    fn working_dir(&self) -> String {
        match self.config()["WorkingDir"].as_str() {
            Some(d) if !d.is_empty() => d.to_string(),
            _ => "/".to_string(),
        }
    }

    /// The layers' (compressed) sizes from the image manifest.
    fn layer_bytes(&self) -> u64 {
        let manifest: Value = serde_json::from_str(
            self.inspect["Manifest"]
                .as_str()
                .expect("the manifest as a string"),
        )
        .expect("manifest JSON");
        manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["size"].as_u64().expect("layer size"))
            .sum()
    }
}

/// A working container of an image, mounted; unmounted and removed on drop
/// (also when the test fails). Declare it before the processes that run in
/// it, so they die first.
#[derive(Debug)]
struct Container {
    name: String,
    root: PathBuf,
}

impl Container {
    fn from(image: &Image) -> Container {
        let name = run(buildah().args(["from", "--quiet", &image.id]))
            .trim()
            .to_string();
        // From here on the guard exists: a failed mount still removes it.
        let mut c = Container {
            name,
            root: PathBuf::new(),
        };
        c.root = PathBuf::from(run(buildah().args(["mount", &c.name])).trim());
        c
    }

    /// The image's files (relative paths) with their metadata, the test's
    /// helper folder excepted.
    fn files(&self) -> BTreeMap<PathBuf, std::fs::Metadata> {
        let mut files = BTreeMap::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let rel = e.path().strip_prefix(&self.root).unwrap().to_path_buf();
                if rel == Path::new(HELPER_DIR.trim_start_matches('/')) {
                    continue;
                }
                let meta = std::fs::symlink_metadata(e.path()).unwrap();
                if meta.is_dir() {
                    dirs.push(e.path());
                }
                files.insert(rel, meta);
            }
        }
        files
    }

    /// Copies the host's setpriv, its libraries and loader into HELPER_DIR.
    /// Returns the command prefix that runs it inside the container's root:
    /// the loader with `--library-path`, so neither the image's library
    /// folders nor the entrypoint's environment see these files.
    fn install_setpriv(&self) -> Vec<String> {
        let setpriv = host_tool("setpriv");
        let dir = self.root.join(HELPER_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let ldd = run(Command::new(host_tool("ldd")).arg(&setpriv));
        let mut loader = None;
        for line in ldd.lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)"
            let words: Vec<&str> = line.split_whitespace().collect();
            let path = match words.as_slice() {
                [_, "=>", p, ..] if p.starts_with('/') => *p,
                [p, ..] if p.starts_with('/') => {
                    loader = Some(*p);
                    *p
                }
                _ => continue,
            };
            let name = Path::new(path).file_name().unwrap();
            std::fs::copy(path, dir.join(name)).unwrap();
        }
        std::fs::copy(&setpriv, dir.join("setpriv")).unwrap();
        let loader = loader.expect("setpriv's loader in ldd's output");
        let loader_name = Path::new(loader).file_name().unwrap().to_str().unwrap();
        vec![
            format!("{HELPER_DIR}/{loader_name}"),
            "--library-path".into(),
            HELPER_DIR.into(),
            format!("{HELPER_DIR}/setpriv"),
        ]
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        for args in [["umount", &self.name], ["rm", &self.name]] {
            match buildah().args(args).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "buildah {} {}: {}",
                    args[0],
                    self.name,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("buildah {} {}: {e}", args[0], self.name),
            }
        }
    }
}

/// Mounts /proc, /sys and /dev in the container's root (inside the private
/// mount namespace of `ip netns exec`: they vanish with the process), then
/// chroots into it with the working directory and execs the rest. The
/// shell's own PWD is not passed on: the environment is the image's.
const ENTER: &str = r#"set -e
root=$1 wd=$2 mount=$3 unshare=$4
shift 4
for d in proc sys dev; do mkdir -p "$root/$d"; done
"$mount" -t proc proc "$root/proc"
"$mount" --rbind /sys "$root/sys"
"$mount" --rbind /dev "$root/dev"
unset PWD OLDPWD
exec "$unshare" --root="$root" --wd="$wd" "$@"
"#;

/// Starts the image's entrypoint (plus its Cmd, plus `args`) in `ns` as a
/// runtime would: the image's environment plus `env` (`-e K=V`) and nothing
/// else, its working directory, its user without supplementary groups, and
/// `caps` (setpriv syntax, e.g. `+net_raw,+net_admin`, or empty) as the
/// whole bounding set.
fn start_entrypoint(
    ns: &Netns,
    ctr: &Container,
    image: &Image,
    caps: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> Child {
    let (uid, gid) = image.user();
    let mut cmd = Command::new(host_tool("ip"));
    cmd.env_clear();
    for e in image.strings("Env") {
        let (k, v) = e.split_once('=').expect("Env entries are K=V");
        cmd.env(k, v);
    }
    cmd.envs(env.iter().copied());
    cmd.args(["netns", "exec", ns.name()])
        .arg(host_tool("sh"))
        .args(["-c", ENTER, "sh"])
        .arg(&ctr.root)
        .arg(image.working_dir())
        .arg(host_tool("mount"))
        .arg(host_tool("unshare"))
        .args(ctr.install_setpriv())
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(format!("--bounding-set=-all{}", prefixed(caps)))
        .args(["--inh-caps=-all", "--ambient-caps=-all", "--"])
        .args(image.strings("Entrypoint"))
        .args(image.strings("Cmd"))
        .args(args);
    Child::spawn("image entrypoint", cmd).unwrap()
}

/// `,CAPS` or nothing.
fn prefixed(caps: &str) -> String {
    if caps.is_empty() {
        String::new()
    } else {
        format!(",{caps}")
    }
}

/// The `Key:` line of /proc/PID/status, its value trimmed.
fn proc_status(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn proc_caps(pid: u32, key: &str) -> u64 {
    u64::from_str_radix(&proc_status(pid, key), 16).unwrap()
}

/// The file capabilities of `path` as getcap prints them (empty: none).
fn file_caps(path: &Path) -> String {
    let out = run(Command::new(host_tool("getcap")).arg(path));
    out.split_whitespace().nth(1).unwrap_or("").to_string()
}

/// What is checked of each image's metadata and files.
struct Expect {
    entrypoint: &'static str,
    user_name: &'static str,
    working_dir: &'static str,
    file_caps: &'static str,
    caps_label: &'static str,
}

fn check_image(archive: &Path, want: &Expect) {
    let image = Image::load(archive);
    let ctr = Container::from(&image);

    // buildah inspect: user, entrypoint, labels, size.
    assert_eq!(image.user(), (IMAGE_UID, IMAGE_UID), "{archive:?}: User");
    assert_eq!(image.strings("Entrypoint"), [want.entrypoint]);
    assert!(image.strings("Cmd").is_empty(), "no default arguments");
    assert_eq!(image.working_dir(), want.working_dir);
    for key in [
        "title",
        "description",
        "version",
        "revision",
        "created",
        "licenses",
    ] {
        let label = format!("org.opencontainers.image.{key}");
        let value = image.label(&label).unwrap_or("");
        assert!(!value.is_empty(), "{archive:?}: no label {label}");
    }
    assert_eq!(
        image.label("org.opencontainers.image.version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let revision = image.label("org.opencontainers.image.revision").unwrap();
    assert!(
        revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
        "revision label {revision:?}"
    );
    assert_eq!(image.label("xrpcapd.capabilities"), Some(want.caps_label));
    let compressed = image.layer_bytes();
    assert!(
        compressed <= MAX_IMAGE_BYTES,
        "{archive:?}: {compressed} bytes of layers"
    );

    // The files: the unpacked size, nothing setuid, the user named.
    let files = ctr.files();
    let unpacked: u64 = files
        .values()
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(
        unpacked <= MAX_IMAGE_BYTES,
        "{archive:?}: {unpacked} bytes of files"
    );
    eprintln!(
        "{}: {compressed} bytes compressed, {unpacked} unpacked, {} files",
        archive.display(),
        files.len()
    );
    for (path, meta) in &files {
        assert_eq!(
            meta.permissions().mode() & 0o6000,
            0,
            "{path:?} is setuid/setgid"
        );
        assert!(
            meta.uid() == 0 || meta.uid() == IMAGE_UID,
            "{path:?} owned by {}",
            meta.uid()
        );
    }
    let passwd = std::fs::read_to_string(ctr.root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("{}:x:{IMAGE_UID}:{IMAGE_UID}:", want.user_name))),
        "/etc/passwd names uid {IMAGE_UID} {}:\n{passwd}",
        want.user_name
    );
    let entry = ctr.root.join(want.entrypoint.trim_start_matches('/'));
    assert_eq!(file_caps(&entry), want.file_caps, "{entry:?}");
    // Only the entrypoint may carry capabilities.
    for (path, meta) in &files {
        let full = ctr.root.join(path);
        if meta.is_file() && full != entry {
            assert_eq!(file_caps(&full), "", "{path:?} has file capabilities");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn agent_image_is_small_non_root_labelled_with_only_capture_capabilities() {
    require_root();
    check_image(
        &archives().agent,
        &Expect {
            entrypoint: "/usr/sbin/xrpcapd",
            user_name: "xrpcapd",
            working_dir: "/",
            file_caps: "cap_net_admin,cap_net_raw=ep",
            caps_label: "CAP_NET_RAW,CAP_NET_ADMIN",
        },
    );
}

#[test]
#[ignore = "needs root"]
fn sensor_image_is_small_non_root_labelled_without_capabilities() {
    require_root();
    check_image(
        &archives().sensor,
        &Expect {
            entrypoint: "/usr/bin/xrpcap-sensor",
            user_name: "xrpcap-sensor",
            working_dir: "/data",
            file_caps: "",
            caps_label: "",
        },
    );
}

/// The agent image's entrypoint, run as its user with NET_RAW + NET_ADMIN
/// as the whole bounding set in the capture namespace, dials the host's
/// xrpcap-sensor and forwards a burst in both directions; the sensor's pcap
/// must equal tcpdump's capture of the link byte for byte. Configured by
/// the environment only (`-e XRPCAPD_…`): no file, no argument. The running
/// process is checked too: uid/gid 65532, exactly those capabilities
/// effective (from the file capabilities: the setuid cleared the rest),
/// only the image's environment and the test's variables, logging to
/// stderr.
#[test]
#[ignore = "needs root"]
fn agent_image_forwards_a_burst_byte_exact_as_its_user_with_only_its_capabilities() {
    require_root();
    let image = Image::load(&archives().agent);
    let topo = Topology::new().unwrap();
    let ctr = Container::from(&image);
    let tmp = tempfile::tempdir().unwrap();
    let tcpdump =
        Tcpdump::start(&topo.cap, Topology::CAP_IF, &tmp.path().join("c0.pcap"), "").unwrap();
    let mut sensor =
        Sensor::start(&topo.sen, addr(Topology::SEN_IP, Topology::SEN_PORT), &[]).unwrap();
    // The sensor by name, from the /etc/hosts a runtime writes into the
    // container: the image's glibc resolves it (NSS files, nsswitch.conf).
    std::fs::write(
        ctr.root.join("etc/hosts"),
        format!("127.0.0.1 localhost\n{} {SENSOR_NAME}\n", Topology::SEN_IP),
    )
    .unwrap();
    let active = format!(
        "{SENSOR_NAME},{},ifname={}",
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    let env = [
        ("XRPCAPD_ACTIVE_CLIENT", active.as_str()),
        ("XRPCAPD_NULL_AUTH_PERMIT", "YES"),
        ("XRPCAPD_PASSIVE", "no"),
    ];
    let mut agent = start_entrypoint(&topo.cap, &ctr, &image, "+net_raw,+net_admin", &env, &[]);
    agent
        .wait_for_output(
            &format!("capture on {} started", Topology::CAP_IF),
            START_TIMEOUT,
        )
        .unwrap();

    // The process as the runtime would have made it.
    let pid = agent.id();
    let ids = format!("{IMAGE_UID}\t{IMAGE_UID}\t{IMAGE_UID}\t{IMAGE_UID}");
    assert_eq!(proc_status(pid, "Uid"), ids);
    assert_eq!(proc_status(pid, "Gid"), ids);
    assert_eq!(proc_status(pid, "Groups"), "");
    for (set, want) in [
        ("CapEff", AGENT_CAPS),
        ("CapPrm", AGENT_CAPS),
        ("CapBnd", AGENT_CAPS),
        ("CapInh", 0),
        ("CapAmb", 0),
    ] {
        assert_eq!(proc_caps(pid, set), want, "{set} of the agent");
    }
    assert_eq!(proc_status(pid, "NoNewPrivs"), "0");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut environ: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    environ.sort();
    let mut want_env = image.strings("Env");
    want_env.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    want_env.sort();
    assert_eq!(environ, want_env, "the agent's environment");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.ends_with("usr/sbin/xrpcapd"), "{exe:?}");

    // `podman exec CTR xrpcapd status`: a second process of the image, as
    // its user, asks the agent over /run/xrpcapd/status.sock (the table is
    // published every 500 ms: asked until it shows the capture).
    let sensor_text = format!("{SENSOR_NAME}:{}", Topology::SEN_PORT);
    let mut table = String::new();
    let shown = wait_until(START_TIMEOUT, "the capture in xrpcapd status", || {
        let mut status = start_entrypoint(
            &topo.cap,
            &ctr,
            &image,
            "+net_raw,+net_admin",
            &[],
            &["status"],
        );
        let exited = status.wait_timeout(START_TIMEOUT)?;
        assert!(
            exited.is_some_and(|s| s.success()),
            "xrpcapd status: {exited:?}\n{}",
            status.describe()
        );
        table = status.stdout();
        Ok(table.contains(&sensor_text)
            && table.contains(Topology::CAP_IF)
            && !table.contains("captures: none"))
    });
    if let Err(e) = shown {
        panic!("{e}\n{table}");
    }

    // The burst: gen → cap and back, on the captured link.
    let echo = UdpEcho::start(&topo.cap, addr(Topology::CAP_IP, 7000)).unwrap();
    let payloads = numbered_payloads(ROUND_TRIPS, IP_SIZE - 28);
    ping_pong(
        &topo.gen,
        addr(Topology::GEN_IP, 7001),
        addr(Topology::CAP_IP, 7000),
        &payloads,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(echo.stop(), u64::from(ROUND_TRIPS));
    let frames = 2 * ROUND_TRIPS as usize;
    let file = sensor.the_file().unwrap();
    wait_for_packets(&file, frames, ARRIVAL).unwrap();
    let stats = format!("recv {frames} ifdrop 0 krnldrop 0 sent {frames}");
    sensor.wait_log(&stats, 1, ARRIVAL).unwrap();
    let reference = tcpdump.stop().unwrap();
    let status = agent.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "agent: {status}\n{}", agent.describe());
    sensor.stop().unwrap();
    let got = sensor.packets().unwrap();

    assert_eq!(reference.len(), frames, "tcpdump's frames on c0");
    assert_eq!(got.len(), frames, "frames in the sensor's file");
    for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
        assert_eq!((g.len, g.caplen), (r.len, r.caplen), "lengths of frame {i}");
        assert!(g.data == r.data, "bytes of frame {i} differ from tcpdump's");
    }
    for (i, p) in got.iter().enumerate() {
        let u = udp(p).unwrap();
        assert_eq!(u.payload, &payloads[i / 2][..], "payload of frame {i}");
    }
    // Logs on stderr, nothing on stdout.
    assert!(agent.stdout().is_empty(), "stdout: {}", agent.stdout());
}

/// The sensor image's entrypoint runs as its user with no capability at all
/// (its loader and glibc are in the image).
#[test]
#[ignore = "needs root"]
fn sensor_image_entrypoint_runs_without_capabilities() {
    require_root();
    let image = Image::load(&archives().sensor);
    let ns = Netns::new("img").unwrap();
    let ctr = Container::from(&image);
    let mut sensor = start_entrypoint(&ns, &ctr, &image, "", &[], &["--version"]);
    let status = sensor.wait_timeout(START_TIMEOUT).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        sensor.describe()
    );
    assert_eq!(
        sensor.stdout().trim(),
        format!("xrpcap-sensor {}", env!("CARGO_PKG_VERSION"))
    );
}
