"""Use case: back up a disk (image file, block device; later a live VM).

``pipeline`` turns any ``DiskSource`` into an image index through the
repository's ``ChunkWriter`` (reads, hashing/compression and pack stores
overlap; memory is bounded). ``image`` is the ``surety backup image`` use case.
Knows the repository API, not how it stores bytes; knows nothing of the CLI.
"""
