"""What a render worker does per task outside the render, on the twins: the port
operations of one task, in the order its correctness needs (the partial stored, then
the task marked done, then its event published: the reducer takes the event as a claim
that it checks against the store), and no store read whose answer is already in hand.
The times are measured by ``bench/pipeline_overhead.py`` (docs/performance.md)."""

from __future__ import annotations

import dataclasses

from francine.base.config import Settings
from francine.domain import planning
from francine.domain.envelope import Message, task_message
from francine.domain.records import Claim, Session, Status
from francine.handlers.worker import Worker
from francine.services import executions
from francine.twins import Meter, twin_adapters


def world(meter: Meter):
    ad = twin_adapters(dataclasses.replace(Settings(), min_task_s=0.0), meter)
    ad.store.create_session(Session("s", "u", "ao", "png",
                                    {"width": 48, "height": 40, "nao_samples": 1}))
    ex, _ = executions.start(ad, "u", "s", {"parallel": 3, "tile": 16})
    return ad, ad.store.execution("s", ex.id)


def recorded(ad) -> list[str]:
    """Record each call to the store, bus and blobs of ``ad`` (wrapped in place), those
    that a twin makes inside another of its calls apart."""
    calls: list[str] = []
    depth = [0]
    for prefix in ("store", "bus", "blobs"):
        port = getattr(ad, prefix)
        for attr in dir(type(port)):
            fn = getattr(port, attr)
            if attr.startswith("_") or not callable(fn):
                continue

            def wrapped(*args, _fn=fn, _name=f"{prefix}.{attr}", **kwargs):
                if not depth[0]:
                    calls.append(_name)
                depth[0] += 1
                try:
                    return _fn(*args, **kwargs)
                finally:
                    depth[0] -= 1

            setattr(port, attr, wrapped)
    return calls


def test_a_task_reads_what_it_needs_once_and_announces_after_storing():
    ad, ex = world(Meter())
    delivery = ad.bus.pull("render", 1)[0]
    calls = recorded(ad)
    assert Worker(ad).handle(delivery.message) == "rendered"
    assert calls == [
        "store.execution",      # the execution (the worker's TTL is 0 by default)
        "store.claim_task",     # the claim, in one transaction with the execution
        "blobs.put_partial",    # the partial, created once
        "store.update_task",    # then done, with its times
        "bus.publish_done",     # then its event
    ]


def test_the_piece_that_assembles_a_copy_reads_only_the_other_bands():
    meter = Meter()
    ad, ex = world(meter)
    node = planning.node_name(0, 1)
    tid = planning.task_id(ex.id, node)
    assert ad.store.claim_task("s", ex.id, tid, "original", 0.0)[0] == Claim.WON
    worker, pieces = Worker(ad), 4
    for j in range(pieces):
        before = dict(meter.ops)
        outcome = worker.handle(Message(f"m{j}", task_message("s", ex.id, tid,
                                                              f"{j}/{pieces}"), {}))
        batches = {k: n - before.get(k, 0) for k, n in meter.ops.items()
                   if k.startswith("download_batch:") and n != before.get(k, 0)}
        # each piece reads the bands of the others, never its own it holds
        assert batches == {f"download_batch:{pieces - 1}": 1}
        assert outcome == ("rendered" if j == pieces - 1 else f"stored piece {j} of {pieces}")
    assert ad.store.get_task("s", ex.id, tid).status == Status.DONE
