"""The ``pathtracer`` producer: physically based rendering of spheres and OBJ meshes.

Importing this package imports no numba: the api imports it to validate scenes, to
describe them in the OpenAPI document and to inspect uploaded OBJ files. The kernels
(``kernel``, ``bvh``, ``rng``) are imported inside ``render``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from francine.domain.producer import ResourceInfo, Resources, SceneError, Tile
from francine.producers.pathtracer import cost
from francine.producers.pathtracer import scene as _scene

EXAMPLES = pathlib.Path(__file__).parent / "examples"


class PathTracer:
    name = "pathtracer"
    display = "srgb"
    exact_tiles = True
    channels = 3

    def default_scene(self) -> dict[str, Any]:
        return _scene.default_scene()

    def json_schema(self) -> dict[str, Any]:
        return _scene.json_schema()

    def validate(
        self, scene: dict[str, Any], resources: Mapping[str, ResourceInfo] | None
    ) -> dict[str, Any]:
        return _scene.validate(scene, resources)

    def image_size(self, scene: dict[str, Any]) -> tuple[int, int]:
        return scene["width"], scene["height"]

    def pixel_seconds(self, scene: dict[str, Any]) -> float:
        """The estimate without the resources' records (a mesh counts as large)."""
        return cost.pixel_seconds(scene)

    def scene_pixel_seconds(self, scene: dict[str, Any], resources) -> float:
        """Samples × expected path length × the cost of a segment: spheres, mesh
        triangles (log: the BVH), lights (``cost``; calibrated by bench/estimates.py)."""
        return cost.pixel_seconds(scene, resources)

    def inspect_resource(self, name: str, path: pathlib.Path) -> dict[str, Any]:
        """Check an uploaded ``.obj`` resource: its vertex and triangle counts, or a
        ``SceneError`` on ``name`` that names the malformed line."""
        from francine.producers.pathtracer.obj import inspect_obj

        return inspect_obj(name, pathlib.Path(path))

    def render(
        self, scene: dict[str, Any], tile: Tile, seed: int, resources: Resources
    ) -> np.ndarray:
        from francine.producers.pathtracer.render import render_tile

        return render_tile(_scene.validate(scene, resources.infos), tile, seed, resources)

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) every kernel, e.g. at image build time."""
        from francine.producers.pathtracer.render import warm_up

        warm_up()


PRODUCER = PathTracer()

__all__ = ["PRODUCER", "PathTracer", "SceneError"]
