"""The one error tree of surety, with its exit codes.

Every error a user can cause or meet carries a one-line message and a distinct
exit code; the CLI prints the message and exits with the code, never a
traceback. Anything that is *not* a ``SuretyError`` is a bug and is shown with
its traceback (exit code 1).

    SuretyError                      exit 1   (base; never raised itself)
    +-- UsageError                   exit 2   bad option or argument combination
    +-- RepositoryNotFound           exit 3   path/bucket is not a surety repository
    +-- RepositoryExists             exit 3   init on a path that already holds one
    +-- WrongPassphrase              exit 4   no key file opens with this passphrase
    +-- RestorePointNotFound         exit 5   unknown id, prefix or NAME@latest
    |   +-- AmbiguousRestorePoint    exit 5   prefix matches several
    +-- DiskNotFound                 exit 5   restore point has no such disk
    +-- IntegrityError               exit 6   a stored byte does not match its hash/tag
    +-- RepositoryLocked             exit 7   a conflicting lock is held
    +-- ServiceRunning               exit 7   another surety service holds this host's lock
    +-- StorageFull                  exit 8   the backend ran out of space
    +-- StorageError                 exit 9   the backend failed (I/O, network)
    |   +-- ObjectNotFound           exit 9   a named object is missing from storage
    |   +-- ObjectExists             exit 9   create-if-absent found the name taken
    |   +-- StorageReadOnly          exit 9   the backend refuses writes (read-only
    |                                         mount, snapshot, another user's files)
    +-- SourceError                  exit 10  the thing to back up cannot be read
    +-- TargetError                  exit 11  the restore target cannot be written
    +-- PathNotFound                 exit 12  a path is not in the restore point's file system
    +-- ExposeError                  exit 13  a disk cannot be served or mounted (tool missing,
                                              no file system surety can mount)
    +-- RestoreProcedureFailed       exit 14  restored, but an app's restore procedure failed
    +-- LabError                     exit 15  the verification lab could not be built or run
    +-- VerificationFailed           exit 16  a restore point booted in the lab failed a probe
    +-- Interrupted                  exit 130 SIGINT/SIGTERM; nothing was committed
"""

from __future__ import annotations

__all__ = [
    "AmbiguousRestorePoint",
    "DiskNotFound",
    "ExposeError",
    "IntegrityError",
    "Interrupted",
    "LabError",
    "ObjectExists",
    "ObjectNotFound",
    "PathNotFound",
    "RepositoryExists",
    "RepositoryLocked",
    "RepositoryNotFound",
    "RestorePointNotFound",
    "RestoreProcedureFailed",
    "ServiceRunning",
    "SourceError",
    "StorageError",
    "StorageFull",
    "StorageReadOnly",
    "SuretyError",
    "TargetError",
    "UsageError",
    "VerificationFailed",
    "WrongPassphrase",
]


class SuretyError(Exception):
    """Base of every expected failure; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(SuretyError):
    exit_code = 2


class RepositoryNotFound(SuretyError):
    exit_code = 3


class RepositoryExists(SuretyError):
    exit_code = 3


class WrongPassphrase(SuretyError):
    exit_code = 4


class RestorePointNotFound(SuretyError):
    exit_code = 5


class AmbiguousRestorePoint(RestorePointNotFound):
    pass


class DiskNotFound(SuretyError):
    exit_code = 5


class IntegrityError(SuretyError):
    """Stored data failed authentication or its hash: never restored silently."""

    exit_code = 6


class RepositoryLocked(SuretyError):
    exit_code = 7


class ServiceRunning(SuretyError):
    """Another surety service holds this host's service lock."""

    exit_code = 7  # as RepositoryLocked: a conflicting lock is held


class StorageFull(SuretyError):
    exit_code = 8


class StorageError(SuretyError):
    """The backend failed; may be transient (a retry wrapper may retry it)."""

    exit_code = 9


class ObjectNotFound(StorageError):
    """The named object does not exist. Never transient: do not retry."""


class ObjectExists(StorageError):
    """``create`` found an object under the name already. Never transient."""


class StorageReadOnly(StorageError):
    """The backend refuses writes; reading commands go on without a lock."""


class SourceError(SuretyError):
    exit_code = 10


class TargetError(SuretyError):
    exit_code = 11


class PathNotFound(SuretyError):
    """A path asked for does not exist in the restore point's file system."""

    exit_code = 12


class ExposeError(SuretyError):
    """A restore point's disk cannot be served, attached or mounted here."""

    exit_code = 13


class RestoreProcedureFailed(SuretyError):
    """The VM was restored, but an application's restore procedure failed (left in restore mode)."""

    exit_code = 14


class LabError(SuretyError):
    """The verification lab could not be built, or a VM could not be booted in it."""

    exit_code = 15


class VerificationFailed(SuretyError):
    """A restore point booted in the lab but failed a probe (the proof says which)."""

    exit_code = 16


class Interrupted(SuretyError):
    exit_code = 130
