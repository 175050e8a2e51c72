"""Durable runtime: DBOS Transact behind a small typed interface (see docs/runtime.md).

Nothing outside this package imports ``dbos``. Typical use::

    from ledgerbridge import runtime as rt

    @rt.workflow("post_invoices")            # module level, imported before launch
    def post_invoices(batch: dict) -> dict:
        posted = rt.call_with_policy(erp_post, POST_POLICY, batch, name="erp_post", system="netsuite")
        return {"posted": posted}

    rt.Runtime.launch(rt.RuntimeSettings(), queues=[rt.QueueSpec("netsuite", concurrency=4, rate_limit=10)])
    wf_id = rt.enqueue("netsuite", post_invoices, batch, workflow_id="post:INV-42@3")
    rt.result(wf_id)
"""

from ledgerbridge.runtime.client import RuntimeClient
from ledgerbridge.runtime.core import (
    DBOS_LOGGER_NAME,
    STATUSES,
    Runtime,
    RuntimeLaunchError,
    RuntimeNotLaunchedError,
    ScheduleSpec,
    WorkflowNotFinishedError,
    apply_schedules,
    cancel,
    current_workflow_id,
    enqueue,
    enqueue_many,
    fork,
    get_workflow,
    in_step,
    in_workflow,
    list_workflows,
    register_queues,
    result,
    resume,
    run,
    sleep,
    start,
    step,
    workflow,
    workflow_steps,
)
from ledgerbridge.runtime.retry import call_with_policy, with_retry
from ledgerbridge.runtime.serialization import LedgerbridgeJSONSerializer, UnrestorableError
from ledgerbridge.runtime.settings import (
    DEFAULT_APPLICATION_VERSION,
    DEFAULT_RETRY_POLICY,
    WORKFLOW_SCHEMA_VERSION,
    QueueSpec,
    RetryPolicy,
    RuntimeSettings,
)

__all__ = [
    "DBOS_LOGGER_NAME",
    "DEFAULT_APPLICATION_VERSION",
    "DEFAULT_RETRY_POLICY",
    "STATUSES",
    "WORKFLOW_SCHEMA_VERSION",
    "LedgerbridgeJSONSerializer",
    "QueueSpec",
    "RetryPolicy",
    "Runtime",
    "RuntimeClient",
    "RuntimeLaunchError",
    "RuntimeNotLaunchedError",
    "RuntimeSettings",
    "ScheduleSpec",
    "UnrestorableError",
    "WorkflowNotFinishedError",
    "apply_schedules",
    "call_with_policy",
    "cancel",
    "current_workflow_id",
    "enqueue",
    "enqueue_many",
    "fork",
    "get_workflow",
    "in_step",
    "in_workflow",
    "list_workflows",
    "register_queues",
    "result",
    "resume",
    "run",
    "sleep",
    "start",
    "step",
    "with_retry",
    "workflow",
    "workflow_steps",
]
