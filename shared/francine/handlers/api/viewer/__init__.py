"""The web viewer: static files that the api serves at ``/viewer`` (no CDN, no build)."""

from __future__ import annotations

import functools
import importlib.resources

from francine.base import errors

ASSETS = {"index.html": "text/html", "viewer.js": "text/javascript"}
#: Only this page's own files and the images it makes (blob: URLs) may load.
CSP = ("default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
       "img-src 'self' blob:; connect-src 'self'; form-action 'none'; "
       "frame-ancestors 'none'; base-uri 'none'")


@functools.cache
def asset(name: str) -> tuple[bytes, str]:
    """(bytes, media type) of a viewer file; NotFound for any other name."""
    if name not in ASSETS:
        raise errors.NotFound(f"no viewer file {name}")
    data = importlib.resources.files(__name__).joinpath(name).read_bytes()
    return data, ASSETS[name]


def headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
