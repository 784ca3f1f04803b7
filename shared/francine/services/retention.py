"""Retention: what storage keeps, and for how long. In the cloud, bucket lifecycle rules
do the age-based part; ``collect`` does all of it, locally (the api runs it every
``gc_interval_s``) and anywhere by hand (``francine gc``).

- partials of an execution: deleted once it is final (and ``partials_after_s`` passed:
  a reducer may still be reading them), or when its session is gone;
- results: deleted ``results_after_days`` after they were written, or with their session;
- resources: content-addressed and shared; an object that no session's resource record
  names any more (its sessions were deleted) is deleted after ``grace_s`` (an attach
  stores the object just before it records it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from francine.base.clock import now
from francine.ports import Adapters


@dataclasses.dataclass
class Collected:
    partials: int = 0
    results: int = 0
    resources: int = 0


def collect(ad: Adapters, partials_after_s: float = 600.0, results_after_days: float = 30.0,
            grace_s: float = 3600.0) -> Collected:
    """Delete what nothing needs any more; an object that another deletion took between
    the listing and its own is not counted (it is gone, as wanted)."""
    out = Collected()
    t = now()
    blobs = ad.blobs
    finals: dict[tuple[str, str], bool] = {}
    for obj in blobs.list_objects("partials", "partials/"):
        parts = obj.name.split("/")
        if len(parts) < 4:
            continue
        key = (parts[1], parts[2])
        if key not in finals:
            ex = ad.store.execution(*key)
            finals[key] = ex is None or (
                ex.final and ex.finished is not None
                and (t - ex.finished).total_seconds() >= partials_after_s)
        if finals[key]:
            out.partials += blobs.delete_object("partials", obj.name)
    sessions: dict[str, bool] = {}
    for obj in blobs.list_objects("results", "results/"):
        sid = obj.name.split("/")[1] if obj.name.count("/") >= 2 else ""
        if sid not in sessions:
            sessions[sid] = ad.store.get_session(sid) is not None
        old = obj.created and t - obj.created > dt.timedelta(days=results_after_days)
        if old or not sessions[sid]:
            out.results += blobs.delete_object("results", obj.name)
    referenced = ad.store.referenced_resources()  # every session's resource records
    for obj in blobs.list_objects("resources", "resources/"):
        sha = obj.name.removeprefix("resources/")
        young = obj.created and (t - obj.created).total_seconds() < grace_s
        if sha not in referenced and not young:
            out.resources += blobs.delete_object("resources", obj.name)
    return out
