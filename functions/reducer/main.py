"""The reducer: a CloudEvent function fed by Pub/Sub (task events and dead letters)."""

import functools
import logging

import flask
import functions_framework

from francine.base import errors, logs
from francine.domain.envelope import decode

logs.setup()
log = logging.getLogger("francine.reducer")


@functools.cache
def _reducer():
    from francine.handlers.reducer import Reducer
    from francine.tools.wiring import adapters_from_env

    return Reducer(adapters_from_env())


def _warm_reducer() -> None:
    """Build the reducer (its clients, its imports) at module load, not in the first
    event; where it cannot be built yet, the first event builds it and reports why."""
    try:
        _reducer()
    except Exception as e:  # noqa: BLE001 (said again by the first event)
        log.warning("reducer not built at start: %s", e)


_warm_reducer()


@functions_framework.cloud_event
def reducer(event):
    trace = logs.trace_of(flask.request.headers) if flask.has_request_context() else None
    try:
        message = decode(event.data)
    except errors.BadRequest as e:
        with logs.context(trace=trace):
            log.error("malformed event %s, acknowledged: %s", event["id"], e)
        return
    with logs.context(trace=trace, **logs.ids_of(message.payload)):
        try:
            chaos = _chaos()
            point = chaos.point()
            chaos.crash("before", point, message.id)
            outcome = _reducer().handle(message)
            chaos.crash("after", point, message.id)
            if not message.dead_lettered and chaos.duplicate(message.id):
                _duplicate(message)
            log.info("message %s: %s", message.id, outcome)
        except (errors.BadRequest, errors.PermanentError) as e:
            # Retrying cannot help: acknowledge, and say why in the log.
            log.error("dropped event %s: %s", event["id"], e)
    # Anything else propagates: the function answers 500 and Pub/Sub redelivers.


@functools.cache
def _chaos():
    from francine.base.config import Settings
    from francine.services.chaos import Chaos

    return Chaos(Settings.from_env())


def _duplicate(message) -> None:
    """Publish a task event once more (fault injection: a duplicated delivery)."""
    from francine.adapters.bus import TASK_DONE

    p = message.payload
    if message.type == TASK_DONE:
        _reducer().ad.bus.publish_done(p["session_id"], p["execution_id"], p["node"])
