#!/usr/bin/env bash
# Builds upstream libpcap with remote capture (rpcap:// and rpcaps:// clients,
# the reference rpcapd) from Debian's own source package, into a cache folder
# of the repository, then compiles the interop client tests/interop/rpcap_client.c
# against it. The end-to-end tests in tests/e2e/passive.rs use both.
#
#   scripts/libpcap-remote.sh        # prints the install prefix on its last line
#
# Debian's libpcap is built without remote capture and its patches hide the
# remote functions, so the *orig* tarball is built. The deb-src entry lives in
# a private sources list under the cache: the system's apt configuration is
# not touched. Idempotent: a complete cache is reused (well under a second).
# Needs: apt-get (deb-src access to the Debian mirror), gcc, make, flex, bison,
# libssl-dev (TLS, rpcaps://).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CACHE=$ROOT/.cache/libpcap-remote
PREFIX=$CACHE/prefix
CLIENT_SRC=$ROOT/tests/interop/rpcap_client.c
CLIENT_BIN=$CACHE/rpcap_client

log() { printf 'libpcap-remote: %s\n' "$*" >&2; }

build_libpcap() {
    if [ -f "$PREFIX/lib/libpcap.a" ] && [ -x "$PREFIX/sbin/rpcapd" ]; then
        return 0
    fi
    log "building libpcap with remote capture into $PREFIX"
    local apt=$CACHE/apt src=$CACHE/src
    mkdir -p "$apt/lists/partial" "$src"
    # Same mirror and suite as the system's first deb entry.
    local uri suite
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    suite=$(awk '/^Suites:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    uri=${uri:-http://deb.debian.org/debian}
    suite=${suite:-bookworm}
    printf 'deb-src %s %s main\n' "$uri" "$suite" >"$apt/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$apt/lists" -o "Debug::NoLocking=1")
    apt-get "${opts[@]}" update -q >&2
    (cd "$src" && apt-get "${opts[@]}" source --download-only libpcap >&2)
    local orig
    orig=$(ls "$src"/libpcap_*.orig.tar.* | head -n 1)
    [ -n "$orig" ] || { log "no orig tarball downloaded"; return 1; }
    rm -rf "$src/build" && mkdir -p "$src/build"
    tar -xf "$orig" -C "$src/build" --strip-components=1
    # configure detects OpenSSL (libssl-dev) and then builds rpcaps:// support;
    # the optional capture modules are off (their -dev packages are not needed).
    (cd "$src/build" &&
        ./configure --enable-remote --disable-shared --disable-dbus --disable-rdma \
            --disable-bluetooth --disable-usb --prefix="$PREFIX" >&2 &&
        make -j2 >&2 && make install >&2)
}

build_client() {
    if [ -x "$CLIENT_BIN" ] && [ "$CLIENT_BIN" -nt "$CLIENT_SRC" ] && [ "$CLIENT_BIN" -nt "$PREFIX/lib/libpcap.a" ]; then
        return 0
    fi
    log "compiling $CLIENT_SRC"
    # The static libpcap's own link flags (OpenSSL, dbus…) from its pkg-config file.
    local libs
    libs=$(PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig pkg-config --static --libs libpcap)
    gcc -O1 -g -Wall -Werror -I"$PREFIX/include" -o "$CLIENT_BIN.tmp" "$CLIENT_SRC" \
        "$PREFIX/lib/libpcap.a" $libs
    mv "$CLIENT_BIN.tmp" "$CLIENT_BIN"
}

mkdir -p "$CACHE"
# One build at a time (parallel test processes may call this script).
exec 9>"$CACHE/.lock"
flock 9
build_libpcap
build_client
echo "$PREFIX"
