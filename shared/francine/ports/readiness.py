"""Whether production tasks can be delivered: the api's guard before it starts a render.

A Pub/Sub message published to a topic with no subscription is dropped. The cloud
deployment creates the render service, and with it the production topic's push
subscription, only once its image exists (the second ``pulumi up``, infra/README.md);
until then the api must refuse renders instead of losing them. It asks Pub/Sub whether
every production topic has a subscription: a yes is kept for the life of the process,
a no is asked again after ``recheck_s``, and the caller is told to retry after that.

The question itself is the bus adapter's (``subscribed``): the gate holds the policy
only, so the twin's bus has the same gate over its own subscriptions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from francine.base import errors
from francine.ports.protocols import Bus, Gate

log = logging.getLogger("francine.readiness")

#: What the api answers in ``Retry-After`` while the render service does not exist.
RETRY_AFTER_S = 30


class RenderServiceMissing(errors.TransientError):
    """503: production tasks would be published to a topic nobody reads."""

    code = "render_service_missing"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class RenderGate:
    """``subscribed(topic)``: whether a topic has a subscription; NotFound when the
    topic does not exist, Forbidden when the deployment may not ask."""

    def __init__(self, subscribed: Callable[[str], bool], topics: list[str],
                 recheck_s: int = RETRY_AFTER_S, clock: Callable[[], float] = time.monotonic):
        self._ask = subscribed
        self._topics = list(topics)
        self._recheck_s = recheck_s
        self._clock = clock
        self._lock = threading.Lock()
        self._ready = False
        self._checked_at: float | None = None
        self._missing: list[str] = []

    def _subscribed(self, topic: str) -> bool:
        try:
            return self._ask(topic)
        except errors.NotFound:  # no topic yet: nothing is deployed
            return False
        except errors.Forbidden as e:
            # A deployment without the grant (roles/pubsub.viewer on the topic) must not
            # refuse every render: it publishes as it did before the check existed.
            log.warning("cannot list the subscriptions of %s (%s): not checked", topic, e)
            return True

    def check(self) -> None:
        """Return if renders can be taken; raise ``RenderServiceMissing`` otherwise."""
        with self._lock:
            if self._ready:
                return
            now = self._clock()
            stale = self._checked_at is None or now - self._checked_at >= self._recheck_s
            if stale:
                self._checked_at = now
                self._missing = [t for t in self._topics if not self._subscribed(t)]
                self._ready = not self._missing
                if self._ready:
                    return
            missing = self._missing
        raise RenderServiceMissing(
            f"the render service is not deployed yet: nothing subscribes to "
            f"{', '.join(t.rsplit('/', 1)[-1] for t in missing)}, so renders are not "
            f"accepted; retry in {self._recheck_s} s", self._recheck_s)


def for_bus(bus: Bus) -> Gate:
    """The gate of ``bus`` (``Bus.render_gate``)."""
    return bus.render_gate()
