"""The tasks of an execution as the API lists them: ``GET .../tasks?status=failed``
answers every production task with a failed pass (replaced by a fresh one, or failed
for good) with its failure history (how many passes failed, how often it was
replaced, the deliveries that reached a render, the last error), so that a user sees
why a render was slow or failed.

Its ``status`` says where the task stands now: ``done`` once a replacement rendered
it, ``pending`` or ``running`` while its replacement waits or renders, ``failed``
when it failed for good or its execution ended before a replacement rendered it (a
replacement that will never run is no pending task).

Without ``status`` it lists every task a page at a time, in the order of their node's
name (``?limit=N&after=NODE``; ``next`` names the last of a full page), and ``GET
.../tasks/{node}`` answers one task with the lines its worker or reducer logged while it
worked on it (``log``): what a user looks for when one tile comes back wrong."""

from __future__ import annotations

from francine.base import errors
from francine.domain import planning
from francine.domain.envelope import ID as ENVELOPE_ID
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


#: Tasks in one page of the listing: by default, and at most.
PAGE = 100
MAX_PAGE = 1000
#: What else the query string of the routes may hold (the api picks a frame or a wave).
SELECTORS = {"frame", "wave"}


def list_tasks(ad: Adapters, ex: Execution, args) -> dict:
    """``args``: the query string: ``status=failed`` (every task with a failed pass),
    or a page of every task (``limit``, ``after``)."""
    unknown = set(args) - {"status", "limit", "after"} - SELECTORS
    if unknown:
        raise errors.BadRequest(f"unknown query parameter(s): {sorted(unknown)}",
                                "invalid_field")
    status = args.get("status")
    if status is not None:
        if status not in STATUSES:
            raise errors.BadRequest(f"status: must be one of {list(STATUSES)}, or left out "
                                    "for every task", "invalid_field")
        if "limit" in args or "after" in args:
            raise errors.BadRequest("limit, after: the tasks with a failed pass come in "
                                    "one list", "invalid_field")
        tasks = ad.store.failed_tasks(ex.session_id, ex.id)
        return {"tasks": [task_view(ex, t) for t in tasks]}
    limit = page_size(args.get("limit"))
    after = args.get("after") or None
    page = ad.store.task_page(ex.session_id, ex.id, after, limit)
    return {"tasks": [task_view(ex, t) for t in page],
            "next": page[-1].node if len(page) == limit else None}


def page_size(value: str | None) -> int:
    if value is None:
        return PAGE
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_PAGE:
        raise errors.BadRequest(f"limit: a number of tasks from 1 to {MAX_PAGE}",
                                "invalid_field")
    return int(value)


def task_detail(ad: Adapters, ex: Execution, node: str, args) -> dict:
    """One task, with the lines logged while it was worked on (``log``); ``args``: the
    query string (a frame or a wave, nothing else)."""
    unknown = set(args) - SELECTORS
    if unknown:
        raise errors.BadRequest(f"unknown query parameter(s): {sorted(unknown)}",
                                "invalid_field")
    if not ENVELOPE_ID.fullmatch(node):
        raise errors.NotFound(f"no task {node!r} in execution {ex.id}")
    task = ad.store.get_task(ex.session_id, ex.id, planning.task_id(ex.id, node))
    if task is None:
        raise errors.NotFound(f"no task {node!r} in execution {ex.id}")
    return {**task_view(ex, task), "log": list(task.log or [])}
