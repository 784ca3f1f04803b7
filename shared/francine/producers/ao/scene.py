"""The ``ao`` scene: its defaults, its JSON schema, its validation and its packing.

Plain Python and NumPy only: the api validates scenes without loading numba.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from francine.domain.producer import SceneError

MAX_SIZE = 16384
MAX_SUBSAMPLES = 16
MAX_AO_SAMPLES = 64
MAX_SPHERES = 64
#: Coordinates and radii beyond this are rejected: they buy nothing and squares of
#: them would lose all precision in the kernel.
MAX_COORD = 1.0e6
#: A plane normal needs one component larger than this in magnitude.
TINY = 1.0e-9

DEFAULT_SCENE: dict[str, Any] = {
    "width": 512,
    "height": 512,
    "nsubsamples": 1,
    "nao_samples": 8,
    "spheres": [
        {"center": [-2.0, 0.0, -3.5], "radius": 0.5},
        {"center": [-0.5, 0.0, -3.0], "radius": 0.5},
        {"center": [1.0, 0.0, -2.2], "radius": 0.5},
    ],
    "plane": {"point": [0.0, -0.5, 0.0], "normal": [0.0, 1.0, 0.0]},
}

_INT_FIELDS = {
    "width": MAX_SIZE,
    "height": MAX_SIZE,
    "nsubsamples": MAX_SUBSAMPLES,
    "nao_samples": MAX_AO_SAMPLES,
}


def default_scene() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_SCENE)


def _vec3_schema(description: str) -> dict[str, Any]:
    return {
        "type": "array",
        "description": description,
        "items": {"type": "number", "minimum": -MAX_COORD, "maximum": MAX_COORD},
        "minItems": 3,
        "maxItems": 3,
    }


def json_schema() -> dict[str, Any]:
    def size(description: str, maximum: int, default: int) -> dict[str, Any]:
        return {
            "type": "integer",
            "minimum": 1,
            "maximum": maximum,
            "default": default,
            "description": description,
        }

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ao scene",
        "description": "The classic ambient-occlusion benchmark scene (aobench). "
        "Every field is optional; a missing one takes the classic value.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "width": size("image width in pixels", MAX_SIZE, 512),
            "height": size("image height in pixels", MAX_SIZE, 512),
            "nsubsamples": size("n: each pixel is sampled on an n×n grid", MAX_SUBSAMPLES, 1),
            "nao_samples": size("n: each hit casts n×n ambient-occlusion rays", MAX_AO_SAMPLES, 8),
            "spheres": {
                "type": "array",
                "maxItems": MAX_SPHERES,
                "default": copy.deepcopy(DEFAULT_SCENE["spheres"]),
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["center", "radius"],
                    "properties": {
                        "center": _vec3_schema("the sphere's center [x, y, z]"),
                        "radius": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "maximum": MAX_COORD,
                        },
                    },
                },
            },
            "plane": {
                "type": "object",
                "additionalProperties": False,
                "required": ["point", "normal"],
                "default": copy.deepcopy(DEFAULT_SCENE["plane"]),
                "properties": {
                    "point": _vec3_schema("a point of the plane [x, y, z]"),
                    "normal": {**_vec3_schema("the plane's normal [x, y, z]: not every "
                                              f"component within ±{TINY:g}"),
                               "not": {"items": {"minimum": -TINY, "maximum": TINY}}},
                },
            },
        },
    }


def _number(value: Any, field: str) -> float:
    # bool is an int in Python but never a number in a scene.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SceneError(field, f"must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number) or abs(number) > MAX_COORD:
        raise SceneError(field, f"must be a finite number of magnitude at most {MAX_COORD:g}")
    return number


def _vec3(value: Any, field: str) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise SceneError(field, "must be a list of three numbers [x, y, z]")
    return [_number(item, f"{field}[{i}]") for i, item in enumerate(value)]


def _object(value: Any, field: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SceneError(field, "must be an object")
    for key in value:
        if key not in keys:
            raise SceneError(f"{field}.{key}", f"unknown field; expected one of {list(keys)}")
    for key in keys:
        if key not in value:
            raise SceneError(f"{field}.{key}", "is required")
    return value


def _size(value: Any, field: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SceneError(field, f"must be an integer, not {type(value).__name__}")
    if not 1 <= value <= maximum:
        raise SceneError(field, f"must be between 1 and {maximum}, not {value}")
    return value


def validate(scene: Any) -> dict[str, Any]:
    """The scene with defaults filled in, or ``SceneError`` naming the first bad field."""
    if scene is None:
        return default_scene()
    if not isinstance(scene, dict):
        raise SceneError("scene", "must be an object")
    for key in scene:
        if key not in DEFAULT_SCENE:
            raise SceneError(str(key), f"unknown field; expected one of {list(DEFAULT_SCENE)}")
    out = default_scene()
    for key, maximum in _INT_FIELDS.items():
        if key in scene:
            out[key] = _size(scene[key], key, maximum)
    if "spheres" in scene:
        spheres = scene["spheres"]
        if not isinstance(spheres, list):
            raise SceneError("spheres", "must be a list")
        if len(spheres) > MAX_SPHERES:
            raise SceneError("spheres", f"at most {MAX_SPHERES} spheres, not {len(spheres)}")
        out["spheres"] = []
        for i, sphere in enumerate(spheres):
            field = f"spheres[{i}]"
            _object(sphere, field, ("center", "radius"))
            radius = _number(sphere["radius"], f"{field}.radius")
            if radius <= 0:
                raise SceneError(f"{field}.radius", f"must be positive, not {radius:g}")
            center = _vec3(sphere["center"], f"{field}.center")
            out["spheres"].append({"center": center, "radius": radius})
    if "plane" in scene:
        plane = _object(scene["plane"], "plane", ("point", "normal"))
        point = _vec3(plane["point"], "plane.point")
        normal = _vec3(plane["normal"], "plane.normal")
        # The kernel normalises it; a tiny one would normalise to garbage. (The schema
        # states the same rule, component by component.)
        if all(abs(c) <= TINY for c in normal):
            raise SceneError("plane.normal", f"must have a component beyond ±{TINY:g}")
        out["plane"] = {"point": point, "normal": normal}
    return out


def image_size(scene: dict[str, Any]) -> tuple[int, int]:
    return int(scene["width"]), int(scene["height"])


def scene_arrays(scene: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The validated scene as the kernel takes it.

    ``spheres``: float64 (n, 4) rows (cx, cy, cz, radius); ``plane``: float64 (6,)
    (point, unit normal). The normal is normalised here because aobench uses it as the
    shading normal, which must have unit length.
    """
    spheres = np.zeros((len(scene["spheres"]), 4), np.float64)
    for i, sphere in enumerate(scene["spheres"]):
        spheres[i, :3] = sphere["center"]
        spheres[i, 3] = sphere["radius"]
    plane = np.zeros(6, np.float64)
    plane[:3] = scene["plane"]["point"]
    normal = np.asarray(scene["plane"]["normal"], np.float64)
    plane[3:] = normal / np.sqrt(np.dot(normal, normal))
    return spheres, plane
