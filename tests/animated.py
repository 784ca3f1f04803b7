"""A stand-in producer with frames for the animation tests over the twins: the ao
producer's image at a brightness that grows with the frame (frame / 10), so a frame's
image tells which frame it is. The real renderer's frames are tested with Blender
(tests/test_animation_blender.py)."""

from __future__ import annotations

from francine import producers
from francine.domain.producer import SceneError

FIRST, LAST = 1, 40


class Flipbook:
    name = "flipbook"
    animates = True
    exact_tiles = True

    def __init__(self):
        self.ao = producers.get("ao")
        self.display = self.ao.display
        self.channels = self.ao.channels

    def default_scene(self):
        return self.ao.default_scene()

    def json_schema(self):
        return self.ao.json_schema()

    def validate(self, scene, resources=None):
        frame = scene.get("frame", FIRST)
        if not FIRST <= frame <= LAST:
            raise SceneError("frame", f"frame {frame} is outside the range {FIRST}..{LAST}")
        out = self.ao.validate({k: v for k, v in scene.items() if k != "frame"}, resources)
        return {**out, "frame": frame}

    def image_size(self, scene):
        return self.ao.image_size({k: v for k, v in scene.items() if k != "frame"})

    def pixel_seconds(self, scene):
        return self.ao.pixel_seconds({k: v for k, v in scene.items() if k != "frame"})

    def frame_rate(self, scene, resources):
        return 12.0

    def render(self, scene, tile, seed, resources=None):
        still = {k: v for k, v in scene.items() if k != "frame"}
        return self.ao.render(still, tile, seed, resources) * (scene["frame"] / 10)


def register() -> Flipbook:
    producer = Flipbook()
    producers.register(producer)
    return producer
