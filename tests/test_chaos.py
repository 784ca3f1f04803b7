"""Chaos: on a local stack whose render services and reducer crash 20% of their push
requests (before or after the work) and publish 20% of the messages they handle twice,
twenty executions all end done, with images bit-identical to a clean render of the same
executions (the in-memory twins, same ids and seeds).

    .venv/bin/python -m pytest tests/test_chaos.py -s   # also prints the figures
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import pathlib
import uuid

import pytest

from francine import executions, planning
from francine.client import Client
from francine.clients import make_adapters
from francine.config import Settings
from francine.local.processes import environment
from francine.reducer import Reducer
from francine.twins import pump, twin_adapters
from francine.worker import Worker

EXECUTIONS = 20
SCENES = [{"width": 32, "height": 32, "nao_samples": n} for n in (2, 3, 4, 5)]


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory):
    from francine.local.stack import Stack, StackOptions

    # Ten attempts: a message crashes all of them with probability 0.2^10.
    options = StackOptions(workers=2, state_dir=tmp_path_factory.mktemp("chaos"),
                           min_backoff_s=1, max_backoff_s=2, max_delivery_attempts=10,
                           extra_env={"FRANCINE_CHAOS_CRASH_RATE": "0.2",
                                      "FRANCINE_CHAOS_DUPLICATE_RATE": "0.2",
                                      "FRANCINE_MIN_TASK_SECONDS": "0"})
    with Stack(options) as s:
        yield s


def reference(user: str, sid: str, scene: dict, key: str, parallel: int) -> tuple[str, bytes]:
    """The same execution rendered without faults, over the twins."""
    ad = twin_adapters(Settings(min_task_seconds=0))
    ad.store.create_session(sid, {"user": user, "producer": "ao", "format": "png",
                                  "scene": scene})
    doc, _ = executions.start(ad, user, sid, {"parallel": parallel}, idempotency_key=key)
    pump(ad, Worker(ad), Reducer(ad))
    ex = ad.store.execution(sid, doc["id"])
    assert ex.status == "done", ex.error
    return doc["id"], ad.blobs.get_result(ex.result)


def lines(logs: pathlib.Path, prefix: str) -> list[dict]:
    out = []
    for path in sorted(logs.glob(prefix + "*.log")):
        out += [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]
    return out


def when(line: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(line["time"].replace("Z", "+00:00"))


def test_twenty_executions_under_crashes_and_duplicates_end_done_and_identical(chaos_stack):
    from francine.local.stack import create_user_in

    info = chaos_stack.info
    client = Client(info["api_url"], create_user_in(info["env"], info["project"], "chaos"))
    started = []
    for i in range(EXECUTIONS):
        scene = SCENES[i % len(SCENES)]
        sid = client.create_session("ao", scene)["id"]
        key = uuid.uuid4().hex
        e = client.execute(sid, parallel=4, idempotency_key=key)
        started.append((sid, scene, key, e["id"]))
    ended = [client.wait(sid, eid, timeout_s=300) for sid, _, _, eid in started]
    statuses = collections.Counter(e["status"] for e in ended)
    assert statuses == {"done": EXECUTIONS}, [e.get("error") for e in ended]

    with environment(info["env"]):
        ad = make_adapters(Settings.from_env())
        productions = 0
        for sid, scene, key, eid in started:
            ex = ad.store.execution(sid, eid)
            want_eid, want = reference(ex.user, sid, scene, key, 4)
            assert want_eid == eid
            assert ad.blobs.get_result(ex.result) == want, eid
            productions += planning.Shape.from_dict(ex.shape).productions

    # The faults really happened, and what they cost.
    logs = pathlib.Path(info["logs"])
    workers, reducer = lines(logs, "worker-"), lines(logs, "reducer")
    crashes = [x for x in workers + reducer if x["message"].startswith("chaos: crash")]
    assert len(crashes) >= 10
    renders = sum(x["message"].startswith("rendered ") for x in workers)  # francine.worker
    assert renders >= productions
    first_crash: dict[str, dt.datetime] = {}
    recovered: dict[str, dt.datetime] = {}
    for x in sorted(workers + reducer, key=when):
        words = x["message"].split()
        if x["message"].startswith("chaos: crash"):
            first_crash.setdefault(words[-1], when(x))
        elif words[0] == "message" and words[1].rstrip(":") in first_crash:
            recovered.setdefault(words[1].rstrip(":"), when(x))
    slowest = max((recovered[m] - first_crash[m]).total_seconds() for m in recovered)
    assert recovered
    print(f"\nchaos: executions done {statuses['done']} / {EXECUTIONS}; injected crashes "
          f"{len(crashes)}; renders {renders} for {productions} production tasks "
          f"(extra {100 * (renders - productions) / productions:.1f}%); slowest recovery "
          f"{slowest:.1f} s")
