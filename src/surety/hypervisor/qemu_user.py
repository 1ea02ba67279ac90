"""The uid and gid QEMU runs as under ``qemu:///system``.

libvirt's system driver drops QEMU to the ``user``/``group`` of
``/etc/libvirt/qemu.conf`` (Debian's built-in default: libvirt-qemu). Files
and sockets that QEMU opens itself - an NBD socket behind an overlay, a
directory it writes scratch files to - must be reachable by that user.
"""

from __future__ import annotations

import grp
import pwd
import re
from contextlib import suppress
from pathlib import Path

__all__ = ["QEMU_CONF", "qemu_ids"]

QEMU_CONF = Path("/etc/libvirt/qemu.conf")


def qemu_ids(conf: Path = QEMU_CONF) -> tuple[int, int]:
    """``(uid, gid)`` of QEMU's user ("+N" in qemu.conf means a numeric id); root
    when the configured user does not exist on this host."""
    names = {"user": "libvirt-qemu", "group": "libvirt-qemu"}
    with suppress(OSError):
        for line in conf.read_text().splitlines():
            match = re.match(r'\s*(user|group)\s*=\s*"([^"]+)"', line)
            if match:
                names[match.group(1)] = match.group(2)
    return _id(names["user"], pwd.getpwnam), _id(names["group"], grp.getgrnam)


def _id(name: str, lookup: object) -> int:
    if name.startswith("+"):
        return int(name[1:])
    try:
        return int(lookup(name)[2])  # type: ignore[operator]
    except KeyError:
        return 0
