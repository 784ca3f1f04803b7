"""OBJ parsing: the bulk path, the line-by-line path, and errors that name the line."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from francine.domain.producer import SceneError
from francine.producers.pathtracer import PRODUCER, shapes
from francine.producers.pathtracer.obj import ObjError, _parse_lines, parse_obj

BUNNY = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "bunny.obj"


def test_bulk_and_line_parsers_agree():
    v, f = shapes.icosphere(2)
    data = shapes.to_obj(v, f)
    bulk = parse_obj(data)
    lines = _parse_lines(data)
    assert np.array_equal(bulk.triangles, f) and np.allclose(bulk.vertices, v)
    assert np.array_equal(lines.triangles, f) and np.array_equal(lines.vertices, bulk.vertices)


def test_the_forms_of_faces_and_statements():
    data = b"""# a square and a triangle
mtllib x.mtl
o square
v 0 0 0
v 1 0 0 1.0
v 1 1 0
v 0 1 0
vt 0 0
vn 0 0 1
usemtl red
s off
f 1/1/1 2/1/1 3//1 4
  v 5 5 5\r
f -3 -2 -1\r
g tail
"""
    mesh = parse_obj(data)
    assert mesh.vertices.shape == (5, 3) and mesh.vertices[4].tolist() == [5, 5, 5]
    # The quad is fan-triangulated; -3..-1 count back from the fifth vertex.
    assert mesh.triangles.tolist() == [[0, 1, 2], [0, 2, 3], [2, 3, 4]]


@pytest.mark.parametrize(
    "data, line, words",
    [
        (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", 4, "out of range"),
        (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", 4, "index 0"),
        (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\n", 4, "at least 3"),
        (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n", 4, "integers"),
        (b"v 0 0 0\nv 1 zero 0\nv 0 1 0\nf 1 2 3\n", 2, "numbers"),
        (b"v 0 0 0\nv 1 0\nv 0 1 0\nf 1 2 3\n", 2, "3 coordinates"),
        (b"v 0 0 0\nv 1 0 nan\nv 0 1 0\nf 1 2 3\n", 2, "finite"),
        (b"v 0 0 0\nf -2 -1 1\nv 1 1 1\n", 2, "before the first"),
        (b"v 0 0 0\nv 1 0 0\nv 0 1 0\n\nhello world\nf 1 2 3\n", 5, "unknown statement"),
        (b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", 4, "no faces"),
        (b"\x7fELF\x00\x00\x00", 1, "binary"),
    ],
)
def test_errors_name_the_line(data, line, words):
    with pytest.raises(ObjError) as e:
        parse_obj(data)
    assert e.value.line == line and words in str(e.value)


def test_inspect_resource_reports_counts_or_a_scene_error(tmp_path):
    good = tmp_path / "cube.obj"
    good.write_bytes(shapes.to_obj(*shapes.box([0, 0, 0], [1, 1, 1])))
    assert PRODUCER.inspect_resource("cube.obj", good) == {"vertices": 8, "triangles": 12}
    bad = tmp_path / "bad.obj"
    bad.write_bytes(good.read_bytes() + b"f 1 2 99\n")
    with pytest.raises(SceneError) as e:
        PRODUCER.inspect_resource("models/bad.obj", bad)
    assert e.value.field == "models/bad.obj"
    assert "line 22" in e.value.message and "out of range" in e.value.message


def test_an_error_at_the_end_of_a_large_file_names_its_line():
    # The bulk path rejects the file and the line-by-line path finds the line; how fast
    # is measured by bench/obj_parse.py, not asserted here.
    v, f = shapes.icosphere(5)  # 20,480 triangles
    data = shapes.to_obj(v, f) + b"f 1 2 0\n"
    with pytest.raises(ObjError) as e:
        parse_obj(data)
    assert e.value.line == data.count(b"\n")


@pytest.mark.skipif(not BUNNY.exists(), reason="the shared bunny is not here")
def test_bunny_parses():
    mesh = parse_obj(BUNNY.read_bytes())
    assert mesh.vertices.shape == (34834, 3) and mesh.triangles.shape == (69451, 3)
