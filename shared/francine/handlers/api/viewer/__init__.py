"""The web viewer: static files that the api serves at ``/viewer`` (no CDN, no build)."""

from __future__ import annotations

import functools
import importlib.resources
import os
from urllib.parse import urlsplit

from francine.base import errors

ASSETS = {"index.html": "text/html", "viewer.js": "text/javascript"}
#: Where Cloud Storage serves signed URLs (a large result, a video) and upload sessions
#: (a large file): the page may follow a redirect there and send a file's bytes there,
#: never the API key (fetch drops the Authorization header when a redirect leaves the
#: origin, and the page sends the key only to its own api).
STORAGE = "https://storage.googleapis.com"


def storage_origins() -> list[str]:
    """Cloud Storage, and the storage emulator of a local stack when there is one."""
    origins = [STORAGE]
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    parts = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
    if emulator and parts.scheme in ("http", "https") and parts.netloc:
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return origins


def csp() -> str:
    """Only this page's own files, the images and videos it makes (blob: URLs), and
    requests to its api and to the storage that serves large files."""
    connect = " ".join(["'self'", *storage_origins()])
    return ("default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
            f"img-src 'self' blob:; media-src blob:; connect-src {connect}; "
            "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


@functools.cache
def asset(name: str) -> tuple[bytes, str]:
    """(bytes, media type) of a viewer file; NotFound for any other name."""
    if name not in ASSETS:
        raise errors.NotFound(f"no viewer file {name}")
    data = importlib.resources.files(__name__).joinpath(name).read_bytes()
    return data, ASSETS[name]


def headers() -> dict[str, str]:
    return {"Content-Security-Policy": csp(), "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
