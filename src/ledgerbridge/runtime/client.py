"""The enqueue/management side of the runtime for processes that run no workflows (API, CLI, a coordinator).

:class:`RuntimeClient` talks only to the system database (DBOS's ``DBOSClient`` with the ledgerbridge JSON
serializer): it enqueues workflows by their registered name for the workers to run, waits for results and offers
the same management helpers as :mod:`ledgerbridge.runtime.core`, returning the same plain dicts. It never runs
migrations: a worker (:meth:`Runtime.launch`) must have created the system database first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dbos import DBOSClient

from ledgerbridge.runtime.core import (
    _workflow_dict,
    await_result,
    list_workflows_from,
    sqlite_engine,
    workflow_steps_from,
)
from ledgerbridge.runtime.serialization import LedgerbridgeJSONSerializer
from ledgerbridge.runtime.settings import RuntimeSettings


class RuntimeClient:
    """Enqueue and manage workflows from outside a worker. Use as a context manager or call :meth:`close`."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self._engine = (
            sqlite_engine(settings.system_database_url, wal=settings.sqlite_wal) if settings.is_sqlite else None
        )
        kwargs: dict[str, Any] = {"serializer": LedgerbridgeJSONSerializer(), "application_name": settings.app_name}
        if self._engine is not None:
            kwargs["system_database_engine"] = self._engine
        else:
            kwargs["system_database_url"] = settings.system_database_url
        self._client = DBOSClient(**kwargs)

    def __enter__(self) -> RuntimeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.destroy()
        if self._engine is not None:
            self._engine.dispose()

    def enqueue(
        self,
        queue: str,
        workflow: str,
        *args: Any,
        workflow_id: str,
        partition_key: str | None = None,
        priority: int | None = None,
        delay_seconds: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Enqueue the workflow registered as ``workflow`` on ``queue`` for this application version; returns the
        id. ``workflow_id`` is required (the idempotency key: an existing id is not enqueued again)."""
        if self._client.retrieve_queue(queue) is None:
            raise ValueError(f"queue {queue!r} is not registered in the system database: start a worker that "
                             "declares it (Runtime.launch(queues=...)) before enqueueing")
        options: dict[str, Any] = {"queue_name": queue, "workflow_name": workflow, "workflow_id": workflow_id,
                                   "app_version": self.settings.application_version}
        if partition_key:
            options["queue_partition_key"] = partition_key
        if priority is not None:
            options["priority"] = priority
        if delay_seconds is not None:
            if not (delay_seconds >= 0 and math.isfinite(delay_seconds)):
                raise ValueError(f"delay_seconds must be >= 0, got {delay_seconds!r}")
            options["delay_seconds"] = delay_seconds
        handle: Any = self._client.enqueue(options, *args, **kwargs)  # type: ignore[arg-type]
        return str(handle.get_workflow_id())

    def result(self, workflow_id: str, *, timeout_seconds: float | None = None, poll_seconds: float = 0.2) -> Any:
        """Wait for a workflow's result (its error is re-raised); same rules as :func:`ledgerbridge.runtime.result`."""
        return await_result(lambda: self._client.retrieve_workflow(workflow_id), workflow_id, timeout_seconds,
                            poll_seconds)

    def list_workflows(
        self,
        *,
        status: str | Sequence[str] | None = None,
        name: str | Sequence[str] | None = None,
        queue: str | None = None,
        limit: int | None = 100,
        newest_first: bool = True,
        with_data: bool = False,
    ) -> list[dict[str, Any]]:
        """Same as :func:`ledgerbridge.runtime.list_workflows`."""
        return list_workflows_from(self._client.list_workflows, status=status, name=name, queue=queue, limit=limit,
                                   newest_first=newest_first, with_data=with_data)

    def get_workflow(self, workflow_id: str, *, with_data: bool = True) -> dict[str, Any] | None:
        rows = self._client.list_workflows(workflow_ids=[workflow_id], load_input=with_data)
        return _workflow_dict(rows[0], with_data=with_data) if rows else None

    def workflow_steps(self, workflow_id: str) -> list[dict[str, Any]]:
        return workflow_steps_from(self._client.list_workflow_steps(workflow_id))

    def _require(self, workflow_id: str) -> dict[str, Any]:
        found = self.get_workflow(workflow_id, with_data=False)
        if found is None:
            raise KeyError(f"no workflow with id {workflow_id!r}: check the id with `list_workflows`")
        return found

    def cancel(self, workflow_id: str) -> dict[str, Any]:
        self._require(workflow_id)
        self._client.cancel_workflow(workflow_id)
        return self._require(workflow_id)

    def resume(self, workflow_id: str) -> dict[str, Any]:
        self._require(workflow_id)
        self._client.resume_workflow(workflow_id)
        return self._require(workflow_id)

    def fork(self, workflow_id: str, start_step: int, *, application_version: str | None = None) -> dict[str, Any]:
        self._require(workflow_id)
        if start_step < 1:
            raise ValueError(f"start_step must be >= 1 (steps are numbered from 1), got {start_step}")
        handle = self._client.fork_workflow(
            workflow_id, start_step, application_version=application_version or self.settings.application_version
        )
        return self._require(handle.get_workflow_id())
