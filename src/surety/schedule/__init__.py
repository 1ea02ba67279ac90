"""When jobs run: calendar expressions and the missed-run rule (pure; an injected clock).

parse_schedule("Mon..Fri 22:30", tz) -> Schedule     # systemd OnCalendar style
parse_schedule("daily", tz); parse_schedule("every 4h", tz)
Schedule.next_after(t) -> the first slot strictly after t (aware datetimes)
due_slot(schedule, last_slot, now, start_window) -> Due | None
"""

from __future__ import annotations

from surety.schedule.calendar import Schedule, parse_schedule
from surety.schedule.due import Due, due_slot

__all__ = ["Due", "Schedule", "due_slot", "parse_schedule"]
