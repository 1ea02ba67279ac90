#!/usr/bin/env bash
# Make the golden repository of format version 1 (tests/golden/v1) with the
# code that wrote format 1: the last format-1 commit, checked out into a
# temporary git worktree and run from there (PYTHONPATH, the project's venv for
# the libraries; nothing is installed).
#
#   tests/golden/make_v1.sh [OUT]      OUT defaults to tests/golden/v1
#
# Two restore points of one 6 MiB disk image (64 KiB chunks, passphrase
# `golden`, name `golden`): the first of a seeded image (text, random bytes,
# zeros, one chunk repeated, low-entropy bytes, a short last chunk), the
# second of the same image with scattered runs of 4 KiB blocks rewritten, as
# an incremental would see it (most chunks shared with the first). Prints the
# SHA-256 of each image and the points' ids, for tests/golden/README.md and
# tests/integration/test_golden.py.
#
# The images are the same on every run; the repository is not (random ids,
# keys and nonces). A golden repository is never edited: the committed copy is
# the golden one, and this script only says how it was made. Run it to replace
# tests/golden/v1 on purpose, after removing it.
set -euo pipefail
cd "$(dirname "$0")/../.."
COMMIT=e78a8d1 # the last commit that writes repository format 1
OUT=${1:-tests/golden/v1}
PYTHON=${PYTHON:-.venv/bin/python}

if [[ -e $OUT ]]; then
    echo "$OUT exists: a golden repository is never edited (remove it to replace it)" >&2
    exit 1
fi
work=$(mktemp -d)
cleanup() {
    git worktree remove --force "$work/src" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
git worktree add --quiet --detach "$work/src" "$COMMIT"

surety() {
    PYTHONPATH="$work/src/src" SURETY_REPOSITORY="$work/repo" SURETY_PASSPHRASE=golden \
        "$PYTHON" -m surety "$@"
}
PYTHONPATH="$work/src/src" "$PYTHON" - "$work/src/src" <<'EOF'
import sys
from pathlib import Path

import surety
from surety.repo.format import FORMAT_VERSION

assert Path(surety.__file__).is_relative_to(sys.argv[1]), f"running {surety.__file__}"
assert FORMAT_VERSION == 1, FORMAT_VERSION
EOF

# golden.img, version 1 or 2: the second rewrites runs of 4 KiB blocks of the first.
make_image() {
    "$PYTHON" - "$work/golden.img" "$1" <<'EOF'
import random
import sys

KIB, MIB = 1024, 1024 * 1024
path, version = sys.argv[1], int(sys.argv[2])
rng = random.Random(20260101)
words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(400)]


def text(size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(words, k=12)) + b".\n"
    return bytes(out[:size])


repeated = rng.randbytes(64 * KIB)
image = b"".join(
    [
        text(MIB),  # compressible
        rng.randbytes(MIB + MIB // 2),  # incompressible
        bytes(MIB // 2),  # all-zero chunks: recorded, not stored
        repeated * 16,  # one chunk, stored once
        bytes(rng.choices(b"\x00\x01\x02\x03\x10\x20\x40\x80", k=2 * MIB)),  # low entropy
        text(12_345),  # a short last chunk
    ]
)
if version == 2:
    blocks = bytearray(image)
    for _ in range(20):  # scattered runs, as a guest's writes between two backups
        run = rng.randint(1, 8)
        at = rng.randrange(len(blocks) // (4 * KIB) - run) * 4 * KIB
        fresh = text(run * 4 * KIB) if rng.random() < 0.5 else rng.randbytes(run * 4 * KIB)
        blocks[at : at + run * 4 * KIB] = fresh
    image = bytes(blocks)
with open(path, "wb") as out:
    out.write(image)
EOF
}

surety init --chunk-size 64K
for version in 1 2; do
    make_image "$version"
    echo "image $version: $(stat -c %s "$work/golden.img") bytes," \
        "SHA-256 $(sha256sum "$work/golden.img" | cut -d' ' -f1)"
    surety backup image "$work/golden.img" --name golden
    sleep 1 # distinct times: golden@latest is the second
done
surety points
surety check --read-data
mkdir -p "$(dirname "$OUT")"
cp -r "$work/repo" "$OUT"
echo "$OUT: $(du -sh "$OUT" | cut -f1), $(find "$OUT" -type f | wc -l) files"
