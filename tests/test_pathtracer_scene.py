"""The pathtracer scene: defaults, the JSON schema, and errors that name the field."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from francine.domain.producer import ResourceInfo, SceneError
from francine.producers.pathtracer import EXAMPLES, PRODUCER

BUNNY_INFO = {"bunny.obj": ResourceInfo("bunny.obj", "ab" * 32, 2373216)}


def example():
    return json.loads((EXAMPLES / "bunny.json").read_text())


def test_producer_interface():
    assert PRODUCER.name == "pathtracer"
    assert PRODUCER.display == "srgb" and PRODUCER.channels == 3
    scene = PRODUCER.validate(PRODUCER.default_scene(), None)
    assert PRODUCER.image_size(scene) == (256, 256)
    # Validation is idempotent: a validated scene validates to itself.
    assert PRODUCER.validate(copy.deepcopy(scene), None) == scene


def test_registry_finds_it():
    from francine.producers import get

    assert get("pathtracer") is PRODUCER


def test_importing_and_validating_does_not_import_numba(tmp_path):
    obj = tmp_path / "t.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    code = f"""
import sys, json, pathlib
from francine.producers.pathtracer import PRODUCER, EXAMPLES
PRODUCER.json_schema()
PRODUCER.validate(json.loads((EXAMPLES / "bunny.json").read_text()), None)
PRODUCER.inspect_resource("t.obj", pathlib.Path({str(obj)!r}))
assert "numba" not in sys.modules, "numba was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_example_scene_validates_before_and_after_resources_are_known():
    scene = PRODUCER.validate(example(), None)
    assert scene["meshes"][0]["resource"] == "bunny.obj"
    assert PRODUCER.validate(example(), BUNNY_INFO) == scene
    assert scene["meshes"][0]["transform"] == {
        "translate": [0, 0, 0],
        "rotate": [0, 0, 0],
        "scale": [1, 1, 1],
    }


def test_missing_resource_is_rejected_at_execution_time():
    with pytest.raises(SceneError) as e:
        PRODUCER.validate(example(), {})
    assert e.value.field == "meshes[0].resource" and "not attached" in e.value.message


def with_change(path, value):
    """The example scene with one field changed (``path`` is a list of keys)."""
    scene = example()
    target = scene
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return scene


@pytest.mark.parametrize(
    "path, value, field",
    [
        (["spheres", 0, "material"], "gold", "spheres[0].material"),
        (["meshes", 0, "material"], "gold", "meshes[0].material"),
        (["meshes", 0, "resource"], "../bunny.obj", "meshes[0].resource"),
        (["meshes", 0, "resource"], "bunny.ply", "meshes[0].resource"),
        (["meshes", 0, "resource"], 7, "meshes[0].resource"),
        (["meshes", 0, "resource"], KeyError, "meshes[0].resource"),
        (["meshes", 0, "transform"], {"scale": 0}, "meshes[0].transform.scale"),
        (["meshes", 0, "transform"], {"shear": 1}, "meshes[0].transform.shear"),
        (
            ["meshes", 0, "transform"],
            {"matrix": [[1, 0, 0, 0]] * 4},
            "meshes[0].transform.matrix[3]",
        ),
        (
            ["meshes", 0, "transform"],
            {"matrix": [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]},
            "meshes[0].transform.matrix",
        ),
        (
            ["meshes", 0, "transform"],
            {"matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "scale": 2},
            "meshes[0].transform",
        ),
        (["materials", "bunny", "type"], "velvet", "materials.bunny.type"),
        (["materials", "bunny", "albedo"], [0.5, 1.5, 0.5], "materials.bunny.albedo"),
        (["materials", "bunny", "albedo"], [0.5, 0.5], "materials.bunny.albedo"),
        (["materials", "lamp", "emission"], -1, "materials.lamp.emission"),
        (["materials", "glass", "ior"], 0, "materials.glass.ior"),
        (["materials", "bunny", "ior"], 1.3, "materials.bunny.ior"),
        (["materials", "bad name!"], {}, "materials.bad name!"),
        (["spheres", 1, "radius"], -1, "spheres[1].radius"),
        (["spheres", 1, "center"], [0, "1", 0], "spheres[1].center[1]"),
        (["spheres", 1, "center"], KeyError, "spheres[1].center"),
        (["spheres"], {}, "spheres"),
        (["width"], 0, "width"),
        (["height"], 1.5, "height"),
        (["width"], True, "width"),
        (["samples_per_pixel"], 10**9, "samples_per_pixel"),
        (["max_depth"], 0, "max_depth"),
        (["camera", "fov"], 180, "camera.fov"),
        (["camera", "up"], [0, 0, 0], "camera.up"),
        (["camera", "zoom"], 2, "camera.zoom"),
        (["environment"], "blue", "environment"),
        (["environment"], [1, float("inf"), 1], "environment[1]"),
        (["lights"], [], "lights"),
    ],
)
def test_bad_scenes_name_the_field(path, value, field):
    with pytest.raises(SceneError) as e:
        PRODUCER.validate(with_change(path, value), None)
    assert e.value.field == field, e.value


def test_camera_must_look_somewhere_and_know_up():
    scene = example()
    scene["camera"]["look_at"] = list(scene["camera"]["position"])
    with pytest.raises(SceneError) as e:
        PRODUCER.validate(scene, None)
    assert e.value.field == "camera.look_at"
    scene = example()
    position, look_at = scene["camera"]["position"], scene["camera"]["look_at"]
    scene["camera"]["up"] = [2 * (b - a) for a, b in zip(position, look_at, strict=True)]
    with pytest.raises(SceneError) as e:
        PRODUCER.validate(scene, None)
    assert e.value.field == "camera.up"


def test_defaults_fill_a_sparse_scene():
    scene = PRODUCER.validate(
        {
            "materials": {"m": {"type": "glass"}},
            "spheres": [{"center": [0, 0, 0], "radius": 1, "material": "m"}],
        },
        None,
    )
    assert scene["materials"]["m"] == {
        "type": "glass",
        "albedo": [1.0] * 3,
        "emission": [0.0] * 3,
        "ior": 1.5,
    }
    assert scene["meshes"] == [] and scene["environment"] == [0.0] * 3
    assert scene["camera"]["up"] == [0.0, 1.0, 0.0] and scene["max_depth"] == 8
    assert PRODUCER.validate({}, None)["spheres"] == []


def test_json_schema_agrees_with_validation():
    jsonschema = pytest.importorskip("jsonschema")
    schema = PRODUCER.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for scene in (PRODUCER.default_scene(), example(), {}):
        validator.validate(scene)
        validator.validate(PRODUCER.validate(scene, None))
    for path, value in [
        (["lights"], []),
        (["materials", "bunny", "type"], "velvet"),
        (["width"], 0),
        (["meshes", 0, "resource"], "bunny.ply"),
    ]:
        assert not validator.is_valid(with_change(path, value))
