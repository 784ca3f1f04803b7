"""Blender in processes of its own: one per open ``.blend``, so that a file that crashes
Blender fails its own tasks and nothing else.

A worker instance renders the tasks of many sessions, one at a time. Blender aborts on
some files (freeing a 2.79 smoke cache makes Blender 5.0 abort with SIGABRT), and in
the worker's own process that killed every other session's task on the instance too.
So each opened file lives in a Blender process (``child``) of its own, at most one at a
time per instance: a task of the open file goes to its process, which keeps the file,
the scene's sync and its BVH (persistent data) from task to task; a task of another
file has the old process killed with SIGKILL (never asked to exit: Blender's exit frees
the file, which is what crashes) and takes a spare process. A process that dies during
a task fails that task with Blender's last words (the tail of its output, e.g. the
abort message) as a ``BlenderDied``: the worker counts it as a failed pass, replaced
with a fresh seed, so that a file that kills Blender every time ends its execution
through the failure budget with that message (the message names no process or local
path, so the poison rule sees the same error each time), while a crash that was
chance is retried.

Warm spares, not forks. ``import bpy`` costs ~0.4 s wall (0.5 CPU-s) on the 2-core
machine this was measured on; opening a small file then costs milliseconds. A spare
process that has imported ``bpy`` is started when the service starts (``warm``) and
again after each spare is taken, once that task has rendered (so that its import
does not compete with the render). Forking processes from one that imported ``bpy``
would be cheaper (3 ms) but is wrong: ``import bpy`` already runs five threads and
sets up Blender's task scheduler, a fork keeps only the forking thread, and the forked
Blender renders on one core (the demo scene took 1.5 s a render in a fork against
0.8 s in its parent, on 2 cores, pixels unchanged; on 16 cores it would be many times
slower). Spawned processes render at full speed.

No spinning between tasks. Cycles with persistent data keeps its threads after a
render, and one of TBB's can spin in ``sched_yield`` forever, a core per idle worker.
A process is stopped (SIGSTOP) whenever it has no request, the spare included, and
continued (SIGCONT) to serve one: idle Blender costs no CPU, whatever its threads do,
and keeps everything it has built. It is killed with the worker (``PR_SET_PDEATHSIG``),
stopped or not.

Never silently wrong: the Blender process checks the files it will read for the frame
(``external``); after each render the worker reads what Cycles said, and an image it
could not load (missing or unreadable) fails the task as a scene error and retires the
process, whose Cycles would otherwise keep the magenta stand-in for later tasks.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from francine.domain.producer import Resources, SceneError, Tile

log = logging.getLogger("francine.blender")
MEMO_KEY = "blender.open"
#: Seconds a new Blender process may take to import ``bpy``.
READY_TIMEOUT_S = 300.0
#: How much of a dead process's output its error quotes.
TAIL_LINES, TAIL_CHARS = 6, 400
#: A Blender process's folder (its output, its tiles): the prefix, then the worker's pid.
WORKDIR_PREFIX = "francine-blender-"
#: Where the session mirrors live (symbolic links only).
MIRRORS = pathlib.Path(tempfile.gettempdir()) / "francine-blender"
#: What Cycles says of an image it could not load.
UNREAD = re.compile(r"Image file '(.+?)' (does not exist|failed to open)")


class BlenderDied(RuntimeError):
    """The Blender process died during a task; the message holds its last words."""


class BlenderFailed(RuntimeError):
    """The render raised in the Blender process (not for the scene): worth a retry."""


@dataclass
class Opened:
    """What a worker's memo records of the file its tasks have open."""

    key: str
    opened: int  # how many times this worker's tasks opened a file (tests and logs)


class Child:
    """One Blender process, its request socket and its output file."""

    def __init__(self, proc: subprocess.Popen, conn: Connection, workdir: pathlib.Path):
        self.proc, self.conn, self.workdir = proc, conn, workdir
        self.log = workdir / "output.log"

    @classmethod
    def start(cls) -> Child:
        """A new process that has imported ``bpy``, stopped until its first request."""
        sweep()
        workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
        ours, theirs = socket.socketpair()
        try:
            with open(workdir / "output.log", "ab") as log:  # O_APPEND: truncation is safe
                proc = subprocess.Popen(
                    [sys.executable, "-m", "francine.producers.blender.child",
                     str(theirs.fileno()), str(os.getpid()), str(workdir)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=[theirs.fileno()], start_new_session=True, env=child_env())
        except BaseException:
            ours.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        child = cls(proc, Connection(ours.detach()), workdir)
        try:
            if not child.conn.poll(READY_TIMEOUT_S):
                raise BlenderDied(f"Blender did not start within {READY_TIMEOUT_S:.0f} s")
            child.conn.recv()
        except (EOFError, OSError):
            raise child.died("starting") from None
        except BaseException:
            child.kill()
            raise
        child.pause()
        return child

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pause(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)

    def request(self, message: dict, what: str, root: pathlib.Path):
        """Send one request and wait for its reply; ``BlenderDied`` if the process dies
        first. The output file holds only what this request made Blender say."""
        os.truncate(self.log, 0)
        self.resume()
        try:
            self.conn.send(message)
            reply = self.conn.recv()
        except (EOFError, OSError):
            raise self.died(what, root) from None
        self.pause()
        return reply

    def output(self, limit: int = 1 << 16) -> str:
        """The end of what the process wrote since its last request began."""
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log) - limit))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def died(self, what: str, root: pathlib.Path | None = None) -> BlenderDied:
        """The error of a process that died ``what``ing (e.g. "rendering scene.blend"),
        after reaping it: how it ended and its last words, free of anything that differs
        from process to process (paths, addresses, times)."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # its socket broke, yet it lives: end it
            os.kill(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        how = f"exit status {code}" if code is None or code >= 0 else \
            signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        words = last_words(self.output(), [self.workdir, root])
        self.kill()
        return BlenderDied(f"Blender died ({how}) {what}: {words}")

    def cpu_seconds(self) -> float:
        """CPU time the process has used (0 once it is gone)."""
        try:
            fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1]
        except OSError:
            return 0.0
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """SIGKILL: no exit handler runs, so Blender frees nothing (and cannot crash)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.conn.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def sweep() -> None:
    """Remove the folders of Blender processes whose worker died without cleaning up
    (killed): their processes died with it."""
    for folder in pathlib.Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*-*"):
        pid = folder.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pathlib.Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def child_env() -> dict[str, str]:
    """The worker's environment, with this ``francine`` package first on the path."""
    package_root = str(pathlib.Path(__file__).resolve().parents[3])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}


def last_words(text: str, roots: list[pathlib.Path | None]) -> str:
    """The last lines of a process's output, without the local paths under ``roots``
    (a mirror's files by resource name), terminal colours, timestamps or addresses."""
    for root in roots:
        if root is not None:
            text = text.replace(f"{root}/", "")
    lines = []
    for line in text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line)
        line = re.sub(r"^\s*\d+:\d+\.\d+\s+", "", line)  # Blender's log timestamps
        line = re.sub(r"0x[0-9a-fA-F]{6,}", "0x…", line)
        line = " ".join(line.split())
        if line:
            lines.append(line)
    tail = " / ".join(lines[-TAIL_LINES:])
    return tail[-TAIL_CHARS:] if tail else "(it wrote nothing)"


def _spawner() -> ThreadPoolExecutor:
    # Processes are started from this one long-lived thread: PR_SET_PDEATHSIG fires
    # when the thread that started a process ends, not only when the worker does.
    return ThreadPoolExecutor(1, thread_name_prefix="blender-spawn")


class Host:
    """The Blender processes of this worker: the one that has a file open, and a spare
    one that has imported ``bpy``. One request at a time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._spawner = _spawner()
        self._spare: Future | None = None
        self._child: Child | None = None
        self._key: str | None = None
        self._gone_cpu = 0.0

    def warm(self) -> None:
        """Start a spare process in the background if there is none."""
        with self._lock:
            self._ensure_spare()

    def _ensure_spare(self) -> None:
        if self._spare is None:
            self._spare = self._spawner.submit(Child.start)

    def _take_spare(self) -> Child:
        self._ensure_spare()
        spare, self._spare = self._spare, None
        return spare.result()

    def _retire(self) -> None:
        """Kill the process that has a file open (if any)."""
        if self._child is not None:
            self._gone_cpu += self._child.cpu_seconds()
            self._child.kill()
        self._child = self._key = None

    def render(self, key: str, request: dict, root: pathlib.Path) -> tuple[tuple, bool]:
        """The reply of the process that has file ``key`` open (a spare one opens it if
        none has), and whether this request opened the file."""
        what = f"rendering {request['scene']['blend']}"
        with self._lock:
            try:
                fresh = self._child is None or self._key != key or not self._child.alive()
                if fresh:
                    self._retire()
                    self._child, self._key = self._take_spare(), key
                try:
                    reply = self._child.request(request, what, root)
                except BlenderDied:
                    self._retire()
                    raise
                output = self._child.output()
                log.debug("Blender %s: %s", what, output)
                unread = unread_images(output, root)
                if unread:
                    # Its Cycles keeps the stand-in for later tasks: start afresh.
                    self._retire()
                    raise SceneError("blend", f"Blender could not load {'; '.join(unread)}: "
                                              "attach these files (readable images) under "
                                              "these names")
                return reply, fresh
            finally:
                self._ensure_spare()

    def cpu_seconds(self) -> float:
        """CPU time of every Blender process that has had a file open, alive or gone.
        A spare is counted from the task that opens a file in it (its import of bpy is
        that file's cold cost), not while it waits, so that no other task pays for it."""
        with self._lock:
            return self._gone_cpu + (self._child.cpu_seconds() if self._child else 0.0)

    def pids(self) -> list[int]:
        """The live Blender processes (the open file's and a ready spare's)."""
        with self._lock:
            found = [self._child.proc.pid] if self._child and self._child.alive() else []
            if self._spare is not None and self._spare.done() and not self._spare.exception():
                found.append(self._spare.result().proc.pid)
            return found

    def wait_spare(self) -> None:
        """Until the spare process being started is ready, if one is (tests, benches)."""
        with self._lock:
            spare = self._spare
        if spare is not None:
            spare.exception()

    def shutdown(self) -> None:
        """Kill every process (exit, tests)."""
        with self._lock:
            self._retire()
            spare, self._spare = self._spare, None
        if spare is not None and spare.exception() is None:
            spare.result().kill()


def unread_images(output: str, root: pathlib.Path) -> list[str]:
    """The images Cycles reported it could not load, by resource name."""
    found = dict.fromkeys(
        f"{name_of(path, root)} ({why})" for path, why in UNREAD.findall(output))
    return list(found)


def name_of(path: str, root: pathlib.Path) -> str:
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel


HOST = Host()
atexit.register(lambda: HOST.shutdown())


def _after_fork() -> None:
    # A forked worker (e.g. gunicorn --preload) has no spawner thread and owns no child.
    global HOST
    HOST = Host()


os.register_at_fork(after_in_child=_after_fork)


def warm() -> None:
    """Start a spare Blender process now (the render service does when it starts), so
    that the first Blender task does not wait for ``import bpy``."""
    HOST.warm()


def cpu_seconds() -> float:
    """CPU seconds the Blender processes of this worker have used: the worker's own
    ``time.process_time()`` does not include them."""
    return HOST.cpu_seconds()


def mirror(resources: Resources) -> pathlib.Path:
    """A directory holding every resource of the session under its name (symbolic links
    to the fetched files), named by the digest of the whole set and of where the files
    are. Every resource is fetched again if the cache let it go, so that no link dangles
    when Blender follows it."""
    names = sorted(resources.infos)
    paths = {name: resources.path(name) for name in names}
    digest = hashlib.sha256("\n".join(
        f"{n}\0{resources.sha256(n)}\0{paths[n]}" for n in names).encode()).hexdigest()
    root = MIRRORS / digest[:32]
    if (root / ".complete").exists():
        return root
    for name in names:
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            tmp = link.with_name(f".{link.name}.{os.getpid()}")
            if tmp.is_symlink():
                tmp.unlink()
            tmp.symlink_to(paths[name])
            os.replace(tmp, link)
    (root / ".complete").touch()
    return root


def file_key(resources: Resources, blend: str) -> str:
    """The identity of an opened file: its name and every resource's content."""
    return hashlib.sha256("\n".join(
        [blend] + [f"{n}\0{resources.sha256(n)}" for n in sorted(resources.infos)]
    ).encode()).hexdigest()


def render_passes(scene: dict, tile: Tile, seeds: list[int],
                  resources: Resources) -> list[np.ndarray]:
    """One pass of ``tile`` per seed, rendered by the Blender process of the file (see
    ``render.render_passes``); several seeds share one request, frame and camera set."""
    if not seeds:
        return []
    root = mirror(resources)
    key = file_key(resources, scene["blend"])
    request = {"root": str(root), "key": key, "scene": scene,
               "tile": (tile.x0, tile.y0, tile.width, tile.height), "seeds": list(seeds)}
    reply, fresh = HOST.render(key, request, root)
    before: Opened | None = resources.memo.get(MEMO_KEY)
    resources.memo[MEMO_KEY] = Opened(key, (before.opened if before else 0) + fresh)
    if reply[0] == "ok":
        return reply[1]
    _, kind, field, message = reply
    message = message.replace(f"{root}/", "")
    if kind == "scene":
        raise SceneError(field, message)
    if kind == "value":
        raise ValueError(message)
    raise BlenderFailed(message)
