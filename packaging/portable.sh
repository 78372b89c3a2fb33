#!/usr/bin/env bash
# Builds the portable binaries of the packages: xrpcapd, xrpcapd-setup (when
# the agent crate has it) and xrpcap-sensor, for glibc >= 2.26 (Amazon Linux 2,
# RHEL 8, Debian 11, Ubuntu 20.04 and newer) with libpcap linked statically, so
# they need no distribution's libpcap soname. Stripped, each with its debug
# file beside it (`NAME.debug`, found by gdb through the gnu-debuglink).
#
#   packaging/portable.sh [release|dev]     # default release
#
# Prints the output folder, $CARGO_TARGET_DIR/portable/<profile>/, on the last
# line of stdout; logs go to stderr. packaging/check-portable.sh DIR checks it.
#
# How: cargo-zigbuild with zig (PyPI's ziglang) as C compiler and linker for
# the target x86_64-unknown-linux-gnu.2.26, i.e. against glibc 2.26's symbol
# versions; libpcap from Debian's source (the orig tarball, as
# scripts/libpcap-remote.sh) compiled with the same `zig cc` target and without
# dbus/libnl/rdma/bluetooth/usb/netmap/remote, so the archive pulls in nothing
# but libc. See docs/DESIGN.md, "Portable binaries".
#
# Cache (XRPCAP_CI_CACHE, default /var/cache/xrpcapd-ci), each keyed by inputs:
#   zig/ziglang-V, cargo-zigbuild/V      scripts/setup.sh portable
#   src/libpcap_V.orig.tar.gz            Debian's orig tarball
#   libpcap/V-zigZ-FLAGSHASH/prefix      the static libpcap
#   zig-cache/                           zig's own cache (glibc stubs, compiler-rt)
#   target/zigZ-czbC-PCAPKEY/            the zig build's CARGO_TARGET_DIR
# Missing pieces are rebuilt; delete a folder to force it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PROFILE=${1:-release}
case $PROFILE in
release) PROFILE_DIR=release ;;
dev) PROFILE_DIR=debug ;;
*)
    echo "usage: packaging/portable.sh [release|dev]" >&2
    exit 2
    ;;
esac
GLIBC=2.26
RUST_TARGET=x86_64-unknown-linux-gnu
ZIG_TARGET=x86_64-linux-gnu.$GLIBC
CACHE=${XRPCAP_CI_CACHE:-/var/cache/xrpcapd-ci}
export XRPCAP_CI_CACHE=$CACHE
OUT=${CARGO_TARGET_DIR:-$ROOT/target}/portable/$PROFILE

log() { printf 'portable: %s\n' "$*" >&2; }

# zig + cargo-zigbuild (installed once; prints the folders for PATH).
mapfile -t tool_dirs < <("$ROOT/scripts/setup.sh" portable)
[ "${#tool_dirs[@]}" -eq 2 ] || {
    log "scripts/setup.sh portable failed"
    exit 1
}
export PATH="${tool_dirs[0]}:${tool_dirs[1]}:$PATH"
# cargo-zigbuild looks for `python3 -m ziglang` before `zig`: make both ours.
export PYTHONPATH="$(dirname "${tool_dirs[0]}")${PYTHONPATH:+:$PYTHONPATH}"
export ZIG_GLOBAL_CACHE_DIR=$CACHE/zig-cache
export ZIG_LOCAL_CACHE_DIR=$CACHE/zig-cache
export CARGO_ZIGBUILD_CACHE_DIR=$CACHE/cargo-zigbuild-cache
ZIG_VERSION=$(zig version)
CZB_VERSION=$(cargo-zigbuild --version | awk '{print $2}')
log "zig $ZIG_VERSION, cargo-zigbuild $CZB_VERSION, target $RUST_TARGET.$GLIBC"

# One portable build at a time on this cache (CI stages may overlap).
mkdir -p "$CACHE"
exec 9>"$CACHE/.portable.lock"
flock 9

# --- libpcap's source: Debian's orig tarball ---------------------------------
# Debian's patches only touch the shared library, man sections, Hurd and
# kFreeBSD, none of which a static Linux archive uses. Reused in this order:
# the CI cache, scripts/libpcap-remote.sh's download, else apt's deb-src (a
# private sources list, as libpcap-remote.sh: the system's apt is not touched).
libpcap_tarball() {
    local src=$CACHE/src t
    mkdir -p "$src"
    t=$(ls "$src"/libpcap_*.orig.tar.* 2>/dev/null | grep -v '\.asc$' | sort -V | tail -n 1 || true)
    if [ -z "$t" ]; then
        t=$(ls "$ROOT"/.cache/libpcap-remote/src/libpcap_*.orig.tar.* 2>/dev/null |
            grep -v '\.asc$' | sort -V | tail -n 1 || true)
        if [ -n "$t" ]; then
            cp "$t" "$src/" && t=$src/$(basename "$t")
        fi
    fi
    if [ -z "$t" ]; then
        log "downloading libpcap's Debian source"
        local apt=$src/apt uri suite
        mkdir -p "$apt/lists/partial"
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        suite=$(awk '/^Suites:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        printf 'deb-src %s %s main\n' "${uri:-http://deb.debian.org/debian}" "${suite:-bookworm}" \
            >"$apt/sources.list"
        local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$apt/lists" -o "Debug::NoLocking=1")
        apt-get "${opts[@]}" update -q >&2
        (cd "$src" && apt-get "${opts[@]}" source --download-only libpcap >&2)
        t=$(ls "$src"/libpcap_*.orig.tar.* | grep -v '\.asc$' | sort -V | tail -n 1)
    fi
    printf '%s\n' "$t"
}

# --- the static libpcap, compiled by zig for the glibc baseline --------------
PCAP_CONFIGURE=(--disable-shared --enable-ipv6 --disable-remote --disable-dbus --disable-rdma
    --disable-bluetooth --disable-usb --disable-netmap --without-libnl --without-dag
    --without-septel --without-snf --without-turbocap --without-dpdk --with-pcap=linux)
PCAP_CFLAGS="-O2 -g -fPIC"
TARBALL=$(libpcap_tarball)
PCAP_VERSION=$(basename "$TARBALL" | sed -E 's/^libpcap_([0-9.]+)\.orig.*/\1/')
PCAP_KEY=$PCAP_VERSION-zig$ZIG_VERSION-$(printf '%s\n' "${PCAP_CONFIGURE[*]}" "$PCAP_CFLAGS" "$ZIG_TARGET" |
    sha256sum | cut -c1-12)
PCAP_PREFIX=$CACHE/libpcap/$PCAP_KEY/prefix

build_libpcap() {
    [ -f "$PCAP_PREFIX/lib/libpcap.a" ] && return 0
    log "building static libpcap $PCAP_VERSION ($PCAP_KEY)"
    local dir=$CACHE/libpcap/$PCAP_KEY
    rm -rf "$dir" && mkdir -p "$dir/build"
    tar -xf "$TARBALL" -C "$dir/build" --strip-components=1
    (cd "$dir/build" &&
        ./configure --prefix="$dir/prefix.tmp" "${PCAP_CONFIGURE[@]}" \
            CC="zig cc -target $ZIG_TARGET" AR="zig ar" RANLIB="zig ranlib" \
            CFLAGS="$PCAP_CFLAGS" >&2 &&
        make -j2 >&2 && make install >&2)
    # Nothing beyond libc may be needed: the archive's pkg-config file says so.
    if grep -E '^Libs.private:.*-l' "$dir/prefix.tmp/lib/pkgconfig/libpcap.pc" >/dev/null 2>&1; then
        log "libpcap wants more libraries: $(grep '^Libs.private' "$dir/prefix.tmp/lib/pkgconfig/libpcap.pc")"
        return 1
    fi
    mv "$dir/prefix.tmp" "$PCAP_PREFIX"
    rm -rf "$dir/build"
}
build_libpcap

# --- the binaries --------------------------------------------------------------
# The pcap crate's build script: LIBPCAP_LIBDIR becomes a link search path
# (and skips pkg-config, which would find the system's libpcap.so);
# LIBPCAP_VER sets the API level it enables (it cannot dlopen an archive).
# The crate declares `#[link(name = "pcap")]`, a dylib, and has no `links` key
# that a .cargo/config.toml override could replace; rustc refuses to override
# it with `-l static:-bundle=pcap`, and zig's linker, unlike GNU ld, never
# falls back from a missing libpcap.so to libpcap.a under -Bdynamic. So the
# search folder holds a "libpcap.so" that is a linker script naming the
# archive: the link takes libpcap.a, and no NEEDED entry is written.
PCAP_LINK=$CACHE/libpcap/$PCAP_KEY/link
mkdir -p "$PCAP_LINK"
printf 'INPUT(%s)\n' "$PCAP_PREFIX/lib/libpcap.a" >"$PCAP_LINK/libpcap.so"
ZTARGET=$CACHE/target/zig$ZIG_VERSION-czb$CZB_VERSION-$PCAP_KEY
mapfile -t BINS < <(cargo metadata --no-deps --format-version 1 --manifest-path "$ROOT/Cargo.toml" |
    jq -r '.packages[] | select(.name == "xrpcapd" or .name == "xrpcap-sensor")
        | .targets[] | select(.kind | index("bin")) | .name' | sort)
log "building ${BINS[*]} ($PROFILE) in $ZTARGET"
start=$(date +%s)
# The XDP object of agent/build.rs is compiled by the host's clang -target bpf
# (CLANG): a BPF object, not linked into the glibc world. ring's C and
# assembly go through zig cc (CC_<target> set by cargo-zigbuild).
# --build-id: debuggers and debuginfod match the .debug file by it.
# Target RUSTFLAGS only: with --target, build scripts are built without them.
CARGO_TARGET_DIR=$ZTARGET LIBPCAP_LIBDIR=$PCAP_LINK LIBPCAP_VER=$PCAP_VERSION \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,--build-id=sha1" \
    cargo-zigbuild zigbuild --locked -p xrpcapd -p xrpcap-sensor --bins \
    --target "$RUST_TARGET.$GLIBC" --profile "$PROFILE" >&2
log "cargo zigbuild took $(($(date +%s) - start)) s"

# --- strip, debug files beside -------------------------------------------------
rm -rf "$OUT" && mkdir -p "$OUT"
for b in "${BINS[@]}"; do
    src=$ZTARGET/$RUST_TARGET/$PROFILE_DIR/$b
    [ -f "$src" ] || {
        log "missing $src"
        exit 1
    }
    objcopy --only-keep-debug --compress-debug-sections=zlib "$src" "$OUT/$b.debug"
    chmod 0644 "$OUT/$b.debug"
    # The debuglink records the debug file's name and CRC: made in $OUT.
    (cd "$OUT" && objcopy --strip-all --add-gnu-debuglink="$b.debug" "$src" "$b")
    log "$b: $(stat -c %s "$src") bytes unstripped, $(stat -c %s "$OUT/$b") stripped, $(stat -c %s "$OUT/$b.debug") debug"
done
echo "$OUT"
