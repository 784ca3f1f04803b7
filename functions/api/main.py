"""The api: an HTTP Cloud Function. Validates, authenticates, records, plans, publishes."""

import functools
import logging
import time

import functions_framework

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@functools.cache
def _api():
    from francine.api.app import Api
    from francine.clients import adapters_from_env

    return Api(adapters_from_env())


@functions_framework.http
def api(request):
    from francine.api.requestlog import log_request

    t0 = time.perf_counter()
    response = _api().handle(request)
    log_request(request, response.status_code, time.perf_counter() - t0)
    return response
