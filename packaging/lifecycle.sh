#!/usr/bin/env bash
# Package lifecycle tests: the .debs installed, started, set up, upgraded,
# broken, purged and pre-seeded in real Debian roots booted by systemd
# (systemd-nspawn -b; PID 1 of the machine running this need not be systemd).
#
#   packaging/lifecycle.sh                    # bookworm and bullseye
#   packaging/lifecycle.sh bullseye           # one suite
#   XRPCAP_LIFECYCLE_DEBS=DIR packaging/lifecycle.sh   # prebuilt packages
#
# Roots: debootstrap --variant=minbase (deb.debian.org) plus what booting
# needs, made once per (suite, package list, ROOT_VERSION) under
# /var/cache/xrpcapd-ci/roots/<suite>-<key>/root and never booted themselves:
# every boot runs on an overlayfs copy (a plain copy when overlayfs is
# missing) thrown away afterwards, so runs are independent. The container gets
# its own network namespace (--private-network: only lo, plus the veth pair the
# test makes inside it); all traffic stays in it. Commands run inside through
# nsenter into the container's namespaces (machinectl/systemd-run -M need
# systemd-machined on the host).
#
# Per suite, two boots:
#   A: 1 install  8 sensor  5 security  2 setup+forward  3 upgrade
#      4 broken config  6 purge
#   B: 7 pre-seeded drop-in, then pre-seeded /etc/default/xrpcapd
# Each check prints one PASS/FAIL line; the summary repeats them.
#
# Packages: without XRPCAP_LIFECYCLE_DEBS, packaging/build.sh builds them
# (FORMATS=deb) from packaging/portable.sh's binaries when that script exists
# (a debug build links the build machine's glibc and libpcap, which bullseye
# lacks), once at the workspace version and once at VERSION+up1
# (XRPCAP_PKG_VERSION) for the upgrade. With XRPCAP_LIFECYCLE_DEBS=DIR the
# lowest xrpcapd version there is installed and the highest is the upgrade;
# when there is only one, it is repacked at a higher version.
#
# Environment:
#   XRPCAP_LIFECYCLE_DEBS=DIR     prebuilt xrpcapd_*.deb, xrpcap-sensor_*.deb
#   XRPCAP_LIFECYCLE_MIRROR=URL   Debian mirror (default http://deb.debian.org/debian)
#   XRPCAP_CI_CACHE=DIR           cache root (default /var/cache/xrpcapd-ci)
#   XRPCAP_LIFECYCLE_KEEP=1       keep the work folder (overlay uppers, logs)
#   XRPCAP_LIFECYCLE_PREINSTALL=DIR  .debs installed in each copy before the
#                                 checks (e.g. libpcap0.8 and its libraries, so
#                                 that debug binaries run in bookworm)
#   XRPCAP_LIFECYCLE_USER_POLICY=kept|removed|any   system users after purge
#                                 (default any: reported, not checked)
#
# Exit status: 0 every check passed, 1 a check failed, 77 cannot run here
# (not root, or systemd-nspawn cannot start a container on this machine: the
# message says why).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# Bump when the root preparation below changes: it is part of the cache key.
ROOT_VERSION=1
INCLUDE=systemd,systemd-sysv,dbus,iproute2,procps
MIRROR=${XRPCAP_LIFECYCLE_MIRROR:-http://deb.debian.org/debian}
CACHE=${XRPCAP_CI_CACHE:-/var/cache/xrpcapd-ci}/roots
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
USER_POLICY=${XRPCAP_LIFECYCLE_USER_POLICY:-any}
MARKER=xrpcap-lifecycle
if [ $# -gt 0 ]; then SUITES=("$@"); else SUITES=(bookworm bullseye); fi

T_START=$EPOCHREALTIME
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf 'lifecycle: %s\n' "$*"; }
die() { printf 'lifecycle: %s\n' "$*" >&2; exit 1; }
skip() { printf 'lifecycle: SKIP: %s\n' "$*"; exit 77; }

WORK=
NSPAWN_PIDS=()
MOUNTS=()
cleanup() {
    local p m
    for p in "${NSPAWN_PIDS[@]}"; do poweroff_pid "$p"; done
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    [ -n "$WORK" ] || return 0
    if [ "${XRPCAP_LIFECYCLE_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}

# ---------------------------------------------------------------- results --
SUITE=-
RESULTS=()
FAILS=0
pass() { RESULTS+=("PASS  $SUITE  $*"); printf 'PASS  %-9s %s\n' "$SUITE" "$*"; }
fail() { RESULTS+=("FAIL  $SUITE  $*"); printf 'FAIL  %-9s %s\n' "$SUITE" "$*"; FAILS=$((FAILS + 1)); }
info() { printf 'info  %-9s %s\n' "$SUITE" "$*"; }
# verdict NAME DETAIL: PASS when PROBLEMS is empty, else FAIL listing them.
PROBLEMS=()
verdict() {
    if [ "${#PROBLEMS[@]}" -eq 0 ]; then pass "$1: $2"; else
        local IFS=';'; fail "$1: ${PROBLEMS[*]}"
    fi
    PROBLEMS=()
}
problem() { PROBLEMS+=(" $*"); }

# ------------------------------------------------------------------ roots --
root_key() { printf '%s\n' "$1" "$INCLUDE" "$ROOT_VERSION" | sha256sum | cut -c1-12; }

# Settles a fresh debootstrap tree: no timers that would take the dpkg lock
# or wake during a test, no getty on the console.
prepare_root() {
    local r=$1 u
    echo lifecycle >"$r/etc/hostname"
    for u in apt-daily.timer apt-daily-upgrade.timer apt-daily.service \
        apt-daily-upgrade.service dpkg-db-backup.timer e2scrub_all.timer \
        e2scrub_reap.service fstrim.timer console-getty.service; do
        ln -sf /dev/null "$r/etc/systemd/system/$u"
    done
    rm -f "$r"/var/cache/apt/archives/*.deb
}

# ensure_root SUITE: prints the pristine root of SUITE, made when missing.
ensure_root() {
    local suite=$1 key dir tmp lock t0
    key=$(root_key "$suite")
    dir=$CACHE/$suite-$key
    mkdir -p "$CACHE"
    exec {lock}>"$CACHE/.$suite.lock"
    flock "$lock"
    if [ ! -d "$dir/root" ]; then
        t0=$EPOCHREALTIME
        tmp=$CACHE/.tmp-$suite-$key
        rm -rf "$tmp" && mkdir -p "$tmp"
        log "debootstrap $suite (cold cache) from $MIRROR" >&2
        if ! debootstrap --variant=minbase --include="$INCLUDE" "$suite" "$tmp/root" "$MIRROR" \
            >"$tmp/debootstrap.log" 2>&1; then
            tail -n 20 "$tmp/debootstrap.log" >&2
            flock -u "$lock"
            return 1
        fi
        prepare_root "$tmp/root"
        mv "$tmp" "$dir"
        # Roots of older keys (package list or script changed) go away.
        find "$CACHE" -mindepth 1 -maxdepth 1 -name "$suite-*" ! -name "$suite-$key" \
            -exec rm -rf {} +
        log "root $suite-$key made in $(elapsed "$t0")s ($(du -sh "$dir/root" | cut -f1))" >&2
    fi
    flock -u "$lock"
    echo "$dir/root"
}

# new_copy PRISTINE NAME: sets COPY to a writable throwaway copy of PRISTINE
# (not in a subshell: the mount is recorded for the cleanup).
COPY=
new_copy() {
    local lower=$1 d=$WORK/$2
    mkdir -p "$d/upper" "$d/work" "$d/root"
    if mount -t overlay overlay -o "lowerdir=$lower,upperdir=$d/upper,workdir=$d/work" "$d/root" 2>/dev/null; then
        MOUNTS+=("$d/root")
    else
        cp -a --reflink=auto "$lower/." "$d/root/"
    fi
    COPY=$d/root
}

# ------------------------------------------------------------- containers --
NSPAWN_PID=
LEADER=
CROOT=

# container_init NSPAWN_PID: prints the container's PID 1 (as seen from the
# host): the child of nspawn that is pid 1 of its own pid namespace.
container_init() {
    local p
    for p in $(pgrep -P "$1"); do
        if awk '/^NSpid:/ { exit !(NF == 3 && $3 == 1) }' "/proc/$p/status" 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# boot NAME ROOTDIR: starts the container, waits until systemd is up.
boot() {
    local name=$1 state i
    CROOT=$2
    setsid systemd-nspawn -q -b -D "$CROOT" --machine="$name" --register=no --keep-unit \
        --private-network --link-journal=no --console=pipe \
        </dev/null >"$WORK/$name.console" 2>&1 &
    NSPAWN_PID=$!
    NSPAWN_PIDS+=("$NSPAWN_PID")
    LEADER=
    for ((i = 0; i < 300; i++)); do
        LEADER=$(container_init "$NSPAWN_PID" || true)
        [ -n "$LEADER" ] && break
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$LEADER" ]; then
        cat "$WORK/$name.console" >&2
        return 1
    fi
    # Until systemd has made /run/systemd/system and its private socket,
    # systemctl says "offline" or cannot connect: ask again.
    state=
    for ((i = 0; i < 300; i++)); do
        state=$(timeout 90 nsenter -t "$LEADER" -a -r -w /bin/sh -c \
            'systemctl is-system-running --wait' 2>"$WORK/$name.wait" || true)
        case $state in "" | offline) ;; *) break ;; esac
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.2
    done
    case $state in
        running) return 0 ;;
        degraded)
            info "$name booted degraded: $(cexec systemctl --failed --no-legend --plain | awk '{print $1}' | xargs)"
            return 0 ;;
        *)
            echo "boot of $name: state '$state' $(cat "$WORK/$name.wait")" >&2
            tail -n 20 "$WORK/$name.console" >&2
            return 1 ;;
    esac
}

# cexec CMD...: runs CMD inside the container as root, stdin closed.
cexec() {
    nsenter -t "$LEADER" -a -r -w -- /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 TERM=dumb "$@" </dev/null
}
csh() { cexec /bin/bash -c "$1"; }

poweroff_pid() {
    local p=$1 leader i
    kill -0 "$p" 2>/dev/null || return 0
    leader=$(container_init "$p" || true)
    if [ -n "$leader" ]; then
        nsenter -t "$leader" -a -r -w /bin/sh -c 'systemctl poweroff --no-block' >/dev/null 2>&1 || true
    fi
    for ((i = 0; i < 300; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    # nspawn turns SIGTERM into an orderly shutdown of the container.
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

shutdown_container() {
    poweroff_pid "$NSPAWN_PID"
    local keep=() p
    for p in "${NSPAWN_PIDS[@]}"; do [ "$p" = "$NSPAWN_PID" ] || keep+=("$p"); done
    NSPAWN_PIDS=("${keep[@]}")
    NSPAWN_PID=
    LEADER=
}

# ---------------------------------------------------------------- helpers --
prop() { cexec systemctl show --value -p "$2" "$1" 2>/dev/null || true; }

# wait_settled UNIT [SECS]: prints the unit's state once it stops activating.
wait_settled() {
    local unit=$1 secs=${2:-30} state i
    for ((i = 0; i < secs * 5; i++)); do
        state=$(cexec systemctl is-active "$unit" 2>/dev/null || true)
        case $state in activating | reloading | deactivating | "") sleep 0.2 ;; *) break ;; esac
    done
    echo "$state"
}

# dpkg_quiet LOG ARGS...: dpkg unattended (noninteractive, stdin closed);
# fails when dpkg fails or asked anything.
dpkg_quiet() {
    local logf=$1 rc=0
    shift
    cexec env DEBIAN_FRONTEND=noninteractive dpkg "$@" >"$logf" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        problem "dpkg $* exit $rc: $(grep -v '^\(Selecting\|(Reading\|Preparing\|Unpacking\|Setting up\)' "$logf" | tail -n 3 | tr '\n' ' ')"
        return 1
    fi
    if grep -q 'Configuration file\|What would you like to do' "$logf"; then
        problem "dpkg $* prompted"
        return 1
    fi
}

service_user_ok() { # UNIT USER
    local pid="" user=""
    pid=$(prop "$1" MainPID)
    if [ -z "$pid" ] || [ "$pid" = 0 ]; then problem "$1 has no main process"; return; fi
    user=$(cexec ps -o user= -p "$pid" | tr -d ' ' || true)
    [ "$user" = "$2" ] || problem "$1 runs as '$user', not $2"
}

# The captured link: cap0 (the agent captures it) and gen0 (test traffic goes
# out of it to 10.254.0.3, a fixed neighbour, so every frame crosses the veth).
make_link() {
    csh 'ip link add cap0 type veth peer name gen0 &&
         ip link set cap0 up && ip link set gen0 up &&
         ip addr add 10.254.0.1/24 dev gen0 &&
         ip neigh replace 10.254.0.3 lladdr 02:00:00:00:00:03 dev gen0 nud permanent'
}

sensor_count() { python3 "$ROOT/packaging/lifecycle/pcapcount.py" "$CROOT/var/lib/xrpcap-sensor" "$MARKER"; }

# forwards SECS: sends marked UDP frames over the captured link until the
# sensor's capture files hold more of them than before; prints the new count.
LAST_COUNT=0
forwards() {
    local secs=${1:-30} n=0 i t0=$EPOCHREALTIME before=$LAST_COUNT
    for ((i = 0; i < secs * 2; i++)); do
        csh "for i in 1 2 3 4 5; do echo '$MARKER '\$i >/dev/udp/10.254.0.3/9; done" 2>/dev/null || true
        n=$(sensor_count || echo 0)
        if [ "$n" -gt "$before" ]; then
            LAST_COUNT=$n
            FWD_DETAIL="$((n - before)) marked frames in the sensor's pcap after $(elapsed "$t0")s"
            return 0
        fi
        sleep 0.5
    done
    FWD_DETAIL="no new marked frame in $CROOT/var/lib/xrpcap-sensor after ${secs}s (count $before)"
    return 1
}

deb_of() { # PACKAGE DIR
    find "$2" -maxdepth 1 -name "${1}_*.deb" | head -n1
}

# --------------------------------------------------------------- packages --
DEB_DIR=
BASE_VERSION=
UP_VERSION=

repack_higher() { # DEB OUTDIR VERSION
    local t=$WORK/repack
    rm -rf "$t"
    dpkg-deb -R "$1" "$t"
    sed -i "s/^Version: .*/Version: $3/" "$t/DEBIAN/control"
    dpkg-deb -Zgzip -z1 -b "$t" "$2/" >/dev/null
}

build_debs() { # OUTDIR [VERSION]
    local out=$1 stamp=$WORK/stamp.$RANDOM
    touch "$stamp"
    sleep 0.01
    XRPCAP_PKG_VERSION=${2:-${XRPCAP_PKG_VERSION:-}} FORMATS=deb PROFILE=dev FAST=1 \
        packaging/build.sh >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; return 1; }
    find "$TARGET_DIR/packages" -maxdepth 1 -name '*.deb' ! -name '*dbgsym*' -newer "$stamp" \
        -exec cp {} "$out/" \;
}

get_debs() {
    mkdir -p "$DEB_DIR/base" "$DEB_DIR/up"
    local f v
    if [ -n "${XRPCAP_LIFECYCLE_DEBS:-}" ]; then
        # Lowest and highest xrpcapd version, in dpkg's order (sort -V puts
        # 0.1.0+up1 before 0.1.0-1).
        local lo="" hi=""
        for f in "$XRPCAP_LIFECYCLE_DEBS"/xrpcapd_*.deb; do
            [ -f "$f" ] || continue
            v=$(dpkg-deb -f "$f" Version)
            if [ -z "$lo" ] || dpkg --compare-versions "$v" lt "$lo"; then lo=$v; fi
            if [ -z "$hi" ] || dpkg --compare-versions "$v" gt "$hi"; then hi=$v; fi
        done
        [ -n "$lo" ] || die "no xrpcapd_*.deb in $XRPCAP_LIFECYCLE_DEBS"
        BASE_VERSION=$lo
        for f in "$XRPCAP_LIFECYCLE_DEBS"/*.deb; do
            case $f in *dbgsym*) continue ;; esac
            v=$(dpkg-deb -f "$f" Version)
            if [ "$v" = "$lo" ]; then cp "$f" "$DEB_DIR/base/"; fi
            if [ "$v" = "$hi" ] && [ "$hi" != "$lo" ]; then cp "$f" "$DEB_DIR/up/"; fi
        done
    else
        if [ -z "${XRPCAP_PKG_BIN:-}" ] && [ -x packaging/portable.sh ]; then
            log "portable binaries: packaging/portable.sh dev"
            XRPCAP_PKG_BIN=$(packaging/portable.sh dev | tail -n1) || die "packaging/portable.sh failed"
            export XRPCAP_PKG_BIN
        fi
        if [ -z "${XRPCAP_PKG_BIN:-}" ]; then
            log "note: no packaging/portable.sh: debug binaries (they need the build machine's glibc and libpcap: bullseye fails)"
            cargo build -q -p xrpcapd -p xrpcap-sensor --bins || die "cargo build failed"
            XRPCAP_PKG_BIN=$TARGET_DIR/debug
            export XRPCAP_PKG_BIN
        fi
        build_debs "$DEB_DIR/base" || die "packaging/build.sh failed"
        f=$(deb_of xrpcapd "$DEB_DIR/base")
        [ -n "$f" ] || die "packaging/build.sh made no xrpcapd_*.deb"
        BASE_VERSION=$(dpkg-deb -f "$f" Version)
        build_debs "$DEB_DIR/up" "${BASE_VERSION%%-*}+up1" || die "packaging/build.sh (upgrade) failed"
    fi
    f=$(deb_of xrpcapd "$DEB_DIR/up")
    if [ -z "$f" ] || ! dpkg --compare-versions "$(dpkg-deb -f "$f" Version)" gt "$BASE_VERSION"; then
        log "note: no higher xrpcapd version built: repacking $BASE_VERSION as $BASE_VERSION+up1"
        rm -f "$DEB_DIR"/up/*
        for f in "$DEB_DIR"/base/*.deb; do repack_higher "$f" "$DEB_DIR/up" "$BASE_VERSION+up1"; done
    fi
    UP_VERSION=$(dpkg-deb -f "$(deb_of xrpcapd "$DEB_DIR/up")" Version)
    log "packages: $(cd "$DEB_DIR" && find . -name '*.deb' | sort | xargs)"
}

# ----------------------------------------------------------------- checks --
put_debs() {
    mkdir -p "$CROOT/root/debs" && cp -a "$DEB_DIR/." "$CROOT/root/debs/"
    if [ -n "${XRPCAP_LIFECYCLE_PREINSTALL:-}" ]; then
        mkdir -p "$CROOT/root/preinstall" && cp "$XRPCAP_LIFECYCLE_PREINSTALL"/*.deb "$CROOT/root/preinstall/"
        cexec sh -c 'dpkg -i /root/preinstall/*.deb' >"$WORK/$SUITE-preinstall.log" 2>&1 ||
            info "preinstall failed (see $SUITE-preinstall.log)"
    fi
}
cdeb() { # PACKAGE base|up → path inside the container
    local f
    f=$(deb_of "$1" "$DEB_DIR/$2")
    [ -n "$f" ] && echo "/root/debs/$2/$(basename "$f")"
}

check_install() {
    local deb="" state=""
    deb=$(cdeb xrpcapd base) || { problem "no xrpcapd package"; verdict "1 install" -; return; }
    if dpkg_quiet "$WORK/$SUITE-install.log" -i "$deb"; then
        state=$(wait_settled xrpcapd)
        [ "$state" = active ] || problem "xrpcapd is $state, not active"
        [ "$(cexec systemctl is-enabled xrpcapd 2>/dev/null)" = enabled ] || problem "xrpcapd not enabled"
        [ "$(prop xrpcapd Type)" = notify ] || problem "Type=$(prop xrpcapd Type), not notify"
        service_user_ok xrpcapd xrpcapd
        [ -z "$(cexec ss -Hltn 'sport = :2002')" ] || problem "something listens on 2002"
        # Nothing at all: the packaged configuration is active-only.
        [ -z "$(cexec ss -Hltunp | grep '"xrpcapd"')" ] || problem "xrpcapd listens: $(cexec ss -Hltunp | grep '"xrpcapd"' | head -n2)"
    fi
    verdict "1 install" "dpkg -i $BASE_VERSION unattended; active (READY), enabled, user xrpcapd, nothing listening"
}

check_sensor() {
    local deb="" state=""
    deb=$(cdeb xrpcap-sensor base) || { problem "no xrpcap-sensor package"; verdict "8 sensor package" -; return; }
    if dpkg_quiet "$WORK/$SUITE-sensor.log" -i "$deb"; then
        state=$(wait_settled xrpcap-sensor)
        [ "$state" = active ] || problem "xrpcap-sensor is $state, not active"
        [ "$(cexec systemctl is-enabled xrpcap-sensor 2>/dev/null)" = enabled ] || problem "xrpcap-sensor not enabled"
        service_user_ok xrpcap-sensor xrpcap-sensor
        [ -n "$(cexec ss -Hltn 'sport = :2003')" ] || problem "nothing listens on 2003"
    fi
    verdict "8 sensor package" "dpkg -i; xrpcap-sensor active, enabled, user xrpcap-sensor, listening on 2003"
}

check_security() {
    local unit="" score=""
    for unit in xrpcapd xrpcap-sensor; do
        score=$(cexec systemd-analyze security --no-pager "$unit.service" 2>/dev/null |
            sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' || true)
        if [ -z "$score" ]; then
            problem "$unit: no exposure level from systemd-analyze security"
        elif awk -v s="$score" 'BEGIN { exit !(s > 2.0) }'; then
            problem "$unit exposure $score > 2.0"
        fi
        SCORES+="$unit $score "
    done
    verdict "5 security" "systemd-analyze security inside: ${SCORES}(≤ 2.0)"
    SCORES=
}
SCORES=

check_setup_forward() {
    local out="" rc=0
    out=$(cexec xrpcapd-setup --sensor 127.0.0.1:2003 --ifname cap0 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then
        problem "xrpcapd-setup exit $rc: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
    else
        [ "$(wait_settled xrpcapd)" = active ] || problem "xrpcapd not active after setup"
        forwards || problem "$FWD_DETAIL"
        [ -z "$(cexec ss -Hltn 'sport = :2002')" ] || problem "something listens on 2002"
    fi
    verdict "2 setup+forward" "xrpcapd-setup --sensor 127.0.0.1:2003 --ifname cap0: ${FWD_DETAIL:-}; nothing on 2002"
}

check_upgrade() {
    local deb="" oldpid="" newpid="" exe="" v=""
    deb=$(cdeb xrpcapd up) || { problem "no upgrade package"; verdict "3 upgrade" -; return; }
    oldpid=$(prop xrpcapd MainPID)
    if dpkg_quiet "$WORK/$SUITE-upgrade.log" -i "$deb"; then
        [ "$(wait_settled xrpcapd)" = active ] || problem "xrpcapd not active after upgrade"
        v=$(cexec dpkg-query -W -f '${Version}' xrpcapd || true)
        [ "$v" = "$UP_VERSION" ] || problem "installed version $v, not $UP_VERSION"
        newpid=$(prop xrpcapd MainPID)
        [ "$newpid" != "$oldpid" ] || problem "same process $oldpid as before the upgrade (not restarted)"
        exe=$(cexec readlink "/proc/$newpid/exe" 2>/dev/null || true)
        [ "$exe" = /usr/sbin/xrpcapd ] || problem "running binary is '$exe'"
        forwards || problem "after upgrade: $FWD_DETAIL"
    fi
    verdict "3 upgrade" "$BASE_VERSION → $UP_VERSION: pid $oldpid → ${newpid:-?}, exe $exe, forwarding (${FWD_DETAIL:-})"
}

check_broken_config() {
    local since="" rc=0 state="" nr="" journal=""
    csh "printf '# lifecycle test: a bad line\nActiveClient = 127.0.0.1, 70000\n' >/etc/xrpcapd/rpcapd.d/99-broken.ini" ||
        problem "could not write /etc/xrpcapd/rpcapd.d/99-broken.ini (no rpcapd.d?)"
    since=$(cexec date '+%Y-%m-%d %H:%M:%S')
    sleep 1
    cexec timeout 60 systemctl restart xrpcapd >/dev/null 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || problem "systemctl restart succeeded"
    sleep 10
    state=$(prop xrpcapd ActiveState)
    nr=$(prop xrpcapd NRestarts)
    [ "$state" = failed ] || problem "after 10 s the unit is $state, not failed"
    [ "$nr" = 0 ] || problem "NRestarts=$nr"
    journal=$(cexec journalctl -u xrpcapd --since "$since" --no-pager -o cat 2>/dev/null || true)
    grep -q '99-broken\.ini:2' <<<"$journal" ||
        problem "journal lacks '99-broken.ini:2' ($(grep -i 'error\|invalid\|expected' <<<"$journal" | head -n1))"
    # Fixed again, it starts again.
    cexec rm -f /etc/xrpcapd/rpcapd.d/99-broken.ini
    cexec systemctl reset-failed xrpcapd >/dev/null 2>&1 || true
    cexec timeout 60 systemctl restart xrpcapd >/dev/null 2>&1 || problem "restart after the fix failed"
    verdict "4 broken config" "restart exit $rc, $state after 10 s, NRestarts=$nr, journal names 99-broken.ini:2; fixed → active"
}

check_purge() {
    local pkg="" name=""
    for pkg in xrpcapd xrpcap-sensor; do
        if [ "$(cexec dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
            problem "$pkg was not installed before the purge"
            continue
        fi
        dpkg_quiet "$WORK/$SUITE-purge-$pkg.log" --purge "$pkg" || continue
        [ -z "$(cexec pgrep -x "$pkg")" ] || problem "a $pkg process remains"
        [ -z "$(cexec find /etc/systemd -lname "*$pkg*")" ] ||
            problem "unit symlinks remain: $(cexec find /etc/systemd -lname "*$pkg*" | xargs)"
        [ -z "$(cexec find /lib/systemd/system /usr/lib/systemd/system -name "$pkg.service" 2>/dev/null)" ] ||
            problem "$pkg.service remains"
    done
    [ ! -e "$CROOT/etc/xrpcapd" ] || problem "/etc/xrpcapd remains: $(cd "$CROOT" && find etc/xrpcapd | xargs)"
    [ ! -e "$CROOT/etc/default/xrpcap-sensor" ] || problem "/etc/default/xrpcap-sensor remains"
    for name in xrpcapd xrpcap-sensor; do
        if cexec getent passwd "$name" >/dev/null; then
            info "user $name exists after purge"
            [ "$USER_POLICY" != removed ] || problem "user $name remains"
        else
            info "no user $name after purge"
            [ "$USER_POLICY" != kept ] || problem "user $name was removed"
        fi
    done
    verdict "6 purge" "dpkg --purge xrpcapd xrpcap-sensor: no /etc/xrpcapd, no unit symlinks, no process"
}

check_preseed() {
    local deb="" state="" f=/etc/xrpcapd/rpcapd.d/50-sensor.ini
    deb=$(cdeb xrpcapd base) || { problem "no xrpcapd package"; verdict "7 pre-seeded drop-in" -; return; }
    csh "mkdir -p /etc/xrpcapd/rpcapd.d &&
         printf '# pre-seeded by packaging/lifecycle.sh\nActiveClient = 127.0.0.1, 2003, ifname=cap0\nNullAuthPermit = YES\n' \
             >/etc/xrpcapd/rpcapd.d/50-sensor.ini"
    if dpkg_quiet "$WORK/$SUITE-preseed.log" -i "$deb"; then
        state=$(wait_settled xrpcapd)
        [ "$state" = active ] || problem "xrpcapd is $state, not active"
        forwards || problem "$FWD_DETAIL"
    fi
    verdict "7 pre-seeded drop-in" "50-sensor.ini before dpkg -i: no prompt, active, ${FWD_DETAIL:-}"

    # The same from /etc/default/xrpcapd, the postinst running xrpcapd-setup.
    dpkg_quiet "$WORK/$SUITE-preseed-purge.log" --purge xrpcapd || true
    csh "rm -rf /etc/xrpcapd && printf 'XRPCAPD_SENSOR=127.0.0.1:2003\nXRPCAPD_IFNAME=cap0\n' >/etc/default/xrpcapd"
    if dpkg_quiet "$WORK/$SUITE-preseed-default.log" -i "$deb"; then
        cexec test -f "$f" || problem "postinst wrote no $f"
        state=$(wait_settled xrpcapd)
        [ "$state" = active ] || problem "xrpcapd is $state, not active"
        forwards || problem "$FWD_DETAIL"
    fi
    verdict "7 pre-seeded default" "/etc/default/xrpcapd XRPCAPD_SENSOR before dpkg -i: no prompt, $f written, active, ${FWD_DETAIL:-}"
}

# ------------------------------------------------------------------- main --
run_suite() {
    local pristine name t0 deb
    SUITE=$1
    t0=$EPOCHREALTIME
    pristine=$(ensure_root "$SUITE") || { fail "debootstrap $SUITE failed"; return; }

    name=xrl-$SUITE-a-$$
    new_copy "$pristine" "$name"
    if ! boot "$name" "$COPY"; then fail "boot: $SUITE did not come up (see above)"; shutdown_container; return; fi
    info "booted in $(elapsed "$t0")s"
    put_debs
    make_link || fail "could not make the veth pair cap0/gen0"
    LAST_COUNT=0
    FWD_DETAIL=
    check_install || true
    check_sensor || true
    check_security || true
    FWD_DETAIL=
    check_setup_forward || true
    FWD_DETAIL=
    check_upgrade || true
    check_broken_config || true
    check_purge || true
    shutdown_container

    name=xrl-$SUITE-b-$$
    new_copy "$pristine" "$name"
    if ! boot "$name" "$COPY"; then fail "boot: $SUITE (second copy) did not come up"; shutdown_container; return; fi
    put_debs
    make_link || fail "could not make the veth pair cap0/gen0"
    LAST_COUNT=0
    PROBLEMS=()
    if deb=$(cdeb xrpcap-sensor base) && dpkg_quiet "$WORK/$SUITE-b-sensor.log" -i "$deb"; then :; else
        problem "xrpcap-sensor did not install"
    fi
    FWD_DETAIL=
    check_preseed || true
    shutdown_container
    info "suite done in $(elapsed "$t0")s"
}

# Can nspawn run a container at all here? (Not a boot: a plain command.)
probe_nspawn() {
    local pristine=$1 out
    new_copy "$pristine" probe
    if ! out=$(timeout 60 systemd-nspawn -q -D "$COPY" --register=no --keep-unit --private-network \
        --link-journal=no --console=pipe /bin/true </dev/null 2>&1); then
        skip "systemd-nspawn cannot start a container on this machine: $(tail -n 3 <<<"$out" | xargs)"
    fi
}

main() {
    local s p first=1
    [ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, overlay mounts, systemd-nspawn)"
    for c in debootstrap systemd-nspawn nsenter dpkg-deb python3 flock; do
        command -v "$c" >/dev/null || die "$c missing: run scripts/setup.sh"
    done
    WORK=$(mktemp -d /var/tmp/xrpcapd-lifecycle.XXXXXX)
    DEB_DIR=$WORK/debs
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    get_debs
    for s in "${SUITES[@]}"; do
        if [ "$first" = 1 ]; then
            SUITE=$s
            p=$(ensure_root "$s") || die "debootstrap $s failed"
            probe_nspawn "$p"
            first=0
        fi
        run_suite "$s"
    done

    SUITE=-
    printf '\n=== lifecycle summary (%ss) ===\n' "$(elapsed "$T_START")"
    printf '%s\n' "${RESULTS[@]}"
    if [ "$FAILS" -ne 0 ]; then
        echo "lifecycle: $FAILS check(s) failed"
        exit 1
    fi
    echo "lifecycle: all checks passed"
}

# Sourcing the file (to try one function by hand) runs nothing.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main; fi
