#!/usr/bin/env bash
# Build (or reuse) the Samba AD DC test guest, layered on the base guest.
#
# Output directory: ${SURETY_GUEST_CACHE:-$HOME/.cache/surety/guests}/ad-<key>/
#   root.qcow2   qcow2 overlay; backing file ../<base key>/root.qcow2 (relative, -F qcow2)
#   vmlinuz      same kernel as the base guest (hard link or copy)
#   initrd.img   same initramfs as the base guest (hard link or copy)
#   guest.json   key ("ad-<key>"), base_key, packages added, build seconds
#   build.log    output of apt and the chroot steps
# <key> is a hash of this script and the base guest's key, so editing either
# produces a new image, and the base image's cache entry is never touched.
#
# The packages are installed offline, in a chroot: the overlay is exported
# writable through qemu-storage-daemon (FUSE), attached to a loop device and
# mounted (no /dev/nbd needed). apt fetches from the Debian mirror; the host's
# resolv.conf is copied in for the build only and policy-rc.d keeps every
# service from starting. smbd/nmbd/winbind/samba-ad-dc stay disabled at boot:
# the harness (tests/guests/ad.py) provisions the DC and enables samba-ad-dc.
#
# Same discipline as build.sh: one build per key (flock), the build happens in
# a temporary directory renamed into place (a killed build leaves no half
# cache), progress on stderr, the LAST line of stdout is the guest directory.
#
# Environment: SURETY_GUEST_CACHE, SURETY_DEBIAN_MIRROR (as build.sh).
# Requires root, qemu-storage-daemon, qemu-img, losetup, mount, chroot, flock.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MIRROR=${SURETY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE_ROOT=${SURETY_GUEST_CACHE:-$HOME/.cache/surety/guests}
PACKAGES=(
    samba samba-ad-dc samba-ad-provision samba-dsdb-modules winbind
    krb5-user ldb-tools smbclient python3-samba
)
# Debian enables some of these at install time; the harness enables samba-ad-dc.
DISABLE_UNITS=(smbd.service nmbd.service winbind.service samba-ad-dc.service)

START=$SECONDS
log() { printf '[build_ad.sh %4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# Lazily unmount everything mounted strictly below $1 (deepest first).
umount_below() {
    local dir mounts
    dir=$(realpath -m "$1")
    mounts=$(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
    for m in $mounts; do
        umount -l "$m" 2>/dev/null || true
    done
}

# Undo everything a (possibly killed) build set up below $1, then remove it.
remove_build_dir() {
    local dir=$1 dev pid
    [[ -d $dir ]] || return 0
    umount_below "$dir/.scratch/root"
    umount "$dir/.scratch/root" 2>/dev/null || umount -l "$dir/.scratch/root" 2>/dev/null || true
    for dev in $(losetup -j "$dir/.scratch/disk" -O NAME -n 2>/dev/null) ${LOOP:-}; do
        losetup -d "$dev" 2>/dev/null || true
    done
    pid=$(cat "$dir/.scratch/qsd.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    umount -l "$dir/.scratch/disk" 2>/dev/null || true
    umount -l "$dir/.verify/disk" 2>/dev/null || true
    umount_below "$dir"
    rm -rf --one-file-system "$dir"
}

in_root() {
    chroot "$ROOTFS" /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

fail_with_log() {
    log "ERROR: $1; last lines of $BUILD_LOG:"
    tail -n 40 "$BUILD_LOG" >&2 || true
    exit 1
}

# ---------------------------------------------------------------------------
# steps

attach_overlay() {
    log "overlay on base $BASE_KEY, exported by qemu-storage-daemon and mounted"
    qemu-img create -q -f qcow2 -b "../$BASE_KEY/root.qcow2" -F qcow2 "$WORK/root.qcow2"
    local scratch="$WORK/.scratch"
    mkdir -p "$scratch" "$ROOTFS"
    : >"$scratch/disk"
    # The backing file is found relative to the overlay; the overlay sits in
    # $WORK, a sibling of the base directory, exactly as it will after the rename.
    setpriv --pdeathsig TERM qemu-storage-daemon \
        --blockdev "driver=qcow2,node-name=disk,file.driver=file,file.filename=${WORK//,/,,}/root.qcow2" \
        --export "type=fuse,id=exp,node-name=disk,mountpoint=$scratch/disk,writable=on" \
        --pidfile "$scratch/qsd.pid" >>"$BUILD_LOG" 2>&1 &
    QSD_PID=$!
    for _ in $(seq 1 100); do
        [[ -s $scratch/qsd.pid ]] && [[ $(stat -c %s "$scratch/disk") -gt 0 ]] && break
        kill -0 "$QSD_PID" 2>/dev/null || fail_with_log "qemu-storage-daemon exited"
        sleep 0.1
    done
    LOOP=$(losetup --find --show "$scratch/disk")
    mount -t ext4 "$LOOP" "$ROOTFS"
}

detach_overlay() {
    log "unmount, flush and detach the overlay"
    umount "$ROOTFS/dev/pts" "$ROOTFS/dev" "$ROOTFS/sys" "$ROOTFS/proc"
    umount "$ROOTFS"
    # The loop device writes through the page cache of the FUSE file: flush
    # both before the export goes away, or the overlay misses the last writes.
    blockdev --flushbufs "$LOOP"
    sync "$WORK/.scratch/disk"
    losetup -d "$LOOP"
    kill -TERM "$QSD_PID"
    wait "$QSD_PID" || true
    rm -rf "$WORK/.scratch"
}

# Export the finished overlay again, read-only: the file system must be clean
# and consistent (proves every write reached the qcow2 file).
verify_overlay() {
    log "verify: e2fsck -fn on the overlay as written"
    local scratch="$WORK/.verify"
    mkdir -p "$scratch"
    : >"$scratch/disk"
    setpriv --pdeathsig TERM qemu-storage-daemon \
        --blockdev "driver=qcow2,node-name=disk,read-only=on,file.driver=file,file.filename=${WORK//,/,,}/root.qcow2" \
        --export "type=fuse,id=exp,node-name=disk,mountpoint=$scratch/disk,writable=off" \
        --pidfile "$scratch/qsd.pid" >>"$BUILD_LOG" 2>&1 &
    local pid=$! loop ok=0
    for _ in $(seq 1 100); do
        [[ -s $scratch/qsd.pid ]] && [[ $(stat -c %s "$scratch/disk") -gt 0 ]] && break
        sleep 0.1
    done
    loop=$(losetup -r --find --show "$scratch/disk")
    e2fsck -fn "$loop" >>"$BUILD_LOG" 2>&1 && ok=1
    [[ $(dumpe2fs -h "$loop" 2>/dev/null | awk -F: '/^Filesystem state/ {gsub(/ /, "", $2); print $2}') == clean ]] || ok=0
    losetup -d "$loop"
    kill -TERM "$pid"
    wait "$pid" || true
    rm -rf "$scratch"
    [[ $ok == 1 ]] || fail_with_log "the overlay's file system is not clean after the build"
}

install_packages() {
    log "apt-get install ${PACKAGES[*]} from $MIRROR"
    mount --bind /proc "$ROOTFS/proc"
    mount --bind /sys "$ROOTFS/sys"
    mount --bind /dev "$ROOTFS/dev"
    mount --bind /dev/pts "$ROOTFS/dev/pts"
    mkdir -p "$CACHE_ROOT/debs-ad/partial"
    mount --bind "$CACHE_ROOT/debs-ad" "$ROOTFS/var/cache/apt/archives"
    # DNS for the build only; the guest's own resolv.conf goes back afterwards.
    cp -a "$ROOTFS/etc/resolv.conf" "$WORK/.scratch/resolv.conf.guest" 2>/dev/null || true
    rm -f "$ROOTFS/etc/resolv.conf"
    cat /etc/resolv.conf >"$ROOTFS/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
    chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
    echo "deb $MIRROR bookworm main" >"$ROOTFS/etc/apt/sources.list"
    in_root debconf-set-selections <<'EOF'
krb5-config krb5-config/default_realm string LAB.TEST
krb5-config krb5-config/kerberos_servers string
krb5-config krb5-config/admin_server string
krb5-config krb5-config/add_servers_realm string LAB.TEST
krb5-config krb5-config/add_servers boolean false
krb5-config krb5-config/read_conf boolean true
samba-common samba-common/dhcp boolean false
samba-common samba-common/workgroup string LAB
EOF
    in_root apt-get update >>"$BUILD_LOG" 2>&1 || fail_with_log "apt-get update failed"
    in_root apt-get install -y --no-install-recommends "${PACKAGES[@]}" >>"$BUILD_LOG" 2>&1 ||
        fail_with_log "apt-get install failed"
    in_root dpkg-query -W -f '${Package}\t${Version}\n' >"$WORK/packages.tsv"
}

configure_samba() {
    log "disable ${DISABLE_UNITS[*]}; remove the default smb.conf"
    in_root systemctl unmask "${DISABLE_UNITS[@]}" >>"$BUILD_LOG" 2>&1 || true
    in_root systemctl disable "${DISABLE_UNITS[@]}" >>"$BUILD_LOG" 2>&1 || true
    # provision writes its own smb.conf and refuses to overwrite a member one.
    rm -f "$ROOTFS/etc/samba/smb.conf"
}

clean_root() {
    log "clean (apt lists, policy-rc.d, build resolv.conf)"
    umount "$ROOTFS/var/cache/apt/archives"
    rm -f "$ROOTFS/usr/sbin/policy-rc.d" "$ROOTFS/etc/resolv.conf"
    if [[ -e $WORK/.scratch/resolv.conf.guest || -L $WORK/.scratch/resolv.conf.guest ]]; then
        cp -a "$WORK/.scratch/resolv.conf.guest" "$ROOTFS/etc/resolv.conf"
    fi
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
        "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/log/apt/* "$ROOTFS"/var/log/*.log \
        "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
    log "root file system use: $(df -h --output=used "$ROOTFS" | tail -n1 | tr -d ' ')"
}

write_metadata() {
    log "write guest.json"
    python3 - "$WORK/guest.json" "$BASE_DIR/guest.json" "$WORK/packages.tsv" \
        "$KEY" "$((SECONDS - START))" "${PACKAGES[*]}" <<'EOF'
import json, sys, time
out, base_json, pkgs, key, seconds, requested = sys.argv[1:7]
base = json.load(open(base_json))
with open(pkgs) as f:
    packages = dict(line.rstrip("\n").split("\t", 1) for line in f if line.strip())
added = {k: v for k, v in packages.items() if k not in base.get("packages", {})}
meta = {
    **{k: base[k] for k in ("suite", "kernel_version", "cmdline", "disk_size", "hostname")},
    "key": f"ad-{key}",
    "base_key": base["key"],
    "build_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "build_seconds": int(seconds),
    "requested_packages": requested.split(),
    "packages_added": added,
    "packages": packages,
}
with open(out, "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
    f.write("\n")
EOF
}

link_or_copy() { ln "$1" "$2" 2>/dev/null || cp -p "$1" "$2"; }

# ---------------------------------------------------------------------------

main() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (mount, chroot)"
    for tool in qemu-storage-daemon qemu-img losetup mount chroot flock python3 setpriv; do
        command -v "$tool" >/dev/null || die "missing tool: $tool"
    done
    BASE_DIR=$("$HERE/build.sh" | tail -n1)
    [[ -f $BASE_DIR/guest.json ]] || die "build.sh gave no guest directory"
    BASE_KEY=$(basename "$BASE_DIR")
    [[ $(dirname "$(realpath "$BASE_DIR")") == "$(realpath "$CACHE_ROOT")" ]] ||
        die "base guest $BASE_DIR is not in $CACHE_ROOT"
    KEY=$({
        cat "${BASH_SOURCE[0]}"
        echo "$BASE_KEY"
    } | sha256sum | cut -c1-16)
    local final="$CACHE_ROOT/ad-$KEY"

    exec 9>"$CACHE_ROOT/.ad-$KEY.lock"
    if ! flock -n 9; then
        log "another build of ad-$KEY is running; waiting for it"
        flock 9
    fi
    if [[ -f $final/guest.json ]]; then
        log "reusing cached AD guest ad-$KEY"
        echo "$final"
        return 0
    fi
    for stale in "$CACHE_ROOT"/.build-ad-"$KEY"-*; do
        [[ -e $stale ]] || continue
        log "removing stale build dir $stale"
        remove_build_dir "$stale"
    done

    WORK=$(mktemp -d "$CACHE_ROOT/.build-ad-$KEY-XXXXXX")
    ROOTFS="$WORK/.scratch/root"
    BUILD_LOG="$CACHE_ROOT/.build-ad-$KEY.log"
    : >"$BUILD_LOG"
    trap 'remove_build_dir "$WORK"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    log "building AD guest ad-$KEY on base $BASE_KEY in $WORK (log: $BUILD_LOG)"

    attach_overlay
    install_packages
    configure_samba
    clean_root
    detach_overlay
    verify_overlay
    for f in vmlinuz initrd.img; do link_or_copy "$BASE_DIR/$f" "$WORK/$f"; done
    write_metadata
    rm -f "$WORK/packages.tsv"
    mv "$BUILD_LOG" "$WORK/build.log"
    chmod 0755 "$WORK"
    chmod 0644 "$WORK"/*
    mv -T "$WORK" "$final"
    trap - EXIT
    log "done: $final ($(du -sh "$final" | cut -f1) on disk besides the base)"
    echo "$final"
}

main "$@"
