"""What every producer (renderer) offers the pipeline.

A producer turns a validated scene into pixels for one tile and one sample pass. It is
pure with respect to the cloud: resources reach it as local files through a
``Resources`` object, and its result is a float32 array that the pipeline stores and
reduces. Encoding and upload happen elsewhere.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A rectangle of the image in pixels; (x0, y0) is its top-left corner."""

    x0: int
    y0: int
    width: int
    height: int


class SceneError(ValueError):
    """A scene (or a patch of one) that a producer cannot render.

    ``field`` is a dotted path into the scene (``"spheres[1].radius"``) so that the
    API can tell the client exactly what is wrong.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ResourceInfo:
    """A resource attached to a session: its name, content hash and size."""

    name: str
    sha256: str
    size: int
    #: What the api read from the file when it was attached (producer-specific).
    meta: dict | None = field(default=None, compare=False, hash=False)


def resource_infos(records: Iterable[Mapping[str, Any]]) -> dict[str, ResourceInfo]:
    """A session's resources by name, from their records as the store lists them."""
    return {r["name"]: ResourceInfo(r["name"], r["sha256"], r["size"], r.get("meta"))
            for r in records}


@dataclass
class Resources:
    """Access to a session's resources as local files, for one render task.

    ``paths`` maps resource names to local files (already fetched). ``memo`` is a cache
    that lives as long as the worker instance: producers keep derived data there keyed
    by the resource's SHA-256 (parsed meshes, acceleration structures), so that a warm
    worker neither fetches nor rebuilds them again.
    """

    infos: Mapping[str, ResourceInfo]
    fetch: Any  # callable(ResourceInfo) -> pathlib.Path, fetched once per instance
    memo: dict = field(default_factory=dict)

    def path(self, name: str) -> pathlib.Path:
        try:
            info = self.infos[name]
        except KeyError:
            raise SceneError("", f"resource {name!r} is not attached to the session") from None
        return self.fetch(info)

    def sha256(self, name: str) -> str:
        return self.infos[name].sha256


class Producer(Protocol):
    """The interface between the pipeline and a renderer."""

    name: str
    #: How the final reduction maps linear values to 8-bit images: "linear" (clamp,
    #: as the classic aobench does) or "srgb" (the sRGB transfer curve).
    display: str
    #: Number of channels in a partial image (1 for gray, 3 for RGB).
    channels: int
    #: Whether a pixel's value is bit for bit the same however its tile is cut (each
    #: pixel's random stream starts from the seed and the pixel alone): then a
    #: speculative copy may be cut into bands that several instances render at once.
    exact_tiles: bool

    def default_scene(self) -> dict[str, Any]:
        """The scene used when a session gives none."""

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of this producer's scene (goes into the OpenAPI document)."""

    def validate(
        self, scene: dict[str, Any], resources: Mapping[str, ResourceInfo] | None
    ) -> dict[str, Any]:
        """Return the scene with defaults filled in, or raise ``SceneError``.

        ``resources`` is None when the session's resources are not known yet (at session
        creation); references to resources are then checked only for their form.
        """

    def image_size(self, scene: dict[str, Any]) -> tuple[int, int]:
        """(width, height) of the image that the validated scene renders."""

    def pixel_seconds(self, scene: dict[str, Any]) -> float:
        """A conservative estimate of the seconds one vCPU spends on one pixel of one
        pass: the planner sizes tiles with it so that a task stays well inside the
        Pub/Sub acknowledgement deadline."""

    def render(
        self, scene: dict[str, Any], tile: Tile, seed: int, resources: Resources
    ) -> np.ndarray:
        """Render one sample pass of one tile: float32 array (height, width, channels).

        The value is the mean over this pass's samples, in linear units. The same
        (scene, tile, seed) always gives the same array, and a pixel's value does not
        depend on how the image is cut into tiles.
        """
