"""In-memory twins of the store, bus and blob ports (``francine.ports.protocols``).

They keep the semantics the scheduler depends on, checked by the same conformance
suite as the emulator-backed adapters (``tests/conformance/``). Every operation goes
through ``Meter``: it counts operations (per kind and per document or object, with
their times) and may charge a latency, which is how the scale simulator models the
platform. ``clock`` gives the time (wall time by default; simulated in the simulator).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from francine.twins.meter import Meter

if TYPE_CHECKING:
    from francine.base.config import Settings
    from francine.ports import Adapters


def twin_adapters(settings: Settings | None = None, meter: Meter | None = None,
                  dead_letter_attempts: int = 5) -> Adapters:
    """Adapters over fresh twins, with the subscriptions of the pipeline: ``render``
    on the production topic, ``reduce`` on the task events, both dead-lettering to
    ``dead-letters`` (read by the reducer too, as in the deployment), and ``notify`` on
    the status topic (the reducer: webhooks, an animation's next frames)."""
    from francine.base.config import Settings
    from francine.ports import Adapters
    from francine.twins.blobs import BlobsTwin
    from francine.twins.bus import EVENTS_TOPIC, PRODUCE_TOPIC, STATUS_TOPIC, BusTwin
    from francine.twins.store import StoreTwin

    meter = meter or Meter()
    bus = BusTwin(meter)
    bus.subscribe(PRODUCE_TOPIC, "render", "dead-letters", dead_letter_attempts)
    bus.subscribe(EVENTS_TOPIC, "reduce", "dead-letters", dead_letter_attempts)
    bus.subscribe("dead-letters", "dead-letters")
    bus.subscribe(STATUS_TOPIC, "notify")
    return Adapters(settings or Settings(), StoreTwin(meter), bus, BlobsTwin(meter),
                    clock=meter.clock)


def pump(ad, worker, reducer, order=None, limit: int = 1_000_000) -> int:
    """Deliver the twins' pending messages to the worker and the reducer until none is
    left (``order(deliveries)`` may reorder each batch); a handler that raises leaves
    its message unacknowledged, so it is delivered again. Returns deliveries made."""
    from francine.base import errors

    bus = ad.bus
    made = 0
    handlers = {"render": worker.handle, "reduce": reducer.handle,
                "dead-letters": reducer.handle, "notify": reducer.handle}
    while made < limit:
        batch = [(name, d) for name in handlers for d in bus.pull(name, 1 << 30)]
        if not batch:
            return made
        if order is not None:
            batch = order(batch)
        for name, d in batch:
            made += 1
            try:
                handlers[name](d.message)
            except errors.PermanentError:
                pass  # recorded; acknowledged
            except Exception:
                bus.nack(d.ack_id)
                continue
            bus.ack(d.ack_id)
    return made
