"""The reducer: a CloudEvent function fed by Pub/Sub (task events and dead letters)."""

import functools
import logging

import functions_framework

from francine import errors
from francine.envelope import decode

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("francine.reducer")


@functools.cache
def _reducer():
    from francine.clients import adapters_from_env
    from francine.reducer import Reducer

    return Reducer(adapters_from_env())


@functions_framework.cloud_event
def reducer(event):
    try:
        message = decode(event.data)
        outcome = _reducer().handle(message)
        log.info("message %s: %s", message.id, outcome)
    except (errors.BadRequest, errors.PermanentError) as e:
        # Retrying cannot help: acknowledge, and say why in the log.
        log.error("dropped event %s: %s", event["id"], e)
    # Anything else propagates: the function answers 500 and Pub/Sub redelivers.
