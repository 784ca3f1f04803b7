"""Warm before the rush: keep enough render instances started for a large execution on a
cold farm, and let the farm fall back to zero when it is idle.

Cloud Run starts instances as requests arrive; a thousand tasks landing on a cold
service wait for a thousand cold starts, spread over tens of seconds. Setting the
service's minimum instance count (service-level scaling, no new revision) when a large
execution starts asks Cloud Run to start them all at once and keep them through the
execution; setting it back to 0 when no execution is running stops paying for them.

``plan`` is the pure policy; ``Warmer`` applies it through the Cloud Run Admin API
(``google.cloud.run_v2.ServicesClient``, injected: tests give it a recording client).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("francine.warmup")


@dataclass(frozen=True)
class Policy:
    #: The service's max instances: never ask for more.
    max_instances: int
    #: Executions with fewer pending production tasks than this do not warm anything:
    #: Cloud Run's own scaling serves them as quickly.
    threshold: int = 50
    #: Fraction of the pending tasks to keep instances for (1: one per task).
    fraction: float = 1.0


def plan(policy: Policy, pending_tasks: int) -> int:
    """Minimum instances to keep for ``pending_tasks`` production tasks not yet done
    over the farm's running executions: 0 when idle or small, else as many instances as
    the tasks can use, up to the maximum."""
    if pending_tasks <= 0 or pending_tasks < policy.threshold:
        return 0
    return min(policy.max_instances, max(1, round(pending_tasks * policy.fraction)))


class Warmer:
    """Applies the plan to one Cloud Run service; changes only when the value changes."""

    def __init__(self, client, service: str, policy: Policy):
        self.client, self.service, self.policy = client, service, policy
        self.current: int | None = None

    def apply(self, pending_tasks: int) -> int:
        want = plan(self.policy, pending_tasks)
        if want == self.current:
            return want
        from google.cloud import run_v2
        from google.protobuf import field_mask_pb2

        service = run_v2.Service(name=self.service,
                                 scaling=run_v2.ServiceScaling(min_instance_count=want))
        self.client.update_service(request=run_v2.UpdateServiceRequest(
            service=service, update_mask=field_mask_pb2.FieldMask(
                paths=["scaling.min_instance_count"])))
        # Started, not awaited: the instances come up while the tasks are published.
        log.info("render service %s: min instances %s → %d (%d pending tasks)",
                 self.service, self.current, want, pending_tasks)
        self.current = want
        return want
