"""The wiring: the Google adapters of a process, made once and never at import time.

Entry points (``functions/``, the local stack, the CLI's administration) call
``adapters_from_env``; services and handlers only receive the ``francine.ports.Adapters``
it returns. How the Google clients are made, here or against the emulators, is
``francine.adapters.cloud``'s business: nothing in this module names a Google library.
Whoever wants every port call wrapped (the local stack's tracing) names a function in
``FRANCINE_ADAPTER_HOOK`` (``module:function``, taking and returning ``Adapters``).
"""

from __future__ import annotations

import functools
import importlib
import os

from francine.base.config import Settings
from francine.ports import Adapters
from francine.ports import protocols as ports

#: ``module:function`` applied to every process's adapters (the local stack's tracing).
HOOK_ENV = "FRANCINE_ADAPTER_HOOK"


def make_adapters(settings: Settings) -> Adapters:
    """Adapters around fresh clients (which read the emulator hosts, if any, from the
    environment now)."""
    from francine.adapters.cloud import google_adapters

    store, bus, blobs, outside = google_adapters(settings)
    return hooked(Adapters(settings, store, bus, blobs, services=run_services,
                           outside=outside))


def hooked(ad: Adapters) -> Adapters:
    """``ad`` through the hook that ``FRANCINE_ADAPTER_HOOK`` names, if any."""
    spec = os.environ.get(HOOK_ENV, "")
    if not spec:
        return ad
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(module), function)(ad)


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
