"""The ``ao`` producer: the classic ambient-occlusion benchmark scene (aobench).

Importing this package loads no numba: the api imports it to validate scenes. The
kernel (``kernel.py``) is imported on the first ``render``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from francine.domain.producer import ResourceInfo, Resources, SceneError, Tile
from francine.producers.ao import cost
from francine.producers.ao import scene as _scene

MASK64 = (1 << 64) - 1


class AoProducer:
    name = "ao"
    display = "linear"
    exact_tiles = True
    channels = 1

    def default_scene(self) -> dict[str, Any]:
        return _scene.default_scene()

    def json_schema(self) -> dict[str, Any]:
        return _scene.json_schema()

    def validate(
        self, scene: dict[str, Any], resources: Mapping[str, ResourceInfo] | None = None
    ) -> dict[str, Any]:
        # The ao scene references no resources.
        return _scene.validate(scene)

    def image_size(self, scene: dict[str, Any]) -> tuple[int, int]:
        return _scene.image_size(scene)

    def pixel_seconds(self, scene: dict[str, Any]) -> float:
        """Rays per pixel times the cost of a ray, which grows with the number of
        spheres (``cost``; calibrated by bench/estimates.py)."""
        return cost.pixel_seconds(scene)

    def render(
        self, scene: dict[str, Any], tile: Tile, seed: int, resources: Resources | None = None
    ) -> np.ndarray:
        from francine.producers.ao import kernel  # numba: only where pixels are made

        scene = _scene.validate(scene)
        width, height = _scene.image_size(scene)
        if (
            tile.width < 1
            or tile.height < 1
            or tile.x0 < 0
            or tile.y0 < 0
            or tile.x0 + tile.width > width
            or tile.y0 + tile.height > height
        ):
            raise SceneError("tile", f"{tile} is not inside the {width}×{height} image")
        spheres, plane = _scene.scene_arrays(scene)
        out = np.empty((tile.height, tile.width), np.float32)
        kernel.render_tile(
            out,
            int(tile.x0),
            int(tile.y0),
            int(width),
            int(height),
            int(scene["nsubsamples"]),
            int(scene["nao_samples"]),
            spheres,
            plane,
            np.uint64(int(seed) & MASK64),
        )
        return out.reshape(tile.height, tile.width, 1)


PRODUCER = AoProducer()

__all__ = ["PRODUCER", "AoProducer"]
