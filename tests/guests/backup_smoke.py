"""Smoke-check libvirt pull-mode backup (checkpoints + NBD export) on a test VM.

    scripts/testvm up t1
    PYTHONPATH=. .venv/bin/python -m tests.guests.backup_smoke t1
    scripts/testvm down t1

Full backup with a new checkpoint, read of the ``vda`` export over the unix
socket with libnbd, then an incremental backup after a guest write, reading
the ``qemu:dirty-bitmap:backup-vda`` meta context. Each job is aborted with
``abortJob`` (``virsh domjobabort``). Prints a JSON summary; exit 1 on failure.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import nbd

from tests.guests import agent, testvm

EXPORT = "vda"
DIRTY_CONTEXT = f"qemu:dirty-bitmap:backup-{EXPORT}"


def checkpoint_xml(name: str) -> str:
    """Checkpoint of disk vda as a persistent qcow2 bitmap."""
    return (
        f"<domaincheckpoint><name>{name}</name>"
        f"<disks><disk name='{EXPORT}' checkpoint='bitmap'/></disks></domaincheckpoint>"
    )


def backup_xml(socket: Path, scratch: Path, incremental: str | None = None) -> str:
    """Pull-mode backup of vda on a unix socket, full or since a checkpoint."""
    since = f"<incremental>{incremental}</incremental>" if incremental else ""
    return (
        f"<domainbackup mode='pull'>{since}"
        f"<server transport='unix' socket='{socket}'/>"
        f"<disks><disk name='{EXPORT}' backup='yes' type='file'>"
        f"<scratch file='{scratch}'/></disk></disks></domainbackup>"
    )


def extents(handle: nbd.NBD, context: str) -> Iterator[tuple[int, int, int]]:
    """(offset, length, flags) of the whole export for one meta context."""
    found: list[tuple[int, int]] = []

    def callback(meta: str, _offset: int, entries: list[int], _err: object) -> int:
        if meta == context:
            found.extend(zip(entries[::2], entries[1::2], strict=True))
        return 0

    size = handle.get_size()
    offset = 0
    while offset < size:
        found.clear()
        handle.block_status(min(size - offset, 1 << 30), offset, callback)
        for length, flags in found:
            yield offset, length, flags
            offset += length


def read_export(socket: Path, context: str) -> dict[str, int]:
    """Connect to the export, check the ext4 superblock, sum the extents."""
    handle = nbd.NBD()
    handle.set_export_name(EXPORT)
    handle.add_meta_context(context)
    handle.connect_unix(str(socket))
    try:
        superblock = handle.pread(4096, 0)
        if superblock[1080:1082] != b"\x53\xef":
            raise AssertionError("export does not start with an ext4 superblock")
        # base:allocation: bit 0 = hole; dirty bitmap: bit 0 = dirty.
        want = 1 if context == DIRTY_CONTEXT else 0
        selected = [(o, n) for o, n, flags in extents(handle, context) if flags & 1 == want]
        start = time.monotonic()
        for offset, length in selected:
            for chunk in range(offset, offset + length, 4 << 20):
                handle.pread(min(4 << 20, offset + length - chunk), chunk)
        return {
            "size": handle.get_size(),
            "bytes": sum(n for _, n in selected),
            "read_ms": round((time.monotonic() - start) * 1000),
        }
    finally:
        handle.shutdown()


def run_job(dom: libvirt.virDomain, xml: str, checkpoint: str, context: str) -> dict[str, int]:
    """Start a backup job creating ``checkpoint``, read its export, abort it."""
    backup_dir = testvm.make_qemu_dir(testvm.VM_ROOT / dom.name() / "backup")
    dom.backupBegin(xml, checkpoint_xml(checkpoint), 0)
    try:
        return read_export(backup_dir / "nbd.sock", context)
    finally:
        dom.abortJob()


def main(name: str) -> int:
    """Run the smoke check on VM ``name``; print a JSON summary."""
    dom = agent.connect(testvm.URI).lookupByName(name)
    agent.wait_for_agent(dom)
    backup_dir = testvm.make_qemu_dir(testvm.VM_ROOT / name / "backup")
    socket, scratch = backup_dir / "nbd.sock", backup_dir / "scratch.qcow2"
    full = run_job(dom, backup_xml(socket, scratch), "smoke-full", "base:allocation")
    agent.guest_shell(dom, "head -c 4M /dev/urandom > /root/smoke.bin && sync").check()
    incr = run_job(
        dom, backup_xml(socket, scratch, incremental="smoke-full"), "smoke-incr", DIRTY_CONTEXT
    )
    checkpoints = [c.getName() for c in dom.listAllCheckpoints()]
    summary = {"full": full, "incremental": incr, "checkpoints": checkpoints}
    print(json.dumps(summary))
    if incr["bytes"] < 4 << 20:
        print("incremental backup saw less than the 4 MiB written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
