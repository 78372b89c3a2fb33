#!/usr/bin/env bash
# Builds the packages from the debug binaries and checks them: the file list of
# the .deb and the .rpm, the deb's control data and conffile, the systemd unit
# (systemd-analyze verify), and that the packaged binary accepts the packaged
# configuration. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
mapfile -t built < <(PROFILE=dev FAST=1 packaging/build.sh)
deb=${built[0]}
rpm=${built[1]:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "packaging check: $*" >&2; exit 1; }

want=(./usr/sbin/xrpcapd ./usr/bin/xrpcap-sensor ./lib/systemd/system/xrpcapd.service
      ./etc/xrpcapd/rpcapd.ini ./usr/share/doc/xrpcapd/README.md)
list=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in "${want[@]}"; do grep -qx -- "$f" <<<"$list" || fail "$deb lacks $f"; done
[ "$(dpkg-deb -f "$deb" Package)" = xrpcapd ] || fail "deb Package field"
dpkg-deb -e "$deb" "$tmp/control"
grep -qx /etc/xrpcapd/rpcapd.ini "$tmp/control/conffiles" || fail "rpcapd.ini is not a conffile"

if [ -n "$rpm" ]; then
    rlist=$(rpm -qlp "$rpm")
    for f in "${want[@]}"; do grep -qx -- "${f#.}" <<<"$rlist" || fail "$rpm lacks ${f#.}"; done
    rpm -qp --configfiles "$rpm" | grep -qx /etc/xrpcapd/rpcapd.ini || fail "rpm: rpcapd.ini is not %config"
fi

dpkg-deb -x "$deb" "$tmp/root"
# The unit's directives, checked by systemd itself; ExecStart points at the
# extracted binary since the package is not installed on this machine.
mkdir -p "$tmp/unit"
sed "s#/usr/sbin/xrpcapd#$tmp/root/usr/sbin/xrpcapd#" \
    "$tmp/root/lib/systemd/system/xrpcapd.service" >"$tmp/unit/xrpcapd.service"
systemd-analyze verify --man=no "$tmp/unit/xrpcapd.service" || fail "systemd-analyze verify"
"$tmp/root/usr/sbin/xrpcapd" --check-config -f "$tmp/root/etc/xrpcapd/rpcapd.ini" >/dev/null \
    || fail "the packaged xrpcapd refuses the packaged rpcapd.ini"
echo "packaging: ok ($(basename "$deb")${rpm:+, $(basename "$rpm")})"
