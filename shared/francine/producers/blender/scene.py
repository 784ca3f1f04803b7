"""The ``blender`` scene: its JSON schema and its validation against the ``.blend`` file.

Validation runs in the api and needs no Blender: when a ``.blend`` resource is attached,
``blendfile.inspect`` reads its scenes, cameras, frame ranges and resolutions, and
``deps.of_file`` the files it reads, into the resource's record (``meta``); creating an
execution checks the scene against that record, and every file the ``.blend`` reads
(and every file those read, for linked libraries) against the session's resources.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from francine.domain.producer import ResourceInfo, SceneError
from francine.producers.blender import blendfile, deps

MAX_SAMPLES = 65_536
MAX_EDGE = 16_384
FIELDS = {"blend", "scene", "frame", "camera", "camera_matrix", "samples", "width",
          "height", "denoise"}
DEFAULT_SAMPLES = 16
#: Meta of a ``.blend`` resource: what the api recorded when it was attached.
META_KEY = "blend"


def json_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["blend"],
        "properties": {
            "blend": {"type": "string", "description": "resource name of the .blend file"},
            "scene": {"type": "string", "description": "Blender scene (default: active)"},
            "frame": {"type": "integer", "description": "default: the scene's current frame"},
            "camera": {"type": "string", "description": "camera object (default: scene's)"},
            "camera_matrix": {
                "type": "array", "minItems": 4, "maxItems": 4,
                "items": {"type": "array", "minItems": 4, "maxItems": 4,
                          "items": {"type": "number"}},
                "description": "4×4 row-major world matrix replacing the camera's"},
            "samples": {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES,
                        "default": DEFAULT_SAMPLES, "description": "Cycles samples per pass"},
            "width": {"type": "integer", "minimum": 1, "maximum": MAX_EDGE},
            "height": {"type": "integer", "minimum": 1, "maximum": MAX_EDGE},
            "denoise": {"type": "boolean", "default": False},
        },
    }


def _int(scene: dict, key: str, lo: int, hi: int) -> None:
    v = scene.get(key)
    if v is not None and (type(v) is not int or not lo <= v <= hi):
        raise SceneError(key, f"must be an integer in {lo}..{hi}")


def check_form(scene: Any) -> dict[str, Any]:
    """Types and ranges, without the file."""
    if not isinstance(scene, dict):
        raise SceneError("", "the scene must be a JSON object")
    unknown = set(scene) - FIELDS
    if unknown:
        raise SceneError(sorted(unknown)[0], f"unknown field; the fields are {sorted(FIELDS)}")
    if not isinstance(scene.get("blend"), str) or not scene["blend"]:
        raise SceneError("blend", "required: the resource name of the .blend file")
    for key in ("scene", "camera"):
        if key in scene and (not isinstance(scene[key], str) or not scene[key]):
            raise SceneError(key, "must be a non-empty string")
    _int(scene, "frame", -1_048_574, 1_048_574)
    _int(scene, "samples", 1, MAX_SAMPLES)
    _int(scene, "width", 1, MAX_EDGE)
    _int(scene, "height", 1, MAX_EDGE)
    if "denoise" in scene and not isinstance(scene["denoise"], bool):
        raise SceneError("denoise", "must be true or false")
    m = scene.get("camera_matrix")
    if m is not None and not (isinstance(m, list) and len(m) == 4 and all(
            isinstance(r, list) and len(r) == 4 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in r) for r in m)):
        raise SceneError("camera_matrix", "must be 4 rows of 4 finite numbers")
    out = dict(scene)
    out.setdefault("samples", DEFAULT_SAMPLES)
    out.setdefault("denoise", False)
    return out


def validate(scene: Any, resources: Mapping[str, ResourceInfo] | None) -> dict[str, Any]:
    scene = check_form(scene)
    if resources is None:
        return scene
    name = scene["blend"]
    if name not in resources:
        raise SceneError("blend", f"resource {name!r} is not attached to the session")
    info = (resources[name].meta or {}).get(META_KEY)
    if info is None:
        raise SceneError("blend", f"resource {name!r} is not a .blend file")
    scenes = {s["name"]: s for s in info["scenes"]}
    if not scenes:
        raise SceneError("blend", f"{name} has no scene")
    chosen = scene.get("scene") or info.get("active_scene") or next(iter(scenes))
    if chosen not in scenes:
        raise SceneError("scene", f"no scene {chosen!r} in {name}; the scenes are "
                                  f"{sorted(scenes)}")
    s = scenes[chosen]
    scene["scene"] = chosen
    if "frame" in scene:
        if not s["frame_start"] <= scene["frame"] <= s["frame_end"]:
            raise SceneError("frame", f"frame {scene['frame']} is outside scene {chosen!r}'s "
                                      f"range {s['frame_start']}..{s['frame_end']}")
    else:
        scene["frame"] = s["frame_current"]
    if "camera" in scene:
        if scene["camera"] not in info["cameras"]:
            raise SceneError("camera", f"no camera object {scene['camera']!r} in {name}; the "
                                       f"cameras are {info['cameras']}")
    elif s.get("camera"):
        scene["camera"] = s["camera"]
    else:
        raise SceneError("camera", f"scene {chosen!r} has no camera: name one")
    scene.setdefault("width", min(MAX_EDGE, s["width"]))
    scene.setdefault("height", min(MAX_EDGE, s["height"]))
    check_dependencies(name, resources)
    return scene


def check_dependencies(blend: str, resources: Mapping[str, ResourceInfo]) -> None:
    """Every file that ``blend`` reads must be a session resource under its relative
    path (packed files are in the ``.blend``): one file, or at least one of a
    sequence's (its frames, UDIM tiles or cache folder; Blender fills an empty
    simulation cache itself). Linked libraries must be resources too, recursively; the
    other files a library reads are needed only if the data linked from it uses them,
    which only Blender knows, so the worker checks those (and which frame of a sequence
    a render reads) before it renders."""
    seen, todo = set(), [blend]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        info = (resources[current].meta or {}).get(META_KEY) or {}
        for ext in info.get("external", []):
            if current != blend and ext["kind"] != "library":
                continue
            what = f"{ext['kind']} {ext['id_name']!r} of {current}"
            target = deps.resolve(current, ext["path"])
            if target is None:
                raise SceneError("blend", f"{what} reads {ext['path']!r}, which is not a "
                                          "path relative to the .blend inside the session's "
                                          "resources: upload with `francine render`, which "
                                          "remaps it, make paths relative or pack the file")
            if ext.get("sequence"):
                pattern = deps.sequence_pattern(target)
                if (not deps.matching(pattern, resources)
                        and ext["kind"] not in deps.OPTIONAL_WHEN_EMPTY):
                    raise SceneError("blend", f"{what} reads {ext['path']!r}: attach its files "
                                              f"as resources matching {pattern!r}")
                continue
            if target not in resources:
                raise SceneError("blend", f"{what} reads {ext['path']!r}: attach it as "
                                          f"resource {target!r}")
            if ext["kind"] == "library":
                todo.append(target)


def frame_rate(scene: dict[str, Any], resources: Mapping[str, ResourceInfo]) -> float:
    """The frames per second of the scene that ``scene`` renders (24 if the file's record
    predates the field)."""
    info = (resources[scene["blend"]].meta or {}).get(META_KEY) or {}
    for s in info.get("scenes", []):
        if s["name"] == scene.get("scene"):
            return float(s.get("fps") or 24.0)
    return 24.0


def meta_of(info: blendfile.BlendInfo, external: list[deps.Dependency]) -> dict[str, Any]:
    """What the api records about a ``.blend`` resource (small: it goes into Firestore):
    the file's scenes and cameras (``blendfile``) and the files it reads (``deps``)."""
    return {META_KEY: {
        "version": info.version,
        "active_scene": info.active_scene,
        "scenes": [{"name": s.name, "frame_start": s.frame_start, "frame_end": s.frame_end,
                    "frame_current": s.frame_current, "width": s.width, "height": s.height,
                    "camera": s.camera, "fps": s.fps} for s in info.scenes[:100]],
        "cameras": info.cameras[:1000],
        "external": [{"kind": e.kind, "id_name": e.owner, "path": e.path,
                      "sequence": e.sequence} for e in external[:1000]],
        "polygons": info.polygons, "objects": info.objects,
    }}
