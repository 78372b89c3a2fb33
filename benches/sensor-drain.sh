#!/bin/sh
# Receive-path scaling (issue 18 item 6, --receive-threads): the sensor
# (release build) is stopped, its sockets' backlogs are filled, then it
# drains them alone; 1 and THREADS receive threads, alternating, RUNS pairs.
#   benches/sensor-drain.sh                      # THREADS=2 AGENTS=64 DGRAMS=4000 RECORDS=17
#   RECORDS=1 benches/sensor-drain.sh            # small datagrams: per-datagram cost
#   SHARED=1 benches/sensor-drain.sh             # --udp-shared-port (one socket per thread)
#   GSO=1 benches/sensor-drain.sh                # queued as the agent sends: UDP GSO runs,
#                                                # taken whole by the sensor's UDP_GRO sockets
# Env: THREADS, AGENTS, DGRAMS (per agent), RECORDS (64-byte records per
# datagram), RUNS, SHARED, GSO, PERF=PREFIX (perf record -a -g over each drain
# into PREFIX-Nt.data; the last run of each N is kept). Files go to a tmpfs ($TMPDIR, default /dev/shm)
# so the disk does not set the pace.
set -eu
cd "$(dirname "$0")/.."
export TMPDIR="${TMPDIR:-/dev/shm}"
exec cargo test --release -p xrpcap-sensor --test drain drain_report \
    -- --ignored --nocapture --test-threads 1
