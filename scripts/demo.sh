#!/usr/bin/env bash
# The main job of xrpcapd on a built-in topology (TESTING.md), all on this
# machine in network namespaces that the script creates and deletes on exit:
#
#   ns gen                ns cap (xrpcapd)                  ns sen (xrpcap-sensor)
#   g0 ──veth── c0  (captured link)    c1 ──veth── s1
#   10.200.1.1   10.200.1.2             10.200.2.1   10.200.2.2
#
# xrpcap-sensor listens on 10.200.2.2:2003; xrpcapd (active mode, built-in
# config) dials it and forwards what crosses c0; gen sends pings and UDP over
# c0. At the end: a summary, the sensor's counters, its pcap path and first
# lines, and a byte-for-byte comparison with tcpdump's own capture of c0.
# Exits 0 only when the two captures hold the same frames in the same order.
#
#   sudo scripts/demo.sh     (as root; XRPCAP_DEMO_DIR=DIR keeps output there;
#                             XRPCAP_AGENT / XRPCAP_SENSOR override the binaries;
#                             XRPCAP_DEMO_PROFILE=debug uses a debug build, as
#                             scripts/test.sh does)
#
# Works on a fresh Debian 12 machine with nothing run before it: it runs
# `scripts/setup.sh demo` (the system packages and rust components, without
# the tests' interop client and other slow test-only tools; a no-op taking
# about 1.5 s when they are present) and builds the two binaries. The
# one prerequisite it cannot install is Rust >= 1.88 (rustup; Debian 12's
# cargo is too old). Under sudo, whose PATH lacks ~/.cargo/bin, it uses the
# invoking user's rustup toolchain and builds as that user, so target/ and
# ~/.cargo stay theirs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
PROFILE=${XRPCAP_DEMO_PROFILE:-release}
case "$PROFILE" in
    release) BUILD=(cargo build --release) ;;
    debug) BUILD=(cargo build) ;;
    *) echo "demo: XRPCAP_DEMO_PROFILE must be release or debug" >&2; exit 1 ;;
esac
AGENT=${XRPCAP_AGENT:-$TARGET_DIR/$PROFILE/xrpcapd}
SENSOR=${XRPCAP_SENSOR:-$TARGET_DIR/$PROFILE/xrpcap-sensor}

GEN=xr-gen-$$ CAP=xr-cap-$$ SEN=xr-sen-$$
SENSOR_IP=10.200.2.2 SENSOR_PORT=2003 CAPTURED_IF=c0
PINGS=10 DATAGRAMS=200

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, packet capture): sudo $0"

# --- prerequisites -----------------------------------------------------------------
# Rust: on PATH, or the rustup install of the user who ran sudo (sudo resets
# PATH). Then the build runs as that user (BUILD_AS), never writing root-owned
# files into their target/ or ~/.cargo.
BUILD_AS=()
if ! command -v cargo >/dev/null 2>&1 && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [ -n "$user_home" ] && [ -x "$user_home/.cargo/bin/cargo" ]; then
        export PATH="$user_home/.cargo/bin:$PATH"
        export CARGO_HOME=${CARGO_HOME:-$user_home/.cargo} RUSTUP_HOME=${RUSTUP_HOME:-$user_home/.rustup}
        BUILD_AS=(setpriv --reuid="$SUDO_USER" --regid="$(id -g "$SUDO_USER")" --init-groups
            env HOME="$user_home" USER="$SUDO_USER")
        say "using $SUDO_USER's Rust toolchain ($user_home/.cargo/bin); building as $SUDO_USER"
    fi
fi
if [ -z "${XRPCAP_AGENT:-}" ] || [ -z "${XRPCAP_SENSOR:-}" ]; then
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust 1.88 or newer with rustup (https://rustup.rs; Debian 12's own cargo is too old), then run this again"
fi
# System packages (clang, libpcap-dev, tcpdump, iproute2, ...): setup.sh
# installs what is missing with apt-get and returns at once otherwise. Its
# demo mode skips what only the tests need (the libpcap interop build).
if command -v apt-get >/dev/null 2>&1; then
    say "checking prerequisites (scripts/setup.sh demo)"
    scripts/setup.sh demo || die "scripts/setup.sh demo failed: see above"
fi
for tool in ip tcpdump ping ss; do
    command -v "$tool" >/dev/null || die "$tool not found: install it (scripts/setup.sh lists the Debian packages)"
done

OUT=${XRPCAP_DEMO_DIR:-$(mktemp -d /tmp/xrpcap-demo.XXXXXX)}
mkdir -p "$OUT/sensor"

# --- cleanup: always, on any exit ---------------------------------------------
PIDS=()
cleanup() {
    local pid ns
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "$GEN" "$CAP" "$SEN"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until COMMAND succeeds, polling every 0.1 s for at most SECONDS.
wait_for() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
alive() { kill -0 "$1" 2>/dev/null; }

# Stops a process: SIGTERM, up to 5 s, then SIGKILL.
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    wait_for 5 bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# --- build -----------------------------------------------------------------------
if [ -n "${XRPCAP_AGENT:-}" ] && [ -n "${XRPCAP_SENSOR:-}" ]; then
    say "using $AGENT and $SENSOR (no build)"
else
    say "building xrpcapd and xrpcap-sensor ($PROFILE; the first build takes minutes)"
    "${BUILD_AS[@]}" "${BUILD[@]}" -p xrpcapd -p xrpcap-sensor
fi

for bin in "$AGENT" "$SENSOR"; do
    [ -x "$bin" ] || die "$bin missing after the build"
done

# --- topology ----------------------------------------------------------------------
say "creating namespaces $GEN, $CAP, $SEN"
for ns in "$GEN" "$CAP" "$SEN"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
ip link add g0 netns "$GEN" type veth peer name c0 netns "$CAP"
ip link add c1 netns "$CAP" type veth peer name s1 netns "$SEN"
link() { # NS IF CIDR
    ip -n "$1" addr add "$3" dev "$2"
    ip -n "$1" link set "$2" up
}
link "$GEN" g0 10.200.1.1/24
link "$CAP" c0 10.200.1.2/24
link "$CAP" c1 10.200.2.1/24
link "$SEN" s1 10.200.2.2/24

# --- sensor, agent, reference capture ---------------------------------------------
cat >"$OUT/rpcapd.ini" <<EOF
# xrpcapd demo configuration (written by scripts/demo.sh)
# Dial the sensor in active mode; it may open only the captured link. The
# sensor logs in with NULL authentication, as ExtraHop sensors do.
ActiveClient = $SENSOR_IP, $SENSOR_PORT, ifname=$CAPTURED_IF
NullAuthPermit = YES
EOF

say "starting xrpcap-sensor in $SEN on $SENSOR_IP:$SENSOR_PORT"
RUST_LOG=${RUST_LOG:-info} ip netns exec "$SEN" "$SENSOR" \
    --listen "$SENSOR_IP:$SENSOR_PORT" --out "$OUT/sensor" --ifname "$CAPTURED_IF" \
    --stats-interval 1 \
    >"$OUT/sensor.log" 2>&1 &
SENSOR_PID=$!
PIDS+=("$SENSOR_PID")
if ! wait_for 10 bash -c "ip netns exec $SEN ss -Hltn 'sport = :$SENSOR_PORT' | grep -q ."; then
    cat "$OUT/sensor.log"
    die "the sensor did not listen on $SENSOR_IP:$SENSOR_PORT within 10 s"
fi

# Independent reference: tcpdump on the captured link, in the agent's namespace.
# The filter leaves out the agent's own traffic to the sensor (on c1 anyway).
ip netns exec "$CAP" tcpdump -i "$CAPTURED_IF" -n -U -s 0 -Z root -w "$OUT/reference.pcap" \
    >"$OUT/tcpdump.log" 2>&1 &
TCPDUMP_PID=$!
PIDS+=("$TCPDUMP_PID")
wait_for 10 grep -q "listening on" "$OUT/tcpdump.log" || die "tcpdump did not start: $(cat "$OUT/tcpdump.log")"

# -v: active only, as the packaged configuration and ExtraHop's installer
# run it; nothing listens on 2002.
say "starting xrpcapd in $CAP: xrpcapd -f $OUT/rpcapd.ini -v"
RUST_LOG=${RUST_LOG:-info} ip netns exec "$CAP" "$AGENT" -f "$OUT/rpcapd.ini" -v \
    >"$OUT/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
if ! wait_for 15 bash -c "ip netns exec $CAP ss -Htn state established 'dst $SENSOR_IP:$SENSOR_PORT' | grep -q ."; then
    cat "$OUT/agent.log" "$OUT/sensor.log"
    die "xrpcapd did not connect to the sensor within 15 s"
fi
say "xrpcapd is connected to the sensor"
# The sensor sends AUTH, FINDALLIF, OPEN c0 and STARTCAP; the agent logs the
# capture once its ring is bound, so nothing sent afterwards is missed.
if ! wait_for 15 grep -q "capture on $CAPTURED_IF started" "$OUT/agent.log"; then
    cat "$OUT/agent.log" "$OUT/sensor.log"
    die "the capture did not start within 15 s"
fi
say "capture of $CAPTURED_IF started"
alive "$AGENT_PID" || { cat "$OUT/agent.log"; die "xrpcapd exited"; }
alive "$SENSOR_PID" || { cat "$OUT/sensor.log"; die "xrpcap-sensor exited"; }

# --- traffic over the captured link --------------------------------------------------
say "sending $PINGS pings and $DATAGRAMS UDP datagrams from $GEN to 10.200.1.2 over c0"
ip netns exec "$GEN" ping -q -c "$PINGS" -i 0.05 -W 1 10.200.1.2 >/dev/null ||
    die "ping over the captured link failed"
ip netns exec "$GEN" bash -c "
    for ((i = 1; i <= $DATAGRAMS; i++)); do
        printf 'xrpcap demo datagram %04d\n' \$i >/dev/udp/10.200.1.2/9999
    done"

# Let partial datagrams flush (read timeout), the reference ring block retire
# and one more STATS exchange (every second) report the agent's counters.
sleep 2
say "stopping xrpcap-sensor, xrpcapd and tcpdump"
stop "$SENSOR_PID"
stop "$AGENT_PID"
stop "$TCPDUMP_PID"

# --- summary ---------------------------------------------------------------------------
count() { tcpdump -r "$1" 2>/dev/null | wc -l; }
mapfile -t pcaps < <(find "$OUT/sensor" -type f \( -name '*.pcap' -o -name '*.pcapng' \) | sort)
REF=$(count "$OUT/reference.pcap")
echo
echo "=== demo summary ==="
echo "traffic sent:              $PINGS pings + $DATAGRAMS UDP datagrams from $GEN"
echo "tcpdump on c0 (reference): $REF packets   $OUT/reference.pcap"
if [ "${#pcaps[@]}" -eq 0 ]; then
    echo "sensor wrote no pcap file in $OUT/sensor"
    echo "--- agent log (tail) ---"; tail -n 20 "$OUT/agent.log"
    echo "--- sensor log (tail) ---"; tail -n 20 "$OUT/sensor.log"
    exit 1
fi
TOTAL=0
for f in "${pcaps[@]}"; do
    n=$(count "$f")
    TOTAL=$((TOTAL + n))
    echo "sensor capture:            $n packets   $f"
done
echo "logs:                      $OUT/agent.log  $OUT/sensor.log"
echo
echo "--- sensor's counters (its final line) ---"
grep '^final ' "$OUT/sensor.log" | tr ' ' '\n' | grep -E '^(packets|bytes|lost|udpstr_datagrams|seq_gaps|malformed|socket_drops|agent_ifrecv|agent_ifdrop|agent_krnldrop|agent_sent)=' | paste -sd' ' || true
echo
echo "--- tcpdump -nr ${pcaps[0]} -c 10 ---"
tcpdump -nr "${pcaps[0]}" -c 10 2>/dev/null || true
echo
# Byte comparison: every frame in hex, without timestamps, in order.
frames() { tcpdump -nn -t -xx -r "$1" 2>/dev/null; }
if [ "$TOTAL" -eq 0 ]; then
    say "FAILED: the sensor's capture is empty"
    exit 1
elif [ "${#pcaps[@]}" -eq 1 ] && diff -q <(frames "${pcaps[0]}") <(frames "$OUT/reference.pcap") >/dev/null; then
    say "OK: the sensor received every frame tcpdump saw on c0 ($TOTAL), byte for byte, in order"
else
    say "MISMATCH: the sensor holds $TOTAL packets, tcpdump saw $REF on c0; first differences:"
    diff <(frames "${pcaps[0]}") <(frames "$OUT/reference.pcap") | head -n 20 || true
    exit 1
fi
