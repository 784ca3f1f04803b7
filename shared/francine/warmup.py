"""Warm before the rush: keep enough render instances started for a large execution on a
cold farm, and let the farm fall back to zero when it is idle.

Cloud Run starts instances as requests arrive; a thousand tasks landing on a cold
service wait for a thousand cold starts, spread over tens of seconds. Setting the
service's minimum instance count (service-level scaling, no new revision) when a large
execution starts asks Cloud Run to start them at once, while the api still writes and
publishes the tasks; setting it back when the last large execution ends stops paying
for them.

``plan`` is the policy; ``update_request`` builds the Cloud Run Admin API request
(``google.cloud.run_v2``) that applies it. ``after_start`` and ``after_end`` are the
hooks of ``francine.executions``: they act only for executions of at least
``Policy.threshold`` production tasks (small ones never pay for a call) and only where
``FRANCINE_RENDER_SERVICE`` names the service (never in the local stack). A failed call
is logged, never raised: warming is an optimisation, not part of an execution; the
watchdog's ``reconcile`` makes good a call that failed, every sweep.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from francine import planning
from francine.records import Execution

log = logging.getLogger("francine.warmup")

#: The one field an update touches (service-level scaling: no new revision).
FIELD = "scaling.min_instance_count"


@dataclass(frozen=True)
class Policy:
    #: The service's max instances: never ask for more.
    max_instances: int
    #: Executions with fewer production tasks than this do not warm anything: Cloud
    #: Run's own scaling serves them as quickly.
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


def update_request(service: str, count: int):
    """The Admin API request that sets ``service``'s minimum instances to ``count``."""
    from google.cloud import run_v2
    from google.protobuf import field_mask_pb2

    return run_v2.UpdateServiceRequest(
        service=run_v2.Service(name=service,
                               scaling=run_v2.ServiceScaling(min_instance_count=count)),
        update_mask=field_mask_pb2.FieldMask(paths=[FIELD]))


def policy_of(settings) -> Policy:
    return Policy(max_instances=settings.max_render_instances,
                  threshold=settings.warm_threshold)


def productions(ex: Execution) -> int:
    return planning.Shape.from_dict(ex.shape).productions


def pending_tasks(ad, leaving: str | None = None) -> int:
    """Production tasks of the running executions (all of each one's passes: an upper
    bound that costs one query, not one per execution), less the execution ``leaving``."""
    return sum(productions(ex) for ex in ad.store.active_executions() if ex.id != leaving)


def request_after_start(ad, ex: Execution):
    """The request to send when ``ex`` was just created, or None: a small execution,
    or no render service to warm (the local stack)."""
    s = ad.settings
    if not s.render_service or productions(ex) < s.warm_threshold:
        return None
    pending = pending_tasks(ad, leaving=ex.id) + productions(ex)
    return update_request(s.render_service, plan(policy_of(s), pending))


def request_after_end(ad, ex: Execution):
    """The request to send when ``ex`` has just ended: what the executions still
    running need, 0 when none; None after a small execution (it never raised
    anything) or without a render service."""
    s = ad.settings
    if not s.render_service or productions(ex) < s.warm_threshold:
        return None
    return update_request(s.render_service, plan(policy_of(s), pending_tasks(ad, ex.id)))


@functools.cache
def _services_client():
    from google.cloud import run_v2

    return run_v2.ServicesClient()


def send(request) -> None:
    """Start the update (the long-running operation is not awaited: the instances come
    up while the tasks are published); a failure is logged."""
    try:
        _services_client().update_service(request=request)
    except Exception as e:  # noqa: BLE001 - an optimisation must not fail a render
        log.warning("could not set %s of %s: %s", FIELD, request.service.name, e)
        return
    log.info("render service %s: min instances → %d", request.service.name,
             request.service.scaling.min_instance_count)


def reconcile(ad) -> int | None:
    """The watchdog's look, every sweep: set the render service's minimum to what the
    running executions need if it is not that already (a call that failed when the
    last large execution ended would otherwise keep the farm warm): what the hooks
    would have set, so 0 while no large execution runs, however many small ones. The
    service-level minimum is the warm-up's own (Pulumi leaves it alone). Returns the
    minimum wanted, None without a render service or when the service could not be
    read (logged)."""
    s = ad.settings
    if not s.render_service:
        return None
    try:
        sizes = [productions(ex) for ex in ad.store.active_executions()]
        large = any(n >= s.warm_threshold for n in sizes)
        want = plan(policy_of(s), sum(sizes)) if large else 0
        have = _services_client().get_service(name=s.render_service).scaling.min_instance_count
    except Exception as e:  # noqa: BLE001 - the next sweep looks again
        log.warning("warm-up: could not read %s: %s", s.render_service, e)
        return None
    if have != want:
        send(update_request(s.render_service, want))
    return want


def after_start(ad, ex: Execution) -> None:
    _settle(request_after_start, ad, ex)


def after_end(ad, ex: Execution) -> None:
    _settle(request_after_end, ad, ex)


def _settle(build, ad, ex) -> None:
    try:
        request = build(ad, ex)
    except Exception as e:  # noqa: BLE001 - the query failed: the next one settles it
        log.warning("warm-up: %s", e)
        return
    if request is not None:
        send(request)
