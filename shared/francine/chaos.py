"""Fault injection for the render service and the reducer (off by default).

Like the original Francine's chaos monkey, but aimed at what the pipeline must survive:
with ``FRANCINE_CHAOS_CRASH_RATE`` = p, a push request fails with a 500 (Pub/Sub
redelivers it) before its work with probability p, and after its work but before the
acknowledgement with probability p (so the work is done twice); with
``FRANCINE_CHAOS_DUPLICATE_RATE`` = d, a handled message is published again with
probability d (Pub/Sub's at-least-once delivery, made frequent). Decisions are random per
delivery; nothing is injected while both rates are 0.
"""

from __future__ import annotations

import logging
import random

from francine.config import Settings

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

    def crash(self, where: str, message_id: str) -> None:
        """Raise ``InjectedCrash`` with probability crash_rate."""
        if self.crash_rate > 0 and self.rng.random() < self.crash_rate:
            log.warning("chaos: crash %s message %s", where, message_id)
            raise InjectedCrash(f"injected crash {where} message {message_id}")

    def duplicate(self) -> bool:
        """Whether to publish the message just handled once more."""
        return self.duplicate_rate > 0 and self.rng.random() < self.duplicate_rate
