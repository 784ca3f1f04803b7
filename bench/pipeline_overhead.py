"""The real pipeline against the floor and a peer, on this machine.

    .venv/bin/python bench/pipeline_overhead.py [--tasks 64] [--task-s 0.4] [--no-dask]
        [--idle-s 20]

The same ``ao`` render of 64 production tasks (256×256, one pass each, about 0.4 s of
CPU on one thread, calibrated here in CPU time), three ways, each warmed up and timed:

  (a) Francine: the local stack with 2 render workers (api → Pub/Sub → workers →
      reducer → Cloud Storage on the emulators), from the request to the end that the
      execution records (after its image is stored);
  (b) the floor: ``multiprocessing.Pool(2)`` calling the same producer, then the same
      reduction and encoding, in this process; run before and after (a), and the mean
      taken, so that a change of a shared machine's load during (a) is seen and halved;
  (c) a peer: a Dask ``LocalCluster`` of 2 single-threaded workers doing the same.

Every process renders on one thread (2 processes on 2 cores in all three). Prints the
three wall times, their ratios to the floor, the load average at the start of each, and
the pipeline's overhead per task on the critical path with its parts: the stack runs
with ``FRANCINE_TRACE_DIR`` (``francine.tools.local.trace``), so every port operation,
handler and render leaves a span, and the CPU each of the stack's processes spent
during (a) is read from /proc, and again while the stack stands idle afterwards
(``--idle-s``: its background work). The last line is ``francine/floor R``.
Needs the bench extra (``pip install -e '.[bench]'``) for Dask.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time

WORKERS = 2
#: How often the end of the timed execution is looked for (a read of its document; the
#: time comes from the end the execution records, so polling seldom costs no accuracy).
POLL_S = 1.0


def scene_for(task_s: float) -> dict:
    """An ao scene whose one pass takes about ``task_s`` of CPU here on one thread
    (measured in CPU time, which the load of a shared machine does not stretch; the
    cost grows about as nao_samples², so a few rounds of rescaling settle it). On a fast
    machine the samples reach the producer's limit: then the image grows instead (the
    cost grows as its pixels)."""
    import numba

    from francine import producers
    from francine.domain.producer import Tile
    from francine.producers.ao.scene import MAX_AO_SAMPLES

    numba.set_num_threads(1)
    ao = producers.get("ao")

    def measure(edge: int, n: int) -> tuple[dict, float]:
        scene = ao.validate({"width": edge, "height": edge, "nao_samples": n}, None)
        times = []
        for seed in range(2):
            t = time.process_time()
            ao.render(scene, Tile(0, 0, edge, edge), seed, None)
            times.append(time.process_time() - t)
        return scene, min(times)

    edge, n = 256, 4
    measure(edge, n)  # compiles, starts the threads
    for _ in range(4):
        _, took = measure(edge, n)
        wanted = n * (task_s / took) ** 0.5
        if wanted > MAX_AO_SAMPLES:
            edge = max(8, round(edge * wanted / MAX_AO_SAMPLES / 8) * 8)
            n = MAX_AO_SAMPLES
        else:
            n = max(1, round(wanted))
    return measure(edge, n)


def render_pass(args) -> bytes:
    from francine import producers
    from francine.domain import imaging, planning
    from francine.domain.producer import Tile

    scene, eid, p = args
    ao = producers.get("ao")
    w, h = scene["width"], scene["height"]
    tile = Tile(0, 0, w, h)
    pixels = ao.render(scene, tile, planning.seed_for(eid, p), None)
    return imaging.dump_partial(imaging.from_pass(tile, max(w, h), pixels))


def reduce_and_encode(partials: list[bytes]) -> bytes:
    from francine.domain import imaging

    combined = imaging.combine(imaging.load_partial(b) for b in partials)
    return imaging.encode(combined.mean(), "png", "linear")


def own_session() -> None:
    """Make this process a session of its own, as the stack's processes are: the kernel
    (autogroup) shares the CPU fairly between sessions, so on a machine that other jobs
    load, two workers in one session get half what two sessions get."""
    with contextlib.suppress(OSError):  # already a session (or group) leader
        os.setsid()


def floor(scene: dict, tasks: int) -> tuple[float, bytes]:
    jobs = [(scene, "bench", p) for p in range(tasks)]
    with multiprocessing.get_context("spawn").Pool(WORKERS, initializer=own_session) as pool:
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
        client.run(own_session)
        client.gather(client.map(render_pass, jobs[:WORKERS], pure=False))
        t = time.perf_counter()
        partials = client.map(render_pass, jobs, pure=False)
        image = client.submit(reduce_and_encode, partials).result()
        return time.perf_counter() - t, image


def group_cpu_s(stack) -> dict[str, float]:
    """CPU seconds (user + system) so far of each process group the stack started
    (an emulator's group holds gcloud's wrapper and its Java process)."""
    groups = {c.popen.pid: c.name for c in stack.processes.children}
    groups.update({c.popen.pid: c.name for c in stack.emulators._group.children})
    tick = os.sysconf("SC_CLK_TCK")
    cpu: dict[str, float] = dict.fromkeys(groups.values(), 0.0)
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pgrp = int(fields[2])  # after the state: ppid, pgrp
        if pgrp in groups:
            cpu[groups[pgrp]] += (int(fields[11]) + int(fields[12])) / tick
    return cpu


def wait_for_end(stack, sid: str, eid: str, timeout_s: float = 600.0) -> None:
    """Wait for the execution to end, reading its document alone (one Firestore read per
    poll: a status read through the api runs the task statistics' aggregation queries,
    work for the emulator that the renders share the cores with)."""
    from google.cloud import firestore

    from francine.adapters.store import Store
    from francine.tools.local.processes import environment

    with environment(stack.info["emulators"]):
        store = Store(firestore.Client(project=stack.info["project"]))
    deadline = time.monotonic() + timeout_s
    while (ex := store.execution(sid, eid)) is None or not ex.final:
        if time.monotonic() > deadline:
            raise TimeoutError(f"execution {eid} not ended after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def francine(scene: dict, tasks: int, idle_s: float) -> tuple[float, bytes, dict, dict]:
    from francine.tools.client import Client
    from francine.tools.local import trace
    from francine.tools.local.stack import Stack, StackOptions

    with tempfile.TemporaryDirectory() as state:
        spans_dir = pathlib.Path(state) / "trace"
        with Stack(StackOptions(
                workers=WORKERS, state_dir=pathlib.Path(state),
                extra_env={"FRANCINE_MIN_TASK_S": "0",
                           **trace.environment(spans_dir)})) as stack:
            client = Client(stack.info["api_url"], stack.info["api_key"])
            sid = client.create_session("ao", scene)["id"]
            warm = client.execute(sid, parallel=WORKERS * 2)["id"]
            client.wait(sid, warm, poll_s=POLL_S)
            time.sleep(1.0)  # let the warm-up's tail (webhooks, logs) settle
            cpu0 = group_cpu_s(stack)
            t = time.time()
            eid = client.execute(sid, parallel=tasks)["id"]
            wait_for_end(stack, sid, eid)
            cpu1 = group_cpu_s(stack)
            status = client.execution(sid, eid)
            # From the request to the end the execution recorded (the same machine's
            # clock), so that polling costs no accuracy.
            end = dt.datetime.fromisoformat(status["time"]["finished"]).timestamp()
            image = client.result(sid, eid)
            # The stack idle: what its background work (the watchdog's sweeps, the
            # emulators' own timers) takes of the cores when nothing renders.
            time.sleep(1.0)
            idle0 = group_cpu_s(stack)
            time.sleep(idle_s)
            idle = {name: cpu - idle0.get(name, 0.0) for name, cpu in group_cpu_s(stack).items()}
        spent = {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1}
        profile = {"start": t, "end": end, "cpu": spent, "idle": idle, "idle_s": idle_s,
                   "spans": trace.breakdown(trace.load(spans_dir), t, end)}
    assert status["status"] == "done", status
    assert status["tasks"]["total"] > tasks  # one production task per pass
    return end - t, image, status, profile


def report_profile(profile: dict, p_wall: float, f_wall: float, compute: float,
                   n: int, task_cpu: float) -> None:
    """The per-task overhead on the critical path, from the stack's spans and CPU."""
    from francine.tools.local import trace

    spans = profile["spans"]
    t0, t1 = profile["start"], profile["end"]
    per_slot = n / WORKERS
    print(f"per-task overhead on the critical path: {(p_wall - f_wall) / per_slot * 1000:.0f} ms"
          f" ((francine - floor) / {per_slot:.0f} tasks per worker), made of:")
    head = spans["first_handle"] - t0
    tail = t1 - spans["last_production_end"]
    print(f"  request → first task handled        {head * 1000:7.0f} ms once "
          f"({head / per_slot * 1000:.0f} ms per task)")
    api = spans["api"]
    if api:
        print(f"      request → the api's handler      {(api['start'] - t0) * 1000:6.0f} ms")
        print(f"      creating and publishing          {(api['end'] - api['start']) * 1000:6.0f}"
              " ms: " + ", ".join(f"{k} {v * 1000:.0f}" for k, v in
                                  sorted(api["ops"].items(), key=lambda kv: -kv[1])))
        print(f"      → first push handled             "
              f"{(spans['first_handle'] - api['end']) * 1000:6.0f} ms (the response, the push)")
    print(f"  last task handled → image, end      {tail * 1000:7.0f} ms once "
          f"({tail / per_slot * 1000:.0f} ms per task)")
    if spans["reducer"]:
        r = spans["reducer"]
        last = spans["last_production_end"]
        tail_spans = [sp for sp in r["spans"] if sp[2] > last]
        ops: dict[str, float] = {}
        for name, a, b in trace.outermost(tail_spans, skip=("reducer.handle",)):
            ops[name] = ops.get(name, 0.0) + b - max(a, last)
        print("      the reducer after the last task: " + ", ".join(
            f"{k} {v * 1000:.0f}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:8])
            + " ms")
    for i, w in enumerate(sorted(spans["workers"], key=lambda w: w["first"])):
        k = w["tasks"]
        beyond = w["render"] / k - compute
        print(f"  worker {i}: {k} tasks, per task: render {w['render'] / k * 1000:.0f} ms "
              f"({beyond * 1000:+.0f} ms against the floor's {compute * 1000:.0f}), "
              f"between tasks {w['between'] / max(1, k - 1) * 1000:.0f} ms, in the handler "
              f"outside render {(w['busy'] - w['render']) / k * 1000:.0f} ms:")
        for name, s in sorted(w["ops"].items(), key=lambda kv: -kv[1]):
            print(f"      {name:28s} {s / k * 1000:6.1f} ms")
    r = spans["reducer"]
    if r:
        print(f"  reducer: {r['events']} events, {r['busy']:.2f} s in handlers; "
              + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(r["ops"].items(),
                                                             key=lambda kv: -kv[1])[:6]))
    cpu = profile["cpu"]
    total = sum(cpu.values())
    print(f"  CPU during the execution: {total:.1f} s of {2 * (t1 - t0):.1f} s on 2 cores "
          f"(the renders need {task_cpu * n:.1f} s; all of it over theirs "
          f"{total / (task_cpu * n):.2f}): "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
                      if v >= 0.05))
    idle = profile["idle"]
    print(f"  the stack idle for {profile['idle_s']:.0f} s afterwards: "
          f"{sum(idle.values()):.2f} CPU-s ({sum(idle.values()) / profile['idle_s']:.1%} of one "
          "core): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                sorted(idle.items(), key=lambda kv: -kv[1]) if v >= 0.005))


def main() -> int:
    # One render thread per process in all three, as in the stack's workers
    # (NUMBA_NUM_THREADS = cores / workers): 2 processes on 2 cores each time.
    os.environ["NUMBA_NUM_THREADS"] = "1"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--task-s", type=float, default=0.4)
    parser.add_argument("--no-dask", action="store_true", help="skip (c), the peer")
    parser.add_argument("--idle-s", type=float, default=20.0,
                        help="then measure the stack idle this long")
    args = parser.parse_args()
    scene, task_cpu = scene_for(args.task_s)
    n = args.tasks
    # The floor before and after the stack, so that a change of the machine's load
    # during the stack's run shows (and is averaged); then the peer.
    load = {"floor": os.getloadavg()[0]}
    f1_wall, f_image = floor(scene, n)
    load["francine"] = os.getloadavg()[0]
    p_wall, p_image, status, profile = francine(scene, n, args.idle_s)
    load["floor again"] = os.getloadavg()[0]
    f2_wall, f2_image = floor(scene, n)
    load["dask"] = os.getloadavg()[0]
    d_wall, d_image = (float("nan"), f_image) if args.no_dask else dask(scene, n)
    assert f_image == d_image == f2_image  # the same passes, reduced in the same order
    f_wall = (f1_wall + f2_wall) / 2
    compute = f_wall * WORKERS / n  # seconds of one task, as the floor measured it
    print(f"scene: {scene['width']}×{scene['height']} ao, nao_samples "
          f"{scene['nao_samples']}, {n} tasks of "
          f"{task_cpu:.3f} s of CPU (here, alone) and {compute:.3f} s of the floor's wall "
          f"time per task and worker, {WORKERS} workers")
    print(f"(a) francine, local stack   {p_wall:7.3f} s   {p_wall / f_wall:.3f}× floor")
    print(f"(b) multiprocessing floor   {f_wall:7.3f} s   1.000× floor (mean of "
          f"{f1_wall:.3f} s before and {f2_wall:.3f} s after (a))")
    print(f"(c) dask LocalCluster       {d_wall:7.3f} s   {d_wall / f_wall:.3f}× floor")
    print("load average (1 min) at the start of each: "
          + ", ".join(f"{k} {v:.1f}" for k, v in load.items()))
    report_profile(profile, p_wall, f_wall, compute, n, task_cpu)
    print(f"identical images: floor == dask: {f_image == d_image}; francine bytes "
          f"{'equal' if p_image == f_image else 'differ (other seeds: execution id)'}")
    print(f"francine/floor {p_wall / f_wall:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
