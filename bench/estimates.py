"""The producers' cost estimates against the CPU time their tasks really take.

    .venv/bin/python bench/estimates.py [--quick]

For each bundled scene (the ``ao`` default; the path tracer's default Cornell box of
spheres, its Cornell box of meshes (``shapes.cornell_box``) and the bunny example with
``data/bunny.obj`` in the folder beside the checkout) at two sizes, plus ``ao`` with
more spheres and the Cornell box with a shallower depth (what the models count), it
plans the execution as the api does (the estimate picks the tile), renders every task of
the first pass on one thread and prints, per task, the estimate from the scene alone,
the measured CPU seconds and their ratio (estimate / measured; above 1 is on the safe
side of Pub/Sub's deadline). Then the correction by measured times: the larger size is
estimated again with the smaller one's measurement as the session's finished execution
(``estimates.corrected``), and that ratio is printed too. Numba runs on one thread
(``NUMBA_NUM_THREADS=1``: a render instance has one vCPU); kernels are compiled before
anything is timed.

Then the price (``dry_run``, ``francine.services.quotes``) against the render: for each
scene (the same ones at their smaller size, and the blender demo scenes that
``francine.producers.blender.examples`` makes, as ``emulators/blender_demo.sh`` and
``bench/blender_pipeline.py`` render them), the quote's CPU-seconds against the
``time.cpu`` of the execution it priced, run by the real api start, render worker and
reducer over the in-memory twins in this process (one instance: Blender renders in
its own processes, on one thread). Each scene is priced three times: from the model
(blender: the file's), after a scout (blender only: the first price of a file runs one),
and from the measured times once the first execution finished (against a second
execution). The last line is ``estimate/measured: min A, max B; corrected: min C, max
D; quotes: ...``, the quotes' ratios by basis.

With ``--section stack`` (apart from the rest), the price against the local stack: a
dry run, then the render, twice each, for the ao demo, a larger ao render and the
blender demo; the quote's CPU-seconds against ``time.cpu``, its warm wall time against
``time.total`` (the stack's emulators are not Google's services: wall times are this
machine's).

    .venv/bin/python bench/estimates.py [--quick] [--section tasks|quotes|stack|all] """

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from francine import producers  # noqa: E402
from francine.domain import planning  # noqa: E402
from francine.domain.producer import ResourceInfo, Resources  # noqa: E402
from francine.domain.records import Execution, Session, Status  # noqa: E402
from francine.producers.pathtracer import shapes  # noqa: E402
from francine.services import estimates  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUNNY_OBJ = ROOT.parent / "shared" / "data" / "bunny.obj"
BUNNY_SCENE = ROOT / "shared" / "francine" / "producers" / "pathtracer" / "examples" / "bunny.json"
#: The planner's budget for one pass of a tile (the api's: a quarter of 120 s).
BUDGET_S = 30.0


def sized(scene: dict, width: int, height: int, **more) -> dict:
    return {**scene, "width": width, "height": height, **more}


def cases(quick: bool, tmp: pathlib.Path):
    """(label, producer, scene, {name: path}) for every scene and size."""
    ao = producers.get("ao").default_scene()
    many = [{"center": [-2.0 + 0.3 * (i % 16), -0.3 + 0.25 * (i // 16), -4.0 - 0.1 * i],
             "radius": 0.12} for i in range(32)]
    cornell = producers.get("pathtracer").default_scene()
    boxed, files = shapes.cornell_box()
    paths = {}
    for name, data in files.items():
        paths[name] = tmp / name
        paths[name].write_bytes(data)
    sizes = ((128, 128), (256, 256)) if quick else ((256, 256), (512, 512))
    small = ((48, 48), (96, 96)) if quick else ((96, 96), (192, 192))
    for w, h in sizes:
        yield f"ao default {w}²", "ao", sized(ao, w, h), {}
    for w, h in sizes:
        yield f"ao 32 spheres {w}²", "ao", sized(ao, w, h, spheres=ao["spheres"] + many), {}
    for w, h in small:
        yield f"pt cornell spheres {w}²", "pathtracer", sized(cornell, w, h), {}
    for w, h in small:
        yield (f"pt cornell depth 3 {w}²", "pathtracer", sized(cornell, w, h, max_depth=3),
               {})
    for w, h in small:
        yield f"pt cornell meshes {w}²", "pathtracer", sized(boxed, w, h), paths
    if BUNNY_OBJ.exists():
        bunny = json.loads(BUNNY_SCENE.read_text())
        for w, h in ((80, 60), (160, 120)) if quick else ((160, 120), (320, 240)):
            yield f"pt bunny {w}×{h}", "pathtracer", sized(bunny, w, h), {
                "bunny.obj": BUNNY_OBJ}


def records_of(producer, paths: dict) -> tuple[list[dict], dict]:
    """The session's resource records (as the api stores them) and the infos."""
    infos, records = {}, []
    for name, path in paths.items():
        meta = producer.inspect_resource(name, path)
        size = path.stat().st_size
        infos[name] = ResourceInfo(name, name.ljust(64, "0")[:64], size, meta)
        records.append({"name": name, "sha256": infos[name].sha256, "size": size,
                        "meta": meta})
    return records, infos


def measure(producer, scene: dict, paths: dict, records: list[dict], infos: dict):
    """(estimated s/pixel, shape, measured CPU s per task over the first pass)."""
    scene = producer.validate(scene, infos)
    per_pixel = estimates.scene_seconds(producer, scene, records)
    w, h = producer.image_size(scene)
    shape = planning.make_shape(w, h, 1, planning.largest_tile(w, h, per_pixel, BUDGET_S))
    resources = Resources(infos, lambda info: paths[info.name])
    cpu = []
    for index in range(shape.tiles):  # one pass: production index = tile index
        tile = planning.tile_of(shape, index)
        start = time.process_time()
        producer.render(scene, tile, 1, resources)
        cpu.append(time.process_time() - start)
    return scene, per_pixel, shape, cpu


def tasks_section(args) -> tuple[list[float], list[float]]:
    header = (f"{'scene':<28} {'tasks':>5} {'estimate s':>10} {'measured s':>10} "
              f"{'est/meas':>8} {'corrected':>9}")
    print(header)
    print("-" * len(header))
    ratios, corrected_ratios, history = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        warmed = set()
        for label, name, scene, paths in cases(args.quick, pathlib.Path(tmp)):
            producer = producers.get(name)
            records, infos = records_of(producer, paths)
            if (name, label.rsplit(" ", 1)[0]) not in warmed:  # compile (or load) kernels
                tiny = sized(scene, 8, 8)
                measure(producer, tiny, paths, records, infos)
                warmed.add((name, label.rsplit(" ", 1)[0]))
            valid, per_pixel, shape, cpu = measure(producer, scene, paths, records, infos)
            task_estimate = per_pixel * shape.width * shape.height / shape.tiles
            task_measured = sum(cpu) / len(cpu)
            ratio = task_estimate / task_measured
            ratios.append(ratio)
            # The correction: the same scene measured at the smaller size before.
            key = label.rsplit(" ", 1)[0]
            corrected = ""
            if key in history:
                fixed = estimates.corrected(producer, valid, records, [history[key]])
                c_ratio = fixed * shape.width * shape.height / shape.tiles / task_measured
                corrected_ratios.append(c_ratio)
                corrected = f"{c_ratio:9.2f}"
            else:
                history[key] = Execution(
                    id="measured", session_id="bench", user="bench",
                    created=dt.datetime.now(dt.UTC), producer=name, format="png",
                    display="", channels=producer.channels, scene=valid,
                    shape={"width": shape.width, "height": shape.height, "passes": 1},
                    parallel=1, status=Status.DONE,
                    summary={"time": {"producing": sum(cpu)}})
            print(f"{label:<28} {shape.tiles:>5} {task_estimate:>10.3f} "
                  f"{task_measured:>10.3f} {ratio:>8.2f} {corrected:>9}")
    return ratios, corrected_ratios


# --- the price of a render against the render ------------------------------------------

def blender_cases(quick: bool, tmp: pathlib.Path):
    """(label, scene, {name: path}, request) of the blender demo scenes."""
    import importlib.util

    if importlib.util.find_spec("bpy") is None:
        print("(no bpy: the blender scenes are left out)")
        return
    from francine.producers.blender import examples

    examples.checker_png(tmp / "textures" / "checker.png")
    texture = {"textures/checker.png": tmp / "textures" / "checker.png"}
    made = {}

    def blend(name: str, width: int, height: int, **more) -> pathlib.Path:
        if name not in made:
            made[name] = tmp / name
            examples.build(made[name], width, height, texture="textures/checker.png", **more)
        return made[name]

    small = quick
    demo = blend("demo.blend", 160 if small else 320, 120 if small else 240)
    files = {"demo.blend": demo, **texture}
    # bench/blender_pipeline.py's render: 4 passes of 8 samples, tiles of 160
    yield ("blender demo 8 spp ×4", {"blend": "demo.blend", "samples": 8}, files,
           {"parallel": 4, "tile": 160})
    # emulators/blender_demo.sh's: 8 passes of 8 samples, denoised
    yield ("blender demo denoised ×8", {"blend": "demo.blend", "samples": 8, "denoise": True},
           files, {"parallel": 8, "tile": 160})
    yield ("blender demo 64 spp ×2", {"blend": "demo.blend", "samples": 64}, files,
           {"parallel": 2})
    side = blend("side.blend", 160 if small else 320, 120 if small else 240,
                 second_camera=True)
    yield ("blender side camera 32 spp", {"blend": "side.blend", "samples": 32,
                                          "camera": "Side"},
           {"side.blend": side, **texture}, {"parallel": 2})
    anim = blend("anim.blend", 96 if small else 160, 72 if small else 120, frames=4)
    yield ("blender 4 frames 16 spp", {"blend": "anim.blend", "samples": 16},
           {"anim.blend": anim, **texture}, {"parallel": 2, "frames": "1-4"})


def quote_cases(quick: bool, tmp: pathlib.Path):
    """(label, producer, scene, {name: path}, request) for every scene priced."""
    for label, name, scene, paths in cases(quick, tmp):
        if label.endswith(("256²", "96²", "160×120")) if not quick else \
                label.endswith(("128²", "48²", "80×60")):
            yield label, name, scene, paths, {"parallel": 2}
    for label, scene, paths, request in blender_cases(quick, tmp):
        yield label, "blender", scene, paths, request


def session_of(ad, sid: str, producer, scene: dict, paths: dict) -> None:
    """A session in the twins with its files attached, as the api attaches them."""
    ad.store.create_session(Session(sid, "bench", producer.name, "png", scene))
    for name, path in paths.items():
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        ad.blobs.put_resource(sha, path)
        ad.store.attach_resource(sid, {"name": name, "sha256": sha,
                                       "size": path.stat().st_size,
                                       "meta": producer.inspect_resource(name, path)})


def run_once(ad, sid: str, request: dict) -> float:
    """Render ``request`` through the api's start, the worker and the reducer (twins);
    its ``time.cpu``."""
    from francine.handlers.reducer import Reducer
    from francine.handlers.worker import Worker
    from francine.services import executions
    from francine.twins import pump

    ex, _ = executions.start(ad, "bench", sid, request)
    pump(ad, Worker(ad), Reducer(ad))
    ex = ad.store.execution(sid, ex.id)
    assert ex.status == Status.DONE, ex.error
    if ex.frames:  # an animation: its frames' executions hold the times
        return sum(f.summary["time"]["cpu"] for f in ad.store.frames_of(sid, ex.id))
    return ex.summary["time"]["cpu"]


def quotes_section(args) -> dict[str, list[float]]:
    import dataclasses

    from francine.base.config import Settings
    from francine.services import quotes
    from francine.twins import twin_adapters

    header = (f"{'scene':<28} {'basis':<16} {'tasks':>5} {'quote CPU s':>11} "
              f"{'run CPU s':>9} {'est/meas':>8} {'wall warm':>9} {'cold':>6} "
              f"{'USD warm':>9}")
    print(header)
    print("-" * len(header))
    found: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, (label, name, scene, paths, request) in enumerate(
                quote_cases(args.quick, pathlib.Path(tmp))):
            producer = producers.get(name)
            # One instance, as this process is; a fresh scout each time.
            ad = twin_adapters(dataclasses.replace(Settings(), max_render_instances=1))
            sid = f"{n:020x}"
            session_of(ad, sid, producer, scene, paths)
            if name != "blender":  # compile (or load) the kernels first
                run_once(ad, sid, {"update": {"width": 8, "height": 8}})
                ad = twin_adapters(dataclasses.replace(Settings(), max_render_instances=1))
                session_of(ad, sid, producer, scene, paths)
            priced = [("model", quotes.quote(ad, "bench", sid, {**request, "dry_run": True},
                                             scout=False))]
            if name == "blender":
                q = quotes.quote(ad, "bench", sid, {**request, "dry_run": True})
                priced.append(("scout" if q["scout"].get("ran") else "no scout", q))
            first = run_once(ad, sid, request)
            measured = [first] * len(priced)
            if name == "blender":  # the scout would be the basis still: the history's turn
                for o in list(ad.blobs.list_objects("results", f"results/{sid}/scout-")):
                    ad.blobs.delete_object("results", o.name)
            q = quotes.quote(ad, "bench", sid, {**request, "dry_run": True})
            priced.append(("measured", q))
            measured.append(run_once(ad, sid, request))
            for (basis, q), cpu in zip(priced, measured, strict=True):
                ratio = q["cpu_seconds"] / cpu
                found.setdefault(basis, []).append(ratio)
                print(f"{label:<28} {basis:<16} {q['tasks']['total']:>5} "
                      f"{q['cpu_seconds']:>11.3f} {cpu:>9.3f} {ratio:>8.2f} "
                      f"{q['wall_seconds']['warm']:>9.2f} {q['wall_seconds']['cold']:>6.1f} "
                      f"{q['cost_usd']['warm']:>9.2g}")
    return found


def stack_section(args) -> dict[str, list[float]]:
    """The price against the local stack (``francine stack up``: the emulators, the
    api, 2 workers and the reducer as processes): the quote's CPU-seconds against
    ``time.cpu``, its warm wall time against ``time.total``. The stack's round trips
    go to emulators on this machine, not to Google's services: its wall times are the
    machine's, not the cloud's."""
    from francine.producers.blender import examples
    from francine.tools.client import Client
    from francine.tools.local.stack import Stack, StackOptions

    header = (f"{'scene':<28} {'basis':<9} {'tasks':>5} {'quote CPU':>9} {'time.cpu':>8} "
              f"{'ratio':>5} {'quote wall':>10} {'time.total':>10} {'ratio':>5}")
    print(header)
    print("-" * len(header))
    found: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        examples.checker_png(root / "textures" / "checker.png")
        examples.build(root / "demo.blend", 320, 240, texture="textures/checker.png")
        with Stack(StackOptions(workers=2, state_dir=root / "stack")) as stack:
            client = Client(stack.info["api_url"], stack.info["api_key"])
            renders = [("ao demo 512² ×8", "ao", None, {"parallel": 8, "tile": 256}),
                       ("ao 1024² ×32", "ao", {"width": 1024, "height": 1024},
                        {"parallel": 32, "tile": 256}),
                       ("blender demo 8 spp ×4", "blender", {"blend": "demo.blend",
                                                            "samples": 8},
                        {"parallel": 4, "tile": 160})]
            for label, producer, scene, body in renders:
                sid = client.create_session(producer, scene)["id"]
                if producer == "blender":
                    client.put_resource(sid, "textures/checker.png",
                                        (root / "textures" / "checker.png").read_bytes())
                    client.put_resource(sid, "demo.blend", (root / "demo.blend").read_bytes())
                for _ in range(2):  # the second: warm workers, a measured basis
                    q = client.request("POST", f"/v1/sessions/{sid}/executions",
                                       json={**body, "dry_run": True}).json()
                    ex = client.execute(sid, **body)
                    done = client.wait(sid, ex["id"], timeout_s=900, poll_s=0.1)
                    assert done["status"] == "done", done
                    cpu, wall = done["time"]["cpu"], done["time"]["total"]
                    found.setdefault(q["basis"], []).append(q["cpu_seconds"] / cpu)
                    print(f"{label:<28} {q['basis']:<9} {q['tasks']['total']:>5} "
                          f"{q['cpu_seconds']:>9.2f} {cpu:>8.2f} {q['cpu_seconds'] / cpu:>5.2f} "
                          f"{q['wall_seconds']['warm']:>10.2f} {wall:>10.2f} "
                          f"{q['wall_seconds']['warm'] / wall:>5.2f}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller images")
    parser.add_argument("--section", choices=("tasks", "quotes", "stack", "all"),
                        default="all", help="all: tasks and quotes (stack: the local "
                        "stack, apart)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']}")
    parts = []
    if args.section in ("tasks", "all"):
        ratios, corrected_ratios = tasks_section(args)
        parts.append(f"estimate/measured: min {min(ratios):.2f}, max {max(ratios):.2f}; "
                     f"corrected: min {min(corrected_ratios):.2f}, "
                     f"max {max(corrected_ratios):.2f}")
    if args.section in ("quotes", "all"):
        print()
        found = quotes_section(args)
        parts.append("quotes: " + ", ".join(
            f"{basis} {min(r):.2f}–{max(r):.2f}" for basis, r in found.items()))
    if args.section == "stack":
        found = stack_section(args)
        parts.append("stack: " + ", ".join(
            f"{basis} {min(r):.2f}–{max(r):.2f}" for basis, r in found.items()))
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("; ".join(parts))


if __name__ == "__main__":
    main()
