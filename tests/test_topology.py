"""The local stack builds the topology of ``francine.domain.topology``, as the Pulumi program
does (tests/test_infra.py): the same routes, dead-letter topics and retry policy."""

from __future__ import annotations

from francine.domain import topology
from francine.tools.local.processes import environment


def test_topology_is_consistent():
    topology.check()
    assert {r.dead_letter for r in topology.ROUTES} <= set(topology.TOPICS)
    assert topology.route("produce-render").endpoint == topology.RENDERER


def test_the_local_stack_builds_every_route_of_the_topology(stack):
    from google.cloud import pubsub_v1

    project = stack.info["project"]
    with environment(stack.info["env"]):
        subscriber = pubsub_v1.SubscriberClient()
        subscriptions = {
            s.name.rsplit("/", 1)[1]: s
            for s in subscriber.list_subscriptions(request={"project": f"projects/{project}"})
        }
    workers = len(stack.info["workers"])
    topics = f"projects/{project}/topics/francine-"
    for route in topology.ROUTES:
        sharded = route.topic == "produce" and workers > 1
        names = [f"francine-{route.key}-{i}" for i in range(workers)] if sharded else [
            f"francine-{route.key}"]
        for index, name in enumerate(names):
            sub = subscriptions[name]
            topic = f"{topics}{route.topic}" + (f"-{index}" if sharded else "")
            assert sub.topic == topic, name
            assert sub.dead_letter_policy.dead_letter_topic == topics + route.dead_letter, name
            assert sub.dead_letter_policy.max_delivery_attempts == 5
            endpoint = sub.push_config.push_endpoint
            if route.endpoint == topology.RENDERER:  # every shard: the workers' front end
                assert endpoint == stack.info["render_url"], name
            else:  # as in the cloud: the reducer learns the topic from the path
                assert endpoint == f"{stack.info['reducer_url']}/{topic}", name
    hold = subscriptions[f"francine-{topology.HOLD.key}"]
    assert hold.topic == topics + topology.HOLD.topic
    assert not hold.push_config.push_endpoint
