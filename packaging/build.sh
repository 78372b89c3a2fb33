#!/usr/bin/env bash
# Builds the xrpcapd packages: a .deb (dpkg-deb) and an .rpm (rpmbuild), from
# the binaries of one cargo profile. Output goes to target/packages/.
#
#   packaging/build.sh              # release build, deb + rpm
#   PROFILE=dev packaging/build.sh    # package the debug binaries (tests)
#   FORMATS=deb packaging/build.sh
#
# The package installs /usr/sbin/xrpcapd, /usr/bin/xrpcap-sensor, the systemd
# unit, /etc/xrpcapd/rpcapd.ini (a conffile, from packaging/rpcapd.ini) and the docs.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PROFILE=${PROFILE:-release}
FORMATS=${FORMATS:-deb rpm}
# FAST=1: light compression (the debug-build check in test.sh), not for release.
FAST=${FAST:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET_DIR/packages
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$VERSION" ] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }
ARCH_DEB=$(dpkg --print-architecture 2>/dev/null || echo amd64)
ARCH_RPM=$(uname -m)

if [ "$PROFILE" = release ]; then
    cargo build --release -p xrpcapd -p xrpcap-sensor
else
    cargo build --profile "$PROFILE" -p xrpcapd -p xrpcap-sensor
fi
BIN=$TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

# The installed tree, shared by both formats.
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
tree=$STAGE/root
install -D -m 0755 "$BIN/xrpcapd" "$tree/usr/sbin/xrpcapd"
install -D -m 0755 "$BIN/xrpcap-sensor" "$tree/usr/bin/xrpcap-sensor"
install -D -m 0644 packaging/xrpcapd.service "$tree/lib/systemd/system/xrpcapd.service"
install -D -m 0644 packaging/rpcapd.ini "$tree/etc/xrpcapd/rpcapd.ini"
install -D -m 0644 docs/rpcapd.ini.example "$tree/usr/share/doc/xrpcapd/rpcapd.ini.example"
install -D -m 0644 README.md "$tree/usr/share/doc/xrpcapd/README.md"
install -D -m 0644 sensor/README.md "$tree/usr/share/doc/xrpcapd/xrpcap-sensor.md"
mkdir -p "$OUT"

DESC="Remote packet capture forwarder (RPCAP agent) and reference sensor"
LONG="xrpcapd captures the frames of chosen interfaces and forwards them to a
remote sensor over RPCAP, as libpcap's and ExtraHop's rpcapd do (same
rpcapd.ini, flags and wire formats, udpstr included). xrpcap-sensor receives
agents and writes pcap/pcapng."

build_deb() {
    local d=$STAGE/deb
    cp -a "$tree" "$d"
    mkdir -p "$d/DEBIAN"
    cat >"$d/DEBIAN/control" <<CTL
Package: xrpcapd
Version: $VERSION
Architecture: $ARCH_DEB
Maintainer: xrpcapd developers <xrpcapd@localhost>
Section: net
Priority: optional
Depends: libc6, libpcap0.8
Installed-Size: $(du -sk "$tree" | cut -f1)
Description: $DESC
$(echo "$LONG" | sed 's/^/ /')
CTL
    echo /etc/xrpcapd/rpcapd.ini >"$d/DEBIAN/conffiles"
    cat >"$d/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
SH
    cat >"$d/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop xrpcapd.service >/dev/null 2>&1 || true
fi
SH
    chmod 0755 "$d/DEBIAN/postinst" "$d/DEBIAN/prerm"
    local deb=$OUT/xrpcapd_${VERSION}_${ARCH_DEB}.deb
    local z=(-Zxz)
    [ "$FAST" = 1 ] && z=(-Zgzip -z1)
    fakeroot dpkg-deb --build "${z[@]}" "$d" "$deb" >/dev/null
    echo "$deb"
}

build_rpm() {
    command -v rpmbuild >/dev/null || {
        echo "build.sh: rpmbuild missing (apt-get install rpm)" >&2
        return 1
    }
    local top=$STAGE/rpm
    mkdir -p "$top"/{BUILD,RPMS,SOURCES,SPECS,SRPMS,BUILDROOT}
    cat >"$top/SPECS/xrpcapd.spec" <<SPEC
Name: xrpcapd
Version: $VERSION
Release: 1
Summary: $DESC
License: MIT OR Apache-2.0
Requires: libpcap
%description
$LONG
%install
cp -a $tree/. %{buildroot}/
%files
/usr/sbin/xrpcapd
/usr/bin/xrpcap-sensor
/lib/systemd/system/xrpcapd.service
%config(noreplace) /etc/xrpcapd/rpcapd.ini
%doc /usr/share/doc/xrpcapd
%post
[ -d /run/systemd/system ] && systemctl daemon-reload >/dev/null 2>&1 || :
SPEC
    local z=()
    [ "$FAST" = 1 ] && z=(--define "_binary_payload w1.gzdio")
    rpmbuild --quiet -bb --define "_topdir $top" --define "__strip /bin/true" "${z[@]}" \
        --define "debug_package %{nil}" --define "_build_id_links none" \
        "$top/SPECS/xrpcapd.spec"
    local rpm
    rpm=$(find "$top/RPMS" -name '*.rpm' | head -n1)
    cp "$rpm" "$OUT/"
    echo "$OUT/$(basename "$rpm")"
}

for f in $FORMATS; do
    case $f in
        deb) build_deb ;;
        rpm) build_rpm ;;
        *) echo "build.sh: unknown format '$f' (deb, rpm)" >&2; exit 1 ;;
    esac
done
