"""The render service: Pub/Sub push requests in, one production task per request.

Run with one worker and one thread (concurrency 1: rendering is CPU-bound and the
kernel uses every core itself). Cloud Run, and the local stack's front end, send an
instance one request at a time and answer 429 themselves when every instance is busy;
a request that still finds this one rendering (served by a second thread) is refused
with 429 the same way.
"""

import functools
import importlib.util
import logging
import os
import threading

import cpu_levels


def _pin_cpus() -> None:
    """``FRANCINE_CPUS`` (e.g. "0" or "2,3"): the cores this instance may use. The local
    stack gives each worker cores of its own, as Cloud Run gives each instance its own
    vCPUs; thread pools that size themselves by the cores they see (Blender's TBB, numba)
    then stay on them instead of spinning on the whole machine's."""
    cpus = os.environ.get("FRANCINE_CPUS", "")
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


# First: the Blender processes and numba's threads inherit it.
_pin_cpus()
# Before anything imports numba: load the image's kernels built for this CPU's level.
CPU_LEVEL = cpu_levels.apply()

from flask import Flask, request  # noqa: E402

from francine.base import errors, logs  # noqa: E402
from francine.domain.envelope import decode  # noqa: E402

logs.setup()
log = logging.getLogger("francine.renderer")
app = Flask(__name__)
BUSY = threading.Lock()
if CPU_LEVEL:
    log.info("numba kernels for %s", CPU_LEVEL)


def _warm_blender() -> None:
    """Start a Blender process in the background now, so that the first Blender task
    finds one that has imported ``bpy`` (the blender producer renders in processes of
    its own; this one never imports ``bpy``). Only where Blender is installed: the other
    producers never need it."""
    if importlib.util.find_spec("bpy") is None:
        return
    from francine.producers.blender import isolation

    isolation.warm()


_warm_blender()


@functools.cache
def _worker():
    from francine.handlers.worker import Worker
    from francine.tools.wiring import adapters_from_env

    return Worker(adapters_from_env())


def _warm_worker() -> None:
    """Build the worker (its clients, its imports) at module load, where Cloud Run's
    startup CPU boost applies, not in the first task. Where it cannot be built yet (no
    configuration), the first request builds it and reports why."""
    try:
        _worker()
    except Exception as e:  # noqa: BLE001 (said again by the first request)
        log.warning("worker not built at start: %s", e)


_warm_worker()


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/")
def push():
    if not BUSY.acquire(blocking=False):
        # Pub/Sub retries it later (with back-off), as it would a 429 from Cloud Run.
        log.info("refused: busy (429)")
        return {"error": {"code": "busy", "message": "this instance is rendering"}}, 429
    try:
        return _push()
    finally:
        BUSY.release()


def _push():
    trace = logs.trace_of(request.headers)
    try:
        message = decode(request.get_json(silent=True))
    except errors.BadRequest as e:
        # Malformed: no redelivery can help. Acknowledged (not dead-lettered), logged.
        with logs.context(trace=trace):
            log.error("malformed push request, acknowledged: %s", e)
        return {"outcome": "dropped", "error": {"code": e.code, "message": e.message}}, 200
    with logs.context(trace=trace, **logs.ids_of(message.payload)):
        return handle(message)


def handle(message):
    chaos = _chaos()
    try:
        point = chaos.point()
        chaos.crash("before", point, message.id)
        outcome = _worker().handle(message)
        chaos.crash("after", point, message.id)
    except errors.PermanentError as e:
        # Recorded as a failed task and execution; acknowledge so it is not retried.
        log.error("task %s failed for good: %s", message.id, e)
        return {"outcome": "failed"}, 200
    except errors.BadRequest as e:
        # A poison message: it would fail the same way every time. Acknowledged.
        log.error("bad task message %s, acknowledged: %s", message.id, e)
        return {"outcome": "dropped", "error": {"code": e.code, "message": e.message}}, 200
    if chaos.duplicate(message.id):
        _duplicate(message)
    log.info("message %s: %s", message.id, outcome)
    return {"outcome": outcome}, 200


@functools.cache
def _chaos():
    from francine.base.config import Settings
    from francine.services.chaos import Chaos

    return Chaos(Settings.from_env())


def _duplicate(message) -> None:
    """Publish the task once more (fault injection: a duplicated delivery)."""
    p = message.payload
    index = p["task_id"].partition("-p")[2]
    if index.isdigit():
        _worker().ad.bus.publish_tasks(p["session_id"], p["execution_id"],
                                       [(int(index), p["task_id"])])
