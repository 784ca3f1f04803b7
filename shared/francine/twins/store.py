"""The store twin: executions and one record per task, in dictionaries.

Semantics kept from Firestore (and checked by the conformance suite): ``create`` of an
existing execution returns it unchanged, task creation never overwrites, a claim is a
conditional write (exactly one of concurrent claimants wins, a finished task is never
taken again, a lease protects a running task), ``finish_execution`` is first-wins, and
counts are aggregations over the task records. Documents are copied in and out, so a
caller cannot change stored state by mutating what it got. Users, sessions and
resources are kept as Firestore keeps them too: a create of an existing user is a
Conflict, a session's deletion takes everything below it (its tasks leave the farm's
queue), a listing ordered by a field leaves out the documents without it.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any, cast

from francine.base import errors
from francine.domain.records import (
    FINAL,
    TASK_FINAL,
    Claim,
    Execution,
    Kind,
    Session,
    Status,
    Task,
)
from francine.ports.layout import (
    execution_from_doc,
    execution_to_doc,
    recovery_counts,
    session_from_doc,
    session_to_doc,
    task_fields,
    task_from_doc,
    task_to_doc,
)
from francine.ports.protocols import ExecutionUsage, Fields, RecoveryCounts, TaskStats, TimeSums
from francine.twins.meter import Meter


def _copy(value):
    """A deep copy of a document: what Firestore stores is maps, arrays and immutable
    scalars, so this is all ``copy.deepcopy`` would do, at a fraction of its cost (the
    simulator copies documents in and out on every operation)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class StoreTwin:
    """The store port (``francine.ports.protocols.Store``) in memory."""

    def __init__(self, meter: Meter | None = None):
        self.meter = meter or Meter()
        #: key hash → user document; user id → webhook secret
        self.users: dict[str, dict] = {}
        self.webhook_secrets: dict[str, str] = {}
        self.sessions: dict[str, dict] = {}
        self.resources: dict[str, list[dict]] = {}
        self.executions: dict[tuple[str, str], dict] = {}
        self.tasks: dict[tuple[str, str], dict[str, dict]] = {}
        #: (sid, eid, parent) → the task records under it (the same dicts): what an
        #: index on ``parent`` gives Firestore's aggregation, without a scan of them all
        self._children: dict[tuple[str, str, str | None], list[dict]] = {}
        #: (sid, eid, status, kind) → {task id: record}, in the order the records took
        #: that status: claims set ``started`` to the clock's now, so the running ones
        #: are in start order (what an index on (status, started) gives Firestore)
        self._by_status: dict[tuple, dict[str, dict]] = {}
        #: (sid, eid, kind) → [done tasks, sum of their work_s]: an aggregation's answer
        self._done_work: dict[tuple, list] = {}
        self._lock = threading.Lock()
        #: the farm's queue, as its collection-group indexes give it: ("<farm>:waiting",
        #: "rank" or "tag") → sorted (rank or tag, sid, eid, tid), "<farm>:out" →
        #: {(sid, eid, tid)}
        self._waiting: dict[tuple[str, str], list[tuple]] = {}
        self._out: dict[str, set[tuple]] = {}
        #: fair-share accounts: farm → user → account
        self.accounts: dict[str, dict[str, dict]] = {}

    def _track(self, sid: str, eid: str, tid: str, doc: dict, before: tuple | None) -> None:
        """Keep the indexes current after ``doc`` changed from ``before`` (its status
        and work_s), under the lock."""
        kind = doc.get("kind")
        done = self._done_work.setdefault((sid, eid, kind), [0, 0.0])
        if before is not None:
            self._by_status.get((sid, eid, before[0], kind), {}).pop(tid, None)
            if before[0] == "done":
                done[0] -= 1
                done[1] -= before[1] or 0.0
        self._by_status.setdefault((sid, eid, doc.get("status"), kind), {})[tid] = doc
        if doc.get("status") == "done":
            done[0] += 1
            done[1] += doc.get("work_s") or 0.0

    def _path(self, sid: str, eid: str, tid: str | None = None) -> str:
        return f"sessions/{sid}/executions/{eid}" + (f"/tasks/{tid}" if tid else "")

    # users and their accounts
    def create_user(self, key_hash: str, doc: Fields) -> None:
        self.meter.op("write", f"users/{key_hash}")
        with self._lock:
            if key_hash in self.users:
                raise errors.Conflict("user creation: it exists")
            self.users[key_hash] = {**_copy(doc), "created": self.meter.clock()}

    def get_user(self, key_hash: str) -> Fields | None:
        self.meter.op("read")
        doc = self.users.get(key_hash)
        return None if doc is None else _copy(doc)

    def list_users(self) -> list[Fields]:
        self.meter.op("query")
        with self._lock:
            return [_copy(d) for _, d in sorted(self.users.items())]

    def users_by(self, field: str, value: str,
                 limit: int | None = None) -> list[tuple[str, Fields]]:
        self.meter.op("query")
        with self._lock:
            found = [(k, _copy(d)) for k, d in sorted(self.users.items())
                     if d.get(field) == value]
        return found if limit is None else found[:limit]

    def update_user(self, key_hash: str, fields: Fields) -> None:
        self.meter.op("write", f"users/{key_hash}")
        with self._lock:
            doc = self.users.get(key_hash)
            if doc is None:
                raise errors.NotFound("user update: not found")
            doc.update(_copy(fields))

    def delete_user(self, key_hash: str) -> None:
        self.meter.op("write", f"users/{key_hash}")
        with self._lock:
            self.users.pop(key_hash, None)

    def webhook_secret(self, user: str) -> str:
        self.meter.op("read")
        with self._lock:  # first writer wins
            return self.webhook_secrets.setdefault(user, "whsec_" + secrets.token_urlsafe(32))

    def _usage(self, user: str, match: Callable[[dict], bool],
               fields: tuple[str, ...]) -> list[ExecutionUsage]:
        """The projection on ``fields`` of the user's executions that ``match``."""
        self.meter.op("query")
        with self._lock:
            docs = [d for d in self.executions.values() if d.get("user") == user and match(d)]
            return [cast(ExecutionUsage, {f: _copy(d[f]) for f in fields if f in d})
                    for d in docs]

    def executions_in_flight(self, user: str) -> list[ExecutionUsage]:
        return self._usage(user, lambda d: d.get("status") == str(Status.QUEUED),
                           ("shape", "cpu_estimate", "frame_window", "parent"))

    def executions_finished_since(self, user: str,
                                  since: dt.datetime) -> list[ExecutionUsage]:
        return self._usage(user, lambda d: d.get("finished") is not None
                           and d["finished"] >= since,
                           ("finished", "summary", "cpu_estimate", "parent"))

    # sessions and resources
    def create_session(self, session: Session) -> None:
        sid = session.id
        self.meter.op("write", f"sessions/{sid}")
        with self._lock:
            if sid in self.sessions:
                raise errors.Conflict(f"session creation: {sid} exists")
            self.sessions[sid] = _copy(session_to_doc(session))

    def get_session(self, sid: str) -> Session | None:
        self.meter.op("read")
        doc = self.sessions.get(sid)
        return None if doc is None else session_from_doc(sid, _copy(doc))

    def list_sessions(self, user: str) -> list[Session]:
        self.meter.op("query")
        with self._lock:
            mine = [(sid, _copy(d)) for sid, d in self.sessions.items()
                    if d.get("user") == user and d.get("created") is not None]
        return [session_from_doc(sid, d) for sid, d in sorted(mine, key=lambda i: i[1]["created"])]

    def mark_session_deleting(self, sid: str) -> None:
        self.meter.op("write", f"sessions/{sid}")
        with self._lock:
            if sid not in self.sessions:
                raise errors.NotFound("session deletion: not found")
            self.sessions[sid]["deleting"] = True

    def delete_session(self, sid: str) -> None:
        """The session with everything below it; its tasks leave every index (the
        farm's queue included), as a recursive delete takes them out of Firestore's."""
        self.meter.op("batch", f"sessions/{sid}")
        with self._lock:
            self.sessions.pop(sid, None)
            self.resources.pop(sid, None)
            for key in [k for k in self.executions if k[0] == sid]:
                del self.executions[key]
            for key in [k for k in self.tasks if k[0] == sid]:
                for tid, doc in self.tasks.pop(key).items():
                    before, doc["queue"] = doc.get("queue"), None
                    self._queue_moved((*key, tid), doc, before)
            indexes: tuple[dict[Any, Any], ...] = (
                self._children, self._by_status, self._done_work)
            for index in indexes:
                for gone in [k for k in index if k[0] == sid]:
                    del index[gone]

    def attach_resource(self, sid: str, record: Fields) -> bool:
        self.meter.op("write", f"sessions/{sid}/resources/{record['name']}")
        with self._lock:
            held = self.resources.setdefault(sid, [])
            existing = next((d for d in held if d["name"] == record["name"]), None)
            if existing is None:
                held.append({**_copy(record), "created": self.meter.clock()})
                return True
        if existing["sha256"] != record["sha256"]:
            raise errors.Conflict(
                f"resource {record['name']!r} exists with other content "
                f"(sha256 {existing['sha256']}); resources are immutable", "resource_immutable")
        return False

    def list_resources(self, sid: str) -> list[Fields]:
        self.meter.op("query")
        return sorted(_copy(self.resources.get(sid, [])), key=lambda d: d["name"])

    def referenced_resources(self) -> set[str]:
        self.meter.op("query")
        with self._lock:
            return {d["sha256"] for held in self.resources.values() for d in held}

    # executions
    def create_execution(self, sid: str, eid: str,
                         build: Callable[[Session], tuple[Fields, Execution]]
                         ) -> tuple[Execution, bool]:
        self.meter.op("transaction", self._path(sid, eid))
        with self._lock:
            existing = self.executions.get((sid, eid))
            if existing is not None:
                return execution_from_doc(_copy(existing)), False
            session = self.sessions.get(sid)
            if session is None:
                raise errors.NotFound("session not found")
        session_update, ex = build(session_from_doc(sid, _copy(session)))
        with self._lock:
            if (sid, eid) in self.executions:  # lost the race: the transaction retries
                return execution_from_doc(_copy(self.executions[(sid, eid)])), False
            session.update(_copy(session_update))
            self.executions[(sid, eid)] = _copy(execution_to_doc(ex))
            self.tasks.setdefault((sid, eid), {})
        return ex, True

    def add_frame(self, sid: str, frame: Execution) -> tuple[Execution, bool]:
        self.meter.op("write", self._path(sid, frame.id))
        with self._lock:
            existing = self.executions.get((sid, frame.id))
            if existing is not None:
                return execution_from_doc(_copy(existing)), False
            self.executions[(sid, frame.id)] = _copy(execution_to_doc(frame))
            self.tasks.setdefault((sid, frame.id), {})
        return frame, True

    def execution(self, sid: str, eid: str) -> Execution | None:
        self.meter.op("read")
        doc = self.executions.get((sid, eid))
        return None if doc is None else execution_from_doc(_copy(doc))

    def list_executions(self, sid: str) -> list[Execution]:
        self.meter.op("query")
        with self._lock:
            mine = [_copy(d) for (s, _e), d in self.executions.items() if s == sid]
        return [execution_from_doc(d) for d in sorted(mine, key=lambda d: d["created"])]

    def frames_of(self, sid: str, eid: str) -> list[Execution]:
        self.meter.op("query")
        with self._lock:
            mine = [_copy(d) for (s, _e), d in self.executions.items()
                    if s == sid and d.get("parent") == eid]
        return sorted((execution_from_doc(d) for d in mine), key=lambda ex: ex.frame or 0)

    def update_execution(self, sid: str, eid: str, fields: Fields) -> None:
        self.meter.op("write", self._path(sid, eid))
        with self._lock:
            doc = self.executions.get((sid, eid))
            if doc is None:
                raise errors.NotFound("execution update: not found")
            doc.update(_copy(fields))

    def finish_execution(self, sid: str, eid: str, fields: Fields) -> bool:
        self.meter.op("transaction")
        with self._lock:
            doc = self.executions.get((sid, eid))
            if doc is None or doc.get("status") in FINAL:
                return False
            doc.update(_copy(task_fields(fields)))
        self.meter.op("write", self._path(sid, eid))
        return True

    def reopen_execution(self, sid: str, eid: str, fields: Fields) -> bool:
        self.meter.op("transaction")
        with self._lock:
            doc = self.executions.get((sid, eid))
            if doc is None or doc.get("status") != Status.DONE:
                return False
            doc.update(_copy(task_fields(fields)))
            doc["status"] = str(Status.QUEUED)
        self.meter.op("write", self._path(sid, eid))
        return True

    # tasks
    def write_tasks(self, sid: str, eid: str, tasks: Iterable[Task]) -> None:
        docs = [(t.id, task_to_doc(t)) for t in tasks]
        for start in range(0, len(docs), 500):  # one batch per 500, as Firestore
            self.meter.op("batch")
            with self._lock:
                col = self.tasks.setdefault((sid, eid), {})
                for tid, doc in docs[start: start + 500]:
                    if tid not in col:
                        col[tid] = doc
                        self._queue_moved((sid, eid, tid), doc, None)
                        self._track(sid, eid, tid, doc, None)
                        self._children.setdefault((sid, eid, doc["parent"]), []).append(doc)
                        if self.meter.record_writes:
                            self.meter.writes[self._path(sid, eid, tid)].append(
                                self.meter.clock().timestamp())

    def get_task(self, sid: str, eid: str, tid: str) -> Task | None:
        self.meter.op("read")
        doc = self.tasks.get((sid, eid), {}).get(tid)
        return None if doc is None else task_from_doc(tid, _copy(doc))

    def update_task(self, sid: str, eid: str, tid: str, fields: Fields) -> None:
        self.meter.op("write", self._path(sid, eid, tid))
        with self._lock:
            doc = self.tasks.get((sid, eid), {}).get(tid)
            if doc is None:
                raise errors.NotFound(f"task update: {tid} not found")
            queued = doc.get("queue")
            before = (doc.get("status"), doc.get("work_s"))
            doc.update(_copy(task_fields(fields)))
            self._queue_moved((sid, eid, tid), doc, queued)
            if (doc.get("status"), doc.get("work_s")) != before:
                self._track(sid, eid, tid, doc, before)

    def claim_task(self, sid: str, eid: str, tid: str, owner: str, lease_s: float,
                   kind: str | None = None) -> tuple[Claim, Task | None]:
        """As the adapter's transaction: the execution and the task read, and the task
        written, under the lock; a task of an ended (or gone) execution is never taken
        (a Conflict)."""
        self.meter.op("read")
        with self._lock:  # the reads and the conditional write, as one
            doc = self.tasks.get((sid, eid), {}).get(tid)
            if doc is None:
                raise errors.NotFound(f"task {tid} not found")
            ex = self.executions.get((sid, eid))
            if ex is None or ex.get("status") in FINAL:
                raise errors.Conflict(f"task {tid}: its execution has ended",
                                      "execution_ended")
            task = task_from_doc(tid, _copy(doc))
            if kind is not None and task.kind != Kind(kind):
                return Claim.OTHER, None
            if task.status in TASK_FINAL:
                return Claim.DONE, task
            t = self.meter.clock()
            if task.status == Status.RUNNING and task.owner != owner and task.started \
                    and (t - task.started).total_seconds() < lease_s:
                return Claim.HELD, None
            before = (doc.get("status"), doc.get("work_s"))
            doc.update(status="running", owner=owner, started=t, attempts=task.attempts + 1)
            self._track(sid, eid, tid, doc, before)  # a claim taken again moves to the end
        self.meter.op("write", self._path(sid, eid, tid))
        task.status, task.owner, task.started = Status.RUNNING, owner, t
        task.attempts += 1
        return Claim.WON, task

    def replace_task(self, sid: str, eid: str, tid: str, generation: int, error: str) -> bool:
        self.meter.op("read")
        with self._lock:  # compare-and-set on the generation
            doc = self.tasks.get((sid, eid), {}).get(tid)
            if doc is None or (doc.get("generation") or 0) != generation - 1 \
                    or doc.get("status") in TASK_FINAL:
                return False
            before = (doc.get("status"), doc.get("work_s"))
            doc.update(status="pending", owner=None, started=None, error=error,
                       failures=(doc.get("failures") or 0) + 1, generation=generation)
            self._track(sid, eid, tid, doc, before)
        self.meter.op("write", self._path(sid, eid, tid))
        return True

    def count_done_children(self, sid: str, eid: str, parent: str) -> int:
        self.meter.op("aggregate")
        return sum(1 for d in self._children.get((sid, eid, parent), ())
                   if d.get("status") == "done")

    def done_nodes(self, sid: str, eid: str) -> list[str]:
        self.meter.op("query")
        with self._lock:
            return [d["node"] for k in ("produce", "reduce")
                    for d in self._by_status.get((sid, eid, "done", k), {}).values()]

    def count_tasks(self, sid: str, eid: str, status: str, kind: str | None = None) -> int:
        self.meter.op("aggregate")
        kinds = [kind] if kind is not None else ["produce", "reduce"]
        return sum(len(self._by_status.get((sid, eid, status, k), ())) for k in kinds)

    def longest_running(self, sid: str, eid: str, limit: int,
                        newest: bool = False) -> list[Task]:
        self.meter.op("query")
        with self._lock:  # production tasks without a copy, in the order they started
            tasks = self._by_status.get((sid, eid, "running", "produce"), {}).items()
            running = list(itertools.islice(
                (i for i in (reversed(tasks) if newest else tasks)
                 if not i[1].get("speculated")), limit))
        running.sort(key=lambda i: i[1]["started"], reverse=newest)
        return [task_from_doc(tid, _copy(d)) for tid, d in running]

    def mean_work(self, sid: str, eid: str, kind: str = "produce") -> float | None:
        self.meter.op("aggregate")
        n, work = self._done_work.get((sid, eid, kind), (0, 0.0))
        return work / n if n else None

    def mark_speculated(self, sid: str, eid: str, tid: str) -> bool:
        self.meter.op("read")
        with self._lock:
            doc = self.tasks.get((sid, eid), {}).get(tid)
            if doc is None or doc.get("speculated"):
                return False
            doc["speculated"] = True
        self.meter.op("write", self._path(sid, eid, tid))
        return True

    def tasks_in(self, sid: str, eid: str, statuses: tuple[str, ...]) -> list[Task]:
        self.meter.op("query")
        return [task_from_doc(tid, _copy(d))
                for tid, d in list(self.tasks.get((sid, eid), {}).items())
                if d.get("status") in statuses]

    def task_page(self, sid: str, eid: str, after: str | None, limit: int) -> list[Task]:
        self.meter.op("query")
        docs = sorted((d["node"], tid, d) for tid, d in list(self.tasks.get((sid, eid), {}).items())
                      if after is None or d["node"] > after)
        return [task_from_doc(tid, _copy(d)) for _, tid, d in docs[:limit]]

    def failed_tasks(self, sid: str, eid: str) -> list[Task]:
        self.meter.op("query")
        tasks = [task_from_doc(tid, _copy(d))
                 for tid, d in list(self.tasks.get((sid, eid), {}).items())
                 if (d.get("failures") or 0) > 0]
        return sorted(tasks, key=lambda t: t.node)

    def recovery_stats(self, sid: str, eid: str) -> RecoveryCounts:
        self.meter.op("aggregate")
        docs = list(self.tasks.get((sid, eid), {}).values())
        return recovery_counts([d for d in docs if (d.get("attempts") or 0) > 1],
                               sum(d.get("generation") or 0 for d in docs),
                               sum(bool(d.get("speculated")) for d in docs),
                               sum(d.get("redrives") or 0 for d in docs))

    def last_progress(self, sid: str, eid: str) -> dt.datetime | None:
        self.meter.op("query")
        docs = list(self.tasks.get((sid, eid), {}).values())
        times = [d[k] for d in docs for k in ("started", "finished") if d.get(k) is not None]
        return max(times) if times else None

    def active_executions(self) -> list[Execution]:
        self.meter.op("query")
        return [execution_from_doc(_copy(d)) for d in list(self.executions.values())
                if d.get("status") == "queued"]

    def task_stats(self, sid: str, eid: str) -> TaskStats:
        self.meter.op("aggregate")
        docs = list(self.tasks.get((sid, eid), {}).values())

        def count(status: str) -> int:
            return sum(d.get("status") == status for d in docs)

        def sums(kind: str) -> TimeSums:
            done = [d for d in docs if d.get("kind") == kind and d.get("status") == "done"]
            return TimeSums(fetch=float(sum(d.get("fetch_s") or 0 for d in done)),
                            work=float(sum(d.get("work_s") or 0 for d in done)),
                            cpu=float(sum(d.get("cpu_s") or 0 for d in done)),
                            n=float(len(done)))

        produce, reduce = sums("produce"), sums("reduce")
        started = [d["started"] for d in docs if d.get("started") is not None]
        finished = [d["finished"] for d in docs
                    if d.get("kind") == "produce" and d.get("finished") is not None]
        return TaskStats(failed=count("failed"), running=count("running"), produce=produce,
                         reduce=reduce, done=int(produce["n"] + reduce["n"]),
                         first_started=min(started) if started else None,
                         last_produced=max(finished) if finished else None)

    # the farm's queue
    def _queue_moved(self, key: tuple, doc: dict, before: str | None) -> None:
        """Keep the queue's indexes in step with a task's ``queue`` field (under the
        lock). A waiting task's tag does not change while it waits."""
        after = doc.get("queue")
        if before == after:
            return
        for state, add in ((before, False), (after, True)):
            if state is None:
                continue
            if state.endswith(":waiting"):
                for order in ("rank", "tag"):
                    entries = self._waiting.setdefault((state, order), [])
                    entry = (doc.get(order) or 0.0, *key)
                    if add:
                        bisect.insort(entries, entry)
                    else:
                        i = bisect.bisect_left(entries, entry)
                        if i < len(entries) and entries[i] == entry:
                            del entries[i]
            elif add:
                self._out.setdefault(state, set()).add(key)
            else:
                self._out.get(state, set()).discard(key)

    def _swap(self, sid: str, eid: str, tid: str, check, fields: dict) -> dict | None:
        self.meter.op("read")
        with self._lock:
            doc = self.tasks.get((sid, eid), {}).get(tid)
            if doc is None or not check(doc):
                return None
            before = _copy(doc)
            doc.update(fields)
            self._queue_moved((sid, eid, tid), doc, before.get("queue"))
        self.meter.op("write", self._path(sid, eid, tid))
        return before

    def waiting_tasks(self, farm: str, limit: int,
                      order: str = "rank") -> list[tuple[str, str, Task]]:
        if order not in ("rank", "tag"):
            raise ValueError(f"order: {order!r}")
        self.meter.op("query")
        with self._lock:
            entries = self._waiting.get((f"{farm}:waiting", order), [])[:limit]
            return [(sid, eid, task_from_doc(tid, _copy(self.tasks[(sid, eid)][tid])))
                    for _, sid, eid, tid in entries]

    def count_out(self, farm: str) -> int:
        self.meter.op("aggregate")
        return len(self._out.get(f"{farm}:out", ()))

    def held_slots(self, farm: str) -> list[int]:
        self.meter.op("query")
        with self._lock:
            return sorted(int(self.tasks[(sid, eid)][tid].get("slot") or 0)
                          for sid, eid, tid in self._out.get(f"{farm}:out", ()))

    def take_waiting(self, sid: str, eid: str, tid: str, farm: str, slot: int) -> bool:
        return self._swap(sid, eid, tid, lambda d: d.get("queue") == f"{farm}:waiting",
                          {"queue": f"{farm}:out", "slot": slot}) is not None

    def take_waiting_many(self, farm: str, takes: list[tuple[str, str, str, int]]) -> int:
        self.meter.op("transaction")
        taken = 0
        with self._lock:
            for sid, eid, tid, slot in takes:
                doc = self.tasks.get((sid, eid), {}).get(tid)
                if doc is None or doc.get("queue") != f"{farm}:waiting":
                    break
                before = _copy(doc)
                doc.update({"queue": f"{farm}:out", "slot": slot})
                self._queue_moved((sid, eid, tid), doc, before.get("queue"))
                self.meter.writes[self._path(sid, eid, tid)].append(
                    self.meter.clock().timestamp())
                taken += 1
        return taken

    def release_task(self, sid: str, eid: str, tid: str, farm: str) -> int | None:
        before = self._swap(sid, eid, tid, lambda d: d.get("queue") == f"{farm}:out",
                            {"queue": None})
        return None if before is None else int(before.get("slot") or 0)

    def requeue_task(self, sid: str, eid: str, tid: str, farm: str) -> bool:
        return self._swap(
            sid, eid, tid, lambda d: d.get("status") == "pending" and d.get("tag") is not None
            and d.get("queue") != f"{farm}:waiting",
            {"queue": f"{farm}:waiting", "slot": None}) is not None

    def queue_copies(self, sid: str, eid: str, task: Task, farm: str,
                     entries: list[tuple[str, float, float]]) -> None:
        """Entries beside the tasks, with no status: no task count sees them."""
        self.meter.op("batch")
        with self._lock:
            col = self.tasks.setdefault((sid, eid), {})
            for entry, tag, rank in entries:
                if entry not in col:
                    col[entry] = {"node": task.node, "kind": str(task.kind),
                                  "copy_of": task.id, "queue": f"{farm}:waiting",
                                  "tag": tag, "rank": rank}
                    self._queue_moved((sid, eid, entry), col[entry], None)

    def release_copies(self, sid: str, eid: str, tid: str, farm: str) -> list[int]:
        self.meter.op("query")
        with self._lock:
            copies = [e for e, d in self.tasks.get((sid, eid), {}).items()
                      if d.get("copy_of") == tid]
        states = (f"{farm}:waiting", f"{farm}:out")
        freed = [self._swap(sid, eid, e, lambda d: d.get("queue") in states, {"queue": None})
                 for e in copies]
        return [int(d.get("slot") or 0) for d in freed
                if d is not None and d.get("queue") == states[1]]

    def release_execution(self, sid: str, eid: str, farm: str) -> int:
        self.meter.op("query")
        states = (f"{farm}:waiting", f"{farm}:out")
        held = 0
        with self._lock:
            for tid, doc in self.tasks.get((sid, eid), {}).items():
                before = doc.get("queue")
                if before in states:
                    held += before == states[1]
                    doc["queue"] = None
                    self._queue_moved((sid, eid, tid), doc, before)
        self.meter.op("batch")
        return held

    def reserve_share(self, farm: str, user: str,
                      update: Callable[[Fields | None], Fields]) -> Fields:
        self.meter.op("transaction", f"farms/{farm}/users/{user}")
        with self._lock:
            users = self.accounts.setdefault(farm, {})
            account = {**update(_copy(users.get(user))), "user": user}
            users[user] = account
            return _copy(account)

    def latest_finish(self, farm: str) -> float | None:
        self.meter.op("query")
        finishes = [a["finish"] for a in self.accounts.get(farm, {}).values()]
        return max(finishes) if finishes else None
