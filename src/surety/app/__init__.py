"""Wiring: the one place that turns options into concrete adapters.

    ``repository``  the storage backend for a repository location; open or create it

Hands use cases what they need. No UI here (the CLI renders), no business
logic (the use cases decide).
"""

__all__ = ["repository"]
