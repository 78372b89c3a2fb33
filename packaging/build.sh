#!/usr/bin/env bash
# Builds the packages: xrpcapd and xrpcap-sensor as .deb (cargo-deb) and .rpm
# (cargo-generate-rpm), each with its debug-symbols package (-dbgsym /
# -debuginfo) when the binaries come with NAME.debug files. The metadata is
# [package.metadata.deb] / [package.metadata.generate-rpm] in agent/Cargo.toml
# and sensor/Cargo.toml; this script stages their files and runs the tools.
# Prints the path of every package built; output in $CARGO_TARGET_DIR/packages/.
#
#   packaging/build.sh                          # portable release binaries
#   XRPCAP_PKG_BIN=DIR packaging/build.sh       # binaries (+ *.debug) of DIR
#   XRPCAP_PKG_VERSION=0.1.1 packaging/build.sh # another version (upgrade tests)
#   FORMATS=deb FAST=1 packaging/build.sh       # one format, light compression
#
# Needs cargo-deb and cargo-generate-rpm (scripts/setup.sh installs them).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
OUT=$TARGET_DIR/packages
FORMATS=${FORMATS:-deb rpm}
FAST=${FAST:-0}
MAINTAINER="xrpcapd maintainers <maintainers@users.noreply.r-seed-dc2b9467.example>"
VERSION=${XRPCAP_PKG_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)}
[ -n "$VERSION" ] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }
case "$VERSION" in *-*) echo "build.sh: version '$VERSION' has a '-' (rpm refuses it)" >&2; exit 1 ;; esac

log() { echo "build.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --- binaries ----------------------------------------------------------------
if [ -n "${XRPCAP_PKG_BIN:-}" ]; then
    BIN=$XRPCAP_PKG_BIN
elif [ -x packaging/portable.sh ]; then
    BIN=$(packaging/portable.sh release | tail -n1)
else
    die "no packaging/portable.sh: set XRPCAP_PKG_BIN=DIR (binaries, stripped, NAME.debug beside)"
fi
[ -x "$BIN/xrpcapd" ] && [ -x "$BIN/xrpcap-sensor" ] || die "$BIN lacks xrpcapd or xrpcap-sensor"

# --- stage -------------------------------------------------------------------
# The tools run with CARGO_TARGET_DIR=$STAGE, so the metadata's
# `target/release/…` sources name $STAGE/release/…; cargo-deb's unit-scripts
# is the fixed path ../target/pkgstage/release/units/ (from agent/, sensor/).
STAGE=$ROOT/target/pkgstage
R=$STAGE/release
rm -rf "$STAGE"
mkdir -p "$R/units" "$OUT"
for p in xrpcapd xrpcap-sensor; do mkdir -p "$R/$p"/{dbg,doc,man5,man8,examples}; done
mkdir -p "$R/xrpcapd/sbin" "$R/xrpcap-sensor/bin"

DBGSYM=1
stage_bin() { # NAME DEST-DIR DEBUG-DIR [optional]
    local b=$1
    if [ ! -x "$BIN/$b" ]; then
        [ "${4:-}" = optional ] && return 0
        die "$BIN/$b missing"
    fi
    install -m 0755 "$BIN/$b" "$2/$b"
    if [ -f "$BIN/$b.debug" ]; then
        install -m 0644 "$BIN/$b.debug" "$3/$b.debug"
    else
        DBGSYM=0
    fi
}
stage_bin xrpcapd "$R/xrpcapd/sbin" "$R/xrpcapd/dbg"
stage_bin xrpcapd-setup "$R/xrpcapd/sbin" "$R/xrpcapd/dbg" optional
stage_bin xrpcap-sensor "$R/xrpcap-sensor/bin" "$R/xrpcap-sensor/dbg"
[ "$DBGSYM" = 1 ] || log "no NAME.debug beside the binaries in $BIN: no debug-symbol packages"

# Units: the packaging/ files (cargo-deb matches them by package name).
for u in xrpcapd xrpcap-sensor; do
    [ -f "packaging/$u.service" ] || die "packaging/$u.service missing"
    install -m 0644 "packaging/$u.service" "$R/units/$u.service"
done

# Configuration: the minimal shipped ini (packaging/rpcapd.ini; the full
# example where that file does not exist yet).
ini=packaging/rpcapd.ini
[ -f "$ini" ] || ini=rpcapd.ini.example
install -m 0640 "$ini" "$R/xrpcapd/rpcapd.ini"
example=docs/rpcapd.ini.example
[ -f "$example" ] || example=rpcapd.ini.example
install -m 0644 "$example" "$R/xrpcapd/doc/rpcapd.ini.example"

# sysusers.d files, staged under the name they are installed as: cargo-deb
# (like dh_installsysusers) runs `systemd-sysusers <source basename>` in the
# postinst. /etc/default/xrpcap-sensor is a conffile (the sensor's
# arguments); /etc/default/xrpcapd is not shipped, only its example: it is
# how an operator pre-seeds the sensor before installing, and a conffile
# there would stop an unattended dpkg -i at the conffile prompt.
for p in xrpcapd xrpcap-sensor; do
    install -m 0644 "packaging/sysusers.d/$p.conf" "$R/$p/$p.conf"
done
install -m 0644 packaging/default/xrpcap-sensor "$R/xrpcap-sensor/default"
find packaging/examples -maxdepth 1 -type f -exec install -m 0644 -t "$R/xrpcapd/examples" {} +
install -m 0644 packaging/default/xrpcapd "$R/xrpcapd/examples/default-xrpcapd"

install -m 0644 README.md "$R/xrpcapd/doc/README.md"
install -m 0644 sensor/README.md "$R/xrpcap-sensor/doc/README.md"
for p in xrpcapd xrpcap-sensor; do install -m 0644 packaging/copyright "$R/$p/copyright"; done

# Man pages (packaging/man), compressed as Debian and Fedora ship them.
cargo run -q -p xrpcap-man -- --ini-example "$example" "$STAGE/man" >/dev/null
gzip -9n "$STAGE"/man/*
mv "$STAGE"/man/rpcapd.ini.5.gz "$R/xrpcapd/man5/"
mv "$STAGE"/man/xrpcap-sensor.8.gz "$R/xrpcap-sensor/man8/"
mv "$STAGE"/man/*.8.gz "$R/xrpcapd/man8/"

# A Debian changelog for the version built (cargo-deb compresses it).
date=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
for p in xrpcapd xrpcap-sensor; do
    cat >"$R/$p/changelog" <<CL
$p ($VERSION-1) unstable; urgency=medium

  * Release $VERSION; user-visible changes in CHANGELOG.md of the sources.

 -- $MAINTAINER  $date
CL
done

# --- packages ----------------------------------------------------------------
export CARGO_TARGET_DIR=$STAGE
deb() { # CRATE [VARIANT]
    local args=(deb -p "$1" --no-build --no-strip --deb-version "$VERSION-1" --output "$OUT/")
    [ -n "${2:-}" ] && args+=(--variant "$2")
    [ "$FAST" = 1 ] && args+=(--fast)
    cargo "${args[@]}" | tail -n1
}
rpm() { # DIR [VARIANT]
    local args=(generate-rpm -p "$1" -o "$OUT/" -s "version = \"$VERSION\"")
    [ -n "${2:-}" ] && args+=(--variant "$2")
    [ "$FAST" = 1 ] && args+=(--payload-compress gzip)
    cargo "${args[@]}" >&2
    local name
    local table=package.metadata.generate-rpm
    [ "${2:-main}" = main ] || table+=.variants.$2
    name=$(sed -n "/^\[$table\]/,/^\[/s/^name = \"\(.*\)\"/\1/p" "$1/Cargo.toml" | head -n1)
    ls "$OUT/$name-$VERSION-1".*.rpm
}
for f in $FORMATS; do
    case $f in
        deb)
            deb xrpcapd; deb xrpcap-sensor
            if [ "$DBGSYM" = 1 ]; then deb xrpcapd dbgsym; deb xrpcap-sensor dbgsym; fi
            ;;
        rpm)
            rpm agent main; rpm sensor main
            if [ "$DBGSYM" = 1 ]; then rpm agent debuginfo; rpm sensor debuginfo; fi
            ;;
        *) die "unknown format '$f' (deb, rpm)" ;;
    esac
done
