"""Noise targets and extensions, measured: prints, for an easy and a hard scene, the
passes a noise target used and the error of the image against a high-sample reference;
then what extending a render saved against rendering it again.

    .venv/bin/python bench/waves.py [--target 0.02] [--size 64]

It runs the real api start, render worker, reducer and watchdog over the in-memory twins
on this machine, with the ao producer (its ``nao_samples``² rays a pixel and pass: 64 for
the easy scene, 4 for the hard one). The error is the relative RMS error of the
luminance over the pixels not near-black, against a render of 65,536 rays a pixel.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "shared"))

from francine import producers  # noqa: E402
from francine.base.config import Settings  # noqa: E402
from francine.domain import imaging, planning  # noqa: E402
from francine.domain.producer import Tile  # noqa: E402
from francine.domain.records import Session  # noqa: E402
from francine.handlers.reducer import Reducer  # noqa: E402
from francine.handlers.worker import Worker  # noqa: E402
from francine.services import executions, views, waves  # noqa: E402
from francine.twins import pump, twin_adapters  # noqa: E402


def adapters(scene: dict):
    ad = twin_adapters(dataclasses.replace(Settings(), min_task_s=0.0,
                                           max_render_instances=2))
    ad.store.create_session(Session("s", "u", "ao", "exr", scene))
    return ad


def render(ad, body: dict):
    t0, c0 = time.perf_counter(), time.process_time()
    ex = executions.start(ad, "u", "s", body)[0]
    pump(ad, Worker(ad), Reducer(ad))
    ex = ad.store.execution("s", ex.id)
    return ex, time.perf_counter() - t0, time.process_time() - c0


def image_of(ad, ex) -> np.ndarray:
    return waves.load_sum(ad, ex, ex.waves or 0).mean()


def reference(scene: dict, size: int) -> np.ndarray:
    ao = producers.get("ao")
    fine = ao.validate({**scene, "nao_samples": 16})
    return np.mean([ao.render(fine, Tile(0, 0, size, size), planning.seed_for("ref", p), None)
                    for p in range(256)], axis=0)


def relative_rms(image: np.ndarray, ref: np.ndarray) -> float:
    lum, want = imaging.luminance(image)[:, :, 0], imaging.luminance(ref)[:, :, 0]
    lit = want > waves.NEAR_BLACK * want.mean()
    return float(np.sqrt(np.mean(((lum[lit] - want[lit]) / want[lit]) ** 2)))


def noise_targets(target: float, size: int) -> None:
    print(f"## A noise target of {target} ({size}×{size}, tiles of {size // 2})\n")
    print("| scene | rays/pixel/pass | passes (tiles: fewest–most) | waves | stopped "
          "| noise estimate | error vs reference | error / target | CPU s | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, samples in (("easy", 8), ("hard", 2)):
        scene = {"width": size, "height": size, "nao_samples": samples}
        ad = adapters(scene)
        ex, wall, cpu = render(ad, {"tile": size // 2, "seed": 1,
                                    "until": {"noise": target, "max_passes": 4096}})
        status = views.view(ad, ex)
        counts = waves.load_sum(ad, ex, ex.waves).count
        error = relative_rms(image_of(ad, ex), reference(scene, size))
        print(f"| {name} | {samples * samples} | {int(counts.min())}–{int(counts.max())} "
              f"| {status['waves']} | {status['stopped']} | {status['noise']:.4f} "
              f"| {error:.4f} | {error / target:.2f} | {cpu:.1f} | {wall:.1f} |")
    print()


def extension(size: int, passes: int) -> None:
    print(f"## Extending {passes} passes by {passes} against rendering {2 * passes} again "
          f"({size}×{size}, 4 rays a pixel and pass)\n")
    scene = {"width": size, "height": size, "nao_samples": 2}
    ad = adapters(scene)
    first, _, _ = render(ad, {"tile": size // 2, "seed": 2, "parallel": passes})
    t0, c0 = time.perf_counter(), time.process_time()
    ex = waves.extend(ad, first, {"passes": passes})
    pump(ad, Worker(ad), Reducer(ad))
    ex = ad.store.execution("s", ex.id)
    ext_wall, ext_cpu = time.perf_counter() - t0, time.process_time() - c0
    other = adapters(scene)
    again, wall, cpu = render(other, {"tile": size // 2, "seed": 2, "parallel": 2 * passes})
    same = ad.blobs.get_result(ex.result) == other.blobs.get_result(again.result)
    tasks = views.view(ad, ex)["tasks"]["total"] - views.view(ad, first)["tasks"]["total"]
    print("| | tasks | CPU s | wall s |")
    print("| --- | --- | --- | --- |")
    print(f"| the extension (+{passes}) | {tasks} | {ext_cpu:.2f} | {ext_wall:.2f} |")
    print(f"| rendering {2 * passes} again | {views.view(other, again)['tasks']['total']} "
          f"| {cpu:.2f} | {wall:.2f} |")
    print(f"\nextension / again: CPU {ext_cpu / cpu:.2f}, wall {ext_wall / wall:.2f}; "
          f"the same bytes: {same}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.02)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--passes", type=int, default=64)
    args = parser.parse_args()
    producers.get("ao").render(producers.get("ao").validate(
        {"width": 8, "height": 8, "nao_samples": 1}), Tile(0, 0, 8, 8), 1, None)  # compile
    noise_targets(args.target, args.size)
    extension(args.size, args.passes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
