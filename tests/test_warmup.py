"""Warm before the rush: the policy, the scaling that executions starting and ending
ask for, and the Cloud Run Admin API request that applies it (a real
``google.cloud.run_v2`` request object; there is no Cloud Run emulator, so nothing is
sent: the request is checked field by field, and the ``Services`` port is stood in for
where the hooks send)."""

from __future__ import annotations

import dataclasses

from google.cloud import run_v2

from francine.adapters import run
from francine.base import errors
from francine.base.config import Settings
from francine.domain.records import Execution, Session
from francine.services import executions, scheduling, warmup
from francine.twins import twin_adapters

SERVICE = "projects/p/locations/europe-west1/services/francine-renderer"


def test_the_policy_warms_large_executions_only_up_to_the_maximum():
    policy = warmup.Policy(max_instances=1000, threshold=50)
    assert warmup.minimum_instances(policy, 0) == 0
    assert warmup.minimum_instances(policy, 49) == 0  # small: Cloud Run's own scaling serves it
    assert warmup.minimum_instances(policy, 256) == 256
    assert warmup.minimum_instances(policy, 10_000) == 1000
    assert warmup.minimum_instances(warmup.Policy(1000, fraction=0.5), 300) == 150


def test_the_request_sets_only_the_service_level_minimum():
    request = run.update_request(SERVICE, 42)
    assert isinstance(request, run_v2.UpdateServiceRequest)
    assert request.service.name == SERVICE
    assert request.service.scaling.min_instance_count == 42
    assert list(request.update_mask.paths) == ["scaling.min_instance_count"]
    # Nothing of the revision template: updating it would roll out a new revision.
    assert "template" not in request.service
    wire = run_v2.UpdateServiceRequest.to_json(request)
    assert '"minInstanceCount": 42' in wire


def farm(max_instances: int = 100):
    """Twin adapters with a session of a 32×32 aobench scene; executions are started
    without a render service (nothing is sent), which the checks then name."""
    ad = twin_adapters(Settings(min_task_s=0, max_render_instances=max_instances,
                                warm_threshold=50))
    ad.store.create_session(Session("s", "u", "ao", "png",
                                    {"width": 32, "height": 32, "nao_samples": 1}))
    return ad


def start(ad, parallel: int) -> Execution:
    return executions.start(ad, "u", "s", {"parallel": parallel, "tile": 32})[0]


def warm(ad) -> None:
    ad.settings = dataclasses.replace(ad.settings, render_service=SERVICE)


def minimum(request: warmup.Scaling) -> int:
    assert request.service == SERVICE
    return request.min_instances


def sweep(ad, services) -> int | None:
    """The watchdog's look at the farm (``warmup.reconcile``) against a stand-in for
    Cloud Run, which has no emulator."""
    ad.services = lambda: services
    return warmup.reconcile(ad)


def test_large_executions_raise_the_minimum_and_the_last_one_lets_it_fall_to_zero():
    services = FakeServices()
    ad = farm(max_instances=100)
    warm(ad)
    small = start(ad, 4)
    assert sweep(ad, services) == 0 and services.updates == []  # small: nothing to warm
    big = start(ad, 64)
    assert sweep(ad, services) == 64 + 4  # all running work
    bigger = start(ad, 80)
    assert sweep(ad, services) == 100  # the farm's maximum
    for doc in (big, bigger):
        ad.store.finish_execution("s", doc.id, {"status": "done"})
    assert sweep(ad, services) == 0  # only the small one is left
    assert [minimum(r) for r in services.updates] == [68, 100, 0]
    ad.store.finish_execution("s", small.id, {"status": "done"})
    assert sweep(ad, services) == 0 and len(services.updates) == 3  # already 0: no call


def test_an_execution_that_would_keep_the_farm_busy_keeps_it_warm():
    services = FakeServices()
    ad = farm(max_instances=100)
    warm(ad)
    first = start(ad, 64)
    start(ad, 64)  # the second, still running
    assert sweep(ad, services) == 100
    ad.store.finish_execution("s", first.id, {"status": "done"})
    assert sweep(ad, services) == 64  # the second still runs


def test_without_a_render_service_nothing_is_asked():
    services = FakeServices()
    ad = farm()
    start(ad, 64)
    assert ad.settings.render_service == ""
    assert sweep(ad, services) is None and services.reads == services.updates == []


def test_a_failed_look_at_the_farm_is_logged_and_never_raised(caplog):
    ad = farm()
    start(ad, 64)
    warm(ad)

    def unavailable():
        raise errors.TransientError("the store is unavailable")

    ad.store.active_executions = unavailable
    assert sweep(ad, FakeServices()) is None
    assert "the store is unavailable" in caplog.text


class FakeServices:
    """Stands in for the ``Services`` port (there is no Cloud Run emulator): keeps what
    it was asked, answers with a service at ``minimum``, or fails."""

    def __init__(self, minimum: int = 0, fail: bool = False):
        self.minimum, self.fail = minimum, fail
        self.updates: list[warmup.Scaling] = []
        self.reads: list[str] = []

    def set_min_instances(self, service: str, count: int) -> None:
        if self.fail:
            raise RuntimeError("403 the caller lacks run.services.update")
        self.updates.append(warmup.Scaling(service, count))
        self.minimum = count

    def min_instances(self, service: str) -> int:
        self.reads.append(service)
        return self.minimum



def test_only_the_watchdog_calls_cloud_run():
    """Starting and ending executions, in the api, the render service or the reducer,
    never call Cloud Run (their accounts may not); the watchdog's sweep does."""
    from francine.handlers import watchdog

    services = FakeServices()
    ad = farm(max_instances=100)
    ad.services = lambda: services
    warm(ad)
    big = start(ad, 64)
    small = start(ad, 4)
    executions_end = [ad.store.execution("s", e.id) for e in (small,)]
    assert services.updates == services.reads == []
    assert watchdog.sweep(ad)["min_instances"] == 68
    for ex in executions_end:
        scheduling.end(ad, ex, "done")
    assert [minimum(r) for r in services.updates] == [68]  # ending asked nothing
    scheduling.end(ad, ad.store.execution("s", big.id), "done")
    assert watchdog.sweep(ad)["min_instances"] == 0 and services.minimum == 0


def test_a_refused_call_is_logged_and_the_next_sweep_makes_it_good(caplog):
    from francine.handlers import watchdog

    services = FakeServices(fail=True)
    ad = farm(max_instances=100)
    ad.services = lambda: services
    warm(ad)
    big = start(ad, 64)
    assert watchdog.sweep(ad)["min_instances"] == 64  # wanted; the call failed, logged
    assert "lacks run.services.update" in caplog.text and services.minimum == 0
    assert ad.store.execution("s", big.id).status == "queued"  # the execution untouched
    services.fail = False
    assert watchdog.sweep(ad)["min_instances"] == 64 and services.minimum == 64
    assert watchdog.sweep(ad)["min_instances"] == 64 and len(services.updates) == 1
    scheduling.end(ad, ad.store.execution("s", big.id), "done")
    assert watchdog.sweep(ad)["min_instances"] == 0 and services.minimum == 0
    # small executions, however many, never warm the farm
    smalls = [start(ad, 10) for _ in range(6)]  # 60 tasks in all, none of them large
    assert watchdog.sweep(ad)["min_instances"] == 0 and services.minimum == 0
    for ex in smalls:
        ad.store.finish_execution("s", ex.id, {"status": "done"})
