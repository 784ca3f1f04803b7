"""The blender producer's figures: the demo scene through the local stack against one
direct bpy render of the same total samples, cold and warm task times, and the cost
model's estimate against measurement.

    .venv/bin/python bench/blender_pipeline.py [--width 320 --height 240 --samples 8
                                                --parallel 4 --tile 160 --workers 2]

1. Writes the demo scene (francine.producers.blender.examples, checker texture beside it).
2. Renders it directly with bpy in a fresh process, parallel × samples samples, on as
   many threads as the machine has cores (the import and file load timed apart).
3. Starts a local stack with N workers, uploads the scene and runs the same render
   (parallel passes of samples each) twice: the first on cold workers, the second warm.
   Prints request → image for both, the producing time of each task (the first task of
   each worker pays importing bpy and opening the file), and the estimated task seconds
   (from the file, then corrected by the first execution) against the measured ones.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

DIRECT = r"""
import json, sys, time
t0 = time.perf_counter()
import bpy
t1 = time.perf_counter()
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
t2 = time.perf_counter()
sc = bpy.context.scene
c = sc.cycles
c.device, c.samples, c.seed = "CPU", int(sys.argv[2]), 1
c.use_adaptive_sampling = c.use_denoising = False
sc.render.threads_mode, sc.render.threads = "FIXED", int(sys.argv[3])
sc.render.image_settings.file_format = "OPEN_EXR"
sc.render.filepath = sys.argv[4]
t3 = time.perf_counter()
bpy.ops.render.render(write_still=True)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "render": t4 - t3}))
"""


def direct(blend: pathlib.Path, samples: int, threads: int, out: pathlib.Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", DIRECT, str(blend), str(samples),
                           str(threads), str(out)], capture_output=True, text=True, check=True)
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["process"] = time.perf_counter() - t
    return figures


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--tile", type=int, default=160)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()

    from francine import producers
    from francine.adapters.cloud import firestore_store
    from francine.domain import planning
    from francine.producers.blender import cost, examples
    from francine.tools.client import Client
    from francine.tools.local.processes import environment
    from francine.tools.local.stack import Stack, StackOptions

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        examples.checker_png(root / "textures" / "checker.png")
        subprocess.run([sys.executable, "-m", "francine.producers.blender.examples",
                        str(root / "demo.blend"), "--width", str(a.width), "--height",
                        str(a.height), "--texture", "textures/checker.png"], check=True,
                       capture_output=True)
        total = a.samples * a.parallel
        d = direct(root / "demo.blend", total, cores, root / "direct.exr")
        print(f"direct bpy, {a.width}x{a.height}, {total} samples, {cores} threads: render "
              f"{d['render']:.2f} s (import {d['import']:.2f} s, open {d['open']:.2f} s, "
              f"process {d['process']:.2f} s)")

        with Stack(StackOptions(workers=a.workers, state_dir=root / "stack")) as stack:
            client = Client(stack.info["api_url"], stack.info["api_key"])
            sid = client.create_session("blender", {"blend": "demo.blend",
                                                    "samples": a.samples}, fmt="png")["id"]
            client.put_resource(sid, "demo.blend", (root / "demo.blend").read_bytes())
            client.put_resource(sid, "textures/checker.png",
                                (root / "textures" / "checker.png").read_bytes())
            resources = client.request("GET", f"/v1/sessions/{sid}/resources").json()
            with environment(stack.info["env"]):
                store = firestore_store(stack.info["project"])
                records = store.list_resources(sid)
                blender = producers.get("blender")
                history: list = []
                efficiency: dict[str, float] = {}
                for label in ("cold workers", "warm workers"):
                    scene = store.get_session(sid).scene
                    scene = blender.validate(scene, {
                        r["name"]: _info(r) for r in records})
                    estimate_px = blender.estimate_pixel_seconds(scene, records, history)
                    t, busy0 = time.perf_counter(), machine_busy_s()
                    eid = client.execute(sid, parallel=a.parallel, tile=a.tile)["id"]
                    status = client.wait(sid, eid, timeout_s=900, poll_s=0.1)
                    wall, busy = time.perf_counter() - t, machine_busy_s() - busy0
                    assert status["status"] == "done", status
                    shape = planning.Shape.from_dict(store.execution(sid, eid).shape)
                    tasks = [store.get_task(sid, eid, planning.task_id(eid, f"p{i}"))
                             for i in range(shape.productions)]
                    work = sorted(t.work_s for t in tasks)
                    cpu = [t.cpu_s for t in tasks]
                    tile_px = min(shape.tile, shape.width) * min(shape.tile, shape.height)
                    estimated = estimate_px * tile_px
                    print(f"pipeline, {label}: request → image {status['time']['total']:.2f} s "
                          f"(client wall {wall:.2f} s), {shape.productions} tasks of "
                          f"{min(shape.tile, shape.width)}x{min(shape.tile, shape.height)} px"
                          f" × {a.samples} samples on {a.workers} workers; efficiency "
                          f"{d['render'] / status['time']['total']:.2f} of the direct render")
                    tm = status["time"]
                    print(f"  first task after {tm['first_task_after']:.2f} s, image after the "
                          f"last task {tm['image_after_last_task']:.2f} s; producing "
                          f"{tm['producing']:.2f} s, reducing {tm['reducing']:.2f} s, "
                          f"fetching {tm['fetching']:.2f} s, CPU {tm['cpu']:.2f} s in all; "
                          f"the machine was busy {busy:.2f} CPU-s of {wall * cores:.2f}")
                    efficiency[label] = d["render"] / tm["total"]
                    print(f"  task producing: slowest {work[-1]:.2f} s, median "
                          f"{statistics.median(work):.2f} s, fastest {work[0]:.2f} s")
                    print(f"  estimate per task {estimated:.2f} vCPU-s, measured CPU per task "
                          f"median {statistics.median(cpu):.2f} s (ratio "
                          f"{estimated / statistics.median(cpu):.2f}; "
                          f"{'from the file' if not history else 'corrected by history'})")
                    history = [store.execution(sid, eid)]
                print(f"efficiency (direct render / pipeline): cold "
                      f"{efficiency['cold workers']:.2f}, warm {efficiency['warm workers']:.2f}"
                      f"; load average {os.getloadavg()[0]:.2f} at the end")
                print(f"francine render → first preview: {first_preview(stack, root, a):.2f} s "
                      "(checks, tracing, uploads, the first task, the preview)")
                print(f"sample seconds per pixel (file estimate): "
                      f"{cost.sample_seconds(records[0].get('meta', {}).get('blend')):.2e}; "
                      f"resources {[r['name'] for r in resources['resources']]}")
    return 0


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (every process: the renders, the
    stack's emulators and services, anything else), from /proc/stat."""
    fields = [int(v) for v in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def first_preview(stack, root: pathlib.Path, a) -> float:
    """Seconds from starting ``francine render demo.blend`` (a new session) until the
    api first answers a preview of its execution."""
    import requests

    from francine.tools.client import Client

    client = Client(stack.info["api_url"], stack.info["api_key"])
    before = {s["id"] for s in client.request("GET", "/v1/sessions").json()["sessions"]}
    t0 = time.perf_counter()
    cli = subprocess.Popen(
        [sys.executable, "-m", "francine.tools.cli", "render", str(root / "demo.blend"), "-o",
         str(root / "cli.png"), "--parallel", str(a.parallel), "--samples", str(a.samples),
         "--tile", str(a.tile), "--api", stack.info["api_url"], "--key",
         stack.info["api_key"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while cli.poll() is None or time.perf_counter() - t0 < 120:
            for s in client.request("GET", "/v1/sessions").json()["sessions"]:
                if s["id"] in before:
                    continue
                for e in client.request(
                        "GET", f"/v1/sessions/{s['id']}/executions").json()["executions"]:
                    r = requests.get(f"{client.api_url}/v1/sessions/{s['id']}/executions/"
                                     f"{e['id']}/preview", headers=client.session.headers,
                                     timeout=30)
                    if r.status_code == 200:
                        return time.perf_counter() - t0
            time.sleep(0.02)
        raise RuntimeError("no preview")
    finally:
        cli.wait(timeout=300)


def _info(record: dict):
    from francine.domain.producer import ResourceInfo

    return ResourceInfo(record["name"], record["sha256"], record["size"], record.get("meta"))


if __name__ == "__main__":
    sys.exit(main())
