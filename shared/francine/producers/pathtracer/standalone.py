"""Render a pathtracer scene on this machine, without the pipeline, to a PNG.

    python -m francine.producers.pathtracer.standalone SCENE.json \\
        --resource bunny.obj=bunny.obj --width 160 --passes 4 --out /tmp/x.png

The scene is validated as the api would, rendered in ``--passes`` sample passes (seeds
0, 1, ...) averaged like the reducer's weighted mean, and sRGB-encoded. Without a scene
argument, the producer's default scene is rendered.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import time

import numpy as np

from francine.domain.producer import ResourceInfo, Resources, Tile
from francine.producers.pathtracer import PRODUCER


def local_resources(files: dict[str, pathlib.Path]) -> Resources:
    infos = {}
    for name, path in files.items():
        data = pathlib.Path(path).read_bytes()
        infos[name] = ResourceInfo(name, hashlib.sha256(data).hexdigest(), len(data))
    return Resources(infos, lambda info: pathlib.Path(files[info.name]))


def render(
    scene: dict, files: dict[str, pathlib.Path] | None = None, passes: int = 1
) -> np.ndarray:
    """Mean of ``passes`` sample passes of the whole image: float32 (h, w, 3), linear."""
    resources = local_resources(files or {})
    for name, path in (files or {}).items():
        if name.endswith(".obj"):
            PRODUCER.inspect_resource(name, pathlib.Path(path))
    scene = PRODUCER.validate(scene, resources.infos)
    width, height = PRODUCER.image_size(scene)
    total = np.zeros((height, width, 3), dtype=np.float64)
    for seed in range(passes):
        total += PRODUCER.render(scene, Tile(0, 0, width, height), seed, resources)
    return (total / passes).astype(np.float32)


def srgb8(linear: np.ndarray) -> np.ndarray:
    x = np.clip(linear, 0.0, 1.0)
    x = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.round(x * 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scene", nargs="?", help="scene JSON file (default: default scene)")
    parser.add_argument("--resource", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--width", type=int, help="override the width (height follows)")
    parser.add_argument("--spp", type=int, help="override samples_per_pixel")
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--out", default="/tmp/pathtracer.png")
    args = parser.parse_args()

    scene = (
        json.loads(pathlib.Path(args.scene).read_text()) if args.scene else PRODUCER.default_scene()
    )
    if args.width:
        w, h = scene.get("width", 256), scene.get("height", 256)
        scene["width"], scene["height"] = args.width, max(1, round(args.width * h / w))
    if args.spp:
        scene["samples_per_pixel"] = args.spp
    files = dict(r.split("=", 1) for r in args.resource)
    t0 = time.perf_counter()
    image = render(scene, {k: pathlib.Path(v) for k, v in files.items()}, args.passes)
    elapsed = time.perf_counter() - t0
    from PIL import Image

    Image.fromarray(srgb8(image)).save(args.out)
    print(
        f"{args.out}: {image.shape[1]}×{image.shape[0]}, {elapsed:.2f} s, mean {image.mean():.4f}"
    )


if __name__ == "__main__":
    main()
