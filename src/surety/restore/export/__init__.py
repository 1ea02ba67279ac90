"""A restore point's disk served or attached: what file-level restore, restore mode,
instant recovery and the verification lab share.

* ``serve`` - one disk served read-only over NBD by nbdkit with surety's
  plugin (``nbdkit_plugin``, loaded by nbdkit *by path*), for as long as a
  ``with`` block (``serve_disk``); ``detached`` - the same, by a server that
  outlives its starter (instant recovery); ``document`` - the export document
  both sides of the plugin's pipe read and write.
* ``attach`` - a served disk as a read-only loop device (nbdfuse), its file
  systems (blkid, partitions), one mounted read-only.
* ``rundir`` - private run directories named ``<pid>.<start time>.<random>``
  and the reaper that releases what a killed run left (mounts, loop devices,
  processes).

Invariants: every byte served is read through ``repo.reader.ImageReader``
(authenticated, re-hashed; a damaged chunk answers EIO, never other bytes,
and is reported); secrets reach the server through an inherited pipe, never
a command line or its environment; while a disk is served a shared
repository lock is held (by the serving process, or by a detached server
itself); every step is undone in ``finally``, and whatever a kill -9 left is
found by path and released by the next run.

Must not know: what the disk is for (files, restore mode, instant recovery,
the lab are above), libvirt, the CLI. Only ``nbdkit_plugin`` imports
``nbdkit``.
"""

from surety.restore.export.attach import (
    FileSystem,
    attach_disk,
    check_host,
    find_file_systems,
    mount_readonly,
)
from surety.restore.export.detached import (
    DetachedServer,
    server_alive,
    start_detached_server,
    stop_server,
)
from surety.restore.export.rundir import detach_loops_under, reap_dead_runs, run_directory
from surety.restore.export.serve import ReadFailure, ServedDisk, serve_disk

__all__ = [
    "DetachedServer",
    "FileSystem",
    "ReadFailure",
    "ServedDisk",
    "attach_disk",
    "check_host",
    "detach_loops_under",
    "find_file_systems",
    "mount_readonly",
    "reap_dead_runs",
    "run_directory",
    "serve_disk",
    "server_alive",
    "start_detached_server",
    "stop_server",
]
