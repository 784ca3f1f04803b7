"""Child processes that are started in their own process group and stopped with it.

``gcloud emulators ...`` starts a Java process under a Python wrapper; stopping only the
wrapper would leave Java behind. Each child therefore gets its own session, and stop
signals the whole group: first SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field


@contextlib.contextmanager
def environment(env: dict[str, str]):
    """Set environment variables for the duration (the Google clients read their
    emulator hosts from the environment when they are created)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    """True once ``url`` answers at all without a server error (a 405 is an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except Exception:
        return False


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log_path: str
    #: How it was started, so that it can be started again the same way.
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    restarts: int = 0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        """Ask the whole group to stop (SIGTERM)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the group: SIGTERM, then SIGKILL for what is left after the grace."""
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace_s)
        # The group may hold grandchildren even when the leader is gone (gcloud -> java).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace_s)

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


@dataclass
class ProcessGroup:
    """Children started by one owner, stopped together in reverse order."""

    log_dir: str
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: str | None = None) -> Child:
        child = Child(name, self._spawn(name, argv, env, cwd),
                      os.path.join(self.log_dir, f"{name}.log"), argv, env, cwd)
        self.children.append(child)
        return child

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None,
               cwd: str | None) -> subprocess.Popen:
        os.makedirs(self.log_dir, exist_ok=True)
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")  # noqa: SIM115
        try:  # the child owns the file for its lifetime
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True,
            )
        finally:
            log.close()

    def restart_dead(self) -> list[str]:
        """Start again, the same way, every child that exited (as Cloud Run replaces
        an instance that died); returns their names. What is left of a dead child's
        group (a gunicorn worker whose master was killed) is killed first."""
        restarted = []
        for child in list(self.children):
            if child.alive():
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.popen.pid, signal.SIGKILL)
            child.popen = self._spawn(child.name, child.argv, child.env, child.cwd)
            child.restarts += 1
            restarted.append(child.name)
        return restarted

    def wait_ready(self, child: Child, ready: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            if not child.alive():
                raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"{child.name} not ready after {timeout_s:.0f} s:\n{child.log_tail()}")

    def terminate_all(self) -> None:
        for child in reversed(self.children):
            child.terminate()

    def stop_all(self) -> None:
        # Signal everyone first, so that the grace periods run at the same time.
        self.terminate_all()
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
