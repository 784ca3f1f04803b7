"""Pub/Sub: production tasks out to the render service, task events to the reducer.

Messages carry references (session, execution, task), never pixels. The message
attribute ``type`` says what a message is, so that a dead-lettered message still tells
its handler what failed.
"""

from __future__ import annotations

import json

from francine.adapters import translated
from francine.base import errors
from francine.base.config import Settings
from francine.domain.envelope import EXECUTION_STATUS, PRODUCE, TASK_DONE, task_message
from francine.ports.protocols import Fields, Gate


def produce_topics(settings: Settings) -> list[str]:
    """Topic ids of production tasks. One in the cloud, where Cloud Run's autoscaling
    spreads the pushes; the local stack shards them over one topic per worker, because
    the emulator pushes at most 2 requests at a time per subscription (and ignores
    subscription filters)."""
    if settings.produce_shards <= 1:
        return [settings.produce_topic]
    return [f"{settings.produce_topic}-{i}" for i in range(settings.produce_shards)]


class Bus:
    """The bus port (``francine.ports.protocols.Bus``) over Pub/Sub."""

    def __init__(self, publisher, settings: Settings):
        self._publisher = publisher
        self._produce = [publisher.topic_path(settings.project, t)
                         for t in produce_topics(settings)]
        self._events = publisher.topic_path(settings.project, settings.events_topic)
        self._status = publisher.topic_path(settings.project, settings.status_topic)

    def render_gate(self) -> Gate:
        """Whether production tasks would reach a subscriber (``francine.ports.readiness``)."""
        from francine.ports.readiness import RenderGate

        return RenderGate(self.subscribed, self._produce)

    def subscribed(self, topic: str) -> bool:
        """Whether the topic (a full path) has a subscription. NotFound if there is no
        such topic; Forbidden without the grant to list them (roles/pubsub.viewer)."""
        from google.api_core import exceptions as gexc

        with translated(f"list the subscriptions of {topic}"):
            try:
                return any(True for _ in self._publisher.list_topic_subscriptions(
                    request={"topic": topic}))
            except gexc.PermissionDenied as e:
                raise errors.Forbidden(f"list the subscriptions of {topic}: {e.message}",
                                       "permission_denied") from e

    def _publish(self, kind: str, messages: list[tuple[str, dict]]) -> None:
        if len(messages) == 1:
            # One message (a task event, a status): one Publish call now, rather than
            # the batcher's wait for more and its hand-over to a commit thread, which
            # sit on a task's critical path.
            from google.pubsub_v1 import PublisherClient, PubsubMessage

            ((topic, payload),) = messages
            message = PubsubMessage(data=json.dumps(payload).encode(), attributes={"type": kind})
            with translated(f"publish {kind}"):
                # The generated client's call, which the batching client wraps.
                PublisherClient.publish(self._publisher, topic=topic, messages=[message],
                                        timeout=60)
            return
        with translated(f"publish {kind}"):
            futures = [self._publisher.publish(topic, json.dumps(p).encode(), type=kind)
                       for topic, p in messages]
            for f in futures:
                f.result(timeout=60)

    def publish_tasks(self, session_id: str, execution_id: str,
                      tasks: list[tuple[int, str] | tuple[int, str, str]]) -> None:
        """Publish production tasks given as (shard index, task id) or, for a piece
        of a speculative copy, (shard index, task id, "piece/pieces")."""
        shards = self._produce
        self._publish(PRODUCE, [
            (shards[t[0] % len(shards)], task_message(session_id, execution_id, *t[1:]))
            for t in tasks])

    def publish_done(self, session_id: str, execution_id: str, node: str) -> None:
        self._publish(TASK_DONE, [(self._events, {
            "session_id": session_id, "execution_id": execution_id, "node": node})])

    def publish_status(self, message: Fields) -> None:
        """An execution status for other systems (schema: francine.services.events)."""
        self._publish(EXECUTION_STATUS, [(self._status, message)])
