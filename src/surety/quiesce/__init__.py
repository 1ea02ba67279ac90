"""Quiescing: bring a VM's applications and file systems to a consistent instant.

The *requester* (``coordinator.Requester``) drives every *writer* that applies
to a VM through discover -> prepare -> freeze (bounded window) -> snapshot ->
thaw (always) and, once the backup job has committed its restore point,
after-commit (log truncation). The *provider* (``provider.SnapshotProvider``) takes the
snapshot. Writers act
in the guest only through a ``GuestChannel`` (qemu-guest-agent): guest-side
scripts are pushed at run time and removed afterwards.

Invariants held here:
  * no writer truncates a log before ``after_commit`` is called, and the
    backup use case calls it only after the manifest is durable;
  * every writer that was asked to freeze is asked to thaw, in ``finally``;
    guest-side scripts also release on their own deadline (the window), so a
    killed job never leaves an application quiesced;
  * the consistency level recorded is the one reached, with the reason.

Knows nothing of libvirt (the channel and provider are injected), of the
repository or of the CLI.
"""
