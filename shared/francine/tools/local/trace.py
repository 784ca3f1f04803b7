"""Where a pipeline's time goes: spans of every port operation, handler and render.

Off unless ``FRANCINE_TRACE_DIR`` names a directory (``bench/pipeline_overhead.py`` sets
it for the stack it starts). Then every process that builds its adapters
(``francine.tools.wiring.make_adapters``, through the hook that ``environment``
sets) wraps the Store, Bus and Blobs methods, the worker's and the
reducer's handlers, the renders and the final image's encoding, and appends one line
per call to ``<dir>/<pid>.jsonl``: ``[name, start, end]`` in wall-clock seconds (one
clock for every process of the machine). A line costs a few microseconds.

``load`` reads them back; ``breakdown`` turns the spans of one execution's window into
the per-task overhead on the critical path.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import threading
import time
from collections import defaultdict

TRACE_ENV = "FRANCINE_TRACE_DIR"


class _Sink:
    def __init__(self, directory: str):
        pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = pathlib.Path(directory) / f"{os.getpid()}.jsonl"
        self.lock = threading.Lock()

    def write(self, name: str, t0: float, t1: float) -> None:
        line = json.dumps([name, t0, t1]) + "\n"
        with self.lock, open(self.path, "a") as f:
            f.write(line)


def _wrap(sink: _Sink, name: str, fn):
    @functools.wraps(fn)
    def traced(*args, **kwargs):
        t0 = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.write(name, t0, time.time())

    traced.__francine_traced__ = True
    return traced


def _wrap_methods(sink: _Sink, prefix: str, obj) -> None:
    """Wrap the public methods of ``obj`` (an instance) in place."""
    for attr in dir(type(obj)):
        if attr.startswith("_"):
            continue
        fn = getattr(obj, attr, None)
        if callable(fn) and not getattr(fn, "__francine_traced__", False):
            setattr(obj, attr, _wrap(sink, f"{prefix}.{attr}", fn))


def _wrap_class(sink: _Sink, cls, attr: str, name: str) -> None:
    fn = getattr(cls, attr)
    if not getattr(fn, "__francine_traced__", False):
        setattr(cls, attr, _wrap(sink, name, fn))


def environment(directory: str | pathlib.Path) -> dict[str, str]:
    """The variables that turn tracing on in every process of a local stack: where the
    spans go, and the wiring's hook that installs the tracing (the production wiring
    names no tracing of its own)."""
    return {TRACE_ENV: str(directory),
            "FRANCINE_ADAPTER_HOOK": "francine.tools.local.trace:install"}


def install(adapters, directory: str | None = None):
    """Trace ``adapters`` (and this process's handlers) when tracing is on; returns them."""
    directory = directory or os.environ.get(TRACE_ENV)
    if not directory:
        return adapters
    sink = _Sink(directory)
    for prefix in ("store", "bus", "blobs"):
        _wrap_methods(sink, prefix, getattr(adapters, prefix))
    from francine import producers
    from francine.domain import imaging
    from francine.handlers import reducer, worker
    from francine.services import executions

    _wrap_class(sink, executions, "start", "api.start")
    _wrap_class(sink, worker.Worker, "handle", "worker.handle")
    _wrap_class(sink, reducer.Reducer, "handle", "reducer.handle")
    _wrap_class(sink, reducer.Reducer, "reduce", "reducer.reduce")
    for module, attr in ((imaging, "encode"), (imaging, "dump_partial"),
                         (imaging, "load_partial"), (imaging, "combine")):
        _wrap_class(sink, module, attr, f"imaging.{attr}")
    for name in producers.names():
        _wrap_class(sink, type(producers.get(name)), "render", "render")
    return adapters


def load(directory: str | pathlib.Path) -> dict[int, list[tuple[str, float, float]]]:
    """pid → its spans, in the order they ended."""
    spans: dict[int, list[tuple[str, float, float]]] = {}
    for path in pathlib.Path(directory).glob("*.jsonl"):
        with open(path) as f:
            spans[int(path.stem)] = [tuple(json.loads(line)) for line in f if line.strip()]
    return spans


def outermost(spans: list, skip: tuple[str, ...] = ()) -> list:
    """The spans not inside another (of those not named in ``skip``): an operation that
    calls another (``store.execution`` reads through ``store.get_execution``) counts
    once."""
    out: list = []
    for span in sorted((s for s in spans if s[0] not in skip), key=lambda s: (s[1], -s[2])):
        if out and span[1] >= out[-1][1] and span[2] <= out[-1][2]:
            continue
        out.append(span)
    return out


def breakdown(spans: dict[int, list], start: float, end: float) -> dict:
    """The spans of the window [start, end], per role.

    A render worker's process is the one with ``worker.handle`` spans; the reducer's,
    the one with ``reducer.handle``. For each worker: its handled tasks, the time inside
    handlers split into render and each operation (what a handler waits for outside
    renders), and the time between handlers (waiting for the next push). Returns
    ``{"workers": [{"tasks", "busy", "render", "ops": {name: s}, "between"}], "reducer":
    {"events", "busy", "ops"}, "api": {"start", "end", "ops"} (of the execution's
    creation), "first_handle", "last_production_end"}``.
    """
    out: dict = {"workers": [], "reducer": None, "api": None, "first_handle": None,
                 "last_production_end": None}
    for _pid, items in spans.items():
        items = [s for s in items if s[2] >= start and s[1] <= end]
        names = {s[0] for s in items}
        if "worker.handle" in names:
            handles = sorted((s for s in items if s[0] == "worker.handle"), key=lambda s: s[1])
            ops: dict[str, float] = defaultdict(float)
            for name, t0, t1 in outermost(items, skip=("worker.handle",)):
                ops[name] += t1 - t0
            busy = sum(t1 - t0 for _, t0, t1 in handles)
            between = sum(b[1] - a[2] for a, b in zip(handles, handles[1:], strict=False))
            out["workers"].append({
                "tasks": len(handles), "busy": busy, "render": ops.pop("render", 0.0),
                "ops": dict(ops), "between": between,
                "first": handles[0][1], "last": handles[-1][2]})
            first = handles[0][1]
            out["first_handle"] = min(first, out["first_handle"] or first)
            last = handles[-1][2]
            out["last_production_end"] = max(last, out["last_production_end"] or last)
        elif "api.start" in names:
            start_span = min((s for s in items if s[0] == "api.start"), key=lambda s: s[1])
            inside = [s for s in items if s[1] >= start_span[1] and s[2] <= start_span[2]]
            ops = defaultdict(float)
            for name, t0, t1 in outermost(inside, skip=("api.start",)):
                ops[name] += t1 - t0
            out["api"] = {"start": start_span[1], "end": start_span[2], "ops": dict(ops)}
        elif "reducer.handle" in names:
            ops = defaultdict(float)
            for name, t0, t1 in outermost(items, skip=("reducer.handle",)):
                ops[name] += t1 - t0
            handles = [s for s in items if s[0] == "reducer.handle"]
            out["reducer"] = {"events": len(handles),
                              "busy": sum(t1 - t0 for _, t0, t1 in handles),
                              "ops": dict(ops), "spans": sorted(items, key=lambda s: s[1])}
    return out
