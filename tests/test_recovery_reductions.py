"""Recovery above the leaves, on the emulators (the hand-driven farm of
test_failure_budget): a dead-lettered event of a *reduction* is re-driven, a lost
reduction output is produced again, and a dead-lettered production task whose pass
exists does not fail the execution."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from test_failure_budget import Farm, reference

from francine.domain import planning
from francine.domain.envelope import DEAD_LETTER_ATTRIBUTE, Message
from francine.tools.local.processes import environment

PARALLEL = 8  # 8 passes, fan-in 3: p0..p7 → r1.0, r1.1, r1.2 → r2.0


@pytest.fixture
def farm_and_user(stack, adapters, client) -> tuple[Farm, str]:
    """The hand-driven farm, and the client's user (to own sessions made behind it)."""
    sid = client.create_session("ao", {"width": 8, "height": 8})["id"]
    return Farm(stack, adapters), adapters.store.get_session(sid).user


def dead_letter(node: str, sid: str, eid: str, **payload) -> Message:
    return Message(uuid.uuid4().hex, {"session_id": sid, "execution_id": eid, "node": node,
                                      **payload},
                   {"type": "task_done", DEAD_LETTER_ATTRIBUTE: "events-reduce",
                    "CloudPubSubDeadLetterSourceDeliveryCount": "10"})


def render_all(farm: Farm, sid: str, eid: str) -> None:
    for i in range(PARALLEL):
        assert farm.deliver(sid, eid, f"p{i}") == "rendered"


def image_of(client, sid, eid):
    from test_api_pipeline import decode_png

    return decode_png(client.result(sid, eid)).astype(int)


def test_a_dead_lettered_reduction_event_is_re_driven(farm_and_user, client):
    farm, user = farm_and_user
    sid, eid = farm.start(user, parallel=PARALLEL)
    shape = planning.Shape.from_dict(farm.ad.store.execution(sid, eid).shape)
    assert shape.level_sizes() == [8, 3, 1]
    render_all(farm, sid, eid)
    for i in range(6):
        farm.announce(sid, eid, f"p{i}")  # r1.0, r1.1 reduce; their events go nowhere
    r11 = farm.ad.store.get_task(sid, eid, planning.task_id(eid, "r1.1"))
    assert r11.status == "done"
    # r1.1's event was never taken (the reducer refused it until dead-lettering).
    assert farm.reducer.handle(dead_letter("r1.1", sid, eid)).startswith("re-driven")
    root = farm.ad.store.get_task(sid, eid, planning.task_id(eid, "r2.0"))
    assert root.redrives == 1
    ex = farm.run(sid, eid)
    assert ex.status == "done", ex.error
    assert client.execution(sid, eid)["tasks"]["redriven"] == 1
    assert np.abs(image_of(client, sid, eid) - reference(eid, PARALLEL, {})).max() <= 1


def test_a_lost_reduction_output_is_produced_again(farm_and_user, client, stack):
    farm, user = farm_and_user
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    sid, eid = farm.start(user, parallel=PARALLEL)
    render_all(farm, sid, eid)
    for i in range(6):  # r1.0 and r1.1 reduce (r1.2 waits for p6, p7's events)
        farm.announce(sid, eid, f"p{i}")
    with environment(stack.info["env"]):
        gcs = storage.Client(project=stack.info["project"], credentials=AnonymousCredentials())
        gcs.bucket(farm.ad.settings.partials_bucket).blob(
            farm.ad.blobs.partial_name(sid, eid, "r1.0")).delete()
    farm.announce(sid, eid, "p6")
    farm.announce(sid, eid, "p7")  # r1.2 reduces; the root finds r1.0's output lost
    r10 = farm.ad.store.get_task(sid, eid, planning.task_id(eid, "r1.0"))
    assert r10.status == "pending"
    ex = farm.run(sid, eid)
    assert ex.status == "done", ex.error
    assert np.abs(image_of(client, sid, eid) - reference(eid, PARALLEL, {})).max() <= 1


def test_a_dead_lettered_production_task_whose_pass_exists_is_not_a_failure(farm_and_user,
                                                                            client):
    farm, user = farm_and_user
    sid, eid = farm.start(user, parallel=PARALLEL)
    render_all(farm, sid, eid)
    # p5 rendered, but its acknowledgement was lost every time: dead-lettered.
    dead = Message(uuid.uuid4().hex, {"session_id": sid, "execution_id": eid,
                                      "task_id": planning.task_id(eid, "p5")},
                   {"type": "produce", DEAD_LETTER_ATTRIBUTE: "produce-render",
                    "CloudPubSubDeadLetterSourceDeliveryCount": "10"})
    assert farm.reducer.handle(dead).startswith("ignored: the task is done")
    ex = farm.run(sid, eid)
    assert ex.status == "done", ex.error
    assert np.abs(image_of(client, sid, eid) - reference(eid, PARALLEL, {})).max() <= 1
