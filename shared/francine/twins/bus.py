"""The bus twin: topics, subscriptions, at-least-once delivery.

Kept from Pub/Sub (and checked by the conformance suite): every subscription of a
topic gets every message; an unacknowledged (nacked) message is delivered again with
its delivery attempt counted; after ``max_attempts`` it goes to the subscription's
dead-letter topic with the attributes Pub/Sub adds; a subscription hands out at most
``max_in_flight`` messages at once (the push concurrency of its endpoint).
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from dataclasses import dataclass, field

from francine.domain.envelope import (
    DEAD_LETTER_ATTRIBUTE,
    EXECUTION_STATUS,
    PRODUCE,
    TASK_DONE,
    Message,
    task_message,
)
from francine.ports.protocols import Fields, Gate
from francine.twins.meter import Meter

PRODUCE_TOPIC = "produce"
EVENTS_TOPIC = "events"
STATUS_TOPIC = "execution-events"
#: The most push requests the Pub/Sub emulator has in flight on one subscription
#: (``max_in_flight`` of a twin subscription that stands for one on the emulator).
EMULATOR_PUSH_CONCURRENCY = 2


@dataclass
class Subscription:
    name: str
    dead_letter_topic: str | None = None
    max_attempts: int = 5
    max_in_flight: int | None = None
    queue: deque = field(default_factory=deque)  # (message, attempt)
    in_flight: dict[str, tuple[Message, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    ack_id: str
    message: Message
    attempt: int


class BusTwin:
    """The bus port (``francine.ports.protocols.Bus``) in memory, with the topics and
    subscriptions that Pub/Sub would hold."""

    def __init__(self, meter: Meter | None = None):
        self.meter = meter or Meter()
        self.topics: dict[str, list[Subscription]] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._ids = itertools.count(1)

    def subscribe(self, topic: str, name: str, dead_letter_topic: str | None = None,
                  max_attempts: int = 5, max_in_flight: int | None = None) -> Subscription:
        sub = Subscription(name, dead_letter_topic, max_attempts, max_in_flight)
        self.topics.setdefault(topic, []).append(sub)
        self.subscriptions[name] = sub
        return sub

    def publish(self, topic: str, payload: dict, **attributes: str) -> str:
        self.meter.op("publish")
        mid = str(next(self._ids))
        # serialised, as on the wire: a subscriber cannot share the publisher's objects
        message = Message(mid, json.loads(json.dumps(payload)), dict(attributes))
        for sub in self.topics.get(topic, []):
            sub.queue.append((message, 1))
        return mid

    def pull(self, subscription: str, max_messages: int = 1) -> list[Delivery]:
        sub = self.subscriptions[subscription]
        out: list[Delivery] = []
        while sub.queue and len(out) < max_messages and (
                sub.max_in_flight is None or len(sub.in_flight) < sub.max_in_flight):
            message, attempt = sub.queue.popleft()
            ack_id = f"{subscription}:{next(self._ids)}"
            sub.in_flight[ack_id] = (message, attempt)
            # As Pub/Sub: the attempt is reported only where a dead-letter policy is set.
            out.append(Delivery(ack_id, message, attempt if sub.dead_letter_topic else 0))
        return out

    def ack(self, ack_id: str) -> None:
        self.subscriptions[ack_id.split(":")[0]].in_flight.pop(ack_id, None)

    def nack(self, ack_id: str) -> bool:
        """Give a message back: delivered again, or dead-lettered after its last
        attempt. True if it will be delivered again on this subscription."""
        sub = self.subscriptions[ack_id.split(":")[0]]
        entry = sub.in_flight.pop(ack_id, None)
        if entry is None:
            return False
        message, attempt = entry
        if sub.dead_letter_topic and attempt >= sub.max_attempts:
            self.publish(sub.dead_letter_topic, message.payload, **message.attributes,
                         **{DEAD_LETTER_ATTRIBUTE: sub.name,
                            "CloudPubSubDeadLetterSourceDeliveryCount": str(attempt)})
            return False
        sub.queue.append((message, attempt + 1))
        return True

    # the Bus port
    def publish_tasks(self, session_id: str, execution_id: str,
                      tasks: list[tuple[int, str] | tuple[int, str, str]]) -> None:
        for t in tasks:
            self.publish(PRODUCE_TOPIC, task_message(session_id, execution_id, *t[1:]),
                         type=PRODUCE)

    def publish_done(self, session_id: str, execution_id: str, node: str) -> None:
        self.publish(EVENTS_TOPIC, {"session_id": session_id, "execution_id": execution_id,
                                    "node": node}, type=TASK_DONE)

    def publish_status(self, message: Fields) -> None:
        """An execution status for other systems (schema: francine.services.events)."""
        self.publish(STATUS_TOPIC, message, type=EXECUTION_STATUS)

    def render_gate(self) -> Gate:
        """Open once the production topic has a subscription, as the adapter's."""
        from francine.ports.readiness import RenderGate

        return RenderGate(self.subscribed, [PRODUCE_TOPIC])

    def subscribed(self, topic: str) -> bool:
        return bool(self.topics.get(topic))
