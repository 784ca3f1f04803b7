"""Reading external files that a session attaches by URL: ``gs://`` and ``https://``.

Both are streamed in chunks and cut off at the size limit. ``https`` refuses hosts that
resolve to private, loopback or link-local addresses: the api runs inside a cloud
project, and a URL must not make it read the metadata server or internal services.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

from francine import errors
from francine.adapters import translated

CHUNK = 1 << 20


def open_url(url: object, storage_client, limit: int,
             own_buckets: frozenset[str] = frozenset()) -> Iterator[bytes]:
    """Chunks of the file at ``url``. ``own_buckets`` are Francine's buckets: the api
    can read them, but a user must not reach other users' images through them."""
    if not isinstance(url, str):
        raise errors.BadRequest("url: a gs:// or https:// URL", "invalid_field")
    parsed = urlparse(url)
    if parsed.scheme == "gs" and parsed.netloc in own_buckets:
        raise errors.BadRequest("url: Francine's own buckets cannot be attached",
                                "fetch_failed")
    if parsed.scheme == "gs" and parsed.netloc and parsed.path.strip("/"):
        return _gcs(storage_client, parsed.netloc, parsed.path.lstrip("/"), limit)
    if parsed.scheme == "https" and parsed.hostname:
        return _https(url, parsed.hostname, parsed.port or 443, limit)
    raise errors.BadRequest("url: a gs://bucket/object or https:// URL", "invalid_field")


def _gcs(client, bucket: str, name: str, limit: int) -> Iterator[bytes]:
    with translated(f"gs://{bucket}/{name}"):
        blob = client.bucket(bucket).get_blob(name)
    if blob is None:
        raise errors.BadRequest(f"gs://{bucket}/{name} does not exist or is not readable",
                                "fetch_failed")
    if blob.size is not None and blob.size > limit:
        raise errors.too_large("this resource", limit)

    def chunks():
        with translated(f"gs://{bucket}/{name}"), blob.open("rb", chunk_size=CHUNK) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    return chunks()


def public_address(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as e:
        raise errors.BadRequest(f"url: cannot resolve {host}: {e}", "fetch_failed") from e
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise errors.BadRequest(f"url: {host} is not a public address", "fetch_failed")


def _https(url: str, host: str, port: int, limit: int) -> Iterator[bytes]:
    import requests

    public_address(host, port)
    try:
        resp = requests.get(url, stream=True, timeout=30, allow_redirects=False)
    except requests.RequestException as e:
        raise errors.BadRequest(f"url: fetching failed: {e}", "fetch_failed") from e
    if resp.status_code != 200:
        resp.close()
        raise errors.BadRequest(f"url: the server answered {resp.status_code}",
                                "fetch_failed")
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        resp.close()
        raise errors.too_large("this resource", limit)

    def chunks():
        with resp:
            yield from resp.iter_content(CHUNK)

    return chunks()
