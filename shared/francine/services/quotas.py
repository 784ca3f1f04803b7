"""Quotas per user (docs/api.md, "Quotas"): executions in flight, tasks in flight, bytes of
stored resources, render CPU-seconds per day. Over one, a ``429`` with ``Retry-After``;
a render whose estimate alone exceeds a budget is a ``400`` that says so. Nothing
already accepted is dropped: the checks run only before something new is accepted.

The defaults (``Settings``, FRANCINE_QUOTA_*) and why:

- 20 executions in flight: a person watching renders has a handful running; scripts
  that go wider should ask for more (and each in-flight execution is polled).
- 5,000 tasks in flight: half of the per-execution cap (10,000), so that one user can
  run a large render and small ones beside it, but cannot fill the Pub/Sub backlog that
  every user shares.
- 20 GiB of stored resources: scenes with textures and meshes of a few GiB each, a few
  sessions at a time (Cloud Storage standard, about $0.40 a month).
- 36,000 CPU-seconds a day (10 CPU-hours, about $0.90 of Cloud Run vCPU time): far more
  than interactive use, far less than the 300 CPU-hours that one unbounded request could
  start before quotas.

An administrator may give one user other figures (``francine users set-quota``): the
user document's ``quotas`` map overrides these defaults.

The counts come from the store's queries over the user's executions (in Firestore,
collection-group queries on ``executions``), so that they stay right whatever process
ends an execution.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from francine.base import errors
from francine.base.clock import now
from francine.ports import Adapters
from francine.ports.protocols import ExecutionUsage

DAY = dt.timedelta(days=1)


def cpu_estimate(width: int, height: int, passes: int, pixel_seconds: float) -> float:
    return float(width) * height * passes * pixel_seconds


def in_flight(ad: Adapters, user: str) -> list[ExecutionUsage]:
    return [d for d in ad.store.executions_in_flight(user) if not d.get("parent")]


def finished_today(ad: Adapters, user: str) -> list[ExecutionUsage]:
    return [d for d in ad.store.executions_finished_since(user, now() - DAY)
            if not d.get("parent")]


NAMES = ("executions_in_flight", "tasks_in_flight", "stored_bytes", "cpu_seconds_per_day")


@dataclasses.dataclass(frozen=True)
class Limits:
    quota_executions_in_flight: int
    quota_tasks_in_flight: int
    quota_stored_bytes: int
    quota_cpu_seconds_per_day: float


def limits(ad: Adapters, user: str) -> Limits:
    """The deployment's quotas with the user's own overrides."""
    docs = ad.store.users_by("id", user, limit=1)
    own = (docs[0][1].get("quotas") or {}) if docs else {}
    values = {}
    for f in dataclasses.fields(Limits):
        default = getattr(ad.settings, f.name)
        value = own.get(f.name.removeprefix("quota_"))
        values[f.name] = type(default)(value) if isinstance(value, int | float) else default
    return Limits(**values)


def admission(ad: Adapters, user: str) -> Callable:
    """The check that ``executions.start`` runs before it records a new execution:
    ``admit(shape, pixel_seconds, frames, window)`` raises or returns fields for the
    document. An animation is one execution: its CPU estimate is every frame's, its
    tasks in flight those of the ``window`` frames that render at once."""
    s = limits(ad, user)

    def admit(shape, pixel_seconds: float, frames: int = 1, window: int = 1) -> dict:
        estimate = frames * cpu_estimate(shape.width, shape.height, shape.passes,
                                         pixel_seconds)
        budget = s.quota_cpu_seconds_per_day
        what = f"these {frames} frames are" if frames > 1 else "this render is"
        if estimate > budget:
            raise errors.BadRequest(
                f"{what} estimated at {estimate:.3g} CPU-seconds, more than your "
                f"daily budget of {budget:.3g}: render fewer pixels, passes or frames",
                "over_budget")
        needed = shape.total_tasks * window
        if needed > s.quota_tasks_in_flight:
            raise errors.BadRequest(
                f"this render needs {needed} tasks, more than your "
                f"{s.quota_tasks_in_flight} tasks in flight: use larger tiles or fewer "
                "passes", "over_budget")
        running = in_flight(ad, user)
        if len(running) >= s.quota_executions_in_flight:
            raise errors.TooManyRequests(
                f"at most {s.quota_executions_in_flight} executions in flight", 30)
        tasks = sum(_total_tasks(d) for d in running)
        if tasks + needed > s.quota_tasks_in_flight:
            raise errors.TooManyRequests(
                f"at most {s.quota_tasks_in_flight} tasks in flight: {tasks} are, this "
                f"render needs {needed}", 30)
        done = finished_today(ad, user)
        spent = sum(_cpu(d) for d in done) + sum(d.get("cpu_estimate") or 0 for d in running)
        if spent + estimate > budget:
            oldest = min((d["finished"] for d in done), default=now())
            retry = max(60, int((oldest + DAY - now()).total_seconds()))
            raise errors.TooManyRequests(
                f"your daily budget of {budget:.0f} CPU-seconds is spent ({spent:.0f} used or "
                f"reserved, this render needs about {estimate:.0f})", retry)
        return {"cpu_estimate": estimate}

    return admit


def _total_tasks(doc: ExecutionUsage) -> int:
    """An execution's tasks; an animation's, those of the frames it renders at once."""
    from francine.domain import planning

    if not doc.get("shape"):
        return 0
    return planning.Shape.from_dict(doc["shape"]).total_tasks * (doc.get("frame_window") or 1)


def _cpu(doc: ExecutionUsage) -> float:
    cpu = ((doc.get("summary") or {}).get("time") or {}).get("cpu")
    return float(cpu) if cpu is not None else float(doc.get("cpu_estimate") or 0)


# --- stored bytes -------------------------------------------------------------------------

def stored_bytes(ad: Adapters, user: str) -> int:
    """Bytes of the resources attached to the user's sessions (each session counts what
    it holds; the same file in two sessions counts twice)."""
    return sum(r["size"] for session in ad.store.list_sessions(user)
               for r in ad.store.list_resources(session.id))


def storage_room(ad: Adapters, user: str) -> int:
    """Bytes the user may still store; a 429 when there is no room at all."""
    quota = limits(ad, user).quota_stored_bytes
    room = quota - stored_bytes(ad, user)
    if room <= 0:
        raise over_storage(quota)
    return room


def over_storage(quota: int) -> errors.TooManyRequests:
    return errors.TooManyRequests(
        f"your stored resources would exceed the quota of {quota} bytes: delete sessions "
        "you no longer need", 3600, "quota_exceeded")
