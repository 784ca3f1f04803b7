"""Noise targets, caps and extensions through the REST api on the local stack (the
emulators, Pub/Sub push, the reducer receiving the status topic): what a client sees.
The waves' logic in depth, over the twins: tests/test_waves.py."""

from __future__ import annotations

import pytest

from francine.tools.client import ApiError


def post(client, path: str, body: dict):
    return client.request("POST", path, json=body)


def test_an_extended_render_is_the_bytes_of_one_render_of_all_its_passes(client, small_ao):
    sid = client.create_session("ao", small_ao)["id"]
    first = client.execute(sid, parallel=2, tile=32, seed=41)
    done = client.wait(sid, first["id"], timeout_s=120)
    assert done["status"] == "done" and done["passes"] == 2 and done["seed"] == 41
    assert 0 < done["noise"] < 1
    before = client.result(sid, first["id"])

    path = f"/v1/sessions/{sid}/executions/{first['id']}:extend"
    resp = post(client, path, {"passes": 3})
    assert resp.status_code == 202 and resp.json()["status"] == "running"
    assert resp.headers["Location"].endswith(first["id"])
    with pytest.raises(ApiError) as e:  # it is running: not done
        post(client, path, {"passes": 1})
    assert e.value.status == 409
    extended = client.wait(sid, first["id"], timeout_s=120)
    assert extended["status"] == "done" and extended["passes"] == 5
    assert extended["waves"] == 1 and extended["tasks"]["done"] > done["tasks"]["done"]
    after = client.result(sid, first["id"])
    assert after != before

    whole = client.execute(sid, parallel=5, tile=16, seed=41)  # other tiles, one go
    assert client.wait(sid, whole["id"], timeout_s=120)["status"] == "done"
    assert client.result(sid, whole["id"]) == after

    for body in ({}, {"passes": 1, "until": {"noise": 0.1}}, {"passes": 0}):
        with pytest.raises(ApiError) as e:
            post(client, path, body)
        assert e.value.status == 400


def test_a_noise_target_renders_until_the_image_is_good_enough(client):
    sid = client.create_session("ao", {"width": 64, "height": 32, "nao_samples": 6})["id"]
    ex = client.execute(sid, tile=32, until={"noise": 0.1, "max_passes": 64})
    assert ex["until"] == {"noise": 0.1, "max_passes": 64}
    status = client.wait(sid, ex["id"], timeout_s=180)
    assert status["status"] == "done" and status["stopped"] == "noise", status
    assert status["noise"] <= 0.1 and 8 <= status["passes"] <= 64 and status["waves"] >= 1
    assert client.result(sid, ex["id"])[:8] == b"\x89PNG\r\n\x1a\n"
    tasks = client.request("GET", f"/v1/sessions/{sid}/executions/{ex['id']}/tasks",
                           params={"status": "failed"}).json()
    assert tasks == {"tasks": []}  # none failed, in any wave


def test_a_cap_below_the_estimate_is_refused(client, small_ao):
    sid = client.create_session("ao", small_ao)["id"]
    for cap in ({"max_cpu_seconds": 1e-6}, {"max_cost_usd": 1e-9}):
        with pytest.raises(ApiError) as e:
            client.execute(sid, parallel=8, **cap)
        assert e.value.status == 400 and e.value.body["error"]["code"] == "over_cap"
    assert client.executions(sid) == []
