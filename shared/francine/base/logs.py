"""Logs as Cloud Logging reads them: one JSON object per line on stderr, with
``severity``, ``message``, the execution and task as labels, and the trace of the
request that carried the work, so that a query such as
``labels.execution_id="…"`` finds every line of one execution, across services.

Call ``setup()`` once in an entry point; within a unit of work, ``context(...)`` sets
the ids that every line logged meanwhile carries.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import threading
import time

_LABELS: contextvars.ContextVar[tuple] = contextvars.ContextVar("francine_log_labels",
                                                                default=())
#: The keys Cloud Logging lifts from a structured line into the entry's own fields.
LABELS_KEY = "logging.googleapis.com/labels"
TRACE_KEY = "logging.googleapis.com/trace"


class CloudFormatter(logging.Formatter):
    def __init__(self, project: str | None = None):
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry = {"severity": record.levelname if record.levelname != "WARN" else "WARNING",
                 "message": record.getMessage(), "logger": record.name,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z"}
        if record.exc_info:
            entry["message"] += "\n" + self.formatException(record.exc_info)
        # Structured fields of the line itself (``extra={"json_fields": {...}}``, as
        # google-cloud-logging names them), e.g. a request's ``httpRequest``.
        entry.update(getattr(record, "json_fields", None) or {})
        current = dict(_LABELS.get())
        labels = {k: v for k, v in current.items() if k != "trace" and v}
        if labels:
            entry[LABELS_KEY] = {k: str(v) for k, v in labels.items()}
        trace = current.get("trace")
        if trace:
            entry[TRACE_KEY] = (f"projects/{self.project}/traces/{trace}"
                                if self.project else trace)
        return json.dumps(entry, ensure_ascii=False)


#: Loggers that servers give handlers of their own: their lines go through ours.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error",
                  "gunicorn.access")


def setup(level: int = logging.INFO) -> None:
    """Every line of this process as JSON on stderr: ours, the servers', warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CloudFormatter(os.environ.get("GOOGLE_CLOUD_PROJECT")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        server.handlers[:] = []
        server.propagate = True
    logging.captureWarnings(True)


def trace_id(header: str | None) -> str | None:
    """The trace id of an ``X-Cloud-Trace-Context: TRACE/SPAN;o=1`` header."""
    if not header:
        return None
    trace = header.split("/", 1)[0].strip()
    return trace or None


def trace_of(headers) -> str | None:
    """The trace id of a request: ``X-Cloud-Trace-Context``, else W3C ``traceparent``
    (``00-TRACE-SPAN-FLAGS``, what Eventarc's CloudEvents carry)."""
    trace = trace_id(headers.get("X-Cloud-Trace-Context"))
    if trace:
        return trace
    parts = (headers.get("traceparent") or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def ids_of(payload: object) -> dict:
    """The execution and task ids a message's payload names (what is there)."""
    if not isinstance(payload, dict):
        return {}
    keys = ("session_id", "execution_id", "task_id", "node")
    return {k: payload[k] for k in keys if isinstance(payload.get(k), str)}


#: What a task keeps of the lines logged while it was worked on (its document's ``log``).
TASK_LOG_LINES = 12
TASK_LOG_CHARS = 240


class Captured:
    """The lines Francine's loggers wrote from one thread while it was open, as short
    strings ("12:00:01.250 INFO message"), the last ``TASK_LOG_LINES`` kept."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not worth a task
            return
        first = message.splitlines()[0] if message else ""
        stamp = time.strftime("%H:%M:%S", time.gmtime(record.created))
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname} {first}"
        self.lines.append(line[:TASK_LOG_CHARS])
        del self.lines[:-TASK_LOG_LINES]


class _ByThread(logging.Handler):
    """One handler on the ``francine`` logger for every capture: each record goes to
    the capture its thread opened, if any (installed once: the logger's list of
    handlers never changes while other threads log)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.open: dict[int, Captured] = {}
        self.lock = threading.Lock()
        #: Captures open while the logger was NOTSET and INFO was not enabled: the
        #: logger is set to INFO only meanwhile, so that the lines are made.
        self.lowered = 0

    def emit(self, record: logging.LogRecord) -> None:
        target = self.open.get(record.thread or 0)
        if target is not None:
            target.add(record)


_CAPTURE = _ByThread()
_FRANCINE = logging.getLogger("francine")
_FRANCINE.addHandler(_CAPTURE)


@contextlib.contextmanager
def captured():
    """Collect what Francine's loggers write from this thread meanwhile (``Captured``):
    a task's worker keeps it with the task, for ``GET .../tasks/{node}``. Where nobody
    configured logging (no ``setup()``: a library's caller), the ``francine`` logger is
    at INFO only while a capture is open; a level set on it is left as it is."""
    capture, thread = Captured(), threading.get_ident()
    with _CAPTURE.lock:
        _CAPTURE.open[thread] = capture
        lower = _FRANCINE.level == logging.NOTSET and not _FRANCINE.isEnabledFor(logging.INFO)
        if lower or _CAPTURE.lowered:
            _CAPTURE.lowered += 1
            _FRANCINE.setLevel(logging.INFO)
            lower = True
    try:
        yield capture
    finally:
        with _CAPTURE.lock:
            _CAPTURE.open.pop(thread, None)
            if lower:
                _CAPTURE.lowered -= 1
                if not _CAPTURE.lowered:
                    _FRANCINE.setLevel(logging.NOTSET)


@contextlib.contextmanager
def context(**labels):
    """Every line logged inside carries these labels (``trace=`` sets the trace)."""
    merged = {**dict(_LABELS.get()), **{k: v for k, v in labels.items() if v}}
    token = _LABELS.set(tuple(merged.items()))
    try:
        yield
    finally:
        _LABELS.reset(token)
