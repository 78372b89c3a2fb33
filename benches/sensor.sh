#!/bin/sh
# Sensor benchmark (issue 3 goal): 1000 concurrent scripted agents, 64-byte
# records in udpstr datagrams, received and written by one xrpcap-sensor
# (release build). One command from a fresh clone:
#   benches/sensor.sh                 # AGENTS=1000 SENDERS=2 SECS=5, full speed
#   RATE=1000000 benches/sensor.sh    # paced: 1 M records/s in total
#   SHARED=1 benches/sensor.sh        # --udp-shared-port: every capture on one
#                                     # UDP port, agents on 127.1.x.y
# Env: AGENTS, SENDERS, SECS, RATE (records/s, 0 = as fast as the senders go),
# SHARED (1: one shared UDP data port).
set -eu
cd "$(dirname "$0")/.."
# Each agent costs the sensor 3 descriptors (control, UDP port, file) and the
# test 2 (control connection, one per serving thread; +1 UDP socket with
# SHARED=1): raise the limit.
want=$(( ${AGENTS:-1000} * 5 + 256 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want"
fi
echo "ulimit -n: $(ulimit -n)"
exec cargo test --release -p xrpcap-sensor --test throughput thousand_agents_report \
    -- --ignored --nocapture
