"""``francine render scene.blend``: upload a Blender file with what it references, render
one frame or a range (one execution: an animation), one progress bar over all of them,
each frame's image written as soon as it is done.

Everything that can be checked on this machine is checked before anything is created on
the server (the output's format and folder; the scene, camera, frames and size against
the file, read without Blender), and whatever this command creates, it cancels and
deletes again when the api refuses a part of the render.

The files a ``.blend`` reads are found without Blender, by Blender Asset Tracer
(``producers.blender.deps``): libraries recursively, images with their sequences and
UDIM tiles, caches, volumes, fonts, bakes; wherever they lie, they are uploaded under
the project's folder that holds them all, and absolute paths are remapped.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import requests

from francine.domain.records import FINAL
from francine.producers.blender import blendfile, deps
from francine.producers.blender.scene import MAX_EDGE
from francine.tools.client import ApiError, Client, attach_file
from francine.tools.terminal import (
    CliError,
    Interrupted,
    WaveProgress,
    check_writable,
    estimate_text,
    explain,
    output_format,
)

#: One part of ``--frames``: a frame, or a range with "-" or "..".
FRAME_PART = re.compile(r"(?P<first>-?\d+)\s*(?:(?:-|\.\.)\s*(?P<last>-?\d+))?")
FRAME_FORMS = "a frame (5), a range (1-24 or 1..24), or a comma list of them (1-3,10)"
#: ``--size``: WIDTHxHEIGHT.
SIZE = re.compile(r"(\d+)\s*[xX×]\s*(\d+)", re.ASCII)
#: ``--resolution-percentage``: up to ten times the file's size (and the scene's edge).
MAX_PERCENTAGE = 1000
#: Seconds between two looks at the executions of a render.
POLL_S = 0.5


def dependencies(blend: pathlib.Path) -> deps.Pack:
    """The file and everything it reads, wherever it lies on this machine, named as the
    session's resources (``deps.pack``: Blender Asset Tracer); one line on stderr per
    file named by an absolute path, which is uploaded under ``_outside_project/`` and
    remapped in the uploaded copy of the ``.blend``. Every missing file is named in one
    error, before anything is uploaded."""
    try:
        packed = deps.pack(blend)
    except deps.MissingFiles as e:
        raise CliError(str(e)) from None
    for stored, name in packed.remapped:
        print(f"remapped {stored} → {name}", file=sys.stderr)
    return packed


def frame_ranges(spec: str) -> list[tuple[int, int]]:
    """``"5"``, ``"1-24"``, ``"1..24"`` or a comma list of them (``"1-3,10"``) → (first,
    last) ranges; frames may be negative, as in Blender (``-5--1``)."""
    ranges = []
    for part in spec.split(","):
        match = FRAME_PART.fullmatch(part.strip())
        if match is None:
            raise CliError(f"--frames {spec!r}: expected {FRAME_FORMS}")
        first = int(match["first"])
        last = first if match["last"] is None else int(match["last"])
        if last < first:
            raise CliError(f"--frames {spec!r}: {part.strip()} ends before it starts")
        ranges.append((first, last))
    return ranges


def parse_frames(spec: str) -> list[int]:
    """The frames of ``--frames``, in its order, each once (one image per frame: a frame
    named twice would be rendered twice into one file)."""
    frames: list[int] = []
    for first, last in frame_ranges(spec):
        frames.extend(range(first, last + 1))
    seen: set[int] = set()
    for frame in frames:
        if frame in seen:
            raise CliError(f"--frames {spec!r}: frame {frame} is named twice")
        seen.add(frame)
    return frames


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` → (1920, 1080), each side within what the blender scene takes."""
    match = SIZE.fullmatch(text.strip())
    if match is None or not all(1 <= int(side) <= MAX_EDGE for side in match.groups()):
        raise CliError(f"--size {text}: expected WIDTHxHEIGHT in pixels, each 1 to "
                       f"{MAX_EDGE} (e.g. 1920x1080)")
    return int(match[1]), int(match[2])


def file_resolution(blend: pathlib.Path, scene: str) -> tuple[int, int]:
    """The scene's resolution before its own percentage (``inspect`` reports the size
    after it): ``--resolution-percentage`` replaces the file's percentage, as Blender's
    setting of that name does, rather than scaling an already scaled size."""
    _, blocks, cat = blendfile.read_blocks(blend, keep=lambda code: code == b"SC")
    for block in blocks:
        if cat.struct_names[block.sdna] != "Scene":
            continue
        r = blendfile.Reader(cat, "Scene", block.data)
        if (r.get("id.name") or "")[2:] == scene:
            return r.get("r.xsch", 0), r.get("r.ysch", 0)
    raise CliError(f"{blend.name}: no scene {scene!r}")


def render_size(blend: pathlib.Path, scene: str, size: str | None,
                percentage: int | None) -> tuple[int, int] | None:
    """(width, height) to render, or None for the file's own: ``--size``, else the
    file's resolution, scaled by ``--resolution-percentage`` (rounded down, as Blender
    does)."""
    if percentage is not None and not 1 <= percentage <= MAX_PERCENTAGE:
        raise CliError(f"--resolution-percentage {percentage}: expected 1 to "
                       f"{MAX_PERCENTAGE}")
    if size is None and percentage is None:
        return None
    width, height = parse_size(size) if size else file_resolution(blend, scene)
    if percentage is None:
        return width, height
    scaled = max(1, width * percentage // 100), max(1, height * percentage // 100)
    if max(scaled) > MAX_EDGE:
        raise CliError(f"--resolution-percentage {percentage} of {width}x{height} is "
                       f"{scaled[0]}x{scaled[1]}: at most {MAX_EDGE} pixels a side")
    return scaled


def choose_scene(info: blendfile.BlendInfo, blend: pathlib.Path,
                 name: str | None) -> blendfile.SceneInfo:
    """The scene ``--scene`` names (or the file's active one), as the api will choose."""
    names = [s.name for s in info.scenes]
    if not names:
        raise CliError(f"{blend.name} has no scene")
    try:
        return info.scene(name)
    except KeyError:
        raise CliError(f"--scene {name}: no such scene in {blend.name}; its scenes are "
                       f"{', '.join(names)}") from None


def check_camera(info: blendfile.BlendInfo, blend: pathlib.Path,
                 scene: blendfile.SceneInfo, camera: str | None) -> None:
    cameras = ", ".join(info.cameras) or "none"
    if camera is not None and camera not in info.cameras:
        raise CliError(f"--camera {camera}: no such camera object in {blend.name}; its "
                       f"cameras are {cameras}")
    if camera is None and not scene.camera:
        raise CliError(f"scene {scene.name!r} of {blend.name} has no camera: name one with "
                       f"--camera (the file's cameras: {cameras})")


def check_frames(spec: str, scene: blendfile.SceneInfo) -> list[int]:
    """The frames of ``--frames``, all within the scene's range (checked on the ranges,
    before a long one is spelled out)."""
    for first, last in frame_ranges(spec):
        for frame in (first, last):
            if not scene.frame_start <= frame <= scene.frame_end:
                raise CliError(f"--frames {spec}: frame {frame} is outside scene "
                               f"{scene.name!r}'s range {scene.frame_start}-"
                               f"{scene.frame_end}")
    return parse_frames(spec)


def frame_output(output: pathlib.Path, frame: int) -> pathlib.Path:
    return output.with_name(f"{output.stem}_{frame:04d}{output.suffix}")


@dataclass
class Job:
    """A render checked against the file and the disk: what the session is made of and
    where each image goes (frame None: the one image of a render without --frames)."""

    scene: dict
    fmt: str
    pack: deps.Pack  # the files to upload; closed when the render ends
    outputs: list[tuple[int | None, pathlib.Path]]


def prepare(blend: pathlib.Path, output: pathlib.Path, fmt: str | None,
            samples: int | None = None, frames: str | None = None, denoise: bool = False,
            scene_name: str | None = None, camera: str | None = None,
            size: str | None = None, percentage: int | None = None) -> Job:
    """Every check the api or the end of the render would otherwise make, made before
    anything exists on the server: the output's format and folder, the scene, camera,
    frames and size against the file (read without Blender), and the files it reads."""
    if not blend.is_file():
        raise CliError(f"no such .blend file: {blend}")
    fmt = output_format(output, fmt)
    try:
        info = blendfile.inspect(blend)
    except blendfile.BlendError as e:
        raise CliError(f"{blend}: {e}") from None
    chosen = choose_scene(info, blend, scene_name)
    check_camera(info, blend, chosen, camera)
    wanted: list[int | None] = [None]
    if frames is not None:
        wanted = [*check_frames(frames, chosen)]
    resolution = render_size(blend, chosen.name, size, percentage)
    outputs = [(f, output if f is None else frame_output(output, f)) for f in wanted]
    for _, path in outputs:
        check_writable(path)
    packed = dependencies(blend)  # last: it writes the .blend's rewritten copy
    scene: dict = {"blend": packed.blend, "denoise": denoise}
    if samples is not None:
        scene["samples"] = samples
    if scene_name:
        scene["scene"] = scene_name
    if camera:
        scene["camera"] = camera
    if resolution:
        scene["width"], scene["height"] = resolution
    return Job(scene, fmt, packed, outputs)


# --- on the server ----------------------------------------------------------------------

@dataclass
class Started:
    """The execution this command created, with its last known status, and where each
    image goes (an animation: one file per frame)."""

    id: str
    outputs: dict[int | None, pathlib.Path]
    status: dict

    def __str__(self) -> str:
        return f"execution {self.id}"

    @property
    def output(self) -> pathlib.Path:
        return next(iter(self.outputs.values()))


@dataclass
class Run:
    """What this command has made on the server and on disk so far: what a refusal, a
    failure or Ctrl-C must undo or report."""

    sid: str | None = None
    started: list[Started] = field(default_factory=list)
    written: list[pathlib.Path] = field(default_factory=list)


@contextlib.contextmanager
def held_interrupts():
    """Ctrl-C during a request that creates something takes effect when the request
    returns, so that what it created is known and can be cancelled. A second Ctrl-C
    does not wait."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield  # Ctrl-C does not raise here (ignored, or someone else's): nothing to hold
        return
    pressed: list[int] = []

    def hold(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if pressed:
            raise KeyboardInterrupt


def render_blend(client: Client, blend: pathlib.Path, output: pathlib.Path, parallel: int,
                 tile: int | None, fmt: str | None, samples: int | None = None,
                 frames: str | None = None, denoise: bool = False,
                 scene_name: str | None = None, camera: str | None = None,
                 size: str | None = None, percentage: int | None = None,
                 upload=None, video: pathlib.Path | None = None,
                 estimate: bool = False,
                 fields: dict | None = None) -> list[tuple[pathlib.Path, dict]]:
    """Render ``blend`` (one image, or one per frame of ``frames``, and the preview
    video of the frames to ``video``); returns each file written with the execution's
    final status. ``upload(client, sid, name, path)`` attaches a file (by default one
    request, or an upload session for a file too large for one). ``fields``: more
    fields of the request (``client.wave_fields``: a noise target, caps, a seed).

    A refusal or a failure cancels what this command started and deletes its session;
    Ctrl-C cancels what it started and keeps the session, to look at."""
    job = prepare(blend.resolve(), output, fmt, samples, frames, denoise, scene_name,
                  camera, size, percentage)
    if video is not None:
        if frames is None:
            raise CliError("--video needs --frames: a video of one image is no video")
        if video.suffix.lower() != ".mp4":
            raise CliError(f"--video {video}: the preview video is an MP4 (.mp4)")
        check_writable(video)
    run = Run()
    try:
        with held_interrupts():
            run.sid = client.create_session("blender", job.scene, job.fmt)["id"]
        for name, path in job.pack.files.items():
            (upload or attach_file)(client, run.sid, name, path)
        job.pack.close()
        if estimate:  # a price; the session made for it goes again
            frames = [f for f, _ in job.outputs if f is not None]
            quoted = client.estimate(run.sid, parallel, tile, **(fields or {}),
                                     **({"frames": frames} if frames else {}))
            print(estimate_text(quoted))
            print(abandon(client, run), file=sys.stderr)
            return []
        start(client, run, job, parallel, tile, fields or {})
        collect(client, run)
        if video is not None:
            video.write_bytes(client.video(run.sid, run.started[0].id))
            run.written.append(video)
    except KeyboardInterrupt:
        raise stopped(client, run) from None
    except BaseException as e:
        if run.sid is None:
            raise
        undone = abandon(client, run)
        if isinstance(e, CliError | ApiError):
            raise CliError(f"{explain(e, None)}; {undone}") from None
        raise
    finally:
        job.pack.close()
    return [(path, run.started[0].status) for path in run.written]


def start(client: Client, run: Run, job: Job, parallel: int, tile: int | None,
          fields: dict | None = None) -> None:
    """One execution, of one image or of every frame; its id said as soon as it exists."""
    frames = [f for f, _ in job.outputs if f is not None]
    with held_interrupts():
        try:
            status = client.execute(run.sid, parallel=parallel, tile=tile, **(fields or {}),
                                    **({"frames": frames} if frames else {}))
        except ApiError as e:
            raise CliError(f"the api refused the render: {e.message} "
                           f"({e.status} {e.code})") from None
        run.started.append(Started(status["id"], dict(job.outputs), status))
    print(f"session {run.sid}  execution {status['id']}"
          + (f"  {len(frames)} frames" if frames else ""), file=sys.stderr, flush=True)


def collect(client: Client, run: Run) -> None:
    """Follow the execution to its end under one progress line; an animation's frames
    are written as each is done (``out_0001.exr`` while later frames render), not at
    the end. A frame that failed is reported and the others are written; the render
    fails if no image came back."""
    s = run.started[0]
    progress = WaveProgress()
    written: set[int] = set()
    while True:
        s.status = status = client.execution(run.sid, s.id)
        frames = status.get("frames")
        if frames is not None and frames["done"] > len(written):
            for item in client.frames(run.sid, s.id):
                if item["status"] == "done" and item["frame"] not in written:
                    path = s.outputs[item["frame"]]
                    path.write_bytes(client.result(run.sid, s.id, item["frame"]))
                    written.add(item["frame"])
                    run.written.append(path)
        progress(status, f"  {frames['done']}/{frames['total']} frames" if frames else "")
        if status["status"] in FINAL:
            break
        time.sleep(POLL_S)
    # Written as each frame was done, reported in the frames' order.
    rank = {path: i for i, (_, path) in enumerate(sorted(
        ((f, path) for f, path in s.outputs.items() if f is not None), key=lambda fp: fp[0]))}
    run.written.sort(key=lambda path: rank.get(path, len(rank)))
    print(file=sys.stderr)
    if status["status"] != "done":
        raise CliError(not_done(s, run.written))
    if frames is None:
        s.output.write_bytes(client.result(run.sid, s.id))
        run.written.append(s.output)
    elif frames["failed"]:
        failed = ", ".join(map(str, frames["failed_frames"]))
        print(f"warning: {frames['failed']} frame(s) failed and have no image: {failed}",
              file=sys.stderr)


def not_done(s: Started, written: list[pathlib.Path]) -> str:
    """Why an execution ended without an image, in words (a cancelled one has no error:
    someone or something else cancelled it)."""
    if s.status["status"] == "cancelled":
        why = (f"{s} was cancelled elsewhere (francine executions cancel, the viewer, or "
               "its session's deletion): no image")
    else:
        error = s.status.get("error") or {}
        why = f"{s} {s.status['status']}: {error.get('message') or 'no reason given'}"
    if written:
        why += f" (wrote {', '.join(map(str, written))} before that)"
    return why


def cancel_all(client: Client, run: Run) -> tuple[list[Started], list[Started]]:
    """Cancel every started execution not known to be over: (cancelled, not reachable)."""
    cancelled, failed = [], []
    for s in run.started:
        if s.status["status"] in FINAL:
            continue
        try:
            s.status = client.cancel(run.sid, s.id)
        except (ApiError, requests.RequestException):
            failed.append(s)
            continue
        if s.status["status"] == "cancelled":
            cancelled.append(s)
    return cancelled, failed


def listed(what: list[Started]) -> str:
    return ", ".join(map(str, what))


def abandon(client: Client, run: Run) -> str:
    """After a refusal or a failure: cancel what was started and delete the session made
    for this render, so that nothing runs and nothing is left behind. Returns what it
    did, for the message."""
    cancelled, _ = cancel_all(client, run)
    done = f"cancelled {listed(cancelled)}; " if cancelled else ""
    try:
        client.delete_session(run.sid)
    except (ApiError, requests.RequestException):
        return done + f"could not delete session {run.sid}: 'francine sessions rm {run.sid}'"
    return done + f"deleted session {run.sid}"


def stopped(client: Client, run: Run) -> Interrupted:
    """Ctrl-C: cancel what was started (the session stays, with its finished images),
    or delete a session that has nothing yet. Exit status 130, as a shell expects."""
    print(file=sys.stderr)
    if run.sid is None:
        return Interrupted("interrupted: nothing was created", exit_status=130)
    if not run.started:
        return Interrupted(f"interrupted before rendering; {abandon(client, run)}",
                           exit_status=130)
    cancelled, failed = cancel_all(client, run)
    words = [f"cancelled {listed(cancelled)}" if cancelled else "nothing was running"]
    if failed:
        words.append(f"could not cancel {listed(failed)}: stop it with " + ", ".join(
            f"'francine executions cancel {run.sid}/{s.id}'" for s in failed))
    if run.written:
        words.append(f"wrote {', '.join(map(str, run.written))}")
    words.append(f"session {run.sid} kept")
    return Interrupted("interrupted: " + "; ".join(words), exit_status=130)
