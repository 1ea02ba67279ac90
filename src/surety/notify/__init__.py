"""Notifications: tell a person when a run failed, fell back, succeeded, when a VM's RPO
is violated, and once a day what happened.

    events    ``Event`` (kind, policy, vm, run, subject, body, what to do) built from a
              ``Run`` and its ``RunResult``, an RPO violation or a day's runs
    email     SMTP (stdlib ``smtplib``; STARTTLS, login with a password file)
    webhook   a JSON POST (``httpx``): the contract is in docs/notifications.md
    notifier  ``Notifier``: which targets get which event (the policy's ``notify``
              names, each target's ``events``, ``only_last_retry``), RPO and daily
              summary de-duplicated through the catalog

A send that fails raises ``NotificationError`` after every other target was
tried: the caller (the service) logs it; a notification never fails a run.
Knows nothing of how runs are executed, nor of the CLI.
"""

from surety.notify.events import Event, NotificationError
from surety.notify.notifier import Notifier

__all__ = ["Event", "NotificationError", "Notifier"]
