"""The ``pathtracer`` scene: its JSON schema, its defaults and its validation.

Validation is by hand rather than by a schema library so that every error names the
field it is about (``meshes[0].material``); ``json_schema()`` describes the same rules
for the OpenAPI document. No numba here: the api imports this to validate scenes.

Materials are a JSON object keyed by name (not a list) so that a merge patch can change
one material (``{"materials": {"floor": {"albedo": 0.3}}}``) without repeating the rest.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from francine.domain.producer import ResourceInfo, SceneError

MAX_SIZE = 16384
MAX_SAMPLES = 1 << 16
MAX_DEPTH = 1024
MAX_SPHERES = 4096
MAX_MESHES = 256
MAX_MATERIALS = 1024
MATERIAL_TYPES = ("diffuse", "mirror", "glass")
# As the API allows for resource names: a relative path of letters, digits, ._-/ .
_RESOURCE = re.compile(r"^[A-Za-z0-9._\-/]+$")
_MATERIAL_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")

_TOP = (
    "width",
    "height",
    "samples_per_pixel",
    "max_depth",
    "camera",
    "environment",
    "materials",
    "spheres",
    "meshes",
)

DEFAULT_SCENE: dict[str, Any] = {
    # A Cornell box made of spheres (after smallpt): walls are spheres of radius 1e3,
    # lit by an emissive sphere under the ceiling. Needs no resources.
    "width": 256,
    "height": 256,
    "samples_per_pixel": 16,
    "max_depth": 8,
    "camera": {"position": [0.0, 1.0, 3.4], "look_at": [0.0, 1.0, 0.0], "up": [0, 1, 0], "fov": 40},
    "environment": [0.0, 0.0, 0.0],
    "materials": {
        "white": {"type": "diffuse", "albedo": [0.75, 0.75, 0.75]},
        "red": {"type": "diffuse", "albedo": [0.75, 0.25, 0.25]},
        "green": {"type": "diffuse", "albedo": [0.25, 0.75, 0.25]},
        "mirror": {"type": "mirror", "albedo": [0.95, 0.95, 0.95]},
        "glass": {"type": "glass", "ior": 1.5},
        "light": {"type": "diffuse", "albedo": [0.0, 0.0, 0.0], "emission": [12.0, 12.0, 12.0]},
    },
    "spheres": [
        {"center": [-1001.0, 1.0, 0.0], "radius": 1000.0, "material": "red"},
        {"center": [1001.0, 1.0, 0.0], "radius": 1000.0, "material": "green"},
        {"center": [0.0, -1000.0, 0.0], "radius": 1000.0, "material": "white"},
        {"center": [0.0, 1002.0, 0.0], "radius": 1000.0, "material": "white"},
        {"center": [0.0, 1.0, -1001.0], "radius": 1000.0, "material": "white"},
        {"center": [-0.45, 0.35, -0.3], "radius": 0.35, "material": "mirror"},
        {"center": [0.45, 0.35, 0.25], "radius": 0.35, "material": "glass"},
        {"center": [0.0, 1.9, 0.0], "radius": 0.12, "material": "light"},
    ],
    "meshes": [],
}

# What ``validate`` fills in for a missing field. (The default scene above is what a
# session without any scene gets; a scene that is given starts from an empty world.)
FIELD_DEFAULTS: dict[str, Any] = {
    "width": 256,
    "height": 256,
    "samples_per_pixel": 16,
    "max_depth": 8,
    "camera": {
        "position": [0.0, 0.0, 5.0],
        "look_at": [0.0, 0.0, 0.0],
        "up": [0.0, 1.0, 0.0],
        "fov": 40.0,
    },
    "environment": [0.0, 0.0, 0.0],
    "materials": {},
    "spheres": [],
    "meshes": [],
}

_MATERIAL_DEFAULTS = {
    "diffuse": {"albedo": [0.8, 0.8, 0.8], "emission": [0.0, 0.0, 0.0]},
    "mirror": {"albedo": [1.0, 1.0, 1.0], "emission": [0.0, 0.0, 0.0]},
    "glass": {"albedo": [1.0, 1.0, 1.0], "emission": [0.0, 0.0, 0.0], "ior": 1.5},
}


def default_scene() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_SCENE)


def _vec3(description: str) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 3,
        "maxItems": 3,
        "description": description,
    }


def json_schema() -> dict[str, Any]:
    """The JSON schema of a scene (draft 2020-12 / OpenAPI 3.1)."""
    color = {
        "description": "linear RGB; a single number means gray",
        "oneOf": [
            {"type": "number", "minimum": 0},
            {
                "type": "array",
                "items": {"type": "number", "minimum": 0},
                "minItems": 3,
                "maxItems": 3,
            },
        ],
    }
    material = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "type": {
                "enum": list(MATERIAL_TYPES),
                "default": "diffuse",
                "description": "diffuse (Lambertian), mirror (perfect specular) or glass "
                "(smooth dielectric)",
            },
            "albedo": {
                **color,
                "description": "diffuse reflectance, mirror tint or glass transmission tint "
                "(each ≤ 1); default 0.8 for diffuse, 1 otherwise",
            },
            "emission": {
                **color,
                "description": "emitted radiance (both sides of a surface); default 0",
            },
            "ior": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 1.5,
                "description": "index of refraction (glass only)",
            },
        },
    }
    transform = {
        "type": "object",
        "additionalProperties": False,
        "description": "object to world: scale, then rotate (degrees about x, then y, then "
        "z), then translate; or a 4×4 row-major `matrix` instead of the three",
        "properties": {
            "translate": _vec3("default [0, 0, 0]"),
            "rotate": _vec3("Euler angles in degrees, applied x, y, z; default [0, 0, 0]"),
            "scale": {
                "oneOf": [
                    {"type": "number"},
                    {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
                ],
                "description": "non-zero; default 1",
            },
            "matrix": {
                "type": "array",
                "minItems": 4,
                "maxItems": 4,
                "items": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": 4,
                    "maxItems": 4,
                },
                "description": "affine (last row [0, 0, 0, 1]), invertible",
            },
        },
    }
    material_ref = {"type": "string", "description": "a key of `materials`"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pathtracer scene",
        "description": "A physically based scene: spheres and triangle meshes (Wavefront OBJ "
        "resources of the session) with diffuse, mirror, glass and emissive materials under "
        "a constant environment, rendered by unidirectional path tracing (next-event "
        "estimation with MIS, Russian roulette). Values are linear radiance; the final image "
        "is sRGB-encoded. A session without a scene gets a Cornell box of spheres; in a "
        "scene that is given, missing fields take the defaults below (no materials, "
        "spheres or meshes).",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "width": {"type": "integer", "minimum": 1, "maximum": MAX_SIZE, "default": 256},
            "height": {"type": "integer", "minimum": 1, "maximum": MAX_SIZE, "default": 256},
            "samples_per_pixel": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_SAMPLES,
                "default": 16,
                "description": "samples per pixel in each sample pass (task); an execution "
                "with `parallel` = N averages N passes",
            },
            "max_depth": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_DEPTH,
                "default": 8,
                "description": "most path segments from the camera (1: emitters and the "
                "environment seen directly)",
            },
            "camera": {
                "type": "object",
                "additionalProperties": False,
                "description": "a pinhole camera",
                "properties": {
                    "position": _vec3("eye position; default [0, 0, 5]"),
                    "look_at": _vec3("point the camera looks at; default [0, 0, 0]"),
                    "up": _vec3("up direction; default [0, 1, 0]"),
                    "fov": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "exclusiveMaximum": 180,
                        "description": "vertical field of view in degrees; default 40",
                    },
                },
            },
            "environment": {
                **color,
                "description": "constant radiance of the sky (all "
                "directions that hit nothing); default 0",
            },
            "materials": {
                "type": "object",
                "maxProperties": MAX_MATERIALS,
                "default": {},
                "propertyNames": {"pattern": _MATERIAL_NAME.pattern},
                "additionalProperties": material,
                "description": "materials by name",
            },
            "spheres": {
                "type": "array",
                "maxItems": MAX_SPHERES,
                "default": [],
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["center", "radius", "material"],
                    "properties": {
                        "center": _vec3("center"),
                        "radius": {"type": "number", "exclusiveMinimum": 0},
                        "material": material_ref,
                    },
                },
            },
            "meshes": {
                "type": "array",
                "maxItems": MAX_MESHES,
                "default": [],
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["resource", "material"],
                    "properties": {
                        "resource": {
                            "type": "string",
                            "pattern": r"^[A-Za-z0-9._\-/]+\.obj$",
                            "description": "name of a session resource: a Wavefront OBJ file "
                            "(v and f lines; polygons are fan-triangulated, normals and "
                            "texture coordinates ignored)",
                        },
                        "material": material_ref,
                        "transform": transform,
                    },
                },
            },
        },
    }


# --- validation ----------------------------------------------------------------------


def _fail(field: str, message: str):
    raise SceneError(field, message)


def _check_keys(value: Any, field: str, allowed) -> dict:
    if not isinstance(value, dict):
        _fail(field, "must be an object")
    for key in value:
        if key not in allowed:
            name = f"{field}.{key}" if field else str(key)
            _fail(name, f"unknown field; expected one of {sorted(allowed)}")
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(field, "must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        _fail(field, "must be finite")
    return number


def _array(value: Any, field: str, most: int) -> list:
    if not isinstance(value, list):
        _fail(field, "must be an array")
    if len(value) > most:
        _fail(field, f"at most {most} {field}")
    return value


def _integer(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            _fail(field, "must be an integer")
    if not lo <= value <= hi:
        _fail(field, f"must be between {lo} and {hi}")
    return value


def _vector(value: Any, field: str) -> list[float]:
    if not isinstance(value, list) or len(value) != 3:
        _fail(field, "must be an array of 3 numbers")
    return [_number(x, f"{field}[{i}]") for i, x in enumerate(value)]


def _color(value: Any, field: str, at_most_one: bool = False) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        rgb = [_number(value, field)] * 3
    elif isinstance(value, list):
        rgb = _vector(value, field)
    else:
        _fail(field, "must be a number or an array of 3 numbers")
    if min(rgb) < 0:
        _fail(field, "must not be negative")
    if at_most_one and max(rgb) > 1:
        _fail(field, "must not exceed 1 (energy conservation)")
    return rgb


def _length(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _camera(value: Any) -> dict[str, Any]:
    cam = _check_keys(value, "camera", ("position", "look_at", "up", "fov"))
    base = FIELD_DEFAULTS["camera"]
    out = {
        "position": _vector(cam.get("position", base["position"]), "camera.position"),
        "look_at": _vector(cam.get("look_at", base["look_at"]), "camera.look_at"),
        "up": _vector(cam.get("up", base["up"]), "camera.up"),
        "fov": _number(cam.get("fov", base["fov"]), "camera.fov"),
    }
    if not 0 < out["fov"] < 180:
        _fail("camera.fov", "must be between 0 and 180 degrees (exclusive)")
    forward = [a - b for a, b in zip(out["look_at"], out["position"], strict=True)]
    if _length(forward) == 0:
        _fail("camera.look_at", "must differ from camera.position")
    up = out["up"]
    cross = [
        forward[1] * up[2] - forward[2] * up[1],
        forward[2] * up[0] - forward[0] * up[2],
        forward[0] * up[1] - forward[1] * up[0],
    ]
    if _length(cross) <= 1e-9 * _length(forward) * max(_length(up), 1e-300):
        _fail("camera.up", "must not be zero or parallel to the viewing direction")
    return out


def _material(value: Any, field: str) -> dict[str, Any]:
    mat = _check_keys(value, field, ("type", "albedo", "emission", "ior"))
    kind = mat.get("type", "diffuse")
    if kind not in MATERIAL_TYPES:
        _fail(f"{field}.type", f"unknown material type {kind!r}; one of {list(MATERIAL_TYPES)}")
    defaults = _MATERIAL_DEFAULTS[kind]
    out: dict[str, Any] = {"type": kind}
    out["albedo"] = _color(mat.get("albedo", defaults["albedo"]), f"{field}.albedo", True)
    out["emission"] = _color(mat.get("emission", defaults["emission"]), f"{field}.emission")
    if kind == "glass":
        ior = _number(mat.get("ior", defaults["ior"]), f"{field}.ior")
        if ior <= 0:
            _fail(f"{field}.ior", "must be positive")
        out["ior"] = ior
    elif "ior" in mat:
        _fail(f"{field}.ior", "only glass has an index of refraction")
    return out


def _material_ref(value: Any, field: str, materials: dict) -> str:
    if not isinstance(value, str):
        _fail(field, "must be the name of a material")
    if value not in materials:
        _fail(field, f"unknown material {value!r}; defined: {sorted(materials)}")
    return value


def _transform(value: Any, field: str) -> dict[str, Any]:
    xf = _check_keys(value, field, ("translate", "rotate", "scale", "matrix"))
    if "matrix" in xf:
        if len(xf) > 1:
            _fail(field, "give either matrix or translate/rotate/scale, not both")
        rows = xf["matrix"]
        if not isinstance(rows, list) or len(rows) != 4:
            _fail(f"{field}.matrix", "must be 4 rows of 4 numbers")
        matrix = []
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != 4:
                _fail(f"{field}.matrix[{i}]", "must be a row of 4 numbers")
            matrix.append([_number(x, f"{field}.matrix[{i}][{j}]") for j, x in enumerate(row)])
        if matrix[3] != [0.0, 0.0, 0.0, 1.0]:
            _fail(f"{field}.matrix[3]", "must be [0, 0, 0, 1] (an affine transform)")
        a = [r[:3] for r in matrix[:3]]
        det = (
            a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
        )
        scale = max(abs(x) for r in a for x in r)
        if scale == 0 or abs(det) <= 1e-12 * scale**3:
            _fail(f"{field}.matrix", "must be invertible")
        return {"matrix": matrix}
    out = {
        "translate": _vector(xf.get("translate", [0.0, 0.0, 0.0]), f"{field}.translate"),
        "rotate": _vector(xf.get("rotate", [0.0, 0.0, 0.0]), f"{field}.rotate"),
    }
    scale = xf.get("scale", 1.0)
    if isinstance(scale, list):
        out["scale"] = _vector(scale, f"{field}.scale")
    else:
        out["scale"] = [_number(scale, f"{field}.scale")] * 3
    if any(s == 0 for s in out["scale"]):
        _fail(f"{field}.scale", "must not be zero")
    return out


def _resource_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(field, "must be the name of a session resource")
    if not _RESOURCE.match(value) or value.startswith("/") or ".." in value.split("/"):
        _fail(field, "must be a relative path of letters, digits and ._-/ without '..'")
    if not value.endswith(".obj"):
        _fail(field, "must name a Wavefront OBJ file (ending in .obj)")
    return value


def validate(
    scene: dict[str, Any] | None, resources: Mapping[str, ResourceInfo] | None
) -> dict[str, Any]:
    """The scene with every default filled in, or ``SceneError`` naming the bad field."""
    if scene is None:
        scene = {}
    _check_keys(scene, "", _TOP)
    base = FIELD_DEFAULTS
    out: dict[str, Any] = {
        "width": _integer(scene.get("width", base["width"]), "width", 1, MAX_SIZE),
        "height": _integer(scene.get("height", base["height"]), "height", 1, MAX_SIZE),
        "samples_per_pixel": _integer(
            scene.get("samples_per_pixel", base["samples_per_pixel"]),
            "samples_per_pixel",
            1,
            MAX_SAMPLES,
        ),
        "max_depth": _integer(scene.get("max_depth", base["max_depth"]), "max_depth", 1, MAX_DEPTH),
        "camera": _camera(scene.get("camera", base["camera"])),
        "environment": _color(scene.get("environment", base["environment"]), "environment"),
    }
    materials = scene.get("materials", base["materials"])
    _check_keys(materials, "materials", materials if isinstance(materials, dict) else ())
    if len(materials) > MAX_MATERIALS:
        _fail("materials", f"at most {MAX_MATERIALS} materials")
    for name in materials:
        if not _MATERIAL_NAME.match(name):
            _fail(f"materials.{name}", "a material name is 1-64 letters, digits or ._-")
    out["materials"] = {k: _material(v, f"materials.{k}") for k, v in materials.items()}

    spheres = _array(scene.get("spheres", base["spheres"]), "spheres", MAX_SPHERES)
    out["spheres"] = []
    for i, s in enumerate(spheres):
        field = f"spheres[{i}]"
        _check_keys(s, field, ("center", "radius", "material"))
        for key in ("center", "radius", "material"):
            if key not in s:
                _fail(f"{field}.{key}", "is required")
        radius = _number(s["radius"], f"{field}.radius")
        if radius <= 0:
            _fail(f"{field}.radius", "must be positive")
        out["spheres"].append(
            {
                "center": _vector(s["center"], f"{field}.center"),
                "radius": radius,
                "material": _material_ref(s["material"], f"{field}.material", out["materials"]),
            }
        )

    meshes = _array(scene.get("meshes", base["meshes"]), "meshes", MAX_MESHES)
    out["meshes"] = []
    for i, m in enumerate(meshes):
        field = f"meshes[{i}]"
        _check_keys(m, field, ("resource", "material", "transform"))
        for key in ("resource", "material"):
            if key not in m:
                _fail(f"{field}.{key}", "is required")
        name = _resource_name(m["resource"], f"{field}.resource")
        if resources is not None and name not in resources:
            _fail(f"{field}.resource", f"resource {name!r} is not attached to the session")
        out["meshes"].append(
            {
                "resource": name,
                "material": _material_ref(m["material"], f"{field}.material", out["materials"]),
                "transform": _transform(m.get("transform", {}), f"{field}.transform"),
            }
        )
    return out
