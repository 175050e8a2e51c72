"""Managing cron schedules (DBOS 3.4 schedule rows) as plain dicts: list, pause, resume, trigger, delete.

:func:`ledgerbridge.runtime.apply_schedules` creates them; this module is what the ``ledgerbridge schedules``
command and ``flows/schedules.py`` use to look at and steer them, so nothing outside the runtime imports DBOS.
"""

from __future__ import annotations

from typing import Any

from dbos import DBOS
from dbos._error import DBOSException

from ledgerbridge.runtime.core import Runtime


def _schedule_dict(s: Any) -> dict[str, Any]:
    return {
        "name": s["schedule_name"],
        "workflow": s["workflow_name"],
        "cron": s["schedule"],
        "status": s["status"],
        "context": s["context"],
        "last_fired_at": s.get("last_fired_at"),
        "timezone": s.get("cron_timezone"),
        "queue": s.get("queue_name"),
    }


def list_schedules(prefix: str | None = None) -> list[dict[str, Any]]:
    """This application's schedules (name, workflow, cron, status ACTIVE/PAUSED, context, last tick), by name."""
    Runtime.current()
    rows = DBOS.list_schedules(schedule_name_prefix=prefix) if prefix else DBOS.list_schedules()
    return sorted((_schedule_dict(r) for r in rows), key=lambda d: d["name"])


def get_schedule(name: str) -> dict[str, Any] | None:
    Runtime.current()
    row = DBOS.get_schedule(name)
    return _schedule_dict(row) if row is not None else None


def _require(name: str) -> dict[str, Any]:
    found = get_schedule(name)
    if found is None:
        known = ", ".join(d["name"] for d in list_schedules()) or "none"
        raise KeyError(f"no schedule named {name!r} (known: {known}) — apply the configured schedules first")
    return found


def pause_schedule(name: str) -> dict[str, Any]:
    """Stop the schedule firing (its row stays; :func:`resume_schedule` starts it again)."""
    _require(name)
    DBOS.pause_schedule(name)
    return _require(name)


def resume_schedule(name: str) -> dict[str, Any]:
    _require(name)
    DBOS.resume_schedule(name)
    return _require(name)


def trigger_schedule(name: str) -> str:
    """Run the schedule's workflow now (a tick at the current time, outside the cron); returns its workflow id."""
    _require(name)
    try:
        handle = DBOS.trigger_schedule(name)
    except DBOSException as exc:
        raise ValueError(f"schedule {name!r}: {exc}") from exc
    return str(handle.get_workflow_id())


def delete_schedule(name: str) -> None:
    """Remove a schedule row (no-op when absent)."""
    Runtime.current()
    DBOS.delete_schedule(name)
