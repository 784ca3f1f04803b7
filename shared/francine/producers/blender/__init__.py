"""The ``blender`` producer: Blender files rendered with Cycles on the CPU (PyPI ``bpy``).

Importing this package imports no Blender: the api imports it to validate scenes (from
what ``blendfile`` read out of the uploaded ``.blend`` without Blender) and to estimate
costs. ``render`` imports ``bpy`` in the workers.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from francine.domain.producer import Resources, SceneError, Tile
from francine.domain.records import Execution
from francine.producers.blender import blendfile, cost, deps
from francine.producers.blender import scene as _scene


class Blender:
    name = "blender"
    display = "srgb"
    #: Cycles renders a border to within ~1e-5 of the full frame, not bit for bit, and
    #: every render pays the scene's sync: a speculative copy stays whole.
    exact_tiles = False
    #: RGBA; a denoised render's partials also carry albedo and normal (10 channels).
    channels = 4
    #: Seconds a task costs whatever it renders, beside the platform's own round trips:
    #: the request to the Blender process, the frame and camera set, the files checked,
    #: the tile's EXR written and read back (bench/blender_pipeline.py: 16 tasks of one
    #: pass against 4 tasks of four, 0.05–0.1 s a task). The planner folds passes so
    #: that it stays a small share of a task (``planning.passes_per_task``).
    task_overhead_s = 0.1
    #: A frame range renders the scene at each frame (``francine.services.animation``).
    animates = True

    def default_scene(self) -> dict[str, Any]:
        return {"blend": "scene.blend"}

    #: The scene's JSON schema, and its check against the .blend's record (scene.py).
    json_schema = staticmethod(_scene.json_schema)
    validate = staticmethod(_scene.validate)
    #: The scene's frames per second (the preview video's rate).
    frame_rate = staticmethod(_scene.frame_rate)

    def image_size(self, scene: dict[str, Any]) -> tuple[int, int]:
        if "width" not in scene or "height" not in scene:
            raise SceneError("blend", "the image size comes from the .blend file, which "
                                      "must be attached before rendering")
        return scene["width"], scene["height"]

    def pixel_seconds(self, scene: dict[str, Any]) -> float:
        return cost.pixel_seconds(scene, None)

    def estimate_pixel_seconds(self, scene: dict[str, Any], resources: list[dict],
                               history: list[Execution]) -> float:
        """The estimate from the file's complexity, corrected by what finished
        executions of the same session measured (see ``cost``)."""
        meta = next((r.get("meta", {}).get(_scene.META_KEY) for r in resources
                     if r["name"] == scene.get("blend")), None)
        return cost.corrected(scene, meta, history)

    def inspect_resource(self, name: str, path: pathlib.Path) -> dict[str, Any]:
        """A ``.blend`` resource is read (without Blender) into its record; other files
        (textures, caches) are taken as they are."""
        with open(path, "rb") as f:
            head = f.read(7)
        if not name.lower().endswith(".blend") and head != b"BLENDER":
            return {}
        try:
            info = blendfile.inspect(path)
        except blendfile.BlendError as e:
            raise SceneError("", str(e)) from e
        try:
            external = deps.of_file(path)
        except Exception as e:  # noqa: BLE001 (a file our reader took and BAT cannot)
            raise SceneError("", f"cannot trace the files it reads: {e}") from e
        return _scene.meta_of(info, external)

    def partial_channels(self, scene: dict[str, Any]) -> int:
        """RGBA (4), plus the denoising albedo (3) and normal (3) when denoised."""
        return self.channels + 6 if scene.get("denoise") else self.channels

    def render(
        self, scene: dict[str, Any], tile: Tile, seed: int, resources: Resources
    ) -> np.ndarray:
        """One pass, rendered by the Blender process that has the file open (never in
        this process: a file that crashes Blender must not take the worker along)."""
        return self.render_passes(scene, tile, [seed], resources)[0]

    def render_passes(
        self, scene: dict[str, Any], tile: Tile, seeds: list[int], resources: Resources
    ) -> list[np.ndarray]:
        """The passes of a folded task, one per seed, in one request to the Blender
        process: the frame, camera and file check are set once for all of them."""
        from francine.producers.blender import isolation

        return isolation.render_passes(scene, tile, seeds, resources)

    def cpu_seconds(self) -> float:
        """CPU seconds this worker's Blender processes have used so far: the renders'
        CPU, which the worker's own ``time.process_time()`` does not count."""
        from francine.producers.blender import isolation

        return isolation.cpu_seconds()

    def finish(self, scene: dict[str, Any], image: np.ndarray) -> np.ndarray:
        """The final image from the mean of all passes: denoised with Open Image Denoise
        when the scene asks for it (partials never are), then RGBA."""
        if scene.get("denoise") and image.shape[2] >= 10:
            from francine.producers.blender.denoise import denoise

            return denoise(image[:, :, :4], image[:, :, 4:7], image[:, :, 7:10])
        return image[:, :, :4]


PRODUCER = Blender()

__all__ = ["PRODUCER", "Blender", "SceneError"]
