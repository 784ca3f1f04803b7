"""The api, as Cloud Run functions runs it: ``functions-framework --target api``.

``api`` is an ASGI function (``functions_framework.aio``): functions-framework serves it
under uvicorn and hands each request to it before reading the body, and it passes the
request's own ASGI scope and channels to ``app``, the api's front
(``francine.handlers.api.server.AsgiApi``). So the deployed api is the one the tests
harden: a refusal comes before the body is read, waits hold no thread, and blocking
requests are limited per user. ``app`` is also the plain ASGI application
(``uvicorn main:app``).
"""

from __future__ import annotations

import functools

import functions_framework.aio
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.responses import Response

from francine.base import logs

logs.setup()


@functools.cache
def _api():
    from francine.handlers.api.app import Api
    from francine.tools.wiring import adapters_from_env

    return Api(adapters_from_env())


def _asgi():
    from francine.base.config import Settings
    from francine.handlers.api.server import AsgiApi

    return AsgiApi(_api, threads=Settings.from_env().api_threads)


app = _asgi()


class _AnyPath(PathConvertor):
    """Starlette's ``path`` without its one gap: a path holding a line feed (``%0A``)
    matches too, so that every path reaches the api and its JSON errors."""

    regex = "(?s:.*)"


# Before functions-framework builds its routes (after loading this module).
register_url_convertor("path", _AnyPath())


class _Front(Response):
    """A response that is the front itself: Starlette calls it with the request's scope,
    receive and send, which go to ``app`` untouched (the body still unread)."""

    def __init__(self) -> None:  # noqa: D107 - nothing of Response's own is used
        pass

    async def __call__(self, scope, receive, send) -> None:
        await app(scope, receive, send)


@functions_framework.aio.http
async def api(request):
    return _Front()
