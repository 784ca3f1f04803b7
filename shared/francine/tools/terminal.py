"""What the command line shows and refuses, shared by its commands (``cli`` and
``blender_cli``): its one-line errors, the progress bar, and the checks of an output file
made before anything renders."""

from __future__ import annotations

import os
import pathlib
import sys
import time

import requests

from francine.domain.records import FINAL
from francine.tools.client import ApiError

#: Output formats by file extension.
EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".exr": "exr"}


class CliError(Exception):
    """An ordinary mistake: one line for the user, exit status 1 (unless told another:
    130 after Ctrl-C, as shells report an interrupted command)."""

    def __init__(self, message: str, exit_status: int = 1):
        super().__init__(message)
        self.exit_status = exit_status


class Interrupted(CliError):
    """Ctrl-C during a render (after cancelling it, or saying how to)."""


def progress_bar(status: dict, width: int = 30, eta: str = "") -> str:
    p = status["progress"]
    t = status["tasks"]
    bar = "#" * int(p * width) + "-" * (width - int(p * width))
    return (f"\r[{bar}] {p * 100:5.1f}%  {status['status']:<9} "
            f"tasks {t['done']}/{t['total']} running {t['running']}{eta}\033[K")


def output_format(output: pathlib.Path, fmt: str | None) -> str:
    """The format that ``-o`` names (refused before anything renders)."""
    by_name = EXTENSIONS.get(output.suffix.lower())
    if by_name is None:
        raise CliError(f"-o {output}: cannot tell the format from {output.suffix or 'no'} "
                       f"extension: use one of {', '.join(EXTENSIONS)}")
    if fmt and fmt != by_name:
        raise CliError(f"-o {output} names {by_name}, but --format says {fmt}")
    return by_name


def check_writable(output: pathlib.Path) -> None:
    parent = output.resolve().parent
    if not parent.is_dir():
        raise CliError(f"-o {output}: directory {parent} does not exist")
    if output.is_dir():
        raise CliError(f"-o {output}: is a directory")
    if not os.access(output if output.exists() else parent, os.W_OK):
        raise CliError(f"-o {output}: not writable")


def explain(e: BaseException, args) -> str:
    """One line for an ordinary failure."""
    if isinstance(e, ApiError):
        if e.status == 401:
            return f"the api refused the key: {e.message}"
        return f"{e.message} ({e.status} {e.code})"
    if isinstance(e, requests.ConnectionError):
        url = getattr(getattr(e, "request", None), "url", None) or "the api"
        return (f"cannot connect to {url.split('/v1')[0]}: is the stack running "
                "('francine stack status')?")
    if isinstance(e, requests.Timeout):
        return "the api did not answer in time"
    if isinstance(e, FileNotFoundError):
        return f"no such file: {e.filename}"
    if isinstance(e, OSError):
        return f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
    return str(e)


def estimate_text(q: dict) -> str:
    """A dry run's answer in a few lines."""
    tasks, wall, cost = q["tasks"], q["wall_seconds"], q["cost_usd"]
    admission = q.get("admission") or {}
    frames = f" ({q['frames']} frames)" if q.get("frames", 1) > 1 else ""
    lines = [
        f"estimate{frames}, {q['basis']}: {q.get('basis_detail', '')}".rstrip(": "),
        f"  tasks      {tasks['total']} ({tasks['production']} production, "
        f"{tasks['reduction']} reduction)",
        f"  CPU        {q['cpu_seconds']:.1f} s",
        f"  wall time  {wall['warm']:.1f} s on a warm farm, {wall['cold']:.1f} s on a cold "
        f"one ({q['instances']} instances)",
        f"  cost       ${cost['warm']:.6f} warm, ${cost['cold']:.6f} cold",
        "  quotas     " + ("would take it now" if admission.get("ok") else
                           f"would refuse it now: {admission.get('message', '')}"),
    ]
    return "\n".join(lines)


class Progress:
    """The progress line: bar, counts, and an ETA (or that the workers are starting)."""

    def __init__(self, stream=None):
        self.stream = stream  # None: sys.stderr as it is when a line is printed
        self.t0 = time.monotonic()
        self.first: tuple[float, float] | None = None  # (time, progress) of first progress

    def eta(self, status: dict) -> str:
        now, p = time.monotonic(), status["progress"]
        if status["status"] in FINAL:
            return ""
        if p <= 0:
            if not status["tasks"]["running"] and now - self.t0 > 1.0:
                return f"  workers starting… {now - self.t0:.0f} s"
            return ""
        if self.first is None:
            self.first = (now, p)
            return ""
        t1, p1 = self.first
        if p <= p1 or now - t1 < 0.5:
            return ""
        rate = (p - p1) / (now - t1)
        return f"  ETA {(1 - p) / rate:.0f} s"

    def __call__(self, status: dict, suffix: str = "") -> None:
        print(progress_bar(status, eta=self.eta(status) + suffix), end="",
              file=self.stream or sys.stderr, flush=True)


def waves_text(status: dict) -> str:
    """The passes and noise of a status, for the progress line ("" when it has
    neither)."""
    words = []
    if status.get("passes") is not None:
        words.append(f"passes {status['passes']}")
    if status.get("noise") is not None:
        words.append(f"noise {status['noise']:.4g}")
    return "".join(f"  {w}" for w in words)


class WaveProgress(Progress):
    """The progress line of a render, with its passes and noise when the status has
    them."""

    def __call__(self, status: dict, suffix: str = "") -> None:
        super().__call__(status, waves_text(status) + suffix)
