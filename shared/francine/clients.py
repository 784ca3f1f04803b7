"""Creating the Google Cloud clients, once per process, never at import time.

The client libraries find the emulators through FIRESTORE_EMULATOR_HOST,
PUBSUB_EMULATOR_HOST and STORAGE_EMULATOR_HOST; Cloud Storage additionally needs
anonymous credentials there, since no application default credentials exist locally.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from francine.config import Settings


@dataclass
class Clients:
    firestore: object
    publisher: object
    storage: object


def make_clients(settings: Settings) -> Clients:
    from google.cloud import firestore, pubsub_v1, storage

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


@dataclass
class Adapters:
    settings: Settings
    store: object
    bus: object
    blobs: object
    #: The time the handlers record (simulated in the scale simulator).
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))


def make_adapters(settings: Settings) -> Adapters:
    """Adapters around fresh clients (which read the emulator hosts, if any, from the
    environment now)."""
    from francine.adapters.blobs import Blobs
    from francine.adapters.bus import Bus
    from francine.adapters.store import Store
    from francine.local import trace

    clients = make_clients(settings)
    return trace.install(Adapters(settings, Store(clients.firestore),
                                  Bus(clients.publisher, settings),
                                  Blobs(clients.storage, settings)))


@functools.cache
def adapters_from_env() -> Adapters:
    """The adapters of this process, configured from the environment (cached)."""
    return make_adapters(Settings.from_env())
