"""The api's execution start, the render worker and the reducer over the in-memory
twins (whose semantics the conformance suite checks against the emulators): folding
passes changes the number of tasks, never the image; shuffled and duplicated
deliveries change nothing."""

from __future__ import annotations

import dataclasses
import random

import pytest

from francine.base.config import Settings
from francine.domain import planning
from francine.domain.records import Session
from francine.handlers.reducer import Reducer
from francine.handlers.worker import Worker
from francine.services import executions
from francine.twins import pump, twin_adapters

SCENE = {"width": 48, "height": 32, "nao_samples": 3}


def render(min_task_s: float, parallel: int, order=None, fmt: str = "png"):
    # A farm of 2 instances: folding may leave as few as 2 tasks.
    ad = twin_adapters(dataclasses.replace(Settings(), min_task_s=min_task_s,
                                           max_render_instances=2))
    ad.store.create_session(Session("s", "u", "ao", fmt, SCENE))
    ex, _ = executions.start(ad, "u", "s", {"parallel": parallel, "tile": 16},
                             idempotency_key="same-seeds")
    pump(ad, Worker(ad), Reducer(ad), order)
    ex = ad.store.execution("s", ex.id)
    assert ex.status == "done", ex.error
    shape = planning.Shape.from_dict(ex.shape)
    return ad.blobs.get_result(ex.result), shape, ad


@pytest.mark.parametrize("fmt", ["png", "exr"])
def test_folding_passes_gives_the_same_image_bytes(fmt):
    one, shape1, _ = render(0.0, 7, fmt=fmt)
    folded, shape7, _ = render(1e6, 7, fmt=fmt)  # every pass of a tile in one task
    assert shape1.fold == 1 and shape1.productions == 6 * 7
    assert shape7.fold == 7 and shape7.productions == 6
    assert folded == one


def test_shuffled_and_duplicated_deliveries_change_nothing():
    reference, shape, _ = render(0.0, 5)
    rng = random.Random(7)

    def chaos(batch):
        batch = batch + [d for d in batch if rng.random() < 0.3]  # duplicates
        rng.shuffle(batch)
        return batch

    image, _, ad = render(0.0, 5, order=chaos)
    assert image == reference
    # every reduction ran once: one claim each, and one write of its object
    [(_, eid)] = ad.store.executions
    for node in planning.all_nodes(shape):
        if node.startswith("r"):
            assert ad.store.get_task("s", eid, planning.task_id(eid, node)).attempts == 1
            if node != shape.root:
                assert len(ad.store.meter.writes[ad.blobs.partial_name("s", eid, node)]) == 1
