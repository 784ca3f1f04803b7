"""A render worker given a TTL reads an execution at most once per TTL, on the
twins with a clock of the test's own: back-to-back tasks of one execution share a read,
and a cancel reaches the worker's next task once the read is that old."""

from __future__ import annotations

import dataclasses
import datetime as dt

from francine.base.config import Settings
from francine.domain.records import Session, Status
from francine.handlers.worker import Worker
from francine.services import executions
from francine.twins import Meter, twin_adapters

TTL_S = 1.0


def test_an_execution_is_read_once_per_ttl_and_a_cancel_reaches_the_next_task():
    now = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    meter = Meter(clock=lambda: now[0])
    ad = twin_adapters(dataclasses.replace(Settings(), min_task_s=0.0), meter)
    ad.store.create_session(Session("s", "u", "ao", "png",
                                    {"width": 16, "height": 16, "nao_samples": 1}))
    ex, _ = executions.start(ad, "u", "s", {"parallel": 4})
    deliveries = ad.bus.pull("render", 10)
    assert len(deliveries) == 4
    w = Worker(ad)
    assert w.execution_ttl_s > 0  # by default back-to-back tasks share a read
    w.execution_ttl_s = TTL_S

    def handle(i: int) -> tuple[str, int]:
        reads = meter.ops["read"]
        outcome = w.handle(deliveries[i].message)
        return outcome, meter.ops["read"] - reads

    # the execution and the claim's read (whether a copy stored the task first is
    # decided by the create-only write of its partial, not by another read)
    assert handle(0) == ("rendered", 2)
    now[0] += dt.timedelta(seconds=TTL_S / 2)
    assert handle(1) == ("rendered", 1)  # no execution read: the claim's only
    executions.end(ad, ad.store.execution("s", ex.id), Status.CANCELLED)
    now[0] += dt.timedelta(seconds=TTL_S)
    assert handle(2) == ("skipped: execution gone or ended", 1)
    # an ended execution is read again each time, never served from the cache
    assert handle(3) == ("skipped: execution gone or ended", 1)
    assert ad.store.get_task("s", ex.id, deliveries[3].message.payload["task_id"]) \
        .status == Status.PENDING
