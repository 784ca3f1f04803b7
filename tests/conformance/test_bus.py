"""The Bus port and the delivery semantics the scheduler relies on, on the Pub/Sub
emulator and on the twin: every subscription gets every message, with its type; an
unacknowledged message comes back with its attempt counted; after the last attempt it
goes to the dead-letter topic with the attributes Pub/Sub adds."""

from __future__ import annotations

import json

from francine.domain.envelope import DEAD_LETTER_ATTRIBUTE


def test_tasks_and_events_carry_references_and_their_type(backend, unique):
    pubsub = backend.pubsub
    subs = [pubsub.subscribe(t, f"{unique}-{i}") for i, t in enumerate(backend.produce_topics)]
    events = pubsub.subscribe(backend.events_topic, f"{unique}-events")
    backend.bus.publish_tasks(unique, "e1", [(i, f"t{i}") for i in range(len(subs))])
    backend.bus.publish_done(unique, "e1", "p0")
    got = sorted((json.loads(data)["task_id"], attrs["type"])
                 for s in subs for _, data, attrs, _ in pubsub.pull(s))
    assert got == [(f"t{i}", "produce") for i in range(len(subs))]
    [(_, data, attrs, _)] = pubsub.pull(events)
    assert json.loads(data) == {"session_id": unique, "execution_id": "e1", "node": "p0"}
    assert attrs["type"] == "task_done"


def test_a_piece_of_a_copy_carries_its_band_and_goes_to_the_shard_asked(backend, unique):
    pubsub = backend.pubsub
    subs = [pubsub.subscribe(t, f"{unique}-{i}") for i, t in enumerate(backend.produce_topics)]
    backend.bus.publish_tasks(unique, "e1", [(1, "t0", "0/2"), (2, "t0", "1/2")])
    got = [(i, json.loads(data)) for i, s in enumerate(subs) for _, data, _, _ in pubsub.pull(s)]
    shards = len(subs)
    assert sorted(got, key=lambda x: x[1]["piece"]) == [
        (1 % shards, {"session_id": unique, "execution_id": "e1", "task_id": "t0",
                      "piece": "0/2"}),
        (2 % shards, {"session_id": unique, "execution_id": "e1", "task_id": "t0",
                      "piece": "1/2"})]


def test_unacknowledged_messages_come_back_then_go_to_the_dead_letter_topic(backend, unique):
    pubsub = backend.pubsub
    topic, dead = pubsub.topic(f"{unique}-t"), pubsub.topic(f"{unique}-dead")
    sub = pubsub.subscribe(topic, f"{unique}-s", dead_letter_topic=dead, max_attempts=5)
    dead_sub = pubsub.subscribe(dead, f"{unique}-d")
    pubsub.publish(topic, json.dumps({"n": 1}).encode(), type="produce")
    attempts = []
    for _ in range(5):
        [(ack_id, data, attrs, attempt)] = pubsub.pull(sub)
        assert json.loads(data) == {"n": 1} and attrs["type"] == "produce"
        attempts.append(attempt)
        pubsub.nack(sub, ack_id)
    assert attempts == [1, 2, 3, 4, 5]
    assert pubsub.pull(sub, tries=3) == []  # not delivered a sixth time
    [(ack_id, data, attrs, _)] = pubsub.pull(dead_sub)
    assert json.loads(data) == {"n": 1} and attrs["type"] == "produce"
    assert attrs[DEAD_LETTER_ATTRIBUTE].endswith(f"{unique}-s")
    assert attrs["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    pubsub.ack(dead_sub, ack_id)


def test_an_acknowledged_message_is_not_delivered_again(backend, unique):
    pubsub = backend.pubsub
    topic = pubsub.topic(f"{unique}-t")
    sub = pubsub.subscribe(topic, f"{unique}-s")
    pubsub.publish(topic, b'{"n": 2}', type="task_done")
    [(ack_id, *_)] = pubsub.pull(sub)
    pubsub.ack(sub, ack_id)
    pubsub.publish(topic, b'{"n": 3}', type="task_done")
    [(_, data, _, attempt)] = pubsub.pull(sub)
    # without a dead-letter policy, Pub/Sub does not count attempts
    assert json.loads(data) == {"n": 3} and attempt == 0


def test_a_push_subscription_has_at_most_two_requests_in_flight(backend, unique):
    """The Pub/Sub emulator pushes at most 2 requests at a time per subscription,
    however many messages wait and however many the endpoint could take: why the local
    stack shards production over one topic per worker, and the twin's figure for it."""
    pubsub = backend.pubsub
    topic = pubsub.topic(f"{unique}-t")
    assert pubsub.push_concurrency(topic, f"{unique}-push", messages=8, hold_s=0.4) == 2


def test_a_status_carries_its_type(backend, unique):
    pubsub = backend.pubsub
    sub = pubsub.subscribe(backend.status_topic, f"{unique}-status")
    message = {"session_id": unique, "execution_id": "e1", "status": "done"}
    backend.bus.publish_status(message)
    got = [(json.loads(data), attrs["type"]) for _, data, attrs, _ in pubsub.pull(sub)]
    # (on the stack, another test's execution may end meanwhile: only ours is looked at)
    assert [g for g in got if g[0].get("session_id") == unique] == [
        (message, "execution_status")]


def test_the_render_gate_is_open_while_production_has_a_subscriber(backend):
    """The pipeline's production topics have their subscriptions (the render service's
    push subscription; the twin's ``render``): renders are taken."""
    gate = backend.bus.render_gate()
    gate.check()
    gate.check()
