"""The surety service: the long-running process that runs due jobs on a host.

    plan      pure decisions: the jobs of a configuration, which queued runs start
              now (one per VM, ``max_jobs``, one repository-wide run at a time), backoff
    daemon    the loop: schedule, start, reap, retry, notify, heartbeat, signals
    runner    the ``JobRunner`` port; ``ProcessRunner`` runs each job in a worker process
    worker    ``python -m surety.service.worker``: one run, wired through ``surety.app``
    web_child ``[web]``: ``surety web`` as a child process, restarted when it dies
    lock      one service per host (``flock`` beside the catalog)
    main      ``run_service``: wiring for ``surety service``

Imports ``app`` (wiring), ``jobs`` (what a run does), ``notify``, ``config``,
``schedule`` and ``catalog``; the CLI is its only importer.
"""
