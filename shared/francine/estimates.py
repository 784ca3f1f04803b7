"""The planner's per-pixel time estimate for an execution.

Every producer estimates from the scene alone (``pixel_seconds``); a producer that can
do better from its resources' records and the measured times of the session's finished
executions (``estimate_pixel_seconds``) gets them here, so that the execution code only
makes one call.
"""

from __future__ import annotations

from francine.clients import Adapters
from francine.records import Status


def pixel_seconds(ad: Adapters, sid: str, producer, scene: dict, resources: list[dict]) -> float:
    refine = getattr(producer, "estimate_pixel_seconds", None)
    if refine is None:
        return producer.pixel_seconds(scene)
    history = [ex for ex in ad.store.list_executions(sid) if ex.status == Status.DONE]
    return refine(scene, resources, history)
