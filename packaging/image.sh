#!/usr/bin/env bash
# Builds the OCI images of the agent (xrpcapd) and the sensor (xrpcap-sensor)
# with buildah, FROM scratch, from the portable binaries of
# packaging/portable.sh. No base image and no registry: every file of an
# image is listed below. See docs/container.md.
#
#   packaging/image.sh              # both images
#   packaging/image.sh agent        # one: agent or sensor
#
# Environment:
#   XRPCAP_IMAGE_BIN=DIR   the binaries (default: `packaging/portable.sh release`)
#   XRPCAP_IMAGE_TAG=TAG   image tag (default: the workspace version)
#   XRPCAP_IMAGE_OUT=DIR   where the oci-archives go (default: $CARGO_TARGET_DIR/images)
#   XRPCAP_IMAGE_SOURCE=URL  org.opencontainers.image.source (default: none)
#   XRPCAP_CI_CACHE        cache root (default /var/cache/xrpcapd-ci)
#
# Output, one line per image on stdout (logs go to stderr):
#   ROLE IMAGE ARCHIVE     e.g. agent localhost/xrpcapd:0.1.0 target/images/xrpcapd-0.1.0.oci.tar
# The image is in buildah's (and podman's) local storage under IMAGE, and in
# ARCHIVE for `podman load -i ARCHIVE` / `docker load -i ARCHIVE` elsewhere.
#
# What an image holds:
#   /usr/sbin/xrpcapd (cap_net_admin,cap_net_raw=ep) | /usr/bin/xrpcap-sensor
#   glibc: the files the binary's NEEDED entries and PT_INTERP resolve to on
#     this build host (ldd), at the same paths: the portable binaries are not
#     static (glibc 2.26 symbol baseline, libpcap linked statically)
#   /etc/passwd, /etc/group (root and the image's user, uid/gid 65532),
#   /etc/nsswitch.conf (files, then dns), the copyright files
#   agent: /run/xrpcapd owned by the user (its status socket, `xrpcapd status`)
#   sensor: /data owned by the user, the working directory (capture files)
# User 65532, non-root. The agent gets CAP_NET_RAW and CAP_NET_ADMIN from its
# file capabilities, and only those (docs/container.md says why).
#
# Cache: $XRPCAP_CI_CACHE/images/KEY/ROLE.oci.tar, KEY the hash of everything
# an image is made of (binary, glibc files, this script, tag, revision); an
# archive of the same KEY is imported instead of built. Needs root: setcap
# (a rootless `buildah unshare` would write namespaced file capabilities)
# and the mounts.
set -euo pipefail
# The staged tree's modes are the image's: no umask of the caller's.
umask 022

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CACHE=${XRPCAP_CI_CACHE:-/var/cache/xrpcapd-ci}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
OUT=${XRPCAP_IMAGE_OUT:-$TARGET_DIR/images}
UID_GID=65532
# CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13.
AGENT_CAPS=cap_net_admin,cap_net_raw=ep

log() { printf 'image: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

for tool in buildah setcap getcap ldd readelf jq sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: run scripts/setup.sh"
done

ROLES=("$@")
[ "${#ROLES[@]}" -gt 0 ] || ROLES=(agent sensor)
for r in "${ROLES[@]}"; do
    case $r in agent | sensor) ;; *) die "usage: packaging/image.sh [agent|sensor]..." ;; esac
done

VERSION=$(cargo metadata --no-deps --format-version 1 --manifest-path "$ROOT/Cargo.toml" |
    jq -r '.packages[] | select(.name == "xrpcapd") | .version')
TAG=${XRPCAP_IMAGE_TAG:-$VERSION}
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
# Labels and file times from the last commit: the same inputs give the same
# image digest (buildah commit --timestamp).
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

BIN=${XRPCAP_IMAGE_BIN:-}
if [ -z "$BIN" ]; then
    log "building the portable release binaries (packaging/portable.sh release)"
    BIN=$("$ROOT/packaging/portable.sh" release | tail -n 1)
fi

# The files a dynamically linked binary needs at run time, as they resolve on
# this host: every library ldd lists (NEEDED, transitively) and PT_INTERP.
runtime_files() {
    local bin=$1 interp
    interp=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    [ -n "$interp" ] || return 0 # static: nothing
    printf '%s\n' "$interp"
    ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
}

# stage ROLE DIR: the image's tree (without file capabilities) in DIR.
stage() {
    local role=$1 dir=$2 bin name user path f
    case $role in
    agent) name=xrpcapd user=xrpcapd path=/usr/sbin/xrpcapd ;;
    sensor) name=xrpcap-sensor user=xrpcap-sensor path=/usr/bin/xrpcap-sensor ;;
    esac
    bin=$BIN/$name
    [ -x "$bin" ] || die "no $bin (XRPCAP_IMAGE_BIN=$BIN)"
    install -D -m 0755 "$bin" "$dir$path"
    while read -r f; do
        # The file itself at the path the loader asks for (symlinks followed).
        install -D -m 0755 "$(readlink -f "$f")" "$dir$f"
    done < <(runtime_files "$bin")
    install -d -m 0755 "$dir/etc"
    printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:/nonexistent:/sbin/nologin\n' \
        "$user" "$UID_GID" "$UID_GID" "$user" >"$dir/etc/passwd"
    printf 'root:x:0:\n%s:x:%s:\n' "$user" "$UID_GID" >"$dir/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$dir/etc/nsswitch.conf"
    chmod 0644 "$dir/etc/passwd" "$dir/etc/group" "$dir/etc/nsswitch.conf"
    install -D -m 0644 "$ROOT/packaging/copyright" "$dir/usr/share/doc/$name/copyright"
    if [ -f /usr/share/doc/libc6/copyright ]; then
        install -D -m 0644 /usr/share/doc/libc6/copyright "$dir/usr/share/doc/libc6/copyright"
    fi
    case $role in
    agent) install -d -m 0750 -o "$UID_GID" -g "$UID_GID" "$dir/run/xrpcapd" ;;
    sensor) install -d -m 0750 -o "$UID_GID" -g "$UID_GID" "$dir/data" ;;
    esac
}

# build ROLE: prints "ROLE IMAGE ARCHIVE".
build() {
    local role=$1 name title desc entry workdir ports=() labels=() key stagedir archive image old
    case $role in
    agent)
        name=xrpcapd title="xrpcapd"
        desc="RPCAP packet-capture agent: captures local interfaces and forwards frames to a sensor"
        entry=/usr/sbin/xrpcapd workdir=/ ports=(2002/tcp)
        ;;
    sensor)
        name=xrpcap-sensor title="xrpcap-sensor"
        desc="RPCAP sensor: receives captures from xrpcapd/rpcapd agents and writes pcap files"
        entry=/usr/bin/xrpcap-sensor workdir=/data ports=(2003/tcp)
        for p in $(seq 2003 2034); do ports+=("$p/udp"); done
        ;;
    esac
    image=localhost/$name:$TAG
    old=$(buildah inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || true)
    stagedir=$(mktemp -d)
    CLEANUP+=("rm -rf '$stagedir'")
    chmod 0755 "$stagedir"
    stage "$role" "$stagedir"
    # KEY: the staged tree (contents, modes, owners), this script, the config.
    key=$( (
        cd "$stagedir" && find . -printf '%p %m %U %G %s\n' | sort &&
            find . -type f -print0 | sort -z | xargs -0 sha256sum
    ) | cat - "$ROOT/packaging/image.sh" <(printf '%s\n' "$TAG" "$REVISION" "$EPOCH" "${XRPCAP_IMAGE_SOURCE:-}") |
        sha256sum | cut -c1-16)
    archive=$CACHE/images/$key/$name.oci.tar
    mkdir -p "$OUT" "$CACHE/images"
    if [ -f "$archive" ]; then
        log "$role: cached ($key)"
    else
        log "$role: building $image ($key)"
        labels=(
            --label "org.opencontainers.image.title=$title"
            --label "org.opencontainers.image.description=$desc"
            --label "org.opencontainers.image.version=$VERSION"
            --label "org.opencontainers.image.revision=$REVISION"
            --label "org.opencontainers.image.created=$CREATED"
            --label "org.opencontainers.image.licenses=(MIT OR Apache-2.0) AND BSD-3-Clause AND LGPL-2.1-or-later"
            --label "org.opencontainers.image.ref.name=$TAG"
        )
        [ -n "${XRPCAP_IMAGE_SOURCE:-}" ] &&
            labels+=(--label "org.opencontainers.image.source=$XRPCAP_IMAGE_SOURCE")
        if [ "$role" = agent ]; then
            # Informational (podman's io.containers.capabilities would be
            # refused: NET_ADMIN is not in its default set).
            labels+=(--label "xrpcapd.capabilities=CAP_NET_RAW,CAP_NET_ADMIN")
            labels+=(--label "run=podman run -d --name xrpcapd --network=host --cap-drop=all --cap-add=net_raw,net_admin -e XRPCAPD_ACTIVE_CLIENT IMAGE")
        else
            labels+=(--label "xrpcapd.capabilities=")
            labels+=(--label "run=podman run -d --name xrpcap-sensor -p 2003:2003/tcp -p 2003-2034:2003-2034/udp -v xrpcap-captures:/data IMAGE")
        fi
        local ctr mnt port_args=() p
        for p in "${ports[@]}"; do port_args+=(--port "$p"); done
        ctr=$(buildah from --name "image-$name-$$" scratch)
        # The working container goes away whatever happens next.
        CLEANUP+=("buildah rm '$ctr'")
        mnt=$(buildah mount "$ctr")
        cp -a "$stagedir/." "$mnt/"
        if [ "$role" = agent ]; then
            setcap "$AGENT_CAPS" "$mnt$entry"
            getcap "$mnt$entry" | grep -q 'cap_net_admin,cap_net_raw=ep' ||
                die "setcap did not stick on $mnt$entry: $(getcap "$mnt$entry")"
        fi
        buildah umount "$ctr" >/dev/null
        buildah config --os linux --arch amd64 \
            --user "$UID_GID:$UID_GID" --workingdir "$workdir" \
            --entrypoint "[\"$entry\"]" --cmd '' \
            --env PATH=/usr/sbin:/usr/bin --stop-signal SIGTERM \
            "${port_args[@]}" "${labels[@]}" \
            --author "xrpcapd developers" --created-by "packaging/image.sh" \
            "$ctr"
        [ "$role" = sensor ] && buildah config --volume /data "$ctr"
        buildah commit --quiet --format oci --timestamp "$EPOCH" --rm "$ctr" "$image" >/dev/null
        mkdir -p "$CACHE/images/$key"
        buildah push --quiet "$image" "oci-archive:$archive.tmp:$image" >&2
        mv "$archive.tmp" "$archive"
    fi
    # The storage holds IMAGE as in the archive (a cache hit imports it).
    # The image IMAGE named before the build is removed when nothing else names or
    # uses it: rebuilds do not pile up in /var/lib/containers.
    local new
    buildah pull --quiet "oci-archive:$archive" >/dev/null
    new=$(buildah inspect --type image --format '{{.FromImageID}}' "$image")
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        buildah rmi "$old" >/dev/null 2>&1 || true
    fi
    cp "$archive" "$OUT/$name-$TAG.oci.tar"
    log "$role: $image, $(du -k "$archive" | cut -f1) KiB archive"
    printf '%s %s %s\n' "$role" "$image" "$OUT/$name-$TAG.oci.tar"
}

CLEANUP=()
cleanup() {
    local c
    for c in "${CLEANUP[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

# One build at a time on this cache (parallel tests, CI stages).
mkdir -p "$CACHE/images"
exec 8>"$CACHE/images/.lock"
flock 8
for r in "${ROLES[@]}"; do build "$r"; done
# Keep the 6 newest keys' archives.
ls -1dt "$CACHE"/images/*/ 2>/dev/null | tail -n +7 | xargs -r rm -rf
