"""Firestore: users, sessions, resources, executions and one document per task.

Layout (no document is written by more than one task, so none is a hot spot):

    users/{sha256 of api key}
    sessions/{sid}                              user, producer, format, scene
    sessions/{sid}/resources/{sha256 of name}   name, sha256, size
    sessions/{sid}/executions/{eid}             plan, scene snapshot, final status
    sessions/{sid}/executions/{eid}/tasks/{tid} one per production or reduction task

Progress and time sums come from aggregation queries over the tasks; the execution
document is written at creation, twice while its tasks are published, and once at the
end: never by a task.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from francine.adapters import translated
from francine.base import errors
from francine.base.clock import now
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
from francine.ports.protocols import ExecutionUsage, Fields, RecoveryCounts, TaskStats

BATCH = 500  # Firestore's limit of writes per batch
#: Tries of a claim's transaction under contention (many deliveries of one task at
#: once) before it counts as held by another.
CLAIM_ATTEMPTS = 10


class Store:
    """The store port (``francine.ports.protocols.Store``) over Firestore."""

    def __init__(self, db):
        self._db = db

    # --- references --------------------------------------------------------------------
    def _session(self, sid: str):
        return self._db.collection("sessions").document(sid)

    def _execution(self, sid: str, eid: str):
        return self._session(sid).collection("executions").document(eid)

    def _tasks(self, sid: str, eid: str):
        return self._execution(sid, eid).collection("tasks")

    # --- users and their accounts --------------------------------------------------------
    def _users(self):
        return self._db.collection("users")

    def create_user(self, key_hash: str, doc: Fields) -> None:
        with translated("user creation"):
            self._users().document(key_hash).create({**doc, "created": now()})

    def get_user(self, key_hash: str) -> Fields | None:
        with translated("user lookup"):
            snap = self._users().document(key_hash).get()
        return snap.to_dict() if snap.exists else None

    def list_users(self) -> list[Fields]:
        with translated("user listing"):
            return [s.to_dict() for s in self._users().stream()]

    def users_by(self, field: str, value: str,
                 limit: int | None = None) -> list[tuple[str, Fields]]:
        """(key hash, document) of the keys whose ``field`` (the user's id or name) is
        ``value``: a user has one document per key."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._users().where(filter=FieldFilter(field, "==", value))
        if limit is not None:
            query = query.limit(limit)
        with translated("user lookup"):
            return [(s.id, s.to_dict()) for s in query.stream()]

    def update_user(self, key_hash: str, fields: Fields) -> None:
        with translated("user update"):
            self._users().document(key_hash).update(fields)

    def delete_user(self, key_hash: str) -> None:
        with translated("user deletion"):
            self._users().document(key_hash).delete()

    def executions_in_flight(self, user: str) -> list[ExecutionUsage]:
        """Shape and CPU estimate of the user's executions not final yet (their stored
        status stays ``queued`` until the end). Collection-group queries over every
        session's executions, so that the counts stay right whatever process ended an
        execution (each has its composite index, ``infra``'s firestore.py)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._db.collection_group("executions").where(
            filter=FieldFilter("user", "==", user)).where(
            filter=FieldFilter("status", "==", str(Status.QUEUED)))
        return self._usage(query.select(["shape", "cpu_estimate", "frame_window", "parent"]))

    def executions_finished_since(self, user: str,
                                  since: dt.datetime) -> list[ExecutionUsage]:
        """End, summary and CPU estimate of the user's executions that ended since
        ``since``."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._db.collection_group("executions").where(
            filter=FieldFilter("user", "==", user)).where(
            filter=FieldFilter("finished", ">=", since))
        return self._usage(query.select(["finished", "summary", "cpu_estimate", "parent"]))

    @staticmethod
    def _usage(query) -> list[ExecutionUsage]:
        with translated("quota lookup"):
            return [s.to_dict() for s in query.stream()]

    # --- sessions ------------------------------------------------------------------------
    def create_session(self, session: Session) -> None:
        with translated("session creation"):
            self._session(session.id).create(session_to_doc(session))

    def get_session(self, sid: str) -> Session | None:
        with translated("session lookup"):
            snap = self._session(sid).get()
        return session_from_doc(sid, snap.to_dict()) if snap.exists else None

    def list_sessions(self, user: str) -> list[Session]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        with translated("session listing"):
            query = self._db.collection("sessions").where(
                filter=FieldFilter("user", "==", user)).order_by("created")
            return [session_from_doc(s.id, s.to_dict()) for s in query.stream()]

    def mark_session_deleting(self, sid: str) -> None:
        with translated("session deletion"):
            self._session(sid).update({"deleting": True})

    def delete_session(self, sid: str) -> None:
        """Delete the session with everything below it (executions, tasks, resources)."""
        with translated("session deletion"):
            self._db.recursive_delete(self._session(sid))

    # --- resources -----------------------------------------------------------------------
    def attach_resource(self, sid: str, record: Fields) -> bool:
        """Record a resource; True if new, False if the same bytes were already there.
        Another content under the same name is a Conflict: resources are immutable."""
        from google.api_core import exceptions as gexc

        ref = self._session(sid).collection("resources").document(
            hashlib.sha256(record["name"].encode()).hexdigest())
        with translated("resource record"):
            try:
                ref.create({**record, "created": now()})
                return True
            except gexc.AlreadyExists:
                existing = ref.get().to_dict()
        if existing["sha256"] != record["sha256"]:
            raise errors.Conflict(
                f"resource {record['name']!r} exists with other content "
                f"(sha256 {existing['sha256']}); resources are immutable", "resource_immutable")
        return False

    def count_resources(self, sid: str) -> int:
        with translated("resource count"):
            col = self._session(sid).collection("resources")
            return int(col.count(alias="n").get()[0][0].value)

    def list_resources(self, sid: str) -> list[Fields]:
        with translated("resource listing"):
            docs = [s.to_dict() for s in self._session(sid).collection("resources").stream()]
        return sorted(docs, key=lambda d: d["name"])

    def referenced_resources(self) -> set[str]:
        """The sha256 of every session's resource records (a collection-group query):
        an object that none names is garbage (``francine.services.retention``)."""
        query = self._db.collection_group("resources").select(["sha256"])
        with translated("resource references"):
            return {s.to_dict().get("sha256") for s in query.stream()}

    # --- executions ----------------------------------------------------------------------
    def create_execution(self, sid: str, eid: str,
                         build: Callable[[Session], tuple[Fields, Execution]]
                         ) -> tuple[Execution, bool]:
        """Create execution ``eid`` in one transaction with the session's scene update.

        ``build(session)`` returns (fields to update on the session, execution).
        Returns (execution, created); an existing ``eid`` (a retried request with the
        same idempotency key) is returned unchanged with created = False.
        """
        from google.cloud import firestore

        session_ref, exec_ref = self._session(sid), self._execution(sid, eid)

        @firestore.transactional
        def run(tx):
            existing = exec_ref.get(transaction=tx)
            if existing.exists:
                return execution_from_doc(existing.to_dict()), False
            session = session_ref.get(transaction=tx)
            if not session.exists:
                raise errors.NotFound("session not found")
            session_update, ex = build(session_from_doc(sid, session.to_dict()))
            if session_update:
                tx.update(session_ref, session_update)
            tx.create(exec_ref, execution_to_doc(ex))
            return ex, True

        with translated("execution creation"):
            return run(self._db.transaction())

    def add_frame(self, sid: str, frame: Execution) -> tuple[Execution, bool]:
        """Create the execution of an animation's frame unless it exists (a plain
        create, first wins: no transaction, no read of the session). Returns
        (execution, created)."""
        from google.api_core import exceptions as gexc

        ref = self._execution(sid, frame.id)
        with translated("frame creation"):
            try:
                ref.create(execution_to_doc(frame))
                return frame, True
            except gexc.Conflict:  # AlreadyExists
                snap = ref.get()
        return execution_from_doc(snap.to_dict()), False

    def execution(self, sid: str, eid: str) -> Execution | None:
        with translated("execution lookup"):
            snap = self._execution(sid, eid).get()
        return execution_from_doc(snap.to_dict()) if snap.exists else None

    def list_executions(self, sid: str) -> list[Execution]:
        with translated("execution listing"):
            query = self._session(sid).collection("executions").order_by("created")
            return [execution_from_doc(s.to_dict()) for s in query.stream()]

    def frames_of(self, sid: str, eid: str) -> list[Execution]:
        """The executions of an animation's frames that exist (started), by frame."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        with translated("frame listing"):
            query = self._session(sid).collection("executions").where(
                filter=FieldFilter("parent", "==", eid))
            found = [execution_from_doc(s.to_dict()) for s in query.stream()]
        return sorted(found, key=lambda ex: ex.frame or 0)

    def update_execution(self, sid: str, eid: str, fields: Fields) -> None:
        with translated("execution update"):
            self._execution(sid, eid).update(fields)

    def finish_execution(self, sid: str, eid: str, fields: Fields) -> bool:
        """Move an execution to a final state unless it is in one already (first wins)."""
        from google.cloud import firestore

        ref = self._execution(sid, eid)

        @firestore.transactional
        def run(tx):
            snap = ref.get(transaction=tx)
            if not snap.exists or snap.get("status") in FINAL:
                return False
            tx.update(ref, task_fields(fields))
            return True

        with translated("execution completion"):
            return run(self._db.transaction())

    def reopen_execution(self, sid: str, eid: str, fields: Fields) -> bool:
        """Move a done execution back to in flight (``queued``, as a new one's document
        says until it ends) with ``fields`` (more passes: an extension), unless it is
        not done (first wins)."""
        from google.cloud import firestore

        ref = self._execution(sid, eid)

        @firestore.transactional
        def run(tx):
            snap = ref.get(transaction=tx)
            if not snap.exists or snap.get("status") != Status.DONE:
                return False
            tx.update(ref, {**task_fields(fields), "status": str(Status.QUEUED)})
            return True

        with translated("execution reopening"):
            return run(self._db.transaction())

    # --- tasks ---------------------------------------------------------------------------
    def write_tasks(self, sid: str, eid: str, tasks: Iterable[Task]) -> None:
        """Create task documents, leaving any that exist untouched: a retried or
        concurrent planning step must never reset a task that a worker has taken."""
        from google.api_core import exceptions as gexc

        docs = [(t.id, task_to_doc(t)) for t in tasks]
        col = self._tasks(sid, eid)
        with translated("task creation"):
            for start in range(0, len(docs), BATCH):
                chunk = docs[start: start + BATCH]
                batch = self._db.batch()
                for tid, doc in chunk:
                    batch.create(col.document(tid), doc)
                try:
                    batch.commit()
                except gexc.AlreadyExists:
                    # Some were written by an earlier try: create the rest one by one.
                    for tid, doc in chunk:
                        with contextlib.suppress(gexc.AlreadyExists):
                            col.document(tid).create(doc)

    def get_task(self, sid: str, eid: str, tid: str) -> Task | None:
        with translated("task lookup"):
            snap = self._tasks(sid, eid).document(tid).get()
        return task_from_doc(tid, snap.to_dict()) if snap.exists else None

    def task_page(self, sid: str, eid: str, after: str | None, limit: int) -> list[Task]:
        """At most ``limit`` tasks in the order of their node's name, from the first
        after ``after`` (None: from the first); served by the automatic index of the
        ``node`` field."""
        query = self._tasks(sid, eid).order_by("node")
        if after is not None:
            query = query.start_after({"node": after})
        with translated("task listing"):
            return [task_from_doc(s.id, s.to_dict()) for s in query.limit(limit).stream()]

    def update_task(self, sid: str, eid: str, tid: str, fields: Fields) -> None:
        with translated("task update"):
            self._tasks(sid, eid).document(tid).update(task_fields(fields))

    def claim_task(self, sid: str, eid: str, tid: str, owner: str, lease_s: float,
                   kind: str | None = None) -> tuple[Claim, Task | None]:
        """Compare-and-set a task from pending to running for ``owner``, checked against
        its execution: a task of an execution that has ended (cancelled, failed, done)
        is never taken.

        Returns ("won", task) if this owner holds it now: it was pending, or this owner
        held it already (a redelivery of the same message), or the holder's lease ran
        out. Returns ("done", task) if it is finished, ("held", None) if someone else
        holds it, and ("other", None) if it is not of ``kind``. Only one concurrent
        caller can win. Raises NotFound for no such task, Conflict (``execution_ended``)
        when the execution has ended or is gone.

        A production task's claim reads the execution in the same transaction as the
        task, so a task not started when its execution ended never starts, however
        close the end came. A reduction's claim is a write conditional on the task's
        update time after one read of both: its reducers claim it at once whenever
        two children end together, and two transactions that read one document and
        then both write it wait on each other's locks (seconds on the emulator); a
        reduction that starts as its execution ends changes nothing (nothing is acted
        on after the end).
        """
        from google.api_core import exceptions as gexc

        ex_ref, ref = self._execution(sid, eid), self._tasks(sid, eid).document(tid)

        def decide(snaps) -> tuple[Claim | None, Task | None, dict | None]:
            """(outcome, task, the claim's fields if it is won) from the two snapshots."""
            found = {s.reference.path: s for s in snaps}
            ex_snap, snap = found.get(ex_ref.path), found.get(ref.path)
            if snap is None or not snap.exists:
                raise errors.NotFound(f"task {tid} not found")
            if ex_snap is None or not ex_snap.exists \
                    or (ex_snap.to_dict() or {}).get("status") in FINAL:
                return None, None, None
            task = task_from_doc(tid, snap.to_dict())
            if kind is not None and task.kind != kind:
                return Claim.OTHER, None, None
            if task.status in TASK_FINAL:
                return Claim.DONE, task, None
            started = now()
            if task.status == Status.RUNNING and task.owner != owner and task.started \
                    and (started - task.started).total_seconds() < lease_s:
                return Claim.HELD, None, None
            fields = {"status": "running", "owner": owner, "started": started,
                      "attempts": task.attempts + 1}
            task.status, task.owner, task.started = Status.RUNNING, owner, started
            task.attempts += 1
            return Claim.WON, task, fields

        def in_transaction(snaps, tx) -> tuple[Claim | None, Task | None]:
            state, task, fields = decide(snaps)
            if fields is not None:
                tx.update(ref, fields)
            return state, task

        def by_swap() -> tuple[Claim | None, Task | None]:
            for _ in range(CLAIM_ATTEMPTS):
                snaps = list(self._db.get_all([ex_ref, ref]))
                state, task, fields = decide(snaps)
                if fields is None:
                    return state, task
                read = next(s for s in snaps if s.reference.path == ref.path)
                try:
                    ref.update(fields, option=self._db.write_option(
                        last_update_time=read.update_time))
                except (gexc.FailedPrecondition, gexc.Aborted):
                    continue  # another claimant changed it first: look again
                return state, task
            return Claim.HELD, None

        with translated("task claim"):
            try:
                state, task = by_swap() if kind == Kind.REDUCE else \
                    self._read_and_commit([ex_ref, ref], in_transaction, CLAIM_ATTEMPTS)
            except gexc.Aborted:
                return Claim.HELD, None  # contended past its retries: others are taking it
        if state is None:
            raise errors.Conflict(f"task {tid}: its execution has ended", "execution_ended")
        return state, task

    def _read_and_commit(self, refs: list, body: Callable[[list, Any], Any],
                         attempts: int) -> Any:
        """A read-write transaction in two round trips: the documents of ``refs`` are
        read by the call that begins the transaction (``BatchGetDocuments`` with
        ``new_transaction``), ``body(snapshots, transaction)`` decides and adds its
        writes, and one ``Commit`` ends it; the client's ``@transactional`` spends a
        third, ``BeginTransaction``, first (a task's claim is on every task's path).
        Tried again from the read when Firestore aborts it under contention, at most
        ``attempts`` times (then Aborted is raised); rolled back if ``body`` raises.
        The client library has no public call for this: it uses the library's own
        helpers (``_parse_batch_get``, the transaction's id and commit), which the
        version bound in pyproject.toml holds and the conformance suite runs on the
        emulator (``bench/claims.py`` measures it against ``@transactional``)."""
        from google.api_core import exceptions as gexc
        from google.cloud.firestore_v1.base_client import _parse_batch_get, _reference_info
        from google.cloud.firestore_v1.types import common

        db = self._db
        paths, by_path = _reference_info(refs)
        retry: bytes | None = None
        while True:
            read_write = common.TransactionOptions.ReadWrite(retry_transaction=retry) \
                if retry else common.TransactionOptions.ReadWrite()
            tx = db.transaction()
            snaps = []
            begun: bytes | None = None
            try:
                # No automatic retry of the read: a retried stream could begin a second
                # transaction and leave the first open.
                for response in db._firestore_api.batch_get_documents(
                        request={"database": db._database_string, "documents": paths,
                                 "new_transaction": common.TransactionOptions(
                                     read_write=read_write)},
                        metadata=db._rpc_metadata, retry=None):
                    if response.transaction:
                        tx._id = begun = response.transaction
                    if response._pb.WhichOneof("result"):
                        snaps.append(_parse_batch_get(response, by_path, db))
                result = body(snaps, tx)
                tx._commit()
                return result
            except BaseException as e:
                # Its locks are released now rather than when it times out (one that
                # aborted has none: a failed rollback changes nothing here).
                if tx._id is not None:
                    with contextlib.suppress(Exception):
                        tx._rollback()
                if not isinstance(e, gexc.Aborted):
                    raise
                attempts -= 1
                if attempts <= 0:
                    raise
                retry = begun  # tried again with its place in Firestore's queue

    def replace_task(self, sid: str, eid: str, tid: str, generation: int, error: str) -> bool:
        """Compare-and-set on the task's generation: a task still of generation
        ``generation - 1`` and not finished goes back to pending as ``generation``,
        with one failure more and ``error``; its ``attempts`` go on counting (a
        replacement gets no fresh delivery count). False if a replacement of that
        generation came first, or the task finished: nothing is written."""
        with translated("task replacement"):
            return self._swap(
                self._tasks(sid, eid).document(tid),
                lambda d: (d.get("generation") or 0) == generation - 1
                and d.get("status") not in TASK_FINAL,
                lambda d: {"status": "pending", "owner": None, "started": None,
                           "error": error, "failures": (d.get("failures") or 0) + 1,
                           "generation": generation}) is not None

    def count_done_children(self, sid: str, eid: str, parent: str) -> int:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._tasks(sid, eid).where(filter=FieldFilter("parent", "==", parent)) \
            .where(filter=FieldFilter("status", "==", "done"))
        with translated("task count"):
            return int(query.count(alias="n").get()[0][0].value)

    def done_nodes(self, sid: str, eid: str) -> list[str]:
        """Nodes of the finished tasks (only their names are read)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._tasks(sid, eid).where(filter=FieldFilter("status", "==", "done")) \
            .select(["node"])
        with translated("finished task listing"):
            return [s.get("node") for s in query.stream()]

    # --- recovery (the watchdog, the failure budget) --------------------------------------
    def tasks_in(self, sid: str, eid: str, statuses: tuple[str, ...]) -> list[Task]:
        """The tasks whose status is one of ``statuses``."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._tasks(sid, eid).where(filter=FieldFilter("status", "in", list(statuses)))
        with translated("task listing"):
            return [task_from_doc(s.id, s.to_dict()) for s in query.stream()]

    def failed_tasks(self, sid: str, eid: str) -> list[Task]:
        """The tasks with at least one failed pass (replaced, or failed for good)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._tasks(sid, eid).where(filter=FieldFilter("failures", ">", 0))
        with translated("failed task listing"):
            tasks = [task_from_doc(s.id, s.to_dict()) for s in query.stream()]
        return sorted(tasks, key=lambda t: t.node)

    def recovery_stats(self, sid: str, eid: str) -> RecoveryCounts:
        """Deliveries taken again, replaced passes, speculative copies and re-driven
        reductions. Read from the few tasks concerned (the emulator cannot sum integer
        fields), never from all of them."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        tasks = self._tasks(sid, eid)

        def where(field: str, op: str, value):
            return tasks.where(filter=FieldFilter(field, op, value))

        with translated("recovery statistics"):
            again = [s.to_dict() for s in where("attempts", ">", 1)
                     .select(["attempts", "generation", "speculated"]).stream()]
            replaced = sum(s.get("generation") or 0 for s in where("generation", ">", 0)
                           .select(["generation"]).stream())
            redriven = sum(s.get("redrives") or 0 for s in where("redrives", ">", 0)
                           .select(["redrives"]).stream())
            speculative = int(where("speculated", "==", True).count(alias="n")
                              .get()[0][0].value)
        return recovery_counts(again, replaced, speculative, redriven)

    def last_progress(self, sid: str, eid: str) -> dt.datetime | None:
        """When a task of the execution last started or finished."""
        tasks = self._tasks(sid, eid)
        with translated("task progress"):
            times = [self._edge(tasks, f, ascending=False) for f in ("started", "finished")]
        return max((t for t in times if t), default=None)

    def active_executions(self) -> list[Execution]:
        """Every execution not final yet (a collection-group query: ``executions`` in
        every session; the status stays ``queued`` in the document until the end)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._db.collection_group("executions").where(
            filter=FieldFilter("status", "==", "queued"))
        with translated("active execution listing"):
            return [execution_from_doc(s.to_dict()) for s in query.stream()]

    def webhook_secret(self, user: str) -> str:
        """The user's webhook signing secret, made at first use (first writer wins)."""
        import secrets

        from google.api_core import exceptions as gexc

        ref = self._db.collection("webhook_secrets").document(user)
        with translated("webhook secret"):
            snap = ref.get()
            if snap.exists:
                return snap.get("secret")
            try:
                secret = "whsec_" + secrets.token_urlsafe(32)
                ref.create({"secret": secret, "created": now()})
                return secret
            except gexc.AlreadyExists:
                return ref.get().get("secret")

    def count_tasks(self, sid: str, eid: str, status: str, kind: str | None = None) -> int:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._tasks(sid, eid).where(filter=FieldFilter("status", "==", status))
        if kind is not None:
            query = query.where(filter=FieldFilter("kind", "==", kind))
        with translated("task count"):
            return int(query.count(alias="n").get()[0][0].value)

    # --- the end game: backup copies of the tasks that lag -------------------------------
    def longest_running(self, sid: str, eid: str, limit: int,
                        newest: bool = False) -> list[Task]:
        """The ``limit`` running production tasks without a copy that started first
        (``newest``: last). Bounded queries: the end game asks them on every finished
        task."""
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        order = firestore.Query.DESCENDING if newest else firestore.Query.ASCENDING
        query = self._tasks(sid, eid).where(filter=FieldFilter("status", "==", "running")) \
            .where(filter=FieldFilter("speculated", "==", False)) \
            .order_by("started", direction=order).limit(limit)
        with translated("longest-running tasks"):
            return [task_from_doc(s.id, s.to_dict()) for s in query.stream()]

    def mean_work(self, sid: str, eid: str, kind: str = "produce") -> float | None:
        """The mean ``work_s`` of the done tasks of ``kind`` (None before any is done);
        the same aggregation as ``task_stats``, so the same index serves it."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        q = self._tasks(sid, eid).where(filter=FieldFilter("kind", "==", kind)) \
            .where(filter=FieldFilter("status", "==", "done"))
        with translated("mean task time"):
            agg = {a.alias: a.value for a in q.sum("fetch_s", alias="fetch")
                   .sum("work_s", alias="work").sum("cpu_s", alias="cpu")
                   .count(alias="n").get()[0]}
        return float(agg["work"] or 0.0) / agg["n"] if agg.get("n") else None

    def mark_speculated(self, sid: str, eid: str, tid: str) -> bool:
        """Set the task's ``speculated`` flag unless it is set (a write conditional on
        the document's update time): True for the one caller that set it, so a task
        gets one copy however many callers ask at once."""
        from google.api_core import exceptions as gexc

        ref = self._tasks(sid, eid).document(tid)
        with translated("speculative copy"):
            snap = ref.get()
            if not snap.exists or (snap.to_dict() or {}).get("speculated"):
                return False
            try:
                ref.update({"speculated": True},
                           option=self._db.write_option(last_update_time=snap.update_time))
            except (gexc.FailedPrecondition, gexc.Aborted):
                return False
        return True

    def task_stats(self, sid: str, eid: str) -> TaskStats:
        """Counts by status and time sums by kind, by aggregation queries. The six
        queries run at once: every status read pays for them, and the end of an
        execution waits for them before its status turns final."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        tasks = self._tasks(sid, eid)

        def count(status: str) -> int:
            q = tasks.where(filter=FieldFilter("status", "==", status))
            return int(q.count(alias="n").get()[0][0].value)

        def sums(kind: str) -> dict:
            q = tasks.where(filter=FieldFilter("kind", "==", kind)) \
                .where(filter=FieldFilter("status", "==", "done"))
            agg = q.sum("fetch_s", alias="fetch").sum("work_s", alias="work") \
                .sum("cpu_s", alias="cpu").count(alias="n").get()[0]
            return {a.alias: float(a.value or 0.0) for a in agg}

        with translated("task statistics"), ThreadPoolExecutor(max_workers=6) as pool:
            jobs: dict[str, Future[Any]] = {
                "failed": pool.submit(count, "failed"),
                "running": pool.submit(count, "running"),
                "produce": pool.submit(sums, "produce"),
                "reduce": pool.submit(sums, "reduce"),
                "first_started": pool.submit(self._edge, tasks, "started", True),
                "last_produced": pool.submit(self._edge, tasks, "finished", False, "produce")}
            got = {key: job.result() for key, job in jobs.items()}
        return TaskStats(failed=got["failed"], running=got["running"], produce=got["produce"],
                         reduce=got["reduce"], first_started=got["first_started"],
                         last_produced=got["last_produced"],
                         done=int(got["produce"]["n"] + got["reduce"]["n"]))

    @staticmethod
    def _edge(tasks, field: str, ascending: bool, kind: str | None = None):
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        q = tasks
        if kind:
            q = q.where(filter=FieldFilter("kind", "==", kind))
        direction = firestore.Query.ASCENDING if ascending else firestore.Query.DESCENDING
        docs = list(q.order_by(field, direction=direction).limit(1).stream())
        return docs[0].get(field) if docs else None

    # --- the farm's queue (francine.services.farm): across executions, so collection-group -----
    def _farm_users(self, farm: str):
        return self._db.collection("farms").document(farm).collection("users")

    def _swap(self, ref, check: Callable[[dict], bool],
              fields: dict | Callable[[dict], dict]) -> dict | None:
        """Update ``ref`` with ``fields`` (or what they make of the document) if
        ``check(document)``, conditionally on the document's update time (a concurrent
        change makes it lose); returns the document as it was, or None when nothing
        was written."""
        from google.api_core import exceptions as gexc

        snap = ref.get()
        if not snap.exists or not check(snap.to_dict()):
            return None
        update = fields(snap.to_dict()) if callable(fields) else fields
        try:
            ref.update(update, option=self._db.write_option(last_update_time=snap.update_time))
        except (gexc.FailedPrecondition, gexc.Aborted, gexc.NotFound):
            return None
        return snap.to_dict()

    def waiting_tasks(self, farm: str, limit: int,
                      order: str = "rank") -> list[tuple[str, str, Task]]:
        """(sid, eid, task) of the ``limit`` waiting tasks first by ``order`` (the
        dispatch order, "rank", or the virtual time, "tag")."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        if order not in ("rank", "tag"):
            raise ValueError(f"order: {order!r}")
        query = self._db.collection_group("tasks").where(
            filter=FieldFilter("queue", "==", f"{farm}:waiting")).order_by(order).limit(limit)
        with translated("farm queue"):
            found = []
            for s in query.stream():
                parts = s.reference.path.split("/")  # sessions/s/executions/e/tasks/t
                found.append((parts[1], parts[3], task_from_doc(s.id, s.to_dict())))
            return found

    def count_out(self, farm: str) -> int:
        """Tasks holding a slot of the farm (published, not finished)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._db.collection_group("tasks").where(
            filter=FieldFilter("queue", "==", f"{farm}:out"))
        with translated("farm slot count"):
            return int(query.count(alias="n").get()[0][0].value)

    def held_slots(self, farm: str) -> list[int]:
        """The slot numbers the farm's tasks hold (a small farm's: the local stack's,
        whose slots pick a worker's topic)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._db.collection_group("tasks").where(
            filter=FieldFilter("queue", "==", f"{farm}:out")).select(["slot"])
        with translated("farm slots"):
            return sorted(int(s.get("slot") or 0) for s in query.stream())

    def take_waiting(self, sid: str, eid: str, tid: str, farm: str, slot: int) -> bool:
        """Waiting → out in ``slot``; False if the task was not waiting (taken already)."""
        with translated("farm take"):
            return self._swap(self._tasks(sid, eid).document(tid),
                              lambda d: d.get("queue") == f"{farm}:waiting",
                              {"queue": f"{farm}:out", "slot": slot}) is not None

    def take_waiting_many(self, farm: str, takes: list[tuple[str, str, str, int]]) -> int:
        """``take_waiting`` of each (sid, eid, tid, slot) in one transaction, up to the
        first that is not waiting (another dispatch took it: the ones after it are left
        to that one); returns how many were taken, a prefix of ``takes``."""
        from google.cloud import firestore

        refs = [self._tasks(sid, eid).document(tid) for sid, eid, tid, _ in takes]

        @firestore.transactional
        def run(tx) -> int:
            snaps = {s.reference.path: s for s in tx.get_all(refs)} \
                if refs else {}
            taken = 0
            for ref, (_, _, _, slot) in zip(refs, takes, strict=True):
                snap = snaps.get(ref.path)
                if snap is None or not snap.exists \
                        or (snap.to_dict() or {}).get("queue") != f"{farm}:waiting":
                    break
                tx.update(ref, {"queue": f"{farm}:out", "slot": slot})
                taken += 1
            return taken

        with translated("farm take"):
            return run(self._db.transaction())

    def release_task(self, sid: str, eid: str, tid: str, farm: str) -> int | None:
        """Out → released; the slot it held, or None if it held none."""
        with translated("farm release"):
            before = self._swap(self._tasks(sid, eid).document(tid),
                                lambda d: d.get("queue") == f"{farm}:out", {"queue": None})
        return None if before is None else int(before.get("slot") or 0)

    def requeue_task(self, sid: str, eid: str, tid: str, farm: str) -> bool:
        """A task that never started goes back to waiting (with its tag: it is at the
        head of the queue). False if it started, finished, or has no tag."""
        with translated("farm requeue"):
            return self._swap(
                self._tasks(sid, eid).document(tid),
                lambda d: d.get("status") == "pending" and d.get("tag") is not None
                and d.get("queue") != f"{farm}:waiting",
                {"queue": f"{farm}:waiting", "slot": None}) is not None

    def queue_copies(self, sid: str, eid: str, task: Task, farm: str,
                     entries: list[tuple[str, float, float]]) -> None:
        """A copy of ``task`` waits in the farm's queue: one document per piece,
        ``(entry id, tag, rank)``, beside the execution's tasks (so that the farm's
        collection-group queries and indexes find it) but no task: it has no status,
        so no count, listing or aggregation of tasks sees it. Created once."""
        from google.api_core import exceptions as gexc

        col = self._tasks(sid, eid)
        with translated("farm copies"):
            for entry, tag, rank in entries:
                with contextlib.suppress(gexc.AlreadyExists):
                    col.document(entry).create({
                        "node": task.node, "kind": str(task.kind), "copy_of": task.id,
                        "queue": f"{farm}:waiting", "tag": tag, "rank": rank})

    def release_copies(self, sid: str, eid: str, tid: str, farm: str) -> list[int]:
        """The copies of task ``tid`` leave the farm: those waiting leave the queue,
        those holding a slot free it. Returns the slots freed."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        states = (f"{farm}:waiting", f"{farm}:out")
        query = self._tasks(sid, eid).where(filter=FieldFilter("copy_of", "==", tid))
        with translated("farm copies"):
            freed = [self._swap(s.reference, lambda d: d.get("queue") in states,
                                {"queue": None}) for s in query.stream()]
        return [int(d.get("slot") or 0) for d in freed
                if d is not None and d.get("queue") == states[1]]

    def release_execution(self, sid: str, eid: str, farm: str) -> int:
        """Take every task of an ended execution out of the farm's queue and slots;
        returns how many held a slot."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        states = [f"{farm}:waiting", f"{farm}:out"]
        query = self._tasks(sid, eid).where(filter=FieldFilter("queue", "in", states))
        with translated("farm release"):
            snaps = list(query.stream())
            for start in range(0, len(snaps), BATCH):
                batch = self._db.batch()
                for s in snaps[start: start + BATCH]:
                    batch.update(s.reference, {"queue": None})
                batch.commit()
        return sum(s.get("queue") == states[1] for s in snaps)

    def reserve_share(self, farm: str, user: str,
                      update: Callable[[Fields | None], Fields]) -> Fields:
        """Read-modify-write of the user's fair-share account, in one transaction;
        returns the account written."""
        from google.cloud import firestore

        ref = self._farm_users(farm).document(hashlib.sha256(user.encode()).hexdigest()[:32])

        @firestore.transactional
        def run(tx):
            snap = ref.get(transaction=tx)
            account = {**update(snap.to_dict() if snap.exists else None), "user": user}
            tx.set(ref, account)
            return account

        with translated("fair-share account"):
            return run(self._db.transaction())

    def latest_finish(self, farm: str) -> float | None:
        """Where the account that ends last ends (the farm's virtual time when nothing
        waits)."""
        from google.cloud import firestore

        query = self._farm_users(farm).order_by("finish", direction=firestore.Query.DESCENDING) \
            .limit(1)
        with translated("fair-share accounts"):
            docs = list(query.stream())
        return docs[0].get("finish") if docs else None
