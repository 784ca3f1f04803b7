"""Warm before the rush: the policy, and the Cloud Run Admin API request it makes (there
is no Cloud Run emulator: the client is injected and records the requests)."""

from __future__ import annotations

from google.cloud import run_v2

from francine import warmup

SERVICE = "projects/p/locations/europe-west1/services/francine-render"


class RecordingServicesClient:
    """Records ``update_service`` requests as run_v2.ServicesClient receives them."""

    def __init__(self):
        self.requests: list[run_v2.UpdateServiceRequest] = []

    def update_service(self, request):
        assert isinstance(request, run_v2.UpdateServiceRequest)
        self.requests.append(request)
        return object()  # the long-running operation, not awaited


def test_the_policy_warms_large_executions_only_up_to_the_maximum():
    policy = warmup.Policy(max_instances=1000, threshold=50)
    assert warmup.plan(policy, 0) == 0
    assert warmup.plan(policy, 49) == 0  # small: Cloud Run's own scaling serves it
    assert warmup.plan(policy, 256) == 256
    assert warmup.plan(policy, 10_000) == 1000
    assert warmup.plan(warmup.Policy(1000, fraction=0.5), 300) == 150


def test_the_warmer_sets_min_instances_then_falls_back_to_zero():
    client = RecordingServicesClient()
    warmer = warmup.Warmer(client, SERVICE, warmup.Policy(max_instances=100))
    assert warmer.apply(5000) == 100
    assert warmer.apply(4000) == 100  # unchanged: no request
    assert warmer.apply(0) == 0  # idle: back to zero
    assert [r.service.scaling.min_instance_count for r in client.requests] == [100, 0]
    for r in client.requests:
        assert r.service.name == SERVICE
        assert list(r.update_mask.paths) == ["scaling.min_instance_count"]
