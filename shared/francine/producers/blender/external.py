"""The files an open ``.blend`` reads for one frame, and which of them are missing.

Blender renders what it cannot read as magenta (a missing image), or as nothing (a
missing library, cache or volume), and carries on: an image that looks fine but is
wrong. Creating an execution checks the ``.blend``'s dependencies against the session's
resources (``scene.check_dependencies``), but only Blender knows which frame of an image
sequence, cache or volume sequence a given frame reads; so the Blender process checks,
before it renders a frame, that every file it will read for that frame exists:

- images: a file, each UDIM tile, or the frame of a sequence that each image user
  (texture node, image texture) reads, numbered as ``BKE_image_user_frame_get`` and
  ``BLI_path_sequence_decode/encode`` number it;
- libraries (and Blender's own verdict, ``is_missing``), movie clips (the frame of a
  sequence), fonts (not ``<builtin>``), Alembic/USD caches and OpenVDB volumes (the
  frame of a sequence, as ``BKE_cachefile_filepath_get`` and ``volume_sequence_frame``
  compute it);
- any other file ``bpy.utils.blend_paths`` lists (mesh caches, IES files...); not the
  folders of point caches and bakes, which Blender fills (or simulates) when empty.

Packed files are in the ``.blend`` and need nothing. Whether a file that exists could
also be decoded is what Cycles reports when it loads it: the worker reads those
reports after the render (``isolation``).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Iterator

from francine.domain.producer import SceneError

#: Image sources that read files, and those that read one file per frame or tile.
FILE_SOURCES = {"FILE", "SEQUENCE", "MOVIE", "TILED"}
UDIM_TOKENS = ("<UDIM>", "<UVTILE>")


def image_frame(frame_start: int, frame_offset: int, frame_duration: int, cyclic: bool,
                cfra: int) -> int:
    """The frame of an image sequence that an image user reads at scene frame ``cfra``
    (Blender's ``BKE_image_user_frame_get``)."""
    length = frame_duration
    if length == 0:
        return 0
    cfra = cfra - frame_start + 1
    if cyclic:
        cfra %= length  # Python's modulo is never negative
        if cfra == 0:
            cfra = length
    cfra = min(max(cfra, 0), length)
    framenr = min(cfra, frame_duration)
    if cyclic:
        framenr %= length
        if framenr == 0:
            framenr = length
    return framenr + frame_offset


def _stem_end(path: str) -> tuple[int, int]:
    """(start of the file name, end of its stem) in ``path``, as Blender splits them."""
    start = path.rfind("/") + 1
    dot = path.rfind(".", start)
    return start, dot if dot > start else len(path)


def _padded(number: int, width: int) -> str:
    """C's ``%.*d``: at least ``width`` digits (none at all for 0 with width 0)."""
    if number == 0 and width == 0:
        return ""
    return ("-" if number < 0 else "") + str(abs(number)).zfill(width)


def sequence_path(path: str, number: int) -> str:
    """File ``number`` of the image sequence ``path`` names: its stem's last run of
    digits replaced by the number, as wide as they were (``BLI_path_sequence_decode``
    and ``_encode``; a name without digits gets the number before its extension)."""
    start, end = _stem_end(path)
    digits = re.search(r"(\d+)\D*$", path[start:end])
    if digits is None:
        return path[:end] + _padded(max(0, number), 0) + path[end:]
    a, b = start + digits.start(1), start + digits.end(1)
    return path[:a] + _padded(max(0, number), b - a) + path[b:]


def frame_path(path: str, number: int) -> str:
    """File ``number`` of a cache or volume sequence: the digits that end the stem
    replaced, keeping their width (``BLI_path_frame_get``, ``_strip`` and
    ``BLI_path_frame``); unchanged if the stem does not end with digits."""
    start, end = _stem_end(path)
    digits = re.search(r"\d+$", path[start:end])
    if digits is None:
        return path
    a = start + digits.start()
    return path[:a] + _padded(number, end - a) + path[end:]


def udim_path(path: str, tile: int) -> str:
    """The file of UDIM tile ``tile`` (1001, 1002...) of a tiled image."""
    u, v = (tile - 1001) % 10 + 1, (tile - 1001) // 10 + 1
    return path.replace("<UDIM>", str(tile)).replace("<UVTILE>", f"u{u}_v{v}")


def volume_frame(volume, cfra: int) -> int | None:
    """The file number a volume sequence reads at ``cfra`` (``volume_sequence_frame``),
    or None where it reads none (outside a clipped sequence)."""
    duration = volume.frame_duration
    if duration == 0:
        return None
    frame = cfra - volume.frame_start + 1
    mode = volume.sequence_mode
    if mode == "CLIP" and not 1 <= frame <= duration:
        return None
    if mode == "EXTEND":
        frame = min(max(frame, 1), duration)
    elif mode == "REPEAT":
        frame %= duration
        frame = frame or duration
    elif mode == "PING_PONG":
        period = duration * 2 - 2
        if period > 0:
            frame %= period
            frame = frame or period
        if frame > duration:
            frame = duration * 2 - frame
    return frame + volume.frame_offset


def _abspath(path: str, owner) -> str:
    import bpy

    return os.path.normpath(bpy.path.abspath(path, library=owner.library))


def image_users() -> Iterator[tuple[object, object]]:
    """(image, image user) of every image texture in a node tree or texture: what
    decides which frame of a sequence (or which UDIM tile) a render reads."""
    import bpy

    trees = [bpy.data.node_groups]
    trees += [[x.node_tree] for coll in (bpy.data.materials, bpy.data.worlds,
                                         bpy.data.lights, bpy.data.textures)
              for x in coll if getattr(x, "node_tree", None) is not None]
    for group in trees:
        for tree in group:
            for node in tree.nodes:
                image = getattr(node, "image", None)
                user = getattr(node, "image_user", None)
                if image is not None and user is not None:
                    yield image, user
    for tex in bpy.data.textures:
        if getattr(tex, "image", None) is not None and hasattr(tex, "image_user"):
            yield tex.image, tex.image_user


def _packed(data) -> bool:
    return getattr(data, "packed_file", None) is not None or bool(
        getattr(data, "packed_files", None))


def image_files(cfra: int) -> Iterator[tuple[str, str, str]]:
    """(kind, data-block, absolute path) of each image file read at frame ``cfra``."""
    import bpy

    users: dict[str, list] = {}
    for image, user in image_users():
        users.setdefault(image.name_full, []).append(user)
    for image in bpy.data.images:
        if image.source not in FILE_SOURCES or not image.filepath or _packed(image):
            continue
        path = _abspath(image.filepath, image)
        if image.source == "TILED" and any(t in path for t in UDIM_TOKENS):
            for tile in image.tiles:
                yield "image", image.name_full, udim_path(path, tile.number)
        elif image.source == "SEQUENCE":
            # A sequence no image user reads (it has none here) is not read at all.
            for user in users.get(image.name_full, []):
                number = image_frame(user.frame_start, user.frame_offset,
                                     user.frame_duration, user.use_cyclic, cfra)
                yield "image", image.name_full, sequence_path(path, number)
        else:
            yield "image", image.name_full, path


def other_files(cfra: int) -> Iterator[tuple[str, str, str]]:
    """(kind, data-block, absolute path) of libraries, clips, fonts, caches, volumes."""
    import bpy

    for lib in bpy.data.libraries:
        if not _packed(lib) and not getattr(lib, "is_archive", False):
            path = os.path.normpath(bpy.path.abspath(lib.filepath, library=lib.parent))
            yield "library", lib.name_full, path
    for clip in bpy.data.movieclips:
        path = _abspath(clip.filepath, clip)
        start, end = _stem_end(path)
        first = re.search(r"(\d+)\D*$", path[start:end])
        if clip.source == "SEQUENCE" and first is not None:
            # Scene frames map to files from the one the clip names (get_sequence_filepath);
            # past the clip's end there is no file to read.
            if not 0 <= cfra - clip.frame_start < max(1, clip.frame_duration):
                continue
            path = sequence_path(path, int(first.group(1)) + cfra - clip.frame_start
                                 + clip.frame_offset)
        yield "movie clip", clip.name_full, path
    for font in bpy.data.fonts:
        if font.filepath and font.filepath != "<builtin>" and not _packed(font):
            yield "font", font.name_full, _abspath(font.filepath, font)
    for cache in bpy.data.cache_files:
        path = _abspath(cache.filepath, cache)
        if cache.is_sequence:
            path = frame_path(path, int(cache.frame) if cache.override_frame else cfra)
        yield "cache file", cache.name_full, path
    for volume in bpy.data.volumes:
        if not volume.filepath or _packed(volume):
            continue
        path = _abspath(volume.filepath, volume)
        if volume.is_sequence:
            number = volume_frame(volume, cfra)
            if number is None:
                continue
            path = frame_path(path, number)
        yield "volume", volume.name_full, path


def sequence_sources() -> set[str]:
    """Stored paths that stand for several files (sequences, tiles) or none that a
    render reads (sounds: the sequencer is off): ``blend_paths`` lists them as one."""
    import bpy

    paths = set()
    for coll, is_many in ((bpy.data.images, lambda i: i.source in ("SEQUENCE", "TILED")),
                          (bpy.data.movieclips, lambda c: c.source == "SEQUENCE"),
                          (bpy.data.cache_files, lambda c: c.is_sequence),
                          (bpy.data.volumes, lambda v: v.is_sequence),
                          (bpy.data.sounds, lambda s: True)):
        for data in coll:
            if data.filepath and is_many(data):
                paths.add(_abspath(data.filepath, data))
    return paths


def missing(root: pathlib.Path, cfra: int) -> list[str]:
    """What the open file reads at frame ``cfra`` and is not there, each once: as a
    resource name where it lies under ``root`` (the session's mirror), else as its
    path, with what reads it."""
    import bpy

    found: dict[str, str] = {}
    listed = set()
    for kind, owner, path in [*image_files(cfra), *other_files(cfra)]:
        listed.add(path)
        if not os.path.exists(path):
            found.setdefault(path, f"{kind} {owner!r}")
    for lib in bpy.data.libraries:
        path = os.path.normpath(bpy.path.abspath(lib.filepath, library=lib.parent))
        if getattr(lib, "is_missing", False) and path not in found:
            found[path] = f"library {lib.name_full!r}"
    skip = listed | sequence_sources()
    for path in bpy.utils.blend_paths(absolute=True, packed=False):
        if path.endswith(("/", os.sep)) or not os.path.splitext(path)[1]:
            continue  # a cache folder: Blender fills it, or simulates, when it is empty
        path = os.path.normpath(path)
        if path in skip or any(t in path for t in (*UDIM_TOKENS, "*", "#")):
            continue
        if not os.path.exists(path):
            found.setdefault(path, "data")
    return [f"{name_of(path, root)} ({what})" for path, what in sorted(found.items())]


def name_of(path: str, root: pathlib.Path) -> str:
    """The resource name of a local path under the session's mirror, else the path."""
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel.replace(os.sep, "/")


def check(root: pathlib.Path, blend: str, cfra: int) -> None:
    """Raise a ``SceneError`` naming every file the open ``blend`` reads at frame
    ``cfra`` that is not among the session's resources."""
    gone = missing(root, cfra)
    if gone:
        raise SceneError("blend", f"{blend} reads {len(gone)} file(s) at frame {cfra} that "
                                  f"are not among the session's resources: "
                                  f"{'; '.join(gone)}. Attach them under these names")
