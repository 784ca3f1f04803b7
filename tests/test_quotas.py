"""Quotas per user (docs/api.md, "Quotas") on the local stack: over one, a 429 with
Retry-After; a render whose estimate alone is over a budget, a 400 that says so; a
refused upload leaves no object behind. Each test gives its own user small figures
(what 'francine users set-quota' does), so the stack's defaults stay for other tests."""

from __future__ import annotations

import hashlib
import time

import pytest
from test_api_contract import assert_error, call

from francine.services import users
from francine.tools.local.processes import environment


@pytest.fixture
def admin(stack):
    from francine.adapters.cloud import firestore_store

    with environment(stack.info["env"]):
        yield firestore_store(stack.info["project"])


def user_id(admin, client) -> str:
    key = client.session.headers["Authorization"].split()[1]
    return admin.get_user(users.key_hash(key))["id"]


def test_executions_in_flight(client, admin):
    users.set_quota(admin, user_id(admin, client), "executions_in_flight", 1)
    sid = client.create_session("ao", {"width": 64, "height": 64})["id"]
    first = call(client, "POST", f"/v1/sessions/{sid}/executions", json={"parallel": 64},
                 headers={"Idempotency-Key": "k"})
    assert first.status_code == 202
    second = call(client, "POST", f"/v1/sessions/{sid}/executions", json={})
    err = assert_error(second, 429, "quota_exceeded")
    assert "in flight" in err["message"] and int(second.headers["Retry-After"]) > 0
    # a retry of the accepted one with its key is not a new execution: never refused
    retry = call(client, "POST", f"/v1/sessions/{sid}/executions", json={"parallel": 64},
                 headers={"Idempotency-Key": "k"})
    assert retry.status_code == 202 and retry.json()["id"] == first.json()["id"]
    eid = first.json()["id"]
    assert call(client, "POST", f"/v1/sessions/{sid}/executions/{eid}:cancel").ok
    assert call(client, "POST", f"/v1/sessions/{sid}/executions",
                json={"parallel": 1}).status_code == 202


def test_tasks_in_flight_and_cpu_budget(client, admin):
    uid = user_id(admin, client)
    sid = client.create_session("ao", {"width": 64, "height": 64})["id"]
    users.set_quota(admin, uid, "tasks_in_flight", 10)
    err = assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions",
                            json={"parallel": 64}), 400, "over_budget")
    assert "tasks" in err["message"]
    users.set_quota(admin, uid, "tasks_in_flight", None)
    users.set_quota(admin, uid, "cpu_seconds_per_day", 0.001)
    err = assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions",
                            json={"update": {"width": 1024, "height": 1024}}), 400,
                       "over_budget")
    assert "CPU-seconds" in err["message"] and "daily budget" in err["message"]
    # refused: the update did not persist, no execution was recorded
    assert client.request("GET", f"/v1/sessions/{sid}").json()["scene"]["width"] == 64
    assert client.request("GET", f"/v1/sessions/{sid}/executions").json()["executions"] == []


def test_cpu_budget_spent_is_429_until_the_window_passes(client, admin):
    uid = user_id(admin, client)
    sid = client.create_session("ao", {"width": 128, "height": 128, "nao_samples": 2})["id"]
    first = call(client, "POST", f"/v1/sessions/{sid}/executions", json={})
    assert first.status_code == 202
    eid = first.json()["id"]
    estimate = admin.execution(sid, eid).cpu_estimate
    deadline = time.monotonic() + 120
    while not (ex := admin.execution(sid, eid)).final:  # then its measured CPU counts
        assert time.monotonic() < deadline
        time.sleep(0.1)
    spent = ex.summary["time"]["cpu"]
    # The same scene in a new session (no measured history: the same estimate) fits
    # the budget alone, not with what the first one spent.
    users.set_quota(admin, uid, "cpu_seconds_per_day", estimate + spent / 2)
    sid = client.create_session("ao", {"width": 128, "height": 128, "nao_samples": 2})["id"]
    resp = call(client, "POST", f"/v1/sessions/{sid}/executions", json={})
    err = assert_error(resp, 429, "quota_exceeded")
    assert "daily budget" in err["message"] and int(resp.headers["Retry-After"]) >= 60


def test_stored_bytes_and_refused_uploads_leave_nothing(client, admin, adapters):
    users.set_quota(admin, user_id(admin, client), "stored_bytes", 1000)
    sid = client.create_session("ao")["id"]
    assert call(client, "PUT", f"/v1/sessions/{sid}/resources/a.bin",
                data=b"a" * 600).status_code == 201
    over = b"b" * 600
    resp = call(client, "PUT", f"/v1/sessions/{sid}/resources/b.bin", data=over)
    assert_error(resp, 429, "quota_exceeded")
    assert resp.headers["Retry-After"]
    assert not adapters.blobs.has_resource(hashlib.sha256(over).hexdigest())
    # a chunked body (no Content-Length) is cut off at the quota as well
    resp = call(client, "PUT", f"/v1/sessions/{sid}/resources/c.bin",
                data=iter([over[:300], over[300:]]))
    assert_error(resp, 429, "quota_exceeded")
    assert not adapters.blobs.has_resource(hashlib.sha256(over).hexdigest())
    # a 409 (other bytes under a taken name) leaves no object either
    other = b"c" * 100
    assert_error(call(client, "PUT", f"/v1/sessions/{sid}/resources/a.bin", data=other), 409)
    assert not adapters.blobs.has_resource(hashlib.sha256(other).hexdigest())
    names = [r["name"] for r in client.request(
        "GET", f"/v1/sessions/{sid}/resources").json()["resources"]]
    assert names == ["a.bin"]


def test_cancelled_execution_reports_true_figures(client):
    # Seconds of work in all (the default scene takes tens of milliseconds): the cancel
    # comes while tasks run.
    sid = client.create_session("ao", {"width": 256, "height": 256, "nsubsamples": 2,
                                       "nao_samples": 24})["id"]
    resp = call(client, "POST", f"/v1/sessions/{sid}/executions",
                json={"parallel": 32, "tile": 64})
    eid = resp.json()["id"]
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = call(client, "GET", f"/v1/sessions/{sid}/executions/{eid}").json()
        if status["tasks"]["running"] or status["tasks"]["done"]:
            break
        time.sleep(0.2)
    view = call(client, "POST", f"/v1/sessions/{sid}/executions/{eid}:cancel").json()
    assert view["status"] == "cancelled"
    time.sleep(2.0)  # tasks that were running finish or stop after the cancel
    later = call(client, "GET", f"/v1/sessions/{sid}/executions/{eid}").json()
    for v in (view, later):
        assert v["tasks"]["running"] == 0
        assert v["time"]["image_after_last_task"] is None
        assert v["time"]["total"] >= 0 and v["progress"] < 1
    assert later == view  # the figures were frozen when it ended
