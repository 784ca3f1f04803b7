"""Wavefront OBJ meshes: vertex positions and triangles, parsed with NumPy.

Only geometry matters to the path tracer: ``v`` lines give positions, ``f`` lines give
polygons (fan-triangulated). Texture coordinates, normals, groups and materials are
accepted and ignored. The common case (every ``v`` line has three numbers, every ``f``
line three positive corners) is parsed in bulk with regular expressions and NumPy
(about 0.05 s for the 69k-triangle bunny); anything else, and any error, goes through a
line-by-line parser so that the error names the offending line.
"""

from __future__ import annotations

import bisect
import pathlib
import re
from dataclasses import dataclass

import numpy as np

from francine.domain.producer import SceneError

# Statements of the OBJ format that carry nothing the path tracer uses. Anything not
# listed here and not ``v``/``f`` is rejected: a file that is not an OBJ at all (an
# upload of the wrong file) then fails at upload instead of rendering as garbage.
_IGNORED = frozenset(
    b"vt vn vp l p o g s mg usemtl mtllib maplib usemap lod bevel c_interp d_interp "
    b"shadow_obj trace_obj ctech stech cstype deg bmat step curv curv2 surf parm trim "
    b"hole scrv sp end con".split()
)
_COMMENT = re.compile(rb"#[^\n]*")
_KEYWORD = re.compile(rb"^[ \t\r]*([^ \t\r\n]+)", re.M)
_V_LINE = re.compile(rb"^v[ \t][^\n]*", re.M)
_F_LINE = re.compile(rb"^f[ \t][^\n]*", re.M)
_FACE_SUFFIX = re.compile(rb"/[^\s]*")  # "12/5/7" -> "12": only the position index counts


class ObjError(ValueError):
    """A malformed OBJ file; ``line`` is 1-based."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh: float64 (n, 3) positions and int32 (m, 3) vertex indices."""

    vertices: np.ndarray
    triangles: np.ndarray


def parse_obj(data: bytes) -> Mesh:
    """Parse OBJ bytes into a ``Mesh``; ``ObjError`` names the first bad line."""
    if b"\x00" in data[:4096]:
        raise ObjError(1, "binary data, not a Wavefront OBJ text file")
    if b"#" in data:
        data = _COMMENT.sub(b"", data)  # keeps the newlines, so line numbers stay right
    mesh = _parse_bulk(data)
    return mesh if mesh is not None else _parse_lines(data)


def _parse_bulk(data: bytes) -> Mesh | None:
    """The common case in a few passes over the whole text; None when it does not apply."""
    keywords = _KEYWORD.findall(data)
    for k in set(keywords):
        if k not in _IGNORED and k not in (b"v", b"f"):
            return None  # an error, located line by line
    v_lines = _V_LINE.findall(data)
    f_lines = _F_LINE.findall(data)
    counts = {b"v": keywords.count(b"v"), b"f": keywords.count(b"f")}
    if counts[b"v"] != len(v_lines) or counts[b"f"] != len(f_lines) or not f_lines:
        return None  # indented statements, or no faces
    vertices = _table(b" ".join(v_lines), b"v", len(v_lines))
    f_text = b" ".join(f_lines)
    if b"/" in f_text:
        f_text = _FACE_SUFFIX.sub(b"", f_text)
    index = _table(f_text, b"f", len(f_lines), np.int64)
    if vertices is None or index is None or not np.isfinite(vertices).all():
        return None
    if len(index) and (index.min() < 1 or index.max() > len(vertices)):
        return None  # relative (negative) indices, or an error
    return Mesh(vertices, (index - 1).astype(np.int32))


def _table(text: bytes, keyword: bytes, rows: int, dtype=np.float64) -> np.ndarray | None:
    """Rows of ``keyword a b c``; None unless every row has exactly three values."""
    tokens = text.split()
    # With 4 tokens a row and the keyword at every 4th place (and nowhere else), every
    # row has exactly three values.
    if len(tokens) != 4 * rows or tokens[0::4].count(keyword) != rows:
        return None
    try:
        return np.array(tokens).reshape(rows, 4)[:, 1:].astype(dtype)
    except ValueError:
        return None


def _parse_lines(data: bytes) -> Mesh:
    lines = data.split(b"\n")
    vertices: list[tuple[float, float, float]] = []
    faces: list[tuple[int, list[bytes]]] = []  # (line index, corners), resolved below
    v_rows: list[int] = []
    for i, line in enumerate(lines):
        tokens = line.split(b"#", 1)[0].split()
        if not tokens:
            continue
        keyword = tokens[0]
        if keyword == b"v":
            if len(tokens) < 4:
                raise ObjError(i + 1, f"a vertex needs 3 coordinates, got {len(tokens) - 1}")
            try:
                xyz = (float(tokens[1]), float(tokens[2]), float(tokens[3]))
            except ValueError:
                raise ObjError(i + 1, "vertex coordinates must be numbers") from None
            if not np.isfinite(xyz).all():
                raise ObjError(i + 1, "vertex coordinates must be finite")
            vertices.append(xyz)
            v_rows.append(i)
        elif keyword == b"f":
            if len(tokens) < 4:
                raise ObjError(i + 1, f"a face needs at least 3 vertices, got {len(tokens) - 1}")
            faces.append((i, tokens[1:]))
        elif keyword not in _IGNORED:
            text = keyword[:20].decode("utf-8", "replace")
            raise ObjError(i + 1, f"unknown statement {text!r}")
    if not faces:
        raise ObjError(len(lines), "no faces (f lines): not a triangle mesh")
    nv = len(vertices)
    triangles: list[tuple[int, int, int]] = []
    for i, corners in faces:
        defined = bisect.bisect_left(v_rows, i)  # vertices before this line
        polygon = [_corner(c, defined, nv, i) for c in corners]
        triangles.extend(
            (polygon[0], polygon[k], polygon[k + 1]) for k in range(1, len(polygon) - 1)
        )
    return Mesh(
        np.array(vertices, dtype=np.float64).reshape(-1, 3),
        np.array(triangles, dtype=np.int32).reshape(-1, 3),
    )


def _corner(token: bytes, defined: int, nv: int, row: int) -> int:
    try:
        k = int(token.split(b"/", 1)[0])
    except ValueError:
        raise ObjError(row + 1, "face vertex indices must be integers") from None
    if k > 0:
        if k > nv:
            raise ObjError(row + 1, f"face vertex index {k} is out of range ({nv} vertices)")
        return k - 1
    if k < 0:
        # A negative index counts back from the last vertex defined before the face.
        if -k > defined:
            raise ObjError(row + 1, f"relative face index {k} refers before the first vertex")
        return defined + k
    raise ObjError(row + 1, "face vertex index 0 is invalid (OBJ indices start at 1)")


def load_obj(path: pathlib.Path) -> Mesh:
    return parse_obj(pathlib.Path(path).read_bytes())


def inspect_obj(name: str, path: pathlib.Path) -> dict[str, int]:
    """Check an uploaded OBJ; ``SceneError`` on the resource's name, naming the line."""
    try:
        mesh = load_obj(path)
    except ObjError as e:
        raise SceneError(name, f"malformed OBJ: {e}") from None
    return {"vertices": int(len(mesh.vertices)), "triangles": int(len(mesh.triangles))}
