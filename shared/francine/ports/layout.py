"""The stored shape of records and objects, shared by every implementation of the ports:
the Firestore adapter and its twin write the same documents, the Cloud Storage adapter
and its twin the same object names. The only place that knows the layout.
"""

from __future__ import annotations

from francine.domain.records import Execution, Kind, Session, Status, Task
from francine.ports.protocols import Fields, RecoveryCounts

# --- records ⇄ documents ---------------------------------------------------------------

_TASK_FIELDS = ("node", "kind", "parent", "status", "children", "attempts", "owner",
                "started", "finished", "error", "pass_index", "seed", "passes",
                "fetch_s", "work_s", "cpu_s", "failures", "generation", "speculated",
                "redrives", "queue", "tag", "rank", "slot", "log")


def task_to_doc(task: Task) -> Fields:
    doc: Fields = {"node": task.node, "kind": str(task.kind), "parent": task.parent,
                   "status": str(task.status), "children": task.children,
                   "attempts": task.attempts}
    if task.tile is not None:  # a production task (the end game queries ``speculated``)
        doc.update(tile=list(task.tile), pass_index=task.pass_index, seed=task.seed,
                   passes=task.passes, speculated=task.speculated)
    for name in ("owner", "started", "finished", "error", "fetch_s", "work_s", "cpu_s",
                 "queue", "tag", "rank", "log"):
        if getattr(task, name) is not None:
            doc[name] = getattr(task, name)
    return doc


def task_from_doc(tid: str, doc: Fields) -> Task:
    values = {k: doc[k] for k in _TASK_FIELDS if doc.get(k) is not None}
    values["parent"] = doc.get("parent")
    values["kind"] = Kind(values["kind"])
    values["status"] = Status(values.get("status", "pending"))
    tile = doc.get("tile")
    return Task(id=tid, tile=tuple(tile) if tile else None, **values)


def task_fields(fields: Fields) -> Fields:
    """Field updates of a task, with enums as their strings."""
    return {k: (str(v) if isinstance(v, Status) else v) for k, v in fields.items()}


_EXECUTION_FIELDS = {f for f in Execution.__dataclass_fields__}


def execution_from_doc(doc: Fields) -> Execution:
    values = {k: v for k, v in doc.items() if k in _EXECUTION_FIELDS}
    values["session_id"] = doc["session_id"]
    values["status"] = Status(doc.get("status", "queued"))
    return Execution(**values)


#: Fields a new execution's document leaves out while they are unset.
_EXECUTION_LATER = ("summary", "result", "notify_url", "cpu_estimate", "task_seconds",
                    "frames", "frame_window", "on_frame_failure", "notify_frames", "parent",
                    "frame", "endgame", "share_start", "share_credit", "seed", "seeds",
                    "until", "max_cost_usd", "max_cpu_seconds", "usd_per_cpu_second",
                    "wave", "first_pass", "target_passes", "waves", "passes_done", "noise",
                    "stopped", "spent_cpu_s", "own_cpu_s", "own_summary", "waves_before", "imaged",
                    "tile_pass_cpu_s")


def execution_to_doc(execution: Execution) -> Fields:
    doc = {f: getattr(execution, f) for f in _EXECUTION_FIELDS
           if not (f in _EXECUTION_LATER and getattr(execution, f) is None)}
    doc["status"] = str(execution.status)
    return doc


_SESSION_FIELDS = {f for f in Session.__dataclass_fields__} - {"id"}


def session_from_doc(sid: str, doc: Fields) -> Session:
    return Session(id=sid, **{k: v for k, v in doc.items() if k in _SESSION_FIELDS})


def session_to_doc(session: Session) -> Fields:
    """Unset times and a session not being deleted leave their fields out."""
    return {f: v for f in _SESSION_FIELDS
            if (v := getattr(session, f)) is not None and v is not False}


def recovery_counts(again: list[Fields], replaced: int, speculative: int,
                    redriven: int) -> RecoveryCounts:
    """``again``: the tasks taken more than once. Every take of a task after its first
    is a retry, unless it was a replacement or a speculative copy."""
    retries = sum(max(0, d["attempts"] - 1 - (d.get("generation") or 0)
                      - bool(d.get("speculated"))) for d in again)
    return {"retries": retries, "replaced": replaced, "speculative": speculative,
            "redriven": redriven}



# --- object names ------------------------------------------------------------------------

def resource_name(sha256: str) -> str:
    return f"resources/{sha256}"


def partial_name(session_id: str, execution_id: str, node: str) -> str:
    return f"partials/{session_id}/{execution_id}/{node}.npz"


def result_name(session_id: str, execution_id: str, extension: str) -> str:
    return f"results/{session_id}/{execution_id}.{extension}"
