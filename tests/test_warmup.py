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
from francine.services import executions, warmup
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


def test_large_executions_raise_the_minimum_and_the_last_one_lets_it_fall_to_zero():
    ad = farm(max_instances=100)
    small = start(ad, 4)
    big = start(ad, 64)
    warm(ad)
    assert warmup.request_after_start(ad, small) is None  # small: nothing to warm
    assert minimum(warmup.request_after_start(ad, big)) == 64 + 4  # all running work
    ad.settings = dataclasses.replace(ad.settings, render_service="")
    bigger = start(ad, 80)
    warm(ad)
    assert minimum(warmup.request_after_start(ad, bigger)) == 100  # the farm's maximum
    for doc in (big, bigger):  # ended, in the store, then the hook
        ad.store.finish_execution("s", doc.id, {"status": "done"})
    assert minimum(warmup.request_after_end(ad, big)) == 0  # only the small one is left
    assert warmup.request_after_end(ad, small) is None  # a small one never raised it
    ad.store.finish_execution("s", small.id, {"status": "done"})
    assert minimum(warmup.request_after_end(ad, bigger)) == 0


def test_an_execution_that_would_keep_the_farm_busy_keeps_it_warm():
    ad = farm(max_instances=100)
    first = start(ad, 64)
    start(ad, 64)  # the second, still running
    warm(ad)
    ad.store.finish_execution("s", first.id, {"status": "done"})
    assert minimum(warmup.request_after_end(ad, first)) == 64  # the second still runs
    # As read back from the store: the same request.
    record = ad.store.execution("s", first.id)
    assert warmup.request_after_end(ad, record) == warmup.request_after_end(ad, first)


def test_without_a_render_service_nothing_is_built():
    ad = farm()
    big = start(ad, 64)
    assert ad.settings.render_service == ""
    assert warmup.request_after_start(ad, big) is None
    assert warmup.request_after_end(ad, big) is None


def test_a_failed_look_at_the_farm_is_logged_and_never_fails_the_execution(caplog):
    ad = farm()
    big = start(ad, 64)
    warm(ad)

    def unavailable():
        raise errors.TransientError("the store is unavailable")

    ad.store.active_executions = unavailable
    warmup.after_start(ad, big)  # returns: nothing sent, nothing raised
    warmup.after_end(ad, big)
    assert caplog.text.count("the store is unavailable") == 2


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


def test_starting_and_ending_executions_call_cloud_run(monkeypatch):
    services = FakeServices()
    ad = farm(max_instances=100)
    ad.services = lambda: services  # Cloud Run has no emulator
    warm(ad)
    small = start(ad, 4)  # through executions.start: its hook sends nothing
    assert services.updates == []
    big = start(ad, 64)
    assert [minimum(r) for r in services.updates] == [68]
    executions.end(ad, ad.store.execution("s", big.id), "done")
    assert [minimum(r) for r in services.updates] == [68, 0]
    executions.end(ad, ad.store.execution("s", small.id), "done")  # small: no call
    assert len(services.updates) == 2 and services.minimum == 0


def test_a_refused_call_is_logged_and_the_watchdog_makes_it_good(monkeypatch, caplog):
    from francine.handlers import watchdog

    services = FakeServices(fail=True)
    ad = farm(max_instances=100)
    ad.services = lambda: services  # Cloud Run has no emulator
    warm(ad)
    big = start(ad, 64)  # the call fails: logged, the execution is not touched
    assert "lacks run.services.update" in caplog.text
    assert ad.store.execution("s", big.id).status == "queued"
    services.fail, services.minimum = False, 0
    # the watchdog's sweep sets what the running work needs...
    assert watchdog.sweep(ad)["min_instances"] == 64
    assert [minimum(r) for r in services.updates] == [64]
    assert watchdog.sweep(ad)["min_instances"] == 64 and len(services.updates) == 1
    # ...and, once the last execution has ended and its call failed, lets the farm cool
    services.fail = True
    executions.end(ad, ad.store.execution("s", big.id), "done")
    assert services.minimum == 64
    services.fail = False
    assert watchdog.sweep(ad)["min_instances"] == 0 and services.minimum == 0
    # small executions, however many, never warm the farm (as the hooks would not)
    smalls = [start(ad, 10) for _ in range(6)]  # 60 tasks in all, none of them large
    assert watchdog.sweep(ad)["min_instances"] == 0 and services.minimum == 0
    for ex in smalls:
        ad.store.finish_execution("s", ex.id, {"status": "done"})
    # without a render service (the local stack) nothing is read or sent
    ad.settings = dataclasses.replace(ad.settings, render_service="")
    reads = len(services.reads)
    assert watchdog.sweep(ad)["min_instances"] is None and len(services.reads) == reads
