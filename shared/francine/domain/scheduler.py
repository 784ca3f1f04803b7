"""The scheduler: one pure state machine from events to actions.

Modelled on dask's worker state machine: frozen event records come in together with
what the caller observed (``Observed``: the execution's status, a count, a claim's
outcome, the time), and ``step`` returns the actions to carry out. No SDK, no clock, no
I/O: ``francine.services.scheduling`` observes the store for each event and carries out
every action, for the api, the render worker, the reducer and the watchdog; ``drive``
is the loop, where carrying out an action may yield the next event (a claim yields
``TaskClaimed``, a finished reduction ``TaskDone``).

The life of a task:

    TaskDelivered ─▶ Claim ─▶ TaskClaimed(won) ─▶ Produce ─▶ TaskProduced ─▶ Announce
    (task event) TaskDone, if the store says the task is done and its output is stored
    ─▶ Release its farm slot or Publish the next production task (admission) + Claim
    (parent) when the parent's children are all done ─▶ TaskClaimed(won) ─▶ Reduce ─▶
    TaskDone(parent) … TaskDone(root), its image stored ─▶ End(done)

An event is a claim, the store is the truth: a ``TaskDone`` counts only for a task
whose own document is done, and its parent is reduced (or, for the root, the execution
ended) only once its output (partial, or the root's image) is seen stored, as observed
(``Observed.task_status``, ``Observed.stored``), so a false or stale event (a duplicate
published for a task not done yet) is never counted, reduced or ended on.

Farm admission (``Plan.farm``) is decided here too: planning queues the production
tasks (``WriteTasks(queued=True)``) and ``Admit`` publishes those the free slots take
(the pure policy ``francine.domain.fair_share`` orders them), a finished production
task ``Release``-s its slot, and copies and outputs produced again wait in the queue
as any task does.

Policies for a farm that is always partly broken (the original Francine's):

- *failure budget*: a production pass that really fails (its render raised, or its
  deliveries ran out: the worker died again and again) is replaced by a new pass of the
  same task with a fresh seed (``Replace``), so the image keeps its full weight; when
  the failures reach ``FAILURE_BUDGET`` of the passes (tiles × passes, however many a
  task folds; at least 1) the execution fails, naming the tasks and their errors; a
  poison scene (``POISON_TASKS`` tasks failing with one and the same error, a fresh
  seed not curing it) fails it without spending the rest of the budget;
- *stragglers*: on a ``Tick`` (the watchdog), a task running longer than
  ``SPECULATE_FACTOR`` × the mean of the execution's finished tasks
  (``SPECULATE_FIRST_S`` before any finished) gets one speculative copy
  (``Speculate``): the first result wins, the other is dropped (a partial is
  created only once);
- *end game* (MapReduce's backup tasks): once no production task of the execution is
  left unstarted, each production task that finishes frees an instance, and its
  ``TaskDone`` starts a copy of the longest-running uncopied task if that one has run
  longer than ``ENDGAME_FACTOR`` × the finished mean, without waiting for the next
  tick. One copy per finished task at most, each task copied once: the extra renders
  are bounded by the tasks that really lag. Where the producer allows it
  (``Plan.copy_pieces``), a copy is cut into bands of rows that several instances
  render at once, so a copy started late still ends a fraction of a task later (the
  pieces add up to the same pixels as the task's own render), and a task that started
  late (less than ``LATE_FRACTION`` of the mean ago) is copied too;
- *nothing hangs*: on a ``Tick``, an execution with unfinished work and no progress
  for ``Plan.stall_s`` has its production tasks published again and its ready
  reductions re-driven (``Redrive``); a dead-lettered task event is re-driven (up to
  ``REDRIVE_LIMIT`` times once its reduction ran and failed, ``UNTAKEN_REDRIVE_LIMIT``
  while no reducer took it), and a reduction that finds an input lost has it produced
  again (``InputsLost``), so an execution whose pixels exist never fails for
  bookkeeping.

Exactly-once reduction rests on two facts the store guarantees: a task is done only
after its output is stored, and only one caller wins a claim. Duplicated, reordered or
redelivered events are therefore harmless: a second claim observes ``held`` or
``done``. Once the execution is final, every event maps to no action.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, assert_never

from francine.base.config import Settings
from francine.domain import planning
from francine.domain.records import FINAL, TASK_FINAL, Claim, Kind, Status

#: An execution still unpublished this long after its creation lost the request that
#: was publishing it (an instance died and the client did not retry with its key).
STALLED_S = 30.0
#: A reduction claim older than this is presumed dead (its holder was killed).
REDUCE_LEASE_S = 900.0
#: The share of an execution's passes that may fail (each replaced) before it fails.
FAILURE_BUDGET = 0.10
#: This many tasks failing with the same error, one of them again after its fresh seed,
#: make a poison scene: the execution fails without spending the rest of its budget.
POISON_TASKS = 3
#: A task running longer than this many times its execution's mean gets a copy...
SPECULATE_FACTOR = 2.0
#: ...or longer than this before any task of its execution has finished...
SPECULATE_FIRST_S = 120.0
#: ...and never before this (a copy of a task about to end is only waste).
SPECULATE_MIN_S = 10.0
#: End game: a task that finishes starts a copy of one running longer than this many
#: times the mean, once no production task is left unstarted...
ENDGAME_FACTOR = 1.25
#: ...chosen among this many of the longest-running tasks (a bounded query).
ENDGAME_CANDIDATES = 4
#: ...or, when copies are cut into pieces, one that has run less than this share of
#: the mean (it started late: a copy in pieces ends well before it)...
LATE_FRACTION = 0.5
#: The most pieces a copy is cut into (``Plan.copy_pieces``, from the settings'
#: ``copy_pieces``), and a worker accepts in a message.
MAX_COPY_PIECES = 64
#: A reduction that ran and failed (its task event dead-lettered) is re-driven this many
#: times at most; one that no reducer took yet (the reducer was down: each re-drive
#: waits out a whole retry schedule, over an hour in the cloud) ten times as often,
#: so that a reducer failing before its claim, every time, still ends the execution.
REDRIVE_LIMIT = 3
UNTAKEN_REDRIVE_LIMIT = 10 * REDRIVE_LIMIT


# --- events ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ExecutionCreated:
    """The api recorded a new execution (or found one again by its idempotency key)."""


@dataclass(frozen=True)
class TaskDelivered:
    """A production task's message reached a render worker."""

    node: str
    owner: str  # the delivery's message id: a redelivery of it may take the task again


@dataclass(frozen=True)
class PieceDelivered:
    """A piece of a speculative copy (band ``piece`` of ``pieces``) reached a render
    worker. Pieces take no claim: the task stays with its running render."""

    node: str
    piece: int
    pieces: int


@dataclass(frozen=True)
class TaskClaimed:
    """Outcome of a ``Claim`` (a conditional write on the task's document)."""

    node: str
    outcome: Claim
    owner: str = ""


@dataclass(frozen=True)
class TaskProduced:
    """A production task's partial image and done status are stored."""

    node: str


@dataclass(frozen=True)
class TaskDone:
    """A task is said to be done (its event reached the reducer, or a reduction ended).
    Only a claim: it counts if the store agrees (``Observed.task_status``, ``stored``)."""

    node: str
    owner: str = ""


@dataclass(frozen=True)
class TaskFailed:
    """Carrying out a task raised for a reason that no retry can change (a scene error,
    which the execution's validation should have caught)."""

    node: str
    error: str


@dataclass(frozen=True)
class PassFailed:
    """A production pass really failed: its render raised (not for a reason that no
    retry can change: that is a ``TaskFailed``). ``generation``: the one the pass
    rendered; a copy that fails after its pass was already replaced (a later
    generation is observed) is not counted twice."""

    node: str
    error: str
    generation: int = 0


@dataclass(frozen=True)
class InputsLost:
    """Reducing ``node`` found the partials of ``missing`` (its children) gone."""

    node: str
    missing: tuple[str, ...]


@dataclass(frozen=True)
class DeadLettered:
    """A message exhausted its delivery attempts. ``node`` is None when unknown."""

    kind: Kind
    node: str | None
    attempts: int


@dataclass(frozen=True)
class Tick:
    """Time passed (a status read, a timer): a chance to resume what stalled."""


Event = (ExecutionCreated | TaskDelivered | PieceDelivered | TaskClaimed | TaskProduced | TaskDone
         | TaskFailed | PassFailed | InputsLost | DeadLettered | Tick)


@dataclass(frozen=True)
class Observed:
    """What the caller read before the step. Only the fields an event needs are set."""

    status: Status = Status.QUEUED  # the execution's
    now_s: float = 0.0  # seconds since the execution was created
    planned: bool = False
    published: bool = False
    #: TaskDone: how many children of the node's parent are done
    done_siblings: int = 0
    #: TaskDone, PassFailed, PieceDelivered, DeadLettered: the task's status, if it has
    #: a document
    task_status: Status | None = None
    #: TaskDone: whether the task's output exists (its partial; the root's: the image),
    #: read when something is about to use it (its parent's group is complete, or it is
    #: the root); None: not read
    stored: bool | None = None
    #: PassFailed, DeadLettered: the passes that failed before, (node, failures, error)
    failed: tuple[tuple[str, int, str], ...] = ()
    #: PassFailed, DeadLettered: the task's generation (how often it was replaced)
    generation: int = 0
    #: DeadLettered (produce): deliveries that reached a render (the task's attempts,
    #: over all its generations: a replacement gets no fresh count)
    attempts: int = 0
    #: DeadLettered (reduce): how often the parent's reduction was re-driven, and its
    #: status (running: a reducer took it and did not finish it)
    redrives: int = 0
    parent_status: Status | None = None
    #: Tick: running production tasks, (node, seconds running, already copied); TaskDone
    #: of a production task in the end game: the longest-running ones
    running: tuple[tuple[str, float, bool], ...] = ()
    #: Tick, TaskDone: the mean seconds of the execution's finished production tasks
    mean_done_s: float | None = None
    #: TaskDone of a production task: how many production tasks never started (None:
    #: not observed, so no end game)
    unstarted: int | None = None
    #: Tick: nodes not done yet (pending or running), those of them waiting in the
    #: farm's queue (not published: the farm's dispatch starts them), and seconds since
    #: any progress
    unfinished: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    idle_s: float = 0.0


@dataclass(frozen=True)
class Plan:
    """Static facts of one execution that the machine needs."""

    shape: planning.Shape
    admission_limit: int = 0
    stall_s: float = Settings.stall_s  # the deployment's, as its settings say
    #: Into how many pieces a speculative copy is cut (1: a whole copy): bands of the
    #: tile's rows, where the producer's pixels do not depend on how a tile is cut.
    copy_pieces: int = 1
    #: Farm admission: production tasks wait in the farm's queue and are published as
    #: its slots free (``francine.domain.fair_share``), instead of all at once or per
    #: ``admission_limit``.
    farm: bool = False
    #: Backup copies in the end game (off for an animation's frames before its last
    #: window: the frames after them keep the farm busy, and a copy is a whole render).
    endgame: bool = True


# --- actions --------------------------------------------------------------------------

@dataclass(frozen=True)
class WriteTasks:
    """Create every task document (existing ones untouched), then mark ``planned``;
    ``queued``: the production tasks get their fair-share tags and wait in the farm's
    queue."""

    queued: bool = False


@dataclass(frozen=True)
class Publish:
    """Publish these production tasks (by production index); ``first`` marks the
    execution ``published`` afterwards."""

    indices: tuple[int, ...]
    first: bool = False


@dataclass(frozen=True)
class Admit:
    """Farm admission: publish the farm's waiting tasks that its free slots take, the
    lowest fair-share ranks first (``fair_share.decide``); ``first`` marks the
    execution ``published`` before."""

    first: bool = False


@dataclass(frozen=True)
class Release:
    """Farm admission: production task ``node`` finished, so its slot (and those of its
    copy) is free; or, with ``piece``, that piece of its copy ended, so the piece's
    slot is. Admit the next."""

    node: str
    piece: int | None = None
    pieces: int = 1


@dataclass(frozen=True)
class ClaimTask:
    """Take a task (pending → running) for ``owner``: yields ``TaskClaimed``."""

    node: str
    kind: Kind
    owner: str
    lease_s: float


@dataclass(frozen=True)
class Produce:
    """Render the production task and store its partial and done status: yields
    ``TaskProduced`` (``TaskFailed`` for a scene error, ``PassFailed`` if the render
    raised otherwise)."""

    node: str


@dataclass(frozen=True)
class ProducePiece:
    """Render band ``piece`` of ``pieces`` of the production task ``node`` and store
    it; the caller that then finds every band stored assembles the task's partial and
    stores it as ``Produce`` does: yields ``TaskProduced`` then, nothing otherwise."""

    node: str
    piece: int
    pieces: int


@dataclass(frozen=True)
class Announce:
    """Publish the task event of a done production task."""

    node: str


@dataclass(frozen=True)
class Reduce:
    """Combine the children of ``node`` (held by ``owner``) and store the result and
    done status: yields ``TaskDone(node, owner)``. The root also encodes the final
    image."""

    node: str
    owner: str = ""


@dataclass(frozen=True)
class Advance:
    """The node was reduced earlier (perhaps by a try of ours that died afterwards):
    go on from it as if its event had just arrived; yields ``TaskDone(node, owner)``."""

    node: str
    owner: str = ""


@dataclass(frozen=True)
class MarkFailed:
    node: str
    error: str


@dataclass(frozen=True)
class Replace:
    """Record the failed pass of production task ``node`` and publish the task again
    as generation ``generation`` (a fresh seed); the failed output is never used. Only
    if the task is still of the generation before (compare-and-set: of two failures of
    one generation, one replaces it)."""

    node: str
    error: str
    generation: int


@dataclass(frozen=True)
class Speculate:
    """Publish a copy of the running production task ``node`` (once per task), cut
    into ``pieces`` bands of rows that as many instances render at once; the last
    piece stored assembles the task's partial. ``queued``: with farm admission, the
    copy waits in the farm's queue for slots, as any task."""

    node: str
    pieces: int = 1
    queued: bool = False


@dataclass(frozen=True)
class Redrive:
    """Set the reduction ``node`` back to pending (its holder may be dead) and publish
    the done event of ``child`` again, so that a reducer claims and reduces it."""

    node: str
    child: str


@dataclass(frozen=True)
class Reproduce:
    """A task's output is lost or never came: set it back to pending and produce it
    again (a production task is published, or with ``queued`` put back in the farm's
    queue: its slot was freed when it finished; a reduction is re-driven from its
    children)."""

    node: str
    queued: bool = False


@dataclass(frozen=True)
class Requeue:
    """Farm admission: a production task whose deliveries were all refused for
    capacity (none reached a render) waits in the farm's queue again, at its place."""

    node: str


@dataclass(frozen=True)
class End:
    """Move the execution to a final status (first caller wins)."""

    status: Status
    error: dict[str, Any] | None = None


Action = (WriteTasks | Publish | Admit | Release | ClaimTask | Produce | ProducePiece | Announce
          | Reduce | Advance | MarkFailed | Replace | Speculate | Redrive | Reproduce | Requeue
          | End)


def production_index(node: str) -> int | None:
    level, index = planning.parse_node(node)
    return index if level == 0 else None


def first_publication(plan: Plan) -> tuple[int, ...]:
    n = plan.shape.productions
    if plan.admission_limit:
        n = min(n, plan.admission_limit)
    return tuple(range(n))


# --- the transition function ----------------------------------------------------------

def step(plan: Plan, event: Event, seen: Observed) -> list[Action]:
    """The actions that ``event`` calls for, given what was observed. Pure."""
    if seen.status in FINAL:
        return []  # nothing is acted on after the end
    match event:
        case ExecutionCreated():
            return start_actions(plan, seen)
        case Tick():
            return tick_actions(plan, seen)
        case TaskDelivered(node=node, owner=owner):
            if production_index(node) is None:
                return []
            # A running task is taken again (lease 0): its holder may be dead, and the
            # same bytes land on the same object.
            return [ClaimTask(node, Kind.PRODUCE, owner, 0.0)]
        case PieceDelivered(node=node, piece=piece, pieces=pieces):
            if production_index(node) is None:
                return []
            # Rendered only while the task is unfinished (observed: ``task_status``);
            # with farm admission, the piece's slot is free once it ended.
            work: list[Action] = [ProducePiece(node, piece, pieces)] \
                if seen.task_status in (Status.PENDING, Status.RUNNING) else []
            return work + ([Release(node, piece, pieces)] if plan.farm else [])
        case TaskClaimed():
            return claimed(event)
        case TaskProduced(node=node):
            return [Announce(node)]
        case TaskDone():
            return done(plan, event, seen)
        case TaskFailed(node=node, error=error):
            return [MarkFailed(node, error),
                    End(Status.FAILED, {"code": "render_failed",
                                        "message": f"task {node} failed: {error}"})]
        case PassFailed(node=node, error=error, generation=generation):
            if generation < seen.generation or seen.task_status in TASK_FINAL:
                return []  # a copy of a pass replaced already, or of a task another ended
            return pass_failed(plan, node, error, seen)
        case InputsLost(node=node, missing=missing):
            # Set the reduction back, then produce each lost input again: when the
            # last one is done its event claims the reduction as any other would.
            return [again(plan, n) for n in (node, *missing)]
        case DeadLettered():
            return dead_lettered(plan, event, seen)
    assert_never(event)


def start_actions(plan: Plan, seen: Observed) -> list[Action]:
    actions: list[Action] = []
    if not seen.planned:
        actions.append(WriteTasks(queued=plan.farm))
    if not seen.published:
        actions.append(Admit(first=True) if plan.farm
                       else Publish(first_publication(plan), first=True))
    return actions


def tick_actions(plan: Plan, seen: Observed) -> list[Action]:
    """Resume an execution whose creating request died before it was published; else
    admit its tasks waiting in the farm's queue (a dispatch lost with a dead instance
    is made up for), copy its stragglers, and re-drive it if it stopped moving."""
    if not seen.published:
        return start_actions(plan, seen) if seen.now_s >= STALLED_S else []
    admit: list[Action] = [Admit()] if plan.farm and seen.waiting else []
    return admit + speculations(plan, seen) + redrives(plan, seen)


def claimed(event: TaskClaimed) -> list[Action]:
    production = production_index(event.node) is not None
    if event.outcome == Claim.WON:
        return [Produce(event.node)] if production else [Reduce(event.node, event.owner)]
    if event.outcome == Claim.DONE:
        # Finished earlier: its event may have been lost, say it again.
        return [Announce(event.node)] if production else [Advance(event.node, event.owner)]
    return []  # held by another caller, or not a task of that kind


def done(plan: Plan, event: TaskDone, seen: Observed) -> list[Action]:
    """A task's event: counted only if the store says the task is done, and acted on
    (its parent reduced, the execution ended) only with its output stored. A task not
    done (a duplicate published early, a stale event of a task set back since) is not
    counted: its true event comes when it is done. A done task whose output is gone is
    produced again."""
    if seen.task_status != Status.DONE:
        return []
    if seen.stored is False:
        return [again(plan, event.node)]
    if event.node == plan.shape.root and seen.stored is None:
        return []  # the execution ends done only on its image seen stored
    return endgame(plan, event.node, seen) + done_actions(plan, event.node, event.owner,
                                                          seen.done_siblings)


def again(plan: Plan, node: str) -> Reproduce:
    """Produce ``node`` again; a production task that finished gave its farm slot
    back, so it waits in the queue again."""
    return Reproduce(node, queued=plan.farm and production_index(node) is not None)


def done_actions(plan: Plan, node: str, owner: str, done_siblings: int) -> list[Action]:
    """After ``node`` is done, given how many children of its parent are done.

    With farm admission, a production task's completion frees its slot for the next
    queued task; with an admission limit K, production task i's completion admits
    task i + K, so that at most K production tasks of the execution are in flight.
    """
    shape = plan.shape
    if node == shape.root:
        return [End(Status.DONE)]
    actions: list[Action] = []
    index = production_index(node)
    k = plan.admission_limit
    if index is not None and plan.farm:
        actions.append(Release(node))
    elif index is not None and k and index + k < shape.productions:
        actions.append(Publish((index + k,)))
    up = planning.parent(shape, node)
    if up is not None and done_siblings >= len(planning.children(shape, up)):
        actions.append(ClaimTask(up, Kind.REDUCE, owner or up, REDUCE_LEASE_S))
    return actions


def passes(shape: planning.Shape) -> int:
    """The execution's passes, counted per tile: what its image is the mean of."""
    return shape.passes * shape.tiles


def clip(text: str, limit: int = 500) -> str:
    """An error as an execution's message quotes it: a traceback stays readable."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def budget(plan: Plan) -> int:
    """How many failures fail the execution: 10% of its passes, at least 1."""
    return max(1, math.ceil(FAILURE_BUDGET * passes(plan.shape)))


def pass_failed(plan: Plan, node: str, error: str, seen: Observed) -> list[Action]:
    """Replace the failed pass, or fail the execution once the budget is spent or the
    same error has failed ``POISON_TASKS`` tasks (a poison scene)."""
    failures = sum(n for _, n, _ in seen.failed) + 1
    # Poison: the same error from POISON_TASKS tasks, one of them failing with it again
    # after its fresh seed (a flaky instance does not hit the same task twice).
    alike = {n: k for n, k, e in seen.failed if e == error}
    alike[node] = alike.get(node, 0) + 1
    # (an execution of fewer tasks: every one of them)
    poison = len(alike) >= min(POISON_TASKS, plan.shape.productions) \
        and max(alike.values()) >= 2
    if failures < budget(plan) and not poison:
        return [Replace(node, error, seen.generation + 1)]
    named = [(node, error)] + [(n, e) for n, _, e in seen.failed if n != node]
    listed = "; ".join(f"{n}: {clip(e)}" for n, e in named[:5])
    more = f" (and {len(named) - 5} more)" if len(named) > 5 else ""
    why = (f"{len(alike)} tasks failed with the same error" if poison and failures < budget(plan)
           else f"{failures} failures of {passes(plan.shape)} passes (the budget is "
                f"{budget(plan)})")
    return [MarkFailed(node, error), End(Status.FAILED, {
        "code": "task_failed", "message": f"{why}: production task {listed}{more}"})]


def dead_lettered(plan: Plan, event: DeadLettered, seen: Observed) -> list[Action]:
    """A message ran out of deliveries: a production task's, or a task event's."""
    if event.kind == Kind.PRODUCE:
        return dead_production(plan, event.node, seen)
    return dead_event(plan, event, seen)


def dead_production(plan: Plan, node: str | None, seen: Observed) -> list[Action]:
    """Deliveries of a production task ran out. Counted against the task only if
    renders took it again and again (its ``attempts``, over all its generations)."""
    index = None if node is None else production_index(node)
    if node is None or index is None or seen.task_status in (None, Status.DONE):
        return []  # no such task, or it is done: its acknowledgement was lost
    if seen.task_status == Status.PENDING:
        # No delivery reached a render (each was refused for capacity): this never
        # counts against the task.
        return [Requeue(node)] if plan.farm else [Publish((index,))]
    if seen.attempts < 2:
        # One delivery reached a render whose worker died; the others were refused for
        # capacity: produced again, never counted (it keeps its farm slot).
        return [Reproduce(node)]
    # Its worker died, or failed, on delivery after delivery.
    # (One error text for all such deaths: the poison rule compares them.)
    return pass_failed(plan, node, "undeliverable: every delivery that reached a render "
                       "failed", seen)


def dead_event(plan: Plan, event: DeadLettered, seen: Observed) -> list[Action]:
    """Deliveries of a task event ran out: re-driven (the parent finds its inputs, or
    has them produced again). A reduction that a reducer took and that keeps failing
    after REDRIVE_LIMIT re-drives is broken itself (e.g. its bucket is gone), not its
    bookkeeping: the execution fails. One that no reducer took (the events found no
    reducer) is re-driven UNTAKEN_REDRIVE_LIMIT times."""
    node, up = event.node, None
    if node is not None:
        try:
            up = planning.parent(plan.shape, node)
        except ValueError:
            up = None
    limit = REDRIVE_LIMIT if seen.parent_status == Status.RUNNING else UNTAKEN_REDRIVE_LIMIT
    if up is not None and node is not None and seen.redrives < limit:
        return [Redrive(up, node)]
    return [End(Status.FAILED, {
        "code": "task_failed",
        "message": f"reduction after task {node} failed after {event.attempts} delivery "
                   f"attempts, re-driven {seen.redrives} times"})]


def speculations(plan: Plan, seen: Observed) -> list[Action]:
    """A copy of each running production task that runs far longer than its peers."""
    limit = SPECULATE_FIRST_S if seen.mean_done_s is None \
        else max(SPECULATE_MIN_S, SPECULATE_FACTOR * seen.mean_done_s)
    return [Speculate(node, plan.copy_pieces, plan.farm) for node, running_s, copied
            in seen.running
            if not copied and production_index(node) is not None and running_s > limit]


def in_endgame(plan: Plan, node: str, seen: Observed) -> bool:
    """Whether the completion of ``node`` frees an instance that nothing else needs:
    a production task, no admission to make, none left unstarted."""
    index = production_index(node)
    if index is None or seen.unstarted != 0 or seen.mean_done_s is None:
        return False
    k = plan.admission_limit
    return not (k and index + k < plan.shape.productions)


def endgame(plan: Plan, node: str, seen: Observed) -> list[Action]:
    """A backup copy of a task that lags, on the instance that ``node``'s completion
    freed (at most one per completion). A task lags if it has run longer than
    ``ENDGAME_FACTOR`` × the finished mean (it straggles), or, when copies are cut into
    pieces, if it started so late that a copy in pieces ends well before it (it has run
    less than ``LATE_FRACTION`` of the mean: its instance crashed and it started again,
    or it waited for a cold start). The completions that ask at once spread over the
    candidates (stragglers, the longest-running first, then late starters, the latest
    first), so that neither kind starves the other."""
    mean, index = seen.mean_done_s, production_index(node)
    if not plan.endgame or not in_endgame(plan, node, seen) or mean is None \
            or index is None:
        return []
    limit = max(SPECULATE_MIN_S, ENDGAME_FACTOR * mean)
    candidates = sorted({(running_s, n) for n, running_s, copied in seen.running
                         if not copied and n != node and production_index(n) is not None},
                        reverse=True)
    lagging = [n for running_s, n in candidates if running_s > limit]
    if plan.copy_pieces > 1:  # late starters too, the latest first
        lagging += [n for running_s, n in reversed(candidates)
                    if running_s < LATE_FRACTION * mean]
    if not lagging:
        return []
    return [Speculate(lagging[index % len(lagging)], plan.copy_pieces, plan.farm)]


def redrives(plan: Plan, seen: Observed) -> list[Action]:
    """For an execution that stopped moving: publish its unfinished production tasks
    again (no more than its admission limit allows in flight; none of those waiting in
    the farm's queue, only those holding a slot) and re-drive each unfinished reduction
    whose children are all done. With every task done, the reducer that stored the
    image died before it ended the execution: the root is re-driven (its reducer finds
    it done and ends the execution)."""
    if seen.idle_s < plan.stall_s:
        return []
    if not seen.unfinished:
        root = plan.shape.root
        return [Redrive(root, planning.children(plan.shape, root)[-1])]
    unfinished = set(seen.unfinished)
    productions = sorted(i for n in unfinished - set(seen.waiting)
                         if (i := production_index(n)) is not None)
    if plan.admission_limit:
        productions = productions[:plan.admission_limit]
    actions: list[Action] = [Publish(tuple(productions))] if productions else []
    for node in sorted(unfinished):
        if production_index(node) is None:
            below = planning.children(plan.shape, node)
            if not unfinished.intersection(below):
                actions.append(Redrive(node, below[-1]))
    return actions


# --- the loop the handlers share ------------------------------------------------------

@dataclass
class Trace:
    """What one drive did, for logs, tests and the simulator."""

    events: list[Event] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)


def drive(plan: Plan, events: Iterable[Event], observe: Callable[[Event], Observed],
          carry_out: Callable[[Action], Event | None]) -> Trace:
    """Step each event with a fresh observation and carry out its actions in order;
    an action that yields an event queues it. Returns the trace."""
    trace = Trace()
    queue = list(events)
    while queue:
        event = queue.pop(0)
        trace.events.append(event)
        for action in step(plan, event, observe(event)):
            trace.actions.append(action)
            follow = carry_out(action)
            if follow is not None:
                queue.append(follow)
    return trace
