"""The tasks of an execution as the API lists them: ``GET .../tasks?status=failed``
answers every production task with a failed pass (replaced by a fresh one, or failed
for good) with its error, so that a user sees why a render was slow or failed."""

from __future__ import annotations

from francine.base import errors
from francine.domain.records import Execution
from francine.ports import Adapters

STATUSES = ("failed",)


def task_view(task) -> dict:
    return {"node": task.node, "kind": str(task.kind), "status": str(task.status),
            "failures": task.failures, "replaced": task.generation,
            "attempts": task.attempts, "error": task.error}


def list_tasks(ad: Adapters, ex: Execution, args) -> dict:
    """``args``: the query string. Only ``status=failed`` is served: listing every task
    of a 10,000-task execution is not something a client should page through."""
    unknown = set(args) - {"status"}
    if unknown:
        raise errors.BadRequest(f"unknown query parameter(s): {sorted(unknown)}",
                                "invalid_field")
    status = args.get("status")
    if status not in STATUSES:
        raise errors.BadRequest(f"status: must be one of {list(STATUSES)}", "invalid_field")
    tasks = ad.store.failed_tasks(ex.session_id, ex.id)
    return {"tasks": [task_view(t) for t in tasks]}
