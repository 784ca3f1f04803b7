"""Every task of a job through the REST api on the local stack, a page at a time, and one
task with the lines its worker or reducer logged (what the viewer's task table shows):
status, instance, times and log lines, as a render-farm manager lists them."""

from __future__ import annotations

import pytest

from francine.tools.client import ApiError


def tasks_path(sid: str, eid: str) -> str:
    return f"/v1/sessions/{sid}/executions/{eid}/tasks"


def test_every_task_a_page_at_a_time_and_one_with_its_log(client, small_ao):
    sid = client.create_session("ao", small_ao)["id"]
    ex = client.execute(sid, parallel=3, tile=32)
    status = client.wait(sid, ex["id"], timeout_s=120)
    assert status["status"] == "done"
    total = status["tasks"]["total"]
    path = tasks_path(sid, ex["id"])

    listed, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = client.request("GET", path, params=params).json()
        assert len(page["tasks"]) <= 2
        listed += page["tasks"]
        after = page["next"]
        if after is None:
            break
        assert after == page["tasks"][-1]["node"]
    nodes = [t["node"] for t in listed]
    assert len(nodes) == total == len(set(nodes)) and nodes == sorted(nodes)
    assert {t["status"] for t in listed} == {"done"}
    production = [t for t in listed if t["kind"] == "produce"]
    assert production and all(t["instance"] and t["started"] and t["finished"]
                              and t["work_s"] > 0 for t in production)
    everything = client.request("GET", path).json()  # one page of the default size
    assert [t["node"] for t in everything["tasks"]] == nodes and everything["next"] is None
    assert (everything["frame"], everything["wave"]) == (None, 0)

    one = client.request("GET", f"{path}/{production[0]['node']}").json()
    assert {k: one[k] for k in ("node", "status", "instance")} == \
        {k: production[0][k] for k in ("node", "status", "instance")}
    assert any(f"rendered {sid}/{ex['id']}/{one['node']}" in line for line in one["log"])
    root = [t for t in listed if t["kind"] == "reduce"][-1]
    assert any("reduced" in line
               for line in client.request("GET", f"{path}/{root['node']}").json()["log"])


@pytest.mark.parametrize("query, status", [
    ({"limit": "0"}, 400), ({"limit": "1001"}, 400), ({"limit": "x"}, 400),
    ({"status": "done"}, 400), ({"status": "failed", "limit": "2"}, 400),
    ({"colour": "red"}, 400), ({"wave": "1"}, 400), ({"frame": "0"}, 400),
    ({"limit": "²"}, 400), ({"wave": "²"}, 400)])
def test_a_bad_listing_is_refused_with_a_clear_error(client, small_ao, query, status):
    sid = client.create_session("ao", small_ao)["id"]
    ex = client.execute(sid, parallel=1, tile=32)
    with pytest.raises(ApiError) as e:
        client.request("GET", tasks_path(sid, ex["id"]), params=query)
    assert e.value.status == status and e.value.body["error"]["message"]


def test_an_unknown_task_is_404(client, small_ao):
    sid = client.create_session("ao", small_ao)["id"]
    ex = client.execute(sid, parallel=1, tile=32)
    for node in ("p999", "nothing", "..", "p0%0A"):
        with pytest.raises(ApiError) as e:
            client.request("GET", f"{tasks_path(sid, ex['id'])}/{node}")
        assert e.value.status == 404, node
    for query in ({"colour": "red"}, {"wave": "²"}, {"frame": "1"}):
        with pytest.raises(ApiError) as e:
            client.request("GET", f"{tasks_path(sid, ex['id'])}/p0", params=query)
        assert e.value.status == 400, query


def test_an_extended_renders_waves_are_listed_one_at_a_time(client, small_ao):
    sid = client.create_session("ao", small_ao)["id"]
    first = client.execute(sid, parallel=2, tile=32)
    client.wait(sid, first["id"], timeout_s=120)
    client.request("POST", f"/v1/sessions/{sid}/executions/{first['id']}:extend",
                   json={"passes": 2})
    assert client.wait(sid, first["id"], timeout_s=120)["waves"] == 1
    path = tasks_path(sid, first["id"])
    own = client.request("GET", path, params={"wave": "0"}).json()["tasks"]
    listed = client.request("GET", path).json()  # the last wave by default
    wave = listed["tasks"]
    assert listed["wave"] == 1
    assert wave == client.request("GET", path, params={"wave": "1"}).json()["tasks"]
    assert own and wave and {t["status"] for t in own + wave} == {"done"}
    assert client.request("GET", f"{path}/{wave[0]['node']}", params={"wave": "1"}).json()[
        "log"]
    for query in ({"wave": "2"}, {"status": "failed", "wave": "1"}):
        with pytest.raises(ApiError) as e:
            client.request("GET", path, params=query)
        assert e.value.status == 400
