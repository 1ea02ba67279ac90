"""What to do about a failed run: one line per kind of error (``hint_for``).

The run's error says what happened; the hint says what a person does next.
Checked most specific first (``ObjectNotFound`` before ``StorageError``), so
a subclass gets its own advice and otherwise its parent's.
"""

from __future__ import annotations

from surety.core.errors import (
    IntegrityError,
    Interrupted,
    LabError,
    RepositoryLocked,
    RepositoryNotFound,
    RestorePointNotFound,
    SourceError,
    StorageError,
    StorageFull,
    StorageReadOnly,
    SuretyError,
    TargetError,
    UsageError,
    VerificationFailed,
    WrongPassphrase,
)

__all__ = ["hint_for"]

_HINTS: tuple[tuple[type[SuretyError], str], ...] = (
    (
        WrongPassphrase,
        "check the repository's passphrase_file in the configuration: it does not open the "
        "repository",
    ),
    (
        RepositoryNotFound,
        "check the repository's location in the configuration (is the storage mounted?), "
        "or create it with `surety init`",
    ),
    (
        RepositoryLocked,
        "another surety process holds the repository; if none runs, `surety unlock` removes "
        "the stale lock",
    ),
    (
        StorageFull,
        "free space on the repository's storage, or forget old points and `surety prune`",
    ),
    (
        StorageReadOnly,
        "the repository's storage refuses writes: check the mount (read-only?) and its owner",
    ),
    (StorageError, "check that the repository's storage is reachable; the next attempt retries"),
    (
        IntegrityError,
        "run `surety check --read-data` to find the damage, then `surety repair` as it says",
    ),
    (
        SourceError,
        "check that the VM runs (or is defined), libvirt answers and qemu-guest-agent is "
        "installed and running in the guest",
    ),
    (
        VerificationFailed,
        "open the proof (its path is in the run's details) to see which probe failed",
    ),
    (LabError, "check the host can build the lab (root, bridge, network namespaces); see the log"),
    (
        RestorePointNotFound,
        "no restore point to work on yet: check the policy's backups succeed first",
    ),
    (TargetError, "check the disk space and permissions where surety writes (catalog, proofs)"),
    (UsageError, "fix the policy in the configuration (`surety config check` names the key)"),
    (Interrupted, "nothing was committed; the next scheduled run tries again"),
)


def hint_for(exc: BaseException) -> str:
    """One line saying what to do about ``exc``."""
    for kind, hint in _HINTS:
        if isinstance(exc, kind):
            return hint
    return "see the run's log (`surety jobs log RUN_ID`)"
