#!/usr/bin/env bash
# Checks the two systemd units: `systemd-analyze verify` (directives, the
# binaries they run) and `systemd-analyze security --offline=yes` with an
# exposure of at most 2.0 for each; prints the exposure figures. Also
# checks that sysusers.d/ creates both system users.
#
#   packaging/check-units.sh [UNIT_DIR [BIN_DIR]]
#
# UNIT_DIR holds xrpcapd.service and xrpcap-sensor.service (default: this
# folder; packaging/check.sh passes the ones extracted from the packages).
# BIN_DIR holds xrpcapd and xrpcap-sensor (default: $CARGO_TARGET_DIR/debug);
# ExecStart/ExecReload are pointed at them, since the packages are not
# installed on this machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
units=${1:-$here}
bins=${2:-${CARGO_TARGET_DIR:-$here/../target}/debug}
max=2.0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "check-units: $*" >&2; exit 1; }

for b in xrpcapd xrpcap-sensor; do
    [ -x "$bins/$b" ] || fail "$bins/$b missing: build the binaries (cargo build --bins) or pass BIN_DIR"
done
for u in xrpcapd.service xrpcap-sensor.service; do
    [ -f "$units/$u" ] || fail "$units/$u missing"
    sed -e "s#/usr/sbin/xrpcapd#$bins/xrpcapd#g" \
        -e "s#/usr/bin/xrpcap-sensor#$bins/xrpcap-sensor#g" \
        "$units/$u" >"$tmp/$u"
done

# verify exits 0 on mere warnings (an unknown key): any output fails too.
if ! out=$(systemd-analyze verify --man=no "$tmp/xrpcapd.service" "$tmp/xrpcap-sensor.service" 2>&1) \
    || [ -n "$out" ]; then
    fail "systemd-analyze verify:"$'\n'"$out"
fi
echo "systemd-analyze verify: ok"

# The sysusers.d files: systemd-sysusers would create both users and groups.
mkdir -p "$tmp/root/etc"
users=$(systemd-sysusers --dry-run --root="$tmp/root" "$here/sysusers.d/xrpcapd.conf" \
    "$here/sysusers.d/xrpcap-sensor.conf" 2>&1) || fail "systemd-sysusers:"$'\n'"$users"
for u in xrpcapd xrpcap-sensor; do
    grep -q "Creating user '$u'" <<<"$users" || fail "sysusers.d creates no user $u:"$'\n'"$users"
done
echo "systemd-sysusers: ok"

status=0
for u in xrpcapd.service xrpcap-sensor.service; do
    # --threshold=20: exits non-zero above an exposure of 2.0.
    if out=$(systemd-analyze security --offline=yes --threshold=20 "$tmp/$u" 2>&1); then
        ok=yes
    else
        ok=no
    fi
    level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
    [ -n "$level" ] || fail "$u: no exposure level in:"$'\n'"$out"
    echo "$u: exposure $level (max $max)"
    if [ "$ok" = no ] || awk -v l="$level" -v m="$max" 'BEGIN { exit !(l > m) }'; then
        grep '✗' <<<"$out" >&2 || true
        echo "check-units: $u: exposure $level above $max" >&2
        status=1
    fi
done
exit $status
