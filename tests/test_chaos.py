"""Chaos: on a local stack whose render services and reducer crash 20% of their push
requests (before or after the work) and publish 20% of the messages they handle twice,
and whose render service ``worker-0`` (gunicorn master and worker) and reducer are
killed with SIGKILL mid-run, twenty executions all end done, with images bit-identical
to a clean render of the same executions (the in-memory twins, same ids and seeds).

The stack's supervisor starts the killed services again (as Cloud Run replaces a dead
instance) and its watchdog, every second here, re-drives what stalled for 5 s (pushes
that the Pub/Sub emulator abandoned while a service was down).

    .venv/bin/python -m pytest tests/test_chaos.py -s   # also prints the figures
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import pathlib
import signal
import time
import uuid

import pytest

from francine.base.config import Settings
from francine.domain import planning
from francine.domain.records import Session
from francine.handlers.reducer import Reducer
from francine.handlers.worker import Worker
from francine.services import executions
from francine.tools.client import Client
from francine.tools.local.processes import environment
from francine.tools.wiring import make_adapters
from francine.twins import pump, twin_adapters

EXECUTIONS = 20
PARALLEL = 4
# Small images, but 100 × (1 + n²) rays a pixel: a tenth of a second a render, so
# that the kills come while the farm is at work (a default 32×32 renders in 0.1 ms).
SCENES = [{"width": 32, "height": 32, "nsubsamples": 10, "nao_samples": n}
          for n in (28, 30, 32, 34)]
KILLED = ("worker-0", "reducer")


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory):
    from francine.tools.local.stack import Stack, StackOptions

    # Ten attempts: a message crashes all of them with probability 0.2^10.
    options = StackOptions(workers=2, state_dir=tmp_path_factory.mktemp("chaos"),
                           min_backoff_s=1, max_backoff_s=2, max_delivery_attempts=10,
                           watchdog_interval_s=1.0, stall_s=5.0,
                           extra_env={"FRANCINE_CHAOS_CRASH_RATE": "0.2",
                                      "FRANCINE_CHAOS_DUPLICATE_RATE": "0.2",
                                      "FRANCINE_MIN_TASK_S": "0"})
    with Stack(options) as s:
        yield s


def reference(user: str, sid: str, scene: dict, key: str) -> tuple[str, bytes]:
    """The same execution rendered without faults, over the twins."""
    ad = twin_adapters(Settings(min_task_s=0))
    ad.store.create_session(Session(sid, user, "ao", "png", scene))
    started, _ = executions.start(ad, user, sid, {"parallel": PARALLEL}, idempotency_key=key)
    pump(ad, Worker(ad), Reducer(ad))
    ex = ad.store.execution(sid, started.id)
    assert ex.status == "done", ex.error
    return ex.id, ad.blobs.get_result(ex.result)


def lines(logs: pathlib.Path, prefix: str) -> list[dict]:
    out = []
    for path in sorted(logs.glob(prefix + "*.log")):
        out += [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]
    return out


def when(line: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(line["time"].replace("Z", "+00:00"))


def renders(logs: pathlib.Path) -> int:
    return sum(x["message"].startswith("rendered ") for x in lines(logs, "worker-"))


def kill(stack, name: str) -> tuple[int, dt.datetime]:
    """SIGKILL the whole process group of ``name``; its restart count and the time."""
    (child,) = [c for c in stack.processes.children if c.name == name]
    restarts = child.restarts
    os.killpg(child.popen.pid, signal.SIGKILL)  # the master and its workers
    child.popen.wait(10)
    return restarts, dt.datetime.now(dt.UTC)


def test_twenty_executions_under_crashes_duplicates_and_kills_end_done_and_identical(
        chaos_stack):
    from francine.tools.local.stack import create_user_in

    info = chaos_stack.info
    logs = pathlib.Path(info["logs"])
    client = Client(info["api_url"], create_user_in(info["env"], info["project"], "chaos"))
    started, kills = [], {}

    def submit(i: int) -> None:
        scene = SCENES[i % len(SCENES)]
        sid = client.create_session("ao", scene)["id"]
        key = uuid.uuid4().hex
        started.append((sid, scene, key, client.execute(sid, parallel=PARALLEL,
                                                        idempotency_key=key)["id"]))

    for i in range(EXECUTIONS // 2):
        submit(i)
    deadline = time.monotonic() + 120
    while renders(logs) < 2:  # the farm is at work: kill a render service
        assert time.monotonic() < deadline, "nothing rendered"
        time.sleep(0.05)
    kills["worker-0"] = kill(chaos_stack, "worker-0")
    submitted = len(started) * planning.make_shape(32, 32, PARALLEL, 32).productions
    assert renders(logs) < submitted, "the render service was killed after the work"
    for i in range(EXECUTIONS // 2, EXECUTIONS):  # the api still takes them
        submit(i)
    kills["reducer"] = kill(chaos_stack, "reducer")
    sid, _, _, eid = started[-1]
    assert client.execution(sid, eid)["status"] != "done", "the reducer was killed after the work"

    ended = [client.wait(sid, eid, timeout_s=300) for sid, _, _, eid in started]
    statuses = collections.Counter(e["status"] for e in ended)
    assert statuses == {"done": EXECUTIONS}, [e.get("error") for e in ended]
    for name, (restarts, _) in kills.items():
        (child,) = [c for c in chaos_stack.processes.children if c.name == name]
        assert child.restarts == restarts + 1, name

    with environment(info["env"]):
        ad = make_adapters(Settings.from_env())
        productions = 0
        for sid, scene, key, eid in started:
            ex = ad.store.execution(sid, eid)
            want_eid, want = reference(ex.user, sid, scene, key)
            assert want_eid == eid
            assert ad.blobs.get_result(ex.result) == want, eid
            productions += planning.Shape.from_dict(ex.shape).productions

    # The faults really happened, and what they cost.
    workers, reducer = lines(logs, "worker-"), lines(logs, "reducer")
    crashes = [x for x in workers + reducer if x["message"].startswith("chaos: crash")]
    duplicates = [x for x in workers + reducer if x["message"].startswith("chaos: publish")]
    assert len(crashes) >= 10 and len(duplicates) >= 5
    rendered = renders(logs)
    # every task rendered at least once (a SIGKILL may land between storing a task and
    # logging it: one line per kill may be missing)
    assert rendered >= productions - len(kills)
    first_crash: dict[str, dt.datetime] = {}
    recovered: dict[str, dt.datetime] = {}
    for x in sorted(workers + reducer, key=when):
        words = x["message"].split()
        if x["message"].startswith("chaos: crash"):
            first_crash.setdefault(words[-1], when(x))
        elif words[0] == "message" and words[1].rstrip(":") in first_crash:
            recovered.setdefault(words[1].rstrip(":"), when(x))
    assert recovered
    slowest_crash = max((recovered[m] - first_crash[m]).total_seconds() for m in recovered)
    # A killed service has recovered when it handles a message again.
    back = {}
    for name, (_, at) in kills.items():
        handled = [when(x) for x in lines(logs, name)
                   if x["message"].startswith("message ") and when(x) > at]
        assert handled, f"{name} never handled a message after it was killed"
        back[name] = (min(handled) - at).total_seconds()
    print(f"\nchaos: executions done {statuses['done']} / {EXECUTIONS}; injected crashes "
          f"{len(crashes)}, duplicated messages {len(duplicates)}; renders {rendered} for "
          f"{productions} production tasks (extra "
          f"{100 * (rendered - productions) / productions:.1f}%); slowest recovery from a "
          f"crash {slowest_crash:.1f} s; "
          + "; ".join(f"{n} killed, serving again after {s:.1f} s" for n, s in back.items()))
