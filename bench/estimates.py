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
anything is timed. The last line is ``estimate/measured: min A, max B; corrected: min C,
max D``. """

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from francine import producers
from francine.domain import planning
from francine.domain.producer import ResourceInfo, Resources  # noqa: E402
from francine.domain.records import Execution, Status  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller images")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']}")
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
    print(f"estimate/measured: min {min(ratios):.2f}, max {max(ratios):.2f}; "
          f"corrected: min {min(corrected_ratios):.2f}, max {max(corrected_ratios):.2f}")


if __name__ == "__main__":
    main()
