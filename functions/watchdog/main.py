"""The watchdog: an HTTP Cloud Function that Cloud Scheduler calls every minute (with
an OIDC token; only the scheduler's account may invoke it). One sweep over the active
executions: stragglers get a speculative copy, stalled executions are re-driven."""

import functools
import json
import logging

import functions_framework

from francine.base import logs

logs.setup()
log = logging.getLogger("francine.watchdog")


@functools.cache
def _adapters():
    from francine.tools.wiring import adapters_from_env

    return adapters_from_env()


def _warm_watchdog() -> None:
    """Import the sweep and build its clients at module load (Cloud Run's startup CPU
    boost), not in the first sweep; where they cannot be built yet, the first sweep
    builds them and reports why."""
    try:
        import francine.handlers.watchdog  # noqa: F401

        _adapters()
    except Exception as e:  # noqa: BLE001 (said again by the first sweep)
        log.warning("watchdog not built at start: %s", e)


_warm_watchdog()


@functions_framework.http
def watchdog(request):
    if request.method != "POST":
        return (json.dumps({"error": {"code": "method_not_allowed",
                                      "message": "POST to run a sweep"}}), 405,
                {"Content-Type": "application/json"})
    from francine.handlers.watchdog import sweep

    report = sweep(_adapters())
    if any(report[k] for k in ("speculated", "republished", "redriven", "resumed", "errors")):
        log.info("sweep: %s", report)
    return json.dumps(report), 200, {"Content-Type": "application/json"}
