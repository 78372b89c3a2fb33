#!/usr/bin/env bash
# Installs every prerequisite of xrpcapd's build, tests and demo on Debian 12.
# Idempotent and non-interactive: when everything is present it touches nothing
# (no apt-get update), so repeat runs take well under a second.
#
#   scripts/setup.sh            # system packages + rust components
#   XRPCAP_FUZZ=1 scripts/setup.sh   # also cargo-fuzz (for bounded fuzz runs)
#   scripts/setup.sh demo       # only what scripts/demo.sh needs (apt + rust)
#   scripts/setup.sh portable   # only zig + cargo-zigbuild (packaging/portable.sh)
#   scripts/setup.sh kubernetes # only kubectl 1.20 + kubernetes-validate (packaging/kubernetes/check.sh)
#
# Needs root for apt-get (it uses sudo when not root and sudo exists).
set -euo pipefail

APT_PACKAGES=(
    clang llvm libpcap-dev libelf-dev pkg-config # build: eBPF object, pcap crate
    gcc-multilib flex bison make                 # asm/types.h for -target bpf; libpcap source build
    libssl-dev openssl                           # libpcap's rpcaps:// client; test certificates
    whois                                        # mkpasswd: yescrypt/SHA-crypt shadow hashes in auth tests
    iproute2 iputils-ping procps                 # netns topology, ping, ps/pkill
    netsniff-ng tcpreplay tcpdump tshark         # traffic generators and references
    rpm fakeroot systemd                         # packaging/check.sh: rpm -qp, dpkg-deb, systemd-analyze
    lintian rpmlint                              # packaging/check.sh: the packages' linters
    jq util-linux                                # test.sh: list the test binaries, run them via setpriv
    nftables                                     # e2e: a silent blackhole between agent and sensor
    prometheus                                   # e2e: promtool check metrics; a real server scraping both
    debootstrap systemd-container python3        # packaging/lifecycle.sh: Debian roots booted by nspawn
    prometheus                                   # e2e metrics_prometheus: a real server, promtool
    buildah libcap2-bin                          # packaging/image.sh: OCI images FROM scratch, setcap
)

log() { printf 'setup: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root to run: $*"
        return 1
    fi
}

missing_packages() {
    local p status
    for p in "${APT_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        if [ "$status" != "install ok installed" ]; then
            printf '%s\n' "$p"
        fi
    done
}

install_apt() {
    local missing
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "system packages present"
        return 0
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer before it asks.
    echo "wireshark-common wireshark-common/install-setuid boolean false" |
        as_root debconf-set-selections
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null
}

install_rust_components() {
    if ! command -v cargo >/dev/null 2>&1; then
        log "cargo not found: install the Rust toolchain (rustup) first"
        return 1
    fi
    local c
    for c in rustfmt clippy; do
        if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
            log "adding rust component $c"
            rustup component add "$c"
        fi
    done
}

install_cargo_fuzz() {
    if cargo fuzz --version >/dev/null 2>&1; then
        log "cargo-fuzz present ($(cargo fuzz --version))"
        return 0
    fi
    log "installing cargo-fuzz (a few minutes of compiling)"
    cargo install cargo-fuzz --locked
}

# packaging/build.sh's tools (crates.io), compiled once (a few minutes each).
install_packaging_tools() {
    local t
    for t in cargo-deb cargo-generate-rpm; do
        if cargo "${t#cargo-}" --version >/dev/null 2>&1; then
            continue
        fi
        log "installing $t (a few minutes of compiling)"
        cargo install --locked "$t"
    done
    log "packaging tools present"
}

# The portable build's toolchain (packaging/portable.sh): zig from PyPI's
# `ziglang` wheel and cargo-zigbuild from crates.io, each installed once into a
# folder of the CI cache named by its version (XRPCAP_CI_CACHE moves the cache;
# ZIGLANG_VERSION / CARGO_ZIGBUILD_VERSION pick other versions). A complete
# folder is reused as is; a half-written one (interrupted install) is redone.
ZIGLANG_VERSION=${ZIGLANG_VERSION:-0.16.0}
CARGO_ZIGBUILD_VERSION=${CARGO_ZIGBUILD_VERSION:-0.24.1}
XRPCAP_CI_CACHE=${XRPCAP_CI_CACHE:-/var/cache/xrpcapd-ci}

portable_zig_dir() { printf '%s/zig/ziglang-%s\n' "$XRPCAP_CI_CACHE" "$ZIGLANG_VERSION"; }
portable_cargo_zigbuild_dir() {
    printf '%s/cargo-zigbuild/%s\n' "$XRPCAP_CI_CACHE" "$CARGO_ZIGBUILD_VERSION"
}

install_portable_toolchain() {
    if [ ! -w "$XRPCAP_CI_CACHE" ]; then
        as_root install -d -o "$(id -u)" -g "$(id -g)" "$XRPCAP_CI_CACHE"
    fi
    local zig czb
    zig=$(portable_zig_dir)
    czb=$(portable_cargo_zigbuild_dir)
    if [ -x "$zig/ziglang/zig" ]; then
        log "zig present ($zig)"
    else
        log "installing ziglang $ZIGLANG_VERSION (PyPI) into $zig"
        rm -rf "$zig.tmp" && mkdir -p "$(dirname "$zig")"
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps \
            --target "$zig.tmp" "ziglang==$ZIGLANG_VERSION"
        rm -rf "$zig" && mv "$zig.tmp" "$zig"
    fi
    if [ -x "$czb/bin/cargo-zigbuild" ]; then
        log "cargo-zigbuild present ($czb)"
    else
        log "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION (crates.io, a few minutes of compiling)"
        rm -rf "$czb.tmp" && mkdir -p "$(dirname "$czb")"
        # Its own target folder, not the caller's CARGO_TARGET_DIR.
        env -u CARGO_TARGET_DIR cargo install -q cargo-zigbuild --locked \
            --version "$CARGO_ZIGBUILD_VERSION" --root "$czb.tmp"
        rm -rf "$czb" && mv "$czb.tmp" "$czb"
    fi
}

# Scapy (PyPI), the independent encapsulator/decoder of the tunnel tests
# (tests/e2e/tunnel_*.rs; tests/e2e/decap.rs builds the GENEVE, GRE/TEB and
# ERSPAN II/III packets this kernel has no devices for): installed once into a folder of the CI cache named
# by its version, as zig above; the tests put that folder on PYTHONPATH.
SCAPY_VERSION=${SCAPY_VERSION:-2.6.1}
scapy_dir() { printf '%s/scapy/scapy-%s\n' "$XRPCAP_CI_CACHE" "$SCAPY_VERSION"; }

install_scapy() {
    if [ ! -w "$XRPCAP_CI_CACHE" ]; then
        as_root install -d -o "$(id -u)" -g "$(id -g)" "$XRPCAP_CI_CACHE"
    fi
    local dir
    dir=$(scapy_dir)
    if [ -f "$dir/scapy/__init__.py" ]; then
        log "scapy present ($dir)"
        return
    fi
    log "installing scapy $SCAPY_VERSION (PyPI) into $dir"
    rm -rf "$dir.tmp" && mkdir -p "$(dirname "$dir")"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps \
        --target "$dir.tmp" "scapy==$SCAPY_VERSION"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

# packaging/kubernetes/check.sh's tools, each installed once into a folder of
# the CI cache named by its version (KUBERNETES_VALIDATE_VERSION /
# KUBERNETES_CLIENT_VERSION pick others):
# - kubernetes-validate from PyPI, with its pinned dependencies: validates
#   manifests against the Kubernetes JSON schemas it bundles (1.25 to 1.37),
#   so validating needs no network. Debian's python3, so that the folder also
#   works for the unprivileged test run.
# - Debian's kubernetes-client (kubectl 1.20, the oldest kustomize the
#   manifests are written for), extracted from its .deb rather than
#   installed: another package may own /usr/bin/kubectl (Google's `kubectl`
#   on this kind of machine), and `kubectl kustomize` needs no cluster.
KUBERNETES_VALIDATE_VERSION=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
KUBERNETES_VALIDATE_DEPS=(
    jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
    rpds-py==2026.9.1 attrs==26.1.0 pyyaml==6.0.4 packaging==26.4
    importlib-resources==7.1.0 typing-extensions==4.16.0
)
KUBERNETES_CLIENT_VERSION=${KUBERNETES_CLIENT_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}

kubernetes_validate_dir() {
    printf '%s/kubernetes-validate/%s\n' "$XRPCAP_CI_CACHE" "$KUBERNETES_VALIDATE_VERSION"
}
kubernetes_client_dir() {
    printf '%s/kubernetes-client/%s\n' "$XRPCAP_CI_CACHE" "$KUBERNETES_CLIENT_VERSION"
}

install_kubernetes_tools() {
    local kv kc deb
    kv=$(kubernetes_validate_dir)
    kc=$(kubernetes_client_dir)
    if [ -f "$kv/kubernetes_validate/__init__.py" ] && [ -x "$kc/usr/bin/kubectl" ]; then
        log "kubernetes-validate and kubectl 1.20 present ($kv, $kc)"
        return 0
    fi
    if [ ! -w "$XRPCAP_CI_CACHE" ]; then
        as_root install -d -o "$(id -u)" -g "$(id -g)" "$XRPCAP_CI_CACHE"
    fi
    if [ ! -f "$kv/kubernetes_validate/__init__.py" ]; then
        log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI) into $kv"
        rm -rf "$kv.tmp" && mkdir -p "$(dirname "$kv")"
        /usr/bin/python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
            --no-deps --target "$kv.tmp" \
            "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "${KUBERNETES_VALIDATE_DEPS[@]}"
        rm -rf "$kv" && mv "$kv.tmp" "$kv"
    fi
    if [ ! -x "$kc/usr/bin/kubectl" ]; then
        log "extracting Debian's kubernetes-client $KUBERNETES_CLIENT_VERSION into $kc"
        rm -rf "$kc.tmp" && mkdir -p "$kc.tmp"
        # apt-get download runs as _apt where it can: a folder it may write.
        chmod 0777 "$kc.tmp"
        if ! (cd "$kc.tmp" && apt-get download -q "kubernetes-client=$KUBERNETES_CLIENT_VERSION"); then
            as_root apt-get update -q
            (cd "$kc.tmp" && apt-get download -q "kubernetes-client=$KUBERNETES_CLIENT_VERSION")
        fi
        deb=$(ls "$kc.tmp"/kubernetes-client_*.deb)
        dpkg-deb -x "$deb" "$kc.tmp" && rm -f "$deb"
        chmod 0755 "$kc.tmp"
        "$kc.tmp/usr/bin/kubectl" version --client >/dev/null
        rm -rf "$kc" && mv "$kc.tmp" "$kc"
    fi
}

# `scripts/setup.sh kubernetes` (packaging/kubernetes/check.sh): only those
# two; logs on stderr, then kubernetes-validate's folder (for PYTHONPATH) and
# the kubectl 1.20 binary on stdout.
if [ "${1:-}" = "kubernetes" ]; then
    exec 3>&1 1>&2
    install_kubernetes_tools
    printf '%s\n' "$(kubernetes_validate_dir)" "$(kubernetes_client_dir)/usr/bin/kubectl" >&3
    exit 0
fi

# `scripts/setup.sh portable` (packaging/portable.sh): only the portable
# toolchain; logs on stderr, then the folders to put on PATH on stdout.
if [ "${1:-}" = "portable" ]; then
    exec 3>&1 1>&2
    install_portable_toolchain
    printf '%s\n' "$(portable_zig_dir)/ziglang" "$(portable_cargo_zigbuild_dir)/bin" >&3
    exit 0
fi

# `scripts/setup.sh demo` (scripts/demo.sh): the system packages and rust
# components; not the interop client nor anything slow that only tests need.
if [ "${1:-}" = "demo" ]; then
    install_apt
    install_rust_components
    log "done"
    exit 0
fi

install_apt
install_rust_components
install_packaging_tools
install_portable_toolchain
install_scapy
install_kubernetes_tools
# The real libpcap RPCAP client (and reference rpcapd) of the interop tests,
# built once into .cache/ (see the script).
"$(dirname "${BASH_SOURCE[0]}")/libpcap-remote.sh" >/dev/null
if [ "${XRPCAP_FUZZ:-0}" = "1" ]; then
    # Optional: a failure here must not stop the rest of the tests; the test
    # script reports fuzzing as skipped when cargo-fuzz is unavailable.
    install_cargo_fuzz || log "cargo-fuzz could not be installed; fuzzing will be skipped"
fi
log "done"
