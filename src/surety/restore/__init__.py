"""Use cases: restore disks and whole VMs from restore points, by concept.

::

    instant/   instant recovery: run a VM from the repository now, move it later
    mode/      restore mode: first boot with the apps held, their restore procedures
    files/     file-level restore: list and extract files of a point's disk
    vm/        full VM restore: plan, write, switch over; the RestoreHook port
    export/    a point's disk served over NBD (nbdkit plugin), attached, run dirs
    image.py   disk restore: one disk to a file or device; the file writers

Dependencies point down only (import-linter holds the order): ``instant``,
``mode`` and ``files`` are independent of each other; ``instant`` uses ``vm``
(its plan) and ``export``, ``mode`` plugs into ``vm`` as a hook and uses
``export``, ``files`` uses ``export``; ``vm`` and ``export`` are independent
and use ``image``. Other packages import a sub-package (``restore.export``),
not its modules. Item-level recovery runs in the lab and lives in
``verify.items``.

Every chunk read back is authenticated and hash-checked (``Repository.read_chunk``);
a failure stops the restore with ``IntegrityError`` and leaves no file under
the target name. Knows nothing of the CLI.
"""
