"""File-level restore: list and extract files of a restore point without restoring its disk.

* ``browse`` - the stack in one context manager (``mounted_file_system``: a
  private run directory, the disk served and attached through
  ``restore.export``, one file system mounted read-only), choosing the file
  system, ``surety files fs`` and ``surety files ls``.
* ``extract`` - ``surety files get``: copy entries out with their metadata.
* ``guestpath`` - guest paths resolved as ``chroot`` would (``lstat`` per
  component, links read as guest paths, ``..`` stops at the root).

Invariants: nothing is ever written to the restore point (mounts are
read-only and replay no journal); no guest symlink is followed out of the
guest's file system, nor written through on the target; an entry appears
under its final name only once complete; a read the server refused for
damage makes the command fail (``IntegrityError``), even when the copy
seemed to succeed.

Must not know: VM restore, restore mode, instant recovery, the CLI.
Item-level recovery (an application's own tools in the lab) is
``verify.items``, not here.
"""

from surety.restore.files.browse import (
    RUN_ROOT,
    FileSource,
    FileSystemsResult,
    Listing,
    MountedFileSystem,
    choose_file_system,
    list_file_systems,
    list_files,
    mounted_file_system,
)
from surety.restore.files.extract import Extraction, GetOptions, get_files
from surety.restore.files.guestpath import Entry

__all__ = [
    "RUN_ROOT",
    "Entry",
    "Extraction",
    "FileSource",
    "FileSystemsResult",
    "GetOptions",
    "Listing",
    "MountedFileSystem",
    "choose_file_system",
    "get_files",
    "list_file_systems",
    "list_files",
    "mounted_file_system",
]
