"""The ports: what the code above the adapters needs from the store, the bus, the blobs
and Cloud Run, as ``typing.Protocol`` classes.

``francine.adapters`` implements them over Firestore, Pub/Sub, Cloud Storage and the
Cloud Run Admin API; ``francine.twins`` in memory, for the scale simulator and fast unit
tests. One conformance suite (``tests/conformance/``) runs against both, so the twins
keep the semantics that matter: create-conflicts, conditional writes (claims),
first-wins endings, at-least-once delivery with redelivery and dead-lettering; and mypy
checks that both have every method with its signature (``tests/typing_conformance.py``,
run by ``.ci/typecheck``).

The store is split by concern, so that a reader sees which queries a concern owns (and
an index change can be traced to the code that needs it); ``Store`` is all of them, what
``francine.tools.wiring.Adapters`` holds. Nothing here imports a Google library: this module
and ``francine.domain.records`` are the vocabulary both sides share.
"""

from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict

from francine.domain.records import Claim, Execution, Session, Task

#: A document's fields as a map: updates, user documents, resource records, accounts.
Fields = dict[str, Any]


# --- values the ports return ----------------------------------------------------------

class ExecutionUsage(TypedDict, total=False):
    """The fields of an execution that the quotas read (a projection: only these)."""

    shape: dict[str, int]
    cpu_estimate: float | None
    finished: dt.datetime
    summary: dict[str, Any] | None
    frame_window: int | None  # an animation: the frames it renders at once
    parent: str | None  # a frame of an animation (counted in the animation, not alone)


class TimeSums(TypedDict):
    """Time sums of the done tasks of one kind, and how many they are."""

    fetch: float
    work: float
    cpu: float
    n: float


class TaskStats(TypedDict):
    """An execution's progress, from aggregation queries over its tasks."""

    failed: int
    running: int
    done: int
    produce: TimeSums
    reduce: TimeSums
    first_started: dt.datetime | None
    last_produced: dt.datetime | None


class RecoveryCounts(TypedDict):
    """What recovery cost an execution (``francine.services.recovery``)."""

    retries: int
    replaced: int
    speculative: int
    redriven: int


#: The three buckets: content-addressed resources (and staged uploads), partials, results.
Area = Literal["resources", "partials", "results"]


@dataclass(frozen=True)
class StoredObject:
    """An object as a listing gives it: what retention needs to decide on it."""

    name: str
    created: dt.datetime | None


# --- the store, by concern ----------------------------------------------------------------

class UserStore(Protocol):
    """Users and their accounts: API keys (one document per key hash), the quotas'
    overrides and usage, webhook secrets."""

    def create_user(self, key_hash: str, doc: Fields) -> None: ...  # Conflict if it exists
    def get_user(self, key_hash: str) -> Fields | None: ...
    def list_users(self) -> list[Fields]: ...
    def users_by(self, field: Literal["id", "name"], value: str,
                 limit: int | None = None) -> list[tuple[str, Fields]]: ...  # (key hash, doc)
    def update_user(self, key_hash: str, fields: Fields) -> None: ...
    def delete_user(self, key_hash: str) -> None: ...
    def webhook_secret(self, user: str) -> str: ...
    def executions_in_flight(self, user: str) -> list[ExecutionUsage]: ...
    def executions_finished_since(self, user: str,
                                  since: dt.datetime) -> list[ExecutionUsage]: ...


class SessionStore(Protocol):
    """Sessions and the resource records attached to them."""

    def create_session(self, session: Session) -> None: ...
    def get_session(self, sid: str) -> Session | None: ...
    def list_sessions(self, user: str) -> list[Session]: ...
    def mark_session_deleting(self, sid: str) -> None: ...
    def delete_session(self, sid: str) -> None: ...  # with everything below it
    def attach_resource(self, sid: str, record: Fields) -> bool: ...
    def list_resources(self, sid: str) -> list[Fields]: ...


class ExecutionStore(Protocol):
    """Executions: created once, updated while published, ended first-wins."""

    def create_execution(self, sid: str, eid: str,
                         build: Callable[[Session], tuple[Fields, Execution]]
                         ) -> tuple[Execution, bool]: ...
    def execution(self, sid: str, eid: str) -> Execution | None: ...
    def list_executions(self, sid: str) -> list[Execution]: ...
    def frames_of(self, sid: str, eid: str) -> list[Execution]: ...  # an animation's frames
    def add_frame(self, sid: str, frame: Execution) -> tuple[Execution, bool]: ...
    def update_execution(self, sid: str, eid: str, fields: Fields) -> None: ...
    def finish_execution(self, sid: str, eid: str, fields: Fields) -> bool: ...
    def reopen_execution(self, sid: str, eid: str, fields: Fields) -> bool: ...  # done → queued
    def active_executions(self) -> list[Execution]: ...


class TaskStore(Protocol):
    """The tasks of an execution: created once, claimed conditionally, counted by
    aggregation."""

    def write_tasks(self, sid: str, eid: str, tasks: Iterable[Task]) -> None: ...
    def get_task(self, sid: str, eid: str, tid: str) -> Task | None: ...
    def task_page(self, sid: str, eid: str, after: str | None,
                  limit: int) -> list[Task]: ...  # by node, after ``after``
    def update_task(self, sid: str, eid: str, tid: str, fields: Fields) -> None: ...
    def claim_task(self, sid: str, eid: str, tid: str, owner: str, lease_s: float,
                   kind: str | None = None) -> tuple[Claim, Task | None]: ...
    # Compare-and-set on the task's generation (a failed pass replaced once).
    def replace_task(self, sid: str, eid: str, tid: str, generation: int,
                     error: str) -> bool: ...
    def count_done_children(self, sid: str, eid: str, parent: str) -> int: ...
    def done_nodes(self, sid: str, eid: str) -> list[str]: ...
    def count_tasks(self, sid: str, eid: str, status: str,
                    kind: str | None = None) -> int: ...
    def task_stats(self, sid: str, eid: str) -> TaskStats: ...


class RecoveryStore(Protocol):
    """What the watchdog, the failure budget and the end game read (and the one flag
    the end game sets)."""

    def tasks_in(self, sid: str, eid: str, statuses: tuple[str, ...]) -> list[Task]: ...
    def failed_tasks(self, sid: str, eid: str) -> list[Task]: ...
    def recovery_stats(self, sid: str, eid: str) -> RecoveryCounts: ...
    def last_progress(self, sid: str, eid: str) -> dt.datetime | None: ...
    def longest_running(self, sid: str, eid: str, limit: int,
                        newest: bool = False) -> list[Task]: ...
    def mean_work(self, sid: str, eid: str, kind: str = "produce") -> float | None: ...
    def mark_speculated(self, sid: str, eid: str, tid: str) -> bool: ...


class FarmStore(Protocol):
    """The farm's queue (across executions) and its fair-share accounts
    (``francine.services.farm``)."""

    def waiting_tasks(self, farm: str, limit: int, order: Literal["rank", "tag"] = "rank"
                      ) -> list[tuple[str, str, Task]]: ...
    def count_out(self, farm: str) -> int: ...
    def held_slots(self, farm: str) -> list[int]: ...
    def take_waiting(self, sid: str, eid: str, tid: str, farm: str, slot: int) -> bool: ...
    def take_waiting_many(self, farm: str,
                          takes: list[tuple[str, str, str, int]]) -> int: ...  # a prefix
    def release_task(self, sid: str, eid: str, tid: str, farm: str) -> int | None: ...
    def requeue_task(self, sid: str, eid: str, tid: str, farm: str) -> bool: ...
    def release_execution(self, sid: str, eid: str, farm: str) -> int: ...
    # A task's copy in the farm's queue (one entry per piece), and out of it.
    def queue_copies(self, sid: str, eid: str, task: Task, farm: str,
                     entries: list[tuple[str, float, float]]) -> None: ...
    def release_copies(self, sid: str, eid: str, tid: str, farm: str) -> list[int]: ...
    def reserve_share(self, farm: str, user: str,
                      update: Callable[[Fields | None], Fields]) -> Fields: ...
    def latest_finish(self, farm: str) -> float | None: ...


class RetentionStore(Protocol):
    """What garbage collection asks the store (``francine.services.retention``)."""

    def referenced_resources(self) -> set[str]: ...  # sha256 named by any session


class Store(UserStore, SessionStore, ExecutionStore, TaskStore, RecoveryStore, FarmStore,
            RetentionStore, Protocol):
    """The whole store."""


# --- the bus --------------------------------------------------------------------------------

class Gate(Protocol):
    """Whether renders may be taken now; raises (a 503) if not."""

    def check(self) -> None: ...


class Bus(Protocol):
    def publish_tasks(self, session_id: str, execution_id: str,
                      tasks: list[tuple[int, str] | tuple[int, str, str]]) -> None: ...
    def publish_done(self, session_id: str, execution_id: str, node: str) -> None: ...
    def publish_status(self, message: Fields) -> None: ...
    def render_gate(self) -> Gate: ...  # open once production tasks reach a subscriber


# --- the blobs, by concern ------------------------------------------------------------------

class ResourceBlobs(Protocol):
    """Resources, content-addressed: one object per sha256, shared by sessions."""

    def has_resource(self, sha256: str) -> bool: ...
    def put_resource(self, sha256: str, path: pathlib.Path) -> None: ...
    def fetch_resource(self, sha256: str, dest: pathlib.Path) -> None: ...
    def delete_resource(self, sha256: str) -> None: ...  # nothing if gone


class PartialBlobs(Protocol):
    """Partials: one object per task, created once."""

    def put_partial(self, session_id: str, execution_id: str, node: str,
                    data: bytes) -> bool: ...  # create-only: False if it exists
    def get_partial(self, session_id: str, execution_id: str, node: str) -> bytes: ...
    def get_partials(self, session_id: str, execution_id: str,
                     nodes: list[str]) -> list[bytes]: ...
    def stream_partials(self, session_id: str, execution_id: str, nodes: list[str],
                        window: int) -> Iterator[bytes]: ...


class ResultBlobs(Protocol):
    """Final images, and URLs that serve the large ones without the api."""

    def result_name(self, session_id: str, execution_id: str, extension: str) -> str: ...
    def put_result(self, name: str, data: bytes, content_type: str) -> None: ...
    def get_result(self, name: str) -> bytes: ...
    def result_size(self, name: str) -> int | None: ...  # None if there is none
    def result_url(self, name: str, ttl: dt.timedelta) -> str: ...


class UploadBlobs(Protocol):
    """Files larger than a request, sent by the client straight to storage."""

    def start_upload(self, name: str, size: int, origin: str | None) -> str: ...  # its URL
    def fetch_upload(self, name: str, dest: pathlib.Path) -> None: ...  # NotFound if none


class CleanupBlobs(Protocol):
    """Deletion: of a session's objects, and object by object for retention."""

    def delete_session(self, session_id: str) -> int: ...
    def list_objects(self, area: Area, prefix: str) -> Iterator[StoredObject]: ...
    def delete_object(self, area: Area, name: str) -> bool: ...  # False if it was gone


class Blobs(ResourceBlobs, PartialBlobs, ResultBlobs, UploadBlobs, CleanupBlobs, Protocol):
    """All the blobs."""


# --- Cloud Run --------------------------------------------------------------------------

class Services(Protocol):
    """The render service's service-level minimum instances: the warm-up's one lever
    (``francine.services.warmup``). ``service`` is the full resource name."""

    def min_instances(self, service: str) -> int: ...
    def set_min_instances(self, service: str, count: int) -> None: ...


# --- the outside world --------------------------------------------------------------

class Outside(Protocol):
    """Files and hooks outside Francine: a resource attached by ``gs://`` or ``https://``
    URL, read in chunks up to ``limit`` (never from ``own_buckets``; only from
    ``allowed_buckets`` when that is not None), and webhooks. Every address must be
    public: ``resolve_public`` is the one address to call, or a 400."""

    def open_url(self, url: str, limit: int, own_buckets: frozenset[str],
                 allowed_buckets: frozenset[str] | None) -> Iterator[bytes]: ...
    def post(self, url: str, body: bytes, headers: dict[str, str], deadline_s: float,
             insecure: bool = False) -> int: ...
    def resolve_public(self, host: str, port: int) -> str: ...
