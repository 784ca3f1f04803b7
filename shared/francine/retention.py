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

from francine.adapters import translated
from francine.adapters.store import now
from francine.clients import Adapters


@dataclasses.dataclass
class Collected:
    partials: int = 0
    results: int = 0
    resources: int = 0


def collect(ad: Adapters, partials_after_s: float = 600.0, results_after_days: float = 30.0,
            grace_s: float = 3600.0) -> Collected:
    out = Collected()
    t = now()
    s = ad.settings
    client = ad.blobs.client
    with translated("garbage collection"):
        finals: dict[tuple[str, str], bool] = {}
        for blob in client.list_blobs(s.partials_bucket, prefix="partials/"):
            parts = blob.name.split("/")
            if len(parts) < 4:
                continue
            key = (parts[1], parts[2])
            if key not in finals:
                ex = ad.store.execution(*key)
                finals[key] = ex is None or (
                    ex.final and ex.finished is not None
                    and (t - ex.finished).total_seconds() >= partials_after_s)
            if finals[key]:
                out.partials += delete(blob)
        sessions: dict[str, bool] = {}
        for blob in client.list_blobs(s.results_bucket, prefix="results/"):
            sid = blob.name.split("/")[1] if blob.name.count("/") >= 2 else ""
            if sid not in sessions:
                sessions[sid] = ad.store.get_session(sid) is not None
            old = blob.time_created and t - blob.time_created > dt.timedelta(
                days=results_after_days)
            if old or not sessions[sid]:
                out.results += delete(blob)
        # Every session's resource records (the store's Firestore client, read only).
        referenced = {snap.to_dict().get("sha256") for snap in ad.store._db.collection_group(
            "resources").select(["sha256"]).stream()}
        for blob in client.list_blobs(s.resources_bucket, prefix="resources/"):
            sha = blob.name.removeprefix("resources/")
            young = blob.time_created and (t - blob.time_created).total_seconds() < grace_s
            if sha not in referenced and not young:
                out.resources += delete(blob)
    return out


def delete(blob) -> bool:
    """Delete ``blob``; False if it was gone already (a session's deletion or another
    collection took it between the listing and now: what was wanted)."""
    from google.api_core import exceptions as gexc

    try:
        blob.delete()
    except gexc.NotFound:
        return False
    return True
