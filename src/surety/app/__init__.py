"""Wiring: the one place that turns options into concrete adapters.

Chooses the storage backend for a repository location, opens or creates the
repository, and hands use cases what they need. No UI here (the CLI renders),
no business logic (the use cases decide).
"""
