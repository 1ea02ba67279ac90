"""The hypervisor side: libvirt, domain XML, pull-mode backup, NBD reads, guest agent.

``port`` is the hypervisor port - ``HypervisorHost`` and ``HypervisorDomain``,
what the use cases call, with their guarantees - and ``libvirt_host`` its
adapter, the only module importing libvirt (``nbd`` is the only one importing
libnbd). Use cases receive a host from the wiring (``surety.app``); the
in-memory twin is ``surety.testing.fake_hypervisor``. ``guardian`` is the
out-of-process watchdog that thaws a guest and ends a backup job when the job
itself cannot; it connects by itself. Knows nothing of the repository format
or the CLI.
"""
