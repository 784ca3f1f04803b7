"""Overload queues, never fails: on a local stack of 2 render workers whose front end
answers 429 while both are busy (Cloud Run at max instances), four users submit
together ten times what the farm runs at once. Every execution ends ``done`` with the
right image, and nothing is counted against a task: no failed pass, no replacement.

Two stacks of their own: 2 workers with farm-wide admission (``farm_slots`` = 2: the
rest waits in Firestore, so the workers are hardly ever refused a delivery), and 1
worker without it (every task published at once: deliveries are refused, retried by
the emulator, dead-lettered after 5 attempts, and queued again because they never
reached a render)."""

from __future__ import annotations

import concurrent.futures
import uuid

import numpy as np
import pytest

from francine.domain import planning
from francine.tools.client import Client
from francine.tools.local.processes import environment

SCENE = {"width": 64, "height": 32, "nao_samples": 6}
PARALLEL = 5  # production tasks per execution; 2 executions per worker: 10× the farm


@pytest.fixture(scope="module", params=[(2, 2), (1, 0)], ids=["farm-admission", "no-admission"])
def farm_stack(request, tmp_path_factory):
    from francine.tools.local.stack import Stack, StackOptions

    workers, slots = request.param
    options = StackOptions(workers=workers, farm_slots=slots, refuse_when_busy=True,
                           state_dir=tmp_path_factory.mktemp(f"overload-{slots}"),
                           min_backoff_s=1, max_backoff_s=2, max_delivery_attempts=5,
                           # what the emulator abandons, the watchdog re-drives soon
                           watchdog_interval_s=2.0, stall_s=10.0,
                           extra_env={"FRANCINE_MIN_TASK_S": "0"})
    with Stack(options) as s:
        with environment(s.info["env"]):
            from francine.base.config import Settings
            from francine.tools.wiring import make_adapters

            s.test_adapters = make_adapters(Settings.from_env())
        yield s


def refusals(stack) -> int:
    """Pushes answered 429 by the stack's front end (every worker busy)."""
    return stack.frontend.refused


def test_ten_times_the_farm_from_several_users_all_end_done(farm_stack):
    from test_api_pipeline import decode_png, reference_image

    from francine.tools.local.stack import create_user_in

    stack, store = farm_stack, farm_stack.test_adapters.store
    workers = stack.options.workers
    users = 2 * workers  # together: ten times what the farm runs at once
    clients = [Client(stack.info["api_url"], create_user_in(
        stack.info["env"], stack.info["project"], f"overload-{i}-{uuid.uuid4().hex[:6]}"))
        for i in range(users)]
    sessions = [c.create_session("ao", SCENE)["id"] for c in clients]

    def submit(i: int) -> str:
        return clients[i].execute(sessions[i], parallel=PARALLEL, tile=64)["id"]

    with concurrent.futures.ThreadPoolExecutor(users) as pool:  # together
        eids = list(pool.map(submit, range(users)))
    statuses = [c.wait(sid, eid, timeout_s=240) for c, sid, eid in zip(clients, sessions, eids,
                                                                      strict=True)]
    assert [s["status"] for s in statuses] == ["done"] * users, [s["error"] for s in statuses]
    shape = planning.make_shape(64, 32, PARALLEL, 64)
    for c, sid, eid, status in zip(clients, sessions, eids, statuses, strict=True):
        assert status["tasks"]["done"] == shape.total_tasks
        assert status["tasks"]["failed"] == 0 and status["tasks"]["replaced"] == 0
        for i in range(shape.productions):
            task = store.get_task(sid, eid, planning.task_id(eid, planning.node_name(0, i)))
            assert task.failures == 0 and task.generation == 0 and task.queue is None
        image = decode_png(c.result(sid, eid))
        expected = reference_image(SCENE, eid, PARALLEL)
        assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
    refused = refusals(stack)
    if stack.options.farm_slots:
        # Admission kept the farm's own deliveries within its size: every slot is
        # freed before the next task is published to it. Only what admission does not
        # count (a duplicate, a speculative copy, a re-drive on a loaded machine) may
        # find both workers busy: a few, against the dozens without admission.
        assert store.count_out(stack.test_adapters.settings.produce_topic) == 0
        assert refused <= 5, refused
    else:
        assert refused > 0  # the overload was real: deliveries were refused
    print(f"\n{len(eids)} executions of {PARALLEL} tasks on {workers} workers: all done, "
          f"{refused} deliveries refused with 429", end=" ")
