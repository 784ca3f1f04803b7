"""The real pipeline against the floor and a peer, on this machine.

    .venv/bin/python bench/pipeline_overhead.py [--tasks 64] [--task-s 0.4]

The same ``ao`` render of 64 production tasks (one pass each, about 0.4 s of compute,
calibrated here), three ways, each warmed up once and then timed:

  (a) Francine: the local stack with 2 render workers (api → Pub/Sub → workers →
      reducer → Cloud Storage on the emulators), from the request to the end that the
      execution records (after its image is stored), polled every 0.5 s;
  (b) the floor: ``multiprocessing.Pool(2)`` calling the same producer, then the same
      reduction and encoding, in this process;
  (c) a peer: a Dask ``LocalCluster`` of 2 single-threaded workers doing the same.

Prints the three wall times, their ratios to the floor, and the pipeline's overhead per
task on the critical path with its parts; the last line is ``francine/floor R``.
Needs the bench extra (``pip install -e '.[bench]'``) for Dask.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import pathlib
import sys
import tempfile
import time

WORKERS = 2
#: Every status read of a running execution runs six aggregation queries on the
#: Firestore emulator, which shares the cores with the workers: poll seldom.
POLL_S = 0.5


def scene_for(task_s: float) -> dict:
    """An ao scene whose one pass takes about ``task_s`` here (measured)."""
    from francine import producers
    from francine.producers.base import Tile

    ao = producers.get("ao")
    scene = ao.validate({"width": 256, "height": 256, "nao_samples": 4}, None)
    ao.render(scene, Tile(0, 0, 8, 8), 1, None)  # compile
    t = time.perf_counter()
    ao.render(scene, Tile(0, 0, 256, 256), 1, None)
    one = time.perf_counter() - t
    # cost grows with nao_samples²
    n = max(1, round(4 * (task_s / one) ** 0.5))
    return ao.validate({"width": 256, "height": 256, "nao_samples": n}, None)


def render_pass(args) -> bytes:
    from francine import imaging, planning, producers
    from francine.producers.base import Tile

    scene, eid, p = args
    ao = producers.get("ao")
    w, h = scene["width"], scene["height"]
    tile = Tile(0, 0, w, h)
    pixels = ao.render(scene, tile, planning.seed_for(eid, p), None)
    return imaging.dump_partial(imaging.from_pass(tile, max(w, h), pixels))


def reduce_and_encode(partials: list[bytes]) -> bytes:
    from francine import imaging

    combined = imaging.combine(imaging.load_partial(b) for b in partials)
    return imaging.encode(combined.mean(), "png", "linear")


def floor(scene: dict, tasks: int) -> tuple[float, bytes]:
    jobs = [(scene, "bench", p) for p in range(tasks)]
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        pool.map(render_pass, jobs[:WORKERS])  # warm: imports and kernels
        t = time.perf_counter()
        partials = pool.map(render_pass, jobs, chunksize=1)
        image = reduce_and_encode(partials)
        return time.perf_counter() - t, image


def dask(scene: dict, tasks: int) -> tuple[float, bytes]:
    from dask.distributed import Client, LocalCluster

    jobs = [(scene, "bench", p) for p in range(tasks)]
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.gather(client.map(render_pass, jobs[:WORKERS], pure=False))
        t = time.perf_counter()
        partials = client.map(render_pass, jobs, pure=False)
        image = client.submit(reduce_and_encode, partials).result()
        return time.perf_counter() - t, image


def francine(scene: dict, tasks: int) -> tuple[float, bytes, dict]:
    from francine.client import Client
    from francine.local.stack import Stack, StackOptions

    with tempfile.TemporaryDirectory() as state, Stack(StackOptions(
            workers=WORKERS, state_dir=pathlib.Path(state),
            extra_env={"FRANCINE_MIN_TASK_SECONDS": "0"})) as stack:
        client = Client(stack.info["api_url"], stack.info["api_key"])
        sid = client.create_session("ao", scene)["id"]
        warm = client.execute(sid, parallel=WORKERS * 2)["id"]
        client.wait(sid, warm, poll_s=POLL_S)
        t = time.time()
        eid = client.execute(sid, parallel=tasks)["id"]
        status = client.wait(sid, eid, poll_s=POLL_S)
        # From the request to the end the execution recorded (the same machine's clock),
        # so that polling seldom costs no accuracy.
        wall = dt.datetime.fromisoformat(status["time"]["finished"]).timestamp() - t
        assert status["status"] == "done", status
        assert status["tasks"]["total"] > tasks  # one production task per pass
        return wall, client.result(sid, eid), status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--task-s", type=float, default=0.4)
    args = parser.parse_args()
    scene = scene_for(args.task_s)
    n = args.tasks
    f_wall, f_image = floor(scene, n)
    d_wall, d_image = dask(scene, n)
    p_wall, p_image, status = francine(scene, n)
    assert f_image == d_image  # the same passes, reduced in the same order
    compute = f_wall * WORKERS / n  # seconds of one task, as the floor measured it
    tm = status["time"]
    print(f"scene: 256×256 ao, nao_samples {scene['nao_samples']}, {n} tasks of about "
          f"{compute:.3f} s, {WORKERS} workers")
    print(f"(a) francine, local stack   {p_wall:7.3f} s   {p_wall / f_wall:.3f}× floor")
    print(f"(b) multiprocessing floor   {f_wall:7.3f} s   1.000× floor")
    print(f"(c) dask LocalCluster       {d_wall:7.3f} s   {d_wall / f_wall:.3f}× floor")
    per_slot = n / WORKERS
    overhead_ms = (p_wall - f_wall) / per_slot * 1000
    in_task_ms = ((tm["fetching"] + tm["producing"]) / status["tasks"]["done"]
                  - compute) * 1000 if status["tasks"]["done"] else float("nan")
    print(f"per-task overhead on the critical path: {overhead_ms:.0f} ms "
          f"((francine - floor) / {per_slot:.0f} tasks per worker)")
    print(f"  request → first task running        {tm['first_task_after'] * 1000:7.0f} ms")
    print(f"  last production task → image        {tm['image_after_last_task'] * 1000:7.0f} ms")
    print(f"  in a task, beyond compute (mean)    {in_task_ms:7.0f} ms "
          f"(fetch, upload, bookkeeping; summed over all tasks incl. reductions)")
    rest = (p_wall - f_wall - tm["first_task_after"] - tm["image_after_last_task"]) \
        / per_slot * 1000
    print(f"  between tasks (delivery, claims)    {rest:7.0f} ms per task, what is left")
    print(f"identical images: floor == dask: {f_image == d_image}; francine bytes "
          f"{'equal' if p_image == f_image else 'differ (other seeds: execution id)'}")
    print(f"francine/floor {p_wall / f_wall:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
