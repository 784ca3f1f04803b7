"""Before the render service exists, renders are refused with 503 and Retry-After.

In the cloud the produce topic's push subscription is created with the render service,
on the second ``pulumi up``; until then a published task would be dropped (a topic
without subscriptions keeps nothing). On the local stack's Pub/Sub emulator: an api
process whose produce topic nobody subscribes to, and the gate itself with a clock,
asking the bus adapter (``Bus.subscribed``) about topics made here.
"""

from __future__ import annotations

import os
import uuid

import pytest
import requests

from francine.ports.readiness import RETRY_AFTER_S, RenderGate, RenderServiceMissing
from francine.tools.local.processes import environment
from francine.tools.local.stack import create_user_in


def pubsub_clients(stack):
    from google.cloud import pubsub_v1

    with environment(stack.info["env"]):
        return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def new_topic(stack, publisher) -> str:
    path = publisher.topic_path(stack.info["project"], f"francine-gate-{uuid.uuid4().hex[:8]}")
    publisher.create_topic(name=path)
    return path


def test_an_api_without_a_render_subscription_refuses_renders_and_loses_nothing(stack):
    publisher, _ = pubsub_clients(stack)
    topic = new_topic(stack, publisher).rsplit("/", 1)[1]
    env = {**os.environ, **stack.info["env"], "FRANCINE_PRODUCE_TOPIC": topic,
           "FRANCINE_PRODUCE_SHARDS": "1", "PYTHONUNBUFFERED": "1"}
    url = stack._serve_function("api", "http", env, ready_path="/health")
    key = create_user_in(stack.info["env"], stack.info["project"], "gate")
    auth = {"Authorization": f"Bearer {key}"}

    assert requests.get(url + "/health", timeout=10).json() == {"status": "ok"}
    session = requests.post(url + "/v1/sessions", json={"producer": "ao"}, headers=auth,
                            timeout=30)
    assert session.status_code == 201, session.text
    sid = session.json()["id"]
    for _ in range(2):  # refused again, from the cached answer
        response = requests.post(f"{url}/v1/sessions/{sid}/executions", json={"parallel": 2},
                                 headers=auth, timeout=30)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
        error = response.json()["error"]
        assert error["code"] == "render_service_missing"
        assert topic in error["message"]
    # Nothing was recorded: no execution waits for tasks that were never delivered.
    listed = requests.get(f"{url}/v1/sessions/{sid}/executions", headers=auth, timeout=30)
    assert listed.json() == {"executions": []}
    # The public demo route starts renders too.
    demo = requests.get(url + "/?parallel=1", timeout=30)
    assert demo.status_code == 503 and demo.headers["Retry-After"] == str(RETRY_AFTER_S)
    requests.delete(f"{url}/v1/sessions/{sid}", headers=auth, timeout=30)


def test_the_gate_opens_when_a_subscription_appears_and_stays_open(stack, adapters):
    publisher, subscriber = pubsub_clients(stack)
    topic = new_topic(stack, publisher)
    now = [1000.0]
    gate = RenderGate(adapters.bus.subscribed, [topic], recheck_s=30, clock=lambda: now[0])
    with pytest.raises(RenderServiceMissing) as refused:
        gate.check()
    assert (refused.value.status, refused.value.headers) == (503, {"Retry-After": "30"})

    subscription = subscriber.subscription_path(
        stack.info["project"], f"gate-{uuid.uuid4().hex[:8]}")
    subscriber.create_subscription(name=subscription, topic=topic)
    now[0] += 10
    with pytest.raises(RenderServiceMissing):  # not asked again before recheck_s
        gate.check()
    now[0] += 20
    gate.check()
    subscriber.delete_subscription(subscription=subscription)
    gate.check()  # a yes is kept: the render service is not removed while the api runs


def test_every_shard_needs_a_subscription_and_a_missing_topic_is_not_ready(stack, adapters):
    publisher, subscriber = pubsub_clients(stack)
    subscribed, bare = new_topic(stack, publisher), new_topic(stack, publisher)
    subscriber.create_subscription(
        name=subscriber.subscription_path(stack.info["project"], f"gate-{uuid.uuid4().hex[:8]}"),
        topic=subscribed)
    with pytest.raises(RenderServiceMissing, match=bare.rsplit("/", 1)[1]):
        RenderGate(adapters.bus.subscribed, [subscribed, bare]).check()
    RenderGate(adapters.bus.subscribed, [subscribed]).check()
    missing = publisher.topic_path(stack.info["project"], "francine-never-created")
    with pytest.raises(RenderServiceMissing, match="francine-never-created"):
        RenderGate(adapters.bus.subscribed, [missing]).check()


def test_a_deployment_that_may_not_ask_is_not_refused(caplog):
    """Without the grant to list subscriptions (the bus answers Forbidden) the gate
    opens, as before the check existed, and says why; a missing topic keeps it shut."""
    from francine.base import errors

    def forbidden(topic: str) -> bool:
        raise errors.Forbidden(f"list the subscriptions of {topic}: 403")

    RenderGate(forbidden, ["projects/p/topics/produce"]).check()
    assert "cannot list the subscriptions of projects/p/topics/produce" in caplog.text

    def missing(topic: str) -> bool:
        raise errors.NotFound(f"{topic}: not found")

    with pytest.raises(RenderServiceMissing, match="produce"):
        RenderGate(missing, ["projects/p/topics/produce"]).check()
