#!/usr/bin/env bash
# Checks the output of packaging/portable.sh: every binary of DIR
#   - needs no glibc symbol version above the baseline (2.26; readelf -V and
#     objdump -T, the highest version seen is printed),
#   - has only NEEDED entries of glibc's own libraries and libgcc_s (no
#     libpcap: it is linked statically), the list printed,
#   - is stripped, with its NAME.debug beside it named by .gnu_debuglink,
#   - runs: --version, and for xrpcapd `--check-config` on the example ini and
#     on an ini with `LocalFilter = tcp port 80` (libpcap compiles the filter;
#     a broken filter must fail),
#   - and runs the same inside a Debian bullseye root (glibc 2.31): the first
#     of $XRPCAP_PORTABLE_ROOT, /var/cache/xrpcapd-ci/roots/bullseye-minbase,
#     a complete roots/bullseye-*/root; when none exists a minbase bullseye
#     root is debootstrapped once into roots/bullseye-minbase
#     (XRPCAP_PORTABLE_ROOT=none skips this part). DIR is bind-mounted
#     read-only into a private mount namespace: the root is not modified.
#
#   packaging/check-portable.sh DIR
#   packaging/check-portable.sh       # DIR from `packaging/portable.sh dev`
#                                     # (XRPCAP_PORTABLE_PROFILE=release)
#
# Exit status 0 when all pass, 1 otherwise (every failure is listed).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
if [ $# -eq 0 ]; then
    # packaging/check.sh: build (or reuse) the portable binaries first; the
    # dev profile, whose warm rebuild is cheap, has the same baseline.
    DIR=$(packaging/portable.sh "${XRPCAP_PORTABLE_PROFILE:-dev}" | tail -n 1)
else
    DIR=$1
fi
DIR=$(cd "$DIR" && pwd)
BASELINE=${XRPCAP_GLIBC_BASELINE:-2.26}
CACHE=${XRPCAP_CI_CACHE:-/var/cache/xrpcapd-ci}
ALLOWED_NEEDED='^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2)$'

fail=0
ok() { printf 'check-portable: ok   %s\n' "$*"; }
bad() {
    printf 'check-portable: FAIL %s\n' "$*"
    fail=1
}

mapfile -t BINS < <(find "$DIR" -maxdepth 1 -type f -perm -u+x ! -name '*.debug' -printf '%f\n' | sort)
[ "${#BINS[@]}" -gt 0 ] || {
    bad "no binaries in $DIR"
    exit 1
}
wants=(xrpcapd xrpcap-sensor)
[ -f agent/src/bin/xrpcapd-setup.rs ] && wants+=(xrpcapd-setup)
for want in "${wants[@]}"; do
    [ -x "$DIR/$want" ] || bad "$want missing from $DIR"
done

# Highest of a list of dotted versions.
vmax() { sort -uV | tail -n 1; }

max_seen=
for b in "${BINS[@]}"; do
    f=$DIR/$b
    # Symbol versions the binary requires (readelf -V: .gnu.version_r) and
    # those of its dynamic symbols (objdump -T): both must stay <= baseline.
    v_req=$(readelf -V "$f" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | vmax)
    v_sym=$(objdump -T "$f" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | vmax)
    v=$(printf '%s\n%s\n' "$v_req" "$v_sym" | vmax)
    max_seen=$(printf '%s\n%s\n' "$max_seen" "$v" | sed '/^$/d' | vmax)
    if [ "$(printf '%s\n%s\n' "$v" "$BASELINE" | vmax)" = "$BASELINE" ]; then
        ok "$b: highest glibc symbol version GLIBC_$v (baseline $BASELINE)"
    else
        bad "$b: needs GLIBC_$v, above the baseline $BASELINE:"
        objdump -T "$f" | grep -E "GLIBC_${v//./\\.}([^.0-9]|$)" | sed 's/^/    /' | head -n 20  || true
    fi

    mapfile -t needed < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    printf 'check-portable:      %s NEEDED: %s\n' "$b" "${needed[*]}"
    for n in "${needed[@]}"; do
        if ! [[ $n =~ $ALLOWED_NEEDED ]]; then
            bad "$b: NEEDED $n is not one of glibc's libraries or libgcc_s"
        fi
    done
    if printf '%s\n' "${needed[@]}" | grep -q pcap; then
        bad "$b: depends on a libpcap soname"
    fi

    if readelf -S "$f" | grep -Eq '\.(debug_info|symtab)[[:space:]]'; then
        bad "$b: not stripped (.debug_info or .symtab present)"
    else
        ok "$b: stripped"
    fi
    link=$(readelf --string-dump=.gnu_debuglink "$f" 2>/dev/null | sed -n 's/^ *\[ *0\] *//p')
    if [ "$link" = "$b.debug" ] && [ -f "$DIR/$b.debug" ] &&
        readelf -S "$DIR/$b.debug" 2>/dev/null | grep -q '\.debug_info'; then
        ok "$b: debug file $b.debug ($(stat -c %s "$DIR/$b.debug") bytes) named by .gnu_debuglink"
    else
        bad "$b: no .gnu_debuglink to a $b.debug with .debug_info beside it (link: '${link:-none}')"
    fi
done
printf 'check-portable: max glibc symbol version: GLIBC_%s\n' "$max_seen"

# The run checks, here or inside a root (PREFIX runs the command there; D is
# where DIR is seen).
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
printf 'LocalFilter = tcp port 80\n' >"$TMP/filter.ini"
printf 'LocalFilter = tcp port eighty (\n' >"$TMP/bad-filter.ini"
EXAMPLE=$ROOT/docs/rpcapd.ini.example
[ -f "$EXAMPLE" ] || EXAMPLE=$ROOT/rpcapd.ini.example
cp "$EXAMPLE" "$TMP/example.ini"

run_checks() {
    local where=$1 d=$2 t=$3
    shift 3
    local b out
    for b in "${BINS[@]}"; do
        if out=$("$@" "$d/$b" --version 2>&1); then
            ok "$where: $b --version: $out"
        else
            bad "$where: $b --version failed: $out"
        fi
    done
    [ -x "$DIR/xrpcapd" ] || return 0
    if out=$("$@" "$d/xrpcapd" --check-config -f "$t/example.ini" 2>&1); then
        ok "$where: xrpcapd --check-config on $(basename "$EXAMPLE")"
    else
        bad "$where: xrpcapd --check-config on $(basename "$EXAMPLE") failed: $out"
    fi
    if out=$("$@" "$d/xrpcapd" --check-config -f "$t/filter.ini" 2>&1) &&
        grep -q 'LocalFilter = tcp port 80' <<<"$out"; then
        ok "$where: static libpcap compiles LocalFilter = tcp port 80"
    else
        bad "$where: LocalFilter = tcp port 80 did not check: $out"
    fi
    if out=$("$@" "$d/xrpcapd" --check-config -f "$t/bad-filter.ini" 2>&1); then
        bad "$where: a broken LocalFilter passed --check-config"
    elif grep -q 'LocalFilter.*libpcap' <<<"$out"; then
        ok "$where: a broken LocalFilter is refused by libpcap"
    else
        bad "$where: a broken LocalFilter failed without libpcap's message: $out"
    fi
}
run_checks host "$DIR" "$TMP"

# --- inside a bullseye root ----------------------------------------------------
find_root() {
    local r
    if [ -n "${XRPCAP_PORTABLE_ROOT:-}" ]; then
        printf '%s\n' "$XRPCAP_PORTABLE_ROOT"
        return
    fi
    for r in "$CACHE/roots/bullseye-minbase/root" "$CACHE"/roots/bullseye-*/root; do
        if [ -x "$r/bin/sh" ] && [ -d "$r/mnt" ] &&
            grep -q 'Base system installed successfully' "$(dirname "$r")/debootstrap.log" 2>/dev/null; then
            printf '%s\n' "$r"
            return
        fi
    done
}
ROOTFS=$(find_root)
if [ -z "$ROOTFS" ] && [ "$(id -u)" -eq 0 ] && command -v debootstrap >/dev/null; then
    r=$CACHE/roots/bullseye-minbase
    printf 'check-portable: no bullseye root: debootstrap --variant=minbase bullseye %s (once)\n' "$r"
    rm -rf "$r" && mkdir -p "$r"
    if debootstrap --variant=minbase bullseye "$r/root" http://deb.debian.org/debian \
        >"$r/debootstrap.log" 2>&1; then
        ROOTFS=$r/root
    else
        bad "debootstrap of $r failed: see $r/debootstrap.log"
    fi
fi
if [ "$ROOTFS" = none ]; then
    printf 'check-portable: skip the bullseye root (XRPCAP_PORTABLE_ROOT=none)\n'
elif [ -z "$ROOTFS" ]; then
    bad "no bullseye root to run the binaries in (needs root and debootstrap)"
elif [ "$(id -u)" -ne 0 ]; then
    bad "running in $ROOTFS needs root (chroot, mount)"
else
    glibc=$(basename "$(ls "$ROOTFS"/lib/x86_64-linux-gnu/libc-2.*.so 2>/dev/null | head -n 1)" .so)
    # A private mount namespace: a tmpfs on the root's /mnt holding DIR
    # (bind, read-only) and the ini files; all gone with the namespace.
    export -f run_checks ok bad
    export BINS_LIST="${BINS[*]}" DIR EXAMPLE
    out=$(unshare -m --propagation private bash -c '
        set -euo pipefail
        fail=0
        read -ra BINS <<<"$BINS_LIST"
        mount -t tmpfs tmpfs "$1/mnt"
        mkdir "$1/mnt/bin" "$1/mnt/ini"
        cp "$2"/*.ini "$1/mnt/ini/"
        mount --bind -o ro "$DIR" "$1/mnt/bin"
        run_checks "bullseye ($3)" /mnt/bin /mnt/ini chroot "$1"
        exit $fail
    ' _ "$ROOTFS" "$TMP" "${glibc:-?}" 2>&1) || fail=1
    printf '%s\n' "$out"
fi

if [ "$fail" -ne 0 ]; then
    echo "check-portable: FAILED" >&2
    exit 1
fi
echo "check-portable: all passed"
