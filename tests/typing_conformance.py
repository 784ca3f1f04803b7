"""mypy's half of the conformance suite: the Google adapters and the twins have every
method of their port, with its signature.

``tests/conformance/`` checks what the methods do, on the emulators and on the twins;
this module checks that they are all there, typed as the ports say, so that a method
added to a port and forgotten in an implementation (or given other parameters) fails
``.ci/typecheck`` instead of the first caller that reaches it. It is only type-checked:
nothing here runs, and pytest does not collect it.
"""

from __future__ import annotations

from francine.adapters.blobs import Blobs
from francine.adapters.bus import Bus
from francine.adapters.run import CloudRunServices
from francine.adapters.store import Store
from francine.ports import Adapters
from francine.ports import protocols as ports
from francine.twins.blobs import BlobsTwin
from francine.twins.bus import BusTwin
from francine.twins.store import StoreTwin


def google_adapters(store: Store, bus: Bus, blobs: Blobs, services: CloudRunServices
                    ) -> tuple[ports.Store, ports.Bus, ports.Blobs, ports.Services]:
    return store, bus, blobs, services


def twins(store: StoreTwin, bus: BusTwin, blobs: BlobsTwin
          ) -> tuple[ports.Store, ports.Bus, ports.Blobs]:
    return store, bus, blobs


def adapters(ad: Adapters) -> tuple[ports.Store, ports.Bus, ports.Blobs]:
    """What the handlers receive is typed by the ports."""
    return ad.store, ad.bus, ad.blobs
