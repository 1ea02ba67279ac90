#!/usr/bin/env bash
# Build (or reuse) the Debian bookworm test guest used by integration tests.
#
# Output directory: ${SURETY_GUEST_CACHE:-$HOME/.cache/surety/guests}/<key>/
#   root.qcow2   ext4 root filesystem (no partition table) for /dev/vda, 4 GiB virtual
#   vmlinuz      guest kernel for direct kernel boot
#   initrd.img   small initramfs (virtio + ext4 modules only)
#   guest.json   key, kernel command line, build time, package list
#   build.log    output of debootstrap and the chroot steps
# <key> is a hash of this script, so editing it produces a new guest.
#
# Everything comes from Debian packages (debootstrap from the Debian mirror).
# The build happens in a temporary directory next to the cache entry and is
# renamed into place at the end: a killed build never leaves a half cache.
# Progress goes to stderr; the LAST line of stdout is the guest directory.
#
# Environment:
#   SURETY_GUEST_CACHE     cache root (default ~/.cache/surety/guests)
#   SURETY_DEBIAN_MIRROR   Debian mirror (default http://deb.debian.org/debian)
#
# Requires root (debootstrap, chroot), debootstrap, mke2fs (e2fsprogs >= 1.43
# for -d), qemu-img and python3.
set -euo pipefail

SUITE=bookworm
MIRROR=${SURETY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE_ROOT=${SURETY_GUEST_CACHE:-$HOME/.cache/surety/guests}
DISK_SIZE=4G
HOSTNAME_=surety-guest
# mitigations=off: a test guest under TCG boots ~25% faster without them.
CMDLINE="root=/dev/vda rw rootfstype=ext4 console=ttyS0 net.ifnames=0 mitigations=off"
PACKAGES=(
    linux-image-amd64 initramfs-tools
    systemd systemd-sysv udev dbus kmod
    qemu-guest-agent
    iproute2 iputils-ping netbase procps e2fsprogs util-linux
    postgresql mariadb-server mariadb-client
)
INITRAMFS_MODULES=(virtio_pci virtio_blk virtio_net virtio_console crc32c_generic ext4)
# Kernel module trees no test guest needs (graphics, radio, sound, ...).
PRUNE_MODULES=(
    drivers/gpu drivers/media drivers/net/wireless drivers/infiniband
    drivers/staging drivers/bluetooth drivers/iio drivers/isdn
    net/bluetooth net/wireless net/mac80211 sound
)
# Timers and boot-time jobs that would write to the disk behind the tests' back.
MASK_UNITS=(
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer
    e2scrub_all.timer e2scrub_reap.service fstrim.timer logrotate.timer
    systemd-networkd-wait-online.service
)

START=$SECONDS
log() { printf '[build.sh %4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# ---------------------------------------------------------------------------
# helpers

# Unmount everything mounted below $1 (deepest first); debootstrap mounts
# proc/sys inside the target and a killed build may leave them behind.
umount_below() {
    local dir mounts
    dir=$(realpath -m "$1")
    mounts=$(awk -v d="$dir/" 'index($2 "/", d) == 1 {print $2}' /proc/mounts | sort -r)
    for m in $mounts; do
        umount -l "$m" 2>/dev/null || true
    done
}

# Remove a build directory without ever crossing into a mounted filesystem.
remove_build_dir() {
    [[ -d $1 ]] || return 0
    umount_below "$1"
    rm -rf --one-file-system "$1"
}

# Run a command inside the guest root with a clean, non-interactive environment.
in_root() {
    chroot "$ROOTFS" /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

write() { # write PATH-INSIDE-GUEST (content on stdin)
    mkdir -p "$(dirname "$ROOTFS$1")"
    cat >"$ROOTFS$1"
}

# ---------------------------------------------------------------------------
# steps

first_stage() {
    log "debootstrap stage 1 ($SUITE, minbase, ${#PACKAGES[@]} extra packages) from $MIRROR"
    local includes
    includes=$(
        IFS=,
        echo "${PACKAGES[*]}"
    )
    mkdir -p "$CACHE_ROOT/debs"
    debootstrap --foreign --variant=minbase --arch=amd64 --components=main \
        --cache-dir="$(realpath "$CACHE_ROOT/debs")" \
        --include="$includes" "$SUITE" "$ROOTFS" "$MIRROR" >>"$BUILD_LOG" 2>&1 ||
        fail_with_log "debootstrap stage 1 failed"
}

# Files that must exist before packages are configured in stage 2.
pre_configure() {
    # Never start services inside the chroot (postgresql/mariadb init scripts would).
    write /usr/sbin/policy-rc.d <<'EOF'
#!/bin/sh
exit 101
EOF
    chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
    write /etc/dpkg/dpkg.cfg.d/01-surety-nodoc <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    # Only the listed modules go into the initramfs: small and fast to build.
    write /etc/initramfs-tools/conf.d/surety.conf <<'EOF'
MODULES=list
COMPRESS=gzip
EOF
}

second_stage() {
    log "debootstrap stage 2 (configure packages in chroot)"
    chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 \
        /debootstrap/debootstrap --second-stage >>"$BUILD_LOG" 2>&1 ||
        fail_with_log "debootstrap stage 2 failed"
    umount_below "$ROOTFS"
}

configure_system() {
    log "configure hostname, fstab, network, journald, agent"
    echo "$HOSTNAME_" >"$ROOTFS/etc/hostname"
    write /etc/hosts <<EOF
127.0.0.1 localhost
127.0.1.1 $HOSTNAME_
::1 localhost ip6-localhost ip6-loopback
EOF
    write /etc/fstab <<'EOF'
# <file system> <mount point> <type> <options> <dump> <pass>
/dev/vda / ext4 defaults,errors=remount-ro 0 1
EOF
    # 99-*: kernel ip= settings become 70-*.network via systemd-network-generator
    # and must win over this default.
    write /etc/systemd/network/99-default.network <<'EOF'
[Match]
Name=e*

[Network]
DHCP=yes

[DHCPv4]
ClientIdentifier=mac
EOF
    # Keep the journal in RAM: no log writes on the disk under test.
    write /etc/systemd/journald.conf.d/surety.conf <<'EOF'
[Journal]
Storage=volatile
RuntimeMaxUse=32M
EOF
    # Agent: never give up restarting it, and run the fsfreeze hook
    # (/etc/qemu/fsfreeze-hook runs /etc/qemu/fsfreeze-hook.d/*, empty here)
    # so tests can install application freeze/thaw scripts.
    write /etc/systemd/system/qemu-guest-agent.service.d/surety.conf <<'EOF'
[Unit]
StartLimitIntervalSec=0

[Service]
ExecStart=
ExecStart=-/usr/sbin/qemu-ga --fsfreeze-hook
EOF
    # Each clone gets its own machine id at boot (empty file = not first boot).
    : >"$ROOTFS/etc/machine-id"
    rm -f "$ROOTFS/var/lib/dbus/machine-id"
    ln -s /etc/machine-id "$ROOTFS/var/lib/dbus/machine-id"
}

configure_units() {
    log "enable/disable/mask systemd units"
    in_root systemctl enable systemd-networkd.service >>"$BUILD_LOG" 2>&1
    # The unit has no [Install] section (Debian starts it from a udev rule when
    # the virtio port appears); also make multi-user.target want it.
    mkdir -p "$ROOTFS/etc/systemd/system/multi-user.target.wants"
    ln -sf /lib/systemd/system/qemu-guest-agent.service \
        "$ROOTFS/etc/systemd/system/multi-user.target.wants/qemu-guest-agent.service"
    # Databases do not start at boot; `scripts/testvm up --app X` enables them.
    in_root systemctl disable postgresql.service mariadb.service mariadb.socket \
        >>"$BUILD_LOG" 2>&1
    in_root systemctl mask "${MASK_UNITS[@]}" >>"$BUILD_LOG" 2>&1
    # Root login disabled (no password, locked).
    in_root usermod -p '*' root
}

build_initramfs() {
    log "prune kernel modules and build initramfs (${INITRAMFS_MODULES[*]})"
    local kver
    kver=$(kernel_version)
    for d in "${PRUNE_MODULES[@]}"; do
        rm -rf "$ROOTFS/lib/modules/$kver/kernel/$d"
    done
    in_root depmod -a "$kver"
    printf '%s\n' "${INITRAMFS_MODULES[@]}" >>"$ROOTFS/etc/initramfs-tools/modules"
    in_root update-initramfs -u -k "$kver" >>"$BUILD_LOG" 2>&1 ||
        fail_with_log "update-initramfs failed"
}

kernel_version() {
    local k
    k=$(find "$ROOTFS/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n1)
    [[ -n $k ]] || die "no kernel in $ROOTFS/boot"
    echo "${k#vmlinuz-}"
}

clean_rootfs() {
    log "clean rootfs (apt caches, docs, locales)"
    rm -f "$ROOTFS/usr/sbin/policy-rc.d"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
        "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
        "$ROOTFS"/usr/share/info/* "$ROOTFS"/var/cache/debconf/*-old \
        "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/*
    find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
        -exec rm -rf {} + 2>/dev/null || true
    log "rootfs size: $(du -sh --one-file-system "$ROOTFS" | cut -f1)"
}

make_image() {
    log "mke2fs -d (ext4, $DISK_SIZE) and qemu-img convert to qcow2"
    local raw="$WORK/root.raw"
    truncate -s "$DISK_SIZE" "$raw"
    # Inode tables and journal are initialised now, so a fresh guest does not
    # write them in the background on first mount (ext4lazyinit).
    mke2fs -F -q -t ext4 -L surety-root -E lazy_itable_init=0,lazy_journal_init=0 \
        -d "$ROOTFS" "$raw" >>"$BUILD_LOG" 2>&1 || fail_with_log "mke2fs failed"
    qemu-img convert -f raw -O qcow2 "$raw" "$OUT/root.qcow2"
    rm -f "$raw"
    local kver
    kver=$(kernel_version)
    cp "$ROOTFS/boot/vmlinuz-$kver" "$OUT/vmlinuz"
    cp "$ROOTFS/boot/initrd.img-$kver" "$OUT/initrd.img"
    chmod 0644 "$OUT"/*
}

write_metadata() {
    log "write guest.json"
    local kver
    kver=$(kernel_version)
    in_root dpkg-query -W -f '${Package}\t${Version}\n' >"$WORK/packages.tsv"
    python3 - "$OUT/guest.json" "$WORK/packages.tsv" <<EOF
import json, sys, time
out, pkgs = sys.argv[1], sys.argv[2]
with open(pkgs) as f:
    packages = dict(line.rstrip("\n").split("\t", 1) for line in f if line.strip())
meta = {
    "key": "$KEY",
    "suite": "$SUITE",
    "kernel_version": "$kver",
    "cmdline": "$CMDLINE",
    "disk_size": "$DISK_SIZE",
    "hostname": "$HOSTNAME_",
    "build_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "build_seconds": $((SECONDS - START)),
    "requested_packages": "${PACKAGES[*]}".split(),
    "packages": packages,
}
with open(out, "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
    f.write("\n")
EOF
}

fail_with_log() {
    log "ERROR: $1; last lines of $BUILD_LOG:"
    tail -n 40 "$BUILD_LOG" >&2 || true
    if [[ -f $ROOTFS/debootstrap/debootstrap.log ]]; then
        log "last lines of debootstrap.log:"
        tail -n 40 "$ROOTFS/debootstrap/debootstrap.log" >&2 || true
    fi
    exit 1
}

# ---------------------------------------------------------------------------
# main

main() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"
    for tool in debootstrap mke2fs qemu-img python3 chroot flock; do
        command -v "$tool" >/dev/null || die "missing tool: $tool"
    done
    KEY=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
    local final="$CACHE_ROOT/$KEY"
    mkdir -p "$CACHE_ROOT"

    # One build per key at a time; a second caller waits and then reuses.
    exec 9>"$CACHE_ROOT/.$KEY.lock"
    if ! flock -n 9; then
        log "another build of $KEY is running; waiting for it"
        flock 9
    fi
    if [[ -f $final/guest.json ]]; then
        log "reusing cached guest $KEY"
        echo "$final"
        return 0
    fi
    # Holding the lock: any build dir left for this key is from a killed build.
    for stale in "$CACHE_ROOT"/.build-"$KEY"-*; do
        [[ -e $stale ]] || continue
        log "removing stale build dir $stale"
        remove_build_dir "$stale"
    done

    WORK=$(mktemp -d "$CACHE_ROOT/.build-$KEY-XXXXXX")
    ROOTFS="$WORK/rootfs"
    OUT="$WORK/out"
    BUILD_LOG="$WORK/build.log"
    mkdir -p "$ROOTFS" "$OUT"
    : >"$BUILD_LOG"
    trap 'remove_build_dir "$WORK"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    log "building guest $KEY in $WORK (log: $BUILD_LOG)"

    first_stage
    pre_configure
    second_stage
    configure_system
    configure_units
    build_initramfs
    clean_rootfs
    make_image
    write_metadata
    cp "$BUILD_LOG" "$OUT/build.log"
    mv -T "$OUT" "$final"
    log "done: $final ($(du -sh "$final" | cut -f1) on disk)"
    echo "$final"
}

main "$@"
