#!/usr/bin/env bash
# Side-by-side forwarding benchmark (TESTING.md, "Performance"; issue 4).
#
#   ns gen                 ns cap (agent / tcpdump / rpcapd)  ns sen (sensor)
#   g0 ──veth── c0 (captured link)      c1 ──veth── s1
#   10.200.1.1   10.200.1.2             10.200.2.1   10.200.2.2
#
# trafgen (pinned to CPU 0) sends a fixed number of UDP frames from g0 to
# 10.200.1.2:9. Each run is one pass of either
#   agent:   xrpcapd (pinned to CPU 1, WorkerCpu = 1) captures c0 and forwards
#            udpstr over c1 to xrpcap-sensor (pinned to CPU 0, pcap to /dev/null);
#   tcpdump: `tcpdump -i c0 -w /dev/null` (pinned to CPU 1), the reference,
#   libpcap-rpcapd: libpcap's own rpcapd (pinned to CPU 1), passive: the
#            sensor dials it and asks for UDP data (one datagram per
#            packet), the other RPCAP reference,
# with the same traffic; the passes alternate, so all see the same machine
# load. All capture with the kernel filter `udp dst port 9`.
#
# Per run: generator pps, CPU ns per packet of the capturing process (utime +
# stime from /proc/PID/stat, and the sum of its threads' schedstat run time,
# which has ns resolution), the whole machine's busy CPU ns per packet
# (/proc/stat, see below), loss, wire bytes on c1 per captured byte,
# datagrams per packet, IP fragments (/proc/net/snmp), peak RSS (VmHWM),
# and in the notes the sensor's delay_max_us/delay_mean_us (receive time
# minus capture timestamp, one clock: the agent's latency bound at work).
# On veth the receive work (and the capture socket's copy into the ring, or
# the XDP program and its copy into the UMEM) runs on the *sender's* CPU, so
# the capturing process's own CPU time misses it; the machine figure
# includes it (and the generator, the sensor and everything else running):
# busy = user + nice + system + irq + softirq of all CPUs (not iowait, not
# steal: time the hypervisor gave to others), over the traffic window, minus
# the busy rate measured over 1 s just before it (processes started, link
# idle) times the window. Compare passes by it only on a quiet machine:
# other load during the window lands in it too. At top speed trafgen spins
# at 100 % of its CPU, so there it mostly measures 1/gen_pps; paced cases
# show the kernel's per-frame work.
#
# Usage (root): benches/forward.sh [options]
#   -r RUNS     runs per case and pass (default 3; medians are reported)
#   -c CASES    space-separated SIZE:COUNT:RATE, RATE = "top" or a trafgen
#               --rate like 150000pps, a per-second budget that trafgen sends
#               at top speed before sleeping out the second, not a smooth
#               pace, or "gapTIME" (e.g. gap50us: trafgen -t, one frame
#               every TIME, sent with sendto(2): a smooth rate such as a
#               server sees, ~19 kpps at gap50us here) (default: 64 B
#               and 1500 B at top speed, then paced at
#               100 kpps and 25 kpps: "64:2000000:top 1500:500000:top
#               64:1000000:100000pps 1500:250000:25000pps")
#   -p PASSES   "agent tcpdump" (default), or any of agent, agent-sink,
#               agent-afxdp, agent-afxdp-sink, agent-metrics,
#               agent-scraped, agent-base, agent-vxlan, agent-gre,
#               agent-erspan2, agent-erspan3, tcpdump, tcpdump-B32M,
#               libpcap-rpcapd, libpcap-rpcapd-active
#               (agent-sink: the agent's data go to a device that drops
#               them; agent-afxdp: the agent with Capture = afxdp:c0;
#               agent-afxdp-sink: both; agent-metrics: the agent with
#               MetricsListen = 10.200.2.1:9917, not scraped;
#               agent-scraped: the same, and `curl` fetches /metrics
#               from ns cap every SCRAPE_EVERY seconds (default 1) from
#               the capture's start to the agent's stop;
#               agent-base: the agent binary $XRPCAPD_BASE (an
#               earlier build), an A/B of two builds in one invocation;
#               agent-vxlan etc.: no sensor, the agent exports c0 with a
#               TunnelClient line to ns sen, where an nftables rule counts
#               and drops the tunnel datagrams: received = that counter;
#               tcpdump-B32M: tcpdump -B 32768;
#               libpcap-rpcapd: libpcap's rpcapd in passive mode
#               (`rpcapd -b 10.200.2.1 -n`), xrpcap-sensor dials it
#               (--connect) and asks for UDP data;
#               libpcap-rpcapd-active: `rpcapd -a 10.200.2.2,2003 -n`
#               dials the listening sensor, UDP data too (not -v: with
#               it rpcapd 1.10 kills itself at start). rpcapd forks
#               a process per session (and per -a entry) and captures in
#               a thread of it: its CPU, context switches and peak RSS
#               are those of the whole process tree. rpcapd sends every
#               packet as its own datagram, so wire figures are c1's
#               bytes and frames (no GSO), IP fragments included)
#   -o FILE     per-run TSV (default /tmp/xrpcap-forward.tsv)
#   -a LINES    extra rpcapd.ini lines for the agent, e.g. "RingSize = 4M"
#               (default none: the agent runs at its defaults)
#   -T ARGS     extra tcpdump arguments, e.g. "-B 32768" (default none)
#   -m          mirror-like traffic: the frames go to a foreign destination
#               MAC (02:00:00:00:00:99), so ns cap's stack drops them as
#               PACKET_OTHERHOST right after the capture hooks, as on a
#               SPAN port; default: to c0's MAC (ns cap's IP/UDP receive
#               runs for every frame; nothing listens on port 9)
#   -s          count system calls: every agent pass runs under
#               `strace -f -ff -ttt` (one output file per thread), and
#               the calls made in the traffic window are counted per
#               thread: datapath (dp-*), control (the main thread),
#               http (the metrics thread and tiny_http's unnamed acceptor
#               and pool threads), others by name. The row's notes get
#               syscalls=, sys_per_pkt= (per frame forwarded),
#               dp_syscalls=, dp_per_pkt=, control=, http= (and
#               scrapes= for agent-scraped); a "# strace" line per
#               thread (its calls, most frequent first) goes to stderr
#               and -o FILE. The pass is named PASS+strace; strace slows
#               every call, so its CPU figures are not timings: use a
#               paced case, e.g. -s -c 64:100000:20000pps
#               -p "agent agent-metrics agent-scraped"
#   -B          do not build (use target/release as it is)
#   -k          keep the run directory (logs, configs) for inspection
# Environment: XRPCAPD=PATH runs that agent binary instead of
# target/release/xrpcapd; XRPCAPD_BASE=PATH is the agent-base pass's
# binary (an A/B of two builds, interleaved). RPCAPD=PATH runs
# that libpcap rpcapd; by default the libpcap-rpcapd passes take the one
# scripts/libpcap-remote.sh builds from Debian's libpcap source (as the
# interop tests do: once, into .cache/libpcap-remote of the repository,
# needs deb-src access to the Debian mirror, gcc, make, flex, bison,
# libssl-dev; nothing of it is committed). STATS_INTERVAL=SECS is the
# sensor's --stats-interval (default 0.5, so each run's last STATS reply
# comes soon after the traffic; the sensor's own default is 5): every STATS
# request wakes the capturer's control thread.
#
# Not part of scripts/test.sh: a benchmark reports figures, it asserts nothing.
set -euo pipefail

RUNS=3
CASES="64:2000000:top 1500:500000:top 64:1000000:100000pps 1500:250000:25000pps"
PASSES="agent tcpdump"
OUT=/tmp/xrpcap-forward.tsv
BUILD=1
KEEP=0
AGENT_INI=""
TCPDUMP_ARGS=""
MIRROR=0
STRACE=0
SCRAPE=0
SCRAPE_EVERY=${SCRAPE_EVERY:-1}
STATS_INTERVAL=${STATS_INTERVAL:-0.5}
STATS_WAIT=$(awk -v i="$STATS_INTERVAL" 'BEGIN { print i + 0.1 }')
METRICS_ADDR=10.200.2.1:9917
while getopts "r:c:p:o:a:T:Bmksh" opt; do
    case $opt in
        r) RUNS=$OPTARG ;;
        c) CASES=$OPTARG ;;
        p) PASSES=$OPTARG ;;
        o) OUT=$OPTARG ;;
        a) AGENT_INI=$OPTARG ;;
        T) TCPDUMP_ARGS=$OPTARG ;;
        B) BUILD=0 ;;
        m) MIRROR=1 ;;
        s) STRACE=1 ;;
        k) KEEP=1 ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "forward.sh: needs root (namespaces, trafgen)" >&2; exit 1; }
for t in trafgen tcpdump taskset setsid ip; do
    command -v $t >/dev/null || { echo "forward.sh: $t not found (apt-get install netsniff-ng tcpdump util-linux iproute2)" >&2; exit 1; }
done
case " $PASSES " in *" agent-scraped "*)
    command -v curl >/dev/null || { echo "forward.sh: curl not found (apt-get install curl)" >&2; exit 1; } ;;
esac
[ $STRACE = 0 ] || command -v strace >/dev/null || { echo "forward.sh: strace not found (apt-get install strace)" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
case " $PASSES " in *" libpcap-rpcapd"*)
    if [ -z "${RPCAPD:-}" ]; then
        # Builds it when the cache is missing (minutes), else reuses it.
        RPCAPD=$("$ROOT/scripts/libpcap-remote.sh" | tail -1)/sbin/rpcapd ||
            { echo "forward.sh: scripts/libpcap-remote.sh failed (libpcap's rpcapd)" >&2; exit 1; }
    fi
    [ -x "$RPCAPD" ] || { echo "forward.sh: libpcap's rpcapd not found at $RPCAPD" >&2; exit 1; }
    command -v ss >/dev/null || { echo "forward.sh: ss not found (apt-get install iproute2)" >&2; exit 1; } ;;
esac
if [ $BUILD = 1 ]; then
    (cd "$ROOT" && cargo build --release -p xrpcapd -p xrpcap-sensor) >&2
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AGENT=${XRPCAPD:-$TARGET/release/xrpcapd}
SENSOR=$TARGET/release/xrpcap-sensor
[ -x "$AGENT" ] && [ -x "$SENSOR" ] || { echo "forward.sh: release binaries missing in $TARGET/release" >&2; exit 1; }

GEN_CPU=0
CAP_CPU=1
PORT=9        # UDP destination of the generated frames (discard)
SENSOR_PORT=2003
RPCAPD_PORT=2002 # libpcap rpcapd's passive port (its default)
HZ=$(getconf CLK_TCK)
SFX=$$
GEN=xfb-gen-$SFX CAP=xfb-cap-$SFX SEN=xfb-sen-$SFX
WORK=$(mktemp -d /tmp/xrpcap-forward.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    sleep 0.2
    for n in $GEN $CAP $SEN; do ip netns del "$n" 2>/dev/null || true; done
    [ $KEEP = 1 ] && echo "run directory kept: $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- topology ---------------------------------------------------------------
for n in $GEN $CAP $SEN; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add g0 netns $GEN type veth peer name c0 netns $CAP
ip link add c1 netns $CAP numtxqueues 1 numrxqueues 1 type veth peer name s1 netns $SEN numtxqueues 1 numrxqueues 1
ip -n $GEN addr add 10.200.1.1/24 dev g0
ip -n $CAP addr add 10.200.1.2/24 dev c0
ip -n $CAP addr add 10.200.2.1/24 dev c1
ip -n $SEN addr add 10.200.2.2/24 dev s1
ip -n $GEN link set g0 up
ip -n $CAP link set c0 up
ip -n $CAP link set c1 up
ip -n $SEN link set s1 up
# For the agent-sink pass: a veth whose peer stays down (it frees every
# frame in its xmit, as fast as a device can; this kernel has no dummy
# driver), a static neighbour, and a table routing the sensor's address
# through it (used only while that pass adds its rule).
ip -n $CAP link add d0 numtxqueues 1 numrxqueues 1 type veth peer name d1 numtxqueues 1 numrxqueues 1
ip -n $CAP link set d0 up
ip -n $CAP route add 10.200.2.2/32 dev d0 table 100
ip -n $CAP neigh add 10.200.2.2 lladdr 02:00:00:00:00:02 dev d0 nud permanent
# For the tunnel export passes: ns sen counts the tunnel datagrams (VXLAN,
# GRE/ERSPAN) and drops them at its input hook (no decapsulation cost, no
# ICMP errors back).
ip netns exec $SEN nft -f - <<NFT
table ip xfb {
    counter tun { }
    chain in {
        type filter hook input priority 0; policy accept;
        udp dport 4789 counter name tun drop
        ip protocol gre counter name tun drop
    }
}
NFT
# RPS: the sensor namespace's IP/UDP receive work (and the segmentation of
# UDP GSO packets) runs on the generator's CPU instead of inside the agent's
# sendmmsg on CPU 1, as it would on another host behind a real NIC.
ip netns exec $SEN sh -c "echo $((1 << GEN_CPU)) > /sys/class/net/s1/queues/rx-0/rps_cpus"
sleep 0.5
mac() { ip -n "$1" -o link show "$2" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }
hexmac() { echo "$1" | sed 's/^/0x/;s/:/, 0x/g'; }
G0MAC=$(hexmac "$(mac $GEN g0)")
C0MAC=$(hexmac "$(mac $CAP c0)")
# Mirror-like traffic: a destination MAC that is nobody's here.
[ $MIRROR = 1 ] && DSTMAC=$(hexmac 02:00:00:00:00:99) || DSTMAC=$C0MAC

# trafgen config: Ethernet / IPv4 / UDP 10.200.1.1:1024 → 10.200.1.2:9, SIZE
# bytes in all (the captured length), payload filled with 0x5a; to c0's MAC,
# or with -m to a foreign one.
trafgen_cfg() {
    local size=$1 ip_len=$(($1 - 14)) udp_len=$(($1 - 34)) fill=$(($1 - 42))
    cat <<EOF
{
  $DSTMAC, $G0MAC, c16(0x0800),
  0x45, 0x00, c16($ip_len), c16(1), c16(0x4000), 64, 17, csumip(14, 33),
  10, 200, 1, 1, 10, 200, 1, 2,
  c16(1024), c16($PORT), c16($udp_len), c16(0),
  fill(0x5a, $fill)
}
EOF
}

# ---- measurement helpers ----------------------------------------------------
# utime+stime of a process (all threads), in ns.
cpu_ticks_ns() { awk -v hz="$HZ" '{ sub(/^.*\) /, ""); split($0, f, " "); printf "%.0f\n", (f[12] + f[13]) * 1e9 / hz }' "/proc/$1/stat"; }
# Sum of the run time of every thread of a process (schedstat), in ns.
cpu_sched_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
# Each thread's run time (schedstat, ns) and wake-ups, "tid comm ns ctxsw" lines.
thread_cpu() {
    local t
    for t in /proc/"$1"/task/*; do
        echo "${t##*/} $(cat "$t/comm" 2>/dev/null) $(cut -d' ' -f1 "$t/schedstat" 2>/dev/null) $(ctxsw_of "$t/status")"
    done
}
# Per-thread CPU (ms per s of the window) and wake-ups per s between two
# thread_cpu snapshots, "comm=ms/s:wakeups/s" for the threads that ran.
thread_report() { # before after window_ns
    awk -v w="$3" 'NR == FNR { ns[$1] = $3; cs[$1] = $4; next }
        { d = $3 - ns[$1]; if (d > 0) printf "%s%s=%.2fms/s:%.1fw/s", sep, $2, d / w * 1e3, ($4 - cs[$1]) / w * 1e9; sep = "," }' "$1" "$2"
}
# Context switches of every thread of a process (sleeps = wake-ups).
ctxsw() { ctxsw_of /proc/"$1"/task/*/status; }
# The same over the given /proc status files.
ctxsw_of() { cat "$@" 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }'; }
# Busy time of the whole machine (all CPUs), in ns: user + nice + system +
# irq + softirq ticks of /proc/stat's "cpu" line.
machine_busy_ns() { awk -v hz="$HZ" '$1 == "cpu" { printf "%.0f\n", ($2 + $3 + $4 + $7 + $8) * 1e9 / hz; exit }' /proc/stat; }
now_ns() { date +%s%N; }
vmhwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# A process and its descendants, parent first (libpcap's rpcapd forks).
proc_tree() {
    local c
    echo "$1"
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do proc_tree "$c"; done
}
# The sum of FUNCTION (one of the above) over the tree of PID.
tree_sum() { # function pid
    local p v s=0
    for p in $(proc_tree "$2"); do
        v=$("$1" "$p" 2>/dev/null) || v=0
        s=$((s + ${v:-0}))
    done
    echo "$s"
}
# The largest peak RSS in the tree of PID (its session process).
tree_vmhwm_kib() {
    local p v m=0
    for p in $(proc_tree "$1"); do
        v=$(vmhwm_kib "$p" 2>/dev/null) || v=0
        [ "${v:-0}" -gt $m ] && m=$v
    done
    echo "$m"
}
ifstat() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"; }
# One field of the "Ip:" line of /proc/net/snmp in a namespace.
snmp_ip() {
    ip netns exec "$1" awk -v k="$2" '/^Ip:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $(c[k]) }' /proc/net/snmp
}
# Waits (bounded) until COMMAND succeeds.
wait_until() {
    local tries=$1; shift
    for _ in $(seq "$tries"); do "$@" && return 0; sleep 0.1; done
    return 1
}
# The child of strace (pid $1) that runs $AGENT, if there is one yet.
traced_agent() {
    local c want
    want=$(readlink -f "$AGENT")
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        [ "$(readlink /proc/"$c"/exe 2>/dev/null)" = "$want" ] && { echo "$c"; return 0; }
    done
    return 1
}
has_thread() { grep -qx "$2" /proc/"$1"/task/*/comm 2>/dev/null; }
# Waits until a counter moves by at most 4 in 0.5 s (the control connection's
# STATS replies still trickle), bounded by 10 s.
wait_quiet() {
    local last=-1 cur quiet=0
    for _ in $(seq 40); do
        cur=$("$@")
        if [ $last -ge 0 ] && [ $((cur - last)) -le 4 ]; then
            quiet=$((quiet + 1)); [ $quiet -ge 2 ] && return 0
        else
            quiet=0
        fi
        last=$cur
        sleep 0.25
    done
}
stat_field() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p" | head -1; }

run_trafgen() { # size count rate → sets GEN_NS (trafgen's send time)
    local size=$1 count=$2 rate=$3 cfg=$WORK/frame-$1.cfg
    trafgen_cfg "$size" >"$cfg"
    local rate_args=() rt=()
    case $rate in
        top) ;;
        # SCHED_FIFO: a real-time thread has no timer slack, so the gap is
        # TIME plus the send, not TIME plus the default 50 us of slack.
        gap*) rate_args=(-t "${rate#gap}") rt=(chrt -f 1) ;;
        *) rate_args=(-b "$rate") ;;
    esac
    ip netns exec $GEN taskset -c $GEN_CPU "${rt[@]}" trafgen -o g0 -i "$cfg" -n "$count" -P 1 -Q "${rate_args[@]}" \
        >"$WORK/trafgen.log" 2>&1 || { grep -iv "socket memory" "$WORK/trafgen.log" | tail -2 >&2; return 1; }
    # trafgen's own figure: "S sec, U usec on CPU0 (N packets)", the time it
    # spent sending (without its start-up).
    GEN_NS=$(tr -d '\r' <"$WORK/trafgen.log" | sed -n 's/^ *\([0-9]*\) sec, \([0-9]*\) usec on CPU.*/\1 \2/p' |
        awk '{ t += $1 * 1e9 + $2 * 1e3 } END { printf "%.0f\n", t }')
}

# Shared per-run accounting around the traffic: fills W_BYTES, W_PKTS, FRAGS.
# The device the agent's data leave by: c1 (to the sensor) or d0 (sink).
DATA_DEV=c1
# Packets it sent or, for d0, dropped in its xmit.
data_pkts() { echo $(($(ifstat $CAP $DATA_DEV tx_packets) + $(ifstat $CAP $DATA_DEV tx_dropped))); }
snap_before() {
    # The machine's busy rate with everything started and the link idle.
    local m0=$(machine_busy_ns) t0=$(now_ns)
    sleep 1
    M0=$(machine_busy_ns) T0=$(now_ns)
    BASE_NS=$((M0 - m0)) BASE_WALL=$((T0 - t0))
    B0=$(ifstat $CAP $DATA_DEV tx_bytes) P0=$(data_pkts)
    F0=$(snmp_ip $CAP FragCreates) R0=$(snmp_ip $SEN ReasmReqds)
    L0=$(($(ifstat $GEN g0 tx_dropped) + $(ifstat $CAP c0 rx_dropped)))
}
snap_after() {
    # Busy time of the window minus the idle rate over the same time.
    local m1=$(machine_busy_ns) t1=$(now_ns)
    MACHINE_NS=$(awk -v d=$((m1 - M0)) -v w=$((t1 - T0)) -v b="$BASE_NS" -v bw="$BASE_WALL" \
        'BEGIN { printf "%.0f\n", d - b * w / bw }')
    BASE_PCT=$(awk -v b="$BASE_NS" -v bw="$BASE_WALL" 'BEGIN { printf "%.0f\n", 100 * b / bw }')
    W_BYTES=$(($(ifstat $CAP $DATA_DEV tx_bytes) - B0))
    W_PKTS=$(($(data_pkts) - P0))
    FRAGS=$(($(snmp_ip $CAP FragCreates) - F0 + $(snmp_ip $SEN ReasmReqds) - R0))
    # Frames the veth itself dropped before any capture could see them.
    LINK_DROPS=$(($(ifstat $GEN g0 tx_dropped) + $(ifstat $CAP c0 rx_dropped) - L0))
}

pass_agent() { # size count rate [sink|sensor [name]]
    local size=$1 count=$2 rate=$3 mode=${4:-sensor} name=${5:-agent} d=$WORK/agent
    rm -rf "$d"; mkdir -p "$d"
    cat >"$d/rpcapd.ini" <<EOF
ActiveClient = 10.200.2.2, $SENSOR_PORT, ifname=c0
NullAuthPermit = YES
WorkerCpu = $CAP_CPU
$AGENT_INI
EOF
    ip netns exec $SEN taskset -c $GEN_CPU "$SENSOR" --listen 10.200.2.2:$SENSOR_PORT \
        --udp-ports 2004-2005 --ifname c0 --filter "udp dst port $PORT" \
        --stats-interval "$STATS_INTERVAL" --stats-file "$d/sensor.stats" -w - >/dev/null 2>"$d/sensor.log" &
    local spid=$!; PIDS+=($spid); RUN_PIDS=($spid)
    local wrap=()
    [ $STRACE = 1 ] && wrap=(strace -f -ff -ttt -qq -o "$d/st") name=$name+strace
    ip netns exec $CAP taskset -c $CAP_CPU "${wrap[@]}" "$AGENT" -f "$d/rpcapd.ini" 2>"$d/agent.log" &
    local apid=$! tpid=$!; PIDS+=($tpid); RUN_PIDS+=($tpid)
    # `ip netns exec` execs, so $apid is the agent itself, or strace, whose
    # child the agent is.
    if [ $STRACE = 1 ]; then
        # strace forks short-lived children of its own at start (its
        # ptrace feature tests): the agent is the child running $AGENT.
        wait_until 100 traced_agent $tpid >/dev/null || { echo "strace did not start the agent" >&2; return 1; }
        apid=$(traced_agent $tpid)
        # The agent first: killing strace first would leave it running.
        PIDS=("$apid" "${PIDS[@]}"); RUN_PIDS=("$apid" "${RUN_PIDS[@]}")
    fi
    wait_until 100 has_thread $apid dp-c0 || {
        echo "agent capture did not start (pid $apid, threads: $(cat /proc/$apid/task/*/comm 2>/dev/null | tr '\n' ' '))" >&2
        cat "$d/agent.log" "$d/sensor.log" >&2; return 1; }
    local scraper=
    if [ "$SCRAPE" = 1 ]; then
        : >"$d/scrapes"
        # From ns cap over its lo: the scrapes do not touch c1's counters.
        (while :; do
            ip netns exec $CAP curl -s -o /dev/null -w '%{http_code}\n' "http://$METRICS_ADDR/metrics" >>"$d/scrapes" 2>/dev/null || echo fail >>"$d/scrapes"
            sleep "$SCRAPE_EVERY"
        done) &
        scraper=$!; PIDS+=($scraper); RUN_PIDS+=($scraper)
    fi
    sleep 0.3
    [ "$mode" = sink ] && DATA_DEV=d0
    snap_before
    local c0=$(cpu_ticks_ns $apid) s0=$(cpu_sched_ns $apid) x0=$(ctxsw $apid)
    thread_cpu $apid >"$d/threads.0"
    local w0=$(now_ns) k0=0
    [ -n "$scraper" ] && k0=$(wc -l <"$d/scrapes")
    run_trafgen "$size" "$count" "$rate" || return 1
    wait_quiet data_pkts
    local c1=$(cpu_ticks_ns $apid) s1=$(cpu_sched_ns $apid) x1=$(ctxsw $apid)
    thread_cpu $apid >"$d/threads.1"
    local w1=$(now_ns) k1=0
    [ -n "$scraper" ] && k1=$(wc -l <"$d/scrapes")
    snap_after
    # The threads' names, for the strace report.
    cut -d' ' -f1,2 "$d/threads.1" >"$d/comm"
    sleep "$STATS_WAIT" # one more STATS reply, with the final agent counters
    local hwm=$(vmhwm_kib $apid)
    if [ -n "$scraper" ]; then kill $scraper; wait $scraper 2>/dev/null || true; fi
    kill -INT $spid; wait $spid 2>/dev/null || true
    kill -TERM $apid
    # Bounded: a traced agent (strace's child, reaped by it) that does not
    # end is killed after 10 s.
    if [ $STRACE = 1 ] && ! wait_until 100 eval '! kill -0 $apid 2>/dev/null'; then
        echo "agent $apid did not stop on SIGTERM: killed" >&2; kill -KILL $apid
    fi
    wait $tpid 2>/dev/null || true
    DATA_DEV=c1
    local st=$d/sensor.stats
    local extra=""
    [ -n "$scraper" ] && extra=" scrapes=$((k1 - k0)) scrape_fails=$(grep -cv '^200$' "$d/scrapes")"
    extra="$extra threads=$(thread_report "$d/threads.0" "$d/threads.1" $((w1 - w0)))"
    # Frames forwarded: the sensor's count, or the agent's own for the sink.
    local fwd=$(stat_field $st packets)
    [ "$mode" = sink ] && fwd=$(stat_field $st agent_sent)
    [ $STRACE = 1 ] && extra="$extra $(strace_report "$d" "$apid" "$name" "$w0" "$w1" "$fwd")"
    if [ "$mode" = sink ]; then
        # The sensor saw no data: what the agent sent comes from its last
        # STATS reply; d0 counts its drops, not its bytes, so no wire figures.
        local sent=$(stat_field $st agent_sent)
        emit "$name-sink" "$size" "$count" "$rate" "${sent:-0}" $((c1 - c0)) $((s1 - s0)) "$hwm" 0 0 0 "$FRAGS" \
            "ctxsw=$((x1 - x0)) link_drops=$LINK_DROPS ring_drops=$(stat_field $st agent_krnldrop) send_drops=$(stat_field $st agent_ifdrop) gso_sends=$W_PKTS$extra"
        return 0
    fi
    local got=$(stat_field $st packets) bytes=$(stat_field $st bytes)
    local dgrams=$(($(stat_field $st udpstr_datagrams) + $(stat_field $st lost_datagrams)))
    got=${got:-0} bytes=${bytes:-0}
    # UDP GSO: c1 counts a super-packet (one set of headers, many datagrams)
    # as one packet. On a wire every datagram has its own Ethernet + IPv4 +
    # UDP headers (42 bytes), so count them per datagram the sensor saw.
    local wire=$((W_BYTES - 42 * W_PKTS + 42 * dgrams))
    emit "$name" "$size" "$count" "$rate" "$got" $((c1 - c0)) $((s1 - s0)) "$hwm" \
        "$wire" "$dgrams" "$bytes" "$FRAGS" \
        "ctxsw=$((x1 - x0)) link_drops=$LINK_DROPS ring_drops=$(stat_field $st agent_krnldrop) send_drops=$(stat_field $st agent_ifdrop) sensor_lost=$(stat_field $st lost) sensor_socket_drops=$(stat_field $st socket_drops) gso_sends=$W_PKTS delay_max_us=$(stat_field $st delay_max_us) delay_mean_us=$(stat_field $st delay_mean_us)$extra"
}

# System calls of the agent's threads between W0 and W1 (ns since the epoch),
# from the per-thread files of `strace -ff -ttt` (a call counts when it
# entered the kernel in the window, signals and exits are not calls). Prints
# the notes' fields; a "# strace" line per thread goes to stderr and $OUT.
strace_report() { # dir agent_pid pass w0 w1 received
    local d=$1 apid=$2 pass=$3 w0=$4 w1=$5 got=${6:-0}
    awk -v s="$(awk -v n="$w0" 'BEGIN { printf "%.6f", n / 1e9 }')" \
        -v e="$(awk -v n="$w1" 'BEGIN { printf "%.6f", n / 1e9 }')" -v main="$apid" '
        FNR == NR { comm[$1] = $2; next }
        FNR == 1 { tid = FILENAME; sub(/.*\./, "", tid); tids[tid] = 1 }
        $1 + 0 < s || $1 + 0 > e || $2 ~ /^(\+\+\+|---|<\.\.\.)/ { next }
        { call = $2; sub(/\(.*/, "", call); n[tid]++; c[tid, call]++; calls[call] = 1 }
        END {
            for (t in tids) {
                if (!n[t]) continue
                name = (t in comm) ? comm[t] : "(exited)"
                # Unnamed threads take the name of the thread that made
                # them: the only unnamed ones of an AF_PACKET agent are
                # tiny_http acceptor and pool threads.
                group = (t == main) ? "control" : (name ~ /^dp-/) ? "datapath" : \
                        (name == "metrics" || name == comm[main]) ? "http" : name
                top = ""
                for (k in calls) if (c[t, k]) top = top c[t, k] " " k ";"
                printf "%s\t%s\t%s\t%d\t%s\n", group, t, name, n[t], top
            }
        }' "$d/comm" "$d"/st.* >"$d/strace.threads"
    # One line per thread, its calls most frequent first.
    while IFS=$'\t' read -r group tid tname total top; do
        echo "# strace $pass thread $tid ($tname, $group): $total calls: $(echo "$top" | tr ';' '\n' | sort -rn | awk 'NF { printf "%s%s %s", sep, $2, $1; sep = ", " }')"
    done <"$d/strace.threads" | sort | tee -a "$OUT" >&2
    awk -F'\t' -v got="$got" '
        { all += $4; g[$1] += $4 }
        END {
            n = got > 0 ? got : 1
            printf "syscalls=%d sys_per_pkt=%.4f dp_syscalls=%d dp_per_pkt=%.4f control=%d http=%d\n",
                all, all / n, g["datapath"], g["datapath"] / n, g["control"], g["http"]
        }' "$d/strace.threads"
}

# The agent's CPU when its datagrams leave through a device that frees them
# at once (d0, routed by policy for the data ports only), as
# with a sensor on another machine behind a NIC: no sensor receive work, no
# cross-CPU wake-ups or skb frees on the agent's CPU. Loss is taken from the
# agent's own counters (STATS), the sensor sees only the control connection.
pass_agent-sink() { # size count rate [name]
    ip -n $CAP rule add ipproto udp dport 2004-2005 lookup 100 2>/dev/null || true
    local rc=0
    pass_agent "$1" "$2" "$3" sink "${4:-agent}" || rc=$?
    ip -n $CAP rule del ipproto udp dport 2004-2005 lookup 100 2>/dev/null || true
    return $rc
}

# The agent binary XRPCAPD_BASE (an earlier build) as the agent pass: an
# A/B of two builds interleaved in one invocation, on the same load.
pass_agent-base() { # size count rate
    local AGENT=${XRPCAPD_BASE:?the agent-base pass needs XRPCAPD_BASE=PATH}
    pass_agent "$1" "$2" "$3" sensor agent-base
}

# The agent exporting c0 in a tunnel (TunnelClient), no sensor: received =
# the tunnel datagrams ns sen's nftables counter saw; the agent's drops
# (ring, send, too big) from its final counter line.
tun_count() { ip netns exec $SEN nft list counter ip xfb tun | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }
pass_agent-tunnel() { # size count rate kind
    local size=$1 count=$2 rate=$3 kind=$4 d=$WORK/agent
    rm -rf "$d"; mkdir -p "$d"
    cat >"$d/rpcapd.ini" <<INI
Passive = no
TunnelClient = $kind, 10.200.2.2, ifname=c0, filter=udp dst port $PORT
WorkerCpu = $CAP_CPU
$AGENT_INI
INI
    ip netns exec $CAP taskset -c $CAP_CPU "$AGENT" -f "$d/rpcapd.ini" 2>"$d/agent.log" &
    local apid=$!; PIDS+=($apid); RUN_PIDS=($apid)
    wait_until 100 has_thread $apid dp-c0 || { echo "agent export did not start" >&2; cat "$d/agent.log" >&2; return 1; }
    sleep 0.3
    ip netns exec $SEN nft reset counter ip xfb tun >/dev/null
    snap_before
    local c0=$(cpu_ticks_ns $apid) s0=$(cpu_sched_ns $apid) x0=$(ctxsw $apid)
    run_trafgen "$size" "$count" "$rate" || return 1
    wait_quiet data_pkts
    local c1=$(cpu_ticks_ns $apid) s1=$(cpu_sched_ns $apid) x1=$(ctxsw $apid)
    snap_after
    local hwm=$(vmhwm_kib $apid)
    kill -TERM $apid; wait $apid 2>/dev/null || true
    local got fin
    got=$(tun_count)
    fin=$(grep -o 'final tunnel=.*' "$d/agent.log" | tail -1)
    fin_field() { echo "$fin" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    emit "agent-$kind" "$size" "$count" "$rate" "${got:-0}" $((c1 - c0)) $((s1 - s0)) "$hwm" \
        "$W_BYTES" "$W_PKTS" $((${got:-0} * size)) "$FRAGS" \
        "ctxsw=$((x1 - x0)) link_drops=$LINK_DROPS ring_drops=$(fin_field ring_drops) send_drops=$(fin_field send_drops) too_big=$(fin_field too_big)"
}
pass_agent-vxlan() { pass_agent-tunnel "$@" vxlan; }
pass_agent-gre() { pass_agent-tunnel "$@" gre; }
pass_agent-erspan2() { pass_agent-tunnel "$@" erspan2; }
pass_agent-erspan3() { pass_agent-tunnel "$@" erspan3; }

# The agent with `Capture = afxdp:c0` (XDP program + AF_XDP socket, XdpMode
# auto: native XDP on veth, copy mode). c0 is a dedicated capture link here:
# AF_XDP takes the captured frames away from ns cap's stack, which only
# spares the kernel the discard port's UDP receive of the sink traffic.
pass_agent-afxdp() { # size count rate
    local saved=$AGENT_INI rc=0
    AGENT_INI="$AGENT_INI
Capture = afxdp:c0"
    pass_agent "$@" sensor agent-afxdp || rc=$?
    AGENT_INI=$saved
    return $rc
}

# agent-afxdp to the sink: the AF_XDP agent's CPU without the local
# sensor's side effects on it (with the sensor, RPS hands the sensor's
# receive to CPU 0 with an IPI whenever CPU 0's backlog is idle - with
# AF_PACKET it rarely is, as c0's own receive runs through it, with native
# XDP it nearly always is - and the kernel returns the freed skbs to the
# agent's CPU with more IPIs).
pass_agent-afxdp-sink() { # size count rate
    local saved=$AGENT_INI rc=0
    AGENT_INI="$AGENT_INI
Capture = afxdp:c0"
    pass_agent-sink "$@" agent-afxdp || rc=$?
    AGENT_INI=$saved
    return $rc
}

# The agent with its metrics endpoint on (MetricsListen), not scraped.
pass_agent-metrics() { # size count rate
    local saved=$AGENT_INI rc=0
    AGENT_INI="$AGENT_INI
MetricsListen = $METRICS_ADDR"
    pass_agent "$@" sensor agent-metrics || rc=$?
    AGENT_INI=$saved
    return $rc
}

# agent-metrics, scraped every SCRAPE_EVERY seconds by curl (a Prometheus
# server's request, from ns cap over lo) while the capture runs.
pass_agent-scraped() { # size count rate
    local saved=$AGENT_INI rc=0
    AGENT_INI="$AGENT_INI
MetricsListen = $METRICS_ADDR"
    SCRAPE=1
    pass_agent "$@" sensor agent-scraped || rc=$?
    SCRAPE=0
    AGENT_INI=$saved
    return $rc
}

# tcpdump with a 32 MiB buffer, the agent's default ring size.
pass_tcpdump-B32M() { # size count rate
    local saved=$TCPDUMP_ARGS rc=0
    TCPDUMP_ARGS="$TCPDUMP_ARGS -B 32768"
    pass_tcpdump "$@" tcpdump-B32M || rc=$?
    TCPDUMP_ARGS=$saved
    return $rc
}

# libpcap's rpcapd capturing c0 (pinned to CPU 1), to xrpcap-sensor in ns
# sen over UDP. passive: rpcapd listens on 10.200.2.1:2002 and the sensor
# dials it (--connect); active: rpcapd dials the sensor's --listen. Either
# way rpcapd forks a process for the session (passive: per connection;
# active: per -a entry, at start), which captures in a thread of its own
# and sends one datagram per packet: the CPU is that of the whole process
# tree. Loss and the kernel's drops come from the sensor (its written
# records, rpcapd's last STATS reply).
pass_libpcap-rpcapd-mode() { # size count rate passive|active
    local size=$1 count=$2 rate=$3 mode=$4 d=$WORK/rpcapd name=libpcap-rpcapd
    [ "$mode" = active ] && name=libpcap-rpcapd-active
    rm -rf "$d"; mkdir -p "$d"
    local sargs=(--listen none --connect 10.200.2.1:$RPCAPD_PORT) rargs=(-b 10.200.2.1 -p $RPCAPD_PORT -4 -n)
    # Active: not active-only (-v), with which rpcapd 1.10's main process
    # goes straight to its exit, kill(0, SIGKILL), killing the process that
    # dials; its passive listener stays, on ns cap's lo.
    [ "$mode" = active ] && sargs=(--listen 10.200.2.2:$SENSOR_PORT) rargs=(-a 10.200.2.2,$SENSOR_PORT -b 127.0.0.1 -p $RPCAPD_PORT -4 -n)
    start_sensor() {
        ip netns exec $SEN taskset -c $GEN_CPU "$SENSOR" "${sargs[@]}" \
            --udp-ports 2004-2005 --ifname c0 --filter "udp dst port $PORT" \
            --stats-interval "$STATS_INTERVAL" --stats-file "$d/sensor.stats" -w - >/dev/null 2>"$d/sensor.log" &
        spid=$!; PIDS+=($spid); RUN_PIDS+=($spid)
    }
    local spid=
    RUN_PIDS=()
    [ "$mode" = active ] && start_sensor
    # In a session of its own: on SIGTERM rpcapd ends with kill(0, SIGKILL),
    # its whole process group, which would be this script's. (setsid
    # execs: a background job of a shell without job control is no group
    # leader.)
    ip netns exec $CAP setsid taskset -c $CAP_CPU "$RPCAPD" "${rargs[@]}" >"$d/rpcapd.log" 2>&1 &
    local rpid=$!; PIDS+=($rpid); RUN_PIDS+=($rpid)
    if [ "$mode" = passive ]; then
        wait_until 100 eval 'ip netns exec $CAP ss -Hltn "sport = :$RPCAPD_PORT" | grep -q .' ||
            { echo "rpcapd did not listen" >&2; cat "$d/rpcapd.log" >&2; return 1; }
        start_sensor
    fi
    # Capturing: a process of the tree (not the parent) runs a second
    # thread, rpcapd's data thread, started by STARTCAP.
    rpcapd_capturing() {
        local p
        for p in $(proc_tree $rpid | tail -n +2); do
            [ "$(ls /proc/"$p"/task 2>/dev/null | wc -l)" -ge 2 ] && return 0
        done
        return 1
    }
    wait_until 100 rpcapd_capturing || {
        echo "rpcapd capture did not start (tree: $(proc_tree $rpid | tr '\n' ' '))" >&2
        cat "$d/rpcapd.log" "$d/sensor.log" >&2; return 1; }
    local tree p
    tree=$(proc_tree $rpid | tail -n +2)
    PIDS+=($tree); RUN_PIDS=($tree "${RUN_PIDS[@]}")
    sleep 0.3
    snap_before
    local c0=$(tree_sum cpu_ticks_ns $rpid) s0=$(tree_sum cpu_sched_ns $rpid) x0=$(tree_sum ctxsw $rpid)
    run_trafgen "$size" "$count" "$rate" || return 1
    wait_quiet data_pkts
    local c1=$(tree_sum cpu_ticks_ns $rpid) s1=$(tree_sum cpu_sched_ns $rpid) x1=$(tree_sum ctxsw $rpid)
    snap_after
    sleep "$STATS_WAIT" # one more STATS reply, with rpcapd's final counters
    local hwm=$(tree_vmhwm_kib $rpid)
    kill -INT $spid; wait $spid 2>/dev/null || true
    # The session process ends with its connection (passive); the parent
    # and an active child run until told.
    for p in $tree $rpid; do kill -TERM "$p" 2>/dev/null || true; done
    wait $rpid 2>/dev/null || true
    local st=$d/sensor.stats
    local got=$(stat_field $st packets) bytes=$(stat_field $st bytes)
    got=${got:-0} bytes=${bytes:-0}
    emit "$name" "$size" "$count" "$rate" "$got" $((c1 - c0)) $((s1 - s0)) "$hwm" \
        "$W_BYTES" "$W_PKTS" "$bytes" "$FRAGS" \
        "ctxsw=$((x1 - x0)) link_drops=$LINK_DROPS kernel_drops=$(stat_field $st agent_krnldrop) rpcapd_sent=$(stat_field $st agent_sent) sensor_lost=$(stat_field $st lost) sensor_socket_drops=$(stat_field $st socket_drops) delay_max_us=$(stat_field $st delay_max_us) delay_mean_us=$(stat_field $st delay_mean_us) processes=$(($(echo $tree | wc -w) + 1))"
}
pass_libpcap-rpcapd() { pass_libpcap-rpcapd-mode "$@" passive; }
pass_libpcap-rpcapd-active() { pass_libpcap-rpcapd-mode "$@" active; }

pass_tcpdump() { # size count rate [name]
    local size=$1 count=$2 rate=$3 name=${4:-tcpdump} d=$WORK/tcpdump
    rm -rf "$d"; mkdir -p "$d"
    ip netns exec $CAP taskset -c $CAP_CPU tcpdump -i c0 -n $TCPDUMP_ARGS -w /dev/null "udp dst port $PORT" 2>"$d/tcpdump.log" &
    local tpid=$!; PIDS+=($tpid); RUN_PIDS=($tpid)
    wait_until 100 grep -qs "listening on" "$d/tcpdump.log" || { cat "$d/tcpdump.log" >&2; return 1; }
    sleep 0.3
    snap_before
    local c0=$(cpu_ticks_ns $tpid) s0=$(cpu_sched_ns $tpid) x0=$(ctxsw $tpid)
    run_trafgen "$size" "$count" "$rate" || return 1
    # tcpdump's ring blocks retire after its 1 s read timeout.
    sleep 1.5
    local c1=$(cpu_ticks_ns $tpid) s1=$(cpu_sched_ns $tpid) x1=$(ctxsw $tpid)
    snap_after
    local hwm=$(vmhwm_kib $tpid)
    kill -INT $tpid; wait $tpid 2>/dev/null || true
    local got kdrop
    got=$(sed -n 's/^\([0-9]*\) packets\{0,1\} captured.*/\1/p' "$d/tcpdump.log")
    kdrop=$(sed -n 's/^\([0-9]*\) packets\{0,1\} dropped by kernel.*/\1/p' "$d/tcpdump.log")
    emit "$name" "$size" "$count" "$rate" "${got:-0}" $((c1 - c0)) $((s1 - s0)) "$hwm" \
        0 0 $((${got:-0} * size)) 0 "ctxsw=$((x1 - x0)) link_drops=$LINK_DROPS kernel_drops=${kdrop:-?}"
}

# One TSV row: pass size count rate gen_pps received loss cpu_ns/pkt
# (utime+stime) cpu_ns/pkt (schedstat) machine_ns/pkt (busy CPU of the
# whole machine per frame sent, idle rate subtracted) wire/captured
# datagrams/pkt frags peak_rss_kib notes (+ base_busy: the machine's busy
# share of its 2 CPUs just before the run, the noise floor of machine_ns)
emit() {
    local pass=$1 size=$2 count=$3 rate=$4 got=$5 cpu=$6 sched=$7 hwm=$8 wb=$9 wp=${10} capb=${11} frags=${12} notes=${13}
    awk -v OFS='\t' -v pass="$pass" -v size="$size" -v count="$count" -v rate="$rate" -v gen="$GEN_NS" \
        -v got="$got" -v cpu="$cpu" -v sched="$sched" -v hwm="$hwm" -v wb="$wb" -v wp="$wp" \
        -v capb="$capb" -v frags="$frags" -v notes="$notes base_busy=$BASE_PCT%" -v machine="$MACHINE_NS" 'BEGIN {
        n = (got > 0) ? got : 1
        wired = pass !~ /^tcpdump/ && pass !~ /sink/
        print pass, size, count, rate, sprintf("%.0f", count / (gen / 1e9)), got, count - got,
              sprintf("%.1f", cpu / n), sprintf("%.1f", sched / n), sprintf("%.1f", machine / count),
              wired ? sprintf("%.4f", wb / (capb > 0 ? capb : 1)) : "-",
              wired ? sprintf("%.4f", wp / n) : "-",
              wired ? frags : "-", hwm, notes
    }' | tee -a "$OUT"
}

echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), load $(cut -d' ' -f1-3 /proc/loadavg); agent $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?); agent ini extra: '${AGENT_INI}'; tcpdump extra: '${TCPDUMP_ARGS}'; traffic: $([ $MIRROR = 1 ] && echo 'mirror-like (foreign dst MAC)' || echo "to c0's MAC")" | tee -a "$OUT"
printf 'pass\tsize\tsent\trate\tgen_pps\treceived\tloss\tcpu_ns_pkt\tsched_ns_pkt\tmachine_ns_pkt\twire_per_cap\tdgram_per_pkt\tfrags\tpeak_rss_kib\tnotes\n' | tee -a "$OUT"
ROWS=$WORK/rows.tsv
: >"$ROWS"
for case in $CASES; do
    IFS=: read -r size count rate <<<"$case"
    for run in $(seq "$RUNS"); do
        for pass in $PASSES; do
            # No pipeline here: the pass must run in this shell (PIDS, cleanup).
            # trafgen sometimes gives up on a full veth (EAGAIN on its TX
            # ring) when the machine is loaded: such a run is discarded
            # and repeated, at most 3 times.
            for try in 1 2 3; do
                if "pass_$pass" "$size" "$count" "$rate" >>"$ROWS"; then
                    tail -1 "$ROWS"
                    break
                fi
                echo "# $pass $size:$count:$rate: run failed (try $try), repeating" | tee -a "$OUT" >&2
                for p in "${RUN_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
            done
        done
    done
done

# Medians per pass and case.
echo
echo "median of $RUNS runs:" | tee -a "$OUT"
awk -F'\t' -v OFS='\t' '
    function median(key, col,   n, i, j, t, a) {
        n = split(vals[key, col], a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        if (a[1] == "-") return "-"
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    BEGIN { print "pass", "size", "rate", "gen_pps", "loss", "cpu_ns_pkt", "sched_ns_pkt", "machine_ns_pkt", "wire_per_cap", "dgram_per_pkt", "frags", "peak_rss_kib" }
    {
        key = $1 OFS $2 OFS $4
        if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
        for (c = 5; c <= 14; c++) vals[key, c] = vals[key, c] " " $c
    }
    END {
        for (k = 1; k <= nk; k++) {
            line = order[k]
            for (c = 5; c <= 14; c++) if (c != 6) line = line OFS median(order[k], c)
            print line
        }
    }' "$ROWS" | tee -a "$OUT"
