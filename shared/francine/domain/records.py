"""Typed records of the domain: statuses, executions and tasks.

Only the store adapter turns these into Firestore documents and back
(``francine.adapters.store``); the rest of the code reads attributes, not string keys.
The final statuses are defined here once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Statuses of executions and tasks (a StrEnum: equal to its value as a string)."""

    QUEUED = "queued"  # execution: created, nothing running yet
    PENDING = "pending"  # task: planned, not taken
    RUNNING = "running"
    REDUCING = "reducing"  # execution (reported only): every production task is done
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Statuses an execution never leaves.
FINAL: frozenset[Status] = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})
#: Statuses a task never leaves.
TASK_FINAL: frozenset[Status] = frozenset({Status.DONE, Status.FAILED})


def is_final(status: str | None) -> bool:
    return status in FINAL


class Kind(StrEnum):
    PRODUCE = "produce"
    REDUCE = "reduce"


class Claim(StrEnum):
    """What a conditional claim of a task observed."""

    WON = "won"  # this owner holds the task now
    DONE = "done"  # the task is finished (done or failed)
    HELD = "held"  # someone else holds it
    OTHER = "other"  # the task is not of the kind asked for


@dataclass
class Task:
    """One production or reduction task (document ``tasks/{id}``)."""

    id: str
    node: str
    kind: Kind
    parent: str | None
    status: Status = Status.PENDING
    children: int = 0
    attempts: int = 0
    owner: str | None = None
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    error: str | None = None
    # production tasks: the tile [x0, y0, width, height], the first pass, its seed, and
    # how many consecutive passes the task renders (several when one pass is tiny)
    tile: tuple[int, int, int, int] | None = None
    pass_index: int | None = None
    seed: int | None = None
    passes: int = 1
    # measured seconds, summed by aggregation queries for the execution's status
    fetch_s: float | None = None
    work_s: float | None = None
    cpu_s: float | None = None
    # recovery: failed passes of this task, its generation (each replacement renders
    # with a fresh seed), whether a speculative copy was started, how often its
    # reduction was re-driven
    failures: int = 0
    generation: int = 0
    speculated: bool = False
    redrives: int = 0
    # farm-wide dispatch (francine.domain.fair_share): "<farm>:waiting" or "<farm>:out" while the
    # task holds its place in the farm's queue or a slot, its fair-share tag (virtual
    # time), its rank (the tag less its user's credit: the dispatch order), its slot
    queue: str | None = None
    tag: float | None = None
    rank: float | None = None
    slot: int | None = None
    # the last lines its worker (or reducer) logged while it worked on it
    log: list[str] | None = None


@dataclass
class Execution:
    """One render of a session (document ``executions/{id}``)."""

    id: str
    session_id: str
    user: str
    created: dt.datetime
    producer: str
    format: str
    display: str
    channels: int
    scene: dict[str, Any]
    shape: dict[str, int]
    parallel: int
    tile: int | None = None
    update: dict[str, Any] | None = None
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: Status = Status.QUEUED
    admission_limit: int = 0
    planned: bool = False
    published: bool = False
    finished: dt.datetime | None = None
    error: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    result: str | None = None
    notify_url: str | None = None  # where the final status is POSTed (a webhook)
    cpu_estimate: float | None = None  # reserved against the owner's daily budget
    task_seconds: float | None = None  # one production task's estimate (fair share)
    # An animation (francine.services.animation): the frames it renders, how many of
    # them render at once, what a failed frame does ("continue" or "stop"), whether
    # the webhook is told of each frame. Each frame is an execution of its own, with
    # ``parent`` (the animation's id) and ``frame`` set.
    frames: list[int] | None = None
    frame_window: int | None = None
    on_frame_failure: str | None = None
    notify_frames: bool | None = None
    parent: str | None = None
    frame: int | None = None
    # A frame before an animation's last window starts no end-game copies (the frames
    # after it keep the farm busy); fair share: where the animation's reservation puts
    # this execution's first task in its user's virtual time, and its credit (set, no
    # account transaction is needed to queue its tasks)
    endgame: bool | None = None
    share_start: float | None = None
    share_credit: float | None = None
    # Seeds (francine.domain.planning.seed_for) come from ``seed`` when the request gave
    # one, else from the id; a wave's come from its render's (``seeds``: the basis).
    seed: int | None = None
    seeds: str | None = None
    # Waves (francine.services.waves): a render with a noise target (``until``), a
    # spending cap, or extended after it was done renders its passes in waves, each an
    # execution of its own with ``parent`` (the render's id), ``wave`` (its number) and
    # ``first_pass`` (its passes come after those of the waves before it).
    until: dict[str, Any] | None = None
    max_cost_usd: float | None = None
    max_cpu_seconds: float | None = None
    usd_per_cpu_second: float | None = None  # the price's ratio: measured CPU to USD
    tile_pass_cpu_s: float | None = None  # the estimated CPU-seconds of a tile's pass
    wave: int | None = None
    first_pass: int | None = None
    # The render's side: the passes to reach (a fixed count; with ``until``, the most),
    # the waves started, and once they end: passes held, noise estimate, why it
    # stopped, CPU-seconds spent by every wave
    target_passes: int | None = None
    waves: int | None = None
    passes_done: int | None = None
    noise: float | None = None
    stopped: str | None = None
    spent_cpu_s: float | None = None
    # An extended render's own tasks: their CPU-seconds and summary; the waves it had
    # when it was last extended (set: it has an image from before)
    own_cpu_s: float | None = None
    own_summary: dict[str, Any] | None = None
    waves_before: int | None = None
    imaged: int | None = None  # the done waves whose passes its result shows

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def seed_basis(self) -> str:
        """What the passes' seeds are derived from."""
        if self.seeds is not None:
            return self.seeds
        return self.id if self.seed is None else f"seed:{self.seed}"

    @property
    def waved(self) -> bool:
        """A render whose passes come in waves: it has no tasks of its own after the
        first (``francine.services.waves``)."""
        return self.waves is not None

    @property
    def animation(self) -> bool:
        """An execution of a frame range: its frames are executions of their own."""
        return self.frames is not None


@dataclass
class Session:
    """A scene being worked on (document ``sessions/{id}``)."""

    id: str
    user: str
    producer: str
    format: str
    scene: dict[str, Any]
    created: dt.datetime | None = None
    updated: dt.datetime | None = None
    deleting: bool = False  # being deleted: it answers 404 from then on
