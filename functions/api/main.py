"""The api: an HTTP Cloud Function. Validates, authenticates, records, plans, publishes."""

import functools
import logging

import functions_framework

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@functools.cache
def _api():
    from francine.api.app import Api
    from francine.clients import adapters_from_env

    return Api(adapters_from_env())


@functions_framework.http
def api(request):
    return _api().handle(request)
