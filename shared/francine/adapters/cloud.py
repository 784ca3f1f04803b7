"""Making the Google Cloud clients, once per process and never at import time, and the
adapters over them: the one module that knows how a client is built, here or against
the emulators, so that the code that wires a process (``francine.tools.wiring``, the local
stack, ``francine users``) names no Google library.

The client libraries find the emulators through FIRESTORE_EMULATOR_HOST,
PUBSUB_EMULATOR_HOST and STORAGE_EMULATOR_HOST; Cloud Storage additionally needs
anonymous credentials there, since no application default credentials exist locally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from francine.adapters.blobs import Blobs
from francine.adapters.bus import Bus
from francine.adapters.external import Internet
from francine.adapters.store import Store
from francine.base.config import Settings


@dataclass
class Clients:
    firestore: Any
    publisher: Any
    storage: Any


def make_clients(settings: Settings) -> Clients:
    # Imported as modules: pubsub_v1 and storage carry no type information, which mypy
    # accepts that way only (google.cloud is a namespace package).
    import google.cloud.pubsub_v1 as pubsub_v1
    import google.cloud.storage as storage
    from google.cloud import firestore

    storage_kwargs = {}
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        storage_kwargs["credentials"] = AnonymousCredentials()
    # Messages are few and latency matters more than batching: flush after 5 ms.
    batch = pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.005)
    return Clients(
        firestore=firestore.Client(project=settings.project, database=settings.database),
        publisher=pubsub_v1.PublisherClient(batch_settings=batch),
        storage=storage.Client(project=settings.project, **storage_kwargs),
    )


def google_adapters(settings: Settings) -> tuple[Store, Bus, Blobs, Internet]:
    """The store, bus, blobs and the outside world over fresh clients (which read the
    emulator hosts, if any, from the environment now)."""
    clients = make_clients(settings)
    return (Store(clients.firestore), Bus(clients.publisher, settings),
            Blobs(clients.storage, settings), Internet(clients.storage))


def firestore_store(project: str, database: str = "(default)") -> Store:
    """A store on its own, for administration (``francine users``, the local stack's
    first user): no Pub/Sub or Cloud Storage client is made for it."""
    from google.cloud import firestore

    return Store(firestore.Client(project=project, database=database))


class PubSubAdmin:
    """Topics and subscriptions, created as the local stack wires them (in the cloud the
    Pulumi program does, with the same policies from ``francine.domain.topology``)."""

    def __init__(self, project: str):
        import google.cloud.pubsub_v1 as pubsub_v1

        self.project = project
        self._publisher = pubsub_v1.PublisherClient()
        self._subscriber = pubsub_v1.SubscriberClient()

    def topic_path(self, topic: str) -> str:
        return str(self._publisher.topic_path(self.project, topic))

    def create_topic(self, topic: str) -> None:
        self._publisher.create_topic(name=self.topic_path(topic))

    def create_push_subscription(self, name: str, topic: str, endpoint: str,
                                 ack_deadline_s: int, min_backoff_s: int, max_backoff_s: int,
                                 dead_letter_topic: str, max_delivery_attempts: int) -> None:
        """A push subscription with its retry back-off and dead-letter policy."""
        import google.cloud.pubsub_v1 as pubsub_v1
        from google.protobuf import duration_pb2

        retry = pubsub_v1.types.RetryPolicy(
            minimum_backoff=duration_pb2.Duration(seconds=min_backoff_s),
            maximum_backoff=duration_pb2.Duration(seconds=max_backoff_s))
        self._subscriber.create_subscription(request={
            "name": self._subscriber.subscription_path(self.project, name),
            "topic": self.topic_path(topic),
            "push_config": {"push_endpoint": endpoint},
            "ack_deadline_seconds": ack_deadline_s, "retry_policy": retry,
            "dead_letter_policy": {
                "dead_letter_topic": self.topic_path(dead_letter_topic),
                "max_delivery_attempts": max_delivery_attempts}})

    def create_held_subscription(self, name: str, topic: str, retention_s: int) -> None:
        """A pull subscription nobody reads, that keeps messages ``retention_s``."""
        from google.protobuf import duration_pb2

        self._subscriber.create_subscription(request={
            "name": self._subscriber.subscription_path(self.project, name),
            "topic": self.topic_path(topic),
            "message_retention_duration": duration_pb2.Duration(seconds=retention_s)})
