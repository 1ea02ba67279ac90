"""Wiring: the one place that turns options into concrete adapters.

    ``catalog``     the catalog of verifications (and soon runs): SQLite at a path
    ``configured``  a repository the configuration names: its passphrase file and its own
                    S3 settings (endpoint, region, profile, CA) instead of the environment's
    ``facts``       restore points and runs as JSON: one shape for ``--json`` and the web API
    ``hypervisor``  the hypervisor host use cases work on (libvirt, connected at first use)
    ``repository``  the storage backend for a repository location; open or create it
    ``status``      what ``surety status`` and ``surety jobs list`` show: the host's VMs,
                    each repository's points, the catalog's runs (shared with the web console)

Hands use cases what they need. No UI here (the CLI renders), no business
logic (the use cases decide).
"""

__all__ = ["catalog", "configured", "facts", "hypervisor", "repository", "status"]
