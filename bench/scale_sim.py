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
instances raised for it, as ``francine.services.warmup`` does, at submission or 60 s before).
Usage:

    .venv/bin/python bench/scale_sim.py                 # big and mixed
    .venv/bin/python bench/scale_sim.py --scenario all  # mixed, stragglers, warmup, big
    .venv/bin/python bench/scale_sim.py --scenario big --workers 10000
    .venv/bin/python bench/scale_sim.py --scenario stragglers --workers 1000 --passes 1000

The last line is ``makespan/ideal R`` for the big execution.
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
from francine.domain.envelope import DEAD_LETTER_ATTRIBUTE, Message, task_message
from francine.handlers import reducer as reducer_module
from francine.handlers import watchdog
from francine.handlers import worker as worker_module
from francine.handlers.worker import Worker
from francine.services import executions
from francine.twins import Meter, twin_adapters
from francine.twins.bus import EVENTS_TOPIC, PRODUCE_TOPIC, BusTwin

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

    def __init__(self, sim: Sim, platform: Platform, stats):
        self.sim, self.platform, self.stats = sim, platform, stats
        #: the render each handler greenlet ran last: (seconds, started at)
        self.last: dict = {}

    def validate(self, scene, resources):
        return scene

    def image_size(self, scene):
        return scene["width"], scene["height"]

    def pixel_seconds(self, scene):
        return scene["pass_seconds"] / (scene["width"] * scene["height"])

    def render(self, scene, tile, seed, resources):
        est = scene["pass_seconds"] * tile.width * tile.height / (scene["width"] * scene["height"])
        d = self.platform.duration(est)
        if self.platform.rng.random() < self.platform.crash_p:
            self.sim.sleep(d * self.platform.rng.random())
            self.stats["crashes"] += 1
            raise Crash()
        self.sim.sleep(d)
        self.last[greenlet.getcurrent()] = d
        self.stats["longest"] = max(self.stats["longest"], d)
        if "first_render" not in self.stats:
            self.stats["first_render"] = self.sim.now - d
        return np.full((tile.height, tile.width, 1), (seed % 1000) / 1000, np.float32)


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

    def publish_tasks(self, session_id: str, execution_id: str,
                      tasks: list[tuple[int, str] | tuple[int, str, str]]) -> None:
        # The adapter publishes concurrently and the client batches up to 500 messages
        # per request: one round trip per 500.
        for start in range(0, len(tasks), 500):
            self.meter.op("publish")
            for index, tid, *piece in tasks[start: start + 500]:
                # A speculative copy goes to another shard than its index (the
                # simulation's own mark, read only by its accounting).
                copy = {"sim_copy": "1"} \
                    if index != planning.parse_node(tid.partition("-")[2])[1] else {}
                self.send(PRODUCE_TOPIC, task_message(session_id, execution_id, tid, *piece),
                          type="produce", **copy)

    def publish(self, topic: str, payload: dict, **attributes: str) -> str:
        self.meter.op("publish")
        return self.send(topic, payload, **attributes)

    def publish_status(self, message: dict) -> None:
        """An execution's status for other systems: published, delivered to nobody here."""
        self.meter.op("publish")
        self.messages += 1

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
    ad.bus = bus
    producer = SimProducer(sim, platform, stats)
    producers.register(producer)
    worker, reducer = Worker(ad), reducer_module.Reducer(ad)
    # One Worker object serves every simulated instance: no instance keeps an execution.
    worker.execution_ttl_s = 0.0

    def nack(service: Service, message: Message, attempt: int) -> None:
        stats["redeliveries"] += 1
        if attempt >= platform.max_attempts:
            stats["dead_letters"] += 1
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
    bus.routes = {PRODUCE_TOPIC: render, EVENTS_TOPIC: reduce}

    started: dict[str, tuple[str, Submission]] = {}
    for i, sub in enumerate(submissions):
        sid = f"s{i}"
        ad.store.sessions[sid] = {"user": sub.user, "producer": "sim", "format": "png",
                                  "scene": {}}

        def submit(sid=sid, sub=sub):
            body = {"parallel": sub.passes}
            if sub.tile:
                body["tile"] = sub.tile
            try:
                ex, _ = executions.start(ad, sub.user, sid, body)
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
        tasks = ad.store.tasks[(sid, eid)].values()
        stats["copies started"] += sum(bool(t.get("speculated")) for t in tasks)
        last_produced = max(t["finished"] for t in tasks
                            if t["kind"] == "produce" and t.get("finished"))
        finished = doc.get("finished")
        shape = doc["shape"]
        results.append({
            "eid": eid, "user": sub.user, "status": doc["status"], "submitted": sub.at,
            "makespan": (finished - doc["created"]).total_seconds() if finished else math.inf,
            "tail": (finished - last_produced).total_seconds() if finished else math.inf,
            "tasks": len(tasks), "depth": depth(shape), "work": sub.passes * sub.pass_seconds,
        })
    return {"results": results, "stats": stats, "meter": meter, "bus": bus, "wall": wall,
            "render_peak": render.peak, "reduce_peak": reduce.peak, "sim_end": sim.now,
            "adapters": ad}


def depth(shape: dict) -> int:
    from francine.domain.planning import Shape

    return len(Shape.from_dict(shape).level_sizes()) - 1


def peak_document_rate(meter: Meter, window_s: float = 10.0) -> tuple[float, str]:
    """The highest number of writes to one document in any ``window_s``, per second."""
    best, where = 0.0, ""
    for path, times in meter.writes.items():
        if not path.startswith("sessions/") or len(times) < 2:
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
    objects = [(len(v), k) for k, v in meter.writes.items() if not k.startswith("sessions/")]
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
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n## {title}")
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="both",
                    choices=["big", "mixed", "both", "stragglers", "warmup", "all"])
    ap.add_argument("--workers", type=int, default=10_000)
    ap.add_argument("--mixed-workers", type=int, default=1_000)
    ap.add_argument("--passes", type=int, default=10_000)
    ap.add_argument("--side-workers", type=int, default=1_000,
                    help="all: workers (and passes) of the stragglers and warm-up runs")
    ap.add_argument("--seed", type=int, default=1)
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
    if args.scenario in ("mixed", "both", "all"):
        run = simulate(mixed(random.Random(args.seed)), args.mixed_workers, args.seed)
        report(f"mixed: 100 users, {args.mixed_workers} workers", run, args.mixed_workers)
    if args.scenario == "all":
        speculation(args, args.side_workers, args.side_workers)
        warmup(args, args.side_workers, args.side_workers)
    if args.scenario in ("big", "both", "all"):
        run = simulate(big(args.passes), args.workers, args.seed)
        ratio = report(f"big: one execution of {args.passes:,} passes, {args.workers} workers",
                       run, args.workers)
    if ratio is not None:
        print(f"makespan/ideal {ratio:.3f}")


if __name__ == "__main__":
    main()
