"""The whole pipeline on one machine: emulators, api, render workers, reducer.

The processes are the same entry points that run in the cloud (functions-framework for
the api and the reducer, gunicorn for the render service), wired with the same Pub/Sub
push subscriptions, retry and dead-letter policies, all read from ``francine.domain.topology``.
Two things differ, both because of the Pub/Sub emulator: retries back off 1–10 s instead
of 10–600 s (``topology.LOCAL_RETRY``, so that failure tests finish), and production is
sharded over one topic per worker, because the emulator pushes at most 2 requests at a
time per subscription whatever the endpoint can take; every shard pushes to one front
end (``frontend.py``) that hands each push to an idle worker, as Cloud Run does.

As Cloud Run and Cloud Scheduler would, a supervisor thread starts again any Francine
process that dies (on the same port, so the push subscriptions find it) and calls the
watchdog function every ``FRANCINE_WATCHDOG_INTERVAL_S``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from francine.base.config import ENV, Settings
from francine.domain import topology
from francine.services import users
from francine.tools.local import audit
from francine.tools.local.emulators import Emulators
from francine.tools.local.frontend import FrontEnd
from francine.tools.local.processes import ProcessGroup, environment, free_port, http_ok

REPO = pathlib.Path(__file__).resolve().parents[4]
FUNCTIONS = REPO / "functions"


def worker_cpus(index: int, workers: int) -> dict[str, str]:
    """The cores of worker ``index`` of ``workers`` on this machine, as Cloud Run gives
    each instance vCPUs of its own: the machine's cores shared out (the same one to
    several workers when there are more workers than cores), and as many threads."""
    cores = sorted(os.sched_getaffinity(0))
    threads = max(1, len(cores) // max(1, workers))
    mine = [cores[(index * threads + k) % len(cores)] for k in range(threads)]
    return {"NUMBA_NUM_THREADS": str(threads), "FRANCINE_CPUS": ",".join(map(str, mine))}


def functions_dir() -> pathlib.Path:
    """The entry points: beside the package in a checkout (an editable install), else
    in the current directory (a checkout that was ``pip install``ed normally)."""
    for candidate in (FUNCTIONS, pathlib.Path.cwd() / "functions"):
        if (candidate / "api" / "main.py").is_file():
            return candidate
    raise RuntimeError("functions/ (the api, reducer and renderer entry points) not found: "
                       "run 'francine stack up' in a Francine checkout")


@dataclass
class StackOptions:
    port: int | None = None
    workers: int = 2
    state_dir: pathlib.Path = field(default_factory=lambda: pathlib.Path(".francine"))
    project: str = "francine-local"
    #: Names every topic and subscription, as ``namePrefix`` does in the cloud.
    prefix: str = "francine"
    min_backoff_s: int = topology.LOCAL_RETRY.min_backoff_s
    max_backoff_s: int = topology.LOCAL_RETRY.max_backoff_s
    max_delivery_attempts: int = topology.LOCAL_RETRY.max_delivery_attempts
    #: Farm-wide admission (francine.services.farm): tasks in flight across executions at most
    #: (None: FRANCINE_FARM_SLOTS of the caller, else off; the farm is ``workers``).
    farm_slots: int | None = None
    #: Pieces a speculative copy is cut into (None: a quarter of the workers, at most
    #: the settings' ``copy_pieces``: the pieces need idle workers).
    copy_pieces: int | None = None
    #: Workers answer 429 while they render (Cloud Run at max instances: the push is
    #: retried with back-off). Off: a second request waits for the first, as before.
    refuse_when_busy: bool = False
    #: Extra environment for every Francine process (e.g. FRANCINE_ADMISSION_LIMIT).
    extra_env: dict[str, str] = field(default_factory=dict)
    #: The watchdog's timer, and how long an execution may stand still before it is
    #: re-driven (None: FRANCINE_WATCHDOG_INTERVAL_S and FRANCINE_STALL_S of the
    #: caller, else 10 s and 60 s, shorter than the cloud's 60 s and 300 s: everything
    #: here is small).
    watchdog_interval_s: float | None = None
    stall_s: float | None = None
    #: A folder that keeps sessions, resources and images across restarts (None: the
    #: emulators keep everything in memory, gone when the stack stops).
    persist: pathlib.Path | None = None
    #: A file where every process records what it does to the platform
    #: (``francine.tools.local.audit``; tests/test_rights.py checks it against the
    #: declared rights). None: nothing is recorded.
    audit: pathlib.Path | None = None


#: The local stack's watchdog timer and stall time unless told otherwise.
LOCAL_WATCHDOG_INTERVAL_S = 30.0
LOCAL_STALL_S = 60.0


def _told(option, variable: str, configured, local):
    """An option given, else the caller's environment variable, else the local default."""
    if option is not None:
        return option
    return configured if variable in os.environ else local


def _bin(name: str) -> str:
    path = pathlib.Path(sys.executable).parent / name
    return str(path) if path.exists() else name


class Stack:
    def __init__(self, options: StackOptions | None = None):
        self.options = options or StackOptions()
        self.state_dir = pathlib.Path(self.options.state_dir).resolve()
        self.emulators = Emulators(self.options.project, log_dir=str(self.state_dir / "logs"),
                                   persist=self.options.persist)
        self.processes = ProcessGroup(str(self.state_dir / "logs"))
        self.info: dict = {}
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.frontend: FrontEnd | None = None

    def start(self) -> dict:
        """Start everything; returns (and writes to state_dir/stack.json) the api URL,
        a ready-made user's API key and the emulator addresses."""
        o = self.options
        self.functions = functions_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        rotate_logs(self.state_dir / "logs")
        try:
            emulator_env = self.emulators.start()
            # FRANCINE_* variables of the caller (an admission limit, say) carry over.
            settings = dataclasses.replace(
                Settings.from_env(), project=o.project, produce_shards=max(1, o.workers),
                max_render_instances=max(1, o.workers),  # the local farm's instances
                produce_topic=topology.name(o.prefix, "produce"),
                events_topic=topology.name(o.prefix, "events"),
                cache_dir=str(self.state_dir / "cache"))
            settings = dataclasses.replace(
                settings,
                watchdog_interval_s=_told(o.watchdog_interval_s, ENV["watchdog_interval_s"],
                                          settings.watchdog_interval_s,
                                          LOCAL_WATCHDOG_INTERVAL_S),
                stall_s=_told(o.stall_s, ENV["stall_s"], settings.stall_s,
                                    LOCAL_STALL_S))
            if o.farm_slots is not None:
                settings = dataclasses.replace(settings, farm_slots=o.farm_slots)
            settings = dataclasses.replace(settings, copy_pieces=o.copy_pieces or max(
                1, min(settings.copy_pieces, o.workers // 4)))
            env = {**os.environ, **emulator_env, **settings.to_env(),
                   **(audit.environment(o.audit) if o.audit is not None else {}),
                   **o.extra_env, "PYTHONUNBUFFERED": "1"}
            self._create_topics_and_buckets(env, settings)
            reducer_url = self._serve_function("reducer", "cloudevent", as_service(env, "reducer"))
            worker_urls = [self._serve_worker(i, {**as_service(env, "renderer"),
                                                  **worker_cpus(i, o.workers)})
                           for i in range(o.workers)]
            # Every shard's pushes go to an idle worker, as Cloud Run's front end does.
            self.frontend = FrontEnd(worker_urls, refuse_when_busy=o.refuse_when_busy)
            render_url = self.frontend.start()
            self._subscribe(env, settings, render_url, reducer_url)
            api_url = self._serve_api(as_service(env, "api"), port=o.port)
            key = self._local_user(env)
            watchdog_url = self._serve_function("watchdog", "http", as_service(env, "watchdog"),
                                                ready_path="/")
        except BaseException:
            self.stop()
            raise
        self.info = {"api_url": api_url, "api_key": key, "project": o.project,
                     "workers": worker_urls, "render_url": render_url,
                     "reducer_url": reducer_url,
                     "watchdog_url": watchdog_url,
                     "emulators": emulator_env, "env": {**emulator_env, **settings.to_env()},
                     "logs": str(self.state_dir / "logs"), "pid": os.getpid()}
        (self.state_dir / "stack.json").write_text(json.dumps(self.info, indent=2))
        self._supervisor = threading.Thread(
            target=self._supervise, args=(watchdog_url, settings.watchdog_interval_s),
            name="francine-supervisor", daemon=True)
        self._supervisor.start()
        return self.info

    def _supervise(self, watchdog_url: str, interval_s: float) -> None:
        """Restart what died (checked twice a second); call the watchdog on time."""
        log = logging.getLogger("francine.stack")
        next_sweep = time.monotonic() + interval_s
        while not self._stopping.wait(0.5):
            for name in self.processes.restart_dead():
                log.warning("%s died: started again", name)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + interval_s
                try:
                    urllib.request.urlopen(urllib.request.Request(
                        watchdog_url, data=b"", method="POST"),
                        timeout=max(60.0, interval_s)).close()
                except Exception as e:  # it is restarted like the rest; try next time
                    log.warning("watchdog call failed: %s", e)

    def sweep(self) -> dict:
        """Call the watchdog now (what the timer does); returns its report."""
        req = urllib.request.Request(self.info["watchdog_url"], data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        # Signal every process at once; then wait for each (and kill what lingers).
        self.processes.terminate_all()
        if self.frontend is not None:
            self.frontend.stop()
        if self.options.persist is None:
            self.emulators.terminate()
        self.processes.stop_all()
        try:  # with nothing left writing
            self.emulators.save()
        except OSError as e:
            logging.getLogger("francine.stack").error("could not save the data: %s", e)
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
    def _local_user(self, env: dict) -> str:
        """The API key of the stack's ready-made user: a new one, or with ``persist``
        the one of the saved data (kept beside it), so that its sessions are still its."""
        o = self.options
        saved = o.persist / "local-user.key" if o.persist is not None else None
        if saved is not None and saved.exists():
            from francine.adapters.cloud import firestore_store

            key = saved.read_text().strip()
            with environment(env):
                if firestore_store(o.project).get_user(users.key_hash(key)) is not None:
                    return key
        key = create_user_in(env, o.project, "local")
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(key + "\n")
            saved.chmod(0o600)
        return key

    def _topics(self, settings: Settings) -> dict[str, list[str]]:
        """Topic key → its topic ids here (production: one per worker)."""
        from francine.adapters.bus import produce_topics

        topics = {key: [topology.name(self.options.prefix, key)] for key in topology.TOPICS}
        topics["produce"] = produce_topics(settings)
        topics["events"] = [settings.events_topic]
        topics["execution-events"] = [settings.status_topic]
        return topics

    def _create_topics_and_buckets(self, env: dict, settings: Settings) -> None:
        from francine.adapters.blobs import Blobs
        from francine.adapters.cloud import PubSubAdmin, make_clients

        with environment(env):
            admin = PubSubAdmin(settings.project)
            for ids in self._topics(settings).values():
                for topic in ids:
                    admin.create_topic(topic)
            Blobs(make_clients(settings).storage, settings).ensure_buckets()

    def _serve_function(self, name: str, signature: str, env: dict, port: int | None = None,
                        ready_path: str = "/") -> str:
        port = port or free_port()
        child = self.processes.start(name, [
            _bin("functions-framework"), "--target", name, "--signature-type", signature,
            "--source", str(self.functions / name / "main.py"), "--host", "127.0.0.1",
            "--port", str(port)], env=env, cwd=str(self.functions / name))
        url = f"http://127.0.0.1:{port}"
        self.processes.wait_ready(child, lambda: http_ok(url + ready_path), 60)
        return url

    def _serve_api(self, env: dict, port: int | None = None) -> str:
        """The api as Cloud Run functions runs it (``functions-framework --target api``,
        which serves the ASGI function under uvicorn): bodies and waits on the event
        loop, requests on the api's own threads."""
        port = port or free_port()
        child = self.processes.start("api", [
            _bin("functions-framework"), "--target", "api", "--signature-type", "http",
            "--source", "main.py", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=str(self.functions / "api"))
        url = f"http://127.0.0.1:{port}"
        self.processes.wait_ready(child, lambda: http_ok(url + "/health"), 60)
        return url

    def _serve_worker(self, index: int, env: dict) -> str:
        port = free_port()
        # The container's command (one process, one thread, no timeout); the front end
        # sends it one push at a time, and answers 429 itself when every worker is busy.
        child = self.processes.start(f"worker-{index}", [
            _bin("gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--threads", "1", "--worker-class", "gthread", "--timeout", "0", "main:app"],
            env=env, cwd=str(self.functions / "renderer"))
        url = f"http://127.0.0.1:{port}/"
        self.processes.wait_ready(child, lambda: http_ok(url + "health"), 60)
        return url

    def _subscribe(self, env: dict, settings: Settings, render_url: str,
                   reducer_url: str) -> None:
        from francine.adapters.cloud import PubSubAdmin

        o = self.options
        topics = self._topics(settings)
        with environment(env):
            admin = PubSubAdmin(settings.project)
            for route in topology.ROUTES:
                (dead_letter,) = topics[route.dead_letter]
                for index, topic in enumerate(topics[route.topic]):
                    if route.endpoint == topology.RENDERER:
                        endpoint = render_url
                    else:  # as in the cloud: the topic path names the source
                        endpoint = f"{reducer_url}/{admin.topic_path(topic)}"
                    key = route.key if len(topics[route.topic]) == 1 else f"{route.key}-{index}"
                    admin.create_push_subscription(
                        topology.name(o.prefix, key), topic, endpoint, ack_deadline_s=600,
                        min_backoff_s=o.min_backoff_s, max_backoff_s=o.max_backoff_s,
                        dead_letter_topic=dead_letter,
                        max_delivery_attempts=o.max_delivery_attempts)
            hold = topology.HOLD
            (held,) = topics[hold.topic]
            admin.create_held_subscription(topology.name(o.prefix, hold.key), held,
                                           hold.retention_s)


def as_service(env: dict[str, str], service: str) -> dict[str, str]:
    """``env`` for a process of ``service`` (api, renderer, reducer, watchdog): in the
    cloud each runs as an account of its own (``francine.domain.rights``), which the
    audit names its records after."""
    return {**env, audit.SERVICE_ENV: service}


def rotate_logs(logs: pathlib.Path) -> None:
    """Each stack writes fresh logs; the previous stack's stay in ``logs.previous``."""
    if logs.is_dir() and any(logs.iterdir()):
        previous = logs.with_name(logs.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        logs.rename(previous)



def create_user_in(env: dict, project: str, name: str) -> str:
    """Create a user in the Firestore that ``env`` points to; returns the API key."""
    from francine.adapters.cloud import firestore_store

    with environment(env):
        _, key = users.create_user(firestore_store(project), name)
    return key


def wait_forever() -> None:
    while True:
        time.sleep(3600)
