"""The adapters of a process, made once and never at import time.

``Adapters`` is what every handler receives: the store, the bus and the blobs typed by
their ports (``francine.ports``), so that the code above them works the same over the
Google adapters (``make_adapters``) and over the twins (``francine.twins``). How the
Google clients are made, here or against the emulators, is ``francine.adapters.cloud``'s
business: nothing in this module names a Google library.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from francine import ports
from francine.config import Settings


@dataclass
class Adapters:
    settings: Settings
    store: ports.Store
    bus: ports.Bus
    blobs: ports.Blobs
    #: The time the handlers record (simulated in the scale simulator).
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))


def make_adapters(settings: Settings) -> Adapters:
    """Adapters around fresh clients (which read the emulator hosts, if any, from the
    environment now)."""
    from francine.adapters.cloud import google_adapters
    from francine.local import trace

    store, bus, blobs = google_adapters(settings)
    return trace.install(Adapters(settings, store, bus, blobs))


@functools.cache
def adapters_from_env() -> Adapters:
    """The adapters of this process, configured from the environment (cached)."""
    return make_adapters(Settings.from_env())


@functools.cache
def run_services() -> ports.Services:
    """Cloud Run's services, for the warm-up (its client is made at first use: only a
    deployment with a render service calls it)."""
    from francine.adapters.run import CloudRunServices

    return CloudRunServices()
