"""The repository: content-addressed, deduplicated, compressed, encrypted.

Holds restore points (manifests -> image indexes -> chunks in packs) on a
storage backend (``storage``). The format is specified in docs/format.md;
constants live in ``format``. Invariants:

* commit order: packs -> index -> image indexes -> manifest (the commit);
* every byte read back is authenticated and hash-checked (``IntegrityError``);
* backups hold a shared lock, forget/prune an exclusive one.

Knows nothing of VMs, guests or the CLI.
"""
