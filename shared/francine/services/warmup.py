"""Warm before the rush: keep enough render instances started for a large execution on a
cold farm, and let the farm fall back to zero when it is idle.

Cloud Run starts instances as requests arrive; a thousand tasks landing on a cold
service wait for a thousand cold starts, spread over tens of seconds. Setting the
service's minimum instance count (service-level scaling, no new revision) while a large
execution runs asks Cloud Run to start them at once; setting it back when the last
large execution has ended stops paying for them.

``minimum_instances`` is the policy; ``Scaling`` is what applies it, sent through the
``Services`` port (``francine.ports.protocols``; the Cloud Run Admin API in
``francine.adapters.run``). Only the watchdog calls it (``reconcile``, every sweep): the
right to update a Cloud Run service is the right to deploy to it, so the api, the render
service and the reducer hold none (``francine.domain.rights``). It acts only while an
execution of at least ``warm_threshold`` production tasks runs (small ones never pay for
a call) and only where ``FRANCINE_RENDER_SERVICE`` names the service (never in the local
stack). A failed call is logged, never raised: warming is an optimisation, not part of
an execution, and the next sweep looks again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from francine.base.config import Settings
from francine.domain import planning
from francine.domain.records import Execution
from francine.ports import Adapters

log = logging.getLogger("francine.warmup")


@dataclass(frozen=True)
class Policy:
    #: The service's max instances: never ask for more.
    max_instances: int
    #: Executions with fewer production tasks than this do not warm anything: Cloud
    #: Run's own scaling serves them as quickly.
    threshold: int = 50
    #: Fraction of the pending tasks to keep instances for (1: one per task).
    fraction: float = 1.0


def minimum_instances(policy: Policy, pending_tasks: int) -> int:
    """Minimum instances to keep for ``pending_tasks`` production tasks not yet done
    over the farm's running executions: 0 when idle or small, else as many instances as
    the tasks can use, up to the maximum."""
    if pending_tasks <= 0 or pending_tasks < policy.threshold:
        return 0
    return min(policy.max_instances, max(1, round(pending_tasks * policy.fraction)))


@dataclass(frozen=True)
class Scaling:
    """Set ``service``'s (service-level) minimum instances to ``min_instances``."""

    service: str
    min_instances: int


def policy_of(settings: Settings) -> Policy:
    return Policy(max_instances=settings.max_render_instances,
                  threshold=settings.warm_threshold)


def productions(ad: Adapters, ex: Execution) -> int:
    """The production tasks an execution stands for: an animation's, those of its
    frames not ended yet (its frames are counted in it, not alone)."""
    if ex.parent is not None:
        return 0
    per_frame = planning.Shape.from_dict(ex.shape).productions
    if not ex.animation:
        return per_frame
    ended = sum(f.final for f in ad.store.frames_of(ex.session_id, ex.id))
    return per_frame * max(0, len(ex.frames or ()) - ended)


def send(ad: Adapters, request: Scaling) -> None:
    """Start the update (the instances come up while the tasks are published); a
    failure is logged."""
    try:
        ad.services().set_min_instances(request.service, request.min_instances)
    except Exception as e:  # noqa: BLE001 - an optimisation must not fail a render
        log.warning("could not set the minimum instances of %s: %s", request.service, e)
        return
    log.info("render service %s: min instances → %d", request.service, request.min_instances)


def reconcile(ad: Adapters) -> int | None:
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
        sizes = [productions(ad, ex) for ex in ad.store.active_executions()]
        large = any(n >= s.warm_threshold for n in sizes)
        want = minimum_instances(policy_of(s), sum(sizes)) if large else 0
        have = ad.services().min_instances(s.render_service)
    except Exception as e:  # noqa: BLE001 - the next sweep looks again
        log.warning("warm-up: could not read %s: %s", s.render_service, e)
        return None
    if have != want:
        send(ad, Scaling(s.render_service, want))
    return want
