"""A Blender process: ``python -m francine.producers.blender.child FD PARENT``.

Started by ``isolation`` in the worker. It imports ``bpy`` first (so that a spare one is
warm), says so, then serves render requests from the worker over the socket ``FD``, one
at a time, until the worker closes it. It never leaves through Python's exit: Blender
frees everything on exit, and freeing some files crashes it (a 2.79 smoke cache makes
Blender 5.0 abort), so it ends with ``os._exit`` or is killed.

Its standard output and error are a file that the worker empties before each request:
what Blender says about that request (Cycles' reports of images it could not load, or
its last words before dying) is all there is in it.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import signal
import sys
import traceback
from multiprocessing.connection import Connection

#: Tests only: the blend (resource name) whose render makes this process abort, the
#: way a Blender crash does, so that the worker's handling of a crash can be tested.
ABORT_ENV = "FRANCINE_BLENDER_TEST_ABORT"
PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """Be killed when the worker dies, even while stopped between tasks; exit at once
    if it has died already."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def line_buffered() -> None:
    """Blender writes with C's stdio, fully buffered into a file: flush each line, so
    that a crash leaves its last lines in the file instead of in a lost buffer."""
    libc = ctypes.CDLL(None)
    stdout = ctypes.c_void_p.in_dll(libc, "stdout")
    libc.setvbuf(stdout, None, 1, 0)  # _IOLBF
    sys.stdout.reconfigure(line_buffering=True)


def serve(request: dict, workdir: pathlib.Path):
    """The reply to one request: ("ok", passes) or ("error", kind, field, message) with
    kind "scene" (a SceneError), "value" (a ValueError) or "failed" (anything else)."""
    from francine.domain.producer import SceneError, Tile
    from francine.producers.blender import render

    scene = request["scene"]
    try:
        if os.environ.get(ABORT_ENV) and os.environ[ABORT_ENV] == scene["blend"]:
            os.write(2, f"test abort: rendering {scene['blend']}\n".encode())
            os.abort()
        passes = render.render_passes(pathlib.Path(request["root"]), request["key"], scene,
                                      Tile(*request["tile"]), request["seeds"],
                                      workdir / "tile.exr")
        return ("ok", passes)
    except SceneError as e:
        return ("error", "scene", e.field, e.message)
    except ValueError as e:
        return ("error", "value", "", str(e))
    except Exception as e:  # noqa: BLE001 (the worker decides; this process carries on)
        traceback.print_exc()
        return ("error", "failed", "", f"{type(e).__name__}: {e}")


def main(argv: list[str]) -> None:
    fd, parent, workdir = int(argv[0]), int(argv[1]), pathlib.Path(argv[2])
    die_with(parent)
    line_buffered()
    conn = Connection(fd)
    import bpy  # noqa: F401 (the warm-up: a spare process has paid for it)

    from francine.producers.blender import render  # noqa: F401

    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the worker is gone or done with this file
        conn.send(serve(request, workdir))


if __name__ == "__main__":
    main(sys.argv[1:])
