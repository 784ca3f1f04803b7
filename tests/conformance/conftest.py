"""Each conformance test runs twice: on the in-memory twins and on the emulator-backed
adapters (the local stack's Firestore, Pub/Sub and Cloud Storage emulators)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from francine.tools.local.processes import environment


class EmulatorPubSub:
    """Raw topics and pull subscriptions on the Pub/Sub emulator."""

    def __init__(self, project: str):
        from google.cloud import pubsub_v1

        self.project = project
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()

    def topic(self, name: str) -> str:
        path = self.publisher.topic_path(self.project, name)
        self.publisher.create_topic(name=path)
        return name

    def subscribe(self, topic: str, name: str, dead_letter_topic: str | None = None,
                  max_attempts: int = 5) -> str:
        request = {"name": self.subscriber.subscription_path(self.project, name),
                   "topic": self.publisher.topic_path(self.project, topic),
                   "ack_deadline_seconds": 10}
        if dead_letter_topic:
            request["dead_letter_policy"] = {
                "dead_letter_topic": self.publisher.topic_path(self.project, dead_letter_topic),
                "max_delivery_attempts": max_attempts}
        self.subscriber.create_subscription(request=request)
        return name

    def publish(self, topic: str, payload: bytes, **attributes: str) -> None:
        self.publisher.publish(self.publisher.topic_path(self.project, topic), payload,
                               **attributes).result(timeout=30)

    def pull(self, subscription: str, tries: int = 30) -> list[tuple[str, bytes, dict, int]]:
        import time

        path = self.subscriber.subscription_path(self.project, subscription)
        for _ in range(tries):  # the emulator may answer empty while a message is on its way
            resp = self.subscriber.pull(request={"subscription": path, "max_messages": 10},
                                        timeout=5)
            if resp.received_messages:
                return [(m.ack_id, m.message.data, dict(m.message.attributes),
                         m.delivery_attempt) for m in resp.received_messages]
            time.sleep(0.1)
        return []

    def push_concurrency(self, topic: str, name: str, messages: int, hold_s: float) -> int:
        """Publish ``messages`` to a push subscription whose endpoint (a server in this
        process) holds each request ``hold_s``; returns the most requests it saw at once."""
        import http.server
        import threading
        import time

        lock, seen = threading.Lock(), {"now": 0, "most": 0, "done": 0}

        class Endpoint(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    seen["now"] += 1
                    seen["most"] = max(seen["most"], seen["now"])
                time.sleep(hold_s)
                with lock:
                    seen["now"] -= 1
                    seen["done"] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            self.subscriber.create_subscription(request={
                "name": self.subscriber.subscription_path(self.project, name),
                "topic": self.publisher.topic_path(self.project, topic),
                "push_config": {"push_endpoint": f"http://127.0.0.1:{server.server_port}/"},
                "ack_deadline_seconds": 60})
            for i in range(messages):
                self.publish(topic, b'{"n": %d}' % i, type="produce")
            deadline = time.monotonic() + 60 + messages * hold_s
            while seen["done"] < messages and time.monotonic() < deadline:
                time.sleep(0.05)
            assert seen["done"] >= messages, f"pushed {seen['done']} of {messages}"
            return seen["most"]
        finally:
            self.subscriber.delete_subscription(request={
                "subscription": self.subscriber.subscription_path(self.project, name)})
            server.shutdown()
            server.server_close()

    def ack(self, subscription: str, ack_id: str) -> None:
        self.subscriber.acknowledge(request={
            "subscription": self.subscriber.subscription_path(self.project, subscription),
            "ack_ids": [ack_id]})

    def nack(self, subscription: str, ack_id: str) -> None:
        self.subscriber.modify_ack_deadline(request={
            "subscription": self.subscriber.subscription_path(self.project, subscription),
            "ack_ids": [ack_id], "ack_deadline_seconds": 0})


class TwinPubSub:
    """The same operations on a BusTwin."""

    def __init__(self, bus):
        self.bus = bus

    def topic(self, name: str) -> str:
        return name

    def subscribe(self, topic, name, dead_letter_topic=None, max_attempts=5):
        self.bus.subscribe(topic, name, dead_letter_topic, max_attempts)
        return name

    def publish(self, topic: str, payload: bytes, **attributes: str) -> None:
        import json

        self.bus.publish(topic, json.loads(payload), **attributes)

    def pull(self, subscription: str, tries: int = 1):
        import json

        return [(d.ack_id, json.dumps(d.message.payload).encode(), d.message.attributes,
                 d.attempt) for d in self.bus.pull(subscription, 10)]

    def push_concurrency(self, topic: str, name: str, messages: int, hold_s: float) -> int:
        """The same on a push subscription of the twin: deliveries are handed out while
        the subscription allows, each held (not acknowledged) for one round."""
        from francine.twins.bus import EMULATOR_PUSH_CONCURRENCY

        self.bus.subscribe(topic, name, max_in_flight=EMULATOR_PUSH_CONCURRENCY)
        for i in range(messages):
            self.publish(topic, b'{"n": %d}' % i, type="produce")
        most = done = 0
        while done < messages:
            held = self.bus.pull(name, messages)
            most = max(most, len(held))
            for d in held:
                self.bus.ack(d.ack_id)
            done += len(held)
        return most

    def ack(self, subscription: str, ack_id: str) -> None:
        self.bus.ack(ack_id)

    def nack(self, subscription: str, ack_id: str) -> None:
        self.bus.nack(ack_id)


def http_get(url: str) -> bytes:
    import requests

    response = requests.get(url, timeout=30)
    response.raise_for_status()
    return response.content


def http_put(url: str, data: bytes) -> None:
    """As a client sends a file to an upload URL (``francine.tools.client.attach_file``)."""
    import requests

    requests.put(url, data=data, timeout=30,
                 headers={"Content-Type": "application/octet-stream"}).raise_for_status()


@dataclass
class Backend:
    name: str
    store: object  # the ports: Store, Bus, Blobs
    bus: object
    blobs: object
    pubsub: object  # raw topics and subscriptions
    produce_topics: list[str]
    events_topic: str
    status_topic: str
    #: What a client does with a result URL (GET) and an upload URL (PUT the bytes).
    download: Callable[[str], bytes]
    upload: Callable[[str, bytes], None]


@pytest.fixture(params=["twin", "emulator"])
def backend(request) -> Backend:
    if request.param == "twin":
        from francine.twins import twin_adapters
        from francine.twins.bus import EVENTS_TOPIC, PRODUCE_TOPIC, STATUS_TOPIC

        ad = twin_adapters()
        return Backend("twin", ad.store, ad.bus, ad.blobs, TwinPubSub(ad.bus),
                       [PRODUCE_TOPIC], EVENTS_TOPIC, STATUS_TOPIC, ad.blobs.serve,
                       ad.blobs.receive)
    from francine.adapters.bus import produce_topics

    stack = request.getfixturevalue("stack")
    ad = request.getfixturevalue("adapters")
    with environment(stack.info["env"]):
        pubsub = EmulatorPubSub(ad.settings.project)
    return Backend("emulator", ad.store, ad.bus, ad.blobs, pubsub,
                   produce_topics(ad.settings), ad.settings.events_topic,
                   ad.settings.status_topic, http_get, http_put)


@pytest.fixture
def unique(backend) -> Iterator[str]:
    """A name of this test's own (its sessions' ids start with it). On the emulator the
    store is the local stack's, shared with the pipeline tests: an execution this test
    left active would be swept by the stack's watchdog for ever (its made-up tasks
    re-driven to the render workers and the reducer), so its session goes afterwards,
    with everything below it."""
    name = f"conf-{uuid.uuid4().hex[:10]}"
    yield name
    for ex in backend.store.active_executions():
        if ex.session_id.startswith(name):
            backend.store.delete_session(ex.session_id)
