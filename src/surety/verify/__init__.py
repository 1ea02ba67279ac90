"""Verify before you rely: restore points booted in an isolated lab, probed, proven.

``verify.run`` is the use case (``surety verify``); ``verify.lab`` builds the
lab (a private network namespace, VMs on throwaway overlays over the
repository); ``verify.addressing`` gives clones their addresses back through
the guest agent; ``verify.probes`` are the checks; ``verify.application_group`` reads
application groups; ``verify.proof`` writes the reports (and ``verify.summary``
a sealed summary of each verdict into the repository, for recovery without the
catalog: docs/dr.md); ``verify.truncation``
lets writers truncate logs a passed point covers (``after-verify``);
``verify.items`` and ``verify.dumptools`` extract tables with the app's own
tools from a point booted in the lab.

Invariants: nothing in the lab reaches anything outside it (no route, no
forwarding, no host address in the namespace but the prober's); a lab is torn
down in ``finally`` and a killed lab is reaped by the next; a restore point is
marked ``verified`` only when every probe of it passed. Must not know the CLI.
"""
