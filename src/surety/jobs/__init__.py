"""Jobs: what one run of a policy's job does, and what the host's VMs' status is.

    spec      ``JobSpec`` (job ``<policy>:<kind>``, VM, attempt, slot): JSON for a worker
    execute   ``execute(spec, config, *, repo, host, catalog, progress) -> RunResult``:
              dispatches to backup | verify | check | copy; a ``SuretyError`` becomes a
              ``failed`` result with a hint, ``Interrupted`` an ``interrupted`` one,
              a VM gone from the host ``skipped``; anything else is a bug and propagates
    backup    back up one VM by its policy, then retention (that VM's points), prune,
              repository usage; fall-backs and failed truncation are ``warning``
    verify    the latest point of each of the policy's VMs (or its group file) in the lab
    check     the repository's check with a rolling ``--read-data-subset n/m``
    copy      a new point (or the policy's points) into the ``copy_to`` repository,
              then that repository's own retention
    hints     ``hint_for(exc)``: one line saying what a person does about a failure
    usage     logical vs stored bytes of a repository
    status    (``compute_status``) every VM of the host: protected or not, RPO, next run

Invariant: a run never truncates logs itself; only the backup use case does, after
its commit. The wiring (opening the repository, the host, the catalog) is the
caller's (``surety.app`` through the service's worker or the CLI): jobs opens nothing.
"""
