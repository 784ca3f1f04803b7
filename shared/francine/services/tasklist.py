"""The tasks of an execution as the API lists them: ``GET .../tasks?status=failed``
answers every production task with a failed pass (replaced by a fresh one, or failed
for good) with its failure history (how many passes failed, how often it was
replaced, the deliveries that reached a render, the last error), so that a user sees
why a render was slow or failed.

Its ``status`` says where the task stands now: ``done`` once a replacement rendered
it, ``pending`` or ``running`` while its replacement waits or renders, ``failed``
when it failed for good or its execution ended before a replacement rendered it (a
replacement that will never run is no pending task)."""

from __future__ import annotations

from francine.base import errors
from francine.domain.records import TASK_FINAL, Execution, Status, Task
from francine.ports import Adapters
from francine.services.views import rfc3339

STATUSES = ("failed",)


def task_view(ex: Execution, task: Task) -> dict:
    status = task.status
    if ex.final and status not in TASK_FINAL:
        status = Status.FAILED  # its replacement never ran: every pass it rendered failed
    return {"node": task.node, "kind": str(task.kind), "status": str(status),
            "failures": task.failures, "replaced": task.generation,
            "attempts": task.attempts, "error": task.error,
            # where and when it last ran, and what it cost (a debugging user's questions)
            "instance": task.owner, "started": rfc3339(task.started),
            "finished": rfc3339(task.finished), "fetch_s": task.fetch_s,
            "work_s": task.work_s, "cpu_s": task.cpu_s}


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
    return {"tasks": [task_view(ex, t) for t in tasks]}
