"""Nothing hangs when a whole service dies: each Francine service of the local stack
(a render service: gunicorn master and worker; the reducer; the api; the watchdog) is
killed with SIGKILL, its whole process group, in the middle of an execution. The stack
starts it again (as Cloud Run would), and the watchdog re-drives what the Pub/Sub
emulator abandoned meanwhile: every execution ends ``done``, with the right image.

A stack of its own: its watchdog runs every second and re-drives after 5 s without
progress, which the shared stack of the other tests must not do. Its farm admits 4
tasks at once (fair share on, as ``francine stack up`` has it): most of an execution
waits in the farm's queue when a service dies, and the deliveries lost with it hold
slots until the watchdog publishes them again."""

from __future__ import annotations

import os
import signal
import time
import uuid

import numpy as np
import pytest

from francine.domain import planning
from francine.tools.client import Client
from francine.tools.local.processes import environment

SCENE = {"width": 128, "height": 64, "nao_samples": 4}
PARALLEL = 12


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    from francine.tools.local.stack import Stack, StackOptions

    options = StackOptions(workers=2, state_dir=tmp_path_factory.mktemp("kill-stack"),
                           farm_slots=4,
                           min_backoff_s=1, max_backoff_s=2, max_delivery_attempts=5,
                           watchdog_interval_s=1.0, stall_s=5.0,
                           extra_env={"FRANCINE_MIN_TASK_S": "0"})
    with Stack(options) as s:
        yield s


@pytest.fixture(scope="module")
def own_adapters(own_stack):
    from francine.base.config import Settings
    from francine.tools.wiring import make_adapters

    with environment(own_stack.info["env"]):
        yield make_adapters(Settings.from_env())


def kill(stack, name: str) -> int:
    (child,) = [c for c in stack.processes.children if c.name == name]
    restarts = child.restarts
    os.killpg(child.popen.pid, signal.SIGKILL)  # the master and its workers
    child.popen.wait(10)
    return restarts


@pytest.mark.parametrize("service", ["worker-0", "reducer", "api", "watchdog"])
def test_killing_a_whole_service_mid_execution_still_ends_done(own_stack, own_adapters,
                                                                service):
    from test_api_pipeline import decode_png, reference_image

    from francine.tools.local.stack import create_user_in

    key = create_user_in(own_stack.info["env"], own_stack.info["project"],
                         f"kill-{uuid.uuid4().hex[:6]}")
    client = Client(own_stack.info["api_url"], key)
    sid = client.create_session("ao", SCENE)["id"]
    eid = client.execute(sid, parallel=PARALLEL, tile=32)["id"]
    store = own_adapters.store
    shape = planning.make_shape(128, 64, PARALLEL, 32)
    deadline = time.monotonic() + 60
    while store.task_stats(sid, eid)["done"] < 2:  # mid-execution
        assert time.monotonic() < deadline, "the execution never started"
        time.sleep(0.05)
    restarts = kill(own_stack, service)
    killed = time.monotonic()
    deadline = killed + 180
    while not (ex := store.execution(sid, eid)).final:
        assert time.monotonic() < deadline, f"still {ex.status} after killing {service}"
        time.sleep(0.2)
    assert ex.status == "done", ex.error
    print(f"\n{service} killed: the execution ended done {time.monotonic() - killed:.1f} s "
          "later", end=" ")
    (child,) = [c for c in own_stack.processes.children if c.name == service]
    assert child.restarts == restarts + 1
    image = decode_png(client.result(sid, eid))  # the api answers again
    expected = reference_image(SCENE, eid, PARALLEL)
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
    assert ex.summary["tasks"]["done"] == shape.total_tasks
