"""The price of a render before it runs: its tasks, CPU-seconds, wall time on the farm
(cold and warm) and what Google Cloud bills for it. Pure arithmetic, no I/O: the caller
(``francine.services.quotes``) gives the planned shape, the expected CPU of its parts,
the farm and the prices.

**Expected, not bounded.** The planner's estimates are upper bounds (a task must fit
Pub/Sub's deadline); a price wants the expected value, which the caller gives
(``Work``): CPU seconds of one vCPU, the figure ``time.cpu`` reports once it ran.

**Wall time.** The farm renders ``instances`` production tasks at once, one per
instance (Cloud Run concurrency 1). A render's wall time is its start (the api plans,
writes and publishes), the production tasks in waves of ``instances`` (each task its
render over the instance's vCPUs plus the platform's round trips, ``TASK_CYCLE_S``),
each instance's set-up once (Blender opens the file), then the reduction tree's
critical path: one node per level, each an event and a reduction. A cold farm first
starts its instances: the expected *slowest* of the cold starts the first wave waits
for, spread over the waves when there are several (an instance that came up early
takes the late one's tasks). The platform's figures are the project's own
(``bench/scale_sim.py``'s ``Platform``; ``infra/autoscaling.md``): cold starts with a
median of 9 s, lognormal σ 0.12, and a 3 % tail spread up to 44 s; a reducer's 1.5 s;
the per-operation latencies of Firestore, Pub/Sub and Cloud Storage.

**Operations.** What the pipeline does per task, counted from its code (and checked
against the in-memory twins by ``tests/test_pricing.py``): see ``operations``.

**Prices.** Public list prices (``Prices``; Settings ``price_*``), before free tiers.
Cloud Run bills request-based instances by allocated vCPU-seconds and GiB-seconds while
a request runs (rounded up to 100 ms) and a cold start's start-up time, plus each
request; Firestore by document read and written (an aggregation query: one read per
1,000 index entries); Pub/Sub by bytes published and delivered, at least 1,000 bytes
per publish and per push; Cloud Storage by operation (class A: writes and listings;
class B: reads). Not counted: storing partials for minutes and the result for days
(fractions of a cent per GiB-month), deletions (Firestore $0.02 per 100k; Cloud
Storage free), egress of the image to the client, the watchdog's minute timer (the
farm's, not a render's), and a client's status polls.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from francine.base.config import Settings
from francine.domain import planning, reduction

# --- the platform (bench/scale_sim.py's Platform, infra/autoscaling.md) -----------------

#: A render instance's cold start: lognormal around ``COLD_MEDIAN_S`` (σ ``COLD_SIGMA``),
#: except a ``COLD_TAIL_P`` tail spread uniformly over ``COLD_TAIL_S``.
COLD_MEDIAN_S = 9.0
COLD_SIGMA = 0.12
COLD_TAIL_P = 0.03
COLD_TAIL_S = (11.0, 44.0)
#: A reducer's cold start (a small Python function).
REDUCER_COLD_S = 1.5
#: Latencies of one operation, in-region (scale_sim's ``Platform.latency``).
READ_S, WRITE_S, TRANSACTION_S = 0.008, 0.015, 0.030
PUBLISH_S, UPLOAD_S, DOWNLOAD_S, PUSH_S, AGGREGATE_S = 0.010, 0.050, 0.025, 0.05, 0.020
#: A production task's round trips on its instance: the execution read, the claim's
#: transaction, the partial's upload, the done write, the event's publish.
TASK_HANDLER_S = READ_S + TRANSACTION_S + UPLOAD_S + WRITE_S + PUBLISH_S
#: From one task's end to the next task on the freed instance: the push of its event,
#: the reducer's look (two reads, two aggregations), and with farm admission the
#: dispatch (a query, a transaction, a publish) and the next push.
REFILL_S = PUSH_S + 2 * READ_S + 2 * AGGREGATE_S + READ_S + TRANSACTION_S + PUBLISH_S + PUSH_S
#: Without farm admission every task is published at once: the next push waits only
#: for Pub/Sub.
REFILL_NO_FARM_S = PUSH_S
#: One level of the reduction tree on the critical path, besides its CPU: the event's
#: push, the reducer's reads and aggregation, the listing of the group, the claim, the
#: upload of its output.
LEVEL_S = PUSH_S + 2 * READ_S + AGGREGATE_S + READ_S + TRANSACTION_S + UPLOAD_S + WRITE_S
#: The reducer's request for a task's event that completes nothing: the execution, the
#: task, the count of its siblings, the count of unstarted tasks.
EVENT_S = 2 * READ_S + 2 * AGGREGATE_S
#: A reduction besides its CPU: the group's listing, the claim, the children's
#: downloads (``reduction.WINDOW`` at a time: counted per child below), its upload and
#: done write.
REDUCE_S = READ_S + TRANSACTION_S + UPLOAD_S + WRITE_S
#: The api before the first task runs: the session, resources and history read, the
#: execution's transaction, the task documents (a batch of 500 at a time), two updates,
#: the publish and the first push.
START_S = 3 * READ_S + TRANSACTION_S + 2 * WRITE_S + PUBLISH_S + PUSH_S
BATCH_S = 0.040
#: A request is billed rounded up to 100 ms: half of it on average.
ROUNDING_S = 0.05

# --- reductions (measured on the twins: CPU of the reducer's work) -------------------------

#: CPU seconds of a reduction: per child read (download, parse), per float32 value of
#: a child added, per value of the final image encoded (PNG/JPEG/EXR, the root only).
REDUCE_PER_CHILD_S = 1e-4
REDUCE_PER_VALUE_S = 1.2e-8
ENCODE_PER_VALUE_S = 2e-8

# --- operations per task, from the pipeline's code -----------------------------------------
#
# A production task, with farm admission (the deployment's default, FRANCINE_FARM_SLOTS):
#   Firestore reads  11: the farm's dispatch (a query for the next waiting task, the
#                        slots-out aggregation, the take's read), the worker's read of
#                        the execution, the claim's transaction (execution and task),
#                        the reducer's read of the execution and of the task, the count
#                        of done siblings, the count of unstarted tasks, the release's read
#   Firestore writes  5: the task document, the take, the claim, done, the release
#   Pub/Sub messages  2: the task, its done event (each published once, pushed once)
#   Storage           1 class A (its partial), 1 class B (its parent reads it)
#   Cloud Run         2 requests (the render push, the reducer's push)
# Without farm admission the farm's four reads and two writes go.
# A reduction: 4 reads (the claim's two, the task and its siblings' count as it carries
# on up the tree), 3 writes (document, claim, done), 4 class A (its partial, and the
# listing of its children's outputs by each event that finds the group complete: the
# last child's and those that finished with it, about 3 on the twins with farm
# admission), 1 class B (its parent reads it; the root's image is looked up once and
# downloaded once).
# An execution: about 24 reads (session, resources, history, quotas, the transaction,
# the end's statistics and recovery counts), 5 writes (the execution, planned,
# published, the end, the fair-share account), 2 status messages (created, ended, each
# pushed to the reducer), the api's request; an animation is one more such execution
# over its frames.

PRODUCTION_OPS = {"reads": 11, "writes": 5, "messages": 2, "class_a": 1, "class_b": 1,
                  "requests": 2}
FARM_OPS = {"reads": 4, "writes": 2}  # of PRODUCTION_OPS, only with farm admission
REDUCTION_OPS = {"reads": 4, "writes": 3, "messages": 0, "class_a": 4, "class_b": 1,
                 "requests": 0}
EXECUTION_OPS = {"reads": 24, "writes": 5, "messages": 2, "class_a": 0, "class_b": 1,
                 "requests": 3}


@dataclass(frozen=True)
class Prices:
    """Unit prices in USD."""

    vcpu_second: float = 0.000024
    gib_second: float = 0.0000025
    million_requests: float = 0.40
    firestore_100k_reads: float = 0.06
    firestore_100k_writes: float = 0.18
    pubsub_tib: float = 40.0
    pubsub_min_bytes: int = 1000
    storage_1000_class_a: float = 0.005
    storage_1000_class_b: float = 0.0004

    @classmethod
    def of(cls, s: Settings) -> Prices:
        return cls(s.price_vcpu_second, s.price_gib_second, s.price_million_requests,
                   s.price_firestore_100k_reads, s.price_firestore_100k_writes,
                   s.price_pubsub_tib, 1000, s.price_storage_1000_class_a,
                   s.price_storage_1000_class_b)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Instance:
    """One Cloud Run instance's size."""

    cpu: float  # vCPUs
    memory_gib: float


@dataclass(frozen=True)
class Farm:
    instances: int  # production tasks rendering at once
    render: Instance
    reducer: Instance
    admission: bool = True  # farm admission (the Firestore queue)

    @classmethod
    def of(cls, s: Settings) -> Farm:
        admission = s.farm_slots > 0
        instances = s.max_render_instances
        if admission:  # slots beyond the instances wait in Cloud Run's queue
            instances = min(instances, s.farm_slots)
        elif s.admission_limit > 0:  # one execution's tasks in flight
            instances = min(instances, s.admission_limit)
        return cls(max(1, instances),
                   Instance(s.render_cpu, s.render_memory_bytes / (1 << 30)),
                   Instance(s.reducer_cpu, s.reducer_memory_bytes / (1 << 30)),
                   admission)


@dataclass(frozen=True)
class Work:
    """What one frame of a render does, in expected CPU seconds of one vCPU."""

    shape: planning.Shape
    production_cpu_s: float  # every production task of the frame
    largest_task_cpu_s: float  # the largest one
    reduction_cpu_s: float  # every reduction of the frame, the root's encoding included
    critical_reduction_cpu_s: float  # one node per level, leaf to root
    setup_cpu_s: float = 0.0  # once per instance that renders the scene (Blender: open)
    frames: int = 1
    resources: int = 0  # files each instance fetches once

    @property
    def productions(self) -> int:
        return self.shape.productions * self.frames

    @property
    def reductions(self) -> int:
        return (self.shape.total_tasks - self.shape.productions) * self.frames

    @property
    def levels(self) -> int:
        return len(self.shape.level_sizes()) - 1


def reduction_cpu(shape: planning.Shape, channels: int, image_channels: int
                  ) -> tuple[float, float]:
    """(CPU seconds of every reduction of ``shape``, of one node per level on the
    critical path): each child read and added over its rectangle, ``channels`` values a
    pixel; the root encodes ``image_channels`` per pixel."""
    def area(node: str) -> int:
        x0, y0, x1, y1 = reduction.region(shape, node)
        return (x1 - x0) * (y1 - y0)

    total, critical = 0.0, 0.0
    for level, size in enumerate(shape.level_sizes()[1:], start=1):
        slowest = 0.0
        for i in range(size):
            below = planning.children(shape, planning.node_name(level, i))
            cpu = sum(REDUCE_PER_CHILD_S + REDUCE_PER_VALUE_S * area(c) * channels
                      for c in below)
            total += cpu
            slowest = max(slowest, cpu)
        critical += slowest
    encode = ENCODE_PER_VALUE_S * shape.width * shape.height * image_channels
    return total + encode, critical + encode


def cold_start_cdf(x: float) -> float:
    """P(a render instance's cold start ≤ ``x`` seconds)."""
    if x <= 0:
        return 0.0
    body = 0.5 * (1 + math.erf(math.log(x / COLD_MEDIAN_S) / (COLD_SIGMA * math.sqrt(2))))
    low, high = COLD_TAIL_S
    tail = min(1.0, max(0.0, (x - low) / (high - low)))
    return (1 - COLD_TAIL_P) * body + COLD_TAIL_P * tail


def expected_slowest_cold_start(n: int, step: float = 0.05) -> float:
    """The expected longest of ``n`` cold starts: ∫ 1 − F(x)ⁿ dx."""
    if n <= 0:
        return 0.0
    high = COLD_TAIL_S[1]
    steps = int(high / step)
    return sum((1 - cold_start_cdf((i + 0.5) * step) ** n) * step for i in range(steps))


def cold_start_s(instances: int, waves: int) -> float:
    """What a cold farm adds to a render's wall time: the slowest of the first wave's
    cold starts with one wave; with more, the typical one plus the slowest's excess
    spread over the waves (instances that came up early take the late one's tasks)."""
    mean = expected_slowest_cold_start(1)
    slowest = expected_slowest_cold_start(instances)
    return slowest if waves <= 1 else mean + (slowest - mean) / waves


@dataclass(frozen=True)
class Timing:
    wall_s: float
    waves: int
    instances_used: int
    cold_start_s: float  # included in wall_s when cold


def wall_seconds(work: Work, farm: Farm, cold: bool) -> Timing:
    """The render's expected wall time, request to image."""
    n = work.productions
    used = min(farm.instances, n)
    waves = math.ceil(n / used)
    cpu = farm.render.cpu
    refill = REFILL_S if farm.admission else REFILL_NO_FARM_S
    mean_task = work.production_cpu_s / work.shape.productions / cpu + TASK_HANDLER_S
    largest = work.largest_task_cpu_s / cpu + TASK_HANDLER_S
    # Waves of tasks; the last wave holds the largest task at worst.
    produce = (waves - 1) * (mean_task + refill) + largest
    start = START_S + BATCH_S * math.ceil(work.shape.total_tasks * work.frames / 500)
    setup = work.setup_cpu_s / cpu + (DOWNLOAD_S if work.resources else 0.0)
    tail = work.levels * LEVEL_S + work.critical_reduction_cpu_s / farm.reducer.cpu \
        + work.shape.fan_in * DOWNLOAD_S / reduction.WINDOW
    extra = 0.0
    if cold:
        extra = cold_start_s(used, waves) + (REDUCER_COLD_S if waves == 1 else 0.0)
    return Timing(start + setup + produce + tail + extra, waves, used, extra)


@dataclass(frozen=True)
class Usage:
    """What the platform bills for a render."""

    vcpu_seconds: float
    gib_seconds: float
    requests: int
    firestore_reads: int
    firestore_writes: int
    pubsub_bytes: int
    storage_class_a: int
    storage_class_b: int

    def to_dict(self) -> dict[str, float | int]:
        return {k: (float(f"{v:.4g}") if isinstance(v, float) else v)
                for k, v in asdict(self).items()}


def operations(productions: int, reductions: int, executions: int = 1,
               admission: bool = True) -> dict[str, int]:
    """Firestore reads and writes, Pub/Sub messages, Cloud Storage operations (class A
    and B) and Cloud Run requests of a render's tasks, by the counts above."""
    out = {}
    for k in PRODUCTION_OPS:
        per_production = PRODUCTION_OPS[k] - (0 if admission else FARM_OPS.get(k, 0))
        out[k] = (productions * per_production + reductions * REDUCTION_OPS[k]
                  + executions * EXECUTION_OPS[k])
    return out


def usage(work: Work, farm: Farm, timing: Timing, cold: bool,
          prices: Prices = Prices()) -> Usage:
    """The billed units: the render service's request time (render, round trips,
    rounding; each instance's set-up; a cold start's start-up), the reducer's (every
    event and reduction), and the operations."""
    n, r = work.productions, work.reductions
    cpu = farm.render.cpu
    render_s = (work.frames * work.production_cpu_s / cpu
                + n * (TASK_HANDLER_S + ROUNDING_S)
                + timing.instances_used * work.setup_cpu_s / cpu)
    if cold:
        render_s += timing.instances_used * expected_slowest_cold_start(1)
    # Every production task's event is a request to the reducer; a reduction is done
    # in the request of the event that completed its group (its children downloaded,
    # ``WINDOW`` at a time).
    children = n + r - work.frames
    reducer_s = (work.frames * work.reduction_cpu_s / farm.reducer.cpu
                 + n * (EVENT_S + ROUNDING_S) + r * REDUCE_S
                 + children * DOWNLOAD_S / reduction.WINDOW)
    executions = work.frames + (1 if work.frames > 1 else 0)
    ops = operations(n, r, executions, farm.admission)
    fetches = timing.instances_used * work.resources
    return Usage(
        vcpu_seconds=render_s * cpu + reducer_s * farm.reducer.cpu,
        gib_seconds=render_s * farm.render.memory_gib + reducer_s * farm.reducer.memory_gib,
        requests=ops["requests"], firestore_reads=ops["reads"],
        firestore_writes=ops["writes"],
        pubsub_bytes=2 * ops["messages"] * prices.pubsub_min_bytes,  # published, pushed
        storage_class_a=ops["class_a"], storage_class_b=ops["class_b"] + fetches)


def usd_per_cpu_second(prices: Prices, instance: Instance) -> float:
    """What a busy CPU-second of ``instance`` is billed: the vCPU and the memory beside it."""
    return prices.vcpu_second + prices.gib_second * instance.memory_gib / max(instance.cpu, 1e-9)


def cost(u: Usage, prices: Prices) -> dict[str, float]:
    """USD by service, and their total."""
    parts = {
        "compute": u.vcpu_seconds * prices.vcpu_second + u.gib_seconds * prices.gib_second,
        "requests": u.requests * prices.million_requests / 1e6,
        "firestore": (u.firestore_reads * prices.firestore_100k_reads
                      + u.firestore_writes * prices.firestore_100k_writes) / 1e5,
        "pubsub": u.pubsub_bytes * prices.pubsub_tib / (1 << 40),
        "storage": (u.storage_class_a * prices.storage_1000_class_a
                    + u.storage_class_b * prices.storage_1000_class_b) / 1000,
    }
    parts["total"] = sum(parts.values())
    return parts


@dataclass(frozen=True)
class Estimate:
    """Everything a quote says, for both a warm and a cold farm."""

    tasks: int
    productions: int
    reductions: int
    cpu_seconds: float
    warm: Timing
    cold: Timing
    usage_warm: Usage
    usage_cold: Usage
    cost_warm: dict[str, float] = field(default_factory=dict)
    cost_cold: dict[str, float] = field(default_factory=dict)


def cpu_seconds(work: Work, instances_used: int) -> float:
    """Expected CPU seconds of every task (what ``time.cpu`` reports): the renders, the
    reductions, and each instance's set-up (its first task of the scene pays it)."""
    return (work.frames * (work.production_cpu_s + work.reduction_cpu_s)
            + instances_used * work.setup_cpu_s)


def estimate(work: Work, farm: Farm, prices: Prices) -> Estimate:
    warm, cold = wall_seconds(work, farm, cold=False), wall_seconds(work, farm, cold=True)
    u_warm, u_cold = usage(work, farm, warm, False, prices), usage(work, farm, cold, True, prices)
    return Estimate(
        tasks=work.productions + work.reductions, productions=work.productions,
        reductions=work.reductions, cpu_seconds=cpu_seconds(work, warm.instances_used),
        warm=warm, cold=cold, usage_warm=u_warm, usage_cold=u_cold,
        cost_warm=cost(u_warm, prices), cost_cold=cost(u_cold, prices))
