"""What each process of a local stack does to the platform, recorded for the rights test.

The emulators enforce no IAM: a service that publishes to a topic its account may not
publish to works locally and fails in the cloud. With the audit on, every process that
builds its adapters (``francine.tools.wiring.make_adapters``, through the hook that
``environment`` sets) wraps its store, bus, blobs, Cloud Run services and outside-world
methods, and appends what each call needs, once per process, to one file: a JSON line
``[service, action, target, method]``, where service is the process's
``FRANCINE_SERVICE`` (set by ``francine.tools.local.stack`` for each process) and
(action, target) is in the vocabulary of ``francine.domain.rights``. ``tests/test_rights.py``
checks every line against ``rights.RIGHTS``.

A method that this module does not know is recorded as ``unclassified``, which no right
allows: a new port method fails the rights test until it is named here.
The calls themselves go through unchanged.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import threading
from collections.abc import Callable
from typing import Any

AUDIT_ENV = "FRANCINE_AUDIT_FILE"
#: The process's service (api, renderer, reducer, watchdog): whose rights it has.
SERVICE_ENV = "FRANCINE_SERVICE"

#: (action, target) pairs that one call needs.
Needs = list[tuple[str, str]]
Classify = Callable[[tuple, dict], Needs]


def _always(*needs: tuple[str, str]) -> Classify:
    return lambda args, kwargs: list(needs)


def _area(action: str) -> Classify:
    """A blobs method whose first argument names the bucket (``area``)."""
    def classify(args: tuple, kwargs: dict) -> Needs:
        area = args[0] if args else kwargs.get("area")
        return [(action, f"bucket:{area}")]
    return classify


def _open_url(args: tuple, kwargs: dict) -> Needs:
    url = str(args[0] if args else kwargs.get("url", ""))
    if url.startswith("gs://"):
        return [("read", "bucket:external")]
    return [("fetch", "internet")]


#: Store methods that only read; every other method of the store writes.
STORE_READS = frozenset({
    "get_user", "list_users", "users_by", "webhook_secret", "executions_in_flight",
    "executions_finished_since", "get_session", "list_sessions", "list_resources",
    "execution", "list_executions", "active_executions", "get_task", "count_done_children",
    "done_nodes", "count_tasks", "task_stats", "tasks_in", "failed_tasks", "recovery_stats",
    "last_progress", "longest_running", "mean_work", "waiting_tasks", "count_out",
    "held_slots", "latest_finish", "referenced_resources", "count_resources",
})

BUS: dict[str, Classify] = {
    "publish_tasks": _always(("publish", "topic:produce")),
    "publish_done": _always(("publish", "topic:events")),
    "publish_status": _always(("publish", "topic:execution-events")),
    # The render gate lists the produce topic's subscriptions.
    "render_gate": _always(("inspect", "topic:produce")),
    "subscribed": _always(("inspect", "topic:produce")),
}

BLOBS: dict[str, Classify] = {
    "has_resource": _always(("read", "bucket:resources")),
    "put_resource": _always(("write", "bucket:resources")),
    "fetch_resource": _always(("read", "bucket:resources")),
    "delete_resource": _always(("delete", "bucket:resources")),
    "put_partial": _always(("write", "bucket:partials")),
    "get_partial": _always(("read", "bucket:partials")),
    "get_partials": _always(("read", "bucket:partials")),
    "stream_partials": _always(("read", "bucket:partials")),
    "put_result": _always(("write", "bucket:results")),
    "get_result": _always(("read", "bucket:results")),
    "result_size": _always(("read", "bucket:results")),
    # The URL is signed as the service itself, and read with its rights.
    "result_url": _always(("sign", "self"), ("read", "bucket:results")),
    "start_upload": _always(("write", "bucket:resources")),
    "fetch_upload": _always(("read", "bucket:resources")),
    "delete_session": _always(("list", "bucket:partials"), ("delete", "bucket:partials"),
                              ("list", "bucket:results"), ("delete", "bucket:results")),
    "list_objects": _area("list"),
    "delete_object": _area("delete"),
    # Names, computed: no call.
    "result_name": _always(),
    "partial_name": _always(),
    "resource_name": _always(),
}

SERVICES: dict[str, Classify] = {
    "min_instances": _always(("scale", "render-service")),
    "set_min_instances": _always(("scale", "render-service")),
}

OUTSIDE: dict[str, Classify] = {
    "open_url": _open_url,
    "post": _always(("post", "internet")),
    "resolve_public": _always(),  # a DNS look-up
}


class _Sink:
    """Appends each (service, action, target, method) once per process."""

    def __init__(self, path: str, service: str):
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path, self.service = path, service
        self.seen: set[tuple[str, str, str]] = set()
        self.lock = threading.Lock()

    def record(self, method: str, needs: Needs) -> None:
        lines = []
        with self.lock:
            for action, target in needs:
                key = (action, target, method)
                if key not in self.seen:
                    self.seen.add(key)
                    lines.append(json.dumps([self.service, action, target, method]) + "\n")
            if lines:
                # One write per line, appended: processes share the file.
                with open(self.path, "a") as f:
                    f.write("".join(lines))


def _wrap(sink: _Sink, method: str, classify: Classify, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def audited(*args: Any, **kwargs: Any) -> Any:
        try:
            needs = classify(args, kwargs)
        except Exception:  # noqa: BLE001 - an odd call is still recorded
            needs = [("unclassified", method)]
        sink.record(method, needs)
        return fn(*args, **kwargs)

    audited.__francine_audited__ = True  # type: ignore[attr-defined]
    return audited


def _classifier(port: str, name: str, table: dict[str, Classify] | None) -> Classify:
    if port == "store":
        return _always(("read" if name in STORE_READS else "write", "firestore"))
    assert table is not None
    return table.get(name) or _always(("unclassified", f"{port}.{name}"))


def _wrap_methods(sink: _Sink, port: str, obj: Any, table: dict[str, Classify] | None) -> None:
    """Wrap the public methods of ``obj`` (an instance) in place."""
    for name in dir(type(obj)):
        if name.startswith("_"):
            continue
        fn = getattr(obj, name, None)
        if callable(fn) and not getattr(fn, "__francine_audited__", False):
            setattr(obj, name, _wrap(sink, f"{port}.{name}", _classifier(port, name, table), fn))


class _Recorded:
    """A stand-in that records, then calls the object it stands for."""

    def __init__(self, sink: _Sink, port: str, target: Any, table: dict[str, Classify]):
        self._sink, self._port, self._target, self._table = sink, port, target, table

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name.startswith("_") or not callable(value):
            return value
        return _wrap(self._sink, f"{self._port}.{name}",
                     _classifier(self._port, name, self._table), value)


def environment(path: str | pathlib.Path) -> dict[str, str]:
    """The variables that turn the audit on in every process of a local stack: the file
    the records go to, and the wiring's hook that installs the recording."""
    return {AUDIT_ENV: str(path),
            "FRANCINE_ADAPTER_HOOK": "francine.tools.local.audit:install"}


def install(adapters: Any, path: str | None = None) -> Any:
    """Record every platform call of ``adapters`` when the audit is on; returns them."""
    path = path or os.environ.get(AUDIT_ENV)
    if not path:
        return adapters
    sink = _Sink(path, os.environ.get(SERVICE_ENV) or "unnamed")
    _wrap_methods(sink, "store", adapters.store, None)
    _wrap_methods(sink, "bus", adapters.bus, BUS)
    _wrap_methods(sink, "blobs", adapters.blobs, BLOBS)
    services = adapters.services
    adapters.services = lambda: _Recorded(sink, "services", services(), SERVICES)
    adapters.outside = _Recorded(sink, "outside", adapters.outside, OUTSIDE)
    return adapters


def load(path: str | pathlib.Path) -> set[tuple[str, str, str, str]]:
    """Every (service, action, target, method) recorded in ``path``."""
    out: set[tuple[str, str, str, str]] = set()
    file = pathlib.Path(path)
    if file.exists():
        for line in file.read_text().splitlines():
            if line.strip():
                service, action, target, method = json.loads(line)
                out.add((service, action, target, method))
    return out
