"""Read what the farm needs from a ``.blend`` file without Blender.

The api validates Blender sessions with this (importing ``bpy`` costs a second and
hundreds of MB, which an api instance must not pay). A ``.blend`` file is a header and
a sequence of blocks; each block header carries a code, a length, the block's old
memory address, the index of its struct in the file's own type catalogue (SDNA, the
``DNA1`` block) and a count. The catalogue gives every struct's fields with their types
and array sizes, so the offset of ``Scene.r.sfra`` or ``Object.type`` is computed
from the file itself and not hard-coded for one Blender version.

Headers (``BLO_core_blend_header.hh`` / ``BLO_core_bhead.hh`` in Blender's sources):
legacy ``BLENDER-v405`` (12 bytes: pointer size ``_``/``-``, endianness ``v``/``V``,
3-digit version) with 20- or 24-byte block headers, and ``BLENDER17-01v0500`` (17
bytes, file format 1) with 32-byte block headers (64-bit lengths). Compressed files
(gzip, or zstd when the ``zstandard`` module is there) are read through.
"""

from __future__ import annotations

import gzip
import io
import pathlib
import re
import struct
from dataclasses import dataclass

#: Object types (DNA_object_types.h): the camera.
OB_CAMERA = 11

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


class BlendError(ValueError):
    """Not a readable ``.blend`` file."""


@dataclass
class SceneInfo:
    name: str
    frame_start: int
    frame_end: int
    frame_current: int
    width: int  # resolution × percentage
    height: int
    camera: str | None  # the scene's camera object, by name
    fps: float = 24.0  # frames per second: render.fps / render.fps_base
    objects: int = 0  # objects in the whole file (a measure of complexity)


@dataclass
class BlendInfo:
    version: int  # e.g. 500 for 5.0
    scenes: list[SceneInfo]
    active_scene: str | None
    cameras: list[str]  # camera objects in the file
    polygons: int = 0  # faces of all meshes (a measure of complexity)
    objects: int = 0

    def scene(self, name: str | None) -> SceneInfo:
        name = name or self.active_scene or (self.scenes[0].name if self.scenes else None)
        for s in self.scenes:
            if s.name == name:
                return s
        raise KeyError(name)


# --- the catalogue of types (SDNA) ------------------------------------------------------

_ARRAY = re.compile(r"\[(\d+)\]")


@dataclass
class Field:
    type: str
    name: str  # without pointer and array markers
    pointer: bool
    offset: int
    size: int
    dims: tuple[int, ...]


class Catalogue:
    """Struct layouts of one file: struct name → {field name → Field}."""

    def __init__(self, data: bytes, endian: str, pointer_size: int):
        self.pointer_size = pointer_size
        self.endian = endian
        pos = 0

        def expect(tag: bytes) -> None:
            nonlocal pos
            pos = (pos + 3) & ~3
            if data[pos:pos + 4] != tag:
                raise BlendError(f"type catalogue: expected {tag!r}")
            pos += 4

        def strings() -> list[str]:
            nonlocal pos
            (n,) = struct.unpack_from(endian + "i", data, pos)
            pos += 4
            out = []
            for _ in range(n):
                end = data.index(b"\0", pos)
                out.append(data[pos:end].decode("latin-1"))
                pos = end + 1
            return out

        if data[:4] != b"SDNA":
            raise BlendError("type catalogue: no SDNA")
        pos = 4
        expect(b"NAME")
        names = strings()
        expect(b"TYPE")
        types = strings()
        expect(b"TLEN")
        lengths = struct.unpack_from(f"{endian}{len(types)}h", data, pos)
        pos += 2 * len(types)
        expect(b"STRC")
        (count,) = struct.unpack_from(endian + "i", data, pos)
        pos += 4
        self.struct_names: list[str] = []
        self.structs: dict[str, dict[str, Field]] = {}
        self.sizes = dict(zip(types, lengths, strict=True))
        for _ in range(count):
            t, n = struct.unpack_from(endian + "hh", data, pos)
            pos += 4
            fields: dict[str, Field] = {}
            offset = 0
            for _ in range(n):
                ft, fn = struct.unpack_from(endian + "hh", data, pos)
                pos += 4
                raw = names[fn]
                dims = tuple(int(d) for d in _ARRAY.findall(raw))
                pointer = raw.startswith("*") or raw.startswith("(*")
                bare = raw.lstrip("*(").split("[")[0].split(")")[0]
                one = pointer_size if pointer else lengths[ft]
                size = one
                for d in dims:
                    size *= d
                fields[bare] = Field(types[ft], bare, pointer, offset, size, dims)
                offset += size
            self.struct_names.append(types[t])
            self.structs[types[t]] = fields

    def field(self, struct_name: str, path: str) -> Field:
        """The field at a dotted path (``"r.sfra"``), with its offset from the struct."""
        offset, current = 0, struct_name
        parts = path.split(".")
        for i, part in enumerate(parts):
            try:
                f = self.structs[current][part]
            except KeyError:
                raise KeyError(f"{struct_name}.{path}") from None
            offset += f.offset
            if i == len(parts) - 1:
                return Field(f.type, f.name, f.pointer, offset, f.size, f.dims)
            current = f.type
        raise KeyError(path)

    def has(self, struct_name: str, path: str) -> bool:
        try:
            self.field(struct_name, path)
            return True
        except KeyError:
            return False


class Reader:
    """Typed reads of one struct instance inside a block."""

    SCALARS = {"char": "b", "uchar": "B", "short": "h", "ushort": "H", "int": "i",
               "float": "f", "double": "d", "int64_t": "q", "uint64_t": "Q", "int8_t": "b",
               "uint8_t": "B", "int16_t": "h", "uint16_t": "H", "int32_t": "i",
               "uint32_t": "I"}

    def __init__(self, cat: Catalogue, struct_name: str, data: bytes, base: int = 0):
        self.cat, self.struct, self.data, self.base = cat, struct_name, data, base

    def get(self, path: str, default=None):
        try:
            f = self.cat.field(self.struct, path)
        except KeyError:
            return default
        start = self.base + f.offset
        if start + f.size > len(self.data):
            return default
        if f.pointer:
            fmt = "Q" if self.cat.pointer_size == 8 else "I"
            return struct.unpack_from(self.cat.endian + fmt, self.data, start)[0]
        if f.type == "char" and f.dims:
            raw = self.data[start:start + f.size]
            return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        code = self.SCALARS.get(f.type)
        if code is None:
            return default
        return struct.unpack_from(self.cat.endian + code, self.data, start)[0]


# --- the file ---------------------------------------------------------------------------

@dataclass
class Block:
    code: bytes
    old: int
    sdna: int
    count: int
    data: bytes


def _open(path: pathlib.Path):
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == GZIP_MAGIC:
        return gzip.open(path, "rb")
    if magic == ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError:
            raise BlendError("the file is compressed with zstd; save it without "
                             "compression (File → Save As, Compress off)") from None
        # Blender writes several frames (for seeking): read across them.
        return zstandard.ZstdDecompressor().stream_reader(
            open(path, "rb"), read_across_frames=True, closefd=True)
    return open(path, "rb")


def read_blocks(path: pathlib.Path, keep=lambda code: True) -> tuple[int, list[Block], Catalogue]:
    """(version, blocks whose code ``keep`` accepts, catalogue). Other blocks are
    skipped without being read into memory (a file may hold hundreds of MB of packed
    textures)."""
    with _open(path) as f:
        head = f.read(12)
        if head[:7] != b"BLENDER":
            raise BlendError("not a .blend file (it does not start with 'BLENDER')")
        if head[7:8] in (b"_", b"-"):
            pointer = 4 if head[7:8] == b"_" else 8
            endian = {b"v": "<", b"V": ">"}.get(head[8:9])
            if endian is None or not head[9:12].isdigit():
                raise BlendError("not a .blend file (bad header)")
            version = int(head[9:12])
            bhead = struct.Struct(endian + ("4siIii" if pointer == 4 else "4siQii"))
            order = ("code", "len", "old", "sdna", "nr")
        else:
            rest = f.read(5)
            header = head + rest
            if header[7:9] != b"17" or header[9:10] != b"-" or header[12:13] != b"v":
                raise BlendError("not a .blend file (unknown header)")
            if header[10:12] != b"01" or not header[13:17].isdigit():
                raise BlendError("unsupported .blend file format version")
            pointer, endian, version = 8, "<", int(header[13:17])
            bhead = struct.Struct("<4siQqq")
            order = ("code", "sdna", "old", "len", "nr")
        blocks: list[Block] = []
        catalogue = None
        while True:
            raw = f.read(bhead.size)
            if len(raw) < 8:
                raise BlendError("truncated .blend file (no ENDB block)")
            if raw[:4] == b"ENDB":
                break
            if len(raw) < bhead.size:
                raise BlendError("truncated .blend file")
            h = dict(zip(order, bhead.unpack(raw), strict=True))
            code = h["code"].rstrip(b"\0")
            length = h["len"]
            if length < 0:
                raise BlendError("corrupt .blend file (negative block length)")
            if code == b"DNA1":
                catalogue = Catalogue(f.read(length), endian, pointer)
            elif keep(code):
                data = f.read(length)
                if len(data) < length:
                    raise BlendError("truncated .blend file")
                blocks.append(Block(code, h["old"], h["sdna"], h["nr"], data))
            else:
                _skip(f, length)
        if catalogue is None:
            raise BlendError("corrupt .blend file (no type catalogue)")
        return version, blocks, catalogue


def _skip(f, n: int) -> None:
    try:
        f.seek(n, io.SEEK_CUR)
    except (OSError, io.UnsupportedOperation):
        while n > 0:
            chunk = f.read(min(n, 1 << 20))
            if not chunk:
                raise BlendError("truncated .blend file") from None
            n -= len(chunk)


def _fps(r: Reader) -> float:
    fps, base = r.get("r.frs_sec", 24) or 24, r.get("r.frs_sec_base", 1.0) or 1.0
    return round(fps / base, 3) if fps > 0 and base > 0 else 24.0


def _id_name(r: Reader) -> str:
    return (r.get("id.name") or "")[2:]


WANTED = {b"SC", b"OB", b"GLOB", b"ME", b"DATA"}


def inspect(path: str | pathlib.Path) -> BlendInfo:
    """Scenes, cameras, frame ranges and resolutions of a ``.blend`` (the files it reads
    are traced by ``deps``)."""
    path = pathlib.Path(path)
    version, blocks, cat = read_blocks(path, keep=lambda c: c in WANTED)

    def struct_of(b: Block) -> str:
        if not 0 <= b.sdna < len(cat.struct_names):
            raise BlendError("corrupt .blend file (bad struct index)")
        return cat.struct_names[b.sdna]

    by_address: dict[int, Block] = {b.old: b for b in blocks}
    objects: dict[int, tuple[str, int]] = {}
    for b in blocks:
        if b.code == b"OB" and struct_of(b) == "Object":
            r = Reader(cat, "Object", b.data)
            objects[b.old] = (_id_name(r), r.get("type", -1))
    cameras = sorted(name for name, kind in objects.values() if kind == OB_CAMERA)

    scenes = []
    for b in blocks:
        if b.code != b"SC" or struct_of(b) != "Scene":
            continue
        r = Reader(cat, "Scene", b.data)
        percentage = r.get("r.size", 100) or 100
        camera = objects.get(r.get("camera") or 0)
        scenes.append(SceneInfo(
            name=_id_name(r), frame_start=r.get("r.sfra", 1), frame_end=r.get("r.efra", 1),
            frame_current=r.get("r.cfra", 1),
            width=max(1, r.get("r.xsch", 0) * percentage // 100),
            height=max(1, r.get("r.ysch", 0) * percentage // 100),
            camera=camera[0] if camera else None,
            objects=len(objects), fps=_fps(r)))

    active = None
    for b in blocks:
        if b.code == b"GLOB" and struct_of(b) == "FileGlobal":
            sc = by_address.get(Reader(cat, "FileGlobal", b.data).get("curscene") or 0)
            if sc is not None and sc.code == b"SC":
                active = _id_name(Reader(cat, "Scene", sc.data))

    polygons = 0
    for b in blocks:
        if b.code == b"ME" and struct_of(b) == "Mesh":
            r = Reader(cat, "Mesh", b.data)
            polygons += max(0, r.get("faces_num", r.get("totpoly", 0)) or 0)

    return BlendInfo(version, scenes, active, cameras, polygons, len(objects))

