"""Use cases: restore disks and whole VMs from restore points.

Every chunk read back is authenticated and hash-checked (``Repository.read_chunk``);
a failure stops the restore with ``IntegrityError`` and leaves no file under
the target name. Knows nothing of the CLI.
"""
