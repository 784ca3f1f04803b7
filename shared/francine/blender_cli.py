"""``francine render scene.blend``: upload a Blender file with what it references, render
one frame or a range (one execution per frame), one progress bar over all of them.

The files a ``.blend`` reads are found without Blender, by the same inspection the api
does (``producers.blender.blendfile``): every path relative to the file (``//...``) that
is not packed is uploaded under that relative name, and linked libraries are followed.
"""

from __future__ import annotations

import pathlib
import sys

from francine.client import Client
from francine.producers.blender import blendfile
from francine.records import FINAL
from francine.uploads import attach_file

FORMATS = {".exr": "exr", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def dependencies(blend: pathlib.Path) -> dict[str, pathlib.Path]:
    """{resource name: local path} of the file and everything it reads by relative path."""
    root = blend.parent
    files = {blend.name: blend}
    todo = [blend.name]
    while todo:
        name = todo.pop()
        for ext in blendfile.inspect(root / name).external:
            if ext.packed:
                continue
            target = blendfile.resolve(name, ext.path)
            if target is None:
                raise ValueError(f"{name}: {ext.kind} {ext.id_name!r} reads {ext.path!r}, "
                                 "outside the folder of the .blend: make paths relative "
                                 "(File → External Data) or pack it")
            path = root / target
            if not path.is_file():
                raise ValueError(f"{name}: {ext.kind} {ext.id_name!r} reads {ext.path!r}, "
                                 f"but {path} does not exist")
            if target not in files:
                files[target] = path
                if ext.kind == "library":
                    todo.append(target)
    return files


def parse_frames(spec: str) -> list[int]:
    """``"1-24"``, ``"5"`` or ``"1-3,10"`` → frame numbers."""
    frames: list[int] = []
    for part in spec.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            a = int(first)
            b = int(last) if sep else a
        except ValueError:
            raise ValueError(f"--frames {spec!r}: expected e.g. 1-24 or 1,5,9") from None
        if b < a:
            raise ValueError(f"--frames {spec!r}: {b} < {a}")
        frames.extend(range(a, b + 1))
    return frames


def frame_output(output: pathlib.Path, frame: int) -> pathlib.Path:
    return output.with_name(f"{output.stem}_{frame:04d}{output.suffix}")


def render_blend(client: Client, blend: pathlib.Path, output: pathlib.Path, parallel: int,
                 tile: int | None, fmt: str | None, samples: int | None = None,
                 frames: str | None = None, denoise: bool = False,
                 scene_name: str | None = None, camera: str | None = None,
                 upload=None) -> list[dict]:
    """Render ``blend`` (one image, or one per frame of ``frames``); returns the final
    statuses. ``upload(client, sid, name, path)`` attaches a file (by default one
    request, or an upload session for a file too large for one)."""
    from francine.cli import progress_bar

    blend = blend.resolve()
    files = dependencies(blend)
    scene: dict = {"blend": blend.name, "denoise": denoise}
    if samples is not None:
        scene["samples"] = samples
    if scene_name:
        scene["scene"] = scene_name
    if camera:
        scene["camera"] = camera
    fmt = fmt or FORMATS.get(output.suffix.lower(), "png")
    sid = client.create_session("blender", scene, fmt)["id"]
    for name, path in files.items():
        (upload or attach_file)(client, sid, name, path)
    wanted = parse_frames(frames) if frames else [None]
    executions = []
    for frame in wanted:
        update = None if frame is None else {"frame": frame}
        executions.append(client.execute(sid, parallel=parallel, tile=tile, update=update))
    statuses: dict[str, dict] = {e["id"]: e for e in executions}

    def show() -> None:
        total = sum(s["tasks"]["total"] for s in statuses.values())
        done = sum(s["tasks"]["done"] for s in statuses.values())
        running = sum(s["tasks"]["running"] for s in statuses.values())
        finished = sum(s["status"] in FINAL for s in statuses.values())
        state = f"{finished}/{len(statuses)} frames"
        summary = {"progress": done / max(1, total), "status": "",
                   "tasks": {"done": done, "total": total, "running": running}}
        print(progress_bar(summary) + f"  {state}", end="", file=sys.stderr, flush=True)

    for e in executions:
        def track(status, eid=e["id"]):
            statuses[eid] = status
            show()

        final = client.wait(sid, e["id"], on_status=track)
        if final["status"] != "done":
            print(file=sys.stderr)
            raise SystemExit(f"execution {final['status']}: {final.get('error')}")
    print(file=sys.stderr)
    for frame, e in zip(wanted, executions, strict=True):
        path = output if frame is None else frame_output(output, frame)
        path.write_bytes(client.result(sid, e["id"]))
        if frame is not None:  # the caller names a single output itself
            print(f"wrote {path}")
    return [statuses[e["id"]] for e in executions]
