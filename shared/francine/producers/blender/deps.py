"""What a ``.blend`` reads from disk, traced with Blender Asset Tracer (BAT).

BAT (PyPI ``blender-asset-tracer``) is Blender Studio's own dependency tracer, the one
Flamenco packs jobs with. It reads ``.blend`` files without Blender, from 2.7x to 5.x,
and knows every kind of external file Blender reads: libraries (followed recursively,
and read from the ``name`` field that holds the relative path in every file version),
images with their UDIM tiles and sequences, movie clips, fonts (not the built-in one),
IES lights, Alembic/USD caches, OpenVDB volumes, point caches, mesh caches
(``.mdd``/``.pc2``), multires displacement (``.btx``), ocean caches and geometry-nodes
bake folders. Writing that again would mean following each Blender version's DNA by
hand; BAT's own test suite already covers the old formats. Two things are added here:

- an Alembic/USD cache file marked as a sequence is a sequence (BAT reports only its
  first file when the cache file is reached directly rather than through a modifier);
- the sequencer's strips and sounds are not dependencies: the farm renders with the
  sequencer off, so a missing sound must not refuse a render.

Two users: the api records each uploaded ``.blend``'s own dependencies (``of_file``;
libraries are separate resources with their own record), and the CLI packs a ``.blend``
with everything it reads, wherever it lies on the user's disk (``pack``): files under
the common folder of the ``.blend`` and its relative dependencies keep their relative
names, absolute paths are rewritten into ``_outside_project/`` of that folder by BAT's
packer (in a copy of each ``.blend`` that names them), and nothing but the rewritten
``.blend`` files is copied.
"""

from __future__ import annotations

import fnmatch
import os
import pathlib
import posixpath
import string
import tempfile
from dataclasses import dataclass, field

from blender_asset_tracer import blendfile, trace
from blender_asset_tracer import pack as bat_pack
from blender_asset_tracer.pack import PathAction
from blender_asset_tracer.trace import blocks2assets, file_sequence

#: What each BAT block type holding a path is, for messages.
KINDS = {
    "Image": "image", "Library": "library", "VFont": "font", "MovieClip": "movie clip",
    "CacheFile": "cache file", "Volume": "volume", "PointCache": "point cache",
    "MeshCacheModifierData": "mesh cache", "OceanModifierData": "ocean cache",
    "NodesModifierData": "geometry-nodes bake", "NodesModifierBake": "geometry-nodes bake",
    "CustomDataExternal": "multires displacement", "NodeShaderTexIES": "IES light",
    "bSound": "sound", "Strip": "sequencer strip", "Sequence": "sequencer strip",
}
#: Not dependencies: the farm renders with the sequencer off.
IGNORED_KINDS = {"sound", "sequencer strip"}
#: Caches that Blender fills itself when they are empty (it simulates instead of
#: reading): an empty or absent folder is not a missing file.
OPTIONAL_WHEN_EMPTY = {"point cache", "geometry-nodes bake"}
#: Where the packer puts files that lie outside the project's folder (BAT's name).
OUTSIDE = "_outside_project"


@dataclass(frozen=True)
class Dependency:
    kind: str  # "image", "library", "point cache", ...
    owner: str  # the data-block (or modifier) that reads it, for messages
    path: str  # as the file stores it: "//textures/wood.png", "/abs/x.exr", "//t.<UDIM>.png"
    sequence: bool  # several files: an image sequence, UDIM tiles, a cache's frames


class MissingFiles(ValueError):
    """Files a ``.blend`` reads that are not on disk (``missing``: local paths)."""

    def __init__(self, blend: pathlib.Path, missing: list[tuple[Dependency, pathlib.Path]]):
        self.missing = missing
        lines = "; ".join(f"{d.kind} {d.owner!r} reads {d.path!r} ({p})" for d, p in missing)
        super().__init__(
            f"{blend.name}: {len(missing)} file(s) it reads do not exist: {lines}. Put them "
            "back, or fix the paths in Blender (File → External Data → Report Missing "
            "Files / Find Missing Files), or pack them (File → External Data → Pack "
            "Resources)")


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)


def _usage_dependency(usage) -> Dependency | None:
    """The dependency a BAT block usage stands for, or None for what is no dependency."""
    kind = KINDS.get(usage.block.dna_type_name, usage.block.dna_type_name)
    if kind in IGNORED_KINDS:
        return None
    path = _text(bytes(usage.asset_path))
    if not path:
        return None
    owner = _text(usage.block_name).split("\0")[0]
    if owner[:2].isupper() and owner[:2].isalpha() and "." not in owner[:2]:
        owner = owner[2:]  # an ID name carries its two-letter type code
    return Dependency(kind, owner, path, usage.is_sequence or _cache_sequence(usage))


def _cache_sequence(usage) -> bool:
    if usage.block.dna_type_name != "CacheFile":
        return False
    return bool(usage.block.get(b"is_sequence", default=False))


def of_file(path: str | os.PathLike) -> list[Dependency]:
    """The files one ``.blend`` reads itself, in the order found, each once; the files
    of the libraries it links are theirs. Packed files are not dependencies."""
    bfile = blendfile.BlendFile(pathlib.Path(path))
    try:
        found: dict[tuple[str, str], Dependency] = {}
        for block in trace.asset_holding_blocks(bfile.blocks):
            for usage in blocks2assets.iter_assets(block):
                dep = _usage_dependency(usage)
                if dep is not None:
                    found.setdefault((dep.kind, dep.path), dep)
        return list(found.values())
    finally:
        bfile.close()


def resolve(blend_name: str, stored: str) -> str | None:
    """The session resource name that a path stored in the file refers to, or None if
    it is not a relative (``//``) path or climbs out of the session's resources.

    ``scenes/shot.blend`` with ``//../textures/wood.png`` → ``textures/wood.png``.
    """
    if not stored.startswith("//"):
        return None
    rel = stored[2:].replace("\\", "/")
    base = posixpath.dirname(blend_name)
    joined = posixpath.normpath(posixpath.join(base, rel)) if base else posixpath.normpath(rel)
    if joined.startswith("../") or joined == ".." or joined.startswith("/") or joined == ".":
        return None
    return joined


def sequence_pattern(name: str) -> str:
    """A glob over the resource names of a sequence whose stored path resolved to
    ``name``: UDIM tiles (``<UDIM>``, ``<UVTILE>``), numbered frames (the trailing digits
    of the stem, as BAT and Blender take them), a glob BAT made (point caches), or a
    folder (ocean caches, geometry-nodes bakes)."""
    folder, base = posixpath.split(name)
    escaped = "".join(f"[{c}]" if c in "*?[" else c for c in base)
    if "<UDIM>" in base or "<UVTILE>" in base:
        pattern = escaped.replace("<UDIM>", "*").replace("<UVTILE>", "*")
    elif "*" in base:
        pattern = base  # BAT's own glob
    elif base.endswith("/") or "." not in base:
        pattern = escaped.rstrip("/") + "/*"
    else:
        stem, dot, suffix = base.rpartition(".")
        digits = stem.rstrip(string.digits)
        pattern = (escaped if digits == stem
                   else "".join(f"[{c}]" if c in "*?[" else c for c in digits) + "*." + suffix)
    return posixpath.join(folder, pattern) if folder else pattern


def matching(pattern: str, names) -> list[str]:
    """The names a sequence pattern covers (a folder pattern covers its subfolders)."""
    folder_pattern = pattern.endswith("/*")
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)
            or (folder_pattern and fnmatch.fnmatchcase(n, pattern[:-1] + "*"))]


@dataclass
class Pack:
    """A ``.blend`` and everything it reads, as session resources."""

    root: pathlib.Path  # the project's folder on the user's disk
    blend: str  # the resource name of the .blend
    files: dict[str, pathlib.Path]  # resource name → the file to upload
    remapped: list[tuple[str, str]] = field(default_factory=list)  # (path in file, name)
    _tmp: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Pack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def project_root(blend: pathlib.Path) -> pathlib.Path:
    """The folder holding the ``.blend`` and every file it (or a library) reads by a
    relative path that exists: ``//../textures/x.png`` widens it to the parent."""
    folders = [blend.parent]
    for usage in trace.deps(blend):
        if _usage_dependency(usage) is None or not usage.asset_path.is_blendfile_relative():
            continue
        target = pathlib.Path(os.path.normpath(usage.abspath))
        if target.exists() or target.parent.exists():
            folders.append(target if target.is_dir() else target.parent)
    return pathlib.Path(os.path.commonpath([str(f) for f in folders]))


def pack(blend: str | os.PathLike) -> Pack:
    """Everything ``blend`` reads, named as resources under the project's folder; files
    named by an absolute path are renamed under ``_outside_project/`` and the ``.blend``
    files that name them are rewritten (in a temporary folder: ``Pack.close``).

    Raises ``MissingFiles`` naming every file that is not there, before anything is
    copied; packed files and empty simulation caches are not missing."""
    blend = pathlib.Path(os.path.abspath(blend))
    try:
        root = project_root(blend)
        packer = _ManifestPacker(blend, root)
        try:
            packer.strategise()
            if packer.missing:
                raise MissingFiles(blend, packer.missing)
            tmp = tempfile.TemporaryDirectory(prefix="francine-pack-")
            packer.rewrite_into = pathlib.Path(tmp.name)
            packer.execute()
            result = Pack(root, packer.name_of(packer.output_path), {}, [], tmp)
            result.files = dict(sorted(packer.manifest.items()))
            result.remapped = sorted(packer.remapped())
            return result
        finally:
            packer.close()
    finally:
        blendfile.close_all_cached()


class _ManifestPacker(bat_pack.Packer):
    """BAT's packer that records where each file goes instead of copying it (only
    the rewritten ``.blend`` files are written), and that skips what the farm does
    not read."""

    def __init__(self, blend: pathlib.Path, root: pathlib.Path):
        self.virtual_target = root / ".francine-pack"
        super().__init__(blend, root, str(self.virtual_target))
        self.manifest: dict[str, pathlib.Path] = {}
        self.missing: list[tuple[Dependency, pathlib.Path]] = []
        self.rewrite_into: pathlib.Path | None = None

    def name_of(self, packed: pathlib.PurePath) -> str:
        return pathlib.PurePath(packed).relative_to(self.virtual_target).as_posix()

    def _visit_asset(self, asset_path, usage):
        dep = _usage_dependency(usage)
        if dep is None:
            return
        if dep.sequence and not usage.is_sequence:  # a cache file's frames
            usage.is_sequence = True
            return self._visit_sequence(asset_path, usage)
        if not usage.is_sequence and not asset_path.exists():
            self.missing.append((dep, asset_path))
            return
        return super()._visit_asset(asset_path, usage)

    def _visit_sequence(self, asset_path, usage):
        dep = _usage_dependency(usage)
        if dep is None:
            return
        try:
            present = any(p.exists() for p in file_sequence.expand_sequence(asset_path))
        except file_sequence.DoesNotExist:
            present = False
        if not present:
            if dep.kind not in OPTIONAL_WHEN_EMPTY:
                self.missing.append((dep, asset_path))
            return
        return super()._visit_asset(asset_path, usage)

    def remapped(self) -> list[tuple[str, str]]:
        out = []
        for act in self._actions.values():
            if act.path_action == PathAction.FIND_NEW_LOCATION and act.usages:
                stored = _text(bytes(act.usages[0].asset_path))
                out.append((stored, self.name_of(act.new_path)))
        return out

    def execute(self) -> None:
        if self.rewrite_into is not None:
            self._rewrite_in = self.rewrite_into
        self._rewrite_paths()
        for asset_path, action in self._actions.items():
            self._copy_asset_and_deps(asset_path, action)

    def _send_to_target(self, asset_path, target, may_move=False):
        self.manifest[self.name_of(target)] = pathlib.Path(asset_path)
