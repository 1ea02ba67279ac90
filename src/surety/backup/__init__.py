"""Use cases: back up a disk image or a VM (running or shut off).

    ``pipeline``  any ``DiskSource`` into an image index through the repository's
                  ``ChunkWriter``: reads, hashing/compression and pack stores overlap,
                  memory is bounded; an incremental takes clean chunks from its parent
    ``image``     ``surety backup image``: a raw image file or block device
    ``vm``        ``surety backup vm``: every disk of a running libvirt VM at one
                  instant (pull-mode backup), quiesced through ``surety.quiesce``
    ``chain``     full or incremental: changed-block tracking only when every link holds
    ``shutoff``   a shut-off VM: read on its QEMU started paused, powered off after the
                  copy; its consistency from libvirt's shut-off reason

Invariants: the manifest write is the commit, in a deferred section (a stop
request there reports the committed point); logs are truncated only after it;
a frozen guest is thawed in ``finally`` and by the out-of-process guardian.
Knows the repository API, not how it stores bytes; reaches libvirt only
through ``surety.hypervisor``; knows nothing of the CLI.
"""

__all__ = ["chain", "image", "pipeline", "shutoff", "vm"]
