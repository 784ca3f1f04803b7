"""The arithmetic of a price (``francine.domain.pricing``): dollars from billed units,
billed units from the pipeline's operations, wall time from the farm, cold starts
from the platform's figures; and the operations per task it counts, against what the
pipeline really does over the in-memory twins (counted in billing units: documents
read and written, messages, storage operations by class)."""

from __future__ import annotations

import collections
import dataclasses
import math

import pytest

from francine.base.config import Settings
from francine.domain import planning, pricing
from francine.domain.records import Session
from francine.handlers.reducer import Reducer
from francine.handlers.worker import Worker
from francine.services import executions
from francine.twins import pump, twin_adapters

PRICES = pricing.Prices()


def work(width=512, height=512, passes=8, tile=256, fold=1, cpu=10.0, largest=None,
         setup=0.0, frames=1, reduction=(0.0, 0.0)) -> pricing.Work:
    shape = planning.make_shape(width, height, passes, tile, fold)
    return pricing.Work(shape, cpu, cpu / shape.productions if largest is None else largest,
                        reduction[0], reduction[1], setup, frames)


FARM = pricing.Farm(4, pricing.Instance(1.0, 2.0), pricing.Instance(1.0, 1.0))


# --- prices ---------------------------------------------------------------------------

def test_the_default_prices_are_the_public_list_prices():
    p = pricing.Prices.of(Settings())
    assert (p.vcpu_second, p.gib_second, p.million_requests) == (0.000024, 0.0000025, 0.40)
    assert (p.firestore_100k_reads, p.firestore_100k_writes) == (0.06, 0.18)
    assert (p.pubsub_tib, p.pubsub_min_bytes) == (40.0, 1000)
    assert (p.storage_1000_class_a, p.storage_1000_class_b) == (0.005, 0.0004)


def test_prices_and_instance_sizes_come_from_the_environment():
    s = Settings.from_env({"FRANCINE_PRICE_VCPU_SECOND": "0.0000336",
                           "FRANCINE_RENDER_CPU": "4", "FRANCINE_RENDER_MEMORY_BYTES":
                           str(8 << 30), "FRANCINE_MAX_RENDER_INSTANCES": "20"})
    assert pricing.Prices.of(s).vcpu_second == 0.0000336
    farm = pricing.Farm.of(s)
    assert (farm.instances, farm.render, farm.admission) == (
        20, pricing.Instance(4.0, 8.0), False)


def test_the_farm_renders_as_many_tasks_at_once_as_its_instances_and_admission_allow():
    base = Settings(max_render_instances=10)
    assert pricing.Farm.of(base).instances == 10
    assert pricing.Farm.of(dataclasses.replace(base, farm_slots=4)).instances == 4
    assert pricing.Farm.of(dataclasses.replace(base, farm_slots=40)).instances == 10
    assert pricing.Farm.of(dataclasses.replace(base, admission_limit=3)).instances == 3


def test_dollars_are_units_times_prices():
    u = pricing.Usage(vcpu_seconds=1e6, gib_seconds=2e6, requests=3_000_000,
                      firestore_reads=200_000, firestore_writes=100_000,
                      pubsub_bytes=1 << 40, storage_class_a=10_000, storage_class_b=10_000)
    c = pricing.cost(u, PRICES)
    assert c["compute"] == pytest.approx(24.0 + 5.0)
    assert c["requests"] == pytest.approx(1.2)
    assert c["firestore"] == pytest.approx(0.12 + 0.18)
    assert c["pubsub"] == pytest.approx(40.0)
    assert c["storage"] == pytest.approx(0.05 + 0.004)
    assert c["total"] == pytest.approx(sum(v for k, v in c.items() if k != "total"))


# --- operations -----------------------------------------------------------------------

def test_operations_count_each_task_and_execution():
    ops = pricing.operations(productions=100, reductions=11, executions=1, admission=True)
    assert ops["reads"] == 100 * 11 + 11 * 4 + 24
    assert ops["writes"] == 100 * 5 + 11 * 3 + 5
    assert ops["messages"] == 2 * 100 + 2
    assert ops["requests"] == 2 * 100 + 3
    assert (ops["class_a"], ops["class_b"]) == (100 + 4 * 11, 100 + 11 + 1)
    plain = pricing.operations(100, 11, 1, admission=False)
    assert ops["reads"] - plain["reads"] == 100 * pricing.FARM_OPS["reads"]
    assert ops["writes"] - plain["writes"] == 100 * pricing.FARM_OPS["writes"]


def test_each_message_is_billed_a_thousand_bytes_published_and_again_pushed():
    w = work(passes=1, tile=512)  # one production task, one reduction
    u = pricing.usage(w, FARM, pricing.wall_seconds(w, FARM, False), False, PRICES)
    messages = pricing.operations(1, 1)["messages"]
    assert u.pubsub_bytes == 2 * 1000 * messages


# Billed units of each port operation, as Firestore, Pub/Sub and Cloud Storage bill them:
# a document read or written; a query, the documents it returns (at least one); an
# aggregation, one read; a transaction, its reads and writes.
def _n(result) -> int:
    return max(1, len(result))


READS_WRITES = {
    "get_session": lambda a, r: (1, 0), "execution": lambda a, r: (1, 0),
    "get_task": lambda a, r: (1, 0), "last_progress": lambda a, r: (1, 0),
    "latest_finish": lambda a, r: (1, 0),
    **{q: (lambda a, r: (_n(r), 0)) for q in (
        "list_resources", "list_executions", "frames_of", "tasks_in", "failed_tasks",
        "longest_running", "done_nodes", "active_executions", "waiting_tasks",
        "held_slots", "executions_in_flight", "executions_finished_since")},
    **{g: (lambda a, r: (1, 0)) for g in ("count_done_children", "count_tasks",
                                         "mean_work", "count_out")},
    "task_stats": lambda a, r: (6, 0),  # six aggregations and edge queries
    "recovery_stats": lambda a, r: (4, 0),
    "update_execution": lambda a, r: (0, 1), "update_task": lambda a, r: (0, 1),
    "create_execution": lambda a, r: (2, 1) if r[1] else (1, 0),
    "finish_execution": lambda a, r: (1, 1 if r else 0),
    "write_tasks": lambda a, r: (0, len(a[2])),
    "claim_task": lambda a, r: (2, 1 if str(r[0]) == "won" else 0),
    **{s: (lambda a, r: (1, 1 if r not in (None, False) else 0)) for s in (
        "take_waiting", "release_task", "requeue_task", "mark_speculated", "replace_task")},
    "take_waiting_many": lambda a, r: (max(1, len(a[1])), r),  # reads the chunk
    "add_frame": lambda a, r: (0, 1) if r[1] else (1, 0),
    "reserve_share": lambda a, r: (1, 1),
    "release_execution": lambda a, r: (max(1, r), r),
}
STORAGE = {"put_partial": "class_a", "put_result": "class_a", "list_objects": "class_a",
           "get_partial": "class_b", "get_result": "class_b", "result_size": "class_b",
           "fetch_resource": "class_b", "get_partials": "class_b", "stream_partials": "class_b"}


class Billing:
    """Wraps a twin (store, blobs or bus) and counts its operations in billed units."""

    def __init__(self, inner, counts: collections.Counter):
        self._inner, self._counts = inner, counts

    def __getattr__(self, name):
        f = getattr(self._inner, name)
        if not callable(f):
            return f

        def counted(*args, **kwargs):
            if name == "write_tasks":
                args = (*args[:2], list(args[2]))
            result = f(*args, **kwargs)
            if name in READS_WRITES:
                reads, writes = READS_WRITES[name](args, result)
                self._counts["reads"] += reads
                self._counts["writes"] += writes
            elif name in STORAGE:
                many = name in ("get_partials", "stream_partials")
                self._counts[STORAGE[name]] += len(args[2]) if many else 1
            elif name in ("publish_tasks", "publish_done", "publish_status"):
                self._counts["messages"] += len(args[2]) if name == "publish_tasks" else 1
            return result

        return counted


def billed_run(width: int, passes: int, tile: int) -> tuple[planning.Shape, collections.Counter]:
    """One ao render through the api's start, the worker and the reducer (twins), with
    farm admission as deployed, counted in billed units."""
    counts: collections.Counter = collections.Counter()
    ad = twin_adapters(dataclasses.replace(Settings(), min_task_s=0.0,
                                           max_render_instances=4, farm_slots=4))
    ad.store.create_session(Session("s", "u", "ao", "png",
                                    {"width": width, "height": width, "nao_samples": 1}))
    ad = dataclasses.replace(ad, store=Billing(ad.store, counts),
                             blobs=Billing(ad.blobs, counts), bus=Billing(ad.bus, counts))
    ex, _ = executions.start(ad, "u", "s", {"parallel": passes, "tile": tile})
    pump(ad, Worker(ad), Reducer(ad))
    ex = ad.store.execution("s", ex.id)
    assert ex.status == "done", ex.error
    return planning.Shape.from_dict(ex.shape), counts


@pytest.mark.parametrize(("width", "passes", "tile"), [(32, 4, 16), (64, 16, 16),
                                                        (128, 16, 32)])
def test_the_operations_counted_are_those_the_pipeline_makes(width, passes, tile):
    shape, counts = billed_run(width, passes, tile)
    productions = shape.productions
    expected = pricing.operations(productions, shape.total_tasks - productions)
    assert counts["messages"] == expected["messages"]
    assert counts["writes"] == pytest.approx(expected["writes"], rel=0.1)
    assert counts["reads"] == pytest.approx(expected["reads"], rel=0.15)
    # how many events find their group complete varies with the order of deliveries
    assert counts["class_a"] == pytest.approx(expected["class_a"], rel=0.2)
    # the client's download of the image is counted; the pipeline only looks it up
    assert counts["class_b"] == expected["class_b"] - 1


# --- cold starts ----------------------------------------------------------------------

def test_cold_starts_follow_the_platforms_figures():
    """bench/scale_sim.py: half of fresh instances running after 9 s, 90 % after
    10.5 s, a 3 % tail out to 44 s."""
    assert pricing.cold_start_cdf(9.0) == pytest.approx(0.485, abs=0.01)
    assert pricing.cold_start_cdf(10.5) == pytest.approx(0.88, abs=0.02)
    assert pricing.cold_start_cdf(44.0) == pytest.approx(1.0)
    one = pricing.expected_slowest_cold_start(1)
    assert one == pytest.approx(0.97 * 9 * math.exp(0.12 ** 2 / 2) + 0.03 * 27.5, rel=0.01)
    slowest = [pricing.expected_slowest_cold_start(n) for n in (1, 10, 100, 1000)]
    assert slowest == sorted(slowest)
    assert 40.0 < slowest[-1] < 44.0  # the last of 1,000 after about 44 s


def test_a_cold_farm_adds_the_slowest_start_of_one_wave_spread_over_more():
    one_wave = pricing.cold_start_s(100, 1)
    assert one_wave == pytest.approx(pricing.expected_slowest_cold_start(100))
    assert pricing.cold_start_s(100, 4) < one_wave
    assert pricing.cold_start_s(100, 1000) == pytest.approx(
        pricing.expected_slowest_cold_start(1), rel=0.01)


# --- wall time ------------------------------------------------------------------------

def test_one_wave_takes_its_largest_task_and_the_tree():
    w = work(passes=4, tile=256, cpu=16.0, largest=4.0)  # 16 tasks
    farm = dataclasses.replace(FARM, instances=16)
    t = pricing.wall_seconds(w, farm, cold=False)
    assert t.waves == 1 and t.instances_used == 16
    tail = w.levels * pricing.LEVEL_S + w.shape.fan_in * pricing.DOWNLOAD_S / 2
    start = pricing.START_S + pricing.BATCH_S
    assert t.wall_s == pytest.approx(start + 4.0 + pricing.TASK_HANDLER_S + tail)


def test_waves_of_tasks_take_their_turn_on_the_instances():
    w = work(passes=16, tile=256, cpu=64.0)  # 64 tasks of 1 s
    few = pricing.wall_seconds(w, dataclasses.replace(FARM, instances=4), cold=False)
    many = pricing.wall_seconds(w, dataclasses.replace(FARM, instances=16), cold=False)
    assert (few.waves, many.waves) == (16, 4)
    task = 1.0 + pricing.TASK_HANDLER_S
    assert few.wall_s - many.wall_s == pytest.approx(12 * (task + pricing.REFILL_S))
    # Faster instances: the renders shrink, the round trips do not.
    fast = dataclasses.replace(FARM, instances=4, render=pricing.Instance(4.0, 8.0))
    assert pricing.wall_seconds(w, fast, cold=False).wall_s < few.wall_s - 16 * 0.7


def test_a_cold_farm_is_slower_by_its_cold_start():
    w = work(passes=8, tile=256, cpu=32.0)  # 32 tasks on 4 instances: 8 waves
    warm, cold = (pricing.wall_seconds(w, FARM, c) for c in (False, True))
    assert cold.wall_s - warm.wall_s == pytest.approx(pricing.cold_start_s(4, 8))
    single = work(passes=1, tile=512, cpu=1.0)  # one wave: the reducer starts cold too
    warm, cold = (pricing.wall_seconds(single, FARM, c) for c in (False, True))
    assert cold.wall_s - warm.wall_s == pytest.approx(
        pricing.expected_slowest_cold_start(1) + pricing.REDUCER_COLD_S)


def test_frames_run_through_the_farm_one_after_another():
    one = work(passes=4, tile=256, cpu=16.0)
    ten = dataclasses.replace(one, frames=10)
    assert (ten.productions, ten.reductions) == (10 * one.productions, 10 * one.reductions)
    t1, t10 = (pricing.wall_seconds(w, FARM, False) for w in (one, ten))
    assert t10.waves == 10 * t1.waves
    assert pricing.cpu_seconds(ten, 4) == pytest.approx(10 * pricing.cpu_seconds(one, 4))


def test_the_set_up_is_paid_once_per_instance():
    w = work(passes=8, tile=256, cpu=32.0, setup=0.5)
    assert pricing.cpu_seconds(w, 4) == pytest.approx(32.0 + 4 * 0.5)
    plain = dataclasses.replace(w, setup_cpu_s=0.0)
    assert (pricing.wall_seconds(w, FARM, False).wall_s
            - pricing.wall_seconds(plain, FARM, False).wall_s) == pytest.approx(0.5)


# --- billed units -----------------------------------------------------------------------

def test_the_render_service_bills_its_request_time_and_a_cold_start():
    w = work(passes=8, tile=256, cpu=32.0)
    warm_t, cold_t = (pricing.wall_seconds(w, FARM, c) for c in (False, True))
    warm = pricing.usage(w, FARM, warm_t, False, PRICES)
    cold = pricing.usage(w, FARM, cold_t, True, PRICES)
    # The renders' CPU (one vCPU), each task's round trips and rounding, the reducer's.
    assert warm.vcpu_seconds > 32.0 + 32 * (pricing.TASK_HANDLER_S + pricing.ROUNDING_S)
    started = 4 * pricing.expected_slowest_cold_start(1)
    assert cold.vcpu_seconds - warm.vcpu_seconds == pytest.approx(started)
    assert cold.gib_seconds - warm.gib_seconds == pytest.approx(2.0 * started)
    # Twice the vCPUs per instance: the same vCPU-seconds for the renders.
    big = dataclasses.replace(FARM, render=pricing.Instance(2.0, 4.0))
    twice = pricing.usage(w, big, pricing.wall_seconds(w, big, False), False, PRICES)
    assert twice.vcpu_seconds - warm.vcpu_seconds == pytest.approx(
        32 * (pricing.TASK_HANDLER_S + pricing.ROUNDING_S))


def test_reductions_read_each_child_over_its_rectangle_and_the_root_encodes():
    shape = planning.make_shape(64, 32, 1, 64)  # one task: the root reads it
    total, critical = pricing.reduction_cpu(shape, channels=3, image_channels=3)
    one = pricing.REDUCE_PER_CHILD_S + pricing.REDUCE_PER_VALUE_S * 64 * 32 * 3 \
        + pricing.ENCODE_PER_VALUE_S * 64 * 32 * 3
    assert total == pytest.approx(one) and critical == pytest.approx(one)
    shape = planning.make_shape(64, 64, 4, 32)  # 16 tasks, fan-in 4, two levels
    total, critical = pricing.reduction_cpu(shape, channels=1, image_channels=1)
    assert critical < total


def test_the_estimate_adds_it_all_up():
    w = work(passes=8, tile=256, cpu=32.0, reduction=(0.4, 0.1))
    est = pricing.estimate(w, FARM, PRICES)
    assert (est.tasks, est.productions, est.reductions) == (
        w.shape.total_tasks, 32, w.shape.total_tasks - 32)
    assert est.cpu_seconds == pytest.approx(32.4)
    assert est.cold.wall_s > est.warm.wall_s
    assert est.cost_cold["total"] > est.cost_warm["total"] > 32.4 * PRICES.vcpu_second
