"""Cloud Run Admin API: the render service's service-level minimum instances, the one
thing the warm-up sets (``francine.services.warmup``; the port is
``francine.ports.protocols.Services``).

An update touches ``scaling.min_instance_count`` of the service and nothing of its
revision template: updating the template would roll out a new revision.
"""

from __future__ import annotations

import functools
from typing import Any

from francine.adapters import translated

#: The one field an update touches (service-level scaling: no new revision).
FIELD = "scaling.min_instance_count"


def update_request(service: str, count: int) -> Any:
    """The Admin API request that sets ``service``'s minimum instances to ``count``."""
    from google.cloud import run_v2
    from google.protobuf import field_mask_pb2

    return run_v2.UpdateServiceRequest(
        service=run_v2.Service(name=service,
                               scaling=run_v2.ServiceScaling(min_instance_count=count)),
        update_mask=field_mask_pb2.FieldMask(paths=[FIELD]))


class CloudRunServices:
    """The ``Services`` port over ``run_v2.ServicesClient``, made at first use: only a
    deployment that names a render service ever calls it (never the local stack, which
    has no credentials for it)."""

    @functools.cached_property
    def _client(self) -> Any:
        from google.cloud import run_v2

        return run_v2.ServicesClient()

    def min_instances(self, service: str) -> int:
        with translated(f"read {service}"):
            return int(self._client.get_service(name=service).scaling.min_instance_count)

    def set_min_instances(self, service: str, count: int) -> None:
        """Start the update; its long-running operation is not awaited (the instances
        come up while the tasks are published)."""
        with translated(f"set {FIELD} of {service}"):
            self._client.update_service(request=update_request(service, count))
