#!/usr/bin/env bash
# Builds the packages fast (FAST=1, binaries of XRPCAP_PKG_BIN or, by default,
# stripped copies of the debug build with symbol-only .debug files) and checks
# them: file lists, conffiles, modes, dependencies, maintainer scripts,
# lintian (no error), rpmlint (no error), `rpm -qp --scripts` lifecycle calls,
# `rpm -qpR` only the allowed requires, the man pages; then
# packaging/check-units.sh and packaging/check-portable.sh when present.
# Called by scripts/test.sh (stage "packaging").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "packaging check: $*" >&2; exit 1; }
note() { echo "packaging check: $*"; }

if [ -z "${XRPCAP_PKG_BIN:-}" ]; then
    # The debug build, stripped; its .debug keeps the symbol table only (the
    # DWARF of a debug build is ~100 MB): enough to check the dbgsym packages.
    cargo build -q -p xrpcapd -p xrpcap-sensor --bins
    export XRPCAP_PKG_BIN=$tmp/bin
    mkdir -p "$XRPCAP_PKG_BIN"
    for b in xrpcapd xrpcapd-setup xrpcap-sensor; do
        [ -x "$TARGET_DIR/debug/$b" ] || continue
        objcopy --only-keep-debug -R '.debug_*' "$TARGET_DIR/debug/$b" "$XRPCAP_PKG_BIN/$b.debug"
        (cd "$XRPCAP_PKG_BIN" && objcopy --strip-all --add-gnu-debuglink="$b.debug" "$TARGET_DIR/debug/$b" "$b")
    done
fi
rm -rf "$TARGET_DIR/packages"
mapfile -t built < <(FAST=1 packaging/build.sh)
pkg() { printf '%s\n' "${built[@]}" | grep -E "/$1" | head -n1; }
deb_a=$(pkg 'xrpcapd_.*\.deb$'); deb_s=$(pkg 'xrpcap-sensor_.*\.deb$')
deb_ad=$(pkg 'xrpcapd-dbgsym_.*\.deb$'); deb_sd=$(pkg 'xrpcap-sensor-dbgsym_.*\.deb$')
rpm_a=$(pkg 'xrpcapd-[0-9].*\.rpm$'); rpm_s=$(pkg 'xrpcap-sensor-[0-9].*\.rpm$')
rpm_ad=$(pkg 'xrpcapd-debuginfo-.*\.rpm$'); rpm_sd=$(pkg 'xrpcap-sensor-debuginfo-.*\.rpm$')
for v in deb_a deb_s deb_ad deb_sd rpm_a rpm_s rpm_ad rpm_sd; do
    [ -n "${!v}" ] || fail "not built: $v (got: ${built[*]})"
done

# --- contents ------------------------------------------------------------------
has() { grep -qx -- "$2" <<<"$1" || fail "$3 lacks $2"; }
agent_files=(/usr/sbin/xrpcapd /etc/xrpcapd/rpcapd.ini /usr/share/doc/xrpcapd/examples/default-xrpcapd
    /usr/lib/sysusers.d/xrpcapd.conf /usr/share/man/man8/xrpcapd.8.gz
    /usr/share/man/man5/rpcapd.ini.5.gz /usr/share/doc/xrpcapd/rpcapd.ini.example
    /usr/share/doc/xrpcapd/README.md)
sensor_files=(/usr/bin/xrpcap-sensor /etc/default/xrpcap-sensor
    /usr/lib/sysusers.d/xrpcap-sensor.conf /usr/share/man/man8/xrpcap-sensor.8.gz)
[ -x "$XRPCAP_PKG_BIN/xrpcapd-setup" ] && agent_files+=(/usr/sbin/xrpcapd-setup /usr/share/man/man8/xrpcapd-setup.8.gz)
for ex in packaging/examples/*; do
    [ -f "$ex" ] && agent_files+=("/usr/share/doc/xrpcapd/examples/$(basename "$ex")")
done

l=$(dpkg-deb -c "$deb_a" | awk '{print substr($6, 2)}')
for f in "${agent_files[@]}" /usr/share/doc/xrpcapd/copyright /usr/share/doc/xrpcapd/changelog.Debian.gz \
    /usr/lib/systemd/system/xrpcapd.service; do has "$l" "$f" "$deb_a"; done
grep -q '^-rw-r----- .* ./etc/xrpcapd/rpcapd.ini$' <<<"$(dpkg-deb -c "$deb_a")" || fail "deb: rpcapd.ini is not 0640"
l=$(dpkg-deb -c "$deb_s" | awk '{print substr($6, 2)}')
for f in "${sensor_files[@]}" /usr/share/doc/xrpcap-sensor/copyright \
    /usr/lib/systemd/system/xrpcap-sensor.service; do has "$l" "$f" "$deb_s"; done
has "$(dpkg-deb -c "$deb_ad" | awk '{print substr($6, 2)}')" /usr/lib/debug/usr/sbin/xrpcapd.debug "$deb_ad"
has "$(dpkg-deb -c "$deb_sd" | awk '{print substr($6, 2)}')" /usr/lib/debug/usr/bin/xrpcap-sensor.debug "$deb_sd"
grep -q systemd <<<"$(dpkg-deb -c "$deb_ad")" && fail "$deb_ad carries a unit"

for d in "$deb_a" "$deb_s"; do
    [ "$(dpkg-deb -f "$d" Depends)" = "libc6 (>= 2.26), systemd | systemd-standalone-sysusers" ] ||
        fail "$d: Depends: $(dpkg-deb -f "$d" Depends)"
done
dpkg-deb -e "$deb_a" "$tmp/ctl"
grep -qx /etc/xrpcapd/rpcapd.ini "$tmp/ctl/conffiles" || fail "rpcapd.ini is not a conffile"
# Pre-seeding writes /etc/default/xrpcapd before dpkg -i: a conffile there
# would stop an unattended install at the conffile prompt.
grep -qx /etc/default/xrpcapd "$tmp/ctl/conffiles" && fail "/etc/default/xrpcapd is a conffile"
# cargo-deb's sysusers snippet names the staged file: it must be the installed name.
grep -q 'systemd-sysusers .*sysusers.conf' "$tmp/ctl/postinst" && fail "postinst: systemd-sysusers of a file that does not exist"
grep -q 'systemd-sysusers xrpcapd.conf' "$tmp/ctl/postinst" || fail "postinst: no systemd-sysusers"
grep -q 'useradd --system' "$tmp/ctl/postinst" || fail "postinst: no useradd fallback"
grep -q 'xrpcapd-setup --no-start' "$tmp/ctl/postinst" || fail "postinst: no xrpcapd-setup"
grep -q 'deb-systemd-helper enable xrpcapd.service' "$tmp/ctl/postinst" || fail "postinst: no enable"
grep -q '_dh_action=restart' "$tmp/ctl/postinst" || fail "postinst: no restart on upgrade"
grep -q 'deb-systemd-invoke stop xrpcapd.service' "$tmp/ctl/prerm" || fail "prerm: no stop"
grep -q 'deb-systemd-helper purge xrpcapd.service' "$tmp/ctl/postrm" || fail "postrm: no purge of the links"
grep -q 'rm -rf /etc/xrpcapd' "$tmp/ctl/postrm" || fail "postrm: purge keeps /etc/xrpcapd"
for s in "$tmp"/ctl/p*; do sh -n "$s" || fail "$s: syntax"; done

# --- man pages -------------------------------------------------------------------
dpkg-deb -x "$deb_a" "$tmp/root"
for m in "$tmp"/root/usr/share/man/man*/*.gz; do
    w=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l "$m" 2>&1 >/dev/null || true)
    [ -z "$w" ] || fail "$(basename "$m"): $w"
done
zcat "$tmp/root/usr/share/man/man5/rpcapd.ini.5.gz" | grep -q 'ActiveClient' || fail "rpcapd.ini(5) lacks ActiveClient"

"$tmp/root/usr/sbin/xrpcapd" --check-config -f "$tmp/root/etc/xrpcapd/rpcapd.ini" >"$tmp/cc" 2>&1 ||
    fail "the packaged xrpcapd refuses the packaged rpcapd.ini: $(cat "$tmp/cc")"

# --- lintian ----------------------------------------------------------------------
# Errors fail; warnings are listed. Overrides (none yet) would go in
# packaging/deb/*/lintian-overrides, each with a comment giving its reason.
for d in "$deb_a" "$deb_s" "$deb_ad" "$deb_sd"; do
    out=$(lintian --tag-display-limit 0 "$d" 2>&1 || true)
    printf "%s\n" "$out" | grep -E "^[EWI]: " | sed "s/^/  lintian: /" || true
    grep -q '^E: ' <<<"$out" && fail "lintian errors in $(basename "$d")"
done

# --- rpm --------------------------------------------------------------------------
rl=$(rpm -qlp "$rpm_a")
for f in "${agent_files[@]}" /usr/lib/systemd/system/xrpcapd.service; do has "$rl" "$f" "$rpm_a"; done
rl=$(rpm -qlp "$rpm_s")
for f in "${sensor_files[@]}" /usr/lib/systemd/system/xrpcap-sensor.service; do has "$rl" "$f" "$rpm_s"; done
has "$(rpm -qlp "$rpm_ad")" /usr/lib/debug/usr/sbin/xrpcapd.debug "$rpm_ad"
grep -qx /etc/xrpcapd/rpcapd.ini <<<"$(rpm -qp --configfiles "$rpm_a")" || fail "rpm: rpcapd.ini is not %config"
grep -qx '/etc/xrpcapd/rpcapd.ini xrpcapd -rw-r-----' \
    <<<"$(rpm -qp --qf '[%{FILENAMES} %{FILEGROUPNAME} %{FILEMODES:perms}\n]' "$rpm_a")" || fail "rpm: rpcapd.ini is not root:xrpcapd 0640"
# Requires: glibc (Amazon Linux 2 has 2.26) and the scriptlets' shell only;
# rpmlib() entries are rpm's own features, config(NAME) the package itself.
for r in "$rpm_a" "$rpm_s" "$rpm_ad" "$rpm_sd"; do
    bad=$(rpm -qpR "$r" | grep -v -E "^(glibc >= 2\.26|/bin/sh|rpmlib\(.*|config\($(rpm -qp --qf %{NAME} "$r")\) = .*)$" || true)
    [ -z "$bad" ] || fail "$(basename "$r") requires: $bad"
done
s=$(rpm -qp --scripts "$rpm_a")
for want in 'useradd --system' 'systemctl enable xrpcapd.service' 'systemctl start xrpcapd.service' \
    'systemctl try-restart xrpcapd.service' 'disable --now xrpcapd.service' 'systemctl daemon-reload' \
    'xrpcapd-setup --no-start'; do
    grep -qF -- "$want" <<<"$s" || fail "rpm scripts lack: $want"
done
[ -z "$(rpm -qp --scripts "$rpm_ad")" ] || fail "$rpm_ad has scriptlets"
for r in "$rpm_a" "$rpm_s" "$rpm_ad" "$rpm_sd"; do
    out=$(rpmlint -f packaging/rpm/rpmlintrc "$r" 2>&1 || true)
    printf '%s\n' "$out" | grep -E ': (E|W): ' | sed 's/^/  rpmlint: /' || true
    grep -qE ': E: ' <<<"$out" && fail "rpmlint errors in $(basename "$r")"
done

# --- the other checks of packaging/ ----------------------------------------------
for c in packaging/check-units.sh packaging/check-portable.sh; do
    if [ -x "$c" ]; then "$c" || fail "$c"; else note "$c: not present, skipped"; fi
done
note "ok (${built[*]##*/})"
