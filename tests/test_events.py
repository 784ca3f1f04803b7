"""Live events: the Server-Sent Events stream of the api and the execution-events
Pub/Sub topic, against the local stack."""

from __future__ import annotations

import json
import time
import uuid

import jsonschema
import pytest
import requests

from francine.services.events import STATUS_MESSAGE_SCHEMA
from francine.tools.local.processes import environment


def read_events(client, sid: str, eid: str, timeout_s: float = 120) -> list[tuple[str, dict]]:
    """Every event of the stream until the server ends it."""
    url = f"{client.api_url}/v1/sessions/{sid}/executions/{eid}/events"
    events, name, data = [], None, []
    with client.session.get(url, stream=True, timeout=timeout_s) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        for line in resp.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and name:
                events.append((name, json.loads("\n".join(data))))
                name, data = None, []
    return events


def test_event_stream_follows_a_render_to_the_end(client):
    sid = client.create_session("ao", {"width": 64, "height": 64, "nao_samples": 4})["id"]
    eid = client.execute(sid, parallel=8, tile=32)["id"]
    t0 = time.monotonic()
    events = read_events(client, sid, eid)
    assert time.monotonic() - t0 < 120
    names = [n for n, _ in events]
    assert set(names) == {"status"}
    statuses = [d for _, d in events]
    assert all(d["id"] == eid and d["session_id"] == sid for d in statuses)
    assert statuses[-1]["status"] == "done" and statuses[-1]["progress"] == 1.0
    assert len(statuses) >= 3  # the first at once, changes, the last
    progress = [d["progress"] for d in statuses]
    assert progress == sorted(progress)
    assert all(d["status"] not in ("done", "failed", "cancelled") for d in statuses[:-1])
    # Reconnecting to a finished execution: one final event, and the stream ends.
    again = read_events(client, sid, eid, timeout_s=10)
    assert [d["status"] for _, d in again] == ["done"]


def test_event_stream_ends_when_cancelled(client):
    # Seconds of work a pass, so the cancel comes before the image.
    sid = client.create_session("ao", {"nsubsamples": 2, "nao_samples": 16})["id"]
    eid = client.execute(sid, parallel=4)["id"]
    client.request("POST", f"/v1/sessions/{sid}/executions/{eid}:cancel")
    events = read_events(client, sid, eid, timeout_s=30)
    assert events[-1][1]["status"] == "cancelled"


def test_event_stream_needs_the_owner(client, stack):
    sid = client.create_session("ao", {"width": 16, "height": 16, "nao_samples": 1})["id"]
    eid = client.execute(sid, parallel=1)["id"]
    url = f"{client.api_url}/v1/sessions/{sid}/executions/{eid}/events"
    assert requests.get(url, timeout=10).status_code == 401
    other = requests.get(url, timeout=10, headers={"Authorization": "Bearer fr_nobody"})
    assert other.status_code == 401
    from francine.tools.local.stack import create_user_in

    key = create_user_in(stack.info["env"], stack.info["project"], "stranger")
    resp = requests.get(url, timeout=10, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


@pytest.fixture
def status_subscription(stack):
    """A pull subscription on the execution-events topic (made before the render)."""
    from google.cloud import pubsub_v1

    project = stack.info["project"]
    with environment(stack.info["env"]):
        from francine.base.config import Settings

        topic_name = Settings.from_env().status_topic
        sub, pub = pubsub_v1.SubscriberClient(), pubsub_v1.PublisherClient()
        path = sub.subscription_path(project, f"test-status-{uuid.uuid4().hex[:8]}")
        sub.create_subscription(name=path, topic=pub.topic_path(project, topic_name))
        yield sub, path
        sub.delete_subscription(subscription=path)


def test_status_changes_are_published_on_the_topic(client, status_subscription):
    sub, path = status_subscription
    sid = client.create_session("ao", {"width": 32, "height": 32, "nao_samples": 2})["id"]
    eid = client.execute(sid, parallel=2)["id"]
    assert client.wait(sid, eid)["status"] == "done"
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and [m["execution"]["status"] for m in seen] != [
            "queued", "done"]:
        resp = sub.pull(subscription=path, max_messages=50, timeout=5)
        if resp.received_messages:
            sub.acknowledge(subscription=path,
                            ack_ids=[m.ack_id for m in resp.received_messages])
        for m in resp.received_messages:
            assert m.message.attributes["type"] == "execution_status"
            body = json.loads(m.message.data)
            jsonschema.validate(body, STATUS_MESSAGE_SCHEMA)
            if body["execution"]["id"] == eid:
                seen.append(body)
        seen.sort(key=lambda b: b["execution"]["progress"])
    assert [m["execution"]["status"] for m in seen] == ["queued", "done"]
    assert seen[-1]["execution"]["session_id"] == sid
    assert seen[-1]["execution"]["time"]["finished"] is not None
    assert all(m["user"] == seen[0]["user"] for m in seen)
