#!/usr/bin/env bash
# Checks the Kubernetes manifests offline (no cluster, no network):
#   - renders the kustomize base and every overlay with Debian's kubectl 1.20
#     (the oldest kustomize they are written for) and, when there is one,
#     with the kubectl on PATH (a current kustomize): both must give the same
#     objects;
#   - validates every plain manifest and every rendered object against the
#     Kubernetes JSON schemas (strict: no unknown field) of the oldest and the
#     newest version kubernetes-validate bundles;
#   - asserts what the manifests are for (check.py: host network,
#     capabilities, the sensor's address and ports, probes on /metrics...).
#
#   packaging/kubernetes/check.sh [DIR]
#
# DIR: a copy of this folder to check instead (tests/e2e/kubernetes.rs breaks
# a copy on purpose); the repository's Cargo.toml gives the image version.
#
# The tools come from `scripts/setup.sh kubernetes` (installed once into
# /var/cache/xrpcapd-ci; XRPCAP_CI_CACHE moves it). Environment:
#   XRPCAP_KUBECTL_EXTRA=PATH   another kubectl to compare with (default: the
#                               one on PATH, if any; "none" for none)
#   XRPCAP_K8S_VERSIONS="A B"   the schema versions (default: oldest and newest)
#   XRPCAPD_BIN=PATH            an xrpcapd binary: it must accept every agent
#                               container's environment (--check-config)
#   XRPCAP_SENSOR_BIN=PATH      an xrpcap-sensor binary: it must start with
#                               each sensor Deployment's arguments
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=$(cd "${1:-$HERE}" && pwd)

log() { printf 'kubernetes: %s\n' "$*" >&2; }

mapfile -t tools < <("$ROOT/scripts/setup.sh" kubernetes)
if [ "${#tools[@]}" -ne 2 ] || [ ! -x "${tools[1]}" ]; then
    log "kubectl 1.20 and kubernetes-validate are missing: run scripts/setup.sh (as root)"
    exit 1
fi
VALIDATE_DIR=${tools[0]}
KUBECTL=${tools[1]}

extra=${XRPCAP_KUBECTL_EXTRA:-}
if [ -z "$extra" ]; then
    extra=$(command -v kubectl || true)
fi
[ "$extra" = none ] && extra=

# Debian's python3: the one kubernetes-validate's compiled dependency
# (rpds-py) was installed for.
PYTHONPATH=$VALIDATE_DIR${PYTHONPATH:+:$PYTHONPATH} PYTHONDONTWRITEBYTECODE=1 \
    exec /usr/bin/python3 "$HERE/check.py" --root "$DIR" --repo "$ROOT" --kubectl "$KUBECTL" \
    ${extra:+--kubectl "$extra"} ${XRPCAPD_BIN:+--xrpcapd "$XRPCAPD_BIN"} \
    ${XRPCAP_SENSOR_BIN:+--sensor "$XRPCAP_SENSOR_BIN"} \
    ${XRPCAP_K8S_VERSIONS:+--versions $XRPCAP_K8S_VERSIONS}
