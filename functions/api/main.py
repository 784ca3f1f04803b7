"""The api. ``app``: the ASGI application that the local stack serves with uvicorn
(``uvicorn main:app``), which answers refused requests before reading their bodies and
waits for renders without holding a thread; ``api``: the same routes as an HTTP Cloud
Function (functions-framework, one thread per request)."""

import functools
import time

import functions_framework

from francine.base import logs

logs.setup()


@functools.cache
def _api():
    from francine.handlers.api.app import Api
    from francine.tools.wiring import adapters_from_env

    return Api(adapters_from_env())


@functions_framework.http
def api(request):
    from francine.handlers.api.requestlog import log_request

    t0 = time.perf_counter()
    response = _api().handle(request)
    log_request(request, response.status_code, time.perf_counter() - t0)
    return response


def _asgi():
    from francine.base.config import Settings
    from francine.handlers.api.server import AsgiApi

    return AsgiApi(_api, threads=Settings.from_env().api_threads)


app = _asgi()
