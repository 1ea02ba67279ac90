"""The hypervisor side: libvirt, domain XML, pull-mode backup, NBD reads, guest agent.

``libvirt_host`` is the only module importing libvirt, ``nbd`` the only one
importing libnbd. ``guardian`` is the out-of-process watchdog that thaws a
guest and ends a backup job when the job itself cannot. Knows nothing of the
repository format or the CLI.
"""
