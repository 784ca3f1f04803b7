"""The scheduler: one pure state machine from events to actions.

Modelled on dask's worker state machine: frozen event records come in together with
what the caller observed (``Observed``: the execution's status, a count, a claim's
outcome, the time), and ``step`` returns the actions to carry out. No SDK, no clock, no
I/O: the api, the render worker and the reducer observe, call ``step`` and carry out;
``drive`` is the loop they share, where carrying out an action may yield the next
event (a claim yields ``TaskClaimed``, a finished reduction ``TaskDone``).

The life of a task:

    TaskDelivered ─▶ Claim ─▶ TaskClaimed(won) ─▶ Produce ─▶ TaskProduced ─▶ Announce
    (task event) TaskDone ─▶ Admit (next production task) + Claim(parent) when the
    parent's children are all done ─▶ TaskClaimed(won) ─▶ Reduce ─▶ TaskDone(parent) …
    TaskDone(root) ─▶ End(done)

Exactly-once reduction rests on two facts the store guarantees: a task is done only
after its output is stored, and only one caller wins a claim. Duplicated, reordered or
redelivered events are therefore harmless: a second claim observes ``held`` or
``done``. Once the execution is final, every event maps to no action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from francine import planning
from francine.records import FINAL, Claim, Kind, Status

#: An execution still unpublished this long after its creation lost the request that
#: was publishing it (an instance died and the client did not retry with its key).
STALLED_S = 30.0
#: A reduction claim older than this is presumed dead (its holder was killed).
REDUCE_LEASE_S = 900.0


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
    """A task is known to be done (its event reached the reducer, or a reduction ended)."""

    node: str
    owner: str = ""


@dataclass(frozen=True)
class TaskFailed:
    """Carrying out a task raised. Permanent failures cannot get better by retrying."""

    node: str
    error: str
    permanent: bool


@dataclass(frozen=True)
class DeadLettered:
    """A message exhausted its delivery attempts. ``node`` is None when unknown."""

    kind: Kind
    node: str | None
    attempts: int


@dataclass(frozen=True)
class Tick:
    """Time passed (a status read, a timer): a chance to resume what stalled."""


@dataclass(frozen=True)
class Cancelled:
    """The user cancelled the execution (or deleted its session)."""


Event = (ExecutionCreated | TaskDelivered | TaskClaimed | TaskProduced | TaskDone
         | TaskFailed | DeadLettered | Tick | Cancelled)


@dataclass(frozen=True)
class Observed:
    """What the caller read before the step. Only the fields an event needs are set."""

    status: Status = Status.QUEUED  # the execution's
    now_s: float = 0.0  # seconds since the execution was created
    planned: bool = False
    published: bool = False
    #: TaskDone: how many children of the node's parent are done
    done_siblings: int = 0
    #: DeadLettered: the task's status, if it has a document
    task_status: Status | None = None


@dataclass(frozen=True)
class Plan:
    """Static facts of one execution that the machine needs."""

    shape: planning.Shape
    admission_limit: int = 0


# --- actions --------------------------------------------------------------------------

@dataclass(frozen=True)
class WriteTasks:
    """Create every task document (existing ones untouched), then mark ``planned``."""


@dataclass(frozen=True)
class Publish:
    """Publish these production tasks (by production index); ``first`` marks the
    execution ``published`` afterwards."""

    indices: tuple[int, ...]
    first: bool = False


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
    ``TaskProduced`` (or ``TaskFailed`` if rendering raised)."""

    node: str


@dataclass(frozen=True)
class Announce:
    """Publish the task event of a done production task."""

    node: str


@dataclass(frozen=True)
class Reduce:
    """Combine the children of ``node`` (held by this caller) and store the result and
    done status: yields ``TaskDone(node)``. The root also encodes the final image."""

    node: str


@dataclass(frozen=True)
class Advance:
    """The node was reduced earlier (perhaps by a try of ours that died afterwards):
    go on from it as if its event had just arrived; yields ``TaskDone(node)``."""

    node: str


@dataclass(frozen=True)
class MarkFailed:
    node: str
    error: str


@dataclass(frozen=True)
class End:
    """Move the execution to a final status (first caller wins)."""

    status: Status
    error: dict | None = None


@dataclass(frozen=True)
class Retry:
    """Leave the message unacknowledged so that the bus delivers it again."""

    reason: str


Action = (WriteTasks | Publish | ClaimTask | Produce | Announce | Reduce | Advance | MarkFailed
          | End | Retry)


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
            if not seen.published and seen.now_s >= STALLED_S:
                return start_actions(plan, seen)
            return []
        case Cancelled():
            return [End(Status.CANCELLED)]
        case TaskDelivered(node=node, owner=owner):
            if production_index(node) is None:
                return []
            # A running task is taken again (lease 0): its holder may be dead, and the
            # same bytes land on the same object.
            return [ClaimTask(node, Kind.PRODUCE, owner, 0.0)]
        case TaskClaimed(node=node, outcome=outcome):
            production = production_index(node) is not None
            if outcome == Claim.WON:
                return [Produce(node)] if production else [Reduce(node)]
            if outcome == Claim.DONE:
                # Finished earlier: its event may have been lost, say it again.
                return [Announce(node)] if production else [Advance(node)]
            return []  # held by another caller, or not a task of that kind
        case TaskProduced(node=node):
            return [Announce(node)]
        case TaskDone(node=node, owner=owner):
            return done_actions(plan, node, owner, seen.done_siblings)
        case TaskFailed(node=node, error=error, permanent=permanent):
            if not permanent:
                return [Retry(error)]
            return [MarkFailed(node, error),
                    End(Status.FAILED, {"code": "render_failed",
                                        "message": f"task {node} failed: {error}"})]
        case DeadLettered(kind=kind, node=node, attempts=attempts):
            if kind == Kind.PRODUCE and seen.task_status == Status.DONE:
                return []  # the task is done: its acknowledgement was lost
            actions: list[Action] = []
            if kind == Kind.PRODUCE and node is not None and seen.task_status is not None:
                actions.append(MarkFailed(node, f"undeliverable after {attempts} attempts"))
                what = f"production task {node}"
            else:
                what = f"reduction after task {node}"
            actions.append(End(Status.FAILED, {
                "code": "task_failed",
                "message": f"{what} failed after {attempts} delivery attempts"}))
            return actions
    raise TypeError(f"not a scheduler event: {event!r}")


def start_actions(plan: Plan, seen: Observed) -> list[Action]:
    actions: list[Action] = []
    if not seen.planned:
        actions.append(WriteTasks())
    if not seen.published:
        actions.append(Publish(first_publication(plan), first=True))
    return actions


def done_actions(plan: Plan, node: str, owner: str, done_siblings: int) -> list[Action]:
    """After ``node`` is done, given how many children of its parent are done.

    With an admission limit K, production task i's completion admits task i + K, so
    that at most K production tasks of the execution are in flight at once.
    """
    shape = plan.shape
    if node == shape.root:
        return [End(Status.DONE)]
    actions: list[Action] = []
    index = production_index(node)
    k = plan.admission_limit
    if index is not None and k and index + k < shape.productions:
        actions.append(Publish((index + k,)))
    up = planning.parent(shape, node)
    if up is not None and done_siblings >= len(planning.children(shape, up)):
        actions.append(ClaimTask(up, Kind.REDUCE, owner or up, REDUCE_LEASE_S))
    return actions


def parent_to_count(plan: Plan, event: Event) -> str | None:
    """The parent whose done children the caller must count before stepping ``event``
    (``Observed.done_siblings``)."""
    if isinstance(event, TaskDone):
        return planning.parent(plan.shape, event.node)
    return None


# --- the loop the handlers share ------------------------------------------------------

@dataclass
class Trace:
    """What one drive did, for logs, tests and the simulator."""

    events: list[Event] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)

    def count(self, kind: type) -> int:
        return sum(isinstance(a, kind) for a in self.actions)


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
