"""A price before rendering: ``POST /v1/sessions/{sid}/executions`` with ``"dry_run":
true`` answers the render's estimate and starts nothing (docs/api.md, "Dry run").

The body is parsed and planned by the code of a real request (``executions.parse_request``,
``executions.plan``), so a body that a real request refuses is refused the same way and
the tasks are those the render would have; nothing is written but, for a blender file,
the scout's measurement. The expected seconds are ``estimates.expected``'s; the
arithmetic (wall time cold and warm, billed units, dollars) is
``francine.domain.pricing``'s; the admission check is the quotas' own, reported rather
than raised.

**The scout.** The first price of a blender scene that nothing has measured yet (no
finished execution in the session, no scout of this file and scene state) runs a scout
(``francine.producers.blender.scout``): a Blender process of its own, started by this
api process, renders the whole frame scaled down to 4,096 and 16,384 pixels at one
sample, then at 8 and at about a CPU-second of samples. It costs 2 to 4 s of wall time
on two cores for a small scene (bpy's import included; the renders bounded by
``scout.BUDGET_S``), about 2 CPU-seconds, and the download of the session's files (at
most ``SCOUT_MAX_BYTES``), once per file and scene state: the measurement is kept
beside the session's results (``estimates.scout_name``), where the next price and the
planner find it. One scout runs at a time per api process: another price of a blender
scene waits for it (and, for the same scene, uses its result). Where the api cannot
import Blender (the cloud's api function ships without bpy: it would cost every
instance a second and 800 MB), the price says so and stays on the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import shutil
import tempfile
import threading
import time

from francine.base import errors
from francine.domain import pricing
from francine.domain.producer import ResourceInfo, Resources, SceneError, resource_infos
from francine.ports import Adapters
from francine.services import animation, estimates, events, executions, quotas

log = logging.getLogger("francine.quotes")

#: The most bytes of session files the api downloads for a scout.
SCOUT_MAX_BYTES = 256 << 20
_SCOUT_LOCK = threading.Lock()


def quote(ad: Adapters, user: str, sid: str, body: dict, scout: bool = True) -> dict:
    """The estimate of the execution that ``body`` asks for; starts nothing. With
    ``scout`` False no scout runs (benchmarks: the file's model alone)."""
    # A noise target is priced for its first wave (the least it spends; its most:
    # ``until.max_passes``, reported beside it).
    request = executions.first_wave(executions.parse_request(body), body)
    events.check_notify_url(request["notify_url"], ad)
    session = ad.store.get_session(sid)
    if session is None or session.user != user or session.deleting:
        raise errors.NotFound(f"session {sid} not found")
    planned = executions.plan(ad, session, request)
    records = ad.store.list_resources(sid)
    history = estimates.finished(ad, sid)
    scouted = None
    if planned.producer.name == "blender" and scout:
        scouted = scout_once(ad, sid, planned.scene, records, history)
        if scouted.get("ran"):  # the planner sees the measurement now: plan again
            planned = executions.plan(ad, session, request)
    exp = estimates.expected(ad, sid, planned.producer, planned.scene, records, history)
    work = estimates.work_of(planned, exp, len(records))
    farm = pricing.Farm.of(ad.settings)
    prices = pricing.Prices.of(ad.settings)
    est = pricing.estimate(work, farm, prices)
    shape = planned.shape
    return {
        "dry_run": True,
        "producer": planned.producer.name,
        "basis": exp.basis,
        "basis_detail": exp.detail,
        "scout": scouted,
        "width": shape.width, "height": shape.height, "parallel": shape.passes,
        "tile": shape.tile, "passes_per_task": shape.fold, "frames": planned.frame_count,
        "tasks": {"total": est.tasks, "production": est.productions,
                  "reduction": est.reductions},
        "cpu_seconds": sig(est.cpu_seconds),
        "task_seconds": {"expected": sig(work.largest_task_cpu_s / farm.render.cpu),
                         "bound": sig(planned.task_seconds)},
        "instances": farm.instances,
        "wall_seconds": {"warm": sig(est.warm.wall_s), "cold": sig(est.cold.wall_s),
                         "cold_start": sig(est.cold.cold_start_s)},
        "cost_usd": {"warm": sig(est.cost_warm["total"]),
                     "cold": sig(est.cost_cold["total"]),
                     "by_service": {k: sig(v) for k, v in est.cost_warm.items()
                                    if k != "total"}},
        "usage": est.usage_warm.to_dict(),
        "prices": prices.to_dict(),
        "machine": {"render_cpu": farm.render.cpu, "render_memory_gib": farm.render.memory_gib,
                    "reducer_cpu": farm.reducer.cpu,
                    "reducer_memory_gib": farm.reducer.memory_gib},
        "admission": admission(ad, user, planned),
        "cap": cap(request, est.cpu_seconds, est.cost_warm["total"]),
        "until": request["until"],
    }


def sig(v: float) -> float:
    """``v`` to four significant digits: estimates, not measurements."""
    return float(f"{v:.4g}")


def cap(request: dict, cpu: float, usd: float) -> dict | None:
    """Whether the request's spending cap takes this estimate (None: no cap)."""
    cap_usd, cap_cpu = request["max_cost_usd"], request["max_cpu_seconds"]
    if cap_usd is None and cap_cpu is None:
        return None
    ok = (cap_usd is None or usd <= cap_usd) and (cap_cpu is None or cpu <= cap_cpu)
    return {"ok": ok, "max_cost_usd": cap_usd, "max_cpu_seconds": cap_cpu}


def admission(ad: Adapters, user: str, planned: executions.Planned) -> dict:
    """Whether the quotas would take this render now: the check a real request makes,
    its refusal reported instead of raised."""
    admit = quotas.admission(ad, user)
    window = animation.window(ad, planned) if planned.frames else 1
    try:
        admit(planned.shape, planned.pixel_seconds, planned.frame_count, window)
    except errors.FrancineError as e:
        return {"ok": False, "status": e.status, "code": e.code, "message": e.message}
    return {"ok": True}


# --- the scout --------------------------------------------------------------------------

def scout_once(ad: Adapters, sid: str, scene: dict, records: list[dict],
               history: list) -> dict:
    """Run the scout of a blender ``scene`` unless something measured it already;
    what happened, for the answer."""
    from francine.producers.blender import cost, scout

    if cost.measured_sample_seconds(history) is not None:
        return {"ran": False, "reason": "the session's finished executions measured it"}
    if estimates.cached_scout(ad, sid, scene, records) is not None:
        return {"ran": False, "cached": True, "reason": "a scout of this scene ran before"}
    if not scout.available():
        return {"ran": False, "reason": "this api cannot run Blender (no bpy): the price is "
                                        "the file's model"}
    size = sum(int(r.get("size") or 0) for r in records)
    if size > SCOUT_MAX_BYTES:
        return {"ran": False, "reason": f"the session's files ({size} bytes) are more than "
                                        f"the scout downloads ({SCOUT_MAX_BYTES})"}
    with _SCOUT_LOCK:
        if estimates.cached_scout(ad, sid, scene, records) is not None:  # ran meanwhile
            return {"ran": False, "cached": True, "reason": "a scout of this scene ran before"}
        t0 = time.perf_counter()
        folder = pathlib.Path(tempfile.mkdtemp(prefix="francine-scout-"))
        try:
            measurement = scout.run(scene, session_files(ad, records, folder))
        except SceneError as e:  # a render would fail the same way, once it ran
            return {"ran": False, "reason": f"Blender refused the scene: {e}"}
        except Exception as e:  # noqa: BLE001 - a price without a scout is still a price
            log.warning("scout of %s/%s failed: %s", sid, scene.get("blend"), e)
            return {"ran": False, "reason": f"the scout failed: {e}"}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        name = estimates.scout_name(ad, sid, scene, records)
        if name is not None:
            ad.blobs.put_result(name, json.dumps(measurement.to_dict()).encode(),
                                "application/json")
        return {"ran": True, "seconds": sig(time.perf_counter() - t0),
                "cpu_seconds_per_sample": sig(measurement.sample_seconds),
                "pass_seconds": sig(measurement.pass_seconds),
                "pass_pixel_seconds": sig(measurement.pass_pixel_seconds),
                "setup_seconds": sig(measurement.import_seconds + measurement.open_seconds),
                "samples": list(measurement.samples),
                "size": [measurement.width, measurement.height]}


def session_files(ad: Adapters, records: list[dict], folder: pathlib.Path) -> Resources:
    """The session's files as a producer reads them, downloaded into ``folder`` when
    first asked for."""
    infos = resource_infos(records)
    fetched: dict[str, pathlib.Path] = {}

    def fetch(info: ResourceInfo) -> pathlib.Path:
        if info.sha256 not in fetched:
            dest = folder / info.sha256
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
            ad.blobs.fetch_resource(info.sha256, dest)
            fetched[info.sha256] = dest
        return fetched[info.sha256]

    return Resources(infos, fetch)
