"""The api's request log: one JSON line per request with the method, the path, the
status, the duration and the user id (never a key, a query string or a body).

The line is also a Cloud Logging structured entry (``severity``, ``httpRequest``), so
that the deployed api's requests are searchable by user and status. For a streamed
response (events) the duration is the time to the start of the stream.
"""

from __future__ import annotations

import logging

from francine.base import logs

log = logging.getLogger("francine.requests")

#: Where ``Api.user`` leaves the authenticated user's id for this log.
USER = "francine.user"


def entry(request, status: int, seconds: float) -> dict:
    return {
        "severity": "WARNING" if status >= 500 else "INFO",
        "message": f"{request.method} {request.path} {status} {seconds * 1000:.1f} ms",
        "httpRequest": {"requestMethod": request.method, "requestUrl": request.path,
                        "status": status, "latency": f"{seconds:.6f}s"},
        "user": request.environ.get(USER),
    }


def log_request(request, status: int, seconds: float) -> None:
    """One line (``logs.setup()`` writes it as JSON), with the request's trace."""
    line = entry(request, status, seconds)
    fields = {"httpRequest": line["httpRequest"], "user": line["user"]}
    trace = logs.trace_id(request.headers.get("X-Cloud-Trace-Context"))
    with logs.context(trace=trace):
        log.log(logging.WARNING if status >= 500 else logging.INFO, "%s", line["message"],
                extra={"json_fields": fields})
