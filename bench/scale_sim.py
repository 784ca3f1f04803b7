"""Francine at 10,000 workers, in simulated time.

A discrete-event simulation of the platform drives Francine's real code: the api's
``executions.start``, the render worker's and the reducer's handlers, and through them
the scheduler's state machine, over the in-memory twins of the store, the bus and the
blobs (``francine.twins``), whose every operation costs a simulated latency. Each
handler invocation runs in its own greenlet, and only one runs at a time: a port
operation or a render parks it until the simulated clock reaches its end, so the
handlers interleave exactly as their simulated times say.

The platform: Cloud Run services with a maximum number of instances, each new instance
paying a cold start (published figures for 1,000 fresh instances: about half running
after 9 s, 90% after 10.5 s, the last after about 44 s); Pub/Sub push with delivery
latency, at-least-once duplicates, exponential retry back-off and dead-lettering;
Firestore and Cloud Storage operation latencies; heavy-tailed task durations; and
instances that crash mid-render (their task is redelivered).

The watchdog runs every 60 s in every scenario (Cloud Scheduler calling it), and the
scheduler's speculation is on: the watchdog's copies of stragglers and the end game's
backup copies, started when a task finishes. Scenarios: ``big`` (one execution of
10,000 passes on 10,000 workers), ``mixed`` (100 users submitting mixed executions at
once), ``stragglers`` (one execution under a heavier straggler tail, run three times:
without speculation, with the watchdog's copies only, with the end game's too) and
``warmup`` (one large execution on a cold farm, and with the render service's minimum
instances raised for it, as ``francine.services.warmup`` does, at submission or 60 s before)
and ``animation`` (one execution of 250 frames × 16 passes of ~30 s on a cold farm of
1,000 instances with the deployment's settings: farm admission, the warm-up on, the frames
started by the reducer as their predecessors' final statuses reach it).

Execution statuses (``Bus.publish_status``: created, ended) are pushed, as in the
deployment, from the status topic to the reducer service, like the task events: push
latency, duplicates, retries; the reducer delivers webhooks and starts an animation's
next frames from them.

Usage:

    .venv/bin/python bench/scale_sim.py                 # big and mixed
    .venv/bin/python bench/scale_sim.py --scenario all  # mixed, stragglers, warmup, animation, big
    .venv/bin/python bench/scale_sim.py --scenario big --workers 10000
    .venv/bin/python bench/scale_sim.py --scenario stragglers --workers 1000 --passes 1000
    .venv/bin/python bench/scale_sim.py --scenario animation   # --side-workers 1000 --frames 250

The last line is ``makespan/ideal R`` for the big execution (``--scenario animation``:
``animation makespan/ideal R``; ``all`` prints both, the animation's last).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import heapq
import itertools
import math
import random
import sys
import time
import traceback
from dataclasses import dataclass

import greenlet
import numpy as np

from francine import producers
from francine.base import errors
from francine.base.config import Settings
from francine.domain import planning, scheduler
from francine.domain.envelope import (
    DEAD_LETTER_ATTRIBUTE,
    EXECUTION_STATUS,
    Message,
    task_message,
)
from francine.handlers import reducer as reducer_module
from francine.handlers import watchdog
from francine.handlers import worker as worker_module
from francine.handlers.worker import Worker
from francine.services import executions
from francine.twins import Meter, twin_adapters
from francine.twins.bus import EVENTS_TOPIC, PRODUCE_TOPIC, STATUS_TOPIC, BusTwin

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# --- simulated time with handler greenlets ---------------------------------------------


class Sim:
    """An event heap; processes are greenlets that run one at a time and park on sleep.

    A switch between greenlets stays in this thread (about a microsecond); with OS
    threads each hand-over waited for the kernel to schedule the woken thread, which on
    a loaded machine cost milliseconds and made most of the wall time.
    """

    def __init__(self):
        self.now = 0.0
        self._heap: list = []
        self._seq = itertools.count()
        self._main = greenlet.getcurrent()

    def at(self, t: float, fn) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn))

    def spawn(self, t: float, body) -> None:
        def run():
            try:
                body()
            except Exception:  # as a thread would: report it, the simulation goes on
                traceback.print_exc()

        self.at(t, greenlet.greenlet(run, parent=self._main).switch)

    def sleep(self, seconds: float) -> None:
        self.at(self.now + max(0.0, seconds), greenlet.getcurrent().switch)
        self._main.switch()

    def run(self, until: float = math.inf) -> None:
        heap, pop = self._heap, heapq.heappop
        while heap and heap[0][0] <= until:
            t, _, fn = pop(heap)
            self.now = t
            fn()


# --- the platform's figures -------------------------------------------------------------

@dataclass
class Platform:
    rng: random.Random
    #: production durations: lognormal around the estimate, plus a Pareto straggler tail
    duration_sigma: float = 0.25
    straggler_p: float = 0.01
    straggler_alpha: float = 2.0
    straggler_cap: float = 8.0  # the slowest task, in multiples of its usual time
    crash_p: float = 0.005  # an instance dies during a render
    duplicate_p: float = 0.01  # Pub/Sub delivers a message twice
    max_attempts: int = 10
    #: Cloud Run at max instances: a push that no idle or starting instance can take is
    #: refused (429), which Pub/Sub counts as a delivery attempt (False: it waits in the
    #: service's queue).
    refuse_when_full: bool = False
    min_backoff_s: float = 10.0
    max_backoff_s: float = 600.0

    def cold_start(self) -> float:
        """Median 9 s, 90% by 10.5 s, a 3% tail out to 44 s."""
        if self.rng.random() < 0.03:
            return self.rng.uniform(11.0, 44.0)
        return 9.0 * math.exp(self.rng.gauss(0.0, 0.12))

    def reducer_cold_start(self) -> float:
        return 1.5 * math.exp(self.rng.gauss(0.0, 0.3))  # a small Python function

    def latency(self, op: str) -> float:
        """Seconds of one port operation (lognormal around typical in-region figures)."""
        base = {"read": 0.008, "write": 0.015, "transaction": 0.030, "batch": 0.040,
                "aggregate": 0.020, "query": 0.015, "publish": 0.010,
                "upload": 0.050, "download": 0.025}.get(op)
        if base is None and op.startswith("download_batch:"):
            n = int(op.split(":")[1])
            base = 0.025 * math.ceil(n / 8)  # 8 concurrent fetchers
        return (base or 0.0) * math.exp(self.rng.gauss(0.0, 0.3))

    def push_latency(self) -> float:
        return 0.05 * math.exp(self.rng.gauss(0.0, 0.4))

    def duration(self, estimate: float) -> float:
        d = estimate * math.exp(self.rng.gauss(0.0, self.duration_sigma))
        if self.rng.random() < self.straggler_p:
            d *= min(self.straggler_cap, self.rng.paretovariate(self.straggler_alpha))
        return d

    def backoff(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.min_backoff_s * 2 ** (attempt - 1))


class Crash(BaseException):
    """The instance died: no answer, the message is delivered again later. (Not an
    Exception: nothing in the handler sees it, as nothing sees a killed process.)"""


class SimProducer:
    """Stands in for a renderer: a render takes simulated time, returns a tiny tile."""

    name = "sim"
    display = "linear"
    channels = 1
    exact_tiles = True  # its pixels are the seed's alone: copies may be cut into bands

    def __init__(self, sim: Sim, platform: Platform, stats, last: dict | None = None,
                 spans: list | None = None):
        self.sim, self.platform, self.stats = sim, platform, stats
        #: the render each handler greenlet ran last: its seconds
        self.last: dict = {} if last is None else last
        #: every render: (started, ended), crashed ones included
        self.spans: list = [] if spans is None else spans

    def validate(self, scene, resources):
        return scene

    def image_size(self, scene):
        return scene["width"], scene["height"]

    def pixel_seconds(self, scene):
        return scene["pass_seconds"] / (scene["width"] * scene["height"])

    def render(self, scene, tile, seed, resources):
        est = scene["pass_seconds"] * tile.width * tile.height / (scene["width"] * scene["height"])
        d = self.platform.duration(est)
        start = self.sim.now
        if self.platform.rng.random() < self.platform.crash_p:
            self.sim.sleep(d * self.platform.rng.random())
            self.stats["crashes"] += 1
            self.spans.append((start, self.sim.now))
            raise Crash()
        self.sim.sleep(d)
        self.spans.append((start, self.sim.now))
        self.last[greenlet.getcurrent()] = d
        self.stats["longest"] = max(self.stats["longest"], d)
        if "first_render" not in self.stats:
            self.stats["first_render"] = self.sim.now - d
        return np.full((tile.height, tile.width, 1), (seed % 1000) / 1000, np.float32)


class SimFrames(SimProducer):
    """The animation's stand-in renderer. Only Blender renders frames, so it is
    Blender's kind of producer: it accepts a ``frame`` (any frame ≥ 0: the stand-in's
    shot has no end), its copies stay whole (Cycles' border renders are not the whole
    frame's pixels bit for bit: ``exact_tiles`` False) and a task pays Blender's fixed
    cost in the planner's folding (``task_overhead_s``). A frame costs what every other
    frame costs (``pass_seconds``), as the planner assumes of a shot."""

    name = "sim-frames"
    animates = True
    exact_tiles = False
    task_overhead_s = 0.1  # as francine.producers.blender

    def validate(self, scene, resources):
        frame = scene.get("frame", 1)
        if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
            from francine.domain.producer import SceneError

            raise SceneError("frame", f"frame {frame!r}: a frame number ≥ 0")
        return scene


# --- Cloud Run services and Pub/Sub push ------------------------------------------------

class Service:
    """A push endpoint on Cloud Run: requests queue while instances start."""

    def __init__(self, sim: Sim, platform: Platform, name: str, handle, max_instances: int,
                 cold_start, on_nack, on_outcome=None):
        self.sim, self.platform, self.name = sim, platform, name
        self.handle, self.max_instances, self.cold_start = handle, max_instances, cold_start
        self.on_nack, self.on_outcome = on_nack, on_outcome
        self.queue: collections.deque = collections.deque()
        self.idle: list[int] = []
        self.instances = 0
        self.starting = 0
        self.peak = 0

    def arrive(self, message: Message, attempt: int) -> None:
        if self.platform.refuse_when_full and not self.idle \
                and self.instances >= self.max_instances and len(self.queue) >= self.starting:
            self.on_nack(self, message, attempt)
            return
        self.queue.append((message, attempt))
        self.pump()

    def pump(self) -> None:
        while self.queue and self.idle:
            self.idle.pop()
            message, attempt = self.queue.popleft()
            self.sim.spawn(self.sim.now, lambda m=message, a=attempt: self.serve(m, a))
        wanted = len(self.queue) - self.starting
        while wanted > 0 and self.instances < self.max_instances:
            self.instances += 1
            self.starting += 1
            self.peak = max(self.peak, self.instances)
            wanted -= 1
            self.sim.at(self.sim.now + self.cold_start(), self.ready)

    def ready(self) -> None:
        self.starting -= 1
        self.idle.append(1)
        self.pump()

    def keep_warm(self, count: int) -> None:
        """Minimum instances raised to ``count``: that many start now (their cold
        start begins), and wait idle for requests."""
        while self.instances < min(count, self.max_instances):
            self.instances += 1
            self.starting += 1
            self.peak = max(self.peak, self.instances)
            self.sim.at(self.sim.now + self.cold_start(), self.ready)

    def serve(self, message: Message, attempt: int) -> None:
        alive = True
        try:
            outcome = self.handle(message)
            if self.on_outcome is not None:
                self.on_outcome(message, outcome)
        except errors.PermanentError:
            pass  # recorded; acknowledged
        except Crash:
            alive = False
            self.on_nack(self, message, attempt)
        except errors.FrancineError:
            self.on_nack(self, message, attempt)
        if alive:
            self.idle.append(1)
        else:
            self.instances -= 1  # Cloud Run replaces it: a cold start when needed
        self.sim.at(self.sim.now, self.pump)


class SimBus(BusTwin):
    """The bus port, publishing into the simulated push subscriptions."""

    def __init__(self, meter: Meter, sim: Sim, platform: Platform):
        super().__init__(meter)
        self.sim, self.platform = sim, platform
        self.routes: dict[str, Service] = {}
        self.messages = 0
        self.deliveries = 0
        self.status_messages = 0
        self.farm = False  # farm admission on (set by the run)
        self.store = None  # the store twin (for ``is_copy``)

    def publish_tasks(self, session_id: str, execution_id: str,
                      tasks: list[tuple[int, str] | tuple[int, str, str]]) -> None:
        # The adapter publishes concurrently and the client batches up to 500 messages
        # per request: one round trip per 500.
        for start in range(0, len(tasks), 500):
            self.meter.op("publish")
            for index, tid, *piece in tasks[start: start + 500]:
                copy = {"sim_copy": "1"} if self.is_copy(session_id, execution_id, index,
                                                         tid, piece) else {}
                self.send(PRODUCE_TOPIC, task_message(session_id, execution_id, tid, *piece),
                          type="produce", **copy)

    def is_copy(self, sid: str, eid: str, index: int, tid: str, piece: list) -> bool:
        """Whether a production message is a speculative copy (the simulation's own
        mark, read only by its accounting). Without farm admission a copy goes to
        another shard than its task's index; with it, every message's index is its
        slot, and a whole copy is the task's own message published after the task was
        marked copied (read from the twin directly: no simulated cost)."""
        if piece:
            return True
        if not self.farm:
            return index != planning.parse_node(tid.partition("-")[2])[1]
        doc = self.store.tasks.get((sid, eid), {}).get(tid) or {}
        return bool(doc.get("speculated"))

    def publish(self, topic: str, payload: dict, **attributes: str) -> str:
        self.meter.op("publish")
        return self.send(topic, payload, **attributes)

    def publish_status(self, message: dict) -> None:
        """An execution's status on the status topic. Its one subscription
        (``execution-events-notify``, francine.domain.topology) pushes it to the reducer
        service, as every other push: push latency, at-least-once duplicates, retries
        with back-off when the reducer fails, dead-lettered (to ``unprocessable``, which
        nothing here reads) after the last attempt. The reducer delivers the webhooks
        and, for a frame of an animation, starts the next frames."""
        self.meter.op("publish")
        self.status_messages += 1
        self.send(STATUS_TOPIC, message, type=EXECUTION_STATUS)

    def send(self, topic: str, payload: dict, **attributes: str) -> str:
        self.messages += 1
        message = Message(str(self.messages), dict(payload), dict(attributes))
        copies = 2 if self.platform.rng.random() < self.platform.duplicate_p else 1
        for c in range(copies):
            delay = self.platform.push_latency() + c * self.platform.rng.uniform(1, 10)
            self.deliver(topic, message, 1, delay)
        return message.id

    def deliver(self, topic: str, message: Message, attempt: int, delay: float) -> None:
        self.deliveries += 1
        service = self.routes[topic]
        self.sim.at(self.sim.now + delay, lambda: service.arrive(message, attempt))


# --- one run ----------------------------------------------------------------------------

@dataclass
class Submission:
    at: float
    user: str
    width: int
    height: int
    passes: int
    pass_seconds: float
    tile: int | None = None
    #: a frame range ("1-250"): an animation, rendered by the frames' stand-in producer
    frames: str | None = None


class SimTime:
    """The ``time`` the handlers read, on the simulated clock: the seconds a task
    records (``work_s``, whose mean the speculation rules use) are simulated seconds."""

    def __init__(self, sim: Sim):
        self.sim = sim

    def perf_counter(self) -> float:
        return self.sim.now

    def process_time(self) -> float:
        return 0.0


#: Cloud Run Admin API: how long after the request the new minimum applies.
WARM_API_S = 2.0
#: Cloud Run Admin API: one call (a get of the service, or the update's request).
ADMIN_CALL_S = 0.2
#: The render service's name where the warm-up is on (``Settings.render_service``).
RENDER_SERVICE = "projects/sim/locations/sim/services/render"


class SimServices:
    """The ``Services`` port (francine.ports.protocols) on the simulated render service:
    what ``francine.services.warmup.reconcile`` reads and sets from the watchdog's sweep
    when ``Settings.render_service`` is set. A minimum raised applies ``WARM_API_S``
    after the request (that many instances start: their cold starts begin); one lowered
    stops nothing here (the simulated farm never scales in)."""

    def __init__(self, sim: Sim, render: Service, calls: collections.Counter):
        self.sim, self.render, self.calls = sim, render, calls
        self.minimum = 0

    def min_instances(self, service: str) -> int:
        self.sim.sleep(ADMIN_CALL_S)
        return self.minimum

    def set_min_instances(self, service: str, count: int) -> None:
        self.sim.sleep(ADMIN_CALL_S)
        self.minimum = count
        self.calls[count] += 1
        self.sim.at(self.sim.now + WARM_API_S, lambda: self.render.keep_warm(count))


def simulate(submissions: list[Submission], workers: int, seed: int,
             reducers: int = 1000, platform_options: dict | None = None,
             watchdog_s: float | None = 60.0, speculation: bool | str = True,
             warm: float | None = None, settings_options: dict | None = None) -> dict:
    """Run ``submissions`` on a farm of ``workers`` render instances.

    ``watchdog_s``: Cloud Scheduler calls the watchdog this often (None: never).
    ``speculation``: the scheduler's speculative copies, the watchdog's and the end
    game's (True), the watchdog's only ("watchdog"), or none (False: their thresholds
    are infinite). ``warm``: seconds before each submission
    (0: at it) when the render service's minimum instances are raised to the
    submission's task count, as the watchdog's ``francine.services.warmup.reconcile``
    does through the Cloud Run Admin API (``min_instance_count``); None: a cold farm
    that scales on demand.
    """
    saved = (scheduler.endgame, scheduler.speculations, worker_module.time,
             reducer_module.time)
    try:
        if speculation is not True:  # False: none; "watchdog": the watchdog's only
            scheduler.endgame = lambda plan, node, seen: []
        if speculation is False:
            scheduler.speculations = lambda plan, seen: []
        return _simulate(submissions, workers, seed, reducers, platform_options,
                         watchdog_s, warm, settings_options)
    finally:
        (scheduler.endgame, scheduler.speculations, worker_module.time,
         reducer_module.time) = saved


def _simulate(submissions, workers, seed, reducers, platform_options, watchdog_s, warm,
              settings_options=None):
    rng = random.Random(seed)
    platform = Platform(rng, **(platform_options or {}))
    sim = Sim()
    worker_module.time = reducer_module.time = SimTime(sim)
    stats = collections.Counter()
    meter = Meter(clock=lambda: EPOCH + dt.timedelta(seconds=sim.now),
                  delay=lambda op: sim.sleep(platform.latency(op)))
    settings = Settings(**{"max_tasks": 20_000, "min_task_s": 0.25,
                           **(settings_options or {})})
    ad = twin_adapters(settings, meter)
    ad.blobs.keep_bytes = True
    bus = SimBus(meter, sim, platform)
    bus.farm, bus.store = settings.farm_slots > 0, ad.store
    ad.bus = bus
    producer = SimProducer(sim, platform, stats)
    producers.register(producer)
    frames = SimFrames(sim, platform, stats, producer.last, producer.spans)
    producers.register(frames)
    worker, reducer = Worker(ad), reducer_module.Reducer(ad)
    # One Worker object serves every simulated instance: no instance keeps an execution.
    worker.execution_ttl_s = 0.0

    def nack(service: Service, message: Message, attempt: int) -> None:
        stats["redeliveries"] += 1
        if attempt >= platform.max_attempts:
            stats["dead_letters"] += 1
            if message.attributes.get("type") == EXECUTION_STATUS:
                stats["status dead letters"] += 1  # to ``unprocessable``: held, not read
                return
            dead = Message(message.id, message.payload, {
                **message.attributes, DEAD_LETTER_ATTRIBUTE: service.name,
                "CloudPubSubDeadLetterSourceDeliveryCount": str(attempt)})
            bus.deliver(EVENTS_TOPIC, dead, 1, platform.push_latency())
            return
        bus.deliveries += 1
        sim.at(sim.now + platform.backoff(attempt), lambda: service.arrive(message, attempt + 1))

    pieces_work: collections.Counter = collections.Counter()  # task id → its stored bands

    def rendered(message: Message, outcome: str) -> None:
        """Account a render by what the worker did with it: stored (useful work) or
        dropped because another copy of the task stored its partial first (extra). The
        bands of a copy cut into pieces are useful if they assembled the partial."""
        d = producer.last.pop(greenlet.getcurrent(), None)
        copy = "sim_copy" in message.attributes
        stats["copies delivered"] += copy
        if d is None:
            return
        tid = message.payload["task_id"]
        if "piece" in message.payload:
            stats["copies rendered"] += 1
            if outcome == "rendered":  # this band assembled the task's partial
                stats["work"] += pieces_work.pop(tid, 0.0) + d
                stats["renders"] += 1
                stats["copies won"] += 1
            elif outcome.startswith("stored piece"):
                pieces_work[tid] += d
            else:
                stats["extra work"] += d
                stats["extra renders"] += 1
                stats["extra copy work"] += d
            return
        if outcome == "rendered":
            stats["work"] += d
            stats["renders"] += 1
            stats["copies won"] += copy
        elif outcome.startswith("dropped"):
            # A losing copy is speculation's own cost; a losing original (a copy beat
            # it: it lagged) or a duplicate delivery would have run anyway.
            stats["extra work"] += d
            stats["extra renders"] += 1
            stats["extra copy work"] += d if copy else 0.0
        stats["copies rendered"] += copy

    render = Service(sim, platform, "render", worker.handle, workers, platform.cold_start, nack,
                     rendered)
    reduce = Service(sim, platform, "reduce", reducer.handle, reducers,
                     platform.reducer_cold_start, nack)
    # Task events and statuses both push to the reducer service (francine.domain.topology).
    bus.routes = {PRODUCE_TOPIC: render, EVENTS_TOPIC: reduce, STATUS_TOPIC: reduce}
    warm_calls: collections.Counter = collections.Counter()
    if settings.render_service:  # the warm-up on: the watchdog's sweep sets the minimum
        services = SimServices(sim, render, warm_calls)
        ad.services = lambda: services

    started: dict[str, tuple[str, Submission]] = {}
    for i, sub in enumerate(submissions):
        sid = f"s{i}"
        ad.store.sessions[sid] = {"user": sub.user,
                                  "producer": frames.name if sub.frames else "sim",
                                  "format": "png", "scene": {}}

        def submit(sid=sid, sub=sub):
            body = {"parallel": sub.passes}
            if sub.tile:
                body["tile"] = sub.tile
            if sub.frames:
                body["frames"] = sub.frames
            # An animation's frame ids derive from its id: a fixed one (an idempotency
            # key, as a client that retries sends) keeps its run reproducible.
            key = f"sim-{sid}" if sub.frames else None
            try:
                ex, _ = executions.start(ad, sub.user, sid, body, idempotency_key=key)
            except errors.FrancineError as e:
                print(f"submission refused: {e}", file=sys.stderr)
                return
            started[ex.id] = (sid, sub)

        ad.store.sessions[sid]["scene"] = {"width": sub.width, "height": sub.height,
                                           "pass_seconds": sub.pass_seconds}
        if warm is not None:
            # francine.services.warmup: min instances for the execution's tasks (one per pass
            # here, at most the farm), applied WARM_API_S after the request.
            sim.at(max(0.0, sub.at - warm) + WARM_API_S,
                   lambda n=sub.passes: render.keep_warm(render.instances + n))
        sim.spawn(sub.at, submit)

    if watchdog_s:
        def sweeps():
            # Cloud Scheduler calling the watchdog function, until everything ended.
            while True:
                sim.sleep(watchdog_s)
                report = watchdog.sweep(ad)
                stats["watchdog copies"] += report["speculated"]
                stats["republished"] += report["republished"]
                if not report["executions"] and len(started) == len(submissions):
                    return
        sim.spawn(watchdog_s, sweeps)

    wall0 = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - wall0
    # Bands of copies that never assembled (the original stored first): extra work.
    stats["extra work"] += sum(pieces_work.values())
    stats["extra copy work"] += sum(pieces_work.values())

    results = []
    for eid, (sid, sub) in started.items():
        doc = ad.store.executions[(sid, eid)]
        # An animation has no tasks of its own: its frames, each an execution, have them.
        frame_docs = sorted(((d["frame"], e, d) for (s, e), d in ad.store.executions.items()
                             if s == sid and d.get("parent") == eid), key=lambda f: f[0])
        members = [e for _, e, _ in frame_docs] if doc.get("frames") else [eid]
        tasks = [t for e in members for t in ad.store.tasks.get((sid, e), {}).values()]
        stats["copies started"] += sum(bool(t.get("speculated")) for t in tasks)
        last_produced = max((t["finished"] for t in tasks
                             if t.get("kind") == "produce" and t.get("finished")), default=None)
        finished = doc.get("finished")
        shape = doc["shape"]
        count = len(doc.get("frames") or ()) or 1
        result = {
            "eid": eid, "user": sub.user, "status": doc["status"], "submitted": sub.at,
            "makespan": (finished - doc["created"]).total_seconds() if finished else math.inf,
            "tail": (finished - last_produced).total_seconds()
            if finished and last_produced else math.inf,
            "tasks": len(tasks), "depth": depth(shape),
            "work": count * sub.passes * sub.pass_seconds,
        }
        if doc.get("frames"):
            # Each frame: (frame, status, started, image stored), seconds after the
            # animation's submission.
            def after(t, created=doc["created"]):
                return (t - created).total_seconds() if t is not None else math.inf

            result["frames"] = [(f, d["status"], after(d["created"]),
                                 after(d.get("finished")) if d.get("result") else math.inf)
                                for f, _, d in frame_docs]
            result["window"] = doc.get("frame_window")
            result["planned"] = planning.Shape.from_dict(shape)
        results.append(result)
    return {"results": results, "stats": stats, "meter": meter, "bus": bus, "wall": wall,
            "render_peak": render.peak, "reduce_peak": reduce.peak, "sim_end": sim.now,
            "adapters": ad, "warm_calls": warm_calls, "renders": producer.spans}


def depth(shape: dict) -> int:
    from francine.domain.planning import Shape

    return len(Shape.from_dict(shape).level_sizes()) - 1


#: The Firestore documents among the meter's written paths (the rest are objects).
FIRESTORE_PATHS = ("sessions/", "farms/", "users/")


def peak_document_rate(meter: Meter, window_s: float = 10.0) -> tuple[float, str]:
    """The highest number of writes to one document in any ``window_s``, per second."""
    best, where = 0.0, ""
    for path, times in meter.writes.items():
        if not path.startswith(FIRESTORE_PATHS) or len(times) < 2:
            continue
        times = sorted(times)
        j = 0
        for i, t in enumerate(times):
            while times[j] < t - window_s:
                j += 1
            rate = (i - j + 1) / window_s
            if rate > best:
                best, where = rate, path
    return best, where


def most_in_window(times: list[float], window_s: float) -> int:
    """The most of ``times`` within any ``window_s`` (a window ending at each time)."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window_s:
            j += 1
        best = max(best, i - j + 1)
    return best


def busiest_document(meter: Meter, window_s: float = 1.0) -> tuple[int, str]:
    """The most writes to one Firestore document within any ``window_s``, and that
    document's path."""
    best, where = 0, ""
    for path, times in meter.writes.items():
        if path.startswith(FIRESTORE_PATHS) and len(times) > best:
            n = most_in_window(times, window_s)
            if n > best:
                best, where = n, path
    return best, where


def busiest_by_kind(meter: Meter) -> dict[str, tuple[int, float, str]]:
    """Per kind of Firestore document (the fair-share accounts, executions, tasks): the
    most writes to one within 1 s, the most per second over 10 s, and that document."""
    kinds: dict[str, tuple[int, float, str]] = {}
    for path, times in meter.writes.items():
        if not path.startswith(FIRESTORE_PATHS):
            continue
        kind = ("fair-share account" if path.startswith("farms/") else "task"
                if "/tasks/" in path else "execution" if "/executions/" in path
                else path.split("/")[0])
        one, ten = most_in_window(times, 1.0), most_in_window(times, 10.0)
        if (one, ten / 10) > kinds.get(kind, (0, 0.0, ""))[:2]:
            kinds[kind] = (one, ten / 10, path)
    return kinds


def report(name: str, run: dict, workers: int) -> float:
    meter, bus, stats = run["meter"], run["bus"], run["stats"]
    results = run["results"]
    tasks = sum(r["tasks"] for r in results)
    done = sum(r["status"] == "done" for r in results)
    work = stats["work"]
    mean_task = work / max(1, stats["renders"])
    first = min(r["submitted"] for r in results)
    end = max(r["submitted"] + r["makespan"] for r in results)
    makespan = end - first
    ideal = work / workers + mean_task
    rate, doc = peak_document_rate(meter)
    objects = [(len(v), k) for k, v in meter.writes.items() if not k.startswith(FIRESTORE_PATHS)]
    most_object = max(objects) if objects else (0, "")
    store_ops = sum(n for op, n in meter.ops.items()
                    if op in ("read", "write", "transaction", "batch", "aggregate", "query"))
    rows = [
        ("executions done / submitted", f"{done} / {len(results)}"),
        ("workers (peak instances)", f"{workers} ({run['render_peak']})"),
        ("tasks (production + reduction)", f"{tasks}"),
        ("useful work, task-seconds (renders stored)", f"{work:,.0f}"),
        ("ideal: work / workers + one task", f"{ideal:,.1f} s"),
        ("makespan", f"{makespan:,.1f} s"),
        ("makespan / ideal", f"{makespan / ideal:.3f}"),
        ("first render started / longest render",
         f"{stats['first_render'] - first:.1f} s / {stats['longest']:.1f} s"),
        ("reduction depth (max)", f"{max(r['depth'] for r in results)}"),
        ("last production task → image (max)", f"{max(r['tail'] for r in results):.2f} s"),
        ("peak sustained writes on one document", f"{rate:.2f}/s over 10 s ({doc})"),
        ("most writes to one object", f"{most_object[0]} ({most_object[1]})"),
        ("Pub/Sub messages per task", f"{bus.messages / tasks:.2f} published, "
                                      f"{bus.deliveries / tasks:.2f} delivered"),
        ("Firestore operations per task", f"{store_ops / tasks:.2f}"),
        ("speculative copies: started (watchdog) / won",
         f"{stats['copies started']} ({stats['watchdog copies']}) / {stats['copies won']}"),
        ("extra renders (dropped: another stored first)",
         f"{stats['extra renders']}: {stats['extra work']:,.0f} task-s "
         f"({stats['extra work'] / max(work, 1e-9):.1%} of useful), losing copies "
         f"{stats['extra copy work']:,.0f} ({stats['extra copy work'] / max(work, 1e-9):.1%})"),
        ("crashes / redeliveries / dead letters",
         f"{stats['crashes']} / {stats['redeliveries']} / {stats['dead_letters']}"),
        ("simulated / wall time", f"{run['sim_end']:.0f} s / {run['wall']:.0f} s"),
    ]
    if len(results) > 1:
        spans = sorted(r["makespan"] for r in results)
        rows.insert(7, ("execution latency p50 / p90 / max",
                        f"{spans[len(spans) // 2]:.1f} / {spans[int(len(spans) * 0.9)]:.1f}"
                        f" / {spans[-1]:.1f} s"))
    width = max(len(k) for k, _ in rows)
    print(f"\n## {name}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return makespan / ideal


# Images are small (the simulated renderer's pixels are placeholders, and partials are
# kept in memory); what matters for scheduling is the estimated seconds per pass, from
# which the real planner sizes tiles and folds passes.

def big(passes: int) -> list[Submission]:
    # One image, 10,000 passes of about 30 s each (the planner keeps the whole image in
    # one tile: 30 s is its task size target, a quarter of the 120 s bound).
    return [Submission(0.0, "u0", 32, 32, passes, 30.0)]


def mixed(rng: random.Random) -> list[Submission]:
    subs = []
    for u in range(100):
        for _ in range(rng.choice([1, 1, 2])):
            subs.append(Submission(rng.uniform(0, 60), f"u{u}", rng.choice([32, 64, 96]),
                                   rng.choice([32, 64, 96]), rng.choice([8, 32, 128, 256]),
                                   rng.choice([0.05, 1.0, 5.0, 20.0])))
    return subs


def stragglers(passes: int) -> list[Submission]:
    # One image, passes of about 30 s each, as in ``big``.
    return [Submission(0.0, "u0", 32, 32, passes, 30.0)]


def table(title: str, header: tuple[str, ...], rows: list[tuple]) -> None:
    print(f"\n## {title}")
    table_rows(header, rows)


def table_rows(header: tuple[str, ...], rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  " + "  ".join(f"{str(v):<{w}}" if i == 0 else f"{str(v):>{w}}"
                               for i, (v, w) in enumerate(zip(r, widths, strict=True))))


def summary(run: dict, workers: int) -> dict:
    """Makespan, ideal and speculation figures of a one-execution run."""
    stats = run["stats"]
    (result,) = run["results"]
    work = stats["work"]
    ideal = work / workers + work / max(1, stats["renders"])
    return {"makespan": result["makespan"], "ideal": ideal,
            "ratio": result["makespan"] / ideal, "first": stats["first_render"],
            "copies": stats["copies started"], "won": stats["copies won"],
            "extra": stats["extra work"] / max(work, 1e-9),
            "copy extra": stats["extra copy work"] / max(work, 1e-9), "longest": stats["longest"]}


def speculation(args, workers: int, passes: int) -> None:
    """The same execution, same seeds, without speculation, with the watchdog's copies
    only (every 60 s, 2× the mean), and with the end game's too."""
    tails = {"straggler_p": args.straggler_p, "straggler_alpha": args.straggler_alpha,
             "straggler_cap": args.straggler_cap}
    rows = []
    for name, mode in (("no speculation", False), ("watchdog only", "watchdog"),
                       ("watchdog + end game", True)):
        run = simulate(stragglers(passes), workers, args.seed, platform_options=tails,
                       speculation=mode)
        f = summary(run, workers)
        rows.append((name, f"{f['makespan']:.1f} s", f"{f['ratio']:.3f}",
                     f"{f['copies']} / {f['won']}", f"{f['extra']:.1%}",
                     f"{f['copy extra']:.1%}"))
    table(f"stragglers: {passes:,} passes of ~30 s on {workers:,} workers, "
          f"{args.straggler_p:.0%} of renders slowed by Pareto α {args.straggler_alpha} "
          f"up to {args.straggler_cap:.0f}×",
          ("speculation", "makespan", "/ ideal", "copies / won", "extra task-s",
           "of which losing copies"), rows)


def warmup(args, workers: int, passes: int) -> None:
    """One large execution on a cold farm, and with the render service's minimum
    instances raised for it (the warm-up's minimum) at submission, or when
    its scene was uploaded 60 s before."""
    subs = [dataclasses.replace(s, at=60.0) for s in big(passes)]
    rows = []
    for name, warm in (("cold (scale on delivery)", None), ("warmed at submission", 0.0),
                       ("warmed at scene upload, 60 s before", 60.0)):
        run = simulate(subs, workers, args.seed, warm=warm)
        f = summary(run, workers)
        rows.append((name, f"{f['first'] - subs[0].at:.1f} s", f"{f['makespan']:.1f} s",
                     f"{f['ratio']:.3f}"))
    table(f"warm-up: {passes:,} passes of ~30 s on {workers:,} workers (speculation on)",
          ("render service", "first render after", "makespan", "/ ideal"), rows)


#: The platform's median cold start (``Platform.cold_start``): the ideal's one cold start.
COLD_START_S = 9.0


def busy_profile(renders: list, until: float, step: float = 20.0) -> list[int]:
    """Mean instances rendering in each ``step`` seconds from 0 to ``until``."""
    bins = [0.0] * (int(until // step) + 1)
    for start, end in renders:
        t = start
        while t < end:
            b = int(t // step)
            if b >= len(bins):
                break
            nxt = min(end, (b + 1) * step)
            bins[b] += nxt - t
            t = nxt
    return [round(v / step) for v in bins]


def animation(args, workers: int, frames: int, passes: int) -> float:
    """One animation, frames 1..``frames`` of ``passes`` passes of ~30 s each, submitted
    at t = 0 to a cold farm of ``workers`` instances, with the deployment's settings:
    the render service's max instances (``FRANCINE_MAX_RENDER_INSTANCES``, which sizes
    the frame window), farm-wide admission with as many slots (``FRANCINE_FARM_SLOTS``,
    Pulumi's default) and the warm-up on (``FRANCINE_RENDER_SERVICE``: the watchdog's
    sweep sets the render service's minimum through ``SimServices``). The frames' final
    statuses are pushed to the reducer, which starts the next frames; the watchdog
    sweeps every 60 s (its first sweep 60 s after the submission). Rows: as deployed;
    without farm admission. Prints the table and returns the first row's makespan /
    ideal, ideal = useful work / workers + one (median) cold start."""
    subs = [Submission(0.0, "u0", 32, 32, passes, 30.0, tile=args.frame_tile,
                       frames=f"1-{frames}")]
    deployed = {"max_render_instances": workers, "farm_slots": workers,
                "render_service": RENDER_SERVICE}
    variants = [("as deployed (farm admission)", deployed),
                ("no farm admission", {**deployed, "farm_slots": 0})]
    rows, notes, ratio = [], [], None
    for name, options in variants:
        run = simulate(subs, workers, args.seed, settings_options=options)
        stats, (result,) = run["stats"], run["results"]
        shape = result["planned"]
        work = stats["work"]
        ideal = work / workers + COLD_START_S
        makespan = result["makespan"]
        first = result["frames"][0][3] if result["frames"] else math.inf
        earliest = min((f[3], f[0]) for f in result["frames"])
        writes, doc = busiest_document(run["meter"])
        done = sum(f[1] == "done" for f in result["frames"])
        rows.append((name, f"{done}/{frames}", passes, f"{workers:,}",
                     f"{makespan:.1f} s", f"{ideal:.1f} s", f"{makespan / ideal:.3f}",
                     f"{first:.1f} s", f"{first / makespan:.3f}", f"{writes}"))
        ratio = makespan / ideal if ratio is None else ratio
        starts = sorted(f[2] for f in result["frames"])
        window = result["window"]
        notes.append(
            f"{name}: animation {result['status']}, frame window {window} "
            f"({window * shape.productions:,} production tasks for {workers:,} instances), "
            f"last frame started at {starts[-1]:.1f} s, first image frame {earliest[1]} at "
            f"{earliest[0]:.1f} s; extra renders {stats['extra work'] / work:.1%} of the "
            f"useful {work:,.0f} task-s ({stats['copies started']} copies, "
            f"{stats['copies won']} won); busiest document {doc}")
        notes.append(
            f"    instances rendering, mean per 20 s: "
            f"{' '.join(map(str, busy_profile(run['renders'], makespan)))}")
        notes.append("    most writes to one document in 1 s (per s over 10 s): " + "; ".join(
            f"{kind} {one} ({ten:.1f}/s, {path})"
            for kind, (one, ten, path) in busiest_by_kind(run["meter"]).items()))
        # A frame started after the first window waited for a frame's end: the time
        # from the last image before it to its start (status push, reducer, start).
        images = sorted(f[3] for f in result["frames"] if f[3] < math.inf)
        gaps = sorted(start - max(t for t in images if t <= start)
                      for start in starts if images and start >= images[0])
        lag = f"median {gaps[len(gaps) // 2]:.2f} s, max {gaps[-1]:.2f} s" if gaps else "none"
        notes.append(
            f"    status messages {run['bus'].status_messages:,} pushed to the reducer "
            f"({stats['status dead letters']} dead-lettered), an image → the next frame "
            f"started {lag}; warm-up minimum set "
            f"{dict(run['warm_calls']) or 'never'}; peak instances {run['render_peak']:,}; "
            f"simulated / wall time {run['sim_end']:.0f} s / {run['wall']:.0f} s")
    print(f"\n## animation: {frames} frames × {passes} passes of ~30 s on {workers:,} "
          f"instances, cold farm, warm-up on (a frame: {shape.tiles} tile(s) × {shape.passes} "
          f"passes, {shape.fold} per task: {shape.productions} production tasks and "
          f"{shape.total_tasks - shape.productions} reductions)")
    table_rows(("", "frames", "passes", "instances", "makespan", "ideal", "R",
                "first frame at", "fraction", "peak doc writes/s"), rows)
    for n in notes:
        print(f"  {n}")
    return ratio


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="both",
                    choices=["big", "mixed", "both", "stragglers", "warmup", "animation",
                             "all"])
    ap.add_argument("--workers", type=int, default=10_000)
    ap.add_argument("--mixed-workers", type=int, default=1_000)
    ap.add_argument("--passes", type=int, default=10_000)
    ap.add_argument("--side-workers", type=int, default=1_000,
                    help="all: workers (and passes) of the stragglers and warm-up runs; "
                         "the animation's instances")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--frames", type=int, default=250,
                    help="animation: frames 1..N (on --side-workers instances)")
    ap.add_argument("--frame-passes", type=int, default=16,
                    help="animation: passes of ~30 s per frame")
    ap.add_argument("--frame-tile", type=int, default=None,
                    help="animation: the request's tile (default: the planner's; the "
                         "stand-in's frame is 32×32 pixels)")
    ap.add_argument("--straggler-p", type=float, default=0.05,
                    help="stragglers: the share of tasks that straggle")
    ap.add_argument("--straggler-alpha", type=float, default=1.1,
                    help="stragglers: the Pareto shape of how much longer they take")
    ap.add_argument("--straggler-cap", type=float, default=30.0,
                    help="stragglers: the slowest, in multiples of the usual time")
    args = ap.parse_args(argv)
    # The REST API caps ``parallel`` at 4096 per request; the scheduler has no such
    # limit, and the scenario asks for one execution of 10,000 passes.
    planning.MAX_PARALLEL = max(planning.MAX_PARALLEL, args.passes)
    ratio = None
    if args.scenario == "stragglers":
        return speculation(args, args.workers, args.passes)
    if args.scenario == "warmup":
        return warmup(args, args.workers, args.passes)
    if args.scenario == "animation":
        r = animation(args, args.side_workers, args.frames, args.frame_passes)
        print(f"animation makespan/ideal {r:.3f}")
        return None
    if args.scenario in ("mixed", "both", "all"):
        run = simulate(mixed(random.Random(args.seed)), args.mixed_workers, args.seed)
        report(f"mixed: 100 users, {args.mixed_workers} workers", run, args.mixed_workers)
    animated = None
    if args.scenario == "all":
        speculation(args, args.side_workers, args.side_workers)
        warmup(args, args.side_workers, args.side_workers)
        animated = animation(args, args.side_workers, args.frames, args.frame_passes)
    if args.scenario in ("big", "both", "all"):
        run = simulate(big(args.passes), args.workers, args.seed)
        ratio = report(f"big: one execution of {args.passes:,} passes, {args.workers} workers",
                       run, args.workers)
    if ratio is not None:
        print(f"makespan/ideal {ratio:.3f}")
    if animated is not None:
        print(f"animation makespan/ideal {animated:.3f}")


if __name__ == "__main__":
    main()
