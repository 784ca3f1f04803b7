"""The whole pipeline on one machine: emulators, api, render workers, reducer.

The processes are the same entry points that run in the cloud (functions-framework for
the api and the reducer, gunicorn for the render service), wired with the same Pub/Sub
push subscriptions, retry and dead-letter policies. Two things differ, both because of
the Pub/Sub emulator: retries back off 1–10 s instead of 10–600 s (so that failure tests
finish), and production is sharded over one topic per worker, because the emulator
pushes at most 2 requests at a time per subscription whatever the endpoint can take.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import time
from dataclasses import dataclass, field

from francine import users
from francine.config import Settings
from francine.local.emulators import Emulators
from francine.local.processes import ProcessGroup, environment, free_port, http_ok

REPO = pathlib.Path(__file__).resolve().parents[3]
FUNCTIONS = REPO / "functions"


@dataclass
class StackOptions:
    port: int | None = None
    workers: int = 2
    state_dir: pathlib.Path = field(default_factory=lambda: pathlib.Path(".francine"))
    project: str = "francine-local"
    min_backoff_s: int = 1
    max_backoff_s: int = 10
    max_delivery_attempts: int = 5
    #: Extra environment for every Francine process (e.g. FRANCINE_ADMISSION_LIMIT).
    extra_env: dict[str, str] = field(default_factory=dict)


def _bin(name: str) -> str:
    path = pathlib.Path(sys.executable).parent / name
    return str(path) if path.exists() else name


class Stack:
    def __init__(self, options: StackOptions | None = None):
        self.options = options or StackOptions()
        self.state_dir = pathlib.Path(self.options.state_dir).resolve()
        self.emulators = Emulators(self.options.project, log_dir=str(self.state_dir / "logs"))
        self.processes = ProcessGroup(str(self.state_dir / "logs"))
        self.info: dict = {}

    def start(self) -> dict:
        """Start everything; returns (and writes to state_dir/stack.json) the api URL,
        a ready-made user's API key and the emulator addresses."""
        o = self.options
        if not FUNCTIONS.is_dir():
            raise RuntimeError(f"functions/ not found at {FUNCTIONS}: run from a checkout")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            emulator_env = self.emulators.start()
            # FRANCINE_* variables of the caller (an admission limit, say) carry over.
            settings = dataclasses.replace(
                Settings.from_env(), project=o.project, produce_shards=max(1, o.workers),
                cache_dir=str(self.state_dir / "cache"))
            env = {**os.environ, **emulator_env, **settings.to_env(), **o.extra_env,
                   "PYTHONUNBUFFERED": "1"}
            self._create_topics_and_buckets(env, settings)
            reducer_url = self._serve_function("reducer", "cloudevent", env)
            threads = max(1, (os.cpu_count() or 1) // max(1, o.workers))
            worker_urls = [self._serve_worker(i, {**env, "NUMBA_NUM_THREADS": str(threads)})
                           for i in range(o.workers)]
            self._subscribe(env, settings, worker_urls, reducer_url)
            api_url = self._serve_api(env, port=o.port)
            key = create_user_in(env, o.project, "local")
        except BaseException:
            self.stop()
            raise
        self.info = {"api_url": api_url, "api_key": key, "project": o.project,
                     "workers": worker_urls, "reducer_url": reducer_url,
                     "emulators": emulator_env, "env": {**emulator_env, **settings.to_env()},
                     "logs": str(self.state_dir / "logs")}
        (self.state_dir / "stack.json").write_text(json.dumps(self.info, indent=2))
        return self.info

    def stop(self) -> None:
        # Signal every process at once; then wait for each (and kill what lingers).
        self.processes.terminate_all()
        self.emulators.terminate()
        self.processes.stop_all()
        self.emulators.stop()
        state = self.state_dir / "stack.json"
        if state.exists():
            state.unlink()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- pieces ------------------------------------------------------------------------
    def _create_topics_and_buckets(self, env: dict, settings: Settings) -> None:
        from francine.adapters.blobs import Blobs
        from francine.adapters.bus import produce_topics
        from francine.clients import make_clients

        with environment(env):
            clients = make_clients(settings)
            for topic in [*produce_topics(settings), settings.events_topic,
                          *dead_letter_topics(settings)]:
                clients.publisher.create_topic(
                    name=clients.publisher.topic_path(settings.project, topic))
            Blobs(clients.storage, settings).ensure_buckets()

    def _serve_function(self, name: str, signature: str, env: dict, port: int | None = None,
                        ready_path: str = "/") -> str:
        port = port or free_port()
        child = self.processes.start(name, [
            _bin("functions-framework"), "--target", name, "--signature-type", signature,
            "--source", str(FUNCTIONS / name / "main.py"), "--host", "127.0.0.1",
            "--port", str(port)], env=env, cwd=str(FUNCTIONS / name))
        url = f"http://127.0.0.1:{port}"
        self.processes.wait_ready(child, lambda: http_ok(url + ready_path), 60)
        return url

    def _serve_api(self, env: dict, port: int | None = None) -> str:
        """The api's ASGI application under uvicorn (functions/api/main.py ``app``): bodies
        and waits on the event loop, requests on the api's own threads."""
        port = port or free_port()
        child = self.processes.start("api", [
            _bin("uvicorn"), "main:app", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--timeout-keep-alive", "5", "--log-level", "warning"],
            env=env, cwd=str(FUNCTIONS / "api"))
        url = f"http://127.0.0.1:{port}"
        self.processes.wait_ready(child, lambda: http_ok(url + "/healthz"), 60)
        return url

    def _serve_worker(self, index: int, env: dict) -> str:
        port = free_port()
        # The same command as the container's: one process, one thread, no timeout.
        child = self.processes.start(f"worker-{index}", [
            _bin("gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--threads", "1", "--worker-class", "gthread", "--timeout", "0", "main:app"],
            env=env, cwd=str(FUNCTIONS / "renderer"))
        url = f"http://127.0.0.1:{port}/"
        self.processes.wait_ready(child, lambda: http_ok(url), 60)
        return url

    def _subscribe(self, env: dict, settings: Settings, worker_urls: list[str],
                   reducer_url: str) -> None:
        from google.cloud import pubsub_v1
        from google.protobuf import duration_pb2

        from francine.adapters.bus import produce_topics

        o = self.options
        retry = pubsub_v1.types.RetryPolicy(
            minimum_backoff=duration_pb2.Duration(seconds=o.min_backoff_s),
            maximum_backoff=duration_pb2.Duration(seconds=o.max_backoff_s))
        with environment(env):
            sub = pubsub_v1.SubscriberClient()
            pub = pubsub_v1.PublisherClient()
            p = settings.project
            produce_dead, events_dead = dead_letter_topics(settings)

            def subscribe(name, topic, endpoint, dead_topic=None):
                request = {"name": sub.subscription_path(p, name),
                           "topic": pub.topic_path(p, topic),
                           "push_config": {"push_endpoint": endpoint},
                           "ack_deadline_seconds": 600, "retry_policy": retry}
                if dead_topic:
                    request["dead_letter_policy"] = {
                        "dead_letter_topic": pub.topic_path(p, dead_topic),
                        "max_delivery_attempts": o.max_delivery_attempts}
                sub.create_subscription(request=request)

            for topic, url in zip(produce_topics(settings), worker_urls, strict=True):
                subscribe(f"{topic}-render", topic, url, produce_dead)
            subscribe(f"{settings.events_topic}-reduce", settings.events_topic, reducer_url,
                      events_dead)
            subscribe(f"{produce_dead}-reduce", produce_dead, reducer_url)
            subscribe(f"{events_dead}-reduce", events_dead, reducer_url)


def dead_letter_topics(settings: Settings) -> tuple[str, str]:
    return f"{settings.produce_topic}-dead", f"{settings.events_topic}-dead"


def create_user_in(env: dict, project: str, name: str) -> str:
    """Create a user in the Firestore that ``env`` points to; returns the API key."""
    from google.cloud import firestore

    from francine.adapters.store import Store

    with environment(env):
        _, key = users.create_user(Store(firestore.Client(project=project)), name)
    return key


def wait_forever() -> None:
    while True:
        time.sleep(3600)
