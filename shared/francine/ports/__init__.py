"""The ports: the protocols of the store, the bus, the blobs and Cloud Run's services
(``protocols``), the ``Adapters`` bundle that services and handlers receive, the stored
shape of records and objects every implementation shares (``layout``), and the render
gate's policy (``readiness``). ``francine.adapters`` implements them over Google Cloud,
``francine.twins`` in memory; ``francine.tools.wiring`` builds the Google ones.
May import the domain and the base."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from francine.base import errors
from francine.base.clock import now
from francine.base.config import Settings
from francine.ports import protocols


def _no_services() -> protocols.Services:
    raise RuntimeError("no Cloud Run services here: the warm-up needs a render service")


class _NoOutside:
    """Where nothing outside Francine is reachable (the twins' world)."""

    def _refuse(self, *args: object) -> NoReturn:
        raise errors.BadRequest("url: nothing outside Francine is reachable here",
                                "fetch_failed")

    open_url = post = resolve_public = _refuse


@dataclass
class Adapters:
    """What every service and handler receives: the store, the bus and the blobs typed by
    their ports, so that the code above them works the same over the Google adapters and
    over the twins."""

    settings: Settings
    store: protocols.Store
    bus: protocols.Bus
    blobs: protocols.Blobs
    #: The time the handlers record (simulated in the scale simulator).
    clock: Callable[[], dt.datetime] = field(default=now)
    #: Cloud Run's services, made at first use (only the warm-up calls it).
    services: Callable[[], protocols.Services] = field(default=_no_services)
    #: External files and webhooks.
    outside: protocols.Outside = field(default_factory=_NoOutside)
