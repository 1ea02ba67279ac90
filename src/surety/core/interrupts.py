"""Stop requests (SIGINT, SIGTERM) that never land after the point of no return.

The CLI's signal handler calls ``request_stop``. Outside a deferred section it
raises ``KeyboardInterrupt`` at once, so a long copy stops where it is and
commits nothing. Inside a ``with deferred() as section:`` block the request is
only recorded (``section.requested``): the block runs to its end, and its
caller decides. A use case opens a section at its point of no return (the
manifest commit of a backup, the final rename of a restore) so that a stop
arriving there can never be reported as "interrupted" or "nothing was
committed" for work that was in fact completed; it reports success instead,
with a note that the stop request came after the work was complete.

Sections nest; a request is recorded in every open section. Signal handlers
run in the main thread, and sections are opened there only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Section", "deferred", "request_stop"]


class Section:
    """One deferred section; ``requested`` is set by a stop request inside it."""

    def __init__(self) -> None:
        self.requested = False


_open: list[Section] = []


def request_stop() -> None:
    """Stop now (``KeyboardInterrupt``), or record the request in the open sections."""
    if not _open:
        raise KeyboardInterrupt
    for section in _open:
        section.requested = True


@contextmanager
def deferred() -> Iterator[Section]:
    """A block that a stop request does not interrupt; see ``Section.requested``."""
    section = Section()
    _open.append(section)
    try:
        yield section
    finally:
        _open.remove(section)
