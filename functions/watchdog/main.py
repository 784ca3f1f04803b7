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
