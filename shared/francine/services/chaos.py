"""Fault injection for the render service and the reducer (off by default).

Like the original Francine's chaos monkey, but aimed at what the pipeline must survive:
with ``FRANCINE_CHAOS_CRASH_RATE`` = p, a push request fails with a 500 (Pub/Sub
redelivers it) with probability p, half the time before its work and half the time after
its work but before the acknowledgement (the work is then found done, or done again); with
``FRANCINE_CHAOS_DUPLICATE_RATE`` = d, a handled message is published again with
probability d (Pub/Sub's at-least-once delivery, made frequent). Decisions are random per
delivery; nothing is injected while both rates are 0.
"""

from __future__ import annotations

import logging
import random

from francine.base.config import Settings

log = logging.getLogger("francine.chaos")


class InjectedCrash(RuntimeError):
    """A failure injected on purpose: the request answers 500 and is delivered again."""


class Chaos:
    def __init__(self, settings: Settings, rng: random.Random | None = None):
        self.crash_rate = settings.chaos_crash_rate
        self.duplicate_rate = settings.chaos_duplicate_rate
        self.rng = rng or random.Random()

    @property
    def on(self) -> bool:
        return self.crash_rate > 0 or self.duplicate_rate > 0

    def point(self) -> str | None:
        """Where this delivery crashes: "before" or "after" its work (equally likely),
        with probability crash_rate in all; None otherwise."""
        if self.crash_rate > 0 and self.rng.random() < self.crash_rate:
            return self.rng.choice(("before", "after"))
        return None

    @staticmethod
    def crash(where: str, point: str | None, message_id: str) -> None:
        """Raise ``InjectedCrash`` when this delivery's ``point`` is ``where``."""
        if point == where:
            log.warning("chaos: crash %s the work of message %s", where, message_id)
            raise InjectedCrash(f"injected crash {where} the work of message {message_id}")

    def duplicate(self, message_id: str) -> bool:
        """Whether to publish the message just handled once more (logged when so)."""
        if self.duplicate_rate > 0 and self.rng.random() < self.duplicate_rate:
            log.warning("chaos: publish message %s again", message_id)
            return True
        return False
